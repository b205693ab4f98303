
# The synchronous standby dies (issue 12).
#
#  on:     kill -9 of the sync standby under a write load (pgbench): commits
#          stall until the leader names the other replica, then carry on;
#          the sync key moves to it.  No client sees an error.
#  strict: with the last replica killed, a commit waits rather than being
#          acknowledged without a standby; pg_ha.status() and the log say
#          why; the commit completes once a replica is back.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use IPC::Run ();
use File::Temp ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni qw(config_set);
use PgHa::Test;
use PostgreSQL::Test::Utils qw(slurp_file);

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	extra_conf => "pg_ha.synchronous_mode = on\n");

# node2 wins the tie-break by name: it becomes the synchronous standby
wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
$n1->safe_psql('postgres',
	'CREATE TABLE w (id bigserial, at timestamptz DEFAULT clock_timestamp())');

# ---- on: kill -9 the synchronous standby under load ----
my $script = File::Temp->new(SUFFIX => '.sql');
print $script "INSERT INTO w DEFAULT VALUES;\n";
close $script;
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-T', '20', '-f', "$script",
	  '-h', $n1->host, '-p', $n1->port, 'postgres' ],
	'>', \$out, '2>', \$err);
sleep 4;
my $killed_at = $n1->safe_psql('postgres', 'SELECT clock_timestamp()');
$n2->kill9;
my $moved = wait_for(sub { sync_standby($etcd) eq 'node3' }, timeout => 30, what => 'the sync key to move to node3');
ok($moved, 'on: the leader names node3 after node2 died');
is($n1->safe_psql('postgres', 'SHOW synchronous_standby_names'), 'FIRST 1 ("node3")',
	'on: synchronous_standby_names names node3');
my $bench_ok = $bench->finish;
note $out;
ok($bench_ok, 'on: pgbench ran to the end without a failed transaction') or diag $err;
my $after = $n1->safe_psql('postgres',
	"SELECT count(*) FROM w WHERE at > '$killed_at'::timestamptz + interval '3 s'");
cmp_ok($after, '>', 0, "on: writes resumed after the standby died ($after commits)");
my $lsn = $n1->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');
is($n3->safe_psql('postgres', "SELECT pg_last_wal_receive_lsn() >= '$lsn'"), 't',
	'on: node3 holds every acknowledged commit');

# ---- strict: the last replica dies ----
# in the config key: the one written at initialization carries
# pg_ha.synchronous_mode, and takes precedence over the GUC from then on
config_set($etcd, synchronous_mode_strict => JSON::PP::true);
wait_for(sub { $n1->safe_psql('postgres', 'SELECT sync_mode FROM pg_ha.status()') eq 'strict' },
	timeout => 15, what => 'strict mode on node1', fatal => 1);
$n3->kill9;

my ($sout, $serr) = ('', '');
my $writer = IPC::Run::start(
	[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-h', $n1->host, '-p', $n1->port,
	  '-c', "INSERT INTO w (id) VALUES (-1)", 'postgres' ],
	'>', \$sout, '2>', \$serr);
my $why = wait_for(
	sub {
		my $w = $n1->safe_psql('postgres', 'SELECT sync_waiting FROM pg_ha.status()');
		return $w ne '' ? $w : undef;
	},
	timeout => 30, what => 'pg_ha.status() to say why commits wait');
like($why // '', qr/commits wait for 1 synchronous standby\(s\) of "node3", 0 connected \(synchronous_mode strict\)/,
	'strict: pg_ha.status().sync_waiting says why');
sleep $ttl;
$writer->pump_nb;
ok($writer->pumpable, 'strict: the commit is still waiting after a TTL');
is($n1->safe_psql('postgres', 'SELECT count(*) FROM w WHERE id = -1'), '0',
	'strict: the row is not committed without a standby');
is($n1->safe_psql('postgres', 'SHOW synchronous_standby_names'), 'FIRST 1 ("node3")',
	'strict: synchronous_standby_names keeps the last synchronous standby');
like(slurp_file($n1->logfile), qr/WARNING:  pg_ha: commits wait for 1 synchronous standby/,
	'strict: the log says why');

# node3 comes back: the commit completes
$n3->start;
ok($writer->finish, 'strict: the waiting commit completed once node3 was back') or diag $serr;
is($n1->safe_psql('postgres', 'SELECT count(*) FROM w WHERE id = -1'), '1', 'strict: the row is there');
wait_for(sub { $n1->safe_psql('postgres', 'SELECT sync_waiting IS NULL FROM pg_ha.status()') eq 't' },
	timeout => 30, what => 'sync_waiting cleared');
ok(1, 'strict: pg_ha.status() no longer reports waiting');

forget_if_stopped($n2);
done_testing();
