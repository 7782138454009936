/*
 * repair_main.c - `sixfold status`, `sixfold scrub` and `sixfold zone`:
 * the repair commands (option parsing and wiring only, STYLE 2).
 *
 * A mounted volume is asked through its daemon's control socket
 * (repair_ctl.c) in the zone directory it was mounted from, found in
 * /proc/self/mountinfo; status of a volume no daemon serves here is read
 * from its zones.  Exit status: 0 done (status: whatever the health),
 * 1 failed, 64 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_mountinfo.h"
#include "repair/repair.h"
#include "volume/volume.h"

#define EXIT_USAGE 64

/* What a volume argument led to. */
enum reach {
	REACH_DAEMON, /* the daemon answered: *reply */
	REACH_OFFLINE, /* no daemon serves it here: ri from the zones */
	REACH_FAILED, /* a message was printed */
};

/* ---- messages ---- */

/* A message that names MOUNTPOINT gets the user's own argument. */
static void put_msg(FILE *f, const char *msg, const char *arg)
{
	const char *p;

	while ((p = strstr(msg, "MOUNTPOINT"))) {
		fprintf(f, "%.*s%s", (int)(p - msg), msg, arg);
		msg = p + strlen("MOUNTPOINT");
	}
	fputs(msg, f);
	if (!*msg || msg[strlen(msg) - 1] != '\n')
		fputc('\n', f);
}

/* The daemon's reply: status to stdout, "ok" and "error" lines as
 * messages.  The exit status. */
static int print_reply(const char *reply, const char *arg)
{
	if (!reply[0]) {
		fprintf(stderr, "sixfold: the daemon closed the connection "
				"without an answer (its log, in syslog, may "
				"say why)\n");
		return 1;
	}
	if (!strncmp(reply, "error: ", 7)) {
		fputs("sixfold: ", stderr);
		put_msg(stderr, reply + 7, arg);
		return 1;
	}
	if (!strncmp(reply, "ok ", 3)) {
		fputs("sixfold: ", stdout);
		put_msg(stdout, reply + 3, arg);
		return 0;
	}
	fputs(reply, stdout);
	return 0;
}

/* Why the daemon at dir could not be asked (arg: what the user gave). */
static void daemon_error(const char *arg, const char *dir, int ret)
{
	switch (ret) {
	case -EACCES:
	case -EPERM:
		fprintf(stderr,
			"sixfold: %s: permission denied: only root or the user "
			"who mounted the volume may use it (its control socket "
			"is %s/control)\n",
			arg, dir);
		return;
	case -ETIMEDOUT:
		fprintf(stderr,
			"sixfold: the daemon serving %s did not answer in time; "
			"it may be stuck (see its messages in syslog)\n",
			arg);
		return;
	default:
		fprintf(stderr,
			"sixfold: the daemon serving %s does not answer on "
			"%s/control (%s): is it still running? If it died, "
			"unmount (fusermount3 -u -z %s) and mount again\n",
			arg, dir, strerror(-ret), arg);
	}
}

/* ---- finding the daemon ---- */

struct same_volume {
	const uint8_t *uuid; /* the volume's */
	char source[PATH_MAX]; /* out: the source of a mount of it */
	char mountpoint[PATH_MAX]; /* out: where */
	struct vol_info in; /* scratch */
};

static void quiet(int level, const char *msg)
{
	(void)level;
	(void)msg;
}

static int same_fn(void *arg, const char *mountpoint, const char *type,
		   const char *source)
{
	struct same_volume *s = arg;
	const char *paths[1] = { source };

	if (strcmp(type, FS_MOUNT_TYPE) || vol_status(paths, 1, &s->in) ||
	    memcmp(s->in.uuid, s->uuid, KEY_UUID_BYTES))
		return 0;
	snprintf(s->source, sizeof(s->source), "%s", source);
	snprintf(s->mountpoint, sizeof(s->mountpoint), "%s", mountpoint);
	return 1;
}

/* The sixfold mount of the volume uuid on this host: 1 (s filled), 0. */
static int find_mount_of(const uint8_t *uuid, struct same_volume *s)
{
	int ret;

	s->uuid = uuid;
	vol_set_log(quiet); /* mounts of other volumes are not our business */
	ret = fs_mountinfo_each(same_fn, s);
	vol_set_log(NULL);
	return ret > 0;
}

/*
 * Ask the daemon listening in dir (serving arg, as the user named it).
 * When it does not answer, say why; status then reads the zones
 * instead (into *ri, unless the caller filled it already).
 */
static enum reach ask(const char *dir, const char *arg, const char *req,
		      char **reply, struct repair_info **ri)
{
	const char *paths[1] = { dir };
	int ret = repair_ctl_request(dir, req, reply);

	if (!ret)
		return REACH_DAEMON;
	daemon_error(arg, dir, ret);
	if (strncmp(req, "status", 6) || ret == -EACCES || ret == -EPERM)
		return REACH_FAILED;
	if (!*ri) {
		*ri = malloc(sizeof(**ri));
		if (!*ri || repair_info_offline(paths, 1, *ri))
			return REACH_FAILED;
	}
	fprintf(stderr, "sixfold: what follows is read from the zones on "
			"disk, not from the daemon\n");
	return REACH_OFFLINE;
}

