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
 *   - each port has its own connection budget, and each client address a
 *     share of it (see "Admission" below).
 * Bad input gets a 4xx and the connection is closed after it.
 *
 * Admission.  Connections cost nothing to open and an unauthenticated
 * client can open thousands, so the listener must never let them lock out
 * a health check (issue 11):
 *   - the whole first request must arrive within HTTP_REQUEST_TIMEOUT_US of
 *     accept(): sending nothing, or a byte at a time, does not extend it;
 *   - the API and metrics ports have separate budgets
 *     (pg_ha.http_max_connections each), so a flood on one cannot starve
 *     the other, and one client address gets at most
 *     pg_ha.http_max_connections_per_address of a port's budget;
 *   - when a budget is full, the new connection takes the place of the
 *     least recently active connection that is idle or still sending its
 *     request (of the same address, when that address is at its share):
 *     a checker's fresh connection always gets in, and the attacker's
 *     oldest ones make room for it, also from the same address;
 *   - the soft open file limit is raised to the hard limit, and the budgets
 *     are lowered to fit what remains of it, so accept() does not run out
 *     of descriptors; if it does anyway (EMFILE, ENFILE) the listener frees
 *     one, or accepts and drops the connection on a spare descriptor, or
 *     stops watching the port for a moment: a pending connection on a
 *     level-triggered socket would otherwise make the loop spin.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"
#include "http_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ilist.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#define HTTP_READ_BUF			16384
#define HTTP_IDLE_TIMEOUT_US	(60 * INT64CONST(1000000))	/* keep-alive idle */
/* a whole request, from accept() or from its first byte on a kept-alive connection */
#define HTTP_REQUEST_TIMEOUT_US	(5 * INT64CONST(1000000))
#define HTTP_WRITE_TIMEOUT_US	(10 * INT64CONST(1000000))	/* client not reading */
#define HTTP_LINGER_US			(1 * INT64CONST(1000000))	/* drain after 4xx */
#define HTTP_OUT_HIGH_WATER		(256 * 1024)	/* stop answering pipelined requests */
#define HTTP_OUT_KEEP			(64 * 1024) /* shrink output buffers beyond this */
#define HTTP_REBIND_US			(5 * INT64CONST(1000000))
#define HTTP_TICK_MS			250
#define HTTP_ACCEPT_BATCH		64	/* then serve the other events */
#define HTTP_FD_RESERVE			64	/* descriptors left to postgres and the listeners */
#define HTTP_PRESSURE_REPORT_US	(60 * INT64CONST(1000000))

typedef enum ConnPhase
{
	CONN_HANDSHAKE,				/* TLS handshake; the request deadline runs */
	CONN_ACTIVE,				/* reading requests / writing answers */
	CONN_LINGER					/* answered an error: discard input until EOF */
} ConnPhase;

/*
 * A client address, per port: IPv4 addresses whole, IPv6 by /64 (one host
 * commonly owns a whole /64).  Zero-filled, so it hashes as bytes.
 */
typedef struct ClientKey
{
	uint8		port;			/* HttpPort */
	uint8		family;
	uint8		addr[8];		/* IPv4: 4 bytes; IPv6: the /64 prefix */
} ClientKey;

typedef struct ClientEntry
{
	ClientKey	key;
	int			nconns;
} ClientEntry;

typedef struct HttpConn
{
	int			fd;
	HttpPort	port;
	struct ssl_st *tls;			/* NULL: plain HTTP */
	ClientEntry *client;		/* its address's connection count */
	dlist_node	lru;			/* in lru[port], least recently active first */
	ConnPhase	phase;
	uint32		events;			/* what epoll waits for now */
	bool		closing;		/* close once the output has drained */
	int64		idle_since_us;	/* accepted, or last answered a request */
	int64		request_start_us;	/* accept() or first byte of a request;
									 * 0 = idle between requests */
	int64		write_start_us; /* 0 = no pending output */
	int64		linger_until_us;
	HttpRequestParser parser;
	bool		parked;			/* a scrape waits for a metrics refresh, or a
								 * control request for the control worker */
	HttpRequest parked_req;
	uint64		parked_gen;
	bool		parked_control; /* ... the latter, request parked_seq */
	uint64		parked_seq;
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
	int64		paused_until_us;	/* out of descriptors: not watched until then */
} Listener;

