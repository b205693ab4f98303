
# Recovery from pg_ha's archive with pg_ha_restore as restore_command:
# point-in-time recovery to a timestamp reproduces exactly the rows
# committed before it; a fresh replica with no primary_conninfo catches up
# from the archive alone; the promoted node's timeline history file is
# archived under history/ and restores byte-identical.

use strict;
use warnings;

use File::Compare;
use File::Path qw(make_path);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Archive;

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $restore = "$bindir/pg_ha_restore";
my $tmp     = PostgreSQL::Test::Utils::tempdir();
my $repo    = "$tmp/repo";
make_path($repo);
my $restore_command = "$restore --repo $repo --cluster archtest %f %p";

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', archive_conf(repo => $repo));
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_ha');
$primary->safe_psql('postgres',
	'CREATE TABLE t (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())');
$primary->backup('base');

sub switch_and_wait
{
	my ($node) = @_;
	my $seg = $node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
	$node->poll_query_until('postgres',
		"SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver")
	  or die "timed out waiting for $seg to be archived";
	return $seg;
}

# committed before the target
$primary->safe_psql('postgres',
	"INSERT INTO t (id, note) SELECT g, 'before' FROM generate_series(1, 1000) g");
$primary->safe_psql('postgres', "UPDATE t SET note = 'before, updated' WHERE id <= 10");
my $target = $primary->safe_psql('postgres', 'SELECT clock_timestamp()');
# committed after it: new rows, an update and a delete of older ones
sleep 1;
$primary->safe_psql('postgres',
	"INSERT INTO t (id, note) SELECT g, 'after' FROM generate_series(1001, 2000) g");
$primary->safe_psql('postgres', "UPDATE t SET note = 'after' WHERE id BETWEEN 11 AND 20");
$primary->safe_psql('postgres', 'DELETE FROM t WHERE id BETWEEN 21 AND 30');
# more than one segment of WAL after the target
$primary->safe_psql('postgres',
	"CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g");
switch_and_wait($primary);

# --- PITR to the timestamp.
my $pitr = PostgreSQL::Test::Cluster->new('pitr');
$pitr->init_from_backup($primary, 'base');
$pitr->append_conf('postgresql.conf', qq{
restore_command = '$restore_command'
recovery_target_time = '$target'
recovery_target_action = 'promote'
pg_ha.node_name = 'pitr'
});
$pitr->set_recovery_mode;
$pitr->start;
ok($pitr->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
	'pitr: recovery reached the target and promoted');
is($pitr->safe_psql('postgres', 'SELECT count(*), min(id), max(id) FROM t'),
	'1000|1|1000', 'pitr: exactly the 1000 rows committed before the target');
is($pitr->safe_psql('postgres', "SELECT count(*) FROM t WHERE note = 'before, updated'"),
	'10', 'pitr: the update committed before the target is there');
is($pitr->safe_psql('postgres', "SELECT count(*) FROM t WHERE note = 'after'"),
	'0', 'pitr: nothing committed after the target');
is($pitr->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id BETWEEN 21 AND 30'),
	'10', 'pitr: the delete committed after the target did not happen');
ok($pitr->log_contains(qr/restored log file "[0-9A-F]{24}" from archive/),
	'pitr: WAL came from the archive');
is($pitr->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()'),
	'2', 'pitr: promoted to timeline 2');

# its timeline history file goes to the same repository, keyed by timeline
my $hist = '00000002.history';
ok($pitr->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_archiver WHERE last_archived_wal IS NOT NULL"),
	'pitr: the promoted node archives');
my $sysid = $primary->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
ok($pitr->poll_query_until('postgres',
		"SELECT NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = '$hist.ready')"),
	'pitr: history file archived');
ok(-f "$repo/archtest/$sysid/history/$hist", 'history: stored under <cluster>/<sysid>/history/');
my ($out, $err) = ('', '');
IPC::Run::run([ $restore, '--repo', $repo, '--cluster', 'archtest', '--sysid', $sysid,
		$hist, "$tmp/$hist" ], '>', \$out, '2>', \$err);
is($? >> 8, 0, 'history: pg_ha_restore fetches it');
ok(compare("$tmp/$hist", $pitr->data_dir . "/pg_wal/$hist") == 0, 'history: byte-identical');
$pitr->stop;

# --- A standby on recovery_target_timeline = 'latest' finds 00000002.history
# in the archive and follows the promoted PITR branch.
my $follower = PostgreSQL::Test::Cluster->new('follower');
$follower->init_from_backup($primary, 'base');
$follower->append_conf('postgresql.conf', qq{
restore_command = '$restore_command'
primary_conninfo = ''
pg_ha.node_name = 'follower'
});
$follower->set_standby_mode;
$follower->start;
ok($follower->poll_query_until('postgres', 'SELECT count(*) FROM t', '1000'),
	'latest timeline: the standby follows timeline 2 from the archive (1000 rows)');
ok($follower->log_contains(qr/restored log file "00000002\.history" from archive/),
	'latest timeline: 00000002.history came through pg_ha_restore');
$follower->stop;

# --- A fresh replica catches up from the archive alone.  (The PITR branch
# above shares the repository, so this one stays on timeline 1.)
my $replica = PostgreSQL::Test::Cluster->new('replica');
$replica->init_from_backup($primary, 'base');
# no --repo / --cluster: pg_ha_restore reads pg_ha.archive_repo and
# pg_ha.cluster from the data directory's postgresql.conf
$replica->append_conf('postgresql.conf', qq{
restore_command = '$restore %f %p'
primary_conninfo = ''
recovery_target_timeline = 'current'
pg_ha.node_name = 'replica'
});
$replica->set_standby_mode;
$replica->start;

$primary->safe_psql('postgres',
	"INSERT INTO t (id, note) SELECT g, 'later' FROM generate_series(5001, 5500) g");
my $expected = $primary->safe_psql('postgres', 'SELECT count(*), sum(id) FROM t');
switch_and_wait($primary);
ok($replica->poll_query_until('postgres', 'SELECT count(*) || \'|\' || sum(id) FROM t', $expected),
	"replica: caught up from the archive ($expected)");
is($replica->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_wal_receiver"), '0', 'replica: no WAL receiver: archive only');
ok($replica->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 't', 'replica: still a standby');
ok(-d $replica->data_dir . '/pg_wal/pg_ha_prefetch', 'replica: restore prefetched into pg_wal/pg_ha_prefetch');

$replica->stop;
$primary->stop;
done_testing();
