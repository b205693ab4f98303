/*
 * pg_ha.h - declarations shared by pg_ha's subsystems: configuration
 * (guc.c), shared state (shmem.c), the HA worker (ha_worker.c, ha_state.c),
 * the member document (member.c) and the SQL functions (sql_status.c).
 */
#ifndef PG_HA_H
#define PG_HA_H

#include "postgres.h"

#include "fmgr.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "etcd.h"
#include "ha_dynconf.h"

#define PG_HA_VERSION "1.0.0"
#define PG_HA_NAME_LEN 64		/* node and cluster names, including NUL */
#define PG_HA_ERROR_LEN 256
#define PG_HA_MEMBERS_JSON_LEN 16384
#define PG_HA_KEY_JSON_LEN 16384	/* config and history keys for the listener */
#define PG_HA_REPL_ROLES 8		/* distinct roles of WAL senders named in /patroni */
#define PG_HA_SYNC_MAX 16		/* names in synchronous_standby_names and the sync key */

/* ---------- configuration (guc.c) ---------- */

extern char *pg_ha_etcd_endpoints;
extern char *pg_ha_etcd_cacert;
extern char *pg_ha_etcd_cert;
extern char *pg_ha_etcd_key;
extern char *pg_ha_etcd_user;
extern char *pg_ha_etcd_password_file;
extern int	pg_ha_etcd_timeout_ms;
extern char *pg_ha_namespace;
extern char *pg_ha_cluster;
extern char *pg_ha_node_name;
extern int	pg_ha_ttl;
extern char *pg_ha_connect_address;
extern char *pg_ha_api_listen;
extern bool pg_ha_fencing;
extern int	pg_ha_maximum_lag_on_failover;	/* kB */
extern bool pg_ha_nofailover;
extern bool pg_ha_noloadbalance;
extern char *pg_ha_replicatefrom;
extern bool pg_ha_clonefrom;
extern bool pg_ha_nostream;
extern int	pg_ha_failover_priority;
extern char *pg_ha_tags;		/* JSON object of user tags, "" = none */
extern char *pg_ha_database;
extern char *pg_ha_replication_conninfo;
extern char *pg_ha_metrics_role;
extern bool pg_ha_failsafe_mode;
extern char *pg_ha_api_auth_file;

extern void pg_ha_define_gucs(void);

/* synchronous mode (guc.c's last block; ha_sync.c) */
extern int	pg_ha_synchronous_mode;	/* SyncMode */
extern int	pg_ha_synchronous_node_count;
extern bool pg_ha_nosync;
extern int	pg_ha_sync_priority;
extern void pg_ha_define_sync_gucs(void);

/* Effective names: the GUC, or its documented fallback. */
extern const char *pg_ha_effective_cluster(void);
extern const char *pg_ha_effective_node_name(void);
/* "host:port" this node advertises to its peers. */
extern void pg_ha_effective_connect_address(char *buf, size_t len);
/*
 * Fills an EtcdConfig from the GUCs (pointers into GUC storage and a
 * process-local password buffer).  False, with a message, when the password
 * file cannot be read.
 */
extern bool pg_ha_etcd_config(EtcdConfig *config, char *errbuf, size_t errlen);
/*
 * "/<namespace>/<cluster>/<suffix>", palloc'd.  ERROR on a node whose
 * configuration is not usable (no valid cluster name, or a pg_ha setting
 * that did not take effect at start): it must write no key at all.
 */
extern char *pg_ha_key(const char *suffix);
/* Why name cannot be part of an etcd key, or NULL (static buffer). */
extern const char *pg_ha_name_problem(const char *name, const char *what);

/* ---------- configuration check at start (config_check.c) ---------- */

/* _PG_init: before the parameters are defined / after the prefix is reserved */
extern void pg_ha_config_note_placeholders(void);
extern void pg_ha_config_find_rejected(void);
/* Did a pg_ha.* setting fail to take effect when the postmaster started? */
extern bool pg_ha_config_rejected_at_start(void);
/*
 * HA worker at start: true when the node can be managed.  Otherwise logs a
 * WARNING per problem (where, what, why) and puts the first into errbuf.
 */
