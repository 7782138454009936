#!/usr/bin/env python3
"""repair_bench.py - how fast a sixfold volume heals, and what healing
costs a running PostgreSQL.

One fresh volume (six zone directories under --workdir, one disk), mounted
with `sixfold mount -f --key-file K -o allow_other,scrub_rate=RATE`:

  (a) rebuild  --fill-mib MiB of random files are written through the
               mount (each fsync'ed) and a PGDATA (pgbench -i -s SCALE,
               made on the plain disk) copied in.  The zone to rebuild is
               first copied with a plain `cp -r ZONE/pg COPY` (+ sync) on
               the same disk, timed; then its directory is removed, and
               once status shows it offline an empty one is made in its
               place (or, with --replace-cmd, `sixfold zone replace MNT N
               NEWDIR`), and the time from then until `sixfold status
               --json MNT` shows every zone healthy is taken.
               Throughput = the zone's data (allocated bytes of its pg/
               segment and meta files, once they hold still) / that time,
               next to cp's (the same bytes / cp's time), and their
               ratio.
  (b) pgbench  PostgreSQL 15 (as the postgres user, fsync on) on the mount
               with pgbench -c 4 -j 2 running back to back (5 s runs, TPS
               sampled every second): TPS healthy (--seconds), TPS while
               another zone is rebuilt, TPS while a deep scrub runs
               (`sixfold scrub start --deep`, at the mount's scrub_rate),
               and their ratios to healthy.

Prints a table and writes the numbers as JSON to --out.  Everything it
starts or makes (PostgreSQL and pgbench, the sixfold daemon and mount, the
temporary directories) is stopped (by PID) and removed at the end, also
after a failure, Ctrl-C or SIGTERM.

Run as root:

  python3 test/bench/repair_bench.py --out /tmp/repair_bench.json

This is a benchmark, not a test: it asserts nothing about speed.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

from benchlib import MB, REPO, interrupt_on_sigterm, log
from conftest import Mount, run  # benchlib put test/ on sys.path
from lib import drill


def zone_data_bytes(zone):
    """Allocated bytes of a zone's pg/ (segments and metas)."""
    return drill.tree_bytes(pathlib.Path(zone) / "pg", "*")


def wait_healthy(m, timeout):
    return drill.wait_status(m, drill.all_healthy, timeout,
                             "every zone healthy", interval=0.2)


def replace_zone(m, z, use_cmd):
    """Zone z replaced by an empty directory; returns (its new path, the
    monotonic time the empty directory was handed over).  Without
    use_cmd: rm -rf, wait until status shows the zone offline, then
    mkdir (an empty directory made at once can be written into by the
    daemon before it notices, see test_drill4c)."""
    if use_cmd:
        new = m.base / f"zone{z}.r{int(time.time() * 1000)}"
        new.mkdir(mode=0o700)
        t0 = time.monotonic()
        r = run([m.sixfold, "zone", "replace", m.path, z, new])
        if r.returncode:
            raise RuntimeError(f"zone replace: {r.stdout}{r.stderr}")
        old = m.zones[z]
        m.zones[z] = new
        shutil.rmtree(old, ignore_errors=True)
        return new, t0
    shutil.rmtree(m.zones[z])
    drill.wait_status(m, lambda st: st["zones"][z]["state"] == "offline",
                      60, f"zone {z} offline", interval=0.1)
    m.zones[z].mkdir(mode=0o700)
    return m.zones[z], time.monotonic()


def bench_rebuild(m, z, args, res):
    """(a): cp -r of zone z's data, then its rebuild, timed."""
    zone = m.zones[z]
    # durable data reaches the segments in the background: wait until the
    # zone's size holds still
    src_bytes, since = -1, time.monotonic()
    while time.monotonic() - since < 3:
        b = zone_data_bytes(zone)
        if b != src_bytes:
            src_bytes, since = b, time.monotonic()
        time.sleep(0.5)
    copy = m.base / "cp-copy"
    t0 = time.monotonic()
    run(["cp", "-r", zone / "pg", copy], timeout=1800, check=True)
    run(["sync", "-f", copy], timeout=600, check=True)
    cp_s = time.monotonic() - t0
    copied = drill.tree_bytes(copy, "*")
    shutil.rmtree(copy)
    log(f"cp -r {zone}/pg: {src_bytes / MB:.1f} MB (copy holds "
        f"{copied / MB:.1f} MB) in {cp_s:.2f} s")

    new, t0 = replace_zone(m, z, args.replace_cmd)
    seen = []
    drill.wait_status(m, lambda st: st["zones"][z]["state"] != "offline"
                      or time.monotonic() - t0 > 10, 30,
                      "the replaced zone noticed", interval=0.1, seen=seen)
    st = drill.wait_status(m, drill.all_healthy, args.heal_timeout,
                           f"zone {z} rebuilt", interval=0.2, seen=seen)
    rebuild_s = time.monotonic() - t0
    states = [s["zones"][z]["state"] for s in seen]
    if "rebuilding" not in states:
        log(f"warning: zone {z} never seen rebuilding: {states}")
    built = zone_data_bytes(new)
    res["rebuild"] = {
        "zone": z,
        "zone_data_bytes_before": src_bytes,
        "zone_data_bytes_rebuilt": built,
        "rebuild_seconds": round(rebuild_s, 3),
        "rebuild_mb_s": round(src_bytes / MB / rebuild_s, 2),
        "repaired_blocks": st["zones"][z].get("repaired_blocks"),
        "cp_seconds": round(cp_s, 3),
        "cp_mb_s": round(src_bytes / MB / cp_s, 2),
    }
    r = res["rebuild"]
    r["ratio"] = round(r["rebuild_mb_s"] / r["cp_mb_s"], 3) \
        if r["cp_mb_s"] else None
    log(f"rebuild of zone {z}: {src_bytes / MB:.1f} MB ({built / MB:.1f} "
        f"MB allocated after) in {rebuild_s:.2f} s = "
        f"{r['rebuild_mb_s']} MB/s; cp -r {r['cp_mb_s']} MB/s; ratio "
        f"{r['ratio']}")


