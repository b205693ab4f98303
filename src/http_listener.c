/*
 * http_listener.c - the "pg_ha http" background worker: one epoll loop that
 * serves the health API on pg_ha.api_listen and the metrics on
 * pg_ha.metrics_listen.
 *
 * Why a worker of its own, started at postmaster start: HAProxy must get an
 * answer while the node recovers, while etcd hangs and while the HA worker
 * is busy, and every answer comes from shared memory (health.c) or from the
 * metrics cache filled by a separate collector (metrics_pg.c).  Nothing here
 * waits on etcd, SQL or a lock held across I/O.
 *
 * The loop is small and flat, in the style of Redis and pgbouncer:
 *   - non-blocking sockets, level-triggered epoll; a connection waits either
 *     for input (EPOLLIN) or for its pending output to drain (EPOLLOUT),
 *     never both, so a client that does not read cannot make us buffer
 *     answers to requests it keeps pipelining;
 *   - requests are parsed by http_parse.c, one at a time, and answered in
 *     order (pipelining), with keep-alive per HTTP/1.0 and 1.1 rules;
 *   - every connection has one deadline: idle keep-alive, a request that is
 *     too slow to arrive (slowloris), or output the client does not read;
 *   - at most HTTP_MAX_CONNS connections; beyond that new ones are closed.
 * Bad input gets a 4xx and the connection is closed after it.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#define HTTP_MAX_CONNS			1024
#define HTTP_READ_BUF			16384
#define HTTP_IDLE_TIMEOUT_US	(60 * INT64CONST(1000000))	/* keep-alive idle */
#define HTTP_REQUEST_TIMEOUT_US	(5 * INT64CONST(1000000))	/* slow request */
#define HTTP_WRITE_TIMEOUT_US	(10 * INT64CONST(1000000))	/* client not reading */
#define HTTP_LINGER_US			(1 * INT64CONST(1000000))	/* drain after 4xx */
#define HTTP_OUT_HIGH_WATER		(256 * 1024)	/* stop answering pipelined requests */
#define HTTP_OUT_KEEP			(64 * 1024) /* shrink output buffers beyond this */
#define HTTP_REBIND_US			(5 * INT64CONST(1000000))
#define HTTP_TICK_MS			250

typedef enum ConnPhase
{
	CONN_HANDSHAKE,				/* TLS handshake; the request deadline runs */
	CONN_ACTIVE,				/* reading requests / writing answers */
	CONN_LINGER					/* answered an error: discard input until EOF */
} ConnPhase;

typedef struct HttpConn
{
	int			fd;
	HttpPort	port;
	struct ssl_st *tls;			/* NULL: plain HTTP */
	ConnPhase	phase;
	uint32		events;			/* what epoll waits for now */
	bool		closing;		/* close once the output has drained */
	int64		idle_since_us;
	int64		request_start_us;	/* 0 = no partial request */
	int64		write_start_us; /* 0 = no pending output */
	int64		linger_until_us;
	HttpRequestParser parser;
	bool		parked;			/* a scrape waits for a metrics refresh */
	HttpRequest parked_req;
	uint64		parked_gen;
	int64		parked_until_us;
	size_t		in_len;
	char		in[HTTP_READ_BUF];
	StringInfoData out;
	size_t		out_off;
} HttpConn;

typedef struct Listener
{
	const char *what;			/* "api" / "metrics" */
	HttpPort	port;
	const char *setting;		/* host:port from the GUC */
	int			fd;
	int64		next_bind_us;
	bool		warned;			/* bind failure reported once, then retried quietly */
} Listener;

/* epoll tags for listeners: the address of these */
static Listener listeners[2];
static int	epfd = -1;
static HttpConn *conns[HTTP_MAX_CONNS];
static int	nconns = 0;
static int	nparked = 0;		/* connections waiting for a metrics refresh */
static int	ntls = 0;			/* connections with TLS */
static MemoryContext request_context;
static StringInfoData resp_body;

