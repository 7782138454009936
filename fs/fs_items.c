/*
 * fs_items.c - encode, decode and validate the fs superblock, the PG
 * descriptors and bitmap blocks of the allocator, the B+tree items, and
 * the SipHash-2-4 name hash.
 *
 * Layer: fs/, no I/O, no state, no tree logic.  The byte tables and the
 * numbered rules are in fs_format.h (Part 2).  Each structure has one
 * static rules function shared by its decoder (a broken rule is
 * FS_CORRUPT_AT, -EUCLEAN) and its encoder (a broken rule is a bug:
 * fs_panic before the bytes can reach the disk).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/fs_items.h"

/* Superblock field offsets (fs_format.h). */
#define SB_VERSION 8
#define SB_MIN_VERSION 10
#define SB_SB_BYTES 12
#define SB_BLOCK_BYTES 16
#define SB_RESERVED0 20
#define SB_INCOMPAT 24
#define SB_COMPAT 32
#define SB_FSID 40
#define SB_VOL_UUID 56
#define SB_HASH_KEY 72
#define SB_GEN 88
#define SB_ROOT_LBA 96
#define SB_ROOT_HEIGHT 104
#define SB_RESERVED1 105
#define SB_NEXT_INO 112
#define SB_USED 120
#define SB_PG_COUNT 128
#define SB_DATA_HINT 136
#define SB_META_HINT 144
#define SB_CRTIME_SEC 152
#define SB_CRTIME_NSEC 160
#define SB_RESERVED2 164

_Static_assert(SB_RESERVED1 + 7 == SB_NEXT_INO, "superblock layout");
_Static_assert(SB_HASH_KEY + FS_HASH_KEY_BYTES == SB_GEN, "superblock");

/* PG descriptor field offsets. */
#define PGD_VERSION 8
#define PGD_MIN_VERSION 10
#define PGD_NWIN 12
#define PGD_RESERVED0 14
#define PGD_PG 16
#define PGD_GEN 24
#define PGD_FSID 32
#define PGD_USED 48
#define PGD_RESERVED1 52
#define PGD_WIN_USED 64
#define PGD_RESERVED2 (PGD_WIN_USED + 2 * FS_PG_WINDOWS) /* 224 */

_Static_assert(PGD_RESERVED2 == 224, "PG descriptor layout");

/* Inode field offsets. */
#define IN_MODE 0
#define IN_NLINK 4
#define IN_UID 8
#define IN_GID 12
#define IN_SIZE 16
#define IN_BLOCKS 24
#define IN_RDEV 32
#define IN_FLAGS 40
#define IN_GENERATION 48
#define IN_SEC 56 /* atime, mtime, ctime, crtime: 8 bytes each */
#define IN_NSEC 88 /* the same order, 4 bytes each */
#define IN_NEXT_INDEX 104
#define IN_PARENT 112
#define IN_RESERVED 120

_Static_assert(IN_RESERVED + 8 == FS_INODE_BYTES, "inode layout");

/* The stored numbers are the host's (Linux) ones. */
_Static_assert(FS_S_IFMT == S_IFMT && FS_S_IFDIR == S_IFDIR &&
		       FS_S_IFREG == S_IFREG && FS_S_IFLNK == S_IFLNK &&
		       FS_S_IFCHR == S_IFCHR && FS_S_IFBLK == S_IFBLK &&
		       FS_S_IFIFO == S_IFIFO && FS_S_IFSOCK == S_IFSOCK,
	       "mode numbers");

#define NSEC_PER_SEC 1000000000u

/* An encoder was handed values that break rule: a bug, stop. */
static void verify_rule(const char *rule)
{
	if (rule)
		fs_panic(__FILE__, __LINE__, rule);
}

int fs_corrupt_at(const char *file, int line, const char *what, uint64_t id,
		  const char *rule)
{
	vol_log(VOL_LOG_ERR, "%s %llu is damaged: %s (%s:%d)", what,
		(unsigned long long)id, rule, file, line);
	return -EUCLEAN;
}

static uint32_t block_crc(const uint8_t *blk)
{
	return fs_crc32c(~0u, blk, FS_SB_CRC_OFF) ^ ~0u;
}

