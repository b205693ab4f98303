
# The config key honoured live on every node (issue 13): a field the key
# sets with a valid value wins over the node's pg_ha.* setting, a field it
# leaves out falls back to it, and an invalid one is logged (WARNING naming
# the field, never the value) and ignored while the cluster runs on.
#   - maximum_lag_on_failover and synchronous_mode, changed with patronictl
#     edit-config (PATCH /config without it), take effect on every node:
#     pg_ha.status().settings shows them with source "config", and the
#     leader starts synchronous replication that no node's GUC asked for;
#   - ttl changed on a running leader: the leader key and the member keys
#     move to leases granted with the new TTL, the old lease is revoked, the
#     fence's deadline follows (lease_seconds_left beyond the old TTL), and
#     nobody fails over: the leader key is never deleted, the timeline stays;
#     back to the old TTL, the deadline shrinks with it;
#   - ttl "abc", ttl 1, a 5000-byte ttl and synchronous_mode "maybe" are
#     logged and ignored: the GUC's value is back in force, the worker keeps
#     its PID and the leader keeps writing;
#   - pg_ha.maximum_lag_on_failover reloaded on a node while the key sets
#     it: a WARNING says the new value has no effect, the key's stays.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $ttl  = 10;
my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(etcd => $etcd, ttl => $ttl, extra_conf => api_auth_conf());
my @nodes = ($n1, $n2, $n3);
my $leader_key = $n1->ha_key('leader');

wait_for(sub { (config_key($etcd))[0] }, timeout => 20, what => 'the config key', fatal => 1);

