
# A commit waiting for a lost synchronous standby goes on once the leader
# names the other replica (chaos suite, seed 245: writes stalled 10 s).
#
# PostgreSQL releases waiting commits only when a WAL sender processes a
# reply from a listed standby (SyncRepReleaseWaiters).  A standby replies
# when its write or flush position moves, after wal_receiver_status_interval,
# or when asked to (wal_sender_timeout / wal_receiver_timeout pings).  When
# the writers are all blocked no new WAL flows, and the other replica had
# already flushed the waiting commit while it was not yet listed: its
# reply then came only with the next status interval (10 s by default).
#
# The stall is made deterministic here: the replicas send status only on
# progress (wal_receiver_status_interval = 1h, no timeouts, so no pings),
# and exactly one commit is outstanding, with no other WAL after it.
# node2 (synchronous) has its WAL receiver stopped (SIGSTOP) so the commit
# waits, then node2 is killed; the leader switches synchronous_standby_names
# to node3.  Required: the commit completes (bound 30 s after the switch;
# before the fix it never did), and node3 holds it when it returns.

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
my ($n1, $n2, $n3) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	extra_conf => "pg_ha.synchronous_mode = on\n"
	  . "wal_receiver_status_interval = '1h'\n"
	  . "wal_receiver_timeout = 0\n"
	  . "wal_sender_timeout = 0\n");

# node2 wins the tie-break by name: it becomes the synchronous standby
wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
$n1->safe_psql('postgres', 'CREATE TABLE w (id int PRIMARY KEY)');
my ($ok, undef, $err) = try_sql($n1, 'INSERT INTO w VALUES (1)');
ok($ok, 'a commit node2 confirms is acknowledged') or diag $err;

# ---- one commit waits for node2 ----
my $rcv = wal_receiver_pid($n2);
ok($rcv, "node2's WAL receiver runs (pid " . ($rcv // 'none') . ')');
kill 'STOP', $rcv;
my ($out, $cerr) = ('', '');
my $client = IPC::Run::start(
	[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $n1->connstr('postgres'),
	  '-c', 'INSERT INTO w VALUES (2)' ],
	'>', \$out, '2>', \$cerr, IPC::Run::timeout(180));
my $pid = wait_for(
	sub {
		my $p = $n1->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO w VALUES (2)%'");
		return $p =~ /^\d+$/ ? $p : undef;
	},
	timeout => 30, what => 'the commit to wait for node2', fatal => 1);
ok($pid, "the commit waits for the synchronous standby (pid $pid)");
my $commit_lsn = $n1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');

# The bgwriter logs a running-xacts record within 15 s of the commit
# (LOG_SNAPSHOT_INTERVAL_MS): node3's reply to it must come before node3
# is listed, or it would release the commit by itself.  After it, nothing
# writes WAL.
my $quiet_lsn = wait_for(
	sub {
		my $l = $n1->safe_psql('postgres',
			"SELECT CASE WHEN pg_current_wal_insert_lsn() > '$commit_lsn' THEN pg_current_wal_insert_lsn() END");
		return $l ne '' ? $l : undef;
	},
	timeout => 30, what => 'the running-xacts record after the commit', fatal => 1);
wait_for(
	sub { $n3->safe_psql('postgres', "SELECT pg_last_wal_receive_lsn() >= '$quiet_lsn'") eq 't' },
	timeout => 30, what => 'node3 to flush everything', fatal => 1);
ok(1, "node3 flushed everything (up to $quiet_lsn) while it was not synchronous");
ok($client->pumpable, 'the commit still waits');

# ---- node2 is lost; the leader names node3 ----
my $off = -s $n1->logfile;
$n2->kill9;
kill 'KILL', $rcv;    # it is stopped: it would keep node2's connection open
my $switched = wait_for(
	sub {
		log_since($n1, $off) =~ /pg_ha: commits no longer wait for a missing synchronous standby/
		  && $n1->safe_psql('postgres', 'SHOW synchronous_standby_names') eq 'FIRST 1 ("node3")';
	},
	timeout => 30, what => 'the leader to name node3');
ok($switched, 'the leader names node3 and no longer waits for node2');
my $t_switch = now();

# ---- the waiting commit goes on, and node3 holds it ----
my $done = wait_for(sub { $client->pump_nb; !$client->pumpable }, timeout => 30,
	what => 'the waiting commit to complete');
note sprintf('commit completed %.1f s after the switch', elapsed_since($t_switch)) if $done;
ok($done, 'the waiting commit completes once node3 is the synchronous standby');
if (!$done)
{
	diag 'leader WAL insert position ' . $n1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()')
	  . " (was $quiet_lsn before node2 was killed)";
	$n1->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
}
my $rc = eval { $client->finish } ? 1 : 0;
ok($rc && $out =~ /INSERT 0 1/, 'the client sees a success') or diag "stdout [$out] stderr [$cerr]";
is($n3->safe_psql('postgres', "SELECT pg_last_wal_receive_lsn() >= '$commit_lsn'"), 't',
	'node3 holds the acknowledged commit (flushed)');
wait_ok(sub { $n3->safe_psql('postgres', 'SELECT count(*) FROM w WHERE id = 2') eq '1' },
	'the row is on node3', timeout => 10);

forget_if_stopped($n2);
done_testing();
