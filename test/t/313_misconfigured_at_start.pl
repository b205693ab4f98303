# A pg_ha.* line in postgresql.conf that does not take effect at server
# start (PostgreSQL only WARNs and keeps the built-in default) must never let
# the node act on that default: the worker refuses to manage the node, which
# stays "misconfigured" and fenced, says which line is wrong, and writes
# nothing to etcd.  The same holds for names pg_ha falls back on
# (cluster_name for an empty pg_ha.cluster).  Issue 9, defect 12.
#
# Reported: the primary of a cluster in namespace /pgx restarted with
# pg_ha.namespace = 'pgx' ran under the default /service and took the leader
# key there while a replica promoted under /pgx: two primaries.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use PostgreSQL::Test::Utils;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Test;

my $ns     = '/pgx';
my $prefix = "$ns/pgtest/";
my $etcd   = PgHa::Etcd->new(members => 1);

# ha_cluster() waits on the default namespace: build the /pgx cluster here.
my $common = $PgHa::Failover::COMMON_CONF;
my $n1 = PgHa::Cluster::new_node(
	etcd       => $etcd,
	name       => 'node1',
	namespace  => $ns,
	ttl        => 5,
	start      => 1,
	extra_conf => $common);
my @nodes = ($n1);
push @nodes,
  PgHa::Cluster::new_replica(name => $_, from => $n1, extra_conf => $common)
  for qw(node2 node3);
my %by_name = map { $_->name => $_ } @nodes;

sub leader { return $etcd->get("${prefix}leader"); }

