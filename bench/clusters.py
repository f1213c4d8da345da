"""What fitting the pooled regressions (hyper_parameters.campaign_clusters,
metaheac/clusters.py) costs before meta-training: seconds and the process's
peak RSS before and after the fit, on a training split read as the trainer
reads it (meta-validation campaigns held out).

    python bench/clusters.py [--train DIR] [--config config_big.yaml] [-o key=value ...]

Default data: tools/gen_data.py with the full Tencent vocabulary, 100
campaigns of 3,000-30,000 rows (about 1.26M rows, the panel's `big`;
generated once into the bench directory, a few minutes). The trainer keeps
freed memory (runner.keep_freed_memory), so the peak here stays the
training process's floor.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

import numpy as np

from common import BENCH_DIR, FULL_MAX_IDXS, ROOT, config, peak_rss_mb, threads_from_env

threads_from_env()


def big_split():
    out = os.path.join(BENCH_DIR, "clusters_big")
    if not os.path.exists(os.path.join(out, "oracle.json")):
        # in a process of its own: generating takes gigabytes this one's peak RSS must not count
        subprocess.run([sys.executable, "-c", "from tools.gen_data import generate; generate("
                        f"{out!r}, seed=105, max_idxs={FULL_MAX_IDXS}, kind_ids='several', n_train=100, "
                        "train_rows=(3000, 30000), n_hot=1, n_cold=1, n_users=100000)"], cwd=ROOT, check=True)
    return os.path.join(out, "train")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", help="a training split directory (default: the generated 1.26M rows)")
    parser.add_argument("--config", default="config_big.yaml", help="config, relative to the repo")
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.read_only:
        # the first read converts the split into its columnar cache, gigabytes for a
        # large pickle: in a process of its own, so the peak below is the fit's
        subprocess.run([sys.executable, *sys.argv, "--read-only"], check=True)

    import reader_train
    from metaheac import clusters
    from metaheac.allocator import keep_freed_memory
    from metaheac.schema import schema_from_config

    train = os.path.abspath(args.train or big_split())
    opts = [f"runner.train_data_dir={train}", *args.opt]
    if not args.train:
        opts.append("hyper_parameters.max_idxs=" + str(FULL_MAX_IDXS).replace(" ", ""))
    cfg = config(opts, os.path.join(ROOT, args.config))
    if cfg["runner.keep_freed_memory"]:
        keep_freed_memory()  # as the trainer
    dataset = reader_train.RecDataset(sorted(glob.glob(os.path.join(train, "*"))), cfg)
    if args.read_only:
        return
    if cfg["runner.meta_val_fraction"] > 0:
        dataset.validation_tasks()
    sizes, take = dataset.campaigns()
    before = peak_rss_mb()
    start = time.perf_counter()
    fitted = clusters.fit(sizes, take, schema_from_config(cfg), cfg["hyper_parameters.campaign_clusters"],
                          np.random.default_rng([cfg["runner.seed"], clusters.RANDOM_STREAM]))
    took = time.perf_counter() - start
    print(f"{len(sizes)} campaigns, {sum(sizes):,} rows -> {fitted.sizes.size} groups of "
          f"{sorted(fitted.sizes.tolist(), reverse=True)} campaigns")
    print(f"fit: {took:.1f} s; peak RSS {before:,.0f} MB before (data read), {peak_rss_mb():,.0f} MB after; "
          f"the checkpoint grows by {fitted.w.nbytes / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
