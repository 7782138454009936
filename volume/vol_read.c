/*
 * vol_read.c - reading a block: the newest durable version, verified.
 *
 * Layer: volume/.  A durable record not yet materialised is served from
 * memory.  Otherwise the meta entries (64 bytes, mostly in the page
 * cache) of R = 3 zones are read, starting at a rotating zone so that
 * reads spread; the highest LSN among them is the block's version, since
 * the newest durable version is on W zones and W + R > N (V9).  Its
 * ciphertext is read from one zone that has that version and checked
 * (CRC, then the AEAD tag under (uuid, lba, lsn)); a bad copy sends the
 * read to the next zone with that version.  So a copy that is damaged,
 * or authentic but old (a zone that missed writes, a disk that lost
 * them, a zone restored from a backup), is never returned.
 *
 * With fewer than R valid answers (copies damaged, zones gone) the
 * newest answer is still used if a zone the write-intent map calls
 * current gave it: that zone has every write of the region.
 *
 * A slow zone is asked last: each zone's meta read time is averaged,
 * and a zone far slower than the median goes to the end of the order
 * (DESIGN 6: a slow zone is avoided), except on one read in
 * SLOW_SAMPLE, which keeps its average fresh.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "volume/vol_i.h"

#define SLOW_SAMPLE 128 /* reads between two that ask a slow zone too */
#define SLOW_FACTOR 4 /* slow: this many times the median, */
#define SLOW_MIN_US 1000 /* plus this */

/* A read of the zone took us microseconds: into its moving average. */
static void note_speed(struct vol_zone *zone, uint64_t us)
{
	uint64_t avg =
		atomic_load_explicit(&zone->read_us, memory_order_relaxed);

	if (us > UINT32_MAX)
		us = UINT32_MAX;
	atomic_store_explicit(&zone->read_us, (uint32_t)((avg * 7 + us) / 8),
			      memory_order_relaxed);
}

/* vol_debug_zone_read_fault: the error zone's reads get, or 0. */
static int read_fault(struct vol_zone *zone)
{
	return atomic_load_explicit(&zone->read_fault, memory_order_relaxed);
}

int vol_debug_zone_read_fault(struct vol *v, int zone, int err)
{
	if (zone < 0 || zone >= VOL_ZONES || err > 0)
		return -EINVAL;
	atomic_store_explicit(&v->zones[zone].read_fault, err,
			      memory_order_relaxed);
	return 0;
}

/* Newest pending version of lba, copied out under the lock (its
 * ciphertext only if cipher is not NULL: a test for presence). */
static int pend_lookup(struct vol *v, uint64_t lba, struct vol_rec *rec,
		       uint8_t *cipher)
{
	const struct vol_pend *best = NULL;
	uint32_t h = (uint32_t)((lba * 0x9E3779B97F4A7C15ull) >> 48) &
		     (VOL_PEND_BUCKETS - 1);

	pthread_rwlock_rdlock(&v->pend_lock);
	for (const struct vol_pend *p = v->pend[h]; p; p = p->next)
		if (p->lba == lba && vol_rec_writes(p->rec->kind) &&
		    (!best || p->lsn > best->lsn))
			best = p;
	for (const struct vol_pend *p = v->pend[0]; p; p = p->next)
		if (p->rec->kind == VOL_REC_DISCARD && lba >= p->lba &&
		    lba - p->lba < p->rec->nblocks &&
		    (!best || p->lsn > best->lsn))
			best = p;
	if (best) {
		*rec = *best->rec;
		if (best->cipher && cipher)
			memcpy(cipher, best->cipher, VOL_BLOCK_BYTES);
	}
	pthread_rwlock_unlock(&v->pend_lock);
	return best != NULL;
}

/* What a zone says about lba. */
struct answer {
	int zone;
	int clean; /* the write-intent map calls it current */
	struct vol_meta m; /* state EMPTY: never written there */
};

