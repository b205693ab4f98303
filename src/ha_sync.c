/*
 * ha_sync.c - synchronous mode: the leader's choice of synchronous
 * standbys, the order in which it changes synchronous_standby_names (ssn)
 * and the sync key, and the rule that decides who may take over.
 *
 * Two things describe synchronous replication, as in Patroni:
 *   - ssn on the leader: k of the set S confirm each commit before it is
 *     acknowledged (FIRST |S| (S) in on/strict mode: all of them; ANY k (S)
 *     in quorum mode);
 *   - the sync key in etcd: {"leader":L,"sync_standby":V,"quorum":q}.  A
 *     replica may take over after L is lost only if it is in V and sees at
 *     least q + 1 members of V (itself included) none of which is ahead of
 *     it.  In on/strict mode q is 0: every member of V holds every
 *     acknowledged commit.
 *
 * The invariant: every commit L acknowledged is held by at least one
 * member of any q + 1 members of V.  Then the most advanced of q + 1
 * members holds them all, and the rule above loses nothing.  V = {} (only
 * L may lead again) satisfies it trivially; that is where every leader
 * starts (sync_next_step writes it first) and where a step falls back
 * when nothing better is provably safe.
 *
 * Why each step keeps it (acknowledgers of a commit: k members of S):
 *   - a key (V', q') is written only while S is in effect.  Commits after
 *     the write are confirmed by k of S; a set of q' + 1 members of V'
 *     misses at most |S u V'| - (q' + 1) of S u V', so it meets every
 *     k-subset of S when k + q' >= |S u V'|.  Commits before S took effect
 *     are held by every "ready" standby (it flushed the leader's position
 *     of that moment, and was listed since): q' + 1 members of V' include
 *     one of them when |ready n V'| >= |V'| - q'.  Or, growing the key
 *     (V <= V', q' - q >= |V' \ V|), any q' + 1 members of V' include
 *     q + 1 of V, for which the old key's proof holds.
 *   - ssn changes from (S, k) to (T, k') only with the key fixed.  While
 *     the reload spreads, each WAL sender releases commits by its own copy
 *     of the setting, counting any standby whose own copy lists it: a
 *     commit is confirmed by at least min(k, k') members of S u T.  So the
 *     change is made only when min(k, k') + q >= |S u T u V|, or V = {}.
 *     Going asynchronous (T = {}) needs V = {} first.
 * In on/strict mode q stays 0, so any change of ssn first empties the key:
 * a node leaves the key before postgres stops waiting for it, and enters
 * it only once postgres waits for it and it holds everything (ready).
 * The worker verifies "in effect" (its own copy, the checkpointer's
 * sync_standbys_defined, every WAL sender's priority) before the next
 * step, one step per cycle, so nothing here waits.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "ha_sync.h"

bool
sync_mode_parse(const char *text, SyncMode *mode)
{
	static const struct
	{
		const char *name;
		SyncMode	mode;
	}			modes[] = {
		{"off", SYNC_MODE_OFF}, {"on", SYNC_MODE_ON},
		{"quorum", SYNC_MODE_QUORUM}, {"strict", SYNC_MODE_STRICT},
	};

	for (size_t i = 0; i < lengthof(modes); i++)
		if (pg_strcasecmp(text, modes[i].name) == 0)
		{
			*mode = modes[i].mode;
			return true;
		}
	return false;
}

const char *
sync_mode_name(SyncMode mode)
{
	switch (mode)
	{
		case SYNC_MODE_ON:
			return "on";
		case SYNC_MODE_QUORUM:
			return "quorum";
		case SYNC_MODE_STRICT:
			return "strict";
		default:
			return "off";
	}
}

/* ---------- name sets ---------- */

/* standby names match case-insensitively, as postgres matches them */
bool
sync_names_contains(const SyncNames *set, const char *name)
{
	for (int i = 0; i < set->n; i++)
		if (pg_strcasecmp(set->name[i], name) == 0)
			return true;
	return false;
}

void
sync_names_add(SyncNames *set, const char *name)
{
	if (set->n >= SYNC_MAX_NAMES || name[0] == '\0' || sync_names_contains(set, name))
		return;
	strlcpy(set->name[set->n++], name, PG_HA_NAME_LEN);
}

