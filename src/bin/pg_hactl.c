/*
 * pg_hactl - command-line companion of pg_ha (what patronictl is to
 * Patroni), and the outside step postgres cannot do for itself.
 *
 *   pg_hactl [options] list                  the cluster table from etcd
 *   pg_hactl [options] switchover [--candidate NAME] [--timeout S]
 *   pg_hactl [options] switchover --cancel   (or: pg_hactl cancel)
 *   pg_hactl [options] clone --pgdata DIR --node-name NAME --port PORT
 *   pg_hactl [options] rejoin --pgdata DIR [--if-needed] [--reclone]
 *
 * etcd settings come from flags, or from the pg_ha.* lines of
 * DIR/postgresql.conf and postgresql.auto.conf when --pgdata is given.
 *
 * rejoin is meant for systemd's ExecStartPre (contrib/systemd): postgres
 * is stopped when it runs.  It makes sure the node cannot come back as a
 * second primary: when another node holds the leader key, the node starts
 * as its standby, after pg_rewind if it had diverged (or a fresh clone when
 * rewind is impossible).  pg_rewind overwrites the configuration files with
 * the leader's, so the node's own are saved first and put back after.
 *
 * switchover applies the same rules as pg_ha.switchover() (ha_target_check
 * in ha_request.c) and writes and reads the failover key with the same
 * codec; it reports what really happened, and withdraws a request that was
 * never handed over when it gives up (timeout, Ctrl-C).  cancel removes a
 * request nobody has acted on yet (e.g. a scheduled switchover).
 *
 * Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <ftw.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "libpq-fe.h"

#include "conn_url.h"
#include "etcd.h"
#include "ha_dynconf.h"
#include "ha_request.h"

#ifndef PGBINDIR
#define PGBINDIR "/usr/lib/postgresql/15/bin"
#endif

#define MAX_MEMBERS 64

typedef struct Settings
{
	char		endpoints[1024];
	char		namespace[256];
	char		cluster[128];
	char		node_name[128];
	char		cacert[512];
	char		cert[512];
	char		key[512];
	char		user[128];
	char		password[1024];
	char		password_file[512];
	char		replication_conninfo[512];
	char		pgdata[PATH_MAX];
	long		timeout_ms;
	long long	maximum_lag_kb; /* pg_ha.maximum_lag_on_failover */
} Settings;

typedef struct Member
{
	char		name[128];
	char		role[32];
	char		state[32];
	char		conn_url[256];
	char		host[256];
	char		port[16];
	double		lsn;
	int			timeline;
	bool		nofailover;
	bool		noloadbalance;
	bool		clonefrom;		/* tag clonefrom: a preferred clone source */
	bool		streaming;		/* replication_state is "streaming" */
} Member;

typedef struct Cluster
{
	char		leader[128];
	Member		members[MAX_MEMBERS];
	int			nmembers;
	bool		paused;
	char		failover[512];
	int			history_timeline;	/* latest timeline by history, 0 = none */
	int64_t		key_lag;		/* the config key's maximum_lag_on_failover, -1 = none */
	HaControlView view;			/* what the control rules read (ha_request.h) */
} Cluster;

