
# The primary is cut off from etcd while its clients can still reach it.
# Its etcd traffic goes through a TCP proxy (PgHa::Proxy) the test breaks;
# the replicas talk to etcd directly and replication is untouched.
#
#   - commits on the old primary are refused (SQLSTATE 25006) before any
#     other node holds the leader key;
#   - a replica takes over;
#   - clients still reach the old primary, but cannot write there;
#   - when the cut heals, the old primary rejoins as a replica of the new
#     leader.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Proxy;
use PgHa::Test;

my $ttl   = 5;
my $etcd  = PgHa::Etcd->new(members => 1);
my $proxy = PgHa::Proxy->new(target => $etcd->member(0)->{client_port},
	name => 'node1_etcd');
my $direct = $etcd->endpoints;

my ($n1, $n2, $n3) = ha_cluster(
	etcd         => $etcd,
	endpoints    => $proxy->url,
	ttl          => $ttl,
	replica_conf => "pg_ha.etcd_endpoints = '$direct'\n");
my %by_name = map { $_->name => $_ } ($n1, $n2, $n3);

is($n1->ha_status->{etcd_endpoint} =~ s{/+$}{}r, $proxy->url,
	'node1 talks to etcd through the proxy');
is($etcd->member_index($n2->ha_status->{etcd_endpoint}), 0,
	'node2 talks to etcd directly');
cmp_ok($proxy->stats->{active}, '>', 0, 'node1 has connections open through the proxy');

$n1->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())');
my ($ok) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES');
ok($ok, 'writes succeed on node1 before the cut');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
my $log_offset = -s $n1->logfile;

# --- cut: poll an INSERT on node1 and the leader key, alternately.
$proxy->cut;
my $t_cut = now();
my ($t_refused, $t_takeover, $t_last_ok, $refusal_state, $refusal_err, $leader);
my $last_write_ok;
my $polls = 0;
while (now() - $t_cut < 4 * $ttl + 10)
{
	if (!defined $t_refused || !defined $t_takeover)
	{
		my ($w_ok, $state, $err) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES', timeout => 5);
		my $t = now();
		$polls++;
		if ($w_ok)
		{
			$t_last_ok = $t;
			$last_write_ok = $t;
		}
		elsif (!defined $t_refused)
		{
			($t_refused, $refusal_state, $refusal_err) = ($t, $state, $err);
		}
	}
	if (!defined $t_takeover)
	{
		my $l = eval { leader_of($etcd) };
		if (defined $l && $l ne 'node1')
		{
			($t_takeover, $leader) = (now(), $l);
		}
	}
	last if defined $t_refused && defined $t_takeover;
	usleep(50_000);
}
note sprintf('cut at 0: last successful commit on node1 at %s, first refusal at %s, '
	  . 'leader key held by %s at %s (%d polls)',
	map({ defined $_ ? sprintf('%.2f s', $_ - $t_cut) : 'never' } $t_last_ok, $t_refused),
	$leader // 'nobody',
	defined $t_takeover ? sprintf('%.2f s', $t_takeover - $t_cut) : 'never',
	$polls);

ok(defined $t_refused, 'commits on node1 are refused after the cut');
is($refusal_state, '25006', 'refusal has SQLSTATE 25006 (read_only_sql_transaction)');
like($refusal_err // '', qr/pg_ha: (commit|write) refused/, 'refusal says pg_ha refused the commit');
ok(defined $t_takeover && $leader =~ /^node[23]$/, 'a replica takes the leader key')
  or BAIL_OUT('no takeover');
ok(defined $t_refused && $t_refused < $t_takeover,
	'first refusal happens before another node holds the leader key');
note sprintf('fence margin seen: refusal %.2f s before the takeover',
	$t_takeover - $t_refused) if defined $t_refused;
ok(!defined $last_write_ok || $last_write_ok < $t_takeover,
	'no commit succeeded on node1 once another node held the key');
cmp_ok($t_refused - $t_cut, '<=', $ttl + 1,
	"refusal comes within ttl + 1 s of the cut") if defined $t_refused;

my $new = $by_name{$leader};
my ($other) = grep { $_->name ne $leader } ($n2, $n3);

# --- the old primary is still reachable, and still refuses writes
is($n1->safe_psql('postgres', 'SELECT 1'), '1', 'clients can still reach node1');
my ($w_ok, $w_state) = try_sql($n1, 'INSERT INTO t DEFAULT VALUES');
ok(!$w_ok && $w_state eq '25006', 'node1 still refuses writes during the cut');
my $st1 = eval { $n1->ha_status } // {};
ok(!$st1->{lease_held}, 'node1: pg_ha.status() shows the lease not held');
ok(defined $st1->{etcd_reachable} && !$st1->{etcd_reachable},
	'node1: pg_ha.status() shows etcd unreachable');

wait_ok(sub { (try_sql($new, 'INSERT INTO t DEFAULT VALUES'))[0] },
	"the new primary $leader accepts writes", timeout => 30, interval => 0.1);
note sprintf('%s accepted a write %.2f s after the cut', $leader, now() - $t_cut);

# --- heal: node1 must end as a replica of the new leader
$proxy->heal;
my $t_heal = now();
# The harness acts as the service manager: if node1's postgres stops (a
# diverged node shuts down for pg_rewind), it runs "pg_hactl rejoin
# --if-needed" and starts it again, as the systemd unit would.
my @restarts;
my $rcv = wait_for(
	sub {
		if (my $r = supervise($n1)) { push @restarts, $r; }
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $new->port)
		  ? $r : undef;
	},
	timeout  => 60,
	interval => 0.25,
	what     => "node1 to stream from $leader after the heal");
ok($rcv, "after the heal node1 is a replica streaming from $leader");
note sprintf('node1 streaming from %s %.2f s after the heal', $leader, now() - $t_heal)
  if $rcv;
my $log = log_since($n1, $log_offset);
my @pg_ha_lines = grep { /pg_ha: / } split /\n/, $log;
note "node1 pg_ha log lines since the cut:\n" . join("\n", map { "  $_" } @pg_ha_lines[0 .. ($#pg_ha_lines > 40 ? 40 : $#pg_ha_lines)]);
unless ($rcv)
{
	diag "node1 did not rejoin; tail of its log:\n"
	  . join("\n", (split /\n/, $log)[-40 .. -1]);
}

note sprintf('node1 was restarted by the service manager %d time(s)%s',
	scalar @restarts,
	@restarts ? ' (pg_hactl rejoin rc ' . join(',', map { $_->{rejoin_rc} } @restarts) . ')' : '');
ok(in_recovery($n1), 'node1 is in recovery');
wait_ok(
	sub {
		$new->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node1' AND state = 'streaming'"
		) eq '1';
	},
	"pg_stat_replication on $leader lists node1", timeout => 30);
my $rows_new = $new->safe_psql('postgres', 'SELECT max(id) FROM t');
wait_ok(sub { $n1->safe_psql('postgres', 'SELECT max(id) FROM t') eq $rows_new },
	'node1 replays what the new leader wrote', timeout => 30);
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ],
	[$leader], "exactly one writable node: $leader");
wait_ok(sub { ((wal_receiver($other) // {})->{sender_port} // 0) == $new->port },
	$other->name . " streams from $leader", timeout => 30);

forget_if_stopped($n1, $n2, $n3);
done_testing();
