/*
 * ha_worker.c - the HA background worker: this node's lease in etcd, the
 * leader key, the member key, failover, switchover and demotion.
 *
 * Loop: every renew interval (a third of the granted TTL) one "cycle" renews
 * the node's lease and acts on the cluster as it stands; between cycles the
 * worker sleeps on its latch and on a watch of the whole cluster prefix, so
 * a change (leader key gone, switchover requested, pause) starts a cycle at
 * once instead of waiting for the interval.  Every etcd call is bounded by
 * pg_ha.etcd_timeout, so the loop never blocks longer than that.
 *
 * The lease rule (the safety argument every fence relies on):
 *   t_send is read from CLOCK_MONOTONIC *before* a grant or keepalive is
 *   sent.  etcd starts the TTL no earlier than it receives the request, and
 *   etcd leader changes only extend leases, so when the reply grants TTL T
 *   no other node can create the leader key before t_send + T (our clock;
 *   drift over T is covered by the margin, shmem.c).  The worker publishes
 *   that instant as lease_deadline_us while it holds the leader key, and
 *   moves it only forward, only on a successful renewal.  A worker that
 *   stops renewing (etcd down, worker hung or stopped) lets the deadline
 *   pass by itself: nothing has to run for the node to lose its authority,
 *   which is what every backend checks at commit (fence.c).
 *
 * Never two primaries:
 *   - a node writes only while it holds the leader key with a live lease
 *     (fence.c), and the key is created with create-if-absent, so at most
 *     one node holds it;
 *   - a replica promotes only after it has created the key itself;
 *   - a primary that sees another node holding the key demotes (unless the
 *     cluster is paused; it stays fenced meanwhile);
 *   - a primary never takes the key while etcd's history says the cluster
 *     has moved to a newer timeline than its own (a stale former leader).
 *
 * One lease per node carries both the member key and (on the leader) the
 * leader key, so a dead node's keys vanish one TTL after its last renewal,
 * and a clean shutdown revokes it at once.
 */
#include "pg_ha.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/bgwriter.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "replication/walreceiver.h"
#include "storage/spin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "ha_cluster.h"
#include "ha_control.h"

#define ETCD_RETRY_US (1000 * 1000)	/* retry pace while etcd is unreachable */
#define WATCH_RETRY_US (1000 * 1000)
#define RACE_COLLECT_US (1000 * 1000)	/* how long peers get to publish fresh positions */
#define FAST_CYCLE_US (50 * 1000)	/* pace while a hand-over or race is in progress */
#define HANDOVER_CATCHUP_US (5 * 1000 * 1000)
#define SHUTDOWN_WAIT_US (5 * 1000 * 1000)	/* bound on waiting for a stopping leader */
#define MAX_SLEEP_MS 1000

typedef struct HaWorker
{
	EtcdClient *etcd;
	EtcdWatch  *watch;
	int64		watch_retry_at;
	HaState		state;
	ClusterView view;
	char	   *prefix;			/* "/<namespace>/<cluster>/" */

	/* this node's lease */
	int64		lease_id;
	int64		lease_ttl;		/* seconds, as granted */
	int64		lease_deadline; /* t_send + TTL of the last renewal */
	bool		is_leader;

	/* failover race */
	int64		leader_gone_revision;	/* revision at which the key vanished */
	int64		race_started;	/* 0 = no race running */
	bool		promoting;
	TimeLineID	promoted_from;
	char		promote_reason[64];

	int64		diverged_since; /* 0 = following fine */
	bool		initialize_checked;
	char	   *published_member;	/* last member document written */
	char		followed[PG_HA_NAME_LEN];	/* leader primary_conninfo points at */
	char	   *leader_key;
	char	   *member_key;
	char	   *status_key;
	char	   *initialize_key;
	char	   *failover_key;
	char	   *history_key;
	char		node[PG_HA_NAME_LEN];
	char		last_error[PG_HA_ERROR_LEN];
	bool		releasing;
	int64		next_cycle;
} HaWorker;

static HaWorker worker;

/* ---------- small helpers ---------- */

static int
abort_etcd_call(void *arg)
{
	/* a shutdown cuts a call short, except the final release itself */
	return (ShutdownRequestPending && !worker.releasing) ? 1 : 0;
}

static void remember_error(const char *fmt,...) pg_attribute_printf(1, 2);

static void
remember_error(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(worker.last_error, sizeof(worker.last_error), fmt, ap);
	va_end(ap);
}

static void
set_state(HaEvent event, const char *detail)
{
	worker.state = ha_transition(worker.state, event, detail);
	pg_atomic_write_u32(&pg_ha_shared->state, (uint32) worker.state);
}

static void
soon(int64 delay_us)
{
	int64		at = pg_ha_monotonic_us() + delay_us;

	if (worker.next_cycle > at)
		worker.next_cycle = at;
}

/*
 * The deadline backends see.  Zero unless we hold the leader key: a primary
 * without the key has no write authority to advertise.
 */
static void
publish_lease_deadline(void)
{
	uint64		deadline = worker.is_leader ? (uint64) worker.lease_deadline : 0;

	pg_atomic_write_u64(&pg_ha_shared->lease_deadline_us, deadline);
}

static void
raise_fence(const char *why)
{
	if (pg_atomic_exchange_u32(&pg_ha_shared->fence, 1) == 0)
		ereport(LOG, (errmsg("pg_ha: fenced: commits refused (%s)", why)));
}

static void
lose_leadership(const char *why)
{
	if (!worker.is_leader)
		return;
	worker.is_leader = false;
	publish_lease_deadline();
	if (!RecoveryInProgress())
		set_state(HA_EV_LEADER_KEY_TAKEN, why);
}

