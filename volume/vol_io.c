/*
 * vol_io.c - run a vector of zone I/O operations through an io_uring and
 * wait for all of them.  Used by the materialiser and by recovery, which
 * want every zone's I/O in flight at once but need all results before
 * the next step.
 *
 * Layer: volume/.  The ring belongs to the calling thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <string.h>

#include "volume/vol_i.h"

static void prep(struct io_uring_sqe *sqe, struct vol_iop *op)
{
	switch (op->kind) {
	case VOL_IOP_READ:
		io_uring_prep_read(sqe, op->fd, op->buf, op->len, op->off);
		break;
	case VOL_IOP_WRITE:
		io_uring_prep_write(sqe, op->fd, op->buf, op->len, op->off);
		break;
	case VOL_IOP_WRITEV:
		io_uring_prep_writev(sqe, op->fd, op->buf, op->len, op->off);
		break;
	case VOL_IOP_FSYNC:
		io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
		break;
	case VOL_IOP_START:
		io_uring_prep_sync_file_range(sqe, op->fd,
					      (unsigned)op->punch_len, op->off,
					      SYNC_FILE_RANGE_WRITE);
		break;
	case VOL_IOP_PUNCH:
		io_uring_prep_fallocate(
			sqe, op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			op->off, op->punch_len);
		break;
	}
}

/*
 * Transient ring errors are retried: a signal (EINTR) or a full
 * completion queue (EAGAIN, EBUSY) must not fail a materialisation
 * round, which would put the volume in its error state.  Returning early
 * would also leave operations in flight whose completions the next call
 * would take for its own.
 */
static int transient(int ret)
{
	return ret == -EINTR || ret == -EAGAIN || ret == -EBUSY;
}

/*
 * Submit what is queued, wait until at least want completions are in and
 * take every one there is: how many, or -errno.  The operations finish on
 * io_uring's workers, and a waiter asking for one completion is woken for
 * each; asking for several wakes it once for all of them.
 */
static int reap(struct io_uring *ring, struct vol_iop *ops, unsigned want)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret;

	do {
		ret = io_uring_submit_and_wait(ring, want);
	} while (transient(ret));
	if (ret < 0)
		return ret;
	io_uring_for_each_cqe(ring, head, cqe) {
		ops[cqe->user_data].res = cqe->res;
		n++;
	}
	io_uring_cq_advance(ring, n);
	return (int)n;
}

/*
 * Returns 0 once every op has a result in op->res (bytes or -errno), or
 * -errno if the ring itself failed (then results are incomplete).  At
 * most window ops are in flight at once (0: as many as the ring holds);
 * a full window is refilled once half of it is done, so that this
 * thread wakes once for several completions (see reap).
 */
int vol_io_run(struct io_uring *ring, struct vol_iop *ops, size_t n,
	       size_t window)
{
	size_t queued = 0, done = 0;
	int ret;

	/* Keep completions below the CQ size. */
	if (!window || window > VOL_RING_ENTRIES)
		window = VOL_RING_ENTRIES;

	for (size_t i = 0; i < n; i++) {
		struct io_uring_sqe *sqe;

		if (ops[i].fd < 0) {
			ops[i].res = -EBADF;
			continue;
		}
		while (!(sqe = io_uring_get_sqe(ring))) {
			ret = reap(ring, ops, 1);
			if (ret < 0)
				return ret;
			done += (size_t)ret;
		}
		prep(sqe, &ops[i]);
		/*
		 * Never inline unless the caller knows the file system
		 * gives up instead of blocking (op->nowait): a slow zone's
		 * operations would then run one after another in this
		 * thread (vol_ring_init).  A buffered read on ext4 or XFS
		 * is served from the page cache at once, or handed to a
		 * worker by the kernel itself, at no cost to the others.
		 */
		if (!ops[i].nowait)
			sqe->flags |= IOSQE_ASYNC;
		io_uring_sqe_set_data64(sqe, i);
		queued++;
		/* A full window waits for half of it, the end for all. */
		if (queued - done >= window) {
			ret = reap(ring, ops,
				   (unsigned)(queued - done + 1) / 2);
			if (ret < 0)
				return ret;
			done += (size_t)ret;
		}
	}
	while (done < queued) {
		ret = reap(ring, ops, (unsigned)(queued - done));
		if (ret < 0)
			return ret;
		done += (size_t)ret;
	}
	/* A short transfer on a regular file is an error for us. */
	for (size_t i = 0; i < n; i++) {
		if (ops[i].res < 0)
			continue;
		if (ops[i].kind == VOL_IOP_WRITE &&
		    (uint32_t)ops[i].res != ops[i].len)
			ops[i].res = -EIO;
		if (ops[i].kind == VOL_IOP_WRITEV &&
		    (uint64_t)ops[i].res !=
			    (uint64_t)ops[i].len * VOL_BLOCK_BYTES)
			ops[i].res = -EIO;
	}
	return 0;
}

