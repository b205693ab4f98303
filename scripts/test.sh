#!/usr/bin/env bash
# Build, install and test pg_ha: unit tests of the pure logic (make
# check-unit), pg_regress suites and TAP suites (real etcd, real postgres
# nodes).
#
#   sudo ./scripts/test.sh                         # everything
#   sudo ./scripts/test.sh test/t/001_leader_lease.pl [more.pl ...]   # TAP files
#   sudo ./scripts/test.sh T=test/t/004_etcd_endpoint_failover.pl
#   sudo ./scripts/test.sh --regress-only | --tap-only
#
# The unit tests run first, in the checkout, as the calling user (plain C,
# no server); a failure there fails the run.  Naming TAP files skips them.
#
# As root it installs the Debian packages (scripts/install-deps.sh), builds
# and installs pg_ha, then runs "make installcheck" as the postgres user
# (PG_HA_TEST_USER) in a copy of the source tree in a fresh directory that
# user owns: the checkout may be unreadable to it (e.g. under /root), and
# initdb/postgres refuse to run as root.  As another user it skips the
# package installation, runs "make install" itself (or through "sudo -n")
# and runs the tests as that user.
#
# On failure it prints regression.diffs and, for every failed TAP test, the
# tail of its log and of the logs of the servers it started; the work
# directory is kept and its path printed.  On success it is removed.
#
# Options: --keep (keep the work directory), --no-install (test the pg_ha
# already installed), --asan (build pg_ha with AddressSanitizer and UBSan,
# preload the runtime into postgres and fail a test whose processes wrote
# a sanitizer report; docs/testing.md).
# Environment: T (TAP files), PG_CONFIG, PG_HA_TEST_USER, PG_HA_TEST_TMPDIR
# (parent of the work directory, default /tmp), PG_HA_TEST_LOG_LINES (lines of
# each log to print, default 80), PG_HA_TEST_JOBS (TAP files run at once,
# default 2; 1 under --asan), PG_HA_TEST_KEEP=1, PG_HA_TEST_NO_INSTALL=1,
# PG_HA_PATRONICTL_ROOT (a Debian tree whose patronictl the patronictl tests
# run instead of the host's: test/compat/patronictl4.sh), and PostgreSQL's
# PG_TEST_TIMEOUT_DEFAULT, PG_TEST_NOCLEAN, PG_TEST_EXTRA.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

log() { printf '==> %s\n' "$*"; }
warn() { printf 'test.sh: warning: %s\n' "$*" >&2; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
TESTS=${T:-}
run_unit=1
run_regress=1
run_tap=1
asan=
for arg in "$@"; do
	case "$arg" in
		T=*) TESTS="$TESTS ${arg#T=}" ;;
		--regress-only) run_tap=0 ;;
		--tap-only) run_regress=0 ;;
		--keep) PG_HA_TEST_KEEP=1 ;;
		--no-install) PG_HA_TEST_NO_INSTALL=1 ;;
		--asan) asan=1 ;;
		-h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*.pl) TESTS="$TESTS $arg" ;;
		*) die "unknown argument: $arg (see --help)" ;;
	esac
done
TESTS=$(echo "$TESTS" | xargs -r echo)   # trim
for t in $TESTS; do
	[ -f "$ROOT/$t" ] || die "no such test file: $t"
done
# Named TAP files: run just those.
if [ -n "$TESTS" ]; then run_regress=0; run_unit=0; fi

is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1

# ------------------------------------------------------------- dependencies
if [ "$is_root" = 1 ]; then
	log "installing dependencies"
	"$ROOT/scripts/install-deps.sh" || die "dependency installation failed"
else
	warn "not root: skipping package installation (run 'sudo $0' to install them)"
	"$ROOT/scripts/install-deps.sh" || warn "some packages are missing, see above"
fi

if [ -z "${PG_CONFIG:-}" ]; then
	if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=$(command -v pg_config) || die "pg_config not found (postgresql-server-dev-15)"
	fi
fi
export PG_CONFIG
BINDIR=$("$PG_CONFIG" --bindir)
log "PostgreSQL: $("$PG_CONFIG" --version) ($PG_CONFIG)"

