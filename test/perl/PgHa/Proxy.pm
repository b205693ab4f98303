# PgHa::Proxy: a TCP forwarding proxy on a loopback port that a test can
# break and mend, to cut one node off from a service (etcd) while everything
# else keeps talking to it directly.
#
#   my $proxy = PgHa::Proxy->new(target => $etcd->member(0)->{client_port});
#   $proxy->url;        # "http://127.0.0.1:<listen port>"
#   $proxy->cut;        # close every connection, refuse new ones
#   $proxy->heal;       # accept again (same port)
#   $proxy->stats;      # { accepted => N, active => N, cut => 0|1 }
#   $proxy->stop;       # also done by DESTROY and at END
#
# The proxy is a child process (pure Perl, select loop).  The test drives it
# over a socketpair, one command a line, and every command is acknowledged,
# so when cut() returns the connections are closed and the port refuses.
# It stops by itself when the test process goes away (end of file on the
# control socket) and after max_lifetime seconds (default 900), so it can
# never outlive a test for long.

package PgHa::Proxy;

use strict;
use warnings;

use Carp;
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Test::More;
use Time::HiRes ();

use PostgreSQL::Test::Cluster ();

my @registry;

=pod

=head1 CONSTRUCTOR

=over

=item PgHa::Proxy->new(target => $port, target_host => '127.0.0.1', port => free, name => 'proxy', max_lifetime => 900)

Start a proxy listening on 127.0.0.1:C<port> (a free port by default) that
forwards every connection to C<target_host>:C<target>.

=back

=cut

sub new
{
	my ($class, %p) = @_;
	my $target = $p{target} // croak "PgHa::Proxy->new needs target => port";
	my $self = bless {
		name         => $p{name} // 'proxy',
		target_host  => $p{target_host} // '127.0.0.1',
		target_port  => $target,
		port         => $p{port} // PostgreSQL::Test::Cluster::get_free_port(),
		max_lifetime => $p{max_lifetime} // 900,
		owner        => $$,
	}, $class;

	socketpair(my $parent_end, my $child_end, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
	  or croak "socketpair: $!";
	$parent_end->autoflush(1);
	$child_end->autoflush(1);

	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		close $parent_end;
		my $rc = eval { $self->_serve($child_end); 0 } // do
		{
			print STDERR "PgHa::Proxy $self->{name}: $@";
			1;
		};
		POSIX::_exit($rc);
	}
	close $child_end;
	$self->{pid}  = $pid;
	$self->{ctl}  = $parent_end;
	my $hello = $self->_command('hello');
	croak "proxy $self->{name} did not start: $hello" unless $hello =~ /^ok/;
	push @registry, $self;
	weaken($registry[-1]);
	note "proxy $self->{name} (pid $pid): 127.0.0.1:$self->{port} -> "
	  . "$self->{target_host}:$self->{target_port}";
	return $self;
}

=pod

=head1 METHODS

=over

=item port / url / pid

Listening port, "http://127.0.0.1:<port>", process ID.

=item cut()

Close every proxied connection (both sides) and the listening socket, so
new connections are refused.  Returns once done.

=item heal()

Listen again on the same port.

=item stats()

Hash reference: accepted (connections since start), active, cut (0/1).

=item stop()

End the proxy process (all its connections close).

=back

=cut

sub port { return $_[0]->{port}; }
sub url  { return "http://127.0.0.1:$_[0]->{port}"; }
sub pid  { return $_[0]->{pid}; }

sub cut
{
	my ($self) = @_;
	my $r = $self->_command('cut');
	croak "proxy cut failed: $r" unless $r =~ /^ok/;
	note "proxy $self->{name}: cut ($r)";
	return 1;
}

sub heal
{
	my ($self) = @_;
	my $r = $self->_command('heal');
	croak "proxy heal failed: $r" unless $r =~ /^ok/;
	note "proxy $self->{name}: healed";
	return 1;
}

sub stats
{
	my ($self) = @_;
	my $r = $self->_command('stats');
	my %h = $r =~ /(\w+)=(\d+)/g;
	return \%h;
}

sub _command
{
	my ($self, $cmd) = @_;
	my $ctl = $self->{ctl} or croak "proxy $self->{name} is stopped";
	print $ctl "$cmd\n" or croak "proxy $self->{name}: cannot send '$cmd': $!";
	my $sel = IO::Select->new($ctl);
	croak "proxy $self->{name}: no answer to '$cmd' within 10 s"
	  unless $sel->can_read(10);
	my $line = <$ctl>;
	croak "proxy $self->{name} exited" unless defined $line;
	chomp $line;
	return $line;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid} && $self->{owner} == $$;
	my $pid = $self->{pid};
	$self->{pid} = undef;
	if ($self->{ctl})
	{
		my $ctl = $self->{ctl};
		print $ctl "quit\n";
		close $ctl;
		$self->{ctl} = undef;
	}
	for (1 .. 100)
	{
		my $r = waitpid($pid, WNOHANG);
		return if $r == $pid || $r == -1;
		Time::HiRes::usleep(20_000);
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $@, $!);
	$self->stop;
}

