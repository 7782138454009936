/*
 * keys_slots_test.c - keyslots of the key header (keys/key.c,
 * keys/keyslot_format.c): create and unlock with a passphrase and with a
 * key file, wrong secrets, adding up to 8 slots, removing, the last slot,
 * listing, default Argon2id costs, damage (a flipped byte anywhere, another
 * volume's header, broken structure), all-or-nothing updates, the byte
 * layout against a reference decoder (keys_ref.h) and a golden header.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/unit/keys_ref.h"

static uint8_t uuid[KEY_UUID_BYTES];

static struct key_source pw_source(const char *pw)
{
	struct key_source src = {
		.kind = KEY_KIND_PASSPHRASE,
		.secret = (const uint8_t *)pw,
		.secret_len = strlen(pw),
		.opslimit = crypto_pwhash_OPSLIMIT_MIN, /* fast tests */
		.memlimit = crypto_pwhash_MEMLIMIT_MIN,
	};
	return src;
}

static struct key_source file_source(const uint8_t *bytes, size_t len)
{
	struct key_source src = {
		.kind = KEY_KIND_KEYFILE,
		.secret = bytes,
		.secret_len = len,
	};
	return src;
}

/* 1 if a and b are the same master key: a block sealed under one opens. */
static int same_master(const struct key_master *a, const struct key_master *b)
{
	static uint8_t plain[KEY_BLOCK_BYTES], cipher[KEY_BLOCK_BYTES];
	uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES];
	struct key_cipher *ka, *kb;
	int ok = 0;

	if (key_cipher_create(a, uuid, &ka) < 0)
		return 0;
	if (key_cipher_create(b, uuid, &kb) < 0)
		goto out_free_ka;
	key_random(plain, sizeof(plain));
	if (key_seal_block(ka, 1, 2, plain, cipher, nonce, tag) == 0)
		ok = key_open_block(kb, 1, 2, cipher, nonce, tag, plain) == 0;
	key_cipher_free(kb);
out_free_ka:
	key_cipher_free(ka);
	return ok;
}

/* Unlock hdr with src, expect slot `want`, and the key to be mk. */
static void check_unlocks(const uint8_t *hdr, const struct key_source *src,
			  const struct key_master *mk, int want)
{
	struct key_master *got = NULL;

	CHECK_EQ(key_header_unlock(hdr, uuid, src, &got), want);
	CHECK(got && same_master(got, mk));
	key_master_free(got);
}

static void check_rejects(const uint8_t *hdr, const struct key_source *src,
			  int want)
{
	struct key_master *got = NULL;

	CHECK_EQ(key_header_unlock(hdr, uuid, src, &got), want);
	CHECK(got == NULL);
}

static void test_create_unlock(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	struct key_source pw = pw_source("correct horse");
	struct key_source bad = pw_source("correct horsf");
	uint8_t file[64] = { 0 }, other[64] = { 0 };
	struct key_source kf = file_source(file, sizeof(file));
	struct key_source kf_bad = file_source(other, sizeof(other));

	key_random(file, sizeof(file));
	memcpy(other, file, sizeof(other));
	other[63] ^= 1;

	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	check_unlocks(hdr, &pw, mk, 0);
	check_rejects(hdr, &bad, -EKEYREJECTED);
	check_rejects(hdr, &kf, -EKEYREJECTED); /* no slot of that kind */

	CHECK_EQ(key_header_add(hdr, uuid, mk, &kf), 1);
	check_unlocks(hdr, &kf, mk, 1);
	check_unlocks(hdr, &pw, mk, 0);
	check_rejects(hdr, &kf_bad, -EKEYREJECTED);
	kf_bad.secret_len = 63; /* a prefix of the right file */
	check_rejects(hdr, &kf_bad, -EKEYREJECTED);

	/* A header made with a key file alone. */
	CHECK_OK(key_header_create(hdr, uuid, mk, &kf));
	check_unlocks(hdr, &kf, mk, 0);
	check_rejects(hdr, &pw, -EKEYREJECTED);
}

