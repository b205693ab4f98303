/*
 * ha_sync.h - synchronous mode (ha_sync.c): which standbys postgres waits
 * for, what the `sync` key says, the order in which the leader changes the
 * two, and who may take over after the leader is lost.
 *
 * Pure: no server state, no etcd; the HA worker feeds it what it read
 * (pg_stat_replication, the sync key, its own synchronous_standby_names)
 * and carries out the one step it returns.  test/unit/test_sync.c walks
 * the cases.
 */
#ifndef PG_HA_SYNC_H
#define PG_HA_SYNC_H

#include "pg_ha.h"

#define SYNC_MAX_NAMES PG_HA_SYNC_MAX
#define SYNC_KEY_MAX_JSON (SYNC_MAX_NAMES * PG_HA_NAME_LEN + 128)
#define SYNC_SSN_MAX_LEN (SYNC_MAX_NAMES * (PG_HA_NAME_LEN + 3) + 32)

/*
 * In strict mode with no standby to wait for, synchronous_standby_names
 * lists a name no node can have (a space is not allowed in node names),
 * so every commit waits until a real standby is named.
 */
#define SYNC_STRICT_PLACEHOLDER "pg_ha no standby"

typedef enum SyncMode
{
	SYNC_MODE_OFF = 0,
	SYNC_MODE_ON,
	SYNC_MODE_QUORUM,
	SYNC_MODE_STRICT
} SyncMode;

/* A set of node names, in order. */
typedef struct SyncNames
{
	int			n;
	char		name[SYNC_MAX_NAMES][PG_HA_NAME_LEN];
} SyncNames;

/*
 * The sync key: {"leader":L,"sync_standby":"a,b"} and, in quorum mode,
 * "quorum":q.  A racer may take over only if it is listed in sync_standby
 * and sees at least quorum + 1 listed nodes (itself included) that are not
 * ahead of it.  quorum is 0 outside quorum mode.
 */
typedef struct SyncKey
{
	bool		present;		/* the key exists and names a leader */
	char		leader[PG_HA_NAME_LEN];
	SyncNames	voters;
	int			quorum;
} SyncKey;

/*
 * What synchronous_standby_names asks: num of the listed standbys confirm
 * each commit.  FIRST num (...) with num = n (every listed standby) in on
 * and strict mode, ANY num (...) in quorum mode; n = 0: no waiting.
 */
typedef struct SyncStandbyNames
{
	SyncNames	names;
	int			num;
	bool		any;
} SyncStandbyNames;

/* One standby as the leader sees it. */
typedef struct SyncStandby
{
	char		name[PG_HA_NAME_LEN];
	bool		streaming;		/* a WAL sender in state streaming */
	bool		eligible;		/* a replica member, not tagged nosync/nofailover */
	int			sync_priority;	/* its tag: the higher, the more preferred */
	XLogRecPtr	flush;			/* flush position its WAL sender reports */
	/* read by the worker (ha_sync_local.c), not by the decisions here */
	bool		waited;			/* sync_state "sync" or "quorum" */
	int			walsender_priority; /* its WAL sender lists it: > 0 */
} SyncStandby;

typedef struct SyncInput
{
	SyncMode	mode;
	int			node_count;		/* pg_ha.synchronous_node_count */
	const char *self;
	SyncKey		key;			/* as read from etcd */
	SyncStandbyNames ssn;		/* in effect everywhere (see in_effect) */
	bool		in_effect;		/* every process runs with ssn */
	const SyncStandby *standbys;
	int			nstandbys;
	SyncNames	ready;			/* listed in ssn and known to hold every
								 * commit acknowledged before ssn took
								 * effect (sync_update_ready) */
} SyncInput;

