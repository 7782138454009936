#!/usr/bin/env python3
"""suite.py - issue 5's side-by-side benchmark: one fixed set of fio jobs
and pgbench on a plain directory, the disk's six-copy limit, six plain
copies over FUSE, a sixfold mount and (PEERS=1) libfuse's passthrough
example, gocryptfs and a GlusterFS replica-6 volume, all on the same
disk, back to back in one run.

Usage (as root; `make bench` builds first):

  make bench                     the suite: plain, limit, mirror, sixfold
  make bench PEERS=1             also passthrough, gocryptfs and GlusterFS
                                 (apt-get installs them when missing)
  make bench-memory              the daemon's memory report instead
  BENCH_QUICK=1 python3 test/bench/suite.py      a short run (5 s jobs,
                                 small files, pgbench scale 2 for 10 s)
  python3 test/bench/suite.py --targets plain,sixfold --jobs randwrite

Every setting is an option (--help) and most also an environment
variable, which `make bench VAR=...` passes on:

  SIXFOLD_BIN    the sixfold program (default build/sixfold)
  SIXFOLD_TOOLS  where test/tools programs are (default build/tools)
  BENCH_OUT      where the results go (default bench-out/ in the checkout)
  BENCH_WORKDIR  the disk measured: everything is made in a temporary
                 directory there (default: BENCH_OUT)
  BENCH_SECONDS  length of each fio job (default 30; quick 5)
  BENCH_QUICK=1  short jobs, small files, small pgbench
  BENCH_ROUNDS   passes over the targets (default 1; below)
  PEERS=1        also passthrough, gocryptfs and GlusterFS

Targets, one after the other (each is made, measured, torn down and its
data deleted before the next):

  plain      a directory of the disk
  limit      the same directory with the write jobs run as six fio jobs
             at once, one file each: six copies written in parallel.  Its
             figures are per job (aggregate / 6): the most that any system
             writing six copies can get out of this disk.  Only for the
             write jobs (seqwrite, randwrite, randrw); n/a for the others.
  mirror     six plain copies over FUSE (test/tools/mirrorfs, built by
             make): every change made in six directories of the disk, an
             fsync done once all six are flushed, reads from the first.
             No log, encryption, checksums or quorum: what keeping six
             synchronous copies behind FUSE costs by itself, for every
             job (pgbench and the reads too, which the limit has not).
  sixfold    a fresh volume of six zone directories on the disk (sixfold
             mkfs with a generated key file), mounted with -o allow_other
  passthrough (PEERS=1) libfuse's passthrough_ll example, built from the
             copy libfuse3-dev ships, forwarding to a directory of the
             disk, with -o writeback,cache=always (the kernel caches that
             sixfold asks for): FUSE alone, one copy, no encryption.  The
             table also gives passthrough/plain, what FUSE keeps here.
  gocryptfs  (PEERS=1) gocryptfs -init with a password file, mounted with
             -allow_other
  glusterfs  (PEERS=1) a replica-6 volume of six bricks on the disk, served
             by a glusterd started here, mounted with mount -t glusterfs

Jobs (fio: ioengine=psync, direct=0, fallocate=none, 30 s each, time
based but seqwrite; the caches are dropped before each job, and fio drops
the file's own cache again on every pass over it):

  seqwrite   1 MiB writes into a new 2 GiB file, passes over it until
             the time is up, each pass ended by an fsync (end_fsync=1;
             fio loops: a time_based job would overwrite the page cache
             and write little of it to the disk)                 MB/s
  seqread    1 MiB reads of that file (written in full first)     MB/s
  randwrite  8 KiB random writes, fsync after each, in a 1 GiB file:
             IOPS, and the fsync latency p50/p99
  randread   8 KiB random reads, two jobs, each on its half        IOPS
  randrw     8 KiB random, 70 % reads, fdatasync every 16 writes:
             IOPS, and the fdatasync latency p50/p99
  pgbench    PostgreSQL 15 as postgres, PGDATA on the target, fsync and
             synchronous_commit on: pgbench -i -s 20 (timed too), then
             pgbench -c 4 -j 2 -T 60: TPS and average latency

Under mirror, passthrough, gocryptfs and GlusterFS, whose files sit in the
disk's page cache a second time, that cache of their backing files is
dropped every second while a job reads (posix_fadvise DONTNEED), so that
no target reads from memory what the others read from the disk. (sixfold
reads its zones with O_DIRECT.)

Output: a table (stdout) of every figure, sixfold's ratios to the other
targets, and passthrough/plain and mirror/plain;
BENCH_OUT/bench-YYYYmmdd-HHMMSS.json (figures, ratios, machine and
versions, peak disk use) and .png (the headline figures normalised
to plain = 1), copied to bench-latest.json and bench-latest.png.  In the
JSON, each job of each target also has "disk": what the disk under the
work directory did meanwhile (/proc/diskstats: MB read and written,
requests and their average size, cache flushes, ms busy), so that a
ratio can be read against the work each target gave the disk (six
copies) and the size of its requests.

Rounds (BENCH_ROUNDS=N, --rounds N): the targets are measured N times,
round r starting r places further down the list (plain, limit, mirror,
sixfold; then limit, mirror, sixfold, plain; ...), since on a shared disk
whose speed drifts over a run the target measured first would otherwise
always meet the same disk. Each figure is then the median over the rounds,
with its "spread" (least, most), and so is each figure of "disk"; every
round's results are kept under "rounds".
Each ratio is the median of the rounds' own ratios (the targets of one
round ran back to back), every round's in "ratio_rounds", and the table
lists sixfold/plain (and sixfold/limit, ...) round by round.  With one
round the JSON has the single-run format.  A run takes N times as long.

The memory report (--memory): on a fresh sixfold mount, the daemon's
VmRSS and VmHWM at the start, after writing 2 GiB, while pgbench (scale
20, -c 4 -j 2) runs for 10 minutes (sampled every 10 s), after a 30 GiB
fallocate has grown the volume to 40 GiB capacity (preallocated blocks
take no room in the zones: the table shows the zones' disk use), and
after 1 MiB was written into each GiB of that file.  Written to
BENCH_OUT/memory-YYYYmmdd-HHMMSS.json and memory-latest.json.

The host's switch for FUSE over io_uring
(/sys/module/fuse/parameters/enable_uring, Linux 6.14 and later) decides
whether the sixfold mount takes its requests from io_uring queues or from
/dev/fuse; the suite leaves it as it finds it and records it in the JSON
(meta "fuse_uring": "Y", "N", or null without it) and in the plot's
title.  Set it before the run to measure either way.

Everything it starts or makes (servers, daemons, mounts, files, the
GlusterFS volume) is stopped by PID and removed at the end, also after a
failure, Ctrl-C or SIGTERM.  A target that cannot be set up is reported as
failed, with the reason, and the others go on.  This is a benchmark, not
a test: it asserts nothing about speed.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from benchlib import (DAEMON_SESSION, FIO, MB, PGBIN, REPO, Cleanup,
                      Postgres, SixfoldMount, bench_pgbench, fio_run,
                      interrupt_on_sigterm, is_mount, log, pct_us,
                      pg_workdir, pgbench_figures, proc_alive, run,
                      unmount_daemon, wait_gone, wait_mounted)
from lib.drill import kill_popen

MIB = 1 << 20
GIB = 1 << 30
COPIES = 6
GLUSTER_RUN = pathlib.Path("/var/run/gluster")
GLUSTER_VOLS = pathlib.Path("/var/lib/glusterd/vols")
GLUSTER_LOGS = pathlib.Path("/var/log/glusterfs")
PASSTHROUGH_SRC = pathlib.Path(
    "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
PEER_PACKAGES = {"passthrough": ["libfuse3-dev", "gcc", "pkg-config"],
                 "gocryptfs": ["gocryptfs"],
                 "glusterfs": ["glusterfs-server", "glusterfs-client"]}
PEER_NEEDS = {"passthrough": ["cc", "pkg-config", PASSTHROUGH_SRC],
              "gocryptfs": ["gocryptfs"],
              "glusterfs": ["glusterd", "gluster", "mount.glusterfs"]}
BASE_TARGETS = ("plain", "limit", "mirror", "sixfold")
PEERS = ("passthrough", "gocryptfs", "glusterfs")


# ---- settings -----------------------------------------------------------

@dataclasses.dataclass
class Settings:
    seconds: int  # each fio job
    seq_size: int  # bytes, seqwrite/seqread file
    rand_size: int  # bytes, the random jobs' file
    pg_scale: int
    pg_seconds: int
    log_size: str  # sixfold mkfs --log-size
    mem_write: int  # bytes written before the memory samples
    mem_seconds: int  # pgbench run of the memory report
    mem_interval: int  # seconds between RSS samples
    mem_fallocate: int  # bytes fallocated to grow the volume


FULL = dict(seconds=30, seq_size=2 * GIB, rand_size=GIB, pg_scale=20,
            pg_seconds=60, mem_write=2 * GIB, mem_seconds=600,
            mem_interval=10)
QUICK = dict(seconds=5, seq_size=256 * MIB, rand_size=128 * MIB, pg_scale=2,
             pg_seconds=10, mem_write=256 * MIB, mem_seconds=20,
             mem_interval=2)


def parse_size(text):
    """'2G', '256M', '512K' or bytes."""
    units = {"K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def human(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---- helpers ------------------------------------------------------------

def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mount_points():
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4].replace("\\040", " ") for line in f}


def walk_files(roots):
    """Every regular file under roots, each inode once: (path, stat).  It
    does not go into mount points (nor stat them: a FUSE daemon that
    hangs does not hang the walk)."""
    seen = set()
    mounts = mount_points()
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if os.path.join(d, x) not in mounts]
            for name in files:
                p = os.path.join(d, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) \
                        or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                yield p, st


class Periodic:
    """fn() every interval seconds in a thread, as a context manager."""

    def __init__(self, interval, fn):
        self.interval = interval
        self.fn = fn
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stopping.wait(self.interval):
            self.fn()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(60)


def drop_file_caches(roots):
    """posix_fadvise(DONTNEED) on every file under roots: their clean
    pages leave the page cache."""
    for p, _st in walk_files(roots):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class DiskUse:
    """The bytes allocated under base (not inside mounts), sampled every
    few seconds: the peak over the run and per target."""

    def __init__(self, base):
        self.base = base
        self.peak = self.since = 0
        self.lock = threading.Lock()

    def sample(self):
        used = sum(st.st_blocks * 512 for _p, st in walk_files([self.base]))
        with self.lock:
            self.peak = max(self.peak, used)
            self.since = max(self.since, used)

    def take(self):
        """The peak since the last take()."""
        with self.lock:
            peak, self.since = self.since, 0
        return peak


class DiskCounters:
    """The counters of the block device a path lives on (/proc/diskstats):
    every target's I/O reaches that one device.  since() gives None where
    the path's st_dev names no block device (btrfs, tmpfs, overlay)."""

    def __init__(self, path):
        st = os.stat(path)
        self.dev = (os.major(st.st_dev), os.minor(st.st_dev))

    def read(self):
        with open("/proc/diskstats") as f:
            for line in f:
                p = line.split()
                if (int(p[0]), int(p[1])) == self.dev:
                    return [int(x) for x in p[3:]]
        return None

    def since(self, before):
        """What the disk did since read() returned before."""
        after = self.read()
        if before is None or after is None:
            return None
        d = [a - b for a, b in zip(after, before)]
        # Fields: reads, merged, sectors, ms; the same for writes; in
        # flight, ms busy, weighted ms; discards (4); flushes, ms.
        res = {"read_mb": round(d[2] * 512 / MB, 1), "reads": d[0],
               "write_mb": round(d[6] * 512 / MB, 1), "writes": d[4],
               "busy_ms": d[9]}
        if d[0]:
            res["read_kib_avg"] = round(d[2] / 2 / d[0], 1)
        if d[4]:
            res["write_kib_avg"] = round(d[6] / 2 / d[4], 1)
        if len(d) > 15:  # kernels since 5.5 count flushes
            res["flushes"] = d[15]
        return res


