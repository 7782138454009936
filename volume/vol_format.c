/*
 * vol_format.c - encode and decode the on-disk structures of a zone.
 *
 * Layer: volume/, no I/O.  The byte tables are in vol_format.h; nothing
 * else in the volume casts a buffer to a structure.  Disk bytes are
 * hostile: decoders return -EUCLEAN/-EBADMSG, never assert.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l.h>

#include "volume/vol_format.h"

_Static_assert(VOL_SB_SPECS_OFF + VOL_ZONES * VOL_PATH_MAX <= VOL_SB_CRC_OFF,
	       "zone specs overlap the superblock CRC");
_Static_assert(VOL_KF_HDR_OFF + KEY_HEADER_BYTES <= VOL_KF_CRC_OFF,
	       "key header overlaps the key file CRC");
_Static_assert(VOL_LOG_HDR_BYTES + VOL_BATCH_MAX_RECS * VOL_LOG_REC_BYTES <=
		       VOL_BATCH_MAX_HDR * VOL_BLOCK_BYTES,
	       "batch header blocks too few for the records");
_Static_assert(VOL_META_PER_PAGE == 64, "meta entries per page");
_Static_assert((uint64_t)VOL_LOG_MAX_BLOCKS *VOL_BATCH_MAX_RECS < (1ull << 32),
	       "in-flight LSNs must stay below the epoch LSN window");

int vol_corrupt(const char *file, int line, const char *path, const char *rule)
{
	vol_log(VOL_LOG_WARN, "%s: damaged: %s (%s:%d)", path, rule, file,
		line);
	return -EUCLEAN;
}

uint32_t vol_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return crc32_iscsi((unsigned char *)buf, (int)len, crc);
}

uint32_t vol_crc_struct(const void *buf, size_t len, size_t crc_off)
{
	static const uint8_t zero[4];
	const uint8_t *p = buf;
	uint32_t crc = ~0u;

	crc = vol_crc32c(crc, p, crc_off);
	crc = vol_crc32c(crc, zero, 4);
	crc = vol_crc32c(crc, p + crc_off + 4, len - crc_off - 4);
	return crc ^ ~0u;
}

/* ---- superblock ---- */

void vol_sb_encode(const struct vol_sb *sb, uint8_t *buf)
{
	memset(buf, 0, VOL_SB_BYTES);
	memcpy(buf, VOL_SB_MAGIC, 8);
	vol_put32(buf + 8, VOL_FORMAT_VERSION);
	vol_put32(buf + 12, VOL_FORMAT_MIN_VERSION);
	memcpy(buf + 32, sb->uuid, KEY_UUID_BYTES);
	vol_put32(buf + 48, sb->zone);
	vol_put32(buf + 52, sb->dir);
	vol_put32(buf + 56, sb->ndirs);
	vol_put32(buf + 60, VOL_BLOCK_BYTES);
	vol_put64(buf + 64, VOL_PG_BLOCKS);
	vol_put64(buf + 72, sb->max_blocks);
	vol_put64(buf + 80, sb->log_blocks);
	vol_put64(buf + 88, sb->epoch);
	vol_put64(buf + 96, sb->seq);
	vol_put64(buf + 104, sb->epoch_lsn);
	vol_put64(buf + 112, sb->created);
	/* An older reader must not mount a volume whose logs it would
	 * misread (it would cut them at the first DIRECT record). */
	vol_put64(buf + 16, VOL_SB_INCOMPAT_DIRECT);
	vol_put64(buf + 24, sb->compat);
	for (int z = 0; z < VOL_ZONES; z++)
		strncpy((char *)buf + VOL_SB_SPECS_OFF + z * VOL_PATH_MAX,
			sb->specs[z], VOL_PATH_MAX - 1);
	vol_put32(buf + VOL_SB_CRC_OFF,
		  vol_crc_struct(buf, VOL_SB_BYTES, VOL_SB_CRC_OFF));
}

