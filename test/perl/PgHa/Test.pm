
# PgHa::Test: small polling helpers shared by the pg_ha TAP suites.
#
#   my $v = wait_for(sub { $etcd->get($key) }, timeout => 15,
#                    what => 'leader key to appear');
#   wait_ok(sub { ... }, 'leader key appears', timeout => 15);
#   my ($v, $secs) = timed_wait(sub { ... }, timeout => 10);
#
# Conditions are polled every 100 ms (interval => seconds to change it).  A
# condition that dies counts as "not yet" (etcd or postgres may be briefly
# unreachable while we poll); the last error is reported on timeout.

package PgHa::Test;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(wait_for wait_ok timed_wait now elapsed_since);

# Turn fatal signals into die() so that END blocks (PgHa::Etcd's, PgHa::Node's
# and PostgreSQL::Test::Cluster's) still stop every server this test started,
# e.g. when a CI timeout or Ctrl-C ends the run.  A signal the caller
# ignores stays ignored.
for my $sig (qw(INT TERM HUP))
{
	next if defined $SIG{$sig} && $SIG{$sig} ne '' && $SIG{$sig} ne 'DEFAULT';
	$SIG{$sig} = sub { die "caught SIG$sig, shutting test servers down\n" };
}

sub now { return Time::HiRes::time(); }

sub elapsed_since { return Time::HiRes::time() - $_[0]; }

# Core poller: returns ($value, $elapsed, $last_error, $timed_out).
sub _poll
{
	my ($cond, %p) = @_;
	my $timeout  = $p{timeout}  // 30;
	my $interval = $p{interval} // 0.1;
	my $t0       = Time::HiRes::time();
	my $deadline = $t0 + $timeout;
	my $err;
	while (1)
	{
		my $v = eval { $cond->() };
		if ($@)
		{
			# A fatal signal (see PgHa::Etcd) must end the test, not count
			# as "not yet".
			die $@ if $@ =~ /^caught SIG/;
			$err = $@;
			chomp $err;
		}
		elsif ($v)
		{
			return ($v, Time::HiRes::time() - $t0, undef, 0);
		}
		my $now = Time::HiRes::time();
		last if $now >= $deadline;
		my $sleep = $deadline - $now < $interval ? $deadline - $now : $interval;
		usleep(int($sleep * 1e6)) if $sleep > 0;
	}
	return (undef, Time::HiRes::time() - $t0, $err, 1);
}

=pod

=over

=item wait_for($cond, timeout => 30, interval => 0.1, what => '...', fatal => 0)

Poll C<$cond> until it returns a true value and return that value.  On
timeout print a diagnostic naming C<what> (and the last error the condition
raised, if any) and return undef, or die with that message if C<fatal>.

=cut

sub wait_for
{
	my ($cond, %p) = @_;
	my ($v, $elapsed, $err, $to) = _poll($cond, %p);
	return $v unless $to;
	my $msg = sprintf("timed out after %.1fs waiting for %s", $elapsed,
		$p{what} // 'condition');
	$msg .= "\nlast error: $err" if defined $err;
	croak $msg if $p{fatal};
	diag $msg;
	return undef;
}

=item wait_ok($cond, $test_name, %opts)

C<ok(wait_for($cond, what =E<gt> $test_name, %opts), $test_name)>; returns
the condition's value.

=cut

sub wait_ok
{
	my ($cond, $name, %p) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $v = wait_for($cond, what => $name, %p);
	ok($v, $name);
	return $v;
}

=item timed_wait($cond, %opts)

Like wait_for but returns (value, seconds waited); value is undef on timeout.

=back

=cut

sub timed_wait
{
	my ($cond, %p) = @_;
	my ($v, $elapsed, $err, $to) = _poll($cond, %p);
	diag sprintf("timed out after %.1fs waiting for %s%s",
		$elapsed, $p{what} // 'condition',
		defined $err ? "\nlast error: $err" : '')
	  if $to;
	return ($v, $elapsed);
}

1;