sub settings { return $_[0]->ha_status->{settings} // {}; }

sub setting_is
{
	my ($field, $value, $source, $what) = @_;
	for my $n (@nodes)
	{
		my $got;
		my $ok = wait_for(
			sub {
				$got = settings($n)->{$field} // {};
				return defined $got->{value} && "$got->{value}" eq "$value"
				  && ($got->{source} // '') eq $source;
			},
			timeout => 20,
			what    => "$field = $value from $source on " . $n->name);
		ok($ok, $n->name . ": $what")
		  or diag explain $got;
	}
}

sub patch_config
{
	my ($body) = @_;
	my $r = api_request($n1, 'PATCH', '/config', auth => 1, body => $body);
	is($r->{code}, '200', 'PATCH /config ' . JSON::PP->new->canonical->encode($body))
	  or diag $r->{body};
}

# granted TTL of a lease, as etcd says
sub lease_granted
{
	my ($id) = @_;
	my ($ok, $out) = $etcd->ctl('lease', 'timetolive', $id);
	return $ok && $out =~ /granted with TTL\((\d+)s\)/ ? $1 : undef;
}

my $timeline = $n1->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()');
my %worker = map { $_->name => worker_pid($_) } @nodes;
my $watch = key_watch($etcd, $leader_key);

# ---- maximum_lag_on_failover and synchronous_mode ----
setting_is('maximum_lag_on_failover', 1048576, 'config', 'the initial key decides maximum_lag_on_failover');
setting_is('synchronous_mode', 'off', 'pg_ha.synchronous_mode', 'synchronous_mode falls back to the GUC');

SKIP:
{
	if (patronictl_available())
	{
		my ($rc, $out) = patronictl($etcd, 'edit-config', '--force', '--set',
			'maximum_lag_on_failover=33554432', '--set', 'synchronous_mode=true');
		is($rc, 0, 'patronictl edit-config exits 0') or diag $out;
	}
	else
	{
		patch_config({ maximum_lag_on_failover => 33554432, synchronous_mode => JSON::PP::true });
	}
}
setting_is('maximum_lag_on_failover', 33554432, 'config', 'maximum_lag_on_failover from the key');
setting_is('synchronous_mode', 'on', 'config', 'synchronous_mode from the key');
ok(wait_for(sub { sync_standby($etcd) ne '' }, timeout => 30, what => 'a synchronous standby'),
	'the leader chose a synchronous standby (no GUC asked for one)');
like($n1->safe_psql('postgres', 'SHOW synchronous_standby_names'), qr/node[23]/,
	'synchronous_standby_names names a replica');

patch_config({ synchronous_mode => JSON::PP::false });
setting_is('synchronous_mode', 'off', 'config', 'synchronous_mode false from the key');
ok(wait_for(sub { sync_standby($etcd) eq '' && !defined $etcd->get($n1->ha_key('sync')) },
		timeout => 30, what => 'the sync key to go'),
	'synchronous mode off again: the sync key is gone');

# ---- ttl, live ----
my $old_lease = $etcd->get_kv($leader_key)->{lease};
is(lease_granted($old_lease), $ttl, "the leader's lease was granted with $ttl s");
patch_config({ ttl => 20 });
setting_is('ttl', 20, 'config', 'ttl 20 from the key');
my $new_lease;
ok( wait_for(
		sub {
			my $kv = $etcd->get_kv($leader_key) or return 0;
			$new_lease = $kv->{lease};
			return $new_lease ne $old_lease && (lease_granted($new_lease) // 0) == 20;
		},
		timeout => 30,
		what    => 'the leader key on a lease of 20 s'),
	'the leader key moved to a lease granted with 20 s');
is(leader_of($etcd), 'node1', 'node1 still holds the leader key');
is($etcd->get_kv($n1->ha_key('members/node1'))->{lease}, $new_lease,
	"node1's member key moved with it");
is(lease_remaining($etcd, $old_lease), -1, 'the old lease was revoked');
for my $n ($n2, $n3)
{
	ok(wait_for(sub { (lease_granted($etcd->get_kv($n->ha_key('members/' . $n->name))->{lease}) // 0) == 20 },
			timeout => 30, what => $n->name . "'s lease of 20 s"),
		$n->name . ': member key on a lease of 20 s');
}
ok(wait_for(sub { ($n1->ha_status->{lease_seconds_left} // 0) > $ttl }, timeout => 30,
		what => "lease_seconds_left above $ttl"),
	"the fence's deadline follows the new TTL (more than $ttl s left)");
$n1->safe_psql('postgres', 'CREATE TABLE t_ttl (i int); INSERT INTO t_ttl VALUES (1)');
pass('the leader writes on the new lease');

patch_config({ ttl => $ttl });
ok( wait_for(
		sub {
			my $kv = $etcd->get_kv($leader_key) or return 0;
			return (lease_granted($kv->{lease}) // 0) == $ttl;
		},
		timeout => 30,
		what    => "the leader key on a lease of $ttl s"),
	"back to $ttl s: the leader key moved to a lease granted with $ttl s");
ok(wait_for(sub { my $l = $n1->ha_status->{lease_seconds_left}; defined $l && $l > 0 && $l <= $ttl },
		timeout => 30, what => "lease_seconds_left at most $ttl"),
	"the fence's deadline moved back within $ttl s");

# ---- invalid values: logged, ignored, the cluster runs on ----
my %off = map { $_->name => -s $_->logfile } @nodes;
patch_config({ ttl => 'abc' });
setting_is('ttl', $ttl, 'pg_ha.ttl', 'ttl "abc" ignored: pg_ha.ttl in force');
patch_config({ ttl => 1 });
patch_config({ ttl => 'x' x 5000 });
patch_config({ synchronous_mode => 'maybe' });
setting_is('synchronous_mode', 'off', 'pg_ha.synchronous_mode',
	'synchronous_mode "maybe" ignored: the GUC in force');
for my $n (@nodes)
{
	my $log;
	ok(wait_for(sub { $log = log_since($n, $off{ $n->name }); $log =~ /field "synchronous_mode"/ },
			timeout => 20, what => 'the synchronous_mode warning'),
		$n->name . ': synchronous_mode "maybe" logged');
	like($log, qr/WARNING:  pg_ha: ignoring field "ttl" of the config key/,
		$n->name . ': a WARNING names the field ttl');
	like($log, qr/ttl must be an integer from 5 to 3600/, $n->name . ': and says why');
	unlike($log, qr/xxxxxxxxxx/, $n->name . ': the huge value is not echoed');
	is(worker_pid($n), $worker{ $n->name }, $n->name . ': the HA worker kept running');
}
my $status = $n1->ha_status;
ok(grep({ $_->{field} eq 'synchronous_mode' } @{ $status->{settings}{problems} // [] }),
	'pg_ha.status() lists the ignored field');
$n1->safe_psql('postgres', 'INSERT INTO t_ttl VALUES (2)');
pass('the leader still writes');

# ---- a GUC the key overrides: changing it warns instead of doing nothing quietly ----
%off = map { $_->name => -s $_->logfile } @nodes;
$n2->append_conf('postgresql.conf', "pg_ha.maximum_lag_on_failover = '64MB'\n");
$n2->reload;
my $log2;
ok(wait_for(sub { $log2 = log_since($n2, $off{node2}); $log2 =~ /new value of pg_ha\.maximum_lag_on_failover/ },
		timeout => 20, what => 'the shadowed pg_ha.maximum_lag_on_failover warning'),
	'node2: reloading pg_ha.maximum_lag_on_failover while the key sets it is a WARNING')
  or diag $log2;
like($log2,
	qr/DETAIL:  The config key sets maximum_lag_on_failover to 33554432, and the config key takes precedence/,
	'node2: it says which value stays in force');
setting_is('maximum_lag_on_failover', 33554432, 'config', 'the key\'s value still in force after the reload');
unlike(log_since($n3, $off{node3}), qr/has no effect/, 'node3, not reloaded, says nothing');

# ---- no failover throughout ----
is(leader_of($etcd), 'node1', 'node1 leads throughout');
is($n1->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()'), $timeline,
	'no promotion: the timeline is unchanged');
is(scalar(grep { $_->{type} eq 'DELETE' } $watch->events), 0, 'the leader key was never deleted');
is_deeply([ grep { $_ ne 'node1' } $watch->values ], [], 'nobody else ever held the leader key');
$watch->stop;

done_testing();
