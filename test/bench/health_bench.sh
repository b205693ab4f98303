#!/usr/bin/env bash
# test/bench/health_bench.sh - wrk against the health API: pg_ha vs Patroni.
#
# One etcd, one pg_ha primary (pg_ha.api_listen) and one Patroni 3.0.2
# primary (its own postgres, the same etcd, another namespace) on this
# machine.  For GET /primary and OPTIONS /primary (what HAProxy sends) it
# runs `wrk -t$THREADS -c$CONNS -d${DURATION}s --latency` against each and
# prints req/s, p50/p99 latency, CPU per request of the serving processes
# (pg_ha's listener; Patroni's process plus its postgres backends), and the
# ratios.
#
# Then both APIs are switched to TLS by a reload (pg_ha.api_certfile/keyfile;
# Patroni's restapi.certfile/keyfile, SIGHUP) with one RSA-2048 certificate
# made here, and GET /primary is measured over https: keep-alive (pg_ha
# keeps the connection; Patroni closes it after each answer), a connection
# and full handshake per request (Connection: close), both pg_ha only (wrk
# cannot read Patroni's TLS answers, see below), and one request at a time on
# a new connection with a full handshake (openssl s_time), pg_ha vs Patroni,
# with ratios.
#
# Then, under a flood of $FLOOD connections to the port being checked that
# send nothing (idle) or a byte a second (slowloris), and that the flooding
# client reopens as soon as the server closes them: $CHECKS checks of
# GET /primary by curl, each on a new connection as HAProxy sends them, and
# their p50/p99 (connect included; a failed check counts as its 2 s
# timeout) and failures (not 200 within 2 s; a row stops after 10 in a
# row), for pg_ha and Patroni.
#
#   test/bench/health_bench.sh            # as root or as the postgres user
#   DURATION=30 CONNS=100 test/bench/health_bench.sh
#   RATES="1000 10000 20000" test/bench/health_bench.sh   # fixed-rate rows
#   PG_HA_LIB_DIR=/path/to/build test/bench/health_bench.sh  # that pg_ha.so, not the installed one
#   FLOOD_ONLY=1 FLOOD=5000 CHECKS=200 test/bench/health_bench.sh   # flood rows only
#
# Needs: pg_ha installed, etcd, wrk, patroni (Debian 3.0.2, run with
# /usr/bin/python3), curl, openssl.  Not part of `make installcheck`.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
bench_as_user "$@"

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
RATES=${RATES:-1000 10000}
PATRONI=${PATRONI:-/usr/bin/patroni}
FLOOD=${FLOOD:-5000}
CHECKS=${CHECKS:-100}

for c in wrk etcd etcdctl curl openssl /usr/bin/python3 "$PATRONI"; do
	command -v "$c" >/dev/null || die "$c not found"
done

bench_workdir
ETCD=$BASE; ETCD_PEER=$((BASE + 1))
PGHA_PORT=$((BASE + 2)); PGHA_API=$((BASE + 3)); PGHA_METRICS=$((BASE + 4))
PAT_PORT=$((BASE + 5)); PAT_API=$((BASE + 6))

log "etcd on 127.0.0.1:$ETCD"
start_etcd "$ETCD" "$ETCD_PEER"

log "pg_ha primary on $PGHA_PORT, API on $PGHA_API"
# PG_HA_LIB_DIR: measure a build without installing it (dynamic_library_path
# resolves 'pg_ha' there first, for the preload and the workers alike)
start_pg_ha node1 "$PGHA_PORT" "$PGHA_API" "$PGHA_METRICS" "$ETCD" \
	"${PG_HA_LIB_DIR:+dynamic_library_path = '$PG_HA_LIB_DIR:\$libdir'}"
wait_for 60 is_200 "http://127.0.0.1:$PGHA_API/primary" || die "pg_ha /primary never answered 200"

log "Patroni $("/usr/bin/python3" "$PATRONI" --version 2>&1 | awk '{print $2}') primary on $PAT_PORT, REST API on $PAT_API"
write_patroni_yml "$W/patroni.yml" p1 "$PAT_PORT" "$PAT_API" "$ETCD" "$W/pg_patroni"
/usr/bin/python3 "$PATRONI" "$W/patroni.yml" >"$W/patroni.log" 2>&1 &
PAT_PID=$!
PIDS+=("$PAT_PID")
disown "$PAT_PID" 2>/dev/null || true
wait_for 90 is_200 "http://127.0.0.1:$PAT_API/primary" || { tail -20 "$W/patroni.log" >&2; die "Patroni /primary never answered 200"; }

