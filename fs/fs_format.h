/*
 * fs_format.h - on-disk formats of the filesystem layer, byte by byte.
 *
 * Part 1 (this comment): a metadata B+tree node.  Part 2 (the second
 * comment, after the node declarations): where the filesystem lives on
 * the volume, its superblock, the allocator's PG descriptors and bitmaps,
 * and every B+tree item (fs_items.c encodes and decodes those).
 *
 * Purpose: every piece of filesystem metadata (inode items, directory
 * entries, file extents, xattrs, orphans) lives in one B+tree of 4 KiB
 * nodes (DESIGN.md 3); this header specifies a node.  fs_btree.c is the
 * only user; fs_format.c holds the only code that reads or writes these
 * bytes (nothing casts a buffer to a struct).  man/sixfold.5 is to mirror
 * these tables.
 *
 * Where it lives: one node per volume block (VOL_BLOCK_BYTES), at an LBA
 * the filesystem's allocator chose.  One logical copy; the volume below
 * replicates and encrypts it (six zones, AEAD bound to LBA and LSN).
 *
 * Byte order: every integer is little-endian.
 *
 * CRC: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), initial value
 * 0xFFFFFFFF, final value inverted (the iSCSI convention, the same numbers
 * as the volume's crc32_iscsi(buf, len, ~0u) ^ ~0u; check value
 * CRC32C("123456789") = 0xE3069283), computed by fs_crc32c() over bytes
 * [0, 4092) of the node and stored at offset 4092.  It is written when the
 * node is handed to the volume (fs_bt_node_seal), so it covers the node as
 * stored, including every reserved and free byte.
 *
 * Node header (64 bytes), common to leaves and internal nodes:
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | magic       | "SIXFBTND" (53 49 58 46 42 54 4E 44)
 *      8 |    2 | version     | format version that wrote the node; 1
 *     10 |    2 | min_version | oldest format version that can read it; 1
 *     12 |    2 | node_bytes  | length of the node; 4096
 *     14 |    1 | level       | height above the leaves: 0 leaf, 1..7
 *        |      |             | internal; a child is one below its parent
 *     15 |    1 | incompat    | feature bits a reader must know; 0 in v1
 *     16 |    2 | nitems      | leaf: items; internal: child pointers
 *     18 |    2 | compat      | feature bits a reader may ignore (a writer
 *        |      |             | keeps them as found); 0 in v1
 *     20 |    4 | reserved    | zero
 *     24 |    8 | lba         | the LBA this node is stored at, so a node
 *        |      |             | read from the wrong place is refused
 *     32 |    8 | owner       | tree id (FS_BT_OWNER_*), so a node of
 *        |      |             | another tree is refused
 *     40 |    8 | gen         | generation (the filesystem's commit
 *        |      |             | number) of the transaction that last wrote
 *        |      |             | this node; never decreases for a given LBA
 *     48 |   16 | fsid        | UUID of the filesystem owning the node
 *     64 | 4028 | body        | leaf or internal body, below
 *   4092 |    4 | crc         | CRC32C of bytes [0, 4092)
 *
 * Key (17 bytes), compared field by field in this order, unsigned:
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | objectid    | inode number (or other object id)
 *      8 |    1 | type        | item type (fs/ defines the numbers)
 *      9 |    8 | offset      | type specific: name hash, file offset, ...
 *
 * Leaf body (level 0), like a btrfs leaf: item headers grow from offset 64
 * upwards in key order, values are packed from offset 4092 downwards in
 * the same order, and the gap between them (free space) is zero.
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 * 64+21i |   17 | key         | key of item i (i < nitems)
 * +17    |    2 | value_off   | offset of item i's value from the start of
 *        |      |             | the node
 * +19    |    2 | value_bytes | length of item i's value, 0..3072
 *  ...   |  ... | free        | zero, from 64 + 21 * nitems to the lowest
 *        |      |             | value_off
 *  v_i   |  s_i | value i     | v_0 + s_0 = 4092, v_i + s_i = v_(i-1)
 *
 * Internal body (level >= 1): nitems child pointers in key order; child i
 * holds the keys k with key_i <= k < key_(i+1) (no upper bound for the
 * last, and no lower bound but the parent's for child 0, whose key is
 * stored as zero).
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 * 64+25i |   17 | key         | separator of child i; zero for i = 0
 * +17    |    8 | child       | LBA of child i
 *  ...   |  ... | free        | zero, from 64 + 25 * nitems to 4092
 *
 * Validation rules (fs_bt_node_verify; the number appears in the log):
 *   N1  magic is "SIXFBTND".
 *   N2  crc matches.
 *   N3  min_version <= 1 (FS_BT_FORMAT_VERSION) and min_version <= version.
 *   N4  node_bytes == 4096, incompat == 0, reserved bytes zero.
 *   N5  lba equals the LBA the node was read from.
 *   N6  owner and fsid equal the tree's.
 *   N7  gen <= the newest generation the filesystem committed.
 *   N8  level < FS_BT_MAX_LEVELS and equals what the parent implies.
 *   N9  leaf: 64 + 21 * nitems <= 4092; internal: 1 <= nitems <= 161.
 *   N10 leaf: values packed as in the table (v_0 + s_0 = 4092, v_i + s_i =
 *       v_(i-1)), the lowest value at or above the end of the item
 *       headers, every value_bytes <= 3072.
 *   N11 keys strictly increasing; internal: key 0 is zero.
 *   N12 internal: child LBAs < FS_BT_MAX_LBA and not the node's own LBA.
 *   N13 free space is zero.
 * Rules that need the tree (a non-root leaf is not empty, a child's keys
 * lie within its parent's range, ...) are T-rules in fs_btree.c.
 *
 * Version history: 1 (2026-11) first format.
 */