def kill_pid(pid, what):
    """SIGTERM, then SIGKILL, a process that is not our child."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 15)):
        if not proc_alive(pid):
            return
        log(f"stopping {what} (pid {pid}, {sig.name})")
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone([pid], wait):
            return


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace")
                    for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def find_pids(pred):
    """PIDs of the processes whose argument list satisfies pred."""
    return [int(p) for p in os.listdir("/proc")
            if p.isdigit() and (args := cmdline(p)) and pred(args)]


def first_line(cmd):
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"
    return ((r.stdout or r.stderr).strip().splitlines() or [""])[0]


# ---- targets ------------------------------------------------------------

class Target:
    """A place on the disk to measure.  setup() makes it (data goes into
    self.path), teardown() stops what it started and deletes its data;
    both are run through the Cleanup stack, teardown also on failure."""

    copies = 1  # fio jobs at once in the write jobs
    writes_only = False  # only the write jobs apply

    def __init__(self, name, base, cfg, args, cleanup):
        self.name = name
        self.dir = base / name
        self.cfg = cfg
        self.args = args
        self.cleanup = cleanup
        self.path = None
        self.info = {}  # put into the JSON

    def backing(self):
        """Directories whose page cache a read job drops every second."""
        return []

    def setup(self):
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.path = self.dir / "data"
        self.path.mkdir()
        os.chmod(self.path, 0o755)

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class LimitTarget(Target):
    copies = COPIES
    writes_only = True


class SixfoldTarget(Target):
    mount = None

    def setup(self):
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.mount = SixfoldMount(self.args.sixfold, self.dir,
                                  self.cfg.log_size, self.cleanup)
        self.mount.mount()
        self.path = self.mount.mnt
        self.info["log_size"] = self.cfg.log_size

    def teardown(self):
        if self.mount is not None:
            self.mount.unmount()
        super().teardown()


class FuseDaemonTarget(Target):
    """A FUSE daemon of ours serving self.mnt from the directories
    self.stores (whose page cache the read jobs drop), run in the
    foreground and unmounted with fusermount3."""

    proc = None
    nstores = 1

    def __init__(self, *a):
        super().__init__(*a)
        self.stores = [self.dir / f"store{i}" if self.nstores > 1
                       else self.dir / "store" for i in range(self.nstores)]
        self.store = self.stores[0]
        self.mnt = self.dir / "mnt"
        self.log = self.dir / f"{self.name}.log"

    def backing(self):
        return self.stores

    def make_dirs(self):
        for d in (self.dir, *self.stores, self.mnt):
            d.mkdir()
            os.chmod(d, 0o755)

    def start(self, cmd):
        log("+ " + " ".join(map(str, cmd)))
        with open(self.log, "ab") as lf:
            self.proc = subprocess.Popen([str(c) for c in cmd],
                                         stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf,
                                         **DAEMON_SESSION)
        wait_mounted(self.mnt, self.proc, self.log, self.name)
        os.chmod(self.mnt, 0o755)
        self.path = self.mnt

    def teardown(self):
        if self.proc is not None:
            unmount_daemon(self.proc, self.mnt,
                           ["fusermount3", "-u", self.mnt])
            self.proc = None
        super().teardown()


class MirrorTarget(FuseDaemonTarget):
    """test/tools/mirrorfs: six plain copies over FUSE, every change made
    in six directories of the disk and an fsync done once all six are
    flushed (at once, through io_uring).  The six-copy limit for what
    the limit target has no figure for (pgbench, reads): what keeping six
    synchronous copies behind FUSE costs, without sixfold's log,
    encryption, checksums and quorum."""

    nstores = COPIES

    def setup(self):
        tools = os.environ.get("SIXFOLD_TOOLS") or \
            self.args.sixfold.parent / "tools"  # build/tools by default
        prog = pathlib.Path(tools) / "mirrorfs"
        if not os.access(prog, os.X_OK):
            raise RuntimeError(f"{prog} is not built (run make, or set "
                               "SIXFOLD_TOOLS)")
        self.make_dirs()
        self.start([prog, *self.stores, self.mnt, "-f", "-o",
                    "allow_other"])
        self.info["program"] = str(prog)


class GocryptfsTarget(FuseDaemonTarget):
    def setup(self):
        self.make_dirs()
        pw = self.dir / "password"
        pw.write_text(os.urandom(16).hex() + "\n")
        os.chmod(pw, 0o600)
        run(["gocryptfs", "-init", "-q", "-passfile", pw, self.store], 120)
        self.start(["gocryptfs", "-fg", "-q", "-allow_other", "-passfile",
                    pw, self.store, self.mnt])
        self.info["version"] = first_line(["gocryptfs", "--version"])


class PassthroughTarget(FuseDaemonTarget):
    """libfuse's passthrough_ll example, as libfuse3-dev ships it, built
    here: every request forwarded to a directory of the disk, one copy,
    no encryption.  What FUSE alone costs on this machine (the issue's
    reference list has it), with the kernel caches sixfold asks for:
    the writeback cache, and kept page cache and attributes."""

    def setup(self):
        self.make_dirs()
        prog = self.dir / "passthrough_ll"
        flags = run(["pkg-config", "--cflags", "--libs", "fuse3"], 60)
        run(["cc", "-O2", "-o", prog, PASSTHROUGH_SRC,
             *flags.stdout.split(), "-lpthread"], 300)
        opts = f"source={self.store},allow_other,writeback,cache=always"
        self.start([prog, "-f", "-o", opts, self.mnt])
        self.info.update(
            source=str(PASSTHROUGH_SRC), options=opts,
            libfuse=first_line(["pkg-config", "--modversion", "fuse3"]))


class GlusterTarget(Target):
    """glusterd (our child, -N), a replica-6 volume of six bricks in
    self.dir, its FUSE client mounted at self.dir/mnt.  The brick and
    self-heal daemons glusterd forks are found by their pid files; the
    client by its mount point."""

    glusterd = None
    client_pid = None
    created = started = False

    def __init__(self, *a):
        super().__init__(*a)
        self.volname = f"sixfoldbench{os.getpid()}"
        self.bricks = [self.dir / f"brick{i}" for i in range(COPIES)]
        self.mnt = self.dir / "mnt"
        self.log = self.dir / "glusterd.log"
        self.daemon_pids = {}  # pid: its pid file's name

    def backing(self):
        return self.bricks

    def gluster(self, *args, check=True):
        return run(["gluster", "--mode=script", *args], 120, check=check)

    def try_gluster(self, *args):
        """Teardown: a gluster command whose failure only gets logged."""
        try:
            self.gluster(*args, check=False)
        except subprocess.TimeoutExpired as e:
            log(f"gluster {' '.join(args)}: {e}")

    def setup(self):
        if find_pids(lambda a: os.path.basename(a[0]) == "glusterd"):
            raise RuntimeError("a glusterd runs already (not ours)")
        # glusterd would start their bricks too, and they are not ours
        others = sorted(p.name for p in GLUSTER_VOLS.glob("*"))
        if others:
            raise RuntimeError(f"{GLUSTER_VOLS} has volumes already: "
                               + ", ".join(others))
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.mnt.mkdir()
        for b in self.bricks:
            b.mkdir()
        cmd = ["glusterd", "-N", "-p", str(self.dir / "glusterd.pid"),
               f"--log-file={self.log}"]
        log("+ " + " ".join(cmd))
        self.glusterd = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL,
                                         **DAEMON_SESSION)
        deadline = time.monotonic() + 60
        while self.gluster("volume", "list", check=False).returncode:
            if self.glusterd.poll() is not None or \
                    time.monotonic() > deadline:
                raise RuntimeError("glusterd did not come up: "
                                   + self.log.read_text(errors="replace")
                                   [-2000:])
            time.sleep(0.5)
        host = socket.gethostname()
        self.gluster("volume", "create", self.volname, "replica",
                     str(COPIES), *[f"{host}:{b}" for b in self.bricks],
                     "force")
        self.created = True
        self.gluster("volume", "start", self.volname)
        self.started = True
        for pid_file in [*(GLUSTER_RUN / "vols" / self.volname).glob("*.pid"),
                         *(GLUSTER_RUN / "shd" / self.volname).glob("*.pid")]:
            self.daemon_pids[int(pid_file.read_text().split()[0])] = \
                pid_file.name
        run(["mount", "-t", "glusterfs", f"{host}:/{self.volname}",
             self.mnt], 120)
        self.client_pid = next(iter(find_pids(
            lambda a: os.path.basename(a[0]) == "glusterfs"
            and a[-1] == str(self.mnt))), None)
        os.chmod(self.mnt, 0o755)
        self.path = self.mnt
        self.info["version"] = first_line(["glusterfs", "--version"])
        self.info["volume_info"] = self.gluster(
            "volume", "info", self.volname).stdout.strip()

    def teardown(self):
        if is_mount(self.mnt):
            if run(["umount", self.mnt], 120, check=False).returncode:
                run(["umount", "-l", self.mnt], 60, check=False)
        if self.client_pid:
            if not wait_gone([self.client_pid], 30):
                kill_pid(self.client_pid, "glusterfs client")
        if self.started:
            self.try_gluster("volume", "stop", self.volname, "force")
        if self.created:
            self.try_gluster("volume", "delete", self.volname)
        if self.glusterd is not None:
            self.glusterd.terminate()
            try:
                self.glusterd.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.glusterd.kill()
                self.glusterd.wait(timeout=30)
        for pid, name in self.daemon_pids.items():
            if self.volname in " ".join(cmdline(pid)):
                kill_pid(pid, f"gluster {name}")
        for d in (GLUSTER_RUN / "vols" / self.volname,
                  GLUSTER_RUN / "shd" / self.volname):
            shutil.rmtree(d, ignore_errors=True)
        # the logs named after our paths (glusterd's own is in self.dir)
        for p in [self.mnt, *self.bricks]:
            stem = str(p).strip("/").replace("/", "-") + ".log"
            for f in (GLUSTER_LOGS / stem, GLUSTER_LOGS / "bricks" / stem):
                f.unlink(missing_ok=True)
        super().teardown()


TARGET_CLASSES = {"plain": Target, "limit": LimitTarget,
                  "mirror": MirrorTarget, "sixfold": SixfoldTarget,
                  "passthrough": PassthroughTarget,
                  "gocryptfs": GocryptfsTarget, "glusterfs": GlusterTarget}


# ---- the jobs -----------------------------------------------------------

@dataclasses.dataclass
class FioJob:
    name: str
    file: str  # 'seq' or 'rand': the file (kind) it works on
    opts: dict
    unit: str  # MB/s or IOPS
    writes: bool  # a write job: the limit applies
    reads: bool  # backing files' caches are dropped while it runs
    new_file: bool = False  # else the file is first written in full
    parts: int = 1  # numjobs, each on its own part of the file
    # time_based=1: a pass that wraps starts over at once.  Otherwise
    # passes (loops) until the runtime is up, and each write pass ends
    # with its end_fsync.
    time_based: bool = True


FIO_JOBS = [
    FioJob("seqwrite", "seq", {"rw": "write", "bs": "1M", "end_fsync": 1,
                               "loops": 1000000},
           "MB/s", writes=True, reads=False, new_file=True,
           time_based=False),
    FioJob("seqread", "seq", {"rw": "read", "bs": "1M"},
           "MB/s", writes=False, reads=True),
    FioJob("randwrite", "rand", {"rw": "randwrite", "bs": "8k", "fsync": 1},
           "IOPS", writes=True, reads=False),
    FioJob("randread", "rand", {"rw": "randread", "bs": "8k"},
           "IOPS", writes=False, reads=True, parts=2),
    FioJob("randrw", "rand", {"rw": "randrw", "rwmixread": 70, "bs": "8k",
                              "fdatasync": 16},
           "IOPS", writes=True, reads=True),
]
JOB_NAMES = [j.name for j in FIO_JOBS] + ["pgbench"]
HEADLINE = {"MB/s": "mb_s", "IOPS": "iops", "TPS": "tps"}
FIO_COMMON = ["--ioengine=psync", "--direct=0", "--fallocate=none"]


def file_names(job, t):
    return [f"{job.file}.{i}" for i in range(t.copies if job.writes else 1)]


def fill(d, names, size):
    """Write the files of names in d sequentially up to size (only what
    is not there yet), fsync'ed, untimed: a job reads written data, not
    holes, and fio lays out nothing while it is timed.  (Not with fio: it
    truncates a file that is too short before it writes.)"""
    buf = os.urandom(MIB)
    for n in names:
        fd = os.open(d / n, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            have = os.fstat(fd).st_size // MIB * MIB
            if have < size:
                log(f"filling {d / n} from {human(have)} to {human(size)}")
            for off in range(have, size, MIB):
                os.pwrite(fd, buf[:size - off], off)
            os.fsync(fd)
        finally:
            os.close(fd)


def fio_args(job, t, d, size, seconds):
    args = [*FIO_COMMON, f"--name={job.name}", f"--directory={d}",
            f"--runtime={seconds}", "--group_reporting",
            *(["--time_based"] if job.time_based else []),
            *[f"--{k}={v}" for k, v in job.opts.items()]]
    if job.writes and t.copies > 1:
        return args + [f"--numjobs={t.copies}",
                       f"--filename_format={job.file}.$jobnum",
                       f"--size={size}"]
    args.append(f"--filename={job.file}.0")
    if job.parts > 1:
        part = size // job.parts
        return args + [f"--numjobs={job.parts}", f"--size={part}",
                       f"--offset_increment={part}"]
    return args + [f"--size={size}"]


def fio_figures(job, data, copies):
    """The job's figures from fio's JSON (one group: group_reporting);
    with copies > 1 (the limit) per job: the aggregate / copies."""
    j = data["jobs"][0]
    rd, wr = j["read"], j["write"]
    res = {"status": "ok"}
    if j.get("error"):
        res["fio_error"] = j["error"]
    if job.unit == "MB/s":
        total = (wr if job.writes else rd)["bw_bytes"] / MB
        res["mb_s"] = round(total / copies, 1)
    else:
        total = rd["iops"] + wr["iops"]
        res["iops"] = round(total / copies, 1)
        if rd["iops"] and wr["iops"]:
            res["read_iops"] = round(rd["iops"] / copies, 1)
            res["write_iops"] = round(wr["iops"] / copies, 1)
    if copies > 1:
        res["aggregate"] = round(total, 1)
        res["jobs"] = copies
    if not (job.writes and job.reads):  # randrw: none
        side = wr if job.writes else rd
        res["clat_p50_us"] = pct_us(side.get("clat_ns"), 50)
        res["clat_p99_us"] = pct_us(side.get("clat_ns"), 99)
    sync = j.get("sync", {}).get("lat_ns", {})
    if sync.get("N"):
        res["sync_p50_us"] = pct_us(sync, 50)
        res["sync_p99_us"] = pct_us(sync, 99)
    return res


def bench_fio_job(job, t, cfg, tmp, counters):
    d = t.path / "fio"
    d.mkdir(exist_ok=True)
    size = cfg.seq_size if job.file == "seq" else cfg.rand_size
    if not job.new_file:
        fill(d, file_names(job, t), size)
    drop_caches()
    args = fio_args(job, t, d, size, cfg.seconds)
    out = tmp / f"{t.name}-{job.name}.json"
    before = counters.read()
    if job.reads and t.backing():
        with Periodic(1, lambda: drop_file_caches(t.backing())):
            data = fio_run(args, out, cfg.seconds + 1800)
    else:
        data = fio_run(args, out, cfg.seconds + 1800)
    res = fio_figures(job, data, t.copies if job.writes else 1)
    res["disk"] = counters.since(before)
    log(f"{t.name} {job.name}: {res}")
    return res


def bench_target(t, jobs, cfg, tmp, cleanup, put, counters):
    """Every job of jobs on target t; put(job, figures or status) as
    each one is done; counters: the work directory's DiskCounters."""
    def applies(job):
        return job.writes or not t.writes_only

    todo = [j for j in FIO_JOBS if j.name in jobs]
    for i, job in enumerate(todo):
        if not applies(job):
            put(job.name, {"status": "n/a"})
            continue
        try:
            put(job.name, bench_fio_job(job, t, cfg, tmp, counters))
        except (RuntimeError, OSError, ValueError, KeyError,
                subprocess.TimeoutExpired) as e:
            log(f"{t.name} {job.name} failed: {e}")
            put(job.name, {"status": "failed", "reason": str(e)[-800:]})
        later = [j for j in todo[i + 1:] if j.file == job.file and applies(j)]
        if not later:  # its files are not needed any more
            for n in file_names(job, t):
                (t.path / "fio" / n).unlink(missing_ok=True)
    if "pgbench" not in jobs:
        return
    if t.writes_only:
        put("pgbench", {"status": "n/a"})
        return
    try:
        before = counters.read()  # pgbench -i and the run
        res = bench_pgbench(t.path, tmp, cfg.pg_seconds, cleanup,
                            scale=cfg.pg_scale)
        res["disk"] = counters.since(before)
        put("pgbench", {"status": "ok", **res})
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        log(f"{t.name} pgbench failed: {e}")
        put("pgbench", {"status": "failed", "reason": str(e)[-800:]})
    shutil.rmtree(t.path / "pgdata", ignore_errors=True)


