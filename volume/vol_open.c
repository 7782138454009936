/*
 * vol_open.c - open (attach, unlock, recover, new epoch), close, and the
 * state reports of a volume.
 *
 * Layer: volume/.  Recovery is V7 of the design notes in vol_i.h: union
 * of the newest epoch's valid batches, cut at the first gap after the
 * highest checkpoint, applied to every reachable zone, then a new epoch
 * on at least W zones.  Nothing is written before the key unlocked.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "volume/vol_i.h"

static void log_stderr(int level, const char *msg)
{
	(void)level;
	fprintf(stderr, "sixfold: %s\n", msg);
}

static void (*log_fn)(int, const char *) = log_stderr;

void vol_set_log(void (*fn)(int level, const char *msg))
{
	log_fn = fn ? fn : log_stderr;
}

void vol_log(int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_fn(level, msg);
}

void vol_panic(const char *file, int line, const char *what)
{
	fprintf(stderr, "sixfold: internal error at %s:%d: %s\n", file, line,
		what);
	abort();
}

/* ---- attaching zones ---- */

static void zone_init(struct vol_zone *z, int idx)
{
	memset(z, 0, sizeof(*z));
	z->idx = idx;
	z->lock_fd = z->log_fd = z->ck_fd = -1;
	z->free_fixed = UINT64_MAX;
	pthread_mutex_init(&z->fd_lock, NULL);
}

static void unreachable(struct vol_zone *z, int err, const char *what)
{
	z->reachable = 0;
	z->err = err;
	snprintf(z->reason, sizeof(z->reason), "%s: %s", what, strerror(-err));
}

/*
 * Attach zone z: lock it, read superblocks and checkpoint, open its log.
 * -EBUSY (another holder) is fatal to the open; anything else only makes
 * the zone unreachable.
 */
int vol_zone_attach(struct vol *v, struct vol_zone *z, int lock, int open_log)
{
	char path[PATH_MAX];
	int ret;

	if (lock) {
		/* A zone directory that lost only its lock file is whole. */
		ret = vol_zone_lock(z, 1);
		if (ret == -EBUSY)
			return ret;
		if (ret) {
			unreachable(z, ret, "cannot open its lock file");
			return 0;
		}
	}
	ret = vol_zone_read_sb(z, v->uuid);
	if (ret) {
		unreachable(z, ret, "no valid superblock");
		return 0;
	}
	snprintf(path, sizeof(path), "%s/checkpoint", z->dirs[0]);
	z->ck_fd = open(path, O_RDWR | O_CLOEXEC);
	if (z->ck_fd < 0) {
		unreachable(z, -errno, "cannot open its checkpoint");
		return 0;
	}
	ret = vol_zone_read_ckpt(z);
	if (ret) {
		unreachable(z, ret, "no valid checkpoint");
		return 0;
	}
	if (open_log) {
		snprintf(path, sizeof(path), "%s/log", z->dirs[0]);
		z->log_fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (z->log_fd < 0) {
			unreachable(z, -errno, "cannot open its log");
			return 0;
		}
		vol_zone_flush_domain(z);
	}
	if (!z->pg) {
		z->pg = calloc(v->max_pgs, sizeof(*z->pg));
		if (!z->pg)
			return -ENOMEM;
		for (uint64_t i = 0; i < v->max_pgs; i++)
			z->pg[i].seg = z->pg[i].meta = -1;
	}
	z->rebuilding = !!(z->sb.compat & VOL_SB_COMPAT_REBUILDING);
	vol_zone_identify(z);
	z->reachable = 1;
	return 0;
}

/* Attach all six; fill geometry from the newest superblock. */
static int attach_all(struct vol *v, const char *const *paths, int npaths,
		      int lock, int open_log)
{
	char specs[VOL_ZONES][VOL_PATH_MAX];
	int ret, n = 0;

	ret = vol_resolve_specs(paths, npaths, specs, v->uuid);
	if (ret)
		return ret;
	v->max_pgs = (VOL_MAX_BLOCKS + VOL_PG_BLOCKS - 1) / VOL_PG_BLOCKS;
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];

		zone_init(zone, z);
		ret = vol_zone_set_dirs(zone, specs[z]);
		if (ret) {
			unreachable(zone, ret, "bad zone directory list");
			continue;
		}
		ret = vol_zone_attach(v, zone, lock, open_log);
		if (ret)
			return ret;
		if (!zone->reachable) {
			vol_log(VOL_LOG_WARN, "zone %d (%s) is unavailable: %s",
				z, specs[z], zone->reason);
			continue;
		}
		n++;
		if (zone->sb.epoch > v->epoch) {
			v->epoch = zone->sb.epoch;
			v->max_blocks = zone->sb.max_blocks;
			v->log_blocks = (uint32_t)zone->sb.log_blocks;
		}
	}
	v->max_pgs = (v->max_blocks + VOL_PG_BLOCKS - 1) / VOL_PG_BLOCKS;
	return n;
}

