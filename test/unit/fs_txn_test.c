/*
 * fs_txn_test.c - the filesystem's transactions (fs/fs_txn.c) with the
 * B+tree, the allocator and the item formats over real sixfold volumes
 * (mkfs in a temporary directory, removed at exit, also on failure).
 *
 * Workload: a small model filesystem (files in the root directory, each
 * an inode, a dirent, a dirindex and extents over data blocks whose
 * contents name their file, block and version) driven through many
 * transactions that group several operations each (create, append data
 * in runs, overwrite blocks in place, delete with frees), with a narrow
 * B+tree (fanout 8) so splits and merges happen at every level.  Every
 * operation reserves first (a full transaction gives -E2BIG: commit and
 * retry) and then never fails for want of room; records never exceed
 * VOL_TXN_MAX_RECS.  fs_store_check (tree, allocator recount, every item,
 * every extent allocated, allocated blocks = nodes + extent blocks) after
 * every batch; closed and reopened, the tree, the extents and every data
 * block match the model.
 * Failure: a commit with three zones failed (vol_debug_zone_fault) and a
 * short write timeout returns -EIO and leaves the store in the sticky
 * error state (begin, check and close return it); reopened, the
 * filesystem is exactly the model before or after that transaction, never
 * a mix, and works on.  Aborts: one that changed no tree item restores
 * allocations, inode numbers and data writes; one after a tree change is
 * sticky and the reopened state is the one before.  Budget: -E2BIG and
 * -ENOSPC from fs_txn_reserve change nothing; going past a reservation
 * is -E2BIG; fs_txn_cost of a 1 MiB write fits.  mkfs: the root
 * directory, -EEXIST over a filesystem, force, a damaged superblock
 * (-EUCLEAN), a volume too small (-ENOSPC).
 *
 * TEST_SEED=n repeats a run; TEST_VERBOSE=1 shows the log.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_txn.h"
#include "test/lib/check.h"
#include "test/lib/tutil.h"
#include "test/lib/scratch.h"
#include "volume/volume.h"

#define BLK FS_BLOCK_BYTES
/*
 * Write timeouts: the workloads run under a long one, since a busy
 * machine can stall a flush for longer than a short one (which then
 * fails the volume, as it should, and the test with it); sticky() sets
 * the short one right before it takes the quorum away.
 */
#define TIMEOUT_MS 30000
#define SHORT_TIMEOUT_MS 300

/* ---- random numbers, log ---- */

static char last_log[512];

