
# A stale former primary that comes back while the cluster has moved to a
# newer timeline never takes the leader key, even when the key is free:
# it fences and demotes itself.  And a scheduled switchover waits for its
# time.

use strict;
use warnings;

use Test::More;
use PostgreSQL::Test::Utils;
use HTTP::Tiny;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

# --- scheduled switchover: returns at once, happens at its time
my $at = $n3->safe_psql('postgres', "SELECT (now() + interval '4 seconds')::text");
my $res = $n3->safe_psql('postgres', "SELECT pg_ha.switchover('node2', '$at')");
like($res, qr/scheduled at/, 'a scheduled switchover returns at once');
is(leader_of($etcd), 'node1', 'the leader is unchanged before the scheduled time');
my ($moved, $secs) = timed_wait(sub { (leader_of($etcd) // '') eq 'node2' },
	timeout => 60, what => 'the scheduled switchover');
ok($moved, 'the switchover happened at the scheduled time');
cmp_ok($secs, '>=', 2.5, sprintf('not before its time (%.1f s after the call)', $secs));
wait_for(sub { (in_recovery($n1) // 0) == 1 }, timeout => 30, what => 'node1 a replica');

# the promotion is counted in the new leader's metrics
sub metric
{
	my ($node, $name) = @_;
	my $resp = HTTP::Tiny->new(timeout => 5)->get('http://127.0.0.1:' . $node->metrics_port . '/metrics');
	return undef unless $resp->{success};
	return $resp->{content} =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}
is(wait_for(sub { my $v = metric($n2, 'pg_ha_switchovers_total'); defined $v && $v > 0 ? $v : undef },
		timeout => 30, what => 'pg_ha_switchovers_total on node2'),
	1, 'node2 counts one switchover (pg_ha_switchovers_total)');
is(metric($n2, 'pg_ha_failovers_total'), 0, 'and no failover');

# --- node2 leads on timeline 2.  Crash it: another node takes over on
# timeline 3.  Then stop the others (the replica first, so nobody races),
# which leaves the leader key free, and start node2 alone: a stale former
# primary, on timeline 2, with no standby.signal.
$n2->kill9;
my ($next) = wait_leader_not($etcd, 'node2', timeout => 30);
ok($next && $next ne 'node2', "$next took over from the crashed node2");
my %by_name = (node1 => $n1, node3 => $n3);
my $leader = $by_name{$next};
my ($replica) = grep { $_->name ne $next } ($n1, $n3);
wait_for(sub { !in_recovery($leader) }, timeout => 30, what => "$next promoted");
is(wait_for(sub { my $v = metric($leader, 'pg_ha_failovers_total'); defined $v && $v > 0 ? $v : undef },
		timeout => 30, what => "pg_ha_failovers_total on $next"),
	1, "$next counts one failover (pg_ha_failovers_total)");
wait_for(sub { ($etcd->get($n1->ha_key('history')) // '') =~ /^\[\[1,.*\],\[2,/ },
	timeout => 30, what => 'history to record timeline 3');
$replica->stop('fast');
$leader->stop('fast');
wait_for(sub { !defined leader_of($etcd) }, timeout => 30, what => 'the leader key to be free');

$n2->start;
my $took = 0;
my $t0 = now();
while (now() - $t0 < 3 * $ttl)
{
	$took = 1 if (leader_of($etcd) // '') eq 'node2';
	last if $took;
	select(undef, undef, undef, 0.2);
}
ok(!$took, 'the stale primary never takes the free leader key while history shows a newer timeline');
my ($ok) = try_sql($n2, 'CREATE TABLE stale_write (i int)');
ok(!$ok, 'and it accepts no writes');
wait_for(sub { (in_recovery($n2) // 0) == 1 }, timeout => 30, what => 'node2 to demote itself');
ok(in_recovery($n2), 'it demoted itself to a standby');
like(slurp_file($n2->logfile), qr/the cluster is on timeline 3, this node on 2/, 'its log says why');
is(leader_of($etcd), undef, 'and as a standby on an old timeline it does not race for the key');

forget_if_stopped($n1, $n2, $n3);
done_testing();
