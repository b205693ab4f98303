/*
 * metrics.c - Prometheus metrics on pg_ha.metrics_listen: the GUCs, the
 * shared cache the collector (metrics_pg.c) fills, the worker
 * registrations, and the serving side that runs in the listener.
 *
 * A scrape never runs SQL.  It writes, in text format 0.0.4:
 *   - pg_up and pg_in_recovery, read from shared memory at scrape time;
 *   - the pg_exporter-named families (pg_db_*, pg_table_*, ...), copied
 *     from the cache the collector fills; a scrape that finds the cache
 *     older than pg_ha.metrics_cache_ttl wakes the collector and is parked
 *     by the listener (which goes on serving everyone else) until the
 *     refresh is published, at most METRICS_MAX_WAIT_US;
 *   - the pg_ha_* families, from PgHaShared, and the scrape's own duration.
 * The collector refreshes only when a scrape asks, so each scrape costs at
 * most one refresh, scrapers within the TTL share one, and an unscraped
 * node pays nothing.
 */
#include "pg_ha.h"
#include "archive.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"

#include <limits.h>
#include <math.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "common/shortest_dec.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

char	   *pg_ha_metrics_listen = NULL;
int			pg_ha_metrics_cache_ttl = 5;
int			pg_ha_metrics_table_limit = 256;
int			pg_ha_metrics_size_interval = 300;
int			pg_ha_metrics_rank_interval = 60;
int			pg_ha_metrics_buffer_kb = 4096;
char	   *pg_ha_metrics_database = NULL;

/*
 * The cache.  `lock` guards all of it: the
 * collector takes it exclusively only to memcpy a finished text in, the
 * listener shared only to memcpy it out, so neither waits for SQL.
 */
typedef struct MetricsCache
{
	LWLock	   *lock;
	Latch	   *collector_latch;
	pid_t		collector_pid;
	int64		collected_at_us;	/* monotonic; 0 = never */
	int64		duration_us;	/* of the last refresh */
	uint64		refreshes;
	uint64		errors;			/* queries that failed, total */
	bool		truncated;		/* last text did not fit: tail dropped */
	CollectorState collector_state;
	int			quick_exits;	/* collector exits in a row soon after start */
	size_t		capacity;
	size_t		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} MetricsCache;

static MetricsCache *metrics_cache = NULL;

static Size
metrics_cache_size(void)
{
	return add_size(offsetof(MetricsCache, data),
					mul_size((Size) pg_ha_metrics_buffer_kb, 1024));
}

static bool
check_metrics_listen(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	const char *colon;
	char	   *end;
	long		port;

	if (v[0] == '\0')
		return true;
	colon = strrchr(v, ':');
	if (colon == NULL || colon == v || strlen(v) > 255)
	{
		GUC_check_errdetail("\"%s\" is not of the form host:port.", v);
		GUC_check_errhint("For example \"0.0.0.0:9630\".");
		return false;
	}
	for (const char *p = v; p < colon; p++)
	{
		if (*p <= ' ' || *p == '/' || *p == '@' || *p == '"' || *p == '\'' ||
			*p == '\\' || (unsigned char) *p >= 0x7f)
		{
			GUC_check_errdetail("The host part of \"%s\" contains an invalid character.", v);
			return false;
		}
	}
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535)
	{
		GUC_check_errdetail("The port in \"%s\" must be a number from 1 to 65535.", v);
		return false;
	}
	return true;
}

