"""drill.py - helpers for the self-healing drills (test/fault/test_drills.py)
and the repair benchmark (test/bench/repair_bench.py).

Import it as `from lib import drill` with test/ on sys.path (pytest puts it
there for test/conftest.py; the benchmark inserts it itself).  It depends
on test/conftest.py for run(), Mount and the constants, and on nothing of
pytest's own.

What is here:

- PostgreSQL 15 as the postgres user on a mount: Pg (server: initdb,
  start, stop, crash stop, psql, pg_amcheck, row counts and TPC-B sums),
  make_pg_template() (an initdb'd, pgbench -i'd PGDATA on the plain disk,
  copied into each mount: much faster than initdb and pgbench -i through
  the mount every time), and PgbenchLoad (pgbench as the postgres user in
  the background, in short runs until stopped, recording every error,
  transaction count and per-second TPS).
- Zone status: status() and wait_status(mount, predicate, timeout) over
  `sixfold status --json MOUNTPOINT`, and predicates on it.
- Zone faults: away()/back() (the directory renamed away and back),
  lock()/unlock() (chmod 000 / 700), NO_DAC (a command prefix that starts
  the daemon without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that
  chmod 000 stops it) and check_no_dac().
- LoopDisk: a small ext4 image on a loop device mounted at a path (a zone
  on its own disk); teardown unmounts it and detaches only the device it
  attached.
- The direct offline comparison of the zones: meta_entries() reads every
  pg/*.meta file of a zone (only their allocated ranges), compare_zones()
  checks that every block has the same (state, lsn, tag) in all zones.
- Corruption of chosen copies: damage_seg(), damage_meta().
"""

import hashlib
import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from conftest import BLOCK, NZONES, PG_BLOCKS, flip_bytes, is_mount, run

PGBIN = pathlib.Path("/usr/lib/postgresql/15/bin")
PSQL = "/usr/bin/psql" if os.access("/usr/bin/psql", os.X_OK) \
    else str(PGBIN / "psql")
PG_USER = "postgres"
PG_TIMEOUT = 300  # seconds for one server start, stop or client run
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers",
          "pgbench_history")
META_BYTES = 64
STATE_WRITTEN = 1
STATE_DISCARDED = 2

# The daemon without the two capabilities that let root ignore permission
# bits: chmod 000 on a zone directory then makes it unreadable for it.
# setpriv execs the daemon, so the PID the test holds is the daemon's.
NO_DAC = ("setpriv", "--inh-caps=-all",
          "--bounding-set=-dac_override,-dac_read_search")
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def log(msg):
    print(msg, flush=True)


# ---- processes ------------------------------------------------------------

def proc_alive(pid):
    """True if pid runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def proc_children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(d))
    return kids


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(proc_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_popen(p, timeout=30):
    """SIGKILL a Popen of ours (by its pid) if it runs, and reap it."""
    if p.poll() is None:
        p.kill()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def with_deadline(fn, what, seconds):
    """Run fn() in a thread; AssertionError if it has not returned within
    seconds (a hang on the mount).  Returns fn's value or raises its
    exception."""
    box = {}

    def body():
        try:
            box["ret"] = fn()
        except BaseException as e:  # handed to the caller
            box["exc"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise AssertionError(f"hang: {what} not done after {seconds} s")
    if "exc" in box:
        raise box["exc"]
    return box.get("ret")


def cap_eff(pid):
    """Effective capability mask of pid."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no CapEff for {pid}")


