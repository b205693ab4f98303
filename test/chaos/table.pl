#!/usr/bin/perl
# The results table of docs/testing.md from the runs.tsv files that
# chaos.pl appends to (one row per run), e.g. of several invocations:
#   perl test/chaos/table.pl /var/tmp/pg_ha_chaos/runs.tsv
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use ChaosCheck;

my @rows;
for my $f (@ARGV ? @ARGV : '/var/tmp/pg_ha_chaos/runs.tsv')
{
	open my $fh, '<', $f or die "table: $f: $!\n";
	chomp(my $head = <$fh> // '');
	my @cols = split /\t/, $head;
	while (my $line = <$fh>)
	{
		chomp $line;
		my %r;
		@r{@cols} = map { $_ eq '' ? undef : $_ } split /\t/, $line, -1;
		push @rows, \%r;
	}
}
die "table: no runs\n" unless @rows;
my ($lo, $hi) = (sort { $a <=> $b } map { $_->{seed} } @rows)[ 0, -1 ];
printf "%d runs, seeds %d..%d, %d failed\n\n", scalar @rows, $lo, $hi, scalar grep { !$_->{pass} } @rows;
print ChaosCheck::results_table(@rows), "\n";
print ChaosCheck::results_table(map { { %$_, group => "mode $_->{mode}" } } @rows);
