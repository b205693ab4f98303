
# WAL archive module (archive_library = 'pg_ha'): what is archived comes
# back byte-identical with every compression; a re-offered identical file is
# accepted, a different one refused and reported; a missing or unwritable
# repository fails loudly and keeps the WAL; restore refuses damaged
# objects with the right exit codes.

use strict;
use warnings;

use File::Compare;
use File::Copy;
use File::Path qw(make_path);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgHa::Archive;
use PgHa::Test;

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $restore = "$bindir/pg_ha_restore";
my $tmp     = PostgreSQL::Test::Utils::tempdir();
my $repo    = "$tmp/repo";
make_path($repo);

my $node = PostgreSQL::Test::Cluster->new('arch');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', archive_conf(repo => $repo, name => 'arch') . qq{
wal_keep_size = '2GB'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_ha');
my $pgdata = $node->data_dir;
my $sysid  = $node->safe_psql('postgres',
	'SELECT system_identifier FROM pg_control_system()');

sub object_path
{
	my ($root, $seg) = @_;
	return "$root/archtest/$sysid/wal/" . substr($seg, 0, 8) . '/'
	  . substr($seg, 0, 16) . "/$seg";
}

sub status
{
	my $row = $node->safe_psql('postgres',
		"SELECT archived_count, already_archived, mismatch_count, failed_count,
		        coalesce(last_error, ''), pending_count
		   FROM pg_ha.archive_status()");
	my @f = split /\|/, $row;
	return {
		archived => $f[0], already => $f[1], mismatch => $f[2],
		failed => $f[3], last_error => $f[4], pending => $f[5] };
}

sub pg_failed_count
{
	return $node->safe_psql('postgres', 'SELECT failed_count FROM pg_stat_archiver');
}

# Write some WAL and end the segment; returns the segment's name.
my $batch = 0;
sub new_segment
{
	my ($rows) = @_;
	$batch++;
	$node->safe_psql('postgres',
		"CREATE TABLE b$batch AS SELECT g, md5(g::text) AS h FROM generate_series(1, "
		  . ($rows // 100000) . ") g");
	return $node->safe_psql('postgres',
		'SELECT pg_walfile_name(pg_switch_wal())');
}

sub wait_archived
{
	my ($seg) = @_;
	return $node->poll_query_until('postgres',
		"SELECT last_archived_wal >= '$seg' AND NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = '$seg.ready') FROM pg_stat_archiver");
}

sub run_restore
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $restore, '--repo', $repo, '--cluster', 'archtest', '--sysid', $sysid, @args ],
		'>', \$out, '2>', \$err);
	return ($? >> 8, $err);
}

sub header_compression
{
	my ($path) = @_;
	open my $fh, '<:raw', $path or return -1;
	my $h;
	read($fh, $h, 64);
	close $fh;
	return -1 unless defined $h && length($h) == 64 && substr($h, 0, 8) eq 'PGHAWAL1';
	return unpack('V', substr($h, 12, 4));
}

# --- Round trip: each compression decompresses to the original bytes.
my %code = (none => 0, lz4 => 1, zstd => 2);
for my $comp (qw(zstd lz4 none))
{
	$node->append_conf('postgresql.conf', "pg_ha.archive_compression = '$comp'\n");
	$node->reload;
	# the archiver and pushers pick up the reload before the next file
	sleep 1;
	my $seg = new_segment();
	ok(wait_archived($seg), "$comp: $seg archived");
	my $obj = object_path($repo, $seg);
	ok(-f $obj, "$comp: object stored under <cluster>/<sysid>/wal/<tli>/<tli+log>/<name>");
	is(header_compression($obj), $code{$comp}, "$comp: object header records $comp");
	if ($comp ne 'none')
	{
		cmp_ok(-s $obj, '<', 16 * 1024 * 1024, "$comp: object is smaller than the segment (" . (-s $obj) . " bytes)");
	}
	my ($rc, $err) = run_restore($seg, "$tmp/restored_$comp");
	is($rc, 0, "$comp: pg_ha_restore exits 0") or diag $err;
	ok(compare("$tmp/restored_$comp", "$pgdata/pg_wal/$seg") == 0,
		"$comp: restored segment is byte-identical to pg_wal/$seg");
}

