
# Switchover under load.  pgbench (tpcb-like, 4 clients) writes to the
# primary node1 while pg_ha.switchover('node2') is called from node3.
# Afterwards:
#   - every transaction pgbench counted as processed is on the new primary
#     (one pgbench_history row per transaction: count check);
#   - node1 is in recovery and streams from node2 (pg_stat_replication on
#     node2 lists it);
#   - node1 did not need pg_rewind: its postmaster kept its PID (the
#     demotion is a crash-restart, not a stop) and its log says nothing of a
#     rewind.
# pgbench's clients abort when node1 terminates their sessions: expected.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

$n1->command_ok(
	[ 'pgbench', '-i', '-q', '-s', '2', '-h', $n1->host, '-p', $n1->port, 'postgres' ],
	'pgbench -i on node1');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
is($n1->safe_psql('postgres', 'SELECT count(*) FROM pgbench_history'), '0',
	'pgbench_history starts empty');

my $pm_pid   = $n1->postmaster_pid;
my $log_off  = -s $n1->logfile;
my $duration = 15;
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-c', '4', '-j', '2', '-T', $duration, '-n',
		'-h', $n1->host, '-p', $n1->port, 'postgres'
	],
	'>', \$out, '2>', \$err,
	IPC::Run::timeout($duration + 60));
my $t_bench = now();

# Let the load run a few seconds, then switch over from a third node.
sleep 4;
my $before = $n1->safe_psql('postgres', 'SELECT count(*) FROM pgbench_history');
note "pgbench_history rows on node1 before the switchover: $before";
cmp_ok($before, '>', 0, 'pgbench is committing on node1');
my $t_sw = now();
my ($ok, $state, $sw_err, $sw_out) =
  try_sql($n3, "SELECT pg_ha.switchover('node2')", timeout => 90);
my $sw_secs = now() - $t_sw;
ok($ok, 'pg_ha.switchover(\'node2\') called on node3 succeeds')
  or diag "switchover failed: $sw_err";
like($sw_out, qr/node2/, "switchover result: $sw_out");
note sprintf('pg_ha.switchover() returned after %.2f s', $sw_secs);

# pgbench ends: at the end of -T or when its clients are terminated.
eval { $bench->finish; };
my $bench_err = $@;
my $bench_rc  = eval { $bench->result(0) } // -1;
note sprintf('pgbench exited with %s after %.1f s', $bench_rc, now() - $t_bench);
note "pgbench stdout:\n$out";
note "pgbench stderr (first lines):\n" . join("\n", (split /\n/, $err)[0 .. 9]);
my ($processed) = $out =~ /number of transactions actually processed:\s*(\d+)/;
ok(defined $processed, "pgbench reports the transactions it processed")
  or diag "pgbench output:\n$out\n$err\n$bench_err";
$processed //= 0;
cmp_ok($processed, '>', 0, "pgbench processed transactions ($processed)");

# --- new primary
is(leader_of($etcd), 'node2', 'node2 holds the leader key');
is($n2->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'node2 is a primary');
my $rows = $n2->safe_psql('postgres', 'SELECT count(*) FROM pgbench_history');
note "pgbench counted $processed transactions; pgbench_history on node2 has $rows rows";
cmp_ok($rows, '>=', $processed,
	'every transaction pgbench counted as committed is on the new primary');
my ($aid_sum) = $n2->safe_psql('postgres',
	'SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)');
is($aid_sum, 't', 'accounts balance matches the history on the new primary (no half transaction)');

# --- old primary: a streaming replica of node2, without pg_rewind
my $rcv = wait_for(
	sub {
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $n2->port) ? $r : undef;
	},
	timeout  => 60,
	interval => 0.25,
	what     => 'node1 to stream from node2');
ok($rcv, 'node1 is in recovery and streams from node2');
wait_ok(
	sub {
		$n2->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node1' AND state = 'streaming'"
		) eq '1';
	},
	'pg_stat_replication on node2 lists node1', timeout => 30);
is($n1->postmaster_pid, $pm_pid,
	'node1: postmaster PID unchanged (crash-restart in place, no stop for pg_rewind)');
my $log = log_since($n1, $log_off);
unlike($log, qr/rewind/i, 'node1 log does not mention a rewind');
like($log, qr/pg_ha: switchover: handing leadership to "node2"/,
	'node1 log: handing leadership to node2');
note "node1 pg_ha log lines:\n"
  . join("\n", map { "  $_" } grep { /pg_ha: / } split /\n/, $log);
wait_ok(sub { $n1->safe_psql('postgres', 'SELECT count(*) FROM pgbench_history') eq $rows },
	'node1 replays the new primary\'s data', timeout => 30);
wait_ok(sub { ((wal_receiver($n3) // {})->{sender_port} // 0) == $n2->port },
	'node3 streams from node2', timeout => 30);
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ], ['node2'],
	'exactly one writable node: node2');

forget_if_stopped($n1, $n2, $n3);
done_testing();
