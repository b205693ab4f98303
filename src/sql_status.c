/*
 * sql_status.c - SQL functions that report state: pg_ha.status() from
 * shared memory, pg_ha.members() from etcd.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(pg_ha_status);
PG_FUNCTION_INFO_V1(pg_ha_members);

static const char *
role_name(PgHaRole role)
{
	switch (role)
	{
		case PG_HA_ROLE_PRIMARY:
			return "primary";
		case PG_HA_ROLE_REPLICA:
			return "replica";
		default:
			return "unknown";
	}
}

static void
require_preloaded(void)
{
	if (pg_ha_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha is not running on this server"),
				 errhint("Add pg_ha to shared_preload_libraries and restart the server.")));
}

/*
 * Synchronous mode: the configured mode; the standbys the current sync key
 * lists (NULL without a key) and since when this node has seen each
 * listed; on the leader, why commits wait for a standby (NULL when they
 * do not).
 */
static void
sync_columns(const PgHaShared *copy, Datum *values, bool *nulls)
{
	static const char *const modes[] = {"off", "on", "quorum", "strict"};
	int			n = Min(copy->sync_count, PG_HA_SYNC_MAX);
	Datum		names[PG_HA_SYNC_MAX];
	Datum		since[PG_HA_SYNC_MAX];

	values[0] = CStringGetTextDatum(copy->sync_mode >= 0 && copy->sync_mode < (int) lengthof(modes) ?
									modes[copy->sync_mode] : "unknown");
	for (int i = 0; i < n; i++)
	{
		names[i] = CStringGetTextDatum(copy->sync_names[i]);
		since[i] = TimestampTzGetDatum(copy->sync_since[i]);
	}
	nulls[1] = nulls[2] = copy->sync_leader[0] == '\0';
	if (!nulls[1])
	{
		values[1] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_array(since, n, TIMESTAMPTZOID, sizeof(TimestampTz),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}
	values[3] = CStringGetTextDatum(copy->sync_waiting);
	nulls[3] = copy->sync_waiting[0] == '\0';
}

/*
 * The settings this node runs on, each with its source: "config" (the
 * config key) or the GUC it fell back to; and the fields of the key that
 * were ignored, with why (ha_dynconf.c).
 */
static void
settings_column(const PgHaShared *copy, Datum *value, bool *isnull)
{
	DynSettings dyn;
	char		json[4096];

	if (copy->dyn_known)
		dyn = copy->dyn;
	else
		pg_ha_dyn_current(&dyn);
	*isnull = dynconf_json(&dyn, json, sizeof(json)) < 0;
	if (!*isnull)
		*value = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

Datum
pg_ha_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[22];
	bool		nulls[22];
	PgHaShared	copy;
	HaState		state;
	int64		deadline;
	int64		now;
	bool		lease_held;

	require_preloaded();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	memcpy(&copy, pg_ha_shared, sizeof(copy));
	LWLockRelease(pg_ha_shared->lock);
	state = (HaState) pg_atomic_read_u32(&pg_ha_shared->state);
	deadline = (int64) pg_atomic_read_u64(&pg_ha_shared->lease_deadline_us);
	now = pg_ha_monotonic_us();

	/*
	 * Held means write authority, the test the fence applies: the key is
	 * ours and the deadline minus the safety margin is still ahead.  The
	 * seconds left count down to that same instant (as the metric
	 * pg_ha_lease_remaining_seconds and the health checks do), not to the
	 * raw deadline, which lies one margin later.
	 */
	lease_held = copy.is_leader && pg_ha_lease_valid(now);

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(copy.node[0] ? copy.node : pg_ha_effective_node_name());
	values[1] = CStringGetTextDatum(copy.cluster[0] ? copy.cluster : pg_ha_effective_cluster());
	values[2] = CStringGetTextDatum(role_name(copy.role));
	values[3] = CStringGetTextDatum(ha_state_name(state));
	if (copy.leader_known && copy.leader[0])
		values[4] = CStringGetTextDatum(copy.leader);
	else
		nulls[4] = true;
	values[5] = BoolGetDatum(lease_held);
	if (deadline > 0)
		values[6] = Float8GetDatum(lease_held ?
								   (double) (deadline - pg_ha_lease_margin_us() - now) / 1000000.0 :
								   0.0);
	else
		nulls[6] = true;
	values[7] = Int32GetDatum((int32) copy.timeline);
	nulls[7] = (copy.timeline == 0);
	values[8] = LSNGetDatum(copy.lsn);
	nulls[8] = (copy.role == PG_HA_ROLE_UNKNOWN);
	values[9] = BoolGetDatum(copy.etcd_reachable);
	values[10] = CStringGetTextDatum(copy.etcd_endpoint);
	nulls[10] = (copy.etcd_endpoint[0] == '\0');
	values[11] = TimestampTzGetDatum(copy.etcd_last_ok);
	nulls[11] = (copy.etcd_last_ok == 0);
	values[12] = CStringGetTextDatum(copy.last_error);
	nulls[12] = (copy.last_error[0] == '\0');
	values[13] = Int32GetDatum((int32) copy.worker_pid);
	nulls[13] = (copy.worker_pid == 0);
	values[14] = BoolGetDatum(copy.paused);
	/* fenced as a backend would see it at commit; a standby cannot commit anyway */
	values[15] = BoolGetDatum(copy.role == PG_HA_ROLE_PRIMARY && pg_ha_fence_reason() != NULL);
	sync_columns(&copy, values + 16, nulls + 16);
	values[20] = BoolGetDatum(pg_ha_pending_restart());
	settings_column(&copy, values + 21, nulls + 21);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* A JSON text as jsonb, or NULL when it is not something jsonb accepts. */
static bool
json_to_jsonb(const cJSON *item, Datum *out)
{
	char	   *text = cJSON_PrintUnformatted(item);
	bool		ok = false;

	if (text == NULL)
		return false;
	if (pg_verifymbstr(text, strlen(text), true))
	{
		*out = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(text)));
		ok = true;
	}
	cJSON_free(text);
	return ok;
}

