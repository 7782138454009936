/*
 * vol_format.h - every on-disk structure of a sixfold zone, byte by byte.
 *
 * Internal to volume/.  man/sixfold.5 mirrors these tables; change both in
 * the same commit.  All integers are little-endian.  Every CRC is CRC32C
 * (Castagnoli, ISA-L crc32_iscsi), initial value 0xFFFFFFFF, final value
 * inverted (crc32_iscsi(buf, len, ~0u) ^ ~0u, the iSCSI convention),
 * computed over the bytes listed with the CRC field itself read as zero.
 *
 * A zone is one directory per disk ("dir[,dir...]").  Files of a zone:
 *
 *   DIR/superblock        every directory of the zone     SUPERBLOCK
 *   DIR0/keys             first directory                 KEY FILE
 *   DIR0/checkpoint       first directory, 2 slots        CHECKPOINT
 *   DIR0/log              first directory, preallocated   LOG
 *   DIR0/lock             first directory, flock()ed      text, no format
 *   DIR0/wim/Z            first directory, Z = 0..5       WRITE-INTENT MAP
 *   DIR0/scrub            first directory                 SCRUB RECORD
 *   DIR0/control          first directory of the mounted  Unix socket
 *                         zone, while mounted              (no format)
 *   DIRk/pg/NNNNN.seg     k = pg % ndirs, sparse          SEGMENT
 *   DIRk/pg/NNNNN.meta    k = pg % ndirs, sparse          BLOCK META
 *
 * Files are replaced atomically (write DIR/.name.tmp, fsync, rename,
 * fsync DIR) except the log, segments, metas and WIM pages, which are
 * written in place, and the checkpoint, which alternates two slots.
 *
 * Version history: 1 (2026-11) first format.
 */
#ifndef SIXFOLD_VOL_FORMAT_H
#define SIXFOLD_VOL_FORMAT_H

#include <stdint.h>
#include <stddef.h>

#include "volume/volume.h"

#define VOL_FORMAT_VERSION 1
#define VOL_FORMAT_MIN_VERSION 1

/*
 * Every "this structure is damaged" return goes through here: logs the
 * path, the rule broken and the source line, returns -EUCLEAN.
 */
int vol_corrupt(const char *file, int line, const char *path, const char *rule);
#define VOL_CORRUPT(path, rule) vol_corrupt(__FILE__, __LINE__, path, rule)

uint32_t vol_crc32c(uint32_t crc, const void *buf, size_t len);
/* CRC of a whole structure whose CRC field at crc_off is taken as zero. */
uint32_t vol_crc_struct(const void *buf, size_t len, size_t crc_off);

/*
 * SUPERBLOCK (8192 bytes).  One copy per directory of every zone.
 * Identifies the zone and the volume; names every zone so that one
 * directory finds the other five.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFSUPR"
 *      8    4 version         format version that wrote it (1)
 *     12    4 min_version     oldest format version that can read it (1)
 *     16    8 incompat        feature bits a reader must know:
 *                             bit 0 DIRECT: the logs may hold version 2
 *                             batches (DIRECT records); every superblock
 *                             this version writes has it
 *     24    8 compat          feature bits a reader may ignore:
 *                             bit 0 REBUILDING: this zone is being
 *                             rebuilt; its copies are not trusted where
 *                             the write-intent map marks its regions
 *     32   16 uuid            volume UUID (random at mkfs)
 *     48    4 zone            zone index 0..5
 *     52    4 dir             index of this directory within the zone
 *     56    4 ndirs           directories of this zone (1..8)
 *     60    4 block_bytes     4096
 *     64    8 pg_blocks       blocks per protection group (2621440)
 *     72    8 max_blocks      volume maximum size in blocks (<= 2^34)
 *     80    8 log_blocks      size of each zone's log in blocks
 *     88    8 epoch           epoch this zone was last admitted into
 *     96    8 seq             rewrite counter of this superblock
 *    104    8 epoch_lsn       first LSN the epoch may issue
 *    112    8 created         mkfs time, seconds since 1970
 *    120  904 reserved        zero
 *   1024 6000 zone_specs      6 x 1000 bytes: each zone's "dir[,dir]"
 *                             spec, NUL-padded (absolute paths)
 *   7024 1164 reserved        zero
 *   8188    4 crc             CRC32C of bytes 0..8187
 *
 * Validation: (1) magic, (2) crc, (3) min_version <= 1, (4) no incompat
 * bit but DIRECT,
 * (5) zone < 6, dir < ndirs <= 8, (6) block_bytes == 4096 and pg_blocks
 * == 2621440, (7) 0 < max_blocks <= 2^34, (8) log_blocks within
 * [VOL_LOG_MIN_BLOCKS, VOL_LOG_MAX_BLOCKS], (9) zone_specs NUL-terminated.
 */