static void release_all(struct vol *v)
{
	vol_space_stop(v);
	for (struct vol_batch *b = v->batches; b;) {
		struct vol_batch *next = b->next;

		vol_pend_remove_batch(v, b);
		/* A hung zone may still read it: leaked, never freed. */
		if (!b->ops)
			vol_batch_free(b);
		b = next;
	}
	for (struct vol_batch *b = v->zombies; b;) {
		struct vol_batch *next = b->next;

		if (!b->ops)
			vol_batch_free(b);
		b = next;
	}
	v->batches = v->batches_tail = v->zombies = NULL;
	for (int z = 0; z < VOL_ZONES; z++)
		vol_zone_release(&v->zones[z], v->max_pgs);
	key_cipher_free(v->kc);
	if (v->mat_ring_ok)
		io_uring_queue_exit(&v->mat_ring);
	pthread_rwlock_destroy(&v->pend_lock);
	pthread_rwlock_destroy(&v->wim_lock);
	pthread_mutex_destroy(&v->wim_flush_lock);
	pthread_mutex_destroy(&v->repair_lock);
	vol_repair_free(v);
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->done_cv);
	pthread_cond_destroy(&v->mat_cv);
	pthread_cond_destroy(&v->idle_cv);
	pthread_cond_destroy(&v->space_cv);
	free(v->pend);
	free(v->mat_bufs);
	free(v->ring);
	free(v);
}

static struct vol *vol_new(void)
{
	struct vol *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->pend = calloc(VOL_PEND_BUCKETS, sizeof(*v->pend));
	if (!v->pend) {
		free(v);
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->done_cv, NULL);
	pthread_cond_init(&v->mat_cv, NULL);
	pthread_cond_init(&v->idle_cv, NULL);
	pthread_cond_init(&v->space_cv, NULL);
	pthread_rwlock_init(&v->pend_lock, NULL);
	pthread_rwlock_init(&v->wim_lock, NULL);
	pthread_mutex_init(&v->wim_flush_lock, NULL);
	pthread_mutex_init(&v->repair_lock, NULL);
	v->queue_tail = &v->queue;
	return v;
}

/* ---- recovery ---- */

struct scan {
	struct vol_batch **b; /* valid batches of the epoch, unique seq */
	size_t n, cap;
	uint64_t max_seq;
	uint64_t max_lsn;
};

static struct vol_batch *find_seq(const struct scan *sc, uint64_t seq)
{
	for (size_t i = sc->n; i-- > 0;)
		if (sc->b[i]->h.seq == seq)
			return sc->b[i];
	return NULL;
}

/*
 * Copy the valid batch at buf, found in zone z's log, into the scan
 * table.  A DIRECT record's block is not in the log: fetch_direct.
 */
static int keep_batch(struct scan *sc, const uint8_t *buf,
		      const struct vol_batch_hdr *h, const struct vol_rec *recs,
		      int z)
{
	struct vol_batch *b = calloc(1, sizeof(*b));
	uint32_t k = 0, w = 0;

	if (!b)
		return -ENOMEM;
	b->h = *h;
	b->logged = 1u << z;
	for (uint32_t i = 0; i < h->nrec; i++) {
		b->nblk += vol_rec_writes(recs[i].kind);
		b->ndirect += recs[i].kind == VOL_REC_DIRECT;
	}
	b->recs = malloc(h->nrec * sizeof(*recs));
	b->data = calloc(b->nblk ? b->nblk : 1, sizeof(*b->data));
	if (!b->recs || !b->data)
		goto out_free;
	memcpy(b->recs, recs, h->nrec * sizeof(*recs));
	for (uint32_t i = 0; i < h->nrec; i++) {
		if (!vol_rec_writes(recs[i].kind))
			continue;
		if (recs[i].kind == VOL_REC_DIRECT) {
			k++;
			continue;
		}
		b->data[k] = vol_alloc_blocks(1);
		if (!b->data[k])
			goto out_free;
		memcpy(b->data[k++],
		       buf + (size_t)(h->nhdr + w++) * VOL_BLOCK_BYTES,
		       VOL_BLOCK_BYTES);
	}
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 64;
		struct vol_batch **nb = realloc(sc->b, cap * sizeof(*nb));

		if (!nb)
			goto out_free;
		sc->b = nb;
		sc->cap = cap;
	}
	sc->b[sc->n++] = b;
	return 0;
out_free:
	vol_batch_free(b);
	return -ENOMEM;
}

/* Is the batch at buf (pos) valid for this volume and epoch? */
static int check_batch(struct vol *v, const uint8_t *buf, uint32_t pos,
		       struct vol_batch_hdr *h, struct vol_rec *recs)
{
	uint32_t k = 0;

