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

our @EXPORT = qw(failsafe_conf post_failsafe failsafe_key wait_failsafe_members
  promise_ms);

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

1;
