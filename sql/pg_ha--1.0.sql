-- pg_ha 1.0: SQL surface.
\echo Use "CREATE EXTENSION pg_ha" to load this file. \quit

-- The schema is named like the extension, as the SQL functions are
-- documented (pg_ha.status() ...).  Names starting with "pg_" are reserved
-- for system schemas, so creating it needs allow_system_table_mods for the
-- length of this script (the extension is superuser-only).  The schema
-- belongs to the extension and goes away with DROP EXTENSION.
SET LOCAL allow_system_table_mods = on;
CREATE SCHEMA pg_ha;
RESET allow_system_table_mods;
GRANT USAGE ON SCHEMA pg_ha TO PUBLIC;

-- One row describing this node as its HA worker last saw it (shared memory;
-- never blocks on etcd).
CREATE FUNCTION pg_ha.status(
    OUT node text,
    OUT cluster text,
    OUT role text,
    OUT state text,
    OUT leader text,
    OUT lease_held boolean,
    OUT lease_seconds_left double precision,
    OUT timeline integer,
    OUT lsn pg_lsn,
    OUT etcd_reachable boolean,
    OUT etcd_endpoint text,
    OUT etcd_last_ok timestamptz,
    OUT last_error text,
    OUT worker_pid integer,
    OUT paused boolean,
    OUT fenced boolean,
    OUT sync_mode text,
    OUT sync_standbys text[],
    OUT sync_since timestamptz[],
    OUT sync_waiting text,
    OUT pending_restart boolean,
    OUT settings jsonb)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_status';

-- One row per member key under /<namespace>/<cluster>/members/, read from
-- etcd at call time (bounded by pg_ha.etcd_timeout).
CREATE FUNCTION pg_ha.members(
    OUT name text,
    OUT role text,
    OUT state text,
    OUT is_leader boolean,
    OUT conn_url text,
    OUT api_url text,
    OUT timeline integer,
    OUT lsn pg_lsn,
    OUT receive_lsn pg_lsn,
    OUT replay_lsn pg_lsn,
    OUT replication_state text,
    OUT tags jsonb,
    OUT data jsonb)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_members';

-- Hand leadership to a replica (the most advanced eligible one when no
-- candidate is given), now or at scheduled_at (in the future, years
-- 1970-9999); waits until done and says what happened: a request that
-- ended as a failover is an error, not "switched over".  On timeout or
-- cancel a request never handed over is removed.  wait (up to 1 hour):
-- how long a candidate that is not streaming or still catching up gets to
-- qualify before the call is refused.  Called on the leader itself, it
-- answers once leadership is handed over, before this node's restart as a
-- standby ends the session.
CREATE FUNCTION pg_ha.switchover(candidate text DEFAULT NULL,
                                 scheduled_at timestamptz DEFAULT NULL,
                                 wait interval DEFAULT NULL)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_switchover';

-- Make candidate the leader when there is no healthy leader.  Refused
-- unless candidate is a running replica, not tagged nofailover, on the
-- cluster's timeline, and as advanced as every other eligible replica and
-- within maximum_lag_on_failover; force => true accepts the last two (the
-- request then carries "force": true) and the WAL it loses.  On timeout or
-- cancel the request is removed.
CREATE FUNCTION pg_ha.failover(candidate text, force boolean DEFAULT false)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_failover';

-- Remove a switchover or failover request nobody acted on yet (a
-- scheduled switchover waiting for its time, for one).
CREATE FUNCTION pg_ha.cancel_switchover()
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_cancel_switchover';

-- Maintenance mode, stored in etcd for every node: no automatic failover
-- or demotion while paused.  The commit fence still holds.
CREATE FUNCTION pg_ha.pause() RETURNS void
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'pg_ha_pause';
CREATE FUNCTION pg_ha.resume() RETURNS void
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'pg_ha_resume';
-- restart postgres on this node through the service manager (ha_restart.c)
CREATE FUNCTION pg_ha.restart(reason text DEFAULT 'requested', pending_only boolean DEFAULT false)
RETURNS text
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'pg_ha_restart';
-- re-clone this replica from the cluster at its next start, through the
-- service manager and pg_hactl rejoin (ha_reinit.c); refused on the leader
CREATE FUNCTION pg_ha.reinitialize(force boolean DEFAULT false, from_leader boolean DEFAULT false)
RETURNS text
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'pg_ha_reinitialize';

REVOKE ALL ON FUNCTION pg_ha.switchover(text, timestamptz, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.failover(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.cancel_switchover() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.pause() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.resume() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.restart(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.reinitialize(boolean, boolean) FROM PUBLIC;

-- Control and status functions are not for PUBLIC; monitoring roles may
-- read status.
REVOKE ALL ON FUNCTION pg_ha.status() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_ha.members() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_ha.status() TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_ha.members() TO pg_monitor;

-- ---------------------------------------------------------------------------
-- WAL archive (archive_library = 'pg_ha'; src/archive_*.c, docs/archive.md)
-- ---------------------------------------------------------------------------

-- What the archive module has stored, what is waiting in pg_wal, how far
-- behind it is and how fast it goes.  Counters start at zero with the server.
CREATE FUNCTION pg_ha.archive_status(
    OUT repo text,
    OUT compression text,
    OUT parallel integer,
    OUT enabled boolean,
    OUT archived_count bigint,
    OUT archived_bytes bigint,
    OUT stored_bytes bigint,
    OUT compression_ratio double precision,
    OUT pushed_ahead bigint,
    OUT lookahead_hits bigint,
    OUT already_archived bigint,
    OUT failed_count bigint,
    OUT mismatch_count bigint,
    OUT corrupt_count bigint,
    OUT in_flight integer,
    OUT pending_count integer,
    OUT pending_bytes bigint,
    OUT lag_seconds double precision,
    OUT files_per_second double precision,
    OUT bytes_per_second double precision,
    OUT last_archived_wal text,
    OUT last_archived_time timestamptz,
    OUT last_failed_wal text,
    OUT last_failed_time timestamptz,
    OUT last_error text)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pg_ha_archive_status';

REVOKE ALL ON FUNCTION pg_ha.archive_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_ha.archive_status() TO pg_monitor;

-- The metrics collector connects as pg_ha.metrics_role (default
-- pgha_monitor), never as a superuser: GET /metrics needs no
-- authentication and the collector's queries run where other roles can
-- create functions and operators (docs/metrics.md).  The role is created
-- here when it is missing, so that CREATE EXTENSION is the only setup step:
-- LOGIN because PG15 background workers connect only as roles that may log
-- in (no password: pg_hba.conf decides, as for any role), and a member of
-- pg_monitor for the statistics of every session.  An existing role is left
-- as it is; the collector refuses to run as a superuser or without
-- pg_monitor.  Roles are cluster-wide: DROP EXTENSION leaves it.  Every name
-- is qualified: search_path here is the caller's.
DO $$
DECLARE
    r text := pg_catalog.current_setting('pg_ha.metrics_role', true);
BEGIN
    IF r IS NOT NULL AND r OPERATOR(pg_catalog.<>) ''
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN IN ROLE pg_monitor', r);
    END IF;
END
$$;
