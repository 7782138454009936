/*
 * fs_setid_test.c - clearing set-user-ID and set-group-ID in the file
 * system itself (fs/fs_vfs.c), which FUSE_HANDLE_KILLPRIV_V2 leaves to
 * it: fs_vfs_kill_suidgid, as before a write, truncate, open(O_TRUNC) or
 * fallocate by a caller without CAP_FSETID, and fs_vfs_setattr's new
 * owner or group.
 *
 * On a real volume (temporary directory, removed at exit):
 *  - kill_suidgid on a regular file clears set-user-ID, and set-group-ID
 *    only with group-execute; it says whether it cleared anything (1, 0
 *    the second time); it changes ctime only when it clears;
 *  - a directory, a file without the bits and a file with set-group-ID
 *    but no group-execute are left as they are (0);
 *  - an inode that does not exist is -ENOENT;
 *  - chown (FS_SET_UID or FS_SET_GID) of a regular file clears the same
 *    bits, of a directory none;
 *  - a truncate with FS_SET_KILL_SUIDGID clears them and sets the size
 *    in one call; the flag alone leaves a directory as it is;
 *  - what was cleared is still cleared after the file system and the
 *    volume are closed and opened again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/fs_vfs.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

#define VOL_BLOCKS 8192 /* 32 MiB */

static const struct fs_ctx ctx = { 0, 0 };

static void test_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* A new node in the root with exactly mode's permission bits. */
static uint64_t mk(struct fs *fs, const char *name, uint32_t mode)
{
	struct stat st, in = { .st_mode = mode & 07777 };

	if (CHECK_OK(fs_vfs_mknod(fs, &ctx, 1, name, mode, 0, NULL, &st)) < 0 ||
	    CHECK_OK(fs_vfs_setattr(fs, st.st_ino, &in, FS_SET_MODE, &st)) < 0)
		return 0;
	return st.st_ino;
}

static uint32_t perm(struct fs *fs, uint64_t ino)
{
	struct stat st;

	if (CHECK_OK(fs_vfs_getattr(fs, ino, &st)) < 0)
		return 0xffffffffu;
	return st.st_mode & 07777;
}

struct files {
	uint64_t both, nogx, plain, dir, chown_f, chown_d, chown_m, trunc_f;
};

static void test_kill(struct fs *fs, struct files *f)
{
	struct stat st, before;

	f->both = mk(fs, "both", S_IFREG | 06775);
	f->nogx = mk(fs, "nogx", S_IFREG | 06745);
	f->plain = mk(fs, "plain", S_IFREG | 0755);
	f->dir = mk(fs, "dir", S_IFDIR | 06775);
	if (!f->both || !f->nogx || !f->plain || !f->dir)
		return;

	CHECK_OK(fs_vfs_getattr(fs, f->both, &before));
	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->both), 1);
	CHECK_EQ(perm(fs, f->both), 0775);
	CHECK_OK(fs_vfs_getattr(fs, f->both, &st));
	CHECK(st.st_ctim.tv_sec > before.st_ctim.tv_sec ||
	      (st.st_ctim.tv_sec == before.st_ctim.tv_sec &&
	       st.st_ctim.tv_nsec >= before.st_ctim.tv_nsec));
	before = st;
	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->both), 0);
	CHECK_OK(fs_vfs_getattr(fs, f->both, &st));
	CHECK_EQ(st.st_ctim.tv_nsec, before.st_ctim.tv_nsec);

	/* Set-group-ID without group-execute stays (Linux). */
	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->nogx), 1);
	CHECK_EQ(perm(fs, f->nogx), 02745);
	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->nogx), 0);

	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->plain), 0);
	CHECK_EQ(perm(fs, f->plain), 0755);
	CHECK_EQ(fs_vfs_kill_suidgid(fs, f->dir), 0);
	CHECK_EQ(perm(fs, f->dir), 06775);
	CHECK_EQ(fs_vfs_kill_suidgid(fs, 999999), -ENOENT);
}

