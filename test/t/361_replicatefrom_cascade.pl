
# Cascading replication with pg_ha.replicatefrom (Patroni's tag
# replicatefrom, Pigsty's pg_upstream): node3 streams from node2 instead of
# the leader, falls back to the leader while node2 is down and returns to
# node2 when it is back; in a failover that promotes node2, node3 keeps
# streaming from it onto the new timeline and loses nothing.  The member
# key carries the tag, so patronictl topology draws node3 under node2.

use strict;
use warnings;

use JSON::PP ();
use Test::More;
use PgHa::Cluster;
use PgHa::Etcd;
use PgHa::Failover;
use PgHa::Patroni qw(patronictl patronictl_available);
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
# node3 never takes over: the failover below must promote node2, the
# member node3 cascades from
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);
$n3->safe_psql('postgres', 'ALTER SYSTEM SET pg_ha.nofailover = on');
$n3->safe_psql('postgres', 'SELECT pg_reload_conf()');

$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
my $next = 1;
sub write_rows
{
	my ($node, $n) = @_;
	$node->safe_psql('postgres', "INSERT INTO t SELECT generate_series($next, " . ($next + $n - 1) . ')');
	$next += $n;
	return $node->lsn('insert');
}
sub replayed
{
	my ($node, $lsn) = @_;
	return wait_for(sub { (try_sql($node, "SELECT pg_last_wal_replay_lsn() >= '$lsn'"))[3] =~ /^t/ ? 1 : undef },
		timeout => 30, what => $node->name . " to replay $lsn");
}
sub upstream_port
{
	my ($node) = @_;
	my $r = wal_receiver($node) or return undef;
	return $r->{status} eq 'streaming' ? $r->{sender_port} : undef;
}
sub streams_from
{
	my ($node, $from, $what) = @_;
	return ok(wait_for(sub { (upstream_port($node) // 0) == $from->port ? 1 : undef },
			timeout => 30, what => $what), $what);
}

# --- replicatefrom = node2: node3 cascades
my $off = -s $n3->logfile;
$n3->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.replicatefrom = 'node2'");
$n3->safe_psql('postgres', 'SELECT pg_reload_conf()');
streams_from($n3, $n2, 'node3 streams from node2');
ok(wait_for(sub { log_since($n3, $off) =~ /following replicatefrom member "node2"/ ? 1 : undef },
		timeout => 10, what => 'the log line'), 'node3 logs that it follows replicatefrom member node2');
ok(wait_for(sub { ($n2->safe_psql('postgres', "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node3'")) eq '1' ? 1 : undef },
		timeout => 10, what => 'node2 sending to node3'), 'node2 has a WAL sender for node3');
is($n1->safe_psql('postgres', "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node3'"),
	'0', 'the leader no longer sends to node3');
ok(replayed($n3, write_rows($n1, 100)), 'rows written on the leader reach node3 through node2');
my $m3 = wait_for(sub { my $m = member_json($etcd, 'node3'); ($m->{tags}{replicatefrom} // '') eq 'node2' ? $m : undef },
	timeout => 10, what => 'the tag in the member key');
is($m3 && $m3->{tags}{replicatefrom}, 'node2', "node3's member key carries tags.replicatefrom = node2");

SKIP:
{
	skip 'patronictl not installed', 1 unless patronictl_available();
	my (undef, $out) = patronictl($etcd, 'topology');
	note $out;
	like($out, qr/\+ node2 .*\n.*\|\s+\+ node3 /, 'patronictl topology draws node3 under node2');
}

# --- the upstream goes away: node3 streams from the leader meanwhile
$off = -s $n3->logfile;
$n2->kill9;
streams_from($n3, $n1, 'node2 killed: node3 falls back to the leader');
like(log_since($n3, $off), qr/not streaming from replicatefrom member "node2": [^\n]*/,
	'node3 logs why it does not use node2');
ok(replayed($n3, write_rows($n1, 100)), 'meanwhile rows reach node3 from the leader');

$n2->start;
streams_from($n3, $n2, 'node2 back and streaming: node3 returns to it');
ok(replayed($n3, write_rows($n1, 100)), 'rows reach node3 through node2 again');

# --- a name that is no member: the leader
$n3->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.replicatefrom = 'nosuch'");
$n3->safe_psql('postgres', 'SELECT pg_reload_conf()');
streams_from($n3, $n1, 'replicatefrom naming no member: node3 streams from the leader');
$n3->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.replicatefrom = 'node2'");
$n3->safe_psql('postgres', 'SELECT pg_reload_conf()');
streams_from($n3, $n2, 'replicatefrom = node2 again');

# --- failover: the leader dies, node2 (node3's upstream) takes over
my $lsn = write_rows($n1, 1000);
ok(replayed($_, $lsn), $_->name . ' replayed every row before the kill') for ($n2, $n3);
my $rows = $next - 1;
$n1->kill9;
my ($leader) = wait_leader_not($etcd, 'node1', timeout => 60);
is($leader, 'node2', 'node2 takes over (node3 has nofailover)');
ok(wait_for(sub { in_recovery($n2) == 0 ? 1 : undef }, timeout => 30, what => 'node2 promoted'),
	'node2 is promoted');
ok(wait_for(sub { my $r = wal_receiver($n3);
			$r && $r->{status} eq 'streaming' && $r->{sender_port} == $n2->port && $r->{received_tli} == 2 ? 1 : undef },
		timeout => 30, what => 'node3 on timeline 2 from node2'),
	'node3 streams from node2, now the leader, on timeline 2');
ok(wait_for(sub { (try_sql($n2, 'SELECT 1'))[0] && $n2->safe_psql('postgres', 'SELECT NOT pg_is_in_recovery()') eq 't' },
		timeout => 30, what => 'writable node2'), 'node2 is writable');
$lsn = write_rows($n2, 100);
ok(replayed($n3, $lsn), 'rows written on the new leader reach node3');
is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), $rows + 100, 'the new leader has every row');
is($n3->safe_psql('postgres', 'SELECT count(*) FROM t'), $rows + 100, 'node3 has every row: nothing lost');

done_testing();
