/*
 * voltool.c - test driver over the volume's public API (volume/volume.h)
 * for the integration and fault tests (test/integration, test/fault).
 *
 *   voltool SUBCOMMAND [OPTIONS] VOLUME
 *
 * VOLUME is one zone directory or the six zone specs.  Common options:
 * --key-file F or --passphrase P (one is needed to open), --readonly,
 * --timeout-ms N (write quorum timeout, default -1: wait forever).
 * Block contents are a pure function of (seed, lba) for write/check and
 * of (seed, thread, txn, lba) for the torture, so any process can tell
 * what a block must hold.
 *
 *   write --lba L --count N [--seed S] [--marker M] [--txn-blocks K]
 *         [--discard-first] [--no-close]
 *	N blocks from L in transactions of K (default 8); --marker puts M
 *	into every block, 8 times; --discard-first puts a discard of the
 *	txn's range before its writes; --no-close _exit(0)s after the last
 *	commit (no close: nothing flushed or materialised on purpose).
 *	"wrote N blocks in T txns", or "error ERRNAME lba L txn T", exit 1.
 *   check --lba L --count N [--seed S] [--marker M] [--zero]
 *   check --range L:N:S|zero [--range ...]
 *	read and compare: "ok N at L" per range, or "mismatch ..." or
 *	"error ERRNAME lba L" (exit 1); then "bad_copies N" (vol_info).
 *   discard --lba L --count N	one transaction discarding the run.
 *   info			vol_info as one line of JSON.
 *   fault-write --fail-zones 0,1,2 --after K [--fault-err EIO] + write opts
 *	like write; before transaction K, vol_debug_zone_fault() on each
 *	zone listed; one line per commit: "commit I ok|ERRNAME MS"; after a
 *	failed one, "later-commit ..." for one more; then "info {JSON}".
 *   torture-run --seed S --threads T --lbas N [--base B] [--txns M]
 *               [--start t:k,...] [--discard-every D]
 *	"opened pid P", then thread t commits its txns k, k+1, ... over
 *	LBAs [B + t*N, B + (t+1)*N): txn i is a function of (S, t, i): 1-8
 *	distinct blocks, or (1 in D, default 8) a discard of 1-16 blocks
 *	plus up to 2 writes inside it; "ack t i" after each commit returns.
 *	Runs until killed, or M txns per thread then closes.
 *   torture-verify --seed S --threads T --lbas N [--base B]
 *                  --acked t:k,... [--lost t:i,...] [--discard-every D]
 *	opens (recovery), checks that each thread's range equals the model
 *	after its txns 0..k-1 or 0..k (skipping the --lost ones, which a
 *	crash took): "thread t count k|k+1" per thread and exit 0, or the
 *	first difference and exit 1; then "bad_copies N".
 *   dump-plain --lba L --count N [--seed S] [--marker M]
 *	the plaintext write would store, raw on stdout (no volume).
 *
 * Exit: 0 ok, 1 failure (errno name printed), 2 wrong key, 64 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keys/keys.h"
#include "volume/volume.h"

#define EXIT_KEY 2
#define EXIT_USAGE 64
#define MAX_THREADS 64
#define TORTURE_MAX_WRITES 8
#define TORTURE_MAX_DISCARD 16
#define TORTURE_BIG_DISCARD 160
#define TORTURE_BIG_MIN 64
#define TORTURE_BIG_MAX 320 /* VOL_TXN_MAX_RECS */

/* A run of blocks check compares: seed's blocks, or zeros. */
struct range {
	uint64_t lba;
	uint64_t count;
	uint64_t seed;
	int zero;
};

#define MAX_RANGES 64

/* Torture txn i of thread t was lost in a crash: not in the model. */
struct lost {
	int t;
	uint64_t i;
};

struct opts {
	const char *cmd;
	const char *key_file;
	const char *passphrase;
	int readonly;
	int64_t timeout_ms;
	uint64_t lba;
	uint64_t count;
	uint64_t seed;
	const char *marker;
	uint32_t txn_blocks;
	int discard_first;
	int no_close;
	int zero;
	uint32_t fail_mask;
	uint64_t after;
	int fault_err;
	int threads;
	uint64_t lbas;
	uint64_t base;
	uint64_t txns; /* 0: until killed */
	uint64_t discard_every; /* 1 torture txn in N discards; 0: none */
	uint64_t big_every; /* 1 in N writes 64-320 blocks; 0: none */
	uint64_t fault_after_ms; /* torture-run: inject --fail-zones then */
	uint64_t start[MAX_THREADS];
	uint64_t acked[MAX_THREADS];
	int have_acked;
	struct lost *lost; /* txns that did not survive a crash */
	size_t nlost;
	struct range ranges[MAX_RANGES]; /* check --range */
	int nranges;
	const char *const *paths;
	int npaths;
};

