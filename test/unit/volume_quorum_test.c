/*
 * volume_quorum_test.c - the write and read quorums of the volume
 * (volume/vol_log.c, vol_open.c, vol_read.c), in process, on six zone
 * directories under a temporary directory (removed at the end, also on
 * failure): with one and then two zones failed (vol_debug_zone_fault)
 * commits succeed, reads are right and vol_info shows those zones
 * offline; a third failed zone makes a commit fail with -EIO after the
 * write timeout, and every later commit too (sticky); reopened with all
 * six, every acknowledged transaction is there and the failed one is all
 * there or not at all.  Also: a read-only open with three zone
 * directories renamed away reads everything, a read-write open then fails
 * with -EIO, and a second vol_open of an open volume fails with -EBUSY.
 * Flush domains (vol_log.c L1): six zone logs on one ext4/XFS share one
 * flush per batch (so the scenarios above run through it, a failed write
 * of one member included); a log with a hole keeps its own fdatasync.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

#define BLOCK ((int)VOL_BLOCK_BYTES)
/*
 * Volumes open with a long write timeout, since a busy machine can stall
 * a flush for longer than a short one (fs_txn_test says more); where a
 * test takes the quorum away, it sets the short one first.
 */
#define LONG_TIMEOUT_MS 30000
#define TIMEOUT_MS 500
#define TXNS 20 /* per round */
#define TXN_BLOCKS 4
#define NLBA (TXNS * TXN_BLOCKS)

/* The version of each test LBA that must be read (0: never written). */
static uint32_t want[NLBA];

/* ---- log: quiet, keeps the last message ---- */

static char log_last[1024];