#define VOL_SB_BYTES 8192
#define VOL_SB_MAGIC "SIXFSUPR"
#define VOL_SB_SPECS_OFF 1024
#define VOL_SB_CRC_OFF 8188

#define VOL_SB_COMPAT_REBUILDING 1ull
#define VOL_SB_INCOMPAT_DIRECT 1ull

struct vol_sb {
	uint8_t uuid[KEY_UUID_BYTES];
	uint64_t compat;
	uint32_t zone;
	uint32_t dir;
	uint32_t ndirs;
	uint64_t max_blocks;
	uint64_t log_blocks;
	uint64_t epoch;
	uint64_t seq;
	uint64_t epoch_lsn;
	uint64_t created;
	char specs[VOL_ZONES][VOL_PATH_MAX];
};

void vol_sb_encode(const struct vol_sb *sb, uint8_t *buf);
/* Returns 0, or -EUCLEAN naming the rule broken in the log. */
int vol_sb_decode(const uint8_t *buf, struct vol_sb *sb, const char *path);

/*
 * KEY FILE (8192 bytes).  One per zone.  Frames the key header that keys/
 * defines (keys/keyslot_format.h): the volume only checks integrity and
 * picks the newest copy; keys/ authenticates the content.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFKEYS"
 *      8    4 version         1
 *     12    4 min_version     1
 *     16   16 uuid            volume UUID
 *     32    8 generation      grows by one on every key change
 *     40 4096 key_header      keyslots (keys/keyslot_format.h)
 *   4136 4052 reserved        zero
 *   8188    4 crc             CRC32C of bytes 0..8187
 *
 * Validation: magic, crc, min_version <= 1, uuid equals the superblock's.
 * The copy with the highest generation that unlocks wins.
 */
#define VOL_KF_BYTES 8192
#define VOL_KF_MAGIC "SIXFKEYS"
#define VOL_KF_HDR_OFF 40
#define VOL_KF_CRC_OFF 8188

int vol_kf_decode(const uint8_t *buf, const uint8_t *uuid, uint64_t *gen,
		  uint8_t *hdr, const char *path);
void vol_kf_encode(uint8_t *buf, const uint8_t *uuid, uint64_t gen,
		   const uint8_t *hdr);

/*
 * CHECKPOINT (2 slots of 4096 bytes at offsets 0 and 4096).  Slot
 * seq % 2 is written, then fdatasync'ed; the valid slot with the higher
 * seq is current, so a torn write leaves the other slot.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFCKPT"
 *      8    4 version         1
 *     12    4 zone            zone index
 *     16   16 uuid            volume UUID
 *     32    8 seq             grows by one per checkpoint of this zone
 *     40    8 epoch           epoch in which it was written
 *     48    8 applied_lsn     every record <= this that reached this zone
 *                             is in its segments (invariant V4)
 *     56    8 pg_count        capacity in protection groups
 *     64 4024 reserved        zero
 *   4092    4 crc             CRC32C of bytes 0..4091
 *
 * Validation: (1) magic, (2) crc, (3) version == 1, (4) zone equals the
 * zone's index and uuid the superblock's.  A slot failing any rule is
 * ignored; a zone with no valid slot is unusable until repaired.
 */
