/*
 * volume_io_test.c - vol_io_run (volume/vol_io.c, white box through
 * vol_i.h): a vector of operations through an io_uring, all of them
 * done on return, with a bound on how many are in flight.  On a
 * temporary file (removed at the end, also on failure).
 *
 * What must hold, whatever the window (1, a few, 0 for the ring's size,
 * more than the ring holds): every operation has its result, writes land
 * where they were aimed, reads return what is there, an operation
 * without a file gets -EBADF and does not stop the others, and a vector
 * longer than the ring is run whole.  Operations marked nowait (tried in
 * the caller first) give the same results, also when the page cache was
 * dropped before them, so that a non-blocking read finds nothing there
 * and the kernel must take it to a worker.
 *
 * And vol_alloc_huge, the buffers of large writes: zeroed, aligned to a
 * block, from a huge page's boundary when at least one fits, exactly as
 * long as asked (no memory rounded up), marked for huge pages where the
 * kernel has them, and given back by vol_free_huge.
 *
 * And vol_json_str, the status's strings: escapes, and valid UTF-8 out
 * whatever comes in (a path in Latin-1, a reason cut inside a character
 * made status --json unreadable).
 *
 * And vol_write_result, what every synchronous write of the volume's
 * small files (superblocks, checkpoints, the lock, write-intent pages)
 * returns: a short write is -EIO whatever errno holds (it is not set
 * then; a stale 0 once let a short write of the lock file pass).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test/lib/check.h"
#include "volume/vol_i.h"

/* More than the ring holds, so that the ring is refilled. */
#define NOPS (VOL_RING_ENTRIES + 40)

static uint8_t *bufs; /* NOPS blocks */
static struct vol_iop ops[NOPS];

/* The op without a file (fd -1) of each write vector. */
#define NOFILE 5

/*
 * ops[i]: one block through buffer i, at block at of the file; every
 * other one marked nowait (i odd), or none.
 */
static void block_op(size_t i, int kind, int fd, size_t at, int nowait)
{
	ops[i] = (struct vol_iop){ .kind = kind,
				   .fd = fd,
				   .buf = bufs + i * VOL_BLOCK_BYTES,
				   .len = VOL_BLOCK_BYTES,
				   .off = (uint64_t)at * VOL_BLOCK_BYTES,
				   .nowait = nowait && (i & 1) };
}

static void fill(uint8_t *b, size_t i, unsigned int round)
{
	memset(b, (int)((i * 7 + round) & 0xff), VOL_BLOCK_BYTES);
	memcpy(b, &i, sizeof(i));
}

static void run_round(struct io_uring *ring, int fd, size_t window,
		      unsigned int round, int nowait, int cold)
{
	uint8_t want[VOL_BLOCK_BYTES];
	size_t bad = 0;

	for (size_t i = 0; i < NOPS; i++) {
		fill(bufs + i * VOL_BLOCK_BYTES, i, round);
		block_op(i, VOL_IOP_WRITE, i == NOFILE ? -1 : fd, i, nowait);
	}
	if (CHECK_OK(vol_io_run(ring, ops, NOPS, window)) < 0)
		return;
	for (size_t i = 0; i < NOPS; i++)
		if (ops[i].res != (i == NOFILE ? -EBADF : (int)VOL_BLOCK_BYTES))
			bad++;
	CHECK_EQ(bad, 0);

	/* Clean pages only are dropped: written back first. */
	if (cold && (CHECK_OK(fdatasync(fd) ? -errno : 0) ||
		     CHECK_OK(-posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))))
		return;
	/* Read back in reverse order into zeroed buffers. */
	memset(bufs, 0, (size_t)NOPS * VOL_BLOCK_BYTES);
	for (size_t i = 0; i < NOPS; i++)
		block_op(i, VOL_IOP_READ, fd, NOPS - 1 - i, nowait);
	if (CHECK_OK(vol_io_run(ring, ops, NOPS, window)) < 0)
		return;
	for (size_t i = 0; i < NOPS; i++) {
		size_t at = NOPS - 1 - i;

		if (at == NOFILE)
			continue; /* never written this round */
		fill(want, at, round);
		if (ops[i].res != (int)VOL_BLOCK_BYTES ||
		    memcmp(bufs + i * VOL_BLOCK_BYTES, want, sizeof(want))) {
			if (!bad++)
				fprintf(stderr,
					"window %zu%s%s: block %zu read %d, "
					"content %s\n",
					window, nowait ? ", nowait" : "",
					cold ? ", cold" : "", at, ops[i].res,
					ops[i].res == (int)VOL_BLOCK_BYTES ?
						"differs" :
						"-");
		}
	}
	CHECK_EQ(bad, 0);
}

