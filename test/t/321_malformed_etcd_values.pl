
# No value in etcd, however malformed, stops the leader (issue 9, defect 13).
#
# Garbage is written to every key the HA worker reads: status, history,
# config, a member key with absurd numbers, and the failover key (a
# scheduled_at that is not a time; today that crash-loops the leader's
# worker: timestamptz_in raises an ERROR, the worker exits and restarts
# every 5 s, commits are refused and /primary answers 503).  For 3 TTL after
# each write the leader must:
#   - accept an INSERT every second;
#   - keep the same pg_ha worker (PID in pg_stat_activity unchanged);
#   - answer 200 on /primary;
#   - log a malformed value at most a couple of times, not once per cycle
#     (and the malformed failover request at least once);
#   - keep the leader key.
# Afterwards a valid switchover still works.
#
# Log lines counted: /failover key|malformed|invalid|ignor/i.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use File::Basename ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => $ttl, nodes => 2);
$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY, phase text)');

my $log_re = qr/failover key|malformed|invalid|ignor/i;
# Lines of the test's own sessions carry its file name as application_name
# (which contains "malformed"): only the server's other lines count.
my $own = File::Basename::basename($0);
sub server_lines_matching
{
	my ($text) = @_;
	# "invalid record length" ends every WAL replay: not about etcd values
	return grep { !/\Q$own\E/ && !/invalid record length/ && $_ =~ $log_re }
	  split /\n/, $text;
}

my %by_name = map { $_->name => $_ } ($n1, $n2);

# The node that leads and accepts writes (waits up to 30 s for one: an
# earlier case may have left the cluster failing over), and the other one.
sub leader_and_replica
{
	my ($label) = @_;
	my $leader = wait_for(
		sub {
			my $l = leader_of($etcd) or return undef;
			my $node = $by_name{$l} or return undef;
			return undef unless defined worker_pid($node)
			  && (try_sql($node, "INSERT INTO t (phase) VALUES ('before')"))[0];
			return $node;
		},
		timeout => 30,
		what    => "$label: a leader accepting writes");
	$leader //= $n1;
	my ($other) = grep { $_->name ne $leader->name } ($n1, $n2);
	return ($leader, $other);
}