/*
 * Reach the volume that args name (a mount point, a zone directory, or
 * six zone specs): its daemon, asked req, or else its zones (status
 * into *ri, which the caller frees).
 */
static enum reach reach(char **args, int nargs, const char *req, char **reply,
			struct repair_info **ri)
{
	char rp[PATH_MAX], src[PATH_MAX];
	struct same_volume *s;
	enum reach r;
	int ret;

	*reply = NULL;
	*ri = NULL;
	if (nargs == 1 && realpath(args[0], rp)) {
		ret = fs_mountinfo_source(rp, src, sizeof(src));
		if (!ret)
			return ask(src, args[0], req, reply, ri);
		/* A zone directory whose daemon listens in it. */
		ret = repair_ctl_request(rp, req, reply);
		if (!ret)
			return REACH_DAEMON;
		if (ret == -EACCES || ret == -ETIMEDOUT) {
			daemon_error(args[0], rp, ret);
			return REACH_FAILED;
		}
	} else if (nargs == 1 && errno == ENOTCONN) {
		fprintf(stderr,
			"sixfold: %s: the daemon that served this mount is "
			"gone (%s): unmount it (fusermount3 -u -z %s) and "
			"mount the volume again\n",
			args[0], strerror(errno), args[0]);
		return REACH_FAILED;
	}
	*ri = malloc(sizeof(**ri));
	s = malloc(sizeof(*s));
	if (!*ri || !s) {
		fprintf(stderr, "sixfold: out of memory\n");
		free(s);
		return REACH_FAILED;
	}
	/* vol_status says what is wrong with a path that is no zone. */
	ret = repair_info_offline((const char *const *)args, nargs, *ri);
	if (ret) {
		if (ret != -ENOENT && ret != -EUCLEAN)
			fprintf(stderr, "sixfold: %s: %s\n", args[0],
				strerror(-ret));
		else if (strncmp(req, "status", 6))
			fprintf(stderr,
				"sixfold: %s is no sixfold mount point either: "
				"give the directory a volume is mounted on\n",
				args[0]);
		free(s);
		return REACH_FAILED;
	}
	/* Mounted from another of its zones? */
	r = REACH_OFFLINE;
	if (find_mount_of((*ri)->vol.uuid, s))
		r = ask(s->source, s->mountpoint, req, reply, ri);
	free(s);
	return r;
}

/* ---- status ---- */

static int status_usage(FILE *f)
{
	fprintf(f, "usage: sixfold status [--json] MOUNTPOINT|VOLUME\n"
		   "  MOUNTPOINT: where a volume is mounted (the daemon "
		   "answers, live)\n"
		   "  VOLUME: one zone directory, or all six (read from the "
		   "zones if no daemon serves it here)\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

int repair_main_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct repair_info *ri;
	char *reply;
	int c, json = 0, ret;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'h')
			return status_usage(stdout);
		if (c != 'j')
			return status_usage(stderr);
		json = 1;
	}
	if (argc - optind != 1 && argc - optind != VOL_ZONES)
		return status_usage(stderr);
	switch (reach(argv + optind, argc - optind,
		      json ? "status json" : "status text", &reply, &ri)) {
	case REACH_DAEMON:
		ret = print_reply(reply, argv[optind]);
		break;
	case REACH_OFFLINE:
		repair_status_print(stdout, ri, json);
		ret = 0;
		break;
	default:
		ret = 1;
	}
	free(reply);
	free(ri);
	return ret;
}

/* ---- scrub ---- */

