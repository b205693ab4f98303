/*
 * http_auth.c - basic authentication: of the metrics port, optional
 * (pg_ha.metrics_auth_file: "username:password" lines, as Prometheus'
 * basic_auth sends them), and of the API port's unsafe requests (POST
 * /failsafe and Patroni's control API, http_control.c), required
 * (pg_ha.api_auth_file, same format; its first line is also what this
 * node's HA worker sends to its peers, failsafe_call.c).
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

/* One credential file's digests. */
typedef struct AuthSet
{
	const char *param;			/* the parameter naming the file */
	const char *challenge;		/* the 401's WWW-Authenticate header */
	unsigned char digests[AUTH_MAX_LINES][AUTH_DIGEST_LEN];
	int			lines;
	bool		configured;		/* a file was named at the last load */
} AuthSet;

static AuthSet metrics_auth = {"pg_ha.metrics_auth_file",
"WWW-Authenticate: Basic realm=\"pg_ha metrics\", charset=\"UTF-8\"\r\n"};
static AuthSet api_auth = {"pg_ha.api_auth_file",
"WWW-Authenticate: Basic realm=\"pg_ha api\", charset=\"UTF-8\"\r\n"};

static bool
digest(const char *data, size_t len, unsigned char *out)
{
	return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1;
}

/* Reads the file into digests[]; false (logged) when it is not usable. */
static bool
read_auth_file(const char *file, const char *param,
			   unsigned char (*digests)[AUTH_DIGEST_LEN], int *n, const char *detail)
{
	FILE	   *f;
	char		line[AUTH_MAX_LINE + 2];
	int			lineno = 0;
	bool		ok = true;

	*n = 0;
	if (!http_private_file_ok(file, param, detail))
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
				 errmsg("pg_ha: invalid line %d in file \"%s\" named by %s",
						lineno, file, param),
				 errdetail_internal("%s", detail),
				 errhint("Write one \"username:password\" per line (at most %d lines of %d bytes); line 0 means the file has none.",
						 AUTH_MAX_LINES, AUTH_MAX_LINE)));
	return ok;
}

static void
auth_set_load(AuthSet *set, const char *file, const char *keep_detail, const char *refuse_detail)
{
	unsigned char digests[AUTH_MAX_LINES][AUTH_DIGEST_LEN];
	int			n;
	bool		keep_old = set->configured && set->lines > 0;

	if (file == NULL || file[0] == '\0')
	{
		set->configured = false;
		set->lines = 0;
		return;
	}
	set->configured = true;
	if (!read_auth_file(file, set->param, digests, &n, keep_old ? keep_detail : refuse_detail))
	{
		if (!keep_old)
			set->lines = 0;
		return;
	}
	memcpy(set->digests, digests, sizeof(digests));
	set->lines = n;
	explicit_bzero(digests, sizeof(digests));
}

void
http_auth_load(void)
{
	auth_set_load(&metrics_auth, pg_ha_metrics_auth_file,
				  "The metrics listener keeps the credentials it loaded before.",
				  "The metrics listener refuses every request until the configuration is corrected and reloaded.");
	auth_set_load(&api_auth, pg_ha_api_auth_file,
				  "The API listener keeps the credentials it loaded before.",
				  "The API listener refuses every request that needs authentication until the configuration is corrected and reloaded.");
}

/* "Basic <base64 of user:password>" matches one of the lines. */
static bool
credentials_match(const AuthSet *set, const char *header)
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
	for (int i = 0; i < set->lines; i++)
		differs &= (CRYPTO_memcmp(d, set->digests[i], AUTH_DIGEST_LEN) != 0);
	return !differs;
}

/*
 * 401 with a challenge, or 503 when the file named could not be loaded;
 * true when the request carries one of the set's credentials.
 */
static bool
auth_set_check(const AuthSet *set, const HttpRequest *req, HttpResponse *resp)
{
	resp->content_type = "text/plain; charset=utf-8";
	if (set->lines == 0)
	{
		resp->status = 503;
		appendStringInfo(resp->body, "authentication is misconfigured (%s): see the server log\n",
						 set->param);
		return false;
	}
	if (credentials_match(set, http_request_authorization(req)))
		return true;
	resp->status = 401;
	resp->extra_headers = set->challenge;
	appendStringInfoString(resp->body, "401 Unauthorized\n");
	return false;
}

bool
http_auth_check(const HttpRequest *req, HttpResponse *resp)
{
	if (!metrics_auth.configured)
		return true;
	return auth_set_check(&metrics_auth, req, resp);
}

/*
 * The API port's state-changing requests: authentication is required, so
 * no pg_ha.api_auth_file means 403 for everyone (fail closed).
 */
bool
http_api_auth_check(const HttpRequest *req, HttpResponse *resp)
{
	if (!api_auth.configured)
	{
		resp->status = 403;
		resp->content_type = "text/plain; charset=utf-8";
		appendStringInfoString(resp->body,
							   "this request needs authentication, and pg_ha.api_auth_file is not set\n");
		return false;
	}
	return auth_set_check(&api_auth, req, resp);
}
