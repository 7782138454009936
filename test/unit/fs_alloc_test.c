/*
 * fs_alloc_test.c - the block allocator (fs/fs_alloc.c) over real sixfold
 * volumes (mkfs in a temporary directory, removed at exit, also on
 * failure), with a minimal commit glue of its own: each commit puts
 * fs_alloc_flush's blocks and discards and a small state block at LBA 0
 * into one volume transaction.
 *
 * Model: random allocations (data and metadata, random lengths and
 * goals), unallocations, frees of whole runs and of pieces spanning
 * windows, commits and rollbacks, checked against a per-block model:
 * every run lies in one window of the data area and on blocks the model
 * has free; a block freed by the open transaction is never handed out
 * before that transaction commits (DESIGN 2); fs_alloc_pending predicts
 * exactly the blocks fs_alloc_flush writes; statfs, fs_alloc_is_used and
 * fs_alloc_check (full recount) agree with the model; after a reopen the
 * counts match a recount of the bitmaps and every block's state is
 * the model's.
 * Placement: data runs of 256 blocks following their goal are contiguous;
 * metadata blocks are consecutive from the start of the PG, data from
 * window 1.  Growth: filling PG 0 moves allocations to PG 1 only once PG 0
 * is nearly full, and vol_info's capacity grows from 1 to 2 PGs when that
 * allocation commits; at a maximum size of PG + 3000 blocks the last
 * partial PG fills and then -ENOSPC.  Small volume: reservations and
 * allocations stop exactly at the data blocks; freed blocks come back only
 * after the commit; discarded blocks read as zeros.  Metadata reserve:
 * reservations and allocations without FS_ALLOC_F_META_RESERVE stop that
 * many blocks short of the end, those with it reach the end, a
 * reservation held is given back whatever took it, statfs shows the
 * reserve, it survives a reopen, and fs_alloc_meta_reserve gives 384
 * blocks but 1/8 of the data blocks on small volumes.  Damage: a bitmap
 * block with a stray bit and a descriptor with a bad CRC give -EUCLEAN
 * naming B3 and P2.
 *
 * TEST_SEED=n repeats a run; TEST_VERBOSE=1 shows the log.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_alloc.h"
#include "fs/fs_items.h"
#include "test/lib/check.h"
#include "test/lib/tutil.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

#define BLK FS_BLOCK_BYTES
#define PG VOL_PG_BLOCKS
#define WIN FS_WINDOW_BLOCKS
#define META FS_PG_META_BLOCKS

/* ---- random numbers, log ---- */

static char last_log[512];

