
# POST /restart and the real `patronictl restart` (issue 13): Patroni's
# conditions (role, restart_pending, postgres_version) and refusals; a
# restart goes through the service manager (the test acts as
# pg_ha@.service) and a leader back within the TTL keeps its key, as under
# Patroni.  Without credentials: 401 and nothing restarts.  Scheduled
# restarts: 512_scheduled_restart.pl.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => $ttl, nodes => 2, extra_conf => api_auth_conf());

sub wait_down
{
	my ($node) = @_;
	return wait_for(sub { postmaster_running($node) ? undef : 1 }, timeout => 60, what => $node->name . ' down');
}

# --- refusals: nothing restarts
is(api_request($n1, 'POST', '/restart')->{code}, '401', 'POST /restart without credentials: 401');
my $r = api_request($n1, 'POST', '/restart', auth => 1, body => { restart_pending => JSON::PP::true });
is($r->{code}, '503', 'restart_pending with nothing pending: 503');
like($r->{body}, qr/restart conditions are not satisfied/, "in Patroni's words");
is(api_request($n1, 'POST', '/restart', auth => 1, body => { role => 'replica' })->{code}, '503',
	'role replica on the primary: 503');
is(api_request($n1, 'POST', '/restart', auth => 1, body => { postgres_version => '14.1' })->{code}, '503',
	'postgres_version older than the running one: 503');
$r = api_request($n1, 'POST', '/restart', auth => 1, body => { frobnicate => 1 });
is($r->{code}, '400', 'an unknown condition: 400');
like($r->{body}, qr/Unknown filter/, 'and says why');
is(api_request($n1, 'DELETE', '/restart', auth => 1)->{code}, '404', 'DELETE /restart: nothing scheduled, 404');
sleep 1;
ok(postmaster_running($n1), 'node1 was not restarted by any of these');

# --- patronictl restart of the leader: back within the TTL, key kept
my $watch = key_watch($etcd, PgHa::Cluster::ha_key('leader'));
my $off = -s $n1->logfile;
SKIP:
{
	skip 'patronictl not installed', 16 unless patronictl_available();
	my ($rc, $out) = patronictl($etcd, 'restart', 'pgtest', 'node1', '--force');
	note $out;
	like($out, qr/Success: restart on member node1/, 'patronictl restart node1: success');
	ok(wait_down($n1), 'node1 shut down');
	my $svc = supervise($n1);
	ok($svc && $svc->{started}, 'the service manager started node1 again');
	ok(wait_for(sub { ($n1->ha_status->{lease_held} // 0) ? 1 : undef }, timeout => 30, what => 'lease'),
		'node1 holds the leader lease again');
	like(log_since($n1, $off), qr/postgres was restarted on request: requested over the API/,
		'node1 logs why it restarted');
	like(log_since($n1, $off), qr/(?:checkpoint|restartpoint) starting: immediate force wait.*received fast shutdown request/s,
		'a checkpoint ran before the fast shutdown');
	my @ev = $watch->events;
	is_deeply([ grep { $_->{type} eq 'DELETE' } @ev ], [], 'the leader key was never deleted');
	is_deeply([ grep { $_ ne 'node1' } $watch->values ], [], 'no other node took it');
	is(in_recovery($n2), 1, 'node2 is still a replica: no failover');

	# a replica, by role
	($rc, $out) = patronictl($etcd, 'restart', 'pgtest', '--role', 'replica', '--force');
	note $out;
	like($out, qr/Success: restart on member node2/, 'patronictl restart --role replica restarts node2');
	unlike($out, qr/member node1/, 'and not the leader');
	ok(wait_down($n2), 'node2 shut down');
	$svc = supervise($n2);
	ok($svc && $svc->{started}, 'node2 started again');
	ok(wait_for(sub { my $w = wal_receiver($n2); $w && $w->{status} eq 'streaming' ? 1 : undef }, timeout => 30,
			what => 'node2 streaming'), 'node2 streams again');
	is(leader_of($etcd), 'node1', 'node1 still leads');
}
$watch->stop;

done_testing();
