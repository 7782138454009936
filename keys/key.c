/*
 * key.c - master key, keyslots and the block cipher of sixfold (keys.h).
 *
 * Layer: keys/, a leaf.  It includes nothing else of the project, never
 * logs, and never hands out raw key bytes: the master key and the block
 * key stay in sodium_malloc()'ed memory (guard pages, mlock()'ed, wiped by
 * sodium_free()), made read-only once filled.  Temporary keys (KEKs, the
 * header authenticator key) live in the same kind of memory and are freed
 * as soon as they are used; sodium_free() zeroes them (sodium_memzero)
 * before it unmaps them.  No key byte is ever on the stack.
 *
 * Design notes:
 *  1. Nothing here has shared mutable state: a key_master or key_cipher is
 *     read-only after its constructor, so any number of threads may use
 *     one at once.
 *  2. Keys derived from the master key, all with crypto_kdf (BLAKE2b):
 *       context "sixblock", id 1: XChaCha20-Poly1305 key for user blocks
 *       context "sixkeyhd", id 1: BLAKE2b key of the header authenticator
 *     New uses take a new context, never a reused (context, id).
 *  3. Header operations are all-or-nothing: the caller's header buffer is
 *     written only when the whole operation has succeeded.
 *  4. The on-disk format and its validation rules are keyslot_format.h;
 *     key_hdr_decode() enforces rules 1-11, this file 12 (uuid) and 13
 *     (authenticator).
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "keys.h"
#include "keyslot_format.h"

#define KEY_SUBKEY_ID 1
#define KEY_CTX_BLOCK "sixblock"
#define KEY_CTX_HEADER "sixkeyhd"
#define KEY_BLOCK_AD_BYTES (KEY_UUID_BYTES + 8 + 8)
/*
 * Argon2id cost of a passphrase slot when the source gives 0: 2 passes
 * over 256 MiB, about one second here (the issue asks for an interactive
 * unlock of about a second; libsodium's INTERACTIVE, 64 MiB, takes 0.25 s
 * and MODERATE, 3 passes, 1.5 s).
 */
#define KEY_OPSLIMIT_DEFAULT crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE
#define KEY_MEMLIMIT_DEFAULT crypto_pwhash_argon2id_MEMLIMIT_MODERATE

_Static_assert(KEY_MASTER_BYTES == crypto_kdf_KEYBYTES, "master key size");
_Static_assert(KEY_MASTER_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "KEK and block key size");
_Static_assert(KEY_SLOT_SALT_BYTES == crypto_pwhash_argon2id_SALTBYTES,
	       "passphrase salt size");
_Static_assert(KEY_SLOT_SALT_BYTES >= crypto_generichash_KEYBYTES_MIN,
	       "key-file salt too short for a BLAKE2b key");
_Static_assert(KEY_SLOT_NONCE_BYTES ==
			       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES &&
		       KEY_NONCE_BYTES ==
			       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
	       "nonce size");
_Static_assert(KEY_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES,
	       "tag size");
_Static_assert(KEY_HDR_AUTH_BYTES >= crypto_generichash_BYTES_MIN &&
		       KEY_HDR_AUTH_BYTES <= crypto_generichash_BYTES_MAX,
	       "authenticator size");
_Static_assert(sizeof(KEY_CTX_BLOCK) - 1 == crypto_kdf_CONTEXTBYTES &&
		       sizeof(KEY_CTX_HEADER) - 1 == crypto_kdf_CONTEXTBYTES,
	       "kdf context size");
_Static_assert(KEY_FMT_OPSLIMIT_MIN >= crypto_pwhash_argon2id_OPSLIMIT_MIN &&
		       KEY_FMT_OPSLIMIT_MAX <=
			       crypto_pwhash_argon2id_OPSLIMIT_MAX &&
		       KEY_FMT_MEMLIMIT_MIN >=
			       crypto_pwhash_argon2id_MEMLIMIT_MIN,
	       "Argon2id parameter bounds");
