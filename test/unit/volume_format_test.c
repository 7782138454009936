/*
 * volume_format_test.c - the on-disk structures of a zone
 * (volume/vol_format.c): CRC32C against a slow bit-by-bit reference
 * (random, unaligned, end-of-buffer and zero-length inputs, the standard
 * check value); encode/decode round trips of the superblock, key file
 * frame, checkpoint, batch header and records, meta entry and WIM page;
 * their byte layout read back at the literal offsets of the tables in
 * vol_format.h; every byte of every encoded structure flipped (decode must
 * fail: the CRCs cover everything); every validation rule broken on
 * purpose with the CRC made right again (rejected), and the fields the
 * rules leave alone (reserved, compat, version of the writer) accepted;
 * the meta CRC binding the LBA; vol_batch_nhdr bounds; vol_parse_size;
 * and the golden version-1 images in test/vectors/volume_v1_*.bin.
 *
 * Golden images: made ONCE by `volume_format_test --regen DIR` (it refuses
 * to overwrite a file).  Never rerun it for version 1: the files must
 * decode forever; a format change adds version-2 files next to them.
 * The test looks for them in $SIXFOLD_VECTORS, ./test/vectors, or
 * ../../test/vectors next to the program.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test/lib/check.h"
#include "volume/vol_format.h"
#include "volume/volume.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the log callback: quiet, remembers the last message ---- */

static int log_count;
static char log_last[1024];

static void quiet_log(int level, const char *msg)
{
	(void)level;
	log_count++;
	snprintf(log_last, sizeof(log_last), "%s", msg);
}

/* ---- reference helpers (literal offsets, no code of vol_format) ---- */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* CRC32C, one bit at a time: reflected polynomial 0x82F63B78, no xors. */
static uint32_t crc_ref(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return crc;
}

/* The iSCSI convention over buf with the 4 bytes at crc_off as zero. */
static uint32_t crc_ref_struct(const uint8_t *buf, size_t len, size_t crc_off)
{
	static const uint8_t zero[4];
	uint32_t crc = ~0u;

	crc = crc_ref(crc, buf, crc_off);
	crc = crc_ref(crc, zero, 4);
	crc = crc_ref(crc, buf + crc_off + 4, len - crc_off - 4);
	return crc ^ ~0u;
}

/* Make the CRC at crc_off right again after an edit. */
static void refix(uint8_t *buf, size_t len, size_t crc_off)
{
	put32(buf + crc_off, crc_ref_struct(buf, len, crc_off));
}

/* Meta entry CRC: the LBA (LE) then bytes 0..59. */
static uint32_t meta_crc_ref(const uint8_t *e, uint64_t lba)
{
	uint8_t l[8];

	put64(l, lba);
	return crc_ref(crc_ref(~0u, l, 8), e, 60) ^ ~0u;
}

