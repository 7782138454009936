/*
 * passfs.h - what the test tools' FUSE passthroughs (test/tools/faultfs.c,
 * test/tools/mirrorfs.c) share: each serves a backing directory through
 * libfuse's high-level API, version 35, with the *at calls.
 */
#ifndef SIXFOLD_TEST_PASSFS_H
#define SIXFOLD_TEST_PASSFS_H

#define FUSE_USE_VERSION 35

#include <dirent.h>
#include <fuse.h>
#include <stddef.h>

/* A FUSE path as a path relative to the backing directory ("." for /). */
const char *passfs_rel(const char *path);

/*
 * Readdir from d: the whole directory in one go (offsets 0), which
 * libfuse buffers and serves the later offsets from; it asks again with
 * offset 0 on rewinddir.  0 or -errno.
 */
int passfs_readdir(DIR *d, void *buf, fuse_fill_dir_t fill, off_t off);

/* Readlink of path under dirfd into buf, NUL-terminated.  0 or -errno. */
int passfs_readlink(int dirfd, const char *path, char *buf, size_t size);

/* FUSE flush (a close(2) of the file): what closing a dup of fd reports. */
int passfs_flush(int fd);

#endif
