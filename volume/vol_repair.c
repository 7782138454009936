/*
 * vol_repair.c - the volume's side of self-healing: watching zones,
 * letting them back into the write set, formatting a replacement,
 * copying what a zone missed (resync, rebuild), and comparing and
 * healing the copies of blocks (scrub, reads that met a bad copy).
 *
 * Layer: volume/.  Driven by repair/ from one thread (the functions of
 * volume.h's repair section are not reentrant among themselves); they
 * run beside the volume's own threads and the filesystem's readers.
 *
 * DESIGN NOTES
 * R1 (authority) The version of a block is the highest LSN among the
 *    meta entries of the zones in the write set (segments hold only
 *    durable versions, V3).  A copy of it is good when its ciphertext
 *    passes the entry's CRC and the AEAD tag under (uuid, lba, lsn).  A
 *    heal copies ciphertext and entry as they are: nothing is decrypted
 *    and sealed again.  When no copy of that version is good the block
 *    is unrecoverable and nothing is written: an older version is never
 *    put in its place.
 * R2 (exclusion) Every read-compare-write of a range holds
 *    v->repair_lock, which the materialiser holds for a whole round and
 *    its WIM marks, so a heal never lands an older version over one a
 *    round just wrote, and a round's marks are never lost to a clear.
 * R3 (clearing) A zone's WIM bit for a region is cleared only after the
 *    copies into it are fdatasync'ed, only if the zone stayed in the
 *    write set since the copy (fail_gen unchanged: while it stays in, it
 *    receives every later write of the region itself), and only if no
 *    mark was made for it meanwhile (mark_gen unchanged): a round that
 *    began before the zone was let back in misses it and marks it at
 *    its end, perhaps after the copy of a region it wrote.
 * R4 (rebuild) A zone formatted into a running volume joins with every
 *    region of the capacity set in its WIM and REBUILDING in its
 *    superblock; reads do not ask it where its bit is set (vol_read.c),
 *    since the copies it lost may have been among the W that made a
 *    version durable.  The flag is dropped when its last region is done.
 * R5 (return) A zone comes back through the log thread (vol_admit_zones),
 *    at a batch boundary.  If its checkpoint went backwards (a directory
 *    restored from an old copy) it is treated as a rebuild (R4): its WIM
 *    bits cannot name what the old copy lacks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "volume/vol_i.h"

#define RANGE_MAX VOL_WIM_REGION_BLOCKS /* blocks examined at once */
#define SPREAD_RUN 32 /* blocks read from one source before the next */
#define RETURN_FREE_BYTES (16ull << 20) /* a full zone returns past it */
#define SYNC_MAX 64 /* (zone, PG) pairs written before an fdatasync */
#define HEAL_TOLD 16 /* healed copies described in the log a minute */

/* What one block looks like across the zones. */
struct block {
	uint8_t auth[VOL_META_BYTES]; /* encoded entry of the version */
	struct vol_meta m;
	uint32_t holders; /* sources whose entry equals auth (WRITTEN) */
	uint32_t need; /* targets to heal */
	uint32_t good; /* zones whose data verified */
	int from; /* zone whose data buffer holds a good copy, -1 */
};

struct vol_repair_ctx {
	struct io_uring ring;
	int ring_ok;
	uint8_t *data; /* [VOL_ZONES][RANGE_MAX] blocks, aligned */
	uint8_t *plain; /* one block: tag checks */
	uint8_t meta[VOL_ZONES][RANGE_MAX * VOL_META_BYTES];
	struct block bk[RANGE_MAX];
	uint8_t want[VOL_ZONES][RANGE_MAX]; /* copies to read */
	uint8_t bad[VOL_ZONES][RANGE_MAX]; /* copies whose read failed */
	struct vol_iop ops[VOL_ZONES * RANGE_MAX * 2];
	struct iovec iov[VOL_ZONES * RANGE_MAX];
	uint64_t cursor[VOL_ZONES]; /* resync: next region to look at */
	uint64_t flushed_ms; /* last WIM flush of resync's clears */
	uint64_t synced[SYNC_MAX]; /* (pg << 3 | zone) written, unsynced */
	uint32_t nsynced;
	uint64_t told_ms; /* tell_heals: the minute began */
	uint32_t told; /* copies described in it */
};

const char *vol_zone_state_name(enum vol_zone_state s)
{
	switch (s) {
	case VOL_ZONE_HEALTHY:
		return "healthy";
	case VOL_ZONE_DEGRADED:
		return "degraded";
	case VOL_ZONE_RESYNCING:
		return "resyncing";
	case VOL_ZONE_REBUILDING:
		return "rebuilding";
	default:
		return "offline";
	}
}

const char *vol_scrub_state_name(enum vol_scrub_state s)
{
	switch (s) {
	case VOL_SCRUB_RUNNING:
		return "running";
	case VOL_SCRUB_STOPPED:
		return "stopped";
	case VOL_SCRUB_FINISHED:
		return "finished";
	default:
		return "none";
	}
}

uint64_t vol_capacity_blocks(struct vol *v)
{
	uint64_t cap;

	pthread_mutex_lock(&v->lock);
	cap = v->pg_count * VOL_PG_BLOCKS;
	pthread_mutex_unlock(&v->lock);
	return cap < v->max_blocks ? cap : v->max_blocks;
}

static struct vol_repair_ctx *ctx(struct vol *v)
{
	struct vol_repair_ctx *x = v->rep;

	if (x)
		return x;
	x = calloc(1, sizeof(*x));
	VOL_VERIFY(x != NULL);
	x->data = vol_alloc_blocks((size_t)VOL_ZONES * RANGE_MAX);
	x->plain = malloc(VOL_BLOCK_BYTES);
	VOL_VERIFY(x->data && x->plain);
	x->ring_ok = vol_ring_init(&x->ring) == 0;
	VOL_VERIFY(x->ring_ok);
	v->rep = x;
	return x;
}

void vol_repair_free(struct vol *v)
{
	struct vol_repair_ctx *x = v->rep;

	if (!x)
		return;
	if (x->ring_ok)
		io_uring_queue_exit(&x->ring);
	free(x->data);
	free(x->plain);
	free(x);
	v->rep = NULL;
}

/* ---- the heal queue (reads that met a bad copy) ---- */

void vol_heal_push(struct vol *v, uint64_t lba)
{
	pthread_mutex_lock(&v->lock);
	for (uint32_t i = 0; i < v->heal_n; i++)
		if (v->heal_q[i] == lba)
			goto out;
	if (v->heal_n < VOL_HEAL_QUEUE) /* else the scrub finds it */
		v->heal_q[v->heal_n++] = lba;
out:
	pthread_mutex_unlock(&v->lock);
}

/* ---- comparing and healing one range ---- */

