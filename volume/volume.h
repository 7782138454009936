/*
 * volume.h - the sixfold quorum volume (the volume/ module).
 *
 * Layer: below fs/ and repair/, above keys/.  The volume stores 4 KiB
 * blocks addressed by LBA.  Every block is sealed once (keys/) and written
 * to six zones; a transaction is durable once four zones have it on stable
 * storage (W = 4 of N = 6), and any three zones (R = 3) hold every
 * acknowledged block.  The volume knows nothing of files or names.
 *
 * Threads: every function below may be called from any thread unless it
 * says otherwise; one struct vol has one writer (this process), enforced by
 * a lock in every zone.  Errors are negative errno values:
 *   -EIO      a zone or the quorum failed (writes: quorum lost past the
 *             timeout; the volume then stays in an error state, every later
 *             write returns -EIO, until it is reopened)
 *   -EBADMSG  used inside: a copy failed its CRC or tag (never returned by
 *             vol_read, which tries the next copy and gives -EIO when no
 *             copy is good)
 *   -ENOSPC   an LBA at or past the volume's maximum size
 *   -EBUSY    the volume is open elsewhere (message names the holder)
 *   -EKEYREJECTED  wrong passphrase or key file
 *   -EROFS    a write on a read-only open
 *   -EINVAL   bad argument
 * Messages for a person go through the log callback (vol_set_log), never
 * to stderr directly.
 */
#ifndef SIXFOLD_VOLUME_H
#define SIXFOLD_VOLUME_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#include "keys/keys.h"

#define VOL_WARN_UNUSED __attribute__((warn_unused_result))

#define VOL_BLOCK_BYTES 4096u
#define VOL_ZONES 6
#define VOL_WRITE_QUORUM 4 /* W: zones that must be durable for an ack */
#define VOL_READ_QUORUM 3 /* R: zones that always share a copy (W+R>N) */
#define VOL_PG_BLOCKS ((uint64_t)2621440) /* 10 GiB protection group */
#define VOL_MAX_BLOCKS ((uint64_t)1 << 34) /* 64 TiB */
#define VOL_TXN_MAX_RECS 320 /* records in a txn: 1 MiB + metadata */
#define VOL_ZONE_MAX_DIRS 8 /* directories (disks) per zone */
#define VOL_PATH_MAX 1000 /* bytes of one zone's "dir,dir" spec */

struct vol;
struct vol_txn;

/* Where messages for a person go (default: stderr with "sixfold: "). */
enum vol_log_level { VOL_LOG_ERR = 0, VOL_LOG_WARN = 1, VOL_LOG_INFO = 2 };
void vol_set_log(void (*fn)(int level, const char *msg));
void vol_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct vol_mkfs_opts {
	const char *zones[VOL_ZONES]; /* each "dir[,dir...]" */
	uint64_t max_blocks; /* 0: VOL_MAX_BLOCKS */
	uint32_t log_blocks; /* 0: default (see vol_format.h) */
	int force; /* overwrite another sixfold volume */
	const struct key_source *key; /* first keyslot */
};

/*
 * Format six zones into a new volume.  Creates missing directories.
 * Refuses (-EINVAL, with a message) a wrong zone count, a directory given
 * twice, a non-empty directory that holds no sixfold zone, and (-EEXIST)
 * a directory that already holds a sixfold zone unless force.
 * uuid_out may be NULL.
 */
int vol_mkfs(const struct vol_mkfs_opts *o,
	     uint8_t uuid_out[KEY_UUID_BYTES]) VOL_WARN_UNUSED;

struct vol_open_opts {
	/* One zone directory (its superblock names the other five), or
	 * the six zone specs in order. */
	const char *const *paths;
	int npaths;
	const struct key_source *key;
	int readonly; /* needs R zones; writes give -EROFS */
	int64_t write_timeout_ms; /* < 0: writes wait for quorum forever */
};

/*
 * Open a volume: lock every reachable zone, unlock the key (before any
 * byte is written), recover (union of the zone logs, cut at the last
 * complete batch before the first gap), start a new epoch on a write
 * quorum, re-replicate what was kept.  Needs W reachable zones (R for
 * readonly), else -EIO naming what is missing.
 */
int vol_open(const struct vol_open_opts *o, struct vol **out) VOL_WARN_UNUSED;

/*
 * Flush everything, materialise, checkpoint, release.  Returns the
 * volume's sticky error, if any (the volume is freed regardless).
 */
