"""PostgreSQL 15 on a mounted sixfold filesystem.

PostgreSQL is the demanding user of a filesystem's fsync: it counts a
transaction as committed once its WAL record is fsync'ed, and after a crash
replays the WAL on top of data files that may hold any mix of older and
newer pages.  Two tests:

- A: initdb, pgbench -i -s 10 and four clients for 30 s with no error;
  pg_amcheck finds every table and index intact; after a clean stop, an
  unmount, a clean fsck and a new mount, the same rows are there and
  pg_amcheck is still clean.
- B: while pgbench runs a TPC-B-like script (which also inserts a row into
  a `committed` table in each transaction) and a psql session inserts
  numbered rows one autocommit transaction at a time, the sixfold daemon
  is killed (SIGKILL) and PostgreSQL stopped at once.  After a new mount
  and PostgreSQL's crash recovery, every row whose INSERT psql had
  acknowledged is there, every pgbench transaction is all there or not at
  all (the balances add up to the history), pg_amcheck is clean, and fsck
  is clean.

The server runs as the `postgres` user (PostgreSQL refuses root) on a
PGDATA inside the mount, with fsync=on and synchronous_commit=on, listening
only on a unix socket in a private temporary directory.  The clients run as
root and connect as the database user postgres (trust authentication).
Every process started is stopped by its PID in the `pg` fixture's
teardown, before the mount's own teardown.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import run
from lib.drill import (PG_TIMEOUT, PG_USER, PGBIN, PSQL, TABLES, free_port,
                       pg_ids, proc_alive, proc_children, wait_gone)

FALLBACK = os.environ.get("SIXFOLD_TEST_FALLBACK") == "1"
PGBENCH_ID0 = 1_000_000_000  # committed ids from pgbench start here


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_reaped(pid, timeout):
    """Wait until pid is not even a zombie (reaping it if it is ours).
    PostgreSQL takes a zombie postmaster for a running one."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Postgres:
    """One PostgreSQL server with PGDATA at `pgdata`, driven by the test.

    `pid` is the postmaster's (read from postmaster.pid after a start);
    `clients` holds Popen objects of pgbench and psql runs to kill at
    teardown.
    """

    def __init__(self, pgdata, work, port, reach):
        self.pgdata = pgdata
        self.reach = reach  # makes PGDATA reachable for the postgres user
        self.work = work  # owned by postgres: socket, server log
        self.sock = work
        self.port = port
        self.log = work / "server.log"
        self.pid = None
        self.clients = []
        self.stale_pid_file = False

    # ---- server -------------------------------------------------------

    def as_pg(self, cmd, timeout=PG_TIMEOUT):
        self.reach()
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

    def start(self):
        if self.stale_pid_file:  # see crash_stop
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
        """pg_ctl stop; the postmaster is gone when this returns."""
        r = self.as_pg([PGBIN / "pg_ctl", "stop", "-w", "-t", PG_TIMEOUT,
                        "-D", self.pgdata, "-m", mode],
                       timeout=PG_TIMEOUT + 30)
        assert r.returncode == 0, (f"pg_ctl stop: {r.stdout}\n{r.stderr}\n"
                                   f"server log:\n{self.log_tail()}")
        assert wait_gone([self.pid], 60), f"postmaster {self.pid} still runs"
        self.pid = None

    def crash_stop(self):
        """Stop the server at once by its PIDs, as after a crash: SIGQUIT
        (immediate shutdown) to the postmaster, then SIGKILL to it and to
        its children if they linger.  Needs no PGDATA (it may be on a dead
        mount).  Returns when none of them runs."""
        if self.pid is None:
            return
        pm = self.pid
        kids = [k for k in proc_children(pm)
                if proc_cmdline(k).startswith("postgres")]
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
        if not wait_reaped(pm, 10):
            # Dead, but its parent (init, after pg_ctl's fork) has not
            # reaped it: PostgreSQL would take the zombie's PID in
            # postmaster.pid for a live server.  It is dead, so the lock
            # file is stale; remove it as an operator would.
            self.stale_pid_file = True
        self.pid = None

    def kill_clients(self):
        for p in self.clients:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.clients = []

    def shutdown(self):
        """Teardown: every process this server object started ends."""
        self.kill_clients()
        if self.pid is not None and proc_alive(self.pid):
            try:
                if (self.pgdata / "postmaster.pid").exists():
                    self.as_pg([PGBIN / "pg_ctl", "stop", "-w", "-t", "60",
                                "-D", self.pgdata, "-m", "fast"], timeout=90)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if not wait_gone([self.pid], 5):
                self.crash_stop()
        self.pid = None

    # ---- clients ------------------------------------------------------

    def conn_args(self, db="postgres"):
        """Connection options for psql."""
        return ["-h", self.sock, "-p", self.port, "-U", PG_USER, "-d", db]

    def bench_args(self, db="postgres"):
        """Connection options for pgbench (whose -d is --debug)."""
        return ["-h", self.sock, "-p", self.port, "-U", PG_USER, db]

    def psql(self, sql, db="postgres"):
        r = run([PSQL, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                 *self.conn_args(db), "-c", sql], timeout=PG_TIMEOUT)
        assert r.returncode == 0, (f"psql {sql!r}: {r.stdout}\n{r.stderr}\n"
                                   f"server log:\n{self.log_tail()}")
        return r.stdout.strip()

    def pgbench(self, *args, timeout=PG_TIMEOUT):
        return run([PGBIN / "pgbench", *args, *self.bench_args()],
                   timeout=timeout)

    def amcheck(self):
        """pg_amcheck of every database, heap and btree; must be clean."""
        r = run([PGBIN / "pg_amcheck", "--all", "--install-missing",
                 "--heapallindexed", "-h", self.sock, "-p", self.port,
                 "-U", PG_USER], timeout=PG_TIMEOUT)
        assert r.returncode == 0, (f"pg_amcheck exit {r.returncode}:\n"
                                   f"{r.stdout}\n{r.stderr}")
        return r

    def counts(self):
        return {t: int(self.psql(f"SELECT count(*) FROM {t}"))
                for t in TABLES}

    def balances(self):
        """(sum abalance, sum tbalance, sum bbalance, sum delta)."""
        out = self.psql(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)"
            " || ' ' || (SELECT coalesce(sum(tbalance), 0) FROM "
            "pgbench_tellers) || ' ' || (SELECT coalesce(sum(bbalance), 0) "
            "FROM pgbench_branches) || ' ' || (SELECT coalesce(sum(delta), 0)"
            " FROM pgbench_history)")
        return tuple(int(x) for x in out.split())


