/*
 * fs_btree.c - the metadata B+tree: search, insert, update, delete,
 * cursors, a bounded node cache, and the invariant walker fs_bt_check.
 *
 * Layer: fs/.  Talks to storage only through struct fs_bt_ops (never the
 * volume), to node bytes only through fs_format.c.  Logs only damage
 * (FS_CORRUPT) and the level limit; never asserts on node contents.
 *
 * DESIGN NOTES
 *
 * Shape.  A B+tree: items live in the leaves (level 0); an internal node
 * at level L holds child pointers to nodes at level L - 1 with separator
 * keys; child i holds the keys in [key_i, key_(i+1)), child 0 everything
 * of its parent's range below key_1 (its stored key is zero).  The root is
 * the only node whose LBA the caller keeps.
 *
 * Invariants (fs_bt_check verifies all of them; "N" rules are the node
 * format's, fs_format.h; "T" rules need the tree and are checked whenever
 * a node is reached from its parent, so damage is caught on any path):
 *   I1 keys are strictly increasing within a node (N11).
 *   I2 (T1) every key of a child lies within the range its parent gives
 *      it; the root's range is all keys.  So a node is reachable from one
 *      parent only, and keys across the leaves are in order.
 *   I3 (T2) a child's level is its parent's minus one, so every leaf is
 *      at the same depth (N8 with the expected level).
 *   I4 fill bounds.  (T3) a leaf other than the root holds >= 1 item and
 *      every internal node >= 2 children (the root too: a root with one
 *      child is replaced by the child).  (T4) an internal node other than
 *      the root holds int_min..int_max children (int_max = cfg.fanout,
 *      int_min = max(2, int_max / 4)); T4 is checked by fs_bt_check only
 *      (a tree written with another fanout is still readable).  A leaf
 *      holds at most FS_BT_BODY_BYTES of item headers and values (N9/N10).
 *   I5 cache (asserted by fs_bt_check): see Node states.  (T5) the
 *      allocator never hands out a block the cache holds (else the free
 *      space map is damaged: -EUCLEAN).
 *   I6 atomicity: an update runs in two phases.  Phase 1 (plan_*) reads
 *      every node it will touch (path, siblings) and allocates every new
 *      node, pinning them; phase 2 (apply_*) rewrites them and cannot
 *      fail.  An error in phase 1 releases everything: nothing changed.
 *
 * Splits (insert, growing update).  A leaf that overflows is split in two
 * at the point that balances the bytes best, except that an insert at the
 * end of a leaf moves only the new item to the new leaf (appends: growing
 * files, rising inode numbers, leave full leaves behind).  Values of up
 * to 3 KiB can make a two-way split impossible ([small][3K new][small]
 * where neither side fits): then three leaves, [before][new][after], each
 * of which fits.  Internal nodes split in halves.  A full root gets a new
 * root above it (the tree grows a level; the root moves).
 *
 * Rebalance policy (delete, and an update that does not split).  Leaves:
 * a non-root leaf left empty or using less than a quarter of its body is
 * merged into its left sibling if the two fit in one node, else its right
 * sibling into it if they fit, else left alone (it then stays next to
 * siblings more than 3/4 full); an empty leaf always fits, so empty nodes
 * are freed at once.  Inserts never merge (a leaf just split off by an
 * append is meant to fill up).  No redistribution between leaves: with
 * variable-size items it buys little over the merge rule.  Internal
 * nodes: below int_min children, borrow from a sibling that has more than
 * int_min (redistribute evenly), else merge with it.  Siblings are taken
 * under the same parent only.  Merges remove the right node of the pair,
 * so a parent's entry 0 is never removed.  A root left with one child is
 * freed and the child becomes the root (the tree shrinks a level).
 *
 * Caching: the cache lives here, not in the caller, because
 *   - a node is verified (CRC and N rules) once, when it enters the cache,
 *     not on every access, and modified nodes are encoded and checksummed
 *     once per flush, not once per change;
 *   - an update must pin its whole path, the siblings and new nodes for
 *     the two phases (I6): only the tree knows which, and a caller's cache
 *     could evict them;
 *   - the caller's transaction needs the set of changed nodes, which the
 *     tree tracks exactly (dirty list) and hands over with fs_bt_flush.
 * Memory stays bounded and independent of the tree's size: the cache
 * keeps at most cfg.cache_nodes clean nodes (beyond that, clean unpinned
 * ones are evicted, least recently used first); dirty nodes come on top
 * and stay until fs_bt_written, so they are bounded by how much the caller
 * batches per transaction (at most FS_BT_OP_MAX_NODES per update;
 * fs_bt_dirty_count tells).  Counting dirty nodes against the bound
 * instead would evict every clean node, the root included, as soon as a
 * batch dirtied more than cache_nodes.  Pinned clean nodes are at most
 * those of one update (FS_BT_OP_MAX_NODES + the path) plus one leaf per
 * active fs_bt_iterate.  So memory is at most cache_nodes + dirty + pinned
 * nodes of ~4.1 KiB, plus fixed scratch (~40 KiB).
 *
 * Node states (struct fs_bt_node), and the function of each transition:
 *   absent --node_load (read + verify)--> clean, pinned
 *   absent --node_fresh (ops->alloc)----> fresh, pinned, in the hash
 *   clean pinned --unpin--> clean on the LRU list --cache_trim--> absent
 *   clean on LRU --pin--> clean pinned
 *   clean or fresh --node_dirty--> dirty (on the dirty list, pinned or not)
 *   dirty --fs_bt_written--> clean (LRU if unpinned)
 *   fresh --fresh_discard (phase 1 failed, ops->free)--> absent
 *   any pinned --node_kill (ops->free)--> dead (out of hash and lists)
 *   dead --unpin to zero--> freed
 * So: a node is on the LRU list iff clean, unpinned and not dead; on the
 * dirty list iff dirty; on no list iff pinned and clean (or dead).  Pins
 * are only held inside one API call, except the leaf an fs_bt_iterate
 * holds across its callback (bt->iter_pins); bt->pins == bt->iter_pins
 * at every API exit.
 *
 * Locking: none inside.  The tree is not thread-safe; the filesystem
 * calls it under its metadata lock, which protects every field of struct
 * fs_bt and of every node (lookups change the cache too).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_btree.h"

#define LEAF_LOW_BYTES (FS_BT_BODY_BYTES / 4) /* merge below this */
#define LEAF_PARTS_MAX 3 /* a leaf splits in at most three */
#define SEARCH_HOPS_MAX 4 /* leaves a GE/LE search may visit */
#define ITEMS_MAX (2 * FS_BT_LEAF_CAP + 2) /* two leaves and an edit */
#define ENTS_MAX (2 * FS_BT_INT_CAP + 2) /* two internal nodes and more */

struct link {
	struct link *prev, *next; /* circular; a lone link points to itself */
};

/* A cached node.  All fields are protected by the caller's lock. */
struct fs_bt_node {
	uint64_t lba; /* where it is stored */
	struct fs_bt_node *hnext; /* hash chain */
	struct link link; /* on bt->lru, bt->dirty or alone */
	uint64_t mod; /* bt->seq of its last change (valid when dirty) */
	uint32_t ref; /* pins */
	uint8_t dirty; /* differs from storage */
	uint8_t dead; /* freed while pinned: out of hash and lists */
	uint8_t buf[FS_BT_NODE_BYTES]; /* the node; crc stale while dirty */
};