static void quiet_log(int level, const char *msg)
{
	(void)level;
	snprintf(log_last, sizeof(log_last), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

/* ---- block contents: a pattern per (lba, version) ---- */

static uint64_t test_lba(int i)
{
	return 1000 + (uint64_t)i * 37; /* spread over several meta pages */
}

/* The version block i holds now (0: zeros), or -1 if it is neither. */
static int read_version(struct vol *v, int i, uint32_t a, uint32_t b)
{
	static uint8_t got[BLOCK], exp[BLOCK];
	uint64_t lba = test_lba(i);
	uint32_t vers[2] = { a, b };

	if (vol_read(v, lba, got))
		return -1;
	for (int k = 0; k < 2; k++) {
		if (vers[k])
			scratch_fill(exp, lba, vers[k]);
		else
			memset(exp, 0, BLOCK);
		if (!memcmp(got, exp, BLOCK))
			return (int)vers[k];
	}
	return -1;
}

/* Every test LBA reads its wanted version; returns how many do not. */
static int check_all(struct vol *v, const char *when)
{
	int bad = 0;

	for (int i = 0; i < NLBA; i++)
		if (read_version(v, i, want[i], want[i]) != (int)want[i]) {
			if (!bad)
				fprintf(stderr,
					"%s: lba %llu is not version %u\n",
					when, (unsigned long long)test_lba(i),
					want[i]);
			bad++;
		}
	CHECK_EQ(bad, 0);
	return bad;
}

/* One transaction: blocks t*4 .. t*4+3 at version ver. */
static int commit_txn(struct vol *v, int t, uint32_t ver)
{
	static uint8_t buf[BLOCK];
	struct vol_txn *txn;
	int ret = vol_txn_begin(v, &txn);

	if (ret)
		return ret;
	for (int j = 0; j < TXN_BLOCKS && !ret; j++) {
		scratch_fill(buf, test_lba(t * TXN_BLOCKS + j), ver);
		ret = vol_txn_write(txn, test_lba(t * TXN_BLOCKS + j), buf);
	}
	if (ret) {
		vol_txn_abort(txn);
		return ret;
	}
	return vol_txn_commit(txn);
}

/* A round: every txn t with t % step == 0 at version ver, all must ack. */
static void commit_round(struct vol *v, int step, uint32_t ver)
{
	for (int t = 0; t < TXNS; t += step) {
		int ret = commit_txn(v, t, ver);

		CHECK_EQ(ret, 0);
		if (ret)
			return;
		for (int j = 0; j < TXN_BLOCKS; j++)
			want[t * TXN_BLOCKS + j] = ver;
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int open_vol(struct vol **v, int readonly, const char *const *paths,
		    int npaths)
{
	return scratch_open(v, readonly, paths, npaths, LONG_TIMEOUT_MS);
}

static void check_states(struct vol *v, uint32_t offline_mask, int quorum)
{
	struct vol_info in;

	if (CHECK_OK(vol_info(v, &in)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++) {
		int off = in.zones[z].state == VOL_ZONE_OFFLINE;

		if (off != !!(offline_mask & (1u << z)))
			fprintf(stderr, "zone %d: state %d (%s)\n", z,
				in.zones[z].state, in.zones[z].reason);
		CHECK_EQ(off, !!(offline_mask & (1u << z)));
	}
	CHECK_EQ(in.write_quorum, quorum);
}

/* Zones of mask missed writes (write-intent map), the rest are healthy. */
static void check_degraded(struct vol *v, uint32_t mask)
{
	struct vol_info in;

	if (CHECK_OK(vol_info(v, &in)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++) {
		int behind = !!(mask & (1u << z));

		CHECK_EQ(in.zones[z].state,
			 behind ? VOL_ZONE_DEGRADED : VOL_ZONE_HEALTHY);
		CHECK_EQ(in.zones[z].behind_regions > 0, behind);
	}
}

/* ---- the scenarios ---- */

static int make_volume(void)
{
	struct vol_mkfs_opts o = { .log_blocks = 2048, .key = &scratch.key };

	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = scratch.zone[z];
	return CHECK_OK(vol_mkfs(&o, NULL));
}

/*
 * Zones 1 and 4 fail: commits go on; zone 2 fails too: -EIO after the
 * timeout, sticky (transaction 0 fails, at version 4).
 */
static void degrade(struct vol *v)
{
	uint64_t t0, dt;
	int ret;

	commit_round(v, 1, 1);
	check_all(v, "six zones");
	check_states(v, 0, 1);

	CHECK_OK(vol_debug_zone_fault(v, 1, -EIO));
	commit_round(v, 2, 2);
	check_all(v, "zone 1 failed");
	check_states(v, 1u << 1, 1);

	CHECK_OK(vol_debug_zone_fault(v, 4, -EIO));
	commit_round(v, 3, 3);
	check_all(v, "zones 1, 4 failed");
	check_states(v, 1u << 1 | 1u << 4, 1);
	CHECK_EQ(vol_sync(v), 0); /* materialised on the four left */
	check_all(v, "zones 1, 4 failed, synced");

	CHECK_OK(vol_debug_write_timeout(v, TIMEOUT_MS));
	CHECK_OK(vol_debug_zone_fault(v, 2, -EIO));
	t0 = now_ms();
	ret = commit_txn(v, 0, 4); /* may or may not be there later */
	dt = now_ms() - t0;
	CHECK_EQ(ret, -EIO);
	/*
	 * No upper bound a busy machine could break: only one the wrong
	 * code crosses.  The short timeout applies (not the long one the
	 * volume opened with), and it is not cut short.
	 */
	if (dt < TIMEOUT_MS - 50 || dt >= LONG_TIMEOUT_MS)
		fprintf(stderr, "quorum lost: -EIO after %llu ms\n",
			(unsigned long long)dt);
	CHECK(dt >= TIMEOUT_MS - 50 && dt < LONG_TIMEOUT_MS);
	/*
	 * Sticky: at once, also for other blocks.  With the long timeout
	 * back, a commit that waited for the quorum again would take 30 s.
	 */
	CHECK_OK(vol_debug_write_timeout(v, LONG_TIMEOUT_MS));
	t0 = now_ms();
	CHECK_EQ(commit_txn(v, 1, 5), -EIO);
	CHECK_EQ(commit_txn(v, 2, 5), -EIO);
	CHECK(now_ms() - t0 < LONG_TIMEOUT_MS);
	/* Reads go on from what is left. */
	for (int i = TXN_BLOCKS; i < NLBA; i++)
		CHECK_EQ(read_version(v, i, want[i], want[i]), (int)want[i]);
	check_states(v, 1u << 1 | 1u << 2 | 1u << 4, 0);
}

/* Txn 0 failed at version 4: each of its blocks must agree. */
static void check_failed_txn(struct vol *v)
{
	int first = read_version(v, 0, want[0], 4);

	CHECK(first == (int)want[0] || first == 4);
	for (int j = 1; j < TXN_BLOCKS; j++)
		CHECK_EQ(read_version(v, j, want[j], 4), first);
	for (int j = 0; j < TXN_BLOCKS && first == 4; j++)
		want[j] = 4;
}

/* Zones (mask) that one device flush serves, as vol_info reports. */
static void check_flush_shared(struct vol *v, const uint32_t want_of[6])
{
	struct vol_info in;

	if (CHECK_OK(vol_info(v, &in)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++) {
		if (in.zones[z].flush_shared != want_of[z])
			fprintf(stderr,
				"zone %d: flush shared 0x%x, not 0x%x\n", z,
				in.zones[z].flush_shared, want_of[z]);
		CHECK_EQ(in.zones[z].flush_shared, want_of[z]);
	}
}

static void test_quorum(void)
{
	uint32_t all[VOL_ZONES];
	struct vol *v;

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++)
		all[z] = scratch_shares_flush() ? 0x3f : 0;
	check_flush_shared(v, all);
	degrade(v);
	CHECK_EQ(vol_close(v), -EIO); /* the sticky error */

	/* The faults were this process's: all six are back. */
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_failed_txn(v);
	check_all(v, "reopened with six");
	check_states(v, 0, 1);
	check_degraded(v, 1u << 1 | 1u << 4);
	commit_round(v, 5, 6);
	check_all(v, "written after reopen");
	CHECK_EQ(vol_close(v), 0);
}

/*
 * A zone whose log has a hole (a copy made sparse, say) would need a
 * journal commit of its own for a write there: it keeps its own
 * fdatasync, the other five share one flush, and commits go on.
 */
static void test_flush_domains(void)
{
	uint32_t want_of[VOL_ZONES];
	char path[PATH_MAX];
	struct vol *v;
	int fd;

	if (!scratch_shares_flush()) {
		printf("  flush domains: scratch is not ext4/XFS, skipped\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/log", scratch.zone_paths[3]);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			   1 << 20, 1 << 20));
	close(fd);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++)
		want_of[z] = z == 3 ? 0 : 0x3f & ~(1u << 3);
	check_flush_shared(v, want_of);
	commit_round(v, 7, 7);
	check_all(v, "zone 3 with its own fdatasync");
	check_states(v, 0, 1);
	CHECK_EQ(vol_close(v), 0);
}

static void test_busy(void)
{
	struct vol *v, *v2 = NULL;

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	CHECK_EQ(open_vol(&v2, 0, scratch.zone_paths, VOL_ZONES), -EBUSY);
	CHECK(v2 == NULL);
	CHECK_EQ(open_vol(&v2, 1, scratch.zone_paths, 1), -EBUSY);
	CHECK(v2 == NULL);
	CHECK(strstr(log_last, "in use") != NULL);
	check_all(v, "after refused opens");
	CHECK_EQ(vol_close(v), 0);
}

static int rename_zones(const int *zs, int n, int away)
{
	char moved[160];
	int ret = 0;

	for (int i = 0; i < n; i++) {
		snprintf(moved, sizeof(moved), "%s.away", scratch.zone[zs[i]]);
		if (away ? rename(scratch.zone[zs[i]], moved) :
			   rename(moved, scratch.zone[zs[i]]))
			ret = -errno;
	}
	return CHECK_OK(ret);
}

/* Zones 0, 2, 3 gone: 1 and 4 (behind, by the WIM) and 5 remain. */
static void test_three_missing(void)
{
	static const int gone[] = { 0, 2, 3 };
	const char *one[] = { scratch.zone[5] };
	struct vol_txn *txn;
	struct vol *v;

	if (rename_zones(gone, 3, 1) < 0)
		return;
	if (CHECK_OK(open_vol(&v, 1, one, 1)) >= 0) {
		check_all(v, "read-only, zones 0 2 3 missing");
		check_states(v, 1u << 0 | 1u << 2 | 1u << 3, 0);
		CHECK_EQ(vol_txn_begin(v, &txn), -EROFS);
		CHECK_EQ(vol_close(v), 0);
	}
	CHECK_EQ(open_vol(&v, 0, one, 1), -EIO);
	CHECK_EQ(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES), -EIO);
	rename_zones(gone, 3, 0);
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	check_all(v, "zones back");
	CHECK_EQ(vol_close(v), 0);
}

/*
 * Asynchronous commits: tickets grow in commit order, vol_wait makes
 * everything up to a ticket durable (and readable), later versions of a
 * block win, an empty transaction gives ticket 0; with the quorum lost
 * the wait fails with EIO (after the write timeout), as does every later
 * commit, and the reopened volume holds everything waited for before.
 */
#define ASYNC_TXNS 200
#define ASYNC_LBA 5000

static void check_block(struct vol *v, uint64_t lba, uint32_t ver)
{
	uint8_t buf[VOL_BLOCK_BYTES], exp_blk[VOL_BLOCK_BYTES];

	scratch_fill(exp_blk, lba, ver);
	if (CHECK_OK(vol_read(v, lba, buf)) == 0)
		CHECK(!memcmp(buf, exp_blk, sizeof(buf)));
}

static void test_async(void)
{
	uint64_t ticket = 0, prev = 0, waited;
	struct vol_txn *t;
	struct vol *v;
	int ret;

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	for (int i = 0; i < ASYNC_TXNS; i++) {
		/* even txns write new blocks, odd ones rewrite block 0 */
		uint64_t lba = ASYNC_LBA + (i % 2 ? 0 : (uint64_t)i);

		if (CHECK_OK(scratch_commit_block(v, lba, (uint32_t)i + 1,
						  &ticket)) < 0)
			break;
		CHECK(ticket > prev);
		prev = ticket;
	}
	if (CHECK_OK(vol_txn_begin(v, &t)) == 0) {
		CHECK_OK(vol_txn_commit_async(t, &ticket));
		CHECK_EQ(ticket, 0);
	}
	CHECK_OK(vol_wait(v, prev));
	CHECK(vol_durable_ticket(v) >= prev);
	for (int i = 2; i < ASYNC_TXNS; i += 2)
		check_block(v, ASYNC_LBA + (uint64_t)i, (uint32_t)i + 1);
	check_block(v, ASYNC_LBA, ASYNC_TXNS); /* the last odd txn's */
	waited = prev;

	/* Three zones die: the next commits are ordered, never durable. */
	CHECK_OK(vol_debug_write_timeout(v, TIMEOUT_MS));
	for (int z = 0; z < 3; z++)
		CHECK_OK(vol_debug_zone_fault(v, z, -EIO));
	ret = scratch_commit_block(v, ASYNC_LBA + 1, 7, &ticket);
	if (!ret)
		ret = vol_wait(v, ticket);
	CHECK_EQ(ret, -EIO);
	CHECK_EQ(scratch_commit_block(v, ASYNC_LBA + 2, 7, &ticket), -EIO);
	CHECK_EQ(vol_close(v), -EIO);

	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		return;
	CHECK(vol_durable_ticket(v) >= waited);
	for (int i = 2; i < ASYNC_TXNS; i += 2)
		check_block(v, ASYNC_LBA + (uint64_t)i, (uint32_t)i + 1);
	check_block(v, ASYNC_LBA, ASYNC_TXNS);
	CHECK_EQ(vol_close(v), 0);
}

/*
 * Signals (a daemon gets them: SIGTERM, SIGHUP, ...) land while zone I/O
 * is waited for: nothing may fail because of them.  Before the volume's
 * threads blocked signals and the ring waits retried EINTR, a signal in
 * the materialiser failed its round and put the volume in its error
 * state.
 */
#define SIGNAL_ROUNDS 100

static volatile sig_atomic_t signals_stop;

static void on_usr1(int sig)
{
	(void)sig;
}

static void *signaller(void *arg)
{
	struct timespec ts = { 0, 200 * 1000 };

	(void)arg;
	while (!signals_stop) {
		kill(getpid(), SIGUSR1);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void test_signals(void)
{
	struct sigaction sa, old;
	uint64_t ticket = 0;
	pthread_t tid;
	struct vol *v;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1; /* no SA_RESTART: waits see EINTR */
	sigemptyset(&sa.sa_mask);
	if (CHECK_OK(-sigaction(SIGUSR1, &sa, &old)) < 0)
		return;
	if (CHECK_OK(open_vol(&v, 0, scratch.zone_paths, VOL_ZONES)) < 0)
		goto out;
	signals_stop = 0;
	if (CHECK_OK(-pthread_create(&tid, NULL, signaller, NULL)) < 0) {
		CHECK_OK(vol_close(v));
		goto out;
	}
	for (int i = 0; i < SIGNAL_ROUNDS; i++) {
		for (int j = 0; j < 8; j++)
			CHECK_OK(scratch_commit_block(
				v, ASYNC_LBA + 1000 + (uint64_t)j, (uint32_t)i,
				&ticket));
		CHECK_OK(vol_wait(v, ticket));
		CHECK_OK(vol_sync(v)); /* a materialisation round */
	}
	signals_stop = 1;
	pthread_join(tid, NULL);
	for (int j = 0; j < 8; j++)
		check_block(v, ASYNC_LBA + 1000 + (uint64_t)j,
			    SIGNAL_ROUNDS - 1);
	CHECK_EQ(vol_close(v), 0);
out:
	sigaction(SIGUSR1, &old, NULL);
}

int main(void)
{
	if (key_init())
		SKIP("libsodium cannot initialise");
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("quorum")) < 0)
		return CHECK_DONE();
	if (make_volume() < 0)
		return CHECK_DONE();
	test_quorum();
	test_flush_domains();
	test_busy();
	test_three_missing();
	test_async();
	test_signals();
	scratch_cleanup();
	return CHECK_DONE();
}
