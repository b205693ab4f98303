/*
 * conn_url.c - the host and port of a member's conn_url, which the HA
 * worker turns into primary_conninfo.
 *
 * The URL comes from another node's member key: it is parsed strictly,
 * and a host that could break out of a quoted conninfo value is refused.
 * Plain C so the unit tests exercise it without a server.
 */
#include "conn_url.h"

#include <stdio.h>
#include <string.h>

bool
conn_url_host_port(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *p;
	const char *end;
	const char *h;
	const char *hend;
	const char *colon;

	if (url == NULL || hostlen == 0 || portlen == 0)
		return false;
	if (strncmp(url, "postgres://", 11) == 0)
		p = url + 11;
	else if (strncmp(url, "postgresql://", 13) == 0)
		p = url + 13;
	else
		return false;
	end = p + strcspn(p, "/?");
	/* credentials (never used) end at the last '@' of the authority */
	for (const char *c = p; c < end; c++)
		if (*c == '@')
			p = c + 1;
	if (*p == '[')
	{
		/* IPv6 literal: [addr]:port */
		h = p + 1;
		hend = memchr(h, ']', end - h);
		if (hend == NULL || hend + 1 >= end || hend[1] != ':')
			return false;
		colon = hend + 1;
	}
	else
	{
		h = p;
		colon = memchr(p, ':', end - p);
		hend = colon;
	}
	if (colon == NULL || hend == h || (size_t) (hend - h) >= hostlen ||
		end - colon - 1 <= 0 || (size_t) (end - colon - 1) >= portlen)
		return false;
	for (const char *c = colon + 1; c < end; c++)
		if (*c < '0' || *c > '9')
			return false;
	for (const char *c = h; c < hend; c++)
		if (*c <= ' ' || *c == '\'' || *c == '\\' || *c == '@' || *c == '[' || *c == ']' ||
			(*c == ':' && *p != '['))
			return false;
	snprintf(host, hostlen, "%.*s", (int) (hend - h), h);
	snprintf(port, portlen, "%.*s", (int) (end - colon - 1), colon + 1);
	return true;
}
