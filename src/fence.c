/*
 * fence.c - refuse writes on a primary that has no write authority.
 *
 * Safety argument.  A primary may acknowledge a write only while no other
 * node can have become leader.  Another node can take the leader key no
 * earlier than t_send + TTL of this node's last successful lease renewal
 * (the lease rule, ha_worker.c).  The HA worker publishes that instant as
 * lease_deadline_us; pg_ha_lease_valid() says yes only until the deadline
 * minus a margin (shmem.c argues the margin).  The invariant kept here:
 *
 *     a client is told "committed" only for a commit record that was
 *     durable at an instant when this node still held write authority,
 *     and the telling happens before any successor can exist.
 *
 * It is enforced at two points of every transaction that wrote (has an XID),
 * in the committing backend itself, so a stopped, hung or dead HA worker
 * cannot extend the node's authority: the deadline simply passes.
 *
 *   1. Before the commit (XACT_EVENT_PRE_COMMIT / PRE_PREPARE): refuse with
 *      ERROR.  The transaction aborts and the client knows for certain that
 *      nothing was committed.  This check is what makes the ordinary case
 *      clean, and it keeps a node without authority from writing a commit
 *      record at all (every such record is a byte the next leader lacks).
 *      But it is not enough: the commit record's flush (XLogFlush), the
 *      synchronous-replication wait (SyncRepWaitForLSN) and the reply all
 *      come after it, and a backend paused there (SIGSTOP, an fsync stall, a
 *      stuck sync standby, a frozen VM) can come back after a successor has
 *      promoted and accepted writes.
 *   2. After the commit is durable (XACT_EVENT_COMMIT / XACT_EVENT_PREPARE,
 *      which CommitTransaction / PrepareTransaction call after
 *      RecordTransactionCommit / EndPrepare, i.e. after XLogFlush and
 *      SyncRepWaitForLSN) and before the client is told.  Raising an ERROR
 *      is impossible there (the commit is done; aborting now is a PANIC), and
 *      a false "failed" would be as wrong as a false "committed".  So if the
 *      authority is gone by then, the reply is withheld: the client
 *      connection is shut down (shutdown(2), both directions), and the
 *      backend exits with "connection to client lost" at its next
 *      interrupt check.  The client sees a lost connection, an ambiguous
 *      outcome exactly like a network failure, never a success.
 *      COMMIT PREPARED writes its commit record inside the statement; the
 *      utility hook notes it and the check runs when the statement's own
 *      transaction commits, just before its CommandComplete is queued.
 *
 * Why nothing reaches the client between the commit and check 2: the
 * backend queues CommandComplete (EndCommand) only after finish_xact_command
 * returned, for the simple protocol and for transaction-control statements
 * in the extended protocol, and ReadyForQuery later still; check 2 runs
 * inside finish_xact_command.  Messages raised during the commit (a WARNING
 * when a sync-rep wait is cancelled) flush the output buffer, but it holds
 * no CommandComplete of the committing statement then.  A pending
 * terminate (SIGTERM during the sync-rep wait) sets whereToSendOutput to
 * DestNone, so such a backend sends nothing at all.  In the extended
 * protocol an ordinary statement's CommandComplete is queued at Execute and
 * the commit happens at Sync; a client that asked for a Flush in between
 * may see that tag, but it is not a commit acknowledgement (a deferred
 * constraint can still fail the commit): ReadyForQuery is, and it is
 * withheld.
 *
 * What remains.  A pause between check 2 and the write to the socket (a few
 * instructions, but a frozen VM can land anywhere) delivers the reply late.
 * The margin covers ordinary scheduling delay there; a longer pause is not
 * covered, but the commit it reports happened inside this node's term: its
 * record was durable while the node held authority, before any successor
 * existed, so the late reply tells the truth about the order of events.
 * Whether a successor has that record is the replication mode's promise
 * (synchronous replication, or maximum_lag_on_failover), not the fence's.
 * Readers on this node may see the committed rows from ProcArrayEndTransaction
 * on, before check 2; reading from a primary without authority is a stale
 * read either way, and the HTTP checks and read-only sessions (below) steer
 * clients away from it.  Commits with synchronous_commit = off are
 * acknowledged before their record is flushed by design; check 2 still
 * holds their reply to the lease.
 *
 * The worker also raises an explicit fence (pg_ha_shared->fence) while it
 * hands leadership over or demotes; it only ever adds refusals.
 *
 * A fenced primary looks read-only to clients (defect 14).  A client that
 * asks libpq for target_session_attrs=read-write decides from the
 * default_transaction_read_only its server reports at connection start
 * (PostgreSQL 14+), and a pool keeps a connection until it breaks.  So,
 * in client sessions only (never the pg_ha worker or other background
 * processes):
 *
 *   - a session that starts while the node is a fenced primary gets
 *     default_transaction_read_only = on (set like a SET, in the
 *     authentication hook, so startup options and ALTER ROLE/DATABASE
 *     settings still become its RESET value); libpq moves on to the next
 *     host.  When the fence lifts (the first second after a start, before
 *     the lease is held; an aborted switchover) the session's next
 *     statement resets it, and the transaction that statement opened is
 *     made writable too when nothing can yet depend on its read-only-ness
 *     (it is the transaction's first statement, and not SERIALIZABLE, whose
 *     snapshot records read-only-ness), so no session stays read-only.
 *     A session that SETs the parameter itself, RESET ALL or DISCARD ALL,
 *     owns it from then on.
 *   - every statement that starts while fenced runs in a read-only
 *     transaction (transaction_read_only, as SET LOCAL would), so PostgreSQL
 *     itself refuses nextval(), setval() and DDL at the statement;
 *   - a session whose write is refused (by pg_ha, or by that read-only
 *     check) ends once the error has been sent: the client sees the error,
 *     then a closed connection, and a pool reconnects, to the new leader.
 *     Reads and pg_ha.status() keep working for operators.
 *
 * Transactions without an XID (reads, and the worker's own ALTER SYSTEM)
 * are not fenced: they acknowledge nothing a new leader would lack.
 *
 * Data-modifying statements are also refused when they start (executor
 * hook; COPY FROM, CREATE TABLE AS, SELECT INTO, CREATE and REFRESH
 * MATERIALIZED VIEW in the utility hook), not only at commit: a statement
 * that runs while fenced would write heap WAL, then an abort record, that
 * no standby has.  That does not change what is acknowledged, but every
 * such byte makes the former primary diverge from the next leader and need
 * pg_rewind to come back.
 *
 * Sequences need the statement-start refusal for correctness, not only
 * for divergence: nextval() WAL-logs 32 values ahead and takes an XID only
 * on the call that logs, so most calls commit without an XID and pass the
 * commit check, and even a refused commit has already shown its values to
 * the client (sequences are not transactional).  A value handed out by a
 * fenced primary past what the successor replayed will be handed out
 * again.  The read-only transaction above refuses nextval() and setval()
 * wherever they are called from (a query, a default, a function).  Not
 * covered: the fast-path function call protocol, which bypasses the
 * executor; its nextval() calls are refused only at commit, when they
 * logged.
 *
 * pg_ha.fencing = off turns all of this off, for the DBA who must run a
 * primary with etcd gone and accepts the risk of two primaries.
 */
