/*
 * test_time.c - ha_time_parse() and ha_time_format(): the scheduled_at
 * format Patroni, RFC 3339 and PostgreSQL's timestamptz text write.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ha_request.h"
#include "unit.h"

#define S INT64_C(1000000)
#define T2026 INT64_C(1796032800)	/* 2026-11-30T10:00:00Z */

typedef struct TimeCase
{
	const char *text;
	bool		ok;
	int64_t		us;				/* expected when ok */
	const char *err;			/* expected substring when not ok */
} TimeCase;

static const TimeCase cases[] = {
	/* the forms we meet */
	{"2026-11-30T10:00:00+00:00", true, T2026 * S},	/* Patroni (isoformat) */
	{"2026-11-30 10:00:00+00", true, T2026 * S},	/* PostgreSQL timestamptz */
	{"2026-11-30T10:00:00Z", true, T2026 * S},	/* RFC 3339 */
	{"2026-11-30t10:00:00z", true, T2026 * S},
	{"2026-11-30T10:00Z", true, T2026 * S},	/* no seconds */
	{"2026-11-30T10:00:00", true, T2026 * S},	/* no zone: UTC */
	{"2026-11-30 10:00", true, T2026 * S},
	/* offsets */
	{"2026-11-30T11:00:00+01:00", true, T2026 * S},
	{"2026-11-30T11:00:00+0100", true, T2026 * S},
	{"2026-11-30T11:00:00+01", true, T2026 * S},
	{"2026-11-30T05:30:00-04:30", true, T2026 * S},
	{"2026-11-30T15:45:00+05:45", true, T2026 * S},
	{"2026-12-01T09:59:00+23:59", true, T2026 * S},
	{"2026-11-30T10:00:00-00:00", true, T2026 * S},
	/* fractional seconds */
	{"2026-11-30T10:00:00.5Z", true, T2026 * S + 500000},
	{"2026-11-30T10:00:00,25Z", true, T2026 * S + 250000},
	{"2026-11-30T10:00:00.000001+00:00", true, T2026 * S + 1},
	{"2026-11-30T10:00:00.123456789Z", true, T2026 * S + 123456},	/* truncated */
	{"2026-11-30 10:00:00.999999+00", true, T2026 * S + 999999},
	/* the range ends and leap days */
	{"1970-01-01T00:00:00Z", true, 0},
	{"1970-01-01T01:00:00+01:00", true, 0},
	{"9999-12-31T23:59:59.999999Z", true, INT64_C(253402300799) * S + 999999},
	{"2024-02-29T00:00:00Z", true, INT64_C(1709164800) * S},
	{"2000-02-29T12:00:00Z", true, INT64_C(951825600) * S},
	{"2038-01-19T03:14:08Z", true, INT64_C(2147483648) * S},	/* past 32-bit time_t */
	/* malformed */
	{"not a time", false, 0, "not an ISO 8601 time"},
	{"", false, 0, "empty"},
	{"2026-11-30", false, 0, "no time of day"},
	{"2026-11-30T10", false, 0, "not an ISO 8601 time"},
	{"2026-11-30T10:0", false, 0, "not an ISO 8601 time"},
	{"2026-1-30T10:00:00Z", false, 0, "not an ISO 8601 time"},
	{" 2026-11-30T10:00:00Z", false, 0, "not an ISO 8601 time"},
	{"2026-11-30T10:00:00Z ", false, 0, "trailing"},
	{"2026-11-30T10:00:00 +00:00", false, 0, "trailing"},
	{"2026-11-30T10:00:00+00:00:00", false, 0, "trailing"},
	{"2026-11-30T10:00:00 UTC", false, 0, "trailing"},
	{"2026-11-30T10:00:00.Z", false, 0, "decimal point without digits"},
	{"2026-11-30T10:00:00.1234567890Z", false, 0, "more than 9"},
	{"2026-11-30T10:00:0Z", false, 0, "malformed seconds"},
	{"2026-11-30T10:00:00+5", false, 0, "zone offset"},
	{"2026-11-30T10:00:00+05:6", false, 0, "zone offset"},
	{"2026-11-30T10:00:00+24:00", false, 0, "out of range"},
	{"2026-11-30T10:00:00+05:60", false, 0, "out of range"},
	{"2026-11-30X10:00:00Z", false, 0, "no time of day"},
	{"2026/11/30T10:00:00Z", false, 0, "not an ISO 8601 time"},
	/* impossible dates and times */
	{"2026-02-29T00:00:00Z", false, 0, "calendar"},
	{"1900-02-29T00:00:00Z", false, 0, "1970-9999"},
	{"2100-02-29T00:00:00Z", false, 0, "calendar"},
	{"2026-11-31T00:00:00Z", false, 0, "calendar"},
	{"2026-13-01T00:00:00Z", false, 0, "calendar"},
	{"2026-00-10T00:00:00Z", false, 0, "calendar"},
	{"2026-11-00T00:00:00Z", false, 0, "calendar"},
	{"2026-11-30T24:00:00Z", false, 0, "time of day"},
	{"2026-11-30T10:60:00Z", false, 0, "time of day"},
	{"2026-11-30T23:59:60Z", false, 0, "time of day"},	/* leap second */
	/* absurd years */
	{"1969-12-31T23:59:59Z", false, 0, "1970-9999"},
	{"0000-01-01T00:00:00Z", false, 0, "1970-9999"},
	{"0026-11-30T10:00:00Z", false, 0, "1970-9999"},
	{"20266-11-30T10:00:00Z", false, 0, "not an ISO 8601 time"},
	{"-2026-11-30T10:00:00Z", false, 0, "not an ISO 8601 time"},
	{"1970-01-01T00:30:00+01:00", false, 0, "in UTC"},
	{"9999-12-31T23:00:00-02:00", false, 0, "in UTC"},
	{"2026-11-30T10:00:00.000000000000000000000000000000000000000000000000000000000000001Z", false, 0, "too long"},
};

