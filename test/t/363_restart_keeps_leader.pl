
# pg_ha.restart(): postgres restarts through the service manager (the test
# acts as pg_ha@.service: Restart=always, ExecStartPre pg_hactl rejoin
# --if-needed).  A leader back within the TTL keeps its key - no failover,
# as with Patroni's restart - and a restart-only setting changed before
# (reported as pending_restart) takes effect.  A leader that stays down past
# the TTL loses the key to a replica as after any failure, and comes back as
# that replica's standby with nothing lost.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use JSON::PP ();
use PgHa::Cluster;
use PgHa::Etcd;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);
$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 100)');

sub restart_via_sql
{
	my ($node, @args) = @_;
	my ($ok, $stdout, $stderr, $out) = try_sql($node, 'SELECT pg_ha.restart(' . join(', ', @args) . ')');
	return ($out // '') . ($stderr // '');
}
sub wait_down
{
	my ($node) = @_;
	return wait_for(sub { postmaster_running($node) ? undef : 1 }, timeout => 60,
		what => $node->name . ' to shut down');
}

# --- a restart-only setting changes: pending_restart
$n1->safe_psql('postgres', "ALTER SYSTEM SET shared_buffers = '24MB'");
$n1->reload;
my $m1 = wait_for(sub { my $m = member_json($etcd, 'node1'); $m && $m->{pending_restart} ? $m : undef },
	timeout => 20, what => 'pending_restart in the member key');
ok($m1, "node1's member key says pending_restart");
my $patroni = JSON::PP::decode_json(HTTP::Tiny->new->get('http://127.0.0.1:' . $n1->api_port . '/patroni')->{content});
ok($patroni->{pending_restart}, 'GET /patroni says pending_restart');

# nothing pending on node2: pending_only does nothing
like(restart_via_sql($n2, "'test'", 'true'), qr/no restart pending/, 'pending_only on a node with nothing pending: no restart');
ok(postmaster_running($n2), 'node2 still runs');

# --- the leader restarts and is back within the TTL
my $watch = key_watch($etcd, PgHa::Cluster::ha_key('leader'));
my $off = -s $n1->logfile;
like(restart_via_sql($n1, "'shared_buffers change'", 'true'), qr/restarting|terminat|connection/,
	'pg_ha.restart() on the leader starts the restart');
ok(wait_down($n1), 'node1 shut down');
like(log_since($n1, $off), qr/restarting: keeping leader key \S+ for up to \d+ s/, 'node1 kept its leader key on the way down');
# as Patroni: a checkpoint while the leader still takes writes, so that the
# shutdown checkpoint, during which nobody can write, has little left to do
like(log_since($n1, $off), qr/(?:checkpoint|restartpoint) starting: immediate force wait.*received fast shutdown request/s,
	'a checkpoint ran before the fast shutdown');
ok(-e $n1->data_dir . '/pg_ha.restart', 'the restart marker is in the data directory');
my $svc = supervise($n1);
ok($svc && $svc->{started}, 'the service manager started node1 again');
ok(wait_for(sub { ($n1->ha_status->{lease_held} // 0) ? 1 : undef }, timeout => 30, what => 'lease_held'),
	'node1 holds the leader lease again');
like(log_since($n1, $off), qr/postgres was restarted on request: shared_buffers change/, 'the new worker logs the reason');
ok(!-e $n1->data_dir . '/pg_ha.restart', 'and removes the marker');
is($n1->safe_psql('postgres', 'SHOW shared_buffers'), '24MB', 'the pending setting took effect');
ok(wait_for(sub { my $m = member_json($etcd, 'node1'); $m && !$m->{pending_restart} ? 1 : undef },
		timeout => 20, what => 'pending_restart gone'), 'pending_restart is gone from the member key');
my @ev = $watch->events;
is_deeply([ grep { $_->{type} eq 'DELETE' } @ev ], [], 'the leader key was never deleted');
is_deeply([ grep { $_ ne 'node1' } $watch->values ], [], 'no other node took the leader key');
is(in_recovery($_), 1, $_->name . ' is still a replica') for ($n2, $n3);
is(scalar @{ history_of($etcd) }, 0, 'no failover in the history');
ok(wait_for(sub { (try_sql($n1, 'INSERT INTO t VALUES (101)'))[0] }, timeout => 30, what => 'a write'),
	'node1 takes writes again');
$watch->stop;

# --- a replica restarts
$off = -s $n2->logfile;
restart_via_sql($n2, "'replica restart'");
ok(wait_down($n2), 'node2 shut down');
$svc = supervise($n2);
ok($svc && $svc->{started}, 'node2 started again');
ok(wait_for(sub { my $r = wal_receiver($n2); $r && $r->{status} eq 'streaming' ? 1 : undef }, timeout => 30,
		what => 'node2 streaming'), 'node2 streams again');
like(log_since($n2, $off), qr/postgres was restarted on request: replica restart/, 'node2 logs the reason');
like(log_since($n2, $off), qr/(?:checkpoint|restartpoint) starting: immediate force wait.*received fast shutdown request/s,
	'on the replica, a restartpoint ran before the fast shutdown');
is(leader_of($etcd), 'node1', 'node1 still leads');

# --- the leader stays down past the TTL: a replica takes over
my $lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $lsn) for ($n2, $n3);
restart_via_sql($n1, "'slow restart'");
ok(wait_down($n1), 'node1 shut down again');
my ($new) = wait_leader_not($etcd, 'node1', timeout => 3 * $ttl + 30);
like($new // '', qr/^node[23]$/, 'down past the TTL: a replica takes the leader key');
my $leader = $new eq 'node2' ? $n2 : $n3;
ok(wait_for(sub { in_recovery($leader) == 0 ? 1 : undef }, timeout => 30, what => 'promotion'), "$new is promoted");
$svc = supervise($n1);
ok($svc && $svc->{started}, 'the service manager starts node1');
ok(wait_for(sub { in_recovery($n1) == 1 ? 1 : undef }, timeout => 60, what => 'node1 a standby'),
	'node1 comes back as a standby, not a second primary');
ok(wait_for(sub { my $r = wal_receiver($n1); $r && $r->{status} eq 'streaming' && $r->{sender_port} == $leader->port ? 1 : undef },
		timeout => 60, what => "node1 streaming from $new"), "node1 streams from $new");
is($leader->safe_psql('postgres', 'SELECT count(*) FROM t'), '101', 'no acknowledged row was lost');

done_testing();
