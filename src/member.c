/*
 * member.c - this node's position and its Patroni-compatible member
 * document (the value of /<namespace>/<cluster>/members/<name>).
 *
 * Field names and spellings follow Patroni 3.0.2, which HAProxy templates,
 * patronictl-style tooling and dashboards read: role is "master" on the
 * leader and "replica" on standbys; xlog_location is the byte position.
 */
#include "pg_ha.h"
#include "http_tls.h"

#include <cjson/cJSON.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "replication/walreceiver.h"
#include "storage/spin.h"

void
node_take_snapshot(NodeSnapshot *snap)
{
	memset(snap, 0, sizeof(*snap));
	snap->in_recovery = RecoveryInProgress();
	if (!snap->in_recovery)
	{
		/* flushed, not inserted: what a crash would keep */
		snap->lsn = GetFlushRecPtr(NULL);
		snap->timeline = GetWALInsertionTimeLine();
		return;
	}
	snap->replay_lsn = GetXLogReplayRecPtr(&snap->timeline);
	snap->receive_lsn = GetWalRcvFlushRecPtr(NULL, NULL);
	/* connected and streaming now, not merely trying to (WalRcvStreaming) */
	SpinLockAcquire(&WalRcv->mutex);
	snap->streaming = WalRcv->walRcvState == WALRCV_STREAMING;
	SpinLockRelease(&WalRcv->mutex);
	snap->lsn = Max(snap->replay_lsn, snap->receive_lsn);
}

static void
split_host_port(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon = strrchr(addr, ':');

	if (colon == NULL)
	{
		strlcpy(host, addr, hostlen);
		port[0] = '\0';
		return;
	}
	snprintf(host, hostlen, "%.*s", (int) (colon - addr), addr);
	strlcpy(port, colon + 1, portlen);
}

char *
member_document(const NodeSnapshot *snap, bool paused)
{
	char		connect[300];
	char		host[256];
	char		port[16];
	char		url[600];
	cJSON	   *doc = cJSON_CreateObject();
	const char *reason;
	char	   *text;
	char	   *result;
	char	   *scheduled;

	if (doc == NULL)
		elog(ERROR, "out of memory building the member document");

	pg_ha_effective_connect_address(connect, sizeof(connect));
	split_host_port(connect, host, sizeof(host), port, sizeof(port));
	snprintf(url, sizeof(url), "postgres://%s:%s/postgres", host, port);
	cJSON_AddStringToObject(doc, "conn_url", url);
	if (pg_ha_api_listen && pg_ha_api_listen[0])
	{
		char		lhost[256];
		char		lport[16];

		/* the API listens on api_listen but is reached at the connect host */
		split_host_port(pg_ha_api_listen, lhost, sizeof(lhost), lport, sizeof(lport));
		snprintf(url, sizeof(url), "%s://%s:%s/patroni", http_api_scheme(), host, lport);
		cJSON_AddStringToObject(doc, "api_url", url);
	}
	cJSON_AddStringToObject(doc, "state", "running");
	cJSON_AddStringToObject(doc, "role", snap->in_recovery ? "replica" : "master");
	cJSON_AddStringToObject(doc, "version", PG_HA_VERSION);
	/* Patroni's field: patronictl list marks such members, restart --pending acts on them */
	if (pg_ha_pending_restart())
		cJSON_AddBoolToObject(doc, "pending_restart", true);
	/* Patroni 4's: which settings, from what to what (patronictl list -e) */
	if ((reason = pg_ha_pending_restart_reason_text()) != NULL)
		cJSON_AddRawToObject(doc, "pending_restart_reason", reason);
	/*
	 * Patroni's field while the cluster is paused: "patronictl pause --wait"
	 * polls the member keys for it (and gives up after loop_wait + 1 s)
	 */
	if (paused)
		cJSON_AddBoolToObject(doc, "pause", true);
	/* patronictl list's "Scheduled restart" column, flush restart's test */
	if ((scheduled = pg_ha_restart_schedule_json(true)) != NULL)
		cJSON_AddRawToObject(doc, "scheduled_restart", scheduled);
	cJSON_AddNumberToObject(doc, "xlog_location", (double) snap->lsn);
	cJSON_AddNumberToObject(doc, "timeline", (double) snap->timeline);
	if (snap->in_recovery)
	{
		cJSON_AddNumberToObject(doc, "receive_lsn", (double) snap->receive_lsn);
		cJSON_AddNumberToObject(doc, "replay_lsn", (double) snap->replay_lsn);
		cJSON_AddStringToObject(doc, "replication_state",
								snap->streaming ? "streaming" : "in archive recovery");
	}
	text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (text == NULL)
		elog(ERROR, "out of memory building the member document");
	result = pstrdup(text);
	cJSON_free(text);
	return result;
}
