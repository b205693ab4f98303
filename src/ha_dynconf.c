/*
 * ha_dynconf.c - the effective settings: the `config` key merged with the
 * pg_ha.* GUCs (ha_dynconf.h states the precedence).
 *
 * Why the bounds.  The lease rule (ha_worker.c) keeps two primaries apart
 * whatever the TTL; the bounds keep a healthy leader from losing its lease
 * to its own settings:
 *   ttl            5 s to 1 h, pg_ha.ttl's range;
 *   loop_wait,     at least 1 s each, retry_timeout at most 60 s, and
 *   retry_timeout  loop_wait + 2 * retry_timeout <= ttl (Patroni's rule):
 *                  a renewal that times out is retried once before the
 *                  lease can run out.  A key that breaks the rule has both
 *                  ignored (the GUCs' pace applies); should the GUCs' pace
 *                  break it with the key's ttl, that ttl is ignored too;
 *   maximum_lag_on_failover  bytes, >= 0;
 *   synchronous_node_count   1 to 16.
 * Nothing here is safety-critical in the two-primaries sense: the fence
 * reads only the deadline the worker derives from a granted lease.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ha_dynconf.h"

static const char *const field_names[DYN_NUM_FIELDS] = {
	[DYN_TTL] = "ttl",
	[DYN_LOOP_WAIT] = "loop_wait",
	[DYN_RETRY_TIMEOUT] = "retry_timeout",
	[DYN_MAXIMUM_LAG] = "maximum_lag_on_failover",
	[DYN_SYNC_MODE] = "synchronous_mode",
	[DYN_SYNC_NODE_COUNT] = "synchronous_node_count",
	[DYN_FAILSAFE_MODE] = "failsafe_mode",
	[DYN_CHECK_TIMELINE] = "check_timeline",
	[DYN_PAUSE] = "pause",
};

/* Where a field comes from when the key does not decide it. */
static const char *const local_sources[DYN_NUM_FIELDS] = {
	[DYN_TTL] = "pg_ha.ttl",
	[DYN_LOOP_WAIT] = "ttl / 3",
	[DYN_RETRY_TIMEOUT] = "pg_ha.etcd_timeout",
	[DYN_MAXIMUM_LAG] = "pg_ha.maximum_lag_on_failover",
	[DYN_SYNC_MODE] = "pg_ha.synchronous_mode",
	[DYN_SYNC_NODE_COUNT] = "pg_ha.synchronous_node_count",
	[DYN_FAILSAFE_MODE] = "pg_ha.failsafe_mode",
	[DYN_CHECK_TIMELINE] = "default",
	[DYN_PAUSE] = "default",
};

const char *
dynconf_field_name(DynField f)
{
	return f >= 0 && f < DYN_NUM_FIELDS ? field_names[f] : "?";
}

static void
problem(DynSettings *s, const char *field, const char *why)
{
	DynProblem *p;

	if (s->nproblems >= DYN_PROBLEMS_MAX)
		return;
	p = &s->problems[s->nproblems++];
	snprintf(p->field, sizeof(p->field), "%s", field);
	snprintf(p->why, sizeof(p->why), "%s", why);
}

/* An integer field in [min, max]: true when the key decides it. */
static bool
take_int(DynSettings *s, DynField f, const PatroniInt *v, int64_t min, int64_t max,
		 const char *range)
{
	char		why[DYN_PROBLEM_LEN];

	if (v->state == PATRONI_FIELD_ABSENT)
		return false;
	if (v->state == PATRONI_FIELD_SET && v->value >= min && v->value <= max)
	{
		s->from_key |= 1u << f;
		return true;
	}
	snprintf(why, sizeof(why), "%s must be %s", field_names[f], range);
	problem(s, field_names[f], why);
	return false;
}

static bool
take_bool(DynSettings *s, DynField f, const PatroniBool *v)
{
	if (v->state == PATRONI_FIELD_ABSENT)
		return false;
	if (v->state == PATRONI_FIELD_SET)
	{
		s->from_key |= 1u << f;
		return true;
	}
	problem(s, field_names[f], "must be true or false");
	return false;
}

static bool
pace_fits(const DynSettings *s)
{
	return (int64_t) s->loop_wait_ms + 2 * (int64_t) s->retry_timeout_ms <= (int64_t) s->ttl * 1000;
}

