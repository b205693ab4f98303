/*
 * ha_state.c - the HA worker's protocol as a table.
 *
 * Each row says: in state `from`, event `event` leads to state `to` and
 * runs `action`, and why.  A pair the table does not list is refused: the
 * state stays, and one LOG line says so (once per pair, not per cycle).  Only two
 * events apply in every state - a bad configuration and shutdown - and
 * they are the only wildcard rows.  The worker (ha_worker.c) observes the
 * node and etcd and raises the event (fire() in ha_worker.c); the row's
 * action - fence, lift the fence, checkpoint, promote, restart as a
 * standby, stop for pg_rewind - runs only through the row, so no
 * irreversible step happens in a state whose row does not name it.  Where
 * the worker must change etcd before it can raise the event (take the key,
 * release it to a candidate), it first asks whether the event would be
 * allowed; that is the row's guard.  docs/architecture.md prints the same
 * table.
 *
 * Every change of state is one LOG line of the form
 *
 *     pg_ha: <why>: <from> -> <to> (<detail>)
 *
 * so `grep 'pg_ha: '` over the server log tells the node's history.
 */
#include "pg_ha.h"

#define ANY_STATE HA_NUM_STATES

/*
 * The protocol.  In words: a primary leads while the leader key carries
 * its name and lease, and is fenced otherwise (unless etcd expired its lease
 * while every member's failsafe promise still holds: then it takes the key
 * back, ha_failsafe.c point 4); it hands over only after the candidate has
 * all its WAL; a standby follows the leader, races when the key is gone,
 * and promotes only after it took the key.
 */