static void meta_refix(uint8_t *e, uint64_t lba)
{
	put32(e + 60, meta_crc_ref(e, lba));
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static void fill_rnd(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/*
 * Flip every byte of buf in turn (xor 0xff, then xor 0x01) and count
 * the decodes that still succeed: each must fail.
 */
typedef int (*decode_fn)(const uint8_t *buf, void *ctx);

static void check_all_flips(const char *what, uint8_t *buf, size_t len,
			    decode_fn decode, void *ctx)
{
	static const uint8_t masks[] = { 0xff, 0x01 };
	long accepted = 0, first = -1;

	CHECK_EQ(decode(buf, ctx), 0); /* the unflipped one is good */
	for (size_t m = 0; m < ARRAY_SIZE(masks); m++)
		for (size_t i = 0; i < len; i++) {
			buf[i] ^= masks[m];
			if (decode(buf, ctx) == 0) {
				accepted++;
				if (first < 0)
					first = (long)i;
			}
			buf[i] ^= masks[m];
		}
	if (accepted)
		fprintf(stderr,
			"%s: %ld flipped copies decoded, first at %ld\n", what,
			accepted, first);
	CHECK_EQ(accepted, 0);
	CHECK_EQ(decode(buf, ctx), 0);
}

/* ---- CRC32C ---- */

static void test_crc(void)
{
	static const char check[] = "123456789";
	enum { BIG = 3 * 4096 + 77 };
	uint8_t *buf = malloc(BIG + 64);
	uint32_t got;

	CHECK_EQ(vol_crc32c(~0u, check, 9) ^ ~0u, 0xE3069283u);
	CHECK_EQ(crc_ref(~0u, (const uint8_t *)check, 9) ^ ~0u, 0xE3069283u);
	if (!buf)
		return;
	fill_rnd(buf, BIG + 64);
	/* Zero length: the seed comes back. */
	CHECK_EQ(vol_crc32c(0x12345678u, buf, 0), 0x12345678u);
	CHECK_EQ(vol_crc32c(~0u, buf + 3, 0), ~0u);
	/* Every short length at every alignment, then random ones. */
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len <= 130; len++) {
			uint32_t seed = (uint32_t)rnd();

			if (vol_crc32c(seed, buf + off, len) !=
			    crc_ref(seed, buf + off, len)) {
				CHECK_EQ(vol_crc32c(seed, buf + off, len),
					 crc_ref(seed, buf + off, len));
				goto out_free;
			}
		}
	for (int i = 0; i < 400; i++) {
		size_t off = rnd() % 64, len = rnd() % BIG;
		uint32_t seed = (uint32_t)rnd();

		got = vol_crc32c(seed, buf + off, len);
		if (got != crc_ref(seed, buf + off, len)) {
			CHECK_EQ(got, crc_ref(seed, buf + off, len));
			break;
		}
	}
	/* Chaining: two halves give the CRC of the whole. */
	got = vol_crc32c(vol_crc32c(~0u, buf + 1, 1000), buf + 1001, 3000);
	CHECK_EQ(got, vol_crc32c(~0u, buf + 1, 4000));
	/* The structure CRC: the field read as zero, whatever it holds. */
	for (size_t off = 0; off + 4 <= 4096; off += 508) {
		CHECK_EQ(vol_crc_struct(buf, 4096, off),
			 crc_ref_struct(buf, 4096, off));
		buf[off] ^= 0x5a;
		CHECK_EQ(vol_crc_struct(buf, 4096, off),
			 crc_ref_struct(buf, 4096, off));
	}
out_free:
	free(buf);
}

/* Inputs that end exactly at the end of their allocation (ASan sees it). */
static void test_crc_end_of_buffer(void)
{
	for (size_t len = 1; len <= 300; len += 7) {
		uint8_t *p = malloc(len);

		if (!p)
			return;
		fill_rnd(p, len);
		for (size_t k = 0; k < len && k < 9; k++)
			CHECK_EQ(vol_crc32c(~0u, p + k, len - k),
				 crc_ref(~0u, p + k, len - k));
		free(p);
	}
}

/* ---- superblock ---- */

static void sb_sample(struct vol_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	fill_rnd(sb->uuid, KEY_UUID_BYTES);
	sb->zone = 3;
	sb->dir = 1;
	sb->ndirs = 2;
	sb->max_blocks = VOL_MAX_BLOCKS - 5;
	sb->log_blocks = 12345;
	sb->epoch = 0x1122334455667788ull;
	sb->seq = 99;
	sb->epoch_lsn = (7ull << 32) + 1;
	sb->created = 1795000000;
	for (int z = 0; z < VOL_ZONES; z++)
		snprintf(sb->specs[z], VOL_PATH_MAX, "/disk%d/zone%d", z, z);
	/* The longest spec that fits: 999 bytes and the NUL. */
	memset(sb->specs[5], 'x', VOL_PATH_MAX - 1);
	sb->specs[5][0] = '/';
	sb->specs[5][VOL_PATH_MAX - 1] = 0;
}

static int sb_equal(const struct vol_sb *a, const struct vol_sb *b)
{
	for (int z = 0; z < VOL_ZONES; z++)
		if (strcmp(a->specs[z], b->specs[z]))
			return 0;
	return !memcmp(a->uuid, b->uuid, KEY_UUID_BYTES) &&
	       a->zone == b->zone && a->dir == b->dir && a->ndirs == b->ndirs &&
	       a->max_blocks == b->max_blocks &&
	       a->log_blocks == b->log_blocks && a->epoch == b->epoch &&
	       a->seq == b->seq && a->epoch_lsn == b->epoch_lsn &&
	       a->created == b->created;
}

static int sb_dec(const uint8_t *buf, void *ctx)
{
	struct vol_sb sb;
	int ret = vol_sb_decode(buf, &sb, "test");

	if (!ret && ctx && !sb_equal(&sb, ctx))
		return 1; /* decoded, but to other values */
	return ret;
}

static void test_sb_layout(const struct vol_sb *sb, const uint8_t *b)
{
	CHECK(!memcmp(b, "SIXFSUPR", 8));
	CHECK_EQ(le32(b + 8), 1);
	CHECK_EQ(le32(b + 12), 1);
	CHECK_EQ(le64(b + 16), 1); /* incompat DIRECT: always written */
	CHECK_EQ(le64(b + 24), 0);
	CHECK(!memcmp(b + 32, sb->uuid, 16));
	CHECK_EQ(le32(b + 48), sb->zone);
	CHECK_EQ(le32(b + 52), sb->dir);
	CHECK_EQ(le32(b + 56), sb->ndirs);
	CHECK_EQ(le32(b + 60), 4096);
	CHECK_EQ(le64(b + 64), 2621440);
	CHECK_EQ(le64(b + 72), sb->max_blocks);
	CHECK_EQ(le64(b + 80), sb->log_blocks);
	CHECK_EQ(le64(b + 88), sb->epoch);
	CHECK_EQ(le64(b + 96), sb->seq);
	CHECK_EQ(le64(b + 104), sb->epoch_lsn);
	CHECK_EQ(le64(b + 112), sb->created);
	for (int z = 0; z < VOL_ZONES; z++)
		CHECK(!strcmp((const char *)b + 1024 + z * 1000, sb->specs[z]));
	for (int i = 120; i < 1024; i++)
		CHECK_EQ(b[i], 0);
	for (int i = 7024; i < 8188; i++)
		CHECK_EQ(b[i], 0);
	CHECK_EQ(le32(b + 8188), crc_ref_struct(b, 8192, 8188));
}

/* Edit the encoded good superblock, refix its CRC, decode. */
struct sb_edit {
	const char *what;
	int off;
	int width; /* 4 or 8 */
	uint64_t value;
	int ok; /* 1: must decode (to the edited value), 0: must fail */
	const char *reason; /* part of the logged rule for a failure */
};

static const struct sb_edit sb_edits[] = {
	{ "min_version 2", 12, 4, 2, 0, "newer" },
	{ "min_version max", 12, 4, UINT32_MAX, 0, "newer" },
	{ "incompat none (before DIRECT)", 16, 8, 0, 1, NULL },
	{ "incompat bit 1", 16, 8, 3, 0, "features" },
	{ "incompat bit 63", 16, 8, 1ull << 63 | 1, 0, "features" },
	{ "zone 6", 48, 4, 6, 0, "zone/dir" },
	{ "zone max", 48, 4, UINT32_MAX, 0, "zone/dir" },
	{ "dir == ndirs", 52, 4, 2, 0, "zone/dir" },
	{ "ndirs 0", 56, 4, 0, 0, "zone/dir" },
	{ "ndirs 9", 56, 4, 9, 0, "zone/dir" },
	{ "block_bytes 8192", 60, 4, 8192, 0, "geometry" },
	{ "block_bytes 0", 60, 4, 0, 0, "geometry" },
	{ "pg_blocks + 1", 64, 8, 2621441, 0, "geometry" },
	{ "max_blocks 0", 72, 8, 0, 0, "max_blocks" },
	{ "max_blocks 2^34 + 1", 72, 8, (1ull << 34) + 1, 0, "max_blocks" },
	{ "log_blocks min - 1", 80, 8, VOL_LOG_MIN_BLOCKS - 1, 0,
	  "log_blocks" },
	{ "log_blocks max + 1", 80, 8, VOL_LOG_MAX_BLOCKS + 1, 0,
	  "log_blocks" },
	{ "log_blocks 2^32 + min", 80, 8, (1ull << 32) + VOL_LOG_MIN_BLOCKS, 0,
	  "log_blocks" },
	/* Accepted: documented ranges and fields no rule checks. */
	{ "version 2 (a newer writer)", 8, 4, 2, 1, NULL },
	{ "compat bits", 24, 8, ~0ull, 1, NULL },
	{ "zone 5", 48, 4, 5, 1, NULL },
	{ "max_blocks 2^34", 72, 8, 1ull << 34, 1, NULL },
	{ "max_blocks 1", 72, 8, 1, 1, NULL },
	{ "log_blocks min", 80, 8, VOL_LOG_MIN_BLOCKS, 1, NULL },
	{ "log_blocks max", 80, 8, VOL_LOG_MAX_BLOCKS, 1, NULL },
	{ "reserved 120", 120, 8, ~0ull, 1, NULL },
	{ "reserved 1016", 1016, 8, ~0ull, 1, NULL },
	{ "reserved 7024", 7024, 8, ~0ull, 1, NULL },
	{ "reserved 8180", 8180, 8, ~0ull, 1, NULL },
};

static void sb_try_edit(const uint8_t *good, const struct sb_edit *e)
{
	static uint8_t b[VOL_SB_BYTES];
	struct vol_sb sb;
	int ret;

	memcpy(b, good, sizeof(b));
	if (e->width == 4)
		put32(b + e->off, (uint32_t)e->value);
	else
		put64(b + e->off, e->value);
	refix(b, sizeof(b), VOL_SB_CRC_OFF);
	log_last[0] = 0;
	ret = vol_sb_decode(b, &sb, "test");
	if (e->ok) {
		if (ret)
			fprintf(stderr, "superblock edit '%s' refused: %s\n",
				e->what, log_last);
		CHECK_EQ(ret, 0);
		if (!ret && e->off == 48)
			CHECK_EQ(sb.zone, e->value);
		if (!ret && e->off == 72)
			CHECK_EQ(sb.max_blocks, e->value);
		if (!ret && e->off == 80)
			CHECK_EQ(sb.log_blocks, e->value);
		return;
	}
	if (ret != -EUCLEAN || !strstr(log_last, e->reason))
		fprintf(stderr, "superblock edit '%s': %d, log '%s'\n", e->what,
			ret, log_last);
	CHECK_EQ(ret, -EUCLEAN);
	CHECK(strstr(log_last, e->reason) != NULL);
}

static void test_superblock(void)
{
	static uint8_t buf[VOL_SB_BYTES], b[VOL_SB_BYTES];
	struct vol_sb sb, out;

	sb_sample(&sb);
	memset(buf, 0xa5, sizeof(buf)); /* encode must clear everything */
	vol_sb_encode(&sb, buf);
	CHECK_EQ(vol_sb_decode(buf, &out, "test"), 0);
	CHECK(sb_equal(&sb, &out));
	test_sb_layout(&sb, buf);
	check_all_flips("superblock", buf, sizeof(buf), sb_dec, &sb);

	for (size_t i = 0; i < ARRAY_SIZE(sb_edits); i++)
		sb_try_edit(buf, &sb_edits[i]);
	/* (1) magic, (2) crc: each with its own message. */
	memcpy(b, buf, sizeof(b));
	b[0] = 'X';
	refix(b, sizeof(b), VOL_SB_CRC_OFF);
	CHECK_EQ(vol_sb_decode(b, &out, "test"), -EUCLEAN);
	CHECK(strstr(log_last, "magic") != NULL);
	memcpy(b, buf, sizeof(b));
	b[8188] ^= 1;
	CHECK_EQ(vol_sb_decode(b, &out, "test"), -EUCLEAN);
	CHECK(strstr(log_last, "CRC") != NULL);
	/* (5) dir < ndirs <= 8: the largest that fits. */
	memcpy(b, buf, sizeof(b));
	put32(b + 52, 7);
	put32(b + 56, 8);
	refix(b, sizeof(b), VOL_SB_CRC_OFF);
	CHECK_EQ(vol_sb_decode(b, &out, "test"), 0);
	CHECK_EQ(out.dir, 7);
	CHECK_EQ(out.ndirs, 8);
	/* (9) a zone spec that fills its 1000 bytes has no NUL. */
	for (int z = 0; z < VOL_ZONES; z++) {
		memcpy(b, buf, sizeof(b));
		memset(b + VOL_SB_SPECS_OFF + z * VOL_PATH_MAX, 'a',
		       VOL_PATH_MAX);
		refix(b, sizeof(b), VOL_SB_CRC_OFF);
		CHECK_EQ(vol_sb_decode(b, &out, "test"), -EUCLEAN);
		CHECK(strstr(log_last, "terminated") != NULL);
	}
}

/* ---- key file frame ---- */

struct kf_ctx {
	const uint8_t *uuid;
	uint64_t gen;
	const uint8_t *hdr;
};

static int kf_dec(const uint8_t *buf, void *ctx)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	struct kf_ctx *c = ctx;
	uint64_t gen = 0;
	int ret = vol_kf_decode(buf, c->uuid, &gen, hdr, "test");

	if (!ret && (gen != c->gen || memcmp(hdr, c->hdr, sizeof(hdr))))
		return 1;
	return ret;
}