/* epoll tags for listeners: the address of these */
static Listener listeners[2];
static int	epfd = -1;
static HttpConn **conns;		/* all connections, for the timers */
static int	nconns = 0;
static int	conns_size = 0;
static int	nparked = 0;		/* connections waiting for a metrics refresh */
static int	ntls = 0;			/* connections with TLS */

/* pg_ha.http_max_connections, pg_ha.http_max_connections_per_address */
int			pg_ha_http_max_connections = 1000;
int			pg_ha_http_max_connections_per_address = 0;

/* per port: connections by last activity, and their number */
static dlist_head lru[2];
static int	port_conns[2];
static HTAB *clients;			/* ClientEntry by ClientKey */
static int	fd_limit;			/* soft RLIMIT_NOFILE after raising it */
static int	conn_budget;		/* per port: the GUC, lowered to fit fd_limit */
static int	addr_budget;		/* per address and port */
static int	spare_fd = -1;		/* given up to accept-and-close on EMFILE */
/* made room for, refused, out of descriptors: reported once a minute */
static int64 n_evicted[2];
static int64 n_refused[2];
static int64 n_emfile[2];
static int64 next_report_us;
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
client_release(ClientEntry *client)
{
	if (--client->nconns == 0)
		(void) hash_search(clients, &client->key, HASH_REMOVE, NULL);
}

static void
conn_close(HttpConn *c)
{
	if (c->parked)
		nparked--;
	if (c->parked && c->parked_control)
		http_control_abandon(c->parked_seq);
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
	dlist_delete(&c->lru);
	port_conns[c->port]--;
	client_release(c->client);
	http_request_parser_free(&c->parser);
	close(c->fd);				/* also removes it from the epoll set */
	pfree(c->out.data);
	pfree(c);
}

/* The connection answered a request: it goes to the back of the queue. */
static void
conn_touch(HttpConn *c, int64 now)
{
	c->idle_since_us = now;
	dlist_delete(&c->lru);
	dlist_push_tail(&lru[c->port], &c->lru);
}

/*
 * The least recently active connection on port that can be closed without
 * losing an answer: not parked, nothing written and unsent.  It is idle,
 * still sending its request, or draining after an error.  With client,
 * only that address's connections qualify.
 */
static HttpConn *
eviction_victim(HttpPort port, const ClientEntry *client)
{
	dlist_iter	it;

	dlist_foreach(it, &lru[port])
	{
		HttpConn   *c = dlist_container(HttpConn, lru, it.cur);

		if (client != NULL && c->client != client)
			continue;
		if (c->parked || c->out.len > 0)
			continue;
		return c;
	}
	return NULL;
}

/*
 * Makes room for a connection already counted in port_conns[port] and in
 * client: closes the least recently active idle ones while the address is
 * over its share or the port over its budget.  False when nothing can be
 * closed (every connection is being answered): the new one is refused.
 */
static bool
make_room(HttpPort port, ClientEntry *client)
{
	for (;;)
	{
		HttpConn   *victim;

		if (client->nconns > addr_budget)
			victim = eviction_victim(port, client);
		else if (port_conns[port] > conn_budget)
			victim = eviction_victim(port, NULL);
		else
			return true;
		if (victim == NULL)
			return false;

		/*
		 * This cannot free client: its count includes the new connection,
		 * which is not in any list yet.
		 */
		conn_close(victim);
		n_evicted[port]++;
	}
}