int vol_sb_decode(const uint8_t *buf, struct vol_sb *sb, const char *path)
{
	if (memcmp(buf, VOL_SB_MAGIC, 8))
		return VOL_CORRUPT(path, "superblock magic is not SIXFSUPR");
	if (vol_get32(buf + VOL_SB_CRC_OFF) !=
	    vol_crc_struct(buf, VOL_SB_BYTES, VOL_SB_CRC_OFF))
		return VOL_CORRUPT(path, "superblock CRC mismatch");
	if (vol_get32(buf + 12) > VOL_FORMAT_VERSION)
		return VOL_CORRUPT(path, "superblock needs a newer sixfold");
	if (vol_get64(buf + 16) & ~VOL_SB_INCOMPAT_DIRECT)
		return VOL_CORRUPT(path, "superblock has features this "
					 "sixfold does not know (a newer "
					 "version wrote it)");
	memset(sb, 0, sizeof(*sb));
	memcpy(sb->uuid, buf + 32, KEY_UUID_BYTES);
	sb->zone = vol_get32(buf + 48);
	sb->dir = vol_get32(buf + 52);
	sb->ndirs = vol_get32(buf + 56);
	if (sb->zone >= VOL_ZONES || sb->ndirs == 0 ||
	    sb->ndirs > VOL_ZONE_MAX_DIRS || sb->dir >= sb->ndirs)
		return VOL_CORRUPT(path, "superblock zone/dir out of range");
	if (vol_get32(buf + 60) != VOL_BLOCK_BYTES ||
	    vol_get64(buf + 64) != VOL_PG_BLOCKS)
		return VOL_CORRUPT(path, "superblock geometry unknown");
	sb->max_blocks = vol_get64(buf + 72);
	sb->log_blocks = vol_get64(buf + 80);
	if (sb->max_blocks == 0 || sb->max_blocks > VOL_MAX_BLOCKS)
		return VOL_CORRUPT(path, "superblock max_blocks out of range");
	if (sb->log_blocks < VOL_LOG_MIN_BLOCKS ||
	    sb->log_blocks > VOL_LOG_MAX_BLOCKS)
		return VOL_CORRUPT(path, "superblock log_blocks out of range");
	sb->epoch = vol_get64(buf + 88);
	sb->seq = vol_get64(buf + 96);
	sb->epoch_lsn = vol_get64(buf + 104);
	sb->created = vol_get64(buf + 112);
	sb->compat = vol_get64(buf + 24);
	for (int z = 0; z < VOL_ZONES; z++) {
		const char *s =
			(const char *)buf + VOL_SB_SPECS_OFF + z * VOL_PATH_MAX;

		if (!memchr(s, 0, VOL_PATH_MAX))
			return VOL_CORRUPT(path, "zone spec not terminated");
		memcpy(sb->specs[z], s, VOL_PATH_MAX);
	}
	return 0;
}

/* ---- key file ---- */

void vol_kf_encode(uint8_t *buf, const uint8_t *uuid, uint64_t gen,
		   const uint8_t *hdr)
{
	memset(buf, 0, VOL_KF_BYTES);
	memcpy(buf, VOL_KF_MAGIC, 8);
	vol_put32(buf + 8, VOL_FORMAT_VERSION);
	vol_put32(buf + 12, VOL_FORMAT_MIN_VERSION);
	memcpy(buf + 16, uuid, KEY_UUID_BYTES);
	vol_put64(buf + 32, gen);
	memcpy(buf + VOL_KF_HDR_OFF, hdr, KEY_HEADER_BYTES);
	vol_put32(buf + VOL_KF_CRC_OFF,
		  vol_crc_struct(buf, VOL_KF_BYTES, VOL_KF_CRC_OFF));
}

int vol_kf_decode(const uint8_t *buf, const uint8_t *uuid, uint64_t *gen,
		  uint8_t *hdr, const char *path)
{
	if (memcmp(buf, VOL_KF_MAGIC, 8))
		return VOL_CORRUPT(path, "key file magic is not SIXFKEYS");
	if (vol_get32(buf + VOL_KF_CRC_OFF) !=
	    vol_crc_struct(buf, VOL_KF_BYTES, VOL_KF_CRC_OFF))
		return VOL_CORRUPT(path, "key file CRC mismatch");
	if (vol_get32(buf + 12) > VOL_FORMAT_VERSION)
		return VOL_CORRUPT(path, "key file needs a newer sixfold");
	if (memcmp(buf + 16, uuid, KEY_UUID_BYTES))
		return VOL_CORRUPT(path, "key file of another volume");
	*gen = vol_get64(buf + 32);
	memcpy(hdr, buf + VOL_KF_HDR_OFF, KEY_HEADER_BYTES);
	return 0;
}

/* ---- checkpoint ---- */

void vol_ck_encode(const struct vol_ckpt *ck, uint8_t *buf)
{
	memset(buf, 0, VOL_CK_BYTES);
	memcpy(buf, VOL_CK_MAGIC, 8);
	vol_put32(buf + 8, VOL_FORMAT_VERSION);
	vol_put32(buf + 12, ck->zone);
	memcpy(buf + 16, ck->uuid, KEY_UUID_BYTES);
	vol_put64(buf + 32, ck->seq);
	vol_put64(buf + 40, ck->epoch);
	vol_put64(buf + 48, ck->applied_lsn);
	vol_put64(buf + 56, ck->pg_count);
	vol_put32(buf + VOL_CK_CRC_OFF,
		  vol_crc_struct(buf, VOL_CK_BYTES, VOL_CK_CRC_OFF));
}

