/*
 * pg_ha_restore - restore_command helper for pg_ha's WAL archive.
 *
 *   restore_command = 'pg_ha_restore --repo /pg/archive --cluster pg-test %f %p'
 *
 * Fetches one archived file (WAL segment, .history, .partial, .backup),
 * verifies the object's checksums and the decompressed content's CRC-32C,
 * and writes it to %p.  For segments it then starts a detached prefetcher
 * that decodes and verifies the next --prefetch segments into a spool
 * directory beside %p (pg_wal/pg_ha_prefetch), so the following requests
 * are a checksum check and a rename.
 *
 * Exit codes (postgres's restore_command contract, docs/archive.md):
 *   0  restored
 *   1  not in the archive: recovery moves on (streaming, next timeline, end)
 *   2  error: corrupt object, I/O error, bad configuration.  postgres treats
 *      this like "not found" (a standby falls back to streaming and retries;
 *      PITR with a target refuses to end early), and the reason is on stderr,
 *      which goes to the server log
 *   --abort-on-error turns 2 into 255, which makes postgres abort recovery
 *   (exit codes above 125 count as "the command failed", not "not found").
 *
 * The repository location and cluster come from --repo and --cluster, or
 * else from postgresql.conf / postgresql.auto.conf in the data directory
 * (pg_ha.archive_repo, pg_ha.cluster or cluster_name).  The system
 * identifier comes from --sysid or the data directory's global/pg_control.
 *
 * Plain C, linked with archive_repo.o: no postgres backend code.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive_repo.h"

#define EXIT_RESTORED	0
#define EXIT_NOT_FOUND	1
#define EXIT_ERROR		2
#define EXIT_ABORT		255

#define SPOOL_NAME		"pg_ha_prefetch"
#define PREFETCH_MAX	64

static const char *progname = "pg_ha_restore";
static bool verbose = false;
static int	error_exit = EXIT_ERROR;

static void msg(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
msg(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
usage(FILE *out)
{
	fprintf(out,
			"%s restores a file from pg_ha's WAL archive (restore_command helper).\n\n"
			"Usage:\n"
			"  %s [OPTION]... FILE PATH\n\n"
			"  FILE and PATH are restore_command's %%f and %%p.\n\n"
			"Options:\n"
			"  --repo=DIR          repository (default: pg_ha.archive_repo from the config)\n"
			"  --cluster=NAME      cluster name (default: pg_ha.cluster or cluster_name)\n"
			"  --sysid=N           system identifier (default: from PGDATA/global/pg_control)\n"
			"  -D, --pgdata=DIR    data directory (default: the current directory)\n"
			"  --prefetch=N        segments to fetch ahead, 0 disables (default 8)\n"
			"  --abort-on-error    exit 255 on errors, which aborts recovery (default: exit 2)\n"
			"  -v, --verbose       also report files that are not in the archive\n"
			"  --help              show this help\n\n"
			"Exit status: 0 restored, 1 not in the archive, 2 error (255 with --abort-on-error).\n",
			progname, progname);
}

/* ---------- configuration from the data directory ---------- */

/*
 * Reads `name = 'value'` settings from a postgresql.conf-style file; the
 * last occurrence wins.  Only the simple quoted/unquoted forms are parsed;
 * anything unusual means the user passes --repo / --cluster instead.
 */
static void
conf_lookup(const char *file, const char *name, char *value, size_t len)
{
	FILE	   *f = fopen(file, "r");
	char		line[2048];
	size_t		nlen = strlen(name);

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f))
	{
		char	   *p = line;
		char	   *out;
		size_t		n = 0;

		while (isspace((unsigned char) *p))
			p++;
		if (strncmp(p, name, nlen) != 0 ||
			!(isspace((unsigned char) p[nlen]) || p[nlen] == '='))
			continue;
		p += nlen;
		while (isspace((unsigned char) *p))
			p++;
		if (*p == '=')
			p++;
		while (isspace((unsigned char) *p))
			p++;
		out = value;
		if (*p == '\'')
		{
			p++;
			while (*p && n + 1 < len)
			{
				if (*p == '\'' && p[1] == '\'')
					p++;
				else if (*p == '\'')
					break;
				out[n++] = *p++;
			}
		}
		else
		{
			while (*p && !isspace((unsigned char) *p) && *p != '#' && n + 1 < len)
				out[n++] = *p++;
		}
		out[n] = '\0';
	}
	fclose(f);
}

