
# A fenced primary must look read-only to clients (issue 9, defect 14), so
# that libpq multi-host clients and pools move to the new leader instead of
# staying on the old one.  node1 is cut from etcd (PgHa::Proxy, as in 301)
# while clients can still reach it; node2 takes over.
#
#   - with target_session_attrs=read-write and node1 listed first, libpq
#     connects to node1 before the cut and to node2 once node2 leads, though
#     node1 still accepts connections;
#   - a new session on the fenced node1 reports default_transaction_read_only
#     = on, and can still read and call pg_ha.status();
#   - a session opened before the cut keeps reading, and is ended when it
#     tries to write: the client gets pg_ha's refusal, then a closed
#     connection.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Proxy;
use PgHa::Test;

my $ttl   = 5;
my $etcd  = PgHa::Etcd->new(members => 1);
my $proxy = PgHa::Proxy->new(target => $etcd->member(0)->{client_port},
	name => 'node1_etcd');
my $direct = $etcd->endpoints;

my ($n1, $n2) = ha_cluster(
	etcd         => $etcd,
	endpoints    => $proxy->url,
	ttl          => $ttl,
	nodes        => 2,
	replica_conf => "pg_ha.etcd_endpoints = '$direct'\n");

$n1->safe_psql('postgres', 'CREATE TABLE t (id int)');

# The port a libpq multi-host connection asking for a read-write server
# lands on, node1 listed first; undef if it connects nowhere.
my $multi = sprintf(
	'host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres '
	  . 'target_session_attrs=read-write connect_timeout=5',
	$n1->port, $n2->port);
sub read_write_port
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAt', '-d', $multi, '-c', 'SHOW port' ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(30));
	note "multi-host psql: $err" if $err ne '';
	chomp $out;
	return $out eq '' ? undef : $out;
}

is(read_write_port(), $n1->port,
	'before the cut a read-write multi-host client lands on node1');

# A session opened before the cut, as a pool would hold it.
my ($in, $out, $err) = ('', '', '');
my $old = IPC::Run::start([ 'psql', '-XAt', '-d', $n1->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
sub old_session
{
	my ($sql, $expect) = @_;
	$in .= "$sql\n";
	my $t0 = now();
	while ($out !~ $expect && now() - $t0 < 20)
	{
		$old->pump_nb;
		usleep(50_000);
	}
	return $out =~ $expect;
}
ok(old_session("SELECT 'before the cut';", qr/before the cut/),
	'a session is open on node1 before the cut');

# --- cut node1 from etcd; node2 takes over
$proxy->cut;
my $t_cut = now();
wait_ok(sub { $n1->safe_psql('postgres', 'SELECT fenced FROM pg_ha.status()') eq 't' },
	'node1 fences itself after the cut', timeout => 4 * $ttl);
my ($leader) = wait_leader_not($etcd, 'node1', timeout => 4 * $ttl + 10);
is($leader, 'node2', 'node2 takes the leader key');
wait_ok(sub { (try_sql($n2, 'INSERT INTO t VALUES (2)'))[0] },
	'node2 accepts writes', timeout => 30, interval => 0.1);
note sprintf('node2 writable %.2f s after the cut', now() - $t_cut);

# --- new sessions on node1: read-only, but working
is($n1->safe_psql('postgres', 'SHOW default_transaction_read_only'), 'on',
	'a new session on the fenced node1 starts with default_transaction_read_only = on');
is($n1->safe_psql('postgres', 'SELECT count(*) FROM t'), '0',
	'reads work on the fenced node1');
is($n1->safe_psql('postgres', 'SELECT role FROM pg_ha.status()'), 'primary',
	'pg_ha.status() works on the fenced node1');

is(read_write_port(), $n2->port,
	'after the failover a read-write multi-host client lands on node2, not the fenced node1');

# --- the old session: reads still work, a write ends it
ok(old_session("SELECT 'reading while fenced';", qr/reading while fenced/),
	'the session opened before the cut still reads');
$in .= "INSERT INTO t VALUES (1);\nSELECT 'still here';\n";
eval { $old->finish; };
my $rc = $@ ? -1 : $? >> 8;
note "old session: rc $rc\nstdout:\n$out\nstderr:\n$err";
like($err, qr/pg_ha: write refused/, 'its write is refused by pg_ha');
like($err, qr/server closed the connection unexpectedly|connection to server was lost/,
	'and its session is ended');
unlike($out, qr/still here/, 'nothing runs in that session after the refused write');
like(log_since($n1, 0), qr/pg_ha: ending a session that tried to write/,
	'node1 logs why it ended the session');

# A new session that tries to write is ended the same way.
my ($ok, $state, $werr) = try_sql($n1, "INSERT INTO t VALUES (3);\nSELECT 'still here';");
ok(!$ok && $state eq '25006', 'a write in a new session on node1 is refused (25006)');
like($werr, qr/server closed the connection unexpectedly|connection to server was lost/,
	'and that session is ended too');

is($n2->safe_psql('postgres', 'SELECT count(*) FROM t'), '1',
	'only the write on node2 exists on node2');

forget_if_stopped($n1, $n2);
done_testing();