struct range {
	uint64_t lba0, pg;
	uint32_t n;
	uint32_t member; /* zones read: write set, attached */
	uint32_t source; /* members whose copies may speak (R4) */
	uint32_t target; /* members healed */
	uint32_t held; /* members whose PG files are held */
	uint32_t failed; /* targets that could not be brought current */
	int err; /* the first of their errors */
	int deep;
	struct vol_pgfd fd[VOL_ZONES];
};

static int zone_is_member(struct vol *v, int z)
{
	struct vol_zone *zone = &v->zones[z];
	int ok;

	pthread_mutex_lock(&v->lock);
	ok = zone->up && zone->reachable && !zone->fault && zone->pg;
	pthread_mutex_unlock(&v->lock);
	return ok;
}

/* Remember (z, pg) for the fdatasync at the end of the step. */
static void note_written(struct vol_repair_ctx *x, int z, uint64_t pg)
{
	uint64_t key = pg << 3 | (uint64_t)z;

	for (uint32_t i = 0; i < x->nsynced; i++)
		if (x->synced[i] == key)
			return;
	VOL_VERIFY(x->nsynced < SYNC_MAX);
	x->synced[x->nsynced++] = key;
}

/*
 * fdatasync what heals wrote; a zone whose flush fails leaves the write
 * set.  Returns the mask of zones that failed.
 */
static uint32_t sync_written(struct vol *v, struct vol_repair_ctx *x)
{
	uint32_t nops = 0, failed = 0;
	uint64_t held[SYNC_MAX];
	uint32_t nheld = 0;

	for (uint32_t i = 0; i < x->nsynced; i++) {
		int z = (int)(x->synced[i] & 7);
		uint64_t pg = x->synced[i] >> 3;
		struct vol_pgfd fd;

		if (vol_zone_pgfd(v, &v->zones[z], pg, 0, &fd)) {
			failed |= 1u << z; /* R3: not flushed is not done */
			continue;
		}
		held[nheld++] = x->synced[i];
		x->ops[nops++] = (struct vol_iop){ .kind = VOL_IOP_FSYNC,
						   .fd = fd.seg,
						   .zone = z };
		x->ops[nops++] = (struct vol_iop){ .kind = VOL_IOP_FSYNC,
						   .fd = fd.meta,
						   .zone = z };
	}
	if (nops && vol_io_run(&x->ring, x->ops, nops, 0) < 0)
		failed = (1u << VOL_ZONES) - 1;
	for (uint32_t i = 0; i < nops; i++)
		if (x->ops[i].res < 0)
			failed |= 1u << x->ops[i].zone;
	for (uint32_t i = 0; i < nheld; i++)
		vol_zone_pgfd_put(&v->zones[held[i] & 7], held[i] >> 3);
	x->nsynced = 0;
	if (failed) {
		pthread_mutex_lock(&v->lock);
		for (int z = 0; z < VOL_ZONES; z++)
			if (failed & (1u << z))
				vol_zone_fail(
					v, z, -EIO,
					"repair could not flush its copies");
		pthread_mutex_unlock(&v->lock);
	}
	return failed;
}

/*
 * Targets of mask could not be brought current (err): heal_range fails
 * them out of the write set at its end, so that no caller counts them
 * current (resync clears a zone's bits only while its fail_gen holds,
 * R3).  Skipping them quietly let a resync call a zone current that
 * held none of what it had missed.
 */
static void range_fail(struct range *rg, uint32_t mask, int err)
{
	mask &= rg->target;
	if (mask && !rg->failed)
		rg->err = err < 0 ? err : -EIO;
	rg->failed |= mask;
}

static void range_put(struct vol *v, struct range *rg)
{
	for (int z = 0; z < VOL_ZONES; z++)
		if (rg->held & (1u << z))
			vol_zone_pgfd_put(&v->zones[z], rg->pg);
	rg->held = 0;
}

/* Read the meta entries of every member; one that cannot is dropped
 * (a target also fails: range_fail). */
static void read_metas(struct vol *v, struct vol_repair_ctx *x,
		       struct range *rg)
{
	size_t len = (size_t)rg->n * VOL_META_BYTES;
	off_t off = (off_t)(rg->lba0 % VOL_PG_BLOCKS) * VOL_META_BYTES;

	for (int z = 0; z < VOL_ZONES; z++) {
		ssize_t got;
		int ret;

		if (!(rg->member & (1u << z)))
			continue;
		memset(x->meta[z], 0, len);
		ret = vol_zone_pgfd(v, &v->zones[z], rg->pg, 0, &rg->fd[z]);
		if (ret == -ENOENT)
			continue; /* no PG files: never written there */
		if (ret)
			goto drop;
		rg->held |= 1u << z;
		got = pread(rg->fd[z].meta, x->meta[z], len, off);
		if (got >= 0)
			continue; /* short: never-written tail, zeros */
		ret = -errno;
drop:
		range_fail(rg, 1u << z, ret);
		rg->member &= ~(1u << z);
		rg->source &= ~(1u << z);
		rg->target &= ~(1u << z);
	}
}

static uint8_t *slot(struct vol_repair_ctx *x, int z, uint32_t i)
{
	return x->data + ((size_t)z * RANGE_MAX + i) * VOL_BLOCK_BYTES;
}

static int verify(struct vol *v, struct vol_repair_ctx *x, uint64_t lba,
		  const struct vol_meta *m, const uint8_t *cipher)
{
	if ((vol_crc32c(~0u, cipher, VOL_BLOCK_BYTES) ^ ~0u) != m->data_crc)
		return -EBADMSG;
	return key_open_block(v->kc, lba, m->lsn, cipher, m->nonce, m->tag,
			      x->plain);
}

/* The authority for block i (R1), the holders, the targets to heal. */
static void judge(struct vol_repair_ctx *x, const struct range *rg, uint32_t i,
		  struct block *bk)
{
	uint64_t lba = rg->lba0 + i;
	int best = -1;

	memset(bk, 0, sizeof(*bk));
	bk->from = -1;
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_meta m;

		if (!(rg->source & (1u << z)) ||
		    vol_meta_decode(x->meta[z] + i * VOL_META_BYTES, lba, &m))
			continue;
		if (m.state != VOL_META_EMPTY &&
		    (best < 0 || m.lsn > bk->m.lsn)) {
			best = z;
			bk->m = m;
		}
	}
	if (best >= 0)
		memcpy(bk->auth, x->meta[best] + i * VOL_META_BYTES,
		       VOL_META_BYTES);
	for (int z = 0; z < VOL_ZONES; z++) {
		int same;

		if (!(rg->member & (1u << z)))
			continue;
		same = !memcmp(x->meta[z] + i * VOL_META_BYTES, bk->auth,
			       VOL_META_BYTES);
		if (same && (rg->source & (1u << z)) &&
		    bk->m.state == VOL_META_WRITTEN)
			bk->holders |= 1u << z;
		if (!same && (rg->target & (1u << z)))
			bk->need |= 1u << z;
	}
}

/*
 * Queue reads of runs of consecutive blocks from zone z: want[i] says
 * which blocks.  Reads land in z's slots.
 */
