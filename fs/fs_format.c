/*
 * fs_format.c - encode, decode and verify metadata B+tree nodes; CRC32C.
 *
 * Layer: fs/, no I/O, no tree logic.  The byte tables are in fs_format.h;
 * this file is the only code that touches node bytes.  Disk bytes are
 * hostile: fs_bt_node_verify() returns -EUCLEAN naming the rule, never
 * asserts.  The CRC32C here is a plain table-driven one (ISA-L belongs to
 * volume/ only; check-layering forbids it in fs/).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_format.h"

#define OFF_VERSION 8
#define OFF_MIN_VERSION 10
#define OFF_NODE_BYTES 12
#define OFF_LEVEL 14
#define OFF_INCOMPAT 15
#define OFF_NITEMS 16
#define OFF_COMPAT 18
#define OFF_RESERVED 20
#define OFF_LBA 24
#define OFF_OWNER 32
#define OFF_GEN 40
#define OFF_FSID 48

_Static_assert(OFF_FSID + FS_BT_FSID_BYTES == FS_BT_HDR_BYTES, "header");
_Static_assert(OFF_RESERVED + 4 == OFF_LBA, "reserved header bytes");

/*
 * Reflected CRC32C table: crc_table[i] = CRC of byte i, polynomial
 * 0x82F63B78 (generated; the test checks the result against a bit-by-bit
 * reference).  crc_slice[k] extends it to slicing-by-8 (eight bytes per
 * step, ~4x faster than a byte at a time), built once from it.
 */
static const uint32_t crc_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
	0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
	0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
	0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
	0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
	0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
	0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
	0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
	0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
	0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
	0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
	0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
	0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
	0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
	0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
	0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
	0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
	0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
	0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

/* ---- little-endian helpers ---- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* ---- errors, CRC ---- */

int fs_corrupt(const char *file, int line, uint64_t lba, const char *rule)
{
	vol_log(VOL_LOG_ERR, "b-tree node at LBA %llu is damaged: %s (%s:%d)",
		(unsigned long long)lba, rule, file, line);
	return -EUCLEAN;
}

void fs_panic(const char *file, int line, const char *what)
{
	vol_log(VOL_LOG_ERR, "%s:%d: internal error: %s is false", file, line,
		what);
	abort();
}

static uint32_t crc_slice[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_slice_init(void)
{
	memcpy(crc_slice[0], crc_table, sizeof(crc_table));
	for (int k = 1; k < 8; k++)
		for (int i = 0; i < 256; i++) {
			uint32_t c = crc_slice[k - 1][i];

			crc_slice[k][i] = (c >> 8) ^ crc_table[c & 0xff];
		}
}

/* Eight bytes at p folded into crc. */
static uint32_t crc_step8(uint32_t crc, const uint8_t *p)
{
	uint32_t lo = crc ^ get32(p), hi = get32(p + 4);

	return crc_slice[7][lo & 0xff] ^ crc_slice[6][(lo >> 8) & 0xff] ^
	       crc_slice[5][(lo >> 16) & 0xff] ^ crc_slice[4][lo >> 24] ^
	       crc_slice[3][hi & 0xff] ^ crc_slice[2][(hi >> 8) & 0xff] ^
	       crc_slice[1][(hi >> 16) & 0xff] ^ crc_slice[0][hi >> 24];
}

uint32_t fs_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_slice_init);
	for (; len >= 8; len -= 8, p += 8)
		crc = crc_step8(crc, p);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

static uint32_t node_crc(const uint8_t *node)
{
	return fs_crc32c(~0u, node, FS_BT_CRC_OFF) ^ ~0u;
}

/* ---- keys and header ---- */

void fs_bt_key_encode(uint8_t *p, const struct fs_bt_key *k)
{
	put64(p, k->objectid);
	p[8] = k->type;
	put64(p + 9, k->offset);
}

void fs_bt_key_decode(const uint8_t *p, struct fs_bt_key *k)
{
	k->objectid = get64(p);
	k->type = p[8];
	k->offset = get64(p + 9);
}

void fs_bt_hdr_encode(uint8_t *node, const struct fs_bt_hdr *h)
{
	memcpy(node, FS_BT_NODE_MAGIC, 8);
	put16(node + OFF_VERSION, FS_BT_FORMAT_VERSION);
	put16(node + OFF_MIN_VERSION, FS_BT_FORMAT_MIN_VERSION);
	put16(node + OFF_NODE_BYTES, FS_BT_NODE_BYTES);
	node[OFF_LEVEL] = h->level;
	node[OFF_INCOMPAT] = 0;
	put16(node + OFF_NITEMS, h->nitems);
	put16(node + OFF_COMPAT, h->compat);
	memset(node + OFF_RESERVED, 0, 4);
	put64(node + OFF_LBA, h->lba);
	put64(node + OFF_OWNER, h->owner);
	put64(node + OFF_GEN, h->gen);
	memcpy(node + OFF_FSID, h->fsid, FS_BT_FSID_BYTES);
}

