"""PaddleRec compatibility: its reference network (config_paddlerec.yaml), its
plain config dicts, its data file names, and its own trainer driving this
package (when a PaddleRec checkout is given in PADDLEREC_DIR)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from conftest import ROOT, TINY_FEATURES, make_frame
from dygraph_model import DygraphModel
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from tools.utils.yaml_config import load_config


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _relu(x):
    return np.maximum(x, 0.0)


def test_reference_network_follows_the_papers_equations(float64):
    """config_paddlerec.yaml's network, on a hand-built batch of two users,
    equals the paper's equations (as PaddleRec implements them) written out
    in numpy from the network's own parameters."""
    config = load_config(os.path.join(ROOT, "config_paddlerec.yaml"), [
        "hyper_parameters.max_idxs=null", f"hyper_parameters.features={TINY_FEATURES}",
        "hyper_parameters.embed_dim=3", "hyper_parameters.mlp_dims=[4]"])
    paddle.seed(3)
    net = DygraphModel().create_model(config)
    net.eval()
    P = {name: p.numpy() for name, p in net.named_parameters()}
    assert set(P) == {"embedding", "expert_w0", "expert_b0", "expert_gate_w0", "expert_gate_b0", "expert_gate_w1",
                      "expert_gate_b1", "critic_gate_w0", "critic_gate_b0", "critic_gate_w1", "critic_gate_b1",
                      "critic_w", "critic_b"}  # one expert layer, two MLP gates, no wide part
    K, O, H, E = 8, 5, 4, 3
    # fields: age(5), gender(3) static; interest1 (width 3), kw1 (width 2) lists; adCategoryId, productType
    static = np.array([[1, 2], [4, 0]])
    seq = np.array([[3, 7, 9, 12, 0], [5, 0, 0, 1, 2]])       # interest1 ids | kw1 ids (padding past length)
    lengths = np.array([[2, 1], [0, 2]])                     # user 2 has no interest1 at all
    ad = np.array([[2, 1], [3, 0]])
    offset = {f.name: f.offset for f in net.schema.fields}
    emb = lambda name, i: P["embedding"][offset[name] + i]   # noqa: E731

    expected = []
    for b in range(2):
        user = [emb("age", static[b, 0]), emb("gender", static[b, 1])]
        for name, cols, n in (("interest1", seq[b, :3], lengths[b, 0]), ("kw1", seq[b, 3:], lengths[b, 1])):
            user.append(np.mean([emb(name, i) for i in cols[:n]], axis=0) if n else np.zeros(E))
        u = np.concatenate(user)                                                  # user representation [F*E]
        a = np.concatenate([np.mean(user, axis=0), emb("adCategoryId", ad[b, 0]), emb("productType", ad[b, 1])])
        g = _softmax(P["expert_gate_w1"].T @ _relu(P["expert_gate_w0"].T @ a + P["expert_gate_b0"])
                     + P["expert_gate_b1"])                                       # expert gate [K]
        experts = [_relu(u @ P["expert_w0"][:, k * H:(k + 1) * H] + P["expert_b0"][k * H:(k + 1) * H])
                   for k in range(K)]                                             # K x [H]
        f = np.sum([g[k] * experts[k] for k in range(K)], axis=0)                 # hybrid experts [H]
        h = _softmax(P["critic_gate_w1"].T @ _relu(P["critic_gate_w0"].T @ a + P["critic_gate_b0"])
                     + P["critic_gate_b1"])                                       # critic gate [O]
        critics = _sigmoid(f @ P["critic_w"] + P["critic_b"])                     # O critics [O]
        expected.append(float(h @ critics))
    assert h.shape == (O,)

    out = net([paddle.to_tensor(x) for x in (static, seq, lengths, ad)]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def _paddlerec_dict(tree):
    """The flat dict PaddleRec's load_yaml makes: nested dicts flattened to
    dotted keys, nothing else added, no defaults."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value
    walk(tree, "")
    return flat


def test_a_plain_paddlerec_config_dict_trains(tmp_path):
    """As PaddleRec's trainer drives the model: a config dict without this
    package's defaults, every entry of the data folder in file_list (the
    cache folder too), the reader wrapped in an unbatched DataLoader."""
    tree = {"runner": {"train_data_dir": "data/train", "train_reader_path": "reader_train", "epochs": 1,
                       "print_interval": 1, "use_gpu": False, "seed": 2021},
            "hyper_parameters": {"features": TINY_FEATURES, "embed_dim": 4, "mlp_dims": [8, 8], "num_expert": 3,
                                 "num_output": 2, "task_count": 2, "batch_size": 8, "local_lr": 0.0002,
                                 "optimizer": {"class": "adam", "global_learning_rate": 0.001,
                                               "local_test_learning_rate": 0.001, "strategy": "async"}}}
    config = _paddlerec_dict(tree)
    config["config_abs_dir"] = str(tmp_path)
    schema = schema_from_config(config)
    os.makedirs(tmp_path / "data" / "train" / ".metaheac_cache")
    make_frame(schema, np.random.default_rng(0), [20, 12]).to_pickle(tmp_path / "data" / "train" / "train_stage1.pkl")
    from reader_train import RecDataset

    file_list = [str(tmp_path / "data" / "train" / f) for f in os.listdir(tmp_path / "data" / "train")]
    model_class = DygraphModel()
    net = model_class.create_model(config)
    optimizer = model_class.create_optimizer(net, config)
    metric_list, _ = model_class.create_metrics()
    loader = paddle.io.DataLoader(RecDataset(file_list, config), batch_size=None)
    steps = 0
    for batch in loader():
        assert len(batch[0]) == 2  # PaddleRec's trainer counts len(batch[0]) samples per batch
        loss, metric_list, printed = model_class.train_forward(net, metric_list, batch, config)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        assert np.isfinite(float(printed["loss"].numpy()))
        steps += 1
    assert steps == 4  # ceil(32 rows / batch 8)
    assert config["hyper_parameters.num_expert"] == 3 and config["hyper_parameters.gate"] == "lookup"  # defaults filled


def test_paddlerec_file_names_are_read(tiny_config, tmp_path):
    """PaddleRec's download script names the stages test_hot_stage1.pkl / test_hot_stage2.pkl."""
    from reader_test import RecDataset

    config = tiny_config()
    schema = schema_from_config(config)
    folder = tmp_path / "test_hot_data"
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    make_frame(schema, rng, [6, 5]).to_pickle(folder / "test_hot_stage1.pkl")
    make_frame(schema, rng, [9, 4]).to_pickle(folder / "test_hot_stage2.pkl")
    reader = RecDataset([str(folder / f) for f in os.listdir(folder)], config)
    assert reader.aids == [1, 2] and reader.stage2.source.endswith("test_hot_stage2.pkl")
    os.remove(folder / "test_hot_stage2.pkl")
    with pytest.raises(DataError, match="test_hot_stage1.pkl"):
        RecDataset([str(folder / f) for f in os.listdir(folder)], config)


