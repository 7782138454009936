"""POSIX namespace and basic I/O behaviour of the mounted filesystem.

Covers: lookup (path forms, case, arbitrary name bytes), getattr of new
files, directories and nodes (mode, nlink, uid, gid, size, st_blocks,
times), create with umask, mknod (regular, fifo, socket, char and block
devices as root), mkdir (mode bits, parent nlink), unlink, rmdir, which
operations change the parent's mtime/ctime (and which must not),
names of 255 bytes (256 -> ENAMETOOLONG), setattr of times through
utimensat (explicit, UTIME_NOW, UTIME_OMIT), open/read/write, O_APPEND,
O_EXCL, O_TRUNC, O_DIRECT, fsync/fdatasync (also on a directory), unlink
of an open file, and statvfs.
"""

import errno
import mmap
import os
import stat
import time

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (BLOCK, KIB, UTIME_NOW, UTIME_OMIT,
                        assert_errno, assert_recent, clock_tick, mkdir,
                        pread_all, raises_errno, read_file, umask, utimensat,
                        needs_root, workdir, write_file)

OLD_NS = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds


# ---- lookup / getattr ----------------------------------------------------

def test_lookup_path_forms(mounted):
    """Lookup resolves '.', '..' and repeated slashes to the same inode,
    is case-sensitive, and a missing name gives ENOENT."""
    d = workdir(mounted)
    mkdir(d / "sub")
    write_file(d / "f", b"x")
    ino = os.stat(d / "f").st_ino
    for p in (f"{d}/./f", f"{d}/sub/../f", f"{d}//f", f"{d}/sub/./../f"):
        assert os.stat(p).st_ino == ino, p
    assert os.stat(f"{d}/sub/..").st_ino == os.stat(d).st_ino
    assert os.stat(f"{d}/.").st_ino == os.stat(d).st_ino
    assert_errno(errno.ENOENT, os.stat, d / "F")
    write_file(d / "F", b"yy")
    assert os.stat(d / "F").st_ino != ino
    assert read_file(d / "f") == b"x" and read_file(d / "F") == b"yy"
    assert_errno(errno.ENOENT, os.stat, d / "missing")
    assert_errno(errno.ENOENT, os.stat, d / "missing" / "f")


def test_new_file_attributes(mounted):
    """A new regular file: S_IFREG with mode & ~umask, nlink 1, the
    creator's uid/gid, size 0, no blocks, atime == mtime == ctime == now;
    fstat and stat agree; the parent's st_dev, a new st_ino."""
    d = workdir(mounted)
    t0 = time.time_ns()
    with umask(0o022):
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o666)
    t1 = time.time_ns()
    try:
        fst = os.fstat(fd)
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert st.st_mode == stat.S_IFREG | 0o644
    assert st.st_nlink == 1
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert st.st_size == 0
    assert st.st_blocks == 0
    assert st.st_blksize > 0
    assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns
    assert_recent(st.st_mtime_ns, t0, t1, "mtime of a new file")
    assert st.st_dev == os.stat(d).st_dev
    assert st.st_ino != os.stat(d).st_ino
    for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid",
                  "st_gid", "st_size", "st_mtime_ns", "st_ctime_ns"):
        assert getattr(fst, field) == getattr(st, field), field


def test_new_directory_attributes(mounted):
    """A new directory: S_IFDIR with mode & ~umask, nlink 2, the
    creator's uid/gid, times == now; the parent gains one link; '..'
    inside it is the parent."""
    d = workdir(mounted)
    parent_nlink = os.stat(d).st_nlink
    t0 = time.time_ns()
    with umask(0o022):
        os.mkdir(d / "sub", 0o777)
    t1 = time.time_ns()
    st = os.stat(d / "sub")
    assert st.st_mode == stat.S_IFDIR | 0o755
    assert st.st_nlink == 2
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns
    assert_recent(st.st_ctime_ns, t0, t1, "ctime of a new directory")
    assert os.stat(d).st_nlink == parent_nlink + 1
    assert os.stat(d / "sub" / "..").st_ino == os.stat(d).st_ino


def test_directory_nlink_counts_subdirectories(mounted):
    """A directory's nlink is 2 + its number of subdirectories; files,
    symlinks and nodes inside do not count."""
    d = workdir(mounted)
    for i in range(5):
        os.mkdir(d / f"s{i}")
    write_file(d / "f")
    os.symlink("s0", d / "l")
    os.mkfifo(d / "p")
    assert os.stat(d).st_nlink == 7
    os.rmdir(d / "s4")
    assert os.stat(d).st_nlink == 6