def check_no_dac(prefix=NO_DAC):
    """As a process started with prefix, opening a file in a chmod-000
    root-owned directory must fail with EACCES (else the chmod drill
    tests nothing)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-nodac-"))
    try:
        (d / "f").write_text("x")
        os.chmod(d, 0)
        r = run([*prefix, "python3", "-c",
                 "import errno, sys\n"
                 "try:\n"
                 f"    open({str(d / 'f')!r}).read()\n"
                 "except PermissionError:\n"
                 "    sys.exit(13)\n"
                 "sys.exit(0)\n"])
        assert r.returncode == 13, (
            f"{shlex.join(prefix)}: a chmod 000 directory is still "
            f"readable (exit {r.returncode} {r.stderr})")
    finally:
        os.chmod(d, 0o700)
        shutil.rmtree(d, ignore_errors=True)


def check_daemon_no_dac(mount):
    """The running daemon has neither DAC capability."""
    eff = cap_eff(mount.pid)
    bad = eff & ((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    assert not bad, f"daemon {mount.pid} CapEff {eff:#x} has a DAC cap"


# ---- PostgreSQL -----------------------------------------------------------

def pg_ids():
    pw = pwd.getpwnam(PG_USER)
    return pw.pw_uid, pw.pw_gid


def pg_available():
    return os.access(PGBIN / "postgres", os.X_OK)


def as_pg_prefix():
    """setpriv to the postgres user: it execs (no extra process), so a
    client's Popen pid is the client's own."""
    uid, gid = pg_ids()
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups",
            "--"]


def pg_env():
    pw = pwd.getpwnam(PG_USER)
    env = dict(os.environ, HOME=pw.pw_dir, USER=PG_USER, LOGNAME=PG_USER)
    env.pop("PGDATA", None)
    return env


def free_port():
    """A TCP port nothing listens on (it only names the unix socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reach:
    """Keeps every ancestor directory of a path searchable by others (o+x)
    so that the postgres user reaches PGDATA (pytest's temporary
    directories are 0700); restore() puts the modes back."""

    def __init__(self, path):
        self.dirs = list(reversed(pathlib.Path(path).parents))
        self.original = {}

    def ensure(self):
        for d in self.dirs:
            try:
                mode = os.stat(d).st_mode & 0o7777
            except OSError:
                continue
            if not mode & 0o001:
                self.original.setdefault(d, mode)
                os.chmod(d, mode | 0o001)

    def restore(self):
        for d, mode in self.original.items():
            try:
                os.chmod(d, mode)
            except OSError:
                pass


def pg_workdir():
    """A private directory for a server's socket and log, owned by
    postgres, in /tmp (short socket path, reachable by postgres)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-pg-", dir="/tmp"))
    uid, gid = pg_ids()
    os.chown(work, uid, gid)
    os.chmod(work, 0o700)
    return work


class Pg:
    """One PostgreSQL 15 server, run as postgres, PGDATA at `pgdata`,
    listening on a unix socket only.  Everything it starts is stopped by
    PID in shutdown()."""

    def __init__(self, pgdata):
        self.pgdata = pathlib.Path(pgdata)
        self.reach = Reach(self.pgdata)
        self.work = pg_workdir()
        self.sock = self.work
        self.port = free_port()
        self.log = self.work / "server.log"
        self.pid = None
        self.stale_pid_file = False
        self.clients = []  # Popen objects to kill at shutdown

    def as_pg(self, cmd, timeout=PG_TIMEOUT):
        self.reach.ensure()
        return run(["runuser", "-u", PG_USER, "--", *cmd], timeout=timeout,
                   cwd=self.work)

    def log_tail(self, n=4000):
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no server log)"

    def initdb(self):
        uid, gid = pg_ids()
        self.pgdata.mkdir()
        os.chown(self.pgdata, uid, gid)
        os.chmod(self.pgdata, 0o700)
        r = self.as_pg([PGBIN / "initdb", "-D", self.pgdata, "-U", PG_USER,
                        "--auth=trust", "-E", "UTF8", "--no-instructions"])
        assert r.returncode == 0, f"initdb: {r.stdout}\n{r.stderr}"

    def copy_from(self, template):
        """PGDATA as a copy of a (stopped) template PGDATA."""
        uid, gid = pg_ids()
        self.pgdata.mkdir()
        os.chown(self.pgdata, uid, gid)
        os.chmod(self.pgdata, 0o700)
        t0 = time.monotonic()
        r = run(["cp", "-a", f"{template}/.", self.pgdata], timeout=600)
        assert r.returncode == 0, f"cp -a template: {r.stderr}"
        log(f"PGDATA copied from {template} in "
            f"{time.monotonic() - t0:.1f} s")

    def start(self):
        if self.stale_pid_file:
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            self.stale_pid_file = False
        opts = (f"-c fsync=on -c synchronous_commit=on "
                f"-c listen_addresses='' -k {self.sock} -p {self.port}")
        r = self.as_pg([PGBIN / "pg_ctl", "start", "-w", "-t", PG_TIMEOUT,
                        "-D", self.pgdata, "-l", self.log, "-o", opts],
                       timeout=PG_TIMEOUT + 30)
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            self.pid = int(pid_file.read_text().split("\n", 1)[0])
        assert r.returncode == 0, (f"pg_ctl start: {r.stdout}\n{r.stderr}\n"
                                   f"server log:\n{self.log_tail()}")
        assert self.pid and proc_alive(self.pid), "no postmaster running"

    def stop(self, mode="fast"):
        r = self.as_pg([PGBIN / "pg_ctl", "stop", "-w", "-t", PG_TIMEOUT,
                        "-D", self.pgdata, "-m", mode],
                       timeout=PG_TIMEOUT + 30)
        assert r.returncode == 0, (f"pg_ctl stop: {r.stdout}\n{r.stderr}\n"
                                   f"server log:\n{self.log_tail()}")
        assert wait_gone([self.pid], 60), f"postmaster {self.pid} still runs"
        self.pid = None

    def crash_stop(self):
        """Stop the server at once by its PIDs (SIGQUIT, then SIGKILL to it
        and its children), as after a crash; needs no PGDATA."""
        if self.pid is None:
            return
        pm = self.pid
        kids = [k for k in proc_children(pm)]
        try:
            os.kill(pm, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        if not wait_gone([pm, *kids], 15):
            for p in [pm, *kids]:
                if proc_alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            assert wait_gone([pm, *kids], 30), \
                f"postgres processes {[pm, *kids]} do not die"
        # pg_ctl's child is reaped by init; until then its zombie's PID in
        # postmaster.pid looks alive to PostgreSQL: the file is stale.
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pm}") and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pm}"):
            self.stale_pid_file = True
        self.pid = None

    def kill_clients(self):
        for p in self.clients:
            kill_popen(p)
        self.clients = []

    def shutdown(self):
        """Teardown: every process this object started ends; the work
        directory goes."""
        try:
            self.kill_clients()
            if self.pid is not None and proc_alive(self.pid):
                try:
                    if (self.pgdata / "postmaster.pid").exists():
                        self.as_pg([PGBIN / "pg_ctl", "stop", "-w", "-t",
                                    "60", "-D", self.pgdata, "-m", "fast"],
                                   timeout=90)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                if not wait_gone([self.pid], 5):
                    self.crash_stop()
            self.pid = None
        finally:
            print("server log tail:\n" + self.log_tail(2000))
            shutil.rmtree(self.work, ignore_errors=True)
            self.reach.restore()

    # ---- clients ----

    def conn_args(self, db="postgres"):
        return ["-h", str(self.sock), "-p", str(self.port), "-U", PG_USER,
                "-d", db]

    def bench_args(self, db="postgres"):
        return ["-h", str(self.sock), "-p", str(self.port), "-U", PG_USER, db]

    def psql_cmd(self, sql, db="postgres"):
        return [*as_pg_prefix(), PSQL, "-X", "-A", "-t", "-q", "-v",
                "ON_ERROR_STOP=1", *self.conn_args(db), "-c", sql]

    def psql(self, sql, timeout=PG_TIMEOUT):
        r = run(self.psql_cmd(sql), timeout=timeout, env=pg_env())
        assert r.returncode == 0, (f"psql {sql!r}: {r.stdout}\n{r.stderr}\n"
                                   f"server log:\n{self.log_tail()}")
        return r.stdout.strip()

    def psql_bg(self, sql, out):
        """psql -c sql in the background, output to the file out."""
        cmd = [str(c) for c in self.psql_cmd(sql)]
        print("+", shlex.join(cmd))
        with open(out, "w") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, env=pg_env())
        self.clients.append(p)
        return p

    def pgbench(self, *args, timeout=PG_TIMEOUT):
        return run([*as_pg_prefix(), PGBIN / "pgbench", *args,
                    *self.bench_args()], timeout=timeout, env=pg_env())

    def amcheck(self):
        """pg_amcheck of every database, heap and btree; must be clean."""
        r = run([*as_pg_prefix(), PGBIN / "pg_amcheck", "--all",
                 "--install-missing", "--heapallindexed", "-h", self.sock,
                 "-p", self.port, "-U", PG_USER], timeout=PG_TIMEOUT,
                env=pg_env())
        assert r.returncode == 0, (f"pg_amcheck exit {r.returncode}:\n"
                                   f"{r.stdout}\n{r.stderr}")
        return r

    def counts(self):
        return {t: int(self.psql(f"SELECT count(*) FROM {t}"))
                for t in TABLES}

    def balances(self):
        """(sum abalance, sum tbalance, sum bbalance, sum delta): equal
        when every TPC-B transaction is there whole."""
        out = self.psql(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)"
            " || ' ' || (SELECT coalesce(sum(tbalance), 0) FROM "
            "pgbench_tellers) || ' ' || (SELECT coalesce(sum(bbalance), 0) "
            "FROM pgbench_branches) || ' ' || (SELECT coalesce(sum(delta), 0)"
            " FROM pgbench_history)")
        return tuple(int(x) for x in out.split())


def make_pg_template(scale):
    """An initdb'd PGDATA with pgbench -i -s scale, on the plain disk in a
    new directory of /tmp, server stopped.  Returns (dir, pgdata); the
    caller removes dir."""
    top = pathlib.Path(tempfile.mkdtemp(prefix=f"sixfold-pgtmpl{scale}-",
                                        dir="/tmp"))
    os.chmod(top, 0o755)
    pg = Pg(top / "pgdata")
    try:
        pg.initdb()
        pg.start()
        r = pg.pgbench("-i", "-q", "-s", scale)
        check_pgbench_output(r, f"pgbench -i -s {scale}")
        pg.psql("CREATE EXTENSION IF NOT EXISTS amcheck")
        pg.psql("CHECKPOINT")
        pg.stop("fast")
        # after a clean shutdown pg_resetwal only drops the old WAL
        # segments (one new one is left): less to copy into each mount
        r = pg.as_pg([PGBIN / "pg_resetwal", "-D", pg.pgdata])
        assert r.returncode == 0, f"pg_resetwal: {r.stdout}{r.stderr}"
    except BaseException:
        pg.shutdown()
        shutil.rmtree(top, ignore_errors=True)
        raise
    pg.shutdown()
    return top, top / "pgdata"


ERROR_RE = re.compile(r"error|aborted|fatal|could not|failed", re.IGNORECASE)


def pgbench_errors(text, rc):
    """Problems in one pgbench run's output."""
    bad = []
    if rc != 0:
        bad.append(f"exit {rc}")
    for ln in text.splitlines():
        if ln.startswith("progress:"):
            continue
        if re.match(r"number of failed transactions: 0 ", ln):
            continue
        if ERROR_RE.search(ln):
            bad.append(ln)
    m = re.search(r"number of failed transactions: (\d+)", text)
    if m and int(m.group(1)):
        bad.append(m.group(0))
    return bad


def check_pgbench_output(r, what):
    text = (r.stdout or "") + (r.stderr or "")
    bad = pgbench_errors(text, r.returncode)
    assert not bad, f"{what}:\n" + "\n".join(bad) + f"\n\n{text}"


class PgbenchLoad:
    """pgbench (TPC-B, -c clients) as the postgres user in the background,
    as back-to-back runs of `chunk` seconds until stop(), so every run
    ends with its own summary.  Records per run: start and end time,
    exit status, transactions processed, TPS, error lines; and the
    per-second progress (epoch seconds, TPS).  `errors` lists every
    problem seen."""

    def __init__(self, pg, clients=4, jobs=2, chunk=5, name="load"):
        self.pg = pg
        self.clients = clients
        self.jobs = jobs
        self.chunk = chunk
        self.name = name
        self.runs = []
        self.progress = []  # (epoch seconds, tps)
        self.errors = []
        self.proc = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.out = pg.work / f"{name}.out"

    def start(self):
        self.thread.start()
        return self

    def _one(self):
        cmd = [*as_pg_prefix(), PGBIN / "pgbench", "-n", "-c", self.clients,
               "-j", self.jobs, "-T", self.chunk, "-P", "1",
               "--progress-timestamp", *self.pg.bench_args()]
        cmd = [str(c) for c in cmd]
        t0 = time.time()
        with open(self.out, "w") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, env=pg_env())
            self.proc = p
            self.pg.clients.append(p)
            rc = p.wait()
        t1 = time.time()
        text = self.out.read_text(errors="replace")
        m = re.search(r"number of transactions actually processed: (\d+)",
                      text)
        processed = int(m.group(1)) if m else 0
        m = re.search(r"tps = ([\d.]+) \(without initial", text)
        tps = float(m.group(1)) if m else 0.0
        bad = pgbench_errors(text, rc)
        for ln in text.splitlines():
            m = re.match(r"progress: ([\d.]+) s, ([\d.]+) tps", ln)
            if m:
                self.progress.append((float(m.group(1)), float(m.group(2))))
        run = {"start": t0, "end": t1, "rc": rc, "processed": processed,
               "tps": tps, "errors": bad}
        self.runs.append(run)
        if bad:
            self.errors.extend(f"[{self.name} run {len(self.runs)} at "
                               f"{time.strftime('%T', time.localtime(t0))}]"
                               f" {b}" for b in bad)
            print(f"{self.name}: pgbench run failed:\n{text[-3000:]}")
        return rc

    def _loop(self):
        while not self.stopping.is_set():
            if self.proc is not None and self.proc.returncode is not None \
                    and self.proc.returncode < 0:
                return  # killed: abort() was called
            self._one()

    def stop(self, timeout=180):
        """Let the current run finish, then return the summary; a run
        that does not end within timeout is an error (and killed)."""
        self.stopping.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.errors.append(f"{self.name}: pgbench run did not end "
                               f"within {timeout} s after stop")
            if self.proc is not None:
                kill_popen(self.proc)
            self.thread.join(30)
        return self.summary()

    def abort(self):
        """Kill the running pgbench (after a crash of the storage)."""
        self.stopping.set()
        if self.proc is not None:
            kill_popen(self.proc)
        self.thread.join(60)

    def processed(self, ok_only=True):
        return sum(r["processed"] for r in self.runs
                   if not ok_only or r["rc"] == 0)

    def tps_between(self, t0, t1):
        """Mean of the per-second TPS samples taken in [t0, t1]."""
        s = [tps for t, tps in self.progress if t0 <= t <= t1]
        return sum(s) / len(s) if s else None

    def summary(self):
        s = {"runs": len(self.runs), "processed": self.processed(False),
             "errors": list(self.errors)}
        log(f"{self.name}: {s['runs']} pgbench runs, {s['processed']} "
            f"transactions, {len(self.errors)} errors")
        return s