int vol_close(struct vol *v) VOL_WARN_UNUSED;

/*
 * Read one block into buf (VOL_BLOCK_BYTES).  Returns the newest durable
 * version; blocks never written or discarded read as zeros.  A copy that
 * fails its CRC or tag is skipped and counted; -EIO when no good copy is
 * reachable.  -ENOSPC past the maximum size.
 */
int vol_read(struct vol *v, uint64_t lba, void *buf) VOL_WARN_UNUSED;

/*
 * Read n consecutive blocks [lba, lba + n) into buf (n * VOL_BLOCK_BYTES),
 * as n vol_read calls would, but with one meta read per zone asked and
 * one ciphertext read for each run of up to 64 blocks, all issued at
 * once.  Same results and errors; a block the run cannot settle at once
 * goes through vol_read.
 */
int vol_read_run(struct vol *v, uint64_t lba, uint32_t n,
		 void *buf) VOL_WARN_UNUSED;

/*
 * Transactions.  begin gives an empty transaction; write copies buf in
 * (the caller may reuse it at once); discard frees a run of blocks (they
 * read as zeros after commit, and their space is released in every zone).
 * A transaction holds at most VOL_TXN_MAX_RECS records (-E2BIG past it).
 * commit blocks until the transaction is durable on W zones (or fails);
 * it consumes t whatever it returns.  abort drops t.  Transactions
 * committed from several threads are grouped (one fdatasync per zone).
 * Writes past the current capacity grow it by whole protection groups.
 */
int vol_txn_begin(struct vol *v, struct vol_txn **out) VOL_WARN_UNUSED;
int vol_txn_write(struct vol_txn *t, uint64_t lba,
		  const void *buf) VOL_WARN_UNUSED;
/*
 * vol_txn_write of a block that no committed transaction refers to yet
 * (the caller's allocator just handed it out, and the transaction that
 * freed it, if any, was committed before this one).  The volume may
 * then write its ciphertext straight to its place in the segments,
 * stable before the transaction's log record, instead of into the log
 * and again into the segments (the direct path, vol_log.c L2).  Until
 * the transaction is durable the block reads as before (a crash leaves
 * it as it was, and unreferenced).  Same results and errors otherwise.
 */
int vol_txn_write_fresh(struct vol_txn *t, uint64_t lba,
			const void *buf) VOL_WARN_UNUSED;
int vol_txn_discard(struct vol_txn *t, uint64_t lba,
		    uint64_t nblocks) VOL_WARN_UNUSED;
int vol_txn_commit(struct vol_txn *t) VOL_WARN_UNUSED;

/*
 * Asynchronous commit: the transaction is ordered (it takes its LSNs now,
 * after every transaction committed before it returns) and sealed, and
 * the call returns without waiting for the zones: *ticket identifies it
 * for vol_wait.  Durability follows commit order (a crash keeps a prefix
 * of the committed transactions, never a later one without an earlier
 * one).  Until it is durable, vol_read does not see it: the caller keeps
 * what it needs to read back.  Waits only when VOL_ASYNC_HARD_RECS records
 * are already waiting (back-pressure; vol_wait_room waits sooner).  A
 * transaction that later fails puts the volume in its error state:
 * vol_wait and every later commit return the error.  An empty
 * transaction gives ticket 0.
 */
int vol_txn_commit_async(struct vol_txn *t, uint64_t *ticket) VOL_WARN_UNUSED;

/*
 * Wait until fewer than VOL_ASYNC_MAX_RECS records of asynchronous
 * commits wait for the zones, or the volume closes (0), or fails (its
 * error).  For a caller that orders its commits under a lock of its own:
 * it waits here before taking that lock, so that the commit's own
 * back-pressure, which would hold the lock while the zones catch up, is
 * left for rare bursts, and everything else that needs the lock
 * (lookups, reads, small changes) goes on while bulk writes wait.
 */
int vol_wait_room(struct vol *v) VOL_WARN_UNUSED;

/*
 * Wait until every transaction up to ticket is durable on W zones (0), or
 * the volume fails (its error; with a write timeout, -EIO once the wait
 * outlives it).
 */
int vol_wait(struct vol *v, uint64_t ticket) VOL_WARN_UNUSED;

/* The newest durable ticket: transactions up to it are durable. */
uint64_t vol_durable_ticket(struct vol *v);
void vol_txn_abort(struct vol_txn *t);

