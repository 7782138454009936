/*
 * volume_wim_test.c - the write-intent map's flush (volume/vol_mat.c,
 * vol_wim_flush; white box through vol_i.h), on a real volume of six
 * zone directories under a temporary directory (removed at the end,
 * also on failure).
 *
 * What must hold (V5: the regions a zone missed are named on W zones
 * before the log space of the batches it missed is reused):
 *  - A mark made while a flush is writing its zone's pages, by another
 *    thread (the materialiser marks a round's absent zones while repair
 *    flushes after a resync step, and the other way round), is not
 *    lost: its page stays dirty, the next flush writes it, and a
 *    reopened volume still has the bit.  The flush used to clear every
 *    dirty flag of the zone at its end, including that page's.
 *  - A flush that cannot reach W copies leaves its pages dirty.
 *  - A discard materialised while a zone is out leaves tombstones, not
 *    holes: the absent zone's own log may still hold an older write of
 *    those blocks, which recovery replays into it once the other zones'
 *    logs have moved past the discard.  A hole says "never written",
 *    and a read would then believe that zone's older write (a deleted
 *    file's blocks coming back).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "test/lib/tutil.h"
#include "volume/vol_i.h"
#include "volume/volume.h"

#define ZONE 5
/* Two regions of one WIM page, and one of another page. */
#define LBA_A 0ull
#define LBA_B (10ull << VOL_WIM_REGION_SHIFT)
#define LBA_C ((uint64_t)VOL_WIM_PAGE_REGIONS << VOL_WIM_REGION_SHIFT)

static char dirs[VOL_ZONES][128];
static const char *paths[VOL_ZONES];
static int hook_calls;

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

static uint32_t page_of(uint64_t lba)
{
	return (uint32_t)((lba >> VOL_WIM_REGION_SHIFT) / VOL_WIM_PAGE_REGIONS);
}

static int page_dirty(struct vol *v, int z, uint64_t lba)
{
	int d;

	pthread_rwlock_rdlock(&v->wim_lock);
	d = v->zones[z].wim_dirty && v->zones[z].wim_dirty[page_of(lba)];
	pthread_rwlock_unlock(&v->wim_lock);
	return d;
}

/* Another thread's marks, made after the flush wrote ZONE's pages. */
static void mark_meanwhile(struct vol *v, int about)
{
	if (about != ZONE)
		return;
	hook_calls++;
	vol_wim_mark(v, ZONE, LBA_B, 1);
	vol_wim_mark(v, ZONE, LBA_C, 1);
}

static void test_mark_during_flush(void)
{
	struct vol *v = NULL;

	CHECK_OK(scratch_mkfs("race", 0, dirs, paths));
	CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, -1));
	if (!v)
		return;
	vol_wim_mark(v, ZONE, LBA_A, 1);
	v->wim_flush_hook = mark_meanwhile;
	CHECK_OK(vol_wim_flush(v));
	v->wim_flush_hook = NULL;
	CHECK_EQ(hook_calls, 1);
	CHECK_EQ(page_dirty(v, ZONE, LBA_A), 1); /* B shares A's page */
	CHECK_EQ(page_dirty(v, ZONE, LBA_C), 1);
	CHECK_OK(vol_wim_flush(v));
	CHECK_EQ(page_dirty(v, ZONE, LBA_A), 0);
	CHECK_EQ(page_dirty(v, ZONE, LBA_C), 0);
	CHECK_OK(vol_close(v));

	/* Only what reached the zones' map files comes back. */
	v = NULL;
	CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, -1));
	if (!v)
		return;
	CHECK_EQ(vol_wim_test(v, ZONE, LBA_A), 1);
	CHECK_EQ(vol_wim_test(v, ZONE, LBA_B), 1);
	CHECK_EQ(vol_wim_test(v, ZONE, LBA_C), 1);
	CHECK_EQ(vol_wim_test(v, ZONE, LBA_B + VOL_WIM_REGION_BLOCKS), 0);
	CHECK_OK(vol_close(v));
}