/* Copies the worker's view into shared memory for readers. */
static void
publish_shared(const NodeSnapshot *snap, bool etcd_ok)
{
	/* our own key may not be back through the watch yet */
	const char *leader = worker.is_leader ? worker.node :
		worker.view.loaded ? cluster_leader(&worker.view) : "";

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (snap)
	{
		pg_ha_shared->role = snap->in_recovery ? PG_HA_ROLE_REPLICA : PG_HA_ROLE_PRIMARY;
		pg_ha_shared->timeline = snap->timeline;
		pg_ha_shared->lsn = snap->lsn;
		pg_ha_shared->receive_lsn = snap->receive_lsn;
		pg_ha_shared->replay_lsn = snap->replay_lsn;
		pg_ha_shared->streaming = snap->streaming;
	}
	strlcpy(pg_ha_shared->leader, leader, sizeof(pg_ha_shared->leader));
	pg_ha_shared->leader_known = worker.view.loaded || worker.is_leader;
	pg_ha_shared->is_leader = worker.is_leader;
	pg_ha_shared->lease_id = worker.lease_id;
	if (worker.view.loaded)
	{
		pg_ha_shared->paused = cluster_paused(&worker.view);
		pg_ha_shared->cluster_optime = cluster_optime(&worker.view);
		cluster_members_json(&worker.view, pg_ha_shared->members_json,
							 sizeof(pg_ha_shared->members_json));
	}
	else
		pg_ha_shared->members_json[0] = '\0';
	pg_ha_shared->nofailover = pg_ha_nofailover || pg_ha_failover_priority == 0;
	pg_ha_shared->noloadbalance = pg_ha_noloadbalance;
	pg_ha_shared->etcd_reachable = etcd_ok;
	if (etcd_ok)
		pg_ha_shared->etcd_last_ok = GetCurrentTimestamp();
	if (worker.etcd)
	{
		strlcpy(pg_ha_shared->etcd_endpoint, etcd_current_endpoint(worker.etcd),
				sizeof(pg_ha_shared->etcd_endpoint));
		pg_ha_shared->etcd_requests = etcd_request_count(worker.etcd);
		pg_ha_shared->etcd_errors = etcd_error_count(worker.etcd);
		pg_ha_shared->etcd_latency_us = etcd_last_latency_us(worker.etcd);
	}
	strlcpy(pg_ha_shared->last_error, worker.last_error, sizeof(pg_ha_shared->last_error));
	LWLockRelease(pg_ha_shared->lock);
}

/* ---------- etcd client and cluster view ---------- */

static bool
ensure_client(void)
{
	EtcdConfig	config;
	char		err[ETCD_ERRMSG_LEN];

	if (worker.etcd)
		return true;
	if (!pg_ha_etcd_config(&config, err, sizeof(err)))
	{
		remember_error("%s", err);
		return false;
	}
	worker.etcd = etcd_client_new(&config, err, sizeof(err));
	if (worker.etcd == NULL)
	{
		remember_error("cannot create etcd client: %s", err);
		return false;
	}
	etcd_client_set_abort_check(worker.etcd, abort_etcd_call, NULL);
	return true;
}

static void
drop_watch(int64 retry_at)
{
	etcd_watch_free(worker.watch);
	worker.watch = NULL;
	worker.watch_retry_at = retry_at;
}

/* After a reload the etcd settings may differ: reconnect with them. */
static void
reset_client(void)
{
	drop_watch(0);
	cluster_reset(&worker.view);
	etcd_client_free(worker.etcd);
	worker.etcd = NULL;
}

/*
 * Reads the whole cluster prefix and watches it from the next revision on,
 * so no change between the read and the watch is missed.
 */
