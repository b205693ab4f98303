/*
 * ha_upstream.c - the upstream of a standby with pg_ha.replicatefrom.
 *
 * A standby streams from the member its replicatefrom names only while
 * that member is a healthy part of the leader's history; otherwise from
 * the leader, and back to the named member as soon as it qualifies again.
 * The rules are a table: the first that matches sends the standby to the
 * leader, with its reason for the log.
 *
 * Why each rule is safe:
 *   - only a standby that is streaming on the leader's timeline has WAL
 *     the leader wrote, and no more: a member on another timeline may be a
 *     diverged old primary, and a member that is not streaming may be
 *     stale or cut off, so its WAL could be behind for as long as it stays
 *     so (the cascaded standby would lag with it);
 *   - a primary other than the leader is never an upstream (a stale or
 *     demoting primary: its WAL may fork from the leader's);
 *   - two standbys naming each other would each stream from the other and
 *     neither from the leader: both go to the leader instead.  Longer
 *     cycles are not detected (Patroni does not either): every member in
 *     one stops streaming, so each falls back to the leader.
 * Whatever the upstream, divergence is judged against the leader's
 * history (check_divergence in ha_worker.c) and failover eligibility
 * against the leader's last position, so cascading changes neither.
 */
#include "pg_ha.h"

#include "ha_upstream.h"

typedef struct UpstreamRule
{
	bool		(*applies) (const char *self, const MemberInfo *leader, const char *want,
							const MemberInfo *named);
	const char *why;
} UpstreamRule;

static bool
names_self(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) leader;
	(void) named;
	return strcmp(want, self) == 0;
}

static bool
absent(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) self;
	(void) leader;
	(void) want;
	return named == NULL || !named->valid;
}

static bool
not_replica(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) self;
	(void) leader;
	(void) want;
	return !named->is_replica;
}

static bool
other_timeline(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) self;
	(void) want;
	return leader->timeline == 0 || named->timeline != leader->timeline;
}

static bool
not_streaming(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) self;
	(void) leader;
	(void) want;
	return !named->streaming;
}

static bool
names_us_back(const char *self, const MemberInfo *leader, const char *want, const MemberInfo *named)
{
	(void) leader;
	(void) want;
	return strcmp(named->replicatefrom, self) == 0;
}

static const UpstreamRule rules[] = {
	{names_self, "it names this node"},
	{absent, "it has no valid member key"},
	{not_replica, "it is not a standby"},
	{other_timeline, "it is not on the leader's timeline"},
	{not_streaming, "it is not streaming"},
	{names_us_back, "its replicatefrom names this node (a cycle)"},
};

UpstreamChoice
upstream_decide(const char *self, const MemberInfo *leader, const char *want,
				const MemberInfo *named, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (want == NULL || want[0] == '\0' || strcmp(want, leader->name) == 0)
		return UPSTREAM_LEADER;
	for (size_t i = 0; i < lengthof(rules); i++)
	{
		if (rules[i].applies(self, leader, want, named))
		{
			if (why && whylen)
				snprintf(why, whylen, "%s", rules[i].why);
			return UPSTREAM_LEADER;
		}
	}
	return UPSTREAM_NAMED;
}