enum { META_OK, META_BAD, META_SKIP };

static int read_meta(struct vol *v, int z, uint64_t lba, struct answer *a)
{
	struct vol_zone *zone = &v->zones[z];
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	uint8_t ent[VOL_META_BYTES];
	struct vol_pgfd fd;
	uint64_t t0;
	ssize_t n;
	int ret;

	if (!zone->reachable || zone->fault)
		return META_SKIP;
	a->zone = z;
	a->clean = !vol_wim_test(v, z, lba);
	/* A zone being rebuilt may lack copies that made a version durable
	 * (vol_repair.c R4): not asked where it is not done yet. */
	if (zone->rebuilding && !a->clean)
		return META_SKIP;
	memset(&a->m, 0, sizeof(a->m));
	ret = vol_zone_pgfd(v, zone, pg, 0, &fd);
	if (ret == -ENOENT)
		return META_OK; /* no file: never written in this PG */
	if (ret)
		return META_SKIP;
	t0 = vol_now_us();
	n = pread(fd.meta, ent, sizeof(ent), (off_t)off * VOL_META_BYTES);
	if (read_fault(zone))
		n = -1;
	note_speed(zone, vol_now_us() - t0);
	vol_zone_pgfd_put(zone, pg);
	if (n >= 0 && n < (ssize_t)sizeof(ent))
		memset(ent + n, 0, sizeof(ent) - n);
	if (n < 0 || vol_meta_decode(ent, lba, &a->m))
		return META_BAD;
	return META_OK;
}

/* The ciphertext a WRITTEN answer names, checked and opened. */
static int read_data(struct vol *v, const struct answer *a, uint64_t lba,
		     uint8_t *out)
{
	uint8_t blk[VOL_BLOCK_BYTES] __attribute__((aligned(4096)));
	struct vol_zone *zone = &v->zones[a->zone];
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	struct vol_pgfd fd;
	uint64_t t0;
	ssize_t n;

	if (vol_zone_pgfd(v, zone, pg, 0, &fd))
		return -EIO;
	t0 = vol_now_us();
	n = pread(fd.seg, blk, sizeof(blk), (off_t)off * VOL_BLOCK_BYTES);
	if (read_fault(zone))
		n = -1;
	note_speed(zone, vol_now_us() - t0);
	vol_zone_pgfd_put(zone, pg);
	if (n != (ssize_t)sizeof(blk) ||
	    (vol_crc32c(~0u, blk, sizeof(blk)) ^ ~0u) != a->m.data_crc)
		return -EBADMSG;
	return key_open_block(v->kc, lba, a->m.lsn, blk, a->m.nonce, a->m.tag,
			      out);
}

struct survey {
	struct answer ans[VOL_ZONES];
	int n; /* answers */
	int next; /* zones asked so far, in order */
	int order[VOL_ZONES]; /* rotating start, slow zones last */
	int bad; /* damaged meta entries met */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The order zones are asked in: from a rotating start, slow ones last. */
static void order_zones(struct vol *v, struct survey *sv, unsigned start)
{
	uint32_t us[VOL_ZONES], sorted[VOL_ZONES], limit;
	int n = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		sorted[z] = us[z] = atomic_load_explicit(&v->zones[z].read_us,
							 memory_order_relaxed);
	qsort(sorted, VOL_ZONES, sizeof(sorted[0]), cmp_u32);
	limit = sorted[VOL_ZONES / 2] * SLOW_FACTOR + SLOW_MIN_US;
	if (start % SLOW_SAMPLE == 0)
		limit = UINT32_MAX;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < VOL_ZONES; i++) {
			int z = (int)((start + (unsigned)i) % VOL_ZONES);

			if ((us[z] > limit) == pass)
				sv->order[n++] = z;
		}
}

