/*
 * fs_format.h - on-disk format of a metadata B+tree node, byte by byte.
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
 * Every "this node is damaged" return goes through FS_CORRUPT: it logs
 * the LBA, the rule broken (its number first, as "N5 ...") and the source
 * line through vol_log, and returns -EUCLEAN.
 */
int fs_corrupt(const char *file, int line, uint64_t lba, const char *rule);
#define FS_CORRUPT(lba, rule) fs_corrupt(__FILE__, __LINE__, (lba), (rule))

/*
 * Always-on check for a condition whose violation would write bad data
 * (STYLE 6): logs and aborts before the write.  Never for disk contents.
 * (Moves to fs/'s internal header once there is one.)
 */
#define FS_VERIFY(cond)                                      \
	do {                                                 \
		if (!(cond))                                 \
			fs_panic(__FILE__, __LINE__, #cond); \
	} while (0)
void fs_panic(const char *file, int line, const char *what)
	__attribute__((noreturn));

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

#endif /* SIXFOLD_FS_FORMAT_H */