	if (vol_batch_decode_hdr(
		    buf, (size_t)(v->log_blocks - pos) * VOL_BLOCK_BYTES, h))
		return 0;
	if (h->pos != pos || h->epoch != v->epoch ||
	    memcmp(h->uuid, v->uuid, KEY_UUID_BYTES) ||
	    pos + h->nhdr + h->ndata > v->log_blocks)
		return 0;
	if (vol_batch_decode_recs(buf, h, recs))
		return 0;
	for (uint32_t i = 0; i < h->nrec; i++) {
		const uint8_t *d;

		if (recs[i].kind != VOL_REC_WRITE)
			continue;
		d = buf + (size_t)(h->nhdr + k++) * VOL_BLOCK_BYTES;
		if ((vol_crc32c(~0u, d, VOL_BLOCK_BYTES) ^ ~0u) !=
		    recs[i].data_crc)
			return 0; /* torn */
	}
	return 1;
}

static int scan_zone(struct vol *v, struct vol_zone *z, uint8_t *log,
		     struct scan *sc)
{
	size_t len = (size_t)v->log_blocks * VOL_BLOCK_BYTES;
	struct vol_rec *recs = malloc(VOL_BATCH_MAX_RECS * sizeof(*recs));
	struct vol_batch_hdr h;
	size_t got = 0;
	int ret = 0;

	if (!recs)
		return -ENOMEM;
	while (got < len) {
		ssize_t n = pread(z->log_fd, log + got, len - got, got);

		if (n <= 0) {
			ret = n < 0 ? -errno : -EUCLEAN;
			goto out_free;
		}
		got += n;
	}
	for (uint32_t pos = 0; pos < v->log_blocks;) {
		const uint8_t *buf = log + (size_t)pos * VOL_BLOCK_BYTES;

		if (!check_batch(v, buf, pos, &h, recs)) {
			pos++;
			continue;
		}
		struct vol_batch *seen = find_seq(sc, h.seq);

		if (seen) {
			seen->logged |= 1u << z->idx;
		} else {
			ret = keep_batch(sc, buf, &h, recs, z->idx);
			if (ret)
				goto out_free;
		}
		pos += h.nhdr + h.ndata;
	}
out_free:
	free(recs);
	return ret;
}

static int cmp_batch_lsn(const void *a, const void *b)
{
	const struct vol_batch *x = *(struct vol_batch *const *)a;
	const struct vol_batch *y = *(struct vol_batch *const *)b;

	return x->h.first_lsn < y->h.first_lsn ?
		       -1 :
		       x->h.first_lsn > y->h.first_lsn;
}

/*
 * Sort the union by LSN and cut it: keep every batch below the highest
 * checkpoint, then the unbroken chain after it.  Returns how many of
 * sc->b (now sorted) are kept; *cut is the last LSN kept.
 */
static size_t cut_union(struct vol *v, struct scan *sc, uint64_t epoch_lsn,
			uint64_t *cut)
{
	uint64_t applied = 0, next;
	size_t kept = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].reachable &&
		    v->zones[z].ck.applied_lsn > applied)
			applied = v->zones[z].ck.applied_lsn;
	next = applied + 1 > epoch_lsn ? applied + 1 : epoch_lsn;
	if (sc->n)
		qsort(sc->b, sc->n, sizeof(*sc->b), cmp_batch_lsn);
	for (size_t i = 0; i < sc->n; i++) {
		struct vol_batch *b = sc->b[i];
		uint64_t last = b->h.first_lsn + b->h.nrec - 1;

		if (last > sc->max_lsn)
			sc->max_lsn = last;
		if (b->h.seq > sc->max_seq)
			sc->max_seq = b->h.seq;
	}
	for (size_t i = 0; i < sc->n; i++) {
		struct vol_batch *b = sc->b[i];
		uint64_t last = b->h.first_lsn + b->h.nrec - 1;

		if (last < next) {
			sc->b[kept++] = b; /* below the checkpoint: durable */
		} else if (b->h.first_lsn == next) {
			sc->b[kept++] = b;
			next = last + 1;
		} else {
			break; /* the first gap: the rest is cut */
		}
	}
	/* Free what was cut; keep the pointers' order. */
	for (size_t i = kept; i < sc->n; i++) {
		size_t j;

		for (j = 0; j < kept && sc->b[j] != sc->b[i]; j++)
			;
		if (j == kept)
			vol_batch_free(sc->b[i]);
	}
	*cut = next - 1;
	return kept;
}

/*
 * The block of DIRECT record r from any reachable zone's segment that
 * matches its CRC, zones that logged the batch first; -ENOENT if none.
 */