PGHA_LISTENER=$(child_pid "$(pm_pid "$W/pg_node1")" "pg_ha http")
[ -n "$PGHA_LISTENER" ] || die "pg_ha listener process not found"
PAT_PM=$(pm_pid "$W/pg_patroni")

printf 'wrk.method = "OPTIONS"\n' >"$W/options.lua"
printf 'wrk.method = "GET"\n' >"$W/get.lua"

# to_ms "1.23ms" -> 1.23
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else print v }'
}

# run NAME URL METHOD PIDS...: prints "rps p50_ms p99_ms cpu_us_per_req errors"
run() {
	local name=$1 url=$2 method=$3; shift 3
	local out c0 c1 rps p50 p99 reqs errs
	c0=$(cpu_us_ticks "$@")
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$W/$method.lua" "$url" 2>&1)
	c1=$(cpu_us_ticks "$@")
	echo "$out" >"$W/wrk_${name}_$method.txt"
	rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
	p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
	p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
	reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
	errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ { printf "%s ", $0 }')
	local cpu=$(( (c1 - c0) / (reqs > 0 ? reqs : 1) ))
	echo "$rps $p50 $p99 $cpu ${errs:-none}"
}

if [ -z "${FLOOD_ONLY:-}" ]; then
printf '\nwrk -t%s -c%s -d%ss, %s cores, load before: %s\n\n' "$THREADS" "$CONNS" "$DURATION" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-8s %12s %10s %10s %14s  %s\n' server method req/s p50_ms p99_ms cpu_us/req errors
for method in options get; do
	M=$(echo "$method" | tr a-z A-Z)
	read -r a_rps a_p50 a_p99 a_cpu a_err < <(run pg_ha "http://127.0.0.1:$PGHA_API/primary" "$method" "$PGHA_LISTENER")
	# Patroni: its own process and the processes of its postgres
	read -r b_rps b_p50 b_p99 b_cpu b_err < <(run patroni "http://127.0.0.1:$PAT_API/primary" "$method" \
		"$PAT_PID" $(ps -o pid= --ppid "$PAT_PM"))
	printf '%-8s %-8s %12s %10s %10s %14s  %s\n' pg_ha "$M" "$a_rps" "$a_p50" "$a_p99" "$a_cpu" "$a_err"
	[ "$method" = get ] && a_get_rps=$a_rps
	printf '%-8s %-8s %12s %10s %10s %14s  %s\n' patroni "$M" "$b_rps" "$b_p50" "$b_p99" "$b_cpu" "$b_err"
	printf '  ratio %s: req/s %s, p99 %s lower, CPU/request %s lower\n' "$M" \
		"$(ratio "$a_rps" "$b_rps")" "$(ratio "$b_p99" "$a_p99")" "$(ratio "$b_cpu" "$a_cpu")"
done

