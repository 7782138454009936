"""Self-healing drills: zones lost, damaged, replaced, slow, full and
unmounted under a running PostgreSQL, and the volume healing itself.

Each drill makes its own volume (six zone directories in a new directory
of /tmp, not under pytest's tmp_path, which other pytest sessions make
0700 again while PostgreSQL must reach it as postgres; 64 MiB logs unless
said otherwise) and mounts it with the daemon in the foreground as a child
of the test.  Unless said otherwise a drill
runs PostgreSQL 15 (as the postgres user) on the mount, with a PGDATA
copied from a template made once per file on the plain disk (initdb and
pgbench -i -s 5), and a pgbench TPC-B load (4 clients, as the postgres
user, back-to-back 5 s runs) through the whole fault.  At the end of a
drill: pgbench saw no error, the number of history rows equals the
transactions pgbench reported (nothing acknowledged is lost), the TPC-B
sums agree, pg_amcheck is clean, and after the unmount `sixfold fsck` is
clean and the metas of the six zones hold the same (state, lsn, tag) for
every block (the direct comparison, read from the zone files).

Zone faults: a zone "goes away" by renaming its directory (and comes back
by renaming it back: a true resync), is made unreadable by chmod 000 (the
daemon then runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, see
drill.NO_DAC), is replaced by an empty directory (rebuild), goes through
faultfs (test/tools/faultfs.c) to be slow, or lives on a small loop-mounted
ext4 disk that fills up or is unmounted.  Zone 0 is never the one taken
away: the control socket that `sixfold status` reaches lives in the
directory given to mount.

Status is read with `sixfold status --json MOUNTPOINT`, polled (see
drill.wait_status); every distinct picture of the zone states is printed.

Teardown (an ExitStack per test, undone in reverse): PostgreSQL and its
clients stopped by PID, zones put back, the sixfold mount unmounted (or
its daemon killed), then faultfs and loop disks unmounted and their loop
devices detached, and everything removed.

The drills (numbers as in issue 4's list):

  1   two zones lost (renamed away; chmod 000), resync, deep scrub clean
  2   a third zone lost: writes wait, reads work, the write completes
  2b  the same without PostgreSQL: an fsync waits, then returns 0
  3   copies damaged in up to five zones: reads right, deep scrub exact
  4   zone removed, empty directory put in its place: rebuilt under load
  4b  `sixfold zone replace` into a new directory
  4c  removal and empty directory at once, under writes: still rebuilt
  5   one zone 100 ms slower per operation: TPS ratio (sanity > 0.2)
  6   kill -9 of the daemon with a zone down, mount degraded, resync
  7   a zone's own disk fills up: offline, writes go on; space freed:
      healthy again
  7b  same on a disk that is too small afterwards: a zone reported
      healthy must hold everything
  8   a zone's disk unmounted (umount -l): offline, no rebuild into the
      empty mount point; mounted again: healthy

Long drills are marked `slow` (deselect with -m 'not slow').  The whole
file takes about 8 minutes on the 2-core test machine when every drill
passes (failing ones wait up to HEAL_S for a state that never comes).
Run it with SIXFOLD_BIN pointing at a copy of build/sixfold if others
rebuild the tree meanwhile.
"""

import contextlib
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import NZONES, Mount, is_mount, run
from lib import drill
from lib.drill import (NO_DAC, Pg, PgbenchLoad, LoopDisk, all_healthy,
                       assert_zones_identical, deep_scrub, mount_status,
                       offline, wait_status)

SCALE = 5  # pgbench scale of the PostgreSQL drills (about 80 MB)
SMALL_SCALE = 1  # for zones on small loop disks
HEAL_S = 120  # a zone must be healthy again within this long
NOTICE_S = 30  # a zone fault must show in status within this long
CHUNK_S = 5  # pgbench runs back to back, this long each


# ---- fixtures -------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_template():
    """get(scale): path of a stopped PGDATA with pgbench -i -s scale, made
    once per file on the plain disk; removed at the end of the file."""
    if not drill.pg_available():
        pytest.skip(f"PostgreSQL 15 not installed in {drill.PGBIN}")
    made = {}

    def get(scale):
        if scale not in made:
            made[scale] = drill.make_pg_template(scale)
        return made[scale][1]
    yield get
    for top, _ in made.values():
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def stack():
    """Teardown steps, undone in reverse order of registration (so a zone's
    disk goes after the mount that uses it, PostgreSQL before the
    mount)."""
    with contextlib.ExitStack() as s:
        yield s


@pytest.fixture
def faultfs_bin(tools_dir):
    path = tools_dir / "faultfs"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


