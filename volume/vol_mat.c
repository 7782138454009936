/*
 * vol_mat.c - materialisation (durable log records into segment files),
 * checkpoints, and the write-intent map.
 *
 * Layer: volume/.  vol_mat_apply() is the one routine that changes
 * segments and metas; the materialiser thread and recovery both call it.
 * It keeps V3 (only over an older version, in LSN order) and V4 (the
 * checkpoint follows the fdatasyncs).  Many versions of a block in one
 * round cost one segment write (coalescing).  Every zone's I/O of a phase
 * is in flight at once through io_uring.
 *
 * Pacing.  A device flush makes stable everything written before it,
 * and a commit waits for one (vol_log.c L1): if a round's writes land on
 * the disk in one burst, the commits whose flushes follow carry the
 * whole burst.  A round of 0.2 s of random 8 KiB fsync'ed writes is
 * about 400 meta pages and 500 blocks per zone; written at once, and the
 * meta pages written back only by the round's fdatasyncs, it held a
 * commit's flush for up to 8 ms (p99 of fio's fsync 10 ms, against
 * 0.6 ms on the plain disk).  So while commits are in flight the live
 * materialiser goes VOL_MAT_PACE_PAGES meta pages at a time, starts the
 * writeback of each piece's meta pages at once (sync_file_range), and
 * then waits as long as the piece took: the same writes, spread so that
 * each flush carries a small share.  A piece keeps at most
 * VOL_MAT_PACE_INFLIGHT operations in flight, not all of them: a
 * commit's six log writes would otherwise queue behind a hundred or more
 * of the piece's, and its flush carry them all (fio's fsync p99 was 8.6
 * to 12 ms with whole pieces in flight, 4.0 ms with six at a time); that
 * holds also when no commit is in flight as a piece starts, since one
 * may come during it.  The pauses are skipped while nobody commits; the
 * window and the pauses are both dropped when the log is half full, and
 * for vol_sync, the space admission (which sets sync_req), close and
 * recovery.  The flushes that make a round stable, and so V4, are
 * unchanged; the writeback started early is only sooner.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "volume/vol_i.h"

#define MAT_CHUNK_PAGES 256

struct mrec {
	const struct vol_rec *r;
	const uint8_t *cipher; /* WRITE, DIRECT (NULL: recovery lost it) */
	uint32_t have; /* DIRECT: zones whose segment holds it (L2) */
	int superseded; /* a later record of the round covers it */
};

struct round {
	struct vol *v;
	struct mrec *recs;
	size_t nrecs;
	const uint64_t *min_lsn; /* per zone, or NULL */
	int paced; /* the live materialiser (see Pacing) */
	uint32_t mask; /* zones still being written */
	uint32_t *failed;
	uint64_t *pgs; /* PGs touched, for the fdatasyncs */
	size_t npgs, cap_pgs;
	uint64_t *held; /* (pg << 3 | zone) of every vol_zone_pgfd, to put */
	size_t nheld, cap_held;
	struct iovec *iov; /* segment writes of one chunk */
	size_t niov, cap_iov;
	struct vol_iop *ops;
	size_t nops, cap_ops;
};

static int skip_for(const struct round *rd, int z, const struct vol_rec *r)
{
	return rd->min_lsn && r->lsn <= rd->min_lsn[z];
}

static struct vol_iop *add_op(struct round *rd)
{
	if (rd->nops == rd->cap_ops) {
		size_t cap = rd->cap_ops ? rd->cap_ops * 2 : 256;
		struct vol_iop *n = realloc(rd->ops, cap * sizeof(*n));

		VOL_VERIFY(n != NULL);
		rd->ops = n;
		rd->cap_ops = cap;
	}
	memset(&rd->ops[rd->nops], 0, sizeof(rd->ops[0]));
	return &rd->ops[rd->nops++];
}

static void touch_pg(struct round *rd, uint64_t pg)
{
	for (size_t i = 0; i < rd->npgs; i++)
		if (rd->pgs[i] == pg)
			return;
	if (rd->npgs == rd->cap_pgs) {
		size_t cap = rd->cap_pgs ? rd->cap_pgs * 2 : 16;
		uint64_t *n = realloc(rd->pgs, cap * sizeof(*n));

		VOL_VERIFY(n != NULL);
		rd->pgs = n;
		rd->cap_pgs = cap;
	}
	rd->pgs[rd->npgs++] = pg;
}

/* Caller holds v->lock.  Nobody asks the materialiser for speed. */
static int unhurried(const struct vol *v)
{
	return !v->log_full && !v->sync_req && !v->mat_stopping &&
	       v->live_blocks < v->log_blocks / 2;
}

/*
 * Run the queued ops; a zone with any failed op leaves the round.  Paced,
 * at most VOL_MAT_PACE_INFLIGHT at a time (see Pacing).
 */
static int run_ops(struct round *rd)
{
	size_t window = 0;
	int ret;

	if (rd->paced) {
		pthread_mutex_lock(&rd->v->lock);
		if (unhurried(rd->v))
			window = VOL_MAT_PACE_INFLIGHT;
		pthread_mutex_unlock(&rd->v->lock);
	}
	ret = vol_io_run(&rd->v->mat_ring, rd->ops, rd->nops, window);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < rd->nops; i++) {
		int z = rd->ops[i].zone;

		if (rd->ops[i].res < 0 && (rd->mask & (1u << z))) {
			rd->mask &= ~(1u << z);
			*rd->failed |= 1u << z;
			vol_log(VOL_LOG_WARN,
				"zone %d: materialise I/O failed: %s", z,
				strerror(-rd->ops[i].res));
		}
	}
	rd->nops = 0;
	return 0;
}

static int zone_pgfd(struct round *rd, int z, uint64_t pg, int create,
		     struct vol_pgfd *fd)
{
	int ret;

	if (rd->v->zones[z].fault) {
		ret = rd->v->zones[z].fault;
	} else {
		ret = vol_zone_pgfd(rd->v, &rd->v->zones[z], pg, create, fd);
		if (ret == -ENOENT && !create)
			return ret;
	}
	if (!ret) {
		if (rd->nheld == rd->cap_held) {
			size_t cap = rd->cap_held ? rd->cap_held * 2 : 64;
			uint64_t *n = realloc(rd->held, cap * sizeof(*n));

			VOL_VERIFY(n != NULL);
			rd->held = n;
			rd->cap_held = cap;
		}
		rd->held[rd->nheld++] = pg << 3 | (uint64_t)z;
		return 0;
	}
	if (ret) {
		rd->mask &= ~(1u << z);
		*rd->failed |= 1u << z;
		vol_log(VOL_LOG_WARN, "zone %d: cannot open PG %llu: %s", z,
			(unsigned long long)pg, strerror(-ret));
	}
	return ret;
}