static void test_fill_remove(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES], copy[KEY_HEADER_BYTES];
	static const char *const pws[KEY_SLOTS] = {
		"pw0", "pw1", "pw2", "pw3", "pw4", "pw5", "pw6", "pw7",
	};
	struct key_slot_info info[KEY_SLOTS + 1];
	struct key_source src;

	src = pw_source(pws[0]);
	CHECK_OK(key_header_create(hdr, uuid, mk, &src));
	for (int i = 1; i < KEY_SLOTS; i++) {
		src = pw_source(pws[i]);
		src.opslimit = crypto_pwhash_OPSLIMIT_MIN + (uint64_t)(i % 2);
		CHECK_EQ(key_header_add(hdr, uuid, mk, &src), i);
	}
	memcpy(copy, hdr, sizeof(hdr));
	src = pw_source("one too many");
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -ENOSPC);
	CHECK(memcmp(copy, hdr, sizeof(hdr)) == 0);

	memset(info, 0xa5, sizeof(info));
	CHECK_EQ(key_header_list(hdr, info, KEY_SLOTS + 1), KEY_SLOTS);
	for (int i = 0; i < KEY_SLOTS; i++) {
		CHECK_EQ(info[i].slot, i);
		CHECK_EQ(info[i].kind, KEY_KIND_PASSPHRASE);
		CHECK_EQ(info[i].opslimit,
			 crypto_pwhash_OPSLIMIT_MIN + (uint64_t)(i % 2));
		CHECK_EQ(info[i].memlimit, crypto_pwhash_MEMLIMIT_MIN);
	}
	/* n smaller than the count: the count, and nothing past info[n). */
	memset(info, 0xa5, sizeof(info));
	CHECK_EQ(key_header_list(hdr, info, 2), KEY_SLOTS);
	CHECK_EQ(info[1].slot, 1);
	CHECK_EQ(info[2].slot, (int)0xa5a5a5a5);
	CHECK_EQ(key_header_list(hdr, NULL, 0), KEY_SLOTS);

	for (int i = 0; i < KEY_SLOTS; i++) {
		src = pw_source(pws[i]);
		check_unlocks(hdr, &src, mk, i);
	}

	/* Remove slot 3: its passphrase stops working, the others do not. */
	CHECK_OK(key_header_remove(hdr, uuid, mk, 3));
	src = pw_source(pws[3]);
	check_rejects(hdr, &src, -EKEYREJECTED);
	src = pw_source(pws[4]);
	check_unlocks(hdr, &src, mk, 4);
	CHECK_EQ(key_header_list(hdr, info, KEY_SLOTS), KEY_SLOTS - 1);
	CHECK_EQ(info[3].slot, 4);
	CHECK_EQ(key_header_remove(hdr, uuid, mk, 3), -ENOENT);
	CHECK_EQ(key_header_remove(hdr, uuid, mk, -1), -ENOENT);
	CHECK_EQ(key_header_remove(hdr, uuid, mk, KEY_SLOTS), -ENOENT);

	/* The freed slot is the first free one again. */
	src = pw_source("new three");
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), 3);
	check_unlocks(hdr, &src, mk, 3);

	for (int i = 0; i < KEY_SLOTS - 1; i++)
		CHECK_OK(key_header_remove(hdr, uuid, mk, i));
	memcpy(copy, hdr, sizeof(hdr));
	CHECK_EQ(key_header_remove(hdr, uuid, mk, KEY_SLOTS - 1), -EBUSY);
	CHECK(memcmp(copy, hdr, sizeof(hdr)) == 0);
	CHECK_EQ(key_header_list(hdr, info, KEY_SLOTS), 1);
	CHECK_EQ(info[0].slot, KEY_SLOTS - 1);
	src = pw_source(pws[KEY_SLOTS - 1]);
	check_unlocks(hdr, &src, mk, KEY_SLOTS - 1);
	src = pw_source(pws[0]);
	check_rejects(hdr, &src, -EKEYREJECTED);
}

