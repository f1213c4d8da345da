"""First load (validate + convert) and cached load of a ~1M-row split:
seconds and peak RSS, each in a fresh process.

    python bench/load.py [--rows 1000000]
"""
import argparse
import json
import os
import subprocess
import sys

from common import BENCH_DIR, ROOT

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from tools.utils.yaml_config import load_config
from metaheac.schema import schema_from_config
from metaheac.store import open_store
cfg = load_config({config!r}, ["runner.cache_dir={cache}"])
t = time.perf_counter()
store = open_store({source!r}, schema_from_config(cfg), {cache!r})
rows = len(store); campaigns = store.num_tasks
sec = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"seconds": sec, "rows": rows, "campaigns": campaigns, "peak_rss_mb": int(hwm) / 1024}}))
"""


def child(source, cache):
    code = CHILD.format(root=ROOT, config=os.path.join(ROOT, "config_big.yaml"), source=source, cache=cache)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    from common import dataset

    # ~630 rows per training campaign at scale 1 with 200 campaigns (measured: scale 7.35 -> 932k rows)
    n_train = 200
    scale = round(args.rows / (n_train * 630), 2)
    data = dataset(scale, n_train=n_train)
    source = os.path.join(data, "train", "train_stage1.pkl")
    cache = os.path.join(BENCH_DIR, "load_cache")
    subprocess.run(["rm", "-rf", cache], check=True)
    size_mb = os.path.getsize(source) / 2**20
    first = child(source, cache)
    cached = child(source, cache)
    print(f"split: {first['rows']} rows, {first['campaigns']} campaigns, pickle {size_mb:.0f} MB")
    print(f"{'':>12} {'seconds':>8} {'peak RSS MB':>12}")
    print(f"{'first load':>12} {first['seconds']:>8.2f} {first['peak_rss_mb']:>12.0f}")
    print(f"{'cached load':>12} {cached['seconds']:>8.2f} {cached['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
