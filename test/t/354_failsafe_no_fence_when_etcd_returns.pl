
# Failsafe mode, etcd paused (SIGSTOP) for longer than the TTL while every
# node is up: the leader writes on through the outage on its members'
# promises.  When etcd resumes it revokes the leases that ran out meanwhile,
# so the leader key is gone; the leader, still within the deadline every
# member confirmed, takes the key back with a create-only compare instead
# of fencing.  No write is refused from the start of the outage until two
# TTLs after etcd returned, and the same node leads on the same timeline.

use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Failsafe;
use PgHa::Test;

my $ttl  = 6;
my $etcd = PgHa::Etcd->new(members => 1);
# etcd_timeout 1 s: a paused etcd costs each failing cycle one timeout, and
# a failsafe round must come well within a TTL of the previous one
my ($n1, $n2, $n3) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	extra_conf => failsafe_conf() . "pg_ha.etcd_timeout = 1000\n");
wait_failsafe_members($etcd, qw(node1 node2 node3));
$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY)');

my $history = history_of($etcd);
my $tli     = timeline($n1);
my $offset  = -s $n1->logfile;

# Never leave etcd stopped behind, whatever happens below.
my $etcd_pid = $etcd->member(0)->{pid};
my $paused   = 0;
END { kill 'CONT', $etcd_pid if $paused && $etcd_pid; }

# --- a writer commits on node1 throughout, one connection per write
my $wlog   = PostgreSQL::Test::Utils::tempdir() . '/writer.log';
my $writer = start_writer($n1, $wlog);
wait_for(sub { grep { /^ok / } read_writer($wlog) }, timeout => 30, what => 'a first write',
	fatal => 1);

# --- etcd paused for two TTLs: every lease runs out inside etcd
kill 'STOP', $etcd_pid;
$paused = 1;
my $t_pause = now();
sleep 2 * $ttl;
kill 'CONT', $etcd_pid;
$paused = 0;
my $t_resume = now();
note sprintf('etcd paused for %.1f s', $t_resume - $t_pause);

wait_ok(sub { (leader_of($etcd) // '') eq 'node1' }, 'node1 holds the leader key after etcd resumed',
	timeout => 30);
my $until = $t_resume + 2 * $ttl;
usleep(1_000_000 * ($until - now())) if now() < $until;
stop_writer($writer);

my @lines   = read_writer($wlog);
my @window  = grep { my ($t) = /^\S+ (\S+)/; $t >= $t_pause && $t <= $until } @lines;
my @refused = grep { /^err / } @window;
my @ok_after = grep { my ($t) = /^ok (\S+)/; defined $t && $t > $t_resume } @window;
note sprintf('%d writes from the pause until 2 TTLs after resume, %d refused, %d committed after resume',
	scalar @window, scalar @refused, scalar @ok_after);
my $log = log_since($n1, $offset);
like($log, qr/pg_ha: lease \d+ expired in etcd/, 'etcd expired node1\'s lease during the pause');
is(scalar @refused, 0, 'node1 refuses no write from the pause until 2 TTLs after etcd resumed')
  or diag join("\n", @refused[ 0 .. ($#refused < 4 ? $#refused : 4) ]);
cmp_ok(scalar @ok_after, '>', 10, 'node1 committed after etcd resumed');
my @fenced = $log =~ /^.*pg_ha: (?:fenced: commits refused|.*-> fenced).*$/mg;
is(scalar @fenced, 0, 'node1 never fenced') or diag join("\n", @fenced);

# --- same leader, no failover
is(leader_of($etcd), 'node1', 'node1 still leads');
for my $r ($n2, $n3)
{
	is(in_recovery($r), 1, $r->name . ' is still a replica');
}
is(timeline($n1), $tli, 'node1 is on the same timeline');
is_deeply(history_of($etcd), $history, 'the history key has no new entry');
is(scalar(writable_nodes($n1, $n2, $n3)), 1, 'exactly one writable node');

done_testing();

# The timeline of the node's current WAL position.
sub timeline
{
	my ($node) = @_;
	return hex substr($node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())'),
		0, 8);
}

# A child process (stopped with SIGKILL, so that it runs no END block) that inserts into t on $node every 20 ms, one psql each,
# and appends "ok <time>" or "err <time> <message>" to $file.
sub start_writer
{
	my ($node, $file) = @_;
	my $pid = fork // die "fork: $!";
	return $pid if $pid;
	# the test's signal handlers would run its END blocks, which stop the nodes
	$SIG{$_} = 'DEFAULT' for qw(TERM INT HUP ALRM __DIE__);
	open my $fh, '>>', $file or POSIX::_exit(1);
	$fh->autoflush(1);
	$ENV{PGCONNECT_TIMEOUT} = 3;
	my @cmd = ('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
		'-d', 'postgres', '-c', 'INSERT INTO t DEFAULT VALUES');
	while (1)
	{
		my $t   = now();
		my $out = '';
		if (open my $ph, '-|')
		{
			local $/;
			$out = <$ph> // '';
			close $ph;
		}
		else
		{
			open STDERR, '>&', \*STDOUT;
			exec @cmd or POSIX::_exit(127);
		}
		my $rc = $?;
		$out =~ s/\s+/ /g;
		printf $fh "%s %.3f%s\n", $rc == 0 ? 'ok' : 'err', $t, $rc == 0 ? '' : " $out";
		usleep(20_000);
	}
}

sub stop_writer
{
	my ($pid) = @_;
	kill 'KILL', $pid;
	waitpid $pid, 0;
	return;
}

sub read_writer
{
	my ($file) = @_;
	open my $fh, '<', $file or return ();
	chomp(my @l = <$fh>);
	return @l;
}