/* ---- SipHash-2-4 ---- */

static uint64_t rotl(uint64_t x, unsigned b)
{
	return x << b | x >> (64 - b);
}

static void sip_rounds(uint64_t v[4], int n)
{
	while (n--) {
		v[0] += v[1];
		v[1] = rotl(v[1], 13) ^ v[0];
		v[0] = rotl(v[0], 32);
		v[2] += v[3];
		v[3] = rotl(v[3], 16) ^ v[2];
		v[0] += v[3];
		v[3] = rotl(v[3], 21) ^ v[0];
		v[2] += v[1];
		v[1] = rotl(v[1], 17) ^ v[2];
		v[2] = rotl(v[2], 32);
	}
}

static void sip_absorb(uint64_t v[4], uint64_t m)
{
	v[3] ^= m;
	sip_rounds(v, 2);
	v[0] ^= m;
}

uint64_t fs_siphash24(const uint8_t *key, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t k0 = fs_get64(key), k1 = fs_get64(key + 8);
	uint64_t v[4] = {
		k0 ^ 0x736f6d6570736575ull,
		k1 ^ 0x646f72616e646f6dull,
		k0 ^ 0x6c7967656e657261ull,
		k1 ^ 0x7465646279746573ull,
	};
	uint64_t last = (uint64_t)len << 56;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8)
		sip_absorb(v, fs_get64(p + i));
	for (size_t j = 0; i + j < len; j++)
		last |= (uint64_t)p[i + j] << (8 * j);
	sip_absorb(v, last);
	v[2] ^= 0xff;
	sip_rounds(v, 4);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t fs_name_hash(const uint8_t *key, const void *name, size_t len)
{
	return fs_siphash24(key, name, len) & ~FS_HASH_COLL_MASK;
}

/* ---- names ---- */

static int name_bad(const uint8_t *name, size_t len)
{
	if (memchr(name, 0, len) || memchr(name, '/', len))
		return 1;
	return (len == 1 && name[0] == '.') ||
	       (len == 2 && name[0] == '.' && name[1] == '.');
}

int fs_name_check(const char *name, size_t len)
{
	if (len > FS_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 0 || name_bad((const uint8_t *)name, len))
		return -EINVAL;
	return 0;
}

int fs_xattr_check(const char *name, size_t name_len, size_t value_len)
{
	if (name_len == 0 || name_len > FS_XATTR_NAME_MAX)
		return -ERANGE;
	if (memchr(name, 0, name_len))
		return -EINVAL;
	if (value_len > FS_XATTR_VALUE_MAX(name_len))
		return -E2BIG;
	return 0;
}

/* ---- superblock ---- */

/* Data-area blocks of the first npg PGs of a volume of max_blocks. */
static uint64_t data_blocks_upto(uint64_t npg, uint64_t max_blocks)
{
	uint64_t full, total;

	if (npg == 0)
		return 0;
	full = npg - 1;
	total = full * fs_pg_data_blocks(VOL_PG_BLOCKS);
	return total + fs_pg_data_blocks(fs_pg_blocks(full, max_blocks));
}

/* Rules S6..S10 of a decoded superblock; NULL if it keeps them. */
static const char *sb_rules(const struct fs_sb *sb, uint64_t max_blocks)
{
	uint64_t npg = sb->pg_count, end;

	if (sb->gen < 1)
		return "S6 generation 0";
	if (npg < 1 || npg > fs_pg_count_max(max_blocks))
		return "S9 PG count out of range";
	end = fs_pg_start(npg) < max_blocks ? fs_pg_start(npg) : max_blocks;
	if (!fs_lba_is_data(sb->root_lba, end) || sb->root_height < 1 ||
	    sb->root_height > FS_BT_MAX_LEVELS)
		return "S7 root LBA or height out of range";
	if (sb->next_ino < FS_FIRST_INO || sb->next_ino > FS_INO_MAX)
		return "S8 next inode number out of range";
	if (sb->used_blocks > data_blocks_upto(npg, max_blocks) ||
	    sb->data_hint >= end || sb->meta_hint >= end)
		return "S9 used blocks or hints out of range";
	if (sb->crtime_nsec >= NSEC_PER_SEC)
		return "S10 nanoseconds out of range";
	return NULL;
}

