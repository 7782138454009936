/*
 * volume_read_test.c - the read path and discards of the volume
 * (volume/vol_read.c, vol_mat.c), in process, on six zone directories
 * under a temporary directory (removed at the end, also on failure):
 * with one LBA's meta entry or segment block damaged in k of 6 zones
 * (k = 1..5, bytes flipped in the files while the volume is closed)
 * vol_read returns the right data and vol_info().bad_copies grows; all
 * six damaged: -EIO.  A block never written reads zeros (also in a PG
 * never created), past the maximum size -ENOSPC.  Discarded blocks read
 * zeros before and after vol_sync and after a reopen, and the discard
 * punches holes (st_blocks of every zone's .seg drops).  A discard then a
 * write of the same block, in one transaction and across transactions,
 * reads the newest; so do many versions of one block committed in quick
 * succession, after a reopen.  Recovery that replays a discard and a
 * rewrite the segments already hold (a crash after the segment writes,
 * before the checkpoint) must keep the rewrite; one that replays a write
 * and a discard of whole meta pages, which a crash left written in some
 * zones and holes in another, must leave the zones agreeing (a deep
 * scrub of them finds nothing).  A write into a meta page
 * holding another block's damaged entry must not bring the volume down
 * (in a child process).  vol_read_run (sequential reads) returns what
 * vol_read would over runs with damaged copies, blocks still only in
 * memory, blocks never written, a PG boundary, two zones whose reads
 * fail, and -EIO for a block with no good copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
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
#include "volume/volume.h"

#define BLOCK ((int)VOL_BLOCK_BYTES)
#define META_BYTES 64 /* vol_format.h BLOCK META: an entry per block */

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* ---- blocks ---- */

/* lba reads version ver (0: zeros).  Returns 0 if so. */
static int expect(struct vol *v, uint64_t lba, uint32_t ver)
{
	static uint8_t got[BLOCK], exp[BLOCK];
	int ret = vol_read(v, lba, got);

	if (ver)
		scratch_fill(exp, lba, ver);
	else
		memset(exp, 0, BLOCK);
	if (ret || memcmp(got, exp, BLOCK)) {
		fprintf(stderr, "  lba %llu: %s, expected version %u\n",
			(unsigned long long)lba,
			ret ? strerror(-ret) : "other data", ver);
		return -1;
	}
	return 0;
}

/* Every lba of [lba, lba + n) reads ver; counts the ones that do not. */
static int expect_range(struct vol *v, uint64_t lba, uint64_t n, uint32_t ver)
{
	int bad = 0;

	for (uint64_t i = 0; i < n; i++)
		bad += expect(v, lba + i, ver) != 0;
	return bad;
}

static int open_vol(struct vol **v)
{
	struct vol_open_opts o = {
		.paths = scratch.zone_paths,
		.npaths = VOL_ZONES,
		.key = &scratch.key,
		.write_timeout_ms = 5000,
	};

	*v = NULL;
	return CHECK_OK(vol_open(&o, v));
}

static int reopen(struct vol **v)
{
	CHECK_EQ(vol_close(*v), 0);
	return open_vol(v);
}

/* Write [lba, lba + n) at version ver, in transactions of 256. */
static int write_range(struct vol *v, uint64_t lba, uint64_t n, uint32_t ver)
{
	static uint8_t buf[BLOCK];
	int ret = 0;

	while (n && !ret) {
		uint64_t k = n < VOL_TXN_MAX_RECS ? n : VOL_TXN_MAX_RECS;
		struct vol_txn *t;

		ret = vol_txn_begin(v, &t);
		if (ret)
			break;
		for (uint64_t i = 0; i < k && !ret; i++) {
			scratch_fill(buf, lba + i, ver);
			ret = vol_txn_write(t, lba + i, buf);
		}
		if (ret) {
			vol_txn_abort(t);
			break;
		}
		ret = vol_txn_commit(t);
		lba += k;
		n -= k;
	}
	return CHECK_OK(ret);
}

static int discard(struct vol *v, uint64_t lba, uint64_t n)
{
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	if (!ret) {
		ret = vol_txn_discard(t, lba, n);
		if (ret)
			vol_txn_abort(t);
		else
			ret = vol_txn_commit(t);
	}
	return CHECK_OK(ret);
}

