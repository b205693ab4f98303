/*
 * ha_worker.c - the HA background worker: this node's lease in etcd, the
 * leader key on the primary, the member key on every node, and a watch on
 * the leader key.
 *
 * Loop: every renew interval (a third of the granted TTL) one "cycle" renews
 * the node's lease and publishes what changed; between cycles the worker
 * sleeps on its latch and on the watch socket, so a change of the leader key
 * is seen as soon as etcd sends it.  Every etcd call is bounded by
 * pg_ha.etcd_timeout, so the loop never blocks longer than that.
 *
 * The lease rule (the safety argument every later fence relies on):
 *   t_send is read from CLOCK_MONOTONIC *before* a grant or keepalive is
 *   sent.  etcd starts the TTL no earlier than it receives the request, and
 *   etcd leader changes only extend leases, so when the reply grants TTL T
 *   no other node can create the leader key before t_send + T (our clock,
 *   drift over T seconds is negligible against the margin).  The worker
 *   publishes that instant as lease_deadline_us while it holds the leader
 *   key; it only moves forward on a successful renewal.  A worker that
 *   stops renewing (etcd down, worker hung) lets the deadline pass by
 *   itself: nothing has to run for the node to lose its authority, which is
 *   what the commit-time fence checks.
 *
 * One lease per node carries both the member key and (on the primary) the
 * leader key, so a dead node's keys all vanish one TTL after its last
 * renewal, and a clean shutdown revokes it at once.
 */
#include "pg_ha.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define ETCD_RETRY_US (1000 * 1000)	/* retry pace while etcd is unreachable */
#define WATCH_RETRY_US (1000 * 1000)
#define MAX_SLEEP_MS 1000

typedef struct HaWorker
{
	EtcdClient *etcd;
	EtcdWatch  *watch;
	int64		watch_retry_at;
	HaState		state;

	/* this node's lease */
	int64		lease_id;
	int64		lease_ttl;		/* seconds, as granted */
	int64		lease_deadline;	/* t_send + TTL of the last renewal */

	/* leader key as last read or watched */
	bool		leader_known;
	char		leader[PG_HA_NAME_LEN];
	int64		leader_revision;
	bool		is_leader;

	bool		initialize_checked;
	char	   *published_member;	/* last member document written */

	char	   *leader_key;
	char	   *member_key;
	char	   *status_key;
	char	   *initialize_key;
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

static void
remember_error(const char *fmt,...) pg_attribute_printf(1, 2);

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
lose_leadership(const char *why)
{
	if (!worker.is_leader)
		return;
	worker.is_leader = false;
	publish_lease_deadline();
	set_state(HA_EV_LEADER_KEY_TAKEN, why);
}

/* Copies the worker's view into shared memory for readers. */
static void
publish_shared(const NodeSnapshot *snap, bool etcd_ok)
{
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
	strlcpy(pg_ha_shared->leader, worker.leader, sizeof(pg_ha_shared->leader));
	pg_ha_shared->leader_known = worker.leader_known;
	pg_ha_shared->is_leader = worker.is_leader;
	pg_ha_shared->lease_id = worker.lease_id;
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

static void
set_leader(const char *value, size_t len)
{
	if (len >= sizeof(worker.leader))
		len = sizeof(worker.leader) - 1;
	memcpy(worker.leader, value, len);
	worker.leader[len] = '\0';
	worker.leader_known = true;
}

/* ---------- etcd client lifetime ---------- */

static bool
ensure_client(void)
{
	EtcdConfig	config;
	char		err[ETCD_ERRMSG_LEN];

	if (worker.etcd)
		return true;
	pg_ha_etcd_config(&config);
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
	etcd_client_free(worker.etcd);
	worker.etcd = NULL;
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
	if (st == ETCD_NOT_FOUND && strcmp(current.value, sysid) != 0)
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
		set_leader(worker.node, strlen(worker.node));
		return true;
	}
	if (st != ETCD_NOT_FOUND)
	{
		remember_error("cannot create leader key: %s", etcd_last_error(worker.etcd));
		return false;
	}
	if (current.key != NULL && strcmp(current.value, worker.node) == 0)
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
		if (succeeded)
			set_leader(worker.node, strlen(worker.node));
		return true;
	}
	if (current.key != NULL)
		set_leader(current.value, current.value_len);
	etcd_kv_free(&current);
	return true;
}

/*
 * Publish the member key (and on the leader the status key) when the
 * document changed.  The leader writes inside a transaction that checks it
 * still holds the leader key with its lease, which doubles as a check that
 * nobody replaced the key behind the watch's back.
 */
static bool
publish_member(const NodeSnapshot *snap)
{
	char	   *doc = member_document(snap);
	EtcdStatus	st;
	bool		succeeded = true;

	if (worker.published_member && strcmp(doc, worker.published_member) == 0)
	{
		pfree(doc);
		return true;
	}
	if (worker.is_leader)
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
	{
		worker.leader_known = false;	/* re-read it with the watch */
		lose_leadership("leader key no longer carries this node's name and lease");
	}
	return true;
}

/* ---------- one cycle ---------- */

