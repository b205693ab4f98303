/*
 * test_target.c - ha_target_check(): which member a switchover or failover
 * may name (the rules pg_ha.switchover(), pg_ha.failover() and pg_hactl
 * apply before writing a request), and the member/status/history readers
 * they rest on.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ha_request.h"
#include "unit.h"

#define MB (UINT64_C(1) << 20)

static HaCandidate
member(const char *json, const char *name)
{
	HaCandidate c;

	ha_candidate_parse(name, json, strlen(json), &c);
	return c;
}

static HaCandidate
replica(const char *name, unsigned long long lsn, unsigned tl, bool streaming, const char *tags)
{
	char		json[512];

	snprintf(json, sizeof(json),
			 "{\"conn_url\":\"postgres://h:5432/postgres\",\"role\":\"replica\",\"state\":\"running\","
			 "\"xlog_location\":%llu,\"timeline\":%u%s%s}",
			 lsn, tl, streaming ? ",\"replication_state\":\"streaming\"" : "", tags);
	return member(json, name);
}

#define REPLICA(name, lsn, tl, streaming, tags) replica(name, lsn, tl, streaming, tags)

typedef struct TargetCase
{
	const char *name;
	bool		switchover;
	bool		force;
	const char *leader;
	const char *candidate;
	uint64_t	status_optime;
	uint32_t	history_timeline;
	uint64_t	max_lag;
	HaTargetVerdict want;
	const char *chosen;			/* expected chosen, NULL: not checked */
	const char *better;			/* expected better, NULL: "" */
} TargetCase;

/*
 * The cluster: n1 leads (when a case names a leader); n2 is the most
 * advanced replica, n3 32 MB behind, n4 tagged nofailover, n5 on an old
 * timeline, n6 stopped, n7 not streaming but close, n8 not streaming and
 * far behind, n9 with failover_priority 0.
 */
static HaCandidate cluster[10];

static void
make_cluster(void)
{
	int			n = 0;

	cluster[n++] = member("{\"conn_url\":\"postgres://h:5432/postgres\",\"role\":\"master\",\"state\":\"running\","
						  "\"xlog_location\":104857600,\"timeline\":3}", "n1");
	cluster[n++] = REPLICA("n2", 104857600, 3, true, "");
	cluster[n++] = REPLICA("n3", 71303168, 3, true, "");
	cluster[n++] = REPLICA("n4", 104857600, 3, true, ",\"tags\":{\"nofailover\":true}");
	cluster[n++] = REPLICA("n5", 104857600, 2, true, "");
	cluster[n++] = member("{\"conn_url\":\"postgres://h:5432/postgres\",\"role\":\"replica\",\"state\":\"stopped\","
						  "\"xlog_location\":104857600,\"timeline\":3}", "n6");
	cluster[n++] = REPLICA("n7", 104857000, 3, false, "");
	cluster[n++] = REPLICA("n8", 1048576, 3, false, "");
	cluster[n++] = REPLICA("n9", 104857600, 3, true, ",\"tags\":{\"failover_priority\":0}");
	cluster[n++] = member("not json", "n10");
}

