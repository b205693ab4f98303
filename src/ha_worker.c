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
 *   t_send is read from the lease clock (pg_ha_monotonic_us, shmem.c)
 *   *before* a grant or keepalive is sent.  etcd starts the TTL no earlier
 *   than it receives the request, and etcd leader changes only extend
 *   leases, so when the reply grants TTL T the lease cannot expire before
 *   t_send + T (our clock; drift over T is covered by the margin, shmem.c).
 *   A live lease is not enough: the key itself may have been deleted or
 *   replaced by other means (etcdctl del, an etcd restore, a lease bug).
 *   So the worker publishes t_send + T as lease_deadline_us only once the
 *   leader key was confirmed, in the same cycle and after the keepalive, to
 *   carry this node's name and lease (confirm_leader_key), or was created
 *   by it with that lease.  The deadline moves only forward, only on a
 *   confirmed renewal.  A worker that stops renewing (etcd down, worker
 *   hung or stopped) lets the deadline pass by itself: nothing has to run
 *   for the node to lose its authority, which is what every backend checks
 *   before and after each commit (fence.c).
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
#include "common/controldata_utils.h"
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
#include "storage/pmsignal.h"
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
#include "ha_failsafe.h"
#include "ha_request.h"
#include "ha_sync.h"
#include "ha_upstream.h"
#include "patroni_codec.h"

#define ETCD_RETRY_US (1000 * 1000)	/* retry pace while etcd is unreachable */
#define WATCH_RETRY_US (1000 * 1000)
#define RACE_COLLECT_US (1000 * 1000)	/* how long peers get to publish fresh positions */
#define FAST_CYCLE_US (50 * 1000)	/* pace while a hand-over or race is in progress */
#define HANDOVER_CATCHUP_US (5 * 1000 * 1000)	/* candidate's bound to flush our last WAL */
#define CALLER_ANSWER_US (2 * 1000 * 1000)	/* bound on a local switchover caller's answer */
#define SHUTDOWN_WAIT_TTLS 2	/* bound, in TTLs, on waiting for a stopping leader's checkpoint */
#define MAX_SLEEP_MS 1000

/* Steps of a switchover on the old leader (handover_step) */
typedef enum HandoverStep
{
	HO_NONE = 0,				/* no switchover in progress */
	HO_CHECKPOINT,				/* checkpoint requested, still writable */
	HO_CATCHUP					/* fenced, waiting for the candidate's flush */
} HandoverStep;

typedef struct Handover
{
	HandoverStep step;
	char		member[PG_HA_NAME_LEN];
	char		host[256];
	char		port[16];
	int64		revision;		/* mod_revision of the request acted on */
	int64		deadline;		/* end of the current step */
	XLogRecPtr	checkpoint_before;
} Handover;

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
	int64		renewed_deadline;	/* t_send + TTL of the last renewal */
	int64		lease_deadline; /* the same, once the key was confirmed ours
								 * in the same cycle: what the fence reads */
	bool		is_leader;
	int64		lease_ttl_asked;	/* seconds the lease was asked for */

	/* the settings this node runs on (ha_dynconf.c), and what was logged */
	DynSettings dyn;
	DynProblem	dyn_logged[DYN_PROBLEMS_MAX];
	int			dyn_nlogged;
	int			client_timeout_ms;	/* retry_timeout the etcd client was made with */
	int64		failsafe_off_since; /* failsafe mode off (from the key) since; 0 = on */

	/* failover race */
	int64		leader_gone_revision;	/* revision at which the key vanished */
	int64		race_started;	/* 0 = no race running */
	char		race_refusal[256];	/* last reason logged for not racing */
	char		last_leader[PG_HA_NAME_LEN];	/* who held the key when last seen */
	int64		last_leader_lease;	/* the lease it held it with */
	XLogRecPtr	leader_last_lsn;	/* highest position the leader published */
	bool		promoting;
	int64		promote_started;
	bool		promote_cancelled_queries;
	char		promote_reason[64];
	/* where HA_ACT_RESTART_AS_STANDBY points postgres (set before firing) */
	struct
	{
		char		leader[PG_HA_NAME_LEN];
		char		host[256];
		char		port[16];
		bool		caller_waits;	/* a pg_ha.switchover() caller on this node */
	}			demote;

	Handover	ho;				/* switchover, old leader's side */
	int64		bad_request_revision;	/* malformed failover key already logged */
	int64		aborted_revision;	/* aborted request first seen ... */
	int64		aborted_seen_at;	/* ... at this time */

	int64		diverged_since; /* 0 = following fine */
	bool		initialize_checked;
	bool		config_checked; /* the config key exists (we made sure once) */
	char	   *published_member;	/* last member document written */
	char		followed[PG_HA_NAME_LEN];	/* member primary_conninfo points at */
	char		upstream_refusal[128];	/* last reason replicatefrom was not used */
	char	   *leader_key;
	char	   *member_key;
	char	   *status_key;
	char	   *initialize_key;
	char	   *config_key;
	char	   *failover_key;
	char	   *history_key;
	char	   *sync_key;
	/* synchronous mode: see the functions under "synchronous mode" */
	struct
	{
		char		asked[SYNC_SSN_MAX_LEN];	/* last value this worker set */
		bool		asked_set;
		char		ready_for[SYNC_SSN_MAX_LEN];	/* the setting "ready" refers to */
		bool		ready_known;
		XLogRecPtr	ready_lsn;	/* our flush position when it was first in effect */
		SyncNames	ready;
		SyncKey		written;	/* our last write, until the watch shows it */
		bool		written_valid;
		char		waiting[PG_HA_ERROR_LEN];	/* why commits wait, "" if not */
		bool		nudge_pending;	/* make the standbys reply (sync_nudge) */
		int64		republished_at; /* last position republished in a refused race */
		SyncNames	seen;		/* listed standbys and since when */
		TimestampTz seen_since[SYNC_MAX_NAMES];
	}			sync;
	char		node[PG_HA_NAME_LEN];
	char		last_error[PG_HA_ERROR_LEN];
	bool		releasing;
	int64		next_cycle;
	uint64		restart_gen_seen;	/* scheduled restart's generation last acted on */
	bool		restarting_key_cleared; /* restarting/<node> deleted since start */
	char		restart_waits[128]; /* why it last had to wait, "" if not */

	/* failsafe mode (ha_failsafe.c): the members this leader last published */
	FailsafeMember fs_members[FAILSAFE_MAX_MEMBERS];
	int			fs_n;			/* without this node */
	bool		fs_published;	/* the failsafe key holds exactly them */
	bool		fs_held_back;	/* the last attempt on the key was refused */
	int64		fs_confirmed_until; /* t_send + shortest promise of the last
									 * round every member confirmed; 0 = none
									 * since etcd last answered a whole cycle */
	char		fs_outcome[128];	/* last round's outcome, logged on change */
} HaWorker;

static HaWorker worker;

/* ---------- small helpers ---------- */

static int
abort_etcd_call(void *arg)
{
	/*
	 * A shutdown cuts a call short, except the final release itself; so
	 * does the postmaster's death (exit_if_orphaned, right after the call,
	 * then ends the worker).
	 */
	if (worker.releasing)
		return 0;
	return (ShutdownRequestPending || !PostmasterIsAlive()) ? 1 : 0;
}

/*
 * A worker whose postmaster died must not act on the cluster.  It notices
 * the death only when it next waits on its latch, and a cycle may run for
 * seconds before that (blocked on etcd, say).  Meanwhile what it reads of
 * this server is no longer true: the WAL senders exit at once, so
 * pg_stat_replication shows no standby, and a leader would write a sync key
 * naming none, which forbids the one standby holding every acknowledged
 * commit to take over (test 347); a replica's WAL receiver exits too, and a
 * replica could take the leader key for a server that is gone.
 *
 * The argument: the postmaster's death is final, so a postmaster alive at
 * this check was alive at every moment before it, and whatever was read
 * before a check that passes was read from a running server.  The check
 * reads the postmaster's pipe itself rather than trusting the death
 * signal's flag: the kernel closes the pipe, which is what wakes the WAL
 * senders, before it sends that signal, so a WAL sender could be gone
 * while the flag still says alive.
 *
 * The worker checks at the start of a cycle, after its etcd calls (and
 * before a failsafe round when one failed), after reading
 * pg_stat_replication or the WAL receiver's state for a decision, and
 * before taking the leader key.  The leader key is left to expire: backends
 * of a dead postmaster may still be running, so only the lease's deadline
 * (fence.c) ends this node's write authority.
 */
