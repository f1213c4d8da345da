import os
import sys

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.utils.yaml_config import load_config  # noqa: E402

# A small explicit schema: 2 static, 2 sequence (widths 3 and 2), 2 ad fields.
TINY_FEATURES = [
    {"name": "age", "group": "static", "vocab_size": 5},
    {"name": "gender", "group": "static", "vocab_size": 3},
    {"name": "interest1", "group": "sequence", "vocab_size": 11, "width": 3},
    {"name": "kw1", "group": "sequence", "vocab_size": 13, "width": 2},
    {"name": "adCategoryId", "group": "ad", "vocab_size": 4},
    {"name": "productType", "group": "ad", "vocab_size": 3},
]


def write_config(path, runner=None, hyper=None):
    tree = {"runner": {"seed": 7, **(runner or {})},
            "hyper_parameters": {"features": TINY_FEATURES, "embed_dim": 4, "mlp_dims": [6, 5],
                                 "num_expert": 3, "num_output": 2, "task_count": 2, "batch_size": 8,
                                 "local_lr": 0.5, **(hyper or {})}}
    with open(path, "w") as f:
        yaml.safe_dump(tree, f)
    return str(path)


@pytest.fixture
def float64():
    import paddle

    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


@pytest.fixture
def tiny_config(tmp_path):
    """Factory: tiny_config(hyper={...}, runner={...}, overrides=[...]) -> config dict."""
    def make(runner=None, hyper=None, overrides=()):
        return load_config(write_config(tmp_path / "config.yaml", runner, hyper), overrides)
    return make


def random_rows(schema, rng, n=6, min_length=0):
    """Per-field ids [n, C] and sequence lengths [n, Fq] in [min_length, width] (numpy)."""
    ids = rng.integers(0, schema.col_vocab, size=(n, schema.num_id_cols))
    lengths = np.stack([rng.integers(min_length, f.width + 1, size=n) for f in schema.sequence], 1)
    return ids, lengths


def random_task(schema, rng, batch=8):
    """One sampled task as reader_train draws it, before remapping (numpy)."""
    def rows_and_lengths():
        ids = rng.integers(0, schema.col_vocab, size=(batch, schema.num_id_cols))
        lengths = np.zeros((batch, len(schema.sequence)), dtype=np.int32)
        for i, f in enumerate(schema.sequence):
            lengths[:, i] = rng.integers(0, f.width + 1, size=batch)
        return ids + schema.col_offsets, lengths

    (sup, sup_len), (qry, qry_len) = rows_and_lengths(), rows_and_lengths()
    labels = lambda: rng.integers(0, 2, size=batch).astype(np.float32)  # noqa: E731
    return {"sup_rows": sup, "sup_lengths": sup_len, "sup_labels": labels(),
            "qry_rows": qry, "qry_lengths": qry_len, "qry_labels": labels()}


def make_frame(schema, rng, sizes, positive_rate=0.3, aid_start=1):
    """A processed-layout DataFrame for `schema`: campaign aid_start+i has sizes[i] rows."""
    import pandas as pd

    n = int(sum(sizes))
    cols = {"label": (rng.random(n) < positive_rate).astype(np.int64),
            "aid": np.repeat(np.arange(aid_start, aid_start + len(sizes)), sizes).astype(np.int64)}
    for f in schema.static:
        cols[f.name] = rng.integers(0, f.vocab_size, n)
    for f in schema.sequence:
        lengths = rng.integers(0, f.width + 1, n)
        ids = rng.integers(0, f.vocab_size, (n, f.width))
        ids[np.arange(f.width)[None, :] >= lengths[:, None]] = 0
        cols[f.name] = list(ids)
        cols[f.length_col] = lengths
    for f in schema.data_ad:
        per_campaign = rng.integers(0, f.vocab_size, len(sizes))
        cols[f.name] = np.repeat(per_campaign, sizes)
    return pd.DataFrame(cols)


@pytest.fixture
def train_setup(tiny_config, tmp_path):
    """Factory: train_setup(n_train, hyper) generates a small training split
    and returns make(**runner), configs that train on it in-process."""
    def setup(n_train, hyper=None):
        from tools.gen_data import DEFAULT_MAX_IDXS, generate

        data = tmp_path / "data"
        generate(str(data), seed=5, n_train=n_train, n_hot=1, n_cold=1, scale=0.2)

        def make(**runner):
            config = tiny_config(runner={"train_data_dir": str(data / "train"),
                                         "model_save_path": str(tmp_path / "out"), "epochs": 1, **runner},
                                 hyper={"features": None, "max_idxs": DEFAULT_MAX_IDXS, **(hyper or {})})
            config["config_abs_dir"] = ROOT
            return config
        return make
    return setup
