"""The repair commands on a mount: `sixfold status`, `sixfold scrub`,
`sixfold zone`, the daemon's control socket and `-o scrub_rate`.

Covers: status --json of a mount (the daemon answers: live, six healthy
zones, every documented key, valid JSON) and its text summary line;
status of the unmounted volume (from the zones) and of a zone directory
while mounted (the daemon answers, whichever zone is named); usage errors
(exit 64) and failures (exit 1) with their messages; the control socket
refusing a user who is neither root nor the daemon's (both at the socket's
mode and at the daemon's credential check); a stale socket left by a
killed daemon replaced at the next mount, and the socket gone after an
unmount; scrub start / status / stop; zone offline (degraded, writes go
on), a third zone refused, zone online (healthy again); zone replace;
-o scrub_rate refused when malformed, in both command forms.
"""

import json
import os
import pathlib
import re
import shutil
import socket
import stat
import tempfile
import threading
import time

import pytest

from conftest import NZONES, Mount, run, wait_for, write_synced

pytestmark = pytest.mark.skipif(
    os.environ.get("SIXFOLD_TEST_FALLBACK") == "1",
    reason="repair commands need a real mount")

DENIED = ("permission denied: only root or the user who mounted the "
          "volume may use it")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

TOP_KEYS = {"health", "live", "uuid", "capacity_bytes", "used_bytes",
            "write_quorum", "in_use_by", "healed_copies", "zones", "scrub",
            "commit"}
COMMIT_PHASES = ("queued_us", "written_us", "durable_us", "total_us")
LATENCY_KEYS = {"mean", "p50", "p90", "p99", "max"}
ZONE_KEYS = {"index", "path", "state", "behind_blocks", "repaired_blocks",
             "rate_bytes_per_s", "eta_seconds", "admin_offline", "reason",
             "epoch", "applied_lsn", "used_bytes"}
SCRUB_KEYS = {"state", "deep", "checked", "found", "healed", "unrecoverable",
              "cursor", "total_blocks", "started", "finished", "rate_mb",
              "lost"}
ZONE_STATES = {"healthy", "degraded", "offline", "resyncing", "rebuilding"}


def sf(m, *args, **kw):
    return run([m.sixfold, *args], **kw)


def status(m, arg=None):
    """status --json of arg (default: the mount point), parsed."""
    r = sf(m, "status", "--json", arg or m.path)
    assert r.returncode == 0, f"status exit {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def check_shape(st):
    assert TOP_KEYS <= set(st), TOP_KEYS - set(st)
    assert st["health"] in ("healthy", "degraded", "unavailable")
    assert re.fullmatch(r"[0-9a-f]{32}", st["uuid"])
    assert isinstance(st["live"], bool)
    assert isinstance(st["write_quorum"], bool)
    assert len(st["zones"]) == NZONES
    for i, z in enumerate(st["zones"]):
        assert ZONE_KEYS <= set(z), ZONE_KEYS - set(z)
        assert z["index"] == i
        assert z["state"] in ZONE_STATES
        assert isinstance(z["admin_offline"], bool)
    assert SCRUB_KEYS <= set(st["scrub"]), SCRUB_KEYS - set(st["scrub"])
    assert st["scrub"]["state"] in ("none", "running", "stopped", "finished")
    assert isinstance(st["scrub"]["lost"], list)


# ---- status ----------------------------------------------------------------

