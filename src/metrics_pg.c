/*
 * metrics_pg.c - the "pg_ha metrics collector" worker: runs the queries
 * behind the pg_exporter-named families (the names Pigsty's dashboards and
 * alert rules read) and publishes their text in the shared cache
 * (metrics.c) that the listener serves.
 *
 * The queries are data, in the manner of pg_exporter's collector files:
 * each has a family prefix, SQL whose text/name columns become labels and
 * whose numeric columns become one family each (<prefix>_<column>), the
 * columns that are counters, and how often it runs.  A query that fails
 * (including by lock_timeout) keeps its previous text and is counted in
 * pg_ha_metrics_query_errors_total; the others still refresh.
 *
 * Cost rules, so a scrape stays cheap with thousands of tables and never
 * queues behind DDL:
 *   - only statistics views, pg_class/pg_database catalog reads and
 *     control-file functions: no relation locks (sizes of tables come from
 *     pg_class.relpages, not pg_relation_size, which locks the relation);
 *   - per-table, per-index and per-function families are limited to the
 *     pg_ha.metrics_table_limit most active objects, chosen again every
 *     pg_ha.metrics_rank_interval (choosing walks every object; reading the
 *     chosen ones is what each refresh does);
 *   - pg_database_size walks every file of every database: it runs every
 *     pg_ha.metrics_size_interval seconds, not per refresh; pg_meta and
 *     pg_setting hold restart-only values and run once per collector;
 *   - lock_timeout 100ms and statement_timeout 10s on the session, as a
 *     backstop.
 *
 * Privileges: any client can make the collector run its queries, in a
 * database where other roles may create objects.  It connects as
 * pg_ha.metrics_role (never the bootstrap superuser), refuses to run
 * anything while that role is a superuser or lacks pg_monitor, and resolves
 * no name through a schema another role can write (see the query list).
 * When it cannot connect or refuses, /metrics says so
 * (pg_ha_metrics_collector_up/_error) and the collector backs off instead
 * of crash-looping.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

typedef enum QueryEvery
{
	EVERY_REFRESH = 0,			/* each cache refresh */
	EVERY_SIZE_INTERVAL,		/* pg_ha.metrics_size_interval */
	ONCE						/* values that change only with a restart */
} QueryEvery;

typedef struct MetricQuery
{
	const char *prefix;			/* family name prefix */
	const char *help;			/* what the rows are */
	/*
	 * Per-object families (tables, indexes, functions): rank_sql picks the
	 * pg_ha.metrics_table_limit most active objects ("%d" is the limit) and
	 * returns their OIDs as one oid[]; sql reads the figures of those objects
	 * only, given that array as $1.  Ranking walks every object of the
	 * database, so it runs every pg_ha.metrics_rank_interval, not each refresh.
	 */
	const char *rank_sql;
	const char *sql;
	const char *counters;		/* space-separated counter columns */
	QueryEvery	every;
	/* runs only where this extension is installed in the collector's database */
	const char *requires_extension;
	bool		sql_limited;	/* sql's "%d" is pg_ha.metrics_table_limit */
} MetricQuery;

/*
 * Name resolution is attack surface here: the queries run where other
 * roles may create functions, aggregates and operators (schema public of
 * pg_ha.metrics_database), a same-named object with exact argument types in
 * a schema on search_path beats pg_catalog's (count(integer) beats
 * count("any")), and any client can trigger a run (GET /metrics).  So the
 * session's search_path is pinned to pg_catalog, pg_temp, and every
 * function, aggregate, operator, relation and type below is qualified with
 * pg_catalog as well.  SQL syntax (EXTRACT, COALESCE, CASE WHEN, IS NULL,
 * AND) compiles to pg_catalog functions or to none; CASE x WHEN v and
 * IN (...) would look "=" up by name, so they are written as
 * CASE WHEN x OPERATOR(pg_catalog.=) v and OPERATOR(pg_catalog.=) ANY.
 */
#define CUR_LSN "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()" \
	" ELSE pg_catalog.pg_current_wal_lsn() END"
/* bytes since 0/0, as pg_exporter reports LSNs */
#define LSN_BYTES(lsn) "((" lsn ") OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.float8"
#define EPOCH(ts) "extract(epoch FROM " ts ")::pg_catalog.float8"
/* schemas whose objects the per-object families leave out */
#define SYSTEM_SCHEMAS "'{pg_catalog,information_schema}'::pg_catalog.name[]"

