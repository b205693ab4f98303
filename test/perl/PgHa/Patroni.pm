# Helpers for the Patroni drop-in tests (test/t/5xx): the API credentials,
# requests to a node's API port with or without them, and the real
# patronictl pointed at the test cluster: Debian 12's 3.0.2 by default, or
# the one installed in the Debian tree PG_HA_PATRONICTL_ROOT names (Debian
# 13's 4.0.7 in a debootstrap chroot: test/compat/patronictl4.sh).  The
# chroot shares the host's network, so it reaches the test etcd and API
# ports on the loopback; a non-root test user enters it with "unshare -r"
# (a user namespace of its own, where it may chroot).
#
#   my ($n1, $n2) = ha_cluster(etcd => $etcd, extra_conf => api_auth_conf());
#   my $r = api_request($n1, 'POST', '/switchover', body => {...}, auth => 1);
#   my ($rc, $out) = patronictl($etcd, 'switchover', '--force', ...);
#   ($rc, $out) = patronictl_input($etcd, "pgtest\n...", 'remove', 'pgtest');  # answers its prompts
#   patronictl_at_least('3.2.0')   # branch on a behaviour of some versions

package PgHa::Patroni;

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Utils ();

our @EXPORT =
  qw(api_auth_conf api_request patronictl patronictl_input patronictl_available patronictl_version
  patronictl_at_least config_key config_set patronictl_start patronictl_running patronictl_finish);

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

# The tree patronictl runs in ('' for the host's).
sub patronictl_root { return $ENV{PG_HA_PATRONICTL_ROOT} // ''; }

sub patronictl_available { return -x patronictl_root() . '/usr/bin/patronictl'; }

# The command that runs patronictl: the host's, or the one in the tree,
# chrooted into (root may chroot; another user in a user namespace of its
# own, mapped to root there).
sub patronictl_command
{
	my $root = patronictl_root();
	return ('/usr/bin/python3', '/usr/bin/patronictl') if $root eq '';
	return ($> == 0 ? () : ('unshare', '-r'), 'chroot', $root, '/usr/bin/patronictl');
}

# patronictl's own version ("3.0.2", "4.0.7"), for the tests that check a
# behaviour only one version has.
my $version;
sub patronictl_version
{
	return $version if defined $version;
	my ($out, $err) = ('', '');
	IPC::Run::run([ patronictl_command(), 'version' ], '>', \$out, '2>', \$err, '<', \undef);
	($version) = $out =~ /patronictl version (\S+)/;
	die "could not read the version of patronictl: $out$err" unless defined $version;
	return $version;
}

# Is patronictl's version $v or later ("3.0.4": 3.0.4, 4.0.7, ...)?
sub patronictl_at_least
{
	my ($v) = @_;
	my @have = split /\./, patronictl_version();
	my @want = split /\./, $v;
	for my $i (0 .. $#want)
	{
		my $h = $have[$i] // 0;
		return $h > $want[$i] if $h != $want[$i];
	}
	return 1;
}

# Runs patronictl against the test cluster with the operators' credentials
# (restapi.authentication, as Patroni's own config has them): (exit code,
# stdout + stderr).  The config file goes under the tree's /tmp (mode 1777
# in a debootstrap tree) when patronictl runs in one, so it can read it.
sub patronictl { my ($etcd, @args) = @_; return patronictl_input($etcd, undef, @args); }

# patronictl with $input (text, or undef for none) on its standard input,
# for the commands that prompt.
sub patronictl_input
{
	my ($etcd, $input, @args) = @_;
	my ($cfg, $path) = _ctl_config($etcd);
	my ($out, $err) = ('', '');
	IPC::Run::run([ patronictl_command(), '-c', $path, @args ],
		'>', \$out, '2>', \$err, '<', \$input);
	return ($? >> 8, $out . $err);
}

# patronictl's configuration for the test cluster: the temporary file (it
# is removed when the object goes) and its path as patronictl sees it.
sub _ctl_config
{
	my ($etcd) = @_;
	my $root = patronictl_root();
	my $cfg = File::Temp->new(SUFFIX => '.yml', $root eq '' ? () : (DIR => "$root/tmp"));
	my ($host) = ($etcd->endpoints =~ m{^https?://([^,]+)});
	my $pw = $PASSWORD =~ s/'/''/gr;
	print $cfg "scope: pgtest\nnamespace: /service/\netcd3:\n  hosts: $host\n"
	  . "restapi:\n  authentication:\n    username: $USER\n    password: '$pw'\n";
	close $cfg;
	return ($cfg, substr("$cfg", length $root));
}

# patronictl in the background, for a test that acts meanwhile (as the
# service manager, say): a handle for patronictl_finish.
sub patronictl_start
{
	my ($etcd, @args) = @_;
	my ($cfg, $path) = _ctl_config($etcd);
	my %h = (cfg => $cfg, out => '');
	$h{run} = IPC::Run::start([ patronictl_command(), '-c', $path, @args ],
		'>', \$h{out}, '2>&1', IPC::Run::timeout(300));
	return \%h;
}

sub patronictl_running
{
	my ($h) = @_;
	$h->{run}->pump_nb if $h->{run}->pumpable;    # collects output, notices the exit
	return $h->{run}->pumpable;
}

# Waits for it: (exit status, output).
sub patronictl_finish
{
	my ($h) = @_;
	eval { $h->{run}->finish; };
	return ($h->{run}->result // -1, $h->{out});
}

# The config key decoded (undef when absent), and its raw value.
sub config_key
{
	my ($etcd) = @_;
	my $raw = eval { $etcd->get('/service/pgtest/config') };
	return (undef, undef) unless defined $raw && length $raw;
	return (eval { JSON::PP->new->allow_bignum->decode($raw) }, $raw);
}

# Sets top-level fields of the config key as an operator's edit would
# (undef removes one): the key written at initialization takes precedence
# over the GUCs it carries, so a test changes those here.
sub config_set
{
	my ($etcd, %fields) = @_;
	my ($cfg) = config_key($etcd);
	die 'no config key' unless ref $cfg eq 'HASH';
	while (my ($k, $v) = each %fields)
	{
		if (defined $v) { $cfg->{$k} = $v; }
		else            { delete $cfg->{$k}; }
	}
	$etcd->put('/service/pgtest/config', JSON::PP->new->canonical->allow_bignum->encode($cfg));
	return $cfg;
}

1;
