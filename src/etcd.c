/*
 * etcd.c - etcd v3 client transport: HTTP requests to the JSON gateway with
 * endpoint failover, authentication and bounded time.
 *
 * Time bound: one call (including authentication and every endpoint it
 * tries) never runs past config->timeout_ms.  The connect phase of each
 * attempt gets a share of what is left, so a black-holed endpoint cannot eat
 * the whole budget and the next endpoint still gets its chance.
 *
 * Endpoint failover: the client sticks to the endpoint that last answered.
 * When an attempt fails (cannot connect, times out, 5xx from a member that
 * lost quorum), it moves on to the next endpoint, and the next call starts
 * there too, so a dead member costs one failed attempt, not one per call.
 *
 * Authentication: with a user configured, the client fetches a token with
 * /v3/auth/authenticate and sends it raw in the Authorization header.  Tokens
 * expire; a reply that says the token is invalid makes the client
 * re-authenticate once and retry.  The password is never put in an error
 * message.
 */
#include "etcd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define ETCD_MAX_REPLY (32 * 1024 * 1024)	/* bound on one reply body */
#define ETCD_MAX_WATCH_LINE (8 * 1024 * 1024)	/* bound on one watch message */
#define ETCD_TOKEN_LEN 1024

typedef struct Buffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		overflow;
} Buffer;

struct EtcdClient
{
	char		urls[ETCD_MAX_ENDPOINTS][ETCD_MAX_URL];
	int			nurls;
	int			current;
	long		timeout_ms;
	char	   *cacert;
	char	   *cert;
	char	   *key;
	char	   *user;
	char	   *password;
	char		token[ETCD_TOKEN_LEN];
	CURL	   *curl;			/* reused: keeps the connection alive */
	Buffer		reply;
	EtcdAbortCheck abort_check;
	void	   *abort_arg;
	char		errbuf[ETCD_ERRMSG_LEN];
	uint64_t	requests;
	uint64_t	errors;
	uint64_t	last_latency_us;
};

struct EtcdWatch
{
	EtcdClient *client;
	CURLM	   *multi;
	CURL	   *curl;
	struct curl_slist *headers;
	char	   *body;
	Buffer		line;			/* bytes of the message being received */
	EtcdEventList pending;		/* events parsed, not yet handed out */
	int			socket;			/* the stream's socket, -1 when none */
	bool		established;	/* etcd confirmed the watch */
	bool		ended;
	char		errbuf[ETCD_ERRMSG_LEN];
};

static void set_error(char *errbuf, size_t errlen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
set_error(char *errbuf, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static int64_t
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static char *
dup_or_null(const char *s)
{
	return (s != NULL && s[0] != '\0') ? strdup(s) : NULL;
}

static size_t
buffer_append(Buffer *buf, const char *data, size_t len)
{
	if (buf->len + len + 1 > buf->limit)
	{
		buf->overflow = true;
		return 0;				/* makes curl fail the transfer */
	}
	if (buf->len + len + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap : 4096;
		char	   *grown;

		while (cap < buf->len + len + 1)
			cap *= 2;
		grown = realloc(buf->data, cap);
		if (grown == NULL)
		{
			buf->overflow = true;
			return 0;
		}
		buf->data = grown;
		buf->cap = cap;
	}
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
	return len;
}

static size_t
reply_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return buffer_append((Buffer *) userdata, ptr, size * nmemb);
}

static int
xferinfo_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	EtcdClient *client = (EtcdClient *) clientp;

	return (client->abort_check != NULL && client->abort_check(client->abort_arg)) ? 1 : 0;
}

bool
etcd_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

