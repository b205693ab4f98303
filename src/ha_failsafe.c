/*
 * ha_failsafe.c - failsafe mode's decisions, as pure functions.
 *
 * pg_ha.failsafe_mode = on lets a leader that cannot use etcd keep write
 * authority while every member of the last member list it published
 * confirms it, each cycle, over the authenticated HTTP API (POST /failsafe).
 * Without it, an etcd outage fences a healthy primary until etcd returns.
 * The I/O lives elsewhere: failsafe_call.c (the leader's POSTs, HA worker),
 * http_failsafe.c (a member's answer, HTTP listener), and a few lines in
 * ha_worker.c (when to call, the guard before the race).
 *
 * THE SAFETY ARGUMENT.  Claim: two nodes never accept commits at the same
 * instant, whatever part of the network or of etcd fails.
 *
 * Parts:
 *   M      the failsafe key's value: {name: api_url} of every member, written
 *          to etcd by the leader L while etcd was usable (ha_worker.c).  L
 *          asks the members of the M it last wrote successfully, nobody else.
 *   round  L reads t_send from its lease clock (CLOCK_BOOTTIME), then POSTs
 *          /failsafe?leader=L to every other member of M in parallel, each
 *          call bounded well below TTL/3 (failsafe_call.c).
 *   promise  a member R that answers 200 first records, in shared memory
 *          under the pg_ha lock, "no race for the leader key before
 *          r + P" (r: receipt, R's lease clock; P: R's TTL), and says P in
 *          the answer.  While a promise is binding, R's HA worker does not
 *          try to create the leader key (the guard, ha_worker.c).
 *   extension  only if EVERY member answered 200 in this round, L sets its
 *          lease deadline to max(D, t_send + min(P_i, TTL_L))
 *          (failsafe_extended_deadline).  The fence refuses commits from
 *          the deadline minus the margin (shmem.c, fence.c), as for a lease
 *          renewed through etcd.  A round that misses one answer extends
 *          nothing: the deadline passes by itself.
 *
 * 1. A promise outlasts the authority it backs.  R received the request
 *    after L sent it, so r >= t_send in real time, and R's promise ends at
 *    real time >= t_send + P (up to R's clock rate error over P), while L's
 *    authority ends at t_send + min(P, TTL_L) - margin (up to L's clock
 *    rate error).  The margin (at least 1 s, or TTL/10) is orders of
 *    magnitude above two clock rate errors over one TTL (ppm), exactly as in
 *    the lease rule (ha_worker.c).  Network delay, retransmission and the
 *    call timeout only make r later, which lengthens the promise relative
 *    to the authority; a late answer is dropped, never used.  The leader's
 *    bound is computed from R's own P, so a member with a shorter TTL
 *    gets a shorter extension: L never relies on more than R promised.
 *    Each clock is only compared with itself; the two never need to agree.
 *
 * 2. Nobody else can take over while L may write.  A node writes only
 *    while it holds the leader key (created with create-if-absent), or as L
 *    under a failsafe extension.  Another node N creates the key only
 *    after L's etcd lease expired, i.e. after L's last etcd-backed deadline
 *    (the lease rule).  Beyond that deadline L writes only on extensions,
 *    and each extension needed N's 200 in that round if N is in M:
 *      - N in M: N's latest promise ends after L's latest extension (1), and
 *        N does not race while it is binding;
 *      - N not in M (a member L never saw, e.g. one that joined while L was
 *        cut from etcd): in failsafe mode a node that the failsafe key does
 *        not list does not race at all (ha_worker.c).  It reads the key from
 *        the same etcd where it would have to create the leader key;
 *      - promise and race are ordered: the worker checks the promise and
 *        marks the key claimed under the pg_ha lock before it tries to
 *        create the key, and the listener refuses to promise (503) once the
 *        claim is marked.  So either the promise came first (no attempt) or
 *        the claim did (no 200, no extension from this round).
 *      - a restart loses shared memory, so shmem.c records, at start, a
 *        promise of one TTL to any leader: no promise given before the
 *        restart can end earlier (each lasted at most one TTL from its
 *        receipt, which came before the restart).
 *
 * 3. etcd's word wins.  Failsafe applies only while etcd gives no answer
 *    about the key (unreachable, timeouts, "etcdserver: no leader" and other
 *    server errors).  An answer that the key no longer carries L's name and
 *    lease, or that another node holds it, drops leadership at once
 *    (ha_worker.c), with or without failsafe.  The one answer that does not
 *    is "lease expired" while the promises still cover L (4).
 *
 * 4. Taking the key back.  An outage longer than the TTL ends with etcd
 *    revoking L's lease, and the leader key with it.  If L's last fully
 *    confirmed round still covers it (failsafe_promises_cover: now before
 *    its t_send + min(P_i, TTL_L), minus the margin), L grants a new lease
 *    and creates the key with it, create-only (the key must not exist);
 *    it fences as before if the create finds a key, if any call fails or
 *    if the cover has run out.  Nobody else can have taken the key since
 *    it vanished.  The key went no earlier than L's last etcd-backed
 *    deadline (the lease rule); L's first round ran before that deadline,
 *    each later one before the deadline the earlier ones gave, and none
 *    runs once it has passed (ha_worker.c), so from before the key went
 *    until now every member of M has been bound by a promise (1), and did
 *    not race (2).  A node not in M does not race while the failsafe key
 *    exists (2).  Should someone have taken the key anyway, the create
 *    finds it and L fences.  Meanwhile L writes on the failsafe deadline,
 *    which stays what the fence reads until the new lease gives t_send +
 *    TTL (the lease rule) and the key carries that lease.
 *
 * The partial partitions the argument covers (test/t/350-354):
 *   - etcd paused (or every node cut from it) past the TTL: L writes on the
 *     promises; etcd then revokes the expired leases and L takes its key
 *     back under them (4), without a fence;
 *   - all nodes cut from etcd: nobody can create the key; L writes while
 *     every member confirms each round, and fences within one TTL of the
 *     first round a member misses;
 *   - L cut from etcd only: the replicas see the key expire, but their
 *     promises, renewed every round, keep them from racing; L writes on.
 *     If L dies, the promises lapse within one TTL and they race as usual;
 *   - L cut from etcd and from one replica R: rounds miss R, L extends
 *     nothing and fences at its last deadline; R's promise (if any) and
 *     the others' end after that deadline, so the replica that takes over
 *     starts after L stopped;
 *   - a replica cut from everyone: it cannot create the key; if L can use
 *     etcd no round happens, if not the rounds miss it and L fences;
 *   - etcd quorum lost while a replica is down: etcd answers errors or
 *     nothing, so L runs rounds; the down replica does not answer and L
 *     fences.  Every member, not a majority, must confirm: a majority could
 *     leave the down replica free to race when it returns and etcd heals.
 *     This is availability lost, never safety.
 */
