
# The metrics collector runs SQL triggered by an unauthenticated
# GET /metrics.  A plain role must not be able to turn that into code run
# with the collector's privileges: an aggregate public.count(integer) (an
# exact-type match beats pg_catalog.count("any") on the default
# search_path) once made its creator superuser.  Both variants of the
# attack from issue 11 run here and must fail, with the metrics still
# served:
#   1. CREATE on schema public granted to PUBLIC (the pre-PG15 default,
#      kept by pg_upgrade), any role;
#   2. PG15's default ACLs, pg_ha.metrics_database an application database,
#      whose owner owns its schema public.
# The collector runs as pg_ha.metrics_role (not a superuser, member of
# pg_monitor) and refuses to run as a superuser.  Label sets are unique
# (overloaded functions, dotted schema and table names).

use strict;
use warnings;

use HTTP::Tiny;
use Test::More;
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my $node = new_primary(name => 'node1', etcd => $etcd, ttl => 5,
	# not a fencing test: writes right after the restarts below
	extra_conf => "pg_ha.metrics_cache_ttl = 1\ntrack_functions = 'all'\npg_ha.fencing = off\n");
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);

sub scrape
{
	my $r = $http->get('http://127.0.0.1:' . $node->metrics_port . '/metrics');
	return $r->{status} == 200 ? $r->{content} : '';
}

sub sample
{
	my ($text, $name, $labels_re) = @_;
	$labels_re //= qr/.*/;
	for my $line (split /\n/, $text)
	{
		next if $line !~ /^\Q$name\E(\{([^}]*)\})? (\S+)$/;
		my ($labels, $v) = ($2 // '', $3);
		return $v if $labels =~ $labels_re;
	}
	return undef;
}

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

# the attack of the issue, as $role in $db: an aggregate count(integer) whose
# transition function makes its caller's victim a superuser, an operator to
# reset cached plans, then scrapes
sub attack
{
	my ($db, $role) = @_;
	$node->safe_psql($db, qq{
SET ROLE $role;
CREATE FUNCTION public.evil_sfunc(s bigint, v integer) RETURNS bigint
LANGUAGE plpgsql AS \$\$ BEGIN ALTER ROLE $role SUPERUSER; RETURN s + 1; END \$\$;
CREATE AGGREGATE public.count(integer) (sfunc = public.evil_sfunc, stype = bigint, initcond = '0');
CREATE FUNCTION public.evil_cat(name, name) RETURNS text
LANGUAGE plpgsql AS \$\$ BEGIN ALTER ROLE $role SUPERUSER; RETURN \$1::text || \$2::text; END \$\$;
CREATE OPERATOR public.|| (leftarg = name, rightarg = name, function = public.evil_cat);
CREATE TABLE public.bait (id int PRIMARY KEY);
INSERT INTO public.bait VALUES (1);
CREATE OPERATOR public.=== (leftarg = int, rightarg = int, function = int4eq);
});
	# several refreshes (cache ttl 1 s): the plans are prepared again
	for (1 .. 4)
	{
		scrape();
		sleep 1;
	}
}

sub metrics_work
{
	my ($what) = @_;
	my $p;
	wait_ok(sub { $p = scrape(); defined sample($p, 'pg_activity_count', qr/state="active"/) },
		"$what: pg_activity_count still exported", timeout => 30);
	ok(defined sample($p, 'pg_lock_count', qr/mode="AccessShareLock"/), "$what: pg_lock_count still exported");
	ok(defined sample($p, 'pg_db_numbackends'), "$what: pg_db_numbackends still exported");
	return $p;
}

metrics_work('before the attacks');

# --- variant 1: CREATE on public for everyone
$node->safe_psql('postgres', 'GRANT CREATE ON SCHEMA public TO PUBLIC; CREATE ROLE mallory LOGIN');
attack('postgres', 'mallory');
is(is_superuser('mallory'), 'f', 'variant 1 (CREATE on public granted to PUBLIC): mallory is not superuser');
metrics_work('variant 1');
is(sample(scrape(), 'pg_ha_metrics_collector_up'), 1, 'variant 1: pg_ha_metrics_collector_up 1');

my (undef, $role) = $node->psql('postgres', 'SHOW pg_ha.metrics_role');
is($role, 'pgha_monitor', 'pg_ha.metrics_role defaults to pgha_monitor');
is(is_superuser($role), 'f', 'CREATE EXTENSION created the collector role, not a superuser');
is(scalar(($node->psql('postgres', "SELECT pg_has_role('$role', 'pg_monitor', 'USAGE')"))[1]), 't',
	'the collector role is a member of pg_monitor');
is($node->safe_psql('postgres',
	"SELECT usename FROM pg_stat_activity WHERE backend_type = 'pg_ha metrics collector'"),
	$role, 'the collector is connected as the collector role');

