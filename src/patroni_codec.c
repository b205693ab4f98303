/*
 * patroni_codec.c - the JSON Patroni's operators hand to pg_ha: user tags,
 * the `config` key and its PATCH merge, the switchover/failover bodies
 * (patroni_codec.h says what each accepts).
 *
 * Why a codec of its own: the HTTP listener, the control worker and the
 * HA worker all read these documents, and each must refuse the same bad
 * input in the same words; the unit tests and the fuzz target exercise
 * them without a server.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "patroni_codec.h"
#include "ha_request.h"

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

/* No number out of double's range: cJSON would print it as null. */
static bool
all_finite(const cJSON *item)
{
	const cJSON *child;

	if (cJSON_IsNumber(item))
		return isfinite(item->valuedouble);
	cJSON_ArrayForEach(child, item)
		if (!all_finite(child))
		return false;
	return true;
}

/* Patroni's tags: settings of their own in pg_ha, never user tags. */
static const char *const builtin_tags[] = {
	"nofailover", "noloadbalance", "nosync", "clonefrom", "nostream",
	"replicatefrom", "failover_priority", "sync_priority",
};

static bool
is_builtin_tag(const char *name)
{
	for (size_t i = 0; i < sizeof(builtin_tags) / sizeof(builtin_tags[0]); i++)
		if (strcmp(name, builtin_tags[i]) == 0)
			return true;
	return false;
}

bool
patroni_tags_validate(const char *json, char *err, size_t errlen)
{
	cJSON	   *doc;
	const cJSON *item;
	bool		ok = true;
	char		msg[256];

	if (json == NULL || json[0] == '\0')
		return true;
	if (strlen(json) > PATRONI_TAGS_MAX)
	{
		snprintf(msg, sizeof(msg), "The value is longer than %d bytes.", PATRONI_TAGS_MAX);
		set_err(err, errlen, msg);
		return false;
	}
	doc = cJSON_Parse(json);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		set_err(err, errlen, "The value must be a JSON object, such as {\"dc\": \"east\"}.");
		return false;
	}
	cJSON_ArrayForEach(item, doc)
	{
		if (item->string == NULL || item->string[0] == '\0' || strlen(item->string) >= PATRONI_NAME_LEN)
		{
			set_err(err, errlen, "Tag names must be 1 to 63 bytes long.");
			ok = false;
		}
		else if (is_builtin_tag(item->string))
		{
			snprintf(msg, sizeof(msg), "Tag \"%s\" is set by its own parameter, pg_ha.%s.",
					 item->string, item->string);
			set_err(err, errlen, msg);
			ok = false;
		}
		else if (!cJSON_IsString(item) && !cJSON_IsBool(item) &&
				 !(cJSON_IsNumber(item) && isfinite(item->valuedouble)))
		{
			snprintf(msg, sizeof(msg), "Tag \"%s\" must be a string, a finite number or a boolean.",
					 item->string);
			set_err(err, errlen, msg);
			ok = false;
		}
		if (!ok)
			break;
	}
	cJSON_Delete(doc);
	return ok;
}