static uint32_t queue_reads(struct vol_repair_ctx *x, const struct range *rg,
			    int z, const uint8_t *want, uint32_t nops)
{
	for (uint32_t i = 0; i < rg->n;) {
		uint32_t j = i;

		if (!want[i]) {
			i++;
			continue;
		}
		while (j < rg->n && want[j])
			j++;
		x->ops[nops++] = (struct vol_iop){
			.kind = VOL_IOP_READ,
			.fd = rg->fd[z].seg,
			.zone = z,
			.buf = slot(x, z, i),
			.len = (j - i) * VOL_BLOCK_BYTES,
			.off = ((rg->lba0 + i) % VOL_PG_BLOCKS) *
			       VOL_BLOCK_BYTES,
		};
		i = j;
	}
	return nops;
}

/* A read that failed or came short leaves its blocks unverified. */
static void mark_failed_reads(struct vol_repair_ctx *x, const struct range *rg,
			      uint32_t nops, uint8_t (*bad)[RANGE_MAX])
{
	for (uint32_t k = 0; k < nops; k++) {
		struct vol_iop *op = &x->ops[k];
		uint32_t i0, cnt;

		if (op->res == (int)op->len)
			continue;
		i0 = (uint32_t)(((uint8_t *)op->buf - slot(x, op->zone, 0)) /
				VOL_BLOCK_BYTES);
		cnt = op->len / VOL_BLOCK_BYTES;
		for (uint32_t i = i0; i < i0 + cnt && i < rg->n; i++)
			bad[op->zone][i] = 1;
	}
}

/*
 * Read data: deep, every holder's copy of every block; otherwise one
 * copy of each block that a target needs, spread over the holders in
 * runs of SPREAD_RUN blocks so that several zones are read at once.
 * Then verify; a block whose chosen copy is bad tries the other holders.
 */
static int read_data(struct vol *v, struct vol_repair_ctx *x,
		     const struct range *rg, struct block *bk)
{
	uint8_t(*want)[RANGE_MAX] = x->want, (*bad)[RANGE_MAX] = x->bad;
	uint32_t nops = 0;
	int ret;

	memset(x->want, 0, sizeof(x->want));
	memset(x->bad, 0, sizeof(x->bad));
	for (uint32_t i = 0; i < rg->n; i++) {
		uint32_t h = bk[i].holders;
		int nh = __builtin_popcount(h), pick;

		if (!h || (!rg->deep && !bk[i].need))
			continue;
		if (rg->deep) {
			for (int z = 0; z < VOL_ZONES; z++)
				if (h & (1u << z))
					want[z][i] = 1;
			continue;
		}
		pick = (int)(((rg->lba0 + i) / SPREAD_RUN) % (uint64_t)nh);
		for (int z = 0; z < VOL_ZONES; z++)
			if ((h & (1u << z)) && pick-- == 0)
				want[z][i] = 1;
	}
	for (int z = 0; z < VOL_ZONES; z++)
		if (rg->held & (1u << z))
			nops = queue_reads(x, rg, z, want[z], nops);
	/* The ring failing says nothing of the copies: not lost blocks. */
	ret = nops ? vol_io_run(&x->ring, x->ops, nops, 0) : 0;
	if (ret < 0)
		return ret;
	mark_failed_reads(x, rg, nops, bad);
	for (uint32_t i = 0; i < rg->n; i++) {
		uint64_t lba = rg->lba0 + i;

		for (int z = 0; z < VOL_ZONES; z++) {
			if (!want[z][i] || bad[z][i] ||
			    verify(v, x, lba, &bk[i].m, slot(x, z, i)))
				continue;
			bk[i].good |= 1u << z;
			if (bk[i].from < 0)
				bk[i].from = z;
		}
		if (rg->deep || bk[i].from >= 0 || !bk[i].need)
			continue;
		/* The chosen copy was bad: the other holders, in turn. */
		for (int z = 0; z < VOL_ZONES && bk[i].from < 0; z++) {
			if (!(bk[i].holders & (1u << z)) || want[z][i])
				continue;
			if (pread(rg->fd[z].seg, slot(x, z, i), VOL_BLOCK_BYTES,
				  (off_t)(lba % VOL_PG_BLOCKS) *
					  VOL_BLOCK_BYTES) != VOL_BLOCK_BYTES ||
			    verify(v, x, lba, &bk[i].m, slot(x, z, i)))
				continue;
			bk[i].good |= 1u << z;
			bk[i].from = z;
		}
	}
	return 0;
}

/* Queue the data writes and punches that bring target z to the authority. */
static uint32_t queue_writes(struct vol_repair_ctx *x, const struct range *rg,
			     int z, const struct block *bk, uint32_t nops,
			     uint32_t *niov)
{
	struct vol_iop *run = NULL;

	for (uint32_t i = 0; i < rg->n; i++) {
		const struct block *b = &bk[i];
		uint64_t off =
			((rg->lba0 + i) % VOL_PG_BLOCKS) * VOL_BLOCK_BYTES;

		if (!(b->need & (1u << z)) || b->m.state == VOL_META_EMPTY) {
			run = NULL;
			continue;
		}
		if (b->m.state == VOL_META_DISCARDED) {
			run = NULL;
			x->ops[nops++] = (struct vol_iop){
				.kind = VOL_IOP_PUNCH,
				.fd = rg->fd[z].seg,
				.zone = z,
				.off = off,
				.punch_len = VOL_BLOCK_BYTES,
			};
			continue;
		}
		x->iov[*niov].iov_base = slot(x, b->from, i);
		x->iov[*niov].iov_len = VOL_BLOCK_BYTES;
		(*niov)++;
		if (run) {
			run->len++;
			continue;
		}
		run = &x->ops[nops++];
		*run = (struct vol_iop){
			.kind = VOL_IOP_WRITEV,
			.fd = rg->fd[z].seg,
			.zone = z,
			.buf = &x->iov[*niov - 1],
			.len = 1,
			.off = off,
		};
	}
	return nops;
}

/*
 * Write the heals: data first, then the meta entries (a crash between
 * leaves an entry whose CRC the new data fails: a bad copy, which reads
 * skip and the next scrub or resync heals).  Returns the mask of zones
 * whose writes all succeeded.
 */
static uint32_t write_heals(struct vol *v, struct vol_repair_ctx *x,
			    struct range *rg, const struct block *bk)
{
	uint32_t nops = 0, niov = 0, ok = 0, touched = 0;
	int ret;

