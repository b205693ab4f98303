
# POST /failsafe needs the credentials of pg_ha.api_auth_file: without them,
# or with wrong ones, 401 and no promise is recorded.  With them a replica
# confirms (200, a promise); a primary, a bad leader name or a node without
# pg_ha.api_auth_file refuse.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Failsafe;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => $ttl, nodes => 2, extra_conf => failsafe_conf());
my $good = [ $PgHa::Failsafe::USER, $PgHa::Failsafe::PASSWORD ];

sub promise
{
	my ($node) = @_;
	my $out = `curl -sS -m 5 http://127.0.0.1:@{[ $node->api_port ]}/failsafe`;
	return eval { JSON::PP::decode_json($out) } // {};
}

# the promise every node makes by starting has run out
wait_for(sub { (promise($n2)->{promise_ms_left} // 1) == 0 }, timeout => 2 * $ttl,
	what => 'the start-up promise to end', fatal => 1);

my $r = post_failsafe($n2, 'node1');
is($r->{code}, '401', 'no credentials: 401');
$r = post_failsafe($n2, 'node1', auth => [ $PgHa::Failsafe::USER, 'wrong' ]);
is($r->{code}, '401', 'wrong password: 401');
$r = post_failsafe($n2, 'node1', auth => [ 'nobody', $PgHa::Failsafe::PASSWORD ]);
is($r->{code}, '401', 'wrong user: 401');
my $p = promise($n2);
is($p->{promise_ms_left}, 0, 'no promise recorded after the refusals');
is($p->{leader}, '', 'no leader recorded after the refusals');

$r = post_failsafe($n2, 'node1', auth => $good);
is($r->{code}, '200', 'with the credentials a replica confirms');
cmp_ok(promise_ms($r) // 0, '==', $ttl * 1000, 'it promises one TTL');
$p = promise($n2);
is($p->{leader}, 'node1', 'the promise names the leader');
cmp_ok($p->{promise_ms_left}, '>', 0, 'and is running');

is(post_failsafe($n1, 'node2', auth => $good)->{code}, '409', 'a primary does not confirm anyone');
is(post_failsafe($n2, 'node2', auth => $good)->{code}, '409', 'a node does not confirm itself');
is(post_failsafe($n2, 'node9', auth => $good)->{code}, '409',
	'a replica does not confirm a node other than the leader it sees');
is(post_failsafe($n2, 'bad%21name', auth => $good)->{code}, '400', 'a bad leader name: 400');
is(post_failsafe($n2, '', auth => $good)->{code}, '400', 'no leader name: 400');

# without pg_ha.api_auth_file nothing is accepted, and failsafe is off
$n2->append_conf('postgresql.conf', "pg_ha.api_auth_file = ''\n");
$n2->reload;
wait_ok(sub { post_failsafe($n2, 'node1', auth => $good)->{code} eq '403' },
	'without pg_ha.api_auth_file: 403', timeout => 10);
$n1->append_conf('postgresql.conf', "pg_ha.api_auth_file = ''\n");
my $offset = -s $n1->logfile;
$n1->reload;
wait_ok(sub { !defined failsafe_key($etcd) }, 'the leader without credentials withdraws the failsafe key',
	timeout => 20);
like(log_since($n1, $offset), qr/failsafe mode is disabled: pg_ha.failsafe_mode is on but pg_ha.api_auth_file is not set/,
	'the leader warns that failsafe mode is disabled');

done_testing();
