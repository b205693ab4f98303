#!/bin/bash
# archive_bench.sh - WAL archiving throughput, side by side in one run:
#
#   pg_ha (archive_library = 'pg_ha', look-ahead pushers)  zstd-1, zstd-3, lz4, none
#   pgBackRest archive-push, async, process-max 2, zst-1 and zst-3 (Debian 2.45)
#   archive_command copying with fsync (cp, sync FILE, mv)
#   the disk's fsync'd write limit (dd oflag=direct,dsync, 16 MB blocks)
#
# One template cluster is filled with BENCH_SEGMENTS WAL segments while
# archiving is off-line (archive_command unset: everything stays .ready).
# Each method gets a fresh copy of it, starts with archiving unconfigured,
# then the method is switched on with a reload and timed until
# pg_stat_archiver has archived every segment and nothing is .ready.
#
# Not part of `make installcheck`.  Run as root (postgres runs as the
# postgres user; pgbackrest is installed if missing):
#   test/bench/archive_bench.sh            # 300 segments under /var/tmp
#   BENCH_SEGMENTS=100 BENCH_DIR=/mnt/x test/bench/archive_bench.sh
set -euo pipefail

SEGMENTS=${BENCH_SEGMENTS:-300}
DIR=${BENCH_DIR:-/var/tmp/pg_ha_archive_bench}
PORT=${BENCH_PORT:-54432}
PGBIN=$(pg_config --bindir)
SEG_MB=16

if [ "$(id -u)" != 0 ]; then
	echo "run as root (postgres commands run as the postgres user)" >&2
	exit 2
fi
command -v pgbackrest >/dev/null || apt-get install -y pgbackrest >/dev/null
command -v pgbench >/dev/null || [ -x "$PGBIN/pgbench" ] || { echo "pgbench missing" >&2; exit 2; }
[ -f "$(pg_config --pkglibdir)/pg_ha.so" ] || { echo "pg_ha is not installed (make install)" >&2; exit 2; }

as_pg() { su postgres -s /bin/bash -c "$*"; }
psql_q() { as_pg "$PGBIN/psql -X -At -h $DIR -p $PORT -d postgres -c \"$1\""; }
now() { date +%s.%N; }