static const TargetCase cases[] = {
	/* switchover (n1 leads) */
	{"switchover picks the most advanced", true, false, "n1", NULL, 0, 0, MB, HA_TARGET_OK, "n2"},
	{"switchover to a streaming replica behind", true, false, "n1", "n3", 0, 0, MB, HA_TARGET_OK, "n3"},
	{"switchover to the leader", true, false, "n1", "n1", 0, 0, MB, HA_TARGET_IS_LEADER},
	{"switchover to an unknown member", true, false, "n1", "nx", 0, 0, MB, HA_TARGET_UNKNOWN, "nx"},
	{"switchover to nofailover", true, false, "n1", "n4", 0, 0, MB, HA_TARGET_NOFAILOVER},
	{"switchover to failover_priority 0", true, false, "n1", "n9", 0, 0, MB, HA_TARGET_NOFAILOVER},
	{"switchover to an old timeline", true, false, "n1", "n5", 0, 0, MB, HA_TARGET_OLD_TIMELINE},
	{"switchover to a stopped node", true, false, "n1", "n6", 0, 0, MB, HA_TARGET_NOT_REPLICA},
	{"switchover to an unparsable member", true, false, "n1", "n10", 0, 0, MB, HA_TARGET_NOT_REPLICA},
	{"switchover to a replica not streaming", true, false, "n1", "n7", 0, 0, MB, HA_TARGET_NOT_STREAMING},
	{"switchover to a far replica not streaming", true, false, "n1", "n8", 0, 0, MB, HA_TARGET_LAGGING},
	{"switchover: history says timeline 4", true, false, "n1", "n2", 0, 4, MB, HA_TARGET_OLD_TIMELINE},
	/* failover (no leader) */
	{"failover to the most advanced", false, false, "", "n2", 0, 0, MB, HA_TARGET_OK, "n2"},
	{"failover to a lagging replica names the better one", false, false, "", "n3", 0, 0, 64 * MB,
	HA_TARGET_NOT_BEST, "n3", "n2"},
	{"failover to a lagging replica, forced", false, true, "", "n3", 0, 0, 64 * MB, HA_TARGET_OK, "n3"},
	{"failover beyond maximum lag (of the old leader's key)", false, false, "", "n3", 0, 0, MB,
	HA_TARGET_NOT_BEST, "n3", "n2"},
	{"failover: only the status key is ahead", false, false, "", "n2", 209715200, 0, MB, HA_TARGET_LAGGING},
	{"failover: status key ahead, forced", false, true, "", "n2", 209715200, 0, MB, HA_TARGET_OK},
	{"failover: status key within the lag", false, false, "", "n2", 104857601, 0, MB, HA_TARGET_OK},
	{"failover to nofailover, forced", false, true, "", "n4", 0, 0, MB, HA_TARGET_NOFAILOVER},
	{"failover to an old timeline, forced", false, true, "", "n5", 0, 0, MB, HA_TARGET_OLD_TIMELINE},
	{"failover to a stopped node, forced", false, true, "", "n6", 0, 0, MB, HA_TARGET_NOT_REPLICA},
	{"failover to the old primary", false, false, "", "n1", 0, 0, MB, HA_TARGET_NOT_REPLICA},
	{"failover to an unknown member", false, false, "", "nx", 0, 0, MB, HA_TARGET_UNKNOWN},
	{"failover without a candidate", false, false, "", NULL, 0, 0, MB, HA_TARGET_NONE},
	{"failover: 600 bytes behind is not the best", false, false, "", "n7", 0, 0, MB, HA_TARGET_NOT_BEST, "n7", "n2"},
	{"failover: 600 bytes behind, forced", false, true, "", "n7", 0, 0, MB, HA_TARGET_OK, "n7"},
	{"failover to a far replica (not-best first)", false, false, "", "n8", 0, 0, MB, HA_TARGET_NOT_BEST, "n8", "n2"},
};

/*
 * Synchronous mode: a failover names only a standby the sync key lists
 * (the key the lost leader left); force opens the way, a switchover is
 * not concerned (the leader hands over its final position).
 */
static void
sync_rule(void)
{
	static const struct
	{
		const char *name;
		bool		switchover;
		bool		force;
		const char *sync_leader;
		const char *standbys;
		const char *candidate;
		HaTargetVerdict want;
	}			sc[] = {
		{"listed", false, false, "n1", "n2", "n2", HA_TARGET_OK},
		{"listed among several", false, false, "n1", "n7,n2,n3", "n2", HA_TARGET_OK},
		{"listed, another case", false, false, "n1", "N2", "n2", HA_TARGET_OK},
		{"not listed", false, false, "n1", "n2", "n3", HA_TARGET_NOT_SYNC},
		{"a prefix of a listed name", false, false, "n1", "n22,n2x", "n2", HA_TARGET_NOT_SYNC},
		{"nobody listed", false, false, "n1", "", "n2", HA_TARGET_NOT_SYNC},
		{"not listed, forced", false, true, "n1", "n2", "n3", HA_TARGET_OK},
		{"no sync key", false, false, "", "", "n2", HA_TARGET_OK},
		{"no sync key (NULL)", false, false, NULL, NULL, "n2", HA_TARGET_OK},
		{"switchover to an unlisted standby", true, false, "n1", "n2", "n3", HA_TARGET_OK},
	};

	for (size_t i = 0; i < lengthof(sc); i++)
	{
		HaTargetInput in = {cluster, lengthof(cluster), sc[i].switchover ? "n1" : "", 0, 0, 64 * MB,
		sc[i].switchover, sc[i].force, sc[i].sync_leader, sc[i].standbys};
		char		why[256];
		HaTargetVerdict v = ha_target_check(&in, sc[i].candidate, NULL, 0, NULL, 0, why, sizeof(why));

		UNIT_CHECK(v == sc[i].want, "sync rule, %s: %s (want %s): %s", sc[i].name,
				   ha_target_verdict_name(v), ha_target_verdict_name(sc[i].want), why);
		if (v == HA_TARGET_NOT_SYNC)
			UNIT_CHECK(strstr(why, "sync key lists") != NULL, "sync rule, %s: why names the list: %s",
					   sc[i].name, why);
	}
}

