/*
 * vol_bench_main.c - `sixfold bench-volume`: what the volume costs against
 * the physical limit of six copies on the same disk.
 *
 * Option parsing and wiring only (STYLE 2): it drives the public volume
 * API and, as the baseline, six plain O_DIRECT files in six sibling
 * directories, in one run on the same disk, and prints both side by side
 * with their ratios (DESIGN.md 7).  Everything it makes under DIR is
 * removed at the end, also on error or ^C.
 *
 *   sync    8 KiB commits (2 blocks at a random 8 KiB slot of the first
 *           GiB), 1 thread then T threads, for N seconds each: commits/s,
 *           p50/p99 latency.  Plain files: 8 KiB pwrite + fdatasync on all
 *           six in parallel; a commit waits for all six, and the time to
 *           the 4th (the quorum equivalent) is reported too.
 *   bulk    T threads commit 1 MiB transactions (256 sequential blocks,
 *           disjoint ranges) until M MiB, then vol_sync: MB/s end to end.
 *           Plain files: six threads write M MiB each in 1 MiB O_DIRECT
 *           pwrites, fdatasync after each.
 *
 * Exit status: 0 done, 1 failed or interrupted, 64 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "keys/keys.h"
#include "volume/volume.h"

#define EXIT_USAGE 64

#define SYNC_BLOCKS 2u
#define SYNC_BYTES (SYNC_BLOCKS * VOL_BLOCK_BYTES)
#define SYNC_RANGE_BYTES (1ull << 30) /* offsets in the first GiB */
#define BULK_BLOCKS 256u
#define BULK_BYTES (BULK_BLOCKS * VOL_BLOCK_BYTES) /* 1 MiB */
#define BULK_BASE_LBA (SYNC_RANGE_BYTES / VOL_BLOCK_BYTES)
#define MAX_THREADS 64
#define MAX_SECONDS 3600
#define MAX_MIB (1u << 20)
#define KEY_FILE_BYTES 64
#define WRITE_TIMEOUT_MS 60000
#define MAX_MADE 32 /* components of DIR this run may create */

_Static_assert(BULK_BLOCKS <= VOL_TXN_MAX_RECS, "bulk txn too large");

struct bench_opts {
	const char *dir;
	int seconds;
	uint32_t mib;
	int threads;
	int json;
};

/* What this run made under DIR, so that exactly that is removed. */
struct ws {
	char made[MAX_MADE][PATH_MAX]; /* directories of DIR we created */
	int nmade;
	char key[PATH_MAX];
	int key_made;
	char zone[VOL_ZONES][PATH_MAX];
	int zone_made[VOL_ZONES];
	char plain[VOL_ZONES][PATH_MAX];
	int plain_made[VOL_ZONES];
	char file[VOL_ZONES][PATH_MAX];
};

struct sync_result {
	uint64_t commits;
	double secs;
	double rate; /* commits/s */
	double p50, p99; /* µs: the commit (plain: all six) */
	double q4_p50, q4_p99; /* µs, plain only: the 4th fastest file */
	struct vol_commit_info phases; /* volume only: its batches' phases */
};

struct results {
	struct sync_result vol1, volt, plain1, plaint;
	double vol_mbps, plain_mbps; /* MB/s (10^6 bytes) of user data */
	double vol_bulk_secs, plain_bulk_secs;
};

static volatile sig_atomic_t interrupted;
static atomic_int failed;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int stop_requested(void)
{
	return interrupted || atomic_load(&failed);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: offsets only, no secrets. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

/* A start line: threads wait until the main thread opens it. */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int open;
};

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->open = 0;
}

static void gate_wait(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
}

static void gate_destroy(struct gate *g)
{
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->lock);
}

static void *alloc_aligned(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, VOL_BLOCK_BYTES, len))
		return NULL;
	key_random(p, len);
	return p;
}

/* ---- latencies ---- */

struct lat {
	uint64_t *ns;
	size_t n, cap;
};

static int lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4096;
		uint64_t *p = realloc(l->ns, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->ns = p;
		l->cap = cap;
	}
	l->ns[l->n++] = ns;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted ns, in µs. */
static double pct_us(const struct lat *l, int pct)
{
	size_t rank;

	if (!l->n)
		return 0;
	rank = (l->n * (size_t)pct + 99) / 100;
	return (double)l->ns[rank ? rank - 1 : 0] / 1000.0;
}

/* ---- the work directory ---- */

/* mkdir -p dir, remembering each directory created. */
static int make_dir(struct ws *w, const char *dir)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != 0)
			continue;
		buf[i] = 0;
		if (!mkdir(buf, 0700)) {
			if (w->nmade < MAX_MADE)
				snprintf(w->made[w->nmade++], PATH_MAX, "%s",
					 buf);
		} else if (errno != EEXIST) {
			return -errno;
		}
		buf[i] = i < len ? '/' : 0;
	}
	return 0;
}

