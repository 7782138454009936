/*
 * fs_alloc.c - the block allocator: per-PG bitmaps and descriptors, a
 * bounded block cache, placement policy, deferred frees, statfs, check.
 *
 * Layer: fs/.  Reads its blocks with vol_read; never writes: changed
 * blocks go to the caller's volume transaction through fs_alloc_flush.
 * Knows nothing of the B+tree, inodes or files.  Formats: fs_format.h
 * Part 2, bytes through fs_items.c only.
 *
 * DESIGN NOTES
 *
 * Structure.  Each protection group (PG, 10 GiB) keeps its own
 * allocation state in its first blocks: a descriptor (block 1: used
 * blocks per 32768-block window) and 80 bitmap blocks (blocks 2..81, one
 * per window); file data and B+tree nodes live from block 128 on (the
 * "data area").  Never-written blocks read as zeros, which is a valid
 * "empty" descriptor and bitmap, so a PG costs nothing until its first
 * allocation, and the volume grows by exactly one PG when an allocation
 * in a new PG commits (its descriptor and bitmap are written in that
 * transaction).  The superblock carries the totals (used_blocks,
 * pg_count) and the cursors, so mount reads no bitmap; the counts of a
 * PG are read from its descriptor when a search first needs them.  The
 * counts are not B+tree items: a node allocation would then change the
 * tree it allocates for (recursion), and a transaction's block count
 * would have no small bound.
 *
 * Memory: at most cache_max clean blocks (default 128 x 4 KiB) + the
 * dirty blocks of the open transaction (bounded by its size, at most
 * VOL_TXN_MAX_RECS) + the pinned ones (at most 2 per call), and 4 bytes
 * per PG of the maximum size for the per-PG counts (26 KiB at 64 TiB):
 * independent of capacity and of how full the volume is.
 *
 * Invariants (fs_alloc_check verifies 1..4 and 6):
 *   A1 A bit is set iff its block is allocated in the in-memory view.
 *      Blocks freed by the open transaction keep their bits until
 *      fs_alloc_committed: a block is not handed out again before the
 *      transaction that freed it is durable (DESIGN 2, sixfold(5) "When
 *      an LBA may be reused").
 *   A2 Counts agree: for every cached window win_used[w] = bits set; a
 *      descriptor's used = sum of win_used; pg_used[pg] = used of its
 *      descriptor for every PG whose count is known; a->used = sum over
 *      all PGs (it starts from the superblock's used_blocks).  On disk
 *      the same holds (rules B3, P10, and the superblock's total).
 *   A3 Bits of a PG's first 128 blocks and of blocks past max_blocks are
 *      never set (B1, B2): allocations search the data area only.
 *   A4 Blocks of PGs >= the committed pg_count were never written: such
 *      PGs are created in memory as empty, without a read (written_pgs;
 *      0 while mkfs's transaction, which discards the whole volume, is
 *      open: then no PG is read).
 *   A5 What fs_alloc_flush writes is the in-memory view with the queued
 *      frees applied ("disk view"); fs_alloc_state gives the superblock
 *      values of the same view.  So after the transaction commits, disk
 *      and memory agree once fs_alloc_committed applies the frees.
 *   A6 reserved <= free blocks (data blocks of the maximum size less
 *      used): every allocation drawing on a reservation finds a block.
 *   A8 The metadata reserve (meta_reserve, fs_alloc.h): a reservation or
 *      an unreserved allocation without FS_ALLOC_F_META_RESERVE leaves
 *      at least meta_reserve blocks neither allocated nor promised; one
 *      with it may take them (an operation that frees space).  So once
 *      the other blocks are gone, only freeing operations allocate, and
 *      the reserve is whole again when the space they free comes back.
 *   A7 An allocation lies in one window (one bitmap block and one
 *      descriptor change per call), which bounds a transaction's blocks.
 *
 * Cached block states, and the function of each transition:
 *   absent --desc_get / bmp_get (vol_read + verify, or empty if A4)--> clean
 *   clean --take (alloc, unalloc) or pend_prepare (a queued free)--> dirty
 *   dirty --fs_alloc_committed--> clean --blk_trim (LRU)--> absent
 *   dirty --fs_alloc_rollback--> absent (the disk copy is the truth)
 * A block is pinned (never evicted) while a call uses it through a
 * pointer; dirty blocks are never evicted.
 *
 * Transaction states: committed (no dirty block, no queued free) --alloc,
 * free--> open --fs_alloc_flush--> flushed --fs_alloc_committed-->
 * committed; open or flushed --fs_alloc_rollback--> committed (the last
 * one).  The c_* fields hold the committed state for the rollback.
 *
 * Placement.  Two cursors, data and metadata (B+tree nodes start at the
 * front of a PG, data at window 1, so nodes stay together).  A call
 * first tries the goal block itself (a file growing in place), then the
 * first run of the wanted length from the goal or cursor on within that
 * PG (windows whose count shows too little room are skipped without
 * reading them), then the longest run of the first window with any room.
 * A PG nearly full (FS_ALLOC_NEARLY_FULL_SHIFT) is left for the first
 * open PG that is not, then for a new PG, and only at the maximum size
 * for any PG with room.  The cursor follows the last allocation.
 *
 * Locking: none inside.  The caller's metadata lock (the one that covers
 * the B+tree) protects every field of struct fs_alloc and of its cached
 * blocks.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_alloc.h"
#include "fs/fs_items.h"

#define PG_UNKNOWN UINT32_MAX /* pg_used[] not read yet */
#define WIN_DESC (-1) /* struct ablk.win of a descriptor */
#define MIN_DATA_BLOCKS 64 /* a filesystem needs this much room */