static const char *err_name(int err)
{
	const char *s = strerrorname_np(err < 0 ? -err : err);

	return s ? s : "E?";
}

/* ---- deterministic content ---- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t s = a ^ (b * 0xD6E8FEB86659FD93ull);

	return splitmix(&s);
}

static void fill(uint8_t *buf, size_t from, uint64_t state)
{
	for (size_t off = from; off + 8 <= VOL_BLOCK_BYTES; off += 8) {
		uint64_t r = splitmix(&state);

		memcpy(buf + off, &r, 8);
	}
}

/* The block `write` stores at lba: header, PRNG fill, marker copies. */
static void simple_block(const struct opts *o, uint64_t lba, uint8_t *buf)
{
	size_t mlen = o->marker ? strlen(o->marker) : 0;

	memcpy(buf, "VTSIMPLE", 8);
	memcpy(buf + 8, &o->seed, 8);
	memcpy(buf + 16, &lba, 8);
	memset(buf + 24, 0, 8);
	fill(buf, 32, mix(o->seed, lba));
	if (!mlen || mlen > 256)
		return;
	for (size_t off = 64; off + mlen <= VOL_BLOCK_BYTES; off += 512)
		memcpy(buf + off, o->marker, mlen);
}

/* The block torture txn i of thread t writes at lba. */
static void torture_block(uint64_t seed, int t, uint64_t i, uint64_t lba,
			  uint8_t *buf)
{
	uint64_t tt = (uint64_t)t;

	memcpy(buf, "VTTORTUR", 8);
	memcpy(buf + 8, &seed, 8);
	memcpy(buf + 16, &tt, 8);
	memcpy(buf + 24, &i, 8);
	memcpy(buf + 32, &lba, 8);
	fill(buf, 40, mix(mix(mix(seed, tt), i), lba));
}

/* One torture transaction: an optional discard, then distinct writes. */
struct ttxn {
	int discard;
	uint64_t d_off, d_len; /* offsets within the thread's range */
	int nw;
	uint64_t w_off[TORTURE_MAX_WRITES];
	uint64_t run_off, run_len; /* a big txn: a run of writes */
};

static int picked(const struct ttxn *x, uint64_t off)
{
	for (int k = 0; k < x->nw; k++)
		if (x->w_off[k] == off)
			return 1;
	return 0;
}

/*
 * Txn i of thread t: 1 in discard_every a discard (1-16 blocks, 1 in 4
 * of them 1-160) plus up to 2 writes inside it; else 1 in big_every a
 * run of 64-320 writes (a multi-header batch); else 1-8 distinct writes.
 */
static void torture_txn(const struct opts *o, int t, uint64_t i, struct ttxn *x)
{
	uint64_t seed = o->seed, n = o->lbas;
	uint64_t s = mix(mix(seed ^ 0x5EED, (uint64_t)t), i);
	uint64_t lo = 0, span = n;
	int want;

	memset(x, 0, sizeof(*x));
	if (o->discard_every && splitmix(&s) % o->discard_every == 0) {
		x->discard = 1;
		x->d_off = splitmix(&s) % n;
		x->d_len = 1 + splitmix(&s) % (splitmix(&s) % 4 ?
						       TORTURE_MAX_DISCARD :
						       TORTURE_BIG_DISCARD);
		if (x->d_len > n - x->d_off)
			x->d_len = n - x->d_off;
		want = (int)(splitmix(&s) % 3);
		lo = x->d_off;
		span = x->d_len;
	} else if (o->big_every && splitmix(&s) % o->big_every == 0) {
		x->run_off = splitmix(&s) % n;
		x->run_len =
			TORTURE_BIG_MIN +
			splitmix(&s) % (TORTURE_BIG_MAX - TORTURE_BIG_MIN + 1);
		if (x->run_len > n - x->run_off)
			x->run_len = n - x->run_off;
		return;
	} else {
		want = 1 + (int)(splitmix(&s) % TORTURE_MAX_WRITES);
	}
	if ((uint64_t)want > span)
		want = (int)span;
	while (x->nw < want) {
		uint64_t off = lo + splitmix(&s) % span;

		if (!picked(x, off))
			x->w_off[x->nw++] = off;
	}
}

static int is_lost(const struct opts *o, int t, uint64_t i)
{
	for (size_t k = 0; k < o->nlost; k++)
		if (o->lost[k].t == t && o->lost[k].i == i)
			return 1;
	return 0;
}

