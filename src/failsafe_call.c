/*
 * failsafe_call.c - the leader's side of failsafe mode: one round of POST
 * /failsafe to every member at once (curl multi), from the HA worker.
 *
 * The round is bounded by timeout_ms as a whole, far below a third of the
 * TTL, so the worker's cycle stays short; an answer that misses the bound
 * counts as none (ha_failsafe.c: a late answer is never used).  The
 * credentials are the first line of pg_ha.api_auth_file, read for each
 * round (a reload takes effect at once) and wiped after; never logged.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"
#include "ha_failsafe.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "storage/fd.h"

#define ANSWER_MAX 4096

typedef struct Call
{
	CURL	   *curl;
	char		url[FAILSAFE_URL_LEN + PG_HA_NAME_LEN + 32];
	char		body[ANSWER_MAX + 1];
	size_t		len;
} Call;

static size_t
collect(char *data, size_t size, size_t nmemb, void *arg)
{
	Call	   *call = arg;
	size_t		n = size * nmemb;

	if (call->len + n > ANSWER_MAX)
		return 0;				/* too long: fail the transfer */
	memcpy(call->body + call->len, data, n);
	call->len += n;
	call->body[call->len] = '\0';
	return n;
}

/* "user:password" from the first line of pg_ha.api_auth_file. */
static bool
read_credentials(char *user, size_t ulen, char *password, size_t plen)
{
	FILE	   *f = AllocateFile(pg_ha_api_auth_file, "r");
	char		line[1024];
	char	   *colon = NULL;

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] != '\0' && line[0] != '#')
		{
			colon = strchr(line, ':');
			break;
		}
	}
	FreeFile(f);
	if (colon != NULL)
	{
		*colon = '\0';
		strlcpy(user, line, ulen);
		strlcpy(password, colon + 1, plen);
	}
	explicit_bzero(line, sizeof(line));
	return colon != NULL;
}

/* scheme://host:port of an api_url such as "http://h:8008/patroni" */
static void
api_base(const char *api_url, char *out, size_t len)
{
	const char *slash = strstr(api_url, "://");

	strlcpy(out, api_url, len);
	slash = slash ? strchr(slash + 3, '/') : NULL;
	if (slash != NULL && (size_t) (slash - api_url) < len)
		out[slash - api_url] = '\0';
}

static void
setup_call(Call *call, const char *leader, const FailsafeMember *m, int timeout_ms,
		   const char *user, const char *password)
{
	char		base[FAILSAFE_URL_LEN];

	api_base(m->api_url, base, sizeof(base));
	snprintf(call->url, sizeof(call->url), "%s/failsafe?leader=%s", base, leader);
	curl_easy_setopt(call->curl, CURLOPT_URL, call->url);
	curl_easy_setopt(call->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(call->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(call->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(call->curl, CURLOPT_POST, 1L);
	curl_easy_setopt(call->curl, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(call->curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
	curl_easy_setopt(call->curl, CURLOPT_USERNAME, user);
	curl_easy_setopt(call->curl, CURLOPT_PASSWORD, password);
	curl_easy_setopt(call->curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(call->curl, CURLOPT_CONNECTTIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(call->curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(call->curl, CURLOPT_WRITEDATA, call);
	/* peers' API certificates: the CA and client pair of this node's API */
	if (pg_ha_api_cafile && pg_ha_api_cafile[0])
		curl_easy_setopt(call->curl, CURLOPT_CAINFO, pg_ha_api_cafile);
	if (pg_ha_api_certfile && pg_ha_api_certfile[0] && pg_ha_api_keyfile && pg_ha_api_keyfile[0])
	{
		curl_easy_setopt(call->curl, CURLOPT_SSLCERT, pg_ha_api_certfile);
		curl_easy_setopt(call->curl, CURLOPT_SSLKEY, pg_ha_api_keyfile);
	}
}

/* The promise in a 200's body; 0 when there is none. */
static int64
promise_of(const Call *call)
{
	cJSON	   *doc = cJSON_Parse(call->body);
	cJSON	   *ms = cJSON_GetObjectItemCaseSensitive(doc, "promise_ms");
	int64		us = 0;

	if (cJSON_IsNumber(ms) && ms->valuedouble > 0 && ms->valuedouble < 1e9)
		us = (int64) ms->valuedouble * 1000;
	cJSON_Delete(doc);
	return us;
}

static void
run_round(CURLM *multi, Call *calls, int n, int timeout_ms)
{
	int64		deadline = pg_ha_monotonic_us() + (int64) timeout_ms * 1000;
	int			running = n;

	while (running > 0)
	{
		int64		left = deadline - pg_ha_monotonic_us();

		if (curl_multi_perform(multi, &running) != CURLM_OK || left <= 0)
			break;
		if (running > 0)
			curl_multi_poll(multi, NULL, 0, (int) Min(left / 1000 + 1, 100), NULL);
	}
}

void
failsafe_call_members(const char *leader, const FailsafeMember *members, int n,
					  int timeout_ms, FailsafeAnswer *answers)
{
	Call	   *calls = palloc0(sizeof(Call) * Max(n, 1));
	CURLM	   *multi = curl_multi_init();
	char		user[256];
	char		password[768];
	CURLMsg    *msg;
	int			left;

	memset(answers, 0, sizeof(FailsafeAnswer) * n);
	if (multi == NULL || !read_credentials(user, sizeof(user), password, sizeof(password)))
	{
		ereport(WARNING,
				(errmsg("pg_ha: could not read the credentials for POST /failsafe from pg_ha.api_auth_file \"%s\"",
						pg_ha_api_auth_file),
				 errdetail("No member can confirm this leader; it fences at its deadline.")));
		if (multi)
			curl_multi_cleanup(multi);
		pfree(calls);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		calls[i].curl = curl_easy_init();
		if (calls[i].curl == NULL)
			continue;
		setup_call(&calls[i], leader, &members[i], timeout_ms, user, password);
		curl_multi_add_handle(multi, calls[i].curl);
	}
	explicit_bzero(password, sizeof(password));
	run_round(multi, calls, n, timeout_ms);
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		for (int i = 0; i < n; i++)
		{
			long		code = 0;

			if (msg->msg != CURLMSG_DONE || msg->easy_handle != calls[i].curl ||
				msg->data.result != CURLE_OK)
				continue;
			curl_easy_getinfo(calls[i].curl, CURLINFO_RESPONSE_CODE, &code);
			answers[i].status = (int) code;
			answers[i].promise_us = code == 200 ? promise_of(&calls[i]) : 0;
		}
	}
	for (int i = 0; i < n; i++)
	{
		if (calls[i].curl == NULL)
			continue;
		curl_multi_remove_handle(multi, calls[i].curl);
		curl_easy_cleanup(calls[i].curl);
	}
	curl_multi_cleanup(multi);
	pfree(calls);
}