static void test_keyfile(void)
{
	static uint8_t buf[VOL_KF_BYTES], b[VOL_KF_BYTES];
	static uint8_t hdr[KEY_HEADER_BYTES], got[KEY_HEADER_BYTES];
	uint8_t uuid[KEY_UUID_BYTES], other[KEY_UUID_BYTES];
	struct kf_ctx c = { uuid, 0xfedcba9876543210ull, hdr };
	uint64_t gen;

	fill_rnd(uuid, sizeof(uuid));
	fill_rnd(hdr, sizeof(hdr));
	memcpy(other, uuid, sizeof(other));
	other[15] ^= 1;
	memset(buf, 0xa5, sizeof(buf));
	vol_kf_encode(buf, uuid, c.gen, hdr);
	CHECK_EQ(vol_kf_decode(buf, uuid, &gen, got, "test"), 0);
	CHECK_EQ(gen, c.gen);
	CHECK(!memcmp(got, hdr, sizeof(hdr)));
	/* Layout. */
	CHECK(!memcmp(buf, "SIXFKEYS", 8));
	CHECK_EQ(le32(buf + 8), 1);
	CHECK_EQ(le32(buf + 12), 1);
	CHECK(!memcmp(buf + 16, uuid, 16));
	CHECK_EQ(le64(buf + 32), c.gen);
	CHECK(!memcmp(buf + 40, hdr, 4096));
	for (int i = 4136; i < 8188; i++)
		CHECK_EQ(buf[i], 0);
	CHECK_EQ(le32(buf + 8188), crc_ref_struct(buf, 8192, 8188));
	check_all_flips("key file", buf, sizeof(buf), kf_dec, &c);

	/* Rules: magic, crc, min_version, uuid of this volume. */
	CHECK_EQ(vol_kf_decode(buf, other, &gen, got, "test"), -EUCLEAN);
	CHECK(strstr(log_last, "another volume") != NULL);
	memcpy(b, buf, sizeof(b));
	memcpy(b, "SIXFKEYZ", 8);
	refix(b, sizeof(b), VOL_KF_CRC_OFF);
	CHECK_EQ(vol_kf_decode(b, uuid, &gen, got, "test"), -EUCLEAN);
	memcpy(b, buf, sizeof(b));
	put32(b + 12, 2);
	refix(b, sizeof(b), VOL_KF_CRC_OFF);
	CHECK_EQ(vol_kf_decode(b, uuid, &gen, got, "test"), -EUCLEAN);
	CHECK(strstr(log_last, "newer") != NULL);
	/* Not checked (documented): the writer's version, reserved bytes. */
	memcpy(b, buf, sizeof(b));
	put32(b + 8, 7);
	put64(b + 4136, ~0ull);
	put64(b + 8180, ~0ull);
	refix(b, sizeof(b), VOL_KF_CRC_OFF);
	CHECK_EQ(kf_dec(b, &c), 0);
}

/* ---- checkpoint ---- */

static int ck_equal(const struct vol_ckpt *a, const struct vol_ckpt *b)
{
	return a->zone == b->zone &&
	       !memcmp(a->uuid, b->uuid, KEY_UUID_BYTES) && a->seq == b->seq &&
	       a->epoch == b->epoch && a->applied_lsn == b->applied_lsn &&
	       a->pg_count == b->pg_count;
}

static int ck_dec(const uint8_t *buf, void *ctx)
{
	struct vol_ckpt ck;
	int ret = vol_ck_decode(buf, &ck);

	if (!ret && !ck_equal(&ck, ctx))
		return 1;
	return ret;
}

static void test_checkpoint(void)
{
	static uint8_t buf[VOL_CK_BYTES], b[VOL_CK_BYTES];
	struct vol_ckpt ck = { .zone = 5,
			       .seq = 1ull << 40,
			       .epoch = 77,
			       .applied_lsn = (77ull << 32) + 12345,
			       .pg_count = 6554 };
	struct vol_ckpt out;

	fill_rnd(ck.uuid, sizeof(ck.uuid));
	memset(buf, 0xa5, sizeof(buf));
	vol_ck_encode(&ck, buf);
	CHECK_EQ(vol_ck_decode(buf, &out), 0);
	CHECK(ck_equal(&ck, &out));
	CHECK(!memcmp(buf, "SIXFCKPT", 8));
	CHECK_EQ(le32(buf + 8), 1);
	CHECK_EQ(le32(buf + 12), ck.zone);
	CHECK(!memcmp(buf + 16, ck.uuid, 16));
	CHECK_EQ(le64(buf + 32), ck.seq);
	CHECK_EQ(le64(buf + 40), ck.epoch);
	CHECK_EQ(le64(buf + 48), ck.applied_lsn);
	CHECK_EQ(le64(buf + 56), ck.pg_count);
	for (int i = 64; i < 4092; i++)
		CHECK_EQ(buf[i], 0);
	CHECK_EQ(le32(buf + 4092), crc_ref_struct(buf, 4096, 4092));
	check_all_flips("checkpoint", buf, sizeof(buf), ck_dec, &ck);

	/* Rules: magic, crc, version exactly 1 (it has no min_version). */
	for (uint32_t ver = 0; ver < 4; ver++) {
		memcpy(b, buf, sizeof(b));
		put32(b + 8, ver);
		refix(b, sizeof(b), VOL_CK_CRC_OFF);
		CHECK_EQ(vol_ck_decode(b, &out), ver == 1 ? 0 : -EUCLEAN);
	}
	memcpy(b, buf, sizeof(b));
	b[7] = 'X';
	refix(b, sizeof(b), VOL_CK_CRC_OFF);
	CHECK_EQ(vol_ck_decode(b, &out), -EUCLEAN);
	/* Zone and uuid are the caller's to check; reserved is ignored. */
	memcpy(b, buf, sizeof(b));
	put64(b + 64, ~0ull);
	put64(b + 4084, ~0ull);
	refix(b, sizeof(b), VOL_CK_CRC_OFF);
	CHECK_EQ(ck_dec(b, &ck), 0);
	/* An all-zero slot (never written) is not a checkpoint. */
	memset(b, 0, sizeof(b));
	CHECK_EQ(vol_ck_decode(b, &out), -EUCLEAN);
}

/* ---- log batches ---- */

static void test_nhdr(void)
{
	CHECK_EQ(vol_batch_nhdr(0), 1);
	CHECK_EQ(vol_batch_nhdr(1), 1);
	CHECK_EQ(vol_batch_nhdr(62), 1); /* 128 + 62 * 64 = 4096 */
	CHECK_EQ(vol_batch_nhdr(63), 2);
	CHECK_EQ(vol_batch_nhdr(126), 2);
	CHECK_EQ(vol_batch_nhdr(127), 3);
	CHECK_EQ(vol_batch_nhdr(VOL_BATCH_MAX_RECS), VOL_BATCH_MAX_HDR);
	for (uint32_t n = 0; n <= VOL_BATCH_MAX_RECS; n++) {
		uint32_t h = vol_batch_nhdr(n), need = 128 + 64 * n;

		if (h * 4096 < need || (h - 1) * 4096 >= need) {
			CHECK_EQ(h, (need + 4095) / 4096);
			break;
		}
	}
}