static void
exit_if_orphaned(void)
{
	if (PostmasterIsAliveInternal())
		return;
	ereport(LOG,
			(errmsg("pg_ha: the postmaster died: the worker exits without acting on what it read"),
			 errdetail("The leader key, if this node holds it, expires with its lease.")));
	proc_exit(1);
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

/*
 * May the action of event run now?  The worker asks the table before each
 * irreversible action - promote, hand over, release the key to a
 * candidate, demote, stop for pg_rewind - so the protocol table, not the
 * worker's flags, decides what can happen in each state.  A refused event
 * is logged (once) and its action does not run.
 */
static bool
allowed(HaEvent event, const char *detail)
{
	if (ha_transition_find(worker.state, event) != NULL)
		return true;
	(void) ha_transition(worker.state, event, detail);	/* logs the refusal */
	return false;
}

static void act_fence(const char *detail);
static void refuse_race(const char *why);
static void failsafe_publish_members(void);
static void failsafe_round(void);
static void act_lift_fence(const char *detail);
static void act_checkpoint(const char *detail);
static void act_promote(const char *detail);
static void act_restart_as_standby(const char *detail);
static void act_stop_for_rewind(const char *detail);

/* The code behind each action the table names (ha_state.c). */
static void (*const row_actions[HA_NUM_ACTIONS]) (const char *detail) = {
	[HA_ACT_NONE] = NULL,
	[HA_ACT_FENCE] = act_fence,
	[HA_ACT_LIFT_FENCE] = act_lift_fence,
	[HA_ACT_CHECKPOINT] = act_checkpoint,
	[HA_ACT_PROMOTE] = act_promote,
	[HA_ACT_RESTART_AS_STANDBY] = act_restart_as_standby,
	[HA_ACT_STOP_FOR_REWIND] = act_stop_for_rewind,
};

/*
 * Raises an event: the table's row gives the next state and the action,
 * which runs after the state changed.  An event the table does not allow
 * in this state is logged and refused, and nothing runs.  This is the only
 * way the worker promotes, demotes, fences or stops postgres.
 */
static bool
fire(HaEvent event, const char *detail)
{
	const HaTransition *t = ha_transition_find(worker.state, event);

	set_state(event, detail);	/* logs the change or the refusal */
	if (t == NULL)
		return false;
	if (row_actions[t->action] != NULL)
		row_actions[t->action] (detail);
	return true;
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

/* HA_ACT_FENCE */
static void
act_fence(const char *detail)
{
	raise_fence(detail ? detail : "this node may not write");
}

/*
 * HA_ACT_LIFT_FENCE: the rows that lead here confirmed the key carries our
 * name and lease, and publish_lease_deadline() set the deadline that the
 * fence still checks at every commit; lifting the flag does not outlast it.
 */
static void
act_lift_fence(const char *detail)
{
	if (pg_atomic_exchange_u32(&pg_ha_shared->fence, 0) != 0)
		ereport(LOG, (errmsg("pg_ha: fence lifted: this node holds the leader lease")));
}

static void
lose_leadership(const char *why)
{
	if (!worker.is_leader)
		return;
	worker.is_leader = false;
	worker.fs_published = false;	/* a next leadership publishes anew */
	worker.fs_confirmed_until = 0;
	publish_lease_deadline();
	if (!RecoveryInProgress())
		fire(HA_EV_LEADER_KEY_TAKEN, why);
}

static void sync_publish_locked(void);

/* Copies the worker's view into shared memory for readers. */
/*
 * A key's value for the HTTP listener (GET /config, /history), which never
 * calls etcd: "" when absent or too long for the buffer (the listener then
 * answers as if it were absent).
 */
static void
publish_key_locked(const EtcdKV *kv, char *buf, size_t len)
{
	buf[0] = '\0';
	if (kv == NULL || kv->value == NULL || kv->value_len >= len)
		return;
	memcpy(buf, kv->value, kv->value_len);
	buf[kv->value_len] = '\0';
}

/*
 * What the failover key means for the listener and the control API, from
 * one decode: whether it names this node as the candidate of a switchover
 * or failover that is not over (a reinitialize is refused then:
 * ha_reinit.c), and GET /cluster's "scheduled_switchover" ("" if none).
 */
static void
view_request_facts(bool *candidate, char *scheduled, size_t len)
{
	HaRequest	req;
	int64		rev;
	char		at[HA_TIME_LEN];

	*candidate = false;
	scheduled[0] = '\0';
	if (!worker.view.loaded ||
		cluster_request(&worker.view, &req, &rev, NULL, 0) != CLUSTER_REQUEST_VALID)
		return;
	*candidate = strcmp(req.member, worker.node) == 0 &&
		(req.phase == HA_REQ_REQUESTED || req.phase == HA_REQ_HANDED_OVER ||
		 req.phase == HA_REQ_FINAL_CONFIRMED);
	if (req.phase != HA_REQ_REQUESTED || !req.scheduled)
		return;
	/* names are [A-Za-z0-9_.-] (the codec checked them): no JSON escaping needed */
	ha_time_format(req.scheduled_at_us, at, sizeof(at));
	snprintf(scheduled, len, "{\"at\":\"%s\"", at);
	if (req.leader[0])
		snprintf(scheduled + strlen(scheduled), len - strlen(scheduled), ",\"from\":\"%s\"", req.leader);
	if (req.member[0])
		snprintf(scheduled + strlen(scheduled), len - strlen(scheduled), ",\"to\":\"%s\"", req.member);
	snprintf(scheduled + strlen(scheduled), len - strlen(scheduled), "}");
}

static void
publish_shared(const NodeSnapshot *snap, bool etcd_ok)
{
	/* our own key may not be back through the watch yet */
	const char *leader = worker.is_leader ? worker.node :
		worker.view.loaded ? cluster_leader(&worker.view) : "";
	bool		candidate;
	char		scheduled[sizeof(pg_ha_shared->scheduled_switchover_json)];

	view_request_facts(&candidate, scheduled, sizeof(scheduled));
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pg_ha_shared->named_candidate = candidate;
	strlcpy(pg_ha_shared->scheduled_switchover_json, scheduled,
			sizeof(pg_ha_shared->scheduled_switchover_json));
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
		pg_ha_shared->paused = worker.dyn.pause;
		pg_ha_shared->cluster_optime = cluster_optime(&worker.view);
		cluster_members_json(&worker.view, pg_ha_shared->members_json,
							 sizeof(pg_ha_shared->members_json));
		publish_key_locked(cluster_get(&worker.view, "config"), pg_ha_shared->config_json,
						   sizeof(pg_ha_shared->config_json));
		publish_key_locked(cluster_get(&worker.view, "history"), pg_ha_shared->history_json,
						   sizeof(pg_ha_shared->history_json));
	}
	else
	{
		pg_ha_shared->members_json[0] = '\0';
		pg_ha_shared->config_json[0] = '\0';
		pg_ha_shared->history_json[0] = '\0';
	}
	pg_ha_shared->keys_known = worker.view.loaded;
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
	pg_ha_shared->dyn = worker.dyn;
	pg_ha_shared->dyn_known = true;
	sync_publish_locked();
	LWLockRelease(pg_ha_shared->lock);
	pg_atomic_write_u32(&pg_ha_shared->sync_mode_eff, (uint32) worker.dyn.sync_mode + 1);
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
	/* retry_timeout from the config key, else pg_ha.etcd_timeout (ha_dynconf.c) */
	config.timeout_ms = worker.dyn.retry_timeout_ms;
	worker.client_timeout_ms = worker.dyn.retry_timeout_ms;
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

/* Who holds the leader key, and with which lease, as last seen. */
static void
remember_leader(void)
{
	const EtcdKV *kv = cluster_get(&worker.view, "leader");

	if (kv == NULL || kv->value_len == 0 || kv->value_len >= PG_HA_NAME_LEN)
		return;
	strlcpy(worker.last_leader, kv->value, sizeof(worker.last_leader));
	worker.last_leader_lease = kv->lease;
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
	worker.sync.written_valid = false;	/* a full read is newer than our last write */
	remember_leader();
	if (cluster_leader(&worker.view)[0] == '\0' && worker.leader_gone_revision == 0)
		worker.leader_gone_revision = worker.view.kvs.revision;
	worker.watch = etcd_watch_start(worker.etcd, worker.prefix, true,
									worker.view.kvs.revision + 1);
	if (worker.watch == NULL)
		worker.watch_retry_at = pg_ha_monotonic_us() + WATCH_RETRY_US;
	return true;
}

static void sync_key_event(const EtcdEvent *ev);

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
	if (worker.sync_key && strcmp(ev->kv.key, worker.sync_key) == 0)
		sync_key_event(ev);
	cluster_apply_event(&worker.view, ev);
	if (is_leader_key)
		remember_leader();
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

static bool failsafe_usable(void);
static bool failsafe_may_retake(void);
static void retake_leader_key(void);

/*
 * Grant or renew this node's lease; see the lease rule at the top of the
 * file for why t_send is taken before the request.
 */
static bool
renew_lease(void)
{
	int64		t_send = pg_ha_monotonic_us();
	int64		ttl = 0;
	bool		expired = false;
	EtcdStatus	st;

	if (worker.lease_id != 0)
	{
		st = etcd_lease_keepalive(worker.etcd, worker.lease_id, &ttl);
		if (st == ETCD_OK)
		{
			worker.lease_ttl = ttl;
			pg_atomic_write_u32(&pg_ha_shared->lease_ttl_s, (uint32) ttl);
			worker.renewed_deadline = t_send + ttl * 1000000;
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
		worker.renewed_deadline = 0;
		if (worker.published_member)
			pfree(worker.published_member);
		worker.published_member = NULL;
		expired = true;
		/* the failsafe deadline, if any, is what the fence reads meanwhile */
		if (!failsafe_may_retake())
		{
			worker.lease_deadline = 0;
			lose_leadership("lease expired");
		}
		t_send = pg_ha_monotonic_us();
	}
	st = etcd_lease_grant(worker.etcd, worker.dyn.ttl, &worker.lease_id, &ttl);
	if (st != ETCD_OK)
	{
		worker.lease_id = 0;
		remember_error("lease grant failed: %s", etcd_last_error(worker.etcd));
		if (expired)
			lose_leadership("lease expired, and no new one granted");
		return false;
	}
	worker.lease_ttl_asked = worker.dyn.ttl;
	worker.lease_ttl = ttl;
	/* the margin (shmem.c) before any deadline from this lease is published */
	pg_atomic_write_u32(&pg_ha_shared->lease_ttl_s, (uint32) ttl);
	worker.renewed_deadline = t_send + ttl * 1000000;
	if (expired && worker.is_leader)
		retake_leader_key();
	return true;
}

/*
 * Failsafe mode, the leader's lease expired in etcd (an outage longer than
 * the TTL): may it take the key back rather than fence?  Only while the
 * promises of its last fully confirmed round still cover it, and only in
 * the state the table allows it (ha_failsafe.c, point 4, argues why).
 */
static bool
failsafe_may_retake(void)
{
	return worker.is_leader && worker.ho.step == HO_NONE && failsafe_usable() &&
		failsafe_promises_cover(pg_ha_monotonic_us(), worker.fs_confirmed_until,
								pg_ha_lease_margin_us()) &&
		allowed(HA_EV_LEADER_KEY_RETAKEN, "lease expired in etcd");
}

/*
 * ... and having granted a new lease, it creates the key with it, only if
 * the key does not exist: nobody else may have taken it while the promises
 * held, and if someone did anyway the create fails and this node fences.
 * The new lease's t_send + TTL backs writes from here (the lease rule).
 */
static void
retake_leader_key(void)
{
	EtcdStatus	st;

	st = etcd_create(worker.etcd, worker.leader_key, worker.node, worker.lease_id, NULL);
	if (st != ETCD_OK)
	{
		if (st != ETCD_NOT_FOUND)
			remember_error("cannot retake the leader key: %s", etcd_last_error(worker.etcd));
		worker.lease_deadline = 0;
		lose_leadership(st == ETCD_NOT_FOUND ?
						"lease expired, and the leader key exists again" :
						"lease expired, and the leader key could not be retaken");
		return;
	}
	worker.lease_deadline = Max(worker.lease_deadline, worker.renewed_deadline);
	publish_lease_deadline();
	fire(HA_EV_LEADER_KEY_RETAKEN, worker.leader_key);
}

/*
 * Leader only, right after a successful keepalive: does the leader key
 * still carry this node's name and lease?  A live lease alone proves
 * nothing about the key: `etcdctl del`, `patronictl remove`, an etcd
 * restore or an etcd lease bug can remove or replace the key while the
 * lease lives on, and a node cut from etcd meanwhile would otherwise come
 * back, renew, and keep writing beside the new leader.  So the deadline
 * that the fence reads is published only after this compare succeeds; it
 * still counts from the keepalive's t_send, which is earlier (safe side).
 * Between two confirmations the watch reports a deleted or overwritten key
 * at once (handle_event).
 */
static bool
confirm_leader_key(void)
{
	EtcdCompare cmps[2] = {
		{worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0},
		{worker.leader_key, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, NULL, worker.lease_id},
	};
	bool		held;

	if (!worker.is_leader)
		return true;
	if (etcd_txn(worker.etcd, cmps, 2, NULL, 0, NULL, 0, &held, NULL) != ETCD_OK)
	{
		remember_error("cannot confirm the leader key: %s", etcd_last_error(worker.etcd));
		return false;
	}
	if (held)
		worker.lease_deadline = worker.renewed_deadline;
	else
		lose_leadership("the leader key no longer carries this node's name and lease");
	return true;
}

/* ---------- the settings from the config key (ha_dynconf.c) ---------- */

/*
 * Each problem of the config key once, as long as it lasts: a WARNING
 * naming the field and saying why, never quoting the value (it may be
 * large, or anything at all).
 */
static void
dyn_log_problems(void)
{
	for (int i = 0; i < worker.dyn.nproblems; i++)
	{
		const DynProblem *p = &worker.dyn.problems[i];
		bool		logged = false;

		for (int j = 0; j < worker.dyn_nlogged && !logged; j++)
			logged = strcmp(worker.dyn_logged[j].field, p->field) == 0 &&
				strcmp(worker.dyn_logged[j].why, p->why) == 0;
		if (!logged)
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pg_ha: ignoring field \"%s\" of the config key", p->field),
					 errdetail("%s.", p->why),
					 errhint("Correct it with patronictl edit-config or PATCH /config; until then this node uses its own setting.")));
	}
	memcpy(worker.dyn_logged, worker.dyn.problems, sizeof(DynProblem) * worker.dyn.nproblems);
	worker.dyn_nlogged = worker.dyn.nproblems;
}

/* One LOG line naming each field whose value or source changed. */
static void
dyn_log_changes(const DynSettings *before)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int f = 0; f < DYN_NUM_FIELDS; f++)
	{
		char		was[32];
		char		now[32];

		dynconf_value_text(before, f, was, sizeof(was));
		dynconf_value_text(&worker.dyn, f, now, sizeof(now));
		if (strcmp(was, now) == 0 && strcmp(dynconf_source(before, f), dynconf_source(&worker.dyn, f)) == 0)
			continue;
		appendStringInfo(&buf, "%s%s %s (%s)", buf.len ? ", " : "", dynconf_field_name(f), now,
						 dynconf_source(&worker.dyn, f));
	}
	if (buf.len > 0)
		ereport(LOG, (errmsg("pg_ha: settings now in effect: %s", buf.data)));
	pfree(buf.data);
}

/*
 * A GUC the operator just changed has no effect while the config key sets
 * its field (the key's initial value carries ttl and
 * maximum_lag_on_failover, so this is the usual case for those two): say
 * so once, at the reload, rather than leave a silent no-op.
 */
static void
dyn_log_shadowed(unsigned fields)
{
	for (int f = 0; f < DYN_NUM_FIELDS; f++)
	{
		char		value[32];

		if (!(fields & (1u << f)))
			continue;
		dynconf_value_text(&worker.dyn, f, value, sizeof(value));
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: the new value of %s has no effect", dynconf_local_name(f)),
				 errdetail("The config key sets %s to %s, and the config key takes precedence.",
						   dynconf_field_name(f), value),
				 errhint("Change it with patronictl edit-config or PATCH /config, or remove the field from the config key.")));
	}
}

/*
 * Failsafe mode on from the key with pg_ha.failsafe_mode off: a restart
 * must count as a promise (shmem.c), so the marker is written, durably,
 * before the listener can learn that failsafe mode is on.  It goes once
 * failsafe mode has been off for longer than any promise lasts (pg_ha.ttl,
 * http_failsafe.c).  False when the marker could not be written: then
 * failsafe mode stays off.
 */
static bool
failsafe_marker(bool on)
{
	char		path[MAXPGPATH];
	int64		now = pg_ha_monotonic_us();
	int			fd;

	snprintf(path, sizeof(path), "%s/%s", DataDir, PG_HA_FAILSAFE_MARKER);
	if (!on)
	{
		if (worker.failsafe_off_since == 0)
			worker.failsafe_off_since = now;
		if (now - worker.failsafe_off_since > (int64) pg_ha_ttl * 1000000 &&
			pg_ha_failsafe_marker_exists())
			(void) durable_unlink(path, LOG);
		return true;
	}
	worker.failsafe_off_since = 0;
	if (pg_ha_failsafe_mode || pg_ha_failsafe_marker_exists())
		return true;
	fd = OpenTransientFile(path, O_WRONLY | O_CREAT | PG_BINARY);
	if (fd < 0 || pg_fsync(fd) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not create file \"%s\": %m", path),
				 errdetail("Failsafe mode from the config key stays off on this node.")));
		if (fd >= 0)
			CloseTransientFile(fd);
		return false;
	}
	CloseTransientFile(fd);
	fsync_fname(DataDir, true);
	return true;
}

/*
 * The settings this node runs on, from the GUCs and the config key as the
 * view last showed it.  Without a view (etcd unreachable) the last key read
 * stays in force: an outage does not bring back settings the operator
 * replaced.
 */
static void
dyn_refresh(void)
{
	static PatroniDynConfig *key = NULL;
	static bool key_valid = false;
	static DynLocal last_local;
	static bool have_local = false;
	DynSettings before = worker.dyn;
	DynLocal	local;

	if (key == NULL)
		key = MemoryContextAllocZero(TopMemoryContext, sizeof(PatroniDynConfig));
	if (worker.view.loaded)
	{
		const EtcdKV *kv = cluster_get(&worker.view, "config");

		key_valid = kv != NULL && kv->value != NULL &&
			patroni_config_decode(kv->value, kv->value_len, key);
		/* an absent or broken key resets nothing: only a valid one speaks */
		if (key_valid)
			pg_ha_params_apply(key);
	}
	pg_ha_dyn_local(&local);
	dynconf_merge(key_valid ? key : NULL, &local, &worker.dyn);
	if (worker.dyn.failsafe_mode && !failsafe_marker(true))
		worker.dyn.failsafe_mode = false;
	else if (!worker.dyn.failsafe_mode)
		(void) failsafe_marker(false);
	dyn_log_problems();
	if (before.ttl != 0)
		dyn_log_changes(&before);
	if (have_local)
		dyn_log_shadowed(dynconf_shadowed(&last_local, &local, &worker.dyn));
	last_local = local;
	have_local = true;
	/* a new bound on etcd calls needs a new client: at the next cycle's start */
	if (worker.etcd && worker.client_timeout_ms != worker.dyn.retry_timeout_ms)
		soon(0);
}

/*
 * A TTL change, applied live.  THE ARGUMENT (the lease rule at the top of
 * the file, for a second lease):
 *   1. t_send is read, then a new lease is granted with the new TTL: it
 *      cannot expire before t_send + TTL_new.
 *   2. One transaction moves the leader key and the member key onto it,
 *      only if the leader key still holds this node's name AND the old
 *      lease (what confirm_leader_key checks).  After it, the key lives as
 *      long as the new lease, and only it.
 *   3. Only then does the fence's deadline move to t_send + TTL_new,
 *      earlier or later than before: it is a bound on the key's real
 *      expiry, and the margin (shmem.c) grows with the larger TTL first.
 *   4. The old lease is revoked; it carries nothing any more.
 * If the grant fails, or the compare (the key is not ours: leadership is
 * dropped, as after a failed confirmation), the old lease and deadline
 * stay and the new lease, which carries nothing, is revoked.  If the
 * transaction gets no answer, the deadline becomes the earlier of the two
 * leases' bounds and neither is revoked (see there).  The old lease is
 * revoked only once nothing is attached to it: a lease a key may still
 * depend on is never cut short.
 * Other nodes reason about this node's lease only through etcd (the key
 * vanishes when its lease ends; previous_leader_gone compares lease IDs,
 * which both keys change together, in one revision), and a failsafe
 * promise is pg_ha.ttl long whatever the key says (http_failsafe.c), so
 * nodes with old and new TTLs side by side never wait less than the lease
 * that protects the writer.
 * A standby moves its member key the same way, without the compare.  A
 * primary without the key keeps its lease: it writes nothing either way.
 */