# ---- peers --------------------------------------------------------------

def install_peers(names):
    """apt-get install the packages of the peers whose programs are
    missing; returns {peer: reason} for those still missing."""
    def missing(name):
        return [str(p) for p in PEER_NEEDS[name]
                if not (p.exists() if isinstance(p, pathlib.Path) else
                        shutil.which(p, path="/usr/sbin:/usr/bin:/sbin:/bin"))]
    need = [n for n in names if missing(n)]
    if need:
        pkgs = [p for n in need for p in PEER_PACKAGES[n]]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"],
                    ["apt-get", "install", "-y", *pkgs]):
            r = run(cmd, 1800, check=False, env=env)
            if r.returncode:
                log(f"{' '.join(cmd)}: exit {r.returncode}\n"
                    f"{r.stderr[-2000:]}")
                break
    return {n: "not installed: " + ", ".join(missing(n))
            for n in names if missing(n)}


# ---- machine and versions -----------------------------------------------

def fuse_uring_switch():
    """The host's FUSE over io_uring switch: "Y", "N", or None."""
    try:
        with open("/sys/module/fuse/parameters/enable_uring") as f:
            return f.read().strip()
    except OSError:
        return None


def machine_meta(args):
    def proc_field(path, key):
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        return None

    src = first_line(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS",
                      "--target", args.workdir]).split()
    disk = {"source": src[0] if src else None,
            "fstype": src[1] if len(src) > 1 else None,
            "options": src[2] if len(src) > 2 else None}
    if disk["source"] and disk["source"].startswith("/dev/"):
        disk["lsblk"] = first_line(["lsblk", "-ndo", "NAME,MODEL,ROTA,SIZE",
                                    disk["source"]])
    commit = first_line(["git", "-C", REPO, "rev-parse", "HEAD"])
    dirty = bool(first_line(["git", "-C", REPO, "status", "--porcelain",
                             "--untracked-files=no"]))
    mem_kib = int(proc_field("/proc/meminfo", "MemTotal").split()[0])
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "cpu": proc_field("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "workdir": str(args.workdir),
        "disk": disk,
        "fio": first_line([FIO, "--version"]),
        "postgres": first_line([PGBIN / "postgres", "--version"]),
        "sixfold_commit": commit + ("-dirty" if dirty else ""),
        "sixfold_bin": str(args.sixfold),
        "fuse_uring": fuse_uring_switch(),
    }
    if args.sixfold.exists():
        meta["sixfold_bin_mtime"] = datetime.datetime.fromtimestamp(
            args.sixfold.stat().st_mtime).astimezone().isoformat(
                timespec="seconds")
    return meta