#define VOL_CK_BYTES 4096
#define VOL_CK_MAGIC "SIXFCKPT"
#define VOL_CK_CRC_OFF 4092

struct vol_ckpt {
	uint32_t zone;
	uint8_t uuid[KEY_UUID_BYTES];
	uint64_t seq;
	uint64_t epoch;
	uint64_t applied_lsn;
	uint64_t pg_count;
};

void vol_ck_encode(const struct vol_ckpt *ck, uint8_t *buf);
int vol_ck_decode(const uint8_t *buf, struct vol_ckpt *ck);

/*
 * SCRUB RECORD (4096 bytes, DIR0/scrub of every zone, replaced
 * atomically).  Where the scrub is and what it found, so that it resumes
 * after a remount and status can show the last result of an unmounted
 * volume.  The valid copy with the highest seq wins.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFSCRB"
 *      8    4 version         1
 *     12    4 state           0 none, 1 running, 2 stopped, 3 finished
 *     16   16 uuid            volume UUID
 *     32    8 seq             grows by one per store
 *     40    4 deep            1: every copy authenticated
 *     44    4 reserved        zero
 *     48    8 cursor          next LBA to check
 *     56    8 checked         written blocks checked
 *     64    8 found           bad, stale or missing copies found
 *     72    8 healed          copies rewritten
 *     80    8 unrecoverable   blocks with no good copy of their version
 *     88    8 started         seconds since 1970
 *     96    8 finished        seconds since 1970, 0 while running
 *    104 3988 reserved        zero
 *   4092    4 crc             CRC32C of bytes 0..4091
 *
 * Validation: magic, crc, version == 1, uuid, state <= 3.
 */
#define VOL_SCRUB_BYTES 4096
#define VOL_SCRUB_MAGIC "SIXFSCRB"
#define VOL_SCRUB_CRC_OFF 4092

void vol_scrub_encode(const struct vol_scrub_rec *s, const uint8_t *uuid,
		      uint64_t seq, uint8_t *buf);
int vol_scrub_decode(const uint8_t *buf, const uint8_t *uuid,
		     struct vol_scrub_rec *s, uint64_t *seq);

/*
 * LOG.  A file of log_blocks 4 KiB blocks, zero-filled at mkfs so that
 * overwriting it never allocates.  It holds batches; a batch is nhdr
 * header blocks followed by ndata ciphertext blocks, written with one
 * O_DIRECT write at block position pos (never across the end of the file:
 * a batch that would not fit starts again at 0).  The same batch goes to
 * the same position in every zone's log, so the logs of all zones are
 * copies of one another except where a zone missed a write.
 *
 * Batch header (first 128 bytes of the first header block):
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFLOGB"
 *      8    4 version         1; 2 if it holds a DIRECT record
 *     12    4 nhdr            header blocks of this batch (1..11)
 *     16   16 uuid            volume UUID
 *     32    8 epoch           epoch of the writer that wrote it
 *     40    8 seq             batch number, +1 per batch for the volume's life
 *     48    8 first_lsn       LSN of record 0; record i has first_lsn + i
 *     56    4 nrec            records (1..VOL_BATCH_MAX_RECS)
 *     60    4 ndata           data blocks after the header blocks
 *     64    8 pg_count        volume capacity (PGs) once this batch applies
 *     72    4 write_mask      zones the batch was sent to (bit z = zone z)
 *     76    4 pos             block position in the log it was written at
 *     80   44 reserved        zero
 *    124    4 crc             CRC32C of all nhdr header blocks (this field 0)
 *    128    . records         nrec x 64-byte records, then zero to the end
 *                             of the last header block
 *
 * Record (64 bytes):
 *      0    8 lba             block address
 *      8    8 lsn             first_lsn + index (checked)
 *     16    2 kind            1 = WRITE, 2 = DISCARD, 3 = DIRECT (never
 *                             renumber)
 *     18    2 flags           0
 *     20    4 data_crc        WRITE, DIRECT: CRC32C of its ciphertext block
 *     24   24 nonce           WRITE, DIRECT: AEAD nonce; DISCARD: bytes
 *                             24..31 hold nblocks, the rest zero
 *     48   16 tag             WRITE, DIRECT: AEAD tag; DISCARD: zero
 * WRITE records take the data blocks in order: the k-th WRITE record's
 * ciphertext is data block k.  A DIRECT record is a write whose
 * ciphertext is not in the log: it was written to the block's place in
 * the segments of every zone of write_mask, and made stable there,
 * before this batch was written to that zone's log (vol_log.c L2).  A
 * batch with a DIRECT record has version 2, so that a reader that does
 * not know the kind ignores it rather than misreads it.
 *
 * Validation of a batch: magic, version (2 exactly when a DIRECT record is
 * there), uuid, nhdr <= 11, nrec and ndata within bounds and ndata ==
 * number of WRITE records, pos == where it was found, header crc, every
 * record's lsn and kind, every data block's CRC.
 * A batch failing any rule is ignored as a whole (a torn write).
 */