class Traversable:
    """Keeps every ancestor directory of a path searchable by others
    (o+x), so the postgres user can reach PGDATA: pytest's temporary
    directories are 0700.  ensure() is called before each command that
    the postgres user runs, because another pytest session starting on
    the machine resets /tmp/pytest-of-root to 0700.  (A running server
    needs no ancestor: it works relative to PGDATA, its cwd.)"""

    def __init__(self, path):
        self.dirs = list(reversed(pathlib.Path(path).parents))
        self.original = {}

    def ensure(self):
        for d in self.dirs:
            mode = os.stat(d).st_mode & 0o7777
            if not mode & 0o001:
                self.original.setdefault(d, mode)
                os.chmod(d, mode | 0o001)

    def restore(self):
        for d, mode in self.original.items():
            try:
                os.chmod(d, mode)
            except OSError:
                pass


@pytest.fixture
def pg(mounted):
    """A Postgres (not yet initialised) with PGDATA `mounted.path/pgdata`.

    Depends on `mounted`, so its teardown, which stops every process it
    started by PID, runs before the mount is taken down."""
    if not os.access(PGBIN / "postgres", os.X_OK):
        pytest.skip(f"PostgreSQL 15 not installed in {PGBIN}")
    reach = Traversable(mounted.path / "pgdata")
    reach.ensure()
    work = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-pg-", dir="/tmp"))
    uid, gid = pg_ids()
    os.chown(work, uid, gid)
    os.chmod(work, 0o700)
    server = Postgres(mounted.path / "pgdata", work, free_port(),
                      reach.ensure)
    try:
        yield server
    finally:
        try:
            server.shutdown()
        finally:
            print("server log tail:\n" + server.log_tail(2000))
            shutil.rmtree(work, ignore_errors=True)
            reach.restore()


