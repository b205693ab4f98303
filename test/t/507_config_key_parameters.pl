
# postgresql.parameters of the config key applied on every node (issue 13):
# each HA worker runs ALTER SYSTEM and reloads.
#   - work_mem set in the key reaches every node; removed from the key, it
#     is reset on every node, while a setting an operator made with ALTER
#     SYSTEM himself stays;
#   - shared_buffers (restart-only) is written and reported as pending
#     restart: pg_ha.status().pending_restart, the member key, /patroni;
#   - synchronous_standby_names (pg_ha's own) is refused, and a value
#     PostgreSQL rejects (maintenance_work_mem = 'lots') is refused without
#     reaching postgresql.auto.conf, each with a WARNING naming it; the
#     cluster runs on.

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
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => 10, extra_conf => api_auth_conf());
my @nodes = ($n1, $n2, $n3);
wait_for(sub { (config_key($etcd))[0] }, timeout => 20, what => 'the config key', fatal => 1);

sub show { my ($n, $name) = @_; return $n->safe_psql('postgres', "SHOW $name"); }

sub on_every_node
{
	my ($what, $cond) = @_;
	for my $n (@nodes)
	{
		ok(wait_for(sub { $cond->($n) }, timeout => 20, what => "$what on " . $n->name),
			$n->name . ": $what");
	}
}

sub patch_config
{
	my ($body) = @_;
	my $r = api_request($n1, 'PATCH', '/config', auth => 1, body => $body);
	is($r->{code}, '200', 'PATCH /config ' . JSON::PP->new->canonical->encode($body))
	  or diag $r->{body};
}

$n2->safe_psql('postgres', "ALTER SYSTEM SET temp_buffers = '16MB'; SELECT pg_reload_conf()");
my %off = map { $_->name => -s $_->logfile } @nodes;

patch_config({ postgresql => { parameters => {
	work_mem => '8MB', shared_buffers => '256MB',
	synchronous_standby_names => '*', maintenance_work_mem => 'lots' } } });

on_every_node('work_mem is 8MB', sub { show($_[0], 'work_mem') eq '8MB' });
on_every_node('pg_ha.status() says pending restart (shared_buffers)',
	sub { $_[0]->ha_status->{pending_restart} });
on_every_node('the member key says pending_restart',
	sub { ($_[0]->member_key_json // {})->{pending_restart} });
on_every_node('/patroni says pending_restart',
	sub { (api_request($_[0], 'GET', '/patroni')->{json} // {})->{pending_restart} });
for my $n (@nodes)
{
	my $log = log_since($n, $off{ $n->name });
	like($log, qr/WARNING:  pg_ha: not applying parameter "synchronous_standby_names" from the config key/,
		$n->name . ': synchronous_standby_names refused with a WARNING');
	like($log, qr/WARNING:  pg_ha: not applying parameter "maintenance_work_mem" from the config key/,
		$n->name . ': a value PostgreSQL rejects is refused with a WARNING');
	is(show($n, 'synchronous_standby_names'), '', $n->name . ': synchronous_standby_names untouched');
	# shared_buffers shows "setting could not be applied" (restart-only): not an error of the files
	is($n->safe_psql('postgres', "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL "
			  . "AND error <> 'setting could not be applied'"), '0',
		$n->name . ': postgresql.auto.conf and postgresql.conf parse without error');
	unlike(slurp_auto_conf($n), qr/lots/, $n->name . ': the rejected value never reached postgresql.auto.conf');
}
is(leader_of($etcd), 'node1', 'node1 still leads');
$n1->safe_psql('postgres', 'CREATE TABLE t_params (i int)');
pass('the leader writes');

# removed from the key: reset where pg_ha set it, nothing else
patch_config({ postgresql => { parameters => { work_mem => undef, shared_buffers => undef } } });
on_every_node('work_mem back to the default', sub { show($_[0], 'work_mem') eq '4MB' });
on_every_node('shared_buffers no longer in postgresql.auto.conf',
	sub { slurp_auto_conf($_[0]) !~ /shared_buffers/ });
is(show($n2, 'temp_buffers'), '16MB', "node2: the operator's own ALTER SYSTEM setting stays");

sub slurp_auto_conf
{
	my ($n) = @_;
	return PostgreSQL::Test::Utils::slurp_file($n->data_dir . '/postgresql.auto.conf');
}

done_testing();
