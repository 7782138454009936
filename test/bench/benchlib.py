"""benchlib.py - what the benchmarks in test/bench share: commands with a
timeout, a cleanup stack, PostgreSQL 15 as the postgres user with pgbench,
fio runs and their JSON, and a sixfold mount whose daemon is our child.

Import it from a script in test/bench (its directory is on sys.path when
the script runs).  It puts test/ on sys.path itself and takes the generic
process and mount helpers from test/conftest.py and test/lib/drill.py.
"""

import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "test"))

from conftest import NZONES, is_mount  # noqa: E402
from lib.drill import Reach, free_port, proc_alive, wait_gone  # noqa: E402

PGBIN = pathlib.Path("/usr/lib/postgresql/15/bin")
FIO = shutil.which("fio") or "/usr/bin/fio"
PG_USER = "postgres"
PG_SCALE = 20
MOUNT_READY_S = 60
MB = 1e6
# Popen keywords for a daemon: its own session, so that a Ctrl-C at the
# terminal reaches only us, and the cleanup stops it in order (after the
# programs that use its mount).
DAEMON_SESSION = {"start_new_session": True}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, timeout, check=True, **kw):
    """Run cmd with a timeout (the child is killed on timeout or Ctrl-C);
    output captured as text unless stdout is given."""
    cmd = [str(c) for c in cmd]
    log("+ " + shlex.join(cmd))
    if "stdout" not in kw:
        kw["capture_output"] = True
    kw.setdefault("stdin", subprocess.DEVNULL)
    r = subprocess.run(cmd, timeout=timeout, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exit {r.returncode}\n"
                           f"{r.stdout or ''}{r.stderr or ''}")
    return r


def interrupt_on_sigterm():
    """SIGTERM raises KeyboardInterrupt, so that it cleans up as Ctrl-C
    does."""
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_sigterm)


class Cleanup:
    """Undo actions, run last-in first-out; each one guarded so that one
    failing does not skip the others."""

    def __init__(self):
        self.actions = []

    def push(self, what, fn):
        self.actions.append((what, fn))
        return len(self.actions) - 1

    def run_one(self, index):
        """Run one action now (if still pending) and drop it."""
        if index < len(self.actions) and self.actions[index]:
            what, fn = self.actions[index]
            self.actions[index] = None
            fn()

    def run_all(self):
        while self.actions:
            item = self.actions.pop()
            if item is None:
                continue
            what, fn = item
            try:
                fn()
            except BaseException as e:  # keep cleaning up
                log(f"cleanup: {what}: {e!r}")


# ---- PostgreSQL ---------------------------------------------------------

class Postgres:
    """PostgreSQL 15 as the postgres user (fsync=on, synchronous_commit=on,
    unix socket in `work` only).  Every ancestor of PGDATA is made
    searchable for postgres while it runs (see drill.Reach)."""

    def __init__(self, pgdata, work, cleanup):
        self.pgdata = pgdata
        self.work = work  # owned by postgres: socket and server log
        self.port = free_port()
        self.log = work / "server.log"
        self.pid = None
        self.cleanup = cleanup
        self.reach = Reach(pgdata)
        cleanup.push("restore directory modes", self.reach.restore)

    def as_pg(self, cmd, timeout):
        self.reach.ensure()
        return run(["runuser", "-u", PG_USER, "--", *cmd], timeout,
                   cwd=self.work)

    def initdb(self):
        pw = pwd.getpwnam(PG_USER)
        self.pgdata.mkdir()
        os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pgdata, 0o700)
        self.as_pg([PGBIN / "initdb", "-D", self.pgdata, "-U", PG_USER,
                    "--auth=trust", "-E", "UTF8", "--no-instructions"], 300)

    def start(self):
        opts = (f"-c fsync=on -c synchronous_commit=on "
                f"-c listen_addresses='' -k {self.work} -p {self.port}")
        idx = self.cleanup.push("stop PostgreSQL", self.kill)
        try:
            self.as_pg([PGBIN / "pg_ctl", "start", "-w", "-t", "300",
                        "-D", self.pgdata, "-l", self.log, "-o", opts], 330)
        finally:
            pid_file = self.pgdata / "postmaster.pid"
            if pid_file.exists():
                self.pid = int(pid_file.read_text().split("\n", 1)[0])
        self.stop_index = idx

    def stop(self):
        """Clean stop (pg_ctl stop -m fast)."""
        self.as_pg([PGBIN / "pg_ctl", "stop", "-w", "-t", "300", "-D",
                    self.pgdata, "-m", "fast"], 330)
        if self.pid:
            wait_gone([self.pid], 60)
        self.pid = None
        self.cleanup.run_one(self.stop_index)  # nothing left to do

    def kill(self):
        """Cleanup: stop the postmaster by its PID (SIGINT: fast
        shutdown; then SIGQUIT; then SIGKILL)."""
        if not self.pid:
            return
        for sig, wait in ((signal.SIGINT, 60), (signal.SIGQUIT, 15),
                          (signal.SIGKILL, 15)):
            if not proc_alive(self.pid):
                break
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            if wait_gone([self.pid], wait):
                break
        self.pid = None

    def bench_args(self):
        return ["-h", self.work, "-p", self.port, "-U", PG_USER, "postgres"]

    def pgbench_init(self, scale):
        """pgbench -i -s scale; returns its wall time in seconds."""
        t0 = time.monotonic()
        run([PGBIN / "pgbench", "-i", "-s", scale, "-q", *self.bench_args()],
            3600)
        return time.monotonic() - t0

    def pgbench_cmd(self, seconds):
        return [PGBIN / "pgbench", "-c", "4", "-j", "2", "-T", seconds,
                *self.bench_args()]


