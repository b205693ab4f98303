-- The SQL surface: schema, functions, privileges, and what status() says
-- when etcd cannot be reached (this instance points at a dead port).
CREATE EXTENSION pg_ha;

SELECT p.proname, pg_get_function_result(p.oid) LIKE 'SETOF%' AS returns_set
  FROM pg_proc p WHERE p.pronamespace = 'pg_ha'::regnamespace ORDER BY 1;

-- nothing is executable by PUBLIC; pg_monitor may read status
SELECT p.proname, a.grantee::regrole AS grantee, a.privilege_type
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'pg_ha'::regnamespace AND a.grantee <> p.proowner
 ORDER BY 1, 2::text;

-- wait (bounded) until the worker has tried etcd once
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN (SELECT state <> 'starting' FROM pg_ha.status());
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;

SELECT node, cluster, role, state, leader, lease_held, lease_seconds_left,
       timeline, lsn IS NOT NULL AS has_lsn, etcd_reachable,
       last_error LIKE 'lease grant failed: etcd endpoint http://127.0.0.1:9: %' AS error_says_why,
       worker_pid > 0 AS worker_running
  FROM pg_ha.status();

-- members() reads etcd: unreachable is a clear error, not a hang
\set VERBOSITY terse
DO $$
BEGIN
  PERFORM * FROM pg_ha.members();
EXCEPTION WHEN connection_failure THEN
  RAISE NOTICE 'members() failed: %', split_part(SQLERRM, ':', 1) || ':' || split_part(SQLERRM, ':', 2);
END $$;
\set VERBOSITY default

CREATE ROLE regress_pg_ha_nobody;
CREATE ROLE regress_pg_ha_monitor IN ROLE pg_monitor;
SET ROLE regress_pg_ha_nobody;
SELECT node FROM pg_ha.status();
SELECT name FROM pg_ha.members();
RESET ROLE;
SET ROLE regress_pg_ha_monitor;
SELECT node, role FROM pg_ha.status();
RESET ROLE;
DROP ROLE regress_pg_ha_nobody;
DROP ROLE regress_pg_ha_monitor;

-- Sequences are WAL-logged 32 values ahead and take an XID only on the call
-- that logs: most nextval() calls commit without one, so a commit-time check
-- alone would let a fenced primary hand out values (fencing is off here).
CREATE SEQUENCE fence_seq;
SELECT nextval('fence_seq');
BEGIN;
SELECT nextval('fence_seq');
SELECT pg_current_xact_id_if_assigned() IS NULL AS nextval_took_no_xid;
COMMIT;
CREATE TABLE fence_src(i int);
CREATE MATERIALIZED VIEW fence_mv AS SELECT 1 AS i;
-- other sessions, opened through dblink: a refused write ends its session
CREATE EXTENSION dblink;
CREATE FUNCTION fence_conninfo() RETURNS text LANGUAGE sql AS $$
  SELECT format('dbname=%s port=%s host=%s application_name=pg_ha_fence_probe',
                current_database(), current_setting('port'),
                split_part(current_setting('unix_socket_directories'), ',', 1))
$$;
-- runs sql in a new session; says how it ended (the first line of the
-- error) and whether that session survived
CREATE FUNCTION fence_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  outcome text;
  alive bool;
BEGIN
  PERFORM dblink_connect('probe', fence_conninfo() || ' application_name=pg_ha_fence_try');
  BEGIN
    PERFORM dblink_exec('probe', sql);
    outcome := 'ok';
  EXCEPTION WHEN OTHERS THEN
    outcome := split_part(SQLERRM, E'\n', 1);
  END;
  FOR i IN 1..100 LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) > 0 INTO alive FROM pg_stat_activity
     WHERE application_name = 'pg_ha_fence_try';
    EXIT WHEN NOT alive;
    PERFORM pg_sleep(0.05);
  END LOOP;
  PERFORM dblink_disconnect('probe');
  RETURN outcome || CASE WHEN alive THEN ' (session kept)' ELSE ' (session ended)' END;
END $$;