def new_mount(stack, tmp_path, sixfold_bin, name="m", before_mkfs=None,
              **kw):
    """A Mount in a new directory of /tmp (kw as for Mount).  Not under
    tmp_path: PostgreSQL runs as postgres and must reach PGDATA, and
    another pytest session starting on the machine makes
    /tmp/pytest-of-root 0700 again at any time.  before_mkfs(m) runs first
    (it may set up zone disks and register their teardown); then the
    mount's cleanup (zones put back first) is registered, so it runs
    before theirs.  The directory goes at the very end."""
    base = pathlib.Path(tempfile.mkdtemp(prefix=f"sixfold-drill-{name}-",
                                         dir="/tmp"))
    os.chmod(base, 0o755)
    stack.callback(shutil.rmtree, base, True)
    print(f"drill directory {base} (test directory {tmp_path})")

    def before(m):
        if before_mkfs is not None:
            before_mkfs(m)
        stack.callback(cleanup_mount, m)
    return Mount(base, sixfold_bin, before_mkfs=before, **kw)


def cleanup_mount(m):
    drill.restore_zones(m)
    try:
        m.cleanup()
    finally:
        print("daemon log tail:\n" + drill.daemon_log_tail(m, 6000))
    for z in m.zones:
        shutil.rmtree(drill.away_path(z), ignore_errors=True)


def start_pg(stack, m, pg_template, scale=SCALE):
    """PostgreSQL on m with PGDATA copied from the template, started."""
    pg = Pg(m.path / "pgdata")
    stack.callback(pg.shutdown)
    # undone first: zones back, so that PostgreSQL's writes can end
    stack.callback(drill.restore_zones, m)
    pg.copy_from(pg_template(scale))
    pg.start()
    return pg


def start_load(pg, name="load"):
    return PgbenchLoad(pg, chunk=CHUNK_S, name=name).start()


def status_json(m):
    st = mount_status(m)
    print(json.dumps(st, indent=1))
    return st


def check_pg(pg, loads, exact=True, scale=SCALE):
    """After the loads stopped: no pgbench error, pg_amcheck clean, the
    TPC-B sums agree, and the history holds every acknowledged
    transaction (exactly those, unless exact is False: after a crash it
    may hold transactions whose acknowledgement was lost)."""
    errors = [e for ld in loads for e in ld.errors]
    assert not errors, "pgbench errors:\n" + "\n".join(errors)
    acked = sum(ld.processed() for ld in loads)
    assert acked > 0, "pgbench processed no transaction"
    pg.amcheck()
    counts = pg.counts()
    balances = pg.balances()
    print(f"rows {counts}, balances {balances}, acknowledged {acked}")
    assert len(set(balances)) == 1, f"TPC-B sums differ: {balances}"
    assert counts["pgbench_accounts"] == 100_000 * scale, counts
    if exact:
        assert counts["pgbench_history"] == acked, (
            f"{acked} transactions acknowledged, {counts['pgbench_history']}"
            " in the history")
    else:
        assert counts["pgbench_history"] >= acked, (
            f"{acked} transactions acknowledged, only "
            f"{counts['pgbench_history']} in the history")
    return counts


def unmount_fsck_compare(m, zone_dirs=None):
    """Unmount, fsck clean, the six zones identical on every block."""
    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    assert_zones_identical(zone_dirs or m.zones)


# ---- drill 1 --------------------------------------------------------------

@pytest.mark.slow
def test_drill1_two_zones_lost_then_resynced(tmp_path, sixfold_bin, stack,
                                             pg_template):
    """Zone 2's directory disappears, then zone 4 becomes unreadable
    (chmod 000, the daemon without DAC capabilities): pgbench goes on
    without an error, status is degraded with those two offline.  Both
    come back (renamed back, chmod 700): they resync and are healthy
    within HEAL_S without a remount.  Then: the six zones identical on
    every block, and a deep scrub after a remount finds nothing."""
    drill.check_no_dac()
    m = new_mount(stack, tmp_path, sixfold_bin, prefix=NO_DAC)
    drill.check_daemon_no_dac(m)
    pg = start_pg(stack, m, pg_template)
    load = start_load(pg)
    time.sleep(4)

    drill.away(m.zones[2])
    wait_status(m, offline(2), NOTICE_S, "zone 2 offline after its "
                "directory went away")
    time.sleep(3)
    drill.lock(m.zones[4])
    st = wait_status(m, offline(2, 4), NOTICE_S,
                     "zones 2 and 4 offline (4: chmod 000)")
    print(json.dumps(st, indent=1))
    time.sleep(6)  # the load goes on with four zones
    assert not load.errors, load.errors

    drill.back(m.zones[2])
    drill.unlock(m.zones[4])
    seen = []
    t0 = time.monotonic()
    st = wait_status(m, all_healthy, HEAL_S, "zones 2 and 4 healthy again",
                     seen=seen)
    print(f"healthy again after {time.monotonic() - t0:.1f} s; states on "
          f"the way: {[drill.zone_states(s) for s in seen]}")
    print(json.dumps(st, indent=1))
    time.sleep(3)
    load.stop()
    check_pg(pg, [load])
    pg.stop()
    unmount_fsck_compare(m)

    m.mount()
    sc = deep_scrub(m)
    assert sc["found"] == 0 and sc["unrecoverable"] == 0, sc
    m.unmount()


# ---- drill 2 --------------------------------------------------------------

