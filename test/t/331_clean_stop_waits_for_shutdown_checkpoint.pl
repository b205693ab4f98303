
# A clean stop of the leader never forces pg_rewind on it, even when its
# shutdown checkpoint is slow (issue 9, defect 11a).
#
# A clean stop releases the leader key at once, with a note in the failover
# key: the replicas wait for the old leader's WAL stream to end (its
# walsenders send the shutdown checkpoint, then exit) before they race, so
# the next leader's timeline forks after that checkpoint and the old leader
# can follow it as it is.  The wait is bounded, so that a leader that never
# finishes its shutdown does not hold up the failover.
#
# Here node1's checkpointer is stopped (SIGSTOP) for 8 s while node1 shuts
# down, with a TTL of 6 s.  Required:
#   - the new leader's timeline begins after node1's shutdown checkpoint,
#     that is, it waited for it;
#   - node1 restarted by the service manager (pg_hactl rejoin --if-needed)
#     streams from the new leader without pg_rewind;
#   - no row committed on node1 is missing on the new leader.
# Before the fix the replicas waited 5 s and no more: the new leader forked
# before node1's shutdown checkpoint, and node1 needed pg_rewind.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 6;
my $stop = 8;    # more than the old 5 s wait, less than 2 TTL
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 5000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

my $ckpt = $n1->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
ok($ckpt =~ /^\d+$/, "node1's checkpointer runs (pid $ckpt)");

# the clean stop, with the shutdown checkpoint held back for $stop seconds
kill 'STOP', $ckpt;
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_ctl', 'stop', '-D', $n1->data_dir, '-m', 'fast', '--no-wait' ],
	'>', \$out, '2>', \$err)
  or BAIL_OUT("pg_ctl stop: $err");
sleep $stop;
kill 'CONT', $ckpt;
wait_ok(sub { !postmaster_running($n1) }, 'node1 stopped', timeout => 60);
$n1->{_pid} = undef;

my $control = `pg_controldata -D @{[ $n1->data_dir ]}`;
my ($shutdown_ckpt) = $control =~ /^Latest checkpoint location:\s+(\S+)/m;
like($control, qr/^Database cluster state:\s+shut down$/m, 'node1 shut down cleanly');
note "node1's shutdown checkpoint: $shutdown_ckpt";

my $leader = wait_for(sub { my $l = leader_of($etcd) // ''; ($l eq 'node2' || $l eq 'node3') ? $l : undef },
	timeout => 60, what => 'a new leader');
ok($leader, "a new leader took over: " . ($leader // 'none'));
my ($new) = grep { $_->name eq ($leader // '') } ($n2, $n3);
BAIL_OUT('no new leader') unless $new;
wait_ok(sub { (in_recovery($new) // 1) == 0 }, "$leader finished its promotion", timeout => 60);

my $history = $new->safe_psql('postgres', "SELECT pg_read_file('pg_wal/00000002.history')");
my ($fork) = $history =~ /^1\t(\S+)/m;
note "$leader forked from timeline 1 at $fork";
is($new->safe_psql('postgres', "SELECT '$fork'::pg_lsn > '$shutdown_ckpt'::pg_lsn"), 't',
	"${leader}'s timeline begins after node1's shutdown checkpoint");

# the service manager restarts node1; it must follow without pg_rewind
my $off1 = -s $n1->logfile;
my $sm = supervise($n1);
is($sm->{rejoin_rc}, 0, 'pg_hactl rejoin --if-needed succeeds');
my $rcv = wait_for(
	sub {
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $new->port) ? $r : undef;
	},
	timeout => 60, what => "node1 to stream from $leader");
ok($rcv, "node1 streams from $leader");
unlike(log_since($n1, $off1), qr/pg_ha: diverged/, 'node1 never diverged from the new leader');
ok(!-e $n1->data_dir . '/pg_ha.rejoin', 'and has no rejoin marker asking for pg_rewind');

is($new->safe_psql('postgres', 'SELECT count(*) FROM t'), '5000', "$leader has every row");
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ], [$leader], "$leader is the only writable node");

forget_if_stopped($n1, $n2, $n3);
done_testing();
