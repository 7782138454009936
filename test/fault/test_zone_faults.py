"""One zone slow, failing or full under a mounted sixfold filesystem.

Zone 5's directory is a faultfs mount (test/tools/faultfs.c: a FUSE
passthrough of zone5.backing) whose control file makes every open,
create, read, write, fsync and fallocate of that zone sleep or fail on
command.  The volume is made and mounted as usual (`sixfold mkfs`,
`sixfold mount -f -o allow_other`), then:

- slow zone (delay_ms 100): writes with fsync all succeed and read back;
  no timing is asserted, the elapsed time is printed for information;
- failing zone (fail EIO) and full zone (fail ENOSPC) after some data is
  in: the volume goes on with five zones (write quorum 4), every write and
  fsync succeeds, the daemon logs that zone 5 left the write set.

Each test then clears the fault, unmounts, runs `sixfold fsck` (clean),
mounts again and reads everything back.  Teardown always unmounts the
sixfold mount first, then the faultfs mount, and reaps both children (by
their pids).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from conftest import NZONES, is_mount, make_key, mkfs, run, write_synced
from lib import drill

KIB = 1 << 10
FILE_BYTES = 256 * KIB
NFILES = 20  # files written under the fault
NBEFORE = 5  # files written before a zone fails
READY_S = 30  # seconds a mount may take to appear
IO_DEADLINE_S = 60  # seconds a batch of writes (or reads) may take
CTL_SETTLE_S = 0.15  # faultfs looks at its control file every 50 ms
FAULT_ZONE = NZONES - 1


@pytest.fixture(scope="session")
def faultfs_bin(tools_dir):
    """Path of test/tools/faultfs; skips without it or without FUSE."""
    path = tools_dir / "faultfs"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        pytest.skip("no /dev/fuse or fusermount3")
    return path


def wait_mounted(path, proc, log, what):
    """Wait until path is a mount point; fail if proc exits first."""
    deadline = time.monotonic() + READY_S
    while not is_mount(path):
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} exited {proc.returncode} before mounting: "
                f"{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not mounted in {READY_S} s")
        time.sleep(0.05)


def start_logged(cmd, log, env=None):
    """Popen cmd with stdout and stderr appended to log."""
    cmd = [str(c) for c in cmd]
    print("+", shlex.join(cmd))
    with open(log, "ab") as logf:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=logf, env=env)


def reap(proc, timeout=30):
    """Wait for proc; kill it (its pid only) if it does not exit."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)


def with_deadline(fn, what, seconds=IO_DEADLINE_S):
    """Run fn() in a thread; fail the test if it has not returned within
    seconds (a hang on the mount: teardown kills the daemon, which frees
    the blocked thread)."""
    return drill.with_deadline(fn, what, seconds)


