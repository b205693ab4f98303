/*
 * ha_state.c - the HA worker's state machine, written as data.
 *
 * Each row says: in state `from` (or any state), event `event` leads to
 * state `to`, and why.  The first matching row wins, so specific rows come
 * before wildcards.  The worker (ha_worker.c) does the work of a state; this
 * table only decides where it goes next, and every change of state is one
 * LOG line of the form
 *
 *     pg_ha: <reason>: <from> -> <to> (<detail>)
 *
 * so `grep 'pg_ha: '` over the server log tells the node's history.
 */
#include "pg_ha.h"

#define ANY_STATE (-1)

typedef struct HaTransition
{
	int			from;			/* HaState or ANY_STATE */
	HaEvent		event;
	HaState		to;
	const char *reason;
} HaTransition;

static const HaTransition ha_transitions[] = {
	{HA_LEADER, HA_EV_GOT_LEADER_KEY, HA_LEADER, "renewed leader key"},
	{HA_REPLICA, HA_EV_GOT_LEADER_KEY, HA_LEADER, "promoted node acquired leader key"},
	{ANY_STATE, HA_EV_GOT_LEADER_KEY, HA_LEADER, "acquired leader key"},

	{HA_LEADER, HA_EV_LEADER_KEY_TAKEN, HA_PRIMARY_NOT_LEADER, "lost leader key"},
	{ANY_STATE, HA_EV_LEADER_KEY_TAKEN, HA_PRIMARY_NOT_LEADER, "primary without leader key, another node holds it"},

	{ANY_STATE, HA_EV_FOLLOWING, HA_REPLICA, "standby publishing its position"},

	{ANY_STATE, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, "etcd unreachable"},
	{ANY_STATE, HA_EV_BAD_CONFIG, HA_MISCONFIGURED, "cannot manage this node"},
	{ANY_STATE, HA_EV_SHUTDOWN, HA_STOPPING, "shutting down"},
};

static const char *const ha_state_names[HA_NUM_STATES] = {
	[HA_STARTING] = "starting",
	[HA_ETCD_UNREACHABLE] = "etcd unreachable",
	[HA_LEADER] = "leader",
	[HA_PRIMARY_NOT_LEADER] = "primary without leader key",
	[HA_REPLICA] = "replica",
	[HA_MISCONFIGURED] = "misconfigured",
	[HA_STOPPING] = "stopping",
};

static const char *const ha_event_names[HA_NUM_EVENTS] = {
	[HA_EV_ETCD_FAILED] = "etcd failed",
	[HA_EV_GOT_LEADER_KEY] = "got leader key",
	[HA_EV_LEADER_KEY_TAKEN] = "leader key taken",
	[HA_EV_FOLLOWING] = "following",
	[HA_EV_BAD_CONFIG] = "bad config",
	[HA_EV_SHUTDOWN] = "shutdown",
};

const char *
ha_state_name(HaState state)
{
	if (state < 0 || state >= HA_NUM_STATES)
		return "unknown";
	return ha_state_names[state];
}

const char *
ha_event_name(HaEvent event)
{
	if (event < 0 || event >= HA_NUM_EVENTS)
		return "unknown";
	return ha_event_names[event];
}

HaState
ha_transition(HaState current, HaEvent event, const char *detail)
{
	for (size_t i = 0; i < lengthof(ha_transitions); i++)
	{
		const HaTransition *t = &ha_transitions[i];

		if (t->event != event || (t->from != ANY_STATE && t->from != (int) current))
			continue;
		if (t->to != current)
			ereport(LOG,
					(errmsg("pg_ha: %s: %s -> %s%s%s%s", t->reason,
							ha_state_name(current), ha_state_name(t->to),
							detail ? " (" : "", detail ? detail : "", detail ? ")" : "")));
		return t->to;
	}
	/* no row: the event does not move this state */
	return current;
}