void fs_sb_encode(const struct fs_sb *sb, uint64_t max_blocks, uint8_t *blk)
{
	verify_rule(sb_rules(sb, max_blocks));
	memset(blk, 0, FS_SB_BYTES);
	memcpy(blk, FS_SB_MAGIC, 8);
	fs_put16(blk + SB_VERSION, FS_SB_VERSION);
	fs_put16(blk + SB_MIN_VERSION, FS_SB_MIN_VERSION);
	fs_put32(blk + SB_SB_BYTES, FS_SB_BYTES);
	fs_put32(blk + SB_BLOCK_BYTES, FS_BLOCK_BYTES);
	fs_put64(blk + SB_COMPAT, sb->compat);
	memcpy(blk + SB_FSID, sb->fsid, FS_UUID_BYTES);
	memcpy(blk + SB_VOL_UUID, sb->vol_uuid, FS_UUID_BYTES);
	memcpy(blk + SB_HASH_KEY, sb->hash_key, FS_HASH_KEY_BYTES);
	fs_put64(blk + SB_GEN, sb->gen);
	fs_put64(blk + SB_ROOT_LBA, sb->root_lba);
	blk[SB_ROOT_HEIGHT] = sb->root_height;
	fs_put64(blk + SB_NEXT_INO, sb->next_ino);
	fs_put64(blk + SB_USED, sb->used_blocks);
	fs_put64(blk + SB_PG_COUNT, sb->pg_count);
	fs_put64(blk + SB_DATA_HINT, sb->data_hint);
	fs_put64(blk + SB_META_HINT, sb->meta_hint);
	fs_put64(blk + SB_CRTIME_SEC, (uint64_t)sb->crtime_sec);
	fs_put32(blk + SB_CRTIME_NSEC, sb->crtime_nsec);
	fs_put32(blk + FS_SB_CRC_OFF, block_crc(blk));
}

static void sb_fields(const uint8_t *blk, struct fs_sb *sb)
{
	sb->version = fs_get16(blk + SB_VERSION);
	sb->min_version = fs_get16(blk + SB_MIN_VERSION);
	sb->compat = fs_get64(blk + SB_COMPAT);
	memcpy(sb->fsid, blk + SB_FSID, FS_UUID_BYTES);
	memcpy(sb->vol_uuid, blk + SB_VOL_UUID, FS_UUID_BYTES);
	memcpy(sb->hash_key, blk + SB_HASH_KEY, FS_HASH_KEY_BYTES);
	sb->gen = fs_get64(blk + SB_GEN);
	sb->root_lba = fs_get64(blk + SB_ROOT_LBA);
	sb->root_height = blk[SB_ROOT_HEIGHT];
	sb->next_ino = fs_get64(blk + SB_NEXT_INO);
	sb->used_blocks = fs_get64(blk + SB_USED);
	sb->pg_count = fs_get64(blk + SB_PG_COUNT);
	sb->data_hint = fs_get64(blk + SB_DATA_HINT);
	sb->meta_hint = fs_get64(blk + SB_META_HINT);
	sb->crtime_sec = (int64_t)fs_get64(blk + SB_CRTIME_SEC);
	sb->crtime_nsec = fs_get32(blk + SB_CRTIME_NSEC);
}

#define SB_WHAT "fs superblock at LBA"

int fs_sb_decode(const uint8_t *blk, const struct fs_sb_expect *ex,
		 struct fs_sb *sb)
{
	const char *rule;

