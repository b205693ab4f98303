#!/usr/bin/perl
# Self-test of the chaos checker (no cluster): synthetic histories with a
# split brain, a lost write, a refused write and a cluster that did not
# converge must FAIL; clean ones must PASS.  A checker that cannot fail is a
# defect.  Run by `make chaos-selftest`.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use File::Temp qw(tempdir);
use Test::More;
use ChaosCheck;

my $S = 1_000_000_000;    # ns per second

# w(id, status, node, tli, send_s, ack_s)
sub w
{
	my ($id, $st, $node, $tli, $s, $a) = @_;
	return { id => $id, client => 1, status => $st, node => $node, tli => $tli,
		send => int($s * $S), ack => int($a * $S), state => $st eq 'refused' ? '25006' : '-',
		msg => '-' };
}

sub final_of { return { map { $_->{id} => { node => $_->{node}, tli => $_->{tli} } } @_ }; }

# A clean failover: node1 on tli 1, then node2 on tli 2; everything kept.
my @clean = (w(1, 'ok', 'node1', 1, 1.0, 1.01), w(2, 'ok', 'node1', 1, 1.1, 1.11),
	w(3, 'unknown', undef, undef, 1.2, 3.0), w(4, 'ok', 'node2', 2, 8.0, 8.01),
	w(5, 'refused', undef, undef, 2.0, 2.01));
my $r = ChaosCheck::check_history(writes => \@clean, final => final_of(@clean[0, 1, 3]));
is_deeply($r->{fail}, [], 'a clean failover history passes');
is($r->{acked}, 3, 'acknowledged writes counted');

# 1a: two nodes acknowledge writes on the same timeline
my @same = (w(1, 'ok', 'node1', 2, 1.0, 1.01), w(2, 'ok', 'node2', 2, 1.5, 1.51));
$r = ChaosCheck::check_history(writes => \@same, final => final_of($same[1]));
ok((grep { $_ eq 'split_brain' } @{ $r->{fail} }), 'one timeline on two nodes: split brain');

# 1b: node1 (tli 1) acknowledges after node2 (tli 2) did, and the write is gone
my @late = (w(1, 'ok', 'node2', 2, 5.0, 5.01), w(2, 'ok', 'node1', 1, 4.9, 5.5),
	w(3, 'ok', 'node1', 1, 5.2, 5.21));
$r = ChaosCheck::check_history(writes => \@late, final => final_of($late[0]));
ok((grep { $_ eq 'split_brain' } @{ $r->{fail} }), 'older term acknowledged after a newer one: split brain');
is($r->{split_brain}, 3, 'two late acknowledgements and one write sent after the newer ack');
like(join("\n", @{ $r->{evidence} }), qr/id 3 on node1 tli 1/, 'evidence names the write');

# a late acknowledgement of a write that survived (committed before the fork)
my @ok_late = (w(1, 'ok', 'node2', 2, 5.0, 5.01), w(2, 'ok', 'node1', 1, 4.0, 5.5));
$r = ChaosCheck::check_history(writes => \@ok_late, final => final_of(@ok_late));
is_deeply($r->{fail}, [], 'a late acknowledgement of a write kept by the new leader is not a split brain');
is($r->{late_acks}, 1, '... but it is counted');

# 2: a lost write across a switchover, a clean stop, a failover, in sync mode
my @lost = (w(1, 'ok', 'node1', 1, 1.0, 1.01), w(2, 'ok', 'node1', 1, 1.1, 1.11),
	w(3, 'ok', 'node2', 2, 4.0, 4.01));
my $fin = final_of(@lost[0, 2]);
$r = ChaosCheck::check_history(writes => \@lost, final => $fin,
	history => [ [ 1, 50331808, 'switchover', '2024-01-01', 'node2' ] ]);
is_deeply($r->{fail}, ['lost_on_switchover'], 'a write lost across a switchover fails');
$r = ChaosCheck::check_history(writes => \@lost, final => $fin, planned => 1,
	history => [ [ 1, 50331808, 'failover', '2024-01-01', 'node2' ] ]);
is_deeply($r->{fail}, ['lost_on_switchover'], 'a write lost in a run of planned faults (clean stop) fails');
$r = ChaosCheck::check_history(writes => \@lost, final => $fin,
	history => [ [ 1, 50331808, 'failover', '2024-01-01', 'node2' ] ]);
is_deeply($r->{fail}, [], 'a write lost across an unplanned failover in async mode is counted, not failed');
is($r->{lost_on_failover}, 1, '... as lost_on_failover');
$r = ChaosCheck::check_history(writes => \@lost, final => $fin, mode => 'sync');
is_deeply($r->{fail}, ['lost_sync'], 'in sync mode every lost write fails');

# 3: a refused write in the final data
my @ref = (w(1, 'ok', 'node1', 1, 1.0, 1.01), w(2, 'refused', undef, undef, 1.1, 1.11));
$r = ChaosCheck::check_history(writes => \@ref,
	final => { 1 => { node => 'node1', tli => 1 }, 2 => { node => 'node1', tli => 1 } });
is_deeply($r->{fail}, ['refused_present'], 'a refused write in the final data fails');

# a row that differs from its acknowledgement
$r = ChaosCheck::check_history(writes => [ w(1, 'ok', 'node1', 1, 1, 1.01) ],
	final => { 1 => { node => 'node2', tli => 2 } });
is_deeply($r->{fail}, ['mismatched'], 'an acknowledged row that changed fails');

