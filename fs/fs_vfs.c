/*
 * fs_vfs.c - the POSIX filesystem on the store: namespace, inodes, file
 * data, extended attributes, space.
 *
 * Layer: fs/.  Uses the store (fs_txn.h) for every change and the tree
 * (fs_btree.h) for lookups; knows nothing of FUSE (fs_fuse.c).
 *
 * DESIGN NOTES
 *
 * Operations.  Every change runs as struct op: one fs transaction, or
 * several when it is too big for one (op_reserve commits what is there
 * and goes on in a new one).  Each step reserves its worst case first
 * and checks everything that can fail for a reason (ENOENT, EEXIST, ...)
 * before its first change, so a step either happens whole or not at all
 * and an error never leaves a half-made change behind.  Steps that span
 * transactions leave a consistent tree after every one: a truncate sets
 * the size with the last extent and then frees the others from the end
 * (steps that free space may use the allocator's metadata reserve, so a
 * full filesystem can be emptied: fs_alloc.h); an inode whose
 * last name goes gets an ORPHAN item in the same transaction, and its
 * extents, xattrs and inode are freed in later ones (at its last close,
 * or at the next mount after a crash).
 *
 * Invariants (fs_vfs_check and fsck check them):
 *   V1 Every DIRENT has the DIRINDEX its cookie names and vice versa,
 *      with the same ino, type and name.
 *   V2 nlink of a file is the number of entries naming it; of a
 *      directory, 2 + its subdirectories; 0 only with an ORPHAN item.
 *   V3 Extents of an inode do not overlap; their blocks are allocated
 *      and belong to no other extent or node; blocks = the sum of their
 *      lengths.  Extents past EOF are allowed (fallocate KEEP_SIZE).
 *   V4 A written extent's blocks hold the file's data; an unwritten one
 *      reads as zeros and its blocks are never read.  A block the
 *      allocator hands out is written before it is read (T6 of
 *      fs_txn.c: its old contents may still be on the volume).
 *   V5 Bytes past EOF inside the last block are zero (a truncate zeroes
 *      them), so growing a file shows zeros.
 *
 * Locking.  fs->mu serialises every use of the store and of the inode
 * table.  File data is read outside it, from block addresses mapped
 * under it, and so are overwrites of whole mapped blocks (overwrite():
 * their own volume transaction, sealed in parallel); an operation that frees blocks takes fs->data_rw for writing
 * before fs->mu, and a read holds it for reading from before its mapping
 * until its last block is read (an overwrite: written), so a block is
 * never handed to another file while its old owner's data is in flight.  Lock order:
 * data_rw, then mu.  A change first waits, holding neither, while the
 * volume's queue of commits is full (fs_store_wait_room): its commit then
 * seldom waits for the zones under mu, where every lookup, getattr and
 * read would wait behind it for as long as a bulk write keeps the zones
 * busy.
 *
 * Inode table: an in-memory copy of every inode the kernel holds a
 * reference to (nlookup) or has open (nopen), so getattr needs no tree
 * lookup; changed only together with the tree, under mu, but for times.
 *
 * Times.  A setattr of times alone (the kernel's writeback cache sends
 * the mtime it keeps before every fsync and fdatasync of a written file)
 * changes the node only and puts it on the dirty list; its inode is
 * stored with the node's next change, an fsync that is not an
 * fdatasync, the close of the filesystem, or a flush of the list (at
 * TIMES_DIRTY_MAX nodes, or TIMES_DIRTY_MS after the oldest, met by the
 * next times-only setattr or fsync).  An fdatasync thus makes the data
 * durable without a metadata transaction of its own, which is what
 * fdatasync promises (POSIX: times need not be); a crash may lose times
 * set since the last flush, never data, sizes or names.  A dirty node
 * stays in the table until stored.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_i.h"
#include "fs/fs_vfs.h"

#define NODE_BUCKETS 4096u
#define WRITE_RUN_MAX 256u /* blocks per reservation of a write */
#define UNMAP_CHUNK ((uint64_t)8 * FS_WINDOW_BLOCKS) /* per step */
#define READ_MAX_BLOCKS 257u /* 1 MiB unaligned */
#define NLINK_MAX 65000u /* directory links (EMLINK past it) */
#define TIMES_DIRTY_MAX 64u /* nodes with times not yet stored */
#define TIMES_DIRTY_MS 5000 /* the oldest waits at most this long */

/* An inode the kernel knows about. */
struct node {
	uint64_t ino;
	struct fs_inode in; /* as committed, times maybe newer (dirty) */
	uint64_t nlookup; /* kernel references */
	uint32_t nopen; /* open files and directories */
	uint32_t nwrite; /* of them, opened for writing */
	int dirty; /* on fs->dirty: times not yet stored */
	struct node *hnext;
	struct node *dnext; /* fs->dirty */
};

struct fs {
	struct vol *vol;
	struct fs_store *st;
	struct fs_bt *bt;
	uint8_t hash_key[FS_HASH_KEY_BYTES];
	pthread_mutex_t mu; /* metadata */
	pthread_rwlock_t data_rw; /* data reads vs frees */
	struct node *nodes[NODE_BUCKETS];
	uint64_t generation; /* next inode generation */
	struct node *dirty; /* nodes whose times are newer than stored */
	unsigned ndirty;
	uint64_t dirty_since_ms; /* CLOCK_MONOTONIC, of the oldest */
};

/* One operation's transactions. */
struct op {
	struct fs *fs;
	struct fs_txn *t;
	int frees; /* holds data_rw for writing */
};

/* ---- small helpers ---- */

static void now_time(struct fs_time *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	t->sec = ts.tv_sec;
	t->nsec = (uint32_t)ts.tv_nsec;
}

static int is_dir(const struct fs_inode *in)
{
	return (in->mode & FS_S_IFMT) == FS_S_IFDIR;
}

static int is_reg(const struct fs_inode *in)
{
	return (in->mode & FS_S_IFMT) == FS_S_IFREG;
}

static void fill_stat(const struct node *n, struct stat *st)
{
	const struct fs_inode *in = &n->in;

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	st->st_blksize = FS_BLOCK_BYTES;
	st->st_blocks = (blkcnt_t)(in->blocks * (FS_BLOCK_BYTES / 512));
	st->st_atim.tv_sec = in->atime.sec;
	st->st_atim.tv_nsec = in->atime.nsec;
	st->st_mtim.tv_sec = in->mtime.sec;
	st->st_mtim.tv_nsec = in->mtime.nsec;
	st->st_ctim.tv_sec = in->ctime.sec;
	st->st_ctim.tv_nsec = in->ctime.nsec;
}

static int name_ok(const char *name)
{
	size_t len = strnlen(name, FS_NAME_MAX + 1);

	return fs_name_check(name, len);
}

/* ---- the inode table ---- */

static struct node **node_slot(struct fs *fs, uint64_t ino)
{
	struct node **pp = &fs->nodes[(ino * 0x9E3779B97F4A7C15ull) >> 52];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->hnext;
	return pp;
}