static int scrub_usage(FILE *f)
{
	fprintf(f, "usage: sixfold scrub start [--deep] MOUNTPOINT\n"
		   "       sixfold scrub stop MOUNTPOINT\n"
		   "       sixfold scrub status [--json] MOUNTPOINT|VOLUME\n"
		   "  --deep: authenticate every copy of every block (else "
		   "copies are compared, and read only to heal)\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

static int not_mounted(const char *arg)
{
	fprintf(stderr,
		"sixfold: %s is not mounted: scrub and zone commands need the "
		"running daemon (sixfold mount %s MOUNTPOINT)\n",
		arg, arg);
	return 1;
}

int repair_main_scrub(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "deep", no_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct repair_info *ri;
	const char *verb, *req;
	char *reply;
	int c, deep = 0, json = 0, ret;

	while ((c = getopt_long(argc, argv, "djh", opts, NULL)) != -1) {
		if (c == 'h')
			return scrub_usage(stdout);
		if (c == 'd')
			deep = 1;
		else if (c == 'j')
			json = 1;
		else
			return scrub_usage(stderr);
	}
	if (argc - optind != 2)
		return scrub_usage(stderr);
	verb = argv[optind];
	if (!strcmp(verb, "start") && !json)
		req = deep ? "scrub start deep" : "scrub start";
	else if (!strcmp(verb, "stop") && !json && !deep)
		req = "scrub stop";
	else if (!strcmp(verb, "status") && !deep)
		req = json ? "status json" : "status scrub";
	else
		return scrub_usage(stderr);
	switch (reach(argv + optind + 1, 1, req, &reply, &ri)) {
	case REACH_DAEMON:
		ret = print_reply(reply, argv[optind + 1]);
		break;
	case REACH_OFFLINE:
		/* The last scrub's record is on disk: show it. */
		ret = 0;
		if (strcmp(verb, "status"))
			ret = not_mounted(argv[optind + 1]);
		else if (json)
			repair_status_print(stdout, ri, 1);
		else
			repair_scrub_print(stdout, ri);
		break;
	default:
		ret = 1;
	}
	free(reply);
	free(ri);
	return ret;
}

/* ---- zone ---- */

static int zone_usage(FILE *f)
{
	fprintf(f, "usage: sixfold zone offline MOUNTPOINT N\n"
		   "       sixfold zone online MOUNTPOINT N\n"
		   "       sixfold zone replace MOUNTPOINT N NEWDIR[,DIR...]\n"
		   "  N: the zone, 0 to 5 (sixfold status shows them)\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

/* One directory of a zone spec as an absolute path (it may not exist
 * yet: then its parent must). */
static int absolute_dir(const char *d, char *out, size_t cap)
{
	char buf[PATH_MAX], parent[PATH_MAX], *base;

	if (realpath(d, buf)) {
		if ((size_t)snprintf(out, cap, "%s", buf) >= cap)
			return -ENAMETOOLONG;
		return 0;
	}
	if (errno != ENOENT)
		return -errno;
	snprintf(buf, sizeof(buf), "%s", d);
	base = basename(buf);
	snprintf(parent, sizeof(parent), "%s", d);
	if (!realpath(dirname(parent), parent))
		return -errno;
	if ((size_t)snprintf(out, cap, "%s/%s",
			     strcmp(parent, "/") ? parent : "", base) >= cap)
		return -ENAMETOOLONG;
	return 0;
}

/* NEWDIR[,DIR...] with every directory made absolute (the daemon's
 * working directory is /). */
static int absolute_spec(const char *spec, char *out, size_t cap)
{
	char copy[VOL_PATH_MAX + 1], one[PATH_MAX];
	char *save = NULL;
	size_t len = 0;

	if (strlen(spec) > VOL_PATH_MAX || strchr(spec, '\n'))
		return -EINVAL;
	snprintf(copy, sizeof(copy), "%s", spec);
	out[0] = '\0';
	for (char *d = strtok_r(copy, ",", &save); d;
	     d = strtok_r(NULL, ",", &save)) {
		int ret = absolute_dir(d, one, sizeof(one));

		if (ret) {
			fprintf(stderr, "sixfold: %s: %s\n", d, strerror(-ret));
			return ret;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s%s",
					len ? "," : "", one);
		if (len >= cap || len > VOL_PATH_MAX)
			return -ENAMETOOLONG;
	}
	return out[0] ? 0 : -EINVAL;
}

int repair_main_zone(int argc, char **argv)
{
	struct repair_info *ri;
	char req[VOL_PATH_MAX + 64], spec[VOL_PATH_MAX + 1];
	const char *verb;
	char *reply, *end;
	long z;
	int ret;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return zone_usage(stdout);
	if (argc < 4)
		return zone_usage(stderr);
	verb = argv[1];
	if (!(argc == 4 &&
	      (!strcmp(verb, "offline") || !strcmp(verb, "online"))) &&
	    !(argc == 5 && !strcmp(verb, "replace")))
		return zone_usage(stderr);
	z = strtol(argv[3], &end, 10);
	if (end == argv[3] || *end || z < 0 || z >= VOL_ZONES) {
		fprintf(stderr,
			"sixfold: zone %s: zones are numbered 0 to %d "
			"(sixfold status MOUNTPOINT shows them)\n",
			argv[3], VOL_ZONES - 1);
		return EXIT_USAGE;
	}
	if (argc == 5) {
		ret = absolute_spec(argv[4], spec, sizeof(spec));
		if (ret) {
			if (ret != -ENOENT && ret != -EACCES)
				fprintf(stderr,
					"sixfold: %s: give a new or empty "
					"directory, or several joined with ',' "
					"(at most %d bytes, no newline)\n",
					argv[4], VOL_PATH_MAX);
			return ret == -EINVAL ? EXIT_USAGE : 1;
		}
		snprintf(req, sizeof(req), "zone replace %ld %s", z, spec);
	} else {
		snprintf(req, sizeof(req), "zone %s %ld", verb, z);
	}
	switch (reach(argv + 2, 1, req, &reply, &ri)) {
	case REACH_DAEMON:
		ret = print_reply(reply, argv[2]);
		break;
	case REACH_OFFLINE:
		ret = not_mounted(argv[2]);
		break;
	default:
		ret = 1;
	}
	free(reply);
	free(ri);
	return ret;
}
