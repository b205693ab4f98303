
# pg_ha_restore reads what is in the repository only as far as it can
# trust it, and never waits on it (issue 11, part 4):
#   - it reads an object's header before the object, and refuses an object
#     whose size is not the header's, with memory bounded by that check
#     (a 3 GiB sparse object once cost 3.15 GB of RSS);
#   - an object that is not a regular file (a FIFO, a directory) is an
#     error at once, never a read that blocks (a FIFO blocked it forever);
#   - the same holds for a file in its prefetch spool;
#   - a well-formed object still restores byte for byte.

use strict;
use warnings;

use File::Path qw(make_path);
use IPC::Run;
use POSIX qw(mkfifo);
use PostgreSQL::Test::Utils;
use Test::More;

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $restore = "$bindir/pg_ha_restore";
my $tmp     = PostgreSQL::Test::Utils::tempdir();
my $repo    = "$tmp/repo";
my $seg     = '000000010000000000000003';
my $dir     = "$repo/t410/42/wal/00000001/0000000100000000";
my $object  = "$dir/$seg";
make_path($dir, "$tmp/pg_wal");

# CRC-32C (Castagnoli), as the object format uses it
my @crc_table = map {
	my $c = $_;
	$c = ($c & 1) ? (($c >> 1) ^ 0x82F63B78) : ($c >> 1) for 1 .. 8;
	$c;
} 0 .. 255;

sub crc32c
{
	my ($data) = @_;
	my $crc = 0xFFFFFFFF;
	$crc = $crc_table[ ($crc ^ $_) & 0xff ] ^ ($crc >> 8) for unpack('C*', $data);
	return $crc ^ 0xFFFFFFFF;
}

# A 64-byte object header (docs/archive.md) for an uncompressed payload.
sub header
{
	my ($orig_len, $payload_len, $orig_crc) = @_;
	my $h = 'PGHAWAL1'
	  . pack('V V Q< Q< V V a20', 1, 0, $orig_len, $payload_len, $orig_crc, $orig_crc, $seg);
	return $h . pack('V', crc32c($h));
}

sub write_file
{
	my ($path, $data) = @_;
	open my $fh, '>:raw', $path or die "$path: $!";
	print $fh $data;
	close $fh or die "$path: $!";
	return;
}

# Runs pg_ha_restore on $seg under /usr/bin/time -v, bounded by 60 s.
# Returns (exit status or 'timeout', stderr, max RSS in kB).
sub run_restore
{
	my (@opts) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('/usr/bin/time', '-v', $restore, '--repo', $repo, '--cluster', 't410',
		'--sysid', '42', @opts, $seg, "$tmp/pg_wal/RECOVERYXLOG");
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err,
		IPC::Run::timeout(60));
	my $status = eval { $h->finish; $h->result(0) };
	if (!defined $status)
	{
		$h->kill_kill;
		return ('timeout', $err, undef);
	}
	my ($rss) = $err =~ /Maximum resident set size \(kbytes\): (\d+)/;
	return ($status, $err, $rss);
}

# --- a well-formed object restores
my $content = join('', map { chr(($_ * 7) & 0xff) } 0 .. 8191);
write_file($object, header(length($content), length($content), crc32c($content)) . $content);
my ($rc, $err, $rss) = run_restore('--prefetch', '0');
is($rc, 0, 'a well-formed object restores') or diag $err;
is(slurp_file("$tmp/pg_wal/RECOVERYXLOG"), $content, 'byte for byte');
unlink "$tmp/pg_wal/RECOVERYXLOG";

# --- a 3 GiB sparse object without a header
unlink $object;
system('truncate', '-s', '3G', $object) == 0 or die 'truncate failed';
($rc, $err, $rss) = run_restore('--prefetch', '0');
is($rc, 2, 'a 3 GiB object without a header is an error');
like($err, qr/corrupt|magic|header/, 'the error says the object is not one of ours');
ok(defined $rss && $rss < 100 * 1024,
	'and refusing it takes less than 100 MB of memory (max RSS ' . ($rss // '?') . ' kB)');

# --- a 3 GiB sparse object whose header claims 8 kB
write_file($object, header(8192, 8192, 0));
system('truncate', '-s', '3G', $object) == 0 or die 'truncate failed';
($rc, $err, $rss) = run_restore('--prefetch', '0');
is($rc, 2, 'a 3 GiB object whose header says 8 kB is an error');
like($err, qr/header says|size|length/, 'the error names the size mismatch');
ok(defined $rss && $rss < 100 * 1024,
	'and refusing it takes less than 100 MB of memory (max RSS ' . ($rss // '?') . ' kB)');
unlink $object;

# --- a FIFO in place of the object
mkfifo($object, 0600) or die "mkfifo: $!";
($rc, $err) = run_restore('--prefetch', '0');
isnt($rc, 'timeout', 'a FIFO in the repository does not block pg_ha_restore');
is($rc, 2, 'a FIFO in the repository is an error');
like($err, qr/not a regular file/, 'the error says it is not a regular file');
unlink $object;

# --- a directory in place of the object
make_path($object);
($rc, $err) = run_restore('--prefetch', '0');
is($rc, 2, 'a directory in place of the object is an error');
like($err, qr/not a regular file/, 'the error says it is not a regular file');
rmdir $object;

# --- a FIFO in the prefetch spool, the object absent
make_path("$tmp/pg_wal/pg_ha_prefetch");
mkfifo("$tmp/pg_wal/pg_ha_prefetch/$seg-00000000", 0600) or die "mkfifo: $!";
($rc, $err) = run_restore('--prefetch', '2');
isnt($rc, 'timeout', 'a FIFO in the prefetch spool does not block pg_ha_restore');
is($rc, 1, 'and the file is reported as not in the archive');

done_testing();
