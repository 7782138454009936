/*
 * keyslot_format.h - on-disk layout of the sixfold key header.
 *
 * Purpose: the key header holds the volume master key wrapped under up to
 * KEY_SLOTS secrets (passphrases or key files), in the manner of a LUKS2
 * keyslot area or bcachefs's bch_sb_field_crypt.  It is the only place the
 * master key is stored, and only in wrapped form.
 *
 * Where it lives: keys/ produces and consumes exactly KEY_HEADER_BYTES
 * (4096) opaque bytes.  The volume stores them in every zone's key file
 * (DIR0/keys, so there are as many copies as zones), wrapped in its own
 * magic, generation number and CRC32C (volume/vol_format.h, KEY FILE);
 * this header carries no CRC of its own.
 * Instead it carries an authenticator, a keyed hash under a key derived
 * from the master key, which catches both damage and tampering once a slot
 * has been unlocked.
 *
 * Byte order: every integer is little-endian.  Nothing here is ever cast
 * from the buffer: key_hdr_encode()/key_hdr_decode() in keyslot_format.c
 * are the only code that reads or writes these bytes.
 *
 * Header (4096 bytes):
 *
 * OFFSET | SIZE | FIELD        | MEANING
 * -------+------+--------------+---------------------------------------------
 *      0 |    8 | magic        | "SIXKEYHD" (53 49 58 4B 45 59 48 44)
 *      8 |    4 | version      | format version that wrote it; 1
 *     12 |    4 | version_min  | oldest reader version that can use it; 1
 *     16 |    4 | incompat     | feature bits a reader must know; 0 in v1
 *     20 |    4 | compat       | feature bits a reader may ignore (a writer
 *        |      |              | keeps them as found); 0 in v1
 *     24 |    4 | hdr_bytes    | length of the header; 4096
 *     28 |    4 | reserved     | zero
 *     32 |   16 | uuid         | volume UUID this header belongs to
 *     48 |   16 | reserved     | zero
 *     64 | 1024 | slots[8]     | 8 keyslots of 128 bytes, table below;
 *        |      |              | slot i at offset 64 + 128 * i
 *   1088 | 2976 | reserved     | zero
 *   4064 |   32 | auth         | BLAKE2b-256 keyed hash (crypto_generichash,
 *        |      |              | 32-byte key) of bytes [0, 4064), key =
 *        |      |              | crypto_kdf_derive_from_key(32, subkey id 1,
 *        |      |              | context "sixkeyhd", master key)
 *
 * Keyslot (128 bytes, at 64 + 128 * i):
 *
 * OFFSET | SIZE | FIELD        | MEANING
 * -------+------+--------------+---------------------------------------------
 *      0 |    4 | kind         | enum key_kind: 0 empty, 1 passphrase,
 *        |      |              | 2 key file (never renumbered)
 *      4 |    4 | reserved     | zero
 *      8 |    8 | opslimit     | passphrase: Argon2id13 opslimit; else 0
 *     16 |    8 | memlimit     | passphrase: Argon2id13 memlimit in bytes;
 *        |      |              | else 0
 *     24 |   16 | salt         | random; KDF salt (passphrase: Argon2id
 *        |      |              | salt, key file: BLAKE2b key)
 *     40 |   24 | nonce        | random XChaCha20-Poly1305-IETF nonce of
 *        |      |              | the wrap
 *     64 |   48 | wrapped      | master key (32) encrypted under the KEK,
 *        |      |              | followed by the Poly1305 tag (16)
 *    112 |   16 | reserved     | zero
 *
 * An empty slot (kind 0) is 128 zero bytes.
 *
 * Key encryption key (KEK, 32 bytes) of a slot:
 *   passphrase: crypto_pwhash_argon2id(KEK, 32, passphrase, salt, opslimit,
 *               memlimit, crypto_pwhash_argon2id_ALG_ARGON2ID13)
 *   key file:   crypto_generichash(KEK, 32, file contents, key = salt (16))
 *               (a key file is high-entropy, so no slow KDF is needed)
 * Wrap: wrapped = crypto_aead_xchacha20poly1305_ietf_encrypt(master key,
 *   AD, nonce, KEK) where AD (40 bytes) = uuid (16) || slot index (u32 LE)
 *   || kind (u32 LE) || opslimit (u64 LE) || memlimit (u64 LE), so a slot
 *   cannot be moved to another index, volume, kind or cost.  The salt is
 *   bound through the KEK.
 *
 * Validation rules (a reader rejects the header, -EBADMSG, unless all hold;
 * rules 1-11 need no key, 12 needs the volume UUID, 13 the master key):
 *   1. magic is "SIXKEYHD".
 *   2. 1 <= version_min <= version, and version_min <= KEY_FMT_VERSION
 *      (otherwise a newer, incompatible sixfold wrote it).
 *   3. incompat has no bit this reader does not know (none in v1).
 *   4. hdr_bytes == 4096.
 *   5. Every reserved byte of the header is zero.
 *   6. Every slot's kind is 0, 1 or 2.
 *   7. An empty slot is all zero.
 *   8. A used slot's reserved bytes are zero.
 *   9. A passphrase slot has KEY_FMT_OPSLIMIT_MIN <= opslimit <=
 *      KEY_FMT_OPSLIMIT_MAX and KEY_FMT_MEMLIMIT_MIN <= memlimit <=
 *      KEY_FMT_MEMLIMIT_MAX.  The caps exist because the KDF must run
 *      before the header can be authenticated: a hostile header must not
 *      make an unlock run for hours or allocate terabytes.
 *  10. A key-file slot has opslimit == memlimit == 0.
 *  11. At least one slot is used.
 *  12. uuid equals the UUID of the volume that presents the header.
 *  13. auth verifies under the master key (after a slot unwraps it, or
 *      before a slot is added or removed with a master key in hand).
 * A slot whose wrap does not open under the offered secret is not damage:
 * it is a wrong secret (-EKEYREJECTED) as long as the rules hold.
 *
 * Compatibility: a future version that gives reserved bytes a meaning, or
 * adds a slot kind, either sets an incompat bit or raises version_min, so
 * that a version 1 reader never misreads it.  Writers (add/remove) keep
 * version, version_min and compat as they found them.
 *
 * Version history:
 *   1  first version (sixfold 0.1).
 */