static void
set_nonblocking(int fd)
{
	int			flags = fcntl(fd, F_GETFL, 0);

	if (flags >= 0)
		(void) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	(void) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* recv()/send() through TLS when the connection has it */
static ssize_t
conn_recv(HttpConn *c, char *buf, size_t len)
{
	if (c->tls)
		return http_tls_recv(c->tls, buf, len);
	return recv(c->fd, buf, len, 0);
}

static ssize_t
conn_send(HttpConn *c, const char *buf, size_t len)
{
	if (c->tls)
		return http_tls_send(c->tls, buf, len);
	return send(c->fd, buf, len, MSG_NOSIGNAL);
}

/* "host:port", "[v6]:port", "*:port": binds and listens, -1 on failure. */
static int
open_listen_socket(Listener *l)
{
	char		host[256];
	const char *colon = strrchr(l->setting, ':');
	const char *port;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;
	int			fd = -1;
	int			one = 1;
	size_t		hl;

	if (colon == NULL)
		return -1;
	hl = colon - l->setting;
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, l->setting, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
	{
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	port = colon + 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo((host[0] == '\0' || strcmp(host, "*") == 0) ? NULL : host,
					 port, &hints, &res);
	if (rc != 0)
	{
		ereport(WARNING,
				(errmsg("pg_ha: could not resolve %s listen address \"%s\": %s",
						l->what, l->setting, gai_strerror(rc))));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
	{
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 511) == 0)
			break;
		rc = errno;
		close(fd);
		fd = -1;
		errno = rc;
	}
	if (fd < 0)
		ereport(l->warned ? DEBUG1 : WARNING,
				(errcode_for_socket_access(),
				 errmsg("pg_ha: could not listen on %s address \"%s\": %m",
						l->what, l->setting),
				 errhint("Check that no other process uses the port; pg_ha retries every 5 seconds.")));
	freeaddrinfo(res);
	if (fd >= 0)
	{
		struct epoll_event ev;

		set_nonblocking(fd);
		ev.events = EPOLLIN;
		ev.data.ptr = l;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			elog(ERROR, "pg_ha: epoll_ctl failed: %m");
		ereport(LOG,
				(errmsg("pg_ha: %s listener on %s", l->what, l->setting)));
	}
	return fd;
}

static void
conn_set_events(HttpConn *c, uint32 events)
{
	struct epoll_event ev;

	if (c->events == events)
		return;
	ev.events = events;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = events;
}

static void
conn_close(HttpConn *c)
{
	if (c->parked)
		nparked--;
	for (int i = 0; i < nconns; i++)
	{
		if (conns[i] == c)
		{
			conns[i] = conns[--nconns];
			break;
		}
	}
	if (c->tls)
		ntls--;
	http_tls_free(c->tls);
	close(c->fd);				/* also removes it from the epoll set */
	pfree(c->out.data);
	pfree(c);
}

static void
accept_connections(Listener *l, int64 now)
{
	for (;;)
	{
		int			fd = accept(l->fd, NULL, NULL);
		HttpConn   *c;
		struct epoll_event ev;
		int			one = 1;
		struct ssl_st *tls;

		if (fd < 0)
		{
			if (errno == EINTR)
				continue;
			/* EAGAIN, or EMFILE and friends: try again on the next event */
			return;
		}
		if (nconns >= HTTP_MAX_CONNS)
		{
			close(fd);
			continue;
		}
		set_nonblocking(fd);
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* a port configured for TLS never serves plaintext */
		if (!http_tls_accept(l->port, fd, &tls))
		{
			close(fd);
			continue;
		}

		c = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpConn));
		c->fd = fd;
		c->port = l->port;
		c->tls = tls;
		c->phase = tls ? CONN_HANDSHAKE : CONN_ACTIVE;
		c->request_start_us = tls ? now : 0;
		c->idle_since_us = now;
		http_request_parser_init(&c->parser);
		c->out.data = MemoryContextAlloc(TopMemoryContext, 1024);
		c->out.maxlen = 1024;
		c->out.len = 0;
		c->out.data[0] = '\0';
		c->out.cursor = 0;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		{
			http_tls_free(c->tls);
			close(fd);
			pfree(c->out.data);
			pfree(c);
			continue;
		}
		c->events = EPOLLIN;
		conns[nconns++] = c;
		if (tls)
			ntls++;
	}
}

/* Frames one response into the connection's output. */
static void
append_response(HttpConn *c, const HttpRequest *req, const HttpResponse *r)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool		body = r->content_type != NULL &&
		(req == NULL || req->method == HTTP_M_GET || req->method == HTTP_M_OTHER);

	appendStringInfo(&c->out, "HTTP/1.1 %d %s\r\n", r->status, http_status_text(r->status));
	if (body)
		appendStringInfo(&c->out, "Content-Type: %s\r\nContent-Length: %d\r\n",
						 r->content_type, r->body->len);
	else if (req == NULL || req->method != HTTP_M_HEAD)
		appendStringInfoString(&c->out, "Content-Length: 0\r\n");
	if (r->extra_headers)
		appendStringInfoString(&c->out, r->extra_headers);
	if (c->closing)
		appendStringInfoString(&c->out, "Connection: close\r\n");
	else if (req && req->http10)
		appendStringInfoString(&c->out, "Connection: keep-alive\r\n");
	appendStringInfoString(&c->out, "\r\n");
	if (body)
		appendBinaryStringInfo(&c->out, r->body->data, r->body->len);
	MemoryContextSwitchTo(old);
}