static int
count_common(const SyncNames *a, const SyncNames *b)
{
	int			n = 0;

	for (int i = 0; i < a->n; i++)
		n += sync_names_contains(b, a->name[i]) ? 1 : 0;
	return n;
}

static bool
names_subset(const SyncNames *a, const SyncNames *b)
{
	return count_common(a, b) == a->n;
}

bool
sync_names_equal(const SyncNames *a, const SyncNames *b)
{
	return a->n == b->n && names_subset(a, b);
}

static int
union_size(const SyncNames *a, const SyncNames *b)
{
	return a->n + b->n - count_common(a, b);
}

static int
union3_size(const SyncNames *a, const SyncNames *b, const SyncNames *c)
{
	SyncNames	u = *a;

	for (int i = 0; i < b->n; i++)
		sync_names_add(&u, b->name[i]);
	return union_size(&u, c);
}

static int
cmp_names(const void *a, const void *b)
{
	return pg_strcasecmp((const char *) a, (const char *) b);
}

void
sync_names_join(const SyncNames *set, char *buf, size_t len)
{
	size_t		used = 0;

	buf[0] = '\0';
	for (int i = 0; i < set->n && used < len; i++)
		used += snprintf(buf + used, len - used, "%s%s", i ? "," : "", set->name[i]);
}

/* ---------- the sync key ---------- */

static bool
names_parse(const char *list, SyncNames *out)
{
	const char *p = list;

	memset(out, 0, sizeof(*out));
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		char		name[PG_HA_NAME_LEN];

		while (len > 0 && *p == ' ')
			p++, len--;
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len >= PG_HA_NAME_LEN || out->n >= SYNC_MAX_NAMES)
			return false;
		memcpy(name, p, len);
		name[len] = '\0';
		sync_names_add(out, name);
		if (end == NULL)
			break;
		p = end + 1;
	}
	return true;
}

/*
 * Patroni's SyncState: no leader means no key; sync_standby is a comma
 * separated list or null; quorum is read only along with a leader.
 */
bool
sync_key_parse(const char *value, size_t len, SyncKey *key)
{
	cJSON	   *doc = value ? cJSON_ParseWithLength(value, len) : NULL;
	const cJSON *leader;
	const cJSON *standbys;
	const cJSON *quorum;
	bool		ok = false;

	memset(key, 0, sizeof(*key));
	if (!cJSON_IsObject(doc))
		goto done;
	leader = cJSON_GetObjectItemCaseSensitive(doc, "leader");
	standbys = cJSON_GetObjectItemCaseSensitive(doc, "sync_standby");
	quorum = cJSON_GetObjectItemCaseSensitive(doc, "quorum");
	if (!cJSON_IsString(leader) || leader->valuestring[0] == '\0' ||
		strlen(leader->valuestring) >= PG_HA_NAME_LEN)
		goto done;
	if (cJSON_IsString(standbys) && !names_parse(standbys->valuestring, &key->voters))
		goto done;
	if (standbys && !cJSON_IsString(standbys) && !cJSON_IsNull(standbys))
		goto done;
	if (cJSON_IsNumber(quorum))
	{
		if (quorum->valuedouble < 0 || quorum->valuedouble > SYNC_MAX_NAMES)
			goto done;
		key->quorum = (int) quorum->valuedouble;
	}
	strlcpy(key->leader, leader->valuestring, sizeof(key->leader));
	key->present = true;
	ok = true;
done:
	cJSON_Delete(doc);
	if (!ok)
		memset(key, 0, sizeof(*key));
	return ok;
}

int
sync_key_encode(const SyncKey *key, bool quorum_mode, char *buf, size_t len)
{
	char		list[SYNC_MAX_NAMES * PG_HA_NAME_LEN];
	SyncNames	sorted = key->voters;
	int			n;

	/* names sorted, as Patroni writes them: equal sets, equal values */
	qsort(sorted.name, sorted.n, PG_HA_NAME_LEN, cmp_names);
	sync_names_join(&sorted, list, sizeof(list));
	if (list[0])
		n = snprintf(buf, len, "{\"leader\":\"%s\",\"sync_standby\":\"%s\"", key->leader, list);
	else
		n = snprintf(buf, len, "{\"leader\":\"%s\",\"sync_standby\":null", key->leader);
	if (n >= 0 && (size_t) n < len && quorum_mode)
		n += snprintf(buf + n, len - n, ",\"quorum\":%d", key->quorum);
	if (n >= 0 && (size_t) n < len)
		n += snprintf(buf + n, len - n, "}");
	return (n < 0 || (size_t) n >= len) ? -1 : n;
}

