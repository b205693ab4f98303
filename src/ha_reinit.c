/*
 * ha_reinit.c - reinitialize: throw this replica's data directory away and
 * clone it afresh, what `patronictl reinit` does on Patroni.  Asked for
 * over POST /reinitialize (control_worker.c) or with pg_ha.reinitialize().
 *
 * postgres cannot replace its own data directory while it runs, so the
 * work is split as for a restart (ha_restart.c), whose path it reuses:
 *   1. here: the checks below, then the marker $PGDATA/pg_ha.reinitialize,
 *      then pg_ha.restart()'s marker and fast shutdown;
 *   2. the service manager runs `pg_hactl rejoin --if-needed` before it
 *      starts postgres again (contrib/systemd/pg_ha@.service).  pg_hactl
 *      sees the marker, reads the cluster from etcd again and, only if
 *      another node holds the leader key, moves the data directory aside,
 *      takes a base backup (from a member tagged clonefrom, else the
 *      leader), puts the node's own configuration files back, makes it a
 *      standby of the leader and removes the old directory;
 *   3. postgres starts on the fresh copy and streams from the leader.
 *
 * Safety: a wipe must never lose what the cluster has only here.
 *   - Only a replica that follows another leader is accepted: not a node
 *     holding the leader key or running as a primary, not one racing for
 *     the key or promoting, and not while this node's view of etcd is
 *     missing or stale (etcd unreachable).
 *   - Not a replica that a switchover or failover under way names as its
 *     candidate (named_candidate, from the failover key).  The request
 *     would hand it the leader key, which a node being reinitialized
 *     declines: the cluster would wait a TTL with no leader.  This check
 *     is for availability only; the one above keeps safety even if the
 *     key changes between the worker's read and the acceptance.
 *   - Acceptance sets reinit_pending under the shared lock, and only while
 *     the HA worker has not claimed the leader key; the worker claims it
 *     only while the flag is clear, in a section under the same lock
 *     (failsafe_may_take_key in ha_worker.c).  From acceptance until the
 *     postmaster exits, pg_ha therefore never makes this node the leader.
 *   - These checks only decide whether to shut down.  The wipe is decided
 *     by pg_hactl at the next start, with postgres stopped, on a fresh read
 *     of etcd: it re-clones only when the leader key names another node
 *     whose member key says where to reach it, and otherwise refuses and
 *     leaves the data directory untouched (the marker stays; the service
 *     manager tries again, and an operator may remove the marker to start
 *     the node with its data as it is).
 *   - The old directory is moved aside, not deleted, until the new copy is
 *     complete: a failed base backup puts it back.
 *   - A marker left by an earlier postmaster (postgres was started without
 *     pg_hactl) is dropped by the next HA worker with a WARNING
 *     (pg_ha_reinitialize_forget), so no later restart wipes the node
 *     unasked.
 */
#include "pg_ha.h"

#include <unistd.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(pg_ha_reinitialize);

#define REINIT_REASON_MAX 200

/* The verdict on what the HA worker last published; the caller holds the lock. */
static ReinitVerdict
verdict(bool replica, bool force)
{
	const PgHaShared *sh = pg_ha_shared;
	HaState		state = (HaState) pg_atomic_read_u32(&pg_ha_shared->state);

	if (!sh->leader_known || !sh->etcd_reachable)
		return REINIT_CLUSTER_UNKNOWN;
	if (sh->leader[0] == '\0')
		return REINIT_NO_LEADER;
	if (sh->is_leader || strcmp(sh->leader, pg_ha_effective_node_name()) == 0 || !replica)
		return REINIT_IS_LEADER;
	if (sh->failsafe_key_claimed || state == HA_RACING || state == HA_PROMOTING)
		return REINIT_MAY_PROMOTE;
	if (sh->named_candidate)
		return REINIT_CANDIDATE;
	if (sh->reinit_pending && !force)
		return REINIT_IN_PROGRESS;
	return REINIT_ACCEPTED;
}

static void
marker_path(char *path, size_t len)
{
	snprintf(path, len, "%s/%s", DataDir, PG_HA_REINIT_MARKER);
}

/*
 * Accepts a reinitialize of this node, or says why not.  Accepted: the
 * marker for pg_hactl and the restart marker are written, and the caller
 * shuts postgres down (pg_ha_restart_now) once it has answered.  ERROR,
 * with nothing left recorded, when a marker cannot be written.
 */
