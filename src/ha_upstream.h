/*
 * ha_upstream.h - which member a standby streams from: the leader, or the
 * member its pg_ha.replicatefrom names (Patroni's tag replicatefrom,
 * cascading replication).  Pure: no etcd, no server state.
 */
#ifndef HA_UPSTREAM_H
#define HA_UPSTREAM_H

#include "ha_cluster.h"

typedef enum UpstreamChoice
{
	UPSTREAM_LEADER,			/* stream from the leader */
	UPSTREAM_NAMED				/* stream from the replicatefrom member */
} UpstreamChoice;

/*
 * self: this node's name; leader: the leader's member info; want: this
 * node's replicatefrom ("" for none); named: the member want names, or
 * NULL when it has no member key.  why (may be NULL) says why the leader
 * was chosen although want named another member.
 */
extern UpstreamChoice upstream_decide(const char *self, const MemberInfo *leader,
									  const char *want, const MemberInfo *named,
									  char *why, size_t whylen);

#endif							/* HA_UPSTREAM_H */
