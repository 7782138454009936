/*
 * fs_fuse.c - FUSE low-level requests to fs_vfs.h calls, and back.
 *
 * Layer: fs/, the only file that includes libfuse.  No filesystem logic
 * here: each handler unpacks its request, calls fs_vfs_*, and replies.
 *
 * Kernel caching (DESIGN 3): the daemon is the only writer of the
 * filesystem, so the kernel may cache everything for long: entries,
 * negative entries and attributes for a day, file pages across opens
 * (keep_cache), dirty pages in the writeback cache (flushed by fsync,
 * close and memory pressure, in writes of up to 1 MiB), symlinks.
 * Permission checks are the kernel's (default_permissions, always on).
 * POSIX and BSD locks are the kernel's too (one host, one daemon).
 */
/*
 * 3.12 is the first API whose fuse_session_loop_mt() takes the
 * fuse_loop_config that fuse_loop_cfg_create() makes.  Below it the call
 * maps to the 3.2 entry point, which reads the same pointer as the old
 * two-field structure: clone_fd became the version tag and the idle
 * limit 0, so every worker exited after one request and the next one
 * started a thread and cloned /dev/fuse (a thread per request).
 */
#define FUSE_USE_VERSION 312

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/fs_fuse.h"
#include "fs/fs_vfs.h"

#define CACHE_TIMEOUT 86400.0 /* seconds: we are the only writer */
#define MAX_WRITE (1u << 20) /* bytes per write request */
/*
 * The kernel's readahead window for a file: several MAX_WRITE-sized reads
 * in flight at once, so sequential reads keep more than one request
 * thread (and zone) busy.  The kernel caps a FUSE mount's window at its
 * backing device's read_ahead_kb (128 KiB by default), so tune_bdi
 * raises that too.
 */
#define MAX_READAHEAD (4u << 20)
#define MAX_THREADS 16u /* request threads */

struct uring_worker;

/* What every handler reaches through the request. */
struct served {
	struct fs *fs;
	struct fuse_session *se;
	/* FUSE over io_uring (see "Requests over io_uring" below) */
	struct uring_worker *workers;
	int fd; /* /dev/fuse, which the rings' commands name */
	unsigned nworkers;
	unsigned nqueues; /* the kernel's: possible CPUs */
	uint64_t init_unique; /* FUSE_INIT's, while it is being answered */
	int uring_offered; /* the kernel's FUSE_INIT offered it */
	int killpriv_offered; /* and FUSE_HANDLE_KILLPRIV_V2 */
	int killpriv; /* that was taken: see "Clearing set-user-ID" */
};

/*
 * Clearing set-user-ID.  A write, truncate or fallocate by a caller
 * without CAP_FSETID clears set-user-ID, and set-group-ID where
 * group-execute is set, and any file capability (security.capability).
 * Unless told otherwise, the kernel does it through FUSE, and to learn
 * whether there is a capability to remove it asks for that attribute
 * (GETXATTR) before every write(2) to the page cache: one request, a
 * round trip through this daemon, more per write.  With
 * FUSE_HANDLE_KILLPRIV_V2 the file system clears the two mode bits
 * itself: the kernel marks the requests that must
 * (FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID,
 * FUSE_OPEN_KILL_SUIDGID), leaves chown's clearing to fs_vfs_setattr,
 * and, knowing a file has no capability once it looked, stops asking
 * until its attributes are fetched again.  It still removes a
 * capability itself.  libfuse 3.14 predates the flag: io_writev adds it
 * to the INIT reply, and the request's reader (io_read, uring_serve)
 * notes the marks in kill_suidgid, since the same thread then hands the
 * request to libfuse, which drops them (a truncate's goes to
 * fs_vfs_setattr as FS_SET_KILL_SUIDGID, one transaction).  A fallocate carries no mark:
 * one by a caller other than root clears the bits.
 */
static _Thread_local int kill_suidgid;

/* Note the request's mark (above); op is its op header, oplen bytes. */
static void note_kill(const struct fuse_in_header *in, const char *op,
		      size_t oplen)
{
	size_t at;
	uint32_t mask, f;

	switch (in->opcode) {
	case FUSE_WRITE:
		at = offsetof(struct fuse_write_in, write_flags);
		mask = FUSE_WRITE_KILL_SUIDGID;
		break;
	case FUSE_SETATTR:
		at = offsetof(struct fuse_setattr_in, valid);
		mask = FATTR_KILL_SUIDGID;
		break;
	case FUSE_OPEN:
		at = offsetof(struct fuse_open_in, open_flags);
		mask = FUSE_OPEN_KILL_SUIDGID;
		break;
	default:
		kill_suidgid = 0;
		return;
	}
	f = 0;
	if (oplen >= at + sizeof(f))
		memcpy(&f, op + at, sizeof(f));
	kill_suidgid = (f & mask) != 0;
}

/*
 * Before a request the kernel marked (or a fallocate by a caller other
 * than root): clear the bits.  0 if the request may go on, 1 if a bit
 * was cleared (the kernel's cached mode is then told, after the reply:
 * attrs_changed), or -errno for the reply.
 */
static int kill_first(fuse_req_t req, fuse_ino_t ino, int kill)
{
	struct served *s = fuse_req_userdata(req);

	return kill && s->killpriv ? fs_vfs_kill_suidgid(s->fs, ino) : 0;
}