END
{
	local $?;
	for my $p (@registry)
	{
		$p->stop if defined $p;
	}
}

# ------------------------------------------------------------------ child

sub _listen
{
	my ($self) = @_;
	my $l = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $self->{port},
		Proto     => 'tcp',
		Listen    => 64,
		ReuseAddr => 1,
		Blocking  => 0)
	  or die "cannot listen on 127.0.0.1:$self->{port}: $!\n";
	return $l;
}

sub _serve
{
	my ($self, $ctl) = @_;
	$SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
	$SIG{PIPE} = 'IGNORE';
	$0 = "pg_ha test proxy $self->{name} :$self->{port}";
	my $die_at = Time::HiRes::time() + $self->{max_lifetime};

	my $listener = $self->_listen;
	my %peer;       # fileno => peer socket
	my %sock;       # fileno => socket
	my %out;        # fileno => pending bytes to write to that socket
	my %eof;        # fileno => 1 when its reader side closed (shut down after flush)
	my $accepted = 0;
	my $ctlbuf   = '';

	my $close_pair = sub {
		my ($fd) = @_;
		for my $f ($fd, (defined $peer{$fd} ? fileno($peer{$fd}) : ()))
		{
			next unless defined $f && $sock{$f};
			close $sock{$f};
			delete $sock{$f};
			delete $peer{$f};
			delete $out{$f};
			delete $eof{$f};
		}
	};
	my $close_all = sub {
		$close_pair->($_) for keys %sock;
	};

	while (1)
	{
		return if Time::HiRes::time() > $die_at;
		my $rsel = IO::Select->new($ctl, values %sock);
		$rsel->add($listener) if $listener;
		my $wsel = IO::Select->new(map { $sock{$_} }
			  grep { length($out{$_} // '') } keys %sock);
		my ($r, $w) = IO::Select->select($rsel, $wsel, undef, 1.0);

		for my $fh (@{ $w // [] })
		{
			my $fd = fileno($fh) // next;
			next unless $sock{$fd};
			my $n = syswrite($fh, $out{$fd});
			if (!defined $n)
			{
				next if $!{EAGAIN} || $!{EINTR};
				$close_pair->($fd);
				next;
			}
			substr($out{$fd}, 0, $n, '');
		}

		for my $fh (@{ $r // [] })
		{
			if ($fh == $ctl)
			{
				my $n = sysread($ctl, my $buf, 4096);
				return if !$n;    # the test went away
				$ctlbuf .= $buf;
				while ($ctlbuf =~ s/^([^\n]*)\n//)
				{
					my $cmd = $1;
					if ($cmd eq 'hello')
					{
						print $ctl "ok\n";
					}
					elsif ($cmd eq 'cut')
					{
						my $n = scalar(keys %sock) / 2;
						$close_all->();
						close $listener if $listener;
						$listener = undef;
						print $ctl "ok closed=$n\n";
					}
					elsif ($cmd eq 'heal')
					{
						$listener //= eval { $self->_listen };
						print $ctl $listener ? "ok\n" : "error $@";
					}
					elsif ($cmd eq 'stats')
					{
						printf $ctl "ok accepted=%d active=%d cut=%d\n",
						  $accepted, scalar(keys %sock) / 2, $listener ? 0 : 1;
					}
					elsif ($cmd eq 'quit')
					{
						$close_all->();
						return;
					}
					else
					{
						print $ctl "error unknown command\n";
					}
				}
				next;
			}
			if ($listener && $fh == $listener)
			{
				my $client = $listener->accept or next;
				my $server = IO::Socket::INET->new(
					PeerAddr => $self->{target_host},
					PeerPort => $self->{target_port},
					Proto    => 'tcp',
					Timeout  => 2);
				if (!$server)
				{
					close $client;
					next;
				}
				$accepted++;
				$client->blocking(0);
				$server->blocking(0);
				my ($cf, $sf) = (fileno($client), fileno($server));
				@sock{ $cf, $sf } = ($client, $server);
				$peer{$cf} = $server;
				$peer{$sf} = $client;
				next;
			}
			my $fd = fileno($fh) // next;
			next unless $sock{$fd};
			my $n = sysread($fh, my $buf, 65536);
			if (!defined $n)
			{
				next if $!{EAGAIN} || $!{EINTR};
				$close_pair->($fd);
				next;
			}
			if ($n == 0)
			{
				# Half-close: forward what is pending, then close both.
				my $pfd = fileno($peer{$fd});
				if (length($out{$pfd} // ''))
				{
					syswrite($peer{$fd}, $out{$pfd});
				}
				$close_pair->($fd);
				next;
			}
			my $pfd = fileno($peer{$fd});
			$out{$pfd} .= $buf;
		}
	}
}

1;
