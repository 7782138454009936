"""The POSIX suite shares one mount per test file (a mkfs and a mount per
test would cost more than the tests): each test gets a fresh directory of
it as its `mounted.path`; the shared mount is fsck'ed at the end of the
file (test/conftest.py, shared_mount)."""

import itertools
import os

import pytest


class SubMount:
    """The `mounted` a POSIX test sees: `path` is its own directory."""

    def __init__(self, mount, path):
        self.mount = mount
        self.path = path
        self.fallback = mount.fallback


_count = itertools.count()


@pytest.fixture
def mounted(shared_mount):
    path = shared_mount.path / f"t{next(_count)}"
    path.mkdir()
    os.chmod(path, 0o755)
    return SubMount(shared_mount, path)
