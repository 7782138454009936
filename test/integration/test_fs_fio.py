"""fio with data verification over a mounted sixfold filesystem.

Each case has fio write a file with random writes, every block carrying a
crc32c header, then read the whole file back and check every block
(--do_verify=1 --verify_fatal=1): the filesystem returns what was written,
through the page cache (buffered) and around it (--direct=1), with the
synchronous (psync) and the io_uring engines, and with block sizes from
4 KiB to 1 MiB mixed in one file.  A last case writes 8 KiB blocks with an
fsync after every write (--fsync=1), the pattern of a database's log.

Proves: no write is lost, torn, misplaced or mixed with another one, for
each I/O path the kernel can take into a FUSE filesystem.
"""

import json
import re

import pytest

from conftest import run

FIO = "/usr/bin/fio"
FIO_TIMEOUT = 600  # seconds for one fio run on a slow mount
VERIFY_ERROR = re.compile(
    r"verify failed|verify:|bad magic|bad header|mismatch|verify.*error",
    re.IGNORECASE)


def fio(mounted, tmp_path, name, *args):
    """Run one fio job named `name` in a fresh directory of the mount and
    check that it passed its verification; returns the job's JSON."""
    workdir = mounted.path / f"fio-{name}"
    workdir.mkdir()
    out = tmp_path / f"{name}.json"
    cmd = [FIO, f"--name={name}", f"--directory={workdir}",
           "--filename=data", "--group_reporting",
           "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
           "--verify_state_save=0",  # no *-verify.state file in the cwd
           "--output-format=json", f"--output={out}", *args]
    r = run(cmd, timeout=FIO_TIMEOUT)
    text = out.read_text() if out.exists() else ""
    detail = (f"fio {name} exit {r.returncode}\nstdout: {r.stdout}\n"
              f"stderr: {r.stderr}\noutput: {text[-4000:]}")
    assert r.returncode == 0, detail
    # fio reports verification failures ("crc32c: verify failed", "verify:
    # bad magic header", "verify type mismatch") on stderr; the JSON holds
    # options named verify, so only its error fields are read there.
    for stream in (r.stderr, r.stdout):
        assert not VERIFY_ERROR.search(stream), detail
    data = json.loads(text[text.index("{"):])
    jobs = data["jobs"]
    assert jobs, detail
    for job in jobs:
        assert job["error"] == 0, detail
        # Every byte written was read back in the verify phase.
        assert job["write"]["io_bytes"] > 0, detail
        assert job["read"]["io_bytes"] >= job["write"]["io_bytes"], detail
    return jobs[0]


# (engine, direct, block sizes): the four combinations of the two engines
# and the two paths, each with its own mix of 4k, 64k and 1M blocks.
CASES = [
    pytest.param("psync", 0, "4k/60:64k/30:1m/10", id="psync-buffered"),
    pytest.param("psync", 1, "4k/20:64k/50:1m/30", id="psync-direct"),
    pytest.param("io_uring", 0, "64k/60:1m/40", id="io_uring-buffered"),
    pytest.param("io_uring", 1, "4k/50:1m/50", id="io_uring-direct"),
]


@pytest.mark.parametrize("engine,direct,bssplit", CASES)
def test_fio_randwrite_verify(mounted, tmp_path, engine, direct, bssplit):
    """64 MiB of random writes (block sizes mixed per case) with one
    engine and one I/O path, then every block is read back and its crc32c
    checked: all of it comes back exactly as written."""
    args = [f"--ioengine={engine}", f"--direct={direct}",
            "--rw=randwrite", f"--bssplit={bssplit}", "--size=64M"]
    if engine == "io_uring":
        args += ["--iodepth=16"]
    fio(mounted, tmp_path, f"{engine}-d{direct}", *args)


def test_fio_fsync_small_writes(mounted, tmp_path):
    """8 KiB random writes with an fsync after every one (--fsync=1) on
    an 8 MiB file, then verified: the fsync path keeps each write whole
    and in its place."""
    job = fio(mounted, tmp_path, "fsync", "--ioengine=psync", "--direct=0",
              "--rw=randwrite", "--bs=8k", "--size=8M", "--fsync=1")
    # fio issued the fsyncs (its sync counters exist from fio 3.x).
    sync = job.get("sync", {})
    if "total_ios" in sync:
        assert sync["total_ios"] > 0, json.dumps(sync)
