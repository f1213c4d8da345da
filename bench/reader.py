"""Reader cost per meta-batch at three dataset sizes spanning 16x.

    python bench/reader.py [--scales 0.5 2 8] [--batches 30]

Sampling a task is a slice of the columnar store, so the cost per meta-batch
must not grow with the number of rows (PaddleRec's reader filters the whole
DataFrame for every task: O(N) per batch).
"""
import argparse
import time

import numpy as np

from common import config, dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()

    from reader_train import RecDataset

    print(f"{'rows':>9} {'campaigns':>9} {'median ms/meta-batch':>21} {'meta-batches/s':>15}")
    costs = []
    for scale in args.scales:
        data = dataset(scale)
        cfg = config([f"runner.train_data_dir={data}/train", f"hyper_parameters.batch_size={args.batch_size}"])
        reader = RecDataset([f"{data}/train/train_stage1.pkl"], cfg)
        it = iter(reader)
        for _ in range(10):  # warm the page cache / memory map
            next(it)
        times = []  # per meta-batch; the median resists other jobs on a shared machine
        for _ in range(args.batches):
            start = time.perf_counter()
            try:
                next(it)
            except StopIteration:
                it = iter(reader)
                next(it)
            times.append(time.perf_counter() - start)
        sec = float(np.median(times))
        costs.append(sec)
        print(f"{reader.num_rows:>9} {len(reader.tasks):>9} {sec * 1e3:>21.1f} {1 / sec:>15.1f}", flush=True)
    print(f"max/min cost per meta-batch across {args.scales[-1] / args.scales[0]:.0f}x data: "
          f"{max(costs) / min(costs):.2f}x")


if __name__ == "__main__":
    main()