static int read_direct(struct vol *v, const struct vol_batch *b,
		       const struct vol_rec *r, uint8_t **out)
{
	uint8_t *blk = vol_alloc_blocks(1);
	uint64_t pg = r->lba / VOL_PG_BLOCKS;

	if (!blk)
		return -ENOMEM;
	for (int pass = 0; pass < 2; pass++)
		for (int z = 0; z < VOL_ZONES; z++) {
			struct vol_zone *zone = &v->zones[z];
			struct vol_pgfd fd;
			ssize_t n;

			/* pass 0: zones that logged it, pass 1: others */
			if (!zone->reachable ||
			    (int)((b->logged >> z) & 1) == pass ||
			    vol_zone_pgfd(v, zone, pg, 0, &fd))
				continue;
			n = pread(fd.seg, blk, VOL_BLOCK_BYTES,
				  (off_t)(r->lba % VOL_PG_BLOCKS) *
					  VOL_BLOCK_BYTES);
			vol_zone_pgfd_put(zone, pg);
			if (n == VOL_BLOCK_BYTES &&
			    (vol_crc32c(~0u, blk, VOL_BLOCK_BYTES) ^ ~0u) ==
				    r->data_crc) {
				*out = blk;
				return 0;
			}
		}
	free(blk);
	return -ENOENT;
}

/* Does a kept record after b[i]'s record r write or discard r's LBA? */
static int replaced_later(struct vol_batch *const *b, size_t n, size_t i,
			  const struct vol_rec *r)
{
	for (; i < n; i++)
		for (uint32_t j = 0; j < b[i]->h.nrec; j++) {
			const struct vol_rec *o = &b[i]->recs[j];
			uint64_t len = vol_rec_writes(o->kind) ? 1 : o->nblocks;

			if (o->lsn > r->lsn && r->lba >= o->lba &&
			    r->lba - o->lba < len)
				return 1;
		}
	return 0;
}

/*
 * L2: a kept DIRECT record's block is not in the log but in the
 * segments, where every zone that logged its batch wrote it, stable,
 * first.  Replay needs it for the zones that lack it (and a read-only
 * open serves it from memory), so it is read back from any reachable
 * zone whose block matches the record's CRC.  Only records that some
 * zone may lack are read: those past the lowest checkpoint, and not
 * replaced by a later kept record (a round that materialised the later
 * one may have overwritten the block in every zone before it wrote its
 * checkpoints).
 *  - Past every checkpoint, a batch whose block no zone gives was never
 *    durable: an acknowledged batch is on W zones, and any R reachable
 *    zones include one of them (W + R > N).  The chain is cut there,
 *    as at a gap (V7).
 *  - Below some checkpoint the block was materialised, so a zone held
 *    it.  With no copy left and no later record replacing it, it is
 *    lost: said, and its reads fail (its meta names a version no zone
 *    holds) rather than return other data.
 */
static int fetch_direct(struct vol *v, struct scan *sc, size_t *kept,
			uint64_t *cut)
{
	uint64_t low = UINT64_MAX, high = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t a = v->zones[z].ck.applied_lsn;

		if (!v->zones[z].reachable)
			continue;
		low = a < low ? a : low;
		high = a > high ? a : high;
	}
	for (size_t i = 0; i < *kept; i++) {
		struct vol_batch *b = sc->b[i];
		uint32_t k = 0;

		for (uint32_t j = 0; b->ndirect && j < b->h.nrec; j++) {
			const struct vol_rec *r = &b->recs[j];
			uint32_t slot = k;
			int ret;

			if (!vol_rec_writes(r->kind))
				continue;
			k++;
			if (r->kind != VOL_REC_DIRECT || r->lsn <= low)
				continue;
			ret = read_direct(v, b, r, &b->data[slot]);
			if (ret == -ENOMEM)
				return ret;
			/*
			 * A later record decides the block: its data is not
			 * needed, and may be gone (a materialisation round
			 * that wrote the later version, or punched it, over
			 * every zone's segment before its checkpoints).
			 */
			if (!ret || replaced_later(sc->b, *kept, i, r))
				continue;
			if (b->h.first_lsn > high) {
				vol_log(VOL_LOG_INFO,
					"recovery: block %llu of batch %llu "
					"is in no zone's segment, so the "
					"batch never became durable: the log "
					"is cut before it",
					(unsigned long long)r->lba,
					(unsigned long long)b->h.seq);
				*cut = b->h.first_lsn - 1;
				for (size_t c = i; c < *kept; c++)
					vol_batch_free(sc->b[c]);
				*kept = i;
				return 0;
			}
			vol_log(VOL_LOG_ERR,
				"block %llu: no zone holds its version %llu "
				"any more; reads of it fail until it is "
				"written again",
				(unsigned long long)r->lba,
				(unsigned long long)r->lsn);
		}
	}
	return 0;
}

