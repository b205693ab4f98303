
# Connections that send nothing, or trickle a byte a second, cannot take the
# health API down (issue 11): each port has its own connection budget, the
# whole request must arrive within the request timeout counted from
# accept(), the oldest idle or incomplete connection makes room for a new
# one (so a checker from the attacker's own address still gets through),
# the listener raises its open file limit to the hard limit, and when that
# limit is only 1,024 it still answers and does not spin.
#
# The "promptly" bounds are liveness checks (3 s for an answer that takes
# well under a millisecond, half of the CPU for a loop that should be idle),
# not timing goals: test/bench/health_bench.sh measures the latency.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(MSG_DONTWAIT);
use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my $node = new_primary(name => 'node1', etcd => $etcd, ttl => 5,
	extra_conf => "pg_ha.metrics_cache_ttl = 1");
my ($api, $mport) = ($node->api_port, $node->metrics_port);

sub listener_pid
{
	my $pm = $node->postmaster_pid or return undef;
	for my $pid (PgHa::Node::children_of($pm))
	{
		my $title = PgHa::Node::process_title($pid) // '';
		return $pid if $title =~ /pg_ha http/;
	}
	return undef;
}

# "Max open files" of a process: (soft, hard).
sub nofile_limits
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/limits" or return ();
	while (<$fh>)
	{
		return ($1, $2) if /^Max open files\s+(\S+)\s+(\S+)/;
	}
	return ();
}

# CPU seconds (user + system) of a process.
sub cpu_seconds
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my ($rest) = (<$fh> // '') =~ /\)\s+(.*)$/s;
	my @f = split /\s+/, $rest // '';
	return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# One request on a fresh connection: (status or reason, seconds taken).
sub ask
{
	my ($port, $path) = @_;
	my $t0 = now();
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Timeout => 5)
	  or return ("no connection: $!", elapsed_since($t0));
	print $s "GET $path HTTP/1.0\r\n\r\n";
	my $sel = IO::Select->new($s);
	my $buf = '';
	while (elapsed_since($t0) < 5 && $sel->can_read(5 - elapsed_since($t0)))
	{
		my $n = sysread($s, my $chunk, 65536);
		last if !$n;
		$buf .= $chunk;
	}
	my ($code) = $buf =~ m{^HTTP/1\.1 (\d{3}) };
	return ($code // 'no answer', elapsed_since($t0));
}

# Five checks a second apart, as HAProxy's fastinter sends them: all must
# be answered 200 within 3 s.
sub checks_answer
{
	my ($port, $path, $name) = @_;
	my ($ok, $worst, @bad) = (0, 0);
	for (1 .. 5)
	{
		my ($code, $secs) = ask($port, $path);
		$worst = $secs if $secs > $worst;
		if ($code eq '200' && $secs < 3) { $ok++ } else { push @bad, sprintf('%s after %.1f s', $code, $secs) }
		usleep(200_000);
	}
	is($ok, 5, sprintf('%s: 5 of 5 answered 200 within 3 s (slowest %.3f s)', $name, $worst))
	  or diag("failed checks: @bad");
}

sub listener_does_not_spin
{
	my ($name) = @_;
	my $pid = listener_pid();
	my $c0 = cpu_seconds($pid);
	sleep 2;
	my $used = cpu_seconds($pid) - $c0;
	cmp_ok($used, '<', 1.0, sprintf('%s: the listener used %.2f s of CPU in 2 s', $name, $used));
}

# Child process: keeps $k connections to $port open, every second reopening
# those the server closed (an attacker does not give up); with $trickle it
# also sends each one more byte of a request that never ends.
sub flood_child
{
	my ($port, $k, $trickle, $ready) = @_;
	# the parent's handlers would run its END blocks (and stop the servers)
	$SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT);
	$SIG{PIPE} = 'IGNORE';
	my $req = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " . ('a' x 4000);
	my $open = sub {
		IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			Proto => 'tcp', Blocking => 0);
	};
	my @s = map { $open->() } 1 .. $k;
	my @sent = (0) x $k;
	syswrite($ready, "ready\n");
	close $ready;
	for (;;)
	{
		sleep 1;
		for my $i (0 .. $k - 1)
		{
			my $sock = $s[$i];
			my $alive = 0;
			if ($sock)
			{
				my $r = recv($sock, my $buf, 4096, MSG_DONTWAIT);
				# nothing to read: still open; EOF, an answer (408) or an
				# error: the server has closed it
				$alive = !defined $r && ($!{EAGAIN} || $!{EWOULDBLOCK});
				if ($alive && $trickle)
				{
					$alive = defined send($sock, substr($req, $sent[$i] % length($req), 1), MSG_DONTWAIT);
					$sent[$i]++;
				}
			}
			next if $alive;
			close $sock if $sock;
			$s[$i] = $open->();
			$sent[$i] = 0;
		}
	}
}

