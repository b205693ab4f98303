/*
 * pg_ha.c - module entry point: refuses to load outside
 * shared_preload_libraries, defines the GUCs, hooks shared memory and
 * registers the background workers.
 */
#include "pg_ha.h"
#include "archive.h"
#define PG_HA_HTTP_BACKEND
#include "http.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
pg_ha_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	pg_ha_shmem_request();
	pg_ha_archive_shmem_request();
	pg_ha_http_shmem_request();
}

static void
pg_ha_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	pg_ha_shmem_startup();
	pg_ha_archive_shmem_startup();
	pg_ha_http_shmem_startup();
}

void
_PG_init(void)
{
	/*
	 * The workers and shared memory only exist when the postmaster loads us;
	 * loaded later, the SQL functions would report a node nobody manages.
	 */
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha must be loaded via shared_preload_libraries"),
				 errhint("Add pg_ha to shared_preload_libraries in postgresql.conf and restart the server.")));

	/*
	 * Each subsystem defines its parameters, then the prefix is closed.  A
	 * pg_ha.* line refused on the way is only a WARNING and leaves the
	 * default in place: config_check.c notes the lines before and finds
	 * the refused ones after, so that the HA worker does not run on a
	 * default nobody chose.
	 */
	pg_ha_config_note_placeholders();
	pg_ha_define_gucs();
	pg_ha_archive_define_gucs();
	pg_ha_http_define_gucs();
	MarkGUCPrefixReserved("pg_ha");
	pg_ha_config_find_rejected();

	if (!etcd_global_init())
		ereport(ERROR,
				(errmsg("pg_ha: could not initialise libcurl")));

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pg_ha_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pg_ha_shmem_startup_hook;

	pg_ha_install_fence();
	pg_ha_register_worker();
	pg_ha_archive_register_workers();
	pg_ha_http_register_workers();
	pg_ha_control_register_worker();
}
