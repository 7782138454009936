"""The mount daemon's life: signals unmount it without losing what the
kernel still caches, a busy mount keeps serving, mount points with odd
names, and the refusals a user can meet (each test cleans up its mount).
"""

import errno
import os
import signal
import subprocess

from conftest import (DEFAULT_TIMEOUT, Mount, is_mount, make_key, mkfs,
                      run, wait_for)

MIB = 1 << 20


def test_sigterm_unmounts_and_keeps_cached_writes(make_mount):
    """SIGTERM to the daemon unmounts like `sixfold umount`: what the
    kernel's writeback cache still held (written, closed, never fsynced)
    reaches the volume before the daemon exits 0."""
    m = make_mount()
    data = os.urandom(8 * MIB)
    (m.path / "f").write_bytes(data)
    os.kill(m.pid, signal.SIGTERM)
    assert m.proc.wait(timeout=DEFAULT_TIMEOUT) == 0, m.log.read_text()
    m.proc = None
    assert not is_mount(m.path)
    m.mount()
    assert (m.path / "f").read_bytes() == data
    m.unmount()
    assert m.fsck().returncode == 0


def test_sigterm_with_open_files_keeps_serving(make_mount):
    """With a file open on the mount, SIGTERM cannot unmount (EBUSY): the
    daemon says so and keeps serving, nothing is lost; after the close a
    second SIGTERM unmounts."""
    m = make_mount()
    data = os.urandom(MIB)
    with open(m.path / "open", "wb") as f:
        f.write(data)
        f.flush()
        os.kill(m.pid, signal.SIGTERM)
        wait_for(lambda: "cannot unmount" in m.log.read_text(),
                 what="the daemon's refusal in its log")
        assert m.proc.poll() is None and is_mount(m.path)
        f.write(data)
    assert (m.path / "open").read_bytes() == data + data
    os.kill(m.pid, signal.SIGTERM)
    assert m.proc.wait(timeout=DEFAULT_TIMEOUT) == 0, m.log.read_text()
    m.proc = None
    m.mount()
    assert (m.path / "open").read_bytes() == data + data


def test_mount_point_with_a_space(tmp_path, sixfold_bin):
    """A mount point whose name holds a space mounts and `sixfold umount`
    finds it (mountinfo escapes the space)."""
    base = tmp_path / "with space"
    base.mkdir()
    m = Mount(base, sixfold_bin)
    try:
        (m.path / "x").write_bytes(b"x")
        m.unmount()
        assert not is_mount(m.path)
    finally:
        m.cleanup()


def test_mount_refusals(tmp_path, sixfold_bin):
    """Bad input gets one clear line and a non-zero exit: a mount point
    that is a file, a missing volume, an unknown option, ro, a wrong key
    (exit 2); umount of something that is not a sixfold mount; fsck of a
    volume never mounted says there is nothing to check yet."""
    zones = [tmp_path / f"zone{i}" for i in range(6)]
    key = make_key(tmp_path / "key")
    assert mkfs(sixfold_bin, zones, key).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    afile = tmp_path / "afile"
    afile.write_bytes(b"")

    def mount(*args):
        return run([sixfold_bin, "mount", "-f", "--key-file", key, *args],
                   timeout=60)

    r = mount(zones[0], afile)
    assert r.returncode == 1 and "not a directory" in r.stderr
    r = mount(tmp_path / "nothere", mnt)
    assert r.returncode == 1 and "nothere" in r.stderr
    r = mount("-o", "bogus", zones[0], mnt)
    assert r.returncode == 64 and "unknown mount option 'bogus'" in r.stderr
    r = mount("-o", "ro", zones[0], mnt)
    assert r.returncode == 64 and "read-only" in r.stderr
    for bad in ("", "abc", "-1", "1.5", "1048577"):
        r = mount("-o", f"dirty_max={bad}", zones[0], mnt)
        assert r.returncode == 64 and "give whole MiB" in r.stderr, bad
    # An empty write-timeout= was taken for 0 (wait forever) once.
    for bad in ("", "abc", "-1", "31536001"):
        r = mount("-o", f"write-timeout={bad}", zones[0], mnt)
        assert r.returncode == 64 and "give whole seconds" in r.stderr, bad
    wrong = make_key(tmp_path / "wrong")
    r = run([sixfold_bin, "mount", "--key-file", wrong, zones[0], mnt],
            timeout=60)
    assert r.returncode == 2 and "wrong passphrase or key file" in r.stderr
    assert not is_mount(mnt)
    r = run([sixfold_bin, "umount", mnt])
    assert r.returncode == 1 and "not a mount point" in r.stderr
    r = run([sixfold_bin, "fsck", "--key-file", key, zones[0]])
    assert r.returncode == 0 and "no filesystem yet" in r.stdout


