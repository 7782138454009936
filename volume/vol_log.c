/*
 * vol_log.c - transactions, group commit and the quorum log writer.
 *
 * Layer: volume/.  Committers take LSNs in order (V1) and seal their own
 * blocks in parallel; one log thread packs every sealed transaction that
 * waits into one batch, sends it with one write + fdatasync per zone
 * through io_uring (one buffer, the same for all six: fill), collects the
 * completions and declares batches durable once W zones have them (V2),
 * which wakes the committers and feeds the materialiser.
 * Must not: decide what is durable anywhere but advance().
 *
 * L1 (flush domains).  What makes a completed write stable is a cache
 * flush of its device, and a device runs its flushes one after another:
 * six zone logs on one disk with six fdatasyncs cost six flushes per
 * batch.  Zones whose logs are fully written extents on ext4 or XFS of
 * one device (vol_zone_flush_domain) share one fdatasync, issued once
 * all their writes are in; it is stable storage for every member whose
 * write completed before it, exactly as six would be.  The quorum rule
 * (V2) is unchanged: a zone counts once its write and a flush after it
 * both succeeded.  A committer waiting for the batch runs that fdatasync
 * itself where it may (hand_flush), an io_uring worker otherwise.
 *
 * L2 (the direct path).  A block that nothing committed refers to yet
 * (vol_txn_write_fresh: the filesystem just allocated it) need not be
 * written twice, to the log and later to its segment.  When a batch has
 * enough of them (choose_direct), they become DIRECT records: the log
 * gets the record without the ciphertext, and each zone's log write is
 * linked behind that zone's writes of those blocks into their places in
 * its segments and an fdatasync of each segment file (send_direct).  So
 * a zone's log holds the batch only once its segments hold the blocks
 * stably, and the batch is durable, as always, once W zones completed
 * that whole chain.  Until then the blocks' metas still name their old
 * state; the materialiser later writes only their metas in those zones,
 * and data and meta in any other (vol_mat.c); recovery reads them back
 * from the segments (vol_open.c fetch_direct).  What makes writing a
 * segment ahead of its record safe:
 *  - nothing reads the block by its new version before the batch is
 *    durable, and a crash before that leaves it unreferenced (the fs
 *    commits the pointer to it in the same transaction);
 *  - no older record of the LBA may reach the segment afterwards: one
 *    pending, in a batch not yet durable or earlier in the batch would
 *    (a materialised WRITE, a discard's punch) and sends the block
 *    through the log instead; the materialiser takes a batch with
 *    DIRECT blocks only once every zone of the write set finished its
 *    chain, so a newer version it writes always lands last;
 *  - every zone is up and current when the batch is built (no WIM bit,
 *    no rebuild), so no resync writes those segments meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "volume/vol_i.h"

/* ---- pending map: durable records not yet in the segments ---- */

static uint32_t pend_hash(uint64_t lba)
{
	return (uint32_t)((lba * 0x9E3779B97F4A7C15ull) >> 48) &
	       (VOL_PEND_BUCKETS - 1);
}

/* Caller holds v->lock; takes pend_lock for writing. */
void vol_pend_insert_batch(struct vol *v, struct vol_batch *b)
{
	uint32_t k = 0;

	pthread_rwlock_wrlock(&v->pend_lock);
	for (uint32_t i = 0; i < b->h.nrec; i++) {
		const struct vol_rec *r = &b->recs[i];
		struct vol_pend *p = malloc(sizeof(*p));
		/* Discards live in bucket 0's chain marked by rec->kind. */
		uint32_t h = vol_rec_writes(r->kind) ? pend_hash(r->lba) : 0;

		VOL_VERIFY(p != NULL);
		p->lba = r->lba;
		p->lsn = r->lsn;
		p->rec = r;
		p->cipher = vol_rec_writes(r->kind) ? b->data[k++] : NULL;
		p->b = b;
		if (vol_rec_writes(r->kind) && !p->cipher) {
			/* recovery found no copy: the zones answer (their
			 * meta, then their tag, fails the read) */
			free(p);
			continue;
		}
		p->next = v->pend[h];
		v->pend[h] = p;
	}
	pthread_rwlock_unlock(&v->pend_lock);
}