static void
target_table(void)
{
	for (size_t i = 0; i < lengthof(cases); i++)
	{
		const TargetCase *c = &cases[i];
		HaTargetInput in = {cluster, lengthof(cluster), c->leader, c->status_optime,
		c->history_timeline, c->max_lag, c->switchover, c->force};
		char		chosen[HA_REQUEST_NAME_LEN];
		char		better[HA_REQUEST_NAME_LEN];
		char		why[256];
		HaTargetVerdict v = ha_target_check(&in, c->candidate, chosen, sizeof(chosen),
											better, sizeof(better), why, sizeof(why));

		UNIT_CHECK(v == c->want && (c->chosen == NULL || strcmp(chosen, c->chosen) == 0) &&
				   strcmp(better, c->better ? c->better : "") == 0 && why[0] != '\0',
				   "%s: %s (want %s) chosen=\"%s\" better=\"%s\": %s", c->name,
				   ha_target_verdict_name(v), ha_target_verdict_name(c->want), chosen, better, why);
	}
	/* switchover with no eligible replica */
	{
		HaTargetInput in = {cluster, 1, "n1", 0, 0, MB, true, false};
		char		why[256];

		UNIT_CHECK(ha_target_check(&in, NULL, NULL, 0, NULL, 0, why, sizeof(why)) == HA_TARGET_NONE,
				   "switchover without replicas: %s", why);
	}
	/* ties: equal LSN goes to the higher priority, then the smaller name */
	{
		HaCandidate two[3];
		HaTargetInput in = {two, 3, "n1", 0, 0, MB, true, false};
		char		chosen[HA_REQUEST_NAME_LEN];

		two[0] = cluster[0];
		two[1] = REPLICA("nb", 5, 3, true, "");
		two[2] = REPLICA("na", 5, 3, true, "");
		ha_target_check(&in, NULL, chosen, sizeof(chosen), NULL, 0, NULL, 0);
		UNIT_CHECK(strcmp(chosen, "na") == 0, "equal LSN: smaller name, got %s", chosen);
		two[1] = REPLICA("nb", 5, 3, true, ",\"tags\":{\"failover_priority\":5}");
		ha_target_check(&in, NULL, chosen, sizeof(chosen), NULL, 0, NULL, 0);
		UNIT_CHECK(strcmp(chosen, "nb") == 0, "equal LSN: higher priority, got %s", chosen);
	}
	/* with no leader nobody streams: a failover does not ask for it */
	{
		HaCandidate two[2];
		HaTargetInput in = {two, 2, "", 0, 0, MB, false, false};

		two[0] = REPLICA("na", 5, 3, false, "");
		two[1] = REPLICA("nb", 4, 3, false, "");
		UNIT_CHECK(ha_target_check(&in, "na", NULL, 0, NULL, 0, NULL, 0) == HA_TARGET_OK,
				   "failover to a replica that is not streaming");
	}
	UNIT_CHECK(strcmp(ha_target_verdict_name(HA_TARGET_NOT_BEST), "not_best") == 0, "verdict names");
	sync_rule();
}

static void
readers(void)
{
	HaCandidate c;
	uint32_t	tl;
	char		reason[64];
	char		leader[64];

	c = member("{\"conn_url\":\"postgres://h:1/p\",\"role\":\"replica\",\"state\":\"streaming\","
			   "\"xlog_location\":5,\"timeline\":2,\"replication_state\":\"streaming\","
			   "\"tags\":{\"nofailover\":\"true\"}}", "n2");
	UNIT_CHECK(c.valid && c.is_replica && c.streaming && c.nofailover && c.lsn == 5 && c.timeline == 2,
			   "member: Patroni 4 replica, nofailover as a string");
	c = member("{\"role\":\"replica\",\"xlog_location\":5}", "n2");
	UNIT_CHECK(!c.valid, "member without conn_url is not valid");
	c = member("{\"conn_url\":\"x\",\"role\":\"replica\",\"xlog_location\":-5}", "n2");
	UNIT_CHECK(!c.valid, "member with a negative position is not valid");
	c = member("[1,2]", "n2");
	UNIT_CHECK(!c.valid && strcmp(c.name, "n2") == 0, "member that is not an object");
	c = member("{\"conn_url\":\"x\",\"role\":\"primary\",\"xlog_location\":7}", "n1");
	UNIT_CHECK(c.valid && c.is_primary && !c.is_replica, "member: primary");

	UNIT_CHECK(ha_status_optime("{\"optime\":123}", 15) == 123, "status optime");
	UNIT_CHECK(ha_status_optime("{\"optime\":-1}", 14) == 0, "status optime negative");
	UNIT_CHECK(ha_status_optime("[]", 2) == 0 && ha_status_optime(NULL, 0) == 0, "status not an object");

	{
		const char *h = "[[1,25165984,\"no recovery target specified\",\"2026-11-30T10:00:00+00:00\",\"n2\"],"
			"[2,50331744,\"switchover\",\"2026-11-30T11:00:00+00:00\",\"n1\"]]";

		UNIT_CHECK(ha_history_last(h, strlen(h), &tl, reason, sizeof(reason), leader, sizeof(leader)) &&
				   tl == 3 && strcmp(reason, "switchover") == 0 && strcmp(leader, "n1") == 0,
				   "history: last entry tl=%u reason=%s leader=%s", tl, reason, leader);
	}
	UNIT_CHECK(ha_history_last("[[4,1,\"failover\"]]", 19, &tl, reason, sizeof(reason), leader, sizeof(leader)) &&
			   tl == 5 && strcmp(reason, "failover") == 0 && leader[0] == '\0',
			   "history: Patroni's 3-field entry");
	UNIT_CHECK(!ha_history_last("[]", 2, &tl, reason, sizeof(reason), leader, sizeof(leader)) && tl == 0,
			   "history: empty");
	UNIT_CHECK(!ha_history_last("{\"a\":1}", 7, &tl, NULL, 0, NULL, 0), "history: not an array");
	UNIT_CHECK(!ha_history_last("[[\"x\"]]", 7, &tl, NULL, 0, NULL, 0), "history: timeline not a number");
}

