
# pg_ha.switchover() called on the leader itself, the most natural place to
# call it, answers its caller (issue 9, defect 15).  Today the hand-over
# terminates every client session on the old leader, the caller's own
# included, so psql sees a lost connection instead of a result.
#
# Required: the call returns a row naming node2 (who leads now), then the
# switchover completes: node2 leads and accepts writes, node1 follows it.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

my ($ok, $state, $err, $out) =
  try_sql($n1, "SELECT pg_ha.switchover('node2')", timeout => 90);
ok($ok, 'pg_ha.switchover(\'node2\') called on the leader returns to its caller')
  or diag "error: $err";
like($out // '', qr/node2/, 'its answer names node2 (' . ($out // '') . ')');

wait_ok(sub { (leader_of($etcd) // '') eq 'node2' }, 'node2 holds the leader key',
	timeout => 30);
wait_ok(sub { (try_sql($n2, 'CREATE TABLE after_switchover (i int)'))[0] },
	'node2 accepts writes', timeout => 30);
my $rcv = wait_for(
	sub {
		supervise($n1);
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return $r->{status} eq 'streaming' && $r->{sender_port} == $n2->port;
	},
	timeout => 60, interval => 0.25, what => 'node1 to stream from node2');
ok($rcv, 'node1 follows node2');
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ], ['node2'],
	'exactly one writable node: node2');

forget_if_stopped($n1, $n2, $n3);
done_testing();
