
# Moving a running Patroni cluster to pg_ha node by node
# (docs/migrating-from-patroni.md, "Node by node"), under a continuous write
# load: a real 3-node Patroni 3.0.2 cluster (PgHa::PatroniCluster) takes
# writes from a client inserting an id every ~20 ms and logging each one
# acknowledged; then, as the doc says,
#   1. Patroni stops on one replica (stopping postgres), the replica gets
#      pg_ha's settings and primary_slot_name cleared, and starts as the
#      service unit starts it (pg_hactl rejoin --if-needed, then postgres):
#      it follows the Patroni leader and publishes its member key, and
#      patronictl and the /replica check see a replica; Patroni keeps
#      leading;
#   2. the same for the second replica;
#   3. the leader last: patronictl pause, Patroni stops (postgres keeps
#      running), settings, restart under the unit, CREATE EXTENSION,
#      Patroni's slots dropped, pg_ha.resume().
# Afterwards one pg_ha leader holds the key, no acknowledged write is
# missing, writes go on, and a kill -9 of the leader fails over to a
# replica with every acknowledged row.  Throughout, a sampler checks that
# no two nodes are ever writable at once.
#
# Opt-in (PG_TEST_EXTRA=patroni), as 370.

use strict;
use warnings;

use Test::More;
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Utils ();
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
my ($n1, $n2, $n3) = @nodes;
my $work = PostgreSQL::Test::Utils::tempdir();
my $bindir = $n1->{bindir};

sub member { my $v = $etcd->get("/service/pgtest/members/$_[0]"); return $v && eval { JSON::PP::decode_json($v) }; }
sub leader_key { return $etcd->get('/service/pgtest/leader') // ''; }

# HTTP status of GET $path on the node's API port (Patroni's REST port).
sub health
{
	my ($n, $path) = @_;
	my $code = '';
	IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-m', '5', '-w', '%{http_code}', "http://127.0.0.1:$n->{api}$path" ],
		'<', \undef, '>', \$code, '2>', \my $err);
	return $code;
}

# --- background: the writer and the sampler, both until $work/stop exists
sub start_loop
{
	my ($script) = @_;
	return IPC::Run::start([ 'bash', '-c', $script ], '<', \undef, '>', '/dev/null', '2>', '/dev/null');
}
my @loops;
END { local $?; for (@loops) { eval { $_->kill_kill } } }

my $ports = join(',', map { $_->{pg} } @nodes);
my $conn = "host=127.0.0.1,127.0.0.1,127.0.0.1 port=$ports user=postgres dbname=postgres "
  . 'target_session_attrs=read-write connect_timeout=2';
sub start_writer
{
	# One session per INSERT, wherever the writable node is; an id is
	# acknowledged when psql reports the commit.
	push @loops, start_loop(qq{i=0; while [ ! -e $work/stop ]; do i=\$((i+1)); }
		  . qq{$bindir/psql -X -q -At -d "$conn" -v ON_ERROR_STOP=1 -c "INSERT INTO w VALUES (\$i)" }
		  . qq{&& echo "\$i \$(date +%s.%N)" >> $work/acked; sleep 0.02; done});
}
sub start_sampler
{
	# One line per sample: the time and pg_is_in_recovery() of each node
	# (t, f, or x when it does not answer).
	my $q = join(' ', map { $_->{pg} } @nodes);
	push @loops, start_loop(qq{export PGCONNECT_TIMEOUT=1; while [ ! -e $work/stop ]; do l=\$(date +%s.%N); }
		  . qq{for p in $q; do r=\$($bindir/psql -X -At -h 127.0.0.1 -p \$p -U postgres -d postgres }
		  . qq{-c 'SELECT pg_is_in_recovery()' 2>/dev/null); l="\$l \${r:-x}"; done; }
		  . qq{echo "\$l" >> $work/samples; sleep 0.05; done});
}
# The acknowledged ids; in list context with times => 1, [id, time] pairs.
sub acked
{
	my (%p) = @_;
	open my $fh, '<', "$work/acked" or return ();
	my @a = map { [ split ' ' ] } grep { /^\d+ [\d.]+$/ } <$fh>;
	return $p{times} ? @a : map { $_->[0] } @a;
}
# The longest time without an acknowledged write between $from and $to.
sub longest_gap
{
	my ($from, $to) = @_;
	my ($gap, $prev) = (0, $from);
	for my $t ((map { $_->[1] } grep { $_->[1] >= $from && $_->[1] <= $to } acked(times => 1)), $to)
	{
		$gap = $t - $prev if $t - $prev > $gap;
		$prev = $t;
	}
	return $gap;
}
sub missing_on
{
	my ($n, @ids) = @_;
	return scalar @ids unless @ids;
	my $have = $n->psql('SELECT count(*) FROM w WHERE id IN (' . join(',', @ids) . ')') // 0;
	return @ids - $have;
}
sub wait_more_acks
{
	my ($what) = @_;
	my $before = () = acked();
	return wait_for(sub { (() = acked()) >= $before + 10 }, timeout => 60, what => $what);
}