/* Apply kept batches to every reachable zone, in rounds. */
static int replay(struct vol *v, struct vol_batch **b, size_t n)
{
	uint64_t min_lsn[VOL_ZONES];
	uint32_t mask = 0, failed;
	int ret = 0;
	uint64_t low = UINT64_MAX;
	size_t i = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		min_lsn[z] = v->zones[z].ck.applied_lsn;
		if (v->zones[z].reachable) {
			mask |= 1u << z;
			if (min_lsn[z] < low)
				low = min_lsn[z];
		}
	}
	/* What every reachable zone applied already needs no second look. */
	while (i < n && b[i]->h.first_lsn + b[i]->h.nrec - 1 <= low)
		i++;
	while (i < n) {
		size_t j = i, recs = 0;

		while (j < n && (j == i || recs + b[j]->h.nrec <= 4096))
			recs += b[j++]->h.nrec;
		ret = vol_mat_apply(v, b + i, (int)(j - i), min_lsn, mask,
				    v->pg_count, &failed);
		if (ret)
			return ret;
		for (int z = 0; z < VOL_ZONES; z++)
			if (failed & (1u << z)) {
				unreachable(&v->zones[z], -EIO,
					    "I/O failed during recovery");
				mask &= ~(1u << z);
			}
		i = j;
	}
	return 0;
}

static int count_reachable(const struct vol *v)
{
	int n = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		n += v->zones[z].reachable;
	return n;
}

/* Start epoch E+1 on every reachable zone; W of them must take it. */
static int new_epoch(struct vol *v, uint64_t epoch_lsn)
{
	int ok = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		int ret;

		if (!zone->reachable)
			continue;
		zone->sb.epoch = v->epoch + 1;
		zone->sb.epoch_lsn = epoch_lsn;
		ret = vol_zone_write_sb(v, zone);
		if (ret) {
			/* Out of the write set: what it misses goes to WIM. */
			unreachable(zone, ret, "cannot write its superblock");
			zone->up = 0;
		} else {
			ok++;
		}
	}
	if (ok < VOL_WRITE_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"could record the new epoch on only %d zones (4 "
			"needed)",
			ok);
		return -EIO;
	}
	v->epoch++;
	return 0;
}

/* Rewrite key files that are damaged or older than the one that won. */
static void heal_key_files(struct vol *v, const uint8_t *hdr, uint64_t gen)
{
	uint8_t *want = malloc(VOL_KF_BYTES), *have = malloc(VOL_KF_BYTES);
	char path[PATH_MAX];

	if (!want || !have)
		goto out_free;
	vol_kf_encode(want, v->uuid, gen, hdr);
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];

		if (!zone->reachable)
			continue;
		snprintf(path, sizeof(path), "%s/keys", zone->dirs[0]);
		if (!vol_read_file(path, have, VOL_KF_BYTES) &&
		    !memcmp(have, want, VOL_KF_BYTES))
			continue;
		if (vol_write_file_atomic(zone->dirs[0], "keys", want,
					  VOL_KF_BYTES))
			vol_log(VOL_LOG_WARN, "zone %d: cannot rewrite %s", z,
				path);
		else
			vol_log(VOL_LOG_INFO, "zone %d: key header rewritten",
				z);
	}
out_free:
	free(want);
	free(have);
}

static int recover(struct vol *v, uint64_t epoch_lsn)
{
	struct scan sc = { 0 };
	uint8_t *log = vol_alloc_blocks(v->log_blocks);
	uint64_t cut;
	size_t kept;
	int ret = 0;

	if (!log)
		return -ENOMEM;
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!v->zones[z].reachable)
			continue;
		if (v->zones[z].ck.pg_count > v->pg_count)
			v->pg_count = v->zones[z].ck.pg_count;
		ret = scan_zone(v, &v->zones[z], log, &sc);
		if (ret == -ENOMEM) {
			kept = sc.n;
			goto out_batches;
		}
		if (ret)
			unreachable(&v->zones[z], ret, "cannot read its log");
	}
	free(log);
	log = NULL;
	kept = cut_union(v, &sc, epoch_lsn, &cut);
	ret = fetch_direct(v, &sc, &kept, &cut);
	if (ret)
		goto out_batches;
	for (size_t i = 0; i < kept; i++)
		if (sc.b[i]->h.pg_count > v->pg_count)
			v->pg_count = sc.b[i]->h.pg_count;
	if (v->pg_count == 0)
		v->pg_count = 1;
	ret = vol_wim_load(v);
	if (ret)
		goto out_batches;
	if (v->readonly) {
		/* Serve the kept records from memory; write nothing. */
		for (size_t i = 0; i < kept; i++) {
			struct vol_batch *b = sc.b[i];

			b->durable = b->materialised = 1;
			vol_pend_insert_batch(v, b);
			if (v->batches_tail)
				v->batches_tail->next = b;
			else
				v->batches = b;
			v->batches_tail = b;
		}
		kept = 0;
		goto out_done;
	}
	if (count_reachable(v) < VOL_WRITE_QUORUM)
		goto out_quorum;
	ret = replay(v, sc.b, kept);
	if (ret)
		goto out_batches;
	for (int z = 0; z < VOL_ZONES; z++) {
		v->zones[z].up = v->zones[z].reachable;
		if (!v->zones[z].reachable) /* V5 for the absent */
			vol_wim_mark_batches(v, z, sc.b, (int)kept);
	}
	if (count_reachable(v) < VOL_WRITE_QUORUM)
		goto out_quorum;
	ret = vol_wim_flush(v);
	if (ret)
		goto out_batches;
	/* V1: no LSN of the old epoch, cut or not, is ever issued again. */
	if (sc.max_lsn < cut)
		sc.max_lsn = cut;
	ret = new_epoch(v, sc.max_lsn + VOL_LSN_WINDOW);
	if (ret)
		goto out_batches;
	v->next_lsn = sc.max_lsn + VOL_LSN_WINDOW;