static uint64_t bad_copies(struct vol *v)
{
	struct vol_info in;

	if (CHECK_OK(vol_info(v, &in)) < 0)
		return 0;
	return in.bad_copies;
}

/* ---- files of a zone (PG 0, one directory per zone) ---- */

static int zone_file(int z, const char *ext, char *path, size_t len)
{
	return snprintf(path, len, "%s/pg/00000.%s", scratch.zone[z], ext) >=
			       (int)len ?
		       -ENAMETOOLONG :
		       0;
}

/* Flip byte off of zone z's .meta or .seg file. */
static int flip(int z, const char *ext, off_t off)
{
	char path[PATH_MAX];
	uint8_t b;
	int fd, ret = 0;

	if (zone_file(z, ext, path, sizeof(path)))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	if (pread(fd, &b, 1, off) != 1) {
		ret = -EIO;
	} else {
		b ^= 0x5a;
		if (pwrite(fd, &b, 1, off) != 1 || fsync(fd))
			ret = -EIO;
	}
	close(fd);
	return ret;
}

static long long seg_blocks(int z)
{
	char path[PATH_MAX];
	struct stat st;

	if (zone_file(z, "seg", path, sizeof(path)) || stat(path, &st))
		return -1;
	return (long long)st.st_blocks;
}

/* ---- damaged copies ---- */

#define DMG_LBA 700 /* LBAs 701..705: k damaged zones, 706: all six */

/*
 * Damage lba in zones 0..k-1: the meta entry (its nonce) for odd zone
 * indices, the segment block for even ones, so both checks are used.
 */
static int damage(uint64_t lba, int k)
{
	int ret = 0;

	for (int z = 0; z < k && !ret; z++)
		ret = z % 2 ? flip(z, "meta", (off_t)lba * META_BYTES + 20) :
			      flip(z, "seg", (off_t)lba * BLOCK + 1000);
	return CHECK_OK(ret);
}

static void test_damaged(struct vol **v)
{
	static uint8_t buf[BLOCK];

	if (write_range(*v, DMG_LBA, 8, 1) < 0)
		return;
	CHECK_EQ(vol_close(*v), 0); /* materialised, checkpointed */
	*v = NULL;
	for (int k = 1; k <= 5; k++)
		damage(DMG_LBA + k, k);
	damage(DMG_LBA + 6, 6);
	if (open_vol(v) < 0)
		return;
	CHECK_EQ(expect(*v, DMG_LBA, 1), 0);
	CHECK_EQ(bad_copies(*v), 0);
	for (int k = 1; k <= 5; k++) {
		uint64_t before = bad_copies(*v);

		/* Six reads start at six zones: each damaged one is met. */
		for (int r = 0; r < VOL_ZONES; r++)
			CHECK_EQ(expect(*v, DMG_LBA + k, 1), 0);
		if (bad_copies(*v) < before + (uint64_t)k)
			fprintf(stderr, "k = %d: bad_copies %llu -> %llu\n", k,
				(unsigned long long)before,
				(unsigned long long)bad_copies(*v));
		CHECK(bad_copies(*v) >= before + (uint64_t)k);
	}
	{
		uint64_t before = bad_copies(*v);

		CHECK_EQ(vol_read(*v, DMG_LBA + 6, buf), -EIO);
		CHECK(bad_copies(*v) >= before + VOL_ZONES);
	}
	CHECK_EQ(expect(*v, DMG_LBA + 7, 1), 0);
}

/*
 * A write into a meta page that holds another block's damaged entry
 * (the block itself stays readable elsewhere) must not bring the volume
 * down.  Run in a child process, since today it aborts: the caller's
 * volume is closed.  Returns 0 done, 1 child failed a check, -1 aborted.
 */
static int child_write_near_damage(int write)
{
	struct vol *v;
	int ret = 1;
	pid_t pid = fork();

	if (pid < 0)
		return CHECK_OK(-errno);
	if (pid == 0) {
		signal(SIGABRT,
		       SIG_DFL); /* no scratch_cleanup(): the parent's */
		if (open_vol(&v) < 0)
			_exit(1);
		if (write && write_range(v, DMG_LBA + 6, 1, 2) < 0)
			_exit(1);
		if (write && vol_sync(v))
			_exit(1);
		ret = expect(v, DMG_LBA + 6, 2) || expect(v, DMG_LBA + 5, 1);
		ret |= vol_close(v) != 0;
		_exit(ret || check_failures ? 1 : 0);
	}
	if (waitpid(pid, &ret, 0) < 0)
		return CHECK_OK(-errno);
	if (WIFSIGNALED(ret))
		return -1;
	return WIFEXITED(ret) && WEXITSTATUS(ret) == 0 ? 0 : 1;
}

