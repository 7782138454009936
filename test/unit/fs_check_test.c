/*
 * fs_check_test.c - the offline checker (fs/fs_check.c) over filesystems
 * built through the POSIX layer (fs/fs_vfs.c) on a real sixfold volume
 * (in a temporary directory, removed at exit, also on failure; each case
 * formats a fresh filesystem on it).
 *
 * Clean: a small tree made with fs_vfs (directories, a file with written,
 * sparse and preallocated extents, three names and an xattr, a symlink, a
 * FIFO, a socket, a device, renames across directories, a file unlinked
 * while open so that it stays an orphan), closed, reopened as a bare
 * store: fs_check returns 0 and counts every kind of object exactly; the
 * next mount frees the orphan and the check stays clean.
 * Damage: one change per case, made through fs_txn on a fresh copy of
 * that filesystem (a DIRINDEX deleted, a DIRINDEX naming another inode,
 * entry types that disagree with their inode, whether it sorts before or
 * after the directory, a wrong nlink, parent, next_index or blocks count,
 * an extent on a directory or overlapping another, a volume block used
 * by two files or by a file and a B+tree node (with a leaked block, so
 * that the store's own count passes), entries naming a missing inode,
 * items of a missing inode, entries in a regular file, a lost file, a
 * directory named twice, two entries of one name, a loop of directories,
 * orphan items wrong both ways, a symlink without its block or of size 0,
 * damage the store's own check finds): fs_check returns -EUCLEAN and
 * reports it, exactly once, under its rule.  Also: -EBUSY with a
 * transaction open, and the cap on the messages passed.
 * The POSIX layer: many legitimate operations (renames replacing files
 * and directories, exchanges, rmdir of an open directory, truncate,
 * holes) leave a clean filesystem; what it must refuse (a directory
 * renamed into itself or below, a symlink to "") is printed as an fs_vfs
 * bug if it is let through, and fs_check must then report the result.
 * Full zones: each step of eleven operations refused in turn leaves a
 * clean filesystem that goes on; a truncate refused at its first step
 * leaves the file as it was, at a later one frees the rest when it is
 * done again.  A fallocate over a sparse file (a step per hole) refused
 * at each of its steps in turn gives back everything it had mapped: the
 * file's blocks, size and data, and the free space, are as before
 * (sixfold(8): it "allocates nothing").  Times set alone are stored
 * lazily (no transaction for them or an fdatasync) and reach the tree by
 * an fsync, 64 dirty files, or the close.
 *
 * TEST_VERBOSE=1 shows the log and every problem reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fs/fs_check.h"
#include "fs/fs_vfs.h"
#include "test/lib/check.h"
#include "test/lib/scratch.h"
#include "test/lib/tutil.h"
#include "volume/volume.h"

#define BLK FS_BLOCK_BYTES
#define MSGS_BYTES 65536
#define CAP_ORPHANS (FS_CHECK_PRINT_MAX + 100)
#define VOL_BLOCKS 4096 /* 16 MiB: mkfs discards it all, every case */

static int log_errors; /* VOL_LOG_ERR lines so far */

static void test_log(int level, const char *msg)
{
	log_errors += level == VOL_LOG_ERR;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* ---- volume, filesystem, store ---- */

/* The inodes the tree of build() holds. */
struct ids {
	uint64_t d, e, f, s, p, c, k, o, l;
};

/*
 * One volume for every case (making one costs 50 MiB of zone files and a
 * fifth of a second): each case formats a fresh filesystem on it.  A
 * small one, since the volume pays for mkfs's discard of all of it.
 */
static char vol_dirs[VOL_ZONES][128];
static const char *vol_paths[VOL_ZONES];
static struct vol *vol;

struct env {
	struct fs *fs; /* while building */
	struct fs_store *st; /* afterwards */
	struct ids id;
};

static int vol_setup(void)
{
	struct vol_open_opts o = { .paths = vol_paths,
				   .npaths = VOL_ZONES,
				   .key = &scratch.key,
				   .write_timeout_ms = 5000 };

	if (CHECK_OK(scratch_mkfs("vol", VOL_BLOCKS, vol_dirs, vol_paths)) < 0)
		return -1;
	return CHECK_OK(vol_open(&o, &vol)) < 0 ? -1 : 0;
}

/* A fresh filesystem (over the last case's), open through fs_vfs. */
static int env_new(struct env *e)
{
	struct fs_mkfs_opts mo = { .force = 1 };

	memset(e, 0, sizeof(*e));
	if (!vol || CHECK_OK(fs_store_mkfs(vol, &mo)) < 0)
		return -1;
	return CHECK_OK(fs_vfs_open(vol, &e->fs)) < 0 ? -1 : 0;
}

/* Close the filesystem, open the bare store on the same volume. */
static int env_store(struct env *e)
{
	int ret = CHECK_OK(fs_vfs_close(e->fs));

	e->fs = NULL;
	if (ret < 0)
		return -1;
	return CHECK_OK(fs_store_open(vol, NULL, &e->st)) < 0 ? -1 : 0;
}

static void env_close(struct env *e)
{
	if (e->fs)
		CHECK_OK(fs_vfs_close(e->fs));
	if (e->st)
		CHECK_OK(fs_store_close(e->st));
	memset(e, 0, sizeof(*e));
}

/* ---- the filesystem every case starts from ---- */

static const struct fs_ctx ctx = { 1000, 1000 };

static uint64_t mk(struct env *e, uint64_t dir, const char *name, uint32_t mode,
		   uint64_t rdev, const char *target)
{
	struct stat st;

	if (CHECK_OK(fs_vfs_mknod(e->fs, &ctx, dir, name, mode, rdev, target,
				  &st)) < 0)
		return 0;
	/* as the kernel would once it drops its reference: an inode that
	 * loses its last name is then freed at once (or at its release) */
	fs_vfs_forget(e->fs, st.st_ino, 1);
	return st.st_ino;
}

static void put(struct env *e, uint64_t ino, uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len);

	CHECK(buf);
	if (!buf)
		return;
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(ino + off + i);
	CHECK_EQ(fs_vfs_write(e->fs, ino, off, len, buf, NULL), len);
	free(buf);
}

/*
 * /d/f2 /d/k(socket) /e2/g /e2/p(FIFO) /s(symlink) /c(device)
 * /late/f3, and o unlinked while open.  f (= f2, g, f3): blocks 0-2
 * written, 10 written, 20-21 preallocated.  Inode numbers: d < e < f < s
 * < ... < l, so entries name inodes that sort both before and after them.
 */
