
# Real HAProxy with the services Pigsty renders for a 3-node cluster, in
# front of pg_ha instead of Patroni (issue 13).  The configuration is built
# the way Pigsty's roles/pgsql/templates/service.cfg renders each service:
# "option httpchk", "http-check send meth OPTIONS uri <check>", "http-check
# expect status 200", its default-server options for pg_rto "norm" (inter 2s
# fastinter 1s downinter 2s rise 3 fall 3 ...), every member checked on its
# API port, and the members a service's backup selector picks marked
# "backup".  The services are Pigsty's pg_default_services (primary,
# replica, default, offline), the sample pg_services "standby" (/sync), and
# two user services with the query parameters Patroni documents for load
# balancers: /read-only?lag=0 (the "standby" example of Pigsty 2.0's
# service docs) and /read-only?tag_dc=east.
#
# The inventory: node1 pg_role primary, node2 replica with
# pg_offline_query, node3 replica; user tags dc=east on node1 and node2,
# dc=west on node3.  HAProxy's own view (the stats socket's "show stat")
# must be what Patroni's answers give: which servers are UP in every
# service, also with node3 tagged noloadbalance (a reload), with node2's
# replay paused behind the leader, and after a switchover to node2.  Every
# wait is bounded; no timing is asserted.

use strict;
use warnings;

use HTTP::Tiny ();
use IO::Socket::UNIX ();
use IPC::Run ();
use Socket qw(SOCK_STREAM);
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $haproxy = $ENV{HAPROXY} || 'haproxy';
if (system("$haproxy -v >/dev/null 2>&1") != 0)
{
	plan skip_all => 'haproxy not installed';
}

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2, $n3) = ha_cluster(
	etcd         => $etcd,
	ttl          => 5,
	primary_conf => "pg_ha.tags = '{\"dc\": \"east\"}'\n");
$n3->append_conf('postgresql.conf', "pg_ha.tags = '{\"dc\": \"west\"}'\n");
$n3->reload;
my %node = (node1 => $n1, node2 => $n2, node3 => $n3);
my %by_port = map { $node{$_}->port => $_ } keys %node;

# Pigsty's inventory for this cluster (pg_role, pg_offline_query).
my %inventory = (
	node1 => { pg_role => 'primary' },
	node2 => { pg_role => 'replica', pg_offline_query => 1 },
	node3 => { pg_role => 'replica' });

# The services: Pigsty's selectors and backup selectors as Perl predicates
# over the inventory (JMESPath "[]" is every member).
my $all = sub { 1 };
my $none = sub { 0 };
my @services = (
	# pg_default_services
	{ name => 'primary', check => '/primary', selector => $all, backup => $none },
	{ name => 'replica', check => '/read-only', selector => $all,
	  backup => sub { $_[0]{pg_role} eq 'primary' || $_[0]{pg_role} eq 'offline' } },
	{ name => 'default', check => '/primary', selector => $all, backup => $none },
	{ name => 'offline', check => '/replica',
	  selector => sub { $_[0]{pg_role} eq 'offline' || $_[0]{pg_offline_query} },
	  backup => sub { $_[0]{pg_role} eq 'replica' && !$_[0]{pg_offline_query} } },
	# pg_services sample: the sync standby, the primary as backup
	{ name => 'standby', check => '/sync', selector => $all,
	  backup => sub { $_[0]{pg_role} eq 'primary' } },
	# user services with Patroni's query parameters
	{ name => 'fresh', check => '/read-only?lag=0', selector => $all,
	  backup => sub { $_[0]{pg_role} eq 'primary' } },
	{ name => 'east', check => '/read-only?tag_dc=east', selector => $all, backup => $none });

my $dir = PostgreSQL::Test::Utils::tempdir('haproxy_');
my $sock = "$dir/haproxy.sock";
$_->{port} = PostgreSQL::Test::Cluster::get_free_port() for @services;

# pg_rto "norm" of Pigsty's pg_rto_plan: inter 2s fastinter 1s downinter 2s rise 3 fall 3
my $default_server = 'inter 2s fastinter 1s downinter 2s rise 3 fall 3 on-marked-down '
  . 'shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100';

