#!/usr/bin/perl
# Chaos smoke test, part of the default suite (scripts/test.sh runs it as
# root after the TAP suites; `make chaos-smoke`): three randomized runs with
# fixed seeds on a real 3-member etcd and 3 nodes, which must PASS, and one
# run with pg_ha.fencing = off, which must FAIL with a split brain - the
# checker is known to catch what it exists to catch on a real cluster, not
# only on the synthetic histories of selftest.pl.
#
# Seeds 1000-1002 in mode mixed are, by construction of the plan from the
# seed: a switchover (async), a clean stop of the primary (sync mode), a slow
# disk overlapping a cut of replication (quorum mode).  Seed 7 with only
# sigstop_worker stops the primary's HA worker for longer than the TTL: a
# replica is promoted while the old primary, unfenced, keeps committing.

use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

plan skip_all => 'the chaos suite needs root (iptables; postgres runs as its own user)' unless $> == 0;

my $dir   = $FindBin::Bin;
my $out   = tempdir('pg_ha_chaos_smoke.XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @chaos = ('perl', "$dir/chaos.pl", '--build', "$dir/build", '--out', $out);

sub chaos
{
	my (@args) = @_;
	my $text = `@chaos @args 2>&1`;
	my $rc = $? >> 8;
	diag($text) if $ENV{CHAOS_VERBOSE};
	return ($rc, $text);
}

sub summary_of
{
	my ($text) = @_;
	return { $text =~ /^runs=\d+ (.*)$/m ? map { split /=/ } split / /, $1 : () };
}

my ($rc, $text) = chaos('--runs', 3, '--seed', 1000, '--mode', 'mixed');
my $s = summary_of($text);
is($rc, 0, 'three randomized runs (seeds 1000-1002, async, sync and quorum mode) pass')
  or diag($text);
is($s->{split_brain}, 0, 'no split brain');
is($s->{lost_on_switchover}, 0, 'nothing acknowledged lost across the switchover or the clean stop');
is($s->{nonconverged}, 0, 'every run converged');
is(scalar(() = $text =~ /^run \d\/3 seed=\d+ PASS /mg), 3, 'one PASS line per run');

($rc, $text) = chaos('--runs', 1, '--seed', 7, '--mode', 'nofence', '--only', 'sigstop_worker');
$s = summary_of($text);
is($rc, 1, 'with fencing off, a primary whose HA worker is stopped past the TTL fails the run');
cmp_ok($s->{split_brain} // 0, '>', 0, 'check 1 reports the split brain')
  or diag($text);
like($text, qr/split brain: .* on node1 tli 1 .* after id \d+ on node\d tli 2/,
	'the evidence names writes of the old primary acknowledged after the new term began');
ok(-s "$out/seed-7/verdict.txt", 'the failed run kept its logs and verdict');

done_testing();
