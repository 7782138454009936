"""Helpers for the POSIX behaviour tests (test/posix).

Nothing here knows about sixfold: every helper is a plain Linux system
call (through `os` or ctypes), so the same test runs unchanged on the
sixfold mount and, with SIXFOLD_TEST_FALLBACK=1, on a plain ext4
directory.

- as_user(fn, ...): run fn in a forked child that has dropped to
  nobody/nogroup (uid/gid 65534, no supplementary groups) and return its
  result; an OSError in the child is raised again in the parent with the
  same errno, anything else as an AssertionError carrying the child's
  traceback.
- raises_errno(E): a context manager that requires an OSError with
  exactly errno E.
- renameat2, fallocate, utimensat (UTIME_NOW / UTIME_OMIT), getxattr /
  listxattr with a caller-sized buffer, getdents64 with a small buffer,
  and DirStream (opendir/readdir/telldir/seekdir/rewinddir) via ctypes.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import pickle
import platform
import select
import signal
import stat
import time
import traceback

import pytest

NOBODY = 65534
NOGROUP = 65534

FALLBACK = os.environ.get("SIXFOLD_TEST_FALLBACK") == "1"

# Tests that change owners, make device nodes or drop to nobody.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (chown, device nodes, setuid "
    "to nobody)")

KIB = 1 << 10
MIB = 1 << 20
TIB = 1 << 40
BLOCK = 4096

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# d_type values (<dirent.h>)
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = \
    0, 1, 2, 4, 6, 8, 10, 12


def dt_of_mode(mode):
    """The d_type readdir must give for an inode of this st_mode."""
    return {stat.S_IFIFO: DT_FIFO, stat.S_IFCHR: DT_CHR,
            stat.S_IFDIR: DT_DIR, stat.S_IFBLK: DT_BLK,
            stat.S_IFREG: DT_REG, stat.S_IFLNK: DT_LNK,
            stat.S_IFSOCK: DT_SOCK}[stat.S_IFMT(mode)]


_SYSCALLS = {
    "x86_64": {"renameat2": 316, "getdents64": 217},
    "aarch64": {"renameat2": 276, "getdents64": 61},
}

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                   use_errno=True)

libc.syscall.restype = ctypes.c_long
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int,
                           ctypes.c_longlong, ctypes.c_longlong]
libc.fallocate.restype = ctypes.c_int
for _f in (libc.getxattr, libc.lgetxattr):
    _f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                   ctypes.c_size_t]
    _f.restype = ctypes.c_ssize_t
for _f in (libc.listxattr, libc.llistxattr):
    _f.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    _f.restype = ctypes.c_ssize_t


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                        ctypes.c_char_p, ctypes.c_int]
libc.linkat.restype = ctypes.c_int
libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p,
                           ctypes.POINTER(_Timespec), ctypes.c_int]
libc.utimensat.restype = ctypes.c_int


def _check(ret, *names):
    """Raise OSError(errno) for a libc return of -1."""
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), *[os.fsdecode(n) for n in names])
    return ret


def _b(path):
    return os.fsencode(path)


def _syscall_nr(name):
    try:
        return _SYSCALLS[platform.machine()][name]
    except KeyError:
        raise RuntimeError(f"no syscall number for {name} on "
                           f"{platform.machine()}") from None


# ---- system calls Python's os module lacks -------------------------------

def renameat2(old, new, flags=0):
    """renameat2(AT_FDCWD, old, AT_FDCWD, new, flags) as a raw syscall."""
    nr = _syscall_nr("renameat2")
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(AT_FDCWD),
                       ctypes.c_char_p(_b(old)), ctypes.c_int(AT_FDCWD),
                       ctypes.c_char_p(_b(new)), ctypes.c_uint(flags))
    _check(ret, old, new)


def linkat(old, new, flags=0):
    """linkat(AT_FDCWD, old, AT_FDCWD, new, flags) (os.link calls plain
    link() when following symlinks, which on Linux does not follow)."""
    _check(libc.linkat(AT_FDCWD, _b(old), AT_FDCWD, _b(new), flags),
           old, new)


def fallocate(fd, mode, offset, length):
    """fallocate(2) with any mode (KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE)."""
    _check(libc.fallocate(fd, mode, offset, length))


def utimensat(path, atime, mtime, follow=True):
    """utimensat(AT_FDCWD, path, {atime, mtime}, flags).

    atime/mtime: nanoseconds since the epoch, UTIME_NOW or UTIME_OMIT.
    """
    def ts(v):
        if v in (UTIME_NOW, UTIME_OMIT):
            return _Timespec(0, v)
        return _Timespec(v // 1_000_000_000, v % 1_000_000_000)
    arr = (_Timespec * 2)(ts(atime), ts(mtime))
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    _check(libc.utimensat(AT_FDCWD, _b(path), arr, flags), path)


def getxattr_sized(path, name, size, follow=True):
    """getxattr with a buffer of exactly `size` bytes (size 0: the length
    query).  Returns (length, bytes) as the kernel gave them."""
    buf = ctypes.create_string_buffer(max(size, 1))
    fn = libc.getxattr if follow else libc.lgetxattr
    n = _check(fn(_b(path), _b(name), buf if size else None, size), path)
    return n, buf.raw[:n] if size else b""


def listxattr_sized(path, size, follow=True):
    """listxattr with a buffer of exactly `size` bytes (size 0: the
    length query).  Returns (length, raw NUL-separated bytes)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    fn = libc.listxattr if follow else libc.llistxattr
    n = _check(fn(_b(path), buf if size else None, size), path)
    return n, buf.raw[:n] if size else b""


