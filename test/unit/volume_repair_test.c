/*
 * volume_repair_test.c - the volume's repair primitives (volume/
 * vol_repair.c), in process, on six zone directories under a temporary
 * directory (removed at the end, also on failure):
 *   scrub     copies damaged in 1..5 zones (ciphertext and meta entries)
 *             are all found and healed by a deep scrub, counted exactly;
 *             a block damaged in all six is reported lost and left
 *             alone; a second scrub finds nothing.
 *   readheal  a read that meets a bad copy queues it; vol_heal_queued
 *             heals it.
 *   resync    a zone that failed (injected EIO) and came back is
 *             admitted by vol_zone_probe and gets what it missed: every
 *             zone's meta entries are then byte-identical.
 *   quorum    with three zones out a commit waits; one back and it
 *             completes; all back and resynced.
 *   rebuild   vol_zone_replace into an empty directory, rebuilt; then
 *             two other zones fail and every block still reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "test/lib/tutil.h"
#include "volume/volume.h"

#define BLOCK ((int)VOL_BLOCK_BYTES)
#define NLBA 400
#define PG_BLOCKS 2621440ull

static uint32_t want[NLBA];
static char dirs[VOL_ZONES][128];
static const char *paths[VOL_ZONES];

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* Spread over two PGs and several regions and meta pages. */
static uint64_t test_lba(int i)
{
	return i < NLBA / 2 ? (uint64_t)i * 3 :
			      PG_BLOCKS + 5000 + (uint64_t)(i - NLBA / 2) * 7;
}

static int write_all(struct vol *v, uint32_t ver, int step)
{
	static uint8_t buf[BLOCK];
	struct vol_txn *t = NULL;
	int ret = 0, n = 0;

	for (int i = 0; i < NLBA && !ret; i += step) {
		if (!t && (ret = vol_txn_begin(v, &t)))
			break;
		scratch_fill(buf, test_lba(i), ver);
		ret = vol_txn_write(t, test_lba(i), buf);
		if (!ret && ++n == 32) {
			ret = vol_txn_commit(t);
			t = NULL;
			n = 0;
		}
		if (!ret)
			want[i] = ver;
	}
	if (t)
		ret = ret ? (vol_txn_abort(t), ret) : vol_txn_commit(t);
	return ret;
}

static int check_all(struct vol *v, const char *when)
{
	static uint8_t got[BLOCK], exp[BLOCK];
	int bad = 0;

	for (int i = 0; i < NLBA; i++) {
		if (want[i])
			scratch_fill(exp, test_lba(i), want[i]);
		else
			memset(exp, 0, BLOCK);
		if (vol_read(v, test_lba(i), got) || memcmp(got, exp, BLOCK)) {
			if (!bad)
				fprintf(stderr, "%s: lba %llu wrong\n", when,
					(unsigned long long)test_lba(i));
			bad++;
		}
	}
	CHECK_EQ(bad, 0);
	return bad;
}

static int open_vol(struct vol **v)
{
	struct vol_open_opts o = {
		.paths = paths,
		.npaths = VOL_ZONES,
		.key = &scratch.key,
		.write_timeout_ms = -1,
	};

	*v = NULL;
	return vol_open(&o, v);
}

static void zone_file(int z, uint64_t lba, const char *ext, char *path)
{
	snprintf(path, PATH_MAX, "%s/pg/%05llu.%s", paths[z],
		 (unsigned long long)(lba / PG_BLOCKS), ext);
}

/* Flip one byte of zone z's copy of lba: ciphertext, or meta entry. */
static void damage(int z, uint64_t lba, int meta)
{
	char path[PATH_MAX];
	uint8_t b;
	off_t off = meta ? (off_t)(lba % PG_BLOCKS) * 64 + 20 :
			   (off_t)(lba % PG_BLOCKS) * BLOCK + 100;
	int fd;

	zone_file(z, lba, meta ? "meta" : "seg", path);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	CHECK_EQ(pwrite(fd, &b, 1, off), 1);
	CHECK_OK(fsync(fd));
	close(fd);
}

/* Every zone's meta entry of every test LBA is byte-identical. */
static int metas_identical(void)
{
	int diff = 0;

	for (int i = 0; i < NLBA; i++) {
		uint8_t e[VOL_ZONES][64];

		for (int z = 0; z < VOL_ZONES; z++) {
			char path[PATH_MAX];
			int fd;

			memset(e[z], 0, 64);
			zone_file(z, test_lba(i), "meta", path);
			fd = open(path, O_RDONLY);
			if (fd < 0)
				continue;
			if (pread(fd, e[z], 64,
				  (off_t)(test_lba(i) % PG_BLOCKS) * 64) < 0)
				memset(e[z], 0xff, 64);
			close(fd);
			if (memcmp(e[z], e[0], 64)) {
				if (!diff)
					fprintf(stderr,
						"lba %llu: zone %d differs "
						"from zone 0\n",
						(unsigned long long)test_lba(i),
						z);
				diff++;
			}
		}
	}
	CHECK_EQ(diff, 0);
	return diff;
}