/* A tree.  All fields are protected by the caller's lock (Locking). */
struct fs_bt {
	struct fs_bt_cfg cfg; /* copy of the caller's */
	uint64_t root; /* root LBA */
	unsigned height; /* root level + 1 */
	unsigned int_max, int_min; /* fanout bounds (I4) */
	uint64_t max_gen; /* newest committed generation (N7) */
	uint64_t flush_gen; /* gen of the last flush */
	uint64_t seq; /* bumped by every change: cursors, flush tokens */
	/* cache */
	struct fs_bt_node **hash; /* chains by LBA */
	unsigned hash_shift; /* 64 - log2(buckets) */
	uint32_t cache_max; /* clean nodes kept: cfg.cache_nodes or default */
	uint32_t nodes; /* nodes in the hash (not dead ones) */
	uint32_t ndirty; /* nodes on the dirty list */
	uint32_t pins; /* pins held, all nodes */
	uint32_t iter_pins; /* of which fs_bt_iterate holds across calls */
	struct link lru; /* clean unpinned nodes, least recent first */
	struct link dirty; /* dirty nodes */
	uint64_t reads, hits, evictions; /* counters */
	/* scratch for one update (phase 2 may not allocate) */
	uint8_t scratch[2][FS_BT_NODE_BYTES]; /* copies of edited leaves */
	uint8_t valbuf[FS_BT_MAX_VALUE_BYTES]; /* copy of the new value */
	struct fs_bt_item items[ITEMS_MAX]; /* leaf items being rebuilt */
	struct fs_bt_ptr ents[ENTS_MAX]; /* internal entries being rebuilt */
};

/* Key range of a node: [lo, hi), no upper bound unless has_hi. */
struct range {
	struct fs_bt_key lo, hi;
	int has_hi;
};

/* A root-to-leaf path: node[0] is the leaf, node[height - 1] the root. */
struct path {
	unsigned height;
	struct fs_bt_node *node[FS_BT_MAX_LEVELS];
	unsigned slot[FS_BT_MAX_LEVELS]; /* leaf: lower bound; else child */
	struct range range[FS_BT_MAX_LEVELS];
};

enum edit { EDIT_INSERT, EDIT_REPLACE, EDIT_DELETE };
enum act { ACT_NONE, ACT_MERGE, ACT_BORROW };

/* One update in flight. */
struct op {
	enum edit edit;
	struct fs_bt_key key;
	size_t len; /* new value length (in bt->valbuf) */
	struct path p;
	unsigned pos; /* slot of the edited item in the leaf */
	unsigned m; /* leaf items after the edit (bt->items) */
	size_t bytes; /* their body bytes */
	/* overflow plan */
	unsigned cuts[LEAF_PARTS_MAX + 1], nparts;
	struct fs_bt_node *fresh[FS_BT_OP_MAX_NODES];
	unsigned nfresh, used_fresh;
	/* underflow plan, per level */
	enum act act[FS_BT_MAX_LEVELS];
	struct fs_bt_node *sib[FS_BT_MAX_LEVELS]; /* pinned sibling */
	int sib_left[FS_BT_MAX_LEVELS]; /* it is the left one */
	int shrink; /* the root is left with one child */
};

static const struct fs_bt_key key_zero;

/* ---- keys ---- */

static int key_is_max(const struct fs_bt_key *k)
{
	return k->objectid == UINT64_MAX && k->type == UINT8_MAX &&
	       k->offset == UINT64_MAX;
}

static int key_is_zero(const struct fs_bt_key *k)
{
	return !fs_bt_key_cmp(k, &key_zero);
}

/* The next key in order; k must not be the largest. */
static void key_succ(struct fs_bt_key *k)
{
	if (k->offset++ != UINT64_MAX)
		return;
	if (k->type++ != UINT8_MAX)
		return;
	k->objectid++;
}

/* The previous key in order; k must not be zero. */
static void key_pred(struct fs_bt_key *k)
{
	if (k->offset-- != 0)
		return;
	if (k->type-- != 0)
		return;
	k->objectid--;
}

/* ---- lists ---- */

static void link_init(struct link *l)
{
	l->prev = l->next = l;
}

