
# Metrics: the pg_ha.metrics_listen endpoint (pg_exporter-named families and
# pg_ha_*) and :8008/metrics (patroni_*) parse with promtool on a primary
# and on a replica, carry the expected families and values, stay bounded
# by pg_ha.metrics_table_limit (the chosen tables' figures stay current
# between rankings, a new table is ranked at once), export pg_query_* where
# pg_stat_statements is installed, and are not held up by DDL.

use strict;
use warnings;

use File::Temp qw(tempfile);
use HTTP::Tiny;
use IPC::Run ();
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $promtool = $ENV{PROMTOOL} || 'promtool';
my $have_promtool = system("$promtool --version >/dev/null 2>&1") == 0;

my $etcd = PgHa::Etcd->new(members => 1);
my $pm_port = PostgreSQL::Test::Cluster::get_free_port();
my $primary = new_primary(name => 'node1', etcd => $etcd, ttl => 5,
	extra_conf => "pg_ha.metrics_listen = '127.0.0.1:$pm_port'\n"
	  . "pg_ha.metrics_cache_ttl = 1\npg_ha.metrics_table_limit = 5\n"
	  # only a catalog change can make the collector rank again in this test
	  . "pg_ha.metrics_rank_interval = 3600\n"
	  . "shared_preload_libraries = 'pg_ha,pg_stat_statements'");
$primary->safe_psql('postgres',
	'CREATE EXTENSION pg_stat_statements;'
	. join('', map { "CREATE TABLE t$_ (id int primary key, v text); INSERT INTO t$_ SELECT g, 'x' FROM generate_series(1, $_) g;" } 1 .. 12)
	  . "CREATE DATABASE \"we\"\"ird\ndb\"");
my $rm_port = PostgreSQL::Test::Cluster::get_free_port();
my $replica = new_replica(name => 'node2', from => $primary,
	extra_conf => "pg_ha.metrics_listen = '127.0.0.1:$rm_port'");

my $http = HTTP::Tiny->new(timeout => 5, keep_alive => 0);

