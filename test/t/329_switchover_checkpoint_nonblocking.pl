
# A switchover never blocks the leader's worker past its renew interval
# (issue 9, defect 4).
#
# node1's checkpointer is stopped (SIGSTOP), so a checkpoint requested on
# node1 never completes, and pg_ha.switchover('node2') is called from node3.
# The hand-over asks for a checkpoint first.  Required: the switchover
# completes as a switchover, not as a failover:
#   - the call reports a switchover to node2, and node2 leads;
#   - the last history entry is node2's, with reason "switchover";
#   - node1's lease never lapsed meanwhile: its log shows the hand-over to
#     node2 and no loss of the key, expired lease or unreachable etcd;
#   - node1 ends as a replica of node2, and only node2 is writable.
# Before the fix the worker waited in RequestCheckpoint(CHECKPOINT_WAIT),
# renewed nothing, and the lease expired in the middle of the switchover.

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

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 1000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

my $ckpt = $n1->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
ok($ckpt =~ /^\d+$/, "node1's checkpointer runs (pid $ckpt)");
my $off1 = -s $n1->logfile;
my $off2 = -s $n2->logfile;
my $watch = key_watch($etcd, $n1->ha_key('leader'));
kill 'STOP', $ckpt;

my ($ok, undef, $err, $out) =
  try_sql($n3, "SELECT pg_ha.switchover('node2')", timeout => 90);
note "pg_ha.switchover('node2') from node3: " . ($ok ? "ok: $out" : "failed: $err");
kill 'CONT', $ckpt if kill 0, $ckpt;

ok($ok, 'pg_ha.switchover(\'node2\') succeeds') or diag $err;
like($out, qr/switched over from "node1" to "node2"/, 'and reports a switchover from node1 to node2');
wait_ok(sub { (leader_of($etcd) // '') eq 'node2' }, 'node2 holds the leader key', timeout => 30);

my $hist = wait_for(
	sub { my $h = history_of($etcd); (@$h && ($h->[-1][4] // '') eq 'node2') ? $h : undef },
	timeout => 15, what => 'history to record node2') // [];
note 'history: ' . JSON::PP->new->canonical->encode($hist);
is(scalar @$hist, 1, 'history has one entry');
is($hist->[-1][2], 'switchover', 'the last history entry says switchover, not failover') if @$hist;

# node1 ends as a replica of node2.  Its restart as a standby waits for the
# postmaster to kill the stopped checkpointer (5 s), longer than node2 waits
# for node1's confirmed end of WAL (one TTL): a background record written
# meanwhile can make node1 need pg_rewind, so act as the service manager.
my $rcv = wait_for(
	sub {
		supervise($n1);
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $n2->port) ? $r : undef;
	},
	timeout => 60, interval => 0.25, what => 'node1 to stream from node2');
ok($rcv, 'node1 is a replica streaming from node2');

# node1 handed the key over; its lease never lapsed on the way
my $log1 = log_since($n1, $off1);
note join("\n", grep { /pg_ha: / } split /\n/, $log1);
like($log1, qr/pg_ha: switchover: handing leadership to "node2"/, 'node1 handed leadership to node2');
unlike($log1,
	qr/etcd unreachable|lease \d+ expired|lost the leader key|no longer carries this node's name/,
	'node1 never lost its lease or the key during the switchover');
my $log2 = log_since($n2, $off2);
like($log2, qr/pg_ha: promoted: now leader on timeline 2 \(.*switchover\)/,
	'node2 promoted for a switchover');
my @held = $watch->values;
$watch->stop;
note 'leader key values during the switchover: ' . join(' ', @held);
ok(!grep({ $_ eq 'node3' } @held), 'node3 never held the leader key');

wait_ok(sub { (try_sql($n2, 'INSERT INTO t VALUES (1001)'))[0] }, 'node2 accepts writes', timeout => 30);
is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), '1001', 'node2 has every row');
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ], ['node2'], 'node2 is the only writable node');

forget_if_stopped($n1, $n2, $n3);
done_testing();