/* ttl, loop_wait and retry_timeout, with the rule between them */
static void
merge_timing(const PatroniDynConfig *key, const DynLocal *local, DynSettings *out)
{
	unsigned	pace_bits = (1u << DYN_LOOP_WAIT) | (1u << DYN_RETRY_TIMEOUT);
	bool		ttl_key = key && take_int(out, DYN_TTL, &key->ttl, DYN_TTL_MIN, DYN_TTL_MAX,
										  "an integer from 5 to 3600 (seconds)");
	bool		loop_key = key && take_int(out, DYN_LOOP_WAIT, &key->loop_wait, 1, DYN_TTL_MAX,
										   "an integer from 1 to 3600 (seconds)");
	bool		retry_key = key && take_int(out, DYN_RETRY_TIMEOUT, &key->retry_timeout, 1,
											DYN_RETRY_MAX, "an integer from 1 to 60 (seconds)");

	out->ttl = ttl_key ? (int) key->ttl.value : local->ttl;
	out->loop_wait_ms = loop_key ? (int) key->loop_wait.value * 1000 : out->ttl * 1000 / 3;
	/*
	 * retry_timeout caps pg_ha.etcd_timeout rather than replacing it: the
	 * key pg_ha writes rounds the GUC up to whole seconds, and Patroni's 10 s
	 * is far longer than one etcd call needs to be.  A cap that does not cut
	 * counts as the GUC's.
	 */
	if (retry_key && key->retry_timeout.value * 1000 >= local->etcd_timeout_ms)
	{
		retry_key = false;
		out->from_key &= ~(1u << DYN_RETRY_TIMEOUT);
	}
	out->retry_timeout_ms = retry_key ? (int) key->retry_timeout.value * 1000 : local->etcd_timeout_ms;
	if (pace_fits(out))
		return;
	if (loop_key || retry_key)
	{
		char		why[DYN_PROBLEM_LEN];

		snprintf(why, sizeof(why),
				 "loop_wait + 2 * retry_timeout must not exceed ttl (%d s): both ignored", out->ttl);
		problem(out, loop_key ? "loop_wait" : "retry_timeout", why);
		out->from_key &= ~pace_bits;
		out->loop_wait_ms = out->ttl * 1000 / 3;
		out->retry_timeout_ms = local->etcd_timeout_ms;
	}
	if (!pace_fits(out) && ttl_key)
	{
		problem(out, "ttl", "ttl is too short for loop_wait + 2 * retry_timeout");
		out->from_key &= ~(1u << DYN_TTL);
		out->ttl = local->ttl;
		out->loop_wait_ms = out->ttl * 1000 / 3;
	}
}

/* synchronous_mode (with synchronous_mode_strict) and synchronous_node_count */
static void
merge_sync(const PatroniDynConfig *key, const DynLocal *local, DynSettings *out)
{
	out->sync_mode = local->sync_mode;
	out->sync_node_count = local->sync_node_count;
	if (key == NULL)
		return;
	if (key->synchronous_mode.state == PATRONI_FIELD_BAD)
		problem(out, "synchronous_mode", "synchronous_mode must be true, false or quorum");
	if (key->synchronous_mode_strict.state == PATRONI_FIELD_BAD)
		problem(out, "synchronous_mode_strict", "synchronous_mode_strict must be true or false");
	if (key->synchronous_mode.state == PATRONI_FIELD_SET)
	{
		bool		strict = key->synchronous_mode_strict.state == PATRONI_FIELD_SET &&
			key->synchronous_mode_strict.value;

		out->from_key |= 1u << DYN_SYNC_MODE;
		switch (key->synchronous_mode.value)
		{
			case PATRONI_SYNC_ON:
				out->sync_mode = strict ? DYN_SYNC_STRICT : DYN_SYNC_ON;
				break;
			case PATRONI_SYNC_QUORUM:
				out->sync_mode = DYN_SYNC_QUORUM;
				break;
			default:
				out->sync_mode = DYN_SYNC_OFF;
				break;
		}
	}
	if (take_int(out, DYN_SYNC_NODE_COUNT, &key->synchronous_node_count, 1, DYN_NODE_COUNT_MAX,
				 "an integer from 1 to 16"))
		out->sync_node_count = (int) key->synchronous_node_count.value;
}

void
dynconf_merge(const PatroniDynConfig *key, const DynLocal *local, DynSettings *out)
{
	memset(out, 0, sizeof(*out));
	merge_timing(key, local, out);
	merge_sync(key, local, out);
	out->maximum_lag_bytes = local->maximum_lag_bytes;
	out->failsafe_mode = local->failsafe_mode;
	out->check_timeline = true;
	if (key == NULL)
		return;
	if (take_int(out, DYN_MAXIMUM_LAG, &key->maximum_lag_on_failover, 0, INT64_C(9007199254740992),
				 "a number of bytes, 0 or more"))
		out->maximum_lag_bytes = key->maximum_lag_on_failover.value;
	if (take_bool(out, DYN_FAILSAFE_MODE, &key->failsafe_mode))
		out->failsafe_mode = key->failsafe_mode.value;
	if (take_bool(out, DYN_CHECK_TIMELINE, &key->check_timeline))
		out->check_timeline = key->check_timeline.value;
	if (take_bool(out, DYN_PAUSE, &key->pause))
		out->pause = key->pause.value;
}

static const char *
sync_text(int mode)
{
	switch (mode)
	{
		case DYN_SYNC_ON:
			return "\"on\"";
		case DYN_SYNC_QUORUM:
			return "\"quorum\"";
		case DYN_SYNC_STRICT:
			return "\"strict\"";
		default:
			return "\"off\"";
	}
}