#ifndef SIXFOLD_KEYSLOT_FORMAT_H
#define SIXFOLD_KEYSLOT_FORMAT_H

#include <stdint.h>

#include "keys.h"

#define KEY_FMT_MAGIC "SIXKEYHD"
#define KEY_FMT_MAGIC_BYTES 8
#define KEY_FMT_VERSION 1
#define KEY_FMT_INCOMPAT_KNOWN 0u /* incompat bits this code understands */

/* Header field offsets (see the table above). */
#define KEY_HDR_OFF_MAGIC 0
#define KEY_HDR_OFF_VERSION 8
#define KEY_HDR_OFF_VERSION_MIN 12
#define KEY_HDR_OFF_INCOMPAT 16
#define KEY_HDR_OFF_COMPAT 20
#define KEY_HDR_OFF_HDR_BYTES 24
#define KEY_HDR_OFF_RSVD0 28
#define KEY_HDR_OFF_UUID 32
#define KEY_HDR_OFF_RSVD1 48
#define KEY_HDR_OFF_SLOTS 64
#define KEY_HDR_OFF_RSVD2 1088
#define KEY_HDR_OFF_AUTH 4064
#define KEY_HDR_AUTH_BYTES 32

/* Keyslot field offsets, relative to the slot. */
#define KEY_SLOT_BYTES 128
#define KEY_SLOT_OFF_KIND 0
#define KEY_SLOT_OFF_RSVD0 4
#define KEY_SLOT_OFF_OPSLIMIT 8
#define KEY_SLOT_OFF_MEMLIMIT 16
#define KEY_SLOT_OFF_SALT 24
#define KEY_SLOT_OFF_NONCE 40
#define KEY_SLOT_OFF_WRAPPED 64
#define KEY_SLOT_OFF_RSVD1 112
#define KEY_SLOT_SALT_BYTES 16 /* crypto_pwhash_argon2id_SALTBYTES */
#define KEY_SLOT_NONCE_BYTES 24 /* xchacha20poly1305_ietf_NPUBBYTES */
#define KEY_MASTER_BYTES 32 /* crypto_kdf_KEYBYTES */
#define KEY_SLOT_WRAPPED_BYTES 48 /* master key + 16-byte tag */
#define KEY_SLOT_AD_BYTES 40 /* uuid, index, kind, opslimit, memlimit */

/* Bounds of rule 9 (Argon2id13 minimums; maximums are our own caps). */
#define KEY_FMT_OPSLIMIT_MIN 1ull
#define KEY_FMT_OPSLIMIT_MAX 32ull
#define KEY_FMT_MEMLIMIT_MIN 8192ull
#define KEY_FMT_MEMLIMIT_MAX (4ull << 30)

_Static_assert(KEY_HDR_OFF_RSVD0 == KEY_HDR_OFF_HDR_BYTES + 4 &&
		       KEY_HDR_OFF_RSVD1 == KEY_HDR_OFF_UUID + KEY_UUID_BYTES,
	       "header reserved ranges follow their fields");
_Static_assert(KEY_HDR_OFF_SLOTS + KEY_SLOTS * KEY_SLOT_BYTES ==
		       KEY_HDR_OFF_RSVD2,
	       "slots end where the reserved area starts");
