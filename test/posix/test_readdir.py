"""opendir/readdir/getdents, telldir/seekdir on the mounted filesystem.

Covers: '.' and '..' returned exactly once with the right d_ino, exact
contents with d_ino and d_type for every file type, hundreds of entries
(long names, listing in many small getdents calls) with exact contents
after creates and unlinks, rewinddir seeing changes, telldir/seekdir
positions that stay valid (also after unrelated entries come and go),
listings under concurrent create/unlink by another thread (each entry
that exists throughout is returned exactly once, no name twice), and
reading a removed directory (ENOENT, Linux).
"""

import errno
import os
import random
import stat
import threading

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (DT_DIR, DirStream, dt_of_mode, getdents,
                        needs_root, raises_errno, workdir, write_file)


def names_of(entries):
    return [e[0] for e in entries]


def assert_no_duplicates(names):
    seen, dups = set(), set()
    for n in names:
        (dups if n in seen else seen).add(n)
    assert not dups, f"returned more than once: {sorted(dups)[:10]}"


def test_readdir_empty_directory(mounted):
    """An empty directory reads as exactly '.' and '..', once each, as
    directories, with d_ino of the directory and of its parent."""
    d = workdir(mounted)
    os.mkdir(d / "empty")
    with DirStream(d / "empty") as ds:
        ents = ds.read_all()
    assert sorted(names_of(ents)) == [b".", b".."]
    by_name = {e[0]: e for e in ents}
    assert by_name[b"."][1] == os.stat(d / "empty").st_ino
    assert by_name[b".."][1] == os.stat(d).st_ino
    assert by_name[b"."][2] == DT_DIR and by_name[b".."][2] == DT_DIR
    assert os.listdir(d / "empty") == []


