
# POST /switchover and POST /failover with Patroni's bodies, status codes
# and answers (issue 13), on pg_ha's own switchover machinery (the
# failover key, as pg_ha.switchover() and pg_hactl write it):
#   - unauthenticated: 401 and nothing happens;
#   - a wrong leader or an unknown candidate: 412, nothing written;
#   - the real patronictl switchover / failover --force move the leader,
#     and answer 'Successfully switched over to "X"';
#   - scheduled_at in the future: 202, stored in the failover key;
#     DELETE /switchover cancels it.
# GET /history answers the history key in Patroni's format.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, extra_conf => api_auth_conf());

# unauthenticated: refused, and nothing changes
my $r = api_request($n1, 'POST', '/switchover', body => { leader => 'node1', candidate => 'node2' });
is($r->{code}, '401', 'POST /switchover without credentials: 401');
sleep 2;
is(leader_of($etcd), 'node1', 'node1 still leads');
is($etcd->get(ha_key('failover')), undef, 'no failover key was written');

# preconditions: 412, nothing written
$r = api_request($n1, 'POST', '/switchover', auth => 1, body => { leader => 'node2', candidate => 'node3' });
is($r->{code}, '412', 'a leader that does not lead: 412');
like($r->{body}, qr/leader name does not match/, 'and says so as Patroni does');
$r = api_request($n1, 'POST', '/switchover', auth => 1, body => { leader => 'node1', candidate => 'node9' });
is($r->{code}, '412', 'an unknown candidate: 412');
like($r->{body}, qr/candidate does not exist/, 'and says so');
$r = api_request($n1, 'POST', '/switchover', auth => 1, body => { candidate => 'node2' });
is($r->{code}, '400', 'a switchover without a leader: 400');
$r = api_request($n1, 'POST', '/switchover', auth => 1, body => 'not json');
is($r->{code}, '400', 'a body that is not JSON: 400');
is($etcd->get(ha_key('failover')), undef, 'the refusals wrote nothing');
is(leader_of($etcd), 'node1', 'node1 still leads');

# scheduled: 202, stored; DELETE cancels
my @t = gmtime(time + 3600);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02d+00:00', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ]);
$r = api_request($n1, 'POST', '/switchover', auth => 1,
	body => { leader => 'node1', candidate => 'node2', scheduled_at => $at });
is($r->{code}, '202', 'a switchover scheduled in an hour: 202');
like($r->{body}, qr/Switchover scheduled/, 'answered as Patroni does');
my $key = eval { JSON::PP::decode_json($etcd->get(ha_key('failover')) // '') } // {};
is($key->{member}, 'node2', 'the failover key names the candidate');
ok($key->{scheduled_at}, 'and the time');
my $ss = wait_for(sub { my $c = api_request($n3, 'GET', '/cluster')->{json} // {};
		$c->{scheduled_switchover} }, timeout => 20, what => 'scheduled_switchover in GET /cluster');
is_deeply([ @{ $ss // {} }{qw(from to)} ], [ 'node1', 'node2' ], 'GET /cluster shows the scheduled switchover, from and to');
like(($ss // {})->{at} // '', qr/^\Q${\ substr($at, 0, 16)}\E/, 'and when');
$r = api_request($n1, 'DELETE', '/switchover', auth => 1);
is($r->{code}, '200', 'DELETE /switchover: 200');
is($etcd->get(ha_key('failover')), undef, 'the scheduled switchover is gone');
ok(wait_for(sub { !exists((api_request($n3, 'GET', '/cluster')->{json} // {})->{scheduled_switchover}) },
		timeout => 20, what => 'GET /cluster without scheduled_switchover'), 'and gone from GET /cluster');
is(api_request($n1, 'DELETE', '/switchover', auth => 1)->{code}, '404', 'nothing left to cancel: 404');
sleep 1;
is(leader_of($etcd), 'node1', 'node1 still leads');

SKIP:
{
	skip 'patronictl not installed', 7 unless patronictl_available();

	my ($rc, $out) = patronictl($etcd, 'switchover', '--leader', 'node1', '--candidate', 'node2', '--force');
	note $out;
	like($out, qr/Successfully switched over to "node2"/, 'patronictl switchover reports success');
	wait_ok(sub { (leader_of($etcd) // '') eq 'node2' && !in_recovery($n2) }, 'node2 leads',
		timeout => 30);
	wait_streaming($etcd, {}, 'node1', 'node3');
	# node3 streams from node2 before it replays past the switch: pg_ha
	# refuses a candidate whose member key shows the old timeline (412)
	wait_ok(sub { ((member_json($etcd, 'node3') // {})->{timeline} // 0) == 2 },
		'the member key of node3 shows timeline 2', timeout => 30);

	($rc, $out) = patronictl($etcd, 'failover', '--candidate', 'node3', '--force');
	note $out;
	like($out, qr/Successfully failed over to "node3"/, 'patronictl failover reports success');
	wait_ok(sub { (leader_of($etcd) // '') eq 'node3' && !in_recovery($n3) }, 'node3 leads',
		timeout => 30);

	my $h = api_request($n1, 'GET', '/history');
	is($h->{code}, '200', 'GET /history: 200');
	my $lines = $h->{json} // [];
	is_deeply([ map { [ $_->[0], $_->[4] ] } @$lines[-2, -1] ], [ [ 1, 'node2' ], [ 2, 'node3' ] ],
		'GET /history: the history key, Patroni format, with the new leaders');
}

done_testing();
