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

/* Ask zone z for lba. */
static enum copy_result read_copy(struct vol *v, int z, uint64_t lba,
				  uint8_t *out)
{
	struct vol_zone *zone = &v->zones[z];
	uint8_t ent[VOL_META_BYTES];
	uint8_t blk[VOL_BLOCK_BYTES] __attribute__((aligned(4096)));
	uint64_t pg = lba / VOL_PG_BLOCKS, off = lba % VOL_PG_BLOCKS;
	struct vol_pgfd fd;
	struct vol_meta m;
	ssize_t n;
	int ret;

	if (!zone->reachable || zone->fault || vol_wim_test(v, z, lba))
		return COPY_SKIP;
	ret = vol_zone_pgfd(v, zone, pg, 0, &fd);
	if (ret == -ENOENT)
		return COPY_EMPTY;
	if (ret)
		return COPY_SKIP;
	n = pread(fd.meta, ent, sizeof(ent), (off_t)off * VOL_META_BYTES);
	if (n < 0)
		return COPY_BAD;
	if (n < (ssize_t)sizeof(ent))
		memset(ent + n, 0, sizeof(ent) - n);
	if (vol_meta_decode(ent, lba, &m))
		return COPY_BAD;
	if (m.state == VOL_META_EMPTY)
		return COPY_EMPTY;
	if (m.state == VOL_META_DISCARDED)
		return COPY_ZERO;
	n = pread(fd.seg, blk, sizeof(blk), (off_t)off * VOL_BLOCK_BYTES);
	if (n != (ssize_t)sizeof(blk))
		return COPY_BAD;
	if ((vol_crc32c(~0u, blk, sizeof(blk)) ^ ~0u) != m.data_crc)
		return COPY_BAD;
	if (key_open_block(v->kc, lba, m.lsn, blk, m.nonce, m.tag, out))
		return COPY_BAD;
	return COPY_GOOD;
}

static int read_zones(struct vol *v, uint64_t lba, uint8_t *out,
		      int *bad)
{
	unsigned start = atomic_fetch_add((_Atomic unsigned *)&v->rr, 1);
	int empty = 0;

	for (int k = 0; k < VOL_ZONES; k++) {
		int z = (int)((start + k) % VOL_ZONES);

		switch (read_copy(v, z, lba, out)) {
		case COPY_GOOD:
			return 0;
		case COPY_ZERO:
			memset(out, 0, VOL_BLOCK_BYTES);
			return 0;
		case COPY_EMPTY:
			/* Never written, unless R current zones disagree. */
			if (++empty >= VOL_READ_QUORUM) {
				memset(out, 0, VOL_BLOCK_BYTES);
				return 0;
			}
			break;
		case COPY_BAD:
			(*bad)++;
			break;
		case COPY_SKIP:
			break;
		}
	}
	return -EIO;
}

int vol_read(struct vol *v, uint64_t lba, void *buf)
{
	uint8_t cipher[VOL_BLOCK_BYTES];
	struct vol_rec rec;
	int ret = -EIO, bad = 0;

	if (lba >= v->max_blocks)
		return -ENOSPC;
	/*
	 * A materialisation can finish between the memory lookup and the
	 * zone read (a torn meta entry then looks bad): look again.
	 */
	for (int attempt = 0; attempt < 3 && ret; attempt++) {
		if (pend_lookup(v, lba, &rec, cipher)) {
			if (rec.kind == VOL_REC_DISCARD) {
				memset(buf, 0, VOL_BLOCK_BYTES);
				return 0;
			}
			ret = key_open_block(v->kc, lba, rec.lsn, cipher,
					     rec.nonce, rec.tag, buf);
			VOL_VERIFY(ret == 0); /* our own memory */
			return 0;
		}
		ret = read_zones(v, lba, buf, &bad);
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
