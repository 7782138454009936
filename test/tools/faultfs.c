/*
 * faultfs.c - a fault-injecting FUSE passthrough file system, for the
 * fault tests only (test/fault): it lets a test make one sixfold zone
 * slow or failing on command.  Not part of sixfold; nothing outside
 * test/ may use it.
 *
 *   FAULTFS_CTL=CTLFILE faultfs BACKING_DIR MOUNTPOINT [-f] [-d]
 *                               [-o allow_other] [other FUSE options]
 *
 * Every file and directory of BACKING_DIR appears at MOUNTPOINT, with
 * the backing inode numbers (use_ino).  Opens pass their flags through,
 * O_DIRECT included: such a file is served with direct_io (no kernel page
 * cache), and faultfs bounces unaligned buffers through an aligned one.
 * Unlinked open files stay usable through their handles (hard_remove,
 * nullpath_ok): no .fuse_hidden files appear, but fstat(2) of an
 * unlinked file fails with ESTALE.  flock(2) is left to the kernel
 * (local locks).  Multi-threaded (fuse_main, up to 64 worker threads
 * unless -o max_threads=N says otherwise), and up to 1024 asynchronous
 * requests in flight (max_background): with the kernel's default of 12,
 * a delayed zone would block the io_uring submitter of its client as
 * soon as 12 of its O_DIRECT writes were pending, which a slow disk does
 * not do.  The kernel still makes an O_DIRECT write that extends a file
 * synchronous, so such a write blocks its submitter for the delay.
 *
 * FAULTFS_CTL (required) names the control file, which must lie OUTSIDE
 * the mount.  faultfs looks at it at most every 50 ms (stat: inode,
 * size, mtime) when an operation comes in, and re-reads it if it
 * changed.  The file holds the whole fault state; a missing file, or a
 * missing line, means no fault of that kind.  Lines (a later line wins,
 * unknown lines are ignored):
 *
 *   delay_ms N              sleep N ms before each faulted operation
 *   fail EIO|ENOSPC|EROFS   each faulted operation fails with that errno
 *   fail none               no failures (the default)
 *
 * The faulted operations: open, create, read, write, fsync, fsyncdir
 * and fallocate (a delay comes first, then the failure).  Metadata
 * operations (getattr, readdir, mkdir, rename, unlink, statfs, ...)
 * are never delayed or failed.  Write the control file to a temporary
 * name and rename it into place, so faultfs never reads half of it.
 * Each new state is logged on stderr ("faultfs: delay_ms N fail E").
 *
 * Exit status: fuse_main's (0 after a clean unmount), 64 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "passfs.h"

#define EXIT_USAGE 64
#define CTL_CHECK_MS 50 /* look at the control file at most this often */
#define DIO_ALIGN 4096 /* buffer alignment of O_DIRECT bounces */
#define MAX_BACKGROUND 1024 /* async FUSE requests in flight */
#define THREAD_OPTS "max_threads=64,max_idle_threads=16" /* FUSE workers */

