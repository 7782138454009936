/*
 * fs_name_test.c - fs_vfs_name_of_lba (fs/fs_vfs.c): the file that holds
 * a volume block, as repair names unrecoverable blocks.
 *
 * On a real volume (temporary directory, removed at exit): a tree of
 * directories with a file several levels down, 600 small files beside
 * it (so that the whole-tree scans go through many chunks of the
 * metadata lock), a file in the root, a hard link, a symlink and a
 * preallocated file.  Every block of each file's extents is named with
 * its path from the root (a hard-linked file by one of its names); the
 * fs superblock (LBA 0), the root node of the tree and a block past the
 * used space are -ENOENT; so is the block of a file unlinked while
 * open; a buffer too small gives -ENAMETOOLONG.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/fs_btree.h"
#include "fs/fs_items.h"
#include "fs/fs_vfs.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

#define VOL_BLOCKS 8192 /* 32 MiB */
#define NMANY 600

static const struct fs_ctx ctx = { 0, 0 };

static void test_log(int level, const char *msg)
{
	(void)level;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

static uint64_t mk(struct fs *fs, uint64_t dir, const char *name, uint32_t mode,
		   const char *target)
{
	struct stat st;

	if (CHECK_OK(fs_vfs_mknod(fs, &ctx, dir, name, mode, 0, target, &st)) <
	    0)
		return 0;
	return st.st_ino;
}

static void write_blocks(struct fs *fs, uint64_t ino, unsigned n)
{
	uint8_t buf[FS_BLOCK_BYTES];

	for (unsigned i = 0; i < n; i++) {
		memset(buf, 'a' + (int)i, sizeof(buf));
		CHECK_EQ(fs_vfs_write(fs, ino, (uint64_t)i * FS_BLOCK_BYTES,
				      sizeof(buf), buf, NULL),
			 FS_BLOCK_BYTES);
	}
}

/* The LBAs ino's extents map (at most cap), from the tree. */
struct lbas {
	uint64_t lba[64];
	unsigned n;
};

static int lbas_fn(void *arg, const struct fs_bt_key *k, const void *val,
		   size_t len)
{
	struct lbas *l = arg;
	struct fs_extent e;
	int ret = fs_extent_decode(k, val, len, &e);

	if (ret)
		return ret;
	for (uint32_t i = 0; i < e.nblocks && l->n < 64; i++)
		l->lba[l->n++] = e.lba + i;
	return 0;
}

static void lbas_of(struct fs *fs, uint64_t ino, struct lbas *l)
{
	struct fs_bt_key lo = fs_key_extent(ino, 0);
	struct fs_bt_key hi = fs_key_extent(ino, UINT64_MAX);

	memset(l, 0, sizeof(*l));
	CHECK_OK(fs_bt_iterate(fs_store_tree(fs_vfs_store(fs)), &lo, &hi,
			       lbas_fn, l));
	CHECK(l->n > 0);
}

/* Every block of ino is named want (or want2, for a hard link). */
static void check_named(struct fs *fs, uint64_t ino, const char *want,
			const char *want2)
{
	struct lbas l;
	char buf[512];

	lbas_of(fs, ino, &l);
	for (unsigned i = 0; i < l.n; i++) {
		int ret = fs_vfs_name_of_lba(fs, l.lba[i], buf, sizeof(buf));

		CHECK_EQ(ret, 0);
		if (ret)
			continue;
		if (strcmp(buf, want) && (!want2 || strcmp(buf, want2))) {
			fprintf(stderr, "  block %llu: '%s', want '%s'\n",
				(unsigned long long)l.lba[i], buf, want);
			CHECK(0);
		}
	}
}

static void test_names(struct fs *fs)
{
	uint64_t pg, base, one, file, top, many, sl, pre, gone;
	struct lbas l;
	struct stat st;
	char name[32], buf[512];

	pg = mk(fs, FS_ROOT_INO, "pgdata", S_IFDIR | 0700, NULL);
	base = mk(fs, pg, "base", S_IFDIR | 0700, NULL);
	one = mk(fs, base, "1", S_IFDIR | 0700, NULL);
	many = mk(fs, FS_ROOT_INO, "many", S_IFDIR | 0755, NULL);
	for (int i = 0; i < NMANY; i++) {
		uint64_t f;

		snprintf(name, sizeof(name), "f%d", i);
		f = mk(fs, many, name, S_IFREG | 0644, NULL);
		if (f)
			write_blocks(fs, f, 1);
	}
	file = mk(fs, one, "1259", S_IFREG | 0600, NULL);
	write_blocks(fs, file, 5);
	top = mk(fs, FS_ROOT_INO, "top", S_IFREG | 0644, NULL);
	write_blocks(fs, top, 1);
	CHECK_OK(fs_vfs_link(fs, file, pg, "hardlink", &st));
	sl = mk(fs, FS_ROOT_INO, "sl", S_IFLNK | 0777, "pgdata/base/1/1259");
	pre = mk(fs, many, "prealloc", S_IFREG | 0644, NULL);
	CHECK_OK(fs_vfs_fallocate(fs, pre, 0, 0, 3 * FS_BLOCK_BYTES));
	gone = mk(fs, FS_ROOT_INO, "gone", S_IFREG | 0644, NULL);
	write_blocks(fs, gone, 1);
	CHECK_OK(fs_vfs_open_ino(fs, gone, 0));
	CHECK_OK(fs_vfs_unlink(fs, FS_ROOT_INO, "gone"));
	CHECK_OK(fs_vfs_fsync(fs, 0));

	check_named(fs, file, "/pgdata/base/1/1259", "/pgdata/hardlink");
	check_named(fs, top, "/top", NULL);
	check_named(fs, sl, "/sl", NULL);
	check_named(fs, pre, "/many/prealloc", NULL);
	{
		struct stat fst;
		uint64_t f;

		CHECK_OK(fs_vfs_lookup(fs, many, "f417", &fst));
		f = fst.st_ino;
		check_named(fs, f, "/many/f417", NULL);
		fs_vfs_forget(fs, f, 1);
	}

	/* Blocks of no file. */
	CHECK_EQ(fs_vfs_name_of_lba(fs, 0, buf, sizeof(buf)), -ENOENT);
	CHECK_EQ(fs_vfs_name_of_lba(fs,
				    fs_bt_root(fs_store_tree(fs_vfs_store(fs))),
				    buf, sizeof(buf)),
		 -ENOENT);
	CHECK_EQ(fs_vfs_name_of_lba(fs, VOL_BLOCKS - 1, buf, sizeof(buf)),
		 -ENOENT);
	lbas_of(fs, gone, &l);
	CHECK_EQ(fs_vfs_name_of_lba(fs, l.lba[0], buf, sizeof(buf)), -ENOENT);
	CHECK_OK(fs_vfs_release(fs, gone, 0));

	/* A buffer too small for the path. */
	lbas_of(fs, top, &l);
	CHECK_EQ(fs_vfs_name_of_lba(fs, l.lba[0], buf, 4), -ENAMETOOLONG);
	CHECK_EQ(fs_vfs_name_of_lba(fs, l.lba[0], buf, 5), 0);
	CHECK(!strcmp(buf, "/top"));
}

int main(void)
{
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];
	struct fs_mkfs_opts mo = { .force = 1 };
	struct vol_open_opts o = { .paths = paths,
				   .npaths = VOL_ZONES,
				   .key = &scratch.key,
				   .write_timeout_ms = 5000 };
	struct vol *v;
	struct fs *fs;

	vol_set_log(test_log);
	if (CHECK_OK(scratch_setup("name")) < 0 ||
	    CHECK_OK(scratch_mkfs("vol", VOL_BLOCKS, dirs, paths)) < 0 ||
	    CHECK_OK(vol_open(&o, &v)) < 0)
		return CHECK_DONE();
	if (CHECK_OK(fs_store_mkfs(v, &mo)) >= 0 &&
	    CHECK_OK(fs_vfs_open(v, &fs)) >= 0) {
		test_names(fs);
		CHECK_OK(fs_vfs_close(fs));
	}
	CHECK_OK(vol_close(v));
	scratch_cleanup();
	return CHECK_DONE();
}