int
etcd_parse_endpoints(const char *list, char urls[][ETCD_MAX_URL], int max_urls,
					 char *errbuf, size_t errlen)
{
	const char *p = list;
	int			n = 0;

	if (list == NULL)
	{
		set_error(errbuf, errlen, "no etcd endpoint given");
		return -1;
	}

	/*
	 * Before any check that quotes an endpoint: a password in the list must
	 * not reach a message (a ',' in it would split it over two endpoints).
	 * Credentials in the URL would show in SHOW, pg_settings and the log
	 * line of every reload; a query or fragment makes every request fail.
	 */
	if (strchr(list, '@') != NULL)
	{
		set_error(errbuf, errlen, "an etcd endpoint contains a user name or password ('@')");
		return -1;
	}
	if (strpbrk(list, "?#") != NULL)
	{
		set_error(errbuf, errlen, "an etcd endpoint contains a query ('?') or fragment ('#')");
		return -1;
	}
	while (*p != '\0')
	{
		const char *start;
		const char *end;
		const char *host;
		size_t		len;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		len = (size_t) (end - start);	/* as written, for messages */
		if (strncmp(start, "http://", 7) == 0)
			host = start + 7;
		else if (strncmp(start, "https://", 8) == 0)
			host = start + 8;
		else
		{
			set_error(errbuf, errlen, "etcd endpoint \"%.*s\" must start with http:// or https://",
					  (int) (len > 100 ? 100 : len), start);
			return -1;
		}
		if (host >= end || *host == ':' || *host == '/' || *host == ',')
		{
			set_error(errbuf, errlen, "etcd endpoint \"%.*s\" has no host",
					  (int) (len > 100 ? 100 : len), start);
			return -1;
		}
		for (const char *c = start; c < end; c++)
		{
			/* a URL with spaces, quotes or control bytes is a typo */
			if (*c <= ' ' || *c == '"' || *c == '\\' || (unsigned char) *c >= 0x7f)
			{
				set_error(errbuf, errlen, "etcd endpoint \"%.*s\" contains an invalid character",
						  (int) (len > 100 ? 100 : len), start);
				return -1;
			}
		}
		/* "http://h:2379/" is the same endpoint as "http://h:2379" */
		while (end > host && end[-1] == '/')
			end--;
		if (memchr(host, '/', (size_t) (end - host)) != NULL)
		{
			set_error(errbuf, errlen, "etcd endpoint \"%.*s\" must not have a path",
					  (int) (len > 100 ? 100 : len), start);
			return -1;
		}
		if (len >= ETCD_MAX_URL)
		{
			set_error(errbuf, errlen, "etcd endpoint is longer than %d bytes", ETCD_MAX_URL - 1);
			return -1;
		}
		if (n >= max_urls || n >= ETCD_MAX_ENDPOINTS)
		{
			set_error(errbuf, errlen, "too many etcd endpoints (at most %d)", ETCD_MAX_ENDPOINTS);
			return -1;
		}
		if (urls != NULL)
		{
			memcpy(urls[n], start, (size_t) (end - start));
			urls[n][end - start] = '\0';
		}
		n++;
	}
	if (n == 0)
	{
		set_error(errbuf, errlen, "no etcd endpoint given");
		return -1;
	}
	return n;
}

