
# synchronous_standby_names and the sync key agree at all times (issue 12).
#
# Under a pgbench load on the leader, a sampler reads the sync key, then
# (new connection) synchronous_standby_names as the leader has it in
# effect and each WAL sender's view (pg_stat_replication), then the key
# again; every sample whose two key reads are the same revision must keep
# the rule of src/ha_sync.c: any quorum + 1 listed nodes include one that
# confirmed every acknowledged commit (PgHa::SyncSample derives the
# per-sample check: |V| <= q or k + q >= |S u V|; with q = 0 every listed
# node is one postgres waits for).  Meanwhile the synchronous standbys
# change, first in mode on, then in quorum mode: the nosync tag, the
# synchronous_node_count, kill -9 of a synchronous standby (restarted as
# the service does), SIGSTOP of one's WAL receiver (wal_sender_timeout
# ends its WAL sender).  The key must take several values (so the test
# cannot pass vacuously), and pgbench must commit after each change.

use strict;
use warnings;

use Test::More;
use File::Temp ();
use IPC::Run ();
use JSON::PP ();
use POSIX ();
use PostgreSQL::Test::Utils ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni qw(config_set);
use PgHa::SyncSample;
use PgHa::Test;

my $t_start = now();
my $ttl  = 5;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(
	etcd       => $etcd,
	ttl        => $ttl,
	extra_conf => "pg_ha.synchronous_mode = on\nwal_sender_timeout = '3s'\n");
my %node = (node1 => $n1, node2 => $n2, node3 => $n3);
my @all = ($n1, $n2, $n3);

wait_for(sub { sync_standby($etcd) eq 'node2' }, timeout => 30, what => 'node2 synchronous', fatal => 1);
$n1->safe_psql('postgres', 'CREATE TABLE w (id bigserial, at timestamptz DEFAULT clock_timestamp())');

my @frozen;
END { kill 'CONT', @frozen if @frozen; }

my $watch   = key_watch($etcd, ha_key('sync'));
my $dir     = PostgreSQL::Test::Utils::tempdir();
my $sampler = sync_sampler($etcd, $n1, "$dir/samples");

# ---- the load: pgbench, progress every second on stderr; at a fixed rate
# (-R) so that the two cores keep room for the sampler ----
my $script = File::Temp->new(SUFFIX => '.sql');
print $script "INSERT INTO w DEFAULT VALUES;\n";
close $script;
my ($bout, $berr) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-R', '500', '-T', '600', '-P', '1', '-f', "$script",
	  '-h', $n1->host, '-p', $n1->port, 'postgres' ],
	'<', \undef, '>', \$bout, '2>', \$berr);
my (@progress, @bench_other);

