/*
 * fs_txn.c - the filesystem's persistent state (struct fs_store) and its
 * transactions: one volume transaction per filesystem transaction.
 *
 * Layer: fs/.  Drives the B+tree (fs_btree.h) and the allocator
 * (fs_alloc.h) and is the only fs/ code that writes to the volume
 * (vol_txn_*).  Knows item formats only to make the root directory at
 * mkfs and to check items (fs_items.h); knows nothing of FUSE.
 *
 * DESIGN NOTES
 *
 * States of a store, and the function of each transition:
 *   IDLE --fs_txn_begin--> OPEN --fs_txn_reserve, fs_txn_insert/update/
 *   delete, fs_txn_alloc/unalloc/free/write/new_ino--> OPEN
 *   OPEN --fs_txn_commit (durable)--> IDLE
 *   OPEN --fs_txn_commit (flush or volume commit failed)--> ERROR
 *   OPEN --fs_txn_abort (no tree change yet: rolled back)--> IDLE
 *   OPEN --fs_txn_abort (a tree change cannot be undone)--> ERROR
 * ERROR is sticky (STYLE 4, like SQLite's pager ERROR state): every
 * fs_txn_* call returns st->err until the store is closed and the volume
 * reopened, because the in-memory tree is then ahead of the disk and
 * anything committed on top of it could mix states.
 *
 * Invariants:
 *   T1 The volume holds the state of the last committed transaction
 *      (generation sb.gen); memory holds it plus the open transaction.
 *   T2 Everything of a transaction goes into one volume transaction, in
 *      this order: (mkfs: a discard of the whole capacity), data blocks as
 *      they are written, B+tree nodes (fs_bt_flush), bitmap and descriptor
 *      blocks (fs_alloc_flush), discards of freed runs, the superblock
 *      (new gen, root, height, next_ino, allocator totals).  The volume
 *      applies all of it or none (V2, V7); the order only matters for the
 *      same LBA, where a free's discard must come after any write of it.
 *   T3 Budget (below): a reservation is refused unless the transaction's
 *      records stay <= VOL_TXN_MAX_RECS in the worst case, so a commit is
 *      never split and never too big; fs_txn_commit checks again before
 *      it writes anything (a failure there is a bug, and sticky).
 *   T4 The node pool holds blocks allocated by this transaction for
 *      B+tree nodes and referenced by nothing committed; a node the tree
 *      frees in the transaction that allocated it goes back to the pool
 *      (never written, so reusable at once); the rest of the pool is
 *      unallocated before the flush.  Other frees wait for the commit
 *      (allocator A1: DESIGN 2's reuse rule).
 *   T5 Reservations: the allocator holds t->blocks_left blocks for data
 *      allocations; the pool's blocks are allocated at reserve time; the
 *      volume has promised the zones' room for every record the
 *      transaction may have (vol_txn_reserve); so no change of an
 *      operation, and no commit, fails for want of space.  A step that
 *      frees space (res->freeing) may take its blocks from the
 *      allocator's metadata reserve, which every other step leaves alone
 *      (fs_alloc.h, FS_ALLOC_META_RESERVE_BLOCKS: sized by this budget),
 *      so a full filesystem can still be emptied.
 *
 * Budget.  Records of a transaction = dirty B+tree nodes + changed
 * bitmap and descriptor blocks + discards + data blocks + 1 (superblock).
 * fs_txn_reserve adds the worst case of the operation to what the
 * transaction holds now (exact: fs_bt_dirty_count, fs_alloc_pending).
 * H bounds the tree's height while the operation runs: the height now,
 * plus 1 + (K - 1) / 3 if the reservation holds K > 0 inserts and
 * updates (at most 8).  Only a split grows the tree, by one level per
 * operation: the first of the K may split a full root; a root split
 * leaves a root of 2 or 3 children, and splitting it again needs it to
 * pass the fanout (>= 8), at least 3 more operations (one adds at most 2
 * entries to a node: a leaf split in three).  Earlier operations of the
 * transaction are in the height now.
 *   insert           2H + 2   nodes dirtied: a leaf split in three, two per
 *                             internal level, a new root; new nodes come
 *                             from the pool (no allocator records)
 *   update           4H       a split as an insert, or merges as a delete
 *   delete           4H       2 nodes per level dirtied or freed (a freed
 *                             node's record is its discard), and up to H
 *                             freed nodes each changing a bitmap block and
 *                             a descriptor
 *   data block       1
 *   alloc            2        a run lies in one window: 1 bitmap block, 1
 *                             descriptor
 *   free             4        a run of <= 32768 blocks spans <= 2 windows,
 *                             1 descriptor, 1 discard
 *   node pool        exact    (H + 2) blocks per insert or update,
 *                             allocated by fs_txn_reserve: usually one
 *                             window, 2 records
 * Example, a 1 MiB write at height 3 (K = 3, H = 4): 256 data + 2 runs
 * (4) + 2 extent inserts (2 x 10) + 1 inode update (16) + pool (2) +
 * superblock (1) = 299 <= 320.  Deleting a file of 4 extents at height
 * 3 (K = 1, H = 4): 7 deletes (7 x 16) + 4 frees (16) + its directory's
 * update (16) + superblock = 145.
 *
 *   T6 Commits are asynchronous (vol_txn_commit_async): a transaction is
 *      ordered when fs_txn_commit returns and durable later
 *      (fs_store_wait).  The volume serves a block only once it is
 *      durable, so until then every block a commit wrote is kept in the
 *      recent map, and every read of the store (B+tree nodes, allocator
 *      blocks, file data: fs_store_read) looks there first.  Entries go
 *      once their ticket is durable.  Freed blocks are discarded, and a
 *      discard is not in the map: a block allocated again is written
 *      before it is read (the caller's rule for data; nodes and bitmaps
 *      are always written whole), so the stale copy is never seen.
 *      Prefix semantics hold because the volume makes transactions
 *      durable in commit order: after a crash the volume holds every
 *      transaction up to some point and none after it.
 *
 * Locking: none inside; the caller's metadata lock protects the store,
 * its transaction, the tree and the allocator (fs_txn.h, Threads).  The
 * recent map has its own mutex, so fs_store_read and fs_store_wait may
 * run in any thread without the caller's lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "fs/fs_txn.h"

#define TXN_RECS_MAX VOL_TXN_MAX_RECS
#define POOL_MAX (2 * VOL_TXN_MAX_RECS) /* node blocks held by a txn */
#define GROW_OPS 3 /* tree ops per extra level of the bound (Budget) */
#define ROOT_MODE_DEFAULT 0755u

