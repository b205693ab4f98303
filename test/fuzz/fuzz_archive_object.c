/*
 * fuzz_archive_object.c - libFuzzer target for the archive object format
 * (src/archive_repo.c): the header parser and the whole-object decoder
 * that pg_ha_restore and the archive module run on what the repository
 * holds, and the file-name rules the keys are built from.
 *
 * Any input must decode or be refused with a message, never crash, read
 * out of bounds or leak.  Checksums stop almost every mutation at the
 * header, so the input is also decoded with its three CRCs and its payload
 * length made right: that reaches the lz4 and zstd decoders with hostile
 * payloads.  And the input encoded with each compression must decode back
 * to itself.  Build and run with `make fuzz-archive FUZZ_SECONDS=600`
 * (see docs/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "archive_repo.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ar_decode allocates the announced length before it decompresses */
#define FUZZ_MAX_ORIG (4 * 1024 * 1024)

/* Decodes obj; whatever the verdict, a refusal says why. */
static void
decode(const unsigned char *obj, size_t len)
{
	ArHeader	hdr;
	ArBuf		out = {0};
	char		err[AR_ERR_LEN] = "";
	int			rc = ar_decode_header(obj, len, &hdr, err, sizeof(err));

	if (rc != AR_OK)
	{
		if (err[0] == '\0')
			abort();
		return;
	}
	if (hdr.orig_len > FUZZ_MAX_ORIG)
		return;
	err[0] = '\0';
	rc = ar_decode(obj, len, &out, err, sizeof(err));
	if (rc == AR_OK && (out.len != hdr.orig_len ||
						ar_crc32c(0, out.data, out.len) != hdr.orig_crc))
		abort();				/* accepted what its header does not describe */
	if (rc != AR_OK && err[0] == '\0')
		abort();
	ar_buf_free(&out);
}

/* The input with its payload length and checksums made consistent. */
static void
decode_fixed(const uint8_t *data, size_t size)
{
	unsigned char *obj;

	if (size < AR_HEADER_LEN)
		return;
	obj = malloc(size);
	if (obj == NULL)
		return;
	memcpy(obj, data, size);
	memcpy(obj, "PGHAWAL1", 8);
	ar_put_u64(obj + 24, size - AR_HEADER_LEN);
	ar_put_u32(obj + 36, ar_crc32c(0, obj + AR_HEADER_LEN, size - AR_HEADER_LEN));
	ar_put_u32(obj + 60, ar_crc32c(0, obj, 60));
	decode(obj, size);
	free(obj);
}

static void
round_trip(const uint8_t *data, size_t size)
{
	static const ArCompression methods[] = {AR_COMPRESS_NONE, AR_COMPRESS_LZ4, AR_COMPRESS_ZSTD};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
	{
		ArBuf		obj = {0};
		ArBuf		back = {0};
		char		err[AR_ERR_LEN];
		uint32_t	crc;

		if (ar_encode("000000010000000000000001", data, size, methods[i], 1,
					  &obj, &crc, err, sizeof(err)) != AR_OK)
			abort();
		if (ar_decode(obj.data, obj.len, &back, err, sizeof(err)) != AR_OK ||
			back.len != size || (size > 0 && memcmp(back.data, data, size) != 0) ||
			crc != ar_crc32c(0, data, size))
			abort();
		ar_buf_free(&obj);
		ar_buf_free(&back);
	}
}

/* The bytes as a file name recovery or the archiver asks for. */
static void
names(const uint8_t *data, size_t size)
{
	char		name[64];
	char		key[AR_KEY_LEN];
	char		next[32];
	char		err[AR_ERR_LEN];
	size_t		n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;

	memcpy(name, data, n);
	name[n] = '\0';
	(void) ar_file_kind(name);
	if (!ar_object_key("pg-test", 42, name, key, sizeof(key), err, sizeof(err)) &&
		err[0] == '\0')
		abort();
	if (!ar_object_key(name, 42, "000000010000000000000001", key, sizeof(key), err, sizeof(err)) &&
		err[0] == '\0')
		abort();
	if (ar_next_segment(name, 16 * 1024 * 1024, next, sizeof(next)) &&
		ar_file_kind(next) != AR_FILE_SEGMENT)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode(data, size);
	decode_fixed(data, size);
	if (size <= 64 * 1024)
		round_trip(data, size);
	names(data, size);
	return 0;
}
