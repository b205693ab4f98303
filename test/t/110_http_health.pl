
# Health API (Patroni-compatible): the status code of every endpoint for
# GET, HEAD and OPTIONS on a primary, a replica, a lagging (replay paused)
# replica and a primary whose etcd is down; the /patroni, /cluster and
# /history documents; control endpoints refused.

use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP ();
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);

sub metrics_conf
{
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	return ($port, "pg_ha.metrics_listen = '127.0.0.1:$port'");
}

my ($pm_port, $pm_conf) = metrics_conf();
my $primary = new_primary(name => 'node1', etcd => $etcd, ttl => $ttl,
	extra_conf => $pm_conf);
my ($rm_port, $rm_conf) = metrics_conf();
my $replica = new_replica(name => 'node2', from => $primary, extra_conf => $rm_conf);

my $http = HTTP::Tiny->new(timeout => 5, keep_alive => 0);

sub req
{
	my ($node, $method, $path) = @_;
	my $url = 'http://127.0.0.1:' . $node->api_port . $path;
	return $http->request($method, $url);
}

sub code { return req(@_)->{status}; }

# every health endpoint, and what it answers on each kind of node
my @endpoints = qw(/primary /read-write /master / /leader /replica /read-only
  /health /liveness /readiness /sync /async);
my %expect = (
	primary => {
		'/primary' => 200, '/read-write' => 200, '/master' => 200, '/' => 200,
		'/leader' => 200, '/replica' => 503, '/read-only' => 200,
		'/health' => 200, '/liveness' => 200, '/readiness' => 200,
		'/sync' => 503, '/async' => 503,
	},
	replica => {
		'/primary' => 503, '/read-write' => 503, '/master' => 503, '/' => 503,
		'/leader' => 503, '/replica' => 200, '/read-only' => 200,
		'/health' => 200, '/liveness' => 200, '/readiness' => 200,
		'/sync' => 503, '/async' => 200,
	},
);

sub check_codes
{
	my ($node, $what, $exp) = @_;
	for my $ep (@endpoints)
	{
		for my $m (qw(GET HEAD OPTIONS))
		{
			my $r = req($node, $m, $ep);
			is($r->{status}, $exp->{$ep}, "$what: $m $ep -> $exp->{$ep}");
			if ($m ne 'GET')
			{
				is($r->{content} // '', '', "$what: $m $ep has no body");
			}
		}
	}
}

wait_ok(sub { code($primary, 'GET', '/primary') == 200 },
	'primary: /primary becomes 200 once the lease is held', timeout => 30);
wait_ok(sub { code($replica, 'GET', '/async') == 200 },
	'replica: sees etcd (/async 200)', timeout => 30);

check_codes($primary, 'primary', $expect{primary});
check_codes($replica, 'replica', $expect{replica});

# --- documents
my $r = req($primary, 'GET', '/patroni');
is($r->{status}, 200, 'GET /patroni is 200');
like($r->{headers}{'content-type'}, qr{^application/json}, '/patroni is JSON');
my $doc = JSON::PP::decode_json($r->{content});
is($doc->{state}, 'running', 'primary /patroni: state running');
is($doc->{role},  'master',  'primary /patroni: role master (Patroni 3.0.2 spelling)');
ok($doc->{server_version} >= 150000, 'primary /patroni: server_version');
ok($doc->{xlog}{location} > 0, 'primary /patroni: xlog.location');
ok($doc->{timeline} >= 1, 'primary /patroni: timeline');
is($doc->{patroni}{scope}, 'pgtest', 'primary /patroni: patroni.scope is the cluster');
like($doc->{database_system_identifier}, qr/^\d+$/, 'primary /patroni: system identifier');
like($doc->{postmaster_start_time}, qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$/,
	'primary /patroni: postmaster_start_time as Patroni prints it');
ok(!$doc->{cluster_unlocked}, 'primary /patroni: cluster locked');
ok($doc->{dcs_last_seen} > 0, 'primary /patroni: dcs_last_seen');
my ($rep) = grep { $_->{application_name} eq 'node2' } @{ $doc->{replication} // [] };
ok($rep, 'primary /patroni: replication lists node2');
is($rep && $rep->{state}, 'streaming', 'primary /patroni: node2 streaming');
is($rep && $rep->{sync_state}, 'async', 'primary /patroni: node2 async');
my $repl_user = $primary->safe_psql('postgres',
	"SELECT usename FROM pg_stat_replication WHERE application_name = 'node2'");
wait_ok(sub {
		my $d = JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content});
		my ($r) = grep { $_->{application_name} eq 'node2' } @{ $d->{replication} // [] };
		$r && defined $r->{usename} && $r->{usename} eq $repl_user },
	"primary /patroni: replication usename is the WAL sender's role ($repl_user)", timeout => 30);
ok(!exists $doc->{pending_restart}, 'primary /patroni: no pending_restart');

# A restart-only setting changed in the configuration files: pending_restart
# in /patroni and patroni_pending_restart 1, until the change is undone.
my $maxconn = $primary->safe_psql('postgres', 'SHOW max_connections');
$primary->safe_psql('postgres', 'ALTER SYSTEM SET max_connections = ' . ($maxconn + 1));
$primary->reload;
wait_ok(sub { JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pending_restart} },
	'primary /patroni: pending_restart true after a restart-only change', timeout => 30);
