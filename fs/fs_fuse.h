/*
 * fs_fuse.h - serve a sixfold filesystem through FUSE (fs/).
 *
 * The one place that speaks libfuse: fs_fuse.c turns FUSE low-level
 * requests into fs_vfs.h calls and their results into replies.  The
 * command line (fs_mount_main.c) opens the volume and calls fs_fuse_run.
 */
#ifndef SIXFOLD_FS_FUSE_H
#define SIXFOLD_FS_FUSE_H

#include "volume/volume.h"

struct fs;

/* Default of the dirty_max= mount option, and its largest value (MiB). */
#define FS_FUSE_DIRTY_MAX_DEFAULT 1024u
#define FS_FUSE_DIRTY_MAX_LIMIT (1u << 20)

struct fs_fuse_opts {
	const char *mountpoint;
	const char *fsname; /* shown as the mount's source */
	int allow_other; /* let other users in (PostgreSQL's user) */
	int noexec; /* the kernel refuses to execute files of the mount */
	int sync; /* the kernel fsyncs every write before it returns */
	/* The kernel's cap on the mount's dirty page cache, in MiB (see
	 * tune_bdi in fs_fuse.c); 0 leaves the kernel's own. */
	uint32_t dirty_max_mib;
	/*
	 * Called with the filesystem open, before the mount appears (may be
	 * NULL; for the daemon's repair thread and control socket): 0, or a
	 * negative errno after a message, which ends fs_fuse_run with it
	 * and nothing is mounted.
	 */
	int (*ready)(void *arg, struct fs *fs);
	/* Called once the mount is up, before requests are served (may be
	 * NULL). */
	void (*serving)(void *arg);
	/* Called when the mount ends (after ready gave 0), while the
	 * filesystem is still open (may be NULL). */
	void (*stopping)(void *arg);
	void *ready_arg;
};

/*
 * Open the filesystem on v (making it on a new volume), mount it at
 * o->mountpoint, serve requests with a pool of threads until unmounted
 * (SIGINT, SIGTERM and SIGHUP unmount, as `sixfold umount` does, unless
 * files are open there), then make everything durable.  The caller closes v.  0, or a negative errno after a message.
 */
int fs_fuse_run(struct vol *v, const struct fs_fuse_opts *o);

#endif /* SIXFOLD_FS_FUSE_H */
