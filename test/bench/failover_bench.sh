#!/bin/bash
# failover_bench.sh - unplanned failover and switchover, pg_ha next to
# Patroni 3.0.2, on the same machine and the same etcd.
#
#   (a) unplanned failover: kill -9 of the primary's postmaster (and, for
#       Patroni, of the Patroni process on that node) -> first successful
#       INSERT on the new primary, seen by a client retrying every 20 ms
#       through libpq multi-host (target_session_attrs=read-write).
#       Median of BENCH_RUNS runs, with equal TTL (pg_ha ttl 10; Patroni
#       ttl 10, loop_wait 2, retry_timeout 3) and with each tool's defaults
#       (pg_ha ttl 10; Patroni ttl 30, loop_wait 10, retry_timeout 10).
#       pg_ha's defaults are ttl 10, so its equal-TTL runs serve both rows.
#   (b) switchover: the longest gap between two successful INSERTs of a
#       client writing every 10 ms (same multi-host connection string,
#       reconnecting on error), while pg_ha.switchover() is called from a
#       replica / "patronictl switchover --force" runs.  Median of runs.
#
# Three postgres nodes per tool on loopback ports, one etcd member.  Every
# server runs as the postgres user; everything started here is stopped at
# exit (trap), and every wait is bounded.  Not part of `make installcheck`.
#
#   sudo test/bench/failover_bench.sh                 # 3 runs of each
#   sudo BENCH_RUNS=5 test/bench/failover_bench.sh
#   sudo BENCH_ONLY=pg_ha test/bench/failover_bench.sh   # or patroni
#
# Environment: BENCH_RUNS (3), BENCH_DIR (/var/tmp/pg_ha_failover_bench),
# BENCH_KEEP=1 (keep the directory and its logs), BENCH_ONLY (pg_ha|patroni),
# BENCH_SKIP_DEFAULTS=1 (skip Patroni's default-timing runs, the slow ones).
set -uo pipefail

RUNS=${BENCH_RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/pg_ha_failover_bench}
ONLY=${BENCH_ONLY:-}
# shellcheck source=cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
bench_check_prereqs
bench_init