static void test_log(int level, const char *msg)
{
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* ---- harness: a volume, the allocator, commits ---- */

#define STATE_MAGIC "ALLOCTST"

struct h {
	char dirs[VOL_ZONES][128]; /* zone directories */
	const char *paths[VOL_ZONES];
	struct vol *v;
	struct fs_alloc *a;
	struct vol_txn *vt; /* during a commit */
	uint64_t gen; /* committed generation */
	uint64_t max; /* volume maximum */
	int writes; /* blocks the last flush wrote */
	uint64_t meta_reserve; /* cfg.meta_reserve_blocks at h_open */
};

static const uint8_t test_fsid[16] = { 0xA7, 0x10, 0xC8 };

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Make a volume of max blocks in subdirectory name. */
static int h_mkfs(struct h *h, const char *name, uint64_t max)
{
	memset(h, 0, sizeof(*h));
	h->max = max;
	return CHECK_OK(scratch_mkfs(name, max, h->dirs, h->paths));
}

static int h_open(struct h *h, uint32_t cache)
{
	static uint8_t blk[BLK];
	struct vol_open_opts o = {
		.paths = h->paths,
		.npaths = VOL_ZONES,
		.key = &scratch.key,
		.write_timeout_ms = 5000,
	};
	struct fs_alloc_cfg c = { .pg_count = 1, .cache_blocks = cache };
	struct vol_info vi;

	if (CHECK_OK(vol_open(&o, &h->v)) < 0)
		return -1;
	if (CHECK_OK(vol_info(h->v, &vi)) < 0 ||
	    CHECK_OK(vol_read(h->v, 0, blk)) < 0)
		return -1;
	h->max = vi.max_blocks;
	h->gen = 0;
	if (!memcmp(blk, STATE_MAGIC, 8)) {
		h->gen = get64(blk + 8);
		c.pg_count = get64(blk + 16);
		c.used_blocks = get64(blk + 24);
		c.data_hint = get64(blk + 32);
		c.meta_hint = get64(blk + 40);
	}
	c.vol = h->v;
	memcpy(c.fsid, test_fsid, 16);
	c.max_blocks = h->max;
	c.gen = h->gen;
	c.meta_reserve_blocks = h->meta_reserve;
	return CHECK_OK(fs_alloc_open(&c, &h->a));
}

static void h_close(struct h *h)
{
	fs_alloc_close(h->a);
	CHECK_EQ(vol_close(h->v), 0);
	h->a = NULL;
	h->v = NULL;
}

static int h_write(void *arg, uint64_t lba, const void *blk)
{
	struct h *h = arg;

	h->writes++;
	return vol_txn_write(h->vt, lba, blk);
}

static int h_discard(void *arg, uint64_t lba, uint64_t n)
{
	return vol_txn_discard(((struct h *)arg)->vt, lba, n);
}

/* Flush, the state block, commit; checks fs_alloc_pending's forecast. */
static int h_commit(struct h *h)
{
	static uint8_t blk[BLK];
	struct fs_alloc_state s;
	unsigned writes, discards;
	int ret;

	if (CHECK_OK(vol_txn_begin(h->v, &h->vt)) < 0)
		return -1;
	fs_alloc_pending(h->a, &writes, &discards);
	h->writes = 0;
	ret = fs_alloc_flush(h->a, h->gen + 1, h_write, h_discard, h);
	if (ret >= 0) {
		CHECK_EQ(ret, h->writes);
		CHECK_EQ(ret, (int)writes);
		fs_alloc_state(h->a, &s);
		memset(blk, 0, BLK);
		memcpy(blk, STATE_MAGIC, 8);
		put64(blk + 8, h->gen + 1);
		put64(blk + 16, s.pg_count);
		put64(blk + 24, s.used_blocks);
		put64(blk + 32, s.data_hint);
		put64(blk + 40, s.meta_hint);
		ret = vol_txn_write(h->vt, 0, blk);
	}
	if (ret < 0) {
		vol_txn_abort(h->vt);
		return CHECK_OK(ret);
	}
	if (CHECK_OK(vol_txn_commit(h->vt)) < 0)
		return -1;
	h->gen++;
	fs_alloc_committed(h->a, h->gen);
	return 0;
}

static int h_check(struct h *h, struct fs_alloc_check_stats *st)
{
	return CHECK_OK(fs_alloc_check(h->a, st));
}

static uint64_t capacity(struct h *h)
{
	struct vol_info vi;

	if (CHECK_OK(vol_info(h->v, &vi)) < 0)
		return 0;
	return vi.capacity_blocks;
}

/* ---- the model test ---- */

#define MODEL_MAX (3 * WIN + 5000) /* one partial PG, four windows */
#define RUNS_MAX 4096

enum { FREE = 0, USED = 1, PENDING = 2 };

struct run {
	uint64_t lba;
	uint32_t n;
	int fresh; /* allocated by the open transaction */
};

static uint8_t model[MODEL_MAX], model_saved[MODEL_MAX];
static struct run runs[RUNS_MAX], runs_saved[RUNS_MAX];
static unsigned nruns, nruns_saved;

static int run_ok(const struct h *h, uint64_t lba, uint32_t n, uint32_t want)
{
	if (n < 1 || n > want || !fs_lba_is_data(lba, h->max) ||
	    lba + n > h->max || lba / WIN != (lba + n - 1) / WIN)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (model[lba + i] != FREE)
			return 0;
	return 1;
}

static int m_alloc(struct h *h)
{
	uint32_t want = rnd_below(4) ? 1 + rnd_below(400) : 1;
	uint64_t goal = 0, lba;
	enum fs_alloc_kind kind = rnd_below(3) ? FS_ALLOC_DATA : FS_ALLOC_META;
	uint32_t n;
	int ret;

	if (nruns == RUNS_MAX)
		return 0;
	if (rnd_below(3) == 0 && nruns) {
		unsigned i = rnd_below(nruns);

		goal = runs[i].lba + runs[i].n;
	} else if (rnd_below(4) == 0) {
		goal = rnd() % h->max;
	}
	ret = fs_alloc_alloc(h->a, kind, goal, want, 0, &lba, &n);
	if (ret == -ENOSPC)
		return 0;
	if (CHECK_OK(ret) < 0 || !run_ok(h, lba, n, want)) {
		fprintf(stderr, "bad run %llu+%u (want %u)\n",
			(unsigned long long)lba, n, want);
		return 1;
	}
	memset(model + lba, USED, n);
	runs[nruns++] = (struct run){ lba, n, 1 };
	return 0;
}

static void m_free(struct h *h)
{
	unsigned i = rnd_below(nruns);
	struct run r = runs[i];
	uint32_t off = 0, len = r.n;

	if (r.fresh && rnd_below(2)) { /* unallocate: free at once */
		fs_alloc_unalloc(h->a, r.lba, r.n, 0);
		memset(model + r.lba, FREE, r.n);
		runs[i] = runs[--nruns];
		return;
	}
	if (r.n > 1 && nruns + 1 < RUNS_MAX && rnd_below(2)) { /* a piece */
		off = rnd_below(r.n);
		len = 1 + rnd_below(r.n - off);
	}
	if (CHECK_OK(fs_alloc_free(h->a, r.lba + off, len)) < 0)
		return;
	memset(model + r.lba + off, PENDING, len);
	runs[i] = runs[--nruns];
	if (off)
		runs[nruns++] = (struct run){ r.lba, off, 0 };
	if (off + len < r.n)
		runs[nruns++] =
			(struct run){ r.lba + off + len, r.n - off - len, 0 };
}

/* Two runs next to each other, across a window boundary, freed as one. */
static void m_free_across(struct h *h)
{
	for (unsigned i = 0; i < nruns; i++) {
		uint64_t end = runs[i].lba + runs[i].n;

		if (end % WIN || runs[i].fresh)
			continue;
		for (unsigned j = 0; j < nruns; j++) {
			if (runs[j].lba != end || runs[j].fresh)
				continue;
			CHECK_OK(fs_alloc_free(h->a, runs[i].lba,
					       runs[i].n + runs[j].n));
			memset(model + runs[i].lba, PENDING,
			       runs[i].n + runs[j].n);
			runs[j] = runs[--nruns];
			if (i == nruns)
				i = j;
			runs[i] = runs[--nruns];
			return;
		}
	}
}

static uint64_t model_count(int state)
{
	uint64_t n = 0;

	for (uint64_t b = 0; b < MODEL_MAX; b++)
		n += model[b] == state;
	return n;
}

static void m_commit(struct h *h)
{
	if (h_commit(h) < 0)
		return;
	for (uint64_t b = 0; b < MODEL_MAX; b++)
		if (model[b] == PENDING)
			model[b] = FREE;
	for (unsigned i = 0; i < nruns; i++)
		runs[i].fresh = 0;
	memcpy(model_saved, model, sizeof(model));
	memcpy(runs_saved, runs, sizeof(runs));
	nruns_saved = nruns;
}

static void m_rollback(struct h *h)
{
	fs_alloc_rollback(h->a);
	memcpy(model, model_saved, sizeof(model));
	memcpy(runs, runs_saved, sizeof(runs));
	nruns = nruns_saved;
}

/* statfs, sampled is_used, and a full recount against the model. */
static int m_verify(struct h *h, int full)
{
	struct fs_alloc_check_stats cs;
	struct fs_alloc_statfs sf;
	int bad = 0;

	fs_alloc_statfs(h->a, &sf);
	bad += sf.used_blocks != model_count(USED) + model_count(PENDING);
	bad += sf.total_blocks != MODEL_MAX;
	bad += sf.free_blocks != MODEL_MAX - META - sf.used_blocks;
	for (int t = 0; t < (full ? MODEL_MAX : 200); t++) {
		uint64_t b = full ? (uint64_t)t : rnd() % MODEL_MAX;

		bad += fs_alloc_is_used(h->a, b) != (model[b] != FREE);
	}
	if (h_check(h, &cs) < 0)
		return bad + 1;
	bad += cs.used_blocks != sf.used_blocks;
	bad += cs.free_blocks != MODEL_MAX - META - sf.used_blocks;
	return bad;
}

static void test_model(void)
{
	struct h h;
	int bad = 0, commits = 0, rollbacks = 0;

	memset(model, 0, sizeof(model));
	memset(model_saved, 0, sizeof(model_saved));
	nruns = nruns_saved = 0;
	if (h_mkfs(&h, "model", MODEL_MAX) < 0 || h_open(&h, 8) < 0)
		return;
	for (int op = 1; op <= 6000; op++) {
		uint64_t used = model_count(USED);

		if (nruns && rnd_below(100) < (used > MODEL_MAX / 2 ? 60 : 30))
			m_free(&h);
		else
			bad += m_alloc(&h);
		if (op % 97 == 0)
			m_free_across(&h);
		if (op % 40 == 0 && rnd_below(6) == 0) {
			m_rollback(&h);
			rollbacks++;
		} else if (op % 40 == 0) {
			m_commit(&h);
			commits++;
		}
		if (op % 400 == 0)
			bad += m_verify(&h, 0);
	}
	m_commit(&h);
	bad += m_verify(&h, 0);
	printf("  model: %d commits, %d rollbacks, %llu of %u blocks used\n",
	       commits, rollbacks, (unsigned long long)model_count(USED),
	       MODEL_MAX - META);
	h_close(&h);
	if (h_open(&h, 0) < 0)
		return;
	bad += m_verify(&h, 1); /* every block, after a reopen */
	h_close(&h);
	CHECK_EQ(bad, 0);
}

/* ---- placement ---- */

static void test_placement(void)
{
	uint64_t lba, prev = 0;
	uint32_t n;
	struct h h;
	int bad = 0;

	if (h_mkfs(&h, "place", 0) < 0 || h_open(&h, 0) < 0)
		return;
	for (int i = 0; i < 100; i++) {
		if (CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 1, 0, &lba,
					    &n)) < 0)
			break;
		bad += lba != (uint64_t)META + (uint64_t)i || n != 1;
	}
	for (int i = 0; i < 64; i++) {
		if (CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, prev, 256, 0,
					    &lba, &n)) < 0)
			break;
		bad += n != 256 || (i ? lba != prev : lba != WIN);
		prev = lba + n;
		if (i % 16 == 15)
			h_commit(&h);
	}
	/* A goal inside a used run: the next free run after it. */
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, WIN + 10, 8, 0, &lba, &n));
	bad += lba != prev || n != 8;
	CHECK_OK(h_commit(&h));
	CHECK_EQ(bad, 0);
	h_close(&h);
}