/* Ask zones in turn until `want` valid answers or none are left. */
static void ask(struct vol *v, uint64_t lba, struct survey *sv, int want)
{
	while (sv->n < want && sv->next < VOL_ZONES) {
		int z = sv->order[sv->next++];

		switch (read_meta(v, z, lba, &sv->ans[sv->n])) {
		case META_OK:
			sv->n++;
			break;
		case META_BAD:
			sv->bad++;
			vol_heal_push(v, lba);
			break;
		}
	}
}

/* The newest answer, if it may be believed (see the file comment). */
static const struct answer *newest(const struct survey *sv)
{
	const struct answer *best = NULL;
	int vouched = 0;

	for (int i = 0; i < sv->n; i++)
		if (!best || sv->ans[i].m.lsn > best->m.lsn)
			best = &sv->ans[i];
	if (!best)
		return NULL;
	for (int i = 0; i < sv->n; i++)
		vouched |= sv->ans[i].clean && sv->ans[i].m.lsn == best->m.lsn;
	if (sv->n >= VOL_READ_QUORUM ||
	    (vouched && best->m.state != VOL_META_EMPTY))
		return best;
	return NULL;
}

/* The zones' newest version of lba into out; *lsn = 0: never written. */
static int read_zones(struct vol *v, uint64_t lba, uint8_t *out, uint64_t *lsn,
		      int *bad)
{
	struct survey sv = { 0 };
	const struct answer *best;
	int ret = -EIO;

	order_zones(v, &sv, atomic_fetch_add((_Atomic unsigned *)&v->rr, 1));
	ask(v, lba, &sv, VOL_READ_QUORUM);
	best = newest(&sv);
	if (!best)
		goto out;
	*lsn = best->m.lsn;
	if (best->m.state != VOL_META_WRITTEN) { /* EMPTY or tombstone */
		memset(out, 0, VOL_BLOCK_BYTES);
		ret = 0;
		goto out;
	}
	/* Any zone holding that version will do; ask more if need be. */
	for (int i = 0; ret; i++) {
		if (i == sv.n)
			ask(v, lba, &sv, sv.n + 1);
		if (i == sv.n)
			break; /* no zone left to ask */
		if (sv.ans[i].m.lsn != *lsn ||
		    sv.ans[i].m.state != VOL_META_WRITTEN)
			continue;
		ret = read_data(v, &sv.ans[i], lba, out);
		if (ret) {
			sv.bad++;
			vol_heal_push(v, lba);
		}
	}
out:
	*bad += sv.bad;
	return ret ? -EIO : 0;
}

/* A pending record's plaintext (our own memory: it must open). */
static void open_pending(struct vol *v, uint64_t lba, const struct vol_rec *rec,
			 const uint8_t *cipher, void *buf)
{
	if (rec->kind == VOL_REC_DISCARD) {
		memset(buf, 0, VOL_BLOCK_BYTES);
		return;
	}
	VOL_VERIFY(key_open_block(v->kc, lba, rec->lsn, cipher, rec->nonce,
				  rec->tag, buf) == 0);
}

/*
 * Read-write: everything pending is newer than any segment (recovery
 * applied the rest), so memory answers first.  Read-only: recovery wrote
 * nothing and the log may hold older laps too, so the newer of memory
 * and zones wins.
 */
int vol_read(struct vol *v, uint64_t lba, void *buf)
{
	uint8_t cipher[VOL_BLOCK_BYTES];
	struct vol_rec rec;
	uint64_t lsn = 0;
	int ret = -EIO, bad = 0, pend = 0;

	if (lba >= v->max_blocks)
		return -ENOSPC;
	/*
	 * A materialisation can finish between the memory lookup and the
	 * zone read (a torn meta entry then looks bad): look again.
	 */
	for (int attempt = 0; attempt < 3 && ret; attempt++) {
		pend = pend_lookup(v, lba, &rec, cipher);
		if (pend && !v->readonly) {
			open_pending(v, lba, &rec, cipher, buf);
			return 0;
		}
		ret = read_zones(v, lba, buf, &lsn, &bad);
		if (pend && (ret || lsn < rec.lsn)) {
			open_pending(v, lba, &rec, cipher, buf);
			ret = 0;
		}
	}
	if (bad) {
		pthread_mutex_lock(&v->lock);
		v->bad_copies += bad;
		pthread_mutex_unlock(&v->lock);
	}
	if (ret)
		vol_log(VOL_LOG_ERR,
			"block %llu: no good copy in any reachable zone "
			"(%d damaged)",
			(unsigned long long)lba, bad);
	return ret;
}

