/*
 * fs_items.h - encode, decode and validate the filesystem's structures:
 * the fs superblock, the allocator's PG descriptors and bitmap blocks,
 * the B+tree items (inode, dirent, dirindex, extent, xattr, orphan), the
 * item keys, and the name hash.
 *
 * Layer: fs/, no I/O, no state.  The byte tables and numbered validation
 * rules are in fs_format.h (Part 2); fs_items.c is the only code that
 * reads or writes these bytes.  Decoders treat their input as hostile:
 * they return -EUCLEAN through FS_CORRUPT_AT naming the rule, never
 * assert.  Encoders take values the caller built and FS_VERIFY them
 * against the same rules (a bug aborts before bad bytes reach the disk);
 * names and sizes that come from users are checked first with
 * fs_name_check / fs_xattr_check.  Every function is thread-safe.
 */
#ifndef SIXFOLD_FS_ITEMS_H
#define SIXFOLD_FS_ITEMS_H

#include <stddef.h>
#include <stdint.h>

#include "fs/fs_format.h"

/* ---- superblock ---- */

/* The fs superblock, decoded.  Field meanings: fs_format.h. */
struct fs_sb {
	uint16_t version; /* decode only: version that wrote it */
	uint16_t min_version; /* decode only: oldest reader version */
	uint64_t compat; /* kept as found */
	uint8_t fsid[FS_UUID_BYTES]; /* filesystem UUID */
	uint8_t vol_uuid[FS_UUID_BYTES]; /* volume it lives on */
	uint8_t hash_key[FS_HASH_KEY_BYTES]; /* name hash key */
	uint64_t gen; /* commit generation */
	uint64_t root_lba; /* B+tree root */
	uint8_t root_height; /* B+tree levels */
	uint64_t next_ino; /* next inode number */
	uint64_t used_blocks; /* bits set in all bitmaps */
	uint64_t pg_count; /* PGs the allocator opened */
	uint64_t data_hint; /* allocator cursor, data */
	uint64_t meta_hint; /* allocator cursor, B+tree nodes */
	int64_t crtime_sec; /* creation time */
	uint32_t crtime_nsec; /* its nanoseconds */
};

/* What a superblock read from a volume must match (S5, S7, S9). */
struct fs_sb_expect {
	const uint8_t *vol_uuid; /* FS_UUID_BYTES */
	uint64_t max_blocks; /* the volume's maximum size */
};

/* Encode sb into blk (FS_SB_BYTES) with its CRC; version fields are
 * written as FS_SB_VERSION/FS_SB_MIN_VERSION.  FS_VERIFY on rules S6..S10
 * against max_blocks. */
void fs_sb_encode(const struct fs_sb *sb, uint64_t max_blocks, uint8_t *blk);

/* Decode and check rules S1..S10.  0 or -EUCLEAN. */
int fs_sb_decode(const uint8_t *blk, const struct fs_sb_expect *ex,
		 struct fs_sb *sb) FS_WARN_UNUSED;

/* ---- PG descriptor and bitmap blocks ---- */

/* A PG descriptor, decoded (an all-zero block decodes as used 0). */
struct fs_pgd {
	uint64_t pg; /* PG index */
	uint64_t gen; /* generation that wrote it (0: never written) */
	uint32_t used; /* blocks allocated in the PG */
	uint16_t nwin; /* bitmap windows */
	uint16_t win_used[FS_PG_WINDOWS]; /* blocks allocated per window */
};

/* What a descriptor read from its LBA must match (P5..P9). */
struct fs_pgd_expect {
	uint64_t pg; /* the PG it was read for */
	uint64_t max_blocks; /* volume maximum: the PG's size */
	const uint8_t *fsid; /* FS_UUID_BYTES */
	uint64_t max_gen; /* newest committed generation */
};

/* An empty descriptor of PG pg (what an all-zero block decodes to). */
void fs_pgd_init(struct fs_pgd *d, uint64_t pg, uint64_t max_blocks);