static struct {
	char root[PATH_MAX]; /* absolute path of BACKING_DIR */
	int root_fd;
	const char *ctl; /* FAULTFS_CTL */
	atomic_int delay_ms;
	atomic_int fail_err; /* positive errno, 0: none */
	atomic_llong next_check_ms;
	pthread_mutex_t ctl_lock; /* one reader of the control file */
	/* identity of the control file last read, under ctl_lock */
	int ctl_seen;
	ino_t ctl_ino;
	off_t ctl_size;
	struct timespec ctl_mtime;
} g = {
	.root_fd = -1,
	.ctl_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* An open regular file: the backing fd and whether it is O_DIRECT. */
struct ffile {
	int fd;
	int direct;
};

static struct ffile *ffile_of(const struct fuse_file_info *fi)
{
	return (struct ffile *)(uintptr_t)fi->fh;
}

static DIR *dir_of(const struct fuse_file_info *fi)
{
	return (DIR *)(uintptr_t)fi->fh;
}

/* ---- fault control ---- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int errno_of(const char *name)
{
	static const struct {
		const char *name;
		int err;
	} names[] = {
		{ "none", 0 },
		{ "EIO", EIO },
		{ "ENOSPC", ENOSPC },
		{ "EROFS", EROFS },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i].name))
			return names[i].err;
	return -1;
}

/* Caller holds ctl_lock.  Read the whole state from the control file. */
static void ctl_parse(FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	int delay = 0, err = 0;

	while (getline(&line, &cap, f) >= 0) {
		char word[32];
		int n;

		if (sscanf(line, " delay_ms %d", &n) == 1 && n >= 0)
			delay = n;
		else if (sscanf(line, " fail %31s", word) == 1 &&
			 errno_of(word) >= 0)
			err = errno_of(word);
	}
	free(line);
	if (delay != atomic_load(&g.delay_ms) ||
	    err != atomic_load(&g.fail_err))
		fprintf(stderr, "faultfs: delay_ms %d fail %s\n", delay,
			err ? strerrorname_np(err) : "none");
	atomic_store(&g.delay_ms, delay);
	atomic_store(&g.fail_err, err);
}

/* Re-read the control file if it changed (at most every CTL_CHECK_MS). */
static void ctl_refresh(void)
{
	long long t = now_ms();
	struct stat st;
	FILE *f;

	if (t < atomic_load(&g.next_check_ms))
		return;
	if (pthread_mutex_trylock(&g.ctl_lock))
		return; /* another thread is at it: use the current state */
	atomic_store(&g.next_check_ms, t + CTL_CHECK_MS);
	if (stat(g.ctl, &st)) {
		if (g.ctl_seen &&
		    (atomic_load(&g.delay_ms) || atomic_load(&g.fail_err)))
			fprintf(stderr, "faultfs: %s gone: no faults\n", g.ctl);
		g.ctl_seen = 0;
		atomic_store(&g.delay_ms, 0);
		atomic_store(&g.fail_err, 0);
		goto out;
	}
	if (g.ctl_seen && st.st_ino == g.ctl_ino && st.st_size == g.ctl_size &&
	    st.st_mtim.tv_sec == g.ctl_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == g.ctl_mtime.tv_nsec)
		goto out;
	f = fopen(g.ctl, "re");
	if (!f)
		goto out; /* try again next time */
	g.ctl_seen = 1;
	g.ctl_ino = st.st_ino;
	g.ctl_size = st.st_size;
	g.ctl_mtime = st.st_mtim;
	ctl_parse(f);
	fclose(f);
out:
	pthread_mutex_unlock(&g.ctl_lock);
}

/* Before each faulted operation: the delay, then 0 or -errno to fail. */
static int fault_gate(void)
{
	int ms, err;

	ctl_refresh();
	ms = atomic_load(&g.delay_ms);
	if (ms > 0)
		sleep_ms(ms);
	err = atomic_load(&g.fail_err);
	return err ? -err : 0;
}

/* ---- operations ---- */

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/*
	 * Room for many requests in flight: past max_background the
	 * kernel blocks whoever starts the next async request (an io_uring
	 * submitter, say), which a slow disk would not do.
	 */
	conn->max_background = MAX_BACKGROUND;
	conn->congestion_threshold = MAX_BACKGROUND * 3 / 4;
	cfg->use_ino = 1; /* the backing inode numbers */
	cfg->nullpath_ok = 1; /* handle ops need no path ... */
	cfg->hard_remove = 1; /* ... so unlink really unlinks */
	cfg->direct_io = 0; /* page cache unless the open asks O_DIRECT */
	return NULL;
}

static int ff_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	int r;

	if (fi)
		r = fstat(ffile_of(fi)->fd, st);
	else
		r = fstatat(g.root_fd, passfs_rel(path), st,
			    AT_SYMLINK_NOFOLLOW);
	return r ? -errno : 0;
}

static int ff_access(const char *path, int mask)
{
	return faccessat(g.root_fd, passfs_rel(path), mask, 0) ? -errno : 0;
}

static int ff_readlink(const char *path, char *buf, size_t size)
{
	return passfs_readlink(g.root_fd, passfs_rel(path), buf, size);
}

static int ff_mknod(const char *path, mode_t mode, dev_t rdev)
{
	return mknodat(g.root_fd, passfs_rel(path), mode, rdev) ? -errno : 0;
}

static int ff_mkdir(const char *path, mode_t mode)
{
	return mkdirat(g.root_fd, passfs_rel(path), mode) ? -errno : 0;
}

static int ff_unlink(const char *path)
{
	return unlinkat(g.root_fd, passfs_rel(path), 0) ? -errno : 0;
}

static int ff_rmdir(const char *path)
{
	return unlinkat(g.root_fd, passfs_rel(path), AT_REMOVEDIR) ? -errno : 0;
}