static const int64_t format_cases[] = {
	0, T2026 * S, T2026 * S + 1, T2026 * S + 999999, INT64_C(951825600) * S,
	INT64_C(253402300799) * S + 999999, INT64_C(1709164800) * S - 1,
};

void
unit_time(void)
{
	for (size_t i = 0; i < lengthof(cases); i++)
	{
		const TimeCase *c = &cases[i];
		int64_t		us = -1;
		char		err[256] = "";
		bool		ok = ha_time_parse(c->text, &us, err, sizeof(err));

		if (c->ok)
			UNIT_CHECK(ok && us == c->us, "parse \"%s\": ok=%d us=%lld, want %lld (%s)",
					   c->text, ok, (long long) us, (long long) c->us, err);
		else
			UNIT_CHECK(!ok && strstr(err, c->err) != NULL,
					   "parse \"%s\" should fail with \"%s\": ok=%d err=\"%s\"",
					   c->text, c->err, ok, err);
	}
	for (size_t i = 0; i < lengthof(format_cases); i++)
	{
		char		buf[HA_TIME_LEN];
		int64_t		back = -1;
		char		err[256] = "";
		bool		ok;

		ha_time_format(format_cases[i], buf, sizeof(buf));
		ok = ha_time_parse(buf, &back, err, sizeof(err));
		UNIT_CHECK(ok && back == format_cases[i] && strlen(buf) == 32,
				   "format/parse %lld -> \"%s\" -> %lld (%s)",
				   (long long) format_cases[i], buf, (long long) back, err);
	}
	{
		char		buf[HA_TIME_LEN];

		ha_time_format(T2026 * S + 1500, buf, sizeof(buf));
		UNIT_CHECK(strcmp(buf, "2026-11-30T10:00:00.001500+00:00") == 0, "format: \"%s\"", buf);
	}
}
