/*
 * config_check.c - refuse to manage a node whose pg_ha configuration did not
 * take effect as written.
 *
 * PostgreSQL reads postgresql.conf before it loads shared_preload_libraries,
 * so every pg_ha.* line first becomes a placeholder.  When _PG_init defines
 * the real parameter, a value its check refuses is only a WARNING in the
 * log and the built-in default stays; MarkGUCPrefixReserved likewise only
 * WARNs about an unknown pg_ha.* name, and drops it.  The server starts
 * either way.  But a default namespace, node name or etcd endpoint list
 * makes the node a member of another cluster, or another member: with
 * pg_ha.namespace = 'pgx' refused, a restarted primary took the leader key
 * under /service while its replicas promoted one of theirs under /pgx, and
 * both accepted writes (issue 9, defect 12).  So the HA worker must not act
 * on such a configuration at all: it stays "misconfigured", takes no lease
 * (the commit fence refuses writes, /primary answers 503), names the line
 * in the log and in pg_ha.status(), and pg_ha_key() refuses to build keys.
 *
 * How a refused line is found.  _PG_init notes every pg_ha.* placeholder
 * (name, value, where it came from) before it defines the parameters, and
 * looks again after MarkGUCPrefixReserved: a name that is gone was unknown,
 * and a parameter whose value now comes from a lower source than the
 * placeholder's (the default instead of the configuration file or the
 * command line) refused the value.  This is exactly what the postmaster
 * started with, whatever happens to the files later, and every process
 * forked from the postmaster inherits the record (pg_ha is Linux-only; an
 * EXEC_BACKEND build would have to pass it through shared memory).
 *
 * Why not pg_file_settings (read through SPI in the worker), the other way
 * considered.  Tried on PostgreSQL 15.20, it shows applied = false with
 * error "setting could not be applied" for a refused value, a value out of
 * range, an unknown pg_ha.* name, *and* for a valid or invalid value of a
 * restart-only parameter edited after start; an earlier duplicate of a name
 * shows applied = false and no error.  It re-reads the files as they are
 * now, not as the server started: a line corrected after a refused start
 * (restart still pending) is indistinguishable from a harmless pending
 * edit, while the server still runs on the default.  And it does not see
 * -c options of the postmaster.  The worker may start long after the server
 * (restart after an error, or after a crash-restart for demotion), so only
 * the record taken at start answers the question that matters: does this
 * process run with what the operator wrote?
 *
 * Names pg_ha falls back on are checked here like the parameters are:
 * cluster_name (when pg_ha.cluster is empty) and the host name (when
 * pg_ha.node_name is empty) become parts of etcd keys, and cluster_name =
 * 'sec/members/evil' wrote keys outside the cluster's prefix.
 */
#include "pg_ha.h"

#include <unistd.h>

#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"

/* A pg_ha.* setting given before the parameters were defined. */
typedef struct NotedSetting
{
	char	   *name;
	char	   *value;
	char	   *sourcefile;		/* NULL unless it came from a file */
	int			sourceline;
	GucSource	source;
	bool		unknown;		/* not a pg_ha parameter at all */
} NotedSetting;

/* postmaster's TopMemoryContext, inherited by every child */
static List *noted = NIL;
static List *rejected = NIL;	/* the noted settings that did not take effect */

static int	problems;			/* found by the running pg_ha_config_check() */

/* All GUC variables, placeholders included; PG16 changed the call. */
static struct config_generic **
all_variables(int *n)
{
#if PG_VERSION_NUM >= 160000
	return get_guc_variables(n);
#else
	*n = GetNumConfigOptions();
	return get_guc_variables();
#endif
}

static struct config_generic *
find_variable(const char *name)
{
	int			n;
	struct config_generic **vars = all_variables(&n);

	for (int i = 0; i < n; i++)
	{
		if (pg_strcasecmp(vars[i]->name, name) == 0)
			return vars[i];
	}
	return NULL;
}

void
pg_ha_config_note_placeholders(void)
{
	int			n;
	struct config_generic **vars = all_variables(&n);
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	for (int i = 0; i < n; i++)
	{
		struct config_generic *gen = vars[i];
		char	   *value;
		NotedSetting *s;

		if ((gen->flags & GUC_CUSTOM_PLACEHOLDER) == 0 ||
			pg_strncasecmp(gen->name, "pg_ha.", 6) != 0 ||
			gen->source == PGC_S_DEFAULT)
			continue;
		value = *((struct config_string *) gen)->variable;
		s = palloc0(sizeof(NotedSetting));
		s->name = pstrdup(gen->name);
		s->value = pstrdup(value ? value : "");
		s->sourcefile = gen->sourcefile ? pstrdup(gen->sourcefile) : NULL;
		s->sourceline = gen->sourceline;
		s->source = gen->source;
		noted = lappend(noted, s);
	}
	MemoryContextSwitchTo(old);
}

