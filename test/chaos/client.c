/*
 * client.c: the chaos suite's workload client.
 *
 *   chaos_client CLIENT_NO 'conninfo' OUTFILE
 *
 * Writes rows with unique ids (CLIENT_NO * 10^9 + sequence) into chaos_w,
 * one autocommit INSERT at a time, until SIGTERM.  For every write it appends
 * one line to OUTFILE, flushed at once (a SIGKILL loses at most the write in
 * flight, whose outcome is unknown anyway):
 *
 *   id  status  node  timeline  send_ns  ack_ns  sqlstate  message
 *
 * status: "ok" (the server acknowledged the commit: node and timeline are
 * the ones that committed it, read inside the transaction), "refused" (the
 * server answered ERROR and the session lives on, so the transaction was
 * rolled back and must never appear), "unknown" (FATAL, a lost connection or
 * no answer within 10 s: it may or may not have committed).  Times are
 * CLOCK_MONOTONIC nanoseconds, comparable with the harness's fault log.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define QUERY_DEADLINE_NS (10LL * 1000000000LL)

static volatile sig_atomic_t stopping;

static void
on_term(int sig)
{
	(void) sig;
	stopping = 1;
}

static long long
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One line of the history; tabs and newlines of server text become spaces. */
static void
record(FILE *out, long long id, const char *status, const char *node,
	   const char *tli, long long t_send, long long t_ack,
	   const char *state, const char *msg)
{
	char		clean[200];
	size_t		i;

	snprintf(clean, sizeof(clean), "%s", msg ? msg : "");
	for (i = 0; clean[i]; i++)
		if (clean[i] == '\t' || clean[i] == '\n' || clean[i] == '\r')
			clean[i] = ' ';
	fprintf(out, "%lld\t%s\t%s\t%s\t%lld\t%lld\t%s\t%s\n", id, status,
			node && *node ? node : "-", tli && *tli ? tli : "-",
			t_send, t_ack, state && *state ? state : "-", clean[0] ? clean : "-");
	fflush(out);
}

/* Wait for the whole answer to the query in flight, bounded. */
static PGresult *
await_result(PGconn *conn, long long deadline, int *timed_out)
{
	PGresult   *first = NULL;
	PGresult   *res;

	*timed_out = 0;
	for (;;)
	{
		while (!PQisBusy(conn))
		{
			res = PQgetResult(conn);
			if (res == NULL)
				return first;
			if (first == NULL)
				first = res;
			else
				PQclear(res);
		}
		{
			struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
			long long	left = deadline - mono_ns();
			int			rc;

			if (left <= 0)
			{
				*timed_out = 1;
				return first;
			}
			rc = poll(&pfd, 1, (int) (left / 1000000LL) + 1);
			if (rc < 0 && errno != EINTR)
				return first;
		}
		if (!PQconsumeInput(conn))
			return first ? first : PQgetResult(conn);
	}
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	PGconn	   *conn = NULL;
	FILE	   *out;
	long long	client,
				seq = 0;
	char		conninfo[4096];

	if (argc != 4)
	{
		fprintf(stderr, "usage: %s CLIENT_NO CONNINFO OUTFILE\n", argv[0]);
		return 2;
	}
	client = atoll(argv[1]);
	snprintf(conninfo, sizeof(conninfo),
			 "%s connect_timeout=2 application_name=chaos_client%lld",
			 argv[2], client);
	out = fopen(argv[3], "a");
	if (out == NULL)
	{
		perror(argv[3]);
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	while (!stopping)
	{
		char		sql[512];
		long long	id,
					t_send,
					t_ack;
		PGresult   *res;
		int			timed_out;

		if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			conn = PQconnectdb(conninfo);
			if (PQstatus(conn) != CONNECTION_OK)
			{
				PQfinish(conn);
				conn = NULL;
				usleep(100000);
				continue;
			}
		}
		id = client * 1000000000LL + ++seq;
		snprintf(sql, sizeof(sql),
				 "INSERT INTO chaos_w (id, client, node, tli) VALUES (%lld, %lld, "
				 "current_setting('pg_ha.node_name'), "
				 "('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int) "
				 "RETURNING node, tli", id, client);
		t_send = mono_ns();
		if (!PQsendQuery(conn, sql))
		{
			/* it may have been sent in part: the outcome is unknown */
			record(out, id, "unknown", NULL, NULL, t_send, mono_ns(), "-",
				   PQerrorMessage(conn));
			PQfinish(conn);
			conn = NULL;
			continue;
		}
		res = await_result(conn, t_send + QUERY_DEADLINE_NS, &timed_out);
		t_ack = mono_ns();
		if (timed_out)
		{
			record(out, id, "unknown", NULL, NULL, t_send, t_ack, "-", "no answer within 10 s");
			PQclear(res);
			PQfinish(conn);
			conn = NULL;
			continue;
		}
		if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
			record(out, id, "ok", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				   t_send, t_ack, "-", "-");
		else
		{
			const char *sev = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
			const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
			const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

			/*
			 * ERROR: the transaction rolled back, the session survives.
			 * Anything else (FATAL, PANIC, a client-side error such as a
			 * closed connection) leaves the outcome unknown.
			 */
			if (sev && strcmp(sev, "ERROR") == 0 && PQstatus(conn) == CONNECTION_OK)
			{
				record(out, id, "refused", NULL, NULL, t_send, t_ack, state, msg);
				/* a replica refuses at once: do not spin on it */
				usleep(20000);
			}
			else
			{
				record(out, id, "unknown", NULL, NULL, t_send, t_ack, state, msg);
				PQfinish(conn);
				conn = NULL;
			}
		}
		PQclear(res);
	}
	if (conn)
		PQfinish(conn);
	fclose(out);
	return 0;
}