/* Mark writes that a later record of the round overwrites or frees. */
static void find_superseded(struct round *rd)
{
	size_t cap = 1;
	uint64_t *lbas, *lsns;

	while (cap < rd->nrecs * 2)
		cap <<= 1;
	lbas = calloc(cap, sizeof(*lbas));
	lsns = calloc(cap, sizeof(*lsns)); /* 0 = empty slot */
	VOL_VERIFY(lbas && lsns);
	for (size_t i = rd->nrecs; i-- > 0;) {
		const struct vol_rec *r = rd->recs[i].r;
		size_t h;

		if (!vol_rec_writes(r->kind))
			continue;
		h = (r->lba * 0x9E3779B97F4A7C15ull) & (cap - 1);
		while (lsns[h] && lbas[h] != r->lba)
			h = (h + 1) & (cap - 1);
		if (lsns[h]) { /* a later write of this lba was seen */
			rd->recs[i].superseded = 1;
			continue;
		}
		lbas[h] = r->lba;
		lsns[h] = r->lsn;
		for (size_t j = i + 1; j < rd->nrecs; j++) {
			const struct vol_rec *d = rd->recs[j].r;

			if (d->kind == VOL_REC_DISCARD && r->lba >= d->lba &&
			    r->lba - d->lba < d->nblocks) {
				rd->recs[i].superseded = 1;
				break;
			}
		}
	}
	free(lbas);
	free(lsns);
}

/* A meta page of DISCARDED entries at lsn for blocks first..first+63. */
static void tombstone_page(uint8_t *page, uint64_t first, uint64_t lsn)
{
	struct vol_meta m = { .state = VOL_META_DISCARDED, .lsn = lsn };

	for (uint32_t e = 0; e < VOL_META_PER_PAGE; e++)
		vol_meta_encode(&m, first + e, page + e * VOL_META_BYTES);
}

/* The allocated extent of a file found last: [data, hole). */
struct extent_cursor {
	off_t data;
	off_t hole;
};

/* Is the 4 KiB page at off of fd allocated (holds anything)? */
static int page_allocated(int fd, off_t off, struct extent_cursor *c)
{
	if (off >= c->hole) {
		c->data = lseek(fd, off, SEEK_DATA);
		if (c->data < 0) { /* ENXIO: no data from off on */
			c->data = c->hole = INT64_MAX;
			return 0;
		}
		c->hole = lseek(fd, c->data, SEEK_HOLE);
		if (c->hole < 0)
			c->hole = INT64_MAX;
	}
	return off >= c->data && off < c->hole;
}

/*
 * Which of meta pages k..k+n need a tombstone (need[i]).  A page needs
 * one where any zone the round writes holds that meta page, or where any
 * zone may have missed writes (its write-intent bit: it may hold an
 * older version there, V9).  So does every page while a zone is outside
 * the round: its write-intent bits for this round come only after the
 * round, and its own log may hold a write of those blocks that it never
 * applied, which recovery replays into it once the other logs have
 * moved past the discard; a hole would then lose to that write in every
 * read that asks it (a deleted file's data back).  Elsewhere no version
 * of those blocks was ever written anywhere, so the hole already says
 * what the tombstone would, at no cost.  The answer is the same for
 * every zone the round writes: a crash in a round that wrote a meta
 * page in some zones and not yet in others leaves exactly such a page,
 * and a replay that decided zone by zone would leave it discarded in
 * some and empty in the others, which a deep scrub then finds as bad
 * copies.
 */
static void tombstone_need(struct round *rd, const struct vol_pgfd *fd,
			   uint32_t zones, uint64_t k, uint64_t n,
			   struct extent_cursor *cur, uint8_t *need)
{
	/* By the round's zones, not the discard's: a zone that applied it
	 * before this replay (skip_for) is not absent, and the answer must
	 * stay the same for all. */
	int absent = rd->mask != (1u << VOL_ZONES) - 1;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t first = (k + i) * VOL_META_PER_PAGE;
		off_t off = (off_t)(first % VOL_PG_BLOCKS) * VOL_META_BYTES;

		need[i] = (uint8_t)absent;
		if (absent)
			continue;
		for (int z = 0; z < VOL_ZONES && !need[i]; z++) {
			if (vol_wim_test(rd->v, z, first))
				need[i] = 1;
			else if (zones & (1u << z))
				need[i] = page_allocated(fd[z].meta, off,
							 &cur[z]);
		}
	}
}

/* Zone z's writes of the tombstone pages k..k+n that need[] asks for. */
static void tombstone_writes(struct round *rd, int z, int fd, uint64_t k,
			     uint64_t n, const uint8_t *pages,
			     const uint8_t *need)
{
	uint64_t run = 0;

	for (uint64_t i = 0; i <= n; i++) {
		uint64_t start;

		if (i < n && need[i]) {
			run++;
			continue;
		}
		if (!run)
			continue;
		/* The run is pages k+i-run .. k+i-1, all in one PG. */
		start = (k + i - run) * VOL_META_PER_PAGE;
		*add_op(rd) = (struct vol_iop){
			.kind = VOL_IOP_WRITE,
			.fd = fd,
			.zone = z,
			.buf = (void *)(pages + (i - run) * VOL_BLOCK_BYTES),
			.len = (uint32_t)(run * VOL_BLOCK_BYTES),
			.off = (start % VOL_PG_BLOCKS) * VOL_META_BYTES,
		};
		run = 0;
	}
}

/*
 * Phase 1 for discard d over [lba, end) of one PG: punch the segment
 * range, and write the meta pages it covers whole as tombstones where
 * needed (tombstone_writes; no read: a newer entry a replay overwrites
 * comes back in phase 2, as its record is replayed too).  Tombstones keep
 * the discard's LSN, so a stale copy elsewhere never looks newer (V9).
 * Partial pages are phase 2's.
 */
