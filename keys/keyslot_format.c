/*
 * keyslot_format.c - encode and decode the key header (keyslot_format.h).
 *
 * Layer: keys/, bytes only.  It checks the structural rules 1-11 of
 * keyslot_format.h and knows no keys: wrapping, unwrapping and the
 * authenticator live in key.c.  The input is hostile disk data: every rule
 * failure is an error return, never an assert.
 */
#include <errno.h>
#include <string.h>

#include "keyslot_format.h"

/* Reserved ranges of the header (rule 5) and of a used slot (rule 8). */
static const struct {
	unsigned int off; /* first reserved byte */
	unsigned int len; /* number of reserved bytes */
} key_hdr_reserved[] = {
	{ KEY_HDR_OFF_RSVD0, KEY_HDR_OFF_UUID - KEY_HDR_OFF_RSVD0 },
	{ KEY_HDR_OFF_RSVD1, KEY_HDR_OFF_SLOTS - KEY_HDR_OFF_RSVD1 },
	{ KEY_HDR_OFF_RSVD2, KEY_HDR_OFF_AUTH - KEY_HDR_OFF_RSVD2 },
}, key_slot_reserved[] = {
	{ KEY_SLOT_OFF_RSVD0, KEY_SLOT_OFF_OPSLIMIT - KEY_SLOT_OFF_RSVD0 },
	{ KEY_SLOT_OFF_RSVD1, KEY_SLOT_BYTES - KEY_SLOT_OFF_RSVD1 },
};

int key_hdr_corrupt(enum key_hdr_rule rule)
{
	/* Keep rule live in a register for a breakpoint here. */
	__asm__ volatile("" : : "r"(rule));
	return -EBADMSG;
}

static int key_all_zero(const uint8_t *p, size_t len)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < len; i++)
		acc |= p[i];
	return acc == 0;
}

static void key_slot_encode(const struct key_hdr_slot *ks, uint8_t *p)
{
	memset(p, 0, KEY_SLOT_BYTES);
	if (ks->ks_kind == KEY_KIND_EMPTY)
		return;
	key_put_le32(p + KEY_SLOT_OFF_KIND, ks->ks_kind);
	key_put_le64(p + KEY_SLOT_OFF_OPSLIMIT, ks->ks_opslimit);
	key_put_le64(p + KEY_SLOT_OFF_MEMLIMIT, ks->ks_memlimit);
	memcpy(p + KEY_SLOT_OFF_SALT, ks->ks_salt, KEY_SLOT_SALT_BYTES);
	memcpy(p + KEY_SLOT_OFF_NONCE, ks->ks_nonce, KEY_SLOT_NONCE_BYTES);
	memcpy(p + KEY_SLOT_OFF_WRAPPED, ks->ks_wrapped,
	       KEY_SLOT_WRAPPED_BYTES);
}

void key_hdr_encode(const struct key_hdr *h, uint8_t *buf)
{
	memset(buf, 0, KEY_HEADER_BYTES);
	memcpy(buf + KEY_HDR_OFF_MAGIC, KEY_FMT_MAGIC, KEY_FMT_MAGIC_BYTES);
	key_put_le32(buf + KEY_HDR_OFF_VERSION, h->kh_version);
	key_put_le32(buf + KEY_HDR_OFF_VERSION_MIN, h->kh_version_min);
	key_put_le32(buf + KEY_HDR_OFF_INCOMPAT, h->kh_incompat);
	key_put_le32(buf + KEY_HDR_OFF_COMPAT, h->kh_compat);
	key_put_le32(buf + KEY_HDR_OFF_HDR_BYTES, KEY_HEADER_BYTES);
	memcpy(buf + KEY_HDR_OFF_UUID, h->kh_uuid, KEY_UUID_BYTES);
	for (int i = 0; i < KEY_SLOTS; i++)
		key_slot_encode(&h->kh_slots[i],
				buf + KEY_HDR_OFF_SLOTS + i * KEY_SLOT_BYTES);
	memcpy(buf + KEY_HDR_OFF_AUTH, h->kh_auth, KEY_HDR_AUTH_BYTES);
}