static void die(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "pg_hactl: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void
say(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
say(const char *fmt,...)
{
	va_list		ap;

	printf("pg_hactl: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void
copy_setting(char *dst, size_t len, const char *value)
{
	if (strlen(value) >= len)
		die("setting value too long: %.40s...", value);
	strcpy(dst, value);
}

/*
 * Reads pg_ha.* settings from one postgresql.conf-style file: lines of
 * "name = value" or "name value", value optionally single-quoted with ''
 * for a quote, "#" starting a comment.  Later lines win, as in postgres.
 */
static void
read_conf_file(Settings *s, const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[4096];

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f))
	{
		char	   *p = line;
		char		name[128];
		char		value[2048];
		size_t		n = 0;
		size_t		v = 0;

		while (*p == ' ' || *p == '\t')
			p++;
		while (*p && *p != '=' && *p != ' ' && *p != '\t' && *p != '#' && *p != '\n' &&
			   n < sizeof(name) - 1)
			name[n++] = *p++;
		name[n] = '\0';
		if (n == 0)
			continue;
		while (*p == ' ' || *p == '\t' || *p == '=')
			p++;
		if (*p == '\'')
		{
			p++;
			while (*p && v < sizeof(value) - 1)
			{
				if (*p == '\'' && p[1] == '\'')
				{
					value[v++] = '\'';
					p += 2;
				}
				else if (*p == '\'')
					break;
				else
					value[v++] = *p++;
			}
		}
		else
			while (*p && *p != ' ' && *p != '\t' && *p != '#' && *p != '\n' && v < sizeof(value) - 1)
				value[v++] = *p++;
		value[v] = '\0';

		if (strcmp(name, "pg_ha.etcd_endpoints") == 0)
			copy_setting(s->endpoints, sizeof(s->endpoints), value);
		else if (strcmp(name, "pg_ha.namespace") == 0)
			copy_setting(s->namespace, sizeof(s->namespace), value);
		else if (strcmp(name, "pg_ha.cluster") == 0 ||
				 (strcmp(name, "cluster_name") == 0 && s->cluster[0] == '\0'))
			copy_setting(s->cluster, sizeof(s->cluster), value);
		else if (strcmp(name, "pg_ha.node_name") == 0)
			copy_setting(s->node_name, sizeof(s->node_name), value);
		else if (strcmp(name, "pg_ha.etcd_cacert") == 0)
			copy_setting(s->cacert, sizeof(s->cacert), value);
		else if (strcmp(name, "pg_ha.etcd_cert") == 0)
			copy_setting(s->cert, sizeof(s->cert), value);
		else if (strcmp(name, "pg_ha.etcd_key") == 0)
			copy_setting(s->key, sizeof(s->key), value);
		else if (strcmp(name, "pg_ha.etcd_user") == 0)
			copy_setting(s->user, sizeof(s->user), value);
		else if (strcmp(name, "pg_ha.etcd_password_file") == 0)
			copy_setting(s->password_file, sizeof(s->password_file), value);
		else if (strcmp(name, "pg_ha.replication_conninfo") == 0)
			copy_setting(s->replication_conninfo, sizeof(s->replication_conninfo), value);
		else if (strcmp(name, "pg_ha.maximum_lag_on_failover") == 0)
		{
			char	   *end;
			long long	v = strtoll(value, &end, 10);

			/* kB by default, as the GUC; MB and GB as postgres accepts them */
			if (end == value || v < 0)
				continue;
			if (strcmp(end, "MB") == 0)
				v *= 1024;
			else if (strcmp(end, "GB") == 0)
				v *= 1024 * 1024;
			else if (*end != '\0' && strcmp(end, "kB") != 0)
				continue;
			s->maximum_lag_kb = v;
		}
	}
	fclose(f);
}

static char *
key_path(const Settings *s, const char *suffix)
{
	static char buf[4][512];
	static int	next;
	char	   *out = buf[next++ % 4];
	size_t		nslen = strlen(s->namespace);

	while (nslen > 0 && s->namespace[nslen - 1] == '/')
		nslen--;
	snprintf(out, 512, "%.*s/%s/%s", (int) nslen, s->namespace, s->cluster, suffix);
	return out;
}

static EtcdClient *
connect_etcd(const Settings *s)
{
	EtcdConfig	c;
	char		err[ETCD_ERRMSG_LEN];
	EtcdClient *client;

	if (!etcd_global_init())
		die("could not initialise libcurl");
	memset(&c, 0, sizeof(c));
	c.endpoints = s->endpoints;
	c.cacert = s->cacert;
	c.cert = s->cert;
	c.key = s->key;
	c.user = s->user;
	c.password = s->password;
	c.timeout_ms = s->timeout_ms;
	client = etcd_client_new(&c, err, sizeof(err));
	if (client == NULL)
		die("%s", err);
	return client;
}

static void
json_str(const cJSON *o, const char *name, char *out, size_t len)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	out[0] = '\0';
	if (cJSON_IsString(it) && strlen(it->valuestring) < len)
		strcpy(out, it->valuestring);
}

/*
 * The config key as the nodes read it (ha_dynconf.c): pause, and
 * maximum_lag_on_failover when it sets a valid one, which then wins over
 * pg_ha.maximum_lag_on_failover as it does on the nodes.
 */
static void
config_key_lag(Cluster *c, const char *value, size_t len)
{
	PatroniDynConfig *key = calloc(1, sizeof(PatroniDynConfig));
	DynLocal	local = {DYN_TTL_MIN, 1000, 0, DYN_SYNC_OFF, 1, false};
	DynSettings dyn;

	if (key == NULL)
		die("out of memory");
	if (patroni_config_decode(value, len, key))
	{
		dynconf_merge(key, &local, &dyn);
		c->paused = dyn.pause;
		if (dyn.from_key & (1u << DYN_MAXIMUM_LAG))
			c->key_lag = dyn.maximum_lag_bytes;
	}
	free(key);
}

static void
load_cluster(const Settings *s, EtcdClient *client, Cluster *c)
{
	EtcdKVList	kvs;
	EtcdStatus	st;
	const char *prefix = key_path(s, "");
	size_t		plen = strlen(prefix);

	memset(c, 0, sizeof(*c));
	c->key_lag = -1;
	st = etcd_get(client, prefix, true, &kvs);
	if (st != ETCD_OK && st != ETCD_NOT_FOUND)
		die("cannot read %s from etcd: %s", prefix, etcd_last_error(client));
	for (int i = 0; i < kvs.count; i++)
	{
		const char *suffix = kvs.kvs[i].key + plen;
		cJSON	   *doc;

		if (strlen(kvs.kvs[i].key) < plen)
			continue;
		ha_control_view_add(&c->view, suffix, kvs.kvs[i].value, kvs.kvs[i].value_len,
							kvs.kvs[i].mod_revision);
		if (strcmp(suffix, "leader") == 0)
			snprintf(c->leader, sizeof(c->leader), "%s", kvs.kvs[i].value);
		else if (strcmp(suffix, "failover") == 0)
			snprintf(c->failover, sizeof(c->failover), "%s", kvs.kvs[i].value);
		else if (strcmp(suffix, "config") == 0)
			config_key_lag(c, kvs.kvs[i].value, kvs.kvs[i].value_len);
		else if (strcmp(suffix, "history") == 0)
		{
			const cJSON *e;

			doc = cJSON_Parse(kvs.kvs[i].value);
			if (!cJSON_IsArray(doc))
			{
				cJSON_Delete(doc);
				continue;
			}
			cJSON_ArrayForEach(e, doc)
			{
				const cJSON *t = cJSON_GetArrayItem(e, 0);

				if (cJSON_IsNumber(t) && t->valuedouble + 1 > c->history_timeline &&
					t->valuedouble < 1e9)
					c->history_timeline = (int) t->valuedouble + 1;
			}
			cJSON_Delete(doc);
		}
		else if (strncmp(suffix, "members/", 8) == 0 && c->nmembers < MAX_MEMBERS)
		{
			Member	   *m = &c->members[c->nmembers];
			const cJSON *tags;
			const cJSON *num;

			memset(m, 0, sizeof(*m));
			snprintf(m->name, sizeof(m->name), "%s", suffix + 8);
			doc = cJSON_Parse(kvs.kvs[i].value);
			if (!cJSON_IsObject(doc))
			{
				cJSON_Delete(doc);
				continue;
			}
			json_str(doc, "role", m->role, sizeof(m->role));
			json_str(doc, "state", m->state, sizeof(m->state));
			json_str(doc, "conn_url", m->conn_url, sizeof(m->conn_url));
			/*
			 * The one conn_url codec the HA worker uses too: a host that
			 * could carry libpq options or break a quoted conninfo value
			 * is refused, and the member is not connected to.
			 */
			if (m->conn_url[0] != '\0' &&
				!conn_url_host_port(m->conn_url, m->host, sizeof(m->host), m->port, sizeof(m->port)))
			{
				m->host[0] = m->port[0] = '\0';
				fprintf(stderr, "pg_hactl: ignoring member \"%s\": its conn_url is not postgres://host:port\n",
						m->name);
			}
			num = cJSON_GetObjectItemCaseSensitive(doc, "xlog_location");
			m->lsn = cJSON_IsNumber(num) ? num->valuedouble : -1;
			num = cJSON_GetObjectItemCaseSensitive(doc, "timeline");
			m->timeline = cJSON_IsNumber(num) ? (int) num->valuedouble : 0;
			tags = cJSON_GetObjectItemCaseSensitive(doc, "tags");
			m->nofailover = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tags, "nofailover"));
			m->noloadbalance = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tags, "noloadbalance"));
			m->clonefrom = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tags, "clonefrom"));
			{
				char		rstate[32] = "";

				json_str(doc, "replication_state", rstate, sizeof(rstate));
				m->streaming = strcmp(rstate, "streaming") == 0;
			}
			cJSON_Delete(doc);
			c->nmembers++;
		}
	}
	etcd_kvlist_free(&kvs);
}

