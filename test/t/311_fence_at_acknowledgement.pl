
# The commit fence must hold at the acknowledgement, not only before the
# commit record is written (issue 9, defect 2).
#
# A COMMIT is parked after its commit record is flushed and before the reply:
# synchronous_standby_names names a standby that does not exist, so the
# backend waits in SyncRepWaitForLSN with its record durable.  While it
# waits, the primary loses its lease (its pg_ha worker is stopped), a replica
# takes over and accepts a write.  Then the waiter is released.
#
#   - with a valid lease the same wait-then-release path answers COMMIT
#     (control case: the release itself is not what breaks the session);
#   - after the takeover, neither COMMIT nor COMMIT PREPARED is acknowledged:
#     the client sees a lost connection (an ambiguous outcome), never the
#     command tag;
#   - the node logs that it withheld the acknowledgement.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use PostgreSQL::Test::Utils ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(
	etcd         => $etcd,
	ttl          => $ttl,
	nodes        => 2,
	primary_conf => "max_prepared_transactions = 5\n");

my $wpid = $n1->ha_status->{worker_pid};
ok($wpid, "node1's pg_ha worker is running ($wpid)");
my $stopped = 0;
END { kill 'CONT', $wpid if $stopped && $wpid; }

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->wait_for_catchup($n2, 'replay');

# A psql in the background running $sql; returns a handle for finish_client.
# Input and output go through files: IPC::Run feeds a scalar only while the
# harness is pumped, and this client must run while the test does other work.
my $nclient = 0;
sub start_client
{
	my ($node, $sql) = @_;
	my $base = PostgreSQL::Test::Utils::tempdir() . '/client' . ++$nclient;
	PostgreSQL::Test::Utils::append_to_file("$base.sql", "\\set VERBOSITY verbose\n$sql\n");
	my %c = (base => $base);
	$c{h} = IPC::Run::start(
		[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', "$base.sql", '>', "$base.out", '2>', "$base.err",
		IPC::Run::timeout(120));
	return \%c;
}

sub finish_client
{
	my ($c) = @_;
	eval { $c->{h}->finish; };
	$c->{rc}  = $@ ? -1 : $? >> 8;
	$c->{out} = PostgreSQL::Test::Utils::slurp_file("$c->{base}.out");
	$c->{err} = PostgreSQL::Test::Utils::slurp_file("$c->{base}.err");
	return $c;
}

# Backends of node1 waiting for a synchronous standby, by query text.
sub syncrep_waiters
{
	my ($node, $like) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
		  . "AND query LIKE '$like'");
}

sub set_sync_names
{
	my ($node, $value) = @_;
	my $stmt = defined $value
	  ? "ALTER SYSTEM SET synchronous_standby_names = '$value'"
	  : 'ALTER SYSTEM RESET synchronous_standby_names';
	# A new connection each time: ALTER SYSTEM takes no XID, so it works on
	# a fenced node too.
	$node->safe_psql('postgres', $stmt);
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	return;
}

# --- control: valid lease, the waiter is released and answers COMMIT
set_sync_names($n1, 'nobody');
my $ctl = start_client($n1, "BEGIN;\nINSERT INTO t VALUES (1);\nCOMMIT;");
wait_ok(sub { syncrep_waiters($n1, 'COMMIT%') eq '1' },
	'control: COMMIT waits for the (missing) synchronous standby', timeout => 30);
set_sync_names($n1, undef);
finish_client($ctl);
is($ctl->{rc}, 0, 'control: psql exits 0');
like($ctl->{out}, qr/^COMMIT$/m, 'control: with a valid lease the client gets COMMIT');

# --- the window: record durable, lease lost, successor writing, then reply
$n1->safe_psql('postgres',
	"BEGIN; INSERT INTO t VALUES (2); PREPARE TRANSACTION 'p2';");
set_sync_names($n1, 'nobody');
my $log_offset = -s $n1->logfile;
my $commit = start_client($n1, "BEGIN;\nINSERT INTO t VALUES (42);\nCOMMIT;");
my $cprep  = start_client($n1, "COMMIT PREPARED 'p2';");
wait_ok(sub { syncrep_waiters($n1, 'COMMIT;%') eq '1' },
	'COMMIT waits with its record flushed', timeout => 30);
wait_ok(sub { syncrep_waiters($n1, 'COMMIT PREPARED%') eq '1' },
	'COMMIT PREPARED waits with its record flushed', timeout => 30);
ok($n1->ha_status->{lease_held}, 'node1 still holds the lease at this point');

kill 'STOP', $wpid;
$stopped = 1;
my $t_stop = now();
my ($leader) = wait_leader_not($etcd, 'node1', timeout => 4 * $ttl + 10);
is($leader, 'node2', 'node2 takes the leader key while node1 is paused');
wait_ok(sub { (try_sql($n2, 'INSERT INTO t VALUES (1000)'))[0] },
	'node2 accepts a write', timeout => 30, interval => 0.2);
note sprintf('node2 accepted a write %.2f s after node1 stopped renewing',
	now() - $t_stop);
is($n1->safe_psql('postgres', 'SELECT fenced FROM pg_ha.status()'), 't',
	'node1 reports itself fenced');

# Release the waiters on the fenced node.
set_sync_names($n1, undef);
finish_client($commit);
finish_client($cprep);

unlike($commit->{out}, qr/^COMMIT$/m,
	'COMMIT after the takeover is not acknowledged');
isnt($commit->{rc}, 0, 'the COMMIT client sees a failure');
like($commit->{err}, qr/server closed the connection unexpectedly|connection to server was lost|terminating connection/,
	'the COMMIT client sees a lost connection (ambiguous outcome)');
unlike($cprep->{out}, qr/^COMMIT PREPARED$/m,
	'COMMIT PREPARED after the takeover is not acknowledged');
isnt($cprep->{rc}, 0, 'the COMMIT PREPARED client sees a failure');
like($cprep->{err}, qr/server closed the connection unexpectedly|connection to server was lost|terminating connection/,
	'the COMMIT PREPARED client sees a lost connection (ambiguous outcome)');
note "COMMIT client: rc $commit->{rc}\nstdout:\n$commit->{out}\nstderr:\n$commit->{err}";
note "COMMIT PREPARED client: rc $cprep->{rc}\nstdout:\n$cprep->{out}\nstderr:\n$cprep->{err}";

my $log = log_since($n1, $log_offset);
like($log, qr/pg_ha: acknowledgement of COMMIT withheld/,
	'node1 logs that it withheld the COMMIT acknowledgement');
like($log, qr/pg_ha: acknowledgement of COMMIT PREPARED withheld/,
	'node1 logs that it withheld the COMMIT PREPARED acknowledgement');
# The rows are durable on node1: the commit happened inside its term.  (Here
# replication streamed them to node2 before it promoted; had the link been
# down they would be lost, and a "COMMIT" would have been a lie.)
note 'rows on node1: ' . $n1->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM t');
note 'rows on node2: ' . $n2->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM t');

# --- end: let node1's worker run again; one writable primary at the end
kill 'CONT', $wpid;
$stopped = 0;
my $one = wait_for(
	sub {
		supervise($n1);
		my @w = writable_nodes($n1, $n2);
		return @w == 1 && $w[0]->name eq 'node2' ? 1 : undef;
	},
	timeout  => 60,
	interval => 0.25,
	what     => 'node2 as the only writable primary after SIGCONT');
ok($one, 'after SIGCONT node2 is the only writable primary');

forget_if_stopped($n1, $n2);
done_testing();
