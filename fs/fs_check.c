/*
 * fs_check.c - the offline checker behind `sixfold fsck`: the store's own
 * check (fs_store_check), then the POSIX layer's invariants over the
 * whole tree (fs_vfs.c, design notes V1..V5).
 *
 * Layer: fs/, above the store (fs_txn.h) and the tree (fs_btree.h).  It
 * only reads: no transaction, no write, no repair (a repair tool is to
 * come; this one says what is wrong).  It knows item formats through
 * fs_items.h and B+tree nodes through fs_format.h's verified accessors.
 *
 * How: one fs_bt_iterate over every key.  The items of one inode sort
 * together (INODE, XATTR, DIRENT, DIRINDEX, EXTENT), so what concerns one
 * inode alone is checked when its last item has gone by (struct obj):
 * its extents, and for a directory the pairing of its DIRENTs (all kept
 * until its DIRINDEXes, which come after them) with its DIRINDEXes.  What
 * spans inodes is counted in a hash table of every inode (struct rec):
 * entries naming it (the target may sort before or after the directory),
 * its nlink, parent and type, and the ORPHAN items, which come last; it
 * is judged once the walk is over.  Every extent and every B+tree node is
 * listed (struct blk) and sorted by volume block, to find a block used
 * twice.
 *
 * Rules (each message starts with its id):
 *   store  fs_store_check failed: tree (N and T rules), allocator (P, B),
 *          item formats (K, I, D, E, X, O), F1 (allocated blocks =
 *          nodes + extent blocks, by count), F2 (extent blocks allocated),
 *          F3 (inode numbers below next_ino).  Nothing below is checked
 *          then: the tree cannot be trusted.
 *   F1     every B+tree node's block is allocated.  With F1's count, F2
 *          and V3's "no block twice" below, the allocated blocks are
 *          exactly the nodes' and the extents'.
 *   F3     every inode number is below the superblock's next_ino (also
 *          in fs_store_check; kept so this walk stands on its own).
 *   V1     every DIRENT (dir, 32, off) has the DIRINDEX (dir, 33, cookie)
 *          with the same ino, type and name, whose cookie is off, and
 *          every DIRINDEX has its DIRENT; 3 <= DIRINDEX key offset <
 *          the directory's next_index; entries live in an existing
 *          directory inode; the inode an entry names exists and has the
 *          entry's type; no two entries of a directory have one name.
 *   V2     nlink of a non-directory = the entries naming it; of a
 *          directory, 2 + its subdirectory entries; a directory is named
 *          by exactly one entry (the root by none), in the directory its
 *          parent field gives, and reaches the root through those entries
 *          (no loop); the root (inode 1) exists, is a directory, parent 1.
 *          nlink 0 (unlinked while open) needs an ORPHAN item and no
 *          entries naming it (and, for a directory, none in it); an
 *          ORPHAN item names an existing inode of nlink 0 (counted in
 *          orphans: a valid state after a crash).  An inode with nlink > 0
 *          that no entry names is lost.
 *   V3     extents of an inode do not overlap and end at or below
 *          FS_MAX_FILE_BLOCKS; blocks = the sum of their nblocks; no two
 *          extents, and no extent and B+tree node, share a volume block;
 *          every item's objectid (but the orphans') is an existing inode;
 *          directories, FIFOs, sockets and devices have no extents; a
 *          symlink has exactly one written extent, of 1 block at file
 *          block 0, and 1 <= size <= 4095.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_check.h"
#include "fs/fs_i.h"
#include "fs/fs_vfs.h" /* FS_SYMLINK_MAX */

#define FT_DIR FS_FT_OF_MODE(FS_S_IFDIR)
#define FT_REG FS_FT_OF_MODE(FS_S_IFREG)
#define FT_LNK FS_FT_OF_MODE(FS_S_IFLNK)
#define MSG_BYTES 1024 /* room for two names and the words around them */
#define TAB_MIN 1024 /* first size of the inode table (slots) */
#define LOOP_SHOW 8 /* directories of a loop named in its message */

/* Flags of an inode record. */
#define R_PRESENT 0x01 /* its INODE item was seen */
#define R_ORPHAN 0x02 /* an ORPHAN item names it */
#define R_PEND_MIXED 0x04 /* entries before the inode differ in type */
#define R_WALKING 0x08 /* on the reachability walk now */
#define R_REACHED 0x10 /* reaches the root */
#define R_LOOSE 0x20 /* does not (reported, or a consequence) */