void
pg_ha_config_find_rejected(void)
{
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	foreach(lc, noted)
	{
		NotedSetting *s = lfirst(lc);
		struct config_generic *gen = find_variable(s->name);

		if (gen == NULL || (gen->flags & GUC_CUSTOM_PLACEHOLDER) != 0)
			s->unknown = true;
		else if (gen->source >= s->source)
			continue;			/* took effect */
		rejected = lappend(rejected, s);
	}
	MemoryContextSwitchTo(old);
}

bool
pg_ha_config_rejected_at_start(void)
{
	return rejected != NIL;
}

/* "file:line" or "command line", as a person would look for it. */
static char *
location(const char *file, int line, GucSource source)
{
	if (file != NULL)
		return psprintf("%s:%d", file, line);
	return pstrdup(GucSource_Names[source]);
}

/*
 * The error the value got at start, for the log and last_error: the
 * postmaster's WARNING is in the log already, but may be far back or
 * rotated away.  Validating again changes nothing (changeVal = false).
 */
static void
explain_rejection(const NotedSetting *s, char **message, char **detail)
{
	MemoryContext mcxt = CurrentMemoryContext;

	*detail = NULL;
	if (s->unknown)
	{
		*message = psprintf("unrecognized configuration parameter \"%s\"", s->name);
		*detail = pstrdup("The prefix \"pg_ha\" is reserved for the parameters pg_ha defines.");
		return;
	}
	*message = psprintf("value \"%s\" of parameter \"%s\" was refused when the server started",
						s->value, s->name);
	PG_TRY();
	{
		(void) set_config_option(s->name, s->value, PGC_POSTMASTER, s->source,
								 GUC_ACTION_SET, false, ERROR, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		FlushErrorState();
		*message = edata->message;
		*detail = edata->detail;
	}
	PG_END_TRY();
}

/* One problem: a WARNING of its own; the first also goes to errbuf. */
static void
report(const char *where, const char *message, const char *detail,
	   char *errbuf, size_t errlen)
{
	ereport(WARNING,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("pg_ha: not managing this node: %s: %s", where, message),
			 detail ? errdetail_internal("%s", detail) : 0,
			 errhint("Correct the setting and restart the server. Until then this node takes no leader key, refuses writes and answers 503 on /primary.")));
	if (problems++ == 0)
		snprintf(errbuf, errlen, "%s: %s", where, message);
}

bool
pg_ha_config_check(char *errbuf, size_t errlen)
{
	ListCell   *lc;

	errbuf[0] = '\0';
	problems = 0;
	foreach(lc, rejected)
	{
		NotedSetting *s = lfirst(lc);
		char	   *message;
		char	   *detail;

		explain_rejection(s, &message, &detail);
		report(location(s->sourcefile, s->sourceline, s->source), message, detail,
			   errbuf, errlen);
	}

	if (pg_ha_cluster[0] == '\0')
	{
		struct config_generic *gen = find_variable("cluster_name");
		const char *why;

		if (cluster_name == NULL || cluster_name[0] == '\0')
			report("pg_ha.cluster", "neither pg_ha.cluster nor cluster_name is set", NULL,
				   errbuf, errlen);
		else if ((why = pg_ha_name_problem(cluster_name, "cluster name")) != NULL)
			report(location(gen ? gen->sourcefile : NULL, gen ? gen->sourceline : 0,
							gen ? gen->source : PGC_S_DEFAULT),
				   psprintf("cluster_name \"%s\" cannot be the cluster name in etcd keys (pg_ha.cluster is empty)",
							cluster_name),
				   why, errbuf, errlen);
	}

	if (pg_ha_node_name[0] == '\0')
	{
		char		host[256];
		const char *why;

		if (gethostname(host, sizeof(host) - 1) != 0)
			host[0] = '\0';
		host[sizeof(host) - 1] = '\0';
		if (host[0] == '\0')
			report("pg_ha.node_name", "pg_ha.node_name is not set and the host name is unknown", NULL,
				   errbuf, errlen);
		else if ((why = pg_ha_name_problem(host, "host name")) != NULL)
			report("pg_ha.node_name",
				   psprintf("the host name \"%s\" cannot be the member name in etcd keys (pg_ha.node_name is empty)",
							host),
				   why, errbuf, errlen);
	}

	if ((pg_ha_etcd_cert[0] == '\0') != (pg_ha_etcd_key[0] == '\0'))
		report("pg_ha.etcd_cert", "pg_ha.etcd_cert and pg_ha.etcd_key must be set together", NULL,
			   errbuf, errlen);

	if (problems > 1)
	{
		/* the end of last_error survives a long path at its start */
		char		more[64];
		size_t		len = strlen(errbuf);

		snprintf(more, sizeof(more), " (and %d more problems, see the server log)", problems - 1);
		if (len + strlen(more) >= errlen)
			len = errlen - strlen(more) - 1;
		strlcpy(errbuf + len, more, errlen - len);
	}
	return problems == 0;
}