static void pend_remove_chain(struct vol_pend **pp, struct vol_batch *b)
{
	while (*pp) {
		struct vol_pend *p = *pp;

		if (p->b == b) {
			*pp = p->next;
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

void vol_pend_remove_batch(struct vol *v, struct vol_batch *b)
{
	pthread_rwlock_wrlock(&v->pend_lock);
	pend_remove_chain(&v->pend[0], b);
	for (uint32_t i = 0; i < b->h.nrec; i++)
		if (vol_rec_writes(b->recs[i].kind))
			pend_remove_chain(&v->pend[pend_hash(b->recs[i].lba)],
					  b);
	pthread_rwlock_unlock(&v->pend_lock);
}

/* The size of b->buf (vol_alloc_huge), when b has one. */
static size_t buf_bytes(const struct vol_batch *b)
{
	return ((size_t)b->h.nhdr + b->nblk) * VOL_BLOCK_BYTES;
}

void vol_batch_free(struct vol_batch *b)
{
	if (!b)
		return;
	for (uint32_t i = 0; !b->buf && b->data && i < b->nblk; i++)
		free(b->data[i]);
	vol_free_huge(b->buf, buf_bytes(b)); /* NULL: recovery's batches */
	free(b->data);
	free(b->druns);
	free(b->dop);
	free(b->recs);
	free(b);
}

/* ---- zone and volume failure ---- */

static int zones_up(const struct vol *v)
{
	int n = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		n += v->zones[z].up;
	return n;
}

/* Caller holds v->lock.  The zone leaves the write set for good. */
void vol_zone_fail(struct vol *v, int z, int err, const char *why)
{
	struct vol_zone *zone = &v->zones[z];
	int left;

	if (!zone->up)
		return;
	zone->up = 0;
	zone->fail_gen++;
	zone->err = err;
	snprintf(zone->reason, sizeof(zone->reason), "%s: %s", why,
		 strerror(-err));
	left = zones_up(v);
	vol_log(VOL_LOG_WARN,
		"zone %d (%s) left the write set: %s; %d zones remain%s", z,
		zone->dirs[0], zone->reason, left,
		left < VOL_WRITE_QUORUM ?
			", fewer than the 4 a write needs: writes wait" :
			"");
	pthread_cond_broadcast(&v->mat_cv);
}

/*
 * Caller holds v->lock.  Every transaction of a list is done with ret; an
 * async one (detached) has nobody waiting for it, so it is freed here.
 */
static void finish_txns(struct vol_txn *t, int ret)
{
	while (t) {
		struct vol_txn *next = t->next;

		t->done = 1;
		t->ret = ret;
		if (t->detached)
			vol_txn_abort(t);
		t = next;
	}
}

/* Caller holds v->lock.  Sticky: every waiting and later write fails. */
void vol_fail_all(struct vol *v, int err)
{
	if (!v->err)
		v->err = err;
	finish_txns(v->queue, v->err);
	v->queue = NULL;
	v->queue_tail = &v->queue;
	for (struct vol_batch *b = v->batches; b; b = b->next) {
		finish_txns(b->txns, v->err);
		b->txns = NULL;
	}
	v->queued_recs = 0;
	pthread_cond_broadcast(&v->done_cv);
	vol_log_kick(v);
	pthread_cond_broadcast(&v->mat_cv);
	pthread_cond_broadcast(&v->idle_cv);
}

/* ---- durability (V2) ---- */

static uint64_t last_lsn(const struct vol_batch *b)
{
	return b->h.first_lsn + b->h.nrec - 1;
}

static int cmp_u64_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Caller holds v->lock.  The invariants of the live batch list, checked
 * after completions (SQLite's assert_pager_state habit): batches in
 * seq and LSN order with no gap (V1), durable ones form a prefix (V2),
 * materialised ones a prefix of those (V3), and no zone claims a batch
 * durable that the list does not hold.
 */
void vol_check(struct vol *v)
{
	const struct vol_batch *prev = NULL;
	int seen_undurable = 0, seen_unmat = 0, undurable = 0;
	uint64_t walked = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		VOL_VERIFY(v->zones[z].done_seq < v->next_seq);
	VOL_VERIFY(!v->flush_job || v->flush_takers > 0);
	/*
	 * The walk is as long as the log holds batches (thousands of small
	 * ones when commits are small): the next one waits for as many
	 * calls as this one visited batches, at least 64, so that a call
	 * costs at most about one visit on average.
	 */
	if (++v->check_calls < v->check_next)
		return;
	for (const struct vol_batch *b = v->batches; b; b = b->next) {
		walked++;
		if (prev) {
			VOL_VERIFY(b->h.seq == prev->h.seq + 1);
			VOL_VERIFY(b->h.first_lsn ==
				   prev->h.first_lsn + prev->h.nrec);
		}
		VOL_VERIFY(!b->durable || !seen_undurable);
		VOL_VERIFY(!b->materialised || (b->durable && !seen_unmat));
		seen_undurable |= !b->durable;
		seen_unmat |= !b->materialised;
		undurable += !b->durable;
		prev = b;
	}
	VOL_VERIFY(v->err || undurable == v->undurable);
	VOL_VERIFY(!prev || prev->h.first_lsn + prev->h.nrec <= v->next_lsn);
	v->check_next = v->check_calls + (walked > 64 ? walked : 64);
}

/* Caller holds v->lock.  b, sent by this process, is durable now. */
static void note_commit(struct vol *v, const struct vol_batch *b)
{
	uint64_t now = vol_now_us(), sent = b->sent_us, sealed = b->sealed_us;
	struct vol_hist *h = v->commit_hist;

	/*
	 * sealed <= sent <= now, each taken under v->lock after the one
	 * before on the monotonic clock; a figure is not worth a panic, so
	 * the order is enforced rather than asserted.
	 */
	if (now < sent)
		now = sent;
	if (!sealed || sealed > sent)
		sealed = sent;
	vol_hist_add(&h[VOL_CP_QUEUED], sent - sealed);
	vol_hist_add(&h[VOL_CP_DURABLE], now - sent);
	vol_hist_add(&h[VOL_CP_TOTAL], now - sealed);
}

static void mark_durable(struct vol *v, struct vol_batch *b)
{
	/* V2: durability in batch order; V1: LSNs only grow. */
	VOL_VERIFY(b->h.seq == v->durable_seq + 1);
	VOL_VERIFY(last_lsn(b) > v->durable_lsn);
	b->durable = 1;
	if (b->sent_us)
		note_commit(v, b);
	v->undurable--;
	v->durable_seq = b->h.seq;
	v->durable_lsn = last_lsn(b);
	if (b->h.pg_count > v->pg_count)
		v->pg_count = b->h.pg_count;
	v->mat_waiting += b->h.nrec;
	v->direct_blocks += b->ndirect;
	v->logged_blocks += b->h.ndata;
	vol_pend_insert_batch(v, b);
	/* vol_fail_all zeroes the count while batches may still land */
	v->queued_recs -= b->h.nrec <= v->queued_recs ? b->h.nrec :
							v->queued_recs;
	finish_txns(b->txns, 0);
	b->txns = NULL;
}

/* Caller holds v->lock.  The live batch seq, or NULL if it is not one. */
static struct vol_batch *batch_at(const struct vol *v, uint64_t seq)
{
	struct vol_batch *b = v->ring[seq % v->log_blocks];

	return b && b->h.seq == seq ? b : NULL;
}

/* Caller holds v->lock.  b leaves the live list (freed, or a zombie). */
static void unring(struct vol *v, const struct vol_batch *b)
{
	if (v->ring[b->h.seq % v->log_blocks] == b)
		v->ring[b->h.seq % v->log_blocks] = NULL;
}

/*
 * Caller holds v->lock.  Durability or freed log space helps only a log
 * thread that holds work it could not send (or drains at close): waking
 * it otherwise costs two context switches per batch for nothing.
 */
static void wake_stuck(struct vol *v)
{
	if (v->submit_stuck || v->stopping)
		vol_log_kick(v);
}

/* Caller holds v->lock. */
static void advance(struct vol *v)
{
	uint64_t done[VOL_ZONES];
	uint64_t quorum;
	int any = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		struct vol_batch *b;

		/* Its prefix grows while the next batch is done there. */
		while (zone->up && (b = batch_at(v, zone->done_seq + 1)) &&
		       (b->done_mask & (1u << z)))
			zone->done_seq = b->h.seq;
		done[z] = zone->done_seq;
	}
	qsort(done, VOL_ZONES, sizeof(done[0]), cmp_u64_desc);
	quorum = done[VOL_WRITE_QUORUM - 1];
	while (v->durable_seq < quorum) {
		struct vol_batch *b = batch_at(v, v->durable_seq + 1);

		VOL_VERIFY(b != NULL); /* not durable, so live (V2) */
		mark_durable(v, b);
		any = 1;
	}
	if (any) {
		pthread_cond_broadcast(&v->done_cv);
		vol_mat_kick(v);
		wake_stuck(v);
	}
}

/* ---- transactions ---- */

int vol_txn_begin(struct vol *v, struct vol_txn **out)
{
	struct vol_txn *t;

	if (v->readonly)
		return -EROFS;
	t = malloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, offsetof(struct vol_txn, recs));
	t->v = v;
	*out = t;
	return 0;
}

int vol_txn_write(struct vol_txn *t, uint64_t lba, const void *buf)
{
	struct vol_rec *r;

	if (lba >= t->v->max_blocks)
		return -ENOSPC;
	if (t->nrec == VOL_TXN_MAX_RECS)
		return -E2BIG;
	/* Filled at once, so not zeroed (about 1 % of the daemon's CPU). */
	t->blk[t->nrec] = vol_alloc_blocks_raw(1);
	if (!t->blk[t->nrec])
		return -ENOMEM;
	memcpy(t->blk[t->nrec], buf, VOL_BLOCK_BYTES);
	t->fresh[t->nrec] = 0;
	r = &t->recs[t->nrec++];
	memset(r, 0, sizeof(*r));
	r->lba = lba;
	r->kind = VOL_REC_WRITE;
	t->nwrite++;
	if (lba / VOL_PG_BLOCKS + 1 > t->max_pg)
		t->max_pg = lba / VOL_PG_BLOCKS + 1;
	return 0;
}

int vol_txn_write_fresh(struct vol_txn *t, uint64_t lba, const void *buf)
{
	int ret = vol_txn_write(t, lba, buf);

	if (!ret)
		t->fresh[t->nrec - 1] = 1;
	return ret;
}

int vol_txn_discard(struct vol_txn *t, uint64_t lba, uint64_t nblocks)
{
	struct vol_rec *r;

	if (nblocks == 0)
		return -EINVAL;
	if (lba >= t->v->max_blocks || nblocks > t->v->max_blocks - lba)
		return -ENOSPC;
	if (t->nrec == VOL_TXN_MAX_RECS)
		return -E2BIG;
	t->blk[t->nrec] = NULL;
	t->fresh[t->nrec] = 0;
	r = &t->recs[t->nrec++];
	memset(r, 0, sizeof(*r));
	r->lba = lba;
	r->kind = VOL_REC_DISCARD;
	r->nblocks = nblocks;
	return 0;
}

void vol_txn_abort(struct vol_txn *t)
{
	if (!t)
		return;
	if (t->reserved) { /* never after admission, so never locked */
		pthread_mutex_lock(&t->v->lock);
		vol_space_release(t->v, t);
		pthread_mutex_unlock(&t->v->lock);
	}
	for (uint32_t i = 0; i < t->nrec; i++)
		free(t->blk[i]);
	free(t);
}

static int seal(struct vol_txn *t)
{
	for (uint32_t i = 0; i < t->nrec; i++) {
		struct vol_rec *r = &t->recs[i];
		uint8_t *c;
		int ret;

		if (r->kind != VOL_REC_WRITE)
			continue;
		c = vol_alloc_blocks_raw(1); /* key_seal_block fills it */
		if (!c)
			return -ENOMEM;
		ret = key_seal_block(t->v->kc, r->lba, r->lsn, t->blk[i], c,
				     r->nonce, r->tag);
		if (ret) {
			free(c);
			return ret;
		}
		r->data_crc = vol_crc32c(~0u, c, VOL_BLOCK_BYTES) ^ ~0u;
		free(t->blk[i]);
		t->blk[i] = c;
	}
	return 0;
}

static void run_flush(struct vol *v);

/*
 * Caller holds v->lock.  Wait until done(v, arg) holds or the volume
 * fails.  With a write timeout, the volume fails (EIO for every waiting
 * and later write) when durability makes no progress for that long while
 * someone waits: a stalled quorum, not a long queue, is what times out.
 * Meanwhile it runs the flushes the log thread leaves to waiters
 * (hand_flush).
 */
static int wait_for(struct vol *v, int (*done)(struct vol *, void *), void *arg)
{
	uint64_t seen = v->durable_lsn;
	struct timespec ts;

	if (v->write_timeout_ms >= 0)
		vol_deadline(&ts, v->write_timeout_ms);
	v->flush_takers++;
	while (!done(v, arg) && !v->err) {
		if (v->flush_job) {
			run_flush(v);
			continue;
		}
		if (v->write_timeout_ms < 0) {
			pthread_cond_wait(&v->done_cv, &v->lock);
			continue;
		}
		if (pthread_cond_timedwait(&v->done_cv, &v->lock, &ts) !=
		    ETIMEDOUT)
			continue;
		if (done(v, arg))
			break;
		if (v->durable_lsn != seen) { /* progress: wait on */
			seen = v->durable_lsn;
			vol_deadline(&ts, v->write_timeout_ms);
			continue;
		}
		vol_log(VOL_LOG_ERR,
			"write quorum not reached within %lld ms "
			"(%d of 6 zones writable, 4 needed): failing "
			"writes with EIO until the volume is reopened",
			(long long)v->write_timeout_ms, zones_up(v));
		vol_fail_all(v, -EIO);
	}
	/* The last waiter runs what was left to the waiters (flush_job). */
	while (v->flush_job && v->flush_takers == 1)
		run_flush(v);
	v->flush_takers--;
	return done(v, arg) ? 0 : v->err;
}

static int txn_done(struct vol *v, void *arg)
{
	(void)v;
	return ((struct vol_txn *)arg)->done;
}

/* arg: the bound, VOL_ASYNC_MAX_RECS or VOL_ASYNC_HARD_RECS, as a value. */
static int queue_has_room(struct vol *v, void *arg)
{
	return v->queued_recs < (uintptr_t)arg;
}

static int lsn_durable(struct vol *v, void *arg)
{
	return v->durable_lsn >= *(const uint64_t *)arg;
}

/*
 * Take LSNs, queue, seal (outside the lock, in parallel with other
 * committers) and hand t to the log thread.  With ticket (async), return
 * at once with the transaction's last LSN; t then belongs to the volume.
 * Without, wait until t is durable or failed.
 */
static int commit(struct vol_txn *t, uint64_t *ticket)
{
	struct vol *v = t->v;
	int ret;

	if (t->nrec == 0) {
		vol_txn_abort(t);
		if (ticket)
			*ticket = 0;
		return 0;
	}
	pthread_mutex_lock(&v->lock);
	if (ticket && !v->err && !v->stopping)
		(void)wait_for(v, queue_has_room,
			       (void *)(uintptr_t)VOL_ASYNC_HARD_RECS);
	if (v->err || v->stopping) {
		ret = v->err ? v->err : -ESHUTDOWN;
		pthread_mutex_unlock(&v->lock);
		vol_txn_abort(t);
		return ret;
	}
	ret = vol_space_admit(v, t); /* before any LSN is taken */
	if (ret) {
		pthread_mutex_unlock(&v->lock);
		vol_txn_abort(t);
		return ret;
	}
	for (uint32_t i = 0; i < t->nrec; i++)
		t->recs[i].lsn = v->next_lsn + i;
	v->next_lsn += t->nrec;
	v->queued_recs += t->nrec;
	t->next = NULL;
	*v->queue_tail = t;
	v->queue_tail = &t->next;
	pthread_mutex_unlock(&v->lock);

	ret = seal(t); /* in parallel with other committers */

	pthread_mutex_lock(&v->lock);
	if (ret && !t->done)
		vol_fail_all(v, ret);
	t->sealed = 1;
	t->sealed_us = vol_now_us();
	vol_log_kick(v);
	if (ticket && !t->done) {
		*ticket = t->recs[t->nrec - 1].lsn;
		t->detached = 1; /* freed by whoever finishes it */
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	(void)wait_for(v, txn_done, t);
	VOL_VERIFY(t->done); /* vol_fail_all finishes every queued txn */
	ret = t->ret;
	pthread_mutex_unlock(&v->lock);
	vol_txn_abort(t); /* sealed blocks now belong to the batch */
	return ret;
}

int vol_txn_commit(struct vol_txn *t)
{
	return commit(t, NULL);
}

int vol_txn_commit_async(struct vol_txn *t, uint64_t *ticket)
{
	return commit(t, ticket);
}

int vol_wait_room(struct vol *v)
{
	int ret;

	pthread_mutex_lock(&v->lock);
	if (!v->err && !v->stopping) /* closing: the commit says so */
		(void)wait_for(v, queue_has_room,
			       (void *)(uintptr_t)VOL_ASYNC_MAX_RECS);
	ret = v->err; /* vol_fail_all also empties the queue */
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int vol_wait(struct vol *v, uint64_t ticket)
{
	int ret;

	pthread_mutex_lock(&v->lock);
	ret = wait_for(v, lsn_durable, &ticket);
	pthread_mutex_unlock(&v->lock);
	return ret;
}

uint64_t vol_durable_ticket(struct vol *v)
{
	uint64_t lsn;

	pthread_mutex_lock(&v->lock);
	lsn = v->durable_lsn;
	pthread_mutex_unlock(&v->lock);
	return lsn;
}

/* ---- building a batch ---- */

/* Where a batch of nblk blocks can go in the log, or -1 if full. */
static int64_t log_place(struct vol *v, uint32_t nblk)
{
	uint32_t head = v->log_head, tail;
	int wrapped;

	if (head + nblk > v->log_blocks)
		head = 0;
	if (!v->batches)
		return head;
	tail = v->batches->h.pos;
	wrapped = v->batches_tail->h.pos < tail;
	if (!wrapped) {
		if (head == v->log_head) /* [log_head, end) is free */
			return head;
		return nblk <= tail ? 0 : -1;
	}
	if (head != v->log_head)
		return -1;
	return head + nblk <= tail ? (int64_t)head : -1;
}

/* How many queued, sealed transactions fit one batch. */
static uint32_t gather(struct vol *v, uint32_t *nrec, uint32_t *ndata)
{
	uint32_t n = 0;

	*nrec = *ndata = 0;
	for (struct vol_txn *t = v->queue; t && t->sealed; t = t->next) {
		if (*nrec + t->nrec > VOL_BATCH_MAX_RECS)
			break;
		*nrec += t->nrec;
		*ndata += t->nwrite;
		n++;
	}
	return n;
}

/* ---- the direct path (L2) ---- */

/* Caller holds v->lock.  May fresh blocks skip the log now? */
static int direct_allowed(struct vol *v)
{
	uint64_t missed = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone *zone = &v->zones[z];

		if (!zone->up || zone->fault || zone->rebuilding ||
		    zone->rejoin)
			return 0;
	}
	pthread_rwlock_rdlock(&v->wim_lock);
	for (int z = 0; z < VOL_ZONES; z++)
		missed += v->zones[z].wim_regions;
	pthread_rwlock_unlock(&v->wim_lock);
	return missed == 0;
}

/* LBA ranges of records that could still reach a segment (L2). */
struct spans {
	uint64_t lo, hi; /* only ranges meeting [lo, hi] are kept */
	uint64_t (*r)[2]; /* first, count */
	size_t n, cap;
};

static void spans_add(struct spans *sp, const struct vol_rec *r)
{
	uint64_t len = vol_rec_writes(r->kind) ? 1 : r->nblocks;

	if (r->lba > sp->hi || r->lba + len <= sp->lo)
		return;
	if (sp->n == sp->cap) {
		size_t cap = sp->cap ? sp->cap * 2 : 64;
		uint64_t(*nr)[2] = realloc(sp->r, cap * sizeof(*nr));

		VOL_VERIFY(nr != NULL);
		sp->r = nr;
		sp->cap = cap;
	}
	sp->r[sp->n][0] = r->lba;
	sp->r[sp->n][1] = len;
	sp->n++;
}

static int spans_cover(const struct spans *sp, uint64_t lba)
{
	for (size_t i = 0; i < sp->n; i++)
		if (lba >= sp->r[i][0] && lba - sp->r[i][0] < sp->r[i][1])
			return 1;
	return 0;
}

/* Caller holds pend_lock.  Is a write of lba waiting to materialise? */
static int pend_has_write(const struct vol *v, uint64_t lba)
{
	for (const struct vol_pend *p = v->pend[pend_hash(lba)]; p; p = p->next)
		if (p->lba == lba && vol_rec_writes(p->rec->kind))
			return 1;
	return 0;
}

/* Record j of every queued transaction t before end. */
#define FOR_QUEUED_RECS(v, end, t, j)                                 \
	for (struct vol_txn *t = (v)->queue; t != (end); t = t->next) \
		for (uint32_t j = 0; j < t->nrec; j++)

/*
 * Caller holds v->lock; the first n queued transactions make the next
 * batch.  Chooses which of their fresh blocks go direct (kind DIRECT)
 * and returns how many.  A block qualifies only if no older record of
 * its LBA can still reach its segment: none is pending (durable, not
 * materialised), in a batch not yet durable, or earlier in this batch;
 * and only while every zone is up and current (no WIM bit), so that no
 * resync or rebuild writes those segments meanwhile.  The log thread may
 * call it again for the same transactions (the choice is redone).
 */
static uint32_t choose_direct(struct vol *v, uint32_t n)
{
	struct spans sp = { .lo = UINT64_MAX };
	uint64_t prev = 0, prev_pg = UINT64_MAX;
	uint32_t cand = 0, chosen = 0, runs = 0;
	struct vol_txn *end = v->queue;

	while (n--)
		end = end->next;

	FOR_QUEUED_RECS(v, end, t, j)
	{
		struct vol_rec *r = &t->recs[j];

		if (r->kind == VOL_REC_DIRECT)
			r->kind = VOL_REC_WRITE;
		if (!t->fresh[j])
			continue;
		cand++;
		if (r->lba < sp.lo)
			sp.lo = r->lba;
		if (r->lba > sp.hi)
			sp.hi = r->lba;
	}
	if (cand < VOL_DIRECT_MIN_BLOCKS || !direct_allowed(v))
		return 0;
	for (const struct vol_batch *b = v->batches; b; b = b->next)
		for (uint32_t j = 0; !b->durable && j < b->h.nrec; j++)
			spans_add(&sp, &b->recs[j]);
	FOR_QUEUED_RECS(v, end, t, j)
	if (!t->fresh[j])
		spans_add(&sp, &t->recs[j]);
	pthread_rwlock_rdlock(&v->pend_lock);
	for (const struct vol_pend *p = v->pend[0]; p; p = p->next)
		if (p->rec->kind == VOL_REC_DISCARD)
			spans_add(&sp, p->rec);
	FOR_QUEUED_RECS(v, end, t, j)
	{
		struct vol_rec *r = &t->recs[j];
		uint64_t pg = r->lba / VOL_PG_BLOCKS;
		int joins = runs && r->lba == prev + 1 && pg == prev_pg;

		if (!t->fresh[j] || (!joins && runs == VOL_DIRECT_MAX_RUNS) ||
		    spans_cover(&sp, r->lba) || pend_has_write(v, r->lba))
			continue;
		runs += !joins;
		prev = r->lba;
		prev_pg = pg;
		r->kind = VOL_REC_DIRECT;
		chosen++;
	}
	pthread_rwlock_unlock(&v->pend_lock);
	free(sp.r);
	if (chosen >= VOL_DIRECT_MIN_BLOCKS)
		return chosen;
	FOR_QUEUED_RECS(v, end, t, j)
	if (t->recs[j].kind == VOL_REC_DIRECT)
		t->recs[j].kind = VOL_REC_WRITE;
	return 0;
}

/*
 * The runs of b's DIRECT blocks, in record order, as choose_direct
 * counted them: a block joins the run before it if it follows it in
 * LBA and PG.
 */
static void plan_direct(struct vol_batch *b)
{
	uint32_t d = 0;

	b->druns = calloc(VOL_DIRECT_MAX_RUNS, sizeof(*b->druns));
	VOL_VERIFY(b->druns != NULL);
	for (uint32_t i = 0; i < b->h.nrec; i++) {
		const struct vol_rec *r = &b->recs[i];
		struct vol_drun *run = b->ndruns ? &b->druns[b->ndruns - 1] :
						   NULL;
		uint64_t pg = r->lba / VOL_PG_BLOCKS;
		uint32_t p;

		if (r->kind != VOL_REC_DIRECT)
			continue;
		if (run && r->lba == run->lba + run->n &&
		    pg == run->lba / VOL_PG_BLOCKS) {
			run->n++;
			d++;
			continue;
		}
		VOL_VERIFY(b->ndruns < VOL_DIRECT_MAX_RUNS);
		b->druns[b->ndruns++] = (struct vol_drun){ r->lba, 1, d++ };
		for (p = 0; p < b->ndpgs && b->dpgs[p] != pg; p++)
			;
		if (p == b->ndpgs)
			b->dpgs[b->ndpgs++] = pg;
	}
	VOL_VERIFY(d == b->ndirect);
	b->dop = calloc((size_t)VOL_ZONES * (b->ndruns + b->ndpgs),
			sizeof(*b->dop));
	VOL_VERIFY(b->dop != NULL);
}

/* A zone's operations for b's DIRECT blocks (L2). */
static uint32_t direct_ops(const struct vol_batch *b)
{
	return b->ndruns + b->ndpgs;
}

/*
 * Caller holds v->lock.  Moves n txns from the queue into a new batch;
 * ndata of their writes go to the log, ndirect direct.  Their blocks
 * move into b->buf later, in fill().
 */
static struct vol_batch *build(struct vol *v, uint32_t n, uint32_t nrec,
			       uint32_t ndata, uint32_t ndirect, uint32_t pos)
{
	struct vol_batch *b = calloc(1, sizeof(*b));
	uint32_t k = 0, i = 0;
	uint64_t pg = v->pg_count;

	VOL_VERIFY(b != NULL);
	b->h.nhdr = vol_batch_nhdr(nrec);
	b->recs = calloc(nrec, sizeof(*b->recs));
	b->nblk = ndata + ndirect;
	b->ndirect = ndirect;
	b->data = calloc(b->nblk ? b->nblk : 1, sizeof(*b->data));
	b->buf = vol_alloc_huge(buf_bytes(b));
	VOL_VERIFY(b->recs && b->data && b->buf);
	while (n--) {
		struct vol_txn *t = v->queue;

		v->queue = t->next;
		if (!v->queue)
			v->queue_tail = &v->queue;
		for (uint32_t j = 0; j < t->nrec; j++) {
			b->recs[i++] = t->recs[j];
			if (vol_rec_writes(t->recs[j].kind)) {
				b->data[k++] = t->blk[j];
				t->blk[j] = NULL;
			}
		}
		if (t->max_pg > pg)
			pg = t->max_pg;
		if (!b->sealed_us || t->sealed_us < b->sealed_us)
			b->sealed_us = t->sealed_us;
		t->next = b->txns;
		b->txns = t;
	}
	VOL_VERIFY(i == nrec && k == b->nblk);
	/* V1: the batch's LSNs are consecutive. */
	for (uint32_t j = 1; j < nrec; j++)
		VOL_VERIFY(b->recs[j].lsn == b->recs[0].lsn + j);
	memcpy(b->h.uuid, v->uuid, KEY_UUID_BYTES);
	b->h.epoch = v->epoch;
	b->h.seq = v->next_seq++;
	b->h.first_lsn = b->recs[0].lsn;
	b->h.nrec = nrec;
	b->h.ndata = ndata;
	b->h.pg_count = pg;
	b->h.pos = pos;
	if (ndirect)
		plan_direct(b);
	return b;
}

/* Block i of b's log write's data, and DIRECT block i, in b->buf. */
static uint8_t *log_block(const struct vol_batch *b, uint32_t i)
{
	return b->buf + ((size_t)b->h.nhdr + i) * VOL_BLOCK_BYTES;
}

static uint8_t *direct_block(const struct vol_batch *b, uint32_t i)
{
	return log_block(b, b->h.ndata + i);
}

/*
 * Submitter only, after enlist and without v->lock: nothing else looks
 * at an undurable batch's blocks.  Encodes b's header into b->buf and
 * moves its blocks there: the log write (header, WRITE blocks) followed
 * by the DIRECT blocks, each part in record order, so that the log write
 * and each direct run are one write from contiguous memory
 * (vol_alloc_huge says why).  Outside the lock, since the copy (up to
 * 2.5 MiB) may first fault in a huge page.
 */
static void fill(struct vol_batch *b)
{
	uint32_t k = 0, w = 0, d = 0;

	vol_batch_encode(&b->h, b->recs, b->buf);
	for (uint32_t j = 0; j < b->h.nrec; j++) {
		uint32_t kind = b->recs[j].kind;
		uint8_t *slot;

		if (!vol_rec_writes(kind))
			continue;
		slot = kind == VOL_REC_WRITE ? log_block(b, w++) :
					       direct_block(b, d++);
		memcpy(slot, b->data[k], VOL_BLOCK_BYTES);
		free(b->data[k]);
		b->data[k++] = slot;
	}
	VOL_VERIFY(k == b->nblk && w == b->h.ndata && d == b->ndirect);
}

/*
 * Caller holds v->lock.  L1: zones of the write set whose logs share a
 * device that one cache flush makes stable (zone->flush_dev) form a flush
 * domain: each gets its write, and once all of the domain's writes are in,
 * one fdatasync through one of them makes every one that landed stable
 * (complete()).  Six zone folders on one disk then cost one device flush
 * per batch instead of six, which the device would run one after the
 * other.  A zone alone on its device keeps its linked write + fdatasync.
 */
static void plan_domains(const struct vol *v, struct vol_batch *b,
			 uint32_t mask)
{
	for (int z = 0; z < VOL_ZONES; z++)
		b->dom[z] = -1;
	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t dev = v->zones[z].flush_dev;
		uint32_t members = 0;

		if (!(mask & (1u << z)) || !dev || b->dom[z] >= 0)
			continue;
		for (int o = z; o < VOL_ZONES; o++)
			if ((mask & (1u << o)) && v->zones[o].flush_dev == dev)
				members |= 1u << o;
		if (__builtin_popcount(members) < 2)
			continue;
		for (int o = z; o < VOL_ZONES; o++)
			if (members & (1u << o))
				b->dom[o] = (int8_t)z;
		b->dom_members[z] = b->dom_wait[z] = members;
		b->dom_ok[z] = 0;
		b->ops++; /* the domain's flush */
	}
}

/* Caller holds v->lock.  Chooses the write set and queues the batch. */
static uint32_t enlist(struct vol *v, struct vol_batch *b)
{
	uint32_t mask = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];

		if (zone->up && zone->inflight >= VOL_ZONE_MAX_INFLIGHT)
			vol_zone_fail(v, z, -ETIMEDOUT,
				      "lagging too far behind the others");
		if (!zone->up)
			continue;
		mask |= 1u << z;
		zone->inflight++;
		b->pending |= 1u << z;
		b->inject[z] =
			zone->fault; /* fails at its write's completion */
	}
	plan_domains(v, b, mask);
	for (int z = 0; z < VOL_ZONES; z++)
		if (mask & (1u << z))
			b->ops += (b->dom[z] < 0 ? 2 : 1) + direct_ops(b);
	b->h.write_mask = mask;
	b->sent_us = vol_now_us();
	b->sent_ms = b->sent_us / 1000;
	if (v->batches_tail)
		v->batches_tail->next = b;
	else
		v->batches = b;
	v->batches_tail = b;
	VOL_VERIFY(v->ring[b->h.seq % v->log_blocks] == NULL);
	v->ring[b->h.seq % v->log_blocks] = b;
	v->log_head = b->h.pos + b->h.nhdr + b->h.ndata;
	v->undurable++;
	v->live_blocks += b->nblk;
	return mask;
}