bool
sync_key_equal(const SyncKey *a, const SyncKey *b)
{
	return a->present == b->present && strcmp(a->leader, b->leader) == 0 &&
		sync_names_equal(&a->voters, &b->voters) && a->quorum == b->quorum;
}

/* ---------- synchronous_standby_names ---------- */

void
sync_ssn_format(const SyncStandbyNames *ssn, char *buf, size_t len)
{
	SyncNames	sorted = ssn->names;
	size_t		used;

	buf[0] = '\0';
	if (ssn->names.n == 0)
		return;
	qsort(sorted.name, sorted.n, PG_HA_NAME_LEN, cmp_names);
	used = snprintf(buf, len, "%s %d (", ssn->any ? "ANY" : "FIRST", ssn->num);
	for (int i = 0; i < sorted.n && used < len; i++)
		used += snprintf(buf + used, len - used, "%s\"%s\"", i ? ", " : "", sorted.name[i]);
	if (used < len)
		snprintf(buf + used, len - used, ")");
}

bool
sync_ssn_equal(const SyncStandbyNames *a, const SyncStandbyNames *b)
{
	if (a->names.n == 0 || b->names.n == 0)
		return a->names.n == b->names.n;
	return a->num == b->num && a->any == b->any && sync_names_equal(&a->names, &b->names);
}

void
sync_update_ready(SyncNames *ready, const SyncStandbyNames *ssn, const char *name,
				  bool waited, XLogRecPtr flush, XLogRecPtr ready_lsn)
{
	if (waited && flush >= ready_lsn && sync_names_contains(&ssn->names, name))
		sync_names_add(ready, name);
}

/* ---------- the leader's next step ---------- */

static SyncStep
step(SyncStepKind kind, const char *fmt,...) pg_attribute_printf(2, 3);

static SyncStep
step(SyncStepKind kind, const char *fmt,...)
{
	SyncStep	s;
	va_list		ap;

	memset(&s, 0, sizeof(s));
	s.kind = kind;
	va_start(ap, fmt);
	vsnprintf(s.why, sizeof(s.why), fmt, ap);
	va_end(ap);
	return s;
}

static SyncStep
write_key(const SyncInput *in, const SyncNames *voters, int quorum, const char *why)
{
	SyncStep	s = step(SYNC_STEP_WRITE_KEY, "%s", why);

	s.key.present = true;
	strlcpy(s.key.leader, in->self, sizeof(s.key.leader));
	if (voters)
		s.key.voters = *voters;
	s.key.quorum = voters && voters->n > 0 ? quorum : 0;
	return s;
}

/* Is a preferred over b as a synchronous standby?  (sticky, priority, position, name) */
static bool
preferred(const SyncStandby *a, const SyncStandby *b, const SyncNames *current)
{
	bool		ca = sync_names_contains(current, a->name);
	bool		cb = sync_names_contains(current, b->name);

	if (ca != cb)
		return ca;
	if (a->sync_priority != b->sync_priority)
		return a->sync_priority > b->sync_priority;
	if (a->flush != b->flush)
		return a->flush > b->flush;
	return pg_strcasecmp(a->name, b->name) < 0;
}

/*
 * The configured state: which standbys postgres should wait for, and how
 * many (k) and which quorum the key should then carry.
 */
