"""truncate/ftruncate, sparse files and lseek SEEK_DATA/SEEK_HOLE on the
mounted filesystem.

Covers: growing (zeros after the old end), shrinking then growing again
(the partial tail block past the cut is zeroed, not resurrected),
shrinking then writing past the end, st_blocks after truncation, mtime
and ctime on a size change, fd views of the new size, truncate errors
(EISDIR, EINVAL, ENOENT, ftruncate on a read-only fd), sparse files with
data far away (8 TiB on any filesystem; 60 TiB and 64 TiB - 4097 on
sixfold only, ext4's limit is 16 TiB), reading holes as zeros, and
SEEK_DATA / SEEK_HOLE positions at 4 KiB granularity (ENXIO at or past
EOF).
"""

import errno
import os

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (BLOCK, FALLBACK, KIB, MIB, TIB, assert_errno,
                        clock_tick, pread_all, raises_errno, read_file,
                        workdir, write_file)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


# ---- truncate ------------------------------------------------------------

def test_truncate_grow_reads_zeros(mounted):
    """Growing a file with truncate sets the size and the new range reads
    back as zeros; the old data is kept."""
    d = workdir(mounted)
    write_file(d / "f", b"abc")
    os.truncate(d / "f", 10000)
    assert os.stat(d / "f").st_size == 10000
    assert read_file(d / "f") == b"abc" + bytes(10000 - 3)


@pytest.mark.parametrize("cut", [100, BLOCK, BLOCK + 1, 5000, 2 * BLOCK - 1])
def test_truncate_shrink_then_grow_zeroes_tail(mounted, cut):
    """After shrinking to `cut` (inside or at the edge of a block) and
    growing back, everything past `cut` reads as zeros: the rest of the
    partial last block was zeroed, old data is not resurrected."""
    d = workdir(mounted)
    data = os.urandom(3 * BLOCK)
    write_file(d / "f", data)
    fsync_path(d / "f")
    os.truncate(d / "f", cut)
    assert read_file(d / "f") == data[:cut]
    os.truncate(d / "f", 3 * BLOCK)
    assert read_file(d / "f") == data[:cut] + bytes(3 * BLOCK - cut)


def test_truncate_shrink_then_write_beyond(mounted):
    """After ftruncate to 100 bytes, a write at offset 6000 leaves
    [100, 6000) as zeros, whatever was there before."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * (2 * BLOCK))
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        os.pwrite(fd, b"y", 6000)
        assert os.fstat(fd).st_size == 6001
        got = pread_all(fd, 7000, 0)
    finally:
        os.close(fd)
    assert got == b"x" * 100 + bytes(5900) + b"y"


def test_truncate_open_fd_sees_new_size(mounted):
    """Another fd sees a truncation at once: reads at or past the new
    end return b'', fstat reports the new size; its offset is not
    moved."""
    d = workdir(mounted)
    write_file(d / "f", b"0123456789" * 100)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.lseek(fd, 500, os.SEEK_SET)
        os.truncate(d / "f", 200)
        assert os.fstat(fd).st_size == 200
        assert os.lseek(fd, 0, os.SEEK_CUR) == 500
        assert os.read(fd, 10) == b""
        assert os.pread(fd, 1000, 150) == (b"0123456789" * 100)[150:200]
    finally:
        os.close(fd)


def test_truncate_changes_mtime_ctime(mounted):
    """truncate and ftruncate that change the size update mtime and
    ctime."""
    d = workdir(mounted)
    write_file(d / "f", b"x" * 1000)
    for grow in (False, True):
        st0 = os.stat(d / "f")
        clock_tick()
        if grow:
            fd = os.open(d / "f", os.O_WRONLY)
            try:
                os.ftruncate(fd, 5000)
            finally:
                os.close(fd)
        else:
            os.truncate(d / "f", 10)
        st1 = os.stat(d / "f")
        assert st1.st_mtime_ns > st0.st_mtime_ns
        assert st1.st_ctime_ns > st0.st_ctime_ns


def test_truncate_to_zero_frees_blocks(mounted):
    """Truncating a 1 MiB file to 0 leaves size 0 and st_blocks 0;
    truncating to 8 KiB leaves at least 8 KiB and at most a little more
    allocated."""
    d = workdir(mounted)
    write_file(d / "f", os.urandom(MIB))
    write_file(d / "g", os.urandom(MIB))
    assert fsync_path(d / "f").st_blocks * 512 >= MIB
    os.truncate(d / "f", 0)
    st = fsync_path(d / "f")
    assert (st.st_size, st.st_blocks) == (0, 0)
    fsync_path(d / "g")
    os.truncate(d / "g", 8 * KIB)
    st = fsync_path(d / "g")
    assert st.st_size == 8 * KIB
    assert 8 * KIB <= st.st_blocks * 512 <= 64 * KIB


def test_truncate_errors(mounted):
    """truncate of a directory is EISDIR, to a negative length EINVAL, of
    a missing file ENOENT; ftruncate on an fd not open for writing is
    EINVAL (Linux); the file is unchanged."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    write_file(d / "f", b"keep")
    assert_errno(errno.EISDIR, os.truncate, d / "dir", 0)
    assert_errno(errno.EINVAL, os.truncate, d / "f", -1)
    assert_errno(errno.ENOENT, os.truncate, d / "missing", 0)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        with raises_errno(errno.EINVAL):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    assert read_file(d / "f") == b"keep"