/*
 * Start a volume thread with every signal blocked: signals are for the
 * program's own threads (FUSE's, the main one), and one landing in a
 * thread that waits on a ring would only interrupt its I/O wait.  The
 * name (at most 15 bytes) is what top -H, perf and /proc show for it.
 */
int vol_thread_start(pthread_t *t, const char *name, void *(*fn)(void *),
		     void *arg)
{
	sigset_t all, old;
	int ret;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!ret)
		(void)pthread_setname_np(*t, name); /* a name is a nicety */
	return ret;
}

/*
 * *ts = ms milliseconds from now on CLOCK_REALTIME, what
 * pthread_cond_timedwait takes.  Any ms >= 0: a tv_nsec left at or past
 * one second would make every wait fail at once with EINVAL, a spin.
 */
void vol_deadline(struct timespec *ts, int64_t ms)
{
	VOL_VERIFY(ms >= 0);
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * A ring for zone I/O.  I/O that cannot complete without blocking (any
 * on a FUSE-backed zone, fdatasync) runs on io_uring's worker threads,
 * and the default pool of bounded workers is small (4 per CPU): the
 * operations of one slow zone would occupy all of them and the other
 * zones' I/O would queue behind, so the slow zone would set everyone's
 * pace.  The pool is made large enough for every operation a slow zone
 * may have outstanding (two per batch, VOL_ZONE_MAX_INFLIGHT batches)
 * plus the others'; workers are created only when needed.
 */
int vol_ring_init(struct io_uring *ring)
{
	unsigned int workers[2] = { VOL_RING_WORKERS, 0 };
	int ret = io_uring_queue_init(VOL_RING_ENTRIES, ring, 0);

	if (ret < 0)
		return ret;
	ret = io_uring_register_iowq_max_workers(ring, workers);
	if (ret < 0)
		vol_log(VOL_LOG_WARN,
			"cannot raise io_uring's worker limit (%s): a slow "
			"zone may slow the others",
			strerror(-ret));
	return 0;
}

static unsigned int hist_index(uint64_t us)
{
	unsigned int e;

	if (us < 8)
		return (unsigned int)us;
	if (us >= 1ull << 40)
		us = (1ull << 40) - 1;
	e = 63u - (unsigned int)__builtin_clzll(us); /* 3..39 */
	return 8 + (e - 3) * 8 + (unsigned int)((us >> (e - 3)) & 7);
}

/* The middle of bucket i (see struct vol_hist). */
static uint64_t hist_value(unsigned int i)
{
	unsigned int e;

	if (i < 8)
		return i;
	e = (i - 8) / 8 + 3;
	return ((uint64_t)(8 + (i - 8) % 8) << (e - 3)) +
	       ((1ull << (e - 3)) >> 1);
}

void vol_hist_add(struct vol_hist *h, uint64_t us)
{
	h->bucket[hist_index(us)]++;
	h->n++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
}

/* The smallest value with at least pct percent of the samples at or below. */
static uint64_t hist_pct(const struct vol_hist *h, unsigned int pct)
{
	uint64_t rank = (h->n * pct + 99) / 100, seen = 0;

	for (unsigned int i = 0; i < VOL_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank && seen) {
			uint64_t val = hist_value(i);

			return val < h->max_us ? val : h->max_us;
		}
	}
	return h->max_us;
}

void vol_hist_get(const struct vol_hist *h, struct vol_latency *out)
{
	memset(out, 0, sizeof(*out));
	if (!h->n)
		return;
	out->mean_us = h->sum_us / h->n;
	out->p50_us = hist_pct(h, 50);
	out->p90_us = hist_pct(h, 90);
	out->p99_us = hist_pct(h, 99);
	out->max_us = h->max_us;
}
