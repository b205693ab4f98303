/*
 * test_patroni.c - patroni_codec.c: user tags, the config key's merge
 * (Patroni's patch_config rules), the switchover/failover bodies, and
 * POST /restart's body with its schedule, conditions and member-key object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patroni_codec.h"
#include "unit.h"

typedef struct TagCase
{
	const char *tags;
	bool		valid;
	const char *name;			/* looked up when valid */
	const char *text;			/* NULL: not set */
} TagCase;

static const TagCase tag_cases[] = {
	{"", true, "dc", NULL},
	{"{}", true, "dc", NULL},
	{"{\"dc\":\"east\"}", true, "dc", "east"},
	{"{\"dc\":\"east\"}", true, "DC", NULL},	/* names are case-sensitive */
	{"{\"rack\":2}", true, "rack", "2"},
	{"{\"w\":2.5}", true, "w", "2.5"},
	{"{\"w\":-1}", true, "w", "-1"},
	{"{\"ssd\":true}", true, "ssd", "true"},
	{"{\"ssd\":false}", true, "ssd", "false"},
	{"{\"a\":\"x\",\"b\":\"y\"}", true, "b", "y"},
	{"[1,2]", false},
	{"\"dc\"", false},
	{"{\"dc\":", false},
	{"{\"dc\":null}", false},
	{"{\"dc\":[1]}", false},
	{"{\"dc\":{\"x\":1}}", false},
	{"{\"\":\"x\"}", false},
	{"{\"nofailover\":true}", false},	/* pg_ha.nofailover's */
	{"{\"failover_priority\":1}", false},
	{"{\"clonefrom\":true}", false},
};

static void
unit_tags(void)
{
	for (size_t i = 0; i < lengthof(tag_cases); i++)
	{
		const TagCase *c = &tag_cases[i];
		char		err[256] = "";
		char		text[64] = "";
		bool		valid = patroni_tags_validate(c->tags, err, sizeof(err));
		bool		found;

		UNIT_CHECK(valid == c->valid, "tags %s: valid=%d (%s)", c->tags, valid, err);
		UNIT_CHECK(valid || err[0] != '\0', "tags %s: a refusal says why", c->tags);
		if (!c->valid)
			continue;
		found = patroni_tag_text(c->tags, c->name, text, sizeof(text));
		UNIT_CHECK(c->text ? found && strcmp(text, c->text) == 0 : !found,
				   "tags %s, %s: found=%d text=\"%s\"", c->tags, c->name, found, text);
	}
	{
		char	   *m = patroni_tags_members("{\"dc\": \"east\", \"rack\": 2}");

		UNIT_CHECK(m && strcmp(m, "\"dc\":\"east\",\"rack\":2") == 0, "members: %s", m ? m : "(null)");
		free(m);
		m = patroni_tags_members("");
		UNIT_CHECK(m && m[0] == '\0', "no tags: no members");
		free(m);
	}
	{
		char		big[PATRONI_TAGS_MAX + 64];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		memcpy(big, "{\"t\":\"", 6);
		strcpy(big + sizeof(big) - 3, "\"}");
		UNIT_CHECK(!patroni_tags_validate(big, NULL, 0), "tags longer than the bound are refused");
	}
}

typedef struct PatchCase
{
	const char *current;
	const char *patch;
	bool		ok;
	const char *result;
	bool		changed;
} PatchCase;

