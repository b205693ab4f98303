
# Rejoin of a former primary that diverged.  node1's HA worker is stopped
# (SIGSTOP) so its lease runs out and another node takes over; node1 then
# writes WAL nobody else gets (a segment-switch record, which no write
# fence stops).  When the worker runs again node1
# demotes itself, finds it replayed its old timeline past the fork point,
# and shuts down for pg_rewind.  The harness, as the service manager,
# runs "pg_hactl rejoin --if-needed" and starts it: node1 comes back as a
# replica of the new leader, rewound, with node-local settings kept.

use strict;
use warnings;

use Test::More;
use PostgreSQL::Test::Utils;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);
my %by_name = map { $_->name => $_ } ($n1, $n2, $n3);

$n1->safe_psql('postgres', 'CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)');
my $lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $lsn) for ($n2, $n3);
# a node-local setting that pg_rewind would overwrite with the leader's
$n1->append_conf('postgresql.conf', "work_mem = '7MB'\n");
$n1->reload;

my $worker = $n1->safe_psql('postgres', 'SELECT worker_pid FROM pg_ha.status()');
ok($worker > 0, "node1's HA worker runs (pid $worker)");
kill 'STOP', $worker;

# until the lease runs out writes still commit (and stream); then refused
my ($new_leader) = (undef);
wait_for(
	sub {
		try_sql($n1, 'INSERT INTO t SELECT generate_series(1, 20000)', timeout => 10);
		my $l = leader_of($etcd) // '';
		$new_leader = $l if $l ne '' && $l ne 'node1';
		return $new_leader;
	},
	timeout => 60, interval => 0.2, what => 'another node to take the leader key');
ok($new_leader, "$new_leader took over while node1's worker was stopped");
my ($ok) = try_sql($n1, 'INSERT INTO t VALUES (-1)');
ok(!$ok, 'node1 refuses commits without its lease');
my $new = $by_name{$new_leader};
wait_for(sub { !in_recovery($new) }, timeout => 30, what => "$new_leader promoted");
# WAL that no fence stops (a segment switch record): node1 now has WAL on
# timeline 1 past the point where the new leader forked.  (No checkpoint:
# recycling the segment of the fork point would leave pg_rewind without the
# WAL it reads, and pg_hactl would re-clone instead.)
try_sql($n1, 'SELECT pg_switch_wal()', timeout => 10);

kill 'CONT', $worker;

my @restarts;
my $rcv = wait_for(
	sub {
		if (my $r = supervise($n1)) { push @restarts, $r; }
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		# on the new timeline: a diverged node1 may connect for a moment
		# on its old one before the worker stops it for pg_rewind
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $new->port
			  && $r->{received_tli} > 1) ? $r : undef;
	},
	timeout => 120, interval => 0.25, what => "node1 to stream timeline 2 from $new_leader");
ok($rcv, "node1 rejoined as a replica streaming from $new_leader");
ok(scalar(grep { $_->{rejoin_rc} == 0 } @restarts) >= 1,
	'the service manager ran pg_hactl rejoin successfully');
like(join("\n", map { $_->{rejoin_output} } @restarts), qr/rewound .* to "\Q$new_leader\E"/,
	'pg_hactl rejoin rewound node1 to the new leader');
like(slurp_file($n1->logfile), qr/pg_ha: diverged: /, 'node1 logged why it stopped');
is($n1->safe_psql('postgres', 'SHOW work_mem'), '7MB', 'node-local settings survived pg_rewind');
ok(!-e $n1->data_dir . '/pg_ha.rejoin', 'the rejoin marker is gone');

# same data as the leader
$new->safe_psql('postgres', 'INSERT INTO t VALUES (424242)');
my $target = $new->lsn('insert');
$new->wait_for_catchup($n1, 'replay', $target);
is($n1->safe_psql('postgres', 'SELECT count(*) FROM t'),
	$new->safe_psql('postgres', 'SELECT count(*) FROM t'), 'node1 has exactly the leader\'s rows');
is(scalar(writable_nodes($n1, $n2, $n3)), 1, 'exactly one writable node');

forget_if_stopped($n1, $n2, $n3);
done_testing();
