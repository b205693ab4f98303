/*
 * sql_control.c - SQL functions that change the cluster: switchover,
 * failover, cancel_switchover, pause and resume.
 *
 * They talk to etcd only; the HA workers act on what they write:
 *   - switchover and failover write a request into the `failover` key
 *     (ha_request.c's codec: Patroni's {"leader", "member", "scheduled_at"}
 *     plus our phases) and wait for the outcome, which they report as it
 *     happened: a switchover that ended as a failover is not reported as a
 *     switchover.  When they give up (timeout, cancel) on a request that
 *     was never handed over they remove it, comparing its mod_revision, so
 *     no leftover request can promote its member later (issue 9, defect 1);
 *   - cancel_switchover removes a request nobody acted on yet;
 *   - pause and resume set "pause" in the `config` key.
 * Every argument is checked against the cluster as etcd shows it before
 * anything is written, with the rules pg_hactl applies too
 * (ha_target_check), and each refusal says why.  None of these functions
 * is executable by PUBLIC.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "ha_request.h"
#include "ha_sync.h"

PG_FUNCTION_INFO_V1(pg_ha_switchover);
PG_FUNCTION_INFO_V1(pg_ha_failover);
PG_FUNCTION_INFO_V1(pg_ha_cancel_switchover);
PG_FUNCTION_INFO_V1(pg_ha_pause);
PG_FUNCTION_INFO_V1(pg_ha_resume);

#define CONTROL_WAIT_SECONDS 60

/*
 * Set once a switchover or failover has written its request: the HTTP
 * control API (control_worker.c) tells a refusal (Patroni's 412) from a
 * request that failed on its way (503) by it.
 */
bool		pg_ha_control_request_written = false;
/* a request that vanished while the old leader still leads: dropped */
#define DROPPED_AFTER_US 1000000

static int
backend_abort_check(void *arg)
{
	return InterruptPending ? 1 : 0;
}

/* An etcd client for a backend: bounded, interruptible; ERROR if it cannot be made. */
EtcdClient *
pg_ha_backend_etcd_client(void)
{
	EtcdConfig	config;
	char		err[ETCD_ERRMSG_LEN];
	EtcdClient *client;

	if (!pg_ha_etcd_config(&config, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: %s", err)));
	client = etcd_client_new(&config, err, sizeof(err));
	if (client == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("pg_ha: cannot create etcd client: %s", err)));
	etcd_client_set_abort_check(client, backend_abort_check, NULL);
	return client;
}

static void etcd_fail(EtcdClient *client, const char *what) pg_attribute_noreturn();

static void
etcd_fail(EtcdClient *client, const char *what)
{
	char		err[ETCD_ERRMSG_LEN];

	strlcpy(err, etcd_last_error(client), sizeof(err));
	etcd_client_free(client);
	CHECK_FOR_INTERRUPTS();
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("pg_ha: cannot %s: %s", what, err)));
}