/* Decode one slot and check rules 6-10. */
static int key_slot_decode(const uint8_t *p, struct key_hdr_slot *ks)
{
	ks->ks_kind = key_get_le32(p + KEY_SLOT_OFF_KIND);
	ks->ks_opslimit = key_get_le64(p + KEY_SLOT_OFF_OPSLIMIT);
	ks->ks_memlimit = key_get_le64(p + KEY_SLOT_OFF_MEMLIMIT);
	memcpy(ks->ks_salt, p + KEY_SLOT_OFF_SALT, KEY_SLOT_SALT_BYTES);
	memcpy(ks->ks_nonce, p + KEY_SLOT_OFF_NONCE, KEY_SLOT_NONCE_BYTES);
	memcpy(ks->ks_wrapped, p + KEY_SLOT_OFF_WRAPPED,
	       KEY_SLOT_WRAPPED_BYTES);

	switch (ks->ks_kind) {
	case KEY_KIND_EMPTY:
		if (!key_all_zero(p, KEY_SLOT_BYTES))
			return key_hdr_corrupt(KEY_RULE_EMPTY_SLOT);
		return 0;
	case KEY_KIND_PASSPHRASE:
		if (ks->ks_opslimit < KEY_FMT_OPSLIMIT_MIN ||
		    ks->ks_opslimit > KEY_FMT_OPSLIMIT_MAX ||
		    ks->ks_memlimit < KEY_FMT_MEMLIMIT_MIN ||
		    ks->ks_memlimit > KEY_FMT_MEMLIMIT_MAX)
			return key_hdr_corrupt(KEY_RULE_PW_PARAMS);
		break;
	case KEY_KIND_KEYFILE:
		if (ks->ks_opslimit != 0 || ks->ks_memlimit != 0)
			return key_hdr_corrupt(KEY_RULE_KEYFILE_PARAMS);
		break;
	default:
		return key_hdr_corrupt(KEY_RULE_SLOT_KIND);
	}
	for (size_t i = 0;
	     i < sizeof(key_slot_reserved) / sizeof(key_slot_reserved[0]);
	     i++) {
		if (!key_all_zero(p + key_slot_reserved[i].off,
				  key_slot_reserved[i].len))
			return key_hdr_corrupt(KEY_RULE_SLOT_RESERVED);
	}
	return 0;
}

/* Rules 1-5: the fixed part of the header. */
static int key_hdr_decode_fixed(const uint8_t *buf, struct key_hdr *h)
{
	if (memcmp(buf + KEY_HDR_OFF_MAGIC, KEY_FMT_MAGIC,
		   KEY_FMT_MAGIC_BYTES) != 0)
		return key_hdr_corrupt(KEY_RULE_MAGIC);
	h->kh_version = key_get_le32(buf + KEY_HDR_OFF_VERSION);
	h->kh_version_min = key_get_le32(buf + KEY_HDR_OFF_VERSION_MIN);
	if (h->kh_version_min < 1 || h->kh_version_min > h->kh_version ||
	    h->kh_version_min > KEY_FMT_VERSION)
		return key_hdr_corrupt(KEY_RULE_VERSION);
	h->kh_incompat = key_get_le32(buf + KEY_HDR_OFF_INCOMPAT);
	if (h->kh_incompat & ~KEY_FMT_INCOMPAT_KNOWN)
		return key_hdr_corrupt(KEY_RULE_INCOMPAT);
	h->kh_compat = key_get_le32(buf + KEY_HDR_OFF_COMPAT);
	if (key_get_le32(buf + KEY_HDR_OFF_HDR_BYTES) != KEY_HEADER_BYTES)
		return key_hdr_corrupt(KEY_RULE_HDR_BYTES);
	for (size_t i = 0;
	     i < sizeof(key_hdr_reserved) / sizeof(key_hdr_reserved[0]); i++) {
		if (!key_all_zero(buf + key_hdr_reserved[i].off,
				  key_hdr_reserved[i].len))
			return key_hdr_corrupt(KEY_RULE_HDR_RESERVED);
	}
	memcpy(h->kh_uuid, buf + KEY_HDR_OFF_UUID, KEY_UUID_BYTES);
	memcpy(h->kh_auth, buf + KEY_HDR_OFF_AUTH, KEY_HDR_AUTH_BYTES);
	return 0;
}

int key_hdr_decode(const uint8_t *buf, struct key_hdr *h)
{
	int used = 0;
	int ret;

	ret = key_hdr_decode_fixed(buf, h);
	if (ret < 0)
		return ret;
	for (int i = 0; i < KEY_SLOTS; i++) {
		ret = key_slot_decode(buf + KEY_HDR_OFF_SLOTS +
					      i * KEY_SLOT_BYTES,
				      &h->kh_slots[i]);
		if (ret < 0)
			return ret;
		if (h->kh_slots[i].ks_kind != KEY_KIND_EMPTY)
			used++;
	}
	if (used == 0)
		return key_hdr_corrupt(KEY_RULE_NO_SLOT);
	return 0;
}
