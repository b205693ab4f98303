/*
 * health.c - the Patroni-compatible health API on pg_ha.api_listen.
 *
 * HAProxy routes client traffic by these status codes, so each one is
 * derived from shared memory only (never etcd, never SQL) and follows
 * Patroni 3.0.2's api.py, with one deliberate difference: /primary says
 * 200 only when this postgres is out of recovery AND the node holds an
 * unexpired leader lease (pg_ha_lease_valid, the same test the commit fence
 * uses) AND no fence is raised.  Patroni answers from its idea of the leader
 * lock even with postgres down; here the answer cannot outlive the lease.
 *
 *   /primary /read-write /master /      200 iff write authority (above)
 *   /leader                             200 iff the lease is ours
 *   /replica [?lag=] [?tag_k=v]         running standby, not lagging, no
 *                                       noloadbalance tag, tags match
 *   /read-only                          /primary or /replica
 *   /health                             postgres accepts connections
 *   /liveness                           the HA worker is alive
 *   /readiness                          leader, or running with etcd seen
 *   /sync /synchronous                  /replica, listed in the sync key
 *                                       (synchronous_mode on or strict)
 *   /quorum                             the same in synchronous_mode quorum
 *   /async /asynchronous                /replica, not listed, etcd reachable
 *   /read-only-sync /read-only-quorum   /primary, or /sync (/quorum)
 *   /standby-leader /standby_leader     503: no standby clusters yet
 *   /patroni                            status JSON (Patroni field names)
 *   /cluster  /history  /metrics        members seen here, timeline
 *                                       history (HEAD/OPTIONS; GET /history
 *                                       is http_control.c's), patroni_* metrics
 *   anything else                       503, as Patroni's do_GET fallback
 *
 * GET answers carry the status JSON (as Patroni's do); HEAD and OPTIONS
 * (what HAProxy sends) the status line only.  Nothing here changes state:
 * Patroni's control endpoints are http_control.c's, other methods get 405.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"
#include "patroni_codec.h"

#include <netdb.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogrecovery.h"
#include "common/ip.h"
#include "miscadmin.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/spin.h"
#include "utils/backend_status.h"
#include "utils/guc_tables.h"
#include "utils/timestamp.h"

/* What one answer is computed from: copied out once per request. */
typedef struct NodeView
{
	bool		in_recovery;
	bool		running;		/* accepts connections */
	bool		lease_valid;
	bool		fenced;
	HaState		ha_state;
	NodeSnapshot pos;
	TimestampTz replay_ts;
	bool		replay_paused;
	/* copied under the shared lock */
	pid_t		worker_pid;
	char		node[PG_HA_NAME_LEN];
	char		cluster[PG_HA_NAME_LEN];
	char		leader[PG_HA_NAME_LEN];
	bool		leader_known;
	bool		is_leader;
	XLogRecPtr	cluster_optime;
	bool		paused;
	bool		nofailover;
	bool		noloadbalance;
	bool		etcd_reachable;
	TimestampTz etcd_last_ok;
	bool		sync_listed;	/* in the current leader's sync key */
	bool		quorum_mode;	/* this node's synchronous_mode is quorum */
	bool		restart_scheduled;
	PatroniRestartBody restart_schedule;
} NodeView;