static void
ha_cycle(void)
{
	NodeSnapshot snap;
	bool		ok;

	node_take_snapshot(&snap);
	worker.last_error[0] = '\0';

	ok = ensure_client() && renew_lease();
	if (ok && !snap.in_recovery)
	{
		ok = check_initialize_key();
		if (!ok && worker.state == HA_MISCONFIGURED)
		{
			publish_shared(&snap, true);
			return;
		}
		if (ok && !worker.is_leader)
			ok = acquire_leader_key();
		if (ok && worker.is_leader)
		{
			publish_lease_deadline();
			ok = publish_member(&snap);
			if (worker.is_leader)
				set_state(HA_EV_GOT_LEADER_KEY, worker.leader_key);
		}
		else if (ok)
		{
			ok = publish_member(&snap);
			set_state(HA_EV_LEADER_KEY_TAKEN, worker.leader);
		}
	}
	else if (ok)
	{
		/* a standby never holds the leader key */
		if (worker.is_leader)
		{
			etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node);
			lose_leadership("in recovery");
		}
		ok = publish_member(&snap);
		if (ok)
			set_state(HA_EV_FOLLOWING, worker.leader_known ? worker.leader : NULL);
	}

	if (!ok)
		set_state(HA_EV_ETCD_FAILED, worker.last_error);
	publish_shared(&snap, ok);

	if (ok)
		worker.next_cycle = pg_ha_monotonic_us() + worker.lease_ttl * 1000000 / 3;
	else
		worker.next_cycle = pg_ha_monotonic_us() + ETCD_RETRY_US;
}

/* ---------- the leader key watch ---------- */

static void
start_watch(void)
{
	EtcdKVList	kvs;
	EtcdStatus	st;

	st = etcd_get(worker.etcd, worker.leader_key, false, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
	{
		worker.watch_retry_at = pg_ha_monotonic_us() + WATCH_RETRY_US;
		return;
	}
	if (kvs.count > 0)
		set_leader(kvs.kvs[0].value, kvs.kvs[0].value_len);
	else
		set_leader("", 0);
	worker.leader_revision = kvs.revision;
	etcd_kvlist_free(&kvs);
	/* from the next revision on: nothing between the read and the watch is missed */
	worker.watch = etcd_watch_start(worker.etcd, worker.leader_key, false,
									worker.leader_revision + 1);
	if (worker.watch == NULL)
		worker.watch_retry_at = pg_ha_monotonic_us() + WATCH_RETRY_US;
}

static void
handle_leader_event(const EtcdEvent *ev)
{
	if (ev->type == ETCD_EVENT_DELETE)
	{
		set_leader("", 0);
		if (worker.is_leader)
		{
			lose_leadership("leader key deleted");
			worker.next_cycle = 0;	/* try to take it back now */
		}
		ereport(DEBUG1, (errmsg("pg_ha: leader key deleted")));
	}
	else
	{
		set_leader(ev->kv.value, ev->kv.value_len);
		if (worker.is_leader &&
			(strcmp(worker.leader, worker.node) != 0 || ev->kv.lease != worker.lease_id))
			lose_leadership("leader key overwritten");
	}
	worker.leader_revision = ev->kv.mod_revision;
}

static void
service_watch(void)
{
	EtcdEventList events;
	EtcdStatus	st;

	if (worker.etcd == NULL)
		return;
	if (worker.watch == NULL)
	{
		if (worker.state == HA_ETCD_UNREACHABLE || pg_ha_monotonic_us() < worker.watch_retry_at)
			return;
		start_watch();
		if (worker.watch == NULL)
			return;
		publish_shared(NULL, true);
	}
	st = etcd_watch_poll(worker.watch, &events);
	for (int i = 0; i < events.count; i++)
		handle_leader_event(&events.events[i]);
	if (events.count > 0)
		publish_shared(NULL, worker.state != HA_ETCD_UNREACHABLE);
	etcd_eventlist_free(&events);
	if (st != ETCD_OK)
	{
		ereport(DEBUG1, (errmsg("pg_ha: leader watch ended: %s", etcd_watch_error(worker.watch))));
		drop_watch(pg_ha_monotonic_us() + WATCH_RETRY_US);
	}
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
		EtcdStatus	st = etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node);

		worker.is_leader = false;
		if (st == ETCD_OK)
			ereport(LOG, (errmsg("pg_ha: released leader key %s", worker.leader_key)));
		else if (st != ETCD_NOT_FOUND)
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
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	/* consistent state: runs on hot standbys and keeps running across promotion */
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_ha_worker_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_ha worker", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_ha worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Checks that need the whole configuration, which the GUC hooks cannot see. */
static bool
configuration_usable(void)
{
	if (pg_ha_effective_cluster()[0] == '\0')
	{
		remember_error("neither pg_ha.cluster nor cluster_name is set");
		return false;
	}
	if (pg_ha_effective_node_name()[0] == '\0')
	{
		remember_error("pg_ha.node_name is not set and the host name is unknown");
		return false;
	}
	if ((pg_ha_etcd_cert[0] == '\0') != (pg_ha_etcd_key[0] == '\0'))
	{
		remember_error("pg_ha.etcd_cert and pg_ha.etcd_key must be set together");
		return false;
	}
	return true;
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
	worker.leader_key = MemoryContextStrdup(TopMemoryContext, pg_ha_key("leader"));
	worker.member_key = MemoryContextStrdup(TopMemoryContext,
											pg_ha_key(psprintf("members/%s", worker.node)));
	worker.status_key = MemoryContextStrdup(TopMemoryContext, pg_ha_key("status"));
	worker.initialize_key = MemoryContextStrdup(TopMemoryContext, pg_ha_key("initialize"));

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
		set_state(HA_EV_BAD_CONFIG, worker.last_error);
		publish_shared(NULL, false);
		ereport(WARNING,
				(errmsg("pg_ha: %s", worker.last_error),
				 errhint("Set the parameter in postgresql.conf and restart the server.")));
		/* stay up (no restart loop) so pg_ha.status() can show why */
		while (!ShutdownRequestPending)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L,
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		proc_exit(0);
	}

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
