/*
 * patroni_codec.h - the JSON that Patroni's operators hand to pg_ha
 * (patroni_codec.c): user tags (pg_ha.tags), the `config` key with
 * Patroni's merge rules, and the bodies of POST /switchover,
 * POST /failover, POST /restart and POST /reinitialize.
 *
 * Plain C on cJSON with no backend symbols, so the unit tests and the fuzz
 * target (test/fuzz/fuzz_patroni.c) link it as it is.  Every decoder is
 * bounded by its length argument and never crashes on any input.
 */
#ifndef PG_HA_PATRONI_CODEC_H
#define PG_HA_PATRONI_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PATRONI_TAGS_MAX		1024	/* bytes of pg_ha.tags */
#define PATRONI_CONFIG_MAX		16384	/* bytes of the config key we write */
#define PATRONI_BODY_MAX		4096	/* bytes of a request body we read */
#define PATRONI_NAME_LEN		64
#define PATRONI_TIME_LEN		64

/*
 * pg_ha.tags: a JSON object of user tags whose values are strings,
 * numbers or booleans, no longer than PATRONI_TAGS_MAX; Patroni's own tag
 * names (nofailover, ...) are pg_ha settings and are refused here.  "" is
 * no tags.  False, with a sentence in err, otherwise.
 */
extern bool patroni_tags_validate(const char *json, char *err, size_t errlen);

/*
 * The value of user tag name as Patroni compares it with ?tag_name=value:
 * a string as it is, anything else as Python's str(value).lower()
 * ("true", "2", "2.5").  False when the tag is not set.
 */
extern bool patroni_tag_text(const char *json, const char *name, char *out, size_t outlen);

/*
 * The user tags as members of a JSON object without the braces
 * ("\"dc\":\"east\",\"rack\":2"), malloc'ed; "" when there are none, NULL
 * when json is not valid (validate first).
 */
extern char *patroni_tags_members(const char *json);

/*
 * May a setting of this name hold a secret (a password, a connection
 * string with one, a passphrase, a token)?  Such values never leave the
 * node: pending_restart_reason shows "[hidden]" for them.  Case-insensitive.
 */
extern bool patroni_param_is_secret(const char *name);

/* What the config key says at initialization (the node's settings). */
typedef struct PatroniConfigInit
{
	int			ttl;			/* seconds */
	int			loop_wait;		/* seconds */
	int			retry_timeout;	/* seconds */
	int64_t		maximum_lag_on_failover;	/* bytes */
	int			synchronous_mode;	/* PATRONI_SYNC_*; OFF leaves the three out */
	bool		synchronous_mode_strict;
	int			synchronous_node_count;
} PatroniConfigInit;

/*
 * Patroni's layout: {"ttl":..,"loop_wait":..,"retry_timeout":..,
 * "maximum_lag_on_failover":..[,"synchronous_mode":true|"quorum"
 * [,"synchronous_mode_strict":true],"synchronous_node_count":..],
 * "postgresql":{"parameters":{},"use_pg_rewind":true}}; malloc'ed.
 */
extern char *patroni_config_initial(const PatroniConfigInit *init);

/*
 * Is text (len bytes) a JSON object of at most PATRONI_CONFIG_MAX bytes?
 * What PUT /config accepts.
 */
extern bool patroni_config_check_object(const char *text, size_t len, char *err, size_t errlen);

/*
 * PATCH /config: patch (a JSON object) merged into current (the key's
 * value; "" or not an object counts as {}), with Patroni's patch_config
 * rules: null deletes a key, an object merges into an object, anything
 * else replaces.  *out is the merged document, compact, malloc'ed;
 * *changed whether it differs.  False, with a sentence, when patch is not
 * a JSON object or the result exceeds PATRONI_CONFIG_MAX.
 */
extern bool patroni_config_patch(const char *current, size_t current_len,
								 const char *patch, size_t patch_len,
								 char **out, bool *changed, char *err, size_t errlen);

/*
 * The `config` key as pg_ha reads it on every node (Patroni's dynamic
 * configuration).  The decoder only says what each field holds: whether it
 * is there and of a usable type; ranges and the precedence over the GUCs
 * are ha_dynconf.c's.  A field of the wrong type is PATRONI_FIELD_BAD, the
 * others are still read: one bad field never hides the rest.
 */
typedef enum PatroniFieldState
{
	PATRONI_FIELD_ABSENT = 0,	/* not in the key (or null) */
	PATRONI_FIELD_SET,			/* value holds it */
	PATRONI_FIELD_BAD			/* present, not of a usable type */
} PatroniFieldState;

typedef struct PatroniInt
{
	PatroniFieldState state;
	int64_t		value;			/* an integer, or a string holding one */
} PatroniInt;

typedef struct PatroniBool
{
	PatroniFieldState state;
	bool		value;			/* true/false, or "true"/"false"/"on"/"off" */
} PatroniBool;

#define PATRONI_PARAMS_MAX		64	/* postgresql.parameters read */
#define PATRONI_PARAM_NAME_LEN	64
#define PATRONI_PARAM_VALUE_LEN 1024

typedef struct PatroniParam
{
	char		name[PATRONI_PARAM_NAME_LEN];
	char		value[PATRONI_PARAM_VALUE_LEN];	/* as postgresql.conf would say it */
	bool		bad;			/* name or value unusable: value is "" */
} PatroniParam;

/* synchronous_mode as Patroni spells it */
#define PATRONI_SYNC_OFF	0	/* false, "off" */
#define PATRONI_SYNC_ON		1	/* true, "on" */
#define PATRONI_SYNC_QUORUM 2	/* "quorum" */

