/*
 * mirrorfs.c - plain copies over FUSE, for the benchmark only
 * (test/bench/suite.py, its "mirror" target): every change made through
 * the mount is made in each of N backing directories, and an fsync
 * returns once all N copies have been fdatasync'ed (or fsync'ed), the N
 * flushes issued at once through io_uring.  No log, no encryption, no
 * checksums, no recovery: the least any system keeping N synchronous
 * copies of a file system behind FUSE does, so that sixfold's figures for
 * the jobs the six-copy limit has no figure for (pgbench, reads) can be
 * read against it.  Not part of sixfold; nothing outside test/ may use it.
 *
 *   mirrorfs DIR1 ... DIRn MOUNTPOINT [-f] [-d] [-o allow_other] [...]
 *
 * 2 to MIRROR_MAX backing directories, each empty or a copy of the
 * others (mirrorfs never compares them).  Reads, getattr, readdir and
 * the like are served from DIR1; every change goes to DIR1 first, then
 * to the others, and the first copy's result is the answer (a copy that
 * fails where DIR1 did not makes the operation fail with EIO).  Mounted
 * with the kernel caches sixfold asks for: the writeback cache and kept
 * page cache.
 *
 * Exit status: fuse_main's (0 after a clean unmount), 64 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "passfs.h"

#define EXIT_USAGE 64
#define MIRROR_MAX 8
#define THREAD_OPTS "max_threads=64,max_idle_threads=16" /* FUSE workers */

static struct {
	int n; /* backing directories */
	int root_fd[MIRROR_MAX];
} g;

/* An open regular file: one descriptor per copy. */
struct mfile {
	int fd[MIRROR_MAX];
};

/*
 * Each FUSE worker's ring for its fsyncs, made on its first fsync and
 * torn down when libfuse ends the thread (it ends idle workers).
 */
static pthread_key_t ring_key;

static struct mfile *mfile_of(const struct fuse_file_info *fi)
{
	return (struct mfile *)(uintptr_t)fi->fh;
}

/*
 * An open directory: the first copy's listing, and every copy's
 * descriptor for fsyncdir (whose path libfuse may leave out).
 */
struct mdir {
	DIR *d; /* owns fd[0] */
	int fd[MIRROR_MAX];
};

static struct mdir *mdir_of(const struct fuse_file_info *fi)
{
	return (struct mdir *)(uintptr_t)fi->fh;
}

/*
 * The answer to a change made on every copy: copy 0's result r0 (0 or
 * -errno), unless another copy failed where copy 0 did not.
 */
static int merge(int r0, int r)
{
	return r0 ? r0 : r ? -EIO : 0;
}

/* ---- operations on paths: made on every copy ---- */

/*
 * Return the merged result of expr, evaluated with fd_ set to each
 * copy's backing directory in turn (expr: a call that sets errno).
 */

#define RETURN_EACH_COPY(expr)                        \
	do {                                          \
		int r0 = 0;                           \
		for (int c = 0; c < g.n; c++) {       \
			int fd_ = g.root_fd[c];       \
			int r_ = (expr) ? -errno : 0; \
			r0 = c ? merge(r0, r_) : r_;  \
		}                                     \
		return r0;                            \
	} while (0)

static int mf_mknod(const char *path, mode_t mode, dev_t rdev)
{
	RETURN_EACH_COPY(mknodat(fd_, passfs_rel(path), mode, rdev));
}

static int mf_mkdir(const char *path, mode_t mode)
{
	RETURN_EACH_COPY(mkdirat(fd_, passfs_rel(path), mode));
}

static int mf_unlink(const char *path)
{
	RETURN_EACH_COPY(unlinkat(fd_, passfs_rel(path), 0));
}

static int mf_rmdir(const char *path)
{
	RETURN_EACH_COPY(unlinkat(fd_, passfs_rel(path), AT_REMOVEDIR));
}

static int mf_symlink(const char *target, const char *path)
{
	RETURN_EACH_COPY(symlinkat(target, fd_, passfs_rel(path)));
}

