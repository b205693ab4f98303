
# Real HAProxy (2.6) with Pigsty's service layout in front of a primary and
# a replica: OPTIONS health checks on the API port, a primary service on
# /primary and a replica service on /read-only (primary as backup).  The
# primary port reaches the primary and the replica port the replica, and
# again after a switchover, within HAProxy's check intervals.

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run ();
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $haproxy = $ENV{HAPROXY} || 'haproxy';
if (system("$haproxy -v >/dev/null 2>&1") != 0)
{
	plan skip_all => 'haproxy not installed';
}

my $etcd = PgHa::Etcd->new(members => 1);
my @m = map { PostgreSQL::Test::Cluster::get_free_port() } 1 .. 2;
# a switchover demotes the old primary through a crash-restart
my $primary = new_primary(name => 'node1', etcd => $etcd, ttl => 5,
	extra_conf => "pg_ha.metrics_listen = '127.0.0.1:$m[0]'\nrestart_after_crash = on");
my $replica = new_replica(name => 'node2', from => $primary,
	extra_conf => "pg_ha.metrics_listen = '127.0.0.1:$m[1]'\nrestart_after_crash = on");
my %by_port = ($primary->port => 'node1', $replica->port => 'node2');

my $prim_port = PostgreSQL::Test::Cluster::get_free_port();
my $repl_port = PostgreSQL::Test::Cluster::get_free_port();
my $dir = PostgreSQL::Test::Utils::tempdir('haproxy_');

# Pigsty's haproxy service template (roles/pgsql/templates/service.j2),
# with its default check timings.
my $servers = sub {
	my ($backup_primary) = @_;
	my $s = '';
	for my $n ($primary, $replica)
	{
		$s .= sprintf("    server %s 127.0.0.1:%d check port %d weight 100\n",
			$n->name, $n->port, $n->api_port);
	}
	return $s;
};
my $cfg = <<"EOF";
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    timeout check 2s
listen pg-test-primary
    bind 127.0.0.1:$prim_port
    mode tcp
    maxconn 3000
    balance roundrobin
    option httpchk
    option http-keep-alive
    http-check send meth OPTIONS uri /primary
    http-check expect status 200
    default-server inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100
@{[ $servers->() ]}
listen pg-test-replica
    bind 127.0.0.1:$repl_port
    mode tcp
    maxconn 3000
    balance roundrobin
    option httpchk
    option http-keep-alive
    http-check send meth OPTIONS uri /read-only
    http-check expect status 200
    default-server inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100
@{[ $servers->() ]}
EOF
# Pigsty marks the primary "backup" in the replica service: reads go to
# replicas while any is up.
$cfg =~ s/(listen pg-test-replica.*?server node1 [^\n]*)/$1 backup/s;
open(my $fh, '>', "$dir/haproxy.cfg") or die;
print $fh $cfg;
close $fh;

my ($out, $err) = ('', '');
IPC::Run::run([ $haproxy, '-c', '-f', "$dir/haproxy.cfg" ], '>', \$out, '2>', \$err);
is($? >> 8, 0, 'haproxy accepts the Pigsty-style configuration') or diag("$out$err");
my $h = IPC::Run::start([ $haproxy, '-db', '-f', "$dir/haproxy.cfg" ],
	'>', "$dir/haproxy.out", '2>&1', "$dir/haproxy.out");
END { $h->kill_kill if $h; }

# Which node answers through a haproxy port (undef if none).
sub via
{
	my ($port) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-At', '-h', '127.0.0.1', '-p', $port, '-d', 'postgres',
		  '-c', "SELECT current_setting('port')" ],
		'>', \$o, '2>', \$e, IPC::Run::timeout(5));
	chomp $o;
	return $by_port{$o};
}

# N consecutive connections all reach $want.
sub steadily
{
	my ($port, $want, $n) = @_;
	for (1 .. ($n // 6))
	{
		my $got = via($port) // 'none';
		return 0 if $got ne $want;
	}
	return 1;
}

wait_ok(sub { steadily($prim_port, 'node1') }, 'primary service reaches node1 (the primary)',
	timeout => 60, interval => 1);
wait_ok(sub { steadily($repl_port, 'node2') }, 'replica service reaches node2 (the replica)',
	timeout => 60, interval => 1);

# --- switchover: node2 becomes the leader
# The session that asks may be cut by the demotion: only a refusal (the
# leader does not see node2 streaming yet) is retried.
my ($rc, $res, $serr) = (0, '', '');
for my $try (1 .. 30)
{
	($res, $serr) = ('', '');
	$rc = $primary->psql('postgres', "SELECT pg_ha.switchover('node2')",
		stdout => \$res, stderr => \$serr);
	last unless $serr =~ /switchover refused/;
	note "switchover refused (try $try): $serr";
	sleep 1;
}
note "switchover: rc $rc, $res $serr";
wait_ok(sub { ($replica->safe_psql('postgres', 'SELECT pg_is_in_recovery()') eq 'f') },
	'node2 is promoted', timeout => 60);
my ($ok, $secs) = timed_wait(sub { steadily($prim_port, 'node2') },
	timeout => 60, interval => 0.5, what => 'primary service moves to node2');
ok($ok, sprintf('after the switchover the primary service reaches node2 (%.1f s)', $secs // -1));
# rise 3 at downinter 5s plus fall 3 at fastinter 1s: well under 30 s
cmp_ok($secs, '<', 30, 'within HAProxy check intervals');
# node1 (marked backup in the replica service, as Pigsty renders it for the
# old roles) rejoins as a replica and passes the replica checks again; the
# replica service keeps serving reads through node2 meanwhile, as
# /read-only includes the primary.
wait_ok(sub { steadily($repl_port, 'node2') },
	'after the switchover the replica service still serves reads', timeout => 60, interval => 1);
wait_ok(sub { ($primary->safe_psql('postgres', 'SELECT pg_is_in_recovery()') // '') eq 't' },
	'node1 rejoins as a replica', timeout => 90);
my $http = HTTP::Tiny->new(timeout => 5);
wait_ok(sub { $http->request('OPTIONS', 'http://127.0.0.1:' . $primary->api_port . '/replica')->{status} == 200 },
	'node1: OPTIONS /replica -> 200 after rejoining', timeout => 60);
is($http->request('OPTIONS', 'http://127.0.0.1:' . $primary->api_port . '/primary')->{status}, 503,
	'node1: OPTIONS /primary -> 503 after the switchover');

$h->kill_kill;
undef $h;
$replica->stop;
$primary->stop;
done_testing();
