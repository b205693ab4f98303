#!/usr/bin/env bash
# test/bench/footprint_bench.sh - what pg_ha costs at rest, against Patroni.
#
# Side by side on this machine, each with its own etcd so requests can be
# counted apart (etcd's grpc_server_started_total):
#   - pg_ha: a 3-node cluster (primary + 2 pg_basebackup replicas), ttl 10;
#   - Patroni 3.0.2: a 3-node cluster, first with its defaults (ttl 30,
#     loop_wait 10, retry_timeout 10), then with ttl 10 (loop_wait 2,
#     retry_timeout 3: Patroni needs ttl >= loop_wait + 2 * retry_timeout).
# For each: etcd requests per second per node over an idle window, the
# memory of the HA processes (pg_ha: its background workers; Patroni: its
# python process) as RSS and PSS, and the time from starting the primary
# (an initialised, cleanly stopped node) to its leader key in etcd.
#
#   test/bench/footprint_bench.sh              # as root or as postgres
#   WINDOW=120 test/bench/footprint_bench.sh
#
# Not part of `make installcheck`.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
bench_as_user "$@"

WINDOW=${WINDOW:-60}
PATRONI=${PATRONI:-/usr/bin/patroni}
for c in etcd etcdctl curl /usr/bin/python3 "$PATRONI"; do
	command -v "$c" >/dev/null || die "$c not found"
done
bench_workdir
export ETCDCTL_API=3

