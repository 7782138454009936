"""Permissions, ownership and setattr of mode/owner on the mounted
filesystem.  The non-root parts run in a forked child that dropped to
nobody/nogroup (uid/gid 65534, no supplementary groups unless a test
adds one), see posix_util.as_user; it chdir()s into a world-accessible
directory of the mount first, then works with relative paths.

Covers: chmod of all 12 mode bits (ctime, not mtime), chown/lchown as
root (-1 keeps a field), the owner of new files, directories, nodes and
symlinks, setgid directories (group and setgid bit passed on), clearing
of set-user-ID / set-group-ID on write, truncate, open(O_TRUNC),
fallocate and chown (and when Linux keeps set-group-ID), removal of a
file capability on write, chmod by a non-member clearing set-group-ID,
sticky directories (EPERM for unlink/rename/rmdir of another user's
entry), permission classes (owner bits win over group and other, mode
000 -> EACCES, root overrides), chmod/chown by non-owners (EPERM),
directory search / read / write permission (EACCES), utimensat
permission rules, mknod of devices by non-root (EPERM), access(2).
"""

import errno
import os
import stat
import struct

import pytest

from posix_util import mounted  # noqa: F401  (the shared mount)
from posix_util import (NOBODY, NOGROUP, UTIME_NOW, UTIME_OMIT, as_user,
                        clock_tick, errno_as_user, mkdir, read_file, umask,
                        needs_root, utimensat, workdir, write_file)

pytestmark = needs_root

OTHER_UID = 4242  # an unprivileged user that is not nobody
OTHER_GID = 4242


def shared(mounted, name="shared", mode=0o777):
    """A directory of the mount that nobody can enter and write."""
    return workdir(mounted, name, mode)


def mode_of(path):
    return os.lstat(path).st_mode


def write_y(name):
    """Write b"y" at the start of the existing file name."""
    fd = os.open(name, os.O_WRONLY)
    try:
        os.write(fd, b"y")
    finally:
        os.close(fd)


# ---- setattr as root -----------------------------------------------------

@pytest.mark.parametrize("kind", ["file", "dir"])
def test_chmod_sets_exact_bits(mounted, kind):
    """chmod stores exactly the 12 permission bits given (incl. setuid,
    setgid, sticky and 0), keeps the file type, changes ctime and not
    mtime."""
    d = workdir(mounted)
    p = d / "x"
    if kind == "file":
        write_file(p, b"x")
        fmt = stat.S_IFREG
    else:
        os.mkdir(p)
        fmt = stat.S_IFDIR
    for mode in (0o7777, 0, 0o4755, 0o2750, 0o1777, 0o640, 0o111, 0o6000):
        before = os.stat(p)
        clock_tick()
        os.chmod(p, mode)
        after = os.stat(p)
        assert after.st_mode == fmt | mode, oct(mode)
        assert after.st_ctime_ns > before.st_ctime_ns
        assert after.st_mtime_ns == before.st_mtime_ns


def test_chown_as_root(mounted):
    """Root may chown to any uid/gid; -1 leaves that field as it is;
    chown changes ctime and not mtime; fchown works through an fd."""
    d = workdir(mounted)
    write_file(d / "f", b"x", mode=0o644)
    before = os.stat(d / "f")
    clock_tick()
    os.chown(d / "f", 1234, 5678)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_ctime_ns > before.st_ctime_ns
    assert st.st_mtime_ns == before.st_mtime_ns
    os.chown(d / "f", -1, 42)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (1234, 42)
    os.chown(d / "f", 7, -1)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (7, 42)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.fchown(fd, 4000000000, 4000000001)  # large 32-bit ids
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (4000000000, 4000000001)
    os.mkdir(d / "dir")
    os.chown(d / "dir", 99, 98)
    st = os.stat(d / "dir")
    assert (st.st_uid, st.st_gid) == (99, 98)


