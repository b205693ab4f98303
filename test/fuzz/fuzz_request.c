/*
 * fuzz_request.c - libFuzzer target for the failover key's codec and the
 * readers the target rules rest on (src/ha_request.c).
 *
 * Any input must decode to a valid request or be refused with a message,
 * never crash, read out of bounds or leak.  What decodes must encode, and
 * decode again to the same request (the round trip the HA worker, SQL and
 * pg_hactl rely on when they rewrite a request in a later phase).  The
 * same bytes also go through ha_time_parse, ha_candidate_parse,
 * ha_history_last, ha_status_optime, and as every key of an
 * HaControlView through ha_request_blocks and ha_target_check.  Build and run with
 * `make fuzz-request FUZZ_SECONDS=600` (see docs/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ha_request.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_round_trip(const HaRequest *r)
{
	char		buf[HA_REQUEST_MAX_JSON + 1];
	HaRequest	back;
	char		err[256];
	int			len = ha_request_encode(r, buf, sizeof(buf));

	if (len <= 0 || (size_t) len != strlen(buf))
		abort();				/* a decoded request must encode */
	if (!ha_request_decode(buf, (size_t) len, &back, err, sizeof(err)))
		abort();
	if (back.phase != r->phase || strcmp(back.leader, r->leader) != 0 ||
		strcmp(back.member, r->member) != 0 || back.scheduled != r->scheduled ||
		(r->scheduled && back.scheduled_at_us != r->scheduled_at_us) ||
		back.final_lsn != r->final_lsn || back.force != r->force ||
		strcmp(back.reason, r->reason) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	HaRequest	r;
	char		err[256];

	if (ha_request_decode(text, size, &r, err, sizeof(err)))
	{
		if (!ha_request_validate(&r, err, sizeof(err)))
			abort();
		check_round_trip(&r);
	}
	else if (err[0] == '\0')
		abort();				/* every refusal says why */

	/* the same bytes as a time, a member key, history and status */
	{
		char	   *s = malloc(size + 1);
		int64_t		us;
		HaCandidate c;
		uint32_t	tl;
		char		reason[64];
		char		leader[64];

		if (s == NULL)
			return 0;
		memcpy(s, data, size);
		s[size] = '\0';
		if (ha_time_parse(s, &us, err, sizeof(err)))
		{
			char		t[HA_TIME_LEN];
			int64_t		back;

			ha_time_format(us, t, sizeof(t));
			if (!ha_time_parse(t, &back, err, sizeof(err)) || back != us)
				abort();
		}
		else if (err[0] == '\0')
			abort();
		ha_candidate_parse("n1", text, size, &c);
		ha_history_last(text, size, &tl, reason, sizeof(reason), leader, sizeof(leader));
		(void) ha_status_optime(text, size);
		free(s);
	}

	/* the same bytes as every key a front end reads, then its rules */
	{
		static HaControlView view;
		static const char *const suffixes[] = {
			"leader", "members/n1", "members/n2", "status", "history", "config", "failover"
		};
		char		chosen[HA_REQUEST_NAME_LEN];
		char		why[256];

		memset(&view, 0, sizeof(view));
		for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
			ha_control_view_add(&view, suffixes[i], text, size, 1);
		(void) ha_request_blocks(&view, true);
		(void) ha_request_blocks(&view, false);
		for (int sw = 0; sw < 2; sw++)
		{
			HaTargetInput in = {view.members, view.nmembers, view.leader, view.status_optime,
			view.history_timeline, 1024 * 1024, sw == 1, sw == 0};

			(void) ha_target_check(&in, sw ? NULL : "n1", chosen, sizeof(chosen), NULL, 0,
								   why, sizeof(why));
		}
	}
	return 0;
}
