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
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"

#include <math.h>

#include "access/xact.h"
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
#include "utils/builtins.h"
#include "utils/array.h"
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

static const MetricQuery queries[] = {
	{"pg", "server state",
		NULL,
		"SELECT extract(epoch FROM now())::float8 AS timestamp,"
		" extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime,"
		" extract(epoch FROM pg_postmaster_start_time())::float8 AS boot_time,"
		" (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - '0/0')::float8 AS lsn,"
		" (CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END - '0/0')::float8 AS insert_lsn,"
		" (CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn() END - '0/0')::float8 AS flush_lsn,"
		" (pg_last_wal_receive_lsn() - '0/0')::float8 AS receive_lsn,"
		" (pg_last_wal_replay_lsn() - '0/0')::float8 AS replay_lsn,"
		" extract(epoch FROM pg_conf_load_time())::float8 AS conf_reload_time,"
		" extract(epoch FROM pg_last_xact_replay_timestamp())::float8 AS last_replay_time,"
		" (CASE WHEN pg_is_in_recovery() THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END)::float8 AS lag,"
		" (CASE WHEN pg_is_in_recovery() AND pg_is_wal_replay_paused() THEN 1 ELSE 0 END) AS is_wal_replay_paused,"
		" current_setting('server_version_num')::int AS version,"
		" (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline_id",
	"", EVERY_REFRESH, NULL, false},
	{"pg_meta", "server identity (value 1)",
		NULL,
		"SELECT (SELECT system_identifier FROM pg_control_system())::text AS cluster_id,"
		" current_setting('cluster_name') AS cluster_name,"
		" current_setting('port') AS listen_port,"
		" current_setting('data_directory') AS data_dir,"
		" current_setting('config_file') AS conf_path,"
		" current_setting('hba_file') AS hba_path,"
		" current_setting('wal_level') AS wal_level,"
		" current_setting('server_version') AS version,"
		" current_setting('server_version_num') AS ver_num,"
		" 1 AS info",
	"", ONCE, NULL, false},
	{"pg_setting", "server settings",
		NULL,
		"SELECT current_setting('max_connections')::int AS max_connections,"
		" current_setting('max_prepared_transactions')::int AS max_prepared_transactions,"
		" current_setting('max_worker_processes')::int AS max_worker_processes,"
		" current_setting('max_wal_senders')::int AS max_wal_senders,"
		" current_setting('max_replication_slots')::int AS max_replication_slots,"
		" current_setting('max_locks_per_transaction')::int AS max_locks_per_transaction,"
		" current_setting('block_size')::int AS block_size,"
		" current_setting('wal_block_size')::int AS wal_block_size,"
		" (current_setting('data_checksums')::bool)::int AS data_checksums,"
		" (current_setting('wal_log_hints')::bool)::int AS wal_log_hints,"
		" (current_setting('archive_mode') <> 'off')::int AS archive_mode,"
		" (current_setting('hot_standby')::bool)::int AS hot_standby",
	"", ONCE, NULL, false},
	{"pg_sync_standby", "synchronous replication configured",
		NULL,
		"SELECT (current_setting('synchronous_standby_names') <> '')::int AS enabled",
	"", EVERY_REFRESH, NULL, false},
	{"pg_db", "pg_stat_database per database",
		NULL,
		"SELECT d.datname::text AS datname, d.oid::int8 AS datid, age(d.datfrozenxid)::int8 AS age,"
		" d.datistemplate::int AS is_template, d.datallowconn::int AS allow_conn,"
		" d.datconnlimit AS conn_limit, d.datfrozenxid::text::int8 AS frozen_xid,"
		" s.numbackends, s.xact_commit, s.xact_rollback, s.xact_commit + s.xact_rollback AS xact_total,"
		" s.blks_read, s.blks_hit, s.blks_read + s.blks_hit AS blks_access,"
		" s.tup_returned, s.tup_fetched, s.tup_inserted, s.tup_updated, s.tup_deleted,"
		" s.tup_inserted + s.tup_updated + s.tup_deleted AS tup_modified,"
		" s.conflicts, s.temp_files, s.temp_bytes, s.deadlocks,"
		" coalesce(s.checksum_failures, 0) AS cks_fails,"
		" s.blk_read_time / 1000 AS blk_read_time, s.blk_write_time / 1000 AS blk_write_time,"
		" s.session_time / 1000 AS session_time, s.active_time / 1000 AS active_time,"
		" s.idle_in_transaction_time / 1000 AS ixact_time,"
		" s.sessions, s.sessions_abandoned, s.sessions_fatal, s.sessions_killed,"
		" extract(epoch FROM s.stats_reset)::float8 AS reset_time"
		" FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid ORDER BY 1",
		"xact_commit xact_rollback xact_total blks_read blks_hit blks_access tup_returned"
		" tup_fetched tup_inserted tup_updated tup_deleted tup_modified conflicts temp_files"
		" temp_bytes deadlocks cks_fails blk_read_time blk_write_time session_time active_time"
		" ixact_time sessions sessions_abandoned sessions_fatal sessions_killed",
	EVERY_REFRESH, NULL, false},
	{"pg_activity", "client backends per database and state",
		NULL,
		"SELECT d.datname::text AS datname, st.state,"
		" count(a.pid) AS count,"
		" coalesce(max(extract(epoch FROM now() - a.state_change)), 0)::float8 AS max_duration,"
		" coalesce(max(extract(epoch FROM now() - a.xact_start)), 0)::float8 AS max_tx_duration,"
		" coalesce(max(extract(epoch FROM now() - a.backend_start)), 0)::float8 AS max_conn_duration"
		" FROM pg_database d CROSS JOIN (VALUES ('active'), ('idle'), ('idle in transaction'),"
		" ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')) st(state)"
		" LEFT JOIN pg_stat_activity a ON a.datid = d.oid AND a.state = st.state"
		" AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
		" WHERE d.datallowconn GROUP BY 1, 2 ORDER BY 1, 2",
	"", EVERY_REFRESH, NULL, false},
	{"pg_backend", "server processes per type",
		NULL,
		"SELECT backend_type AS type, count(*) AS count FROM pg_stat_activity GROUP BY 1 ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_lock", "locks held or awaited per database and mode",
		NULL,
		"SELECT d.datname::text AS datname, m.mode, count(l.locktype) AS count"
		" FROM pg_database d CROSS JOIN (VALUES ('AccessShareLock'), ('RowShareLock'),"
		" ('RowExclusiveLock'), ('ShareUpdateExclusiveLock'), ('ShareLock'),"
		" ('ShareRowExclusiveLock'), ('ExclusiveLock'), ('AccessExclusiveLock')) m(mode)"
		" LEFT JOIN pg_locks l ON l.database = d.oid AND l.mode = m.mode"
		" WHERE d.datallowconn GROUP BY 1, 2 ORDER BY 1, 2",
	"", EVERY_REFRESH, NULL, false},
	{"pg_xact", "transaction id horizon",
		NULL,
		"SELECT pg_snapshot_xmin(s)::text::int8 AS xmin, pg_snapshot_xmax(s)::text::int8 AS xmax,"
		" (SELECT count(*) FROM pg_snapshot_xip(s)) AS xnum FROM pg_current_snapshot() s",
	"", EVERY_REFRESH, NULL, false},
	{"pg_repl", "replication connections (pg_stat_replication)",
		NULL,
		"SELECT coalesce(application_name, '') AS appname, coalesce(usename::text, '') AS usename,"
		" coalesce(host(client_addr), 'localhost') AS address, pid::text AS pid,"
		" coalesce(client_port, 0)::text AS client_port,"
		" CASE state WHEN 'streaming' THEN 0 WHEN 'startup' THEN 1 WHEN 'catchup' THEN 2"
		"  WHEN 'backup' THEN 3 WHEN 'stopping' THEN 4 ELSE -1 END AS state,"
		" CASE sync_state WHEN 'async' THEN 0 WHEN 'potential' THEN 1 WHEN 'sync' THEN 2"
		"  WHEN 'quorum' THEN 3 ELSE -1 END AS sync_state,"
		" sync_priority, backend_xmin::text::int8 AS backend_xmin,"
		" (cur - '0/0')::float8 AS lsn,"
		" (cur - sent_lsn)::float8 AS sent_diff, (cur - write_lsn)::float8 AS write_diff,"
		" (cur - flush_lsn)::float8 AS flush_diff, (cur - replay_lsn)::float8 AS replay_diff,"
		" (sent_lsn - '0/0')::float8 AS sent_lsn, (write_lsn - '0/0')::float8 AS write_lsn,"
		" (flush_lsn - '0/0')::float8 AS flush_lsn, (replay_lsn - '0/0')::float8 AS replay_lsn,"
		" coalesce(extract(epoch FROM write_lag), 0)::float8 AS write_lag,"
		" coalesce(extract(epoch FROM flush_lag), 0)::float8 AS flush_lag,"
		" coalesce(extract(epoch FROM replay_lag), 0)::float8 AS replay_lag,"
		" extract(epoch FROM backend_start)::float8 AS launch_time,"
		" extract(epoch FROM reply_time)::float8 AS reply_time"
		" FROM pg_stat_replication,"
		" LATERAL (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
		"  ELSE pg_current_wal_lsn() END AS cur) c ORDER BY 1, 4",
	"", EVERY_REFRESH, NULL, false},
	{"pg_downstream", "replication connections per state",
		NULL,
		"SELECT st.state, count(r.pid) AS count FROM (VALUES ('streaming'), ('startup'),"
		" ('catchup'), ('backup'), ('stopping')) st(state)"
		" LEFT JOIN pg_stat_replication r ON r.state = st.state GROUP BY 1 ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_recv", "WAL receiver (replicas)",
		NULL,
		"SELECT coalesce(slot_name, '') AS slot_name, coalesce(sender_host, '') AS sender_host,"
		" (receive_start_lsn - '0/0')::float8 AS init_lsn, receive_start_tli AS init_tli,"
		" (written_lsn - '0/0')::float8 AS write_lsn, (flushed_lsn - '0/0')::float8 AS flush_lsn,"
		" received_tli AS flush_tli, (latest_end_lsn - '0/0')::float8 AS reported_lsn,"
		" extract(epoch FROM last_msg_send_time)::float8 AS msg_send_time,"
		" extract(epoch FROM last_msg_receipt_time)::float8 AS msg_recv_time,"
		" extract(epoch FROM latest_end_time)::float8 AS reported_time"
		" FROM pg_stat_wal_receiver",
	"", EVERY_REFRESH, NULL, false},
	{"pg_sub", "logical replication subscriptions (pg_stat_subscription, apply workers)",
		NULL,
		"SELECT su.subname::text AS subname, su.oid::int8 AS id, coalesce(st.pid, 0) AS pid,"
		" (st.received_lsn - '0/0')::float8 AS received_lsn,"
		" (st.latest_end_lsn - '0/0')::float8 AS reported_lsn,"
		" extract(epoch FROM st.last_msg_send_time)::float8 AS msg_send_time,"
		" extract(epoch FROM st.last_msg_receipt_time)::float8 AS msg_recv_time,"
		" extract(epoch FROM st.latest_end_time)::float8 AS reported_time"
		" FROM pg_subscription su LEFT JOIN pg_stat_get_subscription(NULL) st"
		"  ON st.subid = su.oid AND st.relid IS NULL"
		" WHERE su.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
		" ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_slot", "replication slots",
		NULL,
		"SELECT slot_name::text AS slot_name, active::int AS active, temporary::int AS temporary,"
		" xmin::text::int8 AS xmin, catalog_xmin::text::int8 AS catalog_xmin,"
		" (restart_lsn - '0/0')::float8 AS restart_lsn,"
		" (confirmed_flush_lsn - '0/0')::float8 AS confirm_lsn,"
		" (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"
		"  - restart_lsn)::float8 AS retained_bytes,"
		" safe_wal_size::float8 AS safe_wal_size,"
		" CASE wal_status WHEN 'reserved' THEN 0 WHEN 'extended' THEN 1 WHEN 'unreserved' THEN 2"
		"  WHEN 'lost' THEN 3 ELSE -1 END AS wal_status"
		" FROM pg_replication_slots ORDER BY 1",
	"", EVERY_REFRESH, NULL, false},
	{"pg_archiver", "WAL archiver (pg_stat_archiver)",
		NULL,
		"SELECT archived_count AS finish_count, failed_count,"
		" coalesce(extract(epoch FROM last_archived_time), 0)::float8 AS last_finish_time,"
		" coalesce(extract(epoch FROM last_failed_time), 0)::float8 AS last_failed_time,"
		" extract(epoch FROM stats_reset)::float8 AS reset_time FROM pg_stat_archiver",
	"finish_count failed_count", EVERY_REFRESH, NULL, false},
	{"pg_bgwriter", "background writer and checkpoints (pg_stat_bgwriter)",
		NULL,
		"SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time / 1000 AS checkpoint_write_time,"
		" checkpoint_sync_time / 1000 AS checkpoint_sync_time, buffers_checkpoint, buffers_clean,"
		" maxwritten_clean, buffers_backend, buffers_backend_fsync, buffers_alloc,"
		" extract(epoch FROM stats_reset)::float8 AS reset_time FROM pg_stat_bgwriter",
		"checkpoints_timed checkpoints_req checkpoint_write_time checkpoint_sync_time"
		" buffers_checkpoint buffers_clean maxwritten_clean buffers_backend"
		" buffers_backend_fsync buffers_alloc",
	EVERY_REFRESH, NULL, false},
	{"pg_checkpointer", "checkpointer (PG17 names, from pg_stat_bgwriter)",
		NULL,
		"SELECT checkpoints_timed AS timed, checkpoints_req AS req,"
		" checkpoint_write_time / 1000 AS write_time, checkpoint_sync_time / 1000 AS sync_time,"
		" buffers_checkpoint AS buffers_written FROM pg_stat_bgwriter",
	"timed req write_time sync_time buffers_written", EVERY_REFRESH, NULL, false},
	{"pg_checkpoint", "last checkpoint (pg_control_checkpoint)",
		NULL,
		"SELECT (checkpoint_lsn - '0/0')::float8 AS checkpoint_lsn, (redo_lsn - '0/0')::float8 AS redo_lsn,"
		" timeline_id AS tli, prev_timeline_id AS prev_tli, full_page_writes::int AS full_page_writes,"
		" split_part(next_xid, ':', 1)::int8 AS next_xid_epoch, split_part(next_xid, ':', 2)::int8 AS next_xid,"
		" next_oid::int8 AS next_oid, next_multixact_id::text::int8 AS next_multixact_id,"
		" next_multi_offset::text::int8 AS next_multi_offset, oldest_xid::text::int8 AS oldest_xid,"
		" oldest_xid_dbid::int8 AS oldest_xid_dbid, oldest_active_xid::text::int8 AS oldest_active_xid,"
		" oldest_multi_xid::text::int8 AS oldest_multi_xid, oldest_multi_dbid::int8 AS oldest_multi_dbid,"
		" oldest_commit_ts_xid::text::int8 AS oldest_commit_ts_xid,"
		" newest_commit_ts_xid::text::int8 AS newest_commit_ts_xid,"
		" extract(epoch FROM checkpoint_time)::float8 AS time,"
		" extract(epoch FROM now() - checkpoint_time)::float8 AS elapse"
		" FROM pg_control_checkpoint()",
	"", EVERY_REFRESH, NULL, false},
	{"pg_wal", "WAL generation (pg_stat_wal)",
		NULL,
		"SELECT wal_records AS records, wal_fpi AS fpi, wal_bytes::float8 AS bytes,"
		" wal_buffers_full AS buffers_full, wal_write AS write, wal_sync AS sync,"
		" wal_write_time / 1000 AS write_time, wal_sync_time / 1000 AS sync_time,"
		" extract(epoch FROM stats_reset)::float8 AS reset_time FROM pg_stat_wal",
	"records fpi bytes buffers_full write sync write_time sync_time", EVERY_REFRESH, NULL, false},
	{"pg_size", "database size on disk",
		NULL,
		"SELECT datname::text AS datname, pg_database_size(oid)::float8 AS bytes"
		" FROM pg_database WHERE datallowconn ORDER BY 1",
	"", EVERY_SIZE_INTERVAL, NULL, false},
	{"pg_table", "most active tables of the collector's database",
		/* cheap counters only: the views cost per row and per index */
		"SELECT coalesce(array_agg(oid), '{}') FROM (SELECT c.oid FROM pg_class c"
		" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm')"
		" AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
		" ORDER BY pg_stat_get_tuples_returned(c.oid) + pg_stat_get_tuples_fetched(c.oid)"
		" + pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)"
		" + pg_stat_get_tuples_deleted(c.oid) + pg_stat_get_live_tuples(c.oid) DESC, c.oid"
		" LIMIT %d) t",
		/*
		 * pg_stat_user_tables and pg_statio_user_tables' own definitions
		 * (PG15), read for the chosen tables only, with one pass over each
		 * table's indexes (and its TOAST table's) instead of the views'
		 * GROUP BY and per-column subqueries.
		 */
		"SELECT current_database()::text AS datname, n.nspname || '.' || c.relname AS relname,"
		" c.oid::int8 AS relid, c.relpages::int8 AS pages, c.reltuples::float8 AS tuples,"
		" age(c.relfrozenxid)::int8 AS age, c.relnatts::int AS ncols,"
		" c.relpages::int8 * current_setting('block_size')::int8 AS size_bytes,"
		" s.seq_scan, s.seq_tup_read, coalesce(ix.scans, 0) AS idx_scan,"
		" coalesce(ix.fetched, 0) + s.tup_fetched AS idx_tup_fetch,"
		" s.seq_scan + coalesce(ix.scans, 0) AS tbl_scan,"
		" s.seq_tup_read + coalesce(ix.fetched, 0) + s.tup_fetched AS tup_read,"
		" s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS n_tup_mod,"
		" pg_stat_get_tuples_hot_updated(c.oid) AS n_tup_hot_upd,"
		" pg_stat_get_live_tuples(c.oid) AS n_live_tup, pg_stat_get_dead_tuples(c.oid) AS n_dead_tup,"
		" pg_stat_get_mod_since_analyze(c.oid) AS n_mod_since_analyze,"
		" pg_stat_get_ins_since_vacuum(c.oid) AS n_ins_since_vacuum,"
		" extract(epoch FROM pg_stat_get_last_vacuum_time(c.oid))::float8 AS last_vacuum,"
		" extract(epoch FROM pg_stat_get_last_autovacuum_time(c.oid))::float8 AS last_autovacuum,"
		" extract(epoch FROM pg_stat_get_last_analyze_time(c.oid))::float8 AS last_analyze,"
		" extract(epoch FROM pg_stat_get_last_autoanalyze_time(c.oid))::float8 AS last_autoanalyze,"
		" pg_stat_get_vacuum_count(c.oid) AS vacuum_count,"
		" pg_stat_get_autovacuum_count(c.oid) AS autovacuum_count,"
		" pg_stat_get_analyze_count(c.oid) AS analyze_count,"
		" pg_stat_get_autoanalyze_count(c.oid) AS autoanalyze_count,"
		" pg_stat_get_blocks_fetched(c.oid) - pg_stat_get_blocks_hit(c.oid) AS heap_blks_read,"
		" pg_stat_get_blocks_hit(c.oid) AS heap_blks_hit,"
		" coalesce(ix.blks_read, 0) AS idx_blks_read, coalesce(ix.blks_hit, 0) AS idx_blks_hit,"
		" CASE WHEN c.reltoastrelid = 0 THEN 0 ELSE pg_stat_get_blocks_fetched(c.reltoastrelid)"
		"  - pg_stat_get_blocks_hit(c.reltoastrelid) END AS toast_blks_read,"
		" CASE WHEN c.reltoastrelid = 0 THEN 0 ELSE pg_stat_get_blocks_hit(c.reltoastrelid) END"
		"  AS toast_blks_hit,"
		" coalesce(tx.blks_read, 0) AS tidx_blks_read, coalesce(tx.blks_hit, 0) AS tidx_blks_hit"
		" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
		" LATERAL (SELECT pg_stat_get_numscans(c.oid) AS seq_scan,"
		"  pg_stat_get_tuples_returned(c.oid) AS seq_tup_read,"
		"  pg_stat_get_tuples_fetched(c.oid) AS tup_fetched,"
		"  pg_stat_get_tuples_inserted(c.oid) AS n_tup_ins,"
		"  pg_stat_get_tuples_updated(c.oid) AS n_tup_upd,"
		"  pg_stat_get_tuples_deleted(c.oid) AS n_tup_del) s,"
		" LATERAL (SELECT sum(pg_stat_get_numscans(i.indexrelid))::int8 AS scans,"
		"  sum(pg_stat_get_tuples_fetched(i.indexrelid))::int8 AS fetched,"
		"  sum(pg_stat_get_blocks_fetched(i.indexrelid) - pg_stat_get_blocks_hit(i.indexrelid))::int8"
		"   AS blks_read,"
		"  sum(pg_stat_get_blocks_hit(i.indexrelid))::int8 AS blks_hit"
		"  FROM pg_index i WHERE i.indrelid = c.oid) ix,"
		" LATERAL (SELECT sum(pg_stat_get_blocks_fetched(i.indexrelid) - pg_stat_get_blocks_hit(i.indexrelid))::int8"
		"   AS blks_read,"
		"  sum(pg_stat_get_blocks_hit(i.indexrelid))::int8 AS blks_hit"
		"  FROM pg_index i WHERE c.reltoastrelid <> 0 AND i.indrelid = c.reltoastrelid) tx"
		" WHERE c.oid = ANY($1) ORDER BY c.oid",
		"seq_scan seq_tup_read idx_scan idx_tup_fetch tbl_scan tup_read n_tup_ins n_tup_upd"
		" n_tup_del n_tup_mod n_tup_hot_upd vacuum_count autovacuum_count analyze_count"
		" autoanalyze_count heap_blks_read heap_blks_hit idx_blks_read idx_blks_hit"
		" toast_blks_read toast_blks_hit tidx_blks_read tidx_blks_hit",
	EVERY_REFRESH, NULL, false},
	{"pg_index", "most used indexes of the collector's database",
		"SELECT coalesce(array_agg(oid), '{}') FROM (SELECT c.oid FROM pg_class c"
		" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'i'"
		" AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
		" ORDER BY pg_stat_get_numscans(c.oid) + pg_stat_get_tuples_returned(c.oid) DESC, c.oid"
		" LIMIT %d) t",
		" SELECT current_database()::text AS datname, s.schemaname || '.' || s.relname AS relname,"
		" s.indexrelname::text AS idxname, s.indexrelid::int8 AS relid,"
		" c.relpages::int8 * current_setting('block_size')::int8 AS size_bytes,"
		" s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,"
		/* pg_statio_all_indexes' own definitions, without a second join */
		" pg_stat_get_blocks_fetched(s.indexrelid) - pg_stat_get_blocks_hit(s.indexrelid) AS idx_blks_read,"
		" pg_stat_get_blocks_hit(s.indexrelid) AS idx_blks_hit"
		" FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid"
		" WHERE s.indexrelid = ANY($1) ORDER BY s.indexrelid",
	"idx_scan idx_tup_read idx_tup_fetch idx_blks_read idx_blks_hit", EVERY_REFRESH, NULL, false},
	{"pg_func", "most called functions of the collector's database",
		/* the namespace test first: pg_proc has thousands of built-in rows */
		"SELECT coalesce(array_agg(oid), '{}') FROM (SELECT p.oid FROM pg_proc p"
		" WHERE p.pronamespace <> ALL (ARRAY(SELECT oid FROM pg_namespace"
		"  WHERE nspname IN ('pg_catalog', 'information_schema')))"
		" AND pg_stat_get_function_calls(p.oid) IS NOT NULL"
		" ORDER BY pg_stat_get_function_calls(p.oid) DESC, p.oid LIMIT %d) t",
		"SELECT current_database()::text AS datname, schemaname || '.' || funcname AS funcname,"
		" funcid::int8 AS id, calls, total_time / 1000 AS total_time, self_time / 1000 AS self_time"
		" FROM pg_stat_user_functions WHERE funcid = ANY($1) ORDER BY calls DESC, funcid",
	"calls total_time self_time", EVERY_REFRESH, NULL, false},
	{"pg_query", "statements with the most execution time (pg_stat_statements)",
		NULL,
		/*
		 * pg_stat_statements(false): without the query texts, which live in
		 * a file.  One row per database and queryid (the view has one per
		 * user and nesting level too, which would repeat label sets).
		 */
		"SELECT d.datname::text AS datname, s.queryid::text AS query,"
		" sum(s.calls)::int8 AS calls, sum(s.rows)::int8 AS rows,"
		" sum(s.total_exec_time)::float8 / 1000 AS exec_time,"
		" sum(s.blk_read_time + s.blk_write_time)::float8 / 1000 AS io_time,"
		" sum(s.wal_bytes)::float8 AS wal_bytes,"
		" sum(s.shared_blks_hit)::int8 AS sblk_hit, sum(s.shared_blks_read)::int8 AS sblk_read,"
		" sum(s.shared_blks_dirtied)::int8 AS sblk_dirtied,"
		" sum(s.shared_blks_written)::int8 AS sblk_written"
		" FROM pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid"
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

/*
 * Keeps *plan prepared for sql.  With `limited`, sql's "%d" is
 * pg_ha.metrics_table_limit and the plan is prepared again when the limit
 * changes.  Returns true when it (re)prepared the plan.
 */
static bool
keep_plan(SPIPlanPtr *plan, int *planned_limit, bool limited, const char *sql,
		  int nargs, Oid *argtypes)
{
	if (*plan != NULL && limited && *planned_limit != pg_ha_metrics_table_limit)
	{
		SPI_freeplan(*plan);
		*plan = NULL;
	}
	if (*plan != NULL)
		return false;
	*plan = prepare_kept(limited ? psprintf(sql, pg_ha_metrics_table_limit) : sql,
						 nargs, argtypes);
	*planned_limit = pg_ha_metrics_table_limit;
	return true;
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
	if (!keep_plan(&rank_plan[i], &rank_plan_limit[i], true, q->rank_sql, 0, NULL) &&
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
		(void) keep_plan(&query_plan[i], &query_plan_limit[i], q->sql_limited, q->sql,
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

static void
refresh_cache(void)
{
	int64		start = pg_ha_monotonic_us();
	uint64		errors = 0;
	StringInfoData all;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
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

void
pg_ha_metrics_collector_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(pg_ha_metrics_database, NULL, 0);
	pgstat_report_appname("pg_ha metrics collector");

	/* backstops: a metrics query must never wait behind DDL */
	SetConfigOption("lock_timeout", "100", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "10000", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "pg_ha metrics collector", PGC_SUSET, PGC_S_OVERRIDE);

	collector_context = AllocSetContextCreate(TopMemoryContext, "pg_ha metrics",
											  ALLOCSET_DEFAULT_SIZES);
	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, syscache_changed, (Datum) 0);
	before_shmem_exit(metrics_cache_unregister_collector, 0);
	metrics_cache_register_collector();
	poked = false;

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
		 * the first scrape finds figures at once.
		 */
		if (age >= ttl_us && (age == INT64_MAX || poked))
		{
			MemoryContext old = MemoryContextSwitchTo(collector_context);

			refresh_cache();
			MemoryContextSwitchTo(old);
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