sub pump_bench
{
	eval { $bench->pump_nb if $bench->pumpable; };
	while ($berr =~ s/^([^\n]*)\n//)
	{
		my $line = $1;
		if ($line =~ /^progress: [\d.]+ s, ([\d.]+) tps/) { push @progress, $1; }
		else { push @bench_other, $line; }
	}
	return;
}

# pgbench committed after the change just made: a progress line with
# commits, the first one after now excluded (its second may have begun
# before).
sub writes_go_on
{
	my ($what) = @_;
	pump_bench();
	my $n = @progress;
	ok(wait_for(sub { pump_bench(); grep { $_ > 0 } @progress[ $n + 1 .. $#progress ] },
			timeout => 30, interval => 0.2, what => "commits after: $what"),
		"writes go on after: $what");
	return;
}

sub key_is
{
	my ($want, $what) = @_;
	my $got;
	my $ok = wait_for(
		sub {
			my $k = sync_key($etcd);
			$got = ($k->{sync_standby} // 'null') . (exists $k->{quorum} ? " q$k->{quorum}" : '');
			return $got eq $want;
		},
		timeout => 30, what => "sync key $want ($what)");
	ok($ok, "$what: sync key $want") or diag "sync key: $got";
	return $ok;
}

sub set_all
{
	my ($guc, $value, @nodes) = @_;
	for my $node (@nodes ? @nodes : @all)
	{
		$node->safe_psql('postgres', "ALTER SYSTEM SET $guc = '$value'");
		$node->reload;
	}
	return;
}

sub freeze_receiver
{
	my ($node) = @_;
	my $pid = wal_receiver_pid($node) or BAIL_OUT($node->name . ' has no WAL receiver');
	push @frozen, $pid;
	kill 'STOP', $pid;
	return $pid;
}

sub thaw
{
	kill 'CONT', @frozen;
	@frozen = ();
	return;
}

sub restart_as_service
{
	my ($node) = @_;
	my $r = supervise($node);
	ok($r && $r->{started}, $node->name . ' started again as the service would');
	wait_streaming($etcd, $node->name);
	return;
}

# ---- mode on ----
pump_bench();
writes_go_on('the start');

set_all('pg_ha.nosync', 'on', $n2);
key_is('node3', 'on: node2 tagged nosync');
writes_go_on('on: node2 tagged nosync');

set_all('pg_ha.nosync', 'off', $n2);
config_set($etcd, synchronous_node_count => 2);
key_is('node2,node3', 'on: synchronous_node_count 2');
writes_go_on('on: synchronous_node_count 2');

config_set($etcd, synchronous_node_count => 1);
my $one = wait_for(sub { my $s = sync_standby($etcd); $s =~ /^node[23]$/ ? $s : undef },
	timeout => 30, what => 'one synchronous standby');
ok($one, "on: synchronous_node_count 1: sync key $one");
writes_go_on('on: synchronous_node_count 1');
my $other = $one eq 'node2' ? 'node3' : 'node2';

$node{$one}->kill9;
key_is($other, "on: $one killed");
writes_go_on("on: $one killed");
restart_as_service($node{$one});

freeze_receiver($node{$other});
key_is($one, "on: $other\'s WAL receiver stopped");
writes_go_on("on: $other\'s WAL receiver stopped");
thaw();
wait_streaming($etcd, $other);

# ---- quorum mode ----
config_set($etcd, synchronous_mode => 'quorum');
key_is('node2,node3 q1', 'quorum mode');
writes_go_on('quorum mode');

$n3->kill9;
key_is('node2 q0', 'quorum: node3 killed');
writes_go_on('quorum: node3 killed');
restart_as_service($n3);
key_is('node2,node3 q1', 'quorum: node3 back');

freeze_receiver($n2);
key_is('node3 q0', "quorum: node2's WAL receiver stopped");
writes_go_on("quorum: node2's WAL receiver stopped");
thaw();
key_is('node2,node3 q1', "quorum: node2's WAL receiver back");

config_set($etcd, synchronous_node_count => 2);
key_is('node2,node3 q0', 'quorum: synchronous_node_count 2');
writes_go_on('quorum: synchronous_node_count 2');
config_set($etcd, synchronous_node_count => 1);
key_is('node2,node3 q1', 'quorum: synchronous_node_count 1');

# ---- the verdict ----
$sampler->stop;
pump_bench();
ok($bench->pumpable, 'pgbench ran all along');
is(join("\n", grep { /abort|error|fatal/i } @bench_other), '', 'no pgbench client failed');
$bench->kill_kill(grace => 2);

my @samples = read_samples("$dir/samples");
my @stable  = grep { sample_stable($_) } @samples;
my $errors  = grep { defined $_->{err} } @samples;
my (%seen, @violations);
for my $s (@stable)
{
	my $key = sample_key($s);
	$seen{ $key->{quorum_field} ? 'quorum' : 'on' }{ $key->{text} }++;
	my $why = sample_violation($s, leader => 'node1') // next;
	push @violations, $why;
	diag sprintf("violation: %s\n  key %s (revision %s) read at %s and %s\n"
		  . "  synchronous_standby_names '%s', WAL senders %s, read %s-%s",
		$why, $s->{k1} // 'absent', $s->{r1}, ts($s->{t1}), ts($s->{t2}),
		$s->{ssn}, JSON::PP->new->canonical->encode($s->{senders}), ts($s->{ts}), ts($s->{te}));
}
my @written = $watch->values;
my %written = map { $_ => 1 } @written;
my @took = sort { $a <=> $b } map { $_->{t2} - $_->{t1} } @samples;
note sprintf('%d samples (median %.0f ms each): %d checked, %d skipped (key changed between its reads), %d failed reads',
	scalar @samples, 1000 * ($took[ @took / 2 ] // 0), scalar @stable, @samples - @stable - $errors, $errors);
for my $mode (sort keys %seen)
{
	note "key values checked, $mode format: "
	  . join('; ', map { "$_ ($seen{$mode}{$_})" } sort keys %{ $seen{$mode} });
}
note sprintf('%d writes of the sync key, %d distinct values', scalar @written, scalar keys %written);
my $txns = 0;
$txns += $_ for @progress;
note sprintf('pgbench: %d progress lines, about %.0f transactions', scalar @progress, $txns);

# An idle machine checks about 220 samples; the floor leaves room for a
# loaded one (the suite runs two files at once).  The key-value counts below
# are what keeps the test from passing without changes to check.
cmp_ok(scalar @stable, '>=', 80, 'enough samples were checked');
cmp_ok(scalar keys %{ $seen{on} // {} },     '>=', 3, 'mode on: the checked samples saw at least 3 key values');
cmp_ok(scalar keys %{ $seen{quorum} // {} }, '>=', 3, 'quorum mode: the checked samples saw at least 3 key values');
cmp_ok(scalar keys %written, '>=', 8, 'the sync key took at least 8 distinct values');
is(scalar @violations, 0, 'no sample where the sync key lists a node postgres does not count as it must');
note sprintf('wall time %.0f s', now() - $t_start);

forget_if_stopped(@all);
done_testing();

sub ts
{
	my ($t) = @_;
	return POSIX::strftime('%H:%M:%S', gmtime $t) . sprintf('.%03d', ($t - int $t) * 1000);
}
