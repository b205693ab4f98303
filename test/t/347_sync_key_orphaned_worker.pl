
# An HA worker that outlives its postmaster must not act on what it reads
# afterwards (found by CI in test 343, stop 19).
#
# When the leader's postmaster dies, its WAL senders exit at once, but the
# HA worker notices only when it next waits.  If it is in the middle of a
# cycle (here: blocked on etcd), it goes on to read pg_stat_replication,
# finds no standby streaming, and rewrites the sync key with no synchronous
# standby.  The standby that holds every acknowledged commit is then no
# longer allowed to take over, and the cluster stays without a leader.
#
# node2 is the synchronous standby.  etcd is frozen until node1's worker is
# blocked on it, node1's postmaster is killed, its WAL senders exit, and
# etcd is thawed.  The sync key must still name node2, node2 must take
# over, and no acknowledged commit may be lost.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Node;
use PgHa::Failover;
use PgHa::Test;
use PostgreSQL::Test::Utils qw(slurp_file);

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(
	etcd       => $etcd,
	nodes      => 2,
	ttl        => $ttl,
	extra_conf => "pg_ha.synchronous_mode = on\n");

wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
$n1->safe_psql('postgres', 'CREATE TABLE acked (id int)');
my $acked = 0;
for my $batch (1 .. 4)
{
	my ($ok) = try_sql($n1, join('', map { "INSERT INTO acked VALUES ($_);\n" } 1 .. 50), timeout => 30);
	$acked += 50 if $ok;
}
is($acked, 200, '200 commits acknowledged by node1');

my $worker = worker_pid($n1);
ok($worker, 'node1 has an HA worker') or BAIL_OUT('no worker');
my $log1 = length(slurp_file($n1->logfile));

# The worker waits for its next cycle in epoll_wait (WaitLatch, which
# notices the postmaster's death); an etcd request waits in poll (libcurl),
# which does not.  Kernels name the epoll wait do_epoll_wait or ep_poll.
sub wchan
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/wchan") or return '';
	my $w = <$fh> // '';
	close $fh;
	return $w;
}

my $etcd_pid = $etcd->member(0)->{pid};
my $paused   = 0;
END { kill 'CONT', $etcd_pid if $paused && $etcd_pid; }
kill 'STOP', $etcd_pid;
$paused = 1;

# Blocked on etcd: seen in poll, not epoll, for 0.3 s running.  The
# worker starts a cycle every second (loop_wait 1) and, with etcd frozen,
# stays blocked in it for pg_ha.etcd_timeout (2 s).
my $in_poll = 0;
my $t0      = now();
while (now() - $t0 < 3 && $in_poll < 6)
{
	my $w = wchan($worker);
	$in_poll = ($w ne '' && $w !~ /epoll|ep_poll/) ? $in_poll + 1 : 0;
	usleep(50_000);
}
cmp_ok($in_poll, '>=', 6, 'node1\'s worker is blocked on etcd, inside a cycle')
  or diag 'wchan: ' . wchan($worker);

# the WAL senders exit on the postmaster's death
my @senders = grep { (PgHa::Node::process_title($_) // '') =~ /walsender/ }
  PgHa::Node::children_of($n1->postmaster_pid);
ok(@senders, 'node1 has WAL senders');
$n1->kill9;
wait_for(sub { !grep { PgHa::Node::_alive($_) } @senders }, timeout => 1, interval => 0.01,
	what => 'node1\'s WAL senders to exit');
ok(!grep({ PgHa::Node::_alive($_) } @senders), 'node1\'s WAL senders exited');
kill 'CONT', $etcd_pid;
$paused = 0;

# the orphaned worker finishes its etcd request, then must stop there
wait_for(sub { !PgHa::Node::_alive($worker) }, timeout => 15, what => 'node1\'s worker to exit');
ok(!PgHa::Node::_alive($worker), 'node1\'s orphaned worker exited');
like(substr(slurp_file($n1->logfile), $log1), qr/pg_ha: the postmaster died: the worker exits without acting on what it read/,
	'node1\'s worker says it stopped because the postmaster died');
unlike(substr(slurp_file($n1->logfile), $log1), qr/sync key: no synchronous standby/,
	'node1\'s worker did not empty the sync key');
is(sync_standby($etcd), 'node2', 'the sync key still names node2');

my ($leader, $secs) = wait_leader_not($etcd, 'node1', timeout => 4 * $ttl);
is($leader, 'node2', 'node2, the synchronous standby, takes over');
note sprintf('node2 took the leader key %.1f s after etcd was thawed', $secs);
wait_for(sub { !in_recovery($n2) }, timeout => 30, what => 'node2 promoted');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM acked'), $acked, 'no acknowledged commit lost');

forget_if_stopped($n1);
done_testing();
