"""Extended attributes (user.* namespace) on the mounted filesystem.

Covers: set/get/list/remove on files and directories, exact binary
values (NUL bytes, empty values, values of a few KiB), replacing a value
by a shorter or longer one, XATTR_CREATE on an existing name (EEXIST),
XATTR_REPLACE on a missing one (ENODATA), get/remove of a missing name
(ENODATA), ERANGE for a too-small get or list buffer and the size
queries (size 0), many attributes on one inode, names of 255 bytes
(longer or empty: ERANGE), values over 64 KiB (E2BIG), an unknown
namespace (EOPNOTSUPP), user.* on symlinks and FIFOs (EPERM), xattrs
shared by hard links and kept across rename, fsetxattr/fgetxattr on an
fd, ctime (not mtime) updated, and read/write permission for a non-root
user (EACCES).
"""

import errno
import os
import stat

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (as_user, assert_errno, clock_tick, errno_as_user,
                        getxattr_sized, listxattr_sized, needs_root,
                        read_file, workdir, write_file)


def user_names(path, follow=True):
    return sorted(n for n in os.listxattr(path, follow_symlinks=follow)
                  if n.startswith("user."))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_xattr_set_get_list_remove(mounted, kind):
    """user.* attributes can be set, read back exactly, listed and
    removed on regular files and directories."""
    d = workdir(mounted)
    p = d / "x"
    if kind == "file":
        write_file(p, b"data")
    else:
        os.mkdir(p)
    assert user_names(p) == []
    os.setxattr(p, "user.one", b"1")
    os.setxattr(p, "user.two", b"\x00binary\xff\x00")
    assert os.getxattr(p, "user.one") == b"1"
    assert os.getxattr(p, "user.two") == b"\x00binary\xff\x00"
    assert user_names(p) == ["user.one", "user.two"]
    os.removexattr(p, "user.one")
    assert user_names(p) == ["user.two"]
    assert_errno(errno.ENODATA, os.getxattr, p, "user.one")
    if kind == "file":
        assert read_file(p) == b"data"


def test_xattr_replace_values(mounted):
    """Setting an existing name replaces its value, whether the new one
    is shorter, longer or empty."""
    d = workdir(mounted)
    p = write_file(d / "f")
    for value in (b"a" * 100, b"b", b"c" * 2000, b"", b"d" * 10):
        os.setxattr(p, "user.v", value)
        assert os.getxattr(p, "user.v") == value
    assert user_names(p) == ["user.v"]


def test_xattr_empty_value(mounted):
    """An empty value is a real attribute: listed, and getxattr returns
    length 0 (not ENODATA)."""
    d = workdir(mounted)
    p = write_file(d / "f")
    os.setxattr(p, "user.empty", b"")
    assert os.getxattr(p, "user.empty") == b""
    assert getxattr_sized(p, "user.empty", 0) == (0, b"")
    assert user_names(p) == ["user.empty"]