/* Record i of a sample batch: every fourth a discard. */
static void rec_sample(struct vol_rec *r, uint32_t i, uint64_t first_lsn)
{
	memset(r, 0, sizeof(*r));
	r->lsn = first_lsn + i;
	if (i % 4 == 3) {
		r->kind = VOL_REC_DISCARD;
		r->lba = 1000ull * i;
		r->nblocks = i + 1;
		return;
	}
	r->kind = VOL_REC_WRITE;
	r->lba = (1ull << 34) - 1 - i * 3;
	r->data_crc = 0xC0DE0000u + i;
	for (int k = 0; k < KEY_NONCE_BYTES; k++)
		r->nonce[k] = (uint8_t)(i * 7 + k);
	for (int k = 0; k < KEY_TAG_BYTES; k++)
		r->tag[k] = (uint8_t)(0x80 + i + k);
}

static int rec_equal(const struct vol_rec *a, const struct vol_rec *b)
{
	if (a->lba != b->lba || a->lsn != b->lsn || a->kind != b->kind)
		return 0;
	if (a->kind == VOL_REC_DISCARD)
		return a->nblocks == b->nblocks;
	return a->data_crc == b->data_crc &&
	       !memcmp(a->nonce, b->nonce, KEY_NONCE_BYTES) &&
	       !memcmp(a->tag, b->tag, KEY_TAG_BYTES);
}

static int hdr_equal(const struct vol_batch_hdr *a,
		     const struct vol_batch_hdr *b)
{
	return a->nhdr == b->nhdr && !memcmp(a->uuid, b->uuid, 16) &&
	       a->epoch == b->epoch && a->seq == b->seq &&
	       a->first_lsn == b->first_lsn && a->nrec == b->nrec &&
	       a->ndata == b->ndata && a->pg_count == b->pg_count &&
	       a->write_mask == b->write_mask && a->pos == b->pos;
}

struct batch_ctx {
	const struct vol_batch_hdr *h;
	const struct vol_rec *recs;
	size_t len;
};

/* Both decode steps, as recovery runs them; 1: decoded to other values. */
static int batch_dec(const uint8_t *buf, void *ctx)
{
	static struct vol_rec recs[VOL_BATCH_MAX_RECS];
	struct batch_ctx *c = ctx;
	struct vol_batch_hdr h;
	int ret = vol_batch_decode_hdr(buf, c->len, &h);

	if (!ret)
		ret = vol_batch_decode_recs(buf, &h, recs);
	if (ret)
		return ret;
	if (!hdr_equal(&h, c->h))
		return 1;
	for (uint32_t i = 0; i < h.nrec; i++)
		if (!rec_equal(&recs[i], &c->recs[i]))
			return 1;
	return 0;
}

static void batch_layout(const struct vol_batch_hdr *h,
			 const struct vol_rec *recs, const uint8_t *b)
{
	size_t end = 128 + (size_t)h->nrec * 64;

	CHECK(!memcmp(b, "SIXFLOGB", 8));
	CHECK_EQ(le32(b + 8), 1);
	CHECK_EQ(le32(b + 12), h->nhdr);
	CHECK(!memcmp(b + 16, h->uuid, 16));
	CHECK_EQ(le64(b + 32), h->epoch);
	CHECK_EQ(le64(b + 40), h->seq);
	CHECK_EQ(le64(b + 48), h->first_lsn);
	CHECK_EQ(le32(b + 56), h->nrec);
	CHECK_EQ(le32(b + 60), h->ndata);
	CHECK_EQ(le64(b + 64), h->pg_count);
	CHECK_EQ(le32(b + 72), h->write_mask);
	CHECK_EQ(le32(b + 76), h->pos);
	for (int i = 80; i < 124; i++)
		CHECK_EQ(b[i], 0);
	CHECK_EQ(le32(b + 124), crc_ref_struct(b, h->nhdr * 4096u, 124));
	for (uint32_t i = 0; i < h->nrec; i++) {
		const uint8_t *p = b + 128 + i * 64;
		const struct vol_rec *r = &recs[i];

		CHECK_EQ(le64(p), r->lba);
		CHECK_EQ(le64(p + 8), r->lsn);
		CHECK_EQ(p[16] | p[17] << 8, r->kind);
		CHECK_EQ(p[18] | p[19] << 8, 0);
		if (r->kind == VOL_REC_WRITE) {
			CHECK_EQ(le32(p + 20), r->data_crc);
			CHECK(!memcmp(p + 24, r->nonce, 24));
			CHECK(!memcmp(p + 48, r->tag, 16));
		} else {
			CHECK_EQ(le32(p + 20), 0);
			CHECK_EQ(le64(p + 24), r->nblocks);
			for (int k = 32; k < 64; k++)
				CHECK_EQ(p[k], 0);
		}
	}
	for (size_t i = end; i < h->nhdr * 4096u; i++)
		CHECK_EQ(b[i], 0);
}

/* Encode the sample batch of nrec records into buf (nhdr blocks). */
static void batch_sample(struct vol_batch_hdr *h, struct vol_rec *recs,
			 uint32_t nrec, uint8_t *buf)
{
	memset(h, 0, sizeof(*h));
	fill_rnd(h->uuid, sizeof(h->uuid));
	h->epoch = 3;
	h->seq = 1ull << 33;
	h->first_lsn = (3ull << 32) + 17;
	h->nrec = nrec;
	h->nhdr = vol_batch_nhdr(nrec);
	h->pg_count = 6554;
	h->write_mask = 0x3b;
	h->pos = 65535 - h->nhdr;
	for (uint32_t i = 0; i < nrec; i++) {
		rec_sample(&recs[i], i, h->first_lsn);
		h->ndata += recs[i].kind == VOL_REC_WRITE;
	}
	memset(buf, 0, (size_t)h->nhdr * VOL_BLOCK_BYTES);
	vol_batch_encode(h, recs, buf);
}

/* Edit record i (or the header) of the good batch, refix, decode. */
static int batch_edit(const uint8_t *good, const struct vol_batch_hdr *h,
		      uint8_t *b, int off, int width, uint64_t value)
{
	size_t len = (size_t)h->nhdr * VOL_BLOCK_BYTES;
	static struct vol_rec recs[VOL_BATCH_MAX_RECS];
	struct vol_batch_hdr out;
	int ret;

	memcpy(b, good, len);
	if (width == 2) {
		b[off] = (uint8_t)value;
		b[off + 1] = (uint8_t)(value >> 8);
	} else if (width == 4) {
		put32(b + off, (uint32_t)value);
	} else {
		put64(b + off, value);
	}
	refix(b, len, VOL_LOG_CRC_OFF);
	ret = vol_batch_decode_hdr(b, len, &out);
	if (!ret)
		ret = vol_batch_decode_recs(b, &out, recs);
	return ret;
}