like(req($primary, 'GET', '/metrics')->{content}, qr/^patroni_pending_restart\{[^}]*\} 1$/m,
	'patroni_pending_restart 1');
$primary->safe_psql('postgres', 'ALTER SYSTEM RESET max_connections');
$primary->reload;
wait_ok(sub { !exists JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pending_restart} },
	'primary /patroni: pending_restart gone once the change is undone', timeout => 30);

$doc = JSON::PP::decode_json(req($replica, 'GET', '/patroni')->{content});
is($doc->{role}, 'replica', 'replica /patroni: role replica');
ok(exists $doc->{xlog}{replayed_location}, 'replica /patroni: xlog.replayed_location');
ok(exists $doc->{xlog}{received_location}, 'replica /patroni: xlog.received_location');
ok(!$doc->{xlog}{paused}, 'replica /patroni: replay not paused');

# health GETs carry the status document too, as in Patroni
$doc = JSON::PP::decode_json(req($replica, 'GET', '/primary')->{content});
is($doc->{role}, 'replica', 'GET /primary on a replica: 503 with the status document');

$r = req($replica, 'GET', '/cluster');
is($r->{status}, 200, 'GET /cluster is 200');
$doc = JSON::PP::decode_json($r->{content});
is($doc->{scope}, 'pgtest', '/cluster: scope');
my %m = map { $_->{name} => $_ } @{ $doc->{members} };
is($m{node2}{role}, 'replica', '/cluster on the replica: itself as replica');
is($m{node1}{role}, 'leader',  '/cluster on the replica: node1 as leader');
is($m{node1}{port}, $primary->port, '/cluster: the leader\'s port, from its member key');
is($m{node2}{timeline}, 1, '/cluster: timelines');
ok(exists $m{node2}{lag}, '/cluster: a replica\'s lag');

$r = req($primary, 'GET', '/history');
is($r->{status}, 200, 'GET /history is 200');
is(ref JSON::PP::decode_json($r->{content}), 'ARRAY', '/history is a JSON array');

# --- query parameters
is(code($replica, 'GET', '/replica?lag=1GB'), 200, 'replica: /replica?lag=1GB -> 200');
is(code($replica, 'GET', '/replica?tag_nofailover=true'), 503,
	'replica: /replica?tag_nofailover=true -> 503 (tag not set)');
is(code($primary, 'GET', '/primary?tag_nofailover=true'), 200,
	'primary: tags are ignored by /primary, as in Patroni');
is(code($primary, 'GET', '/primary/'), 200, 'trailing slash: /primary/ -> 200');
is(code($primary, 'GET', '/no-such-endpoint'), 503, 'unknown path -> 503, as in Patroni');

# --- without pg_ha.api_auth_file, nothing changes state over HTTP (403)
for my $ep (qw(/switchover /failover /restart /reload /reinitialize /config))
{
	is(code($primary, 'POST', $ep), 403, "POST $ep -> 403");
}
is(code($primary, 'PUT',    '/primary'), 405, 'PUT /primary -> 405');
is(code($primary, 'DELETE', '/primary'), 405, 'DELETE /primary -> 405');
is(code($primary, 'GET', '/primary'), 200, 'still the primary after refused control requests');

# --- lagging replica: replay paused while the primary writes 4 MB
$replica->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
$primary->safe_psql('postgres',
	"CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 4000) g");
$primary->safe_psql('postgres', 'CHECKPOINT');
wait_ok(sub { code($replica, 'GET', '/replica?lag=1MB') == 503 },
	'lagging replica: /replica?lag=1MB -> 503 once the leader position moves on', timeout => 30);