_Static_assert(KEY_HDR_OFF_RSVD2 <= KEY_HDR_OFF_AUTH,
	       "keyslots overlap the authenticator");
_Static_assert(KEY_HDR_OFF_AUTH + KEY_HDR_AUTH_BYTES == KEY_HEADER_BYTES,
	       "authenticator must end the header");
_Static_assert(KEY_HDR_OFF_UUID + KEY_UUID_BYTES <= KEY_HDR_OFF_SLOTS,
	       "uuid overlaps the slots");
_Static_assert(KEY_SLOT_OFF_SALT + KEY_SLOT_SALT_BYTES == KEY_SLOT_OFF_NONCE,
	       "salt and nonce must be adjacent");
_Static_assert(KEY_SLOT_OFF_NONCE + KEY_SLOT_NONCE_BYTES ==
		       KEY_SLOT_OFF_WRAPPED,
	       "nonce and wrapped key must be adjacent");
_Static_assert(KEY_SLOT_OFF_WRAPPED + KEY_SLOT_WRAPPED_BYTES ==
		       KEY_SLOT_OFF_RSVD1,
	       "wrapped key ends where the slot's reserved tail starts");
_Static_assert(KEY_SLOT_OFF_RSVD1 <= KEY_SLOT_BYTES && KEY_SLOT_OFF_RSVD0 == 4,
	       "slot reserved ranges");
_Static_assert(KEY_MASTER_BYTES + KEY_TAG_BYTES == KEY_SLOT_WRAPPED_BYTES,
	       "wrapped key is the master key plus a tag");

/* Numbered validation rules, as listed above (for key_hdr_corrupt()). */
enum key_hdr_rule {
	KEY_RULE_MAGIC = 1,
	KEY_RULE_VERSION = 2,
	KEY_RULE_INCOMPAT = 3,
	KEY_RULE_HDR_BYTES = 4,
	KEY_RULE_HDR_RESERVED = 5,
	KEY_RULE_SLOT_KIND = 6,
	KEY_RULE_EMPTY_SLOT = 7,
	KEY_RULE_SLOT_RESERVED = 8,
	KEY_RULE_PW_PARAMS = 9,
	KEY_RULE_KEYFILE_PARAMS = 10,
	KEY_RULE_NO_SLOT = 11,
	KEY_RULE_UUID = 12,
	KEY_RULE_AUTH = 13,
};

/* One keyslot, decoded.  Field meanings as in the table. */
struct key_hdr_slot {
	uint32_t ks_kind; /* enum key_kind */
	uint64_t ks_opslimit; /* passphrase only */
	uint64_t ks_memlimit; /* passphrase only */
	uint8_t ks_salt[KEY_SLOT_SALT_BYTES]; /* KDF salt */
	uint8_t ks_nonce[KEY_SLOT_NONCE_BYTES]; /* wrap nonce */
	uint8_t ks_wrapped[KEY_SLOT_WRAPPED_BYTES]; /* master key + tag */
};

/* The key header, decoded.  Reserved bytes are not kept: they are zero. */
struct key_hdr {
	uint32_t kh_version; /* writer's format version */
	uint32_t kh_version_min; /* oldest compatible reader */
	uint32_t kh_incompat; /* must-understand features */
	uint32_t kh_compat; /* may-ignore features */
	uint8_t kh_uuid[KEY_UUID_BYTES]; /* volume UUID */
	struct key_hdr_slot kh_slots[KEY_SLOTS]; /* ks_kind 0: empty */
	uint8_t kh_auth[KEY_HDR_AUTH_BYTES]; /* authenticator as stored */
};

/*
 * Fill buf (KEY_HEADER_BYTES) from h: every byte is written, reserved ones
 * as zero, kh_auth as given (the caller computes it over the result).
 */
void key_hdr_encode(const struct key_hdr *h, uint8_t *buf);

/*
 * Decode buf into h and check rules 1-11.  Returns 0 or -EBADMSG.
 */
int key_hdr_decode(const uint8_t *buf, struct key_hdr *h) KEY_WARN_UNUSED;

/*
 * Every -EBADMSG for a damaged header goes through here, naming the rule
 * it broke.  keys/ does not log (secrets must stay out of logs), so this is
 * a breakpoint target rather than a log line: `break key_hdr_corrupt` and
 * look at `rule`.  Returns -EBADMSG.
 */
int key_hdr_corrupt(enum key_hdr_rule rule);

/* The two private byte helpers keys/ keeps (little-endian, unaligned). */
static inline void key_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void key_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t key_get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t key_get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#endif /* SIXFOLD_KEYSLOT_FORMAT_H */