/* ---- reads in parallel ---- */

/*
 * A reader's own ring, so that a run's R meta reads and its ciphertext
 * read go to the zones at once: one device round trip instead of four
 * one after another; and with them those of the other runs of a file
 * read, up to RUNS_AT_ONCE (runs_read).  Reads are issued inline, not
 * punted to io_uring's workers: on ext4 or XFS an O_DIRECT read, and a
 * buffered one through the page cache, is queued without blocking; a
 * zone file system that blocks instead (FUSE) makes them one after
 * another, as pread did.  A thread that cannot have a ring (io_uring
 * refused) uses pread.  The ring lives as long as the thread (FUSE's
 * request threads come and go) and is closed by the key's destructor.
 */
#define PAR_MAX (VOL_READ_QUORUM + 1) /* one run's reads: R metas, cipher */
#define RUNS_AT_ONCE 4 /* runs whose reads go out together (1 MiB) */
#define PAR_BATCH (RUNS_AT_ONCE * PAR_MAX)
#define PAR_RING_ENTRIES 16

struct par {
	int fd;
	void *buf;
	size_t len;
	off_t off;
	int zone; /* whose speed the read's time goes to */
	ssize_t res; /* bytes or -errno */
};

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static int ring_key_ok;
static __thread struct io_uring ring_mine;
static __thread int ring_state; /* 0 none yet, 1 ready, -1 refused */

static void ring_drop(void *ring)
{
	io_uring_queue_exit(ring);
}

static void ring_key_make(void)
{
	ring_key_ok = pthread_key_create(&ring_key, ring_drop) == 0;
}

static struct io_uring *reader_ring(void)
{
	if (ring_state)
		return ring_state > 0 ? &ring_mine : NULL;
	ring_state = -1;
	(void)pthread_once(&ring_once, ring_key_make);
	if (!ring_key_ok ||
	    io_uring_queue_init(PAR_RING_ENTRIES, &ring_mine, 0) < 0)
		return NULL;
	if (pthread_setspecific(ring_key, &ring_mine)) {
		io_uring_queue_exit(&ring_mine);
		return NULL;
	}
	ring_state = 1;
	return &ring_mine;
}

/* Submit what is queued: how many the kernel took (all, or it failed). */
static int par_submit(struct io_uring *ring, int queued)
{
	int taken = 0;

	while (taken < queued) {
		int ret = io_uring_submit(ring);

		if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
			continue;
		if (ret <= 0)
			break;
		taken += ret;
	}
	return taken;
}

