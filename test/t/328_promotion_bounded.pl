
# A winner that cannot finish recovery does not hold the leader key
# forever (issue 9, defect 9).
#
# node2 is the only candidate (node3 is tagged nofailover) and runs with
# max_standby_streaming_delay = -1.  A client session on node2 holds a
# snapshot and a lock on table t (REPEATABLE READ, SELECT from t, kept
# open); node1 drops t, and replaying that DROP on node2 waits for the
# session forever: node2 receives WAL but no longer replays it.  Then node1
# is killed (kill -9).  Required:
#   - node2 takes the leader key (the only candidate);
#   - node2 becomes writable within a generous bound (6 TTL + 30 s after
#     the kill): pg_ha ends the client session that holds replay back once
#     the promotion has run for one TTL;
#   - that session was terminated, and node2 replayed past the DROP.
# Before the fix node2 held the key and stayed in recovery indefinitely.

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

# node3 may never be promoted: node2 is the only candidate
$n3->append_conf('postgresql.conf', "pg_ha.nofailover = on\n");
$n3->reload;
wait_ok(sub { my $m = member_json($etcd, 'node3') or return 0; $m->{tags} && $m->{tags}{nofailover} },
	'node3\'s member key carries the nofailover tag', timeout => 30);

# node2 waits forever for queries that conflict with replay
$n2->safe_psql('postgres', 'ALTER SYSTEM SET max_standby_streaming_delay = -1');
$n2->reload;
wait_ok(sub { $n2->safe_psql('postgres', 'SHOW max_standby_streaming_delay') eq '-1' },
	'node2: max_standby_streaming_delay = -1', timeout => 10);

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 1000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# a client session on node2 that holds replay back
my $bg = $n2->background_psql('postgres', on_error_stop => 0);
$bg->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
is($bg->query_safe('SELECT count(*) FROM t'), '1000', 'node2: a session reads t and keeps its transaction open');
my $bg_pid = $bg->query_safe('SELECT pg_backend_pid()');

$n1->safe_psql('postgres', 'DROP TABLE t');
$n1->safe_psql('postgres', 'CREATE TABLE after_drop (id int); INSERT INTO after_drop VALUES (1)');
my $target = $n1->lsn('insert');
$n1->wait_for_catchup($n3, 'replay', $target);
wait_ok(
	sub {
		$n2->safe_psql('postgres',
			"SELECT pg_last_wal_receive_lsn() >= '$target' AND pg_last_wal_replay_lsn() < '$target'")
		  eq 't';
	},
	'node2 receives node1\'s WAL but its replay is held back', timeout => 30);
my $replay = $n2->safe_psql('postgres', 'SELECT pg_last_wal_replay_lsn()');
sleep 2;
is($n2->safe_psql('postgres', 'SELECT pg_last_wal_replay_lsn()'), $replay,
	"node2's replay stays at $replay");

# --- node1 dies
my $off = -s $n2->logfile;
my $watch = key_watch($etcd, $n1->ha_key('leader'));
my $t_kill = now();
$n1->kill9;

my ($leader, $secs) = wait_leader_not($etcd, 'node1', timeout => 6 * $ttl);
is($leader, 'node2', 'node2, the only candidate, takes the leader key');
note sprintf('leader key taken by %s %.1f s after kill -9', $leader // 'nobody', $secs);

my $bound = 6 * $ttl + 30;
my ($writable, $w) = timed_wait(sub { (in_recovery($n2) // 1) == 0 },
	timeout => $bound - (now() - $t_kill), interval => 0.25,
	what => 'node2 to finish its promotion');
ok($writable, sprintf('node2 finished its promotion (%.1f s after kill -9, bound %d s)',
		now() - $t_kill, $bound));
wait_ok(sub { (try_sql($n2, 'INSERT INTO after_drop VALUES (2)'))[0] },
	'node2 accepts writes', timeout => 30) if $writable;

# the blocking session was ended, and replay went past the DROP
my $alive = $n2->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $bg_pid");
is($alive, '0', "the session that held replay back (pid $bg_pid) was terminated");
my ($ok, undef, undef, $out) = try_sql($n2, "SELECT to_regclass('t') IS NULL, (SELECT count(*) FROM after_drop WHERE id = 1)");
is($out =~ s/\s+$//r, 't|1', 'node2 replayed the DROP and what came after it') if $writable;
my $log = log_since($n2, $off);
note join("\n", grep { /pg_ha: (promot|terminated|.*giving the leader key up)/ } split /\n/, $log);
my @held = $watch->values;
$watch->stop;
ok(!grep({ $_ eq 'node3' } @held), 'node3 (nofailover) never held the leader key');
is(leader_of($etcd), 'node2', 'node2 holds the leader key at the end');
is_deeply([ map { $_->name } writable_nodes($n2, $n3) ], ['node2'],
	'node2 is the only writable node');

eval { $bg->quit; };
forget_if_stopped($n1, $n2, $n3);
done_testing();
