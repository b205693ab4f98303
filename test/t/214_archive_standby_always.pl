
# archive_mode = always on a streaming standby that shares the primary's
# repository: both push the same segments, whichever comes second finds
# identical content and succeeds, so the standby's archiver never stalls
# and nothing is reported as a mismatch.

use strict;
use warnings;

use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Archive;

my $repo = PostgreSQL::Test::Utils::tempdir() . '/repo';
make_path($repo);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', archive_conf(repo => $repo, mode => 'always'));
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_ha');
$primary->backup('base');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', "pg_ha.node_name = 'standby'\n");
$standby->start;

my $last;
for my $i (1 .. 4)
{
	$primary->safe_psql('postgres',
		"CREATE TABLE t$i AS SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
	$last = $primary->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
}
$primary->wait_for_catchup($standby);

for my $node ($primary, $standby)
{
	my $name = $node->name;
	ok($node->poll_query_until('postgres',
			"SELECT last_archived_wal >= '$last' FROM pg_stat_archiver"),
		"$name: archived up to $last");
	is($node->safe_psql('postgres', 'SELECT failed_count FROM pg_stat_archiver'),
		'0', "$name: no archiver failures");
}
my ($already, $mismatch) = split /\|/, $standby->safe_psql('postgres',
	'SELECT already_archived, mismatch_count FROM pg_ha.archive_status()');
my ($p_already) = $primary->safe_psql('postgres', 'SELECT already_archived FROM pg_ha.archive_status()');
cmp_ok($already + $p_already, '>=', 1,
	"the second pusher of a segment found it identical ($already on the standby, $p_already on the primary)");
is($mismatch, '0', 'standby: no mismatch');
is($primary->safe_psql('postgres', 'SELECT mismatch_count FROM pg_ha.archive_status()'),
	'0', 'primary: no mismatch');

$standby->stop;
$primary->stop;
done_testing();