static int build(struct env *e)
{
	struct ids *id = &e->id;
	struct stat st;

	if (env_new(e))
		return -1;
	id->d = mk(e, FS_ROOT_INO, "d", S_IFDIR | 0755, 0, NULL);
	id->e = mk(e, id->d, "e", S_IFDIR | 0755, 0, NULL);
	id->f = mk(e, FS_ROOT_INO, "f", S_IFREG | 0644, 0, NULL);
	id->s = mk(e, FS_ROOT_INO, "s", S_IFLNK | 0777, 0, "some/target");
	id->p = mk(e, id->e, "p", S_IFIFO | 0644, 0, NULL);
	id->c = mk(e, FS_ROOT_INO, "c", S_IFCHR | 0600, makedev(1, 3), NULL);
	id->k = mk(e, id->d, "k", S_IFSOCK | 0644, 0, NULL);
	id->o = mk(e, FS_ROOT_INO, "o", S_IFREG | 0644, 0, NULL);
	id->l = mk(e, FS_ROOT_INO, "late", S_IFDIR | 0755, 0, NULL);
	put(e, id->f, 0, 10000);
	put(e, id->f, 10 * BLK, BLK);
	CHECK_OK(fs_vfs_fallocate(e->fs, id->f, FALLOC_FL_KEEP_SIZE, 20 * BLK,
				  2 * BLK));
	put(e, id->o, 0, 5000);
	CHECK_OK(fs_vfs_link(e->fs, id->f, id->d, "f2", &st));
	CHECK_OK(fs_vfs_link(e->fs, id->f, id->l, "f3", &st));
	fs_vfs_forget(e->fs, id->f, 2);
	CHECK_OK(fs_vfs_setxattr(e->fs, id->f, "user.a", "1", 1, 0));
	CHECK_OK(fs_vfs_setxattr(e->fs, id->d, "user.b", "22", 2, 0));
	CHECK_OK(fs_vfs_rename(e->fs, FS_ROOT_INO, "f", id->e, "g", 0));
	CHECK_OK(fs_vfs_rename(e->fs, id->d, "e", FS_ROOT_INO, "e2", 0));
	CHECK_OK(fs_vfs_open_ino(e->fs, id->o, 0));
	CHECK_OK(fs_vfs_unlink(e->fs, FS_ROOT_INO, "o"));
	return env_store(e);
}

/* ---- fs_check and its messages ---- */

struct msgs {
	char buf[MSGS_BYTES]; /* every message, one a line */
	size_t len;
	unsigned n; /* messages passed */
};

static struct msgs msgs;

static void on_problem(void *arg, const char *msg)
{
	struct msgs *m = arg;
	int n = snprintf(m->buf + m->len, sizeof(m->buf) - m->len, "%s\n", msg);

	if (n > 0 && m->len + (size_t)n < sizeof(m->buf))
		m->len += (size_t)n;
	m->n++;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [problem] %s\n", msg);
}

static int run_check(struct env *e, struct fs_check_report *r)
{
	memset(&msgs, 0, sizeof(msgs));
	return fs_check(e->st, on_problem, &msgs, r);
}

/* A message starts with rule and holds what. */
/* The check of e finds nothing (what it found is printed). */
static void expect_clean(struct env *e, struct fs_check_report *r)
{
	int ret = run_check(e, r);

	if (ret)
		fprintf(stderr, "  fs_check after them:\n%s", msgs.buf);
	CHECK_EQ(ret, 0);
}

static int reported(const char *rule, const char *what)
{
	for (const char *line = msgs.buf; *line;) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		char one[1024];

		snprintf(one, sizeof(one), "%.*s", (int)n, line);
		if (!strncmp(one, rule, strlen(rule)) &&
		    one[strlen(rule)] == ' ' && strstr(one, what))
			return 1;
		line += end ? n + 1 : n;
	}
	return 0;
}

/* fs_check finds exactly `problems` problems, one of them rule + what. */
static void expect(struct env *e, const char *rule, const char *what,
		   uint64_t problems)
{
	struct fs_check_report r;
	int ret = run_check(e, &r);

	CHECK_EQ(ret, -EUCLEAN);
	CHECK_EQ(r.problems, problems);
	CHECK_EQ(msgs.n, problems);
	if (!reported(rule, what)) {
		fprintf(stderr, "  expected \"%s ...%s...\", got:\n%s", rule,
			what, msgs.buf);
		CHECK(0);
	}
}

/* ---- reading and changing items directly ---- */

static struct fs_bt *tree(struct env *e)
{
	return fs_store_tree(e->st);
}

static void inode_get(struct env *e, uint64_t ino, struct fs_inode *in)
{
	struct fs_bt_key k = fs_key_inode(ino);
	uint8_t buf[FS_INODE_BYTES];
	int ret = CHECK_OK(fs_bt_lookup(tree(e), &k, buf, sizeof(buf)));

	memset(in, 0, sizeof(*in));
	if (ret >= 0)
		CHECK_OK(fs_inode_decode(&k, buf, (size_t)ret, in));
}

static void inode_put(struct fs_txn *t, uint64_t ino, const struct fs_inode *in)
{
	struct fs_bt_key k = fs_key_inode(ino);
	uint8_t buf[FS_INODE_BYTES];

	CHECK_OK(fs_txn_update(t, &k, buf, fs_inode_encode(in, buf)));
}

struct efind {
	const char *name;
	uint64_t off; /* DIRENT key offset */
	struct fs_dirent de;
	int found;
};

static int efind_fn(void *arg, const struct fs_bt_key *k, const void *val,
		    size_t len)
{
	struct efind *f = arg;
	struct fs_dirent de;

	if (fs_dirent_decode(k, val, len, NULL, &de))
		return -EUCLEAN;
	if (strcmp(de.name, f->name))
		return 0;
	f->off = k->offset;
	f->de = de;
	f->found = 1;
	return 1;
}

/* The DIRENT of name in dir: its key offset and value. */
static struct efind entry_find(struct env *e, uint64_t dir, const char *name)
{
	struct fs_bt_key lo = fs_key_dirent(dir, 0);
	struct fs_bt_key hi = fs_key_dirent(dir, UINT64_MAX);
	struct efind f = { .name = name };

	CHECK_OK(fs_bt_iterate(tree(e), &lo, &hi, efind_fn, &f));
	CHECK(f.found);
	return f;
}

/* Both items of an entry: DIRENT at off, DIRINDEX at seq. */
static void entry_insert(struct fs_txn *t, uint64_t dir, uint64_t off,
			 uint64_t seq, uint64_t ino, uint8_t type,
			 const char *name)
{
	struct fs_dirent de = { .ino = ino, .cookie = seq, .type = type };
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	struct fs_bt_key k = fs_key_dirent(dir, off);

	de.name_len = (uint8_t)strlen(name);
	memcpy(de.name, name, de.name_len);
	CHECK_OK(fs_txn_insert(t, &k, buf, fs_dirent_encode(&de, buf)));
	de.cookie = off;
	k = fs_key_dirindex(dir, seq);
	CHECK_OK(fs_txn_insert(t, &k, buf, fs_dirent_encode(&de, buf)));
}