def test_xattr_create_and_replace_flags(mounted):
    """XATTR_CREATE fails with EEXIST when the name exists (value kept);
    XATTR_REPLACE fails with ENODATA when it does not (nothing created);
    each succeeds in the other case."""
    d = workdir(mounted)
    p = write_file(d / "f")
    os.setxattr(p, "user.a", b"first", os.XATTR_CREATE)
    assert_errno(errno.EEXIST, os.setxattr, p, "user.a", b"second",
                 os.XATTR_CREATE)
    assert os.getxattr(p, "user.a") == b"first"
    assert_errno(errno.ENODATA, os.setxattr, p, "user.b", b"x",
                 os.XATTR_REPLACE)
    assert user_names(p) == ["user.a"]
    os.setxattr(p, "user.a", b"third", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.a") == b"third"


def test_xattr_missing_enodata(mounted):
    """getxattr and removexattr of a name that is not set are ENODATA,
    also after the name was removed."""
    d = workdir(mounted)
    p = write_file(d / "f")
    assert_errno(errno.ENODATA, os.getxattr, p, "user.nope")
    assert_errno(errno.ENODATA, os.removexattr, p, "user.nope")
    os.setxattr(p, "user.gone", b"x")
    os.removexattr(p, "user.gone")
    assert_errno(errno.ENODATA, os.removexattr, p, "user.gone")
    assert_errno(errno.ENODATA, getxattr_sized, p, "user.gone", 0)


def test_xattr_erange_small_buffers(mounted):
    """getxattr with size 0 returns the value's length; a buffer one byte
    too small is ERANGE; the exact size works.  The same for listxattr,
    whose list is the NUL-terminated names."""
    d = workdir(mounted)
    p = write_file(d / "f")
    value = os.urandom(300)
    os.setxattr(p, "user.val", value)
    os.setxattr(p, "user.other", b"o")
    assert getxattr_sized(p, "user.val", 0)[0] == 300
    assert_errno(errno.ERANGE, getxattr_sized, p, "user.val", 299)
    assert_errno(errno.ERANGE, getxattr_sized, p, "user.val", 1)
    assert getxattr_sized(p, "user.val", 300) == (300, value)
    assert getxattr_sized(p, "user.val", 4096) == (300, value)
    need, _ = listxattr_sized(p, 0)
    n, raw = listxattr_sized(p, need)
    assert n == need
    names = raw.split(b"\0")
    assert names[-1] == b"" and sorted(names[:-1]) == sorted(
        os.fsencode(x) for x in os.listxattr(p))
    assert {b"user.val", b"user.other"} <= set(names)
    assert_errno(errno.ERANGE, listxattr_sized, p, need - 1)


def test_xattr_values_of_a_few_kib(mounted):
    """Values of 1, 2 and 3 KiB less the name (on separate files) are
    stored and read back exactly.  A value must fit one metadata item
    (sixfold: 3072 bytes for name and value, as ext4's fit one block):
    a bigger one is refused with ENOSPC, as ext4 does past its block."""
    d = workdir(mounted)
    for size in (1024, 2048, 3072 - 4 - len("user.big")):
        p = write_file(d / f"f{size}")
        value = os.urandom(size)
        os.setxattr(p, "user.big", value)
        assert os.getxattr(p, "user.big") == value
        assert getxattr_sized(p, "user.big", 0)[0] == size


def test_many_xattrs(mounted):
    """64 attributes on one inode are all listed and each reads back its
    own value; removing half leaves exactly the other half."""
    d = workdir(mounted)
    p = write_file(d / "f")
    names = [f"user.attr{i:02d}" for i in range(64)]
    for i, n in enumerate(names):
        os.setxattr(p, n, b"v%02d" % i)
    assert user_names(p) == names
    for i, n in enumerate(names):
        assert os.getxattr(p, n) == b"v%02d" % i
    for n in names[::2]:
        os.removexattr(p, n)
    assert user_names(p) == names[1::2]


def test_xattr_name_and_size_limits(mounted):
    """A name of 255 bytes (XATTR_NAME_MAX) works; 256 bytes or an empty
    name is ERANGE; a value over 64 KiB (XATTR_SIZE_MAX) is E2BIG; an
    unknown namespace prefix is EOPNOTSUPP."""
    d = workdir(mounted)
    p = write_file(d / "f")
    n255 = "user." + "n" * 250
    os.setxattr(p, n255, b"long name")
    assert os.getxattr(p, n255) == b"long name"
    assert n255 in user_names(p)
    assert_errno(errno.ERANGE, os.setxattr, p, n255 + "x", b"v")
    assert_errno(errno.ERANGE, os.getxattr, p, n255 + "x")
    assert_errno(errno.ERANGE, os.setxattr, p, "", b"v")
    assert_errno(errno.E2BIG, os.setxattr, p, "user.huge",
                 b"x" * (64 * 1024 + 1))
    assert_errno(errno.EOPNOTSUPP, os.setxattr, p, "nonamespace", b"v")
    assert_errno(errno.EOPNOTSUPP, os.getxattr, p, "bogus.name")
    assert user_names(p) == [n255]


def test_user_xattr_on_symlink_and_fifo_eperm(mounted):
    """user.* attributes exist only on regular files and directories:
    lsetxattr on a symlink and setxattr on a FIFO are EPERM; reading one
    there is ENODATA."""
    d = workdir(mounted)
    write_file(d / "target")
    os.symlink("target", d / "sl")
    os.mkfifo(d / "fifo")
    assert_errno(errno.EPERM, os.setxattr, d / "sl", "user.x", b"v",
                 follow_symlinks=False)
    assert_errno(errno.ENODATA, os.getxattr, d / "sl", "user.x",
                 follow_symlinks=False)
    assert_errno(errno.EPERM, os.setxattr, d / "fifo", "user.x", b"v")
    # through the link, the target gets it
    os.setxattr(d / "sl", "user.x", b"t")
    assert os.getxattr(d / "target", "user.x") == b"t"


def test_xattr_shared_by_links_and_kept_by_rename(mounted):
    """Attributes belong to the inode: visible through every hard link
    and kept across a rename."""
    d = workdir(mounted)
    p = write_file(d / "a")
    os.setxattr(p, "user.k", b"v")
    os.link(p, d / "b")
    assert os.getxattr(d / "b", "user.k") == b"v"
    os.setxattr(d / "b", "user.k2", b"v2")
    os.rename(d / "a", d / "c")
    assert user_names(d / "c") == ["user.k", "user.k2"]
    assert os.getxattr(d / "c", "user.k2") == b"v2"


def test_xattr_through_fd(mounted):
    """fsetxattr / fgetxattr / flistxattr / fremovexattr work on an open
    fd, also after the file was unlinked."""
    d = workdir(mounted)
    p = write_file(d / "f")
    fd = os.open(p, os.O_RDWR)
    try:
        os.setxattr(fd, "user.fd", b"via fd")
        assert os.getxattr(p, "user.fd") == b"via fd"
        os.unlink(p)
        os.setxattr(fd, "user.after", b"unlinked")
        assert os.getxattr(fd, "user.after") == b"unlinked"
        assert sorted(n for n in os.listxattr(fd)
                      if n.startswith("user.")) == ["user.after", "user.fd"]
        os.removexattr(fd, "user.fd")
        assert_errno(errno.ENODATA, os.getxattr, fd, "user.fd")
    finally:
        os.close(fd)


def test_xattr_changes_ctime_not_mtime(mounted):
    """setxattr and removexattr update the inode's ctime, not its
    mtime."""
    d = workdir(mounted)
    p = write_file(d / "f")
    for op in (lambda: os.setxattr(p, "user.t", b"1"),
               lambda: os.removexattr(p, "user.t")):
        st0 = os.stat(p)
        clock_tick()
        op()
        st1 = os.stat(p)
        assert st1.st_ctime_ns > st0.st_ctime_ns
        assert st1.st_mtime_ns == st0.st_mtime_ns


@needs_root
def test_xattr_permissions_non_root(mounted):
    """For a non-root user, reading a user.* attribute needs read
    permission on the file and setting/removing needs write permission:
    EACCES otherwise."""
    d = workdir(mounted, mode=0o777)
    write_file(d / "ro", b"", mode=0o644)
    write_file(d / "rw", b"", mode=0o666)
    write_file(d / "none", b"", mode=0o600)
    for n in ("ro", "rw", "none"):
        os.setxattr(d / n, "user.k", b"v")
    assert as_user(os.getxattr, "ro", "user.k", cwd=d) == b"v"
    assert errno_as_user(os.setxattr, "ro", "user.k", b"w",
                         cwd=d) == errno.EACCES
    assert errno_as_user(os.removexattr, "ro", "user.k",
                         cwd=d) == errno.EACCES
    assert errno_as_user(os.getxattr, "none", "user.k",
                         cwd=d) == errno.EACCES
    as_user(os.setxattr, "rw", "user.k", b"by nobody", cwd=d)
    as_user(os.setxattr, "rw", "user.new", b"", cwd=d)
    assert os.getxattr(d / "rw", "user.k") == b"by nobody"
    assert os.getxattr(d / "ro", "user.k") == b"v"
    assert stat.S_IMODE(os.stat(d / "rw").st_mode) == 0o666