/* Model: per block of the range, the txn that wrote it, or -1 (zero). */
static void model_apply(const struct opts *o, int64_t *ver, int t, uint64_t i)
{
	struct ttxn x;

	if (is_lost(o, t, i))
		return;
	torture_txn(o, t, i, &x);
	if (x.discard)
		for (uint64_t k = 0; k < x.d_len; k++)
			ver[x.d_off + k] = -1;
	for (int k = 0; k < x.nw; k++)
		ver[x.w_off[k]] = (int64_t)i;
	for (uint64_t k = 0; k < x.run_len; k++)
		ver[x.run_off + k] = (int64_t)i;
}

/* ---- option parsing ---- */

static int usage(void)
{
	fprintf(stderr,
		"usage: voltool write|check|discard|info|fault-write|"
		"torture-run|torture-verify|dump-plain [OPTIONS] VOLUME\n"
		"  see the comment at the top of test/tools/voltool.c\n");
	return EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || end == s || *end ? -EINVAL : 0;
}

/* "0,1,2" into a bit mask of zones. */
static int parse_zones(const char *s, uint32_t *mask)
{
	char buf[64], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	*mask = 0;
	for (char *t = strtok_r(buf, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		uint64_t z;

		if (parse_u64(t, &z) || z >= VOL_ZONES)
			return -EINVAL;
		*mask |= 1u << z;
	}
	return 0;
}

/* "t:k,t:k" into per-thread values. */
static int parse_tk(const char *s, uint64_t *vals)
{
	char buf[1024], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok_r(buf, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(t, ':');
		uint64_t th, k;

		if (!colon)
			return -EINVAL;
		*colon = 0;
		if (parse_u64(t, &th) || th >= MAX_THREADS ||
		    parse_u64(colon + 1, &k))
			return -EINVAL;
		vals[th] = k;
	}
	return 0;
}

/* "L:N:SEED" or "L:N:zero" into o->ranges (appends). */
static int parse_range(struct opts *o, const char *s)
{
	struct range *r = &o->ranges[o->nranges];
	char buf[128], *save = NULL, *f[3];

	snprintf(buf, sizeof(buf), "%s", s);
	f[0] = strtok_r(buf, ":", &save);
	f[1] = strtok_r(NULL, ":", &save);
	f[2] = strtok_r(NULL, ":", &save);
	if (o->nranges == MAX_RANGES || !f[2] || parse_u64(f[0], &r->lba) ||
	    parse_u64(f[1], &r->count))
		return -EINVAL;
	r->zero = !strcmp(f[2], "zero");
	if (!r->zero && parse_u64(f[2], &r->seed))
		return -EINVAL;
	o->nranges++;
	return 0;
}

/* "t:i,t:i,..." into o->lost (appends). */
static int parse_lost(struct opts *o, const char *s)
{
	const char *p = s;

	while (*p) {
		char *end;
		unsigned long long th, i;
		struct lost *n;

		errno = 0;
		th = strtoull(p, &end, 10);
		if (errno || end == p || *end != ':' || th >= MAX_THREADS)
			return -EINVAL;
		p = end + 1;
		i = strtoull(p, &end, 10);
		if (errno || end == p || (*end && *end != ','))
			return -EINVAL;
		p = *end ? end + 1 : end;
		n = realloc(o->lost, (o->nlost + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		o->lost = n;
		o->lost[o->nlost++] = (struct lost){ (int)th, i };
	}
	return 0;
}

static int parse_errno(const char *s, int *err)
{
	static const int known[] = { EIO, ENOSPC, ETIMEDOUT, ENODEV, EROFS };

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(s, err_name(known[i]))) {
			*err = -known[i];
			return 0;
		}
	return -EINVAL;
}

enum {
	OPT_KEY = 256,
	OPT_PASS,
	OPT_RO,
	OPT_TIMEOUT,
	OPT_LBA,
	OPT_COUNT,
	OPT_SEED,
	OPT_MARKER,
	OPT_TXN,
	OPT_DISCARD_FIRST,
	OPT_NO_CLOSE,
	OPT_ZERO,
	OPT_FAIL,
	OPT_AFTER,
	OPT_FAULT_ERR,
	OPT_THREADS,
	OPT_LBAS,
	OPT_BASE,
	OPT_TXNS,
	OPT_START,
	OPT_ACKED,
	OPT_LOST,
	OPT_DISCARD_EVERY,
	OPT_RANGE,
	OPT_BIG_EVERY,
	OPT_FAULT_AFTER_MS,
};

static const struct option long_opts[] = {
	{ "key-file", required_argument, NULL, OPT_KEY },
	{ "passphrase", required_argument, NULL, OPT_PASS },
	{ "readonly", no_argument, NULL, OPT_RO },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT },
	{ "lba", required_argument, NULL, OPT_LBA },
	{ "count", required_argument, NULL, OPT_COUNT },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "marker", required_argument, NULL, OPT_MARKER },
	{ "txn-blocks", required_argument, NULL, OPT_TXN },
	{ "discard-first", no_argument, NULL, OPT_DISCARD_FIRST },
	{ "no-close", no_argument, NULL, OPT_NO_CLOSE },
	{ "zero", no_argument, NULL, OPT_ZERO },
	{ "fail-zones", required_argument, NULL, OPT_FAIL },
	{ "after", required_argument, NULL, OPT_AFTER },
	{ "fault-err", required_argument, NULL, OPT_FAULT_ERR },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "lbas", required_argument, NULL, OPT_LBAS },
	{ "base", required_argument, NULL, OPT_BASE },
	{ "txns", required_argument, NULL, OPT_TXNS },
	{ "start", required_argument, NULL, OPT_START },
	{ "acked", required_argument, NULL, OPT_ACKED },
	{ "lost", required_argument, NULL, OPT_LOST },
	{ "discard-every", required_argument, NULL, OPT_DISCARD_EVERY },
	{ "range", required_argument, NULL, OPT_RANGE },
	{ "big-every", required_argument, NULL, OPT_BIG_EVERY },
	{ "fault-after-ms", required_argument, NULL, OPT_FAULT_AFTER_MS },
	{ NULL, 0, NULL, 0 },
};