static int inode_read(struct fs *fs, uint64_t ino, struct fs_inode *in)
{
	struct fs_bt_key k = fs_key_inode(ino);
	uint8_t buf[FS_INODE_BYTES];
	int ret;

	if (!fs_ino_valid(ino))
		return -ENOENT;
	ret = fs_bt_lookup(fs->bt, &k, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	return fs_inode_decode(&k, buf, (size_t)ret, in);
}

/* The node of ino, loaded if needed.  -ENOENT if there is no inode. */
static int node_get(struct fs *fs, uint64_t ino, struct node **out)
{
	struct node **pp = node_slot(fs, ino);
	struct node *n;
	int ret;

	if (*pp) {
		*out = *pp;
		return 0;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	ret = inode_read(fs, ino, &n->in);
	if (ret) {
		free(n);
		return ret;
	}
	n->ino = ino;
	*pp = n;
	*out = n;
	return 0;
}

/* Drop n from the table if nothing holds it (an orphan's too: its
 * last release or forget reads it back to free it, maybe_destroy). */
static void node_unused(struct fs *fs, struct node *n)
{
	struct node **pp;

	if (n->nlookup || n->nopen || n->dirty || n->ino == FS_ROOT_INO)
		return;
	pp = node_slot(fs, n->ino);
	FS_VERIFY(*pp == n);
	*pp = n->hnext;
	free(n);
}

/* The node of a directory (ENOTDIR otherwise; ENOENT once removed). */
static int dir_get(struct fs *fs, uint64_t ino, struct node **out)
{
	int ret = node_get(fs, ino, out);

	if (ret)
		return ret;
	if (!is_dir(&(*out)->in))
		return -ENOTDIR;
	return (*out)->in.nlink ? 0 : -ENOENT;
}

/* ---- operations and their transactions ---- */

static int op_begin(struct op *o, struct fs *fs, int frees)
{
	int ret;

	o->fs = fs;
	o->t = NULL;
	o->frees = frees;
	/* Before any lock: a full commit queue is waited for here, not in
	 * this operation's commit with every other operation held up. */
	ret = fs_store_wait_room(fs->st);
	if (ret)
		return ret;
	if (frees)
		pthread_rwlock_wrlock(&fs->data_rw);
	pthread_mutex_lock(&fs->mu);
	ret = fs_store_error(fs->st);
	if (!ret)
		ret = fs_txn_begin(fs->st, &o->t);
	if (ret) {
		pthread_mutex_unlock(&fs->mu);
		if (frees)
			pthread_rwlock_unlock(&fs->data_rw);
		o->t = NULL;
	}
	return ret;
}

/*
 * Reserve the next step; a transaction too full for it is committed
 * first and the step goes into a new one (the previous steps are whole,
 * so the tree is consistent at that commit).
 */
static int op_reserve(struct op *o, const struct fs_txn_res *r)
{
	int ret = fs_txn_reserve(o->t, r);

	if (ret != -E2BIG || fs_txn_records(o->t) <= 1)
		return ret;
	ret = fs_txn_commit(o->t);
	o->t = NULL;
	if (!ret)
		ret = fs_txn_begin(o->fs->st, &o->t);
	if (!ret)
		ret = fs_txn_reserve(o->t, r);
	return ret;
}

/*
 * End: commit whatever the steps did (a failed step changed nothing, so
 * what is there is consistent) and return ret, or the commit's error.
 */
static int op_end(struct op *o, int ret)
{
	int c = 0;

	if (o->t)
		c = fs_txn_commit(o->t);
	o->t = NULL;
	pthread_mutex_unlock(&o->fs->mu);
	if (o->frees)
		pthread_rwlock_unlock(&o->fs->data_rw);
	return ret ? ret : c;
}

/* n leaves the dirty list (its inode is stored, or freed). */
static void times_clean(struct fs *fs, struct node *n)
{
	struct node **pp = &fs->dirty;

	if (!n->dirty)
		return;
	while (*pp != n)
		pp = &(*pp)->dnext;
	*pp = n->dnext;
	n->dnext = NULL;
	n->dirty = 0;
	fs->ndirty--;
}

/* Write n's inode item (reserved: one update, or one insert if new). */
static int inode_store(struct op *o, struct node *n, int insert)
{
	struct fs_bt_key k = fs_key_inode(n->ino);
	uint8_t buf[FS_INODE_BYTES];
	size_t len = fs_inode_encode(&n->in, buf);

	times_clean(o->fs, n);
	return insert ? fs_txn_insert(o->t, &k, buf, len) :
			fs_txn_update(o->t, &k, buf, len);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Store the inode of every node on the dirty list (Times). */
static int times_flush(struct fs *fs)
{
	struct op o;
	int ret = op_begin(&o, fs, 0);

	if (ret)
		return ret;
	while (!ret && fs->dirty) {
		struct fs_txn_res r = { .updates = 1 };
		struct node *n = fs->dirty;

		ret = op_reserve(&o, &r);
		if (!ret)
			ret = inode_store(&o, n, 0); /* off the list */
		if (!ret)
			node_unused(fs, n);
	}
	return op_end(&o, ret);
}

/* Caller holds mu.  The dirty list is due for a flush. */
static int times_due(const struct fs *fs)
{
	return fs->dirty && (fs->ndirty >= TIMES_DIRTY_MAX ||
			     mono_ms() - fs->dirty_since_ms >= TIMES_DIRTY_MS);
}

/* ---- directories ---- */

/*
 * The first collision counter of hash h that no item uses (used: a bit
 * per counter, as a lookup over the hash's key range saw them): 0 and
 * *off, or -ENOSPC when all 256 are taken.
 */
static int free_slot(const uint8_t *used, uint64_t h, uint64_t *off)
{
	for (unsigned c = 0; c <= FS_HASH_COLL_MASK; c++) {
		if (!(used[c / 8] & (1u << (c % 8)))) {
			*off = h | c;
			return 0;
		}
	}
	return -ENOSPC;
}

/*
 * Items named by a hash (DIRENT and XATTR keys of obj): fn(arg) sees each
 * item whose key has the name's hash, marks the collision counters it
 * sees in used, and returns 1 on the name.  0 (found), -ENOENT with *off
 * a free key offset for the name, -ENOSPC (no free counter), or -errno.
 */
static int hashed_find(struct fs *fs, uint64_t obj, uint8_t type,
		       const char *name, size_t len, fs_bt_iter_fn fn,
		       void *arg, const uint8_t *used, uint64_t *off)
{
	uint64_t h = fs_name_hash(fs->hash_key, name, len);
	struct fs_bt_key lo = fs_key(obj, type, h);
	struct fs_bt_key hi = fs_key(obj, type, h | FS_HASH_COLL_MASK);
	int ret = fs_bt_iterate(fs->bt, &lo, &hi, fn, arg);

	if (ret < 0)
		return ret;
	if (ret > 0)
		return 0;
	return free_slot(used, h, off) ?: -ENOENT;
}

struct dfind {
	struct fs *fs;
	const char *name;
	size_t len;
	struct fs_dirent de; /* found */
	uint64_t off; /* its key offset */
	uint8_t used[(FS_HASH_COLL_MASK + 1) / 8]; /* collision slots */
};

static int dfind_fn(void *arg, const struct fs_bt_key *k, const void *val,
		    size_t len)
{
	struct dfind *d = arg;
	struct fs_dirent de;
	int ret = fs_dirent_decode(k, val, len, d->fs->hash_key, &de);
	unsigned c = (unsigned)(k->offset & FS_HASH_COLL_MASK);

	if (ret)
		return ret;
	d->used[c / 8] |= (uint8_t)(1u << (c % 8));
	if (de.name_len == d->len && !memcmp(de.name, d->name, d->len)) {
		d->de = de;
		d->off = k->offset;
		return 1;
	}
	return 0;
}

/*
 * Find name in dir: 0 and d->de, d->off; -ENOENT (then d->off is a free
 * key offset for the name, or -ENOSPC if its hash has no free slot).
 */
static int dir_find(struct fs *fs, uint64_t dir, const char *name,
		    struct dfind *d)
{
	memset(d, 0, sizeof(*d));
	d->fs = fs;
	d->name = name;
	d->len = strlen(name);
	return hashed_find(fs, dir, FS_ITEM_DIRENT, name, d->len, dfind_fn, d,
			   d->used, &d->off);
}

/* Insert the two items of an entry (reserved: 2 inserts). */
static int entry_put(struct op *o, uint64_t dir, uint64_t off, uint64_t seq,
		     uint64_t ino, uint32_t mode, const char *name)
{
	struct fs_dirent de = { 0 };
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	struct fs_bt_key k;
	size_t len;
	int ret;

	de.ino = ino;
	de.type = FS_FT_OF_MODE(mode);
	de.name_len = (uint8_t)strlen(name);
	memcpy(de.name, name, de.name_len);
	de.cookie = seq;
	k = fs_key_dirent(dir, off);
	len = fs_dirent_encode(&de, buf);
	ret = fs_txn_insert(o->t, &k, buf, len);
	if (ret)
		return ret;
	de.cookie = off;
	k = fs_key_dirindex(dir, seq);
	len = fs_dirent_encode(&de, buf);
	return fs_txn_insert(o->t, &k, buf, len);
}

/* Rewrite both items of an existing entry to name ino (2 updates). */
static int entry_retarget(struct op *o, uint64_t dir, const struct dfind *d,
			  uint64_t ino, uint32_t mode)
{
	struct fs_dirent de = d->de;
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	struct fs_bt_key k;
	int ret;

	de.ino = ino;
	de.type = FS_FT_OF_MODE(mode);
	k = fs_key_dirent(dir, d->off);
	ret = fs_txn_update(o->t, &k, buf, fs_dirent_encode(&de, buf));
	if (ret)
		return ret;
	de.cookie = d->off;
	k = fs_key_dirindex(dir, d->de.cookie);
	return fs_txn_update(o->t, &k, buf, fs_dirent_encode(&de, buf));
}

/* Delete both items of an entry (2 deletes). */
static int entry_del(struct op *o, uint64_t dir, const struct dfind *d)
{
	struct fs_bt_key k = fs_key_dirent(dir, d->off);
	int ret = fs_txn_delete(o->t, &k);

	if (ret)
		return ret;
	k = fs_key_dirindex(dir, d->de.cookie);
	return fs_txn_delete(o->t, &k);
}

/* 1 if dir has no entries, 0 if it has, or -errno. */
static int dir_empty(struct fs *fs, uint64_t dir)
{
	struct fs_bt_key k = fs_key_dirindex(dir, 0), found;
	int ret = fs_bt_search(fs->bt, &k, FS_BT_GE, &found, NULL, 0);

	if (ret == -ENOENT)
		return 1;
	if (ret < 0)
		return ret;
	return !(found.objectid == dir && found.type == FS_ITEM_DIRINDEX);
}

/* ---- extents ---- */

struct ext {
	uint64_t start; /* file block */
	struct fs_extent e;
};

/* The extent of ino covering file block fb or, mode LE, the last one
 * starting at or before it.  0, -ENOENT, or -errno. */
static int ext_search(struct fs *fs, uint64_t ino, uint64_t fb,
		      enum fs_bt_mode mode, struct ext *x)
{
	struct fs_bt_key k = fs_key_extent(ino, fb), found;
	uint8_t buf[FS_EXTENT_BYTES];
	int ret = fs_bt_search(fs->bt, &k, mode, &found, buf, sizeof(buf));

	if (ret < 0)
		return ret;
	if (found.objectid != ino || found.type != FS_ITEM_EXTENT)
		return -ENOENT;
	x->start = found.offset;
	return fs_extent_decode(&found, buf, (size_t)ret, &x->e);
}

/* The extent covering fb: 0 and *x, or -ENOENT for a hole. */
static int ext_at(struct fs *fs, uint64_t ino, uint64_t fb, struct ext *x)
{
	int ret = ext_search(fs, ino, fb, FS_BT_LE, x);

	if (ret)
		return ret;
	return fb < x->start + x->e.nblocks ? 0 : -ENOENT;
}

/* First file block of the extent after fb, or FS_MAX_FILE_BLOCKS. */
static int ext_next_start(struct fs *fs, uint64_t ino, uint64_t fb,
			  uint64_t *next)
{
	struct ext x;
	int ret = ext_search(fs, ino, fb, FS_BT_GT, &x);

	if (ret == -ENOENT) {
		*next = FS_MAX_FILE_BLOCKS;
		return 0;
	}
	if (!ret)
		*next = x.start;
	return ret;
}

static int ext_put(struct op *o, uint64_t ino, uint64_t fb, uint64_t lba,
		   uint64_t n, uint32_t flags, int insert)
{
	struct fs_bt_key k = fs_key_extent(ino, fb);
	struct fs_extent e = { lba, (uint32_t)n, flags };
	uint8_t buf[FS_EXTENT_BYTES];
	size_t len;

	FS_VERIFY(n >= 1 && n <= UINT32_MAX);
	len = fs_extent_encode(&e, buf);
	return insert ? fs_txn_insert(o->t, &k, buf, len) :
			fs_txn_update(o->t, &k, buf, len);
}

/* Free a run of blocks, in pieces the allocator takes (n frees). */
static unsigned free_runs(uint64_t n)
{
	return (unsigned)((n + FS_WINDOW_BLOCKS - 1) / FS_WINDOW_BLOCKS);
}

static int free_blocks(struct op *o, uint64_t lba, uint64_t n)
{
	while (n) {
		uint64_t k = n < FS_WINDOW_BLOCKS ? n : FS_WINDOW_BLOCKS;
		int ret = fs_txn_free(o->t, lba, k);

		if (ret)
			return ret;
		lba += k;
		n -= k;
	}
	return 0;
}

/* One step of an unmap: file blocks [a, b) of extent x. */
struct unmap {
	struct ext x; /* the last extent that overlaps the range */
	uint64_t a, b; /* its blocks to unmap, at most UNMAP_CHUNK */
};

/*
 * The next step of unmapping file blocks [fa, fb) of n, from the end:
 * 0 and *u, 1 if nothing of the range is mapped, or -errno.
 */
static int unmap_next(struct fs *fs, const struct node *n, uint64_t fa,
		      uint64_t fb, struct unmap *u)
{
	uint64_t end;
	int ret;

	if (fb <= fa)
		return 1;
	ret = ext_search(fs, n->ino, fb - 1, FS_BT_LE, &u->x);
	if (ret == -ENOENT)
		return 1;
	if (ret)
		return ret;
	end = u->x.start + u->x.e.nblocks;
	if (end <= fa)
		return 1;
	u->b = end < fb ? end : fb;
	u->a = u->x.start > fa ? u->x.start : fa;
	if (u->b - u->a > UNMAP_CHUNK)
		u->a = u->b - UNMAP_CHUNK;
	return 0;
}

/* What step u changes besides n's inode (one update, the caller's). */
static void unmap_res(const struct unmap *u, struct fs_txn_res *r)
{
	r->deletes += 1;
	r->inserts += 2;
	r->frees += free_runs(u->b - u->a) + 1;
	r->freeing = 1;
}

/* Do step u (reserved: unmap_res), n's inode not stored yet. */
static int unmap_apply(struct op *o, struct node *n, const struct unmap *u)
{
	const struct ext *x = &u->x;
	uint64_t end = x->start + x->e.nblocks;
	struct fs_bt_key k = fs_key_extent(n->ino, x->start);
	int ret = fs_txn_delete(o->t, &k);

	if (!ret && u->a > x->start)
		ret = ext_put(o, n->ino, x->start, x->e.lba, u->a - x->start,
			      x->e.flags, 1);
	if (!ret && u->b < end)
		ret = ext_put(o, n->ino, u->b, x->e.lba + (u->b - x->start),
			      end - u->b, x->e.flags, 1);
	if (!ret)
		ret = free_blocks(o, x->e.lba + (u->a - x->start), u->b - u->a);
	if (!ret)
		n->in.blocks -= u->b - u->a;
	return ret;
}

/*
 * Remove the mapping of file blocks [fa, fb) of n, freeing the blocks,
 * from the end backwards (so a truncate that stops early leaves a
 * shorter file, never a hole in the middle).  Steps of at most
 * UNMAP_CHUNK blocks, each its own reservation, which may use the
 * metadata reserve (it frees space).
 */
static int unmap_range(struct op *o, struct node *n, uint64_t fa, uint64_t fb)
{
	for (;;) {
		struct fs_txn_res r = { .updates = 1 };
		struct unmap u;
		int ret = unmap_next(o->fs, n, fa, fb, &u);

		if (ret)
			return ret == 1 ? 0 : ret;
		unmap_res(&u, &r);
		ret = op_reserve(o, &r);
		if (!ret)
			ret = unmap_apply(o, n, &u);
		if (!ret)
			ret = inode_store(o, n, 0);
		if (ret)
			return ret;
		fb = u.a;
	}
}

/* ---- freeing inodes ---- */

static int xattr_first(struct fs *fs, uint64_t ino, struct fs_bt_key *found)
{
	struct fs_bt_key k = fs_key_xattr(ino, 0);
	int ret = fs_bt_search(fs->bt, &k, FS_BT_GE, found, NULL, 0);

	if (ret < 0)
		return ret;
	return found->objectid == ino && found->type == FS_ITEM_XATTR ? 0 :
									-ENOENT;
}

/*
 * Free an inode whose last name is gone and which nobody has open: its
 * extents, xattrs, then the inode and its ORPHAN item together.
 */
static int inode_destroy(struct op *o, struct node *n)
{
	struct fs_txn_res r = { 0 };
	struct fs_bt_key k;
	int ret;

	FS_VERIFY(n->in.nlink == 0 && n->nopen == 0 && n->nlookup == 0);
	times_clean(o->fs, n); /* its inode goes */
	ret = unmap_range(o, n, 0, FS_MAX_FILE_BLOCKS);
	while (!ret) {
		ret = xattr_first(o->fs, n->ino, &k);
		if (ret)
			break;
		r = (struct fs_txn_res){ .deletes = 1, .freeing = 1 };
		ret = op_reserve(o, &r);
		if (!ret)
			ret = fs_txn_delete(o->t, &k);
	}
	if (ret != -ENOENT)
		return ret;
	r = (struct fs_txn_res){ .deletes = 2, .freeing = 1 };
	ret = op_reserve(o, &r);
	if (ret)
		return ret;
	k = fs_key_inode(n->ino);
	ret = fs_txn_delete(o->t, &k);
	if (!ret) {
		k = fs_key_orphan(n->ino);
		ret = fs_txn_delete(o->t, &k);
	}
	return ret;
}

/*
 * n lost a name (nlink already lowered, inode stored in this step's
 * reservation, which must include one insert for the orphan).  At zero
 * links it becomes an orphan, freed now unless open or still known to the
 * kernel, which may open it through a name it looked up before (then at
 * the last release or forget: maybe_destroy).
 */
static int inode_unlinked(struct op *o, struct node *n)
{
	struct fs_bt_key k;
	int ret;

	if (n->in.nlink)
		return 0;
	k = fs_key_orphan(n->ino);
	ret = fs_txn_insert(o->t, &k, NULL, 0);
	if (ret || n->nopen || n->nlookup)
		return ret;
	return inode_destroy(o, n);
}

/* ---- open, close ---- */

static int orphan_fn(void *arg, const struct fs_bt_key *k, const void *val,
		     size_t len)
{
	(void)val;
	(void)len;
	*(uint64_t *)arg = k->offset;
	return 1;
}

/* Free every orphan a crash left (their opens died with the daemon). */
static int orphans_clear(struct fs *fs)
{
	for (;;) {
		struct fs_bt_key lo = fs_key_orphan(0);
		struct fs_bt_key hi = fs_key_orphan(UINT64_MAX);
		uint64_t ino = 0;
		struct node *n;
		struct op o;
		int ret = op_begin(&o, fs, 1);

		if (ret)
			return ret;
		ret = fs_bt_iterate(fs->bt, &lo, &hi, orphan_fn, &ino);
		if (ret <= 0)
			return op_end(&o, ret);
		ret = node_get(fs, ino, &n);
		if (!ret && n->in.nlink)
			ret = FS_CORRUPT_AT("orphan of inode", ino,
					    "V2 an orphan with links");
		if (!ret)
			ret = inode_destroy(&o, n);
		if (!ret) {
			node_unused(fs, n);
			vol_log(VOL_LOG_INFO,
				"freed inode %llu, unlinked while open before "
				"a crash",
				(unsigned long long)ino);
		}
		ret = op_end(&o, ret);
		if (ret)
			return ret;
	}
}

int fs_vfs_has_fs(struct vol *v)
{
	uint8_t *blk = malloc(FS_BLOCK_BYTES);
	int ret = blk ? vol_read(v, FS_SB_LBA, blk) : -ENOMEM;

	if (!ret)
		ret = !fs_all_zero(blk, FS_BLOCK_BYTES);
	free(blk);
	return ret;
}

static int fs_new_store(struct vol *v)
{
	int ret = fs_vfs_has_fs(v);

	if (ret)
		return ret < 0 ? ret : 0;
	vol_log(VOL_LOG_INFO, "a new volume: making its filesystem");
	return fs_store_mkfs(v, NULL);
}

int fs_vfs_open(struct vol *v, struct fs **out)
{
	pthread_rwlockattr_t ra;
	struct fs *fs;
	int ret = fs_new_store(v);

	if (ret)
		return ret;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	ret = fs_store_open(v, NULL, &fs->st);
	if (ret) {
		free(fs);
		return ret;
	}
	fs->vol = v;
	fs->bt = fs_store_tree(fs->st);
	memcpy(fs->hash_key, fs_store_sb(fs->st)->hash_key, FS_HASH_KEY_BYTES);
	pthread_mutex_init(&fs->mu, NULL);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(
		&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&fs->data_rw, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (getrandom(&fs->generation, sizeof(fs->generation), 0) !=
	    sizeof(fs->generation))
		fs->generation = (uint64_t)time(NULL) << 20;
	ret = orphans_clear(fs);
	if (ret) {
		(void)fs_vfs_close(fs);
		return ret;
	}
	*out = fs;
	return 0;
}

int fs_vfs_close(struct fs *fs)
{
	int ret, flushed;

	if (!fs)
		return 0;
	flushed = fs->dirty ? times_flush(fs) : 0;
	if (flushed)
		vol_log(VOL_LOG_ERR,
			"times of %u files could not be stored at the close: "
			"%s (they keep the times of their last change)",
			fs->ndirty, strerror(-flushed));
	ret = fs_store_close(fs->st);
	if (!ret)
		ret = flushed;
	for (unsigned b = 0; b < NODE_BUCKETS; b++) {
		while (fs->nodes[b]) {
			struct node *n = fs->nodes[b];

			fs->nodes[b] = n->hnext;
			free(n);
		}
	}
	pthread_rwlock_destroy(&fs->data_rw);
	pthread_mutex_destroy(&fs->mu);
	free(fs);
	return ret;
}

struct fs_store *fs_vfs_store(struct fs *fs)
{
	return fs->st;
}

/* ---- attributes, lookup ---- */

static void lock(struct fs *fs)
{
	pthread_mutex_lock(&fs->mu);
}

static void unlock(struct fs *fs)
{
	pthread_mutex_unlock(&fs->mu);
}

int fs_vfs_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
	struct node *n;
	int ret;

	lock(fs);
	ret = node_get(fs, ino, &n);
	if (!ret) {
		fill_stat(n, st);
		node_unused(fs, n);
	}
	unlock(fs);
	return ret;
}

/*
 * The entry name of directory dir: the directory's node, the entry, the
 * node of the inode it names.  -ENOTDIR, -ENOENT (also when the name's
 * hash has no free collision slot: then it is not there either), -errno.
 */
static int entry_get(struct fs *fs, uint64_t dir, const char *name,
		     struct node **d, struct dfind *f, struct node **n)
{
	int ret = dir_get(fs, dir, d);

	if (!ret)
		ret = dir_find(fs, dir, name, f);
	if (ret == -ENOSPC)
		ret = -ENOENT;
	if (!ret)
		ret = node_get(fs, f->de.ino, n);
	return ret;
}

int fs_vfs_lookup(struct fs *fs, uint64_t dir, const char *name,
		  struct stat *st)
{
	struct node *d, *n;
	struct dfind f;
	int ret = name_ok(name);

	if (ret)
		return ret;
	lock(fs);
	ret = entry_get(fs, dir, name, &d, &f, &n);
	if (!ret) {
		n->nlookup++;
		fill_stat(n, st);
	}
	unlock(fs);
	return ret;
}

/*
 * Free ino if it is an orphan nothing holds any more (its last release
 * or forget).  Looked up again under the lock: another thread may have
 * freed it meanwhile (then its inode is gone: -ENOENT), or dropped its
 * node from the table without freeing it: the store of its held times
 * (times_flush) drops a node nothing holds, and an orphan's last forget
 * leaves it exactly so until this runs.  Taking the node from the table
 * alone then left the orphan to the next mount; it is read back instead.
 */
static int maybe_destroy(struct fs *fs, uint64_t ino)
{
	struct node *n;
	struct op o;
	int ret = op_begin(&o, fs, 1);

	if (ret)
		return ret;
	ret = node_get(fs, ino, &n);
	if (ret == -ENOENT)
		return op_end(&o, 0);
	if (!ret) {
		if (!n->nopen && !n->nlookup && !n->in.nlink)
			ret = inode_destroy(&o, n);
		node_unused(fs, n);
	}
	return op_end(&o, ret);
}

void fs_vfs_forget(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	struct node *n;
	int orphan = 0, ret;

	lock(fs);
	n = *node_slot(fs, ino);
	if (n) {
		n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
		orphan = !n->nlookup && !n->nopen && !n->in.nlink;
		if (!orphan)
			node_unused(fs, n);
	}
	unlock(fs);
	if (!orphan)
		return;
	ret = maybe_destroy(fs, ino);
	if (ret)
		vol_log(VOL_LOG_ERR,
			"inode %llu, unlinked, could not be freed: %s (it "
			"will be at the next mount)",
			(unsigned long long)ino, strerror(-ret));
}

/* ---- creating names ---- */

static int mknod_check(struct fs *fs, struct node *d, const char *name,
		       uint32_t mode, const char *target, struct dfind *f)
{
	int ret;

	if (d->in.nlink == 0)
		return -ENOENT;
	if ((mode & FS_S_IFMT) == FS_S_IFDIR && d->in.nlink >= NLINK_MAX)
		return -EMLINK;
	if (target && strnlen(target, FS_SYMLINK_MAX + 1) > FS_SYMLINK_MAX)
		return -ENAMETOOLONG;
	if (target && !target[0])
		return -ENOENT; /* as symlink(2) with an empty target */
	ret = dir_find(fs, d->ino, name, f);
	if (ret == 0)
		return -EEXIST;
	return ret == -ENOENT ? 0 : ret;
}

/* Add an entry for n under d (reserved: 2 inserts, 1 update of d). */
static int link_into(struct op *o, struct node *d, const struct dfind *f,
		     struct node *n, const char *name)
{
	int ret = entry_put(o, d->ino, f->off, d->in.next_index, n->ino,
			    n->in.mode, name);

	if (ret)
		return ret;
	d->in.next_index++;
	if (is_dir(&n->in))
		d->in.nlink++;
	now_time(&d->in.mtime);
	d->in.ctime = d->in.mtime;
	return inode_store(o, d, 0);
}

/* Write a symlink's target as its one data block (reserved). */
static int symlink_write(struct op *o, struct node *n, const char *target)
{
	uint8_t *blk = calloc(1, FS_BLOCK_BYTES);
	size_t len = strlen(target);
	uint64_t lba;
	uint32_t got;
	int ret;

	if (!blk)
		return -ENOMEM;
	memcpy(blk, target, len);
	ret = fs_txn_alloc(o->t, 0, 1, &lba, &got);
	if (!ret)
		ret = fs_txn_write(o->t, lba, blk);
	if (!ret)
		ret = ext_put(o, n->ino, 0, lba, 1, 0, 1);
	free(blk);
	n->in.size = len;
	n->in.blocks = 1;
	return ret;
}

int fs_vfs_mknod(struct fs *fs, const struct fs_ctx *c, uint64_t dir,
		 const char *name, uint32_t mode, uint64_t rdev,
		 const char *target, struct stat *st)
{
	struct fs_txn_res r = { .inserts = 3, .updates = 1 };
	uint32_t fmt = mode & FS_S_IFMT;
	struct node *d, *n = NULL;
	struct dfind f;
	struct op o;
	int ret = name_ok(name);

	if (ret)
		return ret;
	if (fmt != FS_S_IFREG && fmt != FS_S_IFDIR && fmt != FS_S_IFLNK &&
	    fmt != FS_S_IFIFO && fmt != FS_S_IFSOCK && fmt != FS_S_IFCHR &&
	    fmt != FS_S_IFBLK)
		return -EINVAL;
	if ((fmt == FS_S_IFLNK) != (target != NULL))
		return -EINVAL;
	if (target) {
		r.inserts++;
		r.data_blocks = 1;
		r.allocs = 1;
		r.alloc_blocks = 1;
	}
	ret = op_begin(&o, fs, 0);
	if (ret)
		return ret;
	ret = dir_get(fs, dir, &d);
	if (!ret)
		ret = mknod_check(fs, d, name, mode, target, &f);
	if (!ret)
		ret = op_reserve(&o, &r);
	if (!ret)
		n = calloc(1, sizeof(*n));
	if (!ret && !n)
		ret = -ENOMEM;
	if (!ret)
		ret = fs_txn_new_ino(o.t, &n->ino);
	if (ret) {
		free(n);
		return op_end(&o, ret);
	}
	n->in.mode = mode & (FS_S_IFMT | FS_S_PERM);
	n->in.uid = c->uid;
	n->in.gid = c->gid;
	if (d->in.mode & S_ISGID) { /* BSD group semantics */
		n->in.gid = d->in.gid;
		if (fmt == FS_S_IFDIR)
			n->in.mode |= S_ISGID;
	}
	if (fmt == FS_S_IFLNK)
		n->in.mode = FS_S_IFLNK | 0777;
	n->in.nlink = fmt == FS_S_IFDIR ? 2 : 1;
	if (fmt == FS_S_IFCHR || fmt == FS_S_IFBLK)
		n->in.rdev = rdev;
	n->in.generation = fs->generation++;
	now_time(&n->in.atime);
	n->in.mtime = n->in.ctime = n->in.crtime = n->in.atime;
	if (fmt == FS_S_IFDIR) {
		n->in.next_index = FS_DIRINDEX_FIRST;
		n->in.parent = d->ino;
	}
	if (target)
		ret = symlink_write(&o, n, target);
	if (!ret)
		ret = inode_store(&o, n, 1);
	if (!ret)
		ret = link_into(&o, d, &f, n, name);
	if (ret) {
		free(n);
		return op_end(&o, ret);
	}
	n->nlookup = 1;
	*node_slot(fs, n->ino) = n;
	fill_stat(n, st);
	return op_end(&o, 0);
}

int fs_vfs_link(struct fs *fs, uint64_t ino, uint64_t newdir,
		const char *newname, struct stat *st)
{
	struct fs_txn_res r = { .inserts = 2, .updates = 2 };
	struct node *d, *n;
	struct dfind f;
	struct op o;
	int ret = name_ok(newname);

	if (ret)
		return ret;
	ret = op_begin(&o, fs, 0);
	if (ret)
		return ret;
	ret = node_get(fs, ino, &n);
	if (!ret && is_dir(&n->in))
		ret = -EPERM;
	if (!ret && n->in.nlink == 0)
		ret = -ENOENT;
	if (!ret && n->in.nlink >= NLINK_MAX)
		ret = -EMLINK;
	if (!ret)
		ret = dir_get(fs, newdir, &d);
	if (!ret)
		ret = mknod_check(fs, d, newname, n->in.mode, NULL, &f);
	if (!ret)
		ret = op_reserve(&o, &r);
	if (!ret) {
		n->in.nlink++;
		now_time(&n->in.ctime);
		ret = inode_store(&o, n, 0);
	}
	if (!ret)
		ret = link_into(&o, d, &f, n, newname);
	if (!ret) {
		n->nlookup++;
		fill_stat(n, st);
	}
	return op_end(&o, ret);
}

/* ---- removing names ---- */

/* Drop entry f (naming n) from d; n loses the link (reserved: 2
 * deletes, 2 updates, 1 insert). */
static int unlink_entry(struct op *o, struct node *d, const struct dfind *f,
			struct node *n)
{
	int ret = entry_del(o, d->ino, f);

	if (ret)
		return ret;
	now_time(&d->in.mtime);
	d->in.ctime = d->in.mtime;
	n->in.ctime = d->in.mtime;
	if (is_dir(&n->in)) {
		d->in.nlink--;
		n->in.nlink = 0;
	} else {
		n->in.nlink--;
	}
	ret = inode_store(o, d, 0);
	if (!ret)
		ret = inode_store(o, n, 0);
	if (!ret)
		ret = inode_unlinked(o, n);
	return ret;
}

static int remove_name(struct fs *fs, uint64_t dir, const char *name, int rmdir)
{
	struct fs_txn_res r = {
		.inserts = 1, .updates = 2, .deletes = 2, .freeing = 1
	};
	struct node *d, *n = NULL;
	struct dfind f;
	struct op o;
	int ret = name_ok(name);

	if (ret)
		return ret;
	ret = op_begin(&o, fs, 1);
	if (ret)
		return ret;
	ret = entry_get(fs, dir, name, &d, &f, &n);
	if (!ret && rmdir && !is_dir(&n->in))
		ret = -ENOTDIR;
	if (!ret && !rmdir && is_dir(&n->in))
		ret = -EISDIR;
	if (!ret && rmdir) {
		ret = dir_empty(fs, n->ino);
		ret = ret == 1 ? 0 : ret == 0 ? -ENOTEMPTY : ret;
	}
	if (!ret)
		ret = op_reserve(&o, &r);
	if (!ret)
		ret = unlink_entry(&o, d, &f, n);
	if (n)
		node_unused(fs, n);
	return op_end(&o, ret);
}

int fs_vfs_unlink(struct fs *fs, uint64_t dir, const char *name)
{
	return remove_name(fs, dir, name, 0);
}

int fs_vfs_rmdir(struct fs *fs, uint64_t dir, const char *name)
{
	return remove_name(fs, dir, name, 1);
}

/* ---- rename ---- */

/* A directory n moves from od to nd: its parent and the links. */
static void dir_moved(struct node *n, struct node *od, struct node *nd)
{
	if (!is_dir(&n->in) || od == nd)
		return;
	n->in.parent = nd->ino;
	od->in.nlink--;
	nd->in.nlink++;
}

static int rename_exchange(struct op *o, struct node *od, struct dfind *sf,
			   struct node *sn, struct node *nd, struct dfind *df,
			   struct node *dn)
{
	struct fs_txn_res r = { .updates = 8 };
	int ret = op_reserve(o, &r);

	if (!ret)
		ret = entry_retarget(o, od->ino, sf, dn->ino, dn->in.mode);
	if (!ret)
		ret = entry_retarget(o, nd->ino, df, sn->ino, sn->in.mode);
	if (ret)
		return ret;
	dir_moved(sn, od, nd);
	dir_moved(dn, nd, od);
	now_time(&od->in.mtime);
	od->in.ctime = nd->in.mtime = nd->in.ctime = od->in.mtime;
	sn->in.ctime = dn->in.ctime = od->in.mtime;
	ret = inode_store(o, od, 0);
	if (!ret && nd != od)
		ret = inode_store(o, nd, 0);
	if (!ret)
		ret = inode_store(o, sn, 0);
	if (!ret)
		ret = inode_store(o, dn, 0);
	return ret;
}

/* Checks of a replacing rename, before any change. */
static int rename_check(struct fs *fs, struct node *sn, struct node *dn)
{
	int ret;

	if (is_dir(&sn->in) && !is_dir(&dn->in))
		return -ENOTDIR;
	if (!is_dir(&sn->in) && is_dir(&dn->in))
		return -EISDIR;
	if (!is_dir(&dn->in))
		return 0;
	ret = dir_empty(fs, dn->ino);
	return ret == 1 ? 0 : ret == 0 ? -ENOTEMPTY : ret;
}

static int rename_move(struct op *o, struct node *od, struct dfind *sf,
		       struct node *sn, struct node *nd, struct dfind *df,
		       struct node *dn, const char *newname)
{
	struct fs_txn_res r = { .inserts = 3, .deletes = 2, .updates = 6 };
	int ret;

	r.freeing = dn != NULL; /* over a name: its inode may go */
	ret = op_reserve(o, &r);
	if (ret)
		return ret;
	if (dn) { /* the old target loses its name, atomically replaced */
		ret = entry_retarget(o, nd->ino, df, sn->ino, sn->in.mode);
		if (ret)
			return ret;
		if (is_dir(&dn->in)) {
			nd->in.nlink--;
			dn->in.nlink = 0;
		} else {
			dn->in.nlink--;
		}
	} else {
		ret = entry_put(o, nd->ino, df->off, nd->in.next_index, sn->ino,
				sn->in.mode, newname);
		if (ret)
			return ret;
		nd->in.next_index++;
	}
	ret = entry_del(o, od->ino, sf);
	if (ret)
		return ret;
	dir_moved(sn, od, nd);
	now_time(&od->in.mtime);
	od->in.ctime = nd->in.mtime = nd->in.ctime = od->in.mtime;
	sn->in.ctime = od->in.mtime;
	ret = inode_store(o, od, 0);
	if (!ret && nd != od)
		ret = inode_store(o, nd, 0);
	if (!ret)
		ret = inode_store(o, sn, 0);
	if (!ret && dn) {
		dn->in.ctime = od->in.mtime;
		ret = inode_store(o, dn, 0);
		if (!ret)
			ret = inode_unlinked(o, dn);
	}
	return ret;
}

/*
 * 1 if directory a is d or one of its ancestors (a rename of a there
 * would cut a loop off the tree: EINVAL, as the kernel's own check).
 */
static int is_ancestor(struct fs *fs, uint64_t a, struct node *d)
{
	uint64_t ino = d->ino;
	struct fs_inode in = d->in;

	for (unsigned depth = 0; depth < 1u << 20; depth++) {
		int ret;

		if (ino == a)
			return 1;
		if (ino == FS_ROOT_INO)
			return 0;
		ino = in.parent;
		ret = inode_read(fs, ino, &in);
		if (ret)
			return ret;
	}
	return FS_CORRUPT_AT("directory", d->ino, "V2 parents loop");
}

int fs_vfs_rename(struct fs *fs, uint64_t dir, const char *name,
		  uint64_t newdir, const char *newname, unsigned flags)
{
	struct node *od, *nd, *sn = NULL, *dn = NULL;
	struct dfind sf, df;
	struct op o;
	int ret;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)))
		return -EINVAL;
	ret = name_ok(name);
	if (!ret)
		ret = name_ok(newname);
	if (ret)
		return ret;
	ret = op_begin(&o, fs, 1);
	if (ret)
		return ret;
	ret = entry_get(fs, dir, name, &od, &sf, &sn);
	if (!ret)
		ret = dir_get(fs, newdir, &nd);
	if (!ret) {
		ret = dir_find(fs, newdir, newname, &df);
		if (!ret)
			ret = node_get(fs, df.de.ino, &dn);
		else if (ret == -ENOENT)
			ret = 0;
	}
	if (!ret && dn && (flags & RENAME_NOREPLACE))
		ret = -EEXIST;
	if (!ret && !dn && (flags & RENAME_EXCHANGE))
		ret = -ENOENT;
	if (!ret && dn && dn == sn) /* two names of one inode: no-op */
		goto out;
	if (!ret && is_dir(&sn->in)) {
		ret = is_ancestor(fs, sn->ino, nd);
		ret = ret == 1 ? -EINVAL : ret;
	}
	if (!ret && dn && is_dir(&dn->in) && (flags & RENAME_EXCHANGE)) {
		ret = is_ancestor(fs, dn->ino, od);
		ret = ret == 1 ? -EINVAL : ret;
	}
	if (!ret && is_dir(&sn->in) && od != nd && nd->in.nlink >= NLINK_MAX)
		ret = -EMLINK;
	if (!ret && (flags & RENAME_EXCHANGE))
		ret = rename_exchange(&o, od, &sf, sn, nd, &df, dn);
	else if (!ret && dn)
		ret = rename_check(fs, sn, dn);
	if (!ret && !(flags & RENAME_EXCHANGE))
		ret = rename_move(&o, od, &sf, sn, nd, &df, dn, newname);
out:
	if (sn)
		node_unused(fs, sn);
	if (dn)
		node_unused(fs, dn);
	return op_end(&o, ret);
}

