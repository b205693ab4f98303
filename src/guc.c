/*
 * guc.c - pg_ha's configuration parameters and their validation.
 *
 * Every value is checked when it is set (postgresql.conf, ALTER SYSTEM,
 * SET): a bad one is refused with a message naming the parameter and what
 * is wrong, rather than discovered later by the worker.  The reference for
 * each parameter is docs/configuration.md.
 *
 * Settings that name this node in etcd (cluster, namespace, node name, TTL)
 * need a restart: changing them under a running worker would orphan its
 * keys.  etcd connection settings are reloadable.
 */
#include "pg_ha.h"

#define PG_HA_HTTP_BACKEND
#include "http.h"

#include <limits.h>
#include <unistd.h>

#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "http_tls.h"
#include "patroni_codec.h"

char	   *pg_ha_etcd_endpoints = NULL;
char	   *pg_ha_etcd_cacert = NULL;
char	   *pg_ha_etcd_cert = NULL;
char	   *pg_ha_etcd_key = NULL;
char	   *pg_ha_etcd_user = NULL;
char	   *pg_ha_etcd_password_file = NULL;
int			pg_ha_etcd_timeout_ms = 2000;
char	   *pg_ha_namespace = NULL;
char	   *pg_ha_cluster = NULL;
char	   *pg_ha_node_name = NULL;
int			pg_ha_ttl = 10;
char	   *pg_ha_connect_address = NULL;
char	   *pg_ha_api_listen = NULL;
bool		pg_ha_fencing = true;
int			pg_ha_maximum_lag_on_failover = 1024;
bool		pg_ha_nofailover = false;
bool		pg_ha_noloadbalance = false;
char	   *pg_ha_replicatefrom = NULL;
bool		pg_ha_clonefrom = false;
bool		pg_ha_nostream = false;
int			pg_ha_failover_priority = 1;
char	   *pg_ha_tags = NULL;
char	   *pg_ha_database = NULL;
char	   *pg_ha_replication_conninfo = NULL;
char	   *pg_ha_metrics_role = NULL;

/* TLS and authentication of the HTTP listeners (http_tls.c, http_auth.c) */
char	   *pg_ha_api_certfile = NULL;
char	   *pg_ha_api_keyfile = NULL;
char	   *pg_ha_api_cafile = NULL;
int			pg_ha_api_verify_client = HTTP_TLS_VERIFY_NONE;
char	   *pg_ha_metrics_certfile = NULL;
char	   *pg_ha_metrics_keyfile = NULL;
char	   *pg_ha_metrics_cafile = NULL;
int			pg_ha_metrics_verify_client = HTTP_TLS_VERIFY_NONE;
char	   *pg_ha_metrics_auth_file = NULL;

/* Patroni's restapi.verify_client values */
static const struct config_enum_entry verify_client_options[] = {
	{"none", HTTP_TLS_VERIFY_NONE, false},
	{"optional", HTTP_TLS_VERIFY_OPTIONAL, false},
	{"required", HTTP_TLS_VERIFY_REQUIRED, false},
	{NULL, 0, false}
};

static bool
check_endpoints(char **newval, void **extra, GucSource source)
{
	char		err[256];

	if (etcd_parse_endpoints(*newval, NULL, ETCD_MAX_ENDPOINTS, err, sizeof(err)) < 0)
	{
		/*
		 * Not PostgreSQL's "invalid value for parameter ...: <value>" when
		 * the value may hold a password (or a token in a query): this
		 * message goes to the log and, at server start, to pg_ha.status().
		 * err never quotes such a value.
		 */
		if (strpbrk(*newval, "@?#") != NULL)
			GUC_check_errmsg("invalid value for parameter \"pg_ha.etcd_endpoints\": %s", err);
		GUC_check_errdetail("%s.", err);
		GUC_check_errhint("Use a comma-separated list such as \"http://10.0.0.1:2379,http://10.0.0.2:2379\".");
		return false;
	}
	return true;
}