/*
 * L2, log thread only: zone z's chain for b's DIRECT blocks, linked
 * ahead of its log write (queued next by the caller): each run's write
 * into its segment, then an fdatasync of every segment file written.  A
 * linked operation starts only once the one before it succeeded, so a
 * zone's log holds b only after its segments hold b's blocks on stable
 * storage; a failure cancels the rest of the chain, the zone leaves the
 * write set (complete()) and b is durable without it.  A zone that
 * cannot open a segment file sends no-ops, and its log write fails.
 */
static void send_direct(struct vol *v, struct vol_batch *b, int z)
{
	uint32_t nd = direct_ops(b), held = 0;
	struct vol_op *ops = &b->dop[(size_t)z * nd];
	struct vol_pgfd fd[VOL_DIRECT_MAX_RUNS];
	int err = b->inject[z];

	b->dfail[z] = 0; /* a rejoined zone's second try */
	while (!err && held < b->ndpgs) {
		err = vol_zone_pgfd(v, &v->zones[z], b->dpgs[held], 1,
				    &fd[held]);
		if (!err)
			held++;
	}
	if (err && !b->inject[z]) {
		while (held)
			vol_zone_pgfd_put(&v->zones[z], b->dpgs[--held]);
		b->dfail[z] = err;
	}
	for (uint32_t i = 0; i < nd; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&v->log_ring);
		const struct vol_drun *run = i < b->ndruns ? &b->druns[i] :
							     NULL;
		uint32_t p = i - b->ndruns;

		VOL_VERIFY(sqe != NULL);
		if (run)
			for (p = 0; b->dpgs[p] != run->lba / VOL_PG_BLOCKS; p++)
				;
		ops[i] = (struct vol_op){
			.b = b,
			.zone = z,
			.kind = run ? 3 : 4,
			.held = !run && !err,
			.len = run ? run->n * VOL_BLOCK_BYTES : 0,
			.pg = b->dpgs[p],
		};
		if (err)
			io_uring_prep_nop(sqe);
		else if (run)
			io_uring_prep_write(
				sqe, fd[p].seg, direct_block(b, run->first),
				run->n * VOL_BLOCK_BYTES,
				run->lba % VOL_PG_BLOCKS * VOL_BLOCK_BYTES);
		else
			io_uring_prep_fsync(sqe, fd[p].seg,
					    IORING_FSYNC_DATASYNC);
		sqe->flags |= IOSQE_IO_LINK | IOSQE_ASYNC;
		io_uring_sqe_set_data(sqe, &ops[i]);
	}
}