static int set_u64_opt(struct opts *o, int c, const char *arg)
{
	uint64_t v;

	if (parse_u64(arg, &v))
		return -EINVAL;
	switch (c) {
	case OPT_TIMEOUT:
		o->timeout_ms = (int64_t)v;
		break;
	case OPT_LBA:
		o->lba = v;
		break;
	case OPT_COUNT:
		o->count = v;
		break;
	case OPT_SEED:
		o->seed = v;
		break;
	case OPT_TXN:
		if (v == 0 || v > VOL_TXN_MAX_RECS / 2)
			return -EINVAL;
		o->txn_blocks = (uint32_t)v;
		break;
	case OPT_AFTER:
		o->after = v;
		break;
	case OPT_THREADS:
		if (v == 0 || v > MAX_THREADS)
			return -EINVAL;
		o->threads = (int)v;
		break;
	case OPT_LBAS:
		if (v == 0)
			return -EINVAL;
		o->lbas = v;
		break;
	case OPT_BASE:
		o->base = v;
		break;
	case OPT_DISCARD_EVERY:
		o->discard_every = v;
		break;
	case OPT_BIG_EVERY:
		o->big_every = v;
		break;
	case OPT_FAULT_AFTER_MS:
		o->fault_after_ms = v;
		break;
	default:
		o->txns = v;
		break;
	}
	return 0;
}

static int parse_opt(struct opts *o, int c, const char *arg)
{
	switch (c) {
	case OPT_KEY:
		o->key_file = arg;
		return 0;
	case OPT_PASS:
		o->passphrase = arg;
		return 0;
	case OPT_RO:
		o->readonly = 1;
		return 0;
	case OPT_MARKER:
		o->marker = arg;
		return 0;
	case OPT_DISCARD_FIRST:
		o->discard_first = 1;
		return 0;
	case OPT_NO_CLOSE:
		o->no_close = 1;
		return 0;
	case OPT_ZERO:
		o->zero = 1;
		return 0;
	case OPT_FAIL:
		return parse_zones(arg, &o->fail_mask);
	case OPT_FAULT_ERR:
		return parse_errno(arg, &o->fault_err);
	case OPT_START:
		return parse_tk(arg, o->start);
	case OPT_ACKED:
		o->have_acked = 1;
		return parse_tk(arg, o->acked);
	case OPT_LOST:
		return parse_lost(o, arg);
	case OPT_RANGE:
		return parse_range(o, arg);
	case OPT_TIMEOUT:
		if (arg[0] == '-') {
			o->timeout_ms = -1;
			return 0;
		}
		return set_u64_opt(o, c, arg);
	default:
		return set_u64_opt(o, c, arg);
	}
}

static int parse(int argc, char **argv, struct opts *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = -1;
	o->txn_blocks = 8;
	o->fault_err = -EIO;
	o->threads = 4;
	o->lbas = 256;
	o->discard_every = 8;
	o->big_every = 16;
	if (argc < 2)
		return -EINVAL;
	o->cmd = argv[1];
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		if (c == '?' || parse_opt(o, c, optarg)) {
			if (c != '?')
				fprintf(stderr, "voltool: bad value '%s'\n",
					optarg);
			return -EINVAL;
		}
	}
	o->paths = (const char *const *)argv + optind;
	o->npaths = argc - optind;
	return 0;
}