static const MetricQuery queries[] = {
	{"pg", "server state",
		NULL,
		"SELECT " EPOCH("pg_catalog.now()") " AS timestamp,"
		" " EPOCH("pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.pg_postmaster_start_time()") " AS uptime,"
		" " EPOCH("pg_catalog.pg_postmaster_start_time()") " AS boot_time,"
		" " LSN_BYTES(CUR_LSN) " AS lsn,"
		" " LSN_BYTES("CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_insert_lsn() END") " AS insert_lsn,"
		" " LSN_BYTES("CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_flush_lsn() END") " AS flush_lsn,"
		" " LSN_BYTES("pg_catalog.pg_last_wal_receive_lsn()") " AS receive_lsn,"
		" " LSN_BYTES("pg_catalog.pg_last_wal_replay_lsn()") " AS replay_lsn,"
		" " EPOCH("pg_catalog.pg_conf_load_time()") " AS conf_reload_time,"
		" " EPOCH("pg_catalog.pg_last_xact_replay_timestamp()") " AS last_replay_time,"
		" (CASE WHEN pg_catalog.pg_is_in_recovery() THEN coalesce(extract(epoch FROM pg_catalog.now()"
		"  OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp()), 0) ELSE 0 END)::pg_catalog.float8 AS lag,"
		" (CASE WHEN pg_catalog.pg_is_in_recovery() AND pg_catalog.pg_is_wal_replay_paused() THEN 1 ELSE 0 END)"
		"  AS is_wal_replay_paused,"
		" pg_catalog.current_setting('server_version_num')::pg_catalog.int4 AS version,"
		" (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()) AS timeline_id",
	"", EVERY_REFRESH, NULL, false},
	{"pg_meta", "server identity (value 1)",
		NULL,
		"SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::pg_catalog.text AS cluster_id,"
		" pg_catalog.current_setting('cluster_name') AS cluster_name,"
		" pg_catalog.current_setting('port') AS listen_port,"
		" pg_catalog.current_setting('data_directory') AS data_dir,"
		" pg_catalog.current_setting('config_file') AS conf_path,"
		" pg_catalog.current_setting('hba_file') AS hba_path,"
		" pg_catalog.current_setting('wal_level') AS wal_level,"
		" pg_catalog.current_setting('server_version') AS version,"
		" pg_catalog.current_setting('server_version_num') AS ver_num,"
		" 1 AS info",
	"", ONCE, NULL, false},
	{"pg_setting", "server settings",
		NULL,
		"SELECT pg_catalog.current_setting('max_connections')::pg_catalog.int4 AS max_connections,"
		" pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4 AS max_prepared_transactions,"
		" pg_catalog.current_setting('max_worker_processes')::pg_catalog.int4 AS max_worker_processes,"
		" pg_catalog.current_setting('max_wal_senders')::pg_catalog.int4 AS max_wal_senders,"
		" pg_catalog.current_setting('max_replication_slots')::pg_catalog.int4 AS max_replication_slots,"
		" pg_catalog.current_setting('max_locks_per_transaction')::pg_catalog.int4 AS max_locks_per_transaction,"
		" pg_catalog.current_setting('block_size')::pg_catalog.int4 AS block_size,"
		" pg_catalog.current_setting('wal_block_size')::pg_catalog.int4 AS wal_block_size,"
		" pg_catalog.current_setting('data_checksums')::pg_catalog.bool::pg_catalog.int4 AS data_checksums,"
		" pg_catalog.current_setting('wal_log_hints')::pg_catalog.bool::pg_catalog.int4 AS wal_log_hints,"
		" (pg_catalog.current_setting('archive_mode') OPERATOR(pg_catalog.<>) 'off')::pg_catalog.int4 AS archive_mode,"
		" pg_catalog.current_setting('hot_standby')::pg_catalog.bool::pg_catalog.int4 AS hot_standby",
	"", ONCE, NULL, false},
	{"pg_sync_standby", "synchronous replication configured",
		NULL,
		"SELECT (pg_catalog.current_setting('synchronous_standby_names') OPERATOR(pg_catalog.<>) '')::pg_catalog.int4"
		" AS enabled",
	"", EVERY_REFRESH, NULL, false},
	{"pg_db", "pg_stat_database per database",
		NULL,
		"SELECT d.datname::pg_catalog.text AS datname, d.oid::pg_catalog.int8 AS datid,"
		" pg_catalog.age(d.datfrozenxid)::pg_catalog.int8 AS age,"
		" d.datistemplate::pg_catalog.int4 AS is_template, d.datallowconn::pg_catalog.int4 AS allow_conn,"
		" d.datconnlimit AS conn_limit, d.datfrozenxid::pg_catalog.text::pg_catalog.int8 AS frozen_xid,"
		" s.numbackends, s.xact_commit, s.xact_rollback,"
		" s.xact_commit OPERATOR(pg_catalog.+) s.xact_rollback AS xact_total,"
		" s.blks_read, s.blks_hit, s.blks_read OPERATOR(pg_catalog.+) s.blks_hit AS blks_access,"
		" s.tup_returned, s.tup_fetched, s.tup_inserted, s.tup_updated, s.tup_deleted,"
		" s.tup_inserted OPERATOR(pg_catalog.+) s.tup_updated OPERATOR(pg_catalog.+) s.tup_deleted AS tup_modified,"
		" s.conflicts, s.temp_files, s.temp_bytes, s.deadlocks,"
		" coalesce(s.checksum_failures, 0) AS cks_fails,"
		" s.blk_read_time OPERATOR(pg_catalog./) 1000 AS blk_read_time,"
		" s.blk_write_time OPERATOR(pg_catalog./) 1000 AS blk_write_time,"
		" s.session_time OPERATOR(pg_catalog./) 1000 AS session_time,"
		" s.active_time OPERATOR(pg_catalog./) 1000 AS active_time,"
		" s.idle_in_transaction_time OPERATOR(pg_catalog./) 1000 AS ixact_time,"
		" s.sessions, s.sessions_abandoned, s.sessions_fatal, s.sessions_killed,"
		" " EPOCH("s.stats_reset") " AS reset_time"
		" FROM pg_catalog.pg_database d JOIN pg_catalog.pg_stat_database s ON s.datid OPERATOR(pg_catalog.=) d.oid"
		" ORDER BY 1",
		"xact_commit xact_rollback xact_total blks_read blks_hit blks_access tup_returned"
		" tup_fetched tup_inserted tup_updated tup_deleted tup_modified conflicts temp_files"
		" temp_bytes deadlocks cks_fails blk_read_time blk_write_time session_time active_time"
		" ixact_time sessions sessions_abandoned sessions_fatal sessions_killed",
	EVERY_REFRESH, NULL, false},
	{"pg_activity", "client backends per database and state",
		NULL,
		"SELECT d.datname::pg_catalog.text AS datname, st.state,"
		" pg_catalog.count(a.pid) AS count,"
		" coalesce(pg_catalog.max(extract(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change)), 0)"
		"  ::pg_catalog.float8 AS max_duration,"
		" coalesce(pg_catalog.max(extract(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) a.xact_start)), 0)"
		"  ::pg_catalog.float8 AS max_tx_duration,"
		" coalesce(pg_catalog.max(extract(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) a.backend_start)), 0)"
		"  ::pg_catalog.float8 AS max_conn_duration"
		" FROM pg_catalog.pg_database d CROSS JOIN (VALUES ('active'), ('idle'), ('idle in transaction'),"
		" ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')) st(state)"
		" LEFT JOIN pg_catalog.pg_stat_activity a ON a.datid OPERATOR(pg_catalog.=) d.oid"
		" AND a.state OPERATOR(pg_catalog.=) st.state"
		" AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'"
		" AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()"
		" WHERE d.datallowconn GROUP BY 1, 2 ORDER BY 1, 2",
	"", EVERY_REFRESH, NULL, false},
	{"pg_backend", "server processes per type",
		NULL,
		"SELECT backend_type AS type, pg_catalog.count(*) AS count FROM pg_catalog.pg_stat_activity"
		" GROUP BY 1 ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_lock", "locks held or awaited per database and mode",
		NULL,
		"SELECT d.datname::pg_catalog.text AS datname, m.mode, pg_catalog.count(l.locktype) AS count"
		" FROM pg_catalog.pg_database d CROSS JOIN (VALUES ('AccessShareLock'), ('RowShareLock'),"
		" ('RowExclusiveLock'), ('ShareUpdateExclusiveLock'), ('ShareLock'),"
		" ('ShareRowExclusiveLock'), ('ExclusiveLock'), ('AccessExclusiveLock')) m(mode)"
		" LEFT JOIN pg_catalog.pg_locks l ON l.database OPERATOR(pg_catalog.=) d.oid"
		" AND l.mode OPERATOR(pg_catalog.=) m.mode"
		" WHERE d.datallowconn GROUP BY 1, 2 ORDER BY 1, 2",
	"", EVERY_REFRESH, NULL, false},
	{"pg_xact", "transaction id horizon",
		NULL,
		"SELECT pg_catalog.pg_snapshot_xmin(s)::pg_catalog.text::pg_catalog.int8 AS xmin,"
		" pg_catalog.pg_snapshot_xmax(s)::pg_catalog.text::pg_catalog.int8 AS xmax,"
		" (SELECT pg_catalog.count(*) FROM pg_catalog.pg_snapshot_xip(s)) AS xnum"
		" FROM pg_catalog.pg_current_snapshot() s",
	"", EVERY_REFRESH, NULL, false},
	{"pg_repl", "replication connections (pg_stat_replication)",
		NULL,
		"SELECT coalesce(application_name, '') AS appname, coalesce(usename::pg_catalog.text, '') AS usename,"
		" coalesce(pg_catalog.host(client_addr), 'localhost') AS address, pid::pg_catalog.text AS pid,"
		" coalesce(client_port, 0)::pg_catalog.text AS client_port,"
		" CASE WHEN state OPERATOR(pg_catalog.=) 'streaming' THEN 0"
		"  WHEN state OPERATOR(pg_catalog.=) 'startup' THEN 1 WHEN state OPERATOR(pg_catalog.=) 'catchup' THEN 2"
		"  WHEN state OPERATOR(pg_catalog.=) 'backup' THEN 3 WHEN state OPERATOR(pg_catalog.=) 'stopping' THEN 4"
		"  ELSE -1 END AS state,"
		" CASE WHEN sync_state OPERATOR(pg_catalog.=) 'async' THEN 0"
		"  WHEN sync_state OPERATOR(pg_catalog.=) 'potential' THEN 1"
		"  WHEN sync_state OPERATOR(pg_catalog.=) 'sync' THEN 2"
		"  WHEN sync_state OPERATOR(pg_catalog.=) 'quorum' THEN 3 ELSE -1 END AS sync_state,"
		" sync_priority, backend_xmin::pg_catalog.text::pg_catalog.int8 AS backend_xmin,"
		" " LSN_BYTES("cur") " AS lsn,"
		" (cur OPERATOR(pg_catalog.-) sent_lsn)::pg_catalog.float8 AS sent_diff,"
		" (cur OPERATOR(pg_catalog.-) write_lsn)::pg_catalog.float8 AS write_diff,"
		" (cur OPERATOR(pg_catalog.-) flush_lsn)::pg_catalog.float8 AS flush_diff,"
		" (cur OPERATOR(pg_catalog.-) replay_lsn)::pg_catalog.float8 AS replay_diff,"
		" " LSN_BYTES("sent_lsn") " AS sent_lsn, " LSN_BYTES("write_lsn") " AS write_lsn,"
		" " LSN_BYTES("flush_lsn") " AS flush_lsn, " LSN_BYTES("replay_lsn") " AS replay_lsn,"
		" coalesce(" EPOCH("write_lag") ", 0) AS write_lag,"
		" coalesce(" EPOCH("flush_lag") ", 0) AS flush_lag,"
		" coalesce(" EPOCH("replay_lag") ", 0) AS replay_lag,"
		" " EPOCH("backend_start") " AS launch_time,"
		" " EPOCH("reply_time") " AS reply_time"
		" FROM pg_catalog.pg_stat_replication, LATERAL (SELECT " CUR_LSN " AS cur) c ORDER BY 1, 4",
	"", EVERY_REFRESH, NULL, false},
	{"pg_downstream", "replication connections per state",
		NULL,
		"SELECT st.state, pg_catalog.count(r.pid) AS count FROM (VALUES ('streaming'), ('startup'),"
		" ('catchup'), ('backup'), ('stopping')) st(state)"
		" LEFT JOIN pg_catalog.pg_stat_replication r ON r.state OPERATOR(pg_catalog.=) st.state"
		" GROUP BY 1 ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_recv", "WAL receiver (replicas)",
		NULL,
		"SELECT coalesce(slot_name, '') AS slot_name, coalesce(sender_host, '') AS sender_host,"
		" " LSN_BYTES("receive_start_lsn") " AS init_lsn, receive_start_tli AS init_tli,"
		" " LSN_BYTES("written_lsn") " AS write_lsn, " LSN_BYTES("flushed_lsn") " AS flush_lsn,"
		" received_tli AS flush_tli, " LSN_BYTES("latest_end_lsn") " AS reported_lsn,"
		" " EPOCH("last_msg_send_time") " AS msg_send_time,"
		" " EPOCH("last_msg_receipt_time") " AS msg_recv_time,"
		" " EPOCH("latest_end_time") " AS reported_time"
		" FROM pg_catalog.pg_stat_wal_receiver",
	"", EVERY_REFRESH, NULL, false},
	{"pg_sub", "logical replication subscriptions (pg_stat_subscription, apply workers)",
		NULL,
		"SELECT su.subname::pg_catalog.text AS subname, su.oid::pg_catalog.int8 AS id,"
		" coalesce(st.pid, 0) AS pid,"
		" " LSN_BYTES("st.received_lsn") " AS received_lsn,"
		" " LSN_BYTES("st.latest_end_lsn") " AS reported_lsn,"
		" " EPOCH("st.last_msg_send_time") " AS msg_send_time,"
		" " EPOCH("st.last_msg_receipt_time") " AS msg_recv_time,"
		" " EPOCH("st.latest_end_time") " AS reported_time"
		" FROM pg_catalog.pg_subscription su LEFT JOIN pg_catalog.pg_stat_get_subscription(NULL) st"
		"  ON st.subid OPERATOR(pg_catalog.=) su.oid AND st.relid IS NULL"
		" WHERE su.subdbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database"
		"  WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())"
		" ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_slot", "replication slots",
		NULL,
		"SELECT slot_name::pg_catalog.text AS slot_name, active::pg_catalog.int4 AS active,"
		" temporary::pg_catalog.int4 AS temporary,"
		" xmin::pg_catalog.text::pg_catalog.int8 AS xmin,"
		" catalog_xmin::pg_catalog.text::pg_catalog.int8 AS catalog_xmin,"
		" " LSN_BYTES("restart_lsn") " AS restart_lsn,"
		" " LSN_BYTES("confirmed_flush_lsn") " AS confirm_lsn,"
		" ((" CUR_LSN ") OPERATOR(pg_catalog.-) restart_lsn)::pg_catalog.float8 AS retained_bytes,"
		" safe_wal_size::pg_catalog.float8 AS safe_wal_size,"
		" CASE WHEN wal_status OPERATOR(pg_catalog.=) 'reserved' THEN 0"
		"  WHEN wal_status OPERATOR(pg_catalog.=) 'extended' THEN 1"
		"  WHEN wal_status OPERATOR(pg_catalog.=) 'unreserved' THEN 2"
		"  WHEN wal_status OPERATOR(pg_catalog.=) 'lost' THEN 3 ELSE -1 END AS wal_status"
		" FROM pg_catalog.pg_replication_slots ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_archiver", "WAL archiver (pg_stat_archiver)",
		NULL,
		"SELECT archived_count AS finish_count, failed_count,"
		" coalesce(" EPOCH("last_archived_time") ", 0) AS last_finish_time,"
		" coalesce(" EPOCH("last_failed_time") ", 0) AS last_failed_time,"
		" " EPOCH("stats_reset") " AS reset_time FROM pg_catalog.pg_stat_archiver",
	"finish_count failed_count", EVERY_REFRESH, NULL, false},
	{"pg_bgwriter", "background writer and checkpoints (pg_stat_bgwriter)",
		NULL,
		"SELECT checkpoints_timed, checkpoints_req,"
		" checkpoint_write_time OPERATOR(pg_catalog./) 1000 AS checkpoint_write_time,"
		" checkpoint_sync_time OPERATOR(pg_catalog./) 1000 AS checkpoint_sync_time,"
		" buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync,"
		" buffers_alloc, " EPOCH("stats_reset") " AS reset_time FROM pg_catalog.pg_stat_bgwriter",
		"checkpoints_timed checkpoints_req checkpoint_write_time checkpoint_sync_time"
		" buffers_checkpoint buffers_clean maxwritten_clean buffers_backend"
		" buffers_backend_fsync buffers_alloc",
	EVERY_REFRESH, NULL, false},
	{"pg_checkpointer", "checkpointer (PG17 names, from pg_stat_bgwriter)",
		NULL,
		"SELECT checkpoints_timed AS timed, checkpoints_req AS req,"
		" checkpoint_write_time OPERATOR(pg_catalog./) 1000 AS write_time,"
		" checkpoint_sync_time OPERATOR(pg_catalog./) 1000 AS sync_time,"
		" buffers_checkpoint AS buffers_written FROM pg_catalog.pg_stat_bgwriter",
	"timed req write_time sync_time buffers_written", EVERY_REFRESH, NULL, false},
	{"pg_checkpoint", "last checkpoint (pg_control_checkpoint)",
		NULL,
		"SELECT " LSN_BYTES("checkpoint_lsn") " AS checkpoint_lsn, " LSN_BYTES("redo_lsn") " AS redo_lsn,"
		" timeline_id AS tli, prev_timeline_id AS prev_tli,"
		" full_page_writes::pg_catalog.int4 AS full_page_writes,"
		" pg_catalog.split_part(next_xid, ':', 1)::pg_catalog.int8 AS next_xid_epoch,"
		" pg_catalog.split_part(next_xid, ':', 2)::pg_catalog.int8 AS next_xid,"
		" next_oid::pg_catalog.int8 AS next_oid,"
		" next_multixact_id::pg_catalog.text::pg_catalog.int8 AS next_multixact_id,"
		" next_multi_offset::pg_catalog.text::pg_catalog.int8 AS next_multi_offset,"
		" oldest_xid::pg_catalog.text::pg_catalog.int8 AS oldest_xid,"
		" oldest_xid_dbid::pg_catalog.int8 AS oldest_xid_dbid,"
		" oldest_active_xid::pg_catalog.text::pg_catalog.int8 AS oldest_active_xid,"
		" oldest_multi_xid::pg_catalog.text::pg_catalog.int8 AS oldest_multi_xid,"
		" oldest_multi_dbid::pg_catalog.int8 AS oldest_multi_dbid,"
		" oldest_commit_ts_xid::pg_catalog.text::pg_catalog.int8 AS oldest_commit_ts_xid,"
		" newest_commit_ts_xid::pg_catalog.text::pg_catalog.int8 AS newest_commit_ts_xid,"
		" " EPOCH("checkpoint_time") " AS time,"
		" " EPOCH("pg_catalog.now() OPERATOR(pg_catalog.-) checkpoint_time") " AS elapse"
		" FROM pg_catalog.pg_control_checkpoint()",
	"", EVERY_REFRESH, NULL, false},
	{"pg_wal", "WAL generation (pg_stat_wal)",
		NULL,
		"SELECT wal_records AS records, wal_fpi AS fpi, wal_bytes::pg_catalog.float8 AS bytes,"
		" wal_buffers_full AS buffers_full, wal_write AS write, wal_sync AS sync,"
		" wal_write_time OPERATOR(pg_catalog./) 1000 AS write_time,"
		" wal_sync_time OPERATOR(pg_catalog./) 1000 AS sync_time,"
		" " EPOCH("stats_reset") " AS reset_time FROM pg_catalog.pg_stat_wal",
	"records fpi bytes buffers_full write sync write_time sync_time", EVERY_REFRESH, NULL, false},
	{"pg_size", "database size on disk",
		NULL,
		"SELECT datname::pg_catalog.text AS datname, pg_catalog.pg_database_size(oid)::pg_catalog.float8 AS bytes"
		" FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1",
	"", EVERY_SIZE_INTERVAL, NULL, false},
	{"pg_table", "most active tables of the collector's database",
		/* cheap counters only: the views cost per row and per index */
		"SELECT coalesce(pg_catalog.array_agg(oid), '{}') FROM (SELECT c.oid FROM pg_catalog.pg_class c"
		" JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
		" WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,m}'::pg_catalog.\"char\"[])"
		" AND n.nspname OPERATOR(pg_catalog.<>) ALL (" SYSTEM_SCHEMAS ")"
		" AND n.nspname OPERATOR(pg_catalog.!~) '^pg_toast'"
		" ORDER BY pg_catalog.pg_stat_get_tuples_returned(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_tuples_fetched(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_tuples_inserted(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_tuples_updated(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_tuples_deleted(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_live_tuples(c.oid) DESC, c.oid"
		" LIMIT %d) t",
		/*
		 * pg_stat_user_tables and pg_statio_user_tables' own definitions
		 * (PG15), read for the chosen tables only, with one pass over each
		 * table's indexes (and its TOAST table's) instead of the views'
		 * GROUP BY and per-column subqueries.  relname is pg_exporter's
		 * "schema.table"; schemaname (postgres_exporter's label) keeps
		 * "a.b"."c" and "a"."b.c" apart.
		 */
		"SELECT pg_catalog.current_database()::pg_catalog.text AS datname,"
		" n.nspname::pg_catalog.text AS schemaname,"
		" n.nspname::pg_catalog.text OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname::pg_catalog.text"
		"  AS relname,"
		" c.oid::pg_catalog.int8 AS relid, c.relpages::pg_catalog.int8 AS pages,"
		" c.reltuples::pg_catalog.float8 AS tuples,"
		" pg_catalog.age(c.relfrozenxid)::pg_catalog.int8 AS age, c.relnatts::pg_catalog.int4 AS ncols,"
		" c.relpages::pg_catalog.int8 OPERATOR(pg_catalog.*) pg_catalog.current_setting('block_size')::pg_catalog.int8"
		"  AS size_bytes,"
		" s.seq_scan, s.seq_tup_read, coalesce(ix.scans, 0) AS idx_scan,"
		" coalesce(ix.fetched, 0) OPERATOR(pg_catalog.+) s.tup_fetched AS idx_tup_fetch,"
		" s.seq_scan OPERATOR(pg_catalog.+) coalesce(ix.scans, 0) AS tbl_scan,"
		" s.seq_tup_read OPERATOR(pg_catalog.+) coalesce(ix.fetched, 0) OPERATOR(pg_catalog.+) s.tup_fetched"
		"  AS tup_read,"
		" s.n_tup_ins, s.n_tup_upd, s.n_tup_del,"
		" s.n_tup_ins OPERATOR(pg_catalog.+) s.n_tup_upd OPERATOR(pg_catalog.+) s.n_tup_del AS n_tup_mod,"
		" pg_catalog.pg_stat_get_tuples_hot_updated(c.oid) AS n_tup_hot_upd,"
		" pg_catalog.pg_stat_get_live_tuples(c.oid) AS n_live_tup,"
		" pg_catalog.pg_stat_get_dead_tuples(c.oid) AS n_dead_tup,"
		" pg_catalog.pg_stat_get_mod_since_analyze(c.oid) AS n_mod_since_analyze,"
		" pg_catalog.pg_stat_get_ins_since_vacuum(c.oid) AS n_ins_since_vacuum,"
		" " EPOCH("pg_catalog.pg_stat_get_last_vacuum_time(c.oid)") " AS last_vacuum,"
		" " EPOCH("pg_catalog.pg_stat_get_last_autovacuum_time(c.oid)") " AS last_autovacuum,"
		" " EPOCH("pg_catalog.pg_stat_get_last_analyze_time(c.oid)") " AS last_analyze,"
		" " EPOCH("pg_catalog.pg_stat_get_last_autoanalyze_time(c.oid)") " AS last_autoanalyze,"
		" pg_catalog.pg_stat_get_vacuum_count(c.oid) AS vacuum_count,"
		" pg_catalog.pg_stat_get_autovacuum_count(c.oid) AS autovacuum_count,"
		" pg_catalog.pg_stat_get_analyze_count(c.oid) AS analyze_count,"
		" pg_catalog.pg_stat_get_autoanalyze_count(c.oid) AS autoanalyze_count,"
		" pg_catalog.pg_stat_get_blocks_fetched(c.oid) OPERATOR(pg_catalog.-) pg_catalog.pg_stat_get_blocks_hit(c.oid)"
		"  AS heap_blks_read,"
		" pg_catalog.pg_stat_get_blocks_hit(c.oid) AS heap_blks_hit,"
		" coalesce(ix.blks_read, 0) AS idx_blks_read, coalesce(ix.blks_hit, 0) AS idx_blks_hit,"
		" CASE WHEN c.reltoastrelid OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 0"
		"  ELSE pg_catalog.pg_stat_get_blocks_fetched(c.reltoastrelid)"
		"  OPERATOR(pg_catalog.-) pg_catalog.pg_stat_get_blocks_hit(c.reltoastrelid) END AS toast_blks_read,"
		" CASE WHEN c.reltoastrelid OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 0"
		"  ELSE pg_catalog.pg_stat_get_blocks_hit(c.reltoastrelid) END AS toast_blks_hit,"
		" coalesce(tx.blks_read, 0) AS tidx_blks_read, coalesce(tx.blks_hit, 0) AS tidx_blks_hit"
		" FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace,"
		" LATERAL (SELECT pg_catalog.pg_stat_get_numscans(c.oid) AS seq_scan,"
		"  pg_catalog.pg_stat_get_tuples_returned(c.oid) AS seq_tup_read,"
		"  pg_catalog.pg_stat_get_tuples_fetched(c.oid) AS tup_fetched,"
		"  pg_catalog.pg_stat_get_tuples_inserted(c.oid) AS n_tup_ins,"
		"  pg_catalog.pg_stat_get_tuples_updated(c.oid) AS n_tup_upd,"
		"  pg_catalog.pg_stat_get_tuples_deleted(c.oid) AS n_tup_del) s,"
		" LATERAL (SELECT pg_catalog.sum(pg_catalog.pg_stat_get_numscans(i.indexrelid))::pg_catalog.int8 AS scans,"
		"  pg_catalog.sum(pg_catalog.pg_stat_get_tuples_fetched(i.indexrelid))::pg_catalog.int8 AS fetched,"
		"  pg_catalog.sum(pg_catalog.pg_stat_get_blocks_fetched(i.indexrelid)"
		"   OPERATOR(pg_catalog.-) pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))::pg_catalog.int8 AS blks_read,"
		"  pg_catalog.sum(pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))::pg_catalog.int8 AS blks_hit"
		"  FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid) ix,"
		" LATERAL (SELECT pg_catalog.sum(pg_catalog.pg_stat_get_blocks_fetched(i.indexrelid)"
		"   OPERATOR(pg_catalog.-) pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))::pg_catalog.int8 AS blks_read,"
		"  pg_catalog.sum(pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))::pg_catalog.int8 AS blks_hit"
		"  FROM pg_catalog.pg_index i WHERE c.reltoastrelid OPERATOR(pg_catalog.<>) 0::pg_catalog.oid"
		"  AND i.indrelid OPERATOR(pg_catalog.=) c.reltoastrelid) tx"
		" WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1) ORDER BY c.oid",
		"seq_scan seq_tup_read idx_scan idx_tup_fetch tbl_scan tup_read n_tup_ins n_tup_upd"
		" n_tup_del n_tup_mod n_tup_hot_upd vacuum_count autovacuum_count analyze_count"
		" autoanalyze_count heap_blks_read heap_blks_hit idx_blks_read idx_blks_hit"
		" toast_blks_read toast_blks_hit tidx_blks_read tidx_blks_hit",
	EVERY_REFRESH, NULL, false},
	{"pg_index", "most used indexes of the collector's database",
		"SELECT coalesce(pg_catalog.array_agg(oid), '{}') FROM (SELECT c.oid FROM pg_catalog.pg_class c"
		" JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
		" WHERE c.relkind OPERATOR(pg_catalog.=) 'i'"
		" AND n.nspname OPERATOR(pg_catalog.<>) ALL (" SYSTEM_SCHEMAS ")"
		" AND n.nspname OPERATOR(pg_catalog.!~) '^pg_toast'"
		" ORDER BY pg_catalog.pg_stat_get_numscans(c.oid)"
		" OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_tuples_returned(c.oid) DESC, c.oid"
		" LIMIT %d) t",
		/* schemaname keeps indexes of "a.b"."c" and "a"."b.c" apart */
		"SELECT pg_catalog.current_database()::pg_catalog.text AS datname,"
		" s.schemaname::pg_catalog.text AS schemaname,"
		" s.schemaname::pg_catalog.text OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) s.relname::pg_catalog.text"
		"  AS relname,"
		" s.indexrelname::pg_catalog.text AS idxname, s.indexrelid::pg_catalog.int8 AS relid,"
		" c.relpages::pg_catalog.int8 OPERATOR(pg_catalog.*) pg_catalog.current_setting('block_size')::pg_catalog.int8"
		"  AS size_bytes,"
		" s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,"
		/* pg_statio_all_indexes' own definitions, without a second join */
		" pg_catalog.pg_stat_get_blocks_fetched(s.indexrelid)"
		"  OPERATOR(pg_catalog.-) pg_catalog.pg_stat_get_blocks_hit(s.indexrelid) AS idx_blks_read,"
		" pg_catalog.pg_stat_get_blocks_hit(s.indexrelid) AS idx_blks_hit"
		" FROM pg_catalog.pg_stat_user_indexes s JOIN pg_catalog.pg_class c"
		"  ON c.oid OPERATOR(pg_catalog.=) s.indexrelid"
		" WHERE s.indexrelid OPERATOR(pg_catalog.=) ANY ($1) ORDER BY s.indexrelid",
	"idx_scan idx_tup_read idx_tup_fetch idx_blks_read idx_blks_hit", EVERY_REFRESH, NULL, false},
	{"pg_func", "most called functions of the collector's database",
		/* the namespace test first: pg_proc has thousands of built-in rows */
		"SELECT coalesce(pg_catalog.array_agg(oid), '{}') FROM (SELECT p.oid FROM pg_catalog.pg_proc p"
		" WHERE p.pronamespace OPERATOR(pg_catalog.<>) ALL (ARRAY(SELECT oid FROM pg_catalog.pg_namespace"
		"  WHERE nspname OPERATOR(pg_catalog.=) ANY (" SYSTEM_SCHEMAS ")))"
		" AND pg_catalog.pg_stat_get_function_calls(p.oid) IS NOT NULL"
		" ORDER BY pg_catalog.pg_stat_get_function_calls(p.oid) DESC, p.oid LIMIT %d) t",
		/*
		 * funcname is pg_exporter's "schema.function"; overloads share it,
		 * so args (the identity argument types, as in \df) and schemaname
		 * make each function's label set its own.
		 */
		"SELECT pg_catalog.current_database()::pg_catalog.text AS datname,"
		" schemaname::pg_catalog.text AS schemaname,"
		" schemaname::pg_catalog.text OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) funcname::pg_catalog.text"
		"  AS funcname,"
		" coalesce(pg_catalog.pg_get_function_identity_arguments(funcid), '') AS args,"
		" funcid::pg_catalog.int8 AS id, calls, total_time OPERATOR(pg_catalog./) 1000 AS total_time,"
		" self_time OPERATOR(pg_catalog./) 1000 AS self_time"
		" FROM pg_catalog.pg_stat_user_functions WHERE funcid OPERATOR(pg_catalog.=) ANY ($1)"
		" ORDER BY calls DESC, funcid",
	"calls total_time self_time", EVERY_REFRESH, NULL, false},
	{"pg_query", "statements with the most execution time (pg_stat_statements)",
		NULL,
		/*
		 * pg_stat_statements(false): without the query texts, which live in
		 * a file.  One row per database and queryid (the view has one per
		 * user and nesting level too, which would repeat label sets).  The
		 * function lives where the extension was created: "%s" is that
		 * schema, quoted.
		 */
		"SELECT d.datname::pg_catalog.text AS datname, s.queryid::pg_catalog.text AS query,"
		" pg_catalog.sum(s.calls)::pg_catalog.int8 AS calls, pg_catalog.sum(s.rows)::pg_catalog.int8 AS rows,"
		" pg_catalog.sum(s.total_exec_time)::pg_catalog.float8 OPERATOR(pg_catalog./) 1000 AS exec_time,"
		" pg_catalog.sum(s.blk_read_time OPERATOR(pg_catalog.+) s.blk_write_time)::pg_catalog.float8"
		"  OPERATOR(pg_catalog./) 1000 AS io_time,"
		" pg_catalog.sum(s.wal_bytes)::pg_catalog.float8 AS wal_bytes,"
		" pg_catalog.sum(s.shared_blks_hit)::pg_catalog.int8 AS sblk_hit,"
		" pg_catalog.sum(s.shared_blks_read)::pg_catalog.int8 AS sblk_read,"
		" pg_catalog.sum(s.shared_blks_dirtied)::pg_catalog.int8 AS sblk_dirtied,"
		" pg_catalog.sum(s.shared_blks_written)::pg_catalog.int8 AS sblk_written"
		" FROM %s.pg_stat_statements(false) s JOIN pg_catalog.pg_database d"
		"  ON d.oid OPERATOR(pg_catalog.=) s.dbid"
		" WHERE s.queryid IS NOT NULL GROUP BY 1, 2 ORDER BY 5 DESC, 1, 2 LIMIT %d",
		"calls rows exec_time io_time wal_bytes sblk_hit sblk_read sblk_dirtied sblk_written",
	EVERY_REFRESH, "pg_stat_statements", true},
};

