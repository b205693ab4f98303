# test/bench/lib.sh - shared helpers for the pg_ha benchmarks (sourced).
#
# Everything runs on loopback under a fresh work directory that is removed on
# exit; every process started here is stopped by its PID.  Run as a non-root
# user (postgres refuses root); as root the scripts re-run themselves as
# $BENCH_USER (default postgres) with runuser.

PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
BENCH_USER=${BENCH_USER:-postgres}

bench_as_user() {
	if [ "$(id -u)" = 0 ]; then
		local copy
		copy=$(mktemp -d /tmp/pg_ha_bench_src.XXXXXX)
		cp "$BENCH_DIR"/*.sh "$copy"/
		chown -R "$BENCH_USER" "$copy"
		exec runuser -u "$BENCH_USER" -- env BENCH_SRC_COPY="$copy" bash "$copy/$(basename "$0")" "$@"
	fi
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

PIDS=()
W=""
bench_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for d in "$W"/pg_*; do
		[ -f "$d/postmaster.pid" ] && "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
	done
	sleep 0.5
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	[ -n "$W" ] && [ -z "${BENCH_KEEP:-}" ] && rm -rf "$W"
	[ -n "${BENCH_SRC_COPY:-}" ] && rm -rf "$BENCH_SRC_COPY"
	return 0
}

bench_workdir() {
	W=$(mktemp -d /tmp/pg_ha_bench.XXXXXX)
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	# below the kernel's ephemeral range (32768-60999), where outgoing
	# connections would take the ports we pick
	BASE=$((20000 + RANDOM % 12000))
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s
wait_for() {
	local t=$1; shift
	local end=$((SECONDS + t))
	while [ $SECONDS -lt $end ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1"; }
is_200() { [ "$(http_code "$1")" = 200 ]; }

start_etcd() {
	local port=$1 peer=$2
	etcd --name bench --data-dir "$W/etcd" \
		--listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "bench=http://127.0.0.1:$peer" >"$W/etcd.log" 2>&1 &
	PIDS+=($!)
	disown $! 2>/dev/null || true
	wait_for 30 etcdctl --endpoints "http://127.0.0.1:$port" endpoint health || die "etcd did not start"
}

# start_pg_ha NAME PORT API METRICS ETCD_PORT [extra conf lines]
start_pg_ha() {
	local name=$1 port=$2 api=$3 metrics=$4 etcd=$5 extra=${6:-}
	local d="$W/pg_$name"
	"$PGBIN/initdb" -D "$d" -A trust -U postgres >/dev/null || die "initdb failed"
	cat >>"$d/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
shared_preload_libraries = 'pg_ha'
pg_ha.etcd_endpoints = 'http://127.0.0.1:$etcd'
pg_ha.namespace = '/pg_ha_bench'
pg_ha.cluster = 'bench_$name'
pg_ha.node_name = '$name'
pg_ha.connect_address = '127.0.0.1:$port'
pg_ha.api_listen = '127.0.0.1:$api'
pg_ha.metrics_listen = '127.0.0.1:$metrics'
$extra
EOF
	"$PGBIN/pg_ctl" -D "$d" -l "$W/$name.log" -w start >/dev/null ||
		{ tail -5 "$W/$name.log" >&2; die "postgres $name did not start (a port in use? run again)"; }
}

# postmaster PID of a data directory
pm_pid() { head -1 "$1/postmaster.pid"; }

# PID of the child of postmaster $1 whose command line matches $2
child_pid() { ps -o pid=,args= --ppid "$1" | awk -v pat="$2" 'index($0, pat) { print $1; exit }'; }

# CPU time of PIDs in microseconds (schedstat: nanoseconds on CPU, all
# threads of the process; finer than the 10 ms ticks of /proc/PID/stat)
cpu_us() {
	local total=0 p t f
	for p in "$@"; do
		[ -d "/proc/$p/task" ] || continue
		for f in /proc/"$p"/task/*/schedstat; do
			t=$(awk '{ print $1 }' "$f" 2>/dev/null || echo 0)
			total=$((total + ${t:-0}))
		done
	done
	echo $((total / 1000))
}

psql_at() { "$PGBIN/psql" -X -At -h "$W" -p "$1" -d postgres -c "$2"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.1fx", a / b }'; }

# CPU time of PIDs in microseconds from /proc/PID/stat (utime + stime, 10 ms
# ticks): counts threads that already exited, as Patroni's per-request
# threads do.
cpu_us_ticks() {
	local total=0 p t hz
	hz=$(getconf CLK_TCK)
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")
		total=$((total + t))
	done
	echo $((total * 1000000 / hz))
}

# write_patroni_yml FILE NAME PORT API ETCD_PORT DATA_DIR [TTL LOOP_WAIT RETRY]:
# a Patroni 3.0.2 node of cluster "bench" under namespace /patroni_bench/
write_patroni_yml() {
	local file=$1 name=$2 port=$3 api=$4 etcd=$5 data=$6
	local ttl=${7:-30} loop=${8:-10} retry=${9:-10}
	cat >"$file" <<EOF
scope: bench
namespace: /patroni_bench/
name: $name
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
etcd3:
  hosts: 127.0.0.1:$etcd
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop
    retry_timeout: $retry
  initdb:
  - encoding: UTF8
  - auth: trust
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$port
  connect_address: 127.0.0.1:$port
  data_dir: $data
  bin_dir: $PGBIN
  pgpass: $data.pgpass
  authentication:
    superuser: {username: postgres}
    replication: {username: postgres}
  parameters:
    unix_socket_directories: '$W'
EOF
}