/* The open transaction.  Caller's lock. */
struct fs_txn {
	struct fs_store *st; /* owner */
	struct vol_txn *vt; /* the volume transaction */
	int changed; /* a tree change succeeded (cannot be undone) */
	int touched; /* anything else to write (data, alloc, free, ino) */
	/* left of the last reservation */
	uint32_t ins_left, upd_left, del_left; /* tree changes */
	uint32_t data_left, allocs_left, frees_left;
	uint64_t blocks_left; /* reserved in the allocator */
	int freeing; /* the last reservation's res->freeing */
	unsigned extra_recs; /* volume records besides the counted ones */
	uint64_t pool[POOL_MAX]; /* T4: node blocks ready */
	unsigned npool;
	uint64_t issued[POOL_MAX]; /* handed to the tree in this txn */
	unsigned nissued;
	/* T6: copies of every block written, for the recent map */
	struct recent *staged[VOL_TXN_MAX_RECS];
	unsigned nstaged;
};

/* The filesystem's persistent state.  Caller's lock. */
struct fs_store {
	struct vol *vol; /* not owned */
	uint64_t max_blocks; /* the volume's maximum */
	struct fs_sb sb; /* last committed superblock */
	uint64_t next_ino; /* working next_ino */
	struct fs_bt *bt; /* the metadata tree */
	struct fs_alloc *alloc; /* the allocator */
	uint32_t bt_cache_nodes, bt_fanout; /* tree cfg */
	int err; /* sticky error, 0 if none */
	int txn_open; /* txn is in use */
	uint64_t ticket; /* volume ticket of the last commit */
	/* T6: the recent map, under its own lock (fs_store_read) */
	pthread_mutex_t rmu;
	struct recent **rhash; /* RECENT_BUCKETS chains by LBA */
	struct recent *rhead, *rtail; /* by ticket, oldest first */
	uint64_t rcount; /* blocks in the map */
	struct fs_txn txn; /* the one transaction */
	uint8_t blk[FS_BLOCK_BYTES]; /* superblock scratch */
};

/*
 * T6: a block written by a committed transaction that may not be
 * durable yet.  While it is in the map (ticket > the volume's durable
 * ticket, or not yet pruned) reads of its LBA are answered from here.
 */
struct recent {
	uint64_t lba;
	uint64_t ticket; /* of the newest commit that wrote it; 0: staged */
	struct recent *hnext; /* hash chain */
	struct recent *prev, *next; /* ticket order */
	uint8_t data[FS_BLOCK_BYTES];
};

#define RECENT_BUCKETS 16384u

/* Cost of a reservation (Budget). */
struct cost {
	uint64_t recs; /* worst-case records, pool excluded */
	uint64_t pool; /* node blocks for the pool */
};

static void fail(struct fs_store *st, int err, const char *why)
{
	if (st->err)
		return;
	st->err = err;
	vol_log(VOL_LOG_ERR,
		"filesystem: %s (%s); metadata in memory is now ahead of the "
		"volume, so every change fails until the volume is reopened",
		why, strerror(-err));
}

static unsigned tree_height(const struct fs_store *st)
{
	return st->bt ? fs_bt_height(st->bt) : 1;
}

/* Records the open transaction holds now (T3). */
static uint64_t records_now(const struct fs_store *st)
{
	unsigned writes, discards;

	fs_alloc_pending(st->alloc, &writes, &discards);
	return (st->bt ? fs_bt_dirty_count(st->bt) : 0) + (uint64_t)writes +
	       discards + st->txn.extra_recs + 1;
}

static void res_cost(const struct fs_store *st, const struct fs_txn_res *r,
		     struct cost *c)
{
	uint64_t k = (uint64_t)r->inserts + r->updates; /* may split */
	uint64_t h = tree_height(st) + (k ? 1 + (k - 1) / GROW_OPS : 0);

	if (h > FS_BT_MAX_LEVELS)
		h = FS_BT_MAX_LEVELS;
	c->recs = r->inserts * (2 * h + 2) + r->updates * (4 * h) +
		  r->deletes * (4 * h) + r->data_blocks +
		  2 * (uint64_t)r->allocs + 4 * (uint64_t)r->frees;
	c->pool = k * (h + 2);
}

/* ---- B+tree storage ops ---- */

static int bt_read(void *ctx, uint64_t lba, void *buf)
{
	return fs_store_read(ctx, lba, buf);
}

static void pool_put(struct fs_store *st, uint64_t lba)
{
	struct fs_txn *t = &st->txn;

	if (t->npool < POOL_MAX)
		t->pool[t->npool++] = lba;
	else
		fs_alloc_unalloc(st->alloc, lba, 1, 0);
}

