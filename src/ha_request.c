/*
 * ha_request.c - the one codec of the `failover` key, its time format, and
 * the eligibility rules a front end applies before it names a target.
 *
 * Plain C on cJSON: the extension, pg_hactl, the unit tests and the fuzz
 * target link the same object, so the HA worker, SQL and the CLI cannot
 * disagree about what a value means.
 *
 * Decoding is strict.  A value is a request pg_ha acts on only when every
 * field it knows has the right type and the fields agree; anything else is
 * refused with a message, so a caller can log it once and clear or ignore
 * the key (a malformed value must never crash-loop a worker).  Fields we do
 * not know are ignored, as Patroni does.
 *
 * Fields: leader, member (member names or absent/null/""), scheduled_at
 * (ISO 8601 string or absent/null), force, handed_over, final_confirmed,
 * shutdown (booleans or absent/null), final_lsn (non-negative integer, as
 * a JSON number up to 2^53 or a string "X/Y" or decimal), aborted (a
 * string: the reason; true means aborted without a reason).
 *
 * The phase, by precedence:
 *   1. aborted present            -> aborted.  Abandonment is terminal and
 *                                   nobody acts on an aborted request, so
 *                                   it wins over every other flag: the
 *                                   safe reading of a value that says both
 *                                   "aborted" and "handed over" is "do not
 *                                   promote because of this request".
 *   2. shutdown                   -> shutdown.  Needs leader and final_lsn;
 *                                   naming a member, or handed_over or
 *                                   final_confirmed beside it, is a
 *                                   contradiction and refused.
 *   3. final_confirmed            -> final_confirmed.  Only after a hand-over:
 *                                   without handed_over it is refused.
 *   4. handed_over                -> handed_over.
 *   5. otherwise                  -> requested.
 * Further contradictions refused in every phase but aborted:
 *   - leader and member the same name;
 *   - handed_over / final_confirmed without leader, member and final_lsn;
 *   - requested naming neither leader nor member;
 *   - requested with a final_lsn (only the old leader writes one, later);
 *   - scheduled_at without a leader: Patroni schedules switchovers only,
 *     a failover happens when it is asked for;
 *   - force with a leader: force accepts data loss in a failover (no
 *     leader); a switchover never loses data and has nothing to force.
 * Patroni's own values map as: {"member": x} a manual failover request,
 * {"leader": a, "member": b} a switchover, the same with scheduled_at a
 * scheduled switchover, {"leader": a} a switchover to the best replica.
 *
 * Times (scheduled_at): "YYYY-MM-DD" 'T'|'t'|' ' "HH:MM[:SS[.f{1,9}]]"
 * and a zone: Z, +HH, +HHMM, +HH:MM (or none: UTC).  That covers RFC 3339,
 * what Patroni writes (Python's isoformat) and PostgreSQL's timestamptz
 * text ("2026-11-30 10:00:00+00").  Years 1970-9999 only, both as written
 * and in UTC: a typo such as 20266 or 0026 is refused rather than read as
 * "never" or "long ago".  Leap seconds (:60) are refused.
 */
#include "ha_request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#define USECS_PER_SEC INT64_C(1000000)
#define SECS_PER_DAY INT64_C(86400)
/* 10000-01-01T00:00:00Z in Unix seconds */
#define HA_TIME_END_SECS INT64_C(253402300800)
#define HA_TIME_MAX_TEXT 64
#define JSON_MAX_EXACT_INT 9007199254740992.0	/* 2^53 */

/* ---------- helpers ---------- */

static void
set_err(char *err, size_t errlen, const char *fmt, const char *arg)
{
	if (err == NULL || errlen == 0)
		return;
	snprintf(err, errlen, fmt, arg ? arg : "");
}

/*
 * A printable, bounded copy of untrusted text for an error message:
 * control and non-ASCII bytes become '?', at most 40 bytes are shown.
 */
