#!/usr/bin/env python3
"""fs_bench.py - PostgreSQL and fsync-bound fio on a sixfold mount, next to
the same runs on a plain directory of the same disk.

Runs, for each of two targets made in one temporary directory (under
--workdir):

  plain    a plain directory on the disk of --workdir
  sixfold  a fresh sixfold volume (six zone directories on that same disk,
           `sixfold mkfs --key-file K --log-size 64M Z0..Z5`), mounted
           with `sixfold mount -f --key-file K -o allow_other Z0 MNT` in
           the background, and unmounted at the end with `sixfold umount`

these benchmarks:

  pgbench  PostgreSQL 15 (run as the postgres user, PGDATA inside the
           target, fsync=on, synchronous_commit=on, unix socket only):
           pgbench -i -s 20, then pgbench -c 4 -j 2 -T SECONDS
  fio      8 KiB random writes with an fsync after each (--fsync=1),
           ioengine=psync, a 256 MiB file, FIO_SECONDS, time based

and prints one table with both targets and the ratio sixfold / plain, and
writes the numbers as JSON to --out.  Everything it starts or makes
(PostgreSQL, fio, pgbench, the sixfold daemon, the mount, the temporary
directory) is stopped and removed at the end, also after a failure,
Ctrl-C or SIGTERM; processes are stopped by their PID.

Run as root (PostgreSQL's server runs as `postgres` through runuser):

  sudo python3 test/bench/fs_bench.py --out bench.json
  python3 test/bench/fs_bench.py --only-plain --seconds 10 --fio-seconds 5

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

from benchlib import (PGBIN, REPO, Cleanup, SixfoldMount, bench_pgbench,
                      fio_run, interrupt_on_sigterm, log, pct_us)


def bench_fio(target, base, seconds):
    """fio 8 KiB randwrite with --fsync=1 on a 256 MiB file in target."""
    d = target / "fio"
    d.mkdir()
    out = pathlib.Path(tempfile.mkstemp(prefix="fio-", suffix=".json",
                                        dir=base)[1])
    job = fio_run(["--name=randwrite-8k-fsync", f"--directory={d}",
                   "--filename=data", "--rw=randwrite", "--bs=8k",
                   "--fsync=1", "--ioengine=psync", "--size=256M",
                   "--time_based", f"--runtime={seconds}"], out,
                  seconds + 900)["jobs"][0]
    w = job["write"]
    res = {
        "seconds": seconds, "iops": round(w["iops"], 1),
        "clat_p50_us": pct_us(w.get("clat_ns"), 50),
        "clat_p99_us": pct_us(w.get("clat_ns"), 99),
        "fsync_p50_us": pct_us(job.get("sync", {}).get("lat_ns"), 50),
        "fsync_p99_us": pct_us(job.get("sync", {}).get("lat_ns"), 99),
        "error": job.get("error", 0),
    }
    log(f"fio: {res}")
    shutil.rmtree(d, ignore_errors=True)
    return res


# ---- driver -------------------------------------------------------------

def bench_target(target, base, args, cleanup):
    res = {"path": str(target)}
    if not args.skip_pg:
        res["pgbench"] = bench_pgbench(target, base, args.seconds, cleanup)
    if not args.skip_fio:
        res["fio"] = bench_fio(target, base, args.fio_seconds)
    return res


ROWS = [
    ("pgbench", "tps", "pgbench tps", "higher"),
    ("pgbench", "latency_avg_ms", "pgbench latency avg ms", "lower"),
    ("pgbench", "init_seconds", "pgbench -i -s 20 s", "lower"),
    ("fio", "iops", "fio 8k randwrite+fsync IOPS", "higher"),
    ("fio", "clat_p50_us", "fio write clat p50 us", "lower"),
    ("fio", "clat_p99_us", "fio write clat p99 us", "lower"),
    ("fio", "fsync_p50_us", "fio fsync p50 us", "lower"),
    ("fio", "fsync_p99_us", "fio fsync p99 us", "lower"),
]


def table(results):
    names = [n for n in ("plain", "sixfold") if n in results]
    lines = [f"{'metric':<30}" + "".join(f"{n:>14}" for n in names)
             + (f"{'sixfold/plain':>15}" if len(names) == 2 else "")]
    ratios = {}
    for group, key, label, _better in ROWS:
        vals = [results[n].get(group, {}).get(key) for n in names]
        if all(v is None for v in vals):
            continue
        line = f"{label:<30}" + "".join(
            f"{v:>14.1f}" if v is not None else f"{'-':>14}" for v in vals)
        if len(names) == 2 and vals[0] and vals[1] is not None:
            ratio = vals[1] / vals[0]
            ratios[f"{group}.{key}"] = round(ratio, 3)
            line += f"{ratio:>15.3f}"
        lines.append(line)
    return "\n".join(lines), ratios


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sixfold", type=pathlib.Path,
                    default=REPO / "build" / "sixfold",
                    help="the sixfold program (default: build/sixfold)")
    ap.add_argument("--workdir", type=pathlib.Path,
                    default=pathlib.Path("/var/tmp"),
                    help="the disk to use: the temporary directory (plain "
                         "target and zones) is made here (default /var/tmp)")
    ap.add_argument("--seconds", type=int, default=60,
                    help="pgbench run time (default 60)")
    ap.add_argument("--fio-seconds", type=int, default=30,
                    help="fio run time (default 30)")
    ap.add_argument("--log-size", default="64M",
                    help="sixfold mkfs --log-size (default 64M)")
    ap.add_argument("--skip-pg", action="store_true", help="no pgbench")
    ap.add_argument("--skip-fio", action="store_true", help="no fio")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--only-plain", action="store_true",
                      help="only the plain directory (no sixfold mount)")
    only.add_argument("--only-sixfold", action="store_true",
                      help="only the sixfold mount")
    ap.add_argument("--out", type=pathlib.Path,
                    help="write the results as JSON here")
    args = ap.parse_args()

    if os.geteuid() != 0:
        ap.error("run as root (PostgreSQL runs as the postgres user through "
                 "runuser; mounting needs root)")
    if args.skip_pg and args.skip_fio:
        ap.error("--skip-pg and --skip-fio leave nothing to run")
    if not args.skip_pg and not os.access(PGBIN / "postgres", os.X_OK):
        ap.error(f"PostgreSQL 15 not found in {PGBIN} (or use --skip-pg)")
    if not args.only_plain and not os.access(args.sixfold, os.X_OK):
        ap.error(f"{args.sixfold} is not executable (build it, or use "
                 "--only-plain)")

    interrupt_on_sigterm()
    cleanup = Cleanup()
    results = {}
    rc = 0
    base = pathlib.Path(tempfile.mkdtemp(prefix="sixfold-bench-",
                                         dir=args.workdir))
    cleanup.push("remove " + str(base),
                 lambda: shutil.rmtree(base, ignore_errors=True))
    try:
        os.chmod(base, 0o755)  # the postgres user goes through it
        if not args.only_sixfold:
            plain = base / "plain"
            plain.mkdir()
            os.chmod(plain, 0o755)
            log("== plain directory")
            results["plain"] = bench_target(plain, base, args, cleanup)
        if not args.only_plain:
            log("== sixfold mount")
            m = SixfoldMount(args.sixfold, base, args.log_size, cleanup)
            m.mount()
            results["sixfold"] = bench_target(m.mnt, base, args, cleanup)
            m.unmount()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception as e:
        log(f"failed: {e}")
        rc = 1
    finally:
        cleanup.run_all()

    if results:
        text, ratios = table(results)
        print(text)
        doc = {"workdir": str(args.workdir), "results": results,
               "ratios_sixfold_over_plain": ratios,
               "complete": rc == 0,
               "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if args.out:
            args.out.write_text(json.dumps(doc, indent=2) + "\n")
            log(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