static const PatchCase patch_cases[] = {
	{"{\"ttl\":30}", "{\"ttl\":10}", true, "{\"ttl\":10}", true},
	{"{\"ttl\":30}", "{\"ttl\":30}", true, "{\"ttl\":30}", false},
	{"{\"ttl\":30}", "{\"pause\":true}", true, "{\"ttl\":30,\"pause\":true}", true},
	{"{\"ttl\":30,\"pause\":true}", "{\"pause\":null}", true, "{\"ttl\":30}", true},
	{"{\"ttl\":30}", "{\"pause\":null}", true, "{\"ttl\":30}", false},	/* nothing to delete */
	{"{\"postgresql\":{\"parameters\":{\"a\":\"1\"},\"use_pg_rewind\":true}}",
		"{\"postgresql\":{\"parameters\":{\"b\":\"2\"}}}", true,
	"{\"postgresql\":{\"parameters\":{\"a\":\"1\",\"b\":\"2\"},\"use_pg_rewind\":true}}", true},
	{"{\"postgresql\":{\"parameters\":{\"a\":\"1\"}}}",
		"{\"postgresql\":{\"parameters\":{\"a\":null}}}", true,
	"{\"postgresql\":{\"parameters\":{}}}", true},
	{"{\"x\":1}", "{\"x\":{\"y\":2}}", true, "{\"x\":{\"y\":2}}", true},	/* object replaces scalar */
	{"{\"x\":{\"y\":2}}", "{\"x\":3}", true, "{\"x\":3}", true},
	{"", "{\"a\":1}", true, "{\"a\":1}", true},	/* no key yet */
	{"[1]", "{\"a\":1}", true, "{\"a\":1}", true},	/* not an object: counts as {} */
	{"{}", "[1]", false, NULL, false},
	{"{}", "{\"a\":", false, NULL, false},
	{"{}", "", false, NULL, false},
	{"{}", "null", false, NULL, false},
};

static const struct
{
	PatroniConfigInit init;
	const char *doc;
}			initial_cases[] = {
	{{10, 3, 2, 1048576, PATRONI_SYNC_OFF, false, 1},
	"{\"ttl\":10,\"loop_wait\":3,\"retry_timeout\":2,\"maximum_lag_on_failover\":1048576,"
	"\"postgresql\":{\"parameters\":{},\"use_pg_rewind\":true}}"},
	{{10, 3, 2, 1048576, PATRONI_SYNC_ON, false, 1},
	"{\"ttl\":10,\"loop_wait\":3,\"retry_timeout\":2,\"maximum_lag_on_failover\":1048576,"
	"\"synchronous_mode\":true,\"synchronous_node_count\":1,"
	"\"postgresql\":{\"parameters\":{},\"use_pg_rewind\":true}}"},
	{{30, 10, 10, 0, PATRONI_SYNC_ON, true, 2},
	"{\"ttl\":30,\"loop_wait\":10,\"retry_timeout\":10,\"maximum_lag_on_failover\":0,"
	"\"synchronous_mode\":true,\"synchronous_mode_strict\":true,\"synchronous_node_count\":2,"
	"\"postgresql\":{\"parameters\":{},\"use_pg_rewind\":true}}"},
	{{5, 1, 1, 1, PATRONI_SYNC_QUORUM, true, 16},
	"{\"ttl\":5,\"loop_wait\":1,\"retry_timeout\":1,\"maximum_lag_on_failover\":1,"
	"\"synchronous_mode\":\"quorum\",\"synchronous_node_count\":16,"
	"\"postgresql\":{\"parameters\":{},\"use_pg_rewind\":true}}"},
};

/* the key at initialization, and that every node reads back what it says */
static void
unit_config_initial(void)
{
	for (size_t i = 0; i < lengthof(initial_cases); i++)
	{
		const PatroniConfigInit *init = &initial_cases[i].init;
		char	   *doc = patroni_config_initial(init);
		PatroniDynConfig dyn;

		UNIT_CHECK(doc && strcmp(doc, initial_cases[i].doc) == 0, "initial config %zu: %s", i,
				   doc ? doc : "(null)");
		UNIT_CHECK(doc && patroni_config_check_object(doc, strlen(doc), NULL, 0),
				   "initial config %zu is an object", i);
		UNIT_CHECK(doc && patroni_config_decode(doc, strlen(doc), &dyn) &&
				   dyn.synchronous_mode.state ==
				   (init->synchronous_mode == PATRONI_SYNC_OFF ? PATRONI_FIELD_ABSENT : PATRONI_FIELD_SET) &&
				   (init->synchronous_mode == PATRONI_SYNC_OFF ||
					(dyn.synchronous_mode.value == init->synchronous_mode &&
					 dyn.synchronous_node_count.value == init->synchronous_node_count)),
				   "initial config %zu decodes to its synchronous mode", i);
		free(doc);
	}
}