_Static_assert(KEY_OPSLIMIT_DEFAULT >= KEY_FMT_OPSLIMIT_MIN &&
		       KEY_OPSLIMIT_DEFAULT <= KEY_FMT_OPSLIMIT_MAX &&
		       KEY_MEMLIMIT_DEFAULT >= KEY_FMT_MEMLIMIT_MIN &&
		       KEY_MEMLIMIT_DEFAULT <= KEY_FMT_MEMLIMIT_MAX,
	       "defaults within the format's bounds");

struct key_master {
	uint8_t mk_key[KEY_MASTER_BYTES]; /* read-only after construction */
};

struct key_cipher {
	uint8_t kc_key[KEY_MASTER_BYTES]; /* "sixblock" subkey; read-only */
	uint8_t kc_uuid[KEY_UUID_BYTES]; /* bound into every block's AD */
};

/* --- library, master key, secret memory -------------------------------- */

int key_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

void key_random(void *buf, size_t n)
{
	randombytes_buf(buf, n);
}

void *key_secret_alloc(size_t n)
{
	return sodium_malloc(n);
}

void key_secret_free(void *p)
{
	sodium_free(p);
}

int key_master_create(struct key_master **out)
{
	struct key_master *mk;

	mk = sodium_malloc(sizeof(*mk));
	if (!mk)
		return -ENOMEM;
	randombytes_buf(mk->mk_key, sizeof(mk->mk_key));
	(void)sodium_mprotect_readonly(mk);
	*out = mk;
	return 0;
}

void key_master_free(struct key_master *mk)
{
	sodium_free(mk);
}

/* --- key derivation ----------------------------------------------------- */

/* Check a source offered to create a slot or to unlock one. */
static int key_source_check(const struct key_source *src)
{
	if (src->kind != KEY_KIND_PASSPHRASE && src->kind != KEY_KIND_KEYFILE)
		return -EINVAL;
	if (!src->secret || src->secret_len == 0 ||
	    src->secret_len > KEY_SECRET_MAX_BYTES)
		return -EINVAL;
	return 0;
}

/* Derive the KEK of slot ks (kind, salt and parameters set) from src. */
static int key_kek_derive(const struct key_hdr_slot *ks,
			  const struct key_source *src, uint8_t *kek)
{
	if (ks->ks_kind == KEY_KIND_KEYFILE) {
		if (crypto_generichash(kek, KEY_MASTER_BYTES, src->secret,
				       src->secret_len, ks->ks_salt,
				       KEY_SLOT_SALT_BYTES) != 0)
			return -EINVAL;
		return 0;
	}
	/* A 32-bit host cannot honour every memlimit the format allows. */
	if (ks->ks_memlimit > crypto_pwhash_argon2id_MEMLIMIT_MAX)
		return -ENOMEM;
	if (crypto_pwhash_argon2id(kek, KEY_MASTER_BYTES,
				   (const char *)src->secret, src->secret_len,
				   ks->ks_salt, ks->ks_opslimit,
				   (size_t)ks->ks_memlimit,
				   crypto_pwhash_argon2id_ALG_ARGON2ID13) != 0)
		return -ENOMEM; /* the only runtime failure: no memory */
	return 0;
}

/* Associated data of slot i's wrap: uuid || i || kind || ops || mem. */
static void key_slot_ad(const uint8_t uuid[KEY_UUID_BYTES], int i,
			const struct key_hdr_slot *ks,
			uint8_t ad[KEY_SLOT_AD_BYTES])
{
	memcpy(ad, uuid, KEY_UUID_BYTES);
	key_put_le32(ad + 16, (uint32_t)i);
	key_put_le32(ad + 20, ks->ks_kind);
	key_put_le64(ad + 24, ks->ks_opslimit);
	key_put_le64(ad + 32, ks->ks_memlimit);
}

/* --- header authenticator ---------------------------------------------- */

/* auth = keyed BLAKE2b of buf[0, KEY_HDR_OFF_AUTH) (keyslot_format.h). */
static int key_hdr_auth(const struct key_master *mk, const uint8_t *buf,
			uint8_t auth[KEY_HDR_AUTH_BYTES])
{
	uint8_t *hkey;
	int ret = 0;

	hkey = sodium_malloc(crypto_generichash_KEYBYTES);
	if (!hkey)
		return -ENOMEM;
	crypto_kdf_derive_from_key(hkey, crypto_generichash_KEYBYTES,
				   KEY_SUBKEY_ID, KEY_CTX_HEADER, mk->mk_key);
	if (crypto_generichash(auth, KEY_HDR_AUTH_BYTES, buf, KEY_HDR_OFF_AUTH,
			       hkey, crypto_generichash_KEYBYTES) != 0)
		ret = -EINVAL;
	sodium_free(hkey); /* wipes */
	return ret;
}