def test_chown_clears_setuid_setgid(mounted):
    """chown of a regular file, even by root, clears set-user-ID, and
    set-group-ID when group-execute is set; set-group-ID without
    group-execute stays (root is capable); a directory keeps both."""
    d = workdir(mounted)
    write_file(d / "f", b"x", mode=0o6755)
    os.chown(d / "f", 1000, 1000)
    assert mode_of(d / "f") == stat.S_IFREG | 0o755
    write_file(d / "g", b"x", mode=0o6745)
    os.chown(d / "g", 1000, 1000)
    assert mode_of(d / "g") == stat.S_IFREG | 0o2745
    mkdir(d / "dir", 0o6755)
    os.chown(d / "dir", 1000, 1000)
    assert mode_of(d / "dir") == stat.S_IFDIR | 0o6755


def test_root_overrides_permission_bits(mounted):
    """Root (CAP_DAC_OVERRIDE) reads and writes a mode 000 file, lists a
    mode 000 directory and creates entries in a mode 0555 directory."""
    d = workdir(mounted)
    write_file(d / "f", b"secret", mode=0)
    assert read_file(d / "f") == b"secret"
    with open(d / "f", "ab") as f:
        f.write(b"!")
    mkdir(d / "locked", 0)
    write_file(d / "locked" / "x")
    assert os.listdir(d / "locked") == ["x"]
    mkdir(d / "ro", 0o555)
    write_file(d / "ro" / "y")
    assert os.listdir(d / "ro") == ["y"]


# ---- ownership of new objects --------------------------------------------

def test_new_objects_owned_by_caller(mounted):
    """Files, directories, FIFOs, sockets and symlinks created by a
    non-root user are owned by that user's uid and gid; a hard link keeps
    the original owner."""
    d = shared(mounted)
    write_file(d / "rootfile", b"r", mode=0o666)  # linkable by anyone

    def create():
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644))
        os.mkdir("dir")
        os.mkfifo("fifo")
        os.mknod("sock", stat.S_IFSOCK | 0o600)
        os.symlink("f", "sl")
        os.link("rootfile", "hl")
    as_user(create, cwd=d)
    for name in ("f", "dir", "fifo", "sock", "sl"):
        st = os.lstat(d / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOGROUP), name
    st = os.lstat(d / "hl")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_setgid_directory_inheritance(mounted):
    """In a set-group-ID directory new entries get the directory's group
    (not the creator's); new subdirectories also get the set-group-ID
    bit; outside it the creator's gid is used."""
    d = shared(mounted)
    sg = mkdir(d / "sg", 0o2777)
    os.chown(sg, 0, OTHER_GID)
    os.chmod(sg, 0o2777)  # exactly 2777 whatever chown did

    def create():
        os.close(os.open("sg/f", os.O_CREAT | os.O_WRONLY, 0o644))
        os.mkdir("sg/sub", 0o755)
        os.mkfifo("sg/fifo", 0o644)
        os.symlink("f", "sg/sl")
        os.mkdir("sg/sub/deeper", 0o755)
        os.close(os.open("plain", os.O_CREAT | os.O_WRONLY, 0o644))
    with umask(0o022):
        as_user(create, cwd=d)
    for name in ("f", "fifo", "sl", "sub", "sub/deeper"):
        st = os.lstat(sg / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, OTHER_GID), name
    assert mode_of(sg / "f") == stat.S_IFREG | 0o644
    assert mode_of(sg / "sub") == stat.S_IFDIR | 0o2755
    assert mode_of(sg / "sub" / "deeper") == stat.S_IFDIR | 0o2755
    assert os.stat(d / "plain").st_gid == NOGROUP
    write_file(sg / "byroot")
    assert os.stat(sg / "byroot").st_gid == OTHER_GID