/* A removed slot is gone from the bytes, not just marked: all zero. */
static void test_remove_wipes(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	static const uint8_t zero[128];
	struct key_source a = pw_source("a"), b = pw_source("b");

	CHECK_OK(key_header_create(hdr, uuid, mk, &a));
	CHECK_EQ(key_header_add(hdr, uuid, mk, &b), 1);
	CHECK(memcmp(ref_slot(hdr, 1), zero, 128) != 0);
	CHECK_OK(key_header_remove(hdr, uuid, mk, 1));
	CHECK(memcmp(ref_slot(hdr, 1), zero, 128) == 0);
}

/* Wrong master key, wrong volume, bad sources: -errno, hdr untouched. */
static void test_refusals(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES], copy[KEY_HEADER_BYTES];
	struct key_source pw = pw_source("pw"), src;
	uint8_t other_uuid[KEY_UUID_BYTES];
	struct key_master *other, *got = NULL;

	CHECK_OK(key_master_create(&other));
	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	memcpy(copy, hdr, sizeof(hdr));
	memcpy(other_uuid, uuid, sizeof(uuid));
	other_uuid[0] ^= 1;

	CHECK_EQ(key_header_add(hdr, uuid, other, &pw), -EBADMSG);
	CHECK_EQ(key_header_remove(hdr, uuid, other, 0), -EBADMSG);
	CHECK_EQ(key_header_unlock(hdr, other_uuid, &pw, &got), -EBADMSG);
	CHECK(got == NULL);
	CHECK_EQ(key_header_add(hdr, other_uuid, mk, &pw), -EBADMSG);
	CHECK_EQ(key_header_remove(hdr, other_uuid, mk, 0), -EBADMSG);

	src = pw;
	src.kind = KEY_KIND_EMPTY;
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	CHECK_EQ(key_header_unlock(hdr, uuid, &src, &got), -EINVAL);
	src = pw;
	src.secret_len = 0;
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	src.secret_len = KEY_SECRET_MAX_BYTES + 1;
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	src = pw;
	src.secret = NULL;
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	src = pw;
	src.opslimit = 1000; /* past the format's cap */
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	src = pw;
	src.memlimit = 4096; /* below Argon2id's minimum */
	CHECK_EQ(key_header_add(hdr, uuid, mk, &src), -EINVAL);
	CHECK(memcmp(copy, hdr, sizeof(hdr)) == 0);
	CHECK_EQ(key_header_create(copy, uuid, mk, &src), -EINVAL);
	key_master_free(other);
}

/*
 * Flip bytes everywhere: an unlock must fail (-EBADMSG or -EKEYREJECTED)
 * and never hand out a key.  The key-file pass is cheap (no KDF), so it
 * tries several masks at every offset; the passphrase pass flips the low
 * bit only, so a flipped memlimit stays small enough to run quickly.
 */
static void test_flips(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES], bad[KEY_HEADER_BYTES];
	static const uint8_t masks[] = { 0x01, 0x80, 0xff };
	struct key_source pw = pw_source("flip me");
	uint8_t file[32] = { 0 };
	struct key_source kf = file_source(file, sizeof(file));
	int fails = 0;

	key_random(file, sizeof(file));
	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	CHECK_EQ(key_header_add(hdr, uuid, mk, &kf), 1);
	check_unlocks(hdr, &kf, mk, 1);

	for (size_t m = 0; m <= sizeof(masks); m++) {
		const struct key_source *src = m < sizeof(masks) ? &kf : &pw;
		uint8_t mask = m < sizeof(masks) ? masks[m] : 0x01;

		for (int off = 0; off < KEY_HEADER_BYTES; off++) {
			struct key_master *got = NULL;
			int ret;

			memcpy(bad, hdr, sizeof(hdr));
			bad[off] ^= mask;
			ret = key_header_unlock(bad, uuid, src, &got);
			if ((ret != -EBADMSG && ret != -EKEYREJECTED) || got) {
				fprintf(stderr, "flip 0x%02x at %d: %d\n", mask,
					off, ret);
				fails++;
				key_master_free(got);
			}
		}
	}
	CHECK_EQ(fails, 0);
}

