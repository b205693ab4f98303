/*
 * ha_request_store.c - the failover key in etcd: the two writes every
 * front end makes to it, shared by the HA worker, the SQL functions and
 * pg_hactl.  Both compare the key's mod_revision, so a request that moved
 * on meanwhile (handed over, replaced, cancelled) is never clobbered.
 * Plain C on the etcd client, no backend symbols.
 */
#include <string.h>

#include "ha_request.h"

EtcdStatus
ha_request_put(EtcdClient *client, const char *key, const char *value,
			   int64_t replace_rev, int64_t *written_rev)
{
	EtcdCompare cmp = {key, replace_rev ? ETCD_CMP_MOD : ETCD_CMP_CREATE, ETCD_CMP_EQUAL,
	NULL, replace_rev};
	EtcdOp		ops[2] = {{ETCD_OP_PUT, key, value, 0, false},
	{ETCD_OP_RANGE, key, NULL, 0, false}};
	EtcdKVList	ranges;
	bool		succeeded = false;
	EtcdStatus	st;

	*written_rev = 0;
	memset(&ranges, 0, sizeof(ranges));
	st = etcd_txn(client, &cmp, 1, ops, 2, NULL, 0, &succeeded, &ranges);
	if (st == ETCD_OK && succeeded)
		*written_rev = ranges.count > 0 ? ranges.kvs[0].mod_revision : -1;
	etcd_kvlist_free(&ranges);
	return st;
}

bool
ha_request_delete(EtcdClient *client, const char *key, int64_t rev)
{
	EtcdCompare cmp = {key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, NULL, rev};
	EtcdOp		del = {ETCD_OP_DELETE, key, NULL, 0, false};
	bool		succeeded = false;

	if (rev <= 0)
		return false;
	return etcd_txn(client, &cmp, 1, &del, 1, NULL, 0, &succeeded, NULL) == ETCD_OK && succeeded;
}
