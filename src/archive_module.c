/*
 * archive_module.c - pg_ha as a PostgreSQL archive module
 * (archive_library = 'pg_ha'): the archiver's callbacks, the archive GUCs
 * and the archive subsystem's shared memory.
 *
 * The archiver hands us one WAL file at a time and marks it .done when we
 * return true, after which postgres may recycle it: so we return true only
 * once the file is durably in the repository (written, fsync'd, linked into
 * place, directory fsync'd - see archive_repo.c), or the repository already
 * holds byte-identical content.  Different content under the same name is
 * refused loudly (a WARNING, a counter) and never overwritten.
 *
 * The look-ahead pushers (archive_push.c) usually got there first: then the
 * archiver's call only checks that the object they stored is in place with
 * the expected length and checksum, and returns at once.
 *
 * In PG15 the archiver has no sigsetjmp of its own: an ERROR escaping a
 * callback would kill it.  The callback catches everything with PG_TRY, and
 * the repository code reports through return codes, not ereport.
 */
#include "archive.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#if PG_VERSION_NUM >= 160000
#include "archive/archive_module.h"
#endif
#include "postmaster/pgarch.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_ha.h"

char	   *pg_ha_archive_repo = NULL;
int			pg_ha_archive_compression = AR_COMPRESS_ZSTD;
int			pg_ha_archive_compression_level = 1;
int			pg_ha_archive_parallel = 2;
int			pg_ha_archive_lookahead = 16;

PgHaArchiveShared *pg_ha_archive_shared = NULL;

static const struct config_enum_entry compression_options[] = {
	{"none", AR_COMPRESS_NONE, false},
	{"lz4", AR_COMPRESS_LZ4, false},
	{"zstd", AR_COMPRESS_ZSTD, false},
	{NULL, 0, false}
};

/* ---------- GUCs ---------- */

static bool
check_archive_repo(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v[0] == '\0')
		return true;
	if (strncmp(v, "s3://", 5) == 0)
	{
		GUC_check_errdetail("The S3 repository backend is not available in this build.");
		return false;
	}
	if (v[0] != '/')
	{
		GUC_check_errdetail("\"%s\" is not an absolute path.", v);
		GUC_check_errhint("Use a local or mounted directory such as \"/pg/archive\".");
		return false;
	}
	if (strlen(v) > 900)
	{
		GUC_check_errdetail("The repository path must be at most 900 bytes.");
		return false;
	}
	return true;
}

void
pg_ha_archive_define_gucs(void)
{
	DefineCustomStringVariable("pg_ha.archive_repo",
							   "WAL archive repository: an absolute local or mounted directory.",
							   "Empty leaves archiving unconfigured: with archive_library = 'pg_ha' the archiver waits and WAL is kept.",
							   &pg_ha_archive_repo, "",
							   PGC_SIGHUP, 0, check_archive_repo, NULL, NULL);
	DefineCustomEnumVariable("pg_ha.archive_compression",
							 "Compression of archived WAL: zstd, lz4 or none.",
							 NULL,
							 &pg_ha_archive_compression, AR_COMPRESS_ZSTD, compression_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.archive_compression_level",
							"zstd compression level of archived WAL (lz4 and none ignore it).",
							"Level 1 compresses WAL about as well as 3 at two to three times the speed; archiving is CPU-bound.",
							&pg_ha_archive_compression_level, 1, 1, 19,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.archive_parallel",
							"Number of look-ahead pusher workers; 0 lets the archiver push alone.",
							"Each worker is a background worker (counted in max_worker_processes) holding at most two segments in memory.",
							&pg_ha_archive_parallel, 2, 0, ARCHIVE_MAX_PARALLEL,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.archive_lookahead",
							"How many WAL files the pushers may store ahead of the archiver.",
							NULL,
							&pg_ha_archive_lookahead, 16, 1, ARCHIVE_SLOTS / 2,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* ---------- shared memory ---------- */

void
pg_ha_archive_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PgHaArchiveShared)));
	RequestNamedLWLockTranche("pg_ha_archive", 1);
}

