/*
 * archive_repo.h - the WAL archive repository: object format, key layout
 * and the storage backend interface.
 *
 * Plain C (libc, libzstd, liblz4, liburing): no postgres backend symbols,
 * so that both the archive module inside postgres and the pg_ha_restore
 * program link it.  Errors come back as return codes with a message in a
 * caller-supplied buffer; nothing here longjmps or exits.
 *
 * Object format (one object per archived file, docs/archive.md):
 *
 *   64-byte header, little-endian:
 *     0  magic "PGHAWAL1"
 *     8  u32 format version (1)
 *    12  u32 compression (ArCompression)
 *    16  u64 original length
 *    24  u64 payload length (bytes after the header)
 *    32  u32 CRC-32C of the original content
 *    36  u32 CRC-32C of the payload
 *    40  char[20] original file name's first 20 bytes (NUL-padded, info only)
 *    60  u32 CRC-32C of bytes 0..59
 *   payload: the content, compressed as the header says
 *
 * A reader verifies the header CRC, the payload CRC and length before it
 * decompresses, and the original's CRC and length after: a truncated or
 * bit-flipped object is refused, never handed out.
 */
#ifndef PG_HA_ARCHIVE_REPO_H
#define PG_HA_ARCHIVE_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Result codes shared by every repository call. */
#define AR_OK			0
#define AR_NOT_FOUND	1		/* no such object */
#define AR_EXISTS		2		/* put: the key already holds an object */
#define AR_CORRUPT		3		/* object fails its checksums or format */
#define AR_ERROR		4		/* I/O or configuration error (see message) */

#define AR_ERR_LEN		512
#define AR_KEY_LEN		256
#define AR_HEADER_LEN	64
#define AR_ALIGN		4096	/* buffer alignment, for O_DIRECT writes */
#define AR_DIRECT_MIN	(1024 * 1024)	/* smaller objects go through the page cache */

typedef enum ArCompression
{
	AR_COMPRESS_NONE = 0,
	AR_COMPRESS_LZ4 = 1,
	AR_COMPRESS_ZSTD = 2
} ArCompression;

/* Decoded object header. */
typedef struct ArHeader
{
	uint32_t	version;
	uint32_t	compression;
	uint64_t	orig_len;
	uint64_t	payload_len;
	uint32_t	orig_crc;
	uint32_t	payload_crc;
	char		name[21];
} ArHeader;

/*
 * A growable byte buffer owned by the caller (ar_buf_reserve allocates it
 * AR_ALIGN aligned with slack to the next boundary; ar_buf_free).
 */
typedef struct ArBuf
{
	unsigned char *data;
	size_t		len;
	size_t		cap;
} ArBuf;

extern void ar_buf_free(ArBuf *buf);
extern int	ar_buf_reserve(ArBuf *buf, size_t cap);

/* ---------- checksums, names, keys ---------- */

extern uint32_t ar_crc32c(uint32_t crc, const void *data, size_t len);

typedef enum ArFileKind
{
	AR_FILE_INVALID = 0,
	AR_FILE_SEGMENT,			/* TTTTTTTTLLLLLLLLSSSSSSSS */
	AR_FILE_PARTIAL,			/* segment name + ".partial" */
	AR_FILE_BACKUP,				/* segment name + ".XXXXXXXX.backup" */
	AR_FILE_HISTORY				/* TTTTTTTT.history */
} ArFileKind;

/* Classifies a file name the archiver or recovery asks for. */
extern ArFileKind ar_file_kind(const char *name);

/*
 * Repository key of an archived file:
 *   <cluster>/<sysid>/wal/<TLI>/<TLI><LOGID>/<name>   segments, .partial, .backup
 *   <cluster>/<sysid>/history/<name>                 timeline history files
 * Returns false (with a message) for names that are not archivable WAL
 * files or a cluster name that is not a safe path component.
 */
extern bool ar_object_key(const char *cluster, uint64_t sysid, const char *name,
						  char *key, size_t keylen, char *err, size_t errlen);

/*
 * Name of the segment after `name` (same timeline), given the segment size.
 * Returns false if name is not a segment name.
 */
extern bool ar_next_segment(const char *name, uint64_t seg_size, char *next, size_t len);

/* ---------- object encoding ---------- */

extern const char *ar_compression_name(ArCompression c);
extern bool ar_compression_parse(const char *s, ArCompression *c);

/*
 * Encodes content into an object (header + payload) in out.  level is the
 * zstd level (ignored by lz4 and none).  orig_crc: CRC-32C of data, if the
 * caller has it already, else pass compute_crc = true.
 */
extern int	ar_encode(const char *name, const void *data, size_t len,
					  ArCompression compression, int level,
					  ArBuf *out, uint32_t *orig_crc, char *err, size_t errlen);

/* Parses and checks the header (its own CRC, magic, version, bounds). */
extern int	ar_decode_header(const void *obj, size_t len, ArHeader *hdr,
							 char *err, size_t errlen);

/*
 * Verifies and decodes a whole object into out (the original content).
 * AR_CORRUPT when any check fails.
 */
extern int	ar_decode(const void *obj, size_t len, ArBuf *out, char *err, size_t errlen);