# One service as service.cfg renders it: the selected members, then the
# backup members not already selected.
sub listen_block
{
	my ($svc) = @_;
	my @names = sort keys %node;
	my @members = grep { $svc->{selector}->($inventory{$_}) } @names;
	my %is_member = map { $_ => 1 } @members;
	my %is_backup = map { $_ => 1 } grep { $svc->{backup}->($inventory{$_}) } @names;
	my $b = "listen pgtest-$svc->{name}\n"
	  . "    bind 127.0.0.1:$svc->{port}\n"
	  . "    mode tcp\n"
	  . "    maxconn 5000\n"
	  . "    balance roundrobin\n"
	  . "    option httpchk\n"
	  . "    option http-keep-alive\n"
	  . "    http-check send meth OPTIONS uri $svc->{check}\n"
	  . "    http-check expect status 200\n"
	  . "    default-server $default_server\n";
	for my $n (@members, grep { !$is_member{$_} } sort keys %is_backup)
	{
		$b .= sprintf("    server %s 127.0.0.1:%d check port %d weight 100%s\n",
			$n, $node{$n}->port, $node{$n}->api_port, $is_backup{$n} ? ' backup' : '');
	}
	return $b;
}

# haproxy.cfg.j2's global and defaults sections, except: no user/group
# switch and a lower global maxconn (the test runs unprivileged, and 65535
# needs a file limit it cannot raise), the stats socket in the test directory.
my $cfg = <<"EOF";
global
    stats socket $sock mode 600 level admin
    maxconn 1000
defaults
    mode tcp
    retries 3
    timeout queue 3s
    timeout connect 3s
    timeout client 24h
    timeout server 24h
    timeout check 3s
EOF
$cfg .= "\n" . listen_block($_) for @services;
PostgreSQL::Test::Utils::append_to_file("$dir/haproxy.cfg", $cfg);
note $cfg;

my ($out, $err) = ('', '');
IPC::Run::run([ $haproxy, '-c', '-f', "$dir/haproxy.cfg" ], '>', \$out, '2>', \$err);
is($? >> 8, 0, "haproxy accepts the configuration rendered from Pigsty's service template")
  or diag("$out$err");
my $h = IPC::Run::start([ $haproxy, '-db', '-f', "$dir/haproxy.cfg" ],
	'>', "$dir/haproxy.out", '2>&1', "$dir/haproxy.out");
END { $h->kill_kill if $h; }
wait_for(sub { -S $sock && IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM) },
	timeout => 30, what => 'the haproxy stats socket')
  or BAIL_OUT('haproxy did not start: ' . PostgreSQL::Test::Utils::slurp_file("$dir/haproxy.out"));

# HAProxy's state of every server: { service => { node => 'UP' | 'DOWN' | ... } },
# from "show stat" on the stats socket.
sub haproxy_state
{
	my $s = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM) or return undef;
	print $s "show stat\n";
	my @lines = <$s>;
	close $s;
	my $head = shift @lines // return undef;
	$head =~ s/^# //;
	chomp $head;
	my @cols = split /,/, $head;
	my %st;
	for my $line (@lines)
	{
		chomp $line;
		next if $line eq '';
		my %row;
		@row{@cols} = split /,/, $line, -1;
		next if $row{svname} eq 'FRONTEND' || $row{svname} eq 'BACKEND';
		(my $svc = $row{pxname}) =~ s/^pgtest-//;
		# "UP 1/3" and "DOWN 1/2" are transitions: still the old state
		$st{$svc}{ $row{svname} } = $row{status};
	}
	return \%st;
}

