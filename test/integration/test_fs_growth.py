"""A mounted sixfold filesystem grows its volume as blocks are allocated,
stops cleanly at the maximum size, and gives freed space back.

The volume starts at 10 GiB and grows in 10 GiB steps (protection groups)
up to --max-size, here 25 GiB, so the last step is a partial one of 5 GiB.
Blocks are allocated with fallocate(2) (mode 0: allocated, unwritten,
reading as zeros), which costs no data writes: the test never writes more
than a few MiB, and the zone directories stay small.

Proves: statvfs reports the capacity opened so far (10, then 20, then
25 GiB), an allocation beyond what is left fails with ENOSPC and changes
nothing, the filesystem stays usable when full, deleting the files frees
their blocks for new allocations, fallocated blocks take no room in the
zones, and fsck is clean at the end.

With SIXFOLD_TEST_FALLBACK=1 the capacity is the host disk's: the sizes
are scaled down 16 times and only the checks that hold on any filesystem
run (allocate, use, delete, space comes back).
"""

import errno
import os
import time

from conftest import fallocate

GIB = 1 << 30
MIB = 1 << 20
FALLBACK = os.environ.get("SIXFOLD_TEST_FALLBACK") == "1"
SCALE = 16 if FALLBACK else 1  # fallback: keep the host disk's use small
STEP = 10 * GIB  # one protection group
MAX = 25 * GIB
CAP_TOL = 256 * MIB  # the PGs' own metadata blocks are not capacity
ZONES_MAX = 500 * MIB  # zone directories on disk, logs included


def capacity(path):
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def free(path):
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def wait_until(pred, timeout=60.0, interval=0.2):
    """Poll pred() until true or timeout; returns its last value (frees
    become visible once their transaction is durable, growth once the
    allocation commits: this waits for that without timing it)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def near(value, target, tol=CAP_TOL):
    return abs(value - target) <= tol


def gib(n):
    return f"{n / GIB:.3f} GiB"


def zones_bytes(mounted):
    """Bytes the six zone directories take on disk (st_blocks)."""
    total = 0
    for z in mounted.zones:
        for dirpath, dirnames, filenames in os.walk(z):
            for name in dirnames + filenames:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def write_check(path, n):
    """Write n bytes to a new file, fsync, read them back."""
    data = os.urandom(n)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert path.read_bytes() == data, f"{path}: read back differs"


def test_growth_enospc_and_free(make_mount):
    """Capacity 10 GiB at first, 20 GiB once more than 10 GiB is
    allocated, 25 GiB (the maximum) after that; an allocation past the
    end fails with ENOSPC and allocates nothing; the full filesystem
    still creates, writes and reads; deleting the big files frees their
    space, which can be allocated again; the zones hold no data for the
    fallocated blocks; fsck is clean."""
    m = make_mount(max_size="25G")
    root = m.path / "growth"
    root.mkdir()
    zones0 = zones_bytes(m)
    cap0 = capacity(m.path)
    free0 = free(m.path)
    print(f"start: capacity {gib(cap0)}, free {gib(free0)}, zones "
          f"{zones0 / MIB:.1f} MiB")
    if not FALLBACK:
        assert near(cap0, STEP), f"initial capacity {gib(cap0)}, not ~10 GiB"

    def step(name, size, expect_cap):
        fallocate(root / name, size // SCALE)
        st = os.stat(root / name)
        assert st.st_size == size // SCALE
        cap, fr = capacity(m.path), free(m.path)
        print(f"after {name} ({gib(size // SCALE)}): capacity {gib(cap)}, "
              f"free {gib(fr)}")
        if FALLBACK:
            return
        ok = wait_until(lambda: near(capacity(m.path), expect_cap))
        assert ok, (f"after {name}: capacity {gib(capacity(m.path))}, "
                    f"expected ~{gib(expect_cap)}")

    # A PG counts as full with less than 1/16 (640 MiB) free, so the
    # totals stay clear of 10 - 0.625 and 20 - 2 * 0.625 GiB, where the
    # allocator may open the next PG a little early.
    step("big1", 8 * GIB, STEP)          # 8 GiB: fits in the first PG
    if not FALLBACK:
        used = free0 - free(m.path)
        assert used >= 8 * GIB - CAP_TOL, (
            f"8 GiB fallocated but free space fell by only {gib(used)}")
    step("big2", 4 * GIB, 2 * STEP)      # 12 GiB: a second PG
    step("big3", 5 * GIB, 2 * STEP)      # 17 GiB: still two
    step("big4", 4 * GIB, MAX)           # 21 GiB: the last, partial PG

    if not FALLBACK:
        # Past the end: ENOSPC, and nothing allocated by the attempt.
        left = free(m.path)
        assert left < 4 * GIB, f"{gib(left)} free of a 25 GiB volume"
        try:
            fallocate(root / "too-big", left + GIB)
        except OSError as e:
            assert e.errno == errno.ENOSPC, f"expected ENOSPC, got {e!r}"
        else:
            raise AssertionError(
                f"fallocate of {gib(left + GIB)} with {gib(left)} free "
                "succeeded")
        after = free(m.path)
        assert after >= left - 64 * MIB, (
            f"the failed fallocate kept space: {gib(left)} free before, "
            f"{gib(after)} after")
        assert near(capacity(m.path), MAX), "capacity past the maximum"
        if (root / "too-big").exists():
            os.unlink(root / "too-big")

    # Still usable with the volume (nearly) full.
    write_check(root / "small-after-full", MIB)
    (root / "dir-after-full").mkdir()
    write_check(root / "dir-after-full" / "f", 4096)

    # Delete the big files: the space comes back and can be used again.
    for name in ("big1", "big2", "big3", "big4"):
        os.unlink(root / name)
    fd = os.open(root, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    tol = 512 * MIB if FALLBACK else 64 * MIB
    back = wait_until(lambda: free(m.path) >= free0 - tol)
    assert back, (f"free space did not come back: {gib(free(m.path))}, "
                  f"{gib(free0)} at the start")
    write_check(root / "small-after-delete", 4 * MIB)
    fallocate(root / "again", 15 * GIB // SCALE)
    os.unlink(root / "again")
    print(f"end: capacity {gib(capacity(m.path))}, free "
          f"{gib(free(m.path))}")

    # Unwritten blocks take no room in the zones (six copies of a few MiB
    # of data and metadata on top of the preallocated logs).
    zones1 = zones_bytes(m)
    print(f"zones use {zones1 / MIB:.1f} MiB on disk "
          f"({zones0 / MIB:.1f} MiB at the start)")
    assert zones1 < ZONES_MAX, (
        f"zone directories use {zones1 / MIB:.1f} MiB: fallocated blocks "
        "were written as data")

    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, (f"fsck exit {r.returncode}\nstdout: "
                               f"{r.stdout}\nstderr: {r.stderr}")
    assert zones_bytes(m) < ZONES_MAX
