
# PgHa::Node: a PostgreSQL::Test::Cluster node running pg_ha.
#
# Built by PgHa::Cluster (new_primary / new_replica / new_cluster); adds the
# pg_ha configuration, typed access to pg_ha.status() / pg_ha.members(), the
# node's etcd keys, and a kill9 that leaves no orphaned postgres children
# behind at the end of the test.

package PgHa::Node;

use strict;
use warnings;

use parent 'PostgreSQL::Test::Cluster';
use PostgreSQL::Test::Utils ();
use PgHa::Test ();    # fatal signals -> die, so END blocks clean up

use Carp;
use JSON::PP ();
use Test::More;
use Time::HiRes qw(usleep);

my %orphans;    # pid => node name: children of postmasters we SIGKILLed

=pod

=head1 METHODS

=over

=item $node->setup_pg_ha(%p)

Append the pg_ha settings to postgresql.conf.  Keys: etcd (PgHa::Etcd) or
endpoints (string), namespace ('/service'), cluster ('pgtest'), ttl (10),
preload (1: put pg_ha in shared_preload_libraries), api_port and
metrics_port (free loopback ports by default: every node has its own),
etcd_timeout (ms, optional), extra_conf (appended last).  With
C<replica_of =E<gt> $node> only the node-specific settings are written and
the rest is inherited (the data directory comes from a backup of that node).

=cut