def check_pgbench_output(r, what):
    text = r.stdout + r.stderr
    assert r.returncode == 0, f"{what} exit {r.returncode}:\n{text}"
    bad = [ln for ln in text.splitlines()
           if re.search(r"error|aborted", ln, re.IGNORECASE)]
    assert not bad, f"{what}:\n" + "\n".join(bad) + f"\n\n{text}"
    m = re.search(r"number of failed transactions: (\d+)", text)
    if m:
        assert int(m.group(1)) == 0, f"{what}: failures\n{text}"


def test_pgbench_then_clean_remount(mounted, pg):
    """pgbench (scale 10, 4 clients, 30 s) runs without an error on the
    mount, pg_amcheck is clean, and after a clean stop, unmount, fsck and
    mount the row counts and balances are unchanged and pg_amcheck is
    still clean."""
    pg.initdb()
    pg.start()
    r = pg.pgbench("-i", "-s", "10")
    check_pgbench_output(r, "pgbench -i -s 10")
    r = pg.pgbench("-c", "4", "-j", "2", "-T", "30",
                   timeout=PG_TIMEOUT + 30)
    check_pgbench_output(r, "pgbench -c 4 -j 2 -T 30")
    m = re.search(r"transactions actually processed: (\d+)", r.stdout)
    assert m and int(m.group(1)) > 0, r.stdout
    pg.amcheck()
    counts = pg.counts()
    balances = pg.balances()
    print("rows:", counts, "balances:", balances)
    assert counts["pgbench_accounts"] == 1_000_000
    assert counts["pgbench_branches"] == 10
    assert counts["pgbench_tellers"] == 100
    assert counts["pgbench_history"] > 0
    assert len(set(balances)) == 1, f"TPC-B sums differ: {balances}"
    pg.stop("fast")

    mounted.unmount()
    r = mounted.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"
    mounted.mount()

    pg.start()
    assert pg.counts() == counts
    assert pg.balances() == balances
    pg.amcheck()
    pg.stop("fast")


# One transaction: the TPC-B-like updates of pgbench's built-in script,
# plus a row in `committed`, so that a transaction half-replayed after the
# crash would show as a history row without its `committed` row, or
# balances that do not add up.
TPCB_COMMITTED = """\
\\set aid random(1, {accounts})
\\set bid random(1, {branches})
\\set tid random(1, {tellers})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO committed VALUES (nextval('committed_pgbench'), now());
END;
"""


class AckWriter(threading.Thread):
    """One long-lived psql session inserting rows 1, 2, 3... into
    `committed`, each in its own autocommit transaction.  A row counts as
    acknowledged once psql printed "INSERT 0 1" for it (that is, the
    server reported the commit, after its WAL fsync) before the marker
    `\\echo ok N` that follows it."""

    def __init__(self, server):
        super().__init__(daemon=True)
        cmd = [PSQL, "-X", "-A", "-t", *server.conn_args()]
        print("+", " ".join(str(c) for c in cmd))
        self.proc = subprocess.Popen(
            [str(c) for c in cmd], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1)
        server.clients.append(self.proc)
        self.acked = []
        self.other = []  # lines that are neither result nor marker
        self.stopping = threading.Event()

    def run(self):
        n = 0
        try:
            while not self.stopping.is_set():
                n += 1
                self.proc.stdin.write(
                    f"INSERT INTO committed VALUES ({n}, now());\n"
                    f"\\echo ok {n}\n")
                self.proc.stdin.flush()
                inserted = False
                while True:
                    line = self.proc.stdout.readline()
                    if not line:
                        return  # psql ended (the server went away)
                    line = line.rstrip("\n")
                    if line == "INSERT 0 1":
                        inserted = True
                    elif line == f"ok {n}":
                        break
                    elif len(self.other) < 50:
                        self.other.append(line)
                if inserted:
                    self.acked.append(n)
        except (OSError, ValueError):
            return  # the pipe broke: psql is gone


