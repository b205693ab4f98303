# shellcheck shell=bash
# test/bench/cluster_lib.sh - 3-node pg_ha and Patroni 3.0.2 clusters on one
# etcd, with a writing client, for failover_bench.sh and sync_bench.sh
# (sourced).
#
# Not lib.sh: these scripts run as root and drop to the postgres user per
# process (setpriv), keep their work directory under $DIR, and talk to
# postgres over TCP, where lib.sh's helpers of the same names (start_etcd,
# psql_at, die) re-run the whole script as postgres and use a socket
# directory.
#
# The sourcing script sets DIR (work directory) and ONLY (pg_ha|patroni|
# empty) first, then calls bench_check_prereqs and bench_init.  Optional:
# ETCD_MEMBERS (1 or 3), PG_PARAMS (lines "name value", the postgres settings
# both tools get), HA_EXTRA_CONF (more postgresql.conf lines for pg_ha),
# PAT_DCS_EXTRA (more lines under Patroni's bootstrap.dcs, indented 4).

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PY=/usr/bin/python3          # Debian's, where psycopg2 and patroni live
PATRONI=/usr/bin/patroni
PATRONICTL=/usr/bin/patronictl
PGUSER_OS=postgres
ETCD_MEMBERS=${ETCD_MEMBERS:-1}
# Settings both tools get.  wal_keep_size is Patroni's default, given to
# pg_ha too so that the two postgres configurations match.
PG_PARAMS=${PG_PARAMS:-"max_connections 40
wal_log_hints on
wal_retrieve_retry_interval 500ms
wal_keep_size 128MB"}
HA_EXTRA_CONF=${HA_EXTRA_CONF:-}
PAT_DCS_EXTRA=${PAT_DCS_EXTRA:-}

die() { echo "${0##*/}: $*" >&2; exit 2; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
now() { date +%s.%N; }

bench_check_prereqs() {
	[ "$(id -u)" = 0 ] || die "run as root (servers run as the $PGUSER_OS user)"
	local b
	for b in etcd etcdctl "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/pg_basebackup" "$PGBIN/psql" setpriv bc curl; do
		command -v "$b" >/dev/null || die "missing $b"
	done
	[ -f "$("$PGBIN/pg_config" --pkglibdir 2>/dev/null || pg_config --pkglibdir)/pg_ha.so" ] ||
		die "pg_ha is not installed (make install)"
	if [ "$ONLY" != pg_ha ]; then
		[ -x "$PATRONI" ] || die "patroni is not installed (apt-get install patroni)"
	fi
	"$PY" -c 'import psycopg2' 2>/dev/null || die "$PY has no psycopg2 (python3-psycopg2)"
}

# ------------------------------------------------------------ process care
PIDS=()            # processes started here (etcd, patroni, writers)
PGDATAS=()         # pg_ha data directories (pg_ctl stop at exit)
PATDATAS=()        # patroni data directories (postmaster killed at exit)

as_pg() { setpriv --reuid="$PGUSER_OS" --regid="$PGUSER_OS" --init-groups -- env HOME="$DIR" "$@"; }
# as_pg in the background, the process itself in BG_PID (setpriv and env
# exec, so that PID is the program's: killing it kills the program).
# Output goes to the file $1.
BG_PID=
as_pg_bg() {
	local out=$1; shift
	setpriv --reuid="$PGUSER_OS" --regid="$PGUSER_OS" --init-groups -- \
		env HOME="$DIR" "$@" >>"$out" 2>&1 </dev/null &
	BG_PID=$!
	PIDS+=("$BG_PID")
}

pm_pid() { # data dir -> postmaster pid (or nothing)
	[ -f "$1/postmaster.pid" ] && head -1 "$1/postmaster.pid"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	log "cleaning up"
	disown -a 2>/dev/null   # no "Killed" notices for the kills below
	for p in "${PIDS[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
	for d in "${PGDATAS[@]}"; do
		alive "$(pm_pid "$d")" && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w -t 20 stop >/dev/null 2>&1
	done
	sleep 1
	for d in "${PATDATAS[@]}"; do
		local p; p=$(pm_pid "$d")
		alive "$p" && kill -QUIT "$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
	sleep 1
	for d in "${PGDATAS[@]}" "${PATDATAS[@]}"; do
		local p; p=$(pm_pid "$d")
		alive "$p" && kill -KILL "$p" 2>/dev/null
	done
	if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$DIR"; else log "kept $DIR"; fi
	exit $rc
}

# wait_until SECONDS CMD...: poll CMD every 100 ms; false on timeout.
wait_until() {
	local limit=$1; shift
	local end; end=$(echo "$(now) + $limit" | bc)
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ "$(echo "$(now) > $end" | bc)" = 1 ] && return 1
		sleep 0.1
	done
}

declare -A USED_PORTS
free_port() {
	local p
	while :; do
		p=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
		[ -z "${USED_PORTS[$p]:-}" ] && { USED_PORTS[$p]=1; echo "$p"; return; }
	done
}

# a fresh work directory, the client script, and the cleanup trap
bench_init() {
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	rm -rf "$DIR"
	mkdir -p "$DIR/sock" "$DIR/logs"
	write_writer_py
	chown -R "$PGUSER_OS": "$DIR"
	chmod 755 "$DIR"
}

# ------------------------------------------------------------------- etcd
# ETCD_MEMBERS members on loopback; ETCD_URL is the first, ETCD_URLS all of
# them (comma-separated), ETCD_HOSTS the host:port list for Patroni.
declare -A ETCD_CPORT ETCD_PPORT ETCD_PID
ETCD_URL='' ETCD_URLS='' ETCD_HOSTS=''
etcd_start_member() { # i
	local i=$1 cluster="" j
	for j in $(seq "$ETCD_MEMBERS"); do
		cluster+="${cluster:+,}e$j=http://127.0.0.1:${ETCD_PPORT[$j]}"
	done
	# on a restart the data directory exists and the --initial-* flags
	# are ignored
	as_pg_bg "$DIR/logs/etcd$i.log" etcd --name "e$i" --data-dir "$DIR/etcd$i" \
		--listen-client-urls "http://127.0.0.1:${ETCD_CPORT[$i]}" \
		--advertise-client-urls "http://127.0.0.1:${ETCD_CPORT[$i]}" \
		--listen-peer-urls "http://127.0.0.1:${ETCD_PPORT[$i]}" \
		--initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PPORT[$i]}" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--heartbeat-interval 50 --election-timeout 500 \
		--logger zap --log-outputs stderr
	ETCD_PID[$i]=$BG_PID
}
etcd_healthy() { ectl endpoint health >/dev/null 2>&1; }
etcd_start_all() {
	local i
	for i in $(seq "$ETCD_MEMBERS"); do etcd_start_member "$i"; done
	wait_until 30 etcd_healthy || die "etcd did not start"
}
# every member killed (kill -9), as a lost etcd cluster
etcd_kill_all() {
	local i
	for i in $(seq "$ETCD_MEMBERS"); do kill -KILL "${ETCD_PID[$i]}" 2>/dev/null; done
	for i in $(seq "$ETCD_MEMBERS"); do wait "${ETCD_PID[$i]}" 2>/dev/null; done
}
# every member stopped (SIGSTOP) and resumed: clients time out instead of
# being refused, and etcd's lease clocks run on through the pause, so
# leases whose TTL passed are revoked when it resumes (a restart instead
# extends every lease by its TTL)
etcd_stop_all() {
	local i
	for i in $(seq "$ETCD_MEMBERS"); do kill -STOP "${ETCD_PID[$i]}"; done
}
etcd_cont_all() {
	local i
	for i in $(seq "$ETCD_MEMBERS"); do kill -CONT "${ETCD_PID[$i]}"; done
	wait_until 30 etcd_healthy || die "etcd did not recover after SIGCONT"
}
start_etcd() {
	local i
	for i in $(seq "$ETCD_MEMBERS"); do
		ETCD_CPORT[$i]=$(free_port); ETCD_PPORT[$i]=$(free_port)
		ETCD_URLS+="${ETCD_URLS:+,}http://127.0.0.1:${ETCD_CPORT[$i]}"
		ETCD_HOSTS+="  - 127.0.0.1:${ETCD_CPORT[$i]}"$'\n'
	done
	ETCD_URL=http://127.0.0.1:${ETCD_CPORT[1]}
	etcd_start_all
}
ectl() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URLS" --command-timeout 3s "$@"; }
leader_of() { ectl get "/service/$1/leader" --print-value-only 2>/dev/null; }
leader_is() { [ "$(leader_of "$1")" = "$2" ]; }
leader_not() { local l; l=$(leader_of "$1"); [ -n "$l" ] && [ "$l" != "$2" ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# ------------------------------------------------------------ the client
write_writer_py() {
	cat >"$DIR/writer.py" <<'EOF'
# writer.py DSN OUT INTERVAL DURATION: one INSERT per INTERVAL seconds,
# reconnecting on any error; logs "ok <time> <id>" once the commit is
# acknowledged, "err <time> <why>" otherwise.
import sys, time, psycopg2
dsn, out, interval, duration = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
end = time.time() + duration
conn = None
with open(out, "w", buffering=1) as f:
    while time.time() < end:
        t0 = time.time()
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO bench_w (t) VALUES (clock_timestamp()) RETURNING id")
                wid = cur.fetchone()[0]
            f.write("ok %.6f %d\n" % (time.time(), wid))
        except Exception as e:
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            f.write("err %.6f %s\n" % (time.time(), msg))
            try:
                conn.close()
            except Exception:
                pass
            conn = None
        left = interval - (time.time() - t0)
        if left > 0:
            time.sleep(left)
EOF
}

dsn_for() { # port1 port2 port3
	echo "host=127.0.0.1,127.0.0.1,127.0.0.1 port=$1,$2,$3 dbname=postgres user=postgres target_session_attrs=read-write connect_timeout=2 options='-c statement_timeout=2000'"
}
WRITER_PID=
start_writer() { # out interval duration dsn
	as_pg_bg "$DIR/logs/writer.err" "$PY" "$DIR/writer.py" "$4" "$1" "$2" "$3"
	WRITER_PID=$BG_PID
}
stop_writer() {
	alive "$WRITER_PID" && kill -TERM "$WRITER_PID" 2>/dev/null
	wait "$WRITER_PID" 2>/dev/null
	WRITER_PID=
}
# first "ok" after the first error that follows time T, minus T (seconds);
# empty if none.  (An INSERT in flight at T may still complete: it is not
# a write on the new primary.)
first_ok_after() { awk -v t="$2" '$2>t && $1=="err" {e=1} e && $1=="ok" {printf "%.3f\n", $2-t; exit}' "$1"; }
ok_after() { [ -n "$(first_ok_after "$1" "$2")" ]; }
# longest gap between consecutive "ok" lines (seconds)
max_ok_gap() { awk '$1=="ok" { if (p) { g=$2-p; if (g>m) m=g } p=$2 } END {printf "%.3f\n", m}' "$1"; }
err_count() { grep -c '^err' "$1"; }
median() { sort -n | awk '{a[NR]=$1} END { if (NR==0) {print "n/a"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

psql_at() { # port sql
	as_pg "$PGBIN/psql" -X -At -h 127.0.0.1 -p "$1" -d postgres -c "$2" 2>/dev/null
}
# number of streaming replicas of the server on port
streaming_count() { psql_at "$1" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"; }
has_replicas() { [ "$(streaming_count "$1")" = "$2" ]; }

# LOST_ACKED, ACKED: of the ids the writer log $1 says were acknowledged,
# how many the table on port $2 lacks, and how many there were.
count_lost_acked() {
	local log=$1 port=$2
	awk '$1=="ok" {print $3}' "$log" | sort -u >"$log.acked"
	ACKED=$(wc -l <"$log.acked")
	psql_at "$port" "SELECT id FROM bench_w" | sort -u >"$log.table" ||
		{ LOST_ACKED=unknown; return; }
	LOST_ACKED=$(comm -23 "$log.acked" "$log.table" | wc -l)
	[ "$LOST_ACKED" = 0 ] || log "acknowledged but missing on port $port: $(comm -23 "$log.acked" "$log.table" | head -5 | tr '\n' ' ')"
}

# PG_PARAMS as postgresql.conf lines and as Patroni YAML (indent $1)
pg_params_conf() { echo "$PG_PARAMS" | awk 'NF { v=$2; for (i=3;i<=NF;i++) v=v" "$i; printf "%s = '\''%s'\''\n", $1, v }'; }
pg_params_yaml() { echo "$PG_PARAMS" | awk -v ind="$1" 'NF { v=$2; for (i=3;i<=NF;i++) v=v" "$i; printf "%*s%s: '\''%s'\''\n", ind, "", $1, v }'; }

# =================================================================== pg_ha
declare -A HA_PORT HA_DATA
HA_CLUSTER=benchha
ha_conf() { # i ttl
	local i=$1 ttl=$2 d=${HA_DATA[$1]}
	cat >"$d/postgresql.conf" <<EOF
port = ${HA_PORT[$i]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
$(pg_params_conf)
shared_preload_libraries = 'pg_ha'
pg_ha.etcd_endpoints = '$ETCD_URLS'
pg_ha.cluster = '$HA_CLUSTER'
pg_ha.node_name = 'node$i'
pg_ha.ttl = $ttl
pg_ha.connect_address = '127.0.0.1:${HA_PORT[$i]}'
pg_ha.api_listen = '127.0.0.1:$(free_port)'
pg_ha.metrics_listen = '127.0.0.1:$(free_port)'
$HA_EXTRA_CONF
EOF
	chown "$PGUSER_OS": "$d/postgresql.conf"
}
ha_start() { # i
	as_pg "$PGBIN/pg_ctl" -D "${HA_DATA[$1]}" -l "$DIR/logs/ha_node$1.log" -w -t 60 start >/dev/null ||
		die "pg_ha node$1 did not start (see $DIR/logs/ha_node$1.log)"
}
ha_clone() { # i from_port ttl
	local i=$1
	rm -rf "${HA_DATA[$i]}"
	as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$2" -U postgres -D "${HA_DATA[$i]}" \
		-R -X stream -c fast >/dev/null 2>&1 || die "pg_basebackup for node$i failed"
	ha_conf "$i" "$3"
	ha_start "$i"
}
ha_cluster_up() { # ttl
	local ttl=$1 i
	for i in 1 2 3; do
		HA_PORT[$i]=$(free_port)
		HA_DATA[$i]=$DIR/ha/node$i
		PGDATAS+=("${HA_DATA[$i]}")
	done
	ectl del --prefix "/service/$HA_CLUSTER/" >/dev/null
	mkdir -p "$DIR/ha" && chown "$PGUSER_OS": "$DIR/ha"
	as_pg "$PGBIN/initdb" -D "${HA_DATA[1]}" --auth=trust -U postgres >/dev/null || die "initdb failed"
	ha_conf 1 "$ttl"
	ha_start 1
	local t0; t0=$(now)
	until psql_at "${HA_PORT[1]}" "CREATE EXTENSION IF NOT EXISTS pg_ha" >/dev/null; do
		[ "$(echo "$(now) - $t0 > 30" | bc)" = 1 ] && die "CREATE EXTENSION pg_ha kept failing"
		sleep 0.2
	done
	psql_at "${HA_PORT[1]}" "CREATE TABLE bench_w (id bigserial PRIMARY KEY, t timestamptz)" >/dev/null
	ha_clone 2 "${HA_PORT[1]}" "$ttl"
	ha_clone 3 "${HA_PORT[1]}" "$ttl"
	wait_until 60 has_replicas "${HA_PORT[1]}" 2 || die "pg_ha replicas are not streaming"
	wait_until 30 leader_is $HA_CLUSTER node1 || die "pg_ha: node1 holds no leader key"
}
ha_cluster_down() {
	local i
	for i in 1 2 3; do
		alive "$(pm_pid "${HA_DATA[$i]}")" &&
			as_pg "$PGBIN/pg_ctl" -D "${HA_DATA[$i]}" -m fast -w -t 30 stop >/dev/null 2>&1
	done
}
ha_leader_port() { local l; l=$(leader_of $HA_CLUSTER); [ -n "$l" ] && echo "${HA_PORT[${l#node}]}"; }
# The service manager's part (systemd Restart= with ExecStartPre "pg_hactl
# rejoin --if-needed"): a node whose postgres stopped (a diverged former
# primary shuts down for pg_rewind) is rejoined and started again.
HA_REWINDS=0
ha_supervise() {
	local i
	for i in 1 2 3; do
		alive "$(pm_pid "${HA_DATA[$i]}")" && continue
		HA_REWINDS=$((HA_REWINDS + 1))
		log "pg_ha: node$i stopped (diverged?): pg_hactl rejoin --if-needed, then start" >&2
		as_pg timeout 120 "$PGBIN/pg_hactl" rejoin --pgdata "${HA_DATA[$i]}" --if-needed \
			>>"$DIR/logs/ha_rejoin_node$i.log" 2>&1 ||
			log "pg_hactl rejoin failed for node$i: $(tail -2 "$DIR/logs/ha_rejoin_node$i.log")" >&2
		as_pg "$PGBIN/pg_ctl" -D "${HA_DATA[$i]}" -l "$DIR/logs/ha_node$i.log" -w -t 60 start >/dev/null 2>&1
	done
}
ha_healthy() { # leader has 2 streaming replicas, no failover request pending
	ha_supervise
	local l; l=$(leader_of $HA_CLUSTER)
	WHY="no leader"; [ -n "$l" ] || return 1
	WHY="$l: $(streaming_count "${HA_PORT[${l#node}]}") streaming replicas"
	has_replicas "${HA_PORT[${l#node}]}" 2 || return 1
	WHY="failover key still set"
	[ -z "$(ectl get "/service/$HA_CLUSTER/failover" --print-value-only)" ] || return 1
	WHY="$l: in recovery"
	[ "$(psql_at "${HA_PORT[${l#node}]}" "SELECT pg_is_in_recovery()")" = f ]
}

# kill -9 of the leader's postmaster under a writer (one INSERT per 20 ms);
# RUN_A = seconds to the first write after it, LOST_ACKED/ACKED from the
# new leader's table.  The killed node comes back as a fresh clone.
ha_failover_run() { # ttl run
	local ttl=$1 run=$2; local out=$DIR/logs/ha_failover_${ttl}_$run.log
	local l i pid t_kill secs
	l=$(leader_of $HA_CLUSTER); i=${l#node}
	pid=$(pm_pid "${HA_DATA[$i]}")
	start_writer "$out" 0.02 $((3 * ttl + 40)) "$(dsn_for "${HA_PORT[1]}" "${HA_PORT[2]}" "${HA_PORT[3]}")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "pg_ha: the writer cannot write"; }
	sleep 2
	t_kill=$(now)
	kill -KILL "$pid"
	wait_until $((3 * ttl + 30)) ok_after "$out" "$t_kill"
	secs=$(first_ok_after "$out" "$t_kill")
	stop_writer
	RUN_A=${secs:-timeout}
	# put the killed node back as a replica of the new leader (fresh clone)
	wait_until 30 leader_not $HA_CLUSTER "$l" || die "pg_ha: no new leader"
	local nl; nl=$(leader_of $HA_CLUSTER)
	count_lost_acked "$out" "${HA_PORT[${nl#node}]}"
	wait_until 20 pid_gone "$pid"
	sleep 1   # the killed postmaster's children exit by themselves
	ha_clone "$i" "${HA_PORT[${nl#node}]}" "$ttl"
	wait_until 60 ha_healthy || die "pg_ha: cluster not healthy after re-adding node$i ($WHY)"
}

# ================================================================= Patroni
declare -A PAT_PORT PAT_DATA PAT_API PAT_PID
PAT_CLUSTER=
pat_yml() { # i ttl loop_wait retry_timeout
	local i=$1
	cat >"$DIR/pat/pat$i.yml" <<EOF
scope: $PAT_CLUSTER
namespace: /service/
name: pat$i
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${PAT_API[$i]}
  connect_address: 127.0.0.1:${PAT_API[$i]}
etcd3:
  hosts:
$ETCD_HOSTS
bootstrap:
  dcs:
    ttl: $2
    loop_wait: $3
    retry_timeout: $4
    maximum_lag_on_failover: 1048576
$PAT_DCS_EXTRA
    postgresql:
      use_pg_rewind: true
      parameters:
$(pg_params_yaml 8)
  initdb:
  - encoding: UTF8
postgresql:
  listen: 127.0.0.1:${PAT_PORT[$i]}
  connect_address: 127.0.0.1:${PAT_PORT[$i]}
  data_dir: ${PAT_DATA[$i]}
  bin_dir: $PGBIN
  pgpass: $DIR/pat/pgpass$i
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: '$DIR/sock'
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
EOF
	chown "$PGUSER_OS": "$DIR/pat/pat$i.yml"
}
pat_start() { # i
	as_pg_bg "$DIR/logs/patroni_${PAT_CLUSTER}_$1.log" "$PY" "$PATRONI" "$DIR/pat/pat$1.yml"
	PAT_PID[$1]=$BG_PID
}
pat_cluster_up() { # name ttl loop_wait retry_timeout
	PAT_CLUSTER=$1
	local i
	mkdir -p "$DIR/pat" && chown "$PGUSER_OS": "$DIR/pat"
	for i in 1 2 3; do
		PAT_PORT[$i]=$(free_port); PAT_API[$i]=$(free_port)
		PAT_DATA[$i]=$DIR/pat/${PAT_CLUSTER}_$i
		PATDATAS+=("${PAT_DATA[$i]}")
		pat_yml "$i" "$2" "$3" "$4"
	done
	ectl del --prefix "/service/$PAT_CLUSTER/" >/dev/null
	pat_start 1
	wait_until 90 leader_is "$PAT_CLUSTER" pat1 || die "patroni: pat1 did not bootstrap"
	wait_until 30 psql_at "${PAT_PORT[1]}" "SELECT 1" || die "patroni: pat1 postgres not up"
	psql_at "${PAT_PORT[1]}" "CREATE TABLE bench_w (id bigserial PRIMARY KEY, t timestamptz)" >/dev/null
	pat_start 2
	pat_start 3
	wait_until 120 has_replicas "${PAT_PORT[1]}" 2 || die "patroni replicas are not streaming"
}
pat_cluster_down() {
	local i
	for i in 1 2 3; do alive "${PAT_PID[$i]:-}" && kill -TERM "${PAT_PID[$i]}"; done
	for i in 1 2 3; do
		[ -n "${PAT_PID[$i]:-}" ] && wait_until 40 pid_gone "${PAT_PID[$i]}"
		alive "$(pm_pid "${PAT_DATA[$i]}")" && kill -QUIT "$(pm_pid "${PAT_DATA[$i]}")"
	done
	sleep 1
}
pat_leader_port() { local l; l=$(leader_of "$PAT_CLUSTER"); [ -n "$l" ] && echo "${PAT_PORT[${l#pat}]}"; }
pat_leader_api() { local l; l=$(leader_of "$PAT_CLUSTER"); [ -n "$l" ] && echo "${PAT_API[${l#pat}]}"; }
WHY=
pat_healthy() {
	local l; l=$(leader_of "$PAT_CLUSTER")
	WHY="no leader"; [ -n "$l" ] || return 1
	WHY="$l: $(streaming_count "${PAT_PORT[${l#pat}]}") streaming replicas"
	has_replicas "${PAT_PORT[${l#pat}]}" 2 || return 1
	WHY="$l: in recovery"
	[ "$(psql_at "${PAT_PORT[${l#pat}]}" "SELECT pg_is_in_recovery()")" = f ]
}

# as ha_failover_run; the Patroni process of the node is killed with its
# postmaster, and Patroni clones the emptied data directory itself.
pat_failover_run() { # ttl run
	local ttl=$1 run=$2; local out=$DIR/logs/pat_${PAT_CLUSTER}_failover_$run.log
	local l i pid t_kill secs
	l=$(leader_of "$PAT_CLUSTER"); i=${l#pat}
	pid=$(pm_pid "${PAT_DATA[$i]}")
	start_writer "$out" 0.02 $((3 * ttl + 40)) "$(dsn_for "${PAT_PORT[1]}" "${PAT_PORT[2]}" "${PAT_PORT[3]}")"
	wait_until 10 grep -q '^ok' "$out" || { stop_writer; die "patroni: the writer cannot write"; }
	sleep 2
	t_kill=$(now)
	kill -KILL "${PAT_PID[$i]}" "$pid"
	wait_until $((3 * ttl + 30)) ok_after "$out" "$t_kill"
	secs=$(first_ok_after "$out" "$t_kill")
	stop_writer
	RUN_A=${secs:-timeout}
	wait "${PAT_PID[$i]}" 2>/dev/null
	wait_until 60 leader_not "$PAT_CLUSTER" "$l" || die "patroni: no new leader"
	local nl; nl=$(leader_of "$PAT_CLUSTER")
	count_lost_acked "$out" "${PAT_PORT[${nl#pat}]}"
	wait_until 20 pid_gone "$pid"
	sleep 1
	# back as a replica: Patroni clones an empty data directory itself
	rm -rf "${PAT_DATA[$i]}"
	pat_start "$i"
	wait_until 120 pat_healthy || die "patroni: cluster not healthy after re-adding pat$i ($WHY)"
}

# ================================================================= report
med() { echo "$1" | tr ' ' '\n' | grep -E '^[0-9.]+$' | median; }
ratio() { # a b
	if [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]] && [ "$(echo "$2 > 0" | bc)" = 1 ]; then
		echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'
	else echo n/a; fi
}
