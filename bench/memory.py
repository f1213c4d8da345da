"""Peak RSS of meta-training on a ~1M-row split: the task store is opened from
its cache (as on every run after the first), the full-vocabulary model is
built, and N meta-steps run (batch 1024 x 5 tasks, first order).

    python bench/memory.py [--rows 1000000] [--steps 30]

Run bench/load.py first (it generates the split and its cache). Memory does
not grow with the steps beyond the store pages they touch, at most the size
of the memory-mapped arrays (reported below).
"""
import argparse
import os

from common import config, dataset, threads_from_env

threads_from_env()


def vm_hwm_mb():
    line = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    return int(line.split()[1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    n_train = 200
    data = dataset(round(args.rows / (n_train * 630), 2), n_train=n_train)  # the split bench/load.py uses

    from dygraph_model import DygraphModel
    from reader_train import RecDataset

    cfg = config([f"runner.train_data_dir={data}/train", "runner.cache_dir=" + os.path.join(os.path.dirname(data), "load_cache")])
    reader = RecDataset([f"{data}/train/train_stage1.pkl"], cfg)
    store = reader.stores[0]
    mapped = sum(getattr(store, n).nbytes for n in ("ids", "lengths", "labels", "aids", "source_rows", "user_ids"))
    dm = DygraphModel()
    model = dm.create_model(cfg)
    opt = dm.create_optimizer(model, cfg)
    it = iter(reader)
    for _ in range(args.steps):
        loss, _, _ = dm.train_forward(model, [], next(it), cfg)
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)  # as tools/trainer.py: freed, not zeroed
    print(f"split: {len(store):,} rows; memory-mapped store {mapped / 2**20:.0f} MB")
    print(f"peak RSS after {args.steps} meta-steps: {vm_hwm_mb():.0f} MB")


if __name__ == "__main__":
    main()
