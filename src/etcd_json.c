/*
 * etcd_json.c - building requests for, and parsing replies of, the etcd v3
 * JSON gateway.
 *
 * Nothing here touches the network, so the fuzz targets can feed it any
 * bytes.  The gateway's conventions (etcd 3.4): keys and values are base64,
 * int64 fields are JSON strings (lease IDs do not fit in a double), and
 * zero values are omitted (a missing "succeeded" means false, a missing
 * "TTL" means 0).  Every accessor checks the JSON type it reads; anything
 * unexpected is a protocol error, never a crash.
 */
#include "etcd.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static void set_error(char *errbuf, size_t errlen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
set_error(char *errbuf, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (errbuf == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

/* ---------- base64 ---------- */

static const char b64_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
etcd_base64_encode(const char *data, size_t len)
{
	const unsigned char *in = (const unsigned char *) data;
	size_t		outlen;
	char	   *out;
	char	   *p;
	size_t		i;

	if (len > (SIZE_MAX / 4) * 3 - 3)
		return NULL;
	outlen = ((len + 2) / 3) * 4;
	out = malloc(outlen + 1);
	if (out == NULL)
		return NULL;
	p = out;
	for (i = 0; i + 2 < len; i += 3)
	{
		*p++ = b64_alphabet[in[i] >> 2];
		*p++ = b64_alphabet[((in[i] & 0x03) << 4) | (in[i + 1] >> 4)];
		*p++ = b64_alphabet[((in[i + 1] & 0x0f) << 2) | (in[i + 2] >> 6)];
		*p++ = b64_alphabet[in[i + 2] & 0x3f];
	}
	if (i < len)
	{
		*p++ = b64_alphabet[in[i] >> 2];
		if (i + 1 < len)
		{
			*p++ = b64_alphabet[((in[i] & 0x03) << 4) | (in[i + 1] >> 4)];
			*p++ = b64_alphabet[(in[i + 1] & 0x0f) << 2];
		}
		else
		{
			*p++ = b64_alphabet[(in[i] & 0x03) << 4];
			*p++ = '=';
		}
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes padded standard base64; NULL on malformed input. */
char *
etcd_base64_decode(const char *text, size_t *len)
{
	size_t		inlen = strlen(text);
	size_t		pad = 0;
	char	   *out;
	size_t		o = 0;
	size_t		i;

	if (inlen % 4 != 0)
		return NULL;
	if (inlen > 0 && text[inlen - 1] == '=')
		pad++;
	if (inlen > 1 && text[inlen - 2] == '=')
		pad++;
	out = malloc(inlen / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	for (i = 0; i < inlen; i += 4)
	{
		int			v[4];
		int			k;
		bool		last = (i + 4 == inlen);

		for (k = 0; k < 4; k++)
		{
			unsigned char c = (unsigned char) text[i + k];

			if (c == '=' && last && k >= 4 - (int) pad)
				v[k] = 0;
			else if ((v[k] = b64_value(c)) < 0)
			{
				free(out);
				return NULL;
			}
		}
		/* canonical form only: the bits padding drops must be zero */
		if (last && ((pad == 2 && (v[1] & 0x0f) != 0) || (pad == 1 && (v[2] & 0x03) != 0)))
		{
			free(out);
			return NULL;
		}
		out[o++] = (char) ((v[0] << 2) | (v[1] >> 4));
		if (!(last && pad == 2))
			out[o++] = (char) (((v[1] & 0x0f) << 4) | (v[2] >> 2));
		if (!(last && pad >= 1))
			out[o++] = (char) (((v[2] & 0x03) << 6) | v[3]);
	}
	out[o] = '\0';
	*len = o;
	return out;
}

char *
etcd_prefix_end(const char *prefix, size_t *len)
{
	size_t		n = strlen(prefix);
	char	   *end = malloc(n + 1);

	if (end == NULL)
		return NULL;
	memcpy(end, prefix, n + 1);
	while (n > 0)
	{
		unsigned char c = (unsigned char) end[n - 1];

		if (c < 0xff)
		{
			end[n - 1] = (char) (c + 1);
			end[n] = '\0';
			*len = n;
			return end;
		}
		n--;
	}
	/* every byte is 0xff: "\0" means "to the end of the keyspace" */
	end[0] = '\0';
	*len = 1;
	return end;
}

/* ---------- JSON field accessors ---------- */

/*
 * An int64 field: a JSON string of digits (gateway convention) or, leniently,
 * an integral JSON number.  Absent means 0.
 */
static bool
get_int64(const cJSON *obj, const char *name, int64_t *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	*out = 0;
	if (item == NULL || cJSON_IsNull(item))
		return true;
	if (cJSON_IsString(item) && item->valuestring != NULL)
	{
		char	   *end;
		long long	v;

		if (item->valuestring[0] == '\0' || strlen(item->valuestring) > 20)
			return false;
		errno = 0;
		v = strtoll(item->valuestring, &end, 10);
		if (errno != 0 || *end != '\0')
			return false;
		*out = (int64_t) v;
		return true;
	}
	if (cJSON_IsNumber(item))
	{
		double		d = item->valuedouble;

		/* beyond 2^53 a double cannot carry an exact int64 */
		if (d != d || d > 9007199254740992.0 || d < -9007199254740992.0 ||
			d != (double) (int64_t) d)
			return false;
		*out = (int64_t) d;
		return true;
	}
	return false;
}

static bool
get_bool(const cJSON *obj, const char *name, bool *out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	*out = false;
	if (item == NULL || cJSON_IsNull(item))
		return true;
	if (!cJSON_IsBool(item))
		return false;
	*out = cJSON_IsTrue(item);
	return true;
}

/* A base64 string field, decoded; absent means empty. */
static bool
get_b64(const cJSON *obj, const char *name, char **out, size_t *len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	*out = NULL;
	*len = 0;
	if (item == NULL || cJSON_IsNull(item))
	{
		*out = calloc(1, 1);
		return *out != NULL;
	}
	if (!cJSON_IsString(item) || item->valuestring == NULL)
		return false;
	*out = etcd_base64_decode(item->valuestring, len);
	return *out != NULL;
}

void
etcd_kv_free(EtcdKV *kv)
{
	if (kv == NULL)
		return;
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void
etcd_kvlist_free(EtcdKVList *list)
{
	int			i;

	if (list == NULL)
		return;
	for (i = 0; i < list->count; i++)
		etcd_kv_free(&list->kvs[i]);
	free(list->kvs);
	memset(list, 0, sizeof(*list));
}

void
etcd_eventlist_free(EtcdEventList *list)
{
	int			i;

	if (list == NULL)
		return;
	for (i = 0; i < list->count; i++)
		etcd_kv_free(&list->events[i].kv);
	free(list->events);
	memset(list, 0, sizeof(*list));
}

static bool
parse_kv(const cJSON *obj, EtcdKV *kv)
{
	size_t		keylen;

	memset(kv, 0, sizeof(*kv));
	if (!cJSON_IsObject(obj))
		return false;
	if (!get_b64(obj, "key", &kv->key, &keylen) ||
		!get_b64(obj, "value", &kv->value, &kv->value_len) ||
		!get_int64(obj, "create_revision", &kv->create_revision) ||
		!get_int64(obj, "mod_revision", &kv->mod_revision) ||
		!get_int64(obj, "version", &kv->version) ||
		!get_int64(obj, "lease", &kv->lease))
	{
		etcd_kv_free(kv);
		return false;
	}
	/* keys are names: one with an embedded NUL is not ours to handle */
	if (strlen(kv->key) != keylen)
	{
		etcd_kv_free(kv);
		return false;
	}
	return true;
}

/* Appends the "kvs" array of obj to list. */
static bool
append_kvs(const cJSON *obj, EtcdKVList *list)
{
	const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(obj, "kvs");
	const cJSON *item;
	int			n;
	EtcdKV	   *grown;

	if (kvs == NULL || cJSON_IsNull(kvs))
		return true;
	if (!cJSON_IsArray(kvs))
		return false;
	n = cJSON_GetArraySize(kvs);
	if (n == 0)
		return true;
	if (n < 0 || n > INT_MAX / 2 - list->count)
		return false;
	grown = realloc(list->kvs, sizeof(EtcdKV) * (size_t) (list->count + n));
	if (grown == NULL)
		return false;
	list->kvs = grown;
	cJSON_ArrayForEach(item, kvs)
	{
		if (!parse_kv(item, &list->kvs[list->count]))
			return false;
		list->count++;
	}
	return true;
}

static bool
header_revision(const cJSON *obj, int64_t *revision)
{
	const cJSON *header = cJSON_GetObjectItemCaseSensitive(obj, "header");

	*revision = 0;
	if (header == NULL)
		return true;
	if (!cJSON_IsObject(header))
		return false;
	return get_int64(header, "revision", revision);
}

/*
 * Parses body into a JSON object.  An {"error": ...} reply becomes
 * ETCD_ERR_SERVER (or ETCD_ERR_AUTH) with etcd's message.
 */
static EtcdStatus
parse_object(const char *body, size_t len, cJSON **root,
			 char *errbuf, size_t errlen)
{
	const cJSON *error;

	*root = NULL;
	if (body == NULL || len == 0)
	{
		set_error(errbuf, errlen, "empty reply from etcd");
		return ETCD_ERR_PROTOCOL;
	}
	*root = cJSON_ParseWithLength(body, len);
	if (*root == NULL || !cJSON_IsObject(*root))
	{
		set_error(errbuf, errlen, "etcd reply is not a JSON object");
		cJSON_Delete(*root);
		*root = NULL;
		return ETCD_ERR_PROTOCOL;
	}
	error = cJSON_GetObjectItemCaseSensitive(*root, "error");
	if (error != NULL)
	{
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(*root, "message");
		const char *text = NULL;
		EtcdStatus	status = ETCD_ERR_SERVER;

		/* 3.4 puts the text in "error"; streams nest an object there */
		if (cJSON_IsString(error))
			text = error->valuestring;
		else if (cJSON_IsObject(error))
			msg = cJSON_GetObjectItemCaseSensitive(error, "message");
		if (text == NULL && cJSON_IsString(msg))
			text = msg->valuestring;
		if (text == NULL)
			text = "(no message)";
		if (strstr(text, "auth") != NULL || strstr(text, "user name") != NULL ||
			strstr(text, "permission denied") != NULL)
			status = ETCD_ERR_AUTH;
		set_error(errbuf, errlen, "etcd error: %.300s", text);
		cJSON_Delete(*root);
		*root = NULL;
		return status;
	}
	return ETCD_OK;
}

EtcdStatus
etcd_parse_error_reply(const char *body, size_t len, char *errbuf, size_t errlen)
{
	cJSON	   *root;
	EtcdStatus	status = parse_object(body, len, &root, errbuf, errlen);

	cJSON_Delete(root);
	return status;
}

EtcdStatus
etcd_parse_range_reply(const char *body, size_t len, EtcdKVList *out,
					   char *errbuf, size_t errlen)
{
	cJSON	   *root;
	EtcdStatus	status;

	memset(out, 0, sizeof(*out));
	status = parse_object(body, len, &root, errbuf, errlen);
	if (status != ETCD_OK)
		return status;
	if (!header_revision(root, &out->revision) || !append_kvs(root, out))
	{
		set_error(errbuf, errlen, "malformed range reply from etcd");
		etcd_kvlist_free(out);
		cJSON_Delete(root);
		return ETCD_ERR_PROTOCOL;
	}
	cJSON_Delete(root);
	return out->count > 0 ? ETCD_OK : ETCD_NOT_FOUND;
}

EtcdStatus
etcd_parse_lease_reply(const char *body, size_t len, int64_t *lease_id,
					   int64_t *ttl, char *errbuf, size_t errlen)
{
	cJSON	   *root;
	const cJSON *obj;
	EtcdStatus	status;

	*lease_id = 0;
	*ttl = 0;
	status = parse_object(body, len, &root, errbuf, errlen);
	if (status != ETCD_OK)
		return status;
	/* keepalive is a stream: its message is wrapped in "result" */
	obj = cJSON_GetObjectItemCaseSensitive(root, "result");
	if (obj == NULL)
		obj = root;
	if (!cJSON_IsObject(obj) ||
		!get_int64(obj, "ID", lease_id) || !get_int64(obj, "TTL", ttl))
	{
		set_error(errbuf, errlen, "malformed lease reply from etcd");
		cJSON_Delete(root);
		return ETCD_ERR_PROTOCOL;
	}
	cJSON_Delete(root);
	if (*ttl <= 0)
	{
		set_error(errbuf, errlen, "lease not found or expired");
		return ETCD_NOT_FOUND;
	}
	return ETCD_OK;
}

EtcdStatus
etcd_parse_txn_reply(const char *body, size_t len, bool *succeeded,
					 EtcdKVList *ranges, char *errbuf, size_t errlen)
{
	cJSON	   *root;
	const cJSON *responses;
	const cJSON *item;
	EtcdStatus	status;
	EtcdKVList	scratch;

	*succeeded = false;
	if (ranges == NULL)
		ranges = &scratch;
	memset(ranges, 0, sizeof(*ranges));
	status = parse_object(body, len, &root, errbuf, errlen);
	if (status != ETCD_OK)
		return status;
	if (!get_bool(root, "succeeded", succeeded) ||
		!header_revision(root, &ranges->revision))
		goto malformed;
	responses = cJSON_GetObjectItemCaseSensitive(root, "responses");
	if (responses != NULL && !cJSON_IsNull(responses))
	{
		if (!cJSON_IsArray(responses))
			goto malformed;
		cJSON_ArrayForEach(item, responses)
		{
			const cJSON *range;

			if (!cJSON_IsObject(item))
				goto malformed;
			range = cJSON_GetObjectItemCaseSensitive(item, "response_range");
			if (range == NULL)
				continue;
			if (!cJSON_IsObject(range) || !append_kvs(range, ranges))
				goto malformed;
		}
	}
	cJSON_Delete(root);
	if (ranges == &scratch)
		etcd_kvlist_free(&scratch);
	return ETCD_OK;

malformed:
	set_error(errbuf, errlen, "malformed txn reply from etcd");
	etcd_kvlist_free(ranges);
	cJSON_Delete(root);
	*succeeded = false;
	return ETCD_ERR_PROTOCOL;
}

EtcdStatus
etcd_parse_auth_reply(const char *body, size_t len, char *token,
					  size_t tokenlen, char *errbuf, size_t errlen)
{
	cJSON	   *root;
	const cJSON *item;
	EtcdStatus	status;

	token[0] = '\0';
	status = parse_object(body, len, &root, errbuf, errlen);
	if (status != ETCD_OK)
		return status == ETCD_ERR_SERVER ? ETCD_ERR_AUTH : status;
	item = cJSON_GetObjectItemCaseSensitive(root, "token");
	if (!cJSON_IsString(item) || item->valuestring == NULL ||
		item->valuestring[0] == '\0' || strlen(item->valuestring) >= tokenlen ||
		strpbrk(item->valuestring, "\r\n") != NULL)
	{
		set_error(errbuf, errlen, "malformed authenticate reply from etcd");
		cJSON_Delete(root);
		return ETCD_ERR_PROTOCOL;
	}
	strcpy(token, item->valuestring);
	cJSON_Delete(root);
	return ETCD_OK;
}

EtcdStatus
etcd_parse_watch_message(const char *line, size_t len, EtcdEventList *out,
						 bool *canceled, char *errbuf, size_t errlen)
{
	cJSON	   *root;
	const cJSON *result;
	const cJSON *events;
	const cJSON *item;
	EtcdStatus	status;
	int			n;

	*canceled = false;
	status = parse_object(line, len, &root, errbuf, errlen);
	if (status != ETCD_OK)
		return status;
	result = cJSON_GetObjectItemCaseSensitive(root, "result");
	if (!cJSON_IsObject(result) || !get_bool(result, "canceled", canceled) ||
		!header_revision(result, &out->revision))
		goto malformed;
	if (*canceled)
	{
		const cJSON *reason = cJSON_GetObjectItemCaseSensitive(result, "cancel_reason");
		int64_t		compact = 0;

		get_int64(result, "compact_revision", &compact);
		set_error(errbuf, errlen, "etcd canceled the watch%s%.200s (compact revision %lld)",
				  cJSON_IsString(reason) ? ": " : "",
				  cJSON_IsString(reason) ? reason->valuestring : "",
				  (long long) compact);
		cJSON_Delete(root);
		return ETCD_OK;
	}
	events = cJSON_GetObjectItemCaseSensitive(result, "events");
	if (events == NULL || cJSON_IsNull(events))
	{
		cJSON_Delete(root);
		return ETCD_OK;
	}
	if (!cJSON_IsArray(events))
		goto malformed;
	n = cJSON_GetArraySize(events);
	if (n > 0)
	{
		EtcdEvent  *grown;

		if (n > INT_MAX / 2 - out->count)
			goto malformed;
		grown = realloc(out->events, sizeof(EtcdEvent) * (size_t) (out->count + n));
		if (grown == NULL)
			goto malformed;
		out->events = grown;
	}
	cJSON_ArrayForEach(item, events)
	{
		const cJSON *type;
		EtcdEvent  *ev = &out->events[out->count];

		if (!cJSON_IsObject(item))
			goto malformed;
		type = cJSON_GetObjectItemCaseSensitive(item, "type");
		/* PUT is the zero value of the enum, so the gateway omits it */
		if (type == NULL || (cJSON_IsString(type) && strcmp(type->valuestring, "PUT") == 0))
			ev->type = ETCD_EVENT_PUT;
		else if (cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0)
			ev->type = ETCD_EVENT_DELETE;
		else
			goto malformed;
		if (!parse_kv(cJSON_GetObjectItemCaseSensitive(item, "kv"), &ev->kv))
			goto malformed;
		out->count++;
	}
	cJSON_Delete(root);
	return ETCD_OK;

malformed:
	set_error(errbuf, errlen, "malformed watch message from etcd");
	cJSON_Delete(root);
	return ETCD_ERR_PROTOCOL;
}

/* ---------- request bodies ---------- */

static bool
add_b64(cJSON *obj, const char *name, const char *data, size_t len)
{
	char	   *enc = etcd_base64_encode(data, len);
	bool		ok;

	if (enc == NULL)
		return false;
	ok = cJSON_AddStringToObject(obj, name, enc) != NULL;
	free(enc);
	return ok;
}

static bool
add_int64(cJSON *obj, const char *name, int64_t v)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%lld", (long long) v);
	return cJSON_AddStringToObject(obj, name, buf) != NULL;
}

/* key plus, for a prefix, range_end */
static bool
add_key_range(cJSON *obj, const char *key, bool prefix)
{
	if (!add_b64(obj, "key", key, strlen(key)))
		return false;
	if (prefix)
	{
		size_t		endlen;
		char	   *end = etcd_prefix_end(key, &endlen);
		bool		ok;

		if (end == NULL)
			return false;
		ok = add_b64(obj, "range_end", end, endlen);
		free(end);
		return ok;
	}
	return true;
}

static char *
print_and_delete(cJSON *root, bool ok)
{
	char	   *text = NULL;

	if (ok && root != NULL)
		text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
}

char *
etcd_build_range_request(const char *key, bool prefix)
{
	cJSON	   *root = cJSON_CreateObject();

	return print_and_delete(root, root != NULL && add_key_range(root, key, prefix));
}

char *
etcd_build_watch_request(const char *key, bool prefix, int64_t start_revision)
{
	cJSON	   *root = cJSON_CreateObject();
	cJSON	   *create = root ? cJSON_AddObjectToObject(root, "create_request") : NULL;
	bool		ok = create != NULL && add_key_range(create, key, prefix);

	if (ok && start_revision > 0)
		ok = add_int64(create, "start_revision", start_revision);
	return print_and_delete(root, ok);
}

static const char *
compare_target_name(EtcdCompareTarget t)
{
	switch (t)
	{
		case ETCD_CMP_VALUE:
			return "VALUE";
		case ETCD_CMP_CREATE:
			return "CREATE";
		case ETCD_CMP_MOD:
			return "MOD";
		case ETCD_CMP_LEASE:
			return "LEASE";
	}
	return "VALUE";
}

static const char *
compare_result_name(EtcdCompareResult r)
{
	switch (r)
	{
		case ETCD_CMP_EQUAL:
			return "EQUAL";
		case ETCD_CMP_NOT_EQUAL:
			return "NOT_EQUAL";
		case ETCD_CMP_GREATER:
			return "GREATER";
		case ETCD_CMP_LESS:
			return "LESS";
	}
	return "EQUAL";
}

static bool
add_ops(cJSON *root, const char *name, const EtcdOp *ops, int nops)
{
	cJSON	   *arr;
	int			i;

	if (nops == 0)
		return true;
	arr = cJSON_AddArrayToObject(root, name);
	if (arr == NULL)
		return false;
	for (i = 0; i < nops; i++)
	{
		cJSON	   *wrap = cJSON_CreateObject();
		cJSON	   *req;
		bool		ok;

		if (wrap == NULL)
			return false;
		cJSON_AddItemToArray(arr, wrap);
		switch (ops[i].type)
		{
			case ETCD_OP_PUT:
				req = cJSON_AddObjectToObject(wrap, "request_put");
				ok = req != NULL &&
					add_b64(req, "key", ops[i].key, strlen(ops[i].key)) &&
					add_b64(req, "value", ops[i].value ? ops[i].value : "",
							ops[i].value ? strlen(ops[i].value) : 0) &&
					(ops[i].lease == 0 || add_int64(req, "lease", ops[i].lease));
				break;
			case ETCD_OP_RANGE:
				req = cJSON_AddObjectToObject(wrap, "request_range");
				ok = req != NULL && add_key_range(req, ops[i].key, ops[i].prefix);
				break;
			case ETCD_OP_DELETE:
				req = cJSON_AddObjectToObject(wrap, "request_delete_range");
				ok = req != NULL && add_key_range(req, ops[i].key, ops[i].prefix);
				break;
			default:
				ok = false;
		}
		if (!ok)
			return false;
	}
	return true;
}

char *
etcd_build_txn_request(const EtcdCompare *compares, int ncompares,
					   const EtcdOp *success, int nsuccess,
					   const EtcdOp *failure, int nfailure)
{
	cJSON	   *root = cJSON_CreateObject();
	cJSON	   *arr;
	int			i;

	if (root == NULL)
		return NULL;
	if (ncompares > 0)
	{
		arr = cJSON_AddArrayToObject(root, "compare");
		if (arr == NULL)
			return print_and_delete(root, false);
		for (i = 0; i < ncompares; i++)
		{
			const EtcdCompare *c = &compares[i];
			cJSON	   *cmp = cJSON_CreateObject();
			bool		ok;

			if (cmp == NULL)
				return print_and_delete(root, false);
			cJSON_AddItemToArray(arr, cmp);
			ok = add_b64(cmp, "key", c->key, strlen(c->key)) &&
				cJSON_AddStringToObject(cmp, "target", compare_target_name(c->target)) &&
				cJSON_AddStringToObject(cmp, "result", compare_result_name(c->result));
			switch (c->target)
			{
				case ETCD_CMP_VALUE:
					ok = ok && add_b64(cmp, "value", c->value ? c->value : "",
									   c->value ? strlen(c->value) : 0);
					break;
				case ETCD_CMP_CREATE:
					ok = ok && add_int64(cmp, "create_revision", c->number);
					break;
				case ETCD_CMP_MOD:
					ok = ok && add_int64(cmp, "mod_revision", c->number);
					break;
				case ETCD_CMP_LEASE:
					ok = ok && add_int64(cmp, "lease", c->number);
					break;
			}
			if (!ok)
				return print_and_delete(root, false);
		}
	}
	return print_and_delete(root, add_ops(root, "success", success, nsuccess) &&
							add_ops(root, "failure", failure, nfailure));
}

const char *
etcd_status_name(EtcdStatus status)
{
	switch (status)
	{
		case ETCD_OK:
			return "ok";
		case ETCD_NOT_FOUND:
			return "not found";
		case ETCD_ERR_UNREACHABLE:
			return "unreachable";
		case ETCD_ERR_AUTH:
			return "authentication failed";
		case ETCD_ERR_SERVER:
			return "server error";
		case ETCD_ERR_PROTOCOL:
			return "protocol error";
		case ETCD_ERR_ABORTED:
			return "aborted";
		case ETCD_ERR_INTERNAL:
			return "internal error";
	}
	return "unknown";
}
