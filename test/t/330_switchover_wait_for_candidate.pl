
# pg_ha.switchover(candidate, wait => interval): a candidate that is not
# streaming yet (right after a failover or a restart, typically) is a
# refusal that passes by itself.  Without wait the call is refused at once,
# and the refusal says how to wait; with wait it re-checks until the
# candidate qualifies, then switches over (issue 9, defect 15).

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

# node3 stops streaming: its primary_conninfo points at a closed port
my $conninfo3 = stop_streaming($n3, $n1);
wait_ok(sub { (((member_json($etcd, 'node3') // {})->{replication_state}) // '') ne 'streaming' },
	'node3\'s member key no longer says streaming', timeout => 30);

# --- without wait: refused at once, with a hint to retry or wait
my ($ok, $state, $err) = try_sql($n2, "SELECT pg_ha.switchover('node3')", timeout => 30);
ok(!$ok, 'switchover to a candidate that is not streaming: refused');
is($state, '55000', 'SQLSTATE 55000');
like($err, qr/not streaming from the leader/, 'the refusal says the candidate is not streaming');
like($err, qr/wait => '30s'/, 'and its hint says how to wait for it');
is(leader_of($etcd), 'node1', 'node1 still leads');

# --- with wait: the call waits; node3 streams again after 3 s; it switches over
my ($out, $errout) = ('', '');
my $sw = IPC::Run::start(
	[
		'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $n2->connstr('postgres'),
		'-c', "SELECT pg_ha.switchover('node3', wait => '60s')"
	],
	'>', \$out, '2>', \$errout,
	IPC::Run::timeout(120));
sleep 3;
ok($sw->pumpable, 'with wait, the call is still waiting while node3 does not stream');
is(leader_of($etcd), 'node1', 'and nothing was requested meanwhile');
ok(!defined $etcd->get($n1->ha_key('failover')), 'no failover key while it waits');

resume_streaming($n3, $conninfo3);
$sw->finish;
note "switchover with wait: rc $? out: $out err: $errout";
is($? >> 8, 0, 'the call with wait succeeds once node3 streams');
like($out, qr/switched over from "node1" to "node3"/, 'and reports the switchover');
wait_ok(sub { (leader_of($etcd) // '') eq 'node3' && !in_recovery($n3) },
	'node3 leads and accepts writes', timeout => 30);

# --- wait does not help a refusal that waiting cannot cure
($ok, $state, $err) = try_sql($n2, "SELECT pg_ha.switchover('nosuch', wait => '30s')",
	timeout => 10);
ok(!$ok && $state eq '42704', 'an unknown member is refused at once, wait or not')
  or diag $err;
($ok, $state, $err) = try_sql($n2, "SELECT pg_ha.switchover('node1', wait => '2 hours')",
	timeout => 10);
ok(!$ok && $state eq '22023', 'wait beyond 1 hour is refused') or diag $err;

forget_if_stopped($n1, $n2, $n3);
done_testing();
