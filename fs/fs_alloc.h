/*
 * fs_alloc.h - the block allocator of the filesystem (fs/).
 *
 * Tracks which volume blocks are allocated, with one bitmap per
 * protection group stored in the PG's own first blocks and a descriptor
 * with the PG's counts (formats: fs_format.h Part 2; design notes:
 * fs_alloc.c).  Hands out runs of contiguous blocks for file data and
 * single blocks for B+tree nodes, near a goal or a cursor; opens the next
 * PG (which grows the volume by 10 GiB when the allocation commits) only
 * when the PGs in use are nearly full; gives -ENOSPC at the volume's
 * maximum size.  Memory is bounded whatever the capacity: a cache of
 * bitmap and descriptor blocks plus 4 bytes per PG of the maximum size.
 *
 * Transactions: allocations change the in-memory view at once.  Frees
 * are queued and become reusable only after the transaction that frees
 * them is durable (DESIGN 2): fs_alloc_flush hands the changed blocks
 * (with the frees applied) and the discards of the freed runs to the
 * caller's volume transaction; after that transaction commits the caller
 * calls fs_alloc_committed, which applies the frees; if it is dropped
 * instead, fs_alloc_rollback returns to the last committed state.
 *
 * Threads: not thread-safe.  Every call on one struct fs_alloc must be
 * serialised by the caller (the filesystem's metadata lock, the one that
 * also covers the B+tree).  Calls may block reading blocks (vol_read).
 *
 * Errors (negative errno):
 *   -ENOSPC   no free block (or none left outside reservations and the
 *             metadata reserve)
 *   -EINVAL   bad argument (a run outside one PG's data area, bad cfg)
 *   -ENOMEM   out of memory
 *   -EUCLEAN  a descriptor or bitmap block is damaged, or a free names a
 *             block that is not allocated (the log says which rule)
 *   -EIO      and other errors of vol_read, passed up unchanged
 */
#ifndef SIXFOLD_FS_ALLOC_H
#define SIXFOLD_FS_ALLOC_H

#include <stdint.h>

#include "fs/fs_format.h"

/*
 * Clean descriptor and bitmap blocks kept in memory (512 KiB): more than
 * one whole PG (1 descriptor + 80 bitmap blocks), so a search through a
 * fragmented PG does not read its bitmaps twice.  Dirty blocks (changed
 * by the open transaction) come on top until it commits.
 */
#define FS_ALLOC_CACHE_BLOCKS 128

/*
 * A PG is "nearly full" when fewer than 1/16 of its data blocks are free
 * (640 MiB of a 10 GiB PG): the cursor moves on to another PG that is
 * not, and a new PG is opened (the volume grows) only when every open
 * PG is nearly full.  A 16th keeps some room in each PG for files that
 * grow there, without growing the volume much before it is full.
 */
#define FS_ALLOC_NEARLY_FULL_SHIFT 4

/*
 * The metadata reserve: free blocks that only operations which free
 * space may take (FS_ALLOC_F_META_RESERVE), so that unlink, rmdir, a
 * rename over a name, a truncate, a punched hole and the freeing of an
 * inode still find the B+tree node blocks their transactions set aside
 * when everything else is taken; data, creates, xattrs and fallocate
 * stop short of it, and statfs leaves it out of the free space.
 *
 * How big.  A transaction holds node blocks of two kinds: its pool, set
 * aside by fs_txn_reserve ((H + 2) per insert or update of a step, H <=
 * FS_BT_MAX_LEVELS: 9 x 10 = 90 for the largest freeing step, a rename
 * over a name), and the new nodes its splits took from the pool.  Both
 * are bounded by its record budget: every new node is a dirty node, one
 * record, and a step is reserved only if the records it has plus its
 * worst case (which counts each pool block at least once) stay within
 * VOL_TXN_MAX_RECS.  So one transaction never holds more than
 * VOL_TXN_MAX_RECS node blocks, and transactions run one at a time under
 * the metadata lock; what a freeing transaction frees (extents, nodes
 * merged away) is free again once it commits, before the next one.  On
 * top, a margin of 64 blocks for what freeing operations leave behind in
 * the tree (a leaf split by an ORPHAN item and not merged again after
 * it goes), which a full filesystem's unlinks then find: 320 + 64 = 384
 * blocks, 1.5 MiB.
 *
 * It is counted against the data blocks of the maximum size (where the
 * allocator counts free space: a volume that can still grow has room
 * past the PGs opened), so it holds the same whatever the capacity
 * reached so far, and at the maximum, where the volume cannot grow.  A
 * volume below about 12.5 MiB, of which 384 blocks would be a large
 * part, keeps 1/8 of its data blocks instead: its tree is low, so its
 * steps set aside less (k x (H + 2) with H the height it can reach),
 * though no longer provably enough for every case.
 */
