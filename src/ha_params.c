/*
 * ha_params.c - the config key's postgresql.parameters, applied on this
 * node by its HA worker: ALTER SYSTEM SET for each parameter, then a
 * reload; ALTER SYSTEM RESET for one pg_ha set before and the key no
 * longer lists.  Every node does it for itself, so a parameter reaches the
 * whole cluster.
 *
 * What pg_ha set is kept in a small file in the data directory
 * (pg_ha.parameters, "name<TAB>value" lines, rewritten atomically), since
 * postgresql.auto.conf has no room for a note: only those are ever reset,
 * never a setting an operator made with ALTER SYSTEM himself.
 *
 * A parameter pg_ha manages or relies on is refused (ha_dynconf.c), and
 * so is one PostgreSQL rejects: ALTER SYSTEM validates the value before it
 * writes postgresql.auto.conf, and the error is caught here, so a bad value
 * never reaches the file.  Each refusal is logged once per value.  A
 * restart-only parameter is written and waits for a restart like an edit
 * of postgresql.conf would: pending_restart in the member key, /patroni and
 * pg_ha.status() (pg_ha_pending_restart).
 */
#include "pg_ha.h"

#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "ha_control.h"

#define PARAMS_STATE_FILE "pg_ha.parameters"

typedef struct ParamSet
{
	int			n;
	PatroniParam p[PATRONI_PARAMS_MAX];
} ParamSet;

static ParamSet *applied;		/* what pg_ha set, as the state file says */
static ParamSet *refused;		/* name = value already refused (logged) */

static int
find(const ParamSet *set, const char *name)
{
	for (int i = 0; i < set->n; i++)
		if (pg_strcasecmp(set->p[i].name, name) == 0)
			return i;
	return -1;
}

static void
state_path(char *path, size_t len, const char *suffix)
{
	snprintf(path, len, "%s/%s%s", DataDir, PARAMS_STATE_FILE, suffix);
}

/* Reads the state file once; a missing or unreadable one means none set. */
static void
load_state(void)
{
	char		path[MAXPGPATH];
	char		line[PATRONI_PARAM_NAME_LEN + PATRONI_PARAM_VALUE_LEN + 2];
	FILE	   *f;

	applied = MemoryContextAllocZero(TopMemoryContext, sizeof(ParamSet));
	refused = MemoryContextAllocZero(TopMemoryContext, sizeof(ParamSet));
	state_path(path, sizeof(path), "");
	f = AllocateFile(path, "r");
	if (f == NULL)
		return;
	while (applied->n < PATRONI_PARAMS_MAX && fgets(line, sizeof(line), f) != NULL)
	{
		char	   *tab = strchr(line, '\t');
		PatroniParam *p = &applied->p[applied->n];

		line[strcspn(line, "\n")] = '\0';
		if (tab == NULL || tab - line >= PATRONI_PARAM_NAME_LEN)
			continue;
		*tab = '\0';
		strlcpy(p->name, line, sizeof(p->name));
		strlcpy(p->value, tab + 1, sizeof(p->value));
		applied->n++;
	}
	FreeFile(f);
}

/* Rewrites the state file: a temporary file, fsync'ed, renamed over it. */
static void
save_state(void)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	FILE	   *f;
	bool		ok;

	state_path(path, sizeof(path), "");
	state_path(tmp, sizeof(tmp), ".tmp");
	f = AllocateFile(tmp, "w");
	if (f == NULL)
	{
		ereport(WARNING, (errcode_for_file_access(),
						  errmsg("pg_ha: could not write file \"%s\": %m", tmp)));
		return;
	}
	for (int i = 0; i < applied->n; i++)
		fprintf(f, "%s\t%s\n", applied->p[i].name, applied->p[i].value);
	ok = fflush(f) == 0 && pg_fsync(fileno(f)) == 0;
	if (FreeFile(f) != 0 || !ok)
	{
		ereport(WARNING, (errcode_for_file_access(),
						  errmsg("pg_ha: could not write file \"%s\": %m", tmp)));
		return;
	}
	(void) durable_rename(tmp, path, WARNING);
}