/*
 * Why name cannot be part of an etcd key, or NULL when it can: letters,
 * digits, '_', '-' and '.', not empty, shorter than PG_HA_NAME_LEN.  The
 * parameters are checked with it when they are set, and config_check.c
 * checks the names pg_ha falls back on (cluster_name, the host name) with it
 * too.  what names the value in the message ("node name").  The result is
 * overwritten by the next call.
 */
const char *
pg_ha_name_problem(const char *name, const char *what)
{
	static char why[256];
	size_t		len = strlen(name);

	if (len == 0)
	{
		snprintf(why, sizeof(why), "The %s must not be empty.", what);
		return why;
	}
	if (len >= PG_HA_NAME_LEN)
	{
		snprintf(why, sizeof(why), "The %s must be shorter than %d bytes.", what, PG_HA_NAME_LEN);
		return why;
	}
	for (const char *p = name; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
		{
			snprintf(why, sizeof(why),
					 "The %s \"%s\" contains '%c'; only letters, digits, '_', '-' and '.' are allowed.",
					 what, name, *p);
			return why;
		}
	}
	return NULL;
}

static bool
valid_name(const char *name, bool allow_empty, const char *what)
{
	const char *why;

	if (name[0] == '\0' && allow_empty)
		return true;
	why = pg_ha_name_problem(name, what);
	if (why != NULL)
	{
		GUC_check_errdetail("%s", why);
		return false;
	}
	return true;
}

static bool
check_cluster(char **newval, void **extra, GucSource source)
{
	return valid_name(*newval, true, "cluster name");
}

static bool
check_node_name(char **newval, void **extra, GucSource source)
{
	return valid_name(*newval, true, "node name");
}

static bool
check_replicatefrom(char **newval, void **extra, GucSource source)
{
	return valid_name(*newval, true, "replicatefrom member name");
}

static bool
check_namespace(char **newval, void **extra, GucSource source)
{
	const char *ns = *newval;
	size_t		len = strlen(ns);

	if (len == 0 || ns[0] != '/')
	{
		GUC_check_errdetail("The namespace must start with '/', like \"/service\".");
		return false;
	}
	if (len > 128)
	{
		GUC_check_errdetail("The namespace must be at most 128 bytes.");
		return false;
	}
	for (const char *p = ns; *p; p++)
	{
		if (p[0] == '/' && p[1] == '/')
		{
			GUC_check_errdetail("The namespace must not contain \"//\".");
			return false;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.' || *p == '/'))
		{
			GUC_check_errdetail("The namespace contains '%c'; only letters, digits, '_', '-', '.' and '/' are allowed.", *p);
			return false;
		}
	}
	return true;
}

/*
 * "host:port" or "[v6addr]:port".  Returns false with a GUC detail message.
 * allow_empty: "" is accepted (derived or disabled).
 */
static bool
valid_host_port(const char *value, bool allow_empty, const char *example)
{
	const char *colon;
	char	   *end;
	long		port;

	if (value[0] == '\0')
	{
		if (allow_empty)
			return true;
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	if (strlen(value) > 255)
	{
		GUC_check_errdetail("The value must be at most 255 bytes.");
		return false;
	}
	colon = strrchr(value, ':');
	if (colon == NULL || colon == value)
	{
		GUC_check_errdetail("\"%s\" is not of the form host:port.", value);
		GUC_check_errhint("For example \"%s\".", example);
		return false;
	}
	for (const char *p = value; p < colon; p++)
	{
		if (*p <= ' ' || *p == '/' || *p == '@' || *p == '"' || *p == '\'' ||
			*p == '\\' || (unsigned char) *p >= 0x7f)
		{
			GUC_check_errdetail("The host part of \"%s\" contains an invalid character.", value);
			return false;
		}
	}
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535)
	{
		GUC_check_errdetail("The port in \"%s\" must be a number from 1 to 65535.", value);
		return false;
	}
	return true;
}

static bool
check_connect_address(char **newval, void **extra, GucSource source)
{
	return valid_host_port(*newval, true, "10.0.0.11:5432");
}

static bool
check_api_listen(char **newval, void **extra, GucSource source)
{
	return valid_host_port(*newval, true, "0.0.0.0:8008");
}

static bool
check_file_path(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] != '\0' && (*newval)[0] != '/')
	{
		GUC_check_errdetail("\"%s\" is not an absolute path.", *newval);
		return false;
	}
	return true;
}

