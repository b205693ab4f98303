
# Failsafe mode, all nodes cut from etcd (etcd stopped): the leader keeps
# accepting writes while every member confirms it over POST /failsafe; with
# failsafe_mode off the same cluster fences its primary instead.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Failsafe;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, extra_conf => failsafe_conf());

wait_failsafe_members($etcd, qw(node1 node2 node3));
pass('the leader publishes the failsafe key with every member');

$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY)');
my $offset = -s $n1->logfile;

# --- failsafe on: etcd stops, writes go on for three TTLs
$etcd->stop_all;
my $t0 = now();
my ($writes, $refused, $last_err) = (0, 0, '');
while (now() - $t0 < 3 * $ttl)
{
	my ($ok, $state, $err) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
	$ok ? $writes++ : ($refused++, $last_err = $err);
	usleep(200_000);
}
note "etcd down for 3 TTLs: $writes commits, $refused refused on node1";
is($refused, 0, 'with failsafe on, node1 refuses no commit while etcd is down')
  or diag $last_err;
cmp_ok($writes, '>', 10, 'node1 committed throughout');
like(log_since($n1, $offset), qr/pg_ha: failsafe: all 2 members confirmed/,
	'node1 logs that every member confirmed it');
like(`curl -sS -m 5 http://127.0.0.1:@{[ $n1->api_port ]}/metrics`,
	qr/^patroni_failsafe_mode_is_active\{[^}]*\} 1$/m, 'patroni_failsafe_mode_is_active is 1 on node1');
for my $r ($n2, $n3)
{
	my $g = $r->safe_psql('postgres', 'SELECT 1');
	is(in_recovery($r), 1, $r->name . ' is still a replica');
}

# --- etcd back: node1 leads on, through etcd again
$etcd->start_all;
wait_ok(sub { (leader_of($etcd) // '') eq 'node1' }, 'node1 holds the leader key after etcd returns',
	timeout => 30);
wait_ok(sub { (try_sql($n1, 'INSERT INTO t DEFAULT VALUES'))[0] }, 'node1 accepts writes', timeout => 30);
is(scalar(writable_nodes($n1, $n2, $n3)), 1, 'exactly one writable node');

# --- failsafe off: the same outage fences node1
for my $n ($n1, $n2, $n3)
{
	$n->append_conf('postgresql.conf', "pg_ha.failsafe_mode = off\n");
	$n->reload;
}
wait_ok(sub { !defined failsafe_key($etcd) }, 'with failsafe off the leader deletes the failsafe key',
	timeout => 30);
$etcd->stop_all;
my $t_stop = now();
my $fenced = wait_for(
	sub {
		my ($ok, $state) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
		return $ok ? 0 : $state;
	},
	timeout => 3 * $ttl,
	what    => 'node1 to refuse commits');
is($fenced, '25006', 'with failsafe off, node1 refuses commits once etcd is down');
note sprintf('refused %.1f s after etcd stopped', now() - $t_stop);

$etcd->start_all;
done_testing();
