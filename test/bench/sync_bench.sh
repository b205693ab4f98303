#!/bin/bash
# sync_bench.sh - synchronous mode and failsafe mode, pg_ha next to Patroni
# 3.0.2, on the same machine, the same 3-member etcd and the same postgres
# settings, both clusters up at once.
#
#   (1) pgbench: TPS and average commit latency of pgbench (TPC-B like,
#       BENCH_PGBENCH_CLIENTS clients, BENCH_PGBENCH_SECS seconds, prepared
#       statements) against each primary, asynchronous and then
#       synchronous (pg_ha.synchronous_mode = on, synchronous_node_count 1;
#       Patroni synchronous_mode: true).  Modes are switched at run time on
#       the same clusters (ALTER SYSTEM + reload; PATCH /config).  The two
#       tools alternate run by run; medians of BENCH_RUNS runs.
#   (2) failover in synchronous mode: kill -9 of the primary's postmaster
#       (and Patroni's process on that node) under a client writing every
#       20 ms -> first successful write on the new primary, as in
#       failover_bench.sh (ttl 10; Patroni loop_wait 2, retry_timeout 3).
#       The client logs every acknowledged id; after each run the script
#       counts the acknowledged ids missing on the new primary (must be 0).
#   (3) etcd outage with failsafe mode (pg_ha.failsafe_mode = on with
#       pg_ha.api_auth_file; Patroni failsafe_mode: true), asynchronous
#       replication: a client writes every 20 ms to each cluster while all
#       three etcd members are down for 3 x TTL with every node up; 2 x TTL
#       after etcd is back the clients stop.  Two kinds of outage
#       (BENCH_OUTAGE): "kill" (kill -9, then restarted: requests are
#       refused at once, and the restart extends every lease) and "stop"
#       (SIGSTOP, then SIGCONT: requests time out, and leases whose TTL
#       passed are revoked on resume).  Reported: the longest gap between
#       two acknowledged writes, the refused writes, and whether the leader
#       changed (a failover) after etcd came back.
#
#   sudo test/bench/sync_bench.sh                     # 3 runs of (1), (2); 1 of (3)
#   sudo BENCH_RUNS=5 BENCH_FS_RUNS=3 test/bench/sync_bench.sh
#   sudo BENCH_ROWS="failsafe" BENCH_ONLY=pg_ha test/bench/sync_bench.sh
#
# Environment: BENCH_RUNS (3), BENCH_FS_RUNS (1), BENCH_OUTAGE ("kill stop"),
# BENCH_ROWS ("pgbench failover failsafe"), BENCH_ONLY (pg_ha|patroni), BENCH_PGBENCH_SECS (15),
# BENCH_PGBENCH_CLIENTS (4), BENCH_PGBENCH_SCALE (10), BENCH_DIR
# (/var/tmp/pg_ha_sync_bench), BENCH_KEEP=1 (keep the directory and logs).
# Root only; everything started here is stopped at exit (trap), every wait
# is bounded.  Not part of `make installcheck`.
set -uo pipefail

RUNS=${BENCH_RUNS:-3}
FS_RUNS=${BENCH_FS_RUNS:-1}
OUTAGES=${BENCH_OUTAGE:-kill stop}
ROWS=${BENCH_ROWS:-pgbench failover failsafe}
ONLY=${BENCH_ONLY:-}
DIR=${BENCH_DIR:-/var/tmp/pg_ha_sync_bench}
PGB_SECS=${BENCH_PGBENCH_SECS:-15}
PGB_CLIENTS=${BENCH_PGBENCH_CLIENTS:-4}
PGB_SCALE=${BENCH_PGBENCH_SCALE:-10}
TTL=10
OUTAGE=$((3 * TTL))
ETCD_MEMBERS=3
# the credentials pg_ha's failsafe mode needs (inert while it is off)
HA_EXTRA_CONF="pg_ha.api_auth_file = '$DIR/api.auth'"
# shellcheck source=cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
bench_check_prereqs
command -v "$PGBIN/pgbench" >/dev/null || die "missing $PGBIN/pgbench"
bench_init
echo "bench:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$DIR/api.auth"
chown "$PGUSER_OS": "$DIR/api.auth" && chmod 600 "$DIR/api.auth"

