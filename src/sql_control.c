/*
 * sql_control.c - SQL functions that change the cluster: switchover,
 * failover, pause and resume.
 *
 * They talk to etcd only; the HA workers act on what they write:
 *   - switchover and failover write the `failover` key (Patroni's format:
 *     {"leader": ..., "member": ..., "scheduled_at": ...}) and wait for the
 *     named member to become leader;
 *   - pause and resume set "pause" in the `config` key.
 * Every argument is checked against the cluster as etcd shows it before
 * anything is written, and each refusal says why.  None of these functions
 * is executable by PUBLIC.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "ha_cluster.h"

PG_FUNCTION_INFO_V1(pg_ha_switchover);
PG_FUNCTION_INFO_V1(pg_ha_failover);
PG_FUNCTION_INFO_V1(pg_ha_pause);
PG_FUNCTION_INFO_V1(pg_ha_resume);

#define CONTROL_WAIT_SECONDS 60

static int
backend_abort_check(void *arg)
{
	return InterruptPending ? 1 : 0;
}

/* An etcd client for a backend: bounded, interruptible; ERROR if it cannot be made. */
EtcdClient *
pg_ha_backend_etcd_client(void)
{
	EtcdConfig	config;
	char		err[ETCD_ERRMSG_LEN];
	EtcdClient *client;

	if (!pg_ha_etcd_config(&config, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: %s", err)));
	client = etcd_client_new(&config, err, sizeof(err));
	if (client == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("pg_ha: cannot create etcd client: %s", err)));
	etcd_client_set_abort_check(client, backend_abort_check, NULL);
	return client;
}

static void etcd_fail(EtcdClient *client, const char *what) pg_attribute_noreturn();

static void
etcd_fail(EtcdClient *client, const char *what)
{
	char		err[ETCD_ERRMSG_LEN];

	strlcpy(err, etcd_last_error(client), sizeof(err));
	etcd_client_free(client);
	CHECK_FOR_INTERRUPTS();
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("pg_ha: cannot %s: %s", what, err)));
}