extern bool pg_ha_config_check(char *errbuf, size_t errlen);

/* ---------- shared state (shmem.c) ---------- */

typedef enum PgHaRole
{
	PG_HA_ROLE_UNKNOWN = 0,
	PG_HA_ROLE_PRIMARY,
	PG_HA_ROLE_REPLICA
} PgHaRole;

/*
 * States of the HA worker; ha_state.c holds the transition table, and
 * docs/architecture.md prints it.
 */
typedef enum HaState
{
	HA_STARTING = 0,			/* worker up, etcd not contacted yet */
	HA_ETCD_UNREACHABLE,		/* no etcd endpoint answers */
	HA_LEADER,					/* primary holding the leader key */
	HA_HANDING_OVER,			/* leader in a switchover: checkpoint, then fenced
								 * until the candidate has all of its WAL */
	HA_FENCED,					/* primary without the leader key: writes refused */
	HA_DEMOTING,				/* primary restarting as a standby */
	HA_REPLICA,					/* standby following the leader */
	HA_RACING,					/* standby, leader key absent: deciding who takes it */
	HA_PROMOTING,				/* standby that took the key, leaving recovery */
	HA_DIVERGED,				/* standby off the leader's history: stopping for pg_rewind */
	HA_MISCONFIGURED,			/* cannot run: bad config or foreign cluster */
	HA_STOPPING,				/* releasing keys on shutdown */
	HA_NUM_STATES
} HaState;

/*
 * The control API's one request slot: the HTTP listener, which never waits
 * on etcd, hands a state-changing request (POST /switchover, PATCH
 * /config, ...) to the control worker and parks the connection until the
 * answer is there (http_control.c, control_worker.c).  One at a time: a
 * second request meanwhile gets 503.  Only the listener frees a DONE slot,
 * unless it gave up waiting (abandoned), then the worker does.
 */
typedef enum ControlPhase
{
	CONTROL_FREE = 0,
	CONTROL_QUEUED,				/* written by the listener */
	CONTROL_RUNNING,			/* taken by the control worker */
	CONTROL_DONE				/* answer written, for the listener */
} ControlPhase;

typedef enum ControlKind
{
	CONTROL_SWITCHOVER = 0,
	CONTROL_FAILOVER,
	CONTROL_CANCEL_SWITCHOVER,
	CONTROL_PATCH_CONFIG,
	CONTROL_PUT_CONFIG,
	CONTROL_RESTART,
	CONTROL_CANCEL_RESTART,
	CONTROL_REINITIALIZE
} ControlKind;

#define PG_HA_CONTROL_TEXT_LEN 16400	/* body in, answer out, NUL included */

typedef struct ControlSlot
{
	ControlPhase phase;
	ControlKind kind;
	uint64		seq;			/* names the request the listener waits for */
	bool		abandoned;		/* the listener stopped waiting */
	pid_t		worker_pid;
	Latch	   *worker_latch;
	int			status;			/* HTTP status of the answer */
	bool		answer_json;	/* answer is JSON, else plain text */
	char		text[PG_HA_CONTROL_TEXT_LEN];	/* request body, then the answer */
} ControlSlot;

/*
 * PgHaShared: the one shared-memory struct.
 *
 * Lock discipline:
 *   - lease_deadline_us and state are atomics, read without a lock: they are
 *     on hot paths (commit-time fence, health answers) that must never wait
 *     behind the HA worker.  Only the HA worker writes them.
 *   - Every other field is guarded by `lock` (one LWLock from tranche
 *     "pg_ha").  The HA worker takes it exclusively to publish a consistent
 *     snapshot; readers (SQL functions, later the HTTP listener) take it
 *     shared and copy out.  Nobody does I/O or etcd calls while holding it.
 */
