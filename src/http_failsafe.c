/*
 * http_failsafe.c - POST /failsafe on the API port: a leader that cannot
 * use etcd asks this member to confirm it (failsafe mode, ha_failsafe.c).
 *
 *   POST /failsafe?leader=<name>   Authorization: Basic (pg_ha.api_auth_file)
 *
 * 200 {"accepted":true,"promise_ms":P} records, before the answer leaves,
 * the promise "no race for the leader key for P ms from now" in shared
 * memory, under the same lock the HA worker takes before it races.
 * GET /failsafe shows the promise this node is bound by.
 * Anything else records nothing: 401 (no or wrong credentials), 403 (no
 * pg_ha.api_auth_file), 503 (failsafe_mode off, HA worker not running or
 * taking the key), 409 (this node may not confirm that leader: see
 * failsafe_answer), 400 (bad leader name).  The request body is not read:
 * the leader's name travels in the query string.
 *
 * The listener has no database connection and must never block: this is
 * one short locked section and no I/O.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"
#include "ha_failsafe.h"

#include <signal.h>

#include "access/xlog.h"

/*
 * Failsafe mode as this node runs it: the config key's failsafe_mode when
 * it sets one, else pg_ha.failsafe_mode.  The HA worker publishes a "true"
 * from the key only after it left the marker that makes a restart count as
 * a promise (shmem.c), so no promise given here outlives a restart unseen.
 */
static bool
failsafe_on(void)
{
	DynSettings dyn;

	pg_ha_dyn_current(&dyn);
	return dyn.failsafe_mode;
}

static void
answer(HttpResponse *resp, int status, const char *why, int64 promise_us)
{
	resp->status = status;
	resp->content_type = "application/json";
	if (status == 200)
		appendStringInfo(resp->body, "{\"accepted\":true,\"promise_ms\":" INT64_FORMAT "}",
						 promise_us / 1000);
	else
		appendStringInfo(resp->body, "{\"accepted\":false,\"reason\":\"%s\"}", why);
}

/*
 * Asks failsafe_answer() and records the promise in one locked section, so
 * the worker's "promise binding? else claim the key" (ha_worker.c) sees
 * either the promise or nothing, never half of it.
 */
static int
confirm(const char *leader, const char **why, int64 *promise_us)
{
	FailsafeAsk ask;
	char		self[PG_HA_NAME_LEN];
	char		known[PG_HA_NAME_LEN];
	pid_t		pid;
	int			status;
	int64		now;

	memset(&ask, 0, sizeof(ask));
	/*
	 * pg_ha.ttl, not the config key's ttl: the promise a restart stands
	 * for (shmem.c) is pg_ha.ttl long, so no promise may be longer.  The
	 * leader extends by the smaller of this and its own TTL (ha_failsafe.c),
	 * so a key with a longer ttl only makes the extensions shorter.
	 */
	*promise_us = (int64) pg_ha_ttl * 1000000;
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pid = pg_ha_shared->worker_pid;
	strlcpy(self, pg_ha_shared->node, sizeof(self));
	strlcpy(known, pg_ha_shared->leader, sizeof(known));
	ask.from = leader;
	ask.self = self;
	ask.role = pg_ha_shared->role == PG_HA_ROLE_UNKNOWN ? PG_HA_ROLE_UNKNOWN :
		RecoveryInProgress() ? PG_HA_ROLE_REPLICA : PG_HA_ROLE_PRIMARY;
	ask.worker_running = pid != 0 && kill(pid, 0) == 0;
	ask.key_claimed = pg_ha_shared->failsafe_key_claimed;
	ask.leader_known = pg_ha_shared->leader_known;
	ask.leader = known;
	status = failsafe_answer(&ask, why);
	if (status == 200)
	{
		now = pg_ha_monotonic_us();
		strlcpy(pg_ha_shared->failsafe_leader, leader, sizeof(pg_ha_shared->failsafe_leader));
		pg_ha_shared->failsafe_until_us = Max(pg_ha_shared->failsafe_until_us,
											  now + *promise_us);
	}
	LWLockRelease(pg_ha_shared->lock);
	return status;
}

/*
 * GET /failsafe: the promise this node is bound by, for operators and
 * tests: {"leader":"<name>","promise_ms_left":N}.  Nothing secret; no
 * authentication, like the other GET endpoints.
 */
static void
show_promise(HttpResponse *resp)
{
	char		leader[PG_HA_NAME_LEN];
	int64		until;
	int64		left;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	strlcpy(leader, pg_ha_shared->failsafe_leader, sizeof(leader));
	until = pg_ha_shared->failsafe_until_us;
	LWLockRelease(pg_ha_shared->lock);
	left = Max(0, until - pg_ha_monotonic_us());
	resp->status = 200;
	resp->content_type = "application/json";
	appendStringInfo(resp->body, "{\"failsafe_mode\":%s,\"leader\":\"%s\",\"promise_ms_left\":" INT64_FORMAT "}",
					 failsafe_on() ? "true" : "false", leader, left / 1000);
}

bool
failsafe_http_handle(const HttpRequest *req, HttpResponse *resp)
{
	char		raw[HTTP_MAX_URL + 1];
	char		leader[PG_HA_NAME_LEN];
	const char *why = NULL;
	int64		promise_us = 0;
	int			status;

	if (strcmp(req->path, "/failsafe") != 0 || req->method_name == NULL)
		return false;
	if (req->method == HTTP_M_GET)
	{
		show_promise(resp);
		return true;
	}
	if (strcmp(req->method_name, "POST") != 0)
		return false;
	if (!http_api_auth_check(req, resp))
		return true;
	if (!failsafe_on())
	{
		answer(resp, 503, "failsafe_mode is off on this node", 0);
		return true;
	}
	if (!http_query_get(req->query, "leader", raw, sizeof(raw)) ||
		strlen(raw) >= sizeof(leader) ||
		pg_ha_name_problem(raw, "leader") != NULL)
	{
		answer(resp, 400, "bad or missing leader name", 0);
		return true;
	}
	strlcpy(leader, raw, sizeof(leader));
	status = confirm(leader, &why, &promise_us);
	answer(resp, status, why, promise_us);
	return true;
}
