/*
 * fence.c - refuse writes on a primary that has no write authority.
 *
 * Safety argument.  A primary may acknowledge a write only while no other
 * node can have become leader.  Another node can take the leader key no
 * earlier than t_send + TTL of this node's last successful lease renewal
 * (the lease rule, ha_worker.c).  The HA worker publishes that instant as
 * lease_deadline_us; pg_ha_lease_valid() says yes only until the deadline
 * minus a margin (shmem.c argues the margin).  So:
 *
 *   - Every backend checks pg_ha_lease_valid() itself when a transaction
 *     that wrote (it has an XID) is about to commit or prepare, and raises
 *     ERROR otherwise: the transaction aborts, nothing is acknowledged.  The
 *     check runs in the committing backend, not in the HA worker, so a
 *     stopped, hung or dead worker cannot extend the node's authority: the
 *     deadline simply passes.
 *   - COMMIT PREPARED writes its commit record during the statement, before
 *     the surrounding (XID-less) transaction commits, so it is checked at
 *     the statement, in the utility hook.
 *   - The worker also raises an explicit fence (pg_ha_shared->fenced) while
 *     it hands leadership over or demotes; it only ever adds refusals.
 *
 * Transactions without an XID (reads, and the worker's own ALTER SYSTEM)
 * are not fenced: they acknowledge nothing a new leader would lack.
 *
 * Data-modifying statements are also refused when they start (executor
 * hook), not only at commit: a statement that runs while fenced would
 * write heap WAL, then an abort record, that no standby has.  That does not
 * change what is acknowledged, but every such byte makes the former
 * primary diverge from the next leader and need pg_rewind to come back.
 *
 * pg_ha.fencing = off turns all of this off, for the DBA who must run a
 * primary with etcd gone and accepts the risk of two primaries.
 */
#include "pg_ha.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

static ProcessUtility_hook_type prev_process_utility = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;

/* Why writes are refused right now, or NULL when they are allowed. */
const char *
pg_ha_fence_reason(void)
{
	if (!pg_ha_fencing || pg_ha_shared == NULL)
		return NULL;
	if (pg_atomic_read_u32(&pg_ha_shared->fence) != 0)
		return "this node is handing over or giving up leadership";
	if (!pg_ha_lease_valid(pg_ha_monotonic_us()))
		return "this node does not hold a valid leader lease";
	return NULL;
}

static void
refuse_if_fenced(const char *what)
{
	const char *reason;

	/* a standby cannot write anyway; its own recovery is not ours to stop */
	if (RecoveryInProgress())
		return;
	reason = pg_ha_fence_reason();
	if (reason != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("pg_ha: %s refused: %s", what, reason),
				 errdetail("Another node may be or become the leader; acknowledging this write could lose it or split the cluster."),
				 errhint("Connect to the current leader (see pg_ha.status() or the /primary health check).")));
}

static void
fence_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PRE_PREPARE)
		return;
	/* only transactions that wrote have something to acknowledge */
	if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return;
	refuse_if_fenced(event == XACT_EVENT_PRE_COMMIT ? "commit" : "prepare");
}

static void
fence_executor_start(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;

	/* EXPLAIN without ANALYZE writes nothing */
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 &&
		(stmt->commandType != CMD_SELECT || stmt->hasModifyingCTE || stmt->rowMarks != NIL))
		refuse_if_fenced("write");
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
fence_process_utility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		refuse_if_fenced("COMMIT PREPARED");

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
pg_ha_install_fence(void)
{
	RegisterXactCallback(fence_xact_callback, NULL);
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = fence_process_utility;
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = fence_executor_start;
}