typedef struct PatroniDynConfig
{
	PatroniInt	ttl;
	PatroniInt	loop_wait;
	PatroniInt	retry_timeout;
	PatroniInt	maximum_lag_on_failover;
	PatroniInt	synchronous_node_count;
	PatroniInt	synchronous_mode;	/* value: PATRONI_SYNC_* */
	PatroniBool synchronous_mode_strict;
	PatroniBool failsafe_mode;
	PatroniBool check_timeline;
	PatroniBool pause;
	bool		params_present; /* postgresql.parameters is an object */
	int			nparams;
	int			params_dropped; /* beyond PATRONI_PARAMS_MAX */
	PatroniParam params[PATRONI_PARAMS_MAX];
} PatroniDynConfig;

/*
 * Decodes the config key's value (len bytes).  False when it is not a
 * JSON object of at most PATRONI_CONFIG_MAX bytes: then every field is
 * absent.  Duplicate names: the last one counts, as in Python.
 */
extern bool patroni_config_decode(const char *text, size_t len, PatroniDynConfig *out);

/* The body of POST /switchover or /failover. */
typedef struct PatroniFailoverBody
{
	char		leader[PATRONI_NAME_LEN];	/* "" = not given */
	char		candidate[PATRONI_NAME_LEN];	/* "candidate" or "member"; "" = not given */
	char		scheduled_at[PATRONI_TIME_LEN]; /* "" = not given (or null) */
} PatroniFailoverBody;

/*
 * Decodes a JSON object with optional string (or null) fields leader,
 * candidate (or member, Patroni's older name) and scheduled_at.  False,
 * with a sentence, when it is not such an object or a field is too long
 * or not a string.  Names are not checked here (the request codec does).
 */
extern bool patroni_failover_body_decode(const char *text, size_t len, PatroniFailoverBody *out,
										 char *err, size_t errlen);

/* The body of POST /restart: Patroni's conditions, and when. */
typedef struct PatroniRestartBody
{
	bool		restart_pending;	/* only if a setting waits for a restart */
	int			role;			/* 0 any, 1 primary ("master" too), 2 replica */
	int			postgres_version;	/* only if running an older one; 0 = not given */
	bool		scheduled;		/* "schedule" was given */
	int64_t		schedule_us;	/* its time, Unix epoch microseconds (decoded) */
} PatroniRestartBody;

/*
 * Decodes the body of POST /restart ("" or {} restarts unconditionally
 * and at once).  Returns 0, or the HTTP status of Patroni's refusal with
 * its sentence in err, checked key by key in the body's order as Patroni
 * does: 400 for an unknown key, a role other than primary, master or
 * replica, a version that is not "15", "15.4" or 150004, a timeout that
 * is not a positive number, a schedule without a zone; 422 for a schedule
 * that is not an ISO 8601 time (ha_time_parse: years 1970-9999) or is not
 * after now_us.  out->scheduled is set whenever the body (a JSON object)
 * has a "schedule" key, even when the answer is a refusal: Patroni's
 * paused-state check comes before the others.
 */
extern int	patroni_restart_body_decode(const char *text, size_t len, int64_t now_us,
										PatroniRestartBody *out, char *err, size_t errlen);

/*
 * Patroni's restart_matches: why the node should not restart under b's
 * conditions (its words: "host role mismatch", "postgres version
 * mismatch", "pending restart flag is not set"), or NULL when it should.
 */
extern const char *patroni_restart_unmet(const PatroniRestartBody *b, bool is_primary,
										 bool restart_pending, int server_version_num);

/* What a scheduled restart calls for now (Patroni's should_run_scheduled_action). */
typedef enum PatroniRestartTiming
{
	PATRONI_RESTART_WAIT = 0,	/* its time has not come */
	PATRONI_RESTART_DUE,		/* now, or up to 1.5 loop_wait late */
	PATRONI_RESTART_STALE		/* later than that: dropped unrun */
} PatroniRestartTiming;

extern PatroniRestartTiming patroni_restart_timing(int64_t at_us, int64_t now_us, int64_t loop_wait_us);

/*
 * The "scheduled_restart" object of the member key: {"schedule": ISO 8601
 * in UTC, "postmaster_start_time": the postmaster's start (Unix epoch
 * microseconds) in Patroni's format, and the conditions given}; GET
 * /patroni shows it without postmaster_start_time (NULL).  Returns the
 * length, or -1 when buf is too small.
 */
#define PATRONI_SCHEDULE_JSON_LEN 256
extern int	patroni_restart_schedule_json(const PatroniRestartBody *b, const int64_t *postmaster_start_us,
										  char *buf, size_t len);

/* The body of POST /reinitialize. */
typedef struct PatroniReinitBody
{
	bool		force;			/* request it again while one is under way */
	bool		from_leader;	/* base backup from the leader, not a clonefrom member */
} PatroniReinitBody;

/*
 * Decodes the body of POST /reinitialize ("" or {} is no option).  Each
 * option is read as Patroni's parse_bool does: true, 1, "true", "on",
 * "yes" or "1" (any case) turn it on, any other value leaves it off, and
 * other keys are ignored.  Returns 0, or 400 with a sentence in err when
 * the body is not a JSON object.
 */
extern int	patroni_reinit_body_decode(const char *text, size_t len, PatroniReinitBody *out,
									   char *err, size_t errlen);

/* Is text a JSON array (the history key's value)? */
extern bool patroni_is_json_array(const char *text, size_t len);

#endif							/* PG_HA_PATRONI_CODEC_H */
