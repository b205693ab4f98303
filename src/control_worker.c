/*
 * control_worker.c - the "pg_ha control" background worker: serves the
 * requests of Patroni's REST control API that need etcd, one at a time,
 * for the HTTP listener (http_control.c), which must never wait on etcd.
 *
 * Switchover, failover and their cancellation go through the very code of
 * pg_ha.switchover(), pg_ha.failover() and pg_ha.cancel_switchover()
 * (sql_control.c): the same checks, the same request in the failover key,
 * the same wait for the outcome; only the words of the answer are
 * Patroni's.  An ERROR from them is caught and becomes the HTTP status:
 * raised before the request was written it is a refusal (412), after it a
 * failure (503).  PATCH and PUT /config write the config key, PATCH with a
 * compare-and-swap on the key's mod_revision (409 when it changed
 * meanwhile), as Patroni does.  POST /restart and POST /reinitialize end
 * in a fast shutdown (ha_restart.c, ha_reinit.c), started only after the
 * answer has been posted; POST /restart with a schedule and DELETE
 * /restart change the scheduled restart in shared memory, which the HA
 * worker runs when due.
 *
 * The worker has no database connection: nothing here needs the catalog.
 */
#include "pg_ha.h"

#include <signal.h>
#include <time.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ha_request.h"
#include "patroni_codec.h"

/* What one request gets back. */
typedef struct ControlAnswer
{
	int			status;
	bool		json;
	StringInfoData text;
} ControlAnswer;

static void
reply(ControlAnswer *a, int status, const char *text)
{
	a->status = status;
	a->json = false;
	resetStringInfo(&a->text);
	appendStringInfoString(&a->text, text);
}

/* reply(), for the checks that answer and stop: always false */
static bool
refuse_with(ControlAnswer *a, int status, const char *text)
{
	reply(a, status, text);
	return false;
}

/*
 * In a PG_CATCH of the worker: the error, copied into ctx, with the error
 * state cleared and any lightweight lock the failed call held released,
 * so the worker can answer and serve the next request.
 */
static ErrorData *
caught_error(MemoryContext ctx)
{
	ErrorData  *e;

	MemoryContextSwitchTo(ctx);
	e = CopyErrorData();
	FlushErrorState();
	LWLockReleaseAll();
	return e;
}

/* ---------- switchover and failover ---------- */

/* The cluster as the HA worker last read it: leader and member names. */
typedef struct ClusterFacts
{
	bool		known;
	char		leader[PG_HA_NAME_LEN];
	char		members[PG_HA_MEMBERS_JSON_LEN];
} ClusterFacts;

static void
read_facts(ClusterFacts *f)
{
	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	f->known = pg_ha_shared->leader_known;
	memcpy(f->leader, pg_ha_shared->leader, sizeof(f->leader));
	memcpy(f->members, pg_ha_shared->members_json, sizeof(f->members));
	LWLockRelease(pg_ha_shared->lock);
	f->members[sizeof(f->members) - 1] = '\0';
}

/* Is name listed in the members array ("name":"<name>")? */
static bool
facts_have_member(const ClusterFacts *f, const char *name)
{
	char		needle[PG_HA_NAME_LEN + 16];

	snprintf(needle, sizeof(needle), "\"name\":\"%s\"", name);
	return ha_valid_member_name(name) && strstr(f->members, needle) != NULL;
}

/*
 * Patroni's checks on the body, in its order and words (api.py
 * do_POST_failover); true when the request may go on.  *at_us: the
 * scheduled time, 0 for now.
 */
