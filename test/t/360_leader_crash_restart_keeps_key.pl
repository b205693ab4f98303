
# A backend of the leader dies (kill -9, as a segfault would): postgres
# crash-restarts every process, the pg_ha worker included, and is back in a
# second or two, well within the TTL.  Patroni keeps its leader key through
# this and so must pg_ha: the leader key is never deleted nor taken by
# another node, no replica is promoted, the timeline stays 1, no history
# entry appears, and the restarted worker re-attaches the key to a fresh
# lease (acquire_leader_key in src/ha_worker.c) instead of waiting for the
# old lease to run out and racing the replicas for it.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 100)');
my $lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $lsn) for ($n2, $n3);

my $leader_key = PgHa::Cluster::ha_key('leader');
my $watch      = key_watch($etcd, $leader_key);
my $old_worker = worker_pid($n1);
ok($old_worker, "the leader's pg_ha worker runs (pid $old_worker)");

# --- a backend dies by signal: the postmaster crash-restarts everything
my $bg = $n1->background_psql('postgres');
my $backend = $bg->query_safe('SELECT pg_backend_pid()');
my $log_offset = -s $n1->logfile;
my $t_kill = now();
kill 'KILL', $backend;
eval { $bg->quit; };

ok(wait_for(sub { $n1->log_contains(qr/all server processes terminated; reinitializing/, $log_offset) },
		timeout => 30, what => 'the crash restart'), 'postgres crash-restarts after the backend died');
my $new_worker = wait_for(sub { my $p = worker_pid($n1); $p && $p != $old_worker ? $p : undef },
	timeout => 30, what => 'a new pg_ha worker');
ok($new_worker, "a new pg_ha worker runs after the crash restart (pid $new_worker)");
my $back = elapsed_since($t_kill);
note sprintf('node1 answers again %.1f s after the kill (ttl %d s)', $back, $ttl);

# The worker holds the key with a live lease again, on its new lease.
ok(wait_for(sub { ($n1->ha_status->{lease_held} // 0) ? 1 : undef }, timeout => 30,
		what => 'lease_held on node1'), 'the restarted worker holds the leader lease');
# Two TTLs after the kill: had the key been left on the old lease, it would
# have expired and a replica would have taken it by now.
my $until = $t_kill + 2 * $ttl + 2;
my @leaders;
while (now() < $until)
{
	push @leaders, leader_of($etcd) // '(none)';
	select(undef, undef, undef, 0.5);
}
is_deeply([ grep { $_ ne 'node1' } @leaders ], [], 'the leader key named node1 at every look for two TTLs');
my @events = $watch->events;
is_deeply([ grep { $_->{type} eq 'DELETE' } @events ], [], 'the leader key was never deleted');
is_deeply([ grep { $_ ne 'node1' } $watch->values ], [], 'no other node ever wrote the leader key');
ok((grep { $_->{type} eq 'PUT' } @events) >= 1,
	'the restarted worker re-attached the key (written again, with its new lease)');

is(in_recovery($n2), 1, 'node2 is still a replica');
is(in_recovery($n3), 1, 'node3 is still a replica');
is(scalar @{ history_of($etcd) }, 0, 'no history entry: no failover happened');
is($n1->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()'), '1',
	'node1 is still on timeline 1');

# Writes work and reach the replicas: the cluster carries on as before.
ok(wait_for(sub { (try_sql($n1, 'INSERT INTO t VALUES (101)'))[0] }, timeout => 30,
		what => 'a write on node1'), 'node1 takes writes again');
$lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $lsn) for ($n2, $n3);
is($n3->safe_psql('postgres', 'SELECT count(*) FROM t'), '101', 'the replicas have every row');

$watch->stop;
done_testing();