# --- variant 2: PG15 default ACLs, the metrics database is an application
# database whose owner attacks
$node->safe_psql('postgres', 'CREATE ROLE appowner LOGIN; CREATE DATABASE appdb OWNER appowner');
$node->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.metrics_database = 'appdb'");
$node->restart;
attack('appdb', 'appowner');
is(is_superuser('appowner'), 'f', 'variant 2 (application database owner): appowner is not superuser');
metrics_work('variant 2');
is($node->safe_psql('postgres',
	"SELECT datname FROM pg_stat_activity WHERE backend_type = 'pg_ha metrics collector'"),
	'appdb', 'variant 2: the collector is connected to appdb');

# --- unique label sets: overloaded functions, "a.b"."c" and "a"."b.c"
$node->safe_psql('appdb', q{
CREATE SCHEMA app;
CREATE FUNCTION app.f(int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
CREATE FUNCTION app.f(text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 2; END $$;
SELECT app.f(1), app.f('x');
CREATE SCHEMA "a.b"; CREATE SCHEMA a;
CREATE TABLE "a.b"."c" (id int PRIMARY KEY); CREATE TABLE a."b.c" (id int PRIMARY KEY);
CREATE INDEX i ON "a.b"."c" (id); CREATE INDEX i ON a."b.c" (id);
INSERT INTO "a.b"."c" VALUES (1); INSERT INTO a."b.c" VALUES (1);
SELECT * FROM "a.b"."c" WHERE id = 1; SELECT * FROM a."b.c" WHERE id = 1;
});
my $p;
wait_ok(sub {
	$p = scrape();
	my @f = grep { /^pg_func_calls\{[^}]*funcname="app\.f"/ } split /\n/, $p;
	my @t = grep { /^pg_table_relid\{[^}]*relname="a\.b\.c"/ } split /\n/, $p;
	@f >= 2 && @t >= 2 },
	'both overloads of app.f and both tables are exported', timeout => 30);
my (%seen, @dups);
for my $line (split /\n/, $p)
{
	next if $line =~ /^#/ || $line !~ /^(\S+) \S+$/;
	push @dups, $1 if $seen{$1}++;
}
is_deeply(\@dups, [], 'no two samples share a name and label set');
ok(defined sample($p, 'pg_func_calls', qr/schemaname="app",funcname="app\.f",args="integer"/)
	  && defined sample($p, 'pg_func_calls', qr/schemaname="app",funcname="app\.f",args="text"/),
	'pg_func_* carry schemaname and the argument types (args)');
ok(defined sample($p, 'pg_table_relid', qr/schemaname="a\.b",relname="a\.b\.c"/)
	  && defined sample($p, 'pg_table_relid', qr/schemaname="a",relname="a\.b\.c"/),
	'pg_table_* carry schemaname besides the pg_exporter relname');

# --- the collector refuses to run as a superuser, and says so in /metrics
$node->safe_psql('postgres', "ALTER ROLE $role SUPERUSER");
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_up') // -1) == 0 },
	'a superuser collector role: pg_ha_metrics_collector_up 0', timeout => 30);
is(sample(scrape(), 'pg_ha_metrics_collector_error', qr/reason="role_is_superuser"/), 1,
	'pg_ha_metrics_collector_error{reason="role_is_superuser"} 1');
ok(!defined sample(scrape(), 'pg_activity_count'), 'no database families while it refuses');
ok($node->log_contains(qr/pg_ha: metrics collector role "$role" is a superuser/),
	'the refusal is logged');
$node->safe_psql('postgres', "ALTER ROLE $role NOSUPERUSER");
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_up') // -1) == 1 },
	'NOSUPERUSER again: the collector resumes', timeout => 30);
metrics_work('after the refusal');

# --- and without pg_monitor (its figures would cover its own sessions only)
$node->safe_psql('postgres', "REVOKE pg_monitor FROM $role");
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_error', qr/reason="role_not_pg_monitor"/) // 0) == 1 },
	'a role outside pg_monitor: pg_ha_metrics_collector_error{reason="role_not_pg_monitor"} 1', timeout => 30);
$node->safe_psql('postgres', "GRANT pg_monitor TO $role");
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_up') // -1) == 1 },
	'GRANT pg_monitor again: the collector resumes', timeout => 30);

# --- a missing role: the collector does not connect, and says so
$node->safe_psql('postgres', "ALTER SYSTEM SET pg_ha.metrics_role = 'nosuchrole'");
$node->restart;
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_error', qr/reason="connect_failed"/) // 0) == 1 },
	'a missing role: pg_ha_metrics_collector_error{reason="connect_failed"} 1', timeout => 30);
is(sample(scrape(), 'pg_ha_metrics_collector_up'), 0, 'a missing role: pg_ha_metrics_collector_up 0');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ha metrics collector'"),
	'0', 'no collector connected as anyone else');
ok($node->log_contains(qr/pg_ha: metrics collector could not connect to database "appdb" as role "nosuchrole"/),
	'the connection failure is logged with the role');
$node->safe_psql('postgres', 'CREATE ROLE nosuchrole LOGIN IN ROLE pg_monitor');
wait_ok(sub { (sample(scrape(), 'pg_ha_metrics_collector_up') // -1) == 1 },
	'once the role exists the collector connects', timeout => 90);

$node->stop;
done_testing();