/* A cached descriptor or bitmap block.  Caller's lock. */
struct ablk {
	uint64_t lba; /* where it lives */
	uint64_t pg; /* its PG */
	int win; /* bitmap window, or WIN_DESC */
	uint32_t pins; /* held through a pointer inside one call */
	uint8_t dirty; /* changed by the open transaction */
	uint64_t tick; /* last use, for LRU eviction */
	union {
		uint8_t bits[FS_BLOCK_BYTES]; /* a bitmap block */
		struct fs_pgd d; /* a descriptor, decoded */
	} u;
};

/* A queued free. */
struct run {
	uint64_t lba;
	uint64_t n;
};

/* The allocator.  Every field: the caller's lock. */
struct fs_alloc {
	struct vol *vol; /* reads */
	int (*read)(void *ctx, uint64_t lba, void *buf); /* or this */
	void *read_ctx;
	uint8_t fsid[FS_UUID_BYTES]; /* in descriptors */
	uint64_t max_blocks; /* the volume's maximum */
	uint64_t npg_max; /* PGs of max_blocks */
	uint64_t gen; /* newest committed generation */
	/* in-memory view */
	uint64_t pg_count; /* PGs opened */
	uint64_t used; /* bits set (queued frees included) */
	uint64_t reserved; /* promised to transactions */
	uint64_t meta_reserve; /* A8: kept for FS_ALLOC_F_META_RESERVE */
	uint64_t hint[2]; /* cursors by enum fs_alloc_kind */
	/* committed view, for fs_alloc_rollback */
	uint64_t c_pg_count, c_used, c_hint[2];
	uint64_t written_pgs; /* PGs whose blocks may be on disk (A4) */
	uint32_t *pg_used; /* [npg_max] used per PG, or PG_UNKNOWN */
	/* block cache */
	struct ablk **blk; /* nblk entries, unordered */
	unsigned nblk, cap; /* entries, room */
	unsigned ndirty; /* dirty entries */
	uint32_t cache_max; /* clean entries kept */
	uint64_t tick; /* LRU clock */
	/* queued frees */
	struct run *pend; /* npend runs */
	unsigned npend, pend_cap;
	uint64_t pend_blocks; /* their blocks */
	uint8_t scratch[FS_BLOCK_BYTES]; /* reads, encoded descriptors */
};

/* A run chosen in a window. */
struct pick {
	unsigned w; /* window */
	unsigned start, len; /* bits */
};

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Data blocks of a volume of max_blocks grown to its maximum. */
static uint64_t data_of_max(uint64_t max_blocks)
{
	uint64_t npg = fs_pg_count_max(max_blocks);

	if (npg == 0)
		return 0;
	return (npg - 1) * fs_pg_data_blocks(VOL_PG_BLOCKS) +
	       fs_pg_data_blocks(fs_pg_blocks(npg - 1, max_blocks));
}

/* ---- geometry ---- */

static uint64_t pg_blocks(const struct fs_alloc *a, uint64_t pg)
{
	return fs_pg_blocks(pg, a->max_blocks);
}

static uint64_t pg_data(const struct fs_alloc *a, uint64_t pg)
{
	return fs_pg_data_blocks(pg_blocks(a, pg));
}

/* Data blocks of the first npg PGs. */
static uint64_t data_upto(const struct fs_alloc *a, uint64_t npg)
{
	if (npg == 0)
		return 0;
	return (npg - 1) * fs_pg_data_blocks(VOL_PG_BLOCKS) +
	       pg_data(a, npg - 1);
}

static unsigned win_free(const struct fs_alloc *a, const struct fs_pgd *d,
			 unsigned w)
{
	return fs_window_data_blocks(pg_blocks(a, d->pg), w) - d->win_used[w];
}

/* First bit of window w that is in the data area. */
static unsigned win_first(unsigned w)
{
	return w ? 0 : FS_PG_META_BLOCKS;
}

/* Where the cursor of kind starts in PG pg. */
static uint64_t default_start(const struct fs_alloc *a, enum fs_alloc_kind kind,
			      uint64_t pg)
{
	uint64_t off = FS_PG_META_BLOCKS;

	if (kind == FS_ALLOC_DATA && pg_blocks(a, pg) > FS_WINDOW_BLOCKS)
		off = FS_WINDOW_BLOCKS;
	return fs_pg_start(pg) + off;
}

/* lba is a data block of an opened PG. */
static int in_open_pg(const struct fs_alloc *a, uint64_t lba)
{
	return fs_lba_is_data(lba, a->max_blocks) &&
	       lba / VOL_PG_BLOCKS < a->pg_count;
}

/* The cursor of kind, made valid. */
static uint64_t cursor(const struct fs_alloc *a, enum fs_alloc_kind kind)
{
	uint64_t h = a->hint[kind];

	if (in_open_pg(a, h))
		return h;
	return default_start(a, kind,
			     min64(h / VOL_PG_BLOCKS, a->pg_count - 1));
}

/* ---- bits ---- */

static void bits_set(uint8_t *bits, unsigned from, unsigned n, int on)
{
	for (unsigned i = from; i < from + n; i++) {
		if (on)
			bits[i >> 3] |= (uint8_t)(1u << (i & 7));
		else
			bits[i >> 3] &= (uint8_t) ~(1u << (i & 7));
	}
}

static int bit_get(const uint8_t *bits, unsigned i)
{
	return bits[i >> 3] >> (i & 7) & 1;
}