static bool
load_view(void)
{
	EtcdKVList	kvs;
	EtcdStatus	st;

	if (worker.view.loaded && worker.watch)
		return true;
	drop_watch(0);
	st = etcd_get(worker.etcd, worker.prefix, true, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
	{
		remember_error("cannot read cluster keys: %s", etcd_last_error(worker.etcd));
		return false;
	}
	cluster_load(&worker.view, &kvs, strlen(worker.prefix));
	if (cluster_leader(&worker.view)[0] == '\0' && worker.leader_gone_revision == 0)
		worker.leader_gone_revision = worker.view.kvs.revision;
	worker.watch = etcd_watch_start(worker.etcd, worker.prefix, true,
									worker.view.kvs.revision + 1);
	if (worker.watch == NULL)
		worker.watch_retry_at = pg_ha_monotonic_us() + WATCH_RETRY_US;
	return true;
}

static void
handle_event(EtcdEvent *ev)
{
	bool		is_leader_key = strcmp(ev->kv.key, worker.leader_key) == 0;
	bool		is_failover_key = strcmp(ev->kv.key, worker.failover_key) == 0;
	bool		is_config_key = strlen(ev->kv.key) > strlen(worker.prefix) &&
		strcmp(ev->kv.key + strlen(worker.prefix), "config") == 0;

	if (is_leader_key)
	{
		if (ev->type == ETCD_EVENT_DELETE)
		{
			worker.leader_gone_revision = ev->kv.mod_revision;
			if (worker.is_leader)
				lose_leadership("leader key deleted");
			ereport(LOG, (errmsg("pg_ha: leader key deleted")));
		}
		else if (worker.is_leader &&
				 (ev->kv.value_len != strlen(worker.node) ||
				  strcmp(ev->kv.value, worker.node) != 0 || ev->kv.lease != worker.lease_id))
			lose_leadership("leader key overwritten");
		else if (ev->type == ETCD_EVENT_PUT)
			worker.race_started = 0;
	}
	cluster_apply_event(&worker.view, ev);
	/* what the cycle acts on changed: act now rather than at the interval */
	if (is_leader_key || is_failover_key || is_config_key)
		soon(0);
}

static void
service_watch(void)
{
	EtcdEventList events;
	EtcdStatus	st;

	if (worker.watch == NULL)
	{
		if (worker.etcd == NULL || worker.state == HA_ETCD_UNREACHABLE ||
			pg_ha_monotonic_us() < worker.watch_retry_at)
			return;
		/* re-read everything: events may have been missed meanwhile */
		cluster_reset(&worker.view);
		if (!load_view())
			return;
		soon(0);
		if (worker.watch == NULL)
			return;
	}
	st = etcd_watch_poll(worker.watch, &events);
	for (int i = 0; i < events.count; i++)
		handle_event(&events.events[i]);
	/* readers (the health API's /cluster) see changes as they come */
	if (events.count > 0)
		publish_shared(NULL, true);
	etcd_eventlist_free(&events);
	if (st != ETCD_OK)
	{
		ereport(DEBUG1, (errmsg("pg_ha: cluster watch ended: %s", etcd_watch_error(worker.watch))));
		drop_watch(pg_ha_monotonic_us() + WATCH_RETRY_US);
	}
}

/* ---------- the lease ---------- */

/*
 * Grant or renew this node's lease; see the lease rule at the top of the
 * file for why t_send is taken before the request.
 */
static bool
renew_lease(void)
{
	int64		t_send = pg_ha_monotonic_us();
	int64		ttl = 0;
	EtcdStatus	st;

	if (worker.lease_id != 0)
	{
		st = etcd_lease_keepalive(worker.etcd, worker.lease_id, &ttl);
		if (st == ETCD_OK)
		{
			worker.lease_ttl = ttl;
			worker.lease_deadline = t_send + ttl * 1000000;
			return true;
		}
		if (st != ETCD_NOT_FOUND)
		{
			remember_error("lease renewal failed: %s", etcd_last_error(worker.etcd));
			return false;
		}
		/* the lease expired in etcd: every key it carried is gone */
		ereport(LOG,
				(errmsg("pg_ha: lease %lld expired in etcd, granting a new one",
						(long long) worker.lease_id)));
		worker.lease_id = 0;
		worker.lease_deadline = 0;
		if (worker.published_member)
			pfree(worker.published_member);
		worker.published_member = NULL;
		lose_leadership("lease expired");
		t_send = pg_ha_monotonic_us();
	}
	st = etcd_lease_grant(worker.etcd, pg_ha_ttl, &worker.lease_id, &ttl);
	if (st != ETCD_OK)
	{
		worker.lease_id = 0;
		remember_error("lease grant failed: %s", etcd_last_error(worker.etcd));
		return false;
	}
	worker.lease_ttl = ttl;
	worker.lease_deadline = t_send + ttl * 1000000;
	return true;
}

/* ---------- keys ---------- */

/*
 * Creates `initialize` with our system identifier, or checks the one there.
 * A different identifier means these keys belong to another database
 * cluster: taking its leader key would hand its clients to us.
 */
static bool
check_initialize_key(void)
{
	char		sysid[32];
	EtcdKV		current;
	EtcdStatus	st;

	if (worker.initialize_checked)
		return true;
	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	st = etcd_create(worker.etcd, worker.initialize_key, sysid, 0, &current);
	if (st == ETCD_NOT_FOUND && current.value && strcmp(current.value, sysid) != 0)
	{
		remember_error("etcd key %s holds system identifier %s, this node has %s",
					   worker.initialize_key, current.value, sysid);
		etcd_kv_free(&current);
		set_state(HA_EV_BAD_CONFIG, worker.last_error);
		return false;
	}
	etcd_kv_free(&current);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
	{
		remember_error("cannot read %s: %s", worker.initialize_key, etcd_last_error(worker.etcd));
		return false;
	}
	worker.initialize_checked = true;
	return true;
}

/*
 * Take the leader key if it is free.  If it holds our own name (left by a
 * previous incarnation of this node with an older lease), re-attach it to
 * the current lease: nobody else can have taken over while the key exists.
 * Returns false only on an etcd failure.
 */
static bool
acquire_leader_key(void)
{
	EtcdKV		current;
	EtcdStatus	st;

	st = etcd_create(worker.etcd, worker.leader_key, worker.node, worker.lease_id, &current);
	if (st == ETCD_OK)
	{
		worker.is_leader = true;
		return true;
	}
	if (st != ETCD_NOT_FOUND)
	{
		remember_error("cannot create leader key: %s", etcd_last_error(worker.etcd));
		return false;
	}
	if (current.key != NULL && strcmp(current.value, worker.node) == 0 && !RecoveryInProgress())
	{
		EtcdCompare cmp = {worker.leader_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, current.mod_revision};
		EtcdOp		put = {ETCD_OP_PUT, worker.leader_key, worker.node, worker.lease_id, false};
		bool		succeeded;

		st = etcd_txn(worker.etcd, &cmp, 1, &put, 1, NULL, 0, &succeeded, NULL);
		etcd_kv_free(&current);
		if (st != ETCD_OK)
		{
			remember_error("cannot re-attach leader key: %s", etcd_last_error(worker.etcd));
			return false;
		}
		worker.is_leader = succeeded;
		return true;
	}
	etcd_kv_free(&current);
	return true;
}

/* Patroni-style tags for the member document. */
static char *
member_document_with_tags(const NodeSnapshot *snap)
{
	char	   *doc = member_document(snap);
	StringInfoData buf;
	bool		nofailover = pg_ha_nofailover || pg_ha_failover_priority == 0;

	if (!nofailover && !pg_ha_noloadbalance && pg_ha_failover_priority == 1)
		return doc;
	/* the document is a compact JSON object: add "tags" before its '}' */
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, doc, strlen(doc) - 1);
	appendStringInfo(&buf, ",\"tags\":{\"failover_priority\":%d%s%s}}",
					 nofailover ? 0 : pg_ha_failover_priority,
					 nofailover ? ",\"nofailover\":true" : "",
					 pg_ha_noloadbalance ? ",\"noloadbalance\":true" : "");
	pfree(doc);
	return buf.data;
}

/*
 * Publish the member key (and on the leader the status key) when the
 * document changed, or always when force is set (a failover race wants
 * fresh positions).  The leader writes inside a transaction that checks it
 * still holds the leader key with its lease.
 */
static bool
publish_member(const NodeSnapshot *snap, bool force)
{
	char	   *doc = member_document_with_tags(snap);
	EtcdStatus	st;
	bool		succeeded = true;

	if (!force && worker.published_member && strcmp(doc, worker.published_member) == 0)
	{
		pfree(doc);
		return true;
	}
	if (worker.is_leader && !snap->in_recovery)
	{
		char		status[64];
		EtcdCompare cmps[2] = {
			{worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0},
			{worker.leader_key, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, NULL, worker.lease_id},
		};
		EtcdOp		puts[2] = {
			{ETCD_OP_PUT, worker.member_key, doc, worker.lease_id, false},
			{ETCD_OP_PUT, worker.status_key, status, 0, false},
		};

		snprintf(status, sizeof(status), "{\"optime\":" UINT64_FORMAT "}", (uint64) snap->lsn);
		st = etcd_txn(worker.etcd, cmps, 2, puts, 2, puts, 1, &succeeded, NULL);
	}
	else
		st = etcd_put(worker.etcd, worker.member_key, doc, worker.lease_id);
	if (st != ETCD_OK)
	{
		remember_error("cannot publish member key: %s", etcd_last_error(worker.etcd));
		pfree(doc);
		return false;
	}
	if (worker.published_member)
		pfree(worker.published_member);
	worker.published_member = MemoryContextStrdup(TopMemoryContext, doc);
	pfree(doc);
	if (!succeeded)
		lose_leadership("leader key no longer carries this node's name and lease");
	return true;
}