# ---------------------------------------------------------- build, install
MAKE_J="-j$(nproc 2>/dev/null || echo 2)"
# ASAN=1 on every make below: the build flavour is a stamp (Makefile), a
# make without it would rebuild pg_ha plain.
MAKE_SAN=${asan:+ASAN=1}
log "building${asan:+ with AddressSanitizer and UBSan}"
make -s "$MAKE_J" PG_CONFIG="$PG_CONFIG" $MAKE_SAN || die "build failed"

if [ -n "${PG_HA_TEST_NO_INSTALL:-}" ]; then
	warn "not installing: testing the pg_ha already installed in $("$PG_CONFIG" --pkglibdir)"
elif [ "$is_root" = 1 ]; then
	log "installing"
	make -s install PG_CONFIG="$PG_CONFIG" $MAKE_SAN || die "make install failed"
elif log "installing" && ! make -s install PG_CONFIG="$PG_CONFIG" $MAKE_SAN 2>/tmp/pg_ha_install.$$.err; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n make -s install PG_CONFIG="$PG_CONFIG" $MAKE_SAN || die "sudo make install failed"
	else
		cat /tmp/pg_ha_install.$$.err >&2
		rm -f /tmp/pg_ha_install.$$.err
		die "make install needs write access to $("$PG_CONFIG" --pkglibdir): run 'sudo $0', or 'sudo make install PG_CONFIG=$PG_CONFIG' then '$0 --no-install'"
	fi
fi
rm -f /tmp/pg_ha_install.$$.err

# ------------------------------------------------------------ unit tests
unit_rc=0
unit_summary=""
if [ "$run_unit" = 1 ]; then
	log "unit tests (make check-unit)"
	make -s check-unit PG_CONFIG="$PG_CONFIG" </dev/null 2>&1 | tee /tmp/pg_ha_unit.$$.out
	unit_rc=${PIPESTATUS[0]}
	unit_summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/pg_ha_unit.$$.out | tail -n 1)
	rm -f /tmp/pg_ha_unit.$$.out
	[ -n "$unit_summary" ] || unit_rc=1	# the runner did not finish
	# the chaos suite's checker must catch what it exists to catch (no cluster)
	log "chaos checker self-test (make chaos-selftest)"
	make -s chaos-selftest </dev/null || unit_rc=1
fi

# ------------------------------------------------------ work tree, test user
if [ "$is_root" = 1 ]; then
	TEST_USER=${PG_HA_TEST_USER:-postgres}
	id "$TEST_USER" >/dev/null 2>&1 || die "user $TEST_USER does not exist (it comes with postgresql-15)"
	[ "$TEST_USER" != root ] || die "tests cannot run as root (initdb refuses)"
else
	TEST_USER=$(id -un)
fi

WORK=$(mktemp -d "${PG_HA_TEST_TMPDIR:-/tmp}/pg_ha_test.XXXXXX") || die "mktemp failed"
SRC=$WORK/src
mkdir -p "$SRC" "$WORK/tmp"
tar -C "$ROOT" --exclude=./.git --exclude=./tmp_check --exclude=./tmp_check_regress \
	--exclude=./results --exclude=./log --exclude=./regression.diffs \
	--exclude=./regression.out -cf - . | tar -C "$SRC" -xf - || die "copying the source tree failed"
if [ "$is_root" = 1 ]; then
	chown -R "$TEST_USER": "$WORK"
fi
chmod 755 "$WORK"

# --asan: postgres is not instrumented, so the sanitizer runtime is
# preloaded into it, with test/asan/swift_demangle_stub.so (why: that
# file).  Every TAP script loads PgHa::Sanitizer (PERL5OPT), which sets
# LD_PRELOAD for what it starts and fails the test on a report.
SAN_ENV=()
if [ -n "$asan" ]; then
	cc -shared -fPIC -o "$WORK/swift_demangle_stub.so" "$ROOT/test/asan/swift_demangle_stub.c" ||
		die "building the sanitizer preload stub failed"
	libasan=$(readlink -f "$(cc -print-file-name=libasan.so)")
	[ -f "$libasan" ] || die "libasan not found (gcc's libasan8 package)"
	mkdir -p "$WORK/sanitizer/regress"
	SAN_ENV=(PG_HA_ASAN_PRELOAD="$libasan $WORK/swift_demangle_stub.so"
		PERL5OPT=-MPgHa::Sanitizer PERL5LIB="$SRC/test/perl")
	chmod 755 "$WORK/swift_demangle_stub.so"
	[ "$is_root" = 1 ] && chown -R "$TEST_USER": "$WORK/sanitizer"
