/*
 * shmem.c - pg_ha's shared memory: one PgHaShared struct and its LWLock.
 *
 * The lock discipline is documented on PgHaShared in pg_ha.h.  PG15 requires
 * the space and the lock tranche to be requested from shmem_request_hook
 * (asking from _PG_init is a FATAL there).
 */
#include "pg_ha.h"

#include <sys/stat.h>
#include <time.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

PgHaShared *pg_ha_shared = NULL;

void
pg_ha_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PgHaShared)));
	RequestNamedLWLockTranche("pg_ha", 1);
}

void
pg_ha_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pg_ha_shared = ShmemInitStruct("pg_ha", sizeof(PgHaShared), &found);
	if (!found)
	{
		memset(pg_ha_shared, 0, sizeof(PgHaShared));
		pg_atomic_init_u64(&pg_ha_shared->lease_deadline_us, 0);
		pg_atomic_init_u32(&pg_ha_shared->state, HA_STARTING);
		pg_atomic_init_u32(&pg_ha_shared->fence, 0);
		pg_atomic_init_u32(&pg_ha_shared->lease_ttl_s, 0);
		pg_atomic_init_u32(&pg_ha_shared->sync_mode_eff, 0);
		pg_ha_shared->lock = &(GetNamedLWLockTranche("pg_ha"))->lock;

		/*
		 * Failsafe: a promise given before a restart lives on in no memory,
		 * so the restart itself counts as one to any leader, for the
		 * longest a promise lasts (one TTL from its receipt, which came
		 * before now).  ha_failsafe.c, point 2.  Off: no promise was
		 * given (the listener refuses), none is recorded.  The config key
		 * may have turned it on with the GUC off: the HA worker then left a
		 * marker in the data directory (ha_worker.c, failsafe_marker).
		 */
		if (pg_ha_failsafe_mode || pg_ha_failsafe_marker_exists())
			pg_ha_shared->failsafe_until_us = pg_ha_monotonic_us() + (int64) pg_ha_ttl * 1000000;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The clock of the lease deadline.  It is system-wide, so a deadline the HA
 * worker computes means the same instant to every backend, and it does not
 * jump with wall-clock changes, which the lease rule depends on.
 *
 * CLOCK_BOOTTIME rather than CLOCK_MONOTONIC: on Linux CLOCK_MONOTONIC stops
 * while the host is suspended, so a primary resumed after a suspend longer
 * than its TTL would believe it still holds a lease that etcd expired long
 * ago, and commit until its next renewal failed.  CLOCK_BOOTTIME counts the
 * suspended time.  Neither clock sees a frozen VM (a paused or migrating
 * guest's clocks are stopped or stepped by the hypervisor): no local clock
 * can, which is why the fence also checks after the commit is durable
 * (fence.c) and docs/architecture.md ("Clocks") lists what else narrows it.
 * The name stays pg_ha_monotonic_us: it is monotonic, and callers only need
 * that plus "counts every second that passes for etcd".
 */
int64
pg_ha_monotonic_us(void)
{
	struct timespec ts;

#ifdef CLOCK_BOOTTIME
	if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
#endif
		clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * The margin covers what separates "our deadline passed" from "another node
 * may act": clock rate drift between this host and the etcd leader over one
 * TTL (ppm: microseconds), the time a commit that passed the check needs to
 * finish, and scheduling delay of the process that checks.  One second, or a
 * tenth of the TTL when that is larger, covers all three with room to spare.
 * The TTL is the larger of pg_ha.ttl and the one the current lease was
 * granted with (the config key may set a longer one).
 */
int64
pg_ha_lease_margin_us(void)
{
	int64		granted = pg_ha_shared ? pg_atomic_read_u32(&pg_ha_shared->lease_ttl_s) : 0;
	int64		ttl = Max(pg_ha_ttl, granted);
	int64		tenth = ttl * 100000;

	return Max(1000000, tenth);
}

bool
pg_ha_lease_valid(int64 now_us)
{
	uint64		deadline;

	if (pg_ha_shared == NULL)
		return false;
	deadline = pg_atomic_read_u64(&pg_ha_shared->lease_deadline_us);
	return deadline != 0 && now_us < (int64) deadline - pg_ha_lease_margin_us();
}

void
pg_ha_dyn_local(DynLocal *out)
{
	out->ttl = pg_ha_ttl;
	out->etcd_timeout_ms = pg_ha_etcd_timeout_ms;
	out->maximum_lag_bytes = (int64_t) pg_ha_maximum_lag_on_failover * 1024;
	out->sync_mode = pg_ha_synchronous_mode;
	out->sync_node_count = pg_ha_synchronous_node_count;
	out->failsafe_mode = pg_ha_failsafe_mode;
}

void
pg_ha_dyn_current(DynSettings *out)
{
	DynLocal	local;
	bool		known = false;

	if (pg_ha_shared != NULL)
	{
		LWLockAcquire(pg_ha_shared->lock, LW_SHARED);
		known = pg_ha_shared->dyn_known;
		if (known)
			*out = pg_ha_shared->dyn;
		LWLockRelease(pg_ha_shared->lock);
	}
	if (known)
		return;
	pg_ha_dyn_local(&local);
	dynconf_merge(NULL, &local, out);
}

int
pg_ha_effective_sync_mode(void)
{
	uint32		v = pg_ha_shared ? pg_atomic_read_u32(&pg_ha_shared->sync_mode_eff) : 0;

	return v == 0 ? pg_ha_synchronous_mode : (int) v - 1;
}

/*
 * Failsafe mode turned on by the config key while pg_ha.failsafe_mode is
 * off: promises given then must bind after a restart too (shmem startup).
 */
bool
pg_ha_failsafe_marker_exists(void)
{
	char		path[MAXPGPATH];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", DataDir, PG_HA_FAILSAFE_MARKER);
	return stat(path, &st) == 0;
}
