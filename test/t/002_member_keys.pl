
# Patroni-compatible keys published by a primary and two replicas:
# members/<name> (compact JSON with Patroni's fields), initialize, status;
# pg_ha.status() and pg_ha.members() on every node, and who may call them.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($primary, @replicas) = new_cluster(etcd => $etcd, nodes => 3, ttl => 10);
my @nodes = ($primary, @replicas);

wait_ok(sub { (leader_key($etcd) // '') eq 'node1' },
	'leader key holds node1', timeout => 30);

# Strip JSON strings, then no whitespace may be left: compact encoding as
# Patroni writes it (separators ',' and ':').
sub is_compact
{
	my ($raw) = @_;
	(my $s = $raw) =~ s/"(?:[^"\\]|\\.)*"//g;
	return $s !~ /\s/;
}

# Integer-valued JSON number (not a string, not a float) for $field.
sub json_int_field
{
	my ($raw, $field) = @_;
	return $raw =~ /"\Q$field\E":(\d+)(?=[,}])/ ? $1 : undef;
}

for my $node (@nodes)
{
	my $name = $node->name;
	my $is_primary = $name eq 'node1';
	my $raw = wait_for(
		sub {
			my $r = member_raw($etcd, $name);
			return undef unless defined $r;
			# replicas: wait until they report streaming
			return $r if $is_primary || $r =~ /"replication_state":"streaming"/;
			return undef;
		},
		timeout => 30,
		what    => "member key of $name");
	ok(defined $raw, "$name: member key /service/pgtest/members/$name exists");
	next unless defined $raw;
	note "$name: $raw";

	my $m = eval { JSON::PP::decode_json($raw) };
	ok($m && ref $m eq 'HASH', "$name: member key is a JSON object");
	$m //= {};
	ok(is_compact($raw), "$name: member JSON is compact");
	my $port = $node->port;
	is($m->{conn_url}, "postgres://127.0.0.1:$port/postgres",
		"$name: conn_url");
	like($m->{api_url} // '', qr{^https?://[^/]+:\d+(/|$)}, "$name: api_url is an http URL");
	is($m->{state}, 'running', "$name: state running");
	is($m->{role}, $is_primary ? 'master' : 'replica',
		"$name: role " . ($is_primary ? 'master' : 'replica'));
	ok(defined $m->{version} && length $m->{version}, "$name: version present");
	ok(defined json_int_field($raw, 'xlog_location'),
		"$name: xlog_location is an integer");
	is(json_int_field($raw, 'timeline'), 1, "$name: timeline 1 (integer)");
	if (!$is_primary)
	{
		ok(defined json_int_field($raw, 'receive_lsn'),
			"$name: receive_lsn is an integer");
		ok(defined json_int_field($raw, 'replay_lsn'),
			"$name: replay_lsn is an integer");
		is($m->{replication_state}, 'streaming',
			"$name: replication_state streaming");
	}
}

# --- initialize: the system identifier.
my $sysid = $primary->safe_psql('postgres',
	'SELECT system_identifier FROM pg_control_system()');
is($etcd->get('/service/pgtest/initialize'), $sysid,
	'initialize key holds the system identifier');

# --- xlog_location follows the primary's WAL position.
$primary->safe_psql('postgres',
	'CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g');
my $lsn = $primary->wal_lsn_bytes;
note "primary WAL position after writes: $lsn";
my $xlog = wait_for(
	sub {
		my $r = member_raw($etcd, 'node1') // '';
		my $x = json_int_field($r, 'xlog_location');
		return (defined $x && $x >= $lsn) ? $x : undef;
	},
	timeout => 30,
	what    => "node1 xlog_location >= $lsn");
ok(defined $xlog, "primary's xlog_location catches up with pg_current_wal_lsn() ($lsn)");
my $lsn_now = $primary->wal_lsn_bytes;
ok(defined $xlog && $xlog <= $lsn_now,
	"primary's xlog_location ($xlog) is not ahead of the WAL ($lsn_now)");

for my $r (@replicas)
{
	my $name = $r->name;
	my $ok = wait_for(
		sub {
			my $raw = member_raw($etcd, $name) // '';
			my $rep = json_int_field($raw, 'replay_lsn');
			my $rcv = json_int_field($raw, 'receive_lsn');
			return defined $rep && defined $rcv && $rep >= $lsn && $rcv >= $lsn;
		},
		timeout => 30,
		what    => "$name receive_lsn/replay_lsn >= $lsn");
	ok($ok, "$name: receive_lsn and replay_lsn reach the primary's LSN");
}

# --- status: {"optime":N}
my $status = wait_for(
	sub {
		my $raw = $etcd->get('/service/pgtest/status') // '';
		my $o = json_int_field($raw, 'optime');
		return (defined $o && $o >= $lsn) ? $raw : undef;
	},
	timeout => 30,
	what    => "status optime >= $lsn");
ok(defined $status, "status key is JSON {\"optime\":N} with N >= $lsn")
  or diag "status key: " . ($etcd->get('/service/pgtest/status') // 'undef');
if (defined $status)
{
	my $s = JSON::PP::decode_json($status);
	ok(exists $s->{optime}, 'status key decodes and has optime');
}

# --- pg_ha.status() on every node.
for my $node (@nodes)
{
	my $name = $node->name;
	my $is_primary = $name eq 'node1';
	my $st = wait_for(
		sub {
			my $s = $node->ha_status;
			return ($s->{leader} // '') eq 'node1' ? $s : undef;
		},
		timeout => 30,
		what    => "$name pg_ha.status() to see leader node1");
	$st //= $node->ha_status;
	is($st->{node},    $name,    "$name status: node");
	is($st->{cluster}, 'pgtest', "$name status: cluster");
	is($st->{role}, $is_primary ? 'primary' : 'replica', "$name status: role");
	is($st->{leader}, 'node1', "$name status: leader is node1");
	is(($st->{lease_held} ? 1 : 0), ($is_primary ? 1 : 0),
		"$name status: lease_held only on the primary");
	is($st->{timeline}, 1, "$name status: timeline 1");
	ok($st->{etcd_reachable}, "$name status: etcd reachable");
	is($etcd->member_index($st->{etcd_endpoint}), 0,
		"$name status: etcd_endpoint is the etcd member");
	like($st->{lsn} // '', qr{^[0-9A-F]+/[0-9A-F]+$}, "$name status: lsn is a pg_lsn");
	ok(defined $st->{etcd_last_ok}, "$name status: etcd_last_ok set");
	ok($st->{worker_pid}, "$name status: worker_pid set");
}

# --- pg_ha.members(): one row per node.
for my $node (@nodes)
{
	my $name = $node->name;
	my $rows = $node->ha_members;
	is_deeply([ map { $_->{name} } @$rows ], [qw(node1 node2 node3)],
		"$name: pg_ha.members() returns one row per node");
	for my $row (@$rows)
	{
		my $lead = $row->{name} eq 'node1';
		like($row->{role}, $lead ? qr/^(master|primary)$/ : qr/^replica$/,
			"$name: members() role of $row->{name}");
		is(($row->{is_leader} ? 1 : 0), ($lead ? 1 : 0),
			"$name: members() is_leader of $row->{name}");
	}
}
my ($m2) = grep { $_->{name} eq 'node2' } @{ $primary->ha_members };
is($m2->{conn_url}, 'postgres://127.0.0.1:' . $replicas[0]->port . '/postgres',
	'members(): conn_url of node2');
is($m2->{replication_state}, 'streaming', 'members(): replication_state of node2');
is($m2->{state}, 'running', 'members(): state of node2');
ok(ref $m2->{data} eq 'HASH' && $m2->{data}{role} eq 'replica',
	'members(): data is the member key as jsonb');

# --- privileges
$primary->safe_psql('postgres', q{
	CREATE ROLE plain_user LOGIN;
	CREATE ROLE monitor_user LOGIN;
	GRANT pg_monitor TO monitor_user;
});
for my $fn (qw(status members))
{
	my ($ret, $out, $err) = $primary->psql('postgres',
		"SELECT count(*) FROM pg_ha.$fn()",
		extra_params => [ '-U', 'plain_user' ]);
	isnt($ret, 0, "pg_ha.$fn() is refused to a plain role");
	like($err, qr/permission denied for function $fn/,
		"pg_ha.$fn(): permission denied for a plain role");
	($ret, $out, $err) = $primary->psql('postgres',
		"SELECT count(*) FROM pg_ha.$fn()",
		extra_params => [ '-U', 'monitor_user' ]);
	is($ret, 0, "pg_ha.$fn() is allowed to a member of pg_monitor")
	  or diag $err;
	cmp_ok($out, '>=', 1, "pg_ha.$fn() returns rows to pg_monitor");
}

done_testing();