# ---- table, ratios, plot ------------------------------------------------

ROWS = [  # job, figure, label
    ("seqwrite", "mb_s", "seqwrite 1M  MB/s"),
    ("seqread", "mb_s", "seqread 1M  MB/s"),
    ("randwrite", "iops", "randwrite 8k fsync  IOPS"),
    ("randwrite", "sync_p50_us", "  fsync p50 us"),
    ("randwrite", "sync_p99_us", "  fsync p99 us"),
    ("randread", "iops", "randread 8k x2  IOPS"),
    ("randread", "clat_p99_us", "  read p99 us"),
    ("randrw", "iops", "randrw 70/30 8k  IOPS"),
    ("randrw", "sync_p50_us", "  fdatasync p50 us"),
    ("randrw", "sync_p99_us", "  fdatasync p99 us"),
    ("pgbench", "tps", "pgbench  TPS"),
    ("pgbench", "latency_avg_ms", "  latency avg ms"),
    ("pgbench", "init_seconds", "  pgbench -i  s"),
]


def ratio_pair(a, b):
    """a's figures / b's, where both are numbers (one job's results)."""
    return {k: round(a[k] / v, 3) for k, v in b.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v and isinstance(a.get(k), (int, float))
            and k not in ("jobs", "scale", "clients", "threads",
                          "seconds", "fio_error", "rounds")}


