
# What pg_ha.switchover(), pg_ha.failover(), pg_ha.cancel_switchover() and
# pg_hactl write into the failover key, what they refuse, and what they
# leave behind (issue 9, defects 1 and 13):
#   - a scheduled_at in the past, or in year 20266, is refused;
#   - a pending scheduled switchover can be cancelled from SQL and from
#     pg_hactl (switchover --cancel, cancel);
#   - with no leader, failover() refuses a candidate that is less advanced
#     than another replica and names the better one; with force => true it
#     writes {"member": ..., "force": true};
#   - a pending scheduled switchover does not block a manual failover when
#     there is no leader;
#   - a failover() that gives up (statement_timeout) removes its request.
# What the HA workers then do with a request is tested elsewhere; the
# candidates of the failover part are member keys written by the test, so
# no worker can act on them.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use PostgreSQL::Test::Utils;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => 5);
my $fo_key = $n1->ha_key('failover');
my @conn = ('--etcd', $etcd->endpoints, '--cluster', $n1->ha_cluster,
	'--namespace', $n1->ha_namespace);

sub hactl
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_hactl', @_ ], '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	return ($? >> 8, $out, $err);
}

sub failover_key
{
	my $v = $etcd->get($fo_key);
	return defined $v ? decode_json($v) : undef;
}

sub schedule
{
	my ($ok, $state, $err, $out) =
	  try_sql($n3, "SELECT pg_ha.switchover('node2', now() + interval '1 hour')");
	ok($ok, 'a switchover in an hour is accepted') or diag $err;
	return $out;
}

# --- scheduled_at in the past or in an absurd year
my ($ok, $state, $err, $out) =
  try_sql($n2, "SELECT pg_ha.switchover('node2', now() - interval '1 minute')");
ok(!$ok && $state eq '22023', 'a scheduled_at in the past is refused (22023)') or diag $err;
like($err, qr/scheduled_at is in the past/, 'and says so');
($ok, $state, $err) =
  try_sql($n2, "SELECT pg_ha.switchover('node2', '20266-11-30 10:00:00+00')");
ok(!$ok && $state eq '22023', 'a scheduled_at in year 20266 is refused') or diag $err;
like($err, qr/years 1970 to 9999/, 'and says which years are accepted');
ok(!defined $etcd->get($fo_key), 'neither wrote a failover key');

# --- a pending scheduled switchover, cancelled from SQL
like(schedule(), qr/scheduled at/, 'switchover() says when it will happen');
my $req = failover_key();
is_deeply([ $req->{leader}, $req->{member} ], [ 'node1', 'node2' ],
	'the request names leader and member (Patroni format)');