fi

as_user() {
	# HOME of the test user; TMPDIR inside the work tree (short unix socket
	# paths, and nothing left elsewhere).
	local home
	home=$(getent passwd "$TEST_USER" | cut -d: -f6)
	if [ "$is_root" = 1 ]; then
		runuser -u "$TEST_USER" -- env HOME="$home" TMPDIR="$WORK/tmp" \
			PATH="$BINDIR:$PATH" "${SAN_ENV[@]}" "$@"
	else
		env TMPDIR="$WORK/tmp" PATH="$BINDIR:$PATH" "${SAN_ENV[@]}" "$@"
	fi
}

# A small file system for the full-disk archive test (213): as root, a
# 24 MB tmpfs unless the caller named one; skipped where mounting fails.
if [ "$is_root" = 1 ] && [ -z "${PG_HA_TEST_SMALL_FS:-}" ]; then
	small_fs=$(mktemp -d /tmp/pg_ha_small_fs.XXXXXX)
	if mount -t tmpfs -o size=24m tmpfs "$small_fs" 2>/dev/null; then
		chmod 1777 "$small_fs"
		export PG_HA_TEST_SMALL_FS=$small_fs
		trap 'umount "$small_fs" 2>/dev/null; rmdir "$small_fs" 2>/dev/null' EXIT
	else
		rmdir "$small_fs"
	fi
fi

log "testing as $TEST_USER in $SRC"
status=0
regress_rc=0
tap_rc=0
[ "$unit_rc" = 0 ] || status=1

