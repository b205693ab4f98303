
# pg_ha.etcd_key and pg_ha.etcd_password_file hold secrets: pg_ha refuses a
# file other users can read, with PostgreSQL's rule for ssl_key_file (owned
# by the server's user: 0600 or less; owned by root: 0640 or less; a regular
# file).  The error names the file and its mode (issue 11, part 4):
#   - at SET (ALTER SYSTEM);
#   - when the file is read, after its mode changed;
#   - at server start, which leaves the node "misconfigured".

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

my $dir = PostgreSQL::Test::Utils::tempdir('secret_');
for my $mode (qw(0600 0400 0640 0644 0604 0660))
{
	PostgreSQL::Test::Utils::append_to_file("$dir/file$mode", "not-a-real-secret\n");
	chmod oct($mode), "$dir/file$mode";
}
mkdir "$dir/adir";

sub alter_refused
{
	my ($param, $file, $re, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $state, $err) = try_sql($node, "ALTER SYSTEM SET $param = '$file'");
	ok(!$ok, "$name: refused");
	is($state, '22023', "$name: SQLSTATE 22023");
	like($err, $re, "$name: the error names the file and what is wrong");
	return;
}

sub alter_accepted
{
	my ($param, $file, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $state, $err) = try_sql($node, "ALTER SYSTEM SET $param = '$file'");
	ok($ok, "$name: accepted") or diag $err;
	try_sql($node, "ALTER SYSTEM RESET $param");
	return;
}

for my $param (qw(pg_ha.etcd_key pg_ha.etcd_password_file))
{
	for my $mode (qw(0644 0604 0640 0660))
	{
		alter_refused($param, "$dir/file$mode",
			qr/"\Q$dir\E\/file$mode" has group or world access \(mode $mode\)/s,
			"$param: a file of the server's user with mode $mode");
	}
	alter_refused($param, "$dir/adir", qr/"\Q$dir\E\/adir" is not a regular file/,
		"$param: a directory");
	alter_accepted($param, "$dir/file0600", "$param: mode 0600");
	alter_accepted($param, "$dir/file0400", "$param: mode 0400");
	alter_accepted($param, "$dir/absent", "$param: a file that does not exist yet");
}

# --- the mode is checked again where the file is read
PostgreSQL::Test::Utils::append_to_file("$dir/later", "not-a-real-secret\n");
chmod 0600, "$dir/later";
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pg_ha.etcd_password_file = '$dir/later'; SELECT pg_reload_conf()");
wait_for(sub { $node->safe_psql('postgres', 'SHOW pg_ha.etcd_password_file') eq "$dir/later" },
	timeout => 10, what => 'the reload');
my $config_before = $etcd->get($node->ha_key('config'));
chmod 0644, "$dir/later";
my ($ok, $state, $err) = try_sql($node, 'SELECT pg_ha.pause()');
ok(!$ok, 'a password file made world-readable after SET: pg_ha.pause() refuses');
like($err, qr/"\Q$dir\E\/later" has group or world access \(mode 0644\)/,
	'the error names the file and its mode');
# the HA worker writes the config key at initialization; pause would change it
is($etcd->get($node->ha_key('config')), $config_before, 'and nothing was written to etcd');
chmod 0600, "$dir/later";
$node->safe_psql('postgres', "ALTER SYSTEM RESET pg_ha.etcd_password_file; SELECT pg_reload_conf()");

# --- at server start: misconfigured, not running without its secret
my $log_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "pg_ha.etcd_key = '$dir/file0644'\n");
$node->restart;
my $st = wait_for(
	sub { my $s = eval { $node->ha_status }; $s && $s->{state} eq 'misconfigured' ? $s : undef },
	timeout => 30, what => 'node1 misconfigured') // $node->ha_status;
is($st->{state}, 'misconfigured', 'a world-readable key file at start: misconfigured');
like($st->{last_error} // '', qr/pg_ha\.etcd_key.*\Q$dir\E\/file0644.*0644/,
	'pg_ha.status() names the parameter, the file and the mode');
like(log_since($node, $log_offset), qr/"\Q$dir\E\/file0644" has group or world access \(mode 0644\)/,
	'and so does the log');
ok(!$st->{lease_held}, 'the node holds no lease');

$node->stop('fast');
done_testing();