def pg_workdir(base):
    """A directory owned by postgres for the socket and the server log."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="pg-", dir=base))
    pw = pwd.getpwnam(PG_USER)
    os.chown(work, pw.pw_uid, pw.pw_gid)
    os.chmod(work, 0o700)
    return work


def pgbench_figures(out):
    """The numbers of a pgbench run's report."""
    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    return {
        "tps": num(r"tps = ([0-9.]+) \(without initial connection"),
        "latency_avg_ms": num(r"latency average = ([0-9.]+) ms"),
        "transactions": num(r"transactions actually processed: (\d+)"),
        "failed": num(r"number of failed transactions: (\d+)"),
    }


def bench_pgbench(target, base, seconds, cleanup, scale=PG_SCALE):
    """initdb + pgbench -i -s scale + pgbench -c 4 -j 2 -T seconds on a
    PGDATA in target; returns the numbers."""
    pg = Postgres(target / "pgdata", pg_workdir(base), cleanup)
    try:
        pg.initdb()
        pg.start()
        init_s = pg.pgbench_init(scale)
        r = run(pg.pgbench_cmd(seconds), seconds + 600)
        pg.stop()
    except Exception:
        pg.kill()  # the server goes before its file system
        raise
    res = {"scale": scale, "clients": 4, "threads": 2, "seconds": seconds,
           "init_seconds": round(init_s, 2), **pgbench_figures(r.stdout)}
    log(f"pgbench: {res}")
    return res


# ---- fio ----------------------------------------------------------------

def fio_run(args, out, timeout):
    """fio with args (options as --key=value) and JSON output into the
    file out; returns the parsed JSON (fio may print warnings before
    it)."""
    run([FIO, *args, "--output-format=json", f"--output={out}"], timeout)
    text = pathlib.Path(out).read_text()
    return json.loads(text[text.index("{"):])


def pct_us(lat, p):
    """Percentile p (e.g. 99) of a fio latency object (clat_ns, lat_ns),
    in microseconds, or None."""
    v = (lat or {}).get("percentile", {}).get(f"{p:.6f}")
    return round(v / 1000, 1) if v is not None else None


# ---- FUSE daemons -------------------------------------------------------

def wait_mounted(mnt, proc, daemon_log, what):
    """Wait until mnt is a mount point, served by proc (a Popen of ours
    running in the foreground); RuntimeError with its log if it exits or
    takes longer than MOUNT_READY_S."""
    deadline = time.monotonic() + MOUNT_READY_S
    while not is_mount(mnt):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: "
                               + daemon_log.read_text(errors="replace"))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {MOUNT_READY_S} s")
        time.sleep(0.05)


def unmount_daemon(proc, mnt, umount_cmd):
    """Unmount mnt with umount_cmd and wait for its daemon proc (our
    child) to exit; if that fails, kill the daemon by its PID and detach
    the mount lazily.  Returns the daemon's exit status."""
    try:
        if is_mount(mnt):
            run(umount_cmd, 120, check=False)
        proc.wait(timeout=120)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)
    if is_mount(mnt):
        run(["fusermount3", "-u", "-z", mnt], 60, check=False)
    return proc.returncode


class SixfoldMount:
    """A fresh volume in base/zones, mounted at base/sixfold-mnt by a
    daemon running in the foreground (-f) as our child."""

    def __init__(self, sixfold, base, log_size, cleanup):
        self.sixfold = sixfold
        self.base = base
        self.zones = [base / "zones" / f"z{i}" for i in range(NZONES)]
        self.mnt = base / "sixfold-mnt"
        self.key = base / "key"
        self.log = base / "sixfold-daemon.log"
        self.proc = None
        self.cleanup = cleanup
        self.key.write_bytes(os.urandom(32))
        os.chmod(self.key, 0o600)
        run([sixfold, "mkfs", "--key-file", self.key, "--log-size",
             log_size, *self.zones], 300)
        self.mnt.mkdir()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def mount(self):
        cmd = [str(c) for c in (self.sixfold, "mount", "-f", "--key-file",
                                self.key, "-o", "allow_other", self.zones[0],
                                self.mnt)]
        log("+ " + shlex.join(cmd))
        with open(self.log, "ab") as lf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf,
                                         **DAEMON_SESSION)
        self.cleanup.push("unmount sixfold", self.unmount)
        wait_mounted(self.mnt, self.proc, self.log, "sixfold mount")
        try:
            os.chmod(self.mnt, 0o755)  # for the postgres user
        except OSError as e:
            log(f"chmod {self.mnt}: {e}")

    def unmount(self):
        """sixfold umount (see unmount_daemon)."""
        if self.proc is None:
            return
        rc = unmount_daemon(self.proc, self.mnt,
                            [self.sixfold, "umount", self.mnt])
        self.proc = None
        if rc != 0:
            log(f"sixfold daemon exit {rc}: "
                + self.log.read_text(errors="replace")[-2000:])