# every segment archived so far restores byte-identical
my @done = sort map { m{/([0-9A-F]{24})\.done$} ? $1 : () }
  glob("$pgdata/pg_wal/archive_status/*.done");
my $identical = 0;
for my $seg (@done)
{
	next unless -f "$pgdata/pg_wal/$seg";
	my ($rc) = run_restore('--prefetch', '0', $seg, "$tmp/cmp");
	$identical++ if $rc == 0 && compare("$tmp/cmp", "$pgdata/pg_wal/$seg") == 0;
}
ok(@done >= 3, scalar(@done) . ' segments archived');
is($identical, scalar(@done), 'every archived segment restores byte-identical');

# the look-ahead workers run and the archiver uses their work
open my $pidfh, '<', "$pgdata/postmaster.pid" or die;
my $postmaster = <$pidfh>;
chomp $postmaster;
close $pidfh;
my @pushers = grep { /pg_ha archive pusher/ } split /\n/, `ps -o args= --ppid $postmaster`;
is(scalar(@pushers), 2, 'two look-ahead pushers run (pg_ha.archive_parallel = 2)');
my $ahead = $node->safe_psql('postgres', 'SELECT pushed_ahead + lookahead_hits FROM pg_ha.archive_status()');
note "files pushed ahead by the pushers: $ahead";

# --- A re-offered file with identical content is accepted.
{
	my $seg    = $done[1];
	my $before = status();
	rename("$pgdata/pg_wal/archive_status/$seg.done", "$pgdata/pg_wal/archive_status/$seg.ready")
	  or die "rename: $!";
	my $log_offset = -s $node->logfile;
	my $next = new_segment(1000);
	ok(wait_archived($next), 're-offer: archiving goes on');
	ok($node->poll_query_until('postgres',
			"SELECT NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = '$seg.ready')"),
		"re-offer: identical $seg is marked done again");
	my $after = status();
	is($after->{already}, $before->{already} + 1, 're-offer: counted as already archived');
	is($after->{mismatch}, $before->{mismatch}, 're-offer: no mismatch reported');
	ok($node->log_contains(qr/"\Q$seg\E" was already archived with identical content/, $log_offset),
		're-offer: logged as identical');
}

# --- A re-offered file whose archived copy differs is refused and reported.
{
	my ($a, $b) = @done[ 1, 2 ];
	my $obj_b = object_path($repo, $b);
	copy($obj_b, "$tmp/saved_b") or die;
	copy(object_path($repo, $a), $obj_b) or die;
	my $before      = status();
	my $fail_before = pg_failed_count();
	my $log_offset  = -s $node->logfile;
	rename("$pgdata/pg_wal/archive_status/$b.done", "$pgdata/pg_wal/archive_status/$b.ready")
	  or die "rename: $!";
	new_segment(1000);    # new WAL wakes the archiver, which then rescans
	ok($node->poll_query_until('postgres',
			"SELECT mismatch_count > $before->{mismatch} FROM pg_ha.archive_status()"),
		'mismatch: counted in pg_ha.archive_status().mismatch_count');
	ok($node->poll_query_until('postgres',
			"SELECT failed_count > $fail_before FROM pg_stat_archiver"),
		'mismatch: the archiver reports a failure (pg_stat_archiver)');
	ok($node->log_contains(qr/WARNING:  pg_ha: archive already holds "\Q$b\E" with different content/, $log_offset),
		'mismatch: WARNING in the log names the file');
	ok(-f "$pgdata/pg_wal/archive_status/$b.ready", 'mismatch: the file stays .ready');
	like(status()->{last_error}, qr/\Q$b\E.*different content/, 'mismatch: last_error says why');
	ok(compare($obj_b, object_path($repo, $a)) == 0, 'mismatch: the archived object was not overwritten');

	# put the right object back: archiving resumes
	copy("$tmp/saved_b", $obj_b) or die;
	my $next = new_segment(1000);
	ok(wait_archived($next), 'mismatch resolved: archiving resumes');
}

