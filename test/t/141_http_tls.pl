# TLS on the API and metrics listeners (pg_ha.api_certfile & co., Patroni's
# restapi.certfile/keyfile/cafile/verify_client) and basic auth on the
# metrics port (pg_ha.metrics_auth_file), with certificates made here by
# openssl: curl --cacert, a plaintext client on a TLS port, a handshake that
# never finishes, client-certificate verification, certificate reload on
# SIGHUP (and a bad new certificate that keeps the old one), a bad key at
# start, and HAProxy's `check-ssl verify required ca-file` as Pigsty renders
# it with patroni_ssl_enabled.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Socket::UNIX;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

plan skip_all => 'openssl not installed' unless `which openssl` =~ /openssl/;
plan skip_all => 'curl not installed' unless `which curl` =~ /curl/;

my $dir = PostgreSQL::Test::Utils::tempdir('tls_');

sub sh
{
	my ($cmd) = @_;
	system("$cmd >/dev/null 2>&1") == 0 or die "failed: $cmd";
}

# A CA, two server certificates (127.0.0.1) with known serials, a client
# certificate, a client certificate no CA signed, and files that are wrong.
sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout $dir/ca.key -out $dir/ca.pem -days 2 -subj /CN=pg_ha-test-ca");
sub signed
{
	my ($who, $cn, $serial, $ext) = @_;
	sh("openssl req -newkey rsa:2048 -nodes -keyout $dir/$who.key -out $dir/$who.csr -subj /CN=$cn");
	append_to_file("$dir/$who.ext", "$ext\n");
	sh("openssl x509 -req -in $dir/$who.csr -CA $dir/ca.pem -CAkey $dir/ca.key -set_serial $serial "
		  . "-out $dir/$who.pem -days 2 -extfile $dir/$who.ext");
	chmod 0600, "$dir/$who.key";
}
signed('server1', 'pg_ha-server-one', '0x1001', 'subjectAltName=IP:127.0.0.1');
signed('server2', 'pg_ha-server-two', '0x2002', 'subjectAltName=IP:127.0.0.1');
signed('client', 'pg_ha-client', '0x3003', 'extendedKeyUsage=clientAuth');
sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout $dir/rogue.key -out $dir/rogue.pem -days 2 -subj /CN=rogue");
append_to_file("$dir/garbage.pem", "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
sh("cp $dir/server1.key $dir/open.key");
chmod 0644, "$dir/open.key";
# HAProxy's crt: certificate and key in one file
append_to_file("$dir/haproxy-client.pem", slurp_file("$dir/client.pem") . slurp_file("$dir/client.key"));
chmod 0600, "$dir/haproxy-client.pem";

my $password = 'Scr4pe:me"now';
append_to_file("$dir/metrics.auth", "prometheus:$password\n");
chmod 0600, "$dir/metrics.auth";

my $etcd = PgHa::Etcd->new(members => 1);
my $tls_conf = "pg_ha.api_certfile = '$dir/server1.pem'\n"
  . "pg_ha.api_keyfile = '$dir/server1.key'\n"
  . "pg_ha.api_cafile = '$dir/ca.pem'\n"
  . "pg_ha.metrics_certfile = '$dir/server1.pem'\n"
  . "pg_ha.metrics_keyfile = '$dir/server1.key'\n"
  . "pg_ha.metrics_auth_file = '$dir/metrics.auth'\n";
my $primary = new_primary(name => 'node1', etcd => $etcd, ttl => 5, extra_conf => $tls_conf);
my $replica = new_replica(name => 'node2', from => $primary);

# curl: { rc, code ('000' without an HTTP answer), body, err }
sub curl
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-sS', '-m', '5', '-w', '\n%{http_code}', @args ],
		'>', \$out, '2>', \$err, '<', \undef);
	my $rc = $? >> 8;
	my ($body, $code) = $out =~ /^(.*)\n(\d{3})$/s;
	return { rc => $rc, code => $code // '000', body => $body // $out, err => $err };
}