def test_setgid_stripped_on_create_by_non_member(mounted):
    """A non-member creating a file with set-group-ID and group-execute
    in a set-group-ID directory owned by another group loses the
    set-group-ID bit (Linux)."""
    d = shared(mounted)
    sg = mkdir(d / "sg", 0o2777)
    os.chown(sg, 0, OTHER_GID)
    os.chmod(sg, 0o2777)

    def create():
        os.close(os.open("sg/f", os.O_CREAT | os.O_WRONLY, 0o2775))
    with umask(0):
        as_user(create, cwd=d)
    st = os.stat(sg / "f")
    assert st.st_gid == OTHER_GID
    assert st.st_mode == stat.S_IFREG | 0o775


# ---- clearing set-user-ID / set-group-ID ---------------------------------

def test_write_by_non_root_clears_setuid_setgid(mounted):
    """A write by a user without CAP_FSETID clears set-user-ID, and
    set-group-ID when group-execute is set or the writer is not in the
    file's group; set-group-ID without group-execute is kept for a
    writer in the file's group (Linux)."""
    d = shared(mounted)
    write_file(d / "both", b"x", mode=0o6777)
    write_file(d / "nogx", b"x", mode=0o6767)
    write_file(d / "nogx_member", b"x")
    os.chown(d / "nogx_member", 0, NOGROUP)
    os.chmod(d / "nogx_member", 0o6767)
    for name in ("both", "nogx", "nogx_member"):
        as_user(write_y, name, cwd=d)
    assert mode_of(d / "both") == stat.S_IFREG | 0o777
    # Linux's own filesystems also drop set-group-ID here (the writer is
    # not in the file's group); through FUSE the kernel drops it only with
    # group-execute set (fuse_setattr), and POSIX allows either ("may be
    # cleared"), so both are accepted.
    assert mode_of(d / "nogx") in (stat.S_IFREG | 0o767,
                                   stat.S_IFREG | 0o2767)
    assert mode_of(d / "nogx_member") == stat.S_IFREG | 0o2767
    assert read_file(d / "both") == b"y"


def test_write_by_root_keeps_setuid_setgid(mounted):
    """A write by root (CAP_FSETID) keeps set-user-ID and set-group-ID."""
    d = workdir(mounted)
    write_file(d / "f", b"x", mode=0o6755)
    with open(d / "f", "r+b") as f:
        f.write(b"root write")
    assert mode_of(d / "f") == stat.S_IFREG | 0o6755


def test_truncate_by_non_root_clears_setuid(mounted):
    """truncate by a user without CAP_FSETID clears set-user-ID and
    set-group-ID (group-execute set) like a write."""
    d = shared(mounted)
    write_file(d / "f", b"0123456789", mode=0o6777)
    as_user(os.truncate, "f", 3, cwd=d)
    assert mode_of(d / "f") == stat.S_IFREG | 0o777
    assert read_file(d / "f") == b"012"


def test_open_trunc_by_non_root_clears_setuid(mounted):
    """open(O_TRUNC) by a user without CAP_FSETID clears set-user-ID and
    set-group-ID (group-execute set), as truncate does."""
    d = shared(mounted)
    write_file(d / "f", b"0123456789", mode=0o6777)

    def trunc(name):
        os.close(os.open(name, os.O_WRONLY | os.O_TRUNC))
    as_user(trunc, "f", cwd=d)
    assert mode_of(d / "f") == stat.S_IFREG | 0o777
    assert read_file(d / "f") == b""


def test_fallocate_by_non_root_clears_setuid(mounted):
    """fallocate by a user without CAP_FSETID clears set-user-ID and
    set-group-ID (group-execute set); by root it keeps them."""
    d = shared(mounted)
    write_file(d / "f", b"x", mode=0o6777)
    write_file(d / "g", b"x", mode=0o6777)

    def falloc(name):
        fd = os.open(name, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, 65536)
        finally:
            os.close(fd)
    as_user(falloc, "f", cwd=d)
    assert mode_of(d / "f") == stat.S_IFREG | 0o777
    assert os.stat(d / "f").st_size == 65536
    falloc(d / "g")
    assert mode_of(d / "g") == stat.S_IFREG | 0o6777


