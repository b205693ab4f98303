/*
 * ha_restart.c - restarting postgres from inside: pg_ha.restart().
 *
 * pg_ha runs inside the postmaster it would restart, so it cannot start
 * it again itself.  The service manager does, as for rejoin:
 * contrib/systemd/pg_ha@.service restarts postgres whenever it exits
 * (Restart=always, RestartSec=2).  A restart is therefore:
 *   1. pg_ha.restart() writes the marker $PGDATA/pg_ha.restart, naming the
 *      postmaster's PID and the reason, and asks the postmaster for a fast
 *      shutdown (SIGINT, as `pg_ctl stop -m fast`);
 *   2. the HA worker, shutting down, finds a marker for this postmaster.
 *      On the leader it keeps the leader key and its lease instead of
 *      releasing them (release_keys in ha_worker.c), so the replicas do not
 *      fail over while postgres is down for less than the TTL - Patroni's
 *      behaviour for `patronictl restart`;
 *   3. the service manager starts postgres again (pg_hactl rejoin
 *      --if-needed sees the leader key naming this node and leaves it as
 *      it is); the new HA worker logs the reason, removes the marker and
 *      re-attaches the leader key to a new lease (acquire_leader_key).
 *
 * Safety: while postgres is down nobody writes on this node, and once its
 * HA worker has stopped the commit fence refuses every commit (the lease
 * deadline is cleared first).  If postgres is not back within the TTL the
 * key expires and the replicas fail over as after any leader failure,
 * judged by the same lag rules; the old leader then finds another node
 * holding the key and comes back as its standby (pg_hactl rejoin, the
 * stale-primary rules).  A marker left from an earlier postmaster never
 * keeps a key: it must name the running postmaster's PID.
 *
 * A scheduled restart (POST /restart with "schedule", as Patroni's) is the
 * same restart at a later time: the control worker records it in shared
 * memory, the HA worker runs it when it is due (ha_worker.c,
 * scheduled_restart_step) through pg_ha_restart_mark and
 * pg_ha_restart_now, with the reason "scheduled restart".  Shared memory
 * is made anew whenever the postmaster starts, or restarts after a crash,
 * so a restart of postgres drops the schedule - what Patroni does when it
 * finds the postmaster start time changed - and the postmaster start time
 * the member key shows with it is always the running one's.
 */
#include "pg_ha.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "fmgr.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "postmaster/bgwriter.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/guc_tables.h"
#include "utils/timestamp.h"

#include "patroni_codec.h"

PG_FUNCTION_INFO_V1(pg_ha_restart);

#define RESTART_MARKER "pg_ha.restart"
#define RESTART_REASON_MAX 200

/* Does a setting changed in the configuration files wait for a restart? */
bool
pg_ha_pending_restart(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
		if ((vars[i]->status & GUC_PENDING_RESTART) != 0)
			return true;
	return false;
}

/*
 * A marker file in the data directory: "pid=<postmaster>" and
 * "reason=<text>" lines (and others its reader may look for).  False when
 * it is absent or unreadable; *pid is -1 when it names no PID.
 */
bool
pg_ha_marker_read(const char *name, long *pid, char *reason, size_t len)
{
	char		path[MAXPGPATH];
	char		line[RESTART_REASON_MAX + 16];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/%s", DataDir, name);
	*pid = -1;
	reason[0] = '\0';
	f = AllocateFile(path, "r");
	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f))
	{
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "pid=", 4) == 0)
			*pid = strtol(line + 4, NULL, 10);
		else if (strncmp(line, "reason=", 7) == 0)
			strlcpy(reason, line + 7, len);
	}
	FreeFile(f);
	return true;
}

/*
 * The reason read back from a marker written for the running postmaster,
 * or false if there is none (absent, unreadable, or an older postmaster's).
 */
bool
pg_ha_restart_requested(char *reason, size_t len)
{
	long		pid;

	return pg_ha_marker_read(RESTART_MARKER, &pid, reason, len) && pid == (long) PostmasterPid;
}

/* The new HA worker: say why postgres restarted, and forget the request. */
void
pg_ha_restart_done(void)
{
	char		path[MAXPGPATH];
	char		reason[RESTART_REASON_MAX + 1];
	long		pid;

	if (!pg_ha_marker_read(RESTART_MARKER, &pid, reason, sizeof(reason)))
		return;
	if (reason[0])
		ereport(LOG, (errmsg("pg_ha: postgres was restarted on request: %s", reason)));
	snprintf(path, sizeof(path), "%s/%s", DataDir, RESTART_MARKER);
	if (unlink(path) != 0 && errno != ENOENT)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not remove \"%s\": %m", path)));
}

