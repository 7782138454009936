#!/usr/bin/env python3
"""fs_bench.py - PostgreSQL and fsync-bound fio on a sixfold mount, next to
the same runs on a plain directory of the same disk.

Runs, for each of two targets made in one temporary directory (under
--workdir):

  plain    a plain directory on the disk of --workdir
  sixfold  a fresh sixfold volume (six zone directories on that same disk,
           `sixfold mkfs --key-file K --log-size 64M Z0..Z5`), mounted
           with `sixfold mount -f --key-file K -o allow_other Z0 MNT` in
           the background, and unmounted at the end with `sixfold umount`

these benchmarks:

  pgbench  PostgreSQL 15 (run as the postgres user, PGDATA inside the
           target, fsync=on, synchronous_commit=on, unix socket only):
           pgbench -i -s 20, then pgbench -c 4 -j 2 -T SECONDS
  fio      8 KiB random writes with an fsync after each (--fsync=1),
           ioengine=psync, a 256 MiB file, FIO_SECONDS, time based

and prints one table with both targets and the ratio sixfold / plain, and
writes the numbers as JSON to --out.  Everything it starts or makes
(PostgreSQL, fio, pgbench, the sixfold daemon, the mount, the temporary
directory) is stopped and removed at the end, also after a failure,
Ctrl-C or SIGTERM; processes are stopped by their PID.

Run as root (PostgreSQL's server runs as `postgres` through runuser):

  sudo python3 test/bench/fs_bench.py --out bench.json
  python3 test/bench/fs_bench.py --only-plain --seconds 10 --fio-seconds 5

This is a benchmark, not a test: it asserts nothing about speed.
"""

import argparse
import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
PGBIN = pathlib.Path("/usr/lib/postgresql/15/bin")
PSQL = "/usr/bin/psql" if os.access("/usr/bin/psql", os.X_OK) \
    else str(PGBIN / "psql")
FIO = shutil.which("fio") or "/usr/bin/fio"
PG_USER = "postgres"
PG_SCALE = 20
MOUNT_READY_S = 60
NZONES = 6


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


