"""Quorum: writes need 4 of 6 zones, reads need any 3 (DESIGN.md 2 and 6).

Zones go missing either before the open (the zone directory renamed away: a
lost disk) or at run time (vol_debug_zone_fault through `voltool
fault-write`: every later I/O of that zone fails with EIO).  With 6, 5 or 4
zones writes go on; with 3 a read-write open is refused with a message and
a running volume fails its commit with EIO after --timeout-ms, and stays
failed; reads of everything acknowledged work from any 3 zones.
"""

import itertools
import json
import random
import re

import pytest

from conftest import Volume, mkfs, run

ALL_TRIPLES = list(itertools.combinations(range(6), 3))


def info_line(stdout):
    """The `info {...}` line fault-write prints, as a dict."""
    m = re.search(r"^info (\{.*\})$", stdout, re.M)
    assert m, stdout
    return json.loads(m.group(1))


def range_args(ranges):
    """voltool check --range arguments for (lba, count, seed|"zero")."""
    return [a for lba, count, seed in ranges
            for a in ("--range", f"{lba}:{count}:{seed}")]


def check_readonly_from(vol, keep, ranges):
    """With only the zones in keep present, a read-only open reads every
    (lba, count, seed|"zero") range of ranges correctly."""
    away = [z for z in range(6) if z not in keep]
    for z in away:
        vol.hide(z)
    try:
        r = vol.vt("check", "--readonly", *range_args(ranges))
        assert r.returncode == 0, (
            f"only zones {keep}: {r.stdout}{r.stderr}")
    finally:
        for z in away:
            vol.unhide(z)


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_writes_go_on_with_zones_missing_at_open(make_volume, missing):
    """6, 5, 4 zones present at open: writes succeed, status says who is
    missing; afterwards every 3 zones read it all."""
    vol = make_volume()
    rng = random.Random(1000 + missing)
    away = sorted(rng.sample(range(6), missing))
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 1)
    for z in away:
        vol.hide(z)
    vol.vt_ok("write", "--lba", 32, "--count", 64, "--seed", 2)
    vol.vt_ok("write", "--lba", 300, "--count", 40, "--seed", 3)
    info = vol.info()
    assert info["write_quorum"] == 1
    for z in range(6):
        st = info["zones"][z]
        if z in away:
            assert st["state"] == "offline", st
            assert st["reason"], st
        else:
            assert st["state"] in ("healthy", "degraded"), st
    ranges = [(0, 32, 1), (32, 64, 2), (300, 40, 3)]
    out = vol.vt_ok("check", "--lba", 0, "--count", 32, "--seed", 1)
    assert "ok 32" in out
    for z in away:
        vol.unhide(z)
    # Every 3 zones hold what was acknowledged (4 + 3 > 6).
    for keep in ALL_TRIPLES:
        check_readonly_from(vol, keep, ranges)
    # Read-write, all six back.
    vol.vt_ok("check", *range_args(ranges))


@pytest.mark.parametrize("zones_failed,err", [("3", "EIO"), ("1,4", "EIO"),
                                              ("0,5", "ENOSPC")])
def test_writes_go_on_with_zones_failing_at_run_time(make_volume,
                                                     zones_failed, err):
    """1 or 2 zones start failing every I/O mid-run (EIO, or ENOSPC: out
    of space): no commit fails, the zones are reported offline, and every
    3 zones read it all later."""
    vol = make_volume()
    failed = [int(z) for z in zones_failed.split(",")]
    r = vol.vt("fault-write", "--lba", 0, "--count", 128, "--seed", 5,
               "--fail-zones", zones_failed, "--after", 4,
               "--fault-err", err, "--timeout-ms", 5000)
    assert r.returncode == 0, r.stdout + r.stderr
    commits = re.findall(r"^commit (\d+) (\S+) (\d+)$", r.stdout, re.M)
    assert len(commits) == 16
    assert all(res == "ok" for _, res, _ in commits), r.stdout
    info = info_line(r.stdout)
    assert info["write_quorum"] == 1
    for z in range(6):
        st = info["zones"][z]
        if z in failed:
            assert st["state"] == "offline" and "fault" in st["reason"], st
        else:
            assert st["state"] == "healthy", st
    assert "left the write set" in r.stderr
    # Reopened without faults: all there, from any three zones.
    assert "ok 128" in vol.vt_ok("check", "--lba", 0, "--count", 128,
                                 "--seed", 5)
    for keep in ALL_TRIPLES:
        check_readonly_from(vol, keep, [(0, 128, 5)])


