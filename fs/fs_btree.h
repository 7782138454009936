/*
 * fs_btree.h - the metadata B+tree of the filesystem (fs/).
 *
 * One on-volume B+tree of 4 KiB nodes holds all filesystem metadata
 * (DESIGN.md 3): items keyed by (objectid, type, offset), compared in
 * that order, each with a value of 0..FS_BT_MAX_VALUE_BYTES bytes.  The
 * node format is in fs_format.h; the design notes (invariants, node
 * states, rebalance policy) are at the top of fs_btree.c.
 *
 * Storage: the tree never calls the volume.  It reads, allocates and
 * frees node blocks through struct fs_bt_ops, keeps a bounded cache of
 * nodes, and hands its changed ("dirty") nodes to the caller with
 * fs_bt_flush(), which the caller writes into one volume transaction
 * together with everything else of the same filesystem operation; after
 * the transaction commits the caller says so with fs_bt_written().
 *
 * Nodes are updated in place (the volume transaction makes a batch of
 * block writes atomic), so node LBAs are stable except that a split
 * allocates new nodes and a merge frees one.  The root moves only when
 * the tree grows or shrinks a level: fs_bt_root() (and the optional
 * set_root op, called at once) gives the new root, which the caller
 * stores in the same transaction as the nodes.
 *
 * Atomicity: an update does every read and allocation it needs before it
 * changes anything, so when it fails (any errno below) the tree, its cache
 * and its dirty set are exactly as they were.
 *
 * Threads: a tree is not thread-safe.  Every call on one struct fs_bt,
 * lookups included (they move nodes in the cache), must be serialised by
 * the caller (the filesystem's metadata lock).  The ops are called from
 * the calling thread, synchronously; read may block.
 *
 * Errors (negative errno):
 *   -ENOENT   no such key (lookup, update, delete, search, cursor end)
 *   -EEXIST   insert of a key that is present
 *   -EINVAL   bad argument (value too long, bad cfg, gen going back)
 *   -ENOMEM   out of memory
 *   -ENOSPC   the allocator has no block (or the tree is 8 levels high)
 *   -EUCLEAN  a node is damaged (the log names the LBA and the rule)
 *   -EIO      and any other errno the read op returns, passed up unchanged
 */
#ifndef SIXFOLD_FS_BTREE_H
#define SIXFOLD_FS_BTREE_H

#include <stddef.h>
#include <stdint.h>

#include "fs/fs_format.h"

#define FS_BT_WARN_UNUSED __attribute__((warn_unused_result))

/*
 * Default node cache: 1024 clean nodes (4 MiB).  Clean, unpinned nodes
 * past it are evicted least recently used first; dirty nodes come on top
 * until fs_bt_written.  See fs_bt_cfg.cache_nodes.
 */
#define FS_BT_CACHE_NODES 1024

/*
 * Most nodes one insert, update or delete dirties or frees: a leaf split
 * three ways (3), two per internal level (2 x 7), a new root (1).  A
 * caller sizing a volume transaction (VOL_TXN_MAX_RECS) counts this much
 * per tree update still to come.
 */
#define FS_BT_OP_MAX_NODES (3 + 2 * (FS_BT_MAX_LEVELS - 1) + 1)

/* Smallest fanout a cfg may ask for (tests use it to grow tall trees). */
#define FS_BT_MIN_FANOUT 8

struct fs_bt;

/*
 * Storage of node blocks.  ctx is fs_bt_cfg.ctx.
 *   read      fill buf (FS_BT_NODE_BYTES) with block lba as last committed
 *             (or written by a commit the caller knows is durable);
 *             0 or -errno.  Never called for a node the cache holds dirty.
 *   alloc     a free block for a new node: 0 and *lba, or -ENOSPC / -errno.
 *             The block must not hold a live node of this tree.
 *   free      a node is gone (a merge or a root shrink, or an allocation
 *             the tree did not use after all).  Cannot fail: the caller
 *             queues it; per DESIGN 2 the LBA must not be reused before
 *             the transaction that freed it is durable.  A node freed
 *             before it was ever flushed need not be written.
 *   dirty     optional: node lba differs from storage from now on and
 *             will come out of the next fs_bt_flush (once per node until
 *             fs_bt_written).
 *   set_root  optional: the root moved to lba (tree grew or shrank).
 */
