
# The config key, Patroni's dynamic configuration (issue 13): the node
# that initializes the cluster writes it once, with Patroni's layout and
# its own settings; GET /config shows it; PATCH /config merges as Patroni
# does (null deletes, objects merge) and PUT /config replaces, both with
# credentials.  The real patronictl reads it (show-config), edits it
# (edit-config) and pauses the cluster through it (pause / resume): a
# paused cluster does not fail over when its leader dies, until the
# operator names a candidate (patronictl failover, POST /failover).

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, extra_conf => api_auth_conf()
	  . "pg_ha.maximum_lag_on_failover = '2MB'\n");

my $cfg = wait_for(sub { (config_key($etcd))[0] }, timeout => 20, what => 'the config key');
ok($cfg, 'initializing the cluster wrote the config key') or BAIL_OUT('no config key');
is($cfg->{ttl}, $ttl, 'ttl from pg_ha.ttl');
is($cfg->{maximum_lag_on_failover}, 2 * 1024 * 1024, 'maximum_lag_on_failover in bytes');
ok(defined $cfg->{loop_wait} && defined $cfg->{retry_timeout}, 'loop_wait and retry_timeout');
is_deeply($cfg->{postgresql}, { parameters => {}, use_pg_rewind => JSON::PP::true },
	'postgresql: empty parameters, use_pg_rewind');
ok(!grep({ exists $cfg->{$_} } qw(synchronous_mode synchronous_mode_strict synchronous_node_count)),
	'pg_ha.synchronous_mode off: no synchronous fields (the GUC keeps deciding)');

my $r = api_request($n2, 'GET', '/config');
is($r->{code}, '200', 'GET /config: 200');
is_deeply($r->{json}, $cfg, 'GET /config returns the key');

# PATCH merges: a nested object merges, null deletes
$r = api_request($n2, 'PATCH', '/config', auth => 1,
	body => { postgresql => { parameters => { work_mem => '8MB' } }, retry_timeout => undef, foo => 'bar' });
is($r->{code}, '200', 'PATCH /config: 200');
my $after = (config_key($etcd))[0];
is($after->{postgresql}{parameters}{work_mem}, '8MB', 'the parameter was merged in');
ok($after->{postgresql}{use_pg_rewind}, 'the rest of the postgresql object is kept');
ok(!exists $after->{retry_timeout}, 'null deleted retry_timeout');
is($after->{foo}, 'bar', 'a new key was added');
is_deeply($r->{json}, $after, 'PATCH answers the new configuration');
is(api_request($n2, 'PATCH', '/config', auth => 1, body => '[1,2]')->{code}, '400',
	'PATCH with a body that is not a JSON object: 400');
is(api_request($n2, 'PATCH', '/config', auth => 1, body => '{"a":')->{code}, '400',
	'PATCH with broken JSON: 400');
is_deeply((config_key($etcd))[0], $after, 'the bad PATCHes changed nothing');

# PUT replaces
$r = api_request($n1, 'PUT', '/config', auth => 1, body => { %$cfg, loop_wait => 3 });
is($r->{code}, '200', 'PUT /config: 200');
is_deeply((config_key($etcd))[0], { %$cfg, loop_wait => 3 }, 'PUT replaced the whole key');

SKIP:
{
	skip 'patronictl not installed', 15 unless patronictl_available();

	my ($rc, $out) = patronictl($etcd, 'show-config');
	is($rc, 0, 'patronictl show-config exits 0') or diag $out;
	like($out, qr/^ttl: $ttl$/m, 'show-config prints ttl');

	($rc, $out) = patronictl($etcd, 'edit-config', '--force', '--set', 'loop_wait=7',
		'--pg', 'max_wal_senders=12');
	is($rc, 0, 'patronictl edit-config --set exits 0') or diag $out;
	my $c = (config_key($etcd))[0];
	is($c->{loop_wait}, 7, 'edit-config changed loop_wait');
	is($c->{postgresql}{parameters}{max_wal_senders}, 12, 'edit-config --pg set a parameter');

	($rc, $out) = patronictl($etcd, 'pause');
	note $out;
	like($out, qr/Success: cluster management is paused/, 'patronictl pause succeeds');
	ok((config_key($etcd))[0]{pause}, 'the config key says pause');
	wait_ok(sub { api_request($n2, 'GET', '/patroni')->{json}{pause} }, 'the nodes see the pause',
		timeout => 15);

	# paused: the leader dies and nobody takes over
	$n1->kill9;
	wait_for(sub { !defined leader_of($etcd) }, timeout => 3 * $ttl, what => 'the leader key to expire');
	sleep 2 * $ttl;
	is(leader_of($etcd), undef, 'paused: no replica took the leader key');
	is(in_recovery($n2) . in_recovery($n3), '11', 'paused: both replicas are still replicas');

	# paused and leaderless: the operator names the new leader (POST /failover
	# to the candidate, pg_ha's manual failover)
	($rc, $out) = patronictl($etcd, 'failover', '--candidate', 'node3', '--force');
	note $out;
	like($out, qr/Successfully failed over to "node3"/, 'patronictl failover to node3 while paused');
	wait_ok(sub { (leader_of($etcd) // '') eq 'node3' && !in_recovery($n3) }, 'node3 leads',
		timeout => 30);

	($rc, $out) = patronictl($etcd, 'resume');
	note $out;
	like($out, qr/Success: cluster management is resumed/, 'patronictl resume succeeds');
	ok(!exists((config_key($etcd))[0]{pause}), 'resume removed pause from the config key');
	wait_streaming($etcd, 'node2');
	is(leader_of($etcd), 'node3', 'resumed: node3 keeps leading');
}

done_testing();
