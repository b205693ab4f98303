#!/bin/bash
# restart_bench.sh - a planned restart of postgres through `patronictl
# restart`, pg_ha next to Patroni 3.0.2, on the same machine, the same
# 3-member etcd and the same postgres settings, both clusters up at once
# (3 nodes each, ttl 10; Patroni loop_wait 2, retry_timeout 3).
#
#   (1) leader: `patronictl restart <cluster> <leader> --force` under a
#       client writing every 20 ms through a libpq multi-host connection
#       string (target_session_attrs=read-write).  Reported: the longest gap
#       between two acknowledged writes, the failed writes, the time from the
#       command to the first acknowledged write after the first failed one,
#       how long patronictl itself took, whether the leader changed (leader
#       key deleted or taken by another member, another leader afterwards, or
#       a new timeline: a failover, which would be a defect in either tool),
#       and the acknowledged writes missing on the leader afterwards.
#   (2) replica: `patronictl restart <cluster> <replica> --force` -> the
#       replica runs again (a new postmaster start time) and streams; the
#       client writes on to the leader meanwhile.
#
# Each run restarts both tools, which goes first alternating run by run;
# medians of BENCH_RUNS runs.  patronictl is pointed at pg_ha's etcd
# namespace with the credentials of pg_ha.api_auth_file (restapi.
# authentication in its configuration, as test/perl/PgHa/Patroni.pm does).
#
# pg_ha's restart is a fast shutdown that leaves a marker; the service
# manager starts postgres again.  This script runs the part of
# contrib/systemd/pg_ha@.service that matters here as a background loop:
# every 0.1 s it looks for pg_ha nodes whose postmaster is gone; for such a
# node it waits 2 s (RestartSec=2; BENCH_RESTART_SEC), runs `pg_hactl rejoin --if-needed`
# (ExecStartPre; a failure skips the start, and the loop tries again as
# Restart=always does) and starts postgres.  Patroni restarts postgres
# itself.
#
# The machine lock (the one test runs take) must be held for the whole run:
# a concurrent test run skews both tools.
#
#   flock /tmp/pg_ha_test.lock make -s install       # the bench uses the installed pg_ha
#   flock /tmp/pg_ha_test.lock sudo test/bench/restart_bench.sh
#   flock /tmp/pg_ha_test.lock sudo BENCH_RUNS=5 BENCH_ROWS=leader test/bench/restart_bench.sh
#
# Environment: BENCH_RUNS (3), BENCH_ROWS ("leader replica"), BENCH_ONLY
# (pg_ha|patroni), BENCH_DIR (/var/tmp/pg_ha_restart_bench), BENCH_KEEP=1
# (keep the directory and its logs), BENCH_RESTART_SEC (2: the unit's
# RestartSec; another value shows what it costs), BENCH_LOCK (/tmp/pg_ha_test.lock),
# BENCH_NO_LOCK=1 (run without holding it; the figures are then suspect).
# Root only; everything started here is stopped at exit (trap), every wait
# is bounded.  Not part of `make installcheck`.
set -uo pipefail

RUNS=${BENCH_RUNS:-3}
ROWS=${BENCH_ROWS:-leader replica}
ONLY=${BENCH_ONLY:-}
DIR=${BENCH_DIR:-/var/tmp/pg_ha_restart_bench}
LOCK=${BENCH_LOCK:-/tmp/pg_ha_test.lock}
RESTART_SEC=${BENCH_RESTART_SEC:-2}     # the unit's RestartSec
TTL=10
ETCD_MEMBERS=3
HA_EXTRA_CONF="pg_ha.api_auth_file = '$DIR/api.auth'"
# shellcheck source=cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
bench_check_prereqs
[ -x "$PGBIN/pg_hactl" ] || die "missing $PGBIN/pg_hactl (make install)"
[ -x "$PATRONICTL" ] || die "missing $PATRONICTL (apt-get install patroni)"

# Is the lock file flock()ed by this process or one of its ancestors
# (flock(1) runs the command as its child)?
lock_held_by_us() {
	local ino pids p
	ino=$(stat -c %i "$LOCK" 2>/dev/null) || return 1
	pids=$(awk -v ino=":$ino" '$2 == "FLOCK" && $4 == "WRITE" && substr($6, length($6) - length(ino) + 1) == ino { print $5 }' /proc/locks)
	p=$$
	while [ -n "$p" ] && [ "$p" -gt 1 ]; do
		for q in $pids; do [ "$q" = "$p" ] && return 0; done
		p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
	done
	return 1
}
if [ -z "${BENCH_NO_LOCK:-}" ] && ! lock_held_by_us; then
	die "run under the machine lock: flock $LOCK sudo $0 (or BENCH_NO_LOCK=1)"