/* Quiet: a torn slot is expected after a crash; the caller decides. */
int vol_ck_decode(const uint8_t *buf, struct vol_ckpt *ck)
{
	if (memcmp(buf, VOL_CK_MAGIC, 8) ||
	    vol_get32(buf + VOL_CK_CRC_OFF) !=
		    vol_crc_struct(buf, VOL_CK_BYTES, VOL_CK_CRC_OFF) ||
	    vol_get32(buf + 8) != VOL_FORMAT_VERSION)
		return -EUCLEAN;
	ck->zone = vol_get32(buf + 12);
	memcpy(ck->uuid, buf + 16, KEY_UUID_BYTES);
	ck->seq = vol_get64(buf + 32);
	ck->epoch = vol_get64(buf + 40);
	ck->applied_lsn = vol_get64(buf + 48);
	ck->pg_count = vol_get64(buf + 56);
	return 0;
}

/* ---- log batches ---- */

uint32_t vol_batch_nhdr(uint32_t nrec)
{
	uint32_t bytes = VOL_LOG_HDR_BYTES + nrec * VOL_LOG_REC_BYTES;

	return (bytes + VOL_BLOCK_BYTES - 1) / VOL_BLOCK_BYTES;
}

static void rec_encode(const struct vol_rec *r, uint8_t *p)
{
	vol_put64(p, r->lba);
	vol_put64(p + 8, r->lsn);
	vol_put16(p + 16, r->kind);
	vol_put16(p + 18, 0);
	if (vol_rec_writes(r->kind)) {
		vol_put32(p + 20, r->data_crc);
		memcpy(p + 24, r->nonce, KEY_NONCE_BYTES);
		memcpy(p + 48, r->tag, KEY_TAG_BYTES);
	} else {
		vol_put64(p + 24, r->nblocks);
	}
}

void vol_batch_encode(const struct vol_batch_hdr *h, const struct vol_rec *recs,
		      uint8_t *hdrbuf)
{
	size_t len = (size_t)h->nhdr * VOL_BLOCK_BYTES;
	uint32_t version = VOL_FORMAT_VERSION;

	for (uint32_t i = 0; i < h->nrec; i++)
		if (recs[i].kind == VOL_REC_DIRECT)
			version = VOL_LOG_VERSION_DIRECT;
	memcpy(hdrbuf, VOL_LOG_MAGIC, 8);
	vol_put32(hdrbuf + 8, version);
	vol_put32(hdrbuf + 12, h->nhdr);
	memcpy(hdrbuf + 16, h->uuid, KEY_UUID_BYTES);
	vol_put64(hdrbuf + 32, h->epoch);
	vol_put64(hdrbuf + 40, h->seq);
	vol_put64(hdrbuf + 48, h->first_lsn);
	vol_put32(hdrbuf + 56, h->nrec);
	vol_put32(hdrbuf + 60, h->ndata);
	vol_put64(hdrbuf + 64, h->pg_count);
	vol_put32(hdrbuf + 72, h->write_mask);
	vol_put32(hdrbuf + 76, h->pos);
	for (uint32_t i = 0; i < h->nrec; i++)
		rec_encode(&recs[i],
			   hdrbuf + VOL_LOG_HDR_BYTES + i * VOL_LOG_REC_BYTES);
	vol_put32(hdrbuf + VOL_LOG_CRC_OFF,
		  vol_crc_struct(hdrbuf, len, VOL_LOG_CRC_OFF));
}

int vol_batch_decode_hdr(const uint8_t *buf, size_t avail,
			 struct vol_batch_hdr *h)
{
	size_t len;

	if (avail < VOL_BLOCK_BYTES || memcmp(buf, VOL_LOG_MAGIC, 8) ||
	    (vol_get32(buf + 8) != VOL_FORMAT_VERSION &&
	     vol_get32(buf + 8) != VOL_LOG_VERSION_DIRECT))
		return -EUCLEAN;
	h->version = vol_get32(buf + 8);
	h->nhdr = vol_get32(buf + 12);
	memcpy(h->uuid, buf + 16, KEY_UUID_BYTES);
	h->epoch = vol_get64(buf + 32);
	h->seq = vol_get64(buf + 40);
	h->first_lsn = vol_get64(buf + 48);
	h->nrec = vol_get32(buf + 56);
	h->ndata = vol_get32(buf + 60);
	h->pg_count = vol_get64(buf + 64);
	h->write_mask = vol_get32(buf + 72);
	h->pos = vol_get32(buf + 76);
	if (h->nrec == 0 || h->nrec > VOL_BATCH_MAX_RECS ||
	    h->nhdr != vol_batch_nhdr(h->nrec) || h->ndata > h->nrec)
		return -EUCLEAN;
	len = (size_t)h->nhdr * VOL_BLOCK_BYTES;
	if (avail < len)
		return -EAGAIN;
	if (vol_get32(buf + VOL_LOG_CRC_OFF) !=
	    vol_crc_struct(buf, len, VOL_LOG_CRC_OFF))
		return -EUCLEAN;
	return 0;
}