#include "pg_ha.h"

#include <cjson/cJSON.h>

#include "ha_failsafe.h"

int64
failsafe_extended_deadline(int64 current, int64 t_send, int64 own_ttl_us,
						   const FailsafeMember *members, const FailsafeAnswer *answers,
						   int n, char *why, size_t whylen)
{
	int64		shortest = own_ttl_us;
	int64		extended;

	if (n <= 0)
	{
		/* nobody to confirm: no promise exists that could back writes */
		snprintf(why, whylen, "no member to confirm this leader");
		return current;
	}
	for (int i = 0; i < n; i++)
	{
		if (answers[i].status != 200 || answers[i].promise_us <= 0)
		{
			if (answers[i].status == 0)
				snprintf(why, whylen, "member \"%s\" did not answer", members[i].name);
			else
				snprintf(why, whylen, "member \"%s\" did not confirm (HTTP %d)",
						 members[i].name, answers[i].status);
			return current;
		}
		shortest = Min(shortest, answers[i].promise_us);
	}
	if (shortest <= 0)
	{
		snprintf(why, whylen, "no time to extend by");
		return current;
	}
	extended = t_send + shortest;
	snprintf(why, whylen, "all %d members confirmed", n);
	return Max(current, extended);
}

int
failsafe_answer(const FailsafeAsk *ask, const char **why)
{
	if (!ask->worker_running)
	{
		*why = "the HA worker is not running";
		return 503;
	}
	if (ask->from == NULL || ask->from[0] == '\0')
	{
		*why = "no leader named";
		return 409;
	}
	if (strcmp(ask->from, ask->self) == 0)
	{
		*why = "a node does not confirm itself";
		return 409;
	}
	if (ask->role != PG_HA_ROLE_REPLICA)
	{
		*why = "this node is not a replica";
		return 409;
	}
	if (ask->key_claimed)
	{
		*why = "this node is taking the leader key";
		return 503;
	}
	if (ask->leader_known && ask->leader != NULL && ask->leader[0] != '\0' &&
		strcmp(ask->leader, ask->from) != 0)
	{
		*why = "another node holds the leader key";
		return 409;
	}
	*why = "Accepted";
	return 200;
}

bool
failsafe_promise_binding(int64 now, int64 until)
{
	return now < until;
}

bool
failsafe_promises_cover(int64 now, int64 confirmed_until, int64 margin_us)
{
	return confirmed_until > 0 && now < confirmed_until - margin_us;
}

bool
failsafe_members_encode(const FailsafeMember *m, int n, char *buf, size_t len)
{
	cJSON	   *obj = cJSON_CreateObject();
	char	   *text;
	bool		ok = obj != NULL;

	for (int i = 0; ok && i < n; i++)
		ok = cJSON_AddStringToObject(obj, m[i].name, m[i].api_url) != NULL;
	text = ok ? cJSON_PrintUnformatted(obj) : NULL;
	ok = text != NULL && strlen(text) < len;
	if (ok)
		strlcpy(buf, text, len);
	if (text)
		cJSON_free(text);
	cJSON_Delete(obj);
	return ok;
}

bool
failsafe_members_decode(const char *json, FailsafeMember *out, int max, int *n)
{
	cJSON	   *obj = json ? cJSON_Parse(json) : NULL;
	cJSON	   *item;
	bool		ok = cJSON_IsObject(obj);
	cJSON	   *walk = ok ? obj : NULL;

	*n = 0;
	cJSON_ArrayForEach(item, walk)
	{
		if (!cJSON_IsString(item) || item->string == NULL || item->string[0] == '\0' ||
			strlen(item->string) >= PG_HA_NAME_LEN ||
			strlen(item->valuestring) >= FAILSAFE_URL_LEN || *n >= max)
		{
			ok = false;
			break;
		}
		strlcpy(out[*n].name, item->string, PG_HA_NAME_LEN);
		strlcpy(out[*n].api_url, item->valuestring, FAILSAFE_URL_LEN);
		(*n)++;
	}
	cJSON_Delete(obj);
	if (!ok)
		*n = 0;
	return ok;
}

bool
failsafe_members_include(const FailsafeMember *m, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(m[i].name, name) == 0)
			return true;
	return false;
}
