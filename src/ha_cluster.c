/*
 * ha_cluster.c - the HA worker's view of the cluster: a copy of every key
 * under /<namespace>/<cluster>/, loaded with one range read and kept current
 * by a watch on the prefix, and the parsing of what those keys mean
 * (members, pause, failover request, history).
 *
 * Keeping the whole prefix costs no polling: etcd pushes each change once.
 * Every value is parsed defensively: a member key that is not the JSON we
 * expect is treated as a member we know nothing about (never eligible,
 * never followed), not as an error.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "ha_cluster.h"
#include "ha_sync.h"

void
cluster_reset(ClusterView *view)
{
	etcd_kvlist_free(&view->kvs);
	view->loaded = false;
}

void
cluster_load(ClusterView *view, EtcdKVList *range, size_t prefix_len)
{
	cluster_reset(view);
	view->kvs = *range;
	memset(range, 0, sizeof(*range));
	view->prefix_len = prefix_len;
	view->loaded = true;
}

static int
cluster_index(const ClusterView *view, const char *suffix)
{
	for (int i = 0; i < view->kvs.count; i++)
	{
		const char *key = view->kvs.kvs[i].key;

		if (strlen(key) >= view->prefix_len && strcmp(key + view->prefix_len, suffix) == 0)
			return i;
	}
	return -1;
}

const EtcdKV *
cluster_get(const ClusterView *view, const char *suffix)
{
	int			i = cluster_index(view, suffix);

	return i < 0 ? NULL : &view->kvs.kvs[i];
}

/* Applies one watch event; takes ownership of the event's kv. */
void
cluster_apply_event(ClusterView *view, EtcdEvent *ev)
{
	int			i = -1;
	int64_t		revision = ev->kv.mod_revision;

	for (int k = 0; k < view->kvs.count; k++)
		if (strcmp(view->kvs.kvs[k].key, ev->kv.key) == 0)
			i = k;
	if (ev->type == ETCD_EVENT_DELETE)
	{
		if (i >= 0)
		{
			etcd_kv_free(&view->kvs.kvs[i]);
			view->kvs.kvs[i] = view->kvs.kvs[view->kvs.count - 1];
			view->kvs.count--;
		}
		etcd_kv_free(&ev->kv);
		if (revision > view->kvs.revision)
			view->kvs.revision = revision;
		return;
	}
	else if (i >= 0)
	{
		etcd_kv_free(&view->kvs.kvs[i]);
		view->kvs.kvs[i] = ev->kv;
	}
	else
	{
		EtcdKV	   *grown = realloc(view->kvs.kvs, sizeof(EtcdKV) * (view->kvs.count + 1));

		if (grown == NULL)
		{
			etcd_kv_free(&ev->kv);
			view->loaded = false;	/* forces a reload */
			return;
		}
		view->kvs.kvs = grown;
		view->kvs.kvs[view->kvs.count++] = ev->kv;
	}
	memset(&ev->kv, 0, sizeof(ev->kv));
	if (revision > view->kvs.revision)
		view->kvs.revision = revision;
}

/* The leader's name, or "" when the key is absent. */
const char *
cluster_leader(const ClusterView *view)
{
	const EtcdKV *kv = cluster_get(view, "leader");

	return kv ? kv->value : "";
}

static double
json_number(const cJSON *obj, const char *name, double dflt)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsNumber(item) ? item->valuedouble : dflt;
}

/*
 * A number field as an integer in [lo, hi], else outside: a document with
 * "timeline": 2e48 made the double-to-integer conversion undefined (found
 * by fuzz_member).
 */
static int64
json_int_in(const cJSON *obj, const char *name, int64 lo, int64 hi, int64 dflt, int64 outside)
{
	double		v = json_number(obj, name, (double) dflt);

	if (!(v >= (double) lo && v <= (double) hi))
		return outside;			/* also NaN */
	return (int64) v;
}

static bool
json_flag(const cJSON *obj, const char *name)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsTrue(item) ||
		(cJSON_IsString(item) && strcmp(item->valuestring, "true") == 0);
}

static void
json_string(const cJSON *obj, const char *name, char *out, size_t len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	out[0] = '\0';
	if (cJSON_IsString(item) && strlen(item->valuestring) < len)
		strcpy(out, item->valuestring);
}

