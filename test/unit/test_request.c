/*
 * test_request.c - the failover key's codec: what decodes to which phase,
 * what is refused and why, and encode -> decode round trips.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha_request.h"
#include "unit.h"

#define T2026_US (INT64_C(1796032800) * 1000000)

typedef struct DecodeCase
{
	const char *name;
	const char *value;
	bool		ok;
	/* expected when ok */
	HaRequestPhase phase;
	const char *leader;
	const char *member;
	bool		scheduled;
	int64_t		scheduled_at_us;
	uint64_t	final_lsn;
	bool		force;
	const char *reason;
	/* expected substring of the message when not ok */
	const char *err;
} DecodeCase;

#define OK(n, v, ph, l, m, s, at, lsn, f, r) {n, v, true, ph, l, m, s, at, lsn, f, r, NULL}
#define BAD(n, v, e) {n, v, false, 0, "", "", false, 0, 0, false, "", e}

static const DecodeCase decode_cases[] = {
	/* Patroni's requests */
	OK("manual failover (Patroni)", "{\"member\":\"n3\"}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	OK("switchover (Patroni)", "{\"leader\":\"n1\",\"member\":\"n2\"}",
	   HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, false, ""),
	OK("switchover to the best replica (Patroni)", "{\"leader\":\"n1\"}",
	   HA_REQ_REQUESTED, "n1", "", false, 0, 0, false, ""),
	OK("scheduled switchover (Patroni isoformat)",
	   "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"2026-11-30T10:00:00+00:00\"}",
	   HA_REQ_REQUESTED, "n1", "n2", true, T2026_US, 0, false, ""),
	OK("scheduled switchover (timestamptz text)",
	   "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"2026-11-30 11:00:00+01\"}",
	   HA_REQ_REQUESTED, "n1", "n2", true, T2026_US, 0, false, ""),
	OK("nulls mean absent", "{\"leader\":null,\"member\":\"n3\",\"scheduled_at\":null,\"force\":null}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	OK("empty names mean absent", "{\"leader\":\"\",\"member\":\"n3\"}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	OK("unknown fields are ignored", "{\"member\":\"n3\",\"x\":[1,{\"y\":null}],\"z\":\"w\"}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	OK("whitespace around the object", " \n{ \"member\" : \"n3\" }\n ",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	OK("forced failover", "{\"member\":\"n3\",\"force\":true}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, true, ""),
	OK("false flags are absent", "{\"member\":\"n3\",\"force\":false,\"handed_over\":false,\"shutdown\":false,\"aborted\":false}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	/* our phases */
	OK("handed over", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":50331744,\"handed_over\":true}",
	   HA_REQ_HANDED_OVER, "n1", "n2", false, 0, 50331744, false, ""),
	OK("final confirmed",
	   "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":50331744,\"handed_over\":true,\"final_confirmed\":true}",
	   HA_REQ_FINAL_CONFIRMED, "n1", "n2", false, 0, 50331744, false, ""),
	OK("final_lsn as pg_lsn text", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":\"0/3000060\",\"handed_over\":true}",
	   HA_REQ_HANDED_OVER, "n1", "n2", false, 0, 0x3000060, false, ""),
	OK("final_lsn as decimal text", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":\"18446744073709551615\",\"handed_over\":true}",
	   HA_REQ_HANDED_OVER, "n1", "n2", false, 0, UINT64_MAX, false, ""),
	OK("shutdown note", "{\"leader\":\"n1\",\"final_lsn\":5,\"shutdown\":true}",
	   HA_REQ_SHUTDOWN, "n1", "", false, 0, 5, false, ""),
	OK("aborted with a reason", "{\"leader\":\"n1\",\"member\":\"n2\",\"aborted\":\"n2 did not confirm the final LSN\"}",
	   HA_REQ_ABORTED, "n1", "n2", false, 0, 0, false, "n2 did not confirm the final LSN"),
	OK("aborted: true", "{\"member\":\"n3\",\"aborted\":true}",
	   HA_REQ_ABORTED, "", "n3", false, 0, 0, false, ""),
	OK("aborted wins over handed_over",
	   "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":9,\"handed_over\":true,\"aborted\":\"late\"}",
	   HA_REQ_ABORTED, "n1", "n2", false, 0, 9, false, "late"),
	OK("aborted wins over shutdown", "{\"leader\":\"n1\",\"member\":\"n2\",\"shutdown\":true,\"aborted\":\"x\"}",
	   HA_REQ_ABORTED, "n1", "n2", false, 0, 0, false, "x"),
	OK("aborted keeps anything else it may carry", "{\"leader\":\"n1\",\"member\":\"n1\",\"aborted\":\"odd\"}",
	   HA_REQ_ABORTED, "n1", "n1", false, 0, 0, false, "odd"),
	OK("name of 63 bytes", "{\"member\":\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk\"}",
	   HA_REQ_REQUESTED, "", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", false, 0, 0, false, ""),

	/* the crash-loop value of issue 9, defect 13 */
	BAD("scheduled_at that is not a time",
		"{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"not a time\"}", "scheduled_at"),
	BAD("scheduled_at in year 20266", "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"20266-11-30T10:00:00Z\"}",
		"scheduled_at"),
	BAD("scheduled_at in year 0026", "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"0026-11-30T10:00:00Z\"}",
		"1970-9999"),
	BAD("scheduled_at as a number", "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":1796032800}",
		"scheduled_at is not a string"),
	BAD("scheduled_at empty", "{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"\"}", "scheduled_at"),
	BAD("scheduled failover (no leader)", "{\"member\":\"n2\",\"scheduled_at\":\"2026-11-30T10:00:00Z\"}",
		"only a switchover can be scheduled"),
	/* not a JSON object */
	BAD("empty", "", "empty"),
	BAD("not JSON", "n3", "not JSON"),
	BAD("legacy leader:member text", "n1:n2", "not JSON"),
	BAD("null", "null", "not a JSON object"),
	BAD("array", "[\"n3\"]", "not a JSON object"),
	BAD("string", "\"n3\"", "not a JSON object"),
	BAD("number", "42", "not a JSON object"),
	BAD("truncated", "{\"member\":\"n3\"", "not JSON"),
	BAD("trailing garbage", "{\"member\":\"n3\"} x", "not JSON"),
	BAD("two objects", "{\"member\":\"n3\"}{\"member\":\"n2\"}", "not JSON"),
	/* names */
	BAD("member with a space", "{\"member\":\"bad name\"}", "not a valid member name"),
	BAD("member with a slash", "{\"member\":\"../leader\"}", "not a valid member name"),
	BAD("member as a number", "{\"member\":42}", "member is not a string"),
	BAD("leader as an object", "{\"leader\":{},\"member\":\"n2\"}", "leader is not a string"),
	BAD("member of 64 bytes", "{\"member\":\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl\"}",
		"not a valid member name"),
	BAD("member with NUL escape", "{\"member\":\"n3\\u0000x\"}", "escaped NUL"),
	OK("escaped backslash before u0000 is text", "{\"member\":\"n3\",\"note\":\"\\\\u0000\"}",
	   HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, ""),
	BAD("member with non-ASCII", "{\"member\":\"n\xc3\xa9\"}", "not a valid member name"),
	BAD("neither leader nor member", "{}", "neither leader nor member"),
	BAD("leader is member", "{\"leader\":\"n1\",\"member\":\"n1\"}", "both \"n1\""),
	/* flags and phases */
	BAD("handed_over as a string", "{\"leader\":\"n1\",\"member\":\"n2\",\"handed_over\":\"yes\"}", "handed_over is not"),
	BAD("force as a number", "{\"member\":\"n3\",\"force\":1}", "force is not"),
	BAD("force in a switchover", "{\"leader\":\"n1\",\"member\":\"n2\",\"force\":true}", "force with a leader"),
	BAD("handed over without final_lsn", "{\"leader\":\"n1\",\"member\":\"n2\",\"handed_over\":true}",
		"without leader, member and final_lsn"),
	BAD("handed over without leader", "{\"member\":\"n2\",\"final_lsn\":5,\"handed_over\":true}",
		"without leader, member and final_lsn"),
	BAD("final_confirmed without handed_over", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":5,\"final_confirmed\":true}",
		"final_confirmed without handed_over"),
	BAD("shutdown naming a member", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":5,\"shutdown\":true}",
		"shutdown naming a member"),
	BAD("shutdown and handed_over", "{\"leader\":\"n1\",\"final_lsn\":5,\"shutdown\":true,\"handed_over\":true}",
		"shutdown together with"),
	BAD("shutdown without final_lsn", "{\"leader\":\"n1\",\"shutdown\":true}", "shutdown without"),
	BAD("final_lsn in a request", "{\"member\":\"n3\",\"final_lsn\":5}", "final_lsn without"),
	BAD("aborted as a number", "{\"member\":\"n3\",\"aborted\":1}", "aborted is not"),
	/* final_lsn */
	BAD("negative final_lsn", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":-1,\"handed_over\":true}", "final_lsn"),
	BAD("fractional final_lsn", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":1.5,\"handed_over\":true}", "final_lsn"),
	BAD("huge final_lsn", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":1e300,\"handed_over\":true}", "final_lsn"),
	BAD("final_lsn beyond 2^53 as a number", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":18446744073709551615,\"handed_over\":true}",
		"final_lsn"),
	BAD("final_lsn text", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":\"abc\",\"handed_over\":true}", "final_lsn"),
	BAD("final_lsn bad pg_lsn", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":\"1/2/3\",\"handed_over\":true}", "final_lsn"),
	BAD("final_lsn decimal overflow", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":\"18446744073709551616\",\"handed_over\":true}",
		"final_lsn"),
	BAD("final_lsn as a bool", "{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":true,\"handed_over\":true}", "final_lsn"),
};

static bool
same_request(const HaRequest *a, const HaRequest *b)
{
	return a->phase == b->phase && strcmp(a->leader, b->leader) == 0 &&
		strcmp(a->member, b->member) == 0 && a->scheduled == b->scheduled &&
		(!a->scheduled || a->scheduled_at_us == b->scheduled_at_us) &&
		a->final_lsn == b->final_lsn && a->force == b->force &&
		strcmp(a->reason, b->reason) == 0;
}

static void
decode_table(void)
{
	for (size_t i = 0; i < lengthof(decode_cases); i++)
	{
		const DecodeCase *c = &decode_cases[i];
		HaRequest	r;
		char		err[256] = "";
		bool		ok = ha_request_decode(c->value, strlen(c->value), &r, err, sizeof(err));

		if (c->ok)
		{
			HaRequest	want;

			memset(&want, 0, sizeof(want));
			want.phase = c->phase;
			strcpy(want.leader, c->leader);
			strcpy(want.member, c->member);
			want.scheduled = c->scheduled;
			want.scheduled_at_us = c->scheduled_at_us;
			want.final_lsn = c->final_lsn;
			want.force = c->force;
			strcpy(want.reason, c->reason);
			UNIT_CHECK(ok && same_request(&r, &want),
					   "decode %s: ok=%d phase=%s leader=\"%s\" member=\"%s\" at=%lld lsn=%llu (%s)",
					   c->name, ok, ha_request_phase_name(r.phase), r.leader, r.member,
					   (long long) r.scheduled_at_us, (unsigned long long) r.final_lsn, err);
		}
		else
			UNIT_CHECK(!ok && err[0] != '\0' && (c->err == NULL || strstr(err, c->err) != NULL) &&
					   r.member[0] == '\0' && r.leader[0] == '\0',
					   "decode %s should fail with \"%s\": ok=%d err=\"%s\"",
					   c->name, c->err ? c->err : "(any)", ok, err);
	}
}

/* Inputs that are not C strings or are too large. */
static void
decode_bounds(void)
{
	HaRequest	r;
	char		err[256] = "";
	char	   *big;
	char	   *deep;
	const char	nul[] = "{\"member\":\"n3\"}\0{\"member\":\"n2\"}";
	const char	part[] = "{\"member\":\"n3\"}{\"member";

	UNIT_CHECK(!ha_request_decode(nul, sizeof(nul) - 1, &r, err, sizeof(err)) && strstr(err, "NUL"),
			   "value with a NUL byte: %s", err);
	UNIT_CHECK(ha_request_decode(part, 15, &r, err, sizeof(err)) && strcmp(r.member, "n3") == 0,
			   "decode reads only len bytes: %s", err);
	UNIT_CHECK(!ha_request_decode(NULL, 0, &r, err, sizeof(err)), "NULL value");
	UNIT_CHECK(!ha_request_decode("{\"member\":\"n3\"}", 0, &r, err, sizeof(err)), "zero length");

	big = malloc(HA_REQUEST_MAX_INPUT + 64);
	snprintf(big, HA_REQUEST_MAX_INPUT + 64, "{\"member\":\"n3\",\"pad\":\"%0*d\"}", HA_REQUEST_MAX_INPUT, 0);
	UNIT_CHECK(!ha_request_decode(big, strlen(big), &r, err, sizeof(err)) && strstr(err, "longer"),
			   "value over %d bytes: %s", HA_REQUEST_MAX_INPUT, err);
	free(big);

	/* deeper than cJSON's nesting limit: refused, no stack overflow */
	deep = malloc(4001);
	memset(deep, '[', 4000);
	deep[4000] = '\0';
	UNIT_CHECK(!ha_request_decode(deep, 4000, &r, err, sizeof(err)), "4000 nested arrays");
	free(deep);

	/* a tiny error buffer is not overrun */
	{
		char		tiny[8];

		memset(tiny, 'x', sizeof(tiny));
		UNIT_CHECK(!ha_request_decode("{}", 2, &r, tiny, 4) && tiny[3] == '\0' && tiny[4] == 'x',
				   "error message bounded by errlen");
	}
	/* a reason longer than the field is cut at a character boundary */
	{
		char		v[700];
		int			n = snprintf(v, sizeof(v), "{\"member\":\"n3\",\"aborted\":\"");

		for (int i = 0; i < 200; i++)
			n += snprintf(v + n, sizeof(v) - n, "\xc3\xa9");	/* é: 2 bytes */
		snprintf(v + n, sizeof(v) - n, "\"}");
		UNIT_CHECK(ha_request_decode(v, strlen(v), &r, err, sizeof(err)) &&
				   r.phase == HA_REQ_ABORTED && strlen(r.reason) == 254,
				   "long reason cut at a UTF-8 boundary: %zu bytes (%s)", strlen(r.reason), err);
	}
}

static HaRequest
req(HaRequestPhase phase, const char *leader, const char *member, bool scheduled, int64_t at,
	uint64_t lsn, bool force, const char *reason)
{
	HaRequest	r;

	memset(&r, 0, sizeof(r));
	r.phase = phase;
	snprintf(r.leader, sizeof(r.leader), "%s", leader);
	snprintf(r.member, sizeof(r.member), "%s", member);
	r.scheduled = scheduled;
	r.scheduled_at_us = at;
	r.final_lsn = lsn;
	r.force = force;
	snprintf(r.reason, sizeof(r.reason), "%s", reason);
	return r;
}

static void
round_trips(void)
{
	char		long_reason[HA_REQUEST_REASON_LEN];
	HaRequest	ok_cases[16];
	int			n = 0;

	memset(long_reason, 'r', sizeof(long_reason) - 1);
	long_reason[sizeof(long_reason) - 1] = '\0';
	ok_cases[n++] = req(HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, "");
	ok_cases[n++] = req(HA_REQ_REQUESTED, "", "n3", false, 0, 0, true, "");
	ok_cases[n++] = req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, false, "");
	ok_cases[n++] = req(HA_REQ_REQUESTED, "n1", "", false, 0, 0, false, "");
	ok_cases[n++] = req(HA_REQ_REQUESTED, "n1", "n2", true, T2026_US + 123456, 0, false, "");
	ok_cases[n++] = req(HA_REQ_REQUESTED, "n1", "n2", true, 0, 0, false, "");
	ok_cases[n++] = req(HA_REQ_HANDED_OVER, "n1", "n2", false, 0, 50331744, false, "");
	ok_cases[n++] = req(HA_REQ_HANDED_OVER, "n1", "n2", true, T2026_US, (uint64_t) 1 << 53, false, "");
	ok_cases[n++] = req(HA_REQ_FINAL_CONFIRMED, "n1", "n2", false, 0, ((uint64_t) 1 << 53) + 1, false, "");
	ok_cases[n++] = req(HA_REQ_FINAL_CONFIRMED, "n1", "n2", false, 0, UINT64_MAX, false, "");
	ok_cases[n++] = req(HA_REQ_SHUTDOWN, "n1", "", false, 0, 1, false, "");
	ok_cases[n++] = req(HA_REQ_ABORTED, "n1", "n2", false, 0, 0, false, "");
	ok_cases[n++] = req(HA_REQ_ABORTED, "n1", "n2", false, 0, 0, false,
						"n2 is \"lagging\"\n\tby 16 MB \\ caf\xc3\xa9 \x01");
	ok_cases[n++] = req(HA_REQ_ABORTED, "", "n3", false, 0, 0, false, long_reason);
	ok_cases[n++] = req(HA_REQ_REQUESTED, "a.b-c_D.9", "Z", false, 0, 0, false, "");

	for (int i = 0; i < n; i++)
	{
		char		buf[HA_REQUEST_MAX_JSON + 1];
		HaRequest	back;
		char		err[256] = "";
		int			len = ha_request_encode(&ok_cases[i], buf, sizeof(buf));
		bool		ok = len > 0 && (size_t) len == strlen(buf) &&
			ha_request_decode(buf, (size_t) len, &back, err, sizeof(err));

		UNIT_CHECK(ok && same_request(&ok_cases[i], &back),
				   "round trip %d (%s): len=%d \"%s\" (%s)", i,
				   ha_request_phase_name(ok_cases[i].phase), len, buf, err);
	}

	/* encode refuses what decode would refuse */
	{
		HaRequest	bad[] = {
			req(HA_REQ_REQUESTED, "", "", false, 0, 0, false, ""),
			req(HA_REQ_REQUESTED, "n1", "n1", false, 0, 0, false, ""),
			req(HA_REQ_REQUESTED, "", "bad name", false, 0, 0, false, ""),
			req(HA_REQ_REQUESTED, "n1\"", "n2", false, 0, 0, false, ""),
			req(HA_REQ_REQUESTED, "", "n2", true, T2026_US, 0, false, ""),
			req(HA_REQ_REQUESTED, "n1", "n2", true, -1, 0, false, ""),
			req(HA_REQ_REQUESTED, "n1", "n2", true, INT64_C(253402300800) * 1000000, 0, false, ""),
			req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, true, ""),
			req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 5, false, ""),
			req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, false, "why"),
			req(HA_REQ_HANDED_OVER, "n1", "n2", false, 0, 0, false, ""),
			req(HA_REQ_SHUTDOWN, "n1", "n2", false, 0, 5, false, ""),
			req((HaRequestPhase) 17, "n1", "n2", false, 0, 0, false, ""),
		};

		for (size_t i = 0; i < lengthof(bad); i++)
		{
			char		buf[HA_REQUEST_MAX_JSON + 1];

			UNIT_CHECK(ha_request_encode(&bad[i], buf, sizeof(buf)) == -1 && buf[0] == '\0',
					   "encode should refuse bad request %zu, wrote \"%s\"", i, buf);
		}
	}
	/* an unterminated name is refused, not read past its field */
	{
		HaRequest	r = req(HA_REQ_REQUESTED, "", "n3", false, 0, 0, false, "");
		char		buf[HA_REQUEST_MAX_JSON + 1];

		memset(r.member, 'a', sizeof(r.member));
		UNIT_CHECK(ha_request_encode(&r, buf, sizeof(buf)) == -1, "unterminated member name");
	}
	/* a buffer too small */
	{
		HaRequest	r = req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, false, "");
		char		buf[40];

		memset(buf, 'x', sizeof(buf));
		UNIT_CHECK(ha_request_encode(&r, buf, 16) == -1 && buf[16] == 'x', "buffer of 16 bytes");
		UNIT_CHECK(ha_request_encode(&r, buf, sizeof(buf)) > 0 &&
				   strcmp(buf, "{\"leader\":\"n1\",\"member\":\"n2\"}") == 0,
				   "Patroni's switchover shape: %s", buf);
	}
	/* the largest request fits HA_REQUEST_MAX_JSON */
	{
		char		name[HA_REQUEST_NAME_LEN];
		char		reason[HA_REQUEST_REASON_LEN];
		HaRequest	r;
		char		buf[HA_REQUEST_MAX_JSON + 1];

		memset(name, 'n', sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		memset(reason, 1, sizeof(reason) - 1);	/* each escaped as \u0001 */
		reason[sizeof(reason) - 1] = '\0';
		r = req(HA_REQ_ABORTED, name, name, true, T2026_US, UINT64_MAX, false, reason);
		UNIT_CHECK(ha_request_encode(&r, buf, sizeof(buf)) > 0, "largest aborted request fits");
	}
}

static void
schedule(void)
{
	HaRequest	r = req(HA_REQ_REQUESTED, "n1", "n2", true, T2026_US, 0, false, "");
	HaRequest	h = req(HA_REQ_HANDED_OVER, "n1", "n2", true, T2026_US, 5, false, "");
	HaRequest	u = req(HA_REQ_REQUESTED, "n1", "n2", false, 0, 0, false, "");

	UNIT_CHECK(ha_request_pending_schedule(&r, T2026_US - 1), "pending before its time");
	UNIT_CHECK(!ha_request_pending_schedule(&r, T2026_US), "due at its time");
	UNIT_CHECK(!ha_request_pending_schedule(&h, 0), "handed over is not pending");
	UNIT_CHECK(!ha_request_pending_schedule(&u, 0), "unscheduled is not pending");
	UNIT_CHECK(ha_valid_member_name("n1") && !ha_valid_member_name("") &&
			   !ha_valid_member_name(NULL) && !ha_valid_member_name("a/b"), "member names");
	UNIT_CHECK(strcmp(ha_request_phase_name(HA_REQ_FINAL_CONFIRMED), "final_confirmed") == 0 &&
			   strcmp(ha_request_phase_name((HaRequestPhase) 42), "unknown") == 0, "phase names");
}

void
unit_request(void)
{
	decode_table();
	decode_bounds();
	round_trips();
	schedule();
}