static void test_log(int level, const char *msg)
{
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* ---- volume and store ---- */

struct env {
	char dirs[VOL_ZONES][128];
	const char *paths[VOL_ZONES];
	struct vol *v;
	struct fs_store *st;
};

static int env_mkvol(struct env *e, const char *name, uint64_t max)
{
	memset(e, 0, sizeof(*e));
	return CHECK_OK(scratch_mkfs(name, max, e->dirs, e->paths));
}

static int env_openvol(struct env *e)
{
	struct vol_open_opts o = {
		.paths = e->paths,
		.npaths = VOL_ZONES,
		.key = &scratch.key,
		.write_timeout_ms = TIMEOUT_MS,
	};

	return CHECK_OK(vol_open(&o, &e->v));
}

static int env_open(struct env *e)
{
	struct fs_store_opts so = { .bt_fanout = FS_BT_MIN_FANOUT };

	if (env_openvol(e) < 0)
		return -1;
	return CHECK_OK(fs_store_open(e->v, &so, &e->st));
}

/* New volume and filesystem, opened (B+tree fanout: 0 for the most). */
static int env_new(struct env *e, const char *name, uint32_t fanout)
{
	struct fs_store_opts so = { .bt_fanout = fanout };
	struct fs_mkfs_opts mo = { 0 };

	if (env_mkvol(e, name, 0) < 0 || env_openvol(e) < 0)
		return -1;
	if (CHECK_OK(fs_store_mkfs(e->v, &mo)) < 0)
		return -1;
	return CHECK_OK(fs_store_open(e->v, &so, &e->st));
}

static void env_close(struct env *e, int want_store, int want_vol)
{
	int ret = fs_store_close(e->st);

	if (ret != want_store)
		fprintf(stderr, "  last message: %s\n", last_log);
	CHECK_EQ(ret, want_store);
	CHECK_EQ(vol_close(e->v), want_vol);
	e->st = NULL;
	e->v = NULL;
}

/* ---- the model filesystem ---- */

#define FILES_MAX 300
#define EXT_MAX 16
#define FILE_BLOCKS_MAX 600
#define XATTRS 3 /* "user.x0".."user.x2" per file */
#define XATTR_LEN_MAX 2800

struct mext {
	uint64_t fblock, lba;
	uint32_t n;
};

struct mfile {
	uint64_t ino; /* 0: unused slot */
	char name[24];
	uint8_t name_len;
	uint64_t dirent_off; /* DIRENT key offset */
	uint64_t index; /* DIRINDEX sequence */
	uint64_t nblocks; /* file blocks, all mapped */
	struct mext ext[EXT_MAX];
	unsigned next;
	uint32_t ver[FILE_BLOCKS_MAX]; /* data version per block */
	uint16_t xlen[XATTRS]; /* xattr value lengths, 0: none */
	uint8_t xver[XATTRS]; /* and versions */
};

struct model {
	struct mfile f[FILES_MAX];
	unsigned nfiles;
	uint32_t names; /* names handed out */
};

static struct model m, m_saved;

static void model_reset(void)
{
	memset(&m, 0, sizeof(m));
}

/* Data block contents: ino, file block, version, then a pattern. */
static void fill_block(uint8_t *b, uint64_t ino, uint64_t fblock, uint32_t ver)
{
	uint64_t seed = ino * 1000003 + fblock * 7919 + ver;

	memset(b, 0, BLK);
	memcpy(b, &ino, 8);
	memcpy(b + 8, &fblock, 8);
	memcpy(b + 16, &ver, 4);
	for (unsigned i = 24; i < BLK; i += 8) {
		memcpy(b + i, &seed, 8);
		seed = seed * 6364136223846793005ull + 1;
	}
}

static int txn_failures; /* an operation failed after its reserve */
static unsigned op_recs0, op_cost; /* records before, and the bound */

/* fs_txn_reserve, noting the worst case to compare with what happens. */
static int reserve(struct fs_store *st, struct fs_txn *t,
		   const struct fs_txn_res *res)
{
	int ret;

	op_recs0 = fs_txn_records(t);
	op_cost = fs_txn_cost(st, res) - 1; /* less the superblock */
	ret = fs_txn_reserve(t, res);
	if (ret)
		op_cost = 0;
	return ret;
}

/* Note an operation error that may not happen after a reserve. */
static int op_fail(int ret, const char *what)
{
	if (ret >= 0)
		return 0;
	fprintf(stderr, "op %s: %s (%d)\n", what, strerror(-ret), ret);
	txn_failures++;
	return ret;
}

static int root_get(struct fs_store *st, struct fs_inode *in)
{
	struct fs_bt_key k = fs_key_inode(FS_ROOT_INO);
	uint8_t buf[FS_INODE_BYTES];
	int ret = fs_bt_lookup(fs_store_tree(st), &k, buf, sizeof(buf));

	if (ret < 0)
		return ret;
	return fs_inode_decode(&k, buf, (size_t)ret, in);
}

static int inode_put(struct fs_txn *t, uint64_t ino, const struct fs_inode *in,
		     int insert)
{
	struct fs_bt_key k = fs_key_inode(ino);
	uint8_t buf[FS_INODE_BYTES];
	size_t len = fs_inode_encode(in, buf);

	return insert ? fs_txn_insert(t, &k, buf, len) :
			fs_txn_update(t, &k, buf, len);
}

static void file_inode(const struct mfile *f, struct fs_inode *in)
{
	memset(in, 0, sizeof(*in));
	in->mode = FS_S_IFREG | 0600;
	in->nlink = 1;
	in->size = f->nblocks * BLK;
	in->blocks = f->nblocks;
	in->generation = f->ino;
	in->mtime.sec = 1700000000;
}

static struct mfile *free_slot(void)
{
	for (unsigned i = 0; i < FILES_MAX; i++)
		if (!m.f[i].ino)
			return &m.f[i];
	return NULL;
}

static struct mfile *any_file(void)
{
	unsigned start = rnd_below(FILES_MAX);

	for (unsigned i = 0; i < FILES_MAX; i++) {
		struct mfile *f = &m.f[(start + i) % FILES_MAX];

		if (f->ino)
			return f;
	}
	return NULL;
}

/* A free DIRENT offset for hash h (collision counter in the low bits). */
static int dirent_slot(struct fs_store *st, uint64_t h, uint64_t *off)
{
	for (uint64_t c = 0; c <= FS_HASH_COLL_MASK; c++) {
		struct fs_bt_key k = fs_key_dirent(FS_ROOT_INO, h | c);
		int ret = fs_bt_lookup(fs_store_tree(st), &k, NULL, 0);

		if (ret == -ENOENT) {
			*off = h | c;
			return 0;
		}
		if (ret < 0)
			return ret;
	}
	return -ENOSPC;
}

static int insert_entry(struct fs_txn *t, struct mfile *f)
{
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	struct fs_bt_key k = fs_key_dirent(FS_ROOT_INO, f->dirent_off);
	struct fs_dirent d = {
		.ino = f->ino,
		.cookie = f->index,
		.type = FS_FT_OF_MODE(FS_S_IFREG),
		.name_len = f->name_len,
	};
	size_t len;
	int ret;

	memcpy(d.name, f->name, f->name_len);
	len = fs_dirent_encode(&d, buf);
	ret = op_fail(fs_txn_insert(t, &k, buf, len), "dirent");
	if (ret)
		return ret;
	k = fs_key_dirindex(FS_ROOT_INO, f->index);
	d.cookie = f->dirent_off;
	len = fs_dirent_encode(&d, buf);
	return op_fail(fs_txn_insert(t, &k, buf, len), "dirindex");
}

/* Create a file in /: inode, dirent, dirindex, root update. */
static int op_create(struct fs_store *st, struct fs_txn *t)
{
	struct fs_txn_res res = { .inserts = 3, .updates = 1 };
	struct mfile *f = free_slot();
	struct fs_inode root, in;
	uint64_t h;
	int ret;

	if (!f)
		return 0;
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	memset(f, 0, sizeof(*f));
	f->name_len = (uint8_t)snprintf(f->name, sizeof(f->name), "file-%u",
					m.names++);
	h = fs_name_hash(fs_store_sb(st)->hash_key, f->name, f->name_len);
	if (op_fail(dirent_slot(st, h, &f->dirent_off), "slot") ||
	    op_fail(root_get(st, &root), "root") ||
	    op_fail(fs_txn_new_ino(t, &f->ino), "ino"))
		return -EIO;
	f->index = root.next_index++;
	file_inode(f, &in);
	if (op_fail(inode_put(t, f->ino, &in, 1), "inode") ||
	    insert_entry(t, f) ||
	    op_fail(inode_put(t, FS_ROOT_INO, &root, 0), "root update"))
		return -EIO;
	m.nfiles++;
	return 0;
}

/* Extent item of f's extent i. */
static int extent_put(struct fs_txn *t, const struct mfile *f, unsigned i)
{
	struct fs_extent e = { f->ext[i].lba, f->ext[i].n, 0 };
	struct fs_bt_key k = fs_key_extent(f->ino, f->ext[i].fblock);
	uint8_t buf[FS_EXTENT_BYTES];

	return fs_txn_insert(t, &k, buf, fs_extent_encode(&e, buf));
}

/* Allocate, write and map one run of up to want blocks at f's end. */
static int append_run(struct fs_txn *t, struct mfile *f, uint32_t want)
{
	static uint8_t blk[BLK];
	uint64_t goal = 0, lba;
	uint32_t n;
	int ret;

	if (f->next)
		goal = f->ext[f->next - 1].lba + f->ext[f->next - 1].n;
	ret = op_fail(fs_txn_alloc(t, goal, want, &lba, &n), "alloc");
	for (uint32_t i = 0; !ret && i < n; i++) {
		fill_block(blk, f->ino, f->nblocks + i, 1);
		ret = op_fail(fs_txn_write(t, lba + i, blk), "write");
	}
	if (ret)
		return ret;
	f->ext[f->next] = (struct mext){ f->nblocks, lba, n };
	for (uint32_t i = 0; i < n; i++)
		f->ver[f->nblocks + i] = 1;
	f->nblocks += n;
	return op_fail(extent_put(t, f, f->next++), "extent");
}

/* Append up to k blocks to a file, in at most runs runs. */
static int append(struct fs_store *st, struct fs_txn *t, uint32_t k,
		  uint32_t runs)
{
	struct mfile *f = any_file();
	struct fs_txn_res res = {
		.data_blocks = k,
		.allocs = runs,
		.alloc_blocks = k,
		.inserts = runs,
		.updates = 1,
	};
	struct fs_inode in;
	uint64_t target;
	int ret;

	if (!f || f->next + runs > EXT_MAX || f->nblocks + k > FILE_BLOCKS_MAX)
		return 0;
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	target = f->nblocks + k;
	while (f->nblocks < target && runs--)
		if (append_run(t, f, (uint32_t)(target - f->nblocks)))
			return -EIO;
	file_inode(f, &in);
	return op_fail(inode_put(t, f->ino, &in, 0), "inode update");
}

static int op_append(struct fs_store *st, struct fs_txn *t)
{
	return append(st, t, 1 + rnd_below(40), 4);
}

/* A 1 MiB write: 256 blocks in at most 2 runs (fs_txn.h, Budget). */
static int op_bigwrite(struct fs_store *st, struct fs_txn *t)
{
	return append(st, t, 256, 2);
}

/* Rewrite one block of a file in place (a new version). */
static int op_overwrite(struct fs_store *st, struct fs_txn *t)
{
	static uint8_t blk[BLK];
	struct fs_txn_res res = { .data_blocks = 1 };
	struct mfile *f = any_file();
	uint64_t fb;
	int ret;

	(void)st;
	if (!f || !f->nblocks)
		return 0;
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	fb = rnd_below((uint32_t)f->nblocks);
	for (unsigned i = 0; i < f->next; i++) {
		struct mext *e = &f->ext[i];

		if (fb < e->fblock || fb >= e->fblock + e->n)
			continue;
		fill_block(blk, f->ino, fb, ++f->ver[fb]);
		return op_fail(fs_txn_write(t, e->lba + fb - e->fblock, blk),
			       "overwrite");
	}
	return op_fail(-ENOENT, "overwrite: no extent");
}

static void xattr_name(int i, char *name)
{
	snprintf(name, 8, "user.x%d", i);
}

static void xattr_value(const struct mfile *f, int i, uint8_t *v)
{
	for (unsigned j = 0; j < f->xlen[i]; j++)
		v[j] = (uint8_t)(f->ino * 31 + (uint64_t)i * 7 + f->xver[i] +
				 j);
}

static struct fs_bt_key xattr_key(struct fs_store *st, const struct mfile *f,
				  int i)
{
	char name[8];

	xattr_name(i, name);
	return fs_key_xattr(f->ino,
			    fs_name_hash(fs_store_sb(st)->hash_key, name, 7));
}

/* Set (insert or update) or remove an xattr of a file. */
static int op_xattr(struct fs_store *st, struct fs_txn *t)
{
	static uint8_t val[XATTR_LEN_MAX], item[FS_BT_MAX_VALUE_BYTES];
	struct mfile *f = any_file();
	int i = (int)rnd_below(XATTRS), del, ret;
	struct fs_txn_res res = { 0 };
	struct fs_bt_key k;
	char name[8];
	size_t len;

	if (!f)
		return 0;
	del = f->xlen[i] && rnd_below(4) == 0;
	if (del)
		res.deletes = 1;
	else if (f->xlen[i])
		res.updates = 1;
	else
		res.inserts = 1;
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	k = xattr_key(st, f, i);
	if (del) {
		f->xlen[i] = 0;
		return op_fail(fs_txn_delete(t, &k), "xattr delete");
	}
	ret = f->xlen[i] != 0;
	f->xlen[i] = (uint16_t)(1 + rnd_below(XATTR_LEN_MAX));
	f->xver[i]++;
	xattr_value(f, i, val);
	xattr_name(i, name);
	len = fs_xattr_encode(name, 7, val, f->xlen[i], item);
	return op_fail(ret ? fs_txn_update(t, &k, item, len) :
			     fs_txn_insert(t, &k, item, len),
		       "xattr set");
}

/* Remove f's xattrs (in op_delete's reservation). */
static int drop_xattrs(struct fs_store *st, struct fs_txn *t, struct mfile *f)
{
	for (int i = 0; i < XATTRS; i++) {
		struct fs_bt_key k = xattr_key(st, f, i);

		if (f->xlen[i] && op_fail(fs_txn_delete(t, &k), "xattr delete"))
			return -EIO;
	}
	return 0;
}

static unsigned xattr_count(const struct mfile *f)
{
	unsigned n = 0;

	for (int i = 0; i < XATTRS; i++)
		n += f->xlen[i] != 0;
	return n;
}

/* Free and unmap f's extents from i on. */
static int drop_extents(struct fs_txn *t, struct mfile *f, unsigned from)
{
	for (unsigned i = from; i < f->next; i++) {
		struct fs_bt_key k = fs_key_extent(f->ino, f->ext[i].fblock);

		if (op_fail(fs_txn_free(t, f->ext[i].lba, f->ext[i].n),
			    "free") ||
		    op_fail(fs_txn_delete(t, &k), "extent delete"))
			return -EIO;
	}
	if (from < f->next)
		f->nblocks = f->ext[from].fblock;
	f->next = from;
	return 0;
}

/* Truncate a file by its last (up to) 4 extents. */
static int op_truncate(struct fs_store *st, struct fs_txn *t, struct mfile *f)
{
	unsigned n = f->next < 4 ? f->next : 4;
	struct fs_txn_res res = { .frees = n, .deletes = n, .updates = 1 };
	struct fs_inode in;
	int ret;

	(void)st;
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	if (drop_extents(t, f, f->next - n))
		return -EIO;
	file_inode(f, &in);
	return op_fail(inode_put(t, f->ino, &in, 0), "inode update");
}

/* Delete a file: free its extents, remove its items, update /.  A file
 * of more than 4 extents is truncated first (by a separate operation). */
static int op_delete(struct fs_store *st, struct fs_txn *t)
{
	struct mfile *f = any_file();
	struct fs_txn_res res = { .updates = 1 };
	struct fs_bt_key k;
	struct fs_inode root;
	int ret;

	if (!f)
		return 0;
	if (f->next > 4)
		return op_truncate(st, t, f);
	res.frees = f->next;
	res.deletes = f->next + 3 + xattr_count(f);
	ret = reserve(st, t, &res);
	if (ret)
		return ret;
	ret = drop_extents(t, f, 0);
	ret = ret ? ret : drop_xattrs(st, t, f);
	k = fs_key_dirent(FS_ROOT_INO, f->dirent_off);
	ret = ret ? ret : op_fail(fs_txn_delete(t, &k), "dirent delete");
	k = fs_key_dirindex(FS_ROOT_INO, f->index);
	ret = ret ? ret : op_fail(fs_txn_delete(t, &k), "dirindex delete");
	k = fs_key_inode(f->ino);
	ret = ret ? ret : op_fail(fs_txn_delete(t, &k), "inode delete");
	ret = ret ? ret : op_fail(root_get(st, &root), "root");
	root.mtime.sec++;
	ret = ret ? ret : op_fail(inode_put(t, FS_ROOT_INO, &root, 0), "root");
	memset(f, 0, sizeof(*f));
	m.nfiles--;
	return ret;
}

typedef int (*op_fn)(struct fs_store *st, struct fs_txn *t);

/* One random operation. */
static op_fn pick_op(void)
{
	uint32_t r = rnd_below(100);

	if (m.nfiles < 20 || r < 20)
		return op_create;
	if (r < 47)
		return op_append;
	if (r < 50)
		return op_bigwrite;
	if (r < 65)
		return op_overwrite;
	if (r < 85)
		return op_xattr;
	return op_delete;
}

static int commit(struct fs_txn **t)
{
	int ret = fs_txn_commit(*t);

	*t = NULL;
	if (!ret)
		m_saved = m;
	return CHECK_OK(ret);
}

/* Run ops operations, several per transaction; commit at the end. */
static void workload(struct env *e, int ops, int *txns)
{
	struct fs_txn *t = NULL;
	unsigned max_recs = 0;

	for (int i = 0; i < ops; i++) {
		op_fn op = pick_op();
		int ret;

		if (!t && CHECK_OK(fs_txn_begin(e->st, &t)) < 0)
			return;
		ret = op(e->st, t);
		if (ret == -E2BIG) { /* full: commit, retry alone */
			if (commit(&t) < 0 ||
			    CHECK_OK(fs_txn_begin(e->st, &t)) < 0)
				return;
			(*txns)++;
			ret = op(e->st, t);
		}
		CHECK_OK(ret);
		if (op_cost && fs_txn_records(t) > op_recs0 + op_cost) {
			fprintf(stderr, "op used %u records, bound %u\n",
				fs_txn_records(t) - op_recs0, op_cost);
			txn_failures++;
		}
		op_cost = 0;
		if (fs_txn_records(t) > max_recs)
			max_recs = fs_txn_records(t);
		if (rnd_below(16) == 0) {
			if (commit(&t) < 0)
				return;
			(*txns)++;
		}
	}
	if (t && commit(&t) == 0)
		(*txns)++;
	CHECK(max_recs <= VOL_TXN_MAX_RECS);
	CHECK_EQ(txn_failures, 0);
}

/* ---- checking the filesystem against the model ---- */

struct ext_walk {
	const struct mfile *f;
	unsigned seen;
	int bad;
};

static int ext_cb(void *arg, const struct fs_bt_key *k, const void *val,
		  size_t len)
{
	struct ext_walk *w = arg;
	struct fs_extent x;
	const struct mext *me = NULL;

	if (fs_extent_decode(k, val, len, &x))
		return -EUCLEAN;
	for (unsigned i = 0; i < w->f->next; i++)
		if (w->f->ext[i].fblock == k->offset)
			me = &w->f->ext[i];
	w->bad += !me || me->lba != x.lba || me->n != x.nblocks;
	w->seen++;
	return 0;
}

static int verify_xattrs(struct env *e, const struct mfile *f)
{
	static uint8_t item[FS_BT_MAX_VALUE_BYTES], want[XATTR_LEN_MAX];
	int bad = 0;

	for (int i = 0; i < XATTRS; i++) {
		struct fs_bt_key k = xattr_key(e->st, f, i);
		int ret = fs_bt_lookup(fs_store_tree(e->st), &k, item,
				       sizeof(item));
		struct fs_xattr x;

		if (!f->xlen[i]) {
			bad += ret != -ENOENT;
			continue;
		}
		xattr_value(f, i, want);
		bad += ret < 0 ||
		       fs_xattr_decode(&k, item, (size_t)ret,
				       fs_store_sb(e->st)->hash_key, &x) ||
		       x.value_len != f->xlen[i] ||
		       memcmp(x.value, want, f->xlen[i]);
	}
	return bad;
}

static int verify_file(struct env *e, const struct mfile *f)
{
	static uint8_t blk[BLK], want[BLK];
	struct fs_bt_key k = fs_key_inode(f->ino);
	struct fs_bt_key lo = fs_key_extent(f->ino, 0);
	struct fs_bt_key hi = fs_key_extent(f->ino, UINT64_MAX);
	struct ext_walk w = { .f = f };
	struct fs_dirent d;
	struct fs_inode in;
	uint8_t buf[FS_DIRENT_MAX_BYTES];
	int ret, bad = 0;

	ret = fs_bt_lookup(fs_store_tree(e->st), &k, buf, sizeof(buf));
	if (ret < 0 || fs_inode_decode(&k, buf, (size_t)ret, &in))
		return 1;
	bad += in.size != f->nblocks * BLK || in.blocks != f->nblocks;
	k = fs_key_dirent(FS_ROOT_INO, f->dirent_off);
	ret = fs_bt_lookup(fs_store_tree(e->st), &k, buf, sizeof(buf));
	bad += ret < 0 ||
	       fs_dirent_decode(&k, buf, (size_t)ret,
				fs_store_sb(e->st)->hash_key, &d) ||
	       d.ino != f->ino || strcmp(d.name, f->name) ||
	       d.cookie != f->index;
	bad += fs_bt_iterate(fs_store_tree(e->st), &lo, &hi, ext_cb, &w) != 0;
	bad += verify_xattrs(e, f);
	bad += w.bad + (w.seen != f->next);
	if (bad)
		fprintf(stderr, "file %llu: inode, entry, extents or xattrs\n",
			(unsigned long long)f->ino);
	for (unsigned i = 0; i < f->next; i++) {
		for (uint32_t j = 0; j < f->ext[i].n; j++) {
			uint64_t fb = f->ext[i].fblock + j;
			int b;

			fill_block(want, f->ino, fb, f->ver[fb]);
			ret = fs_store_read(e->st, f->ext[i].lba + j, blk);
			b = ret < 0 || memcmp(blk, want, BLK);
			if (b)
				fprintf(stderr,
					"file %llu block %llu at %llu: "
					"version %u, want %u\n",
					(unsigned long long)f->ino,
					(unsigned long long)fb,
					(unsigned long long)f->ext[i].lba + j,
					*(uint32_t *)(blk + 16), f->ver[fb]);
			bad += b;
		}
	}
	return bad;
}

static int count_inode(void *arg, const struct fs_bt_key *k, const void *val,
		       size_t len)
{
	(void)val;
	(void)len;
	*(unsigned *)arg += k->type == FS_ITEM_INODE;
	return 0;
}

static void verify_model(struct env *e, const char *when)
{
	struct fs_bt_key lo = { 0, 0, 0 };
	struct fs_bt_key hi = { UINT64_MAX, UINT8_MAX, UINT64_MAX };
	struct fs_store_check_stats cs;
	unsigned inodes = 0;
	int bad = 0;

	if (CHECK_OK(fs_store_check(e->st, &cs)) < 0)
		fprintf(stderr, "%s: check failed: %s\n", when, last_log);
	for (unsigned i = 0; i < FILES_MAX; i++)
		if (m.f[i].ino)
			bad += verify_file(e, &m.f[i]);
	CHECK_OK(fs_bt_iterate(fs_store_tree(e->st), &lo, &hi, count_inode,
			       &inodes));
	if (bad || inodes != m.nfiles + 1)
		fprintf(stderr, "%s: %d files differ, %u inodes for %u\n", when,
			bad, inodes, m.nfiles + 1);
	CHECK_EQ(bad, 0);
	CHECK_EQ(inodes, m.nfiles + 1);
}

/* ---- tests ---- */

static void test_workload(void)
{
	struct fs_store_check_stats cs;
	struct env e;
	int txns = 0;

	model_reset();
	if (env_new(&e, "work", FS_BT_MIN_FANOUT) < 0)
		return;
	for (int round = 0; round < 3; round++) {
		workload(&e, 200, &txns);
		verify_model(&e, "workload");
	}
	CHECK_OK(fs_store_check(e.st, &cs));
	printf("  %u files, %d transactions, height %u, %llu nodes, %llu "
	       "data blocks, gen %llu\n",
	       m.nfiles, txns, cs.tree.height, (unsigned long long)cs.nodes,
	       (unsigned long long)cs.extent_blocks,
	       (unsigned long long)fs_store_sb(e.st)->gen);
	env_close(&e, 0, 0);
	if (env_open(&e) < 0)
		return;
	verify_model(&e, "reopened");
	workload(&e, 100, &txns);
	env_close(&e, 0, 0);
	if (env_open(&e) < 0)
		return;
	verify_model(&e, "reopened twice");
	env_close(&e, 0, 0);
}

/*
 * A transaction (a create, appends, an overwrite, a delete) whose commit
 * fails with nfault zones failed; reopened: all of it or none (the
 * superblock's generation says which).
 */
static void sticky(const char *name, int nfault)
{
	static struct model before, after;
	uint64_t gen;
	struct fs_txn *t;
	struct env e;
	int txns = 0, ret, there;

	model_reset();
	if (env_new(&e, name, FS_BT_MIN_FANOUT) < 0)
		return;
	workload(&e, 80, &txns);
	CHECK_OK(fs_store_wait(e.st, fs_store_ticket(e.st))); /* an fsync */
	before = m;
	gen = fs_store_sb(e.st)->gen;
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	CHECK_OK(op_create(e.st, t));
	for (int i = 0; i < 4; i++) /* -E2BIG: did nothing */
		CHECK(op_append(e.st, t) != -EIO);
	CHECK(op_overwrite(e.st, t) != -EIO);
	CHECK(op_delete(e.st, t) != -EIO);
	CHECK_EQ(txn_failures, 0);
	after = m;
	CHECK_OK(vol_debug_write_timeout(e.v, SHORT_TIMEOUT_MS));
	for (int z = 0; z < nfault; z++)
		CHECK_OK(vol_debug_zone_fault(e.v, z, -EIO));
	/* The commit is ordered at once; the quorum's loss shows when it
	 * is waited for, and fails every later commit (sticky). */
	ret = fs_txn_commit(t);
	if (!ret)
		ret = fs_store_wait(e.st, fs_store_ticket(e.st));
	CHECK_EQ(ret, -EIO);
	if (CHECK_OK(fs_txn_begin(e.st, &t)) == 0) {
		/* refused before it changes anything, and sticky from now */
		CHECK_EQ(op_create(e.st, t), -EIO);
		CHECK_EQ(fs_txn_commit(t), -EIO);
	}
	CHECK_EQ(fs_store_error(e.st), ret);
	CHECK_EQ(fs_txn_begin(e.st, &t), ret);
	CHECK_EQ(fs_store_check(e.st, NULL), ret);
	env_close(&e, ret, -EIO);
	/* The faults were this process's: all six zones are back. */
	if (env_open(&e) < 0)
		return;
	there = fs_store_sb(e.st)->gen == gen + 1;
	CHECK(there || fs_store_sb(e.st)->gen == gen);
	m = there ? after : before;
	printf("  %d zones failed: reopened in the state %s the "
	       "transaction\n",
	       nfault, there ? "after" : "before");
	verify_model(&e, "after a failed commit");
	workload(&e, 30, &txns);
	verify_model(&e, "and on");
	env_close(&e, 0, 0);
}

static void test_sticky(void)
{
	sticky("sticky3", 3);
	sticky("sticky6", 6);
}

static void test_abort(void)
{
	static uint8_t blk[BLK];
	struct fs_txn_res res = { .data_blocks = 8,
				  .allocs = 1,
				  .alloc_blocks = 8 };
	struct fs_alloc_statfs s0, s1;
	uint64_t ino0, ino1, lba;
	struct fs_bt_key k = fs_key_inode(5000);
	struct fs_txn *t;
	struct env e;
	uint32_t n;

	model_reset();
	if (env_new(&e, "abort", 0) < 0)
		return;
	/* Clean: allocation, data, inode number; no tree change. */
	fs_alloc_statfs(fs_store_alloc(e.st), &s0);
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	CHECK_OK(fs_txn_reserve(t, &res));
	CHECK_OK(fs_txn_new_ino(t, &ino0));
	CHECK_OK(fs_txn_alloc(t, 0, 8, &lba, &n));
	memset(blk, 0x77, BLK);
	CHECK_OK(fs_txn_write(t, lba, blk));
	CHECK_EQ(fs_txn_write(t, 0, blk), -EINVAL); /* the superblock */
	CHECK_EQ(fs_txn_write(t, VOL_PG_BLOCKS + 200, blk), -EINVAL);
	fs_txn_abort(t);
	CHECK_EQ(fs_store_error(e.st), 0);
	fs_alloc_statfs(fs_store_alloc(e.st), &s1);
	CHECK_EQ(s1.used_blocks, s0.used_blocks);
	CHECK_EQ(s1.reserved_blocks, 0);
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	CHECK_OK(fs_txn_new_ino(t, &ino1));
	CHECK_EQ(ino1, ino0);
	CHECK_OK(fs_txn_commit(t));
	CHECK_OK(fs_store_read(e.st, lba, blk));
	CHECK_EQ(blk[0], 0); /* the aborted write never happened */
	CHECK_OK(fs_store_check(e.st, NULL));
	/* Past the reservation: -E2BIG, the tree unchanged. */
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	res = (struct fs_txn_res){ .inserts = 1 };
	CHECK_OK(fs_txn_reserve(t, &res));
	fill_block(blk, 1, 1, 1);
	CHECK_EQ(fs_txn_update(t, &k, blk, 10), -E2BIG);
	CHECK_OK(fs_txn_insert(t, &k, blk, 10));
	k.objectid++;
	CHECK_EQ(fs_txn_insert(t, &k, blk, 10), -E2BIG);
	CHECK_EQ(fs_bt_lookup(fs_store_tree(e.st), &k, NULL, 0), -ENOENT);
	/* Dirty: sticky, and the reopened state is the one before. */
	fs_txn_abort(t);
	CHECK_EQ(fs_store_error(e.st), -EIO);
	CHECK_EQ(fs_txn_begin(e.st, &t), -EIO);
	env_close(&e, -EIO, 0);
	if (env_open(&e) < 0)
		return;
	k.objectid--;
	CHECK_EQ(fs_bt_lookup(fs_store_tree(e.st), &k, NULL, 0), -ENOENT);
	CHECK_OK(fs_store_check(e.st, NULL));
	env_close(&e, 0, 0);
}

static void test_budget(void)
{
	struct fs_txn_res mib = { .data_blocks = 256,
				  .allocs = 2,
				  .alloc_blocks = 256,
				  .inserts = 2,
				  .updates = 1 };
	struct fs_txn_res big = { .data_blocks = 320 };
	struct fs_alloc_statfs s0, s1;
	unsigned recs, creates = 0, appends;
	struct fs_txn *t;
	struct env e;
	int ret = 0;

	model_reset();
	if (env_new(&e, "budget", 0) < 0)
		return;
	printf("  1 MiB write: at most %u records at height %u\n",
	       fs_txn_cost(e.st, &mib), fs_bt_height(fs_store_tree(e.st)));
	CHECK(fs_txn_cost(e.st, &mib) <= VOL_TXN_MAX_RECS);
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	CHECK_OK(fs_txn_reserve(t, &mib));
	/* Too big: -E2BIG, nothing reserved or allocated. */
	recs = fs_txn_records(t);
	fs_alloc_statfs(fs_store_alloc(e.st), &s0);
	CHECK_EQ(fs_txn_reserve(t, &big), -E2BIG);
	fs_alloc_statfs(fs_store_alloc(e.st), &s1);
	CHECK_EQ(fs_txn_records(t), recs);
	CHECK_EQ(s1.reserved_blocks, s0.reserved_blocks);
	CHECK_EQ(s1.used_blocks, s0.used_blocks);
	CHECK_OK(fs_txn_commit(t));
	/* Operations share a transaction until it is full. */
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	while (creates < 50 && (ret = op_create(e.st, t)) == 0)
		creates++;
	CHECK_EQ(ret, 0);
	for (appends = 0; appends < 100; appends++)
		if ((ret = op_append(e.st, t)) != 0)
			break;
	CHECK_EQ(ret, -E2BIG);
	CHECK(fs_txn_records(t) <= VOL_TXN_MAX_RECS);
	printf("  %u creates and %u appends in one transaction (%u "
	       "records)\n",
	       creates, appends, fs_txn_records(t));
	CHECK_OK(commit(&t));
	verify_model(&e, "budget");
	env_close(&e, 0, 0);
	/* -ENOSPC on a small volume, nothing changed. */
	if (env_mkvol(&e, "budget-small", 3000) < 0 || env_openvol(&e) < 0)
		return;
	CHECK_OK(fs_store_mkfs(e.v, NULL));
	if (CHECK_OK(fs_store_open(e.v, NULL, &e.st)) < 0)
		return;
	if (CHECK_OK(fs_txn_begin(e.st, &t)) < 0)
		return;
	big = (struct fs_txn_res){ .allocs = 1, .alloc_blocks = 3000 };
	CHECK_EQ(fs_txn_reserve(t, &big), -ENOSPC);
	big.alloc_blocks = 2000;
	CHECK_OK(fs_txn_reserve(t, &big));
	fs_txn_abort(t);
	fs_alloc_statfs(fs_store_alloc(e.st), &s1);
	CHECK_EQ(s1.reserved_blocks, 0);
	CHECK_OK(fs_store_check(e.st, NULL));
	env_close(&e, 0, 0);
}

static void test_mkfs(void)
{
	static uint8_t blk[BLK];
	struct fs_store_check_stats cs;
	struct fs_mkfs_opts mo = { .root_mode = 0700, .root_uid = 26 };
	struct fs_inode root;
	struct vol_txn *vt;
	struct env e;

	model_reset();
	if (env_mkvol(&e, "mkfs", 0) < 0 || env_openvol(&e) < 0)
		return;
	CHECK_EQ(fs_store_open(e.v, NULL, &e.st), -EUCLEAN); /* empty */
	CHECK(strstr(last_log, "S1 ") != NULL);
	CHECK_OK(fs_store_mkfs(e.v, &mo));
	CHECK_EQ(fs_store_mkfs(e.v, &mo), -EEXIST);
	if (CHECK_OK(fs_store_open(e.v, NULL, &e.st)) < 0)
		return;
	CHECK_OK(root_get(e.st, &root));
	CHECK_EQ(root.mode, FS_S_IFDIR | 0700);
	CHECK(root.nlink == 2 && root.uid == 26 && root.next_index == 3);
	CHECK_EQ(fs_store_sb(e.st)->gen, 1);
	CHECK_EQ(fs_store_sb(e.st)->next_ino, FS_FIRST_INO);
	CHECK_OK(fs_store_check(e.st, &cs));
	CHECK_EQ(cs.nodes, 1);
	CHECK_EQ(cs.alloc.used_blocks, 1);
	CHECK_EQ(fs_store_close(e.st), 0);
	/* force: a fresh filesystem over the old one */
	mo.force = 1;
	CHECK_OK(fs_store_mkfs(e.v, &mo));
	if (CHECK_OK(fs_store_open(e.v, NULL, &e.st)) < 0)
		return;
	CHECK_OK(fs_store_check(e.st, &cs));
	CHECK_EQ(cs.tree.items, 1);
	CHECK_EQ(fs_store_close(e.st), 0);
	/* A damaged superblock. */
	CHECK_OK(vol_read(e.v, FS_SB_LBA, blk));
	blk[300] ^= 1;
	if (CHECK_OK(vol_txn_begin(e.v, &vt)) < 0)
		return;
	CHECK_OK(vol_txn_write(vt, FS_SB_LBA, blk));
	CHECK_OK(vol_txn_commit(vt));
	CHECK_EQ(fs_store_open(e.v, NULL, &e.st), -EUCLEAN);
	CHECK(strstr(last_log, "S2 ") != NULL);
	CHECK_EQ(vol_close(e.v), 0);
	/* Too small for a filesystem. */
	if (env_mkvol(&e, "mkfs-tiny", 150) < 0 || env_openvol(&e) < 0)
		return;
	CHECK_EQ(fs_store_mkfs(e.v, NULL), -ENOSPC);
	CHECK_EQ(vol_close(e.v), 0);
}

int main(void)
{
	const char *seed = getenv("TEST_SEED");
	double t0 = now_s();

	rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	printf("fs_txn_test: TEST_SEED=%llu\n", (unsigned long long)rng_state);
	vol_set_log(test_log);
	if (CHECK_OK(scratch_setup("txn")) < 0)
		return CHECK_DONE();
	run("mkfs", test_mkfs);
	run("budget", test_budget);
	run("abort", test_abort);
	run("workload", test_workload);
	run("sticky", test_sticky);
	scratch_cleanup();
	printf("fs_txn_test: %.1f s\n", now_s() - t0);
	return CHECK_DONE();
}