out_done:
	v->durable_lsn = cut;
	v->next_seq = sc.max_seq + 1;
	v->durable_seq = sc.max_seq;
	for (int z = 0; z < VOL_ZONES; z++)
		v->zones[z].done_seq = sc.max_seq;
	goto out_batches;
out_quorum:
	vol_log(VOL_LOG_ERR,
		"only %d of 6 zones are usable; a read-write open needs 4 "
		"(bring zones back, or open read-only with 3)",
		count_reachable(v));
	ret = -EIO;
out_batches:
	for (size_t i = 0; i < kept; i++)
		vol_batch_free(sc.b[i]);
	free(sc.b);
	free(log);
	return ret;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			vol_log(VOL_LOG_WARN,
				"cannot raise the open file limit");
	}
}

int vol_open(const struct vol_open_opts *o, struct vol **out)
{
	struct vol *v = vol_new();
	struct key_master *mk = NULL;
	uint8_t hdr[KEY_HEADER_BYTES];
	uint64_t epoch_lsn = 0, gen = 0;
	int ret, n;

	if (!v)
		return -ENOMEM;
	raise_fd_limit();
	ret = key_init();
	if (ret)
		goto out_release;
	v->readonly = o->readonly;
	v->write_timeout_ms = o->write_timeout_ms;
	n = attach_all(v, o->paths, o->npaths, 1, 1);
	if (n < 0) {
		ret = n;
		goto out_release;
	}
	if (n < VOL_READ_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"only %d of 6 zones are reachable; at least 3 are "
			"needed to read the volume",
			n);
		ret = -EIO;
		goto out_release;
	}
	ret = vol_unlock_key(v->zones, v->uuid, o->key, &mk, hdr, &gen);
	if (ret < 0)
		goto out_release;
	ret = key_cipher_create(mk, v->uuid, &v->kc);
	key_master_free(mk);
	if (ret)
		goto out_release;
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].reachable && v->zones[z].sb.epoch == v->epoch)
			epoch_lsn = v->zones[z].sb.epoch_lsn;
	if (!v->readonly) {
		ret = vol_ring_init(&v->mat_ring);
		if (ret < 0)
			goto out_release;
		v->mat_ring_ok = 1;
	}
	ret = recover(v, epoch_lsn);
	if (ret)
		goto out_release;
	if (vol_scrub_rec_load(v, &v->scrub)) /* none readable */
		v->scrub.state = VOL_SCRUB_NONE;
	if (!v->readonly) {
		heal_key_files(v, hdr, gen);
		ret = vol_space_start(v);
		if (ret)
			goto out_release;
		ret = vol_mat_start(v);
		if (ret)
			goto out_release;
		v->threads = 1;
		ret = vol_log_start(v);
		if (ret) {
			vol_mat_stop(v);
			v->threads = 0;
			goto out_release;
		}
	}
	*out = v;
	return 0;
out_release:
	release_all(v);
	return ret;
}

int vol_close(struct vol *v)
{
	int ret;

	if (v->threads) {
		vol_log_stop(v);
		vol_mat_stop(v);
		if (!v->err && vol_wim_flush(v))
			v->err = -EIO;
	}
	vol_space_stop(v);
	ret = v->err;
	release_all(v);
	return ret;
}

/* ---- reports ---- */

/* Blocks held by a zone: allocated blocks of its segment files. */
static uint64_t zone_used(const struct vol_zone *z)
{
	uint64_t sum = 0;

	for (int d = 0; d < z->ndirs; d++) {
		char path[PATH_MAX];
		struct dirent *de;
		struct stat st;
		DIR *dir;

		snprintf(path, sizeof(path), "%s/pg", z->dirs[d]);
		dir = opendir(path);
		if (!dir)
			continue;
		while ((de = readdir(dir))) {
			size_t l = strlen(de->d_name);

			if (l < 4 || strcmp(de->d_name + l - 4, ".seg"))
				continue;
			if (!fstatat(dirfd(dir), de->d_name, &st, 0))
				sum += (uint64_t)st.st_blocks * 512 /
				       VOL_BLOCK_BYTES;
		}
		closedir(dir);
	}
	return sum;
}

