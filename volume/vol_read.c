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

/* Newest pending version of lba, copied out under the lock. */
static int pend_lookup(struct vol *v, uint64_t lba, struct vol_rec *rec,
		       uint8_t *cipher)
{
	const struct vol_pend *best = NULL;
	uint32_t h = (uint32_t)((lba * 0x9E3779B97F4A7C15ull) >> 48) &
		     (VOL_PEND_BUCKETS - 1);

	pthread_rwlock_rdlock(&v->pend_lock);
	for (const struct vol_pend *p = v->pend[h]; p; p = p->next)
		if (p->lba == lba && p->rec->kind == VOL_REC_WRITE &&
		    (!best || p->lsn > best->lsn))
			best = p;
	for (const struct vol_pend *p = v->pend[0]; p; p = p->next)
		if (p->rec->kind == VOL_REC_DISCARD && lba >= p->lba &&
		    lba - p->lba < p->rec->nblocks &&
		    (!best || p->lsn > best->lsn))
			best = p;
	if (best) {
		*rec = *best->rec;
		if (best->cipher)
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

/* ---- runs of blocks (sequential reads) ---- */

#define RUN_MAX 64u /* blocks a run reads at once (bits of a mask) */

/*
 * One meta read per zone for a run: R zones in the usual order, each
 * with the run's n entries.  Returns the zones that answered (all must,
 * or the caller goes block by block).
 */
static int run_metas(struct vol *v, uint64_t lba, uint32_t n,
		     const struct survey *sv, int zones[VOL_READ_QUORUM],
		     uint8_t ents[VOL_READ_QUORUM][RUN_MAX * VOL_META_BYTES])
{
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	size_t len = (size_t)n * VOL_META_BYTES;
	int got = 0;

	for (int i = 0; i < VOL_ZONES && got < VOL_READ_QUORUM; i++) {
		struct vol_zone *zone = &v->zones[sv->order[i]];
		struct vol_pgfd fd;
		uint64_t t0;
		ssize_t r;
		int ret;

		if (!zone->reachable || zone->fault ||
		    (zone->rebuilding &&
		     (vol_wim_test(v, zone->idx, lba) ||
		      vol_wim_test(v, zone->idx, lba + n - 1))))
			continue;
		ret = vol_zone_pgfd(v, zone, pg, 0, &fd);
		if (ret == -ENOENT) { /* never written in this PG */
			memset(ents[got], 0, len);
			zones[got++] = zone->idx;
			continue;
		}
		if (ret)
			continue;
		t0 = vol_now_us();
		r = pread(fd.meta, ents[got], len, (off_t)off * VOL_META_BYTES);
		note_speed(zone, vol_now_us() - t0);
		vol_zone_pgfd_put(zone, pg);
		if (r < 0)
			continue;
		memset(ents[got] + r, 0, len - (size_t)r); /* unwritten tail */
		zones[got++] = zone->idx;
	}
	return got;
}

/*
 * The run from one zone that holds the newest version of every written
 * block (V9 over the R answers, as read_zones decides per block).
 * Blocks it cannot settle (a damaged entry, no common zone, a bad copy)
 * are left to vol_read: their bit is set in *slow.
 */
static void run_zones(struct vol *v, uint64_t lba, uint32_t n, uint8_t *out,
		      uint8_t *cipher, uint64_t *slow)
{
	static __thread uint8_t ents[VOL_READ_QUORUM][RUN_MAX * VOL_META_BYTES];
	struct vol_meta m[VOL_READ_QUORUM][RUN_MAX];
	int zones[VOL_READ_QUORUM], best[RUN_MAX], from = -1;
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	int fits;
	struct survey sv = { 0 };
	struct vol_pgfd fd;
	ssize_t r;

	order_zones(v, &sv, atomic_fetch_add((_Atomic unsigned *)&v->rr, 1));
	if (run_metas(v, lba, n, &sv, zones, ents) < VOL_READ_QUORUM) {
		*slow = ~0ull;
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		best[i] = -1;
		for (int k = 0; k < VOL_READ_QUORUM; k++) {
			if (vol_meta_decode(ents[k] + i * VOL_META_BYTES,
					    lba + i, &m[k][i])) {
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
	if (vol_zone_pgfd(v, &v->zones[zones[from]], pg, 0, &fd)) {
		*slow = ~0ull;
		return;
	}
	r = pread(fd.seg, cipher, (size_t)n * VOL_BLOCK_BYTES,
		  (off_t)off * VOL_BLOCK_BYTES);
	vol_zone_pgfd_put(&v->zones[zones[from]], pg);
	for (uint32_t i = 0; i < n; i++) {
		const struct vol_meta *b = &m[from][i];
		const uint8_t *c = cipher + (size_t)i * VOL_BLOCK_BYTES;

		if ((*slow & (1ull << i)) ||
		    m[best[i]][i].state != VOL_META_WRITTEN)
			continue;
		if (r < (ssize_t)((i + 1) * VOL_BLOCK_BYTES) ||
		    (vol_crc32c(~0u, c, VOL_BLOCK_BYTES) ^ ~0u) !=
			    b->data_crc ||
		    key_open_block(v->kc, lba + i, b->lsn, c, b->nonce, b->tag,
				   out + (size_t)i * VOL_BLOCK_BYTES))
			*slow |= 1ull << i; /* vol_read finds the bad copy */
	}
}

int vol_read_run(struct vol *v, uint64_t lba, uint32_t n, void *buf)
{
	uint8_t *out = buf, *cipher = NULL;
	int ret = 0;

	while (n && !ret) {
		uint32_t k = n < RUN_MAX ? n : RUN_MAX;
		uint64_t slow = 0;

		if (lba % VOL_PG_BLOCKS + k > VOL_PG_BLOCKS) /* one PG */
			k = (uint32_t)(VOL_PG_BLOCKS - lba % VOL_PG_BLOCKS);
		if (lba + k > v->max_blocks || lba + k < lba) {
			ret = -ENOSPC;
			break;
		}
		/*
		 * Memory first, as vol_read does: a pending record is newer
		 * than any segment, and one that is materialised after this
		 * look is in the segments when they are read.
		 */
		if (v->readonly || k < 2) {
			slow = ~0ull;
		} else {
			uint8_t tmp[VOL_BLOCK_BYTES];
			struct vol_rec rec;

			for (uint32_t i = 0; i < k; i++)
				if (pend_lookup(v, lba + i, &rec, tmp))
					slow |= 1ull << i;
		}
		if (~slow & (k == RUN_MAX ? ~0ull : (1ull << k) - 1)) {
			if (!cipher &&
			    posix_memalign((void **)&cipher, VOL_BLOCK_BYTES,
					   RUN_MAX * VOL_BLOCK_BYTES))
				return -ENOMEM;
			run_zones(v, lba, k, out, cipher, &slow);
		}
		for (uint32_t i = 0; i < k && !ret; i++)
			if (slow & (1ull << i))
				ret = vol_read(v, lba + i,
					       out + (size_t)i *
							       VOL_BLOCK_BYTES);
		lba += k;
		out += (size_t)k * VOL_BLOCK_BYTES;
		n -= k;
	}
	free(cipher);
	return ret;
}
