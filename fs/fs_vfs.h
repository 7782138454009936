/*
 * fs_vfs.h - the POSIX filesystem on the store (fs/): every operation
 * the FUSE layer serves, as plain functions on inode numbers.
 *
 * Layer: fs/, above fs_txn.h (the store: tree, allocator, transactions),
 * below fs_fuse.c (which only translates FUSE requests and replies).
 * Knows nothing of FUSE, so the unit tests drive it directly.
 *
 * Every function returns 0 (or a count) or a negative errno exactly as
 * Linux's own filesystems give it for the same case (ENOENT, EEXIST,
 * ENOTEMPTY, EISDIR, ENOTDIR, ENAMETOOLONG, EFBIG, ENOSPC, ENODATA,
 * ERANGE, E2BIG, EOPNOTSUPP, EINVAL, EIO once the store has failed).
 * Permission checks are the kernel's (the mount always uses
 * default_permissions): the functions trust their caller on access.
 *
 * Threads: every function may be called from any thread.  One metadata
 * mutex serialises changes and tree lookups; file data is read outside
 * it.  Changes are ordered when a function returns and durable after
 * fs_vfs_fsync (DESIGN 3: prefix semantics).
 */
#ifndef SIXFOLD_FS_VFS_H
#define SIXFOLD_FS_VFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "fs/fs_txn.h"

struct fs;

/* Who asks: owner of what a call creates. */
struct fs_ctx {
	uint32_t uid, gid;
};

/* Largest file: the volume's 64 TiB (offsets at or past it: EFBIG). */
#define FS_FILE_MAX ((uint64_t)VOL_MAX_BLOCKS * FS_BLOCK_BYTES)

/* Longest symlink target (the block holding it, less a NUL). */
#define FS_SYMLINK_MAX (FS_BLOCK_BYTES - 1)

/*
 * Open the filesystem on an open volume; a volume that holds none yet
 * (LBA 0 never written) gets one (root owned by root, mode 0755).  Then
 * finish what a crash interrupted: inodes that were unlinked while open
 * (ORPHAN items) are freed.  *out owns neither v nor its lifetime.
 */
int fs_vfs_open(struct vol *v, struct fs **out) FS_WARN_UNUSED;

/* 1 if v holds a filesystem (LBA 0 was written), 0 if not, or -errno. */
int fs_vfs_has_fs(struct vol *v) FS_WARN_UNUSED;

/*
 * Make everything durable and free the filesystem (the caller closes the
 * volume after).  Returns the sticky error, or 0.
 */
int fs_vfs_close(struct fs *fs);

/* Attributes of ino. */
int fs_vfs_getattr(struct fs *fs, uint64_t ino, struct stat *st) FS_WARN_UNUSED;

/*
 * Look name up in dir: its attributes to *st, and the kernel now holds
 * one more reference on it (fs_vfs_forget gives it back).
 */
int fs_vfs_lookup(struct fs *fs, uint64_t dir, const char *name,
		  struct stat *st) FS_WARN_UNUSED;

/* The kernel dropped n references to ino. */
void fs_vfs_forget(struct fs *fs, uint64_t ino, uint64_t n);

/*
 * Create name in dir: mode holds the type (S_IFREG, S_IFDIR, S_IFLNK,
 * S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK) and the permission bits (umask
 * already applied by the kernel); rdev for devices; target for a
 * symlink.  Like lookup, the new inode has one kernel reference.
 */
int fs_vfs_mknod(struct fs *fs, const struct fs_ctx *c, uint64_t dir,
		 const char *name, uint32_t mode, uint64_t rdev,
		 const char *target, struct stat *st) FS_WARN_UNUSED;

/* New name newname in newdir for ino; one more kernel reference. */
int fs_vfs_link(struct fs *fs, uint64_t ino, uint64_t newdir,
		const char *newname, struct stat *st) FS_WARN_UNUSED;

/* Remove a non-directory name (unlink) or an empty directory (rmdir). */
int fs_vfs_unlink(struct fs *fs, uint64_t dir, const char *name) FS_WARN_UNUSED;
int fs_vfs_rmdir(struct fs *fs, uint64_t dir, const char *name) FS_WARN_UNUSED;

/* rename(2), with RENAME_NOREPLACE and RENAME_EXCHANGE flags. */
int fs_vfs_rename(struct fs *fs, uint64_t dir, const char *name,
		  uint64_t newdir, const char *newname,
		  unsigned flags) FS_WARN_UNUSED;

/* A symlink's target, NUL-terminated, into buf (FS_SYMLINK_MAX + 1). */
int fs_vfs_readlink(struct fs *fs, uint64_t ino, char *buf) FS_WARN_UNUSED;

/* What fs_vfs_setattr changes (FUSE's FATTR_* meaning). */
#define FS_SET_MODE (1u << 0)
#define FS_SET_UID (1u << 1)
#define FS_SET_GID (1u << 2)
#define FS_SET_SIZE (1u << 3)
#define FS_SET_ATIME (1u << 4)
#define FS_SET_MTIME (1u << 5)
#define FS_SET_ATIME_NOW (1u << 7)
#define FS_SET_MTIME_NOW (1u << 8)
#define FS_SET_CTIME (1u << 10)
#define FS_SET_KILL_SUIDGID (1u << 11) /* see fs_vfs_kill_suidgid */

