/*
 * volume_commit_info_test.c - the commit latency figures of vol_info
 * (struct vol_commit_info, `sixfold status`): the histogram they come
 * from (volume/vol_io.c, white box through vol_i.h), and the figures of
 * a real volume on six zone directories under a temporary directory
 * (removed at the end, also on failure).
 *
 * What must hold:
 *  - A percentile is within 1/16 of the exact one, never above the
 *    maximum, and values below 8 us are exact; the maximum and the mean
 *    are exact; values past the last bucket still count.
 *  - After N transactions committed one at a time, N batches are
 *    counted; each phase's p50 <= p90 <= p99 <= max; since a batch is
 *    written before it is durable and sent before it is written, each
 *    percentile of written is at most durable's, and durable's at most
 *    total's.  A reopened volume starts from zero.
 *  - Where the six zone directories share one device flush (ext4, XFS),
 *    each of those batches issued one flush, and the committer waiting
 *    for it ran some of them itself (hand_flush in volume/vol_log.c:
 *    nearly all, as it waits long before the six writes are in; "some"
 *    keeps a preempted committer from failing the test).  Elsewhere
 *    there are none.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/vol_i.h"
#include "volume/volume.h"

#define COMMITS 40

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* |got - want| <= want / 16 */
static int near(uint64_t got, uint64_t want)
{
	uint64_t d = got > want ? got - want : want - got;

	return d * 16 <= want;
}

static void test_hist(void)
{
	struct vol_hist *h = calloc(1, sizeof(*h));
	struct vol_latency l;

	if (!h) {
		CHECK(h != NULL);
		return;
	}
	vol_hist_get(h, &l);
	CHECK_EQ(l.p50_us + l.p99_us + l.max_us + l.mean_us, 0);

	/* 1..1000 once each: the k-th percentile is 10 k. */
	for (uint64_t us = 1; us <= 1000; us++)
		vol_hist_add(h, us);
	vol_hist_get(h, &l);
	CHECK_EQ(h->n, 1000);
	CHECK_EQ(l.mean_us, 500);
	CHECK_EQ(l.max_us, 1000);
	CHECK(near(l.p50_us, 500));
	CHECK(near(l.p90_us, 900));
	CHECK(near(l.p99_us, 990));
	CHECK(l.p99_us <= l.max_us);

	/* Small values are exact. */
	memset(h, 0, sizeof(*h));
	for (int i = 0; i < 10; i++)
		vol_hist_add(h, i < 5 ? 3 : 6);
	vol_hist_get(h, &l);
	CHECK_EQ(l.p50_us, 3);
	CHECK_EQ(l.p90_us, 6);
	CHECK_EQ(l.max_us, 6);

	/* Every bucket's middle is within 1/16 of every value in it. */
	memset(h, 0, sizeof(*h));
	for (uint64_t us = 8; us < (1u << 20); us += us / 7 + 1) {
		memset(h, 0, sizeof(*h));
		vol_hist_add(h, us);
		vol_hist_add(h, 1ull << 30); /* the max: no clamping */
		vol_hist_get(h, &l);
		if (!near(l.p50_us, us)) {
			fprintf(stderr, "value %llu: p50 %llu\n",
				(unsigned long long)us,
				(unsigned long long)l.p50_us);
			CHECK(near(l.p50_us, us));
			break;
		}
	}

	/* Past the last bucket (2^40 us): counted, max exact. */
	memset(h, 0, sizeof(*h));
	vol_hist_add(h, 1ull << 50);
	vol_hist_get(h, &l);
	CHECK_EQ(h->n, 1);
	CHECK_EQ(l.max_us, 1ull << 50);
	CHECK(l.p50_us <= l.max_us && l.p50_us >= 1ull << 39);
	free(h);
}

static void check_order(const struct vol_latency *l, const char *name)
{
	if (!(l->p50_us <= l->p90_us && l->p90_us <= l->p99_us &&
	      l->p99_us <= l->max_us && l->mean_us <= l->max_us))
		fprintf(stderr,
			"%s: p50 %llu p90 %llu p99 %llu max %llu mean %llu\n",
			name, (unsigned long long)l->p50_us,
			(unsigned long long)l->p90_us,
			(unsigned long long)l->p99_us,
			(unsigned long long)l->max_us,
			(unsigned long long)l->mean_us);
	CHECK(l->p50_us <= l->p90_us);
	CHECK(l->p90_us <= l->p99_us);
	CHECK(l->p99_us <= l->max_us);
	CHECK(l->mean_us <= l->max_us);
}

/* a happens before b in every batch: so does each of its percentiles. */
static void check_before(const struct vol_latency *a,
			 const struct vol_latency *b)
{
	CHECK(a->p50_us <= b->p50_us);
	CHECK(a->p90_us <= b->p90_us);
	CHECK(a->p99_us <= b->p99_us);
	CHECK(a->max_us <= b->max_us);
}

static void test_volume(const char *const *paths)
{
	struct vol_info *in = calloc(1, sizeof(*in));
	struct vol *v;

	if (!in) {
		CHECK(in != NULL);
		return;
	}
	if (CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) < 0)
		goto out;
	if (CHECK_OK(vol_info(v, in)) == 0)
		CHECK_EQ(in->commit.batches, 0);
	/* One at a time: each transaction is a batch of its own. */
	for (uint32_t i = 0; i < COMMITS; i++)
		if (CHECK_OK(scratch_commit_block(v, i, 1, NULL)) < 0)
			break;
	if (CHECK_OK(vol_info(v, in)) == 0) {
		const struct vol_commit_info *c = &in->commit;

		CHECK_EQ(c->batches, COMMITS);
		check_order(&c->queued, "queued");
		check_order(&c->written, "written");
		check_order(&c->durable, "durable");
		check_order(&c->total, "total");
		CHECK(c->durable.max_us > 0); /* six writes and a flush */
		check_before(&c->written, &c->durable);
		check_before(&c->durable, &c->total);
		check_before(&c->queued, &c->total);
		if (scratch_shares_flush()) {
			CHECK_EQ(c->shared_flushes, COMMITS);
			CHECK(c->waiter_flushes > 0);
			CHECK(c->waiter_flushes <= c->shared_flushes);
		} else {
			CHECK_EQ(c->shared_flushes, 0);
			CHECK_EQ(c->waiter_flushes, 0);
		}
	}
	CHECK_OK(vol_close(v));

	if (CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) < 0)
		goto out;
	if (CHECK_OK(vol_info(v, in)) == 0) {
		CHECK_EQ(in->commit.batches, 0); /* since open */
		CHECK_EQ(in->commit.total.max_us, 0);
		CHECK_EQ(in->commit.shared_flushes, 0);
	}
	CHECK_EQ(scratch_check_run(v, 0, COMMITS, 1, "reopened"), 0);
	CHECK_OK(vol_close(v));
out:
	free(in);
}

int main(void)
{
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];

	test_hist();
	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("cinfo")) < 0)
		return CHECK_DONE();
	if (CHECK_OK(scratch_mkfs("v", 0, dirs, paths)) == 0)
		test_volume(paths);
	scratch_cleanup();
	return CHECK_DONE();
}