CAPS = "security.capability"
# struct vfs_cap_data, revision 2: CAP_NET_BIND_SERVICE permitted.
FILE_CAPS = struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0)


def test_write_removes_file_capability(mounted):
    """A write removes a file capability, by another user as by root, also
    after writes that found none (the kernel then stops looking until
    the file's attributes change: a capability set is such a change)."""
    d = shared(mounted)
    write_file(d / "f", b"x", mode=0o777)
    for who in ("nobody", "root"):
        as_user(write_y, "f", cwd=d)  # finds no capability
        os.setxattr(d / "f", CAPS, FILE_CAPS)
        assert os.getxattr(d / "f", CAPS) == FILE_CAPS
        if who == "root":
            write_y(d / "f")
        else:
            as_user(write_y, "f", cwd=d)
        with pytest.raises(OSError) as e:
            os.getxattr(d / "f", CAPS)
        assert e.value.errno == errno.ENODATA, who
    assert read_file(d / "f") == b"y"


def test_chmod_setgid_by_non_member_is_cleared(mounted):
    """The owner may chmod their file, but a set-group-ID bit is silently
    dropped when they are not in the file's group; kept when they are
    (a supplementary group)."""
    d = shared(mounted)
    write_file(d / "f", b"x", mode=0o644)
    os.chown(d / "f", NOBODY, OTHER_GID)
    as_user(os.chmod, "f", 0o2755, cwd=d)
    assert mode_of(d / "f") == stat.S_IFREG | 0o755
    as_user(os.chmod, "f", 0o4755, cwd=d)
    assert mode_of(d / "f") == stat.S_IFREG | 0o4755
    as_user(os.chmod, "f", 0o2755, cwd=d, groups=[OTHER_GID])
    assert mode_of(d / "f") == stat.S_IFREG | 0o2755


# ---- sticky directories --------------------------------------------------

def _sticky_setup(mounted, owner=0):
    d = shared(mounted)
    t = mkdir(d / "tmp", 0o1777)
    os.chown(t, owner, owner)
    os.chmod(t, 0o1777)
    write_file(t / "theirs", b"theirs", mode=0o666)
    os.chown(t / "theirs", OTHER_UID, OTHER_GID)
    mkdir(t / "theirdir", 0o777)
    os.chown(t / "theirdir", OTHER_UID, OTHER_GID)
    return d, t


def test_sticky_dir_protects_other_users_entries(mounted):
    """In a sticky (1777) directory a user who owns neither the entry nor
    the directory cannot unlink it, rename it away, replace it by rename
    or rmdir it: EPERM; they may still write its data (mode 0666) and
    remove their own files."""
    d, t = _sticky_setup(mounted)

    def attempt():
        out = {}
        for name, fn in (
                ("unlink", lambda: os.unlink("tmp/theirs")),
                ("rename-away", lambda: os.rename("tmp/theirs", "tmp/x")),
                ("rename-out", lambda: os.rename("tmp/theirs", "stolen")),
                ("rmdir", lambda: os.rmdir("tmp/theirdir")),
                ("rename-dir", lambda: os.rename("tmp/theirdir", "tmp/y"))):
            try:
                fn()
                out[name] = 0
            except OSError as e:
                out[name] = e.errno
        os.close(os.open("tmp/mine", os.O_CREAT | os.O_WRONLY, 0o644))
        try:
            os.rename("tmp/mine", "tmp/theirs")
            out["replace"] = 0
        except OSError as e:
            out["replace"] = e.errno
        with open("tmp/theirs", "ab") as f:
            f.write(b"+mine")
        os.unlink("tmp/mine")
        return out
    res = as_user(attempt, cwd=d)
    assert res == {"unlink": errno.EPERM, "rename-away": errno.EPERM,
                   "rename-out": errno.EPERM, "rmdir": errno.EPERM,
                   "rename-dir": errno.EPERM, "replace": errno.EPERM}
    assert sorted(os.listdir(t)) == ["theirdir", "theirs"]
    assert read_file(t / "theirs") == b"theirs+mine"