#define NQUERIES lengthof(queries)

/* per query: its last rendered text (in collector_context) and when */
static char *query_text[NQUERIES];
static int64 query_ran_at[NQUERIES];
static SPIPlanPtr query_plan[NQUERIES];
static int	query_plan_limit[NQUERIES];
/* per-object queries: the ranking plan, its limit, and its last answer */
static SPIPlanPtr rank_plan[NQUERIES];
static int	rank_plan_limit[NQUERIES];
static Datum rank_ids[NQUERIES];	/* oid[] in collector_context; 0 = none */
static int64 ranked_at[NQUERIES];
static uint64 query_rows[NQUERIES];	/* rows of the last run */
static char *query_failing[NQUERIES];	/* message of the last failure, if failing */
/* a relation or function was created, dropped or altered: rank again */
static bool catalog_changed = true;
static bool rank_all;			/* this refresh: catalog_changed at its start */
static MemoryContext collector_context;
static bool poked;				/* a scrape set our latch */
static bool refreshed_once;		/* since this collector started */

static bool
is_counter(const MetricQuery *q, const char *col)
{
	size_t		len = strlen(col);
	const char *p = q->counters;

	while ((p = strstr(p, col)) != NULL)
	{
		if ((p == q->counters || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			return true;
		p += len;
	}
	return false;
}

static bool
is_label_type(Oid typid)
{
	return typid == TEXTOID || typid == NAMEOID || typid == VARCHAROID || typid == BPCHAROID;
}

static void
append_value(StringInfo out, Datum d, Oid typid)
{
	double		f;

	switch (typid)
	{
		case INT2OID:
			appendStringInfo(out, "%d", (int) DatumGetInt16(d));
			return;
		case INT4OID:
			appendStringInfo(out, "%d", DatumGetInt32(d));
			return;
		case INT8OID:
			appendStringInfo(out, INT64_FORMAT, DatumGetInt64(d));
			return;
		case OIDOID:
			appendStringInfo(out, "%u", DatumGetObjectId(d));
			return;
		case BOOLOID:
			appendStringInfoChar(out, DatumGetBool(d) ? '1' : '0');
			return;
		case FLOAT4OID:
			f = DatumGetFloat4(d);
			break;
		case FLOAT8OID:
			f = DatumGetFloat8(d);
			break;
		case NUMERICOID:
			f = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, d));
			break;
		default:
			appendStringInfoString(out, "NaN");
			return;
	}
	metrics_append_double(out, f);
}