int vol_batch_decode_recs(const uint8_t *buf, const struct vol_batch_hdr *h,
			  struct vol_rec *recs)
{
	uint32_t nwrite = 0, ndirect = 0;

	for (uint32_t i = 0; i < h->nrec; i++) {
		const uint8_t *p =
			buf + VOL_LOG_HDR_BYTES + i * VOL_LOG_REC_BYTES;
		struct vol_rec *r = &recs[i];

		memset(r, 0, sizeof(*r));
		r->lba = vol_get64(p);
		r->lsn = vol_get64(p + 8);
		r->kind = vol_get16(p + 16);
		if (r->lsn != h->first_lsn + i)
			return -EUCLEAN;
		if (vol_rec_writes(r->kind)) {
			if (r->lba >= VOL_MAX_BLOCKS)
				return -EUCLEAN;
			r->data_crc = vol_get32(p + 20);
			memcpy(r->nonce, p + 24, KEY_NONCE_BYTES);
			memcpy(r->tag, p + 48, KEY_TAG_BYTES);
			nwrite += r->kind == VOL_REC_WRITE;
			ndirect += r->kind == VOL_REC_DIRECT;
		} else if (r->kind == VOL_REC_DISCARD) {
			r->nblocks = vol_get64(p + 24);
			if (r->nblocks == 0 || r->lba >= VOL_MAX_BLOCKS ||
			    r->nblocks > VOL_MAX_BLOCKS - r->lba)
				return -EUCLEAN;
		} else {
			return -EUCLEAN;
		}
	}
	/* Version 2 exactly when a DIRECT record is there. */
	if ((ndirect != 0) != (h->version == VOL_LOG_VERSION_DIRECT))
		return -EUCLEAN;
	return nwrite == h->ndata ? 0 : -EUCLEAN;
}

/* ---- block meta ---- */

static uint32_t meta_crc(const uint8_t *buf, uint64_t lba)
{
	uint8_t l[8];
	uint32_t crc;

	vol_put64(l, lba);
	crc = vol_crc32c(~0u, l, 8);
	crc = vol_crc32c(crc, buf, 60);
	return crc ^ ~0u;
}

void vol_meta_encode(const struct vol_meta *m, uint64_t lba, uint8_t *buf)
{
	memset(buf, 0, VOL_META_BYTES);
	vol_put16(buf, VOL_META_MAGIC);
	buf[2] = VOL_FORMAT_VERSION;
	buf[3] = m->state;
	vol_put32(buf + 4, m->data_crc);
	vol_put64(buf + 8, m->lsn);
	if (m->state == VOL_META_WRITTEN) {
		memcpy(buf + 16, m->nonce, KEY_NONCE_BYTES);
		memcpy(buf + 40, m->tag, KEY_TAG_BYTES);
	}
	vol_put32(buf + 60, meta_crc(buf, lba));
}

int vol_meta_decode(const uint8_t *buf, uint64_t lba, struct vol_meta *m)
{
	static const uint8_t zero[VOL_META_BYTES];

	memset(m, 0, sizeof(*m));
	if (!memcmp(buf, zero, VOL_META_BYTES))
		return 0;
	if (vol_get16(buf) != VOL_META_MAGIC || buf[2] != VOL_FORMAT_VERSION ||
	    vol_get32(buf + 60) != meta_crc(buf, lba))
		return -EBADMSG;
	m->state = buf[3];
	if (m->state != VOL_META_WRITTEN && m->state != VOL_META_DISCARDED)
		return -EBADMSG;
	m->data_crc = vol_get32(buf + 4);
	m->lsn = vol_get64(buf + 8);
	memcpy(m->nonce, buf + 16, KEY_NONCE_BYTES);
	memcpy(m->tag, buf + 40, KEY_TAG_BYTES);
	return 0;
}

/* ---- write-intent map pages ---- */