def test_sticky_dir_owner_may_remove(mounted):
    """The owner of a sticky directory may unlink and rename other users'
    entries in it."""
    d, t = _sticky_setup(mounted, owner=NOBODY)

    def remove():
        os.rename("tmp/theirs", "tmp/renamed")
        os.unlink("tmp/renamed")
        os.rmdir("tmp/theirdir")
    as_user(remove, cwd=d)
    assert os.listdir(t) == []


def test_non_sticky_dir_allows_removal(mounted):
    """Without the sticky bit, write+search permission on the directory
    is enough to unlink another user's file."""
    d = shared(mounted)
    write_file(d / "theirs", b"x", mode=0o600)
    os.chown(d / "theirs", OTHER_UID, OTHER_GID)
    as_user(os.unlink, "theirs", cwd=d)
    assert os.listdir(d) == []


# ---- permission classes --------------------------------------------------

def test_mode_000_file_eacces(mounted):
    """A mode 000 file cannot be opened by a non-root user, for reading
    or writing, even by its owner: EACCES."""
    d = shared(mounted)
    write_file(d / "rootfile", b"x", mode=0)
    write_file(d / "own", b"x", mode=0)
    os.chown(d / "own", NOBODY, NOGROUP)
    for name in ("rootfile", "own"):
        for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
            assert errno_as_user(os.open, name, flags, cwd=d) == \
                errno.EACCES, (name, flags)


def test_owner_class_bits_take_precedence(mounted):
    """Only one class of bits applies: the owner's when the caller owns
    the file (even if group/other would allow more), else the group's
    when the caller is in the file's group, else other's."""
    d = shared(mounted)
    write_file(d / "owner_none", b"x", mode=0o077)
    os.chown(d / "owner_none", NOBODY, 0)
    write_file(d / "group_none", b"x", mode=0o604)
    os.chown(d / "group_none", 0, NOGROUP)
    write_file(d / "group_read", b"g", mode=0o640)
    os.chown(d / "group_read", 0, NOGROUP)
    write_file(d / "other_read", b"o", mode=0o604)

    def rd(name):
        with open(name, "rb") as f:
            return f.read()
    assert errno_as_user(rd, "owner_none", cwd=d) == errno.EACCES
    assert errno_as_user(rd, "group_none", cwd=d) == errno.EACCES
    assert as_user(rd, "group_read", cwd=d) == b"g"
    assert as_user(rd, "other_read", cwd=d) == b"o"
    assert errno_as_user(os.open, "other_read", os.O_WRONLY,
                         cwd=d) == errno.EACCES


def test_access_syscall(mounted):
    """access(2) for a non-root user answers from the permission bits."""
    d = shared(mounted)
    write_file(d / "r", b"", mode=0o604)
    write_file(d / "rw", b"", mode=0o606)
    write_file(d / "x", b"", mode=0o705)

    def check():
        return [os.access(n, m) for n, m in (
            ("r", os.R_OK), ("r", os.W_OK), ("rw", os.W_OK),
            ("rw", os.X_OK), ("x", os.X_OK), ("x", os.R_OK | os.X_OK),
            ("missing", os.F_OK), ("r", os.F_OK))]
    assert as_user(check, cwd=d) == [True, False, True, False, True, True,
                                     False, True]


# ---- chmod / chown by non-owners -----------------------------------------

