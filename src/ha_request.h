/*
 * ha_request.h - the `failover` key: one codec for switchover and failover
 * requests, shared by the HA worker, the SQL functions and pg_hactl
 * (ha_request.c).
 *
 * Plain C on cJSON with no backend symbols, so the command-line programs,
 * the unit tests and the fuzz targets link it as it is.
 *
 * The key is Patroni's ({"leader": old, "member": new, "scheduled_at":
 * ISO 8601}) plus fields of ours that carry a switchover through its
 * phases.  Patroni ignores fields it does not know, and so do we.
 *
 *   phase            written by            meaning
 *   requested        SQL, pg_hactl, user   someone asks for a switchover (leader
 *                                          and member) or failover (member only)
 *   handed_over      old leader            fenced; the candidate flushed final_lsn;
 *                                          the leader key was released to member
 *   final_confirmed  old leader (standby)  its WAL provably ends at final_lsn
 *   aborted          old leader / SQL      given up; reason says why.  Nobody acts
 *                                          on it; the next request replaces it
 *   shutdown         old leader            it stopped cleanly at final_lsn (no
 *                                          member named)
 */
#ifndef PG_HA_REQUEST_H
#define PG_HA_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HA_REQUEST_NAME_LEN 64
#define HA_REQUEST_REASON_LEN 256
#define HA_REQUEST_MAX_JSON 2048	/* encode never writes more than this */
#define HA_REQUEST_MAX_INPUT 8192	/* decode refuses longer values */

typedef enum HaRequestPhase
{
	HA_REQ_REQUESTED = 0,
	HA_REQ_HANDED_OVER,
	HA_REQ_FINAL_CONFIRMED,
	HA_REQ_ABORTED,
	HA_REQ_SHUTDOWN
} HaRequestPhase;

typedef struct HaRequest
{
	HaRequestPhase phase;
	char		leader[HA_REQUEST_NAME_LEN];	/* "" = not named (manual failover) */
	char		member[HA_REQUEST_NAME_LEN];	/* "" = not named */
	bool		scheduled;		/* scheduled_at present and valid */
	int64_t		scheduled_at_us;	/* Unix epoch, microseconds, UTC */
	uint64_t	final_lsn;		/* handed_over, final_confirmed, shutdown */
	bool		force;			/* operator accepted a candidate that is not
								 * the most advanced (manual failover only) */
	char		reason[HA_REQUEST_REASON_LEN];	/* aborted: why */
} HaRequest;

/*
 * Decodes a failover key value.  False, with a message in err, when the
 * value is not a request pg_ha can act on: not a JSON object, a name that
 * is not a valid member name, a scheduled_at that is not an ISO 8601 time
 * in years 1970-9999, a final_lsn that is not a non-negative integer, a
 * handed-over phase without a final_lsn, ...  Never reads past len, never
 * crashes on any input (fuzzed: test/fuzz/fuzz_request.c).
 */
extern bool ha_request_decode(const char *value, size_t len, HaRequest *out,
							  char *err, size_t errlen);

/*
 * Compact JSON for req into buf (NUL-terminated).  Returns the length, or
 * -1 when it does not fit or a name is invalid.  decode(encode(r)) == r.
 */
extern int	ha_request_encode(const HaRequest *req, char *buf, size_t len);

/*
 * The rules decode and encode both apply to a request (names, phase
 * requirements, contradictions; see ha_request.c's header).  False, with a
 * message, when req is not a request pg_ha could act on.
 */
extern bool ha_request_validate(const HaRequest *req, char *err, size_t errlen);

/* A request in phase requested whose scheduled time has not come yet. */
extern bool ha_request_pending_schedule(const HaRequest *req, int64_t now_us);

extern const char *ha_request_phase_name(HaRequestPhase phase);

/* Is name a valid member name: 1-63 bytes of [A-Za-z0-9_.-]? */
extern bool ha_valid_member_name(const char *name);

/*
 * ISO 8601 / RFC 3339 time ("2026-11-30T10:00:00+00:00", "... 10:00Z",
 * fractional seconds, a space for 'T'; no zone means UTC) to Unix epoch
 * microseconds.  False, with a message, for anything else or a year
 * outside 1970-9999.
 */
extern bool ha_time_parse(const char *text, int64_t *epoch_us, char *err, size_t errlen);
/*
 * Does an ISO 8601 time carry its zone ("Z" or an offset after the time)?
 * Patroni refuses a scheduled time without one; ha_time_parse reads UTC.
 */
extern bool ha_time_has_zone(const char *text);
/* "YYYY-MM-DDTHH:MM:SS.ffffff+00:00" (buf of HA_TIME_LEN bytes) */
#define HA_TIME_LEN 40
extern void ha_time_format(int64_t epoch_us, char *buf, size_t len);

/*
 * Eligibility of a named switchover or failover target: the rules the SQL
 * functions and pg_hactl both apply before they write a request.  Plain
 * data in, a verdict and a sentence out, so both front ends refuse the same
 * requests with the same words.
 */

/* A member key as the eligibility rules need it (Patroni's member JSON). */
typedef struct HaCandidate
{
	char		name[HA_REQUEST_NAME_LEN];
	bool		valid;			/* the document parsed and has a position */
	bool		is_replica;		/* role "replica" and state "running" */
	bool		is_primary;		/* role "master"/"primary" */
	bool		streaming;		/* replication_state "streaming" */
	bool		nofailover;		/* tag nofailover, or failover_priority <= 0 */
	int			failover_priority;	/* tag, default 1; ties between equal LSNs */
	uint32_t	timeline;
	uint64_t	lsn;			/* xlog_location */
} HaCandidate;

