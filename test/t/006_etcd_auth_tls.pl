# etcd user/password authentication (token re-authentication when tokens
# expire) and TLS with client certificates; the password stays out of SHOW,
# the logs and etcd.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test qw(wait_for);

my $password = q{s3cr"et pw};

subtest 'password authentication, with tokens that expire every 2 s' => sub {
	my $etcd = PgHa::Etcd->new(members => 1, name => 'authetcd',
		extra_args => [ '--auth-token=simple', '--auth-token-ttl=2' ]);
	$etcd->ctl_ok('user', 'add', 'root', '--new-user-password=rootpw');
	$etcd->ctl_ok('user', 'add', 'pgha', "--new-user-password=$password");
	$etcd->ctl_ok('role', 'add', 'pgha');
	$etcd->ctl_ok('role', 'grant-permission', 'pgha', '--prefix=true', 'readwrite', '/service/');
	$etcd->ctl_ok('user', 'grant-role', 'pgha', 'pgha');
	$etcd->ctl_ok('auth', 'enable');
	$etcd->add_ctl_args('--user=root:rootpw');

	my $pwdir = PostgreSQL::Test::Utils::tempdir('pw_');
	PostgreSQL::Test::Utils::append_to_file("$pwdir/etcd.pw", "$password\n");
	PostgreSQL::Test::Utils::append_to_file("$pwdir/wrong.pw", "wrong-pw\n");
	chmod 0600, "$pwdir/etcd.pw", "$pwdir/wrong.pw";
	my $node = PgHa::Cluster::new_primary(
		name => 'authnode', etcd => $etcd, ttl => 6,
		extra_conf => "pg_ha.etcd_user = 'pgha'\npg_ha.etcd_password_file = '$pwdir/etcd.pw'\n");
	wait_for(sub { ($etcd->get($node->ha_key('leader')) // '') eq 'authnode' },
		timeout => 30, what => 'leader key written with authentication');
	is($etcd->get($node->ha_key('leader')), 'authnode', 'leader key written by an authenticated client');

	# tokens expire every 2 s: the lease must survive several renewals
	sleep 8;
	my $st = $node->ha_status;
	ok($st->{lease_held}, 'lease still held after tokens expired (re-authentication)');
	is($st->{etcd_reachable}, 1, 'etcd reachable after tokens expired');
	is($etcd->get($node->ha_key('leader')), 'authnode', 'leader key kept across token expiry');

	my ($rc, $out, $err0) = $node->psql('postgres', 'SHOW pg_ha.etcd_password');
	like($err0, qr/unrecognized configuration parameter/, 'no parameter holds the password itself');

	# a wrong password: a clear error that does not quote any password
	$node->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.etcd_password_file = '$pwdir/wrong.pw'; SELECT pg_reload_conf()");
	wait_for(sub { ($node->ha_status->{last_error} // '') =~ /authentication/ },
		timeout => 30, what => 'authentication error reported');
	my $err = $node->ha_status->{last_error};
	like($err, qr/authentication as user "pgha" failed/, 'status names the failing user');
	unlike($err, qr/wrong-pw|s3cr/, 'the error does not quote a password');
	$node->safe_psql('postgres', "ALTER SYSTEM RESET pg_ha.etcd_password_file; SELECT pg_reload_conf()");
	wait_for(sub { $node->ha_status->{etcd_reachable} }, timeout => 30, what => 'reachable again');

	my @leaks = grep { /s3cr"et|wrong-pw/ } split /\n/, slurp_file($node->logfile);
	is(scalar(@leaks), 0, 'pg_ha never writes a password to the server log')
	  or diag join("\n", @leaks);
	my %keys = %{ $etcd->get_prefix('/') };
	ok(!grep({ /s3cr|wrong-pw/ } values %keys), 'no etcd value contains a password');
	$node->stop('fast');
};

subtest 'TLS with client certificates' => sub {
	plan skip_all => 'openssl not installed' unless `which openssl` =~ /openssl/;
	my $dir = PostgreSQL::Test::Utils::tempdir('tls_');
	system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $dir/ca.key -out $dir/ca.pem -days 2 -subj /CN=pg_ha-test-ca 2>/dev/null") == 0 or die;
	for my $who (qw(server client))
	{
		system("openssl req -newkey rsa:2048 -nodes -keyout $dir/$who.key -out $dir/$who.csr -subj /CN=$who 2>/dev/null") == 0 or die;
		open my $ext, '>', "$dir/$who.ext" or die;
		print $ext ($who eq 'server' ? "subjectAltName=IP:127.0.0.1\n" : "extendedKeyUsage=clientAuth\n");
		close $ext;
		system("openssl x509 -req -in $dir/$who.csr -CA $dir/ca.pem -CAkey $dir/ca.key -CAcreateserial -out $dir/$who.pem -days 2 -extfile $dir/$who.ext 2>/dev/null") == 0 or die;
	}
	chmod 0600, "$dir/client.key", "$dir/server.key";
	my $etcd = PgHa::Etcd->new(members => 1, name => 'tlsetcd',
		tls => { ca => "$dir/ca.pem", server_cert => "$dir/server.pem", server_key => "$dir/server.key",
			client_cert => "$dir/client.pem", client_key => "$dir/client.key" });
	like($etcd->endpoints, qr{^https://}, 'etcd serves https');

	my $node = PgHa::Cluster::new_primary(
		name => 'tlsnode', etcd => $etcd, ttl => 6,
		extra_conf => "pg_ha.etcd_cacert = '$dir/ca.pem'\npg_ha.etcd_cert = '$dir/client.pem'\npg_ha.etcd_key = '$dir/client.key'\n");
	wait_for(sub { ($etcd->get($node->ha_key('leader')) // '') eq 'tlsnode' },
		timeout => 30, what => 'leader key written over TLS');
	is($etcd->get($node->ha_key('leader')), 'tlsnode', 'leader key written over TLS with a client certificate');

	# without the client certificate etcd refuses the connection
	$node->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.etcd_cert = ''; ALTER SYSTEM SET pg_ha.etcd_key = ''; SELECT pg_reload_conf()");
	wait_for(sub { !$node->ha_status->{etcd_reachable} }, timeout => 30, what => 'refused without client certificate');
	ok(!$node->ha_status->{etcd_reachable}, 'no client certificate: etcd unreachable, reported');
	$node->stop('fast');
};

done_testing();
