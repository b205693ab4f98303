#!/usr/bin/env bash
# pg_ha demo: one etcd and a three-node PostgreSQL 15 cluster (primary + two
# streaming replicas) with pg_ha, all on loopback.
#
#   sudo ./scripts/demo.sh          # install deps, build, install, start, show
#   sudo ./scripts/demo.sh status   # show the cluster state again
#   sudo ./scripts/demo.sh stop     # stop everything and remove the demo dir
#
# As root, the servers run as the postgres user.  Run as another user, the
# package installation is skipped and the servers run as that user (make
# install then needs write access to the PostgreSQL directories).
# Starting again first stops a previous demo.  The servers keep running after
# the script exits.
#
# Environment: PG_HA_DEMO_DIR (/tmp/pg_ha_demo), PG_HA_DEMO_ETCD_PORT (23790,
# peer port +1), PG_HA_DEMO_PG_PORT (5441: nodes use 5441..5443),
# PG_HA_DEMO_API_PORT (8441: health API of the nodes, 8441..8443),
# PG_HA_DEMO_METRICS_PORT (9641: Prometheus metrics, 9641..9643),
# PG_CONFIG, PG_HA_DEMO_NO_BUILD=1 (use the installed pg_ha).
set -euo pipefail

DEMO_DIR=${PG_HA_DEMO_DIR:-/tmp/pg_ha_demo}
ETCD_PORT=${PG_HA_DEMO_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
PG_PORT=${PG_HA_DEMO_PG_PORT:-5441}
API_PORT=${PG_HA_DEMO_API_PORT:-8441}
METRICS_PORT=${PG_HA_DEMO_METRICS_PORT:-9641}
NAMESPACE=/service
CLUSTER=demo
TTL=10
NODES=(node1 node2 node3)
ETCD_URL=http://127.0.0.1:$ETCD_PORT
SELF=${PG_HA_DEMO_SELF:-$0}   # how the user invoked us (for the messages)

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

find_pg_config() {
	if [ -n "${PG_CONFIG:-}" ]; then :
	elif [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=$(command -v pg_config) || die "pg_config not found: install postgresql-server-dev-15"
	fi
	export PG_CONFIG
	BINDIR=$("$PG_CONFIG" --bindir)
	export PATH="$BINDIR:$PATH"
}

node_port() { echo $((PG_PORT + $1)); }
node_api_port() { echo $((API_PORT + $1)); }
node_metrics_port() { echo $((METRICS_PORT + $1)); }

etcdctl_demo() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD_URL" --dial-timeout=2s --command-timeout=5s "$@"; }

# ----------------------------------------------------------------------------
# The parts below run as the demo user (postgres when started as root).

# Is this PID a process of this demo (its command line names the demo dir)?
ours() {
	local pid=$1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
		&& tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DEMO_DIR"
}

do_stop() {
	find_pg_config
	[ -d "$DEMO_DIR" ] || { say "no demo in $DEMO_DIR"; return 0; }
	local i d
	for i in 2 1 0; do
		d=$DEMO_DIR/${NODES[$i]}
		if [ -f "$d/postmaster.pid" ]; then
			say "stopping ${NODES[$i]}"
			pg_ctl -D "$d" -m fast -w -t 30 stop >/dev/null 2>&1 \
				|| pg_ctl -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
		fi
	done
	if [ -f "$DEMO_DIR/etcd.pid" ]; then
		local pid
		pid=$(cat "$DEMO_DIR/etcd.pid")
		if ours "$pid"; then
			say "stopping etcd (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
			if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
		fi
	fi
	rm -rf "$DEMO_DIR"
	say "demo stopped, $DEMO_DIR removed"
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

wait_until() { # seconds description command...
	local secs=$1 what=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $end ]; then
			printf 'demo.sh: timed out after %ss waiting for %s\n' "$secs" "$what" >&2
			return 1
		fi
		sleep 0.2
	done
}

psql_node() { # index, psql args...
	local i=$1
	shift
	psql -X -h "$DEMO_DIR" -p "$(node_port "$i")" -U "$(id -un)" -d postgres "$@"
}

leader_present() { [ -n "$(etcdctl_demo get --print-value-only "$NAMESPACE/$CLUSTER/leader")" ]; }
members_present() {
	local v
	v=$(etcdctl_demo get --prefix --print-value-only "$NAMESPACE/$CLUSTER/members/")
	[ "$(grep -c '"role"' <<<"$v")" -ge ${#NODES[@]} ] \
		&& [ "$(grep -c '"replication_state":"streaming"' <<<"$v")" -ge $((${#NODES[@]} - 1)) ]
}
replicas_streaming() {
	[ "$(psql_node 0 -Atc "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge $((${#NODES[@]} - 1)) ]
}

show_logs_and_die() {
	local f
	for f in "$DEMO_DIR"/etcd.log "$DEMO_DIR"/*.log; do
		[ -f "$f" ] || continue
		printf '\n----- %s (last 30 lines) -----\n' "$f" >&2
		tail -n 30 "$f" >&2
	done
	die "$1 (the demo is left running for inspection: '$SELF stop' removes it)"
}

node_conf() { # index
	local i=$1 name=${NODES[$1]}
	cat <<EOF

# --- pg_ha demo ($name)
port = $(node_port "$i")
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DEMO_DIR'
cluster_name = '$name'
wal_level = replica
hot_standby = on
wal_log_hints = on
max_wal_senders = 10
shared_preload_libraries = 'pg_ha'
pg_ha.etcd_endpoints = '$ETCD_URL'
pg_ha.namespace = '$NAMESPACE'
pg_ha.cluster = '$CLUSTER'
pg_ha.node_name = '$name'
pg_ha.ttl = $TTL
pg_ha.connect_address = '127.0.0.1:$(node_port "$i")'
pg_ha.api_listen = '127.0.0.1:$(node_api_port "$i")'
pg_ha.metrics_listen = '127.0.0.1:$(node_metrics_port "$i")'
EOF
}

do_start() {
	find_pg_config
	command -v etcd >/dev/null || die "etcd not found: install etcd-server"

	if [ -d "$DEMO_DIR" ]; then
		say "stopping the previous demo"
		do_stop
	fi

	local p
	for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$(node_port 0)" "$(node_port 1)" "$(node_port 2)" \
		"$(node_api_port 0)" "$(node_api_port 1)" "$(node_api_port 2)" \
		"$(node_metrics_port 0)" "$(node_metrics_port 1)" "$(node_metrics_port 2)"; do
		port_busy "$p" && die "port $p is in use (set PG_HA_DEMO_ETCD_PORT / PG_HA_DEMO_PG_PORT / PG_HA_DEMO_API_PORT / PG_HA_DEMO_METRICS_PORT)"
	done

	mkdir -p "$DEMO_DIR"
	chmod 700 "$DEMO_DIR"

	say "starting etcd on $ETCD_URL"
	setsid etcd --name demo-etcd --data-dir "$DEMO_DIR/etcd" \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "demo-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
		--heartbeat-interval 100 --election-timeout 1000 \
		--logger zap --log-outputs stderr \
		</dev/null >"$DEMO_DIR/etcd.log" 2>&1 &
	echo $! >"$DEMO_DIR/etcd.pid"
	wait_until 30 "etcd to become healthy" curl -fsS "$ETCD_URL/health" \
		|| show_logs_and_die "etcd did not start"

	local n1=$DEMO_DIR/${NODES[0]}
	say "initialising ${NODES[0]} (primary) on port $(node_port 0)"
	initdb -D "$n1" -A trust -U "$(id -un)" --no-instructions >"$DEMO_DIR/initdb.log" 2>&1 \
		|| { cat "$DEMO_DIR/initdb.log" >&2; die "initdb failed"; }
	node_conf 0 >>"$n1/postgresql.conf"
	pg_ctl -D "$n1" -l "$DEMO_DIR/${NODES[0]}.log" -w -t 60 start >/dev/null \
		|| show_logs_and_die "${NODES[0]} did not start"
	# The primary refuses writes until its worker holds the leader lease.
	wait_until 60 "CREATE EXTENSION pg_ha (needs the leader lease)" \
		psql_node 0 -qc 'CREATE EXTENSION IF NOT EXISTS pg_ha' \
		|| { psql_node 0 -qc 'CREATE EXTENSION IF NOT EXISTS pg_ha' || true
		     show_logs_and_die "CREATE EXTENSION pg_ha failed"; }

	local i d
	for i in 1 2; do
		d=$DEMO_DIR/${NODES[$i]}
		say "cloning ${NODES[$i]} (replica) on port $(node_port "$i") with pg_basebackup"
		pg_basebackup -h "$DEMO_DIR" -p "$(node_port 0)" -U "$(id -un)" -D "$d" \
			-X stream -c fast -R >>"$DEMO_DIR/basebackup.log" 2>&1 \
			|| { cat "$DEMO_DIR/basebackup.log" >&2; die "pg_basebackup failed"; }
		# Later lines win: this node's own settings after the copied ones.
		node_conf "$i" >>"$d/postgresql.conf"
		pg_ctl -D "$d" -l "$DEMO_DIR/${NODES[$i]}.log" -w -t 60 start >/dev/null \
			|| show_logs_and_die "${NODES[$i]} did not start"
	done

	say "waiting for the leader key and the member keys"
	wait_until 60 "the leader key $NAMESPACE/$CLUSTER/leader" leader_present \
		|| show_logs_and_die "no leader key"
	wait_until 30 "the replicas to stream" replicas_streaming \
		|| show_logs_and_die "replicas are not streaming"
	wait_until 30 "three member keys, replicas streaming" members_present \
		|| show_logs_and_die "member keys missing"

	do_status
	cat <<EOF

The demo is running (data, logs: $DEMO_DIR).
  Connect:   psql -h 127.0.0.1 -p $(node_port 0) -U $(id -un) postgres     (node1; node2/node3: -p $(node_port 1) / $(node_port 2))
             then: SELECT * FROM pg_ha.status();  SELECT * FROM pg_ha.members();
  etcd:      ETCDCTL_API=3 etcdctl --endpoints=$ETCD_URL get --prefix $NAMESPACE/$CLUSTER
             ETCDCTL_API=3 etcdctl --endpoints=$ETCD_URL watch $NAMESPACE/$CLUSTER/leader
  Health:    curl -i http://127.0.0.1:$(node_api_port 0)/primary     curl -i http://127.0.0.1:$(node_api_port 1)/replica
  Metrics:   curl -s http://127.0.0.1:$(node_metrics_port 0)/metrics | head
  Status:    sudo $SELF status
  Stop:      sudo $SELF stop
EOF
}

do_status() {
	find_pg_config
	[ -d "$DEMO_DIR" ] || die "no demo running in $DEMO_DIR (start it with: sudo $SELF)"
	local i
	for i in 0 1 2; do
		printf '\n===== %s (port %s): SELECT * FROM pg_ha.status() =====\n' "${NODES[$i]}" "$(node_port "$i")"
		psql_node "$i" -x -c 'SELECT * FROM pg_ha.status()' || true
	done
	printf '\n===== SELECT name, role, state, is_leader, lsn FROM pg_ha.members() (on node1) =====\n'
	psql_node 0 -c 'SELECT name, role, state, is_leader, lsn FROM pg_ha.members()' || true
	printf '\n===== etcdctl get --prefix %s/%s =====\n' "$NAMESPACE" "$CLUSTER"
	etcdctl_demo get --prefix "$NAMESPACE/$CLUSTER" || true
}

# ----------------------------------------------------------------------------
# Entry point.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:-start}

case "$cmd" in
	__as_user)   # internal: already running as the demo user
		shift
		case "${1:-}" in
			start) do_start ;;
			stop) do_stop ;;
			status) do_status ;;
			*) die "internal: bad command" ;;
		esac
		exit 0
		;;
	start|stop|status) ;;
	-h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "usage: $0 [start|status|stop]" ;;
esac

if [ "$(id -u)" -eq 0 ]; then
	DEMO_USER=${PG_HA_DEMO_USER:-postgres}
else
	DEMO_USER=$(id -un)
fi

if [ "$cmd" = start ] && [ -z "${PG_HA_DEMO_NO_BUILD:-}" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		say "installing dependencies"
		"$ROOT/scripts/install-deps.sh"
	else
		echo "demo.sh: not root: skipping package installation" >&2
		"$ROOT/scripts/install-deps.sh" || true
	fi
	find_pg_config
	say "building and installing pg_ha"
	make -C "$ROOT" -s -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$PG_CONFIG"
	make -C "$ROOT" -s install PG_CONFIG="$PG_CONFIG" \
		|| die "make install failed (run as root: sudo $0)"
fi

# (the postgres user comes with the postgresql package: check after installing)
id "$DEMO_USER" >/dev/null 2>&1 || die "user $DEMO_USER does not exist"

if [ "$(id -u)" -eq 0 ]; then
	# The checkout may be unreadable to the demo user (e.g. under /root): run
	# a private copy of this script as that user.
	copy=$(mktemp /tmp/pg_ha_demo_script.XXXXXX)
	trap 'rm -f "$copy"' EXIT
	cp "${BASH_SOURCE[0]}" "$copy"
	chmod 755 "$copy"
	chown "$DEMO_USER" "$copy"
	home=$(getent passwd "$DEMO_USER" | cut -d: -f6)
	cd /
	runuser -u "$DEMO_USER" -- env HOME="$home" PG_HA_DEMO_DIR="$DEMO_DIR" \
		PG_HA_DEMO_ETCD_PORT="$ETCD_PORT" PG_HA_DEMO_PG_PORT="$PG_PORT" \
		PG_HA_DEMO_API_PORT="$API_PORT" PG_HA_DEMO_METRICS_PORT="$METRICS_PORT" \
		PG_HA_DEMO_SELF="$0" \
		${PG_CONFIG:+PG_CONFIG="$PG_CONFIG"} \
		bash "$copy" __as_user "$cmd"
else
	"${BASH_SOURCE[0]}" __as_user "$cmd"
fi