static int mf_rename(const char *from, const char *to, unsigned int flags)
{
	RETURN_EACH_COPY(
		renameat2(fd_, passfs_rel(from), fd_, passfs_rel(to), flags));
}

static int mf_link(const char *from, const char *to)
{
	RETURN_EACH_COPY(linkat(fd_, passfs_rel(from), fd_, passfs_rel(to), 0));
}

/* ---- operations on open files: made on every copy's descriptor ---- */

/* The same with fd_ set to each copy's descriptor of the open file fi. */
#define RETURN_EACH_FD(fi, expr)                      \
	do {                                          \
		struct mfile *f_ = mfile_of(fi);      \
		int r0 = 0;                           \
		for (int c = 0; c < g.n; c++) {       \
			int fd_ = f_->fd[c];          \
			int r_ = (expr) ? -errno : 0; \
			r0 = c ? merge(r0, r_) : r_;  \
		}                                     \
		return r0;                            \
	} while (0)

static int mf_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (fi)
		RETURN_EACH_FD(fi, fchmod(fd_, mode));
	RETURN_EACH_COPY(fchmodat(fd_, passfs_rel(path), mode, 0));
}

static int mf_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	if (fi)
		RETURN_EACH_FD(fi, fchown(fd_, uid, gid));
	RETURN_EACH_COPY(
		fchownat(fd_, passfs_rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

/* truncate(2) of a path under one backing directory. */
static int truncate_at(int dirfd, const char *path, off_t size)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = ftruncate(fd, size);
	if (r) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return close(fd);
}

static int mf_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (fi)
		RETURN_EACH_FD(fi, ftruncate(fd_, size));
	RETURN_EACH_COPY(truncate_at(fd_, passfs_rel(path), size));
}

