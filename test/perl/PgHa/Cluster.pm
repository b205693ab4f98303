
# PgHa::Cluster: build pg_ha nodes (PgHa::Node, i.e. PostgreSQL::Test::Cluster
# nodes) and read the Patroni-layout keys they publish in etcd.
#
#   my $etcd = PgHa::Etcd->new(members => 1);
#   my ($primary, @replicas) = new_cluster(etcd => $etcd, nodes => 3, ttl => 10);
#   is(leader_key($etcd), 'node1');
#   my $m = member_json($etcd, 'node2');     # decoded members/node2
#
# Defaults: namespace '/service', cluster 'pgtest', ttl 10, node names
# node1, node2, ...

package PgHa::Cluster;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use JSON::PP ();
use Test::More;
use Time::HiRes ();

use PostgreSQL::Test::Cluster ();
use PostgreSQL::Test::Utils ();
use PgHa::Node;

our @EXPORT = qw(new_node new_primary new_replica new_cluster kill9
  leader_key member_json member_raw ha_key);

=pod

=head1 FUNCTIONS

=over

=item new_node(name => 'node1', etcd => $etcd, start => 0, ...)

An initialised (allows_streaming) but, by default, not started node with the
pg_ha settings in postgresql.conf.  Options as for PgHa::Node::setup_pg_ha
(etcd, endpoints, namespace, cluster, ttl, preload, etcd_timeout,
extra_conf), plus start => 1 and create_extension => 1 (after start).

=item new_primary(name => 'node1', etcd => $etcd, ttl => 10, extra_conf => '...')

new_node, started, with CREATE EXTENSION pg_ha in database postgres (retried while the commit
fence refuses it, i.e. until the node holds the leader lease).

=cut

sub new_node
{
	my (%p) = @_;
	my $name = $p{name} // 'node1';
	my $node = PgHa::Node->new($name);
	$node->init(allows_streaming => 1);
	# Keep two segments for standbys: the harness takes one base backup per
	# replica in turn, and the fast checkpoint of a later one may remove a
	# segment an earlier replica is still fetching (its WAL receiver had
	# just reconnected with pg_ha's primary_conninfo): "requested WAL
	# segment ... has already been removed", and it never streams.
	# extra_conf may set its own.
	$node->append_conf('postgresql.conf', "wal_keep_size = '32MB'\n");
	$node->setup_pg_ha(%p);
	if ($p{start})
	{
		$node->start;
		create_extension($node) if $p{create_extension} // 1;
	}
	return $node;
}

# CREATE EXTENSION pg_ha on a freshly started primary.  With pg_ha.fencing
# on (the default) a primary refuses to commit writes until its worker holds
# the leader lease, which takes a moment after start: retry while the commit
# is refused by the fence (SQLSTATE 25006: a session that starts while the
# node is fenced is read-only, and its refusal says "pg_ha: write refused"),
# for up to 30 s.
sub create_extension
{
	my ($node, %p) = @_;
	my $deadline = Time::HiRes::time() + ($p{timeout} // 30);
	while (1)
	{
		my ($rc, $out, $err) = $node->psql('postgres',
			'CREATE EXTENSION IF NOT EXISTS pg_ha');
		return 1 if $rc == 0;
		croak "CREATE EXTENSION pg_ha failed: $err"
		  unless $err =~ /pg_ha: (commit|write) refused/
		  && Time::HiRes::time() < $deadline;
		Time::HiRes::usleep(100_000);
	}
}

sub new_primary
{
	my (%p) = @_;
	return new_node(%p, start => 1);
}

=item new_replica(name => 'node2', from => $primary, start => 1, extra_conf => '...')

Streaming replica from a pg_basebackup of C<from>, with its own
pg_ha.node_name / connect_address / api_listen (later lines of
postgresql.conf win); started, and caught up with C<from> (replay).

=cut

sub new_replica
{
	my (%p) = @_;
	my $from = $p{from} or croak "new_replica needs from => \$primary";
	my $name = $p{name} // croak "new_replica needs name";
	my $backup = "b_$name";
	$from->backup($backup);
	my $node = PgHa::Node->new($name);
	$node->init_from_backup($from, $backup, has_streaming => 1);
	$node->setup_pg_ha(%p, replica_of => $from);
	if ($p{start} // 1)
	{
		$node->start;
		$from->wait_for_catchup($node, 'replay');
	}
	return $node;
}

=item new_cluster(etcd => $etcd, nodes => 3, names => [...], %common)

A primary and nodes-1 replicas (default names node1..nodeN).  Returns the
list (primary, replicas...).  %common goes to new_primary (and extra_conf to
every node).

=cut

sub new_cluster
{
	my (%p) = @_;
	my $n     = delete $p{nodes} // 3;
	my $names = delete $p{names} // [ map { "node$_" } 1 .. $n ];
	my $primary = new_primary(%p, name => $names->[0]);
	my @replicas;
	for my $i (1 .. $n - 1)
	{
		push @replicas,
		  new_replica(
			name => $names->[$i],
			from => $primary,
			(defined $p{extra_conf} ? (extra_conf => $p{extra_conf}) : ()));
	}
	return ($primary, @replicas);
}

=item kill9($node)

SIGKILL the node's postmaster (see PgHa::Node::kill9).

=cut

sub kill9 { return $_[0]->kill9; }

=item ha_key(suffix, namespace => '/service', cluster => 'pgtest')

=item leader_key($etcd, cluster => 'pgtest', namespace => '/service')

Value of the leader key, undef if absent.

=item member_raw($etcd, $name, %p) / member_json($etcd, $name, %p)

Member key of C<$name>: raw string / decoded JSON (undef if absent).

=back

=cut

sub ha_key
{
	my ($suffix, %p) = @_;
	return PgHa::Node::key_path($p{namespace}, $p{cluster} // 'pgtest',
		$suffix);
}

sub leader_key
{
	my ($etcd, %p) = @_;
	return $etcd->get(ha_key('leader', %p));
}

sub member_raw
{
	my ($etcd, $name, %p) = @_;
	return $etcd->get(ha_key("members/$name", %p));
}

sub member_json
{
	my ($etcd, $name, %p) = @_;
	my $raw = member_raw($etcd, $name, %p);
	return defined $raw ? JSON::PP::decode_json($raw) : undef;
}

1;
