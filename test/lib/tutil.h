/*
 * tutil.h - small helpers shared by the unit tests: a seeded xorshift
 * PRNG (rnd, rnd_below; set rng_state from TEST_SEED), a monotonic clock
 * and a per-case runner that prints ok/FAIL and the time.  Header-only
 * because check.h's failure counter belongs to each test program.
 */
#ifndef SIXFOLD_TEST_TUTIL_H
#define SIXFOLD_TEST_TUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "test/lib/check.h"

static uint64_t rng_state __attribute__((unused));

static inline uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static inline uint32_t rnd_below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

static inline double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Run one test case: "ok" or "FAIL", its name and how long it took. */
static inline void run(const char *name, void (*fn)(void))
{
	double t0 = now_s();
	int before = check_failures;

	fn();
	printf("%-5s %-16s %6.2f s\n", check_failures == before ? "ok" : "FAIL",
	       name, now_s() - t0);
	fflush(stdout);
}

#endif /* SIXFOLD_TEST_TUTIL_H */