wait_for(sub { (leader() // '') eq 'node1' },
	timeout => 30, what => "node1 to hold ${prefix}leader", fatal => 1);
for my $name (qw(node2 node3))
{
	wait_for(
		sub {
			my $m = member_json($etcd, $name, namespace => $ns) or return 0;
			return ($m->{role} // '') =~ /replica|standby/
			  && ($m->{replication_state} // $m->{state} // '') =~ /streaming/;
		},
		timeout => 30, what => "$name streaming", fatal => 1);
}
$n1->safe_psql('postgres', 'CREATE TABLE t313 (i int)');
$n1->wait_for_catchup($_, 'replay') for @nodes[1, 2];

# --- probes

sub http_primary
{
	my ($node) = @_;
	my $r = HTTP::Tiny->new(timeout => 3)
	  ->get('http://127.0.0.1:' . $node->api_port . '/primary');
	return $r->{status};
}

sub accepts_insert
{
	my ($node) = @_;
	my ($ok) = try_sql($node, 'INSERT INTO t313 VALUES (1)', timeout => 5);
	return $ok;
}

sub keys_outside_prefix
{
	my $all = $etcd->get_prefix('/');
	return sort grep { index($_, $prefix) != 0 } keys %$all;
}

# --- node1's configuration: the base file plus one case's bad lines

my $conf_file = $n1->data_dir . '/postgresql.conf';
my $base_conf = slurp_file($conf_file);

# Rewrites node1's postgresql.conf with $lines appended, returns the line
# number of the last appended line.
sub set_bad_conf
{
	my ($lines) = @_;
	my $text = $base_conf . "\n# 313: a bad setting\n" . $lines;
	open my $fh, '>', $conf_file or die "$conf_file: $!";
	print $fh $text;
	close $fh;
	my @l = split /\n/, $text, -1;
	pop @l if @l && $l[-1] eq '';
	return scalar @l;
}

# One case: node1 restarted with $lines; what it must say ($why: a regexp
# for the log and last_error, besides "postgresql.conf:<line>").
sub check_case
{
	my (%c) = @_;
	my $case = $c{name};
	my $line = set_bad_conf($c{lines});
	my $log_offset = -s $n1->logfile;
	if ($c{plain_start})
	{
		# PostgreSQL::Test::Cluster starts postgres with --cluster-name,
		# which would override the cluster_name line: start it without.
		$n1->stop('fast');
		PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-D', $n1->data_dir,
			'-l', $n1->logfile, 'start');
		$n1->_update_pid(1);
	}
	else
	{
		$n1->restart;
	}

	# Let the rest of the cluster settle: a leader under /pgx that is not
	# node1 and has finished its promotion.  On a broken node1, this is also
	# the time it needs to act on its defaults.
	my $leader;
	wait_for(
		sub {
			$leader = leader();
			return 0 unless defined $leader && $leader ne 'node1';
			return (in_recovery($by_name{$leader}) // 1) == 0;
		},
		timeout => 40, what => "$case: a leader other than node1 under $ns");
	sleep 2;

	my $st = wait_for(
		sub {
			my $s = eval { $n1->ha_status } or return undef;
			return $s->{state} eq 'misconfigured' ? $s : undef;
		},
		timeout => 10, what => "$case: node1 misconfigured");
	$st //= eval { $n1->ha_status } // {};
	is($st->{state}, 'misconfigured', "$case: node1 is misconfigured");
	like($st->{last_error} // '', qr/postgresql\.conf:$line\b.*$c{why}/,
		"$case: pg_ha.status() names the line and the error");
	ok(!$st->{lease_held}, "$case: node1 holds no lease");
	ok(!accepts_insert($n1), "$case: node1 refuses writes");
	is(http_primary($n1), 503, "$case: node1 answers 503 on /primary");
	is_deeply([ keys_outside_prefix() ], [], "$case: no etcd key outside $prefix");

	my $log = log_since($n1, $log_offset);
	like($log, qr/WARNING:.*postgresql\.conf:$line\b.*$c{why}/,
		"$case: the log names the file, line and error");
	like($log, qr/HINT:.*restart/, "$case: with a hint to fix and restart");

	my @writable = grep { accepts_insert($_) } @nodes;
	is(join(',', map { $_->name } @writable), $leader // '(none)',
		"$case: exactly one node accepts writes, the leader " . ($leader // '(none)'));
	my @primary200 = grep { (http_primary($_) // 0) == 200 } @nodes;
	is(join(',', map { $_->name } @primary200), $leader // '(none)',
		"$case: exactly one node answers 200 on /primary");
	return;
}

# The reported split brain: the leader restarts with the slash missing.
check_case(
	name  => 'namespace without its slash',
	lines => "pg_ha.namespace = 'pgx'\n",
	why   => qr/pg_ha\.namespace/);

# From here node1 is a former primary kept out of the cluster by each bad
# setting in turn; whatever it is, it must neither lead nor write.
check_case(
	name  => 'bad node_name',
	lines => "pg_ha.node_name = 'node/1'\n",
	why   => qr/pg_ha\.node_name/);

check_case(
	name  => 'bad etcd_endpoints',
	lines => "pg_ha.etcd_endpoints = 'ftp://127.0.0.1:2379'\n",
	why   => qr/pg_ha\.etcd_endpoints/);

check_case(
	name  => 'misspelled parameter name',
	lines => "pg_ha.namespce = '$ns'\n",
	why   => qr/pg_ha\.namespce/);

check_case(
	name        => 'cluster_name fallback with a slash',
	lines       => "pg_ha.cluster = ''\ncluster_name = 'sec/members/evil'\n",
	why         => qr/cluster_name/,
	plain_start => 1);

# The record is what the server started with, not what the files say now.
# Crash-restart a node (SIGKILL of its worker: the postmaster reinitialises
# without reading the configuration again) and its worker checks again.
sub crash_restart_worker
{
	my ($node) = @_;
	my $pid = $node->ha_status->{worker_pid} or die 'no worker pid';
	kill 'KILL', $pid;
	wait_for(
		sub {
			my $s = eval { $node->ha_status } or return 0;
			return ($s->{worker_pid} // $pid) != $pid && $s->{state} ne 'starting';
		},
		timeout => 30, what => $node->name . ' worker back after a crash-restart', fatal => 1);
	return $node->ha_status;
}

# node1 still runs on what it was started with: correcting the file does
# not make it usable until the server restarts.
open my $fh, '>', $conf_file or die "$conf_file: $!";
print $fh $base_conf;
close $fh;
my $st = crash_restart_worker($n1);
is($st->{state}, 'misconfigured',
	'a corrected file is not enough: still misconfigured until the server restarts');

# A replica with edits pending a restart (valid or not) is not misconfigured
# by them: it runs with the values it was started with.
# (whichever of node2 and node3 is a replica now: the other one leads)
my ($n3) = grep { (eval { $_->ha_status->{state} } // '') eq 'replica' } ($by_name{node2}, $by_name{node3});
BAIL_OUT('no replica among node2 and node3') unless $n3;
$n3->append_conf('postgresql.conf', "pg_ha.ttl = 7
pg_ha.namespace = 'pending'
");
crash_restart_worker($n3);
$st = wait_for(
	sub { my $s = eval { $n3->ha_status }; $s && $s->{state} eq 'replica' ? $s : undef },
	timeout => 30, what => $n3->name . ' a replica again') // $n3->ha_status;
is($st->{state}, 'replica', 'edits after start pending a restart leave a replica running');
is($st->{last_error}, undef, 'and report nothing');

forget_if_stopped(@nodes);
done_testing();