# Latency without queueing: one connection, one request at a time (what a
# single HAProxy check sees), so the figures are not wrk's own queue.
printf '\nOPTIONS /primary, wrk -t1 -c1 -d%ss (latency of one check at a time)\n' "$DURATION"
printf '%-8s %12s %10s %10s\n' server req/s p50_ms p99_ms
SAVE_T=$THREADS SAVE_C=$CONNS
THREADS=1 CONNS=1
read -r a_rps a_p50 a_p99 a_cpu a_err < <(run pg_ha1 "http://127.0.0.1:$PGHA_API/primary" options "$PGHA_LISTENER")
read -r b_rps b_p50 b_p99 b_cpu b_err < <(run patroni1 "http://127.0.0.1:$PAT_API/primary" options "$PAT_PID")
THREADS=$SAVE_T CONNS=$SAVE_C
printf '%-8s %12s %10s %10s\n' pg_ha "$a_rps" "$a_p50" "$a_p99"
printf '%-8s %12s %10s %10s\n' patroni "$b_rps" "$b_p50" "$b_p99"
printf '  ratio: p99 %s lower\n' "$(ratio "$b_p99" "$a_p99")"
# Latency at a fixed offered load: each of the $CONNS connections waits
# (wrk's delay()) before its next request, so the server is not saturated
# and wrk does not take the cores the server needs.  1,000 req/s is far more
# than a fleet of HAProxy checks sends (1 check/s per backend and proxy);
# Patroni cannot serve the higher rate, so only pg_ha runs it.
printf '\nOPTIONS /primary at a fixed rate, wrk -t1 -c%s -d%ss with a delay between requests\n' "$CONNS" "$DURATION"
printf '%-8s %10s %12s %10s %10s\n' server rate req/s p50_ms p99_ms
SAVE_T=$THREADS
THREADS=1
for rate in $RATES; do
	delay=$((CONNS * 1000 / rate))
	printf 'wrk.method = "OPTIONS"\nfunction delay() return %d end\n' "$delay" >"$W/paced$rate.lua"
	read -r a_rps a_p50 a_p99 a_cpu a_err < <(run pg_ha_r "http://127.0.0.1:$PGHA_API/primary" "paced$rate" "$PGHA_LISTENER")
	printf '%-8s %10s %12s %10s %10s\n' pg_ha "$rate" "$a_rps" "$a_p50" "$a_p99"
	if [ "$rate" -le 1000 ]; then
		read -r b_rps b_p50 b_p99 b_cpu b_err < <(run patroni_r "http://127.0.0.1:$PAT_API/primary" "paced$rate" "$PAT_PID")
		printf '%-8s %10s %12s %10s %10s\n' patroni "$rate" "$b_rps" "$b_p50" "$b_p99"
		printf '  ratio at %s req/s: p99 %s lower\n' "$rate" "$(ratio "$b_p99" "$a_p99")"
	fi
done
THREADS=$SAVE_T
fi

# ------------------------------------------------------------------ flood
# The flooding client: keeps N connections to PORT open, every second
# reopening those the server closed; in slowloris mode each also gets one
# more byte of a request that never ends.  Connects without blocking.
cat >"$W/flood.pl" <<'PERL'
use strict;
use warnings;
use IO::Socket::INET;
use Socket qw(MSG_DONTWAIT);
my ($port, $n, $mode) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $req = "GET /primary HTTP/1.1\r\nHost: x\r\nX-Slow: " . ('a' x 4000);
my $open = sub {
	IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Blocking => 0);
};
my @s = map { $open->() } 1 .. $n;
my @sent = (0) x $n;
for (;;)
{
	sleep 1;
	for my $i (0 .. $n - 1)
	{
		my $sock = $s[$i];
		my $alive = 0;
		if ($sock)
		{
			my $r = recv($sock, my $buf, 4096, MSG_DONTWAIT);
			$alive = !defined $r && ($!{EAGAIN} || $!{EWOULDBLOCK});
			if ($alive && $mode eq 'slowloris')
			{
				$alive = defined send($sock, substr($req, $sent[$i] % length($req), 1), MSG_DONTWAIT);
				$sent[$i]++;
			}
		}
		next if $alive;
		close $sock if $sock;
		$s[$i] = $open->();
		$sent[$i] = 0;
	}
}
PERL

# flood_checks URL PORT MODE PIDS...: prints "p50_ms p99_ms failures cpu_ms"
# with FLOOD connections of MODE open to PORT (PIDS: the serving processes)
flood_checks() {
	local url=$1 port=$2 mode=$3; shift 3
	local fpid c0 c1 i code t streak=0
	# 5,000 sockets need more than the usual soft limit of 1,024
	fpid=""
	if [ "$mode" != none ]; then
		( ulimit -n "$(ulimit -Hn)"; exec perl "$W/flood.pl" "$port" "$FLOOD" "$mode" ) &
		fpid=$!
		PIDS+=("$fpid")
		sleep 3
	fi
	c0=$(cpu_us_ticks "$@")
	: >"$W/checks_${port}_$mode.txt"
	for i in $(seq "$CHECKS"); do
		read -r code t < <(curl -s -o /dev/null -m 2 -w '%{http_code} %{time_total}\n' "$url" || true)
		echo "${code:-000} ${t:-2}" >>"$W/checks_${port}_$mode.txt"
		# 10 failures in a row: the server is down for the checker, stop
		if [ "${code:-000}" = 200 ]; then streak=0; else streak=$((streak + 1)); fi
		[ "$streak" -lt 10 ] || break
		sleep 0.05
	done
	c1=$(cpu_us_ticks "$@")
	if [ -n "$fpid" ]; then
		kill "$fpid" 2>/dev/null || true
		wait "$fpid" 2>/dev/null || true
		sleep 6		# let the server drop the flood before the next row
	fi
	# a failed check counts as its 2 s timeout
	sort -k2 -n "$W/checks_${port}_$mode.txt" | awk -v cpu=$(( (c1 - c0) / 1000 )) '
		{ t[NR] = $2 * 1000; if ($1 != "200") bad++ }
		END {
			p50 = t[int(NR * 0.50 + 0.5)]; p99 = t[int(NR * 0.99 + 0.5)]
			printf "%.2f %.2f %d/%d %d\n", p50, p99, bad, NR, cpu
		}'
}

