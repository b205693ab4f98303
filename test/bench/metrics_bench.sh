#!/usr/bin/env bash
# test/bench/metrics_bench.sh - metrics scrape cost: pg_ha vs postgres_exporter.
#
# One postgres with pg_ha; prometheus-postgres-exporter (Debian 0.11.1)
# connected to the same database, with its default collectors and, second
# variant, with the per-table queries of its example queries.yaml.  For 10
# and 2,000 tables (each with a primary key and a few rows) it scrapes each
# exporter $SCRAPES times, $INTERVAL s apart, and prints per scrape: wall
# latency, CPU of everything that worked for it (pg_ha: the listener and the
# metrics collector with its backend; postgres_exporter: its process and its
# postgres backends), samples exported, and the ratios.
#
# pg_ha serves scrapes from a cache; with pg_ha.metrics_cache_ttl = 1 and
# scrapes 1.1 s apart every scrape is followed by a refresh, so the CPU
# column includes all of pg_ha's SQL.  The refresh's own duration is shown
# too (pg_ha_metrics_refresh_duration_seconds).
#
#   test/bench/metrics_bench.sh                # as root or as the postgres user
#   TABLES="10 2000" SCRAPES=20 test/bench/metrics_bench.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
bench_as_user "$@"

TABLES=${TABLES:-10 2000}
SCRAPES=${SCRAPES:-20}
INTERVAL=${INTERVAL:-1.1}
EXPORTER=${EXPORTER:-prometheus-postgres-exporter}
QUERIES=${QUERIES:-/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml}

for c in "$EXPORTER" curl; do command -v "$c" >/dev/null || die "$c not found"; done

bench_workdir
PORT=$((BASE + 2)); API=$((BASE + 3)); METRICS=$((BASE + 4)); EXP=$((BASE + 5)); EXP2=$((BASE + 6))

log "postgres with pg_ha on $PORT, metrics on $METRICS (no etcd needed: fencing off)"
start_pg_ha node1 "$PORT" "$API" "$METRICS" 1 "pg_ha.fencing = off
pg_ha.metrics_cache_ttl = 1
max_connections = 50
max_locks_per_transaction = 1024"
PM=$(pm_pid "$W/pg_node1")

DSN="host=$W port=$PORT user=postgres dbname=postgres sslmode=disable"
log "postgres_exporter $("$EXPORTER" --version 2>&1 | awk 'NR==1{print $3}') on $EXP (default collectors)"
DATA_SOURCE_NAME="$DSN" "$EXPORTER" --web.listen-address="127.0.0.1:$EXP" >"$W/exporter.log" 2>&1 &
EXP_PID=$!
PIDS+=("$EXP_PID")
disown "$EXP_PID" 2>/dev/null || true
EXP2_PID=""
if [ -r "$QUERIES" ]; then
	# its example per-table queries, without pg_stat_statements (not installed)
	awk '/^[a-z_]+:/ { skip = ($1 == "pg_stat_statements:") } !skip' "$QUERIES" >"$W/queries.yaml"
	log "postgres_exporter on $EXP2 with per-table queries ($QUERIES)"
	DATA_SOURCE_NAME="$DSN" "$EXPORTER" --web.listen-address="127.0.0.1:$EXP2" \
		--extend.query-path="$W/queries.yaml" >"$W/exporter2.log" 2>&1 &
	EXP2_PID=$!
	PIDS+=("$EXP2_PID")
	disown "$EXP2_PID" 2>/dev/null || true
fi
wait_for 30 is_200 "http://127.0.0.1:$EXP/metrics" || die "postgres_exporter did not start"

# the collector connects as pg_ha.metrics_role, which CREATE EXTENSION creates
psql_at "$PORT" "CREATE EXTENSION pg_ha" >/dev/null || die "CREATE EXTENSION pg_ha failed"
collector_up() { curl -s "http://127.0.0.1:$METRICS/metrics" | grep -q '^pg_ha_metrics_collector_up 1$'; }
wait_for 90 collector_up || die "the pg_ha metrics collector did not connect"

LISTENER=$(child_pid "$PM" "pg_ha http")
COLLECTOR=$(child_pid "$PM" "pg_ha metrics collector")
[ -n "$LISTENER" ] && [ -n "$COLLECTOR" ] || die "pg_ha listener/collector not found"

make_tables() {
	local n=$1
	local PGOPTIONS='-c client_min_messages=warning'
	export PGOPTIONS
	psql_at "$PORT" "DROP SCHEMA IF EXISTS bench CASCADE" >/dev/null
	psql_at "$PORT" "CREATE SCHEMA bench" >/dev/null
	psql_at "$PORT" "DO \$\$ BEGIN FOR i IN 1..$n LOOP
		EXECUTE format('CREATE TABLE bench.t%s (id int PRIMARY KEY, v text)', i);
		EXECUTE format('INSERT INTO bench.t%s SELECT g, ''x'' FROM generate_series(1, 5) g', i);
		END LOOP; END \$\$" >/dev/null
	psql_at "$PORT" "ANALYZE" >/dev/null
}

