"""Meta-training throughput with 1 process vs N processes (data parallel over
gloo on this machine), same data and settings, run side by side.

    python bench/distributed.py [--nproc 2] [--scale 2] [--batch-size 1024]

Each run trains one epoch; the rate is parsed from rank 0's epoch summary
(samples/s counts the rows of every rank). On one CPU machine the processes
share the cores (MKL threads are divided between them), so this measures the
cost of the collective and the scheduling, not a speed-up; see readme.md
for what to expect on several GPUs or machines.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from common import BENCH_DIR, ROOT, config, dataset


def run(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc.stdout + proc.stderr, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    data = dataset(args.scale)
    task_count = config()["hyper_parameters.task_count"]
    common = ["-m", "config_big.yaml", "-o", f"runner.train_data_dir={data}/train", "runner.epochs=1",
              f"hyper_parameters.batch_size={args.batch_size}", "runner.print_interval=1000"]
    print(f"{'processes':>9} {'meta-steps':>10} {'tasks/step':>10} {'epoch s':>8} {'samples/s':>9} {'wall s':>7}")
    for nproc in (1, args.nproc):
        out_dir = os.path.join(BENCH_DIR, f"dist_model_{nproc}")
        script = ["tools/trainer.py", *common, f"runner.model_save_path={out_dir}"]
        if nproc == 1:
            cmd = [sys.executable, *script]
        else:
            cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
                   "--log_dir", os.path.join(BENCH_DIR, "dist_log"), *script]
        log, wall = run(cmd)
        if nproc > 1:
            log += open(os.path.join(BENCH_DIR, "dist_log", "workerlog.0")).read()
        done = re.search(r"epoch 0 done: (\d+) meta-batches, mean loss \S+, ([\d.]+)s \((\d+) samples/s\)", log)
        print(f"{nproc:>9} {done.group(1):>10} {task_count * nproc:>10} {float(done.group(2)):>8.1f} {done.group(3):>9} "
              f"{wall:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
