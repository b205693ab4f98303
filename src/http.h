/*
 * http.h - pg_ha's embedded HTTP listener: request parsing (http_parse.c,
 * plain C on libhttp-parser, linked by the fuzz target too), the listener
 * worker (http_listener.c), and the handlers it dispatches to: the
 * Patroni-compatible health API (health.c) and the Prometheus metrics
 * (metrics.c, metrics_pg.c).
 *
 * Everything above the "backend only" line must stay free of postgres
 * headers so that test/fuzz/fuzz_http_request.c can link http_parse.c alone.
 */
#ifndef PG_HA_HTTP_H
#define PG_HA_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

/* Bounds on what a client may send. */
#define HTTP_MAX_HEADER_BYTES	8192	/* request line + headers */
#define HTTP_MAX_URL			2048
#define HTTP_MAX_BODY			65536	/* longer bodies: 413 */
#define HTTP_MAX_KEPT_BODY		16384	/* kept for the control API; the rest skipped */
#define HTTP_MAX_AUTHORIZATION	1024	/* a longer Authorization is refused */

typedef enum HttpMethod
{
	HTTP_M_GET = 0,
	HTTP_M_HEAD,
	HTTP_M_OPTIONS,
	HTTP_M_OTHER				/* POST, PUT, ...: never changes anything */
} HttpMethod;

/* One complete request, as far as pg_ha cares about it. */
typedef struct HttpRequest
{
	HttpMethod	method;
	const char *method_name;	/* static string from http_parser */
	char		path[HTTP_MAX_URL + 1]; /* decoded-free raw path, no query */
	char		query[HTTP_MAX_URL + 1];	/* raw query string, no '?' */
	bool		keep_alive;		/* the client wants the connection kept */
	bool		http10;			/* HTTP/1.0 request */
	/* the Authorization header; bad: repeated or longer than the bound */
	char		authorization[HTTP_MAX_AUTHORIZATION + 1];
	size_t		authorization_len;
	bool		has_authorization;
	bool		authorization_bad;
	/*
	 * The body, when there is one: at most HTTP_MAX_KEPT_BODY bytes in the
	 * parser's buffer (valid until the next request is fed), NUL-terminated;
	 * body_truncated when more came.
	 */
	const char *body;
	size_t		body_len;
	bool		body_truncated;
} HttpRequest;

/*
 * Incremental parser for one connection.  http_request_feed() consumes
 * bytes until one request is complete (then it stops: the caller answers
 * it before feeding the rest, which is how pipelined requests are answered
 * in order) or the input is bad (then error_status is the status to send,
 * and the connection must be closed after it).
 */
typedef struct HttpRequestParser
{
	http_parser parser;
	http_parser_settings settings;
	HttpRequest req;
	char		url[HTTP_MAX_URL + 1];
	size_t		url_len;
	size_t		header_bytes;	/* of the request being read */
	size_t		body_bytes;
	char	   *body_buf;		/* malloc'ed at the first body byte, kept */
	/* the header field being read, as far as pg_ha needs its name */
	char		field[16];
	size_t		field_len;
	bool		in_value;		/* the last callback was a header value */
	bool		value_is_authorization;
	bool		in_message;		/* a request has started */
	bool		complete;		/* req holds a complete request */
	int			error_status;	/* 0, or 400/413/414/431 */
} HttpRequestParser;

extern void http_request_parser_init(HttpRequestParser *p);
/* Frees what the parser allocated (the body buffer). */
extern void http_request_parser_free(HttpRequestParser *p);

/*
 * Feeds up to len bytes; returns how many were consumed.  Afterwards exactly
 * one of: p->complete (answer p->req, then call http_request_next()),
 * p->error_status != 0 (answer it and close), or all bytes consumed.
 */
extern size_t http_request_feed(HttpRequestParser *p, const char *data, size_t len);
/* Ready the parser for the next request on the same connection. */
extern void http_request_next(HttpRequestParser *p);
/* True when a request has started but is not complete (for timeouts). */
extern bool http_request_in_progress(const HttpRequestParser *p);

/* The request's Authorization header value, or NULL (absent or bad). */
extern const char *http_request_authorization(const HttpRequest *req);

/* Query string helpers (no allocation; bounded copies). */
extern bool http_query_get(const char *query, const char *key, char *out, size_t outlen);
/* Percent-decodes src into dst (at most dstlen-1 bytes); false on bad escapes. */
extern bool http_url_decode(const char *src, size_t srclen, char *dst, size_t dstlen);
/*
 * Parses a Patroni-style size ("1048576", "16kB", "10MB", "1GB", "16 MB"):
 * bytes into *out; false when it is not a size.
 */
extern bool http_parse_size(const char *s, uint64_t *out);

/* Reason phrase of a status code. */
extern const char *http_status_text(int status);

/* ---------------- backend only (postgres headers needed) ---------------- */
#ifdef PG_HA_HTTP_BACKEND

