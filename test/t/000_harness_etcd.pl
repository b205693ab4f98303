
# Self-test of the etcd harness (PgHa::Etcd) the other suites rely on:
# real 1- and 3-member clusters, key access, member stop/kill/restart, and
# no etcd process outliving its object.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Test;

sub alive { my $pid = shift; return $pid && kill(0, $pid) && PgHa::Etcd::_not_zombie($pid); }

# --- one member
my $e1 = PgHa::Etcd->new(members => 1, name => 'solo');
like($e1->endpoints, qr{^http://127\.0\.0\.1:\d+$}, 'one client URL');
ok($e1->health(0), 'member healthy');
$e1->put('/t/a', "-x\nmulti line");
is($e1->get('/t/a'), "-x\nmulti line", 'value stored verbatim');
$e1->put('/t/empty', '');
is($e1->get('/t/empty'), '', 'empty value is not absent');
is($e1->get('/t/none'), undef, 'absent key is undef');
is_deeply($e1->get_prefix('/t/'), { '/t/a' => "-x\nmulti line", '/t/empty' => '' },
	'get_prefix');
my $lease = $e1->grant_lease(5);
$e1->put('/t/l', 'x', lease => $lease);
is($e1->get_kv('/t/l')->{lease}, $lease, 'key attached to a lease');
is($e1->del('/t/', prefix => 1), 3, 'del with prefix');

$e1->kill_member(0);
ok(!$e1->is_running(0), 'killed member is gone');
my ($ok) = $e1->ctl({ timeout => 1 }, 'get', '/x');
ok(!$ok, 'etcdctl fails while the only member is down');
$e1->start_member(0);
ok($e1->health(0), 'member restarted on the same ports and data');

# --- three members
my $e3 = PgHa::Etcd->new(members => 3);
is(scalar(split /,/, $e3->endpoints), 3, 'three client URLs');
my $leader = $e3->leader_index;
ok(defined $leader, 'a raft leader is elected');
$e3->put('/k', 'v');
$e3->stop_member($leader);
is($e3->get('/k'), 'v', 'reads work with the raft leader stopped');
$e3->put('/k', 'w');
wait_ok(sub { my $l = $e3->leader_index; defined $l && $l != $leader },
	'another member becomes raft leader', timeout => 10);
$e3->start_member($leader);
ok($e3->health($leader), 'stopped member rejoins');
is($e3->get('/k'), 'w', 'cluster state intact');
is($e3->member_index($e3->endpoint(2) . '/'), 2, 'member_index maps a URL back');

# --- no orphans
my @pids = map { $e3->member($_)->{pid} } 0 .. 2;
undef $e3;
ok(!grep({ alive($_) } @pids), 'all members die with their object');
my $pid1 = $e1->member(0)->{pid};
$e1->stop_all;
ok(!alive($pid1), 'stop_all stops the member');

done_testing();
