/*
 * repair_ctl.c - the daemon's control channel: a Unix stream socket at
 * DIR/control, DIR being the zone directory the volume was mounted from,
 * through which `sixfold status|scrub|zone` reach the running daemon.
 *
 * Layer: repair/, above volume/.  The socket is the only way in: no
 * network port.  It is mode 0600 and every peer's credentials are
 * checked (SO_PEERCRED): only root or the user the daemon runs as may
 * use it.
 *
 * Protocol (both sides are here): the client connects, writes one
 * request line, and reads until the daemon closes.  Requests:
 *   status text | status json | status scrub
 *   scrub start [deep] | scrub stop
 *   zone offline N | zone online N | zone replace N DIR
 * Replies: the rendered status, "ok ...\n", or "error: MESSAGE\n"; the
 * first line decides the client's exit status.  Requests are served one
 * at a time on one thread, each with a time limit for reading the
 * request and writing the reply, so a stuck client cannot hold the
 * daemon.  Paths longer than sun_path are reached through
 * /proc/self/fd/N/control, N a descriptor of DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "repair/repair.h"

#define CTL_NAME "control" /* the socket's name in the zone directory */
#define CTL_REQ_MAX (VOL_PATH_MAX + 64) /* longest request line */
#define CTL_SERVE_TIMEOUT_S 5 /* a client's time to send and to read */
#define CTL_CLIENT_TIMEOUT_S 120 /* the daemon's time to answer */
#define CTL_BACKLOG 16

struct repair_ctl {
	struct repair *r;
	char dir[PATH_MAX]; /* the zone directory (for messages) */
	int dirfd; /* O_PATH descriptor of dir */
	int lfd; /* listening socket */
	int stop[2]; /* pipe: a byte on stop[1] ends the thread */
	uid_t uid; /* the daemon's user */
	pthread_t tid;
};

/* sun_path of DIR/control through the descriptor dirfd of DIR. */
static void ctl_addr(int dirfd, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s",
		 dirfd, CTL_NAME);
}

