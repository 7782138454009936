"""Crash torture: SIGKILL a writer at random moments, recover, verify exactly.

A child `voltool torture-run` commits transactions from 4 threads (thread t
owns its own LBA range; its txn i is a pure function of (seed, t, i): 1-8
distinct blocks, or a discard plus up to 2 writes inside it, or a run of
64-320 blocks that needs a multi-header log batch), printing
`ack t i` after every successful commit.  The parent kills it with SIGKILL
after a random 0.2-1.5 s (some kills land mid-batch, mid-materialisation or
in recovery), then runs `voltool torture-verify`, which opens the volume
(recovery) and checks that each thread's range equals *exactly* the model
after its acknowledged txns, or after one more (each thread commits
synchronously, so at most one txn per thread was in flight; its ack line may
have been lost after it became durable).  A txn that did not survive is
recorded as lost and never reissued, so a later recovery that resurrected it
from a stale log would differ from the model and fail.

Between kill and verify the rounds vary: plain; an early kill (often in the
writer's own recovery); a writer with few enough txns that it often closes
the volume itself (the kill may land in the close); one or two zones hidden
(renamed away); the logs of one or two zones damaged by flipped bytes; a zone
hidden while the writer runs, then returned while another is hidden (the
returned zone must not resurrect anything past the cut); a zone hidden only
during recovery (it missed the last writes) and returned for the next round;
a zone that starts failing every I/O while the writer runs.  Some verifies
run read-only first (recovery in memory) and must agree with the read-write
recovery that follows.  Zones are only ever hidden or failed from a fixed
pair, so at most two zones ever miss writes.

The seed is printed; rerun with SIXFOLD_CRASH_SEED=<seed> to reproduce.
"""

import os
import random
import re
import shlex
import signal
import subprocess
import time

import pytest

from conftest import PG_BLOCKS, flip_bytes

THREADS = 4
LBAS = 512
# Threads 0 and 1 in protection group 0, 2 and 3 in group 1: the range
# crosses a PG boundary, so growth happens under crashes too.
BASE = PG_BLOCKS - 2 * LBAS
# The two zones that may be hidden (lost disks); any zone's log may be hurt.
HIDEABLE = (1, 4)


class Torture:
    """State of the torture across rounds: what each thread did."""

    def __init__(self, vol, tmp_path, procs, tseed):
        self.vol = vol
        self.tmp = tmp_path
        self.procs = procs
        self.tseed = tseed
        self.start = [0] * THREADS  # next txn index per thread
        self.lost = []  # (t, i): txns that did not survive a crash
        self.round = 0

    def common(self):
        return ["--seed", str(self.tseed), "--threads", str(THREADS),
                "--lbas", str(LBAS), "--base", str(BASE)]

    def lost_args(self):
        if not self.lost:
            return []
        return ["--lost", ",".join(f"{t}:{i}" for t, i in self.lost)]

    def run_kill(self, delay, txns=None, extra=()):
        """Run the writer, SIGKILL it after delay s; per-thread next txn.
        With txns, each thread stops after that many and the writer
        closes the volume, unless the kill comes first (or lands in the
        close)."""
        self.round += 1
        out = self.tmp / f"run{self.round}.out"
        err = self.tmp / f"run{self.round}.err"
        cmd = [str(c) for c in self.vol.vt_cmd(
            "torture-run", *self.common(), "--start",
            ",".join(f"{t}:{k}" for t, k in enumerate(self.start)),
            *(["--txns", txns] if txns else []), *extra)]
        print(f"+ {shlex.join(cmd)} >{out}  # SIGKILL after {delay:.2f} s")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(cmd, stdout=fo, stderr=fe,
                                 stdin=subprocess.DEVNULL)
            self.procs.append(p)
            try:
                time.sleep(delay)  # the deliberate random kill moment
            finally:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=60)
        finished = txns and p.returncode == 0
        assert finished or p.returncode == -signal.SIGKILL, (
            f"round {self.round}: torture-run ended by itself "
            f"(exit {p.returncode}) before the kill:\n{err.read_text()}")
        nxt = list(self.start)
        text = out.read_text()
        assert not re.search(r"^fail ", text, re.M), (
            f"round {self.round}: a commit failed:\n"
            + "\n".join(l for l in text.splitlines() if l.startswith("fail"))
            + "\n" + err.read_text())
        for m in re.finditer(r"^ack (\d+) (\d+)$", text, re.M):
            t, i = int(m.group(1)), int(m.group(2))
            assert i == nxt[t], f"thread {t}: ack {i} out of order"
            nxt[t] = i + 1
        if finished:
            assert nxt == [k + txns for k in self.start], text
        print(f"round {self.round}: acked "
              f"{[n - s for n, s in zip(nxt, self.start)]} txns per thread"
              + (", then closed" if finished else ""))
        return nxt

    def verify(self, nxt, readonly=False):
        """torture-verify; records lost txns; returns the counts found."""
        args = [*self.common(), "--acked",
                ",".join(f"{t}:{k}" for t, k in enumerate(nxt)),
                *self.lost_args()]
        if readonly:
            args.append("--readonly")
        r = self.vol.vt("torture-verify", *args, timeout=120)
        assert r.returncode == 0, (
            f"round {self.round}: torture-verify exit {r.returncode} "
            f"(hidden zones {self.vol.hidden()})\n"
            f"stdout: {r.stdout}\nstderr: {r.stderr}")
        counts = [None] * THREADS
        for m in re.finditer(r"^thread (\d+) count (\d+)$", r.stdout, re.M):
            counts[int(m.group(1))] = int(m.group(2))
        assert None not in counts, r.stdout
        bad = re.search(r"^bad_copies (\d+)$", r.stdout, re.M)
        assert bad, r.stdout
        # A crash mid-materialisation can leave a meta entry newer than
        # its segment block; a read-only open serves those blocks from the
        # log and writes nothing, but a read-write recovery must have
        # rewritten every one before it serves.
        assert readonly or int(bad.group(1)) == 0, (
            f"round {self.round}: recovery left damaged copies: "
            f"{r.stdout}\n{r.stderr}")
        return counts

    def settle(self, nxt, counts):
        """After a read-write verify: the lost txns, the next start."""
        for t in range(THREADS):
            assert counts[t] in (nxt[t], nxt[t] + 1)
            if counts[t] == nxt[t]:
                self.lost.append((t, nxt[t]))
            self.start[t] = nxt[t] + 1