static void
unit_config_patch(void)
{
	for (size_t i = 0; i < lengthof(patch_cases); i++)
	{
		const PatchCase *c = &patch_cases[i];
		char	   *out = NULL;
		bool		changed = false;
		char		err[256] = "";
		bool		ok = patroni_config_patch(c->current, strlen(c->current), c->patch,
											  strlen(c->patch), &out, &changed, err, sizeof(err));

		UNIT_CHECK(ok == c->ok, "patch %s with %s: ok=%d (%s)", c->current, c->patch, ok, err);
		if (ok && c->ok)
			UNIT_CHECK(strcmp(out, c->result) == 0 && changed == c->changed,
					   "patch %s with %s: got %s changed=%d", c->current, c->patch, out, changed);
		free(out);
	}
	unit_config_initial();
}

typedef struct BodyCase
{
	const char *body;
	bool		ok;
	const char *leader;
	const char *candidate;
	const char *scheduled_at;
} BodyCase;

static const BodyCase body_cases[] = {
	{"{\"leader\":\"n1\",\"candidate\":\"n2\"}", true, "n1", "n2", ""},
	{"{\"leader\":\"n1\",\"member\":\"n2\"}", true, "n1", "n2", ""},	/* Patroni's older name */
	{"{\"leader\":\"n1\",\"candidate\":null,\"scheduled_at\":null}", true, "n1", "", ""},
	{"{\"candidate\":\"n2\",\"scheduled_at\":\"2030-01-01T00:00+00:00\"}", true, "", "n2",
	"2030-01-01T00:00+00:00"},
	{"{}", true, "", "", ""},
	{"{\"leader\":1}", false},
	{"{\"candidate\":[\"n2\"]}", false},
	{"{\"leader\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", false},
	{"[\"n1\"]", false},
	{"not json", false},
	{"", false},
};

static void
unit_failover_body(void)
{
	for (size_t i = 0; i < lengthof(body_cases); i++)
	{
		const BodyCase *c = &body_cases[i];
		PatroniFailoverBody b;
		char		err[256] = "";
		bool		ok = patroni_failover_body_decode(c->body, strlen(c->body), &b, err, sizeof(err));

		UNIT_CHECK(ok == c->ok, "body %s: ok=%d (%s)", c->body, ok, err);
		if (ok && c->ok)
			UNIT_CHECK(strcmp(b.leader, c->leader) == 0 && strcmp(b.candidate, c->candidate) == 0 &&
					   strcmp(b.scheduled_at, c->scheduled_at) == 0,
					   "body %s: leader=%s candidate=%s scheduled_at=%s", c->body, b.leader,
					   b.candidate, b.scheduled_at);
	}
	UNIT_CHECK(patroni_is_json_array("[[1,2,\"x\"]]", 11), "history: an array");
	UNIT_CHECK(!patroni_is_json_array("{}", 2), "history: an object is not");
	UNIT_CHECK(!patroni_is_json_array("", 0), "history: empty is not");
}

typedef struct RestartCase
{
	const char *body;
	int			status;
	bool		pending;
	int			role;
	int			version;
	bool		scheduled;
	int64_t		schedule_us;
} RestartCase;

/* "now" of the restart cases: 2026-01-01T00:00:00Z */
#define RESTART_NOW_US (INT64_C(1767225600) * 1000000)