/* Reads every key of the cluster into view (one range read); false on an etcd error. */
static bool
try_load_view(EtcdClient *client, const char *prefix, HaControlView *view)
{
	size_t		plen = strlen(prefix);
	EtcdKVList	kvs;
	EtcdStatus	st;

	memset(view, 0, sizeof(*view));
	st = etcd_get(client, prefix, true, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
		return false;
	for (int i = 0; i < kvs.count; i++)
		if (strncmp(kvs.kvs[i].key, prefix, plen) == 0)
			ha_control_view_add(view, kvs.kvs[i].key + plen, kvs.kvs[i].value,
								kvs.kvs[i].value_len, kvs.kvs[i].mod_revision);
	etcd_kvlist_free(&kvs);
	return true;
}

/* try_load_view, or an ERROR (the client is freed). */
static void
load_view(EtcdClient *client, HaControlView *view)
{
	if (!try_load_view(client, pg_ha_key(""), view))
		etcd_fail(client, "read the cluster from etcd");
}

static void refuse(EtcdClient *client, int code, const char *msg, const char *detail,
				   const char *hint) pg_attribute_noreturn();

static void
refuse(EtcdClient *client, int code, const char *msg, const char *detail, const char *hint)
{
	etcd_client_free(client);
	ereport(ERROR,
			(errcode(code),
			 errmsg("pg_ha: %s", msg),
			 detail ? errdetail("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* What a message quotes of an argument: a 100 MB name made a 100 MB log line. */
#define ECHO_MAX_BYTES 64

/* arg as a message quotes it: cut at a character boundary, "..." if cut. */
static char *
bounded_echo(const char *arg)
{
	int			len = strlen(arg);
	int			cut;

	if (len <= ECHO_MAX_BYTES)
		return pstrdup(arg);
	cut = pg_mbcliplen(arg, len, ECHO_MAX_BYTES);
	return psprintf("%.*s...", cut, arg);
}

static void
check_member_name(const char *name)
{
	if (!ha_valid_member_name(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: invalid member name \"%s\"", bounded_echo(name)),
				 errdetail("Member names are 1 to 63 characters of A-Z, a-z, 0-9, '_', '-' and '.'.")));
}

/* The request the failover key holds, in words, for messages. */
static char *
describe_request(const HaControlView *view)
{
	const HaRequest *r = &view->request;
	char		at[HA_TIME_LEN];

	if (!view->request_valid)
		return psprintf("an invalid value (%s)", view->request_error);
	if (r->leader[0] == '\0')
		return psprintf("a failover to \"%s\" (%s)", r->member, ha_request_phase_name(r->phase));
	if (r->scheduled)
	{
		ha_time_format(r->scheduled_at_us, at, sizeof(at));
		return psprintf("a switchover from \"%s\" to \"%s\" scheduled at %s (%s)", r->leader,
						r->member[0] ? r->member : "the best replica", at,
						ha_request_phase_name(r->phase));
	}
	return psprintf("a switchover from \"%s\" to \"%s\" (%s)", r->leader,
					r->member[0] ? r->member : "the best replica", ha_request_phase_name(r->phase));
}

/* The shared target rules' input from the cluster as etcd shows it. */
static void
target_input(const HaControlView *view, bool switchover, bool force, HaTargetInput *in)
{
	DynSettings dyn;

	memset(in, 0, sizeof(*in));
	in->members = view->members;
	in->nmembers = view->nmembers;
	in->leader = view->leader;
	in->status_optime = view->status_optime;
	in->history_timeline = view->history_timeline;
	/* the config key's value when it sets one (ha_dynconf.c) */
	pg_ha_dyn_current(&dyn);
	in->maximum_lag_bytes = (uint64) dyn.maximum_lag_bytes;
	in->switchover = switchover;
	in->force = force;
	in->sync_leader = "";
	in->sync_standbys = "";
	if (view->sync_value[0] != '\0')
	{
		SyncKey		key;
		char	   *list = palloc(SYNC_MAX_NAMES * PG_HA_NAME_LEN);

		if (sync_key_parse(view->sync_value, strlen(view->sync_value), &key))
		{
			sync_names_join(&key.voters, list, SYNC_MAX_NAMES * PG_HA_NAME_LEN);
			in->sync_leader = pstrdup(key.leader);
			in->sync_standbys = list;
		}
	}
}

/*
 * Applies the shared target rules (ha_target_check) and refuses with the
 * front end's words.  Returns the candidate (picked when NULL).
 */
static char *
check_target(EtcdClient *client, const HaControlView *view, const char *candidate,
			 bool switchover, bool force)
{
	HaTargetInput in;
	char		chosen[HA_REQUEST_NAME_LEN];
	char		better[HA_REQUEST_NAME_LEN];
	char		why[256];
	const char *what = switchover ? "switchover" : "failover";
	HaTargetVerdict v;

	target_input(view, switchover, force, &in);
	v = ha_target_check(&in, candidate, chosen, sizeof(chosen), better, sizeof(better),
						why, sizeof(why));
	switch (v)
	{
		case HA_TARGET_OK:
			if (force)
				ereport(NOTICE, (errmsg("pg_ha: forced failover to \"%s\"", chosen),
								 errdetail("%s", why)));
			return pstrdup(chosen);
		case HA_TARGET_UNKNOWN:
			refuse(client, ERRCODE_UNDEFINED_OBJECT,
				   psprintf("%s refused: no member named \"%s\"", what, chosen), why, NULL);
		case HA_TARGET_IS_LEADER:
			refuse(client, ERRCODE_INVALID_PARAMETER_VALUE,
				   psprintf("%s refused: \"%s\" is already the leader", what, chosen), NULL, NULL);
		case HA_TARGET_NOT_REPLICA:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is not a running replica", what, chosen), why, NULL);
		case HA_TARGET_NOFAILOVER:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is tagged nofailover", what, chosen), why, NULL);
		case HA_TARGET_OLD_TIMELINE:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is on an older timeline", what, chosen), why, NULL);
		case HA_TARGET_NOT_STREAMING:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is not streaming from the leader", what, chosen),
				   why,
				   "This passes once the replica connects: retry, or call pg_ha.switchover() with wait => '30s'.");
		case HA_TARGET_LAGGING:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is lagging", what, chosen), why,
				   switchover ? "This passes once the replica catches up: retry, or call pg_ha.switchover() with wait => '30s'." :
				   psprintf("Call pg_ha.failover('%s', force => true) to promote it all the same and lose that WAL.",
							chosen));
		case HA_TARGET_NOT_BEST:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is not the most advanced replica, \"%s\" is",
							what, chosen, better),
				   why,
				   psprintf("Name \"%s\" instead, or call pg_ha.failover('%s', force => true) to accept losing the WAL only \"%s\" has.",
							better, chosen, better));
		case HA_TARGET_NOT_SYNC:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: \"%s\" is not a synchronous standby", what, chosen), why,
				   psprintf("Name a standby the sync key lists, or call pg_ha.failover('%s', force => true) to promote it all the same and accept losing acknowledged commits.",
							chosen));
		case HA_TARGET_NONE:
			refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   psprintf("%s refused: no replica can take over", what), why, NULL);
	}
	pg_unreachable();
}

