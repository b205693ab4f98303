
# Unplanned failover: kill -9 of the primary's postmaster (ttl 5).  The
# leader key expires with the dead node's lease, a replica takes it and
# promotes, the other replica repoints primary_conninfo by reload (its
# postmaster is not restarted) and follows timeline 2, and the cluster takes
# writes again with no manual step.  Rows committed before the kill are on
# the new primary, and etcd's history records the switch.

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

$n1->safe_psql('postgres',
	'CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT now())');
$n1->safe_psql('postgres', 'INSERT INTO t (id) SELECT generate_series(1, 1000)');
my $before_lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $before_lsn) for ($n2, $n3);

my %pm_pid   = map { $_->name => $_->postmaster_pid } ($n2, $n3);
my %pm_start = map {
	$_->name => $_->safe_psql('postgres', 'SELECT pg_postmaster_start_time()')
} ($n2, $n3);
is(scalar @{ history_of($etcd) }, 0, 'no history before the first failover');

# --- kill -9
my $t_kill = now();
$n1->kill9;

my ($new_leader, $secs) = wait_leader_not($etcd, 'node1', timeout => 30);
ok(defined $new_leader && $new_leader =~ /^node[23]$/,
	'a replica takes the leader key after kill -9 of the primary')
  or BAIL_OUT('no failover: ' . ($new_leader // 'no leader'));
note sprintf('leader key taken by %s %.2f s after kill -9 (ttl %d)',
	$new_leader, $secs, $ttl);

my $new   = $by_name{$new_leader};
my ($other) = grep { $_->name ne $new_leader } ($n2, $n3);

# The new primary accepts a write, without anyone telling it to.
my ($wrote, $w_secs) = timed_wait(
	sub { (try_sql($new, 'INSERT INTO t (id) VALUES (1001)'))[0] },
	timeout  => 30,
	interval => 0.05,
	what     => "first successful INSERT on $new_leader");
ok($wrote, "writes succeed on the new primary $new_leader with no manual step");
my $t_write = now() - $t_kill;
note sprintf('first successful INSERT on %s %.2f s after kill -9 (goal: ttl + 2 = %d s)',
	$new_leader, $t_write, $ttl + 2);
cmp_ok($t_write, '<', 2 * $ttl + 10,
	'failover completes within a generous bound (2 ttl + 10 s)');

is($new->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	'f', "$new_leader is out of recovery");
is($new->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id <= 1000'),
	'1000', 'every row committed before the kill is on the new primary');
my $st = wait_for(
	sub { my $s = $new->ha_status; ($s->{timeline} // 0) == 2 ? $s : undef },
	timeout => 10, what => 'pg_ha.status() of the new primary on timeline 2')
  // $new->ha_status;
is($st->{timeline}, 2, 'new primary is on timeline 2');
is($st->{role}, 'primary', 'pg_ha.status(): role primary');
ok($st->{lease_held}, 'pg_ha.status(): lease held');

# --- the other replica follows the new leader without a restart
my $rcv = wait_for(
	sub {
		my $r = wal_receiver($other) or return undef;
		return ($r->{status} eq 'streaming'
			  && $r->{sender_port} == $new->port
			  && $r->{received_tli} == 2) ? $r : undef;
	},
	timeout => 30,
	what    => $other->name . " to stream timeline 2 from $new_leader");
ok($rcv, $other->name . " streams from $new_leader (port " . $new->port . ')');
is($rcv && $rcv->{received_tli}, 2, $other->name . ': WAL receiver on timeline 2');
note sprintf('%s streaming from %s %.2f s after kill -9',
	$other->name, $new_leader, now() - $t_kill);
is($other->postmaster_pid, $pm_pid{ $other->name },
	$other->name . ': postmaster PID unchanged (no restart)');
is($other->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$pm_start{ $other->name }, $other->name . ': postmaster start time unchanged');
like($other->safe_psql('postgres', 'SHOW primary_conninfo'),
	qr/port='?@{[ $new->port ]}\b/, $other->name . ': primary_conninfo points at the new leader');

# The write made after the failover reaches the follower.
wait_ok(
	sub {
		$other->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 1001')
		  eq '1';
	},
	$other->name . ' replays the row written on the new primary',
	timeout => 30);

# --- etcd: history has one entry for the switch 1 -> 2
my $hist = wait_for(sub { my $h = history_of($etcd); @$h ? $h : undef },
	timeout => 10, what => 'history key') // [];
is(scalar @$hist, 1, 'history key has exactly one entry');
my $e = $hist->[0] // [];
is($e->[0], 1, 'history entry: old timeline 1');
ok(defined $e->[1] && length "$e->[1]" && "$e->[1]" ne '0',
	'history entry: switch position (' . ($e->[1] // 'undef') . ')');
is($e->[4], $new_leader, 'history entry: new leader') if @$e >= 5;
note 'history: ' . JSON::PP->new->canonical->encode($hist);

is_deeply([ map { $_->name } writable_nodes($n2, $n3) ],
	[$new_leader], 'exactly one writable node remains');

done_testing();