static void
target(const SyncInput *in, SyncStandbyNames *t, int *quorum)
{
	bool		taken[SYNC_MAX_NAMES * 4] = {false};
	int			want = in->mode == SYNC_MODE_QUORUM ? SYNC_MAX_NAMES : Max(1, in->node_count);
	int			n = Min(in->nstandbys, (int) lengthof(taken));

	memset(t, 0, sizeof(*t));
	/* the best remaining candidate, want times: current ones stay */
	for (int round = 0; round < want; round++)
	{
		int			best = -1;

		for (int i = 0; i < n; i++)
		{
			const SyncStandby *s = &in->standbys[i];

			if (taken[i] || !s->streaming || !s->eligible || s->sync_priority <= 0 ||
				pg_strcasecmp(s->name, in->self) == 0)
				continue;
			if (best < 0 || preferred(s, &in->standbys[best], &in->ssn.names))
				best = i;
		}
		if (best < 0)
			break;
		taken[best] = true;
		sync_names_add(&t->names, in->standbys[best].name);
	}
	if (in->mode == SYNC_MODE_QUORUM)
	{
		t->any = true;
		t->num = Min(Max(1, in->node_count), t->names.n);
		*quorum = t->names.n - t->num;
	}
	else
	{
		t->num = t->names.n;
		*quorum = 0;
	}
	if (t->names.n == 0 && in->mode == SYNC_MODE_STRICT)
	{
		/* strict: keep waiting for the last ones, or for a standby to come */
		if (in->ssn.names.n > 0)
			*t = in->ssn;
		else
		{
			sync_names_add(&t->names, SYNC_STRICT_PLACEHOLDER);
			t->num = 1;
		}
	}
	if (t->names.n == 0)
		t->num = 0;
}

/* May the key become (voters, quorum) with in->ssn in effect?  (file header) */
static bool
key_change_safe(const SyncInput *in, const SyncNames *voters, int quorum)
{
	const SyncStandbyNames *s = &in->ssn;

	if (voters->n == 0)
		return true;
	if (s->names.n == 0 || s->num + quorum < union_size(&s->names, voters))
		return false;
	if (count_common(&in->ready, voters) >= voters->n - quorum)
		return true;
	return in->key.voters.n > 0 && names_subset(&in->key.voters, voters) &&
		quorum - in->key.quorum >= voters->n - in->key.voters.n;
}

/* May ssn change to t with the key as it is?  (file header) */
static bool
ssn_change_safe(const SyncInput *in, const SyncStandbyNames *t)
{
	const SyncKey *key = &in->key;

	if (key->voters.n == 0)
		return true;
	if (t->names.n == 0 || in->ssn.names.n == 0)
		return false;
	return Min(in->ssn.num, t->num) + key->quorum >=
		union3_size(&in->ssn.names, &t->names, &key->voters);
}

/* The key once ssn is at its target: who is provably synchronous. */
static void
wanted_key(const SyncInput *in, int quorum_target, SyncNames *voters, int *quorum)
{
	memset(voters, 0, sizeof(*voters));
	*quorum = 0;
	if (in->mode == SYNC_MODE_QUORUM)
	{
		for (int i = 0; i < in->ssn.names.n; i++)
			sync_names_add(voters, in->ssn.names.name[i]);
		*quorum = quorum_target;
		return;
	}
	/* FIRST n of n: a standby enters once it holds everything (ready) */
	for (int i = 0; i < in->ssn.names.n; i++)
		if (sync_names_contains(&in->ready, in->ssn.names.name[i]))
			sync_names_add(voters, in->ssn.names.name[i]);
}

/* Is a listed, streaming standby not ready yet?  (worth looking again soon) */
static bool
catching_up(const SyncInput *in)
{
	for (int i = 0; i < in->nstandbys; i++)
		if (in->standbys[i].streaming && sync_names_contains(&in->ssn.names, in->standbys[i].name) &&
			!sync_names_contains(&in->ready, in->standbys[i].name))
			return true;
	return false;
}

/*
 * ssn must change but the key does not allow it yet: the key that does.
 * Quorum mode grows the quorum over S u T; on/strict mode (quorum fixed
 * at 0) can only empty it.
 */
static SyncStep
prepare_key_for(const SyncInput *in, const SyncStandbyNames *t)
{
	SyncNames	v = in->ssn.names;
	int			q;

	if (in->mode == SYNC_MODE_QUORUM && t->names.n > 0 && in->ssn.names.n > 0)
	{
		for (int i = 0; i < t->names.n; i++)
			sync_names_add(&v, t->names.name[i]);
		q = v.n - Min(in->ssn.num, t->num);
		if (key_change_safe(in, &v, q))
			return write_key(in, &v, q, "raising the quorum before synchronous_standby_names changes");
	}
	return write_key(in, NULL, 0, "no standby is listed as synchronous while synchronous_standby_names changes");
}