# --- a Patroni cluster under load
$n1->start_patroni;
ok(wait_for(sub { leader_key() eq 'node1' && defined $n1->psql('SELECT 1') },
		timeout => 120, what => 'Patroni to bootstrap node1'), 'Patroni bootstrapped node1 as leader')
  or BAIL_OUT('Patroni did not start; see ' . $n1->{log});
$_->start_patroni for ($n2, $n3);
for my $n ($n2, $n3)
{
	ok(wait_for(sub { ($n->psql('SELECT status FROM pg_stat_wal_receiver') // '') eq 'streaming' ? 1 : undef },
			timeout => 120, what => "$n->{name} streaming"), "Patroni made $n->{name} a streaming replica");
}
$n1->psql('CREATE TABLE w (id int PRIMARY KEY)');
is($n1->psql('SELECT count(*) FROM pg_replication_slots'), '2', 'Patroni keeps a replication slot per replica');
my $patroni_version = (member('node2') // {})->{version} // '';
note "Patroni's member version: $patroni_version";
start_writer();
start_sampler();
ok(wait_more_acks('writes under Patroni'), 'the client writes under Patroni');

# --- 1, 2. the replicas, one at a time, while Patroni leads
for my $n ($n2, $n3)
{
	my $name = $n->name;
	$n->stop_patroni;
	ok(!$n->postmaster_pid, "$name: stopping Patroni stopped postgres");
	# postgres is down: clear the slot in postgresql.conf (Patroni's
	# setting is earlier in the file; the last one wins)
	$n->add_pg_ha_settings("primary_slot_name = ''\n");
	ok($n->start_under_unit, "$name starts as pg_ha\@.service starts it");
	ok(wait_for(sub { ($n->psql("SELECT status || ',' || coalesce(slot_name, '') || ',' || sender_port FROM pg_stat_wal_receiver") // '')
				eq "streaming,,$n1->{pg}" ? 1 : undef }, timeout => 60, what => "$name streaming from node1"),
		"$name follows the Patroni leader, without a slot");
	ok(wait_for(sub { ($n1->psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = '$name' AND state = 'streaming'") // '') eq '1' },
			timeout => 30, what => "node1 streaming to $name"), "pg_stat_replication on the leader lists $name");
	my $m = wait_for(sub { my $m = member($name); $m && ($m->{version} // '') ne $patroni_version && ($m->{role} // '') eq 'replica' ? $m : undef },
		timeout => 30, what => "pg_ha's member key of $name");
	ok($m, "$name: pg_ha publishes its member key (version " . ($m // {})->{version} . ')');
	my $list = wait_for(sub { my $l = (patronictl($etcd, 'list'))[1] // ''; $l =~ /\b$name\b[^\n]*Replica[^\n]*(running|streaming)/ ? $l : undef },
		timeout => 30, what => "patronictl list: $name a replica") // (patronictl($etcd, 'list'))[1] // '';
	note $list;
	like($list, qr/\b$name\b[^\n]*Replica[^\n]*(running|streaming)/, "patronictl list: $name a replica");
	like($list, qr/\bnode1\b[^\n]*Leader/, 'patronictl list: node1 still leads');
	is(health($n, '/replica'), '200', "$name: GET /replica 200 (HAProxy's check)");
	is(leader_key(), 'node1', 'the Patroni leader keeps its key');
	is($n1->psql('SELECT pg_is_in_recovery()'), 'f', 'node1 is the primary');
	ok(wait_more_acks("writes after $name moved"), "writes go on after $name moved");
}
my $t_mixed_end;

# --- 3. the leader last
my $t_leader = now();
like((patronictl($etcd, 'pause', '--wait'))[1] // '', qr/paused/i, 'patronictl pause');
$n1->stop_patroni;
ok($n1->postmaster_pid, 'node1: postgres still runs after Patroni stopped (paused)');
is(leader_key(), 'node1', 'the leader key still names node1');
$n1->add_pg_ha_settings;
ok($n1->pg_ctl('-m', 'fast', 'stop'), 'node1 stops');
ok($n1->start_under_unit, 'node1 starts as pg_ha@.service starts it');
ok(defined $n1->psql('CREATE EXTENSION pg_ha'), 'CREATE EXTENSION pg_ha on node1');
my $st = wait_for(sub { my $s = $n1->psql('SELECT state, lease_held, paused FROM pg_ha.status()');
		defined $s && $s =~ /^leader\|t\|t$/ ? $s : undef }, timeout => 60, what => 'pg_ha to lead on node1');
is($st, 'leader|t|t', 'pg_ha on node1 took over the leader key it found, and sees the pause');
is($n1->psql('SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active) s'),
	'2', "Patroni's slots dropped on the leader");
ok(defined $n1->psql('SELECT pg_ha.resume()'), 'pg_ha.resume()');
$t_mixed_end = now();

# --- 4. afterwards
ok(wait_for(sub { ($_->psql('SELECT paused FROM pg_ha.status()') // '') eq 'f' ? 1 : undef }, timeout => 30,
		what => "$_->{name} resumed"), "$_->{name} sees the pause ended") for @nodes;
is($_->psql('SELECT state FROM pg_ha.status()'), 'replica', "$_->{name}: pg_ha state replica") for ($n2, $n3);
is($n1->psql('SELECT state, lease_held FROM pg_ha.status()'), 'leader|t', 'node1: pg_ha leader with lease_held');
is(leader_key(), 'node1', 'one leader holds the key: node1');
my $list = (patronictl($etcd, 'list'))[1] // '';
note $list;
unlike($list, qr/Maintenance mode/, 'patronictl list: no maintenance mode');
ok(wait_more_acks('writes after the leader moved'), 'writes go on under pg_ha');
note sprintf('longest pause of the writes while the leader moved: %.1f s', longest_gap($t_leader, now()));
my @acked = acked();
is(missing_on($n1, @acked), 0, 'no acknowledged write is missing on the leader (' . scalar(@acked) . ' acknowledged)');

# --- pg_ha fails over: kill -9 of the leader, under load
my $t_kill = now();
kill 'KILL', $n1->postmaster_pid;
my ($new) = wait_leader_not($etcd, 'node1', namespace => '/service', cluster => 'pgtest', timeout => 90);
like($new // '', qr/^node[23]$/, 'kill -9 of node1: pg_ha promotes a replica');
my $leader = $by_name{ $new // 'node2' };
ok(wait_for(sub { ($leader->psql('SELECT NOT pg_is_in_recovery()') // '') eq 't' ? 1 : undef }, timeout => 60,
		what => 'promotion'), "$leader->{name} is writable");
ok(wait_more_acks('writes after the failover'), 'writes go on after the failover');
note sprintf('longest pause of the writes across the failover: %.1f s', longest_gap($t_kill, now()));
PostgreSQL::Test::Utils::append_to_file("$work/stop", '');
eval { $_->finish } for @loops;
@acked = acked();
is(missing_on($leader, @acked), 0,
	"the new leader has every acknowledged row (" . scalar(@acked) . ' acknowledged)');
my ($other) = grep { $_ != $leader && $_ != $n1 } @nodes;
ok(wait_for(sub { ($other->psql("SELECT status || ',' || sender_port FROM pg_stat_wal_receiver") // '') eq "streaming,$leader->{pg}" ? 1 : undef },
		timeout => 60, what => "$other->{name} following"), "$other->{name} follows the new leader");

# --- safety: never two writable nodes, in the mixed phase or after
open my $fh, '<', "$work/samples" or die "samples: $!";
my ($samples, $mixed, $one, @two) = (0, 0, 0);
while (my $l = <$fh>)
{
	my ($t, @r) = split ' ', $l;
	next unless @r == 3;
	$samples++;
	$mixed++ if $t < $t_mixed_end;
	my $writable = grep { $_ eq 'f' } @r;
	$one++ if $writable == 1 && $t < $t_mixed_end;
	push @two, $l if $writable > 1;
}
close $fh;
note "samples: $samples, $mixed of them before the leader moved ($one with one writable node)";
cmp_ok($one, '>', 0, 'the sampler saw the writable Patroni leader during the mixed phase');
is(scalar @two, 0, 'no sample saw two writable nodes') or diag join('', @two[ 0 .. ($#two < 4 ? $#two : 4) ]);

done_testing();
