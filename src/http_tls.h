/*
 * http_tls.h - TLS and basic authentication of the embedded HTTP listeners
 * (http_tls.c, http_auth.c): per-listener OpenSSL contexts loaded at start
 * and on SIGHUP, non-blocking handshake/read/write for the epoll loop, and
 * the metrics port's credentials.
 *
 * Backend only; the listener sees SSL objects as an opaque pointer.
 */
#ifndef PG_HA_HTTP_TLS_H
#define PG_HA_HTTP_TLS_H

#include <sys/types.h>

#define PG_HA_HTTP_BACKEND
#include "http.h"

/* pg_ha.{api,metrics}_verify_client */
typedef enum HttpTlsVerify
{
	HTTP_TLS_VERIFY_NONE = 0,	/* no client certificate asked for */
	HTTP_TLS_VERIFY_OPTIONAL,	/* asked for; if sent, it must verify */
	HTTP_TLS_VERIFY_REQUIRED	/* no verified client certificate, no service */
} HttpTlsVerify;

/* guc.c */
extern char *pg_ha_api_certfile;
extern char *pg_ha_api_keyfile;
extern char *pg_ha_api_cafile;
extern int	pg_ha_api_verify_client;
extern char *pg_ha_metrics_certfile;
extern char *pg_ha_metrics_keyfile;
extern char *pg_ha_metrics_cafile;
extern int	pg_ha_metrics_verify_client;
extern char *pg_ha_metrics_auth_file;

/* What a connection's TLS step came to. */
typedef enum HttpTlsStep
{
	HTTP_TLS_DONE,				/* handshake complete */
	HTTP_TLS_WANT_READ,			/* wait for input, then call again */
	HTTP_TLS_WANT_WRITE,		/* wait until writable, then call again */
	HTTP_TLS_PLAINTEXT,			/* the client speaks plain HTTP */
	HTTP_TLS_FAILED				/* close the connection */
} HttpTlsStep;

struct ssl_st;

/* "https" when the API is configured for TLS, else "http" (for api_url) */
extern const char *http_api_scheme(void);

/* (Re)loads both listeners' contexts from the parameters; logs problems. */
extern void http_tls_load(void);
/* False while the port is configured for TLS but has no usable certificate. */
extern bool http_tls_port_usable(HttpPort port);
/*
 * For a connection just accepted on port: *tls is NULL (plain HTTP) or a new
 * server-side SSL on fd.  False: refuse the connection.
 */
extern bool http_tls_accept(HttpPort port, int fd, struct ssl_st **tls);
extern HttpTlsStep http_tls_handshake(struct ssl_st *tls, int fd, HttpPort port);
/* recv()/send() semantics: -1 with errno EAGAIN when TLS must wait. */
extern ssize_t http_tls_recv(struct ssl_st *tls, char *buf, size_t len);
extern ssize_t http_tls_send(struct ssl_st *tls, const char *buf, size_t len);
/* Decrypted input is buffered that epoll cannot see. */
extern bool http_tls_has_pending(struct ssl_st *tls);
/* Sends close_notify, best effort, before the write side is shut. */
extern void http_tls_close_notify(struct ssl_st *tls);
extern void http_tls_free(struct ssl_st *tls);
/*
 * A file holding a secret is private (as PostgreSQL's ssl_key_file); logs
 * why not, naming param, with detail as the errdetail.
 */
extern bool http_private_file_ok(const char *file, const char *param, const char *detail);

/* http_auth.c: basic auth of the metrics port (pg_ha.metrics_auth_file) */
extern void http_auth_load(void);
/* True when req may be answered; otherwise *resp is the refusal. */
extern bool http_auth_check(const HttpRequest *req, HttpResponse *resp);
/* The API port's POST /failsafe (pg_ha.api_auth_file): required, 403 without it. */
extern bool http_api_auth_check(const HttpRequest *req, HttpResponse *resp);

#endif							/* PG_HA_HTTP_TLS_H */