static bool
json_lsn(const cJSON *doc, const char *field, Datum *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, field);

	if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 1.8e19)
		return false;
	*out = LSNGetDatum((XLogRecPtr) item->valuedouble);
	return true;
}

static bool
json_text(const cJSON *doc, const char *field, Datum *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, field);

	if (!cJSON_IsString(item) || !pg_verifymbstr(item->valuestring, strlen(item->valuestring), true))
		return false;
	*out = CStringGetTextDatum(item->valuestring);
	return true;
}

static void
emit_member(ReturnSetInfo *rsinfo, const char *name, const char *value, size_t len,
			const char *leader)
{
	Datum		values[13];
	bool		nulls[13];
	cJSON	   *doc = cJSON_ParseWithLength(value, len);
	const cJSON *item;

	for (int i = 0; i < 13; i++)
		nulls[i] = true;
	values[0] = CStringGetTextDatum(name);
	nulls[0] = false;
	values[3] = BoolGetDatum(leader != NULL && strcmp(leader, name) == 0);
	nulls[3] = false;
	if (cJSON_IsObject(doc))
	{
		nulls[1] = !json_text(doc, "role", &values[1]);
		nulls[2] = !json_text(doc, "state", &values[2]);
		nulls[4] = !json_text(doc, "conn_url", &values[4]);
		nulls[5] = !json_text(doc, "api_url", &values[5]);
		item = cJSON_GetObjectItemCaseSensitive(doc, "timeline");
		if (cJSON_IsNumber(item) && item->valuedouble >= 0 && item->valuedouble < 4294967296.0)
		{
			values[6] = Int32GetDatum((int32) (uint32) item->valuedouble);
			nulls[6] = false;
		}
		nulls[7] = !json_lsn(doc, "xlog_location", &values[7]);
		nulls[8] = !json_lsn(doc, "receive_lsn", &values[8]);
		nulls[9] = !json_lsn(doc, "replay_lsn", &values[9]);
		nulls[10] = !json_text(doc, "replication_state", &values[10]);
		item = cJSON_GetObjectItemCaseSensitive(doc, "tags");
		if (cJSON_IsObject(item))
			nulls[11] = !json_to_jsonb(item, &values[11]);
		nulls[12] = !json_to_jsonb(doc, &values[12]);
	}
	else
		ereport(WARNING,
				(errmsg("pg_ha: member key of \"%s\" does not hold a JSON object", name)));
	cJSON_Delete(doc);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

Datum
pg_ha_members(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EtcdClient *client;
	char		err[ETCD_ERRMSG_LEN];
	char	   *leader_key = pg_ha_key("leader");
	char	   *members_prefix = pg_ha_key("members/");
	EtcdOp		ops[2] = {
		{ETCD_OP_RANGE, leader_key, NULL, 0, false},
		{ETCD_OP_RANGE, members_prefix, NULL, 0, true},
	};
	EtcdKVList	kvs;
	EtcdStatus	st;
	bool		succeeded;
	char	   *leader = NULL;
	size_t		prefix_len = strlen(members_prefix);

	InitMaterializedSRF(fcinfo, 0);

	client = pg_ha_backend_etcd_client();
	/* one snapshot of both: leader and members at the same revision */
	st = etcd_txn(client, NULL, 0, ops, 2, NULL, 0, &succeeded, &kvs);
	if (st != ETCD_OK)
	{
		strlcpy(err, etcd_last_error(client), sizeof(err));
		etcd_client_free(client);
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("pg_ha: cannot read members from etcd: %s", err)));
	}
	etcd_client_free(client);

	for (int i = 0; i < kvs.count; i++)
		if (strcmp(kvs.kvs[i].key, leader_key) == 0)
			leader = kvs.kvs[i].value;
	PG_TRY();
	{
		for (int i = 0; i < kvs.count; i++)
		{
			const char *key = kvs.kvs[i].key;

			if (strncmp(key, members_prefix, prefix_len) != 0 || key[prefix_len] == '\0')
				continue;
			if (!pg_verifymbstr(key + prefix_len, strlen(key + prefix_len), true))
				continue;
			emit_member(rsinfo, key + prefix_len, kvs.kvs[i].value, kvs.kvs[i].value_len, leader);
		}
	}
	PG_FINALLY();
	{
		etcd_kvlist_free(&kvs);
	}
	PG_END_TRY();
	return (Datum) 0;
}