if [ "$run_regress" = 1 ]; then
	log "pg_regress suites"
	# --asan: pg_regress's instance gets the runtime directly (no perl
	# in between); its reports go to $WORK/sanitizer/regress.
	regress_san=()
	[ -n "$asan" ] && regress_san=(env LD_PRELOAD="$libasan $WORK/swift_demangle_stub.so"
		ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/sanitizer/regress/asan"
		UBSAN_OPTIONS="print_stacktrace=1:log_path=$WORK/sanitizer/regress/ubsan")
	as_user "${regress_san[@]}" make -C "$SRC" installcheck TAP_TESTS= PG_CONFIG="$PG_CONFIG" $MAKE_SAN \
		</dev/null 2>&1 | tee "$WORK/regress.out"
	regress_rc=${PIPESTATUS[0]}
	if [ -n "$asan" ] && ls "$WORK"/sanitizer/regress/* >/dev/null 2>&1; then
		printf '\n===== sanitizer reports (pg_regress) =====\n'
		cat "$WORK"/sanitizer/regress/*
		regress_rc=1
	fi
	[ "$regress_rc" = 0 ] || status=1
fi

if [ "$run_tap" = 1 ]; then
	log "TAP suites${TESTS:+: $TESTS}"
	# PROVE_FLAGS on the command line: PGXS's Makefile.global resets it
	# after the project Makefile has set it.
	# Two files at a time: most of a TAP file's time is spent waiting for
	# leases and HA cycles (the sequential suite kept the two cores about a
	# quarter busy), and every file has its own etcd, nodes and ports
	# (PostgreSQL::Test::Cluster reserves ports across processes).
	jobs=${PG_HA_TEST_JOBS:-$([ -n "$asan" ] && echo 1 || echo 2)}
	as_user make -C "$SRC" installcheck REGRESS= PG_CONFIG="$PG_CONFIG" $MAKE_SAN \
		PROVE_FLAGS="-I $SRC/test/perl --timer -j$jobs" \
		${TESTS:+T="$TESTS"} </dev/null 2>&1 | tee "$WORK/tap.out"
	tap_rc=${PIPESTATUS[0]}
	[ "$tap_rc" = 0 ] || status=1
fi

# ------------------------------------------------------------ chaos smoke
# The chaos suite's smoke test (test/chaos/smoke.pl): 3 fixed-seed runs on
# a real 3-member etcd and 3 nodes, and one with fencing off that must be
# caught.  It needs root (iptables, and it starts postgres as $TEST_USER
# itself); skipped for named TAP files and under --asan (postgres would
# need the sanitizer runtime preloaded, which the chaos harness does not do).
chaos_rc=0
if [ "$run_tap" = 1 ] && [ -z "$TESTS" ] && [ -z "$asan" ]; then
	if [ "$is_root" = 1 ]; then
		log "chaos smoke test (make chaos-smoke)"
		make -s chaos-smoke PG_CONFIG="$PG_CONFIG" </dev/null 2>&1 | tee "$WORK/chaos.out"
		chaos_rc=${PIPESTATUS[0]}
		[ "$chaos_rc" = 0 ] || status=1
	else
		warn "not root: skipping the chaos smoke test (sudo make chaos-smoke)"
	fi
fi

# ------------------------------------------------- nothing may keep running
# Servers of this run have the work directory on their command line
# (postgres -D ..., etcd --data-dir=...).
leftovers=$(pgrep -f -- "$WORK/" 2>/dev/null | grep -vx "$$" || true)
if [ -n "$leftovers" ]; then
	warn "processes left running by the tests:"
	for pid in $leftovers; do
		ps -o pid=,user=,args= -p "$pid" >&2 || true
	done
	# SIGQUIT: immediate shutdown for a postmaster (its children follow),
	# exit for etcd; SIGKILL whatever is still there after 5 s.
	for pid in $leftovers; do kill -QUIT "$pid" 2>/dev/null || true; done
	for _ in $(seq 50); do
		alive=""
		for pid in $leftovers; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
		[ -z "$alive" ] && break
		sleep 0.1
	done
	for pid in $alive; do kill -KILL "$pid" 2>/dev/null || true; done
	status=1
fi

# ------------------------------------------------------------------ report
LINES_N=${PG_HA_TEST_LOG_LINES:-80}
show() { # file [lines]
	local f=$1 n=${2:-$LINES_N}
	[ -f "$f" ] || return 0
	printf '\n----- %s (last %s lines) -----\n' "${f#"$WORK"/}" "$n"
	tail -n "$n" "$f"
}

if [ "$regress_rc" != 0 ]; then
	printf '\n===== pg_regress failed =====\n'
	if [ -f "$SRC/regression.diffs" ]; then
		printf '\n----- regression.diffs -----\n'
		cat "$SRC/regression.diffs"
	fi
	show "$SRC/log/postmaster.log" "$LINES_N"
fi

if [ "$tap_rc" != 0 ] && [ -d "$SRC/tmp_check/log" ]; then
	printf '\n===== TAP failures =====\n'
	# Failed files from prove's summary, plus any log showing a failure.
	failed=$(sed -n 's/^\(test\/t\/[^ ]*\.pl\) *(Wstat.*/\1/p' "$WORK/tap.out" | xargs -r -n1 basename | sed 's/\.pl$//')
	for f in "$SRC"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] || continue
		if grep -qE '^(\[[^]]*\]\([^)]*\) )?(not ok|Bail out!)|Looks like (you|your test)' "$f"; then
			failed="$failed ${f##*/regress_log_}"
		fi
	done
	failed=$(echo "$failed" | tr ' ' '\n' | sed '/^$/d' | sort -u)
	if [ -z "$failed" ]; then
		for f in "$SRC"/tmp_check/log/regress_log_*; do
			[ -f "$f" ] && failed="$failed ${f##*/regress_log_}"
		done
	fi
	for t in $failed; do
		printf '\n===== %s =====\n' "$t"
		show "$SRC/tmp_check/log/regress_log_$t" $((LINES_N * 2))
		for f in "$SRC/tmp_check/log/${t}"_*.log; do
			show "$f"
		done
	done
fi

if [ "$run_unit" = 1 ]; then
	printf '\nunit tests: %s\n' "${unit_summary:-did not finish}"
fi
if [ "$status" = 0 ] && [ -z "${PG_HA_TEST_KEEP:-}" ]; then
	rm -rf "$WORK"
	log "all tests passed"
else
	if [ "$status" = 0 ]; then
		log "all tests passed; work directory kept: $WORK"
	else
		printf '\ntest.sh: FAILED (unit rc=%s, pg_regress rc=%s, TAP rc=%s, chaos smoke rc=%s%s); work directory kept: %s\n' \
			"$unit_rc" "$regress_rc" "$tap_rc" "$chaos_rc" "${leftovers:+, processes were left running}" "$WORK" >&2
	fi
fi
exit "$status"