/* Which failover key values block a new switchover / a failover. */
typedef struct BlockCase
{
	const char *value;
	bool		blocks_switchover;
	bool		blocks_failover;
} BlockCase;

static const BlockCase block_cases[] = {
	{"{\"leader\":\"n1\",\"member\":\"n2\"}", true, false},
	{"{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"2999-01-01T00:00:00Z\"}", true, false},
	{"{\"member\":\"n3\"}", true, true},
	{"{\"member\":\"n3\",\"force\":true}", true, true},
	{"{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":5,\"handed_over\":true}", true, true},
	{"{\"leader\":\"n1\",\"member\":\"n2\",\"final_lsn\":5,\"handed_over\":true,\"final_confirmed\":true}", true, true},
	{"{\"leader\":\"n1\",\"member\":\"n2\",\"aborted\":\"lagging\"}", false, false},
	{"{\"leader\":\"n1\",\"final_lsn\":5,\"shutdown\":true}", false, false},
	{"{\"leader\":\"n1\",\"member\":\"n2\",\"scheduled_at\":\"not a time\"}", false, false},
	{"garbage", false, false},
};

static void
control_view(void)
{
	static HaControlView v;

	for (size_t i = 0; i < lengthof(block_cases); i++)
	{
		const BlockCase *c = &block_cases[i];

		memset(&v, 0, sizeof(v));
		ha_control_view_add(&v, "failover", c->value, strlen(c->value), 42);
		UNIT_CHECK(v.has_request && v.request_mod_revision == 42 &&
				   ha_request_blocks(&v, false) == c->blocks_switchover &&
				   ha_request_blocks(&v, true) == c->blocks_failover,
				   "blocks %s: switchover %d failover %d (%s)", c->value,
				   ha_request_blocks(&v, false), ha_request_blocks(&v, true), v.request_error);
	}
	memset(&v, 0, sizeof(v));
	UNIT_CHECK(!ha_request_blocks(&v, false), "no failover key blocks nothing");

	memset(&v, 0, sizeof(v));
	ha_control_view_add(&v, "leader", "n1", 2, 1);
	ha_control_view_add(&v, "members/n1", "{\"conn_url\":\"x\",\"role\":\"master\",\"xlog_location\":9}", 53, 1);
	ha_control_view_add(&v, "members/bad name", "{}", 2, 1);
	ha_control_view_add(&v, "config", "{\"pause\":true}", 14, 1);
	ha_control_view_add(&v, "status", "{\"optime\":77}", 14, 1);
	ha_control_view_add(&v, "history", "[[1,5,\"switchover\",\"t\",\"n1\"]]", 31, 1);
	ha_control_view_add(&v, "sync", "{}", 2, 1);
	UNIT_CHECK(strcmp(v.leader, "n1") == 0 && v.nmembers == 1 && v.members[0].is_primary &&
			   ha_control_view_member(&v, "n1") == &v.members[0] &&
			   ha_control_view_member(&v, "n2") == NULL && v.paused &&
			   v.status_optime == 77 && v.history_timeline == 2 &&
			   strcmp(v.history_reason, "switchover") == 0 && !v.has_request,
			   "control view: leader=%s members=%d paused=%d optime=%llu tl=%u reason=%s",
			   v.leader, v.nmembers, v.paused, (unsigned long long) v.status_optime,
			   v.history_timeline, v.history_reason);
	memset(&v, 0, sizeof(v));
	ha_control_view_add(&v, "leader", "n1\0x", 4, 1);
	UNIT_CHECK(v.leader[0] == '\0', "a leader value with a NUL is ignored");
}

void
unit_target(void)
{
	make_cluster();
	target_table();
	readers();
	control_view();
}