bool
etcd_secret_file_ok(const char *path, char *errbuf, size_t errlen)
{
	struct stat st;
	uid_t		me = geteuid();

	if (path == NULL || path[0] == '\0' || stat(path, &st) != 0)
		return true;
	if (!S_ISREG(st.st_mode))
	{
		set_error(errbuf, errlen, "\"%s\" is not a regular file", path);
		return false;
	}
	if (st.st_uid != me && st.st_uid != 0)
	{
		set_error(errbuf, errlen, "\"%s\" must be owned by the server's user (uid %u) or root, not uid %u",
				  path, (unsigned) me, (unsigned) st.st_uid);
		return false;
	}
	if ((st.st_uid == me && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
	{
		set_error(errbuf, errlen,
				  "\"%s\" has group or world access (mode %04o)",
				  path, (unsigned) (st.st_mode & 07777));
		return false;
	}
	return true;
}

EtcdClient *
etcd_client_new(const EtcdConfig *config, char *errbuf, size_t errlen)
{
	EtcdClient *client = calloc(1, sizeof(EtcdClient));

	if (client == NULL)
	{
		set_error(errbuf, errlen, "out of memory");
		return NULL;
	}
	client->nurls = etcd_parse_endpoints(config->endpoints, client->urls,
										 ETCD_MAX_ENDPOINTS, errbuf, errlen);
	if (client->nurls < 0)
	{
		free(client);
		return NULL;
	}
	client->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 2000;
	client->cacert = dup_or_null(config->cacert);
	client->cert = dup_or_null(config->cert);
	client->key = dup_or_null(config->key);
	client->user = dup_or_null(config->user);
	client->password = config->password ? strdup(config->password) : strdup("");
	client->reply.limit = ETCD_MAX_REPLY;
	client->curl = curl_easy_init();
	if (client->curl == NULL || client->password == NULL)
	{
		set_error(errbuf, errlen, "could not initialise libcurl");
		etcd_client_free(client);
		return NULL;
	}
	return client;
}

void
etcd_client_free(EtcdClient *client)
{
	if (client == NULL)
		return;
	if (client->curl)
		curl_easy_cleanup(client->curl);
	free(client->cacert);
	free(client->cert);
	free(client->key);
	free(client->user);
	if (client->password)
	{
		memset(client->password, 0, strlen(client->password));
		free(client->password);
	}
	memset(client->token, 0, sizeof(client->token));
	free(client->reply.data);
	free(client);
}

void
etcd_client_set_abort_check(EtcdClient *client, EtcdAbortCheck check, void *arg)
{
	client->abort_check = check;
	client->abort_arg = arg;
}

const char *
etcd_last_error(const EtcdClient *client)
{
	return client->errbuf;
}

const char *
etcd_current_endpoint(const EtcdClient *client)
{
	return client->urls[client->current];
}

uint64_t
etcd_request_count(const EtcdClient *client)
{
	return client->requests;
}

uint64_t
etcd_error_count(const EtcdClient *client)
{
	return client->errors;
}

uint64_t
etcd_last_latency_us(const EtcdClient *client)
{
	return client->last_latency_us;
}

/* TLS and common options shared by plain requests and watches. */
static void
apply_common_options(EtcdClient *client, CURL *curl)
{
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	/* notice a dead peer on an idle connection (watch streams) */
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 5L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 2L);
	if (client->cacert)
		curl_easy_setopt(curl, CURLOPT_CAINFO, client->cacert);
	if (client->cert)
		curl_easy_setopt(curl, CURLOPT_SSLCERT, client->cert);
	if (client->key)
		curl_easy_setopt(curl, CURLOPT_SSLKEY, client->key);
}

static struct curl_slist *
build_headers(EtcdClient *client)
{
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");

	/* no "Expect: 100-continue" round trip on larger bodies */
	if (headers)
		headers = curl_slist_append(headers, "Expect:");
	if (headers && client->token[0] != '\0')
	{
		char		line[ETCD_TOKEN_LEN + 32];

		snprintf(line, sizeof(line), "Authorization: %s", client->token);
		headers = curl_slist_append(headers, line);
		memset(line, 0, sizeof(line));
	}
	return headers;
}

typedef enum AttemptResult
{
	ATTEMPT_OK,					/* HTTP reply received (any status < 500) */
	ATTEMPT_FAILED,				/* try the next endpoint */
	ATTEMPT_ABORTED
} AttemptResult;

/* One HTTP POST to one endpoint, bounded by the time left. */
static AttemptResult
http_attempt(EtcdClient *client, int endpoint, const char *path, const char *body,
			 long timeout_ms, long connect_ms, long *http_code)
{
	char		url[ETCD_MAX_URL + 64];
	char		curlerr[CURL_ERROR_SIZE];
	struct curl_slist *headers;
	CURLcode	rc;
	CURL	   *curl = client->curl;

	snprintf(url, sizeof(url), "%s%s", client->urls[endpoint], path);
	client->reply.len = 0;
	client->reply.overflow = false;
	if (client->reply.data)
		client->reply.data[0] = '\0';
	headers = build_headers(client);
	curlerr[0] = '\0';

	curl_easy_reset(curl);
	apply_common_options(client, curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, reply_write_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &client->reply);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curlerr);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, client);

	client->requests++;
	rc = curl_easy_perform(curl);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	*http_code = 0;
	if (rc == CURLE_ABORTED_BY_CALLBACK)
	{
		set_error(client->errbuf, sizeof(client->errbuf), "etcd request to %s interrupted",
				  client->urls[endpoint]);
		return ATTEMPT_ABORTED;
	}
	if (rc != CURLE_OK)
	{
		if (client->reply.overflow)
			set_error(client->errbuf, sizeof(client->errbuf),
					  "etcd reply from %s exceeds %d bytes", client->urls[endpoint], ETCD_MAX_REPLY);
		else
			set_error(client->errbuf, sizeof(client->errbuf), "etcd endpoint %s: %s",
					  client->urls[endpoint], curlerr[0] ? curlerr : curl_easy_strerror(rc));
		return ATTEMPT_FAILED;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_code);
	if (*http_code >= 500 || *http_code == 0)
	{
		/* a member without quorum answers 503: another may do better */
		char		detail[300];

		etcd_parse_error_reply(client->reply.data, client->reply.len, detail, sizeof(detail));
		set_error(client->errbuf, sizeof(client->errbuf), "etcd endpoint %s answered HTTP %ld: %s",
				  client->urls[endpoint], *http_code, detail);
		return ATTEMPT_FAILED;
	}
	return ATTEMPT_OK;
}