static int path_join(char *out, const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* A directory of ours; an existing one is a leftover we will not touch. */
static int make_own_dir(const char *path, int *made)
{
	if (mkdir(path, 0700)) {
		int ret = -errno;

		fprintf(stderr, "sixfold: cannot create %s: %s%s\n", path,
			strerror(-ret),
			ret == -EEXIST ?
				" (left by an earlier run? remove it)" :
				"");
		return ret;
	}
	*made = 1;
	return 0;
}

static int ws_create(struct ws *w, const char *dir)
{
	char name[32];
	int ret = make_dir(w, dir);

	if (ret) {
		fprintf(stderr, "sixfold: cannot create %s: %s\n", dir,
			strerror(-ret));
		return ret;
	}
	for (int z = 0; z < VOL_ZONES && !ret; z++) {
		snprintf(name, sizeof(name), "zone%d", z);
		ret = path_join(w->zone[z], dir, name);
		if (!ret)
			ret = make_own_dir(w->zone[z], &w->zone_made[z]);
		snprintf(name, sizeof(name), "plain%d", z);
		if (!ret)
			ret = path_join(w->plain[z], dir, name);
		if (!ret)
			ret = make_own_dir(w->plain[z], &w->plain_made[z]);
		if (!ret)
			ret = path_join(w->file[z], w->plain[z], "data");
	}
	if (!ret)
		ret = path_join(w->key, dir, "key");
	return ret;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) && errno != ENOENT)
		fprintf(stderr, "sixfold: cannot remove %s: %s\n", path,
			strerror(errno));
	return 0;
}