/* A new entry name -> ino of type in dir, at the next index (the
 * directory's inode is updated: one update). */
static void entry_add(struct env *e, struct fs_txn *t, uint64_t dir,
		      const char *name, uint64_t ino, uint8_t type)
{
	uint64_t h =
		fs_name_hash(fs_store_sb(e->st)->hash_key, name, strlen(name));
	struct fs_inode in;

	inode_get(e, dir, &in);
	entry_insert(t, dir, h, in.next_index++, ino, type, name);
	inode_put(t, dir, &in);
}

static void entry_remove(struct env *e, struct fs_txn *t, uint64_t dir,
			 const char *name)
{
	struct efind f = entry_find(e, dir, name);
	struct fs_bt_key k = fs_key_dirent(dir, f.off);

	CHECK_OK(fs_txn_delete(t, &k));
	k = fs_key_dirindex(dir, f.de.cookie);
	CHECK_OK(fs_txn_delete(t, &k));
}

/* Rewrite both items of the entry with type, the DIRINDEX naming iino. */
static void entry_change(struct env *e, struct fs_txn *t, uint64_t dir,
			 const char *name, uint8_t type, uint64_t iino)
{
	struct efind f = entry_find(e, dir, name);
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	struct fs_bt_key k = fs_key_dirent(dir, f.off);
	struct fs_dirent de = f.de;

	de.type = type;
	CHECK_OK(fs_txn_update(t, &k, buf, fs_dirent_encode(&de, buf)));
	de.cookie = f.off;
	if (iino)
		de.ino = iino;
	k = fs_key_dirindex(dir, f.de.cookie);
	CHECK_OK(fs_txn_update(t, &k, buf, fs_dirent_encode(&de, buf)));
}

static void extent_put(struct fs_txn *t, uint64_t ino, uint64_t fb,
		       uint64_t lba, uint32_t n, int insert)
{
	struct fs_bt_key k = fs_key_extent(ino, fb);
	struct fs_extent x = { lba, n, 0 };
	uint8_t buf[FS_EXTENT_BYTES];
	size_t len = fs_extent_encode(&x, buf);

	CHECK_OK(insert ? fs_txn_insert(t, &k, buf, len) :
			  fs_txn_update(t, &k, buf, len));
}

static struct fs_extent extent_get(struct env *e, uint64_t ino, uint64_t fb)
{
	struct fs_bt_key k = fs_key_extent(ino, fb);
	uint8_t buf[FS_EXTENT_BYTES];
	struct fs_extent x = { 0 };
	int ret = CHECK_OK(fs_bt_lookup(tree(e), &k, buf, sizeof(buf)));

	if (ret >= 0)
		CHECK_OK(fs_extent_decode(&k, buf, (size_t)ret, &x));
	return x;
}

/* A new block of data for ino at file block fb (blocks + 1). */
static void extent_new(struct env *e, struct fs_txn *t, uint64_t ino,
		       uint64_t fb)
{
	uint8_t *buf = calloc(1, BLK);
	struct fs_inode in;
	uint64_t lba = 0;
	uint32_t got = 0;

	CHECK(buf);
	CHECK_OK(fs_txn_alloc(t, 0, 1, &lba, &got));
	CHECK_EQ(got, 1);
	if (buf)
		CHECK_OK(fs_txn_write(t, lba, buf));
	free(buf);
	extent_put(t, ino, fb, lba, 1, 1);
	inode_get(e, ino, &in);
	in.blocks++;
	inode_put(t, ino, &in);
}

/*
 * Let file block 0..2 of f lose its last block without freeing it (a
 * leaked block), so that one more block mapped elsewhere keeps F1's
 * count right: the store's check passes, only fs_check can tell.
 */
static void f_leak_one(struct env *e, struct fs_txn *t)
{
	struct fs_extent x = extent_get(e, e->id.f, 0);
	struct fs_inode in;

	CHECK_EQ(x.nblocks, 3);
	extent_put(t, e->id.f, 0, x.lba, 2, 0);
	inode_get(e, e->id.f, &in);
	in.blocks--;
	inode_put(t, e->id.f, &in);
}

static struct fs_txn *txn(struct env *e, uint32_t inserts, uint32_t updates,
			  uint32_t deletes)
{
	struct fs_txn_res res = { .inserts = inserts,
				  .updates = updates,
				  .deletes = deletes,
				  .data_blocks = 2,
				  .allocs = 2,
				  .alloc_blocks = 2,
				  .frees = 2 };
	struct fs_txn *t = NULL;

	if (CHECK_OK(fs_txn_begin(e->st, &t)) < 0)
		return NULL;
	if (CHECK_OK(fs_txn_reserve(t, &res)) < 0) {
		fs_txn_abort(t);
		return NULL;
	}
	return t;
}

static void commit(struct fs_txn *t)
{
	CHECK_OK(fs_txn_commit(t));
}

/* ---- cases ---- */

static void test_clean(void)
{
	struct fs_check_report r;
	struct env e;

	if (build(&e) == 0) {
		CHECK_EQ(run_check(&e, &r), 0);
		CHECK_EQ(r.problems, 0);
		CHECK_EQ(msgs.n, 0);
		CHECK_EQ(r.inodes, 10);
		CHECK_EQ(r.dirs, 4);
		CHECK_EQ(r.files, 2);
		CHECK_EQ(r.symlinks, 1);
		CHECK_EQ(r.specials, 3);
		CHECK_EQ(r.entries, 10);
		CHECK_EQ(r.extents, 5); /* f 3, s 1, o 1 */
		CHECK_EQ(r.data_blocks, 9); /* f 3 + 1 + 2, s 1, o 2 */
		CHECK_EQ(r.xattrs, 2);
		CHECK_EQ(r.orphans, 1);
		if (msgs.n)
			fprintf(stderr, "%s", msgs.buf);
		/* the next mount frees the orphan (and nothing else) */
		CHECK_OK(fs_store_close(e.st));
		e.st = NULL;
		if (CHECK_OK(fs_vfs_open(vol, &e.fs)) >= 0 &&
		    env_store(&e) == 0) {
			CHECK_EQ(run_check(&e, &r), 0);
			CHECK_EQ(r.orphans, 0);
			CHECK_EQ(r.inodes, 9);
			CHECK_EQ(r.files, 1);
			CHECK_EQ(r.extents, 4);
			CHECK_EQ(r.data_blocks, 7);
			if (msgs.n)
				fprintf(stderr, "%s", msgs.buf);
		}
	}
	env_close(&e);
}

