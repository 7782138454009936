"""The volume's command line: `sixfold mkfs`, `sixfold status`, `sixfold key`
(and voltool over the public API for what has no command yet).

Covers: mkfs refusals (zone count, a directory twice, a foreign non-empty
directory, another volume's zone without and with --force, bad sizes);
status in text and JSON (healthy, a zone gone, quorum gone, in use by a
running process); a second opener refused naming the holder; no plaintext
in any zone file; automatic growth, a small --max-size and the 64 TiB end;
keys (wrong key: exit 2, one line, nothing changed; add, list, remove, the
last slot, passwd, all slots full; damaged key headers healed); a
passphrase read from stdin without a terminal.
"""

import hashlib
import json
import pathlib
import random
import re
import resource
import select
import subprocess

import pytest

from conftest import (BLOCK, NZONES, PG_BLOCKS, Volume, flip_bytes, make_key,
                      mkfs, run)

GIB = 1 << 30
MARKER = "SIXFOLD-PLAINTEXT-MARKER"


def status(vol, *args):
    r = run([vol.sixfold, "status", *args, vol.zones[0]])
    assert r.returncode == 0, r.stderr
    return r.stdout


def status_json(vol, zone_arg=None):
    r = run([vol.sixfold, "status", "--json", zone_arg or vol.zones[0]])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def key_cmd(vol, *args, **kw):
    return run([vol.sixfold, "key", *args, vol.zones[0]], **kw)


