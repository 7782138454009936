/*
 * scratch.c - the scratch directory of unit tests that make a real volume
 * (see scratch.h).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/scratch.h"

struct scratch scratch;

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void scratch_cleanup(void)
{
	if (scratch.dir[0])
		nftw(scratch.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	scratch.dir[0] = 0;
}

static void on_fatal(int sig)
{
	scratch_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

int scratch_setup(const char *name)
{
	snprintf(scratch.dir, sizeof(scratch.dir), "/tmp/sixfold-%s-XXXXXX",
		 name);
	if (!mkdtemp(scratch.dir)) {
		scratch.dir[0] = 0;
		return -errno;
	}
	atexit(scratch_cleanup);
	signal(SIGABRT, on_fatal);
	signal(SIGSEGV, on_fatal);
	signal(SIGTERM, on_fatal);
	signal(SIGINT, on_fatal);
	for (int z = 0; z < VOL_ZONES; z++) {
		char dir[sizeof(scratch.dir)];

		/* A copy: -Wrestrict cannot tell the fields apart. */
		memcpy(dir, scratch.dir, sizeof(dir));
		snprintf(scratch.zone[z], sizeof(scratch.zone[z]), "%s/z%d",
			 dir, z);
		scratch.zone_paths[z] = scratch.zone[z];
	}
	if (key_init())
		return -EIO;
	key_random(scratch.key_bytes, sizeof(scratch.key_bytes));
	scratch.key = (struct key_source){
		.kind = KEY_KIND_KEYFILE,
		.secret = scratch.key_bytes,
		.secret_len = sizeof(scratch.key_bytes),
	};
	return 0;
}