struct fs_bt_ops {
	int (*read)(void *ctx, uint64_t lba, void *buf);
	int (*alloc)(void *ctx, uint64_t *lba);
	void (*free)(void *ctx, uint64_t lba);
	void (*dirty)(void *ctx, uint64_t lba);
	void (*set_root)(void *ctx, uint64_t lba);
};

/* How to open or create a tree.  Copied: the caller may reuse it. */
struct fs_bt_cfg {
	const struct fs_bt_ops *ops; /* storage, required */
	void *ctx; /* passed to every op */
	uint64_t owner; /* tree id stored in every node (FS_BT_OWNER_*) */
	uint8_t fsid[FS_BT_FSID_BYTES]; /* filesystem UUID in every node */
	uint64_t gen; /* newest committed generation: nodes claiming a
		       * newer one are refused (rule N7) */
	uint32_t cache_nodes; /* clean nodes cached, 0: FS_BT_CACHE_NODES */
	uint32_t fanout; /* children per internal node, 0: the most a node
			  * holds (161); else FS_BT_MIN_FANOUT..161 */
};

/*
 * Create an empty tree: allocate a root leaf (dirty, to be flushed) and
 * open it.  Its LBA is fs_bt_root(); set_root is called with it too.
 * -EINVAL, -ENOMEM, -ENOSPC and alloc's errors.
 */
int fs_bt_create(const struct fs_bt_cfg *cfg,
		 struct fs_bt **out) FS_BT_WARN_UNUSED;

/* Open the tree whose root is at root: reads and verifies the root. */
int fs_bt_open(const struct fs_bt_cfg *cfg, uint64_t root,
	       struct fs_bt **out) FS_BT_WARN_UNUSED;

/*
 * Free the tree's memory.  Dirty nodes not flushed and committed are
 * dropped: flush and commit first.  No op is called.  NULL is a no-op.
 */
void fs_bt_close(struct fs_bt *bt);

/* Current root LBA and height (1: the root is a leaf). */
uint64_t fs_bt_root(const struct fs_bt *bt);
unsigned fs_bt_height(const struct fs_bt *bt);

/*
 * Value of key: copies min(length, cap) bytes to val (val may be NULL
 * when cap is 0) and returns the full length (so a short buffer shows).
 * -ENOENT if absent.
 */
int fs_bt_lookup(struct fs_bt *bt, const struct fs_bt_key *key, void *val,
		 size_t cap) FS_BT_WARN_UNUSED;

/* Search modes of fs_bt_search. */
enum fs_bt_mode {
	FS_BT_EQ = 0, /* the key itself */
	FS_BT_GE = 1, /* smallest key >= key */
	FS_BT_GT = 2, /* smallest key > key */
	FS_BT_LE = 3, /* largest key <= key (extent lookup) */
	FS_BT_LT = 4, /* largest key < key */
};

/*
 * Find the item nearest key in mode: its key to *found (may be NULL), its
 * value as fs_bt_lookup.  Returns the value length, -ENOENT if none.
 */
int fs_bt_search(struct fs_bt *bt, const struct fs_bt_key *key,
		 enum fs_bt_mode mode, struct fs_bt_key *found, void *val,
		 size_t cap) FS_BT_WARN_UNUSED;

/*
 * Insert key with len bytes of val (len <= FS_BT_MAX_VALUE_BYTES).
 * -EEXIST if present, -EINVAL if len is too big.
 */
int fs_bt_insert(struct fs_bt *bt, const struct fs_bt_key *key, const void *val,
		 size_t len) FS_BT_WARN_UNUSED;

/* Replace key's value (the size may change).  -ENOENT if absent. */
int fs_bt_update(struct fs_bt *bt, const struct fs_bt_key *key, const void *val,
		 size_t len) FS_BT_WARN_UNUSED;

/* Remove key.  -ENOENT if absent. */
int fs_bt_delete(struct fs_bt *bt,
		 const struct fs_bt_key *key) FS_BT_WARN_UNUSED;

/*
 * Cursor over the keys in order.  Caller-owned, holds no reference: it
 * may be dropped at any time, and the tree may be changed between calls
 * (next then continues after the last key it returned).  key is the
 * current item's key; the other fields are private hints.
 */