def damage_log(vol, z, rng):
    """Flip bytes at random offsets of zone z's log."""
    log = vol.zones[z] / "log"
    size = log.stat().st_size
    offsets = sorted(rng.randrange(size) for _ in range(rng.randrange(8, 64)))
    print(f"damaging zone {z} log at {len(offsets)} offsets")
    flip_bytes(log, offsets, rng)


def plan(rng):
    """The rounds: a list of (kind, arg) in a shuffled but seeded order."""
    solo = [("plain", None)] * 8 + [("hide", 1)] * 4 + [("hide", 2)] * 3 + \
        [("logs", 1)] * 3 + [("logs", 2)] * 3 + [("hide_logs", None)] * 2 + \
        [("early", None)] * 3 + [("finish", None)] * 3 + \
        [("fault", None)] * 3
    rng.shuffle(solo)
    # Multi-round sequences: 2 rounds each.
    seqs = [("returning", None), ("recovery_only", None)]
    rounds = []
    for item in solo:
        rounds.append(item)
        if seqs and rng.random() < 0.3:
            rounds.append(seqs.pop())
    rounds += seqs
    return rounds


def test_crash_torture(make_volume, tmp_path, procs):
    seed = int(os.environ.get("SIXFOLD_CRASH_SEED",
                              random.SystemRandom().randrange(2**32)))
    print(f"crash torture seed {seed} "
          f"(rerun: SIXFOLD_CRASH_SEED={seed} pytest {__file__})")
    rng = random.Random(seed)
    vol = make_volume()
    tt = Torture(vol, tmp_path, procs, seed & 0xFFFFFFFF)
    t0 = time.monotonic()

    def delay():
        return rng.uniform(0.2, 1.5)

    def one(before_verify=(), after_verify=(), d=None, readonly_first=False,
            txns=None, extra=()):
        nxt = tt.run_kill(delay() if d is None else d, txns, extra)
        for f in before_verify:
            f()
        if readonly_first:
            ro = tt.verify(nxt, readonly=True)
        counts = tt.verify(nxt)
        if readonly_first:
            assert ro == counts, "read-only and read-write recovery differ"
        tt.settle(nxt, counts)
        for f in after_verify:
            f()

    rounds = plan(rng)
    for kind, arg in rounds:
        print(f"--- round {tt.round + 1}: {kind} {arg or ''}")
        if kind == "plain":
            one(readonly_first=rng.random() < 0.3)
        elif kind == "finish":
            # Few enough txns that the writer often closes the volume
            # itself, and the kill sometimes lands in the close.
            one(txns=rng.randrange(20, 300))
        elif kind == "fault":
            # A zone fails every I/O while the writer runs (it leaves the
            # write set; what it misses must be named in the write-intent
            # map before the log space is reused), then the kill.
            z = rng.choice(HIDEABLE)
            one(extra=["--fail-zones", z,
                       "--fault-after-ms", rng.randrange(20, 800)],
                readonly_first=rng.random() < 0.3)
        elif kind == "early":
            # Kill soon after start: often inside open/recovery.
            one(d=rng.uniform(0.0, 0.2))
        elif kind == "hide":
            zs = rng.sample(HIDEABLE, arg)
            one(before_verify=[lambda: [vol.hide(z) for z in zs]],
                after_verify=[lambda: [vol.unhide(z) for z in zs]],
                readonly_first=rng.random() < 0.5)
        elif kind == "logs":
            zs = rng.sample(range(6), arg)
            one(before_verify=[lambda: [damage_log(vol, z, rng)
                                        for z in zs]])
        elif kind == "hide_logs":
            h = rng.choice(HIDEABLE)
            d = rng.choice([z for z in range(6) if z != h])
            one(before_verify=[lambda: vol.hide(h),
                               lambda: damage_log(vol, d, rng)],
                after_verify=[lambda: vol.unhide(h)])
        elif kind == "returning":
            a, b = rng.sample(HIDEABLE, 2)
            print(f"zone {a} away while writing, then back with {b} away")
            vol.hide(a)
            one()
            vol.unhide(a)
            vol.hide(b)
            one(readonly_first=True)
            vol.unhide(b)
        elif kind == "recovery_only":
            a = rng.choice(HIDEABLE)
            print(f"zone {a} away during recovery only")
            one(before_verify=[lambda: vol.hide(a)],
                after_verify=[lambda: vol.unhide(a)])
            one()
    # Finally everything back: a clean read-only look at the whole state.
    assert vol.hidden() == []
    nxt = list(tt.start)
    counts = tt.verify(nxt, readonly=True)
    assert counts == nxt
    print(f"{tt.round} rounds in {time.monotonic() - t0:.1f} s, "
          f"{sum(tt.start)} txns issued, {len(tt.lost)} lost in crashes")