def bench_pgbench(m, pg, args, res):
    """(b): TPS healthy, during a rebuild, during a deep scrub."""
    load = drill.PgbenchLoad(pg, chunk=5, name="bench").start()
    try:
        time.sleep(5)  # warm-up
        t0 = time.time()
        time.sleep(args.seconds)
        healthy = load.tps_between(t0, time.time())

        z = args.pg_zone
        _, t0m = replace_zone(m, z, args.replace_cmd)
        t0 = time.time() - (time.monotonic() - t0m)
        time.sleep(2)
        wait_healthy(m, args.heal_timeout)
        t1 = time.time()
        rebuild = load.tps_between(t0, t1)

        time.sleep(3)
        before = drill.mount_status(m).get("scrub")
        t2 = time.time()
        drill.scrub_start(m, deep=True)
        st = drill.wait_scrub(m, args.heal_timeout, before)
        t3 = time.time()
        scrub = load.tps_between(t2, t3)
        sc = st["scrub"]
    finally:
        load.stop()
    if load.errors:
        log("pgbench errors:\n" + "\n".join(load.errors))

    def ratio(x):
        return round(x / healthy, 3) if x and healthy else None
    res["pgbench"] = {
        "scale": args.scale, "clients": 4,
        "healthy_tps": round(healthy or 0, 1),
        "rebuild_tps": round(rebuild or 0, 1),
        "rebuild_seconds": round(t1 - t0, 2),
        "rebuild_ratio": ratio(rebuild),
        "scrub_tps": round(scrub or 0, 1),
        "scrub_seconds": round(t3 - t2, 2),
        "scrub_ratio": ratio(scrub),
        "scrub_checked": sc.get("checked"), "scrub_found": sc.get("found"),
        "scrub_rate_mb_s": args.scrub_rate,
        "errors": load.errors,
    }


def table(res):
    r, p = res.get("rebuild"), res.get("pgbench")
    lines = ["", "| | sixfold | plain | ratio |", "|---|---|---|---|"]
    if r:
        mb = r["zone_data_bytes_before"] / MB
        lines.append(f"| rebuild of one zone ({mb:.0f} MB), MB/s | "
                     f"{r['rebuild_mb_s']} | "
                     f"{r['cp_mb_s']} (cp -r) | {r['ratio']} |")
    if p:
        lines.append(f"| pgbench TPS healthy | {p['healthy_tps']} | | |")
        lines.append(f"| pgbench TPS during a rebuild "
                     f"({p['rebuild_seconds']} s) | {p['rebuild_tps']} | "
                     f"{p['healthy_tps']} | {p['rebuild_ratio']} |")
        lines.append(f"| pgbench TPS during a deep scrub "
                     f"({p['scrub_seconds']} s) | {p['scrub_tps']} | "
                     f"{p['healthy_tps']} | {p['scrub_ratio']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp",
                    help="where the volume is made (the disk measured)")
    ap.add_argument("--sixfold", default=str(REPO / "build" / "sixfold"))
    ap.add_argument("--fill-mib", type=int, default=256)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=20,
                    help="healthy pgbench window")
    ap.add_argument("--scrub-rate", type=int, default=1000,
                    help="-o scrub_rate, MB/s")
    ap.add_argument("--zone", type=int, default=3,
                    help="zone rebuilt in (a)")
    ap.add_argument("--pg-zone", type=int, default=4,
                    help="zone rebuilt under pgbench in (b)")
    ap.add_argument("--heal-timeout", type=int, default=600)
    ap.add_argument("--replace-cmd", action="store_true",
                    help="use `sixfold zone replace` into a new directory")
    ap.add_argument("--skip-pgbench", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()

    interrupt_on_sigterm()

    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "args": vars(args)}
    base = pathlib.Path(tempfile.mkdtemp(prefix="repair-bench-",
                                         dir=args.workdir))
    os.chmod(base, 0o755)
    m = pg = tmpl_top = None
    try:
        m = Mount(base, pathlib.Path(args.sixfold),
                  opts=("allow_other", f"scrub_rate={args.scrub_rate}"))
        r = run([m.sixfold, "scrub", "stop", m.path])  # no background one
        log(f"scrub stop: exit {r.returncode} {r.stderr.strip()}")
        log(f"writing {args.fill_mib} MiB of files")
        t0 = time.monotonic()
        nfiles = max(args.fill_mib // 4, 1)
        drill.write_files(m.path, nfiles, 4 << 20)
        log(f"  in {time.monotonic() - t0:.1f} s")
        if not args.skip_pgbench:
            tmpl_top, tmpl = drill.make_pg_template(args.scale)
            pg = drill.Pg(m.path / "pgdata")
            pg.copy_from(tmpl)
        run(["sync", "-f", m.path], timeout=600)
        wait_healthy(m, 120)
        bench_rebuild(m, args.zone, args, res)
        if pg is not None:
            pg.start()
            bench_pgbench(m, pg, args, res)
            pg.stop()
        m.unmount()
        r = m.fsck()
        res["fsck_clean"] = r.returncode == 0
        if r.returncode:
            log(f"fsck: {r.stdout}{r.stderr}")
    finally:
        if pg is not None:
            pg.shutdown()
        if m is not None:
            drill.restore_zones(m)
            m.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if tmpl_top is not None:
            shutil.rmtree(tmpl_top, ignore_errors=True)
    print(table(res))
    print(json.dumps(res, indent=1))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
