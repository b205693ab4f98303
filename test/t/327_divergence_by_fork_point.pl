
# Divergence is judged by the fork point, not the timeline number alone
# (issue 9, defect 7).
#
# Two forks carry the same timeline number: node2 is promoted by pg_ha to
# timeline 2 after kill -9 of node1, while node3, stopped before the crash
# (so it lacks node1's last rows), is promoted by hand to a timeline 2 of
# its own and writes a row there that nobody else has.  node3's timeline 2
# forks off timeline 1 earlier than the cluster's (the history key and the
# timeline history files say where).  node3 then starts again as a standby
# with pg_ha.  Required:
#   - node3 sees that it left the leader's history: it leaves pg_ha.rejoin
#     in its data directory, logs "diverged", and shuts postgres down;
#   - the service manager's restart (pg_hactl rejoin --if-needed, then
#     start) brings it back as a streaming replica of node2, with node2's
#     rows and without the row written on its private fork.
# Before the fix node3 compared timeline numbers only (2 = 2) and carried
# on as if it followed node2.

use strict;
use warnings;

use Test::More;
use PostgreSQL::Test::Utils;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

sub lsn_num
{
	my ($text) = @_;
	my ($hi, $lo) = ($text // '') =~ /([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)/ or return undef;
	return hex($hi) * 2**32 + hex($lo);
}

# switch point out of timeline 1 in a node's pg_wal/00000002.history
sub fork_of_tl2
{
	my ($node) = @_;
	my $f = slurp_file($node->data_dir . '/pg_wal/00000002.history');
	return $f =~ /^1\t([0-9A-Fa-f]+\/[0-9A-Fa-f]+)\t/m ? lsn_num($1) : undef;
}

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 100)');
# a checkpoint every node has replayed: the last one before both forks,
# where pg_rewind starts reading
$n1->safe_psql('postgres', 'CHECKPOINT');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# node3 stops; node1 writes rows only node2 receives
$n3->stop('fast');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(101, 200)');
$n1->wait_for_catchup($n2, 'replay');

# --- the cluster's timeline 2: node2, after kill -9 of node1
$n1->kill9;
my ($new) = wait_leader_not($etcd, 'node1', timeout => 30);
is($new, 'node2', 'node2 (node3 is stopped) takes the leader key');
wait_ok(sub { (try_sql($n2, 'INSERT INTO t VALUES (201)'))[0] },
	'node2 accepts writes', timeout => 30);
my $hist = wait_for(
	sub { my $h = history_of($etcd); (@$h && ($h->[-1][4] // '') eq 'node2') ? $h : undef },
	timeout => 15, what => 'history to record node2 on timeline 2') // [];
note 'history: ' . JSON::PP->new->canonical->encode($hist);
my $s2 = @$hist ? $hist->[-1][1] : undef;
is($hist->[-1][0], 1, 'history: timeline 1 -> 2 (node2)') if @$hist;
is($s2, fork_of_tl2($n2), 'history records where node2\'s timeline 2 forked');

# --- node3's own timeline 2: promoted by hand, without pg_ha, one private row
my $conf = $n3->data_dir . '/postgresql.conf';
my $orig_conf = slurp_file($conf);
$n3->append_conf('postgresql.conf', "shared_preload_libraries = ''\n");
$n3->start;
is($n3->safe_psql('postgres', 'SELECT pg_promote()'), 't', 'node3 promoted by hand, pg_ha not loaded');
$n3->safe_psql('postgres', 'INSERT INTO t VALUES (-3)');
is($n3->safe_psql('postgres', 'SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)'),
	'00000002', 'node3 writes on a timeline 2 of its own');
my $p3 = fork_of_tl2($n3);
ok(defined $p3 && defined $s2 && $p3 < $s2,
	sprintf('node3\'s timeline 2 forked earlier (%s) than the cluster\'s (%s)', $p3 // 'undef', $s2 // 'undef'));
$n3->stop('fast');

# back under pg_ha, as a standby
open(my $fh, '>', $conf) or die "cannot write $conf: $!";
print $fh $orig_conf;
close $fh;
open($fh, '>', $n3->data_dir . '/standby.signal') or die "standby.signal: $!";
close $fh;
my $off = -s $n3->logfile;
$n3->start;

# --- node3 notices it left the leader's history and stops for pg_rewind
my $stopped = wait_for(sub { !postmaster_running($n3) },
	timeout => 6 * $ttl, what => 'node3 to shut down for pg_rewind');
ok($stopped, 'node3 shut postgres down by itself');
my $log3 = log_since($n3, $off);
like($log3, qr/pg_ha: diverged: /, 'node3 logged that it diverged');
ok(-e $n3->data_dir . '/pg_ha.rejoin', 'node3 left pg_ha.rejoin in its data directory');
note join("\n", grep { /pg_ha: diverged|incorrect prev-link|invalid record|requested starting point/ }
	  split /\n/, $log3);

# --- the service manager: pg_hactl rejoin --if-needed, then start
my @restarts;
my $rcv = wait_for(
	sub {
		if (my $r = supervise($n3)) { push @restarts, $r; }
		return undef unless (in_recovery($n3) // 0) == 1;
		my $r = wal_receiver($n3) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $n2->port) ? $r : undef;
	},
	timeout  => $stopped ? 90 : 15,
	interval => 0.25,
	what     => 'node3 to stream from node2');
ok($rcv, 'node3 came back as a replica streaming from node2');
note 'service manager restarts: ' . scalar(@restarts);
note "rejoin output:\n" . join("\n---\n", map { $_->{rejoin_output} } @restarts);

# node2's data, and not the row of node3's private fork
$n2->safe_psql('postgres', 'INSERT INTO t VALUES (424242)');
my $has = wait_for(
	sub { (try_sql($n3, 'SELECT count(*) FROM t WHERE id = 424242'))[3] =~ /^1/ },
	timeout => 30, what => 'node3 to replay a row written on node2');
ok($has, 'node3 replays what node2 writes');
is((try_sql($n3, 'SELECT count(*) FROM t WHERE id = -3'))[3] =~ s/\s+//gr, '0',
	'the row written on node3\'s private fork is gone');
is((try_sql($n3, 'SELECT count(*) FROM t'))[3] =~ s/\s+//gr,
	$n2->safe_psql('postgres', 'SELECT count(*) FROM t'), 'node3 has exactly node2\'s rows');
is_deeply([ map { $_->name } writable_nodes($n2, $n3) ], ['node2'], 'node2 is the only writable node');

forget_if_stopped($n1, $n2, $n3);
done_testing();