def getdents(fd, bufsize=1024):
    """Every entry of the directory open at fd, by raw getdents64 calls
    with a small buffer (so a listing takes many calls, each resuming
    from the previous call's end), as (name, d_ino, d_off, d_type)."""
    nr = _syscall_nr("getdents64")
    buf = ctypes.create_string_buffer(bufsize)
    out = []
    while True:
        n = libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), buf,
                         ctypes.c_uint(bufsize))
        _check(n)
        if n == 0:
            return out
        raw = buf.raw[:n]
        pos = 0
        while pos < n:
            ino = int.from_bytes(raw[pos:pos + 8], "little")
            off = int.from_bytes(raw[pos + 8:pos + 16], "little",
                                 signed=True)
            reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
            dtype = raw[pos + 18]
            name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
            out.append((name, ino, off, dtype))
            pos += reclen


class _Dirent(ctypes.Structure):
    # glibc x86_64/aarch64 struct dirent (== dirent64)
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


libc.opendir.argtypes = [ctypes.c_char_p]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.readdir.restype = ctypes.POINTER(_Dirent)
libc.telldir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.seekdir.restype = None
libc.rewinddir.argtypes = [ctypes.c_void_p]
libc.rewinddir.restype = None
libc.closedir.argtypes = [ctypes.c_void_p]
libc.closedir.restype = ctypes.c_int


class DirStream:
    """A libc DIR* (opendir/readdir/telldir/seekdir/rewinddir/closedir).

    Use as a context manager; read() returns (name, d_ino, d_type) or
    None at the end of the directory.
    """

    def __init__(self, path):
        self.path = path
        self.dirp = libc.opendir(_b(path))
        if not self.dirp:
            _check(-1, path)

    def read(self):
        ctypes.set_errno(0)
        ent = libc.readdir(self.dirp)
        if not ent:
            e = ctypes.get_errno()
            if e:
                raise OSError(e, os.strerror(e), os.fsdecode(self.path))
            return None
        d = ent.contents
        return d.d_name, d.d_ino, d.d_type

    def read_all(self):
        out = []
        while (ent := self.read()) is not None:
            out.append(ent)
        return out

    def tell(self):
        return libc.telldir(self.dirp)

    def seek(self, pos):
        libc.seekdir(self.dirp, pos)

    def rewind(self):
        libc.rewinddir(self.dirp)

    def close(self):
        if self.dirp:
            libc.closedir(self.dirp)
            self.dirp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- running code as an unprivileged user --------------------------------

CHILD_TIMEOUT = 60  # seconds