fi

bench_init
echo "bench:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$DIR/api.auth"
chown "$PGUSER_OS": "$DIR/api.auth" && chmod 600 "$DIR/api.auth"

row() { [[ " $ROWS " == *" $1 "* ]]; }
want() { case $1 in ha) [ "$ONLY" != patroni ] ;; pat) [ "$ONLY" != pg_ha ] ;; esac; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ----------------------------------------------------- service manager
# The background loop replaces cluster_lib's ha_supervise, which acts only
# when polled (ha_healthy calls it): two service managers would race.
ha_supervise() { :; }
SUP_PID=
SUP_STOP=$DIR/supervisor.stop
sup_log() { printf '%s %s\n' "$(now)" "$*" >>"$DIR/logs/supervisor.log"; }
supervisor_loop() {
	local i
	trap - EXIT
	while [ ! -e "$SUP_STOP" ]; do
		for i in 1 2 3; do
			# (postmaster.pid may go between pm_pid's test and its read)
			alive "$(pm_pid "${HA_DATA[$i]}" 2>/dev/null)" && continue
			sup_log "node$i gone"
			sleep "$RESTART_SEC"                     # RestartSec=
			[ -e "$SUP_STOP" ] && return 0
			sup_log "node$i rejoin"
			if ! as_pg timeout 120 "$PGBIN/pg_hactl" rejoin --pgdata "${HA_DATA[$i]}" --if-needed \
				>>"$DIR/logs/ha_rejoin_node$i.log" 2>&1; then
				sup_log "node$i rejoin failed"       # ExecStartPre failed: no start
				continue
			fi
			sup_log "node$i start"
			as_pg "$PGBIN/pg_ctl" -D "${HA_DATA[$i]}" -l "$DIR/logs/ha_node$i.log" -w -t 60 start \
				>/dev/null 2>&1 || sup_log "node$i start failed"
			sup_log "node$i started"
		done
		sleep 0.1
	done
}
supervisor_start() {
	rm -f "$SUP_STOP"
	supervisor_loop &
	SUP_PID=$!
	PIDS+=("$SUP_PID")
	log "pg_ha: service manager loop running (RestartSec=$RESTART_SEC; pid $SUP_PID, log $DIR/logs/supervisor.log)"
}
# asked to stop between two steps, so that it starts no postgres after
# cleanup stopped them; killed if a step hangs
supervisor_stop() {
	[ -n "$SUP_PID" ] || return 0
	touch "$SUP_STOP"
	wait_until 70 pid_gone "$SUP_PID" || kill -TERM "$SUP_PID" 2>/dev/null
	wait "$SUP_PID" 2>/dev/null
	SUP_PID=
}
bench_exit() {
	local rc=$?
	supervisor_stop
	(exit $rc)
	cleanup
}
trap bench_exit EXIT