/* ---------- primary side ---------- */

static void
current_time_text(char *buf, size_t len)
{
	strlcpy(buf, timestamptz_to_str(GetCurrentTimestamp()), len);
}

/*
 * After a promotion: record it in `history` and clear the request that led
 * to it.  A lost update here only loses a line of history, never safety:
 * the compare on mod_revision keeps concurrent writers from clobbering.
 */
static void
record_promotion(const NodeSnapshot *snap)
{
	const EtcdKV *kv = cluster_get(&worker.view, "history");
	XLogRecPtr	switch_lsn = timeline_switch_point(snap->timeline);
	char		when[64];
	char	   *value;
	EtcdCompare cmp = {worker.history_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL,
	kv ? kv->mod_revision : 0};
	EtcdOp		ops[2] = {
		{ETCD_OP_PUT, worker.history_key, NULL, 0, false},
		{ETCD_OP_DELETE, worker.failover_key, NULL, 0, false},
	};
	bool		succeeded;

	current_time_text(when, sizeof(when));
	value = cluster_history_append(&worker.view, worker.promoted_from ? worker.promoted_from : snap->timeline - 1,
								   switch_lsn, worker.promote_reason, when, worker.node);
	ops[0].value = value;
	if (kv == NULL)
		cmp.target = ETCD_CMP_CREATE;
	if (etcd_txn(worker.etcd, &cmp, 1, ops, 2, &ops[1], 1, &succeeded, NULL) != ETCD_OK)
		remember_error("cannot record promotion in history: %s", etcd_last_error(worker.etcd));
	pfree(value);
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (strcmp(worker.promote_reason, "switchover") == 0)
		pg_ha_shared->switchovers++;
	else
		pg_ha_shared->failovers++;
	LWLockRelease(pg_ha_shared->lock);
	ereport(LOG,
			(errmsg("pg_ha: promoted: now leader on timeline %u (switched at %X/%X, %s)",
					snap->timeline, LSN_FORMAT_ARGS(switch_lsn), worker.promote_reason)));
	worker.promoting = false;
}