	for (int z = 0; z < VOL_ZONES; z++) {
		int any = 0;

		if (!(rg->target & (1u << z)))
			continue;
		for (uint32_t i = 0; i < rg->n; i++)
			any |= !!(bk[i].need & (1u << z));
		if (!any)
			continue;
		if (!(rg->held & (1u << z))) { /* first write in this PG */
			ret = vol_zone_pgfd(v, &v->zones[z], rg->pg, 1,
					    &rg->fd[z]);
			if (ret) {
				range_fail(rg, 1u << z, ret);
				continue;
			}
			rg->held |= 1u << z;
		}
		touched |= 1u << z;
		nops = queue_writes(x, rg, z, bk, nops, &niov);
	}
	if (!touched)
		return 0;
	ret = nops ? vol_io_run(&x->ring, x->ops, nops, 0) : 0;
	if (ret < 0) {
		range_fail(rg, touched, ret);
		return 0;
	}
	ok = touched;
	for (uint32_t k = 0; k < nops; k++)
		if (x->ops[k].res < 0)
			ok &= ~(1u << x->ops[k].zone);
	nops = 0;
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!(ok & (1u << z)))
			continue;
		for (uint32_t i = 0; i < rg->n; i++)
			if (bk[i].need & (1u << z))
				memcpy(x->meta[z] + i * VOL_META_BYTES,
				       bk[i].auth, VOL_META_BYTES);
		x->ops[nops++] = (struct vol_iop){
			.kind = VOL_IOP_WRITE,
			.fd = rg->fd[z].meta,
			.zone = z,
			.buf = x->meta[z],
			.len = rg->n * VOL_META_BYTES,
			.off = (rg->lba0 % VOL_PG_BLOCKS) * VOL_META_BYTES,
		};
		note_written(x, z, rg->pg);
	}
	ret = nops ? vol_io_run(&x->ring, x->ops, nops, 0) : 0;
	if (ret < 0) {
		range_fail(rg, touched, ret);
		return 0;
	}
	for (uint32_t k = 0; k < nops; k++)
		if (x->ops[k].res != (int)x->ops[k].len)
			ok &= ~(1u << x->ops[k].zone);
	range_fail(rg, touched & ~ok, -EIO);
	return ok;
}

static const char *meta_state_name(uint8_t state)
{
	switch (state) {
	case VOL_META_WRITTEN:
		return "written";
	case VOL_META_DISCARDED:
		return "discarded";
	default:
		return "unknown";
	}
}

/*
 * Say what is wrong with each copy of block i that is about to be healed,
 * HEAL_TOLD copies a minute at most: a handful of lines tells a damaged
 * disk from a stale zone, and a zone that missed a whole region does not
 * flood the log.
 */
static void tell_heals(struct vol_repair_ctx *x, const struct range *rg,
		       uint32_t i)
{
	const struct block *b = &x->bk[i];
	uint64_t lba = rg->lba0 + i;
	char cur[64];

	if (vol_now_ms() - x->told_ms >= 60000) {
		x->told_ms = vol_now_ms();
		x->told = 0;
	}
	if (x->told >= HEAL_TOLD)
		return;
	if (b->m.state == VOL_META_EMPTY)
		snprintf(cur, sizeof(cur), "never written");
	else
		snprintf(cur, sizeof(cur), "%s version %llu",
			 meta_state_name(b->m.state),
			 (unsigned long long)b->m.lsn);
	for (int z = 0; z < VOL_ZONES && x->told < HEAL_TOLD; z++) {
		const uint8_t *e = x->meta[z] + i * VOL_META_BYTES;
		struct vol_meta m;
		char why[96];

		if (!(b->need & (1u << z)))
			continue;
		if (vol_meta_decode(e, lba, &m))
			snprintf(why, sizeof(why), "its entry is damaged");
		else if (m.state == VOL_META_EMPTY)
			snprintf(why, sizeof(why), "it has no copy");
		else if (!memcmp(e, b->auth, VOL_META_BYTES))
			snprintf(why, sizeof(why), "its data fails the check");
		else
			snprintf(why, sizeof(why), "it has %s version %llu",
				 meta_state_name(m.state),
				 (unsigned long long)m.lsn);
		vol_log(VOL_LOG_INFO,
			"heal: block %llu, zone %d: %s; the current is %s%s",
			(unsigned long long)lba, z, why, cur,
			++x->told == HEAL_TOLD ? " (further heals go "
						 "unreported for a minute)" :
						 "");
	}
}

/*
 * Examine blocks lba0..lba0+n (one PG, n <= RANGE_MAX) across the
 * members, heal the targets.  Caller holds v->repair_lock (R2).
 */
static void heal_range(struct vol *v, struct range *rg,
		       struct vol_heal_counts *c, uint64_t *lost,
		       uint32_t nlost, uint32_t *nlost_out)
{
	struct vol_repair_ctx *x = ctx(v);
	struct block *bk = x->bk;
	uint32_t ok, need = 0;
	int ret;

	VOL_VERIFY(rg->n <= RANGE_MAX &&
		   rg->lba0 / VOL_PG_BLOCKS ==
			   (rg->lba0 + rg->n - 1) / VOL_PG_BLOCKS);
	rg->pg = rg->lba0 / VOL_PG_BLOCKS;
	read_metas(v, x, rg);
	for (uint32_t i = 0; i < rg->n; i++) {
		judge(x, rg, i, &bk[i]);
		need |= bk[i].need;
	}
	if ((need || rg->deep) && (ret = read_data(v, x, rg, bk)) < 0) {
		range_fail(rg, rg->target, ret);
		goto out;
	}
	for (uint32_t i = 0; i < rg->n; i++) {
		struct block *b = &bk[i];

		if (b->m.state != VOL_META_EMPTY)
			c->checked++;
		if (b->m.state != VOL_META_WRITTEN)
			continue;
		if (rg->deep) /* a holder whose data failed is a bad copy */
			b->need |= b->holders & ~b->good & rg->target;
		if (b->from < 0 && (b->need || rg->deep)) {
			c->unrecoverable++;
			if (nlost_out && *nlost_out < nlost)
				lost[(*nlost_out)++] = rg->lba0 + i;
			vol_log(VOL_LOG_ERR,
				"block %llu: no zone holds a good copy of its "
				"version %llu",
				(unsigned long long)(rg->lba0 + i),
				(unsigned long long)b->m.lsn);
			b->need = 0; /* R1: nothing older goes in its place */
		}
	}
	need = 0;
	for (uint32_t i = 0; i < rg->n; i++) {
		if (bk[i].need)
			tell_heals(x, rg, i);
		c->found += (uint64_t)__builtin_popcount(bk[i].need);
		need |= bk[i].need;
	}
	ok = need ? write_heals(v, x, rg, bk) : 0;
	for (uint32_t i = 0; i < rg->n; i++) {
		uint32_t done = bk[i].need & ok;

		c->healed += (uint64_t)__builtin_popcount(done);
		if (bk[i].m.state == VOL_META_WRITTEN)
			c->bytes += (uint64_t)__builtin_popcount(done) *
				    VOL_BLOCK_BYTES;
	}
out:
	range_put(v, rg);
	if (!rg->failed)
		return;
	pthread_mutex_lock(&v->lock);
	for (int z = 0; z < VOL_ZONES; z++)
		if (rg->failed & (1u << z))
			vol_zone_fail(v, z, rg->err,
				      "repair could not write its copies");
	pthread_mutex_unlock(&v->lock);
}