static void fill_info(struct vol *v, struct vol_info *out, int open)
{
	uint64_t top = 0;
	int up = 0;

	memset(out, 0, sizeof(*out));
	memcpy(out->uuid, v->uuid, KEY_UUID_BYTES);
	out->epoch = v->epoch;
	out->max_blocks = v->max_blocks;
	out->capacity_blocks = v->pg_count * VOL_PG_BLOCKS;
	if (out->capacity_blocks > v->max_blocks)
		out->capacity_blocks = v->max_blocks;
	out->durable_lsn = v->durable_lsn;
	out->bad_copies = v->bad_copies;
	out->healed_copies = v->healed_copies;
	out->direct_blocks = v->direct_blocks;
	out->logged_blocks = v->logged_blocks;
	out->commit.batches = v->commit_hist[VOL_CP_DURABLE].n;
	vol_hist_get(&v->commit_hist[VOL_CP_QUEUED], &out->commit.queued);
	vol_hist_get(&v->commit_hist[VOL_CP_WRITTEN], &out->commit.written);
	vol_hist_get(&v->commit_hist[VOL_CP_DURABLE], &out->commit.durable);
	vol_hist_get(&v->commit_hist[VOL_CP_TOTAL], &out->commit.total);
	out->commit.shared_flushes = v->dom_flushes;
	out->commit.waiter_flushes = v->dom_flushes_handed;
	out->scrub = v->scrub;
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].reachable && v->zones[z].ck.applied_lsn > top)
			top = v->zones[z].ck.applied_lsn;
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		struct vol_zone_info *zi = &out->zones[z];
		int usable = open ? zone->up : zone->reachable;

		snprintf(zi->path, sizeof(zi->path), "%s", zone->spec);
		zi->epoch = zone->sb.epoch;
		zi->applied_lsn = zone->ck.applied_lsn;
		zi->lag_lsn = zone->reachable ? top - zone->ck.applied_lsn : 0;
		zi->behind_regions = zone->wim_regions;
		zi->behind_blocks = zone->wim_regions * VOL_WIM_REGION_BLOCKS;
		zi->admin_offline = zone->admin_offline;
		zi->repaired_blocks = zone->repaired;
		zi->flush_shared = 0;
		for (int o = 0; o < VOL_ZONES && open && zone->flush_dev; o++)
			if (o != z && v->zones[o].flush_dev == zone->flush_dev)
				zi->flush_shared |= 1u << o | 1u << z;
		snprintf(zi->reason, sizeof(zi->reason), "%s", zone->reason);
		if (!usable) {
			zi->state = VOL_ZONE_OFFLINE;
			if (!zi->reason[0])
				snprintf(zi->reason, sizeof(zi->reason),
					 "out of the write set");
		} else if (zone->rebuilding) {
			up++;
			zi->state = VOL_ZONE_REBUILDING;
			snprintf(zi->reason, sizeof(zi->reason),
				 "new: %llu MiB of regions left to fill from "
				 "its peers",
				 (unsigned long long)zone->wim_regions);
		} else if (zone->wim_regions) {
			up++;
			/* The repair thread, if one watches, copies them. */
			zi->state = open && v->repair_active ?
					    VOL_ZONE_RESYNCING :
					    VOL_ZONE_DEGRADED;
			snprintf(zi->reason, sizeof(zi->reason),
				 "missed writes in %llu regions of 1 MiB%s",
				 (unsigned long long)zone->wim_regions,
				 zi->state == VOL_ZONE_RESYNCING ?
					 "" :
					 " (resynced once mounted)");
		} else {
			up++;
			zi->state = VOL_ZONE_HEALTHY;
		}
	}
	out->write_quorum = up >= VOL_WRITE_QUORUM;
}

/*
 * Blocks held, from the segment files' allocation: a directory scan, so
 * done without the volume's locks (the directory names never change).
 */
static void fill_used(struct vol *v, struct vol_info *out)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone_info *zi = &out->zones[z];

		if (!v->zones[z].reachable)
			continue;
		zi->used_blocks = zone_used(&v->zones[z]);
		if (zi->state == VOL_ZONE_HEALTHY &&
		    zi->used_blocks > out->used_blocks)
			out->used_blocks = zi->used_blocks;
	}
}

int vol_info(struct vol *v, struct vol_info *out)
{
	pthread_mutex_lock(&v->lock);
	pthread_rwlock_rdlock(&v->wim_lock);
	fill_info(v, out, !v->readonly);
	pthread_rwlock_unlock(&v->wim_lock);
	pthread_mutex_unlock(&v->lock);
	fill_used(v, out);
	return 0;
}

void vol_commit_info_reset(struct vol *v)
{
	pthread_mutex_lock(&v->lock);
	memset(v->commit_hist, 0, sizeof(v->commit_hist));
	v->dom_flushes = v->dom_flushes_handed = 0;
	pthread_mutex_unlock(&v->lock);
}