	if (memcmp(blk, FS_SB_MAGIC, 8))
		return FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA, "S1 magic");
	if (fs_get32(blk + FS_SB_CRC_OFF) != block_crc(blk))
		return FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA, "S2 crc mismatch");
	sb_fields(blk, sb);
	if (sb->min_version > FS_SB_VERSION || sb->min_version > sb->version)
		return FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA,
				     "S3 needs a newer sixfold");
	if (fs_get32(blk + SB_SB_BYTES) != FS_SB_BYTES ||
	    fs_get32(blk + SB_BLOCK_BYTES) != FS_BLOCK_BYTES ||
	    fs_get64(blk + SB_INCOMPAT) ||
	    !fs_all_zero(blk + SB_RESERVED0, 4) ||
	    !fs_all_zero(blk + SB_RESERVED1, 7) ||
	    !fs_all_zero(blk + SB_RESERVED2, FS_SB_CRC_OFF - SB_RESERVED2))
		return FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA,
				     "S4 sizes, incompat or reserved bytes");
	if (memcmp(sb->vol_uuid, ex->vol_uuid, FS_UUID_BYTES))
		return FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA,
				     "S5 filesystem of another volume");
	rule = sb_rules(sb, ex->max_blocks);
	return rule ? FS_CORRUPT_AT(SB_WHAT, FS_SB_LBA, rule) : 0;
}

/* ---- PG descriptor, bitmap ---- */

void fs_pgd_init(struct fs_pgd *d, uint64_t pg, uint64_t max_blocks)
{
	memset(d, 0, sizeof(*d));
	d->pg = pg;
	d->nwin = (uint16_t)fs_pg_windows(fs_pg_blocks(pg, max_blocks));
}

/* Rules P8..P10; NULL if kept. */
static const char *pgd_rules(const struct fs_pgd *d, uint64_t max_blocks)
{
	uint64_t pg_blocks = fs_pg_blocks(d->pg, max_blocks);
	uint64_t sum = 0;

	if (!pg_blocks || d->nwin != fs_pg_windows(pg_blocks))
		return "P8 window count";
	for (unsigned w = 0; w < FS_PG_WINDOWS; w++) {
		if (d->win_used[w] > fs_window_data_blocks(pg_blocks, w))
			return "P9 window count above its blocks";
		sum += d->win_used[w];
	}
	return sum == d->used ? NULL : "P10 used is not the sum";
}

void fs_pgd_encode(const struct fs_pgd *d, const uint8_t *fsid, uint64_t gen,
		   uint64_t max_blocks, uint8_t *blk)
{
	verify_rule(pgd_rules(d, max_blocks));
	memset(blk, 0, FS_BLOCK_BYTES);
	memcpy(blk, FS_PGD_MAGIC, 8);
	fs_put16(blk + PGD_VERSION, FS_PGD_VERSION);
	fs_put16(blk + PGD_MIN_VERSION, FS_PGD_MIN_VERSION);
	fs_put16(blk + PGD_NWIN, d->nwin);
	fs_put64(blk + PGD_PG, d->pg);
	fs_put64(blk + PGD_GEN, gen);
	memcpy(blk + PGD_FSID, fsid, FS_UUID_BYTES);
	fs_put32(blk + PGD_USED, d->used);
	for (unsigned w = 0; w < FS_PG_WINDOWS; w++)
		fs_put16(blk + PGD_WIN_USED + 2 * w, d->win_used[w]);
	fs_put32(blk + FS_PGD_CRC_OFF, block_crc(blk));
}

#define PGD_WHAT "PG descriptor of PG"

/* Rules P1..P7 on the bytes. */
static int pgd_header(const uint8_t *blk, const struct fs_pgd_expect *ex)
{
	uint16_t version = fs_get16(blk + PGD_VERSION);
	uint16_t min_version = fs_get16(blk + PGD_MIN_VERSION);

	if (memcmp(blk, FS_PGD_MAGIC, 8))
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg, "P1 magic");
	if (fs_get32(blk + FS_PGD_CRC_OFF) != block_crc(blk))
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg, "P2 crc mismatch");
	if (min_version > FS_PGD_VERSION || min_version > version)
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg,
				     "P3 needs a newer sixfold");
	if (!fs_all_zero(blk + PGD_RESERVED0, 2) ||
	    !fs_all_zero(blk + PGD_RESERVED1, PGD_WIN_USED - PGD_RESERVED1) ||
	    !fs_all_zero(blk + PGD_RESERVED2, FS_PGD_CRC_OFF - PGD_RESERVED2))
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg, "P4 reserved bytes");
	if (fs_get64(blk + PGD_PG) != ex->pg)
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg,
				     "P5 descriptor of another PG");
	if (memcmp(blk + PGD_FSID, ex->fsid, FS_UUID_BYTES))
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg,
				     "P6 descriptor of another filesystem");
	if (fs_get64(blk + PGD_GEN) > ex->max_gen)
		return FS_CORRUPT_AT(PGD_WHAT, ex->pg,
				     "P7 newer than the last commit");
	return 0;
}