#ifndef SIXFOLD_FS_FORMAT_H
#define SIXFOLD_FS_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "fs/fs_i.h"
#include "volume/volume.h"

#define FS_BT_FORMAT_VERSION 1
#define FS_BT_FORMAT_MIN_VERSION 1

#define FS_BT_NODE_BYTES 4096
#define FS_BT_NODE_MAGIC "SIXFBTND"
#define FS_BT_HDR_BYTES 64
#define FS_BT_CRC_OFF 4092
#define FS_BT_FSID_BYTES 16
#define FS_BT_KEY_BYTES 17
#define FS_BT_ITEM_BYTES 21 /* leaf item header: key, value_off, bytes */
#define FS_BT_PTR_BYTES 25 /* internal entry: key, child */
#define FS_BT_BODY_BYTES (FS_BT_CRC_OFF - FS_BT_HDR_BYTES) /* 4028 */
#define FS_BT_INT_CAP (FS_BT_BODY_BYTES / FS_BT_PTR_BYTES) /* 161 */
#define FS_BT_LEAF_CAP (FS_BT_BODY_BYTES / FS_BT_ITEM_BYTES) /* 191 */
#define FS_BT_MAX_LEVELS 8 /* levels 0..7: 161^7 leaves, plenty */
#define FS_BT_MAX_VALUE_BYTES 3072 /* a value; leaves 956 bytes of room */
#define FS_BT_MAX_LBA VOL_MAX_BLOCKS /* node LBAs are below this */

/* Tree ids (owner field).  Stored: never renumbered or reused. */
#define FS_BT_OWNER_META 1 /* the filesystem metadata tree */

_Static_assert(FS_BT_NODE_BYTES == VOL_BLOCK_BYTES, "a node is a block");
_Static_assert(FS_BT_CRC_OFF + 4 == FS_BT_NODE_BYTES, "crc ends the node");
_Static_assert(FS_BT_ITEM_BYTES == FS_BT_KEY_BYTES + 4, "leaf item");
_Static_assert(FS_BT_PTR_BYTES == FS_BT_KEY_BYTES + 8, "internal entry");
_Static_assert(FS_BT_INT_CAP == 161 && FS_BT_LEAF_CAP == 191, "capacity");
_Static_assert(FS_BT_ITEM_BYTES + FS_BT_MAX_VALUE_BYTES <= FS_BT_BODY_BYTES,
	       "a largest item fits a leaf on its own");
_Static_assert(FS_BT_CRC_OFF <= UINT16_MAX, "value_off fits 16 bits");

/* A key: (objectid, type, offset), compared in that order. */
struct fs_bt_key {
	uint64_t objectid; /* inode number or other object */
	uint8_t type; /* item type */
	uint64_t offset; /* type specific */
};

/* <0, 0, >0 as a sorts before, equal to, after b. */
static inline int fs_bt_key_cmp(const struct fs_bt_key *a,
				const struct fs_bt_key *b)
{
	if (a->objectid != b->objectid)
		return a->objectid < b->objectid ? -1 : 1;
	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return 0;
}