def test_chmod_by_non_owner_eperm(mounted):
    """chmod by a user who does not own the file is EPERM, even with
    write permission on it; the owner may chmod."""
    d = shared(mounted)
    write_file(d / "rootfile", b"x", mode=0o666)
    assert errno_as_user(os.chmod, "rootfile", 0o777, cwd=d) == errno.EPERM
    assert mode_of(d / "rootfile") == stat.S_IFREG | 0o666
    write_file(d / "own", b"x", mode=0o644)
    os.chown(d / "own", NOBODY, NOGROUP)
    as_user(os.chmod, "own", 0o4700, cwd=d)
    assert mode_of(d / "own") == stat.S_IFREG | 0o4700


def test_chown_by_non_root(mounted):
    """A non-root owner cannot give a file away (EPERM) nor set a group
    they are not in (EPERM); chown to their own uid/gid is allowed, and
    so is chgrp to a supplementary group; chown of another user's file
    is EPERM."""
    d = shared(mounted)
    write_file(d / "own", b"x", mode=0o644)
    os.chown(d / "own", NOBODY, NOGROUP)
    write_file(d / "rootfile", b"x", mode=0o666)
    assert errno_as_user(os.chown, "own", 0, -1, cwd=d) == errno.EPERM
    assert errno_as_user(os.chown, "own", OTHER_UID, -1,
                         cwd=d) == errno.EPERM
    assert errno_as_user(os.chown, "own", -1, 0, cwd=d) == errno.EPERM
    assert errno_as_user(os.chown, "rootfile", NOBODY, -1,
                         cwd=d) == errno.EPERM
    as_user(os.chown, "own", NOBODY, NOGROUP, cwd=d)
    as_user(os.chown, "own", -1, OTHER_GID, cwd=d, groups=[OTHER_GID])
    st = os.stat(d / "own")
    assert (st.st_uid, st.st_gid) == (NOBODY, OTHER_GID)
    st = os.stat(d / "rootfile")
    assert (st.st_uid, st.st_gid) == (0, 0)


# ---- directory permissions -----------------------------------------------

def test_directory_search_permission(mounted):
    """Without search (x) permission on a directory, nothing below it
    can be looked up, opened or entered: EACCES; with x but no r the
    names are reachable but the directory cannot be listed (EACCES)."""
    d = shared(mounted)
    mkdir(d / "noexec", 0o776)
    write_file(d / "noexec" / "f", b"f", mode=0o644)
    mkdir(d / "execonly", 0o711)
    write_file(d / "execonly" / "f", b"eo", mode=0o644)

    def probe():
        out = {}
        for name, fn in (
                ("stat", lambda: os.stat("noexec/f")),
                ("open", lambda: os.open("noexec/f", os.O_RDONLY)),
                ("chdir", lambda: os.chdir("noexec")),
                ("create", lambda: os.open("noexec/new",
                                           os.O_CREAT | os.O_WRONLY)),
                ("list-x-only", lambda: os.listdir("execonly"))):
            try:
                fn()
                out[name] = 0
            except OSError as e:
                out[name] = e.errno
        with open("execonly/f", "rb") as f:
            out["read-x-only"] = f.read()
        return out
    assert as_user(probe, cwd=d) == {
        "stat": errno.EACCES, "open": errno.EACCES, "chdir": errno.EACCES,
        "create": errno.EACCES, "list-x-only": errno.EACCES,
        "read-x-only": b"eo"}
    assert os.listdir(d / "noexec") == ["f"]