is(code($replica, 'OPTIONS', '/replica?lag=1MB'), 503, 'lagging replica: OPTIONS /replica?lag=1MB -> 503');
is(code($replica, 'GET', '/replica?lag=1024'), 503, 'lagging replica: /replica?lag=1024 (bytes) -> 503');
is(code($replica, 'GET', '/replica?lag=1GB'), 200, 'lagging replica: /replica?lag=1GB -> 200');
is(code($replica, 'GET', '/replica'), 200, 'lagging replica: /replica without lag -> 200');
is(code($replica, 'GET', '/read-only?lag=1MB'), 503, 'lagging replica: /read-only?lag=1MB -> 503');
is(code($replica, 'GET', '/primary'), 503, 'lagging replica: /primary -> 503');
$doc = JSON::PP::decode_json(req($replica, 'GET', '/patroni')->{content});
ok($doc->{xlog}{paused}, 'lagging replica /patroni: xlog.paused true');
$replica->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
wait_ok(sub { code($replica, 'GET', '/replica?lag=1MB') == 200 },
	'replica caught up: /replica?lag=1MB -> 200', timeout => 30);

# --- paused (maintenance mode): routing is unchanged, the documents say so
$primary->safe_psql('postgres', 'SELECT pg_ha.pause()');
wait_ok(sub { JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pause} },
	'paused: /patroni has "pause": true on the primary', timeout => 30);
wait_ok(sub { JSON::PP::decode_json(req($replica, 'GET', '/patroni')->{content})->{pause} },
	'paused: /patroni has "pause": true on the replica', timeout => 30);
check_codes($primary, 'primary, paused', $expect{primary});
check_codes($replica, 'replica, paused', $expect{replica});
like(req($primary, 'GET', '/metrics')->{content}, qr/^patroni_is_paused\{scope="pgtest"\} 1$/m,
	'paused: patroni_is_paused 1');
$primary->safe_psql('postgres', 'SELECT pg_ha.resume()');
wait_ok(sub { !JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pause} },
	'resumed: no "pause" in /patroni', timeout => 30);

# --- etcd down: the primary's lease runs out, /primary must follow
$etcd->stop_all;
my ($gone, $secs) = timed_wait(sub { code($primary, 'GET', '/primary') == 503 },
	timeout => $ttl + 10, what => '/primary 503 after etcd stops');
ok($gone, "etcd down: /primary -> 503 (after ${\ sprintf('%.1f', $secs // -1)} s, ttl $ttl)");
cmp_ok($secs, '<=', $ttl + 1, 'etcd down: /primary turns 503 within the ttl');
my %etcd_down = (
	primary => {
		'/primary' => 503, '/read-write' => 503, '/master' => 503, '/' => 503,
		'/leader' => 503, '/replica' => 503, '/read-only' => 503,
		'/health' => 200, '/liveness' => 200, '/readiness' => 503,
		'/sync' => 503, '/async' => 503,
	},
	replica => {
		'/primary' => 503, '/read-write' => 503, '/master' => 503, '/' => 503,
		'/leader' => 503, '/replica' => 200, '/read-only' => 200,
		'/health' => 200, '/liveness' => 200, '/readiness' => 503,
		'/sync' => 503, '/async' => 503,
	},
);
wait_ok(sub { code($replica, 'GET', '/readiness') == 503 },
	'etcd down: replica notices (readiness 503)', timeout => 30);
wait_ok(sub { code($primary, 'GET', '/readiness') == 503 },
	'etcd down: primary notices (readiness 503)', timeout => 30);
check_codes($primary, 'primary, etcd down', $etcd_down{primary});
check_codes($replica, 'replica, etcd down', $etcd_down{replica});

$etcd->start_all;
wait_ok(sub { code($primary, 'GET', '/primary') == 200 },
	'etcd back: /primary -> 200 again', timeout => 60);

# --- fenced: in maintenance mode, a primary that finds another name in the
# leader key raises the write fence and stays as it is (no demotion while
# paused).  Its health answers must stop routing writes to it.
$primary->safe_psql('postgres', 'SELECT pg_ha.pause()');
wait_ok(sub { JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pause} },
	'fenced: cluster paused first', timeout => 30);
# another node's claim (node9: not a running member, so nobody here undoes
# it), on a lease of its own as a node that won an election would hold it
my $lease = $etcd->grant_lease(60);
$etcd->put($primary->ha_key('leader'), 'node9', lease => $lease);
wait_ok(sub { JSON::PP::decode_json(req($primary, 'GET', '/patroni')->{content})->{pg_ha}{fenced} },
	'fenced: the primary raises its fence when the leader key names node9', timeout => 30);
my %fenced = (
	'/primary' => 503, '/read-write' => 503, '/master' => 503, '/' => 503,
	'/leader' => 503, '/replica' => 503, '/read-only' => 503,
	'/health' => 200, '/liveness' => 200, '/readiness' => 200,
	'/sync' => 503, '/async' => 503,
);
check_codes($primary, 'primary, fenced', \%fenced);
like(scalar($http->get("http://127.0.0.1:$pm_port/metrics")->{content}), qr/^pg_ha_fenced 1$/m,
	'fenced: pg_ha_fenced 1');

$replica->stop;
$primary->stop;
done_testing();
