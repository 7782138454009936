"""test/bench/suite.py (`make bench`): its rounds (BENCH_ROUNDS) and its
mirror and passthrough targets.

Covers: the headline figures of several rounds are the medians, with
their spread, and sixfold's ratios the median of each round's own ratios
(not the ratio of the medians), every round's listed; a round a target
failed is left out of its figures and counted; one round keeps the
single-run JSON format; a real two-round run (plain, six copies over
FUSE, libfuse's passthrough example built on the spot, and sixfold; one
1 s job on a 16 MiB file) writes that JSON with the rounds' orders rotated and
passthrough/plain beside sixfold's ratios, and leaves no mount, daemon
or work directory behind; a bad
BENCH_ROUNDS is refused with a message.  It measures nothing: the run
is a check of the report, its figures are not compared with any bound.
"""

import json
import os
import pathlib
import sys

from conftest import REPO, run

sys.path.insert(0, str(REPO / "test" / "bench"))
import suite  # noqa: E402

SUITE = REPO / "test" / "bench" / "suite.py"


def ok(**figures):
    return {"status": "ok", **figures}


def made_doc(rounds):
    """A doc as run_suite leaves it: rounds of {target: results} for the
    one job randwrite."""
    names = list(rounds[0])
    return {
        "settings": {"targets": names, "seconds": 1},
        "targets": {},
        "jobs": {"randwrite": {"unit": "IOPS", "targets": {}}},
        "rounds": [{"order": names,
                    "targets": {n: {"status": "ok", "seconds": 2.0,
                                    "peak_disk_bytes": 10 * (i + 1)}
                                for n in names},
                    "jobs": {"randwrite": r}}
                   for i, r in enumerate(rounds)],
    }


def test_rounds_medians_and_paired_ratios():
    # The disk drifts: plain is fast in round 1, slow in round 3; sixfold
    # follows it.  The median of the rounds' ratios (0.2) is not the
    # ratio of the medians (150 / 1000 = 0.15).
    doc = made_doc([
        {"plain": ok(iops=2000.0, sync_p50_us=100.0),
         "sixfold": ok(iops=400.0, sync_p50_us=900.0)},
        {"plain": ok(iops=1000.0, sync_p50_us=200.0),
         "sixfold": ok(iops=150.0, sync_p50_us=1000.0)},
        {"plain": ok(iops=500.0, sync_p50_us=400.0),
         "sixfold": ok(iops=100.0, sync_p50_us=1200.0)},
    ])
    for i, rd in enumerate(doc["rounds"]):  # what the disk did, per round
        rd["jobs"]["randwrite"]["sixfold"]["disk"] = {"flushes": 10 * i,
                                                      "write_mb": 5.0}
    suite.merge_rounds(doc)
    suite.ratios(doc)
    entry = doc["jobs"]["randwrite"]
    six, plain = entry["targets"]["sixfold"], entry["targets"]["plain"]
    assert six["iops"] == 150.0 and plain["iops"] == 1000.0
    assert six["rounds"] == 3 and "rounds_failed" not in six
    assert six["spread"]["iops"] == [100.0, 400.0]
    assert six["disk"] == {"flushes": 10, "write_mb": 5.0}
    assert "disk" not in plain and "disk" not in six["spread"]
    assert plain["spread"]["sync_p50_us"] == [100.0, 400.0]
    assert entry["ratio_rounds"]["sixfold/plain"]["iops"] == [0.2, 0.15,
                                                              0.2]
    assert entry["ratios"]["sixfold/plain"]["iops"] == 0.2
    assert entry["ratios"]["sixfold/plain"]["sync_p50_us"] == 5.0
    info = doc["targets"]["sixfold"]
    assert info["seconds"] == 6.0 and info["peak_disk_bytes"] == 30
    assert info["rounds"] == 3 and info["rounds_failed"] == 0
    text = suite.table(doc)
    assert "medians of 3 rounds" in text
    assert "sixfold/plain randwrite by round: 0.200 0.150 0.200" in text


