"""Shared pytest fixtures and helpers for sixfold's integration and fault
tests.

`make test-int` builds first and exports SIXFOLD_BIN (the sixfold program)
and SIXFOLD_TOOLS (the directory of test/tools programs); run by hand,
the defaults point into <repo>/build.  Every subprocess has a wall-clock
limit (no pytest-timeout on Debian 12): use run(), not subprocess directly.
"""

import contextlib
import ctypes
import ctypes.util
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 120  # seconds, for any one command
NZONES = 6


def run(cmd, timeout=DEFAULT_TIMEOUT, **kw):
    """Run cmd (a list) with a timeout; return the CompletedProcess.

    Output is captured as text unless stdout/stderr are given; stdin is
    /dev/null unless stdin/input are given, so nothing waits on a prompt.
    The command line is printed first, so a failing test shows how to
    reproduce it.  check=True raises CalledProcessError as usual.
    """
    cmd = [str(c) for c in cmd]
    if "stdout" not in kw and "stderr" not in kw:
        kw.setdefault("capture_output", True)
    if "stdin" not in kw and "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    kw.setdefault("text", True)
    print("+", shlex.join(cmd))
    return subprocess.run(cmd, timeout=timeout, **kw)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                            ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(path, length, mode=0):
    """fallocate(2) with mode of length bytes at offset 0 of path (made if
    missing), then fsync.

    Not os.posix_fallocate: where the filesystem lacks fallocate, glibc
    emulates it by writing to every block, which here would write
    gigabytes six times over; fallocate(2) fails with EOPNOTSUPP instead.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if _libc.fallocate(fd, mode, 0, length) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"fallocate {path} {length}: {os.strerror(e)}")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path, data):
    """Write data as path's whole content, then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, data) == len(data), f"{path}: short write"
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path):
    """fsync a file or directory by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long drill (deselect with -m 'not slow')")


# The host's switch for FUSE over io_uring (Linux 6.14 and later, root
# only): read by the kernel when a mount starts, so it decides for the
# mounts made while it is set.  Every change is put back.
URING_SWITCH = pathlib.Path("/sys/module/fuse/parameters/enable_uring")


@contextlib.contextmanager
def fuse_uring(on):
    """Mounts made inside get FUSE over io_uring (on) or /dev/fuse."""
    old = URING_SWITCH.read_text().strip()
    URING_SWITCH.write_text("Y" if on else "N")
    try:
        yield
    finally:
        URING_SWITCH.write_text(old)


@pytest.fixture(scope="session", autouse=True)
def uring_for_session():
    """SIXFOLD_TEST_URING=1 (make test-uring) runs the whole session with
    FUSE over io_uring on; unset, the host's switch is left alone."""
    if os.environ.get("SIXFOLD_TEST_URING") != "1":
        yield
        return
    assert URING_SWITCH.exists(), \
        f"SIXFOLD_TEST_URING=1, but this kernel has no {URING_SWITCH}"
    with fuse_uring(True):
        yield


@pytest.fixture(scope="session")
def sixfold_bin():
    """Path of the sixfold program; skips the test if it is not built."""
    path = pathlib.Path(os.environ.get("SIXFOLD_BIN",
                                       REPO / "build" / "sixfold"))
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


@pytest.fixture(scope="session")
def tools_dir():
    """Directory holding the test/tools programs (build/tools)."""
    return pathlib.Path(os.environ.get("SIXFOLD_TOOLS",
                                       REPO / "build" / "tools"))


@pytest.fixture
def zones(tmp_path):
    """Six empty zone directories, tmp_path/zone0 .. zone5, as a list."""
    paths = [tmp_path / f"zone{i}" for i in range(NZONES)]
    for p in paths:
        p.mkdir()
    return paths


# ---- volume helpers (test/fault, test/integration volume tests) ----------

LOG_SIZE = "8M"  # the smallest log: keeps zones and tests small
PG_BLOCKS = 2621440  # blocks per protection group (10 GiB)
BLOCK = 4096


@pytest.fixture(scope="session")
def voltool_bin(tools_dir):
    """Path of test/tools/voltool; skips the test if it is not built."""
    path = tools_dir / "voltool"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


def make_key(path):
    """Write a random 32-byte key file at path and return path."""
    path.write_bytes(os.urandom(32))
    return path


@pytest.fixture
def key_file(tmp_path):
    """A random key file, tmp_path/key."""
    return make_key(tmp_path / "key")


