/*
 * ha_control.c - what the HA worker does to its own postgres: promote,
 * point the WAL receiver at a leader, and turn a primary into a standby.
 *
 * PG15 has no in-place demotion.  pg_ha demotes without the postmaster
 * exiting: it writes standby.signal, sets primary_conninfo with ALTER SYSTEM
 * (AlterSystemSetConfigFile; never by editing postgresql.auto.conf), has the
 * postmaster reload, and then exits the worker with code 2, which the
 * postmaster treats as a crash: every backend is stopped, shared memory is
 * rebuilt, and the startup process, finding standby.signal, brings the node
 * back as a hot standby of the new leader.  Crash recovery replays all
 * flushed WAL, so nothing committed locally is lost; with
 * restart_after_crash = off the postmaster exits instead and the service
 * manager restarts it (standby.signal is already in place).
 */
#include "pg_ha.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "libpq-fe.h"

#include "access/timeline.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "nodes/value.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"

#include "ha_control.h"

static void
append_conninfo_value(StringInfo buf, const char *keyword, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, ' ');
	appendStringInfo(buf, "%s='", keyword);
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *c);
	}
	appendStringInfoChar(buf, '\'');
}

/*
 * primary_conninfo for streaming from host:port: the options of
 * pg_ha.replication_conninfo, else of the current primary_conninfo, else
 * the bootstrap superuser; host, port and application_name are ours.
 * Needs a transaction (for the superuser's name).
 */
char *
build_primary_conninfo(const char *host, const char *port)
{
	StringInfoData buf;
	const char *template = NULL;
	PQconninfoOption *opts = NULL;
	bool		have_user = false;

	initStringInfo(&buf);
	if (pg_ha_replication_conninfo && pg_ha_replication_conninfo[0])
		template = pg_ha_replication_conninfo;
	else if (PrimaryConnInfo && PrimaryConnInfo[0])
		template = PrimaryConnInfo;
	if (template)
	{
		char	   *err = NULL;

		opts = PQconninfoParse(template, &err);
		if (opts == NULL)
		{
			ereport(WARNING,
					(errmsg("pg_ha: ignoring unparsable replication connection options: %s",
							err ? err : "out of memory")));
			PQfreemem(err);
		}
	}
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
	{
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
			strcmp(o->keyword, "port") == 0 || strcmp(o->keyword, "application_name") == 0 ||
			strcmp(o->keyword, "dbname") == 0 || strcmp(o->keyword, "replication") == 0)
			continue;
		if (strcmp(o->keyword, "user") == 0)
			have_user = true;
		append_conninfo_value(&buf, o->keyword, o->val);
	}
	if (opts)
		PQconninfoFree(opts);
	if (!have_user)
		append_conninfo_value(&buf, "user", GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false));
	append_conninfo_value(&buf, "host", host);
	append_conninfo_value(&buf, "port", port);
	append_conninfo_value(&buf, "application_name", pg_ha_effective_node_name());
	return buf.data;
}

/*
 * Does the current primary_conninfo point at host:port, as this node (the
 * application_name is how the leader tells its standbys apart during a
 * switchover)?
 */