/*
 * POST body to path on the first endpoint that answers, within the
 * deadline.  On ETCD_OK the reply is in client->reply and its HTTP code in
 * *http_code.
 */
static EtcdStatus
http_post(EtcdClient *client, const char *path, const char *body,
		  int64_t deadline_us, long *http_code)
{
	int			tried;

	for (tried = 0; tried < client->nurls; tried++)
	{
		int			endpoint = client->current;
		int64_t		left_ms = (deadline_us - monotonic_us()) / 1000;
		long		connect_ms;
		AttemptResult res;

		if (left_ms <= 0)
			break;
		connect_ms = (long) (left_ms / (client->nurls - tried));
		if (connect_ms < 50)
			connect_ms = 50;
		res = http_attempt(client, endpoint, path, body, (long) left_ms, connect_ms, http_code);
		if (res == ATTEMPT_OK)
			return ETCD_OK;
		if (res == ATTEMPT_ABORTED)
			return ETCD_ERR_ABORTED;
		client->current = (client->current + 1) % client->nurls;
	}
	if (client->errbuf[0] == '\0')
		set_error(client->errbuf, sizeof(client->errbuf), "no etcd endpoint answered in time");
	return ETCD_ERR_UNREACHABLE;
}

static EtcdStatus
authenticate(EtcdClient *client, int64_t deadline_us)
{
	char	   *body;
	size_t		need;
	long		http_code;
	EtcdStatus	status;
	char	   *user_json;
	char	   *pass_json;

	client->token[0] = '\0';
	/* the gateway wants plain JSON strings: escape what JSON requires */
	user_json = malloc(strlen(client->user) * 6 + 1);
	pass_json = malloc(strlen(client->password) * 6 + 1);
	if (user_json == NULL || pass_json == NULL)
	{
		free(user_json);
		free(pass_json);
		set_error(client->errbuf, sizeof(client->errbuf), "out of memory");
		return ETCD_ERR_INTERNAL;
	}
	for (int pass = 0; pass < 2; pass++)
	{
		const char *src = pass ? client->password : client->user;
		char	   *dst = pass ? pass_json : user_json;

		for (; *src; src++)
		{
			unsigned char c = (unsigned char) *src;

			if (c == '"' || c == '\\')
			{
				*dst++ = '\\';
				*dst++ = (char) c;
			}
			else if (c < 0x20)
				dst += sprintf(dst, "\\u%04x", c);
			else
				*dst++ = (char) c;
		}
		*dst = '\0';
	}
	need = strlen(user_json) + strlen(pass_json) + 32;
	body = malloc(need);
	if (body == NULL)
	{
		free(user_json);
		free(pass_json);
		set_error(client->errbuf, sizeof(client->errbuf), "out of memory");
		return ETCD_ERR_INTERNAL;
	}
	snprintf(body, need, "{\"name\":\"%s\",\"password\":\"%s\"}", user_json, pass_json);
	memset(pass_json, 0, strlen(pass_json));
	free(user_json);
	free(pass_json);

	status = http_post(client, "/v3/auth/authenticate", body, deadline_us, &http_code);
	memset(body, 0, strlen(body));
	free(body);
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_auth_reply(client->reply.data, client->reply.len,
								   client->token, sizeof(client->token),
								   client->errbuf, sizeof(client->errbuf));
	if (status != ETCD_OK)
	{
		char		detail[ETCD_ERRMSG_LEN];

		snprintf(detail, sizeof(detail), "%s", client->errbuf);
		set_error(client->errbuf, sizeof(client->errbuf),
				  "etcd authentication as user \"%.100s\" failed: %s", client->user, detail);
	}
	return status;
}