def test_status_commit_figures(mounted):
    """Where commits spend their time, live: batches counted, each
    phase's percentiles in order, and a batch written before it is
    durable; where zones share a device flush, each fsync'ed batch
    issued one and its waiting fsync ran some itself; from the zones,
    nothing (the figures are the daemon's)."""
    for i in range(20):
        write_synced(mounted.path / f"c{i}", os.urandom(8192))
    st = status(mounted)
    c = st["commit"]
    assert set(c) == {"batches", "shared_flushes", "waiter_flushes",
                      *COMMIT_PHASES}, c
    assert c["waiter_flushes"] <= c["shared_flushes"], c
    if any(z["flush_shared"] for z in st["zones"]):
        assert c["shared_flushes"] >= 20 and c["waiter_flushes"] > 0, c
    else:
        assert c["shared_flushes"] == 0, c
    assert c["batches"] >= 20, c
    for ph in COMMIT_PHASES:
        lat = c[ph]
        assert set(lat) == LATENCY_KEYS, (ph, lat)
        assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], \
            (ph, lat)
        assert lat["mean"] <= lat["max"], (ph, lat)
    assert c["durable_us"]["max"] > 0, c
    for k in ("p50", "p90", "p99", "max"):
        assert c["written_us"][k] <= c["durable_us"][k] <= \
            c["total_us"][k], (k, c)
    r = sf(mounted, "status", mounted.path)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^  commits:   (\d+) batches durable since the mount; "
                  r"p50/p99 ms: queued [\d.]+/[\d.]+, written [\d.]+/[\d.]+, "
                  r"durable [\d.]+/[\d.]+, total [\d.]+/[\d.]+$",
                  r.stdout, re.M)
    assert m and int(m.group(1)) >= c["batches"], r.stdout
    mounted.unmount()
    st = status(mounted, mounted.zones[0])
    assert st["live"] is False and st["commit"]["batches"] == 0, st
    r = sf(mounted, "status", mounted.zones[0])
    assert r.returncode == 0 and "commits:" not in r.stdout, r.stdout


def test_status_json_of_a_mount(mounted):
    st = status(mounted)
    check_shape(st)
    assert st["live"] is True
    assert st["health"] == "healthy"
    assert st["write_quorum"] is True
    assert st["in_use_by"].startswith("pid "), st["in_use_by"]
    assert [z["state"] for z in st["zones"]] == ["healthy"] * NZONES
    assert [z["path"] for z in st["zones"]] == [str(z) for z in mounted.zones]
    assert st["scrub"]["total_blocks"] == st["capacity_bytes"] // 4096


def test_status_text_of_a_mount(mounted):
    r = sf(mounted, "status", mounted.path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"volume [0-9a-f]{32}: healthy, in use", lines[0]), \
        lines[0]
    assert "the daemon serving the mount (live)" in r.stdout
    assert "write quorum held: 6 of 6 zones" in r.stdout
    for z in range(NZONES):
        assert re.search(rf"^  {z}\s+healthy\s+\d+.*{mounted.zones[z]}$",
                         r.stdout, re.M), r.stdout
    assert re.search(r"^  scrub:", r.stdout, re.M)


def test_status_of_the_volume(mounted):
    # While mounted, a zone directory leads to the daemon: the one the
    # mount came from (its socket is there) and any other zone.
    for z in (0, 3):
        st = status(mounted, mounted.zones[z])
        assert st["live"] is True, z
    uuid = st["uuid"]
    mounted.unmount()
    assert not (mounted.zones[0] / "control").exists(), \
        "the control socket outlived the daemon"
    st = status(mounted, mounted.zones[0])
    check_shape(st)
    assert st["live"] is False and st["uuid"] == uuid
    assert st["health"] == "healthy" and st["in_use_by"] == ""
    r = sf(mounted, "status", mounted.zones[4])
    assert r.returncode == 0, r.stderr
    assert re.match(r"volume [0-9a-f]{32}: healthy, not in use\n", r.stdout)
    assert "the zones on disk" in r.stdout
    # scrub status reads the last scrub from the zones too.
    r = sf(mounted, "scrub", "status", mounted.zones[0])
    assert r.returncode == 0 and "scrub:" in r.stdout, r.stderr
    # But scrub and zone commands need the daemon.
    for args in (("scrub", "start", mounted.zones[0]),
                 ("zone", "offline", mounted.zones[0], "1")):
        r = sf(mounted, *args)
        assert r.returncode == 1, r
        assert "is not mounted: scrub and zone commands need the running " \
            "daemon" in r.stderr, r.stderr