int fs_pgd_decode(const uint8_t *blk, const struct fs_pgd_expect *ex,
		  struct fs_pgd *d)
{
	const char *rule;
	int ret;

	if (fs_all_zero(blk, FS_BLOCK_BYTES)) {
		fs_pgd_init(d, ex->pg, ex->max_blocks);
		return fs_pg_blocks(ex->pg, ex->max_blocks) ?
			       0 :
			       FS_CORRUPT_AT(PGD_WHAT, ex->pg,
					     "P8 PG past the maximum size");
	}
	ret = pgd_header(blk, ex);
	if (ret)
		return ret;
	d->pg = ex->pg;
	d->gen = fs_get64(blk + PGD_GEN);
	d->nwin = fs_get16(blk + PGD_NWIN);
	d->used = fs_get32(blk + PGD_USED);
	for (unsigned w = 0; w < FS_PG_WINDOWS; w++)
		d->win_used[w] = fs_get16(blk + PGD_WIN_USED + 2 * w);
	rule = pgd_rules(d, ex->max_blocks);
	return rule ? FS_CORRUPT_AT(PGD_WHAT, ex->pg, rule) : 0;
}

unsigned fs_bitmap_count(const uint8_t *blk)
{
	unsigned n = 0;

	for (unsigned i = 0; i < FS_BLOCK_BYTES; i += 8)
		n += (unsigned)__builtin_popcountll(fs_get64(blk + i));
	return n;
}

/* Bits [from, FS_WINDOW_BLOCKS) of blk are zero. */
static int bits_zero_from(const uint8_t *blk, unsigned from)
{
	unsigned byte = from / 8;

	if (from % 8) {
		if (blk[byte] >> (from % 8))
			return 0;
		byte++;
	}
	return fs_all_zero(blk + byte, FS_BLOCK_BYTES - byte);
}

int fs_bitmap_verify(const uint8_t *blk, uint64_t pg, unsigned w,
		     uint64_t max_blocks, unsigned used)
{
	uint64_t lba = fs_pg_start(pg) + FS_PG_BITMAP_OFF + w;
	unsigned bits = fs_window_bits(fs_pg_blocks(pg, max_blocks), w);

	if (w == 0 && !fs_all_zero(blk, FS_PG_META_BLOCKS / 8))
		return FS_CORRUPT_AT("bitmap block at LBA", lba,
				     "B1 reserved blocks marked allocated");
	if (!bits_zero_from(blk, bits))
		return FS_CORRUPT_AT("bitmap block at LBA", lba,
				     "B2 blocks past the end allocated");
	if (fs_bitmap_count(blk) != used)
		return FS_CORRUPT_AT("bitmap block at LBA", lba,
				     "B3 bit count differs from the "
				     "descriptor");
	return 0;
}

/* ---- inode ---- */

static int ft_valid(uint8_t ft)
{
	switch (ft) {
	case FS_S_IFSOCK >> 12:
	case FS_S_IFLNK >> 12:
	case FS_S_IFREG >> 12:
	case FS_S_IFBLK >> 12:
	case FS_S_IFDIR >> 12:
	case FS_S_IFCHR >> 12:
	case FS_S_IFIFO >> 12:
		return 1;
	}
	return 0;
}

/* Rules I2..I5 (the value fields). */
static const char *inode_rules(const struct fs_inode *in)
{
	uint32_t fmt = in->mode & FS_S_IFMT;
	int dev = fmt == FS_S_IFCHR || fmt == FS_S_IFBLK;

	if (!ft_valid(FS_FT_OF_MODE(in->mode)) ||
	    (in->mode & ~(FS_S_IFMT | FS_S_PERM)))
		return "I2 unknown file type or mode bits";
	if (in->atime.nsec >= NSEC_PER_SEC || in->mtime.nsec >= NSEC_PER_SEC ||
	    in->ctime.nsec >= NSEC_PER_SEC || in->crtime.nsec >= NSEC_PER_SEC)
		return "I3 nanoseconds out of range";
	if (in->flags || (!dev && in->rdev))
		return "I4 flags or rdev set";
	if (fmt == FS_S_IFDIR ? in->next_index < FS_DIRINDEX_FIRST :
				in->next_index != 0)
		return "I5 next_index out of range";
	if (fmt == FS_S_IFDIR ? !fs_ino_valid(in->parent) : in->parent != 0)
		return "I6 parent out of range";
	return NULL;
}