# --------------------------------------------------------------- helpers
cluster_of() { [ "$1" = ha ] && echo "$HA_CLUSTER" || echo "$PAT_CLUSTER"; }
port_of() { # t member
	if [ "$1" = ha ]; then echo "${HA_PORT[${2#node}]}"; else echo "${PAT_PORT[${2#pat}]}"; fi
}
dsn_of() {
	if [ "$1" = ha ]; then dsn_for "${HA_PORT[1]}" "${HA_PORT[2]}" "${HA_PORT[3]}"
	else dsn_for "${PAT_PORT[1]}" "${PAT_PORT[2]}" "${PAT_PORT[3]}"; fi
}
ctl_conf() { [ "$1" = ha ] && echo "$DIR/ctl_ha.yml" || echo "$DIR/pat/pat1.yml"; }
ctl() { # t args...: patronictl with that tool's configuration
	local t=$1; shift
	as_pg timeout 90 "$PY" "$PATRONICTL" -c "$(ctl_conf "$t")" "$@"
}
healthy() { "${1}_healthy"; }
# timeline the primary on port writes on (a failover starts a new one)
timeline_of() { psql_at "$1" "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"; }
started_at() { psql_at "$1" "SELECT pg_postmaster_start_time()"; }
# the replica on port runs since after $2 and streams
replica_back() {
	[ "$(psql_at "$1" "SELECT pg_postmaster_start_time() > '$2'::timestamptz
		AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')")" = t ]
}
# watch of the cluster's leader key into a file (etcdctl prints event type,
# key and value, a line each)
WATCH_PID=
watch_start() { # cluster file
	ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URLS" watch "/service/$1/leader" >"$2" 2>&1 &
	WATCH_PID=$!
	PIDS+=("$WATCH_PID")
}
watch_stop() { kill -TERM "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=; }
# what in the watch file is not the leader's own key: deletions, other values
watch_foreign() { # file leader
	awk -v l="$2" 'NR % 3 == 1 && $1 != "PUT" { print $1 } NR % 3 == 0 && $0 != l { print "value " $0 }' "$1" |
		sort | uniq -c | tr -s ' \n' ' '
}
# pg_ha's steps after time t0 for a node, from the service manager's log
sup_steps() { # node t0
	awk -v n="$1" -v t="$2" '$1 > t && $2 == n && !seen[$3]++ { printf "%s +%.2fs ", $3, $1 - t }' "$DIR/logs/supervisor.log"
}

# what the node's postgres log says after time t0, as offsets from t0: the
# restart request (pg_ha), a checkpoint before the stop (Patroni's), the
# fast shutdown, its end, the new postmaster, ready, streaming (a replica),
# the worker holding the key again (pg_ha)
pg_steps() { # log t0
	"$PY" - "$1" "$2" <<'PYEOF'
import sys, re, datetime
path, t0 = sys.argv[1], float(sys.argv[2])
steps = [("request", "pg_ha: restarting postgres"), ("checkpoint", "checkpoint starting: immediate force wait"),
         ("shutdown", "received fast shutdown request"), ("down", "database system is shut down"),
         ("postmaster", "starting PostgreSQL"), ("ready", "database system is ready to accept"),
         ("streaming", "started streaming WAL"), ("leader", "-> leader")]
seen = {}
for line in open(path, errors="replace"):
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (?:GMT|UTC) ", line)
    if not m:
        continue
    ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    if ts < t0:
        continue
    for k, p in steps:
        if k not in seen and p in line:
            seen[k] = ts - t0
print(" ".join("%s +%.2fs" % (k, seen[k]) for k, _ in steps if k in seen))
PYEOF
}
node_log() { # t member
	if [ "$1" = ha ]; then echo "$DIR/logs/ha_node${2#node}.log"
	else echo "$DIR/logs/patroni_${PAT_CLUSTER}_${2#pat}.log"; fi
}

# ------------------------------------------------------------------ runs
restart_leader_run() { # t run
	local t=$1 r=$2 cl l port tl0 tl1 nl t0 t1 ctl_out rc
	local out=$DIR/logs/${t}_leader_$r.log wf=$DIR/logs/${t}_leader_watch_$r.log
	cl=$(cluster_of "$t"); l=$(leader_of "$cl"); port=$(port_of "$t" "$l")
	[ -n "$l" ] || die "$t: no leader before run $r"
	tl0=$(timeline_of "$port")
	watch_start "$cl" "$wf"
	start_writer "$out" 0.02 180 "$(dsn_of "$t")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "$t: the writer cannot write"; }
	sleep 2
	ctl_out=$DIR/logs/${t}_leader_$r.ctl
	t0=$(now)
	ctl "$t" restart "$cl" "$l" --force >"$ctl_out" 2>&1; rc=$?
	t1=$(now)
	grep -q "Success: restart on member $l" "$ctl_out" ||
		log "$t: patronictl restart $l exited $rc: $(tr '\n' ' ' <"$ctl_out" | cut -c1-300)"
	wait_until $((3 * TTL + 30)) ok_after "$out" "$t0"
	local back; back=$(first_ok_after "$out" "$t0")
	wait_until 120 healthy "$t" || log "$t: cluster not healthy after the leader restart ($WHY)"
	sleep 1
	stop_writer
	watch_stop
	nl=$(leader_of "$cl")
	tl1=$(timeline_of "$(port_of "$t" "${nl:-$l}")")
	local foreign; foreign=$(watch_foreign "$wf" "$l")
	local fo=no
	if [ "$nl" != "$l" ] || [ "$tl1" != "$tl0" ] || [ -n "$foreign" ]; then
		fo="YES (leader $l -> ${nl:-none}, timeline $tl0 -> ${tl1:-?}, leader key events: ${foreign:-none})"
	fi
	count_lost_acked "$out" "$(port_of "$t" "${nl:-$l}")"
	local gap errs ctl_s
	gap=$(max_ok_gap "$out"); errs=$(err_count "$out"); ctl_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
	RES[${t}_l_gap]+=" $gap"; RES[${t}_l_back]+=" ${back:-timeout}"; RES[${t}_l_ctl]+=" $ctl_s"
	RES[${t}_l_err]+=" $errs"; RES[${t}_l_lost]+=" $LOST_ACKED/$ACKED"
	RES[${t}_l_fo]+="${RES[${t}_l_fo]:+; }$fo"
	local steps; steps=" (postgres log: $(pg_steps "$(node_log "$t" "$l")" "$t0"))"
	[ "$t" = ha ] && steps+=" (service manager: $(sup_steps "$l" "$t0"))"
	log "$t leader restart run $r ($l): longest write gap ${gap}s, writable again ${back:-timeout}s after" \
		"the command (patronictl ${ctl_s}s), $errs failed writes, failover: $fo," \
		"$LOST_ACKED of $ACKED acknowledged writes missing$steps (load $(loadavg))"
	[ "$fo" = no ] || log "$t: FAILOVER during a planned restart: see $wf and the node logs (BENCH_KEEP=1)"
}

restart_replica_run() { # t run
	local t=$1 r=$2 cl l rep rport st0 t0 t1 ctl_out rc k
	local out=$DIR/logs/${t}_replica_$r.log
	cl=$(cluster_of "$t"); l=$(leader_of "$cl")
	[ -n "$l" ] || die "$t: no leader before replica run $r"
	# the replicas take turns
	local prefix=${l%[0-9]} li=${l##*[!0-9]}
	k=$(( (li + r - 1) % 3 + 1 )); [ "$k" = "$li" ] && k=$(( k % 3 + 1 ))
	rep=$prefix$k; rport=$(port_of "$t" "$rep")
	st0=$(started_at "$rport")
	[ -n "$st0" ] || die "$t: replica $rep does not answer"
	start_writer "$out" 0.02 180 "$(dsn_of "$t")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "$t: the writer cannot write"; }
	sleep 1
	ctl_out=$DIR/logs/${t}_replica_$r.ctl
	t0=$(now)
	ctl "$t" restart "$cl" "$rep" --force >"$ctl_out" 2>&1; rc=$?
	t1=$(now)
	grep -q "Success: restart on member $rep" "$ctl_out" ||
		log "$t: patronictl restart $rep exited $rc: $(tr '\n' ' ' <"$ctl_out" | cut -c1-300)"
	local back=timeout
	wait_until 120 replica_back "$rport" "$st0" && back=$(printf '%.2f' "$(echo "$(now) - $t0" | bc)")
	wait_until 120 healthy "$t" || log "$t: cluster not healthy after the replica restart ($WHY)"
	stop_writer
	local nl gap; nl=$(leader_of "$cl"); gap=$(max_ok_gap "$out")
	RES[${t}_r_back]+=" $back"; RES[${t}_r_gap]+=" $gap"
	RES[${t}_r_ctl]+=" $(printf '%.2f' "$(echo "$t1 - $t0" | bc)")"
	[ "$nl" = "$l" ] || RES[${t}_r_lc]+=" run$r:$l->${nl:-none}"
	local steps; steps=" (postgres log: $(pg_steps "$(node_log "$t" "$rep")" "$t0"))"
	[ "$t" = ha ] && steps+=" (service manager: $(sup_steps "$rep" "$t0"))"
	log "$t replica restart run $r ($rep): streaming again ${back}s after the command" \
		"(patronictl $(printf '%.2f' "$(echo "$t1 - $t0" | bc)")s), longest write gap on the leader ${gap}s," \
		"leader ${l} -> ${nl:-none}$steps (load $(loadavg))"
}

# ==================================================================== main
declare -A RES
LOAD_START=$(loadavg)
log "load average at start: $LOAD_START"
start_etcd
log "etcd: $ETCD_MEMBERS members ($ETCD_URLS); rows: $ROWS; $RUNS runs"
if want ha; then
	log "pg_ha: 3 nodes, ttl $TTL"
	ha_cluster_up $TTL
	cat >"$DIR/ctl_ha.yml" <<EOF
scope: $HA_CLUSTER
namespace: /service/
etcd3:
  hosts:
$ETCD_HOSTS
restapi:
  authentication:
    username: bench
    password: '$(cut -d: -f2- "$DIR/api.auth")'
EOF
	chown "$PGUSER_OS": "$DIR/ctl_ha.yml" && chmod 600 "$DIR/ctl_ha.yml"
	supervisor_start
fi
if want pat; then
	log "Patroni: 3 nodes, ttl $TTL loop_wait 2 retry_timeout 3"
	pat_cluster_up benchpat $TTL 2 3
fi
for t in ha pat; do
	want $t || continue
	wait_until 60 healthy $t || die "$t: cluster not healthy at the start ($WHY)"
	ctl $t list >"$DIR/logs/${t}_list_start.txt" 2>&1 || die "$t: patronictl list failed: $(cat "$DIR/logs/${t}_list_start.txt")"
done

for r in $(seq "$RUNS"); do
	order="ha pat"; [ $((r % 2)) = 0 ] && order="pat ha"
	if row leader; then
		for t in $order; do want "$t" && restart_leader_run "$t" "$r"; done
	fi
	if row replica; then
		for t in $order; do want "$t" && restart_replica_run "$t" "$r"; done
	fi
done
for t in ha pat; do want $t && ctl $t list >"$DIR/logs/${t}_list_end.txt" 2>&1; done
LOAD_END=$(loadavg)

# ================================================================= report
lost_total() { echo "$1" | tr ' ' '\n' | awk -F/ 'NF==2 { l+=$1; a+=$2; n++ } END { if (n) printf "%d of %d", l, a; else print "n/a" }'; }
fo_total() { # "no; no; YES ..." -> "none in N" or the count
	local n y
	n=$(echo "$1" | tr ';' '\n' | grep -c .); y=$(echo "$1" | tr ';' '\n' | grep -c YES)
	[ "$y" = 0 ] && echo "none in $n" || echo "$y in $n"
}
line() { printf '%-52s %12s   %12s   %s\n' "$@"; }
rowline() { # label key
	local a b; a=$(med "${RES[ha_$2]:-}"); b=$(med "${RES[pat_$2]:-}")
	line "$1" "$a" "$b" "$(ratio "$a" "$b")"
}
echo
echo "=== restart_bench: medians of $RUNS runs; load average at start $LOAD_START, at end $LOAD_END ==="
want ha && echo "pg_ha's service manager: RestartSec=$RESTART_SEC (contrib/systemd/pg_ha@.service has 2)"
line "measurement" "pg_ha" "Patroni" "pg_ha/Patroni"
if row leader; then
	rowline "leader restart: longest write gap, s" l_gap
	rowline "leader restart: command -> leader writable, s" l_back
	rowline "leader restart: patronictl duration, s" l_ctl
	rowline "leader restart: failed writes" l_err
	line "leader restart: failovers" "$(fo_total "${RES[ha_l_fo]:-}")" "$(fo_total "${RES[pat_l_fo]:-}")" ""
	line "leader restart: acked writes missing, all runs" "$(lost_total "${RES[ha_l_lost]:-}")" "$(lost_total "${RES[pat_l_lost]:-}")" ""
fi
if row replica; then
	rowline "replica restart: command -> streaming again, s" r_back
	rowline "replica restart: patronictl duration, s" r_ctl
	rowline "replica restart: longest write gap (leader), s" r_gap
fi
echo
if row leader; then
	for k in l_gap l_back l_ctl l_err l_lost; do
		echo "  leader $k: pg_ha [${RES[ha_$k]:-} ]  Patroni [${RES[pat_$k]:-} ]"
	done
	echo "  leader failover: pg_ha [${RES[ha_l_fo]:-}]  Patroni [${RES[pat_l_fo]:-}]"
fi
if row replica; then
	for k in r_back r_ctl r_gap; do
		echo "  replica $k: pg_ha [${RES[ha_$k]:-} ]  Patroni [${RES[pat_$k]:-} ]"
	done
	echo "  replica restarts during which the leader changed: pg_ha [${RES[ha_r_lc]:-} ]  Patroni [${RES[pat_r_lc]:-} ]"
fi