# --- A re-offered file whose archived copy is corrupt: refused, reported,
# not overwritten; moving the damaged object aside lets it be pushed again.
{
	my $c   = $done[2];
	my $obj = object_path($repo, $c);
	copy($obj, "$tmp/saved_c") or die;
	open my $fh, '+<:raw', $obj or die;
	seek($fh, 100, 0);
	print $fh "garbage";
	close $fh;
	my $before      = status();
	my $log_offset  = -s $node->logfile;
	rename("$pgdata/pg_wal/archive_status/$c.done", "$pgdata/pg_wal/archive_status/$c.ready")
	  or die "rename: $!";
	new_segment(1000);
	ok($node->poll_query_until('postgres',
			"SELECT corrupt_count > 0 FROM pg_ha.archive_status()"),
		'corrupt object: counted in corrupt_count');
	# the WARNING can reach the log a moment after the failure is counted
	ok(wait_for(sub { $node->log_contains(qr/WARNING:  pg_ha: archived copy of "\Q$c\E" is corrupt/, $log_offset) },
			timeout => 10, what => 'the corrupt-object WARNING'),
		'corrupt object: WARNING names the file');
	ok($node->log_contains(qr/payload checksum mismatch/, $log_offset), 'corrupt object: says which check failed');
	ok(-f "$pgdata/pg_wal/archive_status/$c.ready", 'corrupt object: the file stays .ready');

	rename($obj, "$obj.damaged") or die;
	my $next = new_segment(1000);
	ok(wait_archived($next), 'corrupt object moved aside: archiving resumes');
	my ($rc) = run_restore('--prefetch', '0', $c, "$tmp/c_again");
	ok($rc == 0 && compare("$tmp/c_again", "$pgdata/pg_wal/$c") == 0,
		'corrupt object moved aside: pushed again, restores byte-identical');
	unlink "$obj.damaged";
}

# --- Restore refuses damaged objects; exit codes.
{
	my $seg = $done[0];
	my $obj = object_path($repo, $seg);
	copy($obj, "$tmp/saved_obj") or die;

	my ($rc, $err) = run_restore('000000010000000100000099', "$tmp/x");
	is($rc, 1, 'restore: a file not in the archive exits 1');
	($rc) = run_restore('00000009.history', "$tmp/x");
	is($rc, 1, 'restore: a missing .history exits 1');

	# flip one byte in the middle of the payload
	open my $fh, '+<:raw', $obj or die;
	my $size = -s $obj;
	seek($fh, int($size / 2), 0);
	my $c;
	read($fh, $c, 1);
	seek($fh, int($size / 2), 0);
	print $fh chr(ord($c) ^ 0x55);
	close $fh;
	unlink "$tmp/x";
	($rc, $err) = run_restore('--prefetch', '0', $seg, "$tmp/x");
	is($rc, 2, 'restore: a bit-flipped object exits 2 (error, not "not found")');
	like($err, qr/checksum mismatch/, 'restore: says the checksum does not match');
	ok(!-e "$tmp/x", 'restore: nothing written for a corrupt object');
	($rc) = run_restore('--prefetch', '0', '--abort-on-error', $seg, "$tmp/x");
	is($rc, 255, 'restore: --abort-on-error exits 255 (postgres aborts recovery)');

	# truncated
	copy("$tmp/saved_obj", $obj) or die;
	truncate($obj, int((-s $obj) / 2));
	($rc, $err) = run_restore('--prefetch', '0', $seg, "$tmp/x");
	is($rc, 2, 'restore: a truncated object exits 2');
	like($err, qr/truncated|checksum/, 'restore: says it is truncated');

	copy("$tmp/saved_obj", $obj) or die;
	($rc) = run_restore('--prefetch', '0', $seg, "$tmp/x");
	is($rc, 0, 'restore: the intact object restores again');

	# an unmounted repository is an error, not an empty archive
	my ($out, $err2) = ('', '');
	IPC::Run::run([ $restore, '--repo', "$tmp/not-mounted", '--cluster', 'archtest',
			'--sysid', $sysid, $seg, "$tmp/x" ], '>', \$out, '2>', \$err2);
	is($? >> 8, 2, 'restore: a missing repository exits 2');
	like($err2, qr/not an accessible directory/, 'restore: says the repository is missing');
}

