
# PgHa::PatroniCluster: a real Patroni cluster (Debian's patroni 3.0.2, etcd
# v3, replication slots on, as Pigsty runs it) for the migration tests
# (test/t/370, 371), and the steps that move its nodes to pg_ha.
#
#   my @nodes = PgHa::PatroniCluster::nodes($etcd, 3);   # node1 .. node3
#   $n->start_patroni;  $n->stop_patroni;                 # the daemon
#   $n->psql('SELECT 1');                                 # undef on error
#   $n->add_pg_ha_settings("primary_slot_name = ''\n");   # postgresql.conf
#   $n->pg_ctl('-m', 'fast', 'restart');
#   $n->start_under_unit;   # pg_hactl rejoin --if-needed, then start
#   $n->postmaster_pid;     # undef when not running
#
# Every node has scope pgtest, namespace /service/, its own postgres and
# REST port (pg_ha's API takes the REST port over).  No Patroni daemon or
# postgres outlives the test (END).

package PgHa::PatroniCluster;

use strict;
use warnings;

use IPC::Run ();
use Test::More;
use PostgreSQL::Test::Utils ();
use PostgreSQL::Test::Cluster ();
use PgHa::Test ();    # fatal signals -> die, so END blocks clean up

my @all;    # every node created, for END

# $count nodes of one cluster on $etcd (none started).
sub nodes
{
	my ($etcd, $count) = @_;
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	my ($ehost) = ($etcd->endpoints =~ m{^https?://([^,]+)});
	my $base = PostgreSQL::Test::Utils::tempdir();
	my $sock = PostgreSQL::Test::Utils::tempdir_short();
	my ($test) = ($0 =~ m{([^/]+?)(?:\.pl)?$});
	my @nodes = map {
		bless {
			name => "node$_",
			pg   => PostgreSQL::Test::Cluster::get_free_port(),
			api  => PostgreSQL::Test::Cluster::get_free_port(),
			home => "$base/node$_",
			dir  => "$base/node$_/data",
			log  => "$PostgreSQL::Test::Utils::log_path/${test}_patroni_node$_.log",
			bindir => $bindir, ehost => $ehost, endpoints => $etcd->endpoints, sock => $sock,
		}, 'PgHa::PatroniCluster';
	} 1 .. $count;
	mkdir $_->{home} for @nodes;
	push @all, @nodes;
	return @nodes;
}

sub name { return $_[0]->{name}; }

sub _write_file { my ($p, $t) = @_; open my $fh, '>', $p or die "$p: $!"; print $fh $t; close $fh; }

sub _patroni_yml
{
	my ($n) = @_;
	my $yml = "$n->{home}/patroni.yml";
	_write_file($yml, <<"EOF");
scope: pgtest
namespace: /service/
name: $n->{name}
restapi:
  listen: 127.0.0.1:$n->{api}
  connect_address: 127.0.0.1:$n->{api}
etcd3:
  hosts: $n->{ehost}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$n->{pg}
  connect_address: 127.0.0.1:$n->{pg}
  data_dir: $n->{dir}
  bin_dir: $n->{bindir}
  pgpass: $n->{home}/pgpass
  authentication:
    superuser: {username: postgres, password: secret}
    replication: {username: postgres, password: secret}
  parameters:
    unix_socket_directories: '$n->{sock}'
EOF
	return $yml;
}

sub start_patroni
{
	my ($n) = @_;
	$n->{yml} //= _patroni_yml($n);
	$n->{patroni} = IPC::Run::start([ '/usr/bin/patroni', $n->{yml} ], '<', \undef, '>>', $n->{log}, '2>&1');
}

# SIGTERM, as systemctl stop does: an unpaused Patroni stops postgres with
# it, a paused one leaves postgres running.
sub stop_patroni
{
	my ($n) = @_;
	return unless $n->{patroni};
	$n->{patroni}->signal('TERM');
	eval { $n->{patroni}->finish; 1 } or eval { $n->{patroni}->kill_kill; };
	$n->{patroni} = undef;
}

# The result of $sql (psql -At), undef when it fails.
sub psql
{
	my ($n, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$n->{bindir}/psql", '-X', '-A', '-t', '-h', '127.0.0.1', '-p', $n->{pg}, '-U', 'postgres',
			'-d', 'postgres', '-c', $sql ], '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(30));
	return $? == 0 ? (chomp($out), $out)[1] : undef;
}

sub pg_ctl
{
	my ($n, @args) = @_;
	my ($out, $err) = ('', '');
	# -l: the postmaster must not hold our output pipe open
	IPC::Run::run([ "$n->{bindir}/pg_ctl", '-D', $n->{dir}, '-w', '-l', "$n->{home}/postgres.log", @args ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	note "pg_ctl @args ($n->{name}): rc " . ($? >> 8) . "\n$out$err";
	return $? == 0;
}

# What pg_ha@.service does on start: ExecStartPre "pg_hactl rejoin
# --if-needed", then postgres.  True when postgres started.
sub start_under_unit
{
	my ($n) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$n->{bindir}/pg_hactl", 'rejoin', '--pgdata', $n->{dir}, '--if-needed' ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	my $rc = $? >> 8;
	note "pg_hactl rejoin --if-needed ($n->{name}): rc $rc\n$out$err";
	return 0 if $rc != 0;
	return $n->pg_ctl('start');
}

# pg_ha's settings for this node, Patroni's scope, namespace, name and REST
# port (docs/migrating-from-patroni.md), and $extra, appended to
# postgresql.conf (Patroni's, which includes postgresql.base.conf first).
sub add_pg_ha_settings
{
	my ($n, $extra) = @_;
	open my $fh, '>>', "$n->{dir}/postgresql.conf" or die $!;
	print $fh <<"EOF";

# pg_ha replaces Patroni (docs/migrating-from-patroni.md)
shared_preload_libraries = 'pg_ha'
pg_ha.namespace = '/service'
pg_ha.cluster = 'pgtest'
pg_ha.node_name = '$n->{name}'
pg_ha.connect_address = '127.0.0.1:$n->{pg}'
pg_ha.api_listen = '127.0.0.1:$n->{api}'
pg_ha.etcd_endpoints = '$n->{endpoints}'
pg_ha.ttl = 20
pg_ha.metrics_listen = ''
restart_after_crash = on
EOF
	print $fh $extra // '';
	close $fh;
}

sub postmaster_pid
{
	my ($n) = @_;
	open my $fh, '<', "$n->{dir}/postmaster.pid" or return undef;
	my $pid = <$fh>;
	chomp $pid;
	return ($pid && kill 0, $pid) ? $pid : undef;
}

END
{
	local $?;
	for my $n (@all)
	{
		eval { $n->stop_patroni };
		system("$n->{bindir}/pg_ctl", '-D', $n->{dir}, '-m', 'immediate', 'stop') if $n->postmaster_pid;
	}
}

1;
