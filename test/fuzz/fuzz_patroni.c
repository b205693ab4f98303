/*
 * fuzz_patroni.c - libFuzzer target for patroni_codec.c: what operators
 * send to the control API (switchover/failover bodies, PATCH and PUT
 * /config bodies) and what pg_ha.tags may hold.
 *
 * The first byte chooses where the input is cut: the part before the cut
 * is the config key's current value, the part after the patch (or body).
 * Checked invariants, beyond the sanitizers: a merged document is an
 * object within the bound, patching with it again changes nothing, and
 * decoded fields are NUL-terminated within their buffers.
 */
#include "patroni_codec.h"

#include <stdlib.h>
#include <string.h>

static void
check_body(const char *text, size_t len)
{
	PatroniFailoverBody b;
	char		err[256];

	if (patroni_failover_body_decode(text, len, &b, err, sizeof(err)))
	{
		if (strlen(b.leader) >= sizeof(b.leader) || strlen(b.candidate) >= sizeof(b.candidate) ||
			strlen(b.scheduled_at) >= sizeof(b.scheduled_at))
			abort();
	}
	(void) patroni_is_json_array(text, len);
	(void) patroni_config_check_object(text, len, err, sizeof(err));
}

static void
check_patch(const char *current, size_t clen, const char *patch, size_t plen)
{
	char	   *out = NULL;
	char	   *again = NULL;
	bool		changed;
	char		err[256];

	if (!patroni_config_patch(current, clen, patch, plen, &out, &changed, err, sizeof(err)))
		return;
	if (out == NULL || strlen(out) > PATRONI_CONFIG_MAX ||
		!patroni_config_check_object(out, strlen(out), err, sizeof(err)))
		abort();
	/* idempotent: the same patch on its own result changes nothing */
	if (patroni_config_patch(out, strlen(out), patch, plen, &again, &changed, err, sizeof(err)) &&
		changed)
		abort();
	free(again);
	free(out);
}

static void
check_tags(const char *text)
{
	char		err[256];
	char		val[64];

	if (!patroni_tags_validate(text, err, sizeof(err)))
		return;
	free(patroni_tags_members(text));
	(void) patroni_tag_text(text, "dc", val, sizeof(val));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text;
	size_t		cut;

	if (size < 1 || size > 65536)
		return 0;
	cut = (size_t) data[0] * (size - 1) / 255;
	text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';

	check_body(text, size - 1);
	check_patch(text, cut, text + cut, size - 1 - cut);
	check_tags(text);
	free(text);
	return 0;
}