/* First bit in [from, to) equal to val, or to. */
static unsigned next_bit(const uint8_t *bits, unsigned from, unsigned to,
			 int val)
{
	uint64_t skip = val ? 0 : UINT64_MAX; /* words without val */
	unsigned i = from;

	while (i < to) {
		if (i % 64 == 0 && i + 64 <= to &&
		    fs_get64(bits + i / 8) == skip) {
			i += 64;
			continue;
		}
		if (bit_get(bits, i) == val)
			return i;
		i++;
	}
	return to;
}

/* All of [from, from + n) are val. */
static int bits_all(const uint8_t *bits, unsigned from, unsigned n, int val)
{
	return next_bit(bits, from, from + n, !val) == from + n;
}

/*
 * In [from, to): the first run of want free bits (1, *len = want), else
 * the longest shorter one (0, *len maybe 0).
 */
static int find_run(const uint8_t *bits, unsigned from, unsigned to,
		    unsigned want, unsigned *start, unsigned *len)
{
	unsigned best = 0, best_at = from;
	unsigned i = next_bit(bits, from, to, 0);

	while (i < to) {
		unsigned end =
			next_bit(bits, i, to - i > want ? i + want : to, 1);

		if (end - i >= want) {
			*start = i;
			*len = want;
			return 1;
		}
		if (end - i > best) {
			best = end - i;
			best_at = i;
		}
		i = next_bit(bits, end, to, 0);
	}
	*start = best_at;
	*len = best;
	return 0;
}

/* ---- block cache ---- */

static struct ablk *blk_find(struct fs_alloc *a, uint64_t lba)
{
	for (unsigned i = 0; i < a->nblk; i++) {
		if (a->blk[i]->lba == lba) {
			a->blk[i]->tick = ++a->tick;
			return a->blk[i];
		}
	}
	return NULL;
}

static void blk_drop_at(struct fs_alloc *a, unsigned i)
{
	if (a->blk[i]->dirty)
		a->ndirty--;
	free(a->blk[i]);
	a->blk[i] = a->blk[--a->nblk];
}

static void blk_drop(struct fs_alloc *a, struct ablk *b)
{
	for (unsigned i = 0; i < a->nblk; i++)
		if (a->blk[i] == b) {
			blk_drop_at(a, i);
			return;
		}
}

/* Evict clean, unpinned blocks, least recently used first, to the bound. */
static void blk_trim(struct fs_alloc *a)
{
	for (;;) {
		unsigned clean = 0, victim = 0;
		uint64_t oldest = UINT64_MAX;

		for (unsigned i = 0; i < a->nblk; i++) {
			struct ablk *b = a->blk[i];

			if (b->dirty || b->pins)
				continue;
			clean++;
			if (b->tick < oldest) {
				oldest = b->tick;
				victim = i;
			}
		}
		if (clean <= a->cache_max)
			return;
		blk_drop_at(a, victim);
	}
}

static int blk_new(struct fs_alloc *a, uint64_t lba, uint64_t pg, int win,
		   struct ablk **out)
{
	struct ablk *b;

	blk_trim(a);
	if (a->nblk == a->cap) {
		unsigned cap = a->cap ? 2 * a->cap : 64;
		struct ablk **nb = realloc(a->blk, cap * sizeof(*nb));

		if (!nb)
			return -ENOMEM;
		a->blk = nb;
		a->cap = cap;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->lba = lba;
	b->pg = pg;
	b->win = win;
	b->tick = ++a->tick;
	a->blk[a->nblk++] = b;
	*out = b;
	return 0;
}

static void blk_dirty(struct fs_alloc *a, struct ablk *b)
{
	if (!b->dirty) {
		b->dirty = 1;
		a->ndirty++;
	}
}

/* The PG's count is now known to be used (from its descriptor). */
static int pg_used_learn(struct fs_alloc *a, uint64_t pg, uint32_t used)
{
	if (a->pg_used[pg] == PG_UNKNOWN)
		a->pg_used[pg] = used;
	if (a->pg_used[pg] != used)
		return FS_CORRUPT_AT("PG descriptor of PG", pg,
				     "P10 count changed behind the allocator");
	return 0;
}

/* Read and decode PG pg's descriptor into b. */
static int blk_read(struct fs_alloc *a, uint64_t lba, void *buf)
{
	return a->read ? a->read(a->read_ctx, lba, buf) :
			 vol_read(a->vol, lba, buf);
}

static int desc_read(struct fs_alloc *a, uint64_t pg, struct ablk *b)
{
	struct fs_pgd_expect ex = {
		.pg = pg,
		.max_blocks = a->max_blocks,
		.fsid = a->fsid,
		.max_gen = a->gen,
	};
	int ret;

	if (pg >= a->written_pgs) { /* A4: never written */
		fs_pgd_init(&b->u.d, pg, a->max_blocks);
		return 0;
	}
	ret = blk_read(a, b->lba, a->scratch);
	if (ret < 0)
		return ret;
	return fs_pgd_decode(a->scratch, &ex, &b->u.d);
}

/* The descriptor of opened PG pg, cached. */
static int desc_get(struct fs_alloc *a, uint64_t pg, struct ablk **out)
{
	uint64_t lba = fs_pg_start(pg) + FS_PG_DESC_OFF;
	struct ablk *b = blk_find(a, lba);
	int ret;

	assert(pg < a->pg_count);
	if (b) {
		*out = b;
		return 0;
	}
	ret = blk_new(a, lba, pg, WIN_DESC, &b);
	if (ret)
		return ret;
	ret = desc_read(a, pg, b);
	if (!ret)
		ret = pg_used_learn(a, pg, b->u.d.used);
	if (ret) {
		blk_drop(a, b);
		return ret;
	}
	*out = b;
	return 0;
}

/* Bitmap block w of the PG of descriptor d (pinned by the caller). */
static int bmp_get(struct fs_alloc *a, struct ablk *d, unsigned w,
		   struct ablk **out)
{
	uint64_t lba = fs_pg_start(d->pg) + FS_PG_BITMAP_OFF + w;
	struct ablk *b = blk_find(a, lba);
	int ret = 0;

