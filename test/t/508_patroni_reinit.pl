
# POST /reinitialize and the real `patronictl reinit` (issue 13): a replica
# is re-cloned from the cluster, as on Patroni.  The node records the
# request in its data directory and shuts down; the service manager (the
# test acts as pg_ha@.service) runs `pg_hactl rejoin --if-needed`, which
# re-checks in etcd that another node leads and only then replaces the data
# directory with a fresh base backup (from a clonefrom member, else the
# leader).  Refused on the leader, and by pg_hactl when no other node holds
# the leader key: the data directory is then left as it is.  Without
# credentials: 401 and nothing happens.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PostgreSQL::Test::Utils;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, nodes => 3, extra_conf => api_auth_conf());
$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 100)');

# A file only this node's data directory holds: a fresh base backup does
# not bring it.
sub probe { return $_[0]->data_dir . '/reinit_probe_' . $_[0]->name; }
append_to_file(probe($_), $_->name . "\n") for ($n1, $n2);

sub wait_down
{
	my ($node) = @_;
	return wait_for(sub { postmaster_running($node) ? undef : 1 }, timeout => 60, what => $node->name . ' down');
}

sub rows_on
{
	my ($node, $want) = @_;
	return wait_for(sub { my ($ok, undef, undef, $n) = try_sql($node, 'SELECT count(*) FROM t'); $ok && $n eq $want },
		timeout => 60, what => $node->name . " to have $want rows");
}

# --- without credentials: 401, and nothing happens
my $r = api_request($n2, 'POST', '/reinitialize');
is($r->{code}, '401', 'POST /reinitialize without credentials: 401');
is(api_request($n2, 'POST', '/reinitialize', body => { force => JSON::PP::true })->{code}, '401',
	'with a body, still 401');
sleep 2;
ok(postmaster_running($n2), 'node2 was not shut down');
ok(-e probe($n2), "node2's data directory is untouched");
ok(!-e $n2->data_dir . '/pg_ha.reinitialize', 'no reinitialize was recorded');

# --- a bad body: 400
$r = api_request($n2, 'POST', '/reinitialize', auth => 1, body => '[true]');
is($r->{code}, '400', 'a body that is not a JSON object: 400');
ok(postmaster_running($n2), 'node2 still runs');

