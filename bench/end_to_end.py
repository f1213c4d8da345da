"""Trainer epoch time and samples/s at two dataset sizes, and infer time per
100k candidates, through the real command lines (full Tencent vocabulary,
config_big.yaml settings: batch 1024 x 5 tasks, first order).

    python bench/end_to_end.py [--scales 2 8] [--max-batches N]

Each run is a fresh process; figures are parsed from the tools' own logs and
metrics files, and the peak RSS of each process is reported.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

from common import BENCH_DIR, ROOT, dataset


def run(args):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stdout + proc.stderr)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return proc.stdout + proc.stderr, time.perf_counter() - start, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0, 8.0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    print(f"{'train rows':>10} {'meta-batches':>12} {'epoch s':>8} {'s/meta-batch':>12} {'samples/s':>9} "
          f"{'reader %':>8} {'1M-row epoch (min)':>18} {'peak RSS MB':>11}")
    for scale in args.scales:
        data = dataset(scale)
        out = os.path.join(BENCH_DIR, f"e2e_model_s{scale}")
        shutil.rmtree(out, ignore_errors=True)  # a rerun's scratch: the trainer refuses it
        log, _, rss = run(["tools/trainer.py", "-m", "config_big.yaml", "-o", f"runner.train_data_dir={data}/train",
                           f"runner.model_save_path={out}", f"runner.epochs={args.epochs}",
                           "runner.print_interval=10"])
        done = re.search(r"epoch 0 done: (\d+) meta-batches, mean loss \S+, ([\d.]+)s \((\d+) samples/s\)", log)
        rows = int(re.search(r"train data: (\d+) rows", log).group(1))
        shares = [float(x) for x in re.findall(r"reader ([\d.]+)%", log)]
        batches, sec, sps = int(done.group(1)), float(done.group(2)), int(done.group(3))
        per_batch = sec / batches
        print(f"{rows:>10} {batches:>12} {sec:>8.1f} {per_batch:>12.3f} {sps:>9} {max(shares):>8.1f} "
              f"{per_batch * 1_000_000 / 1024 / 60:>18.1f} {rss:>11.0f}", flush=True)

    metrics = os.path.join(BENCH_DIR, "e2e_metrics.json")
    log, wall, rss = run(["infer.py", "-m", "config_big.yaml", "-o", f"runner.test_data_dir={data}/test_hot",
                          f"runner.infer_load_path={out}", f"runner.metrics_path={metrics}"])
    summary = json.load(open(metrics))["summary"]
    print(f"infer: {summary['campaigns']} campaigns, {summary['candidates']} candidates, "
          f"{summary['seconds']:.1f}s fine-tune+score ({wall:.1f}s with start-up) -> "
          f"{summary['seconds'] / summary['candidates'] * 1e5:.1f}s per 100k candidates")


if __name__ == "__main__":
    main()
