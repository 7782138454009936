/*
 * check.h - tiny harness for sixfold's C unit tests (test/unit/).
 *
 * Include once per test program (the failure counter is static).  The CHECK
 * macros never stop the test: each failure prints file:line and what failed
 * to stderr, and bumps check_failures.  main() ends with
 * `return CHECK_DONE();` which exits 0 if every check passed and 1 otherwise.
 * SKIP() exits 77 (skip) when a capability is missing.
 *
 *	CHECK(cond)		cond must be true
 *	CHECK_EQ(a, b)		a == b, both printed as long long on failure
 *	CHECK_OK(expr)		int expr >= 0, else its -errno via strerror;
 *				yields the value of expr
 *	CHECK_DONE()		1 if any check failed, else 0 (prints a count)
 *	SKIP(fmt, ...)		print "SKIP: <reason>" and exit 77
 */
#ifndef SIXFOLD_TEST_CHECK_H
#define SIXFOLD_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Number of failed checks so far in this program. */
static int check_failures __attribute__((unused));

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                              \
			check_failures++;                                      \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                     \
	do {                                                               \
		long long check_a_ = (long long)(a);                       \
		long long check_b_ = (long long)(b);                       \
		if (check_a_ != check_b_) {                                \
			fprintf(stderr,                                    \
				"%s:%d: CHECK_EQ(%s, %s) failed: %lld != " \
				"%lld\n",                                  \
				__FILE__, __LINE__, #a, #b, check_a_,      \
				check_b_);                                 \
			check_failures++;                                  \
		}                                                          \
	} while (0)

#define CHECK_OK(expr)                                                   \
	({                                                               \
		int check_ret_ = (expr);                                 \
		if (check_ret_ < 0) {                                    \
			fprintf(stderr,                                  \
				"%s:%d: CHECK_OK(%s) failed: %s (%d)\n", \
				__FILE__, __LINE__, #expr,               \
				strerror(-check_ret_), check_ret_);      \
			check_failures++;                                \
		}                                                        \
		check_ret_;                                              \
	})

#define CHECK_DONE()                                                          \
	({                                                                    \
		if (check_failures)                                           \
			fprintf(stderr, "%s: %d check(s) failed\n", __FILE__, \
				check_failures);                              \
		check_failures ? 1 : 0;                                       \
	})

#define SKIP(...)                    \
	do {                         \
		printf("SKIP: ");    \
		printf(__VA_ARGS__); \
		printf("\n");        \
		fflush(stdout);      \
		exit(77);            \
	} while (0)

#endif /* SIXFOLD_TEST_CHECK_H */
