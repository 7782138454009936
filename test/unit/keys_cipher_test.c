/*
 * keys_cipher_test.c - the block cipher (keys/key.c key_seal_block,
 * key_open_block): round trip, random nonces, agreement with a slow
 * reference (libsodium's combined XChaCha20-Poly1305 with the AD built by
 * hand as uuid || lba LE || lsn LE, and the key derived by hand from the
 * master key unwrapped by keys_ref.h) in both directions, unaligned and
 * end-of-buffer arguments, and refusal (-EBADMSG, plaintext zeroed) of a
 * flipped ciphertext, nonce or tag byte, a wrong LBA, LSN, volume or key;
 * concurrent use of one context.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/unit/keys_ref.h"

#define BLOCK KEY_BLOCK_BYTES

static uint8_t uuid[KEY_UUID_BYTES];
static uint8_t block_key[32]; /* the reference's copy of the block key */

/* Get the block key the slow way: unwrap a key-file slot by hand. */
static int reference_key(const struct key_master *mk)
{
	static uint8_t hdr[KEY_HEADER_BYTES];
	uint8_t file[32], m[32];
	struct key_source kf = {
		.kind = KEY_KIND_KEYFILE,
		.secret = file,
		.secret_len = sizeof(file),
	};

	key_random(file, sizeof(file));
	if (CHECK_OK(key_header_create(hdr, uuid, mk, &kf)) < 0)
		return -1;
	if (ref_unwrap_keyfile(hdr, 0, file, sizeof(file), m) != 0)
		return -1;
	ref_block_key(m, block_key);
	sodium_memzero(m, sizeof(m));
	return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Expect key_open_block to refuse, and to leave plain all zero. */
static void check_refused(const struct key_cipher *kc, uint64_t lba,
			  uint64_t lsn, const uint8_t *cipher,
			  const uint8_t *nonce, const uint8_t *tag)
{
	static uint8_t plain[BLOCK];

	memset(plain, 0x5a, sizeof(plain));
	CHECK_EQ(key_open_block(kc, lba, lsn, cipher, nonce, tag, plain),
		 -EBADMSG);
	CHECK(all_zero(plain, sizeof(plain)));
}

static void test_round_trip(const struct key_cipher *kc)
{
	static uint8_t plain[BLOCK], c1[BLOCK], c2[BLOCK], out[BLOCK];
	uint8_t n1[KEY_NONCE_BYTES], n2[KEY_NONCE_BYTES];
	uint8_t t1[KEY_TAG_BYTES], t2[KEY_TAG_BYTES];

	key_random(plain, sizeof(plain));
	CHECK_OK(key_seal_block(kc, 7, 42, plain, c1, n1, t1));
	CHECK(memcmp(plain, c1, BLOCK) != 0);
	CHECK_OK(key_open_block(kc, 7, 42, c1, n1, t1, out));
	CHECK(memcmp(plain, out, BLOCK) == 0);

	/* Same block, same place and version: a new nonce, new bytes. */
	CHECK_OK(key_seal_block(kc, 7, 42, plain, c2, n2, t2));
	CHECK(memcmp(n1, n2, sizeof(n1)) != 0);
	CHECK(memcmp(c1, c2, BLOCK) != 0);
	CHECK(memcmp(t1, t2, sizeof(t1)) != 0);
	CHECK_OK(key_open_block(kc, 7, 42, c2, n2, t2, out));
	CHECK(memcmp(plain, out, BLOCK) == 0);

	/* An all-zero block does not come out as zeros. */
	memset(plain, 0, sizeof(plain));
	CHECK_OK(key_seal_block(kc, 0, 0, plain, c1, n1, t1));
	CHECK(!all_zero(c1, BLOCK));
}

/* Seal here, open with the reference; seal with it, open here. */
static void test_reference(const struct key_cipher *kc)
{
	static uint8_t plain[BLOCK], cipher[BLOCK], out[BLOCK];
	static uint8_t ct[BLOCK + KEY_TAG_BYTES];
	static const uint64_t edges[] = { 0,	     1,		 0xff,
					  0x100,     1ull << 32, 1ull << 63,
					  UINT64_MAX };
	uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES], ad[32];
	int bad = 0;

	for (int i = 0; i < 200; i++) {
		uint64_t lba, lsn;

		key_random(&lba, sizeof(lba));
		key_random(&lsn, sizeof(lsn));
		if (i < 49) {
			lba = edges[i % 7];
			lsn = edges[i / 7];
		}
		key_random(plain, sizeof(plain));
		CHECK_OK(key_seal_block(kc, lba, lsn, plain, cipher, nonce,
					tag));
		memset(out, 0, sizeof(out));
		if (ref_open_block(block_key, uuid, lba, lsn, cipher, nonce,
				   tag, out) != 0 ||
		    memcmp(plain, out, BLOCK) != 0)
			bad++;
		/* lba and lsn in the other order must not open. */
		if (lba != lsn && ref_open_block(block_key, uuid, lsn, lba,
						 cipher, nonce, tag, out) == 0)
			bad++;

		/* The other direction: combined encrypt by hand. */
		key_random(nonce, sizeof(nonce));
		memcpy(ad, uuid, 16);
		ref_put_le64(ad + 16, lba);
		ref_put_le64(ad + 24, lsn);
		crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, plain,
							   BLOCK, ad,
							   sizeof(ad), NULL,
							   nonce, block_key);
		if (key_open_block(kc, lba, lsn, ct, nonce, ct + BLOCK, out) !=
			    0 ||
		    memcmp(plain, out, BLOCK) != 0)
			bad++;
	}
	CHECK_EQ(bad, 0);
}

