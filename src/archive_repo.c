/*
 * archive_repo.c - WAL archive repository: checksums, the object format,
 * key layout, durable local file I/O over io_uring, and the local /
 * mounted-path backend.
 *
 * Plain C on purpose (see archive_repo.h): the archive module, its pusher
 * workers and the pg_ha_restore program share this file.  Nothing here
 * allocates with palloc or reports with ereport; every function returns an
 * AR_* code and writes a one-line message into the caller's buffer.
 */
#include "archive_repo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <liburing.h>
#include <lz4.h>
#include <zstd.h>

static const char ar_magic[8] = {'P', 'G', 'H', 'A', 'W', 'A', 'L', '1'};

static void ar_err(char *err, size_t errlen, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

static void
ar_err(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---------- buffers ---------- */

void
ar_buf_free(ArBuf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = buf->cap = 0;
}

/*
 * Buffers are 4 kB aligned with room up to the next 4 kB boundary, so a
 * local write can use O_DIRECT (ar_write_file_durable).
 */
int
ar_buf_reserve(ArBuf *buf, size_t cap)
{
	void	   *p;

	cap = (cap + 2 * AR_ALIGN - 1) & ~(size_t) (AR_ALIGN - 1);
	if (buf->cap >= cap)
		return AR_OK;
	if (posix_memalign(&p, AR_ALIGN, cap) != 0)
		return AR_ERROR;
	if (buf->len > 0)
		memcpy(p, buf->data, buf->len);
	free(buf->data);
	buf->data = p;
	buf->cap = cap;
	return AR_OK;
}

/* ---------- CRC-32C (Castagnoli) ---------- */

static uint32_t crc32c_table[256];
static int	crc32c_mode;		/* 0 unknown, 1 SSE4.2, 2 table */

static uint32_t
crc32c_sw(uint32_t crc, const unsigned char *p, size_t len)
{
	while (len--)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2")))
static uint32_t
crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t	c = crc;
	uint32_t	c32;

	while (len >= 8)
	{
		uint64_t	v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	c32 = (uint32_t) c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}
#endif

static void
crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++)
	{
		uint32_t	c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc32c_table[i] = c;
	}
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	crc32c_mode = __builtin_cpu_supports("sse4.2") ? 1 : 2;
#else
	crc32c_mode = 2;
#endif
}

/* Standard CRC-32C; chain by passing the previous result (start with 0). */
uint32_t
ar_crc32c(uint32_t crc, const void *data, size_t len)
{
	if (crc32c_mode == 0)
		crc32c_init();
#if defined(__x86_64__) && defined(__GNUC__)
	if (crc32c_mode == 1)
		return ~crc32c_hw(~crc, data, len);
#endif
	return ~crc32c_sw(~crc, data, len);
}

/* ---------- names and keys ---------- */

static bool
all_hex(const char *s, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	}
	return true;
}

ArFileKind
ar_file_kind(const char *name)
{
	size_t		len = strlen(name);

	if (len == 24 && all_hex(name, 24))
		return AR_FILE_SEGMENT;
	if (len == 32 && all_hex(name, 24) && strcmp(name + 24, ".partial") == 0)
		return AR_FILE_PARTIAL;
	if (len == 40 && all_hex(name, 24) && name[24] == '.' && all_hex(name + 25, 8) &&
		strcmp(name + 33, ".backup") == 0)
		return AR_FILE_BACKUP;
	if (len == 16 && all_hex(name, 8) && strcmp(name + 8, ".history") == 0)
		return AR_FILE_HISTORY;
	return AR_FILE_INVALID;
}

bool
ar_object_key(const char *cluster, uint64_t sysid, const char *name,
			  char *key, size_t keylen, char *err, size_t errlen)
{
	ArFileKind	kind = ar_file_kind(name);
	size_t		clen = strlen(cluster);
	int			n;

	if (clen == 0 || clen > 63 || strcmp(cluster, ".") == 0 || strcmp(cluster, "..") == 0)
	{
		ar_err(err, errlen, "cluster name \"%s\" is empty, too long or not a path component", cluster);
		return false;
	}
	for (const char *p = cluster; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
		{
			ar_err(err, errlen, "cluster name \"%s\" contains '%c'", cluster, *p);
			return false;
		}
	}
	switch (kind)
	{
		case AR_FILE_SEGMENT:
		case AR_FILE_PARTIAL:
		case AR_FILE_BACKUP:
			n = snprintf(key, keylen, "%s/%llu/wal/%.8s/%.16s/%s", cluster,
						 (unsigned long long) sysid, name, name, name);
			break;
		case AR_FILE_HISTORY:
			n = snprintf(key, keylen, "%s/%llu/history/%s", cluster,
						 (unsigned long long) sysid, name);
			break;
		default:
			ar_err(err, errlen, "\"%s\" is not a WAL segment, .partial, .backup or .history file name", name);
			return false;
	}
	if (n < 0 || (size_t) n >= keylen)
	{
		ar_err(err, errlen, "repository key for \"%s\" is too long", name);
		return false;
	}
	return true;
}

