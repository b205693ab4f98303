/*
 * pending_restart.c - what a restart would change on this node: Patroni 4's
 * "pending_restart_reason", for the member key (member.c) and GET /patroni
 * (health.c).  Patroni writes, next to "pending_restart": true,
 *   {"max_connections": {"old_value": "100", "new_value": "200"}, ...}
 * and patronictl list prints each entry as "name: old->new" (it joins the
 * two with "+", so both must be strings).
 *
 * When a process reloads the configuration files, PostgreSQL marks each
 * restart-only setting whose value there differs from the running one
 * (GUC_PENDING_RESTART) but keeps only the running value.  The value that
 * waits is read from the files again here, as pg_file_settings does:
 * postgresql.conf with its includes, then postgresql.auto.conf, the last
 * occurrence winning.  No catalog and no SQL, so the HTTP listener (which
 * has no database) computes it at its reloads and the HA worker for each
 * member document.  A setting the files no longer set goes back to its
 * built-in default at the restart.
 *
 * Values are printed as SHOW prints them: an integer with a unit in the
 * largest unit that divides it ("128MB", "5min"), an enum by its name,
 * booleans on/off.  A setting that may hold a secret (GUC_SUPERUSER_ONLY,
 * or a name such as *conninfo or *password: patroni_param_is_secret) is
 * named, its values never copied.
 */
#include "pg_ha.h"
#include "patroni_codec.h"

#include <cjson/cJSON.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"

#define REASON_VALUE_MAX	200 /* bytes of one value; patronictl hides long ones */
#define REASON_MAX_PARAMS	32	/* settings named; more is not a useful list */
#define REASON_HIDDEN		"[hidden]"
#define REASON_UNKNOWN		"?"	/* the files do not parse now */

/* PostgreSQL's display units, largest first, in the smallest unit of their kind */
typedef struct UnitStep
{
	const char *name;
	int64		size;
} UnitStep;

static const UnitStep memory_steps[] = {
	{"TB", INT64CONST(1) << 40}, {"GB", INT64CONST(1) << 30}, {"MB", INT64CONST(1) << 20},
	{"kB", 1024}, {"B", 1},
};
static const UnitStep time_steps[] = {
	{"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}, {"ms", 1},
};

/* An integer in the setting's base unit, as SHOW prints it: "24MB", "-1". */
static void
format_int(int value, int flags, char *buf, size_t len)
{
	const UnitStep *steps = memory_steps;
	int			nsteps = lengthof(memory_steps);
	int64		scale;

	switch (flags & GUC_UNIT)
	{
		case GUC_UNIT_BYTE:
			scale = 1;
			break;
		case GUC_UNIT_KB:
			scale = 1024;
			break;
		case GUC_UNIT_BLOCKS:
			scale = BLCKSZ;
			break;
		case GUC_UNIT_XBLOCKS:
			scale = XLOG_BLCKSZ;
			break;
		case GUC_UNIT_MB:
			scale = INT64CONST(1) << 20;
			break;
		default:
			steps = time_steps;
			nsteps = lengthof(time_steps);
			scale = (flags & GUC_UNIT) == GUC_UNIT_MS ? 1 :
				(flags & GUC_UNIT) == GUC_UNIT_S ? 1000 :
				(flags & GUC_UNIT) == GUC_UNIT_MIN ? 60000 : 0;
			break;
	}
	/* as PostgreSQL: no unit without one, nor on zero or a negative value */
	if (scale == 0 || value <= 0)
	{
		snprintf(buf, len, "%d", value);
		return;
	}
	for (int i = 0; i < nsteps; i++)
	{
		if (((int64) value * scale) % steps[i].size == 0)
		{
			snprintf(buf, len, INT64_FORMAT "%s", (int64) value * scale / steps[i].size,
					 steps[i].name);
			return;
		}
	}
}

/* A value written in the files, as SHOW will print it; as written if unsure. */
static void
format_file_value(struct config_generic *gen, const char *text, char *buf, size_t len)
{
	int			i;
	double		d;
	bool		b;

	switch (gen->vartype)
	{
		case PGC_INT:
			/* a show hook prints its own way (unix_socket_permissions: octal) */
			if (((struct config_int *) gen)->show_hook == NULL &&
				parse_int(text, &i, gen->flags, NULL))
			{
				format_int(i, gen->flags, buf, len);
				return;
			}
			break;
		case PGC_BOOL:
			if (parse_bool(text, &b))
			{
				strlcpy(buf, b ? "on" : "off", len);
				return;
			}
			break;
		case PGC_REAL:
			if ((gen->flags & GUC_UNIT) == 0 && parse_real(text, &d, gen->flags, NULL))
			{
				snprintf(buf, len, "%g", d);
				return;
			}
			break;
		case PGC_ENUM:
			if (config_enum_lookup_by_name((struct config_enum *) gen, text, &i))
			{
				strlcpy(buf, config_enum_lookup_by_value((struct config_enum *) gen, i), len);
				return;
			}
			break;
		case PGC_STRING:
			break;
	}
	strlcpy(buf, text, len);
}

/* The built-in default, which a setting removed from the files gets back. */
static void
format_boot_value(struct config_generic *gen, char *buf, size_t len)
{
	switch (gen->vartype)
	{
		case PGC_BOOL:
			strlcpy(buf, ((struct config_bool *) gen)->boot_val ? "on" : "off", len);
			break;
		case PGC_INT:
			format_int(((struct config_int *) gen)->boot_val, gen->flags, buf, len);
			break;
		case PGC_REAL:
			snprintf(buf, len, "%g", ((struct config_real *) gen)->boot_val);
			break;
		case PGC_STRING:
			strlcpy(buf, ((struct config_string *) gen)->boot_val ?
					((struct config_string *) gen)->boot_val : "", len);
			break;
		case PGC_ENUM:
			strlcpy(buf, config_enum_lookup_by_value((struct config_enum *) gen,
													 ((struct config_enum *) gen)->boot_val), len);
			break;
	}
}

/*
 * Valid UTF-8 only, no control characters, whole characters within
 * REASON_VALUE_MAX: the value goes into JSON that Python decodes as UTF-8.
 */
static void
clean_value(const char *in, char *out, size_t len)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		n = 0;

	while (*p)
	{
		int			l = pg_utf_mblen(p);

		if (l > 1 && strnlen((const char *) p, l) == (size_t) l && pg_utf8_islegal(p, l))
		{
			if (n + l >= len)
				break;
			memcpy(out + n, p, l);
			n += l;
			p += l;
			continue;
		}
		if (n + 1 >= len)
			break;
		out[n++] = (*p >= 0x20 && *p < 0x7f) ? (char) *p : '?';
		p++;
	}
	out[n] = '\0';
}