void
pg_ha_http_define_gucs(void)
{
	DefineCustomStringVariable("pg_ha.metrics_listen",
							   "host:port of the Prometheus metrics endpoint; empty disables it.",
							   NULL,
							   &pg_ha_metrics_listen, "0.0.0.0:9630",
							   PGC_POSTMASTER, 0, check_metrics_listen, NULL, NULL);
	DefineCustomIntVariable("pg_ha.metrics_cache_ttl",
							"How old the cached database metrics may be before a scrape triggers a refresh.",
							NULL,
							&pg_ha_metrics_cache_ttl, 5, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.metrics_table_limit",
							"Tables, indexes and functions exported per family (the most active first).",
							NULL,
							&pg_ha_metrics_table_limit, 256, 0, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.metrics_rank_interval",
							"How often the most active tables, indexes and functions are chosen again for the per-object families.",
							NULL,
							&pg_ha_metrics_rank_interval, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.metrics_size_interval",
							"How often database sizes (pg_size_bytes) are recomputed; they walk every data file.",
							NULL,
							&pg_ha_metrics_size_interval, 300, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.metrics_buffer_size",
							"Shared memory for the cached metrics text; families that do not fit are dropped.",
							NULL,
							&pg_ha_metrics_buffer_kb, 4096, 64, 1024 * 1024,
							PGC_POSTMASTER, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.metrics_database",
							   "Database the metrics collector connects to (per-table families come from it).",
							   NULL,
							   &pg_ha_metrics_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

void
pg_ha_http_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(metrics_cache_size()));
	RequestNamedLWLockTranche("pg_ha_metrics", 1);
}