static int ff_symlink(const char *target, const char *path)
{
	return symlinkat(target, g.root_fd, passfs_rel(path)) ? -errno : 0;
}

static int ff_rename(const char *from, const char *to, unsigned int flags)
{
	if (renameat2(g.root_fd, passfs_rel(from), g.root_fd, passfs_rel(to),
		      flags))
		return -errno;
	return 0;
}

static int ff_link(const char *from, const char *to)
{
	return linkat(g.root_fd, passfs_rel(from), g.root_fd, passfs_rel(to),
		      0) ?
		       -errno :
		       0;
}

static int ff_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int r;

	if (fi)
		r = fchmod(ffile_of(fi)->fd, mode);
	else
		r = fchmodat(g.root_fd, passfs_rel(path), mode, 0);
	return r ? -errno : 0;
}

static int ff_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	int r;

	if (fi)
		r = fchown(ffile_of(fi)->fd, uid, gid);
	else
		r = fchownat(g.root_fd, passfs_rel(path), uid, gid,
			     AT_SYMLINK_NOFOLLOW);
	return r ? -errno : 0;
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	char full[PATH_MAX];
	int r;

	if (fi) {
		r = ftruncate(ffile_of(fi)->fd, size);
	} else {
		if ((size_t)snprintf(full, sizeof(full), "%s/%s", g.root,
				     passfs_rel(path)) >= sizeof(full))
			return -ENAMETOOLONG;
		r = truncate(full, size);
	}
	return r ? -errno : 0;
}

static int ff_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	int r;

	if (fi)
		r = futimens(ffile_of(fi)->fd, tv);
	else
		r = utimensat(g.root_fd, passfs_rel(path), tv,
			      AT_SYMLINK_NOFOLLOW);
	return r ? -errno : 0;
}

/* Wrap a freshly opened fd into fi (closes it on failure). */
static int ffile_attach(int fd, struct fuse_file_info *fi)
{
	struct ffile *f;

	if (fd < 0)
		return -errno;
	f = malloc(sizeof(*f));
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->direct = !!(fi->flags & O_DIRECT);
	if (f->direct)
		fi->direct_io = 1; /* the kernel must not cache it either */
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

static int ff_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int ret = fault_gate();

	if (ret)
		return ret;
	return ffile_attach(
		openat(g.root_fd, passfs_rel(path), fi->flags, mode), fi);
}

static int ff_open(const char *path, struct fuse_file_info *fi)
{
	int ret = fault_gate();

	if (ret)
		return ret;
	return ffile_attach(openat(g.root_fd, passfs_rel(path), fi->flags), fi);
}

/* O_DIRECT wants an aligned buffer: NULL if buf will do, else a bounce. */
static void *bounce_for(const struct ffile *f, const void *buf, size_t size,
			int *err)
{
	void *b = NULL;

	*err = 0;
	if (!f->direct || !((uintptr_t)buf % DIO_ALIGN))
		return NULL;
	*err = posix_memalign(&b, DIO_ALIGN, size ? size : 1);
	return *err ? NULL : b;
}

static int ff_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct ffile *f = ffile_of(fi);
	int ret = fault_gate();
	void *b;
	ssize_t n;

	(void)path;
	if (ret)
		return ret;
	b = bounce_for(f, buf, size, &ret);
	if (ret)
		return -ret;
	n = pread(f->fd, b ? b : buf, size, off);
	if (n < 0)
		ret = -errno;
	else if (b)
		memcpy(buf, b, n);
	free(b);
	return ret ? ret : (int)n;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ffile *f = ffile_of(fi);
	int ret = fault_gate();
	void *b;
	ssize_t n;

	(void)path;
	if (ret)
		return ret;
	b = bounce_for(f, buf, size, &ret);
	if (ret)
		return -ret;
	if (b)
		memcpy(b, buf, size);
	n = pwrite(f->fd, b ? b : buf, size, off);
	if (n < 0)
		ret = -errno;
	free(b);
	return ret ? ret : (int)n;
}

static int ff_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(g.root_fd, st) ? -errno : 0;
}

static int ff_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return passfs_flush(ffile_of(fi)->fd);
}

static int ff_release(const char *path, struct fuse_file_info *fi)
{
	struct ffile *f = ffile_of(fi);

	(void)path;
	close(f->fd);
	free(f);
	return 0;
}