static bool
read_sysid(const char *pgdata, uint64_t *sysid)
{
	char		path[PATH_MAX];
	int			fd;
	uint64_t	v;

	/* ControlFileData starts with the 64-bit system identifier */
	snprintf(path, sizeof(path), "%s/global/pg_control", pgdata);
	fd = open(path, O_RDONLY);
	if (fd < 0)
	{
		msg("could not open \"%s\": %s (pass --sysid)", path, strerror(errno));
		return false;
	}
	if (read(fd, &v, sizeof(v)) != (ssize_t) sizeof(v))
	{
		msg("could not read \"%s\"", path);
		close(fd);
		return false;
	}
	close(fd);
	*sysid = v;
	return true;
}

/* ---------- output ---------- */

/* Writes data to path (not fsync'd: postgres re-fetches after a crash). */
static bool
write_to(const char *path, const void *data, size_t len)
{
	char		tmp[PATH_MAX];
	int			fd;
	size_t		done = 0;

	snprintf(tmp, sizeof(tmp), "%s.pg_ha_restore.%d", path, (int) getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
	{
		msg("could not create \"%s\": %s", tmp, strerror(errno));
		return false;
	}
	while (done < len)
	{
		ssize_t		n = write(fd, (const char *) data + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			msg("could not write \"%s\": %s", tmp, n == 0 ? "no space" : strerror(errno));
			close(fd);
			unlink(tmp);
			return false;
		}
		done += n;
	}
	if (close(fd) != 0 || rename(tmp, path) != 0)
	{
		msg("could not write \"%s\": %s", path, strerror(errno));
		unlink(tmp);
		return false;
	}
	return true;
}

/* ---------- the prefetch spool ---------- */

/* spool entries are "<segment>-<crc32c hex>": verified when used */
static bool
spool_take(const char *spool, const char *file, const char *path, uint64_t *size)
{
	DIR		   *d = opendir(spool);
	struct dirent *de;
	char		found[PATH_MAX] = "";
	unsigned int crc = 0;
	ArBuf		buf = {0};
	char		err[AR_ERR_LEN];
	bool		ok = false;

	if (d == NULL)
		return false;
	while ((de = readdir(d)) != NULL)
	{
		if (strncmp(de->d_name, file, 24) == 0 && de->d_name[24] == '-' &&
			strlen(de->d_name) == 33 && sscanf(de->d_name + 25, "%8x", &crc) == 1)
		{
			snprintf(found, sizeof(found), "%s/%s", spool, de->d_name);
			break;
		}
	}
	closedir(d);
	if (found[0] == '\0')
		return false;
	if (ar_read_file(found, &buf, err, sizeof(err)) == AR_OK &&
		ar_crc32c(0, buf.data, buf.len) == crc)
		ok = (rename(found, path) == 0);
	*size = buf.len;
	if (!ok)
	{
		if (verbose)
			msg("prefetched copy of \"%s\" failed its check, fetching it again", file);
		unlink(found);
	}
	ar_buf_free(&buf);
	return ok;
}

static void
prefetch(ArchiveRepo *repo, const char *cluster, uint64_t sysid, const char *spool,
		 const char *file, uint64_t seg_size, int count)
{
	char		lockpath[PATH_MAX];
	int			lockfd;
	DIR		   *d;
	struct dirent *de;
	char		name[32];
	int			have = 0;
	ArBuf		buf = {0};

	if (mkdir(spool, 0700) != 0 && errno != EEXIST)
		return;
	snprintf(lockpath, sizeof(lockpath), "%s/.lock", spool);
	lockfd = open(lockpath, O_RDWR | O_CREAT, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0)
		return;					/* another prefetcher is on it */

	/* drop what recovery has passed, and leftovers of killed prefetchers */
	if ((d = opendir(spool)) != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char		p[PATH_MAX];

			if (de->d_name[0] == '.')
				continue;
			if (strstr(de->d_name, ".tmp") != NULL || strncmp(de->d_name, file, 24) <= 0)
			{
				snprintf(p, sizeof(p), "%s/%s", spool, de->d_name);
				unlink(p);
			}
			else
				have++;
		}
		closedir(d);
	}

	strcpy(name, file);
	for (int i = 0; i < count; i++)
	{
		char		next[32];
		char		key[AR_KEY_LEN];
		char		err[AR_ERR_LEN];
		char		path[PATH_MAX];
		char		tmp[PATH_MAX];
		bool		present = false;

		if (!ar_next_segment(name, seg_size, next, sizeof(next)))
			break;
		strcpy(name, next);
		if ((d = opendir(spool)) != NULL)
		{
			while ((de = readdir(d)) != NULL)
				if (strncmp(de->d_name, name, 24) == 0 && de->d_name[24] == '-')
					present = true;
			closedir(d);
		}
		if (present)
			continue;
		if (!ar_object_key(cluster, sysid, name, key, sizeof(key), err, sizeof(err)))
			break;
		/* any failure stops here: the request for that file reports it */
		if (ar_repo_fetch(repo, key, &buf, NULL, err, sizeof(err)) != AR_OK)
			break;
		snprintf(path, sizeof(path), "%s/%s-%08x", spool, name, ar_crc32c(0, buf.data, buf.len));
		snprintf(tmp, sizeof(tmp), "%s/%s.tmp", spool, name);
		if (!write_to(tmp, buf.data, buf.len) || rename(tmp, path) != 0)
		{
			unlink(tmp);
			break;
		}
	}
	ar_buf_free(&buf);
	close(lockfd);
}