class Rig:
    """Six zones under base, zone 5 a faultfs mount over zone5.backing,
    and the sixfold volume on them mounted at base/mnt."""

    def __init__(self, base, sixfold, faultfs):
        self.base = base
        self.sixfold = sixfold
        self.faultfs = faultfs
        os.chmod(base, 0o755)
        self.zones = [base / f"zone{i}" for i in range(NZONES)]
        for z in self.zones:
            z.mkdir()
        self.backing = base / f"zone{FAULT_ZONE}.backing"
        self.backing.mkdir()
        self.ctl_path = base / "faultfs.ctl"
        self.ctl_path.write_text("")
        self.ff_log = base / "faultfs.log"
        self.log = base / "daemon.log"
        self.mnt = base / "mnt"
        self.mnt.mkdir()
        self.key = make_key(base / "key")
        self.ff_proc = None
        self.proc = None

    # ---- faultfs ----

    def start_faultfs(self):
        zone = self.zones[FAULT_ZONE]
        env = dict(os.environ, FAULTFS_CTL=str(self.ctl_path))
        self.ff_proc = start_logged(
            [self.faultfs, self.backing, zone, "-f"], self.ff_log, env)
        wait_mounted(zone, self.ff_proc, self.ff_log, "faultfs")

    def ctl(self, text):
        """Set zone 5's fault state (the whole control file)."""
        print(f"faultfs ctl: {text.strip()!r}")
        tmp = self.ctl_path.with_name(self.ctl_path.name + ".tmp")
        tmp.write_text(text)
        os.rename(tmp, self.ctl_path)
        time.sleep(CTL_SETTLE_S)

    def stop_faultfs(self):
        zone = self.zones[FAULT_ZONE]
        if is_mount(zone):
            r = run(["fusermount3", "-u", zone], timeout=60)
            if r.returncode:
                print(f"fusermount3 -u: {r.stderr.strip()}; lazy unmount")
                run(["fusermount3", "-u", "-z", zone], timeout=60)
        if self.ff_proc is not None:
            if self.ff_proc.poll() is None:
                try:
                    self.ff_proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.ff_proc.terminate()
            reap(self.ff_proc)
            self.ff_proc = None

    # ---- sixfold ----

    def mkfs(self):
        r = mkfs(self.sixfold, self.zones, self.key)
        assert r.returncode == 0, f"mkfs failed: {r.stdout}{r.stderr}"

    def mount(self):
        assert self.proc is None, "already mounted"
        self.proc = start_logged(
            [self.sixfold, "mount", "-f", "--key-file", self.key,
             "-o", "allow_other", self.zones[0], self.mnt], self.log)
        try:
            wait_mounted(self.mnt, self.proc, self.log, "sixfold mount")
        except AssertionError:
            if self.proc.poll() is not None:
                self.proc = None
            raise

    def unmount(self):
        """sixfold umount; the daemon must exit 0."""
        assert self.proc is not None, "not mounted"
        r = run([self.sixfold, "umount", self.mnt])
        assert r.returncode == 0, (
            f"umount exit {r.returncode}: {r.stdout}{r.stderr}\n"
            f"daemon log:\n{self.log_text()}")
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("hang: daemon still running 120 s after "
                                 f"umount\n{self.log_text()}")
        self.proc = None
        assert rc == 0, f"daemon exit {rc}:\n{self.log_text()}"

    def fsck(self):
        r = run([self.sixfold, "fsck", "--key-file", self.key,
                 self.zones[0]], timeout=300)
        print(r.stdout, r.stderr)
        assert r.returncode == 0, (
            f"fsck exit {r.returncode}:\n{r.stdout}{r.stderr}")

    def status(self):
        """sixfold status --json on zone 0, parsed."""
        r = run([self.sixfold, "status", "--json", self.zones[0]])
        assert r.returncode == 0, f"status exit {r.returncode}: {r.stderr}"
        st = json.loads(r.stdout)
        print("status:", st["health"], "in use by", repr(st["in_use_by"]),
              [(z["index"], z["state"], z["reason"]) for z in st["zones"]])
        return st

    def log_text(self):
        return self.log.read_text(errors="replace") \
            if self.log.exists() else ""

    def stop_sixfold(self):
        if self.proc is not None:
            try:
                run([self.sixfold, "umount", self.mnt], timeout=60)
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is None:
                self.proc.kill()
            reap(self.proc)
            self.proc = None
        if is_mount(self.mnt):
            run(["fusermount3", "-u", "-z", self.mnt], timeout=60)

    def cleanup(self):
        """Sixfold first (its zone 5 is on faultfs), then faultfs."""
        try:
            if self.ff_proc is not None and self.ff_proc.poll() is None:
                self.ctl("")  # no faults: let the unmount go quickly
            self.stop_sixfold()
        finally:
            self.stop_faultfs()
        if not any(is_mount(z) for z in self.zones):
            for z in [*self.zones, self.backing]:
                shutil.rmtree(z, ignore_errors=True)


