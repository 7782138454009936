/*
 * fs_items_test.c - the filesystem's formats (fs/fs_items.c, tables in
 * fs/fs_format.h Part 2): fs superblock, PG descriptor, bitmap block,
 * and the B+tree items (inode, dirent, dirindex, extent, xattr, orphan).
 *
 * Name hash: SipHash-2-4 against the reference vectors of the SipHash
 * paper and against libsodium's crypto_shorthash_siphash24 (an
 * independent implementation) on random keys, lengths and alignments;
 * the collision bits of the name hash are clear.
 * Formats: each structure encodes to the bytes its table documents
 * (fields read back at their offsets), round-trips, and every validation
 * rule (S1..S10, P1..P10, B1..B3, K1, I1..I5, D1..D4, E1..E3, X1, X2, O1)
 * fires on a value broken for it (checksums fixed up so the rule itself
 * is reached) and names itself in the log.  Random bytes and random
 * mutations of valid values never crash a decoder, and whatever a decoder
 * accepts re-encodes to the same bytes.  An encoder given a value that
 * breaks a rule aborts (in a child process) instead of writing it.  Name
 * and xattr checks of user input; key order of an inode's items.
 *
 * TEST_SEED=n repeats a run; TEST_VERBOSE=1 shows the log.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_items.h"
#include "test/lib/check.h"
#include "test/lib/tutil.h"
#include "volume/volume.h"

#define BLK FS_BLOCK_BYTES

/* ---- random numbers, log capture ---- */

static char last_log[512];