/* A fresh filesystem, damaged by fn, then checked. */
struct dcase {
	const char *name;
	void (*fn)(struct env *e, struct fs_txn *t);
	uint32_t inserts, updates, deletes;
	const char *rule, *what;
	uint64_t problems;
};

static void d_dirindex(struct env *e, struct fs_txn *t)
{
	struct efind f = entry_find(e, e->id.e, "g");
	struct fs_bt_key k = fs_key_dirindex(e->id.e, f.de.cookie);

	CHECK_OK(fs_txn_delete(t, &k));
}

static void d_nlink(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, e->id.f, &in);
	in.nlink++;
	inode_put(t, e->id.f, &in);
}

static void d_dir_extent(struct env *e, struct fs_txn *t)
{
	extent_new(e, t, e->id.d, 0);
}

static void d_missing(struct env *e, struct fs_txn *t)
{
	entry_add(e, t, e->id.d, "ghost", 5000, FS_FT_OF_MODE(FS_S_IFREG));
}

static void d_no_orphan(struct env *e, struct fs_txn *t)
{
	struct fs_bt_key k = fs_key_orphan(e->id.o);

	CHECK_OK(fs_txn_delete(t, &k));
}

static void d_blocks(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, e->id.f, &in);
	in.blocks++;
	inode_put(t, e->id.f, &in);
}

static void d_type_later(struct env *e, struct fs_txn *t)
{
	entry_change(e, t, FS_ROOT_INO, "s", FS_FT_OF_MODE(FS_S_IFREG), 0);
}

static void d_type_earlier(struct env *e, struct fs_txn *t)
{
	entry_change(e, t, e->id.l, "f3", FS_FT_OF_MODE(FS_S_IFIFO), 0);
}

/* The DIRINDEX of g names another file (their names cannot differ
 * without breaking D4: both hash the name into their keys). */
static void d_pair_ino(struct env *e, struct fs_txn *t)
{
	entry_change(e, t, e->id.e, "g", FS_FT_OF_MODE(FS_S_IFREG), e->id.o);
}

static void d_next_index(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, e->id.d, &in);
	in.next_index = FS_DIRINDEX_FIRST;
	inode_put(t, e->id.d, &in);
}

static void d_dir_nlink(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, FS_ROOT_INO, &in);
	in.nlink++;
	inode_put(t, FS_ROOT_INO, &in);
}

static void d_parent(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, e->id.e, &in);
	in.parent = e->id.d;
	inode_put(t, e->id.e, &in);
}

static void d_root_parent(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, FS_ROOT_INO, &in);
	in.parent = e->id.d;
	inode_put(t, FS_ROOT_INO, &in);
}

/* A second name for directory d (its new parent's nlink follows). */
static void d_dir_twice(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	entry_add(e, t, e->id.l, "d-again", e->id.d, FS_FT_OF_MODE(FS_S_IFDIR));
	inode_get(e, e->id.l, &in); /* entry_add's update included */
	in.nlink++;
	inode_put(t, e->id.l, &in);
}

static void d_lost(struct env *e, struct fs_txn *t)
{
	entry_remove(e, t, FS_ROOT_INO, "c");
}

static void d_orphan_linked(struct env *e, struct fs_txn *t)
{
	struct fs_bt_key k = fs_key_orphan(e->id.f);

	CHECK_OK(fs_txn_insert(t, &k, NULL, 0));
}

static void d_orphan_missing(struct env *e, struct fs_txn *t)
{
	struct fs_bt_key k = fs_key_orphan(7777);

	(void)e;
	CHECK_OK(fs_txn_insert(t, &k, NULL, 0));
}

static void d_symlink_size(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;

	inode_get(e, e->id.s, &in);
	in.size = 0;
	inode_put(t, e->id.s, &in);
}

/* The symlink loses its target block (freed: the store stays right). */
static void d_symlink_extent(struct env *e, struct fs_txn *t)
{
	struct fs_extent x = extent_get(e, e->id.s, 0);
	struct fs_bt_key k = fs_key_extent(e->id.s, 0);
	struct fs_inode in;

	CHECK_OK(fs_txn_delete(t, &k));
	CHECK_OK(fs_txn_free(t, x.lba, 1));
	inode_get(e, e->id.s, &in);
	in.blocks = 0;
	inode_put(t, e->id.s, &in);
}

static void d_overlap(struct env *e, struct fs_txn *t)
{
	extent_new(e, t, e->id.f, 1);
}

/* f's block 0 is mapped by o too (and f's last block leaked). */
static void d_shared(struct env *e, struct fs_txn *t)
{
	struct fs_extent x = extent_get(e, e->id.f, 0);
	struct fs_inode in;

	f_leak_one(e, t);
	extent_put(t, e->id.o, 10, x.lba, 1, 1);
	inode_get(e, e->id.o, &in);
	in.blocks++;
	inode_put(t, e->id.o, &in);
}

/* o maps the block of the root node (it stays a node when it splits). */
static void d_node(struct env *e, struct fs_txn *t)
{
	uint64_t root = fs_bt_root(tree(e));
	struct fs_inode in;

	f_leak_one(e, t);
	extent_put(t, e->id.o, 10, root, 1, 1);
	inode_get(e, e->id.o, &in);
	in.blocks++;
	inode_put(t, e->id.o, &in);
}

static void d_stray(struct env *e, struct fs_txn *t)
{
	const char *name = "user.stray";
	uint64_t h =
		fs_name_hash(fs_store_sb(e->st)->hash_key, name, strlen(name));
	struct fs_bt_key k = fs_key_xattr(4000, h);
	uint8_t buf[64];

	CHECK_OK(fs_txn_insert(
		t, &k, buf, fs_xattr_encode(name, strlen(name), "v", 1, buf)));
}

static void d_dup_name(struct env *e, struct fs_txn *t)
{
	struct efind f = entry_find(e, e->id.e, "g");
	struct fs_inode in;

	inode_get(e, e->id.e, &in);
	entry_insert(t, e->id.e, f.off + 1, in.next_index++, e->id.f,
		     FS_FT_OF_MODE(FS_S_IFREG), "g");
	inode_put(t, e->id.e, &in);
	inode_get(e, e->id.f, &in);
	in.nlink++;
	inode_put(t, e->id.f, &in);
}

static void d_entry_in_file(struct env *e, struct fs_txn *t)
{
	const char *name = "x";
	uint64_t h = fs_name_hash(fs_store_sb(e->st)->hash_key, name, 1);

	entry_insert(t, e->id.f, h, FS_DIRINDEX_FIRST, e->id.c,
		     FS_FT_OF_MODE(FS_S_IFCHR), name);
}

