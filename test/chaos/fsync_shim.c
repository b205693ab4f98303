/*
 * fsync_shim.c: LD_PRELOAD library for the chaos suite's slow-disk fault.
 *
 * No device-mapper (dm-delay) is needed: postgres is started with this
 * library preloaded, and every fsync()/fdatasync() first sleeps for the
 * number of milliseconds written in the file named by
 * PGHA_CHAOS_FSYNC_DELAY_FILE (absent or empty file: no delay).  The harness
 * writes that file to start the fault and removes it to heal.  The file is
 * read at most every 100 ms, so the shim costs a clock read per call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ms;
static struct timespec last_read;

static long
now_ms(struct timespec *ts)
{
	return ts->tv_sec * 1000L + ts->tv_nsec / 1000000L;
}

/* The delay in force: the file's number, re-read at most every 100 ms. */
static long
current_delay(void)
{
	const char *path = getenv("PGHA_CHAOS_FSYNC_DELAY_FILE");
	struct timespec now;
	char		buf[32];
	ssize_t		n;
	int			fd;

	if (path == NULL)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (last_read.tv_sec != 0 && now_ms(&now) - now_ms(&last_read) < 100)
		return delay_ms;
	last_read = now;
	delay_ms = 0;
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0)
	{
		buf[n] = '\0';
		delay_ms = strtol(buf, NULL, 10);
	}
	return delay_ms;
}

static void
stall(void)
{
	long		ms = current_delay();

	if (ms > 0)
	{
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
}

int
fsync(int fd)
{
	static int	(*real) (int);

	if (real == NULL)
		real = (int (*) (int)) dlsym(RTLD_NEXT, "fsync");
	stall();
	return real(fd);
}

int
fdatasync(int fd)
{
	static int	(*real) (int);

	if (real == NULL)
		real = (int (*) (int)) dlsym(RTLD_NEXT, "fdatasync");
	stall();
	return real(fd);
}