#include "lib/stringinfo.h"

/* Which listening socket a connection came in on. */
typedef enum HttpPort
{
	HTTP_PORT_API = 0,			/* pg_ha.api_listen: health API + patroni_* */
	HTTP_PORT_METRICS			/* pg_ha.metrics_listen: pg_* + pg_ha_* */
} HttpPort;

/* What a handler answers; the listener frames it. */
typedef struct HttpResponse
{
	int			status;
	const char *content_type;	/* NULL: no body */
	StringInfo	body;			/* caller-provided, reset per request */
	const char *extra_headers;	/* "Name: value\r\n"..., or NULL */
	bool		close;			/* close after this response */
	bool		may_defer;		/* in: the listener can park this request */
	bool		defer;			/* out: park it until the metrics cache
								 * refreshes, then ask again */
	bool		defer_control;	/* out: park it until the control worker
								 * answers request control_seq */
	uint64		control_seq;
} HttpResponse;

/* health.c */
extern void health_handle(const HttpRequest *req, HttpResponse *resp);
/* after the listener has reloaded the configuration files */
extern void health_config_reloaded(void);

/*
 * http_control.c: Patroni's control API.  True when it answered req, or
 * queued it for the control worker (resp->defer_control); then
 * http_control_poll() until it returns true (or with timed_out, which
 * answers 503).
 */
#define CONTROL_WAIT_US (90 * INT64CONST(1000000))
extern bool http_control_handle(const HttpRequest *req, HttpResponse *resp);
extern bool http_control_poll(uint64 seq, bool timed_out, HttpResponse *resp);
extern void http_control_listener_started(void);
extern void http_control_abandon(uint64 seq);

/* http_failsafe.c: true when it answered req (POST /failsafe) */
extern bool failsafe_http_handle(const HttpRequest *req, HttpResponse *resp);

/* metrics.c */
extern char *pg_ha_metrics_listen;
extern int	pg_ha_metrics_cache_ttl;	/* seconds */
extern int	pg_ha_metrics_table_limit;
extern int	pg_ha_metrics_size_interval;	/* seconds */
extern int	pg_ha_metrics_rank_interval;	/* seconds */
extern int	pg_ha_metrics_buffer_kb;
extern char *pg_ha_metrics_database;

extern void pg_ha_http_define_gucs(void);
extern void pg_ha_http_shmem_request(void);
extern void pg_ha_http_shmem_startup(void);
extern void pg_ha_http_register_workers(void);
extern void metrics_handle(const HttpRequest *req, HttpResponse *resp);
extern void metrics_after_responses(void);
/* Changes each time the collector publishes; parked scrapes wait for it. */
extern uint64 metrics_cache_generation(void);

/* Longest a scrape waits for a refresh before it gets the older cache. */
#define METRICS_MAX_WAIT_US		(2 * INT64CONST(1000000))
/* health.c: patroni_* families for :8008/metrics */
extern void metrics_patroni(StringInfo out);
/* Appends s as a Prometheus label value (escapes \ " and newline). */
extern void metrics_append_label_value(StringInfo out, const char *s);
/* Appends v as a sample value: shortest round-trip form, NaN, +Inf, -Inf. */
extern void metrics_append_double(StringInfo out, double v);

/* metrics_pg.c: the collector worker that fills the cache */
extern PGDLLEXPORT void pg_ha_metrics_collector_main(Datum arg);
/* metrics.c: publishes a freshly built text into the shared cache */
extern void metrics_cache_publish(const char *text, size_t len, int64 duration_us,
								  uint64 errors);
extern int64 metrics_cache_age_us(int64 now_us);
extern void metrics_cache_register_collector(void);
extern void metrics_cache_unregister_collector(int code, Datum arg);

/* What the collector is doing, for pg_ha_metrics_collector_up / _error */
typedef enum CollectorState
{
	COLLECTOR_STARTING = 0,		/* not connected yet (or never started) */
	COLLECTOR_RUNNING,			/* connected as pg_ha.metrics_role, querying */
	COLLECTOR_CONNECT_FAILED,	/* could not connect as pg_ha.metrics_role */
	COLLECTOR_ROLE_IS_SUPERUSER,	/* refuses: the role is a superuser */
	COLLECTOR_ROLE_NOT_MONITOR	/* refuses: the role is not in pg_monitor */
} CollectorState;

extern void metrics_collector_starting(void);
extern void metrics_collector_set_state(CollectorState state);
extern int	metrics_collector_exited(bool quick);
extern int	metrics_collector_quick_exits(void);

/* http_listener.c */
extern int	pg_ha_http_max_connections;	/* per port */
extern int	pg_ha_http_max_connections_per_address;	/* 0: half of the above */
extern PGDLLEXPORT void pg_ha_http_main(Datum arg);

#endif							/* PG_HA_HTTP_BACKEND */

#endif							/* PG_HA_HTTP_H */