/* Odd addresses, and buffers that end exactly where the block does. */
static void test_unaligned(const struct key_cipher *kc)
{
	uint8_t *pbuf = malloc(BLOCK + 1), *cbuf = malloc(BLOCK + 3);
	uint8_t *obuf = malloc(BLOCK),
		*meta = malloc(KEY_NONCE_BYTES + 1 + KEY_TAG_BYTES + 5);
	uint8_t *plain, *cipher, *nonce, *tag;

	if (!pbuf || !cbuf || !obuf || !meta) {
		CHECK(!"out of memory");
		goto out_free;
	}
	plain = pbuf + 1;
	cipher = cbuf + 3;
	nonce = meta + 1;
	tag = meta + 1 + KEY_NONCE_BYTES + 5;
	key_random(plain, BLOCK);
	CHECK_OK(key_seal_block(kc, 3, 5, plain, cipher, nonce, tag));
	CHECK_OK(key_open_block(kc, 3, 5, cipher, nonce, tag, obuf));
	CHECK(memcmp(plain, obuf, BLOCK) == 0);
	CHECK_EQ(ref_open_block(block_key, uuid, 3, 5, cipher, nonce, tag,
				obuf),
		 0);
	CHECK(memcmp(plain, obuf, BLOCK) == 0);
out_free:
	free(pbuf);
	free(cbuf);
	free(obuf);
	free(meta);
}

static void test_tamper(const struct key_cipher *kc,
			const struct key_cipher *other_uuid,
			const struct key_cipher *other_key)
{
	static uint8_t plain[BLOCK], cipher[BLOCK], bad[BLOCK];
	uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES];
	uint8_t bnonce[KEY_NONCE_BYTES], btag[KEY_TAG_BYTES];
	const uint64_t lba = 123456, lsn = 987654321;

	key_random(plain, sizeof(plain));
	CHECK_OK(key_seal_block(kc, lba, lsn, plain, cipher, nonce, tag));

	for (int off = 0; off < BLOCK; off++) {
		memcpy(bad, cipher, BLOCK);
		bad[off] ^= (uint8_t)(1u << (off % 8));
		check_refused(kc, lba, lsn, bad, nonce, tag);
	}
	for (int off = 0; off < KEY_NONCE_BYTES; off++) {
		memcpy(bnonce, nonce, sizeof(nonce));
		bnonce[off] ^= 0x01;
		check_refused(kc, lba, lsn, cipher, bnonce, tag);
	}
	for (int off = 0; off < KEY_TAG_BYTES; off++) {
		memcpy(btag, tag, sizeof(tag));
		btag[off] ^= 0x80;
		check_refused(kc, lba, lsn, cipher, nonce, btag);
	}
	check_refused(kc, lba + 1, lsn, cipher, nonce, tag);
	check_refused(kc, lba - 1, lsn, cipher, nonce, tag);
	check_refused(kc, lba ^ (1ull << 63), lsn, cipher, nonce, tag);
	check_refused(kc, lba, lsn + 1, cipher, nonce, tag);
	check_refused(kc, lba, lsn - 1, cipher, nonce, tag);
	check_refused(kc, lsn, lba, cipher, nonce, tag);
	check_refused(other_uuid, lba, lsn, cipher, nonce, tag);
	check_refused(other_key, lba, lsn, cipher, nonce, tag);
}

