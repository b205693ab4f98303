/*
 * ha_failover.c - who takes over when the leader is gone.
 *
 * A pure function of the cluster as this node sees it, so it can be read in
 * one screen and tested case by case.  A replica is eligible when:
 *   - it is not tagged nofailover (failover_priority 0 means the same);
 *   - its lag behind the last known leader position is at most
 *     pg_ha.maximum_lag_on_failover (acknowledged data a promotion would
 *     lose is bounded by that);
 *   - its timeline is not behind the cluster's (a node on an old timeline
 *     is a stale former primary or did not follow a promotion).
 * Among eligible replicas with fresh positions the most advanced wins; ties
 * go to the member a manual failover request names (in->preferred), then to
 * the higher failover_priority, then to the smaller name, so every node that
 * sees the same positions reaches the same answer.  A request naming a
 * member therefore never promotes it over a more advanced eligible peer:
 * naming only breaks ties, unless the operator forced it (in->forced), which
 * skips the lag and "most advanced" rules but never nofailover or the
 * timeline rule.  The answer is advisory: the leader key's create-if-absent
 * transaction is what makes only one node win.
 */
#include "pg_ha.h"

#include "ha_cluster.h"

bool
failover_better(const MemberInfo *candidate, const MemberInfo *other)
{
	return failover_better_preferring(candidate, other, NULL);
}

bool
failover_better_preferring(const MemberInfo *candidate, const MemberInfo *other,
						   const char *preferred)
{
	if (candidate->lsn != other->lsn)
		return candidate->lsn > other->lsn;
	if (preferred != NULL && preferred[0] != '\0' &&
		(strcmp(candidate->name, preferred) == 0) != (strcmp(other->name, preferred) == 0))
		return strcmp(candidate->name, preferred) == 0;
	if (candidate->failover_priority != other->failover_priority)
		return candidate->failover_priority > other->failover_priority;
	return strcmp(candidate->name, other->name) < 0;
}

RaceDecision
failover_decide(const RaceInput *in, char *why, size_t whylen)
{
	const MemberInfo *self = &in->self;

	if (self->nofailover || self->failover_priority <= 0)
	{
		snprintf(why, whylen, "tagged nofailover");
		return RACE_INELIGIBLE;
	}
	if (in->cluster_timeline != 0 && self->timeline < in->cluster_timeline)
	{
		snprintf(why, whylen, "on timeline %u, the cluster is on %u",
				 self->timeline, in->cluster_timeline);
		return RACE_INELIGIBLE;
	}
	if (in->forced)
	{
		snprintf(why, whylen, "named by a forced failover request");
		return RACE_TAKE;
	}
	if (in->leader_optime != InvalidXLogRecPtr && in->leader_optime > self->lsn &&
		in->leader_optime - self->lsn > in->maximum_lag_bytes)
	{
		snprintf(why, whylen, "%llu bytes behind the last leader position, more than maximum_lag_on_failover",
				 (unsigned long long) (in->leader_optime - self->lsn));
		return RACE_INELIGIBLE;
	}
	for (int i = 0; i < in->npeers; i++)
	{
		const MemberInfo *peer = &in->peers[i];

		if (!peer->valid || !peer->is_replica || peer->nofailover ||
			peer->failover_priority <= 0 ||
			(in->cluster_timeline != 0 && peer->timeline < in->cluster_timeline))
			continue;
		if (in->leader_optime != InvalidXLogRecPtr && in->leader_optime > peer->lsn &&
			in->leader_optime - peer->lsn > in->maximum_lag_bytes)
			continue;
		if (failover_better_preferring(peer, self, in->preferred))
		{
			snprintf(why, whylen, "member %s is a better candidate", peer->name);
			return RACE_DEFER;
		}
	}
	snprintf(why, whylen, "most advanced eligible replica");
	return RACE_TAKE;
}
