"""Hard links, symbolic links and readlink on the mounted filesystem.

Covers: link (shared inode and data, nlink counts up and down, across
directories, ctime), many links, link to a directory (EPERM), link
errors, linkat with and without AT_SYMLINK_FOLLOW on a symlink; symlink
attributes (S_IFLNK|0777, st_size == target length, owner), readlink of
targets of every size up to 4095 bytes (4096 -> ENAMETOOLONG) and of
arbitrary bytes, dangling links, ELOOP on loops and after 40 links in a
chain, O_NOFOLLOW (ELOOP; O_PATH|O_NOFOLLOW opens the link), trailing
slash through a link to a directory, lchown / utimensat on the link
itself, readlink of a non-symlink (EINVAL).
"""

import errno
import os
import stat

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (AT_SYMLINK_FOLLOW, assert_errno, clock_tick, linkat,
                        needs_root, read_file, workdir, write_file)

# ---- hard links ----------------------------------------------------------


def test_link_shares_inode_and_counts(mounted):
    """link adds a name for the same inode: both names show the same
    st_ino and nlink 2, data written through one is read through the
    other; unlinking one name drops nlink back to 1 and keeps the data."""
    d = workdir(mounted)
    os.mkdir(d / "other")
    write_file(d / "a", b"first")
    os.link(d / "a", d / "other" / "b")
    sa, sb = os.stat(d / "a"), os.stat(d / "other" / "b")
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    with open(d / "other" / "b", "ab") as f:
        f.write(b"+second")
    assert read_file(d / "a") == b"first+second"
    os.link(d / "a", d / "c")
    assert os.stat(d / "a").st_nlink == 3
    os.unlink(d / "a")
    assert os.stat(d / "c").st_nlink == 2
    os.unlink(d / "other" / "b")
    st = os.stat(d / "c")
    assert st.st_nlink == 1 and st.st_ino == sa.st_ino
    assert read_file(d / "c") == b"first+second"


def test_link_and_unlink_change_ctime_not_mtime(mounted):
    """link and unlink of another name change the inode's ctime (its
    link count changed) but not its mtime."""
    d = workdir(mounted)
    write_file(d / "a", b"x")
    s0 = os.stat(d / "a")
    clock_tick()
    os.link(d / "a", d / "b")
    s1 = os.stat(d / "a")
    assert s1.st_ctime_ns > s0.st_ctime_ns
    assert s1.st_mtime_ns == s0.st_mtime_ns
    clock_tick()
    os.unlink(d / "b")
    s2 = os.stat(d / "a")
    assert s2.st_ctime_ns > s1.st_ctime_ns
    assert s2.st_mtime_ns == s0.st_mtime_ns


def test_many_hard_links(mounted):
    """An inode with 100 extra links has nlink 101; every name lists and
    resolves to it; removing them brings nlink back to 1."""
    d = workdir(mounted)
    write_file(d / "f", b"many")
    for i in range(100):
        os.link(d / "f", d / f"l{i:03d}")
    ino = os.stat(d / "f").st_ino
    assert os.stat(d / "f").st_nlink == 101
    assert sorted(os.listdir(d)) == ["f"] + [f"l{i:03d}" for i in range(100)]
    assert {os.stat(d / f"l{i:03d}").st_ino for i in range(100)} == {ino}
    for i in range(100):
        os.unlink(d / f"l{i:03d}")
    assert os.stat(d / "f").st_nlink == 1


