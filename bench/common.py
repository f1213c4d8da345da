"""Shared helpers for the benchmarks: generated datasets, configs, timing, RSS."""
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FULL_MAX_IDXS = [[3, 2, 855, 5, 7, 2, 1], [124, 82, 12, 263312, 49780, 10002, 9984], [78, 137, 14, 39, 32, 3]]
BENCH_DIR = os.environ.get("METAHEAC_BENCH_DIR", "/tmp/metaheac_bench")


def dataset(scale, n_train=40, seed=2021, max_idxs=FULL_MAX_IDXS):
    """A generated dataset with the full Tencent vocabulary (cached on disk).
    scale 1 is ~29k training rows; rows grow linearly with scale."""
    from tools.gen_data import generate

    out = os.path.join(BENCH_DIR, f"data_s{scale}_n{n_train}_seed{seed}")
    if not os.path.exists(os.path.join(out, "oracle.json")):
        generate(out, seed=seed, max_idxs=max_idxs, n_train=n_train, scale=scale)
    return out


def config(overrides=(), base="config_big.yaml"):
    from tools.utils.yaml_config import load_config

    return load_config(os.path.join(ROOT, base), list(overrides))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, repeat, warmup=1):
    """Mean seconds per call of fn() over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def threads_from_env():
    """Benchmarks run with the trainer's thread and MKL settings (config defaults)."""
    from tools.utils.runtime import configure_threads

    configure_threads({})