static void
answer_error(HttpConn *c, int status)
{
	HttpResponse r;

	resetStringInfo(&resp_body);
	appendStringInfo(&resp_body, "%d %s\n", status, http_status_text(status));
	memset(&r, 0, sizeof(r));
	r.status = status;
	r.content_type = "text/plain; charset=utf-8";
	r.body = &resp_body;
	c->closing = true;
	append_response(c, NULL, &r);
}

/* An http:// client on a TLS port: told so in plaintext, then closed. */
static void
answer_plaintext_on_tls(HttpConn *c)
{
	HttpResponse r;

	resetStringInfo(&resp_body);
	appendStringInfoString(&resp_body, "400 Bad Request: this port speaks TLS, use https://\n");
	memset(&r, 0, sizeof(r));
	r.status = 400;
	r.content_type = "text/plain; charset=utf-8";
	r.body = &resp_body;
	c->closing = true;
	append_response(c, NULL, &r);
}

/*
 * Answers req; or, when the metrics handler asks for it, parks the
 * connection until the collector publishes a fresh cache (or the wait runs
 * out): the scrape gets current figures, nobody else waits.
 */
static void
answer_request(HttpConn *c, const HttpRequest *req, bool may_defer, int64 now)
{
	HttpResponse r;
	MemoryContext old;

	memset(&r, 0, sizeof(r));
	resetStringInfo(&resp_body);
	r.body = &resp_body;
	r.status = 404;
	r.may_defer = may_defer;

	old = MemoryContextSwitchTo(request_context);
	if (c->port == HTTP_PORT_API)
		health_handle(req, &r);
	else if (http_auth_check(req, &r))
		metrics_handle(req, &r);
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_context);

	if (r.defer && may_defer)
	{
		c->parked = true;
		c->parked_req = *req;
		c->parked_gen = metrics_cache_generation();
		c->parked_until_us = now + METRICS_MAX_WAIT_US;
		nparked++;
		conn_set_events(c, 0);
		return;
	}

	if (r.close || !req->keep_alive)
		c->closing = true;
	append_response(c, req, &r);
}