/*
 * ALTER SYSTEM SET name = value, or RESET name when value is NULL, in a
 * transaction of its own.  False, with PostgreSQL's message, when it
 * refused; the transaction is rolled back and the worker carries on.
 */
static bool
alter(const char *name, const char *value, char *err, size_t errlen)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	StartTransactionCommand();
	PG_TRY();
	{
		if (value != NULL)
			alter_system_set(name, value);
		else
		{
			AlterSystemStmt *stmt = makeNode(AlterSystemStmt);

			stmt->setstmt = makeNode(VariableSetStmt);
			stmt->setstmt->kind = VAR_RESET;
			stmt->setstmt->name = pstrdup(name);
			AlterSystemSetConfigFile(stmt);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		strlcpy(err, edata->message, errlen);
		FreeErrorData(edata);
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	if (ok)
		CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/* Logs a refusal once per name and value. */
static void
refuse(const PatroniParam *p, const char *why)
{
	int			i = find(refused, p->name);

	if (i >= 0 && strcmp(refused->p[i].value, p->value) == 0)
		return;
	if (i < 0 && refused->n < PATRONI_PARAMS_MAX)
		i = refused->n++;
	if (i >= 0)
		refused->p[i] = *p;
	ereport(WARNING,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("pg_ha: not applying parameter \"%s\" from the config key", p->name),
			 errdetail("%s.", why)));
}

/* One parameter of the key: set unless pg_ha set this very value already. */
static bool
apply_one(const PatroniParam *p)
{
	const char *why = p->bad ? "Its name or value is not one postgresql.conf could hold" :
		dynconf_param_refused(p->name, p->value);
	int			i = find(applied, p->name);
	char		err[256];
	int			r = find(refused, p->name);

	if (why != NULL)
	{
		refuse(p, why);
		return false;
	}
	if (i >= 0 && strcmp(applied->p[i].value, p->value) == 0)
		return false;
	if (r >= 0 && strcmp(refused->p[r].value, p->value) == 0)
		return false;			/* PostgreSQL refused it already */
	if (!alter(p->name, p->value, err, sizeof(err)))
	{
		refuse(p, err);
		return false;
	}
	if (r >= 0)
		refused->p[r] = refused->p[--refused->n];	/* a later refusal is news again */
	if (i < 0)
		i = applied->n++;
	applied->p[i] = *p;
	return true;
}

/* A parameter pg_ha set that the key no longer lists: RESET. */
static bool
reset_one(int i)
{
	char		err[256];

	if (!alter(applied->p[i].name, NULL, err, sizeof(err)))
		ereport(WARNING,
				(errmsg("pg_ha: could not reset parameter \"%s\"", applied->p[i].name),
				 errdetail("%s", err)));
	ereport(LOG, (errmsg("pg_ha: parameter \"%s\" reset: the config key no longer sets it",
						 applied->p[i].name)));
	applied->p[i] = applied->p[--applied->n];
	return true;
}

void
pg_ha_params_apply(const PatroniDynConfig *key)
{
	bool		changed = false;

	if (applied == NULL)
		load_state();
	for (int i = 0; i < key->nparams; i++)
		if (apply_one(&key->params[i]))
		{
			changed = true;
			ereport(LOG, (errmsg("pg_ha: parameter \"%s\" set from the config key",
								 key->params[i].name)));
		}
	for (int i = applied->n - 1; i >= 0; i--)
	{
		bool		listed = false;

		for (int j = 0; j < key->nparams && !listed; j++)
			listed = !key->params[j].bad &&
				pg_strcasecmp(key->params[j].name, applied->p[i].name) == 0 &&
				dynconf_param_refused(key->params[j].name, key->params[j].value) == NULL;
		if (!listed)
			changed |= reset_one(i);
	}
	if (!changed)
		return;
	save_state();
	reload_postmaster();
}
