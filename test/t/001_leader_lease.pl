
# Leader lease: a lone primary takes /service/pgtest/leader (attached to an
# etcd lease), drops it at once on a clean stop, and loses it within the TTL
# when its postmaster is SIGKILLed.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my $node = new_primary(name => 'node1', etcd => $etcd, ttl => $ttl);
my $leader_key = $node->ha_key('leader');
my $member_key = $node->ha_key('members/node1');
is($leader_key, '/service/pgtest/leader', 'leader key path follows Patroni layout');

wait_ok(sub { ($etcd->get($leader_key) // '') eq 'node1' },
	'leader key holds the primary\'s name', timeout => 30);

my $kv = $etcd->get_kv($leader_key);
ok($kv && $kv->{lease} ne '', 'leader key is attached to an etcd lease');
if ($kv && $kv->{lease} ne '')
{
	my $out = $etcd->ctl_ok('lease', 'timetolive', $kv->{lease});
	my ($granted) = $out =~ /granted with TTL\((\d+)s\)/;
	is($granted, $ttl, "lease was granted with pg_ha.ttl ($ttl s)");
}

my $st = wait_for(
	sub { my $s = $node->ha_status; $s->{lease_held} ? $s : undef },
	what => 'pg_ha.status() to show the lease held');
ok($st && $st->{lease_held}, 'status: lease_held');
is($st->{leader}, 'node1', 'status: leader is this node');
is($st->{role},   'primary', 'status: role primary');
is($st->{node},   'node1',   'status: node name');
is($st->{cluster}, 'pgtest', 'status: cluster name');
ok($st->{etcd_reachable}, 'status: etcd reachable');
ok(defined $st->{lease_seconds_left}
	  && $st->{lease_seconds_left} > 0
	  && $st->{lease_seconds_left} <= $ttl,
	"status: 0 < lease_seconds_left <= ttl (" . ($st->{lease_seconds_left} // 'null') . ")");
ok($st->{worker_pid}, 'status: worker_pid set');
# The worker has no database connection, so it is not in pg_stat_activity:
# check the process itself.
my $wpid = $st->{worker_pid} // 0;
my $title = ($wpid && PgHa::Node::process_title($wpid)) // '';
like($title, qr/pg_ha/, "worker_pid is the running pg_ha worker ($title)");
is(PgHa::Node::parent_pid($wpid), $node->postmaster_pid,
	'worker_pid is a child of the postmaster');

wait_ok(sub { defined $etcd->get($member_key) }, 'member key of the primary exists');

# --- Clean stop: the lease is revoked, not left to expire.
$node->stop('fast');
my $t0 = now();
my ($gone, $secs) = timed_wait(sub { !defined $etcd->get($leader_key) },
	timeout => 5, what => 'leader key removal after clean stop');
note sprintf("leader key gone %.3f s after the end of pg_ctl stop", $secs);
ok($gone, 'clean stop removes the leader key');
cmp_ok($secs, '<', 1, 'leader key removed in under 1 s after a clean stop');
wait_ok(sub { !defined $etcd->get($member_key) },
	'clean stop removes the member key', timeout => 5);

# --- Restart: the node takes the lease again.
$node->start;
wait_ok(sub { ($etcd->get($leader_key) // '') eq 'node1' },
	'restarted primary takes the leader key again', timeout => 30);

# --- kill -9 of the postmaster: the worker must stop renewing, the key
# expires with the lease.
$node->kill9;
$t0 = now();
($gone, $secs) = timed_wait(sub { !defined $etcd->get($leader_key) },
	timeout => $ttl + 5, what => 'leader key expiry after kill -9');
note sprintf("leader key gone %.2f s after kill -9 of the postmaster (ttl %d)",
	$secs, $ttl);
ok($gone, "leader key disappears within ttl + 5 s after kill -9 of the postmaster");
is(scalar $node->orphans_alive, 0,
	'no postgres process (pg_ha worker included) outlives the killed postmaster')
  or diag "still alive: " . join(' ', $node->orphans_alive);

done_testing();