/*
 * The key and password files: an absolute path, and a file other users
 * cannot read (checked again whenever it is read: its mode may change).
 * The message says why, not only the value: at server start it is all
 * pg_ha.status() shows.
 */
static bool
check_secret_file(const char *name, char **newval, void **extra, GucSource source)
{
	char		err[1024];

	if (!check_file_path(newval, extra, source))
		return false;
	if (!etcd_secret_file_ok(*newval, err, sizeof(err)))
	{
		GUC_check_errmsg("invalid value for parameter \"%s\": file %s", name, err);
		GUC_check_errhint("%s", ETCD_SECRET_FILE_RULE);
		return false;
	}
	return true;
}

/* pg_ha.tags: a JSON object of user tags (patroni_codec.c says which). */
static bool
check_tags(char **newval, void **extra, GucSource source)
{
	char		err[256];

	if (!patroni_tags_validate(*newval, err, sizeof(err)))
	{
		GUC_check_errdetail("%s", err);
		return false;
	}
	return true;
}

static bool
check_etcd_key(char **newval, void **extra, GucSource source)
{
	return check_secret_file("pg_ha.etcd_key", newval, extra, source);
}

static bool
check_etcd_password_file(char **newval, void **extra, GucSource source)
{
	return check_secret_file("pg_ha.etcd_password_file", newval, extra, source);
}

static bool
check_etcd_user(char **newval, void **extra, GucSource source)
{
	for (const char *p = *newval; *p; p++)
	{
		if ((unsigned char) *p < 0x20)
		{
			GUC_check_errdetail("The etcd user name contains a control character.");
			return false;
		}
	}
	return true;
}


/*
 * The role the metrics collector connects as.  Empty would mean the
 * bootstrap superuser, which is what this setting exists to avoid: GET
 * /metrics needs no authentication and the collector runs SQL in a database
 * other roles can create objects in.
 */
static bool
check_metrics_role(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0')
	{
		GUC_check_errdetail("The metrics collector must run as a role that is not a superuser.");
		GUC_check_errhint("Use a role that is a member of pg_monitor, such as the default \"pgha_monitor\".");
		return false;
	}
	if (strlen(*newval) >= NAMEDATALEN)
	{
		GUC_check_errdetail("A role name must be shorter than %d bytes.", NAMEDATALEN);
		return false;
	}
	return true;
}
static void pg_ha_define_failsafe_gucs(void);