/* Structural damage that needs no key: key_header_list says -EBADMSG. */
static void test_structure(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES], bad[KEY_HEADER_BYTES];
	struct key_source pw = pw_source("x");
	struct {
		int off; /* byte to change */
		uint8_t val; /* its new value */
	} cases[] = {
		{ 0, 'X' }, /* rule 1: magic */
		{ 12, 2 }, /* rule 2: version_min from the future */
		{ 12, 0 }, /* rule 2: version_min 0 */
		{ 8, 0 }, /* rule 2: version < version_min */
		{ 16, 1 }, /* rule 3: unknown incompat feature */
		{ 25, 0 }, /* rule 4: hdr_bytes */
		{ 28, 1 }, /* rule 5: reserved */
		{ 63, 1 }, /* rule 5: reserved */
		{ 2000, 1 }, /* rule 5: reserved */
		{ 64 + 0, 3 }, /* rule 6: unknown kind */
		{ 64 + 128 + 100, 1 }, /* rule 7: empty slot not zero */
		{ 64 + 4, 1 }, /* rule 8: slot reserved */
		{ 64 + 127, 1 }, /* rule 8: slot reserved */
		{ 64 + 8, 0 }, /* rule 9: opslimit 0 */
		{ 64 + 8, 33 }, /* rule 9: opslimit over the cap */
		{ 64 + 20, 1 }, /* rule 9: memlimit over the cap */
	};
	struct key_slot_info info;

	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	CHECK_EQ(key_header_list(hdr, &info, 1), 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(bad, hdr, sizeof(hdr));
		bad[cases[i].off] = cases[i].val;
		if (key_header_list(bad, &info, 1) != -EBADMSG)
			fprintf(stderr, "structure case %zu (offset %d)\n", i,
				cases[i].off);
		CHECK_EQ(key_header_list(bad, &info, 1), -EBADMSG);
	}
	/* The compat word is free for later versions: still listed. */
	memcpy(bad, hdr, sizeof(hdr));
	bad[20] = 1;
	CHECK_EQ(key_header_list(bad, &info, 1), 1);
	/* Rule 11: slot 0 emptied properly leaves no used slot. */
	memcpy(bad, hdr, sizeof(hdr));
	memset(bad + 64, 0, 128);
	CHECK_EQ(key_header_list(bad, &info, 1), -EBADMSG);
	memset(bad, 0, sizeof(bad));
	CHECK_EQ(key_header_list(bad, &info, 1), -EBADMSG);
}

/* A key-file slot with costs is damage too (rule 10). */
static void test_keyfile_params(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	uint8_t file[16] = { 1 };
	struct key_source kf = file_source(file, sizeof(file));
	struct key_slot_info info;

	kf.opslimit = 5; /* ignored for a key file */
	CHECK_OK(key_header_create(hdr, uuid, mk, &kf));
	CHECK_EQ(key_header_list(hdr, &info, 1), 1);
	CHECK_EQ(info.kind, KEY_KIND_KEYFILE);
	CHECK_EQ(info.opslimit, 0);
	CHECK_EQ(info.memlimit, 0);
	hdr[64 + 8] = 1;
	CHECK_EQ(key_header_list(hdr, &info, 1), -EBADMSG);
}

