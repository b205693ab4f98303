
# Moving a running Patroni cluster to pg_ha, all at once with a short pause
# (docs/migrating-from-patroni.md): a real 3-node Patroni 3.0.2 cluster
# (Debian's patroni, etcd v3, replication slots on, as Pigsty runs it)
# takes writes; then
#   1. patronictl pause: Patroni stops managing, and a Patroni stopped
#      while paused leaves postgres running and the leader key in place;
#   2. the Patroni daemons stop; postgres keeps serving;
#   3. each node gets pg_ha's settings (same scope, namespace and member
#      name; the API on Patroni's REST port) and restarts, the leader
#      first: pg_ha on node1 finds the leader key naming it and re-attaches
#      it to its own lease, the replicas follow it;
#   4. replicas stop using Patroni's replication slots (pg_ha uses none),
#      and the slots are dropped on the leader;
#   5. pg_ha.resume() ends the pause.
# Afterwards pg_ha runs the cluster: every row written under Patroni is
# there, patronictl still lists the cluster, and a kill -9 of the leader
# fails over to a replica that has every row.
#
# Opt-in (PG_TEST_EXTRA=patroni): it starts three Patroni daemons and adds
# a minute and a half to the suite.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster ();
use PgHa::Etcd;
use PgHa::Failover qw(wait_leader_not);
use PgHa::Patroni qw(patronictl);
use PgHa::Test;