/*
 * Promise t room for nwrite blocks in all (what it has written so far and
 * what it may still write; a later call replaces the promise): 0, once W
 * zones have room for them on top of every block admitted or promised
 * before, with a margin of VOL_SPACE_RESERVE_BLOCKS more unless t frees
 * space (so that deletes still pass when writes no longer do); -ENOSPC
 * (nothing changes; a freeing t first waits a while for blocks to be
 * materialised); or the volume's error.  t's commit is then never
 * refused for space if it writes no more than nwrite blocks: for a
 * caller that must not start a change it could not commit (the
 * filesystem, before it changes its tree).  Other commits count the
 * promise against their own room; commit or abort ends it.
 */
int vol_txn_reserve(struct vol_txn *t, uint32_t nwrite,
		    int freeing) VOL_WARN_UNUSED;

/*
 * Force materialisation of everything durable when it is called (not
 * what later commits add), and a checkpoint.
 */
int vol_sync(struct vol *v) VOL_WARN_UNUSED;

/* Zone states as status reports them (names: vol_zone_state_name). */
enum vol_zone_state {
	VOL_ZONE_HEALTHY = 0, /* in the write set, current */
	VOL_ZONE_DEGRADED, /* reachable, but behind in some regions */
	VOL_ZONE_OFFLINE, /* missing, failed or out of the write set */
	VOL_ZONE_RESYNCING, /* back in the write set, copying what it missed */
	VOL_ZONE_REBUILDING, /* new or replaced: being filled from its peers */
};
const char *vol_zone_state_name(enum vol_zone_state s);

/*
 * The scrub's record, kept in every zone (DIR0/scrub, man/sixfold.5) so
 * that a scrub resumes after a remount and status shows the last result.
 */
enum vol_scrub_state {
	VOL_SCRUB_NONE = 0, /* never ran */
	VOL_SCRUB_RUNNING = 1, /* in progress (resumes at cursor) */
	VOL_SCRUB_STOPPED = 2, /* stopped by request, resumable */
	VOL_SCRUB_FINISHED = 3, /* reached the end */
};
const char *vol_scrub_state_name(enum vol_scrub_state s);

struct vol_scrub_rec {
	uint32_t state; /* enum vol_scrub_state */
	uint32_t deep; /* authenticates every copy */
	uint64_t cursor; /* next LBA to check */
	uint64_t checked; /* blocks checked (written ones) */
	uint64_t found; /* bad or missing copies found */
	uint64_t healed; /* copies rewritten */
	uint64_t unrecoverable; /* blocks with no good copy left */
	int64_t started; /* seconds since 1970 */
	int64_t finished; /* 0 while running */
};

struct vol_zone_info {
	char path[VOL_PATH_MAX + 1];
	enum vol_zone_state state;
	char reason[160]; /* why it is not healthy, for a person */
	uint64_t epoch; /* from its superblock */
	uint64_t applied_lsn; /* materialised into its segments */
	uint64_t lag_lsn; /* behind the most advanced zone */
	uint64_t behind_regions; /* write-intent regions it missed */
	uint64_t behind_blocks; /* blocks in those regions */
	uint64_t used_blocks; /* blocks it holds */
	int admin_offline; /* taken offline by `sixfold zone offline` */
	uint64_t repaired_blocks; /* resync/rebuild: blocks done so far */
	/* Zones (bit mask, itself included) whose log writes one device
	 * flush makes stable together; 0 if it has its own fdatasync. */
	uint32_t flush_shared;
};

/*
 * A latency distribution in microseconds: percentiles are within 1/16
 * of the true value (log-linear buckets), max is exact.
 */
struct vol_latency {
	uint64_t mean_us, p50_us, p90_us, p99_us, max_us;
};

/*
 * Where a commit's time goes, per batch sent to the zones (a batch
 * carries every sealed transaction waiting when it is sent): queued, from its oldest transaction's seal to its sending
 * (waiting for the batches already in flight); written, from its
 * sending until four zones completed their log writes; durable, from
 * its sending until four zones also flushed them, as V2 declares it;
 * total, queued plus durable, what the oldest committer waited.
 */
struct vol_commit_info {
	uint64_t batches;
	struct vol_latency queued, written, durable, total;
	/* Device flushes that zones sharing one (flush_shared) issued for
	 * their batches, and how many of those a thread waiting for the
	 * batch ran itself instead of an io_uring worker (vol_log.c). */
	uint64_t shared_flushes, waiter_flushes;
};

