/*
 * test_state.c - the HA protocol's transition table (src/ha_state.c):
 * its shape, the safety properties a reader relies on, and that
 * docs/architecture.md prints the same table as the code.
 *
 * Built against the server headers like test_failover.c.  ha_state.c logs
 * through ereport; these suites only call the pure lookups, and the log
 * entry points below answer "do not log" so that nothing of a running
 * server is needed.
 */
#include "pg_ha.h"

#include <stdio.h>

#include "unit.h"

/* ereport's entry points: never log in the unit binary */
bool
errstart(int elevel, const char *domain)
{
	return false;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return false;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

static HaState
next(HaState from, HaEvent ev)
{
	const HaTransition *t = ha_transition_find(from, ev);

	return t ? t->to : HA_NUM_STATES;
}

static void
table_shape(void)
{
	/* one row per (state, event): the first match would hide the others */
	for (int i = 0; i < ha_transition_count(); i++)
	{
		const HaTransition *a = ha_transition_at(i);
		int			dup = -1;

		for (int j = i + 1; j < ha_transition_count(); j++)
			if (a->from == ha_transition_at(j)->from && a->event == ha_transition_at(j)->event)
				dup = j;
		UNIT_CHECK(dup < 0, "row %d (%s + %s) is repeated at row %d", i,
				   ha_state_name(a->from), ha_event_name(a->event), dup);
	}
	/* every state and event has a name; every row has a reason */
	for (int s = 0; s < HA_NUM_STATES; s++)
		UNIT_CHECK(strcmp(ha_state_name((HaState) s), "unknown") != 0, "state %d has a name", s);
	for (int e = 0; e < HA_NUM_EVENTS; e++)
		UNIT_CHECK(strcmp(ha_event_name((HaEvent) e), "unknown") != 0, "event %d has a name", e);
	for (int i = 0; i < ha_transition_count(); i++)
		UNIT_CHECK(ha_transition_at(i)->why && ha_transition_at(i)->why[0], "row %d has a reason", i);
	UNIT_CHECK(ha_transition_at(-1) == NULL && ha_transition_at(ha_transition_count()) == NULL,
			   "rows out of range are NULL");
}

typedef struct Step
{
	HaState		from;
	HaEvent		event;
	HaState		want;			/* HA_NUM_STATES: refused */
	const char *why;
} Step;

static void
table_rules(void)
{
	static const Step steps[] = {
		/* everywhere */
		{HA_LEADER, HA_EV_SHUTDOWN, HA_STOPPING, "shutdown from any state"},
		{HA_DEMOTING, HA_EV_SHUTDOWN, HA_STOPPING, "shutdown while demoting"},
		{HA_REPLICA, HA_EV_BAD_CONFIG, HA_MISCONFIGURED, "bad config from any state"},
		{HA_STARTING, HA_EV_BAD_CONFIG, HA_MISCONFIGURED, "bad config at start"},
		/* a standby reaches leader only through promoting */
		{HA_REPLICA, HA_EV_GOT_LEADER_KEY, HA_NUM_STATES, "replica cannot become leader directly"},
		{HA_RACING, HA_EV_GOT_LEADER_KEY, HA_NUM_STATES, "racing cannot become leader directly"},
		{HA_RACING, HA_EV_WON_RACE, HA_PROMOTING, "race won: promoting"},
		{HA_PROMOTING, HA_EV_GOT_LEADER_KEY, HA_LEADER, "promotion finished: leader"},
		/* a leader hands over only through handing over */
		{HA_LEADER, HA_EV_HANDED_OVER, HA_NUM_STATES, "no hand-over without the handing-over state"},
		{HA_LEADER, HA_EV_SWITCHOVER_DUE, HA_HANDING_OVER, "switchover starts"},
		{HA_HANDING_OVER, HA_EV_HANDED_OVER, HA_DEMOTING, "handed over: demote"},
		{HA_HANDING_OVER, HA_EV_HANDOVER_ABORTED, HA_LEADER, "abandoned: lead on"},
		{HA_HANDING_OVER, HA_EV_SWITCHOVER_DUE, HA_NUM_STATES, "one switchover at a time"},
		/* losing the key fences */
		{HA_LEADER, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, "leader that lost the key is fenced"},
		{HA_HANDING_OVER, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, "lost the key mid-switchover: fenced"},
		{HA_LEADER, HA_EV_DEMOTE, HA_NUM_STATES, "a leader never demotes without losing the key first"},
		{HA_FENCED, HA_EV_DEMOTE, HA_DEMOTING, "a fenced primary demotes"},
		{HA_FENCED, HA_EV_GOT_LEADER_KEY, HA_LEADER, "a fenced primary that takes the key back leads"},
		/* standby-only and primary-only events stay on their side */
		{HA_REPLICA, HA_EV_SWITCHOVER_DUE, HA_NUM_STATES, "a replica cannot hand over"},
		{HA_LEADER, HA_EV_WON_RACE, HA_NUM_STATES, "a leader does not race"},
		{HA_LEADER, HA_EV_FOLLOWING, HA_NUM_STATES, "a leader does not follow"},
		{HA_REPLICA, HA_EV_DIVERGED, HA_DIVERGED, "a diverged replica stops for pg_rewind"},
		{HA_DIVERGED, HA_EV_WON_RACE, HA_NUM_STATES, "a diverged node never promotes"},
		{HA_DIVERGED, HA_EV_LEADER_GONE, HA_NUM_STATES, "a diverged node never races"},
		/* terminal states */
		{HA_DEMOTING, HA_EV_GOT_LEADER_KEY, HA_NUM_STATES, "demoting is final"},
		{HA_MISCONFIGURED, HA_EV_GOT_LEADER_KEY, HA_NUM_STATES, "misconfigured never leads"},
		{HA_MISCONFIGURED, HA_EV_LEADER_GONE, HA_NUM_STATES, "misconfigured never races"},
		{HA_STOPPING, HA_EV_GOT_LEADER_KEY, HA_NUM_STATES, "stopping never leads"},
		/* etcd loss */
		{HA_LEADER, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, "leader loses etcd"},
		{HA_ETCD_UNREACHABLE, HA_EV_GOT_LEADER_KEY, HA_LEADER, "etcd back, key confirmed"},
		{HA_ETCD_UNREACHABLE, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, "etcd back, key gone"},
		/* failsafe: a lease etcd expired is taken back only on the way back from an outage */
		{HA_ETCD_UNREACHABLE, HA_EV_LEADER_KEY_RETAKEN, HA_LEADER, "etcd back, key retaken under the promises"},
		{HA_LEADER, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "no retake outside an outage"},
		{HA_HANDING_OVER, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "no retake during a switchover"},
		{HA_FENCED, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "a fenced primary takes the key as usual"},
		{HA_REPLICA, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "a replica never retakes"},
		{HA_RACING, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "racing never retakes"},
		{HA_PROMOTING, HA_EV_LEADER_KEY_RETAKEN, HA_NUM_STATES, "promoting never retakes"},
	};

	for (size_t i = 0; i < lengthof(steps); i++)
	{
		HaState		got = next(steps[i].from, steps[i].event);

		UNIT_CHECK(got == steps[i].want, "%s: %s + %s -> %s, want %s", steps[i].why,
				   ha_state_name(steps[i].from), ha_event_name(steps[i].event),
				   got == HA_NUM_STATES ? "refused" : ha_state_name(got),
				   steps[i].want == HA_NUM_STATES ? "refused" : ha_state_name(steps[i].want));
	}
	/* etcd failure is handled in every state that talks to etcd */
	for (int s = 0; s < HA_NUM_STATES; s++)
	{
		if (s == HA_DEMOTING || s == HA_DIVERGED || s == HA_MISCONFIGURED || s == HA_STOPPING)
			continue;
		UNIT_CHECK(next((HaState) s, HA_EV_ETCD_FAILED) == HA_ETCD_UNREACHABLE,
				   "%s + etcd failed -> etcd unreachable", ha_state_name((HaState) s));
	}
	/*
	 * leader is entered only from states of a primary that holds the key
	 * or just promoted, or (failsafe) that took it back after an outage
	 */
	for (int i = 0; i < ha_transition_count(); i++)
	{
		const HaTransition *t = ha_transition_at(i);

		if (t->to == HA_LEADER)
			UNIT_CHECK(t->event == HA_EV_GOT_LEADER_KEY || t->event == HA_EV_HANDOVER_ABORTED ||
					   (t->event == HA_EV_LEADER_KEY_RETAKEN && t->from == HA_ETCD_UNREACHABLE),
					   "leader entered only by getting the key, abandoning a hand-over or retaking it after an outage (row %d: %s)",
					   i, ha_event_name(t->event));
		if (t->to == HA_PROMOTING)
			UNIT_CHECK(t->event == HA_EV_WON_RACE, "promoting entered only by winning (row %d)", i);
	}
}

/*
 * Each irreversible action belongs to the rows that enter its state, and
 * to no other: promote only into promoting, restart as a standby only into
 * demoting, stop for pg_rewind only from replica into diverged, and the
 * fence comes down only on the way into leader.
 */
static void
table_actions(void)
{
	static const struct
	{
		HaAction	action;
		HaState		only_into;
	}			owners[] = {
		{HA_ACT_PROMOTE, HA_PROMOTING},
		{HA_ACT_RESTART_AS_STANDBY, HA_DEMOTING},
		{HA_ACT_STOP_FOR_REWIND, HA_DIVERGED},
		{HA_ACT_LIFT_FENCE, HA_LEADER},
		{HA_ACT_CHECKPOINT, HA_HANDING_OVER},
	};

	for (int i = 0; i < ha_transition_count(); i++)
	{
		const HaTransition *t = ha_transition_at(i);

		UNIT_CHECK(strcmp(ha_action_name(t->action), "unknown") != 0, "row %d has a named action", i);
		for (size_t k = 0; k < lengthof(owners); k++)
			if (t->action == owners[k].action)
				UNIT_CHECK(t->to == owners[k].only_into,
						   "action \"%s\" only on the way into \"%s\" (row %d goes to \"%s\")",
						   ha_action_name(t->action), ha_state_name(owners[k].only_into),
						   i, ha_state_name(t->to));
		if (t->to == HA_LEADER)
			UNIT_CHECK(t->action == HA_ACT_LIFT_FENCE, "row %d into leader lifts the fence", i);
		if (t->to == HA_FENCED || t->to == HA_MISCONFIGURED)
			UNIT_CHECK(t->action == HA_ACT_FENCE, "row %d into %s raises the fence", i,
					   ha_state_name(t->to));
		if (t->to == HA_PROMOTING && t->from != HA_PROMOTING)
			UNIT_CHECK(t->action == HA_ACT_PROMOTE, "row %d into promoting promotes", i);
		if (t->to == HA_DEMOTING && t->from != HA_DEMOTING)
			UNIT_CHECK(t->action == HA_ACT_RESTART_AS_STANDBY, "row %d into demoting restarts", i);
		if (t->from == HA_REPLICA && t->to == HA_DIVERGED)
			UNIT_CHECK(t->action == HA_ACT_STOP_FOR_REWIND, "row %d stops for pg_rewind", i);
		/* no action of a primary runs for a standby event, and vice versa */
		if (t->event == HA_EV_ETCD_FAILED || t->event == HA_EV_FOLLOWING ||
			t->event == HA_EV_LEADER_GONE || t->event == HA_EV_SHUTDOWN)
			UNIT_CHECK(t->action == HA_ACT_NONE, "row %d (%s) only observes", i,
					   ha_event_name(t->event));
	}
	UNIT_CHECK(strcmp(ha_action_name((HaAction) HA_NUM_ACTIONS), "unknown") == 0,
			   "out-of-range action named \"unknown\"");
}

/* docs/architecture.md's table, row for row */
static void
table_documented(void)
{
	FILE	   *f = fopen("docs/architecture.md", "r");
	char		line[512];
	int			row = -1;		/* -1: before the table */
	int			rows = 0;

	UNIT_CHECK(f != NULL, "docs/architecture.md readable (run from the source tree)");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f))
	{
		char		want[512];
		const HaTransition *t;

		if (row == -2)
		{
			row = 0;			/* the |---| line */
			continue;
		}
		if (row < 0)
		{
			if (strncmp(line, "| from | event | to | action | why |", 35) == 0)
				row = -2;
			continue;
		}
		if (line[0] != '|')
			break;
		t = ha_transition_at(row);
		if (t == NULL)
		{
			UNIT_CHECK(false, "docs row %d has no row in ha_state.c: %s", row, line);
			row++;
			continue;
		}
		snprintf(want, sizeof(want), "| %s | %s | %s | %s | %s |\n",
				 t->from == HA_NUM_STATES ? "any" : ha_state_name(t->from),
				 ha_event_name(t->event), ha_state_name(t->to),
				 ha_action_name(t->action), t->why);
		UNIT_CHECK(strcmp(line, want) == 0, "docs row %d: %s  code says: %s", row, line, want);
		row++;
		rows++;
	}
	fclose(f);
	UNIT_CHECK(rows == ha_transition_count(), "docs list %d rows, the code has %d",
			   rows, ha_transition_count());
}

void
unit_state_table(void)
{
	table_shape();
	table_actions();
	table_rules();
	table_documented();
}
