/*
 * http_auth.c - optional basic authentication of the metrics port
 * (pg_ha.metrics_auth_file: "username:password" lines, as Prometheus'
 * basic_auth sends them).
 *
 * Why a file and not parameters: postgres logs every parameter a reload
 * changes, so a secret in a parameter would reach the log; the file must be
 * private like a TLS key.  Only SHA-256 digests of the lines are kept in
 * memory, and a presented credential is compared digest against digest with
 * CRYPTO_memcmp, over every line, so the time taken says nothing about how
 * much of it matched.  Credentials are never logged; nor is the header.
 *
 * Reload: a file that cannot be read keeps the credentials loaded before; a
 * file named for the first time and unreadable refuses every scrape (fail
 * closed, 503 pointing at the log) rather than serving without a password.
 * Use TLS as well: basic auth over plaintext shows the password to anyone
 * on the path.
 */
#include "pg_ha.h"

#include "http_tls.h"

#include <ctype.h>

#include "common/base64.h"
#include "storage/fd.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define AUTH_MAX_LINES		16
#define AUTH_MAX_LINE		1024
#define AUTH_DIGEST_LEN		32	/* SHA-256 */

static unsigned char auth_digests[AUTH_MAX_LINES][AUTH_DIGEST_LEN];
static int	auth_lines = 0;
static bool auth_configured = false;	/* a file was named at the last load */

static bool
digest(const char *data, size_t len, unsigned char *out)
{
	return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1;
}

/* Reads the file into digests[]; false (logged) when it is not usable. */
static bool
read_auth_file(const char *file, unsigned char (*digests)[AUTH_DIGEST_LEN], int *n,
			   const char *detail)
{
	FILE	   *f;
	char		line[AUTH_MAX_LINE + 2];
	int			lineno = 0;
	bool		ok = true;

	*n = 0;
	if (!http_private_file_ok(file, "pg_ha.metrics_auth_file", detail))
		return false;
	f = AllocateFile(file, "r");
	if (f == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("pg_ha: could not open file \"%s\": %m", file),
				 errdetail_internal("%s", detail)));
		return false;
	}
	while (ok && fgets(line, sizeof(line), f) != NULL)
	{
		size_t		len = strcspn(line, "\r\n");
		const char *colon;

		lineno++;
		if (line[len] == '\0' && !feof(f))
		{
			ok = false;			/* longer than AUTH_MAX_LINE */
			break;
		}
		line[len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		colon = strchr(line, ':');
		ok = colon != NULL && colon != line && *n < AUTH_MAX_LINES &&
			digest(line, len, digests[*n]);
		if (ok)
			(*n)++;
	}
	explicit_bzero(line, sizeof(line));
	FreeFile(f);
	if (ok && *n == 0)
	{
		ok = false;
		lineno = 0;
	}
	if (!ok)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_ha: invalid line %d in file \"%s\" named by pg_ha.metrics_auth_file",
						lineno, file),
				 errdetail_internal("%s", detail),
				 errhint("Write one \"username:password\" per line (at most %d lines of %d bytes); line 0 means the file has none.",
						 AUTH_MAX_LINES, AUTH_MAX_LINE)));
	return ok;
}

void
http_auth_load(void)
{
	const char *file = pg_ha_metrics_auth_file;
	unsigned char digests[AUTH_MAX_LINES][AUTH_DIGEST_LEN];
	int			n;
	bool		keep_old = auth_configured && auth_lines > 0;

	if (file == NULL || file[0] == '\0')
	{
		auth_configured = false;
		auth_lines = 0;
		return;
	}
	auth_configured = true;
	if (!read_auth_file(file, digests, &n,
						keep_old ?
						"The metrics listener keeps the credentials it loaded before." :
						"The metrics listener refuses every request until the configuration is corrected and reloaded."))
	{
		if (!keep_old)
			auth_lines = 0;
		return;
	}
	memcpy(auth_digests, digests, sizeof(digests));
	auth_lines = n;
	explicit_bzero(digests, sizeof(digests));
}

/* "Basic <base64 of user:password>" matches one of the lines. */
static bool
credentials_match(const char *header)
{
	char		decoded[AUTH_MAX_LINE];
	unsigned char d[AUTH_DIGEST_LEN];
	const char *token;
	size_t		len;
	int			n;
	int			differs = 1;

	if (header == NULL || pg_strncasecmp(header, "Basic ", 6) != 0)
		return false;
	token = header + 6;
	while (*token == ' ')
		token++;
	len = strlen(token);
	while (len > 0 && (token[len - 1] == ' ' || token[len - 1] == '\t'))
		len--;
	if (len == 0 || pg_b64_dec_len((int) len) > (int) sizeof(decoded))
		return false;
	n = pg_b64_decode(token, (int) len, decoded, sizeof(decoded));
	if (n <= 0 || !digest(decoded, n, d))
	{
		explicit_bzero(decoded, sizeof(decoded));
		return false;
	}
	explicit_bzero(decoded, sizeof(decoded));
	/* every line is compared: no early exit on a match */
	for (int i = 0; i < auth_lines; i++)
		differs &= (CRYPTO_memcmp(d, auth_digests[i], AUTH_DIGEST_LEN) != 0);
	return !differs;
}

bool
http_auth_check(const HttpRequest *req, HttpResponse *resp)
{
	if (!auth_configured)
		return true;
	resp->content_type = "text/plain; charset=utf-8";
	if (auth_lines == 0)
	{
		resp->status = 503;
		appendStringInfoString(resp->body,
							   "metrics authentication is misconfigured: see the server log\n");
		return false;
	}
	if (credentials_match(http_request_authorization(req)))
		return true;
	resp->status = 401;
	resp->extra_headers = "WWW-Authenticate: Basic realm=\"pg_ha metrics\", charset=\"UTF-8\"\r\n";
	appendStringInfoString(resp->body, "401 Unauthorized\n");
	return false;
}
