#!/usr/bin/env bash
# Install what pg_ha needs to build and to run its tests (Debian 12).
#
#   sudo ./scripts/install-deps.sh
#
# Idempotent: when every package is already installed it changes nothing
# (no apt-get update either).  Services that the packages would start at
# install time (etcd on 2379, a postgresql "main" cluster on 5432,
# prometheus, haproxy) are not started: the tests and the demo run their own
# servers on free ports.  The etcd, prometheus and haproxy services that this
# script installs are also disabled.
#
# Not root: prints the command to run with sudo, exits 1 if something is
# missing, 0 otherwise.
set -euo pipefail

PACKAGES=(
	build-essential          # gcc, make
	pkg-config
	postgresql-15            # server, initdb, pg_ctl, psql, pg_basebackup
	postgresql-server-dev-15 # PGXS, headers, pg_regress, TAP modules
	libcurl4-openssl-dev     # etcd (JSON gateway) and S3 over HTTP
	libcjson-dev             # JSON
	liburing-dev             # async I/O
	libzstd-dev
	liblz4-dev
	libhttp-parser-dev       # HTTP request parsing (health API)
	haproxy                  # 140_http_haproxy: Pigsty-style routing by health checks
	prometheus               # promtool: 120_metrics checks the metrics text
	clang                    # make fuzz / fuzz-http (libFuzzer)
	libpq-dev                # command-line programs
	libkrb5-dev              # gssapi.h: libpq/libpq-be.h (fence.c reads the client socket) includes it
	etcd-server              # a real etcd in every test
	etcd-client              # etcdctl, used by the tests and the demo
	libipc-run-perl          # PostgreSQL::Test::Cluster
	perl                     # prove, Test::More
	curl
	iproute2                 # ss
	procps                   # pgrep, ps
	time                     # /usr/bin/time -v: 410 measures pg_ha_restore's peak memory
	util-linux               # setpriv, runuser
	ca-certificates
	openssl                  # certificates for the etcd TLS test
	iptables                 # make chaos: cuts a node from etcd or from its replicas
	patroni                  # patronictl 3.0.2: the Patroni drop-in tests (5xx) drive it; 370 runs Patroni itself
)

names=()
for p in "${PACKAGES[@]}"; do names+=("${p%%#*}"); done

missing=()
for p in "${names[@]}"; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != "installed" ]; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#names[@]} packages already installed"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}" >&2
	echo "install-deps: run as root:" >&2
	echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
	echo "  (or: sudo $0)" >&2
	exit 1
fi

echo "install-deps: installing: ${missing[*]}"

# Packages that ship a service (package:unit): if this run installs them,
# the unit is disabled afterwards.
SERVICES=(etcd-server:etcd.service prometheus:prometheus.service haproxy:haproxy.service patroni:patroni.service)
new_units=()
for s in "${SERVICES[@]}"; do
	for m in "${missing[@]}"; do
		[ "$m" = "${s%%:*}" ] && new_units+=("${s#*:}")
	done
done

# Keep maintainer scripts from starting services during the install: a
# policy-rc.d that denies every action, unless the machine already has one.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# pg_ha install-deps: no service starts during package installation\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

cleanup
own_policy=0

# Services we just installed must not hold their ports (etcd 2379,
# prometheus 9090, haproxy) now or after a reboot: pg_ha's tests and demo
# start their own servers on their own ports.
if [ ${#new_units[@]} -gt 0 ] && command -v systemctl >/dev/null 2>&1 \
	&& [ -d /run/systemd/system ]; then
	for u in "${new_units[@]}"; do
		systemctl disable --now "$u" >/dev/null 2>&1 || true
	done
fi

# Check.
still=()
for p in "${names[@]}"; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != "installed" ]; then
		still+=("$p")
	fi
done
if [ ${#still[@]} -ne 0 ]; then
	echo "install-deps: still missing after apt-get: ${still[*]}" >&2
	exit 1
fi
echo "install-deps: done"
