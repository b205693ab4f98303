/*
 * unit.h - a minimal table-driven test harness for pg_ha's pure logic.
 *
 * Each table row is one check: UNIT_CHECK(cond, "row name", ...) counts a
 * pass or prints "not ok" with the file, line and a message, and counts a
 * failure.  unit_main.c runs every suite and prints "N passed, N failed";
 * the exit status is 1 when anything failed.
 */
#ifndef PG_HA_UNIT_H
#define PG_HA_UNIT_H

#include <stdbool.h>

extern int	unit_passed;
extern int	unit_failed;

extern void unit_check(bool ok, const char *file, int line, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

#define UNIT_CHECK(cond, ...) unit_check((cond), __FILE__, __LINE__, __VA_ARGS__)
#ifndef lengthof
#define lengthof(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* the suites (one file each) */
extern void unit_request(void);
extern void unit_time(void);
extern void unit_target(void);
extern void unit_conn_url(void);
extern void unit_failover_decide(void);
extern void unit_state_table(void);
extern void unit_sync(void);
extern void unit_failsafe(void);
extern void unit_patroni(void);
extern void unit_upstream(void);
extern void unit_dynconf(void);

#endif							/* PG_HA_UNIT_H */