static const char *
shown(const char *text, char *buf, size_t len)
{
	size_t		n = 0;

	for (const char *p = text; *p && n + 4 < len && n < 40; p++)
		buf[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
	if (text[n] != '\0' && n + 4 < len)
	{
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

bool
ha_valid_member_name(const char *name)
{
	size_t		n = 0;

	if (name == NULL || name[0] == '\0')
		return false;
	for (const char *p = name; *p; p++, n++)
		if (n >= HA_REQUEST_NAME_LEN - 1 ||
			!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			return false;
	return true;
}

const char *
ha_request_phase_name(HaRequestPhase phase)
{
	switch (phase)
	{
		case HA_REQ_REQUESTED:
			return "requested";
		case HA_REQ_HANDED_OVER:
			return "handed_over";
		case HA_REQ_FINAL_CONFIRMED:
			return "final_confirmed";
		case HA_REQ_ABORTED:
			return "aborted";
		case HA_REQ_SHUTDOWN:
			return "shutdown";
	}
	return "unknown";
}

/* ---------- time ---------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t		era;
	int64_t		yoe;
	int64_t		doy;
	int64_t		doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t		era;
	int64_t		doe;
	int64_t		yoe;
	int64_t		doy;
	int64_t		mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int) (doy - (153 * mp + 2) / 5 + 1);
	*m = (int) (mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool
is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
days_in_month(int64_t y, int m)
{
	static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Exactly n decimal digits at *p. */
static bool
take_digits(const char **p, int n, int *val)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		char		c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*val = v;
	return true;
}

bool
ha_time_has_zone(const char *text)
{
	const char *time_part = strpbrk(text, "Tt ");
	size_t		len = strlen(text);

	if (len > 0 && (text[len - 1] == 'Z' || text[len - 1] == 'z'))
		return true;
	return time_part != NULL && strpbrk(time_part, "+-") != NULL;
}

bool
ha_time_parse(const char *text, int64_t *epoch_us, char *err, size_t errlen)
{
	const char *p = text;
	int			year,
				mon,
				day,
				hour,
				min,
				sec = 0;
	int64_t		usec = 0;
	int			off_sign = 0,
				off_h = 0,
				off_m = 0;
	int64_t		secs;
	char		sbuf[64];

	*epoch_us = 0;
	if (text == NULL || text[0] == '\0')
	{
		set_err(err, errlen, "empty time", NULL);
		return false;
	}
	if (strnlen(text, HA_TIME_MAX_TEXT + 1) > HA_TIME_MAX_TEXT)
	{
		set_err(err, errlen, "\"%s\" is too long for a time", shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (!take_digits(&p, 4, &year) || *p++ != '-' ||
		!take_digits(&p, 2, &mon) || *p++ != '-' ||
		!take_digits(&p, 2, &day))
	{
		set_err(err, errlen, "\"%s\" is not an ISO 8601 time (YYYY-MM-DDTHH:MM:SS+HH:MM)",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (*p != 'T' && *p != 't' && *p != ' ')
	{
		set_err(err, errlen, "\"%s\" has no time of day (YYYY-MM-DDTHH:MM:SS+HH:MM)",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	p++;
	if (!take_digits(&p, 2, &hour) || *p++ != ':' || !take_digits(&p, 2, &min))
	{
		set_err(err, errlen, "\"%s\" is not an ISO 8601 time (YYYY-MM-DDTHH:MM:SS+HH:MM)",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (*p == ':')
	{
		p++;
		if (!take_digits(&p, 2, &sec))
		{
			set_err(err, errlen, "\"%s\" has malformed seconds", shown(text, sbuf, sizeof(sbuf)));
			return false;
		}
		if (*p == '.' || *p == ',')
		{
			int			ndig = 0;

			p++;
			while (*p >= '0' && *p <= '9')
			{
				if (++ndig > 9)
				{
					set_err(err, errlen, "\"%s\" has more than 9 fractional digits",
							shown(text, sbuf, sizeof(sbuf)));
					return false;
				}
				/* microseconds: later digits are truncated */
				if (ndig <= 6)
					usec = usec * 10 + (*p - '0');
				p++;
			}
			if (ndig == 0)
			{
				set_err(err, errlen, "\"%s\" has a decimal point without digits",
						shown(text, sbuf, sizeof(sbuf)));
				return false;
			}
			for (int i = ndig; i < 6; i++)
				usec *= 10;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		off_sign = *p == '-' ? -1 : 1;
		p++;
		if (!take_digits(&p, 2, &off_h))
		{
			set_err(err, errlen, "\"%s\" has a malformed zone offset (+HH:MM)",
					shown(text, sbuf, sizeof(sbuf)));
			return false;
		}
		if (*p == ':')
		{
			p++;
			if (!take_digits(&p, 2, &off_m))
			{
				set_err(err, errlen, "\"%s\" has a malformed zone offset (+HH:MM)",
						shown(text, sbuf, sizeof(sbuf)));
				return false;
			}
		}
		else if (*p >= '0' && *p <= '9' && !take_digits(&p, 2, &off_m))
		{
			set_err(err, errlen, "\"%s\" has a malformed zone offset (+HHMM)",
					shown(text, sbuf, sizeof(sbuf)));
			return false;
		}
	}
	if (*p != '\0')
	{
		set_err(err, errlen, "\"%s\" has trailing characters after the time",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (year < 1970 || year > 9999)
	{
		set_err(err, errlen, "\"%s\" is outside the years 1970-9999", shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
	{
		set_err(err, errlen, "\"%s\" is not a date of the calendar", shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (hour > 23 || min > 59 || sec > 59)
	{
		set_err(err, errlen, "\"%s\" is not a time of day (00:00:00-23:59:59)",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	if (off_h > 23 || off_m > 59)
	{
		set_err(err, errlen, "\"%s\" has a zone offset out of range", shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	secs = days_from_civil(year, mon, day) * SECS_PER_DAY + hour * 3600 + min * 60 + sec -
		off_sign * (off_h * 3600 + off_m * 60);
	if (secs < 0 || secs >= HA_TIME_END_SECS)
	{
		set_err(err, errlen, "\"%s\" is outside the years 1970-9999 in UTC",
				shown(text, sbuf, sizeof(sbuf)));
		return false;
	}
	*epoch_us = secs * USECS_PER_SEC + usec;
	return true;
}

void
ha_time_format(int64_t epoch_us, char *buf, size_t len)
{
	int64_t		secs = epoch_us / USECS_PER_SEC;
	int64_t		usec = epoch_us % USECS_PER_SEC;
	int64_t		days;
	int64_t		rem;
	int64_t		y;
	int			m,
				d;

	if (usec < 0)
	{
		usec += USECS_PER_SEC;
		secs--;
	}
	days = secs / SECS_PER_DAY;
	rem = secs % SECS_PER_DAY;
	if (rem < 0)
	{
		rem += SECS_PER_DAY;
		days--;
	}
	civil_from_days(days, &y, &m, &d);
	snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%06lld+00:00",
			 (long long) y, m, d, (int) (rem / 3600), (int) (rem % 3600 / 60),
			 (int) (rem % 60), (long long) usec);
}

/* ---------- the request ---------- */

bool
ha_request_validate(const HaRequest *req, char *err, size_t errlen)
{
	char		sbuf[64];

	if ((int) req->phase < 0 || req->phase > HA_REQ_SHUTDOWN)
	{
		set_err(err, errlen, "unknown phase", NULL);
		return false;
	}
	if (memchr(req->leader, '\0', sizeof(req->leader)) == NULL ||
		(req->leader[0] && !ha_valid_member_name(req->leader)))
	{
		set_err(err, errlen, "leader \"%s\" is not a valid member name",
				memchr(req->leader, '\0', sizeof(req->leader)) ? shown(req->leader, sbuf, sizeof(sbuf)) : "?");
		return false;
	}
	if (memchr(req->member, '\0', sizeof(req->member)) == NULL ||
		(req->member[0] && !ha_valid_member_name(req->member)))
	{
		set_err(err, errlen, "member \"%s\" is not a valid member name",
				memchr(req->member, '\0', sizeof(req->member)) ? shown(req->member, sbuf, sizeof(sbuf)) : "?");
		return false;
	}
	if (memchr(req->reason, '\0', sizeof(req->reason)) == NULL)
	{
		set_err(err, errlen, "reason is not terminated", NULL);
		return false;
	}
	if (req->scheduled &&
		(req->scheduled_at_us < 0 || req->scheduled_at_us >= HA_TIME_END_SECS * USECS_PER_SEC))
	{
		set_err(err, errlen, "scheduled_at is outside the years 1970-9999", NULL);
		return false;
	}
	if (req->phase != HA_REQ_ABORTED && req->reason[0] != '\0')
	{
		set_err(err, errlen, "a reason without aborted", NULL);
		return false;
	}
	if (req->phase == HA_REQ_ABORTED)
		return true;			/* nobody acts on it: any names will do */
	if (req->leader[0] && strcmp(req->leader, req->member) == 0)
	{
		set_err(err, errlen, "leader and member are both \"%s\"", req->leader);
		return false;
	}
	if (req->scheduled && req->leader[0] == '\0')
	{
		set_err(err, errlen, "scheduled_at without a leader: only a switchover can be scheduled", NULL);
		return false;
	}
	if (req->force && req->leader[0] != '\0')
	{
		set_err(err, errlen, "force with a leader: force applies to a failover, not a switchover", NULL);
		return false;
	}
	switch (req->phase)
	{
		case HA_REQ_REQUESTED:
			if (req->leader[0] == '\0' && req->member[0] == '\0')
			{
				set_err(err, errlen, "names neither leader nor member", NULL);
				return false;
			}
			if (req->final_lsn != 0)
			{
				set_err(err, errlen, "final_lsn without handed_over, final_confirmed or shutdown", NULL);
				return false;
			}
			break;
		case HA_REQ_HANDED_OVER:
		case HA_REQ_FINAL_CONFIRMED:
			if (req->leader[0] == '\0' || req->member[0] == '\0' || req->final_lsn == 0)
			{
				set_err(err, errlen, "%s without leader, member and final_lsn",
						ha_request_phase_name(req->phase));
				return false;
			}
			break;
		case HA_REQ_SHUTDOWN:
			if (req->leader[0] == '\0' || req->final_lsn == 0)
			{
				set_err(err, errlen, "shutdown without leader and final_lsn", NULL);
				return false;
			}
			if (req->member[0] != '\0')
			{
				set_err(err, errlen, "shutdown naming a member \"%s\"", req->member);
				return false;
			}
			break;
		case HA_REQ_ABORTED:
			break;
	}
	return true;
}

bool
ha_request_pending_schedule(const HaRequest *req, int64_t now_us)
{
	return req->phase == HA_REQ_REQUESTED && req->scheduled && req->scheduled_at_us > now_us;
}

/* A member name field: absent, null or "" -> "". */
static bool
get_name(const cJSON *doc, const char *field, char *out, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, field);
	char		sbuf[64];
	char		msg[128];

	out[0] = '\0';
	if (it == NULL || cJSON_IsNull(it))
		return true;
	if (!cJSON_IsString(it) || it->valuestring == NULL)
	{
		snprintf(msg, sizeof(msg), "%s is not a string", field);
		set_err(err, errlen, "%s", msg);
		return false;
	}
	if (it->valuestring[0] == '\0')
		return true;
	if (!ha_valid_member_name(it->valuestring))
	{
		snprintf(msg, sizeof(msg), "%s \"%s\" is not a valid member name", field,
				 shown(it->valuestring, sbuf, sizeof(sbuf)));
		set_err(err, errlen, "%s", msg);
		return false;
	}
	strcpy(out, it->valuestring);
	return true;
}

/* A boolean field: absent, null or false -> false. */
static bool
get_flag(const cJSON *doc, const char *field, bool *out, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, field);

	*out = false;
	if (it == NULL || cJSON_IsNull(it) || cJSON_IsFalse(it))
		return true;
	if (cJSON_IsTrue(it))
	{
		*out = true;
		return true;
	}
	set_err(err, errlen, "%s is not true or false", field);
	return false;
}

/* "X/Y" (pg_lsn) or decimal digits, the whole string. */
static bool
parse_lsn_text(const char *s, uint64_t *out)
{
	const char *slash = strchr(s, '/');
	uint64_t	v = 0;

	if (slash != NULL)
	{
		uint64_t	hi = 0,
					lo = 0;
		size_t		nhi = (size_t) (slash - s);
		size_t		nlo = strlen(slash + 1);

		if (nhi < 1 || nhi > 8 || nlo < 1 || nlo > 8)
			return false;
		for (const char *p = s; p < slash; p++)
		{
			int			c = (*p >= '0' && *p <= '9') ? *p - '0' :
				(*p >= 'A' && *p <= 'F') ? *p - 'A' + 10 :
				(*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;

			if (c < 0)
				return false;
			hi = hi * 16 + (uint64_t) c;
		}
		for (const char *p = slash + 1; *p; p++)
		{
			int			c = (*p >= '0' && *p <= '9') ? *p - '0' :
				(*p >= 'A' && *p <= 'F') ? *p - 'A' + 10 :
				(*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;

			if (c < 0)
				return false;
			lo = lo * 16 + (uint64_t) c;
		}
		*out = (hi << 32) | lo;
		return true;
	}
	if (s[0] == '\0' || strlen(s) > 20)
		return false;
	for (const char *p = s; *p; p++)
	{
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t) (*p - '0');
	}
	*out = v;
	return true;
}

static bool
get_lsn(const cJSON *doc, uint64_t *out, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, "final_lsn");

	*out = 0;
	if (it == NULL || cJSON_IsNull(it))
		return true;
	if (cJSON_IsNumber(it))
	{
		double		d = it->valuedouble;

		/* exact integers only: a double above 2^53 is already rounded */
		if (!(d >= 0 && d <= JSON_MAX_EXACT_INT) || d != (double) (uint64_t) d)
		{
			set_err(err, errlen, "final_lsn is not a non-negative integer below 2^53", NULL);
			return false;
		}
		*out = (uint64_t) d;
		return true;
	}
	if (cJSON_IsString(it) && it->valuestring && parse_lsn_text(it->valuestring, out))
		return true;
	set_err(err, errlen, "final_lsn is not an LSN (a non-negative integer or \"X/Y\")", NULL);
	return false;
}

/* Copies at most len-1 bytes of src, never cutting a UTF-8 sequence. */
static void
copy_reason(char *dst, size_t len, const char *src)
{
	size_t		n = strlen(src);

	if (n >= len)
	{
		n = len - 1;
		while (n > 0 && ((unsigned char) src[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

bool
ha_request_decode(const char *value, size_t len, HaRequest *out, char *err, size_t errlen)
{
	char	   *copy;
	cJSON	   *doc;
	const cJSON *it;
	bool		handed_over,
				final_confirmed,
				shutdown,
				aborted = false;
	bool		ok = false;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';
	if (value == NULL || len == 0)
	{
		set_err(err, errlen, "empty value", NULL);
		return false;
	}
	if (len > HA_REQUEST_MAX_INPUT)
	{
		set_err(err, errlen, "value longer than %s bytes", "8192");
		return false;
	}
	if (memchr(value, '\0', len) != NULL)
	{
		set_err(err, errlen, "value contains a NUL byte", NULL);
		return false;
	}
	/*
	 * An escaped NUL would cut a name short inside cJSON ("n3\u0000x" would
	 * read as "n3"): refuse it.  A backslash escapes the next character, so
	 * "\\u0000" (a backslash, then text) is not one.
	 */
	for (size_t i = 0; i + 1 < len; i++)
		if (value[i] == '\\')
		{
			if (value[i + 1] == 'u' && i + 5 < len && memcmp(value + i + 2, "0000", 4) == 0)
			{
				set_err(err, errlen, "value contains an escaped NUL (\\u0000)", NULL);
				return false;
			}
			i++;
		}
	/* NUL-terminated copy: cJSON can then refuse trailing garbage */
	copy = malloc(len + 1);
	if (copy == NULL)
	{
		set_err(err, errlen, "out of memory", NULL);
		return false;
	}
	memcpy(copy, value, len);
	copy[len] = '\0';
	doc = cJSON_ParseWithOpts(copy, NULL, true);
	free(copy);
	if (doc == NULL)
	{
		set_err(err, errlen, "not JSON", NULL);
		return false;
	}
	if (!cJSON_IsObject(doc))
	{
		set_err(err, errlen, "not a JSON object", NULL);
		goto done;
	}
	if (!get_name(doc, "leader", out->leader, err, errlen) ||
		!get_name(doc, "member", out->member, err, errlen) ||
		!get_flag(doc, "force", &out->force, err, errlen) ||
		!get_flag(doc, "handed_over", &handed_over, err, errlen) ||
		!get_flag(doc, "final_confirmed", &final_confirmed, err, errlen) ||
		!get_flag(doc, "shutdown", &shutdown, err, errlen) ||
		!get_lsn(doc, &out->final_lsn, err, errlen))
		goto done;

	it = cJSON_GetObjectItemCaseSensitive(doc, "scheduled_at");
	if (it != NULL && !cJSON_IsNull(it))
	{
		char		terr[160];

		if (!cJSON_IsString(it) || it->valuestring == NULL)
		{
			set_err(err, errlen, "scheduled_at is not a string", NULL);
			goto done;
		}
		if (!ha_time_parse(it->valuestring, &out->scheduled_at_us, terr, sizeof(terr)))
		{
			set_err(err, errlen, "scheduled_at: %s", terr);
			goto done;
		}
		out->scheduled = true;
	}

	it = cJSON_GetObjectItemCaseSensitive(doc, "aborted");
	if (cJSON_IsString(it) && it->valuestring)
	{
		aborted = true;
		copy_reason(out->reason, sizeof(out->reason), it->valuestring);
	}
	else if (cJSON_IsTrue(it))
		aborted = true;
	else if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsFalse(it))
	{
		set_err(err, errlen, "aborted is not a reason (a string)", NULL);
		goto done;
	}

	if (aborted)
		out->phase = HA_REQ_ABORTED;
	else if (shutdown)
	{
		if (handed_over || final_confirmed)
		{
			set_err(err, errlen, "shutdown together with handed_over or final_confirmed", NULL);
			goto done;
		}
		out->phase = HA_REQ_SHUTDOWN;
	}
	else if (final_confirmed)
	{
		if (!handed_over)
		{
			set_err(err, errlen, "final_confirmed without handed_over", NULL);
			goto done;
		}
		out->phase = HA_REQ_FINAL_CONFIRMED;
	}
	else if (handed_over)
		out->phase = HA_REQ_HANDED_OVER;
	else
		out->phase = HA_REQ_REQUESTED;
	ok = ha_request_validate(out, err, errlen);

done:
	cJSON_Delete(doc);
	if (!ok)
	{
		char		keep[HA_REQUEST_REASON_LEN];

		/* a caller that ignores the result finds no half-decoded request */
		if (err && errlen)
			strncpy(keep, err, sizeof(keep) - 1);
		keep[sizeof(keep) - 1] = '\0';
		memset(out, 0, sizeof(*out));
		if (err && errlen)
			snprintf(err, errlen, "%s", keep);
	}
	return ok;
}

int
ha_request_encode(const HaRequest *req, char *buf, size_t len)
{
	cJSON	   *doc;
	bool		ok = true;
	int			n = -1;

	if (buf == NULL || len == 0)
		return -1;
	buf[0] = '\0';
	if (!ha_request_validate(req, NULL, 0))
		return -1;
	doc = cJSON_CreateObject();
	if (doc == NULL)
		return -1;
	if (req->leader[0])
		ok &= cJSON_AddStringToObject(doc, "leader", req->leader) != NULL;
	if (req->member[0])
		ok &= cJSON_AddStringToObject(doc, "member", req->member) != NULL;
	if (req->scheduled)
	{
		char		t[HA_TIME_LEN];

		ha_time_format(req->scheduled_at_us, t, sizeof(t));
		ok &= cJSON_AddStringToObject(doc, "scheduled_at", t) != NULL;
	}
	if (req->force)
		ok &= cJSON_AddTrueToObject(doc, "force") != NULL;
	if (req->final_lsn != 0)
	{
		char		num[32];

		/* exact: a JSON number up to 2^53, beyond that pg_lsn text */
		if (req->final_lsn <= (uint64_t) JSON_MAX_EXACT_INT)
		{
			snprintf(num, sizeof(num), "%llu", (unsigned long long) req->final_lsn);
			ok &= cJSON_AddRawToObject(doc, "final_lsn", num) != NULL;
		}
		else
		{
			snprintf(num, sizeof(num), "%X/%X", (unsigned) (req->final_lsn >> 32),
					 (unsigned) req->final_lsn);
			ok &= cJSON_AddStringToObject(doc, "final_lsn", num) != NULL;
		}
	}
	if (req->phase == HA_REQ_HANDED_OVER || req->phase == HA_REQ_FINAL_CONFIRMED)
		ok &= cJSON_AddTrueToObject(doc, "handed_over") != NULL;
	if (req->phase == HA_REQ_FINAL_CONFIRMED)
		ok &= cJSON_AddTrueToObject(doc, "final_confirmed") != NULL;
	if (req->phase == HA_REQ_SHUTDOWN)
		ok &= cJSON_AddTrueToObject(doc, "shutdown") != NULL;
	if (req->phase == HA_REQ_ABORTED)
		ok &= cJSON_AddStringToObject(doc, "aborted", req->reason) != NULL;
	if (ok)
	{
		size_t		cap = len < HA_REQUEST_MAX_JSON + 1 ? len : HA_REQUEST_MAX_JSON + 1;

		/* cJSON asks for 5 bytes of slack in a preallocated buffer */
		if (cap > 5 && cJSON_PrintPreallocated(doc, buf, (int) cap - 5, false))
			n = (int) strlen(buf);
		else
			buf[0] = '\0';
	}
	cJSON_Delete(doc);
	return n;
}

/* ---------- other keys the eligibility rules read ---------- */

static bool
json_true(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsTrue(it) || (cJSON_IsString(it) && it->valuestring &&
								strcmp(it->valuestring, "true") == 0);
}

static const char *
json_text(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsString(it) && it->valuestring ? it->valuestring : "";
}

void
ha_candidate_parse(const char *name, const char *value, size_t len, HaCandidate *out)
{
	cJSON	   *doc;
	const cJSON *it;
	const cJSON *tags;
	const char *role;
	const char *state;

	memset(out, 0, sizeof(*out));
	out->failover_priority = 1;
	if (name == NULL || strlen(name) >= sizeof(out->name))
		return;
	strcpy(out->name, name);
	if (value == NULL || len == 0 || len > 65536)
		return;
	doc = cJSON_ParseWithLength(value, len);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		return;
	}
	role = json_text(doc, "role");
	state = json_text(doc, "state");
	out->is_primary = strcmp(role, "master") == 0 || strcmp(role, "primary") == 0;
	/* Patroni 3 says "running" for a replica, Patroni 4 "streaming" */
	out->is_replica = strcmp(role, "replica") == 0 &&
		(state[0] == '\0' || strcmp(state, "running") == 0 || strcmp(state, "streaming") == 0);
	out->streaming = strcmp(json_text(doc, "replication_state"), "streaming") == 0;
	it = cJSON_GetObjectItemCaseSensitive(doc, "timeline");
	if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 4294967296.0)
		out->timeline = (uint32_t) it->valuedouble;
	tags = cJSON_GetObjectItemCaseSensitive(doc, "tags");
	if (cJSON_IsObject(tags))
	{
		out->nofailover = json_true(tags, "nofailover");
		it = cJSON_GetObjectItemCaseSensitive(tags, "failover_priority");
		if (cJSON_IsNumber(it) && it->valuedouble > -1e9 && it->valuedouble < 1e9)
			out->failover_priority = (int) it->valuedouble;
		if (out->failover_priority <= 0)
			out->nofailover = true;
		if (out->nofailover)
			out->failover_priority = 0;
	}
	it = cJSON_GetObjectItemCaseSensitive(doc, "xlog_location");
	out->valid = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1.8e19 &&
		json_text(doc, "conn_url")[0] != '\0';
	if (out->valid)
		out->lsn = (uint64_t) it->valuedouble;
	cJSON_Delete(doc);
}

uint64_t
ha_status_optime(const char *value, size_t len)
{
	cJSON	   *doc;
	const cJSON *it;
	uint64_t	optime = 0;

	if (value == NULL || len == 0 || len > 65536)
		return 0;
	doc = cJSON_ParseWithLength(value, len);
	it = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "optime") : NULL;
	if (cJSON_IsNumber(it) && it->valuedouble > 0 && it->valuedouble < 1.8e19)
		optime = (uint64_t) it->valuedouble;
	cJSON_Delete(doc);
	return optime;
}

bool
ha_history_last(const char *value, size_t len, uint32_t *timeline,
				char *reason, size_t reasonlen, char *new_leader, size_t leaderlen)
{
	cJSON	   *doc;
	const cJSON *last;
	const cJSON *it;
	bool		ok = false;

	*timeline = 0;
	if (reason && reasonlen)
		reason[0] = '\0';
	if (new_leader && leaderlen)
		new_leader[0] = '\0';
	if (value == NULL || len == 0 || len > 1024 * 1024)
		return false;
	doc = cJSON_ParseWithLength(value, len);
	if (!cJSON_IsArray(doc))
		goto done;
	/* the last entry; Patroni appends, so it is the newest timeline */
	last = NULL;
	cJSON_ArrayForEach(it, doc)
		last = it;
	if (!cJSON_IsArray(last))
		goto done;
	it = cJSON_GetArrayItem(last, 0);
	if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble < 4294967295.0))
		goto done;
	*timeline = (uint32_t) it->valuedouble + 1;
	it = cJSON_GetArrayItem(last, 2);
	if (reason && reasonlen && cJSON_IsString(it) && it->valuestring)
		copy_reason(reason, reasonlen, it->valuestring);
	it = cJSON_GetArrayItem(last, 4);
	if (new_leader && leaderlen && cJSON_IsString(it) && it->valuestring &&
		strlen(it->valuestring) < leaderlen)
		strcpy(new_leader, it->valuestring);
	ok = true;
done:
	cJSON_Delete(doc);
	return ok;
}

void
ha_control_view_add(HaControlView *view, const char *suffix, const char *value, size_t len,
					int64_t mod_revision)
{
	if (strcmp(suffix, "leader") == 0)
	{
		if (len < sizeof(view->leader) && value && memchr(value, '\0', len) == NULL)
		{
			memcpy(view->leader, value, len);
			view->leader[len] = '\0';
		}
	}
	else if (strncmp(suffix, "members/", 8) == 0)
	{
		if (view->nmembers < HA_CONTROL_MAX_MEMBERS && ha_valid_member_name(suffix + 8))
			ha_candidate_parse(suffix + 8, value, len, &view->members[view->nmembers++]);
	}
	else if (strcmp(suffix, "status") == 0)
		view->status_optime = ha_status_optime(value, len);
	else if (strcmp(suffix, "history") == 0)
		ha_history_last(value, len, &view->history_timeline,
						view->history_reason, sizeof(view->history_reason),
						view->history_leader, sizeof(view->history_leader));
	else if (strcmp(suffix, "config") == 0)
	{
		cJSON	   *doc = value && len && len <= 65536 ? cJSON_ParseWithLength(value, len) : NULL;

		view->paused = cJSON_IsObject(doc) &&
			cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "pause"));
		cJSON_Delete(doc);
	}
	else if (strcmp(suffix, "sync") == 0)
	{
		if (value && len < sizeof(view->sync_value) && memchr(value, '\0', len) == NULL)
		{
			memcpy(view->sync_value, value, len);
			view->sync_value[len] = '\0';
		}
	}
	else if (strcmp(suffix, "failover") == 0)
	{
		view->has_request = true;
		view->request_mod_revision = mod_revision;
		view->request_valid = ha_request_decode(value, len, &view->request,
												view->request_error,
												sizeof(view->request_error));
	}
}

const HaCandidate *
ha_control_view_member(const HaControlView *view, const char *name)
{
	for (int i = 0; i < view->nmembers; i++)
		if (strcmp(view->members[i].name, name) == 0)
			return &view->members[i];
	return NULL;
}

bool
ha_request_blocks(const HaControlView *view, bool for_failover)
{
	const HaRequest *r = &view->request;

	if (!view->has_request || !view->request_valid)
		return false;
	switch (r->phase)
	{
		case HA_REQ_ABORTED:
		case HA_REQ_SHUTDOWN:
			return false;
		case HA_REQ_REQUESTED:
			return !(for_failover && r->leader[0] != '\0');
		case HA_REQ_HANDED_OVER:
		case HA_REQ_FINAL_CONFIRMED:
			return true;
	}
	return true;
}

/* ---------- eligibility of a named target ---------- */

const char *
ha_target_verdict_name(HaTargetVerdict v)
{
	switch (v)
	{
		case HA_TARGET_OK:
			return "ok";
		case HA_TARGET_UNKNOWN:
			return "unknown_member";
		case HA_TARGET_IS_LEADER:
			return "is_leader";
		case HA_TARGET_NOT_REPLICA:
			return "not_replica";
		case HA_TARGET_NOFAILOVER:
			return "nofailover";
		case HA_TARGET_OLD_TIMELINE:
			return "old_timeline";
		case HA_TARGET_NOT_STREAMING:
			return "not_streaming";
		case HA_TARGET_LAGGING:
			return "lagging";
		case HA_TARGET_NOT_BEST:
			return "not_best";
		case HA_TARGET_NOT_SYNC:
			return "not_sync";
		case HA_TARGET_NONE:
			return "no_candidate";
	}
	return "unknown";
}

/* Same order as failover_better() in ha_failover.c: LSN, priority, name. */
static bool
candidate_better(const HaCandidate *a, const HaCandidate *b)
{
	if (a->lsn != b->lsn)
		return a->lsn > b->lsn;
	if (a->failover_priority != b->failover_priority)
		return a->failover_priority > b->failover_priority;
	return strcmp(a->name, b->name) < 0;
}

typedef struct TargetFacts
{
	uint64_t	position;		/* most advanced known position of the cluster */
	const char *position_of;	/* whose: a member name or "the status key" */
	uint32_t	timeline;		/* the cluster's timeline */
	const HaCandidate *leader;	/* the leader's member key, if any */
} TargetFacts;

static bool
lagging(const TargetFacts *f, const HaCandidate *m, uint64_t max_lag)
{
	return f->position > m->lsn && f->position - m->lsn > max_lag;
}

/*
 * A replica another one could be compared with: running, taggable, on the
 * cluster's timeline and within maximum_lag_on_failover.  For a switchover
 * it must also stream from the leader.
 */
static bool
eligible(const HaTargetInput *in, const TargetFacts *f, const HaCandidate *m)
{
	if (!m->valid || !m->is_replica || m->nofailover || m->timeline < f->timeline)
		return false;
	if (in->switchover)
		return m->streaming && strcmp(m->name, in->leader) != 0;
	return !lagging(f, m, in->maximum_lag_bytes);
}

/* Is name in list, comma-separated, case-insensitively (as ha_sync.c compares)? */
static bool
name_listed(const char *list, const char *name)
{
	size_t		n = strlen(name);

	for (const char *p = list ? list : ""; *p;)
	{
		size_t		len = strcspn(p, ",");

		if (len == n && strncasecmp(p, name, n) == 0)
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

HaTargetVerdict
ha_target_check(const HaTargetInput *in, const char *candidate,
				char *chosen, size_t chosenlen, char *better, size_t betterlen,
				char *why, size_t whylen)
{
	TargetFacts f = {0};
	const HaCandidate *cand = NULL;
	const HaCandidate *best = NULL;
	char		wbuf[256];

#define WHY(...) (snprintf(wbuf, sizeof(wbuf), __VA_ARGS__), \
				  why && whylen ? (void) snprintf(why, whylen, "%s", wbuf) : (void) 0)

	if (chosen && chosenlen)
		chosen[0] = '\0';
	if (better && betterlen)
		better[0] = '\0';
	if (why && whylen)
		why[0] = '\0';

	f.position = in->status_optime;
	f.position_of = "the status key";
	f.timeline = in->history_timeline;
	for (int i = 0; i < in->nmembers; i++)
	{
		const HaCandidate *m = &in->members[i];

		if (!m->valid)
			continue;
		if (m->lsn > f.position)
		{
			f.position = m->lsn;
			f.position_of = m->name;
		}
		if (m->timeline > f.timeline)
			f.timeline = m->timeline;
		if (in->leader && in->leader[0] && strcmp(m->name, in->leader) == 0)
			f.leader = m;
	}
	/* a switchover measures lag against the leader, not against history */
	if (in->switchover && f.leader)
	{
		f.position = f.leader->lsn;
		f.position_of = f.leader->name;
	}

	for (int i = 0; i < in->nmembers; i++)
	{
		const HaCandidate *m = &in->members[i];

		if (candidate && candidate[0] && strcmp(m->name, candidate) == 0)
			cand = m;
		if (eligible(in, &f, m) && (best == NULL || candidate_better(m, best)))
			best = m;
	}

	if (candidate == NULL || candidate[0] == '\0')
	{
		if (!in->switchover)
		{
			WHY("a failover needs a candidate");
			return HA_TARGET_NONE;
		}
		if (best == NULL)
		{
			WHY("no replica is running, streaming from the leader and free of the nofailover tag");
			return HA_TARGET_NONE;
		}
		cand = best;
	}
	if (chosen && chosenlen)
		snprintf(chosen, chosenlen, "%s", cand ? cand->name : candidate);
	if (cand == NULL)
	{
		WHY("There is no member key for it.");
		return HA_TARGET_UNKNOWN;
	}
	if (in->leader && in->leader[0] && strcmp(cand->name, in->leader) == 0)
	{
		WHY("It already holds the leader key.");
		return HA_TARGET_IS_LEADER;
	}
	if (!cand->valid || !cand->is_replica)
	{
		WHY("Its member key does not show a running replica.");
		return HA_TARGET_NOT_REPLICA;
	}
	if (cand->nofailover)
	{
		WHY("It is tagged nofailover (or failover_priority 0).");
		return HA_TARGET_NOFAILOVER;
	}
	if (cand->timeline < f.timeline)
	{
		WHY("It is on timeline %u, the cluster is on timeline %u.", cand->timeline, f.timeline);
		return HA_TARGET_OLD_TIMELINE;
	}
	if (in->switchover)
	{
		/*
		 * The leader judges lag at hand-over time from its walsender (member
		 * keys are published seconds apart and would misjudge a busy
		 * cluster); here a replica that is not streaming is refused.
		 */
		if (!cand->streaming && lagging(&f, cand, in->maximum_lag_bytes))
		{
			WHY("It is not streaming and %llu bytes behind the leader, more than maximum_lag_on_failover.",
				(unsigned long long) (f.position - cand->lsn));
			return HA_TARGET_LAGGING;
		}
		if (!cand->streaming)
		{
			WHY("It is not streaming from the leader; a replica that is not connected would keep the cluster fenced while it catches up.");
			return HA_TARGET_NOT_STREAMING;
		}
		WHY("It is a streaming replica.");
		return HA_TARGET_OK;
	}
	/*
	 * Synchronous mode: a standby the lost leader did not list may miss
	 * commits it acknowledged, however small its lag.  It would not take
	 * the key either (sync_race_check): refused here, with the reason,
	 * rather than left to time out.  force is the operator's way out, as
	 * in the race.
	 */
	if (!in->force && in->sync_leader && in->sync_leader[0] &&
		!name_listed(in->sync_standbys, cand->name))
	{
		WHY("It is not a synchronous standby when \"%s\" was lost (sync key lists \"%s\"); it may miss commits that were acknowledged.",
			in->sync_leader, in->sync_standbys ? in->sync_standbys : "");
		return HA_TARGET_NOT_SYNC;
	}
	if (!in->force)
	{
		if (best != NULL && best != cand && best->lsn > cand->lsn)
		{
			if (better && betterlen)
				snprintf(better, betterlen, "%s", best->name);
			WHY("Member \"%s\" is more advanced (%llu bytes ahead); promoting \"%s\" would lose that WAL.",
				best->name, (unsigned long long) (best->lsn - cand->lsn), cand->name);
			return HA_TARGET_NOT_BEST;
		}
		if (lagging(&f, cand, in->maximum_lag_bytes))
		{
			WHY("It is %llu bytes behind the last known position (of %s), more than maximum_lag_on_failover (%llu bytes).",
				(unsigned long long) (f.position - cand->lsn), f.position_of,
				(unsigned long long) in->maximum_lag_bytes);
			return HA_TARGET_LAGGING;
		}
	}
	if (in->force && ((best != NULL && best != cand && best->lsn > cand->lsn) ||
					  lagging(&f, cand, in->maximum_lag_bytes)))
		WHY("Forced: up to %llu bytes of WAL that other nodes had may be lost.",
			(unsigned long long) (f.position > cand->lsn ? f.position - cand->lsn : 0));
	else
		WHY("It is the most advanced eligible replica.");
	return HA_TARGET_OK;
#undef WHY
}
