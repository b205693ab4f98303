
# The history key is written reliably (issue 9, defect 6).
#
# After a failover (kill -9 of node1; node2 or node3 leads on timeline 2)
# the history key is deleted by hand, standing for a lost write (or a
# worker restart in the middle of a promotion, which skipped the entry).
# Required:
#   - the leader writes the entry for timeline 2 again, within a few
#     seconds, by itself: [1, <switch lsn>, <reason>, <time>, <leader>],
#     where the switch LSN is where timeline 2 starts according to the
#     leader's own timeline history file (pg_wal/00000002.history);
#   - restarted (fast stop, start), the leader comes back as leader: it is
#     the last leader history records, so it takes the free key and does not
#     demote itself.  (The other replica is stopped first, so that nobody
#     else can take the key while the leader restarts.)
# Before the fix the entry was written once, best-effort, right after the
# promotion, and never again.

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
my %by_name = map { $_->name => $_ } ($n1, $n2, $n3);
my $hkey = $n1->ha_key('history');

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 1000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# --- failover to timeline 2
$n1->kill9;
my ($leader_name) = wait_leader_not($etcd, 'node1', timeout => 30);
ok(defined $leader_name && $leader_name =~ /^node[23]$/, 'a replica took over after kill -9 of node1')
  or BAIL_OUT('no failover');
my $leader = $by_name{$leader_name};
my ($other) = grep { $_->name ne $leader_name } ($n2, $n3);
wait_ok(sub { (try_sql($leader, 'INSERT INTO t VALUES (1001)'))[0] },
	"$leader_name accepts writes", timeout => 30);
wait_ok(sub { ($leader->ha_status->{timeline} // 0) == 2 },
	"$leader_name is on timeline 2", timeout => 10);

# Where timeline 2 starts, from the leader's own timeline history file:
# "1<TAB>0/XXXXXXXX<TAB>reason".
my $tlfile = $leader->safe_psql('postgres', "SELECT pg_read_file('pg_wal/00000002.history')");
my ($hi, $lo) = $tlfile =~ /^1\t([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)\t/m;
ok(defined $lo, "00000002.history names the switch point out of timeline 1 ($tlfile)");
my $switch = defined $lo ? hex($hi) * 2**32 + hex($lo) : -1;
note sprintf('timeline 2 starts at %X/%X (%d)', hex($hi // 0), hex($lo // 0), $switch);

my $first = wait_for(sub { my $h = history_of($etcd); @$h ? $h : undef },
	timeout => 10, what => 'the history entry written at the promotion') // [];
note 'history after the promotion: ' . JSON::PP->new->canonical->encode($first);
is(scalar @$first, 1, 'the promotion wrote one history entry');

# --- a lost write: the history key disappears
is($etcd->del($hkey), 1, 'history key deleted by hand');
ok(!defined $etcd->get($hkey), 'the history key is gone');

my ($hist, $secs) = timed_wait(
	sub { my $h = history_of($etcd); @$h ? $h : undef },
	timeout  => 3 * $ttl,
	interval => 0.1,
	what     => 'the leader to rewrite the history key');
ok($hist, sprintf('the leader rewrote the history key (after %.1f s)', $secs));
$hist //= [];
note 'history rewritten: ' . JSON::PP->new->canonical->encode($hist);
is(scalar @$hist, 1, 'history has exactly one entry');
my $e = $hist->[0] // [];
is($e->[0], 1, 'entry: timeline 1 switched ...');
ok(defined $e->[1] && $e->[1] == $switch,
	sprintf('entry: ... at the start of timeline 2 per 00000002.history (%s, expected %d)',
		$e->[1] // 'undef', $switch));
ok(defined $e->[2] && length $e->[2], 'entry: a reason (' . ($e->[2] // 'undef') . ')');
ok(defined $e->[3] && length $e->[3], 'entry: a time (' . ($e->[3] // 'undef') . ')');
is($e->[4], $leader_name, "entry: the leader is $leader_name");

# --- restart of the leader: it is the last leader in history, it leads on
$other->stop('fast');    # nobody else may take the key meanwhile
my $off = -s $leader->logfile;
$leader->stop('fast');
$leader->start;

wait_ok(sub { (leader_of($etcd) // '') eq $leader_name },
	"$leader_name takes the leader key again after its restart", timeout => 30);
wait_ok(sub { (try_sql($leader, 'INSERT INTO t VALUES (1002)'))[0] },
	"$leader_name accepts writes after its restart", timeout => 30);

# and stays leader: no demotion in the next few renewals
my $demoted = 0;
my $t0 = now();
while (now() - $t0 < 2 * $ttl)
{
	my $r = in_recovery($leader);
	$demoted = 1 if (defined $r && $r) || (leader_of($etcd) // '') ne $leader_name;
	last if $demoted;
	select(undef, undef, undef, 0.25);
}
ok(!$demoted, "$leader_name stays leader and out of recovery after its restart");
my $log = log_since($leader, $off);
unlike($log, qr/not taking the leader key|fenced: commits refused/,
	"$leader_name never refused the key or fenced itself after the restart");
is(scalar @{ history_of($etcd) }, 1, 'history still has exactly one entry');

forget_if_stopped($n1, $n2, $n3);
done_testing();
