/*
 * fs_txn.h - the filesystem's persistent state and its transactions (fs/).
 *
 * struct fs_store ties together what the filesystem keeps on the volume:
 * the superblock (LBA 0), the metadata B+tree (fs_btree.h) and the block
 * allocator (fs_alloc.h).  struct fs_txn is one atomic change of it: the
 * B+tree items it inserts, updates and deletes, the blocks it allocates
 * and frees, the data blocks it writes and the superblock all go into ONE
 * volume transaction, which is never split: after any crash the volume
 * holds all of it or none of it.  Design notes (states, invariants, the
 * record budget): fs_txn.c.
 *
 * Budget: a volume transaction holds at most VOL_TXN_MAX_RECS (320)
 * records (block writes and discards).  Before each operation the caller
 * declares what it may do (struct fs_txn_res) with fs_txn_reserve, which
 * refuses with -E2BIG (or -ENOSPC) before anything changes if the worst
 * case would not fit (or the blocks are not free, or the zones have no
 * room for the records: vol_txn_reserve, whose promise then holds for
 * the commit).  fs_txn_cost gives the
 * worst case of a reservation in an empty transaction, to size
 * operations: with a tree of at most 3 levels (about 5 million items) a
 * 1 MiB write (256 data blocks in at most 2 runs, 2 extent inserts and
 * an inode update) costs at most 299 records; removing a file of 4
 * extents (7 deletes, 4 frees, 1 update of its directory) 145.  Bigger
 * operations (a truncate of many extents) are split over transactions.  Several operations may
 * share one transaction (a reservation each), so commits can be grouped.
 *
 * Errors: a commit that fails leaves the in-memory tree ahead of the
 * disk, so the store enters a sticky error state: every later fs_txn_*
 * call, fs_store_check and fs_store_close return the saved error (reads
 * through fs_store_tree still work but may show state the disk never
 * had: the caller fails every request once fs_store_error is non-zero).
 * Reopening the volume shows the state before or after the failed
 * transaction, never part of it.
 *
 * Durability: fs_txn_commit orders the transaction (it is in every later
 * read, and a crash keeps a prefix of the committed transactions) but
 * returns before the zones have it; fs_store_wait(st, ticket) waits until
 * every transaction up to fs_store_ticket() then is durable on W = 4
 * zones (fsync).  fs_store_close waits for everything.
 *
 * Threads: not thread-safe, except fs_store_read, fs_store_wait,
 * fs_store_ticket, fs_store_write_blocks and fs_store_recent_blocks,
 * which any thread may call at any time.  The
 * caller serialises every other call on one store, and every use of
 * fs_store_tree/fs_store_alloc, with its metadata lock.  At most one
 * transaction is open at a time.
 *
 * Errors (negative errno): -E2BIG reservation does not fit, or an
 * operation beyond what was reserved; -ENOSPC no space; -EBUSY a
 * transaction is already open (or one is open at fs_store_check);
 * -EEXIST mkfs over something; -EINVAL bad argument; -ENOMEM; -EUCLEAN
 * damaged metadata; -EIO and others from the volume; -EROFS a read-only
 * volume.
 */
#ifndef SIXFOLD_FS_TXN_H
#define SIXFOLD_FS_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "fs/fs_alloc.h"
#include "fs/fs_btree.h"
#include "fs/fs_items.h"

struct fs_store;
struct fs_txn;

/* How to make a filesystem (fs_store_mkfs).  Zero is the default. */
struct fs_mkfs_opts {
	uint32_t root_mode; /* permission bits of /, 0: 0755 */
	uint32_t root_uid, root_gid; /* owner of / */
	int force; /* format over a volume that holds a filesystem */
};

/* How to open one.  Zero is the default everywhere. */
struct fs_store_opts {
	uint32_t bt_cache_nodes; /* B+tree clean nodes cached */
	uint32_t bt_fanout; /* B+tree fanout (tests grow tall trees) */
	uint32_t alloc_cache_blocks; /* allocator clean blocks cached */
};

/*
 * Make a filesystem on an open, writable volume: discards everything
 * below the volume's capacity, then writes the superblock (random fsid
 * and hash key), an empty tree holding the root directory's inode
 * (FS_ROOT_INO, nlink 2), and the allocator state, in one transaction.
 * -EEXIST if LBA 0 is not zero (a filesystem or other data) and not
 * o->force; -ENOSPC if the volume is too small.
 */
int fs_store_mkfs(struct vol *v, const struct fs_mkfs_opts *o) FS_WARN_UNUSED;

/*
 * Open the filesystem on v (which the caller keeps open until after
 * fs_store_close): read and check the superblock (rules S1..S10, and
 * that its PGs exist on the volume), open the allocator and the tree.
 * o may be NULL.  -EUCLEAN if the superblock or the root node is damaged
 * or belongs elsewhere.
 */
int fs_store_open(struct vol *v, const struct fs_store_opts *o,
		  struct fs_store **out) FS_WARN_UNUSED;

