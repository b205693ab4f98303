
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

# --- patronictl restart of the whole cluster: as on Patroni, one member at
# a time.  Patroni answers each POST /restart once postgres is back; pg_ha
# answers before its shutdown, so the next member waits (restarting/<name>
# in etcd) until the previous one is back before it goes down itself.
# Evidence from the logs: the second member's shutdown comes after the
# first member's restart was complete.
sub log_time
{
	my ($text, $re) = @_;
	return undef unless $text =~ /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[\d+\] (?:\S+ )?LOG:  $re/m;
	return $1;
}
SKIP:
{
	skip 'patronictl not installed', 7 unless patronictl_available();
	my %off = map { $_->name => -s $_->logfile } ($n1, $n2);
	my $h = patronictl_start($etcd, 'restart', 'pgtest', '--force');
	my %restarted;
	my $t0 = time;
	while (time - $t0 < 120 &&
		(patronictl_running($h) || keys %restarted < 2 || grep { !postmaster_running($_) } ($n1, $n2)))
	{
		for my $n (grep { !postmaster_running($_) } ($n1, $n2))
		{
			my $svc = supervise($n);    # the service manager starts it again
			$restarted{ $n->name }++ if $svc && $svc->{started};
		}
		select(undef, undef, undef, 0.1);
	}
	my ($rc, $out) = patronictl_finish($h);
	note $out;
	like($out, qr/Success: restart on member node1.*Success: restart on member node2/s,
		'patronictl restart pgtest: success on both members, in turn');
	is_deeply([ sort keys %restarted ], [ 'node1', 'node2' ], 'both members were restarted');
	my %log = map { $_->name => log_since($_, $off{ $_->name }) } ($n1, $n2);
	my %down = map { $_ => log_time($log{$_}, qr/received fast shutdown request/) } keys %log;
	my ($first, $second) = sort { $down{$a} cmp $down{$b} } grep { defined $down{$_} } keys %down;
	ok($first && $second, 'both shut down') or diag explain \%down;
	$first //= 'node1';
	$second //= 'node2';
	my ($after) = $log{$first} =~ /received fast shutdown request(.*)$/s;
	my $back = log_time($after // '', qr/database system is ready to accept (?:read-only )?connections/);
	ok($back, "$first came back") or diag $log{$first};
	cmp_ok($down{$second} // '', 'gt', $back // '9999', "$second went down only after $first was back");
	like($log{$second}, qr/restart waits for member "\Q$first\E" to come back from its restart/,
		"$second says it waited for $first");
	ok(wait_for(sub { my $l = leader_of($etcd); $l && !in_recovery($n1) || !in_recovery($n2) },
			timeout => 60, what => 'a primary'), 'the cluster has its primary again');
}

done_testing();
