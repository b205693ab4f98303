/*
 * http_parse.c - HTTP/1.x request parsing for the embedded listener, on
 * libhttp-parser (Debian libhttp-parser-dev, the nodejs parser: streaming,
 * no allocation, years of fuzzing behind it) with pg_ha's own bounds on top.
 *
 * Plain C without postgres headers: the fuzz target links this file alone.
 *
 * Bounds: request line plus headers at most HTTP_MAX_HEADER_BYTES (431),
 * URL at most HTTP_MAX_URL (414), body at most HTTP_MAX_BODY (413; the
 * first HTTP_MAX_KEPT_BODY bytes are kept for the control API, in a buffer
 * allocated only when a body arrives), anything the parser rejects is a 400.
 * The parser is paused after each complete request so that pipelined
 * requests are answered one at a time, in order, and a client cannot make
 * us queue answers faster than it reads them.
 */
#include "http.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define Min_size(a, b) ((a) < (b) ? (a) : (b))

static int
on_message_begin(http_parser *hp)
{
	HttpRequestParser *p = hp->data;

	p->in_message = true;
	p->url_len = 0;
	p->header_bytes = 0;
	p->body_bytes = 0;
	p->field_len = 0;
	p->in_value = false;
	return 0;
}

static int
count_header_bytes(HttpRequestParser *p, size_t len)
{
	/* +2 for the CRLF or ": " the parser does not hand us */
	p->header_bytes += len + 2;
	if (p->header_bytes > HTTP_MAX_HEADER_BYTES)
	{
		p->error_status = 431;
		return -1;
	}
	return 0;
}

static int
on_url(http_parser *hp, const char *at, size_t len)
{
	HttpRequestParser *p = hp->data;

	if (p->url_len + len > HTTP_MAX_URL)
	{
		p->error_status = 414;
		return -1;
	}
	memcpy(p->url + p->url_len, at, len);
	p->url_len += len;
	p->url[p->url_len] = '\0';
	return count_header_bytes(p, len);
}

/*
 * A field name or value may come in several pieces (split across reads):
 * a field piece after a value starts a new header.  Only the name's first
 * bytes are kept, enough to recognise the headers pg_ha reads.
 */
static int
on_header_field(http_parser *hp, const char *at, size_t len)
{
	HttpRequestParser *p = hp->data;
	size_t		take;

	if (p->in_value)
	{
		p->field_len = 0;
		p->in_value = false;
	}
	take = Min_size(len, sizeof(p->field) - p->field_len);
	memcpy(p->field + p->field_len, at, take);
	p->field_len += take;
	if (take < len)
		p->field_len = sizeof(p->field);	/* longer than any name we read */
	return count_header_bytes(p, len);
}

static void
add_authorization(HttpRequest *req, bool first_piece, const char *at, size_t len)
{
	if (first_piece && req->has_authorization)
		req->authorization_bad = true;	/* repeated */
	req->has_authorization = true;
	if (req->authorization_len + len > HTTP_MAX_AUTHORIZATION)
	{
		req->authorization_bad = true;
		return;
	}
	memcpy(req->authorization + req->authorization_len, at, len);
	req->authorization_len += len;
	req->authorization[req->authorization_len] = '\0';
}

static int
on_header_value(http_parser *hp, const char *at, size_t len)
{
	HttpRequestParser *p = hp->data;
	bool		first_piece = !p->in_value;

	if (first_piece)
	{
		p->in_value = true;
		p->value_is_authorization = p->field_len == 13 &&
			strncasecmp(p->field, "authorization", 13) == 0;
	}
	if (p->value_is_authorization)
		add_authorization(&p->req, first_piece, at, len);
	return count_header_bytes(p, len);
}

