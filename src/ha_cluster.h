/*
 * ha_cluster.h - the HA worker's copy of the cluster's etcd keys and the
 * meaning of each (ha_cluster.c), and the failover decision (ha_failover.c).
 */
#ifndef PG_HA_CLUSTER_H
#define PG_HA_CLUSTER_H

#include "pg_ha.h"

#include "ha_request.h"

#define PG_HA_MAX_MEMBERS 64

typedef struct ClusterView
{
	EtcdKVList	kvs;			/* every key under the cluster prefix */
	size_t		prefix_len;		/* strlen("/<namespace>/<cluster>/") */
	bool		loaded;
} ClusterView;

typedef struct MemberInfo
{
	char		name[PG_HA_NAME_LEN];
	bool		valid;			/* the document parsed and has a position */
	bool		is_replica;
	XLogRecPtr	lsn;
	TimeLineID	timeline;
	bool		nofailover;
	bool		noloadbalance;
	bool		streaming;		/* replica: replication_state is "streaming" */
	int			failover_priority;
	bool		nosync;			/* tag nosync, or sync_priority <= 0 */
	int			sync_priority;	/* tag sync_priority (default 1) */
	char		replicatefrom[PG_HA_NAME_LEN];	/* tag replicatefrom, "" if none */
	char		conn_url[256];
	char		api_url[256];
	bool		pending_restart;	/* "pending_restart": true */
	char		restart_schedule[64];	/* scheduled_restart.schedule, "" if none */
	int64		mod_revision;
} MemberInfo;

/* What the failover key holds, decoded by the one codec (ha_request.c). */
typedef enum ClusterRequestStatus
{
	CLUSTER_REQUEST_NONE,		/* no failover key */
	CLUSTER_REQUEST_VALID,
	CLUSTER_REQUEST_INVALID		/* present, but nobody may act on it */
} ClusterRequestStatus;

extern void cluster_reset(ClusterView *view);
extern void cluster_load(ClusterView *view, EtcdKVList *range, size_t prefix_len);
extern void cluster_apply_event(ClusterView *view, EtcdEvent *ev);
extern const EtcdKV *cluster_get(const ClusterView *view, const char *suffix);
extern const char *cluster_leader(const ClusterView *view);
extern int	cluster_members(const ClusterView *view, MemberInfo *out, int max);
extern bool cluster_member(const ClusterView *view, const char *name, MemberInfo *out);
extern bool cluster_paused(const ClusterView *view);
extern XLogRecPtr cluster_optime(const ClusterView *view);
extern ClusterRequestStatus cluster_request(const ClusterView *view, HaRequest *req,
										   int64 *mod_revision, char *err, size_t errlen);
/* The initialize key's value, or NULL when absent. */
extern const char *cluster_initialize(const ClusterView *view);
extern TimeLineID cluster_history_timeline(const ClusterView *view, TimeLineID tli,
										   XLogRecPtr *fork_lsn);
/*
 * The members as Patroni's GET /cluster lists them (a JSON array) into buf;
 * false when it does not fit (members are left out rather than cut).
 */
extern bool cluster_members_json(const ClusterView *view, char *buf, size_t len);
/* new_leader of the last history entry, "" when there is none. */
extern void cluster_last_leader(const ClusterView *view, char *out, size_t len);
extern char *cluster_history_append(const ClusterView *view, TimeLineID old_tli,
									XLogRecPtr switch_lsn, const char *reason,
									const char *when, const char *new_leader);

/* ---------- the failover decision (ha_failover.c) ---------- */

typedef enum RaceDecision
{
	RACE_TAKE,					/* this node should take the leader key */
	RACE_DEFER,					/* a better candidate exists: let it */
	RACE_INELIGIBLE				/* this node must not take over */
} RaceDecision;

typedef struct RaceInput
{
	MemberInfo	self;
	const MemberInfo *peers;	/* other replicas with fresh positions */
	int			npeers;
	XLogRecPtr	leader_optime;	/* last known position of the lost leader */
	TimeLineID	cluster_timeline;
	uint64		maximum_lag_bytes;
	const char *preferred;		/* named by a manual failover request: wins ties */
	bool		forced;			/* self is named by a forced request */
} RaceInput;

extern RaceDecision failover_decide(const RaceInput *in, char *why, size_t whylen);
/* Is candidate a better new leader than other?  (LSN, priority, name) */
extern bool failover_better(const MemberInfo *candidate, const MemberInfo *other);
/* The same, where equal positions go to the member named preferred. */
extern bool failover_better_preferring(const MemberInfo *candidate, const MemberInfo *other,
									   const char *preferred);

#endif							/* PG_HA_CLUSTER_H */