	assert(d->pins > 0 && w < d->u.d.nwin);
	if (b) {
		*out = b;
		return 0;
	}
	ret = blk_new(a, lba, d->pg, (int)w, &b);
	if (ret)
		return ret;
	if (d->pg < a->written_pgs) { /* else A4: zero as calloc left it */
		ret = blk_read(a, lba, b->u.bits);
		if (ret >= 0)
			ret = fs_bitmap_verify(b->u.bits, d->pg, w,
					       a->max_blocks,
					       d->u.d.win_used[w]);
	}
	if (ret < 0) {
		blk_drop(a, b);
		return ret;
	}
	*out = b;
	return 0;
}

/* Allocate (on) or free (off) bits [start, start + len) of window b. */
static void take(struct fs_alloc *a, struct ablk *d, struct ablk *b,
		 unsigned start, unsigned len, int on)
{
	unsigned w = (unsigned)b->win;

	assert(bits_all(b->u.bits, start, len, !on));
	bits_set(b->u.bits, start, len, on);
	if (on) {
		d->u.d.win_used[w] += len;
		d->u.d.used += len;
		a->pg_used[d->pg] += len;
		a->used += len;
	} else {
		d->u.d.win_used[w] -= len;
		d->u.d.used -= len;
		a->pg_used[d->pg] -= len;
		a->used -= len;
	}
	blk_dirty(a, b);
	blk_dirty(a, d);
}

/* ---- placement ---- */

/* Free data blocks of opened PG pg (reads its descriptor if needed). */
static int pg_free(struct fs_alloc *a, uint64_t pg, uint64_t *free_out)
{
	struct ablk *d;
	int ret = 0;

	if (a->pg_used[pg] == PG_UNKNOWN)
		ret = desc_get(a, pg, &d);
	if (ret)
		return ret;
	*free_out = pg_data(a, pg) - a->pg_used[pg];
	return 0;
}

static int nearly_full(const struct fs_alloc *a, uint64_t pg, uint64_t free)
{
	return free < pg_data(a, pg) >> FS_ALLOC_NEARLY_FULL_SHIFT;
}

/*
 * In PG d, a run of want from window w0, bit bit0 on (wrapping around the
 * PG), else the longest run of the first window with room.
 */
static int pick_in_pg(struct fs_alloc *a, struct ablk *d, unsigned w0,
		      unsigned bit0, unsigned want, struct pick *p)
{
	unsigned nwin = d->u.d.nwin, w, from, to;
	struct ablk *b;
	int ret;

	for (unsigned i = 0; i <= nwin; i++) { /* the last: w0 below bit0 */
		w = (w0 + i) % nwin;
		from = i == 0 ? bit0 : win_first(w);
		to = i == nwin ? bit0 : fs_window_bits(pg_blocks(a, d->pg), w);
		if (win_free(a, &d->u.d, w) < want || from >= to)
			continue;
		ret = bmp_get(a, d, w, &b);
		if (ret)
			return ret;
		if (find_run(b->u.bits, from, to, want, &p->start, &p->len)) {
			p->w = w;
			return 0;
		}
	}
	for (unsigned i = 0; i < nwin; i++) {
		w = (w0 + i) % nwin;
		if (!win_free(a, &d->u.d, w))
			continue;
		ret = bmp_get(a, d, w, &b);
		if (ret)
			return ret;
		find_run(b->u.bits, win_first(w),
			 fs_window_bits(pg_blocks(a, d->pg), w), want,
			 &p->start, &p->len);
		p->w = w;
		return p->len ? 0 :
				FS_CORRUPT_AT("bitmap block at LBA", b->lba,
					      "B3 no free bit but a count "
					      "says so");
	}
	return -ENOSPC;
}

/* Allocate in opened PG pg from start on (see pick_in_pg). */
static int alloc_in_pg(struct fs_alloc *a, uint64_t pg, uint64_t start,
		       unsigned want, uint64_t *lba, uint32_t *n)
{
	uint64_t off = start - fs_pg_start(pg);
	unsigned w0 = (unsigned)(off / FS_WINDOW_BLOCKS);
	struct ablk *d, *b;
	struct pick p;
	int ret = desc_get(a, pg, &d);

	if (ret)
		return ret;
	d->pins++;
	ret = pick_in_pg(a, d, w0, (unsigned)(off % FS_WINDOW_BLOCKS), want,
			 &p);
	if (!ret)
		ret = bmp_get(a, d, p.w, &b);
	if (!ret) {
		take(a, d, b, p.start, p.len, 1);
		*lba = fs_pg_start(pg) + (uint64_t)p.w * FS_WINDOW_BLOCKS +
		       p.start;
		*n = p.len;
	}
	d->pins--;
	return ret;
}

/* The block at goal if free, with what follows it, up to want. */
static int alloc_at(struct fs_alloc *a, uint64_t goal, unsigned want,
		    uint64_t *lba, uint32_t *n)
{
	uint64_t pg = goal / VOL_PG_BLOCKS, off = goal % VOL_PG_BLOCKS;
	unsigned w = (unsigned)(off / FS_WINDOW_BLOCKS);
	unsigned bit = (unsigned)(off % FS_WINDOW_BLOCKS), end, to;
	struct ablk *d, *b;
	int ret = desc_get(a, pg, &d);

	if (ret)
		return ret;
	d->pins++;
	ret = bmp_get(a, d, w, &b);
	if (!ret && !bit_get(b->u.bits, bit)) {
		to = fs_window_bits(pg_blocks(a, pg), w);
		end = next_bit(b->u.bits, bit,
			       to - bit > want ? bit + want : to, 1);
		take(a, d, b, bit, end - bit, 1);
		*lba = goal;
		*n = end - bit;
	} else if (!ret) {
		ret = -ENOSPC; /* taken: search */
	}
	d->pins--;
	return ret;
}

/* Allocate in the next PG, opening it (empty, A4); closed again if the
 * allocation fails, so nothing changes then. */
static int alloc_new_pg(struct fs_alloc *a, enum fs_alloc_kind kind,
			unsigned want, uint64_t *lba, uint32_t *n)
{
	uint64_t pg = a->pg_count;
	int ret;

	a->pg_used[a->pg_count++] = 0;
	ret = alloc_in_pg(a, pg, default_start(a, kind, pg), want, lba, n);
	if (ret) {
		a->pg_count--;
		a->pg_used[pg] = PG_UNKNOWN;
	}
	return ret;
}

/* Any PG other than skip, from first on: one not nearly full (or with
 * any room, if any_room).  *pg = UINT64_MAX if none. */
static int pg_choose(struct fs_alloc *a, uint64_t first, uint64_t skip,
		     int any_room, uint64_t *pg)
{
	for (uint64_t i = 0; i < a->pg_count; i++) {
		uint64_t p = (first + i) % a->pg_count, free;
		int ret;

		if (p == skip)
			continue;
		ret = pg_free(a, p, &free);
		if (ret)
			return ret;
		if (free && (any_room || !nearly_full(a, p, free))) {
			*pg = p;
			return 0;
		}
	}
	*pg = UINT64_MAX;
	return 0;
}

/* Placement policy (design notes): goal, cursor PG, other PGs, new PG. */
static int alloc_search(struct fs_alloc *a, enum fs_alloc_kind kind,
			uint64_t goal, unsigned want, uint64_t *lba,
			uint32_t *n)
{
	int has_goal = in_open_pg(a, goal);
	uint64_t start = has_goal ? goal : cursor(a, kind);
	uint64_t pg = start / VOL_PG_BLOCKS, free, other;
	int ret = has_goal ? alloc_at(a, goal, want, lba, n) : -ENOSPC;

	if (ret != -ENOSPC)
		return ret;
	ret = pg_free(a, pg, &free);
	if (ret)
		return ret;
	if (free && (has_goal || !nearly_full(a, pg, free)))
		return alloc_in_pg(a, pg, start, want, lba, n);
	ret = pg_choose(a, 0, pg, 0, &other);
	if (!ret && other == UINT64_MAX && a->pg_count < a->npg_max &&
	    pg_data(a, a->pg_count))
		return alloc_new_pg(a, kind, want, lba, n);
	if (!ret && other == UINT64_MAX)
		ret = pg_choose(a, pg, UINT64_MAX, 1, &other);
	if (ret)
		return ret;
	if (other == UINT64_MAX)
		return -ENOSPC;
	return alloc_in_pg(a, other, default_start(a, kind, other), want, lba,
			   n);
}

/* ---- public: open, reserve, alloc, free ---- */

int fs_alloc_open(const struct fs_alloc_cfg *cfg, struct fs_alloc **out)
{
	struct fs_alloc *a;
	uint64_t npg = fs_pg_count_max(cfg->max_blocks);

	if (!cfg->vol || cfg->max_blocks > VOL_MAX_BLOCKS ||
	    cfg->pg_count < 1 || cfg->pg_count > npg ||
	    fs_pg_data_blocks(fs_pg_blocks(0, cfg->max_blocks)) <
		    MIN_DATA_BLOCKS ||
	    cfg->meta_reserve_blocks > data_of_max(cfg->max_blocks))
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->pg_used = malloc(npg * sizeof(*a->pg_used));
	if (!a->pg_used) {
		free(a);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < npg; i++)
		a->pg_used[i] = PG_UNKNOWN;
	a->vol = cfg->vol;
	a->read = cfg->read;
	a->read_ctx = cfg->read_ctx;
	memcpy(a->fsid, cfg->fsid, FS_UUID_BYTES);
	a->max_blocks = cfg->max_blocks;
	a->npg_max = npg;
	a->gen = cfg->gen;
	a->meta_reserve = cfg->meta_reserve_blocks;
	a->pg_count = a->c_pg_count = cfg->pg_count;
	a->written_pgs = cfg->fresh ? 0 : cfg->pg_count;
	a->used = a->c_used = cfg->used_blocks;
	a->hint[FS_ALLOC_DATA] = a->c_hint[FS_ALLOC_DATA] = cfg->data_hint;
	a->hint[FS_ALLOC_META] = a->c_hint[FS_ALLOC_META] = cfg->meta_hint;
	a->cache_max = cfg->cache_blocks ? cfg->cache_blocks :
					   FS_ALLOC_CACHE_BLOCKS;
	*out = a;
	return 0;
}

void fs_alloc_close(struct fs_alloc *a)
{
	if (!a)
		return;
	while (a->nblk)
		blk_drop_at(a, a->nblk - 1);
	free(a->blk);
	free(a->pend);
	free(a->pg_used);
	free(a);
}

/* Blocks neither allocated nor promised (A6). */
static uint64_t free_unreserved(const struct fs_alloc *a)
{
	uint64_t room = data_upto(a, a->npg_max) - a->used;

	assert(room >= a->reserved);
	return room - a->reserved;
}

/* Blocks a reservation or unreserved allocation with flags may take
 * (A8). */
static uint64_t avail_for(const struct fs_alloc *a, int flags)
{
	uint64_t room = free_unreserved(a);

	if (flags & FS_ALLOC_F_META_RESERVE)
		return room;
	return room > a->meta_reserve ? room - a->meta_reserve : 0;
}

uint64_t fs_alloc_meta_reserve(uint64_t max_blocks)
{
	uint64_t cap = data_of_max(max_blocks) >> FS_ALLOC_META_RESERVE_SHIFT;

	return min64(FS_ALLOC_META_RESERVE_BLOCKS, cap);
}

int fs_alloc_reserve(struct fs_alloc *a, uint64_t n, int flags)
{
	if (n > avail_for(a, flags))
		return -ENOSPC;
	a->reserved += n;
	return 0;
}

void fs_alloc_unreserve(struct fs_alloc *a, uint64_t n)
{
	assert(n <= a->reserved);
	a->reserved -= n;
}

/* The cursor of kind moves past an allocation ending at end. */
static void cursor_set(struct fs_alloc *a, enum fs_alloc_kind kind,
		       uint64_t end)
{
	a->hint[kind] =
		in_open_pg(a, end) ?
			end :
			default_start(a, kind, (end - 1) / VOL_PG_BLOCKS);
}

int fs_alloc_alloc(struct fs_alloc *a, enum fs_alloc_kind kind, uint64_t goal,
		   uint32_t want, int flags, uint64_t *lba, uint32_t *n)
{
	int resv = flags & FS_ALLOC_F_RESERVED;
	int ret;

	if (want == 0 || want > FS_WINDOW_BLOCKS ||
	    (kind != FS_ALLOC_DATA && kind != FS_ALLOC_META) ||
	    (resv && want > a->reserved))
		return -EINVAL;
	if (!resv && avail_for(a, flags) == 0)
		return -ENOSPC;
	if (!resv)
		want = (uint32_t)min64(want, avail_for(a, flags));
	ret = alloc_search(a, kind, goal, want, lba, n);
	if (!ret) {
		if (resv)
			a->reserved -= *n;
		cursor_set(a, kind, *lba + *n);
	}
	blk_trim(a);
	return ret;
}

void fs_alloc_unalloc(struct fs_alloc *a, uint64_t lba, uint32_t n, int flags)
{
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	unsigned w = (unsigned)(off / FS_WINDOW_BLOCKS);
	unsigned bit = (unsigned)(off % FS_WINDOW_BLOCKS);
	struct ablk *d, *b;

	/* Blocks of this transaction: their blocks are cached and dirty. */
	d = blk_find(a, fs_pg_start(pg) + FS_PG_DESC_OFF);
	b = blk_find(a, fs_pg_start(pg) + FS_PG_BITMAP_OFF + w);
	FS_VERIFY(d && b && d->dirty && b->dirty && n >= 1 &&
		  bit + n <= FS_WINDOW_BLOCKS &&
		  bits_all(b->u.bits, bit, n, 1));
	take(a, d, b, bit, n, 0);
	if (flags & FS_ALLOC_F_RESERVED)
		a->reserved += n;
}

int fs_alloc_free(struct fs_alloc *a, uint64_t lba, uint64_t n)
{
	uint64_t pg = lba / VOL_PG_BLOCKS;

	if (n < 1 || !in_open_pg(a, lba) ||
	    n > pg_blocks(a, pg) - lba % VOL_PG_BLOCKS)
		return -EINVAL;
	if (a->npend == a->pend_cap) {
		unsigned cap = a->pend_cap ? 2 * a->pend_cap : 64;
		struct run *np = realloc(a->pend, cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		a->pend = np;
		a->pend_cap = cap;
	}
	a->pend[a->npend].lba = lba;
	a->pend[a->npend++].n = n;
	a->pend_blocks += n;
	return 0;
}

/* ---- flush, commit, rollback ---- */

/* Piece of run r in its window w: *bit and *len; 0 if r misses w. */
static int run_piece(const struct run *r, unsigned w, unsigned *bit,
		     unsigned *len)
{
	uint64_t off = r->lba % VOL_PG_BLOCKS, end = off + r->n;
	uint64_t ws = (uint64_t)w * FS_WINDOW_BLOCKS;
	uint64_t we = ws + FS_WINDOW_BLOCKS;
	uint64_t s = off > ws ? off : ws, e = end < we ? end : we;

	*bit = *len = 0;
	if (s >= e)
		return 0;
	*bit = (unsigned)(s - ws);
	*len = (unsigned)(e - s);
	return 1;
}

static unsigned run_first_win(const struct run *r)
{
	return (unsigned)(r->lba % VOL_PG_BLOCKS / FS_WINDOW_BLOCKS);
}

static unsigned run_last_win(const struct run *r)
{
	return (unsigned)((r->lba % VOL_PG_BLOCKS + r->n - 1) /
			  FS_WINDOW_BLOCKS);
}

static int run_cmp(const void *x, const void *y)
{
	const struct run *p = x, *q = y;

	return p->lba < q->lba ? -1 : p->lba > q->lba;
}

/* Bring the blocks of queued run r into the cache, dirty, checking that
 * every block of it is allocated. */
static int pend_prepare_run(struct fs_alloc *a, const struct run *r)
{
	uint64_t pg = r->lba / VOL_PG_BLOCKS;
	unsigned bit, len;
	struct ablk *d, *b;
	int ret = desc_get(a, pg, &d);

	if (ret)
		return ret;
	d->pins++;
	for (unsigned w = run_first_win(r); !ret && w <= run_last_win(r); w++) {
		run_piece(r, w, &bit, &len);
		ret = bmp_get(a, d, w, &b);
		if (!ret && !bits_all(b->u.bits, bit, len, 1))
			ret = FS_CORRUPT_AT("freed run at LBA", r->lba,
					    "A1 free of a block that is not "
					    "allocated");
		if (!ret) {
			blk_dirty(a, b);
			blk_dirty(a, d);
		}
	}
	d->pins--;
	return ret;
}

static int pend_prepare(struct fs_alloc *a)
{
	int ret = 0;

	if (a->npend)
		qsort(a->pend, a->npend, sizeof(*a->pend), run_cmp);
	for (unsigned i = 0; i + 1 < a->npend; i++)
		if (a->pend[i].lba + a->pend[i].n > a->pend[i + 1].lba)
			return FS_CORRUPT_AT("freed run at LBA",
					     a->pend[i + 1].lba,
					     "A1 block freed twice");
	for (unsigned i = 0; !ret && i < a->npend; i++)
		ret = pend_prepare_run(a, &a->pend[i]);
	return ret;
}

/* Apply (on = 0) or undo (on = 1) the queued frees in memory.  Their
 * blocks are cached and dirty (pend_prepare). */
static void pend_apply(struct fs_alloc *a, int on)
{
	for (unsigned i = 0; i < a->npend; i++) {
		const struct run *r = &a->pend[i];
		uint64_t base = fs_pg_start(r->lba / VOL_PG_BLOCKS);
		struct ablk *d = blk_find(a, base + FS_PG_DESC_OFF);

		for (unsigned w = run_first_win(r); w <= run_last_win(r); w++) {
			struct ablk *b;
			unsigned bit, len;

			b = blk_find(a, base + FS_PG_BITMAP_OFF + w);
			FS_VERIFY(d && b && b->dirty);
			run_piece(r, w, &bit, &len);
			take(a, d, b, bit, len, on);
		}
	}
}

static int write_dirty(struct fs_alloc *a, uint64_t gen,
		       int (*write)(void *arg, uint64_t lba, const void *blk),
		       void *arg)
{
	int count = 0;

	for (unsigned i = 0; i < a->nblk; i++) {
		struct ablk *b = a->blk[i];
		const void *src = b->u.bits;
		int ret;

		if (!b->dirty)
			continue;
		if (b->win == WIN_DESC) {
			fs_pgd_encode(&b->u.d, a->fsid, gen, a->max_blocks,
				      a->scratch);
			src = a->scratch;
		} else { /* A2, A3 hold before the bytes leave */
			struct ablk *d = blk_find(a, fs_pg_start(b->pg) +
							     FS_PG_DESC_OFF);

			FS_VERIFY(d && d->dirty &&
				  fs_bitmap_verify(
					  b->u.bits, b->pg, (unsigned)b->win,
					  a->max_blocks,
					  d->u.d.win_used[b->win]) == 0);
		}
		ret = write(arg, b->lba, src);
		if (ret < 0)
			return ret;
		count++;
	}
	return count;
}

static int discard_runs(struct fs_alloc *a,
			int (*discard)(void *arg, uint64_t lba, uint64_t n),
			void *arg)
{
	for (unsigned i = 0; i < a->npend;) {
		uint64_t lba = a->pend[i].lba, n = a->pend[i].n;
		int ret;

		for (i++; i < a->npend && a->pend[i].lba == lba + n; i++)
			n += a->pend[i].n;
		ret = discard(arg, lba, n);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int fs_alloc_flush(struct fs_alloc *a, uint64_t gen,
		   int (*write)(void *arg, uint64_t lba, const void *blk),
		   int (*discard)(void *arg, uint64_t lba, uint64_t n),
		   void *arg)
{
	int count, ret = pend_prepare(a);

	if (ret)
		return ret;
	pend_apply(a, 0); /* A5: the disk view */
	count = write_dirty(a, gen, write, arg);
	pend_apply(a, 1);
	if (count < 0)
		return count;
	ret = discard_runs(a, discard, arg);
	return ret < 0 ? ret : count;
}

void fs_alloc_committed(struct fs_alloc *a, uint64_t gen)
{
	pend_apply(a, 0);
	a->npend = 0;
	a->pend_blocks = 0;
	for (unsigned i = 0; i < a->nblk; i++)
		a->blk[i]->dirty = 0;
	a->ndirty = 0;
	a->gen = gen;
	a->c_pg_count = a->written_pgs = a->pg_count;
	a->c_used = a->used;
	memcpy(a->c_hint, a->hint, sizeof(a->hint));
	blk_trim(a);
}

void fs_alloc_rollback(struct fs_alloc *a)
{
	for (unsigned i = 0; i < a->nblk;) {
		struct ablk *b = a->blk[i];

		if (!b->dirty) {
			i++;
			continue;
		}
		if (b->win == WIN_DESC)
			a->pg_used[b->pg] = PG_UNKNOWN; /* reread it */
		blk_drop_at(a, i);
	}
	for (uint64_t pg = a->c_pg_count; pg < a->pg_count; pg++)
		a->pg_used[pg] = PG_UNKNOWN;
	a->npend = 0;
	a->pend_blocks = 0;
	a->pg_count = a->c_pg_count;
	a->used = a->c_used;
	memcpy(a->hint, a->c_hint, sizeof(a->hint));
}

/* ---- public: numbers ---- */

/* Queued run i touches block lba (its descriptor or a bitmap block). */
static int run_touches(const struct run *r, uint64_t lba)
{
	uint64_t base = fs_pg_start(r->lba / VOL_PG_BLOCKS);

	if (lba == base + FS_PG_DESC_OFF)
		return 1;
	return lba >= base + FS_PG_BITMAP_OFF + run_first_win(r) &&
	       lba <= base + FS_PG_BITMAP_OFF + run_last_win(r);
}

/* Block lba is dirty, or an earlier queued run (before i) counts it. */
static int counted(const struct fs_alloc *a, unsigned i, uint64_t lba)
{
	for (unsigned k = 0; k < a->nblk; k++)
		if (a->blk[k]->lba == lba)
			if (a->blk[k]->dirty)
				return 1;
	for (unsigned j = 0; j < i; j++)
		if (run_touches(&a->pend[j], lba))
			return 1;
	return 0;
}

void fs_alloc_pending(const struct fs_alloc *a, unsigned *writes,
		      unsigned *discards)
{
	unsigned n = a->ndirty;

	for (unsigned i = 0; i < a->npend; i++) {
		const struct run *r = &a->pend[i];
		uint64_t base = fs_pg_start(r->lba / VOL_PG_BLOCKS);

		n += !counted(a, i, base + FS_PG_DESC_OFF);
		for (unsigned w = run_first_win(r); w <= run_last_win(r); w++)
			n += !counted(a, i, base + FS_PG_BITMAP_OFF + w);
	}
	*writes = n;
	*discards = a->npend;
}

void fs_alloc_state(const struct fs_alloc *a, struct fs_alloc_state *st)
{
	st->pg_count = a->pg_count;
	st->used_blocks = a->used - a->pend_blocks;
	st->data_hint = cursor(a, FS_ALLOC_DATA);
	st->meta_hint = cursor(a, FS_ALLOC_META);
}

void fs_alloc_statfs(const struct fs_alloc *a, struct fs_alloc_statfs *st)
{
	uint64_t last = a->pg_count - 1;
	uint64_t total = min64(fs_pg_start(a->pg_count), a->max_blocks);
	uint64_t meta = last * FS_PG_META_BLOCKS +
			min64(FS_PG_META_BLOCKS, pg_blocks(a, last));

	st->total_blocks = total;
	st->free_blocks = total - meta - a->used;
	st->max_blocks = a->max_blocks;
	st->max_free_blocks = data_upto(a, a->npg_max) - a->used;
	st->used_blocks = a->used;
	st->reserved_blocks = a->reserved;
	st->meta_reserve_blocks = a->meta_reserve;
}

int fs_alloc_is_used(struct fs_alloc *a, uint64_t lba)
{
	uint64_t off = lba % VOL_PG_BLOCKS;
	struct ablk *d, *b;
	int ret;

	if (!in_open_pg(a, lba))
		return 0;
	ret = desc_get(a, lba / VOL_PG_BLOCKS, &d);
	if (ret)
		return ret;
	d->pins++;
	ret = bmp_get(a, d, (unsigned)(off / FS_WINDOW_BLOCKS), &b);
	d->pins--;
	if (!ret)
		ret = bit_get(b->u.bits, (unsigned)(off % FS_WINDOW_BLOCKS));
	blk_trim(a);
	return ret;
}

/* ---- public: check ---- */

/* A2 for one PG: its bitmaps against its descriptor. */
static int check_pg(struct fs_alloc *a, uint64_t pg,
		    struct fs_alloc_check_stats *st)
{
	struct ablk *d, *b;
	uint64_t sum = 0;
	int ret = desc_get(a, pg, &d);

	if (ret)
		return ret;
	d->pins++;
	for (unsigned w = 0; !ret && w < d->u.d.nwin; w++) {
		ret = bmp_get(a, d, w, &b);
		if (!ret)
			ret = fs_bitmap_verify(b->u.bits, pg, w, a->max_blocks,
					       d->u.d.win_used[w]);
		sum += d->u.d.win_used[w];
		st->windows++;
	}
	if (!ret && (sum != d->u.d.used || a->pg_used[pg] != d->u.d.used))
		ret = FS_CORRUPT_AT("PG descriptor of PG", pg,
				    "P10 used is not the sum of its windows");
	st->used_blocks += d->u.d.used;
	d->pins--;
	return ret;
}

/* I5-like bookkeeping of the cache (programmer errors: asserted). */
static void check_cache(const struct fs_alloc *a)
{
	unsigned dirty = 0;

	for (unsigned i = 0; i < a->nblk; i++) {
		assert(a->blk[i]->pins == 0);
		dirty += a->blk[i]->dirty;
	}
	assert(dirty == a->ndirty);
	assert(a->reserved <= data_upto(a, a->npg_max) - a->used);
	(void)dirty;
}

int fs_alloc_check(struct fs_alloc *a, struct fs_alloc_check_stats *st)
{
	struct fs_alloc_check_stats s = { 0 };
	int ret = 0;

	check_cache(a);
	for (uint64_t pg = 0; !ret && pg < a->pg_count; pg++) {
		ret = check_pg(a, pg, &s);
		s.pgs++;
	}
	if (!ret && s.used_blocks != a->used)
		ret = FS_CORRUPT_AT("allocator: used blocks", a->used,
				    "A2 differ from the sum of the PGs");
	s.free_blocks = data_upto(a, a->pg_count) - s.used_blocks;
	blk_trim(a);
	check_cache(a);
	if (st)
		*st = s;
	return ret;
}