/*
 * The mapping p starts in, from /proc/self/smaps: its end and whether
 * the kernel may back it with huge pages (THPeligible).  0 if found.
 */
static int find_vma(const void *p, uintptr_t *end, int *eligible)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, found = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			if (in) {
				*end = hi;
				*eligible = 0;
				found = 0;
			}
		} else if (in) {
			(void)sscanf(line, "THPeligible: %d", eligible);
		}
	}
	fclose(f);
	return found;
}

/* The process's mapped size in kB (VmSize), -1 if unknown. */
static long vm_size(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int thp_enabled(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128] = "";
	int on;

	if (!f)
		return 0;
	on = fgets(line, sizeof(line), f) && !strstr(line, "[never]");
	fclose(f);
	return on;
}

static void huge_buffers(void)
{
	const size_t sizes[] = { 1, 16, 511, 512, 640, 1025, 2048 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i] * VOL_BLOCK_BYTES, nonzero = 0;
		long before = vm_size();
		uint8_t *p = vol_alloc_huge(n);
		uintptr_t end = 0;
		int eligible = 0;

		CHECK(p != NULL);
		if (!p)
			continue;
		CHECK_EQ((uintptr_t)p % VOL_BLOCK_BYTES, 0);
		for (size_t j = 0; j < n; j++)
			nonzero += p[j] != 0;
		CHECK_EQ(nonzero, 0);
		memset(p, 0xa5, n); /* all of it is there */
		if (n >= VOL_HUGE_BYTES) {
			CHECK_EQ((uintptr_t)p % VOL_HUGE_BYTES, 0);
			if (CHECK_OK(find_vma(p, &end, &eligible)) == 0) {
				CHECK_EQ(end, (uintptr_t)p + n);
				if (thp_enabled())
					CHECK_EQ(eligible, 1);
			}
		}
		vol_free_huge(p, n);
		/* Nothing of the over-mapping is left behind. */
		if (n >= VOL_HUGE_BYTES)
			CHECK_EQ(vm_size(), before);
	}
	vol_free_huge(NULL, 0); /* a batch recovery read has none */
}

/* vol_json_str(in) printed equals want. */
static void json_case(const char *in, const char *want)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	CHECK(f != NULL);
	if (!f)
		return;
	vol_json_str(f, in);
	CHECK_EQ(fclose(f), 0);
	if (strcmp(out, want))
		fprintf(stderr, "json of %s: %s, want %s\n", in, out, want);
	CHECK(strcmp(out, want) == 0);
	free(out);
}

static void json_strings(void)
{
	json_case("a\"b\\c\n", "\"a\\\"b\\\\c\\u000a\"");
	json_case("/mnt/donn\xc3\xa9"
		  "es",
		  "\"/mnt/donn\xc3\xa9"
		  "es\"");
	json_case("\xe2\x82\xac \xf0\x9f\x98\x80",
		  "\"\xe2\x82\xac \xf0\x9f\x98\x80\"");
	json_case("caf\xe9", "\"caf\\ufffd\""); /* Latin-1 */
	json_case("cut \xc3", "\"cut \\ufffd\""); /* cut in a character */
	json_case("\xc0\xaf", "\"\\ufffd\\ufffd\""); /* overlong */
	json_case("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
	json_case("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

static void write_results(void)
{
	errno = 0;
	CHECK_EQ(vol_write_result(4096, 4096), 0);
	CHECK_EQ(vol_write_result(0, 0), 0);
	CHECK_EQ(vol_write_result(100, 4096), -EIO); /* errno 0 */
	errno = ENOENT; /* left by an earlier call */
	CHECK_EQ(vol_write_result(100, 4096), -EIO);
	errno = ENOSPC;
	CHECK_EQ(vol_write_result(-1, 4096), -ENOSPC);
}

int main(void)
{
	char path[] = "/tmp/sixfold-io-XXXXXX";
	const size_t windows[] = { 1, 3, 0, 100000, 6 };
	struct io_uring ring;
	int fd;

	bufs = calloc(NOPS, VOL_BLOCK_BYTES);
	if (!bufs)
		SKIP("no memory for %d blocks", NOPS);
	fd = mkstemp(path);
	if (fd < 0) {
		CHECK_OK(-errno);
		return CHECK_DONE();
	}
	if (CHECK_OK(vol_ring_init(&ring)) == 0) {
		unsigned int nw = sizeof(windows) / sizeof(windows[0]);

		for (unsigned int r = 0; r < 3 * nw; r++)
			run_round(&ring, fd, windows[r % nw], r, r >= nw,
				  r >= 2 * nw);
		io_uring_queue_exit(&ring);
	}
	close(fd);
	unlink(path);
	free(bufs);
	huge_buffers();
	write_results();
	json_strings();
	return CHECK_DONE();
}
