
# A standby never races for the leader key unless the cluster's
# `initialize` key exists and holds its own system identifier (issue 9,
# defect 8).  Only a primary initializes a cluster.
#
# The cluster runs in namespace /pg.
#
# A. node3, a replica, is restarted with pg_ha.namespace = '/service' (the
#    default: a forgotten line, a typo).  Under /service there is no
#    cluster at all.  Required: node3 stays a replica for 3 TTL, never holds
#    a leader key anywhere in etcd, accepts no write, does not answer 200 on
#    /primary, and says why (log or pg_ha.status(): /initialize|no cluster/i).
#
# B. node4, a replica of another database (other1, initdb'ed separately),
#    is pointed at /pg with a name of its own; it is far ahead in LSN.
#    The leader dies.  Required: node4 never holds the leader key; node2,
#    which has the cluster's data, takes over with every row; node4 stays a
#    replica.  Log regex for node4 (informational): /system identifier|initialize/i.

use strict;
use warnings;

use Test::More;
use File::Basename ();
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my %pg   = (namespace => '/pg');
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, %pg);
is(leader_of($etcd, %pg), 'node1', 'node1 leads the cluster in /pg');
my $sysid = $n1->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
is($etcd->get($n1->ha_key('initialize')), $sysid,
	"/pg/pgtest/initialize holds the cluster's system identifier ($sysid)");

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 1000)');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# Lines of the test's own sessions carry its file name (application_name).
my $own = File::Basename::basename($0);
sub server_log
{
	my ($node, $off) = @_;
	return join "\n", grep { !/\Q$own\E/ } split /\n/, log_since($node, $off);
}

# Every leader key in etcd that ever named $name since the watch started.
sub leader_keys_held_by
{
	my ($watch, $name) = @_;
	return map { $_->{key} }
	  grep { $_->{type} eq 'PUT' && $_->{key} =~ m{/leader$} && $_->{value} eq $name }
	  $watch->events;
}

# ------------------------------------------------- A. wrong namespace
my $all = key_watch($etcd, '/', prefix => 1);
my $off3 = -s $n3->logfile;
$n3->append_conf('postgresql.conf', "pg_ha.namespace = '/service'\n");
$n3->restart;
my $t0 = now();
my (@primary_at, @health200_at);
while (now() - $t0 < 3 * $ttl)
{
	my $t = now();
	my $r = in_recovery($n3);
	push @primary_at, sprintf('%.2f s', $t - $t0) if defined $r && !$r;
	push @health200_at, sprintf('%.2f s', $t - $t0)
	  if health_status($n3, '/primary') == 200;
	my $left = 0.2 - (now() - $t);
	usleep(int($left * 1e6)) if $left > 0;
}
is(scalar @primary_at, 0,
	'A: node3, restarted in namespace /service, stays a replica for 3 TTL')
  or diag "A: node3 out of recovery at: @primary_at[0 .. ($#primary_at > 4 ? 4 : $#primary_at)]";
my @held = leader_keys_held_by($all, 'node3');
is_deeply(\@held, [], 'A: node3 never holds a leader key anywhere in etcd');
my $holders = leader_holders($etcd, '/');
note 'A: leader keys now: ' . join(', ', map { "$_=$holders->{$_}" } sort keys %$holders);
ok(!(try_sql($n3, 'CREATE TABLE a_write (i int)'))[0], 'A: node3 accepts no write');
is(scalar @health200_at, 0, 'A: node3 never answers 200 on /primary')
  or diag "A: /primary 200 at: @health200_at[0 .. ($#health200_at > 4 ? 4 : $#health200_at)]";
is(leader_of($etcd, %pg), 'node1', 'A: node1 still leads /pg');
my $st3 = eval { $n3->ha_status } // {};
my $why = server_log($n3, $off3) . "\n" . join(' ', map { $_ // '' } @$st3{qw(state last_error)});
like($why, qr/initialize|no cluster/i, 'A: node3 says why it does not take over');
note 'A: node3 pg_ha.status(): state ' . ($st3->{state} // '?') . ', last_error '
  . ($st3->{last_error} // '');
note "A: node3 pg_ha log lines:\n  "
  . join("\n  ", grep { /pg_ha/ } split /\n/, server_log($n3, $off3));
$n3->stop('immediate');

# ------------------------------------------- B. another database's replica
# other1: a separately initdb'ed primary running its own cluster in
# /other; far ahead of node1 in WAL.
my $other = PgHa::Cluster::new_node(
	name       => 'other1',
	etcd       => $etcd,
	ttl        => $ttl,
	namespace  => '/other',
	start      => 1,
	extra_conf => $PgHa::Failover::COMMON_CONF);
wait_for(sub { (leader_of($etcd, namespace => '/other') // '') eq 'other1' },
	timeout => 30, what => 'other1 to lead /other', fatal => 1);
my $n1_lsn = $n1->wal_lsn_bytes;
$other->safe_psql('postgres', 'CREATE TABLE filler (i int)');
for (1 .. 20)
{
	last if $other->wal_lsn_bytes > $n1_lsn + 64 * 1024 * 1024;
	$other->safe_psql('postgres', 'INSERT INTO filler VALUES (1); SELECT pg_switch_wal()');
}
my $node4 = PgHa::Cluster::new_replica(
	name       => 'node4',
	from       => $other,
	start      => 0,
	extra_conf => $PgHa::Failover::COMMON_CONF . "pg_ha.namespace = '/pg'\n");
my $off4 = -s $node4->logfile // 0;
$node4->start;
# node4's position as its own server reports it: a standby of another
# database publishes nothing under /pg (it is misconfigured there)
my $lsn4 = wait_for(sub { my $l = $node4->wal_lsn_bytes; $l ? $l : undef },
	timeout => 30, what => 'node4 to report its position');
my $m2 = member_json($etcd, 'node2', %pg) // {};
note sprintf('B: node4 is at %s; node2 publishes %s under /pg',
	$lsn4 // '?', $m2->{xlog_location} // '?');
cmp_ok($lsn4 // 0, '>', $m2->{xlog_location} // 0,
	'B: precondition: node4 is ahead of node2 in LSN');
isnt($node4->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
	$sysid, 'B: precondition: node4 has another system identifier');

my $lw = key_watch($etcd, $n1->ha_key('leader'));
$n1->kill9;
my ($new, $secs) = wait_leader_not($etcd, 'node1', timeout => 6 * $ttl, %pg);
note sprintf('B: leader key of /pg taken by %s %.1f s after kill -9', $new // 'nobody', $secs);
# let a late winner show itself
sleep $ttl;
is(leader_of($etcd, %pg), 'node2', 'B: node2, which has the cluster\'s data, leads');
my @held4 = leader_keys_held_by($lw, 'node4');
is_deeply(\@held4, [], 'B: node4 never holds the leader key');
is(in_recovery($node4), 1, 'B: node4 stays a replica');
wait_ok(sub { (try_sql($n2, 'INSERT INTO t VALUES (1001)'))[0] },
	'B: node2 accepts writes', timeout => 30);
is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), '1001',
	'B: node2 has every row');
is_deeply([ map { $_->name } writable_nodes($n2, $node4) ], ['node2'],
	'B: exactly one writable node in the cluster: node2');
note "B: node4 pg_ha log lines:\n  "
  . join("\n  ", grep { /pg_ha/ } split /\n/, server_log($node4, $off4));

$all->stop;
$lw->stop;
forget_if_stopped($n1, $n2, $n3, $node4, $other);
done_testing();
