/*
 * fuzz_member.c - libFuzzer target for what the HA worker reads from etcd
 * values (src/ha_cluster.c): member documents, and the config, status,
 * history, failover and leader keys of its cluster view.
 *
 * The input is split at the first NUL: the first part is every key's
 * value, the second (if any) is a second member's document, so the worker's
 * comparisons between members see two different documents.  Everything is
 * read the way the worker reads it, including GET /cluster's list
 * (cluster_members_json) and the history append at promotion.  Nothing may
 * crash, read out of bounds or leak.  Build and run with
 * `make fuzz-member FUZZ_SECONDS=600` (see docs/testing.md).
 *
 * ha_cluster.c is backend code: it is built against the server headers,
 * with the few backend functions it calls stubbed below.
 */
#include "postgres.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ha_cluster.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------- stubs for the backend functions ha_cluster.c uses ---------- */

char *
pstrdup(const char *in)
{
	char	   *s = strdup(in);

	if (s == NULL)
		abort();
	return s;
}

bool
errstart_cold(int elevel, const char *domain)
{
	if (elevel >= ERROR)
		abort();				/* an ERROR would be a longjmp in the worker */
	return false;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

/* ---------- the target ---------- */

static const char *const suffixes[] = {
	"leader", "members/n1", "config", "status", "history", "failover", "initialize"
};

#define PREFIX "/service/pgtest/"

static void
add_kv(EtcdKVList *list, const char *suffix, const char *value, size_t len)
{
	EtcdKV	   *kv = &list->kvs[list->count++];

	kv->key = malloc(strlen(PREFIX) + strlen(suffix) + 1);
	kv->value = malloc(len + 1);
	if (kv->key == NULL || kv->value == NULL)
		abort();
	strcpy(kv->key, PREFIX);
	strcat(kv->key, suffix);
	memcpy(kv->value, value, len);
	kv->value[len] = '\0';
	kv->value_len = len;
	kv->mod_revision = list->count;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	const char *nul = memchr(data, '\0', size);
	size_t		len1 = nul ? (size_t) (nul - text) : size;
	ClusterView view;
	EtcdKVList	list;
	MemberInfo	members[PG_HA_MAX_MEMBERS];
	MemberInfo	one;
	HaRequest	req;
	int64		rev;
	char		err[256];
	char		json[512];
	char		big[64 * 1024];
	char		last[64];
	XLogRecPtr	fork;
	char	   *hist;

	memset(&view, 0, sizeof(view));
	memset(&list, 0, sizeof(list));
	list.kvs = calloc(16, sizeof(EtcdKV));
	if (list.kvs == NULL)
		abort();
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
		add_kv(&list, suffixes[i], text, len1);
	if (nul)
		add_kv(&list, "members/n2", nul + 1, size - len1 - 1);
	cluster_load(&view, &list, strlen(PREFIX));

	(void) cluster_leader(&view);
	(void) cluster_members(&view, members, PG_HA_MAX_MEMBERS);
	(void) cluster_member(&view, "n1", &one);
	(void) cluster_member(&view, "n2", &one);
	(void) cluster_paused(&view);
	(void) cluster_optime(&view);
	if (cluster_request(&view, &req, &rev, err, sizeof(err)) == CLUSTER_REQUEST_INVALID &&
		err[0] == '\0')
		abort();				/* a refused request says why */
	(void) cluster_initialize(&view);
	(void) cluster_history_timeline(&view, 1, &fork);
	(void) cluster_members_json(&view, json, sizeof(json));
	(void) cluster_members_json(&view, big, sizeof(big));
	cluster_last_leader(&view, last, sizeof(last));
	hist = cluster_history_append(&view, 1, 0x3000000, "no recent leader", "2024-01-01T00:00:00+00:00", "n2");
	free(hist);
	cluster_reset(&view);
	return 0;
}
