"""fallocate(2) on the mounted filesystem.

Covers: mode 0 (size grows, blocks allocated, zeros read back, data in
range kept, also through posix_fallocate), FALLOC_FL_KEEP_SIZE (blocks
without size), writes into preallocated space, FALLOC_FL_PUNCH_HOLE |
FALLOC_FL_KEEP_SIZE (zeros read back, data around kept, size kept,
st_blocks lowered, a hole for SEEK_HOLE; unaligned ranges; past EOF),
PUNCH_HOLE without KEEP_SIZE (EOPNOTSUPP), FALLOC_FL_ZERO_RANGE (either
works with zeros read back or EOPNOTSUPP with nothing changed), and the
argument errors (EINVAL, EBADF, ESPIPE).
"""

import errno
import os

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (BLOCK, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
                        FALLOC_FL_ZERO_RANGE, KIB, MIB, assert_errno,
                        fallocate, pread_all, workdir)

PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def open_rw(path):
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def synced_stat(fd):
    os.fsync(fd)
    return os.fstat(fd)


def test_fallocate_mode0_grows_size_and_blocks(mounted):
    """Mode 0 on an empty file: st_size becomes offset+len, st_blocks
    covers the range (and not much more), the range reads as zeros."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        fallocate(fd, 0, 0, MIB)
        st = synced_stat(fd)
        assert st.st_size == MIB
        assert MIB <= st.st_blocks * 512 <= MIB + 64 * KIB
        assert pread_all(fd, MIB, 0) == bytes(MIB)
    finally:
        os.close(fd)


def test_posix_fallocate(mounted):
    """posix_fallocate grows the file to offset+len with zeros."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        os.posix_fallocate(fd, 0, 256 * KIB)
        st = synced_stat(fd)
        assert st.st_size == 256 * KIB
        assert st.st_blocks * 512 >= 256 * KIB
        assert pread_all(fd, 256 * KIB, 0) == bytes(256 * KIB)
    finally:
        os.close(fd)


def test_fallocate_mode0_past_eof_and_inside_data(mounted):
    """Mode 0 past EOF grows the size to offset+len with zeros after the
    old data; mode 0 over existing data changes neither data nor
    size."""
    d = workdir(mounted)
    data = os.urandom(64 * KIB)
    fd = open_rw(d / "f")
    try:
        os.write(fd, data)
        fallocate(fd, 0, 0, 32 * KIB)
        assert os.fstat(fd).st_size == 64 * KIB
        assert pread_all(fd, 64 * KIB, 0) == data
        fallocate(fd, 0, 128 * KIB, 64 * KIB)
        assert os.fstat(fd).st_size == 192 * KIB
        assert pread_all(fd, 192 * KIB, 0) == data + bytes(128 * KIB)
    finally:
        os.close(fd)


def test_fallocate_keep_size(mounted):
    """FALLOC_FL_KEEP_SIZE allocates blocks past EOF without changing
    st_size: reads at EOF still return nothing; a later write there
    extends the size normally."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        os.write(fd, b"0123456789")
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, MIB)
        st = synced_stat(fd)
        assert st.st_size == 10
        assert MIB <= st.st_blocks * 512 <= MIB + 64 * KIB
        assert os.pread(fd, 100, 0) == b"0123456789"
        assert os.pread(fd, 100, 10) == b""
        os.pwrite(fd, b"end", 100 * KIB)
        assert os.fstat(fd).st_size == 100 * KIB + 3
        assert pread_all(fd, 100 * KIB + 3, 0) == (
            b"0123456789" + bytes(100 * KIB - 10) + b"end")
    finally:
        os.close(fd)


def test_write_into_preallocated_range(mounted):
    """Data written into preallocated (mode 0) space reads back; the rest
    of the preallocated range still reads as zeros."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        fallocate(fd, 0, 0, 512 * KIB)
        os.pwrite(fd, b"w" * 5000, 300 * KIB + 7)
        os.fsync(fd)
        got = pread_all(fd, 512 * KIB, 0)
        assert got == (bytes(300 * KIB + 7) + b"w" * 5000
                       + bytes(212 * KIB - 5007))
        assert os.fstat(fd).st_size == 512 * KIB
    finally:
        os.close(fd)


def test_punch_hole_aligned(mounted):
    """PUNCH_HOLE|KEEP_SIZE of 4 KiB-aligned [256K, 512K) in a 1 MiB
    file: that range reads as zeros, the data around is intact, the size
    is unchanged, st_blocks drops by at least 256 KiB, and SEEK_HOLE /
    SEEK_DATA see the hole."""
    d = workdir(mounted)
    data = os.urandom(MIB)
    fd = open_rw(d / "f")
    try:
        os.write(fd, data)
        before = synced_stat(fd).st_blocks
        fallocate(fd, PUNCH, 256 * KIB, 256 * KIB)
        st = synced_stat(fd)
        assert st.st_size == MIB
        assert st.st_blocks <= before - 256 * KIB // 512
        assert pread_all(fd, MIB, 0) == (data[:256 * KIB] + bytes(256 * KIB)
                                         + data[512 * KIB:])
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 256 * KIB
        assert os.lseek(fd, 256 * KIB, os.SEEK_DATA) == 512 * KIB
        assert os.lseek(fd, 300 * KIB, os.SEEK_HOLE) == 300 * KIB
    finally:
        os.close(fd)


