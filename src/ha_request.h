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
#define HA_REQUEST_MAX_JSON 1024	/* encode never writes more than this */

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
/* "YYYY-MM-DDTHH:MM:SS.ffffff+00:00" */
extern void ha_time_format(int64_t epoch_us, char *buf, size_t len);

#endif							/* PG_HA_REQUEST_H */