#define FS_ALLOC_META_RESERVE_BLOCKS 384
#define FS_ALLOC_META_RESERVE_SHIFT 3 /* at most 1/8 of the data blocks */

struct fs_alloc;

/* What allocations are for: each kind has its own cursor. */
enum fs_alloc_kind {
	FS_ALLOC_DATA = 0, /* file data: runs, from window 1 of a PG */
	FS_ALLOC_META = 1, /* B+tree nodes: from the start of a PG */
};

/* fs_alloc_alloc and fs_alloc_reserve flags. */
#define FS_ALLOC_F_RESERVED 1 /* take the blocks out of a reservation */
/* May use the metadata reserve: for operations that free space. */
#define FS_ALLOC_F_META_RESERVE 2

/* How to open an allocator.  Copied. */
struct fs_alloc_cfg {
	struct vol *vol; /* where bitmaps and descriptors are read */
	/* optional: read blocks through this instead of vol_read (a store
	 * whose commits are asynchronous reads its own recent writes) */
	int (*read)(void *ctx, uint64_t lba, void *buf);
	void *read_ctx;
	uint8_t fsid[FS_UUID_BYTES]; /* in every PG descriptor */
	uint64_t max_blocks; /* the volume's maximum size */
	uint64_t gen; /* newest committed generation (rule P7) */
	/* from the superblock (a new filesystem: 1, 0, 0, 0) */
	uint64_t pg_count; /* PGs opened */
	uint64_t used_blocks; /* blocks allocated */
	uint64_t data_hint, meta_hint; /* cursors (0: default) */
	uint32_t cache_blocks; /* clean blocks cached, 0: default */
	/* blocks only FS_ALLOC_F_META_RESERVE may take (0: none; a
	 * filesystem gives fs_alloc_meta_reserve(max_blocks)) */
	uint64_t meta_reserve_blocks;
	int fresh; /* a new filesystem whose first transaction clears the
		    * volume: no block is read, every PG starts empty */
};

/* What the superblock stores (the committed, "disk" view). */
struct fs_alloc_state {
	uint64_t pg_count; /* PGs opened */
	uint64_t used_blocks; /* blocks allocated, frees applied */
	uint64_t data_hint, meta_hint; /* cursors */
};

/* Space, for statfs.  All in blocks. */
struct fs_alloc_statfs {
	uint64_t total_blocks; /* capacity: the PGs opened, <= max */
	uint64_t free_blocks; /* total less allocated and PG metadata */
	uint64_t max_blocks; /* the volume's maximum size */
	uint64_t max_free_blocks; /* free if the volume grew to its max */
	uint64_t used_blocks; /* allocated (frees not yet durable count) */
	uint64_t reserved_blocks; /* promised to open transactions */
	uint64_t meta_reserve_blocks; /* the metadata reserve (kept back
				       * from free_blocks by statfs(2)) */
};

/* What fs_alloc_check found. */
struct fs_alloc_check_stats {
	uint64_t pgs; /* PGs checked (opened) */
	uint64_t windows; /* bitmap blocks checked */
	uint64_t used_blocks; /* bits set, counted */
	uint64_t free_blocks; /* data blocks of the opened PGs not set */
};

/*
 * Open the allocator over vol.  Reads nothing yet (descriptors and
 * bitmaps are read when needed).  -EINVAL if cfg is inconsistent (pg_count
 * out of range), -ENOMEM.
 */
int fs_alloc_open(const struct fs_alloc_cfg *cfg,
		  struct fs_alloc **out) FS_WARN_UNUSED;

/* Free the allocator's memory (an open transaction is dropped). */
void fs_alloc_close(struct fs_alloc *a);

/*
 * The metadata reserve for a filesystem whose volume's maximum size is
 * max_blocks (see FS_ALLOC_META_RESERVE_BLOCKS).
 */
uint64_t fs_alloc_meta_reserve(uint64_t max_blocks);

/*
 * Promise n blocks to a transaction: later allocations with
 * FS_ALLOC_F_RESERVED cannot fail for want of space.  -ENOSPC if fewer
 * than n blocks are free outside other reservations and, unless flags
 * has FS_ALLOC_F_META_RESERVE, outside the metadata reserve (blocks
 * freed by the open transaction do not count yet).  unreserve gives back
 * what was not used.
 */
int fs_alloc_reserve(struct fs_alloc *a, uint64_t n, int flags) FS_WARN_UNUSED;
void fs_alloc_unreserve(struct fs_alloc *a, uint64_t n);

