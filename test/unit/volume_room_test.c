/*
 * volume_room_test.c - back-pressure on asynchronous commits: the bound
 * a caller waits for before taking its own lock (vol_wait_room,
 * VOL_ASYNC_MAX_RECS) and the higher one an asynchronous commit itself
 * waits for (VOL_ASYNC_HARD_RECS).  On a real volume of six zone
 * directories under a temporary directory (removed at the end, also on
 * failure); the queue is made to look full by adding to its count
 * (white box through vol_i.h), which the real commits leave as they
 * found it.
 *
 * What must hold:
 *  - With the soft bound reached, vol_wait_room waits, also through
 *    durable batches that do not bring the queue below it, while an
 *    asynchronous commit still goes through and becomes durable; once the
 *    queue is below the bound, the wait ends with 0.
 *  - With the hard bound reached, an asynchronous commit waits, while a
 *    synchronous one goes through; once below, it commits and its block
 *    reads back.
 *  - The filesystem waits for room before it takes its lock: with the
 *    soft bound reached, a write waits, while a getattr and a lookup
 *    answer (they waited behind the write's commit before, for as long
 *    as the zones took to catch up); the write then completes.
 *  - A failed volume ends the wait with its error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/fs_format.h"
#include "fs/fs_txn.h"
#include "fs/fs_vfs.h"
#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/vol_i.h"
#include "volume/volume.h"

static void quiet_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [vol] %s\n", msg);
}

struct waiter {
	struct vol *v;
	struct fs *fs; /* test_fs: the write's filesystem, file and data */
	uint64_t ino;
	const uint8_t *buf;
	ssize_t n;
	uint64_t lba; /* the async commit's block (hard bound) */
	uint64_t ticket;
	int ret;
	atomic_int done;
	pthread_t t;
};

static void *wait_room(void *arg)
{
	struct waiter *w = arg;

	w->ret = vol_wait_room(w->v);
	atomic_store(&w->done, 1);
	return NULL;
}

static void *commit_async(void *arg)
{
	struct waiter *w = arg;

	w->ret = scratch_commit_block(w->v, w->lba, 2, &w->ticket);
	atomic_store(&w->done, 1);
	return NULL;
}

static void *fs_write(void *arg)
{
	struct waiter *w = arg;

	w->n = fs_vfs_write(w->fs, w->ino, 0, FS_BLOCK_BYTES, w->buf, NULL);
	atomic_store(&w->done, 1);
	return NULL;
}

/* Add delta records to the queue's count, waking whoever waits on it. */
static void pretend_queued(struct vol *v, int64_t delta)
{
	pthread_mutex_lock(&v->lock);
	v->queued_recs = (uint32_t)((int64_t)v->queued_recs + delta);
	pthread_cond_broadcast(&v->done_cv);
	pthread_mutex_unlock(&v->lock);
}

/*
 * Make the queue look recs records fuller and start fn(w) behind it;
 * undone if the thread cannot start (-1).  release() ends it.
 */
static int start_behind(struct vol *v, uint32_t recs, void *(*fn)(void *),
			struct waiter *w)
{
	pretend_queued(v, recs);
	if (CHECK_OK(-pthread_create(&w->t, NULL, fn, w)) < 0) {
		pretend_queued(v, -(int64_t)recs);
		return -1;
	}
	return 0;
}

/* Give the recs records back, so that w's wait ends, and join it. */
static void release(struct vol *v, uint32_t recs, struct waiter *w)
{
	pretend_queued(v, -(int64_t)recs);
	pthread_join(w->t, NULL);
}

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void test_soft(struct vol *v)
{
	struct waiter w = { .v = v };
	uint64_t ticket = 0;

	if (start_behind(v, VOL_ASYNC_MAX_RECS, wait_room, &w))
		return;
	/* Between the bounds a commit is not held back, and its batch
	 * becoming durable wakes the waiter, which must wait on. */
	CHECK_OK(scratch_commit_block(v, 1, 1, &ticket));
	CHECK_OK(vol_wait(v, ticket));
	pause_ms(50);
	CHECK_EQ(atomic_load(&w.done), 0);
	release(v, VOL_ASYNC_MAX_RECS, &w);
	CHECK_EQ(w.ret, 0);
	CHECK_EQ(scratch_check_run(v, 1, 1, 1, "between the bounds"), 0);
}