# ---- status ---------------------------------------------------------------

class StatusError(Exception):
    pass


def status(sixfold, target, timeout=30):
    """sixfold status --json target (a mount point or zone directory),
    parsed; StatusError with the command's output if it fails."""
    try:
        r = run([sixfold, "status", "--json", target], timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise StatusError(f"status {target}: no answer in {timeout} s") \
            from e
    except OSError as e:  # e.g. the program is being rebuilt
        raise StatusError(f"status {target}: {e!r}") from e
    if r.returncode != 0:
        raise StatusError(f"status {target}: exit {r.returncode}: "
                          f"{r.stderr.strip()} {r.stdout.strip()}")
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise StatusError(f"status {target}: not JSON: {r.stdout!r}") from e


def mount_status(m, timeout=30):
    """Status of mount m through its mount point."""
    return status(m.sixfold, m.path, timeout)


def brief(st):
    """One line of a status for the test log."""
    if not isinstance(st, dict):
        return repr(st)
    zs = " ".join(f"{z.get('index')}:{z.get('state')}"
                  + (f"({z.get('behind_blocks')})"
                     if z.get("behind_blocks") else "")
                  for z in st.get("zones", []))
    sc = st.get("scrub") or {}
    return (f"health={st.get('health')} wq={st.get('write_quorum')} "
            f"zones[{zs}] healed={st.get('healed_copies')} "
            f"scrub={sc.get('state')}/{sc.get('found')}")


def daemon_log_tail(m, n=3000):
    try:
        return m.log.read_text(errors="replace")[-n:]
    except OSError:
        return "(no daemon log)"


def wait_status(m, predicate, timeout, what="", interval=0.5, seen=None):
    """Poll `sixfold status --json` of mount m until predicate(status) is
    true; returns that status.  Every distinct zone-state picture on the
    way is printed (and appended to `seen`, a list, if given).  On
    timeout: AssertionError with the last status JSON (or the last
    error) and the daemon log's tail."""
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    last, last_err, last_line = None, None, None
    while True:
        try:
            st = mount_status(m)
            last, last_err = st, None
            line = brief(st)
            key = (st.get("health"), st.get("write_quorum"),
                   tuple(zone_states(st)),
                   (st.get("scrub") or {}).get("state"))
            if key != last_line:  # behind_blocks alone moves all the time
                log(f"  [{time.monotonic() - t0:6.1f} s] {line}")
                last_line = key
                if seen is not None:
                    seen.append(st)
            try:
                if predicate(st):
                    return st
            except (KeyError, TypeError, IndexError) as e:
                last_err = f"predicate on an unexpected status: {e!r}"
        except StatusError as e:
            last_err = str(e)
            if last_line != last_err:
                log(f"  [{time.monotonic() - t0:6.1f} s] {last_err}")
                last_line = last_err
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not within {timeout} s: {what}\n"
                f"last status: {json.dumps(last, indent=1)}\n"
                f"last error: {last_err}\n"
                f"daemon log tail:\n{daemon_log_tail(m)}")
        time.sleep(interval)