/*
 * Renders the SPI result of q: one family per numeric column.  The label
 * set of a row is the same in every family, so it is escaped once per row
 * ("{a=\"x\",b=\"y\"}", or "" without labels), not once per sample: at the
 * default table limit a refresh writes about 10,000 samples.
 */
static char *
render(const MetricQuery *q)
{
	SPITupleTable *tt = SPI_tuptable;
	TupleDesc	desc = tt->tupdesc;
	StringInfoData out;
	StringInfoData lab;
	int			natts = desc->natts;
	uint64		nrows = SPI_processed;
	char	  **labels = palloc(sizeof(char *) * Max(nrows, 1));
	size_t		prefix_len = strlen(q->prefix);

	initStringInfo(&lab);
	for (uint64 row = 0; row < nrows; row++)
	{
		bool		first = true;

		resetStringInfo(&lab);
		for (int l = 1; l <= natts; l++)
		{
			char	   *v;

			if (!is_label_type(TupleDescAttr(desc, l - 1)->atttypid))
				continue;
			v = SPI_getvalue(tt->vals[row], desc, l);
			appendStringInfoChar(&lab, first ? '{' : ',');
			appendStringInfoString(&lab, NameStr(TupleDescAttr(desc, l - 1)->attname));
			appendStringInfoString(&lab, "=\"");
			metrics_append_label_value(&lab, v ? v : "");
			appendStringInfoChar(&lab, '"');
			first = false;
		}
		if (!first)
			appendStringInfoChar(&lab, '}');
		labels[row] = pstrdup(lab.data);
	}

	initStringInfo(&out);
	for (int col = 1; col <= natts; col++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, col - 1);
		const char *colname = NameStr(att->attname);
		size_t		colname_len = strlen(colname);

		if (is_label_type(att->atttypid))
			continue;
		appendStringInfo(&out, "# HELP %s_%s %s: %s\n# TYPE %s_%s %s\n",
						 q->prefix, colname, q->help, colname,
						 q->prefix, colname, is_counter(q, colname) ? "counter" : "gauge");
		for (uint64 row = 0; row < nrows; row++)
		{
			bool		isnull;
			Datum		d = heap_getattr(tt->vals[row], col, desc, &isnull);

			if (isnull)
				continue;		/* no sample rather than a made-up value */
			appendBinaryStringInfo(&out, q->prefix, prefix_len);
			appendStringInfoChar(&out, '_');
			appendBinaryStringInfo(&out, colname, colname_len);
			appendStringInfoString(&out, labels[row]);
			appendStringInfoChar(&out, ' ');
			append_value(&out, d, att->atttypid);
			appendStringInfoChar(&out, '\n');
		}
	}
	return out.data;
}