static const Member *
find_member(const Cluster *c, const char *name)
{
	for (int i = 0; i < c->nmembers; i++)
		if (strcmp(c->members[i].name, name) == 0)
			return &c->members[i];
	return NULL;
}

/* ---------- list ---------- */

static int
cmd_list(const Settings *s)
{
	EtcdClient *client = connect_etcd(s);
	Cluster		c;
	const Member *leader;

	load_cluster(s, client, &c);
	etcd_client_free(client);
	leader = find_member(&c, c.leader);
	printf("+ Cluster: %s (%s)%s\n", s->cluster, key_path(s, ""), c.paused ? " [paused]" : "");
	printf("%-20s %-22s %-8s %-10s %4s %12s  %s\n", "Member", "Host", "Role", "State", "TL",
		   "Lag in MB", "Tags");
	for (int i = 0; i < c.nmembers; i++)
	{
		const Member *m = &c.members[i];
		bool		is_leader = strcmp(m->name, c.leader) == 0;
		char		lag[32] = "";
		char		hostport[300];

		if (!is_leader && leader && leader->lsn >= 0 && m->lsn >= 0)
			snprintf(lag, sizeof(lag), "%.1f",
					 leader->lsn > m->lsn ? (leader->lsn - m->lsn) / 1048576.0 : 0.0);
		snprintf(hostport, sizeof(hostport), "%s:%s", m->host, m->port);
		printf("%-20s %-22s %-8s %-10s %4d %12s  %s%s\n", m->name, hostport,
			   is_leader ? "Leader" : (strcmp(m->role, "replica") == 0 ? "Replica" : m->role),
			   m->state, m->timeline, lag,
			   m->nofailover ? "nofailover " : "", m->noloadbalance ? "noloadbalance" : "");
	}
	if (c.leader[0] == '\0')
		printf("(no leader)\n");
	if (c.view.has_request)
	{
		const HaRequest *r = &c.view.request;

		if (!c.view.request_valid)
			printf("failover key: invalid (%s): %s\n", c.view.request_error, c.failover);
		else if (r->scheduled && r->phase == HA_REQ_REQUESTED)
		{
			char		at[HA_TIME_LEN];

			ha_time_format(r->scheduled_at_us, at, sizeof(at));
			printf("pending switchover: from \"%s\" to \"%s\" scheduled at %s\n", r->leader,
				   r->member[0] ? r->member : "(best replica)", at);
		}
		else if (r->phase == HA_REQ_SHUTDOWN || r->phase == HA_REQ_ABORTED)
			printf("failover key (%s): %s\n", ha_request_phase_name(r->phase), c.failover);
		else
			printf("pending %s (%s): %s\n", r->leader[0] ? "switchover" : "failover",
				   ha_request_phase_name(r->phase), c.failover);
	}
	return 0;
}

/* ---------- switchover ---------- */

static volatile sig_atomic_t interrupted;

static void
on_interrupt(int sig)
{
	interrupted = 1;
}

/* Writes the failover key (ha_request_put); 0 when another writer got there first. */
static int64_t
put_request(EtcdClient *client, const char *key, const char *value, int64_t replace_rev)
{
	int64_t		rev;

	if (ha_request_put(client, key, value, replace_rev, &rev) != ETCD_OK)
		die("cannot write the failover key: %s", etcd_last_error(client));
	return rev;
}

static void
describe_request(const HaControlView *v, char *buf, size_t len)
{
	const HaRequest *r = &v->request;

	if (!v->request_valid)
		snprintf(buf, len, "an invalid value (%s)", v->request_error);
	else if (r->leader[0] == '\0')
		snprintf(buf, len, "a failover to \"%s\" (%s)", r->member, ha_request_phase_name(r->phase));
	else
	{
		char		at[HA_TIME_LEN] = "";

		if (r->scheduled)
			ha_time_format(r->scheduled_at_us, at, sizeof(at));
		snprintf(buf, len, "a switchover from \"%s\" to \"%s\"%s%s (%s)", r->leader,
				 r->member[0] ? r->member : "the best replica", at[0] ? " scheduled at " : "",
				 at, ha_request_phase_name(r->phase));
	}
}

static int
cmd_cancel(const Settings *s)
{
	EtcdClient *client = connect_etcd(s);
	Cluster    *c = malloc(sizeof(Cluster));
	char		what[512];

	if (c == NULL)
		die("out of memory");
	load_cluster(s, client, c);
	if (!c->view.has_request || !c->view.request_valid ||
		c->view.request.phase != HA_REQ_REQUESTED)
	{
		if (c->view.has_request)
		{
			describe_request(&c->view, what, sizeof(what));
			die("no pending switchover or failover to cancel: the failover key holds %s", what);
		}
		die("no pending switchover or failover to cancel");
	}
	describe_request(&c->view, what, sizeof(what));
	if (!ha_request_delete(client, key_path(s, "failover"), c->view.request_mod_revision))
		die("the failover key changed concurrently (or etcd failed: %s); try again",
			etcd_last_error(client));
	say("cancelled %s", what);
	etcd_client_free(client);
	free(c);
	return 0;
}