/*
 * Log thread only; the zones of mask are the batch's (enlist, or a
 * rejoining zone's own).  It does not hold v->lock meanwhile.
 */
static void send_batch(struct vol *v, struct vol_batch *b, uint32_t mask)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		struct io_uring_sqe *sqe;

		if (!(mask & (1u << z)))
			continue;
		if (b->ndruns)
			send_direct(v, b, z);
		b->op[z][0] = (struct vol_op){ .b = b, .zone = z, .kind = 0 };
		sqe = io_uring_get_sqe(&v->log_ring);
		VOL_VERIFY(sqe != NULL);
		if (b->inject[z] || b->dfail[z])
			io_uring_prep_nop(sqe); /* complete() fails it */
		else
			io_uring_prep_write(
				sqe, v->zones[z].log_fd, b->buf,
				(b->h.nhdr + b->h.ndata) * VOL_BLOCK_BYTES,
				(uint64_t)b->h.pos * VOL_BLOCK_BYTES);
		io_uring_sqe_set_data(sqe, &b->op[z][0]);
		/*
		 * Never issued inline unless the log is a local file system
		 * of a flush domain (ext4, XFS: an O_DIRECT overwrite that
		 * would block is punted by the kernel): a file system that
		 * ignores non-blocking submission (FUSE, some network ones)
		 * would block the log thread in one zone's write, and a slow
		 * zone would then set the pace of all (DESIGN 6).
		 */
		if (!v->zones[z].flush_dev)
			sqe->flags |= IOSQE_ASYNC;
		if (b->dom[z] >= 0)
			continue; /* its domain's flush follows its writes */
		b->op[z][1] = (struct vol_op){ .b = b, .zone = z, .kind = 1 };
		sqe->flags |= IOSQE_IO_LINK;
		sqe = io_uring_get_sqe(&v->log_ring);
		VOL_VERIFY(sqe != NULL);
		io_uring_prep_fsync(sqe, v->zones[z].log_fd,
				    IORING_FSYNC_DATASYNC);
		sqe->flags |= IOSQE_ASYNC;
		io_uring_sqe_set_data(sqe, &b->op[z][1]);
	}
	/* Room for every zone's chain: the ring is empty between submits. */
	VOL_VERIFY(io_uring_submit(&v->log_ring) >= 0);
}

