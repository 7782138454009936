"""FUSE over io_uring: with the host's switch on, the daemon takes its
requests from per-CPU io_uring queues (fs/fs_fuse.c, "Requests over
io_uring"); with it off, from /dev/fuse as before.  Either way every byte
comes back, the daemon exits 0 and fsck finds the volume clean.  The
switch is put back after each test.
"""

import contextlib
import hashlib
import os
import random

import pytest

from conftest import URING_SWITCH, fuse_uring, wait_for

MIB = 1 << 20
URING_LOG = "FUSE requests over io_uring"

pytestmark = pytest.mark.skipif(
    not URING_SWITCH.exists(),
    reason=f"this kernel has no FUSE over io_uring ({URING_SWITCH})")


def wait_uring_log(m, count):
    """Wait until the daemon's log says `count` times that it took its
    requests over io_uring.  The mount point appears before the kernel's
    INIT is answered, and the daemon registers its rings (and says so)
    only after answering it, so the line can come after the mount."""
    wait_for(lambda: m.log.read_text().count(URING_LOG) == count,
             what=f"'{URING_LOG}' {count} times in the daemon's log")


def ring_threads(pid):
    """(threads named fuse-uring, times they ran) in the daemon."""
    n = runs = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/comm") as f:
            if f.read().strip() != "fuse-uring":
                continue
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            runs += int(f.read().split()[2])
        n += 1
    return n, runs


def possible_cpus():
    with open("/sys/devices/system/cpu/possible") as f:
        s = f.read().strip()
    return int(s.split("-")[1]) + 1 if "-" in s else 1


def write_set(root, rng):
    """Files across the request sizes: empty, sub-block, block, around
    the 128 KiB line between pinned and free reads, and past the 1 MiB
    request; written in pieces, fsynced.  {name: sha256}."""
    sums = {}
    for i, size in enumerate([0, 1, 4095, 4096, 128 * 1024 - 1,
                              128 * 1024 + 7, MIB, 3 * MIB + 123]):
        data = rng.randbytes(size)
        name = f"f{i}"
        fd = os.open(root / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for off in range(0, size, 300 * 1024):
                os.pwrite(fd, data[off:off + 300 * 1024], off)
            os.fsync(fd)
        finally:
            os.close(fd)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def check_set(root, sums, rng):
    """Each file read whole in 1 MiB reads, and in random small preads."""
    for name, want in sums.items():
        h = hashlib.sha256()
        with open(root / name, "rb", buffering=0) as f:
            while chunk := f.read(MIB):
                h.update(chunk)
        assert h.hexdigest() == want, name
    data = (root / "f7").read_bytes()
    fd = os.open(root / "f7", os.O_RDONLY)
    try:
        for _ in range(200):
            off = rng.randrange(len(data))
            n = rng.randrange(1, 9000)
            assert os.pread(fd, n, off) == data[off:off + n]
    finally:
        os.close(fd)


def test_requests_come_over_io_uring(make_mount):
    """Switch on: the daemon registers 4 workers per possible CPU, and
    they serve data, metadata and xattr requests; a remount reads it all
    back through them; the daemon exits 0 and fsck is clean."""
    rng = random.Random(5)
    with fuse_uring(True):
        m = make_mount()
        wait_uring_log(m, 1)
        n, runs0 = ring_threads(m.pid)
        assert n == 4 * possible_cpus()
        sums = write_set(m.path, rng)
        d = m.path / "d"
        d.mkdir()
        names = [f"entry-{i:04d}-{'x' * 40}" for i in range(600)]
        for name in names:
            (d / name).write_bytes(b"")
        os.symlink("f3", m.path / "link")
        os.rename(m.path / "f2", m.path / "f2r")
        sums["f2r"] = sums.pop("f2")
        os.setxattr(m.path / "f1", "user.k", b"v" * 3000)
        os.truncate(m.path / "f6", MIB // 2)
        sums["f6"] = hashlib.sha256(
            (m.path / "f6").read_bytes()).hexdigest()
        _, runs1 = ring_threads(m.pid)
        assert runs1 > runs0, "no request reached the io_uring workers"
        m.remount()
        wait_uring_log(m, 2)
        check_set(m.path, sums, rng)
        assert sorted(os.listdir(d)) == names
        assert os.readlink(m.path / "link") == "f3"
        assert os.getxattr(m.path / "f1", "user.k") == b"v" * 3000
        assert os.listxattr(m.path / "f1") == ["user.k"]
        m.unmount()
    r = m.fsck()
    assert r.returncode == 0, r.stdout + r.stderr


def test_switch_off_serves_through_dev_fuse(make_mount):
    """Switch off: no io_uring workers, the same data comes back."""
    rng = random.Random(6)
    with fuse_uring(False):
        m = make_mount()
        sums = write_set(m.path, rng)
        # After requests were answered, so INIT certainly was.
        assert URING_LOG not in m.log.read_text()
        assert ring_threads(m.pid) == (0, 0)
        m.remount()
        check_set(m.path, sums, rng)
        m.unmount()
    assert m.fsck().returncode == 0


def test_daemon_killed_while_on_io_uring(make_mount):
    """A daemon killed (SIGKILL) with requests on its rings loses no
    fsynced byte: the dead mount clears, the next mount (over io_uring
    again) reads it all, and fsck is clean."""
    rng = random.Random(7)
    with fuse_uring(True):
        m = make_mount()
        wait_uring_log(m, 1)
        sums = write_set(m.path, rng)
        fd = os.open(m.path / "f7", os.O_RDONLY)
        try:
            os.pread(fd, MIB, 0)
            m.kill9()
            # From the page cache, or ENOTCONN; it must not hang.
            with contextlib.suppress(OSError):
                os.pread(fd, 4096, 2 * MIB)
        finally:
            with contextlib.suppress(OSError):  # ENOTCONN: it is gone
                os.close(fd)
        m.mount()
        wait_uring_log(m, 2)
        check_set(m.path, sums, rng)
        m.unmount()
    assert m.fsck().returncode == 0