# References to plain besides sixfold's ratios, as the table names them.
REFERENCES = {"passthrough/plain": "FUSE alone, one copy",
              "mirror/plain": "six plain copies over FUSE"}


def ratios_of(targets):
    """sixfold / each other target, per figure, of one job's results;
    and the REFERENCES: what FUSE alone, and six copies behind it, keep
    of the disk here."""
    def ok(name):
        return targets.get(name, {}).get("status") == "ok"

    out = {}
    for name, res in targets.items():
        if name != "sixfold" and ok(name) and ok("sixfold"):
            out[f"sixfold/{name}"] = ratio_pair(targets["sixfold"], res)
    for pair in REFERENCES:
        a, b = pair.split("/")
        if ok(a) and ok(b):
            out[pair] = ratio_pair(targets[a], targets[b])
    return out


def ratios(doc):
    """sixfold / each other target, per job and figure.  With rounds, the
    median of the rounds' own ratios (each round's targets ran back to
    back, so its ratio is the paired one), and every round's in
    ratio_rounds."""
    for job, entry in doc["jobs"].items():
        rounds = [r["jobs"][job] for r in doc.get("rounds", ())]
        if len(rounds) < 2:
            entry["ratios"] = ratios_of(entry["targets"])
            continue
        each = [ratios_of(r) for r in rounds]
        entry["ratios"], entry["ratio_rounds"] = {}, {}
        for pair in sorted({p for r in each for p in r}):
            keys = sorted({k for r in each for k in r.get(pair, {})})
            got = {k: [r[pair][k] for r in each if k in r.get(pair, {})]
                   for k in keys}
            entry["ratio_rounds"][pair] = got
            entry["ratios"][pair] = {
                k: round(statistics.median(v), 3) for k, v in got.items()}


def cell(res, key):
    if res is None:
        return "-"
    if res.get("status") != "ok":
        return res.get("status", "-")
    v = res.get(key)
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 10000 else f"{v:.1f}"


def table(doc):
    names = list(doc["targets"])
    others = [n for n in names if n != "sixfold"] if "sixfold" in names \
        else []
    w = {n: max(10, len(n) + 2) for n in names}  # columns apart
    lines = [f"{'job / figure':<26}" + "".join(f"{n:>{w[n]}}" for n in names)
             + "".join(f"{'6f/' + n:>{w[n] + 3}}" for n in others)]
    for job, key, label in ROWS:
        entry = doc["jobs"].get(job)
        if entry is None:
            continue
        line = f"{label:<26}" + "".join(
            f"{cell(entry['targets'].get(n), key):>{w[n]}}" for n in names)
        for n in others:
            r = entry["ratios"].get(f"sixfold/{n}", {}).get(key)
            line += (f"{r:>{w[n] + 3}.3f}" if r is not None
                     else f"{'-':>{w[n] + 3}}")
        lines.append(line)
    if "limit" in names:
        lines.append("limit: six fio jobs at once, one file each; its "
                     "figures per job.")
    if others:
        lines.append("6f/X: sixfold's figure / X's.")
    for pair, what in REFERENCES.items():
        got = [f"{job} {entry['ratios'][pair][key]:.3f}"
               for job, key, label in ROWS
               if not label.startswith(" ")
               and (entry := doc["jobs"].get(job))
               and key in entry["ratios"].get(pair, {})]
        if got:
            lines.append(f"{pair} ({what}): " + ", ".join(got))
    nrounds = len(doc.get("rounds", ()))
    if nrounds > 1:
        lines.append(f"Figures: medians of {nrounds} rounds; 6f/X: the "
                     "median of the rounds' own ratios.")
        for other in others:
            pair = f"sixfold/{other}"
            for job, key, label in ROWS:
                got = doc["jobs"].get(job, {}).get("ratio_rounds", {}) \
                    .get(pair, {}).get(key)
                if got and not label.startswith(" "):
                    lines.append(f"  {pair} {job} by round: "
                                 + " ".join(f"{x:.3f}" for x in got))
    for n, t in doc["targets"].items():
        if t.get("status") != "ok":
            lines.append(f"{n}: {t.get('status')}: {t.get('reason', '')}"
                         .strip()[:400])
        for job, entry in doc["jobs"].items():
            res = entry["targets"].get(n, {})
            if res.get("status") == "failed" and t.get("status") == "ok":
                lines.append(f"{n} {job}: failed: "
                             + res.get("reason", "").strip()[-300:])
            elif res.get("rounds_failed"):
                lines.append(f"{n} {job}: failed in {res['rounds_failed']}"
                             f" of {res['rounds'] + res['rounds_failed']} "
                             "rounds; the figures are the others' (the "
                             "reasons are in the JSON's rounds)")
    return "\n".join(lines)