/*
 * Log thread only, caller holds v->lock.  Admit the zones repair asked
 * back (zone->rejoin) at a batch boundary: a zone's done_seq starts at
 * the durable point, since batches up to it are durable without it and
 * it claims none it lacks (V2); every batch not yet durable is sent to
 * it as well, so that a quorum waiting for a fourth zone gets it (writes
 * stalled with three zones resume).  Durable batches it missed reach its
 * segments through materialisation (the materialiser writes every zone
 * of the write set) or, if already materialised, through the WIM bits
 * set for it.
 */
void vol_admit_zones(struct vol *v)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		struct vol_batch *send[VOL_MAX_UNDURABLE_DIRECT + 1];
		int n = 0;

		/* Operations of its last stint still out: not yet. */
		if (!zone->rejoin || zone->up || zone->inflight)
			continue;
		zone->rejoin = 0;
		zone->up = 1;
		zone->err = 0;
		zone->reason[0] = 0;
		zone->done_seq = v->durable_seq;
		for (struct vol_batch *b = v->batches; b; b = b->next) {
			if (b->durable)
				continue;
			VOL_VERIFY(n < VOL_MAX_UNDURABLE_DIRECT + 1);
			b->ops += 2 + direct_ops(b);
			b->dom[z] = -1; /* its own write + fdatasync */
			/*
			 * L2: its resync may write those blocks' segments
			 * while its chain runs, so the materialiser writes
			 * them again there (it holds repair_lock).
			 */
			if (b->ndirect)
				b->late |= 1u << z;
			b->inject[z] = zone->fault;
			b->pending |= 1u << z;
			zone->inflight++;
			send[n++] = b;
		}
		vol_log(VOL_LOG_INFO, "zone %d (%s) is back in the write set",
			z, zone->dirs[0]);
		pthread_cond_broadcast(&v->mat_cv);
		pthread_mutex_unlock(&v->lock);
		for (int i = 0; i < n; i++)
			send_batch(v, send[i], 1u << z);
		pthread_mutex_lock(&v->lock);
	}
}

