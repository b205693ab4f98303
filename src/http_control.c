/*
 * http_control.c - Patroni's REST control API on pg_ha.api_listen, the
 * listener's side.
 *
 * The listener answers from shared memory and never waits on etcd (see
 * http_listener.c), so a request that changes the cluster is handed to the
 * control worker (control_worker.c) through the one slot in shared memory
 * (ControlSlot, pg_ha.h), and its connection is parked until the answer is
 * there or CONTROL_WAIT_US ran out.  What needs no etcd is answered here.
 *
 * Every unsafe method needs HTTP basic auth with a line of
 * pg_ha.api_auth_file (http_auth.c): 401 with a challenge without it, 403
 * when no file is configured.  Authentication comes first, before the body
 * is looked at, so nothing about the request is revealed without it.
 *
 *   method  path            what                         where
 *   GET     /config         the config key               shared memory (HA worker's copy)
 *   GET     /history        the history key              shared memory
 *   PATCH   /config         merge (patroni_codec.c)      control worker
 *   PUT     /config         replace                      control worker
 *   POST    /switchover     switchover request           control worker (sql_control.c)
 *   POST    /failover       failover request             control worker
 *   DELETE  /switchover     cancel a pending request     control worker
 *   POST    /reload         SIGHUP to the postmaster     here
 *   POST    /restart        restart, now or scheduled    control worker (ha_restart.c)
 *   DELETE  /restart        delete the scheduled restart control worker
 *   POST    /reinitialize   re-clone (ha_reinit.c)       control worker
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"
#include "patroni_codec.h"

#include <signal.h>

#include "miscadmin.h"
#include "postmaster/postmaster.h"

typedef enum ControlAction
{
	ACT_GET_CONFIG,
	ACT_GET_HISTORY,
	ACT_RELOAD,
	ACT_NOT_BUILT,
	ACT_WORKER					/* handed to the control worker as kind */
} ControlAction;

typedef struct ControlRoute
{
	const char *method;
	const char *path;
	ControlAction action;
	ControlKind kind;			/* ACT_WORKER only */
	bool		needs_body;		/* a JSON object body is required */
} ControlRoute;

static const ControlRoute control_routes[] = {
	{"GET", "/config", ACT_GET_CONFIG, 0, false},
	{"GET", "/history", ACT_GET_HISTORY, 0, false},
	{"PATCH", "/config", ACT_WORKER, CONTROL_PATCH_CONFIG, true},
	{"PUT", "/config", ACT_WORKER, CONTROL_PUT_CONFIG, true},
	{"POST", "/switchover", ACT_WORKER, CONTROL_SWITCHOVER, true},
	{"POST", "/failover", ACT_WORKER, CONTROL_FAILOVER, true},
	{"DELETE", "/switchover", ACT_WORKER, CONTROL_CANCEL_SWITCHOVER, false},
	{"POST", "/reload", ACT_RELOAD, 0, false},
	{"POST", "/restart", ACT_WORKER, CONTROL_RESTART, false},
	{"DELETE", "/restart", ACT_WORKER, CONTROL_CANCEL_RESTART, false},
	{"POST", "/reinitialize", ACT_WORKER, CONTROL_REINITIALIZE, false},
	{"POST", "/sigterm", ACT_NOT_BUILT, 0, false},
	{"POST", "/citus", ACT_NOT_BUILT, 0, false},
};

/*
 * Paths of the control API: any other method on them still needs
 * authentication first, then gets 405 (nothing unsafe is served without
 * credentials, not even a refusal that says what exists).
 */
static bool
is_control_path(const char *path)
{
	for (size_t i = 0; i < lengthof(control_routes); i++)
		if (strcmp(path, control_routes[i].path) == 0)
			return true;
	return false;
}

static void
answer_text(HttpResponse *resp, int status, const char *text)
{
	resp->status = status;
	resp->content_type = "text/plain; charset=utf-8";
	appendStringInfoString(resp->body, text);
}

/* GET /config and /history: the HA worker's copy of the key. */
static void
answer_key(HttpResponse *resp, bool config)
{
	char	   *value = palloc(PG_HA_KEY_JSON_LEN);
	bool		known;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	known = pg_ha_shared->keys_known;
	memcpy(value, config ? pg_ha_shared->config_json : pg_ha_shared->history_json,
		   PG_HA_KEY_JSON_LEN);
	LWLockRelease(pg_ha_shared->lock);
	value[PG_HA_KEY_JSON_LEN - 1] = '\0';

	resp->content_type = "application/json";
	if (!config)
	{
		/* Patroni: the history's lines, or [] */
		resp->status = 200;
		appendStringInfoString(resp->body, patroni_is_json_array(value, strlen(value)) ? value : "[]");
	}
	else if (!known)
		answer_text(resp, 503, "the cluster has not been read from etcd yet\n");
	else if (!patroni_config_check_object(value, strlen(value), NULL, 0))
		/* Patroni: send_error(502) when there is no config */
		answer_text(resp, 502, "the cluster has no config key\n");
	else
	{
		resp->status = 200;
		appendStringInfoString(resp->body, value);
	}
	pfree(value);
}

/*
 * Queues req in the control slot; false (503 answered) when another
 * request holds it or the control worker is not running.
 */
