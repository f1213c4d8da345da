"""Data-parallel training and inference with 2 CPU ranks over gloo on loopback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tools.gen_data import generate

pytestmark = pytest.mark.slow  # command lines and processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["hyper_parameters.embed_dim=8", "hyper_parameters.mlp_dims=[16,16]", "hyper_parameters.batch_size=64"]


def launch(script, args, cwd, nproc=2, timeout=240):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
           "--log_dir", str(cwd / f"log_{nproc}"), os.path.join(ROOT, script), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    logs = "".join(open(cwd / f"log_{nproc}" / f).read() for f in sorted(os.listdir(cwd / f"log_{nproc}"))
                   if f.startswith("workerlog"))
    return proc.returncode, proc.stdout + proc.stderr + logs


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("dist")
    generate(str(work / "data"), seed=8, n_train=6, n_hot=3, n_cold=1, scale=0.4)
    return work


def test_ranks_stay_identical_and_loss_decreases(work):
    os.makedirs(work / "dump")
    rc, out = launch("tests/dist_driver.py", ["-m", os.path.join(ROOT, "config.yaml"), "--dump", str(work / "dump"),
                                              "-o", "runner.train_data_dir=data/train", "runner.model_save_path=model",
                                              "runner.epochs=2", "runner.print_interval=1", *MODEL], work)
    assert rc == 0, out[-3000:]
    a, b = np.load(work / "dump" / "rank0.npz"), np.load(work / "dump" / "rank1.npz")
    assert set(a.files) == set(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert "effective meta-batch 10 tasks" in out
    losses = np.load(work / "dump" / "losses0.npy")
    np.testing.assert_array_equal(losses, np.load(work / "dump" / "losses1.npy"))  # agreed every step
    assert len(losses) >= 10 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert sorted(os.listdir(work / "model")) == ["0", "1", "train.png"]  # rank 0 alone writes them


def test_distributed_infer_equals_single_process(work):
    common = ["-m", os.path.join(ROOT, "config.yaml"), "-o", "runner.test_data_dir=data/test_hot",
              "runner.infer_load_path=model", "runner.infer_start_epoch=1", "runner.infer_end_epoch=2", *MODEL]
    rc, out = launch("infer.py", common + ["runner.output_dir=multi"], work)
    assert rc == 0, out[-3000:]
    single = subprocess.run([sys.executable, os.path.join(ROOT, "infer.py"), *common, "runner.output_dir=single"],
                            cwd=work, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    a = json.loads((work / "single" / "metrics.json").read_text())
    b = json.loads((work / "multi" / "metrics.json").read_text())
    assert [c["aid"] for c in a["campaigns"]] == [c["aid"] for c in b["campaigns"]]
    for key in ("auc", "gauc", "precision@5%", "recall@5%"):
        assert b["summary"][key] == pytest.approx(a["summary"][key], abs=1e-6)
    for x, y in zip(a["campaigns"], b["campaigns"]):
        assert y["auc"] == pytest.approx(x["auc"], abs=1e-6)
    assert sorted(os.listdir(work / "multi" / "audience")) == sorted(os.listdir(work / "single" / "audience"))


@pytest.mark.parametrize("fault, message", [("setup", "rank 1 failed during set-up: DataError: shard-1.pkl"),
                                              ("kill", "another rank failed first")])
def test_a_failing_rank_ends_the_whole_job(work, fault, message):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(work / f"log_{fault}"), os.path.join(ROOT, "tools", "trainer.py"), "-m",
           os.path.join(ROOT, "config.yaml"), "-o", "runner.train_data_dir=data/train",
           f"runner.model_save_path={fault}", f"runner.train_reader_path={ROOT}/tests/dist_fault_reader", *MODEL]
    env = dict(os.environ, METAHEAC_TEST_FAULT=fault)
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=180, env=env)  # no hang
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert not os.path.exists(work / fault / "0")  # nothing that looks like a finished checkpoint
