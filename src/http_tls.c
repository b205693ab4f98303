/*
 * http_tls.c - optional TLS on the API and metrics listeners, on OpenSSL
 * (already in the process through libcurl; PostgreSQL itself uses it).
 *
 * Each listener has its own parameters, named after Patroni's restapi.*:
 * pg_ha.<listener>_certfile (TLS is on when it is set), _keyfile, _cafile and
 * _verify_client (none/optional/required).  This file keeps one SSL_CTX per
 * listener, built when the worker starts and rebuilt on every SIGHUP, so that
 * renewed certificates are picked up by new connections while open ones keep
 * the context they started with (OpenSSL counts the references).
 *
 * Failure rules:
 *   - a listener configured for TLS never falls back to plaintext: without a
 *     usable certificate it accepts no connections (the port stays closed);
 *   - a bad new certificate at reload keeps the context loaded before;
 *   - nothing here raises an ERROR: the worker must not crash-loop on a
 *     configuration mistake, it logs which file and why and waits for a
 *     reload;
 *   - a private key is refused when group or others can read it, as
 *     PostgreSQL does for ssl_key_file, and encrypted keys are refused rather
 *     than letting OpenSSL prompt on a terminal (which would block the loop).
 *
 * The handshake is driven from the listener's epoll loop (non-blocking
 * sockets, SSL_ERROR_WANT_READ/WRITE map to the events to wait for), under
 * the same request deadline as a plaintext request.
 */
#include "pg_ha.h"
#include "etcd.h"

#include "http_tls.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define HANDSHAKE_LOG_INTERVAL_US	(10 * INT64CONST(1000000))

typedef struct TlsSettings
{
	const char *what;			/* "api" / "metrics" */
	const char *certfile;
	const char *keyfile;		/* "": the key is in certfile */
	const char *cafile;
	int			verify;			/* HttpTlsVerify */
} TlsSettings;

typedef struct TlsListener
{
	SSL_CTX    *ctx;			/* NULL: none usable */
	bool		configured;		/* certfile set at the last load */
	int64		last_log_us;	/* handshake failures: one LOG per interval */
	int			suppressed;
} TlsListener;

static TlsListener tls_listeners[2];

static void
listener_settings(HttpPort port, TlsSettings *s)
{
	if (port == HTTP_PORT_API)
		*s = (TlsSettings) {"api", pg_ha_api_certfile, pg_ha_api_keyfile,
			pg_ha_api_cafile, pg_ha_api_verify_client};
	else
		*s = (TlsSettings) {"metrics", pg_ha_metrics_certfile, pg_ha_metrics_keyfile,
			pg_ha_metrics_cafile, pg_ha_metrics_verify_client};
}

/* The oldest error OpenSSL queued (the cause), and the queue cleared. */
static const char *
ssl_reason(void)
{
	static char buf[256];
	unsigned long e = ERR_get_error();

	ERR_clear_error();
	if (e == 0)
		return "no error reported by OpenSSL";
	ERR_error_string_n(e, buf, sizeof(buf));
	return buf;
}

/*
 * What happens to the listener after a load failure: one of the two
 * sentences, as the errdetail of the message naming the file.
 */
static const char *
consequence(const char *what, bool keep_old)
{
	static char buf[200];

	if (keep_old)
		snprintf(buf, sizeof(buf),
				 "The %s listener keeps serving the certificate it loaded before.", what);
	else
		snprintf(buf, sizeof(buf),
				 "The %s listener accepts no connections until the configuration is corrected and reloaded.",
				 what);
	return buf;
}

/*
 * A file that holds a secret (private key, credentials) must be private:
 * the rule is PostgreSQL's for ssl_key_file, kept in one place for every
 * pg_ha secret (etcd_secret_file_ok).  Logs why not, with detail.
 */
bool
http_private_file_ok(const char *file, const char *param, const char *detail)
{
	struct stat st;
	char		why[1024];

	if (stat(file, &st) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not access file \"%s\" named by %s: %m", file, param),
				 errdetail_internal("%s", detail)));
		return false;
	}
	if (etcd_secret_file_ok(file, why, sizeof(why)))
		return true;
	ereport(WARNING,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("pg_ha: file named by %s refused: %s", param, why),
			 errdetail_internal("%s", detail),
			 errhint("%s", ETCD_SECRET_FILE_RULE)));
	return false;
}

/* OpenSSL would read a passphrase from the terminal: refuse instead. */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	return 0;
}

static bool
cert_loaded(SSL_CTX *ctx, const TlsSettings *s, const char *detail)
{
	if (access(s->certfile, R_OK) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not load TLS certificate file \"%s\": %m", s->certfile),
				 errdetail_internal("%s", detail)));
		return false;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, s->certfile) != 1)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: could not load TLS certificate file \"%s\": %s",
						s->certfile, ssl_reason()),
				 errdetail_internal("%s", detail)));
		return false;
	}
	return true;
}