/* Move directory "late" into d and d into "late": a loop cut off from /. */
static void d_loop(struct env *e, struct fs_txn *t)
{
	struct fs_inode in;
	uint8_t dt = FS_FT_OF_MODE(FS_S_IFDIR);

	entry_remove(e, t, FS_ROOT_INO, "late");
	entry_remove(e, t, FS_ROOT_INO, "d");
	inode_get(e, FS_ROOT_INO, &in);
	in.nlink -= 2;
	inode_put(t, FS_ROOT_INO, &in);
	entry_add(e, t, e->id.d, "late", e->id.l, dt);
	entry_add(e, t, e->id.l, "d", e->id.d, dt);
	inode_get(e, e->id.d, &in);
	in.nlink++;
	in.parent = e->id.l;
	inode_put(t, e->id.d, &in);
	inode_get(e, e->id.l, &in);
	in.nlink++;
	in.parent = e->id.d;
	inode_put(t, e->id.l, &in);
}

/* An inode numbered past next_ino: the store's own check (F3) fails. */
static void d_store(struct env *e, struct fs_txn *t)
{
	uint64_t ino = fs_store_sb(e->st)->next_ino + 100;
	struct fs_bt_key k = fs_key_inode(ino);
	uint8_t buf[FS_INODE_BYTES];
	struct fs_inode in;

	inode_get(e, e->id.c, &in);
	CHECK_OK(fs_txn_insert(t, &k, buf, fs_inode_encode(&in, buf)));
}

static const struct dcase dcases[] = {
	{ "dirindex", d_dirindex, 0, 0, 1, "V1", "has no DIRINDEX", 1 },
	{ "nlink", d_nlink, 0, 1, 0, "V2", "nlink 4 but 3 entries", 1 },
	{ "dir extent", d_dir_extent, 1, 1, 0, "V3", "a directory with 1 ext",
	  1 },
	{ "missing", d_missing, 2, 1, 0, "V1", "5000 does not exist", 1 },
	{ "no orphan", d_no_orphan, 0, 0, 1, "V2", "no ORPHAN item", 1 },
	{ "blocks", d_blocks, 0, 1, 0, "V3", "blocks 7, but its extents map 6",
	  1 },
	{ "type later", d_type_later, 0, 2, 0, "V1", "but it is a symlink", 1 },
	{ "type earlier", d_type_earlier, 0, 2, 0, "V1",
	  "says a FIFO, but inode", 1 },
	{ "pair ino", d_pair_ino, 0, 2, 0, "V1", "name different inodes", 1 },
	{ "next_index", d_next_index, 0, 1, 0, "V1", "next_index 3", 2 },
	{ "dir nlink", d_dir_nlink, 0, 1, 0, "V2", "2 + 3 subdirectories", 1 },
	{ "parent", d_parent, 0, 1, 0, "V2", "but its parent is", 1 },
	{ "root parent", d_root_parent, 0, 1, 0, "V2", "root directory: parent",
	  1 },
	{ "dir twice", d_dir_twice, 2, 2, 0, "V2", "2 entries name it", 1 },
	{ "lost", d_lost, 0, 0, 2, "V2", "no entry names it (lost)", 1 },
	{ "orphan linked", d_orphan_linked, 1, 0, 0, "V2", "nlink 3, not 0",
	  1 },
	{ "orphan missing", d_orphan_missing, 1, 0, 0, "V2",
	  "inode 7777 does not exist", 1 },
	{ "symlink size", d_symlink_size, 0, 1, 0, "V3", "size 0, not 1..4095",
	  1 },
	{ "symlink extent", d_symlink_extent, 0, 1, 1, "V3",
	  "no extent holds its target", 1 },
	{ "overlap", d_overlap, 1, 1, 0, "V3", "overlaps the one before", 1 },
	{ "shared block", d_shared, 1, 3, 0, "V3", "by an extent of inode", 1 },
	{ "node block", d_node, 1, 3, 0, "V3", "a B+tree node and by an extent",
	  1 },
	{ "stray items", d_stray, 1, 0, 0, "V3", "4000 does not exist", 1 },
	{ "dup name", d_dup_name, 2, 2, 0, "V1", "are both named \"g\"", 1 },
	{ "entry in file", d_entry_in_file, 2, 0, 0, "V1",
	  "not a directory, but holds 1 DIRENT", 1 },
	{ "loop", d_loop, 4, 6, 4, "V2", "not reachable from the root", 1 },
	{ "store", d_store, 1, 0, 0, "store", "check failed: Structure", 1 },
};

static void damage(const struct dcase *dc)
{
	struct fs_txn *t;
	struct env e;

	if (build(&e) == 0) {
		t = txn(&e, dc->inserts, dc->updates, dc->deletes);
		if (t) {
			dc->fn(&e, t);
			commit(t);
			expect(&e, dc->rule, dc->what, dc->problems);
		}
	}
	env_close(&e);
}

static void test_damage(void)
{
	for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		int before = check_failures;

		damage(&dcases[i]);
		if (check_failures != before)
			fprintf(stderr, "  case \"%s\" failed\n",
				dcases[i].name);
	}
}

/* A transaction open: -EBUSY, nothing reported. */
static void test_busy(void)
{
	struct fs_check_report r;
	struct fs_txn *t = NULL;
	struct env e;

	if (build(&e) == 0 && CHECK_OK(fs_txn_begin(e.st, &t)) >= 0) {
		CHECK_EQ(run_check(&e, &r), -EBUSY);
		CHECK_EQ(r.problems, 0);
		CHECK_EQ(msgs.n, 0);
		fs_txn_abort(t);
		CHECK_EQ(run_check(&e, &r), 0);
	}
	env_close(&e);
}

/* More problems than are passed on: all counted, a last line says so. */
static void test_cap(void)
{
	struct fs_check_report r;
	struct fs_txn *t = NULL;
	struct env e;
	unsigned done = 0;

	if (build(&e))
		goto out;
	/* orphan items of missing inodes, as many transactions as it takes */
	while (done < CAP_ORPHANS) {
		struct fs_txn_res res = { .inserts = 1 };
		int ret = 0;

		if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
			goto out;
		for (; done < CAP_ORPHANS; done++) {
			struct fs_bt_key k = fs_key_orphan(100000 + done);

			ret = fs_txn_reserve(t, &res);
			if (!ret)
				ret = fs_txn_insert(t, &k, NULL, 0);
			if (ret)
				break;
		}
		commit(t);
		if (ret != -E2BIG && CHECK_OK(ret) < 0)
			goto out;
	}
	CHECK(fs_bt_height(tree(&e)) > 1); /* the node walk goes down */
	CHECK_EQ(run_check(&e, &r), -EUCLEAN);
	CHECK_EQ(r.problems, CAP_ORPHANS);
	CHECK_EQ(msgs.n, FS_CHECK_PRINT_MAX + 1);
	CHECK(strstr(msgs.buf, "and 100 more problems not shown") != NULL);
out:
	env_close(&e);
}