def snapshot(vol):
    """{path: (mtime_ns, size, sha256)} of every zone file but `lock`
    (the lock file notes the last opener by design: vol_zone_lock)."""
    snap = {}
    for z in range(NZONES):
        for p in vol.zone_files(z):
            if p.name == "lock":
                continue
            st = p.stat()
            snap[str(p)] = (st.st_mtime_ns, st.st_size,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


def start_holder(vol, procs):
    """A voltool torture-run holding the volume open; returns (Popen,
    pid) once it reports the volume open."""
    cmd = [str(c) for c in vol.vt_cmd("torture-run", "--seed", 3,
                                      "--threads", 1, "--lbas", 64,
                                      "--base", 100000)]
    print("+", " ".join(cmd), "&")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    procs.append(p)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    assert ready, "torture-run did not open the volume within 60 s"
    line = p.stdout.readline().decode()
    m = re.match(r"opened pid (\d+)", line)
    assert m, f"unexpected first line {line!r}: {p.stderr.read1()!r}"
    return p, int(m.group(1))


def stop(p):
    p.kill()
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()


# ---- mkfs ---------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 5, 7])
def test_mkfs_needs_six_zones(sixfold_bin, tmp_path, key_file, n):
    dirs = [tmp_path / f"z{i}" for i in range(n)]
    r = mkfs(sixfold_bin, dirs, key_file)
    assert r.returncode == 64, r.stderr
    assert f"exactly six zones, got {n}" in r.stderr
    assert not any(d.exists() for d in dirs)


def test_mkfs_bad_sizes(sixfold_bin, zones, key_file):
    for extra in (["--max-size", "lots"], ["--max-size", "65T"],
                  ["--log-size", "1M"], ["--log-size", "1G"]):
        r = mkfs(sixfold_bin, zones, key_file, log_size=None, extra=extra)
        assert r.returncode == 64, (extra, r.stderr)
        assert extra[0] in r.stderr
    assert not any((z / "superblock").exists() for z in zones)


def test_mkfs_same_directory_twice(sixfold_bin, zones, key_file, tmp_path):
    r = mkfs(sixfold_bin, [*zones[:5], zones[2]], key_file)
    assert r.returncode == 1 and "given twice" in r.stderr, r.stderr
    # Also through another name for the same directory.
    alias = tmp_path / "alias"
    alias.symlink_to(zones[4])
    r = mkfs(sixfold_bin, [*zones[:5], alias], key_file)
    assert r.returncode == 1 and "given twice" in r.stderr, r.stderr
    assert not any((z / "superblock").exists() for z in zones)


def test_mkfs_refuses_foreign_directory(sixfold_bin, zones, key_file):
    (zones[3] / "precious.txt").write_text("not a zone")
    r = mkfs(sixfold_bin, zones, key_file)
    assert r.returncode == 1, r.stderr
    assert "not empty" in r.stderr and str(zones[3]) in r.stderr
    assert (zones[3] / "precious.txt").read_text() == "not a zone"
    assert not any((z / "superblock").exists() for z in zones)
    # --force does not override a foreign directory either.
    r = mkfs(sixfold_bin, zones, key_file, extra=["--force"])
    assert r.returncode == 1 and "not empty" in r.stderr
    assert (zones[3] / "precious.txt").exists()


def test_mkfs_names_the_zone_it_cannot_write(sixfold_bin, zones, key_file):
    """A zone directory mkfs cannot write (immutable: even root cannot
    create files in it) is named in the error, with what to check."""
    if subprocess.run(["chattr", "+i", str(zones[3])],
                      capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        r = mkfs(sixfold_bin, zones, key_file)
    finally:
        subprocess.run(["chattr", "-i", str(zones[3])], check=True)
    assert r.returncode == 1, r.stderr
    assert f"cannot format zone directory {zones[3]}:" in r.stderr
    assert "immutable" in r.stderr and "run mkfs again" in r.stderr
    assert not (zones[3] / "superblock").exists()


def test_mkfs_other_volume_needs_force(make_volume, sixfold_bin, tmp_path,
                                       zones):
    old = make_volume()
    old.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 1)
    uuid = status_json(old)["uuid"]
    key2 = make_key(tmp_path / "key2")
    # A new volume that reuses one zone of the old one.
    others = [tmp_path / f"new{i}" for i in range(5)]
    r = mkfs(sixfold_bin, [*others, zones[2]], key2)
    assert r.returncode == 1, r.stderr
    assert "already holds zone 2" in r.stderr and uuid in r.stderr
    assert "--force" in r.stderr
    old.vt_ok("check", "--lba", 0, "--count", 8, "--seed", 1)
    # The same six zones formatted again: also refused without --force.
    r = mkfs(sixfold_bin, zones, key2)
    assert r.returncode == 1 and "already holds" in r.stderr
    old.vt_ok("check", "--lba", 0, "--count", 8, "--seed", 1)
    r = mkfs(sixfold_bin, zones, key2, extra=["--force"])
    assert r.returncode == 0, r.stderr
    assert status_json(old)["uuid"] != uuid
    # The old key is gone with the old volume; the new one reads zeros.
    r = old.vt("check", "--lba", 0, "--count", 1, "--zero")
    assert r.returncode == 2, r.stdout + r.stderr
    out = old.vt_ok("check", "--lba", 0, "--count", 8, "--zero", key=key2)
    assert "ok 8" in out


# ---- status, holders ----------------------------------------------------

def test_status_text_and_json(make_volume):
    vol = make_volume()
    text = status(vol)
    assert re.search(r"^volume [0-9a-f]{32}: healthy, not in use$", text,
                     re.M), text
    assert "capacity:  10 GiB" in text
    for z in range(NZONES):
        assert re.search(rf"^  {z}\s+healthy\s+\d+.*{vol.zones[z]}$", text,
                         re.M), text
    st = status_json(vol)
    assert st["health"] == "healthy"
    assert st["capacity_bytes"] == 10 * GIB
    assert st["max_bytes"] == 64 << 40
    assert st["in_use_by"] == ""
    assert st["write_quorum"] is True
    assert len(st["zones"]) == NZONES
    assert [z["state"] for z in st["zones"]] == ["healthy"] * NZONES
    assert [z["path"] for z in st["zones"]] == [str(z) for z in vol.zones]
    # Six zone arguments work too, and say the same.
    r = run([vol.sixfold, "status", "--json", *vol.zones])
    assert r.returncode == 0 and json.loads(r.stdout)["uuid"] == st["uuid"]

    vol.hide(2)
    st = status_json(vol)
    assert st["health"] == "degraded"
    assert st["write_quorum"] is True
    assert st["zones"][2]["state"] == "offline"
    assert "No such file" in st["zones"][2]["reason"], st["zones"][2]
    text = status(vol)
    assert re.search(r"^  2\s+offline", text, re.M), text
    assert "No such file" in text

    vol.hide(4)
    vol.hide(5)
    st = status_json(vol)
    assert st["health"] == "unavailable" and st["write_quorum"] is False
    # Status of a zone that is gone, named directly: an error, exit 1.
    r = run([vol.sixfold, "status", vol.zones[2]])
    assert r.returncode == 1 and "not a sixfold zone" in r.stderr
    for z in (2, 4, 5):
        vol.unhide(z)
    assert status_json(vol)["health"] == "healthy"


def test_status_usage(sixfold_bin, tmp_path):
    r = run([sixfold_bin, "status"])
    assert r.returncode == 64 and "usage" in r.stderr
    r = run([sixfold_bin, "status", "--bogus", tmp_path])
    assert r.returncode == 64
    r = run([sixfold_bin, "status", tmp_path])
    assert r.returncode == 1 and "not a sixfold zone" in r.stderr


def test_in_use_and_second_opener(make_volume, procs):
    vol = make_volume()
    p, pid = start_holder(vol, procs)
    try:
        st = status_json(vol)
        assert f"pid {pid}" in st["in_use_by"], st
        text = status(vol)
        assert f"in use by: pid {pid}" in text, text
        # A second opener is refused, naming the holder.
        for args in (["check", "--lba", 0, "--count", 1, "--zero"],
                     ["check", "--readonly", "--lba", 0, "--count", 1,
                      "--zero"],
                     ["write", "--lba", 0, "--count", 1]):
            r = vol.vt(*args)
            assert r.returncode == 1, r.stdout + r.stderr
            assert "open-error EBUSY" in r.stdout
            assert f"pid {pid}" in r.stderr and "in use" in r.stderr, r.stderr
        # Key changes too.
        key2 = make_key(vol.key.with_name("key2"))
        r = key_cmd(vol, "add", "--key-file", vol.key, "--new-key-file", key2)
        assert r.returncode == 1 and f"pid {pid}" in r.stderr, r.stderr
        assert p.poll() is None, "the holder died"
    finally:
        stop(p)
    assert status_json(vol)["in_use_by"] == ""
    assert "not in use" in status(vol)
    vol.vt_ok("info")


# ---- plaintext ----------------------------------------------------------

def test_no_plaintext_in_zones(make_volume, tmp_path):
    """Blocks full of a marker, committed through both paths (materialised
    into segments at close, and left in the log by a writer that dies):
    the marker, pieces of the plaintext and the key file's bytes appear in
    no file of any zone."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 128, "--seed", 91,
              "--marker", MARKER)
    r = vol.vt("write", "--lba", PG_BLOCKS + 7, "--count", 64, "--seed", 92,
               "--marker", MARKER, "--no-close")
    assert r.returncode == 0, r.stderr
    plain = []
    for lba, count, seed in ((0, 128, 91), (PG_BLOCKS + 7, 64, 92)):
        r = run([vol.voltool, "dump-plain", "--lba", lba, "--count", count,
                 "--seed", seed, "--marker", MARKER], text=False)
        assert r.returncode == 0 and len(r.stdout) == count * BLOCK
        plain.append(r.stdout)
    assert MARKER.encode() in plain[0]
    rng = random.Random(5)
    needles = [MARKER.encode(), vol.key.read_bytes()]
    for data in plain:
        for _ in range(24):
            off = rng.randrange(0, len(data) - 32)
            needles.append(data[off:off + 32])
    files = [p for z in range(NZONES) for p in vol.zone_files(z)]
    assert any(p.name.endswith(".seg") for p in files)
    for p in files:
        content = p.read_bytes()
        for n in needles:
            assert n not in content, f"plaintext found in {p}"
    # And the data is really there.
    vol.vt_ok("check", "--marker", MARKER, "--range", "0:128:91",
              "--range", f"{PG_BLOCKS + 7}:64:92")


# ---- growth -------------------------------------------------------------

def zone_bytes(vol, z):
    return sum(p.stat().st_blocks * 512 for p in vol.zone_files(z))


def test_growth_by_protection_groups(make_volume):
    vol = make_volume()
    assert vol.info()["capacity_blocks"] == PG_BLOCKS
    assert status_json(vol)["capacity_bytes"] == 10 * GIB
    vol.vt_ok("write", "--lba", PG_BLOCKS - 1, "--count", 1, "--seed", 1)
    assert vol.info()["capacity_blocks"] == PG_BLOCKS
    vol.vt_ok("write", "--lba", PG_BLOCKS, "--count", 1, "--seed", 2)
    info = vol.info()
    assert info["capacity_blocks"] == 2 * PG_BLOCKS
    assert status_json(vol)["capacity_bytes"] == 20 * GIB
    assert "capacity:  20 GiB" in status(vol)
    vol.vt_ok("check", "--range", f"{PG_BLOCKS - 1}:1:1",
              "--range", f"{PG_BLOCKS}:1:2")


def test_max_size_enospc(make_volume):
    vol = make_volume(extra=("--max-size", "20M"))
    last = 20 * 1024 * 1024 // BLOCK - 1
    info = vol.info()
    assert info["max_blocks"] == last + 1
    assert info["capacity_blocks"] == last + 1
    assert status_json(vol)["max_bytes"] == 20 << 20
    vol.vt_ok("write", "--lba", last - 3, "--count", 4, "--seed", 1)
    r = vol.vt("write", "--lba", last + 1, "--count", 1, "--seed", 2)
    assert r.returncode == 1 and "error ENOSPC" in r.stdout, r.stdout
    # A transaction that crosses the end fails whole.
    r = vol.vt("write", "--lba", last - 1, "--count", 4, "--seed", 3)
    assert r.returncode == 1 and "error ENOSPC" in r.stdout, r.stdout
    r = vol.vt("discard", "--lba", last - 1, "--count", 3)
    assert r.returncode == 1 and "error ENOSPC" in r.stdout, r.stdout
    r = vol.vt("check", "--lba", last + 1, "--count", 1, "--zero")
    assert r.returncode == 1 and "error ENOSPC" in r.stdout, r.stdout
    # The volume still works, and nothing of the refused writes is there.
    vol.vt_ok("write", "--lba", 0, "--count", 16, "--seed", 4)
    vol.vt_ok("check", "--range", "0:16:4", "--range", f"{last - 3}:4:1")
    assert vol.info()["capacity_blocks"] == last + 1


def test_last_block_of_64_tib(make_volume):
    vol = make_volume()
    last = (1 << 34) - 1
    vol.vt_ok("write", "--lba", last, "--count", 1, "--seed", 5)
    vol.vt_ok("write", "--lba", last - PG_BLOCKS, "--count", 2, "--seed", 6)
    info = vol.info()
    assert info["capacity_blocks"] == 1 << 34
    assert info["max_blocks"] == 1 << 34
    assert status_json(vol)["capacity_bytes"] == 64 << 40
    vol.vt_ok("check", "--range", f"{last}:1:5",
              "--range", f"{last - PG_BLOCKS}:2:6",
              "--range", f"{last - 5}:5:zero", "--range", "0:4:zero")
    r = vol.vt("write", "--lba", last + 1, "--count", 1)
    assert r.returncode == 1 and "error ENOSPC" in r.stdout
    for z in range(NZONES):
        used = zone_bytes(vol, z)
        assert used < 100 << 20, f"zone {z} uses {used} bytes"


# ---- keys ---------------------------------------------------------------

def test_wrong_key_changes_nothing(make_volume, tmp_path):
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 1)
    wrong = make_key(tmp_path / "wrong")
    new = make_key(tmp_path / "new")
    before = snapshot(vol)
    r = vol.vt("write", "--lba", 0, "--count", 1, key=wrong)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    for args in (["add", "--key-file", wrong, "--new-key-file", new],
                 ["passwd", "--key-file", wrong, "--new-key-file", new],
                 ["remove", "--key-file", wrong, "--slot", "0"]):
        r = key_cmd(vol, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and "wrong" in lines[0], r.stderr
    assert snapshot(vol) == before
    vol.vt_ok("check", "--lba", 0, "--count", 8, "--seed", 1)
    r = vol.vt("check", "--lba", 0, "--count", 8, "--seed", 1, key=new)
    assert r.returncode == 2


def slots(vol):
    r = key_cmd(vol, "list")
    assert r.returncode == 0, r.stderr
    return re.findall(r"^(\d+)\s+(.+)$", r.stdout, re.M)


def unlocks(vol, key):
    """0 if key opens the volume, 2 if refused as a wrong key."""
    r = vol.vt("check", "--lba", 0, "--count", 8, "--seed", 1, key=key)
    assert r.returncode in (0, 2), r.stdout + r.stderr
    return r.returncode


def test_key_add_list_remove_passwd(make_volume, tmp_path):
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 1)
    k0 = vol.key
    k1 = make_key(tmp_path / "k1")
    k2 = make_key(tmp_path / "k2")
    assert slots(vol) == [("0", "key file")]
    r = key_cmd(vol, "add", "--key-file", k0, "--new-key-file", k1)
    assert r.returncode == 0, r.stderr
    assert "slot 1" in r.stdout
    assert slots(vol) == [("0", "key file"), ("1", "key file")]
    assert unlocks(vol, k0) == 0 and unlocks(vol, k1) == 0
    # Remove slot 0 (unlocking with the key of slot 1).
    r = key_cmd(vol, "remove", "--key-file", k1, "--slot", "0")
    assert r.returncode == 0, r.stderr
    assert slots(vol) == [("1", "key file")]
    assert unlocks(vol, k0) == 2 and unlocks(vol, k1) == 0
    # The last slot cannot go; an empty slot cannot be removed.
    r = key_cmd(vol, "remove", "--key-file", k1, "--slot", "1")
    assert r.returncode == 1 and "last" in r.stderr, r.stderr
    r = key_cmd(vol, "remove", "--key-file", k1, "--slot", "5")
    assert r.returncode == 1 and "empty" in r.stderr, r.stderr
    r = key_cmd(vol, "remove", "--key-file", k1)
    assert r.returncode == 64
    assert unlocks(vol, k1) == 0
    # passwd replaces the slot that unlocked.
    r = key_cmd(vol, "passwd", "--key-file", k1, "--new-key-file", k2)
    assert r.returncode == 0, r.stderr
    assert len(slots(vol)) == 1
    assert unlocks(vol, k1) == 2 and unlocks(vol, k2) == 0
    # Up to 8 slots, then a clear refusal.
    extra = [make_key(tmp_path / f"x{i}") for i in range(8)]
    for i in range(7):
        r = key_cmd(vol, "add", "--key-file", k2, "--new-key-file",
                    extra[i])
        assert r.returncode == 0, r.stderr
    assert len(slots(vol)) == 8
    r = key_cmd(vol, "add", "--key-file", k2, "--new-key-file", extra[7])
    assert r.returncode == 1 and "all 8 key slots" in r.stderr, r.stderr
    assert unlocks(vol, extra[6]) == 0 and unlocks(vol, extra[7]) == 2
    # No data was rewritten by any of it.
    vol.vt_ok("check", "--lba", 0, "--count", 8, "--seed", 1, key=extra[3])


def test_damaged_key_headers_healed(make_volume, tmp_path):
    rng = random.Random("keys")
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 1)
    intact = (vol.zones[5] / "keys").read_bytes()
    for z in range(5):
        flip_bytes(vol.zones[z] / "keys",
                   sorted(rng.sample(range(8192), 3)), rng)
    # A read-write open with the right key works and rewrites the copies.
    vol.vt_ok("write", "--lba", 8, "--count", 8, "--seed", 2)
    for z in range(NZONES):
        assert (vol.zones[z] / "keys").read_bytes() == intact, f"zone {z}"
    flip_bytes(vol.zones[5] / "keys", [rng.randrange(8192)], rng)
    vol.vt_ok("check", "--range", "0:8:1", "--range", "8:8:2")
    assert len(slots(vol)) == 1
    for z in range(NZONES):
        assert (vol.zones[z] / "keys").read_bytes() == intact, f"zone {z}"
    # With every copy damaged: refused with a message (not "wrong key").
    for z in range(NZONES):
        flip_bytes(vol.zones[z] / "keys", [rng.randrange(8192)], rng)
    r = vol.vt("check", "--lba", 0, "--count", 1, "--seed", 1)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no intact key header" in r.stderr, r.stderr


def test_passphrase_from_stdin(sixfold_bin, voltool_bin, zones, tmp_path):
    """No terminal (a new session): mkfs reads the passphrase and its
    confirmation from stdin; a mismatch is refused before anything is
    written; the passphrase then unlocks, a wrong one is refused."""
    r = run([sixfold_bin, "mkfs", "--log-size", "8M", *zones],
            input="one pass\nanother\n", start_new_session=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "differ" in r.stderr
    assert not any((z / "superblock").exists() for z in zones)
    r = run([sixfold_bin, "mkfs", "--log-size", "8M", *zones],
            input="correct horse\ncorrect horse\n", start_new_session=True)
    assert r.returncode == 0, r.stderr
    assert "made on six zones" in r.stdout
    vt = [voltool_bin]
    r = run([*vt, "write", "--passphrase", "correct horse", "--lba", 0,
             "--count", 4, "--seed", 1, zones[0]])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([*vt, "check", "--passphrase", "correct horse", "--lba", 0,
             "--count", 4, "--seed", 1, zones[3]])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([*vt, "check", "--passphrase", "correct horsf", "--lba", 0,
             "--count", 4, "--seed", 1, zones[0]])
    assert r.returncode == 2, r.stdout + r.stderr
    r = run([sixfold_bin, "key", "list", zones[0]])
    assert re.search(r"^0\s+passphrase \(argon2id", r.stdout, re.M), r.stdout
    # The passphrase is not stored anywhere in the zones.
    for z in zones:
        for p in z.rglob("*"):
            if p.is_file():
                assert b"correct horse" not in p.read_bytes(), p
    # An empty line is no passphrase.
    r = run([sixfold_bin, "key", "add", "--new-key-file",
             make_key(tmp_path / "k"), zones[0]],
            input="\n", start_new_session=True)
    assert r.returncode == 1 and "no passphrase" in r.stderr, r.stderr


def test_key_passwd_that_reaches_too_few_zones(make_volume, tmp_path):
    """A passwd whose header reaches only three zones fails and says so,
    and the old key still opens the volume (the new one is added in a
    header of its own before the old one is retired): repeated once the
    zones are writable, it completes.  Fewer than four zones reachable:
    refused before anything is written.  Bad --slot values are usage
    errors, not slot 0."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 1)
    k0 = vol.key
    k1 = make_key(tmp_path / "k1")
    # Zones 3..5 refuse the header: their temporary file is a directory.
    blockers = [vol.zones[z] / ".keys.tmp" for z in (3, 4, 5)]
    for b in blockers:
        b.mkdir()
    r = key_cmd(vol, "passwd", "--key-file", k0, "--new-key-file", k1)
    for b in blockers:
        b.rmdir()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "reached only 3 zones" in r.stderr, r.stderr
    assert unlocks(vol, k0) == 0, "the old key no longer opens the volume"
    r = key_cmd(vol, "passwd", "--key-file", k0, "--new-key-file", k1)
    assert r.returncode == 0, r.stderr
    assert unlocks(vol, k0) == 2 and unlocks(vol, k1) == 0
    # Three zones away: nothing is written, both keys as they were.
    before = snapshot(vol)
    for z in (0, 1, 2):
        vol.hide(z)
    try:
        r = run([vol.sixfold, "key", "add", "--key-file", k1,
                 "--new-key-file", k0, vol.zones[3]])
    finally:
        for z in (0, 1, 2):
            vol.unhide(z)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "only 3 zones of the volume are reachable" in r.stderr, r.stderr
    assert snapshot(vol) == before
    for bad in ("4294967296", "", "1x", "-1", "8"):
        r = key_cmd(vol, "remove", "--key-file", k1, "--slot", bad)
        assert r.returncode == 64, (bad, r.stderr)
        assert "--slot" in r.stderr, r.stderr
    assert unlocks(vol, k1) == 0 and len(slots(vol)) >= 1


def test_passphrase_errors_say_what(sixfold_bin, zones, tmp_path):
    """A passphrase line over 4096 bytes is named as such; an unlock that
    fails for want of memory says so instead of exiting 1 in silence."""
    r = run([sixfold_bin, "mkfs", "--log-size", "8M", *zones],
            input="x" * 5000 + "\n", start_new_session=True)
    assert r.returncode == 1 and "longer than 4096 bytes" in r.stderr, (
        r.stderr)
    r = run([sixfold_bin, "mkfs", "--log-size", "8M", *zones],
            input="pass phrase\npass phrase\n", start_new_session=True)
    assert r.returncode == 0, r.stderr

    def small_memory():
        resource.setrlimit(resource.RLIMIT_AS, (200 << 20, 200 << 20))
    r = run([sixfold_bin, "key", "add", "--new-key-file",
             make_key(tmp_path / "k"), zones[0]],
            input="pass phrase\n", start_new_session=True,
            preexec_fn=small_memory)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot unlock the volume: Cannot allocate memory" in r.stderr, (
        r.stderr)