/* The node header fields a writer chooses (the rest are constants). */
struct fs_bt_hdr {
	uint16_t version; /* decode only: format version that wrote it */
	uint16_t min_version; /* decode only: oldest reader version */
	uint8_t level; /* 0 leaf, else height above the leaves */
	uint8_t incompat; /* decode only: must be 0 */
	uint16_t nitems; /* items or child pointers */
	uint16_t compat; /* kept as found */
	uint64_t lba; /* where the node is stored */
	uint64_t owner; /* tree id */
	uint64_t gen; /* commit number that last wrote it */
	uint8_t fsid[FS_BT_FSID_BYTES]; /* filesystem UUID */
};

/* One leaf item as the tree edits it: key and value (not owned). */
struct fs_bt_item {
	struct fs_bt_key key; /* item key */
	const uint8_t *val; /* value bytes, len of them */
	uint16_t len; /* value length, <= FS_BT_MAX_VALUE_BYTES */
};

/* One internal entry: separator key and child LBA. */
struct fs_bt_ptr {
	struct fs_bt_key key; /* lower bound of the child (zero for 0) */
	uint64_t child; /* LBA of the child */
};

/* What a node read from lba must match (rules N5..N8). */
struct fs_bt_expect {
	uint64_t lba; /* address it was read from */
	uint64_t owner; /* tree id */
	const uint8_t *fsid; /* FS_BT_FSID_BYTES */
	uint64_t max_gen; /* newest committed generation */
	int level; /* expected level, or -1 for any (a root) */
	int no_crc; /* skip N2: a node in memory, not read from disk */
};

/*
 * FS_CORRUPT (its fs_corrupt() is in fs_format.c), FS_VERIFY and
 * fs_panic() live in fs/fs_i.h, shared by every file of fs/.
 */

/*
 * CRC32C, table driven (slicing-by-8).  crc is the running value: start
 * with ~0u and invert the result (fs_crc32c(~0u, p, n) ^ ~0u is the CRC
 * of p).  Thread-safe.
 */
uint32_t fs_crc32c(uint32_t crc, const void *buf, size_t len);

/* Keys: 17 bytes at p. */
void fs_bt_key_encode(uint8_t *p, const struct fs_bt_key *k);
void fs_bt_key_decode(const uint8_t *p, struct fs_bt_key *k);

/*
 * Header.  encode writes magic, versions, node_bytes, level, nitems,
 * compat, lba, owner, gen and fsid, zeroes incompat and reserved, leaves
 * the body and crc alone.  decode reads the fields without judging them.
 */
void fs_bt_hdr_encode(uint8_t *node, const struct fs_bt_hdr *h);
void fs_bt_hdr_decode(const uint8_t *node, struct fs_bt_hdr *h);

/*
 * Whole-node check of rules N1..N13 against ex.  Returns 0, or -EUCLEAN
 * naming the rule in the log.  Only a node that passed may be given to the
 * accessors below (they trust offsets and counts).
 */
int fs_bt_node_verify(const uint8_t *node, const struct fs_bt_expect *ex);

/* Stamp gen into a node and write its crc: the node as stored. */
void fs_bt_node_seal(uint8_t *node, uint64_t gen);

/* Accessors of a verified (or freshly built) node. */
unsigned fs_bt_node_level(const uint8_t *node);
unsigned fs_bt_node_nitems(const uint8_t *node);
void fs_bt_leaf_key(const uint8_t *node, unsigned i, struct fs_bt_key *k);
/* Value of item i: *len bytes at the returned pointer (inside node). */
const uint8_t *fs_bt_leaf_val(const uint8_t *node, unsigned i, size_t *len);
/* Bytes used by item headers and values (at most FS_BT_BODY_BYTES). */
size_t fs_bt_leaf_used(const uint8_t *node);
void fs_bt_int_key(const uint8_t *node, unsigned i, struct fs_bt_key *k);
uint64_t fs_bt_int_child(const uint8_t *node, unsigned i);

/*
 * Body encoders: replace the whole body and nitems of node with items (a
 * leaf) or entries (internal node), zeroing free space.  The header must
 * already hold the right level.  items[].val must not point into node.
 * The caller guarantees the contents fit (fs_bt_leaf_bytes).
 */
void fs_bt_leaf_build(uint8_t *node, const struct fs_bt_item *items,
		      unsigned n);
void fs_bt_int_build(uint8_t *node, const struct fs_bt_ptr *ents, unsigned n);

/* Body bytes one leaf item of a len-byte value takes. */
static inline size_t fs_bt_item_bytes(size_t len)
{
	return FS_BT_ITEM_BYTES + len;
}

