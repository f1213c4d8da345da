"""metaheac.allocator: freed large blocks are reused, not faulted in again."""
import subprocess
import sys

import pytest

import dygraph_model
from conftest import ROOT

# A fresh process, so no other thread of the test session adds page faults
# (ru_minflt counts all threads). Paddle tensors, not numpy arrays: numpy
# asks for huge pages, which fault in 2 MB at a time and hide the difference.
PROBE = """
import resource, sys
from metaheac.allocator import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("unsupported"); raise SystemExit
import paddle
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
paddle.ones([16 << 20])  # 64 MB, above glibc's largest default mmap threshold (32 MB)
before = faults()
for _ in range(20):
    block = paddle.ones([16 << 20])
    del block
print(faults() - before)
"""
PAGES = 20 * (64 << 20) // 4096  # twenty blocks of fresh 4 KiB pages


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_freed_large_blocks_are_reused():
    kept = _faults("keep")
    if kept == "unsupported":
        pytest.skip("not glibc: mallopt unavailable")
    assert int(_faults("default")) > 0.9 * PAGES  # glibc's default: each block faulted in afresh
    # Kept, a freed block is reused unless a small allocation has split it, when
    # the heap grows once more: 0 to 5 of the 20 blocks in 35 runs of this probe.
    assert int(kept) < 0.5 * PAGES


def test_create_model_keeps_freed_memory(tiny_config, monkeypatch):
    """In the model, not a tool, so PaddleRec's trainer gets it too."""
    calls = []
    monkeypatch.setattr(dygraph_model, "keep_freed_memory", lambda: calls.append(1))
    dygraph_model.DygraphModel().create_model(tiny_config())
    assert len(calls) == 1
