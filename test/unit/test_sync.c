/*
 * test_sync.c - synchronous mode (src/ha_sync.c): the sync key codec,
 * synchronous_standby_names, the leader's next step (selection and the
 * safe order of changes) and the failover rule, as tables of cases.
 *
 * Built against the server headers like test_failover.c.
 */
#include "pg_ha.h"

#include "ha_sync.h"

#include "unit.h"

static SyncNames
names(const char *csv)
{
	SyncNames	s;
	char		buf[512];
	char	   *save = NULL;

	memset(&s, 0, sizeof(s));
	strlcpy(buf, csv, sizeof(buf));
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		sync_names_add(&s, t);
	return s;
}

static SyncKey
key(const char *leader, const char *voters, int quorum)
{
	SyncKey		k;

	memset(&k, 0, sizeof(k));
	if (leader == NULL)
		return k;
	k.present = true;
	strlcpy(k.leader, leader, sizeof(k.leader));
	k.voters = names(voters);
	k.quorum = quorum;
	return k;
}

static SyncStandbyNames
ssn(const char *list, int num, bool any)
{
	SyncStandbyNames s;

	memset(&s, 0, sizeof(s));
	s.names = names(list);
	s.num = s.names.n ? num : 0;
	s.any = any;
	return s;
}

static void
codec(void)
{
	static const struct
	{
		const char *value;
		bool		ok;
		const char *leader;
		const char *voters;
		int			quorum;
	}			parse[] = {
		{"{\"leader\":\"n1\",\"sync_standby\":\"n2\"}", true, "n1", "n2", 0},
		{"{\"leader\":\"n1\",\"sync_standby\":\"n2,n3\",\"quorum\":1}", true, "n1", "n2,n3", 1},
		{"{\"leader\":\"n1\",\"sync_standby\":null,\"quorum\":0}", true, "n1", "", 0},
		{"{\"leader\":\"n1\"}", true, "n1", "", 0},
		{"{\"leader\":\"n1\",\"sync_standby\":\" n2 , n3 \"}", true, "n1", "n2,n3", 0},
		{"{\"sync_standby\":\"n2\"}", false},
		{"{\"leader\":\"\",\"sync_standby\":\"n2\"}", false},
		{"{\"leader\":\"n1\",\"sync_standby\":7}", false},
		{"{\"leader\":\"n1\",\"quorum\":-1}", false},
		{"[]", false},
		{"{", false},
		{"", false},
	};
	char		buf[SYNC_KEY_MAX_JSON];
	SyncKey		k;
	SyncStandbyNames s;

	for (size_t i = 0; i < lengthof(parse); i++)
	{
		bool		ok = sync_key_parse(parse[i].value, strlen(parse[i].value), &k);
		SyncNames	want = names(parse[i].ok ? parse[i].voters : "");

		UNIT_CHECK(ok == parse[i].ok, "parse %s: %s", parse[i].value, ok ? "accepted" : "refused");
		if (!ok || !parse[i].ok)
			continue;
		UNIT_CHECK(strcmp(k.leader, parse[i].leader) == 0, "parse %s: leader", parse[i].value);
		UNIT_CHECK(sync_names_equal(&k.voters, &want), "parse %s: voters", parse[i].value);
		UNIT_CHECK(k.quorum == parse[i].quorum, "parse %s: quorum %d", parse[i].value, k.quorum);
	}
	UNIT_CHECK(!sync_key_parse(NULL, 0, &k) && !k.present, "no value: no key");

	k = key("n1", "n3,n2", 0);
	sync_key_encode(&k, false, buf, sizeof(buf));
	UNIT_CHECK(strcmp(buf, "{\"leader\":\"n1\",\"sync_standby\":\"n2,n3\"}") == 0,
			   "encode, on mode: Patroni's format, names sorted (%s)", buf);
	k = key("n1", "n2,n3", 1);
	sync_key_encode(&k, true, buf, sizeof(buf));
	UNIT_CHECK(strcmp(buf, "{\"leader\":\"n1\",\"sync_standby\":\"n2,n3\",\"quorum\":1}") == 0,
			   "encode, quorum mode (%s)", buf);
	k = key("n1", "", 0);
	sync_key_encode(&k, false, buf, sizeof(buf));
	UNIT_CHECK(strcmp(buf, "{\"leader\":\"n1\",\"sync_standby\":null}") == 0, "encode, nobody (%s)", buf);
	UNIT_CHECK(sync_key_encode(&k, false, buf, 10) == -1, "encode into a short buffer fails");

	s = ssn("n3,n2", 2, false);
	sync_ssn_format(&s, buf, sizeof(buf));
	UNIT_CHECK(strcmp(buf, "FIRST 2 (\"n2\", \"n3\")") == 0, "ssn FIRST (%s)", buf);
	s = ssn("n2,n3", 1, true);
	sync_ssn_format(&s, buf, sizeof(buf));
	UNIT_CHECK(strcmp(buf, "ANY 1 (\"n2\", \"n3\")") == 0, "ssn ANY (%s)", buf);
	s = ssn("", 0, false);
	sync_ssn_format(&s, buf, sizeof(buf));
	UNIT_CHECK(buf[0] == '\0', "ssn empty");
	{
		SyncStandbyNames a = ssn("n2,n3", 2, false);
		SyncStandbyNames b = ssn("N3,n2", 2, false);
		SyncStandbyNames c = ssn("n2,n3", 1, true);

		UNIT_CHECK(sync_ssn_equal(&a, &b), "ssn equal as sets, case-insensitively");
		UNIT_CHECK(!sync_ssn_equal(&a, &c), "ssn FIRST 2 differs from ANY 1");
	}
}