struct vol_info {
	uint8_t uuid[KEY_UUID_BYTES];
	uint64_t epoch;
	uint64_t capacity_blocks; /* auto-grown, whole PGs, <= max */
	uint64_t max_blocks;
	uint64_t used_blocks;
	uint64_t durable_lsn;
	uint64_t bad_copies; /* copies that failed CRC/tag on read */
	int write_quorum; /* writable zones >= W */
	uint64_t healed_copies; /* copies rewritten by repair since open */
	/* Blocks of durable transactions since open: written in place
	 * (the direct path), and through the log. */
	uint64_t direct_blocks;
	uint64_t logged_blocks;
	/* Live: how long the batches sent since open took (vol_log.c). */
	struct vol_commit_info commit;
	struct vol_scrub_rec scrub; /* last or current scrub */
	char holder[160]; /* who holds the lock (offline status) */
	struct vol_zone_info zones[VOL_ZONES];
};

/* State of an open volume. */
int vol_info(struct vol *v, struct vol_info *out) VOL_WARN_UNUSED;

/*
 * Start the commit figures (vol_info's commit) from zero again, as at
 * the open: for a caller that measures one run of commits after another
 * (bench-volume).  `sixfold status` never does, so its figures are since
 * the mount.
 */
void vol_commit_info_reset(struct vol *v);

/*
 * State of a closed (or open elsewhere) volume from its superblocks and
 * checkpoints: no key, no lock, nothing written.
 */
int vol_status(const char *const *paths, int npaths,
	       struct vol_info *out) VOL_WARN_UNUSED;

/*
 * Repair (used by repair/, one caller thread at a time).  Healing copies
 * the authoritative copy of a block (the highest LSN whose ciphertext
 * passes its CRC and AEAD tag) with its meta entry to every zone of the
 * write set that is missing it, holds an older version, or holds a
 * damaged one; nothing is decrypted and sealed again.  Repair writes are
 * serialised with materialisation, so a heal never puts an old version
 * over a newer one.
 */
struct vol_heal_counts {
	uint64_t checked; /* written blocks examined */
	uint64_t found; /* bad, stale or missing copies */
	uint64_t healed; /* copies rewritten */
	uint64_t unrecoverable; /* blocks with no good copy of their version */
	uint64_t bytes; /* data copied */
};

/*
 * Scrub from *lba on: examine at most max written blocks (never-written
 * stretches are skipped without reading), heal what is found, advance
 * *lba.  deep: read and authenticate every copy (else metas are compared
 * and data read only to heal).  Unrecoverable LBAs go to lost[] (up to
 * nlost, *nlost_out counts them).  1 at the end of the volume, 0 more to
 * do, or -errno.
 */
int vol_scrub_step(struct vol *v, uint64_t *lba, uint32_t max, int deep,
		   struct vol_heal_counts *c, uint64_t *lost, uint32_t nlost,
		   uint32_t *nlost_out) VOL_WARN_UNUSED;

/* Heal the blocks that reads found a bad copy of (queued by vol_read). */
int vol_heal_queued(struct vol *v, struct vol_heal_counts *c) VOL_WARN_UNUSED;

/*
 * Watch the zones: a zone of the write set whose directory was removed,
 * replaced or became unusable leaves it; a zone that is out and usable
 * again (directory back, permissions fixed, space freed, disk mounted
 * again) rejoins the write set, with the regions it missed marked for
 * resync; an empty directory where a zone was is formatted into the
 * volume and rebuilt.  Returns the mask of zones with regions to copy.
 */
int vol_zone_probe(struct vol *v) VOL_WARN_UNUSED;

/*
 * Copy up to max_regions of the regions zone z missed from its peers;
 * 1 while more remain, 0 when z is current, -errno (z left the write
 * set again, or too few peers).
 */
int vol_resync_step(struct vol *v, int z, uint32_t max_regions,
		    struct vol_heal_counts *c) VOL_WARN_UNUSED;

/* Administration: take z out of the write set until online (-EBUSY
 * when that would leave fewer than W zones), or let it back. */
int vol_zone_set_offline(struct vol *v, int z, int offline) VOL_WARN_UNUSED;
/* Replace z by the empty directory spec (formatted, then rebuilt). */
int vol_zone_replace(struct vol *v, int z, const char *spec) VOL_WARN_UNUSED;

/* The scrub record: stored in every zone of the write set / newest. */
int vol_scrub_rec_store(struct vol *v,
			const struct vol_scrub_rec *s) VOL_WARN_UNUSED;