/* Python's str() of a JSON number: integers without a point, else shortest repr. */
static void
number_text(double v, char *out, size_t outlen)
{
	if (isfinite(v) && v == floor(v) && fabs(v) < 1e15)
	{
		snprintf(out, outlen, "%.0f", v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++)
	{
		snprintf(out, outlen, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

bool
patroni_tag_text(const char *json, const char *name, char *out, size_t outlen)
{
	cJSON	   *doc;
	const cJSON *item;
	bool		found = false;

	if (json == NULL || json[0] == '\0' || outlen == 0)
		return false;
	doc = cJSON_Parse(json);
	item = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, name) : NULL;
	if (cJSON_IsString(item))
	{
		snprintf(out, outlen, "%s", item->valuestring);
		found = true;
	}
	else if (cJSON_IsBool(item))
	{
		snprintf(out, outlen, "%s", cJSON_IsTrue(item) ? "true" : "false");
		found = true;
	}
	else if (cJSON_IsNumber(item))
	{
		number_text(item->valuedouble, out, outlen);
		found = true;
	}
	cJSON_Delete(doc);
	return found;
}

char *
patroni_tags_members(const char *json)
{
	cJSON	   *doc;
	char	   *text;
	size_t		len;

	if (json == NULL || json[0] == '\0')
		return strdup("");
	doc = cJSON_Parse(json);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		return NULL;
	}
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL)
		return NULL;
	/* "{...}" -> "..." */
	len = strlen(text);
	memmove(text, text + 1, len - 2);
	text[len - 2] = '\0';
	return text;
}

/* what a name says about its value: compared case-insensitively, anywhere in it */
static const char *const secret_words[] = {
	"password", "passwd", "passphrase", "conninfo", "secret", "token", "credential",
};

bool
patroni_param_is_secret(const char *name)
{
	size_t		len = strlen(name);

	for (size_t i = 0; i < sizeof(secret_words) / sizeof(secret_words[0]); i++)
	{
		size_t		wlen = strlen(secret_words[i]);

		for (size_t at = 0; at + wlen <= len; at++)
			if (strncasecmp(name + at, secret_words[i], wlen) == 0)
				return true;
	}
	return false;
}

/*
 * The synchronous mode is written only when it is on: patronictl (3.3.2
 * and later) lists a synchronous standby as such only when the key sets
 * synchronous_mode, and a mode left out keeps following the GUC.
 */
char *
patroni_config_initial(const PatroniConfigInit *init)
{
	char		buf[512];
	char		sync[160] = "";

	if (init->synchronous_mode != PATRONI_SYNC_OFF)
		snprintf(sync, sizeof(sync), ",\"synchronous_mode\":%s%s,\"synchronous_node_count\":%d",
				 init->synchronous_mode == PATRONI_SYNC_QUORUM ? "\"quorum\"" : "true",
				 init->synchronous_mode == PATRONI_SYNC_ON && init->synchronous_mode_strict ?
				 ",\"synchronous_mode_strict\":true" : "",
				 init->synchronous_node_count);
	snprintf(buf, sizeof(buf),
			 "{\"ttl\":%d,\"loop_wait\":%d,\"retry_timeout\":%d,\"maximum_lag_on_failover\":%lld%s,"
			 "\"postgresql\":{\"parameters\":{},\"use_pg_rewind\":true}}",
			 init->ttl, init->loop_wait, init->retry_timeout,
			 (long long) init->maximum_lag_on_failover, sync);
	return strdup(buf);
}

bool
patroni_config_check_object(const char *text, size_t len, char *err, size_t errlen)
{
	cJSON	   *doc;
	bool		ok;

	if (len > PATRONI_CONFIG_MAX)
	{
		set_err(err, errlen, "The configuration is too large.");
		return false;
	}
	doc = cJSON_ParseWithLength(text, len);
	ok = cJSON_IsObject(doc) && all_finite(doc);
	cJSON_Delete(doc);
	if (!ok)
		set_err(err, errlen, "The body must be a JSON object, its numbers finite.");
	return ok;
}

/*
 * Python's json.loads keeps the last of duplicate keys; cJSON keeps them
 * all.  Drop the earlier ones, at every level, so that a document means
 * here what it means to Patroni (and a merge never creates duplicates).
 */
static void
last_key_wins(cJSON *obj)
{
	cJSON	   *item = obj ? obj->child : NULL;

	while (item != NULL)
	{
		cJSON	   *next = item->next;
		bool		later = false;

		if (cJSON_IsObject(obj) && item->string != NULL)
			for (cJSON *o = next; o != NULL && !later; o = o->next)
				later = o->string != NULL && strcmp(o->string, item->string) == 0;
		if (later)
			cJSON_Delete(cJSON_DetachItemViaPointer(obj, item));
		else if (cJSON_IsObject(item) || cJSON_IsArray(item))
			last_key_wins(item);
		item = next;
	}
}

/* Sets config[name] = value, in place when the key exists (keeps the order). */
static void
put_item(cJSON *config, const char *name, cJSON *value)
{
	if (cJSON_GetObjectItemCaseSensitive(config, name) != NULL)
		cJSON_ReplaceItemInObjectCaseSensitive(config, name, value);
	else
		cJSON_AddItemToObject(config, name, value);
}

/*
 * Patroni's patch_config(config, data): null deletes, an object merges
 * into an object, anything else replaces.  An object that replaces or
 * adds is merged into an empty one, so its nulls delete rather than being
 * stored (Patroni would store them; they mean "absent" either way).
 */
static void
merge(cJSON *config, const cJSON *patch)
{
	const cJSON *item;

	cJSON_ArrayForEach(item, patch)
	{
		cJSON	   *old = cJSON_GetObjectItemCaseSensitive(config, item->string);

		if (cJSON_IsNull(item))
			cJSON_DeleteItemFromObjectCaseSensitive(config, item->string);
		else if (cJSON_IsObject(item) && cJSON_IsObject(old))
			merge(old, item);
		else if (cJSON_IsObject(item))
		{
			cJSON	   *fresh = cJSON_CreateObject();

			merge(fresh, item);
			put_item(config, item->string, fresh);
		}
		else
			put_item(config, item->string, cJSON_Duplicate(item, true));
	}
}

bool
patroni_config_patch(const char *current, size_t current_len,
					 const char *patch, size_t patch_len,
					 char **out, bool *changed, char *err, size_t errlen)
{
	cJSON	   *doc = NULL;
	cJSON	   *before;
	cJSON	   *p;
	char	   *text;

	*out = NULL;
	*changed = false;
	p = cJSON_ParseWithLength(patch, patch_len);
	if (!cJSON_IsObject(p) || !all_finite(p))
	{
		cJSON_Delete(p);
		set_err(err, errlen, "The body must be a JSON object, its numbers finite.");
		return false;
	}
	if (current != NULL && current_len > 0)
		doc = cJSON_ParseWithLength(current, current_len);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		doc = cJSON_CreateObject();
	}
	last_key_wins(doc);
	last_key_wins(p);
	before = cJSON_Duplicate(doc, true);
	merge(doc, p);
	/* compared whole, so that a patch naming a key twice is judged by its outcome */
	*changed = !cJSON_Compare(before, doc, true);
	cJSON_Delete(before);
	cJSON_Delete(p);
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL || strlen(text) > PATRONI_CONFIG_MAX)
	{
		free(text);
		set_err(err, errlen, "The merged configuration is too large.");
		return false;
	}
	*out = text;
	return true;
}