/* Rule 13: does buf's authenticator verify under mk? 0 or -EBADMSG. */
static int key_hdr_auth_check(const struct key_master *mk, const uint8_t *buf)
{
	uint8_t auth[KEY_HDR_AUTH_BYTES];
	int ret;

	ret = key_hdr_auth(mk, buf, auth);
	if (ret < 0)
		return ret;
	if (sodium_memcmp(auth, buf + KEY_HDR_OFF_AUTH, sizeof(auth)) != 0)
		return key_hdr_corrupt(KEY_RULE_AUTH);
	return 0;
}

/* Encode h into hdr (KEY_HEADER_BYTES) with a fresh authenticator. */
static int key_hdr_store(const struct key_master *mk, struct key_hdr *h,
			 uint8_t *hdr)
{
	uint8_t buf[KEY_HEADER_BYTES];
	int ret;

	memset(h->kh_auth, 0, sizeof(h->kh_auth));
	key_hdr_encode(h, buf);
	ret = key_hdr_auth(mk, buf, buf + KEY_HDR_OFF_AUTH);
	if (ret < 0)
		return ret;
	memcpy(hdr, buf, sizeof(buf));
	return 0;
}

/*
 * Decode hdr, check it belongs to uuid and, with mk, that it was made
 * under mk.  Rules 1-12 (13 too when mk is given).
 */
static int key_hdr_load(const uint8_t *hdr, const uint8_t *uuid,
			const struct key_master *mk, struct key_hdr *h)
{
	int ret;

	ret = key_hdr_decode(hdr, h);
	if (ret < 0)
		return ret;
	if (memcmp(h->kh_uuid, uuid, KEY_UUID_BYTES) != 0)
		return key_hdr_corrupt(KEY_RULE_UUID);
	if (mk)
		return key_hdr_auth_check(mk, hdr);
	return 0;
}

/* --- keyslots ------------------------------------------------------------ */

/* Set the KDF parameters of a new slot from src: 0 or -EINVAL. */
static int key_slot_params(struct key_hdr_slot *ks,
			   const struct key_source *src)
{
	if (src->kind != KEY_KIND_PASSPHRASE)
		return 0; /* a key file needs no cost parameters */
	ks->ks_opslimit = src->opslimit;
	if (!ks->ks_opslimit)
		ks->ks_opslimit = KEY_OPSLIMIT_DEFAULT;
	ks->ks_memlimit = src->memlimit;
	if (!ks->ks_memlimit)
		ks->ks_memlimit = KEY_MEMLIMIT_DEFAULT;
	if (ks->ks_opslimit < KEY_FMT_OPSLIMIT_MIN ||
	    ks->ks_opslimit > KEY_FMT_OPSLIMIT_MAX ||
	    ks->ks_memlimit < KEY_FMT_MEMLIMIT_MIN ||
	    ks->ks_memlimit > KEY_FMT_MEMLIMIT_MAX)
		return -EINVAL;
	return 0;
}

/* Fill slot i of h with a fresh wrap of mk under src (checked). */
static int key_slot_fill(struct key_hdr *h, int i, const struct key_master *mk,
			 const struct key_source *src)
{
	struct key_hdr_slot *ks = &h->kh_slots[i];
	uint8_t ad[KEY_SLOT_AD_BYTES];
	uint8_t *kek;
	int ret;

	memset(ks, 0, sizeof(*ks));
	ks->ks_kind = src->kind;
	ret = key_slot_params(ks, src);
	if (ret < 0)
		return ret;
	randombytes_buf(ks->ks_salt, sizeof(ks->ks_salt));
	randombytes_buf(ks->ks_nonce, sizeof(ks->ks_nonce));

	kek = sodium_malloc(KEY_MASTER_BYTES);
	if (!kek)
		return -ENOMEM;
	ret = key_kek_derive(ks, src, kek);
	if (ret < 0)
		goto out_free_kek;
	key_slot_ad(h->kh_uuid, i, ks, ad);
	crypto_aead_xchacha20poly1305_ietf_encrypt(ks->ks_wrapped, NULL,
						   mk->mk_key, KEY_MASTER_BYTES,
						   ad, sizeof(ad), NULL,
						   ks->ks_nonce, kek);
out_free_kek:
	sodium_free(kek); /* wipes */
	return ret;
}