static void
client_key(const struct sockaddr_storage *ss, HttpPort port, ClientKey *key)
{
	memset(key, 0, sizeof(*key));
	key->port = (uint8) port;
	key->family = (uint8) ss->ss_family;
	if (ss->ss_family == AF_INET)
		memcpy(key->addr, &((const struct sockaddr_in *) ss)->sin_addr, 4);
	else if (ss->ss_family == AF_INET6)
	{
		const uint8 *a = ((const struct sockaddr_in6 *) ss)->sin6_addr.s6_addr;
		static const uint8 v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(a, v4mapped, 12) == 0)
		{
			key->family = AF_INET;
			memcpy(key->addr, a + 12, 4);
		}
		else
			memcpy(key->addr, a, 8);
	}
}

/*
 * Counts the new connection against its port and address, making room if
 * needed; NULL when it must be refused.
 */
static ClientEntry *
admit(HttpPort port, const struct sockaddr_storage *ss)
{
	ClientKey	key;
	ClientEntry *client;
	bool		found;

	client_key(ss, port, &key);
	client = hash_search(clients, &key, HASH_ENTER, &found);
	if (!found)
		client->nconns = 0;
	client->nconns++;
	port_conns[port]++;
	if (make_room(port, client))
		return client;
	port_conns[port]--;
	client_release(client);
	n_refused[port]++;
	return NULL;
}

static void
conn_add(HttpConn *c)
{
	if (nconns == conns_size)
	{
		conns_size *= 2;
		conns = repalloc(conns, conns_size * sizeof(HttpConn *));
	}
	conns[nconns++] = c;
	dlist_push_tail(&lru[c->port], &c->lru);
}

static void
pause_listener(Listener *l, int64 now)
{
	struct epoll_event ev;

	ev.events = 0;
	ev.data.ptr = l;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
		l->paused_until_us = now + HTTP_TICK_MS * 1000;
}

/*
 * accept() found no free descriptor.  Returns true when one was freed and
 * accept() may be tried again.  Otherwise the pending connection is taken
 * on the spare descriptor and dropped, or, without a spare, the listener
 * is not watched until the next tick: either way the loop does not spin
 * on a listening socket that stays readable.
 */
static bool
out_of_descriptors(Listener *l, int64 now)
{
	HttpConn   *victim = eviction_victim(l->port, NULL);
	int			fd;

	n_emfile[l->port]++;
	if (victim == NULL)
		victim = eviction_victim(l->port == HTTP_PORT_API ? HTTP_PORT_METRICS : HTTP_PORT_API, NULL);
	if (victim != NULL)
	{
		n_evicted[victim->port]++;
		conn_close(victim);
		return true;
	}
	if (spare_fd < 0)
	{
		pause_listener(l, now);
		return false;
	}
	close(spare_fd);
	fd = accept(l->fd, NULL, NULL);
	if (fd >= 0)
		close(fd);
	n_refused[l->port]++;
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return false;
}