/* An inode, or a number an entry names: one slot of the hash table. */
struct rec {
	uint64_t ino; /* 0: free slot */
	uint64_t parent; /* directory: its parent field */
	uint64_t names; /* DIRENTs in existing directories naming it */
	uint64_t first_dir; /* directory of the first of them */
	uint64_t first_off; /* that DIRENT's key offset */
	uint32_t nlink; /* the inode's */
	uint8_t type; /* the inode's file type (FS_FT_OF_MODE) */
	uint8_t pend_type; /* type of the entries seen before the inode */
	uint8_t flags; /* R_* */
};

/* A DIRENT of the directory being walked, kept for its DIRINDEX. */
struct dent {
	uint64_t off; /* key offset */
	uint64_t ino; /* inode it names */
	uint64_t cookie; /* the sequence of its DIRINDEX */
	size_t name_at; /* its name in chk.names */
	uint8_t name_len; /* 1..255 */
	uint8_t type; /* file type it says */
	uint8_t matched; /* its DIRINDEX was seen */
};

/* A run of volume blocks an extent or a node uses. */
struct blk {
	uint64_t lba; /* first block */
	uint64_t ino; /* inode of the extent; 0: a B+tree node */
	uint32_t n; /* blocks */
};

/* The inode whose items are being walked. */
struct obj {
	uint64_t ino; /* objectid */
	int any; /* an item of it was seen */
	int present; /* its INODE item was */
	struct fs_inode in; /* that item, decoded */
	uint64_t nxattr, ndirent, ndirindex, nextent; /* its items */
	uint64_t ext_sum; /* blocks its extents map */
	uint64_t ext_end; /* end (file block) of the furthest extent yet */
	uint64_t ext0_off; /* first extent: file block, */
	struct fs_extent ext0; /* and value */
	uint64_t subdirs; /* directory entries of type directory */
};

/* One run of fs_check: what it reads, what it keeps, where it reports. */
struct chk {
	struct fs_store *st; /* the store checked */
	struct fs_bt *bt; /* its tree */
	const struct fs_sb *sb; /* its superblock */
	void (*problem)(void *arg, const char *msg); /* the caller's */
	void *arg; /* for problem */
	struct fs_check_report *r; /* the caller's, counted into */
	struct rec *tab; /* inode hash table, open addressing */
	size_t tab_cap, tab_n; /* slots (a power of 2), used */
	struct obj o; /* the inode being walked */
	struct dent *dents; /* its DIRENTs, in key order */
	size_t ndents, dents_cap; /* used, allocated */
	char *names; /* their names, back to back */
	size_t names_len, names_cap; /* bytes used, allocated */
	struct blk *blks; /* extents and nodes */
	size_t nblks, blks_cap; /* used, allocated */
	char msg[MSG_BYTES]; /* the message being built */
};

/* ---- messages ---- */

static void report(struct chk *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void report(struct chk *c, const char *fmt, ...)
{
	va_list ap;

	c->r->problems++;
	if (!c->problem || c->r->problems > FS_CHECK_PRINT_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	c->problem(c->arg, c->msg);
}

static const char *type_name(uint8_t ft)
{
	switch (ft) {
	case FT_DIR:
		return "directory";
	case FT_REG:
		return "regular file";
	case FT_LNK:
		return "symlink";
	case FS_FT_OF_MODE(FS_S_IFIFO):
		return "FIFO";
	case FS_FT_OF_MODE(FS_S_IFSOCK):
		return "socket";
	case FS_FT_OF_MODE(FS_S_IFCHR):
		return "character device";
	case FS_FT_OF_MODE(FS_S_IFBLK):
		return "block device";
	}
	return "file of unknown type";
}

/* A name made printable on one line (control bytes become '?'). */
static void name_show(const char *name, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];

		out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	out[len] = '\0';
}

/* The name of DIRENT (dir, off), for a message ("?" if unreadable). */
static void entry_name(struct chk *c, uint64_t dir, uint64_t off, char *out)
{
	struct fs_bt_key k = fs_key_dirent(dir, off);
	uint8_t val[FS_DIRENT_MAX_BYTES];
	struct fs_dirent de;
	int ret = fs_bt_lookup(c->bt, &k, val, sizeof(val));

	if (ret < 0 || (size_t)ret > sizeof(val) ||
	    fs_dirent_decode(&k, val, (size_t)ret, NULL, &de)) {
		strcpy(out, "?");
		return;
	}
	name_show(de.name, de.name_len, out);
}

/*
 * A failure of the store or of the walk: damage (-EUCLEAN, -EBADMSG) is a
 * problem and ends the check (-EUCLEAN); anything else (a read error, no
 * memory, a transaction open) is the check's own failure, returned as is.
 */
static int failed(struct chk *c, const char *what, int ret)
{
	if (ret != -EUCLEAN && ret != -EBADMSG)
		return ret;
	report(c, "%s failed: %s, see the messages above", what,
	       strerror(-ret));
	return -EUCLEAN;
}

/* ---- the inode table ---- */

static size_t tab_slot(const struct rec *tab, size_t cap, uint64_t ino)
{
	size_t i = (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);

	while (tab[i].ino && tab[i].ino != ino)
		i = (i + 1) & (cap - 1);
	return i;
}

/* Twice the slots (load stays at most one half). */
static int tab_grow(struct chk *c)
{
	size_t cap = c->tab_cap ? 2 * c->tab_cap : TAB_MIN;
	struct rec *tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < c->tab_cap; i++)
		if (c->tab[i].ino)
			tab[tab_slot(tab, cap, c->tab[i].ino)] = c->tab[i];
	free(c->tab);
	c->tab = tab;
	c->tab_cap = cap;
	return 0;
}