/* A zombie's last operation completed: its buffers can go. */
static void bury(struct vol *v, struct vol_batch *b)
{
	struct vol_batch **pp = &v->zombies;

	while (*pp != b)
		pp = &(*pp)->next;
	*pp = b->next;
	v->live_blocks -= b->nblk;
	vol_batch_free(b);
	wake_stuck(v);
}

/*
 * Caller holds v->lock; the log is full.  A materialised batch at the
 * tail whose log write some zone has still not finished after
 * VOL_ZONE_LAG_MS holds the log back for everyone: those zones lag past
 * the bound and leave the write set (their stale log positions are
 * theirs alone now), and the batch lives on as a zombie until its
 * operations complete, since they still read its buffers.  The writers
 * then go on at the speed of the others.  Returns 1 while a tail batch
 * is still within its grace period (the caller waits a little).
 */
static int unstick(struct vol *v)
{
	while (v->batches && v->batches->materialised && v->batches->ops) {
		struct vol_batch *b = v->batches;

		/* A completion on its way is not a lag: give it a while. */
		if (vol_now_ms() - b->sent_ms < VOL_ZONE_LAG_MS)
			return 1;
		for (int z = 0; z < VOL_ZONES; z++)
			if (b->pending & (1u << z))
				vol_zone_fail(v, z, -ETIMEDOUT,
					      "lagging: the log needs back "
					      "space it is still writing");
		v->batches = b->next;
		if (!v->batches)
			v->batches_tail = NULL;
		unring(v, b);
		b->zombie = 1;
		b->next = v->zombies;
		v->zombies = b;
	}
	return 0;
}

/* ---- completions ---- */

static void reclaim(struct vol *v)
{
	while (v->batches && v->batches->materialised && !v->batches->ops) {
		struct vol_batch *b = v->batches;

		v->batches = b->next;
		if (!v->batches)
			v->batches_tail = NULL;
		unring(v, b);
		v->live_blocks -= b->nblk;
		vol_batch_free(b);
	}
	wake_stuck(v);
}