sub setup_pg_ha
{
	my ($self, %p) = @_;
	my $name = $self->name;
	my $port = $self->port;

	my $ha;
	if (my $src = $p{replica_of})
	{
		$ha = { %{ $src->{pg_ha} // {} } };
	}
	else
	{
		my $endpoints = $p{endpoints}
		  // (defined $p{etcd} ? $p{etcd}->endpoints : undef);
		$ha = {
			etcd      => $p{etcd},
			endpoints => $endpoints,
			namespace => $p{namespace} // '/service',
			cluster   => $p{cluster}   // 'pgtest',
			ttl       => $p{ttl}       // 10,
			preload   => $p{preload}   // 1,
		};
	}
	$ha->{name}     = $name;
	$ha->{api_port} = $p{api_port} // PostgreSQL::Test::Cluster::get_free_port();
	$ha->{metrics_port} =
	  $p{metrics_port} // PostgreSQL::Test::Cluster::get_free_port();
	$self->{pg_ha}  = $ha;

	my $conf = "\n# Added by PgHa::Node\n";
	if (!$p{replica_of})
	{
		# TCP on loopback as well as the test's unix socket: conn_url must
		# be reachable.
		$conf .= "listen_addresses = '127.0.0.1'\n";
		$conf .= "max_connections = 20\n";
		$conf .= "wal_log_hints = on\n";
		# PG_HA_TEST_LOG_LEVEL=debug1 (etc.) for more server output.
		$conf .= "log_min_messages = $ENV{PG_HA_TEST_LOG_LEVEL}\n"
		  if $ENV{PG_HA_TEST_LOG_LEVEL};
		if ($ha->{preload})
		{
			$conf .= "shared_preload_libraries = 'pg_ha'\n";
			$conf .= "pg_ha.etcd_endpoints = '$ha->{endpoints}'\n"
			  if defined $ha->{endpoints};
			$conf .= "pg_ha.namespace = '$ha->{namespace}'\n";
			$conf .= "pg_ha.cluster = '$ha->{cluster}'\n";
			$conf .= "pg_ha.ttl = $ha->{ttl}\n";
			$conf .= "pg_ha.etcd_timeout = $p{etcd_timeout}\n"
			  if defined $p{etcd_timeout};
		}
	}
	if ($ha->{preload})
	{
		$conf .= "pg_ha.node_name = '$name'\n";
		$conf .= "pg_ha.connect_address = '127.0.0.1:$port'\n";
		$conf .= "pg_ha.api_listen = '127.0.0.1:$ha->{api_port}'\n";
		$conf .= "pg_ha.metrics_listen = '127.0.0.1:$ha->{metrics_port}'\n";
	}
	$conf .= "$p{extra_conf}\n" if defined $p{extra_conf};
	$self->append_conf('postgresql.conf', $conf);
	return;
}

=item $node->ha_etcd / ha_cluster / ha_namespace / ha_ttl / api_port / metrics_port

The pg_ha settings this node was built with.

=cut

sub ha_etcd      { return $_[0]->{pg_ha}{etcd}; }
sub ha_cluster   { return $_[0]->{pg_ha}{cluster}; }
sub ha_namespace { return $_[0]->{pg_ha}{namespace}; }
sub ha_ttl       { return $_[0]->{pg_ha}{ttl}; }
sub api_port     { return $_[0]->{pg_ha}{api_port}; }
sub metrics_port { return $_[0]->{pg_ha}{metrics_port}; }

=item $node->ha_key($suffix)

etcd key "/<namespace>/<cluster>/<suffix>" of this node's cluster, e.g.
C<ha_key('leader')>, C<ha_key('members/node1')>.

=cut

sub ha_key
{
	my ($self, $suffix) = @_;
	return PgHa::Node::key_path($self->ha_namespace, $self->ha_cluster,
		$suffix);
}

# key_path($namespace, $cluster, $suffix): Patroni's layout.
sub key_path
{
	my ($ns, $cluster, $suffix) = @_;
	$ns //= '/service';
	$ns = "/$ns" unless $ns =~ m{^/};
	$ns =~ s{/+$}{};
	return "$ns/$cluster" . (defined $suffix ? "/$suffix" : '');
}

=item $node->member_key_raw / $node->member_key_json

This node's member key in etcd: raw value / decoded JSON (undef if absent).

=cut

sub member_key_raw
{
	my ($self) = @_;
	return $self->ha_etcd->get($self->ha_key('members/' . $self->name));
}

sub member_key_json
{
	my ($self) = @_;
	my $raw = $self->member_key_raw;
	return defined $raw ? JSON::PP::decode_json($raw) : undef;
}

=item $node->ha_status()

pg_ha.status() as a hash reference (booleans are JSON::PP booleans: true
is 1, false is 0; lsn is text).

=item $node->ha_members()

pg_ha.members() as an array reference of hashes, ordered by name.

=cut

sub _json_query
{
	my ($self, $sql) = @_;
	my $out = $self->safe_psql('postgres', $sql);
	return JSON::PP->new->decode($out);
}

sub ha_status
{
	my ($self) = @_;
	return $self->_json_query(
		'SELECT row_to_json(s) FROM pg_ha.status() s');
}

sub ha_members
{
	my ($self) = @_;
	return $self->_json_query(
		"SELECT coalesce(json_agg(m ORDER BY m.name), '[]') FROM pg_ha.members() m"
	);
}

=item $node->wal_lsn_bytes()

C<pg_current_wal_lsn() - '0/0'> on a primary,
C<pg_last_wal_replay_lsn() - '0/0'> on a standby (an integer).

=cut

sub wal_lsn_bytes
{
	my ($self) = @_;
	return $self->safe_psql('postgres',
		"SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
		  . "ELSE pg_current_wal_lsn() END - '0/0')::bigint");
}

=item $node->postmaster_pid()

PID from postmaster.pid (undef if there is none).

=cut

sub postmaster_pid
{
	my ($self) = @_;
	open my $fh, '<', $self->data_dir . '/postmaster.pid' or return undef;
	my $pid = <$fh>;
	close $fh;
	return undef unless defined $pid;
	chomp $pid;
	return $pid =~ /^\d+$/ ? $pid : undef;
}

# Process helpers (Linux /proc), usable from tests:
#   PgHa::Node::children_of($ppid), parent_pid($pid), process_title($pid).

sub process_title
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/cmdline" or return undef;
	local $/;
	my $c = <$fh> // '';
	close $fh;
	$c =~ s/\0+/ /g;
	$c =~ s/\s+$//;
	return $c;
}

# Processes whose parent is $ppid.
sub children_of
{
	my ($ppid) = @_;
	my @kids;
	opendir my $d, '/proc' or return ();
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $stat = <$fh>;
		close $fh;
		next unless defined $stat;
		# pid (comm) state ppid ...: comm may contain spaces and parens.
		my ($rest) = $stat =~ /\)\s+(.*)$/s or next;
		my (undef, $pp) = split /\s+/, $rest;
		push @kids, $pid if defined $pp && $pp == $ppid;
	}
	closedir $d;
	return @kids;
}