static void ws_remove(struct ws *w)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		if (w->zone_made[z])
			nftw(w->zone[z], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		if (w->plain_made[z])
			nftw(w->plain[z], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	if (w->key_made)
		unlink(w->key);
	while (w->nmade > 0)
		rmdir(w->made[--w->nmade]); /* only if empty */
}

/* Roughly what the run writes: six copies each of the bulk data, twice. */
static int check_space(const struct bench_opts *o)
{
	uint64_t need = 12ull * o->mib * BULK_BYTES + (1ull << 30);
	struct statvfs sv;

	if (statvfs(o->dir, &sv))
		return -errno;
	if ((uint64_t)sv.f_bavail * sv.f_frsize >= need)
		return 0;
	fprintf(stderr,
		"sixfold: %s has %" PRIu64 " MiB free; --mib %u needs about "
		"%" PRIu64 " MiB (12 copies, plus 1 GiB)\n",
		o->dir, (uint64_t)sv.f_bavail * sv.f_frsize >> 20, o->mib,
		need >> 20);
	return -ENOSPC;
}

/* ---- the volume ---- */

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static int make_key_file(struct ws *w, struct key_source *src)
{
	uint8_t secret[KEY_FILE_BYTES];
	int fd, ret;

	fd = open(w->key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		fprintf(stderr, "sixfold: cannot create %s: %s\n", w->key,
			strerror(-ret));
		return ret;
	}
	w->key_made = 1;
	key_random(secret, sizeof(secret));
	ret = write_all(fd, secret, sizeof(secret), 0);
	if (close(fd) && !ret)
		ret = -errno;
	memset(secret, 0, sizeof(secret));
	if (!ret)
		ret = key_source_read_file(w->key, src);
	if (ret)
		fprintf(stderr, "sixfold: key file %s: %s\n", w->key,
			strerror(-ret));
	return ret;
}

static int open_volume(struct ws *w, const struct key_source *key,
		       struct vol **v)
{
	const char *paths[VOL_ZONES];
	struct vol_mkfs_opts mo = { .key = key };
	struct vol_open_opts oo = { .paths = paths,
				    .npaths = VOL_ZONES,
				    .key = key,
				    .write_timeout_ms = WRITE_TIMEOUT_MS };
	int ret;

	for (int z = 0; z < VOL_ZONES; z++)
		mo.zones[z] = paths[z] = w->zone[z];
	ret = vol_mkfs(&mo, NULL);
	if (ret) {
		fprintf(stderr, "sixfold: mkfs failed: %s\n", strerror(-ret));
		return ret;
	}
	ret = vol_open(&oo, v);
	if (ret)
		fprintf(stderr, "sixfold: open failed: %s\n", strerror(-ret));
	return ret;
}

/* One transaction: n blocks from buf at lba, lba + 1, ... */
static int vol_commit_blocks(struct vol *v, uint64_t lba, uint32_t n,
			     const uint8_t *buf)
{
	struct vol_txn *t;
	int ret = vol_txn_begin(v, &t);

	if (ret)
		return ret;
	for (uint32_t i = 0; i < n && !ret; i++)
		ret = vol_txn_write(t, lba + i,
				    buf + (size_t)i * VOL_BLOCK_BYTES);
	if (ret) {
		vol_txn_abort(t);
		return ret;
	}
	return vol_txn_commit(t);
}

/* ---- plain files: one write fanned out to six writer threads ---- */

struct fanout;

struct fan_arg {
	struct fanout *fo;
	int z;
};

struct fanout {
	pthread_mutex_t lock;
	pthread_cond_t work_cv, done_cv;
	const int *fds;
	const uint8_t *buf;
	off_t off;
	uint64_t gen; /* one per commit */
	int done; /* files finished with this commit */
	int err;
	int quit;
	uint64_t t[VOL_ZONES]; /* when each file had it on disk */
	int nthreads;
	pthread_t tid[VOL_ZONES];
	struct fan_arg arg[VOL_ZONES];
};

static int write_sync(int fd, const void *buf, size_t len, off_t off)
{
	int ret = write_all(fd, buf, len, off);

	if (!ret && fdatasync(fd))
		ret = -errno;
	return ret;
}

static void *fan_worker(void *p)
{
	struct fan_arg *a = p;
	struct fanout *fo = a->fo;
	uint64_t seen = 0;

	pthread_mutex_lock(&fo->lock);
	for (;;) {
		uint64_t t;
		off_t off;
		int ret;

		while (fo->gen == seen && !fo->quit)
			pthread_cond_wait(&fo->work_cv, &fo->lock);
		if (fo->quit)
			break;
		seen = fo->gen;
		off = fo->off;
		pthread_mutex_unlock(&fo->lock);
		ret = write_sync(fo->fds[a->z], fo->buf, SYNC_BYTES, off);
		t = now_ns();
		pthread_mutex_lock(&fo->lock);
		fo->t[a->z] = t;
		if (ret && !fo->err)
			fo->err = ret;
		if (++fo->done == VOL_ZONES)
			pthread_cond_signal(&fo->done_cv);
	}
	pthread_mutex_unlock(&fo->lock);
	return NULL;
}

static void fan_stop(struct fanout *fo)
{
	pthread_mutex_lock(&fo->lock);
	fo->quit = 1;
	pthread_cond_broadcast(&fo->work_cv);
	pthread_mutex_unlock(&fo->lock);
	for (int z = 0; z < fo->nthreads; z++)
		pthread_join(fo->tid[z], NULL);
	pthread_cond_destroy(&fo->work_cv);
	pthread_cond_destroy(&fo->done_cv);
	pthread_mutex_destroy(&fo->lock);
}

static int fan_start(struct fanout *fo, const int *fds, const uint8_t *buf)
{
	int ret = 0;

	memset(fo, 0, sizeof(*fo));
	fo->fds = fds;
	fo->buf = buf;
	pthread_mutex_init(&fo->lock, NULL);
	pthread_cond_init(&fo->work_cv, NULL);
	pthread_cond_init(&fo->done_cv, NULL);
	for (int z = 0; z < VOL_ZONES && !ret; z++) {
		fo->arg[z] = (struct fan_arg){ fo, z };
		ret = -pthread_create(&fo->tid[z], NULL, fan_worker,
				      &fo->arg[z]);
		if (!ret)
			fo->nthreads++;
	}
	if (ret)
		fan_stop(fo);
	return ret;
}

/* One commit on all six files: *all and *q4 get the latencies. */
static int fan_commit(struct fanout *fo, off_t off, uint64_t *all, uint64_t *q4)
{
	uint64_t t0, t[VOL_ZONES];
	int ret;

	pthread_mutex_lock(&fo->lock);
	fo->off = off;
	fo->done = 0;
	fo->gen++;
	t0 = now_ns();
	pthread_cond_broadcast(&fo->work_cv);
	while (fo->done < VOL_ZONES)
		pthread_cond_wait(&fo->done_cv, &fo->lock);
	memcpy(t, fo->t, sizeof(t));
	ret = fo->err;
	pthread_mutex_unlock(&fo->lock);
	qsort(t, VOL_ZONES, sizeof(t[0]), cmp_u64);
	*q4 = t[VOL_WRITE_QUORUM - 1] - t0;
	*all = t[VOL_ZONES - 1] - t0;
	return ret;
}

/* ---- synchronous commits: N seconds of 1 or T committers ---- */

struct sync_run {
	struct vol *v; /* the volume, or NULL: the plain files */
	const int *fds; /* plain files */
	uint64_t slots; /* 8 KiB slots the offsets are drawn from */
	uint64_t deadline;
	struct gate go;
};

struct committer {
	struct sync_run *run;
	pthread_t tid;
	uint64_t rng;
	uint8_t *buf;
	struct fanout fo;
	int fo_started;
	struct lat all, q4;
	uint64_t t_end;
	int ret;
};

static int vol_sync_commit(struct committer *c)
{
	uint64_t slot = rng_next(&c->rng) % c->run->slots;
	uint64_t t0 = now_ns();
	int ret;

	ret = vol_commit_blocks(c->run->v, slot * SYNC_BLOCKS, SYNC_BLOCKS,
				c->buf);
	if (ret)
		return ret;
	return lat_add(&c->all, now_ns() - t0);
}

static int plain_sync_commit(struct committer *c)
{
	uint64_t slot = rng_next(&c->rng) % c->run->slots;
	uint64_t all, q4;
	int ret;

	ret = fan_commit(&c->fo, (off_t)(slot * SYNC_BYTES), &all, &q4);
	if (!ret)
		ret = lat_add(&c->all, all);
	if (!ret)
		ret = lat_add(&c->q4, q4);
	return ret;
}

static void *committer_main(void *arg)
{
	struct committer *c = arg;
	struct sync_run *run = c->run;

	gate_wait(&run->go);
	while (!c->ret && !stop_requested() && now_ns() < run->deadline)
		c->ret = run->v ? vol_sync_commit(c) : plain_sync_commit(c);
	c->t_end = now_ns();
	if (c->ret)
		atomic_store(&failed, 1);
	return NULL;
}

static int committer_setup(struct committer *c, struct sync_run *run)
{
	int ret;

	memset(c, 0, sizeof(*c));
	c->run = run;
	key_random(&c->rng, sizeof(c->rng));
	c->rng |= 1; /* xorshift needs a non-zero state */
	c->buf = alloc_aligned(SYNC_BYTES);
	if (!c->buf)
		return -ENOMEM;
	if (run->v)
		return 0;
	ret = fan_start(&c->fo, run->fds, c->buf);
	c->fo_started = !ret;
	return ret;
}

static void committer_teardown(struct committer *c)
{
	if (c->fo_started)
		fan_stop(&c->fo);
	free(c->buf);
	free(c->all.ns);
	free(c->q4.ns);
}

/* Pool every committer's latencies of one kind, sorted. */
static int lat_pool(struct committer *cs, int n, int q4, struct lat *out)
{
	int ret = 0;

	memset(out, 0, sizeof(*out));
	for (int i = 0; i < n && !ret; i++) {
		const struct lat *l = q4 ? &cs[i].q4 : &cs[i].all;

		for (size_t k = 0; k < l->n && !ret; k++)
			ret = lat_add(out, l->ns[k]);
	}
	if (out->n)
		qsort(out->ns, out->n, sizeof(*out->ns), cmp_u64);
	return ret;
}

static int sync_summary(struct committer *cs, int n, uint64_t t0,
			struct sync_result *r)
{
	struct lat all, q4;
	uint64_t end = t0;
	int ret;

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < n; i++)
		if (cs[i].t_end > end)
			end = cs[i].t_end;
	ret = lat_pool(cs, n, 0, &all);
	if (!ret)
		ret = lat_pool(cs, n, 1, &q4);
	if (!ret) {
		r->commits = all.n;
		r->secs = (double)(end - t0) / 1e9;
		r->rate = r->secs > 0 ? (double)all.n / r->secs : 0;
		r->p50 = pct_us(&all, 50);
		r->p99 = pct_us(&all, 99);
		r->q4_p50 = pct_us(&q4, 50);
		r->q4_p99 = pct_us(&q4, 99);
	}
	free(all.ns);
	free(q4.ns);
	return ret;
}