static void
move_lease(void)
{
	int64		t_send;
	int64		new_id = 0;
	int64		ttl = 0;
	int64		old_id = worker.lease_id;
	bool		moved = false;
	EtcdStatus	st;

	if (worker.lease_id == 0 || worker.dyn.ttl == worker.lease_ttl_asked ||
		worker.published_member == NULL || (!worker.is_leader && !RecoveryInProgress()))
		return;
	t_send = pg_ha_monotonic_us();
	if (etcd_lease_grant(worker.etcd, worker.dyn.ttl, &new_id, &ttl) != ETCD_OK)
	{
		remember_error("could not grant a lease of %d s: %s", worker.dyn.ttl, etcd_last_error(worker.etcd));
		return;
	}
	if (worker.is_leader)
	{
		EtcdCompare cmps[2] = {
			{worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0},
			{worker.leader_key, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, NULL, old_id},
		};
		EtcdOp		puts[2] = {
			{ETCD_OP_PUT, worker.leader_key, worker.node, new_id, false},
			{ETCD_OP_PUT, worker.member_key, worker.published_member, new_id, false},
		};

		st = etcd_txn(worker.etcd, cmps, 2, puts, 2, NULL, 0, &moved, NULL);
	}
	else
	{
		st = etcd_put(worker.etcd, worker.member_key, worker.published_member, new_id);
		moved = st == ETCD_OK;
	}
	if (st == ETCD_OK && !moved)
	{
		/* the compare failed: nothing was put on the new lease */
		(void) etcd_lease_revoke(worker.etcd, new_id);
		lose_leadership("the leader key no longer carries this node's name and lease");
		return;
	}
	if (!moved)
	{
		/*
		 * No answer: the keys may be on either lease, and both live until
		 * their own ends, so the earlier of the two bounds the key.  The new
		 * lease is left to expire (revoking it could delete a key this
		 * deadline still counts on); the next confirmation finds out which
		 * lease the key is on, and the member key is written again.
		 */
		remember_error("could not move the keys to a lease of %d s: %s", worker.dyn.ttl,
					   etcd_last_error(worker.etcd));
		if (worker.is_leader)
		{
			worker.lease_deadline = Min(worker.lease_deadline, t_send + ttl * 1000000);
			publish_lease_deadline();
		}
		pfree(worker.published_member);
		worker.published_member = NULL;
		return;
	}
	pg_atomic_write_u32(&pg_ha_shared->lease_ttl_s, (uint32) Max(ttl, worker.lease_ttl));
	worker.lease_id = new_id;
	worker.lease_ttl = ttl;
	worker.lease_ttl_asked = worker.dyn.ttl;
	worker.renewed_deadline = t_send + ttl * 1000000;
	if (worker.is_leader)
	{
		worker.lease_deadline = worker.renewed_deadline;
		publish_lease_deadline();
	}
	pg_atomic_write_u32(&pg_ha_shared->lease_ttl_s, (uint32) ttl);
	(void) etcd_lease_revoke(worker.etcd, old_id);
	ereport(LOG,
			(errmsg("pg_ha: %s moved to lease %lld of %lld s (was lease %lld)",
					worker.is_leader ? "leader and member keys" : "member key",
					(long long) new_id, (long long) ttl, (long long) old_id)));
}

/* ---------- keys ---------- */

/*
 * The `config` key, Patroni's dynamic configuration, as the node that
 * initializes the cluster writes it: this node's settings in Patroni's
 * layout, created only when absent (an operator's edits, or a pause set
 * before, stay).  Every node honours it from then on (dyn_refresh).  A
 * failure is retried on the next cycle; nothing waits for it.
 *
 * pg_ha.synchronous_mode goes in when it is not off, as Patroni's
 * bootstrap.dcs would put it: patronictl 3.3.2 and later show the
 * synchronous standbys only when the key sets the mode.  Off stays out,
 * so that a cluster started asynchronous can still turn the mode on with
 * the GUC.
 */
static void
ensure_config_key(void)
{
	PatroniConfigInit init;
	DynLocal	local;
	char	   *value;
	EtcdStatus	st;

	if (worker.config_checked)
		return;
	pg_ha_dyn_local(&local);
	init.ttl = pg_ha_ttl;
	init.loop_wait = Max(1, pg_ha_ttl / 3);
	init.retry_timeout = Max(1, (pg_ha_etcd_timeout_ms + 999) / 1000);
	init.maximum_lag_on_failover = (int64) pg_ha_maximum_lag_on_failover * 1024;
	init.synchronous_mode = local.sync_mode == DYN_SYNC_QUORUM ? PATRONI_SYNC_QUORUM :
		local.sync_mode == DYN_SYNC_OFF ? PATRONI_SYNC_OFF : PATRONI_SYNC_ON;
	init.synchronous_mode_strict = local.sync_mode == DYN_SYNC_STRICT;
	init.synchronous_node_count = local.sync_node_count;
	value = patroni_config_initial(&init);
	if (value == NULL)
		return;
	st = etcd_create(worker.etcd, worker.config_key, value, 0, NULL);
	free(value);
	if (st == ETCD_OK)
		ereport(LOG, (errmsg("pg_ha: wrote the config key %s", worker.config_key)));
	worker.config_checked = st == ETCD_OK || st == ETCD_NOT_FOUND;
}

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
		fire(HA_EV_BAD_CONFIG, worker.last_error);
		return false;
	}
	etcd_kv_free(&current);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
	{
		remember_error("cannot read %s: %s", worker.initialize_key, etcd_last_error(worker.etcd));
		return false;
	}
	worker.initialize_checked = true;
	ensure_config_key();
	return true;
}

/*
 * The failsafe guard (ha_failsafe.c, point 2), before any attempt on the
 * leader key: not while a promise to a leader binds, and not by a node
 * that the failsafe key (present only while the leader runs failsafe
 * mode) does not list.  Passing marks the key claimed in the same locked
 * section, so the listener gives no promise from then on.
 *
 * The same section refuses while a reinitialize of this node is accepted
 * (reinit_pending, ha_reinit.c): that node is about to be wiped and must
 * never become the leader.  The control side sets the flag only while the
 * key is not claimed, under the same lock, so exactly one of the two wins.
 */
static bool
failsafe_may_take_key(void)
{
	const EtcdKV *kv = cluster_get(&worker.view, FAILSAFE_KEY);
	FailsafeMember *listed = palloc(sizeof(FailsafeMember) * FAILSAFE_MAX_MEMBERS);
	int			n = 0;
	int64		until;
	char		leader[PG_HA_NAME_LEN];
	bool		bound;
	bool		reinit;

	if (kv != NULL && kv->value != NULL &&
		(!failsafe_members_decode(kv->value, listed, FAILSAFE_MAX_MEMBERS, &n) ||
		 !failsafe_members_include(listed, n, worker.node)))
	{
		pfree(listed);
		refuse_race("the failsafe key does not list this node");
		return false;
	}
	pfree(listed);
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	reinit = pg_ha_shared->reinit_pending;
	until = pg_ha_shared->failsafe_until_us;
	strlcpy(leader, pg_ha_shared->failsafe_leader, sizeof(leader));
	bound = failsafe_promise_binding(pg_ha_monotonic_us(), until);

	/*
	 * The promise a start makes stands for promises given as a standby; a
	 * node that started as a primary gave none since (it would have had to
	 * take the key, past this guard), and must not lose its key to the wait.
	 */
	if (bound && leader[0] == '\0' && !RecoveryInProgress())
		bound = false;
	if (!bound && !reinit)
		pg_ha_shared->failsafe_key_claimed = true;
	LWLockRelease(pg_ha_shared->lock);
	if (reinit)
	{
		refuse_race("this node is being reinitialized");
		return false;
	}
	if (bound)
	{
		/* no countdown in the text: refuse_race logs when it changes */
		refuse_race(psprintf("this node promised leader \"%s\" not to take the key (failsafe)",
							 leader[0] ? leader : "(any, at start)"));
		soon(Min(until - pg_ha_monotonic_us(), ETCD_RETRY_US));
		return false;
	}
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

	worker.fs_held_back = !failsafe_may_take_key();
	if (worker.fs_held_back)
		return true;
	exit_if_orphaned();
	st = etcd_create(worker.etcd, worker.leader_key, worker.node, worker.lease_id, &current);
	if (st == ETCD_OK)
	{
		/* created with the lease renewed earlier this cycle */
		worker.is_leader = true;
		worker.lease_deadline = worker.renewed_deadline;
		return true;
	}
	if (st != ETCD_NOT_FOUND)
	{
		remember_error("cannot create leader key: %s", etcd_last_error(worker.etcd));
		return false;
	}
	if (current.key != NULL && strcmp(current.value, worker.node) == 0 &&
		(!RecoveryInProgress() || PromoteIsTriggered() || CheckPromoteSignal()))
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
			worker.lease_deadline = worker.renewed_deadline;
		return true;
	}
	etcd_kv_free(&current);
	return true;
}

/*
 * Patroni-style tags for the member document.  Each flag tag appears only
 * when set, so a node with every default publishes no tags at all.
 */
static char *
member_document_with_tags(const NodeSnapshot *snap)
{
	char	   *doc = member_document(snap, worker.view.loaded && worker.dyn.pause);
	StringInfoData buf;
	bool		nofailover = pg_ha_nofailover || pg_ha_failover_priority == 0;
	bool		nosync = pg_ha_nosync || pg_ha_sync_priority == 0;
	const char *replicatefrom = pg_ha_replicatefrom ? pg_ha_replicatefrom : "";
	char	   *user = patroni_tags_members(pg_ha_tags);	/* checked at SET */
	const struct
	{
		const char *name;
		bool		set;
	}			flags[] = {
		{"nofailover", nofailover},
		{"noloadbalance", pg_ha_noloadbalance},
		{"clonefrom", pg_ha_clonefrom},
		{"nostream", pg_ha_nostream},
	};
	bool		any = nofailover || nosync || pg_ha_failover_priority != 1 ||
		pg_ha_sync_priority != 1 || replicatefrom[0] != '\0' || (user != NULL && user[0] != '\0');

	for (size_t i = 0; i < lengthof(flags); i++)
		any |= flags[i].set;
	if (!any)
	{
		free(user);
		return doc;
	}
	/* the document is a compact JSON object: add "tags" before its '}' */
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, doc, strlen(doc) - 1);
	appendStringInfo(&buf, ",\"tags\":{\"failover_priority\":%d",
					 nofailover ? 0 : pg_ha_failover_priority);
	for (size_t i = 0; i < lengthof(flags); i++)
		if (flags[i].set)
			appendStringInfo(&buf, ",\"%s\":true", flags[i].name);
	if (nosync || pg_ha_sync_priority != 1)
		appendStringInfo(&buf, ",\"sync_priority\":%d%s", nosync ? 0 : pg_ha_sync_priority,
						 nosync ? ",\"nosync\":true" : "");
	/* the GUC's check hook allows only name characters: no JSON escaping needed */
	if (replicatefrom[0])
		appendStringInfo(&buf, ",\"replicatefrom\":\"%s\"", replicatefrom);
	if (user != NULL && user[0] != '\0')
		appendStringInfo(&buf, ",%s", user);
	free(user);
	appendStringInfoString(&buf, "}}");
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

/* ---------- synchronous mode (decisions in ha_sync.c) ---------- */

/*
 * The sync key as the decisions must see it: our own last write until the
 * watch has delivered it (a step taken on an older value could undo the
 * order ha_sync.c keeps), otherwise the cluster view.
 */
static void
sync_current_key(SyncKey *key)
{
	const EtcdKV *kv = cluster_get(&worker.view, "sync");

	if (worker.sync.written_valid)
		*key = worker.sync.written;
	else if (kv == NULL || !sync_key_parse(kv->value, kv->value_len, key))
		memset(key, 0, sizeof(*key));
}

static void
sync_key_event(const EtcdEvent *ev)
{
	SyncKey		key;

	if (ev->type == ETCD_EVENT_DELETE ||
		(sync_key_parse(ev->kv.value, ev->kv.value_len, &key) &&
		 sync_key_equal(&key, &worker.sync.written)))
		worker.sync.written_valid = false;
}

/* Writes (or, with key NULL, deletes) the sync key while we hold the leader key. */
static bool
sync_write_key(const SyncKey *key, const char *why)
{
	char		value[SYNC_KEY_MAX_JSON];
	char		list[SYNC_KEY_MAX_JSON];
	EtcdCompare cmps[2] = {
		{worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0},
		{worker.leader_key, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, NULL, worker.lease_id},
	};
	EtcdOp		op = {key ? ETCD_OP_PUT : ETCD_OP_DELETE, worker.sync_key, value, 0, false};
	bool		done = false;

	if (key && sync_key_encode(key, worker.dyn.sync_mode == SYNC_MODE_QUORUM, value, sizeof(value)) < 0)
		return false;
	if (etcd_txn(worker.etcd, cmps, 2, &op, 1, NULL, 0, &done, NULL) != ETCD_OK || !done)
	{
		remember_error("cannot write the sync key: %s", done ? "" : etcd_last_error(worker.etcd));
		return false;
	}
	memset(&worker.sync.written, 0, sizeof(worker.sync.written));
	if (key)
		worker.sync.written = *key;
	worker.sync.written_valid = true;
	if (key == NULL)
		strlcpy(list, "deleted", sizeof(list));
	else if (key->voters.n == 0)
		strlcpy(list, "no synchronous standby", sizeof(list));
	else
	{
		char		names[SYNC_KEY_MAX_JSON];

		sync_names_join(&key->voters, names, sizeof(names));
		snprintf(list, sizeof(list), "synchronous standbys \"%s\", quorum %d", names, key->quorum);
	}
	ereport(LOG, (errmsg("pg_ha: sync key: %s (%s)", list, why)));
	return true;
}

static void
sync_set_ssn(const SyncStandbyNames *ssn)
{
	sync_local_set_ssn(ssn);
	sync_ssn_format(ssn, worker.sync.asked, sizeof(worker.sync.asked));
	worker.sync.asked_set = true;
}

/* Tags of the member keys decide who may be chosen (nosync, sync_priority, nofailover). */
static void
sync_fill_members(SyncStandby *standbys, int n)
{
	for (int i = 0; i < n; i++)
	{
		MemberInfo	m;

		standbys[i].eligible = cluster_member(&worker.view, standbys[i].name, &m) &&
			m.is_replica && !m.nosync && !m.nofailover && m.failover_priority > 0;
		standbys[i].sync_priority = standbys[i].eligible ? m.sync_priority : 0;
	}
}

/*
 * Ready: listed and known to hold every commit acknowledged before this
 * setting took effect.  The set starts empty for each new setting, at our
 * flush position when it is first seen in effect (later than when it took
 * effect: the safe side).
 */