#include "pg_ha.h"
#include "ha_sync.h"

#include <sys/socket.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/executor.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/proc.h"
#include "tcop/dest.h"
#include "tcop/utility.h"
#include "utils/guc.h"

static ProcessUtility_hook_type prev_process_utility = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;
static ClientAuthentication_hook_type prev_client_auth = NULL;
static emit_log_hook_type prev_emit_log = NULL;

/*
 * Per-transaction state of the committing backend, for the check after the
 * commit is durable.  Set before the commit, consumed (and cleared) by the
 * COMMIT / PREPARE / ABORT events.
 */
static bool xact_wrote = false;		/* had an XID at PRE_COMMIT / PRE_PREPARE */
static bool xact_commit_prepared = false;	/* ran COMMIT PREPARED */

/* Read-only sessions on a fenced primary (see the header). */
static bool session_forced_read_only = false;	/* we set its default r/o */
static bool xact_fenced = false;	/* a statement of this xact ran fenced */
static bool end_session_at_abort = false;	/* it tried to write while fenced */
static LocalTransactionId last_lxid = InvalidLocalTransactionId;

/* An interactive client's backend: what the session rules apply to. */
static bool
is_client_session(void)
{
	return MyBackendType == B_BACKEND && MyProcPort != NULL;
}

/*
 * Shut the client connection so that nothing more reaches the client; the
 * backend ends with "connection to client lost" at its next interrupt check.
 */