/* ---- opening ---- */

static int open_volume(const struct opts *o, struct vol **v)
{
	struct key_source src = { 0 };
	struct vol_open_opts vo = { 0 };
	int ret;

	if (o->npaths != 1 && o->npaths != VOL_ZONES) {
		fprintf(stderr, "voltool: give one zone directory or six\n");
		return EXIT_USAGE;
	}
	if (key_init())
		return 1;
	if (o->passphrase) {
		src.kind = KEY_KIND_PASSPHRASE;
		src.secret = (const uint8_t *)o->passphrase;
		src.secret_len = strlen(o->passphrase);
	} else if (!o->key_file) {
		fprintf(stderr, "voltool: --key-file or --passphrase needed\n");
		return EXIT_USAGE;
	} else if ((ret = key_source_read_file(o->key_file, &src))) {
		fprintf(stderr, "voltool: cannot read key file %s: %s\n",
			o->key_file, strerror(-ret));
		return 1;
	}
	vo.paths = o->paths;
	vo.npaths = o->npaths;
	vo.key = &src;
	vo.readonly = o->readonly;
	vo.write_timeout_ms = o->timeout_ms;
	ret = vol_open(&vo, v);
	if (!o->passphrase)
		key_source_release(&src);
	if (ret == -EKEYREJECTED) {
		fprintf(stderr, "voltool: wrong key: no key slot accepts it\n");
		printf("open-error %s\n", err_name(ret));
		return EXIT_KEY;
	}
	if (ret) {
		fprintf(stderr, "voltool: cannot open the volume: %s\n",
			strerror(-ret));
		printf("open-error %s\n", err_name(ret));
		return 1;
	}
	return 0;
}

/* Close and report; the exit status. */
static int close_volume(struct vol *v, int status)
{
	int ret = vol_close(v);

	if (ret) {
		printf("close-error %s\n", err_name(ret));
		return 1;
	}
	return status;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- write, fault-write, discard ---- */

/* One transaction of `write`: blocks [lba, lba + n). */
static int write_txn(struct vol *v, const struct opts *o, uint64_t lba,
		     uint64_t n, uint8_t *buf)
{
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	if (ret)
		return ret;
	if (o->discard_first)
		ret = vol_txn_discard(t, lba, n);
	for (uint64_t k = 0; k < n && !ret; k++) {
		simple_block(o, lba + k, buf);
		ret = vol_txn_write(t, lba + k, buf);
	}
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return vol_txn_commit(t);
}

static int inject(struct vol *v, const struct opts *o)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!(o->fail_mask & (1u << z)))
			continue;
		if (vol_debug_zone_fault(v, z, o->fault_err))
			return 1;
		printf("fault zone %d %s\n", z, err_name(o->fault_err));
	}
	fflush(stdout);
	return 0;
}

static void print_info(const struct vol_info *in);

/* fault-write: the state after the faults, for the test to look at. */
static void report_faults(struct vol *v)
{
	struct vol_info in;

	if (vol_info(v, &in))
		return;
	printf("info ");
	print_info(&in);
}

/* A failed commit: show that the volume stays failed, then close. */
static int write_failed(struct vol *v, const struct opts *o, uint64_t lba,
			uint64_t txn, int err, uint8_t *buf)
{
	int64_t t0;
	int ret;

	printf("error %s lba %" PRIu64 " txn %" PRIu64 "\n", err_name(err), lba,
	       txn);
	if (o->fail_mask) {
		t0 = now_ms();
		ret = write_txn(v, o, o->lba + o->count, 1, buf);
		printf("later-commit %s %" PRId64 "\n",
		       ret ? err_name(ret) : "ok", now_ms() - t0);
		report_faults(v);
	}
	fflush(stdout);
	return close_volume(v, 1);
}