# ---- sparse files --------------------------------------------------------

def check_far_byte(path, off):
    """One byte written at `off` in an empty file: size, the byte, zeros
    in the holes before it, few blocks, SEEK_DATA at the 4 KiB block
    holding it and SEEK_HOLE at EOF."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"Z", off) == 1
        os.fsync(fd)
        st = os.fstat(fd)
        assert st.st_size == off + 1
        assert 0 < st.st_blocks * 512 <= 64 * KIB
        assert os.pread(fd, 1, off) == b"Z"
        assert os.pread(fd, 10, off - 5) == bytes(5) + b"Z"
        assert os.pread(fd, BLOCK, 0) == bytes(BLOCK)
        assert os.pread(fd, BLOCK, off // 2) == bytes(BLOCK)
        assert os.pread(fd, 100, off + 1) == b""
        block = off - off % BLOCK
        assert os.lseek(fd, 0, os.SEEK_DATA) == block
        assert os.lseek(fd, block, os.SEEK_HOLE) == off + 1
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        with raises_errno(errno.ENXIO):
            os.lseek(fd, off + 1, os.SEEK_DATA)
        # the file offset can go there too
        assert os.lseek(fd, off, os.SEEK_SET) == off
        assert os.read(fd, 2) == b"Z"
    finally:
        os.close(fd)


def test_sparse_byte_at_8tib(mounted):
    """A single byte at 8 TiB + 12345 (within any Linux filesystem's
    limit) gives a sparse file of that size with holes reading as
    zeros and only a block or so allocated."""
    d = workdir(mounted)
    check_far_byte(d / "f", 8 * TIB + 12345)
    os.unlink(d / "f")


@pytest.mark.skipif(FALLBACK, reason="ext4's maximum file size is "
                    "16 TiB; sixfold's files reach 64 TiB")
@pytest.mark.parametrize("off", [60 * TIB, 64 * TIB - BLOCK - 1],
                         ids=["60TiB", "64TiB-4097"])
def test_sparse_byte_near_64tib(mounted, off):
    """A single byte at 60 TiB, and at 64 TiB - 4097 (the last byte of
    the last block below 64 TiB - 4096), works like any sparse
    write."""
    d = workdir(mounted)
    check_far_byte(d / "f", off)
    os.unlink(d / "f")


def test_truncate_creates_hole(mounted):
    """Growing an empty file by truncate to 1 MiB allocates nothing: the
    file is one hole (SEEK_DATA from 0 is ENXIO, SEEK_HOLE from 0 is 0)
    and reads as zeros; st_blocks is 0."""
    d = workdir(mounted)
    write_file(d / "f")
    os.truncate(d / "f", MIB)
    st = fsync_path(d / "f")
    assert (st.st_size, st.st_blocks) == (MIB, 0)
    assert read_file(d / "f") == bytes(MIB)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        with raises_errno(errno.ENXIO):
            os.lseek(fd, 0, os.SEEK_DATA)
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, MIB - 1, os.SEEK_HOLE) == MIB - 1
    finally:
        os.close(fd)


def test_seek_data_hole_layout(mounted):
    """SEEK_DATA / SEEK_HOLE on data [0,4K) hole [4K,1M) data [1M,1M+8K)
    hole up to EOF at 3M: each gives the start of the next data / hole
    region at 4 KiB granularity (or the offset itself when already in
    one), the implicit hole at EOF counts, and offsets at or past EOF
    are ENXIO."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * BLOCK, 0)
        os.pwrite(fd, b"b" * (2 * BLOCK), MIB)
        os.ftruncate(fd, 3 * MIB)
        os.fsync(fd)
        D, H = os.SEEK_DATA, os.SEEK_HOLE
        expect = [
            (0, D, 0), (100, D, 100), (BLOCK - 1, D, BLOCK - 1),
            (BLOCK, D, MIB), (5000, D, MIB), (MIB, D, MIB),
            (MIB + 2 * BLOCK - 1, D, MIB + 2 * BLOCK - 1),
            (0, H, BLOCK), (100, H, BLOCK), (BLOCK, H, BLOCK),
            (5000, H, 5000), (MIB, H, MIB + 2 * BLOCK),
            (MIB + BLOCK, H, MIB + 2 * BLOCK),
            (2 * MIB, H, 2 * MIB), (3 * MIB - 1, H, 3 * MIB - 1),
        ]
        got = [(off, w, os.lseek(fd, off, w)) for off, w, _ in expect]
        assert got == expect
        for off, w in ((MIB + 2 * BLOCK, D), (3 * MIB - 1, D),
                       (3 * MIB, D), (3 * MIB, H), (4 * MIB, D),
                       (4 * MIB, H)):
            with raises_errno(errno.ENXIO):
                os.lseek(fd, off, w)
        # the data regions read back, the holes as zeros
        assert os.pread(fd, BLOCK + 10, 0) == b"a" * BLOCK + bytes(10)
        assert os.pread(fd, 2 * BLOCK + 10, MIB - 5) == (
            bytes(5) + b"b" * (2 * BLOCK) + bytes(5))
        st = os.fstat(fd)
        assert 3 * BLOCK <= st.st_blocks * 512 <= 3 * BLOCK + 64 * KIB
    finally:
        os.close(fd)


