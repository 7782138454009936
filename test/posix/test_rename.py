"""rename(2) and renameat2(2) on the mounted filesystem.

Covers: plain renames within and across directories (inode, data,
'..' and link counts follow), atomic replacement of a file (open fds of
the old target keep its data; a concurrent reader never sees the name
missing or a mix), replacing a hard-linked target, directory over an
empty directory, directory over a non-empty one (ENOTEMPTY), directory
over a file (ENOTDIR), file over a directory (EISDIR), a directory into
its own subtree (EINVAL), rename of hard links to the same inode (a
no-op), rename to itself, RENAME_NOREPLACE and RENAME_EXCHANGE (files,
file with directory across parents, errors), symlinks moved as links,
the timestamps a rename updates, and path errors (ENOENT, ENOTDIR,
EBUSY).
"""

import errno
import os
import stat
import threading

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (RENAME_EXCHANGE, RENAME_NOREPLACE, assert_errno,
                        clock_tick, mkdir, read_file, renameat2, workdir,
                        write_file)


def test_rename_file_same_directory(mounted):
    """rename moves the name: the new name has the same inode and data,
    the old name is ENOENT, nlink stays 1, the directory lists only the
    new name."""
    d = workdir(mounted)
    write_file(d / "a", b"payload")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert_errno(errno.ENOENT, os.stat, d / "a")
    st = os.stat(d / "b")
    assert st.st_ino == ino and st.st_nlink == 1
    assert read_file(d / "b") == b"payload"
    assert os.listdir(d) == ["b"]


def test_rename_directory_across_parents(mounted):
    """Moving a directory to another parent keeps its inode and contents,
    repoints its '..' to the new parent, and moves one link from the old
    parent's nlink to the new parent's."""
    d = workdir(mounted)
    os.makedirs(d / "p1" / "x" / "deep")
    write_file(d / "p1" / "x" / "deep" / "f", b"deep data")
    os.mkdir(d / "p2")
    n1, n2 = os.stat(d / "p1").st_nlink, os.stat(d / "p2").st_nlink
    ino = os.stat(d / "p1" / "x").st_ino
    os.rename(d / "p1" / "x", d / "p2" / "y")
    assert os.stat(d / "p2" / "y").st_ino == ino
    assert os.stat(d / "p2" / "y" / "..").st_ino == os.stat(d / "p2").st_ino
    assert os.stat(d / "p1").st_nlink == n1 - 1
    assert os.stat(d / "p2").st_nlink == n2 + 1
    assert os.stat(d / "p2" / "y").st_nlink == 3
    assert read_file(d / "p2" / "y" / "deep" / "f") == b"deep data"
    assert os.listdir(d / "p1") == []
    assert os.listdir(d / "p2") == ["y"]


def test_rename_file_across_parents(mounted):
    """Moving a file to another directory keeps inode and data and leaves
    both parents' nlink unchanged."""
    d = workdir(mounted)
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    write_file(d / "p1" / "f", b"123")
    ino = os.stat(d / "p1" / "f").st_ino
    n1, n2 = os.stat(d / "p1").st_nlink, os.stat(d / "p2").st_nlink
    os.rename(d / "p1" / "f", d / "p2" / "g")
    assert os.stat(d / "p2" / "g").st_ino == ino
    assert read_file(d / "p2" / "g") == b"123"
    assert (os.stat(d / "p1").st_nlink, os.stat(d / "p2").st_nlink) == (
        n1, n2)


def test_rename_replaces_file(mounted):
    """rename over an existing file replaces it in one step: the name
    now refers to the source inode; an fd open on the old target still
    reads its data and fstat shows nlink 0."""
    d = workdir(mounted)
    write_file(d / "src", b"new contents")
    write_file(d / "dst", b"old contents")
    src_ino = os.stat(d / "src").st_ino
    fd = os.open(d / "dst", os.O_RDONLY)
    try:
        os.rename(d / "src", d / "dst")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"old contents"
    finally:
        os.close(fd)
    assert os.stat(d / "dst").st_ino == src_ino
    assert read_file(d / "dst") == b"new contents"
    assert os.listdir(d) == ["dst"]


