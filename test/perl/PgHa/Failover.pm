# PgHa::Failover: helpers shared by the HA-core TAP suites (test/t/3xx):
# a 3-node cluster ready to fail over, write probes that report the
# SQLSTATE, the WAL receiver of a standby, and "who is primary" checks.
#
#   my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => 5);
#   my ($ok, $state, $err) = try_sql($node, 'INSERT ...');
#   my $rcv = wal_receiver($n3);   # {status, received_tli, sender_port, ...}
#   my @w = writable_nodes($n1, $n2, $n3);

package PgHa::Failover;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use JSON::PP ();
use Test::More;
use Time::HiRes ();
use IPC::Run ();

use PgHa::Cluster;
use PgHa::Test;

our @EXPORT = qw(ha_cluster ha_replica_conf try_sql wal_receiver
  writable_nodes in_recovery leader_of history_of wait_streaming
  wait_leader_not log_since postmaster_running supervise forget_if_stopped);

# Settings every 3xx cluster gets: a standby retries a failed WAL source
# every 500 ms (default 5 s) so it follows a new leader quickly; and
# restart_after_crash back at its default (on): PostgreSQL::Test::Cluster
# turns it off, but pg_ha demotes a primary in place by forcing a
# crash-restart of its postmaster, which needs it.
our $COMMON_CONF =
  "wal_retrieve_retry_interval = '500ms'\nrestart_after_crash = on\n";

=pod

=over

=item ha_cluster(etcd => $etcd, ttl => 5, nodes => 3, extra_conf => '', primary_conf => '', replica_conf => '')

A primary (node1) and replicas (node2, ...) with the common settings; waits
until node1 holds the leader key and every replica's member key says it is
streaming.  C<primary_conf> is appended to the primary only (written before
the base backups, so replicas inherit it unless C<replica_conf> overrides
it: later lines win).  Extra arguments go to new_node (e.g. endpoints).

=cut