static int
on_headers_complete(http_parser *hp)
{
	HttpRequestParser *p = hp->data;
	HttpRequest *req = &p->req;
	struct http_parser_url u;
	const char *m;

	if (hp->content_length != ULLONG_MAX && hp->content_length > HTTP_MAX_BODY)
	{
		p->error_status = 413;
		return -1;
	}

	/* http_parser takes any digit; HTTP/0.x and 2+ are not spoken here */
	if (hp->http_major != 1)
	{
		p->error_status = 400;
		return -1;
	}

	switch (hp->method)
	{
		case HTTP_GET:
			req->method = HTTP_M_GET;
			break;
		case HTTP_HEAD:
			req->method = HTTP_M_HEAD;
			break;
		case HTTP_OPTIONS:
			req->method = HTTP_M_OPTIONS;
			break;
		default:
			req->method = HTTP_M_OTHER;
			break;
	}
	m = http_method_str((enum http_method) hp->method);
	req->method_name = m ? m : "?";
	req->http10 = (hp->http_major == 1 && hp->http_minor == 0);
	req->keep_alive = http_should_keep_alive(hp) != 0;

	/* origin-form ("/path?query") or absolute-form ("http://h/path?query") */
	http_parser_url_init(&u);
	if (p->url_len == 0 ||
		http_parser_parse_url(p->url, p->url_len, hp->method == HTTP_CONNECT, &u) != 0)
	{
		p->error_status = 400;
		return -1;
	}
	if (u.field_set & (1 << UF_PATH))
	{
		memcpy(req->path, p->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
		req->path[u.field_data[UF_PATH].len] = '\0';
	}
	else
		strcpy(req->path, "/");
	if (u.field_set & (1 << UF_QUERY))
	{
		memcpy(req->query, p->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
		req->query[u.field_data[UF_QUERY].len] = '\0';
	}
	else
		req->query[0] = '\0';

	/* a HEAD response has no body: tell the parser not to expect one */
	return 0;
}

static int
on_body(http_parser *hp, const char *at, size_t len)
{
	HttpRequestParser *p = hp->data;

	HttpRequest *req = &p->req;
	size_t		take;

	p->body_bytes += len;
	if (p->body_bytes > HTTP_MAX_BODY)
	{
		p->error_status = 413;
		return -1;
	}
	if (p->body_buf == NULL)
		p->body_buf = malloc(HTTP_MAX_KEPT_BODY + 1);
	if (p->body_buf == NULL)
	{
		req->body_truncated = true;
		return 0;
	}
	req->body = p->body_buf;
	take = Min_size(len, HTTP_MAX_KEPT_BODY - req->body_len);
	memcpy(p->body_buf + req->body_len, at, take);
	req->body_len += take;
	p->body_buf[req->body_len] = '\0';
	if (take < len)
		req->body_truncated = true;
	return 0;
}

static int
on_message_complete(http_parser *hp)
{
	HttpRequestParser *p = hp->data;

	p->complete = true;
	p->in_message = false;
	/* stop here: the caller answers this request before reading the next */
	http_parser_pause(hp, 1);
	return 0;
}

void
http_request_parser_init(HttpRequestParser *p)
{
	memset(p, 0, sizeof(*p));
	http_parser_init(&p->parser, HTTP_REQUEST);
	p->parser.data = p;
	http_parser_settings_init(&p->settings);
	p->settings.on_message_begin = on_message_begin;
	p->settings.on_url = on_url;
	p->settings.on_header_field = on_header_field;
	p->settings.on_header_value = on_header_value;
	p->settings.on_headers_complete = on_headers_complete;
	p->settings.on_body = on_body;
	p->settings.on_message_complete = on_message_complete;
}

void
http_request_parser_free(HttpRequestParser *p)
{
	free(p->body_buf);
	p->body_buf = NULL;
}

size_t
http_request_feed(HttpRequestParser *p, const char *data, size_t len)
{
	size_t		n;
	enum http_errno err;

	if (p->complete || p->error_status != 0 || len == 0)
		return 0;
	n = http_parser_execute(&p->parser, &p->settings, data, len);
	err = HTTP_PARSER_ERRNO(&p->parser);
	if (p->complete)
	{
		/*
		 * Paused after on_message_complete; http_parser may report the byte
		 * that ended the message as not consumed when paused at its end.
		 */
		return n;
	}
	if (err != HPE_OK)
	{
		if (p->error_status == 0)
			p->error_status = 400;
		return n;
	}
	if (p->parser.upgrade)
	{
		/* Upgrade / CONNECT: not spoken here */
		p->error_status = 400;
		return n;
	}
	return n;
}

void
http_request_next(HttpRequestParser *p)
{
	p->complete = false;
	memset(&p->req, 0, sizeof(p->req));
	http_parser_pause(&p->parser, 0);
}

const char *
http_request_authorization(const HttpRequest *req)
{
	if (!req->has_authorization || req->authorization_bad)
		return NULL;
	return req->authorization;
}

bool
http_request_in_progress(const HttpRequestParser *p)
{
	return p->in_message && !p->complete;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
http_url_decode(const char *src, size_t srclen, char *dst, size_t dstlen)
{
	size_t		o = 0;

	if (dstlen == 0)
		return false;
	for (size_t i = 0; i < srclen; i++)
	{
		int			c = (unsigned char) src[i];

		if (c == '%')
		{
			int			hi,
						lo;

			if (i + 2 >= srclen)
				return false;
			hi = hexval((unsigned char) src[i + 1]);
			lo = hexval((unsigned char) src[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = hi * 16 + lo;
			i += 2;
		}
		else if (c == '+')
			c = ' ';
		if (c == '\0' || o + 1 >= dstlen)
			return false;
		dst[o++] = (char) c;
	}
	dst[o] = '\0';
	return true;
}

bool
http_query_get(const char *query, const char *key, char *out, size_t outlen)
{
	size_t		keylen = strlen(key);
	const char *p = query;

	while (p && *p)
	{
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', end - p);
		const char *kend = eq ? eq : end;

		if ((size_t) (kend - p) == keylen && memcmp(p, key, keylen) == 0)
		{
			const char *v = eq ? eq + 1 : end;

			return http_url_decode(v, end - v, out, outlen);
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

bool
http_parse_size(const char *s, uint64_t *out)
{
	uint64_t	v = 0;
	uint64_t	mult = 1;
	const char *p = s;
	char		unit[4];
	size_t		ul = 0;

	while (*p == ' ')
		p++;
	if (!isdigit((unsigned char) *p))
		return false;
	for (; isdigit((unsigned char) *p); p++)
	{
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t) (*p - '0');
	}
	while (*p == ' ')
		p++;
	while (*p && *p != ' ' && ul < sizeof(unit) - 1)
		unit[ul++] = *p++;
	unit[ul] = '\0';
	while (*p == ' ')
		p++;
	if (*p != '\0')
		return false;
	/* Patroni's parse_int(value, 'B') units, which are PostgreSQL's */
	if (ul == 0 || strcmp(unit, "B") == 0)
		mult = 1;
	else if (strcmp(unit, "kB") == 0)
		mult = 1024;
	else if (strcmp(unit, "MB") == 0)
		mult = 1024 * 1024;
	else if (strcmp(unit, "GB") == 0)
		mult = 1024ULL * 1024 * 1024;
	else if (strcmp(unit, "TB") == 0)
		mult = 1024ULL * 1024 * 1024 * 1024;
	else
		return false;
	if (v > UINT64_MAX / mult)
		return false;
	*out = v * mult;
	return true;
}

const char *
http_status_text(int status)
{
	switch (status)
	{
		case 200:
			return "OK";
		case 400:
			return "Bad Request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not Found";
		case 405:
			return "Method Not Allowed";
		case 408:
			return "Request Timeout";
		case 413:
			return "Payload Too Large";
		case 414:
			return "URI Too Long";
		case 431:
			return "Request Header Fields Too Large";
		case 500:
			return "Internal Server Error";
		case 503:
			return "Service Unavailable";
		default:
			return "Unknown";
	}
}
