/*
 * keys_ref.h - slow reference of the keys/ on-disk format and key
 * derivations, for keys_*_test.c.
 *
 * Written from the byte table of keys/keyslot_format.h with its own literal
 * offsets and straight libsodium calls, sharing no code or constants with
 * keys/, so a test comparing the two checks the documented layout rather
 * than the implementation against itself.  Returns are 0 / -1, as in
 * libsodium.
 */
#ifndef SIXFOLD_TEST_KEYS_REF_H
#define SIXFOLD_TEST_KEYS_REF_H

#include <stdint.h>
#include <string.h>

#include <sodium.h>

#define REF_UNUSED __attribute__((unused))

static REF_UNUSED uint64_t ref_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static REF_UNUSED uint32_t ref_le32(const uint8_t *p)
{
	return (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
}

static REF_UNUSED void ref_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> 8 * i);
}

/* Slot i starts at 64 + 128 * i. */
static REF_UNUSED const uint8_t *ref_slot(const uint8_t *hdr, int i)
{
	return hdr + 64 + 128 * i;
}

/*
 * Unwrap slot i of hdr into mk[32] given its KEK: AD = uuid (hdr 32..47)
 * || i (u32 LE) || kind, opslimit, memlimit (slot bytes 0..3, 8..23, which
 * are already little-endian on disk).
 */
static REF_UNUSED int ref_unwrap(const uint8_t *hdr, int i,
				 const uint8_t kek[32], uint8_t mk[32])
{
	const uint8_t *s = ref_slot(hdr, i);
	uint8_t ad[40];
	unsigned long long mlen;

	memcpy(ad, hdr + 32, 16);
	ad[16] = (uint8_t)i;
	ad[17] = ad[18] = ad[19] = 0;
	memcpy(ad + 20, s, 4);
	memcpy(ad + 24, s + 8, 16);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    mk, &mlen, NULL, s + 64, 48, ad, sizeof(ad), s + 40, kek))
		return -1;
	return mlen == 32 ? 0 : -1;
}

/* KEK of key-file slot i: BLAKE2b-256 of the file keyed with the salt. */
static REF_UNUSED int ref_unwrap_keyfile(const uint8_t *hdr, int i,
					 const uint8_t *file, size_t len,
					 uint8_t mk[32])
{
	uint8_t kek[32];
	int ret;

	if (ref_le32(ref_slot(hdr, i)) != 2)
		return -1;
	crypto_generichash(kek, 32, file, len, ref_slot(hdr, i) + 24, 16);
	ret = ref_unwrap(hdr, i, kek, mk);
	sodium_memzero(kek, sizeof(kek));
	return ret;
}

/* KEK of passphrase slot i: Argon2id13 with the slot's salt and costs. */
static REF_UNUSED int ref_unwrap_passphrase(const uint8_t *hdr, int i,
					    const char *pw, uint8_t mk[32])
{
	const uint8_t *s = ref_slot(hdr, i);
	uint8_t kek[32];
	int ret;

	if (ref_le32(s) != 1)
		return -1;
	if (crypto_pwhash_argon2id(kek, 32, pw, strlen(pw), s + 24,
				   ref_le64(s + 8), (size_t)ref_le64(s + 16),
				   crypto_pwhash_ALG_ARGON2ID13))
		return -1;
	ret = ref_unwrap(hdr, i, kek, mk);
	sodium_memzero(kek, sizeof(kek));
	return ret;
}

/* Does the authenticator (bytes 4064..4095) verify under mk? */
static REF_UNUSED int ref_auth_ok(const uint8_t *hdr, const uint8_t mk[32])
{
	uint8_t key[32];
	uint8_t auth[32];

	crypto_kdf_derive_from_key(key, 32, 1, "sixkeyhd", mk);
	crypto_generichash(auth, 32, hdr, 4064, key, 32);
	sodium_memzero(key, sizeof(key));
	return memcmp(auth, hdr + 4064, 32) == 0;
}

/* The block key: crypto_kdf subkey 1 of context "sixblock". */
static REF_UNUSED void ref_block_key(const uint8_t mk[32], uint8_t key[32])
{
	crypto_kdf_derive_from_key(key, 32, 1, "sixblock", mk);
}

/*
 * Open a block the slow way: combined (non-detached) decrypt of
 * ciphertext || tag with AD = uuid || lba (u64 LE) || lsn (u64 LE).
 */
static REF_UNUSED int ref_open_block(const uint8_t key[32],
				     const uint8_t uuid[16], uint64_t lba,
				     uint64_t lsn, const uint8_t *cipher,
				     const uint8_t nonce[24],
				     const uint8_t tag[16], uint8_t *plain)
{
	static __thread uint8_t ct[4096 + 16];
	unsigned long long mlen;
	uint8_t ad[32];

	memcpy(ct, cipher, 4096);
	memcpy(ct + 4096, tag, 16);
	memcpy(ad, uuid, 16);
	ref_put_le64(ad + 16, lba);
	ref_put_le64(ad + 24, lsn);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &mlen, NULL, ct,
						       sizeof(ct), ad,
						       sizeof(ad), nonce, key))
		return -1;
	return mlen == 4096 ? 0 : -1;
}

#endif /* SIXFOLD_TEST_KEYS_REF_H */
