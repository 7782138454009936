/*
 * keys.h - sixfold key management and block cipher (the keys/ module).
 *
 * Layer: leaf. keys/ knows nothing of zones, files or the volume; it turns
 * secrets into an opaque master key, wraps that key into keyslots held in a
 * fixed-size key header (bytes the volume stores in every zone), and seals
 * and opens 4 KiB blocks with an AEAD.
 *
 * Secrets (master key, derived keys, passphrases copied in) live only in
 * sodium_malloc()'ed, mlock()'ed memory and are wiped when freed.  Raw key
 * bytes never leave this module.  Nothing here logs.
 *
 * All int-returning functions return 0 (or a count) on success and -errno
 * on failure.  key_init() must succeed before anything else is called.
 * The key, header and cipher functions are reentrant: key_master and
 * key_cipher are read-only after they are made, so threads may share them.
 * The header functions are all-or-nothing: on any error the caller's
 * header bytes are unchanged.  The byte layout and its rules are in
 * keys/keyslot_format.h.
 */
#ifndef SIXFOLD_KEYS_H
#define SIXFOLD_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define KEY_WARN_UNUSED __attribute__((warn_unused_result))

/* Size of the key header as stored on disk (see keys/keyslot_format.h). */
#define KEY_HEADER_BYTES 4096
/* Number of keyslots in a header. */
#define KEY_SLOTS 8
/* Block geometry of the AEAD (XChaCha20-Poly1305-IETF). */
#define KEY_BLOCK_BYTES 4096
#define KEY_NONCE_BYTES 24
#define KEY_TAG_BYTES 16
/* Volume UUID length; the UUID is bound into every header and block. */
#define KEY_UUID_BYTES 16
/* Largest secret (passphrase or key file) a key_source may carry. */
#define KEY_SECRET_MAX_BYTES (1u << 20)

/* Kinds of keyslot (stored on disk: never renumber). */
enum key_kind {
	KEY_KIND_EMPTY = 0,
	KEY_KIND_PASSPHRASE = 1, /* Argon2id(passphrase, salt, ops, mem) */
	KEY_KIND_KEYFILE = 2, /* BLAKE2b keyed hash of the file contents */
};

/*
 * A secret offered to unlock or to create a slot.  The bytes are only
 * read during the call; the caller owns and wipes them.
 */
struct key_source {
	enum key_kind kind; /* PASSPHRASE or KEYFILE */
	const uint8_t *secret; /* passphrase or key-file bytes */
	size_t secret_len; /* 1 .. KEY_SECRET_MAX_BYTES (1 MiB) */
	/*
	 * Argon2id cost for a new passphrase slot; 0 means the defaults
	 * (crypto_pwhash_OPSLIMIT_INTERACTIVE / MEMLIMIT_MODERATE: 2 passes
	 * over 256 MiB, about 1 s here).  Tests set small values.  Ignored
	 * for unlock: the slot stores its own parameters.  Allowed: opslimit
	 * 1 .. 32, memlimit 8 KiB .. 4 GiB (keyslot_format.h rule 9), else
	 * -EINVAL.  Ignored for key files.
	 */
	uint64_t opslimit; /* Argon2id passes */
	uint64_t memlimit; /* Argon2id memory, bytes */
};

/* What key_header_list() reports per slot. */
struct key_slot_info {
	int slot; /* 0 .. KEY_SLOTS-1 */
	enum key_kind kind; /* never EMPTY in the listing */
	uint64_t opslimit; /* passphrase slots: Argon2id passes, else 0 */
	uint64_t memlimit; /* passphrase slots: Argon2id bytes, else 0 */
};

struct key_master; /* opaque: the 256-bit volume master key */
struct key_cipher; /* opaque: per-volume block cipher context */

/* Initialise libsodium.  Returns 0 or -EIO. Safe to call more than once. */
int key_init(void) KEY_WARN_UNUSED;

/* Make a fresh random master key.  -ENOMEM. */
int key_master_create(struct key_master **out) KEY_WARN_UNUSED;
/* Wipe and free; NULL is fine. */
void key_master_free(struct key_master *mk);

/*
 * Build a new key header in hdr (KEY_HEADER_BYTES) for volume uuid, with
 * one slot (slot 0) wrapping mk under src.  -EINVAL bad source, -ENOMEM.
 */
int key_header_create(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_master *mk,
		      const struct key_source *src) KEY_WARN_UNUSED;

/*
 * Try every slot of hdr of the matching kind with src; on success *out is
 * the master key (caller frees) and the return value is the slot number.
 * Also checks the header's authenticator under the unlocked key.
 * -EKEYREJECTED  no slot accepts this secret (wrong passphrase / key file)
 * -EBADMSG       the header is not a sixfold key header for uuid, or it is
 *                damaged (bad magic, version, fields, authenticator)
 * -EINVAL        src is not a passphrase or key file, or its length is
 *                out of range
 * -ENOMEM        (also: a slot asks for more Argon2id memory than there is)
 * On failure *out is left as it was.
 */