/* Every read of p[0..n) done, each with its result in res. */
static void par_run(struct vol *v, struct par *p, int n)
{
	struct io_uring *ring = reader_ring();
	uint64_t t0 = vol_now_us();
	int queued = 0, taken = 0;

	VOL_VERIFY(n <= PAR_BATCH && PAR_BATCH <= PAR_RING_ENTRIES);
	for (; ring && queued < n; queued++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		VOL_VERIFY(sqe != NULL); /* the ring is empty between calls */
		io_uring_prep_read(sqe, p[queued].fd, p[queued].buf,
				   (unsigned)p[queued].len,
				   (uint64_t)p[queued].off);
		io_uring_sqe_set_data64(sqe, (uint64_t)queued);
	}
	if (ring)
		taken = par_submit(ring, queued);
	for (int i = 0; i < taken; i++) {
		struct io_uring_cqe *cqe;
		struct par *d;
		int ret;

		do
			ret = io_uring_wait_cqe(ring, &cqe);
		while (ret == -EINTR || ret == -EAGAIN);
		/* Returning with reads in flight would let the kernel write
		 * into buffers the caller reuses. */
		VOL_VERIFY(ret == 0);
		d = &p[cqe->user_data];
		d->res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		note_speed(&v->zones[d->zone], vol_now_us() - t0);
		if (read_fault(&v->zones[d->zone]))
			d->res = read_fault(&v->zones[d->zone]);
	}
	if (taken < queued) {
		/* The kernel refused the rest: drop the ring, and with it
		 * the reads still queued in it; this thread uses pread. */
		io_uring_queue_exit(ring);
		(void)pthread_setspecific(ring_key, NULL);
		ring_state = -1;
	}
	for (int i = taken; i < n; i++) {
		uint64_t t = vol_now_us();

		p[i].res = pread(p[i].fd, p[i].buf, p[i].len, p[i].off);
		if (p[i].res < 0)
			p[i].res = -errno;
		note_speed(&v->zones[p[i].zone], vol_now_us() - t);
		if (read_fault(&v->zones[p[i].zone]))
			p[i].res = read_fault(&v->zones[p[i].zone]);
	}
}

/* ---- runs of blocks (file reads) ---- */

#define RUN_MAX 64u /* blocks a run reads at once (bits of a mask) */

/*
 * Take a zone for a run's meta read: 1 with its PG's files held (the read
 * is due), 0 if it has answered already (no file: never written in this
 * PG, so ent is zeros), -1 if it may not be asked (unreachable, faulted,
 * or rebuilding the run's blocks, vol_repair.c R4).
 */
static int run_take(struct vol *v, const struct vol_zone *zone, uint64_t lba,
		    uint32_t n, uint8_t *ent, struct vol_pgfd *fd)
{
	int ret;

	if (!zone->reachable || zone->fault ||
	    (zone->rebuilding && (vol_wim_test(v, zone->idx, lba) ||
				  vol_wim_test(v, zone->idx, lba + n - 1))))
		return -1;
	ret = vol_zone_pgfd(v, (struct vol_zone *)zone, lba / VOL_PG_BLOCKS, 0,
			    fd);
	if (ret == -ENOENT) {
		memset(ent, 0, (size_t)n * VOL_META_BYTES);
		return 0;
	}
	return ret ? -1 : 1;
}

/*
 * A run being read: n blocks from lba, in one PG.  Its meta entries come
 * from R zones (zones[0..got)), read together with a guess at the
 * ciphertext: the run from the first of them that has the PG, which is
 * where run_open reads it from whenever the zones agree (guess = that
 * zone, guess_res its result; -1 if none was read).  next is the place
 * in the zone order where a pass that needs more zones goes on.
 */
struct run {
	uint64_t lba;
	uint32_t n;
	uint64_t slow; /* bit i: block lba + i is left to vol_read */
	int order[VOL_ZONES]; /* the zones in the order they are asked */
	int next;
	int got;
	int zones[VOL_READ_QUORUM];
	int guess;
	ssize_t guess_res;
	uint8_t *cipher; /* n blocks */
	uint8_t (*ents)[RUN_MAX * VOL_META_BYTES]; /* R of them */
};

static void run_init(struct run *r, uint64_t lba, uint32_t n, uint8_t *cipher,
		     uint8_t (*ents)[RUN_MAX * VOL_META_BYTES])
{
	*r = (struct run){ .lba = lba,
			   .n = n,
			   .guess = -1,
			   .guess_res = -EIO,
			   .cipher = cipher,
			   .ents = ents };
}

/* The order its zones are asked in: only for a run read from them. */
static void run_order(struct vol *v, struct run *r)
{
	struct survey sv;

	order_zones(v, &sv, atomic_fetch_add((_Atomic unsigned *)&v->rr, 1));
	memcpy(r->order, sv.order, sizeof(r->order));
}