/* The members of the write set, and which of them may speak (R4). */
static void range_roles(struct vol *v, struct range *rg)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!zone_is_member(v, z))
			continue;
		rg->member |= 1u << z;
		if (!(v->zones[z].rebuilding && vol_wim_test(v, z, rg->lba0)))
			rg->source |= 1u << z;
	}
}

/*
 * Roles for a scrub or a read's heal: no target where the zone's
 * write-intent bit is set (that region is resync's, R3; its copy may be
 * older than every acknowledged write, and so may its peers' there),
 * and enough members to judge (R).  0 if the range is to be left.
 */
static int check_roles(struct vol *v, struct range *rg)
{
	range_roles(v, rg);
	rg->target = rg->member;
	for (int z = 0; z < VOL_ZONES; z++)
		if (vol_wim_test(v, z, rg->lba0))
			rg->target &= ~(1u << z);
	return __builtin_popcount(rg->member) >= VOL_READ_QUORUM;
}

static void add_healed(struct vol *v, const struct vol_heal_counts *c,
		       uint64_t before)
{
	pthread_mutex_lock(&v->lock);
	v->healed_copies += c->healed - before;
	pthread_mutex_unlock(&v->lock);
}

int vol_scrub_step(struct vol *v, uint64_t *lba, uint32_t max, int deep,
		   struct vol_heal_counts *c, uint64_t *lost, uint32_t nlost,
		   uint32_t *nlost_out)
{
	uint64_t cap = vol_capacity_blocks(v), start = c->checked;
	uint64_t healed = c->healed;
	uint32_t ranges = 0;

	if (v->readonly)
		return -EROFS;
	if (nlost_out)
		*nlost_out = 0;
	/* Never-written stretches cost a meta read of holes: bound them. */
	while (*lba < cap && c->checked - start < max && ranges < 4096) {
		struct range rg = { .lba0 = *lba, .deep = deep };

		rg.n = RANGE_MAX - (uint32_t)(*lba % RANGE_MAX);
		if (rg.lba0 + rg.n > cap)
			rg.n = (uint32_t)(cap - rg.lba0);
		pthread_mutex_lock(&v->repair_lock);
		if (check_roles(v, &rg))
			heal_range(v, &rg, c, lost, nlost, nlost_out);
		pthread_mutex_unlock(&v->repair_lock);
		*lba = rg.lba0 + rg.n;
		ranges++;
		if (ctx(v)->nsynced > SYNC_MAX - VOL_ZONES)
			sync_written(v, ctx(v));
	}
	sync_written(v, ctx(v));
	add_healed(v, c, healed);
	return *lba >= cap;
}

int vol_heal_queued(struct vol *v, struct vol_heal_counts *c)
{
	uint64_t q[64], healed = c->healed;
	uint32_t n;

	if (v->readonly)
		return 0;
	do {
		pthread_mutex_lock(&v->lock);
		n = v->heal_n < 64 ? v->heal_n : 64;
		v->heal_n -= n;
		memcpy(q, v->heal_q + v->heal_n, n * sizeof(q[0]));
		pthread_mutex_unlock(&v->lock);
		for (uint32_t i = 0; i < n; i++) {
			struct range rg = { .lba0 = q[i], .n = 1, .deep = 1 };

			pthread_mutex_lock(&v->repair_lock);
			if (check_roles(v, &rg))
				heal_range(v, &rg, c, NULL, 0, NULL);
			pthread_mutex_unlock(&v->repair_lock);
			if (ctx(v)->nsynced > SYNC_MAX - VOL_ZONES)
				sync_written(v, ctx(v));
		}
	} while (n);
	sync_written(v, ctx(v));
	add_healed(v, c, healed);
	return 0;
}

/* ---- resync and rebuild ---- */

/* Caller holds v->lock. */
static int count_up(const struct vol *v)
{
	int n = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		n += v->zones[z].up;
	return n;
}

/* Drop the REBUILDING flag of a zone whose every region is copied. */
static void rebuilt(struct vol *v, int z)
{
	struct vol_zone *zone = &v->zones[z];
	int ret;

	zone->sb.compat &= ~VOL_SB_COMPAT_REBUILDING;
	ret = vol_zone_write_sb(v, zone);
	pthread_mutex_lock(&v->lock);
	if (ret)
		vol_zone_fail(v, z, ret, "cannot write its superblock");
	else
		zone->rebuilding = 0;
	pthread_mutex_unlock(&v->lock);
	if (!ret)
		vol_log(VOL_LOG_INFO, "zone %d (%s) is rebuilt", z,
			zone->dirs[0]);
}

/*
 * Do the members' meta files hold nothing for the region starting at
 * lba0 (holes everywhere: never written)?  Then there is nothing to
 * copy, and a rebuild skips the empty part of the capacity at the speed
 * of lseek.
 */
static int region_empty(struct vol *v, uint32_t members, uint64_t lba0)
{
	uint64_t pg = lba0 / VOL_PG_BLOCKS;
	off_t off = (off_t)(lba0 % VOL_PG_BLOCKS) * VOL_META_BYTES;
	off_t end = off + (off_t)VOL_WIM_REGION_BLOCKS * VOL_META_BYTES;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_pgfd fd;
		off_t data;
		int ret;

		if (!(members & (1u << z)))
			continue;
		ret = vol_zone_pgfd(v, &v->zones[z], pg, 0, &fd);
		if (ret == -ENOENT)
			continue;
		if (ret)
			return 0;
		data = lseek(fd.meta, off, SEEK_DATA);
		ret = data < 0 ? -errno : 0;
		vol_zone_pgfd_put(&v->zones[z], pg);
		if (ret == -ENXIO || (!ret && data >= end))
			continue;
		return 0;
	}
	return 1;
}

int vol_resync_step(struct vol *v, int z, uint32_t max_regions,
		    struct vol_heal_counts *c)
{
	struct vol_repair_ctx *x = ctx(v);
	struct vol_zone *zone = &v->zones[z];
	uint64_t regs[1024], cap = vol_capacity_blocks(v), gen;
	uint32_t n, full = 0;
	uint64_t left, marks;
	int up;