void fs_bt_hdr_decode(const uint8_t *node, struct fs_bt_hdr *h)
{
	h->version = get16(node + OFF_VERSION);
	h->min_version = get16(node + OFF_MIN_VERSION);
	h->level = node[OFF_LEVEL];
	h->incompat = node[OFF_INCOMPAT];
	h->nitems = get16(node + OFF_NITEMS);
	h->compat = get16(node + OFF_COMPAT);
	h->lba = get64(node + OFF_LBA);
	h->owner = get64(node + OFF_OWNER);
	h->gen = get64(node + OFF_GEN);
	memcpy(h->fsid, node + OFF_FSID, FS_BT_FSID_BYTES);
}

void fs_bt_node_seal(uint8_t *node, uint64_t gen)
{
	put64(node + OFF_GEN, gen);
	put32(node + FS_BT_CRC_OFF, node_crc(node));
}

/* ---- verification ---- */

/* Rules N1..N8: the header on its own and against ex. */
static int verify_hdr(const uint8_t *node, const struct fs_bt_hdr *h,
		      const struct fs_bt_expect *ex)
{
	uint64_t lba = ex->lba;

	if (memcmp(node, FS_BT_NODE_MAGIC, 8))
		return FS_CORRUPT(lba, "N1 magic is not SIXFBTND");
	if (!ex->no_crc && get32(node + FS_BT_CRC_OFF) != node_crc(node))
		return FS_CORRUPT(lba, "N2 crc mismatch");
	if (h->min_version > FS_BT_FORMAT_VERSION ||
	    h->min_version > h->version)
		return FS_CORRUPT(lba, "N3 node needs a newer sixfold");
	if (get16(node + OFF_NODE_BYTES) != FS_BT_NODE_BYTES || h->incompat ||
	    !all_zero(node + OFF_RESERVED, 4))
		return FS_CORRUPT(lba, "N4 node size, incompat or reserved");
	if (h->lba != lba)
		return FS_CORRUPT(lba, "N5 node stored at another LBA");
	if (h->owner != ex->owner ||
	    memcmp(h->fsid, ex->fsid, FS_BT_FSID_BYTES))
		return FS_CORRUPT(lba, "N6 node of another tree or filesystem");
	if (h->gen > ex->max_gen)
		return FS_CORRUPT(lba, "N7 node newer than the last commit");
	if (h->level >= FS_BT_MAX_LEVELS ||
	    (ex->level >= 0 && h->level != ex->level))
		return FS_CORRUPT(lba, "N8 unexpected level");
	return 0;
}

/* Rules N9..N11, N13 for a leaf. */
static int verify_leaf(const uint8_t *node, unsigned n, uint64_t lba)
{
	size_t hdr_end = FS_BT_HDR_BYTES + (size_t)n * FS_BT_ITEM_BYTES;
	size_t end = FS_BT_CRC_OFF;
	struct fs_bt_key prev = { 0 }, k;

	if (hdr_end > FS_BT_CRC_OFF)
		return FS_CORRUPT(lba, "N9 too many leaf items");
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *it =
			node + FS_BT_HDR_BYTES + i * FS_BT_ITEM_BYTES;
		size_t off = get16(it + FS_BT_KEY_BYTES);
		size_t len = get16(it + FS_BT_KEY_BYTES + 2);

		if (len > FS_BT_MAX_VALUE_BYTES || off + len != end ||
		    off < hdr_end)
			return FS_CORRUPT(lba, "N10 leaf values not packed");
		end = off;
		fs_bt_key_decode(it, &k);
		if (i && fs_bt_key_cmp(&prev, &k) >= 0)
			return FS_CORRUPT(lba, "N11 keys not increasing");
		prev = k;
	}
	if (!all_zero(node + hdr_end, end - hdr_end))
		return FS_CORRUPT(lba, "N13 free space not zero");
	return 0;
}