void vol_wim_page_encode(uint8_t *page, uint32_t zone, const uint8_t *uuid,
			 uint32_t pageno)
{
	memset(page, 0, VOL_WIM_HDR_BYTES);
	memcpy(page, VOL_WIM_MAGIC, 8);
	vol_put32(page + 8, VOL_FORMAT_VERSION);
	vol_put32(page + 12, zone);
	memcpy(page + 16, uuid, KEY_UUID_BYTES);
	vol_put32(page + 32, pageno);
	vol_put32(page + 60, vol_crc_struct(page, VOL_BLOCK_BYTES, 60));
}

/* 0 valid, 1 a hole (all zero: nothing missed), -EUCLEAN damaged. */
int vol_wim_page_decode(const uint8_t *page, uint32_t zone, const uint8_t *uuid,
			uint32_t pageno)
{
	static const uint8_t zero[VOL_BLOCK_BYTES];

	/* A hole; a zero header over set bits is a torn write: damaged. */
	if (!memcmp(page, zero, VOL_WIM_HDR_BYTES))
		return memcmp(page, zero, VOL_BLOCK_BYTES) ? -EUCLEAN : 1;
	if (memcmp(page, VOL_WIM_MAGIC, 8) ||
	    vol_get32(page + 8) != VOL_FORMAT_VERSION ||
	    vol_get32(page + 12) != zone ||
	    memcmp(page + 16, uuid, KEY_UUID_BYTES) ||
	    vol_get32(page + 32) != pageno ||
	    vol_get32(page + 60) != vol_crc_struct(page, VOL_BLOCK_BYTES, 60))
		return -EUCLEAN;
	return 0;
}

/* ---- sizes on the command line ---- */

/* "4096", "20M", "10G", "64T" (K/M/G/T, optional "B"/"iB"): bytes. */
int vol_parse_size(const char *s, uint64_t *bytes)
{
	char *end;
	unsigned long long n;
	int shift = 0;

	if (*s < '0' || *s > '9') /* no sign, no blanks: strtoull wraps */
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case 0:
		break;
	default:
		return -EINVAL;
	}
	if (*end && end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
		return -EINVAL;
	if (shift && n > (UINT64_MAX >> shift))
		return -EINVAL;
	*bytes = (uint64_t)n << shift;
	return 0;
}

void vol_scrub_encode(const struct vol_scrub_rec *s, const uint8_t *uuid,
		      uint64_t seq, uint8_t *buf)
{
	memset(buf, 0, VOL_SCRUB_BYTES);
	memcpy(buf, VOL_SCRUB_MAGIC, 8);
	vol_put32(buf + 8, 1);
	vol_put32(buf + 12, s->state);
	memcpy(buf + 16, uuid, KEY_UUID_BYTES);
	vol_put64(buf + 32, seq);
	vol_put32(buf + 40, s->deep);
	vol_put64(buf + 48, s->cursor);
	vol_put64(buf + 56, s->checked);
	vol_put64(buf + 64, s->found);
	vol_put64(buf + 72, s->healed);
	vol_put64(buf + 80, s->unrecoverable);
	vol_put64(buf + 88, (uint64_t)s->started);
	vol_put64(buf + 96, (uint64_t)s->finished);
	vol_put32(buf + VOL_SCRUB_CRC_OFF,
		  vol_crc_struct(buf, VOL_SCRUB_BYTES, VOL_SCRUB_CRC_OFF));
}

int vol_scrub_decode(const uint8_t *buf, const uint8_t *uuid,
		     struct vol_scrub_rec *s, uint64_t *seq)
{
	if (memcmp(buf, VOL_SCRUB_MAGIC, 8) ||
	    vol_get32(buf + VOL_SCRUB_CRC_OFF) !=
		    vol_crc_struct(buf, VOL_SCRUB_BYTES, VOL_SCRUB_CRC_OFF) ||
	    vol_get32(buf + 8) != 1 || memcmp(buf + 16, uuid, KEY_UUID_BYTES) ||
	    vol_get32(buf + 12) > VOL_SCRUB_FINISHED)
		return -EUCLEAN;
	memset(s, 0, sizeof(*s));
	s->state = vol_get32(buf + 12);
	*seq = vol_get64(buf + 32);
	s->deep = vol_get32(buf + 40);
	s->cursor = vol_get64(buf + 48);
	s->checked = vol_get64(buf + 56);
	s->found = vol_get64(buf + 64);
	s->healed = vol_get64(buf + 72);
	s->unrecoverable = vol_get64(buf + 80);
	s->started = (int64_t)vol_get64(buf + 88);
	s->finished = (int64_t)vol_get64(buf + 96);
	return 0;
}
