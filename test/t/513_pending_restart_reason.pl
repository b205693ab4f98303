
# Patroni 4's "pending_restart_reason" (issue 13): next to
# "pending_restart": true, the member key and GET /patroni name each
# restart-only setting that changed in the configuration files, with the
# value postgres runs with and the one a restart gives it, as strings in
# the units PostgreSQL shows ({"max_connections": {"old_value": "20",
# "new_value": "31"}}).  patronictl 4 shows them in its "Pending restart
# reason" column (list -e).  A reloadable change is no reason; after the
# restart the reason is gone.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(etcd => $etcd, ttl => 5, nodes => 2);

sub patroni_doc { return api_request($_[0], 'GET', '/patroni')->{json} // {}; }

# --- node2 (a replica): two restart-only settings and a reloadable one
my %old = map { $_ => $n2->safe_psql('postgres', "SHOW $_") } qw(max_connections shared_buffers);
$n2->safe_psql('postgres', 'ALTER SYSTEM SET max_connections = 31');
$n2->safe_psql('postgres', "ALTER SYSTEM SET shared_buffers = '24MB'");
$n2->safe_psql('postgres', "ALTER SYSTEM SET work_mem = '5MB'");
$n2->reload;
my %want = (
	max_connections => { old_value => $old{max_connections}, new_value => '31' },
	shared_buffers  => { old_value => $old{shared_buffers},  new_value => '24MB' });

my $m = wait_for(sub { my $j = member_json($etcd, 'node2'); $j && $j->{pending_restart_reason} ? $j : undef },
	timeout => 20, what => 'pending_restart_reason in the member key of node2');
ok($m && $m->{pending_restart}, 'member key: pending_restart');
is_deeply($m && $m->{pending_restart_reason}, \%want,
	'member key: pending_restart_reason names max_connections and shared_buffers, old and new values')
  or diag explain $m;

my $doc = wait_for(sub { my $d = patroni_doc($n2); $d->{pending_restart_reason} ? $d : undef },
	timeout => 20, what => 'pending_restart_reason in GET /patroni of node2');
ok($doc && $doc->{pending_restart}, 'GET /patroni: pending_restart');
is_deeply($doc && $doc->{pending_restart_reason}, \%want, 'GET /patroni: the same reason')
  or diag explain $doc;

my $cm = wait_for(sub { my ($c) = grep { $_->{name} eq 'node2' }
			@{ (api_request($n1, 'GET', '/cluster')->{json} // {})->{members} // [] };
		$c && $c->{pending_restart} ? $c : undef }, timeout => 20, what => 'pending_restart in GET /cluster');
ok($cm, "GET /cluster on node1 shows node2's pending_restart");

my $m1 = member_json($etcd, 'node1');
ok(!exists $m1->{pending_restart_reason}, 'node1, nothing pending: no reason in its member key');
ok(!exists patroni_doc($n1)->{pending_restart_reason}, 'node1: no reason in GET /patroni');

# --- patronictl 4 shows the reason ("name: old->new", one per line)
SKIP:
{
	skip 'patronictl not installed', 2 unless patronictl_available();
	skip 'patronictl ' . patronictl_version() . ' has no "Pending restart reason" column', 2
	  unless patronictl_at_least('4.0.0');
	my ($rc, $out) = patronictl($etcd, 'list', '-e', '-f', 'json');
	note $out;
	my $rows = eval { JSON::PP::decode_json($out) } // [];
	my %row  = map { $_->{Member} => $_ } @$rows;
	my $reason = $row{node2}{'Pending restart reason'} // '';
	like($reason, qr/^max_connections: \Q$old{max_connections}\E->31$/m,
		'patronictl list -e: node2 max_connections old->new');
	like($reason, qr/^shared_buffers: \Q$old{shared_buffers}\E->24MB$/m,
		'patronictl list -e: node2 shared_buffers old->new');
}

# --- a restart applies them: the reason is gone
$n2->restart;
wait_streaming($etcd, 'node2');
is($n2->safe_psql('postgres', 'SHOW max_connections'), '31', 'node2 restarted with max_connections 31');
wait_ok(sub { my $j = member_json($etcd, 'node2'); $j && !exists $j->{pending_restart_reason} && !$j->{pending_restart} },
	'after the restart: no pending_restart(_reason) in the member key', timeout => 20);
my $after = patroni_doc($n2);
ok(!exists $after->{pending_restart_reason} && !exists $after->{pending_restart},
	'after the restart: none in GET /patroni');

# --- a setting removed from the files waits for its default
$n2->safe_psql('postgres', 'ALTER SYSTEM RESET max_connections');
$n2->reload;
$doc = wait_for(sub { my $d = patroni_doc($n2); $d->{pending_restart_reason} ? $d : undef },
	timeout => 20, what => 'a reason after ALTER SYSTEM RESET');
is_deeply($doc && $doc->{pending_restart_reason},
	{ max_connections => { old_value => '31', new_value => $old{max_connections} } },
	'RESET: the value postgresql.conf gives back') or diag explain $doc;

done_testing();