@pytest.fixture
def rig(tmp_path, sixfold_bin, faultfs_bin):
    """A mounted volume whose zone 5 goes through faultfs (no faults)."""
    r = Rig(tmp_path, sixfold_bin, faultfs_bin)
    try:
        r.start_faultfs()
        r.mkfs()
        r.mount()
        yield r
    finally:
        r.cleanup()


# ---- the workload ----

def write_files(rig, files, first, count):
    """Write and fsync count new files of FILE_BYTES (random content),
    adding them to files; fails on the first error, or on a hang.
    Returns the time taken, as text for a print."""
    names = [f"f{i:03d}" for i in range(first, first + count)]
    times = []

    def body():
        for name in names:
            data = os.urandom(FILE_BYTES)
            t0 = time.monotonic()
            try:
                write_synced(rig.mnt / name, data)
            except OSError as e:
                raise AssertionError(
                    f"write+fsync of {name} failed: {e!r}\n"
                    f"daemon log:\n{rig.log_text()}") from e
            times.append(time.monotonic() - t0)
            files[name] = data

    with_deadline(body, f"writing {names[0]}..{names[-1]}")
    return f"in {sum(times):.2f} s (slowest file {max(times):.2f} s)"


def check_files(rig, files):
    """Every file reads back as written; the directory holds no others."""
    def body():
        assert sorted(os.listdir(rig.mnt)) == sorted(files)
        for name, data in files.items():
            got = (rig.mnt / name).read_bytes()
            assert got == data, (
                f"{name}: {len(got)} bytes differ from the "
                f"{len(data)} written")

    with_deadline(body, "reading the files back")


def check_zone_left(rig):
    """The daemon log says zone 5 left the write set (polled briefly: the
    failure shows when its I/O completes)."""
    pat = re.compile(rf"zone {FAULT_ZONE} \(.*\) left the write set")
    deadline = time.monotonic() + 10
    while not pat.search(rig.log_text()):
        assert time.monotonic() < deadline, (
            f"no 'zone {FAULT_ZONE} ... left the write set' in the daemon "
            f"log:\n{rig.log_text()}")
        time.sleep(0.2)
    for line in rig.log_text().splitlines():
        if "write set" in line:
            print("daemon:", line)


def restart_and_check(rig, files):
    """Unmount (clean), fsck (clean), mount again, everything there."""
    rig.unmount()
    rig.fsck()
    rig.mount()
    check_files(rig, files)
    rig.status()  # for information: zone 5's state after the reopen
    rig.unmount()


# ---- tests ----

def test_slow_zone(rig):
    """delay_ms 100 on zone 5: writes with fsync never fail, read back."""
    files = {}
    rig.ctl("delay_ms 100\n")
    took = write_files(rig, files, 0, NFILES)
    print(f"slow zone: {NFILES} x {FILE_BYTES // KIB} KiB written and "
          f"fsynced {took}")
    check_files(rig, files)
    st = rig.status()
    assert len(st["zones"]) == NZONES
    assert st["in_use_by"], f"status does not show the volume in use: {st}"
    rig.ctl("delay_ms 0\n")
    restart_and_check(rig, files)


def failing_zone(rig, err):
    """Zone 5 starts failing with err after some data is in: the volume
    goes on with five zones; then the fault clears and the volume
    unmounts, checks and mounts clean with everything in it."""
    files = {}
    write_files(rig, files, 0, NBEFORE)
    rig.ctl(f"fail {err}\n")
    took = write_files(rig, files, NBEFORE, NFILES)
    print(f"zone {FAULT_ZONE} failing with {err}: {NFILES} x "
          f"{FILE_BYTES // KIB} KiB written and fsynced {took}")
    check_files(rig, files)
    check_zone_left(rig)
    rig.status()
    rig.ctl("fail none\n")
    restart_and_check(rig, files)
    print(f"faultfs log:\n{rig.ff_log.read_text(errors='replace')}")


def test_failing_zone_eio(rig):
    failing_zone(rig, "EIO")


def test_full_zone_enospc(rig):
    failing_zone(rig, "ENOSPC")