typedef struct PgHaShared
{
	/* --- lock-free --- */
	/* pg_ha_monotonic_us() (CLOCK_BOOTTIME) until which the lease is ours; 0 = none */
	pg_atomic_uint64 lease_deadline_us;
	pg_atomic_uint32 state;		/* HaState */
	pg_atomic_uint32 fence;		/* nonzero: worker-raised write fence (fence.c) */
	/* TTL (s) of the lease the deadline counts from, for the margin; 0 = none yet */
	pg_atomic_uint32 lease_ttl_s;
	/* effective synchronous mode + 1 (the fence reads it at commit); 0 = not published */
	pg_atomic_uint32 sync_mode_eff;

	/* --- guarded by lock --- */
	LWLock	   *lock;
	pid_t		worker_pid;
	Latch	   *worker_latch;
	PgHaRole	role;
	char		node[PG_HA_NAME_LEN];
	char		cluster[PG_HA_NAME_LEN];
	char		leader[PG_HA_NAME_LEN]; /* "" when the key is absent */
	bool		leader_known;	/* false until etcd has been read once */
	bool		is_leader;		/* the leader key holds our name and lease */
	int64		lease_id;
	TimeLineID	timeline;
	XLogRecPtr	lsn;
	XLogRecPtr	receive_lsn;	/* standby only */
	XLogRecPtr	replay_lsn;		/* standby only */
	bool		streaming;		/* standby: WAL receiver connected */
	XLogRecPtr	cluster_optime;	/* leader's last published position (status key) */
	bool		paused;			/* maintenance mode: no automatic failover */
	bool		nofailover;		/* tags published in the member key */
	bool		noloadbalance;
	bool		etcd_reachable;
	char		etcd_endpoint[ETCD_MAX_URL];
	TimestampTz etcd_last_ok;
	char		last_error[PG_HA_ERROR_LEN];
	/* members as Patroni's /cluster lists them: a JSON array, "" if unknown */
	char		members_json[PG_HA_MEMBERS_JSON_LEN];
	/* the config and history keys' values, "" if absent; keys_known: etcd read */
	char		config_json[PG_HA_KEY_JSON_LEN];
	char		history_json[PG_HA_KEY_JSON_LEN];
	bool		keys_known;
	/*
	 * Names of the roles WAL senders connected as, for "usename" in
	 * /patroni: the listener has no catalog access, the HA worker resolves
	 * them each cycle.  Unused slots have InvalidOid.
	 */
	Oid			repl_role_oid[PG_HA_REPL_ROLES];
	char		repl_role_name[PG_HA_REPL_ROLES][NAMEDATALEN];
	/*
	 * A backend running pg_ha.switchover() on this node while it leads:
	 * the hand-over leaves it running (terminate_client_backends), and the
	 * worker lets it send its answer before the demotion's restart ends
	 * it.  0 = none.
	 */
	pid_t		switchover_caller_pid;
	bool		switchover_caller_answered;
	uint64		failovers;		/* promotions of this node by (manual) failover */
	uint64		switchovers;	/* promotions of this node by switchover */
	uint64		etcd_requests;
	uint64		etcd_errors;
	uint64		etcd_latency_us;
	/*
	 * Synchronous mode as the HA worker last saw it: the sync key (leader
	 * "" when absent), when each listed standby was first seen listed, and
	 * on the leader why commits wait for a standby, "" when they do not.
	 */
	int			sync_mode;		/* SyncMode configured on this node */
	char		sync_leader[PG_HA_NAME_LEN];
	int			sync_quorum;
	int			sync_count;
	char		sync_names[PG_HA_SYNC_MAX][PG_HA_NAME_LEN];
	TimestampTz sync_since[PG_HA_SYNC_MAX];
	char		sync_waiting[PG_HA_ERROR_LEN];

	/*
	 * The settings this node runs on: the GUCs merged with the config key
	 * (ha_dynconf.c), as the HA worker last decided them; dyn_known false
	 * until it did (readers then merge the GUCs alone: pg_ha_dyn_current).
	 */
	DynSettings dyn;
	bool		dyn_known;

	/*
	 * Failsafe mode (ha_failsafe.c).  The HTTP listener records a promise
	 * given to a leader; the HA worker reads it before it would race for the
	 * leader key, and marks the key claimed (no more promises) in the same
	 * locked section.  Lease clock (pg_ha_monotonic_us).
	 */
	char		failsafe_leader[PG_HA_NAME_LEN];	/* last leader confirmed */
	int64		failsafe_until_us;	/* no race for the key before this */
	bool		failsafe_key_claimed;	/* worker is taking the key */

	/*
	 * A reinitialize of this node was accepted (ha_reinit.c): the worker
	 * takes no leader key from then on (checked in the section that marks
	 * the key claimed).  Cleared only by the postmaster's exit.
	 */
	bool		reinit_pending;

	/*
	 * The failover key, as the worker last read it, names this node as the
	 * candidate of a switchover or failover that is not over: a reinitialize
	 * is refused (ha_reinit.c), since the node is about to be asked to lead.
	 */
	bool		named_candidate;

	/*
	 * GET /cluster's "scheduled_switchover" ({"at", "from", "to"}, as
	 * Patroni), from a scheduled request in the failover key; "" if none.
	 */
	char		scheduled_switchover_json[256];

	/*
	 * A restart scheduled over the API (POST /restart with "schedule";
	 * ha_restart.c): the control worker adds and deletes it, the HA worker
	 * runs or drops it.  It lives as long as this postmaster, as Patroni's
	 * lives as long as the postmaster it was scheduled for.  restart_gen
	 * counts changes; restart_published_gen is the newest one a member key
	 * written since shows.
	 */
	bool		restart_scheduled;
	PatroniRestartBody restart_schedule;
	uint64		restart_gen;
	uint64		restart_published_gen;

	/*
	 * The HA worker hands a due scheduled restart to the control worker,
	 * which may block on the checkpoint before the shutdown (ha_restart.c);
	 * the HA worker must keep renewing the lease meanwhile.
	 */
	bool		restart_handed_off;

	ControlSlot control;		/* the control API's request (see above) */
} PgHaShared;