/* A string-or-null field into out; false when present and not such. */
static bool
get_text(const cJSON *doc, const char *field, char *out, size_t outlen,
		 char *err, size_t errlen)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, field);
	char		msg[128];

	out[0] = '\0';
	if (item == NULL || cJSON_IsNull(item))
		return true;
	if (!cJSON_IsString(item) || strlen(item->valuestring) >= outlen)
	{
		snprintf(msg, sizeof(msg), "Field \"%s\" must be a string of fewer than %zu bytes.",
				 field, outlen);
		set_err(err, errlen, msg);
		return false;
	}
	snprintf(out, outlen, "%s", item->valuestring);
	return true;
}

/*
 * A request body that must be a JSON object of at most PATRONI_BODY_MAX
 * bytes: the parsed object (the caller deletes it), or NULL with err set.
 */
static cJSON *
parse_body(const char *text, size_t len, char *err, size_t errlen)
{
	cJSON	   *doc;

	if (len > PATRONI_BODY_MAX)
	{
		set_err(err, errlen, "The body is too large.");
		return NULL;
	}
	doc = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		set_err(err, errlen, "The body must be a JSON object.");
		return NULL;
	}
	return doc;
}

bool
patroni_failover_body_decode(const char *text, size_t len, PatroniFailoverBody *out,
							 char *err, size_t errlen)
{
	cJSON	   *doc;
	bool		ok;

	memset(out, 0, sizeof(*out));
	doc = parse_body(text, len, err, errlen);
	if (doc == NULL)
		return false;
	ok = get_text(doc, "leader", out->leader, sizeof(out->leader), err, errlen) &&
		get_text(doc, "candidate", out->candidate, sizeof(out->candidate), err, errlen) &&
		get_text(doc, "scheduled_at", out->scheduled_at, sizeof(out->scheduled_at), err, errlen);
	if (ok && out->candidate[0] == '\0')
		ok = get_text(doc, "member", out->candidate, sizeof(out->candidate), err, errlen);
	cJSON_Delete(doc);
	return ok;
}

