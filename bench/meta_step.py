"""Seconds per meta-step (train_forward + backward + Adam step) on the full
Tencent vocabulary, first and second order, at two batch sizes, with the
achieved GFLOP/s next to a plain matmul's GFLOP/s measured in the same run.

    python bench/meta_step.py [--batches 256 1024] [--steps 5] [--profile]
    python bench/meta_step.py --allocator [--rounds 3]   # glibc default vs keep_freed_memory

FLOPs are counted for the dense layers only (experts, MLP gates, critics);
the table gathers (embedding, wide weights, lookup gates), pooling and
elementwise ops are not counted, so the achieved figure is a lower bound.
--profile also prints Paddle's per-operator CPU table over --steps more steps
of each setting (where the time goes: matmuls, gathers, weight decay, Adam).
--allocator runs the table in child processes, runner.keep_freed_memory off
and on by turns for --rounds rounds (the setting is process-wide), and adds
each child's minor page faults per meta-step, its start-up included.
Forward = 2*m*n*k per matmul; a backward costs two forward matmuls (grads
of inputs and weights). First order per task: support forward+backward
(inner gradient) + query forward+backward written out in
flops_per_meta_step().
"""
import argparse
import resource
import subprocess
import sys

from common import config, dataset, threads_from_env, timed

threads_from_env()


def forward_flops_per_row(cfg, schema):
    E, dims = cfg["hyper_parameters.embed_dim"], cfg["hyper_parameters.mlp_dims"]
    K, O = cfg["hyper_parameters.num_expert"], cfg["hyper_parameters.num_output"]
    F, Fg = schema.num_user_fields, len(schema.gate_positions(cfg["hyper_parameters.gate_fields"]))
    H = dims[-1]
    flops = 2 * F * E * K * dims[0]                                   # expert layer 0 (fused)
    flops += sum(2 * K * a * b for a, b in zip(dims[:-1], dims[1:]))  # expert layers 1..
    if cfg["hyper_parameters.gate"] == "mlp":                         # lookup gates are gathers
        gate_in = (Fg + 1) * E
        flops += 2 * (2 * gate_in * H) + 2 * H * K + 2 * H * O        # two gate MLPs
    flops += 2 * H * O                                                # critics
    return flops


def flops_per_meta_step(cfg, schema, order):
    B, T = cfg["hyper_parameters.batch_size"], cfg["hyper_parameters.task_count"]
    fwd = forward_flops_per_row(cfg, schema) * B
    # support fwd + bwd, query fwd + bwd; second order also back-propagates
    # through the support backward (about one more forward+backward)
    per_task = 3 * fwd + 3 * fwd + (3 * fwd if order == 2 else 0)
    return T * per_task


def matmul_gflops(B, schema, cfg):
    import paddle

    K, E, h0 = cfg["hyper_parameters.num_expert"], cfg["hyper_parameters.embed_dim"], cfg["hyper_parameters.mlp_dims"][0]
    a = paddle.randn([B * 2, schema.num_user_fields * E])
    w = paddle.randn([schema.num_user_fields * E, K * h0])
    sec = timed(lambda: float(paddle.matmul(a, w).sum()), repeat=20, warmup=3)
    return 2 * a.shape[0] * a.shape[1] * w.shape[1] / sec / 1e9


def profile(step, steps):
    """Paddle's operator table (CPU time, ms) over `steps` calls of step()."""
    from paddle import profiler

    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda p: None)
    prof.start()
    for _ in range(steps):
        step()
        prof.step()
    prof.stop()
    prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms",
                 views=[profiler.SummaryView.OperatorView])


def compare_allocators(args):
    """The table with keep_freed_memory off and on, alternating child processes."""
    base = [sys.executable, __file__, "--steps", str(args.steps), "--scale", str(args.scale),
            "--batches", *map(str, args.batches), "--orders", *map(str, args.orders)]
    settings = len(args.batches) * len(args.orders)
    for rnd in range(args.rounds):
        for keep in ("false", "true"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
            out = subprocess.run(base + ["-o", f"runner.keep_freed_memory={keep}"], capture_output=True, text=True,
                                 check=True).stdout
            faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
            # every setting runs 1 warm-up + --steps timed steps; the child's start-up is counted too
            per_step = faults / (settings * (args.steps + 1))
            print(f"round {rnd + 1}, keep_freed_memory={keep}: {per_step:,.0f} minor page faults per meta-step "
                  f"(the child's start-up included)")
            print("\n".join(line for line in out.splitlines() if line.strip()[:1].isdigit() or "batch" in line))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true", help="print the per-operator table of each setting")
    parser.add_argument("--allocator", action="store_true",
                        help="compare runner.keep_freed_memory off and on (child processes, alternating)")
    parser.add_argument("--rounds", type=int, default=3, help="--allocator: rounds of off, on")
    parser.add_argument("-o", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    if args.allocator:
        return compare_allocators(args)

    import paddle

    from dygraph_model import DygraphModel
    from reader_train import RecDataset

    data = dataset(args.scale)
    print(f"{'batch':>6} {'order':>5} {'s/step':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} {'matmul GFLOP/s':>14} {'share':>6}")
    for B in args.batches:
        for order in args.orders:
            cfg = config([f"runner.train_data_dir={data}/train", f"hyper_parameters.batch_size={B}",
                          f"hyper_parameters.meta_order={order}", *args.overrides])
            paddle.seed(0)
            dm = DygraphModel()
            model = dm.create_model(cfg)
            opt = dm.create_optimizer(model, cfg)
            reader = RecDataset([f"{data}/train/train_stage1.pkl"], cfg)
            batches = iter(reader)
            pool = [next(batches) for _ in range((2 if args.profile else 1) * args.steps + 1)]
            it = iter(pool)

            def step():
                loss, _, _ = dm.train_forward(model, [], next(it), cfg)
                loss.backward()
                opt.step()
                opt.clear_grad(set_to_zero=False)  # as tools/trainer.py
                float(loss)

            sec = timed(step, repeat=args.steps, warmup=1)
            gflop = flops_per_meta_step(cfg, reader.schema, order) / 1e9
            mm = matmul_gflops(B, reader.schema, cfg)
            print(f"{B:>6} {order:>5} {sec:>8.3f} {gflop:>10.2f} {gflop / sec:>8.1f} {mm:>14.1f} {gflop / sec / mm:>6.0%}",
                  flush=True)
            if args.profile:
                profile(step, args.steps)


if __name__ == "__main__":
    main()