static void test_hard(struct vol *v)
{
	struct waiter w = { .v = v, .lba = 2 };

	if (start_behind(v, VOL_ASYNC_HARD_RECS, commit_async, &w))
		return;
	pause_ms(200);
	/* A synchronous commit is not held back; its durable batch wakes
	 * the asynchronous one, which must wait on. */
	CHECK_OK(scratch_commit_block(v, 3, 1, NULL));
	pause_ms(50);
	CHECK_EQ(atomic_load(&w.done), 0);
	release(v, VOL_ASYNC_HARD_RECS, &w);
	if (CHECK_OK(w.ret) == 0)
		CHECK_OK(vol_wait(v, w.ticket));
	CHECK_EQ(scratch_check_run(v, 2, 1, 2, "past the hard bound"), 0);
	CHECK_EQ(scratch_check_run(v, 3, 1, 1, "synchronous"), 0);
}

static void test_fs(struct vol *v)
{
	static const struct fs_ctx ctx = { 0, 0 };
	static uint8_t buf[FS_BLOCK_BYTES], back[FS_BLOCK_BYTES];
	struct fs_mkfs_opts mo = { .force = 1 };
	struct waiter w = { .v = v, .buf = buf };
	struct stat st;

	memset(buf, 0x6b, sizeof(buf));
	if (CHECK_OK(fs_store_mkfs(v, &mo)) < 0 ||
	    CHECK_OK(fs_vfs_open(v, &w.fs)) < 0)
		return;
	if (CHECK_OK(fs_vfs_mknod(w.fs, &ctx, FS_ROOT_INO, "f", S_IFREG | 0644,
				  0, NULL, &st)) < 0)
		goto out;
	w.ino = st.st_ino;
	if (start_behind(v, VOL_ASYNC_MAX_RECS, fs_write, &w))
		goto out;
	pause_ms(200);
	CHECK_EQ(atomic_load(&w.done), 0);
	CHECK_OK(fs_vfs_getattr(w.fs, w.ino, &st));
	if (CHECK_OK(fs_vfs_lookup(w.fs, FS_ROOT_INO, "f", &st)) == 0)
		fs_vfs_forget(w.fs, w.ino, 1);
	CHECK_EQ(atomic_load(&w.done), 0);
	release(v, VOL_ASYNC_MAX_RECS, &w);
	CHECK_EQ(w.n, FS_BLOCK_BYTES);
	CHECK_EQ(fs_vfs_read(w.fs, w.ino, 0, sizeof(back), back),
		 FS_BLOCK_BYTES);
	CHECK(memcmp(back, buf, sizeof(buf)) == 0);
	fs_vfs_forget(w.fs, w.ino, 1); /* mknod's reference */
out:
	CHECK_OK(fs_vfs_close(w.fs));
}

static void test_failed(struct vol *v)
{
	struct waiter w = { .v = v };

	if (start_behind(v, VOL_ASYNC_MAX_RECS, wait_room, &w))
		return;
	pause_ms(50);
	pthread_mutex_lock(&v->lock);
	vol_fail_all(v, -EIO); /* empties the queue, wakes the waiters */
	pthread_mutex_unlock(&v->lock);
	pthread_join(w.t, NULL);
	CHECK_EQ(w.ret, -EIO);
	CHECK_EQ(vol_wait_room(v), -EIO);
}

int main(void)
{
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];
	struct vol *v;

	if (CHECK_OK(key_init()) < 0)
		return CHECK_DONE();
	vol_set_log(quiet_log);
	if (CHECK_OK(scratch_setup("room")) < 0)
		return CHECK_DONE();
	if (CHECK_OK(scratch_mkfs("v", 0, dirs, paths)) == 0 &&
	    CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) == 0) {
		test_soft(v);
		test_hard(v);
		test_fs(v);
		test_failed(v);
		CHECK_EQ(vol_close(v), -EIO); /* failed on purpose */
	}
	scratch_cleanup();
	return CHECK_DONE();
}
