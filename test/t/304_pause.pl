
# Maintenance mode.  pg_ha.pause() stores {"pause":true} in the config key:
# every node shows it, and while it is set nothing fails over.  kill -9 of
# the primary then leaves the cluster without a leader: no replica takes the
# key within 2 x TTL and both stay in recovery.  After pg_ha.resume() a
# replica takes over.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);
my $config_key = $n1->ha_key('config');

# pause() from a replica: the functions work on any node.
my ($ok, $state, $err) = try_sql($n2, 'SELECT pg_ha.pause()');
ok($ok, 'pg_ha.pause() succeeds (called on node2)') or diag $err;
like($err, qr/NOTICE:.*paused/, 'pause() says what it does');
my $cfg = JSON::PP::decode_json($etcd->get($config_key) // '{}');
ok($cfg->{pause} && $cfg->{pause} eq '1', 'config key has "pause": true');
for my $n ($n1, $n2, $n3)
{
	wait_ok(sub { $n->ha_status->{paused} }, $n->name . ': pg_ha.status() shows paused',
		timeout => 10);
}

$n1->safe_psql('postgres', 'CREATE TABLE t (id int)');
($ok) = try_sql($n1, 'INSERT INTO t VALUES (1)');
ok($ok, 'a paused cluster still takes writes on its primary');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# --- kill -9 while paused: nobody takes over
$n1->kill9;
my $t_kill = now();
wait_ok(sub { !defined leader_of($etcd) }, 'the dead primary\'s leader key expires',
	timeout => 2 * $ttl + 5);
note sprintf('leader key gone %.2f s after kill -9', now() - $t_kill);
my $taken;
while (now() - $t_kill < 2 * $ttl)
{
	my $l = eval { leader_of($etcd) };
	if (defined $l) { $taken = $l; last; }
	Time::HiRes::usleep(200_000);
}
ok(!defined $taken, sprintf('no replica takes the leader key within 2 x ttl (%d s) while paused',
	2 * $ttl)) or diag "leader key taken by $taken";
is(in_recovery($n2), 1, 'node2 is still in recovery');
is(in_recovery($n3), 1, 'node3 is still in recovery');
ok($n2->ha_status->{paused}, 'node2 still reports paused');

# --- resume: a replica takes over
my $t_resume = now();
($ok, $state, $err) = try_sql($n3, 'SELECT pg_ha.resume()');
ok($ok, 'pg_ha.resume() succeeds (called on node3)') or diag $err;
$cfg = JSON::PP::decode_json($etcd->get($config_key) // '{}');
ok(exists $cfg->{pause} && !$cfg->{pause}, 'config key has "pause": false');
my ($leader, $secs) = wait_leader_not($etcd, 'node1', timeout => 30);
ok(defined $leader && $leader =~ /^node[23]$/, 'after resume() a replica takes the leader key');
note sprintf('%s took the leader key %.2f s after resume()', $leader // 'nobody', $secs);
my %by_name = (node2 => $n2, node3 => $n3);
if (defined $leader && $by_name{$leader})
{
	wait_ok(sub { (try_sql($by_name{$leader}, 'INSERT INTO t VALUES (2)'))[0] },
		"the new primary $leader takes writes", timeout => 30);
	my ($other) = grep { $_->name ne $leader } ($n2, $n3);
	wait_ok(sub { ((wal_receiver($other) // {})->{sender_port} // 0) == $by_name{$leader}->port },
		$other->name . " follows $leader", timeout => 30);
	ok(!$by_name{$leader}->ha_status->{paused}, "$leader reports not paused");
}

forget_if_stopped($n1, $n2, $n3);
done_testing();
