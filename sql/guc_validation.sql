-- Every pg_ha parameter refuses bad values with a message naming it.
-- ALTER SYSTEM runs the same checks as postgresql.conf does at reload.
\set VERBOSITY default

-- etcd endpoints
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'ftp://10.0.0.1:2379';
ALTER SYSTEM SET pg_ha.etcd_endpoints = '';
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'http://';
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'http://10.0.0.1:2379/v3';
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'http://a b:2379';
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'http://e1:1,http://e2:1,http://e3:1,http://e4:1,http://e5:1,http://e6:1,http://e7:1,http://e8:1,http://e9:1,http://e10:1,http://e11:1,http://e12:1,http://e13:1,http://e14:1,http://e15:1,http://e16:1,http://e17:1';
ALTER SYSTEM SET pg_ha.etcd_endpoints = 'http://10.0.0.1:2379, https://10.0.0.2:2379/';
ALTER SYSTEM RESET pg_ha.etcd_endpoints;

-- names used in etcd keys
ALTER SYSTEM SET pg_ha.namespace = 'service';
ALTER SYSTEM SET pg_ha.namespace = '/a//b';
ALTER SYSTEM SET pg_ha.namespace = '/pg space';
ALTER SYSTEM SET pg_ha.namespace = '/pg';
ALTER SYSTEM SET pg_ha.cluster = 'pg test';
ALTER SYSTEM SET pg_ha.cluster = 'a/b';
ALTER SYSTEM SET pg_ha.cluster = 'pg-test_1.prod';
ALTER SYSTEM SET pg_ha.node_name = 'node/1';
ALTER SYSTEM SET pg_ha.node_name = 'this-name-is-far-too-long-for-a-member-key-because-it-exceeds-64-bytes';
ALTER SYSTEM SET pg_ha.node_name = 'pg-test-1';

-- the lease
ALTER SYSTEM SET pg_ha.ttl = 1;
ALTER SYSTEM SET pg_ha.ttl = 4000;
ALTER SYSTEM SET pg_ha.ttl = 'ten';
ALTER SYSTEM SET pg_ha.ttl = '30s';
ALTER SYSTEM SET pg_ha.etcd_timeout = 10;
ALTER SYSTEM SET pg_ha.etcd_timeout = '1s';

-- addresses
ALTER SYSTEM SET pg_ha.connect_address = 'db1';
ALTER SYSTEM SET pg_ha.connect_address = 'db1:0';
ALTER SYSTEM SET pg_ha.connect_address = 'db1:65536';
ALTER SYSTEM SET pg_ha.connect_address = ':5432';
ALTER SYSTEM SET pg_ha.connect_address = 'user@db1:5432';
ALTER SYSTEM SET pg_ha.connect_address = '10.0.0.11:5432';
ALTER SYSTEM SET pg_ha.api_listen = '0.0.0.0:http';
ALTER SYSTEM SET pg_ha.api_listen = '';

-- TLS files must be absolute paths
ALTER SYSTEM SET pg_ha.etcd_cacert = 'ca.pem';
ALTER SYSTEM SET pg_ha.etcd_cacert = '/etc/pg_ha/ca.pem';

-- unknown parameters in the reserved prefix are refused
ALTER SYSTEM SET pg_ha.no_such_setting = 'x';

ALTER SYSTEM RESET ALL;

-- the etcd password lives in a file, never in a parameter (postgres logs
-- every parameter a reload changes); the file path must be absolute
ALTER SYSTEM SET pg_ha.etcd_password_file = 'etcd.pw';
ALTER SYSTEM SET pg_ha.etcd_password = 'secret';
ALTER SYSTEM SET pg_ha.etcd_password_file = '/etc/pg_ha/etcd.pw';
ALTER SYSTEM RESET ALL;
