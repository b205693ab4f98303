
# Failsafe mode, the leader cut from etcd only: the replicas reach etcd and
# see the leader key expire, but each confirmed the leader over POST
# /failsafe and must not take the key while that promise is valid.  The
# leader keeps writing; when it heals it leads through etcd again.  When
# the leader then dies while cut, the promises lapse and a replica takes
# over.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Failsafe;
use PgHa::Proxy;
use PgHa::Test;

my $ttl = 5;
my ($etcd, $proxy, $n1, $n2, $n3) = failsafe_cluster_leader_behind_proxy($ttl);
my %offset = map { $_->name => -s $_->logfile } ($n1, $n2, $n3);

$proxy->cut;
my $t_cut = now();
wait_ok(sub { !defined leader_of($etcd) }, 'the leader key expires in etcd', timeout => 3 * $ttl);

# three more TTLs with no leader key: nobody takes it, node1 writes on
my ($writes, $refused, $taken) = (0, 0, undef);
my $t0 = now();
while (now() - $t0 < 3 * $ttl)
{
	my ($ok) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
	$ok ? $writes++ : $refused++;
	my $l = eval { leader_of($etcd) };
	$taken //= $l if defined $l;
	usleep(200_000);
}
note "no leader key for 3 TTLs: $writes commits, $refused refused on node1";
ok(!defined $taken, 'no replica takes the leader key while its promise is valid')
  or diag "taken by $taken";
is($refused, 0, 'node1 refuses no commit');
for my $r ($n2, $n3)
{
	is(in_recovery($r), 1, $r->name . ' stays a replica');
	like(log_since($r, $offset{ $r->name }), qr/promised leader "node1" not to take the key/,
		$r->name . ' logs why it does not take over');
	my $g = JSON::PP::decode_json(
		`curl -sS -m 5 http://127.0.0.1:@{[ $r->api_port ]}/failsafe`);
	is($g->{leader}, 'node1', $r->name . ': GET /failsafe names the leader it confirmed');
	cmp_ok($g->{promise_ms_left}, '>', 0, $r->name . ': the promise is running');
}

# heal: node1 leads through etcd again
$proxy->heal;
wait_ok(sub { (leader_of($etcd) // '') eq 'node1' }, 'node1 takes the leader key back', timeout => 30);
wait_ok(sub { (try_sql($n1, 'INSERT INTO t DEFAULT VALUES'))[0] }, 'node1 accepts writes', timeout => 30);
is(scalar(writable_nodes($n1, $n2, $n3)), 1, 'exactly one writable node');

# cut again, then node1 dies: no more rounds, the promises lapse
$proxy->cut;
wait_ok(sub { !defined leader_of($etcd) }, 'the leader key expires again', timeout => 3 * $ttl);
$n1->stop('immediate');
my $t_stop = now();
my $new = wait_for(sub { my $l = eval { leader_of($etcd) }; defined $l && $l ne 'node1' ? $l : undef },
	timeout => 6 * $ttl, what => 'a replica to take over');
ok(defined $new, 'once node1 stops confirming, a replica takes over');
note sprintf('%s took the key %.1f s after node1 stopped', $new // 'nobody', now() - $t_stop);

$proxy->heal;
done_testing();
