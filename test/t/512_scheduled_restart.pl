
# Scheduled restarts, as Patroni does them (issue 13): POST /restart with
# "schedule" answers 202 and the member key and GET /patroni carry
# "scheduled_restart"; a second one is refused (409); DELETE /restart
# cancels it (200, then 404) and a cancelled schedule restarts nothing.
# When the time comes the conditions are checked again: role=replica on
# the leader drops the schedule without a restart; a matching schedule
# restarts postgres through the service manager (the test acts as
# pg_ha@.service) and the leader keeps its key, as for an immediate
# restart.  Patroni's refusals: no zone 400, past or unparsable 422,
# paused 500, no credentials 401.  The real patronictl: restart
# --scheduled, the "Scheduled restart" column of list, flush restart.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => 10, nodes => 2, extra_conf => api_auth_conf());

sub iso_in
{
	my ($seconds) = @_;
	my @t = gmtime(time + $seconds);
	return sprintf('%04d-%02d-%02dT%02d:%02d:%02d+00:00', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
}

sub started_at { return $_[0]->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'); }

sub scheduled_in_key { return (member_json($etcd, $_[0]) // {})->{scheduled_restart}; }

sub schedule
{
	my ($node, %body) = @_;
	return api_request($node, 'POST', '/restart', auth => 1, body => \%body);
}

my %start = map { $_->name => started_at($_) } ($n1, $n2);

# --- refusals: nothing is scheduled
is(api_request($n1, 'POST', '/restart', body => { schedule => iso_in(3600) })->{code}, '401',
	'without credentials: 401');
my $r = schedule($n1, schedule => '2099-01-01T00:00:00');
is($r->{code}, '400', 'a time without a zone: 400');
like($r->{body}, qr/Timezone information is mandatory for the scheduled restart/, "in Patroni's words");
$r = schedule($n1, schedule => '2001-01-01T00:00:00+00:00');
is($r->{code}, '422', 'a time in the past: 422');
like($r->{body}, qr/Cannot schedule restart in the past/, "in Patroni's words");
for my $bad ('tomorrow at noon', '2099-13-45T99:00:00+00:00', '10000-01-01T00:00:00+00:00', 'x' x 3000)
{
	$r = schedule($n1, schedule => $bad);
	is($r->{code}, '422', 'an unparsable time (' . substr($bad, 0, 30) . '): 422');
	like($r->{body}, qr/Unable to parse scheduled timestamp/, 'and says why');
}
$r = schedule($n1, schedule => 12345);
is($r->{code}, '422', 'a time that is not a string: 422');
$r = schedule($n1, schedule => iso_in(3600), role => 'leader');
is($r->{code}, '400', 'a bad role with a schedule: 400');
is(api_request($n1, 'DELETE', '/restart', auth => 1)->{code}, '404', 'nothing was scheduled: DELETE answers 404');
ok(!scheduled_in_key('node1'), 'the member key has no scheduled_restart');

# paused: Patroni refuses to schedule (500, its status for this refusal)
is(api_request($n1, 'PATCH', '/config', auth => 1, body => { pause => JSON::PP::true })->{code}, '200',
	'pause the cluster');
wait_ok(sub { (api_request($n1, 'GET', '/patroni')->{json} // {})->{pause} }, 'node1 sees the pause',
	timeout => 20);
$r = schedule($n1, schedule => iso_in(3600));
is($r->{code}, '500', 'paused: 500');
like($r->{body}, qr/Can't schedule restart in the paused state/, "in Patroni's words");
is(api_request($n1, 'PATCH', '/config', auth => 1, body => { pause => undef })->{code}, '200',
	'resume the cluster');
wait_ok(sub { !(api_request($n1, 'GET', '/patroni')->{json} // { pause => 1 })->{pause} },
	'node1 sees the resume', timeout => 20);
is(api_request($n1, 'DELETE', '/restart', auth => 1)->{code}, '404', 'still nothing scheduled');

# --- scheduled, shown, refused twice, cancelled
my $cancelled_at = time + 8;
my $at = iso_in(8);
$r = schedule($n2, schedule => $at);
is($r->{code}, '202', 'POST /restart with a schedule: 202');
like($r->{body}, qr/Restart scheduled/, "in Patroni's words");
my $sr = wait_ok(sub { scheduled_in_key('node2') }, 'the member key of node2 shows scheduled_restart',
	timeout => 20) // {};
like($sr->{schedule} // '', qr/^\Q${\ substr($at, 0, 19)}\E/, 'with the time');
ok($sr->{postmaster_start_time}, 'and the postmaster start time, as Patroni keeps it');
my $st = (api_request($n2, 'GET', '/patroni')->{json} // {})->{scheduled_restart} // {};
like($st->{schedule} // '', qr/^\Q${\ substr($at, 0, 19)}\E/, 'GET /patroni shows scheduled_restart');
ok(!exists $st->{postmaster_start_time}, 'without the postmaster start time');
# GET /cluster on another node, from the member keys as its HA worker read them
my $cm = wait_for(sub { my ($c) = grep { $_->{name} eq 'node2' }
			@{ (api_request($n1, 'GET', '/cluster')->{json} // {})->{members} // [] };
		$c && $c->{scheduled_restart} ? $c : undef }, timeout => 20, what => 'scheduled_restart in GET /cluster');
like(($cm // {})->{scheduled_restart}{schedule} // '', qr/^\Q${\ substr($at, 0, 19)}\E/,
	'GET /cluster shows node2\'s scheduled_restart');
$r = schedule($n2, schedule => iso_in(3600));
is($r->{code}, '409', 'a second schedule: 409');
like($r->{body}, qr/Another restart is already scheduled/, "in Patroni's words");
$r = api_request($n2, 'DELETE', '/restart', auth => 1);
is($r->{code}, '200', 'DELETE /restart: 200');
like($r->{body}, qr/scheduled restart deleted/, "in Patroni's words");
is(api_request($n2, 'DELETE', '/restart', auth => 1)->{code}, '404', 'DELETE again: 404');
wait_ok(sub { !scheduled_in_key('node2') }, 'the member key of node2 no longer shows it', timeout => 20);
ok(!exists((api_request($n2, 'GET', '/patroni')->{json} // {})->{scheduled_restart}),
	'nor does GET /patroni');

# --- conditions checked when the time comes: role=replica on the leader
my $off1 = -s $n1->logfile;
$r = schedule($n1, schedule => iso_in(6), role => 'replica');
is($r->{code}, '202', 'role=replica scheduled on the leader: 202 (checked when due)');
is((scheduled_in_key('node1') // wait_for(sub { scheduled_in_key('node1') }, timeout => 20) // {})->{role},
	'replica', 'the member key shows the condition');
wait_ok(sub { !scheduled_in_key('node1') }, 'at the time, the schedule is dropped', timeout => 30);
like(log_since($n1, $off1), qr/not proceeding with the scheduled restart: host role mismatch/,
	'node1 logs why it did not restart');

# --- the real patronictl: restart --scheduled, list, flush restart
SKIP:
{
	skip 'patronictl not installed', 7 unless patronictl_available();
	my ($rc, $out) = patronictl($etcd, 'restart', 'pgtest', 'node2', '--scheduled', iso_in(3600), '--force');
	note $out;
	like($out, qr/Success: restart scheduled on member node2/, 'patronictl restart --scheduled: scheduled');
	wait_ok(sub { scheduled_in_key('node2') }, 'the member key of node2 shows it', timeout => 20);
	($rc, $out) = patronictl($etcd, 'list');
	note $out;
	like($out, qr/Scheduled restart/, 'patronictl list has the Scheduled restart column');
	like($out, qr/\|\s*node2\s*\|[^\n]*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, 'with the time on node2\'s row');
	($rc, $out) = patronictl($etcd, 'flush', 'pgtest', 'node2', 'restart', '--force');
	note $out;
	like($out, qr/Success: flush scheduled restart for member node2/, 'patronictl flush restart: success');
	wait_ok(sub { !scheduled_in_key('node2') }, 'the member key of node2 no longer shows it', timeout => 20);
	unlike((patronictl($etcd, 'list'))[1], qr/Scheduled restart/, 'list: no Scheduled restart column');
}

# --- a scheduled restart of the leader: it restarts, and keeps its key
my $tl = (member_json($etcd, 'node1') // {})->{timeline};
my $watch = key_watch($etcd, PgHa::Cluster::ha_key('leader'));
$off1 = -s $n1->logfile;
$r = schedule($n1, schedule => iso_in(3));
is($r->{code}, '202', 'a restart of the leader scheduled in 3 s: 202');
ok(wait_for(sub { postmaster_running($n1) ? undef : 1 }, timeout => 60, what => 'node1 down'),
	'at the time, node1 shut down');
my $svc = supervise($n1);
ok($svc && $svc->{started}, 'the service manager started node1 again');
ok(wait_for(sub { ($n1->ha_status->{lease_held} // 0) ? 1 : undef }, timeout => 30, what => 'lease'),
	'node1 holds the leader lease again');
isnt(started_at($n1), $start{node1}, 'node1 runs a new postmaster');
like(log_since($n1, $off1), qr/postgres was restarted on request: scheduled restart/,
	'node1 logs why it restarted');
like(log_since($n1, $off1), qr/checkpoint starting: immediate force wait.*received fast shutdown request/s,
	'a checkpoint ran before the fast shutdown (taken by the control worker; the HA worker kept renewing)');
wait_ok(sub { my $m = member_json($etcd, 'node1'); $m && !$m->{scheduled_restart} },
	'the member key of node1 no longer shows a schedule', timeout => 20);
is_deeply([ grep { $_->{type} eq 'DELETE' } $watch->events ], [], 'the leader key was never deleted');
is_deeply([ grep { $_ ne 'node1' } $watch->values ], [], 'no other node took it');
$watch->stop;
is(in_recovery($n2), 1, 'node2 is still a replica: no failover');
is((member_json($etcd, 'node1') // {})->{timeline}, $tl, 'same timeline');

# the schedule cancelled on node2 never fired (its time is past by now,
# with a cycle to spare)
sleep 1 while time < $cancelled_at + 3;
is(started_at($n2), $start{node2}, 'node2 was never restarted');

done_testing();