SyncStep
sync_next_step(const SyncInput *in)
{
	SyncStandbyNames t;
	int			quorum_target;
	SyncNames	want;
	int			want_quorum;

	if (in->mode == SYNC_MODE_OFF)
		return in->key.present ?
			step(SYNC_STEP_DELETE_KEY, "synchronous mode is off") :
			step(SYNC_STEP_NONE, "synchronous mode is off");
	/* a new term starts with nobody else promotable: always safe */
	if (!in->key.present || strcmp(in->key.leader, in->self) != 0)
		return write_key(in, NULL, 0, "this node leads: no standby is synchronous yet");
	if (!in->in_effect)
		return step(SYNC_STEP_WAIT, "synchronous_standby_names is not in effect everywhere yet");

	target(in, &t, &quorum_target);
	if (!sync_ssn_equal(&t, &in->ssn))
	{
		if (ssn_change_safe(in, &t))
		{
			SyncStep	s = step(SYNC_STEP_SET_SSN, "%s", t.names.n ? "standbys changed" :
								 "no standby to wait for: replicating asynchronously");

			s.ssn = t;
			return s;
		}
		return prepare_key_for(in, &t);
	}
	wanted_key(in, quorum_target, &want, &want_quorum);
	if (sync_names_equal(&want, &in->key.voters) && want_quorum == in->key.quorum)
		return catching_up(in) ? step(SYNC_STEP_WAIT, "waiting for the listed standbys to catch up") :
			step(SYNC_STEP_NONE, "in place");
	if (key_change_safe(in, &want, want_quorum))
		return write_key(in, &want, want_quorum, "synchronous standbys confirmed");
	return step(SYNC_STEP_WAIT, "waiting for the listed standbys to catch up");
}

SyncStandbyNames
sync_promotion_ssn(SyncMode mode, const SyncKey *key, const char *self)
{
	SyncStandbyNames ssn;

	memset(&ssn, 0, sizeof(ssn));
	if (mode != SYNC_MODE_STRICT)
		return ssn;				/* asynchronous until standbys follow */
	/* strict: no commit without a standby; the last synchronous ones first */
	for (int i = 0; i < key->voters.n; i++)
		if (pg_strcasecmp(key->voters.name[i], self) != 0)
			sync_names_add(&ssn.names, key->voters.name[i]);
	if (ssn.names.n == 0)
		sync_names_add(&ssn.names, SYNC_STRICT_PLACEHOLDER);
	ssn.num = ssn.names.n;
	return ssn;
}

/* ---------- the failover rule ---------- */

SyncRaceVerdict
sync_race_check(const SyncKey *key, const char *self, XLogRecPtr self_lsn,
				const SyncVoter *peers, int npeers, char *why, size_t whylen)
{
	char		list[SYNC_MAX_NAMES * PG_HA_NAME_LEN];
	int			votes = 1;

	sync_names_join(&key->voters, list, sizeof(list));
	if (!sync_names_contains(&key->voters, self))
	{
		snprintf(why, whylen, "not a synchronous standby when \"%s\" was lost (sync key lists \"%s\")",
				 key->leader, list);
		return SYNC_RACE_NOT_LISTED;
	}
	for (int i = 0; i < npeers; i++)
	{
		if (!peers[i].fresh || pg_strcasecmp(peers[i].name, self) == 0 ||
			!sync_names_contains(&key->voters, peers[i].name))
			continue;
		if (peers[i].lsn > self_lsn)
		{
			snprintf(why, whylen, "synchronous standby \"%s\" is ahead of this node", peers[i].name);
			return SYNC_RACE_BEHIND;
		}
		votes++;
	}
	if (votes < key->quorum + 1)
	{
		snprintf(why, whylen, "sees %d of the synchronous standbys \"%s\" (itself included), %d needed to prove it holds every acknowledged commit",
				 votes, list, key->quorum + 1);
		return SYNC_RACE_NO_PROOF;
	}
	snprintf(why, whylen, "synchronous standby with proof (%d of %d needed)", votes, key->quorum + 1);
	return SYNC_RACE_MAY_TAKE;
}