# the client log parser
my $dir = tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/client3.log" or die;
print $fh "3000000001\tok\tnode1\t1\t100\t200\t-\t-\n";
print $fh "3000000002\trefused\t-\t-\t300\t400\t25006\tERROR:  pg_ha: write refused\n";
print $fh "3000000003\tunkn";    # cut short by SIGKILL
close $fh;
my $h = ChaosCheck::read_history("$dir/client3.log");
is(scalar @$h, 2, 'read_history: two complete lines, the partial one skipped');
is_deeply([ map { $_->{status} } @$h ], [ 'ok', 'refused' ], 'read_history: statuses');
is($h->[0]{tli}, 1, 'read_history: timeline');

# 4 and 5: convergence
my %good = (
	node1 => { running => 1, in_recovery => 1, primary_http => 503, port => 5001,
		receiver => { status => 'streaming', sender_port => 5002, received_tli => 2 } },
	node2 => { running => 1, in_recovery => 0, primary_http => 200, port => 5002, timeline => 2 },
	node3 => { running => 1, in_recovery => 1, primary_http => 503, port => 5003,
		receiver => { status => 'streaming', sender_port => 5002, received_tli => 2 } });
is_deeply([ ChaosCheck::check_convergence(leader => 'node2', nodes => \%good) ], [],
	'a converged cluster passes');
my %two = map { $_ => { %{ $good{$_} } } } keys %good;
$two{node1}{in_recovery} = 0;
ok(scalar ChaosCheck::check_convergence(leader => 'node2', nodes => \%two),
	'two writable nodes: not converged');
my %wrong = map { $_ => { %{ $good{$_} } } } keys %good;
ok(scalar ChaosCheck::check_convergence(leader => 'node1', nodes => \%wrong),
	'leader key naming a replica: not converged');
my %http = map { $_ => { %{ $good{$_} } } } keys %good;
$http{node3}{primary_http} = 200;
ok(scalar ChaosCheck::check_convergence(leader => 'node2', nodes => \%http),
	'/primary 200 on a replica: not converged');
my %old = map { $_ => { %{ $good{$_} } } } keys %good;
$old{node3}{receiver} = { status => 'streaming', sender_port => 5002, received_tli => 1 };
ok(scalar ChaosCheck::check_convergence(leader => 'node2', nodes => \%old),
	'a replica on the old timeline: not converged');
my %down = map { $_ => { %{ $good{$_} } } } keys %good;
$down{node1}{running} = 0;
$down{node1}{receiver} = undef;
ok(scalar ChaosCheck::check_convergence(leader => 'node2', nodes => \%down),
	'a node left down: not converged');
my %loop = map { $_ => { %{ $good{$_} } } } keys %good;
$loop{node3}{restarts} = 7;
like(join("\n", ChaosCheck::check_convergence(leader => 'node2', nodes => \%loop)),
	qr/crash-looping/, 'a crash-looping node is reported');
my %div = map { $_ => { %{ $good{$_} } } } keys %good;
$div{node1}{diverged} = 1;
like(join("\n", ChaosCheck::check_convergence(leader => 'node2', nodes => \%div)),
	qr/diverged/, 'a diverged node is reported');
ok(scalar ChaosCheck::check_convergence(leader => undef, nodes => \%good),
	'no leader key: not converged');

# run_stats: the gaps the clients saw.  Fault at 10 s; pinned clients ack at
# 9.5 (before), 10.2, then nothing until 16.0; client 4 acks at 9.8 and 13.0.
sub wc { my ($c, $ack) = @_; my $x = w($c * 100 + int($ack * 10), 'ok', 'node1', 1, $ack - 0.01, $ack); $x->{client} = $c; return $x; }
my $st = ChaosCheck::run_stats(writes => [ wc(1, 9.5), wc(2, 10.2), wc(3, 16.0), wc(4, 9.8), wc(4, 13.0),
		{ %{ wc(1, 11.0) }, status => 'unknown' } ], t_fault => 10, t_end => 18);
cmp_ok(abs($st->{pinned_gap_s} - 5.8), '<', 1e-6, 'pinned clients: the longest gap is 10.2 -> 16.0');
cmp_ok(abs($st->{multi_gap_s} - 5.0), '<', 1e-6, 'multi-host client: the longest gap is 13.0 -> the end (18)');
cmp_ok(abs($st->{outage_s} - 3.0), '<', 1e-6, 'all clients together: the longest outage is 13.0 -> 16.0');
$st = ChaosCheck::run_stats(writes => [ wc(4, 9.9) ], t_fault => 10, t_end => 12);
cmp_ok(abs($st->{multi_gap_s} - 2.1), '<', 1e-6, 'no acknowledgement after the fault: the gap runs to the end');

# results_table: one line per group, medians, worst and async losses
my $table = ChaosCheck::results_table(
	{ group => 'kill9_primary', outage_s => 6, pinned_gap_s => 7, multi_gap_s => 8, converge_s => 2, async => 1, lost_on_failover => 3, pass => 1 },
	{ group => 'kill9_primary', outage_s => 8, pinned_gap_s => 9, multi_gap_s => 9, converge_s => 4, async => 0, lost_on_failover => 0, pass => 0 },
	{ group => 'switchover', outage_s => 1, pinned_gap_s => 2, multi_gap_s => 2, converge_s => 1, async => 0, lost_on_failover => 0, pass => 1 });
like($table, qr/^\| kill9_primary \| 2 \| 1 \| 7\.0 \/ 8\.0 \| 8\.0 \/ 9\.0 \| 8\.5 \/ 9\.0 \| 3\.0 \/ 4\.0 \| 3 in 1 runs \|$/m,
	'table: runs, failures, median / worst, async losses');
like($table, qr/^\| switchover \| 1 \| 0 \| .* \| - \|$/m, 'table: no async run, no loss column');

done_testing();
