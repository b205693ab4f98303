
# A full repository file system: the push fails with "No space left on
# device" in the log and pg_ha.archive_status(), pg_stat_archiver counts
# the failure, the WAL stays, no partial object or temp file is left, and
# archiving resumes once there is room.
#
# Needs a small file system the test user can write to, which a test
# cannot mount itself:
#   mount -t tmpfs -o size=24m tmpfs /mnt/pg_ha_tiny && chmod 1777 /mnt/pg_ha_tiny
#   PG_HA_TEST_SMALL_FS=/mnt/pg_ha_tiny make installcheck T=test/t/213_archive_full_disk.pl
# (tmpfs also exercises the fallback from O_DIRECT to buffered writes.)

use strict;
use warnings;

use File::Find;
use File::Path qw(make_path remove_tree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Archive;

my $small = $ENV{PG_HA_TEST_SMALL_FS};
plan skip_all => 'set PG_HA_TEST_SMALL_FS to a small writable file system (see the header)'
  unless $small && -d $small && -w $small;

my $repo = "$small/repo_$$";
make_path($repo);
my $big = PostgreSQL::Test::Utils::tempdir() . '/repo';
make_path($big);

my $node = PostgreSQL::Test::Cluster->new('full');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', archive_conf(repo => $repo, name => 'full') . qq{
pg_ha.archive_compression = 'none'
wal_keep_size = '1GB'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_ha');
my $pgdata = $node->data_dir;

my $batch = 0;
sub new_segment
{
	$batch++;
	$node->safe_psql('postgres',
		"CREATE TABLE b$batch AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");
	return $node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
}

my $log_offset = -s $node->logfile;
my $s1 = new_segment();
my $s2 = new_segment();
ok($node->poll_query_until('postgres',
		"SELECT failed_count > 0 FROM pg_stat_archiver"),
	'full disk: pg_stat_archiver counts the failure');
ok($node->log_contains(qr/WARNING:  pg_ha: could not archive "[0-9A-F]{24}": .*No space left on device/, $log_offset),
	'full disk: the WARNING says "No space left on device"');
like($node->safe_psql('postgres', 'SELECT last_error FROM pg_ha.archive_status()'),
	qr/No space left on device/, 'full disk: pg_ha.archive_status().last_error says so');
$node->safe_psql('postgres', 'CHECKPOINT');
ok(-f "$pgdata/pg_wal/archive_status/$s2.ready", "full disk: $s2 is still .ready after a checkpoint");
ok(-f "$pgdata/pg_wal/$s2", "full disk: $s2 is still in pg_wal");

my @left;
find(sub { push @left, $_ if -f $_ }, $repo);
my @tmp = grep { /\.tmp\./ } @left;
is(scalar(@tmp), 0, 'full disk: no temp file left behind');
my $sysid = $node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
my $bindir = `pg_config --bindir`;
chomp $bindir;
for my $f (grep { /^[0-9A-F]{24}$/ } @left)
{
	my $rc = system("$bindir/pg_ha_restore", '--repo', $repo, '--cluster', 'archtest',
		'--sysid', $sysid, '--prefetch', '0', $f, PostgreSQL::Test::Utils::tempdir() . '/x') >> 8;
	is($rc, 0, "full disk: object $f that made it restores");
}
ok(!-e "$repo/archtest/$sysid/wal/" . substr($s2, 0, 8) . '/' . substr($s2, 0, 16) . "/$s2",
	"full disk: no object for $s2");

# room again (another repository): archiving resumes
$node->append_conf('postgresql.conf', "pg_ha.archive_repo = '$big'\n");
$node->reload;
sleep 1;
my $s3 = new_segment();
ok($node->poll_query_until('postgres',
		"SELECT last_archived_wal >= '$s3' AND NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') FROM pg_stat_archiver"),
	'room again: every waiting segment is archived');

$node->stop;
remove_tree($repo);
done_testing();