void
pg_ha_define_gucs(void)
{
	DefineCustomStringVariable("pg_ha.etcd_endpoints",
							   "Comma-separated etcd client URLs (http:// or https://).",
							   "The client sticks to the endpoint that last answered and moves on to the next when it fails.",
							   &pg_ha_etcd_endpoints, "http://127.0.0.1:2379",
							   PGC_SIGHUP, 0, check_endpoints, NULL, NULL);
	DefineCustomStringVariable("pg_ha.etcd_cacert",
							   "CA certificate file used to verify etcd's TLS certificate.",
							   "Empty uses the system's trusted CAs.",
							   &pg_ha_etcd_cacert, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.etcd_cert",
							   "Client certificate file for etcd TLS client authentication.",
							   NULL,
							   &pg_ha_etcd_cert, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.etcd_key",
							   "Private key file of pg_ha.etcd_cert.",
							   NULL,
							   &pg_ha_etcd_key, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_etcd_key, NULL, NULL);
	DefineCustomStringVariable("pg_ha.etcd_user",
							   "etcd user name for password authentication (empty: none).",
							   NULL,
							   &pg_ha_etcd_user, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_etcd_user, NULL, NULL);
	/*
	 * The password itself is no parameter: postgres logs every parameter a
	 * reload changes ("parameter ... changed to ..."), whatever its flags.
	 * A file only the server's user can read keeps it out of logs, SHOW,
	 * pg_settings and pg_file_settings.
	 */
	DefineCustomStringVariable("pg_ha.etcd_password_file",
							   "File holding the password of pg_ha.etcd_user (first line).",
							   "Make it readable by the server's operating system user only.",
							   &pg_ha_etcd_password_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_etcd_password_file, NULL, NULL);
	DefineCustomIntVariable("pg_ha.etcd_timeout",
							"Upper bound on one etcd request, all endpoints included.",
							"Keep it well below pg_ha.ttl / 3 so that a lease renewal can be retried before the lease runs out.",
							&pg_ha_etcd_timeout_ms, 2000, 100, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.namespace",
							   "etcd key prefix above the cluster (Patroni's \"namespace\").",
							   NULL,
							   &pg_ha_namespace, "/service",
							   PGC_POSTMASTER, 0, check_namespace, NULL, NULL);
	DefineCustomStringVariable("pg_ha.cluster",
							   "Cluster name (Patroni's \"scope\"); empty uses cluster_name.",
							   NULL,
							   &pg_ha_cluster, "",
							   PGC_POSTMASTER, 0, check_cluster, NULL, NULL);
	DefineCustomStringVariable("pg_ha.node_name",
							   "This node's member name; empty uses the host name.",
							   NULL,
							   &pg_ha_node_name, "",
							   PGC_POSTMASTER, 0, check_node_name, NULL, NULL);
	DefineCustomIntVariable("pg_ha.ttl",
							"Leader lease time to live.",
							"A primary that cannot renew its lease loses leadership within this time; a failed primary is replaced after it.",
							&pg_ha_ttl, 10, 5, 3600,
							PGC_POSTMASTER, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.connect_address",
							   "host:port other nodes and clients use to reach this postgres (conn_url).",
							   "Empty uses the host name and the port setting.",
							   &pg_ha_connect_address, "",
							   PGC_POSTMASTER, 0, check_connect_address, NULL, NULL);
	DefineCustomStringVariable("pg_ha.api_listen",
							   "host:port of the HTTP health API (api_url); empty disables it.",
							   NULL,
							   &pg_ha_api_listen, "0.0.0.0:8008",
							   PGC_POSTMASTER, 0, check_api_listen, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.fencing",
							 "Refuse commits on a primary that does not hold a valid leader lease.",
							 "Turning this off lets a primary cut off from etcd keep accepting writes while another node may be promoted: two primaries.",
							 &pg_ha_fencing, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.maximum_lag_on_failover",
							"A replica further behind the last known leader position than this does not take over.",
							NULL,
							&pg_ha_maximum_lag_on_failover, 1024, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.nofailover",
							 "Never promote this node automatically (tag nofailover).",
							 NULL,
							 &pg_ha_nofailover, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.noloadbalance",
							 "Keep this replica out of read load balancing (tag noloadbalance).",
							 NULL,
							 &pg_ha_noloadbalance, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.replicatefrom",
							   "Stream from this member instead of the leader (tag replicatefrom, cascading replication).",
							   "Used while that member is a streaming standby on the leader's timeline; otherwise this node streams from the leader. Empty: always the leader.",
							   &pg_ha_replicatefrom, "",
							   PGC_SIGHUP, 0, check_replicatefrom, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.clonefrom",
							 "Offer this standby as the source of new clones (tag clonefrom).",
							 "pg_hactl clone takes its base backup from such a member while it streams on the leader's timeline, instead of from the leader.",
							 &pg_ha_clonefrom, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.nostream",
							 "Do not stream WAL: replay only what restore_command brings (tag nostream).",
							 "pg_ha then keeps primary_conninfo empty on this standby.",
							 &pg_ha_nostream, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.failover_priority",
							"Among equally advanced replicas, the higher priority takes over; 0 never does.",
							NULL,
							&pg_ha_failover_priority, 1, 0, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.tags",
							   "User tags of this node, a JSON object, as Patroni's tags section.",
							   "Published in the member key and /patroni; health checks filter on them with ?tag_<name>=<value>.",
							   &pg_ha_tags, "",
							   PGC_SIGHUP, 0, check_tags, NULL, NULL);
	DefineCustomStringVariable("pg_ha.database",
							   "Database the HA worker connects to (for ALTER SYSTEM and status reads).",
							   NULL,
							   &pg_ha_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.replication_conninfo",
							   "Connection options a replica uses to stream from the leader, without host and port.",
							   "pg_ha adds host, port and application_name from the leader's member key. Empty keeps the options of the current primary_conninfo, or connects as the bootstrap superuser.",
							   &pg_ha_replication_conninfo, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	/*
	 * TLS and authentication of the HTTP listeners, one set per listener
	 * with Patroni's restapi.* names.  All reloadable: the listener rebuilds
	 * its TLS context on SIGHUP (new connections use it; a bad new file
	 * keeps the old context).  The files are read by the listener worker,
	 * never shown: a key's path is superuser-only like pg_ha.etcd_key.
	 */
	DefineCustomStringVariable("pg_ha.api_certfile",
							   "Certificate file (PEM, chain allowed) of the health API; set, the API speaks only TLS.",
							   "Empty serves plain HTTP.",
							   &pg_ha_api_certfile, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.api_keyfile",
							   "Private key file of pg_ha.api_certfile; empty reads the key from the certificate file.",
							   "Refused when group or others can read it.",
							   &pg_ha_api_keyfile, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.api_cafile",
							   "CA certificates that verify the health API's clients' certificates.",
							   NULL,
							   &pg_ha_api_cafile, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomEnumVariable("pg_ha.api_verify_client",
							 "Client certificates on the health API: none, optional (verified if sent) or required.",
							 "optional and required need pg_ha.api_cafile.",
							 &pg_ha_api_verify_client, HTTP_TLS_VERIFY_NONE, verify_client_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.metrics_certfile",
							   "Certificate file (PEM, chain allowed) of the metrics listener; set, it speaks only TLS.",
							   "Empty serves plain HTTP.",
							   &pg_ha_metrics_certfile, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.metrics_keyfile",
							   "Private key file of pg_ha.metrics_certfile; empty reads the key from the certificate file.",
							   "Refused when group or others can read it.",
							   &pg_ha_metrics_keyfile, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path, NULL, NULL);
	DefineCustomStringVariable("pg_ha.metrics_cafile",
							   "CA certificates that verify the metrics listener's clients' certificates.",
							   NULL,
							   &pg_ha_metrics_cafile, "",
							   PGC_SIGHUP, 0, check_file_path, NULL, NULL);
	DefineCustomEnumVariable("pg_ha.metrics_verify_client",
							 "Client certificates on the metrics listener: none, optional (verified if sent) or required.",
							 "optional and required need pg_ha.metrics_cafile.",
							 &pg_ha_metrics_verify_client, HTTP_TLS_VERIFY_NONE, verify_client_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.metrics_auth_file",
							   "File of \"username:password\" lines the metrics listener requires (HTTP basic auth); empty: none.",
							   "Make it readable by the server's operating system user only, and use TLS with it.",
							   &pg_ha_metrics_auth_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path, NULL, NULL);

	/* HTTP listener: connection budgets (issue 11) */
	DefineCustomIntVariable("pg_ha.http_max_connections",
							"Most connections the health API port, and separately the metrics port, keeps open.",
							"When a port is full, a new connection takes the place of the least recently active one that is idle or has not sent a complete request. Lowered to fit the listener's open file limit.",
							&pg_ha_http_max_connections, 1000, 16, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.http_max_connections_per_address",
							"Most connections one client address keeps open on one HTTP port; 0 means half of pg_ha.http_max_connections.",
							"IPv6 clients count by /64 prefix. Beyond it, a new connection from that address takes the place of that address's least recently active idle one.",
							&pg_ha_http_max_connections_per_address, 0, 0, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	/* metrics collector identity (issue 11): see metrics_pg.c */
	DefineCustomStringVariable("pg_ha.metrics_role",
							   "Role the metrics collector connects as: not a superuser, a member of pg_monitor.",
							   "The collector refuses to run its queries as a superuser. CREATE EXTENSION pg_ha creates the role when it is missing.",
							   &pg_ha_metrics_role, "pgha_monitor",
							   PGC_POSTMASTER, 0, check_metrics_role, NULL, NULL);

	pg_ha_define_sync_gucs();
	pg_ha_define_failsafe_gucs();
}

/*
 * The fallbacks are validated like the parameters: a cluster_name or host
 * name that cannot be part of an etcd key yields "", which nothing uses as a
 * key (pg_ha_key() refuses it, the worker reports the node misconfigured,
 * the archive refuses to run without a cluster name).  cluster_name =
 * 'sec/members/evil' once wrote keys outside the cluster's prefix.
 */
const char *
pg_ha_effective_cluster(void)
{
	if (pg_ha_cluster && pg_ha_cluster[0])
		return pg_ha_cluster;
	if (cluster_name && pg_ha_name_problem(cluster_name, "cluster name") == NULL)
		return cluster_name;
	return "";
}

const char *
pg_ha_effective_node_name(void)
{
	static char hostname[256];
	static bool looked_up = false;

	if (pg_ha_node_name && pg_ha_node_name[0])
		return pg_ha_node_name;
	if (!looked_up)
	{
		if (gethostname(hostname, sizeof(hostname) - 1) != 0)
			hostname[0] = '\0';
		hostname[sizeof(hostname) - 1] = '\0';
		looked_up = true;
	}
	if (pg_ha_name_problem(hostname, "host name") != NULL)
		return "";
	return hostname;
}

void
pg_ha_effective_connect_address(char *buf, size_t len)
{
	char		host[256];

	if (pg_ha_connect_address && pg_ha_connect_address[0])
	{
		strlcpy(buf, pg_ha_connect_address, len);
		return;
	}
	if (gethostname(host, sizeof(host) - 1) != 0)
		strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	snprintf(buf, len, "%s:%d", host, PostPortNumber);
}

/* etcd_secret_file_ok, with the parameter's name in the message. */
static bool
secret_file_ok(const char *param, const char *path, char *errbuf, size_t errlen)
{
	char		why[1024];

	if (etcd_secret_file_ok(path, why, sizeof(why)))
		return true;
	snprintf(errbuf, errlen, "%s: file %s; at most 0600 is allowed, or 0640 if root owns it",
			 param, why);
	return false;
}

/* First line of pg_ha.etcd_password_file into buf. */
static bool
read_password_file(char *buf, size_t len, char *errbuf, size_t errlen)
{
	FILE	   *f;
	size_t		n;

	buf[0] = '\0';
	if (pg_ha_etcd_password_file == NULL || pg_ha_etcd_password_file[0] == '\0')
		return true;
	if (!secret_file_ok("pg_ha.etcd_password_file", pg_ha_etcd_password_file, errbuf, errlen))
		return false;
	f = AllocateFile(pg_ha_etcd_password_file, "r");
	if (f == NULL)
	{
		snprintf(errbuf, errlen, "cannot open pg_ha.etcd_password_file \"%s\": %m",
				 pg_ha_etcd_password_file);
		return false;
	}
	if (fgets(buf, (int) len, f) == NULL)
		buf[0] = '\0';
	FreeFile(f);
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	return true;
}

bool
pg_ha_etcd_config(EtcdConfig *config, char *errbuf, size_t errlen)
{
	static char password[1024];

	memset(config, 0, sizeof(*config));
	if (!secret_file_ok("pg_ha.etcd_key", pg_ha_etcd_key, errbuf, errlen))
		return false;
	if (!read_password_file(password, sizeof(password), errbuf, errlen))
		return false;
	config->endpoints = pg_ha_etcd_endpoints;
	config->cacert = pg_ha_etcd_cacert;
	config->cert = pg_ha_etcd_cert;
	config->key = pg_ha_etcd_key;
	config->user = pg_ha_etcd_user;
	config->password = password;
	config->timeout_ms = pg_ha_etcd_timeout_ms;
	return true;
}

/*
 * Every etcd key pg_ha writes is built here, so this is where a node whose
 * configuration did not take effect is stopped from writing any: its
 * namespace or cluster may be a default it was never meant to run with
 * (config_check.c).  The HA worker checks before it builds a key; SQL
 * functions get this error.
 */
char *
pg_ha_key(const char *suffix)
{
	const char *ns = pg_ha_namespace;
	const char *cluster = pg_ha_effective_cluster();
	size_t		nslen = strlen(ns);

	if (cluster[0] == '\0' || pg_ha_config_rejected_at_start())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ha: this node is misconfigured and uses no etcd keys"),
				 errdetail("A pg_ha setting did not take effect when the server started, or no usable cluster name is set."),
				 errhint("See last_error in pg_ha.status() or the server log, correct the configuration and restart the server.")));

	/* "/service/" and "/service" name the same namespace */
	while (nslen > 0 && ns[nslen - 1] == '/')
		nslen--;
	return psprintf("%.*s/%s/%s", (int) nslen, ns, cluster, suffix);
}

/* ---------- synchronous mode (ha_sync.c) ---------- */

int			pg_ha_synchronous_mode = 0;
int			pg_ha_synchronous_node_count = 1;
bool		pg_ha_nosync = false;
int			pg_ha_sync_priority = 1;

/* values as SyncMode numbers them (ha_sync.h) */
static const struct config_enum_entry synchronous_mode_options[] = {
	{"off", 0, false},
	{"on", 1, false},
	{"quorum", 2, false},
	{"strict", 3, false},
	{NULL, 0, false}
};

/*
 * Reloadable, like Patroni's dynamic settings: the leader moves to the new
 * mode step by step (ha_sync.c), and every node should carry the same
 * value.  The failover rule follows the sync key the lost leader left,
 * whatever this node's own setting.
 */
void
pg_ha_define_sync_gucs(void)
{
	DefineCustomEnumVariable("pg_ha.synchronous_mode",
							 "Synchronous replication managed by the leader: off, on, quorum or strict.",
							 "on: the leader waits for pg_ha.synchronous_node_count standbys and only those may take over; quorum: ANY k of all healthy standbys; strict: like on, but writes wait rather than go asynchronous when no standby is left.",
							 &pg_ha_synchronous_mode, 0, synchronous_mode_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.synchronous_node_count",
							"Number of synchronous standbys (on, strict) or of confirmations per commit (quorum).",
							NULL,
							&pg_ha_synchronous_node_count, 1, 1, PG_HA_SYNC_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_ha.nosync",
							 "Never choose this node as a synchronous standby (tag nosync).",
							 NULL,
							 &pg_ha_nosync, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_ha.sync_priority",
							"Preference for this node as a synchronous standby (tag sync_priority); 0 never.",
							NULL,
							&pg_ha_sync_priority, 1, 0, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* ---------- failsafe mode (issue 12; ha_failsafe.c) ---------- */

bool		pg_ha_failsafe_mode = false;
char	   *pg_ha_api_auth_file = NULL;

static void
pg_ha_define_failsafe_gucs(void)
{
	DefineCustomBoolVariable("pg_ha.failsafe_mode",
							 "Lets a leader that cannot use etcd keep writing while every member confirms it over the HTTP API.",
							 "Needs pg_ha.api_auth_file: without it the leader does not use failsafe and fences as with off.",
							 &pg_ha_failsafe_mode, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pg_ha.api_auth_file",
							   "File of \"username:password\" lines the API port's unsafe requests require (HTTP basic auth): POST /failsafe and Patroni's control API; the first line is what this node sends to its peers.",
							   "Make it readable by the server's operating system user only; every member needs the same first line.",
							   &pg_ha_api_auth_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path, NULL, NULL);
}