/*
 * Allocate a run of 1..want contiguous blocks, all in one bitmap window
 * (so one bitmap block and one descriptor change): *lba, *n.  Placement:
 * at goal if that block is free (a file growing in place), else the
 * first run of want blocks from goal (or the kind's cursor, goal 0) on
 * within the PG, else the longest run of the first window that has any;
 * another PG when this one is nearly full or full (see
 * FS_ALLOC_NEARLY_FULL_SHIFT).  want <= FS_WINDOW_BLOCKS.  With
 * FS_ALLOC_F_RESERVED the blocks come out of the reservation (want <= what
 * is reserved); without, out of the blocks neither reserved nor in the
 * metadata reserve, or with FS_ALLOC_F_META_RESERVE in it too.  -ENOSPC,
 * -EUCLEAN, -EIO, -ENOMEM; nothing changes then.
 */
int fs_alloc_alloc(struct fs_alloc *a, enum fs_alloc_kind kind, uint64_t goal,
		   uint32_t want, int flags, uint64_t *lba,
		   uint32_t *n) FS_WARN_UNUSED;

/*
 * Undo an allocation of the open transaction that nothing will
 * reference: the blocks are free again at once (they never were on
 * disk).  With FS_ALLOC_F_RESERVED they go back to the reservation.
 */
void fs_alloc_unalloc(struct fs_alloc *a, uint64_t lba, uint32_t n, int flags);

/*
 * Queue the free of run [lba, lba + n), which must lie in the data area
 * of one opened PG.  The blocks stay allocated in memory until
 * fs_alloc_committed; the next flush writes them free and discards them.
 * -EINVAL for a run outside one PG's data area, -ENOMEM.  Whether the
 * blocks were allocated is checked at flush (-EUCLEAN then).
 */
int fs_alloc_free(struct fs_alloc *a, uint64_t lba, uint64_t n) FS_WARN_UNUSED;

/*
 * Hand the open transaction's changes to the caller's volume
 * transaction: write(arg, lba, block) for every changed bitmap block and
 * descriptor (descriptors stamped with generation gen), as they must be
 * on disk once the transaction commits (queued frees applied), then
 * discard(arg, lba, n) for every queued free (adjacent runs merged).
 * Returns the number of blocks written, or the first error (-EUCLEAN for
 * a free of a block that is not allocated, a free given twice, a read
 * error, or a callback's); the allocator is unchanged either way.
 */
int fs_alloc_flush(struct fs_alloc *a, uint64_t gen,
		   int (*write)(void *arg, uint64_t lba, const void *blk),
		   int (*discard)(void *arg, uint64_t lba, uint64_t n),
		   void *arg) FS_WARN_UNUSED;

/*
 * The transaction holding the last flush (generation gen) is durable:
 * apply the queued frees (the blocks may be handed out again), every
 * changed block becomes clean.
 */
void fs_alloc_committed(struct fs_alloc *a, uint64_t gen);

/*
 * Drop the open transaction: allocations, queued frees and cursor moves
 * since the last commit are forgotten (the caller must not have let
 * anything reference the blocks it allocated).  Reservations stay.
 */
void fs_alloc_rollback(struct fs_alloc *a);

/*
 * Volume records the next flush would produce: *writes blocks (exact)
 * and *discards runs (at most).  For transaction sizing.
 */
void fs_alloc_pending(const struct fs_alloc *a, unsigned *writes,
		      unsigned *discards);

/* Values for the superblock as they will be once the flush commits. */
void fs_alloc_state(const struct fs_alloc *a, struct fs_alloc_state *st);

/* Space numbers (in-memory view, no I/O). */
void fs_alloc_statfs(const struct fs_alloc *a, struct fs_alloc_statfs *st);

/* Is lba allocated (in memory)?  1, 0, or -errno. */
int fs_alloc_is_used(struct fs_alloc *a, uint64_t lba) FS_WARN_UNUSED;

/*
 * Recount everything: every opened PG's descriptor and bitmap blocks are
 * read (or taken from the cache) and verified (rules P and B), each
 * descriptor's counts against its bitmaps, the per-PG counts and the total
 * against the allocator's.  Fills st (may be NULL).  0, -EUCLEAN naming
 * the first mismatch, or a read error.  Reads the whole bitmap (80 blocks
 * per PG): for tests and `sixfold fsck`, not for a mount.
 */
int fs_alloc_check(struct fs_alloc *a,
		   struct fs_alloc_check_stats *st) FS_WARN_UNUSED;

#endif /* SIXFOLD_FS_ALLOC_H */
