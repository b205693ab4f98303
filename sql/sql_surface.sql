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

-- with fencing on (the default) a primary without a leader lease refuses
-- every commit that wrote; reads and ALTER SYSTEM (no XID) still work
ALTER SYSTEM SET pg_ha.fencing = on;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT fenced FROM pg_ha.status();
CREATE TABLE fence_probe(i int);
BEGIN;
CREATE TEMP TABLE fence_probe_tmp(i int);
COMMIT;
SELECT count(*) AS visible_probe_tables FROM pg_class WHERE relname LIKE 'fence_probe%';
ALTER SYSTEM RESET pg_ha.fencing;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT fenced FROM pg_ha.status();

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