/*
 * ==== Part 2: the filesystem on the volume ====
 *
 * Layout.  The filesystem addresses volume blocks by LBA.  The first
 * FS_PG_META_BLOCKS (128) blocks of every protection group (PG p holds
 * LBAs [p * 2621440, (p + 1) * 2621440), volume.h) belong to the
 * allocator and are never handed out; the rest of the PG ("data area")
 * holds file data and B+tree nodes:
 *
 * PG OFFSET | BLOCKS | WHAT
 * ----------+--------+------------------------------------------------------
 *         0 |      1 | PG 0: the fs superblock (LBA 0).  Other PGs: unused
 *         1 |      1 | PG descriptor: the PG's allocation counts
 *         2 |     80 | allocation bitmap: block 2 + w covers window w, the
 *           |        | 32768 blocks [w * 32768, (w + 1) * 32768) of the PG
 *        82 |     46 | unused (reserved for later formats, never written)
 *       128 |    ... | data area
 *
 * The last PG may be partial (the volume's maximum size, max_blocks, need
 * not be a multiple of a PG): its bitmap covers its blocks below
 * max_blocks only (nwin = ceil(pg_blocks / 32768) windows).  Blocks never
 * written read as zeros, so a PG the allocator has never touched has an
 * all-zero descriptor and all-zero bitmaps, which mean "nothing
 * allocated": opening a new PG costs no write until a block in it is
 * allocated, and the volume grows (in whole PGs) exactly when that
 * allocation commits.  Every structure here is one logical copy; the
 * volume replicates it six ways, encrypts it and binds it to its LBA.
 *
 * Every structure below is written only inside a volume transaction,
 * together with everything that depends on it, so they agree after any
 * crash (fs_txn.c).
 *
 * ---- Superblock (LBA 0, 4096 bytes) ----
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | magic       | "SIXFFSSB" (53 49 58 46 46 53 53 42)
 *      8 |    2 | version     | format version that wrote it; 1
 *     10 |    2 | min_version | oldest format version that can read it; 1
 *     12 |    4 | sb_bytes    | length of the superblock; 4096
 *     16 |    4 | block_bytes | block size; 4096
 *     20 |    4 | reserved    | zero
 *     24 |    8 | incompat    | feature bits a reader must know; 0 in v1
 *     32 |    8 | compat      | feature bits a reader may ignore (a writer
 *        |      |             | keeps them as found); 0 in v1
 *     40 |   16 | fsid        | filesystem UUID (random at mkfs), also in
 *        |      |             | every B+tree node and PG descriptor
 *     56 |   16 | vol_uuid    | UUID of the volume holding the filesystem
 *     72 |   16 | hash_key    | SipHash-2-4 key of the name hash (random at
 *        |      |             | mkfs; see Name hash)
 *     88 |    8 | gen         | commit generation: 1 after mkfs, +1 per
 *        |      |             | committed transaction (the B+tree node gen)
 *     96 |    8 | root_lba    | LBA of the B+tree root node
 *    104 |    1 | root_height | levels of the B+tree, 1..8 (1: root leaf)
 *    105 |    7 | reserved    | zero
 *    112 |    8 | next_ino    | next inode number to hand out
 *    120 |    8 | used_blocks | blocks allocated: bits set in all bitmaps
 *    128 |    8 | pg_count    | PGs the allocator has opened, 1..; blocks of
 *        |      |             | PGs >= pg_count were never written
 *    136 |    8 | data_hint   | LBA where the next data search starts
 *    144 |    8 | meta_hint   | LBA where the next node search starts
 *    152 |    8 | crtime_sec  | creation time, seconds since 1970 (signed)
 *    160 |    4 | crtime_nsec | nanoseconds of it, < 10^9
 *    164 | 3928 | reserved    | zero
 *   4092 |    4 | crc         | CRC32C of bytes [0, 4092) (as for nodes)
 *
 * Validation rules (fs_sb_decode; the number appears in the log):
 *   S1  magic is "SIXFFSSB".
 *   S2  crc matches.
 *   S3  min_version <= 1 (FS_SB_VERSION) and min_version <= version.
 *   S4  sb_bytes and block_bytes are 4096, incompat is 0, reserved bytes
 *       are zero.
 *   S5  vol_uuid is the UUID of the volume it was read from.
 *   S6  gen >= 1.
 *   S7  root_lba is in the data area of an opened PG (below pg_count PGs
 *       and max_blocks); 1 <= root_height <= 8 (and, at mount, the height
 *       of the tree found there).
 *   S8  next_ino is an inode number (FS_FIRST_INO..FS_INO_MAX).
 *   S9  1 <= pg_count <= PGs of max_blocks (and, at mount, within the
 *       volume's capacity); used_blocks <= the data blocks of pg_count
 *       PGs; data_hint, meta_hint < min(pg_count PGs, max_blocks).
 *   S10 crtime_nsec < 10^9.
 *
 * ---- PG descriptor (PG offset 1, 4096 bytes) ----
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | magic       | "SIXFPGDS" (53 49 58 46 50 47 44 53)
 *      8 |    2 | version     | format version that wrote it; 1
 *     10 |    2 | min_version | oldest format version that can read it; 1
 *     12 |    2 | nwin        | bitmap windows of this PG, 1..80
 *        |      |             | (ceil(pg_blocks / 32768))
 *     14 |    2 | reserved    | zero
 *     16 |    8 | pg          | index of this PG
 *     24 |    8 | gen         | commit generation that wrote it
 *     32 |   16 | fsid        | filesystem UUID
 *     48 |    4 | used        | blocks allocated in the PG (sum of win_used)
 *     52 |   12 | reserved    | zero
 *     64 |  160 | win_used    | 80 x 2 bytes: blocks allocated in window w
 *        |      |             | (bits set in its bitmap block); 0 for
 *        |      |             | w >= nwin
 *    224 | 3868 | reserved    | zero
 *   4092 |    4 | crc         | CRC32C of bytes [0, 4092)
 *
 * A descriptor block that is all zero (never written) is valid and means
 * "nothing allocated in this PG" (rules P1..P10 do not apply to it).
 * Validation rules (fs_pgd_decode):
 *   P1  magic is "SIXFPGDS".
 *   P2  crc matches.
 *   P3  min_version <= 1 and min_version <= version.
 *   P4  reserved bytes are zero.
 *   P5  pg is the PG the block was read from.
 *   P6  fsid is the filesystem's.
 *   P7  gen <= the newest committed generation.
 *   P8  nwin is ceil(pg_blocks / 32768) for this PG.
 *   P9  win_used[w] <= the blocks of window w in the data area (32768,
 *       less 128 for window 0, less what lies past max_blocks), and 0 for
 *       w >= nwin.
 *   P10 used is the sum of win_used.
 *
 * ---- Allocation bitmap block (PG offset 2 + w, 4096 bytes) ----
 *
 * Raw bits, no header: a block never written must read as "all free",
 * and the volume already authenticates each block bound to its LBA.
 * Bit b of window w (byte b / 8, bit b % 8 counting from the least
 * significant) stands for LBA pg_start + 32768 * w + b; 1 is allocated.
 * Validation rules (fs_bitmap_verify, when a block is loaded):
 *   B1  the bits of the PG's first 128 blocks (window 0, bits 0..127) are
 *       zero: those blocks are never allocated.
 *   B2  the bits of blocks at or past max_blocks are zero.
 *   B3  the bits set equal win_used[w] of the PG descriptor.
 *
 * The allocator keeps no B+tree items: its counts are in the PG
 * descriptors, so allocating a B+tree node never changes the B+tree
 * (no recursion between the tree and the allocator, and a transaction's
 * block count has a small exact bound; fs_alloc.c, design notes).
 *
 * ---- B+tree items ----
 *
 * Key (objectid, type, offset) as in Part 1.  Objectids: inode numbers
 * are FS_ROOT_INO (1, the root directory) and FS_FIRST_INO (16) ..
 * FS_INO_MAX (2^63 - 1); 0 and 2..15 are reserved; special objects take
 * numbers from the top (FS_ORPHAN_OBJECTID = 2^64 - 2).  The items of one
 * inode sort together, in type order.  Item types, stored (never
 * renumbered or reused; new types take unused numbers in the order their
 * items should sort):
 *
 * TYPE | NAME     | KEY                          | VALUE
 * -----+----------+------------------------------+---------------------------
 *    1 | INODE    | (ino, 1, 0)                  | inode, 128 bytes
 *   16 | XATTR    | (ino, 16, name hash | coll)  | xattr, 4 + name + value
 *   32 | DIRENT   | (dir, 32, name hash | coll)  | dirent, 20 + name
 *   33 | DIRINDEX | (dir, 33, sequence)          | dirent, 20 + name
 *   48 | EXTENT   | (ino, 48, file block)        | extent, 16 bytes
 *   64 | ORPHAN   | (2^64 - 2, 64, ino)          | empty
 *
 * Name hash: SipHash-2-4 (Aumasson and Bernstein, 2012; 2 compression and
 * 4 finalisation rounds, 64-bit output read little-endian) of the name's
 * bytes under the superblock's 16-byte hash_key, with its low 8 bits
 * (FS_HASH_COLL_BITS) cleared.  A keyed hash, so names cannot be chosen
 * to collide without the key.  The low 8 bits of a DIRENT or XATTR key
 * offset are a collision counter: the first name of a given hash takes
 * 0, the next free value otherwise (at most 256 names per hash value).
 *
 * INODE value (128 bytes):
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    4 | mode        | file type (FS_S_IF*) | permission bits 07777
 *      4 |    4 | nlink       | names linking to it (0: an orphan)
 *      8 |    4 | uid         | owner
 *     12 |    4 | gid         | group
 *     16 |    8 | size        | bytes (st_size)
 *     24 |    8 | blocks      | 4 KiB blocks its extents map
 *     32 |    8 | rdev        | device number (FS_S_IFCHR, FS_S_IFBLK), else 0
 *     40 |    8 | flags       | FS_INODE_F_*: none in v1, 0
 *     48 |    8 | generation  | chosen at creation: (ino, generation) names
 *        |      |             | one file for all time (NFS file handles)
 *     56 |    8 | atime_sec   | access time, seconds since 1970 (signed)
 *     64 |    8 | mtime_sec   | modification time
 *     72 |    8 | ctime_sec   | change time
 *     80 |    8 | crtime_sec  | creation (birth) time
 *     88 |    4 | atime_nsec  | nanoseconds, < 10^9 (so the three below)
 *     92 |    4 | mtime_nsec  |
 *     96 |    4 | ctime_nsec  |
 *    100 |    4 | crtime_nsec |
 *    104 |    8 | next_index  | directory: sequence of its next DIRINDEX
 *        |      |             | (>= 3); 0 for other types
 *    112 |    8 | parent      | directory: inode number of the directory
 *        |      |             | holding it (the root: itself, 1), for
 *        |      |             | readdir's ".."; 0 for other types
 *    120 |    8 | reserved    | zero
 *
 * Mode and file-type numbers are the traditional Unix ones (FS_S_IF*
 * below, equal to Linux's S_IF*); a dirent's type is mode >> 12, which is
 * Linux's DT_* value.
 *
 * DIRENT and DIRINDEX value (20 + name_len bytes).  A directory entry is
 * stored twice: DIRENT, found by name hash (lookup), and DIRINDEX, keyed
 * by a per-directory sequence that never repeats (readdir offsets stay
 * stable when entries come and go).  Each names the other in cookie:
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | ino         | inode the entry names
 *      8 |    8 | cookie      | DIRENT: the sequence of its DIRINDEX;
 *        |      |             | DIRINDEX: the key offset of its DIRENT
 *     16 |    1 | type        | file type, mode >> 12 (FS_FT_*)
 *     17 |    1 | name_len    | 1..255
 *     18 |    2 | reserved    | zero
 *     20 |    n | name        | the name: no NUL, no '/', not "." or ".."
 *
 * EXTENT value (16 bytes): file blocks [offset, offset + nblocks) of inode
 * ino are volume blocks [lba, lba + nblocks).  File blocks no extent maps
 * read as zeros (sparse files).
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    8 | lba         | first volume block
 *      8 |    4 | nblocks     | length, >= 1
 *     12 |    4 | flags       | bit 0 UNWRITTEN: allocated (fallocate) but
 *        |      |             | never written, reads as zeros; others 0
 *
 * XATTR value (4 + name_len + value_len bytes, at most 3072):
 *
 * OFFSET | SIZE | FIELD       | MEANING
 * -------+------+-------------+----------------------------------------------
 *      0 |    1 | name_len    | 1..255
 *      1 |    1 | reserved    | zero
 *      2 |    2 | value_len   | 0..3068 - name_len
 *      4 |    n | name        | full name with its namespace ("user.x"), no NUL
 *    4+n |    v | value       | the value bytes
 *
 * ORPHAN: an inode with nlink 0 that is still open; the value is empty.
 * Mount deletes the orphans it finds (their files were unlinked while
 * open when the daemon stopped).
 *
 * Validation rules (fs_item_verify and the per-type decoders; "ino" means
 * FS_ROOT_INO or FS_FIRST_INO..FS_INO_MAX):
 *   K1  objectid is an ino (ORPHAN: FS_ORPHAN_OBJECTID and offset an ino);
 *       the type is one of the table's.
 *   I1  INODE: key offset 0; value 128 bytes.
 *   I2  a known file type, no mode bits outside S_IFMT | 07777.
 *   I3  every nsec < 10^9.
 *   I4  flags 0; reserved zero; rdev 0 unless a device node.
 *   I5  directory: next_index >= 3; other types: next_index 0.
 *   I6  directory: parent is an inode number; other types: parent 0.
 *   D1  DIRENT, DIRINDEX: 1 <= name_len <= 255 and the value is 20 +
 *       name_len bytes; reserved zero.
 *   D2  the name has no NUL or '/' and is not "." or "..".
 *   D3  ino is an ino; type is a known file type.
 *   D4  DIRENT: the key offset's hash bits are the name's hash, cookie >=
 *       3.  DIRINDEX: key offset >= 3, and the cookie's hash bits are the
 *       name's hash.
 *   E1  EXTENT: value 16 bytes, flags only UNWRITTEN.
 *   E2  nblocks >= 1 and offset + nblocks <= FS_MAX_FILE_BLOCKS (2^51).
 *   E3  [lba, lba + nblocks) lies in the data area of one PG, below 2^34.
 *   X1  XATTR: value >= 4 bytes, 1 <= name_len, 4 + name_len + value_len
 *       is the value's length, reserved zero.
 *   X2  the name has no NUL and its hash is the key offset's hash bits.
 *   O1  ORPHAN: empty value.
 *
 * Version history: 1 (2026-11) first format of all of part 2.
 */