/*
 * A switchover right after a failover or a restart finds the candidate not
 * streaming yet, or still catching up: states that pass by themselves.
 * With wait, those are re-checked every half second until the candidate
 * qualifies or the time is up; check_target() then gives the verdict.  A
 * refusal that waiting cannot cure (unknown member, nofailover, ...) comes
 * at once.
 */
static void
wait_until_eligible(EtcdClient *client, HaControlView *view, const char *candidate,
					int64 wait_us)
{
	int64		give_up = pg_ha_monotonic_us() + wait_us;

	while (wait_us > 0)
	{
		HaTargetInput in;
		char		chosen[HA_REQUEST_NAME_LEN];
		char		better[HA_REQUEST_NAME_LEN];
		char		why[256];
		HaTargetVerdict v;

		target_input(view, true, false, &in);
		v = ha_target_check(&in, candidate, chosen, sizeof(chosen), better, sizeof(better),
							why, sizeof(why));
		if ((v != HA_TARGET_NOT_STREAMING && v != HA_TARGET_LAGGING &&
			 v != HA_TARGET_NOT_REPLICA && v != HA_TARGET_NONE) ||
			pg_ha_monotonic_us() > give_up)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 500,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		load_view(client, view);
	}
}

/* Writes the failover key (ha_request_put); 0 when another writer got there first. */
static int64
put_request(EtcdClient *client, const char *key, const char *value, int64 replace_rev)
{
	int64_t		rev;

	if (ha_request_put(client, key, value, replace_rev, &rev) != ETCD_OK)
		etcd_fail(client, "write the failover key");
	return rev;
}