/* Connect to the socket in the directory dirfd: a socket or -errno. */
static int ctl_connect(int dirfd)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	ctl_addr(dirfd, &sa);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static void set_timeouts(int fd, int seconds)
{
	struct timeval tv = { seconds, 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- the daemon's side ---- */

/*
 * One request line (without its newline) into buf, within seconds in
 * all: 0 or -errno.  The limit is for the whole line, not for each
 * receive (SO_RCVTIMEO's): a client sending a byte every few seconds
 * held the one control thread, and every other command, for an hour.
 */
static int read_request(int fd, char *buf, size_t cap, int seconds)
{
	struct timespec t0, t;
	size_t len = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (len < cap - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left;
		ssize_t n;

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = seconds * 1000L - (long)(t.tv_sec - t0.tv_sec) * 1000 -
		       (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = '\0';
	if (!strchr(buf, '\n'))
		return len == cap - 1 ? -E2BIG : -EPROTO;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* Zone number of a request's word: 0..5, or -1. */
static int zone_arg(const char *s)
{
	char *end;
	long z;

	if (!s)
		return -1;
	z = strtol(s, &end, 10);
	if (end == s || *end || z < 0 || z >= VOL_ZONES)
		return -1;
	return (int)z;
}

/* Render the status into f (a memory stream). */
static void do_status(struct repair_ctl *c, const char *what, FILE *f)
{
	struct repair_info *ri = malloc(sizeof(*ri));
	char host[HOST_NAME_MAX + 1];
	int ret;

	if (!ri) {
		fprintf(f, "error: the daemon is out of memory\n");
		return;
	}
	ret = repair_info(c->r, ri);
	if (ret) {
		fprintf(f,
			"error: the daemon could not read the volume's "
			"state: %s\n",
			strerror(-ret));
		goto out;
	}
	if (!ri->vol.holder[0]) {
		if (gethostname(host, sizeof(host)))
			snprintf(host, sizeof(host), "unknown");
		host[sizeof(host) - 1] = '\0';
		snprintf(ri->vol.holder, sizeof(ri->vol.holder),
			 "pid %ld on %s (the daemon serving the mount)",
			 (long)getpid(), host);
	}
	if (!strcmp(what, "scrub"))
		repair_scrub_print(f, ri);
	else
		repair_status_print(f, ri, !strcmp(what, "json"));
out:
	free(ri);
}

static void do_scrub(struct repair_ctl *c, char **w, FILE *f)
{
	int deep = w[2] && !strcmp(w[2], "deep");
	int ret;

	if (!strcmp(w[1], "start") && (!w[2] || deep)) {
		ret = repair_scrub_start(c->r, deep);
		if (ret == -EALREADY)
			fprintf(f,
				"error: a scrub is already running (sixfold "
				"scrub stop MOUNTPOINT stops it; sixfold scrub "
				"status MOUNTPOINT shows how far it is)\n");
		else if (ret)
			fprintf(f, "error: the scrub could not start: %s\n",
				strerror(-ret));
		else
			fprintf(f, "ok %sscrub started\n", deep ? "deep " : "");
		return;
	}
	if (!strcmp(w[1], "stop") && !w[2]) {
		ret = repair_scrub_stop(c->r);
		if (ret == -ENOENT)
			fprintf(f, "error: no scrub is running (sixfold scrub "
				   "status MOUNTPOINT shows the last one)\n");
		else if (ret)
			fprintf(f, "error: the scrub could not stop: %s\n",
				strerror(-ret));
		else
			fprintf(f, "ok scrub stopped; sixfold scrub start "
				   "MOUNTPOINT resumes it where it stopped\n");
		return;
	}
	fprintf(f, "error: bad request: scrub %s\n", w[1]);
}

/* The words a user can act on for an errno of a zone command. */
static void zone_error(FILE *f, const char *verb, int z, int ret)
{
	switch (ret) {
	case -EBUSY:
		if (!strcmp(verb, "offline")) {
			fprintf(f,
				"error: zone %d cannot go offline: fewer than "
				"%d zones would remain, writes would stop\n",
				z, VOL_WRITE_QUORUM);
			return;
		}
		fprintf(f,
			"error: zone %d cannot be %s now: the volume needs it "
			"(fewer than %d other zones take writes); bring "
			"another zone back first\n",
			z, !strcmp(verb, "replace") ? "replaced" : "changed",
			VOL_WRITE_QUORUM);
		return;
	case -EALREADY:
		fprintf(f, "error: zone %d is already %s\n", z,
			!strcmp(verb, "offline") ? "offline" :
			!strcmp(verb, "online")	 ? "online" :
						   "being replaced");
		return;
	case -ENOTEMPTY:
	case -EEXIST:
		fprintf(f,
			"error: zone %d: the new directory is not empty (or "
			"holds a zone already): give an empty or new "
			"directory\n",
			z);
		return;
	case -EACCES:
	case -EPERM:
	case -EROFS:
		fprintf(f,
			"error: zone %d: the daemon may not write there (%s): "
			"fix the permissions or give another directory\n",
			z, strerror(-ret));
		return;
	case -ENOSPC:
		fprintf(f,
			"error: zone %d: no space for a zone there (%s): free "
			"space or give another disk\n",
			z, strerror(-ret));
		return;
	default:
		fprintf(f, "error: zone %d could not be %s: %s\n", z,
			!strcmp(verb, "replace") ? "replaced" :
			!strcmp(verb, "offline") ? "taken offline" :
						   "brought online",
			strerror(-ret));
	}
}

static void do_zone(struct repair_ctl *c, char **w, const char *rest, FILE *f)
{
	int z = zone_arg(w[2]);
	int ret;

	if (z < 0) {
		fprintf(f, "error: no zone %s: zones are 0 to %d\n",
			w[2] ? w[2] : "(none)", VOL_ZONES - 1);
		return;
	}
	if (!strcmp(w[1], "offline") && !w[3]) {
		ret = repair_zone_offline(c->r, z);
		if (!ret)
			fprintf(f,
				"ok zone %d is offline; writes go on without "
				"it; sixfold zone online MOUNTPOINT %d brings "
				"it back\n",
				z, z);
	} else if (!strcmp(w[1], "online") && !w[3]) {
		ret = repair_zone_online(c->r, z);
		if (!ret)
			fprintf(f,
				"ok zone %d is back; it resyncs what it "
				"missed (sixfold status MOUNTPOINT shows the "
				"progress)\n",
				z);
	} else if (!strcmp(w[1], "replace") && rest && rest[0] == '/') {
		ret = repair_zone_replace(c->r, z, rest);
		if (!ret)
			fprintf(f,
				"ok zone %d is now %s; it is being rebuilt "
				"(sixfold status MOUNTPOINT shows the "
				"progress)\n",
				z, rest);
	} else {
		fprintf(f, "error: bad request: zone %s\n", w[1]);
		return;
	}
	if (ret)
		zone_error(f, w[1], z, ret);
}

/*
 * Split req into up to 4 words (w[], NULL after the last); *rest points
 * at what follows the third word (zone replace's directory, which may
 * hold spaces).
 */
static void split(char *req, char **w, const char **rest)
{
	char *p = req;

	*rest = NULL;
	for (int i = 0; i < 4; i++)
		w[i] = NULL;
	for (int i = 0; i < 4 && *p; i++) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		if (i == 3) {
			*rest = p;
			w[3] = p;
			break;
		}
		w[i] = p;
		p += strcspn(p, " ");
		if (*p)
			*p++ = '\0';
	}
}

static void handle(struct repair_ctl *c, char *req, FILE *f)
{
	char *w[4];
	const char *rest;

	split(req, w, &rest);
	if (w[0] && w[1] && !strcmp(w[0], "status") && !w[2] &&
	    (!strcmp(w[1], "text") || !strcmp(w[1], "json") ||
	     !strcmp(w[1], "scrub")))
		do_status(c, w[1], f);
	else if (w[0] && w[1] && !strcmp(w[0], "scrub"))
		do_scrub(c, w, f);
	else if (w[0] && w[1] && !strcmp(w[0], "zone"))
		do_zone(c, w, rest, f);
	else
		fprintf(f,
			"error: the daemon does not know the request '%s' (is "
			"this sixfold program newer than the running daemon? "
			"remount with it)\n",
			req);
}

static void serve(struct repair_ctl *c, int fd)
{
	char req[CTL_REQ_MAX];
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;
	int ret;

	set_timeouts(fd, CTL_SERVE_TIMEOUT_S);
	ret = read_request(fd, req, sizeof(req), CTL_SERVE_TIMEOUT_S);
	if (ret) {
		vol_log(VOL_LOG_WARN, "control socket %s/%s: a bad request: %s",
			c->dir, CTL_NAME, strerror(-ret));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) ||
	    (cr.uid != 0 && cr.uid != c->uid)) {
		static const char no[] =
			"error: permission denied: only root or the user who "
			"mounted the volume may use it\n";

		(void)send_all(fd, no, sizeof(no) - 1);
		return;
	}
	f = open_memstream(&out, &outlen);
	if (!f) {
		static const char no[] = "error: the daemon is out of memory\n";

		(void)send_all(fd, no, sizeof(no) - 1);
		return;
	}
	handle(c, req, f);
	if (fclose(f) || !out) {
		free(out);
		return;
	}
	ret = send_all(fd, out, outlen);
	if (ret)
		vol_log(VOL_LOG_WARN,
			"control socket %s/%s: the reply was not taken: %s",
			c->dir, CTL_NAME, strerror(-ret));
	free(out);
}

static void *ctl_main(void *arg)
{
	struct repair_ctl *c = arg;
	struct pollfd p[2] = { { c->lfd, POLLIN, 0 },
			       { c->stop[0], POLLIN, 0 } };

	for (;;) {
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			vol_log(VOL_LOG_ERR,
				"control socket %s/%s: poll: %s; the control "
				"channel stops (remount to get it back)",
				c->dir, CTL_NAME, strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* gone already, or EAGAIN */
		serve(c, fd);
		close(fd);
	}
	return NULL;
}

/*
 * Make DIR/control ours: a socket someone answers on is refused
 * (-EBUSY: another daemon serves this zone), a stale one removed, any
 * other file there refused (-EEXIST).
 */
static int claim_name(struct repair_ctl *c)
{
	struct stat st;
	int fd;

	if (fstatat(c->dirfd, CTL_NAME, &st, AT_SYMLINK_NOFOLLOW)) {
		if (errno == ENOENT)
			return 0;
		vol_log(VOL_LOG_ERR, "control socket %s/%s: %s", c->dir,
			CTL_NAME, strerror(errno));
		return -errno;
	}
	if (!S_ISSOCK(st.st_mode)) {
		vol_log(VOL_LOG_ERR,
			"%s/%s exists and is not a socket: move it away, the "
			"daemon's control socket goes there",
			c->dir, CTL_NAME);
		return -EEXIST;
	}
	fd = ctl_connect(c->dirfd);
	if (fd >= 0) {
		close(fd);
		vol_log(VOL_LOG_ERR,
			"another sixfold daemon answers on %s/%s: is this "
			"volume mounted already? (sixfold status %s)",
			c->dir, CTL_NAME, c->dir);
		return -EBUSY;
	}
	if (unlinkat(c->dirfd, CTL_NAME, 0) && errno != ENOENT) {
		vol_log(VOL_LOG_ERR,
			"cannot remove the stale control socket %s/%s: %s",
			c->dir, CTL_NAME, strerror(errno));
		return -errno;
	}
	return 0;
}

static int ctl_listen(struct repair_ctl *c)
{
	struct sockaddr_un sa;
	int ret;

	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->lfd < 0)
		return -errno;
	ret = claim_name(c);
	if (ret)
		return ret;
	ctl_addr(c->dirfd, &sa);
	if (bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		vol_log(VOL_LOG_ERR, "cannot make the control socket %s/%s: %s",
			c->dir, CTL_NAME, strerror(-ret));
		return ret;
	}
	/* Credentials are checked per request too: the mode is the fence
	 * others meet first. */
	if (fchmodat(c->dirfd, CTL_NAME, 0600, 0) ||
	    listen(c->lfd, CTL_BACKLOG)) {
		ret = -errno;
		vol_log(VOL_LOG_ERR, "control socket %s/%s: %s", c->dir,
			CTL_NAME, strerror(-ret));
		(void)unlinkat(c->dirfd, CTL_NAME, 0);
		return ret;
	}
	return 0;
}

static void ctl_free(struct repair_ctl *c)
{
	if (c->lfd >= 0)
		close(c->lfd);
	if (c->dirfd >= 0)
		close(c->dirfd);
	if (c->stop[0] >= 0)
		close(c->stop[0]);
	if (c->stop[1] >= 0)
		close(c->stop[1]);
	free(c);
}

int repair_ctl_start(struct repair *r, const char *dir, struct repair_ctl **out)
{
	struct repair_ctl *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->r = r;
	c->lfd = c->dirfd = c->stop[0] = c->stop[1] = -1;
	c->uid = geteuid();
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	c->dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		ret = -errno;
		vol_log(VOL_LOG_ERR, "control socket: %s: %s", dir,
			strerror(-ret));
		goto out_free;
	}
	if (pipe2(c->stop, O_CLOEXEC)) {
		ret = -errno;
		goto out_free;
	}
	ret = ctl_listen(c);
	if (ret)
		goto out_free;
	ret = -pthread_create(&c->tid, NULL, ctl_main, c);
	if (ret) {
		(void)unlinkat(c->dirfd, CTL_NAME, 0);
		goto out_free;
	}
	*out = c;
	return 0;
out_free:
	ctl_free(c);
	return ret;
}

void repair_ctl_stop(struct repair_ctl *c)
{
	char b = 0;

	if (!c)
		return;
	while (write(c->stop[1], &b, 1) < 0 && errno == EINTR)
		;
	pthread_join(c->tid, NULL);
	if (unlinkat(c->dirfd, CTL_NAME, 0) && errno != ENOENT)
		vol_log(VOL_LOG_WARN,
			"cannot remove the control socket %s/%s: %s", c->dir,
			CTL_NAME, strerror(errno));
	ctl_free(c);
}

/* ---- the client's side ---- */

int repair_ctl_request(const char *dir, const char *req, char **reply)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int dirfd, fd, ret;

	*reply = NULL;
	dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	fd = ctl_connect(dirfd);
	close(dirfd);
	if (fd < 0)
		return fd;
	set_timeouts(fd, CTL_CLIENT_TIMEOUT_S);
	ret = send_all(fd, req, strlen(req));
	if (!ret)
		ret = send_all(fd, "\n", 1);
	while (!ret) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb = realloc(buf, cap + 65536);

			if (!nb) {
				ret = -ENOMEM;
				break;
			}
			buf = nb;
			cap += 65536;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
		else if (n == 0)
			break;
		else
			len += (size_t)n;
	}
	close(fd);
	if (ret) {
		free(buf);
		return ret;
	}
	if (!buf)
		buf = calloc(1, 1);
	if (!buf)
		return -ENOMEM;
	buf[len] = '\0';
	*reply = buf;
	return 0;
}