/*
 * Queue one pass of a run's reads into p[*np..]: meta reads from the next
 * zones in its order that may be asked, until R have answered or are
 * asked (a zone without the PG answers at once, with zeros), and the
 * ciphertext from the first of them.  slot[j] is the ents index p[j]
 * fills, -1 for the ciphertext.
 */
static void run_queue(struct vol *v, struct run *r, struct par *p, int *slot,
		      int *np)
{
	uint64_t off = r->lba % VOL_PG_BLOCKS;
	size_t len = (size_t)r->n * VOL_META_BYTES;

	for (; r->next < VOL_ZONES && r->got < VOL_READ_QUORUM; r->next++) {
		struct vol_zone *zone = &v->zones[r->order[r->next]];
		struct vol_pgfd fd;
		int ret = run_take(v, zone, r->lba, r->n, r->ents[r->got], &fd);

		if (ret == 0)
			r->zones[r->got++] = zone->idx;
		if (ret <= 0)
			continue;
		if (r->guess < 0) {
			r->guess = zone->idx;
			p[*np] = (struct par){ fd.seg,
					       r->cipher,
					       (size_t)r->n * VOL_BLOCK_BYTES,
					       (off_t)(off * VOL_BLOCK_BYTES),
					       zone->idx,
					       0 };
			slot[(*np)++] = -1;
		}
		p[*np] = (struct par){ fd.meta,	  r->ents[r->got],
				       len,	  (off_t)(off * VOL_META_BYTES),
				       zone->idx, 0 };
		slot[(*np)++] = r->got;
		r->zones[r->got++] = zone->idx;
	}
}

/*
 * The pass's reads p[0..np) are done: release their PG files, zero the
 * unwritten tail of each entry read, and drop the zones whose meta read
 * failed (the next pass asks others in their place).  Returns how many
 * were dropped.
 */
static int run_collect(struct vol *v, struct run *r, const struct par *p,
		       const int *slot, int np)
{
	uint64_t pg = r->lba / VOL_PG_BLOCKS;
	size_t len = (size_t)r->n * VOL_META_BYTES;
	int dropped = 0;

	for (int j = 0; j < np; j++) {
		if (slot[j] < 0) {
			r->guess_res = p[j].res;
			continue;
		}
		vol_zone_pgfd_put(&v->zones[p[j].zone], pg);
		if (p[j].res >= 0) /* zero the unwritten tail */
			memset(r->ents[slot[j]] + p[j].res, 0,
			       len - (size_t)p[j].res);
	}
	for (int j = np - 1; j >= 0; j--) { /* drop failed zones */
		if (slot[j] < 0 || p[j].res >= 0)
			continue;
		for (int k = slot[j]; k + 1 < r->got; k++) {
			memcpy(r->ents[k], r->ents[k + 1], len);
			r->zones[k] = r->zones[k + 1];
		}
		r->got--;
		dropped++;
	}
	return dropped;
}

/* Passes until R zones answered or none is left to ask. */
static void run_finish_metas(struct vol *v, struct run *r)
{
	while (r->next < VOL_ZONES && r->got < VOL_READ_QUORUM) {
		struct par p[PAR_MAX];
		int slot[PAR_MAX], np = 0;

		run_queue(v, r, p, slot, &np);
		par_run(v, p, np);
		(void)run_collect(v, r, p, slot, np);
	}
}

/*
 * The run from one zone that holds the newest version of every written
 * block (V9 over the R answers, as read_zones decides per block), its
 * meta entries read.  Blocks it cannot settle (a damaged entry, no
 * common zone, a bad copy) are left to vol_read: their bit is set in
 * r->slow.
 */
