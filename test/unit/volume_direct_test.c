/*
 * volume_direct_test.c - the direct path for fresh blocks (volume/vol_log.c
 * L2, vol_mat.c, vol_open.c fetch_direct), in process and in a child that
 * dies without closing, on six zone directories under a temporary
 * directory (removed at the end, also on failure).
 *
 * What must hold:
 *  - A transaction of enough fresh blocks sends them direct: its batch
 *    is version 2 with only the other blocks in the log, and every
 *    block reads right before materialisation, after it, and reopened.
 *  - Fresh blocks go through the log when they could meet an older
 *    record on their way to the segment: too few of them, a discard of
 *    their LBAs not yet materialised (whose punch would otherwise come
 *    after the direct write), a zone out of the write set.
 *  - A zone that cannot open the segment file leaves the write set and
 *    the transaction is durable on the other five.
 *  - A process that dies after the commit but before materialisation:
 *    recovery reads the blocks back from the segments (also when three
 *    zones lost theirs, which replay then writes back); if no zone has
 *    one of them the batch was never durable and is cut, the whole
 *    transaction with it (its logged block included).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/vol_format.h"
#include "volume/volume.h"

#define BLOCK ((int)VOL_BLOCK_BYTES)
#define FRESH 64 /* blocks of a direct transaction */
#define META_LBA 100 /* the transaction's logged block */
#define BIG_BLOCKS 4096 /* twice the test volume's log */

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

static int open_vol(struct vol **v, int readonly, const char *const *paths,
		    int npaths)
{
	return scratch_open(v, readonly, paths, npaths, 2000);
}

static int make_volume(void)
{
	struct vol_mkfs_opts o = { .log_blocks = 2048, .key = &scratch.key };

	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = scratch.zone[z];
	o.force = 1;
	return CHECK_OK(vol_mkfs(&o, NULL));
}

/*
 * One transaction: n fresh blocks from lba at version ver, then (meta)
 * one logged block at META_LBA; committed async, *lsn its last LSN.
 */
static int commit_fresh(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver,
			int meta, uint64_t *lsn)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	for (uint32_t i = 0; !ret && i < n; i++) {
		scratch_fill(buf, lba + i, ver);
		ret = vol_txn_write_fresh(t, lba + i, buf);
	}
	if (!ret && meta) {
		scratch_fill(buf, META_LBA, ver);
		ret = vol_txn_write(t, META_LBA, buf);
	}
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return vol_txn_commit_async(t, lsn);
}

/* n blocks from lba at version ver through the log, committed async. */
static int commit_logged(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver,
			 uint64_t *lsn)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	for (uint32_t i = 0; !ret && i < n; i++) {
		scratch_fill(buf, lba + i, ver);
		ret = vol_txn_write(t, lba + i, buf);
	}
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return vol_txn_commit_async(t, lsn);
}

/* Blocks lba..lba+n read version ver (0: zeros); how many do not. */
static int check_run(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver,
		     const char *when)
{
	int bad = scratch_check_run(v, lba, n, ver, when);

	CHECK_EQ(bad, 0);
	return bad;
}

/* Rename the zones of mask away (away) or back. */
static int move_zones(uint32_t mask, int away)
{
	char moved[160];
	int ret = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		if (!(mask & (1u << z)))
			continue;
		snprintf(moved, sizeof(moved), "%s.away", scratch.zone[z]);
		if (away ? rename(scratch.zone[z], moved) :
			   rename(moved, scratch.zone[z]))
			ret = -errno;
	}
	return CHECK_OK(ret);
}

/* Blocks lba..lba+n read version ver from the zones of keep alone. */
static void check_run_on(uint32_t keep, uint64_t lba, uint32_t n, uint32_t ver,
			 const char *when)
{
	const char *one[1];
	struct vol *v;

	one[0] = scratch.zone[__builtin_ctz(keep)];
	if (move_zones(0x3f & ~keep, 1) < 0)
		return;
	if (CHECK_OK(open_vol(&v, 1, one, 1)) == 0) {
		check_run(v, lba, n, ver, when);
		CHECK_EQ(vol_close(v), 0);
	}
	move_zones(0x3f & ~keep, 0);
}