/* Start n committers, let them run, collect; all of them are joined. */
static int sync_threads(struct sync_run *run, struct committer *cs, int n,
			int seconds, uint64_t *t0)
{
	int started, ret = 0;

	for (started = 0; started < n; started++) {
		ret = -pthread_create(&cs[started].tid, NULL, committer_main,
				      &cs[started]);
		if (ret) {
			atomic_store(&failed, 1); /* the started ones end */
			break;
		}
	}
	*t0 = now_ns();
	run->deadline = *t0 + (uint64_t)seconds * 1000000000u;
	gate_open(&run->go);
	for (int i = 0; i < started; i++) {
		pthread_join(cs[i].tid, NULL);
		if (!ret)
			ret = cs[i].ret;
	}
	return ret;
}

/* Where the volume's commits spent their time (sixfold status's figures). */
static int commit_phases(struct vol *v, struct vol_commit_info *out)
{
	struct vol_info *in = malloc(sizeof(*in));
	int ret;

	if (!in)
		return -ENOMEM;
	ret = vol_info(v, in);
	if (!ret)
		*out = in->commit;
	free(in);
	return ret;
}

/*
 * nthreads committers, each committing 8 KiB at random slots of
 * [0, slots) for `seconds`: on the volume v, or (v NULL) on the files.
 */