static int discard_piece(struct round *rd, const struct vol_rec *d,
			 uint64_t lba, uint64_t end, uint8_t *pages)
{
	uint64_t pg = lba / VOL_PG_BLOCKS;
	uint64_t fp = (lba + VOL_META_PER_PAGE - 1) / VOL_META_PER_PAGE;
	uint64_t lp = end / VOL_META_PER_PAGE; /* exclusive */
	struct extent_cursor cur[VOL_ZONES];
	struct vol_pgfd fd[VOL_ZONES];
	uint8_t need[MAT_CHUNK_PAGES];
	uint32_t zones = 0; /* the zones this discard writes */
	int ret;

	for (int z = 0; z < VOL_ZONES; z++) {
		cur[z].data = cur[z].hole = -1;
		if (!(rd->mask & (1u << z)) || skip_for(rd, z, d) ||
		    zone_pgfd(rd, z, pg, 1, &fd[z]))
			continue;
		zones |= 1u << z;
		touch_pg(rd, pg);
		*add_op(rd) = (struct vol_iop){
			.kind = VOL_IOP_PUNCH,
			.fd = fd[z].seg,
			.zone = z,
			.off = (lba % VOL_PG_BLOCKS) * VOL_BLOCK_BYTES,
			.punch_len = (end - lba) * VOL_BLOCK_BYTES,
		};
	}
	for (uint64_t k = fp; k < lp; k += MAT_CHUNK_PAGES) {
		uint64_t n = lp - k < MAT_CHUNK_PAGES ? lp - k :
							MAT_CHUNK_PAGES;

		for (uint64_t i = 0; i < n; i++)
			tombstone_page(pages + i * VOL_BLOCK_BYTES,
				       (k + i) * VOL_META_PER_PAGE, d->lsn);
		tombstone_need(rd, fd, zones, k, n, cur, need);
		for (int z = 0; z < VOL_ZONES; z++)
			if (zones & (1u << z))
				tombstone_writes(rd, z, fd[z].meta, k, n, pages,
						 need);
		ret = run_ops(rd); /* the pages buffer is reused */
		if (ret)
			return ret;
	}
	return 0;
}