/* ---- setattr, truncate ---- */

/*
 * Zero the bytes of the block holding offset size past it (V5), if that
 * block is mapped and written (reserved: 1 data block).
 */
static int zero_tail(struct op *o, struct node *n, uint64_t size)
{
	uint32_t in_blk = (uint32_t)(size % FS_BLOCK_BYTES);
	uint8_t *blk;
	struct ext x;
	uint64_t lba;
	int ret;

	if (!in_blk)
		return 0;
	ret = ext_at(o->fs, n->ino, size / FS_BLOCK_BYTES, &x);
	if (ret == -ENOENT || (!ret && (x.e.flags & FS_EXTENT_F_UNWRITTEN)))
		return 0;
	if (ret)
		return ret;
	blk = malloc(FS_BLOCK_BYTES);
	if (!blk)
		return -ENOMEM;
	lba = x.e.lba + (size / FS_BLOCK_BYTES - x.start);
	ret = fs_store_read(o->fs->st, lba, blk);
	if (!ret) {
		memset(blk + in_blk, 0, FS_BLOCK_BYTES - in_blk);
		ret = fs_txn_write(o->t, lba, blk);
	}
	free(blk);
	return ret;
}

/*
 * Set the size of regular file n.  Not above the old size, the blocks
 * past the new end go too (also those a FALLOC_FL_KEEP_SIZE left past
 * an unchanged size, as ext4 and XFS drop them), from the end: the new
 * size and the first step of the unmap are one reservation, so a
 * refusal there (ENOSPC) leaves the file as it was.  The later steps
 * may use the metadata reserve, so only the zones can refuse them; then
 * the blocks not yet freed stay past the new end (V3 allows it), and a
 * truncate to the same size again frees them.
 */