static int run_sync(struct vol *v, const int *fds, uint64_t slots, int nthreads,
		    int seconds, struct sync_result *r)
{
	struct sync_run run = { .v = v, .fds = fds, .slots = slots };
	struct committer *cs = calloc(nthreads, sizeof(*cs));
	uint64_t t0;
	int ret = 0;

	if (!cs)
		return -ENOMEM;
	for (int i = 0; i < nthreads && !ret; i++)
		ret = committer_setup(&cs[i], &run);
	if (ret)
		goto out_teardown;
	gate_init(&run.go);
	if (v)
		vol_commit_info_reset(v); /* this run's batches only */
	ret = sync_threads(&run, cs, nthreads, seconds, &t0);
	gate_destroy(&run.go);
	if (!ret && stop_requested())
		ret = -EINTR;
	if (!ret)
		ret = sync_summary(cs, nthreads, t0, r);
	if (!ret && v)
		ret = commit_phases(v, &r->phases);
out_teardown:
	for (int i = 0; i < nthreads; i++) /* zeroed ones too */
		committer_teardown(&cs[i]);
	free(cs);
	return ret;
}

/* ---- bulk writes ---- */

struct bulk_worker {
	struct vol *v; /* or NULL: fd */
	int fd;
	uint64_t lba; /* volume: first block */
	uint32_t nmib;
	const uint8_t *buf; /* 1 MiB */
	struct gate *go;
	pthread_t tid;
	int ret;
};

static void *bulk_main(void *arg)
{
	struct bulk_worker *w = arg;

	gate_wait(w->go);
	for (uint32_t i = 0; i < w->nmib && !w->ret && !stop_requested(); i++) {
		if (w->v)
			w->ret = vol_commit_blocks(
				w->v, w->lba + (uint64_t)i * BULK_BLOCKS,
				BULK_BLOCKS, w->buf);
		else
			w->ret = write_sync(w->fd, w->buf, BULK_BYTES,
					    (off_t)i * BULK_BYTES);
	}
	if (w->ret)
		atomic_store(&failed, 1);
	return NULL;
}

/* Run the workers from one start; returns when all are done. */
static int bulk_threads(struct bulk_worker *bw, int n, uint64_t *t0)
{
	struct gate go;
	int started, ret = 0;

	gate_init(&go);
	for (started = 0; started < n; started++) {
		bw[started].go = &go;
		ret = -pthread_create(&bw[started].tid, NULL, bulk_main,
				      &bw[started]);
		if (ret) {
			atomic_store(&failed, 1);
			break;
		}
	}
	*t0 = now_ns();
	gate_open(&go);
	for (int i = 0; i < started; i++) {
		pthread_join(bw[i].tid, NULL);
		if (!ret)
			ret = bw[i].ret;
	}
	gate_destroy(&go);
	if (!ret && stop_requested())
		ret = -EINTR;
	return ret;
}

/* The volume: T committers share M MiB in disjoint sequential ranges. */
static int run_bulk_vol(struct vol *v, int nthreads, uint32_t mib,
			const uint8_t *buf, double *secs)
{
	struct bulk_worker bw[MAX_THREADS];
	uint64_t lba = BULK_BASE_LBA, t0;
	int ret;

	for (int i = 0; i < nthreads; i++) {
		uint32_t share = mib / nthreads + (i < (int)(mib % nthreads));

		bw[i] = (struct bulk_worker){
			.v = v, .lba = lba, .nmib = share, .buf = buf
		};
		lba += (uint64_t)share * BULK_BLOCKS;
	}
	ret = bulk_threads(bw, nthreads, &t0);
	if (!ret)
		ret = vol_sync(v); /* materialised: end to end */
	*secs = (double)(now_ns() - t0) / 1e9;
	return ret;
}

/* The plain files: six writers, M MiB each. */
static int run_bulk_plain(const int *fds, uint32_t mib, const uint8_t *buf,
			  double *secs)
{
	struct bulk_worker bw[VOL_ZONES];
	uint64_t t0;
	int ret;

	for (int z = 0; z < VOL_ZONES; z++)
		bw[z] = (struct bulk_worker){ .fd = fds[z],
					      .nmib = mib,
					      .buf = buf };
	ret = bulk_threads(bw, VOL_ZONES, &t0);
	*secs = (double)(now_ns() - t0) / 1e9;
	return ret;
}

/* ---- the two halves of the run ---- */

static void progress(const char *what, int threads, int seconds)
{
	if (seconds)
		fprintf(stderr, "bench-volume: %s, %d thread%s, %d s...\n",
			what, threads, threads == 1 ? "" : "s", seconds);
	else
		fprintf(stderr, "bench-volume: %s, %d thread%s...\n", what,
			threads, threads == 1 ? "" : "s");
}

static double mbps(uint32_t mib, double secs)
{
	return secs > 0 ? (double)mib * BULK_BYTES / 1e6 / secs : 0;
}