class StatusSampler:
    """Samples `sixfold status --json` of mount m every `interval` s in a
    background thread until stop(); `samples` holds (seconds since start,
    zone states) for every sample that could be taken."""

    def __init__(self, m, interval=1.0):
        self.m = m
        self.interval = interval
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self):
        while not self.stopping.is_set():
            try:
                st = status(self.m.sixfold, self.m.path, timeout=10)
                self.samples.append((round(time.monotonic() - self.t0, 1),
                                     zone_states(st)))
            except StatusError:
                pass
            self.stopping.wait(self.interval)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(30)
        return self.samples


def zone_states(st):
    return [z["state"] for z in st["zones"]]


def all_healthy(st):
    return (st["health"] == "healthy"
            and all(s == "healthy" for s in zone_states(st)))


def offline(*zs):
    """Predicate: those zones offline, every other zone healthy, health
    degraded, write quorum held."""
    def pred(st):
        states = zone_states(st)
        return (st["health"] == "degraded" and st["write_quorum"] is True
                and all(states[z] == "offline" for z in zs)
                and all(states[i] == "healthy" for i in range(NZONES)
                        if i not in zs))
    return pred


def zones_in(zs, states):
    """Predicate: each zone of zs is in one of states."""
    def pred(st):
        return all(st["zones"][z]["state"] in states for z in zs)
    return pred


