/*
 * archive_sql.c - pg_ha.archive_status(): what the WAL archive has done,
 * what is pending, and how fast it goes.
 *
 * Counters come from PgHaArchiveShared through pg_ha_archive_stats() (also
 * what the metrics endpoint reads); pending work is counted from
 * pg_wal/archive_status at call time.
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

bool
pg_ha_archive_stats(PgHaArchiveStats *out)
{
	PgHaArchiveShared *s = pg_ha_archive_shared;
	ArchiveRecent recent[ARCHIVE_RECENT];
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz oldest = 0;
	uint64		bytes = 0;
	int			n = 0;

	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return false;
	out->archived_count = pg_atomic_read_u64(&s->archived_count);
	out->archived_bytes = pg_atomic_read_u64(&s->archived_bytes);
	out->stored_bytes = pg_atomic_read_u64(&s->stored_bytes);
	out->pushed_ahead = pg_atomic_read_u64(&s->pushed_ahead);
	out->lookahead_hits = pg_atomic_read_u64(&s->lookahead_hits);
	out->already_count = pg_atomic_read_u64(&s->already_count);
	out->failed_count = pg_atomic_read_u64(&s->failed_count);
	out->mismatch_count = pg_atomic_read_u64(&s->mismatch_count);
	out->corrupt_count = pg_atomic_read_u64(&s->corrupt_count);

	LWLockAcquire(s->lock, LW_SHARED);
	strlcpy(out->last_archived, s->last_archived, sizeof(out->last_archived));
	strlcpy(out->last_failed, s->last_failed, sizeof(out->last_failed));
	strlcpy(out->last_error, s->last_error, sizeof(out->last_error));
	out->last_archived_at = s->last_archived_at;
	out->last_failed_at = s->last_failed_at;
	memcpy(recent, s->recent, sizeof(recent));
	for (int i = 0; i < ARCHIVE_SLOTS; i++)
	{
		if (s->slots[i].state == SLOT_CLAIMED || s->slots[i].state == SLOT_PUSHED)
			out->in_flight++;
	}
	LWLockRelease(s->lock);

	for (int i = 0; i < ARCHIVE_RECENT; i++)
	{
		if (recent[i].at == 0 || recent[i].at < now - 60 * USECS_PER_SEC)
			continue;
		n++;
		bytes += recent[i].bytes;
		if (oldest == 0 || recent[i].at < oldest)
			oldest = recent[i].at;
	}
	if (n > 0)
	{
		double		secs = Max((double) (now - oldest) / USECS_PER_SEC, 0.001);

		out->files_per_second = n / secs;
		out->bytes_per_second = bytes / secs;
	}
	return true;
}

PG_FUNCTION_INFO_V1(pg_ha_archive_status);

#define ARCHIVE_STATUS_COLS 25

Datum
pg_ha_archive_status(PG_FUNCTION_ARGS)
{
	PgHaArchiveStats st;
	TupleDesc	tupdesc;
	Datum		values[ARCHIVE_STATUS_COLS];
	bool		nulls[ARCHIVE_STATUS_COLS];
	int			pending = 0;
	int64		pending_bytes = 0;
	time_t		oldest_ready = 0;
	DIR		   *dir;
	struct dirent *de;
	int			c = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!pg_ha_archive_stats(&st))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha archive shared memory is not initialised"),
				 errhint("pg_ha must be loaded via shared_preload_libraries.")));

	/* files waiting for the archiver, and how long the oldest has waited */
	dir = AllocateDir(XLOGDIR "/archive_status");
	while ((de = ReadDir(dir, XLOGDIR "/archive_status")) != NULL)
	{
		size_t		len = strlen(de->d_name);
		char		path[MAXPGPATH];
		struct stat sb;

		if (len <= 6 || strcmp(de->d_name + len - 6, ".ready") != 0)
			continue;
		pending++;
		snprintf(path, sizeof(path), XLOGDIR "/archive_status/%s", de->d_name);
		if (stat(path, &sb) == 0 && (oldest_ready == 0 || sb.st_mtime < oldest_ready))
			oldest_ready = sb.st_mtime;
		snprintf(path, sizeof(path), XLOGDIR "/%.*s", (int) (len - 6), de->d_name);
		if (stat(path, &sb) == 0)
			pending_bytes += sb.st_size;
	}
	FreeDir(dir);

	memset(nulls, 0, sizeof(nulls));
	values[c++] = CStringGetTextDatum(pg_ha_archive_repo);
	values[c++] = CStringGetTextDatum(ar_compression_name((ArCompression) pg_ha_archive_compression));
	values[c++] = Int32GetDatum(pg_ha_archive_parallel);
	values[c++] = BoolGetDatum(pg_ha_archive_library_is_us() && XLogArchivingActive());
	values[c++] = Int64GetDatum((int64) st.archived_count);
	values[c++] = Int64GetDatum((int64) st.archived_bytes);
	values[c++] = Int64GetDatum((int64) st.stored_bytes);
	if (st.stored_bytes > 0)
		values[c++] = Float8GetDatum((double) st.archived_bytes / (double) st.stored_bytes);
	else
		nulls[c++] = true;
	values[c++] = Int64GetDatum((int64) st.pushed_ahead);
	values[c++] = Int64GetDatum((int64) st.lookahead_hits);
	values[c++] = Int64GetDatum((int64) st.already_count);
	values[c++] = Int64GetDatum((int64) st.failed_count);
	values[c++] = Int64GetDatum((int64) st.mismatch_count);
	values[c++] = Int64GetDatum((int64) st.corrupt_count);
	values[c++] = Int32GetDatum(st.in_flight);
	values[c++] = Int32GetDatum(pending);
	values[c++] = Int64GetDatum(pending_bytes);
	values[c++] = Float8GetDatum(oldest_ready ? Max(0.0, (double) (time(NULL) - oldest_ready)) : 0.0);
	values[c++] = Float8GetDatum(st.files_per_second);
	values[c++] = Float8GetDatum(st.bytes_per_second);
	if (st.last_archived[0])
	{
		values[c++] = CStringGetTextDatum(st.last_archived);
		values[c++] = TimestampTzGetDatum(st.last_archived_at);
	}
	else
	{
		nulls[c++] = true;
		nulls[c++] = true;
	}
	if (st.last_failed[0])
	{
		values[c++] = CStringGetTextDatum(st.last_failed);
		values[c++] = TimestampTzGetDatum(st.last_failed_at);
	}
	else
	{
		nulls[c++] = true;
		nulls[c++] = true;
	}
	if (st.last_error[0])
		values[c++] = CStringGetTextDatum(st.last_error);
	else
		nulls[c++] = true;
	Assert(c == ARCHIVE_STATUS_COLS);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