static int bench_volume(struct ws *w, const struct bench_opts *o,
			const uint8_t *bulk, struct results *r)
{
	uint64_t slots = SYNC_RANGE_BYTES / SYNC_BYTES;
	struct key_source key = { 0 };
	struct vol *v = NULL;
	int ret, cret;

	ret = make_key_file(w, &key);
	if (ret)
		return ret;
	ret = open_volume(w, &key, &v);
	key_source_release(&key);
	if (ret)
		return ret;
	progress("sixfold: 8 KiB commits", 1, o->seconds);
	ret = run_sync(v, NULL, slots, 1, o->seconds, &r->vol1);
	if (!ret)
		ret = vol_sync(v);
	if (!ret)
		progress("sixfold: 8 KiB commits", o->threads, o->seconds);
	if (!ret)
		ret = run_sync(v, NULL, slots, o->threads, o->seconds,
			       &r->volt);
	if (!ret)
		ret = vol_sync(v);
	if (!ret)
		progress("sixfold: 1 MiB transactions", o->threads, 0);
	if (!ret)
		ret = run_bulk_vol(v, o->threads, o->mib, bulk,
				   &r->vol_bulk_secs);
	r->vol_mbps = mbps(o->mib, r->vol_bulk_secs);
	cret = vol_close(v);
	if (ret && ret != -EINTR)
		fprintf(stderr, "sixfold: volume run failed: %s\n",
			strerror(-ret));
	return ret ? ret : cret;
}

static void close_files(int *fds)
{
	for (int z = 0; z < VOL_ZONES; z++)
		if (fds[z] >= 0)
			close(fds[z]);
}

static int open_files(struct ws *w, int *fds)
{
	for (int z = 0; z < VOL_ZONES; z++)
		fds[z] = -1;
	for (int z = 0; z < VOL_ZONES; z++) {
		fds[z] = open(w->file[z],
			      O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC,
			      0600);
		if (fds[z] < 0) {
			int ret = -errno;

			fprintf(stderr,
				"sixfold: cannot open %s O_DIRECT: "
				"%s\n",
				w->file[z], strerror(-ret));
			close_files(fds);
			return ret;
		}
	}
	return 0;
}

/*
 * Bulk first: it writes [0, M MiB) of every file, so the 8 KiB commits
 * that follow overwrite written blocks, as the volume overwrites its
 * preallocated log; a sparse file would add allocation to each fdatasync.
 */
static int bench_plain(struct ws *w, const struct bench_opts *o,
		       const uint8_t *bulk, struct results *r)
{
	int fds[VOL_ZONES], ret;
	uint64_t slots = (uint64_t)o->mib * BULK_BYTES / SYNC_BYTES;

	if (slots > SYNC_RANGE_BYTES / SYNC_BYTES)
		slots = SYNC_RANGE_BYTES / SYNC_BYTES;
	ret = open_files(w, fds);
	if (ret)
		return ret;
	progress("plain files: 1 MiB writes", VOL_ZONES, 0);
	ret = run_bulk_plain(fds, o->mib, bulk, &r->plain_bulk_secs);
	r->plain_mbps = mbps(o->mib, r->plain_bulk_secs);
	if (!ret)
		progress("plain files: 8 KiB commits", 1, o->seconds);
	if (!ret)
		ret = run_sync(NULL, fds, slots, 1, o->seconds, &r->plain1);
	if (!ret)
		progress("plain files: 8 KiB commits", o->threads, o->seconds);
	if (!ret)
		ret = run_sync(NULL, fds, slots, o->threads, o->seconds,
			       &r->plaint);
	close_files(fds);
	if (ret && ret != -EINTR)
		fprintf(stderr, "sixfold: plain-file run failed: %s\n",
			strerror(-ret));
	return ret;
}

/* ---- output ---- */

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static void row(FILE *f, const char *what, double vol, double all, double q4,
		double rat)
{
	char q[32] = "-", rt[32] = "-";

	if (q4 > 0)
		snprintf(q, sizeof(q), "%.0f", q4);
	if (rat > 0)
		snprintf(rt, sizeof(rt), "%.2f", rat);
	fprintf(f, "  %-28s %12.0f %12.0f %12s %8s\n", what, vol, all, q, rt);
}

static void phase_row(FILE *f, const char *what, const struct vol_latency *l)
{
	fprintf(f, "    %-26s %12" PRIu64 " %12" PRIu64 "\n", what, l->p50_us,
		l->p99_us);
}