static int punch_discards(struct round *rd)
{
	uint8_t *pages = NULL;
	int ret = 0;

	for (size_t i = 0; i < rd->nrecs && !ret; i++) {
		const struct vol_rec *d = rd->recs[i].r;

		if (d->kind != VOL_REC_DISCARD)
			continue;
		if (!pages)
			pages = vol_alloc_blocks(MAT_CHUNK_PAGES);
		VOL_VERIFY(pages != NULL);
		for (uint64_t lba = d->lba;
		     lba < d->lba + d->nblocks && !ret;) {
			uint64_t end =
				(lba / VOL_PG_BLOCKS + 1) * VOL_PG_BLOCKS;

			if (end > d->lba + d->nblocks)
				end = d->lba + d->nblocks;
			ret = discard_piece(rd, d, lba, end, pages);
			lba = end;
		}
	}
	if (!ret)
		ret = run_ops(rd);
	free(pages);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Meta pages (global index lba / 64) that phase 2 reads and rewrites. */
static uint64_t *page_list(struct round *rd, size_t *n)
{
	uint64_t *keys = malloc((rd->nrecs * 2 + 1) * sizeof(*keys));
	size_t k = 0, u = 0;

	VOL_VERIFY(keys != NULL);
	for (size_t i = 0; i < rd->nrecs; i++) {
		const struct vol_rec *r = rd->recs[i].r;

		if (vol_rec_writes(r->kind)) {
			if (!rd->recs[i].superseded)
				keys[k++] = r->lba / VOL_META_PER_PAGE;
			continue;
		}
		if (r->lba % VOL_META_PER_PAGE)
			keys[k++] = r->lba / VOL_META_PER_PAGE;
		if ((r->lba + r->nblocks) % VOL_META_PER_PAGE)
			keys[k++] = (r->lba + r->nblocks) / VOL_META_PER_PAGE;
	}
	qsort(keys, k, sizeof(*keys), cmp_u64);
	for (size_t i = 0; i < k; i++)
		if (!u || keys[u - 1] != keys[i])
			keys[u++] = keys[i];
	*n = u;
	return keys;
}

static const struct mrec *find_lsn(const struct round *rd, uint64_t lsn)
{
	size_t lo = 0, hi = rd->nrecs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (rd->recs[mid].r->lsn < lsn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < rd->nrecs && rd->recs[lo].r->lsn == lsn ? &rd->recs[lo] :
							      NULL;
}

/* Apply record r to the meta page (global index key) of zone z. */
static void apply_page(const struct vol_rec *r, uint64_t key, uint8_t *page,
		       uint64_t *changed)
{
	uint64_t first = key * VOL_META_PER_PAGE, lo, hi;

	if (vol_rec_writes(r->kind)) {
		lo = r->lba;
		hi = r->lba + 1;
	} else {
		lo = r->lba;
		hi = r->lba + r->nblocks;
	}
	if (lo < first)
		lo = first;
	if (hi > first + VOL_META_PER_PAGE)
		hi = first + VOL_META_PER_PAGE;
	for (uint64_t lba = lo; lba < hi; lba++) {
		uint8_t *e = page + (lba - first) * VOL_META_BYTES;
		struct vol_meta m;

		/* A damaged entry is overwritten: this heals it. */
		if (vol_meta_decode(e, lba, &m))
			memset(&m, 0, sizeof(m));
		if (m.state != VOL_META_EMPTY && m.lsn >= r->lsn)
			continue; /* V3: never over a newer version */
		memset(&m, 0, sizeof(m));
		m.lsn = r->lsn;
		if (vol_rec_writes(r->kind)) {
			m.state = VOL_META_WRITTEN;
			m.data_crc = r->data_crc;
			memcpy(m.nonce, r->nonce, KEY_NONCE_BYTES);
			memcpy(m.tag, r->tag, KEY_TAG_BYTES);
		} else {
			m.state = VOL_META_DISCARDED;
		}
		vol_meta_encode(&m, lba, e);
		*changed |= 1ull << (lba - first);
	}
}

/*
 * The segment writes for one rewritten meta page of zone z: each run of
 * consecutive blocks whose final version is a WRITE of this round is one
 * vectored write (up to 64 blocks) from the sealed buffers.
 */
static void seg_writes(struct round *rd, const uint8_t *page, uint64_t first,
		       int fd, int z)
{
	struct vol_iop *op = NULL;

	for (uint32_t e = 0; e < VOL_META_PER_PAGE; e++) {
		struct vol_meta m;
		const struct mrec *mr;
		struct iovec *iov;

		/* A damaged entry of another block is not ours to judge. */
		if (vol_meta_decode(page + e * VOL_META_BYTES, first + e, &m))
			m.state = VOL_META_EMPTY;
		mr = m.state == VOL_META_WRITTEN ? find_lsn(rd, m.lsn) : NULL;
		if (mr && skip_for(rd, z, mr->r))
			mr = NULL; /* the zone had it before this replay */
		/* L2: a DIRECT block is in place where its chain finished */
		if (mr && (!mr->cipher || (mr->r->kind == VOL_REC_DIRECT &&
					   (mr->have & (1u << z)))))
			mr = NULL;
		if (!mr) { /* older data, discarded or damaged: ends a run */
			op = NULL;
			continue;
		}
		VOL_VERIFY(rd->niov < rd->cap_iov);
		iov = &rd->iov[rd->niov++];
		iov->iov_base = (void *)mr->cipher;
		iov->iov_len = VOL_BLOCK_BYTES;
		if (op) {
			op->len++;
			continue;
		}
		op = add_op(rd);
		*op = (struct vol_iop){
			.kind = VOL_IOP_WRITEV,
			.fd = fd,
			.zone = z,
			.buf = iov,
			.len = 1,
			.off = ((first + e) % VOL_PG_BLOCKS) * VOL_BLOCK_BYTES,
		};
	}
}

/* Phase 2 for pages [keys, keys + n): read, apply, write back. */
static int rmw_chunk(struct round *rd, const uint64_t *keys, size_t n,
		     uint8_t *bufs)
{
	uint64_t changed[MAT_CHUNK_PAGES][VOL_ZONES];
	struct vol_pgfd fds[MAT_CHUNK_PAGES][VOL_ZONES];
	int ret;

	memset(changed, 0, sizeof(changed));
	memset(bufs, 0, n * VOL_ZONES * VOL_BLOCK_BYTES);
	rd->niov = 0;
	for (size_t p = 0; p < n; p++) {
		uint64_t pg = keys[p] * VOL_META_PER_PAGE / VOL_PG_BLOCKS;

		for (int z = 0; z < VOL_ZONES; z++) {
			struct vol_iop *op;

			if (!(rd->mask & (1u << z)) ||
			    zone_pgfd(rd, z, pg, 1, &fds[p][z]))
				continue;
			touch_pg(rd, pg);
			op = add_op(rd);
			*op = (struct vol_iop){
				.kind = VOL_IOP_READ,
				.fd = fds[p][z].meta,
				.zone = z,
				.nowait = fds[p][z].meta_nowait,
				.buf = bufs +
				       (p * VOL_ZONES + z) * VOL_BLOCK_BYTES,
				.len = VOL_BLOCK_BYTES,
				.off = (keys[p] * VOL_META_PER_PAGE %
					VOL_PG_BLOCKS) *
				       VOL_META_BYTES,
			};
		}
	}
	ret = run_ops(rd); /* short reads leave zeros: never-written tail */
	if (ret)
		return ret;
	for (size_t i = 0; i < rd->nrecs; i++) {
		const struct vol_rec *r = rd->recs[i].r;
		uint64_t k0, k1;

		if (rd->recs[i].superseded)
			continue;
		k0 = r->lba / VOL_META_PER_PAGE;
		k1 = vol_rec_writes(r->kind) ?
			     k0 :
			     (r->lba + r->nblocks - 1) / VOL_META_PER_PAGE;
		if (k1 < keys[0] || k0 > keys[n - 1])
			continue;
		for (size_t p = 0; p < n; p++) {
			if (keys[p] < k0 || keys[p] > k1)
				continue;
			for (int z = 0; z < VOL_ZONES; z++)
				if ((rd->mask & (1u << z)) &&
				    !skip_for(rd, z, r))
					apply_page(r, keys[p],
						   bufs + (p * VOL_ZONES +
							   z) * VOL_BLOCK_BYTES,
						   &changed[p][z]);
		}
	}
	for (size_t p = 0; p < n; p++) {
		for (int z = 0; z < VOL_ZONES; z++) {
			uint8_t *page =
				bufs + (p * VOL_ZONES + z) * VOL_BLOCK_BYTES;
			uint64_t first = keys[p] * VOL_META_PER_PAGE;
			struct vol_iop *op;

			if (!(rd->mask & (1u << z)))
				continue;
			/*
			 * Segments of every listed page, changed or not: a
			 * replay after a crash between the segment flush and
			 * the checkpoint finds the meta already new but the
			 * block punched by a discard it repeats, and this
			 * writes it back (V3 holds once the round is done).
			 */
			seg_writes(rd, page, first, fds[p][z].seg, z);
			if (!changed[p][z])
				continue;
			op = add_op(rd);
			*op = (struct vol_iop){
				.kind = VOL_IOP_WRITE,
				.fd = fds[p][z].meta,
				.zone = z,
				.buf = page,
				.len = VOL_BLOCK_BYTES,
				.off = (first % VOL_PG_BLOCKS) * VOL_META_BYTES,
			};
		}
	}
	ret = run_ops(rd);
	if (ret || !rd->paced)
		return ret;
	/*
	 * Pacing: the meta pages just written go to the disk now, not all
	 * at the round's fdatasyncs.  One range per zone and meta file
	 * (keys are sorted, so a PG's pages are adjacent).
	 */
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_iop *op = NULL;

		for (size_t p = 0; p < n && (rd->mask & (1u << z)); p++) {
			uint64_t off =
				(keys[p] * VOL_META_PER_PAGE % VOL_PG_BLOCKS) *
				VOL_META_BYTES;

			if (!changed[p][z])
				continue;
			if (op && op->fd == fds[p][z].meta) {
				op->punch_len = off + VOL_BLOCK_BYTES - op->off;
				continue;
			}
			op = add_op(rd);
			*op = (struct vol_iop){ .kind = VOL_IOP_START,
						.fd = fds[p][z].meta,
						.zone = z,
						.off = off,
						.punch_len = VOL_BLOCK_BYTES };
		}
	}
	return run_ops(rd);
}

/*
 * Pacing: after a piece of a round that took took_us, wait as long while
 * commits are in flight and nothing asks for speed.  Any broadcast of
 * mat_cv (the log is full, vol_sync, close) ends the wait early.
 */
static void pace(struct vol *v, uint64_t took_us)
{
	int64_t ms = (int64_t)(took_us / 1000) + 1;
	struct timespec ts;

	if (ms > VOL_MAT_PACE_MAX_MS)
		ms = VOL_MAT_PACE_MAX_MS;
	pthread_mutex_lock(&v->lock);
	vol_deadline(&ts, ms);
	if ((v->undurable || v->queue) && unhurried(v)) {
		v->mat_paces++;
		(void)pthread_cond_timedwait(&v->mat_cv, &v->lock, &ts);
	}
	pthread_mutex_unlock(&v->lock);
}

uint64_t vol_debug_mat_paces(struct vol *v)
{
	uint64_t n;

	pthread_mutex_lock(&v->lock);
	n = v->mat_paces;
	pthread_mutex_unlock(&v->lock);
	return n;
}

static int sync_and_checkpoint(struct round *rd, uint64_t applied,
			       uint64_t pg_count)
{
	struct vol *v = rd->v;
	uint8_t *ck = vol_alloc_blocks(VOL_ZONES);
	int ret;

	VOL_VERIFY(ck != NULL);
	for (int z = 0; z < VOL_ZONES; z++) {
		for (size_t i = 0; i < rd->npgs; i++) {
			struct vol_pgfd fd;

			if (!(rd->mask & (1u << z)) ||
			    zone_pgfd(rd, z, rd->pgs[i], 1, &fd))
				continue;
			*add_op(rd) = (struct vol_iop){ .kind = VOL_IOP_FSYNC,
							.fd = fd.seg,
							.zone = z };
			*add_op(rd) = (struct vol_iop){ .kind = VOL_IOP_FSYNC,
							.fd = fd.meta,
							.zone = z };
		}
	}
	ret = run_ops(rd);
	if (ret)
		goto out_free;
	/* V4: the checkpoint only after the data it covers is stable. */
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		struct vol_ckpt c = zone->ck;

		if (!(rd->mask & (1u << z)))
			continue;
		c.zone = z;
		memcpy(c.uuid, v->uuid, KEY_UUID_BYTES);
		c.seq++;
		c.epoch = v->epoch;
		if (applied > c.applied_lsn)
			c.applied_lsn = applied;
		if (pg_count > c.pg_count)
			c.pg_count = pg_count;
		vol_ck_encode(&c, ck + z * VOL_BLOCK_BYTES);
		*add_op(rd) = (struct vol_iop){
			.kind = VOL_IOP_WRITE,
			.fd = zone->ck_fd,
			.zone = z,
			.buf = ck + z * VOL_BLOCK_BYTES,
			.len = VOL_CK_BYTES,
			.off = (c.seq % 2) * VOL_CK_BYTES,
		};
	}
	ret = run_ops(rd);
	if (ret)
		goto out_free;
	for (int z = 0; z < VOL_ZONES; z++)
		if (rd->mask & (1u << z))
			*add_op(rd) = (struct vol_iop){
				.kind = VOL_IOP_FSYNC,
				.fd = v->zones[z].ck_fd,
				.zone = z,
			};
	ret = run_ops(rd);
	if (ret)
		goto out_free;
	for (int z = 0; z < VOL_ZONES; z++)
		if (rd->mask & (1u << z))
			vol_ck_decode(ck + z * VOL_BLOCK_BYTES,
				      &v->zones[z].ck) == 0 ?
				(void)0 :
				vol_panic(__FILE__, __LINE__, "ckpt encode");
out_free:
	free(ck);
	return ret;
}

