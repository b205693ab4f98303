/*
 * ha_failsafe.h - failsafe mode (pg_ha.failsafe_mode): the decisions as pure
 * functions (ha_failsafe.c, unit-tested), the leader's calls to its members
 * (failsafe_call.c, HA worker) and the members' answer (http_failsafe.c,
 * HTTP listener).  ha_failsafe.c argues why it is safe.
 */
#ifndef PG_HA_FAILSAFE_H
#define PG_HA_FAILSAFE_H

#include "pg_ha.h"

#define FAILSAFE_MAX_MEMBERS 64
#define FAILSAFE_URL_LEN 256
/* the etcd key (under the cluster prefix) naming who may confirm and race */
#define FAILSAFE_KEY "failsafe"

/* One member the leader must hear from: name and API base URL. */
typedef struct FailsafeMember
{
	char		name[PG_HA_NAME_LEN];
	char		api_url[FAILSAFE_URL_LEN];
} FailsafeMember;

/* A member's answer to one POST /failsafe. */
typedef struct FailsafeAnswer
{
	int			status;			/* HTTP status; 0 = no answer in time */
	int64		promise_us;		/* from its receipt: no race before it ends */
} FailsafeAnswer;

/*
 * The leader after one round of POST /failsafe, sent at t_send (lease
 * clock, read before the first request left): the new lease deadline.  It
 * is `current` unless every member answered 200 with a positive promise;
 * then the larger of `current` and t_send + the smallest promise, capped at
 * t_send + own_ttl_us.  why says what was decided.
 */
extern int64 failsafe_extended_deadline(int64 current, int64 t_send, int64 own_ttl_us,
										const FailsafeMember *members,
										const FailsafeAnswer *answers, int n,
										char *why, size_t whylen);

/* What a member knows when a leader asks it to confirm. */
typedef struct FailsafeAsk
{
	const char *from;			/* the leader's name, from the request */
	const char *self;			/* this node's name */
	PgHaRole	role;			/* this node, as the HA worker last saw it */
	bool		worker_running;
	bool		key_claimed;	/* the worker is taking the leader key */
	bool		leader_known;	/* etcd was read at least once */
	const char *leader;			/* leader key's holder as last read; "" = none */
} FailsafeAsk;

/*
 * The member's answer: 200 (confirm: promise not to race), 409 (this node
 * may not confirm that leader), 503 (cannot say now).  why is a short
 * reason for the body.
 */
extern int	failsafe_answer(const FailsafeAsk *ask, const char **why);

/* Is a promise recorded until `until` still binding at `now`? */
extern bool failsafe_promise_binding(int64 now, int64 until);

/*
 * The leader: do the promises of its last fully confirmed round, which
 * back writes until confirmed_until (0: no such round), still cover `now`
 * with the fence's margin to spare?  (ha_failsafe.c, point 4)
 */
extern bool failsafe_promises_cover(int64 now, int64 confirmed_until, int64 margin_us);

/*
 * The failsafe key's value: {"<name>":"<api_url>",...}, as Patroni writes
 * it.  encode: palloc'd-free, into buf; false when it does not fit.
 * decode: false on anything but an object of strings (bounded).
 */
extern bool failsafe_members_encode(const FailsafeMember *m, int n, char *buf, size_t len);
extern bool failsafe_members_decode(const char *json, FailsafeMember *out, int max, int *n);
/* Does the list name `name`? */
extern bool failsafe_members_include(const FailsafeMember *m, int n, const char *name);

/* failsafe_call.c: one round of POSTs, in parallel, bounded by timeout_ms. */
extern void failsafe_call_members(const char *leader, const FailsafeMember *members, int n,
								  int timeout_ms, FailsafeAnswer *answers);

#endif							/* PG_HA_FAILSAFE_H */