/* ---------- local file I/O (io_uring, with a pread/pwrite fallback) ---------- */

/*
 * Reads a whole regular file (AR_ERROR at once for a FIFO, a directory or
 * a device: nothing here waits on one), of at most the size of the largest
 * archive object.  AR_NOT_FOUND if it does not exist.
 */
extern int	ar_read_file(const char *path, ArBuf *out, char *err, size_t errlen);
/* The same, placing the content at out->data + offset (out->len = offset + size). */
extern int	ar_read_file_at(const char *path, ArBuf *out, size_t offset,
							char *err, size_t errlen);

/*
 * Writes data to path durably: a temp file beside it, written and fsync'd,
 * then renamed (or linked, if no_clobber) over path, then the directory
 * fsync'd.  With no_clobber, an existing path gives AR_EXISTS and is left
 * alone.  Never leaves a partial file under path.
 */
extern int	ar_write_file_durable(const char *path, const void *data, size_t len,
								  bool no_clobber, char *err, size_t errlen);

/*
 * The same for a buffer with cap bytes of room: when data is AR_ALIGN
 * aligned, len >= AR_DIRECT_MIN and cap reaches the next AR_ALIGN boundary,
 * it is written with O_DIRECT (the padding bytes are overwritten with
 * zeros and cut off again before the fsync).
 */
extern int	ar_write_buf_durable(const char *path, const void *data, size_t len, size_t cap,
								 bool no_clobber, char *err, size_t errlen);

/* mkdir -p, fsyncing each parent whose entries changed. */
extern int	ar_mkdir_p(const char *path, char *err, size_t errlen);

/* ---------- repositories ---------- */

typedef struct ArchiveRepo ArchiveRepo;

/*
 * A storage backend.  Keys are relative, '/'-separated, from ar_object_key.
 * put is create-if-absent and durable before it returns AR_OK; get returns
 * the raw object (the caller decodes and verifies), after checking its
 * header and that its size is the header's, so that a large file which is
 * no object is refused before it is read.  An S3 backend maps put
 * to PUT with If-None-Match: * and get/head to GET with a Range.
 */
typedef struct ArchiveRepoOps
{
	const char *name;
	int			(*put) (ArchiveRepo *repo, const char *key, const ArBuf *obj,
						char *err, size_t errlen);
	int			(*get) (ArchiveRepo *repo, const char *key, ArBuf *out,
						char *err, size_t errlen);
	/* reads at most want bytes of the object's start (header checks) */
	int			(*head) (ArchiveRepo *repo, const char *key, void *buf, size_t want,
						 size_t *got, char *err, size_t errlen);
	/* removes an object (tests, retention); AR_NOT_FOUND if absent */
	int			(*remove) (ArchiveRepo *repo, const char *key, char *err, size_t errlen);
	void		(*close) (ArchiveRepo *repo);
} ArchiveRepoOps;

struct ArchiveRepo
{
	const ArchiveRepoOps *ops;
	char		location[1024];	/* what the user configured */
	void	   *priv;			/* backend state */
};

/*
 * Opens the repository a location names: an absolute path is the local /
 * mounted-path backend ("s3://..." is reserved for the S3 backend).
 * Returns NULL with a message.  Does not touch storage.
 */
extern ArchiveRepo *ar_repo_open(const char *location, char *err, size_t errlen);
extern void ar_repo_close(ArchiveRepo *repo);

/*
 * Reads and fully verifies the object for name; on success out holds the
 * original content.  AR_NOT_FOUND, AR_CORRUPT or AR_ERROR otherwise.
 */
extern int	ar_repo_fetch(ArchiveRepo *repo, const char *key, ArBuf *out,
						  ArHeader *hdr, char *err, size_t errlen);

/*
 * Pushes content as the object for key, idempotently:
 *   - absent: encode, put durably -> AR_OK;
 *   - present with identical content (length and CRC-32C of the original,
 *     then a byte comparison of the decoded object) -> AR_OK, *already = true;
 *   - present with different content -> AR_EXISTS with a message;
 *   - present but unreadable/corrupt -> AR_CORRUPT.
 * crc_out (may be NULL) receives the content's CRC-32C; stored_len the
 * object's length (may be NULL).
 */
extern int	ar_repo_push(ArchiveRepo *repo, const char *key, const char *name,
						 const void *data, size_t len,
						 ArCompression compression, int level,
						 bool *already, uint32_t *crc_out, size_t *stored_len,
						 ArBuf *scratch, char *err, size_t errlen);

/*
 * Reads the file at path and pushes it as ar_repo_push does.  Uncompressed,
 * the file is read straight into its object's payload position in scratch
 * (no copy).  orig_len receives the file's size.
 */
extern int	ar_repo_push_file(ArchiveRepo *repo, const char *key, const char *name,
							  const char *path, ArCompression compression, int level,
							  bool *already, uint32_t *crc_out, size_t *orig_len,
							  size_t *stored_len, ArBuf *filebuf, ArBuf *scratch,
							  char *err, size_t errlen);

extern void ar_put_u32(unsigned char *p, uint32_t v);
extern void ar_put_u64(unsigned char *p, uint64_t v);

#endif							/* PG_HA_ARCHIVE_REPO_H */