/* ---- layout ---- */

#define FS_BLOCK_BYTES VOL_BLOCK_BYTES
#define FS_UUID_BYTES 16
#define FS_SB_LBA 0 /* the fs superblock */
#define FS_PG_META_BLOCKS 128 /* allocator's blocks at the start of a PG */
#define FS_PG_DESC_OFF 1 /* PG descriptor, PG offset */
#define FS_PG_BITMAP_OFF 2 /* first bitmap block, PG offset */
#define FS_WINDOW_BLOCKS 32768 /* blocks one bitmap block covers */
#define FS_PG_WINDOWS ((unsigned)(VOL_PG_BLOCKS / FS_WINDOW_BLOCKS)) /* 80 */
#define FS_PG_MAX ((VOL_MAX_BLOCKS + VOL_PG_BLOCKS - 1) / VOL_PG_BLOCKS)

_Static_assert(FS_WINDOW_BLOCKS == FS_BLOCK_BYTES * 8, "a bit a block");
_Static_assert(VOL_PG_BLOCKS % FS_WINDOW_BLOCKS == 0, "whole windows");
_Static_assert(FS_PG_BITMAP_OFF + FS_PG_WINDOWS <= FS_PG_META_BLOCKS,
	       "the bitmap lies in the reserved blocks");

