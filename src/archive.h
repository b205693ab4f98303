/*
 * archive.h - the WAL archive subsystem inside postgres: the archive module
 * callbacks (archive_module.c), the look-ahead pusher workers
 * (archive_push.c), their shared state and pg_ha.archive_status()
 * (archive_sql.c).  The repository itself is archive_repo.h (plain C).
 */
#ifndef PG_HA_ARCHIVE_H
#define PG_HA_ARCHIVE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "archive_repo.h"

#define ARCHIVE_NAME_LEN	64	/* WAL file names (MAXFNAMELEN) */
#define ARCHIVE_SLOTS		64	/* names tracked: in flight plus recently done */
#define ARCHIVE_MAX_PARALLEL 16
#define ARCHIVE_RECENT		32	/* completions kept for the throughput figure */

/* ---------- configuration ---------- */

extern char *pg_ha_archive_repo;
extern int	pg_ha_archive_compression;	/* ArCompression */
extern int	pg_ha_archive_compression_level;
extern int	pg_ha_archive_parallel;
extern int	pg_ha_archive_lookahead;

extern void pg_ha_archive_define_gucs(void);

/* ---------- shared state ---------- */

typedef enum ArchiveSlotState
{
	SLOT_FREE = 0,
	SLOT_CLAIMED,				/* being pushed by `pid` */
	SLOT_PUSHED,				/* pushed ahead, the archiver has not asked yet */
	SLOT_FAILED,				/* a pusher could not push it: archiver retries */
	SLOT_DONE					/* the archiver confirmed it: kept to stop re-pushes */
} ArchiveSlotState;

typedef struct ArchiveSlot
{
	ArchiveSlotState state;
	char		name[ARCHIVE_NAME_LEN];
	pid_t		pid;			/* claimer */
	uint32		crc;			/* CRC-32C of the content pushed */
	uint64		size;			/* original bytes */
	uint64		stored;			/* object bytes in the repository */
	TimestampTz at;				/* last state change */
} ArchiveSlot;

typedef struct ArchiveRecent
{
	TimestampTz at;
	uint64		bytes;
} ArchiveRecent;

/*
 * PgHaArchiveShared: the archive subsystem's shared memory, separate from
 * PgHaShared so the archiver and pushers never wait behind the HA worker.
 *
 * Lock discipline:
 *   - The counters are atomics, updated and read without a lock.
 *   - Everything else is guarded by `lock` (tranche "pg_ha_archive").  Holders
 *     only copy or flip fields: no I/O, no allocation, no ereport while
 *     holding it.  A slot name is claimed (FREE/DONE -> CLAIMED) under the
 *     lock, so a file is never pushed by two processes at once.
 */
typedef struct PgHaArchiveShared
{
	pg_atomic_uint64 archived_count;	/* files confirmed to the archiver */
	pg_atomic_uint64 archived_bytes;	/* their original size */
	pg_atomic_uint64 stored_bytes;	/* their size in the repository */
	pg_atomic_uint64 pushed_ahead;	/* files pushed by look-ahead workers */
	pg_atomic_uint64 lookahead_hits;	/* archiver found its file pushed */
	pg_atomic_uint64 already_count; /* re-offered, identical, accepted */
	pg_atomic_uint64 failed_count;	/* archiver calls that returned false */
	pg_atomic_uint64 mismatch_count;	/* repository holds different content */
	pg_atomic_uint64 corrupt_count; /* repository object failed its checks */

	LWLock	   *lock;
	Latch	   *archiver_latch; /* set by pushers when a slot completes */
	ArchiveSlot slots[ARCHIVE_SLOTS];
	char		last_archived[ARCHIVE_NAME_LEN];
	TimestampTz last_archived_at;
	char		last_failed[ARCHIVE_NAME_LEN];
	TimestampTz last_failed_at;
	char		last_error[AR_ERR_LEN];
	ArchiveRecent recent[ARCHIVE_RECENT];
	int			recent_next;
	pid_t		pusher_pids[ARCHIVE_MAX_PARALLEL];
	Latch	   *pusher_latches[ARCHIVE_MAX_PARALLEL];	/* the archiver wakes them */
} PgHaArchiveShared;

extern PgHaArchiveShared *pg_ha_archive_shared;

extern void pg_ha_archive_shmem_request(void);
extern void pg_ha_archive_shmem_startup(void);

/* Is pg_ha the configured archive_library? (basename match) */
extern bool pg_ha_archive_library_is_us(void);
/* Repository key of a WAL file name for this cluster; false + message. */
extern bool pg_ha_archive_key(const char *name, char *key, size_t keylen,
							  char *err, size_t errlen);
/* Logs and records a failure for name (shared by module and pushers). */
extern void pg_ha_archive_note_error(const char *name, const char *msg);
/* Slot tracking name, or -1; the caller holds pg_ha_archive_shared->lock. */
extern int	pg_ha_archive_slot_find(const char *name);
/*
 * Claims a slot for name for this process (a free one, else the one done
 * longest ago); its number, or -1 if all are in flight.  Same lock rule.
 */
extern int	pg_ha_archive_slot_claim_new(const char *name);

/*
 * A consistent copy of the archive's counters and last events, for
 * pg_ha.archive_status() and the metrics endpoint.  Takes the lock shared
 * for a few copies; does no I/O.  Returns false if pg_ha's shared memory is
 * absent.  Rates are over the last ARCHIVE_RECENT acknowledgements within a
 * minute.
 */
typedef struct PgHaArchiveStats
{
	uint64		archived_count;
	uint64		archived_bytes;
	uint64		stored_bytes;
	uint64		pushed_ahead;
	uint64		lookahead_hits;
	uint64		already_count;
	uint64		failed_count;
	uint64		mismatch_count;
	uint64		corrupt_count;
	int			in_flight;
	double		files_per_second;
	double		bytes_per_second;
	char		last_archived[ARCHIVE_NAME_LEN];
	TimestampTz last_archived_at;
	char		last_failed[ARCHIVE_NAME_LEN];
	TimestampTz last_failed_at;
	char		last_error[AR_ERR_LEN];
} PgHaArchiveStats;

extern bool pg_ha_archive_stats(PgHaArchiveStats *out);

/* ---------- look-ahead pushers (archive_push.c) ---------- */

extern void pg_ha_archive_register_workers(void);
extern PGDLLEXPORT void pg_ha_archive_pusher_main(Datum arg);

#endif							/* PG_HA_ARCHIVE_H */