/* "15", "15.4", "9.6.24" or 150004 as PG_VERSION_NUM; 0 if none of these */
static int
version_num(const cJSON *v)
{
	int			major = 0;
	int			minor = 0;
	int			patch = 0;
	int			n;
	char		tail;

	if (cJSON_IsNumber(v))
		return v->valuedouble >= 90000 && v->valuedouble < 1000000 ? (int) v->valuedouble : 0;
	if (!cJSON_IsString(v))
		return 0;
	n = sscanf(v->valuestring, "%d.%d.%d%c", &major, &minor, &patch, &tail);
	if (n < 1 || n > 3 || major < 9 || major > 99 || minor < 0 || minor > 99 || patch < 0 || patch > 99)
		return 0;
	/* 9.6.24 is 90624; 15.4 is 150004 */
	return major >= 10 ? major * 10000 + minor : major * 10000 + minor * 100 + patch;
}

/*
 * "schedule" of a POST /restart body: Patroni's parse_schedule.  0, or the
 * status of its refusal with its sentence.  Parsed before the zone is
 * looked for, as dateutil does: garbage is 422 whether or not it has one.
 */
static int
restart_schedule(const cJSON *item, int64_t now_us, PatroniRestartBody *out,
				 char *err, size_t errlen)
{
	char		terr[128];

	if (!cJSON_IsString(item) ||
		!ha_time_parse(item->valuestring, &out->schedule_us, terr, sizeof(terr)))
	{
		set_err(err, errlen, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601");
		return 422;
	}
	if (!ha_time_has_zone(item->valuestring))
	{
		set_err(err, errlen, "Timezone information is mandatory for the scheduled restart");
		return 400;
	}
	if (out->schedule_us < now_us)
	{
		set_err(err, errlen, "Cannot schedule restart in the past");
		return 422;
	}
	return 0;
}

/* One key of a POST /restart body: 0, or the status of Patroni's refusal. */
static int
restart_key(const cJSON *item, int64_t now_us, PatroniRestartBody *out, char *err, size_t errlen)
{
	const char *k = item->string;

	if (strcmp(k, "restart_pending") == 0)
		out->restart_pending = true;	/* Patroni: the key's presence */
	else if (strcmp(k, "schedule") == 0)
		return restart_schedule(item, now_us, out, err, errlen);
	else if (strcmp(k, "role") == 0)
	{
		const char *r = cJSON_IsString(item) ? item->valuestring : "";

		out->role = strcmp(r, "primary") == 0 || strcmp(r, "master") == 0 ? 1 :
			strcmp(r, "replica") == 0 ? 2 : -1;
		if (out->role < 0)
		{
			set_err(err, errlen, "PostgreSQL role should be either primary or replica");
			return 400;
		}
	}
	else if (strcmp(k, "postgres_version") == 0)
	{
		out->postgres_version = version_num(item);
		if (out->postgres_version == 0)
		{
			set_err(err, errlen, "postgres_version must be a PostgreSQL version such as \"15.4\"");
			return 400;
		}
	}
	else if (strcmp(k, "timeout") == 0)
	{
		if (!(cJSON_IsNumber(item) && item->valuedouble > 0) &&
			!(cJSON_IsString(item) && atof(item->valuestring) > 0))
		{
			set_err(err, errlen, "Timeout should be a positive number of seconds");
			return 400;
		}
	}
	else
	{
		set_err(err, errlen, "Unknown filter for the scheduled restart");
		return 400;
	}
	return 0;
}

int
patroni_restart_body_decode(const char *text, size_t len, int64_t now_us,
							PatroniRestartBody *out, char *err, size_t errlen)
{
	cJSON	   *doc;
	const cJSON *item;
	int			status = 0;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return 0;
	doc = parse_body(text, len, err, errlen);
	if (doc == NULL)
		return 400;
	out->scheduled = cJSON_GetObjectItemCaseSensitive(doc, "schedule") != NULL;
	cJSON_ArrayForEach(item, doc)
	{
		status = restart_key(item, now_us, out, err, errlen);
		if (status != 0)
			break;
	}
	cJSON_Delete(doc);
	return status;
}

const char *
patroni_restart_unmet(const PatroniRestartBody *b, bool is_primary, bool restart_pending,
					  int server_version_num)
{
	/* Patroni checks all three and names the last that fails */
	const char *why = NULL;

	if ((b->role == 1 && !is_primary) || (b->role == 2 && is_primary))
		why = "host role mismatch";
	if (b->postgres_version != 0 && b->postgres_version <= server_version_num)
		why = "postgres version mismatch";
	if (b->restart_pending && !restart_pending)
		why = "pending restart flag is not set";
	return why;
}

/*
 * Patroni acts on a schedule up to loop_wait early (then sleeps until the
 * time) and drops one found more than 1.5 loop_wait late: a loop that
 * late means trouble, and no time to restart.  pg_ha's worker wakes at the
 * time itself (ha_worker.c), so it is due from the time on.
 */
PatroniRestartTiming
patroni_restart_timing(int64_t at_us, int64_t now_us, int64_t loop_wait_us)
{
	if (now_us < at_us)
		return PATRONI_RESTART_WAIT;
	if (now_us - at_us > loop_wait_us + loop_wait_us / 2)
		return PATRONI_RESTART_STALE;
	return PATRONI_RESTART_DUE;
}

/* ISO 8601 in UTC, without the fraction when it is 0 (Python's isoformat) */
static void
iso_time(int64_t epoch_us, char *buf, size_t len)
{
	char	   *frac;

	ha_time_format(epoch_us, buf, len);
	frac = strstr(buf, ".000000+");
	if (frac != NULL)
		memmove(frac, frac + 7, strlen(frac + 7) + 1);
}

int
patroni_restart_schedule_json(const PatroniRestartBody *b, const int64_t *postmaster_start_us,
							  char *buf, size_t len)
{
	char		at[HA_TIME_LEN];
	int			n;
	int			v = b->postgres_version;

	iso_time(b->schedule_us, at, sizeof(at));
	n = snprintf(buf, len, "{\"schedule\":\"%s\"", at);
	if (postmaster_start_us != NULL && n >= 0 && (size_t) n < len)
	{
		char		started[HA_TIME_LEN];

		/* Patroni's: isoformat(sep=' ') of pg_postmaster_start_time() */
		ha_time_format(*postmaster_start_us, started, sizeof(started));
		started[10] = ' ';
		n += snprintf(buf + n, len - n, ",\"postmaster_start_time\":\"%s\"", started);
	}
	if (b->role != 0 && n >= 0 && (size_t) n < len)
		n += snprintf(buf + n, len - n, ",\"role\":\"%s\"", b->role == 1 ? "primary" : "replica");
	if (b->restart_pending && n >= 0 && (size_t) n < len)
		n += snprintf(buf + n, len - n, ",\"restart_pending\":true");
	/* as patronictl list prints it: "if version < 15.4" */
	if (v != 0 && n >= 0 && (size_t) n < len)
		n += v >= 100000 ? snprintf(buf + n, len - n, ",\"postgres_version\":\"%d.%d\"", v / 10000, v % 10000) :
			snprintf(buf + n, len - n, ",\"postgres_version\":\"%d.%d.%d\"", v / 10000, v / 100 % 100, v % 100);
	if (n >= 0 && (size_t) n < len)
		n += snprintf(buf + n, len - n, "}");
	return n >= 0 && (size_t) n < len ? n : -1;
}

/*
 * Patroni's parse_bool: Python's str(value).lower() in ('on', 'true',
 * 'yes', '1').  cJSON cannot tell 1 from 1.0 (which Python prints "1.0"):
 * both count as 1.
 */
static bool
parse_bool(const cJSON *v)
{
	static const char *const yes[] = {"on", "true", "yes", "1"};

	if (cJSON_IsTrue(v))
		return true;
	if (cJSON_IsNumber(v))
		return v->valuedouble == 1;
	if (!cJSON_IsString(v))
		return false;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (strcasecmp(v->valuestring, yes[i]) == 0)
			return true;
	return false;
}

int
patroni_reinit_body_decode(const char *text, size_t len, PatroniReinitBody *out,
						   char *err, size_t errlen)
{
	cJSON	   *doc;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return 0;
	doc = parse_body(text, len, err, errlen);
	if (doc == NULL)
		return 400;
	out->force = parse_bool(cJSON_GetObjectItemCaseSensitive(doc, "force"));
	out->from_leader = parse_bool(cJSON_GetObjectItemCaseSensitive(doc, "from_leader"));
	cJSON_Delete(doc);
	return 0;
}

bool
patroni_is_json_array(const char *text, size_t len)
{
	cJSON	   *doc = cJSON_ParseWithLength(text, len);
	bool		ok = cJSON_IsArray(doc);

	cJSON_Delete(doc);
	return ok;
}

/* ---------- the config key as every node reads it ---------- */

/* An integer, or a string holding one (Patroni casts with int()). */
static void
read_int(const cJSON *doc, const char *name, PatroniInt *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, name);
	char	   *end;

	out->state = PATRONI_FIELD_ABSENT;
	out->value = 0;
	if (item == NULL || cJSON_IsNull(item))
		return;
	out->state = PATRONI_FIELD_BAD;
	if (cJSON_IsNumber(item))
	{
		double		v = item->valuedouble;

		if (isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740992.0)
		{
			out->value = (int64_t) v;
			out->state = PATRONI_FIELD_SET;
		}
		return;
	}
	if (!cJSON_IsString(item) || item->valuestring[0] == '\0' || strlen(item->valuestring) > 18)
		return;
	out->value = strtoll(item->valuestring, &end, 10);
	if (*end == '\0')
		out->state = PATRONI_FIELD_SET;
}