def test_mode_bits_on_create_and_mkdir(mounted):
    """With umask 0: open(O_CREAT, 07777) by root keeps all 12 mode bits;
    mkdir(07777) keeps the sticky bit and the permission bits but not
    set-user-ID / set-group-ID (Linux), and a custom umask is applied."""
    d = workdir(mounted)
    with umask(0):
        os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o7777))
        os.mkdir(d / "sub", 0o7777)
    assert os.stat(d / "f").st_mode == stat.S_IFREG | 0o7777
    assert os.stat(d / "sub").st_mode == stat.S_IFDIR | 0o1777
    with umask(0o027):
        os.close(os.open(d / "g", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(d / "sub2", 0o777)
    assert os.stat(d / "g").st_mode == stat.S_IFREG | 0o750
    assert os.stat(d / "sub2").st_mode == stat.S_IFDIR | 0o750


def test_inode_numbers_unique_and_stable(mounted):
    """Distinct files have distinct st_ino; an inode keeps its number
    across lookups and a rename."""
    d = workdir(mounted)
    inos = set()
    for i in range(50):
        write_file(d / f"f{i}")
        inos.add(os.stat(d / f"f{i}").st_ino)
    assert len(inos) == 50
    assert os.stat(d).st_ino not in inos
    ino = os.stat(d / "f7").st_ino
    assert os.stat(d / "f7").st_ino == ino
    os.rename(d / "f7", d / "seven")
    assert os.stat(d / "seven").st_ino == ino


# ---- mknod ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["reg", "fifo", "sock"])
def test_mknod_regular_fifo_socket(mounted, kind):
    """mknod creates a regular file, FIFO or socket with the requested
    type and mode & ~umask, nlink 1, size 0 and st_rdev 0."""
    d = workdir(mounted)
    fmt = {"reg": stat.S_IFREG, "fifo": stat.S_IFIFO,
           "sock": stat.S_IFSOCK}[kind]
    with umask(0o022):
        os.mknod(d / "n", fmt | 0o666)
    st = os.lstat(d / "n")
    assert st.st_mode == fmt | 0o644
    assert st.st_nlink == 1
    assert st.st_size == 0
    assert st.st_rdev == 0
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert_errno(errno.EEXIST, os.mknod, d / "n", fmt | 0o644)


def test_mknod_fifo_works_as_a_pipe(mounted):
    """A FIFO made on the filesystem passes data from a writer to a
    reader (O_NONBLOCK reader first, then writer)."""
    d = workdir(mounted)
    os.mkfifo(d / "p", 0o600)
    r = os.open(d / "p", os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(d / "p", os.O_WRONLY)
        try:
            os.write(w, b"through the fifo")
        finally:
            os.close(w)
        assert os.read(r, 100) == b"through the fifo"
    finally:
        os.close(r)
    assert os.stat(d / "p").st_size == 0


@needs_root
@pytest.mark.parametrize("fmt,major,minor", [
    (stat.S_IFCHR, 1, 3),
    (stat.S_IFBLK, 7, 0),
    (stat.S_IFCHR, 259, 65541),  # needs the new (32-bit) dev encoding
])
def test_mknod_devices_as_root(mounted, fmt, major, minor):
    """Root (CAP_MKNOD) makes char and block device nodes; st_rdev gives
    back exactly the major/minor that were asked for."""
    d = workdir(mounted)
    with umask(0):
        os.mknod(d / "dev", fmt | 0o640, os.makedev(major, minor))
    st = os.lstat(d / "dev")
    assert st.st_mode == fmt | 0o640
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
    assert st.st_nlink == 1
    assert st.st_size == 0


# ---- unlink / rmdir ------------------------------------------------------

def test_unlink_and_rmdir(mounted):
    """unlink removes a file name, rmdir an empty directory (the parent
    loses one link); both names are then ENOENT."""
    d = workdir(mounted)
    write_file(d / "f", b"data")
    os.mkdir(d / "sub")
    nlink = os.stat(d).st_nlink
    os.unlink(d / "f")
    assert_errno(errno.ENOENT, os.stat, d / "f")
    os.rmdir(d / "sub")
    assert_errno(errno.ENOENT, os.stat, d / "sub")
    assert os.stat(d).st_nlink == nlink - 1
    assert os.listdir(d) == []


def test_rmdir_refuses_non_empty_and_dots(mounted):
    """rmdir of a non-empty directory is ENOTEMPTY (also when it only
    holds a subdirectory or a symlink); rmdir of 'x/.' is EINVAL and of
    'x/..' ENOTEMPTY (Linux)."""
    d = workdir(mounted)
    os.makedirs(d / "a" / "b")
    assert_errno(errno.ENOTEMPTY, os.rmdir, d / "a")
    os.mkdir(d / "c")
    os.symlink("nowhere", d / "c" / "l")
    assert_errno(errno.ENOTEMPTY, os.rmdir, d / "c")
    assert_errno(errno.EINVAL, os.rmdir, f"{d}/a/b/.")
    assert_errno(errno.ENOTEMPTY, os.rmdir, f"{d}/a/b/..")
    assert os.path.isdir(d / "a" / "b")


def test_unlink_open_file(mounted):
    """An unlinked file stays usable through an open fd: reads and writes
    work, fstat shows nlink 0 and the right size; the name is gone from
    lookup and readdir."""
    d = workdir(mounted)
    write_file(d / "f", b"hello")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        assert_errno(errno.ENOENT, os.stat, d / "f")
        assert os.listdir(d) == []
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"hello"
        os.pwrite(fd, b" world", 5)
        os.pwrite(fd, b"!", 2 * BLOCK)
        assert pread_all(fd, 11, 0) == b"hello world"
        st = os.fstat(fd)
        assert st.st_size == 2 * BLOCK + 1
        assert st.st_nlink == 0
        assert os.pread(fd, 5, 100) == b"\0" * 5
        os.fsync(fd)
        os.ftruncate(fd, 3)
        assert os.pread(fd, 100, 0) == b"hel"
        # a new file may now take the name; it is a different inode
        write_file(d / "f", b"new")
        assert read_file(d / "f") == b"new"
        assert os.pread(fd, 100, 0) == b"hel"
    finally:
        os.close(fd)


# ---- parent directory timestamps -----------------------------------------

def _prep_file(d):
    write_file(d / "x", b"x")


def _prep_dir(d):
    os.mkdir(d / "x")


PARENT_OPS = {
    "create": (None, lambda d: write_file(d / "new")),
    "mkdir": (None, lambda d: os.mkdir(d / "new")),
    "mknod-fifo": (None, lambda d: os.mkfifo(d / "new")),
    "symlink": (None, lambda d: os.symlink("target", d / "new")),
    "link": (_prep_file, lambda d: os.link(d / "x", d / "new")),
    "unlink": (_prep_file, lambda d: os.unlink(d / "x")),
    "rmdir": (_prep_dir, lambda d: os.rmdir(d / "x")),
    "rename": (_prep_file, lambda d: os.rename(d / "x", d / "new")),
}


@pytest.mark.parametrize("op", sorted(PARENT_OPS))
def test_parent_mtime_ctime_change(mounted, op):
    """Every operation that adds or removes a directory entry updates the
    directory's mtime and ctime (POSIX)."""
    d = workdir(mounted)
    prep, fn = PARENT_OPS[op]
    if prep:
        prep(d)
    before = os.stat(d)
    clock_tick()
    fn(d)
    after = os.stat(d)
    assert after.st_mtime_ns > before.st_mtime_ns, "mtime unchanged"
    assert after.st_ctime_ns > before.st_ctime_ns, "ctime unchanged"


def test_child_changes_leave_parent_times(mounted):
    """Writing, truncating, chmod/chown and utimensat of a file, and
    lookups/readdir, change neither the parent's mtime nor its ctime."""
    d = workdir(mounted)
    write_file(d / "f", b"abc")
    before = os.stat(d)
    clock_tick()
    with open(d / "f", "r+b") as f:
        f.write(b"more data")
    os.truncate(d / "f", 1)
    os.chmod(d / "f", 0o600)
    os.chown(d / "f", os.geteuid(), os.getegid())
    os.utime(d / "f", ns=(OLD_NS, OLD_NS))
    os.stat(d / "f")
    os.listdir(d)
    after = os.stat(d)
    assert after.st_mtime_ns == before.st_mtime_ns
    assert after.st_ctime_ns == before.st_ctime_ns


# ---- names ---------------------------------------------------------------

def test_name_255_bytes_ok_256_enametoolong(mounted):
    """A name of exactly 255 bytes (NAME_MAX) works for create, mkdir,
    symlink, link, rename and lookup; 256 bytes is ENAMETOOLONG for each;
    multi-byte UTF-8 names count bytes, not characters."""
    d = workdir(mounted)
    n255 = "a" * 255
    n256 = "b" * 256
    write_file(d / n255, b"255")
    assert read_file(d / n255) == b"255"
    os.mkdir(d / ("d" * 255))
    os.symlink(n255, d / ("s" * 255))
    os.link(d / n255, d / ("h" * 255))
    os.rename(d / ("h" * 255), d / ("r" * 255))
    assert sorted(os.listdir(d)) == sorted(
        [n255, "d" * 255, "s" * 255, "r" * 255])
    assert os.readlink(d / ("s" * 255)) == n255
    for fn in (lambda p: os.open(p, os.O_CREAT | os.O_WRONLY, 0o644),
               os.mkdir, os.stat, lambda p: os.symlink("t", p),
               lambda p: os.link(d / n255, p), lambda p: os.mknod(p),
               lambda p: os.rename(d / n255, p)):
        assert_errno(errno.ENAMETOOLONG, fn, d / n256)
    u255 = "\u00e9" * 127 + "x"  # 2*127 + 1 bytes
    u256 = "\u00e9" * 128
    assert len(u255.encode()) == 255 and len(u256.encode()) == 256
    write_file(d / u255, b"u")
    assert u255 in os.listdir(d)
    assert_errno(errno.ENAMETOOLONG, write_file, d / u256)


def test_names_are_arbitrary_bytes(mounted):
    """Names are byte strings: any byte but '/' and NUL (invalid UTF-8,
    spaces, newlines, leading dashes, '...') is stored and listed back
    exactly."""
    d = workdir(mounted)
    names = [b"\xff\xfe\x80", b"a b", b"new\nline", b"-rf", b"...",
             b"..a", b".hidden", b"tab\there", b"\x01\x7f", b"x" * 200,
             "\u65e5\u672c".encode()]
    bd = os.fsencode(d)
    for i, n in enumerate(names):
        write_file(bd + b"/" + n, bytes([i]))
    assert sorted(os.listdir(bd)) == sorted(names)
    for i, n in enumerate(names):
        assert read_file(bd + b"/" + n) == bytes([i])


# ---- setattr: times ------------------------------------------------------

def test_utimensat_explicit_times(mounted):
    """utimensat with explicit times sets atime and mtime to the exact
    nanosecond values (also before 1970) and sets ctime to now."""
    d = workdir(mounted)
    write_file(d / "f", b"x")
    t0 = time.time_ns()
    utimensat(d / "f", OLD_NS, OLD_NS + 1_000_000_001)
    t1 = time.time_ns()
    st = os.stat(d / "f")
    assert st.st_atime_ns == OLD_NS
    assert st.st_mtime_ns == OLD_NS + 1_000_000_001
    assert_recent(st.st_ctime_ns, t0, t1, "ctime after utimensat")
    os.utime(d / "f", ns=(-86_400_000_000_000, 0))  # 1969-12-31
    st = os.stat(d / "f")
    assert st.st_atime_ns == -86_400_000_000_000
    assert st.st_mtime_ns == 0


def test_utimensat_now_and_omit(mounted):
    """UTIME_NOW sets a time to the current time, UTIME_OMIT leaves it
    unchanged; any change sets ctime to now; both UTIME_OMIT changes
    nothing at all, not even ctime."""
    d = workdir(mounted)
    write_file(d / "f", b"x")
    f = d / "f"
    utimensat(f, OLD_NS, OLD_NS)
    t0 = time.time_ns()
    utimensat(f, UTIME_NOW, UTIME_OMIT)
    t1 = time.time_ns()
    st = os.stat(f)
    assert_recent(st.st_atime_ns, t0, t1, "atime after UTIME_NOW")
    assert st.st_mtime_ns == OLD_NS
    assert_recent(st.st_ctime_ns, t0, t1, "ctime")

    utimensat(f, OLD_NS, OLD_NS)
    t0 = time.time_ns()
    utimensat(f, UTIME_OMIT, UTIME_NOW)
    t1 = time.time_ns()
    st = os.stat(f)
    assert st.st_atime_ns == OLD_NS
    assert_recent(st.st_mtime_ns, t0, t1, "mtime after UTIME_NOW")

    utimensat(f, UTIME_NOW, UTIME_NOW)
    st = os.stat(f)
    assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns

    utimensat(f, OLD_NS, OLD_NS + 5)
    before = os.stat(f)
    clock_tick()
    utimensat(f, UTIME_OMIT, UTIME_OMIT)
    after = os.stat(f)
    assert (after.st_atime_ns, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_atime_ns, before.st_mtime_ns, before.st_ctime_ns)


def test_utimensat_on_directory_and_fd(mounted):
    """Times can be set on a directory by path and on a file through its
    fd (futimens)."""
    d = workdir(mounted)
    os.mkdir(d / "sub")
    os.utime(d / "sub", ns=(OLD_NS, OLD_NS + 7))
    st = os.stat(d / "sub")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD_NS, OLD_NS + 7)
    write_file(d / "f")
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        os.utime(fd, ns=(OLD_NS + 1, OLD_NS + 2))
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD_NS + 1, OLD_NS + 2)


# ---- open / read / write -------------------------------------------------

def test_read_write_roundtrip(mounted):
    """Data written (sequentially and with pwrite at unaligned offsets)
    reads back byte-exact; st_size follows the highest byte written; a
    read at EOF returns b''; the file offset advances by the bytes
    written."""
    d = workdir(mounted)
    data = os.urandom(3 * BLOCK + 123)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)
        assert pread_all(fd, len(data), 0) == data
        os.pwrite(fd, b"PATCH", 4090)
        expect = data[:4090] + b"PATCH" + data[4095:]
        assert pread_all(fd, len(expect), 0) == expect
        assert os.fstat(fd).st_size == len(data)
        assert os.pread(fd, 10, len(data)) == b""
        assert os.pread(fd, 10, len(data) + 100000) == b""
        assert os.pread(fd, 10, len(data) - 3) == expect[-3:]
    finally:
        os.close(fd)
    assert read_file(d / "f") == expect