stop_pg() {
	if [ -f "$DIR/run/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl -D $DIR/run -m immediate -w stop" >/dev/null 2>&1 || true
	fi
}
trap stop_pg EXIT

# BENCH_REUSE=1 keeps $DIR (and its WAL template) for the next run
if [ "${BENCH_REUSE:-0}" != 1 ] || [ ! -f "$DIR/template/PG_VERSION" ]; then
	rm -rf "$DIR"
fi
mkdir -p "$DIR"
chown postgres "$DIR"

echo "== pg_ha archive benchmark: $SEGMENTS x ${SEG_MB} MB segments in $DIR ($(nproc) CPUs)"

# ---------------------------------------------------------------- disk limit
sync
dd_out=$(dd if=/dev/zero of="$DIR/dd.out" bs=16M count=64 oflag=direct,dsync 2>&1 | tail -1)
rm -f "$DIR/dd.out"
disk_mbs=$(echo "$dd_out" | awk '{ v = $(NF-1); u = $NF;
	if (u ~ /^GB/) v *= 1000; else if (u ~ /^kB/) v /= 1000; printf "%.0f", v * 1000 * 1000 / 1048576 }')
echo "disk: dd 16M blocks, O_DIRECT|O_DSYNC: $dd_out"

# ---------------------------------------------------------------- template
if [ ! -f "$DIR/template/PG_VERSION" ]; then
as_pg "$PGBIN/initdb -D $DIR/template -A trust --no-sync" >/dev/null
cat >>"$DIR/template/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$DIR'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = ''
max_wal_size = '64GB'
checkpoint_timeout = '1h'
shared_buffers = '256MB'
synchronous_commit = off
cluster_name = 'bench'
EOF
as_pg "$PGBIN/pg_ctl -D $DIR/template -l $DIR/template.log -w start" >/dev/null
echo -n "generating $SEGMENTS segments of WAL (rows of random md5 text, pgbench updates) ... "
t0=$(now)
start_lsn=$(psql_q "SELECT pg_current_wal_lsn()")
# WAL about as compressible as an OLTP mix (zstd-3 ~2-3x), not pgbench's
# blank-padded filler (~15x), which would make compression nearly free
psql_q "CREATE TABLE w (id bigint, a text, b text, c int)" >/dev/null
as_pg "$PGBIN/pgbench -h $DIR -p $PORT -i -q -s 10 postgres" >/dev/null 2>&1
while :; do
	psql_q "INSERT INTO w SELECT g, md5(random()::text), md5(random()::text) || md5(random()::text), (random() * 1e9)::int FROM generate_series(1, 200000) g" >/dev/null
	as_pg "$PGBIN/pgbench -h $DIR -p $PORT -n -c 2 -j 2 -T 1 postgres" >/dev/null 2>&1
	done_bytes=$(psql_q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint")
	[ "$done_bytes" -ge $(( (SEGMENTS - 1) * SEG_MB * 1048576 )) ] && break
done
psql_q "SELECT pg_switch_wal()" >/dev/null
sleep 1
as_pg "$PGBIN/pg_ctl -D $DIR/template -m fast -w stop" >/dev/null
printf "%.0f s\n" "$(echo "$(now) - $t0" | bc)"
fi
ready=$(ls "$DIR/template/pg_wal/archive_status/" | grep -c '\.ready$' || true)

# ---------------------------------------------------------------- methods
declare -A SEGS MBS SECS NOTE

# run NAME PRELOAD CONF-WHILE-OFF CONF-TO-ENABLE [SETUP-FUNCTION]
run_method() {
	local name=$1 conf_off=$2 conf_on=$3 setup=${4:-}
	rm -rf "$DIR/run" "$DIR/repo" "$DIR/pgbr_repo" "$DIR/pgbr_spool"
	cp -a "$DIR/template" "$DIR/run"
	mkdir -p "$DIR/repo" "$DIR/pgbr_repo" "$DIR/pgbr_spool"
	chown postgres "$DIR/repo" "$DIR/pgbr_repo" "$DIR/pgbr_spool"
	printf '%s\n' "$conf_off" >>"$DIR/run/postgresql.conf"
	sync
	as_pg "$PGBIN/pg_ctl -D $DIR/run -l $DIR/run.log -w start" >/dev/null
	[ -n "$setup" ] && $setup
	printf '%s\n' "$conf_on" >>"$DIR/run/postgresql.conf"
	local base t0 t1 n
	base=$(psql_q "SELECT archived_count FROM pg_stat_archiver")
	t0=$(now)
	psql_q "SELECT pg_reload_conf()" >/dev/null
	while :; do
		n=$(ls "$DIR/run/pg_wal/archive_status/" | grep -c '\.ready$' || true)
		[ "$n" = 0 ] && break
		sleep 0.05
	done
	t1=$(now)
	n=$(( $(psql_q "SELECT archived_count FROM pg_stat_archiver") - base ))
	SECS[$name]=$(echo "$t1 - $t0" | bc -l)
	SEGS[$name]=$(echo "$n / ${SECS[$name]}" | bc -l)
	MBS[$name]=$(echo "${SEGS[$name]} * $SEG_MB" | bc -l)
	NOTE[$name]="$n files, repo $(du -sm "$DIR/repo" "$DIR/pgbr_repo" | awk '{s+=$1} END {print s}') MB"
	printf "  %-28s %6.1f s  %6.1f seg/s  %7.1f MB/s  (%s)\n" "$name" "${SECS[$name]}" \
		"${SEGS[$name]}" "${MBS[$name]}" "${NOTE[$name]}"
	stop_pg
}

PGHA_BASE="shared_preload_libraries = 'pg_ha'
pg_ha.etcd_endpoints = 'http://127.0.0.1:9'
pg_ha.etcd_timeout = 200
pg_ha.api_listen = ''
pg_ha.metrics_listen = ''
pg_ha.fencing = off
archive_library = 'pg_ha'
pg_ha.archive_parallel = ${BENCH_PARALLEL:-2}"

for level in 1 3; do
cat >"$DIR/pgbackrest$level.conf" <<EOF
[global]
repo1-path=$DIR/pgbr_repo
compress-type=zst
compress-level=$level
process-max=2
archive-async=y
spool-path=$DIR/pgbr_spool
log-level-console=warn
log-level-stderr=warn
log-level-file=off
lock-path=$DIR/pgbr_lock

[bench]
pg1-path=$DIR/run
pg1-socket-path=$DIR
pg1-port=$PORT
EOF
chown postgres "$DIR/pgbackrest$level.conf"
done
pgbr_setup() { as_pg "pgbackrest --config=$DIR/pgbackrest1.conf --stanza=bench stanza-create" >/dev/null; }
pgbr_cmd() { echo "archive_command = 'pgbackrest --config=$DIR/pgbackrest$1.conf --stanza=bench archive-push %p'"; }

echo "archiving $ready files:"
run_method "pg_ha zstd-1" "$PGHA_BASE" "pg_ha.archive_repo = '$DIR/repo'
pg_ha.archive_compression = 'zstd'
pg_ha.archive_compression_level = 1"
run_method "pgbackrest async zst-1" "" "$(pgbr_cmd 1)" pgbr_setup
run_method "pg_ha zstd-3" "$PGHA_BASE" "pg_ha.archive_repo = '$DIR/repo'
pg_ha.archive_compression = 'zstd'
pg_ha.archive_compression_level = 3"
run_method "pgbackrest async zst-3" "" "$(pgbr_cmd 3)" pgbr_setup
run_method "pg_ha lz4" "$PGHA_BASE" "pg_ha.archive_repo = '$DIR/repo'
pg_ha.archive_compression = 'lz4'"
run_method "pg_ha none" "$PGHA_BASE" "pg_ha.archive_repo = '$DIR/repo'
pg_ha.archive_compression = 'none'"
run_method "cp+fsync archive_command" "" \
	"archive_command = 'test ! -f $DIR/repo/%f && cp %p $DIR/repo/%f.tmp && sync $DIR/repo/%f.tmp && mv $DIR/repo/%f.tmp $DIR/repo/%f && sync $DIR/repo'"

disk_segs=$(echo "$disk_mbs / $SEG_MB" | bc -l)
printf "  %-28s %6s    %6.1f seg/s  %7.1f MB/s\n" "disk limit (dd direct,dsync)" "" "$disk_segs" "$disk_mbs"

echo "ratios:"
r() { echo "${SEGS[$1]} / $2" | bc -l; }
printf "  pg_ha zstd-1 / pgbackrest async zst-1 : %5.2fx   (goal >= 2x)\n" "$(r 'pg_ha zstd-1' "${SEGS['pgbackrest async zst-1']}")"
printf "  pg_ha zstd-3 / pgbackrest async zst-3 : %5.2fx   (goal >= 2x)\n" "$(r 'pg_ha zstd-3' "${SEGS['pgbackrest async zst-3']}")"
printf "  pg_ha zstd-1 / pgbackrest async zst-3 : %5.2fx   (each tool's default level)\n" "$(r 'pg_ha zstd-1' "${SEGS['pgbackrest async zst-3']}")"
printf "  pg_ha zstd-1 / cp+fsync               : %5.2fx\n" "$(r 'pg_ha zstd-1' "${SEGS['cp+fsync archive_command']}")"
printf "  pg_ha zstd-1 / disk limit             : %5.0f%%\n" "$(echo "$(r 'pg_ha zstd-1' "$disk_segs") * 100" | bc -l)"
printf "  pg_ha lz4    / disk limit             : %5.0f%%\n" "$(echo "$(r 'pg_ha lz4' "$disk_segs") * 100" | bc -l)"
printf "  pg_ha none   / disk limit             : %5.0f%%   (goal >= 70%%)\n" "$(echo "$(r 'pg_ha none' "$disk_segs") * 100" | bc -l)"
[ "${BENCH_REUSE:-0}" = 1 ] || rm -rf "$DIR"