/* true/false, or the strings Patroni's operators write for them */
static bool
bool_text(const cJSON *item, bool *value)
{
	static const char *const t[] = {"true", "on", "yes"};
	static const char *const f[] = {"false", "off", "no"};

	if (cJSON_IsBool(item))
	{
		*value = cJSON_IsTrue(item);
		return true;
	}
	if (!cJSON_IsString(item))
		return false;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
	{
		if (strcmp(item->valuestring, t[i]) == 0 || strcmp(item->valuestring, f[i]) == 0)
		{
			*value = strcmp(item->valuestring, t[i]) == 0;
			return true;
		}
	}
	return false;
}

static void
read_bool(const cJSON *doc, const char *name, PatroniBool *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, name);

	out->state = PATRONI_FIELD_ABSENT;
	out->value = false;
	if (item == NULL || cJSON_IsNull(item))
		return;
	out->state = bool_text(item, &out->value) ? PATRONI_FIELD_SET : PATRONI_FIELD_BAD;
}

/* false, true, or "quorum" (Patroni 4); "on"/"off" as the booleans */
static void
read_sync_mode(const cJSON *doc, PatroniInt *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, "synchronous_mode");
	bool		on;

	out->state = PATRONI_FIELD_ABSENT;
	out->value = PATRONI_SYNC_OFF;
	if (item == NULL || cJSON_IsNull(item))
		return;
	out->state = PATRONI_FIELD_SET;
	if (cJSON_IsString(item) && strcmp(item->valuestring, "quorum") == 0)
		out->value = PATRONI_SYNC_QUORUM;
	else if (bool_text(item, &on))
		out->value = on ? PATRONI_SYNC_ON : PATRONI_SYNC_OFF;
	else
		out->state = PATRONI_FIELD_BAD;
}