static void
take_view(NodeView *v)
{
	memset(v, 0, sizeof(*v));
	v->in_recovery = RecoveryInProgress();
	/* a standby accepts connections once hot standby is active */
	v->running = !v->in_recovery || HotStandbyActive();
	v->lease_valid = pg_ha_lease_valid(pg_ha_monotonic_us());
	v->fenced = pg_atomic_read_u32(&pg_ha_shared->fence) != 0;
	v->ha_state = (HaState) pg_atomic_read_u32(&pg_ha_shared->state);

	/* the lock is held only for a memcpy by every writer: never waits long */
	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	v->worker_pid = pg_ha_shared->worker_pid;
	memcpy(v->node, pg_ha_shared->node, sizeof(v->node));
	memcpy(v->cluster, pg_ha_shared->cluster, sizeof(v->cluster));
	memcpy(v->leader, pg_ha_shared->leader, sizeof(v->leader));
	v->leader_known = pg_ha_shared->leader_known;
	v->is_leader = pg_ha_shared->is_leader;
	v->cluster_optime = pg_ha_shared->cluster_optime;
	v->paused = pg_ha_shared->paused;
	v->nofailover = pg_ha_shared->nofailover;
	v->noloadbalance = pg_ha_shared->noloadbalance;
	v->etcd_reachable = pg_ha_shared->etcd_reachable;
	v->etcd_last_ok = pg_ha_shared->etcd_last_ok;
	/* as Patroni: listed by the leader that holds the key now */
	for (int i = 0; i < pg_ha_shared->sync_count && i < PG_HA_SYNC_MAX; i++)
		v->sync_listed |= pg_strcasecmp(pg_ha_shared->sync_names[i], pg_ha_shared->node) == 0;
	v->sync_listed = v->sync_listed && pg_ha_shared->sync_leader[0] != '\0' &&
		strcmp(pg_ha_shared->sync_leader, pg_ha_shared->leader) == 0;
	v->quorum_mode = pg_ha_shared->sync_mode == 2;	/* SYNC_MODE_QUORUM */
	v->restart_scheduled = pg_ha_shared->restart_scheduled;
	v->restart_schedule = pg_ha_shared->restart_schedule;
	LWLockRelease(pg_ha_shared->lock);

	if (v->node[0] == '\0')
		strlcpy(v->node, pg_ha_effective_node_name(), sizeof(v->node));
	if (v->cluster[0] == '\0')
		strlcpy(v->cluster, pg_ha_effective_cluster(), sizeof(v->cluster));

	/* positions straight from postgres' own shared memory */
	node_take_snapshot(&v->pos);
	if (v->in_recovery)
	{
		v->replay_ts = GetLatestXTime();
		v->replay_paused = GetRecoveryPauseState() != RECOVERY_NOT_PAUSED;
	}
}

/* ---------- status codes ---------- */

static bool
view_is_primary(const NodeView *v)
{
	return !v->in_recovery && v->lease_valid && !v->fenced;
}

/* Patroni: replica, running, no noloadbalance tag, not behind by > lag. */
static bool
view_is_replica(const NodeView *v, const HttpRequest *req)
{
	char		lagbuf[64];
	uint64_t	maxlag;

	if (!v->in_recovery || !v->running || v->noloadbalance)
		return false;
	if (http_query_get(req->query, "lag", lagbuf, sizeof(lagbuf)) &&
		http_parse_size(lagbuf, &maxlag))
	{
		XLogRecPtr	replayed = v->pos.replay_lsn;

		/* unknown leader position (0): not lagging, as in Patroni */
		if (v->cluster_optime != 0 && v->cluster_optime > replayed &&
			(uint64) (v->cluster_optime - replayed) > maxlag)
			return false;
	}
	return true;
}

/*
 * The value of tag name as Patroni registers it: nofailover, noloadbalance
 * and nosync only when true (patroni/__main__.py get_tags drops the false
 * ones, so ?tag_nofailover=false is 503 in Patroni too), user tags from
 * pg_ha.tags as Patroni prints them.  False when the node has no such tag.
 */
static bool
tag_text(const NodeView *v, const char *name, char *out, size_t outlen)
{
	bool		builtin = false;

	if (strcmp(name, "nofailover") == 0)
		builtin = v->nofailover;
	else if (strcmp(name, "noloadbalance") == 0)
		builtin = v->noloadbalance;
	else if (strcmp(name, "nosync") == 0)
		builtin = pg_ha_nosync || pg_ha_sync_priority == 0;
	else
		return patroni_tag_text(pg_ha_tags, name, out, outlen);
	if (builtin)
		strlcpy(out, "true", outlen);
	return builtin;
}

/*
 * ?tag_<name>=<value>: every tag named must be one this node has, with
 * that value (Patroni's do_GET).
 */
static bool
tags_match(const NodeView *v, const char *query)
{
	const char *p = query;

	while (p && *p)
	{
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);

		if (end - p > 4 && strncmp(p, "tag_", 4) == 0)
		{
			const char *eq = memchr(p, '=', end - p);
			char		key[PATRONI_NAME_LEN];
			char		val[256];
			char		mine[256];
			const char *kstart = p + 4;
			size_t		klen = (eq ? eq : end) - kstart;

			if (!http_url_decode(kstart, klen, key, sizeof(key)) ||
				!http_url_decode(eq ? eq + 1 : end, eq ? end - eq - 1 : 0, val, sizeof(val)))
				return false;
			if (!tag_text(v, key, mine, sizeof(mine)) || strcmp(mine, val) != 0)
				return false;
		}
		p = amp ? amp + 1 : NULL;
	}
	return true;
}