static int truncate_to(struct op *o, struct node *n, uint64_t size)
{
	struct fs_txn_res r = { .updates = 1, .data_blocks = 1 };
	uint64_t old = n->in.size;
	uint64_t fa = (size + FS_BLOCK_BYTES - 1) / FS_BLOCK_BYTES;
	struct unmap u;
	int more = 0, ret;

	if (size > FS_FILE_MAX)
		return -EFBIG;
	if (size <= old) {
		ret = unmap_next(o->fs, n, fa, FS_MAX_FILE_BLOCKS, &u);
		if (ret < 0)
			return ret;
		more = ret == 0;
		r.freeing = 1;
		if (more)
			unmap_res(&u, &r);
	}
	ret = op_reserve(o, &r);
	if (!ret && size < old)
		ret = zero_tail(o, n, size);
	if (!ret && more)
		ret = unmap_apply(o, n, &u);
	if (ret)
		return ret;
	n->in.size = size;
	ret = inode_store(o, n, 0);
	if (ret || !more)
		return ret;
	return unmap_range(o, n, fa, u.a);
}

/* One clock reading per call: UTIME_NOW for both gives equal times. */
static void set_time(struct fs_time *t, const struct timespec *ts,
		     const struct fs_time *now)
{
	if (now) {
		*t = *now;
	} else {
		t->sec = ts->tv_sec;
		t->nsec = (uint32_t)ts->tv_nsec;
	}
}

