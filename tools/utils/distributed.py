"""Data-parallel helpers over paddle.distributed (gloo on CPU, nccl on GPU).

A run is distributed when started by `python -m paddle.distributed.launch`
with more than one process; otherwise every helper here is a no-op and no
collective is ever called.
"""
import logging
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

logger = logging.getLogger("metaheac")


def world():
    """(rank, world size) from the launcher's environment; (0, 1) without it."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get("PADDLE_TRAINERS_NUM", 1))


def is_distributed():
    return world()[1] > 1


def init():
    if is_distributed():
        dist.init_parallel_env()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def set_device(config):
    if config.get("runner.use_gpu"):
        if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            return paddle.set_device("gpu")
        logger.warning("runner.use_gpu is true but this paddle has no usable CUDA device; using CPU")
    return paddle.set_device("cpu")


def start(config):
    """Per-process start of a run: seeds, device, the process group when
    launched with several ranks; ranks other than 0 log warnings only (rank
    0 reports). Returns (rank, world size, device)."""
    rank, size = world()
    seed_everything(config["runner.seed"])
    device = set_device(config)
    init()
    if rank > 0:
        logger.setLevel("WARNING")
    return rank, size, device


def check_all(error):
    """Every rank reports whether its set-up failed; if any did, all raise with
    that rank's message (instead of the others waiting in a collective)."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    reports = []
    dist.all_gather_object(reports, None if error is None else f"{type(error).__name__}: {error}")
    failed = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
    if error is not None:
        raise error
    if failed:
        rank, msg = failed[0]
        raise RuntimeError(f"rank {rank} failed during set-up: {msg}")


def broadcast_parameters(model):
    """Start every rank from rank 0's parameters."""
    if is_distributed():
        with paddle.no_grad():
            for p in model.parameters():
                dist.broadcast(p, src=0)


def average_gradients(model):
    """Mean of the dense gradients over ranks (in place)."""
    rank, size = world()
    if size == 1:
        return
    with paddle.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.scale_(1.0 / size)


def agree(loss, stop):
    """All ranks see the same mean loss and stop request (one small all_reduce),
    so they take the same step / skip / stop decisions and never wait on a
    rank that has left the loop."""
    rank, size = world()
    if size == 1:
        return loss, stop
    t = paddle.to_tensor([loss, 1.0 if stop else 0.0], dtype="float64")
    dist.all_reduce(t)
    values = t.numpy()
    return float(values[0]) / size, bool(values[1] > 0)


def gather(obj):
    """List of `obj` from every rank (rank order)."""
    if not is_distributed():
        return [obj]
    out = []
    dist.all_gather_object(out, obj)
    return out