plan skip_all => 'set PG_TEST_EXTRA=patroni to run the migration from a real Patroni cluster'
  unless ($ENV{PG_TEST_EXTRA} // '') =~ /\bpatroni\b/;
plan skip_all => 'patroni not installed' unless -x '/usr/bin/patroni';

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $etcd = PgHa::Etcd->new(members => 1);
my ($ehost) = ($etcd->endpoints =~ m{^https?://([^,]+)});
my $base = PostgreSQL::Test::Utils::tempdir();
my $sock = PostgreSQL::Test::Utils::tempdir_short();
my @nodes = map {
	{ name => "node$_", pg => PostgreSQL::Test::Cluster::get_free_port(),
		api => PostgreSQL::Test::Cluster::get_free_port(), dir => "$base/node$_/data",
		log => "$PostgreSQL::Test::Utils::log_path/370_patroni_node$_.log" }
} 1 .. 3;
my %by_name = map { $_->{name} => $_ } @nodes;

sub write_file { my ($p, $t) = @_; open my $fh, '>', $p or die "$p: $!"; print $fh $t; close $fh; }

sub patroni_yml
{
	my ($n) = @_;
	mkdir "$base/$n->{name}";
	my $yml = "$base/$n->{name}/patroni.yml";
	write_file($yml, <<"EOF");
scope: pgtest
namespace: /service/
name: $n->{name}
restapi:
  listen: 127.0.0.1:$n->{api}
  connect_address: 127.0.0.1:$n->{api}
etcd3:
  hosts: $ehost
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
  bin_dir: $bindir
  pgpass: $base/$n->{name}/pgpass
  authentication:
    superuser: {username: postgres, password: secret}
    replication: {username: postgres, password: secret}
  parameters:
    unix_socket_directories: '$sock'
EOF
	return $yml;
}

sub start_patroni
{
	my ($n) = @_;
	$n->{yml} //= patroni_yml($n);
	$n->{patroni} = IPC::Run::start([ '/usr/bin/patroni', $n->{yml} ], '<', \undef, '>>', $n->{log}, '2>&1');
}

sub stop_patroni
{
	my ($n) = @_;
	return unless $n->{patroni};
	$n->{patroni}->signal('TERM');
	eval { $n->{patroni}->finish; 1 } or eval { $n->{patroni}->kill_kill; };
	$n->{patroni} = undef;
}

sub psql
{
	my ($n, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$bindir/psql", '-X', '-A', '-t', '-h', '127.0.0.1', '-p', $n->{pg}, '-U', 'postgres',
			'-d', 'postgres', '-c', $sql ], '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(30));
	return $? == 0 ? (chomp($out), $out)[1] : undef;
}

sub pg_ctl
{
	my ($n, @args) = @_;
	my ($out, $err) = ('', '');
	# -l: the postmaster must not hold our output pipe open
	IPC::Run::run([ "$bindir/pg_ctl", '-D', $n->{dir}, '-w', '-l', "$base/$n->{name}/postgres.log", @args ],
		'<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(120));
	note "pg_ctl @args ($n->{name}): rc " . ($? >> 8) . "\n$out$err";
	return $? == 0;
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
	for my $n (@nodes)
	{
		eval { stop_patroni($n) };
		if (postmaster_pid($n)) { system("$bindir/pg_ctl", '-D', $n->{dir}, '-m', 'immediate', 'stop'); }
	}
}

# --- a Patroni cluster
start_patroni($nodes[0]);
ok(wait_for(sub { ($etcd->get('/service/pgtest/leader') // '') eq 'node1' && defined psql($nodes[0], 'SELECT 1') },
		timeout => 120, what => 'Patroni to bootstrap node1'), 'Patroni bootstrapped node1 as leader')
  or BAIL_OUT('Patroni did not start; see ' . $nodes[0]{log});
start_patroni($_) for @nodes[ 1, 2 ];
for my $n (@nodes[ 1, 2 ])
{
	ok(wait_for(sub { (psql($n, 'SELECT status FROM pg_stat_wal_receiver') // '') eq 'streaming' ? 1 : undef },
			timeout => 120, what => "$n->{name} streaming"), "Patroni made $n->{name} a streaming replica");
}
psql($nodes[0], 'CREATE TABLE t (id int PRIMARY KEY, under text)');
psql($nodes[0], "INSERT INTO t SELECT g, 'patroni' FROM generate_series(1, 1000) g");
is(psql($nodes[0], 'SELECT count(*) FROM pg_replication_slots'), '2', 'Patroni keeps a replication slot per replica');
my $list = (patronictl($etcd, 'list'))[1] // '';
like($list, qr/node1.*Leader/, 'patronictl list: node1 leads under Patroni');

# --- 1. pause, 2. stop Patroni: postgres keeps running
like((patronictl($etcd, 'pause', '--wait'))[1] // '', qr/paused/i, 'patronictl pause');
stop_patroni($_) for @nodes;
ok(postmaster_pid($_), "$_->{name}: postgres still runs after Patroni stopped (paused)") for @nodes;
is($etcd->get('/service/pgtest/leader'), 'node1', 'the leader key still names node1');
my $t_write = now();
psql($nodes[0], "INSERT INTO t SELECT g, 'unmanaged' FROM generate_series(1001, 1100) g");

# --- 3. pg_ha's settings, then a restart: the leader first
for my $n (@nodes)
{
	open my $fh, '>>', "$n->{dir}/postgresql.conf" or die $!;
	print $fh <<"EOF";

# pg_ha replaces Patroni (docs/migrating-from-patroni.md)
shared_preload_libraries = 'pg_ha'
pg_ha.namespace = '/service'
pg_ha.cluster = 'pgtest'
pg_ha.node_name = '$n->{name}'
pg_ha.connect_address = '127.0.0.1:$n->{pg}'
pg_ha.api_listen = '127.0.0.1:$n->{api}'
pg_ha.etcd_endpoints = '@{[ $etcd->endpoints ]}'
pg_ha.ttl = 20
pg_ha.metrics_listen = ''
restart_after_crash = on
EOF
	close $fh;
}
ok(pg_ctl($nodes[0], '-m', 'fast', 'restart'), 'node1 restarts with pg_ha');
psql($nodes[0], 'CREATE EXTENSION pg_ha');
my $st = wait_for(sub { my $s = psql($nodes[0], 'SELECT state, lease_held, paused FROM pg_ha.status()');
		defined $s && $s =~ /^leader\|t\|t$/ ? $s : undef }, timeout => 60, what => 'pg_ha to lead on node1');
is($st, 'leader|t|t', 'pg_ha on node1 took over the leader key it found, and sees the pause');
ok(defined psql($nodes[0], "INSERT INTO t SELECT g, 'pg_ha' FROM generate_series(1101, 1200) g"),
	'node1 takes writes under pg_ha');
note sprintf('writes resumed %.1f s after Patroni stopped', now() - $t_write);

for my $n (@nodes[ 1, 2 ])
{
	# 4. pg_ha does not use replication slots: stop using Patroni's
	psql($n, "ALTER SYSTEM SET primary_slot_name = ''");
	ok(pg_ctl($n, '-m', 'fast', 'restart'), "$n->{name} restarts with pg_ha");
	ok(wait_for(sub { (psql($n, "SELECT status || ',' || coalesce(slot_name, '') FROM pg_stat_wal_receiver") // '') eq 'streaming,' ? 1 : undef },
			timeout => 60, what => "$n->{name} streaming without a slot"), "$n->{name} streams from node1 without a slot");
	is(psql($n, 'SELECT state FROM pg_ha.status()'), 'replica', "$n->{name}: pg_ha state replica");
}
is(psql($nodes[0], "SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active) s"),
	'2', "Patroni's slots dropped on the leader");

# --- 5. resume
psql($nodes[0], 'SELECT pg_ha.resume()');
ok(wait_for(sub { (psql($_, 'SELECT paused FROM pg_ha.status()') // '') eq 'f' ? 1 : undef }, timeout => 30,
		what => 'resume seen') , "$_->{name} sees the pause ended") for @nodes;
$list = (patronictl($etcd, 'list'))[1] // '';
note $list;
like($list, qr/node1[^\n]*Leader[^\n]*running/, 'patronictl list: node1 leads under pg_ha');
unlike($list, qr/Maintenance mode/, 'patronictl list: no maintenance mode');
my $lsn = psql($nodes[0], 'SELECT pg_current_wal_lsn()');
for my $n (@nodes[ 1, 2 ])
{
	ok(wait_for(sub { (psql($n, "SELECT pg_last_wal_replay_lsn() >= '$lsn'") // '') eq 't' ? 1 : undef },
			timeout => 30, what => "$n->{name} caught up"), "$n->{name} replays the leader's writes");
	is(psql($n, 'SELECT count(*) FROM t'), '1200', "$n->{name} has every row, from before and after the move");
}

# --- pg_ha fails over: kill -9 of the leader
kill 'KILL', postmaster_pid($nodes[0]);
my ($new) = wait_leader_not($etcd, 'node1', namespace => '/service', cluster => 'pgtest', timeout => 90);
like($new // '', qr/^node[23]$/, 'kill -9 of node1: pg_ha promotes a replica');
my $leader = $by_name{ $new // 'node2' };
ok(wait_for(sub { (psql($leader, 'SELECT NOT pg_is_in_recovery()') // '') eq 't' ? 1 : undef }, timeout => 60,
		what => 'promotion'), "$leader->{name} is writable");
is(psql($leader, 'SELECT count(*) FROM t'), '1200', 'the new leader has every row');
my ($other) = grep { $_ != $leader && $_ != $nodes[0] } @nodes;
ok(wait_for(sub { (psql($other, "SELECT status || ',' || sender_port FROM pg_stat_wal_receiver") // '') eq "streaming,$leader->{pg}" ? 1 : undef },
		timeout => 60, what => "$other->{name} following"), "$other->{name} follows the new leader");

done_testing();
