"""Trainer then infer through the real command lines on a small generated dataset."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from tools.gen_data import generate

pytestmark = pytest.mark.slow  # command lines and processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["hyper_parameters.embed_dim=8", "hyper_parameters.mlp_dims=[16,16]", "hyper_parameters.batch_size=64"]


def run(script, *overrides, cwd, extra=()):
    """Run a command line; unless -v is in `extra`, its output has no third-party warning (Paddle's ccache
    warning at import, the PIR line of jit.save): what a user of the readme's commands sees."""
    cmd = [sys.executable, os.path.join(ROOT, script), "-m", os.path.join(ROOT, "config.yaml"), *extra,
           "-o", *overrides]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    if "-v" not in extra:
        assert [line for line in output.splitlines() if "UserWarning" in line or "PIR" in line] == [], output
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    generate(str(work / "data"), seed=3, n_train=8, n_hot=2, n_cold=2, scale=0.4)
    log = run("tools/trainer.py", "runner.train_data_dir=data/train", "runner.model_save_path=out",
              "runner.epochs=3", *MODEL, cwd=work, extra=["--log-file", "logs/train.log"])
    return work, log


def test_trainer_logs_progress_and_writes_checkpoints(trained):
    work, log = trained
    for epoch in range(3):
        ckpt = work / "out" / str(epoch)
        assert (ckpt / "rec.pdparams").is_file() and (ckpt / "rec.pdopt").is_file()
        assert "embed_dim: 8" in (ckpt / "config.yaml").read_text()
    assert not [p for p in os.listdir(work / "out") if ".tmp" in p]
    # the progress line: position, rate, ETA, loss, throughput, reader share
    # one of the 8 campaigns is held out for meta-validation (config.yaml): 7 train, 42 meta-batches an epoch
    assert "meta-validation: 1 campaigns held out; training on 7 campaigns" in log and "42 meta-batches per epoch" in log
    assert "epoch 2 batch 42/42 | " in log and "meta-batches/s" in log and "ETA" in log
    assert "samples/s" in log and "reader" in log
    assert "meta-validation at meta-step 20: GAUC" in log
    assert "training finished: 3 epochs, 126 meta-batches" in log and "kept meta-step" in log
    assert (work / "out" / "train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training finished: 3 epochs" in (work / "logs" / "train.log").read_text()  # --log-file


def test_infer_beats_chance_and_writes_metrics(trained):
    work, _ = trained
    log = run("infer.py", "runner.test_data_dir=data/test_hot", "runner.infer_load_path=out",
              "runner.infer_start_epoch=2", "runner.infer_end_epoch=3", "runner.infer_train_epoch=5",
              "runner.infer_batch_size=32", "runner.output_dir=hot_metrics", *MODEL, cwd=work)
    result = json.loads((work / "hot_metrics" / "metrics.json").read_text())
    summary = result["summary"]
    assert summary["campaigns"] == 2 and len(result["campaigns"]) == 2
    assert summary["auc"] > 0.6 and summary["gauc"] > 0.6
    first = result["campaigns"][0]
    for key in ("aid", "seed_rows", "candidates", "auc", "precision@5%", "recall@5%", "adaptation", "adapted"):
        assert key in first
    assert first["adaptation"] == "mixture" and first["adapted"].startswith("routes ")
    assert "[2/2 | " in log and "ETA" in log and "epoch 2 summary: AUC" in log


def test_infer_writes_audience_campaigns_and_report(trained):
    import pandas as pd

    work, _ = trained
    run("infer.py", "runner.test_data_dir=data/test_cold", "runner.infer_load_path=out", "runner.infer_start_epoch=2",
        "runner.infer_end_epoch=3", "runner.output_dir=report", "runner.audience_count=7", *MODEL, cwd=work)
    out = work / "report"
    assert (out / "metrics.json").is_file()
    campaigns = pd.read_csv(out / "campaigns.csv")
    from tools.utils.report import CAMPAIGN_COLUMNS
    assert list(campaigns.columns) == CAMPAIGN_COLUMNS and len(campaigns) == 2
    stage2 = pd.read_pickle(work / "data" / "test_cold" / "test_stage2.pkl")
    for aid in campaigns["aid"]:
        audience = pd.read_csv(out / "audience" / f"{aid}.csv")
        assert list(audience.columns) == ["rank", "uid", "score", "label"]
        assert len(audience) == 7 and list(audience["rank"]) == list(range(1, 8))
        assert audience["score"].is_monotonic_decreasing
        users = stage2[stage2["aid"] == aid].set_index("uid")["label"]
        assert audience["uid"].isin(users.index).all()
        assert (users.loc[audience["uid"]].to_numpy() == audience["label"].to_numpy()).all()
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_resume_from_model_init_path(trained):
    """A finished epoch-2 checkpoint resumes with epoch 3 (numbering and sampling continue)."""
    work, _ = trained
    log = run("tools/trainer.py", "runner.train_data_dir=data/train", "runner.model_save_path=resumed",
              "runner.model_init_path=out/2", "runner.epochs=4", *MODEL, cwd=work)
    assert "training epochs 3..3" in log
    assert sorted(os.listdir(work / "resumed")) == ["3", "train.png"]
    before = paddle.load(str(work / "out" / "2" / "rec.pdparams"))
    after = paddle.load(str(work / "resumed" / "3" / "rec.pdparams"))
    assert not np.allclose(before["expert_w0"].numpy(), after["expert_w0"].numpy())
    state = json.loads((work / "resumed" / "3" / "state.json").read_text())
    earlier = json.loads((work / "out" / "2" / "state.json").read_text())
    meta_validation = state.pop("meta_validation")  # the resumed epoch's own checks (config.yaml holds some out)
    assert meta_validation["checks"] >= 2 and meta_validation["best_meta_step"] in (20, 40, 42)
    assert state == {"epoch": 3, "complete": True, "meta_batches_done": 42, "run_id": earlier["run_id"],
                     "trained_ad_rows": earlier["trained_ad_rows"],
                     "features": earlier["features"]}  # the same run, resumed, on the same campaigns and schema


def test_bad_override_fails_cleanly(trained):
    work, _ = trained
    cmd = [sys.executable, os.path.join(ROOT, "tools/trainer.py"), "-m", os.path.join(ROOT, "config.yaml"),
           "-o", "runner.epoch=2"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config key 'runner.epoch'" in proc.stderr and "Traceback" not in proc.stderr


def test_training_is_reproducible(tiny_config, tmp_path):
    from tools.trainer import train

    data = tmp_path / "data"
    generate(str(data), seed=4, n_train=4, n_hot=1, n_cold=1, scale=0.2)
    states = []
    for name in ("a", "b"):
        config = tiny_config(runner={"train_data_dir": str(data / "train"), "model_save_path": str(tmp_path / name),
                                     "epochs": 1},
                             hyper={"features": None, "max_idxs": [[3, 2, 855, 5, 7, 2, 1],
                                                                   [124, 82, 12, 2000, 1000, 500, 500],
                                                                   [78, 137, 14, 39, 32, 3]]})
        config["config_abs_dir"] = ROOT  # model package modules are found next to the config
        train(config)
        states.append(paddle.load(str(tmp_path / name / "0" / "rec.pdparams")))
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key].numpy(), states[1][key].numpy(), err_msg=key)