static bool
key_loaded(SSL_CTX *ctx, const TlsSettings *s, const char *detail)
{
	const char *keyfile = s->keyfile[0] ? s->keyfile : s->certfile;

	if (SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: could not load private key file \"%s\": %s", keyfile, ssl_reason()),
				 errdetail_internal("%s", detail),
				 errhint("The key must be in PEM format and not protected by a passphrase.")));
		return false;
	}
	if (SSL_CTX_check_private_key(ctx) != 1)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: private key file \"%s\" does not match certificate file \"%s\"",
						keyfile, s->certfile),
				 errdetail_internal("%s", detail)));
		ERR_clear_error();
		return false;
	}
	return true;
}

static bool
client_verification_set(SSL_CTX *ctx, const TlsSettings *s, const char *detail)
{
	int			mode = SSL_VERIFY_NONE;

	if (s->verify != HTTP_TLS_VERIFY_NONE && s->cafile[0] == '\0')
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: pg_ha.%s_verify_client needs pg_ha.%s_cafile", s->what, s->what),
				 errdetail_internal("%s", detail)));
		return false;
	}
	if (s->cafile[0] != '\0')
	{
		STACK_OF(X509_NAME) *names;

		if (SSL_CTX_load_verify_locations(ctx, s->cafile, NULL) != 1 ||
			(names = SSL_load_client_CA_file(s->cafile)) == NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("pg_ha: could not load CA file \"%s\": %s", s->cafile, ssl_reason()),
					 errdetail_internal("%s", detail)));
			return false;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	if (s->verify == HTTP_TLS_VERIFY_OPTIONAL)
		mode = SSL_VERIFY_PEER;
	else if (s->verify == HTTP_TLS_VERIFY_REQUIRED)
		mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	return true;
}