printf '\nGET /primary, one check per new connection (curl, up to %s checks 50 ms apart), with %s connections\n' "$CHECKS" "$FLOOD"
printf 'to the same port that send nothing (idle) or a byte a second (slowloris), reopened when closed;\n'
printf 'none: no flood, the same checks for reference.  Load before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-10s %10s %10s %10s %14s\n' server flood p50_ms p99_ms failures cpu_ms
for mode in none idle slowloris; do
	# not in a subshell: the flooding client must be in PIDS for the cleanup
	flood_checks "http://127.0.0.1:$PGHA_API/primary" "$PGHA_API" "$mode" "$PGHA_LISTENER" >"$W/row"
	read -r a_p50 a_p99 a_bad a_cpu <"$W/row"
	flood_checks "http://127.0.0.1:$PAT_API/primary" "$PAT_API" "$mode" \
		"$PAT_PID" $(ps -o pid= --ppid "$PAT_PM") >"$W/row"
	read -r b_p50 b_p99 b_bad b_cpu <"$W/row"
	printf '%-8s %-10s %10s %10s %10s %14s\n' pg_ha "$mode" "$a_p50" "$a_p99" "$a_bad" "$a_cpu"
	printf '%-8s %-10s %10s %10s %10s %14s\n' patroni "$mode" "$b_p50" "$b_p99" "$b_bad" "$b_cpu"
	printf '  ratio %s: p50 %s lower, p99 %s lower\n' "$mode" "$(ratio "$b_p50" "$a_p50")" "$(ratio "$b_p99" "$a_p99")"
done
printf '\nload after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
# pg_ha's CPU column counts only the listener; Patroni's counts its process
# and every process of its postgres (each request runs a query there).

# --- TLS: both APIs switched to https by a reload, one certificate for both
# (compared with the plaintext rows, so not with FLOOD_ONLY)
[ -z "${FLOOD_ONLY:-}" ] || exit 0
T=$W/tls
mkdir -p "$T"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -out "$T/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$T/server.key" -out "$T/server.csr" -subj /CN=bench 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" >"$T/server.ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
	-out "$T/server.pem" -days 2 -extfile "$T/server.ext" 2>/dev/null
chmod 600 "$T/server.key"
is_200_tls() { [ "$(curl -s -o /dev/null -m 2 --cacert "$T/ca.pem" -w '%{http_code}' "$1")" = 200 ]; }

log "switching both APIs to TLS (reload)"
psql_at "$PGHA_PORT" "ALTER SYSTEM SET pg_ha.api_certfile = '$T/server.pem'" >/dev/null
psql_at "$PGHA_PORT" "ALTER SYSTEM SET pg_ha.api_keyfile = '$T/server.key'" >/dev/null
psql_at "$PGHA_PORT" "SELECT pg_reload_conf()" >/dev/null
awk -v c="$T/server.pem" -v k="$T/server.key" \
	'{ print } /^restapi:/ { print "  certfile: " c; print "  keyfile: " k }' "$W/patroni.yml" >"$W/patroni_tls.yml"