	if (z < 0 || z >= VOL_ZONES || v->readonly)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	up = zone->up;
	gen = zone->fail_gen;
	pthread_mutex_unlock(&v->lock);
	if (!up)
		return -ENODEV;
	pthread_rwlock_rdlock(&v->wim_lock);
	marks = zone->mark_gen;
	pthread_rwlock_unlock(&v->wim_lock);
	/* Empty regions cost an lseek per zone: many of them per step. */
	n = vol_wim_next(v, z, &x->cursor[z], regs, 1024);
	for (uint32_t i = 0; i < n; i++) {
		struct range rg = { .lba0 = regs[i] << VOL_WIM_REGION_SHIFT,
				    .n = VOL_WIM_REGION_BLOCKS };

		if (rg.lba0 >= cap)
			continue; /* past the capacity: nothing there */
		pthread_mutex_lock(&v->repair_lock);
		range_roles(v, &rg);
		rg.target = rg.member & (1u << z);
		if (!rg.target || __builtin_popcount(rg.source & ~rg.target) <
					  VOL_READ_QUORUM)
			n = i; /* too few peers, or z fell out: stop */
		else if (full == max_regions)
			n = i; /* enough copying for one step */
		else if (!region_empty(v, rg.member, rg.lba0) && ++full)
			heal_range(v, &rg, c, NULL, 0, NULL);
		pthread_mutex_unlock(&v->repair_lock);
		if (n == i)
			x->cursor[z] = regs[i]; /* the rest next time */
	}
	if (sync_written(v, x) & (1u << z))
		return -EIO;
	pthread_mutex_lock(&v->lock);
	if (!zone->up || zone->fail_gen != gen) { /* R3 */
		pthread_mutex_unlock(&v->lock);
		return -ENODEV;
	}
	pthread_rwlock_wrlock(&v->wim_lock);
	if (zone->mark_gen != marks) /* R3: copied again next time */
		n = 0;
	pthread_rwlock_unlock(&v->wim_lock);
	for (uint32_t i = 0; i < n; i++)
		vol_wim_clear(v, z, regs[i]);
	zone->repaired += (uint64_t)n * VOL_WIM_REGION_BLOCKS;
	pthread_mutex_unlock(&v->lock);
	pthread_rwlock_rdlock(&v->wim_lock);
	left = zone->wim_regions;
	pthread_rwlock_unlock(&v->wim_lock);
	/*
	 * Cleared bits reach the disk now and then (a crash before only
	 * means copying those regions again); the last ones at once.
	 */
	if (n && (!left || vol_now_ms() - x->flushed_ms >= 1000)) {
		x->flushed_ms = vol_now_ms();
		if (vol_wim_flush(v))
			return -EIO;
	}
	n = left ? 1 : 0;
	if (!n && zone->rebuilding)
		rebuilt(v, z);
	return (int)n;
}

/* ---- watching zones ---- */

void vol_zone_identify(struct vol_zone *z)
{
	struct stat st, up;
	char path[PATH_MAX];

	for (int d = 0; d < z->ndirs; d++) {
		if (stat(z->dirs[d], &st))
			continue;
		z->dir_dev[d] = st.st_dev;
		z->dir_ino[d] = st.st_ino;
		if (d)
			continue;
		snprintf(path, sizeof(path), "%s/..", z->dirs[0]);
		z->mountpoint = !stat(path, &up) && up.st_dev != st.st_dev;
	}
}

/* Is the zone's every directory still the one attached, and usable? */
static int zone_alive(struct vol_zone *z, char *why, size_t len)
{
	for (int d = 0; d < z->ndirs; d++) {
		char path[PATH_MAX];
		struct stat st;
		int fd;

		if (stat(z->dirs[d], &st)) {
			snprintf(why, len, "its directory %s is gone (%s)",
				 z->dirs[d], strerror(errno));
			return -ENOENT;
		}
		if (st.st_dev != z->dir_dev[d] || st.st_ino != z->dir_ino[d]) {
			snprintf(why, len,
				 "its directory %s was replaced or its disk "
				 "unmounted",
				 z->dirs[d]);
			return -ENODEV;
		}
		snprintf(path, sizeof(path), "%s/superblock", z->dirs[d]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			int err = -errno;

			snprintf(why, len,
				 "cannot open its superblock in %.100s (%s)",
				 z->dirs[d], strerror(-err));
			return err;
		}
		close(fd);
	}
	return 0;
}