/*
 * Invalidation callbacks: any relation or function changed (created,
 * dropped, altered, or analyzed).  The next refresh ranks again, so a new
 * table is reported at once and a dropped one is replaced.
 */
static void
relcache_changed(Datum arg, Oid relid)
{
	catalog_changed = true;
}

static void
syscache_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	catalog_changed = true;
}

/* SPI_prepare + SPI_keepplan, or ERROR */
static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* Schema of an extension (pg_extension.extnamespace), or InvalidOid. */
static Oid
extension_schema(Oid ext)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/*
 * The text of sql to prepare.  With `limited`, "%d" is
 * pg_ha.metrics_table_limit.  A query on an extension's function names it
 * with the schema the extension lives in (the pinned search_path does not
 * reach it): "%s", before the limit.
 */
static char *
sql_text(const MetricQuery *q, const char *sql, bool limited)
{
	if (q->requires_extension != NULL)
	{
		Oid			nsp = extension_schema(get_extension_oid(q->requires_extension, false));
		char	   *schema = get_namespace_name(nsp);

		if (schema == NULL)
			elog(ERROR, "schema of extension \"%s\" not found", q->requires_extension);
		return psprintf(sql, quote_identifier(schema), pg_ha_metrics_table_limit);
	}
	return limited ? psprintf(sql, pg_ha_metrics_table_limit) : pstrdup(sql);
}

