/*
 * fs_mount_main.c - `sixfold mount`, `sixfold umount`, `sixfold fsck`
 * (and `mount.sixfold`, which mount(8) runs for fstab lines of type
 * sixfold).  Program wiring: options, the key, daemonising, exit codes.
 * Exit status: 0 done, 1 failed, 2 wrong key, 64 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_check.h"
#include "fs/fs_fuse.h"
#include "fs/fs_mountinfo.h"
#include "fs/fs_vfs.h"
#include "keys/keys.h"
#include "repair/repair.h"
#include "volume/volume.h"

#define EXIT_USAGE 64
#define EXIT_KEY 2
#define UMOUNT_WAIT_S 600 /* a daemon flushing a big log may take long */
#define SCRUB_RATE_MAX 100000 /* MB/s: -o scrub_rate above it is a typo */

int fs_main_mount(int argc, char **argv);
int fs_main_umount(int argc, char **argv);
int fs_main_fsck(int argc, char **argv);

static int open_error(int ret)
{
	if (ret == -EKEYREJECTED) {
		fprintf(stderr, "sixfold: wrong passphrase or key file: no key "
				"slot of this volume opens with it\n");
		return EXIT_KEY;
	}
	fprintf(stderr, "sixfold: cannot open the volume: %s\n",
		strerror(-ret));
	return 1;
}

/* ---- mount ---- */

struct mount_args {
	const char *key_file;
	int foreground;
	int fake; /* mount(8)'s -f, given to mount.sixfold: do nothing */
	int allow_other;
	int noexec, sync; /* fs_fuse_opts: the kernel's mount flags */
	int64_t write_timeout_ms;
	uint32_t scrub_rate_mb; /* background scrub, 0: none */
	uint32_t dirty_max_mib; /* fs_fuse_opts.dirty_max_mib */
	char volume[PATH_MAX];
	char mountpoint[PATH_MAX];
};

/* The whole number text, from 0 to max, into *out: 0, or -EINVAL
 * (empty, not a number, trailing text, out of range). */