void
pg_ha_http_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	metrics_cache = ShmemInitStruct("pg_ha_metrics", metrics_cache_size(), &found);
	if (!found)
	{
		memset(metrics_cache, 0, offsetof(MetricsCache, data));
		metrics_cache->lock = &(GetNamedLWLockTranche("pg_ha_metrics"))->lock;
		metrics_cache->capacity = (size_t) pg_ha_metrics_buffer_kb * 1024;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
pg_ha_http_register_workers(void)
{
	BackgroundWorker bgw;
	bool		api = pg_ha_api_listen && pg_ha_api_listen[0];
	bool		metrics = pg_ha_metrics_listen && pg_ha_metrics_listen[0];

	if (!api && !metrics)
		return;

	/*
	 * The listener starts with the postmaster, before recovery: HAProxy gets
	 * 503s from a recovering node instead of connection errors, and
	 * /liveness works while a long recovery runs.
	 */
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_PostmasterStart;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_ha_http_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_ha http", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_ha http", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);

	if (!metrics)
		return;

	/* the collector runs SQL: it needs a consistent database */
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	/* soon: the collector backs off itself when it keeps failing to start */
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_ha_metrics_collector_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_ha metrics collector", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_ha metrics collector", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* ---------- collector side ---------- */

void
metrics_cache_register_collector(void)
{
	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	metrics_cache->collector_latch = MyLatch;
	metrics_cache->collector_pid = MyProcPid;
	LWLockRelease(metrics_cache->lock);
}

void
metrics_cache_unregister_collector(int code, Datum arg)
{
	if (metrics_cache == NULL)
		return;
	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	metrics_cache->collector_latch = NULL;
	metrics_cache->collector_pid = 0;
	LWLockRelease(metrics_cache->lock);
}

/*
 * The collector's state, for pg_ha_metrics_collector_up and _error.  Any
 * state but running drops the cached text: figures the collector no longer
 * stands behind are not served.
 */
void
metrics_collector_set_state(CollectorState state)
{
	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	metrics_cache->collector_state = state;
	if (state != COLLECTOR_RUNNING)
		metrics_cache->len = 0;
	LWLockRelease(metrics_cache->lock);
}

/*
 * A collector (re)starts: its figures are gone until it has connected and
 * checked its role.  A failure to connect stays reported while it waits to
 * try again.
 */
void
metrics_collector_starting(void)
{
	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	if (metrics_cache->collector_state != COLLECTOR_CONNECT_FAILED)
		metrics_cache->collector_state = COLLECTOR_STARTING;
	metrics_cache->len = 0;
	LWLockRelease(metrics_cache->lock);
}

/*
 * Counts a collector exit: quick ones in a row (connection refused, a role
 * that does not exist) lengthen the wait before the next try; a collector
 * that ran a while starts the count again.  Returns the count.
 */
int
metrics_collector_exited(bool quick)
{
	int			n;

	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	metrics_cache->quick_exits = quick ? Min(metrics_cache->quick_exits + 1, 30) : 0;
	n = metrics_cache->quick_exits;
	LWLockRelease(metrics_cache->lock);
	return n;
}

int
metrics_collector_quick_exits(void)
{
	int			n;

	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	n = metrics_cache->quick_exits;
	LWLockRelease(metrics_cache->lock);
	return n;
}

/* Age of the cached text in microseconds, INT64_MAX when there is none. */
int64
metrics_cache_age_us(int64 now_us)
{
	int64		at;

	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	at = metrics_cache->collected_at_us;
	LWLockRelease(metrics_cache->lock);
	return at == 0 ? INT64_MAX : now_us - at;
}

uint64
metrics_cache_generation(void)
{
	uint64		gen;

	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	gen = metrics_cache->refreshes;
	LWLockRelease(metrics_cache->lock);
	return gen;
}

/*
 * Publishes text (whole families, each ending in '\n').  When it does not
 * fit, it is cut after the last complete family that does, and the cut is
 * reported by pg_ha_metrics_cache_truncated.
 */
void
metrics_cache_publish(const char *text, size_t len, int64 duration_us, uint64 errors)
{
	size_t		n = len;
	bool		truncated = false;

	if (n > metrics_cache->capacity)
	{
		truncated = true;
		n = metrics_cache->capacity;
		/* back up to the start of a family: a "# HELP" line */
		while (n > 0 && !(text[n - 1] == '\n' && n + 6 <= len &&
						  strncmp(text + n, "# HELP", 6) == 0))
			n--;
	}
	LWLockAcquire(metrics_cache->lock, LW_EXCLUSIVE);
	memcpy(metrics_cache->data, text, n);
	metrics_cache->len = n;
	metrics_cache->truncated = truncated;
	metrics_cache->collected_at_us = pg_ha_monotonic_us();
	metrics_cache->duration_us = duration_us;
	metrics_cache->refreshes++;
	metrics_cache->errors += errors;
	LWLockRelease(metrics_cache->lock);
}

/* ---------- serving side (listener) ---------- */

/* set by a scrape that found the cache stale; see metrics_after_responses */
static bool collector_poke_pending = false;

/*
 * Wakes the collector for a stale cache.  The listener calls this once its
 * answers are written, so the refresh does not compete with the scrape
 * that asked for it.
 */
void
metrics_after_responses(void)
{
	if (!collector_poke_pending)
		return;
	collector_poke_pending = false;
	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	if (metrics_cache->collector_latch != NULL)
		SetLatch(metrics_cache->collector_latch);
	LWLockRelease(metrics_cache->lock);
}

/* Shortest text that reads back as the same double (as float8out does). */
void
metrics_append_double(StringInfo out, double v)
{
	char		buf[DOUBLE_SHORTEST_DECIMAL_LEN];

	if (isnan(v))
		appendStringInfoString(out, "NaN");
	else if (isinf(v))
		appendStringInfoString(out, v > 0 ? "+Inf" : "-Inf");
	else
	{
		double_to_shortest_decimal_buf(v, buf);
		appendStringInfoString(out, buf);
	}
}

void
metrics_append_label_value(StringInfo out, const char *s)
{
	for (; *s; s++)
	{
		if (*s == '\\')
			appendStringInfoString(out, "\\\\");
		else if (*s == '"')
			appendStringInfoString(out, "\\\"");
		else if (*s == '\n')
			appendStringInfoString(out, "\\n");
		else
			appendStringInfoChar(out, *s);
	}
}

static void
family(StringInfo out, const char *name, const char *type, const char *help)
{
	appendStringInfo(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
gauge(StringInfo out, const char *name, const char *help, double value)
{
	family(out, name, "gauge", help);
	appendStringInfo(out, "%s ", name);
	metrics_append_double(out, value);
	appendStringInfoChar(out, '\n');
}

static void
counter(StringInfo out, const char *name, const char *help, uint64 value)
{
	family(out, name, "counter", help);
	appendStringInfo(out, "%s " UINT64_FORMAT "\n", name, value);
}

/*
 * Whether the collector runs its queries, and if not why: it could not
 * connect as pg_ha.metrics_role (missing, not allowed to log in, database
 * missing: the server log says which), or it refuses to run them as that
 * role.  One sample per reason, so the series do not come and go.
 */
static void
collector_families(StringInfo out, CollectorState state)
{
	static const struct
	{
		CollectorState state;
		const char *reason;
	}			reasons[] = {
		{COLLECTOR_CONNECT_FAILED, "connect_failed"},
		{COLLECTOR_ROLE_IS_SUPERUSER, "role_is_superuser"},
		{COLLECTOR_ROLE_NOT_MONITOR, "role_not_pg_monitor"},
	};

	gauge(out, "pg_ha_metrics_collector_up",
		  "1 if the metrics collector is connected as pg_ha.metrics_role and runs its queries",
		  state == COLLECTOR_RUNNING ? 1 : 0);
	family(out, "pg_ha_metrics_collector_error", "gauge",
		   "1 for the reason the metrics collector runs no queries (details in the server log)");
	for (int i = 0; i < (int) lengthof(reasons); i++)
		appendStringInfo(out, "pg_ha_metrics_collector_error{reason=\"%s\"} %d\n",
						 reasons[i].reason, state == reasons[i].state ? 1 : 0);
}

static void
pg_ha_families(StringInfo out, int64 now_us)
{
	HaState		state = (HaState) pg_atomic_read_u32(&pg_ha_shared->state);
	uint64		deadline = pg_atomic_read_u64(&pg_ha_shared->lease_deadline_us);
	bool		lease_valid = pg_ha_lease_valid(now_us);
	bool		fenced = pg_atomic_read_u32(&pg_ha_shared->fence) != 0;
	double		remaining = 0;
	bool		paused;
	bool		etcd_reachable;
	TimeLineID	timeline;
	uint64		etcd_requests;
	uint64		etcd_errors;
	uint64		etcd_latency_us;
	uint64		failovers;
	uint64		switchovers;
	TimestampTz etcd_last_ok;
	int64		collected_at;
	int64		duration_us;
	uint64		refreshes;
	uint64		errors;
	bool		truncated;
	size_t		cached_len;
	CollectorState cstate;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	paused = pg_ha_shared->paused;
	etcd_reachable = pg_ha_shared->etcd_reachable;
	timeline = pg_ha_shared->timeline;
	etcd_requests = pg_ha_shared->etcd_requests;
	etcd_errors = pg_ha_shared->etcd_errors;
	etcd_latency_us = pg_ha_shared->etcd_latency_us;
	etcd_last_ok = pg_ha_shared->etcd_last_ok;
	failovers = pg_ha_shared->failovers;
	switchovers = pg_ha_shared->switchovers;
	LWLockRelease(pg_ha_shared->lock);

	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	collected_at = metrics_cache->collected_at_us;
	duration_us = metrics_cache->duration_us;
	refreshes = metrics_cache->refreshes;
	errors = metrics_cache->errors;
	truncated = metrics_cache->truncated;
	cached_len = metrics_cache->len;
	cstate = metrics_cache->collector_state;
	LWLockRelease(metrics_cache->lock);

	if (lease_valid)
		remaining = ((double) deadline - pg_ha_lease_margin_us() - now_us) / 1e6;

	gauge(out, "pg_ha_is_leader", "1 if this node holds an unexpired leader lease", lease_valid ? 1 : 0);
	gauge(out, "pg_ha_lease_remaining_seconds",
		  "Seconds of write authority left before the lease deadline minus the safety margin", remaining);
	gauge(out, "pg_ha_fenced", "1 if the HA worker has raised the write fence", fenced ? 1 : 0);
	gauge(out, "pg_ha_paused", "1 if automatic failover is paused (maintenance mode)", paused ? 1 : 0);
	gauge(out, "pg_ha_timeline", "Timeline the HA worker last published", timeline);
	family(out, "pg_ha_state", "gauge", "State of the HA worker: 1 for the current state");
	for (int s = 0; s < HA_NUM_STATES; s++)
	{
		appendStringInfoString(out, "pg_ha_state{state=\"");
		metrics_append_label_value(out, ha_state_name((HaState) s));
		appendStringInfo(out, "\"} %d\n", s == (int) state ? 1 : 0);
	}
	counter(out, "pg_ha_failovers_total",
			"Times this node was promoted by an automatic or manual failover since postgres started",
			failovers);
	counter(out, "pg_ha_switchovers_total",
			"Times this node was promoted by a switchover since postgres started", switchovers);
	gauge(out, "pg_ha_etcd_reachable", "1 if the last etcd call succeeded", etcd_reachable ? 1 : 0);
	counter(out, "pg_ha_etcd_requests_total", "etcd requests sent by the HA worker", etcd_requests);
	counter(out, "pg_ha_etcd_errors_total", "etcd requests that failed", etcd_errors);
	gauge(out, "pg_ha_etcd_latency_seconds", "Latency of the last etcd request", etcd_latency_us / 1e6);
	gauge(out, "pg_ha_etcd_last_ok_timestamp_seconds", "Unix time of the last successful etcd call (0: never)",
		  etcd_last_ok ? (double) timestamptz_to_time_t(etcd_last_ok) : 0);
	gauge(out, "pg_ha_metrics_cache_age_seconds", "Age of the cached database metrics (-1: none yet)",
		  collected_at ? (now_us - collected_at) / 1e6 : -1);
	gauge(out, "pg_ha_metrics_refresh_duration_seconds", "Duration of the last metrics cache refresh",
		  duration_us / 1e6);
	counter(out, "pg_ha_metrics_refreshes_total", "Metrics cache refreshes", refreshes);
	counter(out, "pg_ha_metrics_query_errors_total", "Collector queries that failed", errors);
	gauge(out, "pg_ha_metrics_cache_bytes", "Size of the cached metrics text", (double) cached_len);
	gauge(out, "pg_ha_metrics_cache_truncated",
		  "1 if the last refresh did not fit pg_ha.metrics_buffer_size and families were dropped",
		  truncated ? 1 : 0);
	collector_families(out, cstate);
}

/*
 * Synchronous mode, from the HA worker's copy of the sync key: one series
 * per listed standby with the Unix time since which this node has seen it
 * listed, and whether commits on this leader wait for a missing standby.
 */
static void
pg_ha_sync_families(StringInfo out)
{
	int			n;
	char		names[PG_HA_SYNC_MAX][PG_HA_NAME_LEN];
	TimestampTz since[PG_HA_SYNC_MAX];
	bool		waiting;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	n = Min(pg_ha_shared->sync_count, PG_HA_SYNC_MAX);
	memcpy(names, pg_ha_shared->sync_names, sizeof(names));
	memcpy(since, pg_ha_shared->sync_since, sizeof(since));
	waiting = pg_ha_shared->sync_waiting[0] != '\0';
	LWLockRelease(pg_ha_shared->lock);

	gauge(out, "pg_ha_sync_standbys", "Standbys the sync key lists as synchronous", n);
	family(out, "pg_ha_sync_standby_since_timestamp_seconds", "gauge",
		   "Unix time since which this node has seen the member listed as a synchronous standby");
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(out, "pg_ha_sync_standby_since_timestamp_seconds{member=\"");
		metrics_append_label_value(out, names[i]);
		appendStringInfoString(out, "\"} ");
		metrics_append_double(out, (double) timestamptz_to_time_t(since[i]));
		appendStringInfoChar(out, '\n');
	}
	gauge(out, "pg_ha_sync_commits_waiting",
		  "1 if commits on this leader wait for a synchronous standby that is not connected", waiting ? 1 : 0);
}

/* WAL archive module (archive.h): lock-free counters, two timestamps. */
static void
pg_ha_archive_families(StringInfo out)
{
	PgHaArchiveShared *a = pg_ha_archive_shared;
	TimestampTz last_ok;
	TimestampTz last_failed;

	if (a == NULL)
		return;
	LWLockAcquire(a->lock, LW_SHARED);
	last_ok = a->last_archived_at;
	last_failed = a->last_failed_at;
	LWLockRelease(a->lock);

	counter(out, "pg_ha_archive_archived_total", "WAL files the archive module confirmed to the archiver",
			pg_atomic_read_u64(&a->archived_count));
	counter(out, "pg_ha_archive_archived_bytes_total", "Original size of the WAL files archived",
			pg_atomic_read_u64(&a->archived_bytes));
	counter(out, "pg_ha_archive_stored_bytes_total", "Size of the archived WAL files in the repository",
			pg_atomic_read_u64(&a->stored_bytes));
	counter(out, "pg_ha_archive_pushed_ahead_total", "WAL files pushed by look-ahead workers",
			pg_atomic_read_u64(&a->pushed_ahead));
	counter(out, "pg_ha_archive_lookahead_hits_total", "Archiver requests found already pushed ahead",
			pg_atomic_read_u64(&a->lookahead_hits));
	counter(out, "pg_ha_archive_already_archived_total", "Files offered again with identical content, accepted",
			pg_atomic_read_u64(&a->already_count));
	counter(out, "pg_ha_archive_failed_total", "Archiver calls that failed",
			pg_atomic_read_u64(&a->failed_count));
	counter(out, "pg_ha_archive_mismatch_total", "Files whose repository copy holds different content",
			pg_atomic_read_u64(&a->mismatch_count));
	counter(out, "pg_ha_archive_corrupt_total", "Repository objects that failed their checks",
			pg_atomic_read_u64(&a->corrupt_count));
	gauge(out, "pg_ha_archive_last_archived_timestamp_seconds", "Unix time of the last archived file (0: none)",
		  last_ok ? (double) timestamptz_to_time_t(last_ok) : 0);
	gauge(out, "pg_ha_archive_last_failed_timestamp_seconds", "Unix time of the last failure (0: none)",
		  last_failed ? (double) timestamptz_to_time_t(last_failed) : 0);
}

void
metrics_handle(const HttpRequest *req, HttpResponse *resp)
{
	int64		start = pg_ha_monotonic_us();
	bool		in_recovery;
	bool		running;

	if (strcmp(req->path, "/metrics") != 0)
	{
		resp->status = (strcmp(req->path, "/") == 0) ? 200 : 404;
		resp->content_type = "text/plain; charset=utf-8";
		appendStringInfoString(resp->body, resp->status == 200 ?
							   "pg_ha metrics: GET /metrics\n" : "not found\n");
		return;
	}
	if (req->method == HTTP_M_OTHER)
	{
		resp->status = 405;
		resp->extra_headers = "Allow: GET, HEAD, OPTIONS\r\n";
		return;
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	if (req->method != HTTP_M_GET)
		return;

	/*
	 * A stale cache and a live collector: ask for a refresh and let the
	 * listener park this scrape until it is published (at most
	 * METRICS_MAX_WAIT_US).  Scrapes within the TTL share one refresh.
	 */
	if (resp->may_defer)
	{
		bool		stale;

		LWLockAcquire(metrics_cache->lock, LW_SHARED);
		stale = metrics_cache->collector_latch != NULL &&
			(metrics_cache->collected_at_us == 0 ||
			 start - metrics_cache->collected_at_us >= pg_ha_metrics_cache_ttl * INT64CONST(1000000));
		LWLockRelease(metrics_cache->lock);
		if (stale)
		{
			collector_poke_pending = true;
			resp->defer = true;
			return;
		}
	}

	in_recovery = RecoveryInProgress();
	running = !in_recovery || HotStandbyActive();
	gauge(resp->body, "pg_up", "1 if postgres accepts connections", running ? 1 : 0);
	gauge(resp->body, "pg_in_recovery", "1 if postgres is in recovery (a replica)", in_recovery ? 1 : 0);

	/* the cache, fresh or (the wait ran out, no collector) the last one */
	LWLockAcquire(metrics_cache->lock, LW_SHARED);
	appendBinaryStringInfo(resp->body, metrics_cache->data, metrics_cache->len);
	LWLockRelease(metrics_cache->lock);

	pg_ha_families(resp->body, start);
	pg_ha_sync_families(resp->body);
	pg_ha_archive_families(resp->body);
	gauge(resp->body, "pg_ha_scrape_duration_seconds", "Time this scrape took to serve",
		  (pg_ha_monotonic_us() - start) / 1e6);
}
