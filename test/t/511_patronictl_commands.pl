
# The real patronictl's commands that the other drop-in tests (502-506)
# leave out, on a pg_ha cluster (issue 13), each checked by what it shows
# or does, not only by its exit code:
#   - list and list -f json: every member with its role, state, timeline
#     and address, under the cluster's system identifier;
#   - topology: the replicas under the leader;
#   - version: patronictl's own, and every member's from GET /patroni;
#   - history -f json: the switchover just made, with the new leader;
#   - switchover --scheduled, shown by list, and flush switchover;
#   - restart --pending: the member with a restart pending, no other;
#   - pause --wait / resume --wait: patronictl polls the member keys for
#     Patroni's "pause" field, so pg_ha publishes it while paused;
#   - remove: refused on a wrong confirmation, and with every node
#     stopped it deletes the cluster's keys.
# Runs with whichever patronictl PgHa::Patroni finds (3.0.2 on Debian 12,
# 4.0.7 from test/compat/patronictl4.sh).

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

plan skip_all => 'patronictl not installed' unless patronictl_available();

my $etcd  = PgHa::Etcd->new(members => 1);
my @nodes = ha_cluster(etcd => $etcd, ttl => 5, extra_conf => api_auth_conf());
my ($n1, $n2, $n3) = @nodes;
note 'patronictl ' . patronictl_version();

sub port_of { return $_[0]->port; }

