
# A failover request left in etcd never promotes a replica that lacks
# committed data (issue 9, defect 1).
#
# In every case a replica ("the lagging node") is stopped, the leader
# commits 50,000 rows that only the other replica receives, a request naming
# the lagging node is left in the failover key, the leader dies (kill -9)
# and the lagging node starts again: the primary is dead, so it can never
# get those rows.  Required, whatever the request says:
#   - the lagging node never holds the leader key (etcd watch);
#   - the replica that has every row takes over and has every row;
#   - exactly one node accepts writes;
#   - the request no longer stands in etcd once a leader is back (the
#     leader clears stale requests, as Patroni's does).
#
# Cases (one cluster each, in its own etcd cluster prefix):
#   1. {"member": <lagging>}  (a Patroni-style manual failover request)
#   2. {"leader": <leader>, "member": <lagging>, "scheduled_at": <in 1 h>}
#      (a scheduled switchover whose time has not come)
#   3. {"leader": <former leader>, "member": <lagging>} after a switchover
#      (a request from an earlier leader's time)
#   4. {"leader": <leader>, "member": <lagging>, "aborted": "..."}
#      (a switchover the leader abandoned)

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use POSIX ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $rows = 50_000;
my $etcd = PgHa::Etcd->new(members => 1);

# Run one case.  %c: label, cluster (etcd cluster name), names (3 node
# names, the first the primary), request (sub ($leader, $lagging) -> the
# failover key's value), setup (optional sub (\@nodes) -> ($leader, $good,
# $lagging), run on the fresh cluster before anything else).
sub leftover_request_case
{
	my (%c) = @_;
	my %keys = (cluster => $c{cluster});
	my @nodes = ha_cluster(etcd => $etcd, ttl => $ttl, names => $c{names}, %keys);
	my ($leader, $good, $lagging) =
	  $c{setup} ? $c{setup}->(\@nodes, \%keys) : @nodes;
	my ($L, $G, $S) = map { $_->name } ($leader, $good, $lagging);
	note "=== case: $c{label} (leader $L, complete replica $G, lagging replica $S)";

	$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
	$leader->wait_for_catchup($_, 'replay') for ($good, $lagging);

	$lagging->stop('fast');
	$leader->safe_psql('postgres', "INSERT INTO t SELECT generate_series(1, $rows)");
	$leader->wait_for_catchup($good, 'replay');
	is($good->safe_psql('postgres', 'SELECT count(*) FROM t'),
		$rows, "$c{label}: $G has all $rows committed rows before the crash");

	my $fkey    = $leader->ha_key('failover');
	my $request = $c{request}->($L, $S);
	$etcd->put($fkey, $request);
	note "$c{label}: failover key = $request";

	my $watch = key_watch($etcd, $leader->ha_key('leader'));
	$leader->kill9;
	$lagging->start;

	my ($new, $secs) = wait_leader_not($etcd, $L, timeout => 6 * $ttl, %keys);
	note sprintf('%s: leader key taken by %s %.1f s after kill -9', $c{label},
		$new // 'nobody', $secs);
	is($new, $G, "$c{label}: $G, the replica with every row, takes the leader key");

	my %by_name = map { $_->name => $_ } ($good, $lagging);
	my $winner = defined $new ? $by_name{$new} : undef;
	if ($winner)
	{
		wait_ok(sub { (try_sql($winner, 'INSERT INTO t VALUES (-1)'))[0] },
			"$c{label}: the new leader $new accepts writes", timeout => 30);
		is($winner->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id > 0'),
			$rows, "$c{label}: the new leader $new has all $rows rows");
	}
	else
	{
		fail("$c{label}: a new leader accepts writes");
		fail("$c{label}: the new leader has all rows");
	}

	# the lagging node, now running, must end as a replica
	wait_for(sub { (in_recovery($lagging) // 0) == 1 && writable_nodes($good, $lagging) == 1 },
		timeout => 2 * $ttl, what => "$c{label}: one writable node");
	is_deeply([ map { $_->name } writable_nodes($good, $lagging) ],
		[$G], "$c{label}: exactly one writable node, $G");

	my $stale = qr/"member"\s*:\s*"\Q$S\E"/;
	my $gone = wait_for(sub { my $v = $etcd->get($fkey); !defined $v || $v !~ $stale },
		timeout => 3 * $ttl, what => "$c{label}: the stale request to leave the failover key");
	ok($gone, "$c{label}: the stale request is cleared from the failover key")
	  or diag "$c{label}: failover key still holds " . ($etcd->get($fkey) // '(absent)');

	my @held = $watch->values;
	$watch->stop;
	note "$c{label}: leader key values since the crash: @held";
	ok(!grep({ $_ eq $S } @held), "$c{label}: the lagging node $S never held the leader key");

	# free the machine for the next case
	for my $n ($good, $lagging)
	{
		$n->stop('immediate') if postmaster_running($n);
	}
	forget_if_stopped(@nodes);
	return;
}

# 1. A Patroni-style manual failover request: member only.
leftover_request_case(
	label   => 'member only',
	cluster => 'c1',
	names   => [qw(node1 node2 node3)],
	request => sub { my ($leader, $lagging) = @_; qq({"member":"$lagging"}) });

# 2. A scheduled switchover whose time has not come.
leftover_request_case(
	label   => 'scheduled in 1 h',
	cluster => 'c2',
	names   => [qw(s1 s2 s3)],
	request => sub {
		my ($leader, $lagging) = @_;
		my $at = POSIX::strftime('%Y-%m-%dT%H:%M:%S+00:00', gmtime(time + 3600));
		qq({"leader":"$leader","member":"$lagging","scheduled_at":"$at"});
	});

# 3. A request naming the former leader: f1 hands over to f2 first, then
# {"leader":"f1","member":"f3"} is left in the key while f2 leads.
leftover_request_case(
	label   => 'former leader',
	cluster => 'c3',
	names   => [qw(f1 f2 f3)],
	setup   => sub {
		my ($nodes, $keys) = @_;
		my ($f1, $f2, $f3) = @$nodes;
		my ($ok, undef, $err, $out) =
		  try_sql($f3, "SELECT pg_ha.switchover('f2')", timeout => 90);
		ok($ok, "former leader: switchover f1 -> f2 ($out)") or diag $err;
		wait_for(
			sub {
				(in_recovery($f1) // 0) == 1
				  && ((wal_receiver($f1) // {})->{sender_port} // 0) == $f2->port
				  && ((wal_receiver($f3) // {})->{sender_port} // 0) == $f2->port;
			},
			timeout => 60,
			what    => 'f1 and f3 to stream from f2',
			fatal   => 1);
		wait_streaming($etcd, $keys, 'f1', 'f3');
		return ($f2, $f1, $f3);
	},
	request => sub { qq({"leader":"f1","member":"$_[1]"}) });

# 4. A switchover the leader abandoned (as hand_over writes it).
leftover_request_case(
	label   => 'aborted',
	cluster => 'c4',
	names   => [qw(a1 a2 a3)],
	request => sub {
		my ($leader, $lagging) = @_;
		qq({"leader":"$leader","member":"$lagging","aborted":"candidate is not a running replica"});
	});

done_testing();