/* flush position of the standby streaming as application_name = name */
static XLogRecPtr
standby_flush_lsn(const char *name)
{
	XLogRecPtr	flush = InvalidXLogRecPtr;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	args[0] = CStringGetTextDatum(name);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("SELECT max(flush_lsn) FROM pg_stat_replication WHERE application_name = $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			flush = DatumGetLSN(d);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return flush;
}

/*
 * Switchover, old leader's part.  Order matters:
 *   1. raise the fence and end client sessions: no more commits here;
 *   2. wait (bounded) until the candidate has flushed all our WAL;
 *   3. in one etcd transaction that checks we still hold the key: delete
 *      the leader key and mark the request handed over with our final
 *      position, which the candidate must reach before it promotes;
 *   4. restart as the candidate's standby.
 * The candidate thus promotes on a timeline that forks at or after our
 * last WAL, so this node follows it without pg_rewind.
 */
static void
hand_over(const FailoverRequest *req)
{
	MemberInfo	cand;
	char		host[256];
	char		port[16];
	XLogRecPtr	final_lsn;
	int64		give_up = pg_ha_monotonic_us() + HANDOVER_CATCHUP_US;
	char		value[512];
	EtcdCompare cmp = {worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0};
	EtcdOp		ops[2] = {
		{ETCD_OP_DELETE, worker.leader_key, NULL, 0, false},
		{ETCD_OP_PUT, worker.failover_key, value, 0, false},
	};
	bool		succeeded;

	const char *abandon = NULL;
	XLogRecPtr	behind = InvalidXLogRecPtr;

	if (!cluster_member(&worker.view, req->member, &cand) || !cand.is_replica ||
		!conn_url_host_port(cand.conn_url, host, sizeof(host), port, sizeof(port)))
		abandon = "candidate is not a running replica";
	else
	{
		/* lag as the walsender sees it now: exact, unlike member keys */
		XLogRecPtr	theirs = standby_flush_lsn(req->member);
		XLogRecPtr	mine = GetFlushRecPtr(NULL);

		if (theirs == InvalidXLogRecPtr)
			abandon = "candidate is not streaming from the leader";
		else if (mine > theirs &&
				 mine - theirs > (uint64) pg_ha_maximum_lag_on_failover * 1024)
		{
			abandon = "candidate is lagging more than pg_ha.maximum_lag_on_failover";
			behind = mine - theirs;
		}
	}
	if (abandon)
	{
		ereport(WARNING,
				(errmsg("pg_ha: switchover to \"%s\" abandoned: %s", req->member, abandon),
				 behind ? errdetail("It is %llu bytes behind.", (unsigned long long) behind) : 0));
		snprintf(value, sizeof(value), "{\"leader\":\"%s\",\"member\":\"%s\",\"aborted\":\"%s\"}",
				 worker.node, req->member, abandon);
		etcd_put(worker.etcd, worker.failover_key, value, 0);
		return;
	}
	/*
	 * Checkpoint while still writable: the write gap starts at the fence and
	 * lasts until this node, restarted as a standby, has replayed its WAL
	 * since the last checkpoint and confirmed where it ends.  Flushing now
	 * leaves that replay short.
	 */
	ereport(LOG, (errmsg("pg_ha: switchover: checkpoint before handing leadership to \"%s\"", req->member)));
	RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE | CHECKPOINT_WAIT);
	ereport(LOG, (errmsg("pg_ha: switchover: handing leadership to \"%s\"", req->member)));
	raise_fence("switchover");
	terminate_client_backends();

	for (;;)
	{
		XLogRecPtr	mine = GetFlushRecPtr(NULL);
		XLogRecPtr	theirs = standby_flush_lsn(req->member);

		if (theirs != InvalidXLogRecPtr && theirs >= mine)
			break;
		if (pg_ha_monotonic_us() > give_up)
		{
			ereport(LOG,
					(errmsg("pg_ha: switchover: \"%s\" has flushed %X/%X of %X/%X; it will fetch the rest after the restart",
							req->member, LSN_FORMAT_ARGS(theirs), LSN_FORMAT_ARGS(mine))));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	final_lsn = GetFlushRecPtr(NULL);
	snprintf(value, sizeof(value),
			 "{\"leader\":\"%s\",\"member\":\"%s\",\"final_lsn\":" UINT64_FORMAT ",\"handed_over\":true}",
			 worker.node, req->member, (uint64) final_lsn);
	if (etcd_txn(worker.etcd, &cmp, 1, ops, 2, NULL, 0, &succeeded, NULL) != ETCD_OK || !succeeded)
	{
		/* the fence stays up: the next cycle demotes or retries */
		remember_error("switchover: cannot release the leader key: %s", etcd_last_error(worker.etcd));
		return;
	}
	worker.is_leader = false;
	publish_lease_deadline();
	demote_and_restart(req->member, host, port, "switchover");
}

/* A primary that lost the race to another node: fence, then demote. */
static void
yield_to(const char *leader, const char *why)
{
	MemberInfo	m;
	char		host[256];
	char		port[16];

	raise_fence(why);
	if (cluster_paused(&worker.view))
		return;					/* paused: stay fenced, do not demote */
	if (cluster_member(&worker.view, leader, &m) &&
		conn_url_host_port(m.conn_url, host, sizeof(host), port, sizeof(port)))
		demote_and_restart(leader, host, port, why);
	demote_and_restart(leader, NULL, NULL, why);
}

static bool
primary_cycle(const NodeSnapshot *snap)
{
	const char *leader;
	FailoverRequest req;

	if (!check_initialize_key())
		return worker.state != HA_MISCONFIGURED ? false : true;

	if (worker.promoting && worker.is_leader)
		record_promotion(snap);

	if (!worker.is_leader)
	{
		TimeLineID	cluster_tl = cluster_history_timeline(&worker.view, 0, NULL);

		leader = cluster_leader(&worker.view);
		if (leader[0] != '\0' && strcmp(leader, worker.node) != 0)
		{
			publish_member(snap, false);
			set_state(HA_EV_LEADER_KEY_TAKEN, leader);
			yield_to(leader, psprintf("\"%s\" holds the leader key", leader));
			return true;
		}
		if (cluster_tl > snap->timeline)
		{
			/* a stale former leader: the cluster moved on without us */
			char	   *why = psprintf("the cluster is on timeline %u, this node on %u",
									   cluster_tl, snap->timeline);

			remember_error("not taking the leader key: %s", why);
			set_state(HA_EV_LEADER_KEY_TAKEN, why);
			yield_to("", why);
			return true;
		}
		else
		{
			/*
			 * A free key goes straight to a primary only if it was the last
			 * leader.  Any other primary (one restarted without its
			 * standby.signal, say) may have moved to the same timeline
			 * number on a branch of its own: it demotes and competes as a
			 * replica, where its position is weighed against the last
			 * leader's (maximum_lag_on_failover).
			 */
			char		last[PG_HA_NAME_LEN];

			cluster_last_leader(&worker.view, last, sizeof(last));
			if (last[0] != '\0' && strcmp(last, worker.node) != 0)
			{
				char	   *why = psprintf("the last leader was \"%s\", not this node", last);

				remember_error("not taking the leader key: %s", why);
				set_state(HA_EV_LEADER_KEY_TAKEN, why);
				yield_to("", why);
				return true;
			}
		}
		if (!acquire_leader_key())
			return false;
		if (!worker.is_leader)
		{
			soon(0);			/* someone else won: look again at once */
			return true;
		}
	}

	/* we hold the key: writes are allowed again if a fence was up */
	publish_lease_deadline();
	if (pg_atomic_exchange_u32(&pg_ha_shared->fence, 0) != 0)
		ereport(LOG, (errmsg("pg_ha: fence lifted: this node holds the leader lease")));
	if (!publish_member(snap, false))
		return false;
	if (!worker.is_leader)
		return true;
	set_state(HA_EV_GOT_LEADER_KEY, worker.leader_key);

	if (cluster_failover_request(&worker.view, &req) &&
		(req.member[0] == '\0' || strcmp(req.member, worker.node) == 0) &&
		!worker.promoting)
	{
		/* a request that is done or moot now that we lead: clear it */
		EtcdCompare cmp = {worker.failover_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, req.mod_revision};
		EtcdOp		del = {ETCD_OP_DELETE, worker.failover_key, NULL, 0, false};
		bool		done;

		(void) etcd_txn(worker.etcd, &cmp, 1, &del, 1, NULL, 0, &done, NULL);
	}
	else if (cluster_failover_request(&worker.view, &req) && !req.handed_over &&
		strcmp(req.leader, worker.node) == 0 && req.member[0] != '\0' &&
		strcmp(req.member, worker.node) != 0 &&
		cluster_get(&worker.view, "failover") != NULL &&
		strstr(cluster_get(&worker.view, "failover")->value, "\"aborted\"") == NULL)
	{
		TimestampTz at = 0;

		if (req.scheduled_at[0] != '\0')
			at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
														 CStringGetDatum(req.scheduled_at),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));
		if (at <= GetCurrentTimestamp())
			hand_over(&req);
	}
	return true;
}

/* ---------- standby side ---------- */

static void
begin_promotion(const char *reason, TimeLineID from)
{
	worker.promoting = true;
	worker.promoted_from = from;
	strlcpy(worker.promote_reason, reason, sizeof(worker.promote_reason));
	ereport(LOG, (errmsg("pg_ha: promoting: took the leader key (%s)", reason)));
	promote_now();
	soon(FAST_CYCLE_US);
}

/*
 * After a clean stop of the leader: has its WAL stream ended (its
 * walsender exits only once we flushed everything, shutdown checkpoint
 * included) with us at or past its last flushed position?
 */
static bool
old_leader_stream_ended(const NodeSnapshot *snap, XLogRecPtr final_lsn)
{
	WalRcvState state;

	SpinLockAcquire(&WalRcv->mutex);
	state = WalRcv->walRcvState;
	SpinLockRelease(&WalRcv->mutex);
	return state != WALRCV_STREAMING && snap->receive_lsn >= final_lsn;
}

/*
 * Leader key absent: decide whether to race for it.  A failover request
 * names who may take it; otherwise every replica publishes a fresh position,
 * waits for its peers' (bounded), and only the best eligible one races.
 */