def test_directory_write_permission(mounted):
    """Without write permission on a directory a non-root user cannot
    create, unlink, rename or mkdir/rmdir in it: EACCES; the entries are
    unchanged."""
    d = shared(mounted)
    ro = mkdir(d / "ro", 0o755)
    write_file(ro / "f", b"f", mode=0o666)
    mkdir(ro / "sub", 0o777)

    def probe():
        out = {}
        for name, fn in (
                ("create", lambda: os.open("ro/new",
                                           os.O_CREAT | os.O_WRONLY)),
                ("unlink", lambda: os.unlink("ro/f")),
                ("rename", lambda: os.rename("ro/f", "ro/g")),
                ("rename-out", lambda: os.rename("ro/f", "moved")),
                ("mkdir", lambda: os.mkdir("ro/newdir")),
                ("rmdir", lambda: os.rmdir("ro/sub")),
                ("symlink", lambda: os.symlink("x", "ro/sl")),
                ("mkfifo", lambda: os.mkfifo("ro/fifo"))):
            try:
                fn()
                out[name] = 0
            except OSError as e:
                out[name] = e.errno
        return out
    res = as_user(probe, cwd=d)
    assert res == dict.fromkeys(res, errno.EACCES)
    assert len(res) == 8
    assert sorted(os.listdir(ro)) == ["f", "sub"]
    # the file itself is writable: only the directory is read-only
    as_user(lambda: open("ro/f", "ab").close(), cwd=d)


def test_open_directory_requires_read(mounted):
    """Opening a directory for reading needs read permission: EACCES
    without it."""
    d = shared(mounted)
    mkdir(d / "wx", 0o733)
    assert errno_as_user(os.open, "wx", os.O_RDONLY | os.O_DIRECTORY,
                         cwd=d) == errno.EACCES


# ---- times and special files ---------------------------------------------

def test_utimensat_permission_rules(mounted):
    """Setting both times to now needs ownership or write permission
    (else EACCES); setting explicit times, or only one of them, needs
    ownership (else EPERM), even with write permission."""
    d = shared(mounted)
    write_file(d / "writable", b"x", mode=0o666)
    write_file(d / "readonly", b"x", mode=0o644)
    write_file(d / "own", b"x", mode=0o444)
    os.chown(d / "own", NOBODY, NOGROUP)
    t = 1_500_000_000_000_000_000

    assert errno_as_user(utimensat, "writable", UTIME_NOW, UTIME_NOW,
                         cwd=d) == 0
    assert errno_as_user(utimensat, "writable", t, t, cwd=d) == errno.EPERM
    assert errno_as_user(utimensat, "writable", UTIME_NOW, UTIME_OMIT,
                         cwd=d) == errno.EPERM
    assert errno_as_user(utimensat, "readonly", UTIME_NOW, UTIME_NOW,
                         cwd=d) == errno.EACCES
    assert errno_as_user(utimensat, "readonly", t, t, cwd=d) == errno.EPERM
    assert errno_as_user(utimensat, "own", t, t + 1, cwd=d) == 0
    st = os.stat(d / "own")
    assert (st.st_atime_ns, st.st_mtime_ns) == (t, t + 1)
    assert errno_as_user(utimensat, "own", UTIME_NOW, UTIME_NOW, cwd=d) == 0


def test_mknod_device_by_non_root_eperm(mounted):
    """A non-root user (no CAP_MKNOD) cannot make char or block device
    nodes: EPERM; FIFOs and sockets are allowed."""
    d = shared(mounted)

    def make():
        out = []
        for fmt in (stat.S_IFCHR, stat.S_IFBLK):
            try:
                os.mknod("dev", fmt | 0o600, os.makedev(1, 3))
                out.append(0)
            except OSError as e:
                out.append(e.errno)
        os.mknod("fifo", stat.S_IFIFO | 0o600)
        os.mknod("sock", stat.S_IFSOCK | 0o600)
        return out
    assert as_user(make, cwd=d) == [errno.EPERM, errno.EPERM]
    assert sorted(os.listdir(d)) == ["fifo", "sock"]


def test_truncate_needs_write_permission(mounted):
    """truncate by a user without write permission on the file is
    EACCES and leaves the size."""
    d = shared(mounted)
    write_file(d / "f", b"0123456789", mode=0o644)
    assert errno_as_user(os.truncate, "f", 0, cwd=d) == errno.EACCES
    assert os.stat(d / "f").st_size == 10