static const HaTransition ha_transitions[] = {
	/* start: the first cycle with etcd tells the node what it is */
	{HA_STARTING, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "primary holds the leader key"},
	{HA_STARTING, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "primary may not lead"},
	{HA_STARTING, HA_EV_FOLLOWING, HA_REPLICA, HA_ACT_NONE, "standby found the leader"},
	{HA_STARTING, HA_EV_LEADER_GONE, HA_RACING, HA_ACT_NONE, "standby found no leader"},
	{HA_STARTING, HA_EV_WON_RACE, HA_PROMOTING, HA_ACT_PROMOTE, "promotion under way at start"},
	{HA_STARTING, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable"},

	/* etcd unreachable: a leader's deadline passes by itself (fence.c) */
	{HA_ETCD_UNREACHABLE, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd still unreachable"},
	{HA_ETCD_UNREACHABLE, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "etcd back, leader key still ours"},
	{HA_ETCD_UNREACHABLE, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "etcd back, the leader key is not ours"},
	{HA_ETCD_UNREACHABLE, HA_EV_LEADER_KEY_RETAKEN, HA_LEADER, HA_ACT_LIFT_FENCE, "etcd back, lease expired: leader key retaken under the failsafe promises"},
	{HA_ETCD_UNREACHABLE, HA_EV_FOLLOWING, HA_REPLICA, HA_ACT_NONE, "etcd back, following the leader"},
	{HA_ETCD_UNREACHABLE, HA_EV_LEADER_GONE, HA_RACING, HA_ACT_NONE, "etcd back, no leader"},
	{HA_ETCD_UNREACHABLE, HA_EV_WON_RACE, HA_PROMOTING, HA_ACT_PROMOTE, "etcd back, promotion under way"},
	{HA_ETCD_UNREACHABLE, HA_EV_HANDOVER_ABORTED, HA_LEADER, HA_ACT_LIFT_FENCE, "switchover abandoned"},
	{HA_ETCD_UNREACHABLE, HA_EV_HANDED_OVER, HA_DEMOTING, HA_ACT_RESTART_AS_STANDBY, "leader key handed to the candidate"},

	/* leader: renew and confirm the key each cycle; act on requests */
	{HA_LEADER, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "leader key renewed and confirmed"},
	{HA_LEADER, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "lost the leader key: writes refused"},
	{HA_LEADER, HA_EV_SWITCHOVER_DUE, HA_HANDING_OVER, HA_ACT_CHECKPOINT, "switchover: checkpoint, then fence"},
	{HA_LEADER, HA_EV_HANDOVER_ABORTED, HA_LEADER, HA_ACT_LIFT_FENCE, "switchover refused"},
	{HA_LEADER, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable: the lease runs out unless renewed"},

	/* handing over: the key moves only once the candidate has our WAL */
	{HA_HANDING_OVER, HA_EV_HANDED_OVER, HA_DEMOTING, HA_ACT_RESTART_AS_STANDBY, "candidate flushed our WAL: key released"},
	{HA_HANDING_OVER, HA_EV_HANDOVER_ABORTED, HA_LEADER, HA_ACT_LIFT_FENCE, "switchover abandoned: fence lifted"},
	{HA_HANDING_OVER, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "switchover stopped, the key is still ours"},
	{HA_HANDING_OVER, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "lost the leader key during a switchover"},
	{HA_HANDING_OVER, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable during a switchover"},

	/* fenced primary: take the key back if it may, else demote */
	{HA_FENCED, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "took the leader key: fence lifted"},
	{HA_FENCED, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "still without the leader key"},
	{HA_FENCED, HA_EV_DEMOTE, HA_DEMOTING, HA_ACT_RESTART_AS_STANDBY, "restarting as a standby"},
	{HA_FENCED, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable"},

	/* replica: follow; race when the key goes */
	{HA_REPLICA, HA_EV_FOLLOWING, HA_REPLICA, HA_ACT_NONE, "following the leader"},
	{HA_REPLICA, HA_EV_LEADER_GONE, HA_RACING, HA_ACT_NONE, "leader key gone"},
	{HA_REPLICA, HA_EV_WON_RACE, HA_PROMOTING, HA_ACT_PROMOTE, "promotion under way"},
	{HA_REPLICA, HA_EV_DIVERGED, HA_DIVERGED, HA_ACT_STOP_FOR_REWIND, "left the leader's history: stopping for pg_rewind"},
	{HA_REPLICA, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable"},

	/* racing: only the best eligible replica takes the key */
	{HA_RACING, HA_EV_LEADER_GONE, HA_RACING, HA_ACT_NONE, "still no leader"},
	{HA_RACING, HA_EV_FOLLOWING, HA_REPLICA, HA_ACT_NONE, "another node took the leader key"},
	{HA_RACING, HA_EV_WON_RACE, HA_PROMOTING, HA_ACT_PROMOTE, "took the leader key: promoting"},
	{HA_RACING, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable"},

	/* promoting: bounded; the key is given up if recovery does not end */
	{HA_PROMOTING, HA_EV_GOT_LEADER_KEY, HA_LEADER, HA_ACT_LIFT_FENCE, "promotion finished"},
	{HA_PROMOTING, HA_EV_LEADER_KEY_TAKEN, HA_FENCED, HA_ACT_FENCE, "promoted without the leader key"},
	{HA_PROMOTING, HA_EV_ETCD_FAILED, HA_ETCD_UNREACHABLE, HA_ACT_NONE, "etcd unreachable while promoting"},
	{HA_PROMOTING, HA_EV_FOLLOWING, HA_REPLICA, HA_ACT_NONE, "gave the leader key up: promotion too slow"},
	{HA_PROMOTING, HA_EV_LEADER_GONE, HA_RACING, HA_ACT_NONE, "gave the leader key up: promotion too slow"},

	/* diverged: postgres is stopping; nothing else happens */
	{HA_DIVERGED, HA_EV_FOLLOWING, HA_DIVERGED, HA_ACT_NONE, "waiting for the shutdown"},
	{HA_DIVERGED, HA_EV_DIVERGED, HA_DIVERGED, HA_ACT_NONE, "waiting for the shutdown"},

	/* everywhere */
	{ANY_STATE, HA_EV_BAD_CONFIG, HA_MISCONFIGURED, HA_ACT_FENCE, "cannot manage this node"},
	{ANY_STATE, HA_EV_SHUTDOWN, HA_STOPPING, HA_ACT_NONE, "shutting down"},
	{ANY_STATE, HA_EV_RESTART, HA_STOPPING, HA_ACT_NONE, "restarting through the service manager"},
};

static const char *const ha_state_names[HA_NUM_STATES] = {
	[HA_STARTING] = "starting",
	[HA_ETCD_UNREACHABLE] = "etcd unreachable",
	[HA_LEADER] = "leader",
	[HA_HANDING_OVER] = "handing over",
	[HA_FENCED] = "fenced",
	[HA_DEMOTING] = "demoting",
	[HA_REPLICA] = "replica",
	[HA_RACING] = "racing",
	[HA_PROMOTING] = "promoting",
	[HA_DIVERGED] = "diverged",
	[HA_MISCONFIGURED] = "misconfigured",
	[HA_STOPPING] = "stopping",
};

static const char *const ha_action_names[HA_NUM_ACTIONS] = {
	[HA_ACT_NONE] = "-",
	[HA_ACT_FENCE] = "fence",
	[HA_ACT_LIFT_FENCE] = "lift the fence",
	[HA_ACT_CHECKPOINT] = "checkpoint",
	[HA_ACT_PROMOTE] = "promote",
	[HA_ACT_RESTART_AS_STANDBY] = "restart as a standby",
	[HA_ACT_STOP_FOR_REWIND] = "stop for pg_rewind",
};

static const char *const ha_event_names[HA_NUM_EVENTS] = {
	[HA_EV_ETCD_FAILED] = "etcd failed",
	[HA_EV_BAD_CONFIG] = "bad config",
	[HA_EV_SHUTDOWN] = "shutdown",
	[HA_EV_RESTART] = "restart",
	[HA_EV_GOT_LEADER_KEY] = "got leader key",
	[HA_EV_LEADER_KEY_TAKEN] = "leader key taken",
	[HA_EV_LEADER_KEY_RETAKEN] = "leader key retaken",
	[HA_EV_SWITCHOVER_DUE] = "switchover due",
	[HA_EV_HANDOVER_ABORTED] = "hand-over aborted",
	[HA_EV_HANDED_OVER] = "handed over",
	[HA_EV_DEMOTE] = "demote",
	[HA_EV_FOLLOWING] = "following",
	[HA_EV_LEADER_GONE] = "leader gone",
	[HA_EV_WON_RACE] = "won race",
	[HA_EV_DIVERGED] = "diverged",
};

const char *
ha_state_name(HaState state)
{
	if ((int) state < 0 || state >= HA_NUM_STATES)
		return "unknown";
	return ha_state_names[state];
}

const char *
ha_event_name(HaEvent event)
{
	if ((int) event < 0 || event >= HA_NUM_EVENTS)
		return "unknown";
	return ha_event_names[event];
}

const char *
ha_action_name(HaAction action)
{
	if ((int) action < 0 || action >= HA_NUM_ACTIONS)
		return "unknown";
	return ha_action_names[action];
}

const HaTransition *
ha_transition_find(HaState current, HaEvent event)
{
	for (size_t i = 0; i < lengthof(ha_transitions); i++)
	{
		const HaTransition *t = &ha_transitions[i];

		if (t->event == event && (t->from == current || t->from == ANY_STATE))
			return t;
	}
	return NULL;
}

int
ha_transition_count(void)
{
	return (int) lengthof(ha_transitions);
}

const HaTransition *
ha_transition_at(int i)
{
	return (i >= 0 && i < (int) lengthof(ha_transitions)) ? &ha_transitions[i] : NULL;
}

HaState
ha_transition(HaState current, HaEvent event, const char *detail)
{
	/* the last refused pair, so a repeated one is logged once */
	static int	refused_state = -1;
	static int	refused_event = -1;
	const HaTransition *t = ha_transition_find(current, event);

	if (t == NULL)
	{
		if (refused_state != (int) current || refused_event != (int) event)
			ereport(LOG,
					(errmsg("pg_ha: unexpected event \"%s\" in state \"%s\" refused%s%s%s",
							ha_event_name(event), ha_state_name(current),
							detail ? " (" : "", detail ? detail : "", detail ? ")" : "")));
		refused_state = (int) current;
		refused_event = (int) event;
		return current;
	}
	if (t->to != current)
	{
		refused_state = refused_event = -1;
		ereport(LOG,
				(errmsg("pg_ha: %s: %s -> %s%s%s%s", t->why,
						ha_state_name(current), ha_state_name(t->to),
						detail ? " (" : "", detail ? detail : "", detail ? ")" : "")));
	}
	return t->to;
}
