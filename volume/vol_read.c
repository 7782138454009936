/*
 * vol_read.c - reading a block: the newest durable version, verified.
 *
 * Layer: volume/.  A durable record not yet materialised is served from
 * memory; otherwise one current zone is asked (spread over the zones by a
 * rotating start), its meta entry and segment block checked (CRC, then
 * the AEAD tag under (uuid, lba, lsn)), and on any failure the next zone.
 * V9: wrong data is never returned.  A zone whose write-intent bit covers
 * the block may be stale and is not asked.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "volume/vol_i.h"

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

enum copy_result { COPY_GOOD, COPY_ZERO, COPY_EMPTY, COPY_BAD, COPY_SKIP };

/*
 * Ask zone z for lba; *lsn gets the version of a GOOD or ZERO copy.  A
 * zone the write-intent map names stale is skipped unless dirty_ok.
 */
static enum copy_result read_copy(struct vol *v, int z, uint64_t lba,
				  uint8_t *out, uint64_t *lsn, int dirty_ok)
{
	struct vol_zone *zone = &v->zones[z];
	uint8_t ent[VOL_META_BYTES];
	uint8_t blk[VOL_BLOCK_BYTES] __attribute__((aligned(4096)));
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	struct vol_pgfd fd;
	struct vol_meta m;
	ssize_t n;
	int ret;

	if (!zone->reachable || zone->fault ||
	    (!dirty_ok && vol_wim_test(v, z, lba)))
		return COPY_SKIP;
	ret = vol_zone_pgfd(v, zone, pg, 0, &fd);
	if (ret == -ENOENT)
		return COPY_EMPTY;
	if (ret)
		return COPY_SKIP;
	n = pread(fd.meta, ent, sizeof(ent), (off_t)off * VOL_META_BYTES);
	if (n >= 0 && n < (ssize_t)sizeof(ent))
		memset(ent + n, 0, sizeof(ent) - n);
	if (n < 0 || vol_meta_decode(ent, lba, &m)) {
		vol_zone_pgfd_put(zone, pg);
		return COPY_BAD;
	}
	*lsn = m.lsn;
	if (m.state != VOL_META_WRITTEN) {
		vol_zone_pgfd_put(zone, pg);
		return m.state == VOL_META_EMPTY ? COPY_EMPTY : COPY_ZERO;
	}
	n = pread(fd.seg, blk, sizeof(blk), (off_t)off * VOL_BLOCK_BYTES);
	vol_zone_pgfd_put(zone, pg);
	if (n != (ssize_t)sizeof(blk))
		return COPY_BAD;
	if ((vol_crc32c(~0u, blk, sizeof(blk)) ^ ~0u) != m.data_crc)
		return COPY_BAD;
	if (key_open_block(v->kc, lba, m.lsn, blk, m.nonce, m.tag, out))
		return COPY_BAD;
	return COPY_GOOD;
}

/*
 * Every zone may be stale for lba (each missed some write of its region
 * in a different outage).  The newest version that was ever durable is on
 * W zones, so any R zones that answer hold it, and versions only grow:
 * the highest LSN among at least R valid answers is the block (discards
 * keep their LSN in tombstones, so an old copy cannot win over them).
 */
static int read_newest(struct vol *v, uint64_t lba, uint8_t *out, uint64_t *lsn,
		       int *bad)
{
	uint8_t tmp[VOL_BLOCK_BYTES];
	int answers = 0, found = 0;

	*lsn = 0;
	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t l = 0;

		switch (read_copy(v, z, lba, tmp, &l, 1)) {
		case COPY_ZERO:
			memset(tmp, 0, sizeof(tmp));
			/* fall through */
		case COPY_GOOD:
			answers++;
			if (!found || l > *lsn) {
				memcpy(out, tmp, VOL_BLOCK_BYTES);
				*lsn = l;
				found = 1;
			}
			break;
		case COPY_EMPTY:
			answers++;
			break;
		case COPY_BAD:
			(*bad)++;
			break;
		case COPY_SKIP:
			break;
		}
	}
	if (answers < VOL_READ_QUORUM)
		return -EIO;
	if (!found)
		memset(out, 0, VOL_BLOCK_BYTES);
	return 0;
}

/*
 * The newest copy: first from one zone the write-intent map says is
 * current (spread over the zones by a rotating start); if none answers,
 * from the newest of all zones (read_newest).  *lsn = 0: never written.
 */
static int read_zones(struct vol *v, uint64_t lba, uint8_t *out, uint64_t *lsn,
		      int *bad)
{
	unsigned start = atomic_fetch_add((_Atomic unsigned *)&v->rr, 1);
	int empty = 0, bad1 = 0;

	*lsn = 0;
	for (int k = 0; k < VOL_ZONES; k++) {
		int z = (int)((start + k) % VOL_ZONES);

		switch (read_copy(v, z, lba, out, lsn, 0)) {
		case COPY_GOOD:
			*bad += bad1;
			return 0;
		case COPY_ZERO:
			memset(out, 0, VOL_BLOCK_BYTES);
			*bad += bad1;
			return 0;
		case COPY_EMPTY:
			/* Never written, unless R current zones disagree. */
			if (++empty >= VOL_READ_QUORUM) {
				memset(out, 0, VOL_BLOCK_BYTES);
				*lsn = 0;
				*bad += bad1;
				return 0;
			}
			break;
		case COPY_BAD:
			bad1++;
			break;
		case COPY_SKIP:
			break;
		}
	}
	return read_newest(v, lba, out, lsn, bad);
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