static const RestartCase restart_cases[] = {
	{"", 0, false, 0, 0, false},
	{"{}", 0, false, 0, 0, false},
	{"{\"restart_pending\":true}", 0, true, 0, 0, false},
	{"{\"restart_pending\":false}", 0, true, 0, 0, false},	/* Patroni looks at the key only */
	{"{\"role\":\"master\"}", 0, false, 1, 0, false},
	{"{\"role\":\"primary\",\"restart_pending\":true}", 0, true, 1, 0, false},
	{"{\"role\":\"replica\"}", 0, false, 2, 0, false},
	{"{\"postgres_version\":\"15.4\"}", 0, false, 0, 150004, false},
	{"{\"postgres_version\":\"9.6.24\"}", 0, false, 0, 90624, false},
	{"{\"postgres_version\":150004}", 0, false, 0, 150004, false},
	{"{\"timeout\":30}", 0, false, 0, 0, false},
	{"{\"timeout\":\"30s\"}", 0, false, 0, 0, false},
	{"{\"timeout\":0}", 400},
	{"{\"role\":\"leader\"}", 400},
	{"{\"role\":1}", 400},
	{"{\"postgres_version\":\"fifteen\"}", 400},
	{"{\"postgres_version\":\"15.4.3.2\"}", 400},
	{"{\"frobnicate\":1}", 400},
	{"[]", 400},
	{"not json", 400},
	/* schedule: Patroni's parse_schedule */
	{"{\"schedule\":\"2030-01-01T00:00+00:00\"}", 0, false, 0, 0, true, INT64_C(1893456000) * 1000000},
	{"{\"schedule\":\"2026-01-01T01:00:00+01:00\"}", 0, false, 0, 0, true, RESTART_NOW_US},	/* now: not past */
	{"{\"schedule\":\"2026-01-01T00:00:00.5Z\",\"role\":\"replica\",\"restart_pending\":1}",
	0, true, 2, 0, true, RESTART_NOW_US + 500000},
	{"{\"schedule\":\"2026-01-01 00:30:00-00:30\",\"postgres_version\":\"16\"}",
	0, false, 0, 160000, true, RESTART_NOW_US + INT64_C(3600) * 1000000},
	{"{\"schedule\":\"9999-12-31T23:59:59Z\"}", 0, false, 0, 0, true, INT64_C(253402300799) * 1000000},
	{"{\"schedule\":\"2030-01-01T00:00:00\"}", 400, false, 0, 0, true},	/* no zone */
	{"{\"schedule\":\"2030-01-01 00:00\"}", 400, false, 0, 0, true},
	{"{\"schedule\":\"2025-12-31T23:59:59+00:00\"}", 422, false, 0, 0, true},	/* past */
	{"{\"schedule\":\"1970-01-01T00:00:00Z\"}", 422, false, 0, 0, true},
	{"{\"schedule\":\"tomorrow at noon\"}", 422, false, 0, 0, true},	/* garbage, 't' and ' ' */
	{"{\"schedule\":\"10000-01-01T00:00:00+00:00\"}", 422, false, 0, 0, true},	/* beyond 9999 */
	{"{\"schedule\":\"2030-13-45T99:00:00+00:00\"}", 422, false, 0, 0, true},
	{"{\"schedule\":\"2030-02-30T00:00:00Z\"}", 422, false, 0, 0, true},
	{"{\"schedule\":\"2030-01-01T00:00:00+00:00xyz\"}", 422, false, 0, 0, true},
	{"{\"schedule\":\"\"}", 422, false, 0, 0, true},
	{"{\"schedule\":\"2030-01-01T00:00:00.1234567890Z\"}", 422, false, 0, 0, true},
	{"{\"schedule\":null}", 422, false, 0, 0, true},	/* Python: TypeError */
	{"{\"schedule\":1893456000}", 422, false, 0, 0, true},
	{"{\"schedule\":true}", 422, false, 0, 0, true},
	{"{\"schedule\":[\"2030-01-01T00:00:00Z\"]}", 422, false, 0, 0, true},
	{"{\"schedule\":{\"at\":\"2030-01-01T00:00:00Z\"}}", 422, false, 0, 0, true},
	/* key order decides which refusal, as in Patroni's loop */
	{"{\"frobnicate\":1,\"schedule\":\"garbage\"}", 400, false, 0, 0, true},
	{"{\"schedule\":\"garbage\",\"frobnicate\":1}", 422, false, 0, 0, true},
	{"{\"role\":\"leader\",\"schedule\":\"2030-01-01T00:00:00Z\"}", 400, false, 0, 0, true},
};

static void
unit_restart_body(void)
{
	for (size_t i = 0; i < lengthof(restart_cases); i++)
	{
		const RestartCase *c = &restart_cases[i];
		PatroniRestartBody b;
		char		err[256] = "";
		int			st = patroni_restart_body_decode(c->body, strlen(c->body), RESTART_NOW_US,
													 &b, err, sizeof(err));

		UNIT_CHECK(st == c->status, "restart body %s: status %d (%s)", c->body, st, err);
		UNIT_CHECK(b.scheduled == c->scheduled, "restart body %s: scheduled=%d", c->body, b.scheduled);
		if (st == 0 && c->status == 0)
			UNIT_CHECK(b.restart_pending == c->pending && b.role == c->role &&
					   b.postgres_version == c->version && b.schedule_us == c->schedule_us,
					   "restart body %s: pending=%d role=%d version=%d schedule=%lld", c->body,
					   b.restart_pending, b.role, b.postgres_version, (long long) b.schedule_us);
		if (st != 0)
			UNIT_CHECK(err[0] != '\0', "restart body %s: refusal says why", c->body);
	}
}

