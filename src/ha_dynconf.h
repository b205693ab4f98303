/*
 * ha_dynconf.h - the settings a node runs on: its pg_ha.* GUCs merged with
 * the `config` key (Patroni's dynamic configuration), as pure functions
 * (ha_dynconf.c, unit-tested; no backend symbols).
 *
 * Precedence: a field the key sets with a valid, in-range value wins over
 * the GUC (as in Patroni, where the DCS overrides the local file); a field
 * the key leaves out falls back to the GUC; a field that is invalid or out
 * of range is reported (problems[]) and ignored, so the GUC stays in force.
 */
#ifndef PG_HA_DYNCONF_H
#define PG_HA_DYNCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "patroni_codec.h"

/* pg_ha.synchronous_mode's values (SyncMode in ha_sync.h) */
#define DYN_SYNC_OFF	0
#define DYN_SYNC_ON		1
#define DYN_SYNC_QUORUM 2
#define DYN_SYNC_STRICT 3

#define DYN_TTL_MIN			5	/* pg_ha.ttl's range */
#define DYN_TTL_MAX			3600
#define DYN_RETRY_MAX		60	/* pg_ha.etcd_timeout's upper bound, seconds */
#define DYN_NODE_COUNT_MAX	16	/* pg_ha.synchronous_node_count's */
#define DYN_PROBLEMS_MAX	16
#define DYN_PROBLEM_LEN		160

typedef enum DynField
{
	DYN_TTL = 0,
	DYN_LOOP_WAIT,
	DYN_RETRY_TIMEOUT,
	DYN_MAXIMUM_LAG,
	DYN_SYNC_MODE,
	DYN_SYNC_NODE_COUNT,
	DYN_FAILSAFE_MODE,
	DYN_CHECK_TIMELINE,
	DYN_PAUSE,
	DYN_NUM_FIELDS
} DynField;

/* The GUCs' side, as postgresql.conf sets them on this node. */
typedef struct DynLocal
{
	int			ttl;			/* pg_ha.ttl, s */
	int			etcd_timeout_ms;	/* pg_ha.etcd_timeout */
	int64_t		maximum_lag_bytes;	/* pg_ha.maximum_lag_on_failover */
	int			sync_mode;		/* pg_ha.synchronous_mode, DYN_SYNC_* */
	int			sync_node_count;	/* pg_ha.synchronous_node_count */
	bool		failsafe_mode;	/* pg_ha.failsafe_mode */
} DynLocal;

typedef struct DynProblem
{
	char		field[32];		/* the key's name for it */
	char		why[DYN_PROBLEM_LEN];	/* a sentence, never the value itself */
} DynProblem;

/* What the node runs on. */
typedef struct DynSettings
{
	int			ttl;			/* s: the TTL leases are granted with */
	int			loop_wait_ms;	/* pace of the HA cycle */
	int			retry_timeout_ms;	/* bound on one etcd call: the key's
									 * retry_timeout caps pg_ha.etcd_timeout */
	int64_t		maximum_lag_bytes;
	int			sync_mode;		/* DYN_SYNC_* */
	int			sync_node_count;
	bool		failsafe_mode;
	bool		check_timeline; /* shown; pg_ha always checks (ha_failover.c) */
	bool		pause;
	unsigned	from_key;		/* bit (1 << DynField): the key decided it */
	int			nproblems;
	DynProblem	problems[DYN_PROBLEMS_MAX];
} DynSettings;

/* The key's name of a field ("ttl", "synchronous_mode", ...). */
extern const char *dynconf_field_name(DynField f);

/*
 * The effective settings from the decoded key (NULL: no key, or not an
 * object) and the GUCs.  Never fails: whatever the key holds, out is a
 * usable set, and every field of the key that was ignored has a problem.
 */
extern void dynconf_merge(const PatroniDynConfig *key, const DynLocal *local, DynSettings *out);

/* A field's value as JSON ("20", "\"on\"", "true") and where it came from. */
extern void dynconf_value_text(const DynSettings *s, DynField f, char *buf, size_t len);
extern const char *dynconf_source(const DynSettings *s, DynField f);

/* The GUC a field falls back to ("pg_ha.ttl"), or what it derives from. */
extern const char *dynconf_local_name(DynField f);

/*
 * The fields (bit 1 << DynField) whose GUC changed from was to now while
 * the key decides them in s: the new GUC value has no effect, and an
 * operator who just reloaded it should be told so.
 */
extern unsigned dynconf_shadowed(const DynLocal *was, const DynLocal *now, const DynSettings *s);

/*
 * out as JSON for pg_ha.status() and /patroni:
 * {"ttl":{"value":10,"source":"pg_ha.ttl"},...,"problems":[...]}.
 * Returns the length, or -1 when it does not fit.
 */
extern int	dynconf_json(const DynSettings *s, char *buf, size_t len);

/*
 * postgresql.parameters: why pg_ha does not apply parameter name from the
 * config key, or NULL when it may (PostgreSQL still validates the value).
 * Refused: what pg_ha manages itself or relies on (pg_ha.*,
 * synchronous_standby_names, primary_conninfo, primary_slot_name,
 * recovery_target*, hot_standby, restart_after_crash, cluster_name, port,
 * shared_preload_libraries), and values with control characters.
 */
extern const char *dynconf_param_refused(const char *name, const char *value);

#endif							/* PG_HA_DYNCONF_H */
