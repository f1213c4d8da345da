"""Audience expansion from unlabelled pools: wall time, candidates/s and peak
RSS of whole `tools/expand.py` runs (fresh processes), one campaign against
pools of several sizes as pickle and Parquet, and several campaigns against
one pool.

    python bench/expand.py [--pools 100000 500000 2000000] [--campaigns 10]

A model is meta-trained once with config_big.yaml (full Tencent vocabulary)
on generated data; the seeds are that data's hot test campaigns; the pools
are users only (uid and user features: no label, aid or ad columns), made by
tools.gen_data.write_pool. Every run ranks the whole pool
(runner.audience_fraction=1.0). Pickles over 500k users are skipped (their
per-cell objects need several GB to write).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import time

from common import BENCH_DIR, ROOT, dataset

CHILD = """
import resource, sys, time
sys.argv = ["tools/expand.py"] + sys.argv[1:]
sys.path.insert(0, {root!r})
from tools import expand
expand.main()
print(f"PEAK_RSS_MB {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}}", flush=True)
"""


def trained_model(data):
    """Checkpoint dir of one config_big.yaml epoch on `data` (trained once per
    version of config_big.yaml, then reused)."""
    with open(os.path.join(ROOT, "config_big.yaml"), "rb") as f:
        version = hashlib.sha1(f.read()).hexdigest()[:8]
    out = os.path.join(BENCH_DIR, f"expand_model_{version}")
    if not os.path.isfile(os.path.join(out, "0", "rec.pdparams")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m",
                        os.path.join(ROOT, "config_big.yaml"), "-o", f"runner.train_data_dir={data}/train",
                        f"runner.model_save_path={out}"], check=True, capture_output=True)
    return out


def seed_file(data, n_campaigns):
    """The first n hot test campaigns' seeds of `data` as one file (the cold ones after, if more are asked)."""
    import pandas as pd

    path = os.path.join(BENCH_DIR, f"expand_seeds_{n_campaigns}.pkl")
    if not os.path.isfile(path):
        frames = [pd.read_pickle(os.path.join(data, split, "test_stage1.pkl")) for split in ("test_hot", "test_cold")]
        seeds = pd.concat(frames, ignore_index=True)
        keep = list(dict.fromkeys(seeds["aid"]))[:n_campaigns]
        seeds[seeds["aid"].isin(keep)].to_pickle(path)
    return path


def pool_file(n_users, suffix):
    from tools.gen_data import write_pool

    path = os.path.join(BENCH_DIR, f"pool_{n_users}{suffix}")
    if not os.path.isfile(path):
        write_pool(path, n_users, seed=5)
    return path


def run(model, seeds, pool):
    """(seconds, peak RSS MB) of one whole tools/expand.py process."""
    out = os.path.join(BENCH_DIR, "expand_out")
    args = ["-m", os.path.join(ROOT, "config_big.yaml"), "--seeds", seeds, "--candidates", pool,
            "--out", out, "-o", f"runner.infer_load_path={model}", "runner.infer_start_epoch=0",
            "runner.infer_end_epoch=1", "runner.audience_fraction=1.0"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-3000:])
    peak = float(proc.stdout.split("PEAK_RSS_MB")[-1])
    return seconds, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[100_000, 500_000, 2_000_000])
    parser.add_argument("--campaigns", type=int, default=10, help="campaigns against the 500k pool")
    parser.add_argument("--scale", type=float, default=2.0, help="training data size (bench/common.py)")
    args = parser.parse_args()

    data = dataset(args.scale)
    model = trained_model(data)
    one, many = seed_file(data, 1), seed_file(data, args.campaigns)
    print(f"{'pool users':>10} {'format':>8} {'campaigns':>9} {'seconds':>8} {'candidates/s':>12} {'peak RSS MB':>11}",
          flush=True)
    jobs = [(n, suffix, one, 1) for n in args.pools for suffix in (".pkl", ".parquet")
            if suffix == ".parquet" or n <= 500_000]
    jobs += [(500_000, ".parquet", many, args.campaigns), (500_000, ".pkl", many, args.campaigns)]
    for n, suffix, seeds, n_campaigns in jobs:
        seconds, peak = run(model, seeds, pool_file(n, suffix))
        print(f"{n:>10,} {suffix[1:]:>8} {n_campaigns:>9} {seconds:>8.1f} {n * n_campaigns / seconds:>12,.0f} "
              f"{peak:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