/* A schedule field of every size, and bytes of every value: never a crash. */
static void
unit_restart_schedule_fuzz(void)
{
	static char body[PATRONI_BODY_MAX + 64];
	static const size_t sizes[] = {0, 1, 19, 63, 64, 65, 200, 4000, PATRONI_BODY_MAX};
	PatroniRestartBody b;
	char		err[256];

	for (size_t i = 0; i < lengthof(sizes); i++)
	{
		size_t		n = sizes[i];
		int			st;

		memcpy(body, "{\"schedule\":\"", 13);
		memset(body + 13, '9', n);
		memcpy(body + 13 + n, "\"}", 3);
		st = patroni_restart_body_decode(body, strlen(body), RESTART_NOW_US, &b, err, sizeof(err));
		UNIT_CHECK(st == 422 || (st == 400 && strlen(body) > PATRONI_BODY_MAX),
				   "restart body with a %zu-digit schedule: status %d", n, st);
	}
	for (int c = 1; c < 256; c++)
	{
		char		t[64];
		int			st;

		snprintf(t, sizeof(t), "{\"schedule\":\"2030-01-01T00:00:00%cZ\"}", c);
		st = patroni_restart_body_decode(t, strlen(t), RESTART_NOW_US, &b, err, sizeof(err));
		UNIT_CHECK(st == 400 || st == 422, "restart body with byte %d in the schedule: status %d", c, st);
	}
}

static const char *
or_empty(const char *s)
{
	return s ? s : "";
}

static void
unit_restart_conditions(void)
{
	PatroniRestartBody b = {0};
	char		buf[PATRONI_SCHEDULE_JSON_LEN];
	int64_t		started = INT64_C(1767225600) * 1000000 + 123456;

	UNIT_CHECK(patroni_restart_unmet(&b, true, false, 150004) == NULL, "no condition: restart");
	b.role = 2;
	UNIT_CHECK(strcmp(or_empty(patroni_restart_unmet(&b, true, false, 150004)), "host role mismatch") == 0,
			   "role replica on a primary: host role mismatch");
	UNIT_CHECK(patroni_restart_unmet(&b, false, false, 150004) == NULL, "role replica on a replica");
	b.role = 1;
	UNIT_CHECK(patroni_restart_unmet(&b, false, false, 150004) != NULL, "role primary on a replica");
	b.role = 0;
	b.postgres_version = 150004;
	UNIT_CHECK(strcmp(or_empty(patroni_restart_unmet(&b, true, false, 150004)), "postgres version mismatch") == 0,
			   "postgres_version not newer than the running one");
	UNIT_CHECK(patroni_restart_unmet(&b, true, false, 150003) == NULL, "postgres_version newer");
	b.postgres_version = 0;
	b.restart_pending = true;
	UNIT_CHECK(strcmp(or_empty(patroni_restart_unmet(&b, true, false, 150004)), "pending restart flag is not set") == 0,
			   "restart_pending with nothing pending");
	UNIT_CHECK(patroni_restart_unmet(&b, true, true, 150004) == NULL, "restart_pending with a restart pending");

	/* timing, loop_wait 10 s */
	UNIT_CHECK(patroni_restart_timing(100000000, 99999999, 10000000) == PATRONI_RESTART_WAIT, "before: wait");
	UNIT_CHECK(patroni_restart_timing(100000000, 100000000, 10000000) == PATRONI_RESTART_DUE, "at: due");
	UNIT_CHECK(patroni_restart_timing(100000000, 115000000, 10000000) == PATRONI_RESTART_DUE, "1.5 loop_wait late: due");
	UNIT_CHECK(patroni_restart_timing(100000000, 115000001, 10000000) == PATRONI_RESTART_STALE, "later: stale");

	/* the member key's object */
	b.schedule_us = INT64_C(1893456000) * 1000000;
	b.role = 1;
	b.postgres_version = 150004;
	UNIT_CHECK(patroni_restart_schedule_json(&b, &started, buf, sizeof(buf)) > 0 &&
			   strcmp(buf, "{\"schedule\":\"2030-01-01T00:00:00+00:00\","
					  "\"postmaster_start_time\":\"2026-01-01 00:00:00.123456+00:00\","
					  "\"role\":\"primary\",\"restart_pending\":true,\"postgres_version\":\"15.4\"}") == 0,
			   "schedule json: %s", buf);
	memset(&b, 0, sizeof(b));
	b.schedule_us = INT64_C(1893456000) * 1000000 + 250000;
	b.postgres_version = 90624;
	UNIT_CHECK(patroni_restart_schedule_json(&b, NULL, buf, sizeof(buf)) > 0 &&
			   strcmp(buf, "{\"schedule\":\"2030-01-01T00:00:00.250000+00:00\","
					  "\"postgres_version\":\"9.6.24\"}") == 0,
			   "schedule json without the start time: %s", buf);
	UNIT_CHECK(patroni_restart_schedule_json(&b, NULL, buf, 20) == -1, "schedule json: too small a buffer");
}

