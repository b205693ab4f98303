
# Tags steer the failover race: they are set by GUC, published in the
# member key (Patroni's "tags"), and a replica tagged nofailover never
# takes over even when it is as advanced as the others and would win the
# name tie-break.  failover_priority breaks ties among equals.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl);

# node2 would win the tie-break by name: tag it nofailover (reloadable)
$n2->safe_psql('postgres',
	"ALTER SYSTEM SET pg_ha.nofailover = on; ALTER SYSTEM SET pg_ha.noloadbalance = on");
$n2->reload;
$n3->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.failover_priority = 5");
$n3->reload;

my $tags2 = wait_for(
	sub { my $m = member_json($etcd, 'node2'); $m && $m->{tags} && $m->{tags}{nofailover} ? $m->{tags} : undef },
	timeout => 30, what => 'node2 member key carries its tags');
ok($tags2->{nofailover}, 'node2 member key: tags.nofailover');
ok($tags2->{noloadbalance}, 'node2 member key: tags.noloadbalance');
is($tags2->{failover_priority}, 0, 'node2 member key: nofailover publishes failover_priority 0');
my $tags3 = wait_for(
	sub { my $m = member_json($etcd, 'node3'); $m && $m->{tags} ? $m->{tags} : undef },
	timeout => 30, what => 'node3 member key carries its tags');
is($tags3->{failover_priority}, 5, 'node3 member key: failover_priority 5');

$n1->safe_psql('postgres', 'CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)');
my $lsn = $n1->lsn('insert');
$n1->wait_for_catchup($_, 'replay', $lsn) for ($n2, $n3);

$n1->kill9;
my ($new_leader) = wait_leader_not($etcd, 'node1', timeout => 30);
is($new_leader, 'node3', 'node3 takes over; node2 (nofailover) does not');
wait_for(sub { !in_recovery($n3) }, timeout => 30, what => 'node3 promoted');
ok(in_recovery($n2), 'node2 stays a replica');
my $port = wait_for(
	sub {
		my $r = wal_receiver($n2) or return undef;
		return ($r->{status} // '') eq 'streaming' && $r->{sender_port} == $n3->port ? $r->{sender_port} : undef;
	},
	timeout => 30, what => 'node2 streams from node3');
is($port, $n3->port, 'node2 follows node3');

done_testing();