static bool
submit(const ControlRoute *route, const HttpRequest *req, HttpResponse *resp)
{
	ControlSlot *slot = &pg_ha_shared->control;
	Latch	   *latch = NULL;
	bool		queued = false;
	bool		running;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	running = slot->worker_pid != 0 && kill(slot->worker_pid, 0) == 0;
	if (running && slot->phase == CONTROL_FREE)
	{
		slot->phase = CONTROL_QUEUED;
		slot->kind = route->kind;
		slot->seq++;
		slot->abandoned = false;
		slot->status = 0;
		memcpy(slot->text, req->body ? req->body : "", req->body_len);
		slot->text[req->body_len] = '\0';
		latch = slot->worker_latch;
		resp->control_seq = slot->seq;
		queued = true;
	}
	LWLockRelease(pg_ha_shared->lock);
	if (latch)
		SetLatch(latch);
	if (!queued)
		answer_text(resp, 503, running ? "another control request is in progress, retry later\n" :
					"the pg_ha control worker is not running\n");
	return queued;
}

/* POST /reload: what pg_ctl reload does; Patroni answers 202. */
static void
reload(HttpResponse *resp)
{
	if (kill(PostmasterPid, SIGHUP) != 0)
	{
		answer_text(resp, 500, "could not signal the postmaster\n");
		return;
	}
	ereport(LOG, (errmsg("pg_ha: configuration reload requested over the API")));
	answer_text(resp, 202, "reload scheduled");
}

static const ControlRoute *
find_route(const HttpRequest *req)
{
	for (size_t i = 0; i < lengthof(control_routes); i++)
		if (strcmp(req->method_name, control_routes[i].method) == 0 &&
			strcmp(req->path, control_routes[i].path) == 0)
			return &control_routes[i];
	return NULL;
}

bool
http_control_handle(const HttpRequest *req, HttpResponse *resp)
{
	const ControlRoute *route;

	if (req->method_name == NULL || !is_control_path(req->path))
		return false;
	if (req->method == HTTP_M_HEAD || req->method == HTTP_M_OPTIONS)
		return false;			/* health.c: status line only */
	route = find_route(req);
	if (route != NULL && route->action == ACT_GET_CONFIG)
	{
		answer_key(resp, true);
		return true;
	}
	if (route != NULL && route->action == ACT_GET_HISTORY)
	{
		answer_key(resp, false);
		return true;
	}
	if (req->method == HTTP_M_GET)
		return false;
	if (!http_api_auth_check(req, resp))
		return true;
	if (route == NULL)
	{
		resp->status = 405;
		return true;
	}
	if (req->body_truncated || req->body_len >= PG_HA_CONTROL_TEXT_LEN)
	{
		answer_text(resp, 413, "the request body is too large\n");
		return true;
	}
	if (route->needs_body && req->body_len == 0)
	{
		answer_text(resp, 400, "this request needs a JSON object body\n");
		return true;
	}
	switch (route->action)
	{
		case ACT_RELOAD:
			reload(resp);
			break;
		case ACT_NOT_BUILT:
			answer_text(resp, 501, "pg_ha does not serve this request yet; see docs/http-api.md\n");
			break;
		case ACT_WORKER:
			if (submit(route, req, resp))
				resp->defer_control = true;
			break;
		default:
			break;
	}
	return true;
}

/*
 * The parked request seq: true when it is answered (resp filled, slot
 * freed), or given up at timed_out (503, the worker frees the slot when it
 * finishes).
 */
bool
http_control_poll(uint64 seq, bool timed_out, HttpResponse *resp)
{
	ControlSlot *slot = &pg_ha_shared->control;
	bool		done = false;
	bool		mine;

	/* polled every few ms while it runs: the exclusive lock only to finish */
	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	mine = slot->seq == seq && slot->phase != CONTROL_FREE;
	done = mine && slot->phase == CONTROL_DONE;
	LWLockRelease(pg_ha_shared->lock);
	if (mine && !done && !timed_out)
		return false;
	done = false;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	mine = slot->seq == seq && slot->phase != CONTROL_FREE;
	if (mine && slot->phase == CONTROL_DONE)
	{
		resp->status = slot->status;
		resp->content_type = slot->answer_json ? "application/json" : "text/plain; charset=utf-8";
		appendStringInfoString(resp->body, slot->text);
		slot->phase = CONTROL_FREE;
		done = true;
	}
	else if (mine && timed_out)
		slot->abandoned = true;
	LWLockRelease(pg_ha_shared->lock);
	if (done)
		return true;
	if (!mine || timed_out)
	{
		answer_text(resp, 503, mine ? "status unknown: the request is still running\n" :
					"the control worker restarted; the outcome is unknown\n");
		return true;
	}
	return false;
}

/* The client of request seq went away: nobody will read its answer. */
void
http_control_abandon(uint64 seq)
{
	ControlSlot *slot = &pg_ha_shared->control;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (slot->seq == seq && slot->phase == CONTROL_DONE)
		slot->phase = CONTROL_FREE;
	else if (slot->seq == seq && slot->phase != CONTROL_FREE)
		slot->abandoned = true;
	LWLockRelease(pg_ha_shared->lock);
}

/*
 * A listener that starts (again) waits for nobody: a request left queued
 * or running is abandoned, an answer nobody will read is dropped.
 */
void
http_control_listener_started(void)
{
	ControlSlot *slot = &pg_ha_shared->control;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (slot->phase == CONTROL_DONE)
		slot->phase = CONTROL_FREE;
	else if (slot->phase != CONTROL_FREE)
		slot->abandoned = true;
	LWLockRelease(pg_ha_shared->lock);
}