def test_mkfs_after_interrupted_mkfs(sixfold_bin, zones, key_file):
    """mkfs writes each zone's superblock last, so an mkfs that died
    leaves zones without one (and, before that, just the lock files).
    Such leftovers of sixfold's own are not a foreign directory: a new
    mkfs --force formats over them."""
    r = mkfs(sixfold_bin, zones, key_file)
    assert r.returncode == 0, r.stderr
    # Died before the superblocks of zones 3..5 were written.
    for z in zones[3:]:
        (z / "superblock").unlink()
    r = mkfs(sixfold_bin, zones, key_file, extra=["--force"])
    assert r.returncode == 0, r.stderr
    # Died right after taking the locks: only lock files.
    for z in zones:
        for p in sorted(z.rglob("*"), reverse=True):
            if p.name != "lock":
                p.rmdir() if p.is_dir() else p.unlink()
    r = mkfs(sixfold_bin, zones, key_file)
    assert r.returncode == 0, r.stderr
    assert all((z / "superblock").exists() for z in zones)


def test_zones_of_two_directories(sixfold_bin, voltool_bin, tmp_path,
                                  key_file):
    """A zone may be several directories (disks): protection group i goes
    to directory i % n of each zone; a zone with one of its disks gone is
    offline, the volume goes on."""
    specs = [f"{tmp_path}/a{i},{tmp_path}/b{i}" for i in range(NZONES)]
    r = mkfs(sixfold_bin, specs, key_file)
    assert r.returncode == 0, r.stderr
    # Six zone arguments are the six specs, each "dir,dir".
    vol = Volume([pathlib.Path(s) for s in specs], key_file, voltool_bin,
                 sixfold_bin)
    vol.vt_ok("write", "--lba", 0, "--count", 16, "--seed", 1)
    vol.vt_ok("write", "--lba", PG_BLOCKS, "--count", 16, "--seed", 2)
    for i in range(NZONES):
        assert (tmp_path / f"a{i}" / "pg" / "00000.seg").exists()
        assert (tmp_path / f"b{i}" / "pg" / "00001.seg").exists()
        assert not (tmp_path / f"a{i}" / "pg" / "00001.seg").exists()
        assert (tmp_path / f"b{i}" / "superblock").exists()
    st = status_json(vol)
    assert [z["path"] for z in st["zones"]] == specs
    assert st["health"] == "healthy"
    # One directory names the volume too.
    r = run([voltool_bin, "check", "--key-file", key_file, "--range",
             "0:16:1", "--range", f"{PG_BLOCKS}:16:2", tmp_path / "b4"])
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "b2").rename(tmp_path / "b2.away")
    st = status_json(vol)
    assert st["zones"][2]["state"] == "offline", st["zones"][2]
    vol.vt_ok("write", "--lba", PG_BLOCKS + 16, "--count", 16, "--seed", 3)
    vol.vt_ok("check", "--range", "0:16:1", "--range", f"{PG_BLOCKS}:16:2",
              "--range", f"{PG_BLOCKS + 16}:16:3")
    (tmp_path / "b2.away").rename(tmp_path / "b2")
    vol.vt_ok("check", "--range", "0:16:1", "--range", f"{PG_BLOCKS}:16:2",
              "--range", f"{PG_BLOCKS + 16}:16:3")