/* First LBA of PG pg. */
static inline uint64_t fs_pg_start(uint64_t pg)
{
	return pg * VOL_PG_BLOCKS;
}

/* Blocks of PG pg below max_blocks (0 past it). */
static inline uint64_t fs_pg_blocks(uint64_t pg, uint64_t max_blocks)
{
	uint64_t start = fs_pg_start(pg);

	if (start >= max_blocks)
		return 0;
	return max_blocks - start < VOL_PG_BLOCKS ? max_blocks - start :
						    VOL_PG_BLOCKS;
}

/* PGs a volume of max_blocks has (the last may be partial). */
static inline uint64_t fs_pg_count_max(uint64_t max_blocks)
{
	return (max_blocks + VOL_PG_BLOCKS - 1) / VOL_PG_BLOCKS;
}

/* Bitmap windows of a PG of pg_blocks blocks. */
static inline unsigned fs_pg_windows(uint64_t pg_blocks)
{
	return (unsigned)((pg_blocks + FS_WINDOW_BLOCKS - 1) /
			  FS_WINDOW_BLOCKS);
}

/* Data-area blocks of a PG of pg_blocks blocks. */
static inline uint64_t fs_pg_data_blocks(uint64_t pg_blocks)
{
	return pg_blocks > FS_PG_META_BLOCKS ? pg_blocks - FS_PG_META_BLOCKS :
					       0;
}

