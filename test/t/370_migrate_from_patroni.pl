
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
use PgHa::Etcd;
use PgHa::Failover qw(wait_leader_not);
use PgHa::Patroni qw(patronictl);
use PgHa::PatroniCluster;
use PgHa::Test;

plan skip_all => 'set PG_TEST_EXTRA=patroni to run the migration from a real Patroni cluster'
  unless ($ENV{PG_TEST_EXTRA} // '') =~ /\bpatroni\b/;
plan skip_all => 'patroni not installed' unless -x '/usr/bin/patroni';

my $etcd = PgHa::Etcd->new(members => 1);
my @nodes = PgHa::PatroniCluster::nodes($etcd, 3);
my %by_name = map { $_->name => $_ } @nodes;

# --- a Patroni cluster
$nodes[0]->start_patroni;
ok(wait_for(sub { ($etcd->get('/service/pgtest/leader') // '') eq 'node1' && defined $nodes[0]->psql('SELECT 1') },
		timeout => 120, what => 'Patroni to bootstrap node1'), 'Patroni bootstrapped node1 as leader')
  or BAIL_OUT('Patroni did not start; see ' . $nodes[0]{log});
$_->start_patroni for @nodes[ 1, 2 ];
for my $n (@nodes[ 1, 2 ])
{
	ok(wait_for(sub { ($n->psql('SELECT status FROM pg_stat_wal_receiver') // '') eq 'streaming' ? 1 : undef },
			timeout => 120, what => "$n->{name} streaming"), "Patroni made $n->{name} a streaming replica");
}
$nodes[0]->psql('CREATE TABLE t (id int PRIMARY KEY, under text)');
$nodes[0]->psql("INSERT INTO t SELECT g, 'patroni' FROM generate_series(1, 1000) g");
is($nodes[0]->psql('SELECT count(*) FROM pg_replication_slots'), '2', 'Patroni keeps a replication slot per replica');
my $list = (patronictl($etcd, 'list'))[1] // '';
like($list, qr/node1.*Leader/, 'patronictl list: node1 leads under Patroni');

# --- 1. pause, 2. stop Patroni: postgres keeps running
like((patronictl($etcd, 'pause', '--wait'))[1] // '', qr/paused/i, 'patronictl pause');
$_->stop_patroni for @nodes;
ok($_->postmaster_pid, "$_->{name}: postgres still runs after Patroni stopped (paused)") for @nodes;
is($etcd->get('/service/pgtest/leader'), 'node1', 'the leader key still names node1');
my $t_write = now();
$nodes[0]->psql("INSERT INTO t SELECT g, 'unmanaged' FROM generate_series(1001, 1100) g");

# --- 3. pg_ha's settings, then a restart: the leader first
$_->add_pg_ha_settings for @nodes;
ok($nodes[0]->pg_ctl('-m', 'fast', 'restart'), 'node1 restarts with pg_ha');
$nodes[0]->psql('CREATE EXTENSION pg_ha');
my $st = wait_for(sub { my $s = $nodes[0]->psql('SELECT state, lease_held, paused FROM pg_ha.status()');
		defined $s && $s =~ /^leader\|t\|t$/ ? $s : undef }, timeout => 60, what => 'pg_ha to lead on node1');
is($st, 'leader|t|t', 'pg_ha on node1 took over the leader key it found, and sees the pause');
ok(defined $nodes[0]->psql("INSERT INTO t SELECT g, 'pg_ha' FROM generate_series(1101, 1200) g"),
	'node1 takes writes under pg_ha');
note sprintf('writes resumed %.1f s after Patroni stopped', now() - $t_write);

for my $n (@nodes[ 1, 2 ])
{
	# 4. pg_ha does not use replication slots: stop using Patroni's
	$n->psql("ALTER SYSTEM SET primary_slot_name = ''");
	ok($n->pg_ctl('-m', 'fast', 'restart'), "$n->{name} restarts with pg_ha");
	ok(wait_for(sub { ($n->psql("SELECT status || ',' || coalesce(slot_name, '') FROM pg_stat_wal_receiver") // '') eq 'streaming,' ? 1 : undef },
			timeout => 60, what => "$n->{name} streaming without a slot"), "$n->{name} streams from node1 without a slot");
	is($n->psql('SELECT state FROM pg_ha.status()'), 'replica', "$n->{name}: pg_ha state replica");
}
is($nodes[0]->psql("SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active) s"),
	'2', "Patroni's slots dropped on the leader");

# --- 5. resume
$nodes[0]->psql('SELECT pg_ha.resume()');
ok(wait_for(sub { ($_->psql('SELECT paused FROM pg_ha.status()') // '') eq 'f' ? 1 : undef }, timeout => 30,
		what => 'resume seen') , "$_->{name} sees the pause ended") for @nodes;
$list = (patronictl($etcd, 'list'))[1] // '';
note $list;
like($list, qr/node1[^\n]*Leader[^\n]*running/, 'patronictl list: node1 leads under pg_ha');
unlike($list, qr/Maintenance mode/, 'patronictl list: no maintenance mode');
my $lsn = $nodes[0]->psql('SELECT pg_current_wal_lsn()');
for my $n (@nodes[ 1, 2 ])
{
	ok(wait_for(sub { ($n->psql("SELECT pg_last_wal_replay_lsn() >= '$lsn'") // '') eq 't' ? 1 : undef },
			timeout => 30, what => "$n->{name} caught up"), "$n->{name} replays the leader's writes");
	is($n->psql('SELECT count(*) FROM t'), '1200', "$n->{name} has every row, from before and after the move");
}

# --- pg_ha fails over: kill -9 of the leader
kill 'KILL', $nodes[0]->postmaster_pid;
my ($new) = wait_leader_not($etcd, 'node1', namespace => '/service', cluster => 'pgtest', timeout => 90);
like($new // '', qr/^node[23]$/, 'kill -9 of node1: pg_ha promotes a replica');
my $leader = $by_name{ $new // 'node2' };
ok(wait_for(sub { ($leader->psql('SELECT NOT pg_is_in_recovery()') // '') eq 't' ? 1 : undef }, timeout => 60,
		what => 'promotion'), "$leader->{name} is writable");
is($leader->psql('SELECT count(*) FROM t'), '1200', 'the new leader has every row');
my ($other) = grep { $_ != $leader && $_ != $nodes[0] } @nodes;
ok(wait_for(sub { ($other->psql("SELECT status || ',' || sender_port FROM pg_stat_wal_receiver") // '') eq "streaming,$leader->{pg}" ? 1 : undef },
		timeout => 60, what => "$other->{name} following"), "$other->{name} follows the new leader");

done_testing();