# total gRPC calls an etcd has started (the JSON gateway goes through gRPC)
etcd_calls() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^grpc_server_started_total/ { s += $2 } END { print s + 0 }'; }
leader_of() { etcdctl --endpoints "http://127.0.0.1:$1" get --print-value-only "$2" 2>/dev/null; }
now_ms() { date +%s%3N; }
# "rss_kB pss_kB" summed over PIDs
mem_of() {
	local rss=0 pss=0 p
	for p in "$@"; do
		[ -r "/proc/$p/smaps_rollup" ] || continue
		rss=$((rss + $(awk '/^Rss:/ { print $2 }' "/proc/$p/smaps_rollup")))
		pss=$((pss + $(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup")))
	done
	echo "$rss $pss"
}
# seconds from now until etcd key $2 at etcd $1 equals $3 (bounded)
time_to_leader() {
	local t0=$1 port=$2 key=$3 want=$4 i
	for i in $(seq 1 3000); do
		[ "$(leader_of "$port" "$key")" = "$want" ] && { echo $(( $(now_ms) - t0 )); return 0; }
		sleep 0.01
	done
	echo "timeout"
}

# ---------------------------------------------------------------- pg_ha
E1=$BASE; E1P=$((BASE + 1))
log "pg_ha: etcd on $E1, 3 nodes, ttl 10"
start_etcd "$E1" "$E1P"
etcd1_pid=${PIDS[-1]}
P1=$((BASE + 10))
start_pg_ha n1 "$P1" $((BASE + 11)) $((BASE + 12)) "$E1" "pg_ha.ttl = 10
wal_log_hints = on"
wait_for 30 test "$(leader_of "$E1" /pg_ha_bench/bench_n1/leader)" = n1 || die "pg_ha leader key never appeared"
psql_at "$P1" "CREATE EXTENSION pg_ha" >/dev/null
"$PGBIN/pg_ctl" -D "$W/pg_n1" -m fast -w stop >/dev/null
t0=$(now_ms)
"$PGBIN/pg_ctl" -D "$W/pg_n1" -l "$W/n1.log" -w start >/dev/null
pgha_start_ms=$(time_to_leader "$t0" "$E1" /pg_ha_bench/bench_n1/leader n1)
for i in 2 3; do
	port=$((BASE + 10 * i))
	"$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$P1" -D "$W/pg_n$i" -R -X stream >/dev/null
	cat >>"$W/pg_n$i/postgresql.conf" <<EOF
port = $port
pg_ha.node_name = 'n$i'
pg_ha.connect_address = '127.0.0.1:$port'
pg_ha.api_listen = '127.0.0.1:$((port + 1))'
pg_ha.metrics_listen = '127.0.0.1:$((port + 2))'
EOF
	"$PGBIN/pg_ctl" -D "$W/pg_n$i" -l "$W/n$i.log" -w start >/dev/null
done
sleep 5
a=$(etcd_calls "$E1"); sleep "$WINDOW"; b=$(etcd_calls "$E1")
pgha_rps=$(awk -v d=$((b - a)) -v w="$WINDOW" 'BEGIN { printf "%.3f", d / w / 3 }')
pgha_pids=()
for i in 1 2 3; do
	pm=$(pm_pid "$W/pg_n$i")
	for pat in "pg_ha worker" "pg_ha http" "pg_ha metrics" "pg_ha archive"; do
		for p in $(ps -o pid=,args= --ppid "$pm" | awk -v pat="$pat" 'index($0, pat) { print $1 }'); do pgha_pids+=("$p"); done
	done
done
read -r pgha_rss pgha_pss < <(mem_of "${pgha_pids[@]}")
for i in 1 2 3; do "$PGBIN/pg_ctl" -D "$W/pg_n$i" -m immediate stop >/dev/null 2>&1 || true; done
kill "$etcd1_pid"; wait "$etcd1_pid" 2>/dev/null || true

# ---------------------------------------------------------------- Patroni
# run_patroni TAG TTL LOOP_WAIT RETRY: sets R_RPS R_RSS R_PSS R_START
run_patroni() {
	local tag=$1 ttl=$2 loop=$3 retry=$4 e=$((BASE + 100)) ep=$((BASE + 101)) i pids=() start_ms a b etcd_pid
	rm -rf "$W/etcd"
	start_etcd "$e" "$ep"
	etcd_pid=${PIDS[-1]}
	for i in 1 2 3; do
		local port=$((BASE + 110 + 10 * i)) api=$((BASE + 111 + 10 * i))
		write_patroni_yml "$W/patroni_$tag$i.yml" "p$i" "$port" "$api" "$e" "$W/pg_pat_$tag$i" "$ttl" "$loop" "$retry"
	done
	/usr/bin/python3 "$PATRONI" "$W/patroni_${tag}1.yml" >"$W/patroni_${tag}1.log" 2>&1 &
	local p1=$!
	PIDS+=("$p1")
	wait_for 90 is_200 "http://127.0.0.1:$((BASE + 121))/primary" || die "Patroni primary never came up"
	# restart the primary alone: the time from start to its leader key
	kill -TERM "$p1"; wait "$p1" 2>/dev/null || true
	wait_for 30 test -z "$(leader_of "$e" /patroni_bench/bench/leader)" || true
	local t0
	t0=$(now_ms)
	/usr/bin/python3 "$PATRONI" "$W/patroni_${tag}1.yml" >>"$W/patroni_${tag}1.log" 2>&1 &
	p1=$!
	PIDS+=("$p1")
	start_ms=$(time_to_leader "$t0" "$e" /patroni_bench/bench/leader p1)
	pids=("$p1")
	for i in 2 3; do
		/usr/bin/python3 "$PATRONI" "$W/patroni_$tag$i.yml" >"$W/patroni_$tag$i.log" 2>&1 &
		pids+=($!)
		PIDS+=($!)
	done
	for i in 2 3; do
		wait_for 120 is_200 "http://127.0.0.1:$((BASE + 111 + 10 * i))/replica" || die "Patroni replica p$i never came up"
	done
	sleep 5
	a=$(etcd_calls "$e"); sleep "$WINDOW"; b=$(etcd_calls "$e")
	R_RPS=$(awk -v d=$((b - a)) -v w="$WINDOW" 'BEGIN { printf "%.3f", d / w / 3 }')
	read -r R_RSS R_PSS < <(mem_of "${pids[@]}")
	R_START=$start_ms
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	for i in 1 2 3; do "$PGBIN/pg_ctl" -D "$W/pg_pat_$tag$i" -m immediate stop >/dev/null 2>&1 || true; done
	kill "$etcd_pid" 2>/dev/null || true
	wait "$etcd_pid" 2>/dev/null || true
}

log "Patroni with its defaults (ttl 30, loop_wait 10, retry_timeout 10)"
run_patroni d 30 10 10
pd_rps=$R_RPS pd_rss=$R_RSS pd_pss=$R_PSS pd_start=$R_START
log "Patroni with ttl 10 (loop_wait 2, retry_timeout 3)"
run_patroni t 10 2 3
pt_rps=$R_RPS pt_rss=$R_RSS pt_pss=$R_PSS pt_start=$R_START

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 / 3 }'; }
echo
printf '%-34s %14s %14s %14s\n' "" "pg_ha ttl 10" "Patroni dflt" "Patroni ttl 10"
printf '%-34s %14s %14s %14s\n' "etcd requests/s per node (idle)" "$pgha_rps" "$pd_rps" "$pt_rps"
printf '%-34s %14s %14s %14s\n' "HA process RSS per node (MiB)" "$(mb "$pgha_rss")" "$(mb "$pd_rss")" "$(mb "$pt_rss")"
printf '%-34s %14s %14s %14s\n' "HA process PSS per node (MiB)" "$(mb "$pgha_pss")" "$(mb "$pd_pss")" "$(mb "$pt_pss")"
printf '%-34s %14s %14s %14s\n' "start -> leader key (ms)" "$pgha_start_ms" "$pd_start" "$pt_start"
echo
echo "ratios (Patroni / pg_ha; higher is better for pg_ha):"
echo "  etcd requests: $(ratio "$pd_rps" "$pgha_rps") vs defaults, $(ratio "$pt_rps" "$pgha_rps") at ttl 10"
echo "  PSS:           $(ratio "$pd_pss" "$pgha_pss") vs defaults"
echo "  start->leader: $(ratio "$pd_start" "$pgha_start_ms") vs defaults"