def test_crash_keeps_acknowledged_commits(mounted, pg):
    """SIGKILL of the sixfold daemon under a write load from pgbench and
    psql: after a new mount and PostgreSQL's crash recovery, every INSERT
    that psql saw acknowledged is in `committed`, pgbench's transactions
    are atomic (account, teller and branch balances each equal the sum of
    the history's deltas, and history rows match pgbench's `committed`
    rows one for one), pg_amcheck is clean, and so is fsck."""
    scale = 2
    pg.initdb()
    pg.start()
    check_pgbench_output(pg.pgbench("-i", "-s", scale), "pgbench -i")
    pg.psql("CREATE TABLE committed (id bigint PRIMARY KEY, at timestamptz)")
    pg.psql(f"CREATE SEQUENCE committed_pgbench START {PGBENCH_ID0}")
    script = pg.work / "tpcb_committed.sql"
    script.write_text(TPCB_COMMITTED.format(
        accounts=100_000 * scale, branches=scale, tellers=10 * scale))

    bench_out = pg.work / "pgbench.out"
    cmd = [PGBIN / "pgbench", "-n", "-c", "4", "-j", "2", "-T", "60",
           "-f", script, *pg.bench_args()]
    print("+", " ".join(str(c) for c in cmd))
    with open(bench_out, "w") as out:
        bench = subprocess.Popen([str(c) for c in cmd],
                                 stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT)
    pg.clients.append(bench)
    writer = AckWriter(pg)
    writer.start()

    time.sleep(15)
    assert bench.poll() is None, (
        f"pgbench ended early:\n{bench_out.read_text()}")
    assert writer.is_alive(), f"psql writer ended early: {writer.other}"

    # The crash: the daemon dies, PostgreSQL is stopped at once (on a
    # real mount it is already failing), and the clients are killed.
    mounted.kill9()
    pg.crash_stop()
    writer.stopping.set()
    pg.kill_clients()
    writer.join(timeout=30)
    acked = list(writer.acked)
    print(f"psql: {len(acked)} inserts acknowledged before the crash; "
          f"other output: {writer.other[:10]}")
    print("pgbench output:\n" + bench_out.read_text()[-2000:])
    assert acked, f"no insert was acknowledged: {writer.other}"

    mounted.mount()
    pg.start()  # crash recovery
    present = {int(x) for x in pg.psql(
        f"SELECT id FROM committed WHERE id < {PGBENCH_ID0}").split()}
    missing = sorted(set(acked) - present)
    assert not missing, (
        f"{len(missing)} acknowledged inserts lost in the crash (of "
        f"{len(acked)}): {missing[:20]}")
    bench_rows = int(pg.psql(
        f"SELECT count(*) FROM committed WHERE id >= {PGBENCH_ID0}"))
    counts = pg.counts()
    balances = pg.balances()
    print(f"after recovery: {len(present)} psql rows, {bench_rows} pgbench "
          f"transactions, counts {counts}, balances {balances}")
    assert bench_rows > 0, "no pgbench transaction survived"
    assert counts["pgbench_history"] == bench_rows, (
        "history rows and pgbench's committed rows differ: a transaction "
        "was replayed in part")
    assert len(set(balances)) == 1, (
        f"balances (accounts, tellers, branches, history) differ: {balances}")
    assert counts["pgbench_accounts"] == 100_000 * scale
    pg.amcheck()
    pg.stop("fast")

    mounted.unmount()
    r = mounted.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"
