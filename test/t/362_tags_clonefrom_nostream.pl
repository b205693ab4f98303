
# Patroni's tags clonefrom and nostream, as pg_ha.clonefrom and
# pg_ha.nostream:
#  - pg_hactl clone takes its base backup from a streaming standby tagged
#    clonefrom, not from the leader, and the clone then streams from the
#    leader;
#  - a standby with nostream stops its WAL receiver (primary_conninfo
#    emptied) and catches up again by streaming when it is turned off.
# Both tags appear in the member key, as Patroni publishes them.

use strict;
use warnings;

use Test::More;
use PostgreSQL::Test::Utils;
use PgHa::Cluster;
use PgHa::Etcd;
use PgHa::Failover;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => 5);
my @conn = ('--etcd', $etcd->endpoints, '--cluster', $n1->ha_cluster,
	'--namespace', $n1->ha_namespace);
$n1->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 100)');

sub set_and_reload
{
	my ($node, $setting) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}
sub tags_of
{
	my ($name, $tag) = @_;
	return wait_for(sub { my $m = member_json($etcd, $name); $m && exists $m->{tags}{$tag} ? $m->{tags} : undef },
		timeout => 15, what => "tag $tag of $name");
}

# --- clonefrom
set_and_reload($n3, 'pg_ha.clonefrom = on');
my $tags = tags_of('node3', 'clonefrom');
is($tags && $tags->{clonefrom} ? 1 : 0, 1, "node3's member key carries tags.clonefrom = true");

my $n4 = PostgreSQL::Test::Cluster->new('node4');
my $port4 = $n4->port;
my $dir4 = $n4->data_dir;
rmdir $dir4;
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_hactl', @conn, 'clone', '--pgdata', $dir4, '--node-name', 'node4',
		'--port', $port4, '--host', '127.0.0.1' ], '>', \$out, '2>', \$err, IPC::Run::timeout(120));
is($? >> 8, 0, 'clone exits 0') or diag "$out$err";
like("$out$err", qr/cloning from "node3" \(tag clonefrom\) instead of the leader "node1"/,
	'clone says it takes the backup from node3');
like(slurp_file("$dir4/backup_label"), qr/BACKUP FROM: standby/, 'the base backup was taken from a standby');
like(slurp_file("$dir4/postgresql.auto.conf"), qr/primary_conninfo = '.*port=\Q${\$n1->port}\E/,
	'the clone is set to stream from the leader');
$n4->append_conf('postgresql.conf', "pg_ha.api_listen = '127.0.0.1:" . PostgreSQL::Test::Cluster::get_free_port() . "'\n"
	. "pg_ha.metrics_listen = ''\n");
$n4->start;
my $r4 = wait_for(sub { my $r = wal_receiver($n4); $r && $r->{status} eq 'streaming' ? $r : undef },
	timeout => 60, what => 'node4 streaming');
is($r4 && $r4->{sender_port}, $n1->port, 'node4 streams from the leader');
is($n4->safe_psql('postgres', 'SELECT count(*) FROM t'), '100', 'node4 has the rows');
$n4->stop;

# without a qualifying clonefrom member: the leader
set_and_reload($n3, 'pg_ha.clonefrom = off');
wait_for(sub { my $m = member_json($etcd, 'node3'); $m && !($m->{tags} // {})->{clonefrom} }, timeout => 15,
	what => 'clonefrom gone from node3');
my $n5 = PostgreSQL::Test::Cluster->new('node5');
rmdir $n5->data_dir;
IPC::Run::run([ 'pg_hactl', @conn, 'clone', '--pgdata', $n5->data_dir, '--node-name', 'node5',
		'--port', $n5->port, '--host', '127.0.0.1' ], '>', \$out, '2>', \$err, IPC::Run::timeout(120));
like($out, qr/cloned "node5" from "node1"/, 'no clonefrom member: clone takes the backup from the leader');

# --- nostream
my $off = -s $n2->logfile;
set_and_reload($n2, 'pg_ha.nostream = on');
ok(wait_for(sub { !defined wal_receiver($n2) ? 1 : undef }, timeout => 30, what => 'no WAL receiver on node2'),
	'nostream: node2 has no WAL receiver');
is($n2->safe_psql('postgres', 'SHOW primary_conninfo'), '', 'nostream: primary_conninfo is empty');
$tags = tags_of('node2', 'nostream');
is($tags && $tags->{nostream} ? 1 : 0, 1, "node2's member key carries tags.nostream = true");
like(log_since($n2, $off), qr/not streaming \(pg_ha\.nostream is on\)/, 'node2 logs why it stopped streaming');
$n1->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(101, 200)');
my $lsn = $n1->lsn('insert');
sleep 2;
is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), '100', 'nostream: node2 does not receive new rows by streaming');

set_and_reload($n2, 'pg_ha.nostream = off');
my $r2 = wait_for(sub { my $r = wal_receiver($n2); $r && $r->{status} eq 'streaming' ? $r : undef },
	timeout => 30, what => 'node2 streaming again');
is($r2 && $r2->{sender_port}, $n1->port, 'nostream off: node2 streams from the leader again');
$n1->wait_for_catchup($n2, 'replay', $lsn);
is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), '200', 'and catches up');

done_testing();