def plot(doc, png, tmp):
    """Grouped bars with gnuplot: per job, each target's headline figure /
    plain's, on a log scale, with the figures written on the bars."""
    names = list(doc["targets"])
    rows = []
    for job, entry in doc["jobs"].items():
        key = HEADLINE[entry["unit"]]
        base = entry["targets"].get("plain", {}).get(key)
        if not base:
            continue
        vals, texts = [], []
        for n in names:
            res = entry["targets"].get(n, {})
            v = res.get(key) if res.get("status") == "ok" else None
            vals.append(v / base if v else None)
            texts.append((f"{v:.0f}" if v >= 100 else f"{v:.1f}") if v
                         else res.get("status", "-"))
        rows.append((f"{job}\\n{entry['unit']}", vals, texts))
    if not rows:
        log("plot: nothing to draw (no plain figures)")
        return False
    known = [v for _j, vals, _t in rows for v in vals if v]
    lo = 10 ** math.floor(math.log10(min(known) / 1.5))
    hi = 10 ** math.ceil(math.log10(max(known) * 4))
    n = len(names)
    dat = tmp / "plot.dat"
    with open(dat, "w") as f:
        f.write("job " + " ".join(names) + " " * 2 * n + "\n")
        for job, vals, texts in rows:
            f.write(f'"{job}" '
                    + " ".join("?" if v is None else f"{v:.6g}"
                               for v in vals) + " "
                    + " ".join(f"{lo * 1.3 if v is None else v:.6g}"
                               for v in vals) + " "
                    + " ".join(f'"{t}"' for t in texts) + "\n")
    meta = doc["meta"]
    title = (f"sixfold {meta['sixfold_commit'][:12]}, {meta['date'][:16]}, "
             f"{meta['disk'].get('fstype')} on {meta['disk'].get('source')}"
             f", fio jobs of {doc['settings']['seconds']} s"
             + (f", medians of {len(doc['rounds'])} rounds"
                if len(doc.get("rounds", ())) > 1 else "")
             + f", FUSE over io_uring {meta.get('fuse_uring') or 'absent'}\\n"
             "per job: each target's figure / plain's (log scale); "
             "on the bars: MB/s, IOPS or TPS")
    # bar i of n in a cluster: at $0 + (i - (n - 1) / 2) / (n + gap 1)
    x = f"($0 + (i - 2 - ({n} - 1) / 2.0) / ({n} + 1.0))"
    gp = tmp / "plot.gp"
    gp.write_text("\n".join([
        'set terminal pngcairo size 1280,720 font "sans,10"',
        f"set output '{png}'",
        f'set title "{title}" noenhanced',
        "set style data histogram",
        "set style histogram clustered gap 1",
        "set style fill solid 0.8 border -1",
        "set boxwidth 0.95",
        "set logscale y",
        f"set yrange [{lo}:{hi}]",
        'set ylabel "relative to plain"',
        "set grid ytics",
        "set key top left horizontal autotitle columnheader",
        "set bmargin 4",
        'set datafile missing "?"',
        "set xtics nomirror",
        "set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2",
        f"plot for [i=2:{n + 1}] '{dat}' using i:xtic(1), \\",
        f"  for [i=2:{n + 1}] '{dat}' using {x}:(column(i + {n})):"
        f"(stringcolumn(i + {2 * n})) \\",
        '  with labels rotate by 90 left offset 0,0.4 font ",8" notitle',
        ""]))
    r = run(["gnuplot", gp], 120, check=False)
    if r.returncode:
        log(f"gnuplot: exit {r.returncode}: {r.stderr}")
        return False
    return True


# ---- the memory report --------------------------------------------------