def test_three_zones_failing_at_run_time_give_eio_after_timeout(make_volume):
    """3 zones fail mid-run: the next commit waits --timeout-ms, then EIO;
    the volume stays failed (a later commit fails at once); what was
    acknowledged before is intact; the failed txn is all or nothing."""
    vol = make_volume()
    timeout_ms = 1500
    r = vol.vt("fault-write", "--lba", 0, "--count", 64, "--seed", 6,
               "--txn-blocks", 8, "--fail-zones", "0,2,5", "--after", 3,
               "--timeout-ms", timeout_ms)
    assert r.returncode == 1, r.stdout + r.stderr
    commits = re.findall(r"^commit (\d+) (\S+) (\d+)$", r.stdout, re.M)
    assert [c[1] for c in commits] == ["ok", "ok", "ok", "EIO"], r.stdout
    waited = int(commits[3][2])
    assert timeout_ms <= waited < timeout_ms + 5000, r.stdout
    assert re.search(r"^later-commit EIO \d+$", r.stdout, re.M), r.stdout
    assert "quorum" in r.stderr, r.stderr
    info = info_line(r.stdout)
    assert info["write_quorum"] == 0
    assert [info["zones"][z]["state"] for z in (0, 2, 5)] == ["offline"] * 3
    # Reopen with every zone healthy again: the 3 acknowledged txns are
    # there; txn 3 (EIO: outcome unknown) is either all there or absent.
    assert "ok 24" in vol.vt_ok("check", "--lba", 0, "--count", 24,
                                "--seed", 6)
    new = vol.vt("check", "--lba", 24, "--count", 8, "--seed", 6)
    old = vol.vt("check", "--lba", 24, "--count", 8, "--zero")
    assert (new.returncode == 0) != (old.returncode == 0), (
        f"txn 3 is torn:\n{new.stdout}\n{old.stdout}")
    assert "ok 32" in vol.vt_ok("check", "--lba", 32, "--count", 32,
                                "--zero")
    # And the volume takes writes again.
    vol.vt_ok("write", "--lba", 24, "--count", 40, "--seed", 7)
    assert "ok 40" in vol.vt_ok("check", "--lba", 24, "--count", 40,
                                "--seed", 7)


@pytest.mark.parametrize("away", [(0, 1, 2), (3, 4, 5), (0, 2, 4),
                                  (1, 3, 5), (0, 4, 5)])
def test_three_zones_read_only(make_volume, away):
    """Only 3 zones present: read-write open refused (exit 1, a message
    saying 4 are needed), read-only open reads everything; with 2 present
    even read-only is refused."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 96, "--seed", 11)
    vol.vt_ok("write", "--lba", 48, "--count", 16, "--seed", 12)
    for z in away:
        vol.hide(z)
    r = vol.vt("write", "--lba", 200, "--count", 1, "--seed", 13)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "needs 4" in r.stderr and "only 3 of 6" in r.stderr, r.stderr
    assert "open-error EIO" in r.stdout
    vol.vt_ok("check", "--readonly",
              *range_args([(0, 48, 11), (48, 16, 12), (64, 32, 11)]))
    r = vol.vt("write", "--readonly", "--lba", 200, "--count", 1)
    assert r.returncode == 1 and "EROFS" in r.stdout, r.stdout + r.stderr
    survivor = [z for z in range(6) if z not in away][0]
    vol.hide(survivor)
    r = vol.vt("check", "--readonly", "--lba", 0, "--count", 1,
               "--seed", 11)
    assert r.returncode == 1 and "at least 3" in r.stderr, r.stderr
    vol.unhide(survivor)
    for z in away:
        vol.unhide(z)
    # Nothing was harmed by the refused opens.
    assert "ok 48" in vol.vt_ok("check", "--lba", 0, "--count", 48,
                                "--seed", 11)


def test_any_three_zones_read_after_degraded_writes(make_volume):
    """Writes made while 2 zones were away are read correctly from every
    set of 3 zones, including sets where 2 zones are the stale ones."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 256, "--seed", 21)
    vol.hide(4)
    vol.hide(5)
    vol.vt_ok("write", "--lba", 0, "--count", 128, "--seed", 22)
    vol.vt_ok("write", "--lba", 256, "--count", 64, "--seed", 23)
    vol.vt_ok("discard", "--lba", 200, "--count", 20)
    vol.unhide(4)
    vol.unhide(5)
    for keep in ALL_TRIPLES:
        check_readonly_from(vol, keep, [(0, 128, 22), (128, 72, 21),
                                         (200, 20, "zero"), (220, 36, 21),
                                         (256, 64, 23)])


