/*
 * fs_mountinfo.h - the sixfold mounts of this host, from
 * /proc/self/mountinfo (fs/).
 *
 * For the commands that find a mount's volume: `umount` (fs_mount_main.c)
 * and `status`, `scrub`, `zone` (repair_main.c, which reach the daemon
 * through the control socket in the mount's source, the zone directory
 * it was mounted from).  No state, no FUSE; any thread.
 */
#ifndef SIXFOLD_FS_MOUNTINFO_H
#define SIXFOLD_FS_MOUNTINFO_H

#include <stddef.h>

/* The file system type a sixfold mount has in mountinfo. */
#define FS_MOUNT_TYPE "fuse.sixfold"

/*
 * Call fn(arg, mountpoint, type, source) for every mount, in mountinfo
 * order, with the octal escapes undone; fn returns 0 to go on, non-zero
 * to stop (returned).  0 at the end, or -errno if mountinfo cannot be
 * read.
 */
int fs_mountinfo_each(int (*fn)(void *arg, const char *mountpoint,
				const char *type, const char *source),
		      void *arg);

/*
 * The source of the sixfold mount at path (an absolute path without
 * symlinks, as realpath gives) into src: 0, -ENOENT if nothing is
 * mounted there, -EINVAL if what is mounted is not sixfold, -ENAMETOOLONG
 * if it does not fit in cap.  The last mount on path counts.
 */
int fs_mountinfo_source(const char *path, char *src, size_t cap);

#endif /* SIXFOLD_FS_MOUNTINFO_H */
