
# maximum_lag_on_failover is measured against the larger of the status
# key's optime and the last leader's own xlog_location (issue 9, defect
# 11b), as the docs promise.
#
# node1 leads, node2 is its only replica and stops streaming; node1 then
# writes 16 MB, far more than maximum_lag_on_failover (1 MB), and publishes
# its position in its member key.  node1 is killed (kill -9) and the status
# key is set back to node2's own position, as an etcd restore or a stale
# writer would leave it.  Required: node2 does not take the leader key (it
# is 16 MB behind the last leader's position), says why, and stays a
# replica; the cluster waits for node1, the only node with the data.
# Before the fix node2 compared itself with the stale status optime only,
# took the key and promoted without the 16 MB.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => $ttl, nodes => 2,
	extra_conf => "pg_ha.maximum_lag_on_failover = '1MB'\n");

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, pad text)');
$n1->wait_for_catchup($n2, 'replay');
my $saved = stop_streaming($n2, $n1);
my $n2_lsn = $n2->safe_psql('postgres',
	"SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), '0/0')::bigint");

$n1->safe_psql('postgres',
	"INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g");
my $n1_lsn = $n1->safe_psql('postgres',
	"SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint");
note "node1 at $n1_lsn, node2 at $n2_lsn: " . ($n1_lsn - $n2_lsn) . ' bytes behind';
ok($n1_lsn - $n2_lsn > 8 * 1024 * 1024, 'node2 is more than 8 MB behind node1');

# node1's member key carries its position; give node2 a cycle to see it
wait_ok(sub { (member_json($etcd, 'node1')->{xlog_location} // 0) >= $n1_lsn },
	"node1's member key shows its position", timeout => 30);
sleep 2;

my $off2 = -s $n2->logfile;
$n1->kill9;
$etcd->put($n1->ha_key('status'), qq({"optime":$n2_lsn}));
note "status key set back to node2's position $n2_lsn";

# node1's lease runs out after one TTL; watch for three more
my $t0 = now();
my @taken;
while (now() - $t0 < 4 * $ttl)
{
	my $l = eval { leader_of($etcd) } // '';
	push @taken, sprintf('%.1f s: %s', now() - $t0, $l) if $l eq 'node2';
	select(undef, undef, undef, 0.25);
}
is_deeply(\@taken, [], 'node2 never takes the leader key');
is(in_recovery($n2), 1, 'node2 is still a replica');
like(log_since($n2, $off2), qr/bytes behind the last leader position, more than maximum_lag_on_failover/,
	'node2 says it is too far behind the last leader position');

forget_if_stopped($n1, $n2);
done_testing();