def daemon_memory(pid):
    """VmRSS and VmHWM of pid, MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key.lower() + "_mib"] = round(int(line.split()[1]) / 1024,
                                                  1)
    return out


def volume_status(m):
    r = run([m.sixfold, "status", "--json", m.mnt], 60)
    st = json.loads(r.stdout)
    zones = sum(st.st_blocks * 512 for _p, st in walk_files(m.zones))
    return {"capacity_gib": round(st["capacity_bytes"] / GIB, 1),
            "zones_disk_mib": round(zones / MIB, 1)}


def memory_report(args, cfg, base, cleanup):
    """The daemon's memory while data is written, under pgbench, and at a
    larger capacity (see the module's doc): a list of stages, each with
    VmRSS and VmHWM, the RSS samples taken under pgbench, and the
    largest RSS seen."""
    (base / "sixfold").mkdir()
    m = SixfoldMount(args.sixfold, base / "sixfold", cfg.log_size, cleanup)
    m.mount()
    stages = []

    def stage(name, **extra):
        stages.append({"stage": name, **daemon_memory(m.pid),
                       **volume_status(m), **extra})
        log(f"memory: {stages[-1]}")

    stage("fresh mount")
    (m.mnt / "fio").mkdir()
    t0 = time.monotonic()
    fio_run([*FIO_COMMON, "--name=write", f"--directory={m.mnt / 'fio'}",
             "--filename=data", "--rw=write", "--bs=1M", "--end_fsync=1",
             f"--size={cfg.mem_write}"], base / "mem-write.json", 3600)
    stage(f"after writing {human(cfg.mem_write)}",
          seconds=round(time.monotonic() - t0, 1))

    pg = Postgres(m.mnt / "pgdata", pg_workdir(base), cleanup)
    pg.initdb()
    pg.start()
    init_s = pg.pgbench_init(cfg.pg_scale)
    stage(f"after pgbench -i -s {cfg.pg_scale}", seconds=round(init_s, 1))
    cmd = [str(c) for c in pg.pgbench_cmd(cfg.mem_seconds)]
    log("+ " + " ".join(cmd))
    samples = []
    with open(base / "pgbench.out", "w+") as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT)
        cleanup.push("stop pgbench", lambda: kill_popen(p))
        t0 = time.monotonic()
        while True:
            samples.append({"t": round(time.monotonic() - t0, 1),
                            **daemon_memory(m.pid)})
            try:
                p.wait(timeout=cfg.mem_interval)
                break
            except subprocess.TimeoutExpired:
                pass
        out.seek(0)
        figures = pgbench_figures(out.read())
    pg.stop()
    stage(f"after {cfg.mem_seconds} s of pgbench", exit=p.returncode,
          **{k: figures[k] for k in ("tps", "latency_avg_ms")})

    big = m.mnt / "big"
    run(["fallocate", "-l", cfg.mem_fallocate, big], 600)
    stage(f"after fallocate {human(cfg.mem_fallocate)}")
    # 1 MiB written per GiB of it: the new space in use too
    fd = os.open(big, os.O_WRONLY)
    try:
        for off in range(0, cfg.mem_fallocate, GIB):
            os.pwrite(fd, os.urandom(MIB), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    stage("after 1 MiB per GiB of it written")
    m.unmount()
    return {"stages": stages, "pgbench_samples": samples,
            "max_rss_mib": max(x["vmrss_mib"] for x in stages + samples)}


def memory_table(res):
    def col(x, key):
        v = x.get(key)
        return f"{v:>10}" if v is not None else f"{'':>10}"
    lines = [f"{'sixfold daemon':<40}{'RSS MiB':>10}{'HWM MiB':>10}"
             f"{'capacity':>10}{'zones MiB':>10}"]
    for x in res["stages"]:
        lines.append(f"{x['stage']:<40}{col(x, 'vmrss_mib')}"
                     f"{col(x, 'vmhwm_mib')}{col(x, 'capacity_gib')}"
                     f"{col(x, 'zones_disk_mib')}")
    n = len(res["pgbench_samples"])
    lines.append(f"{'max RSS (stages and %d samples)' % n:<40}"
                 f"{res['max_rss_mib']:>10}")
    lines.append("capacity in GiB; zones MiB: what the six zone directories "
                 "take on disk")
    return "\n".join(lines)


# ---- driver -------------------------------------------------------------

def env_flag(name):
    return os.environ.get(name, "") not in ("", "0")


def env_int(name, default):
    """The environment's whole number name, or default when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"{name}={text!r}: give a whole number "
                         f"(or leave it unset for {default})") from None


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the top of test/bench/suite.py for what is measured.")
    out_default = pathlib.Path(os.environ.get("BENCH_OUT",
                                              REPO / "bench-out"))
    ap.add_argument("--sixfold", type=pathlib.Path,
                    default=pathlib.Path(os.environ.get(
                        "SIXFOLD_BIN", REPO / "build" / "sixfold")),
                    help="the sixfold program (SIXFOLD_BIN; default "
                         "build/sixfold)")
    ap.add_argument("--out", type=pathlib.Path, default=out_default,
                    help="directory for the results (BENCH_OUT; default "
                         "bench-out/)")
    ap.add_argument("--workdir", type=pathlib.Path,
                    default=os.environ.get("BENCH_WORKDIR"),
                    help="the disk measured: a temporary directory is made "
                         "here (BENCH_WORKDIR; default: --out)")
    ap.add_argument("--peers", action="store_true",
                    default=env_flag("PEERS"),
                    help="also passthrough, gocryptfs and GlusterFS "
                         "(PEERS=1)")
    ap.add_argument("--quick", action="store_true",
                    default=env_flag("BENCH_QUICK"),
                    help="short jobs and small files (BENCH_QUICK=1)")
    ap.add_argument("--seconds", type=int,
                    default=env_int("BENCH_SECONDS", 0) or None,
                    help="each fio job (BENCH_SECONDS; default 30, quick 5)")
    ap.add_argument("--rounds", type=int,
                    default=env_int("BENCH_ROUNDS", 1),
                    help="passes over the targets, each starting one "
                         "target further down the list; figures are "
                         "medians, ratios the median of each round's "
                         "(BENCH_ROUNDS; default 1)")
    ap.add_argument("--seq-size", type=parse_size,
                    help="the sequential jobs' file (default 2G, quick "
                         "256M)")
    ap.add_argument("--rand-size", type=parse_size,
                    help="the random jobs' file (default 1G, quick 128M)")
    ap.add_argument("--pg-scale", type=int,
                    help="pgbench scale (default 20, quick 2)")
    ap.add_argument("--pg-seconds", type=int,
                    help="pgbench run (default 60, quick 10)")
    ap.add_argument("--log-size", default="64M",
                    help="sixfold mkfs --log-size (default 64M)")
    ap.add_argument("--targets",
                    help="comma-separated subset of plain,limit,mirror,"
                         "sixfold,passthrough,gocryptfs,glusterfs (default:"
                         " the first four, and the peers with --peers)")
    ap.add_argument("--jobs", help="comma-separated subset of "
                    + ",".join(JOB_NAMES) + " (default: all)")
    ap.add_argument("--memory", action="store_true",
                    help="the memory report instead of the suite")
    ap.add_argument("--memory-seconds", type=int,
                    help="its pgbench run (default 600, quick 20)")
    ap.add_argument("--memory-interval", type=int,
                    help="seconds between its RSS samples (default 10, "
                         "quick 2)")
    ap.add_argument("--memory-write", type=parse_size,
                    help="what it writes first (default 2G, quick 256M)")
    ap.add_argument("--memory-fallocate", type=parse_size, default=30 * GIB,
                    help="what it fallocates to grow the volume (default "
                         "30G: 40 GiB capacity)")
    args = ap.parse_args()

    base = QUICK if args.quick else FULL
    cfg = Settings(
        seconds=args.seconds or base["seconds"],
        seq_size=args.seq_size or base["seq_size"],
        rand_size=args.rand_size or base["rand_size"],
        pg_scale=args.pg_scale or base["pg_scale"],
        pg_seconds=args.pg_seconds or base["pg_seconds"],
        log_size=args.log_size,
        mem_write=args.memory_write or base["mem_write"],
        mem_seconds=args.memory_seconds or base["mem_seconds"],
        mem_interval=args.memory_interval or base["mem_interval"],
        mem_fallocate=args.memory_fallocate)

    args.workdir = pathlib.Path(args.workdir or args.out)
    if args.targets:
        args.targets = [t.strip() for t in args.targets.split(",") if t]
    else:
        args.targets = [*BASE_TARGETS, *(PEERS if args.peers else ())]
    args.jobs = ([j.strip() for j in args.jobs.split(",") if j]
                 if args.jobs else JOB_NAMES)
    if args.rounds < 1 or args.rounds > 20:
        ap.error(f"--rounds {args.rounds}: give 1 to 20 (each round runs "
                 "every target's jobs again)")
    for t in args.targets:
        if t not in TARGET_CLASSES:
            ap.error(f"unknown target {t!r}")
    for j in args.jobs:
        if j not in JOB_NAMES:
            ap.error(f"unknown job {j!r}")
    if os.geteuid() != 0:
        ap.error("run as root (mounts, drop_caches, PostgreSQL through "
                 "runuser)")
    if not os.access(args.sixfold, os.X_OK) and (
            args.memory or "sixfold" in args.targets):
        ap.error(f"{args.sixfold} is not executable (run make, or set "
                 "SIXFOLD_BIN)")
    if not os.access(PGBIN / "postgres", os.X_OK):
        ap.error(f"PostgreSQL 15 not found in {PGBIN}")
    return args, cfg


def check_space(args, cfg):
    """Refuse to start if the disk cannot hold the largest target (six
    copies of the largest file, or of PGDATA) with 2 GiB to spare."""
    pg_bytes = cfg.pg_scale * 16 * MIB + 256 * MIB
    biggest = COPIES * max(cfg.seq_size, cfg.rand_size, pg_bytes,
                           cfg.mem_write if args.memory else 0)
    st = os.statvfs(args.workdir)
    free = st.f_bavail * st.f_frsize
    if free < biggest + 2 * GIB:
        raise SystemExit(f"{args.workdir}: {human(free)} free, the run "
                         f"needs about {human(biggest)} plus 2 GiB to spare "
                         "(smaller --seq-size/--rand-size, or --workdir)")
    return biggest