/*
 * Many legitimate operations of the POSIX layer, then a clean check:
 * renames replacing files and directories within and across
 * directories, exchanges, rmdir, a replaced file that was open (an
 * orphan), an unlinked file released (freed), truncates, holes, writes
 * into preallocated space.
 */
static void test_vfs_ops(void)
{
	struct fs_check_report r;
	uint64_t a, b, x, g, h, w;
	struct stat st, in = { 0 };
	struct env e;
	int ret;

	if (env_new(&e))
		goto out;
	a = mk(&e, FS_ROOT_INO, "a", S_IFDIR | 0755, 0, NULL);
	b = mk(&e, FS_ROOT_INO, "b", S_IFDIR | 0755, 0, NULL);
	x = mk(&e, a, "x", S_IFDIR | 0755, 0, NULL);
	mk(&e, b, "y", S_IFDIR | 0755, 0, NULL);
	put(&e, mk(&e, x, "f", S_IFREG | 0644, 0, NULL), 0, 3 * BLK);
	g = mk(&e, b, "g", S_IFREG | 0644, 0, NULL);
	h = mk(&e, FS_ROOT_INO, "h", S_IFREG | 0644, 0, NULL);
	put(&e, g, 5 * BLK, 2 * BLK + 17);
	put(&e, h, 0, 9 * BLK);
	CHECK_OK(fs_vfs_link(e.fs, g, a, "g2", &st));
	fs_vfs_forget(e.fs, g, 1);
	/* /b/y is x (y freed), /b/y/f is g (f freed) */
	CHECK_OK(fs_vfs_rename(e.fs, a, "x", b, "y", 0));
	CHECK_OK(fs_vfs_rename(e.fs, b, "g", x, "f", 0));
	/* /a is x, /b/y is a */
	CHECK_OK(
		fs_vfs_rename(e.fs, FS_ROOT_INO, "a", b, "y", RENAME_EXCHANGE));
	/* /h is g: h, open, is an orphan until released, then freed */
	CHECK_OK(fs_vfs_open_ino(e.fs, h, 0));
	CHECK_OK(fs_vfs_rename(e.fs, a, "g2", FS_ROOT_INO, "h", 0));
	CHECK_OK(fs_vfs_release(e.fs, h, 0));
	in.st_size = BLK + 5;
	CHECK_OK(fs_vfs_setattr(e.fs, g, &in, FS_SET_SIZE, &st));
	CHECK_OK(fs_vfs_fallocate(e.fs, g, 0, 8 * BLK, 6 * BLK));
	put(&e, g, 10 * BLK, 100);
	CHECK_OK(fs_vfs_fallocate(e.fs, g,
				  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  9 * BLK, 2 * BLK));
	CHECK_OK(fs_vfs_rmdir(e.fs, b, "y")); /* a, empty now */
	ret = fs_vfs_rmdir(e.fs, FS_ROOT_INO, "a");
	CHECK_EQ(ret, -ENOTEMPTY);
	/* a directory and a file trade places across directories */
	mk(&e, b, "z", S_IFDIR | 0755, 0, NULL);
	CHECK_OK(fs_vfs_rename(e.fs, b, "z", x, "f", RENAME_EXCHANGE));
	/* /b/w removed while open: an orphan directory at the close */
	w = mk(&e, b, "w", S_IFDIR | 0755, 0, NULL);
	CHECK_OK(fs_vfs_open_ino(e.fs, w, FS_OPEN_DIR));
	CHECK_OK(fs_vfs_rmdir(e.fs, b, "w"));
	if (env_store(&e) == 0) {
		expect_clean(&e, &r);
		CHECK_EQ(r.orphans, 1);
		/* /, x (/a), b, z (/a/f), w; g (/b/z, /h) */
		CHECK_EQ(r.inodes, 6);
		CHECK_EQ(r.dirs, 5);
		CHECK_EQ(r.entries, 5);
	}
out:
	env_close(&e);
}

/*
 * What the POSIX layer must refuse, and fs_check must see if it does
 * not: rename(2) of a directory into itself or below it (Linux: EINVAL),
 * symlink(2) to an empty target (Linux: ENOENT).  A call that wrongly
 * succeeds is printed as a bug of fs_vfs; the check must then report its
 * result (a loop of directories, a symlink of size 0), nothing else.
 */
static void test_vfs_refuse(void)
{
	struct fs_check_report r;
	unsigned loops = 0, empty = 0;
	struct stat st;
	struct env e;
	uint64_t a, d;
	int ret;

	if (env_new(&e))
		goto out;
	a = mk(&e, FS_ROOT_INO, "a", S_IFDIR | 0755, 0, NULL);
	d = mk(&e, FS_ROOT_INO, "d", S_IFDIR | 0755, 0, NULL);
	ret = fs_vfs_rename(e.fs, FS_ROOT_INO, "a", a, "a", 0);
	if (ret == 0) {
		fprintf(stderr, "  fs_vfs bug: rename(/a, /a/a) gives 0, "
				"not -EINVAL\n");
		loops++;
	} else {
		CHECK_EQ(ret, -EINVAL);
	}
	ret = fs_vfs_rename(e.fs, FS_ROOT_INO, "d",
			    mk(&e, d, "e", S_IFDIR | 0755, 0, NULL), "d", 0);
	if (ret == 0) {
		fprintf(stderr, "  fs_vfs bug: rename(/d, /d/e/d) gives 0, "
				"not -EINVAL\n");
		loops++;
	} else {
		CHECK_EQ(ret, -EINVAL);
	}
	ret = fs_vfs_mknod(e.fs, &ctx, FS_ROOT_INO, "empty", S_IFLNK | 0777, 0,
			   "", &st);
	if (ret == 0) {
		fprintf(stderr, "  fs_vfs bug: symlink(\"\", /empty) gives "
				"0, not -ENOENT\n");
		empty++;
	} else {
		CHECK_EQ(ret, -ENOENT);
	}
	if (env_store(&e) == 0) {
		ret = run_check(&e, &r);
		CHECK_EQ(ret, loops + empty ? -EUCLEAN : 0);
		CHECK_EQ(r.problems, loops + empty);
		CHECK(!loops || reported("V2", "its entries loop"));
		CHECK(!empty || reported("V3", "size 0"));
	}
out:
	env_close(&e);
}

/*
 * Zones out of space refuse a step of an operation (the volume's promise
 * of room, vol_txn_reserve): at every step of each operation in turn,
 * one refusal.  The operation either completes or fails with -ENOSPC,
 * the filesystem goes on (no sticky error: the next operation works),
 * and the check stays clean.  A write that filled a hole counted its
 * blocks only in its last step; refused there, the inode was left
 * short of what its extents map (seen under load in
 * test_fs_full_zones.py).
 */