static void
drop_client_connection(void)
{
	if (shutdown(MyProcPort->sock, SHUT_RDWR) < 0)
		ereport(LOG_SERVER_ONLY,
				(errcode_for_socket_access(),
				 errmsg("pg_ha: could not shut down the client connection: %m")));
	ClientConnectionLost = 1;
	InterruptPending = 1;
}

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
	if (reason == NULL)
		return;
	if (is_client_session())
		end_session_at_abort = true;
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("pg_ha: %s refused: %s", what, reason),
			 errdetail("Another node may be or become the leader; acknowledging this write could lose it or split the cluster."),
			 errhint("Connect to the current leader (see pg_ha.status() or the /primary health check).")));
}

/*
 * In synchronous mode, did the synchronous standbys confirm this commit?
 *
 * PostgreSQL ends a commit's wait for them when the statement is cancelled
 * (pg_cancel_backend, a client's cancel request; statement_timeout is
 * already off then): it warns that the commit "might not have been
 * replicated" and then reports success.  Were the primary lost next, the promoted synchronous standby
 * would lack a commit its client was told is durable, the loss synchronous
 * mode exists to rule out.  So the reply is withheld like a fenced one.
 * The wait ended normally exactly when the standbys' confirmed position
 * (WalSndCtl->lsn, what SyncRepWaitForLSN waited for) reached the end of
 * the commit record.  A session that asked not to wait (synchronous_commit
 * local or off) keeps its choice, and so does mode "on" once the leader
 * went asynchronous for want of a standby (no synchronous standbys
 * defined: PostgreSQL released the waiters).  Ordinary commits only: a
 * prepared transaction's records are not tracked here.
 */
static bool
commit_unconfirmed(void)
{
	int			mode;
	bool		defined;
	XLogRecPtr	confirmed;

	if (pg_ha_effective_sync_mode() == SYNC_MODE_OFF || max_wal_senders == 0 ||
		XactLastCommitEnd == InvalidXLogRecPtr)
		return false;
	switch (synchronous_commit)
	{
		case SYNCHRONOUS_COMMIT_REMOTE_WRITE:
			mode = SYNC_REP_WAIT_WRITE;
			break;
		case SYNCHRONOUS_COMMIT_REMOTE_FLUSH:
			mode = SYNC_REP_WAIT_FLUSH;
			break;
		case SYNCHRONOUS_COMMIT_REMOTE_APPLY:
			mode = SYNC_REP_WAIT_APPLY;
			break;
		default:
			return false;
	}
	LWLockAcquire(SyncRepLock, LW_SHARED);
#ifdef SYNC_STANDBY_DEFINED		/* recent minor releases */
	defined = (WalSndCtl->sync_standbys_status & SYNC_STANDBY_DEFINED) != 0;
#else
	defined = WalSndCtl->sync_standbys_defined;
#endif
	confirmed = WalSndCtl->lsn[mode];
	LWLockRelease(SyncRepLock);
	return defined && confirmed < XactLastCommitEnd;
}

/*
 * Check 2 of the header: the commit is durable; tell the client only if this
 * node still has write authority (and, in synchronous mode, only if the
 * synchronous standbys confirmed an ordinary commit).  Runs with interrupts
 * held, after the commit: it must not raise an error.
 */
