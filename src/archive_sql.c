/*
 * archive_sql.c - pg_ha.archive_status(): what the WAL archive has done,
 * what is pending, and how fast it goes.
 *
 * Counters come from PgHaArchiveShared (atomics and a copy taken under its
 * lock); pending work is counted from pg_wal/archive_status at call time.
 */
#include "archive.h"

#include <sys/stat.h>

#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "fmgr.h"
#include "funcapi.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "pg_ha.h"

PG_FUNCTION_INFO_V1(pg_ha_archive_status);

#define ARCHIVE_STATUS_COLS 25

Datum
pg_ha_archive_status(PG_FUNCTION_ARGS)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	TupleDesc	tupdesc;
	Datum		values[ARCHIVE_STATUS_COLS];
	bool		nulls[ARCHIVE_STATUS_COLS];
	char		last_archived[ARCHIVE_NAME_LEN];
	char		last_failed[ARCHIVE_NAME_LEN];
	char		last_error[AR_ERR_LEN];
	TimestampTz last_archived_at,
				last_failed_at;
	ArchiveRecent recent[ARCHIVE_RECENT];
	int			in_flight = 0;
	int			pending = 0;
	int64		pending_bytes = 0;
	time_t		oldest_ready = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			recent_n = 0;
	uint64		recent_bytes = 0;
	TimestampTz recent_oldest = 0;
	uint64		archived_bytes,
				stored_bytes;
	DIR		   *dir;
	struct dirent *de;
	int			c = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (s == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha archive shared memory is not initialised"),
				 errhint("pg_ha must be loaded via shared_preload_libraries.")));

	LWLockAcquire(s->lock, LW_SHARED);
	strlcpy(last_archived, s->last_archived, sizeof(last_archived));
	strlcpy(last_failed, s->last_failed, sizeof(last_failed));
	strlcpy(last_error, s->last_error, sizeof(last_error));
	last_archived_at = s->last_archived_at;
	last_failed_at = s->last_failed_at;
	memcpy(recent, s->recent, sizeof(recent));
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		if (s->slots[i].state == SLOT_CLAIMED || s->slots[i].state == SLOT_PUSHED)
			in_flight++;
	}
	LWLockRelease(s->lock);

	/* files waiting for the archiver, and how long the oldest has waited */
	dir = AllocateDir(XLOGDIR "/archive_status");
	while ((de = ReadDir(dir, XLOGDIR "/archive_status")) != NULL)
	{
		size_t		len = strlen(de->d_name);
		char		path[MAXPGPATH];
		struct stat st;

		if (len <= 6 || strcmp(de->d_name + len - 6, ".ready") != 0)
			continue;
		pending++;
		snprintf(path, sizeof(path), XLOGDIR "/archive_status/%s", de->d_name);
		if (stat(path, &st) == 0 && (oldest_ready == 0 || st.st_mtime < oldest_ready))
			oldest_ready = st.st_mtime;
		snprintf(path, sizeof(path), XLOGDIR "/%.*s", (int) (len - 6), de->d_name);
		if (stat(path, &st) == 0)
			pending_bytes += st.st_size;
	}
	FreeDir(dir);

	/* throughput over the completions of the last minute */
	for (int i = 0; i < ARCHIVE_RECENT; i++)
	{
		if (recent[i].at == 0 || recent[i].at < now - 60 * USECS_PER_SEC)
			continue;
		recent_n++;
		recent_bytes += recent[i].bytes;
		if (recent_oldest == 0 || recent[i].at < recent_oldest)
			recent_oldest = recent[i].at;
	}

	memset(nulls, 0, sizeof(nulls));
	values[c++] = CStringGetTextDatum(pg_ha_archive_repo);
	values[c++] = CStringGetTextDatum(ar_compression_name((ArCompression) pg_ha_archive_compression));
	values[c++] = Int32GetDatum(pg_ha_archive_parallel);
	values[c++] = BoolGetDatum(pg_ha_archive_library_is_us() && XLogArchivingActive());
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->archived_count));
	archived_bytes = pg_atomic_read_u64(&s->archived_bytes);
	stored_bytes = pg_atomic_read_u64(&s->stored_bytes);
	values[c++] = Int64GetDatum((int64) archived_bytes);
	values[c++] = Int64GetDatum((int64) stored_bytes);
	if (stored_bytes > 0)
		values[c++] = Float8GetDatum((double) archived_bytes / (double) stored_bytes);
	else
		nulls[c++] = true;
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->pushed_ahead));
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->lookahead_hits));
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->already_count));
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->failed_count));
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->mismatch_count));
	values[c++] = Int64GetDatum((int64) pg_atomic_read_u64(&s->corrupt_count));
	values[c++] = Int32GetDatum(in_flight);
	values[c++] = Int32GetDatum(pending);
	values[c++] = Int64GetDatum(pending_bytes);
	if (oldest_ready != 0)
		values[c++] = Float8GetDatum(Max(0.0, (double) (time(NULL) - oldest_ready)));
	else
		values[c++] = Float8GetDatum(0.0);
	if (recent_n > 0)
	{
		double		secs = Max((double) (now - recent_oldest) / USECS_PER_SEC, 0.001);

		values[c++] = Float8GetDatum(recent_n / secs);
		values[c++] = Float8GetDatum(recent_bytes / secs);
	}
	else
	{
		values[c++] = Float8GetDatum(0.0);
		values[c++] = Float8GetDatum(0.0);
	}
	if (last_archived[0])
	{
		values[c++] = CStringGetTextDatum(last_archived);
		values[c++] = TimestampTzGetDatum(last_archived_at);
	}
	else
	{
		nulls[c++] = true;
		nulls[c++] = true;
	}
	if (last_failed[0])
	{
		values[c++] = CStringGetTextDatum(last_failed);
		values[c++] = TimestampTzGetDatum(last_failed_at);
	}
	else
	{
		nulls[c++] = true;
		nulls[c++] = true;
	}
	if (last_error[0])
		values[c++] = CStringGetTextDatum(last_error);
	else
		nulls[c++] = true;
	Assert(c == ARCHIVE_STATUS_COLS);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