/*
 * Free the store (an open transaction is aborted; nothing is written:
 * commit first).  Returns the sticky error, or 0.  NULL is a no-op.
 */
int fs_store_close(struct fs_store *st);

/* The sticky error (0 if none). */
int fs_store_error(const struct fs_store *st);

/*
 * Wait, holding no lock, while the volume's queue of commits is full
 * (vol_wait_room): a change made after it rarely waits for the zones in
 * its commit, under the filesystem's lock.  0, or the volume's error.
 */
int fs_store_wait_room(struct fs_store *st) FS_WARN_UNUSED;

/* The tree, for lookups, searches, cursors and fs_bt_iterate; all
 * changes go through fs_txn_insert/update/delete. */
struct fs_bt *fs_store_tree(struct fs_store *st);

/* The allocator, for fs_alloc_statfs, fs_alloc_is_used, fs_alloc_check. */
struct fs_alloc *fs_store_alloc(struct fs_store *st);

/*
 * Read block lba as the last committed transaction left it (durable or
 * not): file data, nodes, bitmaps.  A block freed and allocated again
 * must be written before it is read (its discard may not be durable).
 * 0 or vol_read's errors.  Any thread.
 */
int fs_store_read(struct fs_store *st, uint64_t lba, void *buf) FS_WARN_UNUSED;

/* fs_store_read of n consecutive blocks [lba, lba + n) into buf. */
int fs_store_read_run(struct fs_store *st, uint64_t lba, uint32_t n,
		      void *buf) FS_WARN_UNUSED;

/*
 * Overwrite n blocks of file data (lba[i] gets blk[i]) in one volume
 * transaction of their own, committed like fs_txn_commit (ordered now,
 * durable by fs_store_wait, readable through fs_store_read at once).
 * Needs no caller's lock: for data blocks that committed extents already
 * map, which the caller keeps from being freed meanwhile.  n <=
 * VOL_TXN_MAX_RECS.  0 or the volume's error.
 */
int fs_store_write_blocks(struct fs_store *st, const uint64_t *lba,
			  uint8_t *const *blk, unsigned n) FS_WARN_UNUSED;

/* Ticket of the last committed transaction (0: none yet).  Any thread. */
uint64_t fs_store_ticket(const struct fs_store *st);

/*
 * Wait until every transaction up to ticket is durable on W zones: 0, or
 * the volume's error (-EIO: quorum lost).  Any thread, no lock needed, so
 * several waiters share one group commit.
 */
int fs_store_wait(struct fs_store *st, uint64_t ticket) FS_WARN_UNUSED;

/* Blocks kept in memory until durable (for status and tests). */
uint64_t fs_store_recent_blocks(struct fs_store *st);

/* The last committed superblock (fsid, hash_key, gen, crtime, ...). */
const struct fs_sb *fs_store_sb(const struct fs_store *st);

/* What fs_store_check found. */
struct fs_store_check_stats {
	struct fs_bt_stats tree; /* fs_bt_check's */
	struct fs_alloc_check_stats alloc; /* fs_alloc_check's */
	uint64_t nodes; /* B+tree nodes */
	uint64_t extent_blocks; /* blocks the EXTENT items map */
};

/*
 * Check everything (no transaction may be open): the tree (fs_bt_check),
 * the allocator (fs_alloc_check), every item (fs_item_verify), every
 * extent's blocks allocated, and F1: the allocated blocks are exactly the
 * tree's nodes and the extents' blocks (nothing leaked, nothing counted
 * twice).  0, -EUCLEAN naming the first broken rule, the sticky error,
 * -EBUSY, or a read error.  Reads every node and bitmap block.
 */
int fs_store_check(struct fs_store *st,
		   struct fs_store_check_stats *cs) FS_WARN_UNUSED;

/* ---- transactions ---- */

/*
 * What one operation may do, declared before it starts.  Each counter
 * bounds calls of the matching fs_txn_* function until the next
 * fs_txn_reserve or the commit.
 */
struct fs_txn_res {
	uint32_t inserts; /* fs_txn_insert calls */
	uint32_t updates; /* fs_txn_update calls (an insert or a delete
			   * may use one too) */
	uint32_t deletes; /* fs_txn_delete calls */
	uint32_t data_blocks; /* fs_txn_write calls */
	uint32_t allocs; /* fs_txn_alloc calls (one run each) */
	uint32_t alloc_blocks; /* blocks those may return, in all */
	uint32_t frees; /* fs_txn_free calls (runs of at most
			 * FS_WINDOW_BLOCKS blocks) */
	uint32_t freeing; /* 1: the operation frees space (unlink, rmdir,
			   * a rename over a name, truncate, punch, an
			   * inode's end): its blocks may come from the
			   * allocator's metadata reserve (fs_alloc.h) */
};

/* Open a transaction (empty; call fs_txn_reserve before changing). */
int fs_txn_begin(struct fs_store *st, struct fs_txn **out) FS_WARN_UNUSED;