static void
check_acknowledgement(const char *what, bool ordinary_commit)
{
	const char *reason;
	const char *detail = "The transaction is durable on this node, but write authority ran out before the client was told; the client sees a lost connection and must treat the outcome as unknown.";

	/* no client to tell: a background process reports to nobody */
	if (MyProcPort == NULL || whereToSendOutput != DestRemote)
		return;
	if (RecoveryInProgress())
		return;
	reason = pg_ha_fence_reason();
	if (reason == NULL && ordinary_commit && commit_unconfirmed())
	{
		reason = "the synchronous standby did not confirm it (its wait was cancelled)";
		detail = "The transaction is durable on this node but may be missing on the synchronous standby, which a failover would promote; the client sees a lost connection and must treat the outcome as unknown.";
	}
	if (reason == NULL)
		return;

	/*
	 * Shut the socket first: nothing queued, nor anything sent from here on
	 * (not even this LOG, were client_min_messages that low), may reach the
	 * client.
	 */
	drop_client_connection();
	ereport(LOG_SERVER_ONLY,
			(errmsg("pg_ha: acknowledgement of %s withheld: %s", what, reason),
			 errdetail_internal("%s", detail)));
}

static void
fence_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* only transactions that wrote have something to acknowledge */
			xact_wrote = TransactionIdIsValid(GetTopTransactionIdIfAny());
			if (xact_wrote)
				refuse_if_fenced(event == XACT_EVENT_PRE_COMMIT ? "commit" : "prepare");
			break;
		case XACT_EVENT_COMMIT:
			if (xact_commit_prepared)
				check_acknowledgement("COMMIT PREPARED", false);
			else if (xact_wrote)
				check_acknowledgement("COMMIT", true);
			/* a RESET done by lift_session_read_only() is committed now */
			if (session_forced_read_only && !DefaultXactReadOnly)
				session_forced_read_only = false;
			xact_wrote = xact_commit_prepared = false;
			xact_fenced = end_session_at_abort = false;
			break;
		case XACT_EVENT_PREPARE:
			/* a 2PC coordinator relies on a prepared transaction surviving */
			if (xact_wrote)
				check_acknowledgement("PREPARE TRANSACTION", false);
			xact_wrote = xact_commit_prepared = false;
			xact_fenced = end_session_at_abort = false;
			break;
		case XACT_EVENT_ABORT:

			/*
			 * The error that refused the write has been sent and flushed
			 * (PostgresMain reports it before aborting): end the session so
			 * that pools and multi-host clients reconnect elsewhere.
			 */
			if (end_session_at_abort && is_client_session())
			{
				drop_client_connection();
				ereport(LOG_SERVER_ONLY,
						(errmsg("pg_ha: ending a session that tried to write on a primary without write authority"),
						 errdetail("Clients and connection pools reconnect and find the current leader.")));
			}
			xact_wrote = xact_commit_prepared = false;
			xact_fenced = end_session_at_abort = false;
			break;
		default:
			break;
	}
}

/*
 * The fence has lifted for a session that started read-only because of it:
 * give the session its own default back, as RESET would.  The transaction
 * in progress took its read-only-ness from that default when it started;
 * when this is its first statement nothing can depend on it yet, except
 * SERIALIZABLE, whose snapshot records it (so that one stays read-only, and
 * the next transaction is writable).  The RESET is transactional: should
 * this transaction abort, the next statement does it again.
 */
static void
lift_session_read_only(bool first_statement)
{
	if (DefaultXactReadOnly)
		(void) set_config_option("default_transaction_read_only", NULL,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SET,
								 true, 0, false);
	if (first_statement && XactReadOnly && !DefaultXactReadOnly &&
		!IsolationIsSerializable())
		XactReadOnly = false;
}

/*
 * Every statement of a client session starts here (executor and utility
 * hooks): while the node is a fenced primary, the transaction becomes
 * read-only, as SET LOCAL transaction_read_only = on would make it.
 */
