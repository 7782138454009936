/*
 * volume_mat_test.c - materialisation while commits run (volume/vol_mat.c,
 * Pacing), in process, on six zone directories under a temporary
 * directory (removed at the end, also on failure).
 *
 * What must hold:
 *  - With commits going on, a round that touches many meta pages goes
 *    piece by piece and pauses between pieces (vol_debug_mat_paces
 *    counts the pauses); every block still reads back, every zone stays
 *    in the write set (the writeback started after each piece is
 *    accepted by every zone), and after a reopen every block reads back
 *    from the segments.
 *  - vol_sync returns while another thread keeps committing: it asks
 *    for speed, and pacing never waits on it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

/* One block in each of this many meta pages (64 entries a page): a
 * round of them is many pacing pieces (VOL_MAT_PACE_PAGES each). */
#define SPREAD 400
#define META_STRIDE 64
#define HEARTBEAT_LBA 5000000 /* the busy thread's block, far away */

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* The spread blocks at version ver, in transactions of 20. */
static int write_spread(struct vol *v, uint32_t ver)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	int ret = 0;

	for (int i = 0; i < SPREAD && !ret; i += 20) {
		struct vol_txn *t;

		ret = vol_txn_begin(v, &t);
		for (int j = i; j < i + 20 && j < SPREAD && !ret; j++) {
			uint64_t lba = (uint64_t)j * META_STRIDE;

			scratch_fill(buf, lba, ver);
			ret = vol_txn_write(t, lba, buf);
		}
		if (!ret)
			ret = vol_txn_commit(t);
		else if (t)
			vol_txn_abort(t);
	}
	return ret;
}

static int check_spread(struct vol *v, uint32_t ver, const char *when)
{
	int bad = 0;

	for (int i = 0; i < SPREAD; i++)
		bad += scratch_check_run(v, (uint64_t)i * META_STRIDE, 1, ver,
					 when);
	return bad;
}

struct busy {
	struct vol *v;
	atomic_int stop;
	uint32_t ver; /* last committed, read after join */
	int err;
};

/*
 * Commit one block after another, a millisecond apart, until told to
 * stop.  The pause keeps the test about pacing: a committer that never
 * pauses can fill the scratch volume's 8 MiB log past half between two
 * rounds on a fast disk, and a round then goes at full speed
 * (unhurried() in vol_mat.c) and is right not to pace.
 */
static void *busy_main(void *arg)
{
	struct busy *b = arg;

	while (!atomic_load(&b->stop) && !b->err) {
		b->err = scratch_commit_block(b->v, HEARTBEAT_LBA, b->ver + 1,
					      NULL);
		if (!b->err)
			b->ver++;
		usleep(1000);
	}
	return NULL;
}

static void check_zones_healthy(struct vol *v)
{
	struct vol_info info;

	if (CHECK_OK(vol_info(v, &info)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++)
		CHECK_EQ(info.zones[z].state, VOL_ZONE_HEALTHY);
}

static void test_paced(const char *const *paths)
{
	struct busy b = { 0 };
	struct vol *v;
	pthread_t tid;
	int started;

	if (CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) < 0)
		return;
	b.v = v;
	started = CHECK_OK(-pthread_create(&tid, NULL, busy_main, &b)) == 0;
	/* Rounds of the spread blocks, with the busy thread committing. */
	for (uint32_t ver = 1; ver <= 3; ver++) {
		CHECK_OK(write_spread(v, ver));
		/* a round runs 200 ms after its records at the latest */
		for (int i = 0; i < 100 && vol_debug_mat_paces(v) == 0; i++)
			usleep(20000);
	}
	CHECK(vol_debug_mat_paces(v) > 0);
	/* vol_sync is not paced: it returns while commits go on */
	CHECK_OK(vol_sync(v));
	CHECK_EQ(check_spread(v, 3, "paced, synced"), 0);
	if (started) {
		atomic_store(&b.stop, 1);
		pthread_join(tid, NULL);
	}
	CHECK_OK(b.err);
	CHECK(b.ver > 0);
	check_zones_healthy(v);
	CHECK_EQ(scratch_check_run(v, HEARTBEAT_LBA, 1, b.ver, "heartbeat"), 0);
	CHECK_OK(vol_close(v));

	/* Reopened: from the segments (and the log's replay, idempotent). */
	if (CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) < 0)
		return;
	CHECK_EQ(check_spread(v, 3, "reopened"), 0);
	CHECK_EQ(scratch_check_run(v, HEARTBEAT_LBA, 1, b.ver, "heartbeat"), 0);
	check_zones_healthy(v);
	CHECK_OK(vol_close(v));
}

int main(void)
{
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];

	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("mat")) < 0)
		return CHECK_DONE();
	if (CHECK_OK(scratch_mkfs("v", 0, dirs, paths)) == 0)
		test_paced(paths);
	scratch_cleanup();
	return CHECK_DONE();
}