# ================================================= switchover (this script's)
ha_switchover_run() { # run -> RUN_A (longest write gap), RUN_B (call duration)
	local run=$1; local out=$DIR/logs/ha_switchover_$run.log
	local l li cand caller
	l=$(leader_of $HA_CLUSTER); li=${l#node}
	cand=$(( li % 3 + 1 )); caller=$(( cand % 3 + 1 ))
	start_writer "$out" 0.01 40 "$(dsn_for "${HA_PORT[1]}" "${HA_PORT[2]}" "${HA_PORT[3]}")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "pg_ha: the writer cannot write"; }
	sleep 2
	local t0; t0=$(now)
	psql_at "${HA_PORT[$caller]}" "SELECT pg_ha.switchover('node$cand')" >"$DIR/logs/ha_switchover_$run.sql" 2>&1 ||
		log "pg_ha.switchover('node$cand') failed: $(cat "$DIR/logs/ha_switchover_$run.sql")"
	local t1; t1=$(now)
	sleep 4
	stop_writer
	RUN_A=$(max_ok_gap "$out"); RUN_B=$(echo "$t1 - $t0" | bc)
	wait_until 60 ha_healthy || die "pg_ha: cluster not healthy after the switchover ($WHY)"
}

pat_switchover_run() { # run -> RUN_A (longest write gap), RUN_B (duration)
	local run=$1; local out=$DIR/logs/pat_switchover_$run.log
	local l li cand
	l=$(leader_of "$PAT_CLUSTER"); li=${l#pat}
	cand=$(( li % 3 + 1 ))
	start_writer "$out" 0.01 60 "$(dsn_for "${PAT_PORT[1]}" "${PAT_PORT[2]}" "${PAT_PORT[3]}")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "patroni: the writer cannot write"; }
	sleep 2
	local t0; t0=$(now)
	as_pg timeout 90 "$PY" "$PATRONICTL" -c "$DIR/pat/pat$cand.yml" switchover \
		--leader "$l" --candidate "pat$cand" --force >"$DIR/logs/pat_switchover_$run.ctl" 2>&1 ||
		log "patronictl switchover failed: $(tail -3 "$DIR/logs/pat_switchover_$run.ctl")"
	wait_until 60 leader_is "$PAT_CLUSTER" "pat$cand"
	local t1; t1=$(now)
	sleep 4
	stop_writer
	RUN_A=$(max_ok_gap "$out"); RUN_B=$(echo "$t1 - $t0" | bc)
	wait_until 90 pat_healthy || die "patroni: cluster not healthy after the switchover ($WHY)"
}

# ==================================================================== runs
start_etcd
log "etcd at $ETCD_URL; $RUNS runs of each measurement"

declare -A RES   # key -> space separated figures
if [ "$ONLY" != patroni ]; then
	log "pg_ha: 3 nodes, ttl 10"
	ha_cluster_up 10
	for r in $(seq "$RUNS"); do
		ha_failover_run 10 "$r"; s=$RUN_A; RES[ha_fo]="${RES[ha_fo]:-} $s"
		log "pg_ha failover run $r: first write ${s}s after kill -9 ($LOST_ACKED of $ACKED acknowledged writes missing)"
	done
	for r in $(seq "$RUNS"); do
		ha_switchover_run "$r"; gap=$RUN_A; dur=$RUN_B
		RES[ha_sw]="${RES[ha_sw]:-} $gap"
		log "pg_ha switchover run $r: longest write gap ${gap}s (switchover() took ${dur}s)"
	done
	[ "$HA_REWINDS" = 0 ] ||
		log "pg_ha: a node stopped and was rejoined by pg_hactl $HA_REWINDS time(s) (diverged former primary)"
	ha_cluster_down
fi

if [ "$ONLY" != pg_ha ]; then
	log "Patroni: 3 nodes, ttl 10 loop_wait 2 retry_timeout 3"
	pat_cluster_up benchpat10 10 2 3
	for r in $(seq "$RUNS"); do
		pat_failover_run 10 "$r"; s=$RUN_A; RES[pat_fo10]="${RES[pat_fo10]:-} $s"
		log "Patroni (ttl 10) failover run $r: first write ${s}s after kill -9 ($LOST_ACKED of $ACKED acknowledged writes missing)"
	done
	for r in $(seq "$RUNS"); do
		pat_switchover_run "$r"; gap=$RUN_A; dur=$RUN_B
		RES[pat_sw]="${RES[pat_sw]:-} $gap"
		log "Patroni switchover run $r: longest write gap ${gap}s (patronictl to new leader ${dur}s)"
	done
	pat_cluster_down
	if [ -z "${BENCH_SKIP_DEFAULTS:-}" ]; then
		log "Patroni: 3 nodes, defaults ttl 30 loop_wait 10 retry_timeout 10"
		pat_cluster_up benchpat30 30 10 10
		for r in $(seq "$RUNS"); do
			pat_failover_run 30 "$r"; s=$RUN_A; RES[pat_fo30]="${RES[pat_fo30]:-} $s"
			log "Patroni (defaults) failover run $r: first write ${s}s after kill -9"
		done
		pat_cluster_down
	fi
fi

# ================================================================= report
ha_fo=$(med "${RES[ha_fo]:-}"); ha_sw=$(med "${RES[ha_sw]:-}")
p10=$(med "${RES[pat_fo10]:-}"); p30=$(med "${RES[pat_fo30]:-}"); psw=$(med "${RES[pat_sw]:-}")
echo
echo "=== failover_bench: medians of $RUNS runs (seconds; runs in brackets) ==="
printf '%-44s %8s   %8s   %s\n' "measurement" "pg_ha" "Patroni" "pg_ha/Patroni"
printf '%-44s %8s   %8s   %s\n' "kill -9 -> first write, equal TTL (10 s)" "$ha_fo" "$p10" "$(ratio "$ha_fo" "$p10")"
printf '%-44s %8s   %8s   %s\n' "kill -9 -> first write, each tool's defaults" "$ha_fo" "$p30" "$(ratio "$ha_fo" "$p30")"
printf '%-44s %8s   %8s   %s\n' "switchover: longest write gap (10 ms writes)" "$ha_sw" "$psw" "$(ratio "$ha_sw" "$psw")"
echo
echo "runs: pg_ha failover [${RES[ha_fo]:-} ]  Patroni ttl 10 [${RES[pat_fo10]:-} ]  Patroni defaults [${RES[pat_fo30]:-} ]"
echo "      pg_ha switchover gap [${RES[ha_sw]:-} ]  Patroni switchover gap [${RES[pat_sw]:-} ]"
echo "pg_ha defaults are ttl 10, so its equal-TTL runs are its defaults runs too."
echo "Goals (issue 3): failover within TTL + 2 s = 12 s; switchover gap < 1 s and < half of Patroni's."