static void test_write_near_damage(void)
{
	int ret = child_write_near_damage(1);

	CHECK(ret != -1);
	CHECK(ret != 1);
	ret = child_write_near_damage(0); /* recovery replays the write */
	CHECK(ret != -1);
	CHECK(ret != 1);
}

/* ---- never written ---- */

static void test_unwritten(struct vol *v)
{
	static uint8_t buf[BLOCK];

	CHECK_EQ(expect(v, 5000, 0), 0); /* PG 0, a hole */
	CHECK_EQ(expect(v, DMG_LBA + 8, 0), 0); /* next to written */
	CHECK_EQ(expect(v, 3 * VOL_PG_BLOCKS + 7, 0), 0); /* no PG file */
	CHECK_EQ(expect(v, VOL_MAX_BLOCKS - 1, 0), 0);
	CHECK_EQ(vol_read(v, VOL_MAX_BLOCKS, buf), -ENOSPC);
	CHECK_EQ(vol_read(v, UINT64_MAX, buf), -ENOSPC);
}

/* ---- discards ---- */

#define DIS_LBA 4096 /* meta page aligned; 512 blocks */
#define DIS_N 512
#define DIS_FROM (DIS_LBA + 10) /* partial pages at both ends */
#define DIS_LEN 400

static int check_discarded(struct vol *v, const char *when)
{
	int bad = expect_range(v, DIS_LBA, DIS_FROM - DIS_LBA, 1) +
		  expect_range(v, DIS_FROM, DIS_LEN, 0) +
		  expect_range(v, DIS_FROM + DIS_LEN,
			       DIS_LBA + DIS_N - DIS_FROM - DIS_LEN, 1);

	if (bad)
		fprintf(stderr, "discard, %s: %d blocks wrong\n", when, bad);
	CHECK_EQ(bad, 0);
	return bad;
}