static void run_open(struct vol *v, struct run *r, uint8_t *out)
{
	struct vol_meta m[VOL_READ_QUORUM][RUN_MAX];
	int best[RUN_MAX], from = -1, fits;
	uint64_t pg = r->lba / VOL_PG_BLOCKS, off = r->lba % VOL_PG_BLOCKS;
	uint32_t n = r->n;
	uint64_t *slow = &r->slow;
	struct vol_pgfd fd;
	ssize_t got = r->guess_res;

	if (r->got < VOL_READ_QUORUM) {
		*slow = ~0ull;
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		best[i] = -1;
		for (int k = 0; k < VOL_READ_QUORUM; k++) {
			if (vol_meta_decode(r->ents[k] + i * VOL_META_BYTES,
					    r->lba + i, &m[k][i])) {
				*slow |= 1ull << i;
				break;
			}
			if (best[i] < 0 || m[k][i].lsn > m[best[i]][i].lsn)
				best[i] = k;
		}
		if (*slow & (1ull << i))
			continue;
		if (m[best[i]][i].state != VOL_META_WRITTEN)
			memset(out + (size_t)i * VOL_BLOCK_BYTES, 0,
			       VOL_BLOCK_BYTES); /* never written, or freed */
	}
	/* The first zone (in read order) with every newest written copy. */
	for (int k = 0; k < VOL_READ_QUORUM && from < 0; k++) {
		fits = 1;
		for (uint32_t i = 0; i < n && fits; i++)
			if (!(*slow & (1ull << i)) &&
			    m[best[i]][i].state == VOL_META_WRITTEN &&
			    (m[k][i].state != VOL_META_WRITTEN ||
			     m[k][i].lsn != m[best[i]][i].lsn))
				fits = 0;
		if (fits)
			from = k;
	}
	if (from < 0) {
		*slow = ~0ull;
		return;
	}
	if (r->zones[from] != r->guess) { /* the zones disagree: read again */
		if (vol_zone_pgfd(v, &v->zones[r->zones[from]], pg, 0, &fd)) {
			*slow = ~0ull;
			return;
		}
		got = pread(fd.seg, r->cipher, (size_t)n * VOL_BLOCK_BYTES,
			    (off_t)off * VOL_BLOCK_BYTES);
		vol_zone_pgfd_put(&v->zones[r->zones[from]], pg);
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct vol_meta *b = &m[from][i];
		const uint8_t *c = r->cipher + (size_t)i * VOL_BLOCK_BYTES;

		if ((*slow & (1ull << i)) ||
		    m[best[i]][i].state != VOL_META_WRITTEN)
			continue;
		/*
		 * No CRC32C here: the tag authenticates the same bytes and
		 * more (uuid, LBA, LSN), and a block whose copy fails it
		 * goes to vol_read, which asks the other zones.  Sequential
		 * reads are bound by the CPU, and the CRC cost 5 % of it.
		 */
		if (got < (ssize_t)((i + 1) * VOL_BLOCK_BYTES) ||
		    key_open_block(v->kc, r->lba + i, b->lsn, c, b->nonce,
				   b->tag, out + (size_t)i * VOL_BLOCK_BYTES))
			*slow |= 1ull << i; /* vol_read finds the bad copy */
	}
}

/* Some of the run's blocks are to be read from the zones. */
static int run_wanted(const struct run *r)
{
	return (~r->slow & (r->n == RUN_MAX ? ~0ull : (1ull << r->n) - 1)) != 0;
}

/*
 * Runs r[0..nr) (at most RUNS_AT_ONCE) into out, one after another in
 * the volume.  The first pass of every run's reads goes out in one
 * submission, so that a 1 MiB read waits for one round trip to the
 * zones, not four one after another; a run whose pass lost a zone
 * finishes on its own.  Then each run is opened, and the blocks it left
 * are read one by one.
 */
