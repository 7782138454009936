/*
 * scratch.c - the scratch directory of unit tests that make a real volume
 * (see scratch.h).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>

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

int scratch_mkfs(const char *name, uint64_t max, char dirs[VOL_ZONES][128],
		 const char *paths[VOL_ZONES])
{
	struct vol_mkfs_opts o = {
		.log_blocks = 2048,
		.key = &scratch.key,
		.max_blocks = max,
	};

	for (int z = 0; z < VOL_ZONES; z++) {
		snprintf(dirs[z], 128, "%s/%s/z%d", scratch.dir, name, z);
		paths[z] = dirs[z];
		o.zones[z] = dirs[z];
	}
	return vol_mkfs(&o, NULL);
}

int scratch_open(struct vol **v, int readonly, const char *const *paths,
		 int npaths, int64_t timeout_ms)
{
	struct vol_open_opts o = {
		.paths = paths,
		.npaths = npaths,
		.key = &scratch.key,
		.readonly = readonly,
		.write_timeout_ms = timeout_ms,
	};

	*v = NULL;
	return vol_open(&o, v);
}

int scratch_check_run(struct vol *v, uint64_t lba, uint32_t n, uint32_t ver,
		      const char *when)
{
	uint8_t got[VOL_BLOCK_BYTES], exp[VOL_BLOCK_BYTES];
	int bad = 0;

	for (uint32_t i = 0; i < n; i++) {
		int ret = vol_read(v, lba + i, got);

		if (ver)
			scratch_fill(exp, lba + i, ver);
		else
			memset(exp, 0, sizeof(exp));
		if (ret || memcmp(got, exp, sizeof(got))) {
			if (!bad)
				fprintf(stderr,
					"%s: lba %llu is not version %u "
					"(read %d)\n",
					when, (unsigned long long)(lba + i),
					ver, ret);
			bad++;
		}
	}
	return bad;
}

int scratch_commit_block(struct vol *v, uint64_t lba, uint32_t ver,
			 uint64_t *ticket)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	if (ret)
		return ret;
	scratch_fill(buf, lba, ver);
	ret = vol_txn_write(t, lba, buf);
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return ticket ? vol_txn_commit_async(t, ticket) : vol_txn_commit(t);
}

void scratch_fill(uint8_t *buf, uint64_t lba, uint32_t ver)
{
	uint64_t x = lba * 0x9E3779B97F4A7C15ull ^ ((uint64_t)ver << 40);

	for (size_t i = 0; i < VOL_BLOCK_BYTES; i += 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		memcpy(buf + i, &x, 8);
	}
	memcpy(buf, &lba, 8);
	memcpy(buf + 8, &ver, 4);
}

int scratch_shares_flush(void)
{
	struct statfs sf;

	return !statfs(scratch.dir, &sf) &&
	       (sf.f_type == EXT4_SUPER_MAGIC || sf.f_type == XFS_SUPER_MAGIC);
}
