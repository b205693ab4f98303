/*
 * fuzz_http_request.c - libFuzzer target for the listener's request parsing
 * (src/http_parse.c on libhttp-parser) and the query-string helpers the
 * health endpoints use.
 *
 * The first input byte chooses how the rest is cut into reads (1..64 bytes
 * at a time), so request boundaries fall at every position as they do on a
 * real socket.  Checked invariants, beyond the sanitizers: the parser never
 * claims more bytes than it was given, always makes progress or stops with
 * a verdict, and what it hands over is NUL-terminated and within bounds.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

static void
use_request(const HttpRequest *req)
{
	char		val[256];
	uint64_t	size;

	if (strlen(req->path) > HTTP_MAX_URL || strlen(req->query) > HTTP_MAX_URL)
		abort();
	if (req->path[0] == '\0')
		abort();
	if (req->body_len > HTTP_MAX_KEPT_BODY || (req->body_len > 0 && req->body[req->body_len] != '\0'))
		abort();
	if (http_query_get(req->query, "lag", val, sizeof(val)))
		(void) http_parse_size(val, &size);
	(void) http_query_get(req->query, "tag_nofailover", val, sizeof(val));
	(void) http_url_decode(req->path, strlen(req->path), val, sizeof(val));
	(void) http_status_text(req->method == HTTP_M_OTHER ? 405 : 200);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	HttpRequestParser p;
	size_t		chunk;
	size_t		off = 0;
	int			requests = 0;

	if (size < 1)
		return 0;
	chunk = (data[0] % 64) + 1;
	data++;
	size--;

	http_request_parser_init(&p);
	while (off < size)
	{
		size_t		avail = size - off < chunk ? size - off : chunk;
		size_t		pos = 0;

		/* like the listener: feed one read until consumed or a verdict */
		while (pos < avail)
		{
			size_t		n = http_request_feed(&p, (const char *) data + off + pos, avail - pos);

			if (n > avail - pos)
				abort();
			pos += n;
			if (p.complete)
			{
				use_request(&p.req);
				http_request_next(&p);
				requests++;
			}
			else if (p.error_status != 0)
			{
				if (p.error_status < 400 || p.error_status > 499)
					abort();
				http_request_parser_free(&p);
				return 0;
			}
			else if (n == 0)
				abort();		/* no progress, no verdict */
		}
		off += avail;
	}
	(void) http_request_in_progress(&p);
	(void) requests;
	http_request_parser_free(&p);
	return 0;
}