@pytest.mark.slow
def test_drill2_third_zone_lost_writes_wait(tmp_path, sixfold_bin, stack,
                                            pg_template):
    """With zones 3 and 5 gone, zone 1 goes too: a psql INSERT does not
    complete (writes wait for a write quorum) while reads of existing
    data work (SELECT count(*), a file read back with its cache dropped).
    Zone 3 comes back: the INSERT completes.  Then all are back and
    healthy, the row is there, nothing acknowledged is lost."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    sums = drill.write_files(m.path, 4, 1 << 20, prefix="r")
    pg = start_pg(stack, m, pg_template)
    pg.psql("CREATE TABLE drill2 (id int)")
    load = start_load(pg)
    time.sleep(4)

    drill.away(m.zones[3])
    drill.away(m.zones[5])
    wait_status(m, offline(3, 5), NOTICE_S, "zones 3 and 5 offline")
    time.sleep(2)
    drill.away(m.zones[1])
    st = wait_status(m, lambda s: s["write_quorum"] is False
                     and drill.zones_in((1, 3, 5), ("offline",))(s),
                     NOTICE_S, "zones 1, 3, 5 offline, no write quorum")
    print(json.dumps(st, indent=1))

    ins = pg.psql_bg("INSERT INTO drill2 VALUES (42)", pg.work / "ins.out")
    time.sleep(5)
    assert ins.poll() is None, (
        f"INSERT completed (exit {ins.returncode}) without a write quorum: "
        f"{(pg.work / 'ins.out').read_text()}\npgbench errors: "
        f"{load.errors[:4]}\nserver log:\n{pg.log_tail(2500)}")
    assert not load.errors, load.errors

    n = drill.with_deadline(
        lambda: pg.psql("SELECT count(*) FROM pgbench_accounts", timeout=60),
        "SELECT count(*) without a write quorum", 90)
    assert int(n) == 100_000 * SCALE, n
    got = drill.with_deadline(lambda: drill.file_sums(m.path, sums),
                              "reading files without a write quorum", 90)
    assert got == sums, "files read back differ"
    assert ins.poll() is None, "INSERT completed without a write quorum"

    drill.back(m.zones[3])
    try:
        rc = ins.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "the INSERT still waits 60 s after zone 3 came back; status: "
            f"{json.dumps(mount_status(m))}")
    assert rc == 0, f"INSERT failed: {(pg.work / 'ins.out').read_text()}"

    drill.back(m.zones[1])
    drill.back(m.zones[5])
    wait_status(m, all_healthy, HEAL_S, "all zones healthy again")
    time.sleep(2)
    load.stop()
    assert pg.psql("SELECT count(*) FROM drill2 WHERE id = 42") == "1"
    check_pg(pg, [load])
    pg.stop()
    assert drill.file_sums(m.path, sums) == sums
    unmount_fsck_compare(m)


def test_drill2b_fsync_waits_without_quorum(tmp_path, sixfold_bin, stack):
    """Without PostgreSQL, deterministic: zones 3 and 5 go, some writes go
    on, then zone 1 goes too.  An overwrite of 8 KiB of an existing file
    and its fsync must wait (not fail, not return) while three zones are
    gone, a read of another file works meanwhile, and once zone 3 is back
    the fsync returns 0 and the data is there."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    sums = drill.write_files(m.path, 4, 1 << 20, prefix="r")
    drill.away(m.zones[3])
    drill.away(m.zones[5])
    wait_status(m, offline(3, 5), NOTICE_S, "zones 3 and 5 offline")
    sums.update(drill.write_files(m.path, 2, 1 << 20, prefix="g"))
    drill.away(m.zones[1])
    wait_status(m, lambda s: s["write_quorum"] is False, NOTICE_S,
                "no write quorum")
    data = os.urandom(8192)
    box = {}

    def overwrite():
        fd = os.open(m.path / "r0000", os.O_WRONLY)
        try:
            box["step"] = "pwrite"
            os.pwrite(fd, data, 4096)
            box["step"] = "fsync"
            os.fsync(fd)
            box["ok"] = True
        except OSError as e:
            box["error"] = f"{box['step']}: {e!r}"
        finally:
            try:
                os.close(fd)
            except OSError as e:
                box.setdefault("error", f"close: {e!r}")
    t = threading.Thread(target=overwrite, daemon=True)
    t.start()
    t.join(5)
    assert t.is_alive(), (
        f"the write did not wait for a write quorum: {box}\n"
        f"daemon log:\n{drill.daemon_log_tail(m)}")
    got = drill.with_deadline(
        lambda: drill.file_sums(m.path, ["r0001", "g0000"]),
        "reading without a write quorum", 60)
    assert got == {n: sums[n] for n in ("r0001", "g0000")}
    drill.back(m.zones[3])
    t.join(60)
    assert not t.is_alive(), "fsync still waits 60 s after zone 3 is back"
    assert box.get("ok"), f"the write failed: {box}"
    for z in (1, 5):
        drill.back(m.zones[z])
    wait_status(m, all_healthy, HEAL_S, "all zones healthy again")
    with open(m.path / "r0000", "rb") as f:
        f.seek(4096)
        assert f.read(8192) == data
    unmount_fsck_compare(m)