/*
 * Parses members/<name>'s value.  Never fails: a document that is not what
 * we expect yields valid = false (never eligible).
 */
extern void ha_candidate_parse(const char *name, const char *value, size_t len,
							   HaCandidate *out);

typedef struct HaTargetInput
{
	const HaCandidate *members;	/* every member key (the leader's too) */
	int			nmembers;
	const char *leader;			/* leader key's value, "" when absent */
	uint64_t	status_optime;	/* status key's optime, 0 if unknown */
	uint32_t	history_timeline;	/* timeline by the history key, 0 if none */
	uint64_t	maximum_lag_bytes;	/* pg_ha.maximum_lag_on_failover */
	bool		switchover;		/* false: failover (the leader is gone) */
	bool		force;			/* failover: accept lag and a better peer */

	/*
	 * The sync key as the lost leader left it (ha_sync.c's codec decodes
	 * it): sync_leader "" when there is none, else the standbys it listed,
	 * comma-separated ("" = none).  A failover may name only a listed one.
	 */
	const char *sync_leader;
	const char *sync_standbys;
} HaTargetInput;

typedef enum HaTargetVerdict
{
	HA_TARGET_OK = 0,
	HA_TARGET_UNKNOWN,			/* no member key with that name */
	HA_TARGET_IS_LEADER,		/* switchover to the leader itself */
	HA_TARGET_NOT_REPLICA,		/* not a running replica */
	HA_TARGET_NOFAILOVER,		/* tagged nofailover */
	HA_TARGET_OLD_TIMELINE,		/* behind the cluster's timeline */
	HA_TARGET_NOT_STREAMING,	/* switchover: not streaming from the leader */
	HA_TARGET_LAGGING,			/* beyond maximum_lag_on_failover (force: ok) */
	HA_TARGET_NOT_BEST,			/* failover: a more advanced eligible replica
								 * exists, named in better (force: ok) */
	HA_TARGET_NOT_SYNC,			/* failover: not listed in the sync key the
								 * lost leader left (force: ok) */
	HA_TARGET_NONE				/* no candidate named and none eligible */
} HaTargetVerdict;

/*
 * May candidate be named in a request?  candidate NULL or "": pick the best
 * eligible replica into chosen (switchover without a candidate).  why gets
 * a sentence for errdetail/stderr, better the more advanced replica for
 * HA_TARGET_NOT_BEST, chosen the candidate checked or picked.
 */
extern HaTargetVerdict ha_target_check(const HaTargetInput *in, const char *candidate,
									   char *chosen, size_t chosenlen,
									   char *better, size_t betterlen,
									   char *why, size_t whylen);
extern const char *ha_target_verdict_name(HaTargetVerdict v);

/*
 * The history key (Patroni: [[timeline, lsn, reason, time, new_leader],
 * ...]): the last entry's timeline + 1 (the cluster's timeline), reason
 * and new leader.  False when there is no usable entry.
 */
extern bool ha_history_last(const char *value, size_t len, uint32_t *timeline,
							char *reason, size_t reasonlen,
							char *new_leader, size_t leaderlen);

/* The status key's optime ({"optime": N}), 0 when unknown. */
extern uint64_t ha_status_optime(const char *value, size_t len);

/*
 * What a front end (SQL, pg_hactl) reads of the cluster's keys before and
 * while it writes a request: fed key by key with ha_control_view_add()
 * (suffix = the key without "/<namespace>/<cluster>/"), from one range read.
 */
#define HA_CONTROL_MAX_MEMBERS 64

typedef struct HaControlView
{
	char		leader[HA_REQUEST_NAME_LEN];	/* "" = no leader key */
	HaCandidate members[HA_CONTROL_MAX_MEMBERS];
	int			nmembers;
	uint64_t	status_optime;
	uint32_t	history_timeline;	/* 0 = no history */
	char		history_reason[64];	/* last entry's reason */
	char		history_leader[HA_REQUEST_NAME_LEN];	/* last entry's new leader */
	bool		paused;			/* config key: "pause": true */
	bool		has_request;	/* the failover key exists */
	bool		request_valid;	/* ... and decodes: request holds it */
	HaRequest	request;
	char		request_error[HA_REQUEST_REASON_LEN];	/* when not valid */
	int64_t		request_mod_revision;
	char		sync_value[2048];	/* the sync key's value, "" = absent */
} HaControlView;

extern void ha_control_view_add(HaControlView *view, const char *suffix,
								const char *value, size_t len, int64_t mod_revision);
/* The member named name, or NULL. */
extern const HaCandidate *ha_control_view_member(const HaControlView *view, const char *name);

/*
 * Does the failover key hold a request that a new switchover (for_failover
 * false) or manual failover (true, the leader is gone) must not replace?
 * Requested, handed_over and final_confirmed requests do; aborted and
 * shutdown notes and undecodable values do not.  With no leader, a
 * switchover request (scheduled or not) does not block a failover: its
 * leader is gone.
 */
extern bool ha_request_blocks(const HaControlView *view, bool for_failover);

/* ---------- the failover key in etcd (ha_request_store.c) ---------- */

#include "etcd.h"

/*
 * Writes value into key: created when absent (replace_rev 0), or replacing
 * the value at replace_rev.  *written_rev is the mod_revision of what was
 * written, 0 when another writer got there first (-1 when etcd did not say).
 */
extern EtcdStatus ha_request_put(EtcdClient *client, const char *key, const char *value,
								 int64_t replace_rev, int64_t *written_rev);
/* Compare-and-delete at rev; false when it changed or etcd failed. */
extern bool ha_request_delete(EtcdClient *client, const char *key, int64_t rev);

#endif							/* PG_HA_REQUEST_H */