extern PgHaShared *pg_ha_shared;

extern void pg_ha_shmem_request(void);
extern void pg_ha_shmem_startup(void);
extern int64 pg_ha_monotonic_us(void);
/* Safety margin kept between the local lease deadline and its real end. */
extern int64 pg_ha_lease_margin_us(void);
/*
 * Does this node hold write authority right now: the worker holds the
 * leader key and the lease deadline minus the margin is still ahead?
 * Lock-free; safe to call on hot paths and from any process.
 */
extern bool pg_ha_lease_valid(int64 now_us);
/* The GUCs' side of the effective settings (ha_dynconf.h). */
extern void pg_ha_dyn_local(DynLocal *out);
/* The effective settings as the HA worker last published them, else the GUCs'. */
extern void pg_ha_dyn_current(DynSettings *out);
/* The effective synchronous mode (SyncMode), lock-free for the commit path. */
extern int	pg_ha_effective_sync_mode(void);
/*
 * A file in the data directory while the config key turned failsafe mode
 * on (the GUC off), and for one pg_ha.ttl after it turned it off again.
 */
#define PG_HA_FAILSAFE_MARKER "pg_ha.failsafe"
extern bool pg_ha_failsafe_marker_exists(void);

/* ---------- SQL functions (sql_status.c, sql_control.c) ---------- */