/* Refuses when a request is in progress; otherwise writes req. */
static int64
submit_request(EtcdClient *client, const HaControlView *view, const HaRequest *req,
			   bool for_failover, const char *key)
{
	char		value[HA_REQUEST_MAX_JSON + 1];
	const char *what = for_failover ? "failover" : "switchover";
	int64		rev;

	if (ha_request_encode(req, value, sizeof(value)) < 0)
	{
		etcd_client_free(client);
		elog(ERROR, "pg_ha: could not encode the %s request", what);
	}
	if (ha_request_blocks(view, for_failover))
		refuse(client, ERRCODE_OBJECT_IN_USE,
			   psprintf("%s refused: a switchover or failover is already in progress", what),
			   psprintf("The failover key holds %s.", describe_request(view)),
			   "Wait for it, or remove a pending one with pg_ha.cancel_switchover().");
	if (view->has_request && !view->request_valid)
		ereport(NOTICE,
				(errmsg("pg_ha: replacing an invalid failover key: %s", view->request_error)));
	rev = put_request(client, key, value, view->has_request ? view->request_mod_revision : 0);
	if (rev == 0)
		refuse(client, ERRCODE_OBJECT_IN_USE,
			   psprintf("%s refused: a switchover or failover is already in progress", what),
			   "Another request was written at the same time.", NULL);
	pg_ha_control_request_written = true;
	return rev;
}

typedef struct WaitState
{
	const char *prefix;			/* the cluster's key prefix */
	const char *key;			/* the failover key */
	int64		rev;			/* mod_revision of our request */
	const char *candidate;
	const char *old_leader;		/* switchover: the leader we asked to hand over */
	bool		switchover;
	uint32		history_before; /* history timeline when we wrote */
	bool		handed_over;	/* we saw our request handed over */
	bool		on_old_leader;	/* called on the leader it asks to hand over */
} WaitState;

/*
 * Called on the leader itself: the hand-over ends with this node's
 * restart as a standby, which ends this session too.  Registering lets
 * the worker leave this session running through the hand-over and wait
 * (bounded) for our answer before it restarts; the answer is then the
 * hand-over itself, read from etcd: the point of no return.
 */
static void
register_local_caller(bool on)
{
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (on)
	{
		pg_ha_shared->switchover_caller_pid = MyProcPid;
		pg_ha_shared->switchover_caller_answered = false;
	}
	else if (pg_ha_shared->switchover_caller_pid == MyProcPid)
		pg_ha_shared->switchover_caller_pid = 0;
	LWLockRelease(pg_ha_shared->lock);
}

static void
local_caller_answered(void)
{
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (pg_ha_shared->switchover_caller_pid == MyProcPid)
		pg_ha_shared->switchover_caller_answered = true;
	LWLockRelease(pg_ha_shared->lock);
}

/*
 * Waits for the outcome of our request and returns it in words, or raises
 * the error that says what happened instead.  The client stays the
 * caller's.  An etcd error is retried until the time runs out: the request
 * may well complete meanwhile.
 */