# ---- drill 3 --------------------------------------------------------------

def stable_blocks(m):
    """Blocks (of zone 0) WRITTEN in the same version before and after an
    idle mount and unmount, outside the allocator's first 128 blocks of a
    PG: a mount does not rewrite them, so damage to them stays until a
    read or the scrub meets it."""
    a = drill.meta_entries(m.zones[0])
    m.mount()
    m.unmount()
    b = drill.meta_entries(m.zones[0])
    return sorted(lba for lba, v in a.items()
                  if v[0] == drill.STATE_WRITTEN and b.get(lba) == v
                  and lba % drill.PG_BLOCKS >= 128)


def test_drill3_corrupt_copies_read_and_scrub(tmp_path, sixfold_bin, stack):
    """Random blocks are damaged in up to five of their six copies (bytes
    of the ciphertext flipped in pg/*.seg, or of the meta entry), each
    (zone, block) once.  Every file still reads back right; a deep scrub
    finds exactly the damaged copies that reads had not healed yet
    (healed_copies) and that were not overwritten since, heals all of
    them, and loses nothing; a second deep scrub finds nothing."""
    m = new_mount(stack, tmp_path, sixfold_bin,
                  opts=("allow_other", "scrub_rate=0"))
    sums = drill.write_files(m.path, 40, 512 << 10)
    m.unmount()
    candidates = stable_blocks(m)
    before = [drill.meta_entries(z) for z in m.zones]
    for z in range(1, NZONES):
        assert before[z] == before[0], f"zone {z} differs before damage"
    assert len(candidates) > 1000, len(candidates)

    rng = random.Random(4)
    blocks = rng.sample(candidates, 120)
    damaged = []  # (zone, lba, kind)
    for i, lba in enumerate(blocks):
        ncopies = [1, 2, 3, 4, 5][i % 5]
        zs = rng.sample(range(NZONES), ncopies)
        for j, z in enumerate(zs):
            # some copies lose their meta entry instead of their data
            # (at most two of a block's, so three zones still name it)
            if j < 2 and rng.random() < 0.2:
                drill.damage_meta(m.zones[z], lba, rng)
                damaged.append((z, lba, "meta"))
            else:
                drill.damage_seg(m.zones[z], lba, rng)
                damaged.append((z, lba, "seg"))
    assert len({(z, lba) for z, lba, _ in damaged}) == len(damaged)
    print(f"damaged {len(damaged)} copies of {len(blocks)} blocks "
          f"({sum(k == 'meta' for *_, k in damaged)} meta entries)")

    m.mount()
    got = drill.with_deadline(lambda: drill.file_sums(m.path, sums),
                              "reading every file back", 120)
    bad = [n for n in sums if got[n] != sums[n]]
    assert not bad, f"{len(bad)} files read back wrong: {bad[:5]}"

    # healing of what the reads met runs in the background: let it settle
    last, since = None, time.monotonic()
    while time.monotonic() - since < 3:
        h = mount_status(m).get("healed_copies")
        if h != last:
            last, since = h, time.monotonic()
        time.sleep(0.3)
    st0 = status_json(m)
    healed_by_reads = st0["healed_copies"]
    sc = deep_scrub(m)
    st1 = status_json(m)
    m.unmount()

    # copies whose block got a newer version since (the mount rewrote it)
    # are no longer damage of the current version
    after = drill.meta_entries(m.zones[0])
    superseded = sum(1 for z, lba, _ in damaged
                     if after.get(lba, (0, 0))[1] != before[0][lba][1])
    expect = len(damaged) - superseded - healed_by_reads
    print(f"damaged {len(damaged)}, superseded {superseded}, healed by "
          f"reads {healed_by_reads}: the scrub should find {expect}; "
          f"scrub {json.dumps(sc)}, healed_copies "
          f"{st1.get('healed_copies')}")
    assert sc["deep"] in (True, 1), sc
    assert sc["unrecoverable"] == 0 and not sc["lost"], sc
    assert sc["found"] == expect, (
        f"scrub found {sc['found']}, expected {expect} (damaged "
        f"{len(damaged)} - superseded {superseded} - healed by reads "
        f"{healed_by_reads})")
    assert sc["healed"] == sc["found"], sc
    assert st1["healed_copies"] == healed_by_reads + sc["healed"], st1
    assert_zones_identical(m.zones)
    # the log describes the first heals, each a copy damaged above, with
    # what was wrong with it (sixfold(8) DIAGNOSTICS "heal: block")
    why = {"seg": "its data fails the check", "meta": "its entry is damaged"}
    kinds = {(z, lba): why[k] for z, lba, k in damaged}
    told = re.findall(r"heal: block (\d+), zone (\d+): ([^;]+);",
                      m.log.read_text())
    assert told, "no heal was described in the daemon's log"
    for lba, z, what in told:
        assert kinds.get((int(z), int(lba))) == what, (lba, z, what)

    m.mount()
    sc2 = deep_scrub(m)
    assert sc2["found"] == 0 and sc2["unrecoverable"] == 0, sc2
    assert drill.file_sums(m.path, sums) == sums
    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"