# backends of a client, by application_name pattern or by "not ours"
exporter_backends() {
	psql_at "$PORT" "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'
		AND pid <> pg_backend_pid() AND application_name NOT LIKE 'pg_ha%' AND application_name <> 'psql'"
}

# measure NAME URL PIDS...: prints "latency_ms cpu_ms_per_scrape samples bytes"
measure() {
	local name=$1 url=$2; shift 2
	local c0 c1 t total=0 i samples bytes
	curl -s -o /dev/null "$url"; sleep "$INTERVAL"; curl -s -o /dev/null "$url"   # warm up
	sleep "$INTERVAL"
	c0=$(cpu_us "$@")
	for i in $(seq "$SCRAPES"); do
		t=$(curl -s -o "$W/scrape_$name.txt" -w '%{time_total}' "$url")
		total=$(awk -v a="$total" -v b="$t" 'BEGIN { print a + b }')
		sleep "$INTERVAL"
	done
	c1=$(cpu_us "$@")
	samples=$(grep -vc '^#' "$W/scrape_$name.txt" || true)
	bytes=$(wc -c <"$W/scrape_$name.txt")
	awk -v t="$total" -v n="$SCRAPES" -v c="$((c1 - c0))" -v s="$samples" -v b="$bytes" \
		'BEGIN { printf "%.2f %.2f %d %d\n", t / n * 1000, c / n / 1000, s, b }'
}

printf '\n%s cores, %s scrapes %ss apart per row\n' "$(nproc)" "$SCRAPES" "$INTERVAL"
printf '%-7s %-28s %12s %14s %9s %9s\n' tables exporter latency_ms cpu_ms/scrape samples bytes
for n in $TABLES; do
	log "creating $n tables"
	make_tables "$n"

	read -r a_lat a_cpu a_s a_b < <(measure pg_ha "http://127.0.0.1:$METRICS/metrics" \
		"$LISTENER" "$COLLECTOR")
	refresh=$(awk '/^pg_ha_metrics_refresh_duration_seconds / { printf "%.1f", $2 * 1000 }' "$W/scrape_pg_ha.txt")
	printf '%-7s %-28s %12s %14s %9s %9s\n' "$n" "pg_ha (refresh ${refresh}ms)" "$a_lat" "$a_cpu" "$a_s" "$a_b"

	# the same without per-table families, for a like-for-like sample count
	psql_at "$PORT" "ALTER SYSTEM SET pg_ha.metrics_table_limit = 0" >/dev/null
	psql_at "$PORT" "SELECT pg_reload_conf()" >/dev/null
	sleep 1
	read -r z_lat z_cpu z_s z_b < <(measure pg_ha0 "http://127.0.0.1:$METRICS/metrics" \
		"$LISTENER" "$COLLECTOR")
	psql_at "$PORT" "ALTER SYSTEM RESET pg_ha.metrics_table_limit" >/dev/null
	psql_at "$PORT" "SELECT pg_reload_conf()" >/dev/null
	refresh=$(awk '/^pg_ha_metrics_refresh_duration_seconds / { printf "%.1f", $2 * 1000 }' "$W/scrape_pg_ha0.txt")
	printf '%-7s %-28s %12s %14s %9s %9s\n' "$n" "pg_ha table_limit=0 (${refresh}ms)" "$z_lat" "$z_cpu" "$z_s" "$z_b"

	read -r b_lat b_cpu b_s b_b < <(measure exporter "http://127.0.0.1:$EXP/metrics" \
		"$EXP_PID" $(exporter_backends))
	printf '%-7s %-28s %12s %14s %9s %9s\n' "$n" "postgres_exporter" "$b_lat" "$b_cpu" "$b_s" "$b_b"
	printf '        ratio vs pg_ha: latency %s lower, CPU %s lower; vs pg_ha table_limit=0: latency %s, CPU %s\n' \
		"$(ratio "$b_lat" "$a_lat")" "$(ratio "$b_cpu" "$a_cpu")" "$(ratio "$b_lat" "$z_lat")" "$(ratio "$b_cpu" "$z_cpu")"

	if [ -n "$EXP2_PID" ]; then
		read -r c_lat c_cpu c_s c_b < <(measure exporter2 "http://127.0.0.1:$EXP2/metrics" \
			"$EXP2_PID" $(exporter_backends))
		printf '%-7s %-28s %12s %14s %9s %9s\n' "$n" "postgres_exporter+tables" "$c_lat" "$c_cpu" "$c_s" "$c_b"
		printf '        ratio vs pg_ha: latency %s lower, CPU %s lower\n' "$(ratio "$c_lat" "$a_lat")" "$(ratio "$c_cpu" "$a_cpu")"
	fi
done
# The CPU of the collector's backend is the collector's own (it is a
# background worker running its SQL in-process).  exporter_backends() counts
# the backends of both exporters, so each exporter row includes the idle
# other's backend (negligible).
