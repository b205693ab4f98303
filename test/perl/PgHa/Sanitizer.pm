
# PgHa::Sanitizer: AddressSanitizer / UBSan reports fail the TAP test
# during which they appear.  Loaded into every test script by
# `scripts/test.sh --asan` (PERL5OPT=-MPgHa::Sanitizer); a no-op otherwise.
#
# pg_ha.so is built with -fsanitize=address,undefined (make ASAN=1) but
# postgres is not, so the runtime must be preloaded into postgres
# (PG_HA_ASAN_PRELOAD: the runtime and test/asan/swift_demangle_stub.so).
# The test script itself runs without it: LD_PRELOAD is set in its
# environment, which every process it starts (etcd, pg_ctl, postgres,
# psql, pg_ha_restore) inherits.  Reports go to files under
# tmp_check/sanitizer/<test>/ (log_path, one file per process); at the end
# the test fails if any is there, and prints them.
#
# ASAN_OPTIONS: detect_leaks=0, since a postgres process exits with its
# memory contexts allocated and LeakSanitizer would call that a leak.

package PgHa::Sanitizer;

use strict;
use warnings;

use File::Path qw(make_path);

my $dir;

if ($ENV{PG_HA_ASAN_PRELOAD} && $0 =~ m{(?:^|/)(\d{3}_[^/]+)\.pl$})
{
	my $test = $1;
	$dir = ($ENV{TESTDIR} // '.') . "/tmp_check/sanitizer/$test";
	make_path($dir);
	$ENV{LD_PRELOAD} = $ENV{PG_HA_ASAN_PRELOAD};
	$ENV{ASAN_OPTIONS} = join(':',
		'detect_leaks=0', "log_path=$dir/asan", 'abort_on_error=0',
		'allow_user_segv_handler=1', $ENV{PG_HA_ASAN_OPTIONS} // ());
	$ENV{UBSAN_OPTIONS} = join(':',
		'print_stacktrace=1', "log_path=$dir/ubsan", $ENV{PG_HA_UBSAN_OPTIONS} // ());
}

# Runs after Test::Builder's END block (this module was loaded first), so
# the exit status set here is the script's.
END
{
	if (defined $dir)
	{
		my $status  = $?;
		my @reports = grep { -s $_ } glob("$dir/asan.* $dir/ubsan.*");
		if (@reports)
		{
			print STDERR "# sanitizer reports in $dir:\n";
			for my $f (@reports)
			{
				open my $fh, '<', $f or next;
				print STDERR "# --- $f\n";
				print STDERR map { "# $_" } <$fh>;
				close $fh;
			}
			$status = 1 if $status == 0;
		}
		$? = $status;
	}
}

1;