static void
failover_race(const NodeSnapshot *snap)
{
	FailoverRequest req;
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	MemberInfo	peers[PG_HA_MAX_MEMBERS];
	int			n;
	int			npeers = 0;
	bool		all_fresh = true;
	RaceInput	in;
	char		why[256];
	int64		now = pg_ha_monotonic_us();
	bool		requested = cluster_failover_request(&worker.view, &req) && req.member[0] != '\0';

	if (requested && strcmp(req.member, worker.node) != 0 &&
		(worker.race_started == 0 || now - worker.race_started < worker.lease_ttl * 1000000))
	{
		/* someone else was asked to take over: give them one TTL */
		if (worker.race_started == 0)
			worker.race_started = now;
		soon(FAST_CYCLE_US * 4);
		return;
	}
	if (requested && strcmp(req.member, worker.node) == 0)
	{
		/*
		 * Switchover / manual failover to us: wait until the old leader,
		 * restarted as a standby, has confirmed where its WAL ends, and we
		 * have replayed that far (streaming the rest from it if need be),
		 * then take the key.  Bounded by one TTL: past that we take over
		 * anyway and the old leader, if it diverged, is rewound.
		 */
		if (req.handed_over &&
			(!req.final_confirmed || snap->replay_lsn < req.final_lsn) &&
			(worker.race_started == 0 || now - worker.race_started < worker.lease_ttl * 1000000))
		{
			if (worker.race_started == 0)
				worker.race_started = now;
			soon(FAST_CYCLE_US / 5);
			return;
		}
		if (!acquire_leader_key())
			return;
		if (worker.is_leader)
			begin_promotion(req.handed_over ? "switchover" : "manual failover", snap->timeline);
		return;
	}
	if (cluster_paused(&worker.view))
		return;

	if (requested == false && cluster_failover_request(&worker.view, &req) && req.shutdown &&
		!old_leader_stream_ended(snap, req.final_lsn) &&
		(worker.race_started == 0 || now - worker.race_started < SHUTDOWN_WAIT_US))
	{
		/* the old leader is writing its shutdown checkpoint: wait for it */
		if (worker.race_started == 0)
			worker.race_started = now;
		soon(FAST_CYCLE_US);
		return;
	}

	if (worker.race_started == 0)
	{
		worker.race_started = now;
		publish_member(snap, true);
		ereport(LOG, (errmsg("pg_ha: leader key gone: collecting member positions")));
	}
	n = cluster_members(&worker.view, members, PG_HA_MAX_MEMBERS);
	for (int i = 0; i < n; i++)
	{
		if (strcmp(members[i].name, worker.node) == 0 || !members[i].is_replica)
			continue;
		if (members[i].mod_revision <= worker.leader_gone_revision)
		{
			all_fresh = false;
			continue;			/* position from before the leader vanished */
		}
		peers[npeers++] = members[i];
	}
	if (!all_fresh && now - worker.race_started < RACE_COLLECT_US)
	{
		soon(FAST_CYCLE_US);
		return;
	}

	memset(&in, 0, sizeof(in));
	if (!cluster_member(&worker.view, worker.node, &in.self))
	{
		soon(FAST_CYCLE_US);
		return;
	}
	in.self.lsn = snap->lsn;
	in.self.timeline = snap->timeline;
	in.peers = peers;
	in.npeers = npeers;
	in.leader_optime = cluster_optime(&worker.view);
	in.cluster_timeline = cluster_history_timeline(&worker.view, 0, NULL);
	in.maximum_lag_bytes = (uint64) pg_ha_maximum_lag_on_failover * 1024;

	switch (failover_decide(&in, why, sizeof(why)))
	{
		case RACE_TAKE:
			if (!acquire_leader_key())
				return;
			if (worker.is_leader)
				begin_promotion("failover", snap->timeline);
			break;
		case RACE_DEFER:
			/* the better candidate gets one TTL; then everyone races again */
			if (now - worker.race_started > worker.lease_ttl * 1000000)
				worker.race_started = 0;
			soon(FAST_CYCLE_US * 4);
			break;
		case RACE_INELIGIBLE:
			remember_error("not taking over: %s", why);
			break;
	}
}

/* Point primary_conninfo at the leader if it does not already. */
static void
follow(const char *leader)
{
	MemberInfo	m;
	char		host[256];
	char		port[16];

	if (!cluster_member(&worker.view, leader, &m) ||
		!conn_url_host_port(m.conn_url, host, sizeof(host), port, sizeof(port)))
		return;
	if (primary_conninfo_points_at(host, port))
	{
		strlcpy(worker.followed, leader, sizeof(worker.followed));
		return;
	}
	if (strcmp(worker.followed, leader) == 0 && PrimaryConnInfo && PrimaryConnInfo[0])
		return;					/* already asked; the reload is on its way */
	follow_leader(leader, host, port);
	strlcpy(worker.followed, leader, sizeof(worker.followed));
}

/*
 * A standby that replayed WAL of its old timeline past the point where the
 * leader's timeline forked off can never follow it: it wrote WAL (as a
 * former primary) that the leader lacks.  Only pg_rewind, which needs
 * postgres stopped, can fix that.  The worker leaves a marker in the data
 * directory and shuts postgres down; the service manager's restart runs
 * `pg_hactl rejoin --if-needed` (ExecStartPre), which rewinds it.  The
 * condition must hold for two renew intervals, so a transient view of
 * etcd cannot shut a healthy standby down.
 */
static void
check_divergence(const NodeSnapshot *snap, const char *leader)
{
	MemberInfo	m;
	XLogRecPtr	fork;
	int64		now = pg_ha_monotonic_us();
	char		path[MAXPGPATH];
	FILE	   *f;

	if (!cluster_member(&worker.view, leader, &m) || m.timeline <= snap->timeline ||
		cluster_paused(&worker.view))
	{
		worker.diverged_since = 0;
		return;
	}
	cluster_history_timeline(&worker.view, snap->timeline, &fork);
	if (fork == InvalidXLogRecPtr || snap->replay_lsn <= fork)
	{
		worker.diverged_since = 0;
		return;
	}
	if (worker.diverged_since == 0)
	{
		worker.diverged_since = now;
		return;
	}
	if (now - worker.diverged_since < 2 * worker.lease_ttl * 1000000 / 3)
		return;

	snprintf(path, sizeof(path), "%s/pg_ha.rejoin", DataDir);
	f = AllocateFile(path, "w");
	if (f == NULL || fprintf(f, "leader=%s\nfork_lsn=%X/%X\n", leader, LSN_FORMAT_ARGS(fork)) < 0 ||
		FreeFile(f) != 0)
	{
		remember_error("cannot write %s: %m", path);
		return;
	}
	ereport(LOG,
			(errmsg("pg_ha: diverged: replayed %X/%X on timeline %u, past where timeline %u of leader \"%s\" forked (%X/%X); shutting down for pg_rewind",
					LSN_FORMAT_ARGS(snap->replay_lsn), snap->timeline, m.timeline, leader,
					LSN_FORMAT_ARGS(fork)),
			 errhint("The service manager restarts postgres; its ExecStartPre \"pg_hactl rejoin --if-needed\" rewinds this node.")));
	if (kill(PostmasterPid, SIGINT) != 0)
		remember_error("cannot signal the postmaster: %m");
}