bool
ar_next_segment(const char *name, uint64_t seg_size, char *next, size_t len)
{
	unsigned int tli,
				log,
				seg;
	uint64_t	segs_per_id;

	if (ar_file_kind(name) != AR_FILE_SEGMENT || seg_size == 0 || len < 25)
		return false;
	if (sscanf(name, "%08X%08X%08X", &tli, &log, &seg) != 3)
		return false;
	segs_per_id = UINT64_C(0x100000000) / seg_size;
	if ((uint64_t) seg + 1 >= segs_per_id)
	{
		log++;
		seg = 0;
	}
	else
		seg++;
	snprintf(next, len, "%08X%08X%08X", tli, log, seg);
	return true;
}

/* ---------- object encoding ---------- */

const char *
ar_compression_name(ArCompression c)
{
	switch (c)
	{
		case AR_COMPRESS_NONE:
			return "none";
		case AR_COMPRESS_LZ4:
			return "lz4";
		case AR_COMPRESS_ZSTD:
			return "zstd";
	}
	return "unknown";
}

bool
ar_compression_parse(const char *s, ArCompression *c)
{
	if (strcmp(s, "none") == 0)
		*c = AR_COMPRESS_NONE;
	else if (strcmp(s, "lz4") == 0)
		*c = AR_COMPRESS_LZ4;
	else if (strcmp(s, "zstd") == 0)
		*c = AR_COMPRESS_ZSTD;
	else
		return false;
	return true;
}

/* Little-endian field writers of the object header (also the fuzz target's). */
void
ar_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char) (v >> (8 * i));
}

void
ar_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char) (v >> (8 * i));
}