static int
cmd_switchover(const Settings *s, const char *candidate, int timeout_s)
{
	EtcdClient *client = connect_etcd(s);
	Cluster    *c = malloc(sizeof(Cluster));
	Cluster    *now = malloc(sizeof(Cluster));
	const char *key = key_path(s, "failover");
	HaTargetInput in;
	HaRequest	req;
	char		chosen[HA_REQUEST_NAME_LEN];
	char		better[HA_REQUEST_NAME_LEN];
	char		why[256];
	char		leader[HA_REQUEST_NAME_LEN];
	char		value[HA_REQUEST_MAX_JSON + 1];
	HaTargetVerdict v;
	int64_t		rev;
	uint32_t	history_before;
	bool		handed_over = false;
	time_t		give_up;
	struct sigaction sa;

	if (c == NULL || now == NULL)
		die("out of memory");
	if (candidate && !ha_valid_member_name(candidate))
		die("invalid member name \"%s\"", candidate);
	load_cluster(s, client, c);
	if (c->view.paused)
		die("switchover refused: the cluster is paused");
	if (c->view.leader[0] == '\0')
		die("switchover refused: the cluster has no leader");
	if (ha_request_blocks(&c->view, false))
	{
		describe_request(&c->view, why, sizeof(why));
		die("switchover refused: a switchover or failover is already in progress: %s", why);
	}
	strcpy(leader, c->view.leader);
	in.members = c->view.members;
	in.nmembers = c->view.nmembers;
	in.leader = leader;
	in.status_optime = c->view.status_optime;
	in.history_timeline = c->view.history_timeline;
	in.maximum_lag_bytes = c->key_lag >= 0 ? (uint64_t) c->key_lag : (uint64_t) s->maximum_lag_kb * 1024;
	in.switchover = true;
	in.force = false;
	v = ha_target_check(&in, candidate, chosen, sizeof(chosen), better, sizeof(better),
						why, sizeof(why));
	switch (v)
	{
		case HA_TARGET_OK:
			break;
		case HA_TARGET_UNKNOWN:
			die("switchover refused: no member named \"%s\"", chosen);
		case HA_TARGET_IS_LEADER:
			die("switchover refused: \"%s\" is already the leader", chosen);
		case HA_TARGET_NONE:
			die("switchover refused: no replica can take over: %s", why);
		default:
			die("switchover refused: \"%s\" is not an eligible replica (%s): %s", chosen,
				ha_target_verdict_name(v), why);
	}

	memset(&req, 0, sizeof(req));
	req.phase = HA_REQ_REQUESTED;
	strcpy(req.leader, leader);
	strcpy(req.member, chosen);
	if (ha_request_encode(&req, value, sizeof(value)) < 0)
		die("cannot encode the switchover request");
	history_before = c->view.history_timeline;
	rev = put_request(client, key, value, c->view.has_request ? c->view.request_mod_revision : 0);
	if (rev == 0)
		die("switchover refused: a switchover or failover is already in progress");
	say("switchover from \"%s\" to \"%s\" requested", leader, chosen);

	/* Ctrl-C or a kill withdraws the request rather than leaving it behind */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	give_up = time(NULL) + timeout_s;
	while (time(NULL) < give_up && !interrupted)
	{
		const HaCandidate *m;
		bool		ours;

		usleep(100 * 1000);
		load_cluster(s, client, now);
		ours = now->view.has_request && now->view.request_valid &&
			strcmp(now->view.request.member, chosen) == 0;
		if (ours && (now->view.request.phase == HA_REQ_HANDED_OVER ||
					 now->view.request.phase == HA_REQ_FINAL_CONFIRMED))
			handed_over = true;
		if (ours && now->view.request.phase == HA_REQ_ABORTED)
		{
			ha_request_delete(client, key, now->view.request_mod_revision);
			die("switchover abandoned by the leader: %s",
				now->view.request.reason[0] ? now->view.request.reason : "no reason given");
		}
		m = ha_control_view_member(&now->view, chosen);
		if (strcmp(now->view.leader, chosen) == 0 && m && m->is_primary)
		{
			bool		new_entry = now->view.history_timeline > history_before;

			if (handed_over || (new_entry && strstr(now->view.history_reason, "switchover")))
			{
				say("switched over to \"%s\" from \"%s\"", chosen, leader);
				etcd_client_free(client);
				return 0;
			}
			die("switchover to \"%s\" did not happen: \"%s\" became leader by %s; the leader never handed over, transactions may be lost",
				chosen, chosen, new_entry && now->view.history_reason[0] ? now->view.history_reason : "an unknown path");
		}
		if (now->view.leader[0] && strcmp(now->view.leader, chosen) != 0 &&
			strcmp(now->view.leader, leader) != 0)
		{
			if (!handed_over)
				ha_request_delete(client, key, rev);
			die("switchover to \"%s\" did not happen: \"%s\" became leader by %s", chosen,
				now->view.leader,
				now->view.history_timeline > history_before && now->view.history_reason[0] ?
				now->view.history_reason : "an unknown path");
		}
	}
	if (!handed_over && ha_request_delete(client, key, rev))
		die("switchover %s; the request was withdrawn",
			interrupted ? "interrupted" : "did not complete in time");
	etcd_client_free(client);
	if (handed_over)
		die("switchover %s after the hand-over; \"%s\" may still complete its promotion",
			interrupted ? "interrupted" : "did not complete in time", chosen);
	die("switchover %s; the request changed meanwhile and was left in place",
		interrupted ? "interrupted" : "did not complete within the timeout");
}

/* ---------- clone and rejoin ---------- */