#define TIMES_ONLY                                                           \
	(FS_SET_ATIME | FS_SET_MTIME | FS_SET_ATIME_NOW | FS_SET_MTIME_NOW | \
	 FS_SET_CTIME)

/* A setattr of times alone: the node changes, its inode later (Times). */
static int set_times(struct fs *fs, uint64_t ino, const struct stat *a,
		     unsigned set, const struct fs_time *now, struct stat *st)
{
	struct node *n;
	int ret, due;

	lock(fs);
	ret = fs_store_error(fs->st);
	if (!ret)
		ret = node_get(fs, ino, &n);
	if (!ret) {
		if (set & FS_SET_ATIME)
			set_time(&n->in.atime, &a->st_atim,
				 set & FS_SET_ATIME_NOW ? now : NULL);
		if (set & FS_SET_MTIME)
			set_time(&n->in.mtime, &a->st_mtim,
				 set & FS_SET_MTIME_NOW ? now : NULL);
		n->in.ctime = *now;
		if (!n->dirty) {
			if (!fs->dirty)
				fs->dirty_since_ms = mono_ms();
			n->dirty = 1;
			n->dnext = fs->dirty;
			fs->dirty = n;
			fs->ndirty++;
		}
		fill_stat(n, st);
	}
	due = !ret && times_due(fs);
	unlock(fs);
	if (due) {
		ret = times_flush(fs);
		if (ret == -ENOSPC) /* no room for it: the times wait, dirty */
			ret = 0;
	}
	return ret;
}