size_t fs_inode_encode(const struct fs_inode *in, uint8_t *buf)
{
	const struct fs_time *t[4] = { &in->atime, &in->mtime, &in->ctime,
				       &in->crtime };

	verify_rule(inode_rules(in));
	memset(buf, 0, FS_INODE_BYTES);
	fs_put32(buf + IN_MODE, in->mode);
	fs_put32(buf + IN_NLINK, in->nlink);
	fs_put32(buf + IN_UID, in->uid);
	fs_put32(buf + IN_GID, in->gid);
	fs_put64(buf + IN_SIZE, in->size);
	fs_put64(buf + IN_BLOCKS, in->blocks);
	fs_put64(buf + IN_RDEV, in->rdev);
	fs_put64(buf + IN_FLAGS, in->flags);
	fs_put64(buf + IN_GENERATION, in->generation);
	for (int i = 0; i < 4; i++) {
		fs_put64(buf + IN_SEC + 8 * i, (uint64_t)t[i]->sec);
		fs_put32(buf + IN_NSEC + 4 * i, t[i]->nsec);
	}
	fs_put64(buf + IN_NEXT_INDEX, in->next_index);
	fs_put64(buf + IN_PARENT, in->parent);
	return FS_INODE_BYTES;
}

static void inode_fields(const uint8_t *p, struct fs_inode *in)
{
	struct fs_time *t[4] = { &in->atime, &in->mtime, &in->ctime,
				 &in->crtime };

	in->mode = fs_get32(p + IN_MODE);
	in->nlink = fs_get32(p + IN_NLINK);
	in->uid = fs_get32(p + IN_UID);
	in->gid = fs_get32(p + IN_GID);
	in->size = fs_get64(p + IN_SIZE);
	in->blocks = fs_get64(p + IN_BLOCKS);
	in->rdev = fs_get64(p + IN_RDEV);
	in->flags = fs_get64(p + IN_FLAGS);
	in->generation = fs_get64(p + IN_GENERATION);
	for (int i = 0; i < 4; i++) {
		t[i]->sec = (int64_t)fs_get64(p + IN_SEC + 8 * i);
		t[i]->nsec = fs_get32(p + IN_NSEC + 4 * i);
	}
	in->next_index = fs_get64(p + IN_NEXT_INDEX);
	in->parent = fs_get64(p + IN_PARENT);
}

#define INODE_WHAT "inode item of inode"

int fs_inode_decode(const struct fs_bt_key *k, const void *val, size_t len,
		    struct fs_inode *out)
{
	const uint8_t *p = val;
	const char *rule;

	if (k->type != FS_ITEM_INODE || !fs_ino_valid(k->objectid))
		return FS_CORRUPT_AT(INODE_WHAT, k->objectid,
				     "K1 not an inode key");
	if (k->offset != 0 || len != FS_INODE_BYTES)
		return FS_CORRUPT_AT(INODE_WHAT, k->objectid,
				     "I1 key offset or value size");
	inode_fields(p, out);
	if (!fs_all_zero(p + IN_RESERVED, FS_INODE_BYTES - IN_RESERVED))
		return FS_CORRUPT_AT(INODE_WHAT, k->objectid,
				     "I4 reserved bytes");
	rule = inode_rules(out);
	return rule ? FS_CORRUPT_AT(INODE_WHAT, k->objectid, rule) : 0;
}

/* ---- dirent, dirindex ---- */

/* Rules D2, D3 (and D1's name length) of a decoded entry. */
static const char *dirent_rules(const struct fs_dirent *d)
{
	if (d->name_len < 1)
		return "D1 empty name";
	if (name_bad((const uint8_t *)d->name, d->name_len))
		return "D2 name with NUL or '/', or a dot entry";
	if (!fs_ino_valid(d->ino) || !ft_valid(d->type))
		return "D3 inode number or file type";
	return NULL;
}