/* Bits of window w that stand for blocks below the PG's end. */
static inline unsigned fs_window_bits(uint64_t pg_blocks, unsigned w)
{
	uint64_t start = (uint64_t)w * FS_WINDOW_BLOCKS;

	if (start >= pg_blocks)
		return 0;
	return pg_blocks - start < FS_WINDOW_BLOCKS ?
		       (unsigned)(pg_blocks - start) :
		       FS_WINDOW_BLOCKS;
}

/* Blocks of window w that lie in the data area (allocatable). */
static inline unsigned fs_window_data_blocks(uint64_t pg_blocks, unsigned w)
{
	unsigned bits = fs_window_bits(pg_blocks, w);

	if (w)
		return bits;
	return bits > FS_PG_META_BLOCKS ? bits - FS_PG_META_BLOCKS : 0;
}

/* lba lies in a data area below max_blocks. */
static inline int fs_lba_is_data(uint64_t lba, uint64_t max_blocks)
{
	return lba < max_blocks && lba % VOL_PG_BLOCKS >= FS_PG_META_BLOCKS;
}

/* ---- superblock ---- */

#define FS_SB_MAGIC "SIXFFSSB"
#define FS_SB_VERSION 1
#define FS_SB_MIN_VERSION 1
#define FS_SB_BYTES 4096
#define FS_SB_CRC_OFF 4092
#define FS_HASH_KEY_BYTES 16