static void batch_rules(const uint8_t *good, const struct vol_batch_hdr *h,
			const struct vol_rec *recs, uint8_t *b)
{
	int w = 128 + 0 * 64; /* record 0: a write */
	int d = 128 + 3 * 64; /* record 3: a discard */

	CHECK(recs[0].kind == VOL_REC_WRITE && recs[3].kind == VOL_REC_DISCARD);
	/* Header rules. */
	CHECK_EQ(batch_edit(good, h, b, 8, 4, 2), -EUCLEAN); /* version */
	CHECK_EQ(batch_edit(good, h, b, 8, 4, 0), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 0, 8, 0), -EUCLEAN); /* magic */
	CHECK_EQ(batch_edit(good, h, b, 12, 4, h->nhdr + 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 12, 4, h->nhdr - 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 12, 4, 0), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 56, 4, 0), -EUCLEAN); /* nrec 0 */
	CHECK_EQ(batch_edit(good, h, b, 56, 4, VOL_BATCH_MAX_RECS + 1),
		 -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 56, 4, UINT32_MAX), -EUCLEAN);
	/* Two records fewer: a write is lost, ndata no longer matches. */
	CHECK_EQ(batch_edit(good, h, b, 56, 4, h->nrec - 2), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 60, 4, h->nrec + 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 60, 4, h->ndata - 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, 60, 4, h->ndata + 1), -EUCLEAN);
	/* Record rules: lsn, kind, lba and range bounds. */
	CHECK_EQ(batch_edit(good, h, b, w + 8, 8, recs[0].lsn + 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, d + 8, 8, recs[3].lsn - 1), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w + 16, 2, 0), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w + 16, 2, 3), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w + 16, 2, 0xffff), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w, 8, 1ull << 34), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w, 8, ~0ull), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, w, 8, (1ull << 34) - 1), 0);
	CHECK_EQ(batch_edit(good, h, b, d + 24, 8, 0), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, d + 24, 8, (1ull << 34) - recs[3].lba),
		 0);
	CHECK_EQ(batch_edit(good, h, b, d + 24, 8,
			    (1ull << 34) - recs[3].lba + 1),
		 -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, d + 24, 8, ~0ull), -EUCLEAN);
	CHECK_EQ(batch_edit(good, h, b, d, 8, 1ull << 34), -EUCLEAN);
	/* A write turned into a discard (or back) breaks ndata. */
	CHECK_EQ(batch_edit(good, h, b, d + 16, 2, VOL_REC_WRITE), -EUCLEAN);
	/*
	 * Not checked here (documented): flags, a discard's unused bytes,
	 * header reserved bytes and the zero tail (all CRC-covered); uuid,
	 * epoch and pos are the caller's to check.
	 */
	CHECK_EQ(batch_edit(good, h, b, w + 18, 2, 0xffff), 0);
	CHECK_EQ(batch_edit(good, h, b, d + 32, 8, ~0ull), 0);
	CHECK_EQ(batch_edit(good, h, b, 80, 8, ~0ull), 0);
	CHECK_EQ(batch_edit(good, h, b, 16, 8, ~0ull), 0);
	CHECK_EQ(batch_edit(good, h, b, 76, 4, 0), 0);
}

static void test_batch(void)
{
	static struct vol_rec recs[VOL_BATCH_MAX_RECS], got[VOL_BATCH_MAX_RECS];
	static uint8_t buf[VOL_BATCH_MAX_HDR * VOL_BLOCK_BYTES];
	static uint8_t b[VOL_BATCH_MAX_HDR * VOL_BLOCK_BYTES];
	static const uint32_t sizes[] = {
		1, 4, 62, 63, 100, VOL_BATCH_MAX_RECS
	};
	struct vol_batch_hdr h, out;

	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		struct batch_ctx c = { &h, recs, 0 };
		size_t len;

		batch_sample(&h, recs, sizes[s], buf);
		len = (size_t)h.nhdr * VOL_BLOCK_BYTES;
		c.len = len;
		CHECK_EQ(vol_batch_decode_hdr(buf, len, &out), 0);
		CHECK(hdr_equal(&h, &out));
		CHECK_EQ(vol_batch_decode_recs(buf, &out, got), 0);
		for (uint32_t i = 0; i < h.nrec; i++)
			CHECK(rec_equal(&recs[i], &got[i]));
		batch_layout(&h, recs, buf);
		/* More bytes than the header needs are fine. */
		CHECK_EQ(vol_batch_decode_hdr(buf, sizeof(buf), &out), 0);
		/* Fewer: not a header at all, or "read more". */
		CHECK_EQ(vol_batch_decode_hdr(buf, VOL_BLOCK_BYTES - 1, &out),
			 -EUCLEAN);
		if (h.nhdr > 1)
			CHECK_EQ(vol_batch_decode_hdr(buf, len - 1, &out),
				 -EAGAIN);
		if (sizes[s] == 100 || sizes[s] == 4)
			check_all_flips("batch", buf, len, batch_dec, &c);
		if (sizes[s] == 100)
			batch_rules(buf, &h, recs, b);
	}
}

/*
 * A batch with DIRECT records (vol_log.c L2): version 2, records laid out
 * as writes, ndata counting the WRITEs alone; version 2 without a DIRECT
 * record, or version 1 with one, is refused.
 */
static void test_batch_direct(void)
{
	static struct vol_rec recs[16], got[16];
	static uint8_t buf[VOL_BLOCK_BYTES], b[VOL_BLOCK_BYTES];
	struct vol_batch_hdr h, out;
	int r1 = 128 + 1 * 64, r0 = 128;

	batch_sample(&h, recs, 16, buf);
	CHECK_EQ(le32(buf + 8), 1);
	recs[1].kind = VOL_REC_DIRECT;
	recs[5].kind = VOL_REC_DIRECT;
	h.ndata -= 2;
	memset(buf, 0, sizeof(buf));
	vol_batch_encode(&h, recs, buf);
	CHECK_EQ(le32(buf + 8), 2);
	CHECK_EQ(le32(buf + 60), h.ndata);
	CHECK_EQ(buf[r1 + 16], VOL_REC_DIRECT);
	CHECK_EQ(le32(buf + r1 + 20), recs[1].data_crc);
	CHECK(!memcmp(buf + r1 + 24, recs[1].nonce, KEY_NONCE_BYTES));
	CHECK(!memcmp(buf + r1 + 48, recs[1].tag, KEY_TAG_BYTES));
	CHECK_EQ(vol_batch_decode_hdr(buf, sizeof(buf), &out), 0);
	CHECK_EQ(out.version, 2);
	CHECK(hdr_equal(&h, &out));
	CHECK_EQ(vol_batch_decode_recs(buf, &out, got), 0);
	for (uint32_t i = 0; i < 16; i++)
		CHECK(rec_equal(&recs[i], &got[i]));
	CHECK_EQ(batch_edit(buf, &h, b, 8, 4, 1), -EUCLEAN);
	/* A DIRECT made a WRITE (or back) breaks ndata. */
	CHECK_EQ(batch_edit(buf, &h, b, r1 + 16, 2, VOL_REC_WRITE), -EUCLEAN);
	CHECK_EQ(batch_edit(buf, &h, b, r0 + 16, 2, VOL_REC_DIRECT), -EUCLEAN);
	CHECK_EQ(batch_edit(buf, &h, b, r1, 8, 1ull << 34), -EUCLEAN);
	/* Both DIRECTs gone (two WRITEs less, ndata 2 more) at version 2. */
	recs[1].kind = recs[5].kind = VOL_REC_WRITE;
	h.ndata += 2;
	memset(buf, 0, sizeof(buf));
	vol_batch_encode(&h, recs, buf);
	CHECK_EQ(le32(buf + 8), 1);
	CHECK_EQ(batch_edit(buf, &h, b, 8, 4, 2), -EUCLEAN);
}

/* ---- block meta ---- */

struct meta_ctx {
	uint64_t lba;
	const struct vol_meta *m;
};

static int meta_equal(const struct vol_meta *a, const struct vol_meta *b)
{
	return a->state == b->state && a->data_crc == b->data_crc &&
	       a->lsn == b->lsn &&
	       !memcmp(a->nonce, b->nonce, KEY_NONCE_BYTES) &&
	       !memcmp(a->tag, b->tag, KEY_TAG_BYTES);
}

static int meta_dec(const uint8_t *e, void *ctx)
{
	struct meta_ctx *c = ctx;
	struct vol_meta m;
	int ret = vol_meta_decode(e, c->lba, &m);

	if (!ret && !meta_equal(&m, c->m))
		return 1;
	return ret;
}

static void meta_layout(const struct vol_meta *m, uint64_t lba,
			const uint8_t *e)
{
	CHECK_EQ(e[0] | e[1] << 8, 0x4653);
	CHECK_EQ(e[2], 1);
	CHECK_EQ(e[3], m->state);
	CHECK_EQ(le32(e + 4), m->data_crc);
	CHECK_EQ(le64(e + 8), m->lsn);
	CHECK(!memcmp(e + 16, m->nonce, 24));
	CHECK(!memcmp(e + 40, m->tag, 16));
	CHECK_EQ(le32(e + 56), 0);
	CHECK_EQ(le32(e + 60), meta_crc_ref(e, lba));
}