# Write the values (list of [key suffix, value], or a sub ($leader name,
# $replica name) returning that list) one after the other, then watch the
# leader for 3 TTL.  must_log: the log must mention the bad value.
sub leader_survives
{
	my ($label, $values, %p) = @_;
	my ($leader, $replica) = leader_and_replica($label);
	my $L = $leader->name;
	$values = $values->($L, $replica->name) if ref $values eq 'CODE';
	my $pid = worker_pid($leader);
	ok(defined $pid, "$label: pg_ha worker running on the leader $L (PID " . ($pid // 'none') . ')');
	my $log_off = -s $leader->logfile;

	for my $kv (@$values)
	{
		my ($suffix, $value) = @$kv;
		$etcd->put($leader->ha_key($suffix), $value);
		note sprintf('%s: %s = %s', $label, $suffix,
			length $value > 80 ? substr($value, 0, 80) . '...' : $value);
		usleep(300_000);
	}
	my $t0 = now();
	my $t_settled = $t0 + 2;    # after this the values no longer change
	my $settled_off;
	my (@failed, @bad_health, %pids, @lost_key);
	my $tries = 0;
	while (now() - $t0 < 3 * $ttl)
	{
		my $t = now();
		$settled_off //= -s $leader->logfile if $t >= $t_settled;
		my ($ok, undef, $err) =
		  try_sql($leader, "INSERT INTO t (phase) VALUES ('$label')", timeout => 5);
		$tries++;
		push @failed, sprintf('%.1f s: %s', $t - $t0, $err) unless $ok;
		my $h = health_status($leader, '/primary');
		push @bad_health, sprintf('%.1f s: %s', $t - $t0, $h) unless $h == 200;
		my $p = worker_pid($leader) // 'none';
		$pids{$p} //= sprintf('%.1f s', $t - $t0);
		my $l = eval { leader_of($etcd) } // 'none';
		push @lost_key, sprintf('%.1f s: %s', $t - $t0, $l) unless $l eq $L;
		my $left = 1 - (now() - $t);
		usleep(int($left * 1e6)) if $left > 0;
	}
	is(scalar @failed, 0, "$label: every INSERT on the leader succeeds for 3 TTL ($tries tries)")
	  or diag "$label: failed INSERTs:\n  " . join("\n  ", @failed[0 .. ($#failed > 4 ? 4 : $#failed)]);
	is(scalar @bad_health, 0, "$label: /primary answers 200 throughout")
	  or diag "$label: /primary: @bad_health";
	is_deeply([ sort keys %pids ], [$pid // 'none'],
		"$label: the pg_ha worker never restarted")
	  or diag "$label: worker PIDs seen (first seen at): "
	  . join(', ', map { "$_ ($pids{$_})" } sort keys %pids);
	is(scalar @lost_key, 0, "$label: $L keeps the leader key")
	  or diag "$label: leader key: @lost_key";

	my $log = log_since($leader, $log_off);
	my @lines = server_lines_matching($log);
	my @late = server_lines_matching(log_since($leader, $settled_off // -s $leader->logfile));
	note "$label: matching log lines:\n  " . join("\n  ", @lines);
	if ($p{must_log})
	{
		cmp_ok(scalar @lines, '>=', 1, "$label: the node logs the malformed value");
	}
	cmp_ok(scalar @lines, '<=', 2 * @$values,
		"$label: at most twice per value written (" . scalar(@lines) . ' lines)');
	cmp_ok(scalar @late, '<=', 2,
		"$label: not logged again on every cycle once the values stop changing ("
		  . scalar(@late) . ' lines in the last ' . (3 * $ttl - 2) . ' s)');
	return;
}

# --- every key but the failover key
my $nested = ('[' x 5000) . (']' x 5000);
my $huge_member = '{"conn_url":"postgres://127.0.0.1:1/postgres","api_url":"http://127.0.0.1:1/patroni",'
  . '"state":"running","role":"replica","version":"9","xlog_location":1e400,'
  . '"timeline":99999999999999999999999,"receive_lsn":-1e308,"replay_lsn":18446744073709551616,'
  . '"replication_state":"streaming","tags":{"failover_priority":1e30,"nofailover":[]}}';
my $history_before = $etcd->get($n1->ha_key('history'));
leader_survives(
	'status, history, config, member keys',
	[
		[ 'status',         '{"optime":"x"}' ],
		[ 'status',         '[]' ],
		[ 'status',         'not json' ],
		[ 'history',        '{}' ],
		[ 'history',        '[[1,"a"]]' ],
		[ 'history',        $nested ],
		[ 'config',         '"pause"' ],
		[ 'members/ghost',  $huge_member ],
		[ 'members/node2x', '{"role":"replica","xlog_location":"1e999","timeline":-7}' ],
	]);
# Put back what a healthy cluster has, so the next case starts clean.
$etcd->del($n1->ha_key('members/ghost'));
$etcd->del($n1->ha_key('members/node2x'));
$etcd->del($n1->ha_key('config'));
defined $history_before
  ? $etcd->put($n1->ha_key('history'), $history_before)
  : $etcd->del($n1->ha_key('history'));

# --- the failover key: a scheduled_at that is not a time
my $fkey = $n1->ha_key('failover');
leader_survives('failover key with scheduled_at "not a time"',
	sub { [ [ 'failover', qq({"leader":"$_[0]","member":"$_[1]","scheduled_at":"not a time"}) ] ] },
	must_log => 1);
my $left = $etcd->get($fkey);
note 'failover key after 3 TTL: ' . ($left // '(absent)')
  . ' (cleared or ignored are both fine; deleted by hand if still there)';
$etcd->del($fkey) if defined $left;

# --- and the failover key not JSON at all, or not an object
leader_survives('failover key not an object',
	[ [ 'failover', 'not json' ], [ 'failover', '["node2"]' ], [ 'failover', '{"member":7}' ] ]);
$etcd->del($fkey);

# --- a valid switchover still works
my ($from, $to) = leader_and_replica('switchover');
my ($F, $T) = ($from->name, $to->name);
wait_streaming($etcd, $T);
my ($ok, undef, $err, $out) =
  try_sql($to, "SELECT pg_ha.switchover('$T')", timeout => 90);
ok($ok, "a valid switchover from $F to $T still works ($out)") or diag $err;
is(leader_of($etcd), $T, "$T holds the leader key");
wait_ok(sub { (try_sql($to, "INSERT INTO t (phase) VALUES ('after')"))[0] },
	"$T accepts writes", timeout => 30);
wait_ok(sub { supervise($from); (in_recovery($from) // 0) == 1 }, "$F is a replica", timeout => 60);
is_deeply([ map { $_->name } writable_nodes($n1, $n2) ], [$T],
	"exactly one writable node: $T");

forget_if_stopped($n1, $n2);
done_testing();