/* Who holds zone z's lock, if anyone ("" if free). */
static void lock_holder(const struct vol_zone *z, char *who, size_t len)
{
	char path[PATH_MAX];
	int fd;

	who[0] = 0;
	snprintf(path, sizeof(path), "%s/lock", z->dirs[0]);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_SH | LOCK_NB)) {
		ssize_t n = pread(fd, who, len - 1, 0);

		who[n > 0 ? n : 0] = 0;
		who[strcspn(who, "\n")] = 0;
		if (!who[0])
			snprintf(who, len, "holder unknown");
	}
	close(fd);
}

int vol_status(const char *const *paths, int npaths, struct vol_info *out)
{
	struct vol *v = vol_new();
	int n;

	if (!v)
		return -ENOMEM;
	n = attach_all(v, paths, npaths, 0, 0);
	if (n < 0) {
		release_all(v);
		return n;
	}
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].reachable &&
		    v->zones[z].ck.pg_count > v->pg_count)
			v->pg_count = v->zones[z].ck.pg_count;
	if (!v->pg_count)
		v->pg_count = 1;
	if (vol_wim_load(v) == 0) {
		if (vol_scrub_rec_load(v, &v->scrub))
			v->scrub.state = VOL_SCRUB_NONE;
		fill_info(v, out, 0);
		fill_used(v, out);
		for (int z = 0; z < VOL_ZONES && !out->holder[0]; z++)
			if (v->zones[z].reachable)
				lock_holder(&v->zones[z], out->holder,
					    sizeof(out->holder));
	}
	release_all(v);
	return n ? 0 : -EIO;
}

/* ---- key administration ---- */

struct vol_keyadm {
	struct vol *v;
};

int vol_keyadm_open(const char *const *paths, int npaths,
		    struct vol_keyadm **out)
{
	struct vol_keyadm *ka = calloc(1, sizeof(*ka));
	int ret, n;

	if (!ka)
		return -ENOMEM;
	ret = key_init();
	ka->v = vol_new();
	if (ret || !ka->v) {
		ret = ret ? ret : -ENOMEM;
		goto out_free;
	}
	n = attach_all(ka->v, paths, npaths, 1, 0);
	if (n < 0) {
		ret = n;
		goto out_release;
	}
	if (n == 0) {
		vol_log(VOL_LOG_ERR, "no zone of the volume is reachable");
		ret = -EIO;
		goto out_release;
	}
	*out = ka;
	return 0;
out_release:
	release_all(ka->v);
out_free:
	free(ka);
	return ret;
}

const uint8_t *vol_keyadm_uuid(const struct vol_keyadm *ka)
{
	return ka->v->uuid;
}

int vol_keyadm_header(struct vol_keyadm *ka, uint8_t hdr[KEY_HEADER_BYTES])
{
	uint64_t gen;

	return vol_unlock_key(ka->v->zones, ka->v->uuid, NULL, NULL, hdr, &gen);
}

int vol_keyadm_unlock(struct vol_keyadm *ka, const struct key_source *src,
		      struct key_master **mk, uint8_t hdr[KEY_HEADER_BYTES])
{
	uint64_t gen;

	return vol_unlock_key(ka->v->zones, ka->v->uuid, src, mk, hdr, &gen);
}

int vol_keyadm_store(struct vol_keyadm *ka, const uint8_t hdr[KEY_HEADER_BYTES],
		     int *written)
{
	struct vol *v = ka->v;
	uint8_t *buf;
	uint8_t old[KEY_HEADER_BYTES];
	uint64_t gen = 0;
	int ok = 0, reach = 0, ret;

	*written = 0;
	for (int z = 0; z < VOL_ZONES; z++)
		reach += v->zones[z].reachable;
	if (reach < VOL_WRITE_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"only %d zones of the volume are reachable (4 needed "
			"to change its keys); nothing was changed",
			reach);
		return -EIO;
	}
	buf = malloc(VOL_KF_BYTES);
	if (!buf)
		return -ENOMEM;
	ret = vol_unlock_key(v->zones, v->uuid, NULL, NULL, old, &gen);
	if (ret < 0 && ret != -ENOENT)
		goto out_free;
	vol_kf_encode(buf, v->uuid, gen + 1, hdr);
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!v->zones[z].reachable)
			continue;
		ret = vol_write_file_atomic(v->zones[z].dirs[0], "keys", buf,
					    VOL_KF_BYTES);
		if (ret)
			vol_log(VOL_LOG_WARN, "zone %d: cannot write keys: %s",
				z, strerror(-ret));
		else
			ok++;
	}
	ret = 0;
	*written = ok;
	if (ok < VOL_WRITE_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"the new key header reached only %d zones (4 needed)",
			ok);
		ret = -EIO;
	}
out_free:
	free(buf);
	return ret;
}

void vol_keyadm_close(struct vol_keyadm *ka)
{
	if (!ka)
		return;
	release_all(ka->v);
	free(ka);
}
