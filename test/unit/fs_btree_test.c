/*
 * fs_btree_test.c - the metadata B+tree (fs/fs_btree.c) and its node
 * format (fs/fs_format.c).
 *
 * Format: the table CRC32C against a bit-by-bit reference on random,
 * unaligned, chunked inputs and the check value; leaf and internal
 * encoders round-trip; every validation rule N1..N13 fires on a node
 * broken for it (checksum fixed up, so the rule itself is hit) and names
 * itself in the log; random mutations of valid nodes never crash the
 * verifier or the accessors.
 *
 * Tree, over an in-memory block store (an array of 4 KiB blocks and an
 * allocation map; freed blocks are poisoned): 100k random inserts,
 * updates and deletes with values of random sizes (up to the 3 KiB
 * maximum) against a reference model, with lookups, cursor walks, range
 * scans through fs_bt_iterate (also changing the tree from the callback),
 * and GE/GT/LE/LT searches; fs_bt_check after every batch, with the
 * node count equal to the store's allocated blocks (no leaked or lost
 * nodes) and a height of at least 3; a tall tree (fanout 8, height >= 4,
 * splits and merges at every level); three-way leaf splits; deletes down
 * to an empty root leaf and a single allocated block; duplicate insert,
 * missing update/delete, oversize values; reopen with a cold, tiny cache.
 * Failures: read errors and allocation failures injected at random points
 * of updates leave the tree exactly as it was (I6); a flipped byte in any
 * node gives -EUCLEAN, never wrong data or a crash; a node copied to
 * another LBA, leaves swapped (valid CRCs), an empty leaf, a node from the
 * future, another tree's node are refused, and updates through them fail
 * changing nothing; resealed random damage never crashes lookups,
 * updates, scans, the check or a flush.  A failing flush keeps the nodes
 * dirty.
 *
 * Volume: the same tree over a real sixfold volume (mkfs in a temporary
 * directory, removed at exit): dirty nodes and a root block committed in
 * volume transactions, closed, reopened, everything still there.
 *
 * TEST_SEED=n repeats a run; TEST_VERBOSE=1 shows the log; TEST_STRESS=n
 * runs the fuzz and fault loops n times longer (for a nightly stress run).
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_btree.h"
#include "fs/fs_format.h"
#include "keys/keys.h"
#include "test/lib/check.h"
#include "test/lib/tutil.h"
#include "volume/volume.h"

#define NODE FS_BT_NODE_BYTES
#define MAXV FS_BT_MAX_VALUE_BYTES

/* ---- random numbers, log capture ---- */

static unsigned stress = 1; /* TEST_STRESS: fuzz and fault loops x n */

static char last_log[512];
static const char *watch; /* count log lines holding this */
static unsigned watch_hits;

static void test_log(int level, const char *msg)
{
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	if (watch && strstr(msg, watch))
		watch_hits++;
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "  [log] %s\n", msg);
}

/* The last log line names rule (e.g. "N5 "). */
static int logged(const char *rule)
{
	return strstr(last_log, rule) != NULL;
}

/* ---- CRC32C ---- */

