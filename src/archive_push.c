/*
 * archive_push.c - look-ahead pusher workers for the WAL archive.
 *
 * The archiver offers one file at a time and waits for each; compressing
 * and fsyncing a 16 MB segment takes tens of milliseconds, so a busy
 * primary would fall behind on one core.  pg_ha.archive_parallel
 * background workers therefore push the oldest .ready files ahead of the
 * archiver, each claiming a file name in shared memory first
 * (PgHaArchiveShared.slots) so that no file is pushed twice at once.  When
 * the archiver reaches a file a pusher stored, archive_module.c only checks
 * the object and returns.
 *
 * Bounds: at most pg_ha.archive_lookahead files are claimed or pushed
 * ahead of the archiver at any time, and each worker holds one file and its
 * encoded copy in memory.  A pusher never reports success to postgres; it
 * only saves the archiver work, so a pusher failure costs time, not safety:
 * the archiver pushes (and reports) the file itself.
 */
#include "archive.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_ha.h"

#define READY_SCAN_MAX 128		/* oldest .ready names looked at per scan */

static int	pusher_id;
static ArBuf file_buf;
static ArBuf scratch_buf;
static ArchiveRepo *repo;
static char repo_location[1024];

void
pg_ha_archive_register_workers(void)
{
	for (int i = 0; i < pg_ha_archive_parallel; i++)
	{
		BackgroundWorker bgw;

		memset(&bgw, 0, sizeof(bgw));
		bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
		/* as the archiver: on a primary, or on a standby with archive_mode=always */
		bgw.bgw_start_time = BgWorkerStart_ConsistentState;
		bgw.bgw_restart_time = 5;
		strlcpy(bgw.bgw_library_name, "pg_ha", BGW_MAXLEN);
		strlcpy(bgw.bgw_function_name, "pg_ha_archive_pusher_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_ha archive pusher %d", i + 1);
		strlcpy(bgw.bgw_type, "pg_ha archive pusher", BGW_MAXLEN);
		bgw.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&bgw);
	}
}

/* Same condition under which postgres runs the archiver, and pg_ha is it. */
static bool
pushing_enabled(void)
{
	if (!pg_ha_archive_library_is_us() || pg_ha_archive_repo[0] == '\0' ||
		pg_ha_effective_cluster()[0] == '\0')
		return false;
	if (RecoveryInProgress())
		return XLogArchivingAlways();
	return XLogArchivingActive();
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * The oldest .ready names (history files first, as the archiver does),
 * palloc'd in the current context.
 */
static int
scan_ready(char **names, int max)
{
	DIR		   *dir;
	struct dirent *de;
	char	  **all = NULL;
	int			n = 0,
				cap = 0;

	dir = AllocateDir(XLOGDIR "/archive_status");
	while ((de = ReadDir(dir, XLOGDIR "/archive_status")) != NULL)
	{
		size_t		len = strlen(de->d_name);
		char		name[ARCHIVE_NAME_LEN];

		if (len <= 6 || len - 6 >= sizeof(name) || strcmp(de->d_name + len - 6, ".ready") != 0)
			continue;
		memcpy(name, de->d_name, len - 6);
		name[len - 6] = '\0';
		if (ar_file_kind(name) == AR_FILE_INVALID)
			continue;
		if (n == cap)
		{
			cap = cap ? cap * 2 : 64;
			all = all ? repalloc(all, cap * sizeof(char *)) : palloc(cap * sizeof(char *));
		}
		all[n++] = pstrdup(name);
	}
	FreeDir(dir);
	if (n == 0)
		return 0;
	qsort(all, n, sizeof(char *), cmp_names);
	{
		int			out = 0;

		for (int pass = 0; pass < 2; pass++)
		{
			for (int i = 0; i < n && out < max; i++)
			{
				bool		history = ar_file_kind(all[i]) == AR_FILE_HISTORY;

				if ((pass == 0) == history)
					names[out++] = all[i];
			}
		}
		return out;
	}
}

/*
 * Claims the oldest .ready file nobody has claimed, within the look-ahead
 * bound.  Returns the slot number, or -1 when there is nothing to do.
 */
static int
claim_next(char *name_out)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	char	   *names[READY_SCAN_MAX];
	int			n = scan_ready(names, READY_SCAN_MAX);
	int			outstanding = 0;
	int			slotno = -1;

	if (n == 0)
		return -1;
	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		ArchiveSlotState st = s->slots[i].state;

		if (st == SLOT_CLAIMED || st == SLOT_PUSHED || st == SLOT_FAILED)
			outstanding++;
	}
	if (outstanding < pg_ha_archive_lookahead)
	{
		for (int k = 0; k < n && slotno < 0; k++)
		{
			if (pg_ha_archive_slot_find(names[k]) >= 0)
				continue;
			slotno = pg_ha_archive_slot_claim_new(names[k]);
			if (slotno < 0)
				break;
			strlcpy(name_out, names[k], ARCHIVE_NAME_LEN);
		}
	}
	LWLockRelease(s->lock);
	return slotno;
}