/* Parses and answers what is buffered, up to the output high-water mark. */
static void
process_input(HttpConn *c, int64 now)
{
	size_t		off = 0;

	while (off < c->in_len && !c->closing && !c->parked &&
		   c->out.len - c->out_off < HTTP_OUT_HIGH_WATER)
	{
		size_t		n = http_request_feed(&c->parser, c->in + off, c->in_len - off);

		off += n;
		if (c->parser.complete)
		{
			answer_request(c, &c->parser.req, true, now);
			http_request_next(&c->parser);
			c->request_start_us = 0;
			c->idle_since_us = now;
		}
		else if (c->parser.error_status != 0)
		{
			answer_error(c, c->parser.error_status);
			off = c->in_len;
		}
		else if (n == 0)
			break;
	}
	if (off > 0)
	{
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	if (c->closing)
		c->in_len = 0;
	if (http_request_in_progress(&c->parser) && c->request_start_us == 0)
		c->request_start_us = now;
}

/* Writes pending output; returns false when the connection was closed. */
static bool
flush_output(HttpConn *c, int64 now)
{
	while (c->out_off < (size_t) c->out.len)
	{
		ssize_t		n = conn_send(c, c->out.data + c->out_off,
								  c->out.len - c->out_off);

		if (n > 0)
		{
			c->out_off += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		{
			if (c->write_start_us == 0)
				c->write_start_us = now;
			conn_set_events(c, EPOLLOUT);
			return true;
		}
		conn_close(c);
		return false;
	}

	/* all written */
	c->out_off = 0;
	if (c->out.maxlen > HTTP_OUT_KEEP)
	{
		pfree(c->out.data);
		c->out.data = MemoryContextAlloc(TopMemoryContext, 1024);
		c->out.maxlen = 1024;
	}
	resetStringInfo(&c->out);
	c->write_start_us = 0;
	if (c->closing)
	{
		/*
		 * Half-close and discard what the client still sends, so that the
		 * kernel does not answer unread input with a RST that could destroy
		 * the response before the client reads it.
		 */
		http_tls_close_notify(c->tls);
		shutdown(c->fd, SHUT_WR);
		c->phase = CONN_LINGER;
		c->linger_until_us = now + HTTP_LINGER_US;
	}
	/* a parked scrape reads nothing more until it is answered */
	conn_set_events(c, c->parked ? 0 : EPOLLIN);
	return true;
}

/*
 * Answers buffered requests and writes the answers, until the input is used
 * up, the client stops reading (EPOLLOUT), or a scrape is parked.  False
 * when the connection was closed.
 */
static bool
drive(HttpConn *c, int64 now)
{
	for (;;)
	{
		size_t		before = c->in_len;

		if (c->phase == CONN_ACTIVE && !c->parked && !c->closing && c->in_len > 0)
			process_input(c, now);
		if (c->out.len > 0)
		{
			if (!flush_output(c, now))
				return false;
			if (c->events & EPOLLOUT)
				return true;	/* the rest when the client reads */
		}
		if (c->parked || c->phase != CONN_ACTIVE || c->in_len == 0 || c->in_len == before)
			return true;
	}
}

/*
 * Advances a TLS handshake, non-blocking, waiting for what OpenSSL asks for;
 * true once requests can be read.  False when it waits, failed (closed), or
 * met a plaintext client (answered and lingering).
 */
static bool
conn_handshake(HttpConn *c, int64 now)
{
	switch (http_tls_handshake(c->tls, c->fd, c->port))
	{
		case HTTP_TLS_DONE:
			c->phase = CONN_ACTIVE;
			c->request_start_us = 0;
			c->idle_since_us = now;
			conn_set_events(c, EPOLLIN);
			return true;
		case HTTP_TLS_WANT_READ:
			conn_set_events(c, EPOLLIN);
			return false;
		case HTTP_TLS_WANT_WRITE:
			conn_set_events(c, EPOLLOUT);
			return false;
		case HTTP_TLS_PLAINTEXT:
			http_tls_free(c->tls);
			c->tls = NULL;
			ntls--;
			c->phase = CONN_ACTIVE;
			answer_plaintext_on_tls(c);
			(void) flush_output(c, now);
			return false;
		case HTTP_TLS_FAILED:
			break;
	}
	conn_close(c);
	return false;
}

static void
handle_conn_event(HttpConn *c, uint32 events, int64 now)
{
	if (c->parked)
	{
		/* reads nothing until answered; writes what it answered before */
		if (events & (EPOLLERR | EPOLLHUP))
			conn_close(c);
		else if (events & EPOLLOUT)
			(void) flush_output(c, now);
		return;
	}

	if (c->phase == CONN_HANDSHAKE)
	{
		if (!conn_handshake(c, now))
			return;
		events = EPOLLIN;		/* a request may have come with the handshake */
	}

	if (events & EPOLLOUT)
	{
		if (!flush_output(c, now))
			return;
		if (c->events & EPOLLOUT)
			return;				/* still not drained */
		/* drained: answer pipelined requests left in the buffer */
		(void) drive(c, now);
		return;
	}

	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0)
		return;
	for (;;)
	{
		char		discard[4096];
		char	   *buf;
		size_t		room;
		ssize_t		n;

		if (c->phase == CONN_LINGER)
		{
			buf = discard;
			room = sizeof(discard);
		}
		else
		{
			buf = c->in + c->in_len;
			room = sizeof(c->in) - c->in_len;
			if (room == 0)
				return;			/* drive() stopped on back-pressure */
		}
		n = conn_recv(c, buf, room);
		if (n == 0)
		{
			conn_close(c);
			return;
		}
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_close(c);
			return;
		}
		if (c->phase == CONN_LINGER)
			continue;
		c->in_len += n;
		if (!drive(c, now))
			return;
		if (c->parked || (c->events & EPOLLOUT))
			return;
	}
}

/*
 * TLS can hold decrypted input that epoll cannot see (a record read in
 * part because the input buffer was full): serve it as if the socket were
 * readable.
 */
static void
serve_buffered_tls_input(int64 now)
{
	for (int i = nconns - 1; i >= 0 && ntls > 0; i--)
	{
		HttpConn   *c;

		if (i >= nconns)
			continue;
		c = conns[i];
		if (c->phase == CONN_ACTIVE && !c->parked && c->events == EPOLLIN &&
			http_tls_has_pending(c->tls))
			handle_conn_event(c, EPOLLIN, now);
	}
}

