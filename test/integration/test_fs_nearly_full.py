"""A filesystem filled to its last blocks can still be emptied, and a
fallocate that fails allocates nothing.

The volumes are small (64 MiB and 1 GiB maximum size) and filled with
fallocate(2) mode 0, which writes no data: the zones stay small.

Proves: with only a few blocks free by statvfs (the metadata reserve,
which statvfs leaves out, is all that is left to the allocator), rmdir
of an empty directory, a rename over a file, truncate to 0 and unlink
succeed and give their space back, and a write works after them; the
same holds after an unmount and mount of the full filesystem.  A
fallocate that fails with ENOSPC leaves st_blocks, st_size and statvfs's
free space as they were (sixfold(8): "allocates nothing"), also one of
many steps on a 1 GiB volume.  fsck is clean at the end.

With SIXFOLD_TEST_FALLBACK=1 (a plain directory of the host's disk) the
volume is the host's: skipped.
"""

import errno
import os
import time

import pytest

from conftest import fallocate, fsync_path, write_synced

BLOCK = 4096
KIB = 1 << 10
MIB = 1 << 20

pytestmark = pytest.mark.skipif(
    os.environ.get("SIXFOLD_TEST_FALLBACK") == "1",
    reason="fills the filesystem: needs a small sixfold volume")


def avail(path):
    """Blocks statvfs reports free (f_bavail)."""
    st = os.statvfs(path)
    assert st.f_frsize == BLOCK
    return st.f_bavail


def freed(m, blocks, timeout=10.0):
    """Wait until statvfs shows at least `blocks` free.  An unlinked or
    replaced file's space is freed when the kernel forgets its inode,
    just after the call returns.  (It once stayed until the next mount
    when the store of the file's held times dropped its node between the
    forget and the freeing: fs_vfs.c, maybe_destroy.)"""
    deadline = time.monotonic() + timeout
    while avail(m.path) < blocks and time.monotonic() < deadline:
        time.sleep(0.05)
    return avail(m.path) >= blocks


def fill(path, name, few=16):
    """fallocate a file that leaves at most `few` blocks free by statvfs.
    Tries the free space less 4, 8, 16, ... blocks (a fallocate sets
    aside B+tree node blocks besides the file's): every attempt that
    fails must leave the free space as it was."""
    target = path / name
    less = 4
    while True:
        a = avail(path)
        assert a > less, f"{a} blocks free, cannot fill"
        try:
            fallocate(target, (a - less) * BLOCK)
            break
        except OSError as e:
            assert e.errno == errno.ENOSPC, repr(e)
            assert avail(path) == a, (
                f"a failed fallocate of {a - less} blocks changed the free "
                f"space: {a} -> {avail(path)}")
            st = os.stat(target)
            assert st.st_blocks == 0 and st.st_size == 0, (
                f"a failed fallocate left {st.st_blocks * 512} bytes "
                f"allocated, size {st.st_size}")
            less *= 2
            assert less < 4096, "fallocate never fit"
    left = avail(path)
    print(f"filled with {name}: {os.stat(target).st_blocks // 8} blocks, "
          f"{left} blocks free")
    assert left <= few + less, f"{left} blocks free after filling"
    return target


def test_nearly_full_can_be_emptied(make_mount):
    """At a few blocks free: rmdir, rename over a file, truncate to 0 and
    unlink succeed and free their space, a write works after them; the
    same after a remount of the full filesystem; fsck clean."""
    m = make_mount(max_size="64M")
    root = m.path
    (root / "empty").mkdir()
    write_synced(root / "src", b"s" * (16 * KIB))
    write_synced(root / "dst", b"d" * (64 * KIB))
    fsync_path(root)

    f1 = fill(root, "f1")
    before = avail(root)
    os.rmdir(root / "empty")
    os.rename(root / "src", root / "dst")
    fsync_path(root)
    assert (root / "dst").read_bytes() == b"s" * (16 * KIB)
    assert not (root / "src").exists()
    assert freed(m, before + 64 * KIB // BLOCK), (
        "the rename over a file did not free its blocks")

    before = avail(root)
    size = os.stat(f1).st_size
    os.truncate(f1, 0)
    st = os.stat(f1)
    assert st.st_size == 0 and st.st_blocks == 0, st
    assert avail(root) >= before + size // BLOCK, (
        f"truncate freed {avail(root) - before} blocks of {size // BLOCK}")
    write_synced(root / "after-truncate", b"t" * MIB)

    f2 = fill(root, "f2")
    before = avail(root)
    size = os.stat(f2).st_size
    os.unlink(f2)
    fsync_path(root)
    assert freed(m, before + size // BLOCK), (
        f"unlink freed {avail(root) - before} of {size // BLOCK} blocks")
    write_synced(root / "after-unlink", b"u" * MIB)
    os.unlink(f1)

    # Full at unmount: after the mount, the same operations work.
    (root / "empty2").mkdir()
    f4 = root / "f4"
    fallocate(f4, 64 * KIB)
    f3 = fill(root, "f3")
    size = os.stat(f3).st_size
    m.remount()
    before = avail(root)
    os.rmdir(root / "empty2")
    os.truncate(f4, 0)
    assert os.stat(f4).st_blocks == 0
    os.unlink(f3)
    fsync_path(root)
    assert freed(m, before + size // BLOCK), (
        f"unlink freed {avail(root) - before} of {size // BLOCK} blocks")
    write_synced(root / "after-remount", b"r" * MIB)
    assert (root / "after-remount").read_bytes() == b"r" * MIB
    assert (root / "after-truncate").read_bytes() == b"t" * MIB

    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}{r.stderr}"


@pytest.mark.parametrize("mode", [0, 1], ids=["mode0", "keep_size"])
def test_failed_fallocate_allocates_nothing(make_mount, mode):
    """On a 1 GiB volume (a fallocate of most of it takes several steps
    of 128 MiB): one a few blocks, and one a block, too large fail with
    ENOSPC and leave st_blocks, st_size and statvfs's free space as they
    were; then one that fits succeeds and the filesystem still empties."""
    m = make_mount(max_size="1G")
    root = m.path
    write_synced(root / "small", b"x" * (64 * KIB))
    f = root / "f"
    for less in (-1, 0, 3):
        a = avail(root)
        with pytest.raises(OSError) as ei:
            fallocate(f, (a - less) * BLOCK, mode)
        assert ei.value.errno == errno.ENOSPC, repr(ei.value)
        st = os.stat(f)
        assert st.st_blocks == 0 and st.st_size == 0, (
            f"fallocate of {a - less} blocks ({a} free) failed but left "
            f"{st.st_blocks * 512 // MIB} MiB, size {st.st_size}")
        assert avail(root) == a, (
            f"a failed fallocate changed the free space: {a} -> "
            f"{avail(root)}")
    fallocate(f, (avail(root) - 1024) * BLOCK, mode)
    assert os.stat(f).st_blocks > 0
    os.unlink(f)
    write_synced(root / "after", b"a" * MIB)
    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}{r.stderr}"