static uint32_t crc_ref(const uint8_t *p, size_t n)
{
	uint32_t crc = ~0u;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

static void test_crc(void)
{
	static uint8_t buf[9000];
	int bad = 0;

	CHECK_EQ(fs_crc32c(~0u, "123456789", 9) ^ ~0u, 0xE3069283u);
	CHECK_EQ(crc_ref((const uint8_t *)"123456789", 9), 0xE3069283u);
	CHECK_EQ(fs_crc32c(~0u, "", 0) ^ ~0u, 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	for (int t = 0; t < 300; t++) {
		size_t off = rnd_below(64), len = rnd_below(8900);
		size_t cut = len ? rnd_below((uint32_t)len) : 0;
		uint32_t c = fs_crc32c(~0u, buf + off, cut);

		c = fs_crc32c(c, buf + off + cut, len - cut);
		bad += (c ^ ~0u) != crc_ref(buf + off, len);
	}
	bad += (fs_crc32c(~0u, buf + 8999, 1) ^ ~0u) != crc_ref(buf + 8999, 1);
	CHECK_EQ(bad, 0);
}

/* ---- node format ---- */

static const uint8_t test_fsid[FS_BT_FSID_BYTES] = { 0x51, 0x78, 0x46 };

static struct fs_bt_expect expect_for(uint64_t lba, int level)
{
	struct fs_bt_expect ex = {
		.lba = lba,
		.owner = FS_BT_OWNER_META,
		.fsid = test_fsid,
		.max_gen = 100,
		.level = level,
	};
	return ex;
}

static void make_hdr(uint8_t *node, uint64_t lba, unsigned level)
{
	struct fs_bt_hdr h = {
		.level = (uint8_t)level,
		.lba = lba,
		.owner = FS_BT_OWNER_META,
	};

	memcpy(h.fsid, test_fsid, sizeof(h.fsid));
	memset(node, 0, NODE);
	fs_bt_hdr_encode(node, &h);
}

/* A leaf of n items at lba 77, keys (10 + 3i, i % 3, i * 1000). */
static void make_leaf(uint8_t *node, unsigned n)
{
	static uint8_t vals[64][40];
	struct fs_bt_item it[64];

	make_hdr(node, 77, 0);
	for (unsigned i = 0; i < n; i++) {
		it[i].key = (struct fs_bt_key){ 10 + 3 * i, (uint8_t)(i % 3),
						i * 1000ull };
		memset(vals[i], (int)(i + 1), sizeof(vals[i]));
		it[i].val = vals[i];
		it[i].len = (uint16_t)(i % 5 == 0 ? 0 : 7 + i % 33);
	}
	fs_bt_leaf_build(node, it, n);
	fs_bt_node_seal(node, 9);
}

static void make_int(uint8_t *node, unsigned n)
{
	struct fs_bt_ptr e[FS_BT_INT_CAP];

	make_hdr(node, 78, 2);
	for (unsigned i = 0; i < n; i++) {
		e[i].key = (struct fs_bt_key){ i ? 100 * i : 0, 0, 0 };
		e[i].child = 1000 + i;
	}
	fs_bt_int_build(node, e, n);
	fs_bt_node_seal(node, 9);
}

static void test_roundtrip(void)
{
	static uint8_t node[NODE];
	struct fs_bt_expect ex = expect_for(77, 0);
	struct fs_bt_key k;
	struct fs_bt_hdr h;
	size_t len;
	const uint8_t *v;

	make_leaf(node, 40);
	CHECK_EQ(fs_bt_node_verify(node, &ex), 0);
	fs_bt_hdr_decode(node, &h);
	CHECK(h.version == 1 && h.min_version == 1 && h.level == 0);
	CHECK(h.nitems == 40 && h.lba == 77 && h.gen == 9);
	CHECK(h.owner == FS_BT_OWNER_META && !memcmp(h.fsid, test_fsid, 16));
	fs_bt_leaf_key(node, 7, &k);
	CHECK(k.objectid == 31 && k.type == 1 && k.offset == 7000);
	v = fs_bt_leaf_val(node, 7, &len);
	CHECK(len == 14 && v[0] == 8 && v[13] == 8);
	v = fs_bt_leaf_val(node, 0, &len);
	CHECK(len == 0 && v == node + FS_BT_CRC_OFF);
	CHECK(!memcmp(node, "SIXFBTND", 8));
	make_int(node, 161);
	ex = expect_for(78, 2);
	CHECK_EQ(fs_bt_node_verify(node, &ex), 0);
	fs_bt_int_key(node, 160, &k);
	CHECK(k.objectid == 16000 && fs_bt_int_child(node, 160) == 1160);
	CHECK_EQ(fs_bt_node_nitems(node), 161);
	CHECK_EQ(fs_bt_node_level(node), 2);
}

/* Byte offsets of the header (fs_format.h). */
#define O_VERSION 8
#define O_MINV 10
#define O_NBYTES 12
#define O_LEVEL 14
#define O_INCOMPAT 15
#define O_NITEMS 16
#define O_RESERVED 20
#define O_LBA 24
#define O_OWNER 32
#define O_GEN 40
#define O_FSID 48

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Break node with fn (then reseal unless N2), expect rule in the log. */
struct breakage {
	const char *rule;
	int leaf; /* 1: on a leaf, 0: on an internal node */
	void (*fn)(uint8_t *node);
};

static void b_magic(uint8_t *n)
{
	n[3] ^= 1;
}
static void b_crc(uint8_t *n)
{
	n[2000] ^= 0x40;
}
static void b_minv(uint8_t *n)
{
	put_le(n + O_MINV, 2, 2);
	put_le(n + O_VERSION, 2, 2);
}
static void b_vers(uint8_t *n)
{
	put_le(n + O_VERSION, 0, 2);
}
static void b_nbytes(uint8_t *n)
{
	put_le(n + O_NBYTES, 8192, 2);
}
static void b_incompat(uint8_t *n)
{
	n[O_INCOMPAT] = 1;
}
static void b_reserved(uint8_t *n)
{
	n[O_RESERVED + 2] = 1;
}
static void b_lba(uint8_t *n)
{
	put_le(n + O_LBA, 76, 8);
}
static void b_owner(uint8_t *n)
{
	put_le(n + O_OWNER, 2, 8);
}
static void b_fsid(uint8_t *n)
{
	n[O_FSID + 15] ^= 1;
}
static void b_gen(uint8_t *n)
{
	put_le(n + O_GEN, 101, 8);
}
static void b_level(uint8_t *n)
{
	n[O_LEVEL] = 1;
}
static void b_level8(uint8_t *n)
{
	n[O_LEVEL] = 8;
}
static void b_nitems(uint8_t *n)
{
	put_le(n + O_NITEMS, 192, 2);
}
static void b_nitems0(uint8_t *n)
{
	put_le(n + O_NITEMS, 0, 2);
	memset(n + 64, 0, 25 * 161);
}
static void b_nitems162(uint8_t *n)
{
	put_le(n + O_NITEMS, 162, 2);
}
static void b_valoff(uint8_t *n)
{
	n[64 + 21 * 3 + 17] ^= 1; /* item 3's value_off */
}
static void b_vallen(uint8_t *n)
{
	put_le(n + 64 + 21 * 2 + 19, 3073, 2); /* item 2's value_bytes */
}
static void b_overlap(uint8_t *n)
{
	/* one more item than the values leave room for headers */
	put_le(n + O_NITEMS, 41, 2);
}
static void b_order(uint8_t *n)
{
	n[64 + 21 * 5] = 0xff; /* item 5's objectid, low byte */
}
static void b_key0(uint8_t *n)
{
	n[64 + 9] = 1; /* entry 0 key offset */
}
static void b_iorder(uint8_t *n)
{
	put_le(n + 64 + 25 * 9, 1, 8); /* entry 9 key below entry 8 */
}
static void b_child_self(uint8_t *n)
{
	put_le(n + 64 + 25 * 4 + 17, 78, 8);
}
static void b_child_big(uint8_t *n)
{
	put_le(n + 64 + 25 * 4 + 17, FS_BT_MAX_LBA, 8);
}
static void b_free_leaf(uint8_t *n)
{
	n[64 + 21 * 40 + 100] = 1;
}
static void b_free_int(uint8_t *n)
{
	n[4000] = 1;
}

static const struct breakage breakages[] = {
	{ "N1 ", 1, b_magic },	     { "N2 ", 1, b_crc },
	{ "N3 ", 1, b_minv },	     { "N3 ", 0, b_vers },
	{ "N4 ", 1, b_nbytes },	     { "N4 ", 0, b_incompat },
	{ "N4 ", 1, b_reserved },    { "N5 ", 1, b_lba },
	{ "N6 ", 1, b_owner },	     { "N6 ", 0, b_fsid },
	{ "N7 ", 1, b_gen },	     { "N8 ", 1, b_level },
	{ "N8 ", 0, b_level8 },	     { "N9 ", 1, b_nitems },
	{ "N9 ", 0, b_nitems0 },     { "N9 ", 0, b_nitems162 },
	{ "N10 ", 1, b_valoff },     { "N10 ", 1, b_vallen },
	{ "N10 ", 1, b_overlap },    { "N11 ", 1, b_order },
	{ "N11 ", 0, b_key0 },	     { "N11 ", 0, b_iorder },
	{ "N12 ", 0, b_child_self }, { "N12 ", 0, b_child_big },
	{ "N13 ", 1, b_free_leaf },  { "N13 ", 0, b_free_int },
};

static void test_rules(void)
{
	static uint8_t node[NODE];

	for (size_t i = 0; i < sizeof(breakages) / sizeof(breakages[0]); i++) {
		const struct breakage *b = &breakages[i];
		struct fs_bt_expect ex =
			expect_for(b->leaf ? 77 : 78, b->leaf ? 0 : 2);
		int ret;

		if (b->leaf)
			make_leaf(node, 40);
		else
			make_int(node, 30);
		b->fn(node);
		if (b->fn != b_crc)
			fs_bt_node_seal(node,
					node[O_GEN] | node[O_GEN + 1] << 8);
		last_log[0] = 0;
		ret = fs_bt_node_verify(node, &ex);
		if (ret != -EUCLEAN || !logged(b->rule))
			fprintf(stderr, "rule %s (case %zu): %d, log '%s'\n",
				b->rule, i, ret, last_log);
		CHECK_EQ(ret, -EUCLEAN);
		CHECK(logged(b->rule));
	}
}

/* Reading every item of a node that verified must stay in bounds. */
static void touch_node(const uint8_t *node)
{
	unsigned n = fs_bt_node_nitems(node);
	volatile uint8_t sink = 0;
	struct fs_bt_key k;

	for (unsigned i = 0; i < n; i++) {
		if (fs_bt_node_level(node) == 0) {
			size_t len;
			const uint8_t *v = fs_bt_leaf_val(node, i, &len);

			fs_bt_leaf_key(node, i, &k);
			for (size_t j = 0; j < len; j++)
				sink ^= v[j];
		} else {
			fs_bt_int_key(node, i, &k);
			sink ^= (uint8_t)fs_bt_int_child(node, i);
		}
	}
	(void)sink;
	CHECK(fs_bt_node_level(node) > 0 ||
	      fs_bt_leaf_used(node) <= FS_BT_BODY_BYTES);
}

static void test_fuzz_format(void)
{
	static uint8_t node[NODE];
	unsigned passed = 0;

	for (unsigned t = 0; t < 20000 * stress; t++) {
		int leaf = t % 2;
		struct fs_bt_expect ex =
			expect_for(leaf ? 77 : 78, leaf ? 0 : 2);
		int flips = 1 + (int)rnd_below(4);

		if (leaf)
			make_leaf(node, rnd_below(41));
		else
			make_int(node, 1 + rnd_below(161));
		for (int f = 0; f < flips; f++) {
			unsigned off = rnd_below(t % 3 ? 64 + 21 * 45 : NODE);

			node[off] ^= (uint8_t)(1u << rnd_below(8));
		}
		if (t % 7)
			fs_bt_node_seal(node, 9);
		if (fs_bt_node_verify(node, &ex) == 0) {
			touch_node(node);
			passed++;
		}
	}
	CHECK(passed > 0);
}

/* ---- the in-memory block store ---- */

#define STORE_BLOCKS (1u << 16)
#define ROOT_NONE UINT64_MAX

struct store {
	uint8_t *blk[STORE_BLOCKS]; /* NULL: never written (reads zeros) */
	uint8_t used[STORE_BLOCKS]; /* allocated */
	uint32_t nused; /* allocated blocks */
	uint32_t next; /* allocation cursor */
	uint64_t gen; /* last committed generation */
	long fail_read; /* reads until an -EIO; < 0 never */
	long fail_alloc; /* allocations until an -ENOSPC; < 0 never */
	long fail_write; /* flush writes until an -EIO; < 0 never */
	uint64_t reads, dirty_calls, root;
};

static struct store st;

static int st_read(void *ctx, uint64_t lba, void *buf)
{
	struct store *s = ctx;

	if (s->fail_read >= 0 && s->fail_read-- == 0)
		return -EIO;
	if (lba >= FS_BT_MAX_LBA)
		return -EIO;
	s->reads++;
	if (lba < STORE_BLOCKS && s->blk[lba]) /* else zeros, as a volume */
		memcpy(buf, s->blk[lba], NODE);
	else
		memset(buf, 0, NODE);
	return 0;
}

static int st_alloc(void *ctx, uint64_t *lba)
{
	struct store *s = ctx;

	if (s->fail_alloc >= 0 && s->fail_alloc-- == 0)
		return -ENOSPC;
	if (s->nused == STORE_BLOCKS - 1)
		return -ENOSPC;
	while (s->used[s->next] || s->next == 0) /* block 0 stays unused */
		s->next = (s->next + 1) % STORE_BLOCKS;
	s->used[s->next] = 1;
	s->nused++;
	*lba = s->next;
	return 0;
}

static void st_free(void *ctx, uint64_t lba)
{
	struct store *s = ctx;

	CHECK(lba < STORE_BLOCKS && s->used[lba]);
	if (lba >= STORE_BLOCKS || !s->used[lba])
		return;
	s->used[lba] = 0;
	s->nused--;
	if (s->blk[lba])
		memset(s->blk[lba], 0xEE, NODE); /* a stale read would show */
}

static void st_dirty(void *ctx, uint64_t lba)
{
	struct store *s = ctx;

	CHECK(lba < STORE_BLOCKS && s->used[lba]);
	s->dirty_calls++;
}

static void st_set_root(void *ctx, uint64_t lba)
{
	((struct store *)ctx)->root = lba;
}

static int st_write(void *arg, uint64_t lba, const void *node)
{
	struct store *s = arg;

	if (s->fail_write >= 0 && s->fail_write-- == 0)
		return -EIO;
	if (lba >= STORE_BLOCKS || !s->used[lba])
		return -EINVAL;
	if (!s->blk[lba])
		s->blk[lba] = malloc(NODE);
	if (!s->blk[lba])
		return -ENOMEM;
	memcpy(s->blk[lba], node, NODE);
	return 0;
}

static const struct fs_bt_ops st_ops = {
	.read = st_read,
	.alloc = st_alloc,
	.free = st_free,
	.dirty = st_dirty,
	.set_root = st_set_root,
};

static void store_reset(void)
{
	for (uint32_t i = 0; i < STORE_BLOCKS; i++)
		free(st.blk[i]);
	memset(&st, 0, sizeof(st));
	st.fail_read = st.fail_alloc = st.fail_write = -1;
	st.root = ROOT_NONE;
}

static struct fs_bt_cfg cfg_for(uint32_t fanout, uint32_t cache)
{
	struct fs_bt_cfg c = {
		.ops = &st_ops,
		.ctx = &st,
		.owner = FS_BT_OWNER_META,
		.gen = st.gen,
		.cache_nodes = cache,
		.fanout = fanout,
	};

	memcpy(c.fsid, test_fsid, sizeof(c.fsid));
	return c;
}

/* Flush every dirty node to the store as one "transaction". */
static int commit(struct fs_bt *bt)
{
	uint64_t token;
	int ret = fs_bt_flush(bt, st.gen + 1, st_write, &st, &token);

	if (ret < 0)
		return CHECK_OK(ret);
	st.gen++;
	fs_bt_written(bt, token);
	CHECK_EQ(fs_bt_dirty_count(bt), 0);
	return ret;
}

static struct fs_bt *tree_open(uint32_t fanout, uint32_t cache)
{
	struct fs_bt_cfg c = cfg_for(fanout, cache);
	struct fs_bt *bt = NULL;

	if (CHECK_OK(fs_bt_open(&c, st.root, &bt)) < 0)
		return NULL;
	return bt;
}

static struct fs_bt *tree_reopen(struct fs_bt *bt, uint32_t fanout,
				 uint32_t cache)
{
	commit(bt);
	fs_bt_close(bt);
	return tree_open(fanout, cache);
}

/* ---- the reference model ---- */

#define U (1u << 18) /* key universe: index i <-> key_of(i), in order */

struct ment {
	uint8_t present;
	uint16_t len;
	uint32_t ver;
};

static struct ment model[U];
static uint32_t model_count;
static uint32_t model_ver;

static struct fs_bt_key key_of(uint32_t i)
{
	struct fs_bt_key k = {
		.objectid = (uint64_t)(i >> 6) << 36 | 3,
		.type = (uint8_t)(((i >> 4) & 3) * 60 + 1),
		.offset = (uint64_t)(i & 15) << 20,
	};
	return k;
}

/* The index of k, or -1 if k is not a model key. */
static long index_of(const struct fs_bt_key *k)
{
	uint32_t i = (uint32_t)((k->objectid >> 36) << 6 |
				(uint32_t)((k->type - 1) / 60) << 4 |
				(k->offset >> 20 & 15));
	struct fs_bt_key back = key_of(i < U ? i : 0);

	return i < U && !fs_bt_key_cmp(&back, k) ? (long)i : -1;
}

static void value_of(uint32_t i, uint32_t ver, uint16_t len, uint8_t *out)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ver;

	for (uint16_t j = 0; j < len; j++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		out[j] = (uint8_t)x;
	}
}

/* Does (val, len) hold model entry i? */
static int value_ok(uint32_t i, const void *val, size_t len)
{
	static uint8_t want[MAXV];

	if (!model[i].present || len != model[i].len)
		return 0;
	value_of(i, model[i].ver, model[i].len, want);
	return !memcmp(val, want, len);
}

static uint16_t rnd_len(void)
{
	uint32_t r = rnd_below(100);

	if (r < 70)
		return (uint16_t)rnd_below(65);
	if (r < 97)
		return (uint16_t)(65 + rnd_below(336));
	return (uint16_t)(MAXV - rnd_below(200));
}

static void model_reset(void)
{
	memset(model, 0, sizeof(model));
	model_count = 0;
}

/* ---- tree operations checked against the model ---- */

static int t_lookup_ok(struct fs_bt *bt, uint32_t i)
{
	static uint8_t buf[MAXV];
	struct fs_bt_key k = key_of(i);
	int ret = fs_bt_lookup(bt, &k, buf, sizeof(buf));

	if (!model[i].present)
		return ret == -ENOENT;
	return ret >= 0 && value_ok(i, buf, (size_t)ret);
}

static int t_insert(struct fs_bt *bt, uint32_t i, uint16_t len)
{
	static uint8_t buf[MAXV];
	struct fs_bt_key k = key_of(i);
	uint32_t ver = ++model_ver;
	int ret;

	value_of(i, ver, len, buf);
	ret = fs_bt_insert(bt, &k, buf, len);
	if (ret == 0) {
		model[i] = (struct ment){ 1, len, ver };
		model_count++;
	}
	return ret;
}

static int t_update(struct fs_bt *bt, uint32_t i, uint16_t len)
{
	static uint8_t buf[MAXV];
	struct fs_bt_key k = key_of(i);
	uint32_t ver = ++model_ver;
	int ret;

	value_of(i, ver, len, buf);
	ret = fs_bt_update(bt, &k, buf, len);
	if (ret == 0)
		model[i] = (struct ment){ 1, len, ver };
	return ret;
}

static int t_delete(struct fs_bt *bt, uint32_t i)
{
	struct fs_bt_key k = key_of(i);
	int ret = fs_bt_delete(bt, &k);

	if (ret == 0) {
		model[i].present = 0;
		model_count--;
	}
	return ret;
}

/* One random operation on index i, checked; returns 0 or the error. */
static int random_op(struct fs_bt *bt, uint32_t i)
{
	uint32_t r = rnd_below(100);

	if (!model[i].present) {
		if (r < 5)
			return t_delete(bt, i) == -ENOENT ? 0 : -1;
		if (r < 10)
			return t_update(bt, i, 1) == -ENOENT ? 0 : -1;
		return t_insert(bt, i, rnd_len());
	}
	if (r < 5)
		return t_insert(bt, i, 3) == -EEXIST ? 0 : -1;
	if (r < 50)
		return t_update(bt, i, rnd_len());
	return t_delete(bt, i);
}

/* Model index of the first present entry >= i (U if none). */
static uint32_t model_next(uint32_t i)
{
	while (i < U && !model[i].present)
		i++;
	return i;
}

/* Model index of the last present entry <= i (-1 if none). */
static long model_prev(long i)
{
	while (i >= 0 && !model[i].present)
		i--;
	return i;
}

/* The whole tree equals the model, in order, through a cursor. */
static int verify_all(struct fs_bt *bt)
{
	static uint8_t buf[MAXV];
	struct fs_bt_key zero = { 0 };
	struct fs_bt_cursor cur;
	uint32_t want = model_next(0), seen = 0, bad = 0;
	int ret = fs_bt_first(bt, &zero, &cur, buf, sizeof(buf));

	while (ret >= 0) {
		long i = index_of(&cur.key);

		bad += i != (long)want || !value_ok(want, buf, (size_t)ret);
		seen++;
		want = model_next(want + 1);
		ret = fs_bt_next(&cur, buf, sizeof(buf));
	}
	CHECK_EQ(ret, -ENOENT);
	CHECK_EQ(want, U);
	CHECK_EQ(seen, model_count);
	CHECK_EQ(bad, 0);
	return bad || seen != model_count ? -1 : 0;
}

/* fs_bt_check, and its counts against the store and the model. */
static int check_tree(struct fs_bt *bt, const char *when,
		      struct fs_bt_stats *out)
{
	struct fs_bt_stats s;
	uint64_t nodes = 0;
	int ret = fs_bt_check(bt, &s);

	for (unsigned l = 0; l < FS_BT_MAX_LEVELS; l++)
		nodes += s.nodes[l];
	if (ret || nodes != st.nused || s.items != model_count)
		fprintf(stderr,
			"check %s: %d, nodes %llu, allocated %u, items %llu, "
			"model %u\n",
			when, ret, (unsigned long long)nodes, st.nused,
			(unsigned long long)s.items, model_count);
	CHECK_EQ(ret, 0);
	CHECK_EQ(nodes, st.nused);
	CHECK_EQ(s.items, model_count);
	CHECK_EQ(s.height, fs_bt_height(bt));
	CHECK_EQ(fs_bt_root(bt), st.root);
	if (out)
		*out = s;
	return ret;
}

/* ---- searches and scans against the model ---- */

static long expect_search(uint32_t i, int between, enum fs_bt_mode mode)
{
	switch (mode) {
	case FS_BT_GE:
		return model_next(between ? i + 1 : i);
	case FS_BT_GT:
		return model_next(i + 1);
	case FS_BT_LE:
		return model_prev(i);
	case FS_BT_LT:
		return model_prev(between ? (long)i : (long)i - 1);
	default:
		return -1;
	}
}

static void test_searches(struct fs_bt *bt, int n)
{
	static uint8_t buf[MAXV];
	int bad = 0;

	for (int t = 0; t < n; t++) {
		uint32_t i = rnd_below(U);
		int between = (int)rnd_below(2);
		enum fs_bt_mode mode = (enum fs_bt_mode)(1 + rnd_below(4));
		struct fs_bt_key q = key_of(i), found;
		long want = expect_search(i, between, mode);
		int ret;

		q.offset += (uint64_t)between; /* between key i and i + 1 */
		ret = fs_bt_search(bt, &q, mode, &found, buf, sizeof(buf));
		if (want < 0 || want >= (long)U)
			bad += ret != -ENOENT;
		else
			bad += ret < 0 || index_of(&found) != want ||
			       !value_ok((uint32_t)want, buf, (size_t)ret);
	}
	CHECK_EQ(bad, 0);
}

struct scan {
	uint32_t want; /* next model index expected */
	uint32_t seen, stop_after;
	int bad;
};

static int scan_cb(void *arg, const struct fs_bt_key *key, const void *val,
		   size_t len)
{
	struct scan *s = arg;
	long i = index_of(key);

	s->bad += i != (long)s->want || !value_ok(s->want, val, len);
	s->want = model_next(s->want + 1);
	if (++s->seen == s->stop_after)
		return 7;
	return 0;
}

static void test_scans(struct fs_bt *bt, int n)
{
	int bad = 0;

	for (int t = 0; t < n; t++) {
		uint32_t lo = rnd_below(U), hi = lo + rnd_below(3000);
		struct fs_bt_key klo = key_of(lo),
				 khi = key_of(hi < U ? hi : 0);
		struct scan s = { .want = model_next(lo) };
		int ret;

		if (hi >= U)
			khi = (struct fs_bt_key){ UINT64_MAX, 255, UINT64_MAX };
		s.stop_after = t % 5 == 0 ? 1 + rnd_below(40) : 0;
		ret = fs_bt_iterate(bt, &klo, &khi, scan_cb, &s);
		if (ret == 7)
			continue; /* stopped early, as asked */
		bad += ret != 0 || s.bad || (s.want <= hi && s.want < U);
	}
	CHECK_EQ(bad, 0);
}

/* fs_bt_iterate whose callback deletes and updates what it is given. */
struct modscan {
	struct fs_bt *bt;
	uint32_t calls, last;
	int bad;
};

static int mod_cb(void *arg, const struct fs_bt_key *key, const void *val,
		  size_t len)
{
	struct modscan *m = arg;
	long i = index_of(key);

	m->bad += i < 0 || !value_ok((uint32_t)i, val, len) ||
		  (m->calls && (uint32_t)i <= m->last);
	if (i < 0)
		return -EINVAL;
	m->last = (uint32_t)i;
	if (m->calls++ % 2)
		m->bad += t_update(m->bt, (uint32_t)i, rnd_len()) != 0;
	else
		m->bad += t_delete(m->bt, (uint32_t)i) != 0;
	return 0;
}

static void test_modify_while_iterating(struct fs_bt *bt)
{
	static uint8_t buf[MAXV];
	uint32_t lo = rnd_below(U / 2), hi = lo + 20000, before = 0, n = 0;
	struct fs_bt_key klo = key_of(lo), khi = key_of(hi);
	struct modscan m = { .bt = bt };
	struct fs_bt_cursor cur;
	int ret;

	for (uint32_t i = lo; i <= hi; i++)
		before += model[i].present;
	CHECK_EQ(fs_bt_iterate(bt, &klo, &khi, mod_cb, &m), 0);
	CHECK_EQ(m.calls, before);
	CHECK_EQ(m.bad, 0);
	/* A cursor goes on after its key while the tree changes under it. */
	klo = key_of(hi + 1);
	ret = fs_bt_first(bt, &klo, &cur, buf, sizeof(buf));
	for (long prev = -1, next = -1; ret >= 0 && n < 5000; n++) {
		long i = index_of(&cur.key);

		CHECK(i > prev && value_ok((uint32_t)i, buf, (size_t)ret));
		CHECK(next < 0 || i == next);
		if (i < 0)
			break;
		prev = i;
		next = -1;
		if (n % 3 == 0)
			CHECK_EQ(t_delete(bt, (uint32_t)i), 0);
		if (n % 3 == 1 && i + 1 < (long)U && !model[i + 1].present) {
			CHECK_EQ(t_insert(bt, (uint32_t)i + 1, 9), 0);
			next = i + 1; /* the cursor must see it next */
		}
		ret = fs_bt_next(&cur, buf, sizeof(buf));
	}
	CHECK(n == 5000 || ret == -ENOENT);
	verify_all(bt);
}

/* ---- phases ---- */

static int count_calls(void *arg, const struct fs_bt_key *key, const void *val,
		       size_t len)
{
	(void)key;
	(void)val;
	(void)len;
	(*(int *)arg)++;
	return 0;
}

/* Empty tree, extreme keys, argument errors. */
static void test_basics(void)
{
	struct fs_bt_key zero = { 0 }, max = { UINT64_MAX, 255, UINT64_MAX };
	struct fs_bt_key mid = { 5, 5, 5 }, got;
	struct fs_bt_cfg c;
	struct fs_bt *bt;
	uint8_t buf[MAXV + 1] = { 0 };
	int calls = 0;

	store_reset();
	c = cfg_for(0, 0);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	CHECK_EQ(fs_bt_root(bt), st.root);
	CHECK_EQ(fs_bt_height(bt), 1);
	CHECK_EQ(st.nused, 1);
	CHECK_EQ(fs_bt_lookup(bt, &zero, NULL, 0), -ENOENT);
	for (int mode = 0; mode <= FS_BT_LT; mode++)
		CHECK_EQ(fs_bt_search(bt, &mid, mode, &got, buf, 1), -ENOENT);
	CHECK_EQ(fs_bt_iterate(bt, &zero, &max, count_calls, &calls), 0);
	CHECK_EQ(calls, 0);
	CHECK_EQ(fs_bt_delete(bt, &mid), -ENOENT);
	CHECK_EQ(fs_bt_update(bt, &mid, buf, 3), -ENOENT);
	CHECK_EQ(fs_bt_check(bt, NULL), 0);

	memset(buf, 0xA5, sizeof(buf));
	CHECK_EQ(fs_bt_insert(bt, &zero, buf, MAXV), 0);
	CHECK_EQ(fs_bt_insert(bt, &max, "max", 3), 0);
	CHECK_EQ(fs_bt_insert(bt, &max, "again", 5), -EEXIST);
	CHECK_EQ(fs_bt_insert(bt, &mid, buf, MAXV + 1), -EINVAL);
	CHECK_EQ(fs_bt_update(bt, &max, buf, MAXV + 1), -EINVAL);
	memset(buf, 0, sizeof(buf));
	CHECK_EQ(fs_bt_lookup(bt, &zero, buf, 10), MAXV); /* short buffer */
	CHECK(buf[0] == 0xA5 && buf[9] == 0xA5 && buf[10] == 0);
	CHECK_EQ(fs_bt_search(bt, &zero, FS_BT_LT, &got, NULL, 0), -ENOENT);
	CHECK_EQ(fs_bt_search(bt, &max, FS_BT_GT, &got, NULL, 0), -ENOENT);
	CHECK_EQ(fs_bt_search(bt, &mid, FS_BT_LE, &got, NULL, 0), MAXV);
	CHECK(got.objectid == 0 && got.type == 0 && got.offset == 0);
	CHECK_EQ(fs_bt_search(bt, &mid, FS_BT_GE, &got, buf, 3), 3);
	CHECK(got.objectid == UINT64_MAX && !memcmp(buf, "max", 3));
	CHECK_EQ(fs_bt_search(bt, &max, FS_BT_LT, &got, NULL, 0), MAXV);
	CHECK_EQ(fs_bt_search(bt, &zero, FS_BT_GT, &got, NULL, 0), 3);
	CHECK_EQ(fs_bt_iterate(bt, &zero, &max, count_calls, &calls), 0);
	CHECK_EQ(calls, 2);
	CHECK_EQ(fs_bt_update(bt, &max, "", 0), 0);
	CHECK_EQ(fs_bt_lookup(bt, &max, buf, sizeof(buf)), 0);
	CHECK_OK(commit(bt));
	bt = tree_reopen(bt, 0, 0);
	if (!bt)
		return;
	CHECK_EQ(fs_bt_check(bt, NULL), 0);
	CHECK_EQ(fs_bt_delete(bt, &zero), 0);
	CHECK_EQ(fs_bt_delete(bt, &max), 0);
	CHECK_EQ(fs_bt_delete(bt, &max), -ENOENT);
	CHECK_EQ(fs_bt_check(bt, NULL), 0);
	CHECK_EQ(st.nused, 1);
	commit(bt);
	fs_bt_close(bt);
}

/* Batches of random operations; check after each. */
static void run_ops(struct fs_bt **bt, uint32_t ops, uint32_t batch,
		    const char *what)
{
	int bad = 0;

	for (uint32_t n = 1; n <= ops; n++) {
		uint32_t i = rnd_below(U);

		bad += random_op(*bt, i) != 0;
		bad += !t_lookup_ok(*bt, i);
		if (n % 64 == 0)
			commit(*bt);
		if (n % batch == 0)
			check_tree(*bt, what, NULL);
	}
	CHECK_EQ(bad, 0);
}

static void fill_to(struct fs_bt *bt, uint32_t count, uint32_t batch)
{
	uint32_t n = 0;
	int bad = 0;

	while (model_count < count) {
		uint32_t i = rnd_below(U);

		if (model[i].present)
			bad += t_insert(bt, i, 1) != -EEXIST;
		else
			bad += t_insert(bt, i, rnd_len()) != 0;
		if (++n % 64 == 0)
			commit(bt);
		if (n % batch == 0)
			check_tree(bt, "fill", NULL);
	}
	CHECK_EQ(bad, 0);
}

/* Delete everything: random order, then what is left in key order. */
static void empty_tree(struct fs_bt *bt, uint32_t batch)
{
	uint32_t n = 0;
	int bad = 0;

	for (uint32_t t = 0; t < 4 * U && model_count > U / 16; t++) {
		uint32_t i = rnd_below(U);

		if (!model[i].present)
			continue;
		bad += t_delete(bt, i) != 0;
		if (++n % 64 == 0)
			commit(bt);
		if (n % batch == 0)
			check_tree(bt, "delete", NULL);
	}
	for (uint32_t i = 0; i < U; i++) {
		if (!model[i].present)
			continue;
		bad += t_delete(bt, i) != 0;
		if (++n % 64 == 0)
			commit(bt);
		if (n % batch == 0)
			check_tree(bt, "delete in order", NULL);
	}
	CHECK_EQ(bad, 0);
	commit(bt);
	check_tree(bt, "empty", NULL);
	CHECK_EQ(model_count, 0);
	CHECK_EQ(fs_bt_height(bt), 1);
	CHECK_EQ(st.nused, 1);
}

static void test_random(void)
{
	struct fs_bt_cfg c;
	struct fs_bt_stats s;
	struct fs_bt *bt;

	store_reset();
	model_reset();
	c = cfg_for(0, 0);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	fill_to(bt, 100000, 10000);
	commit(bt);
	check_tree(bt, "filled", &s);
	printf("  100k keys: height %u, %llu leaves, %llu internal, "
	       "leaf fill %.0f%%\n",
	       s.height, (unsigned long long)s.nodes[0],
	       (unsigned long long)(st.nused - s.nodes[0]),
	       100.0 * (double)s.leaf_bytes /
		       ((double)s.nodes[0] * FS_BT_BODY_BYTES));
	CHECK(s.height >= 3);
	CHECK(s.evictions > 0);
	verify_all(bt);
	test_searches(bt, 20000);
	test_scans(bt, 300);
	run_ops(&bt, 100000, 10000, "random ops");
	bt = tree_reopen(bt, 0, 16); /* cold and tiny cache */
	if (!bt)
		return;
	check_tree(bt, "reopened", &s);
	verify_all(bt);
	test_searches(bt, 5000);
	test_scans(bt, 100);
	test_modify_while_iterating(bt);
	check_tree(bt, "modified while iterating", NULL);
	bt = tree_reopen(bt, 0, 0);
	if (!bt)
		return;
	empty_tree(bt, 10000);
	printf("  store: %llu node reads, %llu dirty calls\n",
	       (unsigned long long)st.reads,
	       (unsigned long long)st.dirty_calls);
	fs_bt_close(bt);
}

/* Fanout 8: a tall tree, splits and merges at every level. */
static void test_tall(void)
{
	struct fs_bt_cfg c;
	struct fs_bt_stats s;
	struct fs_bt *bt;
	int bad = 0;

	store_reset();
	model_reset();
	c = cfg_for(FS_BT_MIN_FANOUT, 64);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	for (uint32_t i = 0; i < U; i += 4) { /* appends */
		bad += t_insert(bt, i, (uint16_t)rnd_below(17)) != 0;
		if (i % 256 == 0)
			commit(bt);
		if (i % 20000 == 0)
			check_tree(bt, "tall appends", NULL);
	}
	CHECK_EQ(bad, 0);
	check_tree(bt, "tall", &s);
	printf("  tall tree: %u keys, height %u, %llu leaves\n", model_count,
	       s.height, (unsigned long long)s.nodes[0]);
	CHECK(s.height >= 4);
	run_ops(&bt, 40000, 5000, "tall random ops");
	verify_all(bt);
	test_searches(bt, 5000);
	bt = tree_reopen(bt, FS_BT_MIN_FANOUT, 64);
	if (!bt)
		return;
	check_tree(bt, "tall reopened", NULL);
	empty_tree(bt, 5000);
	fs_bt_close(bt);
}

/* [small][3 KiB][small] needs three leaves; values of the maximum size. */
static void test_big_values(void)
{
	struct fs_bt_cfg c;
	struct fs_bt_stats s;
	struct fs_bt *bt;
	int bad = 0;

	store_reset();
	model_reset();
	c = cfg_for(0, 0);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	CHECK_EQ(t_insert(bt, 10, 1400), 0);
	CHECK_EQ(t_insert(bt, 30, 1400), 0);
	CHECK_EQ(t_insert(bt, 20, MAXV), 0);
	check_tree(bt, "three-way split", &s);
	CHECK_EQ(s.nodes[0], 3);
	CHECK_EQ(s.height, 2);
	CHECK_EQ(t_update(bt, 20, 10), 0); /* shrinks: merges left */
	check_tree(bt, "shrunk", &s);
	CHECK_EQ(s.nodes[0], 2);
	CHECK_EQ(t_update(bt, 10, MAXV), 0);
	CHECK_EQ(t_update(bt, 20, MAXV), 0); /* grows: splits */
	check_tree(bt, "grown", NULL);
	for (uint32_t n = 0; n < 3000; n++) {
		uint32_t i = rnd_below(4000) * 16;
		uint16_t len = (uint16_t)(n % 4 ? MAXV - rnd_below(100) :
						  rnd_below(300));

		bad += model[i].present ? t_update(bt, i, len) != 0 :
					  t_insert(bt, i, len) != 0;
		if (n % 64 == 0)
			commit(bt);
	}
	CHECK_EQ(bad, 0);
	check_tree(bt, "big values", &s);
	verify_all(bt);
	test_searches(bt, 2000);
	empty_tree(bt, 1000);
	fs_bt_close(bt);
}

/* ---- injected failures: an update that fails changes nothing ---- */

/* A raw update on i (insert if absent, else update or delete). */
static int raw_op(struct fs_bt *bt, uint32_t i)
{
	if (!model[i].present)
		return t_insert(bt, i, (uint16_t)rnd_below(200));
	if (rnd_below(2))
		return t_update(bt, i, (uint16_t)rnd_below(400));
	return t_delete(bt, i);
}

static int fault_one(struct fs_bt *bt, uint32_t i)
{
	uint32_t used = st.nused;
	uint64_t dirty_calls = st.dirty_calls, root = fs_bt_root(bt);
	unsigned ndirty = fs_bt_dirty_count(bt);
	struct ment before = model[i];
	int ret;

	if (rnd_below(2))
		st.fail_read = rnd_below(6);
	else
		st.fail_alloc = rnd_below(3);
	ret = raw_op(bt, i);
	st.fail_read = st.fail_alloc = -1;
	if (ret != -EIO && ret != -ENOSPC)
		return CHECK_OK(ret) < 0 ? -1 : 0;
	CHECK_EQ(st.nused, used);
	CHECK_EQ(st.dirty_calls, dirty_calls);
	CHECK_EQ(fs_bt_dirty_count(bt), ndirty);
	CHECK_EQ(fs_bt_root(bt), root);
	CHECK(!memcmp(&before, &model[i], sizeof(before)));
	CHECK(t_lookup_ok(bt, i));
	CHECK_OK(raw_op(bt, i)); /* and now it goes through */
	return 1;
}

static void test_faults(void)
{
	struct fs_bt_cfg c;
	struct fs_bt *bt;
	unsigned injected = 0;

	store_reset();
	model_reset();
	c = cfg_for(FS_BT_MIN_FANOUT, 8);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	for (uint32_t n = 0; n < 6000; n++) {
		uint32_t i = rnd_below(12000);

		if (!model[i].present)
			CHECK_EQ(t_insert(bt, i, (uint16_t)rnd_below(200)), 0);
		if (n % 64 == 0)
			commit(bt);
	}
	bt = tree_reopen(bt, FS_BT_MIN_FANOUT, 8);
	if (!bt)
		return;
	for (uint32_t n = 1; n <= 4000 * stress; n++) {
		int ret = fault_one(bt, rnd_below(12000));

		injected += ret > 0;
		if (n % 8 == 0)
			commit(bt); /* clean nodes get evicted: reads */
		if (n % 500 == 0)
			check_tree(bt, "faults", NULL);
	}
	printf("  faults: %u updates failed on an injected error\n", injected);
	CHECK(injected > 500);
	verify_all(bt);
	commit(bt);
	fs_bt_close(bt);
}

/* A failing flush keeps the nodes dirty; gen may not go back. */
static void test_flush_fail(void)
{
	struct fs_bt_cfg c;
	struct fs_bt *bt;
	uint64_t token;
	unsigned dirty;

	store_reset();
	model_reset();
	c = cfg_for(0, 0);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	for (uint32_t i = 0; i < 3000; i++)
		CHECK_EQ(t_insert(bt, i * 7, 30), 0);
	dirty = fs_bt_dirty_count(bt);
	CHECK(dirty > 3);
	CHECK_EQ(dirty, st.dirty_calls);
	st.fail_write = 2;
	CHECK_EQ(fs_bt_flush(bt, 1, st_write, &st, &token), -EIO);
	CHECK_EQ(fs_bt_dirty_count(bt), dirty);
	CHECK_EQ(fs_bt_flush(bt, 0, st_write, &st, &token), -EINVAL);
	CHECK_EQ(commit(bt), (int)dirty);
	bt = tree_reopen(bt, 0, 0);
	if (!bt)
		return;
	check_tree(bt, "after a failed flush", NULL);
	verify_all(bt);
	fs_bt_close(bt);
}

/* ---- damaged nodes ---- */

/* Used, written blocks at level (-1: any), into out; returns the count. */
static unsigned blocks_at(int level, uint64_t *out, unsigned max)
{
	unsigned n = 0;

	for (uint32_t b = 1; b < STORE_BLOCKS && n < max; b++)
		if (st.used[b] && st.blk[b] &&
		    (level < 0 ||
		     fs_bt_node_level(st.blk[b]) == (unsigned)level))
			out[n++] = b;
	return n;
}

/*
 * Open the damaged tree, look every model key up: each must give its
 * value or -EUCLEAN, and at least one -EUCLEAN; fs_bt_check must fail.
 * rule (may be NULL) must be logged.  Changes nothing in the store.
 */
static void expect_damage(const char *what, const char *rule)
{
	static uint8_t buf[MAXV];
	struct fs_bt_cfg c = cfg_for(FS_BT_MIN_FANOUT, 0);
	struct fs_bt *bt;
	unsigned wrong = 0, unclean = 0;
	long hit = -1; /* a key whose lookup met the damage */
	int ret;

	watch = rule;
	watch_hits = 0;
	ret = fs_bt_open(&c, st.root, &bt);
	if (ret) {
		CHECK_EQ(ret, -EUCLEAN);
		unclean++;
		bt = NULL;
	}
	for (uint32_t i = 0; bt && i < U; i++) {
		struct fs_bt_key k = key_of(i);

		if (!model[i].present)
			continue;
		ret = fs_bt_lookup(bt, &k, buf, sizeof(buf));
		if (ret == -EUCLEAN) {
			unclean++;
			hit = i;
		} else {
			wrong += ret < 0 || !value_ok(i, buf, (size_t)ret);
		}
	}
	if (bt && hit >= 0) { /* updates there fail too, changing nothing */
		struct fs_bt_key k = key_of((uint32_t)hit);
		uint32_t used = st.nused;

		CHECK_EQ(fs_bt_delete(bt, &k), -EUCLEAN);
		CHECK_EQ(fs_bt_update(bt, &k, buf, 100), -EUCLEAN);
		CHECK_EQ(fs_bt_dirty_count(bt), 0);
		CHECK_EQ(st.nused, used);
	}
	if (bt)
		CHECK_EQ(fs_bt_check(bt, NULL), -EUCLEAN);
	fs_bt_close(bt);
	if (wrong || !unclean || (rule && !watch_hits))
		fprintf(stderr, "damage '%s': %u wrong, %u -EUCLEAN, %u logs\n",
			what, wrong, unclean, watch_hits);
	CHECK_EQ(wrong, 0);
	CHECK(unclean > 0);
	CHECK(!rule || watch_hits > 0);
	watch = NULL;
}

static void reseal(uint8_t *node)
{
	struct fs_bt_hdr h;

	fs_bt_hdr_decode(node, &h);
	fs_bt_node_seal(node, h.gen);
}

/* A tree of fanout 8 in the store (committed, closed) and the model. */
static void small_tree(uint32_t keys, uint32_t range)
{
	struct fs_bt_cfg c;
	struct fs_bt *bt;

	store_reset();
	model_reset();
	c = cfg_for(FS_BT_MIN_FANOUT, 0);
	if (CHECK_OK(fs_bt_create(&c, &bt)) < 0)
		return;
	while (model_count < keys) {
		uint32_t i = rnd_below(range);

		if (!model[i].present)
			CHECK_EQ(t_insert(bt, i, (uint16_t)rnd_below(100)), 0);
		if (model_count % 64 == 0)
			commit(bt);
	}
	commit(bt);
	CHECK(fs_bt_height(bt) >= 3);
	fs_bt_close(bt);
}

/* Flip one bit anywhere in the root, internal nodes and leaves. */
static void test_bitflips(void)
{
	uint64_t lbas[4096];
	unsigned n;

	small_tree(4000, 16000);
	n = blocks_at(-1, lbas, 4096);
	for (unsigned t = 0; t < 60 * stress && n; t++) {
		uint64_t lba = t == 0 ? st.root : lbas[rnd_below(n)];
		unsigned off = t < 3 ? (unsigned[]){ 14, 2000, 4093 }[t] :
				       rnd_below(NODE);
		uint8_t bit = (uint8_t)(1u << rnd_below(8));

		st.blk[lba][off] ^= bit;
		expect_damage("bit flip", off < 8 ? "N1 " : "N2 ");
		st.blk[lba][off] ^= bit;
	}
}

static void swap_blocks(uint64_t a, uint64_t b, int fix)
{
	static uint8_t tmp_node[NODE];

	memcpy(tmp_node, st.blk[a], NODE);
	memcpy(st.blk[a], st.blk[b], NODE);
	memcpy(st.blk[b], tmp_node, NODE);
	if (fix) { /* make them look right where they now are */
		put_le(st.blk[a] + O_LBA, a, 8);
		put_le(st.blk[b] + O_LBA, b, 8);
		reseal(st.blk[a]);
		reseal(st.blk[b]);
	}
}

/* Valid checksums, wrong structure: each refused by its rule. */
static void test_hostile(void)
{
	static uint8_t save[NODE];
	uint64_t leaves[4096], ints[512], a, b, other;
	unsigned nl, ni, ia;
	struct fs_bt_cfg c;
	struct fs_bt *bt;

	small_tree(4000, 16000);
	nl = blocks_at(0, leaves, 4096);
	ni = blocks_at(1, ints, 512);
	if (CHECK_OK(nl >= 2 && ni >= 2 ? 0 : -EINVAL) < 0)
		return;
	ia = rnd_below(nl);
	a = leaves[ia];
	b = leaves[(ia + 1 + rnd_below(nl - 1)) % nl];
	other = leaves[0]; /* a leaf that is not a child of ints[0] */
	for (unsigned i = 0; i < nl; i++) {
		int child = 0;

		for (unsigned j = 0; j < fs_bt_node_nitems(st.blk[ints[0]]);
		     j++)
			child |= fs_bt_int_child(st.blk[ints[0]], j) ==
				 leaves[i];
		if (!child)
			other = leaves[i];
	}

	memcpy(save, st.blk[b], NODE);
	memcpy(st.blk[b], st.blk[a], NODE); /* a copy at the wrong LBA */
	expect_damage("node at another LBA", "N5 ");
	memcpy(st.blk[b], save, NODE);

	swap_blocks(a, b, 1);
	expect_damage("two leaves swapped", "T1 ");
	swap_blocks(a, b, 1);

	memcpy(save, st.blk[a], NODE);
	fs_bt_leaf_build(st.blk[a], NULL, 0);
	reseal(st.blk[a]);
	expect_damage("empty leaf", "T3 ");
	memcpy(st.blk[a], save, NODE);

	fs_bt_node_seal(st.blk[a], st.gen + 1);
	expect_damage("node from the future", "N7 ");
	memcpy(st.blk[a], save, NODE);

	memcpy(save, st.blk[ints[0]], NODE);
	put_le(st.blk[ints[0]] + 64 + 25 + 17, st.root, 8); /* child 1 */
	reseal(st.blk[ints[0]]);
	expect_damage("child pointing at the root", "N8 ");
	put_le(st.blk[ints[0]] + 64 + 25 + 17, other, 8);
	reseal(st.blk[ints[0]]);
	expect_damage("child pointing into another subtree", "T1 ");
	memcpy(st.blk[ints[0]], save, NODE);

	c = cfg_for(FS_BT_MIN_FANOUT, 0);
	c.owner = 2;
	watch = "N6 ";
	watch_hits = 0;
	CHECK_EQ(fs_bt_open(&c, st.root, &bt), -EUCLEAN);
	CHECK(watch_hits > 0);
	watch = NULL;
	CHECK_EQ(fs_bt_open(&c, FS_BT_MAX_LBA, &bt), -EUCLEAN);
	c.owner = FS_BT_OWNER_META;
	if (CHECK_OK(fs_bt_open(&c, st.root, &bt)) < 0)
		return;
	check_tree(bt, "restored", NULL);
	verify_all(bt);
	fs_bt_close(bt);
}

/* A deep copy of the store, to undo what a damaged tree did to it. */
static struct store *store_save(void)
{
	struct store *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	*s = st;
	for (uint32_t b = 0; b < STORE_BLOCKS; b++) {
		if (!st.blk[b])
			continue;
		s->blk[b] = malloc(NODE);
		if (s->blk[b])
			memcpy(s->blk[b], st.blk[b], NODE);
	}
	return s;
}

static void store_load(const struct store *s)
{
	for (uint32_t b = 0; b < STORE_BLOCKS; b++)
		free(st.blk[b]);
	st = *s;
	for (uint32_t b = 0; b < STORE_BLOCKS; b++) {
		if (!s->blk[b])
			continue;
		st.blk[b] = malloc(NODE);
		if (st.blk[b])
			memcpy(st.blk[b], s->blk[b], NODE);
	}
}

static void store_drop(struct store *s)
{
	for (uint32_t b = 0; b < STORE_BLOCKS; b++)
		free(s->blk[b]);
	free(s);
}

/* Is ret an answer a damaged tree may give?  Else say which call. */
static int fuzz_ok(int ret, const char *call, int also)
{
	if (ret >= 0 || ret == -ENOENT || ret == -EUCLEAN || ret == also)
		return 1;
	fprintf(stderr, "damaged tree: %s gave %d (%s)\n", call, ret,
		strerror(-ret));
	return 0;
}

static int null_write(void *arg, uint64_t lba, const void *node)
{
	(void)arg;
	(void)lba;
	(void)node;
	return 0;
}

/* Lookups, updates, scans and a check on a damaged tree: no crash. */
static int poke_damaged(struct fs_bt *bt)
{
	static uint8_t buf[MAXV];
	uint64_t token;
	struct fs_bt_key lo = { 0 }, hi = { UINT64_MAX, 255, UINT64_MAX };
	struct scan s = { 0 };
	int bad = 0, ret;

	for (int t = 0; t < 40; t++) {
		uint32_t i = rnd_below(2000);
		struct fs_bt_key k = key_of(i);

		ret = fs_bt_lookup(bt, &k, buf, sizeof(buf));
		bad += !fuzz_ok(ret, "lookup", 0);
		if (t % 2)
			ret = fs_bt_insert(bt, &k, buf, rnd_len());
		else
			ret = fs_bt_delete(bt, &k);
		bad += !fuzz_ok(ret, t % 2 ? "insert" : "delete", -EEXIST);
		ret = fs_bt_search(bt, &k, (enum fs_bt_mode)(t % 5), &k, buf,
				   sizeof(buf));
		bad += !fuzz_ok(ret, "search", 0);
	}
	ret = fs_bt_iterate(bt, &lo, &hi, count_calls, &s.seen);
	bad += !fuzz_ok(ret, "iterate", 0);
	bad += !fuzz_ok(fs_bt_check(bt, NULL), "check", 0);
	/* What it changed must still encode to valid nodes (or it aborts). */
	bad += !fuzz_ok(fs_bt_flush(bt, st.gen + 1, null_write, NULL, &token),
			"flush", 0);
	return bad;
}

/* Random damage with the checksum fixed up: errors, never a crash. */
static void test_fuzz_tree(void)
{
	struct fs_bt_cfg c = cfg_for(FS_BT_MIN_FANOUT, 4);
	uint64_t lbas[1024];
	struct store *saved;
	unsigned n, opened = 0;
	int bad = 0;

	small_tree(1000, 2000);
	saved = store_save();
	if (!saved)
		return;
	n = blocks_at(-1, lbas, 1024);
	c.gen = st.gen;
	for (unsigned t = 0; t < 300 * stress && n; t++) {
		uint64_t lba = lbas[rnd_below(n)];
		struct fs_bt *bt;
		int flips = 1 + (int)rnd_below(3);

		for (int f = 0; f < flips; f++)
			st.blk[lba][rnd_below(t % 2 ? 64 : FS_BT_CRC_OFF)] ^=
				(uint8_t)(1u << rnd_below(8));
		reseal(st.blk[lba]);
		if (fs_bt_open(&c, st.root, &bt) == 0) {
			opened++;
			bad += poke_damaged(bt);
			fs_bt_close(bt);
		}
		store_load(saved);
	}
	CHECK_EQ(bad, 0);
	CHECK(opened > 0);
	store_drop(saved);
}

/* ---- over a real volume ---- */

static char tmp[64];
static char zone[VOL_ZONES][128];
static const char *zone_paths[VOL_ZONES];
static uint8_t key_bytes[32];
static struct key_source vkey = {
	.kind = KEY_KIND_KEYFILE,
	.secret = key_bytes,
	.secret_len = sizeof(key_bytes),
};

static int rm_entry(const char *path, const struct stat *sb, int flag,
		    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void cleanup(void)
{
	if (tmp[0])
		nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	tmp[0] = 0;
}

static void on_fatal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int setup_dirs(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/sixfold-btree-XXXXXX");
	if (!mkdtemp(tmp)) {
		tmp[0] = 0;
		return -errno;
	}
	atexit(cleanup);
	signal(SIGABRT, on_fatal);
	signal(SIGSEGV, on_fatal);
	signal(SIGTERM, on_fatal);
	signal(SIGINT, on_fatal);
	for (int z = 0; z < VOL_ZONES; z++) {
		snprintf(zone[z], sizeof(zone[z]), "%s/z%d", tmp, z);
		zone_paths[z] = zone[z];
	}
	return 0;
}

#define VS_SUPER_LBA 0 /* root LBA, generation and next LBA */
#define VS_FIRST_LBA 16
#define VS_MAX_FREE 4096
#define VS_TXN_NODES 200 /* dirty nodes per transaction, at most */

/* The caller's side of the tree, the way fs/ will do it. */
struct vstore {
	struct vol *v;
	struct vol_txn *txn; /* during a commit */
	uint64_t next; /* next never-used LBA */
	uint64_t gen; /* last committed generation */
	uint64_t reusable[VS_MAX_FREE]; /* freed by committed txns */
	uint64_t pending[VS_MAX_FREE]; /* freed since the last commit */
	unsigned nreusable, npending;
	int err;
};

static int vs_read(void *ctx, uint64_t lba, void *buf)
{
	return vol_read(((struct vstore *)ctx)->v, lba, buf);
}

static int vs_alloc(void *ctx, uint64_t *lba)
{
	struct vstore *vs = ctx;

	*lba = vs->nreusable ? vs->reusable[--vs->nreusable] : vs->next++;
	return 0;
}

static void vs_free(void *ctx, uint64_t lba)
{
	struct vstore *vs = ctx;

	if (vs->npending < VS_MAX_FREE)
		vs->pending[vs->npending++] = lba;
	else
		vs->err = -ENOSPC; /* leaked; the test fails */
}

static int vs_write(void *arg, uint64_t lba, const void *node)
{
	return vol_txn_write(((struct vstore *)arg)->txn, lba, node);
}

static const struct fs_bt_ops vs_ops = {
	.read = vs_read,
	.alloc = vs_alloc,
	.free = vs_free,
};

static void vs_super(const struct vstore *vs, uint64_t root, uint8_t *blk)
{
	memset(blk, 0, NODE);
	memcpy(blk, "BTTESTSB", 8);
	put_le(blk + 8, root, 8);
	put_le(blk + 16, vs->gen, 8);
	put_le(blk + 24, vs->next, 8);
}

/* Dirty nodes, freed blocks and the root in one volume transaction. */
static int vs_commit(struct vstore *vs, struct fs_bt *bt)
{
	static uint8_t super[NODE];
	uint64_t token;
	int ret = vol_txn_begin(vs->v, &vs->txn);

	if (ret)
		return CHECK_OK(ret);
	vs->gen++;
	ret = fs_bt_flush(bt, vs->gen, vs_write, vs, &token);
	for (unsigned i = 0; ret >= 0 && i < vs->npending; i++)
		ret = vol_txn_discard(vs->txn, vs->pending[i], 1);
	vs_super(vs, fs_bt_root(bt), super);
	if (ret >= 0)
		ret = vol_txn_write(vs->txn, VS_SUPER_LBA, super);
	if (ret < 0) {
		vol_txn_abort(vs->txn);
		return CHECK_OK(ret);
	}
	ret = vol_txn_commit(vs->txn);
	if (CHECK_OK(ret) < 0)
		return ret;
	fs_bt_written(bt, token);
	while (vs->npending && vs->nreusable < VS_MAX_FREE)
		vs->reusable[vs->nreusable++] = vs->pending[--vs->npending];
	return 0;
}

static int vs_open(struct vstore *vs, struct fs_bt **bt)
{
	static uint8_t super[NODE];
	struct vol_open_opts o = {
		.paths = zone_paths,
		.npaths = VOL_ZONES,
		.key = &vkey,
		.write_timeout_ms = 5000,
	};
	struct fs_bt_cfg c = { .ops = &vs_ops, .ctx = vs, .owner = 1 };
	uint64_t root = 0;
	int ret;

	memcpy(c.fsid, test_fsid, sizeof(c.fsid));
	if (CHECK_OK(vol_open(&o, &vs->v)) < 0)
		return -1;
	if (CHECK_OK(vol_read(vs->v, VS_SUPER_LBA, super)) < 0)
		return -1;
	if (memcmp(super, "BTTESTSB", 8)) { /* a new volume */
		vs->next = VS_FIRST_LBA;
		c.gen = vs->gen = 0;
		ret = fs_bt_create(&c, bt);
		return CHECK_OK(ret < 0 ? ret : vs_commit(vs, *bt));
	}
	for (int i = 7; i >= 0; i--) {
		root = root << 8 | super[8 + i];
		vs->gen = vs->gen << 8 | super[16 + i];
		vs->next = vs->next << 8 | super[24 + i];
	}
	c.gen = vs->gen;
	return CHECK_OK(fs_bt_open(&c, root, bt));
}

static void vs_close(struct vstore *vs, struct fs_bt *bt)
{
	fs_bt_close(bt);
	CHECK_EQ(vol_close(vs->v), 0);
	memset(vs, 0, sizeof(*vs));
}

/* Random updates, committed whenever a transaction could overflow. */
static void vs_ops_run(struct vstore *vs, struct fs_bt *bt, uint32_t ops)
{
	int bad = 0;

	for (uint32_t n = 0; n < ops; n++) {
		uint32_t i = rnd_below(6000);

		if (!model[i].present)
			bad += t_insert(bt, i, (uint16_t)rnd_below(600)) != 0;
		else if (n % 3)
			bad += t_update(bt, i, (uint16_t)rnd_below(600)) != 0;
		else
			bad += t_delete(bt, i) != 0;
		if (fs_bt_dirty_count(bt) + FS_BT_OP_MAX_NODES > VS_TXN_NODES ||
		    n % 97 == 0)
			vs_commit(vs, bt);
	}
	vs_commit(vs, bt);
	CHECK_EQ(bad, 0);
}

static void test_volume(void)
{
	struct vol_mkfs_opts o = { .log_blocks = 2048, .key = &vkey };
	static struct vstore vs;
	struct fs_bt_stats s;
	struct fs_bt *bt;

	if (key_init())
		SKIP("libsodium cannot initialise");
	for (size_t i = 0; i < sizeof(key_bytes); i++)
		key_bytes[i] = (uint8_t)(0x31 + i);
	if (CHECK_OK(setup_dirs()) < 0)
		return;
	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = zone[z];
	model_reset();
	if (CHECK_OK(vol_mkfs(&o, NULL)) < 0 || vs_open(&vs, &bt) < 0)
		return;
	vs_ops_run(&vs, bt, 4000);
	CHECK_EQ(fs_bt_check(bt, &s), 0);
	printf("  volume: %u keys, height %u, %llu leaves, gen %llu\n",
	       model_count, s.height, (unsigned long long)s.nodes[0],
	       (unsigned long long)vs.gen);
	vs_close(&vs, bt);
	if (vs_open(&vs, &bt) < 0)
		return;
	CHECK_EQ(fs_bt_check(bt, &s), 0);
	CHECK_EQ(s.items, model_count);
	verify_all(bt);
	vs_ops_run(&vs, bt, 1500);
	vs_close(&vs, bt);
	if (vs_open(&vs, &bt) < 0)
		return;
	CHECK_EQ(fs_bt_check(bt, &s), 0);
	CHECK_EQ(s.items, model_count);
	verify_all(bt);
	CHECK_EQ(vs.err, 0);
	vs_close(&vs, bt);
	cleanup();
}

int main(void)
{
	const char *seed = getenv("TEST_SEED");
	double t0 = now_s();

	if (getenv("TEST_STRESS") && atoi(getenv("TEST_STRESS")) > 0)
		stress = (unsigned)atoi(getenv("TEST_STRESS"));
	rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	printf("fs_btree_test: TEST_SEED=%llu\n",
	       (unsigned long long)rng_state);
	vol_set_log(test_log);
	run("crc", test_crc);
	run("roundtrip", test_roundtrip);
	run("rules", test_rules);
	run("fuzz format", test_fuzz_format);
	run("basics", test_basics);
	run("big values", test_big_values);
	run("flush fail", test_flush_fail);
	run("random 100k", test_random);
	run("tall", test_tall);
	run("faults", test_faults);
	run("bit flips", test_bitflips);
	run("hostile", test_hostile);
	run("fuzz tree", test_fuzz_tree);
	store_reset();
	run("volume", test_volume);
	printf("fs_btree_test: %.1f s\n", now_s() - t0);
	return CHECK_DONE();
}