/*
 * Switchover, old leader's last part, once it runs as a standby: its WAL
 * can no longer grow, so where it ends is final.  The WAL receiver starts
 * only after the startup process has replayed every local record, so from
 * then on the replay position is that end.  Publish it: the candidate
 * promotes only once it has replayed that far, which is what lets this
 * node follow without pg_rewind even if a hint-bit page image or a
 * background record slipped in after the hand-over measured its position.
 */
static void
confirm_final_position(const NodeSnapshot *snap)
{
	FailoverRequest req;
	WalRcvState state;
	char		value[512];
	EtcdCompare cmp;
	EtcdOp		put = {ETCD_OP_PUT, worker.failover_key, value, 0, false};
	bool		done;

	if (!cluster_failover_request(&worker.view, &req) || !req.handed_over ||
		req.final_confirmed || strcmp(req.leader, worker.node) != 0)
		return;
	SpinLockAcquire(&WalRcv->mutex);
	state = WalRcv->walRcvState;
	SpinLockRelease(&WalRcv->mutex);
	if (state == WALRCV_STOPPED)
	{
		soon(FAST_CYCLE_US / 5);	/* still replaying local WAL */
		return;
	}
	snprintf(value, sizeof(value),
			 "{\"leader\":\"%s\",\"member\":\"%s\",\"final_lsn\":" UINT64_FORMAT ",\"handed_over\":true,\"final_confirmed\":true}",
			 worker.node, req.member, (uint64) Max(snap->replay_lsn, req.final_lsn));
	cmp.key = worker.failover_key;
	cmp.target = ETCD_CMP_MOD;
	cmp.result = ETCD_CMP_EQUAL;
	cmp.value = NULL;
	cmp.number = req.mod_revision;
	if (etcd_txn(worker.etcd, &cmp, 1, &put, 1, NULL, 0, &done, NULL) == ETCD_OK && done)
		ereport(LOG,
				(errmsg("pg_ha: switchover: this node's WAL ends at %X/%X; \"%s\" promotes once it has it",
						LSN_FORMAT_ARGS(Max(snap->replay_lsn, req.final_lsn)), req.member)));
}

static bool
standby_cycle(const NodeSnapshot *snap)
{
	const char *leader = cluster_leader(&worker.view);

	confirm_final_position(snap);

	if (!publish_member(snap, false))
		return false;
	if (worker.promoting)
	{
		soon(FAST_CYCLE_US);	/* waiting for the startup process */
		return true;
	}

	if (leader[0] == '\0')
		failover_race(snap);
	else if (strcmp(leader, worker.node) == 0)
	{
		/* a standby never holds the key: a leftover of our previous life */
		if (etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node) == ETCD_OK)
			ereport(LOG, (errmsg("pg_ha: released a leader key left from before this node became a standby")));
		worker.is_leader = false;
	}
	else
	{
		worker.race_started = 0;
		follow(leader);
		check_divergence(snap, leader);
	}
	set_state(HA_EV_FOLLOWING, leader[0] ? leader : NULL);
	return true;
}

/* ---------- one cycle ---------- */

/*
 * Resolves the roles the WAL senders connected as, for the listener's
 * /patroni "replication" list.  Walsenders come and go between cycles; a
 * new one is named at the next cycle (TTL/3 at most).  The transaction only
 * reads the catalog and gets no XID, so it runs on a standby and on a fenced
 * primary alike: the commit fence (fence.c) concerns transactions that wrote.
 */
static void
publish_replication_roles(void)
{
	Oid			oids[PG_HA_REPL_ROLES];
	char		names[PG_HA_REPL_ROLES][NAMEDATALEN];
	int			n = 0;
	int			nbackends;

	StartTransactionCommand();
	nbackends = pgstat_fetch_stat_numbackends();
	for (int b = 1; b <= nbackends && n < PG_HA_REPL_ROLES; b++)
	{
		LocalPgBackendStatus *l = pgstat_fetch_stat_local_beentry(b);
		PgBackendStatus *be = l ? &l->backendStatus : NULL;
		char	   *name;
		bool		seen = false;

		if (be == NULL || be->st_backendType != B_WAL_SENDER || !OidIsValid(be->st_userid))
			continue;
		for (int i = 0; i < n; i++)
			seen |= oids[i] == be->st_userid;
		if (seen)
			continue;
		name = GetUserNameFromId(be->st_userid, true);
		if (name == NULL)
			continue;
		oids[n] = be->st_userid;
		strlcpy(names[n], name, NAMEDATALEN);
		n++;
	}
	/* also forgets the copy of the backend status array */
	CommitTransactionCommand();

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PG_HA_REPL_ROLES; i++)
	{
		pg_ha_shared->repl_role_oid[i] = i < n ? oids[i] : InvalidOid;
		if (i < n)
			memcpy(pg_ha_shared->repl_role_name[i], names[i], NAMEDATALEN);
	}
	LWLockRelease(pg_ha_shared->lock);
}

static void
ha_cycle(void)
{
	NodeSnapshot snap;
	bool		ok;

	node_take_snapshot(&snap);
	worker.last_error[0] = '\0';
	worker.next_cycle = INT64_MAX;

	ok = ensure_client() && renew_lease() && load_view();
	if (ok)
	{
		if (worker.is_leader)
			publish_lease_deadline();
		ok = snap.in_recovery ? standby_cycle(&snap) : primary_cycle(&snap);
	}
	if (!ok)
	{
		if (worker.state != HA_MISCONFIGURED)
			set_state(HA_EV_ETCD_FAILED, worker.last_error);
		drop_watch(pg_ha_monotonic_us() + WATCH_RETRY_US);
		cluster_reset(&worker.view);
	}
	publish_shared(&snap, ok);
	publish_replication_roles();
	soon(ok ? worker.lease_ttl * 1000000 / 3 : ETCD_RETRY_US);
}

/* ---------- shutdown ---------- */