/* Caller holds v->lock.  Zone z's copy of b is stable, or not. */
static void sync_done(struct vol *v, struct vol_batch *b, int z, int res)
{
	struct vol_zone *zone = &v->zones[z];

	zone->inflight--;
	b->pending &= ~(1u << z);
	if (res >= 0 && zone->up)
		b->done_mask |= 1u << z;
	else if (res < 0 && res != -ECANCELED)
		vol_zone_fail(v, z, res, "log flush failed");
}

/*
 * Caller holds v->lock.  Leave domain d's flush of b (through zone by)
 * to a thread that waits for durability, which calls fdatasync itself
 * (run_flush).  Through io_uring the call goes to one of its worker
 * threads: waking the worker, and the worker's completion waking the log
 * thread, are two context switches on the path of every commit, which
 * this saves (8 KiB sync commits on the volume alone: 14 % more a
 * second; fsync'ed random writes through FUSE: 8 %).  Only when b
 * cannot become durable without this flush (fewer than W zones up
 * outside the domain), so that a waiter never waits on a slow device
 * more than one flush longer than it would have anyway, and the log
 * thread itself never waits for a device (DESIGN 6).  The waiter gets
 * its own descriptor: a zone's log_fd may be closed by repair meanwhile,
 * and its number given to another file.
 */
static int hand_flush(struct vol *v, struct vol_batch *b, int d, int by)
{
	uint32_t others = vol_up_mask(v) & ~b->dom_members[d];
	int fd;

	if (v->flush_job || !v->flush_takers ||
	    __builtin_popcount(others) >= VOL_WRITE_QUORUM)
		return 0;
	fd = fcntl(v->zones[by].log_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return 0; /* out of descriptors: io_uring does it */
	v->flush_job = &b->op[d][1];
	v->flush_job_fd = fd;
	v->dom_flushes_handed++;
	pthread_cond_broadcast(&v->done_cv);
	return 1;
}

static void complete(struct vol *v, struct vol_op *op, int res);

/*
 * Caller holds v->lock and waits in wait_for().  Runs the flush that
 * hand_flush() left, and completes it as its io_uring completion would.
 */
static void run_flush(struct vol *v)
{
	struct vol_op *op = v->flush_job;
	int fd = v->flush_job_fd, res;

	v->flush_job = NULL;
	pthread_mutex_unlock(&v->lock);
	res = fdatasync(fd) ? -errno : 0;
	if (close(fd) && !res) /* a dup: close only drops it */
		res = -errno;
	pthread_mutex_lock(&v->lock);
	complete(v, op, res);
	vol_check(v);
}

/*
 * Caller holds v->lock.  A write of flush domain d is in (L1).  Once the
 * last one is, one fdatasync through a zone whose write landed flushes
 * the device, so it answers for every member whose write completed
 * before it was issued; the others' fdatasyncs are cancelled.
 */
static void dom_write_done(struct vol *v, struct vol_batch *b, int z, int res)
{
	int d = b->dom[z], by = -1;
	struct io_uring_sqe *sqe;

	b->dom_wait[d] &= ~(1u << z);
	if (res >= 0)
		b->dom_ok[d] |= 1u << z;
	if (b->dom_wait[d])
		return;
	for (int o = 0; o < VOL_ZONES && by < 0 && !b->zombie; o++)
		if ((b->dom_ok[d] & (1u << o)) && v->zones[o].up)
			by = o;
	if (by < 0) {
		for (int o = 0; o < VOL_ZONES; o++)
			if (b->dom_members[d] & (1u << o))
				sync_done(v, b, o, -ECANCELED);
		b->ops--;
		return;
	}
	b->op[d][1] = (struct vol_op){ .b = b, .zone = d, .kind = 2 };
	v->dom_flushes++;
	if (hand_flush(v, b, d, by))
		return;
	sqe = io_uring_get_sqe(&v->log_ring);
	VOL_VERIFY(sqe != NULL);
	io_uring_prep_fsync(sqe, v->zones[by].log_fd, IORING_FSYNC_DATASYNC);
	sqe->flags |= IOSQE_ASYNC;
	io_uring_sqe_set_data(sqe, &b->op[d][1]);
	VOL_VERIFY(io_uring_submit(&v->log_ring) >= 0);
}

static void complete(struct vol *v, struct vol_op *op, int res)
{
	struct vol_batch *b = op->b;
	size_t want = (size_t)(b->h.nhdr + b->h.ndata) * VOL_BLOCK_BYTES;

	if (op->kind == 0) {
		if (b->inject[op->zone])
			res = b->inject[op->zone];
		else if (b->dfail[op->zone])
			res = b->dfail[op->zone];
		else if (res >= 0 && (size_t)res != want)
			res = -EIO;
		if (res >= 0 && b->sent_us && ++b->written == VOL_WRITE_QUORUM)
			vol_hist_add(&v->commit_hist[VOL_CP_WRITTEN],
				     vol_now_us() - b->sent_us);
		if (res < 0)
			vol_zone_fail(v, op->zone, res,
				      b->inject[op->zone] ?
					      "injected fault" :
				      b->dfail[op->zone] ?
					      "cannot open a segment file" :
					      "log write failed");
		if (b->dom[op->zone] >= 0)
			dom_write_done(v, b, op->zone, res);
	} else if (op->kind == 3) {
		if (res >= 0 && (uint32_t)res != op->len &&
		    !b->inject[op->zone] && !b->dfail[op->zone])
			res = -EIO;
		if (res < 0 && res != -ECANCELED)
			vol_zone_fail(v, op->zone, res, "segment write failed");
	} else if (op->kind == 4) {
		if (op->held)
			vol_zone_pgfd_put(&v->zones[op->zone], op->pg);
		if (res < 0 && res != -ECANCELED)
			vol_zone_fail(v, op->zone, res, "segment flush failed");
	} else if (op->kind == 1) {
		sync_done(v, b, op->zone, res);
	} else {
		for (int z = 0; z < VOL_ZONES; z++)
			if (b->dom_members[op->zone] & (1u << z))
				sync_done(v, b, z,
					  b->dom_ok[op->zone] & (1u << z) ?
						  res :
						  -ECANCELED);
	}
	b->ops--;
	if (b->zombie) {
		if (!b->ops)
			bury(v, b);
		return;
	}
	advance(v);
	/* L2: the materialiser waits for every chain of the write set. */
	if (b->ndirect && b->durable && !b->dsettled &&
	    !(b->pending & vol_up_mask(v))) {
		b->dsettled = 1;
		pthread_cond_broadcast(&v->mat_cv);
	}
	if (!b->ops) {
		if (b->materialised)
			reclaim(v);
		wake_stuck(v); /* unstick(), or the drain at close */
	}
}

/* ---- the log thread ---- */

/* Queue the read of log_efd that a kick completes (vol_log_kick). */
static void arm_kick(struct vol *v)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&v->log_ring);

	VOL_VERIFY(sqe != NULL);
	io_uring_prep_read(sqe, v->log_efd, &v->log_kick_buf,
			   sizeof(v->log_kick_buf), 0);
	io_uring_sqe_set_data(sqe, &v->log_kick_buf);
	VOL_VERIFY(io_uring_submit(&v->log_ring) >= 0);
}

/* Caller holds v->lock.  Every completion that is in, in order. */
static void reap(struct vol *v)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&v->log_ring, &cqe) == 0) {
		struct vol_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&v->log_ring, cqe);
		if ((void *)op == &v->log_kick_buf) {
			/* An eventfd read takes the count: it cannot fail. */
			VOL_VERIFY(res == sizeof(v->log_kick_buf));
			arm_kick(v);
			continue;
		}
		complete(v, op, res);
		vol_check(v);
	}
}