typedef enum SyncStepKind
{
	SYNC_STEP_NONE,				/* nothing to change */
	SYNC_STEP_WAIT,				/* the last change is not in effect yet */
	SYNC_STEP_WRITE_KEY,		/* write step.key (on the leader's term) */
	SYNC_STEP_DELETE_KEY,		/* synchronous mode off: remove the key */
	SYNC_STEP_SET_SSN			/* ALTER SYSTEM synchronous_standby_names */
} SyncStepKind;

typedef struct SyncStep
{
	SyncStepKind kind;
	SyncKey		key;
	SyncStandbyNames ssn;
	char		why[256];
} SyncStep;

extern bool sync_mode_parse(const char *text, SyncMode *mode);
extern const char *sync_mode_name(SyncMode mode);

extern bool sync_names_contains(const SyncNames *set, const char *name);
extern void sync_names_add(SyncNames *set, const char *name);
extern bool sync_names_equal(const SyncNames *a, const SyncNames *b);
/* "a,b,c" into buf */
extern void sync_names_join(const SyncNames *set, char *buf, size_t len);

/* The sync key's value; false when it is not a usable sync key. */
extern bool sync_key_parse(const char *value, size_t len, SyncKey *key);
/* Patroni's compact JSON; quorum only in quorum mode.  -1 if it does not fit. */
extern int	sync_key_encode(const SyncKey *key, bool quorum_mode, char *buf, size_t len);
extern bool sync_key_equal(const SyncKey *a, const SyncKey *b);

/* synchronous_standby_names text for ssn ("" when nothing is listed) */
extern void sync_ssn_format(const SyncStandbyNames *ssn, char *buf, size_t len);
extern bool sync_ssn_equal(const SyncStandbyNames *a, const SyncStandbyNames *b);

/*
 * Readiness: a standby listed in ssn becomes ready once it is waited for
 * (wait_state "sync" or "quorum") and has flushed ready_lsn, the leader's
 * flush position when ssn took effect: it then holds every commit
 * acknowledged before, and (while ssn stays) every one after.  Names no
 * longer listed are dropped.
 */
extern void sync_update_ready(SyncNames *ready, const SyncStandbyNames *ssn,
							  const char *name, bool waited, XLogRecPtr flush,
							  XLogRecPtr ready_lsn);

/* The leader's next step towards the configured state (see ha_sync.c). */
extern SyncStep sync_next_step(const SyncInput *in);

/* Before a promotion: what synchronous_standby_names the new leader starts with. */
extern SyncStandbyNames sync_promotion_ssn(SyncMode mode, const SyncKey *key, const char *self);

/* ---------- the failover rule ---------- */

typedef struct SyncVoter
{
	const char *name;
	XLogRecPtr	lsn;
	bool		fresh;			/* published after the leader was lost */
} SyncVoter;

typedef enum SyncRaceVerdict
{
	SYNC_RACE_MAY_TAKE,			/* listed, with proof it holds every acknowledged commit */
	SYNC_RACE_NOT_LISTED,		/* not synchronous when the leader was lost */
	SYNC_RACE_NO_PROOF,			/* too few listed nodes seen */
	SYNC_RACE_BEHIND			/* a listed node is ahead of this one */
} SyncRaceVerdict;

/*
 * May self take over, by the sync key as read when the leader was lost?
 * peers are the other members with their last positions.
 */
extern SyncRaceVerdict sync_race_check(const SyncKey *key, const char *self, XLogRecPtr self_lsn,
									   const SyncVoter *peers, int npeers,
									   char *why, size_t whylen);

/* ---------- this node's postgres (ha_sync_local.c, server only) ---------- */

extern void sync_local_ssn(SyncStandbyNames *out);
extern int	sync_local_standbys(SyncStandby *out, int max);
extern bool sync_local_in_effect(const SyncStandbyNames *ssn, const SyncStandby *standbys, int n);
extern bool sync_local_defined_matches(const SyncStandbyNames *ssn);
extern void sync_local_set_ssn(const SyncStandbyNames *ssn);
extern void sync_local_nudge_standbys(void);

#endif							/* PG_HA_SYNC_H */
