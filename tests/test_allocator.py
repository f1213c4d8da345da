"""metaheac.allocator: freed large blocks are reused, not faulted in again.

Paddle tensors, not numpy arrays: numpy asks for huge pages, which fault
in 2 MB at a time and would hide the difference."""
import resource

import paddle
import pytest

import dygraph_model
from metaheac.allocator import keep_freed_memory

BLOCK = 64 << 20  # bytes: above glibc's largest default mmap threshold (32 MB)


def _minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_freed_large_blocks_are_reused():
    if not keep_freed_memory():
        pytest.skip("not glibc: mallopt unavailable")
    paddle.ones([BLOCK // 4])  # the heap grows to hold one block, once
    before = _minor_faults()
    for _ in range(5):
        block = paddle.ones([BLOCK // 4])  # float32
        del block
    # unmapped on free, each block would fault in BLOCK / 4 KiB = 16,384 fresh pages
    assert _minor_faults() - before < 0.1 * 5 * BLOCK // 4096


@pytest.mark.parametrize("keep", [True, False])
def test_create_model_follows_the_config(tiny_config, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(dygraph_model, "keep_freed_memory", lambda: calls.append(1))
    dygraph_model.DygraphModel().create_model(tiny_config(runner={"keep_freed_memory": keep}))
    assert len(calls) == int(keep)
