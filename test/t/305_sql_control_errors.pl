
# Bad arguments to pg_ha.switchover() / failover() / pause() / resume() on a
# live cluster give clear errors with a proper SQLSTATE, and change nothing:
#   - switchover to an unknown member, to the leader itself, to an invalid
#     name, with a non-finite scheduled_at, while paused, to a lagging
#     candidate;
#   - failover while a leader exists, with no candidate, to an unknown
#     member (no leader: paused cluster, primary stopped);
#   - every control function refused to a role without grants.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

# refused($node, $sql, $sqlstate, $message_re, $name)
sub refused
{
	my ($node, $sql, $sqlstate, $re, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $state, $err) = try_sql($node, $sql, timeout => 30);
	my ($msg) = $err =~ /ERROR:\s+(?:[0-9A-Z]{5}:\s+)?(.*)/;
	note "$sql -> $state: " . ($msg // $err);
	ok(!$ok, "$name: refused");
	is($state, $sqlstate, "$name: SQLSTATE $sqlstate");
	like($msg // '', $re, "$name: message");
	return $err;
}

sub no_failover_key
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(!defined $etcd->get($n1->ha_key('failover')), 'no failover key left behind');
}

# --- switchover
refused($n2, "SELECT pg_ha.switchover('nosuch')", '42704',
	qr/^pg_ha: switchover refused: no member named "nosuch"/,
	'switchover to an unknown member');
refused($n2, "SELECT pg_ha.switchover('node1')", '22023',
	qr/^pg_ha: switchover refused: "node1" is already the leader/,
	'switchover to the leader itself');
refused($n2, "SELECT pg_ha.switchover('bad name;')", '22023',
	qr/^pg_ha: invalid member name "bad name;"/, 'switchover to an invalid name');
refused($n2, "SELECT pg_ha.switchover('node3', 'infinity')", '22023',
	qr/^pg_ha: scheduled_at must be a finite time/, 'switchover at infinity');
no_failover_key();

# --- failover while a leader exists, or without a candidate
refused($n2, "SELECT pg_ha.failover('node3')", '55000',
	qr/^pg_ha: failover refused: "node1" is a healthy leader/,
	'failover while a leader exists');
refused($n2, "SELECT pg_ha.failover(NULL)", '22004',
	qr/^pg_ha: failover needs a candidate/, 'failover without a candidate');
refused($n2, "SELECT pg_ha.failover('')", '22023',
	qr/^pg_ha: invalid member name ""/, 'failover to an empty name');
no_failover_key();

# --- permissions: a role without grants may call none of them
$n1->safe_psql('postgres', 'CREATE ROLE app LOGIN');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
for my $f ("pg_ha.switchover('node2')", "pg_ha.failover('node2')",
	'pg_ha.pause()', 'pg_ha.resume()')
{
	my ($ok, $state, $err) = try_sql($n2, "SELECT $f", user => 'app');
	ok(!$ok && $state eq '42501', "$f: permission denied to a role without grants")
	  or diag $err;
	like($err, qr/permission denied for function/, "$f: says permission denied");
}
is($n1->safe_psql('postgres',
		"SELECT count(*) FROM information_schema.routine_privileges "
		  . "WHERE routine_schema = 'pg_ha' AND grantee = 'PUBLIC' "
		  . "AND routine_name IN ('switchover','failover','pause','resume')"),
	'0', 'no control function is executable by PUBLIC');

# --- lagging candidate: node3's WAL receiver is stopped (primary_conninfo
# points at a closed port), the primary writes more than
# maximum_lag_on_failover (1MB), node3's member key shows it behind.
my $conninfo3 = stop_streaming($n3, $n1);
pass('node3 no longer streams from node1');
$n1->safe_psql('postgres',
	"CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 10000) g");
my $lag = wait_for(
	sub {
		my $m1 = member_json($etcd, 'node1') or return undef;
		my $m3 = member_json($etcd, 'node3') or return undef;
		my $d  = ($m1->{xlog_location} // 0) - ($m3->{xlog_location} // 0);
		return $d > 2 * 1024 * 1024 ? $d : undef;
	},
	timeout => 20,
	what    => 'member keys to show node3 more than 2MB behind');
ok($lag, sprintf('node3 is %.1f MB behind node1 in etcd', ($lag // 0) / 1048576));
refused($n2, "SELECT pg_ha.switchover('node3')", '55000',
	# refused up front when its member key already shows it lagging, or by
	# the leader, whose walsender sees it is not streaming
	qr/^pg_ha: switchover (refused: "node3" is lagging|to "node3" failed: the leader abandoned it: .*"node3" is (not streaming|\d+ bytes behind))/,
	'switchover to a lagging candidate');
no_failover_key();
is(leader_of($etcd), 'node1', 'node1 is still the leader');

# node3 streams again
resume_streaming($n3, $conninfo3);
wait_ok(sub { ((wal_receiver($n3) // {})->{sender_port} // 0) == $n1->port },
	'node3 streams from node1 again', timeout => 30);

# --- paused
my ($ok) = try_sql($n2, 'SELECT pg_ha.pause()');
ok($ok, 'pause()');
wait_for(sub { $n2->ha_status->{paused} }, timeout => 10, what => 'node2 to see the pause');
refused($n2, "SELECT pg_ha.switchover('node3')", '55000',
	qr/^pg_ha: switchover refused: the cluster is paused/, 'switchover while paused');
no_failover_key();

# --- failover to an unknown member when there is no leader: stop the
# primary cleanly (its leader key goes at once); paused, nobody takes it.
$n1->stop('fast');
wait_ok(sub { !defined leader_of($etcd) }, 'no leader once node1 is stopped', timeout => 10);
# A clean stop of the leader leaves a note in the failover key (its final
# position, for the next leader); the refused calls must not touch it.
my $fo_before = $etcd->get($n1->ha_key('failover'));
note 'failover key after the clean stop: ' . ($fo_before // '(none)');
refused($n2, "SELECT pg_ha.failover('nosuch')", '42704',
	qr/^pg_ha: failover refused: no member named "nosuch"/,
	'failover to an unknown member');
refused($n2, "SELECT pg_ha.failover('node1')", '42704',
	qr/^pg_ha: failover refused: no member named "node1"/,
	'failover to the stopped former primary');
is($etcd->get($n1->ha_key('failover')), $fo_before,
	'the refused failover calls left the failover key alone');

# The valid call does what it says: no healthy leader (node1 stopped),
# paused cluster, so nothing else will fail over meanwhile.
my ($fo_ok, $fo_state, $fo_err, $fo_out) =
  try_sql($n3, "SELECT pg_ha.failover('node2')", timeout => 90);
ok($fo_ok, "failover('node2') with no leader succeeds: $fo_out") or diag $fo_err;
is(leader_of($etcd), 'node2', 'node2 holds the leader key after failover()') if $fo_ok;
wait_ok(sub { (try_sql($n2, 'CREATE TABLE after_failover ()'))[0] },
	'node2 takes writes', timeout => 30) if $fo_ok;
($ok) = try_sql($n2, 'SELECT pg_ha.resume()');
ok($ok, 'resume()');

forget_if_stopped($n1, $n2, $n3);
done_testing();