@needs_root
def test_readdir_types_and_inodes(mounted):
    """Every entry is returned once with d_ino == lstat st_ino and the
    d_type of its file type (regular, directory, symlink, FIFO, socket,
    char and block device)."""
    d = workdir(mounted)
    os.mkdir(d / "dir")
    write_file(d / "reg", b"r")
    os.symlink("reg", d / "sym")
    os.mkfifo(d / "fifo")
    os.mknod(d / "sock", stat.S_IFSOCK | 0o600)
    os.mknod(d / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(d / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.link(d / "reg", d / "hardlink")
    with DirStream(d) as ds:
        ents = ds.read_all()
    names = names_of(ents)
    assert_no_duplicates(names)
    expect = sorted([b".", b"..", b"dir", b"reg", b"sym", b"fifo", b"sock",
                     b"chr", b"blk", b"hardlink"])
    assert sorted(names) == expect
    for name, ino, dtype in ents:
        if name in (b".", b".."):
            continue
        st = os.lstat(os.path.join(os.fsencode(d), name))
        assert ino == st.st_ino, name
        assert dtype == dt_of_mode(st.st_mode), name
    scanned = {e.name: e for e in os.scandir(d)}
    assert scanned["dir"].is_dir(follow_symlinks=False)
    assert scanned["sym"].is_symlink()
    assert scanned["reg"].inode() == scanned["hardlink"].inode()


def test_readdir_hundreds_of_entries(mounted):
    """600 entries with names of 1 to 255 bytes are all listed exactly
    once, by libc readdir and by getdents with a small buffer (many
    resumed calls); after unlinking every third, exactly the rest
    remain."""
    d = workdir(mounted)
    rng = random.Random(1234)
    names = set()
    while len(names) < 600:
        n = rng.randrange(1, 256)
        names.add(("%d-" % len(names) + "n" * n)[:n].encode()
                  if n > 4 else b"s%d" % len(names))
    names = sorted(names)
    bd = os.fsencode(d)
    for i, n in enumerate(names):
        if i % 10 == 0:
            os.mkdir(bd + b"/" + n)
        else:
            write_file(bd + b"/" + n)
    with DirStream(d) as ds:
        got = names_of(ds.read_all())
    assert_no_duplicates(got)
    assert sorted(got) == sorted(names + [b".", b".."])
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = names_of(getdents(fd, 1024))
    finally:
        os.close(fd)
    assert_no_duplicates(got)
    assert sorted(got) == sorted(names + [b".", b".."])
    for i, n in enumerate(names):
        if i % 3 == 0:
            (os.rmdir if i % 10 == 0 else os.unlink)(bd + b"/" + n)
    rest = [n for i, n in enumerate(names) if i % 3]
    assert sorted(os.listdir(bd)) == rest
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = names_of(getdents(fd, 512))
    finally:
        os.close(fd)
    assert sorted(got) == sorted(rest + [b".", b".."])


def test_rewinddir_sees_changes(mounted):
    """After rewinddir the stream reflects the directory's current
    contents: a file created since is listed, one removed is not."""
    d = workdir(mounted)
    for i in range(10):
        write_file(d / f"f{i}")
    with DirStream(d) as ds:
        first = sorted(names_of(ds.read_all()))
        write_file(d / "new")
        os.unlink(d / "f3")
        ds.rewind()
        second = sorted(names_of(ds.read_all()))
    assert b"new" not in first and b"f3" in first
    assert second == sorted([b".", b"..", b"new"]
                            + [b"f%d" % i for i in range(10) if i != 3])


def _positions(ds):
    """[(telldir before the read, entry name)] for the whole stream."""
    out = []
    while True:
        pos = ds.tell()
        ent = ds.read()
        if ent is None:
            return out
        out.append((pos, ent[0]))


def test_telldir_seekdir(mounted):
    """seekdir to a position telldir gave returns the same entry again,
    and reading on from there gives the same remaining sequence, for
    positions visited in random order."""
    d = workdir(mounted)
    for i in range(300):
        write_file(d / f"entry-{i:04d}-{'p' * (i % 50)}")
    rng = random.Random(99)
    with DirStream(d) as ds:
        pos = _positions(ds)
        names = [n for _, n in pos]
        assert_no_duplicates(names)
        assert len(names) == 302
        for i in rng.sample(range(len(pos)), 60):
            ds.seek(pos[i][0])
            assert ds.read()[0] == pos[i][1], f"position {i}"
        i = 137
        ds.seek(pos[i][0])
        assert names_of(ds.read_all()) == names[i:]
        ds.seek(pos[0][0])
        assert names_of(ds.read_all()) == names


def test_seekdir_survives_unrelated_changes(mounted):
    """A telldir position of an entry stays valid while other entries
    are created and removed: seekdir to it returns the same entry."""
    d = workdir(mounted)
    for i in range(200):
        write_file(d / f"keep-{i:03d}")
    for i in range(100):
        write_file(d / f"drop-{i:03d}")
    with DirStream(d) as ds:
        pos = _positions(ds)
        for i in range(100):
            os.unlink(d / f"drop-{i:03d}")
        for i in range(150):
            write_file(d / f"added-{i:03d}")
        kept = [(p, n) for p, n in pos if n.startswith(b"keep-")]
        assert len(kept) == 200
        for p, n in kept[::7]:
            ds.seek(p)
            assert ds.read()[0] == n
        # reading on from a kept entry never repeats a name
        ds.seek(kept[50][0])
        assert_no_duplicates(names_of(ds.read_all()))


def test_readdir_under_concurrent_create_unlink(mounted):
    """While another thread keeps creating and unlinking files (never
    reusing a name), every listing -- by getdents with a small buffer
    and by os.listdir -- returns each entry that existed throughout
    exactly once, '.' and '..' once, and no name twice."""
    d = workdir(mounted)
    stable = [b"stable-%03d-%s" % (i, b"x" * (i % 40)) for i in range(300)]
    bd = os.fsencode(d)
    for n in stable:
        write_file(bd + b"/" + n)
    stop = threading.Event()
    churn_errors = []
    churned = [0]

    def churn():
        i = 0
        try:
            while not stop.is_set():
                write_file(bd + b"/churn-%d" % i)
                if i >= 20:
                    os.unlink(bd + b"/churn-%d" % (i - 20))
                i += 1
        except Exception as e:  # reported by the main thread
            churn_errors.append(repr(e))
        churned[0] = i

    t = threading.Thread(target=churn)
    t.start()
    failures = []
    try:
        for it in range(40):
            if it % 2 == 0:
                fd = os.open(bd, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    names = names_of(getdents(fd, 768))
                finally:
                    os.close(fd)
            else:
                names = os.listdir(bd) + [b".", b".."]
            counts = {}
            for n in names:
                counts[n] = counts.get(n, 0) + 1
            dup = sorted(n for n, c in counts.items() if c > 1)
            missing = [n for n in stable + [b".", b".."] if n not in counts]
            strange = [n for n in counts if n not in (b".", b"..")
                       and not n.startswith((b"stable-", b"churn-"))]
            if dup or missing or strange:
                failures.append((it, dup[:5], missing[:5], strange[:5]))
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    assert churn_errors == []
    assert failures == []
    assert churned[0] > 0
    final = sorted(os.listdir(bd))
    assert [n for n in final if n.startswith(b"stable-")] == sorted(stable)


def test_readdir_of_removed_directory(mounted):
    """Reading a directory through an fd opened before it was removed
    fails with ENOENT (Linux)."""
    d = workdir(mounted)
    os.mkdir(d / "gone")
    fd = os.open(d / "gone", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d / "gone")
        with raises_errno(errno.ENOENT):
            getdents(fd)
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