/*
 * Keeps *plan prepared for sql (see sql_text).  With `limited`, the plan is
 * prepared again when pg_ha.metrics_table_limit changes.  Returns true when
 * it (re)prepared the plan.
 */
static bool
keep_plan(const MetricQuery *q, SPIPlanPtr *plan, int *planned_limit, bool limited,
		  const char *sql, int nargs, Oid *argtypes)
{
	if (*plan != NULL && limited && *planned_limit != pg_ha_metrics_table_limit)
	{
		SPI_freeplan(*plan);
		*plan = NULL;
	}
	if (*plan != NULL)
		return false;
	*plan = prepare_kept(sql_text(q, sql, limited), nargs, argtypes);
	*planned_limit = pg_ha_metrics_table_limit;
	return true;
}

/*
 * Forgets the plans of query i after it failed: the next refresh prepares
 * them again, so a plan that cannot be replanned (the extension's function
 * moved or was dropped and created again) does not fail forever.
 */
static void
forget_plans(int i)
{
	if (query_plan[i] != NULL)
		SPI_freeplan(query_plan[i]);
	if (rank_plan[i] != NULL)
		SPI_freeplan(rank_plan[i]);
	query_plan[i] = NULL;
	rank_plan[i] = NULL;
}

/*
 * Chooses again which objects a per-object query reports, when the last
 * choice is older than pg_ha.metrics_rank_interval or was made with another
 * limit.  Between rankings a refresh reads only the chosen objects, whose
 * figures are current: a dropped one is simply absent, a newly busy one
 * joins at the next ranking.
 */