static void
fence_statement_start(void)
{
	bool		first_statement;

	if (!is_client_session() || IsAbortedTransactionBlockState())
		return;
	first_statement = (MyProc->lxid != last_lxid);
	last_lxid = MyProc->lxid;

	if (RecoveryInProgress() || pg_ha_fence_reason() == NULL)
	{
		if (session_forced_read_only)
			lift_session_read_only(first_statement);
		return;
	}
	xact_fenced = true;
	if (!XactReadOnly && !IsInParallelMode())
		(void) set_config_option("transaction_read_only", "on",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
}

/*
 * A new session on a fenced primary starts read-only, so that libpq (which
 * reads default_transaction_read_only from the startup report) moves on to
 * another host.  Set at PGC_S_SESSION like a SET: the startup options and
 * ALTER ROLE / DATABASE settings applied after this hook cannot override
 * it, but they still become the value RESET restores.
 */
static void
fence_client_authentication(Port *port, int status)
{
	if (prev_client_auth)
		prev_client_auth(port, status);
	if (status != STATUS_OK || am_walsender || DefaultXactReadOnly)
		return;
	if (RecoveryInProgress() || pg_ha_fence_reason() == NULL)
		return;
	(void) set_config_option("default_transaction_read_only", "on",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SET,
							 true, 0, false);
	session_forced_read_only = true;
}

/*
 * PostgreSQL's own read-only refusals (nextval(), DDL, ...) in a statement
 * that ran fenced count as attempted writes too.  Only a flag is set here:
 * this runs inside error reporting.
 */
static void
fence_emit_log(ErrorData *edata)
{
	if (xact_fenced && edata->elevel == ERROR &&
		edata->sqlerrcode == ERRCODE_READ_ONLY_SQL_TRANSACTION)
	{
		const char *reason = pg_ha_fence_reason();

		end_session_at_abort = true;

		/*
		 * PostgreSQL's "cannot execute ... in a read-only transaction" does
		 * not say why the transaction is read-only: say it is pg_ha's
		 * fence (this runs in ErrorContext, where edata lives).
		 */
		if (edata->detail == NULL)
			edata->detail = psprintf("pg_ha: write refused: %s.",
									 reason ? reason : "this node was fenced when the transaction started");
		if (edata->hint == NULL)
			edata->hint = pstrdup("Connect to the current leader (see pg_ha.status() or the /primary health check).");
	}
	if (prev_emit_log)
		prev_emit_log(edata);
}

static void
fence_executor_start(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;

	/* EXPLAIN without ANALYZE writes nothing */
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 &&
		(stmt->commandType != CMD_SELECT || stmt->hasModifyingCTE || stmt->rowMarks != NIL))
		refuse_if_fenced("write");
	fence_statement_start();
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
	bool		commit_prepared = false;

	/* statements that write table data, refused before they do */
	switch (nodeTag(stmt))
	{
		case T_TransactionStmt:
			if (((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
			{
				refuse_if_fenced("COMMIT PREPARED");
				commit_prepared = true;
			}
			break;
		case T_CopyStmt:
			if (((CopyStmt *) stmt)->is_from)
				refuse_if_fenced("COPY FROM");
			break;
		case T_CreateTableAsStmt:
			{
				CreateTableAsStmt *ctas = (CreateTableAsStmt *) stmt;

				refuse_if_fenced(ctas->is_select_into ? "SELECT INTO" :
								 ctas->objtype == OBJECT_MATVIEW ? "CREATE MATERIALIZED VIEW" :
								 "CREATE TABLE AS");
			}
			break;
		case T_RefreshMatViewStmt:
			refuse_if_fenced("REFRESH MATERIALIZED VIEW");
			break;
		default:
			break;
	}
	fence_statement_start();

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	/*
	 * The prepared transaction's commit record is durable now (and waited
	 * for by synchronous standbys); this statement's own, XID-less
	 * transaction commits next, and that is where the reply is decided.
	 */
	if (commit_prepared)
		xact_commit_prepared = true;

	/* the session took default_transaction_read_only into its own hands */
	if (session_forced_read_only &&
		((IsA(stmt, VariableSetStmt) &&
		  (((VariableSetStmt *) stmt)->kind == VAR_RESET_ALL ||
		   pg_strcasecmp(((VariableSetStmt *) stmt)->name, "default_transaction_read_only") == 0 ||
		   pg_strcasecmp(((VariableSetStmt *) stmt)->name, "SESSION CHARACTERISTICS") == 0)) ||
		 (IsA(stmt, DiscardStmt) && ((DiscardStmt *) stmt)->target == DISCARD_ALL)))
		session_forced_read_only = false;
}

void
pg_ha_install_fence(void)
{
	RegisterXactCallback(fence_xact_callback, NULL);
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = fence_process_utility;
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = fence_executor_start;
	prev_client_auth = ClientAuthentication_hook;
	ClientAuthentication_hook = fence_client_authentication;
	prev_emit_log = emit_log_hook;
	emit_log_hook = fence_emit_log;
}
