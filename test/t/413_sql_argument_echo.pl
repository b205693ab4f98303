
# An argument of a pg_ha SQL function is echoed in its error message only
# up to a bound: a 100 MB candidate name once went whole into one log line
# (and back to the client).  The echo is cut at a character boundary and
# marked with "..." (issue 11, part 4).

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

my $mb = 1024 * 1024;

# The longest line of the server log written since $offset.
sub longest_log_line
{
	my ($offset) = @_;
	my $max = 0;
	for (split /\n/, log_since($node, $offset))
	{
		$max = length($_) if length($_) > $max;
	}
	return $max;
}

for my $call ("pg_ha.switchover(repeat('x', 100 * $mb))",
	"pg_ha.failover(repeat('x', 100 * $mb))",
	"pg_ha.switchover(repeat('é', 10 * $mb))")
{
	my $offset = -s $node->logfile;
	my ($ok, $state, $err) = try_sql($node, "SELECT $call", timeout => 60);
	my ($msg) = $err =~ /ERROR:\s+[0-9A-Z]{5}:\s+(.*)/;
	ok(!$ok, "$call: refused");
	is($state, '22023', "$call: SQLSTATE 22023");
	like($msg // '', qr/^pg_ha: invalid member name "(x|é){1,64}\.\.\."/,
		"$call: the message echoes a bounded prefix of the name");
	ok(length($err) < 4096, "$call: the client gets a short error (" . length($err) . ' bytes)');
	my $longest = longest_log_line($offset);
	ok($longest < 4096, "$call: the longest log line is short ($longest bytes)");
}

# a short invalid name is still echoed whole
my ($ok, $state, $err) = try_sql($node, "SELECT pg_ha.switchover('bad name;')");
like($err, qr/invalid member name "bad name;"(?!\.)/, 'a short invalid name is echoed whole');

$node->stop('fast');
done_testing();