/* ---- growth ---- */

static void test_growth(void)
{
	struct fs_alloc_statfs sf;
	uint64_t lba, cap0, pg1 = 0;
	uint32_t n;
	struct h h;
	int allocs = 0;

	if (h_mkfs(&h, "grow", 0) < 0 || h_open(&h, 0) < 0)
		return;
	cap0 = capacity(&h);
	CHECK_EQ(cap0, PG);
	while (!pg1 && allocs < 200) {
		if (CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0, WIN, 0, &lba,
					    &n)) < 0)
			break;
		allocs++;
		if (lba >= PG) {
			pg1 = lba;
			break;
		}
		if (allocs % 20 == 0)
			h_commit(&h);
	}
	fs_alloc_statfs(h.a, &sf);
	CHECK(pg1 >= PG + META && pg1 < 2 * PG);
	/* PG 0 was nearly full before the allocator moved on. */
	CHECK(sf.used_blocks - n >= (PG - META) - ((PG - META) >> 4));
	CHECK_EQ(capacity(&h), PG); /* not committed yet */
	CHECK_EQ(sf.total_blocks, 2 * PG);
	CHECK_OK(h_commit(&h));
	CHECK_EQ(capacity(&h), 2 * PG);
	/* The next allocation stays in PG 1 (cursor). */
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0, 100, 0, &lba, &n));
	CHECK(lba >= PG && lba < 2 * PG);
	CHECK_OK(h_commit(&h));
	CHECK_EQ(h_check(&h, NULL), 0);
	printf("  growth: %d allocations filled PG 0, capacity %llu -> %llu "
	       "blocks\n",
	       allocs, (unsigned long long)cap0,
	       (unsigned long long)capacity(&h));
	h_close(&h);
	if (h_open(&h, 0) == 0) {
		fs_alloc_statfs(h.a, &sf);
		CHECK_EQ(sf.total_blocks, 2 * PG);
		CHECK_EQ(h_check(&h, NULL), 0);
		h_close(&h);
	}
}