/* Encode d with fsid and generation gen; FS_VERIFY on P8..P10. */
void fs_pgd_encode(const struct fs_pgd *d, const uint8_t *fsid, uint64_t gen,
		   uint64_t max_blocks, uint8_t *blk);

/* Decode and check P1..P10 (an all-zero block is an empty PG). */
int fs_pgd_decode(const uint8_t *blk, const struct fs_pgd_expect *ex,
		  struct fs_pgd *d) FS_WARN_UNUSED;

/* Bits set in a bitmap block. */
unsigned fs_bitmap_count(const uint8_t *blk);

/*
 * Check bitmap block w of PG pg against rules B1..B3 (used: win_used[w]
 * of the descriptor).  0 or -EUCLEAN.
 */
int fs_bitmap_verify(const uint8_t *blk, uint64_t pg, unsigned w,
		     uint64_t max_blocks, unsigned used) FS_WARN_UNUSED;

/* ---- keys ---- */

static inline struct fs_bt_key fs_key(uint64_t objectid, uint8_t type,
				      uint64_t offset)
{
	struct fs_bt_key k = { objectid, type, offset };

	return k;
}

static inline struct fs_bt_key fs_key_inode(uint64_t ino)
{
	return fs_key(ino, FS_ITEM_INODE, 0);
}

/* off: the name hash with a collision counter in its low bits. */
static inline struct fs_bt_key fs_key_dirent(uint64_t dir, uint64_t off)
{
	return fs_key(dir, FS_ITEM_DIRENT, off);
}

static inline struct fs_bt_key fs_key_dirindex(uint64_t dir, uint64_t seq)
{
	return fs_key(dir, FS_ITEM_DIRINDEX, seq);
}

static inline struct fs_bt_key fs_key_extent(uint64_t ino, uint64_t fblock)
{
	return fs_key(ino, FS_ITEM_EXTENT, fblock);
}

static inline struct fs_bt_key fs_key_xattr(uint64_t ino, uint64_t off)
{
	return fs_key(ino, FS_ITEM_XATTR, off);
}

static inline struct fs_bt_key fs_key_orphan(uint64_t ino)
{
	return fs_key(FS_ORPHAN_OBJECTID, FS_ITEM_ORPHAN, ino);
}

/* ino is an inode number (FS_ROOT_INO or FS_FIRST_INO..FS_INO_MAX). */
static inline int fs_ino_valid(uint64_t ino)
{
	return ino == FS_ROOT_INO || (ino >= FS_FIRST_INO && ino <= FS_INO_MAX);
}

/* ---- name hash ---- */

/* SipHash-2-4 of len bytes at data under a 16-byte key. */
uint64_t fs_siphash24(const uint8_t *key, const void *data, size_t len);

/* The name hash of fs_format.h: SipHash-2-4 with the low
 * FS_HASH_COLL_BITS cleared (they hold the collision counter). */
uint64_t fs_name_hash(const uint8_t *key, const void *name, size_t len);

/*
 * A directory entry name a user gave: 0, -ENAMETOOLONG (> 255 bytes) or
 * -EINVAL (empty, NUL or '/' inside, "." or "..").
 */
int fs_name_check(const char *name, size_t len) FS_WARN_UNUSED;

/*
 * An xattr a user gave: 0, -ERANGE (name empty or longer than 255 bytes,
 * as Linux's setxattr), -EINVAL (NUL inside the name) or -E2BIG (value
 * longer than FS_XATTR_VALUE_MAX(name_len)).
 */
int fs_xattr_check(const char *name, size_t name_len,
		   size_t value_len) FS_WARN_UNUSED;

/* ---- item values ---- */

struct fs_time {
	int64_t sec; /* seconds since 1970 */
	uint32_t nsec; /* < 10^9 */
};