# The servers of each service that HAProxy marks UP: { service => 'node1 node2' }.
sub up_servers
{
	my $st = haproxy_state() or return undef;
	my %up;
	for my $svc (map { $_->{name} } @services)
	{
		$up{$svc} = join ' ', grep { ($st->{$svc}{$_} // '') eq 'UP' } sort keys %{ $st->{$svc} // {} };
	}
	return \%up;
}

# Waits (bounded) until HAProxy marks exactly the expected servers UP in
# every service, then asserts it service by service.
sub expect_up
{
	my ($what, %want) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $matches = sub {
		my $up = up_servers() or return 0;
		return !grep { ($up->{$_} // '') ne $want{$_} } keys %want;
	};
	wait_for($matches, timeout => 90, interval => 0.5, what => "HAProxy's servers $what");
	my $up = up_servers() // {};
	for my $svc (map { $_->{name} } @services)
	{
		is($up->{$svc}, $want{$svc}, "$what: $svc service has UP: " . ($want{$svc} || 'none'));
	}
}

# Which node answers through a service port (undef if none).
sub via
{
	my ($svc) = @_;
	my ($port) = map { $_->{port} } grep { $_->{name} eq $svc } @services;
	my ($o, $e) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-At', '-h', '127.0.0.1', '-p', $port, '-d', 'postgres',
		  '-c', "SELECT current_setting('port')" ],
		'>', \$o, '2>', \$e, IPC::Run::timeout(5));
	chomp $o;
	return $by_port{$o};
}

# --- node1 leads
expect_up('with node1 leading',
	primary => 'node1',
	replica => 'node1 node2 node3',
	default => 'node1',
	offline => 'node2 node3',
	standby => '',
	fresh   => 'node1 node2 node3',
	east    => 'node1 node2');
is(via('primary'), 'node1', 'the primary service reaches node1');
is(via('offline'), 'node2', 'the offline service reaches node2, its member (node3 is its backup)');

# --- node3 tagged noloadbalance: out of every read service
$n3->append_conf('postgresql.conf', "pg_ha.noloadbalance = on\n");
$n3->reload;
expect_up('with node3 tagged noloadbalance',
	primary => 'node1',
	replica => 'node1 node2',
	default => 'node1',
	offline => 'node2',
	standby => '',
	fresh   => 'node1 node2',
	east    => 'node1 node2');
$n3->append_conf('postgresql.conf', "pg_ha.noloadbalance = off\n");
$n3->reload;

# --- node2's replay paused behind the leader: out of the ?lag=0 service only
$n2->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
$n1->safe_psql('postgres', 'CREATE TABLE lagging AS SELECT g FROM generate_series(1, 10000) g');
expect_up("with node2's replay paused behind the leader",
	primary => 'node1',
	replica => 'node1 node2 node3',
	default => 'node1',
	offline => 'node2 node3',
	standby => '',
	fresh   => 'node1 node3',
	east    => 'node1 node2');
$n2->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
expect_up("with node2's replay resumed",
	primary => 'node1',
	replica => 'node1 node2 node3',
	default => 'node1',
	offline => 'node2 node3',
	standby => '',
	fresh   => 'node1 node2 node3',
	east    => 'node1 node2');

# --- switchover to node2.  The session that asks may be cut by the
# demotion: only a refusal (node2 not yet seen streaming) is retried.
for my $try (1 .. 30)
{
	my ($rc, $res, $serr) = $n1->psql('postgres', "SELECT pg_ha.switchover('node2')");
	last unless ($serr // '') =~ /switchover refused/;
	note "switchover refused (try $try): $serr";
	sleep 1;
}
wait_ok(sub { (in_recovery($n2) // 1) == 0 }, 'node2 is promoted', timeout => 60);
wait_ok(sub { in_recovery($n1) }, 'node1 rejoins as a replica', timeout => 90);
# Pigsty renders the services once from the inventory: node1 stays the
# replica service's backup and node2 the offline service's member.
expect_up('after the switchover to node2',
	primary => 'node2',
	replica => 'node1 node2 node3',
	default => 'node2',
	offline => 'node3',
	standby => '',
	fresh   => 'node1 node2 node3',
	east    => 'node1 node2');
is(via('primary'), 'node2', 'the primary service reaches node2');
note 'GET /history (node2): ' . HTTP::Tiny->new(timeout => 5)
  ->get('http://127.0.0.1:' . $n2->api_port . '/history')->{content};
is(via('default'), 'node2', 'the default service reaches node2');
is(via('offline'), 'node3', 'the offline service falls back to node3, its backup');

$h->kill_kill;
undef $h;
$_->stop for ($n3, $n2, $n1);
done_testing();