# Opens $n connections to $port from child processes of at most 900
# sockets each (the test user's own limit may be 1,024).
sub flood
{
	my ($port, $n, $trickle) = @_;
	my @pids;
	while ($n > 0)
	{
		my $k = $n > 900 ? 900 : $n;
		$n -= $k;
		pipe(my $r, my $w) or die "pipe: $!";
		my $pid = fork() // die "fork: $!";
		if ($pid == 0)
		{
			close $r;
			flood_child($port, $k, $trickle, $w);
			POSIX::_exit(0);
		}
		close $w;
		my $line = <$r>;
		close $r;
		push @pids, $pid;
	}
	sleep 2;	# let the listener take them
	return @pids;
}

sub stop_flood
{
	kill 'KILL', @_;
	waitpid($_, 0) for @_;
	sleep 1;
}

wait_ok(sub { (ask($api, '/primary'))[0] eq '200' }, 'primary answers 200', timeout => 30);
my $pid = listener_pid();
ok($pid, "listener process found ($pid)");

# --- the open file limit is raised to the hard limit
{
	my ($soft, $hard) = nofile_limits($pid);
	is($soft, $hard, "the listener raised its open file limit to the hard limit ($hard)");
}

# --- a connection that never sends a byte is closed within the request
# timeout (5 s), counted from accept()
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $api, Proto => 'tcp')
	  or die "connect: $!";
	my $t0 = now();
	my $sel = IO::Select->new($s);
	my $closed = 0;
	while (elapsed_since($t0) < 20 && $sel->can_read(20 - elapsed_since($t0)))
	{
		my $n = sysread($s, my $chunk, 4096);
		if (!$n) { $closed = 1; last }
	}
	my $secs = elapsed_since($t0);
	ok($closed && $secs < 10,
		sprintf('a connection that sends nothing is closed after %.1f s (request timeout 5 s)', $secs));
}

# --- 1,100 idle connections on the metrics port
{
	my @f = flood($mport, 1100, 0);
	checks_answer($api, '/primary', '1,100 idle connections on the metrics port: GET /primary');
	checks_answer($mport, '/metrics', '1,100 idle connections on the metrics port: a scrape');
	listener_does_not_spin('1,100 idle connections on the metrics port');
	stop_flood(@f);
}

# --- 1,100 slowloris connections (a byte a second) on the metrics port
{
	my @f = flood($mport, 1100, 1);
	checks_answer($api, '/primary', '1,100 slowloris connections on the metrics port: GET /primary');
	checks_answer($mport, '/metrics', '1,100 slowloris connections on the metrics port: a scrape');
	listener_does_not_spin('1,100 slowloris connections on the metrics port');
	stop_flood(@f);
}

# --- 1,100 idle connections on the API port itself, from the checker's
# own address: the oldest of them makes room for the check
{
	my @f = flood($api, 1100, 0);
	checks_answer($api, '/primary', '1,100 idle connections on the API port: GET /primary');
	listener_does_not_spin('1,100 idle connections on the API port');
	stop_flood(@f);
}

# --- a hard limit of 1,024 open files (postgres started by hand, or by a
# unit with LimitNOFILE=1024): the budgets shrink to fit, nothing spins.
# The postmaster gets the lower limit and restarts the listener, which
# inherits it.
{
	my $pm = $node->postmaster_pid;
	system('prlimit', "--pid=$pm", '--nofile=1024:1024') == 0 or die "prlimit failed";
	kill 'TERM', $pid;
	my $new = wait_for(sub { my $p = listener_pid(); $p && $p != $pid ? $p : undef },
		what => 'the listener restarted', timeout => 30);
	$pid = $new;
	my ($soft, $hard) = nofile_limits($pid);
	is("$soft:$hard", '1024:1024', 'the restarted listener runs with a hard limit of 1,024 open files');
	wait_ok(sub { (ask($api, '/primary'))[0] eq '200' }, 'the restarted listener answers', timeout => 30);

	my @f = (flood($mport, 1100, 0), flood($api, 1100, 1));
	checks_answer($api, '/primary', 'limit 1,024, 2,200 idle and slowloris connections: GET /primary');
	checks_answer($mport, '/metrics', 'limit 1,024, 2,200 idle and slowloris connections: a scrape');
	listener_does_not_spin('limit 1,024, 2,200 idle and slowloris connections');
	stop_flood(@f);
	checks_answer($api, '/primary', 'after the flood: GET /primary');
	is(listener_pid(), $pid, 'the listener never restarted under the flood');
}

$node->stop;
done_testing();
