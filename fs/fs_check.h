/*
 * fs_check.h - the offline checker behind `sixfold fsck` (fs/).
 *
 * Layer: fs/, above fs_txn.h (the store) and fs_btree.h; reads only, never
 * writes or starts a transaction, so a read-only volume will do.  The
 * rules it checks are listed at the top of fs_check.c.
 */
#ifndef SIXFOLD_FS_CHECK_H
#define SIXFOLD_FS_CHECK_H

#include <stdint.h>

#include "fs/fs_txn.h"

/* What fs_check found: counts of what is there, and of problems. */
struct fs_check_report {
	uint64_t inodes, dirs, files, symlinks, specials; /* by type */
	uint64_t entries; /* directory entries (DIRENT items) */
	uint64_t extents, data_blocks; /* EXTENT items, blocks they map */
	uint64_t xattrs; /* XATTR items */
	uint64_t orphans; /* inodes unlinked while open: freed at the next mount */
	uint64_t problems; /* problems reported */
};

/* Problems passed to the callback one by one; past it, only counted. */
#define FS_CHECK_PRINT_MAX 1000

/*
 * Check everything: first fs_store_check (tree, allocator, every item's
 * format, F1 no leaked or doubly-used block, as far as its counts can
 * tell), then the namespace and the blocks (no volume block mapped twice,
 * by extents or B+tree nodes: F1's count cannot see a block used twice
 * while another leaks): every problem goes to problem(arg, msg) as one
 * line naming the inode/entry and the rule (e.g. "V2 inode 17: nlink 2
 * but 1 entry names it"); the rules are listed in fs_check.c.  msg is
 * valid during the call only.  problem may be NULL (problems are then
 * only counted).  After FS_CHECK_PRINT_MAX problems the rest are counted
 * but not passed, and one last line (not a problem itself) says how many
 * were left out.
 *
 * st must be open with no transaction; it is read through the store
 * (fs_store_tree, fs_store_read, fs_store_alloc), under the caller's lock
 * if others share it (fs_txn.h, Threads).  r may not be NULL; it is
 * filled whatever the result (counts of what was walked before a
 * failure).
 *
 * Returns 0 when clean, -EUCLEAN when problems were found (r->problems >
 * 0; a damaged tree, allocator or item is one such problem: "store check
 * failed", the details in the log, and nothing after it is checked), or
 * another negative errno when it could not read the volume or run:
 * -EIO (and the volume's other read errors), -ENOMEM, -EBUSY (a
 * transaction is open), or the store's sticky error.
 *
 * Memory: proportional to the number of inodes (a hash table of them),
 * plus 24 bytes per extent and per B+tree node (to find a volume block
 * used twice) and the entries of the largest directory; not to the
 * volume's size.
 */
int fs_check(struct fs_store *st, void (*problem)(void *arg, const char *msg),
	     void *arg, struct fs_check_report *r) FS_WARN_UNUSED;

#endif /* SIXFOLD_FS_CHECK_H */
