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
use HTTP::Tiny ();
use MIME::Base64 ();
use PgHa::Etcd ();

use PgHa::Cluster;
use PgHa::Test;

our @EXPORT = qw(ha_cluster ha_replica_conf try_sql wal_receiver
  stop_streaming resume_streaming
  writable_nodes in_recovery leader_of history_of wait_streaming
  wait_leader_not log_since postmaster_running supervise forget_if_stopped
  key_watch worker_pid wal_receiver_pid lease_remaining wait_lease_renewed
  health_status leader_holders sync_key sync_standby);

# Settings every 3xx cluster gets: a standby retries a failed WAL source
# every 500 ms (default 5 s) so it follows a new leader quickly; and
# restart_after_crash back at its default (on): PostgreSQL::Test::Cluster
# turns it off, but pg_ha demotes a primary in place by forcing a
# crash-restart of its postmaster, which needs it.
our $COMMON_CONF =
  "wal_retrieve_retry_interval = '500ms'\nrestart_after_crash = on\n";

=pod

=over

=item ha_cluster(etcd => $etcd, ttl => 5, nodes => 3, names => [...], extra_conf => '', primary_conf => '', replica_conf => '')

A primary (node1) and replicas (node2, ...) with the common settings; waits
until node1 holds the leader key and every replica's member key says it is
streaming.  C<primary_conf> is appended to the primary only (written before
the base backups, so replicas inherit it unless C<replica_conf> overrides
it: later lines win).  C<names> replaces node1, node2, ... (the first is
the primary; a test that builds several clusters needs distinct names, as
PostgreSQL::Test::Cluster keys data directories by name).  Extra arguments
go to new_node (e.g. endpoints, namespace, cluster: the waits read the
keys of that namespace and cluster).

=cut