static void test_discard(struct vol **v)
{
	long long before[VOL_ZONES];

	if (write_range(*v, DIS_LBA, DIS_N, 1) < 0 ||
	    CHECK_OK(vol_sync(*v)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++)
		before[z] = seg_blocks(z);
	if (discard(*v, DIS_FROM, DIS_LEN) < 0)
		return;
	check_discarded(*v, "at once");
	CHECK_OK(vol_sync(*v));
	check_discarded(*v, "after vol_sync");
	for (int z = 0; z < VOL_ZONES; z++) {
		long long after = seg_blocks(z);

		if (after > before[z] - DIS_LEN * (BLOCK / 512))
			fprintf(stderr, "zone %d: st_blocks %lld -> %lld\n", z,
				before[z], after);
		CHECK(after >= 0 &&
		      after <= before[z] - DIS_LEN * (BLOCK / 512));
	}
	if (reopen(v) < 0)
		return;
	check_discarded(*v, "after reopen");
	/* Discarding what is discarded or never written is fine. */
	CHECK_EQ(discard(*v, DIS_FROM, 1), 0);
	CHECK_EQ(discard(*v, 7 * VOL_PG_BLOCKS, 3 * VOL_PG_BLOCKS), 0);
	CHECK_EQ(expect(*v, DIS_FROM, 0), 0);
}

/* Discard then write in one txn; write then discard in one txn. */
static int txn_mixed(struct vol *v, uint64_t base)
{
	static uint8_t buf[BLOCK];
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	if (ret)
		return CHECK_OK(ret);
	ret = vol_txn_discard(t, base, 64);
	scratch_fill(buf, base + 10, 3);
	if (!ret)
		ret = vol_txn_write(t, base + 10, buf);
	scratch_fill(buf, base + 70, 3);
	if (!ret)
		ret = vol_txn_write(t, base + 70, buf);
	scratch_fill(buf, base + 80, 3);
	if (!ret)
		ret = vol_txn_write(t, base + 80, buf);
	if (!ret)
		ret = vol_txn_discard(t, base + 80, 1);
	if (ret) {
		vol_txn_abort(t);
		return CHECK_OK(ret);
	}
	return CHECK_OK(vol_txn_commit(t));
}

static int check_mixed(struct vol *v, uint64_t base, const char *when)
{
	int bad = expect_range(v, base, 10, 0) + expect(v, base + 10, 3) +
		  expect_range(v, base + 11, 53, 0) +
		  expect_range(v, base + 64, 6, 1) + expect(v, base + 70, 3) +
		  expect(v, base + 80, 0) + expect(v, base + 81, 1);

	if (bad)
		fprintf(stderr, "mixed txn at %llu, %s: %d wrong\n",
			(unsigned long long)base, when, bad);
	CHECK_EQ(bad, 0);
	return bad;
}

/* Across transactions: write 8, discard them, rewrite one. */
static int check_across(struct vol *v, uint64_t base, const char *when)
{
	int bad = expect_range(v, base, 3, 0) + expect(v, base + 3, 4) +
		  expect_range(v, base + 4, 4, 0);

	if (bad)
		fprintf(stderr, "across txns at %llu, %s: %d wrong\n",
			(unsigned long long)base, when, bad);
	CHECK_EQ(bad, 0);
	return bad;
}

static void test_rewrite(struct vol **v)
{
	const uint64_t mixed = 8192, across = 9100;

	if (write_range(*v, mixed, 96, 1) < 0 || CHECK_OK(vol_sync(*v)) < 0 ||
	    txn_mixed(*v, mixed) < 0)
		return;
	check_mixed(*v, mixed, "at once");
	if (write_range(*v, across, 8, 1) < 0 || discard(*v, across, 8) < 0 ||
	    write_range(*v, across + 3, 1, 4) < 0)
		return;
	check_across(*v, across, "at once");
	CHECK_OK(vol_sync(*v));
	check_mixed(*v, mixed, "after vol_sync");
	check_across(*v, across, "after vol_sync");
	if (reopen(v) < 0)
		return;
	check_mixed(*v, mixed, "after reopen");
	check_across(*v, across, "after reopen");
}

/* ---- many versions of one block ---- */

static void test_versions(struct vol **v)
{
	const uint64_t lba = 20000;
	const uint32_t n = 300;
	int bad = 0;

	for (uint32_t ver = 1; ver <= n; ver++) {
		if (write_range(*v, lba, 1, ver) < 0)
			return;
		if (ver % 7 == 0)
			bad += expect(*v, lba, ver) != 0;
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(expect(*v, lba, n), 0);
	if (reopen(v) < 0)
		return;
	CHECK_EQ(expect(*v, lba, n), 0);
	CHECK_OK(vol_sync(*v));
	CHECK_EQ(expect(*v, lba, n), 0);
}

/* ---- recovery replays a discard the segments have moved past ---- */

static int copy_file(const char *from, const char *to)
{
	static uint8_t buf[4 * VOL_BLOCK_BYTES];
	int in = open(from, O_RDONLY), out, ret = 0;
	ssize_t n;

	if (in < 0)
		return -errno;
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (out < 0) {
		close(in);
		return -errno;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			ret = -EIO;
			break;
		}
	if (n < 0 || fsync(out))
		ret = -EIO;
	close(in);
	close(out);
	return ret;
}

/* Save (back = 0) or put back (back = 1) every zone's checkpoint. */
static int checkpoints(int back)
{
	char ck[PATH_MAX], saved[PATH_MAX];
	int ret = 0;

	for (int z = 0; z < VOL_ZONES && !ret; z++) {
		snprintf(ck, sizeof(ck), "%s/checkpoint", scratch.zone[z]);
		snprintf(saved, sizeof(saved), "%s/../ck%d", scratch.zone[z],
			 z);
		ret = back ? copy_file(saved, ck) : copy_file(ck, saved);
	}
	return CHECK_OK(ret);
}

/*
 * The state a crash leaves between the segment fdatasyncs and the
 * checkpoint write (V4 allows it): segments hold "discard L, rewrite L"
 * while the checkpoint is older.  Made here by putting the older
 * checkpoints back after a clean close.  Replay must not lose L.
 */
static void test_replay_discard_rewrite(struct vol **v)
{
	const uint64_t lba = 30000;
	static uint8_t buf[BLOCK];
	struct vol_txn *t;
	int ret;

	if (write_range(*v, lba, 2, 1) < 0 || CHECK_OK(vol_sync(*v)) < 0 ||
	    checkpoints(0) < 0)
		return;
	if (CHECK_OK(vol_txn_begin(*v, &t)) < 0)
		return;
	scratch_fill(buf, lba, 2);
	ret = vol_txn_discard(t, lba, 2);
	if (!ret)
		ret = vol_txn_write(t, lba, buf);
	if (ret)
		vol_txn_abort(t);
	else
		ret = vol_txn_commit(t);
	if (CHECK_OK(ret) < 0)
		return;
	CHECK_EQ(vol_close(*v), 0);
	*v = NULL;
	if (checkpoints(1) < 0 || open_vol(v) < 0)
		return;
	CHECK(expect(*v, lba, 2) == 0);
	CHECK_EQ(expect(*v, lba + 1, 0), 0);
}

/* Punch zone z's meta entries of [lba, lba + n) (PG 0) into a hole. */
static int punch_meta(int z, uint64_t lba, uint64_t n)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	if (zone_file(z, "meta", path, sizeof(path)))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)lba * META_BYTES, (off_t)n * META_BYTES) ||
	    fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * A crash during the round of a write W of whole meta pages can leave
 * them written in some zones and still holes in others, with every
 * checkpoint older than W; a discard D of the same blocks, durable in
 * the log, is then replayed over both.  D writes tombstone pages only
 * where one is needed (vol_mat.c tombstone_need): the zones must come
 * out of the replay agreeing, or a deep scrub finds every entry of those
 * pages bad in the zones that differ.  Made here by punching zone 2's
 * meta pages after a clean close and putting older checkpoints back.
 */