/* ---------- the leader's next step ---------- */

typedef struct StepCase
{
	const char *name;
	SyncMode	mode;
	int			count;
	SyncKey		key;
	SyncStandbyNames ssn;
	bool		in_effect;
	const char *streaming;		/* eligible streaming standbys */
	const char *ready;
	SyncStepKind want;
	const char *want_names;		/* key voters or ssn names */
	int			want_num;		/* key quorum or ssn num */
} StepCase;

static void
leader_steps(void)
{
	StepCase	cases[] = {
		/* off */
		{"off, no key: nothing", SYNC_MODE_OFF, 1, key(NULL, "", 0), ssn("", 0, false), true, "n2", "", SYNC_STEP_NONE},
		{"off, key left: delete it first", SYNC_MODE_OFF, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "n2", "n2", SYNC_STEP_DELETE_KEY},
		/* a new term */
		{"no key: nobody promotable first", SYNC_MODE_ON, 1, key(NULL, "", 0), ssn("", 0, false), true, "n2", "", SYNC_STEP_WRITE_KEY, "", 0},
		{"key of the old leader: replaced by ours, empty", SYNC_MODE_ON, 1, key("n0", "n1,n2", 0), ssn("", 0, false), true, "n2", "", SYNC_STEP_WRITE_KEY, "", 0},
		{"not in effect: wait", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("n2", 1, false), false, "n2", "", SYNC_STEP_WAIT},
		/* on: enter */
		{"on: async, a standby streams: name it in ssn", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("", 0, false), true, "n2", "", SYNC_STEP_SET_SSN, "n2", 1},
		{"on: ssn names it, not ready: key waits", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("n2", 1, false), true, "n2", "", SYNC_STEP_WAIT},
		{"on: ready: enters the key", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("n2", 1, false), true, "n2", "n2", SYNC_STEP_WRITE_KEY, "n2", 0},
		{"on: in place", SYNC_MODE_ON, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "n2,n3", "n2", SYNC_STEP_NONE},
		{"on: the sync one is sticky over a better-named one", SYNC_MODE_ON, 1, key("n1", "n3", 0), ssn("n3", 1, false), true, "n2,n3", "n3", SYNC_STEP_NONE},
		{"on: two wanted, two stream", SYNC_MODE_ON, 2, key("n1", "", 0), ssn("", 0, false), true, "n2,n3", "", SYNC_STEP_SET_SSN, "n2,n3", 2},
		{"on: two wanted, one streams", SYNC_MODE_ON, 2, key("n1", "", 0), ssn("", 0, false), true, "n3", "", SYNC_STEP_SET_SSN, "n3", 1},
		/* on: the sync standby dies */
		{"on: sync dies, another streams: leaves the key first", SYNC_MODE_ON, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "n3", "n2", SYNC_STEP_WRITE_KEY, "", 0},
		{"on: key empty: ssn moves to the other", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("n2", 1, false), true, "n3", "n2", SYNC_STEP_SET_SSN, "n3", 1},
		{"on: nobody left: key empty first", SYNC_MODE_ON, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "", "n2", SYNC_STEP_WRITE_KEY, "", 0},
		{"on: nobody left, key empty: asynchronous", SYNC_MODE_ON, 1, key("n1", "", 0), ssn("n2", 1, false), true, "", "n2", SYNC_STEP_SET_SSN, "", 0},
		{"on: one of two dies: key empty first", SYNC_MODE_ON, 2, key("n1", "n2,n3", 0), ssn("n2,n3", 2, false), true, "n2", "n2,n3", SYNC_STEP_WRITE_KEY, "", 0},
		{"on: adding a second: key empty first", SYNC_MODE_ON, 2, key("n1", "n2", 0), ssn("n2", 1, false), true, "n2,n3", "n2", SYNC_STEP_WRITE_KEY, "", 0},
		/* strict */
		{"strict: sole sync dies: keep waiting for it, key stays", SYNC_MODE_STRICT, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "", "n2", SYNC_STEP_NONE},
		{"strict: another comes: leaves the key first", SYNC_MODE_STRICT, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "n3", "n2", SYNC_STEP_WRITE_KEY, "", 0},
		{"strict: then ssn moves", SYNC_MODE_STRICT, 1, key("n1", "", 0), ssn("n2", 1, false), true, "n3", "n2", SYNC_STEP_SET_SSN, "n3", 1},
		{"strict: nothing ever: placeholder", SYNC_MODE_STRICT, 1, key("n1", "", 0), ssn("", 0, false), true, "", "", SYNC_STEP_SET_SSN, SYNC_STRICT_PLACEHOLDER, 1},
		{"strict: placeholder in place", SYNC_MODE_STRICT, 1, key("n1", "", 0), ssn(SYNC_STRICT_PLACEHOLDER, 1, false), true, "", "", SYNC_STEP_NONE},
		/* quorum */
		{"quorum: async, two stream: ANY 1 of both", SYNC_MODE_QUORUM, 1, key("n1", "", 0), ssn("", 0, false), true, "n2,n3", "", SYNC_STEP_SET_SSN, "n2,n3", 1},
		{"quorum: none ready: key waits", SYNC_MODE_QUORUM, 1, key("n1", "", 0), ssn("n2,n3", 1, true), true, "n2,n3", "", SYNC_STEP_WAIT},
		{"quorum: one ready of ANY 1: key with quorum 1", SYNC_MODE_QUORUM, 1, key("n1", "", 0), ssn("n2,n3", 1, true), true, "n2,n3", "n2", SYNC_STEP_WRITE_KEY, "n2,n3", 1},
		{"quorum: ANY 2 of 3 needs two ready", SYNC_MODE_QUORUM, 2, key("n1", "", 0), ssn("n2,n3,n4", 2, true), true, "n2,n3,n4", "n2", SYNC_STEP_WAIT},
		{"quorum: ANY 2 of 3, two ready: quorum 1", SYNC_MODE_QUORUM, 2, key("n1", "", 0), ssn("n2,n3,n4", 2, true), true, "n2,n3,n4", "n2,n4", SYNC_STEP_WRITE_KEY, "n2,n3,n4", 1},
		{"quorum: one dies: ssn first (1+1 >= 2)", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3", 1), ssn("n2,n3", 1, true), true, "n2", "n2,n3", SYNC_STEP_SET_SSN, "n2", 1},
		{"quorum: then the key, once the rest is ready", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3", 1), ssn("n2", 1, true), true, "n2", "n2", SYNC_STEP_WRITE_KEY, "n2", 0},
		{"quorum: ... not before", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3", 1), ssn("n2", 1, true), true, "n2", "", SYNC_STEP_WAIT},
		{"quorum: a third joins: quorum raised first", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3", 1), ssn("n2,n3", 1, true), true, "n2,n3,n4", "", SYNC_STEP_WRITE_KEY, "n2,n3,n4", 2},
		{"quorum: then ssn grows", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3,n4", 2), ssn("n2,n3", 1, true), true, "n2,n3,n4", "", SYNC_STEP_SET_SSN, "n2,n3,n4", 1},
		{"quorum: the last dies: key empty first", SYNC_MODE_QUORUM, 1, key("n1", "n2", 0), ssn("n2", 1, true), true, "", "n2", SYNC_STEP_WRITE_KEY, "", 0},
		{"quorum: then asynchronous", SYNC_MODE_QUORUM, 1, key("n1", "", 0), ssn("n2", 1, true), true, "", "n2", SYNC_STEP_SET_SSN, "", 0},
		{"quorum: count lowered 2 -> 1: quorum raised first", SYNC_MODE_QUORUM, 1, key("n1", "n2,n3,n4", 1), ssn("n2,n3,n4", 2, true), true, "n2,n3,n4", "", SYNC_STEP_WRITE_KEY, "n2,n3,n4", 2},
		{"quorum: count raised 1 -> 2: ssn first", SYNC_MODE_QUORUM, 2, key("n1", "n2,n3,n4", 2), ssn("n2,n3,n4", 1, true), true, "n2,n3,n4", "", SYNC_STEP_SET_SSN, "n2,n3,n4", 2},
		{"quorum: then the quorum drops, growing proof not needed: ready", SYNC_MODE_QUORUM, 2, key("n1", "n2,n3,n4", 2), ssn("n2,n3,n4", 2, true), true, "n2,n3,n4", "n2,n3", SYNC_STEP_WRITE_KEY, "n2,n3,n4", 1},
		{"switch on -> quorum: quorum raised over both first", SYNC_MODE_QUORUM, 1, key("n1", "n2", 0), ssn("n2", 1, false), true, "n2,n3", "n2", SYNC_STEP_WRITE_KEY, "n2,n3", 1},
	};

	for (size_t i = 0; i < lengthof(cases); i++)
	{
		StepCase   *c = &cases[i];
		SyncStandby sb[SYNC_MAX_NAMES];
		SyncNames	str = names(c->streaming);
		SyncInput	in;
		SyncStep	s;
		SyncNames	want = names(c->want_names ? c->want_names : "");

		memset(&in, 0, sizeof(in));
		memset(sb, 0, sizeof(sb));
		for (int j = 0; j < str.n; j++)
		{
			strlcpy(sb[j].name, str.name[j], sizeof(sb[j].name));
			sb[j].streaming = sb[j].eligible = true;
			sb[j].sync_priority = 1;
			sb[j].flush = 1000;
		}
		in.mode = c->mode;
		in.node_count = c->count;
		in.self = "n1";
		in.key = c->key;
		in.ssn = c->ssn;
		in.in_effect = c->in_effect;
		in.standbys = sb;
		in.nstandbys = str.n;
		in.ready = names(c->ready);
		s = sync_next_step(&in);
		UNIT_CHECK(s.kind == c->want, "%s: step %d, want %d (%s)", c->name, s.kind, c->want, s.why);
		if (s.kind != c->want)
			continue;
		if (s.kind == SYNC_STEP_WRITE_KEY)
		{
			UNIT_CHECK(strcmp(s.key.leader, "n1") == 0 && s.key.present, "%s: key names the leader", c->name);
			UNIT_CHECK(sync_names_equal(&s.key.voters, &want), "%s: key voters", c->name);
			UNIT_CHECK(s.key.quorum == c->want_num, "%s: key quorum %d", c->name, s.key.quorum);
		}
		if (s.kind == SYNC_STEP_SET_SSN)
		{
			UNIT_CHECK(sync_names_equal(&s.ssn.names, &want), "%s: ssn names", c->name);
			UNIT_CHECK(s.ssn.num == c->want_num, "%s: ssn num %d", c->name, s.ssn.num);
			UNIT_CHECK(s.ssn.any == (c->mode == SYNC_MODE_QUORUM) || want.n == 0, "%s: ssn method", c->name);
		}
	}
}

/* candidates the selection must skip, and preferences among the rest */
static void
selection(void)
{
	SyncStandby sb[4];
	SyncInput	in;
	SyncStep	s;
	SyncNames	want;

	memset(sb, 0, sizeof(sb));
	memset(&in, 0, sizeof(in));
	strlcpy(sb[0].name, "n2", PG_HA_NAME_LEN);	/* nosync / nofailover */
	strlcpy(sb[1].name, "n3", PG_HA_NAME_LEN);	/* catching up, not streaming */
	strlcpy(sb[2].name, "n4", PG_HA_NAME_LEN);	/* priority 1 */
	strlcpy(sb[3].name, "n5", PG_HA_NAME_LEN);	/* priority 5 */
	sb[0].streaming = true;
	sb[1].eligible = true;
	sb[2].streaming = sb[2].eligible = true;
	sb[3].streaming = sb[3].eligible = true;
	sb[0].sync_priority = sb[1].sync_priority = sb[2].sync_priority = 1;
	sb[3].sync_priority = 5;
	in.mode = SYNC_MODE_ON;
	in.node_count = 1;
	in.self = "n1";
	in.key = key("n1", "", 0);
	in.in_effect = true;
	in.standbys = sb;
	in.nstandbys = 4;
	s = sync_next_step(&in);
	want = names("n5");
	UNIT_CHECK(s.kind == SYNC_STEP_SET_SSN && sync_names_equal(&s.ssn.names, &want),
			   "the higher sync_priority wins; nosync and non-streaming are skipped");
	sb[3].sync_priority = 0;
	s = sync_next_step(&in);
	want = names("n4");
	UNIT_CHECK(s.kind == SYNC_STEP_SET_SSN && sync_names_equal(&s.ssn.names, &want),
			   "sync_priority 0 is never chosen");
	in.mode = SYNC_MODE_QUORUM;
	in.node_count = 5;
	sb[3].sync_priority = 1;
	s = sync_next_step(&in);
	want = names("n4,n5");
	UNIT_CHECK(s.kind == SYNC_STEP_SET_SSN && sync_names_equal(&s.ssn.names, &want) && s.ssn.num == 2,
			   "quorum: every eligible standby, count capped at their number (%d)", s.ssn.num);

	/* a promotion: what the new leader starts with */
	{
		SyncKey		k = key("n1", "n2,n3", 0);
		SyncStandbyNames p = sync_promotion_ssn(SYNC_MODE_ON, &k, "n2");

		UNIT_CHECK(p.names.n == 0, "promotion, on: asynchronous until standbys follow");
		p = sync_promotion_ssn(SYNC_MODE_STRICT, &k, "n2");
		want = names("n3");
		UNIT_CHECK(sync_names_equal(&p.names, &want) && p.num == 1, "promotion, strict: the other sync standby");
		k = key("n1", "n2", 0);
		p = sync_promotion_ssn(SYNC_MODE_STRICT, &k, "n2");
		want = names(SYNC_STRICT_PLACEHOLDER);
		UNIT_CHECK(sync_names_equal(&p.names, &want), "promotion, strict, alone: the placeholder");
	}
	/* readiness */
	{
		SyncNames	ready = names("");
		SyncStandbyNames s2 = ssn("n2,n3", 1, true);

		sync_update_ready(&ready, &s2, "n2", true, 99, 100);
		UNIT_CHECK(ready.n == 0, "ready: not before the flush position of the change");
		sync_update_ready(&ready, &s2, "n2", false, 100, 100);
		UNIT_CHECK(ready.n == 0, "ready: not before postgres waits for it");
		sync_update_ready(&ready, &s2, "n4", true, 100, 100);
		UNIT_CHECK(ready.n == 0, "ready: not when unlisted");
		sync_update_ready(&ready, &s2, "n2", true, 100, 100);
		UNIT_CHECK(ready.n == 1, "ready: waited for, caught up");
	}
}

/* ---------- the failover rule ---------- */

typedef struct RaceCase
{
	const char *name;
	SyncKey		key;
	const char *self;
	XLogRecPtr	self_lsn;
	SyncVoter	peers[4];
	int			npeers;
	SyncRaceVerdict want;
} RaceCase;

static void
race_rule(void)
{
	RaceCase	cases[] = {
		{"on: listed, alone", key("n1", "n2", 0), "n2", 100, {{0}}, 0, SYNC_RACE_MAY_TAKE},
		{"on: not listed", key("n1", "n2", 0), "n3", 200, {{"n2", 100, true}}, 1, SYNC_RACE_NOT_LISTED},
		{"on: key lists nobody: nobody takes over", key("n1", "", 0), "n2", 100, {{0}}, 0, SYNC_RACE_NOT_LISTED},
		{"on: two listed, the other ahead", key("n1", "n2,n3", 0), "n2", 100, {{"n3", 101, true}}, 1, SYNC_RACE_BEHIND},
		{"on: unlisted peer ahead is ignored", key("n1", "n2", 0), "n2", 100, {{"n3", 500, true}}, 1, SYNC_RACE_MAY_TAKE},
		/* quorum: ANY k of n listed, quorum n-k: n-k+1 seen, self included */
		{"quorum ANY 1 of 2: alone, no proof", key("n1", "n2,n3", 1), "n2", 100, {{0}}, 0, SYNC_RACE_NO_PROOF},
		{"quorum ANY 1 of 2: the other's position is stale", key("n1", "n2,n3", 1), "n2", 100, {{"n3", 50, false}}, 1, SYNC_RACE_NO_PROOF},
		{"quorum ANY 1 of 2: the other seen behind", key("n1", "n2,n3", 1), "n2", 100, {{"n3", 50, true}}, 1, SYNC_RACE_MAY_TAKE},
		{"quorum ANY 1 of 2: equal", key("n1", "n2,n3", 1), "n2", 100, {{"n3", 100, true}}, 1, SYNC_RACE_MAY_TAKE},
		{"quorum ANY 1 of 2: the other ahead", key("n1", "n2,n3", 1), "n3", 50, {{"n2", 100, true}}, 1, SYNC_RACE_BEHIND},
		{"quorum ANY 2 of 3: one more seen is enough", key("n1", "n2,n3,n4", 1), "n2", 100, {{"n3", 90, true}}, 1, SYNC_RACE_MAY_TAKE},
		{"quorum ANY 1 of 3: two more needed", key("n1", "n2,n3,n4", 2), "n2", 100, {{"n3", 90, true}}, 1, SYNC_RACE_NO_PROOF},
		{"quorum ANY 1 of 3: all seen", key("n1", "n2,n3,n4", 2), "n2", 100, {{"n3", 90, true}, {"n4", 100, true}}, 2, SYNC_RACE_MAY_TAKE},
		{"quorum: an unlisted node does not vote", key("n1", "n2,n3", 1), "n2", 100, {{"n5", 10, true}}, 1, SYNC_RACE_NO_PROOF},
		{"quorum: an unlisted node never takes over", key("n1", "n2,n3", 1), "n5", 900, {{"n2", 100, true}, {"n3", 100, true}}, 2, SYNC_RACE_NOT_LISTED},
	};

	for (size_t i = 0; i < lengthof(cases); i++)
	{
		char		why[256];
		SyncRaceVerdict v = sync_race_check(&cases[i].key, cases[i].self, cases[i].self_lsn,
											cases[i].peers, cases[i].npeers, why, sizeof(why));

		UNIT_CHECK(v == cases[i].want, "%s: verdict %d, want %d (%s)", cases[i].name, v, cases[i].want, why);
	}
}

void
unit_sync(void)
{
	codec();
	leader_steps();
	selection();
	race_rule();
}