/* Edit byte off of the good entry to v, refix for lba, decode. */
static int meta_edit(const uint8_t *good, uint64_t lba, int off, uint8_t v)
{
	uint8_t e[VOL_META_BYTES];
	struct vol_meta m;

	memcpy(e, good, sizeof(e));
	e[off] = v;
	meta_refix(e, lba);
	return vol_meta_decode(e, lba, &m);
}

static void test_meta(void)
{
	static const uint64_t lbas[] = { 0,	  63,	   64,
					 2621439, 2621440, (1ull << 34) - 1 };
	uint8_t e[VOL_META_BYTES], zero[VOL_META_BYTES] = { 0 };
	struct vol_meta m = { .state = VOL_META_WRITTEN,
			      .data_crc = 0xDEADBEEF,
			      .lsn = (9ull << 32) + 5 },
			out;

	fill_rnd(m.nonce, sizeof(m.nonce));
	fill_rnd(m.tag, sizeof(m.tag));
	for (size_t i = 0; i < ARRAY_SIZE(lbas); i++) {
		struct meta_ctx c = { lbas[i], &m };

		memset(e, 0xa5, sizeof(e));
		vol_meta_encode(&m, lbas[i], e);
		CHECK_EQ(vol_meta_decode(e, lbas[i], &out), 0);
		CHECK(meta_equal(&m, &out));
		meta_layout(&m, lbas[i], e);
		check_all_flips("meta entry", e, sizeof(e), meta_dec, &c);
		/* The CRC binds the LBA: the entry moved elsewhere fails. */
		CHECK_EQ(vol_meta_decode(e, lbas[i] + 1, &out), -EBADMSG);
		CHECK_EQ(vol_meta_decode(e, lbas[i] - 1, &out), -EBADMSG);
		CHECK_EQ(vol_meta_decode(e, lbas[i] ^ (1ull << 40), &out),
			 -EBADMSG);
		CHECK_EQ(vol_meta_decode(e, lbas[i] + VOL_PG_BLOCKS, &out),
			 -EBADMSG);
	}
	/* Rules: magic, version, state; reserved 56..59 is not checked. */
	vol_meta_encode(&m, 77, e);
	CHECK_EQ(meta_edit(e, 77, 0, 0x54), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 1, 0x47), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 2, 0), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 2, 2), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 3, VOL_META_EMPTY), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 3, 3), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 3, 0xff), -EBADMSG);
	CHECK_EQ(meta_edit(e, 77, 3, VOL_META_DISCARDED), 0);
	CHECK_EQ(meta_edit(e, 77, 57, 0xff), 0);
	/* A hole is EMPTY at any LBA. */
	memset(&out, 0xff, sizeof(out));
	CHECK_EQ(vol_meta_decode(zero, 12345, &out), 0);
	CHECK_EQ(out.state, VOL_META_EMPTY);
	CHECK_EQ(out.lsn, 0);
	/* A discarded entry: lsn kept, nonce and tag not stored. */
	m.state = VOL_META_DISCARDED;
	m.data_crc = 0;
	vol_meta_encode(&m, 99, e);
	CHECK_EQ(vol_meta_decode(e, 99, &out), 0);
	CHECK_EQ(out.state, VOL_META_DISCARDED);
	CHECK_EQ(out.lsn, m.lsn);
	for (int i = 16; i < 60; i++)
		CHECK_EQ(e[i], 0);
}

/* ---- write-intent map page ---- */

struct wim_ctx {
	uint32_t zone;
	const uint8_t *uuid;
	uint32_t page;
};

static int wim_dec(const uint8_t *p, void *ctx)
{
	struct wim_ctx *c = ctx;

	return vol_wim_page_decode(p, c->zone, c->uuid, c->page);
}

static void test_wim(void)
{
	static uint8_t page[VOL_BLOCK_BYTES], b[VOL_BLOCK_BYTES];
	uint8_t uuid[KEY_UUID_BYTES], other[KEY_UUID_BYTES];
	struct wim_ctx c = { 4, uuid, 123456 };

	fill_rnd(uuid, sizeof(uuid));
	memcpy(other, uuid, sizeof(other));
	other[0] ^= 0x80;
	memset(page, 0xa5, VOL_WIM_HDR_BYTES); /* encode clears the header */
	fill_rnd(page + VOL_WIM_HDR_BYTES, sizeof(page) - VOL_WIM_HDR_BYTES);
	vol_wim_page_encode(page, c.zone, uuid, c.page);
	CHECK_EQ(wim_dec(page, &c), 0);
	CHECK(!memcmp(page, "SIXFWIM1", 8));
	CHECK_EQ(le32(page + 8), 1);
	CHECK_EQ(le32(page + 12), c.zone);
	CHECK(!memcmp(page + 16, uuid, 16));
	CHECK_EQ(le32(page + 32), c.page);
	for (int i = 36; i < 60; i++)
		CHECK_EQ(page[i], 0);
	CHECK_EQ(le32(page + 60), crc_ref_struct(page, 4096, 60));
	check_all_flips("wim page", page, sizeof(page), wim_dec, &c);
	/* Another zone's, volume's or page's map is refused. */
	CHECK_EQ(vol_wim_page_decode(page, 3, uuid, c.page), -EUCLEAN);
	CHECK_EQ(vol_wim_page_decode(page, c.zone, other, c.page), -EUCLEAN);
	CHECK_EQ(vol_wim_page_decode(page, c.zone, uuid, c.page + 1), -EUCLEAN);
	memcpy(b, page, sizeof(b));
	put32(b + 8, 2);
	refix(b, sizeof(b), 60);
	CHECK_EQ(wim_dec(b, &c), -EUCLEAN);
	memcpy(b, page, sizeof(b));
	put64(b + 40, ~0ull); /* reserved: not checked */
	refix(b, sizeof(b), 60);
	CHECK_EQ(wim_dec(b, &c), 0);
	/* A hole: nothing missed. */
	memset(b, 0, sizeof(b));
	CHECK_EQ(wim_dec(b, &c), 1);
}

/* ---- vol_parse_size ---- */

static void test_parse_size(void)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t bytes;
	} cases[] = {
		{ "4096", 0, 4096 },
		{ "0", 0, 0 },
		{ "10G", 0, 10ull << 30 },
		{ "10g", 0, 10ull << 30 },
		{ "64T", 0, 64ull << 40 },
		{ "20M", 0, 20ull << 20 },
		{ "8k", 0, 8192 },
		{ "10GiB", 0, 10ull << 30 },
		{ "10GB", 0, 10ull << 30 },
		{ "16777215T", 0, 16777215ull << 40 },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "1.5G", -EINVAL, 0 },
		{ "abc", -EINVAL, 0 },
		{ "", -EINVAL, 0 },
		{ "G", -EINVAL, 0 },
		{ "10X", -EINVAL, 0 },
		{ "10Gi", -EINVAL, 0 },
		{ "10GiBs", -EINVAL, 0 },
		{ "10 G", -EINVAL, 0 },
		{ "16777216T", -EINVAL, 0 }, /* 2^64 */
		{ "18446744073709551616", -EINVAL, 0 }, /* 2^64 */
		{ "99999999999999999999999", -EINVAL, 0 },
		{ "17179869184G", -EINVAL, 0 }, /* 2^34 G = 2^64 */
		{ "-1G", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t bytes = 0xdeadbeef;
		int ret = vol_parse_size(cases[i].s, &bytes);

		if (ret != cases[i].ret || (!ret && bytes != cases[i].bytes)) {
			fprintf(stderr, "vol_parse_size(\"%s\"): %d, %llu\n",
				cases[i].s, ret, (unsigned long long)bytes);
			check_failures++;
		}
	}
	{
		uint64_t bytes = 0;

		/* strtoull takes a sign and wraps: "-1" is 2^64 - 1 bytes. */
		CHECK(vol_parse_size("-1", &bytes) == -EINVAL);
		CHECK(vol_parse_size("-4096", &bytes) == -EINVAL);
	}
}

/* ---- golden version-1 images ---- */

static const uint8_t g_uuid[KEY_UUID_BYTES] = {
	0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
	0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0,
};