/* printable ASCII only, one line: the reason goes into a file and the log */
static void
clean_reason(const char *in, char *out, size_t len)
{
	size_t		n = 0;

	for (; *in && n + 1 < len; in++)
		out[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
	out[n] = '\0';
}

/*
 * Writes the marker name in the data directory, durably (a temporary file,
 * fsync'ed, renamed): a reader finds the whole text or nothing.  ERROR if
 * it cannot.
 */
void
pg_ha_marker_write(const char *name, const char *text)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	int			fd;

	snprintf(path, sizeof(path), "%s/%s", DataDir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not create \"%s\": %m", tmp)));
	if (write(fd, text, strlen(text)) != (ssize_t) strlen(text) || pg_fsync(fd) != 0)
	{
		int			save = errno;

		CloseTransientFile(fd);
		errno = save ? save : ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not write \"%s\": %m", tmp)));
	}
	CloseTransientFile(fd);
	durable_rename(tmp, path, ERROR);
}

/*
 * pg_ha.restart(reason text, pending_only boolean): restart postgres on
 * this node through the service manager.  Returns what it did; the fast
 * shutdown it starts ends this session too.
 */
Datum
pg_ha_restart(PG_FUNCTION_ARGS)
{
	char		reason[RESTART_REASON_MAX + 1];
	bool		pending_only = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);

	clean_reason(PG_ARGISNULL(0) ? "requested" : text_to_cstring(PG_GETARG_TEXT_PP(0)),
				 reason, sizeof(reason));
	if (reason[0] == '\0')
		strlcpy(reason, "requested", sizeof(reason));
	if (pending_only && !pg_ha_pending_restart())
		PG_RETURN_TEXT_P(cstring_to_text("no restart pending"));
	pg_ha_restart_checkpoint(false);
	pg_ha_restart_mark(reason);
	pg_ha_restart_now();
	PG_RETURN_TEXT_P(cstring_to_text("restarting"));
}

/* Records why postgres is about to restart (ERROR if it cannot). */
void
pg_ha_restart_mark(const char *reason)
{
	char		clean[RESTART_REASON_MAX + 1];

	clean_reason(reason, clean, sizeof(clean));
	pg_ha_marker_write(RESTART_MARKER, psprintf("pid=%d\nreason=%s\n", (int) PostmasterPid,
											   clean[0] ? clean : "requested"));
	ereport(LOG,
			(errmsg("pg_ha: restarting postgres: %s", clean[0] ? clean : "requested"),
			 errdetail("The service manager starts postgres again (pg_ha@.service: Restart=always).")));
}

/*
 * A checkpoint (on a standby, a restartpoint) just before the fast
 * shutdown, as Patroni takes one before it stops postgres.  A leader still
 * takes writes while it runs; the shutdown checkpoint, during which nobody
 * can write, then has only what came after it to flush, so the write gap
 * of a restart does not grow with the dirty buffers.  It blocks the
 * caller: never called from the HA worker, whose lease renewals must go
 * on (the scheduled restart is handed to the control worker).  caught:
 * a failure is logged and the shutdown goes on (the control worker has
 * already answered); otherwise the ERROR propagates and nothing happens.
 */
void
pg_ha_restart_checkpoint(bool caught)
{
	MemoryContext ctx = CurrentMemoryContext;

	if (!caught)
	{
		RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE | CHECKPOINT_WAIT);
		return;
	}
	PG_TRY();
	{
		RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE | CHECKPOINT_WAIT);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(ctx);
		e = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("pg_ha: the checkpoint before the restart failed: %s", e->message),
				 errdetail("The restart goes on; its shutdown checkpoint does the work.")));
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/* The HA worker: the control worker is to checkpoint and shut down. */
void
pg_ha_restart_hand_off(void)
{
	Latch	   *wake;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	pg_ha_shared->restart_handed_off = true;
	wake = pg_ha_shared->control.worker_latch;
	LWLockRelease(pg_ha_shared->lock);
	if (wake)
		SetLatch(wake);
}