# --- the leader refuses, and keeps leading with its data
$r = api_request($n1, 'POST', '/reinitialize', auth => 1, body => { force => JSON::PP::true });
is($r->{code}, '503', 'POST /reinitialize on the leader: 503');
like($r->{body}, qr/I am the leader, can not reinitialize/, "in Patroni's words");
my ($ok, undef, $stderr) = try_sql($n1, 'SELECT pg_ha.reinitialize()');
ok(!$ok, 'pg_ha.reinitialize() on the leader fails');
like($stderr // '', qr/leader/, 'and says the leader cannot be reinitialized');
SKIP:
{
	skip 'patronictl not installed', 1 unless patronictl_available();
	my ($rc, $out) = patronictl($etcd, 'reinit', 'pgtest', 'node1', '--force');
	note $out;
	like($out, qr/No replica among provided members/, 'patronictl reinit of the leader: patronictl refuses too');
}
sleep 2;
ok(postmaster_running($n1), 'node1 runs');
is(leader_of($etcd), 'node1', 'node1 still leads');
is(in_recovery($n1), 0, 'node1 is still the primary');
ok(-e probe($n1), "node1's data directory is untouched");
ok(!-e $n1->data_dir . '/pg_ha.reinitialize', 'no reinitialize was recorded on node1');

# --- a switchover that names the replica: the replica may be promoted, so
# it refuses to be wiped.  Accepting would leave the switchover waiting on a
# node that declines the leader key (one TTL without a leader).
my @t = gmtime(time + 3600);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02d+00:00', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
$r = api_request($n1, 'POST', '/switchover', auth => 1,
	body => { leader => 'node1', candidate => 'node2', scheduled_at => $at });
is($r->{code}, '202', 'a switchover to node2 is scheduled');
sleep 3;    # node2's HA worker sees the failover key through its watch
$r = api_request($n2, 'POST', '/reinitialize', auth => 1);
is($r->{code}, '503', 'POST /reinitialize on the candidate of a pending switchover: 503');
like($r->{body}, qr/I may be promoted, can not reinitialize/, 'it may be promoted');
($ok, undef, $stderr) = try_sql($n2, 'SELECT pg_ha.reinitialize()');
ok(!$ok, 'pg_ha.reinitialize() on the candidate fails');
like($stderr // '', qr/names it as the candidate/, 'and names the switchover as the reason');
ok(postmaster_running($n2), 'node2 still runs');
ok(!-e $n2->data_dir . '/pg_ha.reinitialize', 'no reinitialize was recorded on node2');
is(api_request($n1, 'DELETE', '/switchover', auth => 1)->{code}, '200', 'the switchover is cancelled');

# --- patronictl reinit of a replica: re-cloned, from the clonefrom member
$n3->safe_psql('postgres', 'ALTER SYSTEM SET pg_ha.clonefrom = on');
$n3->reload;
wait_for(sub { my $m = member_json($etcd, 'node3'); $m && ($m->{tags} // {})->{clonefrom} },
	timeout => 15, what => 'tags.clonefrom on node3', fatal => 1);
my $off = -s $n2->logfile;
my $svc;
SKIP:
{
	skip 'patronictl not installed', 14 unless patronictl_available();
	my ($rc, $out) = patronictl($etcd, 'reinit', 'pgtest', 'node2', '--force');
	note $out;
	like($out, qr/Success: reinitialize for member node2/, 'patronictl reinit node2: success');
	ok(wait_down($n2), 'node2 shut down');
	like(log_since($n2, $off), qr/reinitialize requested over the API/, 'node2 logs why it shut down');
	$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(101, 200)');

	$svc = supervise($n2);
	ok($svc && $svc->{started}, 'the service manager started node2 again');
	like($svc->{rejoin_output}, qr/cloning from "node3" \(tag clonefrom\)/,
		'pg_hactl took the base backup from the clonefrom member');
	ok(!-e probe($n2), "node2's data directory was re-cloned: the file only it had is gone");
	like(slurp_file($n2->data_dir . '/backup_label.old'), qr/BACKUP FROM: standby/,
		'its data directory comes from a base backup of a standby');
	ok(!-e $n2->data_dir . '.pg_hactl-old', 'the old data directory was removed after the clone');
	ok(!-e $n2->data_dir . '/pg_ha.reinitialize', 'the request is done');
	my $rcv = wait_for(sub { my $w = wal_receiver($n2); $w && $w->{status} eq 'streaming' ? $w : undef },
		timeout => 60, what => 'node2 streaming');
	is($rcv && $rcv->{sender_port}, $n1->port, 'node2 streams from the leader again');
	$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(201, 300)');
	ok(rows_on($n2, 300), "node2 has every row written on the leader, before, during and after");
	is(leader_of($etcd), 'node1', 'node1 still leads');
	is(in_recovery($n1), 0, 'node1 is still the primary');
	ok(-e probe($n1), "node1's data directory is untouched");
}

# --- pg_ha.reinitialize(from_leader => true) on the replica: from the leader
append_to_file(probe($n2), "node2 again\n");
$off = -s $n2->logfile;
try_sql($n2, 'SELECT pg_ha.reinitialize(from_leader => true)');
ok(wait_down($n2), 'pg_ha.reinitialize() shut node2 down');
like(log_since($n2, $off), qr/reinitialize requested by pg_ha\.reinitialize\(\)/, 'node2 logs why');
$svc = supervise($n2);
ok($svc && $svc->{started}, 'node2 started again');
like($svc && $svc->{rejoin_output}, qr/re-cloned \S+ from "node1"/, 'from_leader: cloned from the leader');
ok(!-e probe($n2), "node2's data directory was re-cloned again");
like(slurp_file($n2->data_dir . '/backup_label.old'), qr/BACKUP FROM: primary/,
	'this time from a base backup of the primary');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(301, 400)');
my $rows = $n1->safe_psql('postgres', 'SELECT count(*) FROM t');
ok(rows_on($n2, $rows), "node2 follows the leader with every row ($rows)");

# --- no other leader: pg_hactl refuses and leaves the data directory as it is
# A request left in the leader's data directory (written by hand here: the
# API refuses on the leader) meets a restart that keeps the leader key.
append_to_file($n1->data_dir . '/pg_ha.reinitialize', "reason=left over\n");
try_sql($n1, "SELECT pg_ha.restart('reinit test')");
ok(wait_down($n1), 'node1 shut down for a restart');
$svc = supervise($n1);
is($svc && $svc->{rejoin_rc}, 1, 'pg_hactl rejoin refuses the re-clone while the leader key names this node');
like($svc && $svc->{rejoin_output}, qr/no other node holds the leader key/, 'and says why');
ok(!($svc && $svc->{started}), 'postgres was not started');
ok(-e probe($n1), "node1's data directory is intact");
ok(-e $n1->data_dir . '/PG_VERSION', 'its cluster files are in place');
ok(!-e $n1->data_dir . '.pg_hactl-old', 'nothing was moved aside');
unlink $n1->data_dir . '/pg_ha.reinitialize';
$svc = supervise($n1);
ok($svc && $svc->{started}, 'without the request, node1 starts');
ok(wait_for(sub { my $l = leader_of($etcd); $l && grep { (in_recovery($_) // 1) == 0 } $n1, $n2, $n3 },
		timeout => 60, what => 'a leader'), 'the cluster has a leader');
ok(rows_on($n1, $rows), "node1 kept its rows ($rows)");

done_testing();