/* The last, partial PG fills, then -ENOSPC at the maximum size. */
static void test_max_size(void)
{
	uint64_t max = PG + 3000, total = 0, lba;
	struct fs_alloc_statfs sf;
	uint32_t n;
	struct h h;
	int ret = 0, allocs = 0;

	if (h_mkfs(&h, "max", max) < 0 || h_open(&h, 0) < 0)
		return;
	while (allocs < 300) {
		ret = fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0, WIN, 0, &lba, &n);
		if (ret)
			break;
		total += n;
		if (++allocs % 25 == 0)
			h_commit(&h);
	}
	CHECK_EQ(ret, -ENOSPC);
	CHECK_EQ(total, (PG - META) + (3000 - META));
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	fs_alloc_statfs(h.a, &sf);
	CHECK_EQ(sf.total_blocks, max);
	CHECK_EQ(sf.free_blocks, 0);
	CHECK_EQ(sf.max_free_blocks, 0);
	CHECK_OK(h_commit(&h));
	CHECK_EQ(capacity(&h), max);
	CHECK_EQ(h_check(&h, NULL), 0);
	h_close(&h);
}

/* ---- a small volume: ENOSPC, deferred reuse, discards ---- */

static void test_small(void)
{
	static uint8_t blk[BLK], zero[BLK];
	uint64_t max = 5000, data = max - META, got = 0, lba;
	struct vol_txn *vt;
	uint32_t n;
	struct h h;
	int bad = 0;

	if (h_mkfs(&h, "small", max) < 0 || h_open(&h, 0) < 0)
		return;
	CHECK_EQ(fs_alloc_reserve(h.a, data + 1, 0), -ENOSPC);
	CHECK_OK(fs_alloc_reserve(h.a, data, 0));
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 1, 0, &lba, &n),
		 -ENOSPC); /* all promised */
	while (got < data) {
		uint32_t want = data - got < 700 ? (uint32_t)(data - got) : 700;

		if (CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0, want,
					    FS_ALLOC_F_RESERVED, &lba, &n)) < 0)
			return;
		got += n;
	}
	CHECK_EQ(got, data);
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0, 1, 0, &lba, &n),
		 -ENOSPC);
	CHECK_OK(h_commit(&h));
	/* Data in 100 blocks, then freed: not reusable before the commit. */
	if (CHECK_OK(vol_txn_begin(h.v, &vt)) < 0)
		return;
	memset(blk, 0x5A, BLK);
	for (int i = 0; i < 100; i++)
		CHECK_OK(vol_txn_write(vt, 1000 + (uint64_t)i, blk));
	CHECK_OK(vol_txn_commit(vt));
	CHECK_OK(fs_alloc_free(h.a, 1000, 100));
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 1000, 1, 0, &lba, &n),
		 -ENOSPC);
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	CHECK_EQ(fs_alloc_is_used(h.a, 1050), 1);
	CHECK_OK(h_commit(&h));
	CHECK_OK(vol_read(h.v, 1050, blk));
	CHECK(!memcmp(blk, zero, BLK)); /* discarded with the free */
	CHECK_EQ(fs_alloc_is_used(h.a, 1050), 0);
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 1000, 200, 0, &lba, &n));
	bad += lba != 1000 || n != 100;
	/* Freed and allocated again inside one transaction: refused. */
	CHECK_OK(fs_alloc_free(h.a, 1000, 100));
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 1000, 1, 0, &lba, &n),
		 -ENOSPC);
	CHECK_OK(h_commit(&h));
	CHECK_EQ(h_check(&h, NULL), 0);
	CHECK_EQ(bad, 0);
	h_close(&h);
}