static int cmd_write(const struct opts *o, int faults)
{
	uint8_t buf[VOL_BLOCK_BYTES];
	uint64_t done = 0, txn = 0;
	struct vol *v;
	int ret = open_volume(o, &v);

	if (ret)
		return ret;
	while (done < o->count) {
		uint64_t n = o->count - done;
		int64_t t0;

		if (n > o->txn_blocks)
			n = o->txn_blocks;
		if (faults && txn == o->after && inject(v, o))
			return close_volume(v, 1);
		t0 = now_ms();
		ret = write_txn(v, o, o->lba + done, n, buf);
		if (faults)
			printf("commit %" PRIu64 " %s %" PRId64 "\n", txn,
			       ret ? err_name(ret) : "ok", now_ms() - t0);
		if (ret)
			return write_failed(v, o, o->lba + done, txn, ret, buf);
		fflush(stdout);
		done += n;
		txn++;
	}
	printf("wrote %" PRIu64 " blocks in %" PRIu64 " txns\n", done, txn);
	if (faults)
		report_faults(v);
	fflush(stdout);
	if (o->no_close)
		_exit(0);
	return close_volume(v, 0);
}

static int cmd_discard(const struct opts *o)
{
	struct vol_txn *t;
	struct vol *v;
	int ret = open_volume(o, &v);

	if (ret)
		return ret;
	ret = vol_txn_begin(v, &t);
	if (!ret) {
		ret = vol_txn_discard(t, o->lba, o->count);
		if (ret)
			vol_txn_abort(t);
		else
			ret = vol_txn_commit(t);
	}
	if (ret) {
		printf("error %s\n", err_name(ret));
		return close_volume(v, 1);
	}
	printf("discarded %" PRIu64 " blocks\n", o->count);
	return close_volume(v, 0);
}

/* ---- check, info ---- */

static void print_bad_copies(struct vol *v)
{
	struct vol_info in;

	if (!vol_info(v, &in))
		printf("bad_copies %" PRIu64 "\n", in.bad_copies);
}

/* Compare [lba, lba + count) with seed's blocks (or zeros); 0 ok. */
static int check_range(struct vol *v, const struct opts *o,
		       const struct range *r)
{
	uint8_t want[VOL_BLOCK_BYTES], got[VOL_BLOCK_BYTES];
	struct opts gen = *o;
	int ret;

	gen.seed = r->seed;
	for (uint64_t lba = r->lba; lba < r->lba + r->count; lba++) {
		uint64_t f[2];

		ret = vol_read(v, lba, got);
		if (ret) {
			printf("error %s lba %" PRIu64 "\n", err_name(ret),
			       lba);
			return 1;
		}
		if (r->zero)
			memset(want, 0, sizeof(want));
		else
			simple_block(&gen, lba, want);
		if (!memcmp(want, got, sizeof(want)))
			continue;
		memcpy(f, got + 8, sizeof(f));
		printf("mismatch lba %" PRIu64 ": got %s seed %" PRIu64
		       " lba %" PRIu64 "\n",
		       lba,
		       memcmp(got, "VTSIMPLE", 8) ? "other data" : "block of",
		       f[0], f[1]);
		return 1;
	}
	printf("ok %" PRIu64 " at %" PRIu64 "\n", r->count, r->lba);
	return 0;
}

static int cmd_check(const struct opts *o)
{
	struct range one = { o->lba, o->count, o->seed, o->zero };
	struct vol *v;
	int ret = open_volume(o, &v), status = 0;

	if (ret)
		return ret;
	if (!o->nranges)
		status = check_range(v, o, &one);
	for (int i = 0; i < o->nranges && !status; i++)
		status = check_range(v, o, &o->ranges[i]);
	print_bad_copies(v);
	fflush(stdout);
	return close_volume(v, status);
}

static const char *state_name(enum vol_zone_state s)
{
	return s == VOL_ZONE_HEALTHY  ? "healthy" :
	       s == VOL_ZONE_DEGRADED ? "degraded" :
					"offline";
}

static void print_info(const struct vol_info *in)
{
	printf("{\"capacity_blocks\": %" PRIu64 ", \"used_blocks\": %" PRIu64
	       ", \"max_blocks\": %" PRIu64 ", \"epoch\": %" PRIu64
	       ", \"durable_lsn\": %" PRIu64 ", \"bad_copies\": %" PRIu64
	       ", \"write_quorum\": %d, \"zones\": [",
	       in->capacity_blocks, in->used_blocks, in->max_blocks, in->epoch,
	       in->durable_lsn, in->bad_copies, in->write_quorum);
	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone_info *zi = &in->zones[z];

		printf("%s{\"index\": %d, \"state\": \"%s\", \"epoch\": "
		       "%" PRIu64 ", \"applied_lsn\": %" PRIu64
		       ", \"behind_regions\": %" PRIu64
		       ", \"used_blocks\": %" PRIu64 ", \"path\": ",
		       z ? ", " : "", z, state_name(zi->state), zi->epoch,
		       zi->applied_lsn, zi->behind_regions, zi->used_blocks);
		vol_json_str(stdout, zi->path);
		printf(", \"reason\": ");
		vol_json_str(stdout, zi->reason);
		printf("}");
	}
	printf("]}\n");
}