def as_user(fn, *args, uid=NOBODY, gid=NOGROUP, groups=(), cwd=None,
            **kw):
    """Run fn(*args, **kw) in a forked child with the given credentials.

    The child first chdir()s to cwd (still as root, so cwd's ancestors
    need not be searchable by the user: pass relative paths to fn), then
    calls setgroups(groups), setgid(gid), setuid(uid).  fn's return value
    must pickle.  An OSError in the child is raised again here with the
    same errno; any other exception becomes an AssertionError with the
    child's traceback.  The child is always reaped.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(rfd)
            try:
                if cwd is not None:
                    os.chdir(cwd)
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                assert os.geteuid() == uid and os.getegid() == gid
                res = ("ok", fn(*args, **kw))
            except OSError as e:
                res = ("oserror", e.errno, e.strerror,
                       None if e.filename is None else str(e.filename),
                       traceback.format_exc())
            except BaseException:  # noqa: B036 - report everything
                res = ("exc", traceback.format_exc())
            try:
                data = pickle.dumps(res)
            except Exception:
                data = pickle.dumps(("exc", "unpicklable result: "
                                     + traceback.format_exc()))
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"child as uid {uid} timed out")
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError(f"child as uid {uid} died without a result")
    res = pickle.loads(b"".join(chunks))
    if res[0] == "ok":
        return res[1]
    if res[0] == "oserror":
        _, err, msg, fname, tb = res
        e = OSError(err, msg) if fname is None else OSError(err, msg, fname)
        e.child_traceback = tb
        raise e
    raise AssertionError(f"in child as uid {uid}:\n{res[1]}")


def errno_as_user(fn, *args, **kw):
    """as_user(fn, ...) and return the errno it failed with, or 0."""
    try:
        as_user(fn, *args, **kw)
    except OSError as e:
        return e.errno
    return 0


# ---- assertions ----------------------------------------------------------

def ename(e):
    return errno.errorcode.get(e, str(e)) if e else "success"


@contextlib.contextmanager
def raises_errno(expected):
    """Require the block to raise OSError with exactly errno `expected`."""
    try:
        yield
    except OSError as e:
        if e.errno != expected:
            raise AssertionError(
                f"expected {ename(expected)}, got {ename(e.errno)}: {e}"
            ) from e
    else:
        raise AssertionError(f"expected {ename(expected)}, "
                             f"but the call succeeded")


def assert_errno(expected, fn, *args, **kw):
    """Call fn(*args, **kw) and require OSError with errno `expected`."""
    with raises_errno(expected):
        fn(*args, **kw)


# ---- small file helpers --------------------------------------------------

def clock_tick():
    """Sleep long enough that the next timestamp the filesystem takes is
    strictly later than any it took before (covers a coarse clock tick).
    Timestamps are only compared, never measured."""
    time.sleep(0.025)


def mkdir(path, mode=0o755):
    """mkdir then chmod to exactly `mode` (the umask does not apply)."""
    os.mkdir(path)
    os.chmod(path, mode)
    return path


def workdir(mount, name="w", mode=0o755):
    """A fresh directory `name` in the mount's root, chmod'ed to mode."""
    return mkdir(mount.path / name, mode)


def write_file(path, data=b"", mode=0o644):
    """Create or replace path with data and chmod it to exactly mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def pread_all(fd, length, offset):
    """Read exactly `length` bytes at offset (short only at EOF)."""
    out = bytearray()
    while len(out) < length:
        chunk = os.pread(fd, length - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@contextlib.contextmanager
def umask(mask):
    """Set the process umask for the block, then restore it."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def assert_recent(ts_ns, t0_ns, t1_ns, what="timestamp"):
    """ts_ns lies within [t0, t1] widened by a second for clock
    granularity (a coarse clock lags; this is not a timing check)."""
    slack = 1_000_000_000
    assert t0_ns - slack <= ts_ns <= t1_ns + slack, (
        f"{what} {ts_ns} not within [{t0_ns}, {t1_ns}] (+-1 s)")


# ---- the `mounted` these tests see --------------------------------------
# Every test file of the suite shares one mount (a mkfs and a mount per
# test would cost more than the tests): each test gets a fresh directory
# of it as its `mounted.path`; the shared mount is unmounted and fsck'ed
# clean at the end of the file (test/conftest.py, shared_mount).  Each
# test module imports this fixture, which overrides conftest's `mounted`.

class SubMount:
    """The `mounted` a POSIX test sees: `path` is its own directory."""

    def __init__(self, mount, path):
        self.mount = mount
        self.path = path
        self.fallback = mount.fallback


_dirs = itertools.count()


@pytest.fixture
def mounted(shared_mount):
    path = shared_mount.path / f"t{next(_dirs)}"
    path.mkdir()
    os.chmod(path, 0o755)
    return SubMount(shared_mount, path)