/*
 * Apply batches bs[0..nb) (in LSN order) to the zones of zone_mask,
 * fdatasync, write their checkpoints.  min_lsn[z], if given, skips
 * records a zone already has (recovery).  Zones whose I/O failed are
 * added to *failed_mask and left out of the rest; the return value is
 * -errno only if the ring itself failed.  Called by one thread at a time.
 */
int vol_mat_apply(struct vol *v, struct vol_batch **bs, int nb,
		  const uint64_t *min_lsn, uint32_t zone_mask,
		  uint64_t pg_count, uint32_t *failed_mask)
{
	struct round rd = { .v = v,
			    .min_lsn = min_lsn,
			    .paced = min_lsn == NULL, /* recovery runs alone */
			    .mask = zone_mask,
			    .failed = failed_mask };
	size_t piece = rd.paced ? VOL_MAT_PACE_PAGES : MAT_CHUNK_PAGES;
	uint64_t *keys, applied = 0;
	uint8_t *bufs = NULL;
	size_t nkeys, total = 0;
	int ret;

	*failed_mask = 0;
	for (int i = 0; i < nb; i++) {
		/* V3: only what a write quorum holds reaches a segment. */
		VOL_VERIFY(bs[i]->durable || min_lsn);
		total += bs[i]->h.nrec;
	}
	rd.recs = calloc(total ? total : 1, sizeof(*rd.recs));
	VOL_VERIFY(rd.recs != NULL);
	for (int i = 0; i < nb; i++) {
		uint32_t k = 0;

		for (uint32_t j = 0; j < bs[i]->h.nrec; j++) {
			struct mrec *m = &rd.recs[rd.nrecs++];

			m->r = &bs[i]->recs[j];
			if (vol_rec_writes(m->r->kind))
				m->cipher = bs[i]->data[k++];
			if (m->r->kind == VOL_REC_DIRECT)
				m->have = bs[i]->done_mask & ~bs[i]->late;
			/* find_lsn() needs LSN order. */
			VOL_VERIFY(rd.nrecs == 1 ||
				   m->r->lsn > rd.recs[rd.nrecs - 2].r->lsn);
			applied = m->r->lsn;
		}
		if (bs[i]->h.pg_count > pg_count)
			pg_count = bs[i]->h.pg_count;
	}
	find_superseded(&rd);
	ret = punch_discards(&rd);
	if (ret)
		goto out_free;
	keys = page_list(&rd, &nkeys);
	if (nkeys) {
		/* rmw_chunk zeroes what it uses; one thread at a time. */
		if (!v->mat_bufs &&
		    posix_memalign((void **)&v->mat_bufs, VOL_BLOCK_BYTES,
				   (size_t)MAT_CHUNK_PAGES * VOL_ZONES *
					   VOL_BLOCK_BYTES))
			v->mat_bufs = NULL;
		bufs = v->mat_bufs;
		rd.cap_iov =
			(size_t)MAT_CHUNK_PAGES * VOL_ZONES * VOL_META_PER_PAGE;
		rd.iov = malloc(rd.cap_iov * sizeof(*rd.iov));
		VOL_VERIFY(bufs && rd.iov);
	}
	for (size_t i = 0; i < nkeys && !ret; i += piece) {
		uint64_t t0 = vol_now_us();

		ret = rmw_chunk(&rd, keys + i,
				nkeys - i < piece ? nkeys - i : piece, bufs);
		if (rd.paced && !ret && i + piece < nkeys)
			pace(v, vol_now_us() - t0);
	}
	free(keys);
	if (!ret)
		ret = sync_and_checkpoint(&rd, applied, pg_count);
out_free:
	for (size_t i = 0; i < rd.nheld; i++)
		vol_zone_pgfd_put(&v->zones[rd.held[i] & 7], rd.held[i] >> 3);
	free(rd.held);
	free(rd.iov);
	free(rd.recs);
	free(rd.pgs);
	free(rd.ops);
	return ret;
}

/* ---- write-intent map ---- */

static void wim_set(struct vol_zone *z, uint64_t region)
{
	uint32_t p = (uint32_t)(region / VOL_WIM_PAGE_REGIONS);
	uint32_t r = (uint32_t)(region % VOL_WIM_PAGE_REGIONS);

	if (!z->wim[p]) {
		z->wim[p] = calloc(1, VOL_BLOCK_BYTES - VOL_WIM_HDR_BYTES);
		VOL_VERIFY(z->wim[p] != NULL);
	}
	if (z->wim[p][r / 8] & (1u << (r % 8)))
		return;
	z->wim[p][r / 8] |= (uint8_t)(1u << (r % 8));
	z->wim_dirty[p] = 1;
	z->wim_regions++;
}

static void wim_mark_range(struct vol_zone *z, uint64_t lba, uint64_t n)
{
	z->mark_gen++; /* repair's clears look at it (vol_repair.c R3) */
	uint64_t r0 = lba >> VOL_WIM_REGION_SHIFT;
	uint64_t r1 = (lba + n - 1) >> VOL_WIM_REGION_SHIFT;

	for (uint64_t r = r0; r <= r1; r++)
		wim_set(z, r);
}