def proc_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while proc_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def is_mount(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4].replace("\\040", " ") == target:
                return True
    return False


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
    def __init__(self, pgdata, work, cleanup):
        self.pgdata = pgdata
        self.work = work  # owned by postgres: socket and server log
        self.port = free_port()
        self.log = work / "server.log"
        self.pid = None
        self.cleanup = cleanup

    def as_pg(self, cmd, timeout):
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
            wait_gone(self.pid, 60)
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
            if wait_gone(self.pid, wait):
                break
        self.pid = None

    def bench_args(self):
        return ["-h", self.work, "-p", self.port, "-U", PG_USER, "postgres"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_workdir(base):
    """A directory owned by postgres for the socket and the server log."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="pg-", dir=base))
    pw = pwd.getpwnam(PG_USER)
    os.chown(work, pw.pw_uid, pw.pw_gid)
    os.chmod(work, 0o700)
    return work


def bench_pgbench(target, base, seconds, cleanup):
    """initdb + pgbench -i -s 20 + pgbench -c 4 -j 2 -T seconds on a
    PGDATA in target; returns the numbers."""
    pg = Postgres(target / "pgdata", pg_workdir(base), cleanup)
    pg.initdb()
    pg.start()
    t0 = time.monotonic()
    run([PGBIN / "pgbench", "-i", "-s", PG_SCALE, "-q", *pg.bench_args()],
        1800)
    init_s = time.monotonic() - t0
    r = run([PGBIN / "pgbench", "-c", "4", "-j", "2", "-T", seconds,
             *pg.bench_args()], seconds + 600)
    out = r.stdout
    pg.stop()

    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    res = {
        "scale": PG_SCALE, "clients": 4, "threads": 2, "seconds": seconds,
        "init_seconds": round(init_s, 2),
        "tps": num(r"tps = ([0-9.]+) \(without initial connection"),
        "latency_avg_ms": num(r"latency average = ([0-9.]+) ms"),
        "transactions": num(r"transactions actually processed: (\d+)"),
        "failed": num(r"number of failed transactions: (\d+)"),
    }
    log(f"pgbench: {res}")
    return res


# ---- fio ----------------------------------------------------------------

def bench_fio(target, base, seconds):
    """fio 8 KiB randwrite with --fsync=1 on a 256 MiB file in target."""
    d = target / "fio"
    d.mkdir()
    out = pathlib.Path(tempfile.mkstemp(prefix="fio-", suffix=".json",
                                        dir=base)[1])
    run([FIO, "--name=randwrite-8k-fsync", f"--directory={d}",
         "--filename=data", "--rw=randwrite", "--bs=8k", "--fsync=1",
         "--ioengine=psync", "--size=256M", "--time_based",
         f"--runtime={seconds}", "--output-format=json", f"--output={out}"],
        seconds + 900)
    text = out.read_text()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    w = job["write"]
    pct = w.get("clat_ns", {}).get("percentile", {})
    spct = job.get("sync", {}).get("lat_ns", {}).get("percentile", {})

    def us(p, key):
        v = p.get(key)
        return round(v / 1000, 1) if v is not None else None

    res = {
        "seconds": seconds, "iops": round(w["iops"], 1),
        "clat_p50_us": us(pct, "50.000000"),
        "clat_p99_us": us(pct, "99.000000"),
        "fsync_p50_us": us(spct, "50.000000"),
        "fsync_p99_us": us(spct, "99.000000"),
        "error": job.get("error", 0),
    }
    log(f"fio: {res}")
    shutil.rmtree(d, ignore_errors=True)
    return res


# ---- a sixfold mount ----------------------------------------------------

class SixfoldMount:
    """A fresh volume in base/zones, mounted at base/mnt by a daemon
    running in the foreground (-f) as our child."""

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

    def mount(self):
        cmd = [str(c) for c in (self.sixfold, "mount", "-f", "--key-file",
                                self.key, "-o", "allow_other", self.zones[0],
                                self.mnt)]
        log("+ " + shlex.join(cmd))
        with open(self.log, "ab") as lf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf)
        self.cleanup.push("unmount sixfold", self.unmount)
        deadline = time.monotonic() + MOUNT_READY_S
        while not is_mount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError("sixfold mount exited: "
                                   + self.log.read_text(errors="replace"))
            if time.monotonic() > deadline:
                raise RuntimeError("sixfold mount not ready in "
                                   f"{MOUNT_READY_S} s")
            time.sleep(0.05)
        try:
            os.chmod(self.mnt, 0o755)  # for the postgres user
        except OSError as e:
            log(f"chmod {self.mnt}: {e}")

    def unmount(self):
        """sixfold umount; if that fails, kill the daemon (by its PID) and
        detach the mount lazily."""
        if self.proc is None:
            return
        try:
            if is_mount(self.mnt):
                run([self.sixfold, "umount", self.mnt], 120, check=False)
            self.proc.wait(timeout=120)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        if is_mount(self.mnt):
            run(["fusermount3", "-u", "-z", self.mnt], 60, check=False)
        rc = self.proc.returncode
        self.proc = None
        if rc != 0:
            log(f"sixfold daemon exit {rc}: "
                + self.log.read_text(errors="replace")[-2000:])


# ---- driver -------------------------------------------------------------

def bench_target(target, base, args, cleanup):
    res = {"path": str(target)}
    if not args.skip_pg:
        res["pgbench"] = bench_pgbench(target, base, args.seconds, cleanup)
    if not args.skip_fio:
        res["fio"] = bench_fio(target, base, args.fio_seconds)
    return res


ROWS = [
    ("pgbench", "tps", "pgbench tps", "higher"),
    ("pgbench", "latency_avg_ms", "pgbench latency avg ms", "lower"),
    ("pgbench", "init_seconds", "pgbench -i -s 20 s", "lower"),
    ("fio", "iops", "fio 8k randwrite+fsync IOPS", "higher"),
    ("fio", "clat_p50_us", "fio write clat p50 us", "lower"),
    ("fio", "clat_p99_us", "fio write clat p99 us", "lower"),
    ("fio", "fsync_p50_us", "fio fsync p50 us", "lower"),
    ("fio", "fsync_p99_us", "fio fsync p99 us", "lower"),
]


def table(results):
    names = [n for n in ("plain", "sixfold") if n in results]
    lines = [f"{'metric':<30}" + "".join(f"{n:>14}" for n in names)
             + (f"{'sixfold/plain':>15}" if len(names) == 2 else "")]
    ratios = {}
    for group, key, label, _better in ROWS:
        vals = [results[n].get(group, {}).get(key) for n in names]
        if all(v is None for v in vals):
            continue
        line = f"{label:<30}" + "".join(
            f"{v:>14.1f}" if v is not None else f"{'-':>14}" for v in vals)
        if len(names) == 2 and vals[0] and vals[1] is not None:
            ratio = vals[1] / vals[0]
            ratios[f"{group}.{key}"] = round(ratio, 3)
            line += f"{ratio:>15.3f}"
        lines.append(line)
    return "\n".join(lines), ratios


def on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sixfold", type=pathlib.Path,
                    default=REPO / "build" / "sixfold",
                    help="the sixfold program (default: build/sixfold)")
    ap.add_argument("--workdir", type=pathlib.Path,
                    default=pathlib.Path("/var/tmp"),
                    help="the disk to use: the temporary directory (plain "
                         "target and zones) is made here (default /var/tmp)")
    ap.add_argument("--seconds", type=int, default=60,
                    help="pgbench run time (default 60)")
    ap.add_argument("--fio-seconds", type=int, default=30,
                    help="fio run time (default 30)")
    ap.add_argument("--log-size", default="64M",
                    help="sixfold mkfs --log-size (default 64M)")
    ap.add_argument("--skip-pg", action="store_true", help="no pgbench")
    ap.add_argument("--skip-fio", action="store_true", help="no fio")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--only-plain", action="store_true",
                      help="only the plain directory (no sixfold mount)")
    only.add_argument("--only-sixfold", action="store_true",
                      help="only the sixfold mount")
    ap.add_argument("--out", type=pathlib.Path,
                    help="write the results as JSON here")
    args = ap.parse_args()

    if os.geteuid() != 0:
        ap.error("run as root (PostgreSQL runs as the postgres user through "
                 "runuser; mounting needs root)")
    if args.skip_pg and args.skip_fio:
        ap.error("--skip-pg and --skip-fio leave nothing to run")
    if not args.skip_pg and not os.access(PGBIN / "postgres", os.X_OK):
        ap.error(f"PostgreSQL 15 not found in {PGBIN} (or use --skip-pg)")
    if not args.only_plain and not os.access(args.sixfold, os.X_OK):
        ap.error(f"{args.sixfold} is not executable (build it, or use "
                 "--only-plain)")

    signal.signal(signal.SIGTERM, on_sigterm)
    cleanup = Cleanup()
    results = {}
    rc = 0
    base = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-bench-",
                                         dir=args.workdir))
    cleanup.push("remove " + str(base),
                 lambda: shutil.rmtree(base, ignore_errors=True))
    try:
        os.chmod(base, 0o755)  # the postgres user goes through it
        if not args.only_sixfold:
            plain = base / "plain"
            plain.mkdir()
            os.chmod(plain, 0o755)
            log("== plain directory")
            results["plain"] = bench_target(plain, base, args, cleanup)
        if not args.only_plain:
            log("== sixfold mount")
            m = SixfoldMount(args.sixfold, base, args.log_size, cleanup)
            m.mount()
            results["sixfold"] = bench_target(m.mnt, base, args, cleanup)
            m.unmount()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception as e:
        log(f"failed: {e}")
        rc = 1
    finally:
        cleanup.run_all()

    if results:
        text, ratios = table(results)
        print(text)
        doc = {"workdir": str(args.workdir), "results": results,
               "ratios_sixfold_over_plain": ratios,
               "complete": rc == 0,
               "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if args.out:
            args.out.write_text(json.dumps(doc, indent=2) + "\n")
            log(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
