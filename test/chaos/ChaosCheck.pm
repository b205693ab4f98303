# ChaosCheck: the chaos suite's verdict on one run's history.  Pure
# functions, no cluster: test/chaos/selftest.pl feeds them synthetic
# histories with a split brain, a lost write and a refused write and asserts
# they FAIL.
#
#   my $r = ChaosCheck::check_history(
#       writes  => \@writes,      # read_history(): {id, client, status, node, tli, send, ack, state, msg}
#       final   => \%final,       # id => {node, tli}: rows on the leader at the end
#       mode    => 'async',       # 'sync': every loss fails (sync and quorum runs)
#       planned => 0,             # 1: the run's faults were planned only (switchover, clean stop, ...)
#       history => \@history);    # etcd history key: [old_tli, lsn, reason, time, new_leader] ...
#   $r->{fail}                    # list of failed check names
#   $r->{evidence}                # lines explaining each failure
#
# The checks (numbers as in test/chaos/README.md):
#  1 split brain: a timeline (term) acknowledged by two nodes; or a write
#    acknowledged in an older term after a write of a newer term was
#    acknowledged, and not part of the final data (a late acknowledgement of a
#    write that survived was committed before the fork: harmless, counted as
#    late_acks); or a write sent after a newer term's write was acknowledged
#    and still acknowledged in the older term.
#  2 lost acknowledged writes: across a switchover or a clean stop (history
#    reason "switchover", or a run of planned faults only) they fail; across
#    an unplanned failover in async mode they are counted (lost_on_failover);
#    in sync mode every loss fails.
#  3 a refused write (ERROR, session alive: rolled back) in the final data.
#  plus: an acknowledged row whose node or timeline differs in the final data.

package ChaosCheck;

use strict;
use warnings;

# read_history(@files): the client logs (test/chaos/client.c) as write hashes.
sub read_history
{
	my @writes;
	for my $f (@_)
	{
		my ($client) = $f =~ /client(\d+)/;
		open my $fh, '<', $f or next;
		while (my $line = <$fh>)
		{
			chomp $line;
			my @c = split /\t/, $line, 8;
			next unless @c == 8 && $c[0] =~ /^\d+$/ && $c[4] =~ /^\d+$/ && $c[5] =~ /^\d+$/;
			push @writes, {
				id => $c[0], client => $client // int($c[0] / 1e9), status => $c[1],
				node => $c[2], tli => ($c[3] =~ /^\d+$/ ? $c[3] + 0 : undef),
				send => $c[4] + 0, ack => $c[5] + 0, state => $c[6], msg => $c[7] };
		}
		close $fh;
	}
	return \@writes;
}