/*
 * Declare the next operation.  Fails, changing nothing, with -E2BIG if
 * the transaction's worst case (what it holds now plus res) could exceed
 * VOL_TXN_MAX_RECS records (commit what is there and retry in a new
 * transaction; -E2BIG in an empty one means the operation is too big and
 * must be split), or -ENOSPC if alloc_blocks (plus blocks for new B+tree
 * nodes) are not free outside the metadata reserve (inside it too with
 * res->freeing), or the zones lack room for the records
 * (vol_txn_reserve).  Unused parts of the previous reservation lapse.
 */
int fs_txn_reserve(struct fs_txn *t,
		   const struct fs_txn_res *res) FS_WARN_UNUSED;

/*
 * Worst-case records of res in an empty transaction on st's tree as it is
 * now (fs_txn_reserve counts the node pool's blocks exactly; this assumes
 * they fit one bitmap window, true unless the volume is badly
 * fragmented).  Compare with VOL_TXN_MAX_RECS to size an operation.
 */
unsigned fs_txn_cost(const struct fs_store *st, const struct fs_txn_res *res);

/*
 * Blocks fs_txn_reserve sets aside for new B+tree nodes (the pool) for
 * res on st's tree as it is now: allocated until the commit gives back
 * those no split took.  For an operation that must know beforehand
 * whether it fits (fallocate).
 */
uint64_t fs_txn_pool_blocks(const struct fs_store *st,
			    const struct fs_txn_res *res);

/*
 * Records t would write if committed now (nodes, allocator blocks,
 * discards, data, superblock): what the budget counts, for a caller that
 * commits early (or a test).
 */
unsigned fs_txn_records(const struct fs_txn *t);

/*
 * B+tree changes, as fs_bt_insert/update/delete (same errors; on any
 * error the tree is unchanged), counted against the reservation
 * (-E2BIG when it is used up).
 */
int fs_txn_insert(struct fs_txn *t, const struct fs_bt_key *key,
		  const void *val, size_t len) FS_WARN_UNUSED;
int fs_txn_update(struct fs_txn *t, const struct fs_bt_key *key,
		  const void *val, size_t len) FS_WARN_UNUSED;
int fs_txn_delete(struct fs_txn *t, const struct fs_bt_key *key) FS_WARN_UNUSED;

/*
 * Allocate a run of 1..want data blocks (fs_alloc_alloc, kind data) out
 * of the reservation: *lba, *n.  -E2BIG when the reservation's allocs or
 * alloc_blocks are used up.  The blocks become allocated on disk with
 * this transaction; if the operation will not reference them after all,
 * give them back with fs_txn_unalloc (they are free again at once).
 */
int fs_txn_alloc(struct fs_txn *t, uint64_t goal, uint32_t want, uint64_t *lba,
		 uint32_t *n) FS_WARN_UNUSED;
void fs_txn_unalloc(struct fs_txn *t, uint64_t lba, uint32_t n);

/*
 * Free a run of at most FS_WINDOW_BLOCKS blocks in one PG's data area:
 * written free and discarded by this transaction, reusable once it has
 * committed.  -EINVAL (bad run), -E2BIG (reservation used up).
 */
int fs_txn_free(struct fs_txn *t, uint64_t lba, uint64_t n) FS_WARN_UNUSED;

/*
 * Write one block of file data (copied at once) at lba, which must be a
 * data block of an opened PG (-EINVAL otherwise: the superblock,
 * descriptors and bitmaps cannot be overwritten this way).
 */
int fs_txn_write(struct fs_txn *t, uint64_t lba,
		 const void *buf) FS_WARN_UNUSED;

/*
 * fs_txn_write of a block this transaction allocated (or found
 * unwritten, as fallocate left it): nothing committed reads it, so the
 * volume may write it in place before the transaction's record
 * (vol_txn_write_fresh).  Only for such blocks: an overwrite of data a
 * file already has must go through fs_txn_write, or a crash could leave
 * the new bytes under the old metadata.
 */
int fs_txn_write_fresh(struct fs_txn *t, uint64_t lba,
		       const void *buf) FS_WARN_UNUSED;

/* Hand out the next inode number (the superblock's next_ino). */
int fs_txn_new_ino(struct fs_txn *t, uint64_t *ino) FS_WARN_UNUSED;

/*
 * Write everything into one volume transaction and commit it
 * asynchronously (ordered now, durable by fs_store_wait of the ticket it
 * sets; see Durability).  Then the tree's nodes are clean and the frees
 * applied.  Consumes t whatever it returns.  On failure the store is in
 * the sticky error state (the error is returned).  A transaction that
 * changed nothing writes nothing.
 */
int fs_txn_commit(struct fs_txn *t) FS_WARN_UNUSED;

/*
 * Drop t.  Allocations, frees, data writes and inode numbers of t are
 * forgotten.  If a tree change already succeeded (it cannot be undone),
 * the store enters the sticky error state (-EIO): check what can fail
 * for a reason (-EEXIST, -ENOENT, -ENOTEMPTY) before the first change.
 */
void fs_txn_abort(struct fs_txn *t);

#endif /* SIXFOLD_FS_TXN_H */