static int bt_alloc(void *ctx, uint64_t *lba)
{
	struct fs_store *st = ctx;
	struct fs_txn *t = &st->txn;
	uint32_t n;
	int ret;

	FS_VERIFY(st->txn_open);
	if (t->npool) {
		*lba = t->pool[--t->npool];
	} else { /* beyond the reservation: T3's final check guards */
		ret = fs_alloc_alloc(st->alloc, FS_ALLOC_META, 0, 1,
				     t->freeing ? FS_ALLOC_F_META_RESERVE : 0,
				     lba, &n);
		if (ret)
			return ret;
	}
	if (t->nissued < POOL_MAX)
		t->issued[t->nissued++] = *lba;
	return 0;
}

static void bt_free(void *ctx, uint64_t lba)
{
	struct fs_store *st = ctx;
	struct fs_txn *t = &st->txn;
	int ret;

	for (unsigned i = 0; i < t->nissued; i++) {
		if (t->issued[i] == lba) { /* T4: never written */
			t->issued[i] = t->issued[--t->nissued];
			pool_put(st, lba);
			return;
		}
	}
	ret = fs_alloc_free(st->alloc, lba, 1);
	if (ret)
		fail(st, ret, "a freed B+tree node could not be queued");
}

static const struct fs_bt_ops bt_ops = {
	.read = bt_read,
	.alloc = bt_alloc,
	.free = bt_free,
};

static void bt_cfg(const struct fs_store *st, struct fs_bt_cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->ops = &bt_ops;
	c->ctx = (void *)st;
	c->owner = FS_BT_OWNER_META;
	memcpy(c->fsid, st->sb.fsid, FS_UUID_BYTES);
	c->gen = st->sb.gen;
	c->cache_nodes = st->bt_cache_nodes;
	c->fanout = st->bt_fanout;
}

/* ---- the recent map (T6) ---- */

static uint32_t recent_bucket(uint64_t lba)
{
	return (uint32_t)((lba * 0x9E3779B97F4A7C15ull) >> 40) % RECENT_BUCKETS;
}

static struct recent **recent_slot(struct fs_store *st, uint64_t lba)
{
	struct recent **pp = &st->rhash[recent_bucket(lba)];

	while (*pp && (*pp)->lba != lba)
		pp = &(*pp)->hnext;
	return pp;
}

static void recent_unlink(struct fs_store *st, struct recent *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		st->rhead = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		st->rtail = r->prev;
	r->prev = r->next = NULL;
}

static void recent_append(struct fs_store *st, struct recent *r)
{
	r->next = NULL;
	r->prev = st->rtail;
	if (st->rtail)
		st->rtail->next = r;
	else
		st->rhead = r;
	st->rtail = r;
}

/* Drop every entry whose ticket is durable.  Caller holds rmu. */
static void recent_prune(struct fs_store *st, uint64_t durable)
{
	while (st->rhead && st->rhead->ticket <= durable) {
		struct recent *r = st->rhead;
		struct recent **pp = recent_slot(st, r->lba);

		FS_VERIFY(*pp == r);
		*pp = r->hnext;
		recent_unlink(st, r);
		st->rcount--;
		free(r);
	}
}

/*
 * The transaction's staged blocks join the map under ticket (a newer
 * copy of an LBA replaces the older one and moves to the tail, so the
 * list stays in ticket order).
 */
static void recent_publish(struct fs_store *st, struct fs_txn *t,
			   uint64_t ticket)
{
	pthread_mutex_lock(&st->rmu);
	for (unsigned i = 0; i < t->nstaged; i++) {
		struct recent *r = t->staged[i];
		struct recent **pp = recent_slot(st, r->lba);

		r->ticket = ticket;
		if (*pp && (*pp)->ticket > ticket) {
			/* a newer commit of this block (fs_store_write_blocks
			 * runs outside the caller's lock) was published first */
			free(r);
			t->staged[i] = NULL;
			continue;
		}
		if (*pp) { /* older copy: replaced */
			struct recent *old = *pp;

			r->hnext = old->hnext;
			recent_unlink(st, old);
			free(old);
			st->rcount--;
		} else {
			r->hnext = NULL;
		}
		*pp = r;
		recent_append(st, r);
		st->rcount++;
		t->staged[i] = NULL;
	}
	t->nstaged = 0;
	recent_prune(st, vol_durable_ticket(st->vol));
	pthread_mutex_unlock(&st->rmu);
}

static void stage_drop(struct fs_txn *t)
{
	for (unsigned i = 0; i < t->nstaged; i++) {
		free(t->staged[i]);
		t->staged[i] = NULL;
	}
	t->nstaged = 0;
}

/* The volume's write: a fresh block may take its direct path. */
static int vt_write(struct fs_txn *t, uint64_t lba, const void *buf, int fresh)
{
	return fresh ? vol_txn_write_fresh(t->vt, lba, buf) :
		       vol_txn_write(t->vt, lba, buf);
}

/* Write a block into the volume transaction and keep a copy (T6). */
static int stage_write(struct fs_txn *t, uint64_t lba, const void *buf,
		       int fresh)
{
	struct recent *r;
	int ret;

	for (unsigned i = 0; i < t->nstaged; i++) {
		if (t->staged[i]->lba == lba) { /* rewritten: newest wins */
			ret = vt_write(t, lba, buf, fresh);
			if (!ret)
				memcpy(t->staged[i]->data, buf, FS_BLOCK_BYTES);
			return ret;
		}
	}
	if (t->nstaged == VOL_TXN_MAX_RECS)
		return -E2BIG;
	r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	ret = vt_write(t, lba, buf, fresh);
	if (ret) {
		free(r);
		return ret;
	}
	r->lba = lba;
	r->ticket = 0;
	memcpy(r->data, buf, FS_BLOCK_BYTES);
	t->staged[t->nstaged++] = r;
	return 0;
}