def test_mount_helper_fake_and_fstab_form(tmp_path, sixfold_bin):
    """mount(8) runs `mount.sixfold SOURCE DIR -o OPTS` for fstab lines of
    type sixfold: key-file= and generic options in -o work, and its
    "fake" -f does nothing."""
    zones = [tmp_path / f"zone{i}" for i in range(6)]
    key = make_key(tmp_path / "key")
    assert mkfs(sixfold_bin, zones, key).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    helper = tmp_path / "mount.sixfold"
    helper.symlink_to(sixfold_bin)
    r = run([helper, zones[0], mnt, "-f", "-o", f"rw,key-file={key}"])
    assert r.returncode == 0 and not is_mount(mnt)
    r = run([helper, zones[0], mnt, "-o",
             f"rw,nofail,_netdev,key-file={key},allow_other"], timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mount(mnt)
        (mnt / "f").write_bytes(b"fstab")
    finally:
        if is_mount(mnt):
            u = run([sixfold_bin, "umount", mnt])
            if u.returncode:
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    assert not is_mount(mnt)


def bdi_knob(mnt, knob):
    """The value of a knob of the mount's backing device in sysfs."""
    dev = os.stat(mnt).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/{knob}"
    with open(path) as f:
        return int(f.read())


def dirty_cap():
    """A quarter of the host's dirty page limit now, in bytes."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("nr_dirty_threshold "):
                return int(line.split()[1]) * os.sysconf("SC_PAGE_SIZE") // 4
    raise AssertionError("no nr_dirty_threshold in /proc/vmstat")


def test_dirty_max_sets_the_mounts_dirty_page_limit(make_mount):
    """The daemon (root here) lets the kernel hold 1 GiB of the mount's
    dirty pages by default and dirty_max= MiB when given, where FUSE
    mounts otherwise get 1 % of the host's dirty limit, but never more
    than a quarter of that limit (and it says so); the strict limit that
    keeps the mount within its own share stays.  dirty_max=0 leaves the
    kernel's own limit.  The kernel keeps the limit as a ratio of the
    host's, which moves with free memory, so the bytes read back are
    close, not equal."""
    def near(mnt, want):
        return abs(bdi_knob(mnt, "max_bytes") - want) < want // 50 + MIB

    m = make_mount()
    wait_for(lambda: near(m.path, min(1024 * MIB, dirty_cap())),
             what="max_bytes near 1 GiB")
    assert bdi_knob(m.path, "strict_limit") == 1
    assert bdi_knob(m.path, "read_ahead_kb") == 4096
    m.unmount()
    m.mount(extra_opts=["dirty_max=64"])
    wait_for(lambda: near(m.path, 64 * MIB), what="max_bytes near 64 MiB")
    assert bdi_knob(m.path, "strict_limit") == 1
    m.unmount()
    m.mount(extra_opts=["dirty_max=1048576"])
    wait_for(lambda: near(m.path, dirty_cap()),
             what="max_bytes near a quarter of the host's dirty limit")
    assert "dirty_max lowered from 1048576" in m.log.read_text()
    m.unmount()
    m.mount(extra_opts=["dirty_max=0"])
    wait_for(lambda: bdi_knob(m.path, "read_ahead_kb") == 4096,
             what="the daemon's tuning of readahead")
    assert bdi_knob(m.path, "max_ratio") == 1
    assert bdi_knob(m.path, "strict_limit") == 1


def mount_flags(path):
    """The options the kernel shows for the mount at path (mountinfo):
    the mount's own (noexec) and its superblock's (sync)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                sb = fields[fields.index("-") + 3]
                return set(fields[5].split(",")) | set(sb.split(","))
    raise AssertionError(f"{path} is not in mountinfo")


def test_noexec_and_sync_reach_the_kernel(make_mount):
    """-o noexec and -o sync are the kernel's, as on any file system:
    with noexec a program on the mount does not run (EACCES); with sync
    every write(2) is durable when it returns, so a crash of the daemon
    right after it, without fsync, loses nothing (without sync the same
    write may still sit in the kernel's cache).  Without them, neither
    flag is set, and a program runs."""
    m = make_mount()
    assert not mount_flags(m.path) & {"noexec", "sync"}
    prog = m.path / "prog"
    prog.write_text("#!/bin/sh\nexit 7\n")
    prog.chmod(0o755)
    assert subprocess.run([str(prog)]).returncode == 7
    m.unmount()

    m.mount(extra_opts=["noexec", "sync"])
    assert {"noexec", "sync"} <= mount_flags(m.path)
    try:
        subprocess.run([str(prog)])
        raise AssertionError("a program ran on a noexec mount")
    except PermissionError:
        pass
    data = os.urandom(3 * 4096 + 5)
    fd = os.open(m.path / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        m.kill9()  # no fsync, no close: the write alone must be durable
    finally:
        try:
            os.close(fd)
        except OSError as e:  # the daemon is gone: ENOTCONN
            assert e.errno == errno.ENOTCONN, e
    m.mount(extra_opts=["exec", "async"])
    assert not mount_flags(m.path) & {"noexec", "sync"}
    assert (m.path / "synced").read_bytes() == data