static bool
parse_member(const EtcdKV *kv, const char *name, MemberInfo *m)
{
	cJSON	   *doc = cJSON_ParseWithLength(kv->value, kv->value_len);
	const cJSON *tags;
	double		lsn;
	char		role[32];

	memset(m, 0, sizeof(*m));
	strlcpy(m->name, name, sizeof(m->name));
	m->mod_revision = kv->mod_revision;
	m->failover_priority = 1;
	m->sync_priority = 1;
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		return false;
	}
	json_string(doc, "role", role, sizeof(role));
	m->is_replica = strcmp(role, "replica") == 0;
	json_string(doc, "conn_url", m->conn_url, sizeof(m->conn_url));
	json_string(doc, "api_url", m->api_url, sizeof(m->api_url));
	{
		char		rstate[32];

		json_string(doc, "replication_state", rstate, sizeof(rstate));
		m->streaming = strcmp(rstate, "streaming") == 0;
	}
	lsn = json_number(doc, "xlog_location", -1);
	m->lsn = (lsn >= 0 && lsn < 1.8e19) ? (XLogRecPtr) lsn : InvalidXLogRecPtr;
	/* a timeline pg_ha cannot hold is unknown (0): never eligible */
	m->timeline = (TimeLineID) json_int_in(doc, "timeline", 0, PG_UINT32_MAX, 0, 0);
	tags = cJSON_GetObjectItemCaseSensitive(doc, "tags");
	if (cJSON_IsObject(tags))
	{
		m->nofailover = json_flag(tags, "nofailover");
		m->noloadbalance = json_flag(tags, "noloadbalance");
		/* out of the parameter's range: never preferred */
		m->failover_priority = (int) json_int_in(tags, "failover_priority", INT_MIN, INT_MAX, 1, 0);
		if (m->nofailover)
			m->failover_priority = 0;
		m->sync_priority = (int) json_number(tags, "sync_priority", 1);
		m->nosync = json_flag(tags, "nosync") || m->sync_priority <= 0;
		if (m->nosync)
			m->sync_priority = 0;
		json_string(tags, "replicatefrom", m->replicatefrom, sizeof(m->replicatefrom));
	}
	m->pending_restart = json_flag(doc, "pending_restart");
	{
		const cJSON *sr = cJSON_GetObjectItemCaseSensitive(doc, "scheduled_restart");

		if (cJSON_IsObject(sr))
			json_string(sr, "schedule", m->restart_schedule, sizeof(m->restart_schedule));
	}
	m->valid = m->lsn != InvalidXLogRecPtr && m->conn_url[0] != '\0';
	cJSON_Delete(doc);
	return m->valid;
}

int
cluster_members(const ClusterView *view, MemberInfo *out, int max)
{
	int			n = 0;

	for (int i = 0; i < view->kvs.count && n < max; i++)
	{
		const char *key = view->kvs.kvs[i].key;

		if (strlen(key) <= view->prefix_len + 8 ||
			strncmp(key + view->prefix_len, "members/", 8) != 0)
			continue;
		parse_member(&view->kvs.kvs[i], key + view->prefix_len + 8, &out[n]);
		n++;
	}
	return n;
}

bool
cluster_member(const ClusterView *view, const char *name, MemberInfo *out)
{
	char		suffix[PG_HA_NAME_LEN + 16];
	const EtcdKV *kv;

	snprintf(suffix, sizeof(suffix), "members/%s", name);
	kv = cluster_get(view, suffix);
	if (kv == NULL)
		return false;
	return parse_member(kv, name, out);
}

/* config key: {"pause": true} means maintenance mode. */
bool
cluster_paused(const ClusterView *view)
{
	const EtcdKV *kv = cluster_get(view, "config");
	cJSON	   *doc;
	bool		paused;

	if (kv == NULL)
		return false;
	doc = cJSON_ParseWithLength(kv->value, kv->value_len);
	paused = cJSON_IsObject(doc) && json_flag(doc, "pause");
	cJSON_Delete(doc);
	return paused;
}

/* status key {"optime": N}: the leader's last published position. */
XLogRecPtr
cluster_optime(const ClusterView *view)
{
	const EtcdKV *kv = cluster_get(view, "status");
	cJSON	   *doc;
	double		optime;

	if (kv == NULL)
		return InvalidXLogRecPtr;
	doc = cJSON_ParseWithLength(kv->value, kv->value_len);
	optime = cJSON_IsObject(doc) ? json_number(doc, "optime", 0) : 0;
	cJSON_Delete(doc);
	return (optime > 0 && optime < 1.8e19) ? (XLogRecPtr) optime : InvalidXLogRecPtr;
}