/* ---- the metadata reserve (A8) ---- */

static void test_meta_reserve(void)
{
	uint64_t max = 5000, data = max - META, resv = 100, got = 0, lba;
	struct fs_alloc_statfs sf;
	struct fs_alloc_cfg c = { .max_blocks = max, .pg_count = 1 };
	struct fs_alloc *a2 = NULL;
	uint32_t n;
	struct h h;

	CHECK_EQ(fs_alloc_meta_reserve(VOL_MAX_BLOCKS),
		 FS_ALLOC_META_RESERVE_BLOCKS);
	CHECK_EQ(fs_alloc_meta_reserve(PG), FS_ALLOC_META_RESERVE_BLOCKS);
	CHECK_EQ(fs_alloc_meta_reserve(max), FS_ALLOC_META_RESERVE_BLOCKS);
	CHECK_EQ(fs_alloc_meta_reserve(1000), (1000 - META) / 8);
	if (h_mkfs(&h, "reserve", max) < 0)
		return;
	h.meta_reserve = resv;
	if (h_open(&h, 0) < 0)
		return;
	c.vol = h.v;
	c.meta_reserve_blocks = data + 1; /* more than there is */
	CHECK_EQ(fs_alloc_open(&c, &a2), -EINVAL);
	fs_alloc_statfs(h.a, &sf);
	CHECK_EQ(sf.meta_reserve_blocks, resv);
	/* Others stop short of the reserve. */
	CHECK_EQ(fs_alloc_reserve(h.a, data - resv + 1, 0), -ENOSPC);
	CHECK_OK(fs_alloc_reserve(h.a, data - resv, 0));
	while (got < data - resv) {
		uint64_t left = data - resv - got;

		if (CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_DATA, 0,
					    left < 700 ? (uint32_t)left : 700,
					    FS_ALLOC_F_RESERVED, &lba, &n)) < 0)
			return;
		got += n;
	}
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	CHECK_OK(fs_alloc_reserve(h.a, 0, 0)); /* nothing: always */
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 1, 0, &lba, &n),
		 -ENOSPC);
	CHECK_OK(h_commit(&h));
	h_close(&h);
	/* Reopened (the reserve is not on disk): the same; freeing
	 * operations take the reserve, to the last block. */
	if (h_open(&h, 0) < 0)
		return;
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	CHECK_EQ(fs_alloc_reserve(h.a, resv + 1, FS_ALLOC_F_META_RESERVE),
		 -ENOSPC);
	CHECK_OK(fs_alloc_reserve(h.a, resv - 10, FS_ALLOC_F_META_RESERVE));
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 5, FS_ALLOC_F_RESERVED,
				&lba, &n));
	CHECK_EQ(n, 5);
	/* A reservation given back is taken again whatever took it (what
	 * fs_txn does after a refused step). */
	fs_alloc_unreserve(h.a, resv - 15);
	CHECK_EQ(fs_alloc_reserve(h.a, resv - 15, 0), -ENOSPC);
	CHECK_OK(fs_alloc_reserve(h.a, resv - 15, FS_ALLOC_F_META_RESERVE));
	fs_alloc_unreserve(h.a, resv - 15);
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 10,
				FS_ALLOC_F_META_RESERVE, &lba, &n));
	CHECK_EQ(n, 10);
	CHECK_OK(fs_alloc_reserve(h.a, resv - 15, FS_ALLOC_F_META_RESERVE));
	CHECK_EQ(fs_alloc_reserve(h.a, 1, FS_ALLOC_F_META_RESERVE), -ENOSPC);
	fs_alloc_statfs(h.a, &sf);
	CHECK_EQ(sf.max_free_blocks, resv - 15);
	CHECK_EQ(sf.reserved_blocks, resv - 15);
	fs_alloc_unreserve(h.a, resv - 15);
	CHECK_OK(h_commit(&h));
	/* Space freed comes back to everyone once the free commits. */
	CHECK_OK(fs_alloc_free(h.a, lba, n));
	CHECK_OK(fs_alloc_reserve(h.a, 0, 0));
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	CHECK_OK(h_commit(&h));
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC); /* 95 < 100 */
	CHECK_OK(fs_alloc_free(h.a, META + 200, 300));
	CHECK_OK(h_commit(&h));
	CHECK_OK(fs_alloc_reserve(h.a, 295, 0));
	CHECK_EQ(fs_alloc_reserve(h.a, 1, 0), -ENOSPC);
	fs_alloc_unreserve(h.a, 295);
	CHECK_EQ(h_check(&h, NULL), 0);
	h_close(&h);
}