static int mf_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	if (fi)
		RETURN_EACH_FD(fi, futimens(fd_, tv));
	RETURN_EACH_COPY(
		utimensat(fd_, passfs_rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

static int mf_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	(void)path;
	RETURN_EACH_FD(fi, fallocate(fd_, mode, off, len));
}

/* ---- opening ---- */

/*
 * The writeback cache may read a page of a file opened write-only (to
 * fill it around a partial write), and it appends by itself: every copy
 * is opened for reading too, and without O_APPEND.  Nor O_DIRECT: the
 * copies go through the page cache (FUSE's buffers are not aligned for
 * it), and an fsync is what makes them durable.
 */
static int open_flags(int flags)
{
	if ((flags & O_ACCMODE) == O_WRONLY)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	return (flags & ~(O_APPEND | O_DIRECT)) | O_CLOEXEC;
}

static int open_all(const char *path, int flags, mode_t mode,
		    struct fuse_file_info *fi)
{
	struct mfile *f = malloc(sizeof(*f));
	int ret = 0, c;

	if (!f)
		return -ENOMEM;
	for (c = 0; c < g.n; c++) {
		f->fd[c] = openat(g.root_fd[c], passfs_rel(path),
				  open_flags(flags), mode);
		if (f->fd[c] < 0) {
			ret = c ? -EIO : -errno;
			break;
		}
	}
	if (ret) {
		while (c--)
			close(f->fd[c]);
		free(f);
		return ret;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

static int mf_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return open_all(path, fi->flags | O_CREAT, mode, fi);
}

static int mf_open(const char *path, struct fuse_file_info *fi)
{
	return open_all(path, fi->flags, 0, fi);
}

static int mf_release(const char *path, struct fuse_file_info *fi)
{
	struct mfile *f = mfile_of(fi);

	(void)path;
	for (int c = 0; c < g.n; c++)
		close(f->fd[c]);
	free(f);
	return 0;
}

/* ---- data ---- */

static int mf_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	ssize_t n = pread(mfile_of(fi)->fd[0], buf, size, off);

	(void)path;
	return n < 0 ? -errno : (int)n;
}

/* All of buf at off in fd, or -errno. */
static int write_full(int fd, const char *buf, size_t size, off_t off)
{
	while (size) {
		ssize_t n = pwrite(fd, buf, size, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		size -= (size_t)n;
		off += n;
	}
	return 0;
}

static int mf_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct mfile *f = mfile_of(fi);
	int r0 = 0;

	(void)path;
	for (int c = 0; c < g.n; c++) {
		int r = write_full(f->fd[c], buf, size, off);

		r0 = c ? merge(r0, r) : r;
	}
	return r0 ? r0 : (int)size;
}

static void ring_free(void *ring)
{
	io_uring_queue_exit(ring);
	free(ring);
}

static struct io_uring *thread_ring(int *err)
{
	struct io_uring *ring = pthread_getspecific(ring_key);

	*err = 0;
	if (ring)
		return ring;
	ring = malloc(sizeof(*ring));
	if (!ring) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = io_uring_queue_init(MIRROR_MAX, ring, 0);
	if (!*err)
		*err = -pthread_setspecific(ring_key, ring);
	if (*err) {
		free(ring);
		return NULL;
	}
	return ring;
}

/*
 * fdatasync (or fsync) of every fd at once: one io_uring request each,
 * which the kernel's workers run in parallel; returns when all are done.
 */
static int sync_all(const int *fd, int datasync)
{
	struct io_uring *ring;
	int r0 = 0, got = 0, ret;

	ring = thread_ring(&ret);
	if (!ring)
		return ret;
	for (int c = 0; c < g.n; c++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		io_uring_prep_fsync(sqe, fd[c],
				    datasync ? IORING_FSYNC_DATASYNC : 0);
		io_uring_sqe_set_data64(sqe, (uint64_t)c);
	}
	ret = io_uring_submit(ring);
	if (ret != g.n) {
		ret = ret < 0 ? ret : -EIO;
		goto broken;
	}
	while (got < g.n) {
		struct io_uring_cqe *cqe;
		int r;

		ret = io_uring_wait_cqe(ring, &cqe);
		if (ret == -EINTR)
			continue;
		if (ret)
			goto broken;
		r = cqe->res < 0 ? cqe->res : 0;
		r0 = io_uring_cqe_get_data64(cqe) == 0 ? (r0 ? r0 : r) :
							 merge(r0, r);
		io_uring_cqe_seen(ring, cqe);
		got++;
	}
	return r0;
broken:
	/* A ring in an unknown state is not reused: the next call makes one. */
	if (pthread_setspecific(ring_key, NULL))
		abort(); /* cannot fail for a key that holds a value */
	ring_free(ring);
	return ret;
}

static int mf_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	return sync_all(mfile_of(fi)->fd, datasync);
}

static int mf_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return passfs_flush(mfile_of(fi)->fd[0]);
}

static off_t mf_lseek(const char *path, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	off_t r = lseek(mfile_of(fi)->fd[0], off, whence);

	(void)path;
	return r < 0 ? -errno : r;
}

/* ---- served from the first copy ---- */

static void *mf_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	if (conn->capable & FUSE_CAP_WRITEBACK_CACHE)
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	cfg->use_ino = 1; /* the first copy's inode numbers */
	cfg->nullpath_ok = 1; /* handle ops need no path ... */
	cfg->hard_remove = 1; /* ... so unlink really unlinks */
	cfg->kernel_cache = 1; /* keep the page cache across opens */
	return NULL;
}

static int mf_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	int r;

	if (fi)
		r = fstat(mfile_of(fi)->fd[0], st);
	else
		r = fstatat(g.root_fd[0], passfs_rel(path), st,
			    AT_SYMLINK_NOFOLLOW);
	return r ? -errno : 0;
}

static int mf_access(const char *path, int mask)
{
	return faccessat(g.root_fd[0], passfs_rel(path), mask, 0) ? -errno : 0;
}

static int mf_readlink(const char *path, char *buf, size_t size)
{
	return passfs_readlink(g.root_fd[0], passfs_rel(path), buf, size);
}

static int mf_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(g.root_fd[0], st) ? -errno : 0;
}

static void mdir_free(struct mdir *m, int nfd)
{
	if (m->d)
		closedir(m->d);
	else if (nfd > 0)
		close(m->fd[0]);
	for (int c = 1; c < nfd; c++)
		close(m->fd[c]);
	free(m);
}