def test_rename_replace_is_atomic_for_readers(mounted):
    """While a file is replaced again and again by rename, a concurrent
    reader opening the name always finds it (never ENOENT) and always
    reads one complete version, never a mix or an empty file."""
    d = workdir(mounted)
    size = 8192
    write_file(d / "target", b"A" * size)
    stop = threading.Event()
    problems = []
    reads = [0]

    def reader():
        while not stop.is_set() and len(problems) < 5:
            try:
                data = read_file(d / "target")
            except OSError as e:
                problems.append(f"open/read failed: {e}")
                continue
            reads[0] += 1
            if len(data) != size or data != data[:1] * size:
                problems.append(f"torn read: len {len(data)}, "
                                f"starts {data[:8]!r}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            ch = bytes([ord("B") + i % 20])
            write_file(d / f"tmp{i}", ch * size)
            os.rename(d / f"tmp{i}", d / "target")
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    assert problems == []
    assert read_file(d / "target") == bytes([ord("B") + 299 % 20]) * size
    assert os.listdir(d) == ["target"]


def test_rename_over_hard_linked_target(mounted):
    """Replacing one name of a two-link file by rename drops that inode
    to nlink 1; its other name keeps the old data."""
    d = workdir(mounted)
    write_file(d / "old", b"old")
    os.link(d / "old", d / "other")
    write_file(d / "new", b"new")
    os.rename(d / "new", d / "old")
    assert read_file(d / "old") == b"new"
    assert read_file(d / "other") == b"old"
    assert os.stat(d / "other").st_nlink == 1
    assert os.stat(d / "old").st_nlink == 1


def test_rename_dir_over_empty_dir(mounted):
    """A directory may replace an empty directory: the name then refers
    to the source, the parent loses one link (two subdirectories became
    one)."""
    d = workdir(mounted)
    os.mkdir(d / "a")
    write_file(d / "a" / "f", b"f")
    os.mkdir(d / "b")
    ino = os.stat(d / "a").st_ino
    nlink = os.stat(d).st_nlink
    os.rename(d / "a", d / "b")
    assert os.stat(d / "b").st_ino == ino
    assert read_file(d / "b" / "f") == b"f"
    assert_errno(errno.ENOENT, os.stat, d / "a")
    assert os.stat(d).st_nlink == nlink - 1
    assert os.listdir(d) == ["b"]


def test_rename_dir_over_non_empty_dir(mounted):
    """A directory cannot replace a non-empty directory: ENOTEMPTY, and
    both stay as they were."""
    d = workdir(mounted)
    os.mkdir(d / "a")
    os.makedirs(d / "b" / "child")
    ia, ib = os.stat(d / "a").st_ino, os.stat(d / "b").st_ino
    assert_errno(errno.ENOTEMPTY, os.rename, d / "a", d / "b")
    write_file(d / "b" / "child2")
    os.rmdir(d / "b" / "child")
    assert_errno(errno.ENOTEMPTY, os.rename, d / "a", d / "b")
    assert (os.stat(d / "a").st_ino, os.stat(d / "b").st_ino) == (ia, ib)
    assert os.listdir(d / "b") == ["child2"]


def test_rename_dir_over_file_and_file_over_dir(mounted):
    """A directory over a non-directory is ENOTDIR; a non-directory over
    a directory (even an empty one) is EISDIR; nothing changes."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    write_file(d / "file", b"f")
    os.mkdir(d / "empty")
    os.symlink("dir", d / "link")
    assert_errno(errno.ENOTDIR, os.rename, d / "dir", d / "file")
    assert_errno(errno.ENOTDIR, os.rename, d / "dir", d / "link")
    assert_errno(errno.EISDIR, os.rename, d / "file", d / "empty")
    assert_errno(errno.EISDIR, os.rename, d / "link", d / "empty")
    assert sorted(os.listdir(d)) == ["dir", "empty", "file", "link"]
    assert stat.S_ISDIR(os.lstat(d / "dir").st_mode)
    assert stat.S_ISLNK(os.lstat(d / "link").st_mode)


def test_rename_into_own_subtree(mounted):
    """A directory cannot be moved into itself or its own subtree:
    EINVAL; renaming it onto its own name is a no-op that succeeds."""
    d = workdir(mounted)
    os.makedirs(d / "a" / "b" / "c")
    assert_errno(errno.EINVAL, os.rename, d / "a", d / "a" / "x")
    assert_errno(errno.EINVAL, os.rename, d / "a", d / "a" / "b" / "c" / "x")
    assert_errno(errno.EINVAL, renameat2, d / "a", d / "a" / "b",
                 RENAME_EXCHANGE)
    os.rename(d / "a", d / "a")
    assert os.listdir(d) == ["a"]
    assert os.listdir(d / "a" / "b") == ["c"]


def test_rename_between_hard_links_is_noop(mounted):
    """rename(a, b) where a and b are links to the same inode succeeds
    and does nothing: both names remain, nlink stays 2 (POSIX)."""
    d = workdir(mounted)
    write_file(d / "a", b"same")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "b")
    assert sorted(os.listdir(d)) == ["a", "b"]
    assert os.stat(d / "a").st_ino == os.stat(d / "b").st_ino
    assert os.stat(d / "a").st_nlink == 2
    assert read_file(d / "b") == b"same"


def test_rename_file_to_itself(mounted):
    """rename(a, a) succeeds and changes nothing."""
    d = workdir(mounted)
    write_file(d / "a", b"x")
    st = os.stat(d / "a")
    os.rename(d / "a", d / "a")
    st2 = os.stat(d / "a")
    assert (st2.st_ino, st2.st_nlink, st2.st_size) == (st.st_ino, 1, 1)
    assert os.listdir(d) == ["a"]


def test_rename_noreplace(mounted):
    """RENAME_NOREPLACE: EEXIST when the target exists (file, directory,
    dangling symlink, or the source itself), leaving both names as they
    were; it renames normally when the target is absent."""
    d = workdir(mounted)
    write_file(d / "a", b"a")
    write_file(d / "b", b"b")
    os.mkdir(d / "dir")
    os.symlink("nowhere", d / "dangling")
    for target in ("b", "dir", "dangling", "a"):
        assert_errno(errno.EEXIST, renameat2, d / "a", d / target,
                     RENAME_NOREPLACE)
    assert read_file(d / "a") == b"a" and read_file(d / "b") == b"b"
    renameat2(d / "a", d / "c", RENAME_NOREPLACE)
    assert read_file(d / "c") == b"a"
    assert sorted(os.listdir(d)) == ["b", "c", "dangling", "dir"]


def test_rename_exchange_files(mounted):
    """RENAME_EXCHANGE swaps two existing names atomically: each name now
    refers to the other inode, with its data; nlink unchanged."""
    d = workdir(mounted)
    write_file(d / "a", b"AAAA")
    write_file(d / "b", b"BB")
    ia, ib = os.stat(d / "a").st_ino, os.stat(d / "b").st_ino
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert (os.stat(d / "a").st_ino, os.stat(d / "b").st_ino) == (ib, ia)
    assert read_file(d / "a") == b"BB" and read_file(d / "b") == b"AAAA"
    assert os.stat(d / "a").st_nlink == 1
    assert sorted(os.listdir(d)) == ["a", "b"]


def test_rename_exchange_file_and_dir_across_parents(mounted):
    """RENAME_EXCHANGE of a directory in p1 with a file in p2: the
    directory's '..' becomes p2, p1 loses and p2 gains one link."""
    d = workdir(mounted)
    os.makedirs(d / "p1" / "dir")
    write_file(d / "p1" / "dir" / "inside", b"i")
    os.mkdir(d / "p2")
    write_file(d / "p2" / "file", b"f")
    n1, n2 = os.stat(d / "p1").st_nlink, os.stat(d / "p2").st_nlink
    renameat2(d / "p1" / "dir", d / "p2" / "file", RENAME_EXCHANGE)
    assert stat.S_ISREG(os.lstat(d / "p1" / "dir").st_mode)
    assert read_file(d / "p1" / "dir") == b"f"
    assert stat.S_ISDIR(os.lstat(d / "p2" / "file").st_mode)
    assert read_file(d / "p2" / "file" / "inside") == b"i"
    assert (os.stat(d / "p2" / "file" / "..").st_ino
            == os.stat(d / "p2").st_ino)
    assert os.stat(d / "p1").st_nlink == n1 - 1
    assert os.stat(d / "p2").st_nlink == n2 + 1


def test_rename_exchange_non_empty_dirs(mounted):
    """RENAME_EXCHANGE swaps two non-empty directories (no emptiness
    rule applies) along with their contents."""
    d = workdir(mounted)
    os.makedirs(d / "a" / "sa")
    os.makedirs(d / "b" / "sb")
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert os.listdir(d / "a") == ["sb"]
    assert os.listdir(d / "b") == ["sa"]


def test_rename_exchange_errors(mounted):
    """RENAME_EXCHANGE needs both names: a missing target is ENOENT;
    RENAME_EXCHANGE|RENAME_NOREPLACE is EINVAL; nothing changes."""
    d = workdir(mounted)
    write_file(d / "a", b"a")
    write_file(d / "b", b"b")
    assert_errno(errno.ENOENT, renameat2, d / "a", d / "missing",
                 RENAME_EXCHANGE)
    assert_errno(errno.ENOENT, renameat2, d / "missing", d / "a",
                 RENAME_EXCHANGE)
    assert_errno(errno.EINVAL, renameat2, d / "a", d / "b",
                 RENAME_EXCHANGE | RENAME_NOREPLACE)
    assert read_file(d / "a") == b"a" and read_file(d / "b") == b"b"
    assert sorted(os.listdir(d)) == ["a", "b"]


def test_rename_symlink_moves_the_link(mounted):
    """Renaming a symlink moves the link itself (same inode, same target
    text), not the file it points to."""
    d = workdir(mounted)
    write_file(d / "target", b"t")
    os.symlink("target", d / "l1")
    ino = os.lstat(d / "l1").st_ino
    os.rename(d / "l1", d / "l2")
    assert os.lstat(d / "l2").st_ino == ino
    assert os.readlink(d / "l2") == "target"
    assert read_file(d / "target") == b"t"
    assert sorted(os.listdir(d)) == ["l2", "target"]


def test_rename_timestamps(mounted):
    """rename updates mtime and ctime of both parent directories and the
    ctime of the moved inode (Linux), but not the moved file's mtime."""
    d = workdir(mounted)
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    write_file(d / "p1" / "f", b"x")
    s1, s2 = os.stat(d / "p1"), os.stat(d / "p2")
    sf = os.stat(d / "p1" / "f")
    clock_tick()
    os.rename(d / "p1" / "f", d / "p2" / "f")
    t1, t2 = os.stat(d / "p1"), os.stat(d / "p2")
    tf = os.stat(d / "p2" / "f")
    for before, after in ((s1, t1), (s2, t2)):
        assert after.st_mtime_ns > before.st_mtime_ns
        assert after.st_ctime_ns > before.st_ctime_ns
    assert tf.st_ctime_ns > sf.st_ctime_ns
    assert tf.st_mtime_ns == sf.st_mtime_ns


@pytest.mark.parametrize("case", ["missing-src", "missing-dst-parent",
                                  "file-as-dir", "dot", "dotdot",
                                  "trailing-slash"])
def test_rename_path_errors(mounted, case):
    """Path errors: a missing source or target parent is ENOENT, a file
    used as a directory in the target path is ENOTDIR, '.' or '..' as
    the last component is EBUSY, a trailing slash on a non-directory
    source or target is ENOTDIR."""
    d = workdir(mounted)
    write_file(d / "f", b"f")
    mkdir(d / "sub")
    old, new, err = {
        "missing-src": (d / "nope", d / "x", errno.ENOENT),
        "missing-dst-parent": (d / "f", d / "nope" / "x", errno.ENOENT),
        "file-as-dir": (d / "f", d / "f" / "x", errno.ENOTDIR),
        "dot": (f"{d}/sub/.", d / "x", errno.EBUSY),
        "dotdot": (f"{d}/sub/..", d / "x", errno.EBUSY),
        "trailing-slash": (d / "f", f"{d}/g/", errno.ENOTDIR),
    }[case]
    assert_errno(err, os.rename, old, new)
    assert sorted(os.listdir(d)) == ["f", "sub"]