sub ha_cluster
{
	my (%p) = @_;
	my $names = delete $p{names};
	my $n     = delete $p{nodes} // ($names ? scalar @$names : 3);
	$names //= [ map { "node$_" } 1 .. $n ];
	my $extra = $COMMON_CONF . (delete $p{extra_conf} // '');
	my $pconf = delete $p{primary_conf} // '';
	my $rconf = delete $p{replica_conf} // '';
	my $etcd  = $p{etcd};
	my %keys  = _key_opts(%p);
	my $primary = PgHa::Cluster::new_node(
		%p,
		name       => $names->[0],
		start      => 1,
		extra_conf => $extra . $pconf);
	my @replicas;
	for my $i (2 .. $n)
	{
		push @replicas,
		  PgHa::Cluster::new_replica(
			name       => $names->[ $i - 1 ],
			from       => $primary,
			extra_conf => $extra . $rconf);
	}
	wait_for(sub { (leader_of($etcd, %keys) // '') eq $names->[0] },
		timeout => 30, what => "$names->[0] to hold the leader key", fatal => 1);
	wait_streaming($etcd, \%keys, map { $_->name } @replicas);
	return ($primary, @replicas);
}

# namespace/cluster options of a hash, for the key helpers.
sub _key_opts
{
	my (%p) = @_;
	return map { defined $p{$_} ? ($_ => $p{$_}) : () } qw(namespace cluster);
}

=item wait_streaming($etcd, [\%keys,] @names)

Wait (fatal, 30 s) until the member key of each named node reports it as a
streaming replica.  An optional hash reference after C<$etcd> gives the
namespace and cluster (default /service, pgtest).

=cut

sub wait_streaming
{
	my ($etcd, @names) = @_;
	my %keys = ref $names[0] eq 'HASH' ? %{ shift @names } : ();
	for my $name (@names)
	{
		wait_for(
			sub {
				my $m = member_json($etcd, $name, %keys) or return 0;
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

=item leader_of($etcd, %keys) / history_of($etcd, %keys)

Leader key value (undef if absent) / decoded history key (array ref, [] if
absent).  C<%keys>: namespace, cluster (default /service, pgtest).

=cut

sub leader_of { my ($etcd, %p) = @_; return leader_key($etcd, _key_opts(%p)); }

sub history_of
{
	my ($etcd, %p) = @_;
	my $raw = $etcd->get(PgHa::Cluster::ha_key('history', _key_opts(%p)));
	return [] unless defined $raw && length $raw;
	return JSON::PP->new->allow_bignum->decode($raw);
}

=item wait_leader_not($etcd, $name, timeout => 30, namespace => ..., cluster => ...)

Wait until the leader key holds a name other than C<$name>; returns
(new leader, seconds waited) (leader undef on timeout).

=cut

sub wait_leader_not
{
	my ($etcd, $name, %p) = @_;
	my $leader;
	my ($ok, $secs) = timed_wait(
		sub {
			$leader = leader_of($etcd, %p);
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

=item stop_streaming($replica, $primary) / resume_streaming($replica, $saved)

stop_streaming points the replica's primary_conninfo at a closed port
(ALTER SYSTEM + reload; pg_ha leaves a primary_conninfo it already set
alone) and waits (fatal, 30 s) until $primary lists no WAL sender for it.
It returns the previous primary_conninfo, which resume_streaming puts back.

=cut

sub stop_streaming
{
	my ($replica, $primary) = @_;
	my $saved = $replica->safe_psql('postgres', 'SHOW primary_conninfo');
	my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
	$replica->safe_psql('postgres',
		"ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=$dead_port'");
	$replica->reload;
	my $name = $replica->name;
	wait_for(
		sub {
			$primary->safe_psql('postgres',
				"SELECT count(*) FROM pg_stat_replication WHERE application_name = '$name'") eq '0';
		},
		timeout => 30, what => "$name to stop streaming", fatal => 1);
	return $saved;
}

sub resume_streaming
{
	my ($replica, $saved) = @_;
	(my $quoted = $saved) =~ s/'/''/g;
	$replica->safe_psql('postgres', "ALTER SYSTEM SET primary_conninfo = '$quoted'");
	$replica->reload;
	return;
}

=item forget_if_stopped(@nodes)

For nodes whose postmaster is gone, tell PostgreSQL::Test::Cluster so that
its teardown does not fail trying to stop them.

=cut

sub forget_if_stopped
{
	for my $node (@_)
	{
		$node->{_pid} = undef unless postmaster_running($node);
	}
	return;
}


=item key_watch($etcd, $key, prefix => 0)

Watch C<$key> (every key under it with C<prefix =E<gt> 1>) from the current
revision on, with C<etcdctl watch -w json> running in the background, so
that a test can list every change afterwards, including a value held for a
moment only (a poll could miss it).  Returns an object:

  my $w = key_watch($etcd, $n1->ha_key('leader'));
  ...
  my @ev = $w->events;          # every event so far, oldest first:
                                # { type => 'PUT'|'DELETE', key, value, revision }
  my @v  = $w->values;          # the values PUT so far
  $w->stop;                     # also done at the end of the test

The watch starts at the revision after the current one, so no change made
after key_watch returns is missed, however late etcdctl connects.

=cut

my @watches;

sub key_watch
{
	my ($etcd, $key, %p) = @_;
	my (undef, $json) = $etcd->ctl('get', '-w', 'json', '--', $key);
	my $rev = eval { JSON::PP->new->allow_bignum->decode($json)->{header}{revision} } // 0;
	my ($out, $err) = ('', '');
	local $ENV{ETCDCTL_API} = 3;
	my @cmd = (
		$PgHa::Etcd::ETCDCTL, '--endpoints=' . $etcd->endpoints,
		@{ $etcd->{ctl_args} // [] }, 'watch', '-w', 'json',
		'--rev=' . ($rev + 1), ($p{prefix} ? ('--prefix') : ()), $key);
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
	my $self = bless { h => $h, out => \$out, err => \$err, events => [], key => $key },
	  'PgHa::Failover::KeyWatch';
	push @watches, $self;
	return $self;
}

sub PgHa::Failover::KeyWatch::events
{
	my ($self) = @_;
	eval { $self->{h}->pump_nb if $self->{h} && $self->{h}->pumpable; };
	# a watch that died would make "never saw X" assertions pass vacuously
	croak "key_watch($self->{key}): etcdctl exited: ${ $self->{err} }"
	  if $self->{h} && !$self->{h}->pumpable && !$self->{stopping};
	my $out = $self->{out};
	while ($$out =~ s/^([^\n]*)\n//)
	{
		my $line = $1;
		next unless $line =~ /^\{/;
		my $r = eval { JSON::PP->new->allow_bignum->decode($line) } or next;
		for my $e (@{ $r->{Events} // [] })
		{
			my $kv = $e->{kv} // {};
			push @{ $self->{events} },
			  {
				type     => ($e->{type} // 0) ? 'DELETE' : 'PUT',
				key      => MIME::Base64::decode_base64($kv->{key} // ''),
				value    => MIME::Base64::decode_base64($kv->{value} // ''),
				revision => '' . ($kv->{mod_revision} // 0),
			  };
		}
	}
	return @{ $self->{events} };
}

sub PgHa::Failover::KeyWatch::values
{
	my ($self) = @_;
	return map { $_->{value} } grep { $_->{type} eq 'PUT' } $self->events;
}

sub PgHa::Failover::KeyWatch::stop
{
	my ($self) = @_;
	return unless $self->{h};
	eval { $self->events; };
	$self->{stopping} = 1;
	eval { $self->{h}->kill_kill(grace => 1); };
	$self->{h} = undef;
	return;
}

END
{
	local $?;
	$_->stop for @watches;
}

=item worker_pid($node)

PID of the node's pg_ha worker (pg_stat_activity, backend_type 'pg_ha
worker'), undef when there is none or the node does not answer.

=item wal_receiver_pid($node)

PID of the node's WAL receiver (pg_stat_wal_receiver), or undef.

=cut

sub worker_pid
{
	my ($node) = @_;
	my ($ok, undef, undef, $out) = try_sql($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ha worker'",
		timeout => 5);
	return ($ok && $out =~ /^(\d+)/) ? $1 : undef;
}

sub wal_receiver_pid
{
	my ($node) = @_;
	my ($ok, undef, undef, $out) =
	  try_sql($node, 'SELECT pid FROM pg_stat_wal_receiver', timeout => 5);
	return ($ok && $out =~ /^(\d+)/) ? $1 : undef;
}

=item lease_remaining($etcd, $lease_hex)

Seconds etcd says are left on the lease (whole seconds, rounded down, as
C<etcdctl lease timetolive> prints them); -1 once it has expired, undef if
etcd does not answer.

=item wait_lease_renewed($etcd, $lease_hex, timeout => 10)

Wait until the lease's remaining time proves a renewal: it goes up, or
holds for 1.2 s, which whole seconds cannot do without one (a holder
renewing every second, as with loop_wait 1, may never show a rise).
Returns the remaining seconds then (undef on timeout).
A test that must act right after a renewal (to have a whole TTL before the
lease can expire) starts from here.

=cut

sub lease_remaining
{
	my ($etcd, $id) = @_;
	my ($ok, $out) = $etcd->ctl('lease', 'timetolive', $id);
	return undef unless $ok;
	return -1 if $out =~ /expired/;
	return $out =~ /remaining\((-?\d+)s\)/ ? $1 : undef;
}

sub wait_lease_renewed
{
	my ($etcd, $id, %p) = @_;
	my @seen;    # [time, remaining] of each reading

	# etcd reports whole seconds, so with a renewal every second the
	# reading may never go up.  Without a renewal it must drop by at least
	# one within 1.2 s (rounded either way), so a reading that is no lower
	# than one taken 1.2 s or more before proves a renewal between them.
	return wait_for(
		sub {
			my $r = lease_remaining($etcd, $id);
			return undef unless defined $r && $r >= 0;
			my $t = Time::HiRes::time();
			my $renewed = @seen && $r > $seen[-1][1];
			$renewed ||= grep { $t - $_->[0] >= 1.2 && $r >= $_->[1] } @seen;
			push @seen, [ $t, $r ];
			return $renewed ? "$r" : undef;
		},
		timeout  => $p{timeout} // 10,
		interval => 0.02,
		what     => "a renewal of lease $id");
}

=item health_status($node, $path)

HTTP status of GET C<$path> (e.g. '/primary') on the node's health API
port; 599 when nothing answers.

=cut

sub health_status
{
	my ($node, $path) = @_;
	my $r = HTTP::Tiny->new(timeout => 3)
	  ->get('http://127.0.0.1:' . $node->api_port . $path);
	return $r->{status};
}

=item sync_key($etcd, %p) / sync_standby($etcd, %p)

The cluster's C<sync> key decoded (an empty hash when there is none), and
its C<sync_standby> field ('' when there is none).

=item leader_holders($etcd, $prefix = '/')

Every leader key under C<$prefix> in any namespace and cluster: hash
reference key => value of the keys whose name ends in "/leader".

=back

=cut

sub leader_holders
{
	my ($etcd, $prefix) = @_;
	my $all = $etcd->get_prefix($prefix // '/');
	return { map { $_ => $all->{$_} } grep { m{/leader$} } keys %$all };
}

sub sync_key
{
	my ($etcd, %p) = @_;
	my $v = $etcd->get(PgHa::Cluster::ha_key('sync', _key_opts(%p))) or return {};
	return JSON::PP::decode_json($v);
}

sub sync_standby
{
	my ($etcd, %p) = @_;
	return sync_key($etcd, %p)->{sync_standby} // '';
}

1;
