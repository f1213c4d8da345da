"""Benchmark tools/preprocess_tencent.py on generated raw Tencent Look-alike files.

    python bench/preprocess.py [--users 1000000] [--keep DIR]

Writes a raw directory in the competition's format (userFeature.data with
--users lines shaped like the real ones, train.csv / test1_truth.csv with as
many rows per user as the real files, 173 ads), runs the tool on it in a child
process and prints lines/s, rows/s, the time per phase and the child's peak
RSS, then extrapolates them linearly to the real file sizes (REAL below).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "preprocess_tencent.py")

# Sizes of the preliminary-round files of the Tencent Ad Algorithm Competition 2018
# (the data MetaHeac uses), as published with the competition. The byte size of
# userFeature.data is not assumed: it is the real line count times the average
# line length of the generated file, whose fields mimic the real ones below.
REAL = {"users": 11_420_039, "seed_rows": 8_798_814, "candidate_rows": 2_265_989, "ads": 173,
        "positive_rate": 0.048, "hot_threshold": 2000}

# (field, probability the field is present, (min, max) number of ids, id range): shaped after
# the real userFeature.data, where interest/kw/topic lists are long and app lists are rare.
USER_FIELDS = [("age", 1.0, (1, 1), 6), ("gender", 1.0, (1, 1), 3), ("marriageStatus", 0.95, (1, 3), 16),
               ("education", 1.0, (1, 1), 8), ("consumptionAbility", 1.0, (1, 1), 3), ("LBS", 0.99, (1, 1), 900),
               ("interest1", 0.9, (1, 30), 123), ("interest2", 0.65, (1, 10), 81), ("interest3", 0.05, (1, 8), 11),
               ("interest4", 0.05, (1, 8), 11), ("interest5", 0.75, (1, 30), 137), ("kw1", 0.9, (1, 5), 800_000),
               ("kw2", 0.95, (1, 5), 120_000), ("kw3", 0.05, (1, 5), 60_000), ("topic1", 0.9, (1, 5), 10_000),
               ("topic2", 0.95, (1, 5), 10_000), ("topic3", 0.05, (1, 5), 10_000),
               ("appIdInstall", 0.02, (1, 60), 60_000), ("appIdAction", 0.03, (1, 40), 6_000),
               ("ct", 1.0, (1, 3), 5), ("os", 1.0, (1, 2), 3), ("carrier", 1.0, (1, 1), 4),
               ("house", 0.2, (1, 1), 2)]
FEATURE_POOL = 100_000  # distinct feature strings; users draw from them (parsing cost is the same)


def _feature_pool(rng, n):
    """n random 'field ids|field ids|...' strings, one per user profile."""
    pool = []
    for _ in range(n):
        parts = []
        for name, p, (lo, hi), vocab in USER_FIELDS:
            if rng.random() < p:
                ids = rng.integers(1, vocab, int(rng.integers(lo, hi + 1)))
                parts.append(name + " " + " ".join(map(str, ids.tolist())))
        pool.append("|".join(parts))
    return pool


def generate(raw_dir, n_users, seed=0):
    """The four raw files for n_users users; returns the row counts and user file size."""
    rng = np.random.default_rng(seed)
    os.makedirs(raw_dir, exist_ok=True)
    uids = rng.permutation(np.unique(rng.integers(1, 100_000_000, int(n_users * 1.01))))[:n_users]
    pool = _feature_pool(rng, min(FEATURE_POOL, n_users))
    picks = rng.integers(0, len(pool), n_users)
    with open(os.path.join(raw_dir, "userFeature.data"), "w") as f:
        for i in range(0, n_users, 100_000):  # write in blocks: bounded memory
            f.write("".join(f"uid {u}|{pool[k]}\n" for u, k in zip(uids[i:i + 100_000].tolist(),
                                                                   picks[i:i + 100_000].tolist())))

    n_ads = REAL["ads"]
    with open(os.path.join(raw_dir, "adFeature.csv"), "w") as f:
        f.write("aid,advertiserId,campaignId,creativeId,creativeSize,adCategoryId,productId,productType\n")
        for aid in range(1, n_ads + 1):
            f.write(f"{aid},{rng.integers(1, 80)},{rng.integers(1, 140)},{aid + 1000},{rng.integers(1, 15)},"
                    f"{rng.integers(1, 40)},{rng.integers(0, 33)},{rng.integers(1, 4)}\n")

    # rows per user as in the real files; campaign sizes skewed like the real ones
    n_seed = round(n_users * REAL["seed_rows"] / REAL["users"])
    n_cand = round(n_users * REAL["candidate_rows"] / REAL["users"])
    weights = rng.pareto(1.2, n_ads) + 0.05
    weights /= weights.sum()
    # every labelled user has a row, a few have more: ~85% of the users are labelled, as in the real files
    labelled = rng.permutation(uids)[:int(0.85 * n_users)]
    row_users = rng.permutation(np.concatenate([labelled, rng.choice(labelled, n_seed + n_cand - len(labelled))]))
    for name, users, header in (("train.csv", row_users[:n_seed], "aid,uid,label\n"),
                                ("test1_truth.csv", row_users[n_seed:], "")):
        n = len(users)
        aid = rng.choice(np.arange(1, n_ads + 1), n, p=weights)
        label = np.where(rng.random(n) < REAL["positive_rate"], 1, -1)
        with open(os.path.join(raw_dir, name), "w") as f:
            f.write(header)
            f.write("".join(f"{a},{u},{y}\n" for a, u, y in zip(aid.tolist(), users.tolist(), label.tolist())))
    return {"seed_rows": n_seed, "candidate_rows": n_cand,
            "user_file_bytes": os.path.getsize(os.path.join(raw_dir, "userFeature.data"))}


def _hwm_mib(pid="self"):
    """Peak RSS (VmHWM) of a process in MiB, from /proc (Linux).

    Not getrusage: on Linux a child's ru_maxrss starts from the spawning
    parent's RSS, so it would report this script's generator memory.
    """
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def run_tool(raw_dir, out_dir, hot_threshold):
    """Run the tool in a child process; returns (wall seconds, its peak RSS in MiB, its summary)."""
    cmd = [sys.executable, TOOL, "--raw-dir", raw_dir, "--out-dir", out_dir, "--hot-threshold", str(hot_threshold),
           "--progress-every", "250000"]
    log_path = out_dir.rstrip("/") + ".log"  # a file, not a pipe: a full pipe would stall the tool
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        peak = 0.0
        while proc.poll() is None:  # VmHWM only grows: any read after the peak returns it
            try:
                peak = max(peak, _hwm_mib(proc.pid))
            except (OSError, StopIteration):  # exiting
                pass
            time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log_path) as log:
            sys.exit(f"preprocess failed:\n{log.read()[-3000:]}")
    with open(os.path.join(out_dir, "preprocess_summary.json")) as f:
        return seconds, peak, json.load(f)


def baseline_rss_mib():
    """Peak RSS of a child that only imports what the tool imports (python, numpy, pandas, yaml)."""
    code = ("import numpy, pandas, yaml\n"
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000, help="lines of the generated userFeature.data")
    ap.add_argument("--keep", default=None, help="keep the raw and output files in this directory")
    args = ap.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="bench_preprocess_")
    try:
        t = time.perf_counter()
        sizes = generate(os.path.join(work, "raw"), args.users)
        print(f"generated {args.users:,} users ({sizes['user_file_bytes'] / 2**20:,.0f} MiB), "
              f"{sizes['seed_rows']:,} seed rows, {sizes['candidate_rows']:,} candidate rows "
              f"in {time.perf_counter() - t:.0f}s")
        base = baseline_rss_mib()
        # the same hot/cold proportion as the published threshold on the real data
        threshold = round(REAL["hot_threshold"] * args.users / REAL["users"])
        seconds, peak, summary = run_tool(os.path.join(work, "raw"), os.path.join(work, "out"), threshold)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(args.users, sizes, seconds, peak, base, summary)


def report(n_users, sizes, seconds, peak, base, summary):
    phases = summary["seconds"]
    rows = sizes["seed_rows"] + sizes["candidate_rows"]
    out_rows = sum(v for s in summary["splits"].values() for k, v in s.items() if k.startswith("rows_"))
    bytes_per_line = sizes["user_file_bytes"] / n_users
    print(f"\nuserFeature.data  {n_users / phases['stream_users']:>12,.0f} lines/s   "
          f"{sizes['user_file_bytes'] / 2**20 / phases['stream_users']:,.1f} MiB/s   "
          f"({summary['labelled_users']:,} labelled users kept, {bytes_per_line:.0f} bytes/line)")
    print(f"whole run         {rows / seconds:>12,.0f} labelled rows/s   {seconds:.1f}s wall "
          f"({out_rows:,} output rows)")
    print("phases            " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items() if k != "total"))
    print(f"peak RSS          {peak:>12,.0f} MiB   (interpreter + numpy/pandas alone: {base:,.0f} MiB)")

    # Linear extrapolation: streaming cost grows with lines, the rest with labelled rows/users.
    k_lines, k_rows = REAL["users"] / n_users, (REAL["seed_rows"] + REAL["candidate_rows"]) / rows
    fixed = phases["total"] - phases["stream_users"]
    est_seconds = phases["stream_users"] * k_lines + fixed * k_rows + (seconds - phases["total"])
    # The peak is the user matrix plus the largest split's frame: it scales with labelled users and rows.
    est_peak = base + (peak - base) * k_rows
    largest = max(v for s in summary["splits"].values() for k, v in s.items() if k.startswith("rows_"))
    print(f"\nextrapolated linearly to the real files ({REAL['users']:,} users, "
          f"~{REAL['users'] * bytes_per_line / 2**30:.1f} GiB at {bytes_per_line:.0f} bytes/line; "
          f"{REAL['seed_rows']:,} + {REAL['candidate_rows']:,} rows):")
    stream_min = phases["stream_users"] * k_lines / 60
    print(f"  time      ~{est_seconds / 60:.0f} min   (streaming userFeature.data ~{stream_min:.1f} min)")
    print(f"  peak RSS  ~{est_peak / 1024:.1f} GiB    (if the largest split again holds {largest / rows:.0%} of the "
          f"labelled rows; here {(peak - base) / largest * 1024:.1f} KiB above the baseline per row of it)")


if __name__ == "__main__":
    main()
