"""Zones out of space under a mount: the filesystem refuses new data with
ENOSPC, keeps working (reads, deletes), and takes writes again once
deleting has given the zones room back; fsck is clean after.  The six
zones live on one small tmpfs (mounted and unmounted by the test), so
they all fill at once."""

import errno
import os
import subprocess
import time

import pytest

from conftest import Mount, run, write_synced

MIB = 1 << 20
ZONE_FS = "120m"  # six 8 MiB logs plus room for a few MiB of data x 6


@pytest.fixture
def small_zone_fs(tmp_path):
    path = tmp_path / "zonefs"
    path.mkdir()
    r = run(["mount", "-t", "tmpfs", "-o", f"size={ZONE_FS}", "tmpfs", path])
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr}")
    try:
        yield path
    finally:
        for _ in range(50):
            if run(["umount", path]).returncode == 0:
                break
            time.sleep(0.2)


def test_full_zones_enospc_then_usable(small_zone_fs, sixfold_bin):
    """Fill until ENOSPC (at write or fsync), then: existing files read
    back, deletes work, and after them new writes succeed; unmount and
    fsck are clean."""
    m = Mount(small_zone_fs, sixfold_bin, log_size="8M")
    try:
        written = {}
        hit = None
        for i in range(200):
            data = os.urandom(MIB)
            try:
                write_synced(m.path / f"f{i}", data)
            except OSError as e:
                hit = e
                break
            written[f"f{i}"] = data
        assert hit is not None, "the zones never filled"
        assert hit.errno == errno.ENOSPC, f"expected ENOSPC, got {hit!r}"
        assert len(written) >= 2
        for name, data in written.items():
            assert (m.path / name).read_bytes() == data
        names = sorted(written)
        for name in names[: len(names) // 2 + 1]:
            os.unlink(m.path / name)
            del written[name]
        # The volume gets the space back once its deletes are applied
        # to the zones (materialisation): retry for a while.
        deadline = time.monotonic() + 60
        while True:
            try:
                write_synced(m.path / "after", b"y" * MIB)
                break
            except OSError as e:
                assert e.errno == errno.ENOSPC, repr(e)
                assert time.monotonic() < deadline, "space never came back"
                time.sleep(0.5)
        assert (m.path / "after").read_bytes() == b"y" * MIB
        for name, data in written.items():
            assert (m.path / name).read_bytes() == data
        m.unmount()
        r = m.fsck()
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        m.cleanup()
        subprocess.run(["sync"])
