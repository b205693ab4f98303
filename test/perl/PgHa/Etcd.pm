
# PgHa::Etcd: a real etcd (1 or N members) for the pg_ha TAP suites.
#
#   my $etcd = PgHa::Etcd->new(members => 3);
#   $etcd->endpoints;            # "http://127.0.0.1:P1,http://127.0.0.1:P2,..."
#   $etcd->put('/k', 'v');  $etcd->get('/k');  $etcd->get_prefix('/service/');
#   $etcd->stop_member(1);  $etcd->start_member(1);  $etcd->kill_member(0);
#
# Members are numbered from 0.  Every member listens on free loopback ports
# (client and peer), keeps its data under a PostgreSQL::Test::Utils tempdir and
# logs to $PostgreSQL::Test::Utils::log_path/<test>_<name><i>.log.
#
# No etcd outlives the test: members are stopped by DESTROY, by an END block
# (also reached when the test dies or gets SIGINT/SIGTERM/SIGHUP), and, when
# util-linux's setpriv is available, by the kernel (parent-death signal
# SIGKILL) if the test process itself is killed with SIGKILL.

package PgHa::Etcd;

use strict;
use warnings;

use Carp;
use File::Basename qw(basename);
use HTTP::Tiny;
use IPC::Run ();
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Time::HiRes qw(usleep);
use Test::More;

use PostgreSQL::Test::Utils ();
use PostgreSQL::Test::Cluster ();
use PgHa::Test ();    # fatal signals -> die, so END blocks clean up

our $ETCD    = $ENV{ETCD}    || 'etcd';
our $ETCDCTL = $ENV{ETCDCTL} || 'etcdctl';

# Raft timings for loopback: fast elections, yet tolerant of a loaded
# 2-core machine (heartbeat x 10 = election timeout, as etcd recommends).
our $HEARTBEAT_MS = $ENV{PG_HA_ETCD_HEARTBEAT_MS} || 50;
our $ELECTION_MS  = $ENV{PG_HA_ETCD_ELECTION_MS}  || 500;

my @registry;    # weak references to every live PgHa::Etcd