int vol_scrub_rec_load(struct vol *v, struct vol_scrub_rec *s) VOL_WARN_UNUSED;
/* Blocks of capacity (where a scrub ends). */
uint64_t vol_capacity_blocks(struct vol *v);

/*
 * Key administration: lock the volume (it must not be open), find a key
 * header that src unlocks, let the caller change it, write it to every
 * reachable zone (needs W).  Damaged or stale copies are rewritten.
 */
struct vol_keyadm;
int vol_keyadm_open(const char *const *paths, int npaths,
		    struct vol_keyadm **out) VOL_WARN_UNUSED;
/* Copy of the newest valid key header (for listing; no key needed). */
int vol_keyadm_header(struct vol_keyadm *ka,
		      uint8_t hdr[KEY_HEADER_BYTES]) VOL_WARN_UNUSED;
/* Unlock with src: *mk and hdr (the copy that unlocked). */
int vol_keyadm_unlock(struct vol_keyadm *ka, const struct key_source *src,
		      struct key_master **mk,
		      uint8_t hdr[KEY_HEADER_BYTES]) VOL_WARN_UNUSED;
/*
 * Write hdr, one generation newer than the newest, to every reachable
 * zone: 0 once W zones have it.  With fewer than W zones reachable,
 * -EIO after a message and nothing written.  Short of W after writing,
 * -EIO too: the zones that took it (*written) now hold the newest
 * generation, which is the one unlocking trusts, so the caller says
 * which keys open the volume now.
 */
int vol_keyadm_store(struct vol_keyadm *ka, const uint8_t hdr[KEY_HEADER_BYTES],
		     int *written) VOL_WARN_UNUSED;
const uint8_t *vol_keyadm_uuid(const struct vol_keyadm *ka);
void vol_keyadm_close(struct vol_keyadm *ka);

/*
 * Test seam (fault injection, used by the unit and crash tests): every
 * later I/O of this process on zone `zone` fails with `err` (a negative
 * errno), as a dead disk would; 0 stops injecting.  The zone leaves the
 * write set at its first failure and stays out until the fault is
 * cleared (0) and vol_zone_probe lets it back.
 */
int vol_debug_zone_fault(struct vol *v, int zone, int err) VOL_WARN_UNUSED;

/*
 * Test seam: the write timeout (vol_open_opts.write_timeout_ms) of the
 * waits that start from now on, so that a test can run its workload
 * under a long one and shorten it only where it makes a quorum fail on
 * purpose.  -EINVAL for a negative ms other than -1 (wait forever).
 */
int vol_debug_write_timeout(struct vol *v, int64_t ms) VOL_WARN_UNUSED;

/*
 * Test seam: every later read of zone `zone`'s segment and meta files
 * fails with `err` once it has been issued, as unreadable sectors would;
 * the zone stays reachable and in the write set.  0 stops injecting.
 */
int vol_debug_zone_read_fault(struct vol *v, int zone, int err) VOL_WARN_UNUSED;

/*
 * Test seam: zone `zone`'s free space is read as `bytes` now, and not
 * read again (as if every later reading were slow to come) until
 * UINT64_MAX, which has the zones read again before it returns.
 */
int vol_debug_zone_space(struct vol *v, int zone,
			 uint64_t bytes) VOL_WARN_UNUSED;

/*
 * Test seam: after n more successful vol_txn_reserve calls, the next is
 * refused with -ENOSPC, once (n < 0: no refusal).  Returns what remained
 * of the previous setting: the calls it still had to pass, or -1 if its
 * refusal happened (or none was set).
 */
int vol_debug_space_refuse(struct vol *v, int n);

/*
 * Test seam: how many times the materialiser has paused between pieces
 * of a round for the commits in flight (vol_mat.c, Pacing) since open.
 */
uint64_t vol_debug_mat_paces(struct vol *v);

/* Parse "10G", "64T", "4096" etc. into bytes.  -EINVAL. */
int vol_parse_size(const char *s, uint64_t *bytes) VOL_WARN_UNUSED;

/* Print s as a JSON string literal to f (status --json and tools). */
void vol_json_str(FILE *f, const char *s);

/* Command-line entry points (volume/vol_main.c). */
int vol_main_mkfs(int argc, char **argv);
int vol_main_bench(int argc, char **argv);

#endif /* SIXFOLD_VOLUME_H */