void
dynconf_value_text(const DynSettings *s, DynField f, char *buf, size_t len)
{
	switch (f)
	{
		case DYN_TTL:
			snprintf(buf, len, "%d", s->ttl);
			break;
		case DYN_LOOP_WAIT:
			snprintf(buf, len, "%g", s->loop_wait_ms / 1000.0);
			break;
		case DYN_RETRY_TIMEOUT:
			snprintf(buf, len, "%g", s->retry_timeout_ms / 1000.0);
			break;
		case DYN_MAXIMUM_LAG:
			snprintf(buf, len, "%lld", (long long) s->maximum_lag_bytes);
			break;
		case DYN_SYNC_MODE:
			snprintf(buf, len, "%s", sync_text(s->sync_mode));
			break;
		case DYN_SYNC_NODE_COUNT:
			snprintf(buf, len, "%d", s->sync_node_count);
			break;
		case DYN_FAILSAFE_MODE:
			snprintf(buf, len, "%s", s->failsafe_mode ? "true" : "false");
			break;
		case DYN_CHECK_TIMELINE:
			snprintf(buf, len, "%s", s->check_timeline ? "true" : "false");
			break;
		default:
			snprintf(buf, len, "%s", s->pause ? "true" : "false");
			break;
	}
}

const char *
dynconf_source(const DynSettings *s, DynField f)
{
	if (f < 0 || f >= DYN_NUM_FIELDS)
		return "?";
	return (s->from_key & (1u << f)) ? "config" : local_sources[f];
}

const char *
dynconf_local_name(DynField f)
{
	return f >= 0 && f < DYN_NUM_FIELDS ? local_sources[f] : "?";
}

unsigned
dynconf_shadowed(const DynLocal *was, const DynLocal *now, const DynSettings *s)
{
	unsigned	changed = 0;

	if (was->ttl != now->ttl)
		changed |= 1u << DYN_TTL;
	if (was->maximum_lag_bytes != now->maximum_lag_bytes)
		changed |= 1u << DYN_MAXIMUM_LAG;
	if (was->sync_mode != now->sync_mode)
		changed |= 1u << DYN_SYNC_MODE;
	if (was->sync_node_count != now->sync_node_count)
		changed |= 1u << DYN_SYNC_NODE_COUNT;
	if (was->failsafe_mode != now->failsafe_mode)
		changed |= 1u << DYN_FAILSAFE_MODE;
	/* pg_ha.etcd_timeout is capped by the key, never replaced: not here */
	return changed & s->from_key;
}

int
dynconf_json(const DynSettings *s, char *buf, size_t len)
{
	size_t		used = 0;
	int			n;

	for (int f = 0; f < DYN_NUM_FIELDS; f++)
	{
		char		value[32];

		dynconf_value_text(s, f, value, sizeof(value));
		n = snprintf(buf + used, len - used, "%s\"%s\":{\"value\":%s,\"source\":\"%s\"}",
					 f == 0 ? "{" : ",", field_names[f], value, dynconf_source(s, f));
		if (n < 0 || (size_t) n >= len - used)
			return -1;
		used += n;
	}
	n = snprintf(buf + used, len - used, ",\"problems\":[");
	if (n < 0 || (size_t) n >= len - used)
		return -1;
	used += n;
	/* field names and sentences are ours: no JSON escaping needed */
	for (int i = 0; i < s->nproblems; i++)
	{
		n = snprintf(buf + used, len - used, "%s{\"field\":\"%s\",\"why\":\"%s\"}",
					 i ? "," : "", s->problems[i].field, s->problems[i].why);
		if (n < 0 || (size_t) n >= len - used)
			return -1;
		used += n;
	}
	n = snprintf(buf + used, len - used, "]}");
	if (n < 0 || (size_t) n >= len - used)
		return -1;
	return (int) (used + n);
}

/*
 * What pg_ha sets itself, and what its safety or identity rests on.  Names
 * are compared case-insensitively, as PostgreSQL does.
 */
static const struct
{
	const char *name;
	bool		prefix;
	const char *why;
}			refused_params[] = {
	{"pg_ha.", true, "pg_ha's own settings belong in postgresql.conf"},
	{"synchronous_standby_names", false, "pg_ha sets it (synchronous_mode)"},
	{"primary_conninfo", false, "pg_ha sets it (the upstream a standby follows)"},
	{"primary_slot_name", false, "pg_ha uses no replication slots"},
	{"recovery_target", true, "a recovery target would stop a standby short of the leader"},
	{"hot_standby", false, "pg_ha's worker needs hot_standby on a standby"},
	{"restart_after_crash", false, "pg_ha demotes through a crash restart"},
	{"cluster_name", false, "pg_ha may name the cluster after it"},
	{"port", false, "the member key publishes this node's address"},
	{"shared_preload_libraries", false, "pg_ha must stay loaded"},
};

const char *
dynconf_param_refused(const char *name, const char *value)
{
	for (size_t i = 0; i < sizeof(refused_params) / sizeof(refused_params[0]); i++)
	{
		size_t		n = strlen(refused_params[i].name);

		if (refused_params[i].prefix ? strncasecmp(name, refused_params[i].name, n) == 0 :
			strcasecmp(name, refused_params[i].name) == 0)
			return refused_params[i].why;
	}
	for (const char *c = value; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
			return "the value holds a control character";
	return NULL;
}
