/*
 * etcd.h - etcd v3 client over the JSON gateway (libcurl + cJSON).
 *
 * This client is plain C: it does not use palloc, ereport or any backend
 * symbol, so the extension, the command-line companion and the fuzz targets
 * all link the same code.  Errors are returned as an EtcdStatus plus a
 * message in the client (etcd_last_error); memory returned to the caller is
 * malloc'ed and released with the matching *_free function.
 *
 * Every call is bounded: a request never takes longer than the configured
 * timeout, across all endpoints it tries, and an abort callback lets the
 * caller cut it short (a backend checks its interrupt flags there).
 */
#ifndef PG_HA_ETCD_H
#define PG_HA_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MAX_URL 256
#define ETCD_ERRMSG_LEN 512

typedef enum EtcdStatus
{
	ETCD_OK = 0,
	ETCD_NOT_FOUND,				/* key absent, lease expired, txn compare failed */
	ETCD_ERR_UNREACHABLE,		/* no endpoint answered in time */
	ETCD_ERR_AUTH,				/* authentication refused */
	ETCD_ERR_SERVER,			/* etcd answered with an error */
	ETCD_ERR_PROTOCOL,			/* the reply could not be understood */
	ETCD_ERR_ABORTED,			/* the abort callback asked us to stop */
	ETCD_ERR_INTERNAL			/* out of memory, bad argument */
} EtcdStatus;

typedef struct EtcdConfig
{
	/* comma-separated list of http(s)://host:port URLs */
	const char *endpoints;
	const char *cacert;			/* NULL or "" = system default */
	const char *cert;
	const char *key;
	const char *user;			/* NULL or "" = no authentication */
	const char *password;
	long		timeout_ms;		/* bound on one call, all endpoints included */
} EtcdConfig;

typedef struct EtcdKV
{
	char	   *key;
	char	   *value;			/* NUL-terminated copy; may contain NULs */
	size_t		value_len;
	int64_t		create_revision;
	int64_t		mod_revision;
	int64_t		version;
	int64_t		lease;
} EtcdKV;

typedef struct EtcdKVList
{
	EtcdKV	   *kvs;
	int			count;
	int64_t		revision;		/* store revision of the reply header */
} EtcdKVList;

typedef enum EtcdCompareTarget
{
	ETCD_CMP_VALUE,
	ETCD_CMP_CREATE,			/* create_revision */
	ETCD_CMP_MOD,				/* mod_revision */
	ETCD_CMP_LEASE
} EtcdCompareTarget;

typedef enum EtcdCompareResult
{
	ETCD_CMP_EQUAL,
	ETCD_CMP_NOT_EQUAL,
	ETCD_CMP_GREATER,
	ETCD_CMP_LESS
} EtcdCompareResult;

typedef struct EtcdCompare
{
	const char *key;
	EtcdCompareTarget target;
	EtcdCompareResult result;
	const char *value;			/* for ETCD_CMP_VALUE */
	int64_t		number;			/* for the revision and lease targets */
} EtcdCompare;

typedef enum EtcdOpType
{
	ETCD_OP_PUT,
	ETCD_OP_RANGE,
	ETCD_OP_DELETE
} EtcdOpType;

typedef struct EtcdOp
{
	EtcdOpType	type;
	const char *key;
	const char *value;			/* ETCD_OP_PUT */
	int64_t		lease;			/* ETCD_OP_PUT, 0 = none */
	bool		prefix;			/* RANGE/DELETE over every key with this prefix */
} EtcdOp;

typedef enum EtcdEventType
{
	ETCD_EVENT_PUT,
	ETCD_EVENT_DELETE
} EtcdEventType;

typedef struct EtcdEvent
{
	EtcdEventType type;
	EtcdKV		kv;
} EtcdEvent;

typedef struct EtcdEventList
{
	EtcdEvent  *events;
	int			count;
	int64_t		revision;
} EtcdEventList;

typedef struct EtcdClient EtcdClient;
typedef struct EtcdWatch EtcdWatch;

/* Return nonzero to abandon the request in flight. */
typedef int (*EtcdAbortCheck) (void *arg);

/*
 * Whether the file at path may hold a secret (a TLS key, a password): false
 * with a message when it is not a regular file, or other users may read it.
 * PostgreSQL's rule for ssl_key_file: owned by the effective user with no
 * group or world permission, or owned by root with at most u=rw,g=r.  A
 * file that cannot be examined (absent, unreadable directory) passes: the
 * read that follows reports it.  ETCD_SECRET_FILE_RULE says the rule.
 */
#define ETCD_SECRET_FILE_RULE "Make it u=rw (0600) or less if it is owned by the server's user, or u=rw,g=r (0640) or less if it is owned by root."
extern bool etcd_secret_file_ok(const char *path, char *errbuf, size_t errlen);

/* Process-wide libcurl initialisation; call once before any client. */
extern bool etcd_global_init(void);

/*
 * Parse and check a comma-separated endpoint list.  Returns the number of
 * endpoints (1..ETCD_MAX_ENDPOINTS) or -1 with a message in errbuf.  When
 * urls is not NULL the normalised URLs (no trailing slash) are stored there.
 * A list with a user name or password ('@'), a query ('?') or a fragment
 * ('#') is refused with a message that does not quote it.
 */
extern int	etcd_parse_endpoints(const char *list,
								 char urls[][ETCD_MAX_URL], int max_urls,
								 char *errbuf, size_t errlen);

extern EtcdClient *etcd_client_new(const EtcdConfig *config,
								   char *errbuf, size_t errlen);
extern void etcd_client_free(EtcdClient *client);
extern void etcd_client_set_abort_check(EtcdClient *client,
										EtcdAbortCheck check, void *arg);
