
# pg_ha.etcd_endpoints refuses URLs with a user name or password
# ("http://user:password@host:2379"): the value of a parameter shows in
# SHOW, pg_settings and every reload's log line, so a password in it leaks.
# It refuses "?query" and "#fragment" too, which made every request fail.
# The error never quotes the password: not at ALTER SYSTEM, not at reload,
# not at server start, where the node stays "misconfigured" (issue 11,
# part 4).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my $node = PgHa::Cluster::new_primary(name => 'node1', etcd => $etcd, ttl => 5);
wait_for(sub { ($etcd->get($node->ha_key('leader')) // '') eq 'node1' },
	timeout => 30, what => 'node1 leads', fatal => 1);
my $good = $node->safe_psql('postgres', 'SHOW pg_ha.etcd_endpoints');
(my $hostport = $good) =~ s{^https?://}{};

my $secret = 'Pw0rdXyzzy';

# ALTER SYSTEM refuses; nothing in the error quotes the secret.
for my $case (
	[ 'user and password', "http://pgha:$secret\@$hostport", qr/user name or password/ ],
	[ 'user only', "http://$secret\@$hostport", qr/user name or password/ ],
	[ 'second of two endpoints', "$good,http://pgha:$secret\@$hostport", qr/user name or password/ ],
	[ 'a comma in the password', "http://pgha:a b,$secret\@$hostport", qr/user name or password/ ],
	[ 'a query', "$good/?token=$secret", qr/query|fragment/ ],
	[ 'a fragment', "$good#$secret", qr/query|fragment/ ])
{
	my ($name, $value, $re) = @$case;
	my ($ok, $state, $err) = try_sql($node, "ALTER SYSTEM SET pg_ha.etcd_endpoints = '$value'");
	ok(!$ok, "$name: refused");
	is($state, '22023', "$name: SQLSTATE 22023");
	like($err, $re, "$name: the error says why");
	unlike($err, qr/\Q$secret\E/, "$name: the error does not quote the secret");
}
is($node->safe_psql('postgres', 'SHOW pg_ha.etcd_endpoints'), $good, 'SHOW still shows the old endpoints');

# A reload with the secret in postgresql.conf: refused, the log does not quote it.
my $conf       = $node->data_dir . '/postgresql.conf';
my $base       = slurp_file($conf);
my $log_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "pg_ha.etcd_endpoints = 'http://pgha:$secret\@$hostport'\n");
$node->reload;
wait_for(sub { log_since($node, $log_offset) =~ /pg_ha\.etcd_endpoints/ },
	timeout => 10, what => 'the reload logged');
is($node->safe_psql('postgres', 'SHOW pg_ha.etcd_endpoints'), $good, 'reload: the value is refused');
my $log = log_since($node, $log_offset);
like($log, qr/user name or password/, 'reload: the log says why');
unlike($log, qr/\Q$secret\E/, 'reload: the log does not quote the secret');

# The same at server start: the node is misconfigured and says why.
my @lines = split /\n/, slurp_file($conf);
my $line  = scalar @lines;
$log_offset = -s $node->logfile;
$node->restart;
my $st = wait_for(
	sub { my $s = eval { $node->ha_status }; $s && $s->{state} eq 'misconfigured' ? $s : undef },
	timeout => 30, what => 'node1 misconfigured') // $node->ha_status;
is($st->{state}, 'misconfigured', 'start: the node is misconfigured');
like($st->{last_error} // '', qr/postgresql\.conf:$line\b.*user name or password/,
	'start: pg_ha.status() names the line and why');
unlike($st->{last_error} // '', qr/\Q$secret\E/, 'start: pg_ha.status() does not quote the secret');
ok(!$st->{lease_held}, 'start: the node holds no lease');
$log = log_since($node, $log_offset);
like($log, qr/user name or password/, 'start: the log says why');
unlike($log, qr/\Q$secret\E/, 'start: the log does not quote the secret');
my %keys = %{ $etcd->get_prefix('/') };
ok(!grep({ /\Q$secret\E/ } keys %keys, values %keys), 'no etcd key or value holds the secret');

# restore the file for a clean stop
open my $fh, '>', $conf or die "$conf: $!";
print $fh $base;
close $fh;
$node->stop('fast');
done_testing();
