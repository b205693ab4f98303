
# In synchronous mode a commit whose wait for the synchronous standby is
# cancelled is never reported as a success (issue 12: zero loss of
# acknowledged commits).
#
# PostgreSQL ends the wait when the statement is cancelled (pg_cancel_backend,
# a client's cancel request; statement_timeout is off by then): it warns "the transaction has
# already committed locally, but might not have been replicated to the
# standby" and then reports the commit as a success.  If the primary is lost
# next, the promoted synchronous standby does not have that commit, yet the
# client was told it is durable: the very loss synchronous mode exists to
# rule out.
#
# node1 leads in strict mode with node2 as its synchronous standby; node2's
# WAL receiver is stopped (SIGSTOP), so a commit waits, and the waiting
# commit is cancelled with pg_cancel_backend().  Required: the client does not see
# a success (the connection is lost: an unknown outcome), node1's log says
# why, and a commit that the standby did confirm is still acknowledged.
# Before the fix the client saw INSERT 0 1.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use IPC::Run ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni qw(config_set);
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	nodes      => 2,
	extra_conf => "pg_ha.synchronous_mode = on\n");

wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
# strict once node2 is synchronous (a lone strict primary could not even
# create the extension): the leader never goes asynchronous meanwhile
# (in the config key, which carries pg_ha.synchronous_mode since the
# initialization and takes precedence over the GUC)
config_set($etcd, synchronous_mode_strict => JSON::PP::true);
wait_for(sub { $n1->safe_psql('postgres', 'SELECT sync_mode FROM pg_ha.status()') eq 'strict' },
	timeout => 30, what => 'strict mode on node1', fatal => 1);
$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
my ($ok, undef, $err) = try_sql($n1, 'INSERT INTO t VALUES (1)');
ok($ok, 'a commit the synchronous standby confirms is acknowledged') or diag $err;

my $rcv = wal_receiver_pid($n2);
ok($rcv, "node2's WAL receiver runs (pid " . ($rcv // 'none') . ')');
my $off = -s $n1->logfile;
kill 'STOP', $rcv;
my ($out2, $err2) = ('', '');
my $client = IPC::Run::start(
	[ 'psql', '-X', '-d', $n1->connstr('postgres'), '-c', 'INSERT INTO t VALUES (2)' ],
	'>', \$out2, '2>', \$err2, IPC::Run::timeout(60));
my $pid = wait_for(
	sub {
		my $p = $n1->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO t VALUES (2)%'");
		return $p =~ /^\d+$/ ? $p : undef;
	},
	timeout => 30, what => 'the commit to wait for the synchronous standby');
ok($pid, 'the commit waits for the synchronous standby (pid ' . ($pid // 'none') . ')');
$n1->safe_psql('postgres', "SELECT pg_cancel_backend($pid)") if $pid;
my $ok2 = eval { $client->finish } ? 1 : 0;
kill 'CONT', $rcv;
note "cancelled wait: psql " . ($ok2 ? 'succeeded' : 'failed') . ": stdout [$out2] stderr [$err2]";
ok(!$ok2 && $out2 !~ /INSERT 0 1/, 'a commit whose synchronous wait was cancelled is not reported as a success');
like($err2, qr/server closed the connection|connection to server .* lost|no connection to the server/i,
	'the client sees a lost connection (the outcome is unknown)');
wait_ok(sub { log_since($n1, $off) =~ /pg_ha: acknowledgement of COMMIT withheld: the synchronous standby did not confirm it/ },
	"node1's log says why", timeout => 10);

# the standby is back: commits are acknowledged again
my ($ok3, undef, $err3) = try_sql($n1, 'INSERT INTO t VALUES (3)', timeout => 30);
ok($ok3, 'with the standby streaming again, commits are acknowledged') or diag $err3;
$n1->wait_for_catchup($n2, 'replay');
is($n2->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM t'), '1,2,3',
	'node2 has every row, the unacknowledged one included once it streamed again');

done_testing();