# ---- drill 4 --------------------------------------------------------------

@pytest.mark.slow
def test_drill3b_lost_block_after_a_remount(tmp_path, sixfold_bin, stack):
    """A block damaged in all six copies is lost: the deep scrub lists it
    with its file and tells to restore it.  After a remount the scrub's
    count is kept but not its list, and the status says so and how to
    list them again (it used to print "and 1 more" under an empty list).
    """
    m = new_mount(stack, tmp_path, sixfold_bin,
                  opts=("allow_other", "scrub_rate=0"))
    drill.write_files(m.path, 4, 256 << 10)
    m.unmount()
    lba = stable_blocks(m)[10]
    rng = random.Random(3)
    for z in range(NZONES):
        drill.damage_seg(m.zones[z], lba, rng)
    m.mount()
    sc = deep_scrub(m)
    assert sc["unrecoverable"] == 1 and len(sc["lost"]) == 1, sc
    r = run([m.sixfold, "scrub", "status", m.path])
    assert r.returncode == 0, r.stderr
    assert "restore these files from a backup" in r.stdout, r.stdout
    assert f"block {lba}  /f" in r.stdout, r.stdout
    m.unmount()
    m.mount()
    r = run([m.sixfold, "scrub", "status", m.path])
    assert r.returncode == 0, r.stderr
    assert "and 1 more" not in r.stdout, r.stdout
    assert ("1 blocks (which ones was not kept across the remount: run "
            "'sixfold scrub start --deep' to list them again)") in r.stdout, (
                r.stdout)


def test_drill4_zone_replaced_by_empty_dir(tmp_path, sixfold_bin, stack,
                                           pg_template):
    """Zone 3's directory is removed and an empty one made in its place
    while pgbench runs: it is rebuilt (healthy within HEAL_S), pgbench
    sees no error.  Then zone 1 goes away: everything still reads
    (pg_amcheck, counts) and pgbench goes on; it comes back.  After the
    unmount the rebuilt zone is identical to the others, and a
    read-only fsck with only zones 0, 3 and 5 (three zones: the rebuilt
    one must serve) is clean."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    pg = start_pg(stack, m, pg_template)
    load = start_load(pg)
    time.sleep(4)

    # the disk dies (rm -rf); once it shows offline, the operator puts an
    # empty directory in its place (test_drill4c: without waiting)
    print(f"rm -rf {m.zones[3]}")
    shutil.rmtree(m.zones[3])
    wait_status(m, offline(3), NOTICE_S, "zone 3 offline once removed")
    print(f"mkdir {m.zones[3]}")
    m.zones[3].mkdir(mode=0o700)
    seen = []
    t0 = time.monotonic()
    wait_status(m, lambda s: s["zones"][3]["state"] != "offline", NOTICE_S,
                "zone 3's empty directory noticed", interval=0.2, seen=seen)
    st = wait_status(m, all_healthy, HEAL_S, "zone 3 rebuilt and healthy",
                     interval=0.2, seen=seen)
    states = [drill.zone_states(s)[3] for s in seen]
    print(f"zone 3 healthy after {time.monotonic() - t0:.1f} s, states on "
          f"the way {states}; repaired_blocks "
          f"{st['zones'][3].get('repaired_blocks')}")
    assert "rebuilding" in states, (
        f"zone 3 was never seen rebuilding: {states}")
    assert (m.zones[3] / "superblock").exists()
    assert not load.errors, load.errors

    drill.away(m.zones[1])
    wait_status(m, offline(1), NOTICE_S, "zone 1 offline")
    pg.amcheck()
    counts = pg.counts()
    assert counts["pgbench_accounts"] == 100_000 * SCALE, counts
    drill.back(m.zones[1])
    wait_status(m, all_healthy, HEAL_S, "zone 1 back and healthy")
    load.stop()
    check_pg(pg, [load])
    pg.stop()
    unmount_fsck_compare(m)

    for z in (1, 2, 4):
        drill.away(m.zones[z])
    try:
        r = m.fsck()
        assert r.returncode == 0, (
            f"fsck with zones 0, 3 (rebuilt), 5 only: {r.stdout}\n"
            f"{r.stderr}")
    finally:
        for z in (1, 2, 4):
            drill.back(m.zones[z])


def test_drill4c_dir_replaced_at_once_under_writes(tmp_path, sixfold_bin,
                                                   stack):
    """Zone 3's directory is removed and an empty one made in its place at
    once, while files are being written and fsync'ed: the daemon must not
    put anything into the new directory before it notices the change (it
    would no longer be empty: "holds files but no sixfold zone"), and it
    rebuilds the zone there.  Then every file reads back and the zones
    are identical."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    sums = drill.write_files(m.path, 16, 1 << 20)
    stop = threading.Event()
    written = {}

    def writer():  # 16 files of 256 KiB rewritten in turn: data stays small
        i = 0
        while not stop.is_set():
            written.update(drill.write_files(m.path, 1, 256 << 10,
                                             prefix=f"w{i % 16:02d}-"))
            i += 1
            time.sleep(0.02)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    stack.callback(t.join, 60)
    stack.callback(stop.set)
    time.sleep(1)
    print(f"rm -rf {m.zones[3]}; mkdir {m.zones[3]}")
    shutil.rmtree(m.zones[3])
    m.zones[3].mkdir(mode=0o700)
    seen = []
    wait_status(m, lambda s: s["zones"][3]["state"] != "healthy", NOTICE_S,
                "zone 3's empty directory noticed", interval=0.2, seen=seen)
    try:
        wait_status(m, all_healthy, HEAL_S, "zone 3 rebuilt and healthy",
                    interval=0.2, seen=seen)
    finally:
        stop.set()
        t.join(60)
        held = sorted(str(p.relative_to(m.zones[3]))
                      for p in m.zones[3].rglob("*"))
        print(f"zone 3 directory now holds: {held[:20]}")
    sums.update(written)
    assert drill.file_sums(m.path, sums) == sums
    unmount_fsck_compare(m)


