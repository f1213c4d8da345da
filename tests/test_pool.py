"""Unlabelled pools, Parquet, several campaigns against one pool (tools/expand.py)."""
import argparse
import os

import numpy as np
import pandas as pd
import paddle
import pytest

from conftest import ROOT, make_frame
from dygraph_model import DygraphModel
from metaheac.errors import ConfigError, DataError
from metaheac.schema import schema_from_config
from metaheac.store import open_store
from tools.convert import convert
from tools.utils.checkpoint import save_checkpoint


@pytest.fixture
def setup(tiny_config, tmp_path):
    """A saved (untrained) model, a seed file of two campaigns and a 300-user pool (pickle and Parquet)."""
    config = tiny_config(runner={"model_save_path": str(tmp_path / "model"), "infer_end_epoch": 1,
                                 "audience_fraction": 1.0, "route_prior": 0.1, "infer_train_epoch": 2},
                         hyper={"wide": True, "gate": "lookup", "gate_fields": ["adCategoryId"]})
    config["config_abs_dir"] = ROOT  # the model package's modules are found beside the config
    schema = schema_from_config(config)
    paddle.seed(0)
    save_checkpoint(config["runner.model_save_path"], 0, DygraphModel().create_model(config), None, config)
    rng = np.random.default_rng(0)
    make_frame(schema, rng, [40, 25], aid_start=7).to_pickle(tmp_path / "seeds.pkl")
    users = make_frame(schema, rng, [300]).drop(columns=["label", "aid", "adCategoryId", "productType"])
    users.insert(0, "uid", rng.permutation(10_000)[:300])
    users.to_pickle(tmp_path / "pool.pkl")
    convert(str(tmp_path / "pool.pkl"), str(tmp_path / "pool.parquet"), rows_per_group=64)
    return config, schema, tmp_path


def expand(config, seeds, pool, out, **runner):
    from tools.expand import expand as run

    config = {**config, **{f"runner.{k}": v for k, v in runner.items()}}
    return run(config, argparse.Namespace(seeds=str(seeds), candidates=str(pool), out=str(out), epoch=None))


@pytest.mark.parametrize("adaptation", ["finetune", "mixture"])
def test_same_users_same_scores_whatever_the_format_and_chunk(setup, adaptation):
    config, _, tmp = setup
    results = []
    for pool, chunk in (("pool.pkl", 10_000), ("pool.parquet", 10_000), ("pool.parquet", 7), ("pool.pkl", 50)):
        out = tmp / f"out_{pool}_{chunk}"
        summary = expand(config, tmp / "seeds.pkl", tmp / pool, out, pool_chunk_rows=chunk, adaptation=adaptation)
        assert [row["aid"] for row in summary] == [7, 8] and all(row["audience_size"] == 300 for row in summary)
        results.append({aid: pd.read_csv(out / f"{aid}.csv") for aid in (7, 8)})
    for other in results[1:]:
        for aid in (7, 8):
            assert list(other[aid]["uid"]) == list(results[0][aid]["uid"])
            np.testing.assert_allclose(other[aid]["score"], results[0][aid]["score"], atol=2e-6)  # CSV keeps 6 digits
    first = results[0][7]
    assert list(first.columns) == ["rank", "uid", "score"] and first["score"].is_monotonic_decreasing
    assert (tmp / "out_pool.pkl_10000" / "summary.csv").is_file()


@pytest.mark.parametrize("adaptation", ["finetune", "mixture"])  # mixture: one pass of the experts for both
def test_each_campaign_ranks_as_it_would_alone(setup, adaptation):
    config, _, tmp = setup
    expand(config, tmp / "seeds.pkl", tmp / "pool.parquet", tmp / "both", pool_chunk_rows=100, adaptation=adaptation)
    seeds = pd.read_pickle(tmp / "seeds.pkl")
    seeds[seeds["aid"] == 8].to_pickle(tmp / "seeds8.pkl")
    expand(config, tmp / "seeds8.pkl", tmp / "pool.parquet", tmp / "alone.csv", audience_count=20,
           adaptation=adaptation)
    alone, both = pd.read_csv(tmp / "alone.csv"), pd.read_csv(tmp / "both" / "8.csv")
    assert len(alone) == 20 and list(alone["uid"]) == list(both["uid"][:20])
    np.testing.assert_allclose(alone["score"], both["score"][:20], atol=2e-6)  # CSV keeps 6 digits


