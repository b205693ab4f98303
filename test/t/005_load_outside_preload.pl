
# pg_ha only works from shared_preload_libraries: CREATE EXTENSION and LOAD
# outside of it fail with an error that says so (and a hint), and leave the
# server running and the database clean.

use strict;
use warnings;

use Test::More;
use PgHa::Cluster;

my $node = new_node(name => 'nopreload', preload => 0);
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_ha');
note "CREATE EXTENSION stderr: $err";
isnt($ret, 0, 'CREATE EXTENSION pg_ha fails without shared_preload_libraries');
like($err, qr/ERROR:.*shared_preload_libraries/,
	'CREATE EXTENSION error mentions shared_preload_libraries');
like($err, qr/HINT:\s+\S/, 'CREATE EXTENSION error has a hint');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'pg_ha'"),
	'0', 'no pg_ha extension left behind');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'pg_ha'"),
	'0', 'no pg_ha schema left behind');

($ret, $out, $err) = $node->psql('postgres', "LOAD 'pg_ha'");
note "LOAD stderr: $err";
isnt($ret, 0, "LOAD 'pg_ha' fails without shared_preload_libraries");
like($err, qr/ERROR:.*shared_preload_libraries/,
	'LOAD error mentions shared_preload_libraries');
like($err, qr/HINT:\s+\S/, 'LOAD error has a hint');

is($node->safe_psql('postgres', 'SELECT 1'), '1',
	'server still serves queries');
ok(!grep({ /pg_ha/ } map { PgHa::Node::process_title($_) // '' }
		  PgHa::Node::children_of($node->postmaster_pid)),
	'no pg_ha worker process runs');

$node->stop;
done_testing();