/* Mode m with the bits a write by an unprivileged caller clears. */
static uint32_t without_suidgid(uint32_t m)
{
	if ((m & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		m &= ~(uint32_t)S_ISGID;
	return m & ~(uint32_t)S_ISUID;
}

int fs_vfs_kill_suidgid(struct fs *fs, uint64_t ino)
{
	struct fs_txn_res r = { .updates = 1 };
	struct node *n;
	struct op o;
	int ret;

	lock(fs);
	ret = node_get(fs, ino, &n);
	if (!ret &&
	    (!is_reg(&n->in) || without_suidgid(n->in.mode) == n->in.mode))
		ret = 1; /* nothing to clear: the common case */
	unlock(fs);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = op_begin(&o, fs, 0);
	if (ret)
		return ret;
	ret = node_get(fs, ino, &n); /* again: the lock was let go */
	if (!ret)
		ret = op_reserve(&o, &r);
	if (ret || without_suidgid(n->in.mode) == n->in.mode)
		return op_end(&o, ret);
	n->in.mode = without_suidgid(n->in.mode);
	now_time(&n->in.ctime);
	ret = op_end(&o, inode_store(&o, n, 0));
	return ret ? ret : 1;
}

int fs_vfs_setattr(struct fs *fs, uint64_t ino, const struct stat *a,
		   unsigned set, struct stat *st)
{
	struct fs_txn_res r = { .updates = 1 };
	struct fs_time now;
	struct node *n;
	struct op o;
	int ret;

	/* With the writeback cache the kernel keeps the times and sends
	 * ctime (its clock) with every change: that is "now" then, so a
	 * UTIME_NOW for atime matches the mtime it sent. */
	if ((set & FS_SET_CTIME) &&
	    (uint64_t)a->st_ctim.tv_nsec < 1000000000u) {
		now.sec = a->st_ctim.tv_sec;
		now.nsec = (uint32_t)a->st_ctim.tv_nsec;
	} else {
		now_time(&now);
	}
	if ((set & FS_SET_ATIME) && !(set & FS_SET_ATIME_NOW) &&
	    (uint64_t)a->st_atim.tv_nsec >= 1000000000u)
		return -EINVAL;
	if ((set & FS_SET_MTIME) && !(set & FS_SET_MTIME_NOW) &&
	    (uint64_t)a->st_mtim.tv_nsec >= 1000000000u)
		return -EINVAL;
	if (!(set & ~TIMES_ONLY))
		return set_times(fs, ino, a, set, &now, st);
	ret = op_begin(&o, fs, (set & FS_SET_SIZE) != 0);
	if (ret)
		return ret;
	ret = node_get(fs, ino, &n);
	if (!ret && (set & FS_SET_SIZE) && !is_reg(&n->in))
		ret = is_dir(&n->in) ? -EISDIR : -EINVAL;
	if (!ret && (set & FS_SET_SIZE) && (uint64_t)a->st_size > FS_FILE_MAX)
		ret = -EFBIG;
	if (!ret && (set & FS_SET_SIZE))
		r.freeing = (uint64_t)a->st_size <= n->in.size;
	if (!ret && (set & FS_SET_SIZE)) {
		ret = truncate_to(&o, n, (uint64_t)a->st_size);
		if (!ret)
			n->in.mtime = now;
	}
	if (!ret)
		ret = op_reserve(&o, &r);
	if (ret)
		return op_end(&o, ret);
	if (set & FS_SET_MODE)
		n->in.mode = (n->in.mode & FS_S_IFMT) |
			     (a->st_mode & FS_S_PERM);
	if (set & FS_SET_UID)
		n->in.uid = a->st_uid;
	if (set & FS_SET_GID)
		n->in.gid = a->st_gid;
	/*
	 * chown's clearing, here and not in the kernel: with
	 * FUSE_HANDLE_KILLPRIV_V2 (fs_fuse.c) it sends the new owner alone.
	 * Without, it sends the cleared mode with it, and this changes
	 * nothing more.
	 */
	if (((set & (FS_SET_UID | FS_SET_GID)) && !is_dir(&n->in)) ||
	    ((set & FS_SET_KILL_SUIDGID) && is_reg(&n->in)))
		n->in.mode = without_suidgid(n->in.mode);
	if (set & FS_SET_ATIME)
		set_time(&n->in.atime, &a->st_atim,
			 set & FS_SET_ATIME_NOW ? &now : NULL);
	if (set & FS_SET_MTIME)
		set_time(&n->in.mtime, &a->st_mtim,
			 set & FS_SET_MTIME_NOW ? &now : NULL);
	n->in.ctime = now;
	ret = inode_store(&o, n, 0);
	if (!ret)
		fill_stat(n, st);
	return op_end(&o, ret);
}

int fs_vfs_readlink(struct fs *fs, uint64_t ino, char *buf)
{
	struct node *n;
	struct ext x;
	uint8_t *blk = malloc(FS_BLOCK_BYTES);
	int ret = blk ? 0 : -ENOMEM;

	lock(fs);
	if (!ret)
		ret = node_get(fs, ino, &n);
	if (!ret && (n->in.mode & FS_S_IFMT) != FS_S_IFLNK)
		ret = -EINVAL;
	if (!ret)
		ret = ext_at(fs, ino, 0, &x);
	if (!ret)
		ret = fs_store_read(fs->st, x.e.lba, blk);
	if (!ret && n->in.size > FS_SYMLINK_MAX)
		ret = FS_CORRUPT_AT("symlink inode", ino, "V4 target too long");
	if (!ret) {
		memcpy(buf, blk, n->in.size);
		buf[n->in.size] = '\0';
	}
	unlock(fs);
	free(blk);
	return ret == -ENOENT ? FS_CORRUPT_AT("symlink inode", ino,
					      "V4 no target block") :
				ret;
}

/* ---- open, release ---- */

int fs_vfs_open_ino(struct fs *fs, uint64_t ino, int how)
{
	struct node *n;
	int ret;

	lock(fs);
	ret = node_get(fs, ino, &n);
	if (!ret && (how & FS_OPEN_DIR) && !is_dir(&n->in))
		ret = -ENOTDIR;
	if (!ret) {
		n->nopen++;
		n->nwrite += (how & FS_OPEN_WRITE) != 0;
	}
	unlock(fs);
	return ret;
}

int fs_vfs_release(struct fs *fs, uint64_t ino, int how)
{
	struct node *n;
	int orphan;

	lock(fs);
	n = *node_slot(fs, ino);
	FS_VERIFY(n && n->nopen > 0);
	n->nopen--;
	if (how & FS_OPEN_WRITE) {
		FS_VERIFY(n->nwrite > 0);
		n->nwrite--;
	}
	orphan = !n->nopen && !n->nlookup && !n->in.nlink;
	if (!orphan)
		node_unused(fs, n);
	unlock(fs);
	/* The last close of an unlinked inode: free it now. */
	return orphan ? maybe_destroy(fs, ino) : 0;
}

uint32_t fs_vfs_writers(struct fs *fs, uint64_t ino)
{
	struct node *n;
	uint32_t w;

	lock(fs);
	n = *node_slot(fs, ino);
	w = n ? n->nwrite : 0;
	unlock(fs);
	return w;
}

/* ---- data ---- */

/* Blocks lbas[0..nb) into dst: 0 is a hole (zeros); runs at once. */
static int read_blocks(struct fs *fs, const uint64_t *lbas, unsigned nb,
		       uint8_t *dst)
{
	int ret = 0;

	for (unsigned i = 0, j; i < nb && !ret; i = j) {
		uint8_t *at = dst + (size_t)i * FS_BLOCK_BYTES;

		for (j = i + 1; j < nb && lbas[i] && lbas[j] == lbas[j - 1] + 1;
		     j++)
			;
		if (lbas[i] == 0)
			memset(at, 0, (size_t)(j - i) * FS_BLOCK_BYTES);
		else
			ret = fs_store_read_run(fs->st, lbas[i], j - i, at);
	}
	return ret;
}

ssize_t fs_vfs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size,
		    void *buf)
{
	uint64_t lbas[READ_MAX_BLOCKS], fb, first, last, end;
	struct node *n;
	uint8_t *blk = NULL;
	size_t done = 0;
	unsigned nb;
	int ret;

	pthread_rwlock_rdlock(&fs->data_rw);
	lock(fs);
	ret = node_get(fs, ino, &n);
	if (!ret && is_dir(&n->in))
		ret = -EISDIR;
	if (ret || off >= n->in.size || size == 0) {
		unlock(fs);
		pthread_rwlock_unlock(&fs->data_rw);
		return ret;
	}
	end = off + size < n->in.size ? off + size : n->in.size;
	first = off / FS_BLOCK_BYTES;
	last = (end - 1) / FS_BLOCK_BYTES;
	if (last - first >= READ_MAX_BLOCKS) {
		last = first + READ_MAX_BLOCKS - 1;
		end = (last + 1) * FS_BLOCK_BYTES;
	}
	nb = (unsigned)(last - first + 1);
	/* Map every block under the lock (0: a hole or unwritten). */
	for (fb = first; fb <= last && !ret;) {
		struct ext x;
		uint64_t stop;

		ret = ext_at(fs, ino, fb, &x);
		if (ret == -ENOENT) {
			ret = ext_next_start(fs, ino, fb, &stop);
			for (; !ret && fb <= last && fb < stop; fb++)
				lbas[fb - first] = 0;
			continue;
		}
		stop = x.start + x.e.nblocks;
		for (; !ret && fb <= last && fb < stop; fb++)
			lbas[fb - first] = x.e.flags & FS_EXTENT_F_UNWRITTEN ?
						   0 :
						   x.e.lba + (fb - x.start);
	}
	unlock(fs);
	done = end - off;
	if (!ret && off % FS_BLOCK_BYTES == 0) {
		/*
		 * On a block boundary (every sequential read) the whole
		 * blocks are opened straight into buf; only a partial last
		 * block goes through blk.  Saves a copy of every byte read.
		 */
		unsigned full = (unsigned)(done / FS_BLOCK_BYTES);

		ret = read_blocks(fs, lbas, full, buf);
		if (!ret && full < nb) {
			blk = malloc(FS_BLOCK_BYTES);
			ret = blk ? read_blocks(fs, lbas + full, 1, blk) :
				    -ENOMEM;
			if (!ret)
				memcpy((uint8_t *)buf +
					       (size_t)full * FS_BLOCK_BYTES,
				       blk, done % FS_BLOCK_BYTES);
		}
	} else if (!ret) {
		blk = malloc((size_t)nb * FS_BLOCK_BYTES);
		ret = blk ? read_blocks(fs, lbas, nb, blk) : -ENOMEM;
		if (!ret)
			memcpy(buf, blk + (off - first * FS_BLOCK_BYTES), done);
	}
	pthread_rwlock_unlock(&fs->data_rw);
	free(blk);
	return ret ? ret : (ssize_t)done;
}

/*
 * Write bytes [from, to) of file block fb at lba: a whole block is
 * copied, a part is merged into the block's current contents (zeros if
 * fresh: V4).
 */
static int write_block(struct op *o, uint64_t lba, int fresh, uint32_t from,
		       uint32_t to, const uint8_t *src, uint8_t *blk)
{
	int ret = 0;

	if (from == 0 && to == FS_BLOCK_BYTES)
		return fresh ? fs_txn_write_fresh(o->t, lba, src) :
			       fs_txn_write(o->t, lba, src);
	if (fresh)
		memset(blk, 0, FS_BLOCK_BYTES);
	else
		ret = fs_store_read(o->fs->st, lba, blk);
	if (ret)
		return ret;
	memcpy(blk + from, src, to - from);
	return fresh ? fs_txn_write_fresh(o->t, lba, blk) :
		       fs_txn_write(o->t, lba, blk);
}

struct wctx {
	struct op *o;
	struct node *n;
	uint64_t off, end; /* byte range */
	const uint8_t *buf; /* data of off */
	uint8_t *blk; /* scratch */
};

/* Write file blocks [fb, fb + cnt) at lba.. (reserved). */
static int write_run(struct wctx *w, uint64_t fb, uint64_t cnt, uint64_t lba,
		     int fresh)
{
	for (uint64_t i = 0; i < cnt; i++) {
		uint64_t bstart = (fb + i) * FS_BLOCK_BYTES;
		uint32_t from =
			(uint32_t)(w->off > bstart ? w->off - bstart : 0);
		uint32_t to = (uint32_t)(w->end - bstart < FS_BLOCK_BYTES ?
						 w->end - bstart :
						 FS_BLOCK_BYTES);
		int ret = write_block(w->o, lba + i, fresh, from, to,
				      w->buf + (bstart + from - w->off),
				      w->blk);

		if (ret)
			return ret;
	}
	return 0;
}

/*
 * A hole at fb: allocate up to cnt blocks, map them, write them, and
 * store the inode's block count in the same step.  The caller's last
 * step (size, times) may be refused for space; blocks counted only
 * there would leave the inode short of what its extents map.
 */
static int write_hole(struct wctx *w, uint64_t fb, uint64_t cnt, uint64_t *done)
{
	/* updates: a merged extent, the inode */
	struct fs_txn_res r = { .inserts = 1, .updates = 2, .allocs = 1 };
	struct fs *fs = w->o->fs;
	uint64_t lba, goal = 0;
	uint32_t got;
	struct ext prev;
	int merge = 0, ret;

	r.alloc_blocks = r.data_blocks = (uint32_t)cnt;
	ret = op_reserve(w->o, &r);
	if (ret)
		return ret;
	ret = fb ? ext_search(fs, w->n->ino, fb - 1, FS_BT_LE, &prev) : -ENOENT;
	if (ret && ret != -ENOENT)
		return ret;
	if (!ret && prev.start + prev.e.nblocks == fb && !prev.e.flags)
		goal = prev.e.lba + prev.e.nblocks;
	ret = fs_txn_alloc(w->o->t, goal, (uint32_t)cnt, &lba, &got);
	if (ret)
		return ret;
	if (goal && lba == goal &&
	    (uint64_t)prev.e.nblocks + got <= UINT32_MAX / 2)
		merge = 1;
	ret = write_run(w, fb, got, lba, 1);
	if (!ret)
		ret = merge ? ext_put(w->o, w->n->ino, prev.start, prev.e.lba,
				      prev.e.nblocks + got, 0, 0) :
			      ext_put(w->o, w->n->ino, fb, lba, got, 0, 1);
	if (ret)
		return ret;
	w->n->in.blocks += got;
	*done = got;
	return inode_store(w->o, w->n, 0);
}

/* An unwritten extent x at fb: the cnt blocks written become written
 * (the extent split in up to three). */
static int write_unwritten(struct wctx *w, const struct ext *x, uint64_t fb,
			   uint64_t cnt)
{
	struct fs_txn_res r = { .inserts = 3, .deletes = 1 };
	uint64_t end = x->start + x->e.nblocks;
	uint64_t lba = x->e.lba + (fb - x->start);
	struct fs_bt_key k = fs_key_extent(w->n->ino, x->start);
	int ret;

	r.data_blocks = (uint32_t)cnt;
	ret = op_reserve(w->o, &r);
	if (!ret)
		ret = write_run(w, fb, cnt, lba, 1);
	if (!ret)
		ret = fs_txn_delete(w->o->t, &k);
	if (!ret && fb > x->start)
		ret = ext_put(w->o, w->n->ino, x->start, x->e.lba,
			      fb - x->start, FS_EXTENT_F_UNWRITTEN, 1);
	if (!ret)
		ret = ext_put(w->o, w->n->ino, fb, lba, cnt, 0, 1);
	if (!ret && fb + cnt < end)
		ret = ext_put(w->o, w->n->ino, fb + cnt, lba + cnt,
			      end - fb - cnt, FS_EXTENT_F_UNWRITTEN, 1);
	return ret;
}

static int write_range(struct wctx *w)
{
	struct fs *fs = w->o->fs;
	uint64_t fb = w->off / FS_BLOCK_BYTES;
	uint64_t last = (w->end - 1) / FS_BLOCK_BYTES;

	while (fb <= last) {
		uint64_t want = last - fb + 1, done = 0, stop;
		struct ext x;
		int ret = ext_at(fs, w->n->ino, fb, &x);

		if (want > WRITE_RUN_MAX)
			want = WRITE_RUN_MAX;
		if (ret == -ENOENT) {
			ret = ext_next_start(fs, w->n->ino, fb, &stop);
			if (!ret && stop - fb < want)
				want = stop - fb;
			if (!ret)
				ret = write_hole(w, fb, want, &done);
		} else if (!ret) {
			stop = x.start + x.e.nblocks;
			if (stop - fb < want)
				want = stop - fb;
			done = want;
			if (x.e.flags & FS_EXTENT_F_UNWRITTEN) {
				ret = write_unwritten(w, &x, fb, want);
			} else {
				struct fs_txn_res r = { 0 };

				r.data_blocks = (uint32_t)want;
				ret = op_reserve(w->o, &r);
				if (!ret)
					ret = write_run(
						w, fb, want,
						x.e.lba + (fb - x.start), 0);
			}
		}
		if (ret && fb * FS_BLOCK_BYTES > w->off) {
			/* a short write: what the steps before wrote */
			w->end = fb * FS_BLOCK_BYTES;
			return 0;
		}
		if (ret)
			return ret;
		fb += done;
	}
	return 0;
}

/*
 * The data path without the metadata lock: whole blocks inside the file
 * that written extents already map (a database's page writes, the
 * kernel's writeback) change no metadata, so only their mapping is taken
 * under fs->mu; the blocks are copied, sealed and committed in a volume
 * transaction of their own outside it, in parallel with other writers.
 * data_rw, held for reading throughout, keeps the blocks from being
 * freed meanwhile.  Times are the kernel's with the writeback cache (it
 * sends them with setattr).  -EAGAIN: not such a write, take the general
 * path.
 */
static int overwrite(struct fs *fs, uint64_t ino, uint64_t off, size_t size,
		     const uint8_t *buf)
{
	uint64_t lbas[WRITE_RUN_MAX], first = off / FS_BLOCK_BYTES;
	uint8_t *blks[WRITE_RUN_MAX];
	unsigned nb = (unsigned)(size / FS_BLOCK_BYTES);
	struct node *n;
	int ret;

	if (off % FS_BLOCK_BYTES || size % FS_BLOCK_BYTES || nb == 0 ||
	    nb > WRITE_RUN_MAX)
		return -EAGAIN;
	ret = fs_store_wait_room(fs->st); /* before any lock, as op_begin */
	if (ret)
		return ret;
	pthread_rwlock_rdlock(&fs->data_rw);
	lock(fs);
	ret = fs_store_error(fs->st);
	if (!ret)
		ret = node_get(fs, ino, &n);
	if (!ret && (!is_reg(&n->in) || off + size > n->in.size))
		ret = -EAGAIN;
	for (uint64_t fb = first; !ret && fb < first + nb;) {
		struct ext x;

		ret = ext_at(fs, ino, fb, &x);
		if (ret || (x.e.flags & FS_EXTENT_F_UNWRITTEN)) {
			ret = -EAGAIN;
			break;
		}
		for (; fb < first + nb && fb < x.start + x.e.nblocks; fb++)
			lbas[fb - first] = x.e.lba + (fb - x.start);
	}
	unlock(fs);
	if (!ret) {
		for (unsigned i = 0; i < nb; i++)
			blks[i] = (uint8_t *)buf + (size_t)i * FS_BLOCK_BYTES;
		ret = fs_store_write_blocks(fs->st, lbas, blks, nb);
	}
	pthread_rwlock_unlock(&fs->data_rw);
	return ret;
}

ssize_t fs_vfs_write(struct fs *fs, uint64_t ino, uint64_t off, size_t size,
		     const void *buf, int *grew)
{
	uint64_t blocks = 0;
	struct fs_txn_res r = { .updates = 1 };
	struct wctx w = { 0 };
	struct node *n;
	struct op o;
	int ret;

	if (size == 0)
		return 0;
	if (off >= FS_FILE_MAX || size > FS_FILE_MAX - off)
		return -EFBIG;
	if (grew)
		*grew = 0;
	ret = overwrite(fs, ino, off, size, buf);
	if (ret != -EAGAIN)
		return ret ? ret : (ssize_t)size;
	w.blk = malloc(FS_BLOCK_BYTES);
	if (!w.blk)
		return -ENOMEM;
	ret = op_begin(&o, fs, 0);
	if (ret) {
		free(w.blk);
		return ret;
	}
	ret = node_get(fs, ino, &n);
	if (!ret && !is_reg(&n->in))
		ret = is_dir(&n->in) ? -EISDIR : -EINVAL;
	if (!ret) {
		w.o = &o;
		w.n = n;
		w.off = off;
		w.end = off + size;
		w.buf = buf;
		blocks = n->in.blocks;
		ret = write_range(&w);
		if (grew)
			*grew = n->in.blocks != blocks;
	}
	if (!ret)
		ret = op_reserve(&o, &r);
	if (!ret) {
		if (w.end > n->in.size)
			n->in.size = w.end;
		now_time(&n->in.mtime);
		n->in.ctime = n->in.mtime;
		ret = inode_store(&o, n, 0);
	}
	ret = op_end(&o, ret);
	free(w.blk);
	return ret ? ret : (ssize_t)(w.end - off);
}

int fs_vfs_fsync(struct fs *fs, int datasync)
{
	uint64_t ticket;
	int ret, flush;

	lock(fs);
	ret = fs_store_error(fs->st);
	flush = fs->dirty && (!datasync || times_due(fs));
	unlock(fs);
	if (!ret && flush) {
		ret = times_flush(fs);
		if (ret == -ENOSPC && datasync) /* times only: they wait */
			ret = 0;
	}
	lock(fs);
	if (!ret)
		ret = fs_store_error(fs->st);
	ticket = fs_store_ticket(fs->st);
	unlock(fs);
	if (ret)
		return ret;
	return fs_store_wait(fs->st, ticket);
}

/* ---- readdir ---- */

struct rd {
	struct fs *fs;
	int plus;
	fs_dir_fill fill;
	void *arg;
	int ret; /* error inside */
	unsigned given; /* entries accepted */
};

static int rd_fn(void *arg, const struct fs_bt_key *k, const void *val,
		 size_t len)
{
	struct rd *r = arg;
	struct fs_dirent de;
	struct stat st;
	struct node *n = NULL;
	int ret = fs_dirent_decode(k, val, len, NULL, &de);

	if (ret)
		return ret;
	memset(&st, 0, sizeof(st));
	st.st_ino = de.ino;
	st.st_mode = (mode_t)de.type << 12;
	if (r->plus) {
		ret = node_get(r->fs, de.ino, &n);
		if (ret)
			return ret;
		fill_stat(n, &st);
	}
	if (r->fill(r->arg, de.name, de.ino, de.type, k->offset + 1, &st)) {
		if (n)
			node_unused(r->fs, n);
		return 1;
	}
	if (n)
		n->nlookup++;
	r->given++;
	return 0;
}

int fs_vfs_readdir(struct fs *fs, uint64_t dir, uint64_t off, int plus,
		   fs_dir_fill fill, void *arg)
{
	struct rd r = { fs, plus, fill, arg, 0, 0 };
	struct fs_bt_key lo, hi;
	struct stat st;
	struct node *d;
	int ret;

	lock(fs);
	ret = node_get(fs, dir, &d);
	if (!ret && !is_dir(&d->in))
		ret = -ENOTDIR;
	if (ret)
		goto out;
	if (off == 0) {
		fill_stat(d, &st);
		if (fill(arg, ".", dir, DT_DIR, 1, &st))
			goto out;
		off = 1;
	}
	if (off == 1) {
		struct node *p;

		memset(&st, 0, sizeof(st));
		st.st_ino = d->in.parent ? d->in.parent : dir;
		st.st_mode = S_IFDIR;
		if (plus && !node_get(fs, st.st_ino, &p))
			fill_stat(p, &st);
		if (fill(arg, "..", st.st_ino, DT_DIR, FS_DIRINDEX_FIRST, &st))
			goto out;
		off = FS_DIRINDEX_FIRST;
	}
	lo = fs_key_dirindex(dir, off);
	hi = fs_key_dirindex(dir, UINT64_MAX);
	ret = fs_bt_iterate(fs->bt, &lo, &hi, rd_fn, &r);
	if (ret > 0)
		ret = 0;
out:
	unlock(fs);
	return ret;
}

/* ---- statfs ---- */

int fs_vfs_statfs(struct fs *fs, struct statvfs *sv)
{
	struct fs_alloc_statfs a;
	uint64_t files;

	lock(fs);
	fs_alloc_statfs(fs_store_alloc(fs->st), &a);
	files = fs_store_sb(fs->st)->next_ino;
	unlock(fs);
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = FS_BLOCK_BYTES;
	sv->f_frsize = FS_BLOCK_BYTES;
	sv->f_blocks = a.total_blocks;
	/* Not the metadata reserve: only freeing operations may use it. */
	sv->f_bfree =
		a.free_blocks > a.reserved_blocks + a.meta_reserve_blocks ?
			a.free_blocks - a.reserved_blocks -
				a.meta_reserve_blocks :
			0;
	sv->f_bavail = sv->f_bfree;
	/* Inodes cost no fixed table: one per free block is the bound. */
	sv->f_files = files + sv->f_bfree;
	sv->f_ffree = sv->f_bfree;
	sv->f_favail = sv->f_bfree;
	sv->f_namemax = FS_NAME_MAX;
	return 0;
}

/* ---- xattrs ---- */

struct xfind {
	struct fs *fs;
	const char *name;
	size_t len;
	uint64_t off; /* key offset found, or a free one */
	uint8_t used[(FS_HASH_COLL_MASK + 1) / 8];
	uint8_t val[FS_BT_MAX_VALUE_BYTES]; /* the item */
	size_t val_len;
	struct fs_xattr x; /* decoded, into val */
};

static int xfind_fn(void *arg, const struct fs_bt_key *k, const void *val,
		    size_t len)
{
	struct xfind *f = arg;
	struct fs_xattr x;
	unsigned c = (unsigned)(k->offset & FS_HASH_COLL_MASK);
	int ret = fs_xattr_decode(k, val, len, f->fs->hash_key, &x);

	if (ret)
		return ret;
	f->used[c / 8] |= (uint8_t)(1u << (c % 8));
	if (x.name_len != f->len || memcmp(x.name, f->name, f->len))
		return 0;
	memcpy(f->val, val, len);
	f->val_len = len;
	f->off = k->offset;
	return fs_xattr_decode(k, f->val, len, f->fs->hash_key, &f->x) ?: 1;
}

static int xattr_find(struct fs *fs, uint64_t ino, const char *name,
		      struct xfind *f)
{
	int ret;

	memset(f->used, 0, sizeof(f->used));
	f->fs = fs;
	f->name = name;
	f->len = strlen(name);
	ret = hashed_find(fs, ino, FS_ITEM_XATTR, name, f->len, xfind_fn, f,
			  f->used, &f->off);
	return ret == -ENOENT ? -ENODATA : ret;
}

/* Namespaces kept (as ext4 without ACLs: system.* is not supported). */
static int xattr_name_ok(const char *name)
{
	static const char *const ns[] = { "user.", "trusted.", "security." };
	size_t len = strnlen(name, FS_XATTR_NAME_MAX + 1);

	if (len == 0 || len > FS_XATTR_NAME_MAX)
		return -ERANGE;
	for (unsigned i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
		if (!strncmp(name, ns[i], strlen(ns[i])))
			return len > strlen(ns[i]) ? 0 : -EINVAL;
	return -EOPNOTSUPP;
}

int fs_vfs_setxattr(struct fs *fs, uint64_t ino, const char *name,
		    const void *value, size_t size, int flags)
{
	struct fs_txn_res r = { .inserts = 1, .updates = 2 };
	struct xfind *f;
	struct node *n;
	struct fs_bt_key k;
	uint8_t *buf;
	struct op o;
	int ret = xattr_name_ok(name);

	if (ret)
		return ret;
	ret = fs_xattr_check(name, strlen(name), size);
	if (ret)
		return ret == -E2BIG ? -ENOSPC : ret;
	f = malloc(sizeof(*f));
	buf = malloc(FS_BT_MAX_VALUE_BYTES);
	if (!f || !buf) {
		free(f);
		free(buf);
		return -ENOMEM;
	}
	ret = op_begin(&o, fs, 0);
	if (ret)
		goto out;
	ret = node_get(fs, ino, &n);
	if (!ret)
		ret = xattr_find(fs, ino, name, f);
	if (!ret && (flags & XATTR_CREATE))
		ret = -EEXIST;
	else if (ret == -ENODATA && !(flags & XATTR_REPLACE))
		ret = 1; /* new */
	if (ret >= 0)
		ret = op_reserve(&o, &r) ?: ret;
	if (ret >= 0) {
		size_t len =
			fs_xattr_encode(name, strlen(name), value, size, buf);

		k = fs_key_xattr(ino, f->off);
		ret = ret == 1 ? fs_txn_insert(o.t, &k, buf, len) :
				 fs_txn_update(o.t, &k, buf, len);
	}
	if (!ret) {
		now_time(&n->in.ctime);
		ret = inode_store(&o, n, 0);
	}
	ret = op_end(&o, ret);
out:
	free(f);
	free(buf);
	return ret;
}

ssize_t fs_vfs_getxattr(struct fs *fs, uint64_t ino, const char *name,
			void *value, size_t size)
{
	struct xfind *f = malloc(sizeof(*f));
	struct node *n;
	ssize_t ret = xattr_name_ok(name);

	if (!f)
		return -ENOMEM;
	if (ret == -EINVAL || ret == -ERANGE)
		ret = ret == -ERANGE ? -ERANGE : -ENODATA;
	lock(fs);
	if (!ret)
		ret = node_get(fs, ino, &n);
	if (!ret)
		ret = xattr_find(fs, ino, name, f);
	if (ret == -ENOSPC)
		ret = -ENODATA;
	if (!ret) {
		ret = f->x.value_len;
		if (size && size < f->x.value_len)
			ret = -ERANGE;
		else if (size)
			memcpy(value, f->x.value, f->x.value_len);
	}
	unlock(fs);
	free(f);
	return ret;
}

struct xlist {
	char *list;
	size_t size, len;
};

static int xlist_fn(void *arg, const struct fs_bt_key *k, const void *val,
		    size_t len)
{
	struct xlist *l = arg;
	struct fs_xattr x;
	int ret = fs_xattr_decode(k, val, len, NULL, &x);

	if (ret)
		return ret;
	if (l->size && l->len + x.name_len + 1 <= l->size) {
		memcpy(l->list + l->len, x.name, x.name_len);
		l->list[l->len + x.name_len] = '\0';
	}
	l->len += x.name_len + 1u;
	return 0;
}

ssize_t fs_vfs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size)
{
	struct fs_bt_key lo = fs_key_xattr(ino, 0);
	struct fs_bt_key hi = fs_key_xattr(ino, UINT64_MAX);
	struct xlist l = { list, size, 0 };
	struct node *n;
	int ret;

	lock(fs);
	ret = node_get(fs, ino, &n);
	if (!ret)
		ret = fs_bt_iterate(fs->bt, &lo, &hi, xlist_fn, &l);
	unlock(fs);
	if (ret < 0)
		return ret;
	if (size && l.len > size)
		return -ERANGE;
	return (ssize_t)l.len;
}

int fs_vfs_removexattr(struct fs *fs, uint64_t ino, const char *name)
{
	struct fs_txn_res r = { .deletes = 1, .updates = 1, .freeing = 1 };
	struct xfind *f = malloc(sizeof(*f));
	struct fs_bt_key k;
	struct node *n;
	struct op o;
	int ret = xattr_name_ok(name);

	if (!f)
		return -ENOMEM;
	if (ret == -EINVAL)
		ret = -ENODATA;
	if (!ret)
		ret = op_begin(&o, fs, 0);
	if (ret) {
		free(f);
		return ret;
	}
	ret = node_get(fs, ino, &n);
	if (!ret)
		ret = xattr_find(fs, ino, name, f);
	if (ret == -ENOSPC)
		ret = -ENODATA;
	if (!ret)
		ret = op_reserve(&o, &r);
	if (!ret) {
		k = fs_key_xattr(ino, f->off);
		ret = fs_txn_delete(o.t, &k);
	}
	if (!ret) {
		now_time(&n->in.ctime);
		ret = inode_store(&o, n, 0);
	}
	free(f);
	return op_end(&o, ret);
}

/* ---- fallocate, lseek ---- */

struct mapped {
	uint64_t fa, fb; /* range */
	uint64_t n; /* blocks of it mapped */
	uint64_t extents; /* extents in it */
};

static int mapped_fn(void *arg, const struct fs_bt_key *k, const void *val,
		     size_t len)
{
	struct mapped *m = arg;
	struct fs_extent e;
	uint64_t a, b;
	int ret = fs_extent_decode(k, val, len, &e);

	if (ret)
		return ret;
	a = k->offset > m->fa ? k->offset : m->fa;
	b = k->offset + e.nblocks < m->fb ? k->offset + e.nblocks : m->fb;
	if (b > a) {
		m->n += b - a;
		m->extents++;
	}
	return 0;
}

/* A step of prealloc: one extent inserted, the inode updated. */
static const struct fs_txn_res prealloc_step = {
	.inserts = 1,
	.updates = 1,
	.allocs = 1,
};

/*
 * A preallocation that cannot complete should fail before it starts
 * (ENOSPC with nothing allocated): the holes of [fa, fb), and the node
 * blocks its steps set aside, must fit what the volume can still grow
 * to outside the metadata reserve.  Steps: one per FS_WINDOW_BLOCKS of
 * the holes plus one per hole (at most one more than the extents in the
 * range), and the inode's update at the end.  A step's pool is counted
 * whole for each, though a transaction reuses what the splits did not
 * take: the margin covers fragmented free space (shorter runs, more
 * steps).  When the estimate is wrong all the same, prealloc_undo gives
 * the space back.
 */
static int prealloc_fits(struct fs *fs, uint64_t ino, uint64_t fa, uint64_t fb)
{
	struct fs_bt_key lo = fs_key_extent(ino, 0);
	struct fs_bt_key hi = fs_key_extent(ino, fb - 1);
	struct mapped m = { fa, fb, 0, 0 };
	struct fs_alloc_statfs a;
	uint64_t avail, holes, steps, held;
	int ret = fs_bt_iterate(fs->bt, &lo, &hi, mapped_fn, &m);

	if (ret < 0)
		return ret;
	fs_alloc_statfs(fs_store_alloc(fs->st), &a);
	held = a.reserved_blocks + a.meta_reserve_blocks;
	avail = a.max_free_blocks > held ? a.max_free_blocks - held : 0;
	holes = fb - fa - m.n;
	if (!holes)
		return 0;
	steps = holes / FS_WINDOW_BLOCKS + (m.extents + 1) + 1;
	held = steps * fs_txn_pool_blocks(fs->st, &prealloc_step);
	return holes <= avail && held <= avail - holes ? 0 : -ENOSPC;
}

/* File block ranges a prealloc mapped, to unmap them if it fails. */
struct added {
	uint64_t (*r)[2]; /* [start, end) each, in order */
	size_t n, cap;
};

/* Room for one more range, made before the allocation it notes. */
static int added_room(struct added *ad)
{
	void *p;

	if (ad->n < ad->cap)
		return 0;
	p = realloc(ad->r, (ad->cap ? 2 * ad->cap : 16) * sizeof(*ad->r));
	if (!p)
		return -ENOMEM;
	ad->r = p;
	ad->cap = ad->cap ? 2 * ad->cap : 16;
	return 0;
}

/* [fa, fa + len) was mapped; merged with the last range if it follows. */
static void added_put(struct added *ad, uint64_t fa, uint64_t len)
{
	if (ad->n && ad->r[ad->n - 1][1] == fa) {
		ad->r[ad->n - 1][1] += len;
		return;
	}
	ad->r[ad->n][0] = fa;
	ad->r[ad->n++][1] = fa + len;
}

/* Map every hole of [fa, fb) to new unwritten extents, noted in ad. */
static int prealloc(struct op *o, struct node *n, uint64_t fa, uint64_t fb,
		    struct added *ad)
{
	struct fs *fs = o->fs;

	while (fa < fb) {
		struct fs_txn_res r = prealloc_step;
		uint64_t stop, want;
		uint64_t lba;
		uint32_t got;
		struct ext x;
		int ret = ext_at(fs, n->ino, fa, &x);

		if (!ret) {
			fa = x.start + x.e.nblocks;
			continue;
		}
		if (ret != -ENOENT)
			return ret;
		ret = ext_next_start(fs, n->ino, fa, &stop);
		if (ret)
			return ret;
		want = (stop < fb ? stop : fb) - fa;
		if (want > FS_WINDOW_BLOCKS)
			want = FS_WINDOW_BLOCKS;
		r.alloc_blocks = (uint32_t)want;
		ret = added_room(ad);
		if (!ret)
			ret = op_reserve(o, &r);
		if (!ret)
			ret = fs_txn_alloc(o->t, 0, (uint32_t)want, &lba, &got);
		if (!ret) {
			ret = ext_put(o, n->ino, fa, lba, got,
				      FS_EXTENT_F_UNWRITTEN, 1);
			if (ret) /* the tree is as it was */
				fs_txn_unalloc(o->t, lba, got);
		}
		if (ret)
			return ret;
		added_put(ad, fa, got);
		n->in.blocks += got;
		ret = inode_store(o, n, 0);
		if (ret)
			return ret;
		fa += got;
	}
	return 0;
}

/*
 * A failed preallocation gives back what it mapped (sixfold(8): a
 * fallocate that cannot get all its space allocates nothing): the
 * extents of ad are unwritten and lie in holes only this call filled,
 * under the lock all along.  Unmapping frees space, so it may use the
 * metadata reserve.  Its own failure is logged; the caller's error
 * stands.
 */
static void prealloc_undo(struct op *o, struct node *n, struct added *ad)
{
	int ret = 0;

	while (!ret && ad->n) {
		ad->n--;
		ret = unmap_range(o, n, ad->r[ad->n][0], ad->r[ad->n][1]);
	}
	if (ret)
		vol_log(VOL_LOG_ERR,
			"inode %llu: a failed fallocate could not give back "
			"its blocks: %s (they stay allocated to the file)",
			(unsigned long long)n->ino, strerror(-ret));
}

/* Zero bytes [from, to) inside one written block of n, if mapped. */
static int zero_part(struct op *o, struct node *n, uint64_t from, uint64_t to)
{
	struct fs_txn_res r = { .data_blocks = 1, .freeing = 1 };
	uint64_t fb = from / FS_BLOCK_BYTES;
	struct ext x;
	uint8_t *blk;
	uint64_t lba;
	int ret = ext_at(o->fs, n->ino, fb, &x);

	if (ret == -ENOENT || (!ret && (x.e.flags & FS_EXTENT_F_UNWRITTEN)))
		return 0;
	if (!ret)
		ret = op_reserve(o, &r);
	if (ret)
		return ret;
	blk = malloc(FS_BLOCK_BYTES);
	if (!blk)
		return -ENOMEM;
	lba = x.e.lba + (fb - x.start);
	ret = fs_store_read(o->fs->st, lba, blk);
	if (!ret) {
		memset(blk + from % FS_BLOCK_BYTES, 0, to - from);
		ret = fs_txn_write(o->t, lba, blk);
	}
	free(blk);
	return ret;
}

static int punch(struct op *o, struct node *n, uint64_t off, uint64_t end)
{
	uint64_t fa = (off + FS_BLOCK_BYTES - 1) / FS_BLOCK_BYTES;
	uint64_t fb = end / FS_BLOCK_BYTES;
	int ret = 0;

	if (end > n->in.size)
		end = n->in.size > off ? n->in.size : off;
	if (fa > fb) { /* inside one block */
		return end > off ? zero_part(o, n, off, end) : 0;
	}
	if (off % FS_BLOCK_BYTES)
		ret = zero_part(o, n, off,
				(fa * FS_BLOCK_BYTES < end ?
					 fa * FS_BLOCK_BYTES :
					 end));
	if (!ret && end % FS_BLOCK_BYTES && fb * FS_BLOCK_BYTES >= off &&
	    end > fb * FS_BLOCK_BYTES)
		ret = zero_part(o, n, fb * FS_BLOCK_BYTES, end);
	if (!ret && fb > fa)
		ret = unmap_range(o, n, fa, fb);
	return ret;
}

int fs_vfs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off,
		     uint64_t len)
{
	struct fs_txn_res r = { .updates = 1 };
	int punching = mode & FALLOC_FL_PUNCH_HOLE;
	struct added ad = { 0 };
	struct node *n;
	struct op o;
	int ret;

	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
		return -EOPNOTSUPP;
	if (punching && !(mode & FALLOC_FL_KEEP_SIZE))
		return -EOPNOTSUPP;
	if (len == 0)
		return -EINVAL;
	if (off >= FS_FILE_MAX || len > FS_FILE_MAX - off)
		return -EFBIG;
	ret = op_begin(&o, fs, punching);
	if (ret)
		return ret;
	ret = node_get(fs, ino, &n);
	if (!ret && !is_reg(&n->in))
		ret = is_dir(&n->in) ? -EISDIR : -ENODEV;
	if (!ret && punching)
		ret = punch(&o, n, off, off + len);
	else if (!ret) {
		uint64_t fa = off / FS_BLOCK_BYTES;
		uint64_t fb = (off + len + FS_BLOCK_BYTES - 1) / FS_BLOCK_BYTES;

		ret = prealloc_fits(fs, ino, fa, fb);
		if (!ret)
			ret = prealloc(&o, n, fa, fb, &ad);
	}
	r.freeing = punching != 0;
	if (!ret)
		ret = op_reserve(&o, &r);
	if (ret && ad.n)
		prealloc_undo(&o, n, &ad);
	free(ad.r);
	if (!ret) {
		if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > n->in.size) {
			n->in.size = off + len;
			now_time(&n->in.mtime);
		}
		now_time(&n->in.ctime);
		if (punching)
			n->in.mtime = n->in.ctime;
		ret = inode_store(&o, n, 0);
	}
	return op_end(&o, ret);
}