def wait_scrub(m, timeout, before=None):
    """Poll until the scrub that was just started is finished; `before`
    is the scrub object from a status taken before the start (its old
    result must not be taken for the new one).  Returns the final
    status."""
    state = {"running": False, "t0": time.monotonic()}

    def done(st):
        sc = st["scrub"]
        if sc["state"] == "running":
            state["running"] = True
            return False
        if sc["state"] != "finished":
            return False
        if state["running"] or before is None:
            return True
        if "started" in sc and "started" in before:
            return sc["started"] != before["started"]
        if sc != before:
            return True
        # identical to the old result: a scrub so quick that no poll saw
        # it run gives the same object only if all its counts repeat
        return time.monotonic() - state["t0"] > 10

    return wait_status(m, done, timeout, "scrub finished", interval=0.3)


def scrub_start(m, deep=True):
    """sixfold scrub start MOUNTPOINT [--deep]; asserts exit 0."""
    args = [m.sixfold, "scrub", "start", m.path] + (["--deep"] if deep
                                                   else [])
    r = run(args)
    if r.returncode == 64:  # maybe wants the option before the operand
        args = [m.sixfold, "scrub", "start"] + (["--deep"] if deep
                                               else []) + [m.path]
        r = run(args)
    assert r.returncode == 0, (f"scrub start exit {r.returncode}: "
                               f"{r.stdout}{r.stderr}")
    return r