static void print_sync(FILE *f, const char *title, int threads,
		       const struct sync_result *v, const struct sync_result *p)
{
	fprintf(f, "8 KiB sync commits, %d %s\n", threads, title);
	row(f, "commits/s", v->rate, p->rate, 0, ratio(v->rate, p->rate));
	row(f, "latency p50 (us)", v->p50, p->p50, p->q4_p50,
	    ratio(v->p50, p->q4_p50));
	row(f, "latency p99 (us)", v->p99, p->p99, p->q4_p99,
	    ratio(v->p99, p->q4_p99));
	fprintf(f, "  %-28s %12s %12s\n", "sixfold's batches (us)", "p50",
		"p99");
	phase_row(f, "queued", &v->phases.queued);
	phase_row(f, "written (4 of 6)", &v->phases.written);
	phase_row(f, "durable (4 of 6)", &v->phases.durable);
}

static void print_table(FILE *f, const struct bench_opts *o,
			const struct results *r)
{
	fprintf(f,
		"sixfold bench-volume: %s, %d s per sync run, %u MiB bulk, "
		"%d threads, one disk\n\n",
		o->dir, o->seconds, o->mib, o->threads);
	fprintf(f, "  %-28s %12s %12s %12s %8s\n", "", "sixfold", "6 files",
		"4th of 6", "ratio");
	print_sync(f, "committer", 1, &r->vol1, &r->plain1);
	print_sync(f, o->threads == 1 ? "committer" : "committers", o->threads,
		   &r->volt, &r->plaint);
	fprintf(f,
		"1 MiB transactions, %u MiB, %d threads (plain: 6 writers)\n",
		o->mib, o->threads);
	row(f, "MB/s of user data", r->vol_mbps, r->plain_mbps, 0,
	    ratio(r->vol_mbps, r->plain_mbps));
	fprintf(f, "\n"
		   "sixfold: a commit is durable on 4 of 6 zones (log write + "
		   "fdatasync each,\n"
		   "  one per zone for a whole group of commits).  6 files: "
		   "8 KiB pwrite +\n"
		   "  fdatasync on six O_DIRECT files in parallel; a commit "
		   "waits for all six,\n"
		   "  '4th of 6' is when the fourth was done (the quorum "
		   "equivalent).  They\n"
		   "  overwrite blocks the bulk run wrote, like the volume's "
		   "preallocated log.\n"
		   "sixfold's batches: where its commits spent their time, "
		   "per batch (a batch\n"
		   "  carries every commit waiting when it is sent): queued "
		   "from the oldest\n"
		   "  commit's seal to its sending, then written and durable "
		   "on four zones,\n"
		   "  both from the sending (the figures of sixfold status).\n"
		   "ratio: sixfold / 6 files for commits/s and MB/s (higher "
		   "is better), sixfold /\n"
		   "  4th of 6 for latency (lower is better); 1 = the "
		   "baseline, what the disk\n"
		   "  gives six plain copies.\n"
		   "MB/s: 10^6 bytes of user data per second, end to end "
		   "(sixfold: until vol_sync\n"
		   "  has materialised everything).  Every block goes through "
		   "the log, so each\n"
		   "  zone writes it twice (log + segment), each baseline "
		   "file once: where disk\n"
		   "  bandwidth is the limit, about 0.5 is the ceiling.  The "
		   "baseline also flushes\n"
		   "  after every MiB; where flushes are the limit, the "
		   "volume's larger batches\n"
		   "  can come out ahead.  Blocks are also sealed (AEAD) and "
		   "checksummed.\n"
		   "One run on a shared disk: repeat it to see the noise.\n");
}

static void json_phase(const char *name, const struct vol_latency *l)
{
	printf("\"%s\": {\"mean\": %" PRIu64 ", \"p50\": %" PRIu64
	       ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"max\": %" PRIu64
	       "}",
	       name, l->mean_us, l->p50_us, l->p90_us, l->p99_us, l->max_us);
}

static void json_sync(const char *name, const struct sync_result *v,
		      const struct sync_result *p)
{
	printf("\"%s\": {\"sixfold\": {\"commits\": %" PRIu64
	       ", \"commits_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": "
	       "%.1f, \"batches\": %" PRIu64 ", ",
	       name, v->commits, v->rate, v->p50, v->p99, v->phases.batches);
	json_phase("queued_us", &v->phases.queued);
	printf(", ");
	json_phase("written_us", &v->phases.written);
	printf(", ");
	json_phase("durable_us", &v->phases.durable);
	printf(", ");
	json_phase("total_us", &v->phases.total);
	printf("}, ");
	printf("\"plain\": {\"commits\": %" PRIu64
	       ", \"commits_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": "
	       "%.1f, \"q4_p50_us\": %.1f, \"q4_p99_us\": %.1f}, ",
	       p->commits, p->rate, p->p50, p->p99, p->q4_p50, p->q4_p99);
	printf("\"ratio\": {\"commits_per_s\": %.3f, \"p50_vs_q4\": %.3f, "
	       "\"p99_vs_q4\": %.3f}}",
	       ratio(v->rate, p->rate), ratio(v->p50, p->q4_p50),
	       ratio(v->p99, p->q4_p99));
}