static void
finish_slot(int slotno, const char *name, ArchiveSlotState state,
			uint32 crc, uint64 size, uint64 stored)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	Latch	   *archiver;

	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	if (strcmp(s->slots[slotno].name, name) == 0 && s->slots[slotno].pid == MyProcPid &&
		s->slots[slotno].state == SLOT_CLAIMED)
	{
		s->slots[slotno].state = state;
		s->slots[slotno].crc = crc;
		s->slots[slotno].size = size;
		s->slots[slotno].stored = stored;
		s->slots[slotno].at = GetCurrentTimestamp();
	}
	archiver = s->archiver_latch;
	LWLockRelease(s->lock);
	if (archiver)
		SetLatch(archiver);
}

static bool
ready_file_exists(const char *name)
{
	char		path[MAXPGPATH];
	struct stat st;

	snprintf(path, sizeof(path), XLOGDIR "/archive_status/%s.ready", name);
	return stat(path, &st) == 0;
}

/* Pushes one file ahead of the archiver.  Returns false if idle. */
static bool
push_next(void)
{
	char		name[ARCHIVE_NAME_LEN];
	char		path[MAXPGPATH];
	char		key[AR_KEY_LEN];
	char		err[AR_ERR_LEN];
	bool		already = false;
	uint32		crc = 0;
	size_t		stored = 0;
	size_t		orig_len = 0;
	int			slotno;
	int			rc;

	slotno = claim_next(name);
	if (slotno < 0)
		return false;

	/* the archiver may have finished it between our scan and our claim */
	if (!ready_file_exists(name))
	{
		finish_slot(slotno, name, SLOT_DONE, 0, 0, 0);
		return true;
	}

	if (repo != NULL && strcmp(repo_location, pg_ha_archive_repo) != 0)
	{
		ar_repo_close(repo);
		repo = NULL;
	}
	if (repo == NULL && (repo = ar_repo_open(pg_ha_archive_repo, err, sizeof(err))) != NULL)
		strlcpy(repo_location, pg_ha_archive_repo, sizeof(repo_location));
	if (repo == NULL || !pg_ha_archive_key(name, key, sizeof(key), err, sizeof(err)))
	{
		finish_slot(slotno, name, SLOT_FAILED, 0, 0, 0);
		ereport(LOG, (errmsg("pg_ha: pusher could not push \"%s\": %s", name, err)));
		return false;
	}

	snprintf(path, sizeof(path), XLOGDIR "/%s", name);
	rc = ar_repo_push_file(repo, key, name, path,
						   (ArCompression) pg_ha_archive_compression,
						   pg_ha_archive_compression_level,
						   &already, &crc, &orig_len, &stored,
						   &file_buf, &scratch_buf, err, sizeof(err));
	if (rc == AR_OK)
	{
		if (already)
			pg_atomic_fetch_add_u64(&pg_ha_archive_shared->already_count, 1);
		else
			pg_atomic_fetch_add_u64(&pg_ha_archive_shared->pushed_ahead, 1);
		finish_slot(slotno, name, SLOT_PUSHED, crc, orig_len, stored);
		return true;
	}
	finish_slot(slotno, name, SLOT_FAILED, 0, 0, 0);
	if (rc == AR_NOT_FOUND)
		return true;			/* archived and recycled meanwhile */
	/* the archiver retries this file itself and reports it loudly */
	ereport(LOG, (errmsg("pg_ha: pusher could not push \"%s\": %s", name, err)));
	return false;
}

/* A pusher that exits hands its claims back: the archiver must not wait on them. */
static void
pusher_exit(int code, Datum arg)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;

	if (s == NULL)
		return;
	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		if (s->slots[i].state == SLOT_CLAIMED && s->slots[i].pid == MyProcPid)
			s->slots[i].state = SLOT_FREE;
	}
	if (pusher_id >= 0 && pusher_id < ARCHIVE_MAX_PARALLEL &&
		s->pusher_pids[pusher_id] == MyProcPid)
	{
		s->pusher_pids[pusher_id] = 0;
		s->pusher_latches[pusher_id] = NULL;
	}
	LWLockRelease(s->lock);
}

void
pg_ha_archive_pusher_main(Datum arg)
{
	MemoryContext cxt;

	pusher_id = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(pusher_exit, (Datum) 0);
	LWLockAcquire(pg_ha_archive_shared->lock, LW_EXCLUSIVE);
	if (pusher_id >= 0 && pusher_id < ARCHIVE_MAX_PARALLEL)
	{
		pg_ha_archive_shared->pusher_pids[pusher_id] = MyProcPid;
		pg_ha_archive_shared->pusher_latches[pusher_id] = MyLatch;
	}
	LWLockRelease(pg_ha_archive_shared->lock);

	cxt = AllocSetContextCreate(TopMemoryContext, "pg_ha archive pusher",
								ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		bool		busy = false;
		long		sleep_ms = 1000;

		if (ShutdownRequestPending)
			proc_exit(0);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (pushing_enabled())
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			busy = push_next();
			MemoryContextSwitchTo(old);
			MemoryContextReset(cxt);
		}
		if (!busy)
		{
			/* idle, or backing off after a failure: the archiver wakes us */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
}
