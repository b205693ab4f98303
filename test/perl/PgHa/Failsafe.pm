# Helpers for the failsafe-mode tests (test/t/350..359): the credentials
# file, the settings, POST /failsafe, and the failsafe key.

package PgHa::Failsafe;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Utils ();
use PgHa::Test;
use PgHa::Etcd;
use PgHa::Proxy;
use PgHa::Failover ();

our @EXPORT = qw(failsafe_conf post_failsafe failsafe_key wait_failsafe_members
  promise_ms failsafe_cluster_leader_behind_proxy);

our $USER     = 'pg_ha_peer';
our $PASSWORD = 'fail:safe"pass';

# pg_ha.failsafe_mode and pg_ha.api_auth_file (a private file, same first
# line on every member), as extra_conf.
sub failsafe_conf
{
	my (%p) = @_;
	my $dir  = PostgreSQL::Test::Utils::tempdir();
	my $file = "$dir/api.auth";
	PostgreSQL::Test::Utils::append_to_file($file, "$USER:$PASSWORD\n");
	chmod 0600, $file;
	my $mode = $p{mode} // 'on';
	return "pg_ha.failsafe_mode = $mode\npg_ha.api_auth_file = '$file'\n";
}

# POST /failsafe?leader=$leader on $node's API port: { code, body }.
# auth => [user, password] or undef for none.
sub post_failsafe
{
	my ($node, $leader, %p) = @_;
	my @auth = $p{auth} ? ('-u', join(':', @{ $p{auth} })) : ();
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'curl', '-sS', '-m', '5', '-w', '\n%{http_code}', '-X', 'POST', @auth,
			'http://127.0.0.1:' . $node->api_port . "/failsafe?leader=$leader" ],
		'>', \$out, '2>', \$err, '<', \undef);
	my ($body, $code) = $out =~ /^(.*)\n(\d{3})$/s;
	return { code => $code // '000', body => $body // $out };
}

# The failsafe key's members as a hash name => api_url, or undef.
sub failsafe_key
{
	my ($etcd) = @_;
	my $v = eval { $etcd->get('/service/pgtest/failsafe') };
	return undef unless defined $v && length $v;
	return eval { JSON::PP::decode_json($v) };
}

sub wait_failsafe_members
{
	my ($etcd, @names) = @_;
	wait_for(
		sub {
			my $m = failsafe_key($etcd) or return 0;
			return scalar(grep { exists $m->{$_} } @names) == @names;
		},
		timeout => 30,
		what    => "the failsafe key to list @names",
		fatal   => 1);
	return;
}

# "promise_ms" of a 200 answer, or undef.
sub promise_ms
{
	my ($r) = @_;
	my $j = eval { JSON::PP::decode_json($r->{body}) };
	return $j ? $j->{promise_ms} : undef;
}

# Three failsafe nodes (ttl seconds) where node1, the leader, reaches etcd
# through a TCP proxy (so a test can cut it alone) and the replicas reach it
# directly; waits until every member is in the failsafe key and creates
# table t.  Returns ($etcd, $proxy, $n1, $n2, $n3).
sub failsafe_cluster_leader_behind_proxy
{
	my ($ttl) = @_;
	my $etcd  = PgHa::Etcd->new(members => 1);
	my $proxy = PgHa::Proxy->new(target => $etcd->member(0)->{client_port}, name => 'node1_etcd');
	my $direct = $etcd->endpoints;
	my ($n1, $n2, $n3) = PgHa::Failover::ha_cluster(
		etcd         => $etcd,
		endpoints    => $proxy->url,
		ttl          => $ttl,
		extra_conf   => failsafe_conf(),
		replica_conf => "pg_ha.etcd_endpoints = '$direct'\n");
	wait_failsafe_members($etcd, qw(node1 node2 node3));
	$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY)');
	return ($etcd, $proxy, $n1, $n2, $n3);
}

1;
