
# Write authority rests on the leader key itself, not on a keepalive plus a
# cached "I am the leader" (issue 9, defect 5).
#
# 1. The key is deleted while the leader is cut off from etcd.  node1 leads
#    and reaches etcd through a proxy; the proxy is cut right after node1
#    renewed its lease; the leader key is deleted by hand (etcdctl del,
#    patronictl remove, an etcd restore...) and a replica takes it and
#    accepts writes; node1's own lease deadline passes (it fences).  The
#    replica may take the key only once node1's lease has ended in etcd
#    (before that, node1 may still be writing).  Required: that, and from
#    the heal on, node1 never accepts a
#    write (INSERT every 150 ms for 3 TTL: each fails, or node1 is in
#    recovery), and it ends as a replica of the new leader.
#
#    node1 is not written to during the cut: until its lease deadline it
#    may legitimately commit (it cannot hear etcd; the lease is what makes
#    that safe, and the deletion by hand is what breaks it), and a client
#    idle during the cut is the case the issue reproduced.  For the same
#    reason node1 writes no WAL of its own meanwhile: autovacuum is off on
#    it, a VACUUM sets every hint bit first (wal_log_hints), and the test
#    waits, before the cut, until its WAL is quiet (the bgwriter logs a
#    standby snapshot up to 25 s after activity).  (Today's
#    worker compares the key only when its member document changes, i.e.
#    when its WAL position moved: an idle primary keeps writing after the
#    heal until its next write plus one renew interval.)
#
# 2. The key is overwritten by hand, with no cut: while X leads, the leader
#    key is set to the name of a member that is down.  Required: X refuses
#    writes within one renew interval (TTL/3) and keeps refusing while the
#    key names another node; once the key is deleted, the cluster has
#    exactly one writable node again.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(usleep);
use feature 'state';
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
	primary_conf => "autovacuum = off\n",
	replica_conf => "pg_ha.etcd_endpoints = '$direct'\n");
my %by_name = map { $_->name => $_ } ($n1, $n2, $n3);
my $leader_key = $n1->ha_key('leader');

$n1->safe_psql('postgres',
	'CREATE TABLE t (id serial PRIMARY KEY, node text, at timestamptz DEFAULT clock_timestamp())');
ok((try_sql($n1, "INSERT INTO t (node) VALUES ('node1')"))[0], 'node1 accepts writes');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);

# With wal_log_hints = on, the first read that sets a hint bit on a page
# writes a full-page image: VACUUM sets them all now, so that the reads of
# the test's own sessions on node1 write no WAL during the cut.
$n1->safe_psql('postgres', 'VACUUM');
$n1->wait_for_catchup($_, 'replay') for ($n2, $n3);
# The bgwriter logs a standby snapshot (RUNNING_XACTS) after activity, up
# to 15 s plus its hibernation (10 s) later, and none after that until new
# activity: wait until node1's WAL position has moved once and then stayed
# still, or stayed still for 26 s.
my $quiet = wait_for(
	sub {
		state ($last, $since, $moved);
		my $l = $n1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
		if (!defined $last || $l ne $last)
		{
			$moved = 1 if defined $last;
			($last, $since) = ($l, now());
		}
		return ($moved && now() - $since >= 3) || now() - $since >= 26;
	},
	timeout => 45, interval => 0.5, what => 'node1\'s WAL to be quiet');
note 'node1\'s WAL is quiet' . ($quiet ? '' : ' (gave up waiting)');
my $lsn_before = $n1->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');

# ---------------------------------------------------------------- 1. cut
my $lease = $etcd->get_kv($n1->ha_key('members/node1'))->{lease};
ok($lease, "node1's lease: $lease");
ok(defined wait_lease_renewed($etcd, $lease, timeout => 2 * $ttl),
	'node1 renewed its lease') or BAIL_OUT('no lease renewal seen');
$proxy->cut;
my $t_cut = now();
is($etcd->del($leader_key), 1, 'leader key deleted by hand while node1 is cut off');

my ($new_name) = wait_leader_not($etcd, 'node1', timeout => 3 * $ttl);
ok(defined $new_name, 'a replica takes the free leader key') or BAIL_OUT('no takeover');
my $new = $by_name{$new_name};
my ($other) = grep { $_->name ne $new_name } ($n2, $n3);
my ($wrote) = timed_wait(
	sub { (try_sql($new, "INSERT INTO t (node) VALUES ('$new_name')"))[0] },
	timeout => 3 * $ttl, interval => 0.05, what => "a write on $new_name");
my $t_new_write = now();
ok($wrote, "$new_name accepts writes");
note sprintf('%s took the key and accepted a write %.2f s after the cut',
	$new_name, $t_new_write - $t_cut);

# node1's own deadline passes during the cut (pg_ha.status() is a read)
my $fenced = wait_for(sub { $n1->ha_status->{fenced} }, timeout => $ttl,
	interval => 0.02, what => 'node1 to fence at its lease deadline');
