
# Failover in synchronous mode "on" (issue 12): only a standby that was
# synchronous when the leader was lost may take over, however small the
# lag of the others (maximum_lag_on_failover does not open a way out), and
# no acknowledged commit is lost.
#
# node2 is the synchronous standby; node3 stops streaming, so it lags.
# Commits are counted, then node2 is frozen (SIGSTOP) and node1 killed:
# node3, asynchronous, must not take over although it is within
# maximum_lag_on_failover (1GB here) and the only replica answering.  Once
# node2 is thawed it takes over, with every acknowledged commit.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Node;
use PgHa::Failover;
use PgHa::Test;
use PostgreSQL::Test::Utils qw(slurp_file);

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	extra_conf => "pg_ha.synchronous_mode = on\npg_ha.maximum_lag_on_failover = '1GB'\n");

wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
$n1->safe_psql('postgres', 'CREATE TABLE acked (id int)');
stop_streaming($n3, $n1);

# every INSERT is its own acknowledged commit
my $acked = 0;
for my $batch (1 .. 10)
{
	my ($ok) = try_sql($n1, join('', map { "INSERT INTO acked VALUES ($_);\n" } 1 .. 50), timeout => 30);
	$acked += 50 if $ok;
}
is($acked, 500, '500 commits acknowledged by node1');
is(sync_standby($etcd), 'node2', 'node2 still the synchronous standby');
cmp_ok($n3->safe_psql('postgres', 'SELECT count(*) FROM acked'), '<', $acked, 'node3 lags behind');

# freeze node2 (every process), kill node1
my $pm2  = $n2->postmaster_pid;
my @frozen = ($pm2, PgHa::Node::children_of($pm2));
END { kill 'CONT', @frozen if @frozen; }
kill 'STOP', @frozen;
$n1->kill9;

my $log3 = length(slurp_file($n3->logfile));
my $t0 = now();
my $took = '';
while (now() - $t0 < 4 * $ttl)
{
	my $l = leader_of($etcd) // '';
	$took = $l if $l ne '' && $l ne 'node1';
	last if $took ne '';
	select(undef, undef, undef, 0.2);
}
is($took, '', 'nobody takes over while the synchronous standby is away (node3 is asynchronous)');
ok(in_recovery($n3), 'node3 stays a replica');
like(substr(slurp_file($n3->logfile), $log3), qr/not taking over: not a synchronous standby when "node1" was lost/,
	'node3 says why it does not take over');

# A manual failover to node3 is refused up front, with the reason: it may
# miss commits node1 acknowledged.  (node3 would not take the key anyway;
# the refusal saves the operator a request that cannot succeed.)
my ($fok, undef, $ferr) = try_sql($n3, "SELECT pg_ha.failover('node3')", timeout => 120);
ok(!$fok, 'pg_ha.failover() to the asynchronous node3 is refused');
like($ferr // '', qr/failover refused: "node3" is not a synchronous standby/, 'it says node3 is not synchronous');
like($ferr // '', qr/sync key lists "node2"/, 'and names the synchronous standby');
is($etcd->get(ha_key('failover')), undef, 'no failover request was written');

kill 'CONT', @frozen;
@frozen = ();
my ($leader) = wait_leader_not($etcd, 'node1', timeout => 60);
is($leader, 'node2', 'node2, the synchronous standby, takes over');
wait_for(sub { !in_recovery($n2) }, timeout => 30, what => 'node2 promoted', fatal => 1);
is($n2->safe_psql('postgres', 'SELECT count(*) FROM acked'), $acked, 'no acknowledged commit lost');
my $sync = JSON::PP::decode_json($etcd->get(ha_key('sync')));
is($sync->{leader}, 'node2', 'the new leader owns the sync key');

# node3 follows the new leader, becomes its synchronous standby
wait_for(sub { sync_standby($etcd) eq 'node3' }, timeout => 60, what => 'node3 synchronous standby of node2');
is(sync_standby($etcd), 'node3', 'node3 becomes the synchronous standby of node2');
is($n3->safe_psql('postgres', 'SELECT count(*) FROM acked'), $acked, 'node3 caught up with node2');

forget_if_stopped($n1);
done_testing();
