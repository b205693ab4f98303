# Helpers for the Patroni drop-in tests (test/t/5xx): the API credentials,
# requests to a node's API port with or without them, and the real
# patronictl (Debian's 3.0.2) pointed at the test cluster.
#
#   my ($n1, $n2) = ha_cluster(etcd => $etcd, extra_conf => api_auth_conf());
#   my $r = api_request($n1, 'POST', '/switchover', body => {...}, auth => 1);
#   my ($rc, $out) = patronictl($etcd, 'switchover', '--force', ...);

package PgHa::Patroni;

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Utils ();

our @EXPORT = qw(api_auth_conf api_request patronictl patronictl_available config_key);

our $USER     = 'patroni_ops';
our $PASSWORD = 'ops:"secret';

# pg_ha.api_auth_file naming a private file with the operators' line.
sub api_auth_conf
{
	my $dir  = PostgreSQL::Test::Utils::tempdir();
	my $file = "$dir/api.auth";
	PostgreSQL::Test::Utils::append_to_file($file, "$USER:$PASSWORD\n");
	chmod 0600, $file;
	return "pg_ha.api_auth_file = '$file'\n";
}

# $method $path on $node's API port: { code, body, headers (raw text), json }.
# body => hash ref (sent as JSON) or string; auth => 1 (the good
# credentials), [user, password], or undef (none).
sub api_request
{
	my ($node, $method, $path, %p) = @_;
	my @auth;
	if (ref $p{auth} eq 'ARRAY') { @auth = ('-u', join(':', @{ $p{auth} })); }
	elsif ($p{auth})             { @auth = ('-u', "$USER:$PASSWORD"); }
	my @body;
	if (defined $p{body})
	{
		my $b = ref $p{body} ? JSON::PP->new->canonical->encode($p{body}) : $p{body};
		@body = ('-H', 'Content-Type: application/json', '--data-binary', $b);
	}
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'curl', '-sS', '-m', $p{timeout} // 90, '-D', '-', '-X', $method, @auth, @body,
			'http://127.0.0.1:' . $node->api_port . $path ],
		'>', \$out, '2>', \$err, '<', \undef);
	my ($head, $content) = split /\r\n\r\n/, $out, 2;
	my ($code) = ($head // '') =~ m{^HTTP/\S+ (\d{3})};
	my $json = eval { JSON::PP->new->allow_nonref->decode($content // '') };
	return { code => $code // '000', body => $content // '', headers => $head // '', json => $json };
}

sub patronictl_available { return -x '/usr/bin/patronictl'; }

# Runs Debian's patronictl against the test cluster with the operators'
# credentials (restapi.authentication, as Patroni's own config has them):
# (exit code, stdout + stderr).
sub patronictl
{
	my ($etcd, @args) = @_;
	my $cfg = File::Temp->new(SUFFIX => '.yml');
	my ($host) = ($etcd->endpoints =~ m{^https?://([^,]+)});
	my $pw = $PASSWORD =~ s/'/''/gr;
	print $cfg "scope: pgtest\nnamespace: /service/\netcd3:\n  hosts: $host\n"
	  . "restapi:\n  authentication:\n    username: $USER\n    password: '$pw'\n";
	close $cfg;
	my ($out, $err) = ('', '');
	IPC::Run::run([ '/usr/bin/python3', '/usr/bin/patronictl', '-c', "$cfg", @args ],
		'>', \$out, '2>', \$err, '<', \undef);
	return ($? >> 8, $out . $err);
}

# The config key decoded (undef when absent), and its raw value.
sub config_key
{
	my ($etcd) = @_;
	my $raw = eval { $etcd->get('/service/pgtest/config') };
	return (undef, undef) unless defined $raw && length $raw;
	return (eval { JSON::PP->new->allow_bignum->decode($raw) }, $raw);
}

1;