extern const char *etcd_last_error(const EtcdClient *client);
extern const char *etcd_current_endpoint(const EtcdClient *client);
/* Number of HTTP requests sent and of failed calls since creation. */
extern uint64_t etcd_request_count(const EtcdClient *client);
extern uint64_t etcd_error_count(const EtcdClient *client);
/* Duration of the last completed call, in microseconds. */
extern uint64_t etcd_last_latency_us(const EtcdClient *client);

extern EtcdStatus etcd_lease_grant(EtcdClient *client, int64_t ttl_seconds,
								   int64_t *lease_id, int64_t *granted_ttl);
/* ETCD_NOT_FOUND when the lease has already expired. */
extern EtcdStatus etcd_lease_keepalive(EtcdClient *client, int64_t lease_id,
									   int64_t *ttl);
extern EtcdStatus etcd_lease_revoke(EtcdClient *client, int64_t lease_id);

extern EtcdStatus etcd_put(EtcdClient *client, const char *key,
						   const char *value, int64_t lease_id);
/* ETCD_NOT_FOUND when absent; out is filled with zero or more keys. */
extern EtcdStatus etcd_get(EtcdClient *client, const char *key, bool prefix,
						   EtcdKVList *out);
extern EtcdStatus etcd_delete(EtcdClient *client, const char *key, bool prefix);

/*
 * A transaction.  *succeeded tells which branch ran; the results of RANGE
 * operations of that branch are appended to ranges (may be NULL).
 */
extern EtcdStatus etcd_txn(EtcdClient *client,
						   const EtcdCompare *compares, int ncompares,
						   const EtcdOp *success, int nsuccess,
						   const EtcdOp *failure, int nfailure,
						   bool *succeeded, EtcdKVList *ranges);

/*
 * Create key with value attached to lease, only if it does not exist.
 * Returns ETCD_OK when created, ETCD_NOT_FOUND when it already existed (the
 * existing key is then returned in current, if not NULL).
 */
extern EtcdStatus etcd_create(EtcdClient *client, const char *key,
							  const char *value, int64_t lease_id,
							  EtcdKV *current);
/* Delete key only if its value equals value: ETCD_NOT_FOUND otherwise. */
extern EtcdStatus etcd_delete_if_value(EtcdClient *client, const char *key,
									   const char *value);

/*
 * Streaming watch.  etcd_watch_start opens a long-lived request (on its own
 * connection) from start_revision (0 = now).  etcd_watch_poll never blocks:
 * it moves the transfer forward and returns the events received so far
 * (ETCD_OK with count 0 when there are none).  Any other status means the
 * stream ended: free it and start a new one after re-reading the key.
 * etcd_watch_socket is the socket to wait on (-1 until connected).
 */
extern EtcdWatch *etcd_watch_start(EtcdClient *client, const char *key,
								   bool prefix, int64_t start_revision);
extern EtcdStatus etcd_watch_poll(EtcdWatch *watch, EtcdEventList *events);
extern int	etcd_watch_socket(EtcdWatch *watch);
/* True once etcd has answered the watch request (the stream is live). */
extern bool etcd_watch_established(const EtcdWatch *watch);
extern const char *etcd_watch_error(const EtcdWatch *watch);
extern void etcd_watch_free(EtcdWatch *watch);

extern void etcd_kv_free(EtcdKV *kv);
extern void etcd_kvlist_free(EtcdKVList *list);
extern void etcd_eventlist_free(EtcdEventList *list);
extern const char *etcd_status_name(EtcdStatus status);

/*
 * Reply parsing, exposed for the fuzz targets (etcd_json.c).  Each returns
 * ETCD_OK or an error status with a message in errbuf, never crashes on
 * arbitrary input, and leaves nothing allocated on error.
 */
extern EtcdStatus etcd_parse_error_reply(const char *body, size_t len,
										 char *errbuf, size_t errlen);
extern EtcdStatus etcd_parse_range_reply(const char *body, size_t len,
										 EtcdKVList *out,
										 char *errbuf, size_t errlen);
extern EtcdStatus etcd_parse_lease_reply(const char *body, size_t len,
										 int64_t *lease_id, int64_t *ttl,
										 char *errbuf, size_t errlen);
extern EtcdStatus etcd_parse_txn_reply(const char *body, size_t len,
									   bool *succeeded, EtcdKVList *ranges,
									   char *errbuf, size_t errlen);
extern EtcdStatus etcd_parse_auth_reply(const char *body, size_t len,
										char *token, size_t tokenlen,
										char *errbuf, size_t errlen);
/* One newline-delimited message of a watch stream. */
extern EtcdStatus etcd_parse_watch_message(const char *line, size_t len,
										   EtcdEventList *out, bool *canceled,
										   char *errbuf, size_t errlen);

/* Request bodies (malloc'ed JSON text, NULL on out-of-memory). */
extern char *etcd_build_txn_request(const EtcdCompare *compares, int ncompares,
									const EtcdOp *success, int nsuccess,
									const EtcdOp *failure, int nfailure);
extern char *etcd_build_range_request(const char *key, bool prefix);
extern char *etcd_build_watch_request(const char *key, bool prefix,
									  int64_t start_revision);

/* base64 helpers (etcd keys and values travel base64-encoded). */
extern char *etcd_base64_encode(const char *data, size_t len);
extern char *etcd_base64_decode(const char *text, size_t *len);
/* The first key after every key that starts with prefix ("" = none). */
extern char *etcd_prefix_end(const char *prefix, size_t *len);

#endif							/* PG_HA_ETCD_H */