struct fs_bt_cursor {
	struct fs_bt *bt; /* the tree */
	struct fs_bt_key key; /* key of the current item */
	uint64_t leaf; /* private: LBA of the leaf holding it */
	uint64_t seq; /* private: tree change counter then */
	unsigned slot; /* private: its slot there */
};

/* Position cur at the first key >= start; value and return as lookup. */
int fs_bt_first(struct fs_bt *bt, const struct fs_bt_key *start,
		struct fs_bt_cursor *cur, void *val,
		size_t cap) FS_BT_WARN_UNUSED;

/* Advance to the next key (after a first or next that found one);
 * -ENOENT past the last. */
int fs_bt_next(struct fs_bt_cursor *cur, void *val,
	       size_t cap) FS_BT_WARN_UNUSED;

/*
 * Call fn for every item with lo <= key <= hi, in key order.  val points
 * into the tree and is valid only during the call.  fn may change the
 * tree (iteration then goes on after the key it was given).  fn returns 0
 * to go on, > 0 to stop (fs_bt_iterate returns it), or -errno to fail
 * (returned).  0 when the range is done.
 */
typedef int (*fs_bt_iter_fn)(void *arg, const struct fs_bt_key *key,
			     const void *val, size_t len);
int fs_bt_iterate(struct fs_bt *bt, const struct fs_bt_key *lo,
		  const struct fs_bt_key *hi, fs_bt_iter_fn fn,
		  void *arg) FS_BT_WARN_UNUSED;

/*
 * Hand every dirty node to write(arg, lba, node) for the caller's volume
 * transaction, stamped with generation gen (the commit number of that
 * transaction: >= any gen given before, else -EINVAL) and its CRC; the
 * node bytes are valid only during the call (vol_txn_write copies).
 * Each node is verified first (FS_VERIFY: an encoder bug aborts instead
 * of reaching the disk).  *token identifies this flush for
 * fs_bt_written.  Nodes stay dirty (and in memory) until then.  Returns
 * the number of nodes written, or write's -errno (the caller aborts the
 * transaction; the tree keeps its dirty nodes for another try).
 */
int fs_bt_flush(struct fs_bt *bt, uint64_t gen,
		int (*write)(void *arg, uint64_t lba, const void *node),
		void *arg, uint64_t *token) FS_BT_WARN_UNUSED;

/*
 * The transaction holding the flush that returned token is durable: the
 * nodes it carried that have not changed since become clean (evictable).
 */
void fs_bt_written(struct fs_bt *bt, uint64_t token);

/* Dirty nodes now (what the next flush would write). */
unsigned fs_bt_dirty_count(const struct fs_bt *bt);

/* Shape and cache counters. */
struct fs_bt_stats {
	unsigned height; /* levels; 1: the root is a leaf */
	uint64_t nodes[FS_BT_MAX_LEVELS]; /* nodes per level, [0] leaves */
	uint64_t items; /* items in the leaves */
	uint64_t leaf_bytes; /* leaf body bytes in use (headers + values) */
	uint64_t cached; /* nodes in the cache (dirty ones included) */
	uint64_t dirty; /* dirty nodes */
	uint64_t reads; /* nodes read through ops->read since open */
	uint64_t hits; /* node lookups the cache answered */
	uint64_t evictions; /* clean nodes dropped from the cache */
};

/*
 * Walk the whole tree and verify every invariant of the design notes
 * (fs_btree.c): format rules of each node as it is now, key ranges, equal
 * leaf depth, fill bounds; then the cache's own bookkeeping (asserted).
 * Fills st (may be NULL): every field.  0, -EUCLEAN naming the first
 * broken rule, or a read error.  Every node is read through the cache
 * (so the cache is cold afterwards); memory is bounded by the height.
 * For tests after every batch and for `sixfold fsck`.
 */
int fs_bt_check(struct fs_bt *bt, struct fs_bt_stats *st) FS_BT_WARN_UNUSED;

/* Cache counters only (no walk): height, cached, dirty, reads, ... */
void fs_bt_stats(const struct fs_bt *bt, struct fs_bt_stats *st);

#endif /* SIXFOLD_FS_BTREE_H */