/*
 * Change what `set` says from *in; the result to *st.  A new owner or
 * group of a file that is not a directory clears set-user-ID, and
 * set-group-ID where group-execute is set, as chown(2) does on Linux;
 * FS_SET_KILL_SUIDGID clears them of a regular file in the same
 * transaction (a truncate by a caller without CAP_FSETID).
 */
int fs_vfs_setattr(struct fs *fs, uint64_t ino, const struct stat *in,
		   unsigned set, struct stat *st) FS_WARN_UNUSED;

/*
 * Clear set-user-ID, and set-group-ID where group-execute is set, of a
 * regular file, as a write, truncate or fallocate by a caller without
 * CAP_FSETID must: 1 if a bit was cleared, 0 if none was set (no
 * transaction then, the common case), or -errno.
 */
int fs_vfs_kill_suidgid(struct fs *fs, uint64_t ino) FS_WARN_UNUSED;

/*
 * Open and last close of a file or directory (an unlinked inode's
 * space is freed at its last close).  how: FS_OPEN_DIR for a directory,
 * FS_OPEN_WRITE for a file opened for writing; release takes the same.
 */
#define FS_OPEN_DIR 1
#define FS_OPEN_WRITE 2
int fs_vfs_open_ino(struct fs *fs, uint64_t ino, int how) FS_WARN_UNUSED;
int fs_vfs_release(struct fs *fs, uint64_t ino, int how) FS_WARN_UNUSED;

/* How many opens for writing the inode has (0 if none or unknown). */
uint32_t fs_vfs_writers(struct fs *fs, uint64_t ino);

/* Read up to size bytes at off into buf: bytes read (0 at EOF). */
ssize_t fs_vfs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size,
		    void *buf) FS_WARN_UNUSED;

/*
 * Write size bytes at off: bytes written (short only on ENOSPC).  *grew
 * (may be NULL) is set when the file's blocks changed, so attributes a
 * cache holds (st_blocks) are stale.
 */
ssize_t fs_vfs_write(struct fs *fs, uint64_t ino, uint64_t off, size_t size,
		     const void *buf, int *grew) FS_WARN_UNUSED;

/*
 * fsync/fdatasync/fsyncdir: everything ordered so far is durable on a
 * write quorum (group commit: all waiters share the zones' syncs).  Times
 * set alone (setattr) are stored first unless datasync (fs_vfs.c, Times).
 */
int fs_vfs_fsync(struct fs *fs, int datasync) FS_WARN_UNUSED;

/*
 * Directory entries from offset off (0: the start; then what the last
 * entry given returned as next): fill(arg, name, ino, type, next, st)
 * returns non-zero when it has no room, which ends the listing before
 * that entry.  With plus, st carries each entry's attributes and every
 * entry fill accepts (but "." and "..") takes a kernel reference.
 * Offsets are stable: entries created or removed meanwhile never make
 * another entry appear twice or go missing.
 */
typedef int (*fs_dir_fill)(void *arg, const char *name, uint64_t ino,
			   unsigned type, uint64_t next, const struct stat *st);
int fs_vfs_readdir(struct fs *fs, uint64_t dir, uint64_t off, int plus,
		   fs_dir_fill fill, void *arg) FS_WARN_UNUSED;

/* Space and files, with the capacity as the volume has grown so far. */
int fs_vfs_statfs(struct fs *fs, struct statvfs *sv) FS_WARN_UNUSED;

/* Extended attributes: flags XATTR_CREATE / XATTR_REPLACE.  get and
 * list return the length (with size 0: the length needed). */
int fs_vfs_setxattr(struct fs *fs, uint64_t ino, const char *name,
		    const void *value, size_t size, int flags) FS_WARN_UNUSED;
ssize_t fs_vfs_getxattr(struct fs *fs, uint64_t ino, const char *name,
			void *value, size_t size) FS_WARN_UNUSED;
ssize_t fs_vfs_listxattr(struct fs *fs, uint64_t ino, char *list,
			 size_t size) FS_WARN_UNUSED;
int fs_vfs_removexattr(struct fs *fs, uint64_t ino,
		       const char *name) FS_WARN_UNUSED;

/* fallocate(2): mode 0, FALLOC_FL_KEEP_SIZE, and PUNCH_HOLE|KEEP_SIZE. */
int fs_vfs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off,
		     uint64_t len) FS_WARN_UNUSED;

/* lseek SEEK_DATA / SEEK_HOLE from off: the offset, or -ENXIO. */
int64_t fs_vfs_lseek(struct fs *fs, uint64_t ino, uint64_t off,
		     int whence) FS_WARN_UNUSED;

/*
 * Which file holds volume block lba: writes its path from the mount's
 * root ("/pgdata/base/1/1259", one of its names if it has several) into
 * buf and returns 0; -ENOENT when no file's extent maps the block (free
 * space, filesystem metadata, or a file unlinked while open),
 * -ENAMETOOLONG when the path does not fit in len.  Scans the whole tree
 * (for repair's reports of unrecoverable blocks, which are rare), taking
 * the metadata lock for a bounded number of items at a time, so requests
 * go on meanwhile.  Any thread.
 */
int fs_vfs_name_of_lba(struct fs *fs, uint64_t lba, char *buf,
		       size_t len) FS_WARN_UNUSED;

/* The store (for fsck and status), under no lock: callers that use it
 * while requests run must not. */
struct fs_store *fs_vfs_store(struct fs *fs);

#endif /* SIXFOLD_FS_VFS_H */