enum {
	E_HOLE,
	E_EXTEND,
	E_PREALLOC,
	E_TRUNC,
	E_UNLINK,
	E_FALLOC,
	E_PUNCH,
	E_RENAME,
	E_MKNOD,
	E_XATTR,
	E_RMDIR,
	E_OPS
};

static const char *const enospc_names[E_OPS] = { "write into a hole",
						 "write extending a file",
						 "write into "
						 "preallocated space",
						 "truncate",
						 "unlink",
						 "fallocate",
						 "punch",
						 "rename over a file",
						 "mknod",
						 "setxattr",
						 "rmdir" };

/* Run op on objects made for it in dir (without refusals), the
 * reservation after k refused; *fired: the refusal happened. */
static int enospc_op(struct env *e, uint64_t dir, int op, int k, int *fired)
{
	struct stat st, in = { 0 };
	uint64_t f = mk(e, dir, "f", S_IFREG | 0644, 0, NULL), g = 0, x = 0;
	size_t len = 260 * BLK;
	uint8_t *buf = calloc(1, len);
	int ret;

	if (!buf || !f)
		return -ENOMEM;
	memset(buf, 0x5a, len);
	put(e, f, 0, BLK);
	put(e, f, 8 * BLK, 3 * BLK);
	put(e, f, 20 * BLK, 2 * BLK);
	if (op == E_PREALLOC)
		CHECK_OK(fs_vfs_fallocate(e->fs, f, FALLOC_FL_KEEP_SIZE,
					  30 * BLK, 6 * BLK));
	if (op == E_RENAME)
		g = mk(e, dir, "g", S_IFREG | 0644, 0, NULL);
	if (op == E_RMDIR)
		x = mk(e, dir, "x", S_IFDIR | 0755, 0, NULL);
	(void)g;
	(void)x;
	CHECK_EQ(vol_debug_space_refuse(vol, k), -1);
	switch (op) {
	case E_HOLE:
		ret = (int)fs_vfs_write(e->fs, f, 3 * BLK, 3 * BLK, buf, NULL);
		ret = ret == 3 * BLK ? 0 : ret;
		break;
	case E_EXTEND:
		ret = (int)fs_vfs_write(e->fs, f, 22 * BLK, len, buf, NULL);
		ret = ret > 0 ? 0 : ret; /* a short write is a success */
		break;
	case E_PREALLOC:
		ret = (int)fs_vfs_write(e->fs, f, 31 * BLK, 2 * BLK, buf, NULL);
		ret = ret > 0 ? 0 : ret;
		break;
	case E_TRUNC:
		in.st_size = BLK + 5;
		ret = fs_vfs_setattr(e->fs, f, &in, FS_SET_SIZE, &st);
		break;
	case E_UNLINK:
		ret = fs_vfs_unlink(e->fs, dir, "f");
		break;
	case E_FALLOC:
		ret = fs_vfs_fallocate(e->fs, f, 0, 40 * BLK, 6 * BLK);
		break;
	case E_PUNCH:
		ret = fs_vfs_fallocate(
			e->fs, f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			9 * BLK, 12 * BLK);
		break;
	case E_RENAME:
		ret = fs_vfs_rename(e->fs, dir, "f", dir, "g", 0);
		break;
	case E_MKNOD:
		ret = fs_vfs_mknod(e->fs, &ctx, dir, "n", S_IFREG | 0644, 0,
				   NULL, &st);
		if (!ret)
			fs_vfs_forget(e->fs, st.st_ino, 1);
		break;
	case E_XATTR:
		ret = fs_vfs_setxattr(e->fs, f, "user.z", "v", 1, 0);
		break;
	default:
		ret = fs_vfs_rmdir(e->fs, dir, "x");
		break;
	}
	*fired = vol_debug_space_refuse(vol, -1) == -1;
	if (op == E_TRUNC && ret == -ENOSPC) {
		/* Refused at its first step: as it was.  At a later one: the
		 * new size, and the blocks not freed yet past it, which the
		 * same truncate again frees. */
		CHECK_OK(fs_vfs_getattr(e->fs, f, &st));
		CHECK(st.st_size == 22 * BLK || st.st_size == BLK + 5);
		if (st.st_size == 22 * BLK)
			CHECK_EQ(st.st_blocks, 6 * BLK / 512);
		CHECK_OK(fs_vfs_setattr(e->fs, f, &in, FS_SET_SIZE, &st));
		CHECK_EQ(st.st_blocks, BLK / 512);
	}
	free(buf);
	return ret;
}

static void test_vfs_enospc(void)
{
	struct fs_check_report r;
	unsigned refused = 0;
	struct env e;
	int ret;

	if (env_new(&e))
		goto out;
	for (int op = 0; op < E_OPS; op++) {
		int fired = 1;

		for (int k = 0; fired && k < 64; k++) {
			char name[32];
			uint64_t dir;

			snprintf(name, sizeof(name), "d%d.%d", op, k);
			dir = mk(&e, FS_ROOT_INO, name, S_IFDIR | 0755, 0,
				 NULL);
			if (!dir)
				goto out;
			ret = enospc_op(&e, dir, op, k, &fired);
			if (ret && ret != -ENOSPC)
				fprintf(stderr, "  %s, step %d refused: %s\n",
					enospc_names[op], k, strerror(-ret));
			CHECK(ret == 0 || ret == -ENOSPC);
			CHECK(fired || ret == 0);
			refused += fired;
			/* the filesystem goes on */
			if (!mk(&e, dir, "after", S_IFREG | 0644, 0, NULL))
				fprintf(stderr,
					"  after %s, step %d "
					"refused: stuck\n",
					enospc_names[op], k);
		}
		CHECK(!fired); /* every step was tried */
	}
	CHECK(refused >= E_OPS);
	if (env_store(&e) == 0) {
		expect_clean(&e, &r);
	}
out:
	env_close(&e);
}

/*
 * f has one written block every 10 from 0 to 50: a fallocate of blocks
 * 0..60 fills six holes, a step each, then stores the inode.  Refused at
 * step k (the vol_txn_reserve after k that pass), it fails with -ENOSPC
 * and unmaps what its earlier steps mapped, or it succeeds (no refusal).
 */