def test_usage_and_failures(mounted, tmp_path):
    mp = str(mounted.path)
    usage = [
        ["status"], ["status", "--bogus", mp], ["status", mp, mp],
        ["scrub"], ["scrub", "start"], ["scrub", "frob", mp],
        ["scrub", "stop", "--deep", mp], ["scrub", "start", "--json", mp],
        ["scrub", "status", "--deep", mp], ["scrub", "start", mp, mp],
        ["zone"], ["zone", "offline", mp], ["zone", "offline", mp, "6"],
        ["zone", "online", mp, "-1"], ["zone", "offline", mp, "x"],
        ["zone", "replace", mp, "1"], ["zone", "frob", mp, "1"],
        ["zone", "offline", mp, "1", "2"],
    ]
    for args in usage:
        r = sf(mounted, *args)
        assert r.returncode == 64, (args, r.returncode, r.stderr)
        assert r.stderr, args
    for cmd in ("status", "scrub", "zone"):
        r = sf(mounted, cmd, "--help")
        assert r.returncode == 0 and "usage: sixfold " + cmd in r.stdout
    r = sf(mounted, "zone", "offline", mp, "9")
    assert "zones are numbered 0 to 5" in r.stderr
    # Neither a mount point nor a zone: exit 1, saying what to give.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = sf(mounted, "status", empty)
    assert r.returncode == 1 and "not a sixfold zone" in r.stderr
    r = sf(mounted, "scrub", "start", empty)
    assert r.returncode == 1 and "no sixfold mount point" in r.stderr
    r = sf(mounted, "zone", "offline", tmp_path / "missing", "1")
    assert r.returncode == 1, r.stderr
    # The mount is untouched by all that.
    assert status(mounted)["health"] == "healthy"


# ---- the control socket ----------------------------------------------------

@pytest.fixture
def open_mount(sixfold_bin):
    """A mount under a directory every user may pass through (tmp_path's
    parents are root's only)."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-ctl-", dir="/tmp"))
    os.chmod(base, 0o755)
    m = None
    try:
        m = Mount(base, sixfold_bin)
        yield m
    finally:
        if m is not None:
            m.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to act as nobody")
def test_control_socket_refuses_other_users(open_mount):
    m = open_mount
    sock = m.zones[0] / "control"
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    # The socket's mode keeps nobody out ...
    r = run([*NOBODY, m.sixfold, "status", m.path])
    assert r.returncode == 1, r.stdout
    assert DENIED in r.stderr, r.stderr
    # ... and with the mode opened up, the daemon's own check does.
    os.chmod(m.zones[0], 0o755)
    os.chmod(sock, 0o666)
    try:
        for args in (["status", "--json", m.path], ["scrub", "start", m.path],
                     ["zone", "offline", m.path, "1"]):
            r = run([*NOBODY, m.sixfold, *args])
            assert r.returncode == 1, (args, r.stdout)
            assert DENIED in r.stderr, (args, r.stderr)
            assert not r.stdout, r.stdout
    finally:
        os.chmod(sock, 0o600)
        os.chmod(m.zones[0], 0o700)
    st = status(m)
    assert st["zones"][1]["state"] == "healthy"
    assert st["zones"][1]["admin_offline"] is False


def test_control_socket_drops_a_trickling_client(mounted):
    """A client that sends its request a byte a second is dropped at the
    daemon's limit for the whole request (5 s), not kept as long as each
    byte comes within 5 s: meanwhile `sixfold status` gets its answer
    (it waited behind the trickle, and reported the daemon stuck)."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(mounted.zones[0] / "control"))
    stop = threading.Event()
    dropped = []

    def trickle():
        try:
            while not stop.wait(1.0):
                c.send(b"s")
        except OSError:
            dropped.append(True)  # the daemon closed the connection
    t = threading.Thread(target=trickle)
    t.start()
    try:
        time.sleep(6.5)
        r = sf(mounted, "status", mounted.path)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop.set()
        t.join()
        c.close()
    assert "a bad request: Connection timed out" in mounted.log.read_text()


def test_stale_socket_after_a_crash(mounted):
    mounted.kill9()
    sock = mounted.zones[0] / "control"
    assert stat.S_ISSOCK(sock.lstat().st_mode), "no socket left to test with"
    # Nobody answers there: status reads the zones.
    st = status(mounted, mounted.zones[0])
    assert st["live"] is False
    mounted.mount()
    assert status(mounted)["live"] is True