bool
primary_conninfo_points_at(const char *host, const char *port)
{
	PQconninfoOption *opts;
	char	   *err = NULL;
	const char *h = NULL;
	const char *p = NULL;
	const char *app = NULL;
	bool		same;

	if (PrimaryConnInfo == NULL || PrimaryConnInfo[0] == '\0')
		return false;
	opts = PQconninfoParse(PrimaryConnInfo, &err);
	if (opts == NULL)
	{
		PQfreemem(err);
		return false;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
	{
		if (strcmp(o->keyword, "host") == 0)
			h = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			p = o->val;
		else if (strcmp(o->keyword, "application_name") == 0)
			app = o->val;
	}
	same = h && p && app && strcmp(h, host) == 0 && strcmp(p, port) == 0 &&
		strcmp(app, pg_ha_effective_node_name()) == 0;
	PQconninfoFree(opts);
	return same;
}

/* ALTER SYSTEM SET name = value, from the worker, then reload everyone. */
void
alter_system_set(const char *name, const char *value)
{
	AlterSystemStmt *stmt = makeNode(AlterSystemStmt);
	VariableSetStmt *set = makeNode(VariableSetStmt);
	A_Const    *arg = makeNode(A_Const);

	set->kind = VAR_SET_VALUE;
	set->name = pstrdup(name);
	arg->val.sval.type = T_String;
	arg->val.sval.sval = pstrdup(value);
	arg->location = -1;
	set->args = list_make1(arg);
	stmt->setstmt = set;
	AlterSystemSetConfigFile(stmt);
}

void
reload_postmaster(void)
{
	if (kill(PostmasterPid, SIGHUP) != 0)
		ereport(WARNING, (errmsg("pg_ha: could not signal the postmaster to reload: %m")));
}

/*
 * Points this standby's WAL receiver at host:port (reloadable in PG15):
 * the leader's, or with pg_ha.replicatefrom another standby's.
 */
void
follow_upstream(const char *name, bool is_leader, const char *host, const char *port)
{
	char	   *conninfo;

	StartTransactionCommand();
	conninfo = build_primary_conninfo(host, port);
	alter_system_set("primary_conninfo", conninfo);
	CommitTransactionCommand();
	reload_postmaster();
	ereport(LOG,
			(errmsg("pg_ha: following %s \"%s\" at %s:%s",
					is_leader ? "leader" : "replicatefrom member", name, host, port)));
}

/* pg_ha.nostream: no WAL receiver; recovery replays restore_command's WAL. */
void
stop_streaming(void)
{
	StartTransactionCommand();
	alter_system_set("primary_conninfo", "");
	CommitTransactionCommand();
	reload_postmaster();
	ereport(LOG,
			(errmsg("pg_ha: not streaming (pg_ha.nostream is on): primary_conninfo cleared")));
}

static void
write_standby_signal(void)
{
	char		path[MAXPGPATH];
	int			fd;

	snprintf(path, sizeof(path), "%s/standby.signal", DataDir);
	fd = OpenTransientFile(path, O_WRONLY | O_CREAT | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not create \"%s\": %m", path)));
	if (pg_fsync(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not fsync \"%s\": %m", path)));
	CloseTransientFile(fd);
	fsync_fname(DataDir, true);
}

/*
 * Turn this primary into a standby of host:port (both may be NULL when the
 * leader is not known yet: the standby then waits for the follow step).
 * The caller has raised the write fence.  Does not return.
 */
void
demote_and_restart(const char *leader, const char *host, const char *port, const char *why)
{
	if (host && port)
	{
		char	   *conninfo;

		StartTransactionCommand();
		conninfo = build_primary_conninfo(host, port);
		alter_system_set("primary_conninfo", conninfo);
		CommitTransactionCommand();
	}
	write_standby_signal();
	reload_postmaster();
	/* let the postmaster read the new primary_conninfo before the restart */
	pg_usleep(200 * 1000L);
	ereport(LOG,
			(errmsg("pg_ha: demoting: restarting postgres as a standby%s%s (%s)",
					leader ? " of " : "", leader ? leader : "", why)));
	/* exit code 2: the postmaster restarts every process, see file header */
	proc_exit(2);
}

/* Asks the startup process to finish recovery; does not wait. */
void
promote_now(void)
{
	(void) DirectFunctionCall2(pg_promote, BoolGetDatum(false), Int32GetDatum(60));
}

/*
 * The parent of timeline tli and where tli branched off it, from the
 * timeline history file.  False for timeline 1 or an unreadable history.
 */
bool
timeline_parent(TimeLineID tli, TimeLineID *parent, XLogRecPtr *switch_lsn)
{
	List	   *history;
	TimeLineHistoryEntry *entry;

	if (tli <= 1)
		return false;
	history = readTimeLineHistory(tli);
	if (list_length(history) < 2)
		return false;
	entry = (TimeLineHistoryEntry *) list_nth(history, 1);
	*parent = entry->tli;
	*switch_lsn = entry->end;
	return true;
}

/*
 * Stops every client session: during a hand-over no transaction may keep
 * writing WAL that the next leader would not have.
 */
void
terminate_client_backends(void)
{
	int			n = 0;
	pid_t		caller;

	/* a pg_ha.switchover() caller on this node gets its answer first */
	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	caller = pg_ha_shared->switchover_caller_pid;
	LWLockRelease(pg_ha_shared->lock);

	/*
	 * Unlocked read of the PGPROC array: a slot may change under us, which
	 * at worst signals a session that just started (it is fenced anyway).
	 */
	for (uint32 i = 0; i < ProcGlobal->allProcCount; i++)
	{
		PGPROC	   *proc = &ProcGlobal->allProcs[i];

		if (proc->pid == 0 || proc->pid == MyProcPid || proc->pid == caller ||
			proc->isBackgroundWorker || proc->databaseId == InvalidOid)
			continue;
		if (kill(proc->pid, SIGTERM) == 0)
			n++;
	}
	if (n > 0)
		ereport(LOG, (errmsg("pg_ha: terminated %d client sessions", n)));
}