/*
 * Caller holds v->lock.  Wait, without the lock, until a completion is
 * in, a kick came or ms passed (-1: no bound).  A kick given between the
 * unlock and the wait is not lost: it completes the queued read, and the
 * wait returns at once.
 */
static void log_sleep(struct vol *v, int64_t ms)
{
	struct __kernel_timespec ts = {
		.tv_sec = ms / 1000,
		.tv_nsec = ms % 1000 * 1000000,
	};
	struct io_uring_cqe *cqe;
	int ret;

	v->log_asleep = 1;
	pthread_mutex_unlock(&v->lock);
	ret = io_uring_wait_cqe_timeout(&v->log_ring, &cqe,
					ms < 0 ? NULL : &ts);
	pthread_mutex_lock(&v->lock);
	v->log_asleep = 0;
	VOL_VERIFY(ret == 0 || ret == -ETIME || ret == -EINTR ||
		   ret == -EAGAIN);
}

/* Milliseconds from now until deadline (vol_deadline), 0 if past. */
static int64_t ms_left(const struct timespec *deadline)
{
	struct timespec now;
	int64_t ms;

	clock_gettime(CLOCK_REALTIME, &now);
	ms = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000 +
	     (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? ms : 0;
}

/* Caller holds v->lock.  Has close waited long enough for the queue? */
static int stop_expired(const struct vol *v)
{
	return ms_left(&v->stop_deadline) == 0;
}

/* Caller holds v->lock.  Are operations of any batch still running? */
static int io_busy(const struct vol *v)
{
	for (const struct vol_batch *b = v->batches; b; b = b->next)
		if (b->ops)
			return 1;
	return v->zombies != NULL;
}

/*
 * Caller holds v->lock.  The log thread must outlive its requests: a
 * linked fdatasync still waiting when its submitting thread exits is
 * failed by the kernel (-EFAULT).  So it drains them (bounded: a hung
 * zone gives up after 30 s, and the volume is then in error and its
 * buffers are never freed), and fails whatever can no longer become
 * durable, so no committer waits forever.
 */
static void drain(struct vol *v)
{
	struct timespec ts;

	vol_deadline(&ts, 30000);
	for (reap(v); io_busy(v); reap(v)) {
		int64_t ms = ms_left(&ts);

		if (ms == 0) {
			vol_log(VOL_LOG_ERR,
				"zone I/O still pending after 30 s at close");
			v->io_stuck = 1;
			vol_fail_all(v, -EIO);
			return;
		}
		log_sleep(v, ms);
	}
	if (v->undurable)
		vol_fail_all(v, -EIO);
}

/*
 * One thread both sends the batches and takes their completions.  The
 * kernel completes an O_DIRECT write through work queued for the thread
 * that submitted it, which wakes that thread if it sleeps; a submitter
 * apart from the thread that waits for the completions was woken for
 * every write only to pass it on, a context switch and a hop on every
 * commit's path.
 */
static void *log_thread(void *arg)
{
	struct vol *v = arg;

	pthread_mutex_lock(&v->lock);
	arm_kick(v);
	for (;;) {
		uint32_t n, nrec, ndata, ndirect = 0;
		struct vol_batch *b;
		uint32_t mask;
		int64_t pos = -1, sleep_ms = -1;
		int grace = 0, placed = 0;

		reap(v);
		vol_admit_zones(v);
		n = gather(v, &nrec, &ndata);
		if (n && !v->err && v->undurable < VOL_MAX_UNDURABLE_DIRECT) {
			ndirect = choose_direct(v, n);
			ndata -= ndirect;
		}
		/* Bulk writes in place may have more batches in flight. */
		if (n && !v->err &&
		    (v->undurable < VOL_MAX_UNDURABLE ||
		     (ndirect && v->undurable < VOL_MAX_UNDURABLE_DIRECT))) {
			placed = 1;
			pos = log_place(v, vol_batch_nhdr(nrec) + ndata);
			if (pos < 0) {
				grace = unstick(v);
				pos = log_place(v,
						vol_batch_nhdr(nrec) + ndata);
			}
			/* L2: memory, as the log would bound it (live_blocks) */
			if (ndirect &&
			    v->live_blocks + ndata + ndirect > v->log_blocks)
				pos = -1;
		}
		if (pos < 0) {
			if (v->stopping && !v->queue)
				break;
			if (v->stopping && stop_expired(v)) {
				vol_log(VOL_LOG_ERR,
					"writes still waiting 30 s into "
					"close: failing them with EIO");
				vol_fail_all(v, -EIO);
				continue;
			}
			if (placed) { /* the log is full */
				v->log_full = 1;
				pthread_cond_broadcast(&v->mat_cv);
			}
			v->submit_stuck = n != 0;
			if (grace) /* look at the laggard again soon */
				sleep_ms = VOL_ZONE_LAG_MS / 10;
			else if (v->stopping)
				sleep_ms = ms_left(&v->stop_deadline);
			log_sleep(v, sleep_ms);
			v->submit_stuck = 0;
			continue;
		}
		b = build(v, n, nrec, ndata, ndirect, (uint32_t)pos);
		mask = enlist(v, b);
		pthread_mutex_unlock(&v->lock);
		fill(b);
		send_batch(v, b, mask);
		pthread_mutex_lock(&v->lock);
		advance(v); /* a batch sent to no zone can never be durable */
	}
	drain(v);
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* Caller holds v->lock: the materialiser frees what it finished. */
void vol_log_reclaim(struct vol *v)
{
	reclaim(v);
}

/*
 * Caller holds v->lock.  Wakes the log thread if it sleeps: the eventfd
 * write completes the read it keeps queued.  A log thread at work looks
 * at the queue and the log again before it sleeps, so it needs none.
 */
void vol_log_kick(struct vol *v)
{
	static const uint64_t one = 1;

	if (!v->log_asleep)
		return;
	v->log_asleep = 0;
	VOL_VERIFY(write(v->log_efd, &one, sizeof(one)) == sizeof(one));
}

int vol_log_start(struct vol *v)
{
	int ret;

	v->ring = calloc(v->log_blocks, sizeof(*v->ring));
	if (!v->ring)
		return -ENOMEM;
	v->log_efd = eventfd(0, EFD_CLOEXEC);
	if (v->log_efd < 0)
		return -errno;
	ret = vol_ring_init(&v->log_ring);
	if (ret < 0)
		goto out_efd;
	ret = vol_thread_start(&v->log_thread, "sixfold-log", log_thread, v);
	if (ret)
		goto out_ring;
	return 0;
out_ring:
	io_uring_queue_exit(&v->log_ring);
out_efd:
	close(v->log_efd);
	v->log_efd = -1;
	return ret;
}

/* Stop accepting work; the log thread drains (drain()) and exits. */
void vol_log_stop(struct vol *v)
{
	pthread_mutex_lock(&v->lock);
	v->stopping = 1;
	vol_deadline(&v->stop_deadline, 30000);
	vol_log_kick(v);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->log_thread, NULL);
	io_uring_queue_exit(&v->log_ring);
	close(v->log_efd);
	v->log_efd = -1;
}

int vol_debug_write_timeout(struct vol *v, int64_t ms)
{
	if (ms < -1)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	v->write_timeout_ms = ms;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

int vol_debug_zone_fault(struct vol *v, int zone, int err)
{
	if (zone < 0 || zone >= VOL_ZONES || err > 0)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	v->zones[zone].fault = err;
	pthread_mutex_unlock(&v->lock);
	return 0;
}