size_t fs_dirent_encode(const struct fs_dirent *d, uint8_t *buf)
{
	verify_rule(dirent_rules(d));
	fs_put64(buf, d->ino);
	fs_put64(buf + 8, d->cookie);
	buf[16] = d->type;
	buf[17] = d->name_len;
	fs_put16(buf + 18, 0);
	memcpy(buf + FS_DIRENT_HDR_BYTES, d->name, d->name_len);
	return FS_DIRENT_HDR_BYTES + (size_t)d->name_len;
}

/* D4: the hash rules, by item type. */
static const char *dirent_hash_rule(const struct fs_bt_key *k,
				    const struct fs_dirent *d,
				    const uint8_t *hash_key)
{
	uint64_t h, off;

	if (k->type == FS_ITEM_DIRENT ? d->cookie < FS_DIRINDEX_FIRST :
					k->offset < FS_DIRINDEX_FIRST)
		return "D4 index sequence below 3";
	if (!hash_key)
		return NULL;
	h = fs_name_hash(hash_key, d->name, d->name_len);
	off = k->type == FS_ITEM_DIRENT ? k->offset : d->cookie;
	return (off & ~FS_HASH_COLL_MASK) == h ? NULL : "D4 name hash differs";
}

#define DIRENT_WHAT "directory entry of directory"

int fs_dirent_decode(const struct fs_bt_key *k, const void *val, size_t len,
		     const uint8_t *hash_key, struct fs_dirent *out)
{
	const uint8_t *p = val;
	const char *rule;

	if ((k->type != FS_ITEM_DIRENT && k->type != FS_ITEM_DIRINDEX) ||
	    !fs_ino_valid(k->objectid))
		return FS_CORRUPT_AT(DIRENT_WHAT, k->objectid,
				     "K1 not a directory entry key");
	if (len < FS_DIRENT_HDR_BYTES || p[17] < 1 ||
	    len != FS_DIRENT_HDR_BYTES + (size_t)p[17] || fs_get16(p + 18))
		return FS_CORRUPT_AT(DIRENT_WHAT, k->objectid,
				     "D1 name length or reserved bytes");
	out->ino = fs_get64(p);
	out->cookie = fs_get64(p + 8);
	out->type = p[16];
	out->name_len = p[17];
	memcpy(out->name, p + FS_DIRENT_HDR_BYTES, out->name_len);
	out->name[out->name_len] = 0;
	rule = dirent_rules(out);
	if (!rule)
		rule = dirent_hash_rule(k, out, hash_key);
	return rule ? FS_CORRUPT_AT(DIRENT_WHAT, k->objectid, rule) : 0;
}

/* ---- extent ---- */

/* Rules E1 (flags) .. E3 for file block fblock. */
static const char *extent_rules(uint64_t fblock, const struct fs_extent *e)
{
	uint64_t in_pg = e->lba % VOL_PG_BLOCKS;

	if (e->flags & ~FS_EXTENT_F_UNWRITTEN)
		return "E1 unknown extent flags";
	if (e->nblocks < 1 || fblock > FS_MAX_FILE_BLOCKS ||
	    e->nblocks > FS_MAX_FILE_BLOCKS - fblock)
		return "E2 extent length or file range";
	if (in_pg < FS_PG_META_BLOCKS || e->nblocks > VOL_PG_BLOCKS - in_pg ||
	    e->lba + e->nblocks > VOL_MAX_BLOCKS)
		return "E3 extent outside one PG's data area";
	return NULL;
}

size_t fs_extent_encode(const struct fs_extent *e, uint8_t *buf)
{
	verify_rule(extent_rules(0, e));
	fs_put64(buf, e->lba);
	fs_put32(buf + 8, e->nblocks);
	fs_put32(buf + 12, e->flags);
	return FS_EXTENT_BYTES;
}

#define EXTENT_WHAT "extent item of inode"

int fs_extent_decode(const struct fs_bt_key *k, const void *val, size_t len,
		     struct fs_extent *out)
{
	const uint8_t *p = val;
	const char *rule;