@pytest.mark.parametrize("case", ["overwrite", "discard-then-write",
                                  "meta-without-segment"])
def test_crash_between_materialise_and_checkpoint(make_volume, case):
    """The states a crash during materialisation leaves, made exactly: a
    transaction is committed and materialised, then the checkpoint of
    every zone is put back as it was before (V4: the checkpoint is written
    only after the segments, so a crash in between leaves just this), and
    for meta-without-segment also the segment file (its write had not
    reached the disk while the meta page's had).  Recovery replays the log
    over segments that already hold some of it: the data must come out
    exactly as committed."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 16, "--seed", 1)
    saved = {}
    for z in range(6):
        seg = vol.zones[z] / "pg" / "00000.seg"
        saved[z] = ((vol.zones[z] / "checkpoint").read_bytes(),
                    seg.read_bytes())
    extra = ["--discard-first"] if case == "discard-then-write" else []
    vol.vt_ok("write", "--lba", 0, "--count", 8, "--seed", 2, *extra)
    for z in range(6):
        (vol.zones[z] / "checkpoint").write_bytes(saved[z][0])
        if case == "meta-without-segment":
            (vol.zones[z] / "pg" / "00000.seg").write_bytes(saved[z][1])
    r = vol.vt("check", "--range", "0:8:2", "--range", "8:8:1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^bad_copies 0$", r.stdout, re.M), r.stdout


def test_cut_transaction_never_returns(make_volume):
    """A transaction that reached only 2 zones (4 were failing: EIO after
    the timeout) is cut by a recovery that does not see those 2 zones;
    when they come back, its records (older epoch, past the cut) must not
    be resurrected, neither over newer writes nor where nothing newer was
    written."""
    vol = make_volume()
    vol.vt_ok("write", "--lba", 0, "--count", 16, "--seed", 1)
    r = vol.vt("fault-write", "--lba", 0, "--count", 16, "--seed", 2,
               "--txn-blocks", 16, "--fail-zones", "0,1,2,3", "--after", 0,
               "--timeout-ms", 1000)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^commit 0 EIO ", r.stdout, re.M), r.stdout
    vol.hide(4)
    vol.hide(5)
    vol.vt_ok("check", "--lba", 0, "--count", 16, "--seed", 1)
    vol.vt_ok("write", "--lba", 8, "--count", 8, "--seed", 3)
    vol.unhide(4)
    vol.unhide(5)
    vol.vt_ok("check", "--range", "0:8:1", "--range", "8:8:3")
    # Also read-only from the two zones that hold the cut txn plus one.
    for keep in ((3, 4, 5), (0, 4, 5)):
        away = [z for z in range(6) if z not in keep]
        for z in away:
            vol.hide(z)
        try:
            vol.vt_ok("check", "--readonly", "--range", "0:8:1",
                      "--range", "8:8:3")
        finally:
            for z in away:
                vol.unhide(z)