#define VOL_LOG_MAGIC "SIXFLOGB"
#define VOL_LOG_HDR_BYTES 128
#define VOL_LOG_REC_BYTES 64
#define VOL_LOG_CRC_OFF 124
#define VOL_BATCH_MAX_RECS 640
#define VOL_BATCH_MAX_HDR 11
#define VOL_LOG_MIN_BLOCKS 2048u /* 8 MiB: 3 largest batches */
#define VOL_LOG_MAX_BLOCKS (1u << 16) /* 256 MiB */
#define VOL_LOG_DEFAULT_BLOCKS (1u << 13) /* 32 MiB */

enum vol_rec_kind {
	VOL_REC_WRITE = 1,
	VOL_REC_DISCARD = 2,
	VOL_REC_DIRECT = 3,
};

/* Batch header version: 2 when it holds a DIRECT record, else 1. */
#define VOL_LOG_VERSION_DIRECT 2

/* A new version of one block (its ciphertext in the log or not). */
static inline int vol_rec_writes(unsigned kind)
{
	return kind == VOL_REC_WRITE || kind == VOL_REC_DIRECT;
}

struct vol_rec {
	uint64_t lba;
	uint64_t lsn;
	uint16_t kind;
	uint32_t data_crc;
	uint64_t nblocks; /* DISCARD */
	uint8_t nonce[KEY_NONCE_BYTES];
	uint8_t tag[KEY_TAG_BYTES];
};

struct vol_batch_hdr {
	uint32_t version; /* decoded; vol_batch_encode chooses it */
	uint32_t nhdr;
	uint8_t uuid[KEY_UUID_BYTES];
	uint64_t epoch;
	uint64_t seq;
	uint64_t first_lsn;
	uint32_t nrec;
	uint32_t ndata;
	uint64_t pg_count;
	uint32_t write_mask;
	uint32_t pos;
};

/* Header blocks needed for nrec records. */
uint32_t vol_batch_nhdr(uint32_t nrec);
/* Encode header + records into hdrbuf (nhdr blocks, zeroed by caller). */
void vol_batch_encode(const struct vol_batch_hdr *h, const struct vol_rec *recs,
		      uint8_t *hdrbuf);
/*
 * Decode the first header block at buf (avail bytes readable from it):
 * fills h, checks everything but the data blocks' CRCs.  -EUCLEAN when it
 * is not a valid batch header; -EAGAIN when more bytes are needed.
 */
int vol_batch_decode_hdr(const uint8_t *buf, size_t avail,
			 struct vol_batch_hdr *h);
/* Records of a validated header (recs has h->nrec entries). */
int vol_batch_decode_recs(const uint8_t *buf, const struct vol_batch_hdr *h,
			  struct vol_rec *recs);

