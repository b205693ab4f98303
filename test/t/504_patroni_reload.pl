
# POST /reload (issue 13): with credentials the node reloads its
# configuration files, as Patroni's reload does, and answers 202; without
# them 401 and nothing is reloaded.  The real `patronictl reload` reloads
# every member.  (POST /restart: test 505.)

use strict;
use warnings;

use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => 5, nodes => 2, extra_conf => api_auth_conf());

sub work_mem { return $_[0]->safe_psql('postgres', 'SHOW work_mem'); }

my $before = work_mem($n1);
$_->append_conf('postgresql.conf', "work_mem = '7MB'\n") for ($n1, $n2);

is(api_request($n1, 'POST', '/reload')->{code}, '401', 'POST /reload without credentials: 401');
sleep 2;
is(work_mem($n1), $before, 'nothing was reloaded');

my $r = api_request($n1, 'POST', '/reload', auth => 1);
is($r->{code}, '202', 'POST /reload with credentials: 202');
like($r->{body}, qr/reload scheduled/, "answered as Patroni's");
wait_ok(sub { work_mem($n1) eq '7MB' }, 'node1 reloaded its configuration', timeout => 10);
is(work_mem($n2), $before, 'node2 was not asked');

SKIP:
{
	skip 'patronictl not installed', 2 unless patronictl_available();
	my ($rc, $out) = patronictl($etcd, 'reload', 'pgtest', '--force');
	note $out;
	like($out, qr/Reload request received for member node2/, 'patronictl reload asks node2');
	wait_ok(sub { work_mem($n2) eq '7MB' }, 'node2 reloaded its configuration', timeout => 10);
}

done_testing();
