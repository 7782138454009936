/*
 * repair.h - self-healing of a mounted volume (the repair/ module).
 *
 * Layer: above volume/ (repair -> volume), beside fs/.  The daemon
 * (fs/fs_mount_main.c) starts one struct repair per mounted volume: a
 * thread that
 *   - watches every zone (a removed, unreadable, full or failing zone
 *     leaves the write set; one that comes back is noticed and rejoins),
 *   - resyncs a returning zone (exactly the regions its write-intent map
 *     names) and rebuilds a replaced one (every written block, read from
 *     several healthy zones at once),
 *   - heals the copies that reads found bad, at once,
 *   - scrubs: walks every written block, compares (LSN, tag) across the
 *     zones and, deep, authenticates every copy; rate-limited so that
 *     foreground I/O keeps priority, resumable after a remount.
 * and a control channel: a Unix socket in the mounted zone directory
 * that only root or the daemon's own user may use (no network port),
 * through which `sixfold status|scrub|zone` talk to the daemon.
 *
 * Errors are negative errno values; messages for a person go through
 * vol_log().
 */
#ifndef SIXFOLD_REPAIR_H
#define SIXFOLD_REPAIR_H

#include <stdint.h>
#include <stdio.h>

#include "volume/volume.h"

#define REPAIR_WARN_UNUSED __attribute__((warn_unused_result))

/* Default background scrub rate, MB/s of blocks checked (-o scrub_rate). */
#define REPAIR_SCRUB_RATE_DEFAULT 8
/* Unrecoverable blocks a scrub remembers (with file names) for status. */
#define REPAIR_MAX_LOST 16

struct repair;

struct repair_opts {
	/* Background scrub, MB/s of blocks checked; 0: none (on demand
	 * only).  A scrub runs again this long after the last one ended. */
	uint32_t scrub_rate_mb;
	uint32_t scrub_interval_s; /* 0: default, one week */
	/*
	 * Names the file that holds a block, for reports (may be NULL):
	 * writes a path into buf and returns 0, or -ENOENT (free space,
	 * filesystem metadata).  Called from the repair thread.
	 */
	int (*name_of)(void *arg, uint64_t lba, char *buf, size_t len);
	void *name_arg;
};

/* One unrecoverable block: no zone holds a good copy of its version. */
struct repair_lost {
	uint64_t lba;
	char file[256]; /* "" when no file holds it */
};

struct repair_scrub_info {
	/* struct vol_scrub_rec as persisted: state, deep, counts, times. */
	struct vol_scrub_rec rec;
	uint64_t total_blocks; /* capacity: the scrub's end */
	uint32_t rate_mb; /* current limit, 0: none */
	uint32_t nlost;
	struct repair_lost lost[REPAIR_MAX_LOST];
};

/* Everything `sixfold status` shows. */
struct repair_info {
	struct vol_info vol;
	int live; /* from the running daemon (else from the zones on disk) */
	struct repair_scrub_info scrub;
	/* Per zone: repair throughput (bytes/s over the last seconds) and
	 * estimated seconds left (0: unknown or nothing to do). */
	uint64_t zone_rate[VOL_ZONES];
	uint64_t zone_eta_s[VOL_ZONES];
};

int repair_start(struct vol *v, const struct repair_opts *o,
		 struct repair **out) REPAIR_WARN_UNUSED;
/* Stops the thread (a running scrub is saved to resume at next mount). */
void repair_stop(struct repair *r);

/* -EALREADY if one runs (a stopped one is resumed by start). */
int repair_scrub_start(struct repair *r, int deep) REPAIR_WARN_UNUSED;
/* -ENOENT when none runs. */
int repair_scrub_stop(struct repair *r) REPAIR_WARN_UNUSED;

/* Zone administration of the running volume (wakes the thread). */
int repair_zone_offline(struct repair *r, int z) REPAIR_WARN_UNUSED;
int repair_zone_online(struct repair *r, int z) REPAIR_WARN_UNUSED;
int repair_zone_replace(struct repair *r, int z,
			const char *dir) REPAIR_WARN_UNUSED;

int repair_info(struct repair *r, struct repair_info *out) REPAIR_WARN_UNUSED;
/* The same from the zones of a volume that is not mounted here. */
int repair_info_offline(const char *const *paths, int npaths,
			struct repair_info *out) REPAIR_WARN_UNUSED;

/*
 * status as a person reads it (summary line first, like zpool status)
 * or as JSON (documented in sixfold(8), STATUS JSON).
 */
void repair_status_print(FILE *f, const struct repair_info *ri, int json);
/* Only the scrub part of the text (`sixfold scrub status`). */
void repair_scrub_print(FILE *f, const struct repair_info *ri);

/* ---- control channel (repair_ctl.c) ---- */
struct repair_ctl;
/*
 * Listen on the control socket in zone directory dir (DIR/control);
 * serves requests on its own thread until repair_ctl_stop.
 */
int repair_ctl_start(struct repair *r, const char *dir,
		     struct repair_ctl **out) REPAIR_WARN_UNUSED;
void repair_ctl_stop(struct repair_ctl *c);
/*
 * Client side: send one request line (no newline) to the daemon
 * listening in zone directory dir and read its whole reply into *reply
 * (malloc'd, NUL-terminated; the caller frees it).  0, or -errno:
 * -ENOENT (no socket there), -ECONNREFUSED (a stale one: no daemon),
 * -EACCES (not root nor the daemon's user), -ETIMEDOUT (no reply).
 */
int repair_ctl_request(const char *dir, const char *req,
		       char **reply) REPAIR_WARN_UNUSED;

/* Command-line entry points (repair_main.c): status, scrub, zone. */
int repair_main_status(int argc, char **argv);
int repair_main_scrub(int argc, char **argv);
int repair_main_zone(int argc, char **argv);

#endif /* SIXFOLD_REPAIR_H */