	if (k->type != FS_ITEM_EXTENT || !fs_ino_valid(k->objectid))
		return FS_CORRUPT_AT(EXTENT_WHAT, k->objectid,
				     "K1 not an extent key");
	if (len != FS_EXTENT_BYTES)
		return FS_CORRUPT_AT(EXTENT_WHAT, k->objectid, "E1 value size");
	out->lba = fs_get64(p);
	out->nblocks = fs_get32(p + 8);
	out->flags = fs_get32(p + 12);
	rule = extent_rules(k->offset, out);
	return rule ? FS_CORRUPT_AT(EXTENT_WHAT, k->objectid, rule) : 0;
}

/* ---- xattr ---- */

size_t fs_xattr_encode(const void *name, size_t name_len, const void *value,
		       size_t value_len, uint8_t *buf)
{
	FS_VERIFY(fs_xattr_check(name, name_len, value_len) == 0);
	buf[0] = (uint8_t)name_len;
	buf[1] = 0;
	fs_put16(buf + 2, (uint16_t)value_len);
	memcpy(buf + FS_XATTR_HDR_BYTES, name, name_len);
	if (value_len)
		memcpy(buf + FS_XATTR_HDR_BYTES + name_len, value, value_len);
	return FS_XATTR_HDR_BYTES + name_len + value_len;
}

#define XATTR_WHAT "xattr item of inode"

int fs_xattr_decode(const struct fs_bt_key *k, const void *val, size_t len,
		    const uint8_t *hash_key, struct fs_xattr *out)
{
	const uint8_t *p = val;

	if (k->type != FS_ITEM_XATTR || !fs_ino_valid(k->objectid))
		return FS_CORRUPT_AT(XATTR_WHAT, k->objectid,
				     "K1 not an xattr key");
	if (len < FS_XATTR_HDR_BYTES || p[0] < 1 || p[1] ||
	    len != FS_XATTR_HDR_BYTES + (size_t)p[0] + fs_get16(p + 2))
		return FS_CORRUPT_AT(XATTR_WHAT, k->objectid,
				     "X1 name or value length");
	out->name_len = p[0];
	out->value_len = fs_get16(p + 2);
	out->name = p + FS_XATTR_HDR_BYTES;
	out->value = out->name + out->name_len;
	if (memchr(out->name, 0, out->name_len) ||
	    (hash_key &&
	     (k->offset & ~FS_HASH_COLL_MASK) !=
		     fs_name_hash(hash_key, out->name, out->name_len)))
		return FS_CORRUPT_AT(XATTR_WHAT, k->objectid,
				     "X2 name with NUL or wrong hash");
	return 0;
}

/* ---- orphan, any item ---- */

int fs_orphan_decode(const struct fs_bt_key *k, const void *val, size_t len)
{
	(void)val;
	if (k->objectid != FS_ORPHAN_OBJECTID || k->type != FS_ITEM_ORPHAN ||
	    !fs_ino_valid(k->offset))
		return FS_CORRUPT_AT("orphan item of inode", k->offset,
				     "K1 not an orphan key");
	if (len != 0)
		return FS_CORRUPT_AT("orphan item of inode", k->offset,
				     "O1 value not empty");
	return 0;
}

int fs_item_verify(const struct fs_bt_key *k, const void *val, size_t len,
		   const uint8_t *hash_key)
{
	union {
		struct fs_inode in;
		struct fs_dirent d;
		struct fs_extent e;
		struct fs_xattr x;
	} u;

	switch (k->type) {
	case FS_ITEM_INODE:
		return fs_inode_decode(k, val, len, &u.in);
	case FS_ITEM_XATTR:
		return fs_xattr_decode(k, val, len, hash_key, &u.x);
	case FS_ITEM_DIRENT:
	case FS_ITEM_DIRINDEX:
		return fs_dirent_decode(k, val, len, hash_key, &u.d);
	case FS_ITEM_EXTENT:
		return fs_extent_decode(k, val, len, &u.e);
	case FS_ITEM_ORPHAN:
		return fs_orphan_decode(k, val, len);
	}
	return FS_CORRUPT_AT("item of object", k->objectid,
			     "K1 unknown item type");
}