/* Loads the cluster's keys into view; the client is freed on error. */
static void
read_cluster(EtcdClient *client, ClusterView *view)
{
	char	   *prefix = pg_ha_key("");
	EtcdKVList	kvs;
	EtcdStatus	st;

	memset(view, 0, sizeof(*view));
	st = etcd_get(client, prefix, true, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
		etcd_fail(client, "read the cluster from etcd");
	cluster_load(view, &kvs, strlen(prefix));
}

static void refuse(EtcdClient *client, ClusterView *view, int code, const char *msg,
				   const char *detail) pg_attribute_noreturn();

static void
refuse(EtcdClient *client, ClusterView *view, int code, const char *msg, const char *detail)
{
	char	   *m = pstrdup(msg);
	char	   *d = detail ? pstrdup(detail) : NULL;

	cluster_reset(view);
	etcd_client_free(client);
	ereport(ERROR, (errcode(code), errmsg("pg_ha: %s", m), d ? errdetail("%s", d) : 0));
}

static const char *
json_escape_name(const char *name)
{
	/* names are checked to be [A-Za-z0-9_.-] before they get here */
	return name;
}

static bool
valid_member_name(const char *name)
{
	if (name[0] == '\0' || strlen(name) >= PG_HA_NAME_LEN)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			return false;
	return true;
}

/*
 * Waits until member is the leader and says so in its member key, the
 * request was aborted, or the time runs out.  Returns NULL on success or
 * the reason of failure.
 */
static const char *
wait_for_leader(EtcdClient *client, const char *member)
{
	int64		give_up = pg_ha_monotonic_us() + (int64) CONTROL_WAIT_SECONDS * 1000000;

	for (;;)
	{
		ClusterView view;
		MemberInfo	m;
		const EtcdKV *fo;
		bool		done;

		CHECK_FOR_INTERRUPTS();
		read_cluster(client, &view);
		fo = cluster_get(&view, "failover");
		if (fo && strstr(fo->value, "\"aborted\"") != NULL)
		{
			char	   *reason = pstrdup(fo->value);

			etcd_delete(client, pg_ha_key("failover"), false);
			cluster_reset(&view);
			return psprintf("the leader abandoned it: %s", reason);
		}
		done = strcmp(cluster_leader(&view), member) == 0 &&
			cluster_member(&view, member, &m) && !m.is_replica;
		cluster_reset(&view);
		if (done)
			return NULL;
		if (pg_ha_monotonic_us() > give_up)
			return psprintf("\"%s\" did not become leader within %d s", member, CONTROL_WAIT_SECONDS);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Is this failover key a request some node still acts on?  A note left by
 * a leader that stopped cleanly (no member) or an abandoned request is not.
 */
static bool
failover_key_pending(const char *value, size_t len)
{
	cJSON	   *doc = cJSON_ParseWithLength(value, len);
	const cJSON *member = cJSON_GetObjectItemCaseSensitive(doc, "member");
	bool		pending = cJSON_IsObject(doc) && cJSON_IsString(member) &&
		member->valuestring[0] != '\0' &&
		cJSON_GetObjectItemCaseSensitive(doc, "aborted") == NULL;

	cJSON_Delete(doc);
	return pending;
}

/*
 * Create the failover key with value; refuses (and frees the client) when
 * a pending request exists: one switchover or failover at a time.
 */
static void
write_failover_request(EtcdClient *client, const char *value, const char *what)
{
	EtcdKV		existing;
	EtcdStatus	st = etcd_create(client, pg_ha_key("failover"), value, 0, &existing);

	if (st == ETCD_NOT_FOUND && existing.key &&
		!failover_key_pending(existing.value, existing.value_len))
	{
		/* replace a stale note, unless someone else just did */
		EtcdCompare cmp = {existing.key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, existing.mod_revision};
		EtcdOp		put = {ETCD_OP_PUT, existing.key, value, 0, false};
		bool		replaced;

		st = etcd_txn(client, &cmp, 1, &put, 1, NULL, 0, &replaced, NULL);
		if (st == ETCD_OK && !replaced)
			st = ETCD_NOT_FOUND;
	}
	etcd_kv_free(&existing);
	if (st == ETCD_NOT_FOUND)
	{
		etcd_client_free(client);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("pg_ha: %s refused: a switchover or failover is already in progress", what)));
	}
	if (st != ETCD_OK)
		etcd_fail(client, "write the failover key");
}

/* The most advanced eligible replica, for a switchover without candidate. */
static bool
pick_candidate(ClusterView *view, const char *leader, MemberInfo *best)
{
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	int			n = cluster_members(view, members, PG_HA_MAX_MEMBERS);
	bool		found = false;

	for (int i = 0; i < n; i++)
	{
		if (!members[i].valid || !members[i].is_replica || members[i].nofailover ||
			members[i].failover_priority <= 0 || strcmp(members[i].name, leader) == 0)
			continue;
		if (!found || failover_better(&members[i], best))
			*best = members[i];
		found = true;
	}
	return found;
}

Datum
pg_ha_switchover(PG_FUNCTION_ARGS)
{
	char	   *candidate = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		scheduled = !PG_ARGISNULL(1);
	TimestampTz at = scheduled ? PG_GETARG_TIMESTAMPTZ(1) : 0;
	EtcdClient *client;
	ClusterView view;
	MemberInfo	cand;
	MemberInfo	lead;
	char		leader[PG_HA_NAME_LEN];
	char		value[512];
	const char *failure;

	if (candidate != NULL && !valid_member_name(candidate))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: invalid member name \"%s\"", candidate)));
	if (scheduled && TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: scheduled_at must be a finite time")));

	client = pg_ha_backend_etcd_client();
	read_cluster(client, &view);
	if (cluster_paused(&view))
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   "switchover refused: the cluster is paused", "Run pg_ha.resume() first.");
	strlcpy(leader, cluster_leader(&view), sizeof(leader));
	if (leader[0] == '\0')
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   "switchover refused: the cluster has no leader",
			   "Use pg_ha.failover(candidate) when there is no healthy leader.");
	if (cluster_get(&view, "failover") != NULL &&
		failover_key_pending(cluster_get(&view, "failover")->value,
							 cluster_get(&view, "failover")->value_len))
		refuse(client, &view, ERRCODE_OBJECT_IN_USE,
			   "switchover refused: a switchover or failover is already in progress",
			   psprintf("The failover key holds %s.", cluster_get(&view, "failover")->value));
	if (candidate == NULL)
	{
		if (!pick_candidate(&view, leader, &cand))
			refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				   "switchover refused: no replica can take over", NULL);
		candidate = pstrdup(cand.name);
	}
	else if (!cluster_member(&view, candidate, &cand))
		refuse(client, &view, ERRCODE_UNDEFINED_OBJECT,
			   psprintf("switchover refused: no member named \"%s\"", candidate), NULL);
	if (strcmp(candidate, leader) == 0)
		refuse(client, &view, ERRCODE_INVALID_PARAMETER_VALUE,
			   psprintf("switchover refused: \"%s\" is already the leader", candidate), NULL);
	if (!cand.is_replica)
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("switchover refused: \"%s\" is not a running replica", candidate), NULL);
	if (cand.nofailover || cand.failover_priority <= 0)
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("switchover refused: \"%s\" is tagged nofailover", candidate), NULL);
	/*
	 * Lag is judged by the leader at hand-over time from its walsender
	 * (member keys are published seconds apart and would misjudge a busy
	 * cluster); here only a candidate that is not streaming is refused.
	 */
	if (!cand.streaming && cluster_member(&view, leader, &lead) && lead.lsn > cand.lsn &&
		lead.lsn - cand.lsn > (uint64) pg_ha_maximum_lag_on_failover * 1024)
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("switchover refused: \"%s\" is lagging", candidate),
			   psprintf("It is not streaming and %llu bytes behind the leader; pg_ha.maximum_lag_on_failover is %d kB.",
						(unsigned long long) (lead.lsn - cand.lsn), pg_ha_maximum_lag_on_failover));
	if (!cand.streaming)
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("switchover refused: \"%s\" is not streaming from the leader", candidate),
			   "A replica that is not connected would keep the cluster fenced while it catches up.");
	cluster_reset(&view);

	if (scheduled && at > GetCurrentTimestamp())
		snprintf(value, sizeof(value), "{\"leader\":\"%s\",\"member\":\"%s\",\"scheduled_at\":\"%s\"}",
				 json_escape_name(leader), json_escape_name(candidate), timestamptz_to_str(at));
	else
	{
		scheduled = false;
		snprintf(value, sizeof(value), "{\"leader\":\"%s\",\"member\":\"%s\"}",
				 json_escape_name(leader), json_escape_name(candidate));
	}
	write_failover_request(client, value, "switchover");
	if (scheduled)
	{
		etcd_client_free(client);
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("switchover from \"%s\" to \"%s\" scheduled at %s",
												  leader, candidate, timestamptz_to_str(at))));
	}

	/* on the old leader this session ends with the hand-over: say so first */
	if (strcmp(leader, pg_ha_effective_node_name()) == 0)
		ereport(NOTICE,
				(errmsg("pg_ha: this node is the leader: it restarts as a standby of \"%s\", which ends this session",
						candidate)));
	failure = wait_for_leader(client, candidate);
	etcd_client_free(client);
	if (failure)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha: switchover to \"%s\" failed: %s", candidate, failure)));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("switched over from \"%s\" to \"%s\"", leader, candidate)));
}