sub _w
{
	my ($w) = @_;
	return sprintf('id %s on %s tli %s sent %.3f acked %.3f',
		$w->{id}, $w->{node} // '-', $w->{tli} // '-', $w->{send} / 1e9, $w->{ack} / 1e9);
}

# Reason of the history entry that ended timeline $tli ('' if none).
sub _end_reason
{
	my ($history, $tli) = @_;
	for my $e (@{ $history // [] })
	{
		return $e->[2] // '' if ref $e eq 'ARRAY' && defined $e->[0] && $e->[0] == $tli;
	}
	return '';
}

sub check_history
{
	my (%p) = @_;
	my $final = $p{final} // {};
	my $mode  = $p{mode} // 'async';
	my @acked = grep { $_->{status} eq 'ok' && defined $_->{tli} } @{ $p{writes} };
	my %r = (acked => scalar @acked, refused => 0, unknown => 0, split_brain => 0,
		late_acks => 0, lost_on_switchover => 0, lost_on_failover => 0,
		lost_sync => 0, refused_present => 0, mismatched => 0, evidence => [], fail => []);
	$r{refused} = grep { $_->{status} eq 'refused' } @{ $p{writes} };
	$r{unknown} = grep { $_->{status} eq 'unknown' } @{ $p{writes} };
	my $ev = sub { push @{ $r{evidence} }, $_[0] if @{ $r{evidence} } < 40; };

	# 1a: one node per term
	my %owner;
	for my $w (@acked)
	{
		my $o = $owner{ $w->{tli} };
		if (!$o) { $owner{ $w->{tli} } = $w; next; }
		next if $o->{node} eq $w->{node} || $o->{_reported};
		$o->{_reported} = 1;
		$r{split_brain}++;
		$ev->("split brain: timeline $w->{tli} acknowledged by two nodes: " . _w($o) . '; ' . _w($w));
	}

	# 1b/1c: no acknowledgement in an older term after a newer term's
	my @by_ack = sort { $a->{ack} <=> $b->{ack} } @acked;
	my $max;
	for my $w (@by_ack)
	{
		if ($max && $w->{tli} < $max->{tli} && $w->{node} ne $max->{node})
		{
			if (!exists $final->{ $w->{id} })
			{
				$r{split_brain}++;
				$ev->('split brain: acknowledged after a newer term\'s write and lost: '
					  . _w($w) . ' after ' . _w($max));
			}
			else { $r{late_acks}++; }
		}
		$max = $w if !$max || $w->{tli} > $max->{tli};
	}
	my @by_send = sort { $a->{send} <=> $b->{send} } @acked;
	my ($i, $newest) = (0, undef);
	for my $w (@by_send)
	{
		while ($i < @by_ack && $by_ack[$i]{ack} < $w->{send})
		{
			$newest = $by_ack[$i] if !$newest || $by_ack[$i]{tli} > $newest->{tli};
			$i++;
		}
		if ($newest && $w->{tli} < $newest->{tli} && $w->{node} ne $newest->{node})
		{
			$r{split_brain}++;
			$ev->('split brain: sent after a newer term\'s write was acknowledged, yet acknowledged in the older term: '
				  . _w($w) . ' after ' . _w($newest));
		}
	}

	# 2: lost acknowledged writes
	for my $w (@acked)
	{
		my $row = $final->{ $w->{id} };
		if ($row)
		{
			if (defined $row->{node} && ($row->{node} ne $w->{node} || $row->{tli} != $w->{tli}))
			{
				$r{mismatched}++;
				$ev->("row differs from its acknowledgement: " . _w($w)
					  . " but the final row says $row->{node} tli $row->{tli}");
			}
			next;
		}
		if ($mode ne 'async')
		{
			$r{lost_sync}++;
			$ev->("lost in $mode mode: " . _w($w));
		}
		elsif ($p{planned} || _end_reason($p{history}, $w->{tli}) =~ /switchover/)
		{
			$r{lost_on_switchover}++;
			$ev->('lost across a switchover or clean stop: ' . _w($w));
		}
		else
		{
			$r{lost_on_failover}++;
			$ev->('lost across an unplanned failover (async): ' . _w($w)) if $r{lost_on_failover} <= 5;
		}
	}

	# 3: refused writes stay out
	for my $w (grep { $_->{status} eq 'refused' } @{ $p{writes} })
	{
		next unless exists $final->{ $w->{id} };
		$r{refused_present}++;
		$ev->("refused write in the final data: id $w->{id} ($w->{state}: $w->{msg})");
	}

	push @{ $r{fail} }, 'split_brain'        if $r{split_brain};
	push @{ $r{fail} }, 'lost_on_switchover' if $r{lost_on_switchover};
	push @{ $r{fail} }, 'lost_sync'          if $r{lost_sync};
	push @{ $r{fail} }, 'refused_present'    if $r{refused_present};
	push @{ $r{fail} }, 'mismatched'         if $r{mismatched};
	delete $_->{_reported} for @acked;
	return \%r;
}

# check_convergence(leader => 'node2', nodes => {name => {...}}): checks 4
# and 5 on what the harness observed after the heal.  Per node: running
# (postmaster alive), in_recovery (1/0/undef: no answer), primary_http (status
# of GET /primary), port, timeline, receiver ({status, sender_port,
# received_tli} or undef), restarts (service restarts after the heal),
# diverged (the rejoin marker is still there).  Returns the problems found,
# none when the cluster converged.
sub check_convergence
{
	my (%o) = @_;
	my @bad;
	my $nodes  = $o{nodes};
	my $leader = $o{leader};
	my @writable = sort grep { ($nodes->{$_}{in_recovery} // 1) == 0 } keys %$nodes;
	push @bad, 'no leader key' unless defined $leader;
	push @bad, 'writable nodes: ' . (join(',', @writable) || 'none') unless @writable == 1;
	push @bad, "leader key names $leader but the writable node is $writable[0]"
	  if defined $leader && @writable == 1 && $writable[0] ne $leader;
	my $l = defined $leader ? $nodes->{$leader} : undef;
	for my $name (sort keys %$nodes)
	{
		my $n = $nodes->{$name};
		push @bad, "$name: postmaster not running" unless $n->{running};
		push @bad, "$name: crash-looping ($n->{restarts} restarts after the heal)"
		  if ($n->{restarts} // 0) > 3;
		push @bad, "$name: diverged and not rejoined (rejoin marker present)" if $n->{diverged};
		my $want = (defined $leader && $name eq $leader) ? 200 : 503;
		push @bad, "$name: /primary answers " . ($n->{primary_http} // 'nothing') . ", expected $want"
		  unless ($n->{primary_http} // 0) == $want;
		next if !$l || $name eq $leader;
		my $r = $n->{receiver};
		push @bad, "$name: not streaming from $leader"
		  . ($r ? " (status $r->{status}, port $r->{sender_port}, tli $r->{received_tli})" : '')
		  unless $r && $r->{status} eq 'streaming' && $r->{sender_port} == $l->{port}
		  && $r->{received_tli} == ($l->{timeline} // -1);
	}
	return @bad;
}

# run_stats(writes => [...], t_fault => s, t_end => s): how the clients saw
# one run, in seconds, on the clients' monotonic clock (the harness uses
# the same clock).  A gap is the longest interval with no acknowledged
# write, counted from the last acknowledgement before the fault up to the
# end of the run:
#   pinned_gap_s  clients 1-3 together (each pinned to one node)
#   multi_gap_s   client 4 (multi-host, target_session_attrs=read-write)
#   outage_s    the longest outage of all clients together: no node
#                 acknowledged any write for that long, i.e. the time the
#                 cluster took to have a writable leader again
sub run_stats
{
	my (%p) = @_;
	my ($t0, $t1) = ($p{t_fault} * 1e9, $p{t_end} * 1e9);
	my $gap = sub {
		my @acks = sort { $a <=> $b } map { $_->{ack} } @_;
		my @before = grep { $_ <= $t0 } @acks;
		my $prev = @before ? $before[-1] : $t0;
		my $best = 0;
		for my $a ((grep { $_ > $t0 && $_ <= $t1 } @acks), $t1)
		{
			$best = $a - $prev if $a - $prev > $best;
			$prev = $a;
		}
		return $best / 1e9;
	};
	my @ok = grep { $_->{status} eq 'ok' } @{ $p{writes} };
	my $pinned = $gap->(grep { $_->{client} <= 3 } @ok);
	my $multi  = $gap->(grep { $_->{client} == 4 } @ok);
	my $all = $gap->(@ok);
	return { pinned_gap_s => $pinned, multi_gap_s => $multi, outage_s => $all };
}

sub _median
{
	my @v = sort { $a <=> $b } @_;
	return undef unless @v;
	return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub _max { my $m; for (@_) { $m = $_ if !defined $m || $_ > $m } return $m; }

# results_table(@rows): the published table (docs/testing.md), one line per
# group.  Each row: {group, outage_s, pinned_gap_s, multi_gap_s,
# converge_s, lost_on_failover, async (1 when losses are counted, not
# failed), pass}.  Groups are sorted by name, "two overlapping" last.
sub results_table
{
	my (@rows) = @_;
	my (%g, @order);
	for my $r (@rows)
	{
		push @order, $r->{group} unless $g{ $r->{group} };
		push @{ $g{ $r->{group} } }, $r;
	}
	my $f = sub { defined $_[0] ? sprintf('%.1f', $_[0]) : '-' };
	my $mw = sub { my ($k, $rs) = @_; my @v = grep { defined } map { $_->{$k} } @$rs;
		return $f->(_median(@v)) . ' / ' . $f->(_max(@v)); };
	my @out = ('| faults | runs | failed | write outage, all clients, s (median / worst) | write gap, pinned clients, s | '
		  . 'write gap, multi-host client, s | converged after heal, s | lost acked commits (async, failsafe mode) |',
		'|---|---:|---:|---:|---:|---:|---:|---:|');
	# alphabetical, the overlapping faults last
	for my $name (sort { ($a eq 'two overlapping') <=> ($b eq 'two overlapping') || $a cmp $b } @order)
	{
		my $rs = $g{$name};
		my @async = grep { $_->{async} } @$rs;
		my $lost = 0;
		$lost += $_->{lost_on_failover} // 0 for @async;
		push @out, sprintf('| %s | %d | %d | %s | %s | %s | %s | %s |', $name, scalar @$rs,
			scalar(grep { !$_->{pass} } @$rs), $mw->('outage_s', $rs), $mw->('pinned_gap_s', $rs),
			$mw->('multi_gap_s', $rs), $mw->('converge_s', $rs),
			@async ? "$lost in " . scalar(@async) . ' runs' : '-');
	}
	return join("\n", @out) . "\n";
}

1;