/*
 * BLOCK META (64 bytes per block, at (lba % pg_blocks) * 64 of the PG's
 * .meta file).  A hole (all zero) means never written.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    2 magic           0x4653 ("SF")
 *      2    1 version         1
 *      3    1 state           1 = WRITTEN, 2 = DISCARDED (never renumber)
 *      4    4 data_crc        WRITTEN: CRC32C of the segment block
 *      8    8 lsn             version of the block held here
 *     16   24 nonce           WRITTEN: AEAD nonce
 *     40   16 tag             WRITTEN: AEAD tag
 *     56    4 reserved        zero
 *     60    4 crc             CRC32C of the LBA (8 bytes LE) followed by
 *                             bytes 0..59, so an entry moved elsewhere fails
 *
 * SEGMENT: the ciphertext of block lba at (lba % pg_blocks) * 4096 of the
 * PG's .seg file; holes where never written or discarded.  A discard
 * punches the segment range and gives every block of it a DISCARDED entry
 * with its LSN, except on meta pages that are holes in a zone whose
 * write-intent bit for them is clear (nothing was ever written there, so
 * no stale version exists anywhere).  Blocks in use are the segment
 * files' allocated blocks (st_blocks), so no counter can drift.  It
 * carries no header of its own: the meta entry names its version and CRC.
 */
#define VOL_META_BYTES 64
#define VOL_META_MAGIC 0x4653
#define VOL_META_PER_PAGE (VOL_BLOCK_BYTES / VOL_META_BYTES)

enum vol_meta_state {
	VOL_META_EMPTY = 0,
	VOL_META_WRITTEN = 1,
	VOL_META_DISCARDED = 2,
};

struct vol_meta {
	uint8_t state;
	uint32_t data_crc;
	uint64_t lsn;
	uint8_t nonce[KEY_NONCE_BYTES];
	uint8_t tag[KEY_TAG_BYTES];
};

void vol_meta_encode(const struct vol_meta *m, uint64_t lba, uint8_t *buf);
/* 0 (state EMPTY for an all-zero entry), or -EBADMSG. */
int vol_meta_decode(const uint8_t *buf, uint64_t lba, struct vol_meta *m);

/*
 * WRITE-INTENT MAP.  DIR0/wim/Z of every zone records the regions that
 * zone Z missed (bit set = Z's copy of some block there may be stale).
 * A region is VOL_WIM_REGION_BLOCKS blocks.  The file is a sparse array
 * of 4 KiB pages; page p covers regions [p * 32256, (p + 1) * 32256).
 * A hole is a page with no bit set.
 *
 * OFFSET SIZE FIELD           MEANING
 *      0    8 magic           "SIXFWIM1"
 *      8    4 version         1
 *     12    4 zone            Z, the zone the bits are about
 *     16   16 uuid            volume UUID
 *     32    4 page            page index p
 *     36   24 reserved        zero
 *     60    4 crc             CRC32C of the page, this field zero
 *     64 4032 bits            bit r%8 of byte r/8: region p*32256 + r
 *
 * Copies: written to every zone in the write set except Z; on open the
 * union over all reachable zones is taken (more bits only cost a resync).
 * Validation: an all-zero page is a hole; otherwise magic, version, zone,
 * uuid, page and crc must match, and a page failing any of them (a zero
 * header over set bits included: a torn write) counts as all bits set.
 */
#define VOL_WIM_REGION_SHIFT 8
#define VOL_WIM_REGION_BLOCKS (1u << VOL_WIM_REGION_SHIFT)
#define VOL_WIM_HDR_BYTES 64
#define VOL_WIM_PAGE_REGIONS ((VOL_BLOCK_BYTES - VOL_WIM_HDR_BYTES) * 8)
#define VOL_WIM_MAGIC "SIXFWIM1"

void vol_wim_page_encode(uint8_t *page, uint32_t zone, const uint8_t *uuid,
			 uint32_t pageno);
int vol_wim_page_decode(const uint8_t *page, uint32_t zone, const uint8_t *uuid,
			uint32_t pageno);

/* Little-endian helpers. */
static inline void vol_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void vol_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void vol_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t vol_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t vol_get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t vol_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#endif /* SIXFOLD_VOL_FORMAT_H */
