/*
 * fs_i.h - internal helpers shared by the files of fs/ (never included
 * from another directory; check-layering enforces it).
 *
 * Holds the corruption and invariant macros every fs/ file uses (STYLE 4
 * and 6) and the little-endian byte helpers of the format code.  No I/O,
 * no state.
 */
#ifndef SIXFOLD_FS_I_H
#define SIXFOLD_FS_I_H

#include <stddef.h>
#include <stdint.h>

#define FS_WARN_UNUSED __attribute__((warn_unused_result))

/*
 * Every "these disk bytes are damaged" return goes through one of these:
 * they log what is damaged, the rule broken (its number first, as "N5
 * ..." or "S3 ...") and the source line through vol_log, and return
 * -EUCLEAN.  FS_CORRUPT is for B+tree nodes (it names the node's LBA);
 * FS_CORRUPT_AT for anything else: what names the structure ("fs
 * superblock at LBA", "item of object"), id its LBA or object id.
 */
int fs_corrupt(const char *file, int line, uint64_t lba, const char *rule);
#define FS_CORRUPT(lba, rule) fs_corrupt(__FILE__, __LINE__, (lba), (rule))

int fs_corrupt_at(const char *file, int line, const char *what, uint64_t id,
		  const char *rule);
#define FS_CORRUPT_AT(what, id, rule) \
	fs_corrupt_at(__FILE__, __LINE__, (what), (id), (rule))

/*
 * Always-on check for a condition whose violation would write bad data
 * (STYLE 6): logs and aborts before the write.  Never for disk contents.
 */
#define FS_VERIFY(cond)                                      \
	do {                                                 \
		if (!(cond))                                 \
			fs_panic(__FILE__, __LINE__, #cond); \
	} while (0)
void fs_panic(const char *file, int line, const char *what)
	__attribute__((noreturn));

/* ---- little-endian byte helpers (formats are little-endian) ---- */

static inline uint16_t fs_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t fs_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t fs_get64(const uint8_t *p)
{
	return (uint64_t)fs_get32(p) | (uint64_t)fs_get32(p + 4) << 32;
}

static inline void fs_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void fs_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void fs_put64(uint8_t *p, uint64_t v)
{
	fs_put32(p, (uint32_t)v);
	fs_put32(p + 4, (uint32_t)(v >> 32));
}

/* 1 if the n bytes at p are all zero (n may be 0). */
static inline int fs_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

#endif /* SIXFOLD_FS_I_H */