def deep_scrub(m, timeout=180):
    """Start a deep scrub and wait until it has finished; returns the
    scrub object of the final status."""
    before = mount_status(m).get("scrub")
    scrub_start(m, deep=True)
    st = wait_scrub(m, timeout, before)
    log(f"deep scrub: {json.dumps(st['scrub'])}")
    return st["scrub"]


# ---- zone faults ----------------------------------------------------------

def away_path(zone):
    zone = pathlib.Path(zone)
    return zone.with_name(zone.name + ".away")


def away(zone):
    """The zone directory disappears from its path (renamed away)."""
    log(f"zone fault: mv {zone} {away_path(zone)}")
    os.rename(zone, away_path(zone))


def back(zone):
    log(f"zone back: mv {away_path(zone)} {zone}")
    os.rename(away_path(zone), zone)


def lock(zone):
    log(f"zone fault: chmod 000 {zone}")
    os.chmod(zone, 0)


def unlock(zone):
    log(f"zone back: chmod 700 {zone}")
    os.chmod(zone, 0o700)


def restore_zones(m):
    """Teardown helper: every zone of m back at its path and usable, so
    that the daemon can unmount."""
    for z in m.zones:
        z = pathlib.Path(z)
        a = away_path(z)
        if a.exists() and not z.exists():
            os.rename(a, z)
        elif a.exists():
            shutil.rmtree(a, ignore_errors=True)
        try:
            if z.exists() and not os.stat(z).st_mode & 0o700:
                os.chmod(z, 0o700)
        except OSError:
            pass