static int
run(char *const argv[])
{
	pid_t		pid;
	int			status;

	printf("pg_hactl: running");
	for (int i = 0; argv[i]; i++)
		printf(" %s", strncmp(argv[i], "password=", 9) == 0 ? "password=***" : argv[i]);
	printf("\n");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork failed: %s", strerror(errno));
	if (pid == 0)
	{
		execv(argv[0], argv);
		fprintf(stderr, "pg_hactl: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid failed: %s", strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* libpq connection string to a member, with the replication options. */
static void
member_conninfo(const Settings *s, const Member *m, char *out, size_t len)
{
	snprintf(out, len, "host=%s port=%s dbname=postgres %s", m->host, m->port,
			 s->replication_conninfo);
}

static bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void
copy_file(const char *from, const char *to)
{
	FILE	   *in = fopen(from, "rb");
	FILE	   *out;
	char		buf[65536];
	size_t		n;

	if (in == NULL)
		return;					/* a file the node does not have */
	out = fopen(to, "wb");
	if (out == NULL)
		die("cannot write %s: %s", to, strerror(errno));
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			die("cannot write %s: %s", to, strerror(errno));
	fclose(in);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0)
		die("cannot write %s: %s", to, strerror(errno));
}

static const char *const local_config_files[] = {
	"postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf", NULL
};

/* Keep the node's own configuration away from pg_rewind / pg_basebackup. */
static void
save_local_config(const char *pgdata, const char *saved)
{
	char		from[PATH_MAX];
	char		to[PATH_MAX];

	if (mkdir(saved, 0700) != 0 && errno != EEXIST)
		die("cannot create %s: %s", saved, strerror(errno));
	for (int i = 0; local_config_files[i]; i++)
	{
		snprintf(from, sizeof(from), "%s/%s", pgdata, local_config_files[i]);
		snprintf(to, sizeof(to), "%s/%s", saved, local_config_files[i]);
		copy_file(from, to);
	}
}

static void
restore_local_config(const char *pgdata, const char *saved)
{
	char		from[PATH_MAX];
	char		to[PATH_MAX];

	for (int i = 0; local_config_files[i]; i++)
	{
		snprintf(from, sizeof(from), "%s/%s", saved, local_config_files[i]);
		snprintf(to, sizeof(to), "%s/%s", pgdata, local_config_files[i]);
		if (file_exists(from))
			copy_file(from, to);
	}
}

/*
 * Makes DIR start as a standby of leader: standby.signal, and
 * primary_conninfo in postgresql.auto.conf (postgres is stopped, so this is
 * what pg_basebackup -R and pg_rewind -R do too).
 */
static void
configure_standby(const Settings *s, const char *pgdata, const Member *leader)
{
	char		path[PATH_MAX];
	char		tmp[PATH_MAX];
	FILE	   *in;
	FILE	   *out;
	char		line[4096];

	snprintf(path, sizeof(path), "%s/standby.signal", pgdata);
	out = fopen(path, "w");
	if (out == NULL || fsync(fileno(out)) != 0 || fclose(out) != 0)
		die("cannot create %s: %s", path, strerror(errno));

	snprintf(path, sizeof(path), "%s/postgresql.auto.conf", pgdata);
	snprintf(tmp, sizeof(tmp), "%s/postgresql.auto.conf.pg_hactl", pgdata);
	out = fopen(tmp, "w");
	if (out == NULL)
		die("cannot write %s: %s", tmp, strerror(errno));
	in = fopen(path, "r");
	while (in && fgets(line, sizeof(line), in))
		if (strncmp(line, "primary_conninfo", 16) != 0)
			fputs(line, out);
	if (in)
		fclose(in);
	fprintf(out, "primary_conninfo = 'host=%s port=%s application_name=%s %s'\n",
			leader->host, leader->port, s->node_name, s->replication_conninfo);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 || rename(tmp, path) != 0)
		die("cannot write %s: %s", path, strerror(errno));
	say("%s will start as a standby of \"%s\" (%s:%s)", pgdata, leader->name, leader->host, leader->port);
}

static int
clone_from(const Settings *s, const Member *leader, const char *pgdata)
{
	char		conninfo[1024];
	char	   *argv[12];
	int			n = 0;

	member_conninfo(s, leader, conninfo, sizeof(conninfo));
	argv[n++] = PGBINDIR "/pg_basebackup";
	argv[n++] = "-d";
	argv[n++] = conninfo;
	argv[n++] = "-D";
	argv[n++] = (char *) pgdata;
	argv[n++] = "-X";
	argv[n++] = "stream";
	argv[n++] = "-c";
	argv[n++] = "fast";
	argv[n] = NULL;
	return run(argv);
}

static const Member *
require_leader(const Cluster *c)
{
	const Member *leader = find_member(c, c->leader);

	if (c->leader[0] == '\0' || leader == NULL || leader->host[0] == '\0')
		die("the cluster has no leader to follow yet");
	return leader;
}

/*
 * Where clone takes its base backup from: a member tagged clonefrom
 * (Patroni's tag) that is a standby streaming on the leader's timeline,
 * so the backup's load stays off the leader; else the leader.  A standby
 * in that state holds only WAL the leader wrote, so the clone starts on
 * the leader's history and then streams from the leader.
 */
static const Member *
clone_source(const Cluster *c, const Member *leader, const char *self)
{
	for (int i = 0; i < c->nmembers; i++)
	{
		const Member *m = &c->members[i];

		if (m->clonefrom && m != leader && strcmp(m->role, "replica") == 0 && m->streaming &&
			m->timeline == leader->timeline && m->host[0] != '\0' && strcmp(m->name, self) != 0)
			return m;
	}
	return leader;
}

/*
 * Files in a data directory that are requests to this node (pg_ha's
 * markers), not data: a base backup copies the source's, which are not
 * ours.
 */
static void
drop_copied_requests(const char *pgdata)
{
	static const char *const markers[] = {"pg_ha.rejoin", "pg_ha.reinitialize", "pg_ha.restart"};
	char		path[PATH_MAX];

	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
	{
		snprintf(path, sizeof(path), "%s/%s", pgdata, markers[i]);
		if (unlink(path) != 0 && errno != ENOENT)
			die("cannot remove %s: %s", path, strerror(errno));
	}
}

static int
cmd_clone(Settings *s, const char *node_name, const char *port, const char *connect_host)
{
	EtcdClient *client = connect_etcd(s);
	Cluster		c;
	const Member *leader;
	const Member *source;
	char		path[PATH_MAX];
	FILE	   *f;

	load_cluster(s, client, &c);
	etcd_client_free(client);
	leader = require_leader(&c);
	source = clone_source(&c, leader, node_name);
	if (file_exists(s->pgdata))
	{
		snprintf(path, sizeof(path), "%s/PG_VERSION", s->pgdata);
		if (file_exists(path))
			die("%s already holds a database cluster", s->pgdata);
	}
	if (source != leader)
		say("cloning from \"%s\" (tag clonefrom) instead of the leader \"%s\"", source->name, leader->name);
	if (clone_from(s, source, s->pgdata) != 0)
		die("pg_basebackup from \"%s\" failed", source->name);
	drop_copied_requests(s->pgdata);
	snprintf(s->node_name, sizeof(s->node_name), "%s", node_name);
	snprintf(path, sizeof(path), "%s/postgresql.conf", s->pgdata);
	f = fopen(path, "a");
	if (f == NULL)
		die("cannot append to %s: %s", path, strerror(errno));
	fprintf(f, "\n# added by pg_hactl clone\nport = %s\npg_ha.node_name = '%s'\npg_ha.connect_address = '%s:%s'\n",
			port, node_name, connect_host, port);
	if (fclose(f) != 0)
		die("cannot write %s: %s", path, strerror(errno));
	configure_standby(s, s->pgdata, leader);
	say("cloned \"%s\" from \"%s\" into %s", node_name, source->name, s->pgdata);
	return 0;
}

/*
 * Does the worker's rejoin marker say "reclone=1"?  It does when this node
 * forked off on the same timeline number as the leader's, which pg_rewind
 * takes for "no rewind required".
 */
static bool
marker_asks_reclone(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[256];
	bool		reclone = false;

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strcmp(line, "reclone=1\n") == 0 || strcmp(line, "reclone=1") == 0)
			reclone = true;
	fclose(f);
	return reclone;
}