static int wim_alloc(struct vol_zone *z)
{
	if (z->wim)
		return 0;
	z->wim = calloc(VOL_WIM_PAGES, sizeof(*z->wim));
	z->wim_dirty = calloc(VOL_WIM_PAGES, 1);
	return z->wim && z->wim_dirty ? 0 : -ENOMEM;
}

/* Zone z missed (or may have missed) every record of bs. */
void vol_wim_mark_batches(struct vol *v, int z, struct vol_batch **bs, int nb)
{
	struct vol_zone *zone = &v->zones[z];

	pthread_rwlock_wrlock(&v->wim_lock);
	VOL_VERIFY(wim_alloc(zone) == 0);
	for (int i = 0; i < nb; i++)
		for (uint32_t j = 0; j < bs[i]->h.nrec; j++) {
			const struct vol_rec *r = &bs[i]->recs[j];

			wim_mark_range(zone, r->lba,
				       vol_rec_writes(r->kind) ? 1 :
								 r->nblocks);
		}
	pthread_rwlock_unlock(&v->wim_lock);
}

/* Mark lba..lba+n of zone z as missed (rebuild: everything). */
void vol_wim_mark(struct vol *v, int z, uint64_t lba, uint64_t n)
{
	pthread_rwlock_wrlock(&v->wim_lock);
	VOL_VERIFY(wim_alloc(&v->zones[z]) == 0);
	if (n)
		wim_mark_range(&v->zones[z], lba, n);
	pthread_rwlock_unlock(&v->wim_lock);
}

/* Clear region r of zone z (its blocks were copied and synced). */
void vol_wim_clear(struct vol *v, int z, uint64_t region)
{
	struct vol_zone *zone = &v->zones[z];
	uint32_t p = (uint32_t)(region / VOL_WIM_PAGE_REGIONS);
	uint32_t r = (uint32_t)(region % VOL_WIM_PAGE_REGIONS);

	pthread_rwlock_wrlock(&v->wim_lock);
	if (zone->wim && zone->wim[p] &&
	    (zone->wim[p][r / 8] & (1u << (r % 8)))) {
		zone->wim[p][r / 8] &= (uint8_t) ~(1u << (r % 8));
		zone->wim_dirty[p] = 1;
		zone->wim_regions--;
	}
	pthread_rwlock_unlock(&v->wim_lock);
}

/*
 * Up to max set regions of zone z from *from on, wrapping once; *from
 * moves past the last one returned.  Returns how many.
 */
uint32_t vol_wim_next(struct vol *v, int z, uint64_t *from, uint64_t *out,
		      uint32_t max)
{
	struct vol_zone *zone = &v->zones[z];
	uint64_t total = (uint64_t)VOL_WIM_PAGES * VOL_WIM_PAGE_REGIONS;
	uint64_t r = *from % total;
	uint32_t n = 0;

	pthread_rwlock_rdlock(&v->wim_lock);
	for (uint64_t seen = 0;
	     zone->wim && zone->wim_regions && seen < total && n < max;) {
		uint32_t p = (uint32_t)(r / VOL_WIM_PAGE_REGIONS);
		uint32_t i = (uint32_t)(r % VOL_WIM_PAGE_REGIONS);

		if (!zone->wim[p]) { /* a page with no bit: skip it whole */
			seen += VOL_WIM_PAGE_REGIONS - i;
			r = (uint64_t)(p + 1) * VOL_WIM_PAGE_REGIONS % total;
			continue;
		}
		if (zone->wim[p][i / 8] & (1u << (i % 8)))
			out[n++] = r;
		seen++;
		r = (r + 1) % total;
	}
	pthread_rwlock_unlock(&v->wim_lock);
	*from = r;
	return n;
}

int vol_wim_test(struct vol *v, int z, uint64_t lba)
{
	struct vol_zone *zone = &v->zones[z];
	uint64_t region = lba >> VOL_WIM_REGION_SHIFT;
	uint32_t p = (uint32_t)(region / VOL_WIM_PAGE_REGIONS);
	uint32_t r = (uint32_t)(region % VOL_WIM_PAGE_REGIONS);
	int set;

	pthread_rwlock_rdlock(&v->wim_lock);
	set = zone->wim && zone->wim[p] &&
	      (zone->wim[p][r / 8] & (1u << (r % 8)));
	pthread_rwlock_unlock(&v->wim_lock);
	return set;
}

static int wim_open(struct vol_zone *on, int about, int create)
{
	char path[PATH_MAX];

	/* wim/ is made at format only (as pg/, vol_zone.c pgfd_open). */
	snprintf(path, sizeof(path), "%s/wim/%d", on->dirs[0], about);
	int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);

	return fd < 0 ? -errno : fd;
}

/* Write page p of zone about's map to zone `on`; fdatasync by caller. */
static int wim_write_page(struct vol *v, int fd, int about, uint32_t p,
			  const uint8_t *bits)
{
	uint8_t page[VOL_BLOCK_BYTES];

	memcpy(page + VOL_WIM_HDR_BYTES, bits,
	       VOL_BLOCK_BYTES - VOL_WIM_HDR_BYTES);
	vol_wim_page_encode(page, about, v->uuid, p);
	return vol_write_result(pwrite(fd, page, sizeof(page),
				       (off_t)p * VOL_BLOCK_BYTES),
				sizeof(page));
}

/*
 * Write every dirty page to every up zone but the one it is about, and
 * fdatasync.  V5 needs W copies; fewer is -EIO and the pages stay dirty.
 * Called by one thread at a time (materialiser, repair, open, close),
 * while others may mark: each zone's dirty flags are taken before its
 * pages are written, so a mark made meanwhile leaves its page dirty for
 * the flush its maker calls next.  Clearing them once written instead
 * lost such marks (a region a zone missed, never resynced).
 */
