
# Failsafe mode, the leader cut from etcd and from one replica: a round of
# POST /failsafe misses that replica, so nothing extends the lease and the
# leader fences before any other node holds the leader key.  Then it stops
# asking, the promises lapse and a replica takes over.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Failsafe;
use PgHa::Proxy;
use PgHa::Test;

my $ttl = 5;
my ($etcd, $proxy, $n1, $n2, $n3) = failsafe_cluster_leader_behind_proxy($ttl);
my $offset = -s $n1->logfile;

# node3's API stops answering (its listener is stopped, its worker runs on)
# (it has no database connection, so pg_stat_activity does not list it)
my $postmaster = $n3->{_pid};
my ($http_pid) = map { /^\s*(\d+)\s+.*pg_ha http/ ? $1 : () } `ps -o pid=,args= --ppid $postmaster`;
ok($http_pid, 'found node3\'s HTTP listener');
kill 'STOP', $http_pid;

$proxy->cut;
my $t_cut = now();
my ($t_refused, $t_takeover, $leader, $last_ok);
while (now() - $t_cut < 6 * $ttl + 10)
{
	if (!defined $t_refused)
	{
		my ($w) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
		$w ? ($last_ok = now()) : ($t_refused = now());
	}
	my $l = eval { leader_of($etcd) };
	if (defined $l && $l ne 'node1')
	{
		($t_takeover, $leader) = (now(), $l);
		last;
	}
	usleep(100_000);
}
note sprintf('cut at 0: first refusal at %s, %s took the key at %s',
	map({ defined $_ ? sprintf('%.2f s', $_ - $t_cut) : 'never' } $t_refused),
	$leader // 'nobody', defined $t_takeover ? sprintf('%.2f s', $t_takeover - $t_cut) : 'never');

ok(defined $t_refused, 'node1 refuses commits: not every member confirmed it');
ok(defined $t_takeover, 'a replica takes the leader key in the end');
ok(defined $t_refused && defined $t_takeover && $t_refused < $t_takeover,
	'node1 refused commits before another node held the key');
ok(!defined $last_ok || !defined $t_takeover || $last_ok < $t_takeover,
	'no commit on node1 once another node held the key');
like(log_since($n1, $offset), qr/pg_ha: failsafe: member "node3" did not answer/,
	'node1 logs that node3 did not answer');
my ($w, $state) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES');
ok(!$w && $state eq '25006', 'node1 still refuses commits');

kill 'CONT', $http_pid;
$proxy->heal;
done_testing();
