/*
 * scratch.h - a scratch directory with six zone paths and a key for unit
 * tests that make a real volume.  It is removed at exit and on a fatal
 * signal (SIGABRT, SIGSEGV, SIGTERM, SIGINT), so a failing test leaves
 * nothing behind.
 */
#ifndef SIXFOLD_TEST_SCRATCH_H
#define SIXFOLD_TEST_SCRATCH_H

#include <stdint.h>

#include "keys/keys.h"
#include "volume/volume.h"

struct scratch {
	char dir[64]; /* /tmp/sixfold-NAME-XXXXXX */
	char zone[VOL_ZONES][128]; /* dir/z0 .. dir/z5 */
	const char *zone_paths[VOL_ZONES]; /* for vol_open_opts.paths */
	uint8_t key_bytes[32]; /* random key file contents */
	struct key_source key; /* KEYFILE source of key_bytes */
};

extern struct scratch scratch;

/* Make the directory (zones not created: mkfs does) and the key. */
int scratch_setup(const char *name);

/*
 * mkfs a volume of at most max blocks (0: the default) in dir/name/z0..z5
 * with the scratch key and an 8 MiB log; dirs and paths get the zones.
 */
int scratch_mkfs(const char *name, uint64_t max, char dirs[VOL_ZONES][128],
		 const char *paths[VOL_ZONES]);

/*
 * vol_open with the scratch key: paths[0..npaths), read-only or not,
 * writes failing with -EIO after timeout_ms without quorum.  *v is NULL
 * on failure.
 */
int scratch_open(struct vol **v, int readonly, const char *const *paths,
		 int npaths, int64_t timeout_ms);

/* A block's test pattern for (lba, version): both readable at its start. */
void scratch_fill(uint8_t *buf, uint64_t lba, uint32_t ver);

/*
 * Blocks lba..lba+n of v read version ver (0: zeros): how many do not
 * (the first is printed, prefixed by when).
 */
int scratch_check_run(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver,
		      const char *when);

/*
 * Commit one block at lba, version ver, in a transaction of its own:
 * waiting for it (ticket NULL) or not (vol_txn_commit_async's ticket).
 */
int scratch_commit_block(struct vol *v, uint64_t lba, uint32_t ver,
			 uint64_t *ticket);

/*
 * Is the scratch directory where zones share one device flush (ext4,
 * XFS: flush domains, L1 in volume/vol_log.c)?
 */
int scratch_shares_flush(void);

/* Remove the directory now (also done at exit). */
void scratch_cleanup(void);

#endif /* SIXFOLD_TEST_SCRATCH_H */