/* opslimit = memlimit = 0: the interactive defaults (one full-cost KDF). */
static void test_defaults(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	struct key_source pw = pw_source("defaults");
	struct key_slot_info info;

	pw.opslimit = 0;
	pw.memlimit = 0;
	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	CHECK_EQ(key_header_list(hdr, &info, 1), 1);
	CHECK_EQ(info.kind, KEY_KIND_PASSPHRASE);
	CHECK_EQ(info.opslimit, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	CHECK_EQ(info.memlimit, crypto_pwhash_MEMLIMIT_MODERATE);
}

/*
 * The bytes as keyslot_format.h documents them, decoded by keys_ref.h:
 * fixed fields, slot fields, unwrap of both kinds, authenticator, block
 * key, and zero everywhere else.
 */
static void test_layout(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	struct key_source pw = pw_source("layout");
	uint8_t file[100] = { 0 }, m0[32], m1[32];
	struct key_source kf = file_source(file, sizeof(file));
	int nonzero = 0;

	key_random(file, sizeof(file));
	CHECK_OK(key_header_create(hdr, uuid, mk, &pw));
	CHECK_EQ(key_header_add(hdr, uuid, mk, &kf), 1);

	CHECK(memcmp(hdr, "SIXKEYHD", 8) == 0);
	CHECK_EQ(ref_le32(hdr + 8), 1);
	CHECK_EQ(ref_le32(hdr + 12), 1);
	CHECK_EQ(ref_le32(hdr + 16), 0);
	CHECK_EQ(ref_le32(hdr + 20), 0);
	CHECK_EQ(ref_le32(hdr + 24), 4096);
	CHECK(memcmp(hdr + 32, uuid, 16) == 0);
	CHECK_EQ(ref_le32(ref_slot(hdr, 0)), 1);
	CHECK_EQ(ref_le64(ref_slot(hdr, 0) + 8), crypto_pwhash_OPSLIMIT_MIN);
	CHECK_EQ(ref_le64(ref_slot(hdr, 0) + 16), crypto_pwhash_MEMLIMIT_MIN);
	CHECK_EQ(ref_le32(ref_slot(hdr, 1)), 2);
	CHECK_EQ(ref_le64(ref_slot(hdr, 1) + 8), 0);
	CHECK_EQ(ref_le64(ref_slot(hdr, 1) + 16), 0);

	/* Nonzero bytes only where the table has fields. */
	for (int off = 0; off < KEY_HEADER_BYTES; off++) {
		int in_slot = off >= 64 && off < 64 + 2 * 128;
		int s = (off - 64) % 128;
		int field = off < 48 || off >= 4064 ||
			    (in_slot && (s < 4 || (s >= 8 && s < 112)));

		if (hdr[off] && !field)
			nonzero++;
	}
	CHECK_EQ(nonzero, 0);

	CHECK_EQ(ref_unwrap_passphrase(hdr, 0, "layout", m0), 0);
	CHECK_EQ(ref_unwrap_keyfile(hdr, 1, file, sizeof(file), m1), 0);
	CHECK(memcmp(m0, m1, 32) == 0);
	CHECK(ref_auth_ok(hdr, m0));
	/* A wrong slot index in the AD must not unwrap (slot binding). */
	CHECK_EQ(ref_unwrap_keyfile(hdr, 0, file, sizeof(file), m1), -1);

	/* The block key derived from the unwrapped key opens our blocks. */
	{
		static uint8_t plain[KEY_BLOCK_BYTES], out[KEY_BLOCK_BYTES],
			cipher[KEY_BLOCK_BYTES];
		uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES], bk[32];
		struct key_cipher *kc;

		CHECK_OK(key_cipher_create(mk, uuid, &kc));
		key_random(plain, sizeof(plain));
		CHECK_OK(key_seal_block(kc, 9, 10, plain, cipher, nonce, tag));
		ref_block_key(m0, bk);
		CHECK_EQ(ref_open_block(bk, uuid, 9, 10, cipher, nonce, tag,
					out),
			 0);
		CHECK(memcmp(plain, out, sizeof(out)) == 0);
		key_cipher_free(kc);
		sodium_memzero(bk, sizeof(bk));
	}
	sodium_memzero(m0, sizeof(m0));
	sodium_memzero(m1, sizeof(m1));
}

