/*
 * fuzz_patroni.c - libFuzzer target for patroni_codec.c: what operators
 * send to the control API (switchover/failover/restart bodies, PATCH and PUT
 * /config bodies), what pg_ha.tags may hold, and the config key as every
 * node reads it (decoded, then merged with the GUCs by ha_dynconf.c).
 *
 * The first byte chooses where the input is cut: the part before the cut
 * is the config key's current value, the part after the patch (or body).
 * Checked invariants, beyond the sanitizers: a merged document is an
 * object within the bound, patching with it again changes nothing, and
 * decoded fields are NUL-terminated within their buffers.
 */
#include "ha_dynconf.h"
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
	{
		PatroniReinitBody r;

		(void) patroni_reinit_body_decode(text, len, &r, err, sizeof(err));
	}
	{
		PatroniRestartBody r;
		char		json[PATRONI_SCHEDULE_JSON_LEN];
		int64_t		start = 0;

		/* a decoded schedule always fits the member key's object */
		if (patroni_restart_body_decode(text, len, 0, &r, err, sizeof(err)) == 0 && r.scheduled &&
			patroni_restart_schedule_json(&r, &start, json, sizeof(json)) < 0)
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

/*
 * The key as a node reads it: the merge always yields a usable set within
 * the bounds, and its JSON fits the buffer pg_ha.status() uses.
 */
static void
check_dynamic(const char *text, size_t len)
{
	static PatroniDynConfig key;
	static const DynLocal guc = {10, 2000, 1048576, DYN_SYNC_OFF, 1, false};
	DynSettings s;
	char		json[4096];

	dynconf_merge(patroni_config_decode(text, len, &key) ? &key : NULL, &guc, &s);
	if (s.ttl < DYN_TTL_MIN || s.ttl > DYN_TTL_MAX || s.loop_wait_ms <= 0 ||
		s.retry_timeout_ms <= 0 || s.maximum_lag_bytes < 0 ||
		s.sync_node_count < 1 || s.sync_node_count > DYN_NODE_COUNT_MAX ||
		dynconf_json(&s, json, sizeof(json)) < 0)
		abort();
	for (int i = 0; i < key.nparams; i++)
		if (strlen(key.params[i].name) >= PATRONI_PARAM_NAME_LEN ||
			strlen(key.params[i].value) >= PATRONI_PARAM_VALUE_LEN)
			abort();
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
	check_dynamic(text, size - 1);
	check_tags(text);
	free(text);
	return 0;
}