static void test_vfs_falloc_undo(void)
{
	struct statvfs sv0, sv;
	struct stat st0, st;
	uint8_t *want = malloc(BLK), *got = malloc(BLK);
	uint64_t f;
	unsigned undone = 0;
	struct env e;
	int ret = 0, fired = 1;

	if (!want || !got || env_new(&e))
		goto out;
	f = mk(&e, FS_ROOT_INO, "f", S_IFREG | 0644, 0, NULL);
	for (int i = 0; i <= 5; i++)
		put(&e, f, (uint64_t)i * 10 * BLK, BLK);
	for (int k = 0; fired && k < 32; k++) {
		int errs = log_errors;

		CHECK_OK(fs_vfs_getattr(e.fs, f, &st0));
		CHECK_OK(fs_vfs_statfs(e.fs, &sv0));
		CHECK_EQ(vol_debug_space_refuse(vol, k), -1);
		ret = fs_vfs_fallocate(e.fs, f, 0, 0, 60 * BLK);
		fired = vol_debug_space_refuse(vol, -1) == -1;
		CHECK(fired ? ret == -ENOSPC : ret == 0);
		if (ret)
			undone++;
		if (!fired)
			break;
		CHECK_EQ(log_errors, errs); /* the undo did not fail */
		CHECK_OK(fs_vfs_getattr(e.fs, f, &st));
		CHECK_EQ(st.st_blocks, st0.st_blocks);
		CHECK_EQ(st.st_size, st0.st_size);
		CHECK_OK(fs_vfs_statfs(e.fs, &sv));
		CHECK_EQ(sv.f_bfree, sv0.f_bfree);
		for (int i = 0; i <= 5; i++) {
			uint64_t off = (uint64_t)i * 10 * BLK;

			for (size_t j = 0; j < BLK; j++)
				want[j] = (uint8_t)(f + off + j);
			CHECK_EQ(fs_vfs_read(e.fs, f, off, BLK, got), BLK);
			CHECK(!memcmp(got, want, BLK));
		}
	}
	CHECK_EQ(ret, 0);
	CHECK(undone >= 7); /* six holes and the inode's update */
	CHECK_OK(fs_vfs_getattr(e.fs, f, &st));
	CHECK_EQ(st.st_size, 60 * BLK);
	CHECK_EQ(st.st_blocks, 60 * BLK / 512);
	if (env_store(&e) == 0) {
		struct fs_check_report r;

		expect_clean(&e, &r);
	}
out:
	free(want);
	free(got);
	env_close(&e);
}

/* Set f's mtime to sec (times alone, as the writeback cache does). */
static void set_mtime(struct env *e, uint64_t ino, time_t sec)
{
	struct stat in = { 0 }, st;

	in.st_mtim.tv_sec = sec;
	in.st_ctim.tv_sec = sec;
	CHECK_OK(fs_vfs_setattr(e->fs, ino, &in, FS_SET_MTIME | FS_SET_CTIME,
				&st));
	CHECK_EQ(st.st_mtim.tv_sec, sec);
}

static uint64_t ticket(struct env *e)
{
	return fs_store_ticket(fs_vfs_store(e->fs));
}

/*
 * Times set alone (fs_vfs.c, Times) are held in the node: no transaction
 * for them or for an fdatasync, one at an fsync, at 64 dirty files (or
 * at the next fdatasync when the zones had no room then), and at the
 * close; a dirty file the kernel forgot keeps its times, one unlinked
 * meanwhile is freed cleanly.
 */
static void test_vfs_times(void)
{
	struct fs_check_report r;
	uint64_t f, g, h, many[64], t0;
	struct fs_inode in;
	struct stat st;
	struct env e;

	if (env_new(&e))
		goto out;
	f = mk(&e, FS_ROOT_INO, "f", S_IFREG | 0644, 0, NULL);
	g = mk(&e, FS_ROOT_INO, "g", S_IFREG | 0644, 0, NULL);
	h = mk(&e, FS_ROOT_INO, "h", S_IFREG | 0644, 0, NULL);
	put(&e, f, 0, 3 * BLK);
	t0 = ticket(&e);
	set_mtime(&e, f, 1000000);
	CHECK_OK(fs_vfs_getattr(e.fs, f, &st));
	CHECK_EQ(st.st_mtim.tv_sec, 1000000);
	CHECK_OK(fs_vfs_fsync(e.fs, 1));
	CHECK_EQ(ticket(&e), t0); /* fdatasync: nothing to commit */
	CHECK_OK(fs_vfs_fsync(e.fs, 0));
	CHECK(ticket(&e) > t0); /* fsync: the times */
	set_mtime(&e, f, 2000000);
	set_mtime(&e, g, 3000000); /* g: forgotten by mk, kept while dirty */
	set_mtime(&e, h, 4000000);
	CHECK_OK(fs_vfs_unlink(e.fs, FS_ROOT_INO, "h"));
	for (int i = 0; i < 64; i++) {
		char name[16];

		snprintf(name, sizeof(name), "m%d", i);
		many[i] = mk(&e, FS_ROOT_INO, name, S_IFREG | 0644, 0, NULL);
	}
	t0 = ticket(&e);
	for (int i = 0; i < 61; i++) /* f and g are dirty already */
		set_mtime(&e, many[i], 5000000 + i);
	CHECK_EQ(ticket(&e), t0);
	/* the 64th's flush finds no room: the setattr works, times wait */
	CHECK_EQ(vol_debug_space_refuse(vol, 0), -1);
	set_mtime(&e, many[61], 5000061);
	CHECK_EQ(vol_debug_space_refuse(vol, -1), -1);
	CHECK_EQ(ticket(&e), t0);
	CHECK_OK(fs_vfs_fsync(e.fs, 1)); /* due: flushed now */
	CHECK(ticket(&e) > t0);
	t0 = ticket(&e);
	set_mtime(&e, many[62], 6000000);
	set_mtime(&e, f, 7000000);
	CHECK_EQ(ticket(&e), t0);
	if (env_store(&e) == 0) { /* the close stores the rest */
		inode_get(&e, f, &in);
		CHECK_EQ(in.mtime.sec, 7000000);
		inode_get(&e, g, &in);
		CHECK_EQ(in.mtime.sec, 3000000);
		inode_get(&e, many[0], &in);
		CHECK_EQ(in.mtime.sec, 5000000);
		inode_get(&e, many[62], &in);
		CHECK_EQ(in.mtime.sec, 6000000);
		expect_clean(&e, &r);
	}
out:
	env_close(&e);
}

int main(void)
{
	double t0 = now_s();

	vol_set_log(test_log);
	if (CHECK_OK(scratch_setup("check")) < 0 || vol_setup() < 0)
		return CHECK_DONE();
	run("clean", test_clean);
	run("damage", test_damage);
	run("busy", test_busy);
	run("cap", test_cap);
	run("vfs ops", test_vfs_ops);
	run("vfs refuse", test_vfs_refuse);
	run("vfs enospc", test_vfs_enospc);
	run("vfs falloc undo", test_vfs_falloc_undo);
	run("vfs times", test_vfs_times);
	CHECK_OK(vol_close(vol));
	scratch_cleanup();
	printf("fs_check_test: %.1f s\n", now_s() - t0);
	return CHECK_DONE();
}