# ---- a zone on its own small disk -----------------------------------------

class LoopDisk:
    """A small ext4 file system in an image file, on a loop device, mounted
    at `mountpoint`.  cleanup() unmounts it (lazily if busy, as often as
    it is mounted there), detaches the loop device it attached (only that
    one) and removes the image."""

    def __init__(self, image, mountpoint, size_mib):
        self.image = pathlib.Path(image)
        self.mountpoint = pathlib.Path(mountpoint)
        self.size_mib = size_mib
        self.dev = None

    def create(self):
        run(["truncate", "-s", f"{self.size_mib}M", self.image], check=True)
        run(["mkfs.ext4", "-q", "-F", "-m", "0", self.image], check=True,
            timeout=120)
        r = run(["losetup", "--find", "--show", self.image], check=True)
        self.dev = r.stdout.strip()
        assert self.dev.startswith("/dev/loop"), r.stdout
        self.mountpoint.mkdir(exist_ok=True)
        self.mount()
        lf = self.mountpoint / "lost+found"
        if lf.is_dir():
            lf.rmdir()  # the zone directory must be empty for mkfs
        return self

    def mount(self):
        run(["mount", "-t", "ext4", self.dev, self.mountpoint], check=True)

    def umount(self, lazy=False):
        run(["umount", *(["-l"] if lazy else []), self.mountpoint],
            check=True)

    def free_bytes(self):
        s = os.statvfs(self.mountpoint)
        return s.f_bavail * s.f_frsize

    def cleanup(self):
        for _ in range(4):
            if not is_mount(self.mountpoint):
                break
            r = run(["umount", self.mountpoint], timeout=60)
            if r.returncode:
                run(["umount", "-l", self.mountpoint], timeout=60)
        if self.dev:
            run(["losetup", "-d", self.dev], timeout=60)
            self.dev = None
        self.image.unlink(missing_ok=True)


# ---- direct comparison of the zones ---------------------------------------