def test_expand_matches_infer_audience(trained):
    import pandas as pd

    work, _ = trained
    common = ["runner.infer_load_path=out", "runner.infer_start_epoch=2", "runner.infer_end_epoch=3",
              "runner.audience_fraction=0.2", *MODEL]
    run("infer.py", "runner.test_data_dir=data/test_hot", "runner.output_dir=hot", *common, cwd=work)
    aid = int(pd.read_csv(work / "hot" / "campaigns.csv")["aid"][0])
    for stage in (1, 2):
        frame = pd.read_pickle(work / "data" / "test_hot" / f"test_stage{stage}.pkl")
        frame[frame["aid"] == aid].to_pickle(work / f"one_stage{stage}.pkl")
    log = run("tools/expand.py", *common, cwd=work, extra=["--seeds", "one_stage1.pkl",
                                                           "--candidates", "one_stage2.pkl", "--out", "aud.csv"])
    assert f"campaign {aid}" in log
    expanded = pd.read_csv(work / "aud.csv")
    inferred = pd.read_csv(work / "hot" / "audience" / f"{aid}.csv")
    assert list(expanded.columns) == ["rank", "uid", "score"]
    assert list(expanded["uid"]) == list(inferred["uid"])
    np.testing.assert_allclose(expanded["score"], inferred["score"], rtol=1e-5)

    # lift@k from the ranked audience (its top 20% covers every k): campaigns.csv and metrics.json agree
    campaigns = pd.read_csv(work / "hot" / "campaigns.csv").set_index("aid")
    metrics_json = json.loads((work / "hot" / "metrics.json").read_text())
    for aid, row in campaigns.iterrows():
        audience = pd.read_csv(work / "hot" / "audience" / f"{aid}.csv")
        base = row["candidate_positives"] / row["candidates"]
        for fraction in (0.01, 0.05, 0.10, 0.20):
            k = math.ceil(round(fraction * row["candidates"], 9))
            assert row[f"lift@{fraction:.0%}"] == pytest.approx(audience["label"][:k].mean() / base, rel=1e-5)
    for key in ("lift@1%", "lift@5%", "lift@10%", "lift@20%"):
        assert metrics_json["summary"][key] == pytest.approx(campaigns[key].mean(), rel=1e-5)