int fs_store_read(struct fs_store *st, uint64_t lba, void *buf)
{
	struct recent *r;

	pthread_mutex_lock(&st->rmu);
	r = *recent_slot(st, lba);
	if (r)
		memcpy(buf, r->data, FS_BLOCK_BYTES);
	pthread_mutex_unlock(&st->rmu);
	return r ? 0 : vol_read(st->vol, lba, buf);
}

/*
 * The recent map first, as fs_store_read: an entry there is the newest
 * version and stays until the volume has it durably; the blocks it does
 * not hold are read from the volume in runs.
 */
int fs_store_read_run(struct fs_store *st, uint64_t lba, uint32_t n, void *buf)
{
	uint8_t *out = buf;
	uint32_t i = 0;
	int ret = 0;

	while (i < n && !ret) {
		uint32_t j = i;
		int hit;

		pthread_mutex_lock(&st->rmu);
		for (;;) {
			struct recent *r = *recent_slot(st, lba + j);

			hit = r != NULL;
			if (hit && j == i)
				memcpy(out + (size_t)j * FS_BLOCK_BYTES,
				       r->data, FS_BLOCK_BYTES);
			if (hit || ++j == n)
				break;
		}
		pthread_mutex_unlock(&st->rmu);
		if (j > i) /* [i, j) are not in the map: the volume's */
			ret = vol_read_run(st->vol, lba + i, j - i,
					   out + (size_t)i * FS_BLOCK_BYTES);
		i = hit && j == i ? j + 1 : j;
	}
	return ret;
}