def test_punch_hole_unaligned(mounted):
    """An unaligned punch zeroes exactly the bytes of its range (partial
    blocks included) and nothing else."""
    d = workdir(mounted)
    data = bytearray(os.urandom(64 * KIB))
    fd = open_rw(d / "f")
    try:
        os.write(fd, data)
        os.fsync(fd)
        for off, length in ((1000, 5000), (10000, 1), (BLOCK * 4 - 1, 2),
                            (20000, 3 * BLOCK + 5)):
            fallocate(fd, PUNCH, off, length)
            data[off:off + length] = bytes(length)
        assert pread_all(fd, 64 * KIB, 0) == bytes(data)
        assert os.fstat(fd).st_size == 64 * KIB
    finally:
        os.close(fd)


def test_punch_hole_past_eof_and_whole_file(mounted):
    """A punch past EOF succeeds and changes nothing; punching the whole
    file keeps its size, reads zeros and frees its blocks."""
    d = workdir(mounted)
    data = os.urandom(128 * KIB)
    fd = open_rw(d / "f")
    try:
        os.write(fd, data)
        fallocate(fd, PUNCH, MIB, MIB)
        assert os.fstat(fd).st_size == 128 * KIB
        assert pread_all(fd, 128 * KIB, 0) == data
        fallocate(fd, PUNCH, 0, 128 * KIB)
        st = synced_stat(fd)
        assert st.st_size == 128 * KIB
        assert st.st_blocks * 512 <= 64 * KIB
        assert pread_all(fd, 128 * KIB, 0) == bytes(128 * KIB)
    finally:
        os.close(fd)


def test_punch_hole_needs_keep_size(mounted):
    """PUNCH_HOLE without KEEP_SIZE is EOPNOTSUPP (Linux) and changes
    nothing."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        os.write(fd, b"x" * 8192)
        assert_errno(errno.EOPNOTSUPP, fallocate, fd, FALLOC_FL_PUNCH_HOLE,
                     0, 4096)
        assert os.pread(fd, 8192, 0) == b"x" * 8192
    finally:
        os.close(fd)


@pytest.mark.parametrize("keep", [False, True], ids=["extend", "keep-size"])
def test_zero_range(mounted, keep):
    """FALLOC_FL_ZERO_RANGE either succeeds, after which its range
    (aligned and unaligned parts) reads as zeros, data outside is kept,
    and a range past EOF extends the size unless KEEP_SIZE; or the
    filesystem refuses it with EOPNOTSUPP and nothing changed."""
    d = workdir(mounted)
    data = bytearray(b"\xaa" * (64 * KIB))
    extra = FALLOC_FL_KEEP_SIZE if keep else 0
    fd = open_rw(d / "f")
    try:
        os.write(fd, data)
        os.fsync(fd)
        try:
            fallocate(fd, FALLOC_FL_ZERO_RANGE | extra, BLOCK, 2 * BLOCK)
        except OSError as e:
            assert e.errno == errno.EOPNOTSUPP, e
            assert pread_all(fd, 64 * KIB, 0) == bytes(data)
            assert os.fstat(fd).st_size == 64 * KIB
            return
        data[BLOCK:3 * BLOCK] = bytes(2 * BLOCK)
        fallocate(fd, FALLOC_FL_ZERO_RANGE | extra, 1000, 2000)
        data[1000:3000] = bytes(2000)
        assert pread_all(fd, 64 * KIB, 0) == bytes(data)
        assert os.fstat(fd).st_size == 64 * KIB
        fallocate(fd, FALLOC_FL_ZERO_RANGE | extra, 60 * KIB, 8 * KIB)
        data[60 * KIB:] = bytes(4 * KIB)
        want = 64 * KIB if keep else 68 * KIB
        assert os.fstat(fd).st_size == want
        assert pread_all(fd, 80 * KIB, 0) == (
            bytes(data) + bytes(want - 64 * KIB))
    finally:
        os.close(fd)


def test_fallocate_argument_errors(mounted):
    """Zero or negative length and negative offset are EINVAL; an fd not
    open for writing is EBADF; a FIFO is ESPIPE."""
    d = workdir(mounted)
    fd = open_rw(d / "f")
    try:
        assert_errno(errno.EINVAL, fallocate, fd, 0, 0, 0)
        assert_errno(errno.EINVAL, fallocate, fd, 0, 0, -4096)
        assert_errno(errno.EINVAL, fallocate, fd, 0, -4096, 4096)
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert_errno(errno.EBADF, fallocate, fd, 0, 0, 4096)
    finally:
        os.close(fd)
    os.mkfifo(d / "fifo")
    fd = os.open(d / "fifo", os.O_RDWR | os.O_NONBLOCK)
    try:
        assert_errno(errno.ESPIPE, fallocate, fd, 0, 0, 4096)
    finally:
        os.close(fd)
