"""Exact errno values, as Linux gives them, for failing calls on the
mounted filesystem; one parametrized case per (errno, call).

Covers ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, ELOOP, ENAMETOOLONG,
EINVAL, EBUSY, EBADF, ESPIPE, ENXIO, ENODATA and EPERM as root; EACCES
and EPERM as the unprivileged user nobody; EXDEV for rename and link
between the mount and another filesystem.  After every failing call the
test tree must be exactly as it was (a failed call changes nothing).
"""

import errno
import os
import shutil
import stat
import tempfile

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (RENAME_EXCHANGE, RENAME_NOREPLACE, UTIME_NOW,
                        as_user, mkdir, read_file, renameat2, utimensat,
                        needs_root, workdir, write_file)

E = errno


def build_tree(mounted):
    """The tree every case starts from, in a world-accessible dir."""
    d = workdir(mounted, "t", 0o777)
    write_file(d / "file", b"data", mode=0o644)
    os.mkdir(d / "empty")
    os.makedirs(d / "full" / "child")
    os.symlink("loop", d / "loop")
    os.symlink("missing", d / "dangling")
    os.symlink("empty", d / "sl-dir")
    os.symlink("file", d / "sl-file")
    os.mkfifo(d / "fifo")
    return d


def snapshot(d):
    """{relative path: (mode, size, nlink, uid, gid)} of the whole tree."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, d)] = (st.st_mode, st.st_size,
                                          st.st_nlink, st.st_uid, st.st_gid)
    return out


def with_fd(path, flags, fn):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


N256 = "n" * 256
WR = os.O_WRONLY
CR = os.O_CREAT | os.O_WRONLY

# (id, errno, fn(d)) -- d is the tree's pathlib.Path; run as root
ROOT_CASES = [
    # ENOENT
    ("stat-missing", E.ENOENT, lambda d: os.stat(d / "nope")),
    ("open-missing", E.ENOENT, lambda d: os.open(d / "nope", os.O_RDONLY)),
    ("open-empty-path", E.ENOENT, lambda d: os.open("", os.O_RDONLY)),
    ("creat-in-missing-dir", E.ENOENT,
     lambda d: os.open(d / "nope" / "f", CR, 0o644)),
    ("unlink-missing", E.ENOENT, lambda d: os.unlink(d / "nope")),
    ("rmdir-missing", E.ENOENT, lambda d: os.rmdir(d / "nope")),
    ("mkdir-in-missing-dir", E.ENOENT, lambda d: os.mkdir(d / "nope" / "x")),
    ("rename-missing", E.ENOENT, lambda d: os.rename(d / "nope", d / "x")),
    ("link-missing", E.ENOENT, lambda d: os.link(d / "nope", d / "x")),
    ("readlink-missing", E.ENOENT, lambda d: os.readlink(d / "nope")),
    ("chmod-missing", E.ENOENT, lambda d: os.chmod(d / "nope", 0o644)),
    ("chown-missing", E.ENOENT, lambda d: os.chown(d / "nope", 1, 1)),
    ("truncate-missing", E.ENOENT, lambda d: os.truncate(d / "nope", 0)),
    ("utime-missing", E.ENOENT, lambda d: os.utime(d / "nope")),
    ("open-dangling", E.ENOENT,
     lambda d: os.open(d / "dangling", os.O_RDONLY)),
    ("getxattr-missing-file", E.ENOENT,
     lambda d: os.getxattr(d / "nope", "user.x")),
    # EEXIST
    ("mkdir-over-file", E.EEXIST, lambda d: os.mkdir(d / "file")),
    ("mkdir-over-dir", E.EEXIST, lambda d: os.mkdir(d / "empty")),
    ("mkdir-over-dangling", E.EEXIST, lambda d: os.mkdir(d / "dangling")),
    ("excl-over-file", E.EEXIST,
     lambda d: os.open(d / "file", CR | os.O_EXCL, 0o644)),
    ("excl-over-symlink", E.EEXIST,
     lambda d: os.open(d / "sl-file", CR | os.O_EXCL, 0o644)),
    ("link-over-existing", E.EEXIST,
     lambda d: os.link(d / "file", d / "empty")),
    ("symlink-over-existing", E.EEXIST,
     lambda d: os.symlink("x", d / "file")),
    ("mknod-over-existing", E.EEXIST,
     lambda d: os.mknod(d / "fifo", stat.S_IFIFO | 0o644)),
    ("rename-noreplace", E.EEXIST,
     lambda d: renameat2(d / "file", d / "sl-file", RENAME_NOREPLACE)),
    # ENOTEMPTY
    ("rmdir-non-empty", E.ENOTEMPTY, lambda d: os.rmdir(d / "full")),
    ("rename-over-non-empty", E.ENOTEMPTY,
     lambda d: os.rename(d / "empty", d / "full")),
    # EISDIR
    ("open-dir-wronly", E.EISDIR, lambda d: os.open(d / "empty", WR)),
    ("open-dir-rdwr", E.EISDIR, lambda d: os.open(d / "empty", os.O_RDWR)),
    ("creat-on-dir", E.EISDIR, lambda d: os.open(d / "empty", CR, 0o644)),
    ("unlink-dir", E.EISDIR, lambda d: os.unlink(d / "empty")),
    ("rename-file-over-dir", E.EISDIR,
     lambda d: os.rename(d / "file", d / "empty")),
    ("truncate-dir", E.EISDIR, lambda d: os.truncate(d / "empty", 0)),
    ("read-dir-fd", E.EISDIR,
     lambda d: with_fd(d / "empty", os.O_RDONLY, lambda fd: os.read(fd, 1))),
    # ENOTDIR
    ("stat-through-file", E.ENOTDIR, lambda d: os.stat(d / "file" / "x")),
    ("creat-through-file", E.ENOTDIR,
     lambda d: os.open(d / "file" / "x", CR, 0o644)),
    ("mkdir-through-file", E.ENOTDIR, lambda d: os.mkdir(d / "file" / "x")),
    ("rmdir-file", E.ENOTDIR, lambda d: os.rmdir(d / "file")),
    ("rmdir-symlink-to-dir", E.ENOTDIR, lambda d: os.rmdir(d / "sl-dir")),
    ("rename-dir-over-file", E.ENOTDIR,
     lambda d: os.rename(d / "empty", d / "file")),
    ("o-directory-on-file", E.ENOTDIR,
     lambda d: os.open(d / "file", os.O_RDONLY | os.O_DIRECTORY)),
    ("trailing-slash-file", E.ENOTDIR, lambda d: os.stat(f"{d}/file/")),
    ("unlink-trailing-slash", E.ENOTDIR, lambda d: os.unlink(f"{d}/file/")),
    ("listdir-file", E.ENOTDIR, lambda d: os.listdir(d / "file")),
    # ELOOP
    ("stat-loop", E.ELOOP, lambda d: os.stat(d / "loop")),
    ("open-loop", E.ELOOP, lambda d: os.open(d / "loop", os.O_RDONLY)),
    ("creat-loop", E.ELOOP, lambda d: os.open(d / "loop", CR, 0o644)),
    ("mkdir-under-loop", E.ELOOP, lambda d: os.mkdir(d / "loop" / "x")),
    ("nofollow-symlink", E.ELOOP,
     lambda d: os.open(d / "sl-file", os.O_RDONLY | os.O_NOFOLLOW)),
    # ENAMETOOLONG
    ("stat-256", E.ENAMETOOLONG, lambda d: os.stat(d / N256)),
    ("creat-256", E.ENAMETOOLONG, lambda d: os.open(d / N256, CR, 0o644)),
    ("mkdir-256", E.ENAMETOOLONG, lambda d: os.mkdir(d / N256)),
    ("rename-to-256", E.ENAMETOOLONG,
     lambda d: os.rename(d / "file", d / N256)),
    ("symlink-target-4096", E.ENAMETOOLONG,
     lambda d: os.symlink("t" * 4096, d / "sl-new")),
    ("path-over-path-max", E.ENAMETOOLONG,
     lambda d: os.stat(str(d) + "/x" * 2100)),
    # EINVAL
    ("rename-into-own-subdir", E.EINVAL,
     lambda d: os.rename(d / "full", d / "full" / "child" / "x")),
    ("readlink-not-symlink", E.EINVAL, lambda d: os.readlink(d / "file")),
    ("rmdir-dot", E.EINVAL, lambda d: os.rmdir(f"{d}/empty/.")),
    ("ftruncate-rdonly", E.EINVAL,
     lambda d: with_fd(d / "file", os.O_RDONLY,
                       lambda fd: os.ftruncate(fd, 0))),
    ("truncate-negative", E.EINVAL, lambda d: os.truncate(d / "file", -1)),
    ("lseek-negative", E.EINVAL,
     lambda d: with_fd(d / "file", os.O_RDONLY,
                       lambda fd: os.lseek(fd, -1, os.SEEK_SET))),
    ("lseek-bad-whence", E.EINVAL,
     lambda d: with_fd(d / "file", os.O_RDONLY,
                       lambda fd: os.lseek(fd, 0, 77))),
    ("exchange-and-noreplace", E.EINVAL,
     lambda d: renameat2(d / "file", d / "sl-file",
                         RENAME_EXCHANGE | RENAME_NOREPLACE)),
    # EBUSY, EPERM, EBADF, ESPIPE, ENXIO, ENODATA
    ("rename-dot", E.EBUSY, lambda d: os.rename(f"{d}/empty/.", d / "x")),
    ("link-dir", E.EPERM, lambda d: os.link(d / "empty", d / "x")),
    ("write-rdonly-fd", E.EBADF,
     lambda d: with_fd(d / "file", os.O_RDONLY,
                       lambda fd: os.write(fd, b"x"))),
    ("read-wronly-fd", E.EBADF,
     lambda d: with_fd(d / "file", WR, lambda fd: os.read(fd, 1))),
    ("lseek-fifo", E.ESPIPE,
     lambda d: with_fd(d / "fifo", os.O_RDWR | os.O_NONBLOCK,
                       lambda fd: os.lseek(fd, 0, os.SEEK_SET))),
    ("seek-data-past-eof", E.ENXIO,
     lambda d: with_fd(d / "file", os.O_RDONLY,
                       lambda fd: os.lseek(fd, 100, os.SEEK_DATA))),
    ("getxattr-unset", E.ENODATA,
     lambda d: os.getxattr(d / "file", "user.unset")),
]


@pytest.mark.parametrize("case", ROOT_CASES, ids=[c[0] for c in ROOT_CASES])
def test_errno_as_root(mounted, case):
    """The call fails with exactly this errno (Linux), changing
    nothing."""
    _, expected, fn = case
    d = build_tree(mounted)
    before = snapshot(d)
    with pytest.raises(OSError) as ei:
        fn(d)
    got = ei.value.errno
    assert got == expected, (f"expected {E.errorcode[expected]}, got "
                             f"{E.errorcode.get(got, got)}: {ei.value}")
    assert snapshot(d) == before


def build_user_tree(mounted):
    """A tree for nobody: root's private and read-only directories, a
    mode 000 file, a sticky directory with another user's file."""
    d = build_tree(mounted)
    mkdir(d / "private", 0o700)
    write_file(d / "private" / "f", b"p", mode=0o666)
    mkdir(d / "xonly", 0o711)
    write_file(d / "xonly" / "f", b"x", mode=0o644)
    mkdir(d / "ro", 0o755)
    write_file(d / "ro" / "f", b"r", mode=0o666)
    write_file(d / "locked", b"l", mode=0)
    write_file(d / "rootrw", b"w", mode=0o666)
    write_file(d / "mine", b"m", mode=0o644)
    os.chown(d / "mine", 65534, 65534)
    mkdir(d / "sticky", 0o1777)
    write_file(d / "sticky" / "theirs", b"t", mode=0o666)
    os.chown(d / "sticky" / "theirs", 4242, 4242)
    return d