ReinitVerdict
pg_ha_reinitialize_accept(bool force, bool from_leader, const char *reason)
{
	/* a promotion under way ends recovery soon: not a replica any more */
	bool		replica = RecoveryInProgress() && !PromoteIsTriggered() && !CheckPromoteSignal();
	ReinitVerdict v;
	char		path[MAXPGPATH];

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	v = verdict(replica, force);
	if (v == REINIT_ACCEPTED)
		pg_ha_shared->reinit_pending = true;
	LWLockRelease(pg_ha_shared->lock);
	if (v != REINIT_ACCEPTED)
		return v;

	marker_path(path, sizeof(path));
	PG_TRY();
	{
		pg_ha_marker_write(PG_HA_REINIT_MARKER,
						   psprintf("pid=%d\nfrom_leader=%d\nreason=%s\n", (int) PostmasterPid,
									from_leader ? 1 : 0, reason));
		pg_ha_restart_mark(psprintf("reinitialize %s", reason));
	}
	PG_CATCH();
	{
		/* nothing is recorded: the node stays as it is, and may lead again */
		(void) unlink(path);
		LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
		pg_ha_shared->reinit_pending = false;
		LWLockRelease(pg_ha_shared->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();
	ereport(LOG,
			(errmsg("pg_ha: reinitialize %s: this node is re-cloned from %s when it starts again",
					reason, from_leader ? "the leader" : "the cluster"),
			 errdetail("\"pg_hactl rejoin --if-needed\" (ExecStartPre of pg_ha@.service) replaces the data directory once it has checked that another node holds the leader key.")));
	return REINIT_ACCEPTED;
}

/*
 * The HA worker at start: a marker an earlier postmaster left was not
 * carried out (postgres started without pg_hactl re-cloning it).  Dropped,
 * so that no later restart wipes the node unasked.  A marker of the
 * running postmaster belongs to a request whose shutdown is under way.
 */
void
pg_ha_reinitialize_forget(void)
{
	char		path[MAXPGPATH];
	char		reason[REINIT_REASON_MAX + 1];
	long		pid;

	if (!pg_ha_marker_read(PG_HA_REINIT_MARKER, &pid, reason, sizeof(reason)) ||
		pid == (long) PostmasterPid)
		return;
	marker_path(path, sizeof(path));
	ereport(WARNING,
			(errmsg("pg_ha: dropping a reinitialize request that was not carried out"),
			 errdetail("The request (%s) was left in \"%s\"; postgres started without \"pg_hactl rejoin\" re-cloning the data directory.",
					   reason[0] ? reason : "no reason given", path),
			 errhint("Request it again if the node still needs it.")));
	if (unlink(path) != 0 && errno != ENOENT)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not remove \"%s\": %m", path)));
}

/* The refusal of pg_ha.reinitialize(), as an ERROR. */
static void
refuse(ReinitVerdict v)
{
	switch (v)
	{
		case REINIT_CLUSTER_UNKNOWN:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: could not reinitialize this node: etcd cannot be reached"),
					 errdetail("Without a current view of the cluster, nobody can tell that another node leads.")));
			break;
		case REINIT_NO_LEADER:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: could not reinitialize this node: the cluster has no leader"),
					 errdetail("A reinitialized node is cloned from the cluster while another node leads.")));
			break;
		case REINIT_IS_LEADER:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: could not reinitialize this node: it is the leader or runs as a primary"),
					 errhint("Switch over to another node first.")));
			break;
		case REINIT_MAY_PROMOTE:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: could not reinitialize this node: it may be promoted"),
					 errdetail("The node is racing for the leader key or promoting.")));
			break;
		case REINIT_CANDIDATE:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: could not reinitialize this node: a switchover or failover names it as the candidate"),
					 errhint("Cancel the request first with pg_ha.cancel_switchover(), DELETE /switchover or \"patronictl flush <cluster> switchover\".")));
			break;
		case REINIT_IN_PROGRESS:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_ha: a reinitialize of this node is already in progress"),
					 errhint("Pass force => true to request it again.")));
			break;
		case REINIT_ACCEPTED:
			break;
	}
}

/*
 * pg_ha.reinitialize(force boolean, from_leader boolean): re-clone this
 * replica when the service manager starts it again.  The fast shutdown it
 * starts ends this session too.
 */
Datum
pg_ha_reinitialize(PG_FUNCTION_ARGS)
{
	bool		force = PG_ARGISNULL(0) ? false : PG_GETARG_BOOL(0);
	bool		from_leader = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);

	refuse(pg_ha_reinitialize_accept(force, from_leader, "requested by pg_ha.reinitialize()"));
	pg_ha_restart_now();
	PG_RETURN_TEXT_P(cstring_to_text("reinitializing"));
}