/* An INODE item, decoded. */
struct fs_inode {
	uint32_t mode; /* FS_S_IF* | permission bits */
	uint32_t nlink; /* names linking to it */
	uint32_t uid, gid; /* owner, group */
	uint64_t size; /* bytes */
	uint64_t blocks; /* 4 KiB blocks mapped by extents */
	uint64_t rdev; /* device number of a device node */
	uint64_t flags; /* FS_INODE_F_*, 0 in v1 */
	uint64_t generation; /* chosen at creation */
	struct fs_time atime, mtime, ctime, crtime; /* times */
	uint64_t next_index; /* directory: next DIRINDEX sequence */
	uint64_t parent; /* directory: its parent's ino (root: itself) */
};

/* A DIRENT or DIRINDEX item, decoded. */
struct fs_dirent {
	uint64_t ino; /* inode it names */
	uint64_t cookie; /* DIRENT: DIRINDEX seq; DIRINDEX: DIRENT offset */
	uint8_t type; /* FS_FT_OF_MODE(mode) */
	uint8_t name_len; /* 1..255 */
	char name[FS_NAME_MAX + 1]; /* NUL-terminated copy */
};

/* An EXTENT item, decoded. */
struct fs_extent {
	uint64_t lba; /* first volume block */
	uint32_t nblocks; /* length */
	uint32_t flags; /* FS_EXTENT_F_* */
};

/* An XATTR item, decoded: name and value point into the value given. */
struct fs_xattr {
	const uint8_t *name; /* name_len bytes, no NUL */
	const uint8_t *value; /* value_len bytes */
	uint8_t name_len; /* 1..255 */
	uint16_t value_len; /* 0..FS_XATTR_VALUE_MAX(name_len) */
};

/*
 * Encoders write the value into buf (at least the size given) and return
 * its length; they FS_VERIFY the rules first.  Decoders take the item's
 * key (rules K1 and those on the key) and value, fill *out, and return 0
 * or -EUCLEAN.  hash_key may be NULL to skip the hash rules (D4, X2).
 */
size_t fs_inode_encode(const struct fs_inode *in, uint8_t *buf);
int fs_inode_decode(const struct fs_bt_key *k, const void *val, size_t len,
		    struct fs_inode *out) FS_WARN_UNUSED;

/* buf: FS_DIRENT_MAX_BYTES; name_len bytes of name[] are used. */
size_t fs_dirent_encode(const struct fs_dirent *d, uint8_t *buf);
int fs_dirent_decode(const struct fs_bt_key *k, const void *val, size_t len,
		     const uint8_t *hash_key,
		     struct fs_dirent *out) FS_WARN_UNUSED;

/* buf: FS_EXTENT_BYTES. */
size_t fs_extent_encode(const struct fs_extent *e, uint8_t *buf);
int fs_extent_decode(const struct fs_bt_key *k, const void *val, size_t len,
		     struct fs_extent *out) FS_WARN_UNUSED;

/* buf: FS_XATTR_HDR_BYTES + name_len + value_len (<= 3072). */
size_t fs_xattr_encode(const void *name, size_t name_len, const void *value,
		       size_t value_len, uint8_t *buf);
int fs_xattr_decode(const struct fs_bt_key *k, const void *val, size_t len,
		    const uint8_t *hash_key,
		    struct fs_xattr *out) FS_WARN_UNUSED;

/* ORPHAN items are empty: just the key rules and O1. */
int fs_orphan_decode(const struct fs_bt_key *k, const void *val,
		     size_t len) FS_WARN_UNUSED;

/*
 * Any item, by its key type: every rule of that type (an unknown type is
 * K1).  For fsck and tests.  0 or -EUCLEAN.
 */
int fs_item_verify(const struct fs_bt_key *k, const void *val, size_t len,
		   const uint8_t *hash_key) FS_WARN_UNUSED;

#endif /* SIXFOLD_FS_ITEMS_H */