def test_link_to_directory_eperm(mounted):
    """A hard link to a directory is refused with EPERM (Linux), and the
    directory's nlink is unchanged."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    n = os.stat(d / "dir").st_nlink
    assert_errno(errno.EPERM, os.link, d / "dir", d / "dirlink")
    assert os.stat(d / "dir").st_nlink == n
    assert os.listdir(d) == ["dir"]


def test_link_errors(mounted):
    """link to an existing name (file, directory or symlink) is EEXIST;
    a missing source, or a target in a missing directory, is ENOENT."""
    d = workdir(mounted)
    write_file(d / "a")
    write_file(d / "b")
    os.mkdir(d / "dir")
    os.symlink("nowhere", d / "sl")
    for target in ("b", "dir", "sl"):
        assert_errno(errno.EEXIST, os.link, d / "a", d / target)
    assert_errno(errno.ENOENT, os.link, d / "missing", d / "x")
    assert_errno(errno.ENOENT, os.link, d / "a", d / "missing" / "x")
    assert os.stat(d / "a").st_nlink == 1


def test_linkat_symlink_follow_flag(mounted):
    """linkat without AT_SYMLINK_FOLLOW (and plain link()) links the
    symlink itself (Linux); with it, links the file the symlink points
    to."""
    d = workdir(mounted)
    write_file(d / "target", b"t")
    os.symlink("target", d / "sl")
    linkat(d / "sl", d / "hard-to-link", 0)
    st = os.lstat(d / "hard-to-link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_ino == os.lstat(d / "sl").st_ino
    assert st.st_nlink == 2
    os.link(d / "sl", d / "plain-link")  # link(2): no follow on Linux
    assert os.lstat(d / "plain-link").st_ino == os.lstat(d / "sl").st_ino
    assert os.lstat(d / "sl").st_nlink == 3
    linkat(d / "sl", d / "hard-to-target", AT_SYMLINK_FOLLOW)
    st = os.lstat(d / "hard-to-target")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_ino == os.stat(d / "target").st_ino
    assert st.st_nlink == 2


# ---- symlinks ------------------------------------------------------------

def test_symlink_attributes(mounted):
    """A symlink: lstat shows S_IFLNK|0777, nlink 1, st_size == length
    of the target in bytes, the creator's uid/gid; stat and open follow
    it to the target."""
    d = workdir(mounted)
    write_file(d / "target", b"0123456789")
    os.symlink("target", d / "sl")
    st = os.lstat(d / "sl")
    assert st.st_mode == stat.S_IFLNK | 0o777
    assert st.st_nlink == 1
    assert st.st_size == len("target")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert st.st_ino != os.stat(d / "target").st_ino
    assert os.stat(d / "sl").st_ino == os.stat(d / "target").st_ino
    assert os.stat(d / "sl").st_size == 10
    assert read_file(d / "sl") == b"0123456789"


@pytest.mark.parametrize("length", [1, 59, 60, 61, 255, 256, 1000, 4095])
def test_symlink_target_lengths(mounted, length):
    """Symlink targets of any length up to 4095 bytes (PATH_MAX - 1) are
    stored exactly: readlink returns them, lstat st_size is the length."""
    d = workdir(mounted)
    target = ("t/" * length)[:length]
    if target.endswith("/"):
        target = target[:-1] + "x"
    os.symlink(target, d / "sl")
    assert os.readlink(d / "sl") == target
    assert os.lstat(d / "sl").st_size == length


def test_symlink_target_4096_enametoolong(mounted):
    """A symlink target of 4096 bytes is ENAMETOOLONG and nothing is
    created; an empty target is ENOENT."""
    d = workdir(mounted)
    assert_errno(errno.ENAMETOOLONG, os.symlink, "x" * 4096, d / "sl")
    assert_errno(errno.ENOENT, os.symlink, "", d / "sl")
    assert os.listdir(d) == []


def test_symlink_target_bytes_exact(mounted):
    """The target is an uninterpreted byte string: absolute, relative
    with '..', spaces, invalid UTF-8 and trailing slashes come back
    exactly from readlink."""
    d = workdir(mounted)
    targets = [b"/absolute/path", b"../up/../and/down", b"with space",
               b"\xff\xfe\x01bytes", b"trailing/", b".", b"..", b"//x//"]
    bd = os.fsencode(d)
    for i, t in enumerate(targets):
        os.symlink(t, bd + b"/l%d" % i)
    for i, t in enumerate(targets):
        assert os.readlink(bd + b"/l%d" % i) == t


def test_dangling_symlink(mounted):
    """A symlink to a missing target: lstat and readlink work, stat and
    open are ENOENT; creating the target makes it resolve."""
    d = workdir(mounted)
    os.symlink("later", d / "sl")
    assert stat.S_ISLNK(os.lstat(d / "sl").st_mode)
    assert os.readlink(d / "sl") == "later"
    assert_errno(errno.ENOENT, os.stat, d / "sl")
    assert_errno(errno.ENOENT, os.open, d / "sl", os.O_RDONLY)
    write_file(d / "later", b"now")
    assert read_file(d / "sl") == b"now"


def test_symlink_creating_through_dangling_link(mounted):
    """open(O_CREAT) without O_EXCL through a dangling symlink creates
    the target it names."""
    d = workdir(mounted)
    os.symlink("made", d / "sl")
    fd = os.open(d / "sl", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"via link")
    finally:
        os.close(fd)
    assert read_file(d / "made") == b"via link"
    assert stat.S_ISLNK(os.lstat(d / "sl").st_mode)


def test_symlink_loops_eloop(mounted):
    """Following a symlink loop (self, two-cycle, through a directory
    component) fails with ELOOP; lstat and readlink still work."""
    d = workdir(mounted)
    os.symlink("self", d / "self")
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")
    for name in ("self", "a", "b"):
        assert_errno(errno.ELOOP, os.stat, d / name)
        assert_errno(errno.ELOOP, os.open, d / name, os.O_RDONLY)
        assert stat.S_ISLNK(os.lstat(d / name).st_mode)
    assert os.readlink(d / "a") == "b"
    assert_errno(errno.ELOOP, os.stat, d / "a" / "x")
    assert_errno(errno.ELOOP, os.mkdir, d / "self" / "x")


def test_symlink_chain_limit(mounted):
    """A chain of 40 symlinks resolves (MAXSYMLINKS); a chain of 41 is
    ELOOP (Linux)."""
    d = workdir(mounted)
    write_file(d / "end", b"end")
    os.symlink("end", d / "c1")
    for i in range(2, 42):
        os.symlink(f"c{i - 1}", d / f"c{i}")
    assert read_file(d / "c40") == b"end"
    assert_errno(errno.ELOOP, os.stat, d / "c41")


def test_o_nofollow(mounted):
    """O_NOFOLLOW refuses a final-component symlink with ELOOP (even a
    valid one), opens a regular file normally, follows symlinks in
    earlier components, and O_PATH|O_NOFOLLOW opens the link itself."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    write_file(d / "dir" / "f", b"data")
    os.symlink("dir/f", d / "lf")
    os.symlink("dir", d / "ld")
    assert_errno(errno.ELOOP, os.open, d / "lf", os.O_RDONLY | os.O_NOFOLLOW)
    assert_errno(errno.ELOOP, os.open, d / "lf",
                 os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    for p in (d / "dir" / "f", d / "ld" / "f"):
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            assert os.read(fd, 10) == b"data"
        finally:
            os.close(fd)
    fd = os.open(d / "lf", os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_ino == os.lstat(d / "lf").st_ino


def test_symlink_to_directory(mounted):
    """A symlink to a directory: 'link/' and 'link/.' resolve to the
    directory, entries are reachable through it; unlink removes only the
    link; rmdir on the link is ENOTDIR."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    write_file(d / "dir" / "f", b"f")
    os.symlink("dir", d / "ld")
    ino = os.stat(d / "dir").st_ino
    assert os.stat(f"{d}/ld/").st_ino == ino
    assert os.stat(f"{d}/ld/.").st_ino == ino
    assert os.listdir(d / "ld") == ["f"]
    assert_errno(errno.ENOTDIR, os.rmdir, d / "ld")
    os.unlink(d / "ld")
    assert os.listdir(d / "dir") == ["f"]
    assert sorted(os.listdir(d)) == ["dir"]


def test_symlink_eexist(mounted):
    """symlink onto an existing name (file, directory, symlink) is
    EEXIST and the existing entry is untouched."""
    d = workdir(mounted)
    write_file(d / "f", b"f")
    os.mkdir(d / "dir")
    os.symlink("x", d / "sl")
    for name in ("f", "dir", "sl"):
        assert_errno(errno.EEXIST, os.symlink, "new", d / name)
    assert read_file(d / "f") == b"f"
    assert os.readlink(d / "sl") == "x"


def test_readlink_errors(mounted):
    """readlink of a regular file or directory is EINVAL; of a missing
    name ENOENT."""
    d = workdir(mounted)
    write_file(d / "f")
    os.mkdir(d / "dir")
    assert_errno(errno.EINVAL, os.readlink, d / "f")
    assert_errno(errno.EINVAL, os.readlink, d / "dir")
    assert_errno(errno.ENOENT, os.readlink, d / "missing")


@needs_root
def test_lchown_and_times_on_link_itself(mounted):
    """lchown and utimensat(AT_SYMLINK_NOFOLLOW) change the symlink's own
    owner and times, leaving the target's unchanged; chown through the
    link changes the target."""
    d = workdir(mounted)
    write_file(d / "target", b"t")
    os.symlink("target", d / "sl")
    os.chown(d / "sl", 1111, 2222, follow_symlinks=False)
    os.utime(d / "sl", ns=(1_000_000_000, 2_000_000_000),
             follow_symlinks=False)
    ls, ts = os.lstat(d / "sl"), os.stat(d / "target")
    assert (ls.st_uid, ls.st_gid) == (1111, 2222)
    assert (ls.st_atime_ns, ls.st_mtime_ns) == (1_000_000_000,
                                                2_000_000_000)
    assert (ts.st_uid, ts.st_gid) == (0, 0)
    assert ts.st_mtime_ns != 2_000_000_000
    os.chown(d / "sl", 3333, 4444)
    assert (os.stat(d / "target").st_uid,
            os.stat(d / "target").st_gid) == (3333, 4444)
    assert os.lstat(d / "sl").st_uid == 1111


def test_unlink_symlink_keeps_target(mounted):
    """unlink of a symlink removes the link, never its target."""
    d = workdir(mounted)
    write_file(d / "target", b"keep")
    os.symlink("target", d / "sl")
    os.unlink(d / "sl")
    assert read_file(d / "target") == b"keep"
    assert os.listdir(d) == ["target"]