static int opt_uint(const char *text, long max, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(text, &end, 10);
	if (end == text || *end || errno || n < 0 || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}

/*
 * Options a user (or fstab, through mount(8)) may give with -o.  noexec
 * and sync go to the kernel's mount as they would on any file system;
 * the other generic mount(8) options are accepted and ignored, so fstab
 * lines may carry them (the mount is always nosuid and nodev).
 */
static int parse_opts(char *list, struct mount_args *a)
{
	static const char *const ignored[] = {
		"rw",
		"defaults",
		"auto",
		"noauto",
		"nofail",
		"_netdev",
		"user",
		"nouser",
		"users",
		"dev",
		"nodev",
		"suid",
		"nosuid",
		"atime",
		"noatime",
		"relatime",
		"default_permissions",
		NULL,
	};
	char *save = NULL;

	for (char *o = strtok_r(list, ",", &save); o;
	     o = strtok_r(NULL, ",", &save)) {
		int known = 0;

		if (!strncmp(o, "key-file=", 9)) {
			a->key_file = o + 9;
			continue;
		}
		if (!strncmp(o, "write-timeout=", 14)) {
			long s;

			if (opt_uint(o + 14, 86400 * 365, &s)) {
				fprintf(stderr,
					"sixfold: write-timeout=%s: give whole "
					"seconds up to a year, 0 to wait "
					"forever\n",
					o + 14);
				return -EINVAL;
			}
			a->write_timeout_ms = s ? (int64_t)s * 1000 : -1;
			continue;
		}
		if (!strncmp(o, "scrub_rate=", 11)) {
			long r;

			if (opt_uint(o + 11, SCRUB_RATE_MAX, &r)) {
				fprintf(stderr,
					"sixfold: scrub_rate=%s: give whole "
					"MB/s up to %d, or 0 for no background "
					"scrub (default %d)\n",
					o + 11, SCRUB_RATE_MAX,
					REPAIR_SCRUB_RATE_DEFAULT);
				return -EINVAL;
			}
			a->scrub_rate_mb = (uint32_t)r;
			continue;
		}
		if (!strncmp(o, "dirty_max=", 10)) {
			long m;

			if (opt_uint(o + 10, FS_FUSE_DIRTY_MAX_LIMIT, &m)) {
				fprintf(stderr,
					"sixfold: dirty_max=%s: give whole MiB "
					"up to %u, or 0 for the kernel's own "
					"limit (default %u)\n",
					o + 10, FS_FUSE_DIRTY_MAX_LIMIT,
					FS_FUSE_DIRTY_MAX_DEFAULT);
				return -EINVAL;
			}
			a->dirty_max_mib = (uint32_t)m;
			continue;
		}
		if (!strcmp(o, "allow_other")) {
			a->allow_other = 1;
			continue;
		}
		if (!strcmp(o, "noexec") || !strcmp(o, "exec")) {
			a->noexec = o[0] == 'n';
			continue;
		}
		if (!strcmp(o, "sync") || !strcmp(o, "async")) {
			a->sync = o[0] == 's';
			continue;
		}
		if (!strcmp(o, "ro")) {
			fprintf(stderr, "sixfold: read-only mounts are not "
					"supported yet; mount without ro\n");
			return -EINVAL;
		}
		for (int i = 0; ignored[i]; i++)
			known |= !strcmp(o, ignored[i]);
		if (!known) {
			fprintf(stderr,
				"sixfold: unknown mount option '%s' (see "
				"sixfold(8), MOUNT OPTIONS)\n",
				o);
			return -EINVAL;
		}
	}
	return 0;
}

static int mount_usage(FILE *f)
{
	fprintf(f, "usage: sixfold mount [-f] [--key-file FILE] [-o OPTIONS] "
		   "VOLUME MOUNTPOINT\n"
		   "  VOLUME: any one zone directory of the volume\n"
		   "  -f: stay in the foreground (default: return once the "
		   "mount is ready)\n"
		   "  -o: allow_other, noexec, sync, key-file=FILE, "
		   "write-timeout=SECONDS, scrub_rate=MB/s, dirty_max=MiB\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

static int parse_mount(int argc, char **argv, struct mount_args *a)
{
	static const struct option lopts[] = {
		{ "key-file", required_argument, NULL, 'k' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct stat st;
	int c;

	const char *base = strrchr(argv[0], '/');
	int helper = !strcmp(base ? base + 1 : argv[0], "mount.sixfold");

	a->write_timeout_ms = -1;
	a->scrub_rate_mb = REPAIR_SCRUB_RATE_DEFAULT;
	a->dirty_max_mib = FS_FUSE_DIRTY_MAX_DEFAULT;
	while ((c = getopt_long(argc, argv, "fo:k:hsnvN:t:", lopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'k':
			a->key_file = optarg;
			break;
		case 'f': /* mount(8) passes its "fake" -f to helpers */
			if (helper)
				a->fake = 1;
			else
				a->foreground = 1;
			break;
		case 'N': /* mount(8) helpers' namespace and type options */
		case 't':
			break;
		case 'o':
			if (parse_opts(optarg, a))
				return EXIT_USAGE;
			break;
		case 's': /* mount(8) helpers' -s (sloppy), -n, -v */
		case 'n':
		case 'v':
			break;
		case 'h':
			return mount_usage(stdout) - 1;
		default:
			return mount_usage(stderr);
		}
	}
	if (argc - optind != 2)
		return mount_usage(stderr);
	if (!realpath(argv[optind], a->volume)) {
		fprintf(stderr,
			"sixfold: %s: %s (give a zone directory of "
			"the volume)\n",
			argv[optind], strerror(errno));
		return 1;
	}
	if (!realpath(argv[optind + 1], a->mountpoint)) {
		fprintf(stderr,
			"sixfold: mount point %s: %s (make the "
			"directory first)\n",
			argv[optind + 1], strerror(errno));
		return 1;
	}
	if (stat(a->mountpoint, &st) || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "sixfold: mount point %s is not a directory\n",
			a->mountpoint);
		return 1;
	}
	return 0;
}

/* Daemon mode: the parent waits on this pipe for one status byte. */
static int ready_fd = -1;

static void syslog_msg(int level, const char *msg)
{
	syslog(level == VOL_LOG_ERR  ? LOG_ERR :
	       level == VOL_LOG_WARN ? LOG_WARNING :
				       LOG_INFO,
	       "%s", msg);
}

/* The mount is up: the waiting parent exits 0; we detach from the tty. */
static void mount_ready(void)
{
	int null;
	char ok = 0;

	if (ready_fd < 0)
		return;
	openlog("sixfold", LOG_PID, LOG_DAEMON);
	vol_set_log(syslog_msg);
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		(void)dup2(null, STDIN_FILENO);
		(void)dup2(null, STDOUT_FILENO);
		(void)dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (write(ready_fd, &ok, 1) != 1)
		syslog(LOG_WARNING, "the mount command did not wait for us");
	close(ready_fd);
	ready_fd = -1;
}

/* What the daemon runs beside the filesystem: repair and its socket. */
struct daemon {
	const struct mount_args *a;
	struct vol *v;
	struct fs *fs; /* set once the mount is up */
	struct repair *r;
	struct repair_ctl *ctl;
};

/* repair_opts.name_of: the file that holds a block, for its reports. */
static int daemon_name_of(void *arg, uint64_t lba, char *buf, size_t len)
{
	struct daemon *d = arg;

	return fs_vfs_name_of_lba(d->fs, lba, buf, len);
}

/*
 * The filesystem is open, not yet mounted: start repair (the zone
 * watcher, healing, the background scrub) and its control socket.  A
 * control socket that cannot be made ends the mount before it appears:
 * without it nobody could see or steer the repair.
 */
static int daemon_start(void *arg, struct fs *fs)
{
	struct daemon *d = arg;
	struct repair_opts ro = { 0 };
	int ret;

	d->fs = fs;
	ro.scrub_rate_mb = d->a->scrub_rate_mb;
	ro.name_of = daemon_name_of;
	ro.name_arg = d;
	ret = repair_start(d->v, &ro, &d->r);
	if (ret) {
		vol_log(VOL_LOG_ERR, "cannot start the repair thread: %s",
			strerror(-ret));
		return ret;
	}
	ret = repair_ctl_start(d->r, d->a->volume, &d->ctl);
	if (ret) {
		vol_log(VOL_LOG_ERR,
			"no control socket, so the mount of %s is given up",
			d->a->volume);
		repair_stop(d->r);
		d->r = NULL;
		return ret;
	}
	return 0;
}

/* The mount is up: tell the waiting parent. */
static void daemon_serving(void *arg)
{
	(void)arg;
	mount_ready();
}

/* The mount ended: the socket goes first, then repair (it may be
 * naming files), both before the filesystem and the volume close. */
static void daemon_stop(void *arg)
{
	struct daemon *d = arg;

	if (d->ctl)
		repair_ctl_stop(d->ctl);
	if (d->r)
		repair_stop(d->r);
	d->ctl = NULL;
	d->r = NULL;
}

/* Fork; the parent returns the child's status once it is ready or dead. */
static int daemonise(void)
{
	int p[2];
	pid_t pid;
	char st;
	ssize_t n;

	if (pipe(p)) {
		perror("sixfold: pipe");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("sixfold: fork");
		return 1;
	}
	if (pid == 0) {
		close(p[0]);
		ready_fd = p[1];
		if (setsid() < 0)
			perror("sixfold: setsid");
		return -1; /* the child goes on */
	}
	close(p[1]);
	do {
		n = read(p[0], &st, 1);
	} while (n < 0 && errno == EINTR);
	close(p[0]);
	if (n == 1)
		return st;
	/* No byte: it failed (its message is on our stderr) or died. */
	{
		int ws;

		if (waitpid(pid, &ws, 0) == pid && WIFEXITED(ws))
			return WEXITSTATUS(ws) ? WEXITSTATUS(ws) : 1;
	}
	return 1;
}

int fs_main_mount(int argc, char **argv)
{
	struct mount_args a = { 0 };
	struct key_source src;
	struct vol_open_opts vo = { 0 };
	struct fs_fuse_opts fo = { 0 };
	struct daemon d = { 0 };
	const char *paths[1];
	struct vol *v;
	int ret = parse_mount(argc, argv, &a), status;

	if (ret)
		return ret < 0 ? 0 : ret;
	if (a.fake)
		return 0;
	/*
	 * Blocks are allocated by one thread and freed by another all day
	 * long; with glibc's default of 8 arenas per core each keeps its
	 * own freed memory, and the daemon's resident size settles far
	 * above what it uses.  Two arenas keep it close (issue 5 memory).
	 */
	if (!mallopt(M_ARENA_MAX, 2))
		syslog(LOG_NOTICE, "sixfold: mallopt(M_ARENA_MAX) refused");
	if (key_init())
		return 1;
	if (key_main_read(a.key_file, "Passphrase: ", 0, &src))
		return 1;
	if (!a.foreground) {
		status = daemonise();
		if (status >= 0) {
			key_source_release(&src);
			return status;
		}
		if (chdir("/"))
			perror("sixfold: chdir /");
	}
	paths[0] = a.volume;
	vo.paths = paths;
	vo.npaths = 1;
	vo.key = &src;
	vo.write_timeout_ms = a.write_timeout_ms;
	ret = vol_open(&vo, &v);
	key_source_release(&src);
	if (ret) {
		status = open_error(ret);
		if (ready_fd >= 0) {
			char st = (char)status;

			if (write(ready_fd, &st, 1) != 1)
				perror("sixfold: status pipe");
		}
		return status;
	}
	fo.mountpoint = a.mountpoint;
	fo.fsname = a.volume;
	fo.allow_other = a.allow_other;
	fo.noexec = a.noexec;
	fo.sync = a.sync;
	fo.dirty_max_mib = a.dirty_max_mib;
	d.a = &a;
	d.v = v;
	fo.ready = daemon_start;
	fo.serving = daemon_serving;
	fo.stopping = daemon_stop;
	fo.ready_arg = &d;
	ret = fs_fuse_run(v, &fo);
	if (vol_close(v) && !ret)
		ret = -EIO;
	if (ret)
		vol_log(VOL_LOG_ERR, "sixfold on %s stopped with an error: %s",
			a.mountpoint, strerror(-ret));
	return ret ? 1 : 0;
}

/* ---- umount ---- */

/* pid of the daemon holding the volume at source, if on this host. */
static pid_t holder_pid(const char *source)
{
	const char *paths[1] = { source };
	struct vol_info *in = malloc(sizeof(*in));
	char host[256] = "", who[256] = "";
	long pid = 0;

	if (!in)
		return 0;
	if (!vol_status(paths, 1, in) &&
	    sscanf(in->holder, "pid %ld on %255s", &pid, who) == 2 &&
	    (gethostname(host, sizeof(host)) || strcmp(host, who)))
		pid = 0;
	free(in);
	return (pid_t)pid;
}

/* 1 while pid runs (a zombie has exited: its locks are released). */
static int running(pid_t pid)
{
	char path[64], buf[256];
	FILE *f;
	char *p;
	int run = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		p = strrchr(buf, ')'); /* the name may hold spaces */
		run = p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
	}
	fclose(f);
	return run;
}

int fs_main_umount(int argc, char **argv)
{
	char path[PATH_MAX], source[PATH_MAX];
	pid_t pid, child;
	int ws, ret;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(argc == 2 && !strcmp(argv[1], "--help") ? stdout :
								  stderr,
			"usage: sixfold umount MOUNTPOINT\n");
		return argc == 2 && !strcmp(argv[1], "--help") ? 0 : EXIT_USAGE;
	}
	if (!realpath(argv[1], path)) {
		fprintf(stderr, "sixfold: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	ret = fs_mountinfo_source(path, source, sizeof(source));
	if (ret) {
		fprintf(stderr, "sixfold: %s is not %s\n", path,
			ret == -EINVAL ? "a sixfold mount" : "a mount point");
		return 1;
	}
	pid = holder_pid(source);
	child = fork();
	if (child < 0) {
		perror("sixfold: fork");
		return 1;
	}
	if (child == 0) {
		execlp("fusermount3", "fusermount3", "-u", path, (char *)NULL);
		perror("sixfold: fusermount3 (is the fuse3 package installed?)");
		_exit(127);
	}
	if (waitpid(child, &ws, 0) != child || !WIFEXITED(ws) ||
	    WEXITSTATUS(ws)) {
		fprintf(stderr,
			"sixfold: %s was not unmounted (files still "
			"open there? see fuser -m %s)\n",
			path, path);
		return 1;
	}
	/* The daemon now writes back and closes the volume: wait for it, so
	 * the volume can be mounted again as soon as we return. */
	for (int i = 0; pid > 0 && i < UMOUNT_WAIT_S * 20; i++) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		if (!running(pid))
			return 0;
		nanosleep(&ts, NULL);
	}
	if (pid > 0 && running(pid)) {
		fprintf(stderr,
			"sixfold: unmounted, but the daemon (pid %d) is still "
			"writing the volume back after %d s\n",
			(int)pid, UMOUNT_WAIT_S);
		return 1;
	}
	return 0;
}

/* ---- fsck ---- */

static void print_problem(void *arg, const char *msg)
{
	(void)arg;
	printf("  problem: %s\n", msg);
}

int fs_main_fsck(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "key-file", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *key_file = NULL;
	struct vol_open_opts vo = { 0 };
	struct fs_check_report r = { 0 };
	struct key_source src;
	struct fs_store *st;
	char volume[PATH_MAX];
	const char *paths[1] = { volume };
	struct vol *v;
	int c, ret;

	while ((c = getopt_long(argc, argv, "k:h", lopts, NULL)) != -1) {
		if (c == 'k') {
			key_file = optarg;
			continue;
		}
		fprintf(c == 'h' ? stdout : stderr,
			"usage: sixfold fsck [--key-file FILE] VOLUME\n");
		return c == 'h' ? 0 : EXIT_USAGE;
	}
	if (argc - optind != 1) {
		fprintf(stderr,
			"usage: sixfold fsck [--key-file FILE] VOLUME\n");
		return EXIT_USAGE;
	}
	if (!realpath(argv[optind], volume)) {
		fprintf(stderr, "sixfold: %s: %s\n", argv[optind],
			strerror(errno));
		return 1;
	}
	if (key_init() || key_main_read(key_file, "Passphrase: ", 0, &src))
		return 1;
	vo.paths = paths;
	vo.npaths = 1;
	vo.key = &src;
	vo.readonly = 1;
	vo.write_timeout_ms = -1;
	ret = vol_open(&vo, &v);
	key_source_release(&src);
	if (ret)
		return open_error(ret);
	ret = fs_vfs_has_fs(v);
	if (ret == 0) {
		printf("%s: no filesystem yet (the first mount makes it); "
		       "nothing to check\n",
		       volume);
		return vol_close(v) ? 1 : 0;
	}
	ret = ret < 0 ? ret : fs_store_open(v, NULL, &st);
	if (ret) {
		fprintf(stderr,
			"sixfold: no filesystem could be opened on %s: "
			"%s\n",
			volume, strerror(-ret));
		if (vol_close(v))
			fprintf(stderr, "sixfold: the volume did not close "
					"cleanly either\n");
		return 1;
	}
	printf("checking %s\n", volume);
	ret = fs_check(st, print_problem, NULL, &r);
	printf("%" PRIu64 " inodes (%" PRIu64 " directories, %" PRIu64
	       " files, %" PRIu64 " symlinks, %" PRIu64 " other), %" PRIu64
	       " entries, %" PRIu64 " extents mapping %" PRIu64
	       " blocks, %" PRIu64 " xattrs, %" PRIu64
	       " orphans (freed at the next mount)\n",
	       r.inodes, r.dirs, r.files, r.symlinks, r.specials, r.entries,
	       r.extents, r.data_blocks, r.xattrs, r.orphans);
	if (fs_store_close(st) && !ret)
		ret = -EIO;
	if (vol_close(v) && !ret)
		ret = -EIO;
	if (ret == -EUCLEAN) {
		printf("%s: %" PRIu64 " problems found\n", volume, r.problems);
		return 1;
	}
	if (ret) {
		fprintf(stderr, "sixfold: fsck could not finish: %s\n",
			strerror(-ret));
		return 1;
	}
	printf("%s: clean\n", volume);
	return 0;
}