int64_t fs_vfs_lseek(struct fs *fs, uint64_t ino, uint64_t off, int whence)
{
	struct node *n;
	int64_t res = -ENXIO;
	int ret;

	lock(fs);
	ret = node_get(fs, ino, &n);
	if (ret || off >= n->in.size) {
		unlock(fs);
		return ret ? ret : -ENXIO;
	}
	for (uint64_t fb = off / FS_BLOCK_BYTES;;) {
		struct ext x;
		uint64_t stop;
		int data;

		ret = ext_at(fs, ino, fb, &x);
		if (ret == -ENOENT) {
			ret = ext_next_start(fs, ino, fb, &stop);
			data = 0;
		} else {
			stop = x.start + x.e.nblocks;
			data = !(x.e.flags & FS_EXTENT_F_UNWRITTEN);
		}
		if (ret) {
			res = ret;
			break;
		}
		if (data == (whence == SEEK_DATA)) {
			uint64_t at = fb * FS_BLOCK_BYTES;

			res = (int64_t)(at > off ? at : off);
			break;
		}
		if (stop * FS_BLOCK_BYTES >= n->in.size ||
		    stop >= FS_MAX_FILE_BLOCKS) {
			/* past EOF: a hole there, no data */
			res = whence == SEEK_HOLE ? (int64_t)n->in.size :
						    -ENXIO;
			break;
		}
		fb = stop;
	}
	if (whence == SEEK_HOLE && res > (int64_t)n->in.size)
		res = (int64_t)n->in.size;
	unlock(fs);
	return res;
}

