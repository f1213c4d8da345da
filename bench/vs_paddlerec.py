"""This package's trainer against PaddleRec's own MetaHeac trainer: one epoch
each on the same generated data, one after the other, each in its own
process: wall time, time per meta-batch, peak RSS and the ratios.

    PADDLEREC_DIR=/path/to/PaddleRec python bench/vs_paddlerec.py [--quick]

Data: tools/gen_data.py with the full Tencent vocabulary, 40 training
campaigns, ~64k rows (--quick: 10 campaigns, ~7k rows, about a minute).
Ours: config_big.yaml (or --config); PaddleRec's: its
models/multitask/metaheac/config_bigdata.yaml run by its tools/trainer.py.
Both at batch 256 (support and query rows per task), one epoch, on CPU,
with the same thread and MKL settings (on AMD, MKL's AVX2 kernels for
both: threads_from_env); ours without meta-validation and pooled
regressions (PaddleRec has neither), then once more with the pooled
regressions, to show what fitting them adds. Wall time covers the whole
process (start, reading the data, training, the checkpoint). Without PADDLEREC_DIR only
ours runs. Timings are only comparable within one run of this script, on
an otherwise idle machine.
"""
import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from common import BENCH_DIR, FULL_MAX_IDXS, ROOT, threads_from_env

threads_from_env()


def measured(cmd, cwd):
    """Run cmd in a child of a fresh process so RUSAGE_CHILDREN holds that command alone:
    (seconds, peak RSS MB, output)."""
    probe = [sys.executable, os.path.abspath(__file__), "--measure", json.dumps(cmd)]
    # PaddleRec's trainer hangs rather than exits when its reader thread fails
    proc = subprocess.run(probe, cwd=cwd, capture_output=True, text=True, timeout=3600)
    out = proc.stdout + proc.stderr
    found = re.search(r"^MEASURED (\S+) (\S+) (\S+)$", proc.stdout, re.M)
    if not found or found.group(3) != "0":
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-4000:]}")
    return float(found.group(1)), float(found.group(2)), out


def _measure(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # KiB on Linux
    print(f"MEASURED {seconds:.3f} {rss:.1f} {proc.returncode}", flush=True)


def ours(data, work, batch, config, clusters):
    """clusters: hyper_parameters.campaign_clusters, or None for the config's."""
    cmd = [sys.executable, "-u", os.path.join(ROOT, "tools", "trainer.py"), "-m", os.path.join(ROOT, config),
           "-o", f"runner.train_data_dir={data}/train", "-o", f"runner.model_save_path={work}/ours",
           "-o", f"runner.cache_dir={work}/cache", "-o", "runner.epochs=1", "-o", "runner.meta_val_fraction=0",
           "-o", f"hyper_parameters.batch_size={batch}", "-o", "runner.report_png=false",
           "-o", "runner.print_interval=1000", "-o", "runner.overwrite=true"]
    if clusters is not None:
        cmd += ["-o", f"hyper_parameters.campaign_clusters={clusters}"]
    seconds, rss, out = measured(cmd, ROOT)
    batches = int(re.search(r"(\d+) meta-batches per epoch", out).group(1))
    return seconds, rss, batches


def paddlerec(paddlerec_dir, data, work, batch):
    """PaddleRec's tools and its metaheac model copied under `work` (its trainer
    finds the model by path), its config pointed at our data."""
    shutil.copytree(os.path.join(paddlerec_dir, "tools"), os.path.join(work, "tools"))
    model_dir = os.path.join(work, "models", "multitask", "metaheac")
    shutil.copytree(os.path.join(paddlerec_dir, "models", "multitask", "metaheac"), model_dir)
    with open(os.path.join(model_dir, "config_bigdata.yaml")) as f:
        tree = yaml.safe_load(f)
    # its reader opens every entry of train_data_dir, and its trainer hangs when
    # one is not a pickle (a cache directory left by a run without cache_dir)
    train = os.path.join(work, "paddlerec_train")
    os.makedirs(train)
    os.symlink(os.path.join(data, "train", "train_stage1.pkl"), os.path.join(train, "train_stage1.pkl"))
    tree["runner"].update(train_data_dir=train, use_gpu=False, epochs=1, print_interval=1000,
                          model_save_path=os.path.join(work, "paddlerec_model"))
    tree["hyper_parameters"].update(batch_size=batch)
    with open(os.path.join(model_dir, "bench.yaml"), "w") as f:
        yaml.safe_dump(tree, f)
    # its trainer, unchanged, under a name of its own: a shared machine's
    # cleanup of stray "trainer.py" processes once killed it mid-run
    shutil.copy(os.path.join(work, "tools", "trainer.py"), os.path.join(work, "tools", "paddlerec_main.py"))
    seconds, rss, out = measured([sys.executable, "-u", "../../../tools/paddlerec_main.py", "-m", "bench.yaml"],
                                 model_dir)
    return seconds, rss, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~7k rows, 10 campaigns: a smoke test")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--config", default="config_big.yaml", help="this package's config (relative to the repo)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return _measure(json.loads(args.measure))

    from tools.gen_data import generate

    # PaddleRec's reader draws batch rows of a campaign without replacement: every
    # campaign needs that many (gen_data gives each at least 300 * scale)
    n_train, scale = (10, 1.0) if args.quick else (40, 2.2)
    data = os.path.join(BENCH_DIR, f"vs_paddlerec_n{n_train}_s{scale}")
    if not os.path.exists(os.path.join(data, "oracle.json")):
        generate(data, seed=2021, max_idxs=FULL_MAX_IDXS, n_train=n_train, scale=scale)
    with open(os.path.join(data, "oracle.json")) as f:
        rows = json.load(f)["splits"]["train"]["rows"]
    print(f"data: {rows} training rows, {n_train} campaigns, full Tencent vocabulary; batch {args.batch}, 1 epoch")
    with tempfile.TemporaryDirectory(prefix="vs_paddlerec_") as work:
        sec, rss, batches = ours(data, work, args.batch, args.config, 0)
        print(f"this package ({args.config}): {sec:8.1f} s, {1000 * sec / batches:7.1f} ms per meta-batch "
              f"({batches}), peak RSS {rss:7.0f} MB", flush=True)
        pooled_sec, pooled_rss, _ = ours(data, work, args.batch, args.config, None)
        print(f"  with its pooled regressions (fitted once, before training): {pooled_sec:8.1f} s "
              f"({pooled_sec - sec:+.1f} s), peak RSS {pooled_rss:7.0f} MB", flush=True)
        if not os.environ.get("PADDLEREC_DIR"):
            print("PADDLEREC_DIR not set: PaddleRec's trainer not run")
            return
        their_sec, their_rss, _ = paddlerec(os.environ["PADDLEREC_DIR"], data, work, args.batch)
        their_batches = math.ceil(rows / args.batch)  # its reader: ceil(rows / batch_size) meta-batches an epoch
        print(f"PaddleRec (config_bigdata.yaml): {their_sec:8.1f} s, {1000 * their_sec / their_batches:7.1f} ms per "
              f"meta-batch ({their_batches}), peak RSS {their_rss:7.0f} MB")
        print(f"PaddleRec / this package: wall {their_sec / sec:.2f}x, per meta-batch "
              f"{(their_sec / their_batches) / (sec / batches):.2f}x, peak RSS {their_rss / rss:.2f}x")


if __name__ == "__main__":
    main()