static void test_replay_tombstone_holes(struct vol **v)
{
	const uint64_t lba = 40000, n = 2 * 64; /* two meta pages */
	struct vol_heal_counts c = { 0 };
	uint64_t at = lba;
	int ret = 0;

	if (checkpoints(0) < 0 || write_range(*v, lba, n, 1) < 0 ||
	    CHECK_OK(vol_sync(*v)) < 0 || discard(*v, lba, n) < 0 ||
	    CHECK_OK(vol_sync(*v)) < 0)
		return;
	CHECK_EQ(vol_close(*v), 0);
	*v = NULL;
	if (CHECK_OK(punch_meta(2, lba, n)) < 0 || checkpoints(1) < 0 ||
	    open_vol(v) < 0)
		return;
	CHECK_EQ(expect_range(*v, lba, n, 0), 0);
	while (at < lba + n && ret >= 0)
		ret = vol_scrub_step(*v, &at, (uint32_t)n, 1, &c, NULL, 0,
				     NULL);
	CHECK(ret >= 0);
	CHECK_EQ(c.found, 0);
}

/* ---- runs ---- */

#define RUN_LBA 2000 /* 200 blocks; 2010: 3 zones damaged, 2070: 5 */
#define RUN_LOST 2300 /* damaged in all six */

/* vol_read_run of [lba, lba + n): block i must read ver_of(lba + i). */
static int expect_run(struct vol *v, uint64_t lba, uint32_t n,
		      uint32_t (*ver_of)(uint64_t))
{
	uint8_t *got = malloc((size_t)n * BLOCK), exp[BLOCK];
	int bad = 0, ret;

	if (!got)
		return CHECK_OK(-ENOMEM);
	ret = vol_read_run(v, lba, n, got);
	CHECK_OK(ret);
	for (uint32_t i = 0; i < n && !ret; i++) {
		uint32_t ver = ver_of(lba + i);

		if (ver)
			scratch_fill(exp, lba + i, ver);
		else
			memset(exp, 0, BLOCK);
		if (memcmp(got + (size_t)i * BLOCK, exp, BLOCK)) {
			if (!bad)
				fprintf(stderr,
					"  run: lba %llu is not version %u\n",
					(unsigned long long)(lba + i), ver);
			bad++;
		}
	}
	free(got);
	CHECK_EQ(bad, 0);
	return ret || bad ? -1 : 0;
}

/* After test_runs' writes: 2100..2109 at 2, 2150..2159 at 4 (zone 4
 * still holds 1), the rest of 200 at 1. */