static uint32_t
get_u32(const unsigned char *p)
{
	uint32_t	v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t
get_u64(const unsigned char *p)
{
	uint64_t	v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* One compression context per process, reused across segments. */
static ZSTD_CCtx *zstd_cctx;
static ZSTD_DCtx *zstd_dctx;

int
ar_encode(const char *name, const void *data, size_t len,
		  ArCompression compression, int level,
		  ArBuf *out, uint32_t *orig_crc, char *err, size_t errlen)
{
	size_t		bound;
	size_t		payload_len;
	unsigned char *h;
	uint32_t	crc = ar_crc32c(0, data, len);
	bool		in_place = out->data != NULL && data == out->data + AR_HEADER_LEN;

	switch (compression)
	{
		case AR_COMPRESS_NONE:
			bound = len;
			break;
		case AR_COMPRESS_LZ4:
			if (len > (size_t) LZ4_MAX_INPUT_SIZE)
			{
				ar_err(err, errlen, "file too large for lz4 (%zu bytes)", len);
				return AR_ERROR;
			}
			bound = (size_t) LZ4_compressBound((int) len);
			break;
		case AR_COMPRESS_ZSTD:
			bound = ZSTD_compressBound(len);
			break;
		default:
			ar_err(err, errlen, "unknown compression %d", (int) compression);
			return AR_ERROR;
	}
	if (in_place && compression != AR_COMPRESS_NONE)
	{
		ar_err(err, errlen, "internal error: in-place content can only be stored uncompressed");
		return AR_ERROR;
	}
	if (!in_place && ar_buf_reserve(out, AR_HEADER_LEN + bound) != AR_OK)
	{
		ar_err(err, errlen, "out of memory (%zu bytes)", AR_HEADER_LEN + bound);
		return AR_ERROR;
	}

	switch (compression)
	{
		case AR_COMPRESS_NONE:
			/* read straight into place by ar_repo_push_file: no copy */
			if (!in_place)
				memcpy(out->data + AR_HEADER_LEN, data, len);
			payload_len = len;
			break;
		case AR_COMPRESS_LZ4:
			{
				int			n = LZ4_compress_default(data, (char *) out->data + AR_HEADER_LEN,
													 (int) len, (int) bound);

				if (n <= 0 && len > 0)
				{
					ar_err(err, errlen, "lz4 compression failed");
					return AR_ERROR;
				}
				payload_len = (size_t) n;
				break;
			}
		case AR_COMPRESS_ZSTD:
		default:
			{
				size_t		n;

				if (zstd_cctx == NULL && (zstd_cctx = ZSTD_createCCtx()) == NULL)
				{
					ar_err(err, errlen, "out of memory for a zstd context");
					return AR_ERROR;
				}
				n = ZSTD_compressCCtx(zstd_cctx, out->data + AR_HEADER_LEN, bound,
									  data, len, level);
				if (ZSTD_isError(n))
				{
					ar_err(err, errlen, "zstd compression failed: %s", ZSTD_getErrorName(n));
					return AR_ERROR;
				}
				payload_len = n;
				break;
			}
	}

	h = out->data;
	memset(h, 0, AR_HEADER_LEN);
	memcpy(h, ar_magic, 8);
	ar_put_u32(h + 8, 1);
	ar_put_u32(h + 12, (uint32_t) compression);
	ar_put_u64(h + 16, len);
	ar_put_u64(h + 24, payload_len);
	ar_put_u32(h + 32, crc);
	ar_put_u32(h + 36, compression == AR_COMPRESS_NONE ? crc :
			ar_crc32c(0, h + AR_HEADER_LEN, payload_len));
	strncpy((char *) h + 40, name, 20);
	ar_put_u32(h + 60, ar_crc32c(0, h, 60));
	out->len = AR_HEADER_LEN + payload_len;
	if (orig_crc)
		*orig_crc = crc;
	return AR_OK;
}

/*
 * Largest original we accept: WAL segments are at most 1 GB.  At 2 GB an
 * lz4 capacity (an int) would already be negative.
 */
#define AR_MAX_ORIG ((uint64_t) 1 << 30)
/* Largest payload: what lz4 or zstd may make of AR_MAX_ORIG bytes. */
#define AR_MAX_PAYLOAD (AR_MAX_ORIG + (AR_MAX_ORIG >> 4))

int
ar_decode_header(const void *obj, size_t len, ArHeader *hdr, char *err, size_t errlen)
{
	const unsigned char *h = obj;

	if (len < AR_HEADER_LEN)
	{
		ar_err(err, errlen, "object is %zu bytes, shorter than its header", len);
		return AR_CORRUPT;
	}
	if (memcmp(h, ar_magic, 8) != 0)
	{
		ar_err(err, errlen, "object does not start with the pg_ha archive magic");
		return AR_CORRUPT;
	}
	if (get_u32(h + 60) != ar_crc32c(0, h, 60))
	{
		ar_err(err, errlen, "object header checksum mismatch");
		return AR_CORRUPT;
	}
	memset(hdr, 0, sizeof(*hdr));
	hdr->version = get_u32(h + 8);
	hdr->compression = get_u32(h + 12);
	hdr->orig_len = get_u64(h + 16);
	hdr->payload_len = get_u64(h + 24);
	hdr->orig_crc = get_u32(h + 32);
	hdr->payload_crc = get_u32(h + 36);
	memcpy(hdr->name, h + 40, 20);
	hdr->name[20] = '\0';
	if (hdr->version != 1)
	{
		ar_err(err, errlen, "object format version %u is not supported", hdr->version);
		return AR_CORRUPT;
	}
	if (hdr->compression > AR_COMPRESS_ZSTD || hdr->orig_len > AR_MAX_ORIG ||
		hdr->payload_len > AR_MAX_PAYLOAD)
	{
		ar_err(err, errlen, "object header holds impossible values");
		return AR_CORRUPT;
	}
	return AR_OK;
}

int
ar_decode(const void *obj, size_t len, ArBuf *out, char *err, size_t errlen)
{
	ArHeader	hdr;
	const unsigned char *payload = (const unsigned char *) obj + AR_HEADER_LEN;
	int			rc;

	if ((rc = ar_decode_header(obj, len, &hdr, err, errlen)) != AR_OK)
		return rc;
	if (len - AR_HEADER_LEN != hdr.payload_len)
	{
		ar_err(err, errlen, "object holds %zu payload bytes, header says %llu (truncated or padded)",
			   len - AR_HEADER_LEN, (unsigned long long) hdr.payload_len);
		return AR_CORRUPT;
	}
	if (ar_crc32c(0, payload, hdr.payload_len) != hdr.payload_crc)
	{
		ar_err(err, errlen, "object payload checksum mismatch");
		return AR_CORRUPT;
	}
	if (ar_buf_reserve(out, hdr.orig_len ? hdr.orig_len : 1) != AR_OK)
	{
		ar_err(err, errlen, "out of memory (%llu bytes)", (unsigned long long) hdr.orig_len);
		return AR_ERROR;
	}
	switch ((ArCompression) hdr.compression)
	{
		case AR_COMPRESS_NONE:
			if (hdr.payload_len != hdr.orig_len)
			{
				ar_err(err, errlen, "uncompressed object length mismatch");
				return AR_CORRUPT;
			}
			memcpy(out->data, payload, hdr.orig_len);
			break;
		case AR_COMPRESS_LZ4:
			{
				int			n = LZ4_decompress_safe((const char *) payload, (char *) out->data,
													(int) hdr.payload_len, (int) hdr.orig_len);

				if (n < 0 || (uint64_t) n != hdr.orig_len)
				{
					ar_err(err, errlen, "lz4 payload does not decompress to %llu bytes",
						   (unsigned long long) hdr.orig_len);
					return AR_CORRUPT;
				}
				break;
			}
		case AR_COMPRESS_ZSTD:
			{
				size_t		n;

				if (zstd_dctx == NULL && (zstd_dctx = ZSTD_createDCtx()) == NULL)
				{
					ar_err(err, errlen, "out of memory for a zstd context");
					return AR_ERROR;
				}
				n = ZSTD_decompressDCtx(zstd_dctx, out->data, hdr.orig_len,
										payload, hdr.payload_len);
				if (ZSTD_isError(n) || n != hdr.orig_len)
				{
					ar_err(err, errlen, "zstd payload does not decompress to %llu bytes%s%s",
						   (unsigned long long) hdr.orig_len,
						   ZSTD_isError(n) ? ": " : "", ZSTD_isError(n) ? ZSTD_getErrorName(n) : "");
					return AR_CORRUPT;
				}
				break;
			}
	}
	out->len = hdr.orig_len;
	if (ar_crc32c(0, out->data, out->len) != hdr.orig_crc)
	{
		ar_err(err, errlen, "decompressed content checksum mismatch");
		return AR_CORRUPT;
	}
	return AR_OK;
}

/* ---------- local file I/O ---------- */

/*
 * One io_uring per process, made on first use (and again after fork).  If
 * the kernel or a seccomp policy refuses io_uring we fall back to plain
 * pread/pwrite/fsync for the life of the process.
 */
#define AR_RING_DEPTH	32
#define AR_IO_CHUNKS	16		/* at most this many reads/writes per batch */

static struct io_uring ar_ring;
static pid_t ar_ring_pid;
static bool ar_ring_ok;

static bool
ring_get(void)
{
	pid_t		me = getpid();

	if (ar_ring_pid == me)
		return ar_ring_ok;
	/* a ring inherited over fork belongs to the parent: leave it alone */
	ar_ring_pid = me;
	ar_ring_ok = (io_uring_queue_init(AR_RING_DEPTH, &ar_ring, 0) == 0);
	return ar_ring_ok;
}

static size_t
chunk_size_for(size_t len)
{
	size_t		chunk = (len + AR_IO_CHUNKS - 1) / AR_IO_CHUNKS;

	chunk = (chunk + 65535) & ~(size_t) 65535;
	return chunk < 65536 ? 65536 : chunk;
}

/* pread/pwrite loops, used as the fallback and to finish short transfers */
static ssize_t
full_pread(int fd, void *buf, size_t len, off_t off)
{
	size_t		done = 0;

	while (done < len)
	{
		ssize_t		n = pread(fd, (char *) buf + done, len - done, off + done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += n;
	}
	return (ssize_t) done;
}

static int
full_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	size_t		done = 0;

	while (done < len)
	{
		ssize_t		n = pwrite(fd, (const char *) buf + done, len - done, off + done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			if (n == 0)
				errno = ENOSPC;
			return -1;
		}
		done += n;
	}
	return 0;
}

/*
 * Submits reads (write = false) or writes of [0, len) in chunks, plus an
 * fsync after the writes when fsync_after, and waits for all of them.
 * done[i] gets each chunk's byte count so the caller can finish short
 * transfers.  Returns 0, -errno of the first failed operation, or 1 when
 * the ring could not take the batch (nothing was done: use the fallback).
 */
static int
ring_batch(int fd, void *buf, size_t len, bool write, bool fsync_after,
		   size_t chunk, size_t *done, int nchunks)
{
	struct io_uring_cqe *cqe;
	int			nsub = 0;
	int			first_err = 0;

	for (int i = 0; i < nchunks; i++)
	{
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ar_ring);
		size_t		off = (size_t) i * chunk;
		size_t		n = (off + chunk > len) ? len - off : chunk;

		if (sqe == NULL)
			return 1;
		if (write)
			io_uring_prep_write(sqe, fd, (char *) buf + off, n, off);
		else
			io_uring_prep_read(sqe, fd, (char *) buf + off, n, off);
		io_uring_sqe_set_data64(sqe, (uint64_t) i);
		done[i] = 0;
		nsub++;
	}
	if (fsync_after)
	{
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ar_ring);

		if (sqe == NULL)
			return 1;
		/* drain: the fsync starts only after every write has completed */
		io_uring_prep_fsync(sqe, fd, 0);
		io_uring_sqe_set_flags(sqe, IOSQE_IO_DRAIN);
		io_uring_sqe_set_data64(sqe, (uint64_t) UINT32_MAX);
		nsub++;
	}
	if (io_uring_submit(&ar_ring) < 0)
		return 1;				/* nothing in flight: use the fallback */
	for (int i = 0; i < nsub; i++)
	{
		int			rc;
		uint64_t	tag;

		do
			rc = io_uring_wait_cqe(&ar_ring, &cqe);
		while (rc == -EINTR);
		if (rc < 0)
			return rc;
		tag = io_uring_cqe_get_data64(cqe);
		if (cqe->res < 0 && first_err == 0)
			first_err = cqe->res;
		else if (tag != UINT32_MAX && cqe->res >= 0)
			done[tag] = (size_t) cqe->res;
		io_uring_cqe_seen(&ar_ring, cqe);
	}
	return first_err;
}