int key_header_unlock(const uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_source *src,
		      struct key_master **out) KEY_WARN_UNUSED;

/*
 * Add a slot wrapping mk under src into the first free slot of hdr
 * (rewritten in place, authenticator updated).  Returns the slot number.
 * -ENOSPC all slots used, -EBADMSG hdr damaged or not made under mk,
 * -EINVAL bad source (kind, length or Argon2id cost), -ENOMEM.
 */
int key_header_add(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		   const struct key_master *mk,
		   const struct key_source *src) KEY_WARN_UNUSED;

/*
 * Clear slot `slot` of hdr (wiped, authenticator updated under mk).
 * -ENOENT slot empty or out of range, -EBUSY it is the last used slot,
 * -EBADMSG hdr damaged or not made under mk, -ENOMEM.
 */
int key_header_remove(uint8_t *hdr, const uint8_t uuid[KEY_UUID_BYTES],
		      const struct key_master *mk, int slot) KEY_WARN_UNUSED;

/*
 * List the used slots of hdr into info[0..n).  Returns how many there
 * are (may exceed n).  Needs no key; checks only structure.  -EBADMSG.
 */
int key_header_list(const uint8_t *hdr, struct key_slot_info *info,
		    int n) KEY_WARN_UNUSED;

/*
 * Block cipher.  key_cipher_create derives the block subkey from mk
 * (crypto_kdf, context "sixblock") for volume uuid.  The master key may be
 * freed afterwards.  -ENOMEM.
 */
int key_cipher_create(const struct key_master *mk,
		      const uint8_t uuid[KEY_UUID_BYTES],
		      struct key_cipher **out) KEY_WARN_UNUSED;
void key_cipher_free(struct key_cipher *kc);

/*
 * Seal one 4 KiB block: random nonce, ciphertext (same length as the
 * plaintext, may not overlap it), tag.  Associated data = uuid, lba, lsn
 * (little-endian), so a copy moved to another LBA or replayed with another
 * LSN fails to open.  Thread-safe.  Returns 0.
 */
int key_seal_block(const struct key_cipher *kc, uint64_t lba, uint64_t lsn,
		   const uint8_t *plain, uint8_t *cipher,
		   uint8_t nonce[KEY_NONCE_BYTES],
		   uint8_t tag[KEY_TAG_BYTES]) KEY_WARN_UNUSED;

/*
 * Open one block sealed by key_seal_block.  -EBADMSG if it does not
 * authenticate (corrupt, wrong place, wrong version, wrong key); the
 * plaintext buffer is then zeroed.  Thread-safe.
 */
int key_open_block(const struct key_cipher *kc, uint64_t lba, uint64_t lsn,
		   const uint8_t *cipher, const uint8_t nonce[KEY_NONCE_BYTES],
		   const uint8_t tag[KEY_TAG_BYTES],
		   uint8_t *plain) KEY_WARN_UNUSED;

/*
 * Fill buf with n random bytes (volume UUIDs, test data).  Never fails.
 */
void key_random(void *buf, size_t n);

/*
 * Secret memory helpers for the command line: a buffer from
 * sodium_malloc (guarded, locked) and its release (wipes).
 */
void *key_secret_alloc(size_t n);
void key_secret_free(void *p);

/*
 * Read a secret for src from the terminal without echo (prompt on
 * /dev/tty, or stdin when it is not a terminal), or from a key file.
 * key_source_read_file: reads up to 1 MiB of path into secret memory;
 * -ENOENT, -EACCES, -EINVAL (empty or larger than 1 MiB), -EIO (also when
 * a regular file grows while it is read), or another -errno of open(2)
 * or read(2) (-EISDIR for a directory).  Pipes and /dev/fd/N work.
 * key_source_prompt: prompt (may be NULL) on /dev/tty with echo off,
 * restoring the terminal on every path; without a controlling terminal,
 * read one line of stdin, no prompt.  The trailing newline is dropped.
 * confirm != 0 asks twice ("Repeat to confirm: ") and compares: -EINVAL
 * when they differ; -EINVAL on an empty passphrase; -EMSGSIZE on a line
 * longer than 4096 bytes; -EIO at end of input before any byte (no
 * terminal and stdin is closed, or ^D on the terminal).
 * Both fill *src (kind set) and must be released with key_source_release,
 * which is only for sources these two filled (it frees src->secret).
 */
int key_source_read_file(const char *path,
			 struct key_source *src) KEY_WARN_UNUSED;
int key_source_prompt(const char *prompt, int confirm,
		      struct key_source *src) KEY_WARN_UNUSED;
void key_source_release(struct key_source *src);

/*
 * For the command-line programs (the *_main.c files): read the key file,
 * or ask for a passphrase with prompt (twice if confirm), printing one
 * line that says what went wrong.  0 or -errno.
 */
int key_main_read(const char *file, const char *prompt, int confirm,
		  struct key_source *src) KEY_WARN_UNUSED;

#endif /* SIXFOLD_KEYS_H */