static void link_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static void link_add_tail(struct link *head, struct link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static struct fs_bt_node *node_of(struct link *l)
{
	return (struct fs_bt_node *)((char *)l -
				     offsetof(struct fs_bt_node, link));
}

/* ---- the cache ---- */

static struct fs_bt_node **bucket(struct fs_bt *bt, uint64_t lba)
{
	return &bt->hash[(lba * 0x9E3779B97F4A7C15ull) >> bt->hash_shift];
}

static struct fs_bt_node *cache_find(struct fs_bt *bt, uint64_t lba)
{
	struct fs_bt_node *n = *bucket(bt, lba);

	while (n && n->lba != lba)
		n = n->hnext;
	return n;
}

static void cache_insert(struct fs_bt *bt, struct fs_bt_node *n)
{
	struct fs_bt_node **b = bucket(bt, n->lba);

	n->hnext = *b;
	*b = n;
	bt->nodes++;
}

static void cache_remove(struct fs_bt *bt, struct fs_bt_node *n)
{
	struct fs_bt_node **pp = bucket(bt, n->lba);

	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	bt->nodes--;
}

/* Evict clean unpinned nodes, least recently used first, to the bound. */
static void cache_trim(struct fs_bt *bt)
{
	while (bt->nodes - bt->ndirty > bt->cache_max &&
	       bt->lru.next != &bt->lru) {
		struct fs_bt_node *n = node_of(bt->lru.next);

		link_del(&n->link);
		cache_remove(bt, n);
		free(n);
		bt->evictions++;
	}
}

static void pin(struct fs_bt *bt, struct fs_bt_node *n)
{
	if (n->ref++ == 0 && !n->dirty)
		link_del(&n->link); /* off the LRU list */
	bt->pins++;
}

static void unpin(struct fs_bt *bt, struct fs_bt_node *n)
{
	assert(n->ref > 0 && bt->pins > 0);
	bt->pins--;
	if (--n->ref)
		return;
	if (n->dead) {
		free(n);
		return;
	}
	if (!n->dirty) {
		link_add_tail(&bt->lru, &n->link);
		cache_trim(bt);
	}
}

static struct fs_bt_node *node_mem(uint64_t lba)
{
	struct fs_bt_node *n = malloc(sizeof(*n));

	if (!n)
		return NULL;
	memset(n, 0, offsetof(struct fs_bt_node, buf));
	n->lba = lba;
	link_init(&n->link);
	return n;
}

/* The node changed in this update: onto the dirty list, tell the caller. */
static void node_dirty(struct fs_bt *bt, struct fs_bt_node *n)
{
	assert(n->ref > 0 && !n->dead);
	n->mod = bt->seq;
	if (n->dirty)
		return;
	n->dirty = 1;
	bt->ndirty++;
	link_add_tail(&bt->dirty, &n->link);
	if (bt->cfg.ops->dirty)
		bt->cfg.ops->dirty(bt->cfg.ctx, n->lba);
}

/* The node is gone from the tree (phase 2): free its block. */
static void node_kill(struct fs_bt *bt, struct fs_bt_node *n)
{
	assert(n->ref > 0 && !n->dead);
	if (n->dirty) {
		link_del(&n->link);
		bt->ndirty--;
		n->dirty = 0;
	}
	cache_remove(bt, n);
	n->dead = 1;
	bt->cfg.ops->free(bt->cfg.ctx, n->lba);
}

/* ---- loading nodes ---- */

/* Read lba into n->buf and verify it (N rules, T3). */
static int node_read(struct fs_bt *bt, struct fs_bt_node *n, int level,
		     int is_root)
{
	struct fs_bt_expect ex = {
		.lba = n->lba,
		.owner = bt->cfg.owner,
		.fsid = bt->cfg.fsid,
		.max_gen = bt->max_gen,
		.level = level,
	};
	unsigned items;
	int ret;

	bt->reads++;
	ret = bt->cfg.ops->read(bt->cfg.ctx, n->lba, n->buf);
	if (ret < 0)
		return ret;
	ret = fs_bt_node_verify(n->buf, &ex);
	if (ret)
		return ret;
	items = fs_bt_node_nitems(n->buf);
	if (fs_bt_node_level(n->buf) == 0 && items == 0 && !is_root)
		return FS_CORRUPT(n->lba, "T3 empty leaf below the root");
	if (fs_bt_node_level(n->buf) > 0 && items < 2)
		return FS_CORRUPT(n->lba, "T3 internal node with one child");
	return 0;
}

/*
 * Pin node lba at level (-1: any, for a root), reading it on a miss.
 * A cached node is not verified again, except its level.
 */
static int node_load(struct fs_bt *bt, uint64_t lba, int level, int is_root,
		     struct fs_bt_node **out)
{
	struct fs_bt_node *n = cache_find(bt, lba);
	int ret;

	if (n) {
		if (level >= 0 && fs_bt_node_level(n->buf) != (unsigned)level)
			return FS_CORRUPT(lba, "N8 unexpected level");
		bt->hits++;
		pin(bt, n);
		*out = n;
		return 0;
	}
	n = node_mem(lba);
	if (!n)
		return -ENOMEM;
	ret = node_read(bt, n, level, is_root);
	if (ret) {
		free(n);
		return ret;
	}
	cache_insert(bt, n);
	n->ref = 1;
	bt->pins++;
	cache_trim(bt);
	*out = n;
	return 0;
}

/* T1: the node's keys lie within r. */
static int in_range(const struct fs_bt_node *n, const struct range *r)
{
	unsigned cnt = fs_bt_node_nitems(n->buf);
	int leaf = fs_bt_node_level(n->buf) == 0;
	struct fs_bt_key first, last;

	if (cnt < (leaf ? 1u : 2u))
		return 1; /* nothing to compare (T3 is checked elsewhere) */
	if (leaf) {
		fs_bt_leaf_key(n->buf, 0, &first);
		fs_bt_leaf_key(n->buf, cnt - 1, &last);
	} else {
		fs_bt_int_key(n->buf, 1, &first);
		fs_bt_int_key(n->buf, cnt - 1, &last);
	}
	if (fs_bt_key_cmp(&first, &r->lo) < (leaf ? 0 : 1))
		return 0;
	return !r->has_hi || fs_bt_key_cmp(&last, &r->hi) < 0;
}

/* Range of child slot of parent, whose own range is pr. */
static void child_range(const struct fs_bt_node *parent, unsigned slot,
			const struct range *pr, struct range *cr)
{
	*cr = *pr;
	if (slot > 0)
		fs_bt_int_key(parent->buf, slot, &cr->lo);
	if (slot + 1 < fs_bt_node_nitems(parent->buf)) {
		fs_bt_int_key(parent->buf, slot + 1, &cr->hi);
		cr->has_hi = 1;
	}
}

/* Pin child slot of parent (range pr) into *out with its range *cr. */
static int child_load(struct fs_bt *bt, struct fs_bt_node *parent,
		      unsigned slot, const struct range *pr,
		      struct fs_bt_node **out, struct range *cr)
{
	uint64_t lba = fs_bt_int_child(parent->buf, slot);
	int level = (int)fs_bt_node_level(parent->buf) - 1;
	int ret;

	child_range(parent, slot, pr, cr);
	ret = node_load(bt, lba, level, 0, out);
	if (ret)
		return ret;
	if (!in_range(*out, cr)) {
		unpin(bt, *out);
		*out = NULL;
		return FS_CORRUPT(lba, "T1 keys outside the parent's range");
	}
	return 0;
}

/* ---- searching within a node ---- */

typedef void (*key_at_fn)(const uint8_t *node, unsigned i, struct fs_bt_key *k);

/* First slot whose key is > k (strict) or >= k (!strict). */
static unsigned bound(const uint8_t *node, const struct fs_bt_key *k,
		      int strict)
{
	key_at_fn key_at = fs_bt_node_level(node) ? fs_bt_int_key :
						    fs_bt_leaf_key;
	unsigned lo = 0, hi = fs_bt_node_nitems(node);
	struct fs_bt_key mid;

	while (lo < hi) {
		unsigned m = lo + (hi - lo) / 2;
		int c;

		key_at(node, m, &mid);
		c = fs_bt_key_cmp(&mid, k);
		if (c < 0 || (strict && c == 0))
			lo = m + 1;
		else
			hi = m;
	}
	return lo;
}

/* Leaf: first slot >= k.  Internal: the child whose range holds k. */
static unsigned node_slot(const uint8_t *node, const struct fs_bt_key *k)
{
	if (fs_bt_node_level(node) == 0)
		return bound(node, k, 0);
	return bound(node, k, 1) - 1; /* key 0 is zero: bound >= 1 */
}

static void path_release(struct fs_bt *bt, struct path *p, unsigned from)
{
	for (unsigned l = from; l < p->height; l++) {
		if (p->node[l])
			unpin(bt, p->node[l]);
		p->node[l] = NULL;
	}
}

/* Pin the path from the root to the leaf whose range holds key. */
static int descend(struct fs_bt *bt, const struct fs_bt_key *key,
		   struct path *p)
{
	unsigned l = bt->height - 1;
	int ret;

	memset(p, 0, sizeof(*p));
	p->height = bt->height;
	ret = node_load(bt, bt->root, (int)l, 1, &p->node[l]);
	if (ret)
		return ret;
	for (;; l--) {
		p->slot[l] = node_slot(p->node[l]->buf, key);
		if (l == 0)
			return 0;
		ret = child_load(bt, p->node[l], p->slot[l], &p->range[l],
				 &p->node[l - 1], &p->range[l - 1]);
		if (ret) {
			path_release(bt, p, l);
			return ret;
		}
	}
}

/* ---- searches ---- */

struct hit {
	struct fs_bt_node *leaf; /* pinned */
	unsigned slot;
};

/* First item >= k, hopping to the next leaf when this one has none. */
static int find_ge(struct fs_bt *bt, struct fs_bt_key k, struct hit *h)
{
	struct path p;
	int ret;

	for (int hop = 0; hop < SEARCH_HOPS_MAX; hop++) {
		ret = descend(bt, &k, &p);
		if (ret)
			return ret;
		if (p.slot[0] < fs_bt_node_nitems(p.node[0]->buf)) {
			path_release(bt, &p, 1);
			h->leaf = p.node[0];
			h->slot = p.slot[0];
			return 0;
		}
		path_release(bt, &p, 0);
		if (!p.range[0].has_hi)
			return -ENOENT;
		k = p.range[0].hi; /* the next leaf starts there */
	}
	return FS_CORRUPT(bt->root, "T1 search does not converge");
}

/* Last item <= k, hopping to the previous leaf when this one has none. */
static int find_le(struct fs_bt *bt, struct fs_bt_key k, struct hit *h)
{
	struct path p;
	unsigned slot;
	int ret;

	for (int hop = 0; hop < SEARCH_HOPS_MAX; hop++) {
		ret = descend(bt, &k, &p);
		if (ret)
			return ret;
		slot = bound(p.node[0]->buf, &k, 1);
		if (slot > 0) {
			path_release(bt, &p, 1);
			h->leaf = p.node[0];
			h->slot = slot - 1;
			return 0;
		}
		path_release(bt, &p, 0);
		if (key_is_zero(&p.range[0].lo))
			return -ENOENT;
		k = p.range[0].lo; /* the previous leaf ends just below */
		key_pred(&k);
	}
	return FS_CORRUPT(bt->root, "T1 search does not converge");
}

static int find_eq(struct fs_bt *bt, const struct fs_bt_key *k, struct hit *h)
{
	struct fs_bt_key got;
	struct path p;
	int ret = descend(bt, k, &p);

	if (ret)
		return ret;
	path_release(bt, &p, 1);
	h->leaf = p.node[0];
	h->slot = p.slot[0];
	if (h->slot < fs_bt_node_nitems(h->leaf->buf)) {
		fs_bt_leaf_key(h->leaf->buf, h->slot, &got);
		if (!fs_bt_key_cmp(&got, k))
			return 0;
	}
	unpin(bt, h->leaf);
	return -ENOENT;
}

static int find(struct fs_bt *bt, const struct fs_bt_key *key,
		enum fs_bt_mode mode, struct hit *h)
{
	struct fs_bt_key k = *key;

	switch (mode) {
	case FS_BT_EQ:
		return find_eq(bt, key, h);
	case FS_BT_GT:
		if (key_is_max(&k))
			return -ENOENT;
		key_succ(&k);
		return find_ge(bt, k, h);
	case FS_BT_GE:
		return find_ge(bt, k, h);
	case FS_BT_LT:
		if (key_is_zero(&k))
			return -ENOENT;
		key_pred(&k);
		return find_le(bt, k, h);
	case FS_BT_LE:
		return find_le(bt, k, h);
	}
	return -EINVAL;
}

/* Copy the hit's key and value out; returns the value length. */
static int hit_copy(const struct hit *h, struct fs_bt_key *key, void *val,
		    size_t cap)
{
	size_t len;
	const uint8_t *v = fs_bt_leaf_val(h->leaf->buf, h->slot, &len);

	if (key)
		fs_bt_leaf_key(h->leaf->buf, h->slot, key);
	if (cap)
		memcpy(val, v, len < cap ? len : cap);
	return (int)len;
}

/* ---- building nodes ---- */

/* Decode the items of a leaf (a scratch copy: items point into it). */
static unsigned leaf_items(const uint8_t *node, struct fs_bt_item *it)
{
	unsigned n = fs_bt_node_nitems(node);

	for (unsigned i = 0; i < n; i++) {
		size_t len;

		fs_bt_leaf_key(node, i, &it[i].key);
		it[i].val = fs_bt_leaf_val(node, i, &len);
		it[i].len = (uint16_t)len;
	}
	return n;
}

static unsigned int_ents(const uint8_t *node, struct fs_bt_ptr *e)
{
	unsigned n = fs_bt_node_nitems(node);

	for (unsigned i = 0; i < n; i++) {
		fs_bt_int_key(node, i, &e[i].key);
		e[i].child = fs_bt_int_child(node, i);
	}
	return n;
}

static size_t items_bytes(const struct fs_bt_item *it, unsigned n)
{
	size_t b = 0;

	for (unsigned i = 0; i < n; i++)
		b += fs_bt_item_bytes(it[i].len);
	return b;
}

static void leaf_write(struct fs_bt *bt, struct fs_bt_node *n,
		       const struct fs_bt_item *it, unsigned cnt)
{
	fs_bt_leaf_build(n->buf, it, cnt);
	node_dirty(bt, n);
}

static void int_write(struct fs_bt *bt, struct fs_bt_node *n,
		      const struct fs_bt_ptr *e, unsigned cnt)
{
	fs_bt_int_build(n->buf, e, cnt);
	node_dirty(bt, n);
}

/* Header of a new node (body and nitems come from a build). */
static void node_init(struct fs_bt *bt, struct fs_bt_node *n, unsigned level)
{
	struct fs_bt_hdr h = {
		.level = (uint8_t)level,
		.lba = n->lba,
		.owner = bt->cfg.owner,
	};

	memcpy(h.fsid, bt->cfg.fsid, FS_BT_FSID_BYTES);
	memset(n->buf, 0, sizeof(n->buf));
	fs_bt_hdr_encode(n->buf, &h);
}

/* Allocate a block for a new node and pin an empty node for it. */
static int node_fresh(struct fs_bt *bt, struct fs_bt_node **out)
{
	uint64_t lba;
	struct fs_bt_node *n;
	int ret = bt->cfg.ops->alloc(bt->cfg.ctx, &lba);

	if (ret < 0)
		return ret;
	if (lba >= FS_BT_MAX_LBA || cache_find(bt, lba)) /* not freed back */
		return FS_CORRUPT(lba, "T5 allocator gave a block in use");
	n = node_mem(lba);
	if (!n) {
		bt->cfg.ops->free(bt->cfg.ctx, lba);
		return -ENOMEM;
	}
	cache_insert(bt, n);
	n->ref = 1;
	bt->pins++;
	*out = n;
	return 0;
}

/* Undo node_fresh (phase 1 failed, or the node went unused). */
static void fresh_discard(struct fs_bt *bt, struct fs_bt_node *n)
{
	assert(n->ref == 1 && !n->dirty);
	cache_remove(bt, n);
	bt->pins--;
	bt->cfg.ops->free(bt->cfg.ctx, n->lba);
	free(n);
}

/* ---- update, phase 1: the edit and the plans ---- */

/* Copy the leaf, decode its items into bt->items, apply the edit. */
static void op_edit_items(struct fs_bt *bt, struct op *op)
{
	struct fs_bt_item *it = bt->items;
	unsigned n;

	memcpy(bt->scratch[0], op->p.node[0]->buf, FS_BT_NODE_BYTES);
	n = leaf_items(bt->scratch[0], it);
	if (op->edit == EDIT_INSERT) {
		memmove(it + op->pos + 1, it + op->pos,
			(n - op->pos) * sizeof(*it));
		n++;
	} else if (op->edit == EDIT_DELETE) {
		memmove(it + op->pos, it + op->pos + 1,
			(n - op->pos - 1) * sizeof(*it));
		n--;
	}
	if (op->edit != EDIT_DELETE) {
		it[op->pos].key = op->key;
		it[op->pos].val = bt->valbuf;
		it[op->pos].len = (uint16_t)op->len;
	}
	op->m = n;
	op->bytes = items_bytes(it, n);
}

/* Where the overflowing leaf items are cut (I6: computed before phase 2). */
static void plan_cuts(const struct fs_bt_item *it, struct op *op)
{
	size_t pre = 0, best = SIZE_MAX;
	unsigned k, bestk = 0;

	for (k = 1; k < op->m; k++) {
		size_t diff;

		pre += fs_bt_item_bytes(it[k - 1].len);
		if (pre > FS_BT_BODY_BYTES)
			break;
		if (op->bytes - pre > FS_BT_BODY_BYTES)
			continue;
		diff = pre * 2 > op->bytes ? pre * 2 - op->bytes :
					     op->bytes - pre * 2;
		if (diff < best) {
			best = diff;
			bestk = k;
		}
	}
	if (op->edit == EDIT_INSERT && op->pos == op->m - 1)
		bestk = op->m - 1; /* an append: the old items stay full */
	op->cuts[0] = 0;
	if (bestk) {
		op->nparts = 2;
		op->cuts[1] = bestk;
	} else { /* [before][edited][after], each fits */
		op->nparts = 3;
		op->cuts[1] = op->pos;
		op->cuts[2] = op->pos + 1;
	}
	op->cuts[op->nparts] = op->m;
}

static int plan_fresh(struct fs_bt *bt, struct op *op, unsigned need)
{
	while (op->nfresh < need) {
		int ret = node_fresh(bt, &op->fresh[op->nfresh]);

		if (ret)
			return ret;
		op->nfresh++;
	}
	return 0;
}

/* Splits: which levels split, and the new nodes they need. */
static int plan_overflow(struct fs_bt *bt, struct op *op)
{
	unsigned need, add, l;

	plan_cuts(bt->items, op);
	need = add = op->nparts - 1;
	for (l = 1; l < op->p.height && add; l++) {
		if (fs_bt_node_nitems(op->p.node[l]->buf) + add <=
		    bt->int_max) {
			add = 0;
		} else {
			add = 1;
			need++;
		}
	}
	if (add) { /* a new root */
		if (op->p.height == FS_BT_MAX_LEVELS) {
			vol_log(VOL_LOG_ERR, "b-tree: %u levels, cannot grow",
				FS_BT_MAX_LEVELS);
			return -ENOSPC;
		}
		need++;
	}
	return plan_fresh(bt, op, need);
}

/* Leaf underflow: pick a sibling to merge with, if any fits. */
static int plan_leaf(struct fs_bt *bt, struct op *op, int *removes)
{
	struct fs_bt_node *parent = op->p.node[1], *sib;
	unsigned s = op->p.slot[1], n = fs_bt_node_nitems(parent->buf);
	struct range r;
	int ret;

	*removes = 0;
	if (op->m > 0 && op->bytes >= LEAF_LOW_BYTES)
		return 0;
	for (int left = 1; left >= 0; left--) {
		if (left ? s == 0 : s + 1 >= n)
			continue;
		ret = child_load(bt, parent, left ? s - 1 : s + 1,
				 &op->p.range[1], &sib, &r);
		if (ret)
			return ret;
		if (fs_bt_leaf_used(sib->buf) + op->bytes <= FS_BT_BODY_BYTES) {
			op->act[0] = ACT_MERGE;
			op->sib[0] = sib;
			op->sib_left[0] = left;
			*removes = 1;
			return 0;
		}
		unpin(bt, sib);
	}
	return 0;
}

/* Internal node l loses an entry: borrow, merge, or shrink the root. */
static int plan_int(struct fs_bt *bt, struct op *op, unsigned l, int *removes)
{
	unsigned n = fs_bt_node_nitems(op->p.node[l]->buf) - 1, s;
	struct fs_bt_node *parent;
	struct range r;
	int ret;

	*removes = 0;
	if (l == op->p.height - 1) {
		op->shrink = n == 1;
		return 0;
	}
	if (n >= bt->int_min)
		return 0;
	parent = op->p.node[l + 1];
	s = op->p.slot[l + 1];
	op->sib_left[l] = s > 0;
	ret = child_load(bt, parent, s > 0 ? s - 1 : s + 1, &op->p.range[l + 1],
			 &op->sib[l], &r);
	if (ret)
		return ret;
	if (fs_bt_node_nitems(op->sib[l]->buf) > bt->int_min) {
		op->act[l] = ACT_BORROW;
	} else {
		op->act[l] = ACT_MERGE;
		*removes = 1;
	}
	return 0;
}

/* Merges: which levels merge or borrow, and the siblings they need. */
static int plan_underflow(struct fs_bt *bt, struct op *op)
{
	int removes = 0, ret = 0;

	if (op->p.height > 1)
		ret = plan_leaf(bt, op, &removes);
	for (unsigned l = 1; !ret && removes && l < op->p.height; l++)
		ret = plan_int(bt, op, l, &removes);
	return ret;
}

/* ---- update, phase 2: apply (cannot fail) ---- */

static struct fs_bt_node *fresh_take(struct fs_bt *bt, struct op *op,
				     unsigned level)
{
	struct fs_bt_node *n;

	FS_VERIFY(op->used_fresh < op->nfresh);
	n = op->fresh[op->used_fresh++];
	node_init(bt, n, level);
	return n;
}

static void set_root(struct fs_bt *bt, uint64_t lba, unsigned height)
{
	bt->root = lba;
	bt->height = height;
	if (bt->cfg.ops->set_root)
		bt->cfg.ops->set_root(bt->cfg.ctx, lba);
}

/* Insert up[0..nup) after slot in internal node l; returns entries for
 * level l + 1 (0 or 1, in up). */
static unsigned int_insert(struct fs_bt *bt, struct op *op, unsigned l,
			   struct fs_bt_ptr *up, unsigned nup)
{
	struct fs_bt_node *node = op->p.node[l], *right;
	struct fs_bt_ptr *e = bt->ents;
	unsigned n = int_ents(node->buf, e), at = op->p.slot[l] + 1, half;

	memmove(e + at + nup, e + at, (n - at) * sizeof(*e));
	memcpy(e + at, up, nup * sizeof(*e));
	n += nup;
	if (n <= bt->int_max) {
		int_write(bt, node, e, n);
		return 0;
	}
	half = (n + 1) / 2;
	right = fresh_take(bt, op, l);
	up[0].key = e[half].key;
	up[0].child = right->lba;
	e[half].key = key_zero;
	int_write(bt, node, e, half);
	int_write(bt, right, e + half, n - half);
	return 1;
}

static void grow_root(struct fs_bt *bt, struct op *op,
		      const struct fs_bt_ptr *up, unsigned nup)
{
	struct fs_bt_node *root = fresh_take(bt, op, op->p.height);
	struct fs_bt_ptr *e = bt->ents;

	e[0].key = key_zero;
	e[0].child = bt->root;
	memcpy(e + 1, up, nup * sizeof(*e));
	int_write(bt, root, e, nup + 1);
	set_root(bt, root->lba, bt->height + 1);
}

static void apply_overflow(struct fs_bt *bt, struct op *op)
{
	const struct fs_bt_item *it = bt->items;
	struct fs_bt_ptr up[LEAF_PARTS_MAX - 1];
	unsigned nup = 0, l;

	for (unsigned j = 0; j < op->nparts; j++) {
		struct fs_bt_node *n = j ? fresh_take(bt, op, 0) :
					   op->p.node[0];
		unsigned from = op->cuts[j];

		leaf_write(bt, n, it + from, op->cuts[j + 1] - from);
		if (j) {
			up[nup].key = it[from].key;
			up[nup++].child = n->lba;
		}
	}
	for (l = 1; nup && l < op->p.height; l++)
		nup = int_insert(bt, op, l, up, nup);
	if (nup)
		grow_root(bt, op, up, nup);
	FS_VERIFY(op->used_fresh == op->nfresh);
}

/* Leaf level: write the edit, merged with the chosen sibling if any.
 * Returns the parent entry to remove, or -1. */
static int apply_leaf(struct fs_bt *bt, struct op *op)
{
	struct fs_bt_item *it = bt->items;
	struct fs_bt_node *leaf = op->p.node[0], *sib = op->sib[0];
	unsigned ns;

	if (op->act[0] == ACT_NONE) {
		leaf_write(bt, leaf, it, op->m);
		return -1;
	}
	memcpy(bt->scratch[1], sib->buf, FS_BT_NODE_BYTES);
	ns = fs_bt_node_nitems(bt->scratch[1]);
	if (op->sib_left[0]) { /* sibling's items first, into the sibling */
		memmove(it + ns, it, op->m * sizeof(*it));
		leaf_items(bt->scratch[1], it);
		leaf_write(bt, sib, it, op->m + ns);
		node_kill(bt, leaf);
		return (int)op->p.slot[1];
	}
	leaf_items(bt->scratch[1], it + op->m);
	leaf_write(bt, leaf, it, op->m + ns);
	node_kill(bt, sib);
	return (int)op->p.slot[1] + 1;
}

static void int_set_key(struct fs_bt *bt, struct fs_bt_node *n, unsigned i,
			const struct fs_bt_key *k)
{
	unsigned cnt = int_ents(n->buf, bt->ents);

	bt->ents[i].key = *k;
	int_write(bt, n, bt->ents, cnt);
}

/*
 * Node l (entries in bt->ents[0..n)) joins its sibling: merge (returns
 * the parent entry to remove) or borrow (fixes the separator, -1).
 */
static int int_join(struct fs_bt *bt, struct op *op, unsigned l, unsigned n)
{
	struct fs_bt_node *node = op->p.node[l], *sib = op->sib[l];
	struct fs_bt_node *parent = op->p.node[l + 1];
	struct fs_bt_ptr *e = bt->ents;
	unsigned ns = fs_bt_node_nitems(sib->buf), total = n + ns, half;
	unsigned ri = op->p.slot[l + 1] + (op->sib_left[l] ? 0 : 1);
	struct fs_bt_node *left = op->sib_left[l] ? sib : node;
	struct fs_bt_node *right = op->sib_left[l] ? node : sib;
	struct fs_bt_key sep;

	fs_bt_int_key(parent->buf, ri, &sep);
	if (op->sib_left[l]) {
		memmove(e + ns, e, n * sizeof(*e));
		int_ents(sib->buf, e);
	} else {
		int_ents(sib->buf, e + n);
	}
	e[left == sib ? ns : n].key = sep; /* right's entry 0 */
	if (op->act[l] == ACT_MERGE) {
		int_write(bt, left, e, total);
		node_kill(bt, right);
		return (int)ri;
	}
	half = total / 2;
	sep = e[half].key;
	e[half].key = key_zero;
	int_write(bt, left, e, half);
	int_write(bt, right, e + half, total - half);
	int_set_key(bt, parent, ri, &sep);
	return -1;
}

/* Internal node l loses entry rm.  Returns the next removal, or -1. */
static int apply_int(struct fs_bt *bt, struct op *op, unsigned l, int rm)
{
	struct fs_bt_node *node = op->p.node[l];
	struct fs_bt_ptr *e = bt->ents;
	unsigned n = int_ents(node->buf, e) - 1;

	memmove(e + rm, e + rm + 1, (n - (unsigned)rm) * sizeof(*e));
	if (l == op->p.height - 1 && op->shrink) {
		node_kill(bt, node);
		set_root(bt, e[0].child, op->p.height - 1);
		return -1;
	}
	if (op->act[l] == ACT_NONE) {
		int_write(bt, node, e, n);
		return -1;
	}
	return int_join(bt, op, l, n);
}

static void apply_underflow(struct fs_bt *bt, struct op *op)
{
	int rm = apply_leaf(bt, op);

	for (unsigned l = 1; rm >= 0 && l < op->p.height; l++)
		rm = apply_int(bt, op, l, rm);
}

/* ---- update driver ---- */

static void op_release(struct fs_bt *bt, struct op *op, int failed)
{
	for (unsigned i = 0; i < op->nfresh; i++) {
		if (failed)
			fresh_discard(bt, op->fresh[i]);
		else
			unpin(bt, op->fresh[i]);
	}
	for (unsigned l = 0; l < FS_BT_MAX_LEVELS; l++)
		if (op->sib[l])
			unpin(bt, op->sib[l]);
	path_release(bt, &op->p, 0);
}

/* Find the leaf and slot; -EEXIST / -ENOENT as the edit requires. */
static int op_locate(struct fs_bt *bt, struct op *op)
{
	struct fs_bt_node *leaf;
	struct fs_bt_key got;
	int found = 0, ret = descend(bt, &op->key, &op->p);

	if (ret)
		return ret;
	leaf = op->p.node[0];
	op->pos = op->p.slot[0];
	if (op->pos < fs_bt_node_nitems(leaf->buf)) {
		fs_bt_leaf_key(leaf->buf, op->pos, &got);
		found = !fs_bt_key_cmp(&got, &op->key);
	}
	if (op->edit == EDIT_INSERT && found)
		return -EEXIST;
	if (op->edit != EDIT_INSERT && !found)
		return -ENOENT;
	return 0;
}

static int modify(struct fs_bt *bt, enum edit edit, const struct fs_bt_key *key,
		  const void *val, size_t len)
{
	struct op *op, op_mem;
	int ret;

	if (len > FS_BT_MAX_VALUE_BYTES)
		return -EINVAL;
	op = memset(&op_mem, 0, sizeof(op_mem));
	op->edit = edit;
	op->key = *key;
	op->len = len;
	if (len)
		memcpy(bt->valbuf, val, len); /* val may point into a node */
	ret = op_locate(bt, op);
	if (!ret) {
		op_edit_items(bt, op);
		if (op->bytes > FS_BT_BODY_BYTES)
			ret = plan_overflow(bt, op);
		else if (edit != EDIT_INSERT)
			ret = plan_underflow(bt, op);
	}
	if (!ret) {
		bt->seq++;
		if (op->bytes > FS_BT_BODY_BYTES)
			apply_overflow(bt, op);
		else
			apply_underflow(bt, op);
	}
	op_release(bt, op, ret != 0);
	assert(bt->pins == bt->iter_pins);
	return ret;
}

/* ---- public: open, close ---- */

static int cfg_check(const struct fs_bt_cfg *cfg)
{
	const struct fs_bt_ops *o = cfg->ops;

	if (!o || !o->read || !o->alloc || !o->free)
		return -EINVAL;
	if (cfg->fanout &&
	    (cfg->fanout < FS_BT_MIN_FANOUT || cfg->fanout > FS_BT_INT_CAP))
		return -EINVAL;
	return 0;
}

static int bt_alloc(const struct fs_bt_cfg *cfg, struct fs_bt **out)
{
	struct fs_bt *bt;
	unsigned bits = 4;
	int ret = cfg_check(cfg);

	if (ret)
		return ret;
	bt = calloc(1, sizeof(*bt));
	if (!bt)
		return -ENOMEM;
	bt->cfg = *cfg;
	bt->cache_max = cfg->cache_nodes ? cfg->cache_nodes : FS_BT_CACHE_NODES;
	while (bits < 20 && (1u << bits) < bt->cache_max)
		bits++;
	bt->hash_shift = 64 - bits;
	bt->hash = calloc((size_t)1 << bits, sizeof(*bt->hash));
	if (!bt->hash) {
		free(bt);
		return -ENOMEM;
	}
	bt->int_max = cfg->fanout ? cfg->fanout : FS_BT_INT_CAP;
	bt->int_min = bt->int_max / 4 > 2 ? bt->int_max / 4 : 2;
	bt->max_gen = bt->flush_gen = cfg->gen;
	bt->seq = 1; /* 0 never matches a cursor */
	link_init(&bt->lru);
	link_init(&bt->dirty);
	*out = bt;
	return 0;
}

int fs_bt_create(const struct fs_bt_cfg *cfg, struct fs_bt **out)
{
	struct fs_bt_node *root;
	struct fs_bt *bt;
	int ret = bt_alloc(cfg, &bt);

	if (ret)
		return ret;
	ret = node_fresh(bt, &root);
	if (ret) {
		fs_bt_close(bt);
		return ret;
	}
	node_init(bt, root, 0);
	bt->seq++;
	leaf_write(bt, root, NULL, 0);
	set_root(bt, root->lba, 1);
	unpin(bt, root);
	*out = bt;
	return 0;
}

int fs_bt_open(const struct fs_bt_cfg *cfg, uint64_t root, struct fs_bt **out)
{
	struct fs_bt_node *n;
	struct fs_bt *bt;
	int ret = bt_alloc(cfg, &bt);

	if (ret)
		return ret;
	ret = root < FS_BT_MAX_LBA ? node_load(bt, root, -1, 1, &n) :
				     FS_CORRUPT(root, "N12 root LBA too big");
	if (ret) {
		fs_bt_close(bt);
		return ret;
	}
	bt->root = root;
	bt->height = fs_bt_node_level(n->buf) + 1;
	unpin(bt, n);
	*out = bt;
	return 0;
}

void fs_bt_close(struct fs_bt *bt)
{
	if (!bt)
		return;
	assert(bt->pins == 0);
	for (size_t b = 0; b < (size_t)1 << (64 - bt->hash_shift); b++) {
		while (bt->hash[b]) {
			struct fs_bt_node *n = bt->hash[b];

			bt->hash[b] = n->hnext;
			free(n);
		}
	}
	free(bt->hash);
	free(bt);
}

uint64_t fs_bt_root(const struct fs_bt *bt)
{
	return bt->root;
}

unsigned fs_bt_height(const struct fs_bt *bt)
{
	return bt->height;
}

/* ---- public: reads ---- */

int fs_bt_search(struct fs_bt *bt, const struct fs_bt_key *key,
		 enum fs_bt_mode mode, struct fs_bt_key *found, void *val,
		 size_t cap)
{
	struct hit h;
	int ret = find(bt, key, mode, &h);

	if (ret)
		return ret;
	ret = hit_copy(&h, found, val, cap);
	unpin(bt, h.leaf);
	assert(bt->pins == bt->iter_pins);
	return ret;
}

int fs_bt_lookup(struct fs_bt *bt, const struct fs_bt_key *key, void *val,
		 size_t cap)
{
	return fs_bt_search(bt, key, FS_BT_EQ, NULL, val, cap);
}

static int cursor_set(struct fs_bt_cursor *cur, struct hit *h, void *val,
		      size_t cap)
{
	int ret = hit_copy(h, &cur->key, val, cap);

	cur->leaf = h->leaf->lba;
	cur->slot = h->slot;
	cur->seq = cur->bt->seq;
	unpin(cur->bt, h->leaf);
	return ret;
}

int fs_bt_first(struct fs_bt *bt, const struct fs_bt_key *start,
		struct fs_bt_cursor *cur, void *val, size_t cap)
{
	struct hit h;
	int ret = find(bt, start, FS_BT_GE, &h);

	cur->bt = bt;
	cur->seq = 0;
	if (ret)
		return ret;
	return cursor_set(cur, &h, val, cap);
}

int fs_bt_next(struct fs_bt_cursor *cur, void *val, size_t cap)
{
	struct fs_bt *bt = cur->bt;
	struct fs_bt_node *n = NULL;
	struct hit h;
	int ret;

	if (cur->seq == bt->seq)
		n = cache_find(bt, cur->leaf); /* unchanged tree: same leaf */
	if (n && cur->slot + 1 < fs_bt_node_nitems(n->buf)) {
		h.leaf = n;
		h.slot = cur->slot + 1;
		pin(bt, n);
		return cursor_set(cur, &h, val, cap);
	}
	ret = find(bt, &cur->key, FS_BT_GT, &h);
	if (ret)
		return ret;
	return cursor_set(cur, &h, val, cap);
}

/*
 * Call fn for the items of h's leaf from h->slot while <= hi (past it:
 * *done).  Returns fn's nonzero result, else 0 at the leaf's end or when
 * fn changed the tree; *last is the last key looked at.
 */
static int iter_leaf(struct fs_bt *bt, const struct hit *h,
		     const struct fs_bt_key *hi, fs_bt_iter_fn fn, void *arg,
		     struct fs_bt_key *last, int *done)
{
	unsigned n = fs_bt_node_nitems(h->leaf->buf);

	for (unsigned s = h->slot; s < n; s++) {
		uint64_t seq = bt->seq;
		const uint8_t *v;
		size_t len;
		int ret;

		fs_bt_leaf_key(h->leaf->buf, s, last);
		if (fs_bt_key_cmp(last, hi) > 0) {
			*done = 1;
			return 0;
		}
		v = fs_bt_leaf_val(h->leaf->buf, s, &len);
		bt->iter_pins++;
		ret = fn(arg, last, v, len);
		bt->iter_pins--;
		if (ret)
			return ret;
		if (bt->seq != seq)
			return 0; /* go on after *last, from the root */
	}
	return 0;
}

int fs_bt_iterate(struct fs_bt *bt, const struct fs_bt_key *lo,
		  const struct fs_bt_key *hi, fs_bt_iter_fn fn, void *arg)
{
	struct fs_bt_key last;
	struct hit h;
	int done = 0, ret = find(bt, lo, FS_BT_GE, &h);

	while (!ret) {
		ret = iter_leaf(bt, &h, hi, fn, arg, &last, &done);
		unpin(bt, h.leaf);
		if (ret || done)
			return ret; /* fn's word, or the range is done */
		ret = find(bt, &last, FS_BT_GT, &h);
	}
	assert(bt->pins == bt->iter_pins);
	return ret == -ENOENT ? 0 : ret; /* find's */
}

/* ---- public: updates ---- */

int fs_bt_insert(struct fs_bt *bt, const struct fs_bt_key *key, const void *val,
		 size_t len)
{
	return modify(bt, EDIT_INSERT, key, val, len);
}

int fs_bt_update(struct fs_bt *bt, const struct fs_bt_key *key, const void *val,
		 size_t len)
{
	return modify(bt, EDIT_REPLACE, key, val, len);
}

int fs_bt_delete(struct fs_bt *bt, const struct fs_bt_key *key)
{
	return modify(bt, EDIT_DELETE, key, NULL, 0);
}

/* ---- public: flushing ---- */

int fs_bt_flush(struct fs_bt *bt, uint64_t gen,
		int (*write)(void *arg, uint64_t lba, const void *node),
		void *arg, uint64_t *token)
{
	struct fs_bt_expect ex = {
		.owner = bt->cfg.owner,
		.fsid = bt->cfg.fsid,
		.max_gen = gen,
		.level = -1,
		.no_crc = 1, /* seal just wrote it */
	};
	int count = 0;

	if (gen < bt->flush_gen)
		return -EINVAL;
	bt->flush_gen = gen;
	for (struct link *l = bt->dirty.next; l != &bt->dirty; l = l->next) {
		struct fs_bt_node *n = node_of(l);
		int ret;

		ex.lba = n->lba;
		fs_bt_node_seal(n->buf, gen);
		FS_VERIFY(fs_bt_node_verify(n->buf, &ex) == 0);
		ret = write(arg, n->lba, n->buf);
		if (ret < 0)
			return ret;
		count++;
	}
	*token = bt->seq;
	return count;
}

void fs_bt_written(struct fs_bt *bt, uint64_t token)
{
	struct link *l = bt->dirty.next;
	struct fs_bt_hdr h;

	while (l != &bt->dirty) {
		struct fs_bt_node *n = node_of(l);

		l = l->next;
		if (n->mod > token)
			continue;
		fs_bt_hdr_decode(n->buf, &h);
		if (h.gen > bt->max_gen)
			bt->max_gen = h.gen;
		link_del(&n->link);
		n->dirty = 0;
		bt->ndirty--;
		if (!n->ref)
			link_add_tail(&bt->lru, &n->link);
	}
	cache_trim(bt);
}

unsigned fs_bt_dirty_count(const struct fs_bt *bt)
{
	return bt->ndirty;
}

/* ---- public: check and stats ---- */

void fs_bt_stats(const struct fs_bt *bt, struct fs_bt_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->height = bt->height;
	st->cached = bt->nodes;
	st->dirty = bt->ndirty;
	st->reads = bt->reads;
	st->hits = bt->hits;
	st->evictions = bt->evictions;
}

/* I5: the cache's bookkeeping (programmer errors: asserted). */
static void check_cache(struct fs_bt *bt)
{
	uint32_t nodes = 0, dirty = 0, listed = 0;

	for (size_t b = 0; b < (size_t)1 << (64 - bt->hash_shift); b++)
		for (struct fs_bt_node *n = bt->hash[b]; n; n = n->hnext) {
			assert(bucket(bt, n->lba) == &bt->hash[b]);
			assert(!n->dead);
			nodes++;
			dirty += n->dirty;
		}
	for (struct link *l = bt->dirty.next; l != &bt->dirty; l = l->next) {
		assert(node_of(l)->dirty);
		listed++;
	}
	for (struct link *l = bt->lru.next; l != &bt->lru; l = l->next)
		assert(!node_of(l)->dirty && !node_of(l)->ref);
	assert(nodes == bt->nodes && dirty == bt->ndirty && listed == dirty);
	assert(bt->pins == bt->iter_pins);
	(void)nodes;
	(void)dirty;
	(void)listed;
}

/* A node as it is now (in memory) obeys the format; I4's T4. */
static int check_one(struct fs_bt *bt, const struct fs_bt_node *n, int is_root,
		     struct fs_bt_stats *st)
{
	unsigned level = fs_bt_node_level(n->buf);
	unsigned cnt = fs_bt_node_nitems(n->buf);
	struct fs_bt_expect ex = {
		.lba = n->lba,
		.owner = bt->cfg.owner,
		.fsid = bt->cfg.fsid,
		.max_gen = UINT64_MAX, /* N7 was checked when it was read */
		.level = (int)level,
		.no_crc = 1, /* the CRC is written at flush */
	};
	int ret = fs_bt_node_verify(n->buf, &ex);

	if (ret)
		return ret;
	st->nodes[level]++;
	if (level == 0) {
		st->items += cnt;
		st->leaf_bytes += fs_bt_leaf_used(n->buf);
	} else if (!is_root && (cnt < bt->int_min || cnt > bt->int_max)) {
		return FS_CORRUPT(n->lba,
				  "T4 internal node fill out of bounds");
	}
	return 0;
}

/* Check n (pinned, range r) and its subtree, depth first. */
static int check_tree(struct fs_bt *bt, struct fs_bt_node *n,
		      const struct range *r, int is_root,
		      struct fs_bt_stats *st)
{
	int ret = check_one(bt, n, is_root, st);
	unsigned cnt = fs_bt_node_nitems(n->buf);

	if (ret || fs_bt_node_level(n->buf) == 0)
		return ret;
	for (unsigned i = 0; i < cnt && !ret; i++) {
		struct fs_bt_node *child;
		struct range cr;

		ret = child_load(bt, n, i, r, &child, &cr);
		if (ret)
			break;
		ret = check_tree(bt, child, &cr, 0, st);
		unpin(bt, child);
	}
	return ret;
}

int fs_bt_check(struct fs_bt *bt, struct fs_bt_stats *st)
{
	struct fs_bt_stats walk = { 0 };
	struct range all = { .has_hi = 0 };
	struct fs_bt_node *root;
	int ret;

	check_cache(bt);
	ret = node_load(bt, bt->root, (int)bt->height - 1, 1, &root);
	if (!ret) {
		ret = check_tree(bt, root, &all, 1, &walk);
		unpin(bt, root);
	}
	check_cache(bt);
	if (st) {
		fs_bt_stats(bt, st);
		memcpy(st->nodes, walk.nodes, sizeof(st->nodes));
		st->items = walk.items;
		st->leaf_bytes = walk.leaf_bytes;
	}
	return ret;
}
