"""Random file operations on a mounted sixfold filesystem, checked against
an in-memory model.

A seeded PRNG drives about 2000 operations over a few files at once:
writes at random offsets and lengths (unaligned, spanning blocks, far past
the end so that they leave sparse holes), truncates up and down, holes
punched (fallocate PUNCH_HOLE|KEEP_SIZE), preallocations (fallocate mode 0
and KEEP_SIZE) and reads at random offsets.  Every file has a model (a
bytearray of its contents); every read is compared with it, every
CHECK_EVERY operations each file is fsync'ed and compared whole, and at the
end the filesystem is remounted, every file compared again, and the
unmounted volume must pass `sixfold fsck`.

Proves: the file data paths (partial blocks, holes, extents split by
punches and truncates, unwritten preallocated extents) return exactly what
POSIX says, before and after a remount, and leave consistent metadata.

The seed is printed and is in every failure message; set
SIXFOLD_MODEL_SEED=N to replay one.
"""

import ctypes
import ctypes.util
import errno
import os
import random

import pytest

BLOCK = 4096
NFILES = 3
NOPS = 2000
CHECK_EVERY = 100  # operations between whole-file comparisons
MAX_SIZE = 12 << 20  # no file grows past this (keeps the run small)
MAX_WRITE = 256 << 10

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                            ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd, mode, offset, length):
    """fallocate(2) itself (Python has only posix_fallocate, which glibc
    may emulate by writing); raises OSError on failure."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def seeds():
    env = os.environ.get("SIXFOLD_MODEL_SEED")
    if env:
        return [int(env)]
    return [20261126, 7]


class ModelFile:
    """One file on the mount with its expected contents."""

    def __init__(self, path):
        self.path = path
        self.data = bytearray()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def reopen(self):
        self.close()
        self.fd = os.open(self.path, os.O_RDWR)


class Runner:
    """Draws and applies operations; `log` keeps the recent ones so a
    failure shows what led to it."""

    def __init__(self, root, seed):
        self.seed = seed
        self.rng = random.Random(seed)
        self.files = [ModelFile(root / f"model{i}") for i in range(NFILES)]
        self.log = []
        self.counts = {}

    def ctx(self, f=None):
        recent = "\n  ".join(self.log[-15:])
        where = f" file {f.path.name}" if f else ""
        return (f"seed {self.seed} (SIXFOLD_MODEL_SEED={self.seed} to "
                f"replay), op {len(self.log)}{where}; last ops:\n  {recent}")

    def note(self, f, text):
        self.log.append(f"{f.path.name}: {text}")
        kind = text.split()[0]
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # ---- choosing offsets and lengths --------------------------------

    def offset(self, f, length):
        """An offset for an access of `length` bytes: inside the file,
        near its end, block aligned, or far out (a sparse hole)."""
        rng = self.rng
        size = len(f.data)
        top = max(0, MAX_SIZE - length)
        kind = rng.random()
        if kind < 0.35 or size == 0:
            off = rng.randrange(0, max(1, min(size, top) + 1))
        elif kind < 0.55:
            off = max(0, size - rng.randrange(0, 3 * BLOCK))
        elif kind < 0.75:
            off = rng.randrange(0, max(1, size // BLOCK + 1)) * BLOCK
        elif kind < 0.9:
            # Around a block boundary, so the access spans two blocks.
            b = rng.randrange(0, max(1, size // BLOCK + 2))
            off = max(0, b * BLOCK - rng.randrange(1, BLOCK))
        else:
            off = rng.randrange(size, max(size + 1, top + 1))  # far out
        return min(off, top)

    def length(self):
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return rng.randrange(1, 512)
        if kind < 0.6:
            return rng.randrange(1, 3 * BLOCK)
        if kind < 0.8:
            return rng.randrange(1, 16) * BLOCK
        return rng.randrange(1, MAX_WRITE)

    # ---- operations ---------------------------------------------------

    def op_write(self, f):
        n = self.length()
        off = self.offset(f, n)
        buf = self.rng.randbytes(n)
        self.note(f, f"write off={off} len={n}")
        done = os.pwrite(f.fd, buf, off)
        assert done == n, f"short write {done}/{n}; {self.ctx(f)}"
        if off > len(f.data):
            f.data.extend(bytes(off - len(f.data)))
        f.data[off:off + n] = buf

    def op_truncate(self, f):
        size = len(f.data)
        if self.rng.random() < 0.5 and size:
            new = self.rng.randrange(0, size)  # down
        else:
            up = min(MAX_SIZE, size + (4 << 20))
            new = self.rng.randrange(size, up + 1)
        if self.rng.random() < 0.3:
            new = new // BLOCK * BLOCK
        self.note(f, f"truncate {size} -> {new}")
        os.ftruncate(f.fd, new)
        if new < size:
            del f.data[new:]
        else:
            f.data.extend(bytes(new - size))

    def op_punch(self, f):
        n = self.length()
        off = self.offset(f, n)
        self.note(f, f"punch off={off} len={n}")
        fallocate(f.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
        end = min(off + n, len(f.data))
        if off < end:
            f.data[off:end] = bytes(end - off)

    def op_prealloc(self, f, keep):
        n = self.length()
        off = self.offset(f, n)
        mode = FALLOC_FL_KEEP_SIZE if keep else 0
        self.note(f, f"{'preallocK' if keep else 'prealloc'} off={off} "
                     f"len={n}")
        fallocate(f.fd, mode, off, n)
        if not keep and off + n > len(f.data):
            f.data.extend(bytes(off + n - len(f.data)))

    def op_read(self, f):
        n = self.length()
        size = len(f.data)
        off = self.rng.randrange(0, size + BLOCK)
        self.note(f, f"read off={off} len={n}")
        got = os.pread(f.fd, n, off)
        want = bytes(f.data[off:off + n])
        if got != want:
            raise AssertionError(
                f"read off={off} len={n}: {describe_diff(got, want, off)}; "
                f"{self.ctx(f)}")

    def op_stat(self, f):
        self.note(f, "stat")
        size = os.fstat(f.fd).st_size
        assert size == len(f.data), (
            f"size {size}, expected {len(f.data)}; {self.ctx(f)}")

    def op_reopen(self, f):
        self.note(f, "reopen")
        f.reopen()

    def step(self):
        f = self.rng.choice(self.files)
        r = self.rng.random()
        if r < 0.40:
            self.op_write(f)
        elif r < 0.50:
            self.op_truncate(f)
        elif r < 0.58:
            self.op_punch(f)
        elif r < 0.63:
            self.op_prealloc(f, keep=False)
        elif r < 0.68:
            self.op_prealloc(f, keep=True)
        elif r < 0.93:
            self.op_read(f)
        elif r < 0.98:
            self.op_stat(f)
        else:
            self.op_reopen(f)

    def check_all(self, when, sync=True):
        for f in self.files:
            if sync:
                os.fsync(f.fd)
            compare_file(f.path, f.data, f"{when}; {self.ctx(f)}")

    def close(self):
        for f in self.files:
            f.close()


def describe_diff(got, want, base=0):
    """Where two byte strings first differ, for a failure message."""
    if len(got) != len(want):
        head = f"length {len(got)}, expected {len(want)}"
    else:
        head = "same length"
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return (f"{head}; first difference at offset {base + i}: "
                    f"got {got[i:i + 16].hex()} expected "
                    f"{want[i:i + 16].hex()}")
    return head


def compare_file(path, data, ctx):
    """The whole file at path (read through a fresh descriptor, in 1 MiB
    pieces) equals data, and so does its size."""
    size = os.stat(path).st_size
    assert size == len(data), f"{path.name}: size {size}, expected " \
                              f"{len(data)}; {ctx}"
    with open(path, "rb", buffering=0) as fh:
        off = 0
        while True:
            got = fh.read(1 << 20)
            if not got:
                break
            want = bytes(data[off:off + len(got)])
            if got != want:
                raise AssertionError(
                    f"{path.name}: {describe_diff(got, want, off)}; {ctx}")
            off += len(got)
    assert off == len(data), f"{path.name}: read {off} bytes of " \
                             f"{len(data)}; {ctx}"


@pytest.mark.parametrize("seed", seeds())
def test_random_ops_match_model(mounted, seed):
    """~2000 random writes, truncates, punched holes, preallocations and
    reads on three files agree with the model at every read, at every
    fsync'ed checkpoint and after a remount; fsck then finds the volume
    clean."""
    print(f"model seed {seed}")
    root = mounted.path / "model"
    root.mkdir()
    runner = Runner(root, seed)
    try:
        for i in range(1, NOPS + 1):
            try:
                runner.step()
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP:
                    raise AssertionError(
                        f"operation not supported: {e}; {runner.ctx()}")
                raise AssertionError(f"{e!r}; {runner.ctx()}") from e
            if i % CHECK_EVERY == 0:
                runner.check_all(f"checkpoint after op {i}")
        runner.check_all("end of run")
    finally:
        runner.close()
    print("operations:", sorted(runner.counts.items()))
    print("sizes:", [len(f.data) for f in runner.files])

    mounted.remount()
    runner.check_all("after remount", sync=False)

    mounted.unmount()
    r = mounted.fsck()
    assert r.returncode == 0, (f"fsck exit {r.returncode} (seed {seed})\n"
                               f"stdout: {r.stdout}\nstderr: {r.stderr}")
