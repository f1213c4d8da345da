"""tools/gen_data.py: the shipped sample is its default, and every way of
building data (bench/accuracy.py's panel) gives valid data with a signal."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from tools.gen_data import AD, CLICKS, DEFAULT_MAX_IDXS, KIND_IDS, SEQUENCE, STATIC, generate


def test_default_is_the_shipped_sample(tmp_path):
    generate(str(tmp_path), seed=2021, scale=0.5)
    for rel in ("train/train_stage1.pkl", "test_hot/test_stage1.pkl", "test_cold/test_stage2.pkl"):
        pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / rel), pd.read_pickle(Path(ROOT) / "data" / rel),
                                      check_column_type=False)  # the column names' string storage may differ


@pytest.mark.parametrize("kind_ids,click", [*((k, "additive") for k in KIND_IDS),
                                            *(("several", c) for c in CLICKS if c != "additive")])
def test_every_variant_is_valid_data(tmp_path, kind_ids, click):
    summary = generate(str(tmp_path), seed=3, scale=0.1, n_train=12, n_hot=2, n_cold=2, kind_ids=kind_ids,
                       click=click, departure=(5, 1.0))
    train = pd.read_pickle(tmp_path / "train/train_stage1.pkl")
    for field, top in zip(STATIC + SEQUENCE + AD, sum(DEFAULT_MAX_IDXS, [])):
        ids = np.stack(train[field].to_numpy()) if field in SEQUENCE else train[field].to_numpy()
        assert ids.min() >= 0 and ids.max() <= top, field
    assert train.groupby("aid")[AD].nunique().max().max() == 1  # a campaign's ad ids are constant
    # the planted probabilities rank the labels, well above chance (a few hundred rows)
    assert summary["splits"]["test_hot"]["oracle_gauc"] > 0.65 and summary["splits"]["test_cold"]["oracle_gauc"] > 0.65


def test_unknown_click_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="click one of"):
        generate(str(tmp_path), click="quadratic")
