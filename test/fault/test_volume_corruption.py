"""Corruption: damaged copies are skipped, never returned (DESIGN.md 2, 6).

Block lba lives in every zone at pg/{lba // 2621440:05d}.seg, offset
(lba % 2621440) * 4096 (ciphertext), with its 64-byte entry at
(lba % 2621440) * 64 of the .meta file (LSN, nonce, tag, CRC).  Flipping
bytes there in 1..5 zones must still give the right data and count the bad
copies; in all 6 the read fails with EIO.  The same for the log path: a
writer that dies right after its commits leaves the data only in the logs,
and recovery must rebuild it from the one zone whose log is intact.
"""

import json
import random
import re
import shutil

import pytest

from conftest import BLOCK, PG_BLOCKS, flip_bytes, run

META = 64


def seg_meta(vol, z, lba):
    """(segment path, meta path, offset in segment, offset in meta)."""
    pg, off = divmod(lba, PG_BLOCKS)
    d = vol.zones[z] / "pg"
    return (d / f"{pg:05d}.seg", d / f"{pg:05d}.meta", off * BLOCK,
            off * META)


def damage_copy(vol, z, lba, mode, rng):
    """Flip bytes of zone z's copy of lba: "seg", "meta" or "both"."""
    seg, meta, soff, moff = seg_meta(vol, z, lba)
    if mode in ("seg", "both"):
        flip_bytes(seg, sorted(rng.sample(range(soff, soff + BLOCK),
                                          rng.randrange(1, 9))), rng)
    if mode in ("meta", "both"):
        flip_bytes(meta, [moff + rng.randrange(META)], rng)


def move_copy(vol, z, src, dst):
    """Zone z's copy of src (ciphertext and meta entry) put at dst: a
    misdirected write.  Both are valid where they came from."""
    s_seg, s_meta, s_soff, s_moff = seg_meta(vol, z, src)
    d_seg, d_meta, d_soff, d_moff = seg_meta(vol, z, dst)
    for sp, so, dp, do, n in ((s_seg, s_soff, d_seg, d_soff, BLOCK),
                              (s_meta, s_moff, d_meta, d_moff, META)):
        with open(sp, "rb") as f:
            f.seek(so)
            data = f.read(n)
        with open(dp, "r+b") as f:
            f.seek(do)
            f.write(data)


def bad_copies(stdout):
    m = re.search(r"^bad_copies (\d+)$", stdout, re.M)
    assert m, stdout
    return int(m.group(1))


def check_block(vol, lba, seed, times=6):
    """Read lba `times` times in one open (each read starts at the next
    zone); returns the CompletedProcess."""
    return vol.vt("check", *[a for _ in range(times)
                             for a in ("--range", f"{lba}:1:{seed}")])


@pytest.mark.parametrize("mode", ["seg", "meta", "both", "moved"])
def test_damaged_copies_in_segments(make_volume, mode):
    """Block 100 + k has k damaged copies (k = 1..6): the right data while
    one copy is good, with the bad ones counted; EIO with none."""
    rng = random.Random(f"segments-{mode}")
    vol = make_volume()
    # Two protection groups, so both .seg/.meta files are exercised.
    for base in (0, PG_BLOCKS):
        vol.vt_ok("write", "--lba", base, "--count", 256, "--seed", 41)
    for base in (0, PG_BLOCKS):
        for k in range(1, 7):
            lba = base + 100 + k
            for z in rng.sample(range(6), k):
                if mode == "moved":
                    move_copy(vol, z, lba + 50, lba)
                else:
                    damage_copy(vol, z, lba, mode, rng)
    for base in (0, PG_BLOCKS):
        for k in range(1, 6):
            lba = base + 100 + k
            r = check_block(vol, lba, 41)
            assert r.returncode == 0, (
                f"lba {lba}, {k} copies damaged ({mode}): "
                f"{r.stdout}{r.stderr}")
            assert bad_copies(r.stdout) >= k, r.stdout
        lba = base + 106
        r = check_block(vol, lba, 41, times=1)
        assert r.returncode == 1, f"lba {lba}: all 6 damaged: {r.stdout}"
        assert f"error EIO lba {lba}" in r.stdout, r.stdout
        assert "mismatch" not in r.stdout
        assert bad_copies(r.stdout) >= 6
        # The neighbours were not disturbed.
        vol.vt_ok("check", "--range", f"{base}:101:41",
                  "--range", f"{base + 107}:149:41")


@pytest.mark.parametrize("stale", [1, 2])
def test_stale_copy_loses_on_lsn(make_volume, stale):
    """A zone whose copy of a block is an older, valid version (a write
    the disk acknowledged but lost) must not serve it: the newer version
    on the other zones wins (DESIGN.md 2: "replayed from an older version
    ... loses on LSN"; with at most 2 stale copies, any 3 zones asked
    include a current one)."""
    rng = random.Random(f"stale-{stale}")
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 51)
    zs = rng.sample(range(6), stale)
    saved = {}
    for z in zs:
        seg, meta, _, _ = seg_meta(vol, z, 0)
        saved[z] = (seg.read_bytes(), meta.read_bytes())
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 52)
    for z in zs:
        seg, meta, _, _ = seg_meta(vol, z, 0)
        seg.write_bytes(saved[z][0])
        meta.write_bytes(saved[z][1])
    for lba in (0, 17, 63):
        r = check_block(vol, lba, 52)
        assert r.returncode == 0, (
            f"lba {lba}: old version in zones {zs} served: "
            f"{r.stdout}{r.stderr}")