static void test_chown(struct fs *fs, struct files *f)
{
	struct stat st, in = { .st_uid = 1000, .st_gid = 1000 };

	f->chown_f = mk(fs, "chown_f", S_IFREG | 06755);
	f->chown_d = mk(fs, "chown_d", S_IFDIR | 06755);
	f->chown_m = mk(fs, "chown_m", S_IFREG | 06745);
	if (!f->chown_f || !f->chown_d || !f->chown_m)
		return;
	CHECK_OK(fs_vfs_setattr(fs, f->chown_f, &in, FS_SET_UID, &st));
	CHECK_EQ(st.st_mode & 07777, 0755);
	CHECK_EQ(st.st_uid, 1000);
	CHECK_OK(fs_vfs_setattr(fs, f->chown_d, &in, FS_SET_UID | FS_SET_GID,
				&st));
	CHECK_EQ(st.st_mode & 07777, 06755);
	/* A group alone; set-group-ID without group-execute stays. */
	CHECK_OK(fs_vfs_setattr(fs, f->chown_m, &in, FS_SET_GID, &st));
	CHECK_EQ(st.st_mode & 07777, 02745);
	CHECK_EQ(st.st_gid, 1000);
}

static void test_truncate(struct fs *fs, struct files *f)
{
	struct stat st, in = { .st_size = 3 };

	f->trunc_f = mk(fs, "trunc_f", S_IFREG | 06775);
	if (!f->trunc_f)
		return;
	CHECK_OK(fs_vfs_setattr(fs, f->trunc_f, &in,
				FS_SET_SIZE | FS_SET_KILL_SUIDGID, &st));
	CHECK_EQ(st.st_mode & 07777, 0775);
	CHECK_EQ(st.st_size, 3);
	CHECK_OK(fs_vfs_setattr(fs, f->dir, &in, FS_SET_KILL_SUIDGID, &st));
	CHECK_EQ(st.st_mode & 07777, 06775);
}

static void check_after_reopen(struct fs *fs, struct files *f)
{
	CHECK_EQ(perm(fs, f->both), 0775);
	CHECK_EQ(perm(fs, f->nogx), 02745);
	CHECK_EQ(perm(fs, f->plain), 0755);
	CHECK_EQ(perm(fs, f->dir), 06775);
	CHECK_EQ(perm(fs, f->chown_f), 0755);
	CHECK_EQ(perm(fs, f->chown_d), 06755);
	CHECK_EQ(perm(fs, f->chown_m), 02745);
	CHECK_EQ(perm(fs, f->trunc_f), 0775);
}

/* The volume opened again (a fresh fs on first use), test run on it. */
static void with_fs(const char *const *paths, int fresh,
		    void (*test)(struct fs *, struct files *), struct files *f)
{
	struct fs_mkfs_opts mo = { .force = 1 };
	struct vol *v;
	struct fs *fs;

	if (CHECK_OK(scratch_open(&v, 0, paths, VOL_ZONES, 5000)) < 0)
		return;
	if ((!fresh || CHECK_OK(fs_store_mkfs(v, &mo)) >= 0) &&
	    CHECK_OK(fs_vfs_open(v, &fs)) >= 0) {
		test(fs, f);
		CHECK_OK(fs_vfs_close(fs));
	}
	CHECK_OK(vol_close(v));
}

static void kill_and_chown(struct fs *fs, struct files *f)
{
	test_kill(fs, f);
	test_chown(fs, f);
	test_truncate(fs, f);
}

int main(void)
{
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];
	struct files f = { 0 };

	vol_set_log(test_log);
	if (CHECK_OK(scratch_setup("setid")) < 0 ||
	    CHECK_OK(scratch_mkfs("vol", VOL_BLOCKS, dirs, paths)) < 0)
		return CHECK_DONE();
	with_fs(paths, 1, kill_and_chown, &f);
	with_fs(paths, 0, check_after_reopen, &f);
	scratch_cleanup();
	return CHECK_DONE();
}