int vol_wim_flush(struct vol *v)
{
	uint8_t *bits = malloc(VOL_BLOCK_BYTES);
	uint8_t *todo = malloc(VOL_WIM_PAGES);
	int ret = 0;

	VOL_VERIFY(bits != NULL && todo != NULL);
	pthread_mutex_lock(&v->wim_flush_lock);
	for (int a = 0; a < VOL_ZONES; a++) {
		struct vol_zone *za = &v->zones[a];
		int copies = 0, anydirty = 0;

		if (!za->wim)
			continue;
		pthread_rwlock_wrlock(&v->wim_lock);
		memcpy(todo, za->wim_dirty, VOL_WIM_PAGES);
		memset(za->wim_dirty, 0, VOL_WIM_PAGES);
		pthread_rwlock_unlock(&v->wim_lock);
		for (uint32_t p = 0; p < VOL_WIM_PAGES && !anydirty; p++)
			anydirty = todo[p];
		if (!anydirty)
			continue;
		for (int o = 0; o < VOL_ZONES; o++) {
			int fd, r = 0;

			if (o == a || !v->zones[o].up || v->zones[o].fault)
				continue;
			fd = wim_open(&v->zones[o], a, 1);
			if (fd < 0)
				continue;
			for (uint32_t p = 0; p < VOL_WIM_PAGES && !r; p++) {
				if (!todo[p])
					continue;
				/* A dirty page has its bits (wim_set). */
				pthread_rwlock_rdlock(&v->wim_lock);
				memcpy(bits, za->wim[p],
				       VOL_BLOCK_BYTES - VOL_WIM_HDR_BYTES);
				pthread_rwlock_unlock(&v->wim_lock);
				r = wim_write_page(v, fd, a, p, bits);
			}
			if (!r && fdatasync(fd))
				r = -errno;
			close(fd);
			if (!r)
				copies++;
		}
		if (v->wim_flush_hook)
			v->wim_flush_hook(v, a);
		/* A zone of the write set is one of the W itself. */
		if (copies >= VOL_WRITE_QUORUM - (za->up ? 1 : 0))
			continue;
		pthread_rwlock_wrlock(&v->wim_lock);
		for (uint32_t p = 0; p < VOL_WIM_PAGES; p++)
			za->wim_dirty[p] |= todo[p];
		pthread_rwlock_unlock(&v->wim_lock);
		ret = -EIO;
	}
	pthread_mutex_unlock(&v->wim_flush_lock);
	free(todo);
	free(bits);
	if (ret)
		vol_log(VOL_LOG_ERR,
			"cannot record on 4 zones which regions an absent "
			"zone missed");
	return ret;
}

/* Union of every reachable zone's copy of every map (V6). */
int vol_wim_load(struct vol *v)
{
	uint8_t *page = malloc(VOL_BLOCK_BYTES);

	VOL_VERIFY(page != NULL);
	for (int a = 0; a < VOL_ZONES; a++) {
		VOL_VERIFY(wim_alloc(&v->zones[a]) == 0);
		for (int o = 0; o < VOL_ZONES; o++) {
			int fd;
			off_t off = 0;

			if (o == a || !v->zones[o].reachable)
				continue;
			fd = wim_open(&v->zones[o], a, 0);
			if (fd < 0)
				continue;
			while ((off = lseek(fd, off, SEEK_DATA)) >= 0) {
				uint32_t p = (uint32_t)(off / VOL_BLOCK_BYTES);
				int r;

				if (p >= VOL_WIM_PAGES ||
				    pread(fd, page, VOL_BLOCK_BYTES,
					  (off_t)p * VOL_BLOCK_BYTES) !=
					    VOL_BLOCK_BYTES)
					break;
				r = vol_wim_page_decode(page, a, v->uuid, p);
				for (uint32_t i = 0;
				     r <= 0 && i < VOL_WIM_PAGE_REGIONS; i++) {
					/* damaged page: assume all missed */
					if (r < 0 ||
					    (page[VOL_WIM_HDR_BYTES + i / 8] &
					     (1u << (i % 8))))
						wim_set(&v->zones[a],
							(uint64_t)p * VOL_WIM_PAGE_REGIONS +
								i);
				}
				off = (off_t)(p + 1) * VOL_BLOCK_BYTES;
			}
			close(fd);
		}
		/* Loaded bits are on disk already. */
		memset(v->zones[a].wim_dirty, 0, VOL_WIM_PAGES);
	}
	free(page);
	return 0;
}

void vol_wim_release(struct vol_zone *z)
{
	if (z->wim)
		for (uint32_t p = 0; p < VOL_WIM_PAGES; p++)
			free(z->wim[p]);
	free(z->wim);
	free(z->wim_dirty);
	z->wim = NULL;
	z->wim_dirty = NULL;
}

/* ---- the materialiser thread ---- */

/* Records a round waits for (see VOL_MAT_RECS). */
static uint32_t round_recs(const struct vol *v)
{
	uint32_t n = v->log_blocks / 4;

	if (n < VOL_MAT_RECS_MIN)
		n = VOL_MAT_RECS_MIN;
	return n < VOL_MAT_RECS ? n : VOL_MAT_RECS;
}

static int should_run(struct vol *v)
{
	return v->mat_waiting >= round_recs(v) || v->sync_req ||
	       v->mat_stopping || v->log_full;
}

void vol_mat_kick(struct vol *v)
{
	/*
	 * Not on every durable batch: in its delay the materialiser would
	 * wake, find the round still short and sleep again, two context
	 * switches per commit.  Its deadline ends that wait anyway.
	 */
	if (v->mat_idle || should_run(v))
		pthread_cond_broadcast(&v->mat_cv);
}

/*
 * Caller holds v->lock.  Wait for work; records that trickle in are given
 * VOL_MAT_DELAY_MS to gather, so hot blocks are written once (coalescing)
 * and the segments are not flushed once per commit.
 */
static void wait_for_work(struct vol *v)
{
	struct timespec ts;

	while (!should_run(v) && !v->mat_waiting) {
		v->mat_idle = 1;
		pthread_cond_wait(&v->mat_cv, &v->lock);
		v->mat_idle = 0;
	}
	if (should_run(v))
		return;
	vol_deadline(&ts, VOL_MAT_DELAY_MS);
	while (!should_run(v))
		if (pthread_cond_timedwait(&v->mat_cv, &v->lock, &ts) ==
		    ETIMEDOUT)
			break;
}

/*
 * Caller holds v->lock.  The oldest durable, unmaterialised batches.
 * L2: a batch with DIRECT blocks waits until every zone of the write
 * set has finished its chain (*blocked), since a segment write of its
 * still running in a slow zone could land after this round's newer
 * version of that block.  A zone still at it VOL_ZONE_LAG_MS after the
 * batch was sent lags past the bound and leaves the write set, as
 * vol_log.c unstick() does, or a hung disk would stop materialisation
 * and then, with the log full, every write.
 */
static int collect(struct vol *v, struct vol_batch **bs, int max, int *blocked)
{
	uint32_t recs = 0, up = vol_up_mask(v);
	int n = 0;

	*blocked = 0;
	for (struct vol_batch *b = v->batches; b && n < max; b = b->next) {
		if (b->materialised)
			continue;
		if (!b->durable || recs >= round_recs(v))
			break;
		if (b->ndirect && (b->pending & up) &&
		    vol_now_ms() - b->sent_ms >= VOL_ZONE_LAG_MS) {
			for (int z = 0; z < VOL_ZONES; z++)
				if (b->pending & up & (1u << z))
					vol_zone_fail(v, z, -ETIMEDOUT,
						      "lagging: its segment "
						      "writes hold back "
						      "materialisation");
			up = vol_up_mask(v);
		}
		if (b->ndirect && (b->pending & up)) {
			*blocked = 1;
			break;
		}
		bs[n++] = b;
		recs += b->h.nrec;
	}
	return n;
}

