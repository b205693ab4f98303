/*
 * fuzz_etcd_reply.c - libFuzzer target for every etcd reply parser.
 *
 * The first byte picks the parser, the rest is the reply body, so one
 * corpus covers range, txn, lease, auth, watch and error replies.  The
 * parsers must return an error for anything malformed, never crash, read
 * out of bounds or leak (ASan/LSan watch for that).  Build and run with
 * `make fuzz` (see docs/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		err[ETCD_ERRMSG_LEN];
	const char *body;
	size_t		len;

	if (size < 1)
		return 0;
	body = (const char *) data + 1;
	len = size - 1;

	switch (data[0] % 7)
	{
		case 0:
			{
				EtcdKVList	list;

				if (etcd_parse_range_reply(body, len, &list, err, sizeof(err)) == ETCD_OK)
					etcd_kvlist_free(&list);
				break;
			}
		case 1:
			{
				EtcdKVList	list;
				bool		succeeded;

				if (etcd_parse_txn_reply(body, len, &succeeded, &list, err, sizeof(err)) == ETCD_OK)
					etcd_kvlist_free(&list);
				break;
			}
		case 2:
			{
				int64_t		id,
							ttl;

				etcd_parse_lease_reply(body, len, &id, &ttl, err, sizeof(err));
				break;
			}
		case 3:
			{
				char		token[64];

				etcd_parse_auth_reply(body, len, token, sizeof(token), err, sizeof(err));
				break;
			}
		case 4:
			{
				EtcdEventList events;
				bool		canceled;

				memset(&events, 0, sizeof(events));
				etcd_parse_watch_message(body, len, &events, &canceled, err, sizeof(err));
				etcd_eventlist_free(&events);
				break;
			}
		case 5:
			etcd_parse_error_reply(body, len, err, sizeof(err));
			break;
		case 6:
			{
				/* base64 and endpoint lists: NUL-terminated inputs */
				char	   *text = malloc(len + 1);
				char		urls[ETCD_MAX_ENDPOINTS][ETCD_MAX_URL];
				size_t		outlen;
				char	   *decoded;

				if (text == NULL)
					return 0;
				memcpy(text, body, len);
				text[len] = '\0';
				decoded = etcd_base64_decode(text, &outlen);
				if (decoded)
				{
					char	   *again = etcd_base64_encode(decoded, outlen);

					/* decoding then encoding must give the input back */
					if (again == NULL || strcmp(again, text) != 0)
						abort();
					free(again);
					free(decoded);
				}
				etcd_parse_endpoints(text, urls, ETCD_MAX_ENDPOINTS, err, sizeof(err));
				free(text);
				break;
			}
	}
	return 0;
}