static int cmd_info(const struct opts *o)
{
	struct vol_info in;
	struct vol *v;
	int ret = open_volume(o, &v);

	if (ret)
		return ret;
	ret = vol_info(v, &in);
	if (ret) {
		printf("error %s\n", err_name(ret));
		return close_volume(v, 1);
	}
	print_info(&in);
	return close_volume(v, 0);
}

static int cmd_dump_plain(const struct opts *o)
{
	uint8_t buf[VOL_BLOCK_BYTES];

	for (uint64_t k = 0; k < o->count; k++) {
		simple_block(o, o->lba + k, buf);
		if (fwrite(buf, sizeof(buf), 1, stdout) != 1)
			return 1;
	}
	return fflush(stdout) ? 1 : 0;
}

/* ---- torture ---- */

struct worker {
	const struct opts *o;
	struct vol *v;
	int t;
	int ret;
	pthread_t tid;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line to stdout with one write(2), so threads never interleave. */
static void say(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0 && write(STDOUT_FILENO, line, (size_t)n) != n)
		abort(); /* the parent went away: nothing to report to */
}

static int torture_commit(struct worker *w, uint64_t i, uint8_t *buf)
{
	const struct opts *o = w->o;
	uint64_t base = o->base + (uint64_t)w->t * o->lbas;
	struct vol_txn *t;
	struct ttxn x;
	int ret;

	torture_txn(o, w->t, i, &x);
	ret = vol_txn_begin(w->v, &t);
	if (ret)
		return ret;
	if (x.discard)
		ret = vol_txn_discard(t, base + x.d_off, x.d_len);
	for (int k = 0; k < x.nw && !ret; k++) {
		torture_block(o->seed, w->t, i, base + x.w_off[k], buf);
		ret = vol_txn_write(t, base + x.w_off[k], buf);
	}
	for (uint64_t k = 0; k < x.run_len && !ret; k++) {
		torture_block(o->seed, w->t, i, base + x.run_off + k, buf);
		ret = vol_txn_write(t, base + x.run_off + k, buf);
	}
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return vol_txn_commit(t);
}

static void *torture_thread(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = malloc(VOL_BLOCK_BYTES);
	uint64_t first = w->o->start[w->t];

	if (!buf) {
		w->ret = -ENOMEM;
		return NULL;
	}
	for (uint64_t i = first; !w->o->txns || i < first + w->o->txns; i++) {
		w->ret = torture_commit(w, i, buf);
		if (w->ret) {
			say("fail %d %" PRIu64 " %s\n", w->t, i,
			    err_name(w->ret));
			break;
		}
		say("ack %d %" PRIu64 "\n", w->t, i);
	}
	free(buf);
	return NULL;
}

/* While the threads run: after --fault-after-ms, fail --fail-zones. */
static void torture_fault(struct vol *v, const struct opts *o)
{
	struct timespec ts = {
		.tv_sec = (time_t)(o->fault_after_ms / 1000),
		.tv_nsec = (long)(o->fault_after_ms % 1000) * 1000000L,
	};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!(o->fail_mask & (1u << z)))
			continue;
		if (vol_debug_zone_fault(v, z, o->fault_err))
			abort();
		say("fault zone %d %s\n", z, err_name(o->fault_err));
	}
}

static int cmd_torture_run(const struct opts *o)
{
	struct worker w[MAX_THREADS];
	struct vol *v;
	int ret = open_volume(o, &v), status = 0;

	if (ret)
		return ret;
	say("opened pid %ld\n", (long)getpid());
	for (int t = 0; t < o->threads; t++) {
		w[t] = (struct worker){ .o = o, .v = v, .t = t };
		if (pthread_create(&w[t].tid, NULL, torture_thread, &w[t])) {
			fprintf(stderr, "voltool: pthread_create failed\n");
			abort();
		}
	}
	if (o->fail_mask)
		torture_fault(v, o);
	for (int t = 0; t < o->threads; t++) {
		pthread_join(w[t].tid, NULL);
		if (w[t].ret)
			status = 1;
	}
	return close_volume(v, status);
}

/* Does block lba (offset k of thread t) hold version ver? */
static int block_is(const struct opts *o, int t, uint64_t k, int64_t ver,
		    const uint8_t *got, uint8_t *tmp)
{
	uint64_t lba = o->base + (uint64_t)t * o->lbas + k;

	if (ver < 0)
		memset(tmp, 0, VOL_BLOCK_BYTES);
	else
		torture_block(o->seed, t, (uint64_t)ver, lba, tmp);
	return !memcmp(tmp, got, VOL_BLOCK_BYTES);
}