sub list_json
{
	my ($rc, $out) = patronictl($etcd, 'list', '-f', 'json');
	my $rows = eval { JSON::PP::decode_json($out) };
	diag $out unless ref $rows eq 'ARRAY';
	return { map { $_->{Member} => $_ } @{ $rows // [] } };
}

# --- list
my $sysid = $n1->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
my ($rc, $out) = patronictl($etcd, 'list');
note $out;
is($rc, 0, 'patronictl list exits 0');
# the title names the system identifier from 3.2.0 (the initialize key);
# a replica's state is its replication_state from 3.0.4, "running" before
if (patronictl_at_least('3.2.0'))
{
	like($out, qr/Cluster: pgtest \($sysid\)/, 'list: the cluster under its system identifier');
}
else
{
	like($out, qr/Cluster: pgtest -/, 'list: the cluster by name');
}
like($out, qr/\|\s*node1\s*\|[^\n]*\|\s*Leader\s*\|\s*running\s*\|/, 'list: node1 is the running leader');
my $replica_state = patronictl_at_least('3.0.4') ? 'streaming' : 'running';
for my $n ('node2', 'node3')
{
	like($out, qr/\|\s*$n\s*\|[^\n]*\|\s*Replica\s*\|\s*$replica_state\s*\|/,
		"list: $n is a $replica_state replica");
}
unlike($out, qr/Maintenance mode/, 'list: no maintenance mode');

my $rows = list_json();
is_deeply([ sort keys %$rows ], [qw(node1 node2 node3)], 'list -f json: the three members');
for my $node (@nodes)
{
	my $r = $rows->{ $node->name } // {};
	is($r->{Host}, '127.0.0.1:' . port_of($node), 'list -f json: ' . $node->name . "'s address");
	is($r->{TL}, 1, 'list -f json: ' . $node->name . ' on timeline 1');
}

# --- topology
($rc, $out) = patronictl($etcd, 'topology');
note $out;
is($rc, 0, 'patronictl topology exits 0');
like($out, qr/\|\s*node1\s*\|[^\n]*Leader[^\n]*\n(?:[^\n]*\n)*?\|\s*\+ node2\s*\|[^\n]*Replica/,
	'topology: node2 under the leader node1');
like($out, qr/\|\s*\+ node3\s*\|[^\n]*Replica/, 'topology: node3 under the leader too');

# --- version
my $api = api_request($n1, 'GET', '/patroni')->{json} // {};
my $pg_ha_version = $api->{patroni}{version} // 'unknown';
my $num = $n1->safe_psql('postgres', 'SHOW server_version_num');
my $pg  = int($num / 10000) . '.' . ($num % 100);
($rc, $out) = patronictl($etcd, 'version');
is($rc, 0, 'patronictl version exits 0');
like($out, qr/^patronictl version \Q${\ patronictl_version()}\E$/m, 'version: patronictl\'s own');
($rc, $out) = patronictl($etcd, 'version', 'pgtest');
note $out;
for my $n ('node1', 'node2', 'node3')
{
	like($out, qr/^$n: Patroni \Q$pg_ha_version\E PostgreSQL \Q$pg\E$/m,
		"version pgtest: $n answers pg_ha's version and PostgreSQL $pg");
}
unlike($out, qr/failed to get version/, 'version pgtest: every member answered');

# --- history, after a switchover
($rc, $out) = patronictl($etcd, 'switchover', '--leader', 'node1', '--candidate', 'node2', '--force');
note $out;
like($out, qr/Successfully switched over to "node2"/, 'patronictl switchover to node2');
wait_ok(sub { (leader_of($etcd) // '') eq 'node2' && !in_recovery($n2) }, 'node2 leads', timeout => 30);
($rc, $out) = patronictl($etcd, 'history', '-f', 'json');
note $out;
my $hist = eval { JSON::PP::decode_json($out) } // [];
is(scalar @$hist, 1, 'history -f json: one event');
is($hist->[0]{TL}, 1, 'history: it ended timeline 1');
is($hist->[0]{'New Leader'}, 'node2', 'history: node2 is the new leader');
ok(($hist->[0]{LSN} // 0) > 0, 'history: the switch LSN');
wait_streaming($etcd, 'node1', 'node3');
wait_ok(sub { my $r = list_json(); ($r->{node2}{TL} // 0) == 2 && ($r->{node2}{Role} // '') eq 'Leader' },
	'list -f json: node2 leads on timeline 2', timeout => 20);

# --- switchover --scheduled, and flush
my @t = gmtime(time + 3600);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02d+00:00', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
($rc, $out) = patronictl($etcd, 'switchover', '--leader', 'node2', '--candidate', 'node1',
	'--scheduled', $at, '--force');
note $out;
like($out, qr/Switchover scheduled/, 'switchover --scheduled in an hour: scheduled');
my $fkey = eval { JSON::PP::decode_json($etcd->get(ha_key('failover')) // '') } // {};
is($fkey->{member}, 'node1', 'the failover key names the candidate');
ok($fkey->{scheduled_at}, 'and the time');
like((patronictl($etcd, 'list'))[1], qr/Switchover scheduled at: /, 'list: the scheduled switchover');
($rc, $out) = patronictl($etcd, 'flush', 'pgtest', 'switchover', '--force');
note $out;
like($out, qr/^Success: /m, 'flush switchover: success');
is($etcd->get(ha_key('failover')), undef, 'the failover key is gone');
is(leader_of($etcd), 'node2', 'node2 still leads');

# --- restart --pending: only the member with a restart pending (4.x picks
# it from the member keys; 3.0.2 asks every member, and the others refuse)
$n3->safe_psql('postgres', 'ALTER SYSTEM SET max_connections = 150');
$n3->reload;
wait_ok(sub { (member_json($etcd, 'node3') // {})->{pending_restart} },
	'the member key of node3 says a restart is pending', timeout => 20);
my %started = map { $_->name => $_->safe_psql('postgres', 'SELECT pg_postmaster_start_time()') } ($n1, $n2);
($rc, $out) = patronictl($etcd, 'restart', 'pgtest', '--pending', '--force');
note $out;
like($out, qr/Success: restart on member node3/, 'restart --pending: node3 restarts');
unlike($out, qr/Success: restart on member node[12]/, 'and no other member');
ok(wait_for(sub { postmaster_running($n3) ? undef : 1 }, timeout => 60, what => 'node3 down'), 'node3 shut down');
my $svc = supervise($n3);
ok($svc && $svc->{started}, 'the service manager started node3 again');
is($n3->safe_psql('postgres', 'SHOW max_connections'), '150', 'node3 runs with the new max_connections');
wait_ok(sub { my $m = member_json($etcd, 'node3'); $m && !$m->{pending_restart} },
	'node3 no longer has a restart pending', timeout => 20);
for my $node ($n1, $n2)
{
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started{ $node->name },
		$node->name . ' was not restarted');
}
wait_streaming($etcd, 'node3');

# --- pause --wait / resume --wait
($rc, $out) = patronictl($etcd, 'pause', '--wait');
note $out;
like($out, qr/Success: cluster management is paused/, 'pause --wait: success');
# (without the field patronictl gives up after loop_wait + 1 s, and calls
# that a success unless a member key changed meanwhile)
unlike($out, qr/didn't recogni[sz]ed pause state/, 'pause --wait: every member recognised it');
for my $n ('node1', 'node2', 'node3')
{
	ok((member_json($etcd, $n) // {})->{pause}, "the member key of $n says it is paused");
}
like((patronictl($etcd, 'list'))[1], qr/Maintenance mode: on/, 'list: maintenance mode');
($rc, $out) = patronictl($etcd, 'resume', '--wait');
note $out;
like($out, qr/Success: cluster management is resumed/, 'resume --wait: success');
unlike($out, qr/didn't recogni[sz]ed pause state/, 'resume --wait: every member recognised it');
ok(!exists((member_json($etcd, 'node1') // {})->{pause}), 'the member key of node1 no longer has pause');

# --- remove
my $prefix = '/service/pgtest/';
($rc, $out) = patronictl_input($etcd, "other\n", 'remove', 'pgtest');
note $out;
isnt($rc, 0, 'remove with a wrong cluster name fails');
like($out, qr/Cluster names specified do not match/, 'and says why');
ok(defined $etcd->get("${prefix}config") && defined leader_of($etcd), 'nothing was removed');

$_->stop('fast') for ($n1, $n3, $n2);
wait_ok(sub { !defined leader_of($etcd) }, 'the leader key is gone with the nodes', timeout => 20);
($rc, $out) = patronictl_input($etcd, "pgtest\nYes I am aware\nnode2\n", 'remove', 'pgtest');
note $out;
is($rc, 0, 'patronictl remove exits 0');
wait_ok(sub { !%{ $etcd->get_prefix($prefix) } }, "remove: no key left under $prefix", timeout => 10)
  or diag explain $etcd->get_prefix($prefix);

done_testing();
