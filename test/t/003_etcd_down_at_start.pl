
# etcd unreachable when postgres starts: postgres still starts and serves
# queries, pg_ha.status() says etcd is unreachable and why; once etcd comes
# up, the worker takes the leader key without a postgres restart.

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

# Ports chosen, nothing started yet.
my $etcd = PgHa::Etcd->new(members => 1, start => 0);
ok(!$etcd->is_running(0), 'etcd is not running');

my $node = new_primary(
	name             => 'node1',
	etcd             => $etcd,
	ttl              => 5,
	etcd_timeout     => 500,
	create_extension => 0);
my $start_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

is($node->safe_psql('postgres', 'SELECT 1'), '1',
	'postgres serves queries while etcd is down');

# Without the leader lease the commit fence refuses writes, CREATE EXTENSION
# included.  Lift the fence (pg_ha.fencing is reloadable) just long enough
# to create the extension, so the status functions exist; then put it back.
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_ha');
like($err, qr/pg_ha: (commit|write) refused/,
	'writes (CREATE EXTENSION) are fenced while etcd is down');
$node->append_conf('postgresql.conf', "pg_ha.fencing = off\n");
$node->reload;
PgHa::Cluster::create_extension($node, timeout => 10);
$node->append_conf('postgresql.conf', "pg_ha.fencing = on\n");
$node->reload;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'pg_ha'"),
	'1', 'CREATE EXTENSION pg_ha works while etcd is down with pg_ha.fencing off');

my $st = wait_for(
	sub {
		my $s = $node->ha_status;
		return (defined $s->{last_error} && length $s->{last_error}) ? $s : undef;
	},
	timeout => 20,
	what    => 'pg_ha.status() to report an etcd error');
$st //= $node->ha_status;
note 'last_error: ' . ($st->{last_error} // 'null');
ok(defined $st->{etcd_reachable} && !$st->{etcd_reachable},
	'status: etcd_reachable is false');
ok(defined $st->{last_error} && length $st->{last_error},
	'status: last_error is set');
ok(!$st->{lease_held}, 'status: lease not held');
ok(!defined $st->{leader}, 'status: no leader known');

# The status function reads shared memory: it must answer at once even
# while etcd is unreachable.
my $t0 = now();
$node->ha_status for 1 .. 5;
my $per_call = elapsed_since($t0) / 5;
note sprintf("pg_ha.status() with etcd down: %.3f s per call (psql included)",
	$per_call);
cmp_ok($per_call, '<', 0.5, 'pg_ha.status() does not block on etcd');

# --- etcd comes up.
$etcd->start_all;
wait_ok(sub { ($etcd->get($node->ha_key('leader')) // '') eq 'node1' },
	'leader key appears once etcd is up', timeout => 30);
$st = wait_for(
	sub { my $s = $node->ha_status; $s->{lease_held} ? $s : undef },
	timeout => 15,
	what    => 'status to show the lease held')
  // $node->ha_status;
ok($st->{etcd_reachable}, 'status: etcd_reachable is true');
ok($st->{lease_held},     'status: lease_held is true');
is($st->{leader}, 'node1', 'status: leader is node1');
is($etcd->member_index($st->{etcd_endpoint}), 0,
	'status: etcd_endpoint is the etcd member');
ok(defined $st->{etcd_last_ok}, 'status: etcd_last_ok is set');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$start_time, 'postgres was not restarted');
wait_ok(sub { defined $etcd->get($node->ha_key('members/node1')) },
	'member key appears once etcd is up');

done_testing();
