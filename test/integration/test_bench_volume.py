"""`sixfold bench-volume`: the volume against six plain files on one disk.

Covers: the JSON report (every figure there and consistent: latencies in
order, at one thread one batch per commit, the batches' phases in order,
bulk MB/s), the text table with the batches' rows, everything it made
under --dir removed afterwards (the directory it had to create too), and
bad options refused with a message naming them, nothing made.  Runs are
1 s per commit run and 8 MiB of bulk writes: a check of the report, not a
measurement (figures are not compared against any bound).
"""

import json
import re

import pytest

from conftest import run

SHORT = ["--seconds", "1", "--mib", "8", "--threads", "2"]
PHASES = ("queued_us", "written_us", "durable_us", "total_us")


def bench(sixfold_bin, d, *args):
    r = run([sixfold_bin, "bench-volume", "--dir", d, *SHORT, *args],
            timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def ordered(lat):
    return lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_json_report(sixfold_bin, tmp_path):
    d = tmp_path / "made" / "by-bench"
    rep = json.loads(bench(sixfold_bin, d, "--json"))
    assert rep["threads"] == 2 and rep["seconds"] == 1 and rep["mib"] == 8
    for name in ("sync_1", "sync_t"):
        vol, plain = rep[name]["sixfold"], rep[name]["plain"]
        assert vol["commits"] > 0 and vol["commits_per_s"] > 0
        assert 0 < vol["p50_us"] <= vol["p99_us"]
        assert plain["commits"] > 0
        assert 0 < plain["q4_p50_us"] <= plain["p50_us"] <= plain["p99_us"]
        # The figures are this run's batches only, each carrying at
        # least one of its commits.
        assert 0 < vol["batches"] <= vol["commits"]
        for p in PHASES:
            assert ordered(vol[p]), (name, p, vol[p])
        for k in ("p50", "p90", "p99", "max"):
            assert vol["written_us"][k] <= vol["durable_us"][k]
            assert vol["durable_us"][k] <= vol["total_us"][k]
    # One committer: every batch is one commit.
    assert rep["sync_1"]["sixfold"]["batches"] == \
        rep["sync_1"]["sixfold"]["commits"]
    bulk = rep["bulk"]
    assert bulk["sixfold_mb_per_s"] > 0 and bulk["plain_mb_per_s"] > 0
    assert not d.exists() and not d.parent.exists()


def test_text_table(sixfold_bin, tmp_path):
    out = bench(sixfold_bin, tmp_path / "b")
    assert out.count("sixfold's batches (us)") == 2, out
    for row in ("queued", r"written \(4 of 6\)", r"durable \(4 of 6\)"):
        rows = re.findall(rf"^\s+{row}\s+(\d+)\s+(\d+)$", out, re.M)
        assert len(rows) == 2, (row, out)
        assert all(int(p50) <= int(p99) for p50, p99 in rows), rows
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,word", [
    (["--seconds", "0"], "--seconds"),
    (["--threads", "65"], "--threads"),
    (["--mib", "lots"], "--mib"),
    (["--bogus"], "--bogus"),
])
def test_bad_options(sixfold_bin, tmp_path, args, word):
    d = tmp_path / "b"
    r = run([sixfold_bin, "bench-volume", "--dir", d, *args])
    assert r.returncode == 64, r
    assert word in r.stderr
    assert "usage" in r.stderr or "give a whole number" in r.stderr
    assert not d.exists()
