
# pg_hactl, the command-line companion: list reads the cluster table from
# etcd, switchover moves leadership and waits for it, clone makes a new
# replica from the current leader that pg_ha then manages; bad input gets
# a clear error and exit status 1 or 2.

use strict;
use warnings;

use Test::More;
use File::Path qw(rmtree);
use JSON::PP ();
use PostgreSQL::Test::Utils;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => 5);
my @conn = ('--etcd', $etcd->endpoints, '--cluster', $n1->ha_cluster,
	'--namespace', $n1->ha_namespace);

sub hactl
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_hactl', @_ ], '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	return ($? >> 8, $out, $err);
}

# --- list
my ($rc, $out, $err) = hactl(@conn, 'list');
is($rc, 0, 'list exits 0');
like($out, qr/^node1\s+127\.0\.0\.1:\d+\s+Leader\s+running/m, 'list: node1 is the leader');
# member keys are refreshed every TTL/3: wait for node2's to catch up
$out = wait_for(sub { my (undef, $o) = hactl(@conn, 'list'); $o =~ /^node2\s+\S+\s+Replica\s+running\s+1\s+0\.0/m ? $o : undef },
	timeout => 30, what => 'list to show node2 caught up');
like($out, qr/^node2\s+\S+\s+Replica\s+running\s+1\s+0\.0/m, 'list: node2 is a replica, not lagging');
($rc, $out) = hactl('--pgdata', $n2->data_dir, 'list');
like($out, qr/^node3\s+\S+\s+Replica/m, 'list with --pgdata reads the settings from postgresql.conf');

# --- bad input
($rc, undef, $err) = hactl(@conn, 'switchover', '--candidate', 'nosuch');
is($rc, 1, 'switchover to an unknown member exits 1');
like($err, qr/no member named "nosuch"/, 'and says why');
($rc, undef, $err) = hactl(@conn, 'frobnicate');
is($rc, 2, 'an unknown command is a usage error (exit 2)');
($rc, undef, $err) = hactl('--etcd', 'ftp://x', '--cluster', 'c', 'list');
is($rc, 1, 'a bad endpoint exits 1');
like($err, qr/must start with http/, 'and says why');

# --- switchover
my $t0 = now();
($rc, $out, $err) = hactl(@conn, 'switchover', '--candidate', 'node2', '--timeout', '60');
is($rc, 0, 'switchover exits 0') or diag $err;
like($out, qr/switched over to "node2"/, 'switchover reports the new leader');
note sprintf('pg_hactl switchover took %.2f s', now() - $t0);
is(leader_of($etcd), 'node2', 'node2 holds the leader key');
wait_for(sub { (in_recovery($n1) // 0) == 1 }, timeout => 30, what => 'node1 a replica');
ok(in_recovery($n1), 'node1 is now a replica');

# --- clone a fourth node from the current leader
my $n4 = PostgreSQL::Test::Cluster->new('node4');
my $port4 = $n4->port;
my $dir4 = $n4->data_dir;
rmdir $dir4;
($rc, $out, $err) = hactl(@conn, 'clone', '--pgdata', $dir4, '--node-name', 'node4',
	'--port', $port4, '--host', '127.0.0.1');
is($rc, 0, 'clone exits 0') or diag "$out$err";
ok(-e "$dir4/standby.signal", 'the clone is configured as a standby');
like(slurp_file("$dir4/postgresql.auto.conf"), qr/primary_conninfo = '.*port=\Q${\$n2->port}\E/,
	'the clone streams from the leader');
$n4->append_conf('postgresql.conf', "pg_ha.api_listen = '127.0.0.1:" . PostgreSQL::Test::Cluster::get_free_port() . "'\n"
	. "pg_ha.metrics_listen = '127.0.0.1:" . PostgreSQL::Test::Cluster::get_free_port() . "'\n");
$n4->start;
my $m4 = wait_for(sub { my $m = member_json($etcd, 'node4'); $m && ($m->{replication_state} // '') eq 'streaming' ? $m : undef },
	timeout => 60, what => 'node4 member key, streaming');
is($m4->{role}, 'replica', 'the clone publishes itself as a replica');
is($m4->{conn_url}, "postgres://127.0.0.1:$port4/postgres", 'with its own connect address');
($rc, undef, $err) = hactl(@conn, 'clone', '--pgdata', $dir4, '--node-name', 'node4', '--port', $port4);
is($rc, 1, 'clone into an existing data directory exits 1');
like($err, qr/already holds a database cluster/, 'and says why');
$n4->stop('fast');

# --- a member key whose conn_url is not host:port is not a place to clone
# from.  Its host here smuggles a libpq option (and a quote, which would
# break the quoting of primary_conninfo): pg_hactl ignores the member, says
# so, and clones from the leader.
my $lport = $n2->port;
my $tl = member_json($etcd, 'node2')->{timeline};
$etcd->put(ha_key('members/evil'), JSON::PP::encode_json({
	conn_url => "postgres://127.0.0.1 application_name=x':$lport/postgres",
	api_url => 'http://127.0.0.1:1/patroni', role => 'replica', state => 'running',
	replication_state => 'streaming', timeline => $tl, tags => { clonefrom => JSON::PP::true } }));
my $n5 = PostgreSQL::Test::Cluster->new('node5');
my $dir5 = $n5->data_dir;
rmdir $dir5;
($rc, $out, $err) = hactl(@conn, 'clone', '--pgdata', $dir5, '--node-name', 'node5',
	'--port', $n5->port, '--host', '127.0.0.1');
is($rc, 0, 'clone exits 0 with a bad member key in the cluster') or diag "$out$err";
note "pg_hactl clone: $out$err";
unlike("$out$err", qr/cloning from "evil"/, 'the member with the bad conn_url is not cloned from');
like($err, qr/ignoring member "evil": its conn_url is not/, 'pg_hactl says why it ignores it');
like($out, qr/cloned "node5" from "node2"/, 'the clone comes from the leader');
unlike(slurp_file("$dir5/postgresql.auto.conf"), qr/application_name=x'/, 'nothing of the bad value reached primary_conninfo');
$etcd->del(ha_key('members/evil'));
rmtree($dir5);

forget_if_stopped($n1, $n2, $n3);
done_testing();