/*
 * A clean stop gives the leader key back at once, so the other nodes need
 * not wait for the TTL.  The deadline is cleared first: from here on this
 * node claims no write authority.  Compare-and-delete, so a key some other
 * node took meanwhile is left alone.  Revoking the lease removes the member
 * key.
 */
static void
release_keys(void)
{
	worker.releasing = true;
	set_state(HA_EV_SHUTDOWN, NULL);
	pg_atomic_write_u64(&pg_ha_shared->lease_deadline_us, 0);
	drop_watch(0);
	if (worker.etcd == NULL)
		return;
	if (worker.is_leader)
	{
		/*
		 * The shutdown checkpoint is still to come, and walsenders send it
		 * before they exit.  The note in the failover key tells the
		 * replicas to wait for it (their stream ends after it), so the
		 * next leader forks after it and this node can later follow
		 * without pg_rewind.
		 */
		char		note[256];
		EtcdCompare cmp = {worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0};
		EtcdOp		ops[2] = {
			{ETCD_OP_DELETE, worker.leader_key, NULL, 0, false},
			{ETCD_OP_PUT, worker.failover_key, note, 0, false},
		};
		bool		released = false;
		EtcdStatus	st;

		snprintf(note, sizeof(note),
				 "{\"leader\":\"%s\",\"final_lsn\":" UINT64_FORMAT ",\"shutdown\":true}",
				 worker.node, (uint64) GetFlushRecPtr(NULL));
		st = etcd_txn(worker.etcd, &cmp, 1, ops, 2, NULL, 0, &released, NULL);
		worker.is_leader = false;
		if (st == ETCD_OK && released)
			ereport(LOG, (errmsg("pg_ha: released leader key %s", worker.leader_key)));
		else if (st != ETCD_OK)
			ereport(LOG,
					(errmsg("pg_ha: could not release leader key, it expires with the lease: %s",
							etcd_last_error(worker.etcd))));
	}
	if (worker.lease_id != 0)
		etcd_lease_revoke(worker.etcd, worker.lease_id);
	publish_shared(NULL, false);
}

static void
worker_exit(int code, Datum arg)
{
	pg_atomic_write_u64(&pg_ha_shared->lease_deadline_us, 0);
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pg_ha_shared->worker_pid = 0;
	pg_ha_shared->worker_latch = NULL;
	pg_ha_shared->is_leader = false;
	LWLockRelease(pg_ha_shared->lock);
}

/* ---------- entry points ---------- */

void
pg_ha_register_worker(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* consistent state: runs on hot standbys and keeps running across promotion */
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_ha_worker_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_ha worker", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_ha worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/*
 * Can this node be managed with the configuration it runs on?  Every
 * pg_ha.* setting must have taken effect at server start, and the names it
 * falls back on must be usable in etcd keys; config_check.c says why not,
 * in the log (each problem once) and in last_error.
 */
static bool
configuration_usable(void)
{
	return pg_ha_config_check(worker.last_error, sizeof(worker.last_error));
}

static char *
key_copy(const char *suffix)
{
	return MemoryContextStrdup(TopMemoryContext, pg_ha_key(suffix));
}

void
pg_ha_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	memset(&worker, 0, sizeof(worker));
	worker.state = HA_STARTING;
	strlcpy(worker.node, pg_ha_effective_node_name(), sizeof(worker.node));

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pg_ha_shared->worker_pid = MyProcPid;
	pg_ha_shared->worker_latch = MyLatch;
	strlcpy(pg_ha_shared->node, worker.node, sizeof(pg_ha_shared->node));
	strlcpy(pg_ha_shared->cluster, pg_ha_effective_cluster(), sizeof(pg_ha_shared->cluster));
	LWLockRelease(pg_ha_shared->lock);
	pg_atomic_write_u32(&pg_ha_shared->state, HA_STARTING);
	before_shmem_exit(worker_exit, (Datum) 0);

	if (!configuration_usable())
	{
		/*
		 * Stay up (no restart loop) so pg_ha.status() shows why, holding no
		 * lease: the fence refuses writes and /primary answers 503.  No
		 * etcd client, no key: the namespace or name may be a default.
		 * The role is refreshed for pg_ha.status() and the fence column.
		 */
		set_state(HA_EV_BAD_CONFIG, worker.last_error);
		while (!ShutdownRequestPending)
		{
			NodeSnapshot snap;

			node_take_snapshot(&snap);
			publish_shared(&snap, false);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 MAX_SLEEP_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		proc_exit(0);
	}

	/* keys only from a configuration that passed the checks above */
	worker.prefix = key_copy("");
	worker.leader_key = key_copy("leader");
	worker.member_key = key_copy(psprintf("members/%s", worker.node));
	worker.status_key = key_copy("status");
	worker.initialize_key = key_copy("initialize");
	worker.failover_key = key_copy("failover");
	worker.history_key = key_copy("history");

	/* for ALTER SYSTEM and pg_stat_replication; works on a hot standby too */
	BackgroundWorkerInitializeConnection(pg_ha_database, NULL, 0);
	pgstat_report_appname("pg_ha worker");

	ereport(LOG,
			(errmsg("pg_ha: worker started for node \"%s\" in cluster \"%s\" (leader key %s)",
					worker.node, pg_ha_effective_cluster(), worker.leader_key)));

	while (!ShutdownRequestPending)
	{
		int64		now;
		long		sleep_ms;
		int			sock;
		int			events;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			reset_client();
			worker.next_cycle = 0;
		}

		if (pg_ha_monotonic_us() >= worker.next_cycle)
			ha_cycle();
		if (ShutdownRequestPending)
			break;
		service_watch();

		now = pg_ha_monotonic_us();
		sleep_ms = (long) ((worker.next_cycle - now) / 1000);
		if (sleep_ms > MAX_SLEEP_MS)
			sleep_ms = MAX_SLEEP_MS;
		if (sleep_ms < 0)
			sleep_ms = 0;
		sock = worker.watch ? etcd_watch_socket(worker.watch) : -1;
		events = WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH;
		/* until the watch request is sent, libcurl needs driving on a short pace */
		if (worker.watch && (sock < 0 || !etcd_watch_established(worker.watch)))
			sleep_ms = Min(sleep_ms, 20);
		if (sock >= 0)
			events |= WL_SOCKET_READABLE;
		(void) WaitLatchOrSocket(MyLatch, events, sock, sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	release_keys();
	proc_exit(0);
}