def test_unusable_inputs_fail_with_one_line(setup):
    config, schema, tmp = setup
    seeds = pd.read_pickle(tmp / "seeds.pkl")
    seeds.drop(columns=["label"]).to_pickle(tmp / "unlabelled.pkl")
    with pytest.raises(DataError, match=r"unlabelled.pkl.*'label'.*seed sets need labels"):
        expand(config, tmp / "unlabelled.pkl", tmp / "pool.pkl", tmp / "x")
    with pytest.raises(ConfigError, match="holds 2 campaigns; give a directory"):
        expand(config, tmp / "seeds.pkl", tmp / "pool.pkl", tmp / "one.csv")
    pool = pd.read_pickle(tmp / "pool.pkl")
    pool.drop(columns=["kw1_length"]).to_pickle(tmp / "nolen.pkl")
    with pytest.raises(DataError, match=r"nolen.pkl: missing column\(s\) \['kw1_length'\]"):
        expand(config, tmp / "seeds.pkl", tmp / "nolen.pkl", tmp / "x")
    pool.assign(age=pool["age"] + 50).to_pickle(tmp / "big.pkl")
    convert(str(tmp / "big.pkl"), str(tmp / "big.parquet"))
    with pytest.raises(DataError, match=r"big.parquet: column 'age': .* outside \[0, 4\].*vocabulary"):
        expand(config, tmp / "seeds.pkl", tmp / "big.parquet", tmp / "x")
    pool.iloc[:0].to_pickle(tmp / "empty.pkl")
    convert(str(tmp / "empty.pkl"), str(tmp / "empty.parquet"))
    for name in ("empty.pkl", "empty.parquet"):
        with pytest.raises(DataError, match=f"{name}: no rows"):
            expand(config, tmp / "seeds.pkl", tmp / name, tmp / "x")
    assert not os.path.exists(tmp / "x")  # nothing written by a failed run


def test_export_wants_the_seeds_of_one_campaign(setup):
    from tools.utils.seed_files import read_campaign

    config, _, tmp = setup
    with pytest.raises(DataError, match="holds 2 campaigns .* give the seeds of one campaign"):
        read_campaign(str(tmp / "seeds.pkl"), config)


def test_parquet_splits_read_as_the_pickles(setup):
    config, schema, tmp = setup
    convert(str(tmp / "seeds.pkl"), str(tmp / "seeds.parquet"), rows_per_group=16)
    a, b = open_store(str(tmp / "seeds.pkl"), schema), open_store(str(tmp / "seeds.parquet"), schema)
    for name in ("ids", "lengths", "labels", "aids", "task_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_infer_ranks_candidates_nobody_labelled(setup, caplog):
    from infer import evaluate

    config, schema, tmp = setup
    os.makedirs(tmp / "test")
    rng = np.random.default_rng(3)
    make_frame(schema, rng, [30, 20], aid_start=7).to_pickle(tmp / "test" / "test_stage1.pkl")
    make_frame(schema, rng, [50, 40], aid_start=7).drop(columns=["label"]).to_parquet(tmp / "test" / "test_stage2.parquet")
    convert(str(tmp / "test" / "test_stage1.pkl"), str(tmp / "test" / "test_stage1.parquet"))
    os.remove(tmp / "test" / "test_stage1.pkl")
    config = {**config, "runner.test_data_dir": str(tmp / "test"), "runner.output_dir": str(tmp / "out"),
              "runner.audience_count": 10}
    (payload,) = evaluate(config)
    assert payload["summary"]["auc"] is None and payload["summary"]["gauc"] is None
    assert payload["summary"]["campaigns"] == 2 and payload["summary"]["candidates"] == 90
    audience = pd.read_csv(tmp / "out" / "audience" / "7.csv")
    assert list(audience.columns) == ["rank", "row", "score"] and len(audience) == 10
    assert "AUC cannot be computed" in caplog.text
    assert payload["summary"]["lift@10%"] is None and payload["gains"]["reached"] is None
    assert (tmp / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the score histogram