static bool
worker_alive(const NodeView *v)
{
	return v->worker_pid != 0 && kill(v->worker_pid, 0) == 0;
}

typedef enum HealthKind
{
	HK_PRIMARY,
	HK_LEADER,
	HK_REPLICA,
	HK_READ_ONLY,
	HK_READ_ONLY_SYNC,
	HK_READ_ONLY_QUORUM,
	HK_HEALTH,
	HK_LIVENESS,
	HK_READINESS,
	HK_SYNC,
	HK_QUORUM,
	HK_ASYNC,
	HK_STANDBY_LEADER,
	HK_PATRONI,
	HK_CLUSTER,
	HK_HISTORY,
	HK_METRICS
} HealthKind;

typedef struct Route
{
	const char *path;
	HealthKind	kind;
} Route;

static const Route routes[] = {
	{"/", HK_PRIMARY},
	{"/primary", HK_PRIMARY},
	{"/master", HK_PRIMARY},
	{"/read-write", HK_PRIMARY},
	{"/leader", HK_LEADER},
	{"/replica", HK_REPLICA},
	{"/read-only", HK_READ_ONLY},
	{"/read-only-sync", HK_READ_ONLY_SYNC},
	{"/read-only-synchronous", HK_READ_ONLY_SYNC},
	{"/read-only-quorum", HK_READ_ONLY_QUORUM},
	{"/health", HK_HEALTH},
	{"/liveness", HK_LIVENESS},
	{"/readiness", HK_READINESS},
	{"/sync", HK_SYNC},
	{"/synchronous", HK_SYNC},
	{"/quorum", HK_QUORUM},
	{"/async", HK_ASYNC},
	{"/asynchronous", HK_ASYNC},
	{"/standby-leader", HK_STANDBY_LEADER},
	{"/standby_leader", HK_STANDBY_LEADER},
	{"/patroni", HK_PATRONI},
	{"/cluster", HK_CLUSTER},
	{"/history", HK_HISTORY},
	{"/metrics", HK_METRICS},
};


/*
 * A synchronous standby as Patroni's /sync and /quorum see it: listed in
 * the sync key of the current leader, as of etcd last seen (the listing is
 * in etcd, so without etcd nobody is one).
 */
static bool
view_is_sync(const NodeView *v, bool quorum)
{
	return v->etcd_reachable && v->in_recovery && v->sync_listed && v->quorum_mode == quorum;
}

static int
health_status(HealthKind kind, const NodeView *v, const HttpRequest *req)
{
	bool		ok;
	bool		check_tags = true;

	switch (kind)
	{
		case HK_PRIMARY:
			ok = view_is_primary(v);
			check_tags = false;
			break;
		case HK_LEADER:
			ok = v->lease_valid && !v->fenced;
			check_tags = false;
			break;
		case HK_REPLICA:
			ok = view_is_replica(v, req);
			break;
		case HK_READ_ONLY:
			ok = view_is_primary(v) || view_is_replica(v, req);
			break;
		case HK_READ_ONLY_SYNC:
			ok = view_is_primary(v) || (view_is_sync(v, false) && view_is_replica(v, req));
			break;
		case HK_READ_ONLY_QUORUM:
			ok = view_is_primary(v) || (view_is_sync(v, true) && view_is_replica(v, req));
			break;
		case HK_HEALTH:
			ok = v->running;
			break;
		case HK_LIVENESS:
			/* a paused cluster, or a server still recovering (the HA worker
			 * starts at consistency), is alive without the worker */
			ok = v->paused || worker_alive(v) || (v->in_recovery && !v->running);
			check_tags = false;
			break;
		case HK_READINESS:
			ok = (v->lease_valid && !v->fenced) || (v->running && v->etcd_reachable);
			check_tags = false;
			break;
		case HK_ASYNC:
			ok = v->etcd_reachable && !v->sync_listed && view_is_replica(v, req);
			break;
		case HK_SYNC:
			ok = view_is_sync(v, false) && view_is_replica(v, req);
			break;
		case HK_QUORUM:
			ok = view_is_sync(v, true) && view_is_replica(v, req);
			break;
		case HK_STANDBY_LEADER:
		default:
			ok = false;
			break;
	}
	if (ok && check_tags && !tags_match(v, req->query))
		ok = false;
	return ok ? 200 : 503;
}