def test_control_socket_taken_or_blocked(mounted):
    """Something answering on DIR/control, or a file that is no socket
    there, makes the mount fail with a message; a dead socket is
    replaced."""
    mounted.unmount()
    path = mounted.zones[0] / "control"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(str(path))
        other.listen(1)
        with pytest.raises(AssertionError,
                           match="another sixfold daemon answers on"):
            mounted.mount()
    finally:
        other.close()
    assert path.exists(), "the other listener's socket was removed"
    mounted.mount()  # a socket nobody answers on is stale: replaced
    assert status(mounted)["live"] is True
    mounted.unmount()
    path.write_text("not a socket")
    try:
        with pytest.raises(AssertionError, match="is not a socket"):
            mounted.mount()
        assert path.read_text() == "not a socket"
    finally:
        path.unlink()
    mounted.mount()
    assert status(mounted)["live"] is True


# ---- scrub -----------------------------------------------------------------

def scrub_state(m):
    return status(m)["scrub"]


def test_scrub_round_trip(mounted):
    data = os.urandom(4 << 20)
    write_synced(mounted.path / "data", data)
    r = sf(mounted, "scrub", "start", mounted.path)
    assert r.returncode == 0, r.stderr
    assert "scrub started" in r.stdout
    second = sf(mounted, "scrub", "start", mounted.path)
    if second.returncode:
        assert "a scrub is already running" in second.stderr, second.stderr
        assert f"sixfold scrub stop {mounted.path}" in second.stderr
    fin = wait_for(lambda: (lambda s: s if s["state"] == "finished"
                            else None)(scrub_state(mounted)),
                   120, "the scrub to finish")
    assert fin["checked"] > 0, fin
    assert fin["found"] == 0 and fin["unrecoverable"] == 0, fin
    assert fin["cursor"] == fin["total_blocks"], fin
    assert fin["started"] > 0 and fin["finished"] >= fin["started"], fin
    assert fin["deep"] is False and fin["lost"] == []
    # Nothing runs now.
    r = sf(mounted, "scrub", "stop", mounted.path)
    assert r.returncode == 1 and "no scrub is running" in r.stderr, r.stderr
    # scrub status: the scrub part as text, everything as JSON.
    r = sf(mounted, "scrub", "status", mounted.path)
    assert r.returncode == 0, r.stderr
    assert re.match(r"  scrub:\s+finished, 100%", r.stdout), r.stdout
    r = sf(mounted, "scrub", "status", "--json", mounted.path)
    assert r.returncode == 0
    check_shape(json.loads(r.stdout))
    # A deep one, stopped (unless it is already done).
    r = sf(mounted, "scrub", "start", "--deep", mounted.path)
    assert r.returncode == 0 and "deep scrub started" in r.stdout, r.stderr
    wait_for(lambda: scrub_state(mounted)["deep"], 60,
             "the deep scrub to begin")
    r = sf(mounted, "scrub", "stop", mounted.path)
    if r.returncode == 0:
        assert "scrub stopped" in r.stdout
        # The scrub thread takes the stop at its next step.
        s = wait_for(lambda: (lambda s: s if s["state"] != "running"
                              else None)(scrub_state(mounted)),
                     30, "the scrub to stop")
        assert s["state"] in ("stopped", "finished"), s
    else:
        s = scrub_state(mounted)
        assert "no scrub is running" in r.stderr
        assert s["state"] == "finished", s
    assert s["deep"] is True
    assert (mounted.path / "data").read_bytes() == data


# ---- zones -----------------------------------------------------------------