def test_export_of_a_mixture_campaign_is_refused_in_one_line(trained):
    import pandas as pd

    work, _ = trained
    frame = pd.read_pickle(work / "data" / "test_cold" / "test_stage1.pkl")
    frame[frame["aid"] == frame["aid"].iloc[0]].to_pickle(work / "seeds_one.pkl")
    cmd = [sys.executable, os.path.join(ROOT, "tools/export.py"), "-m", os.path.join(ROOT, "config.yaml"),
           "--seeds", "seeds_one.pkl", "-o", "runner.infer_load_path=out", "runner.infer_start_epoch=2",
           "runner.infer_end_epoch=3", *MODEL]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "runner.adaptation=mixture adapts a campaign outside the network" in proc.stderr
    assert "-o runner.adaptation=finetune" in proc.stderr


@pytest.mark.parametrize("campaign", [False, True])
def test_export_matches_dygraph(trained, campaign):
    import pandas as pd
    from paddle import inference

    from metaheac.adapt import adapt
    from tools.utils.seed_files import read_campaign
    from tools.utils.yaml_config import load_config

    work, _ = trained
    overrides = ["runner.infer_load_path=out", "runner.infer_start_epoch=2", "runner.infer_end_epoch=3", *MODEL]
    out = work / ("export_campaign" if campaign else "export_meta")
    extra = ["--out", str(out)]
    if campaign:
        frame = pd.read_pickle(work / "data" / "test_cold" / "test_stage1.pkl")
        frame[frame["aid"] == frame["aid"].iloc[0]].to_pickle(work / "seeds.pkl")
        extra += ["--seeds", "seeds.pkl", "-v"]
        # a fine-tuned campaign is a network; the mixture's adaptation is not (the previous test)
        overrides.append("runner.adaptation=finetune")
    log = run("tools/export.py", *overrides, cwd=work, extra=extra)
    # hidden by default (run() checks), -v shows Paddle's own lines
    assert ("PIR" in log) == campaign

    # the same model in dygraph
    config = load_config(os.path.join(ROOT, "config.yaml"), overrides, cwd=str(work))
    from dygraph_model import DygraphModel
    from tools.utils.checkpoint import load_checkpoint
    model = DygraphModel().create_model(config)
    _, learned = load_checkpoint(str(work / "out" / "2"), model)
    if campaign:
        model.set_state_dict(adapt(learned, read_campaign(str(work / "seeds.pkl"), config), config).state_dict())
    schema = model.schema
    frame = pd.read_pickle(work / "data" / "test_hot" / "test_stage2.pkl").iloc[:300]
    static = frame[[f.name for f in schema.static]].to_numpy().astype("int64")
    seq = np.concatenate([np.stack(frame[f.name].to_numpy()) for f in schema.sequence], 1).astype("int64")
    lengths = frame[[f.length_col for f in schema.sequence]].to_numpy().astype("int64")
    ad = frame[[f.name for f in schema.data_ad]].to_numpy().astype("int64")
    inputs = [static, seq, lengths, ad]
    want = model([paddle.to_tensor(x) for x in inputs]).numpy()

    loaded = paddle.jit.load(str(out / "model"))
    got = loaded(*[paddle.to_tensor(x) for x in inputs]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)

    predictor = inference.create_predictor(inference.Config(str(out / "model.json"), str(out / "model.pdiparams")))
    for name, x in zip(predictor.get_input_names(), inputs):
        handle = predictor.get_input_handle(name)
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
    predictor.run()
    served = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(served.reshape(-1), want, atol=1e-5)
    assert predictor.get_input_names() == ["static_ids", "seq_ids", "seq_lengths", "ad_ids"]
