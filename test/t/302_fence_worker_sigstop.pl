
# A stopped HA worker must not extend the node's write authority.  SIGSTOP
# the primary's pg_ha worker: commits go on while the last renewal's lease
# is valid, and are refused (SQLSTATE 25006) once its deadline (t_send + TTL
# - margin) has passed, though nothing on the node did anything: every
# backend checks the deadline itself.  After SIGCONT the cluster must end
# with exactly one writable primary.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl    = 5;
my $margin = $ttl / 10 > 1 ? $ttl / 10 : 1;
my $etcd   = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

my $st   = $n1->ha_status;
my $wpid = $st->{worker_pid};
ok($wpid, "pg_ha.status() names the worker ($wpid)");
like(PgHa::Node::process_title($wpid) // '', qr/pg_ha/, 'worker_pid is the pg_ha worker');
is(PgHa::Node::parent_pid($wpid), $n1->postmaster_pid, 'worker is a child of the postmaster');

# Never leave a stopped process behind, whatever happens below.
my $stopped = 0;
END { kill 'CONT', $wpid if $stopped && $wpid; }

$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY)');
# Wait for a fresh renewal so the stop lands early in a renew interval
# (lease_seconds_left close to the TTL): the test then sees some commits
# succeed before the deadline.
wait_for(sub { ($n1->ha_status->{lease_seconds_left} // 0) > $ttl - $margin - 0.6 },
	timeout => 10, interval => 0.02, what => 'a fresh lease renewal');
my ($ok) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES');
ok($ok, 'a write right before SIGSTOP succeeds');
my $left = $n1->ha_status->{lease_seconds_left};

kill 'STOP', $wpid;
$stopped = 1;
my $t_stop = now();
note sprintf('SIGSTOP sent to worker %d, lease_seconds_left %.2f', $wpid, $left);

my ($first_ok, $n_ok, $t_last_ok, $t_refused, $state, $err) = (undef, 0);
while (now() - $t_stop < $ttl + 5)
{
	my ($w, $s, $e) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
	my $t = now();
	$first_ok //= $w;
	if ($w) { $n_ok++; $t_last_ok = $t; }
	else
	{
		($t_refused, $state, $err) = ($t, $s, $e);
		last;
	}
	usleep(50_000);
}
ok($first_ok, 'commits still succeed right after the worker is stopped');
note sprintf('%d commits succeeded after SIGSTOP, the last %.2f s after it',
	$n_ok, ($t_last_ok // $t_stop) - $t_stop);
ok(defined $t_refused, 'commits are refused once the lease deadline passes');
if (defined $t_refused)
{
	my $after = $t_refused - $t_stop;
	note sprintf('first refusal %.2f s after SIGSTOP (lease left at stop %.2f s, margin %.1f s: '
		  . 'expected about %.2f s)', $after, $left, $margin, $left);
	cmp_ok($after, '<=', $ttl + 2, "refusal comes within ttl + 2 s of SIGSTOP");
	cmp_ok($after, '<=', $left + 1,
		'refusal comes no later than the write authority left (deadline - margin) + 1 s of slack');
}
is($state, '25006', 'refusal SQLSTATE 25006');
like($err // '', qr/pg_ha: (commit|write) refused: this node does not hold a valid leader lease/,
	'refusal names the missing lease');
ok((PgHa::Node::process_title($wpid) // '') =~ /pg_ha/, 'worker is still there (stopped)');

# The node still serves reads while fenced.
is($n1->safe_psql('postgres', 'SELECT count(*) > 0 FROM t'), 't', 'reads still work on node1');

# A replica takes over meanwhile (the stopped worker renews nothing).
my ($leader, $secs) = wait_leader_not($etcd, 'node1', timeout => 30);
ok(defined $leader, 'a replica takes the leader key while the worker is stopped');
note sprintf('%s holds the leader key %.2f s after SIGSTOP', $leader // 'nobody',
	now() - $t_stop);
my ($w2, $s2) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES');
ok(!$w2 && $s2 eq '25006', 'node1 still refuses writes');

# --- SIGCONT: node1 re-acquires or demotes; one writable primary at the end.
kill 'CONT', $wpid;
$stopped = 0;
my $t_cont = now();
my @restarts;
my $one = wait_for(
	sub {
		if (my $r = supervise($n1)) { push @restarts, $r; }
		my @w = writable_nodes($n1, $n2, $n3);
		return undef unless @w == 1;
		# writable in the sense of pg_is_in_recovery, and it takes a write
		return (try_sql($w[0], 'INSERT INTO t DEFAULT VALUES'))[0] ? $w[0] : undef;
	},
	timeout  => 60,
	interval => 0.25,
	what     => 'exactly one writable primary after SIGCONT');
ok($one, 'after SIGCONT exactly one node is a writable primary')
  and note sprintf('%s is the one writable primary %.2f s after SIGCONT%s',
	$one->name, now() - $t_cont,
	@restarts ? sprintf(' (node1 restarted by the service manager %d time(s))', scalar @restarts) : '');
is(leader_of($etcd), $one && $one->name, 'the writable primary holds the leader key') if $one;
if ($one && $one->name ne 'node1')
{
	wait_ok(sub { (in_recovery($n1) // 0) == 1 && ((wal_receiver($n1) // {})->{sender_port} // 0) == $one->port },
		'node1 ends as a replica of the new leader', timeout => 60);
}

forget_if_stopped($n1, $n2, $n3);
done_testing();