row() { [[ " $ROWS " == *" $1 "* ]]; }
want_ha() { [ "$ONLY" != patroni ]; }
want_pat() { [ "$ONLY" != pg_ha ]; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ------------------------------------------------------- mode switches
# ALTER SYSTEM on every pg_ha node (a re-cloned node inherits it through
# pg_basebackup's copy of postgresql.auto.conf), then reload
ha_set() { # name value
	local i
	for i in 1 2 3; do
		psql_at "${HA_PORT[$i]}" "ALTER SYSTEM SET $1 = '$2'" >/dev/null &&
			psql_at "${HA_PORT[$i]}" "SELECT pg_reload_conf()" >/dev/null ||
			die "pg_ha: could not set $1 on node$i"
	done
}
pat_patch() { # json
	local code
	code=$(curl -s -m 5 -o "$DIR/logs/patch.out" -w '%{http_code}' -X PATCH \
		-d "$1" "http://127.0.0.1:$(pat_leader_api)/config")
	[ "$code" = 200 ] || die "patroni: PATCH /config $1 answered $code: $(cat "$DIR/logs/patch.out")"
}
sync_count() { psql_at "$1" "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"; }
sync_is() { local p; p=$($2) && [ -n "$p" ] && [ "$(sync_count "$p")" = "$1" ]; }
set_sync() { # on|off
	local n=0 b=false
	[ "$1" = on ] && { n=1; b=true; }
	if want_ha; then
		ha_set pg_ha.synchronous_node_count 1
		ha_set pg_ha.synchronous_mode "$1"
	fi
	want_pat && pat_patch "{\"synchronous_mode\": $b, \"synchronous_node_count\": 1}"
	if want_ha; then wait_until 30 sync_is $n ha_leader_port || die "pg_ha: synchronous standbys did not become $n"; fi
	if want_pat; then wait_until 60 sync_is $n pat_leader_port || die "patroni: synchronous standbys did not become $n"; fi
	log "synchronous mode $1 (synchronous standbys: $n)"
}
failsafe_lists_all() { # cluster name-prefix
	local v; v=$(ectl get "/service/$1/failsafe" --print-value-only) || return 1
	[[ "$v" == *"\"${2}1\""* && "$v" == *"\"${2}2\""* && "$v" == *"\"${2}3\""* ]]
}
set_failsafe() {
	want_ha && ha_set pg_ha.failsafe_mode on
	want_pat && pat_patch '{"failsafe_mode": true}'
	if want_ha; then wait_until 60 failsafe_lists_all $HA_CLUSTER node || die "pg_ha: the failsafe key does not list every member"; fi
	if want_pat; then wait_until 60 failsafe_lists_all "$PAT_CLUSTER" pat || die "patroni: the failsafe key does not list every member"; fi
	log "failsafe mode on (each failsafe key lists its 3 members)"
}

# --------------------------------------------------------------- pgbench
# RUN_TPS, RUN_LAT (ms) of one pgbench run against port
pgbench_run() { # port outfile
	psql_at "$1" "CHECKPOINT" >/dev/null
	as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$1" -n -M prepared -c "$PGB_CLIENTS" -j 2 \
		-T "$PGB_SECS" postgres >"$2" 2>&1 || log "pgbench failed: $(tail -2 "$2")"
	RUN_TPS=$(awk '/^tps = / {printf "%.0f\n", $3; exit}' "$2")
	RUN_LAT=$(awk '/^latency average = / {print $4; exit}' "$2")
	RUN_TPS=${RUN_TPS:-failed}; RUN_LAT=${RUN_LAT:-failed}
}
pgbench_round() { # mode run: both tools, alternating which goes first
	local mode=$1 r=$2 t
	local order="ha pat"; [ $((r % 2)) = 0 ] && order="pat ha"
	for t in $order; do
		[ "$t" = ha ] && ! want_ha && continue
		[ "$t" = pat ] && ! want_pat && continue
		local port; port=$("${t}_leader_port")
		pgbench_run "$port" "$DIR/logs/pgbench_${t}_${mode}_$r.log"
		RES[${t}_${mode}_tps]+=" $RUN_TPS"; RES[${t}_${mode}_lat]+=" $RUN_LAT"
		log "$t $mode pgbench run $r: $RUN_TPS tps, latency $RUN_LAT ms (load $(loadavg))"
	done
}

# ------------------------------------------------------- etcd outage
# Both clusters at once: writers on both, etcd killed for OUTAGE seconds.
# FS_<t>_* of each tool: gap, refused, failover (yes/no), lost acked.
outage_verdict() { # t log old_leader port_of_old_leader kind
	local t=$1 out=$2 old=$3 oport=$4 k=${1}_fs_$5 nl rec
	nl=$(leader_of "$([ "$t" = ha ] && echo $HA_CLUSTER || echo "$PAT_CLUSTER")")
	rec=$(psql_at "$oport" "SELECT pg_is_in_recovery()")
	local fo=no
	[ "$nl" != "$old" ] || [ "$rec" != f ] && fo="yes (leader $old -> ${nl:-none}, old primary in recovery: ${rec:-down})"
	count_lost_acked "$out" "$("${t}_leader_port")"
	RES[${k}_gap]+=" $(max_ok_gap "$out")"
	RES[${k}_err]+=" $(err_count "$out")"
	RES[${k}_fo]+="${RES[${k}_fo]:+; }$fo"
	RES[${k}_lost]+=" $LOST_ACKED/$ACKED"
	log "$t etcd outage ($5): longest write gap $(max_ok_gap "$out")s, $(err_count "$out") refused writes," \
		"failover after recovery: $fo, $LOST_ACKED of $ACKED acknowledged writes missing"
	[ "$(err_count "$out")" = 0 ] || log "$t first refusals: $(grep -m3 '^err' "$out" | cut -c1-140 | tr '\n' '|')"
}
outage_run() { # kill|stop run
	local kind=$1 r=$2 dur=$((5 + OUTAGE + 2 * TTL + 5)) hw='' pw='' hl='' pl='' hp='' pp=''
	local ho=$DIR/logs/ha_outage_${kind}_$r.log po=$DIR/logs/pat_outage_${kind}_$r.log
	if want_ha; then
		hl=$(leader_of $HA_CLUSTER); hp=$(ha_leader_port)
		start_writer "$ho" 0.02 "$dur" "$(dsn_for "${HA_PORT[1]}" "${HA_PORT[2]}" "${HA_PORT[3]}")"; hw=$WRITER_PID
	fi
	if want_pat; then
		pl=$(leader_of "$PAT_CLUSTER"); pp=$(pat_leader_port)
		start_writer "$po" 0.02 "$dur" "$(dsn_for "${PAT_PORT[1]}" "${PAT_PORT[2]}" "${PAT_PORT[3]}")"; pw=$WRITER_PID
	fi
	sleep 5
	log "outage run $r: etcd_${kind}: the $ETCD_MEMBERS etcd members down for ${OUTAGE}s (load $(loadavg))"
	if [ "$kind" = kill ]; then
		etcd_kill_all; sleep "$OUTAGE"; etcd_start_all
	else
		etcd_stop_all; sleep "$OUTAGE"; etcd_cont_all
	fi
	log "outage run $r: etcd back; writing on for $((2 * TTL))s"
	sleep $((2 * TTL))
	WRITER_PID=$hw stop_writer; WRITER_PID=$pw stop_writer
	want_ha && outage_verdict ha "$ho" "$hl" "$hp" "$kind"
	want_pat && outage_verdict pat "$po" "$pl" "$pp" "$kind"
	if want_ha; then wait_until 90 ha_healthy || die "pg_ha: cluster not healthy after the outage ($WHY)"; fi
	if want_pat; then wait_until 120 pat_healthy || die "patroni: cluster not healthy after the outage ($WHY)"; fi
}

# ==================================================================== runs
declare -A RES
LOAD_START=$(loadavg)
log "load average at start: $LOAD_START"
start_etcd
log "etcd: $ETCD_MEMBERS members ($ETCD_URLS); rows: $ROWS; $RUNS runs, $FS_RUNS outage run(s)"
want_ha && { log "pg_ha: 3 nodes, ttl $TTL"; ha_cluster_up $TTL; }
want_pat && { log "Patroni: 3 nodes, ttl $TTL loop_wait 2 retry_timeout 3"; pat_cluster_up benchpat $TTL 2 3; }

# postgres settings whose values differ between the two primaries (other
# than ports, paths, names and each tool's own), so the comparison states them
settings_of() {
	psql_at "$1" "SELECT name || ' = ' || setting FROM pg_settings
		WHERE name NOT LIKE 'pg\_ha.%'
		AND name NOT IN ('port', 'data_directory', 'config_file', 'hba_file', 'ident_file',
			'cluster_name', 'shared_preload_libraries', 'application_name',
			'unix_socket_directories', 'listen_addresses', 'transaction_read_only',
			'default_transaction_read_only', 'client_encoding', 'DateStyle',
			'primary_conninfo', 'primary_slot_name', 'session_preload_libraries')
		ORDER BY 1"
}
settings_diff() {
	settings_of "$(ha_leader_port)" >"$DIR/logs/settings_ha"
	settings_of "$(pat_leader_port)" >"$DIR/logs/settings_pat"
	local d; d=$(diff "$DIR/logs/settings_ha" "$DIR/logs/settings_pat" | grep '^[<>]' | tr '\n' ' ')
	SETTINGS_DIFF=${d:-none}
	log "postgres settings that differ (< pg_ha, > Patroni): $SETTINGS_DIFF"
}
SETTINGS_DIFF=

if row pgbench; then
	want_ha && want_pat && settings_diff
	for t in ha pat; do
		{ [ $t = ha ] && want_ha; } || { [ $t = pat ] && want_pat; } || continue
		as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$("${t}_leader_port")" -i -q -s "$PGB_SCALE" postgres \
			>"$DIR/logs/pgbench_init_$t.log" 2>&1 || die "pgbench -i failed for $t"
	done
	for mode in async sync; do
		set_sync "$([ $mode = sync ] && echo on || echo off)"
		for r in $(seq "$RUNS"); do pgbench_round $mode "$r"; done
	done
	want_ha && psql_at "$(ha_leader_port)" "DROP TABLE pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers" >/dev/null
	want_pat && psql_at "$(pat_leader_port)" "DROP TABLE pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers" >/dev/null
fi

if row failover; then
	set_sync on
	if want_ha; then
		for r in $(seq "$RUNS"); do
			ha_failover_run $TTL "$r"
			RES[ha_fo]+=" $RUN_A"; RES[ha_fo_lost]+=" $LOST_ACKED/$ACKED"
			log "pg_ha sync failover run $r: first write ${RUN_A}s after kill -9, $LOST_ACKED of $ACKED acknowledged writes missing"
		done
	fi
	if want_pat; then
		for r in $(seq "$RUNS"); do
			pat_failover_run $TTL "$r"
			RES[pat_fo]+=" $RUN_A"; RES[pat_fo_lost]+=" $LOST_ACKED/$ACKED"
			log "Patroni sync failover run $r: first write ${RUN_A}s after kill -9, $LOST_ACKED of $ACKED acknowledged writes missing"
		done
	fi
	[ "$HA_REWINDS" = 0 ] ||
		log "pg_ha: a node stopped and was rejoined by pg_hactl $HA_REWINDS time(s) (diverged former primary)"
fi

if row failsafe; then
	set_sync off
	set_failsafe
	for r in $(seq "$FS_RUNS"); do
		for kind in $OUTAGES; do outage_run "$kind" "$r"; done
	done
fi
LOAD_END=$(loadavg)

# ================================================================= report
lost_total() { echo "$1" | tr ' ' '\n' | awk -F/ 'NF==2 { l+=$1; a+=$2; n++ } END { if (n) printf "%d of %d", l, a; else print "n/a" }'; }
line() { printf '%-50s %10s   %10s   %s\n' "$@"; }
echo
echo "=== sync_bench: medians (runs in brackets); load average at start $LOAD_START, at end $LOAD_END ==="
[ -z "$SETTINGS_DIFF" ] || echo "postgres settings that differ (< pg_ha, > Patroni): $SETTINGS_DIFF"
line "measurement" "pg_ha" "Patroni" "pg_ha/Patroni"
if row pgbench; then
	for mode in async sync; do
		a=$(med "${RES[ha_${mode}_tps]:-}"); b=$(med "${RES[pat_${mode}_tps]:-}")
		line "pgbench TPS, $mode ($PGB_CLIENTS clients)" "$a" "$b" "$(ratio "$a" "$b")"
		a=$(med "${RES[ha_${mode}_lat]:-}"); b=$(med "${RES[pat_${mode}_lat]:-}")
		line "pgbench latency average ms, $mode" "$a" "$b" "$(ratio "$a" "$b")"
	done
	for t in ha pat; do
		a=$(med "${RES[${t}_async_tps]:-}"); s=$(med "${RES[${t}_sync_tps]:-}")
		RES[${t}_cost]=$(ratio "$s" "$a")
	done
	line "TPS sync / TPS async (the cost of sync)" "${RES[ha_cost]}" "${RES[pat_cost]}" ""
fi
if row failover; then
	a=$(med "${RES[ha_fo]:-}"); b=$(med "${RES[pat_fo]:-}")
	line "sync failover: kill -9 -> first write, s" "$a" "$b" "$(ratio "$a" "$b")"
	line "sync failover: acked writes missing, all runs" "$(lost_total "${RES[ha_fo_lost]:-}")" "$(lost_total "${RES[pat_fo_lost]:-}")" ""
fi
if row failsafe; then
	for kind in $OUTAGES; do
		a=$(med "${RES[ha_fs_${kind}_gap]:-}"); b=$(med "${RES[pat_fs_${kind}_gap]:-}")
		line "etcd $kind ${OUTAGE}s, failsafe: longest write gap, s" "$a" "$b" "$(ratio "$a" "$b")"
		a=$(med "${RES[ha_fs_${kind}_err]:-}"); b=$(med "${RES[pat_fs_${kind}_err]:-}")
		line "etcd $kind ${OUTAGE}s, failsafe: refused writes" "$a" "$b" ""
	done
fi
echo
if row pgbench; then
	for k in ha_async_tps pat_async_tps ha_sync_tps pat_sync_tps ha_async_lat pat_async_lat ha_sync_lat pat_sync_lat; do
		echo "  $k: [${RES[$k]:-} ]"
	done
fi
if row failover; then
	echo "  sync failover s: pg_ha [${RES[ha_fo]:-} ]  Patroni [${RES[pat_fo]:-} ]"
	echo "  missing/acked per run: pg_ha [${RES[ha_fo_lost]:-} ]  Patroni [${RES[pat_fo_lost]:-} ]"
fi
if row failsafe; then
	for kind in $OUTAGES; do
		k=fs_$kind
		echo "  etcd $kind: write gap s: pg_ha [${RES[ha_${k}_gap]:-} ]  Patroni [${RES[pat_${k}_gap]:-} ]"
		echo "  etcd $kind: refused writes: pg_ha [${RES[ha_${k}_err]:-} ]  Patroni [${RES[pat_${k}_err]:-} ]"
		echo "  etcd $kind: failover after recovery: pg_ha [${RES[ha_${k}_fo]:-} ]  Patroni [${RES[pat_${k}_fo]:-} ]"
		echo "  etcd $kind: missing/acked (async: nonzero only after a failover): pg_ha [${RES[ha_${k}_lost]:-} ]  Patroni [${RES[pat_${k}_lost]:-} ]"
	done
fi