def test_drill4b_zone_replace_command(tmp_path, sixfold_bin, stack):
    """`sixfold zone replace MOUNTPOINT 2 NEWDIR` rebuilds zone 2 into a new
    empty directory: status shows the new path and, in the end, healthy;
    files read back, and after a remount (the superblocks name the new
    directory) the six zones are identical."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    sums = drill.write_files(m.path, 24, 1 << 20)
    new = m.base / "zone2.new"
    new.mkdir(mode=0o700)
    stack.callback(shutil.rmtree, new, True)
    r = run([m.sixfold, "zone", "replace", m.path, "2", new])
    assert r.returncode == 0, f"zone replace: {r.stdout}{r.stderr}"
    st = wait_status(m, all_healthy, HEAL_S, "zone 2 rebuilt in NEWDIR")
    assert os.path.realpath(st["zones"][2]["path"]) == \
        os.path.realpath(new), st["zones"][2]
    assert drill.file_sums(m.path, sums) == sums
    old = m.zones[2]
    m.zones[2] = new  # the volume's zone 2 from now on
    stack.callback(shutil.rmtree, old, True)
    m.unmount()
    shutil.rmtree(old)
    m.mount()
    assert drill.file_sums(m.path, sums) == sums
    st = status_json(m)
    assert all_healthy(st), st
    unmount_fsck_compare(m)


# ---- drill 5 --------------------------------------------------------------

def faultfs_zone(stack, faultfs_bin, z):
    """before_mkfs hook: zone z becomes a faultfs mount over a backing
    directory; returns (hook, ctl) where ctl(text) sets the fault state."""
    state = {}

    def hook(m):
        zone = m.zones[z]
        backing = m.base / f"zone{z}.backing"
        backing.mkdir()
        zone.mkdir()
        ctl_path = m.base / "faultfs.ctl"
        ctl_path.write_text("")
        state["ctl"] = ctl_path
        log = m.base / "faultfs.log"
        env = dict(os.environ, FAULTFS_CTL=str(ctl_path))
        with open(log, "ab") as f:
            p = subprocess.Popen([str(faultfs_bin), str(backing), str(zone),
                                  "-f"], stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=f, env=env)

        def stop():
            if is_mount(zone):
                r = run(["fusermount3", "-u", zone], timeout=60)
                if r.returncode:
                    run(["fusermount3", "-u", "-z", zone], timeout=60)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                drill.kill_popen(p)
            shutil.rmtree(backing, ignore_errors=True)
        stack.callback(stop)
        deadline = time.monotonic() + 30
        while not is_mount(zone):
            assert p.poll() is None, f"faultfs exited: {log.read_text()}"
            assert time.monotonic() < deadline, "faultfs not mounted"
            time.sleep(0.05)

    def ctl(text):
        print(f"faultfs ctl: {text.strip()!r}")
        tmp = state["ctl"].with_name("faultfs.ctl.tmp")
        tmp.write_text(text)
        os.rename(tmp, state["ctl"])
        time.sleep(0.2)
    return hook, ctl


def test_drill5_slow_zone_tps(tmp_path, sixfold_bin, stack, pg_template,
                              faultfs_bin):
    """Zone 5 100 ms slower per operation (faultfs): pgbench TPS with the
    slow zone against healthy TPS, same volume, same test; the ratio is
    printed (sanity bound only: > 0.2).  Then the delay goes, the zone is
    healthy again, and everything checks out."""
    hook, ctl = faultfs_zone(stack, faultfs_bin, 5)
    m = new_mount(stack, tmp_path, sixfold_bin, before_mkfs=hook)
    pg = start_pg(stack, m, pg_template)
    loads = []

    def bench(name, seconds=15):
        ld = PgbenchLoad(pg, chunk=seconds, name=name)
        ld._one()
        loads.append(ld)
        assert not ld.errors, ld.errors
        return ld.runs[-1]["tps"]

    bench("warm-up", 5)
    healthy = bench("healthy")
    ctl("delay_ms 100\n")
    sampler = drill.StatusSampler(m).start()
    slow = bench("slow zone")
    samples = sampler.stop()
    st = status_json(m)
    assert st["write_quorum"], st  # the slow zone never costs the quorum
    ctl("delay_ms 0\n")
    ratio = slow / healthy if healthy else 0.0
    print(f"pgbench TPS healthy {healthy:.0f}, zone 5 +100 ms/op "
          f"{slow:.0f}, ratio {ratio:.2f}; zone 5's state each second "
          f"of the slow run: {[states[5] for _, states in samples]}")
    wait_status(m, all_healthy, HEAL_S, "zone 5 healthy without the delay")
    check_pg(pg, loads)
    pg.stop()
    unmount_fsck_compare(m)
    assert ratio > 0.2, f"TPS ratio {ratio:.2f} with one slow zone"


# ---- drill 6 --------------------------------------------------------------

@pytest.mark.slow
def test_drill6_kill9_with_zone_down(tmp_path, sixfold_bin, stack,
                                     pg_template):
    """Zone 4 goes away under load, then the daemon is killed (SIGKILL)
    and PostgreSQL crash-stopped.  A new mount with zone 4 still away
    succeeds (degraded, zone 4 offline), PostgreSQL recovers, the load
    goes on; zone 4 comes back and resyncs to healthy; every transaction
    acknowledged before the crash and after is there."""
    m = new_mount(stack, tmp_path, sixfold_bin)
    pg = start_pg(stack, m, pg_template)
    load1 = start_load(pg, "before crash")
    time.sleep(4)
    drill.away(m.zones[4])
    wait_status(m, offline(4), NOTICE_S, "zone 4 offline")
    time.sleep(4)
    print(f"kill -9 {m.pid}")
    m.kill9()
    pg.crash_stop()
    load1.abort()
    load1.errors.clear()  # the crash's own errors: expected

    m.mount()
    st = wait_status(m, offline(4), NOTICE_S,
                     "mounted again with zone 4 still away: degraded")
    print(json.dumps(st, indent=1))
    pg.start()  # crash recovery
    load2 = start_load(pg, "after crash")
    time.sleep(5)
    drill.back(m.zones[4])
    wait_status(m, all_healthy, HEAL_S, "zone 4 resynced to healthy")
    time.sleep(2)
    load2.stop()
    # the runs cut by the crash count nothing (no summary); every
    # completed run's transactions must be there
    check_pg(pg, [load1, load2], exact=False)
    pg.stop()
    unmount_fsck_compare(m)


# ---- drills 7 and 8: a zone on its own small disk -------------------------

def loop_zone(stack, z, size_mib, subdir=None):
    """before_mkfs hook: zone z on a small ext4 loop disk mounted at
    base/disk<z> (the zone directory then is base/disk<z>/<subdir>) or, if
    subdir is None, at the zone's own path (the zone directory is the
    mount point).  Returns (hook, box) where box["disk"] is the LoopDisk."""
    box = {}

    def hook(m):
        mp = m.zones[z] if subdir is None else m.base / f"disk{z}"
        disk = LoopDisk(m.base / f"disk{z}.img", mp, size_mib)
        box["disk"] = disk
        stack.callback(disk.cleanup)
        disk.create()
        if subdir is not None:
            m.zones[z] = mp / subdir
            m.zones[z].mkdir(mode=0o700)
    return hook, box


def full_zone5(stack, tmp_path, sixfold_bin, pg_template, mib):
    """A mount whose zone 5 lives on a loop ext4 disk of mib MiB, with
    PostgreSQL started, and a ballast file taking that disk's free space
    but 2 MiB.  Returns (mount, disk, pg, ballast path)."""
    hook, box = loop_zone(stack, 5, mib, subdir="zone5")
    m = new_mount(stack, tmp_path, sixfold_bin, before_mkfs=hook,
                  log_size="16M")
    disk = box["disk"]
    pg = start_pg(stack, m, pg_template, SMALL_SCALE)
    pg.psql("CHECKPOINT")
    time.sleep(1)
    free = disk.free_bytes()
    ballast = disk.mountpoint / "ballast"
    size = max(free - (2 << 20), 0)
    print(f"zone 5 disk: {free >> 20} MiB free, ballast {size >> 20} MiB")
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"free after ballast: {disk.free_bytes() >> 10} KiB")
    return m, disk, pg, ballast


def test_drill7_zone_disk_full(tmp_path, sixfold_bin, stack, pg_template):
    """Zone 5 lives on a 256 MiB ext4 loop disk; a ballast file takes its
    free space but 2 MiB, then the load and 16 MiB of files fill it: zone
    5 drops out (offline) and writes go on.  The ballast goes: zone 5
    resyncs back to healthy without a remount, and holds what the others
    hold."""
    m, disk, pg, ballast = full_zone5(stack, tmp_path, sixfold_bin,
                                      pg_template, 256)
    load = start_load(pg)
    sums = drill.with_deadline(
        lambda: drill.write_files(m.path, 4, 4 << 20, prefix="fill"),
        "writing 16 MiB while zone 5 fills up", 120)
    st = wait_status(m, offline(5), 60, "zone 5 offline: its disk is full")
    print(json.dumps(st["zones"][5], indent=1))
    time.sleep(3)
    assert not load.errors, load.errors
    assert drill.file_sums(m.path, sums) == sums

    ballast.unlink()
    print(f"ballast removed: {disk.free_bytes() >> 20} MiB free")
    wait_status(m, all_healthy, HEAL_S, "zone 5 back and healthy after "
                "space was freed")
    time.sleep(2)
    load.stop()
    check_pg(pg, [load], scale=SMALL_SCALE)
    pg.stop()
    unmount_fsck_compare(m)


def test_drill7b_zone_disk_too_small_never_stale_healthy(
        tmp_path, sixfold_bin, stack, pg_template):
    """Zone 5 on a 128 MiB disk that fills up (ballast, load, 32 MiB of
    files), then gets its ballast back, but the volume has grown so that
    what zone 5 must hold barely fits or does not fit.  Whatever the
    daemon does, a zone it calls healthy must hold what the others hold:
    if zone 5 becomes healthy within 60 s, the direct comparison after
    the unmount must find it identical; if it does not, it must still be
    out of the write set with a reason."""
    m, disk, pg, ballast = full_zone5(stack, tmp_path, sixfold_bin,
                                      pg_template, 128)
    load = start_load(pg)
    sums = drill.with_deadline(
        lambda: drill.write_files(m.path, 8, 4 << 20, prefix="fill"),
        "writing 32 MiB while zone 5 fills up", 120)
    wait_status(m, offline(5), 60, "zone 5 offline: its disk is full")
    time.sleep(2)
    ballast.unlink()
    print(f"ballast removed: {disk.free_bytes() >> 20} MiB free")
    try:
        st = wait_status(m, all_healthy, 60, "zone 5 healthy")
        healthy = True
    except AssertionError as e:
        print(f"zone 5 not healthy within 60 s: {str(e)[:300]}")
        healthy = False
        st = mount_status(m)
    print(json.dumps(st["zones"][5], indent=1))
    load.stop()
    check_pg(pg, [load], scale=SMALL_SCALE)
    pg.stop()
    assert drill.file_sums(m.path, sums) == sums
    if not healthy:
        assert st["zones"][5]["state"] != "healthy"
        assert st["zones"][5]["reason"], st["zones"][5]
    # The disk may fill again after zone 5 was healthy (the volume grew):
    # it then leaves the write set again, legitimately behind.  What the
    # volume records after the unmount decides: a zone it calls current
    # (no write-intent bit) must hold what the others hold.
    m.unmount()
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"
    after = json.loads(run([sixfold_bin, "status", "--json",
                            str(m.zones[0])]).stdout)
    z5 = after["zones"][5]
    print("after the unmount:", json.dumps(z5))
    if z5["state"] == "healthy":
        assert_zones_identical(m.zones)
    else:
        assert z5["behind_blocks"] > 0 or z5["state"] == "offline", z5
        assert_zones_identical(m.zones[:5])


def test_drill8_zone_disk_unmounted(tmp_path, sixfold_bin, stack,
                                    pg_template):
    """Zone 5's directory is the mount point of a 192 MiB ext4 loop disk.
    The disk is unmounted (umount -l) under load: zone 5 goes offline,
    writes go on, and the daemon does not rebuild into the empty
    directory left behind.  The same disk is mounted there again: zone 5
    resyncs to healthy."""
    hook, box = loop_zone(stack, 5, 192)
    m = new_mount(stack, tmp_path, sixfold_bin, before_mkfs=hook,
                  log_size="16M")
    disk = box["disk"]
    pg = start_pg(stack, m, pg_template, SMALL_SCALE)
    load = start_load(pg)
    time.sleep(4)

    print(f"umount -l {disk.mountpoint}")
    disk.umount(lazy=True)
    assert not is_mount(disk.mountpoint)
    wait_status(m, offline(5), NOTICE_S, "zone 5 offline: its disk is gone")
    for _ in range(10):  # it waits for the disk; no rebuild in the stub
        st = mount_status(m)
        assert st["zones"][5]["state"] == "offline", st["zones"][5]
        time.sleep(0.5)
    # checked at the end, so that the rest of the drill still runs
    junk = sorted(str(p.relative_to(disk.mountpoint))
                  for p in disk.mountpoint.rglob("*"))
    print(json.dumps(st["zones"][5], indent=1))
    assert not load.errors, load.errors

    print(f"mount {disk.dev} {disk.mountpoint}")
    disk.mount()
    wait_status(m, all_healthy, HEAL_S, "zone 5 back and healthy after its "
                "disk was mounted again")
    time.sleep(2)
    load.stop()
    check_pg(pg, [load], scale=SMALL_SCALE)
    pg.stop()
    unmount_fsck_compare(m)
    assert not junk, ("the daemon wrote into the empty mount point left by "
                      f"the unmounted disk: {junk[:20]}")