/* A name as postgresql.conf takes it: letters, digits, '_' and '.'. */
static bool
param_name_ok(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len >= PATRONI_PARAM_NAME_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
			  (name[i] >= '0' && name[i] <= '9') || name[i] == '_' || name[i] == '.'))
			return false;
	return true;
}

/* One parameter's value as text: a string, a number, or a boolean as on/off. */
static bool
param_value(const cJSON *item, char *out, size_t outlen)
{
	if (cJSON_IsString(item))
	{
		if (strlen(item->valuestring) >= outlen)
			return false;
		snprintf(out, outlen, "%s", item->valuestring);
		return true;
	}
	if (cJSON_IsBool(item))
	{
		snprintf(out, outlen, "%s", cJSON_IsTrue(item) ? "on" : "off");
		return true;
	}
	if (cJSON_IsNumber(item) && isfinite(item->valuedouble))
	{
		number_text(item->valuedouble, out, outlen);
		return true;
	}
	return false;
}

static void
read_params(const cJSON *doc, PatroniDynConfig *out)
{
	const cJSON *pg = cJSON_GetObjectItemCaseSensitive(doc, "postgresql");
	const cJSON *params = cJSON_IsObject(pg) ? cJSON_GetObjectItemCaseSensitive(pg, "parameters") : NULL;
	const cJSON *item;

	out->params_present = cJSON_IsObject(params);
	if (!out->params_present)
		return;
	cJSON_ArrayForEach(item, params)
	{
		PatroniParam *p;

		if (cJSON_IsNull(item))
			continue;			/* Patroni: null removes the parameter */
		if (out->nparams >= PATRONI_PARAMS_MAX)
		{
			out->params_dropped++;
			continue;
		}
		p = &out->params[out->nparams++];
		memset(p, 0, sizeof(*p));
		if (strlen(item->string) < sizeof(p->name))
			snprintf(p->name, sizeof(p->name), "%s", item->string);
		else
			snprintf(p->name, sizeof(p->name), "%.*s", (int) sizeof(p->name) - 1, item->string);
		p->bad = !param_name_ok(item->string) || !param_value(item, p->value, sizeof(p->value));
		if (p->bad)
			p->value[0] = '\0';
	}
}

bool
patroni_config_decode(const char *text, size_t len, PatroniDynConfig *out)
{
	cJSON	   *doc;

	memset(out, 0, sizeof(*out));
	if (text == NULL || len == 0 || len > PATRONI_CONFIG_MAX)
		return false;
	doc = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		return false;
	}
	last_key_wins(doc);
	read_int(doc, "ttl", &out->ttl);
	read_int(doc, "loop_wait", &out->loop_wait);
	read_int(doc, "retry_timeout", &out->retry_timeout);
	read_int(doc, "maximum_lag_on_failover", &out->maximum_lag_on_failover);
	read_int(doc, "synchronous_node_count", &out->synchronous_node_count);
	read_sync_mode(doc, &out->synchronous_mode);
	read_bool(doc, "synchronous_mode_strict", &out->synchronous_mode_strict);
	read_bool(doc, "failsafe_mode", &out->failsafe_mode);
	read_bool(doc, "check_timeline", &out->check_timeline);
	read_bool(doc, "pause", &out->pause);
	read_params(doc, out);
	cJSON_Delete(doc);
	return true;
}