int
ar_read_file(const char *path, ArBuf *out, char *err, size_t errlen)
{
	return ar_read_file_at(path, out, 0, err, errlen);
}

/*
 * Opens path for reading, refusing anything but a regular file.  O_NONBLOCK
 * makes open() of a FIFO return at once instead of waiting for a writer
 * (a FIFO in the repository once blocked pg_ha_restore forever); it is
 * cleared again for the regular file, where io_uring would otherwise answer
 * EAGAIN for pages not in the cache.
 */
static int
open_regular(const char *path, struct stat *st, char *err, size_t errlen)
{
	int			fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
	{
		if (errno == ENOENT)
		{
			ar_err(err, errlen, "file \"%s\" does not exist", path);
			return -AR_NOT_FOUND;
		}
		ar_err(err, errlen, "could not open \"%s\": %s", path, strerror(errno));
		return -AR_ERROR;
	}
	if (fstat(fd, st) != 0)
	{
		ar_err(err, errlen, "could not stat \"%s\": %s", path, strerror(errno));
		close(fd);
		return -AR_ERROR;
	}
	if (!S_ISREG(st->st_mode))
	{
		ar_err(err, errlen, "\"%s\" is not a regular file", path);
		close(fd);
		return -AR_ERROR;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
	{
		ar_err(err, errlen, "could not set flags of \"%s\": %s", path, strerror(errno));
		close(fd);
		return -AR_ERROR;
	}
	return fd;
}

/* Reads len bytes of fd (path, for messages) to out->data + offset. */
static int
read_fd_at(int fd, const char *path, size_t len, ArBuf *out, size_t offset,
		   char *err, size_t errlen)
{
	unsigned char *base;
	bool		uring_done = false;

	out->len = 0;
	if (ar_buf_reserve(out, offset + (len ? len : 1)) != AR_OK)
	{
		ar_err(err, errlen, "out of memory reading \"%s\" (%zu bytes)", path, len);
		return AR_ERROR;
	}
	base = out->data + offset;

	if (len > 0 && ring_get())
	{
		size_t		chunk = chunk_size_for(len);
		int			nchunks = (int) ((len + chunk - 1) / chunk);
		size_t		done[AR_IO_CHUNKS + 1];
		int			rc = ring_batch(fd, base, len, false, false, chunk, done, nchunks);

		if (rc == 0)
		{
			uring_done = true;
			for (int i = 0; i < nchunks; i++)
			{
				size_t		off = (size_t) i * chunk;
				size_t		want = (off + chunk > len) ? len - off : chunk;

				if (done[i] < want &&
					full_pread(fd, base + off + done[i], want - done[i], off + done[i]) !=
					(ssize_t) (want - done[i]))
				{
					ar_err(err, errlen, "could not read \"%s\": %s", path,
						   errno ? strerror(errno) : "file shrank while being read");
					return AR_ERROR;
				}
			}
		}
		else if (rc < 0)
		{
			ar_err(err, errlen, "could not read \"%s\": %s", path, strerror(-rc));
			return AR_ERROR;
		}
	}
	errno = 0;
	if (!uring_done && len > 0 && full_pread(fd, base, len, 0) != (ssize_t) len)
	{
		ar_err(err, errlen, "could not read \"%s\": %s", path,
			   errno ? strerror(errno) : "file shrank while being read");
		return AR_ERROR;
	}
	out->len = offset + len;
	return AR_OK;
}

int
ar_read_file_at(const char *path, ArBuf *out, size_t offset, char *err, size_t errlen)
{
	struct stat st;
	int			fd = open_regular(path, &st, err, errlen);
	int			rc;

	if (fd < 0)
		return -fd;
	/* nothing pg_ha reads (a WAL file, an object, a spool copy) is larger */
	if ((uint64_t) st.st_size > AR_HEADER_LEN + AR_MAX_PAYLOAD)
	{
		ar_err(err, errlen, "\"%s\" is %lld bytes, larger than any WAL file or archive object",
			   path, (long long) st.st_size);
		close(fd);
		return AR_ERROR;
	}
	rc = read_fd_at(fd, path, (size_t) st.st_size, out, offset, err, errlen);
	close(fd);
	return rc;
}

/*
 * Reads an object: its header first, and the rest only when the file's
 * size is the one the header announces.  A large file that is not an
 * object, or whose header lies about its size, costs 64 bytes of reading.
 */
static int
read_object(const char *path, ArBuf *out, char *err, size_t errlen)
{
	struct stat st;
	unsigned char hbuf[AR_HEADER_LEN];
	ArHeader	hdr;
	ssize_t		got;
	int			fd = open_regular(path, &st, err, errlen);
	int			rc;

	if (fd < 0)
		return -fd;
	got = full_pread(fd, hbuf, sizeof(hbuf), 0);
	if (got < 0)
	{
		ar_err(err, errlen, "could not read \"%s\": %s", path, strerror(errno));
		close(fd);
		return AR_ERROR;
	}
	if ((rc = ar_decode_header(hbuf, (size_t) got, &hdr, err, errlen)) != AR_OK)
	{
		close(fd);
		return rc;
	}
	if ((uint64_t) st.st_size != AR_HEADER_LEN + hdr.payload_len)
	{
		ar_err(err, errlen, "object is %lld bytes, its header says %llu (truncated or padded)",
			   (long long) st.st_size, (unsigned long long) (AR_HEADER_LEN + hdr.payload_len));
		close(fd);
		return AR_CORRUPT;
	}
	rc = read_fd_at(fd, path, (size_t) st.st_size, out, 0, err, errlen);
	close(fd);
	return rc;
}

static int
fsync_dir_of(const char *path, char *err, size_t errlen)
{
	char		dir[PATH_MAX];
	char	   *slash;
	int			fd;

	strncpy(dir, path, sizeof(dir) - 1);
	dir[sizeof(dir) - 1] = '\0';
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
	{
		ar_err(err, errlen, "could not fsync directory \"%s\": %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return AR_ERROR;
	}
	close(fd);
	return AR_OK;
}

int
ar_mkdir_p(const char *path, char *err, size_t errlen)
{
	char		buf[PATH_MAX];
	size_t		len = strlen(path);

	if (len >= sizeof(buf))
	{
		ar_err(err, errlen, "path too long: \"%s\"", path);
		return AR_ERROR;
	}
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++)
	{
		if (*p == '/' || *p == '\0')
		{
			char		save = *p;

			*p = '\0';
			if (mkdir(buf, 0700) == 0)
			{
				/* a new entry in the parent: make it durable */
				if (fsync_dir_of(buf, err, errlen) != AR_OK)
					return AR_ERROR;
			}
			else if (errno != EEXIST)
			{
				ar_err(err, errlen, "could not create directory \"%s\": %s", buf, strerror(errno));
				return AR_ERROR;
			}
			*p = save;
			if (save == '\0')
				break;
		}
	}
	return AR_OK;
}

int
ar_write_file_durable(const char *path, const void *data, size_t len,
					  bool no_clobber, char *err, size_t errlen)
{
	return ar_write_buf_durable(path, data, len, 0, no_clobber, err, errlen);
}

int
ar_write_buf_durable(const char *path, const void *data, size_t len, size_t cap,
					 bool no_clobber, char *err, size_t errlen)
{
	char		tmp[PATH_MAX];
	int			fd;
	bool		synced = false;
	size_t		padded = (len + AR_ALIGN - 1) & ~(size_t) (AR_ALIGN - 1);
	bool		direct;
	size_t		orig_len = len;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) getpid()) >= (int) sizeof(tmp))
	{
		ar_err(err, errlen, "path too long: \"%s\"", path);
		return AR_ERROR;
	}
	/* a leftover of ours from a killed earlier attempt is garbage */
	(void) unlink(tmp);

	/*
	 * Large aligned buffers with room to pad go around the page cache
	 * (O_DIRECT): no copy, no writeback at fsync time, and archived WAL
	 * does not push the database's pages out of memory.  The tail block is
	 * zero-padded and the file truncated to its length before the fsync.
	 */
	direct = len >= AR_DIRECT_MIN && cap >= padded && ((uintptr_t) data % AR_ALIGN) == 0;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
	if (fd < 0 && direct && errno == EINVAL)
	{
		/* the file system does not do O_DIRECT */
		direct = false;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
	{
		ar_err(err, errlen, "could not create \"%s\": %s", tmp, strerror(errno));
		return errno == ENOENT ? AR_NOT_FOUND : AR_ERROR;
	}
	if (direct)
	{
		memset((char *) data + len, 0, padded - len);
		len = padded;
	}

	if (len > 0 && ring_get())
	{
		size_t		chunk = chunk_size_for(len);
		int			nchunks = (int) ((len + chunk - 1) / chunk);
		size_t		done[AR_IO_CHUNKS + 1];
		/* with O_DIRECT the fsync comes after the truncate below */
		int			rc = ring_batch(fd, (void *) data, len, true, !direct, chunk, done, nchunks);

		if (rc < 0)
		{
			ar_err(err, errlen, "could not write \"%s\": %s", tmp, strerror(-rc));
			goto fail;
		}
		if (rc == 0)
		{
			bool		short_write = false;

			for (int i = 0; i < nchunks; i++)
			{
				size_t		off = (size_t) i * chunk;
				size_t		want = (off + chunk > len) ? len - off : chunk;

				if (done[i] < want)
				{
					short_write = true;
					if (full_pwrite(fd, (const char *) data + off + done[i], want - done[i],
									off + done[i]) != 0)
					{
						ar_err(err, errlen, "could not write \"%s\": %s", tmp, strerror(errno));
						goto fail;
					}
				}
			}
			synced = !short_write && !direct;
		}
		else if (full_pwrite(fd, data, len, 0) != 0)
		{
			ar_err(err, errlen, "could not write \"%s\": %s", tmp, strerror(errno));
			goto fail;
		}
	}
	else if (len > 0 && full_pwrite(fd, data, len, 0) != 0)
	{
		ar_err(err, errlen, "could not write \"%s\": %s", tmp, strerror(errno));
		goto fail;
	}
	if (direct && ftruncate(fd, (off_t) orig_len) != 0)
	{
		ar_err(err, errlen, "could not truncate \"%s\": %s", tmp, strerror(errno));
		goto fail;
	}
	if (!synced && fsync(fd) != 0)
	{
		ar_err(err, errlen, "could not fsync \"%s\": %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) != 0)
	{
		fd = -1;
		ar_err(err, errlen, "could not close \"%s\": %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;

	if (no_clobber)
	{
		/* link() refuses to replace: two writers of one key cannot both win */
		if (link(tmp, path) != 0)
		{
			int			save = errno;

			(void) unlink(tmp);
			if (save == EEXIST)
			{
				ar_err(err, errlen, "\"%s\" already exists", path);
				return AR_EXISTS;
			}
			ar_err(err, errlen, "could not link \"%s\" to \"%s\": %s", tmp, path, strerror(save));
			return AR_ERROR;
		}
		(void) unlink(tmp);
	}
	else if (rename(tmp, path) != 0)
	{
		ar_err(err, errlen, "could not rename \"%s\" to \"%s\": %s", tmp, path, strerror(errno));
		(void) unlink(tmp);
		return AR_ERROR;
	}
	return fsync_dir_of(path, err, errlen);

fail:
	if (fd >= 0)
		close(fd);
	(void) unlink(tmp);
	return AR_ERROR;
}

/* ---------- the local / mounted-path backend ---------- */

static int
local_path(ArchiveRepo *repo, const char *key, char *path, size_t len,
		   char *err, size_t errlen)
{
	if (strstr(key, "..") != NULL || key[0] == '/')
	{
		ar_err(err, errlen, "invalid repository key \"%s\"", key);
		return AR_ERROR;
	}
	if (snprintf(path, len, "%s/%s", repo->location, key) >= (int) len)
	{
		ar_err(err, errlen, "repository path too long for key \"%s\"", key);
		return AR_ERROR;
	}
	return AR_OK;
}

static int
local_put(ArchiveRepo *repo, const char *key, const ArBuf *obj,
		  char *err, size_t errlen)
{
	char		path[PATH_MAX];
	struct stat st;
	int			rc;

	if ((rc = local_path(repo, key, path, sizeof(path), err, errlen)) != AR_OK)
		return rc;
	rc = ar_write_buf_durable(path, obj->data, obj->len, obj->cap, true, err, errlen);
	if (rc == AR_NOT_FOUND)
	{
		char		dir[PATH_MAX];

		/* the repository itself must exist: we only create what is below it */
		if (stat(repo->location, &st) != 0 || !S_ISDIR(st.st_mode))
		{
			ar_err(err, errlen, "repository \"%s\" is not an accessible directory: %s",
				   repo->location, errno ? strerror(errno) : "not a directory");
			return AR_ERROR;
		}
		strcpy(dir, path);
		*strrchr(dir, '/') = '\0';
		if ((rc = ar_mkdir_p(dir, err, errlen)) != AR_OK)
			return rc;
		rc = ar_write_buf_durable(path, obj->data, obj->len, obj->cap, true, err, errlen);
		if (rc == AR_NOT_FOUND)
			rc = AR_ERROR;
	}
	return rc;
}

static int
local_get(ArchiveRepo *repo, const char *key, ArBuf *out, char *err, size_t errlen)
{
	char		path[PATH_MAX];
	int			rc;

	if ((rc = local_path(repo, key, path, sizeof(path), err, errlen)) != AR_OK)
		return rc;
	return read_object(path, out, err, errlen);
}

static int
local_head(ArchiveRepo *repo, const char *key, void *buf, size_t want, size_t *got,
		   char *err, size_t errlen)
{
	char		path[PATH_MAX];
	int			rc;
	int			fd;
	ssize_t		n;
	struct stat st;

	if ((rc = local_path(repo, key, path, sizeof(path), err, errlen)) != AR_OK)
		return rc;
	/* a FIFO under the key would block the archiver for good */
	fd = open_regular(path, &st, err, errlen);
	if (fd < 0)
		return -fd;
	n = full_pread(fd, buf, want, 0);
	close(fd);
	if (n < 0)
	{
		ar_err(err, errlen, "could not read \"%s\": %s", path, strerror(errno));
		return AR_ERROR;
	}
	*got = (size_t) n;
	return AR_OK;
}

static int
local_remove(ArchiveRepo *repo, const char *key, char *err, size_t errlen)
{
	char		path[PATH_MAX];
	int			rc;

	if ((rc = local_path(repo, key, path, sizeof(path), err, errlen)) != AR_OK)
		return rc;
	if (unlink(path) != 0)
	{
		if (errno == ENOENT)
			return AR_NOT_FOUND;
		ar_err(err, errlen, "could not remove \"%s\": %s", path, strerror(errno));
		return AR_ERROR;
	}
	return fsync_dir_of(path, err, errlen);
}

static void
local_close(ArchiveRepo *repo)
{
}

static const ArchiveRepoOps local_ops = {
	.name = "local",
	.put = local_put,
	.get = local_get,
	.head = local_head,
	.remove = local_remove,
	.close = local_close,
};

ArchiveRepo *
ar_repo_open(const char *location, char *err, size_t errlen)
{
	ArchiveRepo *repo;
	size_t		len = strlen(location);

	if (strncmp(location, "s3://", 5) == 0)
	{
		ar_err(err, errlen, "the S3 repository backend is not available in this build");
		return NULL;
	}
	if (len == 0 || location[0] != '/')
	{
		ar_err(err, errlen, "repository \"%s\" is not an absolute path", location);
		return NULL;
	}
	repo = calloc(1, sizeof(*repo));
	if (repo == NULL || len >= sizeof(repo->location))
	{
		free(repo);
		ar_err(err, errlen, "repository path too long or out of memory");
		return NULL;
	}
	memcpy(repo->location, location, len + 1);
	while (len > 1 && repo->location[len - 1] == '/')
		repo->location[--len] = '\0';
	repo->ops = &local_ops;
	return repo;
}

void
ar_repo_close(ArchiveRepo *repo)
{
	if (repo == NULL)
		return;
	repo->ops->close(repo);
	free(repo);
}

int
ar_repo_fetch(ArchiveRepo *repo, const char *key, ArBuf *out, ArHeader *hdr,
			  char *err, size_t errlen)
{
	ArBuf		obj = {0};
	int			rc;

	rc = repo->ops->get(repo, key, &obj, err, errlen);
	if (rc == AR_OK)
	{
		rc = ar_decode(obj.data, obj.len, out, err, errlen);
		if (rc == AR_OK && hdr)
			rc = ar_decode_header(obj.data, obj.len, hdr, err, errlen);
	}
	ar_buf_free(&obj);
	return rc;
}

int
ar_repo_push(ArchiveRepo *repo, const char *key, const char *name,
			 const void *data, size_t len,
			 ArCompression compression, int level,
			 bool *already, uint32_t *crc_out, size_t *stored_len,
			 ArBuf *scratch, char *err, size_t errlen)
{
	unsigned char hbuf[AR_HEADER_LEN];
	size_t		got = 0;
	ArHeader	hdr;
	uint32_t	crc;
	int			rc;

	*already = false;
	for (int attempt = 0; attempt < 2; attempt++)
	{
		rc = repo->ops->head(repo, key, hbuf, sizeof(hbuf), &got, err, errlen);
		if (rc == AR_NOT_FOUND)
		{
			rc = ar_encode(name, data, len, compression, level, scratch, &crc, err, errlen);
			if (rc != AR_OK)
				return rc;
			if (crc_out)
				*crc_out = crc;
			if (stored_len)
				*stored_len = scratch->len;
			rc = repo->ops->put(repo, key, scratch, err, errlen);
			if (rc != AR_EXISTS)
				return rc;
			/* somebody else stored it meanwhile: compare with theirs */
			continue;
		}
		if (rc != AR_OK)
			return rc;

		/* present: identical content is success, anything else is not */
		rc = ar_decode_header(hbuf, got, &hdr, err, errlen);
		if (rc != AR_OK)
			return rc;
		crc = ar_crc32c(0, data, len);
		if (crc_out)
			*crc_out = crc;
		if (stored_len)
			*stored_len = AR_HEADER_LEN + hdr.payload_len;
		if (hdr.orig_len != len || hdr.orig_crc != crc)
		{
			ar_err(err, errlen,
				   "repository already holds \"%s\" with different content (%llu bytes, crc %08x; offered %zu bytes, crc %08x)",
				   name, (unsigned long long) hdr.orig_len, hdr.orig_crc, len, crc);
			return AR_EXISTS;
		}
		/* same length and CRC: confirm byte for byte before calling it ours */
		{
			ArBuf		stored = {0};
			bool		same;

			rc = ar_repo_fetch(repo, key, &stored, NULL, err, errlen);
			same = rc == AR_OK && stored.len == len && memcmp(stored.data, data, len) == 0;
			ar_buf_free(&stored);
			if (rc != AR_OK)
				return rc == AR_NOT_FOUND ? AR_ERROR : rc;
			if (!same)
			{
				ar_err(err, errlen, "repository already holds \"%s\" with different content (same checksum)", name);
				return AR_EXISTS;
			}
		}
		*already = true;
		return AR_OK;
	}
	ar_err(err, errlen, "\"%s\" appeared and disappeared in the repository while pushing", name);
	return AR_ERROR;
}

int
ar_repo_push_file(ArchiveRepo *repo, const char *key, const char *name, const char *path,
				  ArCompression compression, int level,
				  bool *already, uint32_t *crc_out, size_t *orig_len, size_t *stored_len,
				  ArBuf *filebuf, ArBuf *scratch, char *err, size_t errlen)
{
	int			rc;

	*orig_len = 0;
	if (compression == AR_COMPRESS_NONE)
	{
		/* read the file where its object's payload goes */
		rc = ar_read_file_at(path, scratch, AR_HEADER_LEN, err, errlen);
		if (rc != AR_OK)
			return rc;
		*orig_len = scratch->len - AR_HEADER_LEN;
		return ar_repo_push(repo, key, name, scratch->data + AR_HEADER_LEN, *orig_len,
							compression, level, already, crc_out, stored_len,
							scratch, err, errlen);
	}
	rc = ar_read_file(path, filebuf, err, errlen);
	if (rc != AR_OK)
		return rc;
	*orig_len = filebuf->len;
	return ar_repo_push(repo, key, name, filebuf->data, filebuf->len,
						compression, level, already, crc_out, stored_len,
						scratch, err, errlen);
}