static char *
wait_outcome(EtcdClient *client, WaitState *w)
{
	int64		give_up = pg_ha_monotonic_us() + (int64) CONTROL_WAIT_SECONDS * 1000000;
	int64		missing_since = 0;
	const char *what = w->switchover ? "switchover" : "failover";

	for (;;)
	{
		HaControlView view;
		const HaCandidate *m;
		bool		ours;

		CHECK_FOR_INTERRUPTS();
		if (!try_load_view(client, w->prefix, &view))
		{
			if (pg_ha_monotonic_us() > give_up)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("pg_ha: %s to \"%s\": cannot read the cluster from etcd: %s",
								what, w->candidate, etcd_last_error(client))));
			goto sleep;
		}
		ours = view.has_request && view.request_valid &&
			strcmp(view.request.member, w->candidate) == 0;
		if (ours && (view.request.phase == HA_REQ_HANDED_OVER ||
					 view.request.phase == HA_REQ_FINAL_CONFIRMED))
		{
			w->handed_over = true;
			if (w->on_old_leader)
			{
				char	   *answer = psprintf("switched over from \"%s\" to \"%s\": leadership handed over at %X/%X; \"%s\" promotes, and this node restarts as its standby, which ends this session",
											  w->old_leader, w->candidate,
											  (uint32) (view.request.final_lsn >> 32),
											  (uint32) view.request.final_lsn, w->candidate);

				local_caller_answered();
				return answer;
			}
		}
		if (ours && view.request.phase == HA_REQ_ABORTED)
		{
			char	   *reason = pstrdup(view.request.reason[0] ? view.request.reason : "no reason given");

			/* the leader's answer is read: clear it for the next request */
			ha_request_delete(client, w->key, view.request_mod_revision);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: %s to \"%s\" failed: the leader abandoned it: %s",
							what, w->candidate, reason)));
		}

		m = ha_control_view_member(&view, w->candidate);
		if (strcmp(view.leader, w->candidate) == 0 && m != NULL && m->is_primary)
		{
			bool		new_entry = view.history_timeline > w->history_before;
			const char *how = new_entry && view.history_reason[0] ? view.history_reason : "an unknown path";

			if (!w->switchover)
				return psprintf("failed over to \"%s\"", w->candidate);
			if (w->handed_over || (new_entry && strstr(view.history_reason, "switchover") != NULL))
				return psprintf("switched over from \"%s\" to \"%s\"", w->old_leader, w->candidate);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: switchover to \"%s\" did not happen: \"%s\" became leader by %s",
							w->candidate, w->candidate, how),
					 errdetail("The leader never handed the request over; \"%s\" was promoted without it, so transactions \"%s\" had not sent may be lost.",
							   w->candidate, w->old_leader)));
		}
		if (view.leader[0] != '\0' && strcmp(view.leader, w->candidate) != 0 &&
			!(w->switchover && strcmp(view.leader, w->old_leader) == 0))
		{
			char	   *leader = pstrdup(view.leader);
			char	   *how = pstrdup(view.history_timeline > w->history_before && view.history_reason[0] ?
									  view.history_reason : "an unknown path");

			if (!w->handed_over)
				ha_request_delete(client, w->key, w->rev);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: %s to \"%s\" did not happen: \"%s\" became leader by %s",
							what, w->candidate, leader, how)));
		}
		if (!view.has_request && !w->handed_over && w->switchover &&
			strcmp(view.leader, w->old_leader) == 0)
		{
			/* gone while the old leader still leads: it dropped the request */
			if (missing_since == 0)
				missing_since = pg_ha_monotonic_us();
			else if (pg_ha_monotonic_us() - missing_since > DROPPED_AFTER_US)
			{
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("pg_ha: switchover to \"%s\" failed: the request was removed and \"%s\" still leads",
								w->candidate, w->old_leader),
						 errdetail("The leader clears requests it cannot act on, or someone cancelled it.")));
			}
		}
		else
			missing_since = 0;
		if (pg_ha_monotonic_us() > give_up)
		{
			bool		withdrawn = !w->handed_over && ha_request_delete(client, w->key, w->rev);

			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: %s to \"%s\" failed: \"%s\" did not become leader within %d s",
							what, w->candidate, w->candidate, CONTROL_WAIT_SECONDS),
					 w->handed_over ?
					 errdetail("The request was handed over; \"%s\" may still complete its promotion.", w->candidate) :
					 withdrawn ? errdetail("The request was withdrawn.") :
					 errdetail("The request changed meanwhile and was left in place.")));
		}
sleep:
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * wait_outcome(), but a cancel or statement_timeout while waiting also
 * withdraws a request that was never handed over: nobody is left to
 * report its outcome, and a leftover request could promote its member
 * much later.
 */
static char *
wait_outcome_or_withdraw(EtcdClient *client, WaitState *w)
{
	char	   *result;

	PG_TRY();
	{
		result = wait_outcome(client, w);
	}
	PG_CATCH();
	{
		/*
		 * Compare-and-delete: harmless when the key moved on (handed over,
		 * aborted, replaced) or was withdrawn already.  InterruptPending is
		 * clear here (ProcessInterrupts reset it before raising), so the
		 * client's abort check lets this one bounded call run.
		 */
		if (!w->handed_over)
			ha_request_delete(client, w->key, w->rev);
		if (w->on_old_leader)
			register_local_caller(false);
		etcd_client_free(client);
		PG_RE_THROW();
	}
	PG_END_TRY();
	etcd_client_free(client);
	return result;
}

/* What to wait for after writing a request; old_leader NULL for a failover. */
static void
wait_for(WaitState *w, const char *key, const char *candidate, const char *old_leader,
		 const HaControlView *view)
{
	w->prefix = pg_ha_key("");
	w->key = key;
	w->candidate = candidate;
	w->old_leader = old_leader ? old_leader : "";
	w->switchover = old_leader != NULL;
	w->history_before = view->history_timeline;
	w->handed_over = false;
}