ok($fenced, 'node1 fences when its lease deadline passes during the cut');
note sprintf('node1 fenced %.2f s after the cut', now() - $t_cut);
# A key deleted by hand while its holder's lease lives on must not hand
# write authority to anyone before that lease ends: node1, cut off, may
# write until its own deadline.  So the replica takes the key only once
# node1's lease is gone from etcd.
my $remaining = lease_remaining($etcd, $lease) // -1;
cmp_ok($remaining, '<', 0,
	"$new_name took the key only after node1's lease had ended ($remaining s left when it wrote)");

$proxy->heal;
my $t_heal = now();
# have node1's worker talk to etcd at once rather than at its retry pace,
# so its keepalive reaches etcd before the lease expires
# (node1 may already be restarting as a standby: a failure here is fine)
try_sql($n1, 'SELECT pg_reload_conf()', timeout => 5);
my (undef, undef, undef, $lsn_heal) =
  try_sql($n1, 'SELECT pg_current_wal_flush_lsn()', timeout => 5);
$lsn_heal = ($lsn_heal // '') =~ s/\s+$//r;
note "node1 flush LSN before the cut $lsn_before, at the heal $lsn_heal"
  . ($lsn_before eq $lsn_heal ? '' : ' (it wrote WAL meanwhile)');

my (@accepted, @log, $after_heal);
my $probes = 0;
while (now() - $t_heal < 3 * $ttl)
{
	my $t = now();
	my ($ok, $state, $err) =
	  try_sql($n1, "INSERT INTO t (node) VALUES ('node1')", timeout => 5);
	$probes++;
	if ($ok)
	{
		push @accepted, sprintf('%.2f s', $t - $t_heal);
	}
	# did node1's keepalive reach etcd after the heal? (informational)
	$after_heal //= lease_remaining($etcd, $lease) // -1 if $probes == 3;
	push @log, sprintf('%.2f s %s', $t - $t_heal,
		$ok ? 'ACCEPTED' : ($state || ($err =~ /(\S[^\n]*)/)[0] // 'error'));
	my $left = 0.15 - (now() - $t);
	usleep(int($left * 1e6)) if $left > 0;
}
note "node1's lease 0.5 s after the heal: $after_heal s left (its keepalive "
  . ($after_heal >= 0 ? 'succeeded' : 'failed or did not come') . ')';
is(scalar @accepted, 0,
	"node1 accepts no write after the heal while $new_name leads ($probes probes over 3 TTL)")
  or diag "node1 accepted INSERTs at (after the heal): @accepted\nprobes: "
  . join('; ', @log[0 .. ($#log > 30 ? 30 : $#log)]);

# node1 must end as a replica of the new leader (the harness restarts it,
# as the service manager would, if it stops for pg_rewind)
my $rcv = wait_for(
	sub {
		supervise($n1);
		return undef unless (in_recovery($n1) // 0) == 1;
		my $r = wal_receiver($n1) or return undef;
		return ($r->{status} eq 'streaming' && $r->{sender_port} == $new->port) ? $r : undef;
	},
	timeout  => 60,
	interval => 0.25,
	what     => "node1 to stream from $new_name");
ok($rcv, "node1 demotes and follows $new_name");
is_deeply([ map { $_->name } writable_nodes($n1, $n2, $n3) ],
	[$new_name], "exactly one writable node: $new_name");

# ---------------------------------------------------- 2. key overwritten
# The key is set to the name of a member that is down.
$other->stop('fast');
wait_for(sub { !defined $etcd->get($n1->ha_key('members/' . $other->name)) },
	timeout => 3 * $ttl, what => 'the stopped member\'s key to go');
ok((try_sql($new, "INSERT INTO t (node) VALUES ('$new_name')"))[0],
	"$new_name accepts writes before the overwrite");
$etcd->put($leader_key, $other->name);
my $t_put = now();
my ($t_first_refusal, @late);
while (now() - $t_put < 3 * $ttl)
{
	my $t = now();
	my ($ok) = try_sql($new, "INSERT INTO t (node) VALUES ('$new_name')", timeout => 5);
	$t_first_refusal //= $t unless $ok;
	push @late, sprintf('%.2f s', $t - $t_put) if $ok && $t - $t_put > $ttl / 3;
	my $left = 0.1 - (now() - $t);
	usleep(int($left * 1e6)) if $left > 0;
}
ok(defined $t_first_refusal && $t_first_refusal - $t_put <= $ttl / 3 + 0.5,
	sprintf('%s refuses writes within one renew interval of the overwrite (%s)',
		$new_name,
		defined $t_first_refusal ? sprintf('%.2f s', $t_first_refusal - $t_put) : 'never'));
is(scalar @late, 0,
	"$new_name accepts no write while the key names " . $other->name)
  or diag "accepted at @late after the overwrite";

$etcd->del($leader_key);
$other->start;
my $one = wait_for(
	sub {
		supervise($_) for ($n1, $n2, $n3);
		my @w = writable_nodes($n1, $n2, $n3);
		return @w == 1 && defined leader_of($etcd) && $w[0]->name eq leader_of($etcd);
	},
	timeout => 60, interval => 0.5, what => 'one writable leader again');
ok($one, 'after the key is deleted, exactly one node leads and accepts writes');

forget_if_stopped($n1, $n2, $n3);
done_testing();