def test_write_updates_mtime_ctime_read_does_not(mounted):
    """write() updates mtime and ctime; read() changes neither."""
    d = workdir(mounted)
    write_file(d / "f", b"0123456789")
    st0 = os.stat(d / "f")
    clock_tick()
    with open(d / "f", "rb") as f:
        assert f.read() == b"0123456789"
    st1 = os.stat(d / "f")
    assert (st1.st_mtime_ns, st1.st_ctime_ns) == (st0.st_mtime_ns,
                                                  st0.st_ctime_ns)
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        os.pwrite(fd, b"x", 3)
    finally:
        os.close(fd)
    st2 = os.stat(d / "f")
    assert st2.st_mtime_ns > st1.st_mtime_ns
    assert st2.st_ctime_ns > st1.st_ctime_ns


def test_o_append(mounted):
    """With O_APPEND every write lands at the current end of file, also
    when another fd extended it meanwhile, and also for pwrite (Linux
    ignores pwrite's offset under O_APPEND); the offset ends at EOF."""
    d = workdir(mounted)
    write_file(d / "f", b"start")
    a = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    b = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(a, b"-a1")
        os.write(b, b"-b1")
        os.lseek(a, 0, os.SEEK_SET)
        os.write(a, b"-a2")
        assert os.lseek(a, 0, os.SEEK_CUR) == len(b"start-a1-b1-a2")
        os.pwrite(b, b"-pw", 0)
    finally:
        os.close(a)
        os.close(b)
    assert read_file(d / "f") == b"start-a1-b1-a2-pw"