static bool
reply_says_bad_token(EtcdClient *client, long http_code)
{
	if (http_code == 401)
		return true;
	if (client->reply.data == NULL)
		return false;
	return strstr(client->reply.data, "invalid auth token") != NULL ||
		strstr(client->reply.data, "user name is empty") != NULL;
}

/*
 * One etcd call: authenticate when needed, POST, and on an expired token
 * re-authenticate once and retry.  On ETCD_OK the body is in client->reply.
 */
static EtcdStatus
etcd_call(EtcdClient *client, const char *path, const char *body)
{
	int64_t		start = monotonic_us();
	int64_t		deadline = start + (int64_t) client->timeout_ms * 1000;
	EtcdStatus	status = ETCD_OK;
	long		http_code = 0;
	int			round;

	client->errbuf[0] = '\0';
	if (body == NULL)
	{
		set_error(client->errbuf, sizeof(client->errbuf), "out of memory building etcd request");
		client->errors++;
		return ETCD_ERR_INTERNAL;
	}
	for (round = 0; round < 2; round++)
	{
		if (client->user != NULL && client->token[0] == '\0')
		{
			status = authenticate(client, deadline);
			if (status != ETCD_OK)
				break;
		}
		status = http_post(client, path, body, deadline, &http_code);
		if (status != ETCD_OK)
			break;
		if (client->user != NULL && reply_says_bad_token(client, http_code))
		{
			client->token[0] = '\0';
			status = ETCD_ERR_AUTH;
			set_error(client->errbuf, sizeof(client->errbuf), "etcd refused the auth token");
			continue;
		}
		if (http_code == 401 || http_code == 403)
		{
			char		detail[300];

			etcd_parse_error_reply(client->reply.data, client->reply.len, detail, sizeof(detail));
			status = ETCD_ERR_AUTH;
			set_error(client->errbuf, sizeof(client->errbuf),
					  "etcd refused the request (HTTP %ld): %s", http_code, detail);
		}
		break;
	}
	client->last_latency_us = (uint64_t) (monotonic_us() - start);
	if (status != ETCD_OK)
		client->errors++;
	return status;
}

/* Counts an error found while parsing a reply that etcd_call accepted. */
static EtcdStatus
count_parse(EtcdClient *client, EtcdStatus status)
{
	if (status != ETCD_OK && status != ETCD_NOT_FOUND)
		client->errors++;
	return status;
}