mv "$W/patroni_tls.yml" "$W/patroni.yml"
kill -HUP "$PAT_PID"
wait_for 60 is_200_tls "https://127.0.0.1:$PGHA_API/primary" || die "pg_ha /primary never answered 200 over TLS"
wait_for 60 is_200_tls "https://127.0.0.1:$PAT_API/primary" || { tail -20 "$W/patroni.log" >&2; die "Patroni /primary never answered 200 over TLS"; }
printf 'wrk.method = "GET"\nwrk.headers["Connection"] = "close"\n' >"$W/getclose.lua"

# wrk cannot read Patroni's answers over TLS: Patroni (HTTP/1.0) ends each
# one by closing the socket without a TLS close_notify, which OpenSSL 3
# clients such as wrk count as a read error, so no request completes.  The
# keep-alive and close rows are pg_ha's alone; the comparison is made with
# `openssl s_time`, which reads to the end as curl does.
printf '\nTLS (RSA-2048, TLS 1.3), GET /primary, wrk -t%s -c%s -d%ss, pg_ha\n' "$THREADS" "$CONNS" "$DURATION"
printf '%-8s %-10s %12s %10s %10s %14s  %s\n' server conn req/s p50_ms p99_ms cpu_us/req errors
read -r k_rps k_p50 k_p99 k_cpu k_err < <(run pg_ha_tls "https://127.0.0.1:$PGHA_API/primary" get "$PGHA_LISTENER")
printf '%-8s %-10s %12s %10s %10s %14s  %s\n' pg_ha keep-alive "$k_rps" "$k_p50" "$k_p99" "$k_cpu" "$k_err"
read -r c_rps c_p50 c_p99 c_cpu c_err < <(run pg_ha_tls "https://127.0.0.1:$PGHA_API/primary" getclose "$PGHA_LISTENER")
printf '%-8s %-10s %12s %10s %10s %14s  %s\n' pg_ha close "$c_rps" "$c_p50" "$c_p99" "$c_cpu" "$c_err"
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.1f%%", 100 * a / b }'; }
printf '  pg_ha TLS keep-alive: %s of the plaintext GET req/s; a handshake per request: %s of keep-alive\n' \
	"$(pct "$k_rps" "$a_get_rps")" "$(pct "$c_rps" "$k_rps")"

# stime NAME PORT PIDS...: "conn/s ms/conn cpu_us/conn" for openssl s_time:
# one connection at a time, each a full handshake and GET /primary HTTP/1.0
# (what one HAProxy check-ssl without a session cache costs)
stime() {
	local name=$1 port=$2; shift 2
	local out c0 c1 t0 t1 n
	c0=$(cpu_us_ticks "$@")
	t0=$(date +%s%N)
	out=$(openssl s_time -connect "127.0.0.1:$port" -CAfile "$T/ca.pem" -www /primary -new -time "$DURATION" 2>&1 || true)
	t1=$(date +%s%N)
	c1=$(cpu_us_ticks "$@")
	echo "$out" >"$W/stime_$name.txt"
	n=$(echo "$out" | awk '/connections in .*real seconds/ { print $1; exit }')
	n=${n:-0}
	awk -v n="$n" -v ns=$((t1 - t0)) -v cpu=$((c1 - c0)) 'BEGIN {
		if (n == 0) { print "0 0 0"; exit }
		printf "%.1f %.3f %d\n", n / (ns / 1e9), ns / 1e6 / n, cpu / n }'
}

printf '\nTLS GET /primary, a new connection and full handshake per request, one at a time (openssl s_time -new, %ss)\n' "$DURATION"
printf '%-8s %12s %12s %14s\n' server req/s ms/req cpu_us/req
read -r a_rps a_ms a_cpu < <(stime pg_ha "$PGHA_API" "$PGHA_LISTENER")
read -r b_rps b_ms b_cpu < <(stime patroni "$PAT_API" "$PAT_PID" $(ps -o pid= --ppid "$PAT_PM"))
printf '%-8s %12s %12s %14s\n' pg_ha "$a_rps" "$a_ms" "$a_cpu"
printf '%-8s %12s %12s %14s\n' patroni "$b_rps" "$b_ms" "$b_cpu"
printf '  ratio TLS new connection: req/s %s, time per request %s lower, CPU/request %s lower\n' \
	"$(ratio "$a_rps" "$b_rps")" "$(ratio "$b_ms" "$a_ms")" "$(ratio "$b_cpu" "$a_cpu")"
printf '\nload after TLS: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