/* Several threads share one context (no shared mutable state). */
static void *worker(void *arg)
{
	const struct key_cipher *kc = arg;
	static __thread uint8_t plain[BLOCK], cipher[BLOCK], out[BLOCK];
	uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES];
	intptr_t bad = 0;

	for (uint64_t i = 0; i < 500; i++) {
		key_random(plain, sizeof(plain));
		if (key_seal_block(kc, i, i * 3, plain, cipher, nonce, tag) ||
		    key_open_block(kc, i, i * 3, cipher, nonce, tag, out) ||
		    memcmp(plain, out, BLOCK) != 0)
			bad++;
	}
	return (void *)bad;
}

static void test_threads(const struct key_cipher *kc)
{
	pthread_t t[4];
	intptr_t bad = 0;

	for (int i = 0; i < 4; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, worker, (void *)kc), 0);
	for (int i = 0; i < 4; i++) {
		void *ret;

		CHECK_EQ(pthread_join(t[i], &ret), 0);
		bad += (intptr_t)ret;
	}
	CHECK_EQ(bad, 0);
}

int main(void)
{
	struct key_cipher *kc, *kc2, *other_uuid, *other_key;
	struct key_master *mk, *mk2;
	uint8_t uuid2[KEY_UUID_BYTES];
	static uint8_t plain[BLOCK], cipher[BLOCK], out[BLOCK];
	uint8_t nonce[KEY_NONCE_BYTES], tag[KEY_TAG_BYTES];

	if (key_init() < 0)
		SKIP("libsodium cannot initialise");
	key_random(uuid, sizeof(uuid));
	memcpy(uuid2, uuid, sizeof(uuid));
	uuid2[15] ^= 1;
	if (CHECK_OK(key_master_create(&mk)) < 0 ||
	    CHECK_OK(key_master_create(&mk2)) < 0 || reference_key(mk) < 0)
		return CHECK_DONE();
	CHECK_OK(key_cipher_create(mk, uuid, &kc));
	CHECK_OK(key_cipher_create(mk, uuid, &kc2));
	CHECK_OK(key_cipher_create(mk, uuid2, &other_uuid));
	CHECK_OK(key_cipher_create(mk2, uuid, &other_key));
	/* The contexts outlive the master keys they came from. */
	key_master_free(mk);
	key_master_free(mk2);

	test_round_trip(kc);
	test_reference(kc);
	test_unaligned(kc);
	test_tamper(kc, other_uuid, other_key);
	test_threads(kc);

	/* A second context from the same key and volume is the same. */
	key_random(plain, sizeof(plain));
	CHECK_OK(key_seal_block(kc, 11, 12, plain, cipher, nonce, tag));
	CHECK_OK(key_open_block(kc2, 11, 12, cipher, nonce, tag, out));
	CHECK(memcmp(plain, out, BLOCK) == 0);

	key_cipher_free(kc);
	key_cipher_free(kc2);
	key_cipher_free(other_uuid);
	key_cipher_free(other_key);
	key_cipher_free(NULL);
	key_master_free(NULL);
	sodium_memzero(block_key, sizeof(block_key));
	return CHECK_DONE();
}
