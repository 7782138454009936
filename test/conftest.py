"""Shared pytest fixtures and helpers for sixfold's integration and fault tests.

`make test-int` builds first and exports SIXFOLD_BIN (the sixfold program)
and SIXFOLD_TOOLS (the directory of test/tools programs); run by hand,
the defaults point into <repo>/build.  Every subprocess has a wall-clock
limit (no pytest-timeout on Debian 12): use run(), not subprocess directly.
"""

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 120  # seconds, for any one command
NZONES = 6


def run(cmd, timeout=DEFAULT_TIMEOUT, **kw):
    """Run cmd (a list) with a timeout; return the CompletedProcess.

    Output is captured as text unless stdout/stderr are given; stdin is
    /dev/null unless stdin/input are given, so nothing waits on a prompt.
    The command line is printed first, so a failing test shows how to
    reproduce it.  check=True raises CalledProcessError as usual.
    """
    cmd = [str(c) for c in cmd]
    if "stdout" not in kw and "stderr" not in kw:
        kw.setdefault("capture_output", True)
    if "stdin" not in kw and "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    kw.setdefault("text", True)
    print("+", shlex.join(cmd))
    return subprocess.run(cmd, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def sixfold_bin():
    """Path of the sixfold program; skips the test if it is not built."""
    path = pathlib.Path(os.environ.get("SIXFOLD_BIN",
                                       REPO / "build" / "sixfold"))
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


@pytest.fixture(scope="session")
def tools_dir():
    """Directory holding the test/tools programs (build/tools)."""
    return pathlib.Path(os.environ.get("SIXFOLD_TOOLS",
                                       REPO / "build" / "tools"))


@pytest.fixture
def zones(tmp_path):
    """Six empty zone directories, tmp_path/zone0 .. zone5, as a list."""
    paths = [tmp_path / f"zone{i}" for i in range(NZONES)]
    for p in paths:
        p.mkdir()
    return paths
