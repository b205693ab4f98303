/*
 * ha_sync_local.c - synchronous mode on this node's postgres: what
 * synchronous_standby_names says here, who streams and whether postgres
 * waits for them (pg_stat_replication), whether a changed setting is in
 * effect in every process that decides about waiting, and the change
 * itself (ALTER SYSTEM + reload).  The HA worker calls these; the
 * decisions are in ha_sync.c.
 */
#include "pg_ha.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "replication/message.h"
#include "replication/syncrep.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"

#include "ha_control.h"
#include "ha_sync.h"

/* synchronous_standby_names as this process parsed it at its last reload */
void
sync_local_ssn(SyncStandbyNames *out)
{
	const char *name;

	memset(out, 0, sizeof(*out));
	if (SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0' || SyncRepConfig == NULL)
		return;
	name = SyncRepConfig->member_names;
	for (int i = 0; i < SyncRepConfig->nmembers; i++)
	{
		sync_names_add(&out->names, name);
		name += strlen(name) + 1;
	}
	out->num = Min(SyncRepConfig->num_sync, out->names.n);
	out->any = SyncRepConfig->syncrep_method == SYNC_REP_QUORUM;
}

/*
 * The WAL senders, from pg_stat_replication: application_name is the node
 * name (primary_conninfo sets it, ha_control.c).  walsender_priority is
 * the WAL sender's own copy of the setting: > 0 when it lists the standby.
 */
int
sync_local_standbys(SyncStandby *out, int max)
{
	int			n = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT application_name, state OPERATOR(pg_catalog.=) 'streaming', "
					"sync_state OPERATOR(pg_catalog.=) ANY (ARRAY['sync', 'quorum']), sync_priority, flush_lsn "
					"FROM pg_catalog.pg_stat_replication WHERE application_name IS NOT NULL",
					true, max) == SPI_OK_SELECT)
	{
		for (uint64 i = 0; i < SPI_processed && n < max; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			SyncStandby *s = &out[n];
			char	   *name = SPI_getvalue(tup, desc, 1);
			bool		isnull;
			Datum		d;

			if (name == NULL || strlen(name) >= PG_HA_NAME_LEN)
				continue;
			memset(s, 0, sizeof(*s));
			strlcpy(s->name, name, sizeof(s->name));
			d = SPI_getbinval(tup, desc, 2, &isnull);
			s->streaming = !isnull && DatumGetBool(d);
			d = SPI_getbinval(tup, desc, 3, &isnull);
			s->waited = !isnull && DatumGetBool(d);
			d = SPI_getbinval(tup, desc, 4, &isnull);
			s->walsender_priority = isnull ? 0 : DatumGetInt32(d);
			d = SPI_getbinval(tup, desc, 5, &isnull);
			s->flush = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
			n++;
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return n;
}

/*
 * Does every process that decides about waiting run with ssn?  Backends
 * wait when the checkpointer has marked standbys defined; each WAL sender
 * releases waiters by its own copy (a listed standby has a priority).
 * Until all agree, a commit may be confirmed by a mix of old and new
 * settings, which ha_sync.c allows for by changing one thing at a time.
 */
bool
sync_local_in_effect(const SyncStandbyNames *ssn, const SyncStandby *standbys, int n)
{
	bool		defined;

	LWLockAcquire(SyncRepLock, LW_SHARED);
	defined = (WalSndCtl->sync_standbys_status & SYNC_STANDBY_DEFINED) != 0;
	LWLockRelease(SyncRepLock);
	if (defined != (ssn->names.n > 0))
		return false;
	for (int i = 0; i < n; i++)
		if ((standbys[i].walsender_priority > 0) != sync_names_contains(&ssn->names, standbys[i].name))
			return false;
	return true;
}

/* The checkpointer alone: what a promotion needs before the first commit. */
bool
sync_local_defined_matches(const SyncStandbyNames *ssn)
{
	bool		defined;

	LWLockAcquire(SyncRepLock, LW_SHARED);
	defined = (WalSndCtl->sync_standbys_status & SYNC_STANDBY_DEFINED) != 0;
	LWLockRelease(SyncRepLock);
	return defined == (ssn->names.n > 0);
}

/* ALTER SYSTEM SET synchronous_standby_names, and reload every process. */
void
sync_local_set_ssn(const SyncStandbyNames *ssn)
{
	char		value[SYNC_SSN_MAX_LEN];

	sync_ssn_format(ssn, value, sizeof(value));
	StartTransactionCommand();
	alter_system_set("synchronous_standby_names", value);
	CommitTransactionCommand();
	reload_postmaster();
	ereport(LOG, (errmsg("pg_ha: synchronous_standby_names = '%s'", value)));
}

/*
 * Make every standby reply now, so that its WAL sender looks at the
 * waiting commits again under the setting in effect.  PostgreSQL releases
 * waiters only when a WAL sender processes a standby's reply
 * (SyncRepReleaseWaiters); a standby replies when its write or flush
 * position moves, or when wal_receiver_status_interval (10 s) has passed.
 * A standby just listed has often flushed every waiting commit already,
 * while it was not listed, and the waiting writers make no new WAL: the
 * commits would wait for that interval.  A tiny record, flushed at once,
 * moves every standby's position.  Nothing is acknowledged early: a waiter
 * is still released only once enough listed standbys flushed past its
 * commit.  A non-transactional logical message is logged at any wal_level
 * and, with no transaction, does not itself wait for a standby.
 */
void
sync_local_nudge_standbys(void)
{
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
		return;
	lsn = LogLogicalMessage("pg_ha", "", 0, false);
	XLogFlush(lsn);
	ereport(DEBUG1, (errmsg_internal("pg_ha: WAL flushed to %X/%X to make the standbys reply",
									 LSN_FORMAT_ARGS(lsn))));
}