Datum
pg_ha_switchover(PG_FUNCTION_ARGS)
{
	char	   *candidate = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		scheduled = !PG_ARGISNULL(1);
	TimestampTz at = scheduled ? PG_GETARG_TIMESTAMPTZ(1) : 0;
	int64		at_unix_us = 0;
	EtcdClient *client;
	HaControlView *view = palloc(sizeof(HaControlView));
	HaRequest	req;
	WaitState	w;
	char	   *key = pg_ha_key("failover");
	char	   *leader;
	int64		wait_us = 0;

	pg_ha_control_request_written = false;

	if (candidate != NULL)
		check_member_name(candidate);
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(2);
		int64		days = (int64) iv->month * DAYS_PER_MONTH + iv->day;

		if (iv->time < 0 || days < 0 || days > 1 ||
			(wait_us = days * USECS_PER_DAY + iv->time) > INT64CONST(3600) * USECS_PER_SEC)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pg_ha: wait must be between 0 and 1 hour")));
	}
	if (scheduled)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (TIMESTAMP_NOT_FINITE(at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pg_ha: scheduled_at must be a finite time")));
		at_unix_us = at + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
		if (at_unix_us < 0 || at_unix_us >= INT64CONST(253402300800) * USECS_PER_SEC)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pg_ha: scheduled_at must be in the years 1970 to 9999"),
					 errdetail("It is %s.", timestamptz_to_str(at))));
		if (at <= now)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pg_ha: switchover refused: scheduled_at is in the past"),
					 errdetail("It is %s; the time now is %s.", timestamptz_to_str(at),
							   timestamptz_to_str(now)),
					 errhint("Leave scheduled_at out to switch over now.")));
	}

	client = pg_ha_backend_etcd_client();
	load_view(client, view);
	if (view->paused)
		refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   "switchover refused: the cluster is paused", NULL, "Run pg_ha.resume() first.");
	if (view->leader[0] == '\0')
		refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   "switchover refused: the cluster has no leader", NULL,
			   "Use pg_ha.failover(candidate) when there is no healthy leader.");
	if (ha_request_blocks(view, false))
		refuse(client, ERRCODE_OBJECT_IN_USE,
			   "switchover refused: a switchover or failover is already in progress",
			   psprintf("The failover key holds %s.", describe_request(view)),
			   "Wait for it, or remove a pending one with pg_ha.cancel_switchover().");
	leader = pstrdup(view->leader);
	wait_until_eligible(client, view, candidate, wait_us);
	candidate = check_target(client, view, candidate, true, false);

	memset(&req, 0, sizeof(req));
	req.phase = HA_REQ_REQUESTED;
	strlcpy(req.leader, leader, sizeof(req.leader));
	strlcpy(req.member, candidate, sizeof(req.member));
	req.scheduled = scheduled;
	req.scheduled_at_us = at_unix_us;
	w.rev = submit_request(client, view, &req, false, key);
	if (scheduled)
	{
		etcd_client_free(client);
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("switchover from \"%s\" to \"%s\" scheduled at %s",
												  leader, candidate, timestamptz_to_str(at))));
	}

	w.on_old_leader = strcmp(leader, pg_ha_effective_node_name()) == 0;
	if (w.on_old_leader)
		register_local_caller(true);
	wait_for(&w, key, candidate, leader, view);
	PG_RETURN_TEXT_P(cstring_to_text(wait_outcome_or_withdraw(client, &w)));
}