sub https
{
	my ($port, $path, @args) = @_;
	return curl('--cacert', "$dir/ca.pem", @args, "https://127.0.0.1:$port$path");
}

# subject and serial of the certificate a port serves
sub served_cert
{
	my ($port) = @_;
	my ($out, $err, $x509) = ('', '', '');
	IPC::Run::run([ 'openssl', 's_client', '-connect', "127.0.0.1:$port",
		  '-CAfile', "$dir/ca.pem", '-cert', "$dir/client.pem", '-key', "$dir/client.key" ],
		'<', \'', '>', \$out, '2>', \$err, IPC::Run::timeout(10));
	IPC::Run::run([ 'openssl', 'x509', '-noout', '-subject', '-serial' ],
		'<', \$out, '>', \$x509, '2>', \$err);
	return $x509;
}

sub reload
{
	my ($node, $sql) = @_;
	$node->safe_psql('postgres', "$sql; SELECT pg_reload_conf()");
}

my $api1 = $primary->api_port;
my $api2 = $replica->api_port;

subtest 'https with --cacert: the health API answers over TLS' => sub {
	wait_ok(sub { https($api1, '/primary')->{code} eq '200' }, 'node1: GET /primary over TLS -> 200',
		timeout => 30);
	my $r = https($api1, '/primary');
	is($r->{rc}, 0, 'curl verified the certificate against the CA') or diag($r->{err});
	wait_ok(sub { https($api2, '/replica')->{code} eq '200' }, 'node2: GET /replica over TLS -> 200',
		timeout => 30);
	is(https($api2, '/primary')->{code}, '503', 'node2: GET /primary over TLS -> 503');
	is(https($api1, '/primary', '-X', 'OPTIONS')->{code}, '200', 'OPTIONS /primary over TLS (what HAProxy sends)');
	wait_ok(sub { (($primary->member_key_json // {})->{api_url} // '') eq "https://127.0.0.1:$api1/patroni" },
		'the member key publishes an https api_url', timeout => 30);
	like(served_cert($api1), qr/CN\s*=\s*pg_ha-server-one/, 'the configured certificate is served');
};

subtest 'a plaintext client on a TLS port gets a clear refusal, no health answer' => sub {
	my $r = curl("http://127.0.0.1:$api1/primary");
	is($r->{code}, '400', 'http:// to the TLS port -> 400');
	like($r->{body}, qr/https/, 'the answer says to use https');
	$r = curl('-X', 'OPTIONS', "http://127.0.0.1:$api1/primary");
	isnt($r->{code}, '200', 'OPTIONS over plaintext never gets a 200');
	$r = curl("http://127.0.0.1:" . $primary->metrics_port . '/metrics');
	isnt($r->{code}, '200', 'plaintext scrape of the TLS metrics port refused');
};

subtest 'a handshake that never finishes is dropped and blocks nobody' => sub {
	my $silent = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $api1) or die;
	my $partial = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $api1) or die;
	# a TLS record header that promises 512 bytes, then nothing
	syswrite($partial, "\x16\x03\x01\x02\x00\x01");
	is(https($api1, '/primary')->{code}, '200', 'other clients are served meanwhile');
	for my $s ([ 'silent client', $silent ], [ 'half a ClientHello', $partial ])
	{
		my ($what, $sock) = @$s;
		my $eof = wait_for(sub {
			my $rin = '';
			vec($rin, fileno($sock), 1) = 1;
			return 0 unless select(my $rout = $rin, undef, undef, 0.5);
			my $n = sysread($sock, my $buf, 4096);
			return defined $n && $n == 0 ? 1 : (defined $n ? 0 : 1);
		}, timeout => 30, what => "$what dropped");
		ok($eof, "$what: the server closes the connection at the request deadline");
	}
};

subtest 'metrics basic auth: 401 with WWW-Authenticate, 200 with the credentials' => sub {
	my $mp = $primary->metrics_port;
	my $r = https($mp, '/metrics', '-i');
	is($r->{code}, '401', 'no credentials -> 401');
	like($r->{body}, qr/^WWW-Authenticate: Basic realm="[^"]+"/mi, 'with a WWW-Authenticate challenge');
	is(https($mp, '/metrics', '-u', 'prometheus:wrong')->{code}, '401', 'wrong password -> 401');
	is(https($mp, '/metrics', '-u', "nobody:$password")->{code}, '401', 'wrong user -> 401');
	is(https($mp, '/metrics', '-H', 'Authorization: Basic !!!notbase64')->{code}, '401', 'garbage -> 401');
	wait_ok(sub { my $x = https($mp, '/metrics', '-u', "prometheus:$password"); $x->{code} eq '200' && $x->{body} =~ /^pg_up /m },
		'the right credentials -> 200 with the metrics', timeout => 30);
	is(https($api1, '/metrics')->{code}, '200', 'the API port\'s /metrics needs no credentials (as Patroni)');
	my @leaks = grep { /Scr4pe|cHJvbWV0aGV1czpTY3I0cGU/ } split /\n/, slurp_file($primary->logfile);
	is(scalar(@leaks), 0, 'credentials never reach the server log') or diag join("\n", @leaks);
};

subtest 'verify_client required: no or foreign client certificate refused, ours accepted' => sub {
	reload($primary, "ALTER SYSTEM SET pg_ha.api_verify_client = 'required'");
	wait_ok(sub { https($api1, '/primary')->{code} eq '000' }, 'no client certificate: no answer', timeout => 30);
	my $r = https($api1, '/primary');
	isnt($r->{rc}, 0, 'curl reports the refused handshake') and note($r->{err});
	is(https($api1, '/primary', '--cert', "$dir/rogue.pem", '--key', "$dir/rogue.key")->{code}, '000',
		'a client certificate no trusted CA signed is refused');
	is(https($api1, '/primary', '--cert', "$dir/client.pem", '--key', "$dir/client.key")->{code}, '200',
		'the CA-signed client certificate is accepted');
};

subtest 'HAProxy check-ssl verify required ca-file: primary up, replica down' => sub {
	my $haproxy = $ENV{HAPROXY} || 'haproxy';
	plan skip_all => 'haproxy not installed' if system("$haproxy -v >/dev/null 2>&1") != 0;
	my $front = PostgreSQL::Test::Cluster::get_free_port();
	my $sock = "$dir/haproxy.sock";
	my $ssl = "check-ssl verify required ca-file $dir/ca.pem crt $dir/haproxy-client.pem";
	my $cfg = <<"EOF";
global
    maxconn 100
    stats socket $sock mode 600 level admin
defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    timeout check 2s
listen pg-test-primary
    bind 127.0.0.1:$front
    option httpchk
    http-check send meth OPTIONS uri /primary
    http-check expect status 200
    default-server inter 1s fastinter 1s downinter 1s rise 2 fall 2
    server node1 127.0.0.1:@{[ $primary->port ]} check port $api1 $ssl
    server node2 127.0.0.1:@{[ $replica->port ]} check port $api2 $ssl
EOF
	append_to_file("$dir/haproxy.cfg", $cfg);
	my ($out, $err) = ('', '');
	IPC::Run::run([ $haproxy, '-c', '-f', "$dir/haproxy.cfg" ], '>', \$out, '2>', \$err);
	is($? >> 8, 0, 'haproxy accepts check-ssl with verify required') or diag("$out$err");
	my $h = IPC::Run::start([ $haproxy, '-db', '-f', "$dir/haproxy.cfg" ],
		'>', "$dir/haproxy.out", '2>&1', "$dir/haproxy.out");
	my $status = sub {
		my $s = IO::Socket::UNIX->new(Peer => $sock) or return {};
		print $s "show stat\n";
		my @lines = <$s>;
		my @head = split /,/, substr(shift(@lines) // '# ', 2);
		my %st;
		for my $l (@lines)
		{
			my %f;
			@f{@head} = split /,/, $l;
			$st{ $f{svname} } = $f{status} if $f{svname};
		}
		return \%st;
	};
	wait_ok(sub { my $s = $status->(); ($s->{node1} // '') eq 'UP' && ($s->{node2} // '') =~ /^DOWN/ },
		'HAProxy marks node1 (primary) UP and node2 (replica) DOWN over TLS', timeout => 60)
	  or diag(explain($status->()), slurp_file("$dir/haproxy.out"));
	$h->kill_kill;
};

subtest 'SIGHUP reload swaps the certificate; a bad new one keeps the old' => sub {
	like(served_cert($api1), qr/serial=1001/i, 'before: serial 1001');
	reload($primary, "ALTER SYSTEM SET pg_ha.api_certfile = '$dir/server2.pem';"
		  . "ALTER SYSTEM SET pg_ha.api_keyfile = '$dir/server2.key'");
	wait_ok(sub { served_cert($api1) =~ /pg_ha-server-two/ }, 'after reload: the new certificate is served',
		timeout => 30);
	like(served_cert($api1), qr/serial=2002/i, 'after reload: serial 2002');

	my $log_at = -s $primary->logfile;
	reload($primary, "ALTER SYSTEM SET pg_ha.api_certfile = '$dir/garbage.pem'");
	wait_ok(sub { slurp_file($primary->logfile, $log_at) =~ /could not load TLS certificate file "\Q$dir\E\/garbage.pem"/ },
		'a bad new certificate: the log names the file', timeout => 30);
	my $log = slurp_file($primary->logfile, $log_at);
	like($log, qr/keeps (serving|using) the certificate/, 'the log says the old certificate stays') or diag($log);
	like(served_cert($api1), qr/pg_ha-server-two/, 'the previous certificate is still served');
	is(https($api1, '/primary', '--cert', "$dir/client.pem", '--key', "$dir/client.key")->{code}, '200',
		'and the API still answers');
};

subtest 'bad key or certificate at start: clear error, no plaintext, no crash loop' => sub {
	my $node = new_node(name => 'node3', etcd => $etcd, cluster => 'badtls', ttl => 5,
		extra_conf => "pg_ha.api_certfile = '$dir/server1.pem'\npg_ha.api_keyfile = '$dir/open.key'\n"
		  . "pg_ha.metrics_certfile = '$dir/garbage.pem'\npg_ha.metrics_keyfile = '$dir/server1.key'\n");
	$node->start;
	my ($api, $mp) = ($node->api_port, $node->metrics_port);
	wait_ok(sub { slurp_file($node->logfile) =~ /file named by pg_ha.api_keyfile refused: "\Q$dir\E\/open.key" has group or world access/ },
		'the log names the key file and why', timeout => 30);
	wait_ok(sub { slurp_file($node->logfile) =~ /could not load TLS certificate file "\Q$dir\E\/garbage.pem"/ },
		'the log names the bad certificate file', timeout => 30);
	my $pm = $node->postmaster_pid;
	my ($http) = grep { (PgHa::Node::process_title($_) // '') =~ /pg_ha http/ } PgHa::Node::children_of($pm);
	ok($http, 'the listener worker runs');
	sleep 3;
	is(curl("http://127.0.0.1:$api/health")->{code}, '000', 'API port: no plaintext answer');
	is(https($api, '/health')->{code}, '000', 'API port: no TLS answer without a usable key');
	is(curl("http://127.0.0.1:$mp/metrics")->{code}, '000', 'metrics port: no plaintext answer');
	my ($again) = grep { (PgHa::Node::process_title($_) // '') =~ /pg_ha http/ } PgHa::Node::children_of($pm);
	is($again, $http, 'the listener worker was not restarted (no crash loop)');

	# fixing the key and reloading brings the API up with TLS
	chmod 0600, "$dir/open.key";
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	wait_ok(sub { https($api, '/health')->{code} eq '200' }, 'after fixing the key and a reload: TLS served',
		timeout => 30);
	$node->stop('fast');
};

$replica->stop('fast');
$primary->stop('fast');
done_testing();