/*
 * Unwrap slot i of h with src into mk (writable).  0, or -EKEYREJECTED when
 * the secret is wrong, or -ENOMEM.
 */
static int key_slot_open(const struct key_hdr *h, int i,
			 const struct key_source *src, struct key_master *mk)
{
	const struct key_hdr_slot *ks = &h->kh_slots[i];
	uint8_t ad[KEY_SLOT_AD_BYTES];
	uint8_t *kek;
	int ret;

	kek = sodium_malloc(KEY_MASTER_BYTES);
	if (!kek)
		return -ENOMEM;
	ret = key_kek_derive(ks, src, kek);
	if (ret < 0)
		goto out_free_kek;
	key_slot_ad(h->kh_uuid, i, ks, ad);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    mk->mk_key, NULL, NULL, ks->ks_wrapped,
		    KEY_SLOT_WRAPPED_BYTES, ad, sizeof(ad), ks->ks_nonce,
		    kek) != 0)
		ret = -EKEYREJECTED;
out_free_kek:
	sodium_free(kek); /* wipes */
	return ret;
}

int key_header_create(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_master *mk, const struct key_source *src)
{
	struct key_hdr h;
	int ret;

	ret = key_source_check(src);
	if (ret < 0)
		return ret;
	memset(&h, 0, sizeof(h));
	h.kh_version = KEY_FMT_VERSION;
	h.kh_version_min = KEY_FMT_VERSION;
	memcpy(h.kh_uuid, uuid, KEY_UUID_BYTES);
	ret = key_slot_fill(&h, 0, mk, src);
	if (ret < 0)
		return ret;
	return key_hdr_store(mk, &h, hdr);
}

/* Try every slot of src's kind; the slot number that opened, or -errno. */
static int key_slots_try(const struct key_hdr *h, const struct key_source *src,
			 struct key_master *mk)
{
	int ret = -EKEYREJECTED;

	for (int i = 0; i < KEY_SLOTS; i++) {
		if (h->kh_slots[i].ks_kind != (uint32_t)src->kind)
			continue;
		ret = key_slot_open(h, i, src, mk);
		if (ret != -EKEYREJECTED)
			return ret < 0 ? ret : i;
	}
	return ret;
}

int key_header_unlock(const uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_source *src, struct key_master **out)
{
	struct key_master *mk;
	struct key_hdr h;
	int slot;
	int ret;

	ret = key_source_check(src);
	if (ret < 0)
		return ret;
	ret = key_hdr_load(hdr, uuid, NULL, &h);
	if (ret < 0)
		return ret;
	mk = sodium_malloc(sizeof(*mk));
	if (!mk)
		return -ENOMEM;
	ret = key_slots_try(&h, src, mk);
	if (ret < 0)
		goto out_free_mk;
	slot = ret;
	/* A slot opened: now the whole header must be authentic. */
	ret = key_hdr_auth_check(mk, hdr);
	if (ret < 0)
		goto out_free_mk;
	(void)sodium_mprotect_readonly(mk);
	*out = mk;
	return slot;

out_free_mk:
	sodium_free(mk); /* wipes */
	return ret;
}

int key_header_add(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		   const struct key_master *mk, const struct key_source *src)
{
	struct key_hdr h;
	int ret;

	ret = key_source_check(src);
	if (ret < 0)
		return ret;
	ret = key_hdr_load(hdr, uuid, mk, &h);
	if (ret < 0)
		return ret;
	for (int i = 0; i < KEY_SLOTS; i++) {
		if (h.kh_slots[i].ks_kind != KEY_KIND_EMPTY)
			continue;
		ret = key_slot_fill(&h, i, mk, src);
		if (ret < 0)
			return ret;
		ret = key_hdr_store(mk, &h, hdr);
		return ret < 0 ? ret : i;
	}
	return -ENOSPC;
}