static void set_reason(struct vol *v, struct vol_zone *z, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_reason(struct vol *v, struct vol_zone *z, const char *fmt, ...)
{
	char buf[sizeof(z->reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&v->lock);
	memcpy(z->reason, buf, sizeof(buf));
	pthread_mutex_unlock(&v->lock);
}

/*
 * 1: empty (a fresh file system's lost+found allowed, and names of
 * sixfold's own without a superblock: what a write raced in before the
 * zone was noticed gone), 0: a zone's superblock is there, -errno
 * otherwise (-ENOTEMPTY: something else).
 */
static int dir_state(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *de;
	int empty = 1;
	DIR *d;

	snprintf(path, sizeof(path), "%s/superblock", dir);
	if (!access(path, F_OK))
		return 0;
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    strcmp(de->d_name, "lost+found") &&
		    !vol_is_ours(de->d_name))
			empty = 0;
	closedir(d);
	return empty ? 1 : -ENOTEMPTY;
}

static int is_mountpoint(const char *dir)
{
	char path[PATH_MAX];
	struct stat a, b;

	snprintf(path, sizeof(path), "%s/..", dir);
	return !stat(dir, &a) && !stat(path, &b) && a.st_dev != b.st_dev;
}

/*
 * Close every file of a zone that is out of the write set, so that it
 * can be attached again (a directory restored, a disk mounted again).
 * Readers may hold a PG's files for one pread: wait for them.
 */
static void close_files(struct vol *v, struct vol_zone *z)
{
	pthread_mutex_lock(&v->lock);
	z->reachable = 0;
	pthread_mutex_unlock(&v->lock);
	for (;;) {
		int busy = 0;

		pthread_mutex_lock(&z->fd_lock);
		for (uint64_t i = 0; z->pg && i < v->max_pgs; i++) {
			if (z->pg[i].seg < 0)
				continue;
			if (z->pg[i].refs) {
				busy = 1;
				continue;
			}
			close(z->pg[i].seg);
			close(z->pg[i].meta);
			z->pg[i].seg = z->pg[i].meta = -1;
			z->pg_open--;
		}
		pthread_mutex_unlock(&z->fd_lock);
		if (!busy)
			break;
		usleep(1000);
	}
	if (z->log_fd >= 0)
		close(z->log_fd);
	if (z->ck_fd >= 0)
		close(z->ck_fd);
	if (z->lock_fd >= 0)
		close(z->lock_fd);
	z->log_fd = z->ck_fd = z->lock_fd = -1;
}

/* A zone of the write set whose superblock is the volume's current one. */
static struct vol_zone *peer(struct vol *v, int not )
{
	for (int z = 0; z < VOL_ZONES; z++)
		if (z != not &&v->zones[z].up &&
		    v->zones[z].sb.epoch == v->epoch)
			return &v->zones[z];
	return NULL;
}

/*
 * Let zone z back: rebuild = every region set (R4).  Its superblock
 * takes the current epoch; the marks reach W zones before it is asked
 * in; the log thread admits it (vol_admit_zones).
 */
static int admit(struct vol *v, int z, int rebuild)
{
	struct vol_zone *zone = &v->zones[z], *p = peer(v, z);
	uint64_t cap = vol_capacity_blocks(v), regions;
	struct statvfs fs;
	int ret;

	if (!p)
		return -EIO;
	if (rebuild) {
		vol_wim_mark(v, z, 0, cap);
		zone->sb.compat |= VOL_SB_COMPAT_REBUILDING;
	}
	zone->sb.epoch = v->epoch;
	zone->sb.epoch_lsn = p->sb.epoch_lsn;
	ret = vol_zone_write_sb(v, zone);
	/*
	 * A rebuild's marks must be on W zones before it joins (R4).  A
	 * returning zone's marks may still wait for a fourth zone (three
	 * left, writes stalled): they are flushed once it is in.
	 */
	if (!ret && vol_wim_flush(v) && rebuild)
		ret = -EIO;
	if (ret) {
		set_reason(v, zone, "cannot come back: %s", strerror(-ret));
		return ret;
	}
	pthread_rwlock_rdlock(&v->wim_lock);
	regions = zone->wim_regions;
	pthread_rwlock_unlock(&v->wim_lock);
	vol_log(VOL_LOG_INFO,
		"zone %d (%s) is usable again: it rejoins, then %s %llu MiB", z,
		zone->dirs[0],
		rebuild || zone->rebuilding ? "is rebuilt:" : "resyncs",
		(unsigned long long)regions);
	pthread_mutex_lock(&v->lock);
	/* Its free space as it is now: the spacer reads only zones that
	 * are in, and an old reading (full) would send it out again. */
	if (!statvfs(zone->dirs[0], &fs)) {
		zone->free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
		zone->read_written = v->written_blocks;
		zone->fs_id = fs.f_fsid;
	}
	zone->rebuilding = rebuild || zone->rebuilding;
	zone->reachable = 1;
	zone->rejoin = 1;
	zone->repaired = 0;
	snprintf(zone->reason, sizeof(zone->reason), "rejoining");
	ctx(v)->cursor[z] = 0;
	vol_log_kick(v);
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Format the empty directories of zone z into the volume (R4). */
static int format_in(struct vol *v, int z)
{
	struct vol_zone *zone = &v->zones[z], *p = peer(v, z);
	uint8_t *kf = malloc(VOL_KF_BYTES);
	char path[PATH_MAX];
	struct vol_sb tmpl;
	int ret;

	if (!kf)
		return -ENOMEM;
	ret = -EIO;
	if (!p)
		goto out_free;
	snprintf(path, sizeof(path), "%s/keys", p->dirs[0]);
	ret = vol_read_file(path, kf, VOL_KF_BYTES);
	if (ret)
		goto out_free;
	close_files(v, zone);
	tmpl = p->sb;
	tmpl.compat |= VOL_SB_COMPAT_REBUILDING;
	ret = vol_zone_lock(zone, 1); /* ours before anything is written */
	for (int d = 0; !ret && d < zone->ndirs; d++)
		ret = vol_zone_wipe(zone->dirs[d]);
	if (!ret)
		ret = vol_zone_format(zone, &tmpl, kf);
	if (!ret)
		ret = vol_zone_attach(v, zone, 0, 1);
	if (!ret && !zone->reachable)
		ret = zone->err ? zone->err : -EIO;
	if (!ret) {
		vol_log(VOL_LOG_INFO, "zone %d: formatted %s into the volume",
			z, zone->dirs[0]);
		ret = admit(v, z, 1);
	}
out_free:
	free(kf);
	if (ret)
		set_reason(v, zone, "cannot format %s as a new zone: %s",
			   zone->dirs[0], strerror(-ret));
	return ret;
}

/* Zone z is out: is it usable again?  Then let it back. */
static int zone_return(struct vol *v, int z)
{
	struct vol_zone *zone = &v->zones[z];
	uint64_t applied = zone->ck.applied_lsn;
	int had = zone->lock_fd >= 0, empty = 0, have = 0;
	struct statvfs fs;
	char why[160];
	int ret;

	/*
	 * Let go at once of files that are not the zone's any more (a
	 * directory removed, a disk unmounted lazily): holding them would
	 * keep an unmounted file system alive under a new mount.
	 */
	if (zone->lock_fd >= 0 && zone_alive(zone, why, sizeof(why)))
		close_files(v, zone);
	for (int d = 0; d < zone->ndirs; d++) {
		ret = dir_state(zone->dirs[d]);
		if (ret == -ENOTEMPTY) {
			set_reason(v, zone,
				   "%s holds files but no sixfold zone: empty "
				   "it to have the zone rebuilt there",
				   zone->dirs[d]);
			return ret;
		}
		if (ret < 0) {
			set_reason(v, zone, "its directory %s: %s",
				   zone->dirs[d], strerror(-ret));
			return ret;
		}
		empty += ret == 1;
		have += ret == 0;
	}
	if (empty) {
		if (have) {
			set_reason(v, zone,
				   "some of its directories are empty: use "
				   "sixfold zone replace");
			return -EUCLEAN;
		}
		if (zone->mountpoint && !is_mountpoint(zone->dirs[0])) {
			set_reason(v, zone,
				   "%s is empty and no longer a mount point: "
				   "mount its disk again, or run sixfold zone "
				   "replace to rebuild it",
				   zone->dirs[0]);
			return -ENODEV;
		}
		return format_in(v, z);
	}
	if (statvfs(zone->dirs[0], &fs) == 0 &&
	    (uint64_t)fs.f_bavail * fs.f_frsize < RETURN_FREE_BYTES) {
		set_reason(v, zone,
			   "its file system is full (%llu MiB free, 16 MiB "
			   "needed to come back)",
			   (unsigned long long)((uint64_t)fs.f_bavail *
							fs.f_frsize >>
						20));
		return -ENOSPC;
	}
	if (zone->lock_fd < 0) {
		/* New to this open, or not the files it had: attach anew. */
		ret = vol_zone_attach(v, zone, 1, 1);
		if (!ret && !zone->reachable)
			ret = zone->err ? zone->err : -EIO;
		if (ret) {
			set_reason(v, zone, "cannot attach it again: %s",
				   strerror(-ret));
			return ret;
		}
		if (had && zone->ck.applied_lsn < applied) { /* R5 */
			vol_log(VOL_LOG_WARN,
				"zone %d: its checkpoint went back (%llu < "
				"%llu): rebuilt from its peers",
				z, (unsigned long long)zone->ck.applied_lsn,
				(unsigned long long)applied);
			return admit(v, z, 1);
		}
	}
	return admit(v, z, 0);
}

int vol_zone_probe(struct vol *v)
{
	int mask = 0;

	if (v->readonly)
		return 0;
	pthread_mutex_lock(&v->lock);
	v->repair_active = 1;
	pthread_mutex_unlock(&v->lock);
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		int up, out, ret;
		char why[160];

		pthread_mutex_lock(&v->lock);
		up = zone->up;
		out = !up && !zone->rejoin && !zone->admin_offline &&
		      !zone->inflight && !zone->fault;
		pthread_mutex_unlock(&v->lock);
		if (up) {
			ret = zone_alive(zone, why, sizeof(why));
			if (ret) {
				pthread_mutex_lock(&v->lock);
				vol_zone_fail(v, z, ret, "zone check failed");
				snprintf(zone->reason, sizeof(zone->reason),
					 "%s", why);
				pthread_mutex_unlock(&v->lock);
			}
		} else if (out && zone->ndirs) {
			(void)zone_return(v, z);
		}
		pthread_mutex_lock(&v->lock);
		if (zone->up && zone->wim_regions)
			mask |= 1 << z;
		pthread_mutex_unlock(&v->lock);
	}
	return mask;
}

/* ---- administration ---- */

int vol_zone_set_offline(struct vol *v, int z, int offline)
{
	struct vol_zone *zone;
	int ret = 0;

	if (z < 0 || z >= VOL_ZONES)
		return -EINVAL;
	if (v->readonly)
		return -EROFS;
	zone = &v->zones[z];
	pthread_mutex_lock(&v->lock);
	if (offline) {
		if (zone->up && count_up(v) - 1 < VOL_WRITE_QUORUM) {
			ret = -EBUSY;
			goto out;
		}
		zone->admin_offline = 1;
		zone->rejoin = 0;
		vol_zone_fail(v, z, -ECANCELED, "taken offline");
		snprintf(zone->reason, sizeof(zone->reason),
			 "taken offline by the administrator (sixfold zone "
			 "online brings it back)");
	} else if (zone->admin_offline) {
		zone->admin_offline = 0;
		snprintf(zone->reason, sizeof(zone->reason),
			 "coming back online");
	}
out:
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int vol_zone_replace(struct vol *v, int z, const char *spec)
{
	struct vol_zone *zone;
	struct vol_zone probe;
	int ret;

	if (z < 0 || z >= VOL_ZONES || !spec || !*spec)
		return -EINVAL;
	if (v->readonly)
		return -EROFS;
	zone = &v->zones[z];
	/* The new spec must be absolute, empty directories. */
	memset(&probe, 0, sizeof(probe));
	ret = vol_zone_set_dirs(&probe, spec);
	for (int d = 0; !ret && d < probe.ndirs; d++) {
		if (mkdir(probe.dirs[d], 0700) && errno != EEXIST)
			ret = -errno;
		else if (dir_state(probe.dirs[d]) != 1)
			ret = -ENOTEMPTY;
		for (int o = 0; !ret && o < VOL_ZONES; o++)
			for (int e = 0; e < v->zones[o].ndirs; e++)
				if (!strcmp(v->zones[o].dirs[e],
					    probe.dirs[d]) &&
				    o != z)
					ret = -EEXIST;
	}
	for (int d = 0; d < probe.ndirs; d++)
		free(probe.dirs[d]);
	if (ret) {
		vol_log(VOL_LOG_ERR,
			"zone %d cannot move to %s: %s (give empty "
			"directories that no other zone uses)",
			z, spec,
			ret == -ENOTEMPTY ? "not empty" :
			ret == -EEXIST	  ? "used by another zone" :
					    strerror(-ret));
		return ret;
	}
	pthread_mutex_lock(&v->lock);
	if (zone->up && count_up(v) - 1 < VOL_WRITE_QUORUM) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	vol_zone_fail(v, z, -ECANCELED, "being replaced");
	zone->admin_offline = 0;
	zone->rejoin = 0;
	pthread_mutex_unlock(&v->lock);
	/* Wait for its last batches' I/O before its files close. */
	for (int i = 0; i < 30000; i++) {
		int busy;

		pthread_mutex_lock(&v->lock);
		busy = zone->inflight;
		pthread_mutex_unlock(&v->lock);
		if (!busy)
			break;
		usleep(1000);
	}
	close_files(v, zone);
	/* New directories in place under the lock (the spacer reads them). */
	memset(&probe, 0, sizeof(probe));
	ret = vol_zone_set_dirs(&probe, spec);
	if (ret) {
		for (int d = 0; d < probe.ndirs; d++)
			free(probe.dirs[d]);
		return ret;
	}
	pthread_mutex_lock(&v->lock);
	for (int d = 0; d < zone->ndirs; d++)
		free(zone->dirs[d]);
	memcpy(zone->dirs, probe.dirs, sizeof(zone->dirs));
	zone->ndirs = probe.ndirs;
	snprintf(zone->spec, sizeof(zone->spec), "%s", spec);
	pthread_mutex_unlock(&v->lock);
	vol_zone_identify(zone);
	/* Every superblock names the six zones: they learn the new path. */
	for (int o = 0; o < VOL_ZONES; o++) {
		struct vol_zone *oz = &v->zones[o];

		snprintf(oz->sb.specs[z], VOL_PATH_MAX, "%s", spec);
		if (o != z && oz->up && vol_zone_write_sb(v, oz))
			vol_log(VOL_LOG_WARN,
				"zone %d: cannot record zone %d's new path", o,
				z);
	}
	return format_in(v, z);
}

/* ---- the scrub record ---- */

int vol_scrub_rec_store(struct vol *v, const struct vol_scrub_rec *s)
{
	uint8_t *buf = malloc(VOL_SCRUB_BYTES);
	uint64_t seq;
	int ok = 0;

	if (!buf)
		return -ENOMEM;
	pthread_mutex_lock(&v->lock);
	seq = ++v->scrub_seq;
	v->scrub = *s;
	pthread_mutex_unlock(&v->lock);
	vol_scrub_encode(s, v->uuid, seq, buf);
	for (int z = 0; z < VOL_ZONES; z++) {
		char why[160];

		/* Not into a directory that replaced the zone's. */
		if (zone_is_member(v, z) &&
		    !zone_alive(&v->zones[z], why, sizeof(why)) &&
		    !vol_write_file_atomic(v->zones[z].dirs[0], "scrub", buf,
					   VOL_SCRUB_BYTES))
			ok++;
	}
	free(buf);
	return ok ? 0 : -EIO;
}

int vol_scrub_rec_load(struct vol *v, struct vol_scrub_rec *s)
{
	uint8_t *buf = malloc(VOL_SCRUB_BYTES);
	uint64_t best = 0;
	int found = 0;

	if (!buf)
		return -ENOMEM;
	memset(s, 0, sizeof(*s));
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_scrub_rec r;
		char path[PATH_MAX];
		uint64_t seq;

		if (!v->zones[z].reachable)
			continue;
		snprintf(path, sizeof(path), "%s/scrub", v->zones[z].dirs[0]);
		if (vol_read_file(path, buf, VOL_SCRUB_BYTES) ||
		    vol_scrub_decode(buf, v->uuid, &r, &seq) ||
		    (found && seq <= best))
			continue;
		*s = r;
		best = seq;
		found = 1;
	}
	free(buf);
	pthread_mutex_lock(&v->lock);
	if (best > v->scrub_seq)
		v->scrub_seq = best;
	pthread_mutex_unlock(&v->lock);
	return found ? 0 : -ENOENT;
}