static void
rank_objects(int i, int64 now)
{
	const MetricQuery *q = &queries[i];
	int64		interval = pg_ha_metrics_rank_interval * INT64CONST(1000000);
	bool		isnull;
	Datum		ids;
	int			rc;

	/* a new plan means a new limit: the last choice no longer holds */
	if (!keep_plan(q, &rank_plan[i], &rank_plan_limit[i], true, q->rank_sql, 0, NULL) &&
		rank_ids[i] != (Datum) 0 && now - ranked_at[i] < interval && !rank_all)
		return;
	rc = SPI_execute_plan(rank_plan[i], NULL, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ranking returned %s", SPI_result_code_string(rc));
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "ranking returned NULL");
	if (rank_ids[i] != (Datum) 0)
		pfree(DatumGetPointer(rank_ids[i]));
	{
		MemoryContext old = MemoryContextSwitchTo(collector_context);

		rank_ids[i] = datumCopy(ids, false, -1);
		MemoryContextSwitchTo(old);
	}
	ranked_at[i] = now;
}

/* Runs one query in a subtransaction; false (and a LOG line) on error. */
static bool
run_query(int i, int64 now)
{
	const MetricQuery *q = &queries[i];
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			rc;
		char	   *text;
		bool		skip = false;
		Oid			oidarray = OIDARRAYOID;	/* $1 of per-object queries */

		/*
		 * Plans are prepared once and kept (the plan cache replans them
		 * after DDL): planning these views costs more than running them.
		 */
		(void) keep_plan(q, &query_plan[i], &query_plan_limit[i], q->sql_limited, q->sql,
						 q->rank_sql ? 1 : 0, &oidarray);
		if (q->rank_sql)
		{
			Datum		args[1];

			rank_objects(i, now);
			args[0] = rank_ids[i];
			/*
			 * Nothing chosen (e.g. no function is tracked) and the last
			 * answer was empty too: it still holds, skip the statement.
			 */
			skip = query_text[i] != NULL && query_rows[i] == 0 &&
				ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(args[0])),
							   ARR_DIMS(DatumGetArrayTypeP(args[0]))) == 0;
			rc = skip ? SPI_OK_SELECT : SPI_execute_plan(query_plan[i], args, NULL, true, 0);
		}
		else
			rc = SPI_execute_plan(query_plan[i], NULL, NULL, true, 0);

		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute returned %s", SPI_result_code_string(rc));
		if (!skip)
		{
			text = render(q);
			query_rows[i] = SPI_processed;
			if (query_text[i])
				pfree(query_text[i]);
			query_text[i] = MemoryContextStrdup(collector_context, text);
		}
		if (query_failing[i])
		{
			pfree(query_failing[i]);
			query_failing[i] = NULL;
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		forget_plans(i);
		/* a query that fails each refresh is logged once, not every 5 s */
		if (query_failing[i] == NULL || strcmp(query_failing[i], edata->message) != 0)
		{
			ereport(LOG,
					(errmsg("pg_ha: metrics query %s failed: %s", q->prefix, edata->message),
					 errdetail("It is counted in pg_ha_metrics_query_errors_total and logged again only if the error changes.")));
			if (query_failing[i])
				pfree(query_failing[i]);
			query_failing[i] = MemoryContextStrdup(collector_context, edata->message);
		}
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Whether the collector may run its queries as the role it is connected as:
 * never as a superuser (whatever a query calls would run with every
 * privilege, on behalf of an unauthenticated scrape), and only as a member
 * of pg_monitor (without it the figures would silently cover only the
 * role's own sessions).  Checked at every refresh: the role may be altered
 * while the collector runs.  A change is logged once.  Needs a transaction.
 */
static bool
role_allowed(void)
{
	static CollectorState last = COLLECTOR_STARTING;
	CollectorState state = COLLECTOR_RUNNING;

	if (superuser_arg(GetSessionUserId()) || superuser())
		state = COLLECTOR_ROLE_IS_SUPERUSER;
	else if (!has_privs_of_role(GetUserId(), ROLE_PG_MONITOR))
		state = COLLECTOR_ROLE_NOT_MONITOR;
	if (state == last)
		return state == COLLECTOR_RUNNING;

	if (state == COLLECTOR_ROLE_IS_SUPERUSER)
		ereport(WARNING,
				(errmsg("pg_ha: metrics collector role \"%s\" is a superuser: no metrics queries run",
						pg_ha_metrics_role),
				 errdetail("Any client can trigger the queries (GET /metrics), and they run where other roles can create functions and operators."),
				 errhint("ALTER ROLE %s NOSUPERUSER, or set pg_ha.metrics_role to a role that is not a superuser and is a member of pg_monitor.",
						 quote_identifier(pg_ha_metrics_role))));
	else if (state == COLLECTOR_ROLE_NOT_MONITOR)
		ereport(WARNING,
				(errmsg("pg_ha: metrics collector role \"%s\" is not a member of pg_monitor: no metrics queries run",
						pg_ha_metrics_role),
				 errdetail("Without pg_monitor the statistics views show only the role's own sessions."),
				 errhint("GRANT pg_monitor TO %s;", quote_identifier(pg_ha_metrics_role))));
	else if (last != COLLECTOR_STARTING)
		ereport(LOG,
				(errmsg("pg_ha: metrics collector role \"%s\" is usable again: metrics queries resume",
						pg_ha_metrics_role)));
	metrics_collector_set_state(state);
	last = state;
	return state == COLLECTOR_RUNNING;
}

static void
refresh_cache(void)
{
	int64		start = pg_ha_monotonic_us();
	uint64		errors = 0;
	StringInfoData all;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!role_allowed())
	{
		/* answers the parked scrapes, with no database families */
		CommitTransactionCommand();
		metrics_cache_publish("", 0, pg_ha_monotonic_us() - start, 0);
		return;
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "pg_ha metrics refresh");
	/* starting the transaction has processed pending invalidations */
	rank_all = catalog_changed;
	catalog_changed = false;

	for (int i = 0; i < (int) NQUERIES; i++)
	{
		int64		every = 0;

		if (queries[i].every == EVERY_SIZE_INTERVAL)
			every = pg_ha_metrics_size_interval * INT64CONST(1000000);
		if (query_text[i] != NULL && every > 0 && start - query_ran_at[i] < every)
			continue;
		if (query_text[i] != NULL && queries[i].every == ONCE)
			continue;
		if (((queries[i].rank_sql != NULL || queries[i].sql_limited) &&
			 pg_ha_metrics_table_limit == 0) ||
			(queries[i].requires_extension != NULL &&
			 !OidIsValid(get_extension_oid(queries[i].requires_extension, true))))
		{
			/* per-object families are off, or the extension is absent */
			if (query_text[i])
				pfree(query_text[i]);
			query_text[i] = NULL;
			continue;
		}
		if (run_query(i, start))
			query_ran_at[i] = start;
		else
			errors++;
	}

	/* statistics views read in this transaction are cached: forget them */
	pgstat_clear_snapshot();

	initStringInfo(&all);
	for (int i = 0; i < (int) NQUERIES; i++)
		if (query_text[i])
			appendStringInfoString(&all, query_text[i]);
	metrics_cache_publish(all.data, all.len, pg_ha_monotonic_us() - start, errors);

	/* frees `all` and everything the queries allocated */
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* a collector that exits sooner than this after its start backs off */
#define QUICK_EXIT_US (60 * INT64CONST(1000000))
#define MAX_BACKOFF_S 60

static int64 started_at;
static bool connecting;			/* inside BackgroundWorkerInitializeConnection */

/* Seconds to wait before connecting after n quick exits in a row. */
static int
backoff_seconds(int n)
{
	return n <= 0 ? 0 : Min(1 << Min(n - 1, 6), MAX_BACKOFF_S);
}

/*
 * Runs at every exit.  A connection attempt that failed (the role does not
 * exist or may not log in, the database does not exist: postgres has
 * logged which, as FATAL) is reported in /metrics and explained here; the
 * postmaster starts the collector again a second later, and it waits
 * longer each time it fails again, rather than retrying in a tight loop.
 */
static void
collector_exit(int code, Datum arg)
{
	int			n = metrics_collector_exited(pg_ha_monotonic_us() - started_at < QUICK_EXIT_US);

	if (!connecting)
		return;
	metrics_collector_set_state(COLLECTOR_CONNECT_FAILED);
	ereport(LOG,
			(errmsg("pg_ha: metrics collector could not connect to database \"%s\" as role \"%s\"",
					pg_ha_metrics_database, pg_ha_metrics_role),
			 errdetail("No metrics queries run until it can; it tries again in %d s.",
					   1 + backoff_seconds(n)),
			 errhint("pg_ha.metrics_role must be a role that may log in, is not a superuser and is a member of pg_monitor: CREATE ROLE %s LOGIN IN ROLE pg_monitor; (CREATE EXTENSION pg_ha creates it).",
					 quote_identifier(pg_ha_metrics_role))));
}

/* Waits out the backoff of earlier failed starts (interruptible). */
static void
back_off(void)
{
	int64		until = pg_ha_monotonic_us() +
		backoff_seconds(metrics_collector_quick_exits()) * INT64CONST(1000000);

	for (;;)
	{
		int64		left = until - pg_ha_monotonic_us();

		if (left <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) (left / 1000) + 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Connects as pg_ha.metrics_role, never as the bootstrap superuser, and
 * pins the session's settings (file header; see the query list for
 * search_path).  A role or database that does not exist is a FATAL here,
 * which collector_exit reports.
 */
static void
connect_as_metrics_role(void)
{
	connecting = true;
	BackgroundWorkerInitializeConnection(pg_ha_metrics_database, pg_ha_metrics_role, 0);
	connecting = false;
	pgstat_report_appname("pg_ha metrics collector");

	/*
	 * PGC_S_OVERRIDE: above ALTER ROLE / ALTER DATABASE ... SET, which the
	 * owner of the database could use to put their schema first.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	/* backstops: a metrics query must never wait behind DDL */
	SetConfigOption("lock_timeout", "100", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "10000", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "pg_ha metrics collector", PGC_SUSET, PGC_S_OVERRIDE);
}

void
pg_ha_metrics_collector_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	started_at = pg_ha_monotonic_us();
	before_shmem_exit(collector_exit, 0);
	metrics_collector_starting();
	back_off();
	connect_as_metrics_role();

	collector_context = AllocSetContextCreate(TopMemoryContext, "pg_ha metrics",
											  ALLOCSET_DEFAULT_SIZES);
	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, syscache_changed, (Datum) 0);
	before_shmem_exit(metrics_cache_unregister_collector, 0);
	metrics_cache_register_collector();
	poked = false;
	refreshed_once = false;

	for (;;)
	{
		int64		now = pg_ha_monotonic_us();
		int64		ttl_us = pg_ha_metrics_cache_ttl * INT64CONST(1000000);
		int64		age = metrics_cache_age_us(now);
		long		wait_ms = 60000;
		int			rc;

		/*
		 * Refresh when a scrape found the cache stale and woke us (the
		 * listener parks it until we publish), and once at start so that
		 * the first scrape finds figures (and the role checked) at once:
		 * a restarted collector has dropped its predecessor's figures.
		 */
		if (!refreshed_once || (age >= ttl_us && poked))
		{
			MemoryContext old = MemoryContextSwitchTo(collector_context);

			refresh_cache();
			MemoryContextSwitchTo(old);
			refreshed_once = true;
		}

		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   wait_ms, PG_WAIT_EXTENSION);
		poked = (rc & WL_LATCH_SET) != 0;
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
