"""The direct path (volume/vol_log.c L2) under crashes of the daemon.

Files written whole into fresh blocks take the direct path: their blocks
go into the zones' segments before the batch that refers to them is in
the logs, and the materialiser later writes only their metas.  This test
kills the daemon (SIGKILL) while a writer creates such files (1 MiB
writes, fsync, fsync of the directory) and deletes older ones (so that
freed blocks are allocated again while their discards may still be
pending; often the file just written, whose blocks' materialisation may
still be running: a replay then holds both the write and the discard),
several rounds in a row, each kill landing at a random moment after the
daemon has written data in place.  After every remount each
file the writer had fsync'ed (and not begun to delete) must read back
exactly.  At the end a deep scrub (every copy of every block
authenticated) finds nothing wrong, the six zones' metas agree exactly,
and fsck finds the filesystem clean.

The seed is printed; rerun with SIXFOLD_DIRECT_SEED=<seed> to reproduce.
"""

import hashlib
import os
import random
import subprocess
import sys
import time

from lib.drill import assert_zones_identical, deep_scrub, mount_status

ROUNDS = 5
KEEP = 12  # files kept alive at most (about 24 MiB; six copies add up)

# The writer: runs until the mount fails under it (the kill), printing
# "synced NAME SHA256" once a file and its directory entry are fsync'ed,
# and "gone NAME" before it starts to delete one.
WRITER = r"""
import hashlib, os, random, sys

root, seed, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
names = sorted(n for n in os.listdir(root) if n.startswith("f"))


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fsync_dir():
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


i = 0
try:
    while True:
        if names and (len(names) >= keep or rng.random() < 0.3):
            # often the newest: its blocks' round may still be running
            victim = names.pop(-1 if rng.random() < 0.4 else
                               rng.randrange(len(names)))
            say("gone " + victim)
            os.unlink(os.path.join(root, victim))
            fsync_dir()
        name = "f%d-%d" % (seed, i)
        i += 1
        size = rng.choice([200_000, 1 << 20, (2 << 20) + 4097])
        data = rng.randbytes(size)
        fd = os.open(os.path.join(root, name),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:1 << 20]):]
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir()
        say("synced %s %s" % (name, hashlib.sha256(data).hexdigest()))
        names.append(name)
except OSError as e:
    say("stopped %s" % e)
"""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wait_direct(m, timeout=30.0):
    """Wait until the daemon has written some data in place."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = mount_status(m)
        if st.get("direct_bytes", 0) > 0:
            return st
        time.sleep(0.1)
    raise AssertionError(f"no data took the direct path: {st}")


def test_kill9_during_direct_writes(make_mount):
    seed = int(os.environ.get("SIXFOLD_DIRECT_SEED",
                              random.randrange(1 << 30)))
    print(f"seed {seed} (SIXFOLD_DIRECT_SEED={seed} reproduces)")
    rng = random.Random(seed)
    m = make_mount(opts=("allow_other", "scrub_rate=0"))
    root = m.path / "direct"
    root.mkdir()
    expect = {}  # name -> sha256 of every file that must survive
    for rnd in range(ROUNDS):
        w = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root),
             str(seed + rnd), str(KEEP)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            st = wait_direct(m)
            time.sleep(rng.uniform(0.0, 1.5))
            m.kill9()
            out, err = w.communicate(timeout=120)
        finally:
            if w.poll() is None:
                w.kill()
                w.wait()
        print(f"round {rnd}: direct {st['direct_bytes']} B, "
              f"logged {st['logged_bytes']} B before the kill; "
              f"writer: {out.splitlines()[-1:]} {err.strip()[-200:]}")
        for line in out.splitlines():
            word = line.split()
            if word[0] == "synced":
                expect[word[1]] = word[2]
            elif word[0] == "gone":
                expect.pop(word[1], None)
        m.mount()
        for name, sha in sorted(expect.items()):
            p = root / name
            assert p.exists(), f"round {rnd}: {name} (fsync'ed) is missing"
            assert sha256_file(p) == sha, (
                f"round {rnd}: {name} (fsync'ed) differs after the crash")
    assert expect, "the writer never fsync'ed a file"

    sc = deep_scrub(m)
    heals = [ln for ln in m.log.read_text().splitlines() if "heal:" in ln]
    assert sc["found"] == 0 and sc["unrecoverable"] == 0, (sc, heals)
    m.unmount()
    assert_zones_identical(m.zones)
    r = m.fsck()
    assert r.returncode == 0, f"fsck: {r.stdout}\n{r.stderr}"