static void
sync_track_ready(const SyncStandbyNames *ssn, const SyncStandby *standbys, int n)
{
	char		text[SYNC_SSN_MAX_LEN];

	sync_ssn_format(ssn, text, sizeof(text));
	if (!worker.sync.ready_known || strcmp(text, worker.sync.ready_for) != 0)
	{
		memset(&worker.sync.ready, 0, sizeof(worker.sync.ready));
		strlcpy(worker.sync.ready_for, text, sizeof(worker.sync.ready_for));
		worker.sync.ready_lsn = GetFlushRecPtr(NULL);
		worker.sync.ready_known = true;
		worker.sync.nudge_pending = ssn->names.n > 0;
	}
	for (int i = 0; i < n; i++)
		sync_update_ready(&worker.sync.ready, ssn, standbys[i].name, standbys[i].waited,
						  standbys[i].flush, worker.sync.ready_lsn);
}

/* Why commits wait for a standby now, said once in the log and kept for pg_ha.status(). */
static void
sync_note_waiting(const SyncStandbyNames *ssn, const SyncStandby *standbys, int n)
{
	char		why[PG_HA_ERROR_LEN] = "";
	char		list[SYNC_KEY_MAX_JSON];
	int			connected = 0;

	for (int i = 0; i < n; i++)
		connected += standbys[i].streaming && standbys[i].walsender_priority > 0 &&
			sync_names_contains(&ssn->names, standbys[i].name);
	if (ssn->names.n > 0 && connected < ssn->num)
	{
		sync_names_join(&ssn->names, list, sizeof(list));
		snprintf(why, sizeof(why), "commits wait for %d synchronous standby(s) of \"%s\", %d connected%s",
				 ssn->num, list, connected,
				 worker.dyn.sync_mode == SYNC_MODE_STRICT ? " (synchronous_mode strict)" : "");
	}
	if (strcmp(why, worker.sync.waiting) == 0)
		return;
	if (why[0])
		ereport(WARNING, (errmsg("pg_ha: %s", why)));
	else
	{
		ereport(LOG, (errmsg("pg_ha: commits no longer wait for a missing synchronous standby")));
		worker.sync.nudge_pending = true;
	}
	strlcpy(worker.sync.waiting, why, sizeof(worker.sync.waiting));
}

/*
 * A new setting that lists standbys, or a listed standby back: commits
 * that waited before may wait on until a standby happens to reply
 * (sync_local_nudge_standbys says why).  Once the setting is in effect in
 * every WAL sender, make the standbys reply.
 */
static void
sync_nudge(bool in_effect)
{
	if (!in_effect || !worker.sync.nudge_pending)
		return;
	sync_local_nudge_standbys();
	worker.sync.nudge_pending = false;
}

/*
 * The leader, once per cycle: one step of ha_sync.c's protocol.  Each step
 * returns at once; "in effect" is checked at the next cycle, which comes
 * soon while a change is under way.
 */
static void
sync_leader_step(void)
{
	SyncStandby standbys[SYNC_MAX_NAMES * 2];
	SyncInput	in;
	SyncStep	st;
	int			n;

	memset(&in, 0, sizeof(in));
	in.mode = (SyncMode) worker.dyn.sync_mode;
	sync_current_key(&in.key);
	sync_local_ssn(&in.ssn);
	if (in.mode == SYNC_MODE_OFF && !in.key.present)
	{
		worker.sync.waiting[0] = '\0';
		return;
	}
	n = sync_local_standbys(standbys, lengthof(standbys));
	/* no WAL sender left may mean a dead postmaster, not lost standbys */
	exit_if_orphaned();
	sync_fill_members(standbys, n);
	if (worker.sync.asked_set)
	{
		char		text[SYNC_SSN_MAX_LEN];

		sync_ssn_format(&in.ssn, text, sizeof(text));
		in.in_effect = strcmp(text, worker.sync.asked) == 0;
	}
	else
		in.in_effect = true;
	in.in_effect = in.in_effect && sync_local_in_effect(&in.ssn, standbys, n);
	if (in.in_effect)
		sync_track_ready(&in.ssn, standbys, n);
	in.node_count = worker.dyn.sync_node_count;
	in.self = worker.node;
	in.standbys = standbys;
	in.nstandbys = n;
	in.ready = worker.sync.ready;
	sync_note_waiting(&in.ssn, standbys, n);
	sync_nudge(in.in_effect);

	st = sync_next_step(&in);
	switch (st.kind)
	{
		case SYNC_STEP_WRITE_KEY:
			if (sync_write_key(&st.key, st.why))
				soon(FAST_CYCLE_US);
			break;
		case SYNC_STEP_DELETE_KEY:
			/* the key first: with it gone, no standby counts as synchronous */
			if (sync_write_key(NULL, st.why) && in.ssn.names.n > 0)
			{
				SyncStandbyNames none;

				memset(&none, 0, sizeof(none));
				sync_set_ssn(&none);
			}
			break;
		case SYNC_STEP_SET_SSN:
			sync_set_ssn(&st.ssn);
			soon(FAST_CYCLE_US);
			break;
		case SYNC_STEP_WAIT:
			soon(FAST_CYCLE_US * 4);
			break;
		case SYNC_STEP_NONE:
			break;
	}
}

/*
 * The failover rule in synchronous mode: with a sync key left by the lost
 * leader, only a listed standby that sees enough listed nodes may take
 * over (sync_race_check), and only listed peers compete with it;
 * maximum_lag_on_failover does not apply (a listed standby holds every
 * acknowledged commit, an unlisted one may not, however small its lag).
 * A forced manual failover is the operator's way out.  False, with why,
 * when this node must not take over.
 */
static bool
sync_race_gate(const NodeSnapshot *snap, RaceInput *in, MemberInfo *peers, int *npeers,
			   char *why, size_t whylen)
{
	SyncKey		key;
	SyncVoter	voters[PG_HA_MAX_MEMBERS];
	int			kept = 0;

	sync_current_key(&key);
	if (!key.present || in->forced)
		return true;
	for (int i = 0; i < *npeers; i++)
	{
		voters[i].name = peers[i].name;
		voters[i].lsn = peers[i].lsn;
		voters[i].fresh = peers[i].valid;
	}
	if (sync_race_check(&key, worker.node, snap->lsn, voters, *npeers, why, whylen) != SYNC_RACE_MAY_TAKE)
		return false;
	for (int i = 0; i < *npeers; i++)
		if (sync_names_contains(&key.voters, peers[i].name))
			peers[kept++] = peers[i];
	*npeers = kept;
	in->npeers = kept;
	in->maximum_lag_bytes = PG_UINT64_MAX;
	return true;
}

/*
 * A refused race in synchronous mode waits for proof from other listed
 * nodes, and they count only positions published after the leader was
 * lost, as each of them saw that moment: a node that was cut away when it
 * happened takes the moment it came back, after our one publication.  So
 * the position is published again, every third of a TTL, while the race
 * is refused (it no longer changes: there is no leader to stream from).
 */
static void
sync_republish_position(const NodeSnapshot *snap, int64 now)
{
	if (now - worker.sync.republished_at < worker.lease_ttl * 1000000 / 3)
		return;
	worker.sync.republished_at = now;
	publish_member(snap, true);
}

/*
 * Before a promotion: synchronous_standby_names as the new leader must
 * start (strict: wait for the other synchronous standbys), in effect in
 * the checkpointer before the first commit can happen.  False until then;
 * the race is decided again at the next cycle.
 */
static bool
sync_ready_to_promote(void)
{
	SyncKey		key;
	SyncStandbyNames want;
	SyncStandbyNames cur;
	char		text[SYNC_SSN_MAX_LEN];

	sync_current_key(&key);
	sync_local_ssn(&cur);
	/*
	 * Synchronous mode off: the setting is the operator's, unless it names
	 * this node, which only a former leader's configuration does (pg_ha
	 * set it there; a clone copies it): as leader, every commit would wait
	 * for a standby that cannot exist.
	 */
	if (worker.dyn.sync_mode == SYNC_MODE_OFF && !key.present &&
		!sync_names_contains(&cur.names, worker.node))
		return true;
	want = sync_promotion_ssn((SyncMode) worker.dyn.sync_mode, &key, worker.node);
	if (!sync_ssn_equal(&want, &cur))
	{
		sync_ssn_format(&want, text, sizeof(text));
		if (!worker.sync.asked_set || strcmp(text, worker.sync.asked) != 0)
			sync_set_ssn(&want);
		soon(FAST_CYCLE_US);
		return false;
	}
	if (!sync_local_defined_matches(&want))
	{
		soon(FAST_CYCLE_US);
		return false;
	}
	return true;
}

/*
 * Right after taking the leader key, before promoting: the sync key names
 * this node with no synchronous standby, so that no standby of the old
 * term can be promoted over commits this node will acknowledge.  If that
 * cannot be written, the leader key is given back rather than promote.
 */
static bool
sync_claim_or_release(void)
{
	SyncKey		key;
	SyncKey		mine;

	sync_current_key(&key);
	if (worker.dyn.sync_mode == SYNC_MODE_OFF && !key.present)
		return true;
	memset(&mine, 0, sizeof(mine));
	mine.present = true;
	strlcpy(mine.leader, worker.node, sizeof(mine.leader));
	if (sync_write_key(&mine, "taking over: no standby is synchronous yet"))
		return true;
	(void) etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node);
	worker.is_leader = false;
	publish_lease_deadline();
	soon(FAST_CYCLE_US);
	return false;
}

/* Under the shared lock (publish_shared): the sync key and since when each is listed. */
static void
sync_publish_locked(void)
{
	SyncKey		key;
	SyncNames	seen;
	TimestampTz since[SYNC_MAX_NAMES];
	TimestampTz now = GetCurrentTimestamp();

	memset(&key, 0, sizeof(key));
	if (worker.view.loaded || worker.sync.written_valid)
		sync_current_key(&key);
	memset(&seen, 0, sizeof(seen));
	for (int i = 0; i < key.voters.n; i++)
	{
		since[seen.n] = now;
		for (int j = 0; j < worker.sync.seen.n; j++)
			if (pg_strcasecmp(worker.sync.seen.name[j], key.voters.name[i]) == 0)
				since[seen.n] = worker.sync.seen_since[j];
		sync_names_add(&seen, key.voters.name[i]);
	}
	worker.sync.seen = seen;
	memcpy(worker.sync.seen_since, since, sizeof(since));

	pg_ha_shared->sync_mode = worker.dyn.sync_mode;
	strlcpy(pg_ha_shared->sync_leader, key.present ? key.leader : "", PG_HA_NAME_LEN);
	pg_ha_shared->sync_quorum = key.quorum;
	pg_ha_shared->sync_count = seen.n;
	for (int i = 0; i < seen.n; i++)
	{
		strlcpy(pg_ha_shared->sync_names[i], seen.name[i], PG_HA_NAME_LEN);
		pg_ha_shared->sync_since[i] = since[i];
	}
	strlcpy(pg_ha_shared->sync_waiting, worker.is_leader ? worker.sync.waiting : "",
			sizeof(pg_ha_shared->sync_waiting));
}

/* ---------- primary side ---------- */

static void
current_time_text(char *buf, size_t len)
{
	strlcpy(buf, timestamptz_to_str(GetCurrentTimestamp()), len);
}

/*
 * `history` must have an entry for every promotion: the last-leader rule
 * (primary_cycle) and the fork-point check (check_divergence) trust it.  So
 * a leader on timeline T > 1 makes sure, every cycle until it succeeds,
 * that history records the switch into T, taken from this node's own
 * timeline history file.  A lost etcd write or a worker restart in the
 * middle of a promotion is thus repaired by a later cycle instead of being
 * skipped (a skipped entry once made the real leader demote itself after a
 * restart).  The compare on mod_revision keeps concurrent writers from
 * clobbering each other; a lost race is retried with the fresh value.
 */
static void
ensure_history_entry(const NodeSnapshot *snap)
{
	const EtcdKV *kv = cluster_get(&worker.view, "history");
	TimeLineID	parent;
	XLogRecPtr	switch_lsn;
	char		when[64];
	char	   *value;
	EtcdCompare cmp = {worker.history_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL,
	kv ? kv->mod_revision : 0};
	EtcdOp		put = {ETCD_OP_PUT, worker.history_key, NULL, 0, false};
	bool		succeeded;

	if (snap->timeline <= 1 ||
		cluster_history_timeline(&worker.view, 0, NULL) >= snap->timeline)
		return;
	if (!timeline_parent(snap->timeline, &parent, &switch_lsn))
	{
		remember_error("cannot read the history file of timeline %u", snap->timeline);
		return;
	}
	current_time_text(when, sizeof(when));
	value = cluster_history_append(&worker.view, parent, switch_lsn,
								   worker.promote_reason[0] ? worker.promote_reason : "promotion",
								   when, worker.node);
	put.value = value;
	if (kv == NULL)
		cmp.target = ETCD_CMP_CREATE;
	if (etcd_txn(worker.etcd, &cmp, 1, &put, 1, NULL, 0, &succeeded, NULL) != ETCD_OK)
		remember_error("cannot record promotion in history: %s", etcd_last_error(worker.etcd));
	else if (succeeded)
		ereport(LOG,
				(errmsg("pg_ha: history: timeline %u forked from %u at %X/%X, leader \"%s\"",
						snap->timeline, parent, LSN_FORMAT_ARGS(switch_lsn), worker.node)));
	else
		soon(FAST_CYCLE_US);	/* history changed under us: retry with the new value */
	pfree(value);
}