void
pg_ha_archive_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pg_ha_archive_shared = ShmemInitStruct("pg_ha_archive", sizeof(PgHaArchiveShared), &found);
	if (!found)
	{
		PgHaArchiveShared *s = pg_ha_archive_shared;

		memset(s, 0, sizeof(*s));
		pg_atomic_init_u64(&s->archived_count, 0);
		pg_atomic_init_u64(&s->archived_bytes, 0);
		pg_atomic_init_u64(&s->stored_bytes, 0);
		pg_atomic_init_u64(&s->pushed_ahead, 0);
		pg_atomic_init_u64(&s->lookahead_hits, 0);
		pg_atomic_init_u64(&s->already_count, 0);
		pg_atomic_init_u64(&s->failed_count, 0);
		pg_atomic_init_u64(&s->mismatch_count, 0);
		pg_atomic_init_u64(&s->corrupt_count, 0);
		s->lock = &(GetNamedLWLockTranche("pg_ha_archive"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* ---------- helpers shared with the pushers ---------- */

bool
pg_ha_archive_library_is_us(void)
{
	const char *lib = XLogArchiveLibrary;
	const char *base;
	size_t		len;

	if (lib == NULL || lib[0] == '\0')
		return false;
	base = strrchr(lib, '/');
	base = base ? base + 1 : lib;
	len = strlen(base);
	if (len > 3 && strcmp(base + len - 3, ".so") == 0)
		len -= 3;
	return len == 5 && strncmp(base, "pg_ha", 5) == 0;
}

bool
pg_ha_archive_key(const char *name, char *key, size_t keylen, char *err, size_t errlen)
{
	return ar_object_key(pg_ha_effective_cluster(), GetSystemIdentifier(), name,
						 key, keylen, err, errlen);
}

void
pg_ha_archive_note_error(const char *name, const char *msg)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;

	if (s == NULL)
		return;
	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	strlcpy(s->last_failed, name, sizeof(s->last_failed));
	s->last_failed_at = GetCurrentTimestamp();
	snprintf(s->last_error, sizeof(s->last_error), "%s: %s", name, msg);
	LWLockRelease(s->lock);
}

/* ---------- the archiver's side ---------- */

/* Buffers kept across calls: at most one segment plus its encoded form. */
static ArBuf file_buf;
static ArBuf scratch_buf;
static ArchiveRepo *repo;
static char repo_location[1024];

static ArchiveRepo *
archiver_repo(char *err, size_t errlen)
{
	if (repo != NULL && strcmp(repo_location, pg_ha_archive_repo) != 0)
	{
		ar_repo_close(repo);
		repo = NULL;
	}
	if (repo == NULL)
	{
		repo = ar_repo_open(pg_ha_archive_repo, err, errlen);
		if (repo != NULL)
			strlcpy(repo_location, pg_ha_archive_repo, sizeof(repo_location));
	}
	return repo;
}

int
pg_ha_archive_slot_find(const char *name)
{
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		ArchiveSlot *slot = &pg_ha_archive_shared->slots[i];

		if (slot->state != SLOT_FREE && strcmp(slot->name, name) == 0)
			return i;
	}
	return -1;
}

int
pg_ha_archive_slot_claim_new(const char *name)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	int			victim = -1;

	/* a free slot, else the one done longest ago */
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		ArchiveSlot *slot = &s->slots[i];

		if (slot->state == SLOT_FREE)
		{
			victim = i;
			break;
		}
		if (slot->state == SLOT_DONE &&
			(victim < 0 || slot->at < s->slots[victim].at))
			victim = i;
	}
	if (victim >= 0)
	{
		ArchiveSlot *slot = &s->slots[victim];

		memset(slot, 0, sizeof(*slot));
		slot->state = SLOT_CLAIMED;
		strlcpy(slot->name, name, sizeof(slot->name));
		slot->pid = MyProcPid;
		slot->at = GetCurrentTimestamp();
	}
	return victim;
}

static void
record_done(int slotno, const char *name, uint64 size, uint64 stored)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	TimestampTz now = GetCurrentTimestamp();

	pg_atomic_fetch_add_u64(&s->archived_count, 1);
	pg_atomic_fetch_add_u64(&s->archived_bytes, size);
	pg_atomic_fetch_add_u64(&s->stored_bytes, stored);
	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	if (slotno >= 0 && strcmp(s->slots[slotno].name, name) == 0)
	{
		s->slots[slotno].state = SLOT_DONE;
		s->slots[slotno].at = now;
	}
	strlcpy(s->last_archived, name, sizeof(s->last_archived));
	s->last_archived_at = now;
	s->recent[s->recent_next].at = now;
	s->recent[s->recent_next].bytes = size;
	s->recent_next = (s->recent_next + 1) % ARCHIVE_RECENT;
	LWLockRelease(s->lock);
}

static void
release_slot(int slotno, const char *name)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;

	if (slotno < 0)
		return;
	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	if (strcmp(s->slots[slotno].name, name) == 0 && s->slots[slotno].pid == MyProcPid)
		s->slots[slotno].state = SLOT_FREE;
	LWLockRelease(s->lock);
}

/*
 * Takes (or finds) the slot for name.  Returns its state as found; a
 * pusher's completed result is copied to *copy.  If nobody is pushing the
 * file, the slot becomes ours (CLAIMED by the archiver) and pushers leave
 * the file alone.  -1 in *slotno when the table is full of work in flight
 * (cannot happen with lookahead <= ARCHIVE_SLOTS / 2; then we push
 * untracked, which is still safe: the repository refuses double writes).
 */
