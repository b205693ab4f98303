# pg_ha: PGXS build.
#
# The extension module (pg_ha.so) is built from src/*.c.  The etcd client
# (src/etcd*.c) is plain C on libcurl + cJSON so that the command-line
# companion and the fuzz targets can link it without a postgres backend.

MODULE_big = pg_ha
EXTENSION  = pg_ha
DATA       = sql/pg_ha--1.0.sql
PGFILEDESC = "pg_ha - high availability for PostgreSQL from inside postgres"

OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))

# Command-line programs: one src/bin/<name>.c each, linked with the
# backend-free parts of src/ (FRONTEND_OBJS must not use backend symbols).
PROGRAMS      = $(patsubst src/bin/%.c,%,$(wildcard src/bin/*.c))
FRONTEND_OBJS = src/etcd.o src/etcd_json.o src/archive_repo.o src/ha_request_store.o src/ha_request.o src/conn_url.o \
                src/patroni_codec.o src/ha_dynconf.o
PROGRAM_LIBS  = -lcurl -lcjson -lpq -lzstd -llz4 -luring -lm
ifneq ($(PROGRAMS),)
SCRIPTS_built = $(PROGRAMS)
endif

PG_CPPFLAGS = -I$(srcdir)/src -I$(shell $(PG_CONFIG) --includedir) -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers
SHLIB_LINK  = -lcurl -lcjson -luring -lpq -lzstd -llz4 -lhttp_parser -lssl -lcrypto

# pg_regress: the SQL surface and GUC validation, on a temporary instance
# that preloads pg_ha (see test/regress.conf).
REGRESS      = guc_validation sql_surface
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check_regress \
               --temp-config=$(srcdir)/test/regress.conf

# TAP suites: real etcd, real postgres nodes (test/perl holds the harness).
TAP_TESTS   = 1
PROVE_TESTS = $(if $(T),$(T),test/t/*.pl)

EXTRA_CLEAN = tmp_check tmp_check_regress results log $(PROGRAMS) test/fuzz/build test/unit/build \
              .build-flavour

# `make ASAN=1`: pg_ha.so and the programs with AddressSanitizer and
# UBSan.  postgres itself is not instrumented: the harness preloads the
# runtime into it (scripts/test.sh --asan, docs/testing.md).  The build
# flavour is a stamp file, so switching it rebuilds every object.
BUILD_FLAVOUR := $(if $(ASAN),asan,plain)
ifdef ASAN
SAN_FLAGS     = -fsanitize=address,undefined -fno-omit-frame-pointer
PG_CPPFLAGS  += $(SAN_FLAGS)
SHLIB_LINK   += $(SAN_FLAGS)
PROGRAM_LIBS += $(SAN_FLAGS)
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# (rewritten at parse time when the flavour changes: PGXS's .SECONDARY
# would not remake a missing stamp)
$(shell test "$$(cat .build-flavour 2>/dev/null)" = "$(BUILD_FLAVOUR)" || echo "$(BUILD_FLAVOUR)" > .build-flavour)
$(OBJS) $(FRONTEND_OBJS) $(PROGRAMS): .build-flavour

# PGXS's Makefile.global resets PROVE_FLAGS: set ours after it
PROVE_FLAGS = -I $(srcdir)/test/perl --timer

# PGXS tracks no header dependencies: a struct that grows in a header must
# rebuild every object, or processes disagree on shared-memory layouts
$(OBJS) $(FRONTEND_OBJS): $(wildcard $(srcdir)/src/*.h)

# after PGXS: CFLAGS and CPPFLAGS are known here
$(PROGRAMS): %: src/bin/%.c $(FRONTEND_OBJS)
	$(CC) $(CFLAGS) $(CPPFLAGS) -I$(includedir) -DPGBINDIR=\"$(bindir)\" -o $@ $< $(FRONTEND_OBJS) $(LDFLAGS) $(PROGRAM_LIBS)

# Unit tests of the pure logic (test/unit): `make check-unit`.  No server,
# no etcd: the codecs and rules are plain C; failover_decide() is built
# against the server headers and libpgport (pg_snprintf, strlcpy), nothing
# of a running backend.  UNIT_SAN= turns the sanitizers off.
UNIT_SAN     ?= -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
UNIT_CFLAGS   = -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
                $(UNIT_SAN) -I$(srcdir)/src -I$(srcdir)/test/unit
UNIT_SERVER_FLAGS = -I$(shell $(PG_CONFIG) --includedir-server) -I$(shell $(PG_CONFIG) --includedir)
UNIT_PLAIN    = test/unit/unit_main.c test/unit/test_request.c test/unit/test_time.c \
                test/unit/test_target.c test/unit/test_conn_url.c src/ha_request.c src/conn_url.c \
                test/unit/test_patroni.c src/patroni_codec.c \
                test/unit/test_dynconf.c src/ha_dynconf.c
UNIT_SERVER   = test/unit/test_failover.c src/ha_failover.c test/unit/test_state.c src/ha_state.c \
                test/unit/test_sync.c src/ha_sync.c \
                test/unit/test_failsafe.c src/ha_failsafe.c \
                test/unit/test_upstream.c src/ha_upstream.c

test/unit/build/unit_tests: $(UNIT_PLAIN) $(UNIT_SERVER) test/unit/unit.h $(wildcard $(srcdir)/src/*.h)
	@mkdir -p test/unit/build
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/server_part.o test/unit/test_failover.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/ha_failover.o src/ha_failover.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/test_state.o test/unit/test_state.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/ha_state.o src/ha_state.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/test_sync.o test/unit/test_sync.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/ha_sync.o src/ha_sync.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/test_failsafe.o test/unit/test_failsafe.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/test_upstream.o test/unit/test_upstream.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/ha_upstream.o src/ha_upstream.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -c -o test/unit/build/ha_failsafe.o src/ha_failsafe.c \
		$(UNIT_SERVER_FLAGS)
	$(CC) $(UNIT_CFLAGS) -o $@ $(UNIT_PLAIN) test/unit/build/server_part.o test/unit/build/ha_failover.o \
		test/unit/build/test_state.o test/unit/build/ha_state.o \
		test/unit/build/test_sync.o test/unit/build/ha_sync.o \
		test/unit/build/test_failsafe.o test/unit/build/ha_failsafe.o \
		test/unit/build/test_upstream.o test/unit/build/ha_upstream.o \
		-L$(shell $(PG_CONFIG) --pkglibdir) -L$(shell $(PG_CONFIG) --libdir) -lpgcommon -lpgport -lcjson -lm

.PHONY: check-unit
check-unit: test/unit/build/unit_tests
	test/unit/build/unit_tests

# Fuzzing (libFuzzer, clang): `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_FLAGS    = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$(srcdir)/src
FUZZ_TARGETS  = test/fuzz/build/fuzz_etcd_reply
# every target; `make fuzz-all FUZZ_SECONDS=600` runs each in turn
FUZZ_ALL      = fuzz fuzz-http fuzz-request fuzz-member fuzz-archive fuzz-patroni

test/fuzz/build/fuzz_etcd_reply: test/fuzz/fuzz_etcd_reply.c src/etcd_json.c src/etcd.c src/etcd.h
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_etcd_reply.c src/etcd_json.c src/etcd.c -lcjson -lcurl

test/fuzz/build/fuzz_http_request: test/fuzz/fuzz_http_request.c src/http_parse.c src/http.h
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_http_request.c src/http_parse.c -lhttp_parser

test/fuzz/build/fuzz_request: test/fuzz/fuzz_request.c src/ha_request.c src/ha_request.h
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_request.c src/ha_request.c -lcjson

test/fuzz/build/fuzz_archive_object: test/fuzz/fuzz_archive_object.c src/archive_repo.c src/archive_repo.h
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -D_GNU_SOURCE -o $@ test/fuzz/fuzz_archive_object.c src/archive_repo.c -luring -llz4 -lzstd

# ha_cluster.c is backend code: server headers, libpgport, stubs in the target
test/fuzz/build/fuzz_member: test/fuzz/fuzz_member.c src/ha_cluster.c src/ha_request.c src/etcd_json.c $(wildcard $(srcdir)/src/*.h)
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -Wno-ignored-attributes -I$(shell $(PG_CONFIG) --includedir-server) -I$(shell $(PG_CONFIG) --includedir) \
		-o $@ test/fuzz/fuzz_member.c src/ha_cluster.c src/ha_request.c src/etcd_json.c \
		-L$(shell $(PG_CONFIG) --pkglibdir) -L$(shell $(PG_CONFIG) --libdir) -lpgcommon -lpgport -lcjson -lm

test/fuzz/build/fuzz_patroni: test/fuzz/fuzz_patroni.c src/patroni_codec.c src/patroni_codec.h src/ha_dynconf.c src/ha_dynconf.h \
		src/ha_request.c src/ha_request.h
	@mkdir -p test/fuzz/build
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_patroni.c src/patroni_codec.c src/ha_dynconf.c src/ha_request.c -lcjson -lm

# `make fuzz-patroni FUZZ_SECONDS=600`: control API bodies, the config merge, pg_ha.tags
.PHONY: fuzz-patroni
fuzz-patroni: test/fuzz/build/fuzz_patroni
	@mkdir -p test/fuzz/corpus-work/patroni
	test/fuzz/build/fuzz_patroni -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/patroni $(srcdir)/test/fuzz/corpus/patroni

# `make fuzz-archive FUZZ_SECONDS=600`: the archive object format
.PHONY: fuzz-archive
fuzz-archive: test/fuzz/build/fuzz_archive_object
	@mkdir -p test/fuzz/corpus-work/archive_object
	test/fuzz/build/fuzz_archive_object -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/archive_object $(srcdir)/test/fuzz/corpus/archive_object

# `make fuzz-member FUZZ_SECONDS=600`: member documents and the worker's cluster view
.PHONY: fuzz-member
fuzz-member: test/fuzz/build/fuzz_member
	@mkdir -p test/fuzz/corpus-work/member
	test/fuzz/build/fuzz_member -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/member $(srcdir)/test/fuzz/corpus/member

# `make fuzz-request FUZZ_SECONDS=600`: the failover key's codec
.PHONY: fuzz-request
fuzz-request: test/fuzz/build/fuzz_request
	@mkdir -p test/fuzz/corpus-work/request
	test/fuzz/build/fuzz_request -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/request $(srcdir)/test/fuzz/corpus/request

# `make fuzz-http FUZZ_SECONDS=600`: the listener's request parsing
.PHONY: fuzz-http
fuzz-http: test/fuzz/build/fuzz_http_request
	@mkdir -p test/fuzz/corpus-work/http_request
	test/fuzz/build/fuzz_http_request -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/http_request $(srcdir)/test/fuzz/corpus/http_request

.PHONY: fuzz-all
fuzz-all:
	for t in $(FUZZ_ALL); do $(MAKE) $$t FUZZ_SECONDS=$(FUZZ_SECONDS) || exit 1; done

.PHONY: fuzz
fuzz: $(FUZZ_TARGETS)
	@mkdir -p test/fuzz/corpus-work/etcd_reply
	test/fuzz/build/fuzz_etcd_reply -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		test/fuzz/corpus-work/etcd_reply $(srcdir)/test/fuzz/corpus/etcd_reply

# Chaos suite (test/chaos/README.md): randomized faults on a 3-member etcd and
# 3 nodes; as root, after `make install`: `make chaos RUNS=200 SEED=1`.
# `make chaos-selftest` checks the checker on synthetic histories (no
# cluster, no root).
RUNS       ?= 200
SEED       ?= 1
MODE       ?= async
CHAOS_OUT  ?= /var/tmp/pg_ha_chaos
CHAOS_ONLY ?=
CHAOS_BUILD = test/chaos/build

$(CHAOS_BUILD)/chaos_client: test/chaos/client.c
	@mkdir -p $(CHAOS_BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -I$(shell $(PG_CONFIG) --includedir) -o $@ $< \
		-L$(shell $(PG_CONFIG) --libdir) -lpq

$(CHAOS_BUILD)/fsync_shim.so: test/chaos/fsync_shim.c
	@mkdir -p $(CHAOS_BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

.PHONY: chaos chaos-selftest chaos-smoke chaos-build
chaos-build: $(CHAOS_BUILD)/chaos_client $(CHAOS_BUILD)/fsync_shim.so

chaos: chaos-build chaos-selftest
	perl test/chaos/chaos.pl --runs $(RUNS) --seed $(SEED) --mode $(MODE) --out $(CHAOS_OUT) \
		--build $(CHAOS_BUILD) $(if $(CHAOS_ONLY),--only $(CHAOS_ONLY))

chaos-selftest:
	prove test/chaos/selftest.pl

# 3 fixed-seed runs that must pass and one with fencing off that must fail
# (as root, after make install; part of scripts/test.sh)
chaos-smoke: chaos-build
	prove --timer test/chaos/smoke.pl

EXTRA_CLEAN += $(CHAOS_BUILD)