Datum
pg_ha_failover(PG_FUNCTION_ARGS)
{
	char	   *candidate;
	EtcdClient *client;
	ClusterView view;
	MemberInfo	cand;
	char		value[256];
	const char *failure;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pg_ha: failover needs a candidate")));
	candidate = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!valid_member_name(candidate))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_ha: invalid member name \"%s\"", candidate)));

	client = pg_ha_backend_etcd_client();
	read_cluster(client, &view);
	if (cluster_leader(&view)[0] != '\0')
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("failover refused: \"%s\" is a healthy leader", cluster_leader(&view)),
			   "Use pg_ha.switchover() to move leadership away from a running leader.");
	if (!cluster_member(&view, candidate, &cand))
		refuse(client, &view, ERRCODE_UNDEFINED_OBJECT,
			   psprintf("failover refused: no member named \"%s\"", candidate), NULL);
	if (!cand.is_replica)
		refuse(client, &view, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			   psprintf("failover refused: \"%s\" is not a running replica", candidate), NULL);
	cluster_reset(&view);

	snprintf(value, sizeof(value), "{\"member\":\"%s\"}", json_escape_name(candidate));
	write_failover_request(client, value, "failover");
	failure = wait_for_leader(client, candidate);
	etcd_client_free(client);
	if (failure)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha: failover to \"%s\" failed: %s", candidate, failure)));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("failed over to \"%s\"", candidate)));
}

/* Sets "pause" in the config key, keeping its other fields. */
static void
set_pause(bool pause)
{
	EtcdClient *client = pg_ha_backend_etcd_client();
	char	   *key = pg_ha_key("config");
	EtcdKVList	kvs;
	EtcdStatus	st;
	cJSON	   *doc = NULL;
	char	   *text;
	EtcdCompare cmp = {key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, 0};
	EtcdOp		put = {ETCD_OP_PUT, key, NULL, 0, false};
	bool		succeeded;

	st = etcd_get(client, key, false, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
		etcd_fail(client, "read the config key");
	if (kvs.count > 0)
	{
		doc = cJSON_ParseWithLength(kvs.kvs[0].value, kvs.kvs[0].value_len);
		cmp.number = kvs.kvs[0].mod_revision;
	}
	else
		cmp.target = ETCD_CMP_CREATE;
	etcd_kvlist_free(&kvs);
	if (!cJSON_IsObject(doc))
	{
		cJSON_Delete(doc);
		doc = cJSON_CreateObject();
	}
	cJSON_DeleteItemFromObjectCaseSensitive(doc, "pause");
	cJSON_AddBoolToObject(doc, "pause", pause);
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL)
	{
		etcd_client_free(client);
		elog(ERROR, "out of memory");
	}
	put.value = text;
	st = etcd_txn(client, &cmp, 1, &put, 1, NULL, 0, &succeeded, NULL);
	cJSON_free(text);
	if (st != ETCD_OK)
		etcd_fail(client, "write the config key");
	etcd_client_free(client);
	if (!succeeded)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("pg_ha: the config key changed concurrently, try again")));
}

Datum
pg_ha_pause(PG_FUNCTION_ARGS)
{
	set_pause(true);
	ereport(NOTICE, (errmsg("pg_ha: cluster paused: no automatic failover or demotion until pg_ha.resume()")));
	PG_RETURN_VOID();
}

Datum
pg_ha_resume(PG_FUNCTION_ARGS)
{
	set_pause(false);
	PG_RETURN_VOID();
}