/* Detaches a child to prefetch, so postgres gets its file now. */
static void
start_prefetch(ArchiveRepo *repo, const char *cluster, uint64_t sysid, const char *spool,
			   const char *file, uint64_t seg_size, int count)
{
	pid_t		pid;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
	{
		if (pid > 0)
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
		return;
	}
	/* child: fork again so the prefetcher is not our child, then work */
	setsid();
	if (fork() != 0)
		_exit(0);
	{
		int			null = open("/dev/null", O_RDWR);

		if (null >= 0)
		{
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			if (!verbose)
				dup2(null, STDERR_FILENO);
			close(null);
		}
	}
	prefetch(repo, cluster, sysid, spool, file, seg_size, count);
	_exit(0);
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"repo", required_argument, NULL, 'r'},
		{"cluster", required_argument, NULL, 'c'},
		{"sysid", required_argument, NULL, 's'},
		{"pgdata", required_argument, NULL, 'D'},
		{"prefetch", required_argument, NULL, 'p'},
		{"abort-on-error", no_argument, NULL, 'a'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	char		repo_loc[1024] = "";
	char		cluster[128] = "";
	const char *pgdata = ".";
	uint64_t	sysid = 0;
	bool		have_sysid = false;
	int			nprefetch = 8;
	const char *file;
	const char *path;
	char		key[AR_KEY_LEN];
	char		err[AR_ERR_LEN];
	char		spool[PATH_MAX];
	ArchiveRepo *repo;
	ArBuf		buf = {0};
	ArHeader	hdr;
	struct stat st;
	int			c;
	int			rc;

	while ((c = getopt_long(argc, argv, "D:vh", long_options, NULL)) != -1)
	{
		char	   *end;

		switch (c)
		{
			case 'r':
				snprintf(repo_loc, sizeof(repo_loc), "%s", optarg);
				break;
			case 'c':
				snprintf(cluster, sizeof(cluster), "%s", optarg);
				break;
			case 's':
				errno = 0;
				sysid = strtoull(optarg, &end, 10);
				if (errno || *end || optarg[0] == '\0')
				{
					msg("invalid --sysid \"%s\"", optarg);
					return EXIT_ERROR;
				}
				have_sysid = true;
				break;
			case 'D':
				pgdata = optarg;
				break;
			case 'p':
				nprefetch = atoi(optarg);
				if (nprefetch < 0 || nprefetch > PREFETCH_MAX)
				{
					msg("--prefetch must be between 0 and %d", PREFETCH_MAX);
					return EXIT_ERROR;
				}
				break;
			case 'a':
				error_exit = EXIT_ABORT;
				break;
			case 'v':
				verbose = true;
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return EXIT_ERROR;
		}
	}
	if (argc - optind != 2)
	{
		usage(stderr);
		return error_exit;
	}
	file = argv[optind];
	path = argv[optind + 1];

	if (repo_loc[0] == '\0' || cluster[0] == '\0')
	{
		char		conf[PATH_MAX];
		char		v_repo[1024] = "",
					v_cluster[128] = "",
					v_cname[128] = "";

		for (int i = 0; i < 2; i++)
		{
			snprintf(conf, sizeof(conf), "%s/%s", pgdata,
					 i == 0 ? "postgresql.conf" : "postgresql.auto.conf");
			conf_lookup(conf, "pg_ha.archive_repo", v_repo, sizeof(v_repo));
			conf_lookup(conf, "pg_ha.cluster", v_cluster, sizeof(v_cluster));
			conf_lookup(conf, "cluster_name", v_cname, sizeof(v_cname));
		}
		if (repo_loc[0] == '\0')
			snprintf(repo_loc, sizeof(repo_loc), "%s", v_repo);
		if (cluster[0] == '\0')
			snprintf(cluster, sizeof(cluster), "%s", v_cluster[0] ? v_cluster : v_cname);
	}
	if (repo_loc[0] == '\0' || cluster[0] == '\0')
	{
		msg("no repository or cluster name: pass --repo and --cluster, or set pg_ha.archive_repo and pg_ha.cluster in %s/postgresql.conf", pgdata);
		return error_exit;
	}
	if (!have_sysid && !read_sysid(pgdata, &sysid))
		return error_exit;
	if (!ar_object_key(cluster, sysid, file, key, sizeof(key), err, sizeof(err)))
	{
		msg("%s", err);
		return error_exit;
	}
	repo = ar_repo_open(repo_loc, err, sizeof(err));
	if (repo == NULL)
	{
		msg("%s", err);
		return error_exit;
	}
	/* an unmounted repository is an error, not an empty archive */
	if (stat(repo->location, &st) != 0 || !S_ISDIR(st.st_mode))
	{
		msg("repository \"%s\" is not an accessible directory: %s", repo->location,
			errno ? strerror(errno) : "not a directory");
		return error_exit;
	}

	{
		const char *slash = strrchr(path, '/');

		snprintf(spool, sizeof(spool), "%.*s%s" SPOOL_NAME,
				 slash ? (int) (slash - path) : 0, path, slash ? "/" : "");
	}
	if (ar_file_kind(file) == AR_FILE_SEGMENT && nprefetch > 0)
	{
		uint64_t	seg_size = 0;

		if (spool_take(spool, file, path, &seg_size))
		{
			/* keep the spool ahead of recovery */
			start_prefetch(repo, cluster, sysid, spool, file, seg_size, nprefetch);
			return EXIT_RESTORED;
		}
	}

	rc = ar_repo_fetch(repo, key, &buf, &hdr, err, sizeof(err));
	if (rc == AR_NOT_FOUND)
	{
		if (verbose)
		{
			char		dir[PATH_MAX];

			snprintf(dir, sizeof(dir), "%s/%s/%llu", repo->location, cluster,
					 (unsigned long long) sysid);
			if (stat(dir, &st) != 0)
				msg("\"%s\" not found: the repository has no archive for cluster \"%s\" with system identifier %llu",
					file, cluster, (unsigned long long) sysid);
			else
				msg("\"%s\" is not in the archive", file);
		}
		return EXIT_NOT_FOUND;
	}
	if (rc != AR_OK)
	{
		msg("could not restore \"%s\" (key \"%s\" in \"%s\"): %s", file, key, repo->location, err);
		if (rc == AR_CORRUPT)
			msg("the archived copy of \"%s\" is corrupt and was refused", file);
		return error_exit;
	}
	if (!write_to(path, buf.data, buf.len))
		return error_exit;
	if (ar_file_kind(file) == AR_FILE_SEGMENT && nprefetch > 0)
		start_prefetch(repo, cluster, sysid, spool, file, hdr.orig_len, nprefetch);
	ar_buf_free(&buf);
	ar_repo_close(repo);
	return EXIT_RESTORED;
}