def write_results(doc, args, stem, tmp, with_plot):
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stem}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.copyfile(path, args.out / f"{stem}-latest.json")
    log(f"wrote {path} and {stem}-latest.json")
    if with_plot:
        png = args.out / f"{stem}-{stamp}.png"
        if plot(doc, png, tmp):
            shutil.copyfile(png, args.out / f"{stem}-latest.png")
            log(f"wrote {png} and {stem}-latest.png")


def run_round(args, cfg, base, cleanup, rnd, disk, counters, failed_peers):
    """Every target of rnd["order"], one after the other, its results
    put into rnd as they come (an interrupted run keeps them)."""
    for name in rnd["order"]:
        log(f"== {name}")
        t = TARGET_CLASSES[name](name, base, cfg, args, cleanup)
        rnd["targets"][name] = info = {"status": "ok"}
        idx = cleanup.push(f"tear down {name}", t.teardown)
        t0 = time.monotonic()
        try:
            if name in failed_peers:
                raise RuntimeError(failed_peers[name])
            t.setup()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            log(f"{name}: setup failed: {e}")
            info.update(status="failed", reason=str(e).strip()[-800:])
            for job in args.jobs:
                rnd["jobs"][job][name] = {"status": "failed"}
        else:
            info["path"] = str(t.path)
            info.update(t.info)

            def put(job, res):
                rnd["jobs"][job][name] = res
            bench_target(t, args.jobs, cfg, base, cleanup, put, counters)
        cleanup.run_one(idx)
        info["seconds"] = round(time.monotonic() - t0, 1)
        disk.sample()
        info["peak_disk_bytes"] = disk.take()


def run_suite(args, cfg, base, cleanup, doc, disk):
    """args.rounds passes over the targets; round r starts r places
    further down the list, so that no target always runs first (on a
    disk whose speed drifts, the order would favour one).  The rounds
    go to doc["rounds"]; merge_rounds makes the headline figures."""
    failed_peers = install_peers([t for t in args.targets if t in PEERS])
    counters = DiskCounters(base)
    for job in args.jobs:
        doc["jobs"][job] = {
            "unit": next((j.unit for j in FIO_JOBS if j.name == job), "TPS"),
            "targets": {}}
    doc["rounds"] = []
    for r in range(args.rounds):
        k = r % len(args.targets)
        order = args.targets[k:] + args.targets[:k]
        if args.rounds > 1:
            log(f"== round {r + 1} of {args.rounds}: {', '.join(order)}")
        rnd = {"order": order, "targets": {},
               "jobs": {job: {} for job in args.jobs}}
        doc["rounds"].append(rnd)
        run_round(args, cfg, base, cleanup, rnd, disk, counters,
                  failed_peers)


def medians(runs, spread):
    """The median of each number every dict of runs has; its (least,
    most) into spread where the runs differ."""
    out = {}
    for k, v in runs[0].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not all(isinstance(r.get(k), (int, float)) for r in runs):
            continue
        vals = [r[k] for r in runs]
        out[k] = round(statistics.median(vals), 3)
        if min(vals) != max(vals):
            spread[k] = [min(vals), max(vals)]
    return out


def median_result(runs):
    """One target's results of a job over the rounds that gave figures:
    the median of each figure and its spread (least, most), and of what
    the disk did ("disk"); every round's results in full stay in
    doc["rounds"]."""
    spread = {}
    res = {"status": "ok", "rounds": len(runs), **medians(runs, spread)}
    if spread:
        res["spread"] = spread
    if all(isinstance(r.get("disk"), dict) for r in runs):
        res["disk"] = medians([r["disk"] for r in runs], {})
    return res


def merge_rounds(doc):
    """doc["targets"] and each job's targets from doc["rounds"]: with one
    round, its results as they are (and no rounds key: the single-run
    format); with more, per job and target the median over the rounds
    in which it ran (a round it failed is counted in rounds_failed)."""
    rounds = doc.get("rounds", [])
    if len(rounds) == 1:
        doc["targets"] = rounds[0]["targets"]
        for job, entry in doc["jobs"].items():
            entry["targets"] = rounds[0]["jobs"][job]
        del doc["rounds"]
        return
    names = [n for n in doc["settings"]["targets"]
             if any(n in r["targets"] for r in rounds)]
    for n in names:
        infos = [r["targets"][n] for r in rounds if n in r["targets"]]
        ok = [i for i in infos if i.get("status") == "ok"]
        info = dict(ok[0] if ok else infos[-1])
        info["seconds"] = round(sum(i.get("seconds", 0) for i in infos), 1)
        info["peak_disk_bytes"] = max(i.get("peak_disk_bytes", 0)
                                      for i in infos)
        info["rounds"] = len(infos)
        info["rounds_failed"] = len(infos) - len(ok)
        doc["targets"][n] = info
    for job, entry in doc["jobs"].items():
        for n in names:
            got = [r["jobs"][job][n] for r in rounds
                   if n in r["jobs"].get(job, {})]
            ok = [g for g in got if g.get("status") == "ok"]
            if not ok:
                if got:
                    entry["targets"][n] = got[-1]
                continue
            entry["targets"][n] = median_result(ok)
            if len(ok) < len(got):
                entry["targets"][n]["rounds_failed"] = len(got) - len(ok)


def main():
    args, cfg = parse_args()
    interrupt_on_sigterm()
    args.workdir.mkdir(parents=True, exist_ok=True)
    biggest = check_space(args, cfg)
    cleanup = Cleanup()
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-work-",
                                         dir=args.workdir))
    cleanup.push("remove " + str(base),
                 lambda: shutil.rmtree(base, ignore_errors=True))
    os.chmod(base, 0o755)  # the postgres user goes through it
    doc = {"meta": machine_meta(args),
           "settings": {**dataclasses.asdict(cfg), "quick": args.quick,
                        "disk_needed_bytes": biggest}}
    if not args.memory:
        doc["settings"].update(peers=args.peers, targets=args.targets,
                               jobs=args.jobs, rounds=args.rounds)
        doc.update(targets={}, jobs={})
    disk = DiskUse(base)
    rc = 0
    try:
        with Periodic(2, disk.sample):
            if args.memory:
                doc["memory"] = memory_report(args, cfg, base, cleanup)
            else:
                run_suite(args, cfg, base, cleanup, doc, disk)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception:
        log("failed: " + traceback.format_exc())
        rc = 1
    finally:
        doc["peak_disk_bytes"] = disk.peak
        try:
            cleanup.run_all()
        finally:
            doc["complete"] = rc == 0
            if args.memory and "memory" in doc:
                print(memory_table(doc["memory"]))
            elif not args.memory and doc.get("rounds"):
                merge_rounds(doc)
                ratios(doc)
                print(table(doc))
            print(f"peak disk use under {base}: {human(disk.peak)}")
            if doc.get("memory") or doc.get("targets") or \
                    doc.get("rounds"):
                with tempfile.TemporaryDirectory() as tmp:
                    write_results(doc, args,
                                  "memory" if args.memory else "bench",
                                  pathlib.Path(tmp), not args.memory)
    return rc


if __name__ == "__main__":
    sys.exit(main())