EtcdStatus
etcd_lease_grant(EtcdClient *client, int64_t ttl_seconds, int64_t *lease_id,
				 int64_t *granted_ttl)
{
	char		body[64];
	EtcdStatus	status;

	snprintf(body, sizeof(body), "{\"TTL\":\"%lld\"}", (long long) ttl_seconds);
	status = etcd_call(client, "/v3/lease/grant", body);
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_lease_reply(client->reply.data, client->reply.len, lease_id,
									granted_ttl, client->errbuf, sizeof(client->errbuf));
	if (status == ETCD_OK && *lease_id == 0)
	{
		set_error(client->errbuf, sizeof(client->errbuf), "etcd granted a lease without an ID");
		status = ETCD_ERR_PROTOCOL;
	}
	if (status == ETCD_NOT_FOUND)
		status = ETCD_ERR_PROTOCOL;	/* a grant with TTL 0 makes no sense */
	return count_parse(client, status);
}

EtcdStatus
etcd_lease_keepalive(EtcdClient *client, int64_t lease_id, int64_t *ttl)
{
	char		body[64];
	int64_t		id;
	EtcdStatus	status;

	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long) lease_id);
	status = etcd_call(client, "/v3/lease/keepalive", body);
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_lease_reply(client->reply.data, client->reply.len, &id, ttl,
									client->errbuf, sizeof(client->errbuf));
	return count_parse(client, status);
}

EtcdStatus
etcd_lease_revoke(EtcdClient *client, int64_t lease_id)
{
	char		body[64];
	EtcdStatus	status;

	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long) lease_id);
	status = etcd_call(client, "/v3/lease/revoke", body);
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_error_reply(client->reply.data, client->reply.len,
									client->errbuf, sizeof(client->errbuf));
	if (status == ETCD_ERR_SERVER && strstr(client->errbuf, "not found") != NULL)
		status = ETCD_NOT_FOUND;
	return count_parse(client, status);
}

EtcdStatus
etcd_txn(EtcdClient *client, const EtcdCompare *compares, int ncompares,
		 const EtcdOp *success, int nsuccess, const EtcdOp *failure, int nfailure,
		 bool *succeeded, EtcdKVList *ranges)
{
	char	   *body = etcd_build_txn_request(compares, ncompares, success, nsuccess,
											  failure, nfailure);
	EtcdStatus	status = etcd_call(client, "/v3/kv/txn", body);

	free(body);
	*succeeded = false;
	if (ranges)
		memset(ranges, 0, sizeof(*ranges));
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_txn_reply(client->reply.data, client->reply.len, succeeded,
								  ranges, client->errbuf, sizeof(client->errbuf));
	return count_parse(client, status);
}

EtcdStatus
etcd_put(EtcdClient *client, const char *key, const char *value, int64_t lease_id)
{
	EtcdOp		op = {ETCD_OP_PUT, key, value, lease_id, false};
	bool		succeeded;

	return etcd_txn(client, NULL, 0, &op, 1, NULL, 0, &succeeded, NULL);
}

EtcdStatus
etcd_get(EtcdClient *client, const char *key, bool prefix, EtcdKVList *out)
{
	char	   *body = etcd_build_range_request(key, prefix);
	EtcdStatus	status = etcd_call(client, "/v3/kv/range", body);

	free(body);
	memset(out, 0, sizeof(*out));
	if (status != ETCD_OK)
		return status;
	status = etcd_parse_range_reply(client->reply.data, client->reply.len, out,
									client->errbuf, sizeof(client->errbuf));
	return count_parse(client, status);
}

EtcdStatus
etcd_delete(EtcdClient *client, const char *key, bool prefix)
{
	EtcdOp		op = {ETCD_OP_DELETE, key, NULL, 0, prefix};
	bool		succeeded;

	return etcd_txn(client, NULL, 0, &op, 1, NULL, 0, &succeeded, NULL);
}