static void scrub_all(struct vol *v, struct vol_heal_counts *c, uint64_t *lost,
		      uint32_t *nlost)
{
	uint64_t lba = 0;
	uint32_t n;
	int ret;

	memset(c, 0, sizeof(*c));
	*nlost = 0;
	do {
		ret = vol_scrub_step(v, &lba, 1000, 1, c, lost + *nlost, 8, &n);
		*nlost += n;
	} while (ret == 0);
	CHECK_EQ(ret, 1);
}

static void test_scrub(void)
{
	struct vol_heal_counts c;
	uint64_t lost[64];
	uint32_t nlost;
	uint64_t copies = 0, gone;
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("scrub", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	rng_state = 42;
	/* 40 blocks, each damaged in 1..5 distinct zones. */
	for (int k = 0; k < 40; k++) {
		int i = k * (NLBA / 40), nz = 1 + (int)rnd_below(5);
		uint32_t used = 0;

		while (__builtin_popcount(used) < nz) {
			int z = (int)rnd_below(VOL_ZONES);

			if (used & (1u << z))
				continue;
			used |= 1u << z;
			damage(z, test_lba(i), (int)rnd_below(3) == 0);
			copies++;
		}
	}
	/* One block damaged everywhere: lost, and left alone. */
	gone = test_lba(NLBA - 1);
	for (int z = 0; z < VOL_ZONES; z++)
		damage(z, gone, 0);
	scrub_all(v, &c, lost, &nlost);
	CHECK_EQ(c.found, copies);
	CHECK_EQ(c.healed, copies);
	CHECK_EQ(c.unrecoverable, 1);
	CHECK_EQ(nlost, 1);
	CHECK_EQ(lost[0], gone);
	CHECK(c.checked >= NLBA);
	scrub_all(v, &c, lost, &nlost);
	CHECK_EQ(c.found, 0);
	CHECK_EQ(c.unrecoverable, 1);
	want[NLBA - 1] = 0;
	{
		static uint8_t buf[BLOCK];

		CHECK_EQ(vol_read(v, gone, buf), -EIO);
	}
	/* Everything else reads right (the lost block would read EIO). */
	for (int i = 0; i < NLBA - 1; i++) {
		static uint8_t got[BLOCK], exp[BLOCK];

		scratch_fill(exp, test_lba(i), want[i]);
		CHECK(vol_read(v, test_lba(i), got) == 0 &&
		      !memcmp(got, exp, BLOCK));
	}
	CHECK_OK(vol_close(v));
}

static void test_readheal(void)
{
	struct vol_heal_counts c = { 0 };
	uint64_t lost[8];
	uint32_t nlost;
	struct vol_info in;
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("readheal", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	/* Five bad copies of one block: some read meets one (a read
	 * takes the first good copy it finds, starting anywhere). */
	for (int z = 0; z < 5; z++)
		damage(z, test_lba(10), 0);
	damage(0, test_lba(11), 1);
	/* Reads rotate over the zones: every zone is asked in 6 reads. */
	for (int k = 0; k < 6; k++)
		check_all(v, "reads over bad copies");
	CHECK_OK(vol_info(v, &in));
	CHECK(in.bad_copies >= 2);
	CHECK_OK(vol_heal_queued(v, &c));
	CHECK_EQ(c.healed, 6); /* all five of the block, and the entry */
	scrub_all(v, &c, lost, &nlost);
	CHECK_EQ(c.found, 0);
	CHECK_OK(vol_close(v));
}

/* Zone z's meta entry of lba, raw (zeros if it has no such file). */
static void meta_entry(int z, uint64_t lba, uint8_t e[64])
{
	char path[PATH_MAX];
	int fd;

	memset(e, 0, 64);
	zone_file(z, lba, "meta", path);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	CHECK_EQ(pread(fd, e, 64, (off_t)(lba % PG_BLOCKS) * 64), 64);
	close(fd);
}

static int settle(struct vol *v, uint32_t expect_up);

/*
 * A read's heal leaves alone a zone whose write-intent bit covers the
 * block: that region is resync's (R3), since the zone's copy there may
 * be older than acknowledged writes (so may its peers' after more
 * failures, and a heal judging from them would write the older
 * version).  The scrub already kept to this; the read's heal did not.
 */
static void test_readheal_leaves_resync(void)
{
	struct vol_heal_counts c = { 0 };
	uint8_t before[64], after[64];
	uint64_t lba = test_lba(20);
	int mask;
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("healbit", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	CHECK_OK(vol_debug_zone_fault(v, 4, -EIO));
	CHECK_OK(scratch_commit_block(v, lba, 2, NULL));
	want[20] = 2;
	CHECK_OK(vol_sync(v)); /* zone 4 missed it: its bit is set */
	CHECK_OK(vol_debug_zone_fault(v, 4, 0));
	/* Back in the write set, not resynced (the probe may take a few
	 * looks to let it back). */
	for (int k = 0; k < 200; k++) {
		mask = vol_zone_probe(v);
		if (mask < 0 || (mask & (1 << 4)))
			break;
		usleep(10000);
	}
	CHECK(mask > 0 && (mask & (1 << 4)));
	meta_entry(4, lba, before);
	damage(0, lba, 1);
	for (int k = 0; k < 6; k++)
		check_all(v, "reads over a bad entry");
	CHECK_OK(vol_heal_queued(v, &c));
	CHECK_EQ(c.healed, 1); /* zone 0's entry, not zone 4's copy */
	meta_entry(4, lba, after);
	CHECK(memcmp(before, after, 64) == 0);
	CHECK_OK(settle(v, 0x3f));
	check_all(v, "after the resync");
	CHECK_OK(vol_close(v));
	metas_identical();
}

/* Probe and resync until every zone is in the write set and current. */
static int settle(struct vol *v, uint32_t expect_up)
{
	struct vol_heal_counts c = { 0 };

	for (int round = 0; round < 2000; round++) {
		struct vol_info in;
		int mask = vol_zone_probe(v), busy = 0, ok = 1;

		CHECK(mask >= 0);
		for (int z = 0; z < VOL_ZONES; z++)
			if (mask & (1 << z))
				busy |= vol_resync_step(v, z, 16, &c) == 1;
		if (busy)
			continue;
		if (CHECK_OK(vol_info(v, &in)) < 0)
			return -1;
		for (int z = 0; z < VOL_ZONES; z++)
			ok &= (in.zones[z].state == VOL_ZONE_HEALTHY) ==
			      !!(expect_up & (1u << z));
		if (ok)
			return 0;
		usleep(10000);
	}
	CHECK(!"zones did not settle");
	return -1;
}

static void test_resync(void)
{
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("resync", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_debug_zone_fault(v, 2, -EIO));
	CHECK_OK(write_all(v, 2, 3));
	CHECK_OK(vol_sync(v));
	CHECK_OK(vol_debug_zone_fault(v, 2, 0));
	CHECK_OK(settle(v, 0x3f));
	CHECK_OK(write_all(v, 3, 5)); /* it takes writes again */
	check_all(v, "after resync");
	CHECK_OK(vol_close(v));
	metas_identical();
	CHECK_OK(open_vol(&v));
	check_all(v, "reopened");
	CHECK_OK(vol_close(v));
}

/*
 * A resync that cannot write the zone's copies (here a directory stands
 * where its segment file of PG 1 goes; EMFILE, ENOSPC or EIO do the
 * same) does not call the zone current: it is failed out again, its
 * bits stay, and once the cause is gone it gets every block.  It used to
 * be called healthy, with nothing behind, and none of PG 1.
 */
static void test_resync_cannot_write(void)
{
	char seg[PATH_MAX];
	struct vol_info in;
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("cannotwrite", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(vol_debug_zone_fault(v, 2, -EIO));
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	zone_file(2, PG_BLOCKS, "seg", seg);
	CHECK_OK(mkdir(seg, 0700) ? -errno : 0);
	CHECK_OK(vol_debug_zone_fault(v, 2, 0));
	for (int round = 0; round < 50; round++) {
		struct vol_heal_counts c = { 0 };
		int mask = vol_zone_probe(v);

		for (int z = 0; z < VOL_ZONES; z++) {
			int ret = mask > 0 && (mask & (1 << z)) ?
					  vol_resync_step(v, z, 16, &c) :
					  0;

			/* 1: more to do; -EIO, -ENODEV: it failed again */
			CHECK(ret == 0 || ret == 1 || ret == -EIO ||
			      ret == -ENODEV);
		}
		usleep(2000);
	}
	CHECK_OK(vol_info(v, &in));
	CHECK(in.zones[2].state != VOL_ZONE_HEALTHY ||
	      in.zones[2].behind_blocks > 0);
	CHECK_OK(rmdir(seg) ? -errno : 0);
	CHECK_OK(settle(v, 0x3f));
	check_all(v, "after the resync could write");
	CHECK_OK(vol_close(v));
	metas_identical();
}

static void test_quorum(void)
{
	static uint8_t buf[BLOCK];
	struct vol_txn *t;
	uint64_t ticket;
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("quorum", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	for (int z = 1; z <= 3; z++)
		CHECK_OK(vol_debug_zone_fault(v, z, -EIO));
	CHECK_OK(vol_txn_begin(v, &t));
	scratch_fill(buf, test_lba(0), 9);
	CHECK_OK(vol_txn_write(t, test_lba(0), buf));
	CHECK_OK(vol_txn_commit_async(t, &ticket));
	usleep(500000);
	CHECK(vol_durable_ticket(v) < ticket); /* three zones: it waits */
	/* A lost quorum is not a full volume: admitted, and waits too. */
	CHECK_OK(vol_txn_begin(v, &t));
	CHECK_OK(vol_txn_reserve(t, 2, 0));
	scratch_fill(buf, test_lba(1), 9);
	CHECK_OK(vol_txn_write(t, test_lba(1), buf));
	CHECK_OK(vol_txn_commit_async(t, &ticket));
	check_all(v, "reads with three zones"); /* want[0] still 1 */
	CHECK_OK(vol_debug_zone_fault(v, 3, 0));
	for (int i = 0; i < 300 && vol_durable_ticket(v) < ticket; i++) {
		CHECK(vol_zone_probe(v) >= 0);
		usleep(10000);
	}
	CHECK_OK(vol_wait(v, ticket));
	want[0] = want[1] = 9;
	check_all(v, "one zone back");
	CHECK_OK(vol_debug_zone_fault(v, 1, 0));
	CHECK_OK(vol_debug_zone_fault(v, 2, 0));
	CHECK_OK(settle(v, 0x3f));
	CHECK_OK(vol_close(v));
	metas_identical();
}

static void test_rebuild(void)
{
	char fresh[PATH_MAX];
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("rebuild", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	snprintf(fresh, sizeof(fresh), "%s/rebuild/new4", scratch.dir);
	CHECK_EQ(vol_zone_replace(v, 4, paths[0]), -ENOTEMPTY);
	CHECK_OK(vol_zone_replace(v, 4, fresh));
	CHECK_OK(write_all(v, 2, 4)); /* while it is rebuilt */
	CHECK_OK(settle(v, 0x3f));
	/* All in the segments of all six (the metas are compared below). */
	CHECK_OK(vol_sync(v));
	/* Zone 4 serves: two others fail, every block reads. */
	CHECK_OK(vol_debug_zone_fault(v, 0, -EIO));
	CHECK_OK(vol_debug_zone_fault(v, 1, -EIO));
	check_all(v, "rebuilt zone serving");
	CHECK_OK(vol_close(v));
	/* The other superblocks name the new directory. */
	paths[4] = fresh;
	metas_identical();
	{
		const char *one[1] = { paths[0] };
		struct vol_open_opts o = { .paths = one,
					   .npaths = 1,
					   .key = &scratch.key,
					   .write_timeout_ms = -1 };

		CHECK_OK(vol_open(&o, &v));
		if (v) {
			struct vol_info in;

			CHECK_OK(vol_info(v, &in));
			CHECK(!strcmp(in.zones[4].path, fresh));
			check_all(v, "reopened by one zone");
			CHECK_OK(vol_close(v));
		}
	}
}

/*
 * A zone directory removed and made again (empty) under writes: nothing
 * of ours may appear in it before the zone is noticed gone (it would no
 * longer be empty, and not rebuilt), and it is rebuilt.
 */
static void test_dir_replaced(void)
{
	char away[PATH_MAX];
	struct vol *v;

	memset(want, 0, sizeof(want));
	if (CHECK_OK(scratch_mkfs("replaced", 0, dirs, paths)) < 0 ||
	    CHECK_OK(open_vol(&v)) < 0)
		return;
	CHECK_OK(write_all(v, 1, 1));
	CHECK_OK(vol_sync(v));
	snprintf(away, sizeof(away), "%s.away", paths[3]);
	CHECK_OK(rename(paths[3], away));
	CHECK_OK(mkdir(paths[3], 0700));
	CHECK_OK(write_all(v, 2, 2)); /* materialised, WIM flushed */
	CHECK_OK(vol_sync(v));
	CHECK_OK(settle(v, 0x3f));
	check_all(v, "zone 3 rebuilt in place");
	CHECK_OK(vol_close(v));
	metas_identical();
}

int main(void)
{
	vol_set_log(quiet_log);
	if (scratch_setup("repair"))
		return 1;
	run("scrub", test_scrub);
	run("readheal", test_readheal);
	run("resync", test_resync);
	run("resync-cannot-write", test_resync_cannot_write);
	run("readheal-bit", test_readheal_leaves_resync);
	run("quorum", test_quorum);
	run("rebuild", test_rebuild);
	run("replaced", test_dir_replaced);
	scratch_cleanup();
	return check_failures ? 1 : 0;
}