extern EtcdClient *pg_ha_backend_etcd_client(void);
/* sql_control.c: did the last switchover/failover call write its request? */
extern bool pg_ha_control_request_written;
extern PGDLLEXPORT Datum pg_ha_switchover(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum pg_ha_failover(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum pg_ha_cancel_switchover(PG_FUNCTION_ARGS);

/* control_worker.c */
extern void pg_ha_control_register_worker(void);
extern PGDLLEXPORT void pg_ha_control_main(Datum arg);

/* ---------- write fence (fence.c) ---------- */

extern void pg_ha_install_fence(void);
/* Why writes are refused on this node now, or NULL when they are allowed. */
extern const char *pg_ha_fence_reason(void);

/* ---------- what a restart would change (pending_restart.c) ---------- */

/*
 * Patroni 4's pending_restart_reason: {"name": {"old_value": .., "new_value":
 * ..}} for each restart-only setting changed in the files, a cJSON object
 * the caller deletes; NULL when no restart is pending.
 */
extern struct cJSON *pg_ha_pending_restart_reason(void);

/*
 * The same as JSON text, NULL when nothing is pending.  It changes only
 * when this process reloads its configuration: computed on first use and
 * again after pg_ha_pending_restart_reason_refresh(), which a process
 * calls after each reload, so the files are not read again per use.
 */
extern const char *pg_ha_pending_restart_reason_text(void);
extern void pg_ha_pending_restart_reason_refresh(void);

/* ---------- restart through the service manager (ha_restart.c) ---------- */

extern bool pg_ha_pending_restart(void);
extern bool pg_ha_restart_requested(char *reason, size_t len);
extern void pg_ha_restart_done(void);
extern void pg_ha_restart_mark(const char *reason);
extern void pg_ha_restart_now(void);
extern void pg_ha_restart_checkpoint(bool caught);
extern void pg_ha_restart_hand_off(void);
extern bool pg_ha_restart_take_hand_off(void);
/*
 * The scheduled restart (PgHaShared.restart_schedule).  add: false when one
 * is scheduled already; delete: false when none is; drop: the HA worker's
 * delete of the one it read (generation gen), never of a newer one.  Each
 * change wakes the HA worker, which republishes the member key.
 */
extern bool pg_ha_restart_schedule_add(const PatroniRestartBody *b);
extern bool pg_ha_restart_schedule_delete(void);
extern void pg_ha_restart_schedule_drop(uint64 gen);
extern bool pg_ha_restart_schedule_get(PatroniRestartBody *out, uint64 *gen);
extern uint64 pg_ha_restart_schedule_gen(void);
/* The member key's "scheduled_restart" object (palloc'd), or NULL. */
extern char *pg_ha_restart_schedule_json(bool with_start_time);
/* The HA worker wrote a member key showing generation gen, or newer. */
extern void pg_ha_restart_schedule_published(uint64 gen);
/* Waits up to timeout_ms for a member key showing the latest change. */
extern bool pg_ha_restart_schedule_wait_published(int timeout_ms);
/* Marker files in the data directory ("pid=" and "reason=" lines). */
extern bool pg_ha_marker_read(const char *name, long *pid, char *reason, size_t len);
extern void pg_ha_marker_write(const char *name, const char *text);

/* ---------- reinitialize: re-clone at the next start (ha_reinit.c) ---------- */

/* Why a reinitialize of this node is refused (or REINIT_ACCEPTED). */
typedef enum ReinitVerdict
{
	REINIT_ACCEPTED = 0,
	REINIT_CLUSTER_UNKNOWN,		/* etcd not read, or not reachable now */
	REINIT_NO_LEADER,			/* nobody to clone from */
	REINIT_IS_LEADER,			/* holds the leader key, or runs as a primary */
	REINIT_MAY_PROMOTE,			/* racing for the key, or promoting */
	REINIT_CANDIDATE,			/* the failover key names this node */
	REINIT_IN_PROGRESS			/* accepted already; force asks again */
} ReinitVerdict;

#define PG_HA_REINIT_MARKER "pg_ha.reinitialize"

extern ReinitVerdict pg_ha_reinitialize_accept(bool force, bool from_leader, const char *reason);
extern void pg_ha_reinitialize_forget(void);

/* ---------- HA worker (ha_worker.c, ha_state.c) ---------- */

typedef enum HaEvent
{
	HA_EV_ETCD_FAILED,			/* a cycle's etcd calls failed */
	HA_EV_BAD_CONFIG,			/* configuration unusable, or a foreign cluster */
	HA_EV_SHUTDOWN,
	HA_EV_RESTART,				/* shutting down for pg_ha.restart() */
	HA_EV_GOT_LEADER_KEY,		/* primary: the key carries our name and lease */
	HA_EV_LEADER_KEY_TAKEN,		/* primary: another node holds the key, or we may not */
	HA_EV_LEADER_KEY_RETAKEN,	/* leader: lease expired in etcd, key re-created
								 * while the failsafe promises hold */
	HA_EV_SWITCHOVER_DUE,		/* leader: a switchover request came due */
	HA_EV_HANDOVER_ABORTED,		/* leader: the candidate could not take over */
	HA_EV_HANDED_OVER,			/* leader: the key went to the candidate */
	HA_EV_DEMOTE,				/* primary: restart as a standby */
	HA_EV_FOLLOWING,			/* standby: another node leads */
	HA_EV_LEADER_GONE,			/* standby: no leader key */
	HA_EV_WON_RACE,				/* standby: took the key, promoting */
	HA_EV_DIVERGED,				/* standby: left the leader's history */
	HA_NUM_EVENTS
} HaEvent;

extern const char *ha_state_name(HaState state);
extern const char *ha_event_name(HaEvent event);
/*
 * The row for (current, event): the next state and why; NULL when the
 * protocol has no such transition (the event is refused).  Pure: the unit
 * tests walk the table through it.
 */
/*
 * What the worker does when a row fires (ha_worker.c runs it, after the
 * state changed).  Observation rows do nothing; every irreversible step of
 * the protocol is the action of exactly the rows that allow it.
 */
typedef enum HaAction
{
	HA_ACT_NONE,				/* the event only records what the worker saw */
	HA_ACT_FENCE,				/* refuse commits: this node may not write */
	HA_ACT_LIFT_FENCE,			/* commits allowed again: the lease is ours */
	HA_ACT_CHECKPOINT,			/* switchover: checkpoint before the fence */
	HA_ACT_PROMOTE,				/* end recovery: this node took the key */
	HA_ACT_RESTART_AS_STANDBY,	/* write the standby configuration, restart */
	HA_ACT_STOP_FOR_REWIND,		/* stop postgres; pg_hactl rejoin rewinds */
	HA_NUM_ACTIONS
} HaAction;

typedef struct HaTransition
{
	HaState		from;
	HaEvent		event;
	HaState		to;
	HaAction	action;
	const char *why;
} HaTransition;

extern const char *ha_action_name(HaAction action);
extern const HaTransition *ha_transition_find(HaState current, HaEvent event);
extern int	ha_transition_count(void);
extern const HaTransition *ha_transition_at(int i);
/*
 * Applies event to the current state: logs the transition (one greppable
 * LOG line), or logs and refuses an event the table does not allow.
 */
extern HaState ha_transition(HaState current, HaEvent event, const char *detail);

/* ha_params.c: the config key's postgresql.parameters on this node */
extern void pg_ha_params_apply(const PatroniDynConfig *key);

extern void pg_ha_register_worker(void);
extern PGDLLEXPORT void pg_ha_worker_main(Datum arg);

/* ---------- this node's member document (member.c) ---------- */

typedef struct NodeSnapshot
{
	bool		in_recovery;
	TimeLineID	timeline;
	XLogRecPtr	lsn;			/* primary: flushed; standby: max(receive, replay) */
	XLogRecPtr	receive_lsn;
	XLogRecPtr	replay_lsn;
	bool		streaming;
} NodeSnapshot;

extern void node_take_snapshot(NodeSnapshot *snap);
/* Patroni-compatible compact JSON for members/<name>, palloc'd. */
extern char *member_document(const NodeSnapshot *snap, bool paused);

#endif							/* PG_HA_H */