/* After this node's own promotion: count it and say so, once. */
static void
finish_promotion(const NodeSnapshot *snap)
{
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (strcmp(worker.promote_reason, "switchover") == 0)
		pg_ha_shared->switchovers++;
	else
		pg_ha_shared->failovers++;
	LWLockRelease(pg_ha_shared->lock);
	ereport(LOG,
			(errmsg("pg_ha: promoted: now leader on timeline %u (%s)",
					snap->timeline, worker.promote_reason)));
	worker.promoting = false;
	worker.promote_started = 0;
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
	if (SPI_execute_with_args("SELECT pg_catalog.max(flush_lsn) FROM pg_catalog.pg_stat_replication WHERE application_name OPERATOR(pg_catalog.=) $1",
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

/* Compare-and-delete of the failover key at the revision we acted on. */
static void
delete_request(int64 mod_revision, const char *why)
{
	if (ha_request_delete(worker.etcd, worker.failover_key, mod_revision))
		ereport(LOG, (errmsg("pg_ha: cleared the failover key: %s", why)));
}

/*
 * A malformed failover key is logged once per value (not once per cycle)
 * and never acted on.
 */
static void
report_bad_request(int64 mod_revision, const char *err)
{
	if (worker.bad_request_revision == mod_revision)
		return;
	worker.bad_request_revision = mod_revision;
	ereport(WARNING,
			(errmsg("pg_ha: ignoring malformed failover key %s: %s", worker.failover_key, err),
			 errhint("The leader deletes it; write a valid request with pg_ha.switchover() or pg_hactl.")));
}

/*
 * Gives a switchover up: the request says why (the caller of
 * pg_ha.switchover() reads it), the fence comes down, and this node leads on.
 */
static void
abort_handover(const char *fmt,...) pg_attribute_printf(1, 2);

static void
abort_handover(const char *fmt,...)
{
	va_list		ap;
	HaRequest	req;
	char		value[HA_REQUEST_MAX_JSON];
	EtcdCompare cmp = {worker.failover_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, worker.ho.revision};
	EtcdOp		put = {ETCD_OP_PUT, worker.failover_key, value, 0, false};
	bool		done;

	memset(&req, 0, sizeof(req));
	req.phase = HA_REQ_ABORTED;
	strlcpy(req.leader, worker.node, sizeof(req.leader));
	strlcpy(req.member, worker.ho.member, sizeof(req.member));
	va_start(ap, fmt);
	vsnprintf(req.reason, sizeof(req.reason), fmt, ap);
	va_end(ap);
	ereport(WARNING,
			(errmsg("pg_ha: switchover to \"%s\" abandoned: %s", worker.ho.member, req.reason)));
	if (ha_request_encode(&req, value, sizeof(value)) >= 0)
		(void) etcd_txn(worker.etcd, &cmp, 1, &put, 1, NULL, 0, &done, NULL);
	worker.ho.step = HO_NONE;
	fire(HA_EV_HANDOVER_ABORTED, req.reason);
}

static XLogRecPtr
last_checkpoint_lsn(void)
{
	ControlFileData *cf;
	bool		crc_ok;
	XLogRecPtr	lsn;

	LWLockAcquire(ControlFileLock, LW_SHARED);
	cf = get_controlfile(DataDir, &crc_ok);
	LWLockRelease(ControlFileLock);
	lsn = crc_ok ? cf->checkPoint : InvalidXLogRecPtr;
	pfree(cf);
	return lsn;
}

/*
 * Switchover, old leader's part, in steps that each return at once: the
 * lease keeps being renewed between them (a blocking wait here once let a
 * long checkpoint expire the lease mid-switchover).
 *
 *   begin:      the candidate must be a streaming replica within
 *               maximum_lag_on_failover (the walsender's view: exact);
 *               request a checkpoint, without waiting for it;
 *   checkpoint: once it is done (or after a third of the TTL), raise the
 *               fence and end client sessions: no more commits here.  The
 *               checkpoint keeps the old leader's replay short when it
 *               restarts as a standby, inside the write gap;
 *   catch-up:   once the candidate has flushed every byte of our WAL, one
 *               etcd transaction that checks we still hold the key and the
 *               request is unchanged deletes the leader key and marks the
 *               request handed over at our final position; then restart as
 *               the candidate's standby.  If it has not caught up in time
 *               the switchover is abandoned: the fence comes down and this
 *               node leads on.
 *
 * Why no acknowledged commit is lost: every commit acknowledged here was
 * flushed before the fence went up, so it is at or below the flush
 * position the candidate confirmed before the key was released; the
 * candidate promotes only after that, and no other node can take the key
 * meanwhile (the leader key exists until the hand-over transaction).
 */
static void
handover_begin(const char *member, int64 revision)
{
	MemberInfo	cand;
	XLogRecPtr	theirs;
	XLogRecPtr	mine = GetFlushRecPtr(NULL);

	if (!allowed(HA_EV_SWITCHOVER_DUE, member))
		return;
	memset(&worker.ho, 0, sizeof(worker.ho));
	strlcpy(worker.ho.member, member, sizeof(worker.ho.member));
	worker.ho.revision = revision;
	if (!cluster_member(&worker.view, member, &cand) || !cand.is_replica ||
		!conn_url_host_port(cand.conn_url, worker.ho.host, sizeof(worker.ho.host),
							worker.ho.port, sizeof(worker.ho.port)))
	{
		abort_handover("\"%s\" is not a running replica", member);
		return;
	}
	if (cand.nofailover || cand.failover_priority <= 0)
	{
		abort_handover("\"%s\" is tagged nofailover", member);
		return;
	}
	theirs = standby_flush_lsn(member);
	if (theirs == InvalidXLogRecPtr)
	{
		abort_handover("\"%s\" is not streaming from the leader", member);
		return;
	}
	if (mine > theirs && mine - theirs > (uint64) worker.dyn.maximum_lag_bytes)
	{
		abort_handover("\"%s\" is %llu bytes behind, more than pg_ha.maximum_lag_on_failover",
					   member, (unsigned long long) (mine - theirs));
		return;
	}
	fire(HA_EV_SWITCHOVER_DUE, member);
}

/*
 * HA_ACT_CHECKPOINT: the first step of a hand-over.  The checkpoint is
 * requested, not waited for: handover_step() watches it each cycle while
 * the lease keeps being renewed.
 */
static void
act_checkpoint(const char *detail)
{
	worker.ho.checkpoint_before = last_checkpoint_lsn();
	RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE);
	worker.ho.step = HO_CHECKPOINT;
	worker.ho.deadline = pg_ha_monotonic_us() + worker.lease_ttl * 1000000 / 3;
	ereport(LOG, (errmsg("pg_ha: switchover: checkpoint before handing leadership to \"%s\"", detail)));
	soon(FAST_CYCLE_US);
}

/*
 * A pg_ha.switchover() called on this node reads the hand-over from etcd
 * and answers; the demotion's restart would end its session before that.
 * Wait for its answer, bounded: the key is released already, so nothing
 * here holds up the new leader, and the fence stays up.
 */
static void
let_caller_answer(void)
{
	int64		give_up = pg_ha_monotonic_us() + CALLER_ANSWER_US;

	for (;;)
	{
		pid_t		caller;
		bool		answered;

		LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
		caller = pg_ha_shared->switchover_caller_pid;
		answered = pg_ha_shared->switchover_caller_answered;
		LWLockRelease(pg_ha_shared->lock);
		if (caller == 0 || kill(caller, 0) != 0 || pg_ha_monotonic_us() > give_up)
			return;
		if (answered)
		{
			/* the answer is on its way: the backend flushes it as it returns */
			pg_usleep(100 * 1000L);
			return;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static void
handover_step(void)
{
	HaRequest	req;
	int64		revision;
	XLogRecPtr	mine;
	XLogRecPtr	theirs;
	int64		now = pg_ha_monotonic_us();

	/* cancelled, or replaced: stop, whatever step we are at */
	if (cluster_request(&worker.view, &req, &revision, NULL, 0) != CLUSTER_REQUEST_VALID ||
		revision != worker.ho.revision)
	{
		abort_handover("the request was cancelled or replaced");
		return;
	}
	if (worker.ho.step == HO_CHECKPOINT)
	{
		if (last_checkpoint_lsn() == worker.ho.checkpoint_before && now < worker.ho.deadline)
		{
			soon(FAST_CYCLE_US);
			return;
		}
		ereport(LOG, (errmsg("pg_ha: switchover: handing leadership to \"%s\"", worker.ho.member)));
		raise_fence("switchover");
		terminate_client_backends();
		worker.ho.step = HO_CATCHUP;
		worker.ho.deadline = now + HANDOVER_CATCHUP_US;
	}

	/*
	 * The end of our WAL is where insertion stands, not only what was
	 * flushed: a fenced primary still inserts a few records (hint-bit page
	 * images of the worker's own catalog reads, standby snapshots).  Flush
	 * them so the candidate can have them; every byte it lacks at the
	 * hand-over is a byte this node must later get rid of with pg_rewind.
	 */
	XLogFlush(GetXLogInsertRecPtr());
	mine = GetFlushRecPtr(NULL);
	theirs = standby_flush_lsn(worker.ho.member);
	if (theirs == InvalidXLogRecPtr || theirs < mine)
	{
		if (now < worker.ho.deadline)
		{
			soon(FAST_CYCLE_US / 5);
			return;
		}
		abort_handover("\"%s\" flushed %X/%X of %X/%X within %d s",
					   worker.ho.member, LSN_FORMAT_ARGS(theirs), LSN_FORMAT_ARGS(mine),
					   (int) (HANDOVER_CATCHUP_US / 1000000));
		return;
	}

	{
		char		value[HA_REQUEST_MAX_JSON];
		EtcdCompare cmps[3] = {
			{worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0},
			{worker.leader_key, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, NULL, worker.lease_id},
			{worker.failover_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, worker.ho.revision},
		};
		EtcdOp		ops[2] = {
			{ETCD_OP_DELETE, worker.leader_key, NULL, 0, false},
			{ETCD_OP_PUT, worker.failover_key, value, 0, false},
		};
		bool		succeeded;

		if (!allowed(HA_EV_HANDED_OVER, worker.ho.member))
		{
			abort_handover("the protocol does not allow a hand-over in state \"%s\"",
						   ha_state_name(worker.state));
			return;
		}
		memset(&req, 0, sizeof(req));
		req.phase = HA_REQ_HANDED_OVER;
		strlcpy(req.leader, worker.node, sizeof(req.leader));
		strlcpy(req.member, worker.ho.member, sizeof(req.member));
		req.final_lsn = (uint64_t) mine;
		if (ha_request_encode(&req, value, sizeof(value)) < 0)
		{
			abort_handover("cannot encode the hand-over");
			return;
		}
		if (etcd_txn(worker.etcd, cmps, 3, ops, 2, NULL, 0, &succeeded, NULL) != ETCD_OK)
		{
			/* unknown outcome: stay fenced; the next cycle sees who holds the key */
			remember_error("switchover: cannot release the leader key: %s", etcd_last_error(worker.etcd));
			soon(FAST_CYCLE_US);
			return;
		}
		if (!succeeded)
		{
			/*
			 * The key is no longer ours, or the request was cancelled at the
			 * last moment.  Stay fenced: the next cycle confirms the key
			 * first, and lifts the fence only if this node still leads.
			 */
			ereport(LOG,
					(errmsg("pg_ha: switchover to \"%s\" stopped: the leader key or the request changed",
							worker.ho.member)));
			worker.ho.step = HO_NONE;
			soon(0);
			return;
		}
	}
	worker.is_leader = false;
	publish_lease_deadline();
	strlcpy(worker.demote.leader, worker.ho.member, sizeof(worker.demote.leader));
	strlcpy(worker.demote.host, worker.ho.host, sizeof(worker.demote.host));
	strlcpy(worker.demote.port, worker.ho.port, sizeof(worker.demote.port));
	worker.demote.caller_waits = true;
	fire(HA_EV_HANDED_OVER, "switchover");
}

/* The most advanced eligible replica, for a request that names no member. */
static bool
pick_switchover_candidate(MemberInfo *best)
{
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	int			n = cluster_members(&worker.view, members, PG_HA_MAX_MEMBERS);
	bool		found = false;

	for (int i = 0; i < n; i++)
	{
		if (!members[i].valid || !members[i].is_replica || !members[i].streaming ||
			members[i].nofailover || members[i].failover_priority <= 0 ||
			strcmp(members[i].name, worker.node) == 0)
			continue;
		if (!found || failover_better(&members[i], best))
			*best = members[i];
		found = true;
	}
	return found;
}

/*
 * The failover key, as the leader sees it.  Like Patroni's leader, it
 * deletes requests that are invalid, stale or done, so none can linger
 * and promote someone later (a leftover request once promoted a lagging
 * replica and lost 50,000 committed rows):
 *   - malformed: logged once, deleted;
 *   - handed over, confirmed, shutdown note: a previous term's, deleted;
 *   - aborted: left one TTL for the caller to read (it polls every 100 ms),
 *     then deleted;
 *   - requested, naming another node as leader, or this node as member:
 *     stale or moot, deleted;
 *   - requested of this leader (Patroni's {"member": ...} included): once
 *     its time has come, the hand-over starts.
 */
static void
leader_handle_request(void)
{
	HaRequest	req;
	int64		revision;
	char		err[256];
	const char *member;
	MemberInfo	best;

	switch (cluster_request(&worker.view, &req, &revision, err, sizeof(err)))
	{
		case CLUSTER_REQUEST_NONE:
			return;
		case CLUSTER_REQUEST_INVALID:
			report_bad_request(revision, err);
			delete_request(revision, "malformed");
			return;
		case CLUSTER_REQUEST_VALID:
			break;
	}
	if (req.phase == HA_REQ_ABORTED)
	{
		int64		now = pg_ha_monotonic_us();

		if (worker.aborted_revision != revision)
		{
			worker.aborted_revision = revision;
			worker.aborted_seen_at = now;
		}
		if (now - worker.aborted_seen_at < worker.lease_ttl * 1000000)
			soon(worker.lease_ttl * 1000000 / 3);
		else
			delete_request(revision, "an aborted request, read by its caller by now");
		return;
	}
	if (req.phase != HA_REQ_REQUESTED)
	{
		delete_request(revision, psprintf("%s request of an earlier term", ha_request_phase_name(req.phase)));
		return;
	}
	if (req.leader[0] != '\0' && strcmp(req.leader, worker.node) != 0)
	{
		delete_request(revision, psprintf("it names \"%s\" as leader, this node leads", req.leader));
		return;
	}
	if (strcmp(req.member, worker.node) == 0)
	{
		delete_request(revision, "it names the current leader as candidate");
		return;
	}
	if (worker.dyn.pause)
		return;
	if (req.scheduled)
	{
		int64		now_us = (int64) time(NULL) * 1000000;	/* wall clock: scheduled_at is one */

		if (req.scheduled_at_us > now_us)
		{
			soon(Min(worker.lease_ttl * 1000000 / 3, req.scheduled_at_us - now_us));
			return;
		}
	}
	member = req.member;
	if (member[0] == '\0')
	{
		if (!pick_switchover_candidate(&best))
		{
			worker.ho.revision = revision;
			worker.ho.member[0] = '\0';
			abort_handover("no replica can take over");
			return;
		}
		member = best.name;
	}
	handover_begin(member, revision);
}

/* A primary that lost the race to another node: fence, then demote. */
static void
yield_to(const char *leader, const char *why)
{
	MemberInfo	m;

	raise_fence(why);
	if (worker.dyn.pause)
		return;					/* paused: stay fenced, do not demote */
	memset(&worker.demote, 0, sizeof(worker.demote));
	strlcpy(worker.demote.leader, leader, sizeof(worker.demote.leader));
	if (!cluster_member(&worker.view, leader, &m) ||
		!conn_url_host_port(m.conn_url, worker.demote.host, sizeof(worker.demote.host),
							worker.demote.port, sizeof(worker.demote.port)))
		worker.demote.host[0] = worker.demote.port[0] = '\0';
	fire(HA_EV_DEMOTE, why);	/* refused: stays fenced */
}

/*
 * HA_ACT_RESTART_AS_STANDBY: point postgres at the new leader (when known)
 * and restart it as a standby.  The fence is up and the key is not ours.
 * Does not return.
 */
static void
act_restart_as_standby(const char *detail)
{
	bool		known = worker.demote.host[0] != '\0' && worker.demote.port[0] != '\0';

	if (worker.demote.caller_waits)
		let_caller_answer();
	demote_and_restart(worker.demote.leader[0] ? worker.demote.leader : NULL,
					   known ? worker.demote.host : NULL, known ? worker.demote.port : NULL,
					   detail);
}

static bool
primary_cycle(const NodeSnapshot *snap)
{
	const char *leader;

	if (!check_initialize_key())
		return worker.state != HA_MISCONFIGURED ? false : true;

	if (!worker.is_leader)
	{
		TimeLineID	cluster_tl = cluster_history_timeline(&worker.view, 0, NULL);

		worker.ho.step = HO_NONE;
		leader = cluster_leader(&worker.view);
		if (leader[0] != '\0' && strcmp(leader, worker.node) != 0)
		{
			publish_member(snap, false);
			fire(HA_EV_LEADER_KEY_TAKEN, leader);
			yield_to(leader, psprintf("\"%s\" holds the leader key", leader));
			return true;
		}
		if (cluster_tl > snap->timeline)
		{
			/* a stale former leader: the cluster moved on without us */
			char	   *why = psprintf("the cluster is on timeline %u, this node on %u",
									   cluster_tl, snap->timeline);

			remember_error("not taking the leader key: %s", why);
			fire(HA_EV_LEADER_KEY_TAKEN, why);
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
				fire(HA_EV_LEADER_KEY_TAKEN, why);
				yield_to("", why);
				return true;
			}
		}
		if (!acquire_leader_key())
			return false;
		if (!worker.is_leader)
		{
			/* someone else won: look again at once (held back: soon) */
			soon(worker.fs_held_back ? ETCD_RETRY_US : 0);
			return true;
		}
	}

	if (worker.promoting)
		finish_promotion(snap);
	ensure_history_entry(snap);

	/* we hold the key: writes are allowed again, unless a hand-over runs */
	publish_lease_deadline();
	if (worker.ho.step == HO_NONE)
		fire(HA_EV_GOT_LEADER_KEY, worker.leader_key);
	if (!publish_member(snap, false))
		return false;
	if (!worker.is_leader)
		return true;
	if (worker.ho.step != HO_NONE)
	{
		handover_step();
		return true;
	}
	sync_leader_step();
	failsafe_publish_members();
	leader_handle_request();
	return true;
}

/* ---------- standby side ---------- */

static void
begin_promotion(const char *reason)
{
	strlcpy(worker.promote_reason, reason, sizeof(worker.promote_reason));
	fire(HA_EV_WON_RACE, reason);
}

/*
 * HA_ACT_PROMOTE: this node holds the leader key; end recovery (unless the
 * startup process already has the request: a worker restarted mid-way).
 */
static void
act_promote(const char *detail)
{
	worker.promoting = true;
	worker.promote_started = pg_ha_monotonic_us();
	worker.promote_cancelled_queries = false;
	if (PromoteIsTriggered() || CheckPromoteSignal())
		return;
	ereport(LOG, (errmsg("pg_ha: promoting: took the leader key (%s)", detail)));
	promote_now();
	soon(FAST_CYCLE_US);
}

/*
 * A promotion is bounded.  The startup process may be slow to end recovery
 * (a large replay backlog) or blocked (a query conflicting with replay
 * under max_standby_streaming_delay = -1) while this node holds the key and
 * nobody writes.  After one TTL, client sessions are ended so that no
 * query can hold replay back; after three, the key is given up so that
 * another node can take over.  Should recovery end after that, this node is
 * a primary without the key: fenced, and it demotes (primary_cycle).
 */
static void
watch_promotion(void)
{
	int64		elapsed = pg_ha_monotonic_us() - worker.promote_started;

	if (elapsed > worker.lease_ttl * 1000000 && !worker.promote_cancelled_queries)
	{
		ereport(LOG,
				(errmsg("pg_ha: promotion still running after %d s: ending client sessions that may hold replay back",
						(int) (elapsed / 1000000))));
		terminate_client_backends();
		worker.promote_cancelled_queries = true;
	}
	if (elapsed > 3 * worker.lease_ttl * 1000000 && worker.is_leader)
	{
		ereport(WARNING,
				(errmsg("pg_ha: promotion did not finish within %d s: giving the leader key up",
						(int) (elapsed / 1000000))));
		(void) etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node);
		worker.is_leader = false;
		worker.promoting = false;
		publish_lease_deadline();
	}
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
	/* our own postmaster's death ends the stream too */
	exit_if_orphaned();
	return state != WALRCV_STREAMING && snap->receive_lsn >= final_lsn;
}

/*
 * A standby races only for the cluster it belongs to: `initialize` must
 * exist and hold this node's system identifier.  Without that check a
 * standby of another database, or a node started with the wrong namespace
 * (which sees an empty cluster), promoted itself beside the real leader.
 * Only a primary initializes a cluster.
 */
static bool
standby_may_race(char *why, size_t len)
{
	const char *init = cluster_initialize(&worker.view);
	char		sysid[32];

	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	if (init == NULL)
	{
		snprintf(why, len, "no cluster is initialized under %s (no initialize key); only a primary initializes one",
				 worker.prefix);
		return false;
	}
	if (strcmp(init, sysid) != 0)
	{
		snprintf(why, len, "the initialize key holds system identifier %s, this node has %s",
				 init, sysid);
		return false;
	}
	return true;
}

/* The refusal to race, logged when it changes rather than every cycle. */
static void
refuse_race(const char *why)
{
	remember_error("not taking over: %s", why);
	if (strcmp(worker.race_refusal, why) != 0)
	{
		strlcpy(worker.race_refusal, why, sizeof(worker.race_refusal));
		ereport(LOG, (errmsg("pg_ha: not taking over: %s", why)));
	}
}

/*
 * The last leader's position, for maximum_lag_on_failover: the larger of
 * the status key's optime and the leader's member key xlog_location, as
 * last seen while the leader was there (its member key vanishes with its
 * lease, at the same time as the leader key).
 */
static XLogRecPtr
last_leader_position(void)
{
	XLogRecPtr	optime = cluster_optime(&worker.view);

	return Max(optime, worker.leader_last_lsn);
}

/*
 * Is the previous leader's write authority provably over?  Its deadline
 * ends no later than its lease, and its member key carries the same lease.
 * When the leader key expired, the member key went with it.  When the key
 * was deleted some other way (etcdctl del, patronictl remove, an etcd
 * restore) the old leader may still hold a live lease and, cut from etcd,
 * keep writing until its deadline: racing then would make two writable
 * primaries.  So a replica races only once the old leader's member key is
 * gone, carries another lease (its worker restarted), or says it is a
 * replica (it demoted).  A clean stop revokes the lease, so it does not
 * wait; a switchover hands the key over explicitly and does not come here.
 */
static bool
previous_leader_gone(char *why, size_t len)
{
	char		suffix[PG_HA_NAME_LEN + 16];
	const EtcdKV *kv;
	MemberInfo	m;

	if (worker.last_leader[0] == '\0' || strcmp(worker.last_leader, worker.node) == 0)
		return true;
	snprintf(suffix, sizeof(suffix), "members/%s", worker.last_leader);
	kv = cluster_get(&worker.view, suffix);
	if (kv == NULL || kv->lease != worker.last_leader_lease ||
		(cluster_member(&worker.view, worker.last_leader, &m) && m.is_replica))
		return true;
	snprintf(why, len, "the leader key of \"%s\" was removed while its lease is alive; waiting for the lease to end or for \"%s\" to demote",
			 worker.last_leader, worker.last_leader);
	return false;
}

/*
 * Leader key absent: decide whether to race for it.  Every replica
 * publishes a fresh position, waits for its peers' (bounded), and only the
 * best eligible one takes the key (failover_decide).  A request in the
 * failover key changes that only in three ways:
 *   - handed over to member M (a switchover whose old leader saw M flush
 *     its final position): M takes the key, after the old leader confirmed
 *     where its WAL ends (bounded by one TTL); the others give M one TTL;
 *   - Patroni's manual failover {"member": M}: M wins ties; it never wins
 *     over a more advanced eligible replica unless the request is forced;
 *   - the shutdown note of a leader that stopped cleanly: wait (bounded)
 *     for its stream to end, so the next leader forks after its shutdown
 *     checkpoint and it can follow without pg_rewind.
 * A switchover that was requested but never handed over means nothing once
 * the leader is gone: it promotes nobody.
 */
static void
failover_race(const NodeSnapshot *snap)
{
	HaRequest	req;
	int64		revision;
	char		err[256];
	ClusterRequestStatus rs;
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	MemberInfo	peers[PG_HA_MAX_MEMBERS];
	int			n;
	int			npeers = 0;
	bool		all_fresh = true;
	RaceInput	in;
	char		why[256];
	int64		now = pg_ha_monotonic_us();
	const char *preferred = NULL;
	bool		forced = false;

	if (!standby_may_race(why, sizeof(why)))
	{
		refuse_race(why);
		soon(FAST_CYCLE_US * 4);
		return;
	}
	rs = cluster_request(&worker.view, &req, &revision, err, sizeof(err));
	if (rs == CLUSTER_REQUEST_INVALID)
		report_bad_request(revision, err);
	if (rs == CLUSTER_REQUEST_VALID &&
		(req.phase == HA_REQ_HANDED_OVER || req.phase == HA_REQ_FINAL_CONFIRMED))
	{
		/*
		 * The old leader released the key to req.member itself, after it
		 * saw the member flush all its WAL: no lease to wait for.  The
		 * member waits (one TTL at most) until the old leader, restarted
		 * as a standby, confirmed where its WAL really ends and it has
		 * received that far (streaming the tail from it), so the old
		 * leader can follow without pg_rewind.
		 */
		if (worker.race_started == 0)
			worker.race_started = now;
		if (strcmp(req.member, worker.node) == 0)
		{
			if ((req.phase != HA_REQ_FINAL_CONFIRMED ||
				 Max(snap->receive_lsn, snap->replay_lsn) < (XLogRecPtr) req.final_lsn) &&
				now - worker.race_started < worker.lease_ttl * 1000000)
			{
				soon(FAST_CYCLE_US / 5);
				return;
			}
			if (!sync_ready_to_promote() || !allowed(HA_EV_WON_RACE, "switchover") ||
				!acquire_leader_key())
				return;
			if (worker.is_leader && sync_claim_or_release())
				begin_promotion("switchover");
			return;
		}
		if (now - worker.race_started < worker.lease_ttl * 1000000)
		{
			soon(FAST_CYCLE_US * 4);	/* the key was handed to someone else */
			return;
		}
	}
	if (rs == CLUSTER_REQUEST_VALID && req.phase == HA_REQ_REQUESTED && req.leader[0] == '\0' &&
		req.member[0] != '\0')
	{
		preferred = req.member;
		forced = req.force;
	}
	/*
	 * Paused: no automatic failover.  An operator's failover request still
	 * lets the member it names decide (as Patroni allows a failover to a
	 * named candidate while paused); nobody else races.
	 */
	if (worker.dyn.pause &&
		(preferred == NULL || strcmp(preferred, worker.node) != 0))
		return;
	if (!previous_leader_gone(why, sizeof(why)))
	{
		refuse_race(why);
		soon(FAST_CYCLE_US * 4);
		return;
	}

	if (rs == CLUSTER_REQUEST_VALID && req.phase == HA_REQ_SHUTDOWN &&
		!old_leader_stream_ended(snap, (XLogRecPtr) req.final_lsn) &&
		(worker.race_started == 0 || now - worker.race_started < SHUTDOWN_WAIT_TTLS * worker.lease_ttl * 1000000))
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
	in.leader_optime = last_leader_position();
	in.cluster_timeline = cluster_history_timeline(&worker.view, 0, NULL);
	in.maximum_lag_bytes = (uint64) worker.dyn.maximum_lag_bytes;
	in.preferred = preferred;
	in.forced = forced && strcmp(preferred, worker.node) == 0;

	/* a forced request for a healthy peer: that peer takes over, not us */
	if (forced && !in.forced)
	{
		for (int i = 0; i < npeers; i++)
			if (strcmp(peers[i].name, preferred) == 0 && peers[i].valid &&
				!peers[i].nofailover && peers[i].failover_priority > 0 &&
				now - worker.race_started < worker.lease_ttl * 1000000)
			{
				soon(FAST_CYCLE_US * 4);
				return;
			}
	}

	if (!sync_race_gate(snap, &in, peers, &npeers, why, sizeof(why)))
	{
		refuse_race(why);
		sync_republish_position(snap, now);
		soon(FAST_CYCLE_US * 4);
		return;
	}
	switch (failover_decide(&in, why, sizeof(why)))
	{
		case RACE_TAKE:
			if (!sync_ready_to_promote() || !allowed(HA_EV_WON_RACE, why) || !acquire_leader_key())
				return;
			if (worker.is_leader && sync_claim_or_release())
				begin_promotion(preferred && strcmp(preferred, worker.node) == 0 ?
								"manual failover" : "failover");
			break;
		case RACE_DEFER:
			/* the better candidate gets one TTL; then everyone races again */
			if (now - worker.race_started > worker.lease_ttl * 1000000)
				worker.race_started = 0;
			soon(FAST_CYCLE_US * 4);
			break;
		case RACE_INELIGIBLE:
			refuse_race(why);
			break;
	}
}

/*
 * The member this standby streams from: the leader, or the member
 * pg_ha.replicatefrom names while ha_upstream.c's rules allow it.  Logs
 * when the named member cannot be used, once per change of reason.
 */
static bool
choose_upstream(const char *leader, MemberInfo *out)
{
	MemberInfo	lm;
	MemberInfo	named;
	const char *want = pg_ha_replicatefrom ? pg_ha_replicatefrom : "";
	bool		have_named;
	char		why[128];

	if (!cluster_member(&worker.view, leader, &lm))
		return false;
	have_named = want[0] && cluster_member(&worker.view, want, &named);
	if (upstream_decide(worker.node, &lm, want, have_named ? &named : NULL,
						why, sizeof(why)) == UPSTREAM_NAMED)
	{
		*out = named;
		worker.upstream_refusal[0] = '\0';
		return true;
	}
	if (why[0] && strcmp(why, worker.upstream_refusal) != 0)
		ereport(LOG,
				(errmsg("pg_ha: not streaming from replicatefrom member \"%s\": %s", want, why),
				 errdetail("This node streams from the leader \"%s\" until that member qualifies.", leader)));
	strlcpy(worker.upstream_refusal, why, sizeof(worker.upstream_refusal));
	*out = lm;
	return true;
}

/* worker.followed while pg_ha.nostream is on: no member has this name */
#define NOSTREAM "(nostream)"

/* Point primary_conninfo at the upstream if it does not already. */
static void
follow(const char *leader)
{
	MemberInfo	m;
	char		host[256];
	char		port[16];

	/*
	 * nostream: replay only what restore_command brings.  An empty
	 * primary_conninfo stops the WAL receiver (reloadable in PG15).
	 */
	if (pg_ha_nostream)
	{
		/* once: the reload that empties it reaches this process later */
		if (PrimaryConnInfo && PrimaryConnInfo[0] && strcmp(worker.followed, NOSTREAM) != 0)
			stop_streaming();
		strlcpy(worker.followed, NOSTREAM, sizeof(worker.followed));
		return;
	}
	if (!choose_upstream(leader, &m) ||
		!conn_url_host_port(m.conn_url, host, sizeof(host), port, sizeof(port)))
		return;
	if (primary_conninfo_points_at(host, port))
	{
		strlcpy(worker.followed, m.name, sizeof(worker.followed));
		return;
	}
	if (strcmp(worker.followed, m.name) == 0 && PrimaryConnInfo && PrimaryConnInfo[0])
		return;					/* already asked; the reload is on its way */
	follow_upstream(m.name, strcmp(m.name, leader) == 0, host, port);
	strlcpy(worker.followed, m.name, sizeof(worker.followed));
}

/*
 * Where this standby's history left the cluster's, or InvalidXLogRecPtr if
 * it did not: judged by fork points, not by timeline numbers alone, since
 * two forks can carry the same number (a promotion that stalled past the
 * TTL while another node promoted too).  The cluster's history key records
 * where each timeline forked off; this node's own timeline history file
 * says where its timeline did.
 *   - our timeline T > 1 forked at a different position than the cluster's
 *     T did: we are on another branch, diverged from where the earlier of
 *     the two forks happened;
 *   - the leader is on a newer timeline that forked off ours at F, and we
 *     replayed past F: we wrote WAL the leader lacks.
 */
static XLogRecPtr
divergence_point(const NodeSnapshot *snap, const MemberInfo *leader)
{
	XLogRecPtr	fork;
	TimeLineID	parent;
	XLogRecPtr	ours;

	if (snap->timeline > 1 && cluster_history_timeline(&worker.view, 0, NULL) >= snap->timeline &&
		timeline_parent(snap->timeline, &parent, &ours))
	{
		XLogRecPtr	theirs;

		cluster_history_timeline(&worker.view, parent, &theirs);
		if (theirs != InvalidXLogRecPtr && ours != theirs)
			return Min(ours, theirs);
	}
	if (leader->timeline <= snap->timeline)
		return InvalidXLogRecPtr;
	cluster_history_timeline(&worker.view, snap->timeline, &fork);
	if (fork == InvalidXLogRecPtr || snap->replay_lsn <= fork)
		return InvalidXLogRecPtr;
	return fork;
}

/*
 * A standby that diverged from the leader can never follow it: only
 * pg_rewind (or a fresh clone), which needs postgres stopped, can fix that.
 * Returns true while this node looks diverged.  The worker leaves
 * a marker in the data directory and shuts postgres down; the service
 * manager's restart runs `pg_hactl rejoin --if-needed` (ExecStartPre),
 * which rewinds it.  The condition must hold for two renew intervals, so a
 * transient view of etcd cannot shut a healthy standby down.
 */
static bool
check_divergence(const NodeSnapshot *snap, const char *leader)
{
	MemberInfo	m;
	XLogRecPtr	fork;
	int64		now = pg_ha_monotonic_us();
	char		path[MAXPGPATH];
	FILE	   *f;
	bool		same_number;

	if (!cluster_member(&worker.view, leader, &m) || worker.dyn.pause ||
		(fork = divergence_point(snap, &m)) == InvalidXLogRecPtr)
	{
		worker.diverged_since = 0;
		return false;
	}
	if (worker.diverged_since == 0)
	{
		worker.diverged_since = now;
		return true;
	}
	if (now - worker.diverged_since < 2 * worker.lease_ttl * 1000000 / 3)
		return true;

	/*
	 * pg_rewind refuses a source on the same timeline number as the target
	 * ("no rewind required"), however different their histories: a fork
	 * that carries the leader's own timeline number can only be cloned
	 * afresh, and the marker tells pg_hactl so.
	 */
	if (!allowed(HA_EV_DIVERGED, leader))
		return true;
	same_number = m.timeline == snap->timeline;
	snprintf(path, sizeof(path), "%s/pg_ha.rejoin", DataDir);
	f = AllocateFile(path, "w");
	if (f == NULL ||
		fprintf(f, "leader=%s\nfork_lsn=%X/%X\n%s", leader, LSN_FORMAT_ARGS(fork),
				same_number ? "reclone=1\n" : "") < 0 ||
		FreeFile(f) != 0)
	{
		remember_error("cannot write %s: %m", path);
		return true;
	}
	ereport(LOG,
			(errmsg("pg_ha: diverged: this node (timeline %u, replayed %X/%X) left the history of leader \"%s\" (timeline %u) at %X/%X; shutting down for pg_rewind",
					snap->timeline, LSN_FORMAT_ARGS(snap->replay_lsn), leader, m.timeline,
					LSN_FORMAT_ARGS(fork)),
			 errhint("The service manager restarts postgres; its ExecStartPre \"pg_hactl rejoin --if-needed\" rewinds this node.")));
	fire(HA_EV_DIVERGED, leader);
	return true;
}

/*
 * HA_ACT_STOP_FOR_REWIND: a fast shutdown; the marker written before
 * firing tells pg_hactl rejoin what to do at the next start.
 */
static void
act_stop_for_rewind(const char *detail)
{
	if (kill(PostmasterPid, SIGINT) != 0)
		remember_error("cannot signal the postmaster: %m");
}

/*
 * Switchover, old leader's last part, once it runs as a standby: its WAL
 * can no longer grow, so where it ends is final.  The WAL receiver starts
 * only after the startup process has replayed every local record, so from
 * then on the replay position is that end.  Publish it: the candidate
 * promotes once it has replayed that far, which lets this node follow
 * without pg_rewind even if a hint-bit page image or a background record
 * slipped in after the hand-over measured its position.  (Acknowledged
 * commits do not depend on this step: the candidate flushed every one
 * before the key was released.)
 */
static void
confirm_final_position(const NodeSnapshot *snap)
{
	HaRequest	req;
	int64		revision;
	WalRcvState state;
	char		value[HA_REQUEST_MAX_JSON];
	EtcdCompare cmp = {worker.failover_key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, 0};
	EtcdOp		put = {ETCD_OP_PUT, worker.failover_key, value, 0, false};
	bool		done;

	if (cluster_request(&worker.view, &req, &revision, NULL, 0) != CLUSTER_REQUEST_VALID ||
		req.phase != HA_REQ_HANDED_OVER || strcmp(req.leader, worker.node) != 0)
		return;
	SpinLockAcquire(&WalRcv->mutex);
	state = WalRcv->walRcvState;
	SpinLockRelease(&WalRcv->mutex);
	if (state == WALRCV_STOPPED)
	{
		soon(FAST_CYCLE_US / 5);	/* still replaying local WAL */
		return;
	}
	req.phase = HA_REQ_FINAL_CONFIRMED;
	req.final_lsn = (uint64_t) Max(snap->replay_lsn, (XLogRecPtr) req.final_lsn);
	if (ha_request_encode(&req, value, sizeof(value)) < 0)
		return;
	cmp.number = revision;
	if (etcd_txn(worker.etcd, &cmp, 1, &put, 1, NULL, 0, &done, NULL) == ETCD_OK && done)
		ereport(LOG,
				(errmsg("pg_ha: switchover: this node's WAL ends at %X/%X; \"%s\" promotes once it has it",
						LSN_FORMAT_ARGS((XLogRecPtr) req.final_lsn), req.member)));
}

/*
 * The leader key holds our name while we are a standby.  Either a
 * promotion of ours is under way (the worker restarted in the middle of
 * it: the startup process already has the promote request) and the key is
 * re-attached to our lease, or it is a leftover of our life as a primary
 * and is released.  Deleting it during our own promotion would let a
 * second node promote on the same timeline number.
 */
static void
own_key_as_standby(const NodeSnapshot *snap)
{
	if (PromoteIsTriggered() || CheckPromoteSignal())
	{
		if (!allowed(HA_EV_WON_RACE, "resuming a promotion already under way") ||
			!acquire_leader_key())
			return;
		if (worker.is_leader && !worker.promoting)
		{
			strlcpy(worker.promote_reason, "failover", sizeof(worker.promote_reason));
			fire(HA_EV_WON_RACE, "resuming a promotion already under way");
		}
		return;
	}
	if (etcd_delete_if_value(worker.etcd, worker.leader_key, worker.node) == ETCD_OK)
		ereport(LOG, (errmsg("pg_ha: released a leader key left from before this node became a standby")));
	worker.is_leader = false;
}

static bool
standby_cycle(const NodeSnapshot *snap)
{
	const char *leader = cluster_leader(&worker.view);
	const char *init = cluster_initialize(&worker.view);
	char		sysid[32];

	/*
	 * A standby of another database in this cluster's keys (a replica of
	 * some other primary, pointed here by mistake) must touch nothing: not
	 * race, not follow (its WAL receiver cannot), and above all not be
	 * "rejoined", which would replace its data with a clone of ours.
	 */
	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	if (init != NULL && strcmp(init, sysid) != 0)
	{
		remember_error("etcd key %s holds system identifier %s, this node has %s",
					   worker.initialize_key, init, sysid);
		fire(HA_EV_BAD_CONFIG, worker.last_error);
		return true;
	}

	confirm_final_position(snap);

	if (!publish_member(snap, false))
		return false;
	if (worker.promoting)
	{
		watch_promotion();
		return true;
	}

	if (leader[0] == '\0')
	{
		fire(HA_EV_LEADER_GONE, NULL);
		failover_race(snap);
		return true;
	}
	if (strcmp(leader, worker.node) == 0)
	{
		own_key_as_standby(snap);
		return true;
	}
	worker.race_started = 0;
	worker.race_refusal[0] = '\0';
	/* following again: a later race may claim the key anew */
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pg_ha_shared->failsafe_key_claimed = false;
	LWLockRelease(pg_ha_shared->lock);
	{
		MemberInfo	m;

		/* remember the leader's position: its key vanishes with it */
		if (cluster_member(&worker.view, leader, &m) && m.lsn > worker.leader_last_lsn)
			worker.leader_last_lsn = m.lsn;
		remember_leader();
	}
	fire(HA_EV_FOLLOWING, leader);

	/*
	 * Never point a diverged standby at the leader: when both histories
	 * carry the same timeline number the WAL receiver would write the
	 * leader's WAL over this node's own segments, and leave a data
	 * directory that neither recovers nor rewinds.
	 */
	if (!check_divergence(snap, leader))
		follow(leader);
	return true;
}

/* ---------- failsafe mode (ha_failsafe.c argues its safety) ---------- */

/*
 * Is failsafe mode usable here?  On without pg_ha.api_auth_file it is not
 * (no member could check who asks, nor this node prove who it is): the
 * leader fences as with off, and says so once.
 */
static bool
failsafe_usable(void)
{
	static bool warned = false;

	if (!worker.dyn.failsafe_mode)
		return false;
	if (pg_ha_api_auth_file != NULL && pg_ha_api_auth_file[0] != '\0')
	{
		warned = false;
		return true;
	}
	if (!warned)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: failsafe mode is disabled: pg_ha.failsafe_mode is on but pg_ha.api_auth_file is not set"),
				 errdetail("Members confirm a leader only over the authenticated HTTP API; without credentials this leader fences when etcd is unreachable, as with failsafe_mode off."),
				 errhint("Set pg_ha.api_auth_file on every member to a file with the same first \"username:password\" line, and reload.")));
	warned = true;
	return false;
}

/* Adds the members of `add` that `into` lacks (bounded). */
static void
failsafe_merge(FailsafeMember *into, int *n, const FailsafeMember *add, int nadd)
{
	for (int i = 0; i < nadd && *n < FAILSAFE_MAX_MEMBERS; i++)
		if (!failsafe_members_include(into, *n, add[i].name))
			into[(*n)++] = add[i];
}

/*
 * Leader, each cycle with etcd: the failsafe key lists every member (this
 * node too: only a listed node may race in failsafe mode) with its API
 * URL, and the worker keeps the same list, without itself, as the members
 * a failsafe round must hear from.  Until a write is known to have landed
 * the worker asks the old and new lists together: never fewer members than
 * the key may list.  With failsafe off the key goes, so that no replica is
 * held back by a list nobody maintains.
 */
static void
failsafe_publish_members(void)
{
	const EtcdKV *kv = cluster_get(&worker.view, FAILSAFE_KEY);
	char	   *key = psprintf("%s%s", worker.prefix, FAILSAFE_KEY);
	MemberInfo *mi = palloc(sizeof(MemberInfo) * PG_HA_MAX_MEMBERS);
	FailsafeMember *all = palloc(sizeof(FailsafeMember) * FAILSAFE_MAX_MEMBERS);
	FailsafeMember *others = palloc(sizeof(FailsafeMember) * FAILSAFE_MAX_MEMBERS);
	char	   *value = palloc(PG_HA_MEMBERS_JSON_LEN);
	int			n = cluster_members(&worker.view, mi, PG_HA_MAX_MEMBERS);
	int			nothers = 0;
	bool		same;

	if (!failsafe_usable())
	{
		if (kv != NULL)
			(void) etcd_delete(worker.etcd, key, false);
		worker.fs_published = false;
		return;
	}
	n = Min(n, FAILSAFE_MAX_MEMBERS);
	for (int i = 0; i < n; i++)
	{
		strlcpy(all[i].name, mi[i].name, PG_HA_NAME_LEN);
		strlcpy(all[i].api_url, mi[i].api_url, FAILSAFE_URL_LEN);
		if (strcmp(mi[i].name, worker.node) != 0)
			others[nothers++] = all[i];
	}
	if (!failsafe_members_include(all, n, worker.node) || !failsafe_members_encode(all, n, value, PG_HA_MEMBERS_JSON_LEN))
		return;					/* our own member key not seen yet: next cycle */
	same = kv != NULL && kv->value != NULL && strcmp(kv->value, value) == 0;
	if (!same)
	{
		/* asked from now on, whether or not the write lands */
		failsafe_merge(worker.fs_members, &worker.fs_n, others, nothers);
		if (etcd_put(worker.etcd, key, value, 0) != ETCD_OK)
			return;
		ereport(LOG, (errmsg("pg_ha: failsafe: members published: %s", value)));
	}
	memcpy(worker.fs_members, others, sizeof(FailsafeMember) * nothers);
	worker.fs_n = nothers;
	worker.fs_published = true;
	worker.fs_outcome[0] = '\0';	/* the next outage logs its first round */
}

/*
 * Leader whose cycle failed without etcd saying the key is gone (is_leader
 * still set: an answer "not your key", or "lease expired" with no cover to
 * take the key back on, clears it first):
 * one round of POST /failsafe; the deadline moves only if every member
 * confirmed, and only as far as ha_failsafe.c allows.
 */
static void
failsafe_round(void)
{
	FailsafeAnswer answers[FAILSAFE_MAX_MEMBERS];
	int64		ttl_us = worker.lease_ttl * 1000000;
	int			timeout_ms = (int) Max(100, Min(2000, ttl_us / 1000 / 6));
	int64		t_send;
	int64		confirmed;
	int64		deadline;
	char		why[128];

	if (!worker.is_leader || !worker.fs_published || !failsafe_usable())
		return;
	t_send = pg_ha_monotonic_us();	/* before any request leaves */

	/*
	 * Authority already gone (a round missed someone, or none ran in
	 * time): stop asking.  Answers would renew the members' promises and
	 * keep them from taking over a cluster in which nobody may write.
	 */
	if (!pg_ha_lease_valid(t_send))
		return;
	failsafe_call_members(worker.node, worker.fs_members, worker.fs_n, timeout_ms, answers);
	/* 0 unless every member confirmed; then what their promises cover */
	confirmed = failsafe_extended_deadline(0, t_send, ttl_us, worker.fs_members, answers,
										   worker.fs_n, why, sizeof(why));
	worker.fs_confirmed_until = Max(worker.fs_confirmed_until, confirmed);
	deadline = Max(worker.lease_deadline, confirmed);
	if (deadline > worker.lease_deadline)
	{
		worker.lease_deadline = deadline;
		publish_lease_deadline();
	}
	if (strcmp(why, worker.fs_outcome) != 0)
	{
		strlcpy(worker.fs_outcome, why, sizeof(worker.fs_outcome));
		ereport(LOG,
				(errmsg("pg_ha: failsafe: %s; lease deadline in %lld ms", why,
						(long long) (deadline - pg_ha_monotonic_us()) / 1000)));
	}
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

/* ---------- scheduled restart (POST /restart with "schedule") ---------- */

/*
 * Back from a restart, with the member key published again: the others
 * stop waiting for this node (restarting/<node>, control_worker.c).  Once
 * per start; a key that is not there costs one request.
 */
static void
clear_restarting_key(void)
{
	if (etcd_delete(worker.etcd, pg_ha_key(psprintf("restarting/%s", worker.node)), false) == ETCD_OK)
		worker.restarting_key_cleared = true;
}

/*
 * Why the scheduled restart must wait although its time has come, or
 * NULL.  A restart is only safe in a settled state: a leader that holds
 * its key (the restart keeps it, ha_restart.c), or a replica following
 * one.  Not while promoting (a half-done promotion would be cut in two),
 * not during a hand-over or while any switchover or failover is in flight
 * in the failover key (its candidate or its old leader would vanish under
 * it, and the request could fail or pick a worse target), not while
 * racing or fenced.  Patroni's is the same: it runs no scheduled restart
 * while another action runs, nor outside a cluster with a leader.
 */
static const char *
restart_blocker(void)
{
	HaRequest	req;
	int64		revision;
	char		err[256];

	if (worker.promoting)
		return "this node is being promoted";
	if (worker.ho.step != HO_NONE)
		return "a switchover from this node is under way";
	if (worker.state != HA_LEADER && worker.state != HA_REPLICA)
	{
		/* static: asked every half second, from no per-cycle memory context */
		static char state_why[64];

		snprintf(state_why, sizeof(state_why), "the node is in state %s", ha_state_name(worker.state));
		return state_why;
	}
	if (cluster_request(&worker.view, &req, &revision, err, sizeof(err)) == CLUSTER_REQUEST_VALID &&
		(req.phase == HA_REQ_HANDED_OVER || req.phase == HA_REQ_FINAL_CONFIRMED ||
		 (req.phase == HA_REQ_REQUESTED &&
		  !ha_request_pending_schedule(&req, (int64) time(NULL) * 1000000))))
		return "a switchover or failover is in flight";
	return NULL;
}

/*
 * The scheduled restart, once its time has come: the restart path of
 * pg_ha.restart() (ha_restart.c), whose safety argument holds as it is -
 * a restart at a later time is the same restart.  Not while the cluster
 * is paused (Patroni runs no scheduled action then: the operator has
 * taken over; the schedule is kept, and dropped as stale if the pause
 * outlasts it), and not while restart_blocker says no.  Patroni's rules
 * for the rest: more than 1.5 loop_wait late it is stale and dropped;
 * conditions (role, restart_pending, postgres_version) no longer met drop
 * it with the reason logged.  Called at the end of a cycle that reached
 * etcd; does not return when it restarts.
 */
static void
scheduled_restart_step(const NodeSnapshot *snap)
{
	PatroniRestartBody b;
	uint64		gen;
	int64		now_us = (int64) time(NULL) * 1000000;	/* wall clock: the schedule is one */
	const char *why;

	if (!pg_ha_restart_schedule_get(&b, &gen) || worker.dyn.pause)
		return;
	switch (patroni_restart_timing(b.schedule_us, now_us, (int64) worker.dyn.loop_wait_ms * 1000))
	{
		case PATRONI_RESTART_WAIT:
			soon(b.schedule_us - now_us);
			return;
		case PATRONI_RESTART_STALE:
			ereport(WARNING,
					(errmsg("pg_ha: found a stale scheduled restart, dropping it"),
					 errdetail("It was due %lld s ago, more than 1.5 loop_wait.",
							   (long long) ((now_us - b.schedule_us) / 1000000))));
			pg_ha_restart_schedule_drop(gen);
			soon(0);
			return;
		case PATRONI_RESTART_DUE:
			break;
	}
	if ((why = restart_blocker()) != NULL)
	{
		/* once per reason: it is asked again every half second */
		if (strcmp(why, worker.restart_waits) != 0)
			ereport(LOG, (errmsg("pg_ha: scheduled restart waits: %s", why)));
		strlcpy(worker.restart_waits, why, sizeof(worker.restart_waits));
		soon(FAST_CYCLE_US * 10);
		return;
	}
	worker.restart_waits[0] = '\0';
	why = patroni_restart_unmet(&b, !snap->in_recovery, pg_ha_pending_restart(), PG_VERSION_NUM);
	if (why != NULL)
	{
		ereport(LOG, (errmsg("pg_ha: not proceeding with the scheduled restart: %s", why)));
		pg_ha_restart_schedule_drop(gen);
		soon(0);
		return;
	}
	pg_ha_restart_schedule_drop(gen);
	(void) publish_member(snap, false);
	/*
	 * The control worker checkpoints, marks and shuts down: the checkpoint
	 * may take a while, and this worker must keep renewing the lease
	 * until the shutdown (a scheduled restart exists only with the API,
	 * so the control worker runs).
	 */
	pg_ha_restart_hand_off();
}

/*
 * loop_wait: ha_dynconf.c checked it against the TTL it decided.  Until
 * the lease carries that TTL (move_lease retries each cycle), a third of
 * the granted one at most, so that the lease in hand is renewed in time.
 */
static int64
cycle_pace_us(void)
{
	int64		pace = (int64) worker.dyn.loop_wait_ms * 1000;

	if (worker.lease_ttl != worker.dyn.ttl && worker.lease_ttl > 0)
		pace = Min(pace, worker.lease_ttl * 1000000 / 3);
	return pace;
}

static void
ha_cycle(void)
{
	NodeSnapshot snap;
	bool		ok;
	uint64		restart_gen = pg_ha_restart_schedule_gen();

	node_take_snapshot(&snap);
	exit_if_orphaned();
	worker.last_error[0] = '\0';
	worker.next_cycle = INT64_MAX;

	/* retry_timeout changed (dyn_refresh): a client with the new bound */
	if (worker.etcd && worker.client_timeout_ms != worker.dyn.retry_timeout_ms)
		reset_client();
	ok = ensure_client() && renew_lease() && confirm_leader_key() && load_view();
	exit_if_orphaned();
	if (ok)
	{
		/* etcd answers again: a later outage earns its own cover */
		worker.fs_confirmed_until = 0;
		if (worker.is_leader)
			publish_lease_deadline();
		dyn_refresh();
		move_lease();
		ok = snap.in_recovery ? standby_cycle(&snap) : primary_cycle(&snap);
		/* the member key written in this cycle shows the schedule as of its start */
		if (ok)
			pg_ha_restart_schedule_published(restart_gen);
		if (ok && !worker.restarting_key_cleared)
			clear_restarting_key();
	}
	if (!ok)
	{
		/* a call cut short by the postmaster's death: no failsafe round for it */
		exit_if_orphaned();
		if (worker.state != HA_MISCONFIGURED)
			fire(HA_EV_ETCD_FAILED, worker.last_error);
		failsafe_round();
		drop_watch(pg_ha_monotonic_us() + WATCH_RETRY_US);
		cluster_reset(&worker.view);
	}
	publish_shared(&snap, ok);
	publish_replication_roles();
	soon(ok ? cycle_pace_us() : ETCD_RETRY_US);
	if (ok)
		scheduled_restart_step(&snap);
}

/*
 * One cycle, with any ERROR caught.  An ERROR that escaped to the
 * background-worker machinery would exit the worker and have it restarted
 * every few seconds: a crash loop that keeps the node fenced and blocks
 * every failover and switchover (one malformed etcd value once did that).
 * Every etcd value is parsed defensively already; this is the net under
 * whatever else may raise: the error is logged, the transaction state
 * cleaned up, and the next cycle comes soon.  Safety does not depend on
 * the cycle finishing: a leader that cannot renew loses write authority
 * at its deadline (fence.c).
 */
static void
guarded_cycle(void)
{
	MemoryContext cycle_context = CurrentMemoryContext;

	PG_TRY();
	{
		ha_cycle();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cycle_context);
		edata = CopyErrorData();
		FlushErrorState();
		if (IsTransactionState() || IsAbortedTransactionBlockState())
		{
			SPI_finish();
			AbortCurrentTransaction();
		}
		ereport(WARNING,
				(errmsg("pg_ha: HA cycle failed: %s", edata->message),
				 errdetail("The worker carries on; the next cycle retries.")));
		remember_error("HA cycle failed: %s", edata->message);
		FreeErrorData(edata);
		soon(ETCD_RETRY_US);
	}
	PG_END_TRY();
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
	char		reason[256];
	bool		restarting = pg_ha_restart_requested(reason, sizeof(reason));

	worker.releasing = true;
	fire(restarting ? HA_EV_RESTART : HA_EV_SHUTDOWN, NULL);
	pg_atomic_write_u64(&pg_ha_shared->lease_deadline_us, 0);
	drop_watch(0);
	if (worker.etcd == NULL)
		return;
	if (worker.is_leader && restarting)
	{
		/*
		 * pg_ha.restart() (ha_restart.c argues its safety): keep the key
		 * and its lease, renewed once more so that the whole TTL is left
		 * for the service manager to bring postgres back.  The fence is
		 * down already (deadline 0): no commit happens meanwhile.
		 */
		(void) renew_lease();
		ereport(LOG,
				(errmsg("pg_ha: restarting: keeping leader key %s for up to %lld s (the TTL)",
						worker.leader_key, (long long) worker.lease_ttl),
				 errdetail("No failover happens if postgres is back by then.")));
		publish_shared(NULL, false);
		return;
	}
	if (worker.is_leader)
	{
		/*
		 * The shutdown checkpoint is still to come, and walsenders send it
		 * before they exit.  The note in the failover key tells the
		 * replicas to wait for it (their stream ends after it), so the
		 * next leader forks after it and this node can later follow
		 * without pg_rewind.
		 */
		char		note[HA_REQUEST_MAX_JSON];
		HaRequest	req;
		EtcdCompare cmp = {worker.leader_key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, worker.node, 0};
		/*
		 * The member key goes in the same transaction: replicas then see
		 * the leader key and its holder's member key vanish at once, so
		 * they know its write authority is over (previous_leader_gone)
		 * without waiting for the lease revocation below.
		 */
		EtcdOp		ops[3] = {
			{ETCD_OP_DELETE, worker.leader_key, NULL, 0, false},
			{ETCD_OP_DELETE, worker.member_key, NULL, 0, false},
			{ETCD_OP_PUT, worker.failover_key, note, 0, false},
		};
		bool		released = false;
		EtcdStatus	st;

		memset(&req, 0, sizeof(req));
		req.phase = HA_REQ_SHUTDOWN;
		strlcpy(req.leader, worker.node, sizeof(req.leader));
		req.final_lsn = (uint64_t) GetFlushRecPtr(NULL);
		if (ha_request_encode(&req, note, sizeof(note)) < 0)
			note[0] = '\0';
		st = etcd_txn(worker.etcd, &cmp, 1, ops, 3, NULL, 0, &released, NULL);
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
	dyn_refresh();				/* the GUCs until the config key is read */

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
		fire(HA_EV_BAD_CONFIG, worker.last_error);
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
	worker.config_key = key_copy("config");
	worker.failover_key = key_copy("failover");
	worker.history_key = key_copy("history");
	worker.sync_key = key_copy("sync");

	/* for ALTER SYSTEM and pg_stat_replication; works on a hot standby too */
	BackgroundWorkerInitializeConnection(pg_ha_database, NULL, 0);
	pgstat_report_appname("pg_ha worker");
	/*
	 * This session is the bootstrap superuser: whatever name its SQL looks
	 * up must not resolve to an object another role created.  Its queries
	 * are schema-qualified too; the pin covers what they call in turn.
	 * PGC_S_OVERRIDE: above ALTER DATABASE / ALTER ROLE ... SET.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	ereport(LOG,
			(errmsg("pg_ha: worker started for node \"%s\" in cluster \"%s\" (leader key %s)",
					worker.node, pg_ha_effective_cluster(), worker.leader_key)));
	pg_ha_restart_done();
	pg_ha_reinitialize_forget();

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
			pg_ha_pending_restart_reason_refresh();
			reset_client();
			dyn_refresh();
			worker.next_cycle = 0;
		}

		/* the scheduled restart changed (control worker): publish it now */
		if (pg_ha_restart_schedule_gen() != worker.restart_gen_seen)
		{
			worker.restart_gen_seen = pg_ha_restart_schedule_gen();
			worker.next_cycle = 0;
		}
		if (pg_ha_monotonic_us() >= worker.next_cycle)
			guarded_cycle();
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