int key_header_remove(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_master *mk, int slot)
{
	struct key_hdr h;
	int used = 0;
	int ret;

	ret = key_hdr_load(hdr, uuid, mk, &h);
	if (ret < 0)
		return ret;
	if (slot < 0 || slot >= KEY_SLOTS ||
	    h.kh_slots[slot].ks_kind == KEY_KIND_EMPTY)
		return -ENOENT;
	for (int i = 0; i < KEY_SLOTS; i++)
		used += h.kh_slots[i].ks_kind != KEY_KIND_EMPTY;
	if (used == 1)
		return -EBUSY;
	memset(&h.kh_slots[slot], 0, sizeof(h.kh_slots[slot]));
	return key_hdr_store(mk, &h, hdr);
}

int key_header_list(const uint8_t *hdr, struct key_slot_info *info, int n)
{
	struct key_hdr h;
	int used = 0;
	int ret;

	assert(n >= 0);
	ret = key_hdr_decode(hdr, &h);
	if (ret < 0)
		return ret;
	for (int i = 0; i < KEY_SLOTS; i++) {
		const struct key_hdr_slot *ks = &h.kh_slots[i];

		if (ks->ks_kind == KEY_KIND_EMPTY)
			continue;
		if (used < n) {
			info[used].slot = i;
			info[used].kind = (enum key_kind)ks->ks_kind;
			info[used].opslimit = ks->ks_opslimit;
			info[used].memlimit = ks->ks_memlimit;
		}
		used++;
	}
	return used;
}

/* --- block cipher -------------------------------------------------------- */

int key_cipher_create(const struct key_master *mk,
		      const uint8_t uuid[KEY_UUID_BYTES],
		      struct key_cipher **out)
{
	struct key_cipher *kc;

	kc = sodium_malloc(sizeof(*kc));
	if (!kc)
		return -ENOMEM;
	crypto_kdf_derive_from_key(kc->kc_key, sizeof(kc->kc_key),
				   KEY_SUBKEY_ID, KEY_CTX_BLOCK, mk->mk_key);
	memcpy(kc->kc_uuid, uuid, KEY_UUID_BYTES);
	(void)sodium_mprotect_readonly(kc);
	*out = kc;
	return 0;
}

void key_cipher_free(struct key_cipher *kc)
{
	sodium_free(kc);
}

/* Associated data of a block: uuid (16) || lba (u64 LE) || lsn (u64 LE). */
static void key_block_ad(const struct key_cipher *kc, uint64_t lba,
			 uint64_t lsn, uint8_t ad[KEY_BLOCK_AD_BYTES])
{
	memcpy(ad, kc->kc_uuid, KEY_UUID_BYTES);
	key_put_le64(ad + KEY_UUID_BYTES, lba);
	key_put_le64(ad + KEY_UUID_BYTES + 8, lsn);
}

int key_seal_block(const struct key_cipher *kc, uint64_t lba, uint64_t lsn,
		   const uint8_t *plain, uint8_t *cipher,
		   uint8_t nonce[KEY_NONCE_BYTES], uint8_t tag[KEY_TAG_BYTES])
{
	uint8_t ad[KEY_BLOCK_AD_BYTES];

	key_block_ad(kc, lba, lsn, ad);
	randombytes_buf(nonce, KEY_NONCE_BYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		cipher, tag, NULL, plain, KEY_BLOCK_BYTES, ad, sizeof(ad), NULL,
		nonce, kc->kc_key);
	return 0;
}

int key_open_block(const struct key_cipher *kc, uint64_t lba, uint64_t lsn,
		   const uint8_t *cipher, const uint8_t nonce[KEY_NONCE_BYTES],
		   const uint8_t tag[KEY_TAG_BYTES], uint8_t *plain)
{
	uint8_t ad[KEY_BLOCK_AD_BYTES];

	key_block_ad(kc, lba, lsn, ad);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		    plain, NULL, cipher, KEY_BLOCK_BYTES, tag, ad, sizeof(ad),
		    nonce, kc->kc_key) != 0) {
		memset(plain, 0, KEY_BLOCK_BYTES);
		return -EBADMSG;
	}
	return 0;
}
