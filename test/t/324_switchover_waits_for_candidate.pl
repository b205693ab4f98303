
# A switchover never loses an acknowledged commit: the leader key goes to
# the candidate only after the candidate confirmed it has the leader's
# final WAL; otherwise the switchover is aborted, the leader unfences and
# carries on, and the caller is told (issue 9, defect 3).
#
# node2's WAL receiver is stopped (SIGSTOP: it receives nothing more, as
# with a stalled link), node1 then commits 200 more rows (acknowledged:
# replication is asynchronous), and pg_ha.switchover('node2') is called from
# node3.  The WAL receiver stays stopped until node2 holds the leader key or
# for 15 s (today the leader gives up waiting after 5 s and releases the
# key anyway), then continues.  Meanwhile every node is probed with INSERTs.
# Required:
#   - every row whose commit was acknowledged (before or during the
#     switchover, on any node) is on whichever node leads afterwards;
#   - if node2 could not confirm, the call fails with an error saying so,
#     node1 still leads and accepts writes again;
#   - writes are accepted by one node at a time: the node accepting writes
#     changes at most once, and never back.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);
my @nodes = ($n1, $n2, $n3);

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 1000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
my %acked = map { $_ => 'node1' } 1 .. 1000;

# --- node2 stops receiving WAL
my $rcv = wal_receiver_pid($n2);
ok($rcv, "node2's WAL receiver: PID " . ($rcv // 'none')) or BAIL_OUT('no WAL receiver on node2');
my $stopped = $rcv;
END { kill 'CONT', $stopped if $stopped; }
kill 'STOP', $rcv;
note "SIGSTOP to node2's WAL receiver $rcv";

$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1001, 1200)');
$acked{$_} = 'node1' for 1001 .. 1200;
note 'node1 acknowledged rows 1001..1200 (node2 does not have them)';

# --- switchover from node3, in the background
my ($sw_out, $sw_err) = ('', '');
my $sw = IPC::Run::start(
	[
		'psql', '-X', '-A', '-t', '-v', 'VERBOSITY=verbose', '-d', $n3->connstr('postgres'),
		'-c', "SELECT pg_ha.switchover('node2')"
	],
	'>', \$sw_out, '2>', \$sw_err,
	IPC::Run::timeout(180));
my $t_sw = now();

# --- probe every node with INSERTs; let node2's receiver go once node2
# holds the key or after 15 s
my %next_id = (node1 => 100_000, node2 => 200_000, node3 => 300_000);
my @writes;    # [t, node] of every acknowledged probe
my ($t_cont, $t_node2_key);
while (now() - $t_sw < 60)
{
	my $t = now();
	for my $node (@nodes)
	{
		my $id = $next_id{ $node->name }++;
		my ($ok) = try_sql($node, "INSERT INTO t VALUES ($id)", timeout => 5);
		next unless $ok;
		$acked{$id} = $node->name;
		push @writes, [ now() - $t_sw, $node->name ];
	}
	my $leader = eval { leader_of($etcd) } // '';
	$t_node2_key //= now() if $leader eq 'node2';
	if ($stopped
		&& ((defined $t_node2_key && now() - $t_node2_key > 1) || now() - $t_sw > 15))
	{
		kill 'CONT', $stopped;
		$stopped = undef;
		$t_cont  = now();
		note sprintf('SIGCONT to node2\'s WAL receiver %.1f s after the switchover call (leader key: %s)',
			$t_cont - $t_sw, $leader || 'none');
	}
	last if !$stopped && !$sw->pumpable && now() - $t_cont > 3 * $ttl;
	eval { $sw->pump_nb if $sw->pumpable; };
	my $left = 0.3 - (now() - $t);
	usleep(int($left * 1e6)) if $left > 0;
}
eval { $sw->finish; };
my $sw_ok = eval { $sw->result(0) == 0 } // 0;
$sw_out =~ s/\s+$//;
note sprintf('pg_ha.switchover(\'node2\') %s: %s', $sw_ok ? 'returned' : 'failed',
	$sw_ok ? $sw_out : $sw_err);

# --- settle: one leader that accepts writes (the harness restarts a node
# that stops for pg_rewind, as the service manager would)
my $final = wait_for(
	sub {
		supervise($_) for @nodes;
		my $l = leader_of($etcd) or return undef;
		my ($node) = grep { $_->name eq $l } @nodes;
		my $id = $next_id{$l}++;
		return undef unless (try_sql($node, "INSERT INTO t VALUES ($id)"))[0];
		$acked{$id} = $l;
		return $node;
	},
	timeout => 60, interval => 0.5, what => 'a leader accepting writes');
ok($final, 'a leader accepts writes after the switchover: ' . ($final ? $final->name : 'none'))
  or BAIL_OUT('no leader');
my $fname = $final->name;

my %have = map { $_ => 1 } split /\n/, $final->safe_psql('postgres', 'SELECT id FROM t');
my @missing = sort { $a <=> $b } grep { !$have{$_} } keys %acked;
is(scalar @missing, 0,
	sprintf('every acknowledged row (%d) is on the leader %s', scalar keys %acked, $fname))
  or diag sprintf('%d acknowledged rows missing on %s: %s', scalar @missing, $fname,
	join(',', @missing[0 .. ($#missing > 20 ? 20 : $#missing)]));
ok(!grep({ $_ >= 1001 && $_ <= 1200 } @missing),
	"rows 1001..1200, acknowledged by node1 before the switchover, are on $fname");

if ($sw_ok)
{
	is($fname, 'node2', "the switchover reported success ($sw_out), and node2 leads");
}
else
{
	like($sw_err, qr/switchover/i, "the switchover failed with an error: $sw_err");
	is($fname, 'node1', 'the aborted switchover leaves node1 leading');
	ok(grep({ $_->[1] eq 'node1' && $_->[0] > 0 } @writes)
		  || (try_sql($n1, 'INSERT INTO t VALUES (-1)'))[0],
		'node1 accepts writes again after the abort');
}

# one writer at a time: the writer changes at most once, never back
my @seq;
for my $w (@writes)
{
	push @seq, $w->[1] unless @seq && $seq[-1] eq $w->[1];
}
note 'nodes that accepted probe writes, in order: ' . join(' -> ', @seq);
cmp_ok(scalar @seq, '<=', 2, 'the node accepting writes changes at most once (no two writers)');
is_deeply([ map { $_->name } writable_nodes(@nodes) ], [$fname], "exactly one writable node: $fname");

forget_if_stopped(@nodes);
done_testing();
