/*
 * volume_space_test.c - admission of writes against the zones' free space
 * (volume/vol_space.c), on six zone directories under a temporary
 * directory, with their free space read as small by vol_debug_zone_space.
 *
 * What must hold:
 *  - vol_txn_reserve promises a transaction room only while four zones
 *    have it on top of every block admitted or promised before, with
 *    twice the reserve for a writing transaction and once for a freeing
 *    one; a refused promise changes nothing, an aborted one is given
 *    back.
 *  - A commit nobody promised room is refused when it would take a
 *    promised one's.
 *  - A promised commit is admitted even when the zones' free space has
 *    fallen since (the spacer read less), and no zone leaves the write
 *    set for it.  Before promises, the filesystem checked at each step
 *    and the volume checked again at commit; under load the second
 *    check failed after the tree had changed, a sticky error that made
 *    every later change of the mount fail (a delete on full zones, in
 *    test_fs_full_zones.py).
 *  - Blocks materialised since a zone's free space was read count
 *    against that reading until the next.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/vol_format.h"
#include "volume/volume.h"

/* Six zone directories on one file system: each block costs it six
 * copies of a block and a meta entry. */
#define BLOCK_COST ((uint64_t)VOL_ZONES * (VOL_BLOCK_BYTES + VOL_META_BYTES))
#define RESERVE 64 /* VOL_SPACE_RESERVE_BLOCKS */

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* Every zone reads as having room for `blocks` blocks, until the next
 * call (UINT64_MAX: read the real free space again). */
static int cap_space(struct vol *v, uint64_t blocks)
{
	int ret = 0;

	for (int z = 0; z < VOL_ZONES && !ret; z++)
		ret = vol_debug_zone_space(v, z,
					   blocks == UINT64_MAX ?
						   UINT64_MAX :
						   blocks * BLOCK_COST);
	return CHECK_OK(ret);
}

/* n blocks from lba at version ver into t. */
static int write_run(struct vol_txn *t, uint64_t lba, uint32_t n, uint32_t ver)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	int ret = 0;

	for (uint32_t i = 0; !ret && i < n; i++) {
		scratch_fill(buf, lba + i, ver);
		ret = vol_txn_write(t, lba + i, buf);
	}
	return CHECK_OK(ret);
}

/* Blocks lba..lba+n read version ver. */
static void check_run(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver)
{
	CHECK_EQ(scratch_check_run(v, lba, n, ver, "space"), 0);
}

static int zones_up(struct vol *v)
{
	struct vol_info info;
	int up = 0;

	if (CHECK_OK(vol_info(v, &info)) < 0)
		return -1;
	for (int z = 0; z < VOL_ZONES; z++)
		up += info.zones[z].state == VOL_ZONE_HEALTHY;
	return up;
}

static void test_promises(struct vol *v)
{
	struct vol_txn *a, *b, *c;
	uint64_t lsn;

	/* Room for 300 blocks: a writer's 100 + 128 fits. */
	if (cap_space(v, 300) < 0)
		return;
	CHECK_OK(vol_txn_begin(v, &a));
	CHECK_OK(vol_txn_reserve(a, 100, 0));
	/* 100 promised + 100 + 128 does not; as a freeing one, + 64 does. */
	CHECK_OK(vol_txn_begin(v, &b));
	CHECK_EQ(vol_txn_reserve(b, 100, 0), -ENOSPC);
	CHECK_OK(vol_txn_reserve(b, 100, 1));
	/* ... and its promise is given back when it is aborted: then 130
	 * more fit as a freeing one (100 + 130 + 64 <= 300). */
	vol_txn_abort(b);
	CHECK_OK(vol_txn_begin(v, &b));
	CHECK_OK(vol_txn_reserve(b, 130, 1));
	vol_txn_abort(b);
	/* A commit of 150 nobody promised would take a's room. */
	CHECK_OK(vol_txn_begin(v, &c));
	if (write_run(c, 5000, 150, 1) == 0)
		CHECK_EQ(vol_txn_commit(c), -ENOSPC);
	else
		vol_txn_abort(c);

	/* The zones read fuller now (room for 50): a keeps its promise. */
	if (cap_space(v, 50) < 0) {
		vol_txn_abort(a);
		return;
	}
	if (write_run(a, 1000, 100, 2) == 0)
		CHECK_OK(vol_txn_commit(a));
	else
		vol_txn_abort(a);
	CHECK_EQ(zones_up(v), VOL_ZONES);
	check_run(v, 1000, 100, 2);
	/* Nobody else gets room now (100 waiting + 1 + 128 > 50). */
	CHECK_OK(vol_txn_begin(v, &b));
	CHECK_EQ(vol_txn_reserve(b, 1, 0), -ENOSPC);
	vol_txn_abort(b);

	/* Room back: everything goes on. */
	CHECK_OK(vol_sync(v));
	if (cap_space(v, UINT64_MAX) < 0)
		return;
	CHECK_OK(vol_txn_begin(v, &b));
	CHECK_OK(vol_txn_reserve(b, 150, 0));
	if (write_run(b, 5000, 150, 3) == 0 &&
	    CHECK_OK(vol_txn_commit_async(b, &lsn)) == 0)
		CHECK_OK(vol_wait(v, lsn));
	check_run(v, 5000, 150, 3);
	check_run(v, 1000, 100, 2);
	CHECK_EQ(zones_up(v), VOL_ZONES);
}

/*
 * A reading taken after a commit was admitted but before its blocks were
 * materialised: once the round is done they have left the waiting count,
 * and the reading does not show them yet.  They count against it all the
 * same (once, not twice): before, they counted nowhere until the next
 * reading, and a burst of commits could then fill the zones past the
 * reserve, so that the zones failed one after another on ENOSPC and the
 * volume stalled (seen under load in test_fs_full_zones.py).
 */
static void test_stale_reading(struct vol *v)
{
	struct vol_txn *t;

	CHECK_OK(vol_sync(v)); /* nothing else waits */
	CHECK_OK(vol_txn_begin(v, &t));
	if (write_run(t, 8000, 200, 1) == 0)
		CHECK_OK(vol_txn_commit(t));
	else
		vol_txn_abort(t);
	/* read now (room for 300), and not again for a while */
	if (cap_space(v, 300) < 0)
		return;
	CHECK_OK(vol_sync(v));
	/* room for 100: 50 + 128 does not fit, 10 + 64 (freeing) does */
	CHECK_OK(vol_txn_begin(v, &t));
	CHECK_EQ(vol_txn_reserve(t, 50, 0), -ENOSPC);
	CHECK_OK(vol_txn_reserve(t, 10, 1));
	vol_txn_abort(t);
	/* a fresh reading shows them */
	if (cap_space(v, UINT64_MAX) < 0)
		return;
	CHECK_OK(vol_txn_begin(v, &t));
	CHECK_OK(vol_txn_reserve(t, 50, 0));
	vol_txn_abort(t);
	check_run(v, 8000, 200, 1);
}

int main(void)
{
	struct vol_mkfs_opts o = { .log_blocks = 2048, .key = &scratch.key };
	struct vol *v;

	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("space")) < 0)
		return CHECK_DONE();
	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = scratch.zone[z];
	o.force = 1;
	if (CHECK_OK(vol_mkfs(&o, NULL)) < 0)
		return CHECK_DONE();
	if (CHECK_OK(scratch_open(&v, 0, scratch.zone_paths, VOL_ZONES,
				  2000)) == 0) {
		test_promises(v);
		test_stale_reading(v);
		CHECK_EQ(vol_close(v), 0);
	}
	scratch_cleanup();
	return CHECK_DONE();
}