def test_successive_two_zone_outages(make_volume):
    """Three outages of two zones each, one after the other, with the
    zones back in between: at every moment only 2 zones are gone, so reads
    and writes must go on (DESIGN.md 6: "1 or 2 zones gone: reads go on")."""
    vol = make_volume()
    vol.hide(0)
    vol.hide(1)
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 31)
    vol.unhide(0)
    vol.unhide(1)
    vol.hide(2)
    vol.hide(3)
    vol.vt_ok("write", "--lba", 8, "--count", 8, "--seed", 32)
    vol.unhide(2)
    vol.unhide(3)
    vol.hide(4)
    vol.hide(5)
    try:
        for ro in ([], ["--readonly"]):
            for lba, seed in ((0, 31), (8, 32)):
                r = vol.vt("check", *ro, "--lba", lba, "--count", 8,
                           "--seed", seed)
                assert r.returncode == 0, (
                    f"block {lba} (seed {seed}) {ro}: {r.stdout}{r.stderr}")
    finally:
        vol.unhide(4)
        vol.unhide(5)


@pytest.fixture
def small_zones(tmp_path):
    """Six zone directories that are 12 MiB tmpfs mounts (an 8 MiB log
    leaves room for about 900 blocks); skips without mount rights."""
    paths = [tmp_path / f"zone{i}" for i in range(6)]
    mounted = []
    try:
        for p in paths:
            p.mkdir()
            r = run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700",
                     "tmpfs", p])
            if r.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
            mounted.append(p)
        yield paths
    finally:
        for p in mounted:
            run(["umount", "-l", p])


def test_zones_out_of_space(small_zones, key_file, voltool_bin, sixfold_bin):
    """Every zone's disk fills up (DESIGN.md 6: "zones out of space:
    ENOSPC, clean; reads go on"): the write that does not fit fails with
    ENOSPC, everything acknowledged reads back, and the volume opens
    read-write again so that a discard can free space for new writes."""
    r = mkfs(sixfold_bin, small_zones, key_file)
    assert r.returncode == 0, r.stderr
    vol = Volume(small_zones, key_file, voltool_bin, sixfold_bin)
    r = vol.vt("write", "--lba", 0, "--count", 2000, "--seed", 9,
               "--timeout-ms", 3000)
    assert r.returncode == 1, r.stdout + r.stderr
    m = re.search(r"^error (\S+) lba (\d+) txn", r.stdout, re.M)
    assert m, r.stdout
    acked = int(m.group(2))
    assert acked > 100, r.stdout
    vol.vt_ok("check", "--readonly", "--lba", 0, "--count", acked,
              "--seed", 9)
    assert m.group(1) == "ENOSPC", (
        f"a full disk gave {m.group(1)}:\n{r.stdout}{r.stderr[-2000:]}")
    vol.vt_ok("check", "--lba", 0, "--count", acked, "--seed", 9)
    vol.vt_ok("discard", "--lba", 0, "--count", acked)
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 10)
    vol.vt_ok("check", "--range", "0:64:10",
              "--range", f"64:{acked - 64}:zero")