EtcdStatus
etcd_create(EtcdClient *client, const char *key, const char *value,
			int64_t lease_id, EtcdKV *current)
{
	EtcdCompare cmp = {key, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, NULL, 0};
	EtcdOp		put = {ETCD_OP_PUT, key, value, lease_id, false};
	EtcdOp		get = {ETCD_OP_RANGE, key, NULL, 0, false};
	EtcdKVList	ranges;
	bool		succeeded;
	EtcdStatus	status;

	if (current)
		memset(current, 0, sizeof(*current));
	status = etcd_txn(client, &cmp, 1, &put, 1, &get, 1, &succeeded, &ranges);
	if (status != ETCD_OK)
		return status;
	if (!succeeded && current && ranges.count > 0)
	{
		/* hand the first kv over to the caller */
		*current = ranges.kvs[0];
		memset(&ranges.kvs[0], 0, sizeof(EtcdKV));
	}
	etcd_kvlist_free(&ranges);
	return succeeded ? ETCD_OK : ETCD_NOT_FOUND;
}

EtcdStatus
etcd_delete_if_value(EtcdClient *client, const char *key, const char *value)
{
	EtcdCompare cmp = {key, ETCD_CMP_VALUE, ETCD_CMP_EQUAL, value, 0};
	EtcdOp		del = {ETCD_OP_DELETE, key, NULL, 0, false};
	bool		succeeded;
	EtcdStatus	status;

	status = etcd_txn(client, &cmp, 1, &del, 1, NULL, 0, &succeeded, NULL);
	if (status != ETCD_OK)
		return status;
	return succeeded ? ETCD_OK : ETCD_NOT_FOUND;
}

/* ---------- watch ---------- */

static size_t
watch_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	EtcdWatch  *watch = (EtcdWatch *) userdata;
	size_t		len = size * nmemb;
	size_t		i;
	size_t		start = 0;

	/* split the stream into newline-delimited messages */
	for (i = 0; i < len; i++)
	{
		bool		canceled;
		EtcdStatus	status;

		if (ptr[i] != '\n')
			continue;
		if (buffer_append(&watch->line, ptr + start, i - start) != i - start &&
			i > start)
		{
			set_error(watch->errbuf, sizeof(watch->errbuf),
					  "etcd watch message exceeds %d bytes", ETCD_MAX_WATCH_LINE);
			return 0;
		}
		start = i + 1;
		if (watch->line.len == 0)
			continue;
		status = etcd_parse_watch_message(watch->line.data, watch->line.len,
										  &watch->pending, &canceled,
										  watch->errbuf, sizeof(watch->errbuf));
		watch->line.len = 0;
		if (status != ETCD_OK || canceled)
		{
			watch->ended = true;
			return 0;
		}
		watch->established = true;
	}
	if (start < len && buffer_append(&watch->line, ptr + start, len - start) != len - start)
	{
		set_error(watch->errbuf, sizeof(watch->errbuf),
				  "etcd watch message exceeds %d bytes", ETCD_MAX_WATCH_LINE);
		return 0;
	}
	return len;
}

/* Track the stream's socket so the caller can sleep on it. */
static int
watch_sockopt_cb(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
	((EtcdWatch *) clientp)->socket = (int) fd;
	return CURL_SOCKOPT_OK;
}

static int
watch_closesocket_cb(void *clientp, curl_socket_t fd)
{
	EtcdWatch  *watch = (EtcdWatch *) clientp;

	if (watch->socket == (int) fd)
		watch->socket = -1;
	return close(fd);
}