def test_round_failed_is_left_out_and_counted():
    doc = made_doc([
        {"plain": ok(iops=1000.0), "sixfold": ok(iops=300.0)},
        {"plain": ok(iops=1000.0),
         "sixfold": {"status": "failed", "reason": "fio died"}},
        {"plain": ok(iops=1000.0), "sixfold": ok(iops=100.0)},
    ])
    suite.merge_rounds(doc)
    suite.ratios(doc)
    entry = doc["jobs"]["randwrite"]
    six = entry["targets"]["sixfold"]
    assert six["status"] == "ok" and six["rounds"] == 2
    assert six["rounds_failed"] == 1 and six["iops"] == 200.0
    assert entry["ratio_rounds"]["sixfold/plain"]["iops"] == [0.3, 0.1]
    assert "sixfold randwrite: failed in 1 of 3 rounds" in suite.table(doc)


def test_one_round_keeps_the_single_run_format():
    doc = made_doc([{"plain": ok(iops=1000.0), "sixfold": ok(iops=250.0)}])
    suite.merge_rounds(doc)
    suite.ratios(doc)
    assert "rounds" not in doc
    entry = doc["jobs"]["randwrite"]
    assert entry["targets"]["sixfold"] == ok(iops=250.0)
    assert entry["ratios"]["sixfold/plain"]["iops"] == 0.25
    assert "ratio_rounds" not in entry
    assert "by round" not in suite.table(doc)


def test_two_rounds_run(sixfold_bin, tmp_path):
    out = tmp_path / "out"
    r = run([sys.executable, SUITE, "--sixfold", sixfold_bin, "--out", out,
             "--quick", "--rounds", "2",
             "--targets", "plain,mirror,passthrough,sixfold",
             "--jobs", "randwrite", "--seconds", "1", "--rand-size", "16M"],
            timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out / "bench-latest.json").read_text())
    assert doc["complete"] and doc["settings"]["rounds"] == 2
    assert [rd["order"] for rd in doc["rounds"]] == [
        ["plain", "mirror", "passthrough", "sixfold"],
        ["mirror", "passthrough", "sixfold", "plain"]]
    entry = doc["jobs"]["randwrite"]
    for name in ("plain", "mirror", "passthrough", "sixfold"):
        res = entry["targets"][name]
        assert res["status"] == "ok" and res["rounds"] == 2, res
        assert res["iops"] > 0
        assert doc["targets"][name]["rounds_failed"] == 0
    each = entry["ratio_rounds"]["sixfold/plain"]["iops"]
    assert len(each) == 2 and all(x > 0 for x in each)
    lo, hi = sorted(each)
    assert lo <= entry["ratios"]["sixfold/plain"]["iops"] <= hi
    assert "sixfold/passthrough randwrite by round:" in r.stdout
    assert "sixfold/mirror randwrite by round:" in r.stdout
    assert doc["targets"]["mirror"]["program"].endswith("tools/mirrorfs")
    fuse = entry["ratio_rounds"]["passthrough/plain"]["iops"]
    assert len(fuse) == 2 and all(x > 0 for x in fuse)
    assert "passthrough/plain (FUSE alone, one copy): randwrite " in r.stdout
    assert "mirror/plain (six plain copies over FUSE): randwrite " \
        in r.stdout
    assert len(entry["ratio_rounds"]["mirror/plain"]["iops"]) == 2
    info = doc["targets"]["passthrough"]
    assert info["source"].endswith("passthrough_ll.c")
    assert "writeback" in info["options"]
    assert (out / "bench-latest.png").stat().st_size > 0
    # Nothing of the run is left: no work directory, no mount, no
    # daemon (the passthrough program ran from the work directory).
    assert not list(out.glob("bench-work-*"))
    mounts = pathlib.Path("/proc/self/mounts").read_text()
    assert str(out) not in mounts
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert str(out).encode() not in cmdline.read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            pass  # a process that exited meanwhile


def test_bad_rounds_refused(tmp_path):
    env = {**os.environ, "BENCH_ROUNDS": "three"}
    r = run([sys.executable, SUITE, "--out", tmp_path], env=env)
    assert r.returncode != 0
    assert "BENCH_ROUNDS='three': give a whole number" in r.stderr
    r = run([sys.executable, SUITE, "--out", tmp_path, "--rounds", "0"])
    assert r.returncode != 0 and "--rounds 0: give 1 to 20" in r.stderr
    assert not list(tmp_path.iterdir())
