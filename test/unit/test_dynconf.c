/*
 * test_dynconf.c - the config key decoded (patroni_codec.c) and merged with
 * the GUCs (ha_dynconf.c): the key wins with a valid value, a missing field
 * falls back to the GUC, a bad one is reported and ignored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha_dynconf.h"
#include "unit.h"

/* pg_ha's defaults: ttl 10 s, etcd_timeout 2 s, 1 MB lag, sync off, 1 standby */
static const DynLocal guc = {10, 2000, 1048576, DYN_SYNC_OFF, 1, false};

typedef struct DynCase
{
	const char *key;			/* NULL: no key */
	int			ttl;
	int			loop_wait_ms;
	int			retry_timeout_ms;
	long long	maximum_lag;
	int			sync_mode;
	int			node_count;
	bool		failsafe;
	bool		pause;
	const char *from_key;		/* field names the key decided, space-separated */
	const char *problems;		/* fields reported, space-separated */
} DynCase;

static const DynCase cases[] = {
	{NULL, 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", ""},
	{"{}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", ""},
	{"[1]", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", ""},
	/* pg_ha's initial key: the same values from the key */
	{"{\"ttl\":10,\"loop_wait\":3,\"retry_timeout\":2,\"maximum_lag_on_failover\":1048576}",
	10, 3000, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"ttl loop_wait maximum_lag_on_failover", ""},
	/* Patroni's defaults: retry_timeout caps pg_ha.etcd_timeout, 2 s stays */
	{"{\"ttl\":30,\"loop_wait\":10,\"retry_timeout\":10,\"maximum_lag_on_failover\":1048576}",
	30, 10000, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"ttl loop_wait maximum_lag_on_failover", ""},
	/* ttl alone: the pace follows it */
	{"{\"ttl\":30}", 30, 10000, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "ttl", ""},
	{"{\"ttl\":\"20\"}", 20, 6666, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "ttl", ""},
	{"{\"ttl\":\"abc\"}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":1}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":4}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":3601}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":12.5}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":-30}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":1e300}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":true}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":{\"x\":1}}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":null}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", ""},
	/* duplicate: the last one counts, as in Python */
	{"{\"ttl\":1,\"ttl\":15}", 15, 5000, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "ttl", ""},
	/* the pace rule: loop_wait + 2 * retry_timeout <= ttl */
	{"{\"ttl\":10,\"loop_wait\":7,\"retry_timeout\":3}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "ttl", "loop_wait"},
	{"{\"ttl\":10,\"loop_wait\":5,\"retry_timeout\":3}", 10, 5000, 2000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "ttl loop_wait", ""},
	{"{\"ttl\":10,\"loop_wait\":4,\"retry_timeout\":1}", 10, 4000, 1000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "ttl loop_wait retry_timeout", ""},
	{"{\"ttl\":5,\"loop_wait\":3,\"retry_timeout\":1}", 5, 3000, 1000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "ttl loop_wait retry_timeout", ""},
	{"{\"ttl\":5,\"loop_wait\":4,\"retry_timeout\":1}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "", "loop_wait ttl"},
	{"{\"loop_wait\":9}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "loop_wait"},
	{"{\"loop_wait\":0}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "loop_wait"},
	{"{\"retry_timeout\":61}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "",
	"retry_timeout"},
	/* ttl 5 with the GUCs' pace (1.67 + 2 * 2 s) does not fit: ignored */
	{"{\"ttl\":5}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false, "", "ttl"},
	{"{\"ttl\":5,\"loop_wait\":1,\"retry_timeout\":2}", 5, 1000, 2000, 1048576, DYN_SYNC_OFF, 1,
	false, false, "ttl loop_wait", ""},
	/* maximum_lag_on_failover in bytes */
	{"{\"maximum_lag_on_failover\":0}", 10, 3333, 2000, 0, DYN_SYNC_OFF, 1, false, false,
	"maximum_lag_on_failover", ""},
	{"{\"maximum_lag_on_failover\":33554432}", 10, 3333, 2000, 33554432, DYN_SYNC_OFF, 1, false,
	false, "maximum_lag_on_failover", ""},
	{"{\"maximum_lag_on_failover\":-1}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "maximum_lag_on_failover"},
	/* synchronous_mode: false, true, "quorum"; strict folds into on */
	{"{\"synchronous_mode\":true}", 10, 3333, 2000, 1048576, DYN_SYNC_ON, 1, false, false,
	"synchronous_mode", ""},
	{"{\"synchronous_mode\":\"on\"}", 10, 3333, 2000, 1048576, DYN_SYNC_ON, 1, false, false,
	"synchronous_mode", ""},
	{"{\"synchronous_mode\":true,\"synchronous_mode_strict\":true}", 10, 3333, 2000, 1048576,
	DYN_SYNC_STRICT, 1, false, false, "synchronous_mode", ""},
	{"{\"synchronous_mode\":\"quorum\",\"synchronous_node_count\":2}", 10, 3333, 2000, 1048576,
	DYN_SYNC_QUORUM, 2, false, false, "synchronous_mode synchronous_node_count", ""},
	{"{\"synchronous_mode\":false}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"synchronous_mode", ""},
	{"{\"synchronous_mode\":\"maybe\"}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "synchronous_mode"},
	{"{\"synchronous_mode\":2}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "synchronous_mode"},
	{"{\"synchronous_mode_strict\":true}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", ""},
	{"{\"synchronous_node_count\":0}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "synchronous_node_count"},
	{"{\"synchronous_node_count\":17}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "synchronous_node_count"},
	/* booleans */
	{"{\"failsafe_mode\":true,\"pause\":true}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, true,
	true, "failsafe_mode pause", ""},
	{"{\"failsafe_mode\":\"yes\",\"pause\":\"true\"}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1,
	true, true, "failsafe_mode pause", ""},
	{"{\"failsafe_mode\":1}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "failsafe_mode"},
	{"{\"check_timeline\":\"sometimes\"}", 10, 3333, 2000, 1048576, DYN_SYNC_OFF, 1, false, false,
	"", "check_timeline"},
	/* one bad field hides none of the others */
	{"{\"ttl\":\"abc\",\"maximum_lag_on_failover\":100,\"synchronous_mode\":\"maybe\"}", 10, 3333,
	2000, 100, DYN_SYNC_OFF, 1, false, false, "maximum_lag_on_failover", "ttl synchronous_mode"},
};

/* "a b c" -> is name among them? */
static bool
listed(const char *list, const char *name)
{
	size_t		n = strlen(name);

	for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

static void
check_case(const DynCase *c)
{
	PatroniDynConfig *key = calloc(1, sizeof(PatroniDynConfig));
	bool		decoded = c->key && patroni_config_decode(c->key, strlen(c->key), key);
	DynSettings s;
	char		json[2048];

	dynconf_merge(decoded ? key : NULL, &guc, &s);
	UNIT_CHECK(s.ttl == c->ttl, "%s: ttl %d", c->key, s.ttl);
	UNIT_CHECK(s.loop_wait_ms == c->loop_wait_ms, "%s: loop_wait %d ms", c->key, s.loop_wait_ms);
	UNIT_CHECK(s.retry_timeout_ms == c->retry_timeout_ms, "%s: retry_timeout %d ms", c->key,
			   s.retry_timeout_ms);
	UNIT_CHECK(s.maximum_lag_bytes == c->maximum_lag, "%s: lag %lld", c->key,
			   (long long) s.maximum_lag_bytes);
	UNIT_CHECK(s.sync_mode == c->sync_mode, "%s: sync mode %d", c->key, s.sync_mode);
	UNIT_CHECK(s.sync_node_count == c->node_count, "%s: node count %d", c->key, s.sync_node_count);
	UNIT_CHECK(s.failsafe_mode == c->failsafe, "%s: failsafe", c->key);
	UNIT_CHECK(s.pause == c->pause, "%s: pause", c->key);
	for (int f = 0; f < DYN_NUM_FIELDS; f++)
	{
		bool		want = listed(c->from_key, dynconf_field_name(f));

		UNIT_CHECK(((s.from_key >> f) & 1) == want, "%s: %s from the key: %d", c->key,
				   dynconf_field_name(f), want);
	}
	for (int i = 0; i < s.nproblems; i++)
		UNIT_CHECK(listed(c->problems, s.problems[i].field), "%s: unexpected problem %s: %s",
				   c->key, s.problems[i].field, s.problems[i].why);
	for (const char *p = c->problems; *p;)
	{
		char		name[32];
		int			n = 0;
		bool		found = false;

		while (p[n] && p[n] != ' ' && n < 31)
			n++;
		snprintf(name, sizeof(name), "%.*s", n, p);
		for (int i = 0; i < s.nproblems; i++)
			found |= strcmp(s.problems[i].field, name) == 0;
		UNIT_CHECK(found, "%s: problem %s reported", c->key, name);
		p += n;
		while (*p == ' ')
			p++;
	}
	UNIT_CHECK(dynconf_json(&s, json, sizeof(json)) > 0, "%s: json fits", c->key);
	free(key);
}

/* postgresql.parameters: names and values as postgresql.conf would take them */
static void
check_params(void)
{
	const char *text = "{\"postgresql\":{\"parameters\":{\"work_mem\":\"8MB\",\"max_connections\":200,"
		"\"hot_standby\":true,\"bad name\":\"x\",\"x\":[1],\"gone\":null,\"ratio\":0.5}}}";
	PatroniDynConfig *key = calloc(1, sizeof(PatroniDynConfig));

	UNIT_CHECK(patroni_config_decode(text, strlen(text), key), "parameters: decoded");
	UNIT_CHECK(key->params_present && key->nparams == 6, "parameters: %d read", key->nparams);
	UNIT_CHECK(strcmp(key->params[0].name, "work_mem") == 0 && strcmp(key->params[0].value, "8MB") == 0,
			   "parameters: string");
	UNIT_CHECK(strcmp(key->params[1].value, "200") == 0, "parameters: integer");
	UNIT_CHECK(strcmp(key->params[2].value, "on") == 0, "parameters: boolean as on");
	UNIT_CHECK(key->params[3].bad, "parameters: a name with a space is refused");
	UNIT_CHECK(key->params[4].bad, "parameters: an array value is refused");
	UNIT_CHECK(strcmp(key->params[5].name, "ratio") == 0 && strcmp(key->params[5].value, "0.5") == 0,
			   "parameters: a fraction");
	UNIT_CHECK(!patroni_config_decode("{", 1, key) && !key->params_present,
			   "parameters: a broken key reads as none");
	free(key);
}

static void
check_refused(void)
{
	static const struct
	{
		const char *name;
		const char *value;
		bool		refused;
	}			rows[] = {
		{"work_mem", "8MB", false},
		{"shared_buffers", "256MB", false},
		{"max_connections", "200", false},
		{"pg_ha.ttl", "30", true},
		{"PG_HA.fencing", "off", true},
		{"synchronous_standby_names", "*", true},
		{"Primary_Conninfo", "host=x", true},
		{"primary_slot_name", "s", true},
		{"recovery_target_lsn", "0/0", true},
		{"recovery_target", "immediate", true},
		{"hot_standby", "off", true},
		{"restart_after_crash", "off", true},
		{"cluster_name", "x", true},
		{"port", "5433", true},
		{"shared_preload_libraries", "", true},
		{"work_mem", "8MB\nfsync = off", true},
		{"application_name", "a\tb", true},
	};

	for (size_t i = 0; i < lengthof(rows); i++)
		UNIT_CHECK((dynconf_param_refused(rows[i].name, rows[i].value) != NULL) == rows[i].refused,
				   "parameter %s refused: %d", rows[i].name, rows[i].refused);
}

/* A GUC reloaded while the key decides its field: reported, and only then. */
static void
check_shadowed(void)
{
	const char *text = "{\"ttl\":30,\"loop_wait\":10,\"retry_timeout\":10,\"synchronous_mode\":true}";
	PatroniDynConfig *key = calloc(1, sizeof(PatroniDynConfig));
	DynLocal	now = guc;
	DynSettings s;

	UNIT_CHECK(patroni_config_decode(text, strlen(text), key), "shadowed: decoded");
	now.ttl = 20;
	now.maximum_lag_bytes = 1;
	now.sync_mode = DYN_SYNC_QUORUM;
	now.etcd_timeout_ms = 1000;
	dynconf_merge(key, &now, &s);
	UNIT_CHECK(dynconf_shadowed(&guc, &now, &s) == ((1u << DYN_TTL) | (1u << DYN_SYNC_MODE)),
			   "shadowed: ttl and synchronous_mode (the key's), not the lag (the GUC's): %x",
			   dynconf_shadowed(&guc, &now, &s));
	UNIT_CHECK(dynconf_shadowed(&now, &now, &s) == 0, "shadowed: nothing changed, nothing reported");
	dynconf_merge(NULL, &now, &s);
	UNIT_CHECK(dynconf_shadowed(&guc, &now, &s) == 0, "shadowed: no key, every GUC counts");
	UNIT_CHECK(strcmp(dynconf_local_name(DYN_TTL), "pg_ha.ttl") == 0, "shadowed: the GUC's name");
	free(key);
}

void
unit_dynconf(void)
{
	check_refused();
	check_shadowed();
	for (size_t i = 0; i < lengthof(cases); i++)
		check_case(&cases[i]);
	check_params();
}