static int ff_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	int fd = ffile_of(fi)->fd;
	int ret = fault_gate();

	(void)path;
	if (ret)
		return ret;
	return (datasync ? fdatasync(fd) : fsync(fd)) ? -errno : 0;
}

static int ff_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	int ret = fault_gate();

	(void)path;
	if (ret)
		return ret;
	return fallocate(ffile_of(fi)->fd, mode, off, len) ? -errno : 0;
}

static off_t ff_lseek(const char *path, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	off_t r = lseek(ffile_of(fi)->fd, off, whence);

	(void)path;
	return r < 0 ? -errno : r;
}

static int ff_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(g.root_fd, passfs_rel(path), O_RDONLY | O_DIRECTORY);
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	(void)path;
	(void)flags;
	return passfs_readdir(dir_of(fi), buf, fill, off);
}

static int ff_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir(dir_of(fi));
	return 0;
}

static int ff_fsyncdir(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	int fd = dirfd(dir_of(fi));
	int ret = fault_gate();

	(void)path;
	if (ret)
		return ret;
	return (datasync ? fdatasync(fd) : fsync(fd)) ? -errno : 0;
}

static const struct fuse_operations ff_ops = {
	.init = ff_init,
	.getattr = ff_getattr,
	.access = ff_access,
	.readlink = ff_readlink,
	.mknod = ff_mknod,
	.mkdir = ff_mkdir,
	.unlink = ff_unlink,
	.rmdir = ff_rmdir,
	.symlink = ff_symlink,
	.rename = ff_rename,
	.link = ff_link,
	.chmod = ff_chmod,
	.chown = ff_chown,
	.truncate = ff_truncate,
	.utimens = ff_utimens,
	.create = ff_create,
	.open = ff_open,
	.read = ff_read,
	.write = ff_write,
	.statfs = ff_statfs,
	.flush = ff_flush,
	.release = ff_release,
	.fsync = ff_fsync,
	.fallocate = ff_fallocate,
	.lseek = ff_lseek,
	.opendir = ff_opendir,
	.readdir = ff_readdir,
	.releasedir = ff_releasedir,
	.fsyncdir = ff_fsyncdir,
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: FAULTFS_CTL=CTLFILE faultfs BACKING_DIR MOUNTPOINT "
		"[-f] [-d] [-o allow_other] [FUSE options]\n"
		"  a passthrough of BACKING_DIR at MOUNTPOINT (test tool)\n"
		"  CTLFILE (outside the mount, re-read within 50 ms of a "
		"change):\n"
		"    delay_ms N             sleep N ms before each open, "
		"create, read, write,\n"
		"                           fsync, fsyncdir, fallocate\n"
		"    fail EIO|ENOSPC|EROFS  fail each of them with that errno\n"
		"    fail none              no failures\n");
}

int main(int argc, char **argv)
{
	char **fargv;
	int ret;

	if (argc >= 2 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 3 || argv[1][0] == '-') {
		usage(stderr);
		return EXIT_USAGE;
	}
	g.ctl = getenv("FAULTFS_CTL");
	if (!g.ctl || !*g.ctl) {
		fprintf(stderr, "faultfs: FAULTFS_CTL is not set\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!realpath(argv[1], g.root)) {
		fprintf(stderr, "faultfs: %s: %s\n", argv[1], strerror(errno));
		return EXIT_USAGE;
	}
	g.root_fd = open(g.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g.root_fd < 0) {
		fprintf(stderr, "faultfs: %s: %s\n", g.root, strerror(errno));
		return EXIT_USAGE;
	}
	ctl_refresh(); /* start with the state the file gives now */

	/*
	 * fuse_main sees: faultfs MOUNTPOINT -o THREAD_OPTS [options]
	 * (BACKING_DIR taken out).  The thread limits are set explicitly,
	 * as libfuse 3.14 complains of its own default max_idle_threads;
	 * an option given later on the command line wins.
	 */
	fargv = calloc(argc + 2, sizeof(*fargv));
	if (!fargv)
		return 1;
	fargv[0] = argv[0];
	fargv[1] = argv[2];
	fargv[2] = "-o";
	fargv[3] = THREAD_OPTS;
	for (int i = 3; i < argc; i++)
		fargv[i + 1] = argv[i];
	umask(0);
	ret = fuse_main(argc + 1, fargv, &ff_ops, NULL);
	free(fargv);
	close(g.root_fd);
	return ret;
}