/* Tickets come from commits in several threads: keep the highest. */
static void ticket_max(struct fs_store *st, uint64_t ticket)
{
	uint64_t cur = __atomic_load_n(&st->ticket, __ATOMIC_RELAXED);

	while (cur < ticket &&
	       !__atomic_compare_exchange_n(&st->ticket, &cur, ticket, 0,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

int fs_store_write_blocks(struct fs_store *st, const uint64_t *lba,
			  uint8_t *const *blk, unsigned n)
{
	struct fs_txn *t = calloc(1, sizeof(*t));
	uint64_t ticket = 0;
	int ret;

	if (!t)
		return -ENOMEM;
	if (n > VOL_TXN_MAX_RECS) {
		free(t);
		return -E2BIG;
	}
	t->st = st;
	ret = vol_txn_begin(st->vol, &t->vt);
	for (unsigned i = 0; !ret && i < n; i++)
		ret = stage_write(t, lba[i], blk[i], 0);
	if (!ret)
		ret = vol_txn_commit_async(t->vt, &ticket);
	else
		vol_txn_abort(t->vt);
	if (ret) {
		stage_drop(t);
	} else {
		recent_publish(st, t, ticket); /* T6 */
		ticket_max(st, ticket);
	}
	free(t);
	return ret;
}

uint64_t fs_store_ticket(const struct fs_store *st)
{
	return __atomic_load_n(&st->ticket, __ATOMIC_ACQUIRE);
}

int fs_store_wait(struct fs_store *st, uint64_t ticket)
{
	int ret = ticket ? vol_wait(st->vol, ticket) : 0;

	pthread_mutex_lock(&st->rmu);
	recent_prune(st, vol_durable_ticket(st->vol));
	pthread_mutex_unlock(&st->rmu);
	return ret;
}

uint64_t fs_store_recent_blocks(struct fs_store *st)
{
	uint64_t n;

	pthread_mutex_lock(&st->rmu);
	n = st->rcount;
	pthread_mutex_unlock(&st->rmu);
	return n;
}

/* ---- the store ---- */

static int store_new(struct vol *v, uint64_t max_blocks, const struct fs_sb *sb,
		     const struct fs_store_opts *o, int fresh,
		     struct fs_store **out)
{
	struct fs_alloc_cfg ac = {
		.vol = v,
		.max_blocks = max_blocks,
		.gen = sb->gen,
		.pg_count = sb->pg_count,
		.used_blocks = sb->used_blocks,
		.data_hint = sb->data_hint,
		.meta_hint = sb->meta_hint,
		.cache_blocks = o ? o->alloc_cache_blocks : 0,
		.meta_reserve_blocks = fs_alloc_meta_reserve(max_blocks),
		.fresh = fresh,
	};
	struct fs_store *st = calloc(1, sizeof(*st));
	int ret;

	if (!st)
		return -ENOMEM;
	st->rhash = calloc(RECENT_BUCKETS, sizeof(*st->rhash));
	if (!st->rhash) {
		free(st);
		return -ENOMEM;
	}
	pthread_mutex_init(&st->rmu, NULL);
	ac.read = bt_read;
	ac.read_ctx = st;
	memcpy(ac.fsid, sb->fsid, FS_UUID_BYTES);
	ret = fs_alloc_open(&ac, &st->alloc);
	if (ret) {
		pthread_mutex_destroy(&st->rmu);
		free(st->rhash);
		free(st);
		return ret == -EINVAL ? -ENOSPC : ret;
	}
	st->vol = v;
	st->max_blocks = max_blocks;
	st->sb = *sb;
	st->next_ino = sb->next_ino;
	st->bt_cache_nodes = o ? o->bt_cache_nodes : 0;
	st->bt_fanout = o ? o->bt_fanout : 0;
	*out = st;
	return 0;
}

int fs_store_close(struct fs_store *st)
{
	int ret;

	if (!st)
		return 0;
	if (st->txn_open)
		fs_txn_abort(&st->txn);
	ret = fs_store_wait(st, fs_store_ticket(st)); /* T6: all durable */
	if (ret)
		fail(st, ret, "the last transactions did not become durable");
	ret = st->err;
	pthread_mutex_lock(&st->rmu);
	recent_prune(st, UINT64_MAX);
	pthread_mutex_unlock(&st->rmu);
	pthread_mutex_destroy(&st->rmu);
	free(st->rhash);
	fs_bt_close(st->bt);
	fs_alloc_close(st->alloc);
	free(st);
	return ret;
}

int fs_store_error(const struct fs_store *st)
{
	return st->err;
}

int fs_store_wait_room(struct fs_store *st)
{
	return vol_wait_room(st->vol);
}

struct fs_bt *fs_store_tree(struct fs_store *st)
{
	return st->bt;
}

struct fs_alloc *fs_store_alloc(struct fs_store *st)
{
	return st->alloc;
}

const struct fs_sb *fs_store_sb(const struct fs_store *st)
{
	return &st->sb;
}

static int volume_info(struct vol *v, struct vol_info **out)
{
	struct vol_info *vi = malloc(sizeof(*vi));
	int ret;

	if (!vi)
		return -ENOMEM;
	ret = vol_info(v, vi);
	if (ret) {
		free(vi);
		return ret;
	}
	*out = vi;
	return 0;
}

/* The superblock's PGs must exist on the volume (S9 against it). */
static int sb_fits_volume(const struct fs_sb *sb, const struct vol_info *vi)
{
	uint64_t end = fs_pg_start(sb->pg_count);

	if (end > vi->max_blocks)
		end = vi->max_blocks;
	if (end > vi->capacity_blocks)
		return FS_CORRUPT_AT("fs superblock at LBA", FS_SB_LBA,
				     "S9 more PGs than the volume has");
	return 0;
}

static int store_read_sb(struct vol *v, const struct vol_info *vi,
			 struct fs_sb *sb)
{
	struct fs_sb_expect ex = {
		.vol_uuid = vi->uuid,
		.max_blocks = vi->max_blocks,
	};
	uint8_t *blk = malloc(FS_BLOCK_BYTES);
	int ret;

	if (!blk)
		return -ENOMEM;
	ret = vol_read(v, FS_SB_LBA, blk);
	if (ret >= 0)
		ret = fs_sb_decode(blk, &ex, sb);
	if (!ret)
		ret = sb_fits_volume(sb, vi);
	free(blk);
	return ret;
}

int fs_store_open(struct vol *v, const struct fs_store_opts *o,
		  struct fs_store **out)
{
	struct fs_store *st = NULL;
	struct vol_info *vi;
	struct fs_bt_cfg c;
	struct fs_sb sb;
	int ret = volume_info(v, &vi);

	if (ret)
		return ret;
	ret = store_read_sb(v, vi, &sb);
	if (!ret)
		ret = store_new(v, vi->max_blocks, &sb, o, 0, &st);
	free(vi);
	if (ret)
		return ret;
	bt_cfg(st, &c);
	ret = fs_bt_open(&c, sb.root_lba, &st->bt);
	if (!ret && fs_bt_height(st->bt) != sb.root_height)
		ret = FS_CORRUPT_AT("fs superblock at LBA", FS_SB_LBA,
				    "S7 root height differs from the tree's");
	if (ret) {
		(void)fs_store_close(st);
		return ret;
	}
	*out = st;
	return 0;
}

/* ---- transactions ---- */

int fs_txn_begin(struct fs_store *st, struct fs_txn **out)
{
	struct fs_txn *t = &st->txn;
	int ret;

	if (st->err)
		return st->err;
	if (st->txn_open)
		return -EBUSY;
	memset(t, 0, sizeof(*t));
	t->st = st;
	ret = vol_txn_begin(st->vol, &t->vt);
	if (ret)
		return ret;
	st->txn_open = 1;
	*out = t;
	return 0;
}

unsigned fs_txn_cost(const struct fs_store *st, const struct fs_txn_res *res)
{
	struct cost c;

	res_cost(st, res, &c);
	c.recs += 1 + (c.pool ? 2 : 0); /* superblock, pool in one window */
	return c.recs > UINT32_MAX ? UINT32_MAX : (unsigned)c.recs;
}

uint64_t fs_txn_pool_blocks(const struct fs_store *st,
			    const struct fs_txn_res *res)
{
	struct cost c;

	res_cost(st, res, &c);
	return c.pool;
}

unsigned fs_txn_records(const struct fs_txn *t)
{
	return (unsigned)records_now(t->st);
}

/* Give back pool blocks from index from on (allocated with flags). */
static void pool_trim(struct fs_txn *t, unsigned from, int flags)
{
	while (t->npool > from)
		fs_alloc_unalloc(t->st->alloc, t->pool[--t->npool], 1, flags);
}

/* Allocate n more node blocks into the pool, from the reservation. */
static int pool_fill(struct fs_txn *t, uint64_t n)
{
	struct fs_store *st = t->st;

	while (n) {
		uint64_t lba;
		uint32_t got;
		int ret = fs_alloc_alloc(st->alloc, FS_ALLOC_META, 0,
					 (uint32_t)n, FS_ALLOC_F_RESERVED, &lba,
					 &got);

		if (ret)
			return ret;
		for (uint32_t i = 0; i < got; i++)
			t->pool[t->npool++] = lba + i;
		n -= got;
	}
	return 0;
}

/* The left-over of the last reservation is held again after a failed
 * one (it was held before, reserve or not: it fits). */
static void reserve_restore(struct fs_txn *t)
{
	FS_VERIFY(fs_alloc_reserve(t->st->alloc, t->blocks_left,
				   FS_ALLOC_F_META_RESERVE) == 0);
}

/* Reserve blocks (the old reservation's left-over lapses) and fill the
 * pool, from the metadata reserve too if freeing; on failure everything
 * is as before. */
static int reserve_blocks(struct fs_txn *t, uint64_t blocks, uint64_t pool,
			  int freeing)
{
	struct fs_alloc *a = t->st->alloc;
	unsigned npool = t->npool;
	int ret;

	fs_alloc_unreserve(a, t->blocks_left);
	ret = fs_alloc_reserve(a, blocks + pool,
			       freeing ? FS_ALLOC_F_META_RESERVE : 0);
	if (!ret) {
		ret = pool_fill(t, pool);
		if (ret) {
			pool_trim(t, npool, FS_ALLOC_F_RESERVED);
			fs_alloc_unreserve(a, blocks + pool);
		}
	}
	if (ret)
		reserve_restore(t);
	return ret;
}

int fs_txn_reserve(struct fs_txn *t, const struct fs_txn_res *res)
{
	struct fs_store *st = t->st;
	unsigned npool = t->npool;
	uint64_t pool;
	struct cost c;
	int ret;

	if (st->err)
		return st->err;
	res_cost(st, res, &c);
	pool = c.pool > npool ? c.pool - npool : 0;
	if (records_now(st) + c.recs > TXN_RECS_MAX || npool + pool > POOL_MAX)
		return -E2BIG;
	ret = reserve_blocks(t, res->alloc_blocks, pool, res->freeing != 0);
	if (ret)
		return ret;
	/*
	 * Zones out of space would refuse the commit after the tree has
	 * changed (a sticky error): the volume promises the room now, for
	 * every record the transaction may have (the pool's allocator
	 * records included, hence after the fill), or the step is refused.
	 */
	if (records_now(st) + c.recs > TXN_RECS_MAX)
		ret = -E2BIG;
	else
		ret = vol_txn_reserve(
			t->vt, (uint32_t)(records_now(st) + c.recs),
			res->frees || res->deletes || res->freeing);
	if (ret) {
		pool_trim(t, npool, FS_ALLOC_F_RESERVED);
		fs_alloc_unreserve(st->alloc, res->alloc_blocks + pool);
		reserve_restore(t);
	}
	if (ret && ret != -ENOSPC && ret != -E2BIG) /* the volume failed: an
						     * earlier commit will
						     * never be durable (T6) */
		fail(st, ret, "the volume failed under committed changes");
	if (ret)
		return ret;
	t->ins_left = res->inserts;
	t->upd_left = res->updates;
	t->del_left = res->deletes;
	t->data_left = res->data_blocks;
	t->allocs_left = res->allocs;
	t->frees_left = res->frees;
	t->blocks_left = res->alloc_blocks;
	t->freeing = res->freeing != 0;
	return 0;
}

/* A tree change done (ret 0) or refused: count it, watch for errors the
 * free op raised. */
static int tree_done(struct fs_txn *t, uint32_t *left, int ret)
{
	if (t->st->err)
		return t->st->err;
	if (!ret) {
		(*left)--;
		t->changed = 1;
	}
	return ret;
}

int fs_txn_insert(struct fs_txn *t, const struct fs_bt_key *key,
		  const void *val, size_t len)
{
	uint32_t *left = t->ins_left ? &t->ins_left : &t->upd_left;

	if (t->st->err)
		return t->st->err;
	if (!*left)
		return -E2BIG;
	return tree_done(t, left, fs_bt_insert(t->st->bt, key, val, len));
}

int fs_txn_update(struct fs_txn *t, const struct fs_bt_key *key,
		  const void *val, size_t len)
{
	if (t->st->err)
		return t->st->err;
	if (!t->upd_left)
		return -E2BIG;
	return tree_done(t, &t->upd_left,
			 fs_bt_update(t->st->bt, key, val, len));
}

int fs_txn_delete(struct fs_txn *t, const struct fs_bt_key *key)
{
	uint32_t *left = t->del_left ? &t->del_left : &t->upd_left;

	if (t->st->err)
		return t->st->err;
	if (!*left)
		return -E2BIG;
	return tree_done(t, left, fs_bt_delete(t->st->bt, key));
}

int fs_txn_alloc(struct fs_txn *t, uint64_t goal, uint32_t want, uint64_t *lba,
		 uint32_t *n)
{
	int ret;

	if (t->st->err)
		return t->st->err;
	if (!t->allocs_left || !t->blocks_left)
		return -E2BIG;
	if (want > t->blocks_left)
		want = (uint32_t)t->blocks_left;
	if (want > FS_WINDOW_BLOCKS)
		want = FS_WINDOW_BLOCKS;
	ret = fs_alloc_alloc(t->st->alloc, FS_ALLOC_DATA, goal, want,
			     FS_ALLOC_F_RESERVED, lba, n);
	if (!ret) {
		t->allocs_left--;
		t->blocks_left -= *n;
		t->touched = 1;
	}
	return ret;
}

void fs_txn_unalloc(struct fs_txn *t, uint64_t lba, uint32_t n)
{
	fs_alloc_unalloc(t->st->alloc, lba, n, FS_ALLOC_F_RESERVED);
	t->blocks_left += n;
}

int fs_txn_free(struct fs_txn *t, uint64_t lba, uint64_t n)
{
	int ret;

	if (t->st->err)
		return t->st->err;
	if (n > FS_WINDOW_BLOCKS)
		return -EINVAL;
	if (!t->frees_left)
		return -E2BIG;
	ret = fs_alloc_free(t->st->alloc, lba, n);
	if (!ret) {
		t->frees_left--;
		t->touched = 1;
	}
	return ret;
}

static int txn_write(struct fs_txn *t, uint64_t lba, const void *buf, int fresh)
{
	struct fs_alloc_statfs sf;
	int ret;

	if (t->st->err)
		return t->st->err;
	fs_alloc_statfs(t->st->alloc, &sf);
	if (!fs_lba_is_data(lba, sf.total_blocks))
		return -EINVAL;
	if (!t->data_left)
		return -E2BIG;
	ret = stage_write(t, lba, buf, fresh);
	if (!ret) {
		t->data_left--;
		t->extra_recs++;
		t->touched = 1;
	}
	return ret;
}

int fs_txn_write(struct fs_txn *t, uint64_t lba, const void *buf)
{
	return txn_write(t, lba, buf, 0);
}

int fs_txn_write_fresh(struct fs_txn *t, uint64_t lba, const void *buf)
{
	return txn_write(t, lba, buf, 1);
}

int fs_txn_new_ino(struct fs_txn *t, uint64_t *ino)
{
	struct fs_store *st = t->st;

	if (st->err)
		return st->err;
	if (st->next_ino >= FS_INO_MAX)
		return -ENOSPC;
	*ino = st->next_ino++;
	t->touched = 1;
	return 0;
}

/* ---- commit, abort ---- */

static int write_node(void *arg, uint64_t lba, const void *node)
{
	return stage_write(arg, lba, node, 0);
}

static int discard_run(void *arg, uint64_t lba, uint64_t n)
{
	return vol_txn_discard(((struct fs_txn *)arg)->vt, lba, n);
}

/* The superblock as it is once the transaction commits as gen. */
static void sb_next(const struct fs_store *st, uint64_t gen, struct fs_sb *sb)
{
	struct fs_alloc_state as;

	fs_alloc_state(st->alloc, &as);
	*sb = st->sb;
	sb->gen = gen;
	sb->root_lba = fs_bt_root(st->bt);
	sb->root_height = (uint8_t)fs_bt_height(st->bt);
	sb->next_ino = st->next_ino;
	sb->used_blocks = as.used_blocks;
	sb->pg_count = as.pg_count;
	sb->data_hint = as.data_hint;
	sb->meta_hint = as.meta_hint;
}

/* T2: everything into the volume transaction. */
static int txn_flush(struct fs_txn *t, uint64_t gen, uint64_t *token,
		     struct fs_sb *sb)
{
	struct fs_store *st = t->st;
	int ret;

	if (records_now(st) > TXN_RECS_MAX) {
		vol_log(VOL_LOG_ERR, "filesystem: transaction of %llu records",
			(unsigned long long)records_now(st));
		return -E2BIG; /* T3 broken: a budget bug */
	}
	ret = fs_bt_flush(st->bt, gen, write_node, t, token);
	if (ret >= 0)
		ret = fs_alloc_flush(st->alloc, gen, write_node, discard_run,
				     t);
	if (ret >= 0) {
		sb_next(st, gen, sb);
		fs_sb_encode(sb, st->max_blocks, st->blk);
		ret = stage_write(t, FS_SB_LBA, st->blk, 0);
	}
	return ret < 0 ? ret : 0;
}

/* The pool goes back (T4); the unused reservation lapses. */
static void txn_release(struct fs_txn *t)
{
	pool_trim(t, 0, 0);
	t->nissued = 0;
	fs_alloc_unreserve(t->st->alloc, t->blocks_left);
	t->blocks_left = 0;
}

int fs_txn_commit(struct fs_txn *t)
{
	struct fs_store *st = t->st;
	uint64_t gen = st->sb.gen + 1, token = 0, ticket = 0;
	struct fs_sb sb;
	int ret;

	if (st->err) {
		fs_txn_abort(t);
		return st->err;
	}
	txn_release(t);
	if (!t->changed && !t->touched) { /* nothing to write */
		stage_drop(t);
		fs_alloc_rollback(st->alloc);
		vol_txn_abort(t->vt);
		st->txn_open = 0;
		return 0;
	}
	ret = txn_flush(t, gen, &token, &sb);
	if (ret)
		vol_txn_abort(t->vt);
	else
		ret = vol_txn_commit_async(t->vt, &ticket);
	t->vt = NULL;
	st->txn_open = 0;
	if (ret) {
		stage_drop(t);
		fail(st, ret, "a transaction could not be committed");
		return ret;
	}
	recent_publish(st, t, ticket); /* T6, before any later read */
	ticket_max(st, ticket);
	fs_bt_written(st->bt, token);
	fs_alloc_committed(st->alloc, gen);
	st->sb = sb;
	return 0;
}

void fs_txn_abort(struct fs_txn *t)
{
	struct fs_store *st = t->st;

	if (t->changed)
		fail(st, -EIO,
		     "a transaction was abandoned after it changed metadata");
	txn_release(t);
	if (!t->changed) {
		fs_alloc_rollback(st->alloc);
		st->next_ino = st->sb.next_ino;
	}
	stage_drop(t);
	vol_txn_abort(t->vt);
	t->vt = NULL;
	st->txn_open = 0;
}

/* ---- mkfs ---- */

static int random_bytes(uint8_t *buf, size_t n)
{
	while (n) {
		ssize_t got = getrandom(buf, n, 0);

		if (got < 0 && errno != EINTR)
			return -errno;
		if (got > 0) {
			buf += got;
			n -= (size_t)got;
		}
	}
	return 0;
}

static void now_time(struct fs_time *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	t->sec = ts.tv_sec;
	t->nsec = (uint32_t)ts.tv_nsec;
}

/* The superblock of a new filesystem (root and gen come at commit). */
static int mkfs_sb(const struct vol_info *vi, struct fs_sb *sb)
{
	struct fs_time now;
	int ret;

	memset(sb, 0, sizeof(*sb));
	ret = random_bytes(sb->fsid, FS_UUID_BYTES);
	if (!ret)
		ret = random_bytes(sb->hash_key, FS_HASH_KEY_BYTES);
	memcpy(sb->vol_uuid, vi->uuid, FS_UUID_BYTES);
	sb->next_ino = FS_FIRST_INO;
	sb->pg_count = 1;
	now_time(&now);
	sb->crtime_sec = now.sec;
	sb->crtime_nsec = now.nsec;
	return ret;
}

/* The root directory's inode item. */
static int mkfs_root(struct fs_txn *t, const struct fs_mkfs_opts *o)
{
	struct fs_bt_key k = fs_key_inode(FS_ROOT_INO);
	uint8_t buf[FS_INODE_BYTES];
	struct fs_inode in = {
		.mode = FS_S_IFDIR | (o->root_mode ? o->root_mode & FS_S_PERM :
						     ROOT_MODE_DEFAULT),
		.nlink = 2,
		.uid = o->root_uid,
		.gid = o->root_gid,
		.generation = 1,
		.next_index = FS_DIRINDEX_FIRST,
		.parent = FS_ROOT_INO,
	};

	now_time(&in.atime);
	in.mtime = in.ctime = in.crtime = in.atime;
	return fs_txn_insert(t, &k, buf, fs_inode_encode(&in, buf));
}

/* Discard the capacity, create the tree, insert the root, commit. */
static int mkfs_txn(struct fs_store *st, const struct vol_info *vi,
		    const struct fs_mkfs_opts *o)
{
	struct fs_txn_res res = { .inserts = 1 };
	struct fs_bt_cfg c;
	struct fs_txn *t;
	int ret = fs_txn_begin(st, &t);

	if (ret)
		return ret;
	ret = vol_txn_discard(t->vt, 0, vi->capacity_blocks);
	t->extra_recs++;
	if (!ret)
		ret = fs_txn_reserve(t, &res);
	bt_cfg(st, &c);
	if (!ret)
		ret = fs_bt_create(&c, &st->bt);
	if (!ret)
		ret = mkfs_root(t, o);
	if (ret) {
		t->changed = 0; /* nothing was committed: just drop it */
		fs_txn_abort(t);
		return ret;
	}
	return fs_txn_commit(t);
}

/* LBA 0 must be zero (never written) unless o->force. */
static int mkfs_check_empty(struct vol *v, const struct fs_mkfs_opts *o)
{
	uint8_t *blk = malloc(FS_BLOCK_BYTES);
	int ret = blk ? vol_read(v, FS_SB_LBA, blk) : -ENOMEM;

	if (ret >= 0)
		ret = fs_all_zero(blk, FS_BLOCK_BYTES) || o->force ? 0 :
								     -EEXIST;
	free(blk);
	return ret;
}

int fs_store_mkfs(struct vol *v, const struct fs_mkfs_opts *o)
{
	static const struct fs_mkfs_opts defaults;
	struct fs_store *st = NULL;
	struct vol_info *vi;
	struct fs_sb sb;
	int ret = volume_info(v, &vi);

	if (ret)
		return ret;
	if (!o)
		o = &defaults;
	ret = mkfs_check_empty(v, o);
	if (!ret)
		ret = mkfs_sb(vi, &sb);
	if (!ret)
		ret = store_new(v, vi->max_blocks, &sb, NULL, 1, &st);
	if (!ret)
		ret = mkfs_txn(st, vi, o);
	if (ret == -EEXIST)
		vol_log(VOL_LOG_ERR, "mkfs: the volume already holds data at "
				     "LBA 0 (a filesystem?); use force");
	free(vi);
	if (st && fs_store_close(st) && !ret)
		ret = -EIO;
	return ret;
}

/* ---- check ---- */

struct walk {
	struct fs_store *st;
	uint64_t extent_blocks; /* blocks the extents map */
};

/* Every block of extent e is allocated (F2). */
static int extent_allocated(struct fs_store *st, const struct fs_bt_key *k,
			    const struct fs_extent *e)
{
	for (uint32_t i = 0; i < e->nblocks; i++) {
		int ret = fs_alloc_is_used(st->alloc, e->lba + i);

		if (ret < 0)
			return ret;
		if (!ret)
			return FS_CORRUPT_AT("extent item of inode",
					     k->objectid,
					     "F2 maps a free block");
	}
	return 0;
}

static int check_item(void *arg, const struct fs_bt_key *k, const void *val,
		      size_t len)
{
	struct walk *w = arg;
	struct fs_extent e;
	int ret = fs_item_verify(k, val, len, w->st->sb.hash_key);

	if (ret)
		return ret;
	if (k->type == FS_ITEM_INODE && k->objectid >= w->st->next_ino)
		return FS_CORRUPT_AT("inode item of inode", k->objectid,
				     "F3 inode number not below next_ino");
	if (k->type != FS_ITEM_EXTENT)
		return 0;
	ret = fs_extent_decode(k, val, len, &e);
	if (!ret)
		ret = extent_allocated(w->st, k, &e);
	w->extent_blocks += e.nblocks;
	return ret;
}

int fs_store_check(struct fs_store *st, struct fs_store_check_stats *cs)
{
	struct fs_bt_key lo = { 0, 0, 0 };
	struct fs_bt_key hi = { UINT64_MAX, UINT8_MAX, UINT64_MAX };
	struct fs_store_check_stats s;
	struct walk w = { .st = st };
	int ret;

	if (st->err)
		return st->err;
	if (st->txn_open)
		return -EBUSY;
	memset(&s, 0, sizeof(s));
	ret = fs_bt_check(st->bt, &s.tree);
	if (!ret)
		ret = fs_alloc_check(st->alloc, &s.alloc);
	if (!ret)
		ret = fs_bt_iterate(st->bt, &lo, &hi, check_item, &w);
	for (unsigned l = 0; l < FS_BT_MAX_LEVELS; l++)
		s.nodes += s.tree.nodes[l];
	s.extent_blocks = w.extent_blocks;
	if (!ret && s.nodes + s.extent_blocks != s.alloc.used_blocks)
		ret = FS_CORRUPT_AT("filesystem: allocated blocks",
				    s.alloc.used_blocks,
				    "F1 differ from the tree's nodes and "
				    "extents");
	if (cs)
		*cs = s;
	return ret;
}