static void test_log(int level, const char *msg)
{
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* ret is -EUCLEAN and the log names rule; else say what was tested. */
static int expect_rule(int ret, const char *rule, const char *what)
{
	if (ret == -EUCLEAN && strstr(last_log, rule))
		return 0;
	fprintf(stderr, "%s: want %s, got %d, log '%s'\n", what, rule, ret,
		last_log);
	return 1;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void reseal(uint8_t *blk)
{
	put_le(blk + 4092, fs_crc32c(~0u, blk, 4092) ^ ~0u, 4);
}

/* ---- SipHash ---- */

static void test_siphash(void)
{
	uint8_t key[16], msg[300];
	int bad = 0;

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	/* The SipHash paper's vectors (key 00..0f, message 00..len-1). */
	CHECK_EQ(fs_siphash24(key, msg, 0), 0x726fdb47dd0e0e31ull);
	CHECK_EQ(fs_siphash24(key, msg, 15), 0xa129ca6149be45e5ull);
	if (sodium_init() < 0)
		SKIP("libsodium cannot initialise");
	for (int t = 0; t < 3000; t++) {
		size_t len = rnd_below(257), off = rnd_below(8);
		uint8_t out[crypto_shorthash_siphash24_BYTES];

		for (size_t i = 0; i < sizeof(key); i++)
			key[i] = (uint8_t)rnd();
		for (size_t i = 0; i < len + off; i++)
			msg[i] = (uint8_t)rnd();
		crypto_shorthash_siphash24(out, msg + off, len, key);
		bad += fs_siphash24(key, msg + off, len) != get_le(out, 8);
		bad += (fs_name_hash(key, msg + off, len) &
			FS_HASH_COLL_MASK) != 0;
		bad += (fs_name_hash(key, msg + off, len) ^ get_le(out, 8)) >
		       FS_HASH_COLL_MASK;
	}
	CHECK_EQ(bad, 0);
}

/* ---- names ---- */

static void test_names(void)
{
	char name[300];

	memset(name, 'a', sizeof(name));
	CHECK_EQ(fs_name_check("a", 1), 0);
	CHECK_EQ(fs_name_check("...", 3), 0);
	CHECK_EQ(fs_name_check(name, 255), 0);
	CHECK_EQ(fs_name_check(name, 256), -ENAMETOOLONG);
	CHECK_EQ(fs_name_check("", 0), -EINVAL);
	CHECK_EQ(fs_name_check(".", 1), -EINVAL);
	CHECK_EQ(fs_name_check("..", 2), -EINVAL);
	CHECK_EQ(fs_name_check("a/b", 3), -EINVAL);
	CHECK_EQ(fs_name_check("a\0b", 3), -EINVAL);
	CHECK_EQ(fs_xattr_check("user.a", 6, 0), 0);
	CHECK_EQ(fs_xattr_check("user.a", 6, FS_XATTR_VALUE_MAX(6)), 0);
	CHECK_EQ(fs_xattr_check("user.a", 6, FS_XATTR_VALUE_MAX(6) + 1),
		 -E2BIG);
	CHECK_EQ(fs_xattr_check("", 0, 1), -ERANGE);
	CHECK_EQ(fs_xattr_check(name, 256, 1), -ERANGE);
	CHECK_EQ(fs_xattr_check("u\0a", 3, 1), -EINVAL);
	CHECK_EQ(FS_XATTR_VALUE_MAX(255), 2813);
}

/* ---- superblock ---- */

#define TEST_MAX (3 * VOL_PG_BLOCKS + 40000) /* last PG partial */

static const uint8_t vol_uuid[16] = { 0xA1, 0xA2, 0xA3 };
static const uint8_t fsid[16] = { 0xF1, 0xF2, 0xF3 };

static void sample_sb(struct fs_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	memcpy(sb->fsid, fsid, 16);
	memcpy(sb->vol_uuid, vol_uuid, 16);
	for (int i = 0; i < 16; i++)
		sb->hash_key[i] = (uint8_t)(0x40 + i);
	sb->gen = 5;
	sb->root_lba = VOL_PG_BLOCKS + 500;
	sb->root_height = 2;
	sb->next_ino = 100;
	sb->used_blocks = 1000;
	sb->pg_count = 2;
	sb->data_hint = 300;
	sb->meta_hint = VOL_PG_BLOCKS + 150;
	sb->crtime_sec = -5;
	sb->crtime_nsec = 999999999;
	sb->compat = 0x8000;
}

static int sb_decode_ex(const uint8_t *blk, struct fs_sb *out)
{
	struct fs_sb_expect ex = { .vol_uuid = vol_uuid,
				   .max_blocks = TEST_MAX };

	return fs_sb_decode(blk, &ex, out);
}

/* Field offsets (fs_format.h, superblock table). */
static void test_sb_layout(void)
{
	static uint8_t blk[BLK];
	struct fs_sb sb, got;

	sample_sb(&sb);
	fs_sb_encode(&sb, TEST_MAX, blk);
	CHECK(!memcmp(blk, "SIXFFSSB", 8));
	CHECK_EQ(get_le(blk + 8, 2), 1);
	CHECK_EQ(get_le(blk + 10, 2), 1);
	CHECK_EQ(get_le(blk + 12, 4), 4096);
	CHECK_EQ(get_le(blk + 16, 4), 4096);
	CHECK_EQ(get_le(blk + 32, 8), 0x8000);
	CHECK(!memcmp(blk + 40, fsid, 16) && !memcmp(blk + 56, vol_uuid, 16));
	CHECK_EQ(blk[72], 0x40);
	CHECK_EQ(get_le(blk + 88, 8), 5);
	CHECK_EQ(get_le(blk + 96, 8), VOL_PG_BLOCKS + 500);
	CHECK_EQ(blk[104], 2);
	CHECK_EQ(get_le(blk + 112, 8), 100);
	CHECK_EQ(get_le(blk + 120, 8), 1000);
	CHECK_EQ(get_le(blk + 128, 8), 2);
	CHECK_EQ(get_le(blk + 136, 8), 300);
	CHECK_EQ(get_le(blk + 144, 8), VOL_PG_BLOCKS + 150);
	CHECK_EQ((int64_t)get_le(blk + 152, 8), -5);
	CHECK_EQ(get_le(blk + 160, 4), 999999999);
	CHECK_EQ(get_le(blk + 4092, 4), fs_crc32c(~0u, blk, 4092) ^ ~0u);
	CHECK_EQ(sb_decode_ex(blk, &got), 0);
	CHECK(got.gen == 5 && got.root_height == 2 && got.pg_count == 2);
	CHECK(got.crtime_sec == -5 && got.compat == 0x8000);
	CHECK(!memcmp(got.hash_key, sb.hash_key, 16));
	CHECK(got.version == 1 && got.min_version == 1);
}

struct sb_break {
	const char *rule;
	unsigned off; /* byte offset */
	int n; /* bytes */
	uint64_t val; /* value written */
	int xor ; /* flip instead, no reseal */
};

static const struct sb_break sb_breaks[] = {
	{ "S1 ", 0, 1, 1, 1 },
	{ "S2 ", 700, 1, 4, 1 },
	{ "S3 ", 10, 2, 2, 0 },
	{ "S3 ", 8, 2, 0, 0 },
	{ "S4 ", 12, 4, 8192, 0 },
	{ "S4 ", 16, 4, 512, 0 },
	{ "S4 ", 24, 8, 1, 0 },
	{ "S4 ", 20, 1, 1, 0 },
	{ "S4 ", 105, 1, 1, 0 },
	{ "S4 ", 3000, 1, 1, 0 },
	{ "S5 ", 60, 1, 9, 0 },
	{ "S6 ", 88, 8, 0, 0 },
	{ "S7 ", 96, 8, 5, 0 },
	{ "S7 ", 96, 8, 2 * VOL_PG_BLOCKS + 500, 0 },
	{ "S7 ", 104, 1, 0, 0 },
	{ "S7 ", 104, 1, 9, 0 },
	{ "S8 ", 112, 8, 2, 0 },
	{ "S8 ", 112, 8, (uint64_t)1 << 63, 0 },
	{ "S9 ", 128, 8, 0, 0 },
	{ "S9 ", 128, 8, 5, 0 },
	{ "S9 ", 120, 8, 2 * (VOL_PG_BLOCKS - 128) + 1, 0 },
	{ "S9 ", 136, 8, 2 * VOL_PG_BLOCKS, 0 },
	{ "S10 ", 160, 4, 1000000000, 0 },
};

static void test_sb_rules(void)
{
	static uint8_t blk[BLK];
	struct fs_sb sb, got;
	int bad = 0;

	sample_sb(&sb);
	for (size_t i = 0; i < sizeof(sb_breaks) / sizeof(sb_breaks[0]); i++) {
		const struct sb_break *b = &sb_breaks[i];

		fs_sb_encode(&sb, TEST_MAX, blk);
		if (b->xor) {
			blk[b->off] ^= (uint8_t)b->val;
		} else {
			put_le(blk + b->off, b->val, b->n);
			reseal(blk);
		}
		bad += expect_rule(sb_decode_ex(blk, &got), b->rule,
				   "superblock");
	}
	CHECK_EQ(bad, 0);
}

/* ---- PG descriptor, bitmap ---- */

static void sample_pgd(struct fs_pgd *d, uint64_t pg)
{
	fs_pgd_init(d, pg, TEST_MAX);
	d->win_used[0] = 10;
	d->win_used[d->nwin - 1] = 7;
	d->used = 17;
}

static int pgd_decode_ex(const uint8_t *blk, uint64_t pg, struct fs_pgd *d)
{
	struct fs_pgd_expect ex = {
		.pg = pg,
		.max_blocks = TEST_MAX,
		.fsid = fsid,
		.max_gen = 50,
	};

	return fs_pgd_decode(blk, &ex, d);
}

static void test_pgd(void)
{
	static uint8_t blk[BLK];
	struct fs_pgd d, got;

	sample_pgd(&d, 1);
	CHECK_EQ(d.nwin, 80);
	fs_pgd_encode(&d, fsid, 40, TEST_MAX, blk);
	CHECK(!memcmp(blk, "SIXFPGDS", 8));
	CHECK_EQ(get_le(blk + 12, 2), 80);
	CHECK_EQ(get_le(blk + 16, 8), 1);
	CHECK_EQ(get_le(blk + 24, 8), 40);
	CHECK(!memcmp(blk + 32, fsid, 16));
	CHECK_EQ(get_le(blk + 48, 4), 17);
	CHECK_EQ(get_le(blk + 64, 2), 10);
	CHECK_EQ(get_le(blk + 64 + 2 * 79, 2), 7);
	CHECK_EQ(pgd_decode_ex(blk, 1, &got), 0);
	CHECK(got.used == 17 && got.gen == 40 && got.win_used[79] == 7);
	/* Never written: an empty PG; the partial last PG has 2 windows. */
	memset(blk, 0, BLK);
	CHECK_EQ(pgd_decode_ex(blk, 3, &got), 0);
	CHECK(got.used == 0 && got.nwin == 2 && got.gen == 0);
	CHECK_EQ(expect_rule(pgd_decode_ex(blk, 4, &got), "P8 ", "past max"),
		 0);
}

struct pgd_break {
	const char *rule;
	uint64_t pg; /* PG encoded (1 full, 3 partial) */
	unsigned off;
	int n;
	uint64_t val;
	int xor ;
};

static const struct pgd_break pgd_breaks[] = {
	{ "P1 ", 1, 2, 1, 1, 1 },      { "P2 ", 1, 2000, 1, 2, 1 },
	{ "P3 ", 1, 10, 2, 2, 0 },     { "P4 ", 1, 14, 1, 1, 0 },
	{ "P4 ", 1, 55, 1, 1, 0 },     { "P4 ", 1, 3000, 1, 1, 0 },
	{ "P5 ", 1, 16, 8, 2, 0 },     { "P6 ", 1, 35, 1, 0x77, 0 },
	{ "P7 ", 1, 24, 8, 51, 0 },    { "P8 ", 1, 12, 2, 79, 0 },
	{ "P9 ", 1, 64, 2, 32641, 0 }, { "P9 ", 3, 64 + 2, 2, 7233, 0 },
	{ "P9 ", 3, 64 + 4, 2, 1, 0 }, { "P10 ", 1, 48, 4, 18, 0 },
};

static void test_pgd_rules(void)
{
	static uint8_t blk[BLK];
	struct fs_pgd d, got;
	int bad = 0;

	for (size_t i = 0; i < sizeof(pgd_breaks) / sizeof(pgd_breaks[0]);
	     i++) {
		const struct pgd_break *b = &pgd_breaks[i];

		sample_pgd(&d, b->pg);
		fs_pgd_encode(&d, fsid, 40, TEST_MAX, blk);
		if (b->xor) {
			blk[b->off] ^= (uint8_t)b->val;
		} else {
			put_le(blk + b->off, b->val, b->n);
			reseal(blk);
		}
		bad += expect_rule(pgd_decode_ex(blk, b->pg, &got), b->rule,
				   "PG descriptor");
	}
	CHECK_EQ(bad, 0);
}

static void test_bitmap(void)
{
	static uint8_t blk[BLK];
	int bad = 0;

	memset(blk, 0, BLK);
	CHECK_EQ(fs_bitmap_verify(blk, 0, 0, TEST_MAX, 0), 0);
	blk[16] = 0x81; /* blocks 128 and 135: data */
	blk[4095] = 0x80;
	CHECK_EQ(fs_bitmap_count(blk), 3);
	CHECK_EQ(fs_bitmap_verify(blk, 0, 0, TEST_MAX, 3), 0);
	bad += expect_rule(fs_bitmap_verify(blk, 0, 0, TEST_MAX, 2), "B3 ",
			   "count");
	blk[15] = 0x80; /* block 127: reserved */
	bad += expect_rule(fs_bitmap_verify(blk, 0, 0, TEST_MAX, 4), "B1 ",
			   "reserved");
	CHECK_EQ(fs_bitmap_verify(blk, 0, 1, TEST_MAX, 4), 0);
	/* PG 3 window 1 holds 7232 blocks: bit 7232 is past the end. */
	memset(blk, 0, BLK);
	blk[7231 / 8] = 0x80;
	CHECK_EQ(fs_bitmap_verify(blk, 3, 1, TEST_MAX, 1), 0);
	blk[7232 / 8] |= 1;
	bad += expect_rule(fs_bitmap_verify(blk, 3, 1, TEST_MAX, 2), "B2 ",
			   "past end");
	CHECK_EQ(bad, 0);
}

/* ---- items ---- */

static uint8_t hkey[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

static void sample_inode(struct fs_inode *in, uint32_t type)
{
	memset(in, 0, sizeof(*in));
	in->mode = type | 0644;
	in->nlink = 3;
	in->uid = 1000;
	in->gid = 1001;
	in->size = 123456789;
	in->blocks = 30141;
	in->generation = 77;
	in->atime = (struct fs_time){ 1700000000, 1 };
	in->mtime = (struct fs_time){ -1, 999999999 };
	in->ctime = (struct fs_time){ 5, 6 };
	in->crtime = (struct fs_time){ 7, 8 };
	if (type == FS_S_IFDIR) {
		in->next_index = 3;
		in->parent = 16;
	}
	if (type == FS_S_IFCHR)
		in->rdev = 0x0801;
}

static int time_eq(const struct fs_time *a, const struct fs_time *b)
{
	return a->sec == b->sec && a->nsec == b->nsec;
}

static int inode_eq(const struct fs_inode *a, const struct fs_inode *b)
{
	return a->mode == b->mode && a->nlink == b->nlink && a->uid == b->uid &&
	       a->gid == b->gid && a->size == b->size &&
	       a->blocks == b->blocks && a->rdev == b->rdev &&
	       a->flags == b->flags && a->generation == b->generation &&
	       time_eq(&a->atime, &b->atime) && time_eq(&a->mtime, &b->mtime) &&
	       time_eq(&a->ctime, &b->ctime) &&
	       time_eq(&a->crtime, &b->crtime) &&
	       a->next_index == b->next_index && a->parent == b->parent;
}

static void test_inode(void)
{
	struct fs_bt_key k = fs_key_inode(42);
	uint8_t buf[FS_INODE_BYTES];
	struct fs_inode in, got;

	sample_inode(&in, FS_S_IFREG);
	CHECK_EQ(fs_inode_encode(&in, buf), 128);
	CHECK_EQ(get_le(buf + 0, 4), 0100644);
	CHECK_EQ(get_le(buf + 4, 4), 3);
	CHECK_EQ(get_le(buf + 8, 4), 1000);
	CHECK_EQ(get_le(buf + 12, 4), 1001);
	CHECK_EQ(get_le(buf + 16, 8), 123456789);
	CHECK_EQ(get_le(buf + 24, 8), 30141);
	CHECK_EQ(get_le(buf + 48, 8), 77);
	CHECK_EQ(get_le(buf + 56, 8), 1700000000);
	CHECK_EQ((int64_t)get_le(buf + 64, 8), -1);
	CHECK_EQ(get_le(buf + 80, 8), 7);
	CHECK_EQ(get_le(buf + 88, 4), 1);
	CHECK_EQ(get_le(buf + 92, 4), 999999999);
	CHECK_EQ(get_le(buf + 100, 4), 8);
	CHECK_EQ(fs_inode_decode(&k, buf, sizeof(buf), &got), 0);
	CHECK(inode_eq(&got, &in));
	sample_inode(&in, FS_S_IFDIR);
	fs_inode_encode(&in, buf);
	CHECK_EQ(get_le(buf + 104, 8), 3);
	CHECK_EQ(fs_item_verify(&k, buf, sizeof(buf), NULL), 0);
	sample_inode(&in, FS_S_IFCHR);
	fs_inode_encode(&in, buf);
	CHECK_EQ(get_le(buf + 32, 8), 0x0801);
	CHECK_EQ(fs_item_verify(&k, buf, sizeof(buf), NULL), 0);
}

struct item_break {
	const char *rule;
	uint64_t objectid, offset; /* key */
	unsigned off; /* value byte */
	int n;
	uint64_t val;
	int len_delta; /* value length change */
};

static const struct item_break inode_breaks[] = {
	{ "K1 ", 5, 0, 0, 0, 0, 0 },
	{ "K1 ", 0, 0, 0, 0, 0, 0 },
	{ "I1 ", 42, 1, 0, 0, 0, 0 },
	{ "I1 ", 42, 0, 0, 0, 0, -1 },
	{ "I2 ", 42, 0, 0, 4, 0644, 0 },
	{ "I2 ", 42, 0, 0, 4, 0030644, 0 },
	{ "I2 ", 42, 0, 0, 4, 0300644, 0 },
	{ "I3 ", 42, 0, 88, 4, 1000000000, 0 },
	{ "I3 ", 42, 0, 100, 4, 0xFFFFFFFF, 0 },
	{ "I4 ", 42, 0, 40, 8, 1, 0 },
	{ "I4 ", 42, 0, 127, 1, 1, 0 },
	{ "I4 ", 42, 0, 32, 8, 5, 0 },
	{ "I5 ", 42, 0, 104, 8, 3, 0 },
	{ "I5 ", 42, 0, 0, 4, 040755, 0 },
};

static void test_inode_rules(void)
{
	uint8_t buf[FS_INODE_BYTES];
	struct fs_inode in, got;
	int bad = 0;

	sample_inode(&in, FS_S_IFREG);
	for (size_t i = 0; i < sizeof(inode_breaks) / sizeof(inode_breaks[0]);
	     i++) {
		const struct item_break *b = &inode_breaks[i];
		struct fs_bt_key k =
			fs_key(b->objectid, FS_ITEM_INODE, b->offset);

		fs_inode_encode(&in, buf);
		put_le(buf + b->off, b->val, b->n);
		bad += expect_rule(fs_inode_decode(&k, buf,
						   sizeof(buf) + b->len_delta,
						   &got),
				   b->rule, "inode");
	}
	CHECK_EQ(bad, 0);
}

static void sample_dirent(struct fs_dirent *d, const char *name)
{
	memset(d, 0, sizeof(*d));
	d->ino = 4242;
	d->cookie = 17;
	d->type = FS_FT_OF_MODE(FS_S_IFREG);
	d->name_len = (uint8_t)strlen(name);
	memcpy(d->name, name, d->name_len);
}

static void test_dirent(void)
{
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	uint64_t h = fs_name_hash(hkey, "hello.txt", 9);
	struct fs_bt_key k = fs_key_dirent(1, h | 2);
	struct fs_bt_key ki = fs_key_dirindex(1, 17);
	struct fs_dirent d, got;
	size_t len;

	sample_dirent(&d, "hello.txt");
	len = fs_dirent_encode(&d, buf);
	CHECK_EQ(len, 29);
	CHECK_EQ(get_le(buf, 8), 4242);
	CHECK_EQ(get_le(buf + 8, 8), 17);
	CHECK_EQ(buf[16], 8); /* DT_REG */
	CHECK_EQ(buf[17], 9);
	CHECK(!memcmp(buf + 20, "hello.txt", 9));
	CHECK_EQ(fs_dirent_decode(&k, buf, len, hkey, &got), 0);
	CHECK(got.ino == 4242 && got.cookie == 17 && got.type == 8);
	CHECK(!strcmp(got.name, "hello.txt") && got.name_len == 9);
	d.cookie = h | 2; /* the DIRINDEX names its DIRENT */
	len = fs_dirent_encode(&d, buf);
	CHECK_EQ(fs_dirent_decode(&ki, buf, len, hkey, &got), 0);
	CHECK_EQ(fs_item_verify(&ki, buf, len, hkey), 0);
	sample_dirent(&d, "x");
	memset(d.name, 'x', 255);
	d.name_len = 255;
	len = fs_dirent_encode(&d, buf);
	k = fs_key_dirent(1, fs_name_hash(hkey, d.name, 255));
	CHECK_EQ(fs_dirent_decode(&k, buf, len, hkey, &got), 0);
	CHECK_EQ(got.name_len, 255);
	CHECK_EQ(got.name[255], 0);
}

static void test_dirent_rules(void)
{
	uint8_t buf[FS_DIRENT_MAX_BYTES + 8];
	uint64_t h = fs_name_hash(hkey, "abc", 3);
	struct fs_bt_key k = fs_key_dirent(1, h), ki = fs_key_dirindex(1, 3);
	struct fs_dirent d, got;
	size_t len;
	int bad = 0;

#define DBREAK(rule, key, stmt, ln)                                          \
	do {                                                                 \
		sample_dirent(&d, "abc");                                    \
		d.cookie = (key).type == FS_ITEM_DIRENT ? 5 : h;             \
		len = fs_dirent_encode(&d, buf);                             \
		stmt;                                                        \
		bad += expect_rule(fs_dirent_decode(&(key), buf, (ln), hkey, \
						    &got),                   \
				   rule, "dirent " #stmt);                   \
	} while (0)

	DBREAK("K1 ", ((struct fs_bt_key){ 3, FS_ITEM_DIRENT, h }), (void)0,
	       len);
	DBREAK("K1 ", ((struct fs_bt_key){ 1, FS_ITEM_EXTENT, h }), (void)0,
	       len);
	DBREAK("D1 ", k, (void)0, len + 1);
	DBREAK("D1 ", k, (void)0, 19);
	DBREAK("D1 ", k, buf[17] = 0, len);
	DBREAK("D1 ", k, buf[18] = 1, len);
	DBREAK("D2 ", k, buf[21] = '/', len);
	DBREAK("D2 ", k, buf[21] = 0, len);
	DBREAK("D2 ", k, (buf[17] = 2, buf[20] = buf[21] = '.'), len - 1);
	DBREAK("D2 ", k, (buf[17] = 1, buf[20] = '.'), len - 2);
	DBREAK("D3 ", k, put_le(buf, 0, 8), len);
	DBREAK("D3 ", k, buf[16] = 3, len);
	DBREAK("D4 ", k, buf[22] = 'd', len);
	DBREAK("D4 ", k, put_le(buf + 8, 2, 8), len);
	DBREAK("D4 ", ki, put_le(buf + 8, h ^ 0x100, 8), len);
	DBREAK("D4 ", ((struct fs_bt_key){ 1, FS_ITEM_DIRINDEX, 2 }), (void)0,
	       len);
#undef DBREAK
	/* Without a key, the hash rule is skipped. */
	sample_dirent(&d, "abc");
	d.cookie = 9;
	len = fs_dirent_encode(&d, buf);
	k.offset ^= 0x1000;
	CHECK_EQ(fs_dirent_decode(&k, buf, len, NULL, &got), 0);
	CHECK_EQ(bad, 0);
}

static void test_extent(void)
{
	struct fs_extent e = { VOL_PG_BLOCKS + 200, 300,
			       FS_EXTENT_F_UNWRITTEN },
			 got;
	struct fs_bt_key k = fs_key_extent(99, 1000);
	uint8_t buf[FS_EXTENT_BYTES + 1];
	int bad = 0;

	CHECK_EQ(fs_extent_encode(&e, buf), 16);
	CHECK_EQ(get_le(buf, 8), VOL_PG_BLOCKS + 200);
	CHECK_EQ(get_le(buf + 8, 4), 300);
	CHECK_EQ(get_le(buf + 12, 4), 1);
	CHECK_EQ(fs_extent_decode(&k, buf, 16, &got), 0);
	CHECK(got.lba == e.lba && got.nblocks == 300 && got.flags == 1);
#define EBREAK(rule, key, stmt, ln)                                           \
	do {                                                                  \
		fs_extent_encode(&e, buf);                                    \
		stmt;                                                         \
		bad += expect_rule(fs_extent_decode(&(key), buf, (ln), &got), \
				   rule, "extent " #stmt);                    \
	} while (0)
	EBREAK("K1 ", ((struct fs_bt_key){ 0, FS_ITEM_EXTENT, 0 }), (void)0,
	       16);
	EBREAK("E1 ", k, (void)0, 15);
	EBREAK("E1 ", k, buf[12] = 2, 16);
	EBREAK("E2 ", k, put_le(buf + 8, 0, 4), 16);
	EBREAK("E2 ",
	       ((struct fs_bt_key){ 99, FS_ITEM_EXTENT,
				    FS_MAX_FILE_BLOCKS - 299 }),
	       (void)0, 16);
	EBREAK("E3 ", k, put_le(buf, 127, 8), 16);
	EBREAK("E3 ", k, put_le(buf, 2 * VOL_PG_BLOCKS - 299, 8), 16);
	EBREAK("E3 ", k, put_le(buf, VOL_MAX_BLOCKS - 100, 8), 16);
#undef EBREAK
	put_le(buf, 2 * VOL_PG_BLOCKS - 300, 8); /* ends at the PG's end */
	CHECK_EQ(fs_extent_decode(&k, buf, 16, &got), 0);
	CHECK_EQ(bad, 0);
}

static void test_xattr(void)
{
	static uint8_t buf[FS_BT_MAX_VALUE_BYTES], big[FS_BT_MAX_VALUE_BYTES];
	uint64_t h = fs_name_hash(hkey, "user.test", 9);
	struct fs_bt_key k = fs_key_xattr(70, h | 1);
	struct fs_xattr x;
	size_t len;
	int bad = 0;

	len = fs_xattr_encode("user.test", 9, "hello", 5, buf);
	CHECK_EQ(len, 18);
	CHECK(buf[0] == 9 && buf[1] == 0 && get_le(buf + 2, 2) == 5);
	CHECK(!memcmp(buf + 4, "user.test", 9) && !memcmp(buf + 13, "hel", 3));
	CHECK_EQ(fs_xattr_decode(&k, buf, len, hkey, &x), 0);
	CHECK(x.name_len == 9 && x.value_len == 5);
	CHECK(!memcmp(x.name, "user.test", 9) && !memcmp(x.value, "hello", 5));
	/* The largest value fills an item. */
	memset(big, 0xAB, FS_XATTR_VALUE_MAX(9));
	len = fs_xattr_encode("user.test", 9, big, FS_XATTR_VALUE_MAX(9), buf);
	CHECK_EQ(len, FS_BT_MAX_VALUE_BYTES);
	CHECK_EQ(fs_xattr_decode(&k, buf, len, hkey, &x), 0);
#define XBREAK(rule, key, stmt, ln)                                         \
	do {                                                                \
		len = fs_xattr_encode("user.test", 9, "hello", 5, buf);     \
		stmt;                                                       \
		bad += expect_rule(fs_xattr_decode(&(key), buf, (ln), hkey, \
						   &x),                     \
				   rule, "xattr " #stmt);                   \
	} while (0)
	XBREAK("K1 ", ((struct fs_bt_key){ 70, FS_ITEM_DIRENT, h }), (void)0,
	       len);
	XBREAK("X1 ", k, (void)0, 3);
	XBREAK("X1 ", k, (void)0, len - 1);
	XBREAK("X1 ", k, buf[0] = 0, len);
	XBREAK("X1 ", k, buf[1] = 1, len);
	XBREAK("X2 ", k, buf[6] = 0, len);
	XBREAK("X2 ", k, buf[6] = 'x', len);
#undef XBREAK
	CHECK_EQ(bad, 0);
}

static void test_orphan_and_keys(void)
{
	struct fs_bt_key k = fs_key_orphan(123), a, b;
	int bad = 0;

	CHECK_EQ(fs_orphan_decode(&k, NULL, 0), 0);
	CHECK_EQ(fs_item_verify(&k, NULL, 0, hkey), 0);
	bad += expect_rule(fs_orphan_decode(&k, "x", 1), "O1 ", "orphan");
	k.offset = 3;
	bad += expect_rule(fs_orphan_decode(&k, NULL, 0), "K1 ", "orphan");
	k = fs_key(123, FS_ITEM_ORPHAN, 0);
	bad += expect_rule(fs_orphan_decode(&k, NULL, 0), "K1 ", "orphan");
	k = fs_key(123, 2, 0);
	bad += expect_rule(fs_item_verify(&k, NULL, 0, hkey), "K1 ", "type");
	CHECK_EQ(bad, 0);
	/* An inode's items sort together, in the table's order. */
	a = fs_key_inode(500);
	b = fs_key_xattr(500, 0);
	CHECK(fs_bt_key_cmp(&a, &b) < 0);
	a = fs_key_xattr(500, UINT64_MAX);
	b = fs_key_dirent(500, 0);
	CHECK(fs_bt_key_cmp(&a, &b) < 0);
	a = fs_key_dirindex(500, UINT64_MAX);
	b = fs_key_extent(500, 0);
	CHECK(fs_bt_key_cmp(&a, &b) < 0);
	a = fs_key_extent(500, UINT64_MAX);
	b = fs_key_inode(501);
	CHECK(fs_bt_key_cmp(&a, &b) < 0);
	a = fs_key_extent(FS_INO_MAX, UINT64_MAX);
	b = fs_key_orphan(1);
	CHECK(fs_bt_key_cmp(&a, &b) < 0);
	CHECK(fs_ino_valid(FS_ROOT_INO) && fs_ino_valid(16));
	CHECK(!fs_ino_valid(0) && !fs_ino_valid(15) &&
	      !fs_ino_valid(FS_ORPHAN_OBJECTID));
}

/* ---- fuzz ---- */

static unsigned fuzz_accepted; /* values a decoder accepted */

/* Decode val under key k; if accepted, it must re-encode to the same. */
static int fuzz_item(const struct fs_bt_key *k, const uint8_t *val, size_t len)
{
	uint8_t buf[FS_BT_MAX_VALUE_BYTES];
	union {
		struct fs_inode in;
		struct fs_dirent d;
		struct fs_extent e;
		struct fs_xattr x;
	} u;
	int ret = fs_item_verify(k, val, len, hkey);

	if (ret != 0 && ret != -EUCLEAN)
		return 1;
	if (ret)
		return 0;
	fuzz_accepted++;
	switch (k->type) {
	case FS_ITEM_INODE:
		ret = fs_inode_decode(k, val, len, &u.in);
		return ret || fs_inode_encode(&u.in, buf) != len ||
		       memcmp(buf, val, len);
	case FS_ITEM_DIRENT:
	case FS_ITEM_DIRINDEX:
		ret = fs_dirent_decode(k, val, len, hkey, &u.d);
		return ret || fs_dirent_encode(&u.d, buf) != len ||
		       memcmp(buf, val, len);
	case FS_ITEM_EXTENT:
		ret = fs_extent_decode(k, val, len, &u.e);
		return ret || fs_extent_encode(&u.e, buf) != len ||
		       memcmp(buf, val, len);
	case FS_ITEM_XATTR:
		ret = fs_xattr_decode(k, val, len, hkey, &u.x);
		return ret ||
		       fs_xattr_encode(u.x.name, u.x.name_len, u.x.value,
				       u.x.value_len, buf) != len ||
		       memcmp(buf, val, len);
	}
	return 0;
}

/* A valid value of item type i into buf (its key to *k): its length. */
static size_t valid_item(int i, struct fs_bt_key *k, uint8_t *buf)
{
	struct fs_inode in;
	struct fs_dirent d;
	struct fs_extent e = { VOL_PG_BLOCKS + 128, 10, 0 };

	switch (i) {
	case 0:
		sample_inode(&in, i % 2 ? FS_S_IFDIR : FS_S_IFREG);
		*k = fs_key_inode(77);
		return fs_inode_encode(&in, buf);
	case 1:
		sample_dirent(&d, "fuzzed-name");
		*k = fs_key_dirent(77, fs_name_hash(hkey, "fuzzed-name", 11));
		return fs_dirent_encode(&d, buf);
	case 2:
		*k = fs_key_extent(77, 5);
		return fs_extent_encode(&e, buf);
	default:
		*k = fs_key_xattr(77, fs_name_hash(hkey, "user.f", 6));
		return fs_xattr_encode("user.f", 6, "value", 5, buf);
	}
}

static void test_fuzz_items(void)
{
	static const uint8_t types[] = { FS_ITEM_INODE,
					 FS_ITEM_XATTR,
					 FS_ITEM_DIRENT,
					 FS_ITEM_DIRINDEX,
					 FS_ITEM_EXTENT,
					 FS_ITEM_ORPHAN,
					 0,
					 255 };
	uint8_t val[FS_BT_MAX_VALUE_BYTES];
	int bad = 0;

	for (int t = 0; t < 50000; t++) {
		struct fs_bt_key k;
		size_t len;

		if (t % 2) { /* random bytes */
			k = fs_key(rnd() % 40, types[rnd_below(8)], rnd());
			len = rnd_below(300);
			for (size_t i = 0; i < len; i++)
				val[i] = (uint8_t)rnd();
		} else { /* a valid value, 1..3 bytes changed */
			len = valid_item((int)rnd_below(4), &k, val);
			for (int f = 1 + (int)rnd_below(3); f > 0; f--)
				val[rnd_below((uint32_t)len)] ^=
					(uint8_t)(1u << rnd_below(8));
		}
		bad += fuzz_item(&k, val, len);
	}
	printf("  %u of 50000 fuzzed values accepted (and re-encoded "
	       "alike)\n",
	       fuzz_accepted);
	CHECK(fuzz_accepted > 0);
	CHECK_EQ(bad, 0);
}

static void test_fuzz_blocks(void)
{
	static uint8_t blk[BLK], again[BLK];
	struct fs_sb sb, got;
	struct fs_pgd d, gd;
	int bad = 0, ok = 0;

	for (int t = 0; t < 4000; t++) {
		int ret;

		sample_sb(&sb);
		fs_sb_encode(&sb, TEST_MAX, blk);
		for (int f = 1 + (int)rnd_below(3); f > 0; f--)
			blk[rnd_below(t % 2 ? 176 : BLK - 4)] ^=
				(uint8_t)(1u << rnd_below(8));
		reseal(blk);
		ret = sb_decode_ex(blk, &got);
		bad += ret != 0 && ret != -EUCLEAN;
		if (!ret && got.version == 1 && got.min_version == 1) {
			ok++;
			fs_sb_encode(&got, TEST_MAX, again);
			bad += memcmp(again, blk, BLK) != 0;
		}
		sample_pgd(&d, 3);
		fs_pgd_encode(&d, fsid, 40, TEST_MAX, blk);
		for (int f = 1 + (int)rnd_below(3); f > 0; f--)
			blk[rnd_below(t % 2 ? 224 : BLK - 4)] ^=
				(uint8_t)(1u << rnd_below(8));
		reseal(blk);
		ret = pgd_decode_ex(blk, 3, &gd);
		bad += ret != 0 && ret != -EUCLEAN;
		if (!ret && get_le(blk + 8, 2) == 1 &&
		    get_le(blk + 10, 2) == 1) {
			ok++;
			fs_pgd_encode(&gd, fsid, gd.gen, TEST_MAX, again);
			bad += memcmp(again, blk, BLK) != 0;
		}
	}
	CHECK_EQ(bad, 0);
	CHECK(ok > 0);
}

/* ---- encoders refuse bad values ---- */

/* fn() in a child must abort (fs_panic) rather than return. */
static int aborts(void (*fn)(void))
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		int fd = open("/dev/null",
			      O_WRONLY); /* quiet the panic message */

		if (fd >= 0)
			dup2(fd, 2);
		fn();
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void bad_inode(void)
{
	struct fs_inode in;
	uint8_t buf[FS_INODE_BYTES];

	sample_inode(&in, FS_S_IFREG);
	in.mode = 0644; /* no file type */
	fs_inode_encode(&in, buf);
}

static void bad_extent(void)
{
	struct fs_extent e = { 5, 1, 0 }; /* in the allocator's blocks */
	uint8_t buf[FS_EXTENT_BYTES];

	fs_extent_encode(&e, buf);
}

static void bad_pgd(void)
{
	struct fs_pgd d;
	uint8_t *blk = malloc(BLK);

	sample_pgd(&d, 1);
	d.used++;
	if (blk)
		fs_pgd_encode(&d, fsid, 1, TEST_MAX, blk);
	free(blk);
}

static void test_encoders_refuse(void)
{
	CHECK(aborts(bad_inode));
	CHECK(aborts(bad_extent));
	CHECK(aborts(bad_pgd));
}

int main(void)
{
	const char *seed = getenv("TEST_SEED");
	double t0 = now_s();

	rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	printf("fs_items_test: TEST_SEED=%llu\n",
	       (unsigned long long)rng_state);
	vol_set_log(test_log);
	run("siphash", test_siphash);
	run("names", test_names);
	run("sb layout", test_sb_layout);
	run("sb rules", test_sb_rules);
	run("pg descriptor", test_pgd);
	run("pgd rules", test_pgd_rules);
	run("bitmap", test_bitmap);
	run("inode", test_inode);
	run("inode rules", test_inode_rules);
	run("dirent", test_dirent);
	run("dirent rules", test_dirent_rules);
	run("extent", test_extent);
	run("xattr", test_xattr);
	run("orphan, keys", test_orphan_and_keys);
	run("fuzz items", test_fuzz_items);
	run("fuzz blocks", test_fuzz_blocks);
	run("encoders refuse", test_encoders_refuse);
	printf("fs_items_test: %.1f s\n", now_s() - t0);
	return CHECK_DONE();
}