static void
accept_connections(Listener *l, int64 now)
{
	for (int i = 0; i < HTTP_ACCEPT_BATCH; i++)
	{
		struct sockaddr_storage ss;
		socklen_t	sslen = sizeof(ss);
		int			fd = accept4(l->fd, (struct sockaddr *) &ss, &sslen,
								 SOCK_NONBLOCK | SOCK_CLOEXEC);
		ClientEntry *client;
		HttpConn   *c;
		struct epoll_event ev;
		int			one = 1;
		struct ssl_st *tls;

		if (fd < 0)
		{
			if (errno == EINTR)
				continue;
			if ((errno == EMFILE || errno == ENFILE) && out_of_descriptors(l, now))
				continue;
			/* EAGAIN, or an error of the connection: the next event */
			return;
		}
		client = admit(l->port, &ss);
		if (client == NULL)
		{
			close(fd);
			continue;
		}
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* a port configured for TLS never serves plaintext */
		if (!http_tls_accept(l->port, fd, &tls))
		{
			port_conns[l->port]--;
			client_release(client);
			close(fd);
			continue;
		}

		c = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpConn));
		c->fd = fd;
		c->port = l->port;
		c->tls = tls;
		c->client = client;
		c->phase = tls ? CONN_HANDSHAKE : CONN_ACTIVE;
		c->idle_since_us = now;
		/* the first request's deadline runs from here, bytes or not */
		c->request_start_us = now;
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
			port_conns[c->port]--;
			client_release(client);
			close(fd);
			pfree(c->out.data);
			pfree(c);
			continue;
		}
		c->events = EPOLLIN;
		conn_add(c);
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
	{
		if (!failsafe_http_handle(req, &r) && !http_control_handle(req, &r))
			health_handle(req, &r);
	}
	else if (http_auth_check(req, &r))
		metrics_handle(req, &r);
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_context);

	if ((r.defer && may_defer) || r.defer_control)
	{
		c->parked = true;
		c->parked_req = *req;
		c->parked_gen = metrics_cache_generation();
		c->parked_control = r.defer_control;
		c->parked_seq = r.control_seq;
		c->parked_until_us = now + (r.defer_control ? CONTROL_WAIT_US : METRICS_MAX_WAIT_US);
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
			conn_touch(c, now);
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

/*
 * A parked control request: true when its answer is now in the output
 * (the control worker answered, or the wait ran out).
 */
static bool
answer_control(HttpConn *c, int64 now)
{
	HttpResponse r;
	bool		answered;
	MemoryContext old;

	memset(&r, 0, sizeof(r));
	resetStringInfo(&resp_body);
	r.body = &resp_body;
	old = MemoryContextSwitchTo(request_context);
	answered = http_control_poll(c->parked_seq, now >= c->parked_until_us, &r);
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_context);
	if (!answered)
		return false;
	if (!c->parked_req.keep_alive)
		c->closing = true;
	append_response(c, &c->parked_req, &r);
	return true;
}