/* Answers parked scrapes whose refresh arrived or whose wait ran out. */
static void
unpark_connections(int64 now)
{
	uint64		gen = metrics_cache_generation();

	for (int i = nconns - 1; i >= 0 && nparked > 0; i--)
	{
		HttpConn   *c;

		if (i >= nconns)
			continue;
		c = conns[i];
		if (!c->parked || (gen == c->parked_gen && now < c->parked_until_us))
			continue;
		c->parked = false;
		nparked--;
		answer_request(c, &c->parked_req, false, now);
		/* the answer, then requests pipelined behind the scrape */
		if (!drive(c, now))
			continue;
		if (!(c->events & EPOLLOUT) && !c->parked)
			conn_set_events(c, EPOLLIN);
	}
}

/* Closes connections past their deadline; answers 408 to slow requests. */
static void
expire_connections(int64 now)
{
	for (int i = nconns - 1; i >= 0; i--)
	{
		HttpConn   *c = conns[i];

		if (i >= nconns)
			continue;
		if (c->parked)
			continue;			/* unpark_connections bounds the wait */
		if (c->phase == CONN_HANDSHAKE)
		{
			/* no HTTP spoken yet: no 408, just the close */
			if (now - c->request_start_us >= HTTP_REQUEST_TIMEOUT_US)
				conn_close(c);
		}
		else if (c->phase == CONN_LINGER)
		{
			if (now >= c->linger_until_us)
				conn_close(c);
		}
		else if (c->write_start_us != 0)
		{
			if (now - c->write_start_us >= HTTP_WRITE_TIMEOUT_US)
				conn_close(c);
		}
		else if (c->request_start_us != 0)
		{
			if (now - c->request_start_us >= HTTP_REQUEST_TIMEOUT_US)
			{
				c->in_len = 0;
				answer_error(c, 408);
				(void) flush_output(c, now);
			}
		}
		else if (now - c->idle_since_us >= HTTP_IDLE_TIMEOUT_US)
			conn_close(c);
	}
}

static void
bind_listeners(int64 now)
{
	for (size_t i = 0; i < lengthof(listeners); i++)
	{
		Listener   *l = &listeners[i];

		if (l->fd >= 0 || l->setting == NULL || l->setting[0] == '\0')
			continue;
		/* configured for TLS without a usable certificate: stay closed */
		if (!http_tls_port_usable(l->port))
			continue;
		if (now < l->next_bind_us)
			continue;
		l->fd = open_listen_socket(l);
		if (l->fd < 0)
		{
			l->next_bind_us = now + HTTP_REBIND_US;
			l->warned = true;
		}
	}
}

void
pg_ha_http_main(Datum arg)
{
	struct epoll_event events[64];
	int64		next_tick = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		ereport(ERROR,
				(errmsg("pg_ha: could not create epoll set: %m")));

	request_context = AllocSetContextCreate(TopMemoryContext, "pg_ha http request",
											ALLOCSET_DEFAULT_SIZES);
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&resp_body);
		MemoryContextSwitchTo(old);
	}

	/* both are PGC_POSTMASTER: fixed for the life of this process */
	listeners[0] = (Listener) {"api", HTTP_PORT_API, pg_ha_api_listen, -1, 0, false};
	listeners[1] = (Listener) {"metrics", HTTP_PORT_METRICS, pg_ha_metrics_listen, -1, 0, false};
	http_tls_load();
	http_auth_load();

	for (;;)
	{
		int			n;
		int64		now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			health_config_reloaded();
			/* new connections get the new certificates and credentials */
			http_tls_load();
			http_auth_load();
		}
		if (!PostmasterIsAlive())
			proc_exit(1);

		now = pg_ha_monotonic_us();
		if (now >= next_tick)
		{
			bind_listeners(now);
			expire_connections(now);
			next_tick = now + HTTP_TICK_MS * 1000;
		}

		/* parked scrapes: look for the refresh every 2 ms */
		n = epoll_wait(epfd, events, lengthof(events), nparked > 0 ? 2 : HTTP_TICK_MS);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errmsg("pg_ha: epoll_wait failed: %m")));
		}
		now = pg_ha_monotonic_us();
		for (int i = 0; i < n; i++)
		{
			void	   *ptr = events[i].data.ptr;

			if (ptr == &listeners[0] || ptr == &listeners[1])
				accept_connections((Listener *) ptr, now);
			else
				handle_conn_event((HttpConn *) ptr, events[i].events, now);
		}
		if (nparked > 0)
			unpark_connections(now);
		if (ntls > 0)
			serve_buffered_tls_input(now);
		metrics_after_responses();
	}
}