#define G_EPOCH 9u
#define G_LSN ((9ull << 32) + 0x100)
#define G_BATCH_RECS 70u
#define G_META_KEY 12345u /* meta page: LBAs 12345 * 64 + 0..63 */
#define G_KF_GEN 5u

static void g_sb(struct vol_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	memcpy(sb->uuid, g_uuid, KEY_UUID_BYTES);
	sb->zone = 4;
	sb->dir = 1;
	sb->ndirs = 2;
	sb->max_blocks = 10 * VOL_PG_BLOCKS + 123;
	sb->log_blocks = 8192;
	sb->epoch = G_EPOCH;
	sb->seq = 17;
	sb->epoch_lsn = 9ull << 32;
	sb->created = 1795000000;
	for (int z = 0; z < VOL_ZONES; z++)
		snprintf(sb->specs[z], VOL_PATH_MAX, "/golden/disk%d/zone%d", z,
			 z);
	snprintf(sb->specs[4], VOL_PATH_MAX,
		 "/golden/disk4/zone4,/golden/disk6/zone4b");
}

static void g_ck(struct vol_ckpt *ck)
{
	memset(ck, 0, sizeof(*ck));
	ck->zone = 4;
	memcpy(ck->uuid, g_uuid, KEY_UUID_BYTES);
	ck->seq = 33;
	ck->epoch = G_EPOCH;
	ck->applied_lsn = G_LSN - 1;
	ck->pg_count = 3;
}

static void g_batch(struct vol_batch_hdr *h, struct vol_rec *recs)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->uuid, g_uuid, KEY_UUID_BYTES);
	h->nhdr = 2;
	h->epoch = G_EPOCH;
	h->seq = 1234;
	h->first_lsn = G_LSN;
	h->nrec = G_BATCH_RECS;
	h->pg_count = 3;
	h->write_mask = 0x3b;
	h->pos = 777;
	for (uint32_t i = 0; i < G_BATCH_RECS; i++) {
		struct vol_rec *r = &recs[i];

		memset(r, 0, sizeof(*r));
		r->lsn = G_LSN + i;
		if (i % 5 == 4) {
			r->kind = VOL_REC_DISCARD;
			r->lba = 1000ull * i;
			r->nblocks = i + 1;
			continue;
		}
		r->kind = VOL_REC_WRITE;
		r->lba = 0x10000ull + 3 * i;
		r->data_crc = 0xC0DE0000u + i;
		for (int k = 0; k < KEY_NONCE_BYTES; k++)
			r->nonce[k] = (uint8_t)(i + k);
		for (int k = 0; k < KEY_TAG_BYTES; k++)
			r->tag[k] = (uint8_t)(0x80 + i + k);
		h->ndata++;
	}
}

/* Entry e of the golden meta page: written, discarded, empty in turn. */
static void g_meta(uint32_t e, struct vol_meta *m)
{
	memset(m, 0, sizeof(*m));
	if (e % 3 == 2)
		return;
	m->lsn = (9ull << 32) + e;
	if (e % 3 == 1) {
		m->state = VOL_META_DISCARDED;
		return;
	}
	m->state = VOL_META_WRITTEN;
	m->data_crc = 0xDA7A0000u + e;
	for (int k = 0; k < KEY_NONCE_BYTES; k++)
		m->nonce[k] = (uint8_t)(e * 7 + k);
	for (int k = 0; k < KEY_TAG_BYTES; k++)
		m->tag[k] = (uint8_t)(e * 11 + k);
}

static void g_keyhdr(uint8_t *hdr)
{
	for (int i = 0; i < KEY_HEADER_BYTES; i++)
		hdr[i] = (uint8_t)(i * 13 + 7);
}

#define G_WIM_ZONE 2u
#define G_WIM_PAGE 3u

/* Golden WIM bits: region r set when r % 97 == 0 or r % 1000 == 1. */
static int g_wim_bit(uint32_t r)
{
	return r % 97 == 0 || r % 1000 == 1;
}

static void g_wim(uint8_t *page)
{
	memset(page, 0, VOL_BLOCK_BYTES);
	for (uint32_t r = 0; r < VOL_WIM_PAGE_REGIONS; r++)
		if (g_wim_bit(r))
			page[VOL_WIM_HDR_BYTES + r / 8] |=
				(uint8_t)(1u << (r % 8));
	vol_wim_page_encode(page, G_WIM_ZONE, g_uuid, G_WIM_PAGE);
}

enum { G_SB, G_KF, G_CK, G_BATCH, G_META, G_WIM, G_COUNT };

static const struct {
	const char *name;
	size_t len;
} g_files[G_COUNT] = {
	[G_SB] = { "volume_v1_superblock.bin", VOL_SB_BYTES },
	[G_KF] = { "volume_v1_keyfile.bin", VOL_KF_BYTES },
	[G_CK] = { "volume_v1_checkpoint.bin", 2 * VOL_CK_BYTES },
	[G_BATCH] = { "volume_v1_batch.bin", 2 * VOL_BLOCK_BYTES },
	[G_META] = { "volume_v1_meta.bin", VOL_BLOCK_BYTES },
	[G_WIM] = { "volume_v1_wim.bin", VOL_BLOCK_BYTES },
};

/* Build golden image i with today's encoder into buf (g_files[i].len). */
static void g_build(int i, uint8_t *buf)
{
	static struct vol_rec recs[G_BATCH_RECS];
	uint8_t hdr[KEY_HEADER_BYTES];
	struct vol_batch_hdr h;
	struct vol_ckpt ck;
	struct vol_meta m;
	struct vol_sb sb;

	memset(buf, 0, g_files[i].len);
	switch (i) {
	case G_SB:
		g_sb(&sb);
		vol_sb_encode(&sb, buf);
		break;
	case G_KF:
		g_keyhdr(hdr);
		vol_kf_encode(buf, g_uuid, G_KF_GEN, hdr);
		break;
	case G_CK: /* slot 1 (seq 33 is odd); slot 0 never written */
		g_ck(&ck);
		vol_ck_encode(&ck, buf + VOL_CK_BYTES);
		break;
	case G_BATCH:
		g_batch(&h, recs);
		vol_batch_encode(&h, recs, buf);
		break;
	case G_META:
		for (uint32_t e = 0; e < VOL_META_PER_PAGE; e++) {
			g_meta(e, &m);
			if (m.state != VOL_META_EMPTY)
				vol_meta_encode(&m,
						(uint64_t)G_META_KEY * 64 + e,
						buf + e * VOL_META_BYTES);
		}
		break;
	case G_WIM:
		g_wim(buf);
		break;
	}
}

static int regen(const char *dir)
{
	static uint8_t buf[VOL_SB_BYTES];

	for (int i = 0; i < G_COUNT; i++) {
		char path[PATH_MAX];
		int fd;

		if (snprintf(path, sizeof(path), "%s/%s", dir,
			     g_files[i].name) >= (int)sizeof(path))
			return 1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0) {
			fprintf(stderr,
				"%s: %s (golden images are never "
				"remade)\n",
				path, strerror(errno));
			return 1;
		}
		g_build(i, buf);
		if (write(fd, buf, g_files[i].len) != (ssize_t)g_files[i].len ||
		    close(fd)) {
			fprintf(stderr, "%s: write failed\n", path);
			return 1;
		}
		printf("wrote %s\n", path);
	}
	return 0;
}

static const char *vectors_dir(void)
{
	static char dir[PATH_MAX];
	char exe[PATH_MAX];
	ssize_t n;

	if (getenv("SIXFOLD_VECTORS"))
		return getenv("SIXFOLD_VECTORS");
	if (!access("test/vectors/volume_v1_superblock.bin", R_OK))
		return "test/vectors";
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return "test/vectors";
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	if (snprintf(dir, sizeof(dir), "%s/../../test/vectors", exe) >=
	    (int)sizeof(dir))
		return "test/vectors";
	return dir;
}

static int g_load(int i, uint8_t *buf)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", vectors_dir(),
		     g_files[i].name) >= (int)sizeof(path))
		return -1;
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, g_files[i].len + 1);
	close(fd);
	if (n != (ssize_t)g_files[i].len) {
		fprintf(stderr, "%s: %zd bytes, expected %zu\n", path, n,
			g_files[i].len);
		return -1;
	}
	return 0;
}

