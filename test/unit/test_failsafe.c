/*
 * test_failsafe.c - failsafe mode's decisions (src/ha_failsafe.c): how far
 * a leader cut from etcd may extend its deadline after a round of POST
 * /failsafe, what a member answers, and the failsafe key's codec.
 *
 * Built against the server headers like test_failover.c.
 */
#include "pg_ha.h"

#include "ha_failsafe.h"

#include "unit.h"

#define S (1000 * 1000)

typedef struct ExtendCase
{
	const char *name;
	int64		current;
	int			n;
	FailsafeAnswer answers[3];
	int64		want;
} ExtendCase;

/* t_send = 100 s, own TTL = 10 s throughout */
static const ExtendCase extend_cases[] = {
	{"all confirm with the leader's TTL: t_send + TTL", 95 * S, 2,
	{{200, 10 * S}, {200, 10 * S}}, 110 * S},
	{"the shortest promise bounds the extension", 95 * S, 3,
	{{200, 10 * S}, {200, 4 * S}, {200, 8 * S}}, 104 * S},
	{"a longer promise than the leader's TTL: capped at t_send + TTL", 95 * S, 1,
	{{200, 30 * S}}, 110 * S},
	{"one member silent: nothing extends", 95 * S, 3,
	{{200, 10 * S}, {0, 0}, {200, 10 * S}}, 95 * S},
	{"one member refuses (409): nothing extends", 95 * S, 2,
	{{200, 10 * S}, {409, 0}}, 95 * S},
	{"401 (wrong credentials): nothing extends", 95 * S, 2,
	{{401, 0}, {200, 10 * S}}, 95 * S},
	{"200 without a promise: nothing extends", 95 * S, 2,
	{{200, 0}, {200, 10 * S}}, 95 * S},
	{"negative promise: nothing extends", 95 * S, 1,
	{{200, -5 * S}}, 95 * S},
	{"no member to confirm: nothing extends", 95 * S, 0,
	{{0, 0}}, 95 * S},
	{"the deadline never moves back", 120 * S, 2,
	{{200, 10 * S}, {200, 10 * S}}, 120 * S},
	{"from no deadline at all", 0, 1,
	{{200, 10 * S}}, 110 * S},
};

static void
extend(void)
{
	FailsafeMember m[3] = {{"a", "http://a"}, {"b", "http://b"}, {"c", "http://c"}};

	for (size_t i = 0; i < lengthof(extend_cases); i++)
	{
		const ExtendCase *c = &extend_cases[i];
		char		why[128];
		int64		got = failsafe_extended_deadline(c->current, 100 * S, 10 * S, m,
													 c->answers, c->n, why, sizeof(why));

		UNIT_CHECK(got == c->want, "%s: got %lld, want %lld (%s)", c->name,
				   (long long) got, (long long) c->want, why);
		/* never beyond what the members promised, counted from t_send */
		for (int j = 0; j < c->n; j++)
			UNIT_CHECK(got == c->current || got <= 100 * S + c->answers[j].promise_us,
					   "%s: within member %d's promise", c->name, j);
	}
}

typedef struct AnswerCase
{
	const char *name;
	FailsafeAsk ask;
	int			want;
} AnswerCase;

static const AnswerCase answer_cases[] = {
	{"replica following the asking leader", {"n1", "n2", PG_HA_ROLE_REPLICA, true, false, true, "n1"}, 200},
	{"replica that sees no leader key", {"n1", "n2", PG_HA_ROLE_REPLICA, true, false, true, ""}, 200},
	{"replica that never read etcd", {"n1", "n2", PG_HA_ROLE_REPLICA, true, false, false, ""}, 200},
	{"replica that sees another leader", {"n1", "n2", PG_HA_ROLE_REPLICA, true, false, true, "n3"}, 409},
	{"a primary never confirms", {"n1", "n2", PG_HA_ROLE_PRIMARY, true, false, true, "n1"}, 409},
	{"role not known yet", {"n1", "n2", PG_HA_ROLE_UNKNOWN, true, false, false, ""}, 409},
	{"asked to confirm itself", {"n2", "n2", PG_HA_ROLE_REPLICA, true, false, true, "n2"}, 409},
	{"no leader named", {"", "n2", PG_HA_ROLE_REPLICA, true, false, true, ""}, 409},
	{"NULL leader", {NULL, "n2", PG_HA_ROLE_REPLICA, true, false, true, ""}, 409},
	{"worker taking the key", {"n1", "n2", PG_HA_ROLE_REPLICA, true, true, true, ""}, 503},
	{"worker not running", {"n1", "n2", PG_HA_ROLE_REPLICA, false, false, true, "n1"}, 503},
};