/*
 * A reinitialize request (pg_ha.reinitialize in the data directory, left
 * by POST /reinitialize or pg_ha.reinitialize(), src/ha_reinit.c): true
 * when there is one, with its options.
 */
static bool
reinit_requested(const char *pgdata, bool *from_leader, char *reason, size_t len)
{
	char		path[PATH_MAX];
	char		line[256];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/pg_ha.reinitialize", pgdata);
	*from_leader = false;
	snprintf(reason, len, "requested");
	f = fopen(path, "r");
	if (f == NULL)
	{
		if (errno != ENOENT)
			die("cannot read %s: %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f))
	{
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line, "from_leader=1") == 0)
			*from_leader = true;
		else if (strncmp(line, "reason=", 7) == 0)
			snprintf(reason, len, "%s", line + 7);
	}
	fclose(f);
	return true;
}

/* nftw callback: remove what it is given (depth first, not following links) */
static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path) == 0 ? 0 : -1;
}

/* Removes the directory tree at path; false (errno set) when it could not. */
static bool
remove_tree(const char *path)
{
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

/*
 * Replaces pgdata with a fresh base backup from source and makes it a
 * standby of leader.  The old directory is moved aside first and put back
 * when the backup fails, so a failure leaves the node as it was (its
 * markers included: the next start tries again).  After a success it is
 * removed when discard_old (a reinitialize asked to throw it away), kept
 * in DIR.pg_hactl-old otherwise (a diverged node's WAL may be wanted).
 */
static void
reclone(Settings *s, const Member *source, const Member *leader, const char *saved, bool discard_old)
{
	char		aside[PATH_MAX];

	snprintf(aside, sizeof(aside), "%s.pg_hactl-old", s->pgdata);
	if (file_exists(aside))
		die("%s exists from an earlier attempt: remove it first; %s is left as it is", aside, s->pgdata);
	if (rename(s->pgdata, aside) != 0)
		die("cannot move %s aside: %s", s->pgdata, strerror(errno));
	if (source != leader)
		say("cloning from \"%s\" (tag clonefrom) instead of the leader \"%s\"", source->name, leader->name);
	if (clone_from(s, source, s->pgdata) != 0)
	{
		/* pg_basebackup removes what it wrote, unless it was killed */
		if (file_exists(s->pgdata) && !remove_tree(s->pgdata))
			die("pg_basebackup from \"%s\" failed, and its partial copy %s could not be removed (%s); the old data directory is %s",
				source->name, s->pgdata, strerror(errno), aside);
		if (rename(aside, s->pgdata) != 0)
			die("pg_basebackup from \"%s\" failed, and %s could not be moved back to %s: %s",
				source->name, aside, s->pgdata, strerror(errno));
		die("pg_basebackup from \"%s\" failed; %s is left as it was", source->name, s->pgdata);
	}
	drop_copied_requests(s->pgdata);
	restore_local_config(s->pgdata, saved);
	configure_standby(s, s->pgdata, leader);
	if (!discard_old)
	{
		say("re-cloned %s from \"%s\"; the old data directory is kept in %s", s->pgdata,
			source->name, aside);
		return;
	}
	if (!remove_tree(aside))
		say("re-cloned %s from \"%s\", but could not remove the old data directory %s: %s",
			s->pgdata, source->name, aside, strerror(errno));
	else
		say("re-cloned %s from \"%s\"; the old data directory was removed", s->pgdata, source->name);
}

/*
 * The check every rewind and re-clone passes first, on what etcd says now:
 * another node holds the leader key.  Nothing has been touched yet, so a
 * refusal leaves the data directory as it is.  A node the key names is the
 * leader (or was, and its lease still runs): its data may be the only copy
 * of what it acknowledged.  With no leader at all there is nothing to
 * follow or clone, and this node may be the one that must take over.
 */
static void
require_other_leader(const Cluster *c, const Settings *s, bool reinit)
{
	const char *why = c->leader[0] == '\0' ? "the cluster has no leader" :
		"the leader key names this node";

	if (c->leader[0] != '\0' && strcmp(c->leader, s->node_name) != 0)
		return;
	if (reinit)
		die("reinitialize refused: no other node holds the leader key (%s); %s is left as it is.\n"
			"It is re-cloned once another node leads; to start this node with its data as it is, remove %s/pg_ha.reinitialize.",
			why, s->pgdata, s->pgdata);
	if (c->leader[0] == '\0')
		die("the cluster has no leader to rejoin; start postgres and let pg_ha elect one");
	die("no other node holds the leader key (%s): %s is not rewound or re-cloned", why, s->pgdata);
}

/* pg_rewind to leader; true when it worked (and the node follows it). */
static bool
rewind_to(Settings *s, const Member *leader, const char *saved, const char *marker)
{
	char		conninfo[1024];
	PGconn	   *conn;
	char	   *argv[] = {PGBINDIR "/pg_rewind", "--target-pgdata", s->pgdata,
		"--source-server", conninfo, "--progress", NULL};

	member_conninfo(s, leader, conninfo, sizeof(conninfo));

	/*
	 * pg_rewind reads the source's timeline from its control file, which a
	 * fresh leader updates only at its first checkpoint after the promotion
	 * (a spread one): force it, or pg_rewind sees "the same timeline" and
	 * rewinds nothing.
	 */
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		say("cannot connect to \"%s\" for a checkpoint: %s", leader->name, PQerrorMessage(conn));
	else
	{
		PGresult   *res = PQexec(conn, "CHECKPOINT");

		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			say("CHECKPOINT on \"%s\" failed: %s", leader->name, PQerrorMessage(conn));
		PQclear(res);
	}
	PQfinish(conn);
	if (run(argv) != 0)
		return false;
	restore_local_config(s->pgdata, saved);
	configure_standby(s, s->pgdata, leader);
	unlink(marker);
	say("rewound %s to \"%s\"", s->pgdata, leader->name);
	return true;
}

static int
cmd_rejoin(Settings *s, bool if_needed, bool reclone_asked)
{
	EtcdClient *client = connect_etcd(s);
	Cluster		c;
	const Member *leader;
	char		marker[PATH_MAX];
	char		signal_file[PATH_MAX];
	char		saved[PATH_MAX];
	char		reason[256];
	bool		marked;
	bool		primary;
	bool		reinit;
	bool		from_leader;
	bool		clone_afresh = reclone_asked;

	load_cluster(s, client, &c);
	etcd_client_free(client);
	snprintf(marker, sizeof(marker), "%s/pg_ha.rejoin", s->pgdata);
	snprintf(signal_file, sizeof(signal_file), "%s/standby.signal", s->pgdata);
	marked = file_exists(marker);
	primary = !file_exists(signal_file);
	reinit = reinit_requested(s->pgdata, &from_leader, reason, sizeof(reason));
	if (marked && marker_asks_reclone(marker))
	{
		/* a fork on the leader's own timeline number: pg_rewind cannot see it */
		say("%s diverged on the leader's timeline number: pg_rewind cannot repair that, cloning afresh",
			s->pgdata);
		clone_afresh = true;
	}
	clone_afresh |= reinit;

	/* nobody else leads: postgres starts as it is, pg_ha takes it from there */
	if (if_needed && !marked && !clone_afresh &&
		(c.leader[0] == '\0' || strcmp(c.leader, s->node_name) == 0))
	{
		say("no other leader: nothing to do");
		return 0;
	}
	require_other_leader(&c, s, reinit);
	leader = require_leader(&c);
	if (reinit)
		say("reinitialize %s: \"%s\" leads, cloning %s afresh", reason, leader->name, s->pgdata);

	if (!marked && !clone_afresh)
	{
		if (primary)
		{
			/* a former primary must not come back writable next to a leader */
			configure_standby(s, s->pgdata, leader);
			if (if_needed)
				return 0;
		}
		else if (if_needed)
		{
			say("standby of the cluster: nothing to do");
			return 0;
		}
	}

	snprintf(saved, sizeof(saved), "%s.pg_hactl-config", s->pgdata);
	save_local_config(s->pgdata, saved);
	if (!clone_afresh && rewind_to(s, leader, saved, marker))
		return 0;
	if (!clone_afresh)
		say("pg_rewind failed: cloning afresh from \"%s\"", leader->name);
	reclone(s, reinit && !from_leader ? clone_source(&c, leader, s->node_name) : leader, leader, saved,
			reinit);
	return 0;
}

/* ---------- stop (the service manager's ExecStop) ---------- */

/* "Database cluster state" as pg_controldata prints it (LC_ALL=C), or "". */
static void
cluster_state(const char *pgdata, char *out, size_t len)
{
	int			fds[2];
	pid_t		pid;
	FILE	   *f;
	char		line[512];
	const char *prefix = "Database cluster state:";

	out[0] = '\0';
	if (pipe(fds) != 0)
		return;
	pid = fork();
	if (pid < 0)
	{
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0)
	{
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		setenv("LC_ALL", "C", 1);
		execl(PGBINDIR "/pg_controldata", "pg_controldata", "-D", pgdata, (char *) NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	while (f && fgets(line, sizeof(line), f))
	{
		if (strncmp(line, prefix, strlen(prefix)) == 0)
		{
			const char *v = line + strlen(prefix);

			v += strspn(v, " \t");
			snprintf(out, len, "%.*s", (int) strcspn(v, "\n"), v);
		}
	}
	if (f)
		fclose(f);
	else
		close(fds[0]);
	waitpid(pid, NULL, 0);
}

static bool
process_alive(pid_t pid)
{
	return kill(pid, 0) == 0 || errno == EPERM;
}

/* waits up to seconds for pid to exit; true if it did */
static bool
wait_exit(pid_t pid, int seconds)
{
	for (int i = 0; i < seconds * 10; i++)
	{
		if (!process_alive(pid))
			return true;
		usleep(100 * 1000);
	}
	return !process_alive(pid);
}

/*
 * pg_hactl stop: a fast shutdown (SIGINT, as pg_ctl stop -m fast), and if
 * postgres is still there after --timeout seconds (default 10) while its
 * control file says it is recovering, an immediate shutdown (SIGQUIT).
 *
 * Why: PostgreSQL 15 hangs a fast shutdown that arrives while a crash
 * restart is still in its first steps (the postmaster's FatalError is
 * still set: it waits for the checkpointer to exit, and nothing asks the
 * checkpointer to).  pg_ha demotes a primary with exactly such a crash
 * restart (into standby mode), so `systemctl stop` right after a demotion
 * could hang until TimeoutStopSec (the chaos suite found it: seed 71).
 *
 * Safe: a node in recovery (crash or archive recovery) loses nothing to an
 * immediate shutdown, it replays the same WAL at its next start.  A
 * primary in production, or writing its shutdown checkpoint, is never
 * escalated: it gets its clean shutdown, bounded by the unit's
 * TimeoutStopSec.
 */
static int
cmd_stop(const char *pgdata, int timeout_s)
{
	char		path[PATH_MAX];
	char		state[128];
	FILE	   *f;
	long		pid = 0;

	snprintf(path, sizeof(path), "%s/postmaster.pid", pgdata);
	f = fopen(path, "r");
	if (f != NULL)
	{
		if (fscanf(f, "%ld", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	if (pid <= 0 || !process_alive((pid_t) pid))
	{
		say("postgres is not running in %s", pgdata);
		return 0;
	}
	if (kill((pid_t) pid, SIGINT) != 0)
		die("cannot signal postgres (pid %ld): %s", pid, strerror(errno));
	for (;;)
	{
		if (wait_exit((pid_t) pid, timeout_s))
			return 0;
		cluster_state(pgdata, state, sizeof(state));
		if (strcmp(state, "in crash recovery") == 0 || strcmp(state, "in archive recovery") == 0)
			break;
		/* a primary's shutdown checkpoint may take long: keep waiting */
	}
	say("postgres (pid %ld) is still running %d s after a fast shutdown, %s: immediate shutdown",
		pid, timeout_s, state);
	if (kill((pid_t) pid, SIGQUIT) != 0 && errno != ESRCH)
		die("cannot signal postgres (pid %ld): %s", pid, strerror(errno));
	if (!wait_exit((pid_t) pid, 60))
		die("postgres (pid %ld) did not exit after an immediate shutdown", pid);
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: pg_hactl [options] list\n"
			"       pg_hactl [options] switchover [--candidate NAME] [--timeout S]\n"
			"       pg_hactl [options] switchover --cancel | cancel\n"
			"       pg_hactl [options] clone --pgdata DIR --node-name NAME --port PORT [--host HOST]\n"
			"       pg_hactl [options] rejoin --pgdata DIR [--if-needed] [--reclone]\n"
			"       pg_hactl stop --pgdata DIR [--timeout S]\n"
			"options:\n"
			"  -D, --pgdata DIR       read pg_ha.* settings from DIR/postgresql.conf (+ .auto.conf)\n"
			"  --etcd URLS            etcd endpoints (pg_ha.etcd_endpoints)\n"
			"  --namespace NS         default /service (pg_ha.namespace)\n"
			"  --cluster NAME         pg_ha.cluster\n"
			"  --node-name NAME       this node's name (pg_ha.node_name)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct option longopts[] = {
		{"pgdata", required_argument, NULL, 'D'},
		{"etcd", required_argument, NULL, 'e'},
		{"namespace", required_argument, NULL, 'n'},
		{"cluster", required_argument, NULL, 'c'},
		{"node-name", required_argument, NULL, 'N'},
		{"candidate", required_argument, NULL, 'C'},
		{"timeout", required_argument, NULL, 't'},
		{"port", required_argument, NULL, 'p'},
		{"host", required_argument, NULL, 'h'},
		{"if-needed", no_argument, NULL, 'i'},
		{"reclone", no_argument, NULL, 'r'},
		{"cancel", no_argument, NULL, 'x'},
		{NULL, 0, NULL, 0}
	};
	Settings	s;
	Settings	flags;
	const char *candidate = NULL;
	const char *port = NULL;
	const char *host = "127.0.0.1";
	const char *command;
	int			timeout_s = 0;	/* per command's default */
	bool		if_needed = false;
	bool		reclone = false;
	bool		cancel = false;
	int			opt;

	memset(&s, 0, sizeof(s));
	memset(&flags, 0, sizeof(flags));
	while ((opt = getopt_long(argc, argv, "D:", longopts, NULL)) != -1)
	{
		switch (opt)
		{
			case 'D':
				copy_setting(flags.pgdata, sizeof(flags.pgdata), optarg);
				break;
			case 'e':
				copy_setting(flags.endpoints, sizeof(flags.endpoints), optarg);
				break;
			case 'n':
				copy_setting(flags.namespace, sizeof(flags.namespace), optarg);
				break;
			case 'c':
				copy_setting(flags.cluster, sizeof(flags.cluster), optarg);
				break;
			case 'N':
				copy_setting(flags.node_name, sizeof(flags.node_name), optarg);
				break;
			case 'C':
				candidate = optarg;
				break;
			case 't':
				timeout_s = atoi(optarg);
				if (timeout_s <= 0)
					usage();
				break;
			case 'p':
				port = optarg;
				break;
			case 'h':
				host = optarg;
				break;
			case 'i':
				if_needed = true;
				break;
			case 'r':
				reclone = true;
				break;
			case 'x':
				cancel = true;
				break;
			default:
				usage();
		}
	}
	if (optind != argc - 1)
		usage();
	command = argv[optind];

	/* stop needs neither etcd nor the cluster's settings */
	if (strcmp(command, "stop") == 0)
	{
		if (!flags.pgdata[0])
			usage();
		return cmd_stop(flags.pgdata, timeout_s ? timeout_s : 10);
	}
	if (timeout_s == 0)
		timeout_s = 60;

	/* defaults, then the node's files, then flags */
	strcpy(s.namespace, "/service");
	strcpy(s.endpoints, "http://127.0.0.1:2379");
	s.timeout_ms = 5000;
	s.maximum_lag_kb = 1024;	/* the GUC's default */
	if (flags.pgdata[0])
	{
		char		path[PATH_MAX + 32];

		strcpy(s.pgdata, flags.pgdata);
		snprintf(path, sizeof(path), "%s/postgresql.conf", s.pgdata);
		read_conf_file(&s, path);
		snprintf(path, sizeof(path), "%s/postgresql.auto.conf", s.pgdata);
		read_conf_file(&s, path);
	}
	if (flags.endpoints[0])
		strcpy(s.endpoints, flags.endpoints);
	if (flags.namespace[0])
		strcpy(s.namespace, flags.namespace);
	if (flags.cluster[0])
		strcpy(s.cluster, flags.cluster);
	if (flags.node_name[0])
		strcpy(s.node_name, flags.node_name);
	if (s.cluster[0] == '\0')
		die("no cluster name: use --cluster or --pgdata with pg_ha.cluster set");
	if (s.password_file[0])
	{
		FILE	   *f = fopen(s.password_file, "r");

		if (f == NULL)
			die("cannot read pg_ha.etcd_password_file %s: %s", s.password_file, strerror(errno));
		if (fgets(s.password, sizeof(s.password), f) == NULL)
			s.password[0] = '\0';
		s.password[strcspn(s.password, "\r\n")] = '\0';
		fclose(f);
	}

	if (strcmp(command, "list") == 0)
		return cmd_list(&s);
	if (strcmp(command, "cancel") == 0 || (strcmp(command, "switchover") == 0 && cancel))
		return cmd_cancel(&s);
	if (strcmp(command, "switchover") == 0)
		return cmd_switchover(&s, candidate, timeout_s);
	if (strcmp(command, "clone") == 0)
	{
		if (!flags.pgdata[0] || !flags.node_name[0] || port == NULL)
			usage();
		return cmd_clone(&s, flags.node_name, port, host);
	}
	if (strcmp(command, "rejoin") == 0)
	{
		if (!flags.pgdata[0])
			usage();
		if (s.node_name[0] == '\0')
			die("no node name: set pg_ha.node_name or use --node-name");
		return cmd_rejoin(&s, if_needed, reclone);
	}
	usage();
}
