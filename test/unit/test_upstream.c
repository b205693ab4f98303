/*
 * test_upstream.c - which member a standby with pg_ha.replicatefrom
 * streams from (src/ha_upstream.c), as a table of cases.
 */
#include "pg_ha.h"

#include "ha_upstream.h"

#include "unit.h"

/* member(name, replica, streaming, timeline, its replicatefrom) */
static MemberInfo
member(const char *name, bool replica, bool streaming, TimeLineID tli, const char *from)
{
	MemberInfo	m;

	memset(&m, 0, sizeof(m));
	strlcpy(m.name, name, sizeof(m.name));
	m.valid = true;
	m.is_replica = replica;
	m.streaming = streaming;
	m.timeline = tli;
	m.lsn = 0x3000000;
	strlcpy(m.conn_url, "postgres://127.0.0.1:5432/postgres", sizeof(m.conn_url));
	strlcpy(m.replicatefrom, from, sizeof(m.replicatefrom));
	return m;
}

void
unit_upstream(void)
{
	MemberInfo	leader = member("node1", false, false, 2, "");
	MemberInfo	good = member("node2", true, true, 2, "");
	MemberInfo	invalid = member("node2", true, true, 2, "");
	MemberInfo	primary = member("node2", false, false, 2, "");
	MemberInfo	old_tli = member("node2", true, true, 1, "");
	MemberInfo	unknown_tli = member("node2", true, true, 0, "");
	MemberInfo	stopped = member("node2", true, false, 2, "");
	MemberInfo	cycle = member("node2", true, true, 2, "node3");
	MemberInfo	chain = member("node2", true, true, 2, "node4");
	MemberInfo	leader_unknown_tli = member("node1", false, false, 0, "");
	static const struct
	{
		const char *row;
		const char *want;
		int			named;		/* index into the members below, -1: none */
		int			leader;		/* 0: leader, 1: leader with unknown timeline */
		UpstreamChoice expect;
		const char *why;		/* substring of the reason, or "" */
	}			cases[] = {
		{"no replicatefrom: the leader", "", 0, 0, UPSTREAM_LEADER, ""},
		{"replicatefrom names the leader: the leader", "node1", -1, 0, UPSTREAM_LEADER, ""},
		{"a healthy streaming standby on the leader's timeline", "node2", 0, 0, UPSTREAM_NAMED, ""},
		{"names this node itself", "node3", 0, 0, UPSTREAM_LEADER, "names this node"},
		{"no member key", "node2", -1, 0, UPSTREAM_LEADER, "no valid member key"},
		{"member key without a position", "node2", 1, 0, UPSTREAM_LEADER, "no valid member key"},
		{"a primary that is not the leader", "node2", 2, 0, UPSTREAM_LEADER, "not a standby"},
		{"a standby on an older timeline (maybe diverged)", "node2", 3, 0, UPSTREAM_LEADER, "timeline"},
		{"a standby whose timeline is unknown", "node2", 4, 0, UPSTREAM_LEADER, "timeline"},
		{"the leader's timeline unknown", "node2", 0, 1, UPSTREAM_LEADER, "timeline"},
		{"a standby that is not streaming", "node2", 5, 0, UPSTREAM_LEADER, "not streaming"},
		{"two standbys naming each other", "node2", 6, 0, UPSTREAM_LEADER, "cycle"},
		{"a chain (node3 -> node2 -> node4) is allowed", "node2", 7, 0, UPSTREAM_NAMED, ""},
	};
	const MemberInfo *members[] = {&good, &invalid, &primary, &old_tli, &unknown_tli, &stopped, &cycle, &chain};

	invalid.valid = false;
	for (size_t i = 0; i < lengthof(cases); i++)
	{
		char		why[128];
		const MemberInfo *named = cases[i].named >= 0 ? members[cases[i].named] : NULL;
		UpstreamChoice got = upstream_decide("node3", cases[i].leader ? &leader_unknown_tli : &leader,
											 cases[i].want, named, why, sizeof(why));

		UNIT_CHECK(got == cases[i].expect, "%s: got %d, expected %d", cases[i].row, got, cases[i].expect);
		UNIT_CHECK(strstr(why, cases[i].why) != NULL && (cases[i].why[0] || why[0] == '\0'),
				   "%s: reason \"%s\", expected \"%s\"", cases[i].row, why, cases[i].why);
	}
	/* no reason buffer: still decides */
	UNIT_CHECK(upstream_decide("node3", &leader, "node2", &good, NULL, 0) == UPSTREAM_NAMED,
			   "NULL reason buffer");
}