/*
 * Golden version-1 header (must decode forever): volume UUID 00 01 .. 0f,
 * one key-file slot for the 32-byte key file 0x20 0x21 .. 0x3f.  Only its
 * nonzero runs are listed; every other byte is zero.
 */
static const struct {
	int off; /* where the run starts */
	const char *hex; /* its bytes */
} golden_runs[] = {
	{ 0, "5349584b45594844" }, /* magic "SIXKEYHD" */
	{ 8, "01" }, /* version 1 */
	{ 12, "01" }, /* version_min 1 */
	{ 25, "10" }, /* hdr_bytes 4096 (00 10 00 00) */
	{ 33, "0102030405060708090a0b0c0d0e0f" }, /* uuid 00 01 .. 0f */
	{ 64, "02" }, /* slot 0: kind 2, key file */
	{ 88, "207ba293152503d9b527f5c8d627645d" }, /* salt */
	{ 104, "dc2c3f5e11b7da997e3e0283bcbce04c9599f66921e42aca" }, /* nonce */
	{ 128, "5a4b977a938f454bb372ab96f992a240782698aa10affd3b" /* wrapped */
	       "5a84d4ca56588c5e74125b30881837692ca46043fde91a55" },
	{ 4064, "8bed40d93b8d86c5787edbf2f7886e13" /* auth */
		"e31e2ffd1b77ac66e45c3add7e7b0864" },
};

static void golden_build(uint8_t *hdr)
{
	memset(hdr, 0, KEY_HEADER_BYTES);
	for (size_t i = 0; i < sizeof(golden_runs) / sizeof(golden_runs[0]);
	     i++) {
		const char *h = golden_runs[i].hex;

		for (int j = 0; h[2 * j]; j++) {
			unsigned int b;

			sscanf(h + 2 * j, "%2x", &b);
			hdr[golden_runs[i].off + j] = (uint8_t)b;
		}
	}
}

static void test_golden(void)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	uint8_t guuid[KEY_UUID_BYTES], file[32] = { 0 }, m[32];
	struct key_source kf = file_source(file, sizeof(file));
	struct key_master *got = NULL;
	struct key_slot_info info;

	for (int i = 0; i < 16; i++)
		guuid[i] = (uint8_t)i;
	for (int i = 0; i < 32; i++)
		file[i] = (uint8_t)(0x20 + i);
	golden_build(hdr);
	CHECK_EQ(key_header_list(hdr, &info, 1), 1);
	CHECK_EQ(info.slot, 0);
	CHECK_EQ(info.kind, KEY_KIND_KEYFILE);
	CHECK_EQ(key_header_unlock(hdr, guuid, &kf, &got), 0);
	CHECK(got != NULL);
	key_master_free(got);
	CHECK_EQ(ref_unwrap_keyfile(hdr, 0, file, sizeof(file), m), 0);
	CHECK(ref_auth_ok(hdr, m));
	sodium_memzero(m, sizeof(m));
	file[0] ^= 1;
	got = NULL;
	CHECK_EQ(key_header_unlock(hdr, guuid, &kf, &got), -EKEYREJECTED);
	CHECK(got == NULL);
}

int main(void)
{
	struct key_master *mk;

	if (key_init() < 0)
		SKIP("libsodium cannot initialise");
	key_random(uuid, sizeof(uuid));
	if (CHECK_OK(key_master_create(&mk)) < 0)
		return CHECK_DONE();

	test_create_unlock(mk);
	test_fill_remove(mk);
	test_remove_wipes(mk);
	test_refusals(mk);
	test_flips(mk);
	test_structure(mk);
	test_keyfile_params(mk);
	test_layout(mk);
	test_golden();
	test_defaults(mk);

	key_master_free(mk);
	return CHECK_DONE();
}