def flip_bytes(path, offsets, rng):
    """XOR the byte at each offset of path with a random non-zero value."""
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)
            assert len(b) == 1, f"{path}: offset {off} past the end"
            f.seek(off)
            f.write(bytes([b[0] ^ rng.randrange(1, 256)]))
        f.flush()
        os.fsync(f.fileno())


class Volume:
    """A volume formatted in six zone directories, and ways to drive it.

    Zones are hidden by renaming zoneN to zoneN.away (a lost disk).
    vt() runs voltool against the six zone paths with the key file.
    """

    def __init__(self, zones, key, voltool, sixfold):
        self.zones = list(zones)
        self.key = key
        self.voltool = voltool
        self.sixfold = sixfold

    def away(self, z):
        return self.zones[z].with_name(self.zones[z].name + ".away")

    def hide(self, z):
        os.rename(self.zones[z], self.away(z))

    def unhide(self, z):
        os.rename(self.away(z), self.zones[z])

    def hidden(self):
        return [z for z in range(NZONES) if not self.zones[z].exists()]

    def zone_files(self, z):
        """Every regular file of zone z (hidden or not), sorted."""
        root = self.zones[z] if self.zones[z].exists() else self.away(z)
        return sorted(p for p in root.rglob("*") if p.is_file())

    def vt_cmd(self, cmd, *args, key=None):
        key_args = [] if key is False else ["--key-file", key or self.key]
        return [self.voltool, cmd, *key_args, *args, *self.zones]

    def vt(self, cmd, *args, key=None, timeout=DEFAULT_TIMEOUT, **kw):
        """Run voltool cmd; returns the CompletedProcess."""
        return run(self.vt_cmd(cmd, *args, key=key), timeout=timeout, **kw)

    def vt_ok(self, cmd, *args, **kw):
        """Run voltool cmd and require exit 0; returns stdout."""
        r = self.vt(cmd, *args, **kw)
        assert r.returncode == 0, (
            f"voltool {cmd} exit {r.returncode}\n"
            f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r.stdout

    def info(self, *args):
        """vol_info of the open volume as a dict (voltool info)."""
        return json.loads(self.vt_ok("info", *args).splitlines()[-1])

    def sixfold_cmd(self, *args):
        return run([self.sixfold, *args])


def mkfs(sixfold, zones, key, log_size=LOG_SIZE, extra=()):
    """sixfold mkfs with a key file; returns the CompletedProcess."""
    args = [sixfold, "mkfs", "--key-file", key]
    if log_size:
        args += ["--log-size", log_size]
    return run([*args, *extra, *zones])


@pytest.fixture
def make_volume(zones, key_file, voltool_bin, sixfold_bin):
    """Factory: make_volume(extra=("--max-size", "20M")) formats the six
    `zones` with `key_file` and an 8 MiB log and returns a Volume."""
    def make(extra=(), log_size=LOG_SIZE):
        r = mkfs(sixfold_bin, zones, key_file, log_size, extra)
        assert r.returncode == 0, f"mkfs failed: {r.stderr}"
        return Volume(zones, key_file, voltool_bin, sixfold_bin)
    return make


@pytest.fixture
def procs():
    """A list to append background Popen objects to; every one still
    running at teardown is killed (by its pid) and reaped."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


# ---- mounted filesystems (test/posix, test/integration fs tests) ---------

MOUNT_LOG_SIZE = "64M"  # room for a few seconds of writes between rounds
MOUNT_READY_S = 60  # seconds a mount may take to become ready


def wait_for(pred, timeout=60, what="a condition"):
    """Poll pred() until it returns something true, and return that;
    fail the test if it has not within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def is_mount(path):
    """True if path is a mount point (per /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == target:
                return True
    return False


class Mount:
    """A sixfold volume in six zone directories, mounted at `path`.

    The daemon runs in the foreground (-f) as a child of the test, so the
    test owns its PID: kill9() is a crash of the daemon.  With the
    environment variable SIXFOLD_TEST_FALLBACK=1 nothing is mounted and
    `path` is a plain directory of the same disk (to check a test's
    expectations against the kernel's own filesystem); then remount,
    kill9 and fsck only pretend.
    """

    def __init__(self, base, sixfold, opts=("allow_other",),
                 max_size=None, log_size=MOUNT_LOG_SIZE, prefix=(),
                 before_mkfs=None):
        self.base = pathlib.Path(base)
        self.sixfold = sixfold
        self.opts = list(opts)
        # Command prefix for the daemon, e.g. ("setpriv", ...) to start it
        # without some capabilities; it must exec the daemon, so that
        # self.pid stays the daemon's.
        self.prefix = [str(c) for c in prefix]
        self.fallback = os.environ.get("SIXFOLD_TEST_FALLBACK") == "1"
        self.path = self.base / "mnt"
        self.path.mkdir()
        os.chmod(self.base, 0o755)
        self.zones = [self.base / f"zone{i}" for i in range(NZONES)]
        self.key = make_key(self.base / "key")
        self.proc = None
        self.log = self.base / "daemon.log"
        if self.fallback:
            return
        if before_mkfs is not None:
            # May set up zone directories (a loop-mounted disk, a faultfs
            # mount) or point self.zones elsewhere before mkfs.
            before_mkfs(self)
        extra = ["--max-size", max_size] if max_size else []
        r = mkfs(sixfold, self.zones, self.key, log_size, extra)
        assert r.returncode == 0, f"mkfs failed: {r.stderr}"
        self.mount()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def mount(self, extra_opts=()):
        """Start the daemon (foreground) and wait until the mount is up."""
        if self.fallback:
            return
        assert self.proc is None, "already mounted"
        opts = ",".join(self.opts + list(extra_opts))
        cmd = [*self.prefix, self.sixfold, "mount", "-f", "--key-file",
               self.key]
        if opts:
            cmd += ["-o", opts]
        cmd += [self.zones[0], self.path]
        print("+", shlex.join(str(c) for c in cmd))
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(c) for c in cmd],
                                     stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + MOUNT_READY_S
        while not is_mount(self.path):
            if self.proc.poll() is not None:
                self.proc = None
                raise AssertionError(
                    f"sixfold mount exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise AssertionError("mount not ready in time")
            time.sleep(0.05)

    def unmount(self):
        """sixfold umount, then wait for the daemon to exit (status 0)."""
        if self.fallback or self.proc is None:
            return
        r = run([self.sixfold, "umount", self.path])
        assert r.returncode == 0, f"umount failed: {r.stderr}"
        rc = self.proc.wait(timeout=DEFAULT_TIMEOUT)
        self.proc = None
        assert rc == 0, f"daemon exit {rc}: {self.log.read_text()}"

    def remount(self):
        self.unmount()
        self.mount()

    def kill9(self):
        """Crash the daemon (SIGKILL) and clear the dead mount."""
        if self.fallback or self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=DEFAULT_TIMEOUT)
        self.proc = None
        run(["fusermount3", "-u", "-z", self.path])

    def fsck(self):
        """sixfold fsck on the unmounted volume; returns CompletedProcess."""
        if self.fallback:
            return subprocess.CompletedProcess([], 0, "", "")
        assert self.proc is None, "unmount first"
        return run([self.sixfold, "fsck", "--key-file", self.key,
                    self.zones[0]], timeout=600)

    def cleanup(self):
        if self.proc is not None:
            try:
                run([self.sixfold, "umount", self.path], timeout=60)
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=60)
            self.proc = None
        if is_mount(self.path):
            run(["fusermount3", "-u", "-z", self.path])
        # six copies add up: the zones go with the test
        for z in self.zones:
            shutil.rmtree(z, ignore_errors=True)


@pytest.fixture
def make_mount(tmp_path, sixfold_bin):
    """Factory: make_mount(opts=("allow_other",), max_size=None) formats a
    volume under a new folder of tmp_path and mounts it; every mount is
    unmounted (or its daemon killed) at teardown, whatever happened."""
    made = []

    def make(**kw):
        base = tmp_path / f"m{len(made)}"
        base.mkdir()
        m = Mount(base, sixfold_bin, **kw)
        made.append(m)
        return m
    yield make
    for m in made:
        m.cleanup()


@pytest.fixture
def mounted(make_mount):
    """One mounted sixfold filesystem (a Mount); `.path` is its root."""
    return make_mount()


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory, sixfold_bin):
    """One mount for a whole test file (test/posix overrides `mounted`
    with a fresh directory of it per test).  At the end of the file the
    volume is unmounted and `sixfold fsck` must find it clean."""
    base = tmp_path_factory.mktemp("shared")
    m = Mount(base, sixfold_bin)
    try:
        yield m
        m.unmount()
        r = m.fsck()
        assert r.returncode == 0, f"fsck after the file: {r.stdout}{r.stderr}"
    finally:
        m.cleanup()