/* A new context from the settings, or NULL (logged, with detail). */
static SSL_CTX *
build_context(const TlsSettings *s, const char *detail)
{
	SSL_CTX    *ctx;
	const char *keyfile = s->keyfile[0] ? s->keyfile : s->certfile;
	char		param[64];

	snprintf(param, sizeof(param), "pg_ha.%s_%s", s->what, s->keyfile[0] ? "keyfile" : "certfile");
	if (!http_private_file_ok(keyfile, param, detail))
		return NULL;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
	{
		ereport(WARNING,
				(errmsg("pg_ha: could not create a TLS context: %s", ssl_reason()),
				 errdetail_internal("%s", detail)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* renegotiation would make a read wait for a write: not offered */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
						SSL_OP_CIPHER_SERVER_PREFERENCE
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
						| SSL_OP_IGNORE_UNEXPECTED_EOF
#endif
		);
	/*
	 * The output buffer grows (moves) while a write waits for the socket;
	 * idle keep-alive connections give their 16 KiB record buffers back.
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					 SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	/* session resumption must not skip client verification of another context */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *) s->what, strlen(s->what));

	if (!cert_loaded(ctx, s, detail) || !key_loaded(ctx, s, detail) ||
		!client_verification_set(ctx, s, detail))
	{
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static const char *
verify_name(int verify)
{
	return verify == HTTP_TLS_VERIFY_REQUIRED ? "required" :
		verify == HTTP_TLS_VERIFY_OPTIONAL ? "optional" : "none";
}

static void
load_listener(HttpPort port)
{
	TlsListener *tl = &tls_listeners[port];
	TlsSettings s;
	SSL_CTX    *ctx;

	listener_settings(port, &s);
	if (s.certfile == NULL || s.certfile[0] == '\0')
	{
		if (tl->configured)
			ereport(LOG,
					(errmsg("pg_ha: the %s listener serves plain HTTP from now on", s.what)));
		if (tl->ctx)
			SSL_CTX_free(tl->ctx);
		tl->ctx = NULL;
		tl->configured = false;
		return;
	}

	/* ctx is NULL when the listener served plaintext: nothing to keep */
	ctx = build_context(&s, consequence(s.what, tl->ctx != NULL));
	if (ctx == NULL)
	{
		tl->configured = true;
		return;
	}
	if (tl->ctx)
		SSL_CTX_free(tl->ctx);
	tl->ctx = ctx;
	tl->configured = true;
	ereport(LOG,
			(errmsg("pg_ha: the %s listener serves TLS with certificate file \"%s\" (verify_client %s)",
					s.what, s.certfile, verify_name(s.verify))));
}

const char *
http_api_scheme(void)
{
	return pg_ha_api_certfile && pg_ha_api_certfile[0] ? "https" : "http";
}

void
http_tls_load(void)
{
	load_listener(HTTP_PORT_API);
	load_listener(HTTP_PORT_METRICS);
}

bool
http_tls_port_usable(HttpPort port)
{
	return !tls_listeners[port].configured || tls_listeners[port].ctx != NULL;
}

bool
http_tls_accept(HttpPort port, int fd, SSL **tls)
{
	TlsListener *tl = &tls_listeners[port];

	*tls = NULL;
	if (!tl->configured)
		return true;
	if (tl->ctx == NULL)
		return false;
	ERR_clear_error();
	*tls = SSL_new(tl->ctx);
	if (*tls == NULL || SSL_set_fd(*tls, fd) != 1)
	{
		ereport(LOG,
				(errmsg("pg_ha: could not start a TLS connection: %s", ssl_reason())));
		http_tls_free(*tls);
		*tls = NULL;
		return false;
	}
	SSL_set_accept_state(*tls);
	return true;
}

/*
 * Clients that lose the connection during the handshake (port scanners,
 * TCP-only checks) are DEBUG1; real TLS failures (an unverified client
 * certificate, no common protocol) are LOG, at most one per interval with a
 * count of the rest, so that a misconfigured client checking every second
 * does not flood the log.
 */
static void
report_handshake_failure(HttpPort port, int err)
{
	TlsListener *tl = &tls_listeners[port];
	const char *what = port == HTTP_PORT_API ? "api" : "metrics";
	const char *why;
	int64		now;

	if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
	{
		ERR_clear_error();
		elog(DEBUG1, "pg_ha: %s listener: client closed the connection during the TLS handshake", what);
		return;
	}
	why = ssl_reason();
	now = pg_ha_monotonic_us();
	if (tl->last_log_us != 0 && now - tl->last_log_us < HANDSHAKE_LOG_INTERVAL_US)
	{
		tl->suppressed++;
		elog(DEBUG1, "pg_ha: TLS handshake on the %s listener failed: %s", what, why);
		return;
	}
	if (tl->suppressed > 0)
		ereport(LOG,
				(errmsg("pg_ha: TLS handshake on the %s listener failed: %s", what, why),
				 errdetail("%d other handshakes failed since the previous message.", tl->suppressed)));
	else
		ereport(LOG,
				(errmsg("pg_ha: TLS handshake on the %s listener failed: %s", what, why)));
	tl->suppressed = 0;
	tl->last_log_us = now;
}

/*
 * Before the first byte reaches OpenSSL, one peek tells an http:// client
 * (an HTTP method is upper-case letters) from a TLS ClientHello (0x16), so
 * that it can be told what went wrong instead of getting a TLS alert it
 * cannot read.  The SSL's app data marks the peek as done.
 */
HttpTlsStep
http_tls_handshake(SSL *tls, int fd, HttpPort port)
{
	int			rc;
	int			err;

	if (SSL_get_app_data(tls) == NULL)
	{
		unsigned char b;
		ssize_t		n = recv(fd, &b, 1, MSG_PEEK);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return HTTP_TLS_WANT_READ;
		if (n <= 0)
			return HTTP_TLS_FAILED;
		if (b >= 'A' && b <= 'Z')
			return HTTP_TLS_PLAINTEXT;
		SSL_set_app_data(tls, tls);
	}

	ERR_clear_error();
	rc = SSL_do_handshake(tls);
	if (rc == 1)
		return HTTP_TLS_DONE;
	err = SSL_get_error(tls, rc);
	if (err == SSL_ERROR_WANT_READ)
		return HTTP_TLS_WANT_READ;
	if (err == SSL_ERROR_WANT_WRITE)
		return HTTP_TLS_WANT_WRITE;
	report_handshake_failure(port, err);
	return HTTP_TLS_FAILED;
}

/* errno for a failed SSL_read/SSL_write, or 0 for a clean end */
static int
io_errno(SSL *tls, int rc)
{
	int			err = SSL_get_error(tls, rc);

	ERR_clear_error();
	switch (err)
	{
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return EAGAIN;
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		default:
			return ECONNRESET;
	}
}

ssize_t
http_tls_recv(SSL *tls, char *buf, size_t len)
{
	int			n;

	ERR_clear_error();
	n = SSL_read(tls, buf, (int) Min(len, (size_t) INT_MAX));
	if (n > 0)
		return n;
	errno = io_errno(tls, n);
	return errno == 0 ? 0 : -1;
}

ssize_t
http_tls_send(SSL *tls, const char *buf, size_t len)
{
	int			n;

	ERR_clear_error();
	n = SSL_write(tls, buf, (int) Min(len, (size_t) INT_MAX));
	if (n > 0)
		return n;
	errno = io_errno(tls, n);
	if (errno == 0)
		errno = EPIPE;
	return -1;
}

bool
http_tls_has_pending(SSL *tls)
{
	return tls != NULL && SSL_has_pending(tls);
}

void
http_tls_close_notify(SSL *tls)
{
	if (tls == NULL || !SSL_is_init_finished(tls))
		return;
	ERR_clear_error();
	(void) SSL_shutdown(tls);
	ERR_clear_error();
}

void
http_tls_free(SSL *tls)
{
	if (tls != NULL)
		SSL_free(tls);
}