def test_seek_data_hole_before_fsync(mounted):
    """SEEK_DATA / SEEK_HOLE see data still in the kernel's page cache,
    not yet written back to the daemon: through the writer's own fd and
    through another one, before any fsync (a sparse-aware copy of a file
    being written must not skip its new data as a hole)."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"z", MIB)
        assert os.lseek(fd, 0, os.SEEK_DATA) == MIB
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, MIB, os.SEEK_HOLE) == MIB + 1
        os.pwrite(fd, b"y" * BLOCK, 2 * MIB)
        other = os.open(d / "f", os.O_RDONLY)
        try:
            assert os.lseek(other, MIB + BLOCK, os.SEEK_DATA) == 2 * MIB
            assert os.lseek(other, 2 * MIB, os.SEEK_HOLE) == (
                2 * MIB + BLOCK)
            with raises_errno(errno.ENXIO):
                os.lseek(other, 2 * MIB + BLOCK, os.SEEK_DATA)
        finally:
            os.close(other)
        assert os.pread(fd, 1, MIB) == b"z"
    finally:
        os.close(fd)
    # closed without fsync: the close wrote it back
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == MIB
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    finally:
        os.close(fd)


def test_seek_data_hole_dense_and_empty(mounted):
    """A fully written file is all data: SEEK_HOLE from 0 gives EOF (the
    implicit hole); an empty file has neither data nor hole: ENXIO."""
    d = workdir(mounted)
    write_file(d / "dense", os.urandom(5 * BLOCK + 7))
    write_file(d / "empty")
    fd = os.open(d / "dense", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 5 * BLOCK + 7
        assert os.lseek(fd, 3 * BLOCK, os.SEEK_HOLE) == 5 * BLOCK + 7
    finally:
        os.close(fd)
    fd = os.open(d / "empty", os.O_RDONLY)
    try:
        for w in (os.SEEK_DATA, os.SEEK_HOLE):
            with raises_errno(errno.ENXIO):
                os.lseek(fd, 0, w)
    finally:
        os.close(fd)


def test_write_into_hole(mounted):
    """Writing a block into the middle of a hole makes exactly that block
    data: it reads back, both sides still read zeros, SEEK_DATA finds
    it."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, MIB)
        os.pwrite(fd, b"m" * BLOCK, 512 * KIB)
        os.fsync(fd)
        assert os.fstat(fd).st_size == MIB
        assert pread_all(fd, MIB, 0) == (bytes(512 * KIB) + b"m" * BLOCK
                                         + bytes(512 * KIB - BLOCK))
        assert os.lseek(fd, 0, os.SEEK_DATA) == 512 * KIB
        assert os.lseek(fd, 512 * KIB, os.SEEK_HOLE) == 512 * KIB + BLOCK
    finally:
        os.close(fd)