/*
 * The failover key through the one codec shared with the SQL functions and
 * pg_hactl.  A value the codec refuses is reported, never acted on: it can
 * neither promote anyone nor stop the worker (a malformed scheduled_at once
 * crash-looped it).
 */
ClusterRequestStatus
cluster_request(const ClusterView *view, HaRequest *req, int64 *mod_revision,
				char *err, size_t errlen)
{
	const EtcdKV *kv = cluster_get(view, "failover");

	memset(req, 0, sizeof(*req));
	*mod_revision = 0;
	if (err && errlen)
		err[0] = '\0';
	if (kv == NULL)
		return CLUSTER_REQUEST_NONE;
	*mod_revision = kv->mod_revision;
	if (!ha_request_decode(kv->value, kv->value_len, req, err, errlen))
		return CLUSTER_REQUEST_INVALID;
	return CLUSTER_REQUEST_VALID;
}

const char *
cluster_initialize(const ClusterView *view)
{
	const EtcdKV *kv = cluster_get(view, "initialize");

	return kv ? kv->value : NULL;
}

/*
 * history key: a JSON array of [timeline, switch_lsn, reason, time, leader]
 * entries, one per promotion (Patroni's layout).  Returns the timeline the
 * cluster is on according to it (last entry's timeline + 1), 0 if none.
 * When fork_lsn is not NULL it receives the switch point out of timeline tli.
 */
TimeLineID
cluster_history_timeline(const ClusterView *view, TimeLineID tli, XLogRecPtr *fork_lsn)
{
	const EtcdKV *kv = cluster_get(view, "history");
	cJSON	   *doc;
	const cJSON *entry;
	TimeLineID	latest = 0;

	if (fork_lsn)
		*fork_lsn = InvalidXLogRecPtr;
	if (kv == NULL)
		return 0;
	doc = cJSON_ParseWithLength(kv->value, kv->value_len);
	if (!cJSON_IsArray(doc))
	{
		cJSON_Delete(doc);
		return 0;
	}
	cJSON_ArrayForEach(entry, doc)
	{
		const cJSON *t = cJSON_GetArrayItem(entry, 0);
		const cJSON *l = cJSON_GetArrayItem(entry, 1);

		if (!cJSON_IsArray(entry) || !cJSON_IsNumber(t) || t->valuedouble < 1 ||
			t->valuedouble > 4294967294.0)
			continue;
		if ((TimeLineID) t->valuedouble + 1 > latest)
			latest = (TimeLineID) t->valuedouble + 1;
		if (fork_lsn && (TimeLineID) t->valuedouble == tli && cJSON_IsNumber(l) &&
			l->valuedouble >= 0 && l->valuedouble < 1.8e19)
			*fork_lsn = (XLogRecPtr) l->valuedouble;
	}
	cJSON_Delete(doc);
	return latest;
}