static int mf_opendir(const char *path, struct fuse_file_info *fi)
{
	struct mdir *m = calloc(1, sizeof(*m));
	int c, ret;

	if (!m)
		return -ENOMEM;
	for (c = 0; c < g.n; c++) {
		m->fd[c] = openat(g.root_fd[c], passfs_rel(path),
				  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (m->fd[c] < 0) {
			ret = c ? -EIO : -errno;
			goto fail;
		}
	}
	m->d = fdopendir(m->fd[0]);
	if (!m->d) {
		ret = -errno;
		goto fail;
	}
	fi->fh = (uint64_t)(uintptr_t)m;
	return 0;
fail:
	mdir_free(m, c);
	return ret;
}

static int mf_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	(void)path;
	(void)flags;
	return passfs_readdir(mdir_of(fi)->d, buf, fill, off);
}

static int mf_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	mdir_free(mdir_of(fi), g.n);
	return 0;
}

/* A directory's fsync: every copy's, at once. */
static int mf_fsyncdir(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	(void)path;
	return sync_all(mdir_of(fi)->fd, datasync);
}

static const struct fuse_operations mf_ops = {
	.init = mf_init,
	.getattr = mf_getattr,
	.access = mf_access,
	.readlink = mf_readlink,
	.mknod = mf_mknod,
	.mkdir = mf_mkdir,
	.unlink = mf_unlink,
	.rmdir = mf_rmdir,
	.symlink = mf_symlink,
	.rename = mf_rename,
	.link = mf_link,
	.chmod = mf_chmod,
	.chown = mf_chown,
	.truncate = mf_truncate,
	.utimens = mf_utimens,
	.create = mf_create,
	.open = mf_open,
	.read = mf_read,
	.write = mf_write,
	.statfs = mf_statfs,
	.flush = mf_flush,
	.release = mf_release,
	.fsync = mf_fsync,
	.fallocate = mf_fallocate,
	.lseek = mf_lseek,
	.opendir = mf_opendir,
	.readdir = mf_readdir,
	.releasedir = mf_releasedir,
	.fsyncdir = mf_fsyncdir,
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mirrorfs DIR1 ... DIRn MOUNTPOINT [-f] [-d] "
		"[-o allow_other] [FUSE options]\n"
		"  DIR1 at MOUNTPOINT, every change made in all of DIR1..DIRn "
		"(2 to %d),\n"
		"  an fsync done once every copy is flushed (benchmark tool)\n",
		MIRROR_MAX);
}

int main(int argc, char **argv)
{
	char **fargv;
	int npos = 1, ret, fi = 0;

	if (argc >= 2 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	while (npos < argc && argv[npos][0] != '-')
		npos++;
	g.n = npos - 2; /* argv[1 .. npos-2] copies, argv[npos-1] mount */
	if (g.n < 2 || g.n > MIRROR_MAX) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (int c = 0; c < g.n; c++) {
		g.root_fd[c] =
			open(argv[c + 1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (g.root_fd[c] < 0) {
			fprintf(stderr, "mirrorfs: %s: %s\n", argv[c + 1],
				strerror(errno));
			return EXIT_USAGE;
		}
	}

	ret = pthread_key_create(&ring_key, ring_free);
	if (ret) {
		fprintf(stderr, "mirrorfs: pthread_key_create: %s\n",
			strerror(ret));
		return 1;
	}

	/* fuse_main sees: mirrorfs MOUNTPOINT -o THREAD_OPTS [options]. */
	fargv = calloc((size_t)argc + 2, sizeof(*fargv));
	if (!fargv)
		return 1;
	fargv[fi++] = argv[0];
	fargv[fi++] = argv[npos - 1];
	fargv[fi++] = "-o";
	fargv[fi++] = THREAD_OPTS;
	for (int i = npos; i < argc; i++)
		fargv[fi++] = argv[i];
	umask(0);
	ret = fuse_main(fi, fargv, &mf_ops, NULL);
	free(fargv);
	for (int c = 0; c < g.n; c++)
		close(g.root_fd[c]);
	return ret;
}