EtcdWatch *
etcd_watch_start(EtcdClient *client, const char *key, bool prefix, int64_t start_revision)
{
	EtcdWatch  *watch;
	char		url[ETCD_MAX_URL + 64];

	/* make sure a token exists before the stream needs one */
	if (client->user != NULL && client->token[0] == '\0')
	{
		int64_t		deadline = monotonic_us() + (int64_t) client->timeout_ms * 1000;

		if (authenticate(client, deadline) != ETCD_OK)
			return NULL;
	}
	watch = calloc(1, sizeof(EtcdWatch));
	if (watch == NULL)
		return NULL;
	watch->client = client;
	watch->socket = -1;
	watch->line.limit = ETCD_MAX_WATCH_LINE;
	watch->body = etcd_build_watch_request(key, prefix, start_revision);
	watch->headers = build_headers(client);
	watch->multi = curl_multi_init();
	watch->curl = curl_easy_init();
	if (watch->body == NULL || watch->headers == NULL || watch->multi == NULL ||
		watch->curl == NULL)
	{
		etcd_watch_free(watch);
		return NULL;
	}
	snprintf(url, sizeof(url), "%s/v3/watch", client->urls[client->current]);
	apply_common_options(client, watch->curl);
	curl_easy_setopt(watch->curl, CURLOPT_URL, url);
	curl_easy_setopt(watch->curl, CURLOPT_HTTPHEADER, watch->headers);
	curl_easy_setopt(watch->curl, CURLOPT_POSTFIELDS, watch->body);
	curl_easy_setopt(watch->curl, CURLOPT_WRITEFUNCTION, watch_write_cb);
	curl_easy_setopt(watch->curl, CURLOPT_WRITEDATA, watch);
	curl_easy_setopt(watch->curl, CURLOPT_CONNECTTIMEOUT_MS, client->timeout_ms);
	curl_easy_setopt(watch->curl, CURLOPT_SOCKOPTFUNCTION, watch_sockopt_cb);
	curl_easy_setopt(watch->curl, CURLOPT_SOCKOPTDATA, watch);
	curl_easy_setopt(watch->curl, CURLOPT_CLOSESOCKETFUNCTION, watch_closesocket_cb);
	curl_easy_setopt(watch->curl, CURLOPT_CLOSESOCKETDATA, watch);
	curl_multi_add_handle(watch->multi, watch->curl);
	snprintf(watch->errbuf, sizeof(watch->errbuf), "watch on %s", client->urls[client->current]);
	return watch;
}

EtcdStatus
etcd_watch_poll(EtcdWatch *watch, EtcdEventList *events)
{
	int			running = 0;
	CURLMsg    *msg;
	int			left;

	memset(events, 0, sizeof(*events));
	if (!watch->ended)
	{
		curl_multi_perform(watch->multi, &running);
		while ((msg = curl_multi_info_read(watch->multi, &left)) != NULL)
		{
			if (msg->msg != CURLMSG_DONE)
				continue;
			if (!watch->ended)
			{
				long		code = 0;

				curl_easy_getinfo(watch->curl, CURLINFO_RESPONSE_CODE, &code);
				if (msg->data.result != CURLE_OK && msg->data.result != CURLE_WRITE_ERROR)
					set_error(watch->errbuf, sizeof(watch->errbuf), "etcd watch stream failed: %s",
							  curl_easy_strerror(msg->data.result));
				else if (msg->data.result == CURLE_OK)
					set_error(watch->errbuf, sizeof(watch->errbuf),
							  "etcd closed the watch stream (HTTP %ld)", code);
			}
			watch->ended = true;
		}
	}
	/* hand out what arrived, even if the stream ended after it */
	*events = watch->pending;
	memset(&watch->pending, 0, sizeof(watch->pending));
	if (events->count > 0)
		return ETCD_OK;
	return watch->ended ? ETCD_ERR_UNREACHABLE : ETCD_OK;
}

int
etcd_watch_socket(EtcdWatch *watch)
{
	return watch->ended ? -1 : watch->socket;
}

bool
etcd_watch_established(const EtcdWatch *watch)
{
	return watch->established;
}

const char *
etcd_watch_error(const EtcdWatch *watch)
{
	return watch->errbuf;
}

void
etcd_watch_free(EtcdWatch *watch)
{
	if (watch == NULL)
		return;
	if (watch->multi && watch->curl)
		curl_multi_remove_handle(watch->multi, watch->curl);
	if (watch->curl)
		curl_easy_cleanup(watch->curl);
	if (watch->multi)
		curl_multi_cleanup(watch->multi);
	curl_slist_free_all(watch->headers);
	free(watch->body);
	free(watch->line.data);
	etcd_eventlist_free(&watch->pending);
	free(watch);
}