/* ---- which file holds a block (repair's reports) ---- */

#define SCAN_CHUNK 1024u /* items looked at per hold of the lock */
#define NAME_DEPTH_MAX 2048 /* directory levels (a loop is damage) */

/*
 * A scan for one item: the EXTENT that maps block `want` (its owner to
 * found), or the DIRENT that names inode `want` (its directory to found,
 * its name to name).  It gives up the lock every SCAN_CHUNK items, so a
 * scan of a big tree does not stop the filesystem.
 */
struct scan {
	uint64_t want; /* LBA, or inode number */
	int dirents; /* 0: look for an EXTENT, 1: for a DIRENT */
	unsigned seen; /* items in this chunk */
	struct fs_bt_key last; /* last key looked at */
	uint64_t found; /* extent: its inode; dirent: its directory */
	char name[FS_NAME_MAX + 1]; /* dirent: the name */
};

static int scan_fn(void *arg, const struct fs_bt_key *k, const void *val,
		   size_t len)
{
	struct scan *s = arg;
	struct fs_extent e;
	struct fs_dirent de;
	int ret = 0;

	s->last = *k;
	if (!s->dirents && k->type == FS_ITEM_EXTENT) {
		ret = fs_extent_decode(k, val, len, &e);
		if (!ret && s->want >= e.lba && s->want - e.lba < e.nblocks) {
			s->found = k->objectid;
			return 1;
		}
	} else if (s->dirents && k->type == FS_ITEM_DIRENT) {
		ret = fs_dirent_decode(k, val, len, NULL, &de);
		if (!ret && de.ino == s->want) {
			s->found = k->objectid;
			memcpy(s->name, de.name, (size_t)de.name_len + 1);
			return 1;
		}
	}
	if (ret)
		return ret;
	return ++s->seen >= SCAN_CHUNK ? 2 : 0;
}

/* The key right after k; 0 if k is the last key there can be. */
static int key_after(struct fs_bt_key *k)
{
	if (k->offset != UINT64_MAX) {
		k->offset++;
		return 1;
	}
	k->offset = 0;
	if (k->type != UINT8_MAX) {
		k->type++;
		return 1;
	}
	k->type = 0;
	return k->objectid++ != UINT64_MAX;
}

/* Scan [lo, hi] for s's item: 0 (found), -ENOENT or -errno. */
static int scan_tree(struct fs *fs, struct scan *s, struct fs_bt_key lo,
		     struct fs_bt_key hi)
{
	int ret;

	for (;;) {
		s->seen = 0;
		lock(fs);
		ret = fs_bt_iterate(fs->bt, &lo, &hi, scan_fn, s);
		unlock(fs);
		if (ret == 1)
			return 0;
		if (ret != 2)
			return ret ? ret : -ENOENT;
		lo = s->last;
		if (!key_after(&lo))
			return -ENOENT;
	}
}

/* Put "/" name in front of path[*at..]. */
static int path_prepend(char *path, size_t *at, const char *name)
{
	size_t n = strlen(name);

	if (n + 1 > *at)
		return -ENAMETOOLONG;
	*at -= n;
	memcpy(path + *at, name, n);
	path[--*at] = '/';
	return 0;
}

int fs_vfs_name_of_lba(struct fs *fs, uint64_t lba, char *buf, size_t len)
{
	const struct fs_bt_key all_lo = fs_key(0, 0, 0);
	const struct fs_bt_key all_hi =
		fs_key(UINT64_MAX, UINT8_MAX, UINT64_MAX);
	struct scan s = { .want = lba };
	char path[4096];
	size_t at = sizeof(path) - 1;
	struct fs_inode in;
	int ret;

	ret = scan_tree(fs, &s, all_lo, all_hi);
	if (ret)
		return ret;
	/* Any name of the file will do: the first entry found. */
	path[at] = '\0';
	s.dirents = 1;
	s.want = s.found;
	ret = scan_tree(fs, &s, all_lo, all_hi);
	for (int depth = 0; !ret; depth++) {
		ret = path_prepend(path, &at, s.name);
		if (ret || s.found == FS_ROOT_INO)
			break;
		if (depth > NAME_DEPTH_MAX)
			return -ELOOP;
		/* The directory's own name, in its parent. */
		lock(fs);
		ret = inode_read(fs, s.found, &in);
		unlock(fs);
		if (ret)
			break;
		s.want = s.found;
		ret = scan_tree(fs, &s, fs_key_dirent(in.parent, 0),
				fs_key_dirent(in.parent, UINT64_MAX));
	}
	if (ret)
		return ret;
	if (sizeof(path) - at > len)
		return -ENAMETOOLONG;
	memcpy(buf, path + at, sizeof(path) - at);
	return 0;
}