/* After the reply, when req is gone: s is taken before it. */
static void attrs_changed(struct served *s, fuse_ino_t ino, int changed)
{
	/* Only the attributes: the cached pages are right. */
	if (changed)
		(void)fuse_lowlevel_notify_inval_inode(s->se, ino, -1, 0);
}

static struct fs *req_fs(fuse_req_t req)
{
	return ((struct served *)fuse_req_userdata(req))->fs;
}

static void reply_entry(fuse_req_t req, const struct stat *st)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = st->st_ino;
	e.attr = *st;
	e.attr_timeout = CACHE_TIMEOUT;
	e.entry_timeout = CACHE_TIMEOUT;
	fuse_reply_entry(req, &e);
}

static void reply_err(fuse_req_t req, int ret)
{
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_WRITEBACK_CACHE)
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	conn->want &= ~(unsigned)(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS |
				  FUSE_CAP_ATOMIC_O_TRUNC);
	conn->max_write = MAX_WRITE;
	conn->max_readahead = MAX_READAHEAD;
	conn->time_gran = 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct stat st;
	int ret = fs_vfs_lookup(req_fs(req), parent, name, &st);

	if (ret == -ENOENT) { /* cache the miss too */
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.entry_timeout = CACHE_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret)
		reply_err(req, ret);
	else
		reply_entry(req, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_vfs_forget(req_fs(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		fs_vfs_forget(req_fs(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;
	int ret = fs_vfs_getattr(req_fs(req), ino, &st);

	(void)fi;
	if (ret)
		reply_err(req, ret);
	else
		fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct served *s = fuse_req_userdata(req);
	unsigned set = (unsigned)to_set;
	struct stat st;
	int ret;

	(void)fi;
	if (kill_suidgid && s->killpriv)
		set |= FS_SET_KILL_SUIDGID;
	ret = fs_vfs_setattr(s->fs, ino, attr, set, &st);
	if (ret)
		reply_err(req, ret);
	else
		fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev, const char *target)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_ctx fc = { c->uid, c->gid };
	struct stat st;
	int ret = fs_vfs_mknod(req_fs(req), &fc, parent, name, mode, rdev,
			       target, &st);

	if (ret)
		reply_err(req, ret);
	else
		reply_entry(req, &st);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	make_node(req, parent, name, mode, rdev, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	make_node(req, parent, name, S_IFLNK | 0777, 0, link);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct stat st;
	int ret = fs_vfs_link(req_fs(req), ino, newparent, newname, &st);

	if (ret)
		reply_err(req, ret);
	else
		reply_entry(req, &st);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, fs_vfs_unlink(req_fs(req), parent, name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, fs_vfs_rmdir(req_fs(req), parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	reply_err(req, fs_vfs_rename(req_fs(req), parent, name, newparent,
				     newname, flags));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[FS_SYMLINK_MAX + 1];
	int ret = fs_vfs_readlink(req_fs(req), ino, buf);

	if (ret)
		reply_err(req, ret);
	else
		fuse_reply_readlink(req, buf);
}

/* A file's open for fs_vfs: whether it may write (op_lseek). */
static int open_how(const struct fuse_file_info *fi)
{
	return (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : FS_OPEN_WRITE;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct served *s = fuse_req_userdata(req);
	int killed = kill_first(req, ino, kill_suidgid);
	int ret = killed < 0 ? killed :
			       fs_vfs_open_ino(s->fs, ino, open_how(fi));

	if (ret) {
		reply_err(req, ret);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
	attrs_changed(s, ino, killed > 0);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_ctx fc = { c->uid, c->gid };
	struct fuse_entry_param e;
	struct fs *fs = req_fs(req);
	int ret = fs_vfs_mknod(fs, &fc, parent, name, S_IFREG | (mode & 07777),
			       0, NULL, &e.attr);

	if (!ret)
		ret = fs_vfs_open_ino(fs, e.attr.st_ino, open_how(fi));
	if (ret) {
		reply_err(req, ret);
		return;
	}
	e.ino = e.attr.st_ino;
	e.generation = 0;
	e.attr_timeout = CACHE_TIMEOUT;
	e.entry_timeout = CACHE_TIMEOUT;
	fi->keep_cache = 1;
	fuse_reply_create(req, &e, fi);
}

static char *uring_reply_buf(size_t size);

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	/* Straight into the ring entry's reply buffer, when it came that
	 * way: the reply needs no copy then. */
	char *ring = uring_reply_buf(size);
	char *buf = ring ? ring : malloc(size ? size : 1);
	ssize_t n;

	(void)fi;
	if (!buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	n = fs_vfs_read(req_fs(req), ino, (uint64_t)off, size, buf);
	if (n < 0)
		reply_err(req, (int)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	if (!ring)
		free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct served *s = fuse_req_userdata(req);
	int grew = 0, killed = kill_first(req, ino, kill_suidgid);
	ssize_t n;

	(void)fi;
	n = killed < 0 ?
		    killed :
		    fs_vfs_write(s->fs, ino, (uint64_t)off, size, buf, &grew);
	if (n < 0)
		reply_err(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
	/* The kernel keeps st_blocks for a day: tell it they changed. */
	attrs_changed(s, ino, grew || killed > 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	reply_err(req, fs_vfs_release(req_fs(req), ino, open_how(fi)));
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	reply_err(req, fs_vfs_fsync(req_fs(req), datasync));
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	int ret = fs_vfs_open_ino(req_fs(req), ino, FS_OPEN_DIR);

	if (ret) {
		reply_err(req, ret);
		return;
	}
	fi->cache_readdir = 0;
	fuse_reply_open(req, fi);
}

struct dirbuf {
	fuse_req_t req;
	char *buf;
	size_t size, pos;
	int plus;
};

static int dir_fill(void *arg, const char *name, uint64_t ino, unsigned type,
		    uint64_t next, const struct stat *st)
{
	struct dirbuf *d = arg;
	size_t need;

	(void)ino;
	(void)type;
	if (d->plus) {
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.ino = st->st_ino;
		e.attr = *st;
		e.attr_timeout = CACHE_TIMEOUT;
		e.entry_timeout = CACHE_TIMEOUT;
		need = fuse_add_direntry_plus(d->req, d->buf + d->pos,
					      d->size - d->pos, name, &e,
					      (off_t)next);
	} else {
		need = fuse_add_direntry(d->req, d->buf + d->pos,
					 d->size - d->pos, name, st,
					 (off_t)next);
	}
	if (need > d->size - d->pos)
		return 1; /* no room: this entry comes next time */
	d->pos += need;
	return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, int plus)
{
	struct dirbuf d = { req, malloc(size ? size : 1), size, 0, plus };
	int ret;

	if (!d.buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	ret = fs_vfs_readdir(req_fs(req), ino, (uint64_t)off, plus, dir_fill,
			     &d);
	if (ret)
		reply_err(req, ret);
	else
		fuse_reply_buf(req, d.buf, d.pos);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, 1);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	int ret = fs_vfs_statfs(req_fs(req), &sv);

	(void)ino;
	if (ret)
		reply_err(req, ret);
	else
		fuse_reply_statfs(req, &sv);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	reply_err(req,
		  fs_vfs_setxattr(req_fs(req), ino, name, value, size, flags));
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	ssize_t n;

	if (size && !buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	n = fs_vfs_getxattr(req_fs(req), ino, name, buf, size);
	if (n < 0)
		reply_err(req, (int)n);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	ssize_t n;

	if (size && !buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	n = fs_vfs_listxattr(req_fs(req), ino, buf, size);
	if (n < 0)
		reply_err(req, (int)n);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	reply_err(req, fs_vfs_removexattr(req_fs(req), ino, name));
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			 off_t length, struct fuse_file_info *fi)
{
	struct served *s = fuse_req_userdata(req);
	int killed;

	(void)fi;
	if (offset < 0 || length <= 0) {
		reply_err(req, -EINVAL);
		return;
	}
	killed = kill_first(req, ino, fuse_req_ctx(req)->uid != 0);
	reply_err(req, killed < 0 ? killed :
				    fs_vfs_fallocate(s->fs, ino, mode,
						     (uint64_t)offset,
						     (uint64_t)length));
	attrs_changed(s, ino, killed > 0);
}

/*
 * The kernel sends LSEEK without writing its dirty pages back first, so
 * the daemon's extents may lack data written and not yet fsynced, which
 * a sparse-aware copy would then skip as a hole.  Only a file open for
 * writing can have dirty pages (close and the last release write them
 * back, and a shared mapping holds its file open), so for one such, the
 * file's pages are invalidated first: the kernel writes the dirty ones
 * back to the daemon (launder) before it drops them, and waits for
 * that.  -ENOENT: the kernel has no such inode cached, nothing to write.
 */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct served *s = fuse_req_userdata(req);
	int64_t res;

	(void)fi;
	if ((whence != SEEK_DATA && whence != SEEK_HOLE) || off < 0) {
		reply_err(req, -EINVAL);
		return;
	}
	if (fs_vfs_writers(s->fs, ino)) {
		int ret = fuse_lowlevel_notify_inval_inode(s->se, ino, 0, 0);

		if (ret && ret != -ENOENT) {
			reply_err(req, ret);
			return;
		}
	}
	res = fs_vfs_lseek(s->fs, ino, (uint64_t)off, whence);
	if (res < 0)
		reply_err(req, (int)res);
	else
		fuse_reply_lseek(req, (off_t)res);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.link = op_link,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_release,
	.fsyncdir = op_fsync,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
};

/*
 * Requests over io_uring.  Since Linux 6.14 the kernel can hand FUSE
 * requests to the daemon through io_uring instead of read(2) and
 * write(2) on /dev/fuse: the daemon registers buffers on a queue per
 * CPU, the kernel queues a request on the queue of the CPU its caller
 * runs on, and one submission answers a request and asks for the next.
 * The root-only switch /sys/module/fuse/parameters/enable_uring turns
 * it on for the whole host, and Debian's libfuse 3.14 predates it, so
 * this file speaks the kernel's side itself (include/uapi/linux/fuse.h,
 * protocol 7.42) and feeds each request to libfuse as if read from the
 * device; libfuse's reply comes back through io_writev, which copies it
 * into the request's ring buffers.
 *
 * Each worker thread owns one io_uring and one ring entry on one queue,
 * so a handler that blocks (fsync waits for four zones) holds only its
 * own entry: the kernel gives the next request to another free entry of
 * that queue.  Forgets and interrupts still come through /dev/fuse and
 * libfuse's own threads, as do requests sent before every queue has an
 * entry.
 *
 * The kernel holds every request from its INIT reply until each queue
 * has an entry, so the rings, buffers and threads are all made before
 * the INIT reply says yes: after it, the only step left is the
 * registration, and a registration the kernel refuses turns the feature
 * off for the connection (it goes back to /dev/fuse).
 */
#define URING_FLAGS2 ((uint32_t)(1ull << (41 - 32))) /* FUSE_OVER_IO_URING */
#define URING_CMD_REGISTER 1u
#define URING_CMD_COMMIT_AND_FETCH 2u
#define URING_PER_QUEUE 4u /* workers (and so entries) per CPU queue */
#define URING_MAX_QUEUES 64u
/* Room before the payload for a request's in header and op header, so
 * that libfuse sees one contiguous request without a copy of the
 * payload. */
#define URING_HEADROOM 4096u
#define URING_OP_HDR_MAX 128u
#define URING_LARGE (128u << 10) /* a read that may run on any CPU */
#define URING_STOP 1u /* user_data of the NOP that ends a worker */

struct uring_ent_in_out { /* struct fuse_uring_ent_in_out */
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct uring_req_header { /* struct fuse_uring_req_header */
	char in_out[128]; /* fuse_in_header, then fuse_out_header */
	char op_in[URING_OP_HDR_MAX]; /* the op's own header */
	struct uring_ent_in_out ent;
};

struct uring_cmd_req { /* struct fuse_uring_cmd_req, in the SQE's cmd */
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

struct uring_worker {
	struct served *sv;
	pthread_t tid;
	int started;
	int ring_ok;
	int pinned; /* runs on the CPU of its queue only */
	/* Its SQ has one producer at a time: the worker, or the INIT
	 * reply's thread registering it, or uring_stop. */
	pthread_mutex_t sq_lock;
	struct io_uring ring;
	unsigned qid;
	struct uring_req_header *hdr;
	char *mem; /* URING_HEADROOM, then the payload */
	size_t payload_max;
	struct iovec iov[2]; /* what the kernel writes to: hdr, payload */
	uint64_t unique; /* of the request being served, 0 between */
	int replied;
};

static __thread struct uring_worker *uring_self;

static int uring_submit1(struct io_uring *ring)
{
	int ret;

	do
		ret = io_uring_submit(ring);
	while (ret == -EINTR || ret == -EAGAIN);
	return ret == 1 ? 0 : ret < 0 ? ret : -EIO;
}

/* Send one command for w's entry on queue qid, or (cmd 0) the NOP that
 * ends w.  0, or a negative errno. */
static int uring_send(struct uring_worker *w, unsigned cmd, uint64_t commit,
		      unsigned qid)
{
	struct io_uring_sqe *sqe;
	struct uring_cmd_req *c;
	int ret = -EBUSY;

	pthread_mutex_lock(&w->sq_lock);
	sqe = io_uring_get_sqe(&w->ring);
	if (!sqe)
		goto out;
	memset(sqe, 0, 128);
	if (cmd) {
		sqe->opcode = IORING_OP_URING_CMD;
		sqe->fd = w->sv->fd;
		sqe->cmd_op = cmd;
		sqe->addr = (uint64_t)(uintptr_t)w->iov;
		sqe->len = 2;
		c = (struct uring_cmd_req *)sqe->cmd;
		c->commit_id = commit;
		c->qid = (uint16_t)qid;
	} else {
		sqe->opcode = IORING_OP_NOP;
		sqe->user_data = URING_STOP;
	}
	ret = uring_submit1(&w->ring);
out:
	pthread_mutex_unlock(&w->sq_lock);
	return ret;
}

/*
 * Where w runs for this request.  Most requests run on the CPU of w's
 * queue, which is where their caller waits: the kernel queues a request
 * on the queue of the CPU its caller runs on, so the worker wakes there
 * and no other CPU is disturbed.  A large read is mostly the cipher's
 * CPU work, and it is readahead whose caller does not wait for it: it
 * may run on any CPU, or sequential reads queue on one CPU while the
 * other idles.  The affinity changes only when the kind of request does.
 */
static void uring_place(struct uring_worker *w, const struct fuse_in_header *in)
{
	uint32_t size = 0;
	int pin;
	cpu_set_t cs;

	if (in->opcode == FUSE_READ)
		memcpy(&size,
		       w->hdr->op_in + offsetof(struct fuse_read_in, size),
		       sizeof(size));
	pin = size < URING_LARGE;
	if (pin == w->pinned)
		return;
	CPU_ZERO(&cs);
	if (pin)
		CPU_SET(w->qid, &cs);
	else
		for (unsigned c = 0; c < w->sv->nqueues; c++)
			CPU_SET(c, &cs);
	/* A CPU that is offline keeps the old affinity: only slower. */
	if (!pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs))
		w->pinned = pin;
}

/*
 * Hand the request in w's buffers to libfuse as one buffer: in header,
 * op header, payload.  The kernel reports the payload's size; the op
 * header's is what remains of the in header's total length.
 */
static void uring_serve(struct uring_worker *w)
{
	struct fuse_in_header in;
	struct fuse_out_header *oh = (struct fuse_out_header *)w->hdr->in_out;
	uint32_t psz = w->hdr->ent.payload_sz;
	struct fuse_buf fb;
	size_t op;
	char *start;

	memcpy(&in, w->hdr->in_out, sizeof(in));
	w->unique = in.unique;
	w->replied = 0;
	uring_place(w, &in);
	if (in.len < sizeof(in) + psz || psz > w->payload_max ||
	    in.len - sizeof(in) - psz > URING_OP_HDR_MAX) {
		vol_log(VOL_LOG_ERR,
			"FUSE request %u over io_uring has sizes that do not "
			"add up (%u, payload %u); answered with EIO",
			in.opcode, in.len, psz);
		goto unanswered;
	}
	op = in.len - sizeof(in) - psz;
	start = w->mem + URING_HEADROOM - op - sizeof(in);
	memcpy(start, &in, sizeof(in));
	memcpy(start + sizeof(in), w->hdr->op_in, op);
	memset(&fb, 0, sizeof(fb));
	fb.mem = start;
	fb.size = in.len;
	note_kill(&in, w->hdr->op_in, op);
	fuse_session_process_buf(w->sv->se, &fb);
	if (w->replied)
		goto out;
unanswered:
	/* Every ring request must be committed, or its entry is lost. */
	memset(oh, 0, sizeof(*oh));
	oh->len = sizeof(*oh);
	oh->error = -EIO;
	oh->unique = in.unique;
	w->hdr->ent.payload_sz = 0;
out:
	w->unique = 0;
}

static void *uring_main(void *arg)
{
	struct uring_worker *w = arg;
	struct io_uring_cqe *cqe;
	uint64_t tag;
	int ret, res;

	uring_self = w;
	for (;;) {
		ret = io_uring_wait_cqe(&w->ring, &cqe);
		if (ret == -EINTR)
			continue;
		if (ret)
			break;
		res = cqe->res;
		tag = cqe->user_data;
		io_uring_cqe_seen(&w->ring, cqe);
		/* -ENOTCONN: the mount is gone, or the kernel refused the
		 * registration and requests go through /dev/fuse. */
		if (tag == URING_STOP || res < 0)
			break;
		uring_serve(w);
		ret = uring_send(w, URING_CMD_COMMIT_AND_FETCH,
				 w->hdr->ent.commit_id, w->qid);
		if (ret) {
			vol_log(VOL_LOG_ERR,
				"cannot answer a FUSE request over io_uring: %s",
				strerror(-ret));
			break;
		}
	}
	return NULL;
}

/* Where a reply of size bytes to the request this thread serves from
 * its ring entry would go, or NULL (not a ring request, or too big). */
static char *uring_reply_buf(size_t size)
{
	struct uring_worker *w = uring_self;

	if (!w || !w->unique || size > w->payload_max)
		return NULL;
	return w->mem + URING_HEADROOM;
}

/* The reply to the request this thread serves from its ring entry, if
 * the header says so: copied into the entry's buffers. */
static int uring_reply(struct uring_worker *w, const struct iovec *iov,
		       int count, ssize_t *done)
{
	const struct fuse_out_header *oh = iov[0].iov_base;
	size_t off = 0;

	if (!w || !w->unique || iov[0].iov_len < sizeof(*oh) ||
	    oh->unique != w->unique)
		return 0;
	for (int i = 1; i < count; i++) {
		if (iov[i].iov_len > w->payload_max - off) {
			errno = EINVAL;
			*done = -1;
			return 1;
		}
		if (iov[i].iov_base != w->mem + URING_HEADROOM + off)
			memmove(w->mem + URING_HEADROOM + off, iov[i].iov_base,
				iov[i].iov_len);
		off += iov[i].iov_len;
	}
	memcpy(w->hdr->in_out, oh, sizeof(*oh));
	w->hdr->ent.payload_sz = (uint32_t)off;
	w->replied = 1;
	*done = (ssize_t)(sizeof(*oh) + off);
	return 1;
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct served *sv = userdata;
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;

	kill_suidgid = 0;
	if (n >= (ssize_t)sizeof(*in))
		note_kill(in, (const char *)(in + 1), (size_t)n - sizeof(*in));
	if (n >= (ssize_t)(sizeof(*in) + sizeof(struct fuse_init_in)) &&
	    in->opcode == FUSE_INIT) {
		const struct fuse_init_in *ii = (const void *)(in + 1);

		sv->init_unique = in->unique;
		sv->uring_offered = (ii->flags & FUSE_INIT_EXT) &&
				    (ii->flags2 & URING_FLAGS2);
		sv->killpriv_offered = (ii->flags & FUSE_HANDLE_KILLPRIV_V2) !=
				       0;
	}
	return n;
}

/*
 * Right after the INIT reply, from the thread that sent it: register
 * every worker's entry.  The kernel takes a registration inline, so a
 * failure shows here.  If one cannot be sent, a registration the kernel
 * must refuse (no such queue) turns io_uring off for the connection, so
 * that requests flow through /dev/fuse instead of waiting for a queue
 * that will never have an entry.
 */
static void uring_register(struct served *sv)
{
	struct uring_worker *w;
	unsigned i;
	int ret = 0;

	for (i = 0; i < sv->nworkers && !ret; i++) {
		w = &sv->workers[i];
		ret = uring_send(w, URING_CMD_REGISTER, 0, w->qid);
	}
	if (!ret) {
		vol_log(VOL_LOG_INFO,
			"FUSE requests over io_uring: %u queues of %u workers",
			sv->nqueues, URING_PER_QUEUE);
		return;
	}
	vol_log(VOL_LOG_WARN,
		"cannot register with the kernel for FUSE over io_uring (%s); "
		"requests go through /dev/fuse",
		strerror(-ret));
	for (unsigned j = 0; j < sv->nworkers; j++) {
		if (j == i - 1)
			continue; /* its ring just failed */
		w = &sv->workers[j];
		if (!uring_send(w, URING_CMD_REGISTER, 0, UINT16_MAX))
			return;
	}
	vol_log(VOL_LOG_ERR,
		"cannot turn FUSE over io_uring off again: the mount will not "
		"answer; abort it through /sys/fs/fuse/connections");
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct served *sv = userdata;
	const struct fuse_out_header *oh = iov[0].iov_base;
	int init = 0;
	ssize_t n;

	if (uring_reply(uring_self, iov, count, &n))
		return n;
	if (sv->init_unique && oh->unique == sv->init_unique && !oh->error &&
	    count == 2 &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags2) + 4) {
		struct fuse_init_out *io = iov[1].iov_base;

		sv->init_unique = 0;
		if (sv->killpriv_offered) {
			io->flags |= FUSE_HANDLE_KILLPRIV_V2;
			sv->killpriv = 1;
		}
		/* Every request and reply must fit an entry's payload. */
		if (sv->uring_offered && sv->nworkers &&
		    io->max_write <= MAX_WRITE &&
		    (size_t)io->max_pages * (size_t)sysconf(_SC_PAGESIZE) <=
			    MAX_WRITE) {
			io->flags |= FUSE_INIT_EXT;
			io->flags2 |= URING_FLAGS2;
			init = 1;
		}
	}
	n = writev(fd, iov, count);
	/* The kernel has taken the INIT reply: the rings may register. */
	if (init && n >= 0)
		uring_register(sv);
	return n;
}

static const struct fuse_custom_io custom_io = {
	.read = io_read,
	.writev = io_writev,
};

/* Whether the host lets FUSE use io_uring (root's switch). */
static int uring_enabled(void)
{
	char c = 0;
	int fd = open("/sys/module/fuse/parameters/enable_uring",
		      O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (read(fd, &c, 1) != 1)
		c = 0;
	close(fd);
	return c == 'Y' || c == '1';
}

/* The kernel's queues: one per possible CPU ("0-N" in sysfs). */
static unsigned uring_queues(void)
{
	char s[64];
	unsigned lo, hi;
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	int ok = f && fgets(s, sizeof(s), f);

	if (f)
		fclose(f);
	if (!ok)
		return 0;
	if (sscanf(s, "%u-%u", &lo, &hi) == 2 && lo == 0)
		return hi + 1;
	if (sscanf(s, "%u", &lo) == 1 && lo == 0)
		return 1;
	return 0;
}

static void uring_stop(struct served *sv)
{
	struct uring_worker *w;
	int left = 0;

	if (!sv->workers)
		return;
	for (unsigned i = 0; i < sv->nworkers; i++) {
		w = &sv->workers[i];
		if (w->started) {
			/* A worker still waiting (no registration, or the
			 * loop ended with the mount up) ends on a NOP; one
			 * that ended already leaves it unread.  Without the
			 * NOP it might wait for ever: leave it be. */
			if (uring_send(w, 0, 0, 0)) {
				pthread_detach(w->tid);
				left = 1;
				continue;
			}
			pthread_join(w->tid, NULL);
		}
		if (w->ring_ok)
			io_uring_queue_exit(&w->ring);
		free(w->hdr);
		if (w->mem)
			munmap(w->mem, URING_HEADROOM + w->payload_max);
	}
	if (!left) /* else a worker may still read its entry */
		free(sv->workers);
	sv->workers = NULL;
	sv->nworkers = 0;
}

/*
 * Make the workers, their rings and buffers.  Nothing is asked of the
 * kernel yet: io_writev offers io_uring in the INIT reply only while
 * they exist.  0, or a negative errno: then nothing is left and the
 * mount serves through /dev/fuse alone.
 */
static int uring_start(struct served *sv, int fd)
{
	unsigned nq = uring_queues(), i;
	struct uring_worker *w;
	int ret;

	if (!nq || nq > URING_MAX_QUEUES)
		return -ENOTSUP;
	sv->workers = calloc(nq * URING_PER_QUEUE, sizeof(*sv->workers));
	if (!sv->workers)
		return -ENOMEM;
	sv->nworkers = nq * URING_PER_QUEUE;
	sv->nqueues = nq;
	sv->fd = fd;
	for (i = 0; i < sv->nworkers; i++) {
		w = &sv->workers[i];
		w->sv = sv;
		pthread_mutex_init(&w->sq_lock, NULL);
		w->qid = i % nq;
		w->payload_max = MAX_WRITE;
		w->hdr = calloc(1, sizeof(*w->hdr));
		w->mem = mmap(NULL, URING_HEADROOM + w->payload_max,
			      PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (w->mem == MAP_FAILED)
			w->mem = NULL;
		if (!w->hdr || !w->mem) {
			ret = -ENOMEM;
			goto fail;
		}
		w->iov[0].iov_base = w->hdr;
		w->iov[0].iov_len = sizeof(*w->hdr);
		w->iov[1].iov_base = w->mem + URING_HEADROOM;
		w->iov[1].iov_len = w->payload_max;
		ret = io_uring_queue_init(4, &w->ring, IORING_SETUP_SQE128);
		if (ret)
			goto fail;
		w->ring_ok = 1;
		ret = -pthread_create(&w->tid, NULL, uring_main, w);
		if (ret)
			goto fail;
		w->started = 1;
		(void)pthread_setname_np(w->tid, "fuse-uring"); /* a nicety */
	}
	return 0;
fail:
	uring_stop(sv);
	return ret;
}

/*
 * Signals.  libfuse's own handlers end the loop and then detach the mount
 * lazily, which drops whatever the kernel still holds in its writeback
 * cache for files open at that moment.  Instead SIGINT, SIGTERM and
 * SIGHUP are taken by one thread (sigwait) that unmounts properly, as
 * `sixfold umount` does: the kernel writes its cache back through us
 * first, then the loop ends because the device closes.  With files
 * still open there the unmount fails (EBUSY) and we keep serving.
 */
struct sigwaiter {
	pthread_t tid;
	sigset_t set;
	const char *mountpoint;
	_Atomic int asked; /* a signal came (maybe before the mount) */
};

#define SIG_STOP SIGUSR2 /* ends the waiter when the loop is over */

static int unmount_now(const char *mountpoint)
{
	pid_t pid;
	int ws;

	if (geteuid() == 0)
		return umount2(mountpoint, UMOUNT_NOFOLLOW) ? -errno : 0;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", mountpoint,
		       (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &ws, 0) != pid)
		return -errno;
	return WIFEXITED(ws) && WEXITSTATUS(ws) == 0 ? 0 : -EBUSY;
}

static void *sigwaiter_main(void *arg)
{
	struct sigwaiter *w = arg;
	int sig, ret;

	for (;;) {
		if (sigwait(&w->set, &sig))
			continue;
		if (sig == SIG_STOP)
			return NULL;
		atomic_store(&w->asked, 1);
		vol_log(VOL_LOG_INFO, "%s: unmounting %s", strsignal(sig),
			w->mountpoint);
		ret = unmount_now(w->mountpoint);
		if (ret)
			vol_log(VOL_LOG_WARN,
				"cannot unmount %s: %s; still serving (close "
				"what is open there, then signal again or run "
				"sixfold umount)",
				w->mountpoint, strerror(-ret));
	}
}

/* Block the signals in this thread (and so in every thread it starts)
 * and start the waiter. */
static int sigwaiter_start(struct sigwaiter *w, const char *mountpoint)
{
	w->mountpoint = mountpoint;
	atomic_init(&w->asked, 0);
	sigemptyset(&w->set);
	sigaddset(&w->set, SIGINT);
	sigaddset(&w->set, SIGTERM);
	sigaddset(&w->set, SIGHUP);
	sigaddset(&w->set, SIG_STOP);
	signal(SIGPIPE, SIG_IGN);
	pthread_sigmask(SIG_BLOCK, &w->set, NULL);
	return -pthread_create(&w->tid, NULL, sigwaiter_main, w);
}

static void sigwaiter_stop(struct sigwaiter *w)
{
	pthread_kill(w->tid, SIG_STOP);
	pthread_join(w->tid, NULL);
}

/*
 * The mount's options for libfuse, which passes the kernel's flags
 * (noexec, sync) to mount(2); "fsname=" last, its value with ',' and
 * '\' escaped for libfuse's option parser.
 */
static char *mount_opts(const struct fs_fuse_opts *o)
{
	const char *s = o->fsname ? o->fsname : "sixfold";
	size_t n = strlen(s);
	char *out = malloc(2 * n + 128);
	char *p;

	if (!out)
		return NULL;
	p = out + sprintf(out,
			  "default_permissions,subtype=sixfold,%s%s%sfsname=",
			  o->allow_other ? "allow_other," : "",
			  o->noexec ? "noexec," : "", o->sync ? "sync," : "");
	for (; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	return out;
}

/* Write val to the knob of the backing device dev in sysfs.  0, or a
 * negative errno. */
static int bdi_set(const char *dev, const char *knob, unsigned long long val)
{
	char path[96], text[24];
	int fd, n, ret = 0;
	ssize_t w;

	snprintf(path, sizeof(path), "/sys/class/bdi/%s/%s", dev, knob);
	n = snprintf(text, sizeof(text), "%llu", val);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	w = write(fd, text, (size_t)n);
	if (w != n)
		ret = w < 0 ? -errno : -EIO;
	close(fd);
	return ret;
}

/* A quarter of the host's dirty page limit now, in bytes, or 0 if the
 * kernel does not say. */
static uint64_t dirty_cap(void)
{
	unsigned long long pages = 0;
	char line[128];
	FILE *f = fopen("/proc/vmstat", "re");
	long page = sysconf(_SC_PAGESIZE);

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "nr_dirty_threshold %llu", &pages) == 1)
			break;
	fclose(f);
	return page > 0 ? (uint64_t)pages * (uint64_t)page / 4 : 0;
}

/*
 * Tune the mount's backing device in sysfs, as root may.  Its own
 * thread: the stat that names the device is a request this daemon
 * serves once its loop runs.  A failure costs speed only, so it is a
 * notice.
 *
 * Readahead: see MAX_READAHEAD.
 *
 * Dirty pages: the kernel lets a FUSE mount hold only 1 % of the host's
 * dirty page limit (about 50 MB on a host of 24 GiB), under a strict
 * limit of its own, since a FUSE daemon may be slow or unprivileged.  A
 * database's evicted pages then reach the daemon about as fast as it
 * dirties them, and every rewrite of a hot page costs a WRITE, a
 * transaction, a share of a log batch and a materialisation; with room
 * to wait, rewrites meet in the page cache, as on a disk's file system
 * (test/bench/NOTES.md, "Room for the mount's dirty pages").  The strict
 * limit stays: the mount never takes other file systems' share, and one
 * stalled without a write quorum holds at most dirty_max_mib of memory,
 * and never more than a quarter of the host's dirty limit (dirty_cap),
 * so that it cannot hold up every other writer of a small host.
 */
static void *tune_bdi(void *arg)
{
	const struct fs_fuse_opts *o = arg;
	uint64_t want, cap;
	char dev[32];
	struct stat st;
	int ret;

	if (stat(o->mountpoint, &st))
		return NULL;
	snprintf(dev, sizeof(dev), "%u:%u", major(st.st_dev), minor(st.st_dev));
	ret = bdi_set(dev, "read_ahead_kb", MAX_READAHEAD >> 10);
	if (ret)
		vol_log(VOL_LOG_INFO,
			"readahead left at the kernel's default "
			"(/sys/class/bdi/%s/read_ahead_kb: %s)",
			dev, strerror(-ret));
	if (!o->dirty_max_mib)
		return NULL;
	want = (uint64_t)o->dirty_max_mib << 20;
	cap = dirty_cap();
	if (cap && want > cap) {
		vol_log(VOL_LOG_INFO,
			"dirty_max lowered from %u to %llu MiB, a quarter of "
			"the host's dirty page limit",
			o->dirty_max_mib, (unsigned long long)(cap >> 20));
		want = cap;
	}
	ret = bdi_set(dev, "max_bytes", want);
	if (ret)
		vol_log(VOL_LOG_INFO,
			"dirty page limit left at the kernel's default "
			"(/sys/class/bdi/%s/max_bytes: %s)",
			dev, strerror(-ret));
	return NULL;
}

int fs_fuse_run(struct vol *v, const struct fs_fuse_opts *o)
{
	struct fuse_loop_config *cfg = NULL;
	struct fuse_session *se = NULL;
	struct served sv = { .fs = NULL };
	struct fs *fs = NULL;
	char *opts = mount_opts(o);
	char *argv[] = { "sixfold", "-o", opts, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct sigwaiter sw;
	pthread_t tuner;
	int ret, mounted = 0, waiting = 0, readied = 0, tuning = 0;

	if (!opts)
		return -ENOMEM;
	ret = fs_vfs_open(v, &fs);
	if (ret) {
		vol_log(VOL_LOG_ERR, "cannot open the filesystem: %s",
			strerror(-ret));
		goto out;
	}
	ret = -EIO;
	sv.fs = fs;
	se = fuse_session_new(&args, &ops, sizeof(ops), &sv);
	sv.se = se;
	if (!se) {
		vol_log(VOL_LOG_ERR, "cannot start a FUSE session");
		goto out;
	}
	cfg = fuse_loop_cfg_create();
	if (!cfg) {
		ret = -ENOMEM;
		goto out;
	}
	/* Idle workers stay (libfuse's default): starting one costs more
	 * than it saves. */
	fuse_loop_cfg_set_max_threads(cfg, MAX_THREADS);
	/* Before any other thread starts: they inherit its signal mask. */
	ret = sigwaiter_start(&sw, o->mountpoint);
	if (ret) {
		vol_log(VOL_LOG_ERR, "cannot start the signal thread: %s",
			strerror(-ret));
		goto out;
	}
	waiting = 1;
	/* Before the mount: a mount that cannot start never appears. */
	ret = o->ready ? o->ready(o->ready_arg, fs) : 0;
	if (ret)
		goto out;
	readied = 1;
	ret = -EIO;
	if (fuse_session_mount(se, o->mountpoint)) {
		vol_log(VOL_LOG_ERR,
			"cannot mount on %s (does it exist, and is /dev/fuse "
			"usable?)",
			o->mountpoint);
		goto out;
	}
	mounted = 1;
	if (uring_enabled()) {
		ret = uring_start(&sv, fuse_session_fd(se));
		if (ret)
			vol_log(VOL_LOG_WARN,
				"FUSE requests stay on /dev/fuse, not io_uring: "
				"%s",
				strerror(-ret));
	}
	/* The INIT exchange passes through io_read and io_writev. */
	if (fuse_session_custom_io(se, &custom_io, fuse_session_fd(se))) {
		vol_log(VOL_LOG_ERR,
			"cannot serve %s: libfuse refused its "
			"device I/O hooks (out of memory?)",
			o->mountpoint);
		ret = -EIO;
		goto out;
	}
	ret = 0;
	if (o->serving)
		o->serving(o->ready_arg);
	/* A signal while it was not mounted yet could not unmount it. */
	if (atomic_load(&sw.asked) && unmount_now(o->mountpoint))
		vol_log(VOL_LOG_WARN, "cannot unmount %s after a signal",
			o->mountpoint);
	tuning = !pthread_create(&tuner, NULL, tune_bdi, (void *)o);
	/* It ends when the kernel closes the device (an unmount). */
	ret = fuse_session_loop_mt(se, cfg) < 0 ? -EIO : 0;
	if (tuning)
		pthread_join(tuner, NULL);
out:
	uring_stop(&sv);
	if (readied && o->stopping)
		o->stopping(o->ready_arg);
	if (waiting)
		sigwaiter_stop(&sw);
	if (cfg)
		fuse_loop_cfg_destroy(cfg);
	if (mounted)
		fuse_session_unmount(se);
	if (se)
		fuse_session_destroy(se);
	if (fs) {
		int c = fs_vfs_close(fs);

		if (c)
			vol_log(VOL_LOG_ERR,
				"the filesystem did not close cleanly: %s",
				strerror(-c));
		if (!ret)
			ret = c;
	}
	fuse_opt_free_args(&args); /* libfuse may have added to them */
	free(opts);
	return ret;
}