def test_zone_offline_and_online(mounted):
    mp = mounted.path
    r = sf(mounted, "zone", "offline", mp, "3")
    assert r.returncode == 0, r.stderr
    assert "zone 3 is offline" in r.stdout
    st = status(mounted)
    assert st["health"] == "degraded" and st["write_quorum"] is True
    assert st["zones"][3]["state"] == "offline"
    assert st["zones"][3]["admin_offline"] is True
    r = sf(mounted, "status", mp)
    first = r.stdout.splitlines()[0]
    assert re.match(r"volume [0-9a-f]{32}: degraded, in use \u2014 zone 3 "
                    r"offline.*; writes go on with 5 zones$", first), first
    # Writes go on.
    data = os.urandom(1 << 20)
    write_synced(mp / "while-degraded", data)
    r = sf(mounted, "zone", "offline", mp, "4")
    assert r.returncode == 0, r.stderr
    write_synced(mp / "with-four", data)
    # A third zone would leave three: refused.
    r = sf(mounted, "zone", "offline", mp, "1")
    assert r.returncode == 1
    assert "zone 1 cannot go offline: fewer than 4 zones would remain, " \
        "writes would stop" in r.stderr, r.stderr
    st = status(mounted)
    assert [z["state"] for z in st["zones"]].count("offline") == 2
    assert st["zones"][1]["state"] == "healthy"
    # What they missed is materialised without them, and named in the
    # write-intent map, before they come back (otherwise the round that
    # runs after would write it to them, and no resync would be needed).
    wait_for(lambda: all(status(mounted)["zones"][z]["behind_blocks"] > 0
                         for z in (3, 4)), 20,
             "zones 3 and 4 to be behind by the writes they missed")
    # Back: resynced and healthy soon.
    for z in ("3", "4"):
        r = sf(mounted, "zone", "online", mp, z)
        assert r.returncode == 0, r.stderr
        assert f"zone {z} is back" in r.stdout
    wait_for(lambda: status(mounted)["health"] == "healthy", 20,
             "zones 3 and 4 to be healthy again")
    st = status(mounted)
    assert not any(z["admin_offline"] for z in st["zones"])
    assert (mp / "while-degraded").read_bytes() == data
    assert (mp / "with-four").read_bytes() == data
    # the resync's heals, as the log describes them, are of zones 3 and 4
    told = re.findall(r"heal: block \d+, zone (\d+): ([^;]+);",
                      mounted.log.read_text())
    assert told and {z for z, _ in told} <= {"3", "4"}, told
    assert all(w == "it has no copy" or w.startswith("it has written ")
               for _, w in told), told
    mounted.unmount()
    r = mounted.fsck()
    assert r.returncode == 0, r.stdout + r.stderr


def test_zone_replace(mounted):
    mp = mounted.path
    data = os.urandom(2 << 20)
    write_synced(mp / "before", data)
    new = mounted.base / "zone5-new"
    r = sf(mounted, "zone", "replace", mp, "5", new)
    assert r.returncode == 0, r.stderr
    assert "zone 5 is now" in r.stdout
    wait_for(lambda: status(mounted)["health"] == "healthy", 60,
             "the new zone 5 to be rebuilt")
    st = status(mounted)
    assert st["zones"][5]["path"] == str(new)
    assert (mp / "before").read_bytes() == data
    # The old directory is no zone of it any more; the volume mounts
    # from the new one's superblock list.
    mounted.unmount()
    mounted.zones[5] = new
    r = mounted.fsck()
    assert r.returncode == 0, r.stdout + r.stderr
    st = status(mounted, mounted.zones[0])
    assert st["zones"][5]["path"] == str(new)
    assert st["health"] == "healthy"


# ---- the scrub_rate mount option -------------------------------------------

def test_scrub_rate_option(make_mount, tmp_path, sixfold_bin):
    for bad in ("abc", "-1", "", "8M", "1000000"):
        r = run([sixfold_bin, "mount", "-f", "-o", f"scrub_rate={bad}",
                 tmp_path, tmp_path])
        assert r.returncode == 64, (bad, r.stderr)
        assert f"scrub_rate={bad}: give whole MB/s" in r.stderr, r.stderr
    # mount.sixfold (fstab) parses the same options.
    helper = tmp_path / "mount.sixfold"
    helper.symlink_to(sixfold_bin)
    r = run([helper, tmp_path, tmp_path, "-o", "nofail,scrub_rate=abc"])
    assert r.returncode == 64 and "scrub_rate=abc" in r.stderr, r.stderr
    m = make_mount(opts=("allow_other", "scrub_rate=0"))
    assert status(m)["scrub"]["rate_mb"] == 0
    m = make_mount(opts=("allow_other", "scrub_rate=3"))
    assert status(m)["scrub"]["rate_mb"] == 3
