
# Switchover with a client that reconnects at once, as applications and
# connection pools do.  Unlike pgbench, whose clients give up when their
# session is terminated, this client keeps opening new sessions on the old
# primary while it hands over (it is still out of recovery, so
# target_session_attrs=read-write picks it).  Their commits are refused, but
# nothing they do may leave the old primary with WAL the candidate lacks:
# the old primary must still rejoin as a replica WITHOUT pg_rewind (same
# postmaster PID, never stopped, no "diverged" in its log), the third node
# must follow the new primary without diverging either, and every
# acknowledged INSERT must be on the new primary.

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

$n1->safe_psql('postgres', 'CREATE TABLE w (id bigserial PRIMARY KEY, client int, n int)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
my $pm_pid  = $n1->postmaster_pid;
my $log_off = -s $n1->logfile;
my $pm_pid3  = $n3->postmaster_pid;
my $log_off3 = -s $n3->logfile;

# Two clients, each a shell loop of one psql session per INSERT against
# node1 only (a pool that has not noticed the switchover yet); every
# acknowledged INSERT prints its number.
my @clients;
for my $c (1 .. 2)
{
	my $out = '';
	my $script = sprintf(
		'end=$((SECONDS + 12)); i=0; while [ $SECONDS -lt $end ]; do i=$((i+1)); '
		  . 'psql -X -q -At -h %s -p %d -d postgres -v ON_ERROR_STOP=1 '
		  . '-c "INSERT INTO w (client, n) VALUES (%d, $i)" >/dev/null 2>&1 && echo $i; '
		  . 'sleep 0.005; done',
		$n1->host, $n1->port, $c);
	my $h = IPC::Run::start([ 'bash', '-c', $script ], '>', \$out, IPC::Run::timeout(60));
	push @clients, { h => $h, out => \$out, c => $c };
}
sleep 3;
my ($ok, $state, $err, $res) =
  try_sql($n3, "SELECT pg_ha.switchover('node2')", timeout => 90);
ok($ok, "switchover to node2 (called on node3): $res") or diag $err;

for my $cl (@clients)
{
	eval { $cl->{h}->finish; };
}
is(leader_of($etcd), 'node2', 'node2 holds the leader key');

# Every acknowledged INSERT is on node2.
my $acked = 0;
my $missing = 0;
for my $cl (@clients)
{
	my @n = grep { /^\d+$/ } split /\n/, ${ $cl->{out} };
	$acked += @n;
	next unless @n;
	my $have = $n2->safe_psql('postgres',
		"SELECT count(*) FROM w WHERE client = $cl->{c} AND n IN (" . join(',', @n) . ')');
	$missing += @n - $have;
}
note "acknowledged INSERTs on node1: $acked";
cmp_ok($acked, '>', 0, 'the clients wrote before the switchover');
is($missing, 0, 'every acknowledged INSERT is on the new primary');

# The old primary: a streaming replica of node2, never stopped, no rewind.
my $rcv = wait_for(
	sub {
		return undef unless postmaster_running($n1);
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $n2->port) ? $r : undef;
	},
	timeout  => 30,
	interval => 0.25,
	what     => 'node1 to stream from node2');
my $log = log_since($n1, $log_off);
ok($rcv, 'node1 streams from node2 after the switchover')
  or diag "node1 pg_ha log lines:\n" . join("\n", grep { /pg_ha: / } split /\n/, $log);
ok(postmaster_running($n1) && $n1->postmaster_pid == $pm_pid,
	'node1 postmaster still running with the same PID (no stop for pg_rewind)');
unlike($log, qr/pg_ha: diverged/, 'node1 did not diverge from the new primary');
unlike($log, qr/rewind/i, 'node1 log does not mention a rewind');
note "node1 pg_ha log lines:\n"
  . join("\n", map { "  $_" } grep { /pg_ha: (switchover|fenced|terminated|demoting|diverged)/ } split /\n/, $log);

# The third node streamed from node1 until the switchover: it must not have
# received WAL past the point where node2's timeline forks either.
wait_ok(
	sub {
		return 0 unless postmaster_running($n3);
		my $r = wal_receiver($n3) or return 0;
		return $r->{status} eq 'streaming' && $r->{sender_port} == $n2->port;
	},
	'node3 streams from node2', timeout => 30);
my $log3 = log_since($n3, $log_off3);
unlike($log3, qr/pg_ha: diverged/, 'node3 did not diverge from the new primary');
is($n3->postmaster_pid, $pm_pid3, 'node3 postmaster PID unchanged');

forget_if_stopped($n1, $n2, $n3);
done_testing();