/*
 * Caller holds v->lock.  A round whose I/O reached fewer than W zones
 * (zones failed during it, or the write-intent map could not be written
 * to W of them) puts the volume in its error state: its batches stay in
 * the log, where the next open recovers them (replay is idempotent).
 */
static void round_done(struct vol *v, struct vol_batch **bs, int n, int ok)
{
	if (!ok) {
		/*
		 * Its batches stay in the log and in memory, and the round
		 * is tried again once W zones are up (replay is idempotent,
		 * V3); the zones it failed on have their WIM bits.
		 */
		if (!v->mat_stalled)
			vol_log(VOL_LOG_ERR,
				"materialisation reached fewer than 4 zones: "
				"it is tried again when zones come back");
		v->mat_stalled = 1;
		pthread_cond_broadcast(&v->idle_cv);
		return;
	}
	v->mat_stalled = 0;
	for (int i = 0; i < n; i++) {
		vol_pend_remove_batch(v, bs[i]);
		bs[i]->materialised = 1;
		v->mat_waiting -= bs[i]->h.nrec;
		v->unmat_blocks -= bs[i]->nblk;
		v->written_blocks += bs[i]->nblk;
	}
	vol_log_reclaim(v);
	vol_check(v);
	pthread_cond_broadcast(&v->space_cv); /* vol_txn_reserve waits */
	if (!v->mat_waiting || v->sync_req) /* vol_sync looks again */
		pthread_cond_broadcast(&v->idle_cv);
}

/*
 * Caller holds v->lock.  Fewer than W zones are in the write set: no
 * round can reach a quorum, so none is tried; the volume stalls like a
 * write without quorum (DESIGN 2: the log fills, writes wait or time
 * out) and vol_sync reports -EIO rather than wait.
 */
static void stall(struct vol *v)
{
	if (!v->mat_stalled)
		vol_log(VOL_LOG_ERR,
			"fewer than 4 zones in the write set: the log is kept "
			"and writes stall until the quorum is back");
	v->mat_stalled = 1;
	pthread_cond_broadcast(&v->idle_cv);
}

/* Caller holds v->lock.  A stalled materialiser retries now and then. */
static void stall_wait(struct vol *v)
{
	struct timespec ts;

	vol_deadline(&ts, VOL_MAT_RETRY_MS);
	while (!v->mat_stopping && !v->sync_req)
		if (pthread_cond_timedwait(&v->mat_cv, &v->lock, &ts) ==
		    ETIMEDOUT)
			break;
}

static void *materialiser(void *arg)
{
	struct vol *v = arg;
	struct vol_batch *bs[VOL_MAT_RECS];

	pthread_mutex_lock(&v->lock);
	for (;;) {
		uint32_t mask = 0, failed = 0;
		int n, ret, good = 0, blocked = 0;

		if (v->mat_stalled)
			stall_wait(v);
		else
			wait_for_work(v);
		v->log_full = 0;
		for (int z = 0; z < VOL_ZONES; z++)
			if (v->zones[z].up && !v->zones[z].fault)
				mask |= 1u << z;
		n = v->err ? 0 : collect(v, bs, VOL_MAT_RECS, &blocked);
		if (n && __builtin_popcount(mask) < VOL_WRITE_QUORUM) {
			stall(v);
			n = 0;
		}
		if (!n && blocked) {
			/* complete() wakes it once the chains are done */
			struct timespec ts;

			vol_deadline(&ts, 50);
			pthread_cond_timedwait(&v->mat_cv, &v->lock, &ts);
			continue;
		}
		if (!n) {
			if (v->sync_req) {
				v->sync_req = 0;
				pthread_cond_broadcast(&v->idle_cv);
			}
			if (v->mat_stopping)
				break;
			if (v->err) /* nothing more will become durable */
				pthread_cond_wait(&v->mat_cv, &v->lock);
			continue;
		}
		pthread_mutex_unlock(&v->lock);
		pthread_mutex_lock(&v->repair_lock);
		ret = vol_mat_apply(v, bs, n, NULL, mask, 0, &failed);
		pthread_mutex_lock(&v->lock);
		for (int z = 0; z < VOL_ZONES; z++) {
			if (failed & (1u << z))
				vol_zone_fail(v, z, -EIO,
					      "segment write failed");
			if (!ret && (mask & ~failed & (1u << z)))
				good++;
		}
		/*
		 * V5: what a zone did not get is named before reuse.  By the
		 * round's own mask, not the zones up now: a zone admitted
		 * during the round missed it as well.
		 */
		for (int z = 0; z < VOL_ZONES; z++)
			if (ret || !(mask & ~failed & (1u << z)))
				vol_wim_mark_batches(v, z, bs, n);
		pthread_mutex_unlock(&v->lock);
		pthread_mutex_unlock(&v->repair_lock);
		ret = good >= VOL_WRITE_QUORUM ? vol_wim_flush(v) : -EIO;
		pthread_mutex_lock(&v->lock);
		round_done(v, bs, n, !ret);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* The ring (v->mat_ring) is set up by vol_open, recovery uses it too. */
int vol_mat_start(struct vol *v)
{
	return vol_thread_start(&v->materialiser, "sixfold-mat", materialiser,
				v);
}

/* After vol_log_stop: drains what is durable, then stops. */
void vol_mat_stop(struct vol *v)
{
	pthread_mutex_lock(&v->lock);
	v->mat_stopping = 1;
	pthread_cond_broadcast(&v->mat_cv);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->materialiser, NULL);
}

/* Caller holds v->lock.  Is every record up to lsn materialised? */
static int materialised_to(const struct vol *v, uint64_t lsn)
{
	for (const struct vol_batch *b = v->batches; b; b = b->next)
		if (!b->materialised)
			return b->h.first_lsn > lsn;
	return 1;
}

/*
 * What is durable when it is called, not what commits add meanwhile:
 * waiting for no record to wait at all, it could wait for as long as
 * another thread kept committing (a scrub started under load did).
 */
int vol_sync(struct vol *v)
{
	uint64_t upto;
	int ret;

	pthread_mutex_lock(&v->lock);
	v->mat_stalled = 0; /* one more try, now */
	upto = v->durable_lsn;
	while (!materialised_to(v, upto) && !v->err && !v->mat_stalled) {
		v->sync_req = 1;
		pthread_cond_broadcast(&v->mat_cv);
		pthread_cond_wait(&v->idle_cv, &v->lock);
	}
	ret = v->err ? v->err : materialised_to(v, upto) ? 0 : -EIO;
	v->sync_req = 0; /* rounds after it may be paced again */
	pthread_mutex_unlock(&v->lock);
	return ret;
}