/* ---------- JSON ---------- */

static void
json_string(StringInfo out, const char *s)
{
	appendStringInfoChar(out, '"');
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		switch (c)
		{
			case '"':
				appendStringInfoString(out, "\\\"");
				break;
			case '\\':
				appendStringInfoString(out, "\\\\");
				break;
			case '\n':
				appendStringInfoString(out, "\\n");
				break;
			case '\r':
				appendStringInfoString(out, "\\r");
				break;
			case '\t':
				appendStringInfoString(out, "\\t");
				break;
			default:
				if (c < 0x20)
					appendStringInfo(out, "\\u%04x", c);
				else
					appendStringInfoChar(out, (char) c);
		}
	}
	appendStringInfoChar(out, '"');
}

/* Python's str(datetime) in UTC, as Patroni's json.dumps(default=str) prints. */
static void
json_timestamp(StringInfo out, TimestampTz ts)
{
	time_t		secs = (time_t) timestamptz_to_time_t(ts);
	int64		usec = (ts - time_t_to_timestamptz(secs));
	struct tm	tm;
	char		buf[64];

	if (usec < 0)
	{
		secs -= 1;
		usec += 1000000;
	}
	gmtime_r(&secs, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	appendStringInfo(out, "\"%s.%06d+00:00\"", buf, (int) usec);
}

/*
 * Does a setting changed in the configuration files wait for a restart,
 * and which (Patroni 4's pending_restart_reason, as JSON text)?  The
 * listener reloads the files on SIGHUP like every process, and marks such
 * settings in its own copy of the GUC table, so no SQL is needed.  The
 * answer changes only with a reload: health_config_reloaded() computes it
 * then, so health checks neither walk the GUC table nor read the files.
 */
static bool pending_restart = false;

void
health_config_reloaded(void)
{
	pending_restart = pg_ha_pending_restart();
	pg_ha_pending_restart_reason_refresh();
}

/* name of a WAL sender's role, as the HA worker last resolved it; false if not yet */
static bool
replication_role_name(Oid roleid, char *name)
{
	bool		found = false;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	for (int i = 0; i < PG_HA_REPL_ROLES && !found; i++)
	{
		if (pg_ha_shared->repl_role_oid[i] == roleid)
		{
			memcpy(name, pg_ha_shared->repl_role_name[i], NAMEDATALEN);
			found = true;
		}
	}
	LWLockRelease(pg_ha_shared->lock);
	return found;
}

/*
 * pg_stat_replication's sync_state of WAL sender i (pid), as
 * pg_stat_get_wal_senders decides it: "async" outside
 * synchronous_standby_names, "sync" or "quorum" for the standbys
 * SyncRepGetCandidateStandbys returns (it reads only the WAL sender slots
 * and this process's parsed synchronous_standby_names, current as of the
 * listener's last reload), "potential" for the others.
 */
static const char *
walsender_sync_state(int i, pid_t pid, int priority, const SyncRepStandbyData *sync, int nsync)
{
	if (priority == 0)
		return "async";
	for (int j = 0; j < nsync; j++)
		if (sync[j].walsnd_index == i && sync[j].pid == pid)
			return SyncRepConfig->syncrep_method == SYNC_REP_PRIORITY ? "sync" : "quorum";
	return "potential";
}

/*
 * Patroni's "replication": one entry per WAL sender, from the walsender
 * slots and the backend status array, both in shared memory.  "usename"
 * needs the catalog, which the listener cannot read: the HA worker resolves
 * the role names each cycle (null until it has).  sync_state is
 * pg_stat_replication's (walsender_sync_state).
 */
static void
replication_json(StringInfo out)
{
	int			nbackends = -1;
	bool		first = true;
	SyncRepStandbyData *sync;
	int			nsync = SyncRepGetCandidateStandbys(&sync);

	for (int i = 0; i < max_wal_senders; i++)
	{
		WalSnd	   *w = &WalSndCtl->walsnds[i];
		pid_t		pid;
		WalSndState state;
		int			priority;
		const char *appname = "";
		char		addr[NI_MAXHOST] = "";
		char		usename[NAMEDATALEN];
		bool		have_usename = false;

		SpinLockAcquire(&w->mutex);
		pid = w->pid;
		state = w->state;
		priority = w->sync_standby_priority;
		SpinLockRelease(&w->mutex);
		if (pid == 0)
			continue;

		/* a copy of the backend status array, taken once per document */
		if (nbackends < 0)
			nbackends = pgstat_fetch_stat_numbackends();
		for (int b = 1; b <= nbackends; b++)
		{
			LocalPgBackendStatus *l = pgstat_fetch_stat_local_beentry(b);
			PgBackendStatus *be = l ? &l->backendStatus : NULL;

			if (be == NULL || be->st_procpid != pid)
				continue;
			appname = be->st_appname ? be->st_appname : "";
			have_usename = replication_role_name(be->st_userid, usename);
			if (be->st_clientaddr.addr.ss_family == AF_INET ||
				be->st_clientaddr.addr.ss_family == AF_INET6)
				(void) pg_getnameinfo_all(&be->st_clientaddr.addr, be->st_clientaddr.salen,
										  addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
			break;
		}

		appendStringInfoString(out, first ? ",\"replication\":[{" : ",{");
		first = false;
		appendStringInfoString(out, "\"usename\":");
		if (have_usename)
			json_string(out, usename);
		else
			appendStringInfoString(out, "null");
		appendStringInfoString(out, ",\"application_name\":");
		json_string(out, appname);
		appendStringInfoString(out, ",\"client_addr\":");
		if (addr[0])
			json_string(out, addr);
		else
			appendStringInfoString(out, "null");
		appendStringInfoString(out, ",\"state\":");
		json_string(out, state == WALSNDSTATE_STREAMING ? "streaming" :
					state == WALSNDSTATE_CATCHUP ? "catchup" :
					state == WALSNDSTATE_BACKUP ? "backup" :
					state == WALSNDSTATE_STOPPING ? "stopping" : "startup");
		appendStringInfo(out, ",\"sync_state\":\"%s\",\"sync_priority\":%d}",
						 walsender_sync_state(i, pid, priority, sync, nsync), priority);
	}
	pfree(sync);
	if (!first)
		appendStringInfoChar(out, ']');
	if (nbackends >= 0)
		pgstat_clear_backend_activity_snapshot();
}

/* Patroni's "tags": the true built-in ones and the user tags, when any. */
static void
status_tags_json(StringInfo out, const NodeView *v)
{
	char	   *user = patroni_tags_members(pg_ha_tags);
	bool		any = false;

	if (!v->nofailover && !v->noloadbalance && (user == NULL || user[0] == '\0'))
	{
		free(user);
		return;
	}
	appendStringInfoString(out, ",\"tags\":{");
	if (v->nofailover)
	{
		appendStringInfoString(out, "\"nofailover\":true");
		any = true;
	}
	if (v->noloadbalance)
	{
		appendStringInfo(out, "%s\"noloadbalance\":true", any ? "," : "");
		any = true;
	}
	if (user != NULL && user[0] != '\0')
		appendStringInfo(out, "%s%s", any ? "," : "", user);
	appendStringInfoChar(out, '}');
	free(user);
}

static void
status_json(StringInfo out, const NodeView *v, bool with_replication)
{
	bool		unlocked = !(v->lease_valid || (v->leader_known && v->leader[0] != '\0'));
	char		schedule[PATRONI_SCHEDULE_JSON_LEN];

	appendStringInfoString(out, "{\"state\":");
	json_string(out, v->running ? "running" : "starting");
	appendStringInfoString(out, ",\"postmaster_start_time\":");
	json_timestamp(out, PgStartTime);
	appendStringInfoString(out, ",\"role\":");
	json_string(out, v->in_recovery ? "replica" : "master");
	appendStringInfo(out, ",\"server_version\":%d", PG_VERSION_NUM);
	if (v->in_recovery)
	{
		appendStringInfo(out, ",\"xlog\":{\"received_location\":" UINT64_FORMAT
						 ",\"replayed_location\":" UINT64_FORMAT ",\"replayed_timestamp\":",
						 (uint64) (v->pos.receive_lsn ? v->pos.receive_lsn : v->pos.replay_lsn),
						 (uint64) v->pos.replay_lsn);
		if (v->replay_ts != 0)
			json_timestamp(out, v->replay_ts);
		else
			appendStringInfoString(out, "null");
		appendStringInfo(out, ",\"paused\":%s}", v->replay_paused ? "true" : "false");
	}
	else
		appendStringInfo(out, ",\"xlog\":{\"location\":" UINT64_FORMAT "}",
						 (uint64) v->pos.lsn);
	appendStringInfo(out, ",\"timeline\":%u", v->pos.timeline);
	if (view_is_sync(v, false))
		appendStringInfoString(out, ",\"sync_standby\":true");
	if (view_is_sync(v, true))
		appendStringInfoString(out, ",\"quorum_standby\":true");
	if (with_replication)
		replication_json(out);
	if (unlocked)
		appendStringInfoString(out, ",\"cluster_unlocked\":true");
	appendStringInfo(out, ",\"dcs_last_seen\":%ld",
					 v->etcd_last_ok ? (long) timestamptz_to_time_t(v->etcd_last_ok) : 0L);
	status_tags_json(out, v);
	appendStringInfo(out, ",\"database_system_identifier\":\"" UINT64_FORMAT "\"",
					 GetSystemIdentifier());
	appendStringInfoString(out, ",\"patroni\":{\"version\":");
	json_string(out, PG_HA_VERSION);
	appendStringInfoString(out, ",\"scope\":");
	json_string(out, v->cluster);
	appendStringInfoChar(out, '}');
	if (pending_restart)
		appendStringInfoString(out, ",\"pending_restart\":true");
	if (pending_restart && pg_ha_pending_restart_reason_text())
		appendStringInfo(out, ",\"pending_restart_reason\":%s", pg_ha_pending_restart_reason_text());
	/* as Patroni's: without the postmaster start time the member key has */
	if (v->restart_scheduled &&
		patroni_restart_schedule_json(&v->restart_schedule, NULL, schedule, sizeof(schedule)) > 0)
		appendStringInfo(out, ",\"scheduled_restart\":%s", schedule);
	if (v->paused)
		appendStringInfoString(out, ",\"pause\":true");
	/* pg_ha's own view, which Patroni has no names for */
	appendStringInfoString(out, ",\"pg_ha\":{\"state\":");
	json_string(out, ha_state_name(v->ha_state));
	appendStringInfo(out, ",\"lease_valid\":%s,\"fenced\":%s,\"leader\":",
					 v->lease_valid ? "true" : "false", v->fenced ? "true" : "false");
	if (v->lease_valid)
		json_string(out, v->node);
	else if (v->leader_known)
		json_string(out, v->leader);
	else
		appendStringInfoString(out, "null");
	appendStringInfo(out, ",\"etcd_reachable\":%s}}", v->etcd_reachable ? "true" : "false");
}

/*
 * GET /cluster: the members as the HA worker last read them from etcd
 * (shared memory; the listener never calls etcd).  Before the worker has
 * read etcd, only this node and the leader's name.
 */
static void
cluster_json(StringInfo out, const NodeView *v)
{
	bool		self_leader = v->lease_valid && !v->fenced;
	char	   *members = palloc(PG_HA_MEMBERS_JSON_LEN);
	char		scheduled[sizeof(pg_ha_shared->scheduled_switchover_json)];

	/* the HA worker's copy of the member keys, when it has one */
	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	memcpy(members, pg_ha_shared->members_json, PG_HA_MEMBERS_JSON_LEN);
	strlcpy(scheduled, pg_ha_shared->scheduled_switchover_json, sizeof(scheduled));
	LWLockRelease(pg_ha_shared->lock);
	members[PG_HA_MEMBERS_JSON_LEN - 1] = '\0';
	if (members[0] == '[')
	{
		appendStringInfoString(out, "{\"members\":");
		appendStringInfoString(out, members);
		appendStringInfoString(out, ",\"scope\":");
		json_string(out, v->cluster);
		if (v->paused)
			appendStringInfoString(out, ",\"pause\":true");
		if (scheduled[0])
			appendStringInfo(out, ",\"scheduled_switchover\":%s", scheduled);
		appendStringInfoChar(out, '}');
		pfree(members);
		return;
	}
	pfree(members);

	appendStringInfoString(out, "{\"members\":[{\"name\":");
	json_string(out, v->node);
	appendStringInfoString(out, ",\"role\":");
	json_string(out, self_leader ? "leader" : (v->in_recovery ? "replica" : "master"));
	appendStringInfoString(out, ",\"state\":");
	json_string(out, !v->running ? "starting" :
				(v->in_recovery ? (v->pos.streaming ? "streaming" : "in archive recovery") : "running"));
	if (pg_ha_api_listen && pg_ha_api_listen[0])
	{
		char		addr[300];
		char		url[400];
		const char *colon = strrchr(pg_ha_api_listen, ':');

		pg_ha_effective_connect_address(addr, sizeof(addr));
		if (strrchr(addr, ':'))
			*strrchr(addr, ':') = '\0';
		snprintf(url, sizeof(url), "%s://%s:%s/patroni", http_api_scheme(), addr,
				 colon ? colon + 1 : "8008");
		appendStringInfoString(out, ",\"api_url\":");
		json_string(out, url);
	}
	appendStringInfo(out, ",\"timeline\":%u", v->pos.timeline);
	if (v->in_recovery && v->cluster_optime != 0)
		appendStringInfo(out, ",\"lag\":" UINT64_FORMAT,
						 (uint64) (v->cluster_optime > v->pos.replay_lsn ?
								   v->cluster_optime - v->pos.replay_lsn : 0));
	appendStringInfoChar(out, '}');
	if (v->leader_known && v->leader[0] != '\0' && strcmp(v->leader, v->node) != 0)
	{
		appendStringInfoString(out, ",{\"name\":");
		json_string(out, v->leader);
		appendStringInfoString(out, ",\"role\":\"leader\",\"state\":\"running\"}");
	}
	appendStringInfoString(out, "],\"scope\":");
	json_string(out, v->cluster);
	if (v->paused)
		appendStringInfoString(out, ",\"pause\":true");
	appendStringInfoChar(out, '}');
}

void
health_handle(const HttpRequest *req, HttpResponse *resp)
{
	NodeView	v;
	const Route *route = NULL;
	char		path[HTTP_MAX_URL + 1];
	size_t		plen;

	/* Patroni treats "/primary/" like "/primary" */
	strlcpy(path, req->path, sizeof(path));
	plen = strlen(path);
	while (plen > 1 && path[plen - 1] == '/')
		path[--plen] = '\0';

	if (req->method == HTTP_M_OTHER)
	{
		resp->status = 405;
		resp->extra_headers = "Allow: GET, HEAD, OPTIONS\r\n";
		return;
	}

	for (size_t i = 0; i < lengthof(routes); i++)
	{
		if (strcmp(path, routes[i].path) == 0)
		{
			route = &routes[i];
			break;
		}
	}
	if (route == NULL)
	{
		/* Patroni answers every GET it has no handler for like a health check that failed */
		resp->status = 503;
		resp->content_type = "text/plain; charset=utf-8";
		appendStringInfoString(resp->body, "no such endpoint\n");
		return;
	}

	if (route->kind == HK_METRICS)
	{
		resp->status = 200;
		resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
		if (req->method == HTTP_M_GET)
			metrics_patroni(resp->body);
		return;
	}

	take_view(&v);
	switch (route->kind)
	{
		case HK_PATRONI:
			resp->status = 200;
			break;
		case HK_CLUSTER:
		case HK_HISTORY:
			resp->status = 200;
			break;
		default:
			resp->status = health_status(route->kind, &v, req);
			break;
	}
	if (req->method != HTTP_M_GET)
		return;					/* HEAD / OPTIONS: status line only */

	resp->content_type = "application/json";
	if (route->kind == HK_CLUSTER)
		cluster_json(resp->body, &v);
	else if (route->kind == HK_HISTORY)
		appendStringInfoString(resp->body, "[]");	/* http_control.c serves GET */
	else
		/* health GETs answer fast: the replication list is for /patroni */
		status_json(resp->body, &v, route->kind == HK_PATRONI);
}

/* ---------- patroni_* metrics (GET /metrics on the API port) ---------- */

static void
patroni_metric(StringInfo out, const char *name, const char *type, const char *help,
			   const char *scope, double value)
{
	appendStringInfo(out, "# HELP %s %s\n# TYPE %s %s\n%s{scope=\"", name, help, name, type, name);
	metrics_append_label_value(out, scope);
	appendStringInfoString(out, "\"} ");
	metrics_append_double(out, value);
	appendStringInfoChar(out, '\n');
}

/*
 * The families of Patroni 3.0.2's /metrics, same names, types and meaning
 * (Pigsty's dashboards read them), from the same view as the health codes.
 * patroni_primary follows Patroni's definition (postgres is not in
 * recovery); pg_ha_is_leader on the metrics port says whether the lease is
 * held.
 */
void
metrics_patroni(StringInfo out)
{
	NodeView	v;
	const char *scope;
	bool		primary;
	int			ver[3] = {0, 0, 0};
	DynSettings dyn;
	bool		failsafe;

	take_view(&v);
	pg_ha_dyn_current(&dyn);
	failsafe = dyn.failsafe_mode;
	scope = v.cluster;
	primary = !v.in_recovery;
	sscanf(PG_HA_VERSION, "%d.%d.%d", &ver[0], &ver[1], &ver[2]);

	patroni_metric(out, "patroni_version", "gauge", "pg_ha version without periods (Patroni semver layout).",
				   scope, ver[0] * 10000 + ver[1] * 100 + ver[2]);
	patroni_metric(out, "patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.",
				   scope, v.running ? 1 : 0);
	patroni_metric(out, "patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started.",
				   scope, (double) timestamptz_to_time_t(PgStartTime));
	patroni_metric(out, "patroni_master", "gauge", "Value is 1 if this node is the leader, 0 otherwise.",
				   scope, primary ? 1 : 0);
	patroni_metric(out, "patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.",
				   scope, primary ? 1 : 0);
	patroni_metric(out, "patroni_xlog_location", "counter",
				   "Current location of the Postgres transaction log, 0 if this node is not the leader.",
				   scope, primary ? (double) v.pos.lsn : 0);
	patroni_metric(out, "patroni_standby_leader", "gauge",
				   "Value is 1 if this node is the standby_leader, 0 otherwise.", scope, 0);
	patroni_metric(out, "patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.",
				   scope, v.in_recovery ? 1 : 0);
	patroni_metric(out, "patroni_sync_standby", "gauge",
				   "Value is 1 if this node is a sync standby replica, 0 otherwise.", scope,
				   view_is_sync(&v, false) ? 1 : 0);
	patroni_metric(out, "patroni_quorum_standby", "gauge",
				   "Value is 1 if this node is a quorum standby replica, 0 otherwise.", scope,
				   view_is_sync(&v, true) ? 1 : 0);
	patroni_metric(out, "patroni_xlog_received_location", "counter",
				   "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
				   scope, v.in_recovery ? (double) (v.pos.receive_lsn ? v.pos.receive_lsn : v.pos.replay_lsn) : 0);
	patroni_metric(out, "patroni_xlog_replayed_location", "counter",
				   "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
				   scope, v.in_recovery ? (double) v.pos.replay_lsn : 0);
	patroni_metric(out, "patroni_xlog_replayed_timestamp", "gauge",
				   "Current timestamp of the replayed Postgres transaction log, 0 if null.",
				   scope, v.replay_ts ? (double) (v.replay_ts / 1000000.0 +
												  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY) : 0);
	patroni_metric(out, "patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
				   scope, v.replay_paused ? 1 : 0);
	patroni_metric(out, "patroni_postgres_server_version", "gauge",
				   "Version of Postgres (if running), 0 otherwise.", scope, v.running ? PG_VERSION_NUM : 0);
	patroni_metric(out, "patroni_cluster_unlocked", "gauge",
				   "Value is 1 if the cluster is unlocked, 0 if locked.",
				   scope, (v.lease_valid || (v.leader_known && v.leader[0] != '\0')) ? 0 : 1);
	patroni_metric(out, "patroni_failsafe_mode_is_active", "gauge",
				   "Value is 1 if failsafe mode is active, 0 if inactive.", scope,
				   (failsafe && v.lease_valid && !v.etcd_reachable) ? 1 : 0);
	patroni_metric(out, "patroni_postgres_timeline", "counter",
				   "Postgres timeline of this node (if running), 0 otherwise.", scope, v.pos.timeline);
	patroni_metric(out, "patroni_dcs_last_seen", "gauge",
				   "Epoch timestamp when DCS was last contacted successfully by Patroni.",
				   scope, v.etcd_last_ok ? (double) timestamptz_to_time_t(v.etcd_last_ok) : 0);
	patroni_metric(out, "patroni_pending_restart", "gauge",
				   "Value is 1 if the node needs a restart, 0 otherwise.", scope,
				   pending_restart ? 1 : 0);
	patroni_metric(out, "patroni_is_paused", "gauge",
				   "Value is 1 if auto failover is disabled, 0 otherwise.", scope, v.paused ? 1 : 0);
}
