#!/usr/bin/env bash
# The tests that drive the real patronictl, run with Debian 13's patronictl
# (4.0.7) instead of the host's (Debian 12's 3.0.2).  Opt-in, never part of
# the default suite: it needs root, the Debian archive and about 3 minutes
# to build the tree the first time.
#
#   sudo test/compat/patronictl4.sh                     # every patronictl test
#   sudo test/compat/patronictl4.sh test/t/511_patronictl_commands.pl
#   sudo test/compat/patronictl4.sh --build-only
#
# The tree is a debootstrap of trixie (minbase) with patroni and
# python3-etcd (patroni's etcd3 module takes its exceptions from it),
# built once at PG_HA_PATRONICTL4_ROOT (default /var/tmp/chroot-trixie) from
# PG_HA_DEBIAN_MIRROR (default http://deb.debian.org/debian).  /proc is
# mounted only while apt runs in it.  The tests then run through
# scripts/test.sh with PG_HA_PATRONICTL_ROOT naming the tree: PgHa::Patroni
# chroots into it (through "unshare -r" as the test user), and patronictl
# there reaches the test etcd and API ports over the host's loopback.
# Other arguments go to scripts/test.sh (--keep, --no-install).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TREE=${PG_HA_PATRONICTL4_ROOT:-/var/tmp/chroot-trixie}
MIRROR=${PG_HA_DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { printf 'patronictl4.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || die "run it as root (debootstrap, chroot, and scripts/test.sh installs pg_ha)"

build_only=
args=()
tests=()
for arg in "$@"; do
	case "$arg" in
		--build-only) build_only=1 ;;
		-h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*.pl) tests+=("$arg") ;;
		*) args+=("$arg") ;;
	esac
done

# apt-get in the tree, with /proc mounted for the time it runs
in_tree_apt() {
	mount -t proc proc "$TREE/proc"
	trap 'umount "$TREE/proc" 2>/dev/null || true' EXIT
	chroot "$TREE" env DEBIAN_FRONTEND=noninteractive "$@"
	umount "$TREE/proc"
	trap - EXIT
}

if [ ! -x "$TREE/usr/bin/patronictl" ]; then
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
	if [ ! -x "$TREE/usr/bin/apt-get" ]; then
		log "debootstrap trixie into $TREE from $MIRROR"
		debootstrap --variant=minbase trixie "$TREE" "$MIRROR" || die "debootstrap failed"
	fi
	cp /etc/resolv.conf "$TREE/etc/resolv.conf"
	# no service may start in the tree (patroni's package has one)
	printf '#!/bin/sh\nexit 101\n' > "$TREE/usr/sbin/policy-rc.d"
	chmod 755 "$TREE/usr/sbin/policy-rc.d"
	log "installing patroni and python3-etcd in $TREE"
	in_tree_apt apt-get update -q
	in_tree_apt apt-get install -y -q --no-install-recommends patroni python3-etcd
fi
version=$(chroot "$TREE" /usr/bin/patronictl version) || die "patronictl does not run in $TREE"
log "$version in $TREE"
case "$version" in
	*"version 4."*) ;;
	*) printf 'patronictl4.sh: warning: %s is not a 4.x patronictl\n' "$version" >&2 ;;
esac
[ -z "$build_only" ] || exit 0

cd "$ROOT"
if [ "${#tests[@]}" -eq 0 ]; then
	# every test that runs patronictl (370 also needs PG_TEST_EXTRA=patroni)
	mapfile -t tests < <(grep -l 'patronictl(' test/t/*.pl)
fi
log "running with $version: ${tests[*]}"
PG_HA_PATRONICTL_ROOT=$TREE exec ./scripts/test.sh "${args[@]}" T="${tests[*]}"
