"""Faults: reader failures, non-finite losses, signals, failed writes, odd campaigns."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import paddle
import pytest

from conftest import ROOT, make_frame
from tools.gen_data import generate
from tools.utils import checkpoint, prefetch as prefetch_mod
from metaheac.schema import schema_from_config
from metaheac.errors import DataError
from metaheac.store import open_store



def test_reader_thread_failure_reaches_the_consumer():
    def reader():
        yield 1
        raise DataError("bad shard: broken.pkl")

    got = []
    with pytest.raises(DataError, match="broken.pkl"):
        for item in prefetch_mod.prefetch(reader(), depth=2):
            got.append(item)
    assert got == [1]


def test_consumer_stopping_early_ends_the_reader_thread():
    before = threading.active_count()
    gen = prefetch_mod.prefetch(iter(range(10_000)), depth=2)
    assert next(gen) == 0
    gen.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


@pytest.fixture
def tiny_train(train_setup, tmp_path):
    """A config with a small generated training split, trained in-process."""
    return train_setup(3), tmp_path


def nan_on_second_call(monkeypatch):
    from metaheac import meta
    real, calls = meta.meta_train_loss, []

    def patched(*args, **kw):
        calls.append(1)
        loss = real(*args, **kw)
        return loss * float("nan") if len(calls) == 2 else loss
    monkeypatch.setattr(meta, "meta_train_loss", patched)


def test_nonfinite_loss_stops_without_a_checkpoint(tiny_train, monkeypatch):
    from tools.trainer import train
    make, tmp = tiny_train
    nan_on_second_call(monkeypatch)
    with pytest.raises(FloatingPointError, match="epoch 0, meta-batch 1"):
        train(make())
    assert not os.path.exists(tmp / "out" / "0")


def test_nonfinite_loss_can_be_skipped(tiny_train, monkeypatch, caplog):
    from tools.trainer import train
    make, tmp = tiny_train
    nan_on_second_call(monkeypatch)
    result = train(make(nonfinite_loss="skip"))
    assert np.isfinite(result["loss"])
    state = json.loads((tmp / "out" / "0" / "state.json").read_text())
    assert state["complete"] is True
    params = paddle.load(str(tmp / "out" / "0" / "rec.pdparams"))
    assert all(np.isfinite(v.numpy()).all() for v in params.values())


def test_failed_checkpoint_write_leaves_nothing(tiny_train, monkeypatch):
    make, tmp = tiny_train
    config = make()
    from dygraph_model import DygraphModel
    model = DygraphModel().create_model(config)

    def broken(*args, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint, "save_state", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(str(tmp / "ck"), 0, model, None, config)
    assert os.listdir(tmp / "ck") == []


def test_a_replacement_killed_between_its_renames_loses_nothing(tmp_path, monkeypatch):
    """atomic_dir moves the old copy aside before the new one goes in; a kill
    between the two renames leaves the old copy, which the next start puts back."""
    from metaheac import files

    final = str(tmp_path / "3")
    files.atomic_dir(final, lambda d: open(os.path.join(d, "v"), "w").write("old"))
    real_rename, calls = os.rename, []

    def killed_after_first(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # between "old aside" and "new in place"
        real_rename(src, dst)
    monkeypatch.setattr(files.os, "rename", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_dir(final, lambda d: open(os.path.join(d, "v"), "w").write("new"))
    monkeypatch.setattr(files.os, "rename", real_rename)
    assert open(os.path.join(final, "v")).read() == "old"  # restored on the way out
    # a process killed outright (no cleanup) leaves <final>.old-<pid> and <final>.tmp-<pid>
    dead = 2**22 + 12345  # above any pid this machine hands out
    os.rename(final, f"{final}.old-{dead}")
    os.makedirs(f"{final}.tmp-{dead}")
    done = files.clean_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["3"] and open(os.path.join(final, "v")).read() == "old"
    assert len(done) == 2 and any("restored" in d for d in done)


def test_failed_cache_write_leaves_nothing(tiny_config, tmp_path, monkeypatch):
    config = tiny_config()
    schema = schema_from_config(config)
    path = tmp_path / "a.pkl"
    make_frame(schema, np.random.default_rng(0), [4]).to_pickle(path)

    def broken(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        open_store(str(path), schema, str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []


def test_empty_file_is_named(tiny_config, tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        open_store(str(path), schema_from_config(tiny_config()))


@pytest.mark.slow
def test_sigterm_saves_and_resume_finishes(tmp_path):
    data = tmp_path / "data"
    generate(str(data), seed=6, n_train=6, n_hot=1, n_cold=1, scale=0.5)
    base = [sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m", os.path.join(ROOT, "config.yaml"), "-o",
            f"runner.train_data_dir={data}/train", f"runner.model_save_path={tmp_path}/out", "runner.epochs=1",
            "runner.print_interval=1", "hyper_parameters.batch_size=32", "hyper_parameters.embed_dim=8"]
    proc = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if "batch 2/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Resume with -o runner.model_init_path=" in out
    saved = sorted(os.listdir(tmp_path / "out"))
    assert saved == ["interrupted"], saved  # no epoch directory for the unfinished epoch, no temp dirs
    state = json.loads((tmp_path / "out" / "interrupted" / "state.json").read_text())
    assert state["epoch"] == 0 and state["complete"] is False

    done = subprocess.run(base + [f"runner.model_init_path={tmp_path}/out/interrupted"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "0" / "rec.pdparams").is_file()


def test_infer_handles_single_class_and_unmatched_campaigns(tiny_config, tmp_path):
    from infer import evaluate
    from tools.trainer import train

    config = tiny_config(runner={"model_save_path": str(tmp_path / "out"), "epochs": 1,
                                 "train_data_dir": str(tmp_path / "train"), "test_data_dir": str(tmp_path / "test"),
                                 "output_dir": str(tmp_path / "infer")})
    config["config_abs_dir"] = ROOT
    schema = schema_from_config(config)
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "train")
    os.makedirs(tmp_path / "test")
    make_frame(schema, rng, [20, 30]).to_pickle(tmp_path / "train" / "train_stage1.pkl")
    make_frame(schema, rng, [10, 10, 10], aid_start=10).to_pickle(tmp_path / "test" / "test_stage1.pkl")
    stage2 = make_frame(schema, rng, [12, 12], aid_start=10)
    stage2.loc[stage2["aid"] == 11, "label"] = 1  # campaign 11: candidates of one class
    stage2.loc[stage2.index[:2], "label"] = [0, 1]  # campaign 10 has both
    stage2.to_pickle(tmp_path / "test" / "test_stage2.pkl")
    train(config)
    [result] = evaluate(config)
    by_aid = {c["aid"]: c for c in result["campaigns"]}
    assert set(by_aid) == {10, 11}
    assert by_aid[11]["auc"] is None and by_aid[10]["auc"] is not None
    assert result["unmatched_campaigns"]["stage1_only"] == [12]
    assert result["summary"]["campaigns_with_auc"] == 1
    assert json.loads((tmp_path / "infer" / "metrics.json").read_text())["summary"]["campaigns"] == 2