static ArchiveSlotState
slot_take(const char *name, int *slotno, ArchiveSlot *copy)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	ArchiveSlotState found = SLOT_FREE;
	Latch	   *pushers[ARCHIVE_MAX_PARALLEL];
	int			i;

	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	s->archiver_latch = MyLatch;
	memcpy(pushers, s->pusher_latches, sizeof(pushers));
	i = pg_ha_archive_slot_find(name);
	if (i >= 0)
	{
		ArchiveSlot *slot = &s->slots[i];

		found = slot->state;
		*copy = *slot;
		/* a claim by a process that no longer exists is void */
		if (found == SLOT_CLAIMED && slot->pid != MyProcPid &&
			kill(slot->pid, 0) != 0 && errno == ESRCH)
			found = SLOT_FREE;
		if (found == SLOT_CLAIMED && slot->pid == MyProcPid)
			found = SLOT_FREE;	/* our own leftover from an earlier try */
		if (found != SLOT_CLAIMED)
		{
			slot->state = SLOT_CLAIMED;
			slot->pid = MyProcPid;
			slot->at = GetCurrentTimestamp();
		}
	}
	else
		i = pg_ha_archive_slot_claim_new(name);
	LWLockRelease(s->lock);
	/* every call is a sign that there is work: keep the pushers ahead */
	for (int k = 0; k < ARCHIVE_MAX_PARALLEL; k++)
	{
		if (pushers[k])
			SetLatch(pushers[k]);
	}
	*slotno = i;
	return found;
}

/*
 * A pusher stored the file ahead of us.  It read the same immutable file
 * (a .ready segment is complete and is not recycled before we say .done),
 * so checking that the object is in place with the length and checksum the
 * pusher recorded is enough; the file's size is checked too.
 */
static bool
verify_pushed(const char *file, const char *path, const char *key, const ArchiveSlot *pushed)
{
	struct stat st;
	unsigned char hbuf[AR_HEADER_LEN];
	size_t		got = 0;
	ArHeader	hdr;
	char		err[AR_ERR_LEN];
	int			rc;

	if (stat(path, &st) != 0 || (uint64) st.st_size != pushed->size)
		return false;
	rc = repo->ops->head(repo, key, hbuf, sizeof(hbuf), &got, err, sizeof(err));
	if (rc != AR_OK || ar_decode_header(hbuf, got, &hdr, err, sizeof(err)) != AR_OK)
		return false;
	return hdr.orig_len == pushed->size && hdr.orig_crc == pushed->crc;
}

static bool
archive_one(const char *file, const char *path)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	char		key[AR_KEY_LEN];
	char		err[AR_ERR_LEN];
	ArchiveSlot copy = {0};
	ArchiveSlotState state;
	int			slotno;
	bool		already = false;
	size_t		stored = 0;
	size_t		orig_len = 0;
	int			rc;
	TimestampTz wait_start = GetCurrentTimestamp();

	if (archiver_repo(err, sizeof(err)) == NULL ||
		!pg_ha_archive_key(file, key, sizeof(key), err, sizeof(err)))
	{
		ereport(WARNING,
				(errmsg("pg_ha: could not archive \"%s\": %s", file, err)));
		pg_ha_archive_note_error(file, err);
		return false;
	}

	/* wait for a pusher that is on it right now (bounded) */
	for (;;)
	{
		state = slot_take(file, &slotno, &copy);
		if (state != SLOT_CLAIMED)
			break;
		if (ShutdownRequestPending ||
			TimestampDifferenceExceeds(wait_start, GetCurrentTimestamp(), 60000))
		{
			ereport(WARNING,
					(errmsg("pg_ha: gave up waiting for the pusher of \"%s\" (pid %d)",
							file, (int) copy.pid)));
			return false;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	if (state == SLOT_PUSHED && verify_pushed(file, path, key, &copy))
	{
		pg_atomic_fetch_add_u64(&s->lookahead_hits, 1);
		record_done(slotno, file, copy.size, copy.stored);
		return true;
	}

	/* push it ourselves: first offer, pusher failure, or a re-offer */
	rc = ar_repo_push_file(repo, key, file, path,
						   (ArCompression) pg_ha_archive_compression,
						   pg_ha_archive_compression_level,
						   &already, NULL, &orig_len, &stored,
						   &file_buf, &scratch_buf, err, sizeof(err));
	if (rc == AR_OK)
	{
		if (already)
		{
			pg_atomic_fetch_add_u64(&s->already_count, 1);
			ereport(LOG,
					(errmsg("pg_ha: \"%s\" was already archived with identical content", file)));
		}
		record_done(slotno, file, orig_len, stored);
		return true;
	}

	release_slot(slotno, file);
	pg_ha_archive_note_error(file, err);
	if (rc == AR_EXISTS)
	{
		pg_atomic_fetch_add_u64(&s->mismatch_count, 1);
		ereport(WARNING,
				(errcode(ERRCODE_DUPLICATE_FILE),
				 errmsg("pg_ha: archive already holds \"%s\" with different content", file),
				 errdetail("%s (key \"%s\" in \"%s\")", err, key, repo->location),
				 errhint("Two clusters may be archiving to the same repository path, or the repository was restored from elsewhere. The file is kept in pg_wal until this is resolved.")));
	}
	else if (rc == AR_CORRUPT)
	{
		pg_atomic_fetch_add_u64(&s->corrupt_count, 1);
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("pg_ha: archived copy of \"%s\" is corrupt", file),
				 errdetail("%s (key \"%s\" in \"%s\")", err, key, repo->location),
				 errhint("Move the damaged object aside; the archiver will push the file again.")));
	}
	else
		ereport(WARNING,
				(errmsg("pg_ha: could not archive \"%s\": %s", file, err)));
	return false;
}

