"""File reads that reach the daemon at every alignment.

Reads through the page cache reach the daemon on page boundaries (the
aligned path of fs_vfs_read, which opens whole blocks straight into the
reply); O_DIRECT reads reach it at the byte offsets and lengths asked
(the unaligned path, through a bounce buffer).  A file with data, a hole
in the middle, a hole at the front and a partial last block is read both
ways at offsets and lengths chosen to hit each case (a partial first
block, a partial last block, holes inside a run, the end of the file,
past it, runs longer than one 64-block volume run), before and after a
remount (the second time from the segments, not the log), and every
answer is compared with a model of the file.
"""

import mmap
import os
import random

import pytest

BLOCK = 4096
SEED = 20261127


def build(path):
    """The file and its model: data from 2 blocks in, a 40-block hole in
    the middle, 300 blocks of data after it, and a last block of 1234
    bytes."""
    rng = random.Random(SEED)
    model = bytearray(2 * BLOCK)  # hole at the front
    model += rng.randbytes(70 * BLOCK)
    model += bytes(40 * BLOCK)  # hole in the middle
    model += rng.randbytes(300 * BLOCK + 1234)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, model[2 * BLOCK:72 * BLOCK], 2 * BLOCK)
        os.pwrite(fd, model[112 * BLOCK:], 112 * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
    return bytes(model)


def cases(size):
    """(offset, length) pairs: each read path's edges, then random."""
    rng = random.Random(SEED + 1)
    fixed = [(0, BLOCK), (0, size), (0, 1), (BLOCK - 1, 2), (100, 9000),
             (2 * BLOCK, 64 * BLOCK), (2 * BLOCK + 5, 80 * BLOCK),
             (70 * BLOCK, 45 * BLOCK), (71 * BLOCK + 17, 50 * BLOCK),
             (112 * BLOCK, 256 * BLOCK), (size - 1234, 1234),
             (size - 1234, BLOCK), (size - 5000, 10000), (size - 1, 1),
             (size, BLOCK), (size + 3 * BLOCK, 100)]
    rand = [(rng.randrange(size + BLOCK), rng.randrange(1, 300 * BLOCK))
            for _ in range(150)]
    aligned = [(rng.randrange(size // BLOCK) * BLOCK,
                rng.randrange(1, 300) * BLOCK) for _ in range(50)]
    return fixed + rand + aligned


def read_cached(path, off, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        # Out of the page cache, so the daemon is asked.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, off)
    finally:
        os.close(fd)


def read_direct(path, off, length):
    """O_DIRECT: FUSE passes the offset and length to the daemon as
    asked, aligned or not."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, length + BLOCK)
    try:
        n = os.preadv(fd, [memoryview(buf)[:length]], off)
        return bytes(buf[:n])
    finally:
        buf.close()
        os.close(fd)


def check_all(path, model, when):
    for off, length in cases(len(model)):
        want = model[off:off + length]
        for how, fn in (("page cache", read_cached),
                        ("O_DIRECT", read_direct)):
            got = fn(path, off, length)
            assert len(got) == len(want), \
                f"{when}, {how} read of {length} at {off}: {len(got)} " \
                f"bytes, want {len(want)}"
            if got != want:
                bad = next(i for i in range(len(want)) if got[i] != want[i])
                pytest.fail(f"{when}, {how} read of {length} at {off}: "
                            f"wrong bytes from {bad + off}")


def test_reads_at_every_alignment(mounted):
    path = mounted.path / "f"
    model = build(path)
    check_all(path, model, "before the remount")
    mounted.remount()
    check_all(path, model, "after a remount")