static void print_json(const struct bench_opts *o, const struct results *r)
{
	printf("{\"dir\": ");
	vol_json_str(stdout, o->dir);
	printf(", \"seconds\": %d, \"mib\": %u, \"threads\": %d, ", o->seconds,
	       o->mib, o->threads);
	json_sync("sync_1", &r->vol1, &r->plain1);
	printf(", ");
	json_sync("sync_t", &r->volt, &r->plaint);
	printf(", \"bulk\": {\"sixfold_mb_per_s\": %.1f, \"sixfold_s\": %.3f"
	       ", \"plain_mb_per_s\": %.1f, \"plain_s\": %.3f, \"ratio\": "
	       "%.3f}}\n",
	       r->vol_mbps, r->vol_bulk_secs, r->plain_mbps, r->plain_bulk_secs,
	       ratio(r->vol_mbps, r->plain_mbps));
}

/* ---- options ---- */

static int bench_usage(FILE *f)
{
	fprintf(f, "usage: sixfold bench-volume [--dir DIR] [--seconds N] "
		   "[--mib M] [--threads T] [--json]\n"
		   "  DIR      work directory, default ./data/bench (what the "
		   "run makes there\n"
		   "           is removed at the end)\n"
		   "  N        seconds per sync-commit run, default 10\n"
		   "  M        MiB of the bulk run, default 512 (needs about "
		   "12 x M free)\n"
		   "  T        committer threads, default 4\n"
		   "  --json   the results as one JSON object on stdout (the "
		   "table goes to stderr)\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

static int parse_num(const char *s, long lo, long hi, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(s, &end, 10);
	if (errno || end == s || *end || n < lo || n > hi)
		return -EINVAL;
	*out = n;
	return 0;
}

/* 0: parsed; else the exit status for main. */
static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "seconds", required_argument, NULL, 's' },
		{ "mib", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long n;
	int c;

	*o = (struct bench_opts){ "./data/bench", 10, 512, 4, 0 };
	while ((c = getopt_long(argc, argv, "d:s:m:t:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o->dir = optarg;
			break;
		case 's':
			if (parse_num(optarg, 1, MAX_SECONDS, &n))
				goto out_bad;
			o->seconds = (int)n;
			break;
		case 'm':
			if (parse_num(optarg, 1, MAX_MIB, &n))
				goto out_bad;
			o->mib = (uint32_t)n;
			break;
		case 't':
			if (parse_num(optarg, 1, MAX_THREADS, &n))
				goto out_bad;
			o->threads = (int)n;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			bench_usage(stdout);
			return -1; /* done: exit 0 */
		default:
			return bench_usage(stderr);
		}
	}
	if (optind != argc || !o->dir[0])
		return bench_usage(stderr);
	return 0;
out_bad:
	fprintf(stderr,
		"sixfold: --%s %s: give a whole number, seconds 1..%d, "
		"MiB 1..%u, threads 1..%d\n",
		c == 's' ? "seconds" :
		c == 'm' ? "mib" :
			   "threads",
		optarg, MAX_SECONDS, MAX_MIB, MAX_THREADS);
	return EXIT_USAGE;
}

static void signals(int on, struct sigaction *old)
{
	struct sigaction sa = { .sa_handler = on_signal,
				.sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	if (on) {
		sigaction(SIGINT, &sa, &old[0]);
		sigaction(SIGTERM, &sa, &old[1]);
	} else {
		sigaction(SIGINT, &old[0], NULL);
		sigaction(SIGTERM, &old[1], NULL);
	}
}

static int bench(struct ws *w, const struct bench_opts *o, struct results *r)
{
	uint8_t *bulk = alloc_aligned(BULK_BYTES);
	int ret;

	if (!bulk)
		return -ENOMEM;
	ret = ws_create(w, o->dir);
	if (!ret)
		ret = check_space(o);
	if (!ret)
		ret = bench_volume(w, o, bulk, r);
	if (!ret)
		ret = bench_plain(w, o, bulk, r);
	free(bulk);
	return ret;
}

int vol_main_bench(int argc, char **argv)
{
	struct bench_opts o;
	struct sigaction old[2];
	struct results r;
	struct ws *w;
	int ret;

	ret = parse_opts(argc, argv, &o);
	if (ret)
		return ret < 0 ? 0 : ret;
	if (key_init())
		return 1;
	w = calloc(1, sizeof(*w));
	if (!w)
		return 1;
	memset(&r, 0, sizeof(r));
	signals(1, old);
	ret = bench(w, &o, &r);
	ws_remove(w);
	signals(0, old);
	free(w);
	if (ret) {
		if (ret == -EINTR || interrupted)
			fprintf(stderr, "sixfold: bench-volume interrupted; "
					"its files are removed\n");
		return 1;
	}
	print_table(o.json ? stderr : stdout, &o, &r);
	if (o.json)
		print_json(&o, &r);
	return 0;
}
