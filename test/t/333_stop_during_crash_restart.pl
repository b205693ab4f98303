
# pg_hactl stop, the unit's ExecStop, ends postgres even when the stop
# lands in the first moments of a crash restart.  PostgreSQL 15 hangs a
# fast shutdown there (the postmaster waits for a checkpointer nobody asks
# to exit), and pg_ha demotes a primary by exactly such a crash restart, so
# `systemctl stop` right after a demotion hung until TimeoutStopSec; the
# chaos suite found it (seed 71: a switchover, then a clean stop of the old
# primary).  Here a replica crash-restarts (a backend killed), and the stop
# is sent the moment the postmaster reinitializes, a few times over so that
# at least one lands in the window.  Each time pg_hactl stop must return
# with postgres gone, and the node must come back as a streaming replica.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Failover;
use PgHa::Test;
use PostgreSQL::Test::Utils qw(slurp_file);

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => 5, nodes => 2);
$n1->safe_psql('postgres', 'CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g');

my $hit = 0;
for my $attempt (1 .. 4)
{
	my $off = -s $n2->logfile;
	my $bg = $n2->background_psql('postgres');
	my $backend = $bg->query_safe('SELECT pg_backend_pid()');
	kill 'KILL', $backend;
	eval { $bg->quit; };
	# the moment the postmaster starts the crash recovery
	my $t0 = now();
	until ((slurp_from($n2->logfile, $off) =~ /all server processes terminated; reinitializing/) || now() - $t0 > 30)
	{
		usleep(1000);
	}
	my ($out, $err) = ('', '');
	my $t_stop = now();
	my $ok = IPC::Run::run([ 'pg_hactl', 'stop', '--pgdata', $n2->data_dir, '--timeout', '3' ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(120));
	my $took = now() - $t_stop;
	ok($ok && !postmaster_running($n2), "attempt $attempt: pg_hactl stop returned with postgres gone")
	  or diag "$out$err";
	my $log = slurp_from($n2->logfile, $off);
	# in the window: the fast shutdown came before recovery had started
	my $in_window = $log =~ /received fast shutdown request.*(entering standby mode|redo starts)/s ? 1 : 0;
	$hit ||= $in_window;
	note sprintf('attempt %d: stop took %.1f s%s%s', $attempt, $took,
		$in_window ? ', inside the crash-restart window' : '',
		$out =~ /immediate shutdown/ ? ', escalated to an immediate shutdown' : '');
	my $svc = supervise($n2);
	ok($svc && $svc->{started}, "attempt $attempt: the service manager starts node2 again");
	ok(wait_for(sub { my $w = wal_receiver($n2); $w && $w->{status} eq 'streaming' ? 1 : undef },
			timeout => 60, what => 'node2 streaming'), "attempt $attempt: node2 streams again");
	last if $hit && $attempt >= 2;
}
note $hit ? 'at least one stop landed inside the crash-restart window'
  : 'no stop landed inside the window on this machine (each still had to end postgres)';

# a primary is never escalated: it gets its clean shutdown
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_hactl', 'stop', '--pgdata', $n1->data_dir, '--timeout', '1' ], '>', \$out, '2>', \$err,
	IPC::Run::timeout(120));
ok(!postmaster_running($n1), 'pg_hactl stop on the primary: postgres gone');
unlike("$out$err", qr/immediate shutdown/, 'the primary was not escalated');
like(slurp_file($n1->logfile), qr/database system is shut down/, 'the primary shut down cleanly');
$n1->{_pid} = undef;

sub slurp_from
{
	my ($file, $off) = @_;
	open my $fh, '<', $file or return '';
	seek $fh, $off, 0;
	local $/;
	my $s = <$fh> // '';
	close $fh;
	return $s;
}

done_testing();