my $setpriv;
for my $dir (split /:/, ($ENV{PATH} // '') . ':/usr/bin:/bin')
{
	if (-x "$dir/setpriv") { $setpriv = "$dir/setpriv"; last; }
}

sub _testname
{
	my $t = basename($0);
	$t =~ s/\.[^.]+$//;
	return $t;
}

=pod

=head1 CONSTRUCTOR

=over

=item PgHa::Etcd->new(members => 1, name => 'etcd', start => 1, timeout => 30)

Create (and by default start) an etcd cluster of C<members> members and wait
until every member reports healthy.  With C<start =E<gt> 0> nothing is started:
call C<start_all> later (the ports are already chosen, so endpoints() can be
put in a configuration first).  C<extra_args =E<gt> [...]> adds etcd
command-line arguments; C<tls =E<gt> { ca, server_cert, server_key,
client_cert, client_key }> serves the client URLs over https with client
certificate authentication (etcdctl then uses the client certificate).

=back

=cut

sub new
{
	my ($class, %p) = @_;
	my $n = $p{members} // 1;
	croak "members must be >= 1" unless $n >= 1;
	my $name = $p{name} // 'etcd';

	my $base = PostgreSQL::Test::Utils::tempdir("${name}_");
	my $tls = $p{tls};    # { ca, server_cert, server_key, client_cert, client_key }
	my $scheme = $tls ? 'https' : 'http';
	my $self = bless {
		name    => $name,
		base    => $base,
		tls     => $tls,
		# extra etcd command-line arguments, and extra etcdctl arguments
		# (e.g. --user once authentication is enabled)
		extra_args => $p{extra_args} // [],
		ctl_args   => $tls
		? [ "--cacert=$tls->{ca}", "--cert=$tls->{client_cert}", "--key=$tls->{client_key}" ]
		: [],
		timeout => $p{timeout} // 30,
		token   => "pg_ha-test-$name-$$-" . int(rand(1e9)),
		owner   => $$,
		members => [],
	}, $class;

	for my $i (0 .. $n - 1)
	{
		my $client = PostgreSQL::Test::Cluster::get_free_port();
		my $peer   = PostgreSQL::Test::Cluster::get_free_port();
		push @{ $self->{members} },
		  {
			index       => $i,
			name        => "$name$i",
			client_port => $client,
			peer_port   => $peer,
			client_url  => "$scheme://127.0.0.1:$client",
			peer_url    => "http://127.0.0.1:$peer",
			data_dir    => "$base/$name$i.data",
			log         => "$PostgreSQL::Test::Utils::log_path/"
			  . _testname() . "_$name$i.log",
			pid => undef,
		  };
	}
	$self->{initial_cluster} = join ',',
	  map { "$_->{name}=$_->{peer_url}" } @{ $self->{members} };

	push @registry, $self;
	weaken($registry[-1]);

	$self->start_all if $p{start} // 1;
	return $self;
}

=pod

=head1 METHODS

=over

=item $etcd->members() / $etcd->member($i)

Number of members / the hash describing member C<$i> (name, client_port,
peer_port, client_url, peer_url, data_dir, log, pid).

=cut

sub members { return scalar @{ $_[0]->{members} }; }

sub member
{
	my ($self, $i) = @_;
	my $m = $self->{members}[$i];
	croak "no etcd member $i" unless defined $m;
	return $m;
}

=item $etcd->endpoints() / $etcd->endpoint($i)

Comma-separated client URLs of all members (running or not) / the client URL
of member C<$i>.

=cut

sub endpoints
{
	my ($self) = @_;
	return join ',', map { $_->{client_url} } @{ $self->{members} };
}

sub endpoint { return $_[0]->member($_[1])->{client_url}; }

=item $etcd->member_index($url)

Index of the member whose client URL is C<$url> (trailing slashes and a
"localhost" spelling are tolerated), or undef.

=cut

sub member_index
{
	my ($self, $url) = @_;
	return undef unless defined $url;
	(my $u = $url) =~ s{/+$}{};
	$u =~ s{//localhost:}{//127.0.0.1:};
	for my $m (@{ $self->{members} })
	{
		return $m->{index} if $m->{client_url} eq $u;
	}
	return undef;
}

=item $etcd->is_running($i)

True if member C<$i>'s process is alive (reaps it if it exited).

=cut

sub is_running
{
	my ($self, $i) = @_;
	my $m = $self->member($i);
	return 0 unless $m->{pid};
	my $r = waitpid($m->{pid}, WNOHANG);
	if ($r == $m->{pid} || $r == -1)
	{
		note sprintf("etcd member %s (pid %d) exited with status %d",
			$m->{name}, $m->{pid}, $? >> 8)
		  if $r == $m->{pid};
		$m->{pid} = undef;
		return 0;
	}
	return 1;
}

sub running_members
{
	my ($self) = @_;
	return grep { $self->is_running($_) } 0 .. $#{ $self->{members} };
}

sub _spawn
{
	my ($self, $i) = @_;
	my $m = $self->member($i);
	croak "etcd member $m->{name} is already running" if $self->is_running($i);

	my @cmd = (
		$ETCD,
		"--name=$m->{name}",
		"--data-dir=$m->{data_dir}",
		"--listen-client-urls=$m->{client_url}",
		"--advertise-client-urls=$m->{client_url}",
		"--listen-peer-urls=$m->{peer_url}",
		"--initial-advertise-peer-urls=$m->{peer_url}",
		"--initial-cluster=$self->{initial_cluster}",
		"--initial-cluster-state=new",
		"--initial-cluster-token=$self->{token}",
		"--heartbeat-interval=$HEARTBEAT_MS",
		"--election-timeout=$ELECTION_MS",
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=" . ($ENV{PG_HA_ETCD_LOG_LEVEL} || 'info'),
		"--snapshot-count=10000",
		"--quota-backend-bytes=" . (256 * 1024 * 1024),
		($self->{tls}
			? ("--cert-file=$self->{tls}{server_cert}", "--key-file=$self->{tls}{server_key}",
				"--trusted-ca-file=$self->{tls}{ca}", '--client-cert-auth')
			: ()),
		@{ $self->{extra_args} });
	unshift @cmd, $setpriv, '--pdeathsig', 'KILL', '--' if $setpriv;

	open my $log, '>>', $m->{log} or croak "cannot open $m->{log}: $!";
	print $log "\n### " . localtime() . " starting: @cmd\n";
	close $log;

	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		# Child: never return into the test script (no END blocks, no
		# Test::More output from here).
		eval {
			open STDIN,  '<',  '/dev/null' or die;
			open STDOUT, '>>', $m->{log}   or die;
			open STDERR, '>&', \*STDOUT    or die;
			exec { $cmd[0] } @cmd;
		};
		POSIX::_exit(127);
	}
	$m->{pid} = $pid;
	note "started etcd member $m->{name} (pid $pid), client $m->{client_url}";
	return $pid;
}

=item $etcd->start_all()

Start every member that is not running and wait until all are healthy.

=cut

sub start_all
{
	my ($self) = @_;
	for my $i (0 .. $#{ $self->{members} })
	{
		$self->_spawn($i) unless $self->is_running($i);
	}
	$self->wait_healthy($_) for 0 .. $#{ $self->{members} };
	return;
}

=item $etcd->start_member($i)

(Re)start member C<$i> with its data directory and ports; it rejoins the
cluster.  Waits until it is healthy.

=cut

sub start_member
{
	my ($self, $i) = @_;
	$self->_spawn($i);
	$self->wait_healthy($i);
	return;
}

=item $etcd->health($i)

True if member C<$i> answers GET /health with {"health":"true"}.

=cut

sub health
{
	my ($self, $i) = @_;
	my $m    = $self->member($i);
	if ($self->{tls})
	{
		# HTTP::Tiny would need client-certificate plumbing: ask etcdctl
		my ($ok) = $self->ctl({ endpoints => $m->{client_url}, timeout => 2 },
			'endpoint', 'health');
		return $ok ? 1 : 0;
	}
	my $resp = HTTP::Tiny->new(timeout => 2)->get("$m->{client_url}/health");
	return 0 unless $resp->{success};
	my $h = eval { JSON::PP::decode_json($resp->{content}) };
	return ($h && defined $h->{health} && $h->{health} eq 'true') ? 1 : 0;
}

=item $etcd->wait_healthy($i [, $timeout])

Wait until member C<$i> is healthy; dies (with the tail of its log) if it
exits or does not become healthy in time.

=cut

sub wait_healthy
{
	my ($self, $i, $timeout) = @_;
	my $m = $self->member($i);
	$timeout //= $self->{timeout};
	my $deadline = Time::HiRes::time() + $timeout;
	while (Time::HiRes::time() < $deadline)
	{
		croak "etcd member $m->{name} exited during startup\n"
		  . _tail($m->{log}, 30)
		  unless $self->is_running($i);
		return 1 if $self->health($i);
		usleep(100_000);
	}
	croak "etcd member $m->{name} not healthy after ${timeout}s\n"
	  . _tail($m->{log}, 30);
}

sub _tail
{
	my ($file, $n) = @_;
	open my $fh, '<', $file or return "(no log $file)\n";
	my @l = <$fh>;
	close $fh;
	splice(@l, 0, @l - $n) if @l > $n;
	return join '', map { "  | $_" } @l;
}

# True unless $pid is a zombie (or gone).
sub _not_zombie
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $st = <$fh> // '';
	close $fh;
	my ($state) = $st =~ /\)\s+(\S)/;
	return (defined $state && $state ne 'Z' && $state ne 'X') ? 1 : 0;
}

sub _wait_exit
{
	my ($self, $m, $timeout) = @_;
	my $deadline = Time::HiRes::time() + $timeout;
	while (Time::HiRes::time() < $deadline)
	{
		my $r = waitpid($m->{pid}, WNOHANG);
		if ($r == $m->{pid} || $r == -1)
		{
			$m->{pid} = undef;
			return 1;
		}
		usleep(20_000);
	}
	return 0;
}

=item $etcd->stop_member($i [, timeout => 10])

SIGTERM member C<$i> and wait for it to exit (SIGKILL after the timeout).

=item $etcd->kill_member($i)

SIGKILL member C<$i> and reap it.

=cut

sub stop_member
{
	my ($self, $i, %p) = @_;
	my $m = $self->member($i);
	return 0 unless $self->is_running($i);
	note "stopping etcd member $m->{name} (pid $m->{pid})";
	kill 'TERM', $m->{pid};
	return 1 if $self->_wait_exit($m, $p{timeout} // 10);
	diag "etcd member $m->{name} ignored SIGTERM, killing it";
	return $self->kill_member($i);
}

sub kill_member
{
	my ($self, $i) = @_;
	my $m = $self->member($i);
	return 0 unless $self->is_running($i);
	note "killing etcd member $m->{name} (pid $m->{pid}) with SIGKILL";
	kill 'KILL', $m->{pid};
	$self->_wait_exit($m, 10)
	  or diag "etcd member $m->{name} (pid $m->{pid}) did not die";
	return 1;
}

=item $etcd->stop_all()

Stop every running member, one after the other (SIGTERM, SIGKILL after the
timeout).  One at a time on purpose: terminating a whole cluster at once
makes the raft leader wait for a leadership transfer that cannot happen.

=cut

sub stop_all
{
	my ($self, %p) = @_;
	$self->stop_member($_, %p) for $self->running_members;
	return;
}

# Cleanup path (DESTROY, END): the data is disposable, SIGKILL at once.
sub _kill_all
{
	my ($self) = @_;
	return unless $self->{owner} && $self->{owner} == $$;
	my @run = grep { $_->{pid} } @{ $self->{members} };
	kill 'KILL', $_->{pid} for @run;
	$self->_wait_exit($_, 5) for @run;
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($., $@, $!, $^E, $?);
	# Only the test process that started the members stops them (not a
	# forked child exiting, e.g. inside IPC::Run).
	$self->_kill_all if $self->{members};
}

END
{
	local $?;
	$_->_kill_all for grep { defined } @registry;
}

=item $etcd->ctl(@args) / $etcd->ctl_ok(@args)

Run etcdctl (API v3) against the running members; returns
($ok, $stdout, $stderr).  C<ctl_ok> dies on failure and returns stdout.
An optional hash reference as first argument may hold C<stdin> and
C<endpoints> (defaults to the client URLs of the running members).

=cut

sub ctl
{
	my ($self, @args) = @_;
	my $opt = ref $args[0] eq 'HASH' ? shift @args : {};
	my $eps = $opt->{endpoints}
	  // join(',', map { $self->endpoint($_) } $self->running_members);
	$eps = $self->endpoints if $eps eq '';
	my $in = $opt->{stdin} // '';
	my ($out, $err) = ('', '');
	local $ENV{ETCDCTL_API} = 3;
	my @cmd = (
		$ETCDCTL, "--endpoints=$eps", '--dial-timeout=2s',
		'--command-timeout=' . ($opt->{timeout} // 5) . 's',
		@{ $self->{ctl_args} }, @args);
	my $ok = IPC::Run::run(\@cmd, '<', \$in, '>', \$out, '2>', \$err);
	return ($ok, $out, $err);
}

=item $etcd->add_ctl_args(@args)

Arguments every later etcdctl call gets, e.g. C<--user=root:pw> once
authentication is enabled.

=cut

sub add_ctl_args
{
	my ($self, @args) = @_;
	push @{ $self->{ctl_args} }, @args;
	return;
}

sub ctl_ok
{
	my ($self, @args) = @_;
	my ($ok, $out, $err) = $self->ctl(@args);
	croak "etcdctl " . join(' ', grep { !ref } @args) . " failed: $err"
	  unless $ok;
	return $out;
}

# Decode the JSON output of "etcdctl get -w json": list of kv hashes with
# decoded key and value, lease as a hex string ('' when none).
sub _kvs
{
	my ($json) = @_;
	my $r = JSON::PP->new->allow_bignum->decode($json);
	my @kvs;
	for my $kv (@{ $r->{kvs} // [] })
	{
		my $lease = $kv->{lease} // 0;
		push @kvs,
		  {
			key             => decode_base64($kv->{key}),
			value           => decode_base64($kv->{value} // ''),
			lease           => $lease ? sprintf('%016x', "$lease") : '',
			create_revision => "" . ($kv->{create_revision} // 0),
			mod_revision    => "" . ($kv->{mod_revision}    // 0),
			version         => "" . ($kv->{version}         // 0),
		  };
	}
	return @kvs;
}

=item $etcd->get($key)

Value of C<$key>, or undef if absent.  Dies if etcd cannot be queried (so
that "absent" is never confused with "unreachable").

=item $etcd->get_kv($key)

Hash (key, value, lease (16 hex digits as etcdctl prints it, '' if none), create_revision, mod_revision,
version) or undef.

=item $etcd->get_prefix($prefix)

Hash reference key => value of every key under C<$prefix>.

=cut

sub get_kv
{
	my ($self, $key) = @_;
	my @kvs = _kvs($self->ctl_ok('get', '-w', 'json', '--', $key));
	return $kvs[0];
}

sub get
{
	my ($self, $key) = @_;
	my $kv = $self->get_kv($key);
	return defined $kv ? $kv->{value} : undef;
}

sub get_prefix
{
	my ($self, $prefix) = @_;
	my %h = map { $_->{key} => $_->{value} }
	  _kvs($self->ctl_ok('get', '-w', 'json', '--prefix', '--', $prefix));
	return \%h;
}

=item $etcd->put($key, $value [, lease => $hex_id])

=item $etcd->del($key [, prefix => 1])

Returns the number of keys deleted.

=item $etcd->grant_lease($ttl)

Grant a lease; returns its ID in hex (as etcdctl prints it).

=item $etcd->revoke_lease($hex_id)

=cut

sub put
{
	my ($self, $key, $value, %p) = @_;
	my @opt = defined $p{lease} ? ("--lease=$p{lease}") : ();
	# After "--" the value is stored verbatim (leading '-', newlines, '').
	$self->ctl_ok('put', @opt, '--', $key, $value);
	return 1;
}

sub del
{
	my ($self, $key, %p) = @_;
	my $out =
	  $self->ctl_ok('del', ($p{prefix} ? ('--prefix') : ()), '--', $key);
	return ($out =~ /^(\d+)/) ? $1 : 0;
}

sub grant_lease
{
	my ($self, $ttl) = @_;
	my $out = $self->ctl_ok('lease', 'grant', $ttl);
	$out =~ /lease ([0-9a-f]+) granted/ or croak "unexpected etcdctl output: $out";
	return $1;
}

sub revoke_lease
{
	my ($self, $id) = @_;
	$self->ctl_ok('lease', 'revoke', $id);
	return 1;
}

=item $etcd->leader_index()

Index of the member that is currently raft leader, or undef.

=cut

sub leader_index
{
	my ($self) = @_;
	for my $i ($self->running_members)
	{
		my ($ok, $out) =
		  $self->ctl({ endpoints => $self->endpoint($i) },
			'endpoint', 'status', '-w', 'json');
		next unless $ok;
		my $st = eval { JSON::PP->new->allow_bignum->decode($out) } or next;
		$st = $st->[0] if ref $st eq 'ARRAY';
		my $s = $st->{Status} or next;
		return $i
		  if "$s->{leader}" eq "$s->{header}{member_id}";
	}
	return undef;
}

=back

=cut

1;
