/*
 * unit_main.c - runs every unit suite (make check-unit).
 *
 * Passes are silent; a failure prints "not ok <file>:<line>: <row>".  The
 * last line is "N passed, N failed"; the exit status is 0 only when
 * nothing failed.
 */
#include <stdarg.h>
#include <stdio.h>

#include "unit.h"

int			unit_passed;
int			unit_failed;

void
unit_check(bool ok, const char *file, int line, const char *fmt,...)
{
	va_list		ap;

	if (ok)
	{
		unit_passed++;
		return;
	}
	unit_failed++;
	printf("not ok %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void
run(const char *name, void (*suite) (void))
{
	int			p = unit_passed;
	int			f = unit_failed;

	suite();
	printf("%-18s %3d passed, %d failed\n", name, unit_passed - p, unit_failed - f);
}

int
main(void)
{
	run("request codec", unit_request);
	run("time", unit_time);
	run("target rules", unit_target);
	run("conn_url", unit_conn_url);
	run("failover_decide", unit_failover_decide);
	run("state table", unit_state_table);
	run("synchronous mode", unit_sync);
	run("failsafe", unit_failsafe);
	run("patroni codec", unit_patroni);
	run("upstream", unit_upstream);
	run("dynamic config", unit_dynconf);
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed == 0 ? 0 : 1;
}