static MemoryContext archive_cxt = NULL;

static bool
pg_ha_archive_file(const char *file, const char *path)
{
	volatile bool ok = false;
	MemoryContext oldcxt;

	if (archive_cxt == NULL)
		archive_cxt = AllocSetContextCreate(TopMemoryContext, "pg_ha archive",
											ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(archive_cxt);
	PG_TRY();
	{
		ok = archive_one(file, path);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(archive_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		LWLockReleaseAll();
		ereport(WARNING,
				(errmsg("pg_ha: archiving \"%s\" failed: %s", file, edata->message)));
		pg_ha_archive_note_error(file, edata->message);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(archive_cxt);
	if (!ok)
		pg_atomic_fetch_add_u64(&pg_ha_archive_shared->failed_count, 1);
	return ok;
}

static bool
pg_ha_archive_configured(void)
{
	if (pg_ha_archive_repo == NULL || pg_ha_archive_repo[0] == '\0')
	{
		ereport(WARNING,
				(errmsg("pg_ha: archive_library is pg_ha but pg_ha.archive_repo is not set"),
				 errhint("Set pg_ha.archive_repo to the repository directory and reload.")));
		return false;
	}
	if (pg_ha_effective_cluster()[0] == '\0')
	{
		ereport(WARNING,
				(errmsg("pg_ha: archiving needs a cluster name"),
				 errhint("Set pg_ha.cluster or cluster_name: the repository is keyed by it.")));
		return false;
	}
	return true;
}

static void
pg_ha_archive_shutdown(void)
{
	ar_repo_close(repo);
	repo = NULL;
	ar_buf_free(&file_buf);
	ar_buf_free(&scratch_buf);
}

#if PG_VERSION_NUM >= 160000
/*
 * PG16 passes a state to every callback and returns the callbacks from the
 * init function (archive/archive_module.h).  Not built or tested here: pg_ha
 * targets PG15.
 */
static bool
pg_ha_archive_configured16(ArchiveModuleState *state)
{
	return pg_ha_archive_configured();
}

static bool
pg_ha_archive_file16(ArchiveModuleState *state, const char *file, const char *path)
{
	return pg_ha_archive_file(file, path);
}

static void
pg_ha_archive_shutdown16(ArchiveModuleState *state)
{
	pg_ha_archive_shutdown();
}

static const ArchiveModuleCallbacks pg_ha_archive_callbacks = {
	.startup_cb = NULL,
	.check_configured_cb = pg_ha_archive_configured16,
	.archive_file_cb = pg_ha_archive_file16,
	.shutdown_cb = pg_ha_archive_shutdown16
};

PGDLLEXPORT const ArchiveModuleCallbacks *_PG_archive_module_init(void);

const ArchiveModuleCallbacks *
_PG_archive_module_init(void)
{
	return &pg_ha_archive_callbacks;
}
#else
/*
 * The archiver finds this through load_external_function().  pg_ha is
 * already loaded by shared_preload_libraries, so that finds the loaded
 * library and _PG_init does not run again.
 */
void		_PG_archive_module_init(ArchiveModuleCallbacks *cb);

void
_PG_archive_module_init(ArchiveModuleCallbacks *cb)
{
	AssertVariableIsOfType(&_PG_archive_module_init, ArchiveModuleInit);

	cb->check_configured_cb = pg_ha_archive_configured;
	cb->archive_file_cb = pg_ha_archive_file;
	cb->shutdown_cb = pg_ha_archive_shutdown;
}
#endif