sub scrape
{
	my ($port, $path) = @_;
	return $http->get("http://127.0.0.1:$port" . ($path // '/metrics'));
}

# value of the first sample of $name whose labels match $labels_re
sub sample
{
	my ($text, $name, $labels_re) = @_;
	$labels_re //= qr/.*/;
	for my $line (split /\n/, $text)
	{
		next if $line =~ /^#/;
		if ($line =~ /^\Q$name\E(\{([^}]*)\})? (\S+)$/)
		{
			my ($labels, $v) = ($2 // '', $3);
			return $v if $labels =~ $labels_re;
		}
	}
	return undef;
}

sub promtool_ok
{
	my ($text, $what) = @_;
  SKIP:
	{
		skip 'promtool not installed', 1 unless $have_promtool;
		my ($out, $err) = ('', '');
		IPC::Run::run([ $promtool, 'check', 'metrics' ], '<', \$text, '>', \$out, '2>', \$err);
		# exit 0: clean; 3: lint findings only (pg_exporter's names); 1: parse error
		my $rc = $? >> 8;
		ok($rc == 0 || $rc == 3, "$what: promtool check metrics parses it (exit $rc)")
		  or diag("$out$err");
		note("promtool lint for $what:\n$out$err") if $rc == 3;
		unlike("$out$err", qr/error while linting|text format parsing error/i,
			"$what: no parse error from promtool");
	}
}

# The first scrapes may come before the collector's first refresh, or find
# a cache from before the tables existed.
my $p;
wait_ok(sub { $p = scrape($pm_port)->{content}; defined sample($p, 'pg_db_numbackends') },
	'primary: database families appear in the scrape', timeout => 30);
wait_ok(sub { my $c = () = scrape($pm_port)->{content} =~ /^pg_table_n_live_tup\{/mg; $c == 5 },
	'primary: the cache refreshes and shows the new tables', timeout => 30);
my $r = scrape($pm_port);
is($r->{status}, 200, 'primary: GET /metrics is 200');
is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
	'primary: Content-Type of text format 0.0.4');
$p = $r->{content};
promtool_ok($p, 'primary metrics');

is(sample($p, 'pg_up'),          1, 'primary: pg_up 1');
is(sample($p, 'pg_in_recovery'), 0, 'primary: pg_in_recovery 0');
ok(sample($p, 'pg_lsn') > 0, 'primary: pg_lsn');
ok(sample($p, 'pg_uptime') >= 0, 'primary: pg_uptime');
ok(defined sample($p, 'pg_meta_info', qr/cluster_id="\d+"/), 'primary: pg_meta_info with cluster_id');
ok(sample($p, 'pg_setting_max_connections') > 0, 'primary: pg_setting_max_connections');
ok(defined sample($p, 'pg_db_xact_commit', qr/datname="postgres"/), 'primary: pg_db_xact_commit{datname="postgres"}');
ok(defined sample($p, 'pg_db_age', qr/datname="postgres"/), 'primary: pg_db_age');
ok(defined sample($p, 'pg_activity_count', qr/datname="postgres",state="active"/),
	'primary: pg_activity_count{datname,state}');
ok(defined sample($p, 'pg_lock_count', qr/mode="AccessShareLock"/), 'primary: pg_lock_count{datname,mode}');
ok(defined sample($p, 'pg_bgwriter_buffers_alloc'), 'primary: pg_bgwriter_buffers_alloc');
ok(defined sample($p, 'pg_checkpoint_checkpoint_lsn'), 'primary: pg_checkpoint_checkpoint_lsn');
ok(defined sample($p, 'pg_xact_xmin'), 'primary: pg_xact_xmin');
ok(defined sample($p, 'pg_archiver_finish_count'), 'primary: pg_archiver_finish_count');
ok(defined sample($p, 'pg_wal_bytes'), 'primary: pg_wal_bytes');
ok(defined sample($p, 'pg_size_bytes', qr/datname="postgres"/), 'primary: pg_size_bytes{datname}');
ok(defined sample($p, 'pg_db_numbackends', qr/datname="we\\"ird\\ndb"/),
	'primary: label values are escaped (quote and newline in a database name)');
wait_ok(sub { defined sample(scrape($pm_port)->{content}, 'pg_repl_replay_diff', qr/appname="node2"/) },
	'primary: pg_repl_replay_diff{appname="node2"}', timeout => 30);
is(sample($p, 'pg_ha_is_leader'), 1, 'primary: pg_ha_is_leader 1');
ok(sample($p, 'pg_ha_lease_remaining_seconds') > 0, 'primary: pg_ha_lease_remaining_seconds > 0');
is(sample($p, 'pg_ha_state', qr/state="leader"/), 1, 'primary: pg_ha_state{state="leader"} 1');
ok(defined sample($p, 'pg_ha_etcd_requests_total'), 'primary: pg_ha_etcd_requests_total');
ok(defined sample($p, 'pg_ha_scrape_duration_seconds'), 'primary: pg_ha_scrape_duration_seconds');
ok(defined sample($p, 'pg_ha_archive_archived_total'), 'primary: pg_ha_archive_archived_total');
ok(defined sample($p, 'pg_ha_metrics_refresh_duration_seconds'), 'primary: pg_ha_metrics_refresh_duration_seconds');

# top-N: 12 tables, limit 5
my $ntables = () = $p =~ /^pg_table_n_live_tup\{/mg;
is($ntables, 5, 'pg_ha.metrics_table_limit bounds pg_table_* to 5 tables');

# The per-table figures are pg_stat_user_tables' and pg_statio_user_tables'.
# t12 (most rows) is among the chosen five.
my $t12 = qr/relname="public\.t12"/;
my $view = sub {
	my ($col) = @_;
	return $primary->safe_psql('postgres',
		"SELECT $col FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)"
		  . " WHERE s.relname = 't12'");
};
$primary->safe_psql('postgres', 'SELECT count(*) FROM t12; SELECT * FROM t12 WHERE id = 3');
for my $m ([ 'seq_scan', 's.seq_scan' ], [ 'idx_scan', 'coalesce(s.idx_scan, 0)' ],
	[ 'n_tup_ins', 's.n_tup_ins' ], [ 'n_live_tup', 's.n_live_tup' ],
	[ 'heap_blks_hit', 'io.heap_blks_hit' ], [ 'idx_blks_hit', 'coalesce(io.idx_blks_hit, 0)' ])
{
	my ($family, $col) = @$m;
	my ($got, $want);
	wait_ok(sub {
		$want = $view->($col);
		$got = sample(scrape($pm_port)->{content}, "pg_table_$family", $t12);
		defined $got && $got == $want },
		"pg_table_$family of t12 equals the statistics views ($want)", timeout => 30)
	  or diag("scrape has " . ($got // 'no sample'));
}

# Between rankings (rank interval 1 h here) the chosen tables' counters
# stay current: reading t12 moves its seq_scan in the next scrapes.
my $before = sample(scrape($pm_port)->{content}, 'pg_table_seq_scan', $t12);
$primary->safe_psql('postgres', 'SELECT count(*) FROM t12') for 1 .. 3;
wait_ok(sub { sample(scrape($pm_port)->{content}, 'pg_table_seq_scan', $t12) >= $before + 3 },
	'pg_table_seq_scan of a chosen table follows new scans between rankings', timeout => 30);

# A table created after the ranking is ranked at once (catalog change),
# not an hour later: t13 has the most rows, so it enters the top 5.
$primary->safe_psql('postgres',
	"CREATE TABLE t13 (id int primary key); INSERT INTO t13 SELECT generate_series(1, 500)");
wait_ok(sub { defined sample(scrape($pm_port)->{content}, 'pg_table_n_live_tup', qr/relname="public\.t13"/) },
	'a new busy table appears without waiting for pg_ha.metrics_rank_interval', timeout => 30);
my $n5 = () = scrape($pm_port)->{content} =~ /^pg_table_n_live_tup\{/mg;
is($n5, 5, 'still 5 tables exported');

# pg_stat_statements: pg_query_* per database and queryid (the top 5 by
# execution time here: the probe sleeps to be among them)
$primary->safe_psql('postgres', 'SELECT pg_sleep(0.3) AS pg_ha_metrics_probe') for 1 .. 3;
my $probe_id = $primary->safe_psql('postgres',
	"SELECT queryid FROM pg_stat_statements WHERE query LIKE '%pg_ha_metrics_probe%' LIMIT 1");
wait_ok(sub { (sample(scrape($pm_port)->{content}, 'pg_query_calls',
	qr/datname="postgres",query="\Q$probe_id\E"/) // 0) >= 3 },
	'pg_query_calls counts a statement by queryid (pg_stat_statements)', timeout => 30);

# exactly one TYPE line per family, families contiguous
my (%seen, $last, $dup);
for my $line (split /\n/, $p)
{
	next if $line =~ /^#/;
	my ($name) = $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)/;
	$dup = $name if $seen{$name} && $last ne $name;
	$seen{$name} = 1;
	$last = $name;
}
ok(!$dup, 'families are contiguous' . ($dup ? " ($dup is split)" : ''));

# --- replica
my $q;
wait_ok(sub { $q = scrape($rm_port)->{content}; defined sample($q, 'pg_recv_flush_lsn') },
	'replica: database families appear in the scrape', timeout => 30);
promtool_ok($q, 'replica metrics');
is(sample($q, 'pg_up'),          1, 'replica: pg_up 1');
is(sample($q, 'pg_in_recovery'), 1, 'replica: pg_in_recovery 1');
ok(defined sample($q, 'pg_lag'), 'replica: pg_lag');
ok(defined sample($q, 'pg_recv_flush_lsn'), 'replica: pg_recv_flush_lsn');
is(sample($q, 'pg_ha_is_leader'), 0, 'replica: pg_ha_is_leader 0');

# --- patroni_* on the API port
for my $node ([ $primary, 'primary', 1 ], [ $replica, 'replica', 0 ])
{
	my ($n, $what, $isp) = @$node;
	my $pr = scrape($n->api_port);
	is($pr->{status}, 200, "$what: GET :api/metrics is 200");
	promtool_ok($pr->{content}, "$what patroni metrics");
	is(sample($pr->{content}, 'patroni_primary', qr/scope="pgtest"/), $isp, "$what: patroni_primary $isp");
	is(sample($pr->{content}, 'patroni_replica'), 1 - $isp, "$what: patroni_replica");
	is(sample($pr->{content}, 'patroni_postgres_running'), 1, "$what: patroni_postgres_running 1");
	ok(sample($pr->{content}, 'patroni_dcs_last_seen') > 0, "$what: patroni_dcs_last_seen");
	for my $f (qw(patroni_version patroni_postmaster_start_time patroni_standby_leader
		patroni_xlog_paused patroni_postgres_server_version patroni_cluster_unlocked
		patroni_failsafe_mode_is_active patroni_pending_restart patroni_is_paused
		patroni_postgres_timeline patroni_xlog_location))
	{
		ok(defined sample($pr->{content}, $f), "$what: $f present");
	}
}

# --- DDL holding an ACCESS EXCLUSIVE lock does not hold up scrapes
my $bg = $primary->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe('LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE');
my $t0 = now();
for (1 .. 5)
{
	my $s = scrape($pm_port);
	is($s->{status}, 200, "scrape $_ while a table is locked ACCESS EXCLUSIVE: 200");
	sleep 1;
}
cmp_ok(elapsed_since($t0), '<', 10, 'scrapes under DDL are not delayed');
my $refreshes = sample(scrape($pm_port)->{content}, 'pg_ha_metrics_refreshes_total');
sleep 2;
my $s = scrape($pm_port)->{content};
cmp_ok(sample($s, 'pg_ha_metrics_refreshes_total'), '>', $refreshes,
	'the collector keeps refreshing while the lock is held');
$bg->query_safe('COMMIT');
$bg->quit;

# --- an unscraped cache does not refresh; metrics port answers 404 elsewhere
is(scrape($pm_port, '/nope')->{status}, 404, 'metrics port: unknown path -> 404');

$replica->stop;
$primary->stop;
done_testing();