/* Answers parked requests whose refresh or answer arrived, or whose wait ran out. */
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
		if (!c->parked)
			continue;
		if (c->parked_control)
		{
			if (!answer_control(c, now))
				continue;
			c->parked = false;
			c->parked_control = false;
			nparked--;
		}
		else
		{
			if (gen == c->parked_gen && now < c->parked_until_us)
				continue;
			c->parked = false;
			nparked--;
			answer_request(c, &c->parked_req, false, now);
		}
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
			if (now - c->request_start_us < HTTP_REQUEST_TIMEOUT_US)
				continue;
			/* nothing sent: nothing to answer (and no 408 to misread) */
			if (c->in_len == 0 && !http_request_in_progress(&c->parser))
			{
				conn_close(c);
				continue;
			}
			c->in_len = 0;
			answer_error(c, 408);
			(void) flush_output(c, now);
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

		if (l->fd >= 0 && l->paused_until_us != 0 && now >= l->paused_until_us)
		{
			struct epoll_event ev;

			ev.events = EPOLLIN;
			ev.data.ptr = l;
			if (epoll_ctl(epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
				l->paused_until_us = 0;
		}
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

/*
 * Raises the soft open file limit to the hard one.  Service managers start
 * postgres with a soft limit of 1,024 for the sake of select(); this
 * process waits with epoll only, and each connection holds a descriptor.
 */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
	{
		fd_limit = 1024;
		return;
	}
	if (rl.rlim_cur < rl.rlim_max)
	{
		rlim_t		soft = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = soft;
	}
	fd_limit = rl.rlim_cur > INT_MAX ? INT_MAX : (int) rl.rlim_cur;
}

/*
 * Per-port and per-address budgets from the settings, lowered so that both
 * ports full still leave HTTP_FD_RESERVE descriptors: accept() then does
 * not fail for want of one.  Called at start and after a reload.
 */
static void
set_budgets(void)
{
	static int	reported = -1;
	int			fit = Max((fd_limit - HTTP_FD_RESERVE) / 2, 1);

	conn_budget = Min(pg_ha_http_max_connections, fit);
	if (pg_ha_http_max_connections_per_address > 0)
		addr_budget = Min(pg_ha_http_max_connections_per_address, conn_budget);
	else
		addr_budget = Max(conn_budget / 2, 1);
	if (conn_budget < pg_ha_http_max_connections && conn_budget != reported)
		ereport(LOG,
				(errmsg("pg_ha: HTTP connections limited to %d per port by the open file limit",
						conn_budget),
				 errdetail("pg_ha.http_max_connections is %d, and the open file limit of the listener is %d.",
						   pg_ha_http_max_connections, fd_limit),
				 errhint("Raise the hard open file limit of postgres (LimitNOFILE in its systemd unit).")));
	reported = conn_budget;
}

/*
 * Once a minute, says that a port was full: someone opens connections and
 * does not use them, and the listener closed or refused some.
 */
static void
report_pressure(int64 now)
{
	if (now < next_report_us)
		return;
	next_report_us = now + HTTP_PRESSURE_REPORT_US;
	for (size_t i = 0; i < lengthof(listeners); i++)
	{
		HttpPort	port = listeners[i].port;

		if (n_evicted[port] == 0 && n_refused[port] == 0 && n_emfile[port] == 0)
			continue;
		ereport(LOG,
				(errmsg("pg_ha: the %s port had more connections than it keeps open",
						listeners[i].what),
				 errdetail("In the last minute %lld idle or incomplete connections were closed to make room, %lld new connections were refused, and accept() ran out of file descriptors %lld times; the limit is %d connections per port and %d per client address.",
						   (long long) n_evicted[port], (long long) n_refused[port],
						   (long long) n_emfile[port], conn_budget, addr_budget),
				 errhint("A client opens connections and sends no complete request; see pg_ha.http_max_connections.")));
		n_evicted[port] = n_refused[port] = n_emfile[port] = 0;
	}
}

static void
init_connection_state(void)
{
	HASHCTL		ctl;

	raise_fd_limit();
	set_budgets();
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	dlist_init(&lru[HTTP_PORT_API]);
	dlist_init(&lru[HTTP_PORT_METRICS]);
	conns_size = 256;
	conns = MemoryContextAlloc(TopMemoryContext, conns_size * sizeof(HttpConn *));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(ClientKey);
	ctl.entrysize = sizeof(ClientEntry);
	ctl.hcxt = TopMemoryContext;
	clients = hash_create("pg_ha http clients", 256, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
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
	init_connection_state();

	/* both are PGC_POSTMASTER: fixed for the life of this process */
	listeners[0] = (Listener) {"api", HTTP_PORT_API, pg_ha_api_listen, -1, 0, false, 0};
	listeners[1] = (Listener) {"metrics", HTTP_PORT_METRICS, pg_ha_metrics_listen, -1, 0, false, 0};
	http_tls_load();
	http_auth_load();
	http_control_listener_started();

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
			set_budgets();
		}
		if (!PostmasterIsAlive())
			proc_exit(1);

		now = pg_ha_monotonic_us();
		if (now >= next_tick)
		{
			bind_listeners(now);
			expire_connections(now);
			report_pressure(now);
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

		/*
		 * Connections first, new ones after: making room closes connections
		 * whose events may still be in this batch.
		 */
		for (int i = 0; i < n; i++)
		{
			void	   *ptr = events[i].data.ptr;

			if (ptr != &listeners[0] && ptr != &listeners[1])
				handle_conn_event((HttpConn *) ptr, events[i].events, now);
		}
		for (int i = 0; i < n; i++)
		{
			void	   *ptr = events[i].data.ptr;

			if (ptr == &listeners[0] || ptr == &listeners[1])
				accept_connections((Listener *) ptr, now);
		}
		if (nparked > 0)
			unpark_connections(now);
		if (ntls > 0)
			serve_buffered_tls_input(now);
		metrics_after_responses();
	}
}