static bool
check_body(const PatroniFailoverBody *b, bool switchover, const ClusterFacts *f,
		   int64 *at_us, ControlAnswer *a)
{
	const char *action = switchover ? "switchover" : "failover";
	char		err[256];

	*at_us = 0;
	if (!switchover && b->candidate[0] == '\0')
		return refuse_with(a, 400, "Failover could be performed only to a specific candidate");
	if (switchover && b->leader[0] == '\0')
		return refuse_with(a, 400, "Switchover could be performed only from a specific leader");
	if (b->scheduled_at[0] != '\0')
	{
		if (b->leader[0] == '\0')
			return refuse_with(a, 400, psprintf("Scheduled %s is possible only from a specific leader", action));
		/* Patroni parses first: an unparsable time is 422 even without a zone */
		if (!ha_time_parse(b->scheduled_at, at_us, err, sizeof(err)))
			return refuse_with(a, 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601");
		if (!ha_time_has_zone(b->scheduled_at))
			return refuse_with(a, 400, psprintf("Timezone information is mandatory for the scheduled %s", action));
		if (*at_us <= (int64) time(NULL) * 1000000)
			return refuse_with(a, 422, psprintf("Cannot schedule %s in the past", action));
	}
	if (!f->known)
		return refuse_with(a, 503, "the cluster has not been read from etcd yet");
	if (b->leader[0] != '\0' && strcmp(b->leader, f->leader) != 0)
		return refuse_with(a, 412, "leader name does not match");
	if (b->candidate[0] != '\0' && !facts_have_member(f, b->candidate))
		return refuse_with(a, 412, "candidate does not exists");
	return true;
}

/*
 * Calls pg_ha.switchover(candidate, scheduled_at) or pg_ha.failover(candidate)
 * as SQL would; an ERROR becomes the answer.  True when it succeeded.
 */
static bool
call_sql(bool switchover, const char *candidate, int64 at_us, ControlAnswer *a)
{
	LOCAL_FCINFO(fcinfo, 3);
	MemoryContext ctx = CurrentMemoryContext;
	volatile bool ok = false;

	InitFunctionCallInfoData(*fcinfo, NULL, switchover ? 3 : 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].isnull = candidate[0] == '\0';
	fcinfo->args[0].value = candidate[0] ? PointerGetDatum(cstring_to_text(candidate)) : (Datum) 0;
	if (switchover)
	{
		/* scheduled_at (NULL: now); wait (NULL) */
		fcinfo->args[1].isnull = at_us == 0;
		fcinfo->args[1].value =
			TimestampTzGetDatum(at_us - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	}
	else
	{
		/* force: never over the API */
		fcinfo->args[1].isnull = false;
		fcinfo->args[1].value = BoolGetDatum(false);
	}
	fcinfo->args[2].isnull = true;
	fcinfo->args[2].value = (Datum) 0;

	PG_TRY();
	{
		if (switchover)
			(void) pg_ha_switchover(fcinfo);
		else
			(void) pg_ha_failover(fcinfo);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *e = caught_error(ctx);

		reply(a, pg_ha_control_request_written ? 503 : 412, e->message ? e->message : "failed");
		if (e->detail)
			appendStringInfo(&a->text, "\n%s", e->detail);
		ereport(LOG, (errmsg("pg_ha: %s requested over the API failed: %s",
							 switchover ? "switchover" : "failover",
							 e->message ? e->message : "unknown error")));
		FreeErrorData(e);
	}
	PG_END_TRY();
	return ok;
}

/*
 * POST /switchover and POST /failover.  A failover with a leader in place
 * is, in Patroni, a switchover to the named candidate; pg_ha.failover()
 * is only for a cluster without a leader.
 */
static void
serve_failover(const char *body, bool switchover, ControlAnswer *a)
{
	PatroniFailoverBody b;
	ClusterFacts *f = palloc(sizeof(ClusterFacts));
	char		err[256];
	int64		at_us;
	const char *action = switchover ? "switchover" : "failover";
	bool		as_switchover;

	if (!patroni_failover_body_decode(body, strlen(body), &b, err, sizeof(err)))
	{
		reply(a, 400, err);
		return;
	}
	read_facts(f);
	if (!check_body(&b, switchover, f, &at_us, a))
		return;
	as_switchover = switchover || f->leader[0] != '\0';
	ereport(LOG, (errmsg("pg_ha: received %s request over the API with leader=%s candidate=%s scheduled_at=%s",
						 action, b.leader, b.candidate, b.scheduled_at)));
	if (!call_sql(as_switchover, b.candidate, at_us, a))
		return;
	if (at_us != 0)
	{
		reply(a, 202, psprintf("%s scheduled", switchover ? "Switchover" : "Failover"));
		return;
	}
	read_facts(f);
	reply(a, 200, psprintf("Successfully %s over to \"%s\"", switchover ? "switched" : "failed",
						   b.candidate[0] ? b.candidate : f->leader));
}

/* DELETE /switchover: pg_ha.cancel_switchover(). */
static void
serve_cancel(ControlAnswer *a)
{
	LOCAL_FCINFO(fcinfo, 0);
	MemoryContext ctx = CurrentMemoryContext;

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	PG_TRY();
	{
		(void) pg_ha_cancel_switchover(fcinfo);
		reply(a, 200, "scheduled switchover deleted");
	}
	PG_CATCH();
	{
		ErrorData  *e = caught_error(ctx);

		if (e->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
			reply(a, 404, "no switchover is scheduled");
		else if (e->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE)
			reply(a, 409, e->message);
		else
			reply(a, 503, e->message ? e->message : "failed");
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/* ---------- the config key ---------- */

/* A client, or NULL with a 503 answered. */
/* A client on this node's etcd settings, or NULL with the reason in err. */
static EtcdClient *
new_client(char *err, size_t errlen)
{
	EtcdConfig	config;

	if (!pg_ha_etcd_config(&config, err, errlen))
		return NULL;
	return etcd_client_new(&config, err, errlen);
}

static EtcdClient *
client_or_answer(ControlAnswer *a)
{
	char		err[ETCD_ERRMSG_LEN];
	EtcdClient *client = new_client(err, sizeof(err));

	if (client == NULL)
		reply(a, 503, err);
	return client;
}

/* PATCH /config: Patroni's merge, written only over the revision it read. */
static void
serve_patch_config(const char *body, ControlAnswer *a)
{
	EtcdClient *client = client_or_answer(a);
	char	   *key = pg_ha_key("config");
	EtcdKVList	kvs;
	EtcdStatus	st;
	char	   *merged = NULL;
	bool		changed = false;
	bool		succeeded = false;
	char		err[256];
	EtcdCompare cmp = {key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, 0};
	EtcdOp		put = {ETCD_OP_PUT, key, NULL, 0, false};

	if (client == NULL)
		return;
	if (strcmp(body, "{}") == 0)
	{
		etcd_client_free(client);
		reply(a, 400, "the body must be a non-empty JSON object");
		return;
	}
	st = etcd_get(client, key, false, &kvs);
	if (st != ETCD_OK || kvs.count == 0)
	{
		/* Patroni: 503 when there is no config to patch */
		reply(a, 503, st == ETCD_NOT_FOUND || st == ETCD_OK ? "the cluster has no config key" :
			  etcd_last_error(client));
		etcd_kvlist_free(&kvs);
		etcd_client_free(client);
		return;
	}
	cmp.number = kvs.kvs[0].mod_revision;
	if (!patroni_config_patch(kvs.kvs[0].value, kvs.kvs[0].value_len, body, strlen(body),
							  &merged, &changed, err, sizeof(err)))
		reply(a, 400, err);
	else if (changed)
	{
		put.value = merged;
		st = etcd_txn(client, &cmp, 1, &put, 1, NULL, 0, &succeeded, NULL);
		if (st != ETCD_OK)
			reply(a, 503, etcd_last_error(client));
		else if (!succeeded)
			reply(a, 409, "the config key changed meanwhile, try again");
	}
	if (merged != NULL && (!changed || succeeded))
	{
		reply(a, 200, merged);
		a->json = true;
		ereport(LOG, (errmsg("pg_ha: config key %s over the API", changed ? "patched" : "left as it was")));
	}
	free(merged);
	etcd_kvlist_free(&kvs);
	etcd_client_free(client);
}

/* PUT /config: the body replaces the key, as Patroni's does. */
static void
serve_put_config(const char *body, ControlAnswer *a)
{
	EtcdClient *client;
	char		err[256] = "";

	if (!patroni_config_check_object(body, strlen(body), err, sizeof(err)) ||
		strcmp(body, "{}") == 0)
	{
		reply(a, 400, err[0] ? err : "the body must be a non-empty JSON object");
		return;
	}
	client = client_or_answer(a);
	if (client == NULL)
		return;
	if (etcd_put(client, pg_ha_key("config"), body, 0) != ETCD_OK)
		reply(a, 502, etcd_last_error(client));
	else
	{
		reply(a, 200, body);
		a->json = true;
		ereport(LOG, (errmsg("pg_ha: config key replaced over the API")));
	}
	etcd_client_free(client);
}

/* ---------- restart ---------- */

/* set by serve_restart: shut down once the answer is posted */
static bool restart_after_answer = false;
static bool checkpoint_before_restart = false;	/* a restart, not a reinitialize */

/* how long an answer about a schedule waits for the member key to show it */
#define SCHEDULE_PUBLISH_WAIT_MS 2000

/*
 * POST /restart with "schedule": recorded for the HA worker, which runs it
 * when due (ha_restart.c, ha_worker.c).  Patroni refuses it while paused
 * (its status, 500: the initial value of its answer); the conditions are
 * checked when the time comes, not now.
 */
static void
schedule_restart(const PatroniRestartBody *b, ControlAnswer *a)
{
	char		at[HA_TIME_LEN];

	if (!pg_ha_restart_schedule_add(b))
	{
		reply(a, 409, "Another restart is already scheduled");
		return;
	}
	ha_time_format(b->schedule_us, at, sizeof(at));
	ereport(LOG, (errmsg("pg_ha: restart scheduled over the API for %s", at)));
	(void) pg_ha_restart_schedule_wait_published(SCHEDULE_PUBLISH_WAIT_MS);
	reply(a, 202, "Restart scheduled");
}

/*
 * One member down at a time.  `patronictl restart <cluster>` restarts the
 * members one after another, and Patroni answers POST /restart only once
 * postgres is back, so its members go down one at a time.  pg_ha's API
 * lives in postgres and answers before the shutdown, so patronictl would
 * move to the next member at once and take them all down together.
 * Instead, a node about to restart over the API writes restarting/<name>
 * (on a lease of RESTARTING_KEY_TTL s, so that a node that never comes back
 * holds nobody up for longer), its HA worker deletes the key once it is
 * back (ha_worker.c), and a node asked for a restart first waits, up to
 * RESTARTING_WAIT_US, while another member's key is there; then it refuses
 * (503) rather than go down too.  Availability only: nothing here decides
 * who may lead or write, and without etcd the restart just goes ahead.
 */
#define RESTARTING_KEY_TTL 60
#define RESTARTING_WAIT_US (INT64CONST(60) * 1000000)

static char *
restarting_key(const char *node)
{
	return pg_ha_key(psprintf("restarting/%s", node));
}

/* Another member restarting, named in who; false when none (or etcd failed). */
static bool
other_restarting(EtcdClient *client, char *who, size_t len)
{
	char	   *prefix = pg_ha_key("restarting/");
	EtcdKVList	kvs;
	bool		found = false;

	memset(&kvs, 0, sizeof(kvs));
	if (etcd_get(client, prefix, true, &kvs) == ETCD_OK)
		for (int i = 0; i < kvs.count && !found; i++)
		{
			const char *name = kvs.kvs[i].key + strlen(prefix);

			if (strcmp(name, pg_ha_effective_node_name()) != 0)
			{
				strlcpy(who, name, len);
				found = true;
			}
		}
	etcd_kvlist_free(&kvs);
	return found;
}

/* Waits while another member restarts; false if one still does at the end. */
static bool
wait_for_other_restarts(EtcdClient *client, char *who, size_t len)
{
	int64		give_up = pg_ha_monotonic_us() + RESTARTING_WAIT_US;
	bool		logged = false;

	while (other_restarting(client, who, len))
	{
		if (pg_ha_monotonic_us() > give_up)
			return false;
		if (!logged)
			ereport(LOG, (errmsg("pg_ha: restart waits for member \"%s\" to come back from its restart", who)));
		logged = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 500,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/* restarting/<this node>, on its own lease; a failure is only logged. */
static void
announce_restart(EtcdClient *client)
{
	int64		lease = 0;
	int64		ttl = 0;

	if (client == NULL ||
		etcd_lease_grant(client, RESTARTING_KEY_TTL, &lease, &ttl) != ETCD_OK ||
		etcd_put(client, restarting_key(pg_ha_effective_node_name()), "{}", lease) != ETCD_OK)
		ereport(LOG, (errmsg("pg_ha: could not record this restart in etcd; other members will not wait for it: %s",
							 client ? etcd_last_error(client) : "no etcd client")));
}

/* The etcd client for the above, or NULL (then nobody waits). */
static EtcdClient *
restart_client(void)
{
	char		err[ETCD_ERRMSG_LEN];

	return new_client(err, sizeof(err));
}

/*
 * POST /restart: Patroni's conditions (role, restart_pending,
 * postgres_version), then pg_ha.restart()'s path (ha_restart.c): the
 * marker, and a fast shutdown the service manager turns into a restart.
 * The shutdown ends this listener too, so the answer goes out first:
 * "restart initiated", Patroni's words for an asynchronous restart, with
 * 200 so that patronictl reports success.
 */
static void
serve_restart(const char *body, ControlAnswer *a)
{
	PatroniRestartBody b;
	char		err[256] = "";
	int			st = patroni_restart_body_decode(body, strlen(body), (int64) time(NULL) * 1000000,
												 &b, err, sizeof(err));
	bool		paused;
	MemoryContext ctx = CurrentMemoryContext;
	EtcdClient *client;
	char		who[PG_HA_NAME_LEN] = "";

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	paused = pg_ha_shared->paused;
	LWLockRelease(pg_ha_shared->lock);
	if (b.scheduled && paused)
	{
		reply(a, 500, "Can't schedule restart in the paused state");
		return;
	}
	if (st != 0)
	{
		reply(a, st, err);
		return;
	}
	if (b.scheduled)
	{
		schedule_restart(&b, a);
		return;
	}
	if (patroni_restart_unmet(&b, !RecoveryInProgress(), pg_ha_pending_restart(), PG_VERSION_NUM))
	{
		reply(a, 503, "restart conditions are not satisfied");
		return;
	}
	client = restart_client();
	if (client && !wait_for_other_restarts(client, who, sizeof(who)))
	{
		reply(a, 503, psprintf("member %s is still restarting; restart refused, try again once it is back", who));
		etcd_client_free(client);
		return;
	}
	announce_restart(client);
	if (client)
		etcd_client_free(client);
	PG_TRY();
	{
		pg_ha_restart_mark("requested over the API");
		reply(a, 200, "restart initiated");
		restart_after_answer = true;
		checkpoint_before_restart = true;
	}
	PG_CATCH();
	{
		ErrorData  *e = caught_error(ctx);

		reply(a, 500, e->message ? e->message : "restart failed");
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/* DELETE /restart: the scheduled restart, if any, is forgotten. */
static void
serve_cancel_restart(ControlAnswer *a)
{
	if (!pg_ha_restart_schedule_delete())
	{
		reply(a, 404, "no restarts are scheduled");
		return;
	}
	ereport(LOG, (errmsg("pg_ha: scheduled restart deleted over the API")));
	(void) pg_ha_restart_schedule_wait_published(SCHEDULE_PUBLISH_WAIT_MS);
	reply(a, 200, "scheduled restart deleted");
}

/* ---------- reinitialize ---------- */

/* Patroni's words for each refusal (ha.py reinitialize), 503 as it answers them. */
static const char *
reinit_refusal(ReinitVerdict v)
{
	switch (v)
	{
		case REINIT_CLUSTER_UNKNOWN:
			return "etcd cannot be reached, can not reinitialize";
		case REINIT_NO_LEADER:
			return "Cluster has no leader, can not reinitialize";
		case REINIT_IS_LEADER:
			return "I am the leader, can not reinitialize";
		case REINIT_MAY_PROMOTE:
		case REINIT_CANDIDATE:
			return "I may be promoted, can not reinitialize";
		case REINIT_IN_PROGRESS:
			return "reinitialize already in progress";
		case REINIT_ACCEPTED:
			break;
	}
	return "reinitialize started";
}

/*
 * POST /reinitialize: ha_reinit.c decides and records it; then the restart
 * path, as for POST /restart: the answer goes out before the shutdown.
 * Patroni answers 200 "reinitialize started" before its clone runs too.
 */
static void
serve_reinitialize(const char *body, ControlAnswer *a)
{
	PatroniReinitBody b;
	char		err[256] = "";
	int			st = patroni_reinit_body_decode(body, strlen(body), &b, err, sizeof(err));
	MemoryContext ctx = CurrentMemoryContext;

	if (st != 0)
	{
		reply(a, st, err);
		return;
	}
	PG_TRY();
	{
		ReinitVerdict v = pg_ha_reinitialize_accept(b.force, b.from_leader, "requested over the API");

		reply(a, v == REINIT_ACCEPTED ? 200 : 503, reinit_refusal(v));
		restart_after_answer = v == REINIT_ACCEPTED;
	}
	PG_CATCH();
	{
		ErrorData  *e = caught_error(ctx);

		reply(a, 500, e->message ? e->message : "reinitialize failed");
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/* ---------- the worker ---------- */

static void
serve(ControlKind kind, const char *body, ControlAnswer *a)
{
	switch (kind)
	{
		case CONTROL_SWITCHOVER:
			serve_failover(body, true, a);
			break;
		case CONTROL_FAILOVER:
			serve_failover(body, false, a);
			break;
		case CONTROL_CANCEL_SWITCHOVER:
			serve_cancel(a);
			break;
		case CONTROL_PATCH_CONFIG:
			serve_patch_config(body, a);
			break;
		case CONTROL_PUT_CONFIG:
			serve_put_config(body, a);
			break;
		case CONTROL_RESTART:
			serve_restart(body, a);
			break;
		case CONTROL_CANCEL_RESTART:
			serve_cancel_restart(a);
			break;
		case CONTROL_REINITIALIZE:
			serve_reinitialize(body, a);
			break;
	}
}

/* Takes a queued request: its kind and body; false when there is none. */
static bool
take_request(ControlKind *kind, char *body)
{
	ControlSlot *slot = &pg_ha_shared->control;
	bool		taken = false;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (slot->phase == CONTROL_QUEUED)
	{
		slot->phase = CONTROL_RUNNING;
		*kind = slot->kind;
		memcpy(body, slot->text, PG_HA_CONTROL_TEXT_LEN);
		taken = true;
	}
	LWLockRelease(pg_ha_shared->lock);
	body[PG_HA_CONTROL_TEXT_LEN - 1] = '\0';
	return taken;
}

static void
post_answer(const ControlAnswer *a)
{
	ControlSlot *slot = &pg_ha_shared->control;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	slot->status = a->status;
	slot->answer_json = a->json;
	strlcpy(slot->text, a->text.data, sizeof(slot->text));
	/* nobody waits for an abandoned request: free the slot for the next */
	slot->phase = slot->abandoned ? CONTROL_FREE : CONTROL_DONE;
	LWLockRelease(pg_ha_shared->lock);
}

/* Announces this worker; a request it was running when it died failed. */
static void
announce(void)
{
	ControlSlot *slot = &pg_ha_shared->control;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	slot->worker_pid = MyProcPid;
	slot->worker_latch = MyLatch;
	if (slot->phase == CONTROL_RUNNING)
	{
		slot->status = 503;
		slot->answer_json = false;
		strlcpy(slot->text, "the control worker restarted; the outcome is unknown", sizeof(slot->text));
		slot->phase = slot->abandoned ? CONTROL_FREE : CONTROL_DONE;
	}
	LWLockRelease(pg_ha_shared->lock);
}

static void
withdraw(int code, Datum arg)
{
	ControlSlot *slot = &pg_ha_shared->control;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	LWLockRelease(pg_ha_shared->lock);
}

void
pg_ha_control_main(Datum arg)
{
	MemoryContext job_ctx;
	char	   *body;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	job_ctx = AllocSetContextCreate(TopMemoryContext, "pg_ha control request",
									ALLOCSET_DEFAULT_SIZES);
	body = MemoryContextAlloc(TopMemoryContext, PG_HA_CONTROL_TEXT_LEN);
	announce();
	before_shmem_exit(withdraw, (Datum) 0);

	for (;;)
	{
		ControlKind kind;
		ControlAnswer a;
		MemoryContext old;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* a scheduled restart the HA worker found due (ha_worker.c) */
		if (pg_ha_restart_take_hand_off())
		{
			/* scheduled: the operator chose the time; others wait for it, it waits for none */
			EtcdClient *client = restart_client();

			announce_restart(client);
			if (client)
				etcd_client_free(client);
			pg_ha_restart_checkpoint(true);
			pg_ha_restart_mark("scheduled restart");
			pg_ha_restart_now();
			continue;
		}
		if (!take_request(&kind, body))
			continue;
		old = MemoryContextSwitchTo(job_ctx);
		initStringInfo(&a.text);
		reply(&a, 500, "no answer");
		serve(kind, body, &a);
		post_answer(&a);
		MemoryContextSwitchTo(old);
		MemoryContextReset(job_ctx);
		if (restart_after_answer)
		{
			/* the listener polls every few ms: let it send the answer */
			pg_usleep(500 * 1000L);
			/* a reinitialize replaces the data: no checkpoint is worth it */
			if (checkpoint_before_restart)
				pg_ha_restart_checkpoint(true);
			checkpoint_before_restart = false;
			pg_ha_restart_now();
			restart_after_answer = false;
		}
	}
}

void
pg_ha_control_register_worker(void)
{
	BackgroundWorker bgw;

	if (pg_ha_api_listen == NULL || pg_ha_api_listen[0] == '\0')
		return;
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_ha_control_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_ha control", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_ha control", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}