def test_zone_restored_from_old_copy(make_volume):
    """A zone directory replaced by an old copy of itself (a disk restored
    from a backup) holds authentic but stale blocks: reads must never
    return them (DESIGN.md 2: "Wrong data is never returned")."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 53)
    backup = vol.zones[3].with_name("zone3.backup")
    run_cp = run(["cp", "-a", vol.zones[3], backup])
    assert run_cp.returncode == 0, run_cp.stderr
    vol.vt_ok("write", "--lba", 0, "--count", 64, "--seed", 54)
    vol.vt_ok("write", "--lba", 1000, "--count", 8, "--seed", 55)
    shutil.rmtree(vol.zones[3])
    backup.rename(vol.zones[3])
    for lba in (0, 3, 31, 63):
        r = check_block(vol, lba, 54)
        assert r.returncode == 0, (
            f"lba {lba}: the restored zone's old version served: "
            f"{r.stdout}{r.stderr}")
    vol.vt_ok("check", "--range", "0:64:54", "--range", "1000:8:55")


def test_damaged_logs_after_crash(make_volume):
    """The writer dies (_exit, no close) right after its commits: the
    data is in the logs.  Bytes flipped in every log block the batches
    use, in 5 zones: recovery takes them from the sixth."""
    rng = random.Random("logs")
    vol = make_volume()
    r = vol.vt("write", "--lba", 500, "--count", 96, "--seed", 61,
               "--txn-blocks", 12, "--no-close")
    assert r.returncode == 0, r.stdout + r.stderr
    logs = [(vol.zones[z] / "log").read_bytes() for z in range(6)]
    # Every acknowledged batch is on at least 4 logs, identical where they
    # hold it; the most common content is a complete copy.
    best = max(range(6), key=lambda z: sum(l == logs[z] for l in logs))
    assert sum(l == logs[best] for l in logs) >= 4
    used = max(i for i in range(len(logs[best]) // BLOCK)
               if logs[best][i * BLOCK:(i + 1) * BLOCK].strip(b"\0")) + 1
    print(f"zone {best} keeps its log; {used} log blocks in use")
    for z in range(6):
        if z == best:
            continue
        offsets = [i * BLOCK + rng.randrange(BLOCK) for i in range(used)]
        flip_bytes(vol.zones[z] / "log", offsets, rng)
    out = vol.vt_ok("check", "--lba", 500, "--count", 96, "--seed", 61)
    assert "ok 96" in out
    # Recovery wrote it all back: again after a second open, with the
    # spared zone gone too.
    vol.hide(best)
    try:
        out = vol.vt_ok("check", "--lba", 500, "--count", 96, "--seed", 61)
        assert "ok 96" in out
    finally:
        vol.unhide(best)


def test_damaged_logs_random_bytes(make_volume):
    """Random bytes flipped all over the logs of 5 zones after a crash
    (and with some batches already materialised): all data intact."""
    rng = random.Random("logs-random")
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 256, "--seed", 71)
    r = vol.vt("write", "--lba", 128, "--count", 200, "--seed", 72,
               "--txn-blocks", 5, "--no-close")
    assert r.returncode == 0, r.stdout + r.stderr
    logs = [(vol.zones[z] / "log").read_bytes() for z in range(6)]
    best = max(range(6), key=lambda z: sum(l == logs[z] for l in logs))
    size = len(logs[best])
    for z in range(6):
        if z != best:
            flip_bytes(vol.zones[z] / "log",
                       sorted(rng.sample(range(size), 2000)), rng)
    vol.vt_ok("check", "--range", "0:128:71", "--range", "128:200:72")


def test_damaged_superblock_and_checkpoint(make_volume):
    """A zone with a damaged superblock and another with both checkpoint
    slots damaged are left out (status says why); the other 4 serve."""
    rng = random.Random("sb")
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 32, "--seed", 81)
    flip_bytes(vol.zones[1] / "superblock", [rng.randrange(8192)], rng)
    flip_bytes(vol.zones[3] / "checkpoint",
               [rng.randrange(4096), 4096 + rng.randrange(4096)], rng)
    r = vol.sixfold_cmd("status", "--json", vol.zones[0])
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["zones"][1]["state"] == "offline"
    assert "superblock" in st["zones"][1]["reason"]
    assert st["zones"][3]["state"] == "offline"
    assert "checkpoint" in st["zones"][3]["reason"]
    vol.vt_ok("check", "--lba", 0, "--count", 32, "--seed", 81)
    vol.vt_ok("write", "--lba", 32, "--count", 32, "--seed", 82)
    vol.vt_ok("check", "--range", "0:32:81", "--range", "32:32:82")