PADDLEREC = os.environ.get("PADDLEREC_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not PADDLEREC, reason="set PADDLEREC_DIR to a PaddleRec checkout to run its trainer on this package")
def test_paddlerec_trainer_drives_the_package(tmp_path):
    """Copied into PaddleRec's tree as models/multitask/metaheac, PaddleRec's own
    tools/trainer.py meta-trains it and this package's infer.py evaluates the
    checkpoint it wrote."""
    from tools.gen_data import generate

    shutil.copytree(os.path.join(PADDLEREC, "tools"), tmp_path / "tools")
    model_dir = tmp_path / "models" / "multitask" / "metaheac"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if not rel.startswith(("tests/", "bench/", "data/", "docs/", ".ci/")):
            os.makedirs((model_dir / rel).parent, exist_ok=True)
            shutil.copy(os.path.join(ROOT, rel), model_dir / rel)
    generate(str(model_dir / "data"), seed=3, n_train=8, n_hot=2, n_cold=2, scale=0.3)
    with open(os.path.join(ROOT, "config_paddlerec.yaml")) as f:
        tree = yaml.safe_load(f)
    tree["runner"].update(print_interval=1)
    tree["hyper_parameters"].update(embed_dim=8, mlp_dims=[16], batch_size=64)
    with open(model_dir / "config.yaml", "w") as f:
        yaml.safe_dump(tree, f)

    def run(*cmd):
        proc = subprocess.run([sys.executable, "-u", *cmd], cwd=model_dir, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    log = run("../../../tools/trainer.py", "-m", "config.yaml")
    assert "epoch: 0 done" in log  # PaddleRec's own trainer's log line
    assert (model_dir / "output_model_paddlerec" / "0" / "rec.pdparams").is_file()
    run("infer.py", "-m", "config.yaml", "-o", "runner.output_dir=evaluated")
    metrics = json.loads((model_dir / "evaluated" / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(model_dir / "output_model_paddlerec" / "0" / "rec.pdparams")
    assert metrics["summary"]["campaigns"] == 2 and 0 < metrics["summary"]["gauc"] < 1


def test_model_files_never_import_tools():
    """In PaddleRec's tree `tools` is PaddleRec's package: the model side must not import ours."""
    import ast
    import glob

    files = [os.path.join(ROOT, n) for n in ("net.py", "dygraph_model.py", "reader_train.py", "reader_test.py",
                                             "reader_infer.py")] + glob.glob(os.path.join(ROOT, "metaheac", "*.py"))
    for path in files:
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "tools" or n.startswith("tools.") for n in names), f"{path} imports {names}"