static void g_check_sb(const uint8_t *buf)
{
	struct vol_sb want, sb;

	g_sb(&want);
	CHECK_EQ(vol_sb_decode(buf, &sb, "golden"), 0);
	CHECK(!memcmp(sb.uuid, g_uuid, KEY_UUID_BYTES));
	CHECK_EQ(sb.zone, 4);
	CHECK_EQ(sb.dir, 1);
	CHECK_EQ(sb.ndirs, 2);
	CHECK_EQ(sb.max_blocks, 26214523);
	CHECK_EQ(sb.log_blocks, 8192);
	CHECK_EQ(sb.epoch, 9);
	CHECK_EQ(sb.seq, 17);
	CHECK_EQ(sb.epoch_lsn, 0x900000000ull);
	CHECK_EQ(sb.created, 1795000000);
	CHECK(!strcmp(sb.specs[0], "/golden/disk0/zone0"));
	CHECK(!strcmp(sb.specs[4], "/golden/disk4/zone4,/golden/disk6/zone4b"));
	CHECK(!strcmp(sb.specs[5], "/golden/disk5/zone5"));
	CHECK(sb_equal(&sb, &want));
}

static void g_check_kf(const uint8_t *buf)
{
	static uint8_t hdr[KEY_HEADER_BYTES], want[KEY_HEADER_BYTES];
	uint64_t gen = 0;

	g_keyhdr(want);
	CHECK_EQ(vol_kf_decode(buf, g_uuid, &gen, hdr, "golden"), 0);
	CHECK_EQ(gen, 5);
	CHECK(!memcmp(hdr, want, sizeof(hdr)));
	CHECK_EQ(hdr[1], 20);
}

static void g_check_ck(const uint8_t *buf)
{
	struct vol_ckpt ck;

	CHECK_EQ(vol_ck_decode(buf, &ck), -EUCLEAN); /* slot 0: empty */
	CHECK_EQ(vol_ck_decode(buf + VOL_CK_BYTES, &ck), 0);
	CHECK_EQ(ck.zone, 4);
	CHECK(!memcmp(ck.uuid, g_uuid, KEY_UUID_BYTES));
	CHECK_EQ(ck.seq, 33);
	CHECK_EQ(ck.epoch, 9);
	CHECK_EQ(ck.applied_lsn, 0x9000000ffull);
	CHECK_EQ(ck.pg_count, 3);
}

static void g_check_batch(const uint8_t *buf)
{
	static struct vol_rec want[G_BATCH_RECS], got[VOL_BATCH_MAX_RECS];
	struct vol_batch_hdr wh, h;

	g_batch(&wh, want);
	CHECK_EQ(vol_batch_decode_hdr(buf, 2 * VOL_BLOCK_BYTES, &h), 0);
	CHECK_EQ(h.nhdr, 2);
	CHECK(!memcmp(h.uuid, g_uuid, KEY_UUID_BYTES));
	CHECK_EQ(h.epoch, 9);
	CHECK_EQ(h.seq, 1234);
	CHECK_EQ(h.first_lsn, 0x900000100ull);
	CHECK_EQ(h.nrec, 70);
	CHECK_EQ(h.ndata, 56);
	CHECK_EQ(h.pg_count, 3);
	CHECK_EQ(h.write_mask, 0x3b);
	CHECK_EQ(h.pos, 777);
	if (vol_batch_decode_recs(buf, &h, got) || h.nrec != G_BATCH_RECS) {
		CHECK(!"golden batch records decode");
		return;
	}
	for (uint32_t i = 0; i < G_BATCH_RECS; i++)
		CHECK(rec_equal(&got[i], &want[i]));
	CHECK_EQ(got[4].kind, VOL_REC_DISCARD);
	CHECK_EQ(got[4].lba, 4000);
	CHECK_EQ(got[4].nblocks, 5);
	CHECK_EQ(got[68].kind, VOL_REC_WRITE);
	CHECK_EQ(got[68].lba, 0x10000 + 204);
	CHECK_EQ(got[68].lsn, 0x900000100ull + 68);
	CHECK_EQ(got[68].data_crc, 0xC0DE0044u);
	CHECK_EQ(got[68].nonce[23], (uint8_t)(68 + 23));
	CHECK_EQ(got[68].tag[15], (uint8_t)(0x80 + 68 + 15));
	CHECK_EQ(got[69].kind, VOL_REC_DISCARD);
	CHECK_EQ(got[69].lba, 69000);
	CHECK_EQ(got[69].nblocks, 70);
}

static void g_check_meta(const uint8_t *buf)
{
	for (uint32_t e = 0; e < VOL_META_PER_PAGE; e++) {
		uint64_t lba = (uint64_t)G_META_KEY * 64 + e;
		struct vol_meta want, m;

		g_meta(e, &want);
		CHECK_EQ(vol_meta_decode(buf + e * VOL_META_BYTES, lba, &m), 0);
		CHECK(meta_equal(&m, &want));
		CHECK_EQ(m.state, e % 3 == 0 ? 1 : e % 3 == 1 ? 2 : 0);
		if (e % 3 != 2)
			CHECK_EQ(m.lsn, 0x900000000ull + e);
		/* Not valid at the neighbouring LBA. */
		if (e % 3 != 2)
			CHECK_EQ(vol_meta_decode(buf + e * VOL_META_BYTES,
						 lba + 1, &m),
				 -EBADMSG);
	}
}

static void g_check_wim(const uint8_t *buf)
{
	uint32_t set = 0;

	CHECK_EQ(vol_wim_page_decode(buf, G_WIM_ZONE, g_uuid, G_WIM_PAGE), 0);
	CHECK_EQ(vol_wim_page_decode(buf, G_WIM_ZONE, g_uuid, G_WIM_PAGE + 1),
		 -EUCLEAN);
	for (uint32_t r = 0; r < VOL_WIM_PAGE_REGIONS; r++) {
		int bit = !!(buf[64 + r / 8] & (1u << (r % 8)));

		set += (uint32_t)bit;
		if (bit != g_wim_bit(r)) {
			CHECK_EQ(bit, g_wim_bit(r));
			break;
		}
	}
	CHECK_EQ(set, 366); /* 333 multiples of 97, 33 of 1000k + 1 */
}

static void test_golden(void)
{
	static uint8_t buf[VOL_SB_BYTES + 1], now[VOL_SB_BYTES];

	for (int i = 0; i < G_COUNT; i++) {
		if (g_load(i, buf)) {
			CHECK(!"golden image readable");
			continue;
		}
		switch (i) {
		case G_SB:
			g_check_sb(buf);
			break;
		case G_KF:
			g_check_kf(buf);
			break;
		case G_CK:
			g_check_ck(buf);
			break;
		case G_BATCH:
			g_check_batch(buf);
			break;
		case G_META:
			g_check_meta(buf);
			break;
		case G_WIM:
			g_check_wim(buf);
			break;
		}
		/*
		 * While version 1 is what we write, we write it the same;
		 * but every superblock now carries incompat bit 0 (DIRECT),
		 * which the golden one predates (and still decodes without).
		 */
		if (VOL_FORMAT_VERSION == 1) {
			g_build(i, now);
			if (i == G_SB) {
				CHECK_EQ(le64(buf + 16), 0);
				put64(buf + 16, VOL_SB_INCOMPAT_DIRECT);
				refix(buf, VOL_SB_BYTES, VOL_SB_CRC_OFF);
			}
			CHECK(!memcmp(buf, now, g_files[i].len));
		}
	}
}

int main(int argc, char **argv)
{
	vol_set_log(quiet_log);
	if (argc == 3 && !strcmp(argv[1], "--regen"))
		return regen(argv[2]);
	if (argc != 1) {
		fprintf(stderr, "usage: %s [--regen DIR]\n", argv[0]);
		return 64;
	}
	test_crc();
	test_crc_end_of_buffer();
	test_superblock();
	test_keyfile();
	test_checkpoint();
	test_nhdr();
	test_batch();
	test_batch_direct();
	test_meta();
	test_wim();
	test_parse_size();
	test_golden();
	return CHECK_DONE();
}