/* The control worker: was a restart handed to it?  Clears the request. */
bool
pg_ha_restart_take_hand_off(void)
{
	bool		handed;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	handed = pg_ha_shared->restart_handed_off;
	pg_ha_shared->restart_handed_off = false;
	LWLockRelease(pg_ha_shared->lock);
	return handed;
}

/* A fast shutdown, as pg_ctl stop -m fast; the service manager restarts. */
void
pg_ha_restart_now(void)
{
	if (kill(PostmasterPid, SIGINT) != 0)
		ereport(ERROR,
				(errmsg("pg_ha: could not signal the postmaster to shut down: %m")));
}

/* ---------- the scheduled restart ---------- */

/* After a change, under the lock: count it; the HA worker's latch, to set. */
static Latch *
schedule_changed(void)
{
	pg_ha_shared->restart_gen++;
	return pg_ha_shared->worker_latch;
}

bool
pg_ha_restart_schedule_add(const PatroniRestartBody *b)
{
	Latch	   *wake = NULL;
	bool		added = false;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (!pg_ha_shared->restart_scheduled)
	{
		pg_ha_shared->restart_schedule = *b;
		pg_ha_shared->restart_scheduled = true;
		wake = schedule_changed();
		added = true;
	}
	LWLockRelease(pg_ha_shared->lock);
	if (wake)
		SetLatch(wake);
	return added;
}

bool
pg_ha_restart_schedule_delete(void)
{
	Latch	   *wake = NULL;
	bool		deleted = false;

	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (pg_ha_shared->restart_scheduled)
	{
		pg_ha_shared->restart_scheduled = false;
		wake = schedule_changed();
		deleted = true;
	}
	LWLockRelease(pg_ha_shared->lock);
	if (wake)
		SetLatch(wake);
	return deleted;
}

void
pg_ha_restart_schedule_drop(uint64 gen)
{
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (pg_ha_shared->restart_scheduled && pg_ha_shared->restart_gen == gen)
	{
		pg_ha_shared->restart_scheduled = false;
		(void) schedule_changed();	/* the caller is the HA worker itself */
	}
	LWLockRelease(pg_ha_shared->lock);
}

bool
pg_ha_restart_schedule_get(PatroniRestartBody *out, uint64 *gen)
{
	bool		scheduled;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	scheduled = pg_ha_shared->restart_scheduled;
	*out = pg_ha_shared->restart_schedule;
	*gen = pg_ha_shared->restart_gen;
	LWLockRelease(pg_ha_shared->lock);
	return scheduled;
}

uint64
pg_ha_restart_schedule_gen(void)
{
	uint64		gen;

	LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
	gen = pg_ha_shared->restart_gen;
	LWLockRelease(pg_ha_shared->lock);
	return gen;
}

char *
pg_ha_restart_schedule_json(bool with_start_time)
{
	PatroniRestartBody b;
	uint64		gen;
	int64		started = PgStartTime + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	char	   *buf;

	if (!pg_ha_restart_schedule_get(&b, &gen))
		return NULL;
	buf = palloc(PATRONI_SCHEDULE_JSON_LEN);
	if (patroni_restart_schedule_json(&b, with_start_time ? &started : NULL, buf,
									  PATRONI_SCHEDULE_JSON_LEN) < 0)
		elog(ERROR, "pg_ha: the scheduled restart does not fit its JSON buffer");
	return buf;
}

void
pg_ha_restart_schedule_published(uint64 gen)
{
	LWLockAcquire(pg_ha_shared->lock, LW_EXCLUSIVE);
	if (gen > pg_ha_shared->restart_published_gen)
		pg_ha_shared->restart_published_gen = gen;
	LWLockRelease(pg_ha_shared->lock);
}

/*
 * Patroni writes the member key before it answers a schedule or its
 * deletion, so that `patronictl list` and `flush` see it at once.  The HA
 * worker does it here, woken by the change; bounded, as the answer must
 * not wait on an etcd outage (the key follows when etcd is back).
 */
bool
pg_ha_restart_schedule_wait_published(int timeout_ms)
{
	for (int waited = 0;; waited += 10)
	{
		bool		done;

		LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
		done = pg_ha_shared->restart_published_gen >= pg_ha_shared->restart_gen;
		LWLockRelease(pg_ha_shared->lock);
		if (done)
			return true;
		if (waited >= timeout_ms)
			return false;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10 * 1000L);
	}
}
