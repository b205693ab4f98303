
# 3-member etcd: when the etcd member a node talks to stops, the node moves
# to another endpoint and keeps its lease: the leader key never disappears.
# Also: an endpoint that accepts connections but never answers is skipped.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 3);

# A "black hole" endpoint: listens (the kernel completes the TCP handshake)
# but nobody ever reads or answers.
my $hole_port = PostgreSQL::Test::Cluster::get_free_port();
my $hole = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => $hole_port,
	Listen    => 16,
	ReuseAddr => 1) or die "cannot listen on $hole_port: $!";
my $hole_url = "http://127.0.0.1:$hole_port";

my $node = new_primary(
	name      => 'node1',
	endpoints => join(',', $hole_url, $etcd->endpoints),
	etcd      => $etcd,
	ttl       => $ttl);
my $leader_key = $node->ha_key('leader');

wait_ok(sub { ($etcd->get($leader_key) // '') eq 'node1' },
	'leader key taken although the first endpoint never answers',
	timeout => 30);
my $st = wait_for(
	sub { my $s = $node->ha_status; $s->{lease_held} ? $s : undef },
	what => 'lease held') // $node->ha_status;
my $idx = $etcd->member_index($st->{etcd_endpoint});
ok(defined $idx, "status: etcd_endpoint is a real etcd member ("
	  . ($st->{etcd_endpoint} // 'null') . ")");
$idx //= 0;

# --- Stop the member in use; watch the leader key every 200 ms for 2 x TTL.
note "stopping etcd member $idx, the one node1 uses";
$etcd->stop_member($idx);

my ($samples, $missing, $wrong, $not_held, %seen_endpoints) = (0, 0, 0, 0);
my $moved_after;
my $t0 = now();
while (elapsed_since($t0) < 2 * $ttl)
{
	my $v = eval { $etcd->get($leader_key) };
	if ($@)
	{
		diag "etcd read failed: $@";
	}
	else
	{
		$samples++;
		if    (!defined $v)    { $missing++; }
		elsif ($v ne 'node1') { $wrong++; }
	}
	my $s = $node->ha_status;
	$not_held++ unless $s->{lease_held};
	my $ep = $s->{etcd_endpoint} // 'null';
	$seen_endpoints{$ep}++;
	$moved_after //= elapsed_since($t0)
	  if defined $s->{etcd_endpoint}
	  && ($etcd->member_index($ep) // $idx) != $idx;
	Time::HiRes::usleep(200_000);
}
note "$samples samples over " . (2 * $ttl) . " s; endpoints seen: "
  . join(', ', map { "$_ x$seen_endpoints{$_}" } sort keys %seen_endpoints);
note sprintf("node1 moved to another endpoint after %.2f s", $moved_after)
  if defined $moved_after;
# at least once a second on average (each sample waits on etcdctl and the
# status query, which a loaded machine slows to about half a second)
cmp_ok($samples, '>=', 2 * $ttl, 'leader key sampled throughout the window');
is($missing, 0, 'leader key never disappeared while the etcd member was down');
is($wrong,   0, 'leader key always held node1');
is($not_held, 0, 'status: lease_held stayed true');
ok(defined $moved_after, 'status: etcd_endpoint moved to another member');

$st = $node->ha_status;
my $now_idx = $etcd->member_index($st->{etcd_endpoint});
ok(defined $now_idx && $now_idx != $idx && $etcd->is_running($now_idx),
	'status: etcd_endpoint is a running member now');
ok($st->{etcd_reachable}, 'status: etcd reachable');
my $kv = $etcd->get_kv($leader_key);
ok($kv && $kv->{lease} ne '', 'leader key still attached to a lease');

# --- The stopped member rejoins; nothing changes for the node.
$etcd->start_member($idx);
ok($etcd->health($idx), 'stopped etcd member rejoined');
is($etcd->get($leader_key), 'node1', 'leader key still holds node1');

close $hole;
done_testing();
