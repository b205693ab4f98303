
# The listener under bad and unusual clients: malformed, oversized, slow,
# pipelined, keep-alive, HTTP/1.0 and many concurrent connections each get
# the right answer, and the listener process stays the same process.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $node = new_primary(name => 'node1', etcd => $etcd, ttl => 5,
	extra_conf => "pg_ha.metrics_listen = '127.0.0.1:$mport'\npg_ha.metrics_cache_ttl = 1");
my $port = $node->api_port;

sub listener_pid
{
	my $pm = $node->postmaster_pid or return undef;
	opendir(my $d, '/proc') or return undef;
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh> // '';
		close $fh;
		my ($ppid) = $stat =~ /^\d+ \(.*\) \S (\d+)/;
		next unless defined $ppid && $ppid == $pm;
		open($fh, '<', "/proc/$pid/cmdline") or next;
		local $/;
		my $cmd = <$fh> // '';
		return $pid if $cmd =~ /pg_ha http/;
	}
	return undef;
}

sub connect_api
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Timeout => 5);
	die "connect: $!" unless $s;
	return $s;
}

# Reads until EOF or timeout; returns (data, saw_eof).
sub read_all
{
	my ($s, $timeout) = @_;
	my $sel = IO::Select->new($s);
	my $buf = '';
	my $deadline = now() + ($timeout // 5);
	while (now() < $deadline)
	{
		last unless $sel->can_read($deadline - now());
		my $n = sysread($s, my $chunk, 65536);
		return ($buf, 1) if !$n;
		$buf .= $chunk;
	}
	return ($buf, 0);
}

# Reads exactly $count responses (status codes) from a keep-alive stream.
sub read_responses
{
	my ($s, $count, $timeout) = @_;
	my $sel = IO::Select->new($s);
	my $buf = '';
	my @codes;
	my $deadline = now() + ($timeout // 5);
	while (@codes < $count && now() < $deadline)
	{
		# parse whatever complete responses are buffered
		while ($buf =~ /^HTTP\/1\.1 (\d{3}) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n/)
		{
			my ($code, $hdrs) = ($1, $2);
			my $hlen = length($&);
			my ($clen) = $hdrs =~ /Content-Length: (\d+)/i;
			$clen //= 0;
			last if length($buf) < $hlen + $clen;
			push @codes, $code;
			substr($buf, 0, $hlen + $clen) = '';
		}
		last if @codes >= $count;
		last unless $sel->can_read($deadline - now());
		my $n = sysread($s, my $chunk, 65536);
		last if !$n;
		$buf .= $chunk;
	}
	return @codes;
}

wait_ok(sub { my $s = connect_api(); print $s "GET /primary HTTP/1.0\r\n\r\n";
		(read_all($s))[0] =~ /^HTTP\/1\.1 200/ }, 'primary answers 200', timeout => 30);
my $pid0 = listener_pid();
ok($pid0, "listener process found ($pid0)");

# --- malformed
{
	my $s = connect_api();
	print $s "GARBAGE\r\n\r\n";
	my ($out, $eof) = read_all($s);
	like($out, qr/^HTTP\/1\.1 400 /, 'malformed request line -> 400');
	ok($eof, 'malformed request: connection closed after the 400');
}
{
	my $s = connect_api();
	print $s "GET /health HTTP/1.1\r\nBad Header Without Colon\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 400 /, 'malformed header -> 400');
}
{
	my $s = connect_api();
	print $s "GET /health HTTP/9.9\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 400 /, 'unknown HTTP version -> 400');
}
{
	my $s = connect_api();
	print $s "\x00\x01\x02\xff\xfe binary\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 400 /, 'binary junk -> 400');
}

# --- oversized
{
	my $s = connect_api();
	print $s "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " . ('a' x 10000) . "\r\n\r\n";
	my ($out, $eof) = read_all($s);
	like($out, qr/^HTTP\/1\.1 431 /, 'headers over 8 KiB -> 431');
	ok($eof, 'oversized headers: connection closed');
}
{
	my $s = connect_api();
	print $s "GET /health?" . ('a' x 3000) . " HTTP/1.1\r\nHost: x\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 414 /, 'URL over 2 KiB -> 414');
}
{
	my $s = connect_api();
	print $s "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 413 /, 'body over 64 KiB -> 413');
}
{
	my $s = connect_api();
	print $s "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
	my ($out) = read_all($s, 2);
	like($out, qr/^HTTP\/1\.1 403 /, 'POST /switchover with a body -> 403');
}

# --- slow client (slowloris): the request must complete within 5 s
{
	my $s = connect_api();
	print $s "GET /health HTTP/1.1\r\nHost: x\r\n";
	my $t0 = now();
	my ($out, $eof) = read_all($s, 10);
	my $secs = elapsed_since($t0);
	like($out, qr/^HTTP\/1\.1 408 /, 'incomplete request -> 408');
	ok($eof, 'slow client: connection closed');
	cmp_ok($secs, '<', 8, sprintf('slow client cut off after %.1f s', $secs));
}
{
	# a byte every 0.5 s never completes a request within 5 s
	my $s = connect_api();
	my $req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " . ('a' x 40) . "\r\n\r\n";
	my $t0 = now();
	my $got = '';
	for my $c (split //, $req)
	{
		last unless defined send($s, $c, 0);
		usleep(500_000);
		my $sel = IO::Select->new($s);
		if ($sel->can_read(0))
		{
			sysread($s, $got, 4096);
			last;
		}
		last if elapsed_since($t0) > 10;
	}
	like($got, qr/^HTTP\/1\.1 408 /, 'a byte every 0.5 s: 408 before the request completes');
}

# --- idle keep-alive connections do not block anyone
my @idle = map { connect_api() } 1 .. 50;

# --- pipelining: answered in order
{
	my $s = connect_api();
	print $s "GET /primary HTTP/1.1\r\nHost: x\r\n\r\n"
	  . "GET /replica HTTP/1.1\r\nHost: x\r\n\r\n"
	  . "OPTIONS /health HTTP/1.1\r\nHost: x\r\n\r\n"
	  . "HEAD /read-only HTTP/1.1\r\nHost: x\r\n\r\n"
	  . "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
	  . "GET /leader HTTP/1.1\r\nHost: x\r\n\r\n";
	my @codes = read_responses($s, 6);
	is_deeply(\@codes, [qw(200 503 200 200 503 200)], 'pipelined requests answered in order');
}
{
	# the same, sent one byte at a time
	my $s = connect_api();
	my $req = "GET /primary HTTP/1.1\r\nHost: x\r\n\r\nGET /replica HTTP/1.1\r\nHost: x\r\n\r\n";
	for my $c (split //, $req) { syswrite($s, $c); }
	my @codes = read_responses($s, 2);
	is_deeply(\@codes, [qw(200 503)], 'pipelined requests split into single bytes');
}
{
	# 200 pipelined requests without reading: back-pressure, then all answers
	my $s = connect_api();
	print $s "GET /patroni HTTP/1.1\r\nHost: x\r\n\r\n" x 200;
	my @codes = read_responses($s, 200, 20);
	is(scalar(@codes), 200, '200 pipelined GET /patroni all answered');
	ok(!grep({ $_ != 200 } @codes), '... all 200');
}
{
	# answers past the output high-water mark (400 x ~3 kB): the rest of the
	# buffered input is answered as the client reads
	my $s = connect_api();
	print $s "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" x 400;
	my @codes = read_responses($s, 400, 30);
	is(scalar(@codes), 400, '400 pipelined GET /metrics (past the high-water mark) all answered');
}
{
	# a valid request followed by garbage: the first is answered, then 400
	my $s = connect_api();
	print $s "GET /health HTTP/1.1\r\nHost: x\r\n\r\nBLAH BLAH\r\n\r\n";
	my @codes = read_responses($s, 2);
	is_deeply(\@codes, [qw(200 400)], 'good request then garbage: 200 then 400');
}

# --- keep-alive and HTTP/1.0
{
	my $s = connect_api();
	my $ok = 0;
	for (1 .. 100)
	{
		print $s "OPTIONS /primary HTTP/1.1\r\nHost: x\r\n\r\n";
		my @c = read_responses($s, 1);
		$ok++ if @c && $c[0] == 200;
	}
	is($ok, 100, '100 requests on one keep-alive connection');
}
{
	my $s = connect_api();
	print $s "GET /health HTTP/1.0\r\n\r\n";
	my ($out, $eof) = read_all($s);
	like($out, qr/^HTTP\/1\.1 200 /, 'HTTP/1.0 request answered');
	like($out, qr/Connection: close/i, 'HTTP/1.0: Connection: close');
	ok($eof, 'HTTP/1.0: connection closed after the answer');
}
{
	my $s = connect_api();
	print $s "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	my ($out, $eof) = read_all($s);
	ok($eof, 'Connection: close honoured');
}
{
	my $s = connect_api();
	print $s "OPTIONS /primary HTTP/1.0\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 200 OK\r\n/, 'OPTIONS: status line');
	unlike($out, qr/\r\n\r\n./s, 'OPTIONS: no body');
}

# --- many concurrent connections
{
	my @socks = map { connect_api() } 1 .. 400;
	print $_ "GET /primary HTTP/1.1\r\nHost: x\r\n\r\n" for @socks;
	my $ok = 0;
	for my $s (@socks)
	{
		my @c = read_responses($s, 1, 10);
		$ok++ if @c && $c[0] == 200;
	}
	is($ok, 400, '400 concurrent connections all answered');
	close $_ for @socks;
}

# --- the metrics port: pipelined scrapes (parked while the cache refreshes)
{
	sleep 2;	# the cache is stale: the first scrape is parked for a refresh
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp')
	  or die;
	print $s "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" x 3 . "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
	my @codes = read_responses($s, 4, 10);
	is_deeply(\@codes, [qw(200 200 200 404)], 'metrics port: pipelined scrapes answered in order');
}
{
	# a scraper that gives up while its scrape may be parked
	for (1 .. 20)
	{
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp')
		  or die;
		print $s "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
		close $s;
	}
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp')
	  or die;
	print $s "GET /metrics HTTP/1.0\r\n\r\n";
	like((read_all($s, 10))[0], qr/^HTTP\/1\.1 200 .*\npg_up 1\n/s,
		'metrics port answers after scrapers hung up mid-scrape');
}

# --- the metrics port is just as robust
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp')
	  or die;
	print $s "GARBAGE\r\n\r\n";
	my ($out) = read_all($s);
	like($out, qr/^HTTP\/1\.1 400 /, 'metrics port: malformed -> 400');
}

close $_ for @idle;
my $s = connect_api();
print $s "GET /health HTTP/1.0\r\n\r\n";
like((read_all($s))[0], qr/^HTTP\/1\.1 200 /, 'listener still answers after all of it');
is(listener_pid(), $pid0, 'the listener process never restarted');

$node->stop;
done_testing();