# (id, errno, fn()) -- run as nobody with cwd = the tree
USER_CASES = [
    # EACCES
    ("open-mode-000", E.EACCES, lambda: os.open("locked", os.O_RDONLY)),
    ("write-open-mode-000", E.EACCES, lambda: os.open("locked", WR)),
    ("open-in-unsearchable-dir", E.EACCES,
     lambda: os.open("private/f", os.O_RDONLY)),
    ("stat-in-unsearchable-dir", E.EACCES, lambda: os.stat("private/f")),
    ("chdir-unsearchable", E.EACCES, lambda: os.chdir("private")),
    ("list-unreadable-dir", E.EACCES, lambda: os.listdir("xonly")),
    ("create-in-ro-dir", E.EACCES,
     lambda: os.open("ro/new", CR, 0o644)),
    ("unlink-in-ro-dir", E.EACCES, lambda: os.unlink("ro/f")),
    ("mkdir-in-ro-dir", E.EACCES, lambda: os.mkdir("ro/new")),
    ("rename-out-of-ro-dir", E.EACCES, lambda: os.rename("ro/f", "moved")),
    ("truncate-unwritable", E.EACCES, lambda: os.truncate("file", 0)),
    ("utime-now-unwritable", E.EACCES,
     lambda: utimensat("file", UTIME_NOW, UTIME_NOW)),
    ("setxattr-unwritable", E.EACCES,
     lambda: os.setxattr("file", "user.x", b"v")),
    # EPERM
    ("chmod-not-owner", E.EPERM, lambda: os.chmod("rootrw", 0o600)),
    ("chown-give-away", E.EPERM, lambda: os.chown("mine", 0, -1)),
    ("chgrp-not-member", E.EPERM, lambda: os.chown("mine", -1, 0)),
    ("chown-not-owner", E.EPERM, lambda: os.chown("rootrw", 65534, 65534)),
    ("utime-explicit-not-owner", E.EPERM,
     lambda: utimensat("rootrw", 10**18, 10**18)),
    ("sticky-unlink", E.EPERM, lambda: os.unlink("sticky/theirs")),
    ("sticky-rename", E.EPERM,
     lambda: os.rename("sticky/theirs", "sticky/x")),
    ("mknod-chr", E.EPERM,
     lambda: os.mknod("dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))),
    ("link-dir-as-user", E.EPERM, lambda: os.link("empty", "x")),
]


@needs_root
@pytest.mark.parametrize("case", USER_CASES, ids=[c[0] for c in USER_CASES])
def test_errno_as_nobody(mounted, case):
    """Run as uid/gid 65534: the call fails with exactly this errno
    (Linux permission rules), changing nothing."""
    _, expected, fn = case
    d = build_user_tree(mounted)
    before = snapshot(d)
    with pytest.raises(OSError) as ei:
        as_user(fn, cwd=d)
    got = ei.value.errno
    assert got == expected, (f"expected {E.errorcode[expected]}, got "
                             f"{E.errorcode.get(got, got)}: {ei.value}")
    assert snapshot(d) == before


def other_filesystem_dir(mounted):
    """A writable directory on a filesystem other than the mount's."""
    dev = os.stat(mounted.path).st_dev
    for base in (tempfile.gettempdir(), "/dev/shm", "/var/tmp", "/run"):
        try:
            if (os.stat(base).st_dev != dev
                    and os.access(base, os.W_OK | os.X_OK)):
                return base
        except OSError:
            continue
    pytest.skip("no writable directory outside the mount's filesystem "
                "(the fallback directory shares its filesystem with them)")


def test_exdev_between_filesystems(mounted):
    """rename and link between the mount and another filesystem fail
    with EXDEV, both ways, and leave both sides unchanged."""
    base = other_filesystem_dir(mounted)
    d = workdir(mounted)
    write_file(d / "inside", b"in")
    other = tempfile.mkdtemp(prefix="sixfold-posix-exdev-", dir=base)
    try:
        write_file(os.path.join(other, "outside"), b"out")
        os.mkdir(os.path.join(other, "outdir"))
        for fn in (
                lambda: os.rename(d / "inside", os.path.join(other, "x")),
                lambda: os.rename(os.path.join(other, "outside"), d / "x"),
                lambda: os.rename(os.path.join(other, "outdir"), d / "y"),
                lambda: os.link(d / "inside", os.path.join(other, "x")),
                lambda: os.link(os.path.join(other, "outside"), d / "x"),
                lambda: renameat2(d / "inside",
                                  os.path.join(other, "outside"),
                                  RENAME_EXCHANGE)):
            with pytest.raises(OSError) as ei:
                fn()
            assert ei.value.errno == E.EXDEV, ei.value
        assert os.listdir(d) == ["inside"]
        assert sorted(os.listdir(other)) == ["outdir", "outside"]
        assert read_file(d / "inside") == b"in"
    finally:
        shutil.rmtree(other)