static void describe(const uint8_t *got, char *out, size_t len)
{
	uint64_t f[4];
	static const uint8_t zero[VOL_BLOCK_BYTES];

	if (!memcmp(got, zero, VOL_BLOCK_BYTES)) {
		snprintf(out, len, "zeros");
		return;
	}
	memcpy(f, got + 8, sizeof(f));
	if (memcmp(got, "VTTORTUR", 8)) {
		snprintf(out, len, "garbage");
		return;
	}
	snprintf(out, len,
		 "seed %" PRIu64 " thread %" PRIu64 " txn %" PRIu64
		 " lba %" PRIu64,
		 f[0], f[1], f[2], f[3]);
}

/* Verify thread t's range; 0 ok (prints the count found), 1 differs. */
static int verify_thread(const struct opts *o, struct vol *v, int t,
			 int64_t *va, int64_t *vb, uint8_t *got, uint8_t *tmp)
{
	uint64_t c = o->acked[t], bad_a = UINT64_MAX, bad_b = UINT64_MAX;
	char desc[160];
	int ret;

	for (uint64_t k = 0; k < o->lbas; k++)
		va[k] = -1;
	for (uint64_t i = 0; i < c; i++)
		model_apply(o, va, t, i);
	memcpy(vb, va, o->lbas * sizeof(*vb));
	model_apply(o, vb, t, c);
	for (uint64_t k = 0; k < o->lbas; k++) {
		uint64_t lba = o->base + (uint64_t)t * o->lbas + k;

		ret = vol_read(v, lba, got);
		if (ret) {
			printf("thread %d read-error %s lba %" PRIu64 "\n", t,
			       err_name(ret), lba);
			return 1;
		}
		if (bad_a == UINT64_MAX && !block_is(o, t, k, va[k], got, tmp))
			bad_a = k;
		if (bad_b == UINT64_MAX && !block_is(o, t, k, vb[k], got, tmp))
			bad_b = k;
		if (bad_a != UINT64_MAX && bad_b != UINT64_MAX) {
			describe(got, desc, sizeof(desc));
			printf("thread %d differs: lba %" PRIu64 " holds %s; "
			       "model after %" PRIu64 " txns wants txn %" PRId64
			       " (first diff at lba %" PRIu64
			       "), after %" PRIu64 " wants txn %" PRId64 "\n",
			       t, lba, desc, c, va[k],
			       o->base + (uint64_t)t * o->lbas + bad_a, c + 1,
			       vb[k]);
			return 1;
		}
	}
	printf("thread %d count %" PRIu64 "\n", t,
	       bad_a == UINT64_MAX ? c : c + 1);
	return 0;
}

static int cmd_torture_verify(const struct opts *o)
{
	int64_t *va = calloc(o->lbas, sizeof(*va));
	int64_t *vb = calloc(o->lbas, sizeof(*vb));
	uint8_t *got = malloc(VOL_BLOCK_BYTES), *tmp = malloc(VOL_BLOCK_BYTES);
	struct vol *v;
	int ret, status = 0;

	if (!o->have_acked) {
		fprintf(stderr, "voltool: torture-verify needs --acked\n");
		ret = EXIT_USAGE;
		goto out_free;
	}
	ret = !va || !vb || !got || !tmp ? 1 : open_volume(o, &v);
	if (ret)
		goto out_free;
	for (int t = 0; t < o->threads; t++)
		status |= verify_thread(o, v, t, va, vb, got, tmp);
	print_bad_copies(v);
	fflush(stdout);
	ret = close_volume(v, status);
out_free:
	free(va);
	free(vb);
	free(got);
	free(tmp);
	return ret;
}

int main(int argc, char **argv)
{
	struct opts o;
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse(argc, argv, &o))
		return usage();
	if (!strcmp(o.cmd, "write"))
		ret = cmd_write(&o, 0);
	else if (!strcmp(o.cmd, "fault-write"))
		ret = cmd_write(&o, 1);
	else if (!strcmp(o.cmd, "check"))
		ret = cmd_check(&o);
	else if (!strcmp(o.cmd, "discard"))
		ret = cmd_discard(&o);
	else if (!strcmp(o.cmd, "info"))
		ret = cmd_info(&o);
	else if (!strcmp(o.cmd, "torture-run"))
		ret = cmd_torture_run(&o);
	else if (!strcmp(o.cmd, "torture-verify"))
		ret = cmd_torture_verify(&o);
	else if (!strcmp(o.cmd, "dump-plain"))
		ret = cmd_dump_plain(&o);
	else
		ret = usage();
	return ret;
}