/* ---- damage ---- */

static int write_raw(struct h *h, uint64_t lba, const uint8_t *blk)
{
	struct vol_txn *vt;

	if (CHECK_OK(vol_txn_begin(h->v, &vt)) < 0)
		return -1;
	if (CHECK_OK(vol_txn_write(vt, lba, blk)) < 0) {
		vol_txn_abort(vt);
		return -1;
	}
	return CHECK_OK(vol_txn_commit(vt));
}

static void test_damage(void)
{
	static uint8_t good[BLK], bad_blk[BLK];
	uint64_t bmp = FS_PG_BITMAP_OFF, desc = FS_PG_DESC_OFF, lba;
	uint32_t n;
	struct h h;

	if (h_mkfs(&h, "damage", 50000) < 0 || h_open(&h, 0) < 0)
		return;
	CHECK_OK(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 50, 0, &lba, &n));
	CHECK_OK(h_commit(&h));
	CHECK_OK(vol_read(h.v, bmp, good));
	memcpy(bad_blk, good, BLK);
	bad_blk[1000] |= 4; /* a stray bit: B3 */
	write_raw(&h, bmp, bad_blk);
	h_close(&h);
	if (h_open(&h, 0) < 0)
		return;
	CHECK_EQ(fs_alloc_check(h.a, NULL), -EUCLEAN);
	CHECK(strstr(last_log, "B3 ") != NULL);
	CHECK_EQ(fs_alloc_alloc(h.a, FS_ALLOC_META, 0, 1, 0, &lba, &n),
		 -EUCLEAN);
	write_raw(&h, bmp, good);
	CHECK_OK(vol_read(h.v, desc, good));
	memcpy(bad_blk, good, BLK);
	bad_blk[200] ^= 1; /* P2 */
	write_raw(&h, desc, bad_blk);
	h_close(&h);
	if (h_open(&h, 0) < 0)
		return;
	CHECK_EQ(fs_alloc_check(h.a, NULL), -EUCLEAN);
	CHECK(strstr(last_log, "P2 ") != NULL);
	write_raw(&h, desc, good);
	h_close(&h);
	if (h_open(&h, 0) < 0)
		return;
	CHECK_EQ(fs_alloc_check(h.a, NULL), 0);
	h_close(&h);
}

int main(void)
{
	const char *seed = getenv("TEST_SEED");
	double t0 = now_s();

	rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	printf("fs_alloc_test: TEST_SEED=%llu\n",
	       (unsigned long long)rng_state);
	vol_set_log(test_log);
	if (CHECK_OK(scratch_setup("alloc")) < 0)
		return CHECK_DONE();
	run("model", test_model);
	run("placement", test_placement);
	run("growth", test_growth);
	run("max size", test_max_size);
	run("small", test_small);
	run("meta reserve", test_meta_reserve);
	run("damage", test_damage);
	scratch_cleanup();
	printf("fs_alloc_test: %.1f s\n", now_s() - t0);
	return CHECK_DONE();
}