sub ha_cluster
{
	my (%p) = @_;
	my $n     = delete $p{nodes} // 3;
	my $extra = $COMMON_CONF . (delete $p{extra_conf} // '');
	my $pconf = delete $p{primary_conf} // '';
	my $rconf = delete $p{replica_conf} // '';
	my $etcd  = $p{etcd};
	my $primary = PgHa::Cluster::new_node(
		%p,
		name       => 'node1',
		start      => 1,
		extra_conf => $extra . $pconf);
	my @replicas;
	for my $i (2 .. $n)
	{
		push @replicas,
		  PgHa::Cluster::new_replica(
			name       => "node$i",
			from       => $primary,
			extra_conf => $extra . $rconf);
	}
	wait_for(sub { (leader_of($etcd) // '') eq 'node1' },
		timeout => 30, what => 'node1 to hold the leader key', fatal => 1);
	wait_streaming($etcd, map { $_->name } @replicas);
	return ($primary, @replicas);
}

=item wait_streaming($etcd, @names)

Wait (fatal, 30 s) until the member key of each named node reports it as a
streaming replica.

=cut

sub wait_streaming
{
	my ($etcd, @names) = @_;
	for my $name (@names)
	{
		wait_for(
			sub {
				my $m = member_json($etcd, $name) or return 0;
				return ($m->{role} // '') =~ /replica|standby/
				  && ($m->{replication_state} // $m->{state} // '') =~
				  /streaming/;
			},
			timeout => 30,
			what    => "member key of $name to show a streaming replica",
			fatal   => 1);
	}
	return 1;
}

=item leader_of($etcd) / history_of($etcd)

Leader key value (undef if absent) / decoded history key (array ref, [] if
absent).

=cut

sub leader_of { return leader_key($_[0]); }

sub history_of
{
	my ($etcd) = @_;
	my $raw = $etcd->get(PgHa::Cluster::ha_key('history'));
	return [] unless defined $raw && length $raw;
	return JSON::PP->new->allow_bignum->decode($raw);
}

=item wait_leader_not($etcd, $name, timeout => 30)

Wait until the leader key holds a name other than C<$name>; returns
(new leader, seconds waited) (leader undef on timeout).

=cut

sub wait_leader_not
{
	my ($etcd, $name, %p) = @_;
	my $leader;
	my ($ok, $secs) = timed_wait(
		sub {
			$leader = leader_of($etcd);
			return defined $leader && $leader ne $name;
		},
		timeout  => $p{timeout} // 30,
		interval => $p{interval} // 0.05,
		what     => "a leader other than $name");
	return ($ok ? $leader : undef, $secs);
}

=item try_sql($node, $sql, timeout => 10, user => 'name')

Run C<$sql> through psql (as C<user> if given) (ON_ERROR_STOP, VERBOSITY verbose) and return
(ok, sqlstate, error text, stdout).  Never dies.

=cut

sub try_sql
{
	my ($node, $sql, %p) = @_;
	my ($out, $err) = ('', '');
	my $rc = eval {
		$node->psql(
			'postgres', "\\set VERBOSITY verbose\n$sql",
			stdout        => \$out,
			stderr        => \$err,
			on_error_stop => 1,
			timeout       => $p{timeout} // 10,
			(defined $p{user} ? (extra_params => [ '-U', $p{user} ]) : ()));
	};
	if (!defined $rc)
	{
		$err = "psql failed: $@";
		$rc  = 99;
	}
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($rc == 0 ? 1 : 0, $state // '', $err, $out);
}

=item in_recovery($node)

pg_is_in_recovery() as 1/0, undef when the node cannot be queried.

=item writable_nodes(@nodes)

Nodes that answer and are not in recovery.

=cut

sub in_recovery
{
	my ($node) = @_;
	my ($ok, undef, undef, $out) =
	  try_sql($node, 'SELECT pg_is_in_recovery()', timeout => 5);
	return undef unless $ok;
	return $out =~ /^t/ ? 1 : 0;
}

sub writable_nodes
{
	my (@nodes) = @_;
	return grep { my $r = in_recovery($_); defined $r && !$r } @nodes;
}

=item wal_receiver($node)

The node's pg_stat_wal_receiver row as a hash (status, received_tli,
sender_host, sender_port, flushed_lsn), or undef when there is none.

=cut

sub wal_receiver
{
	my ($node) = @_;
	my ($ok, undef, undef, $out) = try_sql($node,
		"SELECT coalesce(row_to_json(r)::text, '') FROM "
		  . "(SELECT status, received_tli, sender_host, sender_port, flushed_lsn "
		  . "FROM pg_stat_wal_receiver) r",
		timeout => 5);
	return undef unless $ok && $out =~ /\{/;
	return JSON::PP::decode_json($out);
}

=item log_since($node, $offset)

The node's server log from byte C<$offset> (use -s $node->logfile first).

=cut

sub log_since
{
	my ($node, $offset) = @_;
	return PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset // 0);
}

=item postmaster_running($node)

True if the node's postmaster (PID from postmaster.pid) is alive.

=item supervise($node)

Act as the service manager (systemd with Restart=always and ExecStartPre
"pg_hactl rejoin --if-needed"): if the node's postmaster has exited, run
C<pg_hactl rejoin --pgdata DIR --if-needed> and start the node again.
Returns undef when the postmaster was running, else a hash (rejoin_rc,
rejoin_output, started).

=cut

sub postmaster_running
{
	my ($node) = @_;
	my $pid = $node->postmaster_pid or return 0;
	return kill(0, $pid) && PgHa::Node::_alive($pid) ? 1 : 0;
}

sub supervise
{
	my ($node) = @_;
	return undef if postmaster_running($node);
	$node->{_pid} = undef;    # the harness must not try to stop it
	my ($out, $err) = ('', '');
	my @cmd = ('pg_hactl', 'rejoin', '--pgdata', $node->data_dir, '--if-needed');
	my $ok = eval {
		IPC::Run::run(\@cmd, '>', \$out, '2>', \$err,
			IPC::Run::timeout(120));
	};
	my $rc = defined $ok ? $? >> 8 : -1;
	$err .= $@ if !defined $ok;
	note "service manager: @cmd -> rc $rc\n$out$err";
	my $started = 0;
	if ($rc == 0)
	{
		$started = $node->start(fail_ok => 1) ? 1 : 0;
		note 'service manager: ' . $node->name . ($started ? ' started' : ' failed to start');
	}
	return { rejoin_rc => $rc, rejoin_output => "$out$err", started => $started };
}

=item forget_if_stopped(@nodes)

For nodes whose postmaster is gone, tell PostgreSQL::Test::Cluster so that
its teardown does not fail trying to stop them.

=back

=cut

sub forget_if_stopped
{
	for my $node (@_)
	{
		$node->{_pid} = undef unless postmaster_running($node);
	}
	return;
}

1;
