/*
 * conn_url.h - the host and port of a member's conn_url (conn_url.c).
 *
 * Plain C, no backend symbols: the HA worker and the unit tests link it.
 */
#ifndef PG_HA_CONN_URL_H
#define PG_HA_CONN_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * "postgres://[user[:password]@]host:port[/db][?opts]" -> host, port (a
 * bracketed IPv6 host loses its brackets).  False if it is not that shape,
 * host or port do not fit, the port is not digits, or the host holds
 * characters a conninfo value must not (space, quote, backslash).
 */
extern bool conn_url_host_port(const char *url, char *host, size_t hostlen,
							   char *port, size_t portlen);

#endif							/* PG_HA_CONN_URL_H */
