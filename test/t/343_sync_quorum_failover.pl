
# Quorum mode (issue 12): synchronous_standby_names = ANY 1 (node2, node3)
# and the sync key {"leader":"node1","sync_standby":"node2,node3",
# "quorum":1}.  A commit is acknowledged once either standby has it, so
# after the leader is lost a standby may take over only when it sees
# n - k + 1 = 2 listed nodes (itself included) and none of them is ahead.
#
# node3 falls behind (its WAL receiver is frozen), node1 commits with
# node2's acknowledgements only; node2 is cut away (frozen) and node1
# killed.  node3, behind and alone, cannot prove it holds every
# acknowledged commit: it must not take over (asynchronous rules would let
# it, maximum_lag_on_failover being 1GB).  Once node2 is back, node2 (ahead)
# takes over with every acknowledged commit, and node3 never does.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use HTTP::Tiny ();
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
	extra_conf => "pg_ha.synchronous_mode = quorum\npg_ha.maximum_lag_on_failover = '1GB'\n");

my $key = wait_for(
	sub { my $k = sync_key($etcd); ($k->{sync_standby} // '') eq 'node2,node3' && ($k->{quorum} // -1) == 1 ? $k : undef },
	timeout => 30, what => 'the sync key to list node2,node3 with quorum 1');
ok($key, 'sync key: node2,node3, quorum 1 (Patroni 4 format)') or BAIL_OUT('no quorum key');
is($n1->safe_psql('postgres', 'SHOW synchronous_standby_names'), 'ANY 1 ("node2", "node3")',
	'synchronous_standby_names = ANY 1 (node2, node3)');
is($n1->safe_psql('postgres',
		"SELECT string_agg(sync_state, ',' ORDER BY application_name) FROM pg_stat_replication"),
	'quorum,quorum', 'postgres counts both in the quorum');
my $doc1 = JSON::PP::decode_json(
	HTTP::Tiny->new->get('http://127.0.0.1:' . $n1->api_port . '/patroni')->{content});
is_deeply({ map { $_->{application_name} => $_->{sync_state} } @{ $doc1->{replication} // [] } },
	{ node2 => 'quorum', node3 => 'quorum' }, 'leader /patroni: both "quorum", as pg_stat_replication')
  or diag explain $doc1->{replication};
my $cfg = JSON::PP::decode_json($etcd->get(ha_key('config')) // '{}');
is($cfg->{synchronous_mode}, 'quorum', 'the config key written at initialization: synchronous_mode "quorum"');
wait_for(sub { health_status($n2, '/quorum') == 200 }, timeout => 15, what => 'node2 /quorum 200');
is(health_status($n2, '/quorum'), 200, 'node2 /quorum 200');
is(health_status($n2, '/sync'),   503, 'node2 /sync 503 in quorum mode (as Patroni 4)');
is(health_status($n2, '/async'),  503, 'node2 /async 503');

$n1->safe_psql('postgres', 'CREATE TABLE acked (id int)');
$n1->wait_for_catchup($n3, 'write', $n1->lsn('flush'));

# node3 falls behind: its WAL receiver stops (its WAL sender stays "streaming")
my $rcv3 = wal_receiver_pid($n3);
ok($rcv3, 'node3 has a WAL receiver');
my @frozen = ($rcv3);
END { kill 'CONT', @frozen if @frozen; }
kill 'STOP', $rcv3;

my $acked = 0;
for my $batch (1 .. 10)
{
	my ($ok) = try_sql($n1, join('', map { "INSERT INTO acked VALUES ($_);\n" } 1 .. 50), timeout => 30);
	$acked += 50 if $ok;
}
is($acked, 500, '500 commits acknowledged (by node2)');
is(sync_key($etcd)->{sync_standby}, 'node2,node3', 'both still listed');

# node2 is cut away, node1 dies; node3 (behind) is the only one answering
my $pm2 = $n2->postmaster_pid;
my @n2procs = ($pm2, PgHa::Node::children_of($pm2));
push @frozen, @n2procs;
kill 'STOP', @n2procs;
$n1->kill9;
kill 'CONT', $rcv3;
@frozen = @n2procs;

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
is($took, '', 'node3 alone cannot prove it holds every acknowledged commit: nobody takes over');
ok(in_recovery($n3), 'node3 stays a replica');
like(substr(slurp_file($n3->logfile), $log3),
	qr/not taking over: sees 1 of the synchronous standbys "node2,node3" \(itself included\), 2 needed/,
	'node3 says why');

kill 'CONT', @n2procs;
@frozen = ();
my ($leader) = wait_leader_not($etcd, 'node1', timeout => 60);
is($leader, 'node2', 'with node2 back, node2 (ahead) takes over; node3 (behind) never does');
wait_for(sub { !in_recovery($n2) }, timeout => 30, what => 'node2 promoted', fatal => 1);
is($n2->safe_psql('postgres', 'SELECT count(*) FROM acked'), $acked, 'no acknowledged commit lost');
ok(in_recovery($n3), 'node3 is a replica');
unlike(substr(slurp_file($n3->logfile), $log3), qr/promoting: took the leader key/, 'node3 never took the leader key');

forget_if_stopped($n1);
done_testing();
