"""Task store, validation and the two readers."""
import math
import os

import numpy as np
import pandas as pd
import pytest

from conftest import make_frame
from reader_test import RecDataset as InferReader
from reader_train import RecDataset as TrainReader
from metaheac.schema import schema_from_config
from metaheac.errors import DataError
from metaheac.store import open_store


@pytest.fixture
def setup(tiny_config, tmp_path):
    config = tiny_config(runner={"cache_dir": str(tmp_path / "cache")})
    return config, schema_from_config(config), np.random.default_rng(0)


def save(df, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.to_pickle(path)
    return str(path)


def test_store_groups_rows_by_campaign(setup, tmp_path):
    config, schema, rng = setup
    df = make_frame(schema, rng, [5, 9, 3]).sample(frac=1.0, random_state=1)  # campaigns interleaved
    store = open_store(save(df, tmp_path / "a.pkl"), schema)
    assert store.num_tasks == 3 and len(store) == 17
    np.testing.assert_array_equal(np.diff(store.task_offsets), [5, 9, 3])
    for aid in (1, 2, 3):
        start, end = store.task_range(aid)
        src = store.source_rows[start:end]
        np.testing.assert_array_equal(df["aid"].to_numpy()[src], aid)
        np.testing.assert_array_equal(store.labels[start:end], df["label"].to_numpy()[src])
        np.testing.assert_array_equal(store.ids[start:end, 0], df["age"].to_numpy()[src])
        np.testing.assert_array_equal(store.ids[start:end, 2:5], np.stack(df["interest1"].to_numpy()[src]))


def test_extra_columns_and_column_order_do_not_matter(setup, tmp_path):
    config, schema, rng = setup
    df = make_frame(schema, rng, [6, 4])
    shuffled = df[list(reversed(df.columns))].assign(uid=np.arange(len(df)), junk="x")
    a = open_store(save(df, tmp_path / "a.pkl"), schema)
    b = open_store(save(shuffled, tmp_path / "b.pkl"), schema)
    for name in ("ids", "lengths", "labels", "aids", "task_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_cache_is_reused_and_rebuilt_when_the_source_changes(setup, tmp_path):
    config, schema, rng = setup
    path = save(make_frame(schema, rng, [4, 4]), tmp_path / "a.pkl")
    first = open_store(path, schema, str(tmp_path / "cache"))
    again = open_store(path, schema, str(tmp_path / "cache"))
    assert isinstance(again.ids, np.memmap)  # served from the columnar cache
    np.testing.assert_array_equal(first.ids, again.ids)
    save(make_frame(schema, rng, [3, 3, 3]), path)  # new content, new size
    changed = open_store(path, schema, str(tmp_path / "cache"))
    assert changed.num_tasks == 3


def test_padding_values_are_zeroed_not_rejected(setup, tmp_path):
    config, schema, rng = setup
    df = make_frame(schema, rng, [3])
    df["interest1_length"] = 1
    df["interest1"] = [np.array([4, -1, -1])] * 3  # -1 padding convention
    store = open_store(save(df, tmp_path / "a.pkl"), schema)
    np.testing.assert_array_equal(store.ids[:, 2:5], [[4, 0, 0]] * 3)


@pytest.mark.parametrize("corrupt, needles", [
    (lambda df: df.drop(columns=["kw1", "label"]), ["missing column", "kw1", "label"]),
    (lambda df: df.assign(age=df["age"] + 100), ["'age'", "outside [0, 4]", "vocabulary"]),
    (lambda df: df.assign(gender=-1), ["'gender'", "outside"]),
    (lambda df: df.assign(kw1_length=3), ["'kw1_length'", "outside [0, 2]"]),
    (lambda df: df.assign(label=-1), ["'label'", "0/1"]),
    (lambda df: df.assign(age=np.nan), ["'age'", "NaN"]),
    (lambda df: df.assign(age="x"), ["'age'", "not an integer"]),
    (lambda df: df.assign(interest1=[np.arange(4)] * len(df)), ["'interest1'", "expected (3,)"]),
    (lambda df: df.assign(interest1=[[1, 2, 99]] * len(df), interest1_length=3), ["'interest1'", "outside [0, 10]"]),
    (lambda df: df.iloc[:0], ["no rows"]),
])
def test_bad_data_is_named(setup, tmp_path, corrupt, needles):
    config, schema, rng = setup
    path = save(corrupt(make_frame(schema, rng, [4, 4])), tmp_path / "bad.pkl")
    with pytest.raises(DataError) as err:
        open_store(path, schema)
    message = str(err.value)
    assert path in message
    for needle in needles:
        assert needle in message


def test_truncated_and_foreign_pickles(setup, tmp_path):
    config, schema, rng = setup
    good = save(make_frame(schema, rng, [4]), tmp_path / "good.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(open(good, "rb").read()[:200])
    with pytest.raises(DataError, match="truncated"):
        open_store(str(truncated), schema)
    foreign = tmp_path / "list.pkl"
    pd.to_pickle([1, 2, 3], foreign)
    with pytest.raises(DataError, match="expected a pandas DataFrame"):
        open_store(str(foreign), schema)


def test_train_reader_shapes_and_epoch_length(setup, tmp_path):
    config, schema, rng = setup
    path = save(make_frame(schema, rng, [30, 3, 12]), tmp_path / "train" / "train_stage1.pkl")
    reader = TrainReader([path], config)
    assert reader.num_batches() == math.ceil(45 / 8)
    batches = list(iter(reader))
    assert len(batches) == reader.num_batches()
    for tasks, rows in batches:
        assert len(tasks) == config["hyper_parameters.task_count"]
        assert rows.max() < schema.num_rows
        for task in tasks:
            assert task["sup_rows"].shape == (8, schema.num_id_cols)
            assert task["qry_lengths"].shape == (8, len(schema.sequence))
            assert task["sup_rows"].max() < len(task["idx"]) and task["idx"].max() < len(rows)


def test_meta_batch_remap_round_trips(setup):
    from conftest import random_task
    from metaheac.rows import build_meta_batch
    config, schema, rng = setup
    raw = [random_task(schema, rng) for _ in range(3)]
    tasks, rows = build_meta_batch(raw, schema.num_rows)
    assert np.all(np.diff(rows) > 0)  # sorted, unique
    for r, t in zip(raw, tasks):
        table_rows = rows[t["idx"]]
        np.testing.assert_array_equal(table_rows[t["sup_rows"]], r["sup_rows"])
        np.testing.assert_array_equal(table_rows[t["qry_rows"]], r["qry_rows"])
        assert len(t["idx"]) == len(np.unique(np.concatenate([r["sup_rows"], r["qry_rows"]])))


def test_tiny_campaigns_are_sampled_with_replacement(setup, tmp_path):
    """A campaign with fewer rows than batch_size must not crash or hang."""
    config, schema, rng = setup
    path = save(make_frame(schema, rng, [2, 1]), tmp_path / "train_stage1.pkl")
    batches = list(iter(TrainReader([path], config)))
    assert len(batches) == 1
    assert all(t["sup_labels"].shape == (8,) for t in batches[0][0])


def test_train_reader_is_reproducible(setup, tmp_path):
    config, schema, rng = setup
    path = save(make_frame(schema, rng, [20, 9, 14]), tmp_path / "train_stage1.pkl")
    a = list(iter(TrainReader([path], config)))
    b = list(iter(TrainReader([path], config)))
    for (tasks_a, rows_a), (tasks_b, rows_b) in zip(a, b):
        np.testing.assert_array_equal(rows_a, rows_b)
        for ta, tb in zip(tasks_a, tasks_b):
            for k in ta:
                np.testing.assert_array_equal(ta[k], tb[k])


def test_campaigns_are_drawn_in_proportion_to_their_rows(tiny_config, tmp_path):
    expect_small_share = 0.1 / 1.1
    config = tiny_config(hyper={"batch_size": 1, "task_count": 1},
                         runner={"cache_dir": str(tmp_path / "cache"), "meta_val_fraction": 0.0})
    schema = schema_from_config(config)
    path = save(make_frame(schema, np.random.default_rng(1), [1000, 100]), tmp_path / "train_stage1.pkl")
    reader = TrainReader([path], config)
    aids = [tasks[0]["aid"] for tasks, _ in reader]
    share = np.mean(np.array(aids) == 2)
    assert abs(share - expect_small_share) < 0.05


def test_test_reader_pairs_stages_and_reports_unmatched(setup, tmp_path):
    config, schema, rng = setup
    s1 = save(make_frame(schema, rng, [5, 6, 7], aid_start=1), tmp_path / "t" / "test_stage1.pkl")
    s2 = save(make_frame(schema, rng, [4, 3, 2], aid_start=2), tmp_path / "t" / "test_stage2.pkl")
    reader = InferReader([s1, s2], config)
    assert [c["aid"] for c in reader] == [2, 3]
    assert reader.unmatched == {"stage1_only": [1], "stage2_only": [4]}
    first = next(iter(reader))
    assert first["stage1"]["labels"].shape == (6,) and first["stage2"]["labels"].shape == (4,)
    # rows are fused-table rows: raw ids plus the field offsets
    assert first["stage1"]["rows"].max() < schema.num_rows


def test_test_reader_names_missing_stage(setup, tmp_path):
    config, schema, rng = setup
    s1 = save(make_frame(schema, rng, [5]), tmp_path / "t" / "test_stage1.pkl")
    with pytest.raises(DataError, match="test_stage2.pkl"):
        InferReader([s1], config)


def test_paddlerec_reader_name_is_accepted(tiny_config, tmp_path):
    """PaddleRec configs name the infer reader 'reader_infer'."""
    from tools.utils import runtime
    config = tiny_config()
    config["config_abs_dir"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert runtime.load_module(config, "reader_infer", "runner.infer_reader_path").RecDataset is InferReader