typedef struct ReinitCase
{
	const char *body;
	int			status;
	bool		force;
	bool		from_leader;
} ReinitCase;

static const ReinitCase reinit_cases[] = {
	{"", 0, false, false},
	{"{}", 0, false, false},
	{"{\"force\":true}", 0, true, false},	/* what patronictl reinit --force sends */
	{"{\"force\":false}", 0, false, false},
	{"{\"force\":null}", 0, false, false},
	{"{\"force\":1}", 0, true, false},
	{"{\"force\":2}", 0, false, false},
	{"{\"force\":\"on\"}", 0, true, false},
	{"{\"force\":\"YES\"}", 0, true, false},
	{"{\"force\":\"1\"}", 0, true, false},
	{"{\"force\":\"off\"}", 0, false, false},
	{"{\"force\":\"maybe\"}", 0, false, false},
	{"{\"force\":[true]}", 0, false, false},
	{"{\"from_leader\":true}", 0, false, true},
	{"{\"force\":true,\"from_leader\":\"true\",\"other\":1}", 0, true, true},
	{"[]", 400},
	{"true", 400},
	{"not json", 400},
	{"{\"force\":true", 400},
};

static void
unit_reinit_body(void)
{
	for (size_t i = 0; i < lengthof(reinit_cases); i++)
	{
		const ReinitCase *c = &reinit_cases[i];
		PatroniReinitBody b;
		char		err[256] = "";
		int			st = patroni_reinit_body_decode(c->body, strlen(c->body), &b, err, sizeof(err));

		UNIT_CHECK(st == c->status, "reinitialize body %s: status %d (%s)", c->body, st, err);
		if (st == 0 && c->status == 0)
			UNIT_CHECK(b.force == c->force && b.from_leader == c->from_leader,
					   "reinitialize body %s: force=%d from_leader=%d", c->body, b.force, b.from_leader);
		if (st != 0)
			UNIT_CHECK(err[0] != '\0' && !b.force && !b.from_leader,
					   "reinitialize body %s: refusal says why and sets nothing", c->body);
	}
}

static void
unit_param_secret(void)
{
	static const struct
	{
		const char *name;
		bool		secret;
	}			cases[] = {
		{"primary_conninfo", true},
		{"pg_ha.replication_conninfo", true},
		{"ssl_passphrase_command", true},
		{"myext.Password", true},
		{"myext.api_token", true},
		{"max_connections", false},
		{"shared_buffers", false},
		{"ssl_key_file", false},
		{"", false},
	};

	for (size_t i = 0; i < lengthof(cases); i++)
		UNIT_CHECK(patroni_param_is_secret(cases[i].name) == cases[i].secret,
				   "secret parameter %s: %d", cases[i].name, !cases[i].secret);
}

void
unit_patroni(void)
{
	unit_param_secret();
	unit_tags();
	unit_config_patch();
	unit_failover_body();
	unit_restart_body();
	unit_restart_schedule_fuzz();
	unit_restart_conditions();
	unit_reinit_body();
}