static int runs_read(struct vol *v, struct run *r, unsigned nr, uint8_t *out)
{
	struct par p[PAR_BATCH];
	int slot[PAR_BATCH], first[RUNS_AT_ONCE + 1], np = 0, ret = 0;

	VOL_VERIFY(nr <= RUNS_AT_ONCE);
	for (unsigned k = 0; k < nr; k++) {
		first[k] = np;
		if (run_wanted(&r[k])) {
			run_order(v, &r[k]);
			run_queue(v, &r[k], p, slot, &np);
		}
	}
	first[nr] = np;
	par_run(v, p, np);
	/* Every run's pass is collected, even after an error: that puts
	 * back the PG files it holds. */
	for (unsigned k = 0; k < nr; k++) {
		if (run_wanted(&r[k])) {
			if (run_collect(v, &r[k], p + first[k], slot + first[k],
					first[k + 1] - first[k]))
				run_finish_metas(v, &r[k]);
			run_open(v, &r[k], out);
		}
		for (uint32_t i = 0; i < r[k].n && !ret; i++)
			if (r[k].slow & (1ull << i))
				ret = vol_read(v, r[k].lba + i,
					       out + (size_t)i *
							       VOL_BLOCK_BYTES);
		out += (size_t)r[k].n * VOL_BLOCK_BYTES;
	}
	return ret;
}

int vol_read_run(struct vol *v, uint64_t lba, uint32_t n, void *buf)
{
	/*
	 * One allocation for a batch's buffers, as large as this read
	 * needs: the ciphertext (aligned, for O_DIRECT segments), then R
	 * meta entries per run.  A batch's runs share the ciphertext in
	 * order; a PG boundary may split a read into one run more.
	 */
	uint32_t most = n < RUNS_AT_ONCE * RUN_MAX ? n : RUNS_AT_ONCE * RUN_MAX;
	unsigned runs = most / RUN_MAX + 2 < RUNS_AT_ONCE ? most / RUN_MAX + 2 :
							    RUNS_AT_ONCE;
	size_t cbytes = (size_t)most * VOL_BLOCK_BYTES;
	uint8_t(*ents)[VOL_READ_QUORUM][RUN_MAX * VOL_META_BYTES];
	uint8_t *out = buf, *mem = NULL;
	struct run r[RUNS_AT_ONCE];
	int ret = 0;

	if (!n)
		return 0;
	if (posix_memalign((void **)&mem, VOL_BLOCK_BYTES,
			   cbytes + runs * sizeof(*ents)))
		return -ENOMEM;
	ents = (void *)(mem + cbytes);
	while (n && !ret) {
		uint8_t *at = out, *cipher = mem;
		unsigned nr = 0;

		for (; n && nr < runs; nr++) {
			uint32_t k = n < RUN_MAX ? n : RUN_MAX;
			struct vol_rec rec;

			if (lba % VOL_PG_BLOCKS + k > VOL_PG_BLOCKS) /* 1 PG */
				k = (uint32_t)(VOL_PG_BLOCKS -
					       lba % VOL_PG_BLOCKS);
			if (lba + k > v->max_blocks || lba + k < lba) {
				ret = -ENOSPC;
				break;
			}
			VOL_VERIFY(cipher + (size_t)k * VOL_BLOCK_BYTES <=
				   mem + cbytes);
			run_init(&r[nr], lba, k, cipher, ents[nr]);
			cipher += (size_t)k * VOL_BLOCK_BYTES;
			/*
			 * Memory first, as vol_read does: a pending record
			 * is newer than any segment, and one that is
			 * materialised after this look is in the segments
			 * when they are read.  Presence only: vol_read
			 * copies what it serves.
			 */
			for (uint32_t i = 0; i < k; i++)
				if (v->readonly ||
				    pend_lookup(v, lba + i, &rec, NULL))
					r[nr].slow |= 1ull << i;
			lba += k;
			out += (size_t)k * VOL_BLOCK_BYTES;
			n -= k;
		}
		if (nr && !ret)
			ret = runs_read(v, r, nr, at);
	}
	free(mem);
	return ret;
}