static uint32_t run_version(uint64_t lba)
{
	if (lba >= 2100 && lba < 2110)
		return 2;
	if (lba >= 2150 && lba < 2160)
		return 4;
	if (lba >= RUN_LBA && lba < RUN_LBA + 200)
		return 1;
	if (lba + 5 >= VOL_PG_BLOCKS && lba < VOL_PG_BLOCKS + 5)
		return 3;
	return 0;
}

static void test_runs(struct vol **v)
{
	uint8_t *buf = malloc(20 * (size_t)BLOCK);
	uint64_t before;

	if (!buf || write_range(*v, RUN_LBA, 200, 1) < 0 ||
	    write_range(*v, RUN_LOST, 1, 1) < 0 ||
	    write_range(*v, VOL_PG_BLOCKS - 5, 10, 3) < 0)
		goto out;
	CHECK_EQ(vol_close(*v), 0); /* materialised, checkpointed */
	*v = NULL;
	damage(2010, 3);
	damage(2070, 5);
	damage(RUN_LOST, 6);
	if (open_vol(v) < 0)
		goto out;
	/* Zone 4 misses version 4 of 2150..2159 (materialised elsewhere)
	 * and serves reads again with its version 1: never the newest. */
	CHECK_OK(vol_debug_zone_fault(*v, 4, -EIO));
	if (write_range(*v, 2150, 10, 4) < 0)
		goto out;
	CHECK_OK(vol_sync(*v));
	CHECK_OK(vol_debug_zone_fault(*v, 4, 0));
	/* Newer versions of 2100..2109 still in memory (not materialised). */
	if (write_range(*v, 2100, 10, 2) < 0)
		goto out;
	before = bad_copies(*v);
	/* Six times: the runs start at six zones, so damage is met. */
	for (int r = 0; r < VOL_ZONES; r++)
		expect_run(*v, RUN_LBA, 200, run_version);
	CHECK(bad_copies(*v) > before);
	/*
	 * Zones 0 and 1 fail every read: a run asks the next zones in their
	 * place, and re-reads the ciphertext when the zone it guessed from
	 * failed.  Over 2150..2159 zone 4 is also stale, so four zones
	 * answer and one of them is old.
	 */
	CHECK_OK(vol_debug_zone_read_fault(*v, 0, -EIO));
	CHECK_OK(vol_debug_zone_read_fault(*v, 1, -EIO));
	for (int r = 0; r < VOL_ZONES; r++)
		expect_run(*v, 2150, 50, run_version);
	/* Four runs whose first reads go out together, each losing zones
	 * 0 and 1 on some starts and finishing on its own. */
	for (int r = 0; r < VOL_ZONES; r++)
		expect_run(*v, RUN_LBA, 200, run_version);
	CHECK_OK(vol_debug_zone_read_fault(*v, 0, 0));
	CHECK_OK(vol_debug_zone_read_fault(*v, 1, 0));
	expect_run(*v, RUN_LBA + 190, 70, run_version); /* then never written */
	expect_run(*v, VOL_PG_BLOCKS - 5, 10, run_version); /* two PGs */
	/* Six runs, one of them cut by the PG boundary: two batches. */
	expect_run(*v, VOL_PG_BLOCKS - 130, 300, run_version);
	expect_run(*v, 5000, 64, run_version); /* all zeros */
	CHECK_EQ(vol_read_run(*v, RUN_LOST - 10, 20, buf), -EIO);
out:
	free(buf);
}

int main(void)
{
	struct vol_mkfs_opts o = { .log_blocks = 2048, .key = &scratch.key };
	struct vol *v = NULL;

	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("read")) < 0)
		return CHECK_DONE();
	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = scratch.zone[z];
	if (CHECK_OK(vol_mkfs(&o, NULL)) < 0 || open_vol(&v) < 0)
		return CHECK_DONE();
	test_damaged(&v);
	if (v)
		test_unwritten(v);
	if (v)
		test_discard(&v);
	if (v)
		test_rewrite(&v);
	if (v)
		test_versions(&v);
	if (v)
		test_replay_discard_rewrite(&v);
	if (v)
		test_replay_tombstone_holes(&v);
	if (v)
		test_runs(&v);
	if (v)
		CHECK_EQ(vol_close(v), 0);
	if (v)
		test_write_near_damage(); /* last: it may leave a crashed volume */
	scratch_cleanup();
	return CHECK_DONE();
}