/* The header of the batch holding lsn in zone z's log; -ENOENT. */
static int find_batch(int z, uint64_t lsn, struct vol_batch_hdr *out)
{
	char path[256];
	size_t len = 2048u * VOL_BLOCK_BYTES;
	uint8_t *log = malloc(len);
	int fd, found = -ENOENT;

	snprintf(path, sizeof(path), "%s/log", scratch.zone[z]);
	fd = open(path, O_RDONLY);
	if (!log || fd < 0 || pread(fd, log, len, 0) != (ssize_t)len)
		goto out;
	for (size_t pos = 0; pos < 2048; pos++) {
		struct vol_batch_hdr h;

		if (vol_batch_decode_hdr(log + pos * VOL_BLOCK_BYTES,
					 len - pos * VOL_BLOCK_BYTES, &h))
			continue;
		if (lsn >= h.first_lsn && lsn < h.first_lsn + h.nrec) {
			*out = h;
			found = 0;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(log);
	return found;
}

/* The batch of lsn went direct (version 2, ndata blocks logged) or not. */
static void check_batch(uint64_t lsn, int direct, uint32_t ndata)
{
	struct vol_batch_hdr h;

	if (CHECK_OK(find_batch(0, lsn, &h)) < 0)
		return;
	CHECK_EQ(h.version, direct ? 2u : 1u);
	CHECK_EQ(h.ndata, ndata);
}

static void test_direct(void)
{
	uint64_t lsn;
	struct vol *v;

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	/* 64 fresh blocks and one logged: only that one is in the log. */
	CHECK_OK(commit_fresh(v, 20000, FRESH, 1, 1, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_batch(lsn, 1, 1);
	check_run(v, 20000, FRESH, 1, "direct, pending");
	check_run(v, META_LBA, 1, 1, "logged, pending");
	CHECK_OK(vol_sync(v));
	check_run(v, 20000, FRESH, 1, "direct, materialised");
	/* Overwritten at once through the log: the newer version wins. */
	CHECK_OK(commit_fresh(v, 20000, 8, 2, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_batch(lsn, 0, 8); /* too few to go direct */
	CHECK_OK(vol_sync(v));
	check_run(v, 20000, 8, 2, "rewritten");
	check_run(v, 20008, FRESH - 8, 1, "kept");
	/*
	 * More fresh blocks than the log has blocks, committed without
	 * waiting: their records fill little of the log, so the log thread
	 * bounds the sealed blocks it holds by the log's size itself; it
	 * must wait for materialisation then, not stall.
	 */
	for (uint64_t lba = 100000; lba < 100000 + BIG_BLOCKS; lba += 256)
		CHECK_OK(commit_fresh(v, lba, 256, 7, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	CHECK_OK(vol_sync(v));
	check_run(v, 100000, BIG_BLOCKS, 7, "more than the log");
	CHECK_EQ(vol_close(v), 0);

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_run(v, 20000, 8, 2, "reopened");
	check_run(v, 20008, FRESH - 8, 1, "reopened");
	check_run(v, 100000, BIG_BLOCKS, 7, "more than the log, reopened");
	CHECK_EQ(vol_close(v), 0);
}

/*
 * A discard of the LBAs not yet materialised: had the blocks gone
 * direct, the discard's later punch would have removed them.
 */
static void test_fallbacks(void)
{
	struct vol_txn *t;
	uint64_t lsn, dlsn;
	struct vol *v;

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	CHECK_OK(commit_fresh(v, 30000, FRESH, 1, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	CHECK_OK(vol_sync(v));
	if (CHECK_OK(vol_txn_begin(v, &t)) == 0) {
		CHECK_OK(vol_txn_discard(t, 30000, FRESH));
		CHECK_OK(vol_txn_commit_async(t, &dlsn));
	}
	CHECK_OK(commit_fresh(v, 30000, FRESH, 2, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_batch(lsn, 0, FRESH);
	CHECK_OK(vol_sync(v));
	check_run(v, 30000, FRESH, 2, "after a discard");

	/* A zone out of the write set: the log path. */
	CHECK_OK(vol_debug_zone_fault(v, 5, -EIO));
	CHECK_OK(commit_fresh(v, 40000, FRESH, 1, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_batch(lsn, 0, FRESH);
	CHECK_OK(vol_sync(v));
	check_run(v, 40000, FRESH, 1, "zone 5 out");
	CHECK_EQ(vol_close(v), 0);
	CHECK_EQ(make_volume(), 0); /* zone 5 behind: start afresh */
}

/*
 * Zone 2 cannot make the segment file of PG 1 (a directory is in its
 * place): it leaves the write set, the transaction is durable on five,
 * and reads with zones 0, 1, 3 gone show the five had it.
 */
static void test_segment_fails(void)
{
	uint64_t lba = VOL_PG_BLOCKS + 500, lsn;
	char path[256];
	struct vol_info in;
	struct vol *v;

	snprintf(path, sizeof(path), "%s/pg/00001.seg", scratch.zone[2]);
	CHECK_OK(mkdir(path, 0700) ? -errno : 0);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		goto out;
	CHECK_OK(commit_fresh(v, lba, FRESH, 3, 1, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_batch(lsn, 1, 1);
	if (CHECK_OK(vol_info(v, &in)) == 0)
		CHECK_EQ(in.zones[2].state, VOL_ZONE_OFFLINE);
	check_run(v, lba, FRESH, 3, "zone 2 failed");
	CHECK_OK(vol_sync(v));
	check_run(v, lba, FRESH, 3, "zone 2 failed, materialised");
	CHECK_EQ(vol_close(v), 0);
	check_run_on(1u << 2 | 1u << 4 | 1u << 5, lba, FRESH, 3,
		     "read-only, zones 2 4 5");
out:
	rmdir(path);
	CHECK_EQ(make_volume(), 0);
}

/*
 * A child commits a direct transaction (and, with over, one more that
 * rewrites its first over blocks through the log at ver + 1) and dies
 * at once (no close, so nothing is materialised).  Returns the last
 * LSN, 0 if the child failed or its round was materialised after all.
 */
static uint64_t die_once(uint64_t lba, uint32_t ver, uint32_t over)
{
	int fds[2], status;
	uint64_t lsn = 0;
	struct vol_info in;
	pid_t pid;

	if (CHECK_OK(pipe(fds) ? -errno : 0) < 0)
		return 0;
	pid = fork();
	if (pid == 0) {
		struct vol *v;

		close(fds[0]);
		if (open_vol(&v, 0, scratch.zone_paths, VOL_ZONES) ||
		    commit_fresh(v, lba, FRESH, ver, 1, &lsn) ||
		    (over && commit_logged(v, lba, over, ver + 1, &lsn)) ||
		    vol_wait(v, lsn))
			_exit(1);
		if (write(fds[1], &lsn, sizeof(lsn)) != sizeof(lsn))
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	if (pid < 0 || read(fds[0], &lsn, sizeof(lsn)) != sizeof(lsn))
		lsn = 0;
	close(fds[0]);
	if (pid > 0)
		waitpid(pid, &status, 0);
	CHECK(lsn != 0);
	/* Its materialiser waits 200 ms for more: it should not have run. */
	if (lsn &&
	    CHECK_OK(vol_status(scratch.zone_paths, VOL_ZONES, &in)) == 0)
		for (int z = 0; z < VOL_ZONES; z++)
			if (in.zones[z].applied_lsn >= lsn)
				return 0;
	return lsn;
}

/* die_once, tried up to three times (its materialiser may have run). */
static uint64_t die_after_commit(uint64_t lba, uint32_t ver, uint32_t over)
{
	uint64_t lsn = 0;

	for (int i = 0; i < 3 && !lsn; i++)
		lsn = die_once(lba, ver, over);
	CHECK(lsn != 0);
	return lsn;
}

/* Punch block lba out of the segments of the zones of mask. */
static int punch(uint64_t lba, uint32_t mask)
{
	char path[256];
	int ret = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		int fd;

		if (!(mask & (1u << z)))
			continue;
		snprintf(path, sizeof(path), "%s/pg/%05llu.seg",
			 scratch.zone[z],
			 (unsigned long long)(lba / VOL_PG_BLOCKS));
		fd = open(path, O_RDWR);
		if (fd < 0 ||
		    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(lba % VOL_PG_BLOCKS) * BLOCK, BLOCK))
			ret = -errno;
		if (fd >= 0)
			close(fd);
	}
	return CHECK_OK(ret);
}

static void test_recovery(void)
{
	uint64_t lsn;
	struct vol *v;

	/* Every zone has the blocks in its segment, none in its meta. */
	if (!die_after_commit(50000, 1, 0))
		return;
	/* Zones 0, 1, 2 lost one block: the other three give it. */
	punch(50010, 0x07);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_run(v, 50000, FRESH, 1, "recovered");
	check_run(v, META_LBA, 1, 1, "recovered, logged block");
	CHECK_EQ(vol_close(v), 0);
	/* Replay wrote it back to zones 0, 1, 2. */
	check_run_on(0x07, 50000, FRESH, 1, "zones 0 1 2 alone");

	/* No zone has one block: never durable, the transaction is cut. */
	if (!die_after_commit(60000, 2, 0))
		return;
	punch(60020, 0x3f);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_run(v, 60000, FRESH, 0, "cut");
	check_run(v, META_LBA, 1, 1, "cut, logged block of the cut txn");
	/* The volume goes on: the LSN window moved past the cut. */
	CHECK_OK(commit_fresh(v, 60000, FRESH, 3, 0, &lsn));
	CHECK_OK(vol_wait(v, lsn));
	check_run(v, 60000, FRESH, 3, "after the cut");
	CHECK_EQ(vol_close(v), 0);

	/*
	 * A later logged version replaces 8 of the blocks, and every zone
	 * lost their direct copies (as when a round materialised the later
	 * version everywhere, then the process died before its
	 * checkpoints): nothing is cut, the later version wins.  Before
	 * recovery asked whether a later record replaces the block, it cut
	 * the log there and lost both acknowledged transactions.
	 */
	if (!die_after_commit(70000, 4, 8))
		return;
	for (uint64_t b = 70000; b < 70008; b++)
		punch(b, 0x3f);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_run(v, 70000, 8, 5, "replaced, direct copies gone");
	check_run(v, 70008, FRESH - 8, 4, "kept");
	check_run(v, META_LBA, 1, 4, "kept, logged block");
	CHECK_EQ(vol_close(v), 0);
}

int main(void)
{
	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("direct")) < 0)
		return CHECK_DONE();
	if (make_volume() < 0)
		return CHECK_DONE();
	test_direct();
	test_fallbacks();
	test_segment_fails();
	test_recovery();
	scratch_cleanup();
	return CHECK_DONE();
}