/* Three zones faulted: two copies of ZONE's map, W needs three. */
static void test_short_flush_stays_dirty(void)
{
	struct vol *v = NULL;

	CHECK_OK(scratch_mkfs("short", 0, dirs, paths));
	CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, -1));
	if (!v)
		return;
	vol_wim_mark(v, ZONE, LBA_A, 1);
	for (int z = 0; z < 3; z++)
		CHECK_OK(vol_debug_zone_fault(v, z, -EIO));
	CHECK_EQ(vol_wim_flush(v), -EIO);
	CHECK_EQ(page_dirty(v, ZONE, LBA_A), 1);
	for (int z = 0; z < 3; z++)
		CHECK_OK(vol_debug_zone_fault(v, z, 0));
	CHECK_OK(vol_wim_flush(v));
	CHECK_EQ(page_dirty(v, ZONE, LBA_A), 0);
	CHECK_OK(vol_close(v));
}

/* Commit n blocks from lba at version ver, in transactions of 64. */
static int write_run(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	int ret = 0;

	for (uint32_t i = 0; i < n && !ret; i += 64) {
		struct vol_txn *t;

		ret = vol_txn_begin(v, &t);
		for (uint32_t j = i; j < i + 64 && j < n && !ret; j++) {
			scratch_fill(buf, lba + j, ver);
			ret = vol_txn_write(t, lba + j, buf);
		}
		ret = ret ? (vol_txn_abort(t), ret) : vol_txn_commit(t);
	}
	return ret;
}

/* Wait (up to 5 s) until every zone's log write of every batch is in. */
static int all_logged(struct vol *v)
{
	for (int i = 0; i < 500; i++) {
		int busy = 0;

		pthread_mutex_lock(&v->lock);
		for (struct vol_batch *b = v->batches; b; b = b->next)
			busy |= b->pending != 0;
		pthread_mutex_unlock(&v->lock);
		if (!busy)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

#define FRESH (64ull * 4096) /* a whole meta page nothing wrote yet */
#define FILLER (1ull << 20)

static void test_discard_while_absent(void)
{
	struct vol *v = NULL;
	struct vol_txn *t = NULL;

	CHECK_OK(scratch_mkfs("absent", 0, dirs, paths));
	CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, -1));
	if (!v)
		return;
	/* In every zone's log, zone 5's too; not materialised yet. */
	CHECK_OK(write_run(v, FRESH, 64, 1));
	CHECK_OK(all_logged(v));
	/* Zone 5 fails at its next write: the discard's. */
	CHECK_OK(vol_debug_zone_fault(v, ZONE, -EIO));
	CHECK_OK(vol_txn_begin(v, &t));
	if (t) {
		CHECK_OK(vol_txn_discard(t, FRESH, 64));
		CHECK_OK(vol_txn_commit(t));
	}
	CHECK_OK(vol_sync(v));
	/* Three laps of the 8 MiB log: the discard's batch is gone from
	 * every log; zone 5's still holds the write. */
	CHECK_OK(write_run(v, FILLER, 3 * 2048, 1));
	CHECK_OK(vol_sync(v));
	CHECK_EQ(scratch_check_run(v, FRESH, 64, 0, "discarded"), 0);
	CHECK_OK(vol_close(v));

	v = NULL;
	CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, -1));
	if (!v)
		return;
	/* Reads start one zone further each time: zone 5 is asked too. */
	for (int i = 0; i < VOL_ZONES; i++)
		CHECK_EQ(scratch_check_run(v, FRESH, 64, 0, "reopened"), 0);
	CHECK_EQ(scratch_check_run(v, FILLER, 64, 1, "filler"), 0);
	CHECK_OK(vol_close(v));
}

int main(void)
{
	vol_set_log(quiet_log);
	if (scratch_setup("wim"))
		return 1;
	run("mark-in-flush", test_mark_during_flush);
	run("short-flush", test_short_flush_stays_dirty);
	run("discard-absent", test_discard_while_absent);
	scratch_cleanup();
	return check_failures ? 1 : 0;
}
