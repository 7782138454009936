"""test/tools/mirrorfs (the benchmark's "mirror" target: plain copies
over FUSE).

Covers: every change made through the mount (create, write, truncate,
rename, hard and symbolic links, chmod, mkdir, rmdir, unlink, fallocate)
lands in every backing directory alike, reads come back as written, an
fsync of a file and of a directory succeeds, an O_DIRECT open works, a
change that one copy refuses is an error (EIO) though the first copy
took it, bad usage is refused with a message, and the daemon exits when
the mount goes.  It times nothing.
"""

import errno
import mmap
import os
import subprocess
import sys

import pytest

from conftest import REPO, run

sys.path.insert(0, str(REPO / "test" / "bench"))
from benchlib import unmount_daemon, wait_mounted  # noqa: E402

COPIES = 3


@pytest.fixture
def mirrorfs_bin(tools_dir):
    path = tools_dir / "mirrorfs"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


@pytest.fixture
def mirror(tmp_path, mirrorfs_bin):
    """(mount point, [copies]) of a mirrorfs of COPIES directories; the
    daemon is stopped and checked to exit at the end."""
    copies = [tmp_path / f"copy{i}" for i in range(COPIES)]
    mnt = tmp_path / "mnt"
    for d in (*copies, mnt):
        d.mkdir()
    log = tmp_path / "mirrorfs.log"
    with open(log, "ab") as f:
        p = subprocess.Popen([mirrorfs_bin, *copies, mnt, "-f"],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        wait_mounted(mnt, p, log, "mirrorfs")
        yield mnt, copies
    finally:
        rc = unmount_daemon(p, mnt, ["fusermount3", "-u", mnt])
    assert rc == 0, log.read_text()


def tree(root):
    """{relative path: ("dir", mode), ("link", target) or ("file", mode,
    link count, content)}."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", st.st_mode)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", st.st_mode, st.st_nlink, f.read())
    return out


def test_changes_reach_every_copy(mirror):
    mnt, copies = mirror
    data = os.urandom(300 * 1024 + 17)
    (mnt / "d").mkdir()
    (mnt / "gone").mkdir()
    (mnt / "gone").rmdir()
    with open(mnt / "d" / "a", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(mnt / "d" / "a", "r+b") as f:
        f.seek(4096 * 10 + 5)
        f.write(b"overwritten")
        os.fdatasync(f.fileno())
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
    os.truncate(mnt / "d" / "a", 200000)
    os.rename(mnt / "d" / "a", mnt / "d" / "b")
    os.link(mnt / "d" / "b", mnt / "d" / "c")
    os.symlink("b", mnt / "d" / "l")
    os.chmod(mnt / "d" / "b", 0o640)
    (mnt / "d" / "tmp").write_bytes(b"x")
    os.unlink(mnt / "d" / "tmp")
    fd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    want = bytearray(data)
    want[4096 * 10 + 5:4096 * 10 + 16] = b"overwritten"
    want = bytes(want[:200000])
    assert (mnt / "d" / "b").read_bytes() == want
    assert (mnt / "d" / "c").read_bytes() == want
    first = tree(copies[0])
    assert first["d/b"] == ("file", 0o100640, 2, want)
    assert first["d/l"] == ("link", "b")
    assert set(first) == {"d", "d/b", "d/c", "d/l"}
    for c in copies[1:]:
        assert tree(c) == first, c


def test_o_direct_open(mirror):
    # The copies are written through the page cache (the FUSE request's
    # buffer would not do for O_DIRECT): an O_DIRECT open still works.
    mnt, copies = mirror
    buf = mmap.mmap(-1, 8192)  # page-aligned
    buf.write(os.urandom(8192))
    fd = os.open(mnt / "direct", os.O_CREAT | os.O_WRONLY | os.O_DIRECT,
                 0o644)
    try:
        assert os.pwritev(fd, [buf], 0) == 8192
        os.fsync(fd)
    finally:
        os.close(fd)
    for c in copies:
        assert (c / "direct").read_bytes() == bytes(buf), c


def test_a_copy_that_refuses_is_an_error(mirror):
    mnt, copies = mirror
    # The last copy already has a directory where the file would go.
    (copies[-1] / "clash").mkdir()
    with pytest.raises(OSError) as e:
        (mnt / "clash").write_bytes(b"data")
    assert e.value.errno == errno.EIO  # copy 0 took it, the last did not


def test_bad_usage(mirrorfs_bin, tmp_path):
    r = run([mirrorfs_bin, tmp_path, tmp_path / "mnt"])
    assert r.returncode == 64 and "usage: mirrorfs" in r.stderr
    r = run([mirrorfs_bin, tmp_path / "nope", tmp_path, tmp_path])
    assert r.returncode == 64
    assert "nope: No such file or directory" in r.stderr