Datum
pg_ha_failover(PG_FUNCTION_ARGS)
{
	char	   *candidate;
	bool		force = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	EtcdClient *client;
	HaControlView *view = palloc(sizeof(HaControlView));
	HaRequest	req;
	WaitState	w;
	char	   *key = pg_ha_key("failover");

	pg_ha_control_request_written = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pg_ha: failover needs a candidate")));
	candidate = text_to_cstring(PG_GETARG_TEXT_PP(0));
	check_member_name(candidate);

	client = pg_ha_backend_etcd_client();
	load_view(client, view);
	if (view->leader[0] != '\0')
		refuse(client, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("failover refused: \"%s\" is a healthy leader", view->leader), NULL,
			   "Use pg_ha.switchover() to move leadership away from a running leader.");
	if (ha_request_blocks(view, true))
		refuse(client, ERRCODE_OBJECT_IN_USE,
			   "failover refused: a switchover or failover is already in progress",
			   psprintf("The failover key holds %s.", describe_request(view)), NULL);
	candidate = check_target(client, view, candidate, false, force);

	memset(&req, 0, sizeof(req));
	req.phase = HA_REQ_REQUESTED;
	strlcpy(req.member, candidate, sizeof(req.member));
	req.force = force;
	w.rev = submit_request(client, view, &req, true, key);
	w.on_old_leader = false;
	wait_for(&w, key, candidate, NULL, view);
	PG_RETURN_TEXT_P(cstring_to_text(wait_outcome_or_withdraw(client, &w)));
}

/*
 * Removes a request nobody has acted on yet (phase requested: a scheduled
 * switchover waiting for its time, or a request not yet handed over),
 * comparing its mod_revision so a request that moved on meanwhile stays.
 */
Datum
pg_ha_cancel_switchover(PG_FUNCTION_ARGS)
{
	EtcdClient *client = pg_ha_backend_etcd_client();
	HaControlView *view = palloc(sizeof(HaControlView));
	char	   *key = pg_ha_key("failover");
	char	   *what;

	load_view(client, view);
	if (!view->has_request || !view->request_valid ||
		view->request.phase != HA_REQ_REQUESTED)
		refuse(client, ERRCODE_UNDEFINED_OBJECT,
			   "no pending switchover or failover to cancel",
			   view->has_request ? psprintf("The failover key holds %s.", describe_request(view)) :
			   "There is no failover key.", NULL);
	what = describe_request(view);
	if (!ha_request_delete(client, key, view->request_mod_revision))
		refuse(client, ERRCODE_T_R_SERIALIZATION_FAILURE,
			   "the failover key changed concurrently, try again", NULL, NULL);
	etcd_client_free(client);
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("cancelled %s", what)));
}

/* Sets "pause" in the config key, keeping its other fields. */
static void
set_pause(bool pause)
{
	EtcdClient *client = pg_ha_backend_etcd_client();
	char	   *key = pg_ha_key("config");
	EtcdKVList	kvs;
	EtcdStatus	st;
	cJSON	   *doc = NULL;
	char	   *text;
	EtcdCompare cmp = {key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, 0};
	EtcdOp		put = {ETCD_OP_PUT, key, NULL, 0, false};
	bool		succeeded;

	st = etcd_get(client, key, false, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
		etcd_fail(client, "read the config key");
	if (kvs.count > 0)
	{
		doc = cJSON_ParseWithLength(kvs.kvs[0].value, kvs.kvs[0].value_len);
		cmp.number = kvs.kvs[0].mod_revision;
	}
	else
		cmp.target = ETCD_CMP_CREATE;
	etcd_kvlist_free(&kvs);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		doc = cJSON_CreateObject();
	}
	cJSON_DeleteItemFromObjectCaseSensitive(doc, "pause");
	cJSON_AddBoolToObject(doc, "pause", pause);
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL)
	{
		etcd_client_free(client);
		elog(ERROR, "out of memory");
	}
	put.value = text;
	st = etcd_txn(client, &cmp, 1, &put, 1, NULL, 0, &succeeded, NULL);
	cJSON_free(text);
	if (st != ETCD_OK)
		etcd_fail(client, "write the config key");
	etcd_client_free(client);
	if (!succeeded)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("pg_ha: the config key changed concurrently, try again")));
}

Datum
pg_ha_pause(PG_FUNCTION_ARGS)
{
	set_pause(true);
	ereport(NOTICE, (errmsg("pg_ha: cluster paused: no automatic failover or demotion until pg_ha.resume()")));
	PG_RETURN_VOID();
}

Datum
pg_ha_resume(PG_FUNCTION_ARGS)
{
	set_pause(false);
	PG_RETURN_VOID();
}