static void
answer(void)
{
	for (size_t i = 0; i < lengthof(answer_cases); i++)
	{
		const char *why = NULL;
		int			got = failsafe_answer(&answer_cases[i].ask, &why);

		UNIT_CHECK(got == answer_cases[i].want, "%s: got %d, want %d", answer_cases[i].name,
				   got, answer_cases[i].want);
		UNIT_CHECK(why != NULL && why[0] != '\0', "%s: says why", answer_cases[i].name);
	}
	UNIT_CHECK(failsafe_promise_binding(5, 6), "binding before its end");
	UNIT_CHECK(!failsafe_promise_binding(6, 6), "not binding at its end");
	UNIT_CHECK(!failsafe_promise_binding(1, 0), "no promise recorded");
	UNIT_CHECK(failsafe_promises_cover(5 * S, 10 * S, 1 * S), "covered well before the end");
	UNIT_CHECK(!failsafe_promises_cover(9 * S, 10 * S, 1 * S), "not covered within the margin");
	UNIT_CHECK(!failsafe_promises_cover(11 * S, 10 * S, 1 * S), "not covered after the end");
	UNIT_CHECK(!failsafe_promises_cover(-5 * S, 0, 1 * S), "no confirmed round, no cover");
}

typedef struct DecodeCase
{
	const char *json;
	bool		ok;
	int			n;
} DecodeCase;

static const DecodeCase decode_cases[] = {
	{"{\"n1\":\"http://127.0.0.1:8008\",\"n2\":\"http://127.0.0.1:8009\"}", true, 2},
	{"{}", true, 0},
	{"[]", false, 0},
	{"{\"n1\":1}", false, 0},
	{"{\"\":\"http://x\"}", false, 0},
	{"{\"n1\":\"http://x\"", false, 0},
	{"", false, 0},
	{NULL, false, 0},
	{"{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":\"x\"}", false, 0},
};

static void
codec(void)
{
	FailsafeMember in[2] = {{"n1", "http://127.0.0.1:8008"}, {"n2", "https://h:8009"}};
	FailsafeMember out[4];
	char		buf[256];
	int			n;

	UNIT_CHECK(failsafe_members_encode(in, 2, buf, sizeof(buf)), "encode");
	UNIT_CHECK(failsafe_members_decode(buf, out, 4, &n) && n == 2 &&
			   strcmp(out[1].name, "n2") == 0 && strcmp(out[1].api_url, "https://h:8009") == 0,
			   "round trip: %s", buf);
	UNIT_CHECK(!failsafe_members_encode(in, 2, buf, 10), "encode refuses a short buffer");
	UNIT_CHECK(!failsafe_members_decode(buf, out, 1, &n) && n == 0, "decode bounded by max");
	UNIT_CHECK(failsafe_members_include(in, 2, "n2") && !failsafe_members_include(in, 2, "n3"),
			   "include");
	for (size_t i = 0; i < lengthof(decode_cases); i++)
	{
		bool		ok = failsafe_members_decode(decode_cases[i].json, out, 4, &n);

		UNIT_CHECK(ok == decode_cases[i].ok && n == decode_cases[i].n, "decode %s: ok %d n %d",
				   decode_cases[i].json ? decode_cases[i].json : "NULL", ok, n);
	}
}

void
unit_failsafe(void)
{
	extend();
	answer();
	codec();
}