-- with fencing on (the default) a primary without a leader lease refuses
-- writes; reads, pg_ha.status() and ALTER SYSTEM (no XID) still work
ALTER SYSTEM SET pg_ha.fencing = on;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT fenced FROM pg_ha.status();
-- a new session starts read-only, so libpq's target_session_attrs=read-write
-- skips this node; it can still read
SELECT * FROM dblink(fence_conninfo(),
  'SELECT current_setting(''default_transaction_read_only''), (SELECT fenced FROM pg_ha.status()), (SELECT count(*) FROM fence_src)')
  AS t(default_read_only text, fenced bool, rows bigint);
-- one held open across the fence, to see it become writable afterwards
SELECT dblink_connect('held', fence_conninfo());
SELECT * FROM dblink('held', 'SHOW default_transaction_read_only') AS t(v text);
-- every write is refused at its start, and its session ends
SELECT fence_try('INSERT INTO fence_src VALUES (1)');
SELECT fence_try('CREATE TABLE fence_probe(i int)');
SELECT fence_try('BEGIN READ WRITE; CREATE TEMP TABLE fence_probe_tmp(i int); COMMIT');
SELECT fence_try('COPY fence_src FROM STDIN');
SELECT fence_try('CREATE TABLE fence_probe_ctas AS SELECT 1 AS i');
SELECT fence_try('SELECT 1 AS i INTO fence_probe_into');
SELECT fence_try('REFRESH MATERIALIZED VIEW fence_mv');
SELECT fence_try('SELECT nextval(''fence_seq'')');
SELECT fence_try('SELECT setval(''fence_seq'', 1000)');
-- reads keep their session
SELECT fence_try($q$DO $x$ BEGIN PERFORM count(*) FROM fence_src; END $x$$q$);
SELECT count(*) AS visible_probe_tables FROM pg_class WHERE relname LIKE 'fence_probe%';
SELECT last_value <= 33 AS sequence_untouched FROM fence_seq;
ALTER SYSTEM RESET pg_ha.fencing;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT fenced FROM pg_ha.status();
-- the session that started fenced is writable now, from its next statement
SELECT dblink_exec('held', 'INSERT INTO fence_src VALUES (2)');
SELECT * FROM dblink('held', 'SHOW default_transaction_read_only') AS t(v text);
SELECT dblink_disconnect('held');
SELECT count(*) AS rows_written_after_the_fence FROM fence_src;
DROP FUNCTION fence_try(text);
DROP FUNCTION fence_conninfo();
DROP EXTENSION dblink;
DROP MATERIALIZED VIEW fence_mv;
DROP TABLE fence_src;
DROP SEQUENCE fence_seq;

-- control functions check their arguments before touching etcd
SELECT pg_ha.switchover('no such/name');
SELECT pg_ha.failover(NULL);
SELECT pg_ha.failover('');
SELECT pg_ha.switchover('n2', 'infinity');
-- a scheduled switchover must be in the future and in the years 1970-9999
-- (terse: the details name the current time)
\set VERBOSITY terse
SELECT pg_ha.switchover('n2', now() - interval '1 minute');
SELECT pg_ha.switchover('n2', '20266-11-30 10:00:00+00');
SELECT pg_ha.switchover('n2', '1969-12-31 23:59:59+00');
\set VERBOSITY default
SELECT pg_ha.failover('bad name', force => true);
-- with etcd unreachable they fail clearly, within pg_ha.etcd_timeout
\set VERBOSITY terse
DO $$
BEGIN
  PERFORM pg_ha.pause();
EXCEPTION WHEN connection_failure THEN
  RAISE NOTICE 'pause() failed: %', split_part(SQLERRM, ':', 1) || ':' || split_part(SQLERRM, ':', 2);
END $$;
DO $$
BEGIN
  PERFORM pg_ha.cancel_switchover();
EXCEPTION WHEN connection_failure THEN
  RAISE NOTICE 'cancel_switchover() failed: %', split_part(SQLERRM, ':', 1) || ':' || split_part(SQLERRM, ':', 2);
END $$;
\set VERBOSITY default

DROP EXTENSION pg_ha;
SELECT count(*) AS pg_ha_schemas_left FROM pg_namespace WHERE nspname = 'pg_ha';