def _data_ranges(fd, size):
    """(offset, length) of the allocated ranges of a sparse file."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            return  # ENXIO: no data past off
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        off = end


_ENTRY = struct.Struct("<HBBIQ24s16s4sI")


def meta_entries(zone_dir):
    """Every meta entry of a zone that is not a hole: {lba: (state, lsn,
    tag, ok)}, where ok says whether magic and version are right (the
    CRC is not checked here).  zone_dir may hold several directories'
    worth of pg/ (zone specs of one directory are all the tests use)."""
    out = {}
    for meta in sorted(pathlib.Path(zone_dir).glob("pg/*.meta")):
        pg = int(meta.stem)
        base = pg * PG_BLOCKS
        fd = os.open(meta, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            for off, length in _data_ranges(fd, size):
                buf = os.pread(fd, length, off)
                first = off // META_BYTES
                for i in range(len(buf) // META_BYTES):
                    e = buf[i * META_BYTES:(i + 1) * META_BYTES]
                    if not any(e):
                        continue
                    magic, ver, st, _crc, lsn, _nonce, tag, _r, _c = \
                        _ENTRY.unpack(e)
                    ok = magic == 0x4653 and ver == 1
                    out[base + first + i] = (st, lsn, tag, ok)
        finally:
            os.close(fd)
    return out


def _no_data(entries):
    """A tombstone and a hole both say "no data here": a zone that may
    have missed writes (its write-intent bit, as a rebuilding zone has)
    gets a discard's tombstone where the others never had the block
    allocated (written and freed within one materialisation round), and
    keeps a hole (vol_mat.c, tombstone_writes).  Both read as zeros and
    neither can outrank a written version, so they compare equal; a
    tombstone against a written version still differs."""
    return {lba: v for lba, v in entries.items() if v[0] != 2 or not v[3]}


def compare_zones(zone_dirs, limit=20):
    """The direct comparison: every block has the same (state, lsn, tag)
    in all the zones given (a hole, and a tombstone, count as state 0:
    _no_data).  Returns (nblocks, problems) where problems lists up to
    `limit` differing blocks as text, and counts every difference."""
    entries = [_no_data(meta_entries(z)) for z in zone_dirs]
    lbas = set()
    for e in entries:
        lbas.update(e)
    problems, ndiff = [], 0
    kinds = {}
    hole = (0, 0, b"\0" * 16, True)
    for lba in sorted(lbas):
        vals = [e.get(lba, hole) for e in entries]
        keys = [v[:3] for v in vals]
        if any(not v[3] for v in vals) or len(set(keys)) > 1:
            ndiff += 1
            states = tuple(sorted({v[0] for v in vals}))
            kinds[states] = kinds.get(states, 0) + 1
            if len(problems) < limit:
                problems.append(
                    f"lba {lba}: " + ", ".join(
                        f"z{i}=(st {v[0]}, lsn {v[1]}, tag "
                        f"{v[2][:4].hex()}{'' if v[3] else ', BAD'})"
                        for i, v in enumerate(vals)))
    if ndiff:
        problems.append(f"{ndiff} of {len(lbas)} blocks differ; by the set "
                        f"of states seen: {kinds}")
    return len(lbas), problems


def assert_zones_identical(zone_dirs):
    n, problems = compare_zones(zone_dirs)
    log(f"direct comparison: {n} blocks in the metas of {len(zone_dirs)} "
        f"zones, {len(problems)} problems")
    assert not problems, ("zones differ in (state, lsn, tag):\n"
                          + "\n".join(problems))
    assert n > 0, "no meta entry at all: nothing compared"
    return n


# ---- damage ---------------------------------------------------------------

def seg_path(zone_dir, lba):
    return pathlib.Path(zone_dir) / "pg" / f"{lba // PG_BLOCKS:05d}.seg"


def meta_path(zone_dir, lba):
    return pathlib.Path(zone_dir) / "pg" / f"{lba // PG_BLOCKS:05d}.meta"


def damage_seg(zone_dir, lba, rng, nbytes=3):
    """Flip nbytes bytes of the ciphertext of lba's copy in zone_dir."""
    base = (lba % PG_BLOCKS) * BLOCK
    flip_bytes(seg_path(zone_dir, lba),
               sorted(base + off for off in rng.sample(range(BLOCK), nbytes)),
               rng)


def damage_meta(zone_dir, lba, rng):
    """Flip one byte of lba's meta entry (bytes 0 to 59: its CRC no longer
    matches) in zone_dir."""
    flip_bytes(meta_path(zone_dir, lba),
               [(lba % PG_BLOCKS) * META_BYTES + rng.randrange(60)], rng)


# ---- files with known content ---------------------------------------------

def write_files(root, n, size, prefix="f"):
    """n files of random content, each fsync'ed; {name: sha256}."""
    sums = {}
    for i in range(n):
        data = os.urandom(size)
        name = f"{prefix}{i:04d}"
        fd = os.open(pathlib.Path(root) / name,
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def file_sums(root, names, drop_cache=True):
    """{name: sha256} read back; with drop_cache the kernel's cached pages
    of each file are dropped first so the read goes to the daemon."""
    out = {}
    for name in names:
        p = pathlib.Path(root) / name
        fd = os.open(p, os.O_RDONLY)
        try:
            if drop_cache:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h = hashlib.sha256()
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
        finally:
            os.close(fd)
        out[name] = h.hexdigest()
    return out


def tree_bytes(path, pattern="**/*"):
    """Allocated bytes (st_blocks) of the regular files under path."""
    total = 0
    for p in pathlib.Path(path).glob(pattern):
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and not p.is_symlink():
            total += st.st_blocks * 512
    return total