bool
cluster_members_json(const ClusterView *view, char *buf, size_t len)
{
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	int			n = cluster_members(view, members, PG_HA_MAX_MEMBERS);
	const char *leader = cluster_leader(view);
	XLogRecPtr	leader_lsn = InvalidXLogRecPtr;
	cJSON	   *arr = cJSON_CreateArray();
	char	   *text;
	bool		fits;
	const EtcdKV *sync_kv = cluster_get(view, "sync");
	SyncKey		sync;

	/* Patroni 4 names the standbys of the sync key by its role */
	if (sync_kv == NULL || !sync_key_parse(sync_kv->value, sync_kv->value_len, &sync) ||
		strcmp(sync.leader, leader) != 0)
		memset(&sync, 0, sizeof(sync));
	for (int i = 0; i < n; i++)
		if (strcmp(members[i].name, leader) == 0)
			leader_lsn = members[i].lsn;
	for (int i = 0; arr && i < n; i++)
	{
		const MemberInfo *m = &members[i];
		bool		is_leader = strcmp(m->name, leader) == 0;
		cJSON	   *o = cJSON_CreateObject();
		char		host[256] = "";
		const char *colon;
		const char *start = strstr(m->conn_url, "://");

		if (o == NULL)
			break;
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "name", m->name);
		cJSON_AddStringToObject(o, "role", is_leader ? "leader" :
								!m->is_replica ? "master" :
								!sync_names_contains(&sync.voters, m->name) ? "replica" :
								sync.quorum > 0 ? "quorum_standby" : "sync_standby");
		cJSON_AddStringToObject(o, "state", m->is_replica ? (m->streaming ? "streaming" : "running") : "running");
		if (m->api_url[0])
			cJSON_AddStringToObject(o, "api_url", m->api_url);
		if (start && (colon = strrchr(start + 3, ':')) != NULL && colon - (start + 3) < (long) sizeof(host))
		{
			snprintf(host, sizeof(host), "%.*s", (int) (colon - (start + 3)), start + 3);
			cJSON_AddStringToObject(o, "host", host);
			cJSON_AddNumberToObject(o, "port", atoi(colon + 1));
		}
		cJSON_AddNumberToObject(o, "timeline", m->timeline);
		if (!is_leader && leader_lsn != InvalidXLogRecPtr && m->lsn != InvalidXLogRecPtr)
			cJSON_AddNumberToObject(o, "lag", (double) (leader_lsn > m->lsn ? leader_lsn - m->lsn : 0));
		/* Patroni's optional attributes, from the member key */
		if (m->pending_restart)
			cJSON_AddBoolToObject(o, "pending_restart", true);
		if (m->restart_schedule[0])
			cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "scheduled_restart"), "schedule",
									m->restart_schedule);
		if (m->nofailover || m->noloadbalance || m->failover_priority != 1 ||
			m->nosync || m->sync_priority != 1 || m->replicatefrom[0])
		{
			cJSON	   *tags = cJSON_AddObjectToObject(o, "tags");

			if (m->nofailover)
				cJSON_AddBoolToObject(tags, "nofailover", true);
			if (m->noloadbalance)
				cJSON_AddBoolToObject(tags, "noloadbalance", true);
			cJSON_AddNumberToObject(tags, "failover_priority", m->failover_priority);
			if (m->nosync)
				cJSON_AddBoolToObject(tags, "nosync", true);
			if (m->nosync || m->sync_priority != 1)
				cJSON_AddNumberToObject(tags, "sync_priority", m->sync_priority);
			if (m->replicatefrom[0])
				cJSON_AddStringToObject(tags, "replicatefrom", m->replicatefrom);
		}
	}
	text = arr ? cJSON_PrintUnformatted(arr) : NULL;
	cJSON_Delete(arr);
	fits = text != NULL && strlen(text) < len;
	strlcpy(buf, fits ? text : "", len);
	if (text)
		cJSON_free(text);
	return fits;
}

void
cluster_last_leader(const ClusterView *view, char *out, size_t len)
{
	const EtcdKV *kv = cluster_get(view, "history");
	cJSON	   *doc;
	const cJSON *last;
	const cJSON *name;

	out[0] = '\0';
	if (kv == NULL)
		return;
	doc = cJSON_ParseWithLength(kv->value, kv->value_len);
	last = cJSON_IsArray(doc) ? cJSON_GetArrayItem(doc, cJSON_GetArraySize(doc) - 1) : NULL;
	name = cJSON_IsArray(last) ? cJSON_GetArrayItem(last, 4) : NULL;
	if (cJSON_IsString(name) && strlen(name->valuestring) < len)
		strcpy(out, name->valuestring);
	cJSON_Delete(doc);
}

/* The history value with one entry appended, palloc'd. */
char *
cluster_history_append(const ClusterView *view, TimeLineID old_tli, XLogRecPtr switch_lsn,
					   const char *reason, const char *when, const char *new_leader)
{
	const EtcdKV *kv = cluster_get(view, "history");
	cJSON	   *doc = kv ? cJSON_ParseWithLength(kv->value, kv->value_len) : NULL;
	cJSON	   *entry;
	char	   *text;
	char	   *result;

	if (!cJSON_IsArray(doc))
	{
		cJSON_Delete(doc);
		doc = cJSON_CreateArray();
	}
	entry = cJSON_CreateArray();
	cJSON_AddItemToArray(entry, cJSON_CreateNumber((double) old_tli));
	cJSON_AddItemToArray(entry, cJSON_CreateNumber((double) switch_lsn));
	cJSON_AddItemToArray(entry, cJSON_CreateString(reason));
	cJSON_AddItemToArray(entry, cJSON_CreateString(when));
	cJSON_AddItemToArray(entry, cJSON_CreateString(new_leader));
	cJSON_AddItemToArray(doc, entry);
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL)
		elog(ERROR, "out of memory building the history value");
	result = pstrdup(text);
	cJSON_free(text);
	return result;
}
