
# kill -9 in the middle of pushing (of the archiver, which crash-restarts
# the server, and of the whole postgres) never leaves an object restore
# would accept that is not the original, and archiving resumes until every
# segment is archived byte-identical.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Compare;
use File::Copy;
use File::Find;
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

my $node = PostgreSQL::Test::Cluster->new('crash');
# 1 MB segments: many files, each pushed in a fraction of a second
$node->init(allows_streaming => 1, extra => ['--wal-segsize=1']);
# zstd level 19 is slow enough that kills land mid-push
$node->append_conf('postgresql.conf', archive_conf(repo => $repo, name => 'crash') . qq{
pg_ha.archive_compression_level = 19
wal_keep_size = '2GB'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_ha');
my $pgdata = $node->data_dir;
my $sysid  = $node->safe_psql('postgres',
	'SELECT system_identifier FROM pg_control_system()');

my $batch = 0;
sub new_segments
{
	my ($n) = @_;
	my $last;
	for (1 .. $n)
	{
		$batch++;
		$node->safe_psql('postgres',
			"CREATE TABLE b$batch AS SELECT g, md5(g::text) AS h FROM generate_series(1, 60000) g");
		$last = $node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
	}
	return $last;
}

sub object_path
{
	my ($seg) = @_;
	return "$repo/archtest/$sysid/wal/" . substr($seg, 0, 8) . '/'
	  . substr($seg, 0, 16) . "/$seg";
}

sub postmaster_pid
{
	open my $fh, '<', "$pgdata/postmaster.pid" or return undef;
	my $pid = <$fh>;
	close $fh;
	chomp $pid;
	return $pid;
}

sub child_pids
{
	my ($ppid, $re) = @_;
	my @pids;
	for my $line (split /\n/, `ps -o pid=,args= --ppid $ppid`)
	{
		my ($pid, $args) = $line =~ /^\s*(\d+)\s+(.*)$/ or next;
		push @pids, $pid if !defined $re || $args =~ $re;
	}
	return @pids;
}

sub wait_mid_push
{
	return $node->poll_query_until('postgres',
		'SELECT in_flight > 0 AND pending_count > 3 FROM pg_ha.archive_status()');
}

# Every object in the repository must restore and equal the segment in
# pg_wal; temp files must not be restorable.  Returns (objects, tmp files).
sub check_repository
{
	my ($label) = @_;
	my (@objects, @tmpfiles);
	find(sub {
			return unless -f $_;
			if (/^[0-9A-F]{24}$/) { push @objects, $_ }
			elsif (/\.tmp\./)     { push @tmpfiles, $_ }
		},
		$repo);
	my $bad = 0;
	for my $seg (@objects)
	{
		my ($out, $err) = ('', '');
		IPC::Run::run([ $restore, '--repo', $repo, '--cluster', 'archtest', '--sysid', $sysid,
				'--prefetch', '0', $seg, "$tmp/check" ], '>', \$out, '2>', \$err);
		my $rc = $? >> 8;
		if ($rc != 0 || (-f "$pgdata/pg_wal/$seg" && compare("$tmp/check", "$pgdata/pg_wal/$seg") != 0))
		{
			diag "$label: $seg: rc $rc $err";
			$bad++;
		}
	}
	is($bad, 0, "$label: all " . scalar(@objects) . ' objects in the repository restore byte-identical');
	for my $t (@tmpfiles)
	{
		my ($name) = $t =~ /^([0-9A-F]{24})\.tmp\./;
		next unless $name;
		next if grep { $_ eq $name } @objects;
		unlink "$tmp/check";
		IPC::Run::run([ $restore, '--repo', $repo, '--cluster', 'archtest', '--sysid', $sysid,
				'--prefetch', '0', $name, "$tmp/check" ], '>', \my $o, '2>', \my $e);
		my $rc = $? >> 8;
		# The server may still be running and archive $name between the
		# scan above and this restore.  Then restore may succeed, but only
		# with the complete object, never with the temp file's bytes.
		if ($rc == 0 && -f object_path($name))
		{
			ok(-f "$pgdata/pg_wal/$name" && compare("$tmp/check", "$pgdata/pg_wal/$name") == 0,
				"$label: $name was archived meanwhile: restore gives the original segment");
		}
		else
		{
			is($rc, 1, "$label: $name exists only as a temp file: restore says not found");
		}
	}
	return (scalar @objects, scalar @tmpfiles);
}

sub wait_all_archived
{
	my ($seg) = @_;
	return $node->poll_query_until('postgres',
		"SELECT last_archived_wal >= '$seg' AND NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') FROM pg_stat_archiver");
}

# --- kill -9 of the archiver mid-push: the server crash-restarts.
my $last = new_segments(5);
ok(wait_mid_push(), 'archiver: pushes are in flight');
my ($archiver) = child_pids(postmaster_pid(), qr/archiver/);
ok($archiver, "archiver: found the archiver process ($archiver)");
my $log_offset = -s $node->logfile;
kill 'KILL', $archiver;
# wait for the postmaster to notice, then for it to accept connections again
# (a psql started in between can die under IPC::Run)
my $back = 0;
for (1 .. 600)
{
	if ($node->log_contains(qr/all server processes terminated; reinitializing/, $log_offset)
		&& system('pg_isready', '-q', '-h', $node->host, '-p', $node->port) == 0)
	{
		$back = 1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
ok($back && $node->poll_query_until('postgres', 'SELECT true'),
	'archiver: server is back after the crash restart');
ok($node->log_contains(qr/archiver process \(PID $archiver\) was terminated by signal 9/),
	'archiver: postmaster saw the archiver killed');
check_repository('after kill -9 of the archiver');

# --- kill -9 of postgres (postmaster and every child) mid-push.
$last = new_segments(4);
ok(wait_mid_push(), 'postgres: pushes are in flight');
my $pm = postmaster_pid();
my @children = child_pids($pm);
kill 'KILL', $pm, @children;
$node->kill9;    # the framework's bookkeeping; the postmaster is gone already
# children of a SIGKILLed postmaster may take a moment to vanish
for (1 .. 100)
{
	last unless grep { kill 0, $_ } @children;
	select(undef, undef, undef, 0.1);
}

# A write cut short leaves at most <object>.tmp.<pid> (the object's name
# is only linked after the fsync).  Kills rarely land inside the write
# itself, so plant such a leftover for a segment still waiting: half of a
# real object under the temp name.
my ($pending) = grep { !-f object_path($_) } sort map { m{/([0-9A-F]{24})\.ready$} ? $1 : () }
  glob("$pgdata/pg_wal/archive_status/*.ready");
my ($some_object) = grep { -f $_ } map { object_path($_) }
  sort map { m{/([0-9A-F]{24})\.done$} ? $1 : () } glob("$pgdata/pg_wal/archive_status/*.done");
ok($pending && $some_object, "postgres: $pending is waiting and not in the repository");
my $obj = object_path($pending);
make_path(dirname($obj));
copy($some_object, "$obj.tmp.99999") or die "copy: $!";
truncate("$obj.tmp.99999", int((-s $some_object) / 2));
my ($n_obj, $n_tmp) = check_repository('after kill -9 of postgres');
cmp_ok($n_tmp, '>=', 1, 'after kill -9 of postgres: a partial temp file is present');

# fast compression again; everything pending gets archived
$node->append_conf('postgresql.conf', "pg_ha.archive_compression_level = 1\n");
$node->start;
ok(wait_all_archived($last), 'after restart: every segment is archived');
my ($objects) = check_repository('after archiving resumed');
ok(-f object_path($pending), "after archiving resumed: $pending was archived beside the leftover temp file");
cmp_ok($objects, '>=', 20, "after archiving resumed: $objects segments in the repository");

$node->stop;
done_testing();