/* ---- PG descriptor ---- */

#define FS_PGD_MAGIC "SIXFPGDS"
#define FS_PGD_VERSION 1
#define FS_PGD_MIN_VERSION 1
#define FS_PGD_CRC_OFF 4092

/* ---- items ---- */

/* Item types (key.type).  Stored: never renumbered or reused. */
#define FS_ITEM_INODE 1
#define FS_ITEM_XATTR 16
#define FS_ITEM_DIRENT 32
#define FS_ITEM_DIRINDEX 33
#define FS_ITEM_EXTENT 48
#define FS_ITEM_ORPHAN 64

/* Object ids. */
#define FS_ROOT_INO ((uint64_t)1) /* the root directory */
#define FS_FIRST_INO ((uint64_t)16) /* first number mkfs hands out */
#define FS_INO_MAX (((uint64_t)1 << 63) - 1)
#define FS_ORPHAN_OBJECTID (UINT64_MAX - 1) /* holds the ORPHAN items */

/* Name hash: low bits of DIRENT and XATTR key offsets count collisions. */
#define FS_HASH_COLL_BITS 8
#define FS_HASH_COLL_MASK ((uint64_t)(1u << FS_HASH_COLL_BITS) - 1)

#define FS_INODE_BYTES 128
#define FS_DIRENT_HDR_BYTES 20
#define FS_NAME_MAX 255
#define FS_DIRENT_MAX_BYTES (FS_DIRENT_HDR_BYTES + FS_NAME_MAX)
#define FS_DIRINDEX_FIRST 3 /* 0: start of a readdir, 1, 2: "." and ".." */
#define FS_EXTENT_BYTES 16
#define FS_EXTENT_F_UNWRITTEN 1u /* allocated, reads as zeros */
#define FS_MAX_FILE_BLOCKS ((uint64_t)1 << 51) /* 2^63 bytes */
#define FS_XATTR_HDR_BYTES 4
#define FS_XATTR_NAME_MAX 255
/* Largest value of an xattr whose name is name_len bytes. */
#define FS_XATTR_VALUE_MAX(name_len) \
	(FS_BT_MAX_VALUE_BYTES - FS_XATTR_HDR_BYTES - (name_len))

/* Modes and file types (stored: the traditional Unix numbers). */
#define FS_S_IFMT 0170000u
#define FS_S_IFSOCK 0140000u
#define FS_S_IFLNK 0120000u
#define FS_S_IFREG 0100000u
#define FS_S_IFBLK 0060000u
#define FS_S_IFDIR 0040000u
#define FS_S_IFCHR 0020000u
#define FS_S_IFIFO 0010000u
#define FS_S_PERM 07777u
#define FS_FT_OF_MODE(mode) ((uint8_t)(((mode)&FS_S_IFMT) >> 12))

_Static_assert(FS_DIRENT_MAX_BYTES <= FS_BT_MAX_VALUE_BYTES, "dirent fits");
_Static_assert(FS_XATTR_VALUE_MAX(FS_XATTR_NAME_MAX) > 2048, "xattr room");

#endif /* SIXFOLD_FS_FORMAT_H */