/* One entry: the running value and the one a restart gives. */
static void
add_reason(cJSON *reason, struct config_generic *gen, const ConfigVariable *files, bool parsed)
{
	char		old_value[REASON_VALUE_MAX];
	char		new_value[REASON_VALUE_MAX];
	const char *text = NULL;
	cJSON	   *entry;

	if ((gen->flags & GUC_SUPERUSER_ONLY) || patroni_param_is_secret(gen->name))
	{
		strlcpy(old_value, REASON_HIDDEN, sizeof(old_value));
		strlcpy(new_value, REASON_HIDDEN, sizeof(new_value));
	}
	else
	{
		char		raw[REASON_VALUE_MAX];

		for (const ConfigVariable *item = files; item; item = item->next)
			if (item->name && item->value && pg_strcasecmp(item->name, gen->name) == 0)
				text = item->value;
		/* not GUC_SUPERUSER_ONLY: no privilege check, so no catalog access */
		clean_value(GetConfigOptionByName(gen->name, NULL, false), old_value, sizeof(old_value));
		if (!parsed)
			strlcpy(raw, REASON_UNKNOWN, sizeof(raw));
		else if (text)
			format_file_value(gen, text, raw, sizeof(raw));
		else
			format_boot_value(gen, raw, sizeof(raw));
		clean_value(raw, new_value, sizeof(new_value));
	}
	entry = cJSON_AddObjectToObject(reason, gen->name);
	if (entry == NULL ||
		cJSON_AddStringToObject(entry, "old_value", old_value) == NULL ||
		cJSON_AddStringToObject(entry, "new_value", new_value) == NULL)
		elog(ERROR, "out of memory building pending_restart_reason");
}

static char *reason_text = NULL;	/* cJSON's allocation; NULL: none */
static bool reason_known = false;

void
pg_ha_pending_restart_reason_refresh(void)
{
	cJSON	   *reason;

	if (reason_text)
		cJSON_free(reason_text);
	reason_text = NULL;
	reason_known = false;
	reason = pg_ha_pending_restart_reason();
	if (reason)
	{
		reason_text = cJSON_PrintUnformatted(reason);
		cJSON_Delete(reason);
	}
	reason_known = true;
}

const char *
pg_ha_pending_restart_reason_text(void)
{
	if (!reason_known)
		pg_ha_pending_restart_reason_refresh();
	return reason_text;
}

cJSON *
pg_ha_pending_restart_reason(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();
	int			named = 0;
	ConfigVariable *head = NULL;
	ConfigVariable *tail = NULL;
	MemoryContext tmp;
	MemoryContext old;
	bool		parsed;
	cJSON	   *reason;

	if (!pg_ha_pending_restart())
		return NULL;
	reason = cJSON_CreateObject();
	if (reason == NULL)
		elog(ERROR, "out of memory building pending_restart_reason");
	tmp = AllocSetContextCreate(CurrentMemoryContext, "pg_ha pending restart",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(tmp);
	/* errors in the files were logged at the reload: DEBUG1 here */
	parsed = ParseConfigFile(ConfigFileName, true, NULL, 0, 0, DEBUG1, &head, &tail) &&
		(DataDir == NULL ||
		 ParseConfigFile(PG_AUTOCONF_FILENAME, false, NULL, 0, 0, DEBUG1, &head, &tail));
	for (int i = 0; i < n && named < REASON_MAX_PARAMS; i++)
	{
		if ((vars[i]->status & GUC_PENDING_RESTART) == 0)
			continue;
		add_reason(reason, vars[i], head, parsed);
		named++;
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return reason;
}