# --- A missing repository: errors, failures counted, WAL kept.
sub check_repo_failure
{
	my ($what, $location, $log_re) = @_;
	$node->append_conf('postgresql.conf', "pg_ha.archive_repo = '$location'\n");
	$node->reload;
	sleep 1;
	my $fail_before = pg_failed_count();
	my $log_offset  = -s $node->logfile;
	my $seg         = new_segment(20000);
	ok($node->poll_query_until('postgres', "SELECT failed_count > $fail_before FROM pg_stat_archiver"),
		"$what: pg_stat_archiver counts failures");
	# the WARNING may land in the log file a moment after the failure is counted
	my $logged = 0;
	for (1 .. 100)
	{
		last if ($logged = $node->log_contains($log_re, $log_offset));
		select(undef, undef, undef, 0.1);
	}
	ok($logged, "$what: the log says why");
	like(status()->{last_error}, $log_re, "$what: pg_ha.archive_status().last_error says why");
	$node->safe_psql('postgres', 'CHECKPOINT');
	ok(-f "$pgdata/pg_wal/archive_status/$seg.ready", "$what: $seg is still .ready after a checkpoint");
	ok(-f "$pgdata/pg_wal/$seg", "$what: $seg is still in pg_wal");
	ok(!-e object_path($location, $seg), "$what: nothing claims to be archived");
	return $seg;
}

check_repo_failure('missing repo', "$tmp/no/such/repo",
	qr/not an accessible directory/);

my $ro = "$tmp/readonly";
make_path($ro);
chmod 0500, $ro;
SKIP:
{
	skip 'running as root: permissions are not enforced', 8 if $> == 0;
	my $seg = check_repo_failure('unwritable repo', $ro, qr/Permission denied/);

	# fixed: archiving resumes and the file arrives
	chmod 0700, $ro;
	my $next = new_segment(1000);
	ok(wait_archived($next), 'unwritable repo fixed: archiving resumes');
	ok(-f object_path($ro, $seg), 'unwritable repo fixed: the kept segment is archived');
}

# --- A file the module cannot archive is refused with a WARNING; the
# archiver stays up (same process) and carries on once it is gone.
{
	$node->append_conf('postgresql.conf', "pg_ha.archive_repo = '$repo'\n");
	$node->reload;
	sleep 1;
	my ($archiver) = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'");
	my $bogus       = '0000000100000000000000AA.history';
	my $fail_before = pg_failed_count();
	my $log_offset  = -s $node->logfile;
	open my $fh, '>', "$pgdata/pg_wal/$bogus" or die;
	print $fh "1\t0/0\tnot a real history file\n";
	close $fh;
	open $fh, '>', "$pgdata/pg_wal/archive_status/$bogus.ready" or die;
	close $fh;
	new_segment(1000);
	ok($node->poll_query_until('postgres', "SELECT failed_count > $fail_before FROM pg_stat_archiver"),
		'bad name: the archiver reports a failure');
	ok($node->log_contains(qr/WARNING:  pg_ha: could not archive "\Q$bogus\E": .*not a WAL segment/, $log_offset),
		'bad name: WARNING says why');
	is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"),
		$archiver, 'bad name: the archiver process survived');
	unlink "$pgdata/pg_wal/archive_status/$bogus.ready", "$pgdata/pg_wal/$bogus";
	my $next = new_segment(1000);
	ok(wait_archived($next), 'bad name removed: archiving goes on');
}

$node->stop;
done_testing();