def test_o_excl(mounted):
    """O_CREAT|O_EXCL creates a missing file; on an existing file, an
    existing directory, or a dangling symlink it fails with EEXIST and
    creates nothing (the symlink is not followed)."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    assert os.stat(d / "f").st_mode == stat.S_IFREG | 0o600
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    assert_errno(errno.EEXIST, os.open, d / "f", flags, 0o600)
    os.mkdir(d / "sub")
    assert_errno(errno.EEXIST, os.open, d / "sub", flags, 0o600)
    os.symlink("target", d / "dangling")
    assert_errno(errno.EEXIST, os.open, d / "dangling", flags, 0o600)
    assert not os.path.lexists(d / "target")


def test_o_creat_without_excl_opens_existing(mounted):
    """O_CREAT without O_EXCL on an existing file opens it unchanged
    (content and mode kept, the mode argument ignored)."""
    d = workdir(mounted)
    write_file(d / "f", b"keep", mode=0o640)
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o777)
    try:
        assert os.read(fd, 10) == b"keep"
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_mode == stat.S_IFREG | 0o640


def test_o_trunc(mounted):
    """O_TRUNC on a writable open empties the file (size 0, data gone)
    and updates mtime and ctime; inode and mode are kept."""
    d = workdir(mounted)
    write_file(d / "f", os.urandom(2 * BLOCK), mode=0o640)
    st0 = os.stat(d / "f")
    clock_tick()
    fd = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
    finally:
        os.close(fd)
    st1 = os.stat(d / "f")
    assert read_file(d / "f") == b"new"
    assert st1.st_ino == st0.st_ino
    assert st1.st_mode == stat.S_IFREG | 0o640
    assert st1.st_mtime_ns > st0.st_mtime_ns
    assert st1.st_ctime_ns > st0.st_ctime_ns


def test_o_direct_aligned_io(mounted):
    """O_DIRECT opens are accepted and 4 KiB-aligned reads and writes
    (aligned buffer, offset and length) work and agree with buffered
    I/O."""
    d = workdir(mounted)
    n = 8
    data = os.urandom(n * BLOCK)
    wbuf = mmap.mmap(-1, n * BLOCK)
    wbuf[:] = data
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        assert os.pwritev(fd, [wbuf], 0) == n * BLOCK
        assert os.pwritev(fd, [memoryview(wbuf)[:BLOCK]],
                          16 * BLOCK) == BLOCK
        rbuf = mmap.mmap(-1, n * BLOCK)
        assert os.preadv(fd, [rbuf], 0) == n * BLOCK
        assert rbuf[:] == data
        os.fsync(fd)
        rbuf.close()
    finally:
        os.close(fd)
        wbuf.close()
    got = read_file(d / "f")
    assert len(got) == 17 * BLOCK
    assert got[:n * BLOCK] == data
    assert got[n * BLOCK:16 * BLOCK] == bytes(8 * BLOCK)
    assert got[16 * BLOCK:] == data[:BLOCK]
    # an existing file opened O_DIRECT read-only, buffered writes seen
    with open(d / "f", "r+b") as f:
        f.seek(BLOCK)
        f.write(b"B" * BLOCK)
    fd = os.open(d / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        rbuf = mmap.mmap(-1, BLOCK)
        assert os.preadv(fd, [rbuf], BLOCK) == BLOCK
        assert rbuf[:] == b"B" * BLOCK
        rbuf.close()
    finally:
        os.close(fd)


def test_fsync_fdatasync_file_and_directory(mounted):
    """fsync and fdatasync return 0 on a written file's fd, on a
    read-only fd, and on a directory fd (O_DIRECTORY)."""
    d = workdir(mounted)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 10000)
        assert os.fsync(fd) is None
        assert os.fdatasync(fd) is None
    finally:
        os.close(fd)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    for p in (d, mounted.path):
        dfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert os.fsync(dfd) is None
            assert os.fdatasync(dfd) is None
        finally:
            os.close(dfd)


def test_size_and_blocks_after_write(mounted):
    """After writing 64 KiB and fsync, st_size is exact and st_blocks
    (512-byte units) covers the data; it is not wildly more."""
    d = workdir(mounted)
    write_file(d / "f", os.urandom(64 * KIB))
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == 64 * KIB
    assert 64 * KIB <= st.st_blocks * 512 <= 64 * KIB + 64 * KIB


# ---- statvfs -------------------------------------------------------------

def test_statvfs_sane(mounted):
    """statvfs: f_bsize and f_frsize positive, f_blocks > 0,
    f_bavail <= f_bfree <= f_blocks, f_namemax 255, and the same answer
    for any path inside the filesystem."""
    d = workdir(mounted)
    write_file(d / "f", b"x" * 10000)
    sv = os.statvfs(mounted.path)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert sv.f_blocks > 0
    assert 0 <= sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert sv.f_ffree <= sv.f_files or sv.f_files == 0
    assert sv.f_namemax == 255
    sv2 = os.statvfs(d / "f")
    assert (sv2.f_bsize, sv2.f_frsize, sv2.f_blocks, sv2.f_namemax) == (
        sv.f_bsize, sv.f_frsize, sv.f_blocks, sv.f_namemax)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        sv3 = os.fstatvfs(fd)
    finally:
        os.close(fd)
    assert sv3.f_namemax == 255 and sv3.f_blocks == sv.f_blocks


def test_read_on_directory_eisdir(mounted):
    """read() on a directory fd is EISDIR; opening a directory for
    writing is EISDIR."""
    d = workdir(mounted)
    fd = os.open(d, os.O_RDONLY)
    try:
        with raises_errno(errno.EISDIR):
            os.read(fd, 10)
    finally:
        os.close(fd)
    assert_errno(errno.EISDIR, os.open, d, os.O_WRONLY)
    assert_errno(errno.EISDIR, os.open, d, os.O_RDWR)