# Parent PID of $pid (undef if gone).
sub parent_pid
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return undef;
	my $stat = <$fh>;
	close $fh;
	my ($rest) = ($stat // '') =~ /\)\s+(.*)$/s or return undef;
	return (split /\s+/, $rest)[1];
}

# Alive and not a zombie.
sub _alive
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $stat = <$fh>;
	close $fh;
	return 0 unless defined $stat;
	my ($state) = $stat =~ /\)\s+(\S)/;
	return (defined $state && $state ne 'Z' && $state ne 'X') ? 1 : 0;
}

sub _is_postgres
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/cmdline" or return 0;
	local $/;
	my $cmd = <$fh> // '';
	close $fh;
	return $cmd =~ /^postgres/ ? 1 : 0;
}

=item $node->kill9()

SIGKILL the postmaster (PID read from postmaster.pid), as a crashed machine
would, and tell PostgreSQL::Test::Cluster it is stopped.  Its children (the
pg_ha worker among them) are not touched: they are expected to notice the
postmaster's death by themselves.  They are remembered, and any still alive
is SIGKILLed before this node is started again and at the end of the test.
Returns the list of those child PIDs.

=cut

sub kill9
{
	my ($self) = @_;
	my $name = $self->name;
	my $pid  = $self->postmaster_pid // $self->{_pid};
	unless ($pid && _alive($pid))
	{
		diag "kill9: node $name has no running postmaster";
		$self->{_pid} = undef;
		return ();
	}
	my @kids = children_of($pid);
	note "### Killing node \"$name\" postmaster $pid using signal 9 (children: @kids)";
	kill 'KILL', $pid;
	for (1 .. 100)
	{
		last unless _alive($pid);
		usleep(20_000);
	}
	$self->{_pid} = undef;
	$orphans{$_} = $name for @kids;
	$self->{_pg_ha_orphans} = [@kids];
	return @kids;
}

=item $node->orphans_alive()

Children of the SIGKILLed postmaster that are still running.

=item $node->reap_orphans([$grace_seconds])

Wait up to the grace period (default 10 s) for those children to exit, then
SIGKILL the rest.  Returns the PIDs that had to be killed.

=cut

sub orphans_alive
{
	my ($self) = @_;
	return grep { _alive($_) && _is_postgres($_) }
	  @{ $self->{_pg_ha_orphans} // [] };
}

sub reap_orphans
{
	my ($self, $grace) = @_;
	$grace //= 10;
	my $deadline = Time::HiRes::time() + $grace;
	while ($self->orphans_alive && Time::HiRes::time() < $deadline)
	{
		usleep(50_000);
	}
	my @left = $self->orphans_alive;
	if (@left)
	{
		diag "node " . $self->name
		  . ": killing postgres processes that outlived their postmaster: @left";
		kill 'KILL', @left;
	}
	delete $orphans{$_} for @{ $self->{_pg_ha_orphans} // [] };
	$self->{_pg_ha_orphans} = [];
	return @left;
}

sub start
{
	my ($self, %params) = @_;
	$self->reap_orphans if @{ $self->{_pg_ha_orphans} // [] };
	return $self->SUPER::start(%params);
}

END
{
	local $?;
	my @left = grep { _alive($_) && _is_postgres($_) } keys %orphans;
	kill 'KILL', @left if @left;
}

=back

=cut

1;