/* The record of ino, or NULL. */
static struct rec *rec_find(struct chk *c, uint64_t ino)
{
	struct rec *r;

	if (!c->tab_cap)
		return NULL;
	r = &c->tab[tab_slot(c->tab, c->tab_cap, ino)];
	return r->ino ? r : NULL;
}

/* The record of ino, made if new.  Valid until the next rec_get. */
static int rec_get(struct chk *c, uint64_t ino, struct rec **out)
{
	struct rec *r;

	if (2 * (c->tab_n + 1) > c->tab_cap) {
		int ret = tab_grow(c);

		if (ret)
			return ret;
	}
	r = &c->tab[tab_slot(c->tab, c->tab_cap, ino)];
	if (!r->ino) {
		r->ino = ino;
		c->tab_n++;
	}
	*out = r;
	return 0;
}

/* ---- growing arrays ---- */

/* arr (of *cap elements of size bytes) twice as big; NULL if no memory
 * (arr is then kept). */
static void *grown(void *arr, size_t *cap, size_t size)
{
	size_t ncap = *cap ? 2 * *cap : 64;
	void *p = realloc(arr, ncap * size);

	if (p)
		*cap = ncap;
	return p;
}

static int blk_add(struct chk *c, uint64_t lba, uint32_t n, uint64_t ino)
{
	if (c->nblks == c->blks_cap) {
		struct blk *p = grown(c->blks, &c->blks_cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		c->blks = p;
	}
	c->blks[c->nblks++] = (struct blk){ lba, ino, n };
	return 0;
}

static int dent_add(struct chk *c, uint64_t off, const struct fs_dirent *de)
{
	struct dent *d;

	if (c->ndents == c->dents_cap) {
		d = grown(c->dents, &c->dents_cap, sizeof(*d));
		if (!d)
			return -ENOMEM;
		c->dents = d;
	}
	while (c->names_len + de->name_len > c->names_cap) {
		char *p = grown(c->names, &c->names_cap, 1);

		if (!p)
			return -ENOMEM;
		c->names = p;
	}
	d = &c->dents[c->ndents++];
	d->off = off;
	d->ino = de->ino;
	d->cookie = de->cookie;
	d->name_at = c->names_len;
	d->name_len = de->name_len;
	d->type = de->type;
	d->matched = 0;
	memcpy(c->names + c->names_len, de->name, de->name_len);
	c->names_len += de->name_len;
	return 0;
}

/* The kept DIRENT at key offset off (they are in key order), or NULL. */
static struct dent *dent_find(struct chk *c, uint64_t off)
{
	size_t lo = 0, hi = c->ndents;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->dents[mid].off == off)
			return &c->dents[mid];
		if (c->dents[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void dent_name(struct chk *c, const struct dent *d, char *out)
{
	name_show(c->names + d->name_at, d->name_len, out);
}

/* ---- items ---- */

static int obj_is_dir(const struct obj *o)
{
	return o->present && FS_FT_OF_MODE(o->in.mode) == FT_DIR;
}

static void count_type(struct fs_check_report *r, uint8_t ft)
{
	r->inodes++;
	if (ft == FT_DIR)
		r->dirs++;
	else if (ft == FT_REG)
		r->files++;
	else if (ft == FT_LNK)
		r->symlinks++;
	else
		r->specials++;
}

/* Entries that named ino before its INODE item: their types (V1). */
static void pending_types(struct chk *c, const struct rec *r)
{
	if (!r->names)
		return;
	if (r->flags & R_PEND_MIXED)
		report(c,
		       "V1 inode %llu: the entries naming it give different "
		       "types, it is a %s",
		       (unsigned long long)r->ino, type_name(r->type));
	else if (r->pend_type != r->type)
		report(c,
		       "V1 inode %llu: an entry in directory %llu names it as "
		       "a %s, but it is a %s",
		       (unsigned long long)r->ino,
		       (unsigned long long)r->first_dir,
		       type_name(r->pend_type), type_name(r->type));
}

static int on_inode(struct chk *c, const struct fs_bt_key *k, const void *val,
		    size_t len)
{
	struct obj *o = &c->o;
	struct rec *r;
	int ret = fs_inode_decode(k, val, len, &o->in);

	if (ret)
		return ret;
	o->present = 1;
	count_type(c->r, FS_FT_OF_MODE(o->in.mode));
	if (k->objectid >= c->sb->next_ino)
		report(c, "F3 inode %llu: not below next_ino %llu",
		       (unsigned long long)k->objectid,
		       (unsigned long long)c->sb->next_ino);
	ret = rec_get(c, k->objectid, &r);
	if (ret)
		return ret;
	r->flags |= R_PRESENT;
	r->type = FS_FT_OF_MODE(o->in.mode);
	r->nlink = o->in.nlink;
	r->parent = o->in.parent;
	pending_types(c, r);
	return 0;
}

/* Two DIRENTs of the directory with one name (same hash, so adjacent). */
static void dup_name(struct chk *c, const struct fs_dirent *de, uint64_t off)
{
	char shown[FS_NAME_MAX + 1];

	for (size_t i = c->ndents; i-- > 0;) {
		const struct dent *d = &c->dents[i];

		if ((d->off & ~FS_HASH_COLL_MASK) != (off & ~FS_HASH_COLL_MASK))
			return;
		if (d->name_len != de->name_len ||
		    memcmp(c->names + d->name_at, de->name, de->name_len))
			continue;
		name_show(de->name, de->name_len, shown);
		report(c,
		       "V1 directory %llu: DIRENTs %#llx and %#llx "
		       "are both named \"%s\"",
		       (unsigned long long)c->o.ino, (unsigned long long)d->off,
		       (unsigned long long)off, shown);
		return;
	}
}

/* A DIRENT names de->ino: count it there, check its type if known. */
static int entry_target(struct chk *c, uint64_t off, const struct fs_dirent *de)
{
	char shown[FS_NAME_MAX + 1];
	struct rec *r;
	int ret = rec_get(c, de->ino, &r);

	if (ret)
		return ret;
	if (!r->names++) {
		r->first_dir = c->o.ino;
		r->first_off = off;
	}
	if (!(r->flags & R_PRESENT)) {
		/* the inode sorts after the directory (or is missing) */
		if (r->names == 1)
			r->pend_type = de->type;
		else if (r->pend_type != de->type)
			r->flags |= R_PEND_MIXED;
		return 0;
	}
	if (r->type != de->type) {
		name_show(de->name, de->name_len, shown);
		report(c,
		       "V1 directory %llu, entry \"%s\": says a %s, but inode "
		       "%llu is a %s",
		       (unsigned long long)c->o.ino, shown, type_name(de->type),
		       (unsigned long long)de->ino, type_name(r->type));
	}
	return 0;
}

static int on_dirent(struct chk *c, const struct fs_bt_key *k, const void *val,
		     size_t len)
{
	struct fs_dirent de;
	int ret = fs_dirent_decode(k, val, len, NULL, &de);

	if (ret)
		return ret;
	c->r->entries++;
	c->o.ndirent++;
	if (!obj_is_dir(&c->o))
		return 0; /* the whole object is reported at its end */
	dup_name(c, &de, k->offset);
	if (de.type == FT_DIR)
		c->o.subdirs++;
	ret = dent_add(c, k->offset, &de);
	if (!ret)
		ret = entry_target(c, k->offset, &de);
	return ret;
}

/* What differs between a DIRINDEX and the DIRENT its cookie names. */
static void pair_diff(struct chk *c, const struct fs_bt_key *k,
		      const struct fs_dirent *de, struct dent *d)
{
	char a[FS_NAME_MAX + 1], b[FS_NAME_MAX + 1];
	const char *what = NULL;

	if (d->cookie != k->offset)
		what = "the DIRENT's cookie names another DIRINDEX";
	else if (d->ino != de->ino)
		what = "they name different inodes";
	else if (d->type != de->type)
		what = "their types differ";
	else if (d->name_len != de->name_len ||
		 memcmp(c->names + d->name_at, de->name, de->name_len))
		what = "their names differ";
	if (d->cookie == k->offset)
		d->matched = 1;
	if (!what)
		return;
	name_show(de->name, de->name_len, a);
	dent_name(c, d, b);
	report(c,
	       "V1 directory %llu: DIRINDEX %llu (\"%s\") and DIRENT %#llx "
	       "(\"%s\") do not match: %s",
	       (unsigned long long)c->o.ino, (unsigned long long)k->offset, a,
	       (unsigned long long)d->off, b, what);
}

static int on_dirindex(struct chk *c, const struct fs_bt_key *k,
		       const void *val, size_t len)
{
	char shown[FS_NAME_MAX + 1];
	struct fs_dirent de;
	struct dent *d;
	int ret = fs_dirent_decode(k, val, len, NULL, &de);

	if (ret)
		return ret;
	c->o.ndirindex++;
	if (!obj_is_dir(&c->o))
		return 0;
	name_show(de.name, de.name_len, shown);
	if (k->offset < FS_DIRINDEX_FIRST || k->offset >= c->o.in.next_index)
		report(c,
		       "V1 directory %llu: DIRINDEX %llu (\"%s\") is not in "
		       "[%u, next_index %llu)",
		       (unsigned long long)c->o.ino,
		       (unsigned long long)k->offset, shown, FS_DIRINDEX_FIRST,
		       (unsigned long long)c->o.in.next_index);
	d = dent_find(c, de.cookie);
	if (d)
		pair_diff(c, k, &de, d);
	else
		report(c,
		       "V1 directory %llu: DIRINDEX %llu (\"%s\") has no "
		       "DIRENT (offset %#llx)",
		       (unsigned long long)c->o.ino,
		       (unsigned long long)k->offset, shown,
		       (unsigned long long)de.cookie);
	return 0;
}

static int on_extent(struct chk *c, const struct fs_bt_key *k, const void *val,
		     size_t len)
{
	struct obj *o = &c->o;
	struct fs_extent e;
	int ret = fs_extent_decode(k, val, len, &e);

	if (ret)
		return ret;
	c->r->extents++;
	c->r->data_blocks += e.nblocks;
	if (!o->nextent++) {
		o->ext0_off = k->offset;
		o->ext0 = e;
	}
	if (k->offset < o->ext_end)
		report(c,
		       "V3 inode %llu: extent at file block %llu overlaps the "
		       "one before (which ends at %llu)",
		       (unsigned long long)o->ino,
		       (unsigned long long)k->offset,
		       (unsigned long long)o->ext_end);
	if (k->offset > FS_MAX_FILE_BLOCKS ||
	    e.nblocks > FS_MAX_FILE_BLOCKS - k->offset)
		report(c,
		       "V3 inode %llu: extent at file block %llu ends past "
		       "the largest file",
		       (unsigned long long)o->ino,
		       (unsigned long long)k->offset);
	else if (k->offset + e.nblocks > o->ext_end)
		o->ext_end = k->offset + e.nblocks;
	o->ext_sum += e.nblocks;
	return blk_add(c, e.lba, e.nblocks, o->ino);
}

static int on_orphan(struct chk *c, const struct fs_bt_key *k, const void *val,
		     size_t len)
{
	struct rec *r;
	int ret = fs_orphan_decode(k, val, len);

	if (ret)
		return ret;
	r = rec_find(c, k->offset);
	if (!r || !(r->flags & R_PRESENT)) {
		report(c, "V2 orphan item: inode %llu does not exist",
		       (unsigned long long)k->offset);
		return 0;
	}
	r->flags |= R_ORPHAN;
	if (r->nlink)
		report(c, "V2 orphan item: inode %llu has nlink %u, not 0",
		       (unsigned long long)k->offset, r->nlink);
	else
		c->r->orphans++;
	return 0;
}

/* ---- the end of one inode's items ---- */

/* Items of an object without an inode (V3), or entries in a non-directory
 * (V1): reported once for the object. */
static void obj_stray(struct chk *c)
{
	const struct obj *o = &c->o;

	if (!o->present) {
		report(c,
		       "V3 inode %llu does not exist, but has items: %llu "
		       "XATTR, %llu DIRENT, %llu DIRINDEX, %llu EXTENT",
		       (unsigned long long)o->ino,
		       (unsigned long long)o->nxattr,
		       (unsigned long long)o->ndirent,
		       (unsigned long long)o->ndirindex,
		       (unsigned long long)o->nextent);
		return;
	}
	if (!obj_is_dir(o) && (o->ndirent || o->ndirindex))
		report(c,
		       "V1 inode %llu: a %s, not a directory, but holds %llu "
		       "DIRENT and %llu DIRINDEX items",
		       (unsigned long long)o->ino,
		       type_name(FS_FT_OF_MODE(o->in.mode)),
		       (unsigned long long)o->ndirent,
		       (unsigned long long)o->ndirindex);
}

/* A directory: DIRENTs left without a DIRINDEX (V1), its nlink (V2). */
static void dir_end(struct chk *c)
{
	const struct obj *o = &c->o;
	char shown[FS_NAME_MAX + 1];

	for (size_t i = 0; i < c->ndents; i++) {
		const struct dent *d = &c->dents[i];

		if (d->matched)
			continue;
		dent_name(c, d, shown);
		report(c,
		       "V1 directory %llu: DIRENT %#llx (\"%s\") has no "
		       "DIRINDEX %llu",
		       (unsigned long long)o->ino, (unsigned long long)d->off,
		       shown, (unsigned long long)d->cookie);
	}
	if (o->in.nlink == 0 && o->ndirent)
		report(c,
		       "V2 directory %llu: nlink 0 (removed) but holds %llu "
		       "entries",
		       (unsigned long long)o->ino,
		       (unsigned long long)o->ndirent);
	else if ((o->in.nlink || o->ino == FS_ROOT_INO) &&
		 o->in.nlink != 2 + o->subdirs)
		report(c,
		       "V2 directory %llu: nlink %u, but 2 + %llu "
		       "subdirectories = %llu",
		       (unsigned long long)o->ino, o->in.nlink,
		       (unsigned long long)o->subdirs,
		       (unsigned long long)(2 + o->subdirs));
}

/* A symlink's target: one written block at file block 0 (V3). */
static void symlink_end(struct chk *c)
{
	const struct obj *o = &c->o;

	if (!o->nextent)
		report(c, "V3 symlink %llu: no extent holds its target",
		       (unsigned long long)o->ino);
	else if (o->nextent != 1 || o->ext0_off != 0 || o->ext0.nblocks != 1)
		report(c,
		       "V3 symlink %llu: %llu extents, the first of %u blocks "
		       "at file block %llu; its target is one block at 0",
		       (unsigned long long)o->ino,
		       (unsigned long long)o->nextent, o->ext0.nblocks,
		       (unsigned long long)o->ext0_off);
	else if (o->ext0.flags & FS_EXTENT_F_UNWRITTEN)
		report(c, "V3 symlink %llu: its target block is unwritten",
		       (unsigned long long)o->ino);
	if (o->in.size < 1 || o->in.size > FS_SYMLINK_MAX)
		report(c, "V3 symlink %llu: size %llu, not 1..%u",
		       (unsigned long long)o->ino,
		       (unsigned long long)o->in.size, FS_SYMLINK_MAX);
}

/* Everything about the inode whose items have all gone by. */
static void obj_end(struct chk *c)
{
	const struct obj *o = &c->o;
	uint8_t ft = FS_FT_OF_MODE(o->in.mode);

	if (!o->any || o->ino == FS_ORPHAN_OBJECTID)
		return;
	obj_stray(c);
	if (!o->present)
		return;
	if (ft == FT_DIR)
		dir_end(c);
	if (o->in.blocks != o->ext_sum)
		report(c,
		       "V3 inode %llu: blocks %llu, but its extents map %llu",
		       (unsigned long long)o->ino,
		       (unsigned long long)o->in.blocks,
		       (unsigned long long)o->ext_sum);
	if (ft == FT_LNK)
		symlink_end(c);
	else if (ft != FT_REG && o->nextent)
		report(c, "V3 inode %llu: a %s with %llu extents",
		       (unsigned long long)o->ino, type_name(ft),
		       (unsigned long long)o->nextent);
}

static int walk_fn(void *arg, const struct fs_bt_key *k, const void *val,
		   size_t len)
{
	struct chk *c = arg;

	if (!c->o.any || k->objectid != c->o.ino) {
		obj_end(c);
		memset(&c->o, 0, sizeof(c->o));
		c->o.ino = k->objectid;
		c->o.any = 1;
		c->ndents = 0;
		c->names_len = 0;
	}
	switch (k->type) {
	case FS_ITEM_INODE:
		return on_inode(c, k, val, len);
	case FS_ITEM_XATTR:
		c->r->xattrs++;
		c->o.nxattr++;
		return 0;
	case FS_ITEM_DIRENT:
		return on_dirent(c, k, val, len);
	case FS_ITEM_DIRINDEX:
		return on_dirindex(c, k, val, len);
	case FS_ITEM_EXTENT:
		return on_extent(c, k, val, len);
	case FS_ITEM_ORPHAN:
		return on_orphan(c, k, val, len);
	}
	return -EUCLEAN; /* K1: fs_store_check lets no other type by */
}

/* ---- across inodes, after the walk ---- */

/* nlink and names of a non-directory (V2). */
static void file_links(struct chk *c, const struct rec *r)
{
	if (!r->names)
		report(c,
		       "V2 inode %llu: nlink %u but no entry names it (lost)",
		       (unsigned long long)r->ino, r->nlink);
	else if (r->names != r->nlink)
		report(c, "V2 inode %llu: nlink %u but %llu entries name it",
		       (unsigned long long)r->ino, r->nlink,
		       (unsigned long long)r->names);
}

/* The one entry of a directory, in its parent (V2). */
static void dir_links(struct chk *c, const struct rec *r)
{
	if (r->ino == FS_ROOT_INO) {
		if (r->names)
			report(c, "V2 root directory: %llu entries name it",
			       (unsigned long long)r->names);
		if (r->parent != FS_ROOT_INO)
			report(c, "V2 root directory: parent %llu, not 1",
			       (unsigned long long)r->parent);
	} else if (!r->names) {
		report(c, "V2 directory %llu: no entry names it (lost)",
		       (unsigned long long)r->ino);
	} else if (r->names > 1) {
		report(c,
		       "V2 directory %llu: %llu entries name it, a directory "
		       "has one",
		       (unsigned long long)r->ino,
		       (unsigned long long)r->names);
	} else if (r->first_dir != r->parent) {
		report(c,
		       "V2 directory %llu: its entry is in directory %llu but "
		       "its parent is %llu",
		       (unsigned long long)r->ino,
		       (unsigned long long)r->first_dir,
		       (unsigned long long)r->parent);
	}
}

static void rec_end(struct chk *c, const struct rec *r)
{
	char shown[FS_NAME_MAX + 1];

	if (!(r->flags & R_PRESENT)) {
		entry_name(c, r->first_dir, r->first_off, shown);
		report(c,
		       "V1 inode %llu does not exist, but entries name it "
		       "(%llu; the first: \"%s\" in directory %llu)",
		       (unsigned long long)r->ino, (unsigned long long)r->names,
		       shown, (unsigned long long)r->first_dir);
	} else if (r->nlink == 0 && r->ino != FS_ROOT_INO) {
		if (!(r->flags & R_ORPHAN))
			report(c, "V2 inode %llu: nlink 0 but no ORPHAN item",
			       (unsigned long long)r->ino);
		if (r->names)
			report(c,
			       "V2 inode %llu: nlink 0 but %llu entries "
			       "name it",
			       (unsigned long long)r->ino,
			       (unsigned long long)r->names);
	} else if (r->type == FT_DIR) {
		dir_links(c, r);
	} else {
		file_links(c, r);
	}
}

/* A live directory named by one entry in a live directory: the next
 * step towards the root, or NULL where the chain breaks (reported by the
 * other rules). */
static struct rec *up(struct chk *c, const struct rec *r)
{
	if (!(r->flags & R_PRESENT) || r->type != FT_DIR || !r->nlink ||
	    r->names != 1)
		return NULL;
	return rec_find(c, r->first_dir);
}

/* The directories of the loop through r, for its message. */
static void loop_report(struct chk *c, struct rec *r)
{
	char list[LOOP_SHOW * 24 + 8];
	size_t at = 0;
	struct rec *x = r;
	unsigned n = 0;

	do {
		if (n++ < LOOP_SHOW)
			at += (size_t)snprintf(list + at, sizeof(list) - at,
					       "%llu -> ",
					       (unsigned long long)x->ino);
		x->flags = (uint8_t)((x->flags & ~R_WALKING) | R_LOOSE);
		x = up(c, x);
	} while (x && x != r);
	snprintf(list + at, sizeof(list) - at,
		 n > LOOP_SHOW ? "... -> %llu" : "%llu",
		 (unsigned long long)r->ino);
	report(c,
	       "V2 directory %llu: not reachable from the root, its entries "
	       "loop (%s)",
	       (unsigned long long)r->ino, list);
}

/* Follow the entries of directory s up to the root; mark the way. */
static void reach(struct chk *c, struct rec *s)
{
	uint8_t result = R_LOOSE;
	struct rec *x = s;

	while (x) {
		if (x->ino == FS_ROOT_INO || (x->flags & R_REACHED)) {
			result = R_REACHED;
			break;
		}
		if (x->flags & R_LOOSE)
			break;
		if (x->flags & R_WALKING) {
			loop_report(c, x);
			break;
		}
		x->flags |= R_WALKING;
		x = up(c, x);
	}
	for (x = s; x && (x->flags & R_WALKING); x = up(c, x))
		x->flags = (uint8_t)((x->flags & ~R_WALKING) | result);
}

static void links_end(struct chk *c)
{
	struct rec *root = rec_find(c, FS_ROOT_INO);

	if (!root || !(root->flags & R_PRESENT))
		report(c, "V2 root directory (inode 1) does not exist");
	else if (root->type != FT_DIR)
		report(c, "V2 root inode 1 is a %s, not a directory",
		       type_name(root->type));
	for (size_t i = 0; i < c->tab_cap; i++)
		if (c->tab[i].ino)
			rec_end(c, &c->tab[i]);
	for (size_t i = 0; i < c->tab_cap; i++)
		if (c->tab[i].ino && up(c, &c->tab[i]))
			reach(c, &c->tab[i]);
}

/* ---- volume blocks used twice ---- */

/* List every node of the subtree at lba (level levels above the leaves);
 * bufs holds a node buffer per level. */
static int nodes_add(struct chk *c, uint64_t lba, unsigned level, uint8_t *bufs)
{
	uint8_t *node = bufs + (size_t)level * FS_BT_NODE_BYTES;
	struct fs_bt_expect ex = {
		.lba = lba,
		.owner = FS_BT_OWNER_META,
		.fsid = c->sb->fsid,
		.max_gen = c->sb->gen,
		.level = (int)level,
	};
	int ret = blk_add(c, lba, 1, 0);

	if (ret || level == 0)
		return ret;
	ret = fs_store_read(c->st, lba, node);
	if (!ret)
		ret = fs_bt_node_verify(node, &ex);
	for (unsigned i = 0; !ret && i < fs_bt_node_nitems(node); i++)
		ret = nodes_add(c, fs_bt_int_child(node, i), level - 1, bufs);
	return ret;
}

static int nodes_list(struct chk *c)
{
	unsigned height = fs_bt_height(c->bt);
	uint8_t *bufs = malloc((size_t)height * FS_BT_NODE_BYTES);
	int ret;

	if (!bufs)
		return -ENOMEM;
	ret = nodes_add(c, fs_bt_root(c->bt), height - 1, bufs);
	free(bufs);
	if (ret)
		return ret;
	for (size_t i = 0; i < c->nblks; i++) {
		if (c->blks[i].ino)
			continue;
		ret = fs_alloc_is_used(fs_store_alloc(c->st), c->blks[i].lba);
		if (ret < 0)
			return ret;
		if (!ret)
			report(c, "F1 B+tree node at LBA %llu is not allocated",
			       (unsigned long long)c->blks[i].lba);
	}
	return 0;
}

static int blk_cmp(const void *a, const void *b)
{
	const struct blk *x = a, *y = b;

	if (x->lba != y->lba)
		return x->lba < y->lba ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static void blk_owner(const struct blk *b, char *out, size_t cap)
{
	if (b->ino)
		snprintf(out, cap, "an extent of inode %llu",
			 (unsigned long long)b->ino);
	else
		snprintf(out, cap, "a B+tree node");
}

/* Sorted by LBA, a run starting before the furthest end so far overlaps
 * the run that reached that end (V3). */
static void blks_overlap(struct chk *c)
{
	char a[48], b[48];
	const struct blk *far = NULL;

	qsort(c->blks, c->nblks, sizeof(*c->blks), blk_cmp);
	for (size_t i = 0; i < c->nblks; i++) {
		const struct blk *x = &c->blks[i];

		if (far && x->lba < far->lba + far->n) {
			blk_owner(far, a, sizeof(a));
			blk_owner(x, b, sizeof(b));
			report(c, "V3 volume block %llu: used by %s and by %s",
			       (unsigned long long)x->lba, a, b);
		}
		if (!far || x->lba + x->n > far->lba + far->n)
			far = x;
	}
}

/* ---- the check ---- */

static int namespace_check(struct chk *c)
{
	struct fs_bt_key lo = { 0, 0, 0 };
	struct fs_bt_key hi = { UINT64_MAX, UINT8_MAX, UINT64_MAX };
	int ret = fs_bt_iterate(c->bt, &lo, &hi, walk_fn, c);

	if (ret)
		return failed(c, "tree walk", ret);
	obj_end(c);
	links_end(c);
	ret = nodes_list(c);
	if (ret)
		return failed(c, "B+tree node walk", ret);
	blks_overlap(c);
	return 0;
}

int fs_check(struct fs_store *st, void (*problem)(void *arg, const char *msg),
	     void *arg, struct fs_check_report *r)
{
	struct chk *c = calloc(1, sizeof(*c));
	int ret;

	memset(r, 0, sizeof(*r));
	if (!c)
		return -ENOMEM;
	c->st = st;
	c->bt = fs_store_tree(st);
	c->sb = fs_store_sb(st);
	c->problem = problem;
	c->arg = arg;
	c->r = r;
	ret = fs_store_check(st, NULL);
	if (ret)
		ret = failed(c, "store check", ret);
	else
		ret = namespace_check(c);
	if (problem && r->problems > FS_CHECK_PRINT_MAX) {
		snprintf(
			c->msg, sizeof(c->msg),
			"... and %llu more problems not shown",
			(unsigned long long)(r->problems - FS_CHECK_PRINT_MAX));
		problem(arg, c->msg);
	}
	if (!ret && r->problems)
		ret = -EUCLEAN;
	free(c->tab);
	free(c->dents);
	free(c->names);
	free(c->blks);
	free(c);
	return ret;
}
