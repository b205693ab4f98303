/*
 * test_conn_url.c - conn_url_host_port(): member conn_urls into the host
 * and port the HA worker puts into primary_conninfo.
 */
#include <string.h>

#include "conn_url.h"
#include "unit.h"

typedef struct UrlCase
{
	const char *url;
	bool		ok;
	const char *host;
	const char *port;
} UrlCase;

static const UrlCase cases[] = {
	{"postgres://10.0.0.1:5432/postgres", true, "10.0.0.1", "5432"},
	{"postgresql://db1.example.com:6543/postgres", true, "db1.example.com", "6543"},
	{"postgres://127.0.0.1:5432", true, "127.0.0.1", "5432"},
	{"postgres://replicator@10.0.0.1:5432/postgres", true, "10.0.0.1", "5432"},
	{"postgres://u:p@ss@10.0.0.1:5432/postgres", true, "10.0.0.1", "5432"},
	{"postgres://u@10.0.0.1:5432", true, "10.0.0.1", "5432"},	/* no path */
	{"postgres://10.0.0.1:5432?sslmode=require", true, "10.0.0.1", "5432"},
	{"postgres://[::1]:5432/postgres", true, "::1", "5432"},
	{"postgres://[fe80::1]:5433", true, "fe80::1", "5433"},
	{"http://10.0.0.1:5432/postgres", false},
	{"postgres://10.0.0.1/postgres", false},	/* no port */
	{"postgres://:5432/postgres", false},	/* no host */
	{"postgres://10.0.0.1:/postgres", false},	/* empty port */
	{"postgres://10.0.0.1:54x2/postgres", false},
	{"postgres://10.0.0.1:5432:1/postgres", false},
	{"postgres://bad host:5432/postgres", false},
	{"postgres://h'ost:5432/postgres", false},
	{"postgres://h\\ost:5432/postgres", false},
	{"postgres://[::1/postgres", false},
	{"postgres://[::1]5432/postgres", false},
	{"postgres://::1:5432/postgres", false},
	{"postgres://10.0.0.1:5432123456789012345/postgres", false},	/* port too long */
	{"postgres://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:5432/", false},
	{"", false},
	{"postgres://", false},
};

void
unit_conn_url(void)
{
	for (size_t i = 0; i < lengthof(cases); i++)
	{
		const UrlCase *c = &cases[i];
		char		host[64] = "";
		char		port[16] = "";
		bool		ok = conn_url_host_port(c->url, host, sizeof(host), port, sizeof(port));

		if (c->ok)
			UNIT_CHECK(ok && strcmp(host, c->host) == 0 && strcmp(port, c->port) == 0,
					   "\"%s\": ok=%d host=\"%s\" port=\"%s\"", c->url, ok, host, port);
		else
			UNIT_CHECK(!ok, "\"%s\" should be refused (host=\"%s\" port=\"%s\")", c->url, host, port);
	}
}