/* Rules N9, N11..N13 for an internal node. */
static int verify_int(const uint8_t *node, unsigned n, uint64_t lba)
{
	size_t end = FS_BT_HDR_BYTES + (size_t)n * FS_BT_PTR_BYTES;
	struct fs_bt_key prev = { 0 }, k; /* key 0 must equal zero */

	if (n < 1 || n > FS_BT_INT_CAP)
		return FS_CORRUPT(lba, "N9 child count out of range");
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *e = node + FS_BT_HDR_BYTES + i * FS_BT_PTR_BYTES;
		uint64_t child = get64(e + FS_BT_KEY_BYTES);

		fs_bt_key_decode(e, &k);
		if (i ? fs_bt_key_cmp(&prev, &k) >= 0 :
			fs_bt_key_cmp(&prev, &k) != 0)
			return FS_CORRUPT(lba, "N11 separators not increasing "
					       "from zero");
		if (child >= FS_BT_MAX_LBA || child == lba)
			return FS_CORRUPT(lba, "N12 child LBA out of range");
		prev = k;
	}
	if (!all_zero(node + end, FS_BT_CRC_OFF - end))
		return FS_CORRUPT(lba, "N13 free space not zero");
	return 0;
}

int fs_bt_node_verify(const uint8_t *node, const struct fs_bt_expect *ex)
{
	struct fs_bt_hdr h;
	int ret;

	fs_bt_hdr_decode(node, &h);
	ret = verify_hdr(node, &h, ex);
	if (ret)
		return ret;
	if (h.level == 0)
		return verify_leaf(node, h.nitems, ex->lba);
	return verify_int(node, h.nitems, ex->lba);
}

/* ---- accessors of verified nodes ---- */

unsigned fs_bt_node_level(const uint8_t *node)
{
	return node[OFF_LEVEL];
}

unsigned fs_bt_node_nitems(const uint8_t *node)
{
	return get16(node + OFF_NITEMS);
}

static const uint8_t *leaf_item(const uint8_t *node, unsigned i)
{
	return node + FS_BT_HDR_BYTES + (size_t)i * FS_BT_ITEM_BYTES;
}

void fs_bt_leaf_key(const uint8_t *node, unsigned i, struct fs_bt_key *k)
{
	fs_bt_key_decode(leaf_item(node, i), k);
}

const uint8_t *fs_bt_leaf_val(const uint8_t *node, unsigned i, size_t *len)
{
	const uint8_t *it = leaf_item(node, i);

	*len = get16(it + FS_BT_KEY_BYTES + 2);
	return node + get16(it + FS_BT_KEY_BYTES);
}

size_t fs_bt_leaf_used(const uint8_t *node)
{
	unsigned n = fs_bt_node_nitems(node);
	size_t low = FS_BT_CRC_OFF;

	if (n)
		low = get16(leaf_item(node, n - 1) + FS_BT_KEY_BYTES);
	return (size_t)n * FS_BT_ITEM_BYTES + FS_BT_CRC_OFF - low;
}

static const uint8_t *int_entry(const uint8_t *node, unsigned i)
{
	return node + FS_BT_HDR_BYTES + (size_t)i * FS_BT_PTR_BYTES;
}

void fs_bt_int_key(const uint8_t *node, unsigned i, struct fs_bt_key *k)
{
	fs_bt_key_decode(int_entry(node, i), k);
}

uint64_t fs_bt_int_child(const uint8_t *node, unsigned i)
{
	return get64(int_entry(node, i) + FS_BT_KEY_BYTES);
}

/* ---- body encoders ---- */

void fs_bt_leaf_build(uint8_t *node, const struct fs_bt_item *items, unsigned n)
{
	size_t hdr_end = FS_BT_HDR_BYTES + (size_t)n * FS_BT_ITEM_BYTES;
	size_t end = FS_BT_CRC_OFF;

	FS_VERIFY(hdr_end <= FS_BT_CRC_OFF);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *it = node + FS_BT_HDR_BYTES + i * FS_BT_ITEM_BYTES;

		FS_VERIFY(items[i].len <= FS_BT_MAX_VALUE_BYTES &&
			  end >= hdr_end + items[i].len);
		end -= items[i].len;
		if (items[i].len)
			memcpy(node + end, items[i].val, items[i].len);
		fs_bt_key_encode(it, &items[i].key);
		put16(it + FS_BT_KEY_BYTES, (uint16_t)end);
		put16(it + FS_BT_KEY_BYTES + 2, items[i].len);
	}
	memset(node + hdr_end, 0, end - hdr_end);
	put16(node + OFF_NITEMS, (uint16_t)n);
}

void fs_bt_int_build(uint8_t *node, const struct fs_bt_ptr *ents, unsigned n)
{
	size_t end = FS_BT_HDR_BYTES + (size_t)n * FS_BT_PTR_BYTES;

	FS_VERIFY(n >= 1 && n <= FS_BT_INT_CAP);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = node + FS_BT_HDR_BYTES + i * FS_BT_PTR_BYTES;

		fs_bt_key_encode(e, &ents[i].key);
		put64(e + FS_BT_KEY_BYTES, ents[i].child);
	}
	memset(node + end, 0, FS_BT_CRC_OFF - end);
	put16(node + OFF_NITEMS, (uint16_t)n);
}