like($req->{scheduled_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/,
	'scheduled_at is ISO 8601 in UTC');
($ok, $state, $err) = try_sql($n3, "SELECT pg_ha.switchover('node3')");
ok(!$ok && $state eq '55006', 'another switchover is refused while one is pending') or diag $err;
like($err, qr/already in progress.*scheduled at/s, 'naming the pending one');
($ok, $state, $err, $out) = try_sql($n3, 'SELECT pg_ha.cancel_switchover()');
ok($ok, 'cancel_switchover()') or diag $err;
like($out, qr/cancelled a switchover from "node1" to "node2" scheduled at/, 'says what it cancelled');
ok(!defined $etcd->get($fo_key), 'the failover key is gone');
($ok, $state, $err) = try_sql($n3, 'SELECT pg_ha.cancel_switchover()');
ok(!$ok && $state eq '42704', 'cancel_switchover() with nothing pending is an error (42704)')
  or diag $err;

# --- cancelled from pg_hactl
schedule();
my ($rc, $o, $e) = hactl(@conn, 'list');
like($o, qr/pending switchover: from "node1" to "node2" scheduled at/, 'pg_hactl list shows it');
($rc, $o, $e) = hactl(@conn, 'switchover', '--cancel');
is($rc, 0, 'pg_hactl switchover --cancel exits 0') or diag $e;
like($o, qr/cancelled a switchover from "node1" to "node2"/, 'and says what it cancelled');
ok(!defined $etcd->get($fo_key), 'the failover key is gone');
schedule();
($rc, $o, $e) = hactl(@conn, 'cancel');
is($rc, 0, 'pg_hactl cancel exits 0') or diag $e;
ok(!defined $etcd->get($fo_key), 'the failover key is gone');
($rc, $o, $e) = hactl(@conn, 'cancel');
is($rc, 1, 'pg_hactl cancel with nothing pending exits 1');
like($e, qr/no pending switchover/, 'and says why');
is(leader_of($etcd), 'node1', 'node1 still leads');

# --- no leader: paused, node1 stopped cleanly
($ok) = try_sql($n2, 'SELECT pg_ha.pause()');
ok($ok, 'pause()');
wait_for(sub { $_->ha_status->{paused} }, timeout => 10, what => $_->name . ' to see the pause')
  for ($n2, $n3);
$n1->stop('fast');
wait_ok(sub { !defined leader_of($etcd) }, 'no leader once node1 is stopped', timeout => 10);

# Candidates nobody runs: node8 behind the real replicas, node9 ahead.
my $best = wait_for(
	sub {
		my ($a, $b) = (member_json($etcd, 'node2'), member_json($etcd, 'node3'));
		return undef unless $a && $b && $a->{xlog_location} && $b->{xlog_location};
		return $a->{xlog_location} > $b->{xlog_location} ? $a : $b;
	},
	timeout => 20, what => 'member keys of node2 and node3');
sub fake_member
{
	my ($name, $lsn) = @_;
	$etcd->put($n2->ha_key("members/$name"),
		encode_json({
			conn_url          => 'postgres://127.0.0.1:1/postgres',
			api_url           => 'http://127.0.0.1:1/patroni',
			state             => 'running',
			role              => 'replica',
			version           => '1.0.0',
			xlog_location     => $lsn,
			timeline          => $best->{timeline},
			replication_state => 'streaming' }));
}
fake_member('node8', $best->{xlog_location} - 1000);
fake_member('node9', $best->{xlog_location} + 1000);
my $note = $etcd->get($fo_key);

($ok, $state, $err) = try_sql($n2, "SELECT pg_ha.failover('node8')");
ok(!$ok && $state eq '55000', 'failover() to a replica behind another is refused (55000)')
  or diag $err;
like($err, qr/"node8" is not the most advanced replica, "node9" is/,
	'and names the better candidate');
like($err, qr/force => true/, 'the hint names the force flag');
is($etcd->get($fo_key), $note, 'the refusal left the failover key as it was');

# A pending scheduled switchover of the stopped leader does not block it.
# (It names node9: a worker that acted on it would have nothing to promote.)
$etcd->put($fo_key,
	'{"leader":"node1","member":"node9","scheduled_at":"2999-01-01T00:00:00+00:00"}');

# failover(..., force => true) writes the request with "force": true; it
# never completes (nobody runs node8): statement_timeout makes it give up,
# and it removes its request.
sub failover_in_background
{
	my ($sql, $seconds) = @_;
	my ($bout, $berr) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $n2->connstr('postgres'),
		  '-c', "SET statement_timeout = '${seconds}s'", '-c', $sql ],
		'>', \$bout, '2>', \$berr, IPC::Run::timeout(60));
	return ($h, \$bout, \$berr);
}
my ($h, $bout, $berr) = failover_in_background("SELECT pg_ha.failover('node8', force => true)", 6);
my $seen = wait_for(
	sub {
		my $r = eval { failover_key() } or return undef;
		return ($r->{member} // '') eq 'node8' && $r->{force} ? $r : undef;
	},
	timeout => 6, what => 'the forced request in etcd');
ok($seen, 'a forced failover writes {"member":"node8","force":true} over the scheduled switchover');
ok(!defined $seen->{leader}, 'and names no leader') if $seen;
$h->finish;
like($$berr, qr/canceling statement due to statement timeout/, 'the forced failover gave up');
ok(!defined $etcd->get($fo_key), 'and left no failover key behind');

# The same without force, to the most advanced candidate.
($h, $bout, $berr) = failover_in_background("SELECT pg_ha.failover('node9')", 3);
$h->finish;
like($$berr, qr/canceling statement due to statement timeout/, 'failover(\'node9\') gave up');
ok(!defined $etcd->get($fo_key), 'and left no failover key behind');
is(leader_of($etcd), undef, 'nobody took the leader key meanwhile');

$etcd->del($n2->ha_key("members/$_")) for qw(node8 node9);
done_testing();
