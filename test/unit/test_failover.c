/*
 * test_failover.c - failover_decide() (src/ha_failover.c): whether this
 * replica takes the leader key after the leader is gone, defers to a
 * better peer, or must not take over.
 *
 * Built against the server headers (ha_failover.c includes pg_ha.h), with
 * libpgport for pg_snprintf; nothing here calls into a running server.
 */
#include "pg_ha.h"

#include "ha_cluster.h"

#include "unit.h"

#define MB ((uint64) 1 << 20)

static MemberInfo
mi(const char *name, XLogRecPtr lsn, TimeLineID tl, int priority, bool nofailover)
{
	MemberInfo	m;

	memset(&m, 0, sizeof(m));
	strlcpy(m.name, name, sizeof(m.name));
	m.valid = true;
	m.is_replica = true;
	m.streaming = true;
	m.lsn = lsn;
	m.timeline = tl;
	m.failover_priority = nofailover ? 0 : priority;
	m.nofailover = nofailover;
	strlcpy(m.conn_url, "postgres://h:5432/postgres", sizeof(m.conn_url));
	return m;
}

typedef struct DecideCase
{
	const char *name;
	MemberInfo	self;
	MemberInfo	peers[3];
	int			npeers;
	XLogRecPtr	leader_optime;
	TimeLineID	cluster_timeline;
	uint64		max_lag;
	RaceDecision want;
	const char *why;			/* substring */
	const char *preferred;		/* named by a manual failover request */
	bool		forced;
} DecideCase;

void
unit_failover_decide(void)
{
	MemberInfo	not_replica = mi("n0", 900 * MB, 3, 1, false);
	MemberInfo	invalid = mi("n0", 900 * MB, 3, 1, false);
	DecideCase	cases[] = {
		{"alone and current", mi("n2", 100 * MB, 3, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"no known leader position", mi("n2", 1, 3, 1, false), {{{0}}}, 0, InvalidXLogRecPtr, 3, MB, RACE_TAKE, "most advanced"},
		{"no known timeline", mi("n2", 100 * MB, 1, 1, false), {{{0}}}, 0, 100 * MB, 0, MB, RACE_TAKE, "most advanced"},
		{"tagged nofailover", mi("n2", 100 * MB, 3, 1, true), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "nofailover"},
		{"failover_priority 0", mi("n2", 100 * MB, 3, 0, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "nofailover"},
		{"old timeline", mi("n2", 100 * MB, 2, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "timeline 2"},
		{"beyond maximum lag", mi("n2", 90 * MB, 3, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "maximum_lag_on_failover"},
		{"exactly at maximum lag", mi("n2", 99 * MB, 3, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"ahead of the leader position", mi("n2", 101 * MB, 3, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"peer more advanced", mi("n2", 100 * MB - 10, 3, 1, false), {mi("n3", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_DEFER, "n3"},
		{"peer behind", mi("n2", 100 * MB, 3, 1, false), {mi("n3", 100 * MB - 10, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"equal LSN, peer higher priority", mi("n2", 100 * MB, 3, 1, false), {mi("n3", 100 * MB, 3, 2, false)}, 1, 100 * MB, 3, MB, RACE_DEFER, "n3"},
		{"equal LSN, self higher priority", mi("n3", 100 * MB, 3, 2, false), {mi("n2", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"equal LSN and priority, smaller name wins", mi("n2", 100 * MB, 3, 1, false), {mi("n3", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"equal LSN and priority, larger name defers", mi("n3", 100 * MB, 3, 1, false), {mi("n2", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_DEFER, "n2"},
		{"better peer tagged nofailover is ignored", mi("n2", 99 * MB, 3, 1, false), {mi("n3", 100 * MB, 3, 1, true)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"better peer on old timeline is ignored", mi("n2", 99 * MB, 3, 1, false), {mi("n3", 200 * MB, 2, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"lagging peer is ignored", mi("n2", 99 * MB, 3, 1, false), {mi("n3", 98 * MB + 1, 3, 1, false), mi("n4", 10 * MB, 3, 5, false)}, 2, 100 * MB, 3, 2 * MB, RACE_TAKE, "most advanced"},
		{"not-replica peer is ignored", mi("n2", 99 * MB, 3, 1, false), {{{0}}}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"invalid peer is ignored", mi("n2", 99 * MB, 3, 1, false), {{{0}}}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced"},
		{"best of three peers", mi("n2", 99 * MB, 3, 1, false), {mi("n3", 99 * MB - 1, 3, 1, false), mi("n4", 99 * MB + 1, 3, 1, false), mi("n5", 99 * MB, 3, 1, false)}, 3, 100 * MB, 3, MB, RACE_DEFER, "n4"},
		/* manual failover requests: naming breaks ties only, unless forced */
		{"named, equal LSN, larger name: wins the tie", mi("n3", 100 * MB, 3, 1, false), {mi("n2", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced", "n3"},
		{"named, equal LSN, lower priority: wins the tie", mi("n3", 100 * MB, 3, 1, false), {mi("n2", 100 * MB, 3, 5, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "most advanced", "n3"},
		{"peer named, equal LSN: defer to it", mi("n2", 100 * MB, 3, 5, false), {mi("n3", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_DEFER, "n3", "n3"},
		{"named but behind a peer: does not take", mi("n3", 90 * MB, 3, 1, false), {mi("n2", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, 64 * MB, RACE_DEFER, "n2", "n3"},
		{"peer named but behind self: self takes", mi("n2", 100 * MB, 3, 1, false), {mi("n3", 90 * MB, 3, 1, false)}, 1, 100 * MB, 3, 64 * MB, RACE_TAKE, "most advanced", "n3"},
		{"named and lagging past maximum lag: ineligible", mi("n3", 10 * MB, 3, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "maximum_lag_on_failover", "n3"},
		{"named, forced, lagging: takes", mi("n3", 10 * MB, 3, 1, false), {mi("n2", 100 * MB, 3, 1, false)}, 1, 100 * MB, 3, MB, RACE_TAKE, "forced", "n3", true},
		{"named, forced, nofailover: still ineligible", mi("n3", 100 * MB, 3, 1, true), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "nofailover", "n3", true},
		{"named, forced, old timeline: still ineligible", mi("n3", 100 * MB, 2, 1, false), {{{0}}}, 0, 100 * MB, 3, MB, RACE_INELIGIBLE, "timeline", "n3", true},
	};

	not_replica.is_replica = false;
	invalid.valid = false;
	cases[18].peers[0] = not_replica;
	cases[19].peers[0] = invalid;

	for (size_t i = 0; i < lengthof(cases); i++)
	{
		DecideCase *c = &cases[i];
		RaceInput	in;
		char		why[256] = "";
		RaceDecision d;

		memset(&in, 0, sizeof(in));
		in.self = c->self;
		in.peers = c->peers;
		in.npeers = c->npeers;
		in.leader_optime = c->leader_optime;
		in.cluster_timeline = c->cluster_timeline;
		in.maximum_lag_bytes = c->max_lag;
		in.preferred = c->preferred;
		in.forced = c->forced;
		d = failover_decide(&in, why, sizeof(why));
		UNIT_CHECK(d == c->want && strstr(why, c->why) != NULL,
				   "failover_decide %s: got %d want %d: %s", c->name, (int) d, (int) c->want, why);
	}
}
