"""tools/preprocess_tencent.py on a small raw fixture in the competition's format."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tools import preprocess_tencent as pp
from tools.utils.yaml_config import load_config
from metaheac.columns import TENCENT_AD, TENCENT_SEQUENCE, TENCENT_STATIC, TENCENT_WIDTHS
from metaheac.schema import schema_from_config
from metaheac.store import cache_location, open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AD_COLUMNS = ["aid", "advertiserId", "campaignId", "creativeId", "creativeSize", "adCategoryId", "productId",
              "productType"]
WIDTH = dict(zip(TENCENT_SEQUENCE, TENCENT_WIDTHS))
AIDS = list(range(1, 9))
POSITIVES = {1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12, 7: 14, 8: 0}  # seed positives; aid 8 has none
HOT_THRESHOLD = 7
NO_FEATURES_UID = 5555        # in train.csv, no line in userFeature.data
MALFORMED_UID = 1003          # labelled, but its feature line is malformed
UNSEEN_ID = 987654            # an interest1 id only unlabelled users have
UNKNOWN_AID = 77              # in train.csv, not in adFeature.csv


def make_raw(raw_dir, seed=0):
    """Write the four raw files; return what the output must reflect.

    Users have missing fields, empty lists, lists longer than the width and
    fields the tool ignores; one campaign has no positive seed; there are
    malformed lines, a uid without features and an aid without an ad row.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(raw_dir, exist_ok=True)
    users = {}
    for uid in range(1000, 1200):
        u = {}
        for f in TENCENT_STATIC:
            if rng.random() < 0.85:  # else missing
                u[f] = int(rng.integers(0, 6)) * 7 + 1   # sparse raw ids: encoding must make them dense
        for f in TENCENT_SEQUENCE:
            r = rng.random()
            if r < 0.1:
                continue                       # field absent
            n = 0 if r < 0.2 else int(rng.integers(1, 2 * WIDTH[f] + 3))  # empty or up to twice the width
            u[f] = [int(x) for x in rng.integers(1, 60, n) * 13]
        users[uid] = u
    users[1000]["interest1"] = list(range(100, 115))   # 15 ids: truncated to 10
    users[1001] = {}                                    # a user with no field at all

    lines = []
    for uid, u in users.items():
        parts = [f"uid {uid}"]
        for f, v in u.items():
            parts.append(f"{f} {' '.join(map(str, v))}" if isinstance(v, list) else f"{f} {v}")
        fields = parts[1:] + ["marriageStatus 10 13", "ct 3 1", "appIdAction 17 18 19"]  # ignored by default
        rng.shuffle(fields)
        lines.append("|".join(parts[:1] + fields))
    lines[MALFORMED_UID - 1000] = f"uid {MALFORMED_UID}|age 2|interest1 4 x 5"
    for uid in range(3000, 3020):  # not labelled: their ids must not enter the vocabulary
        lines.append(f"uid {uid}|age 999|interest1 {UNSEEN_ID} 5|kw1 {UNSEEN_ID}")
    lines.append("uid 1002|age 99|interest1 7")  # a second line for a user: skipped, the first is used
    lines.insert(50, "this is not a user line")
    with open(os.path.join(raw_dir, "userFeature.data"), "w") as f:
        f.write("\n".join(lines) + "\n")

    ads = {aid: [aid * 10 + 1, aid * 3, 900 + aid, 50 + aid % 3, aid % 4 + 5, 200 + aid % 2, aid % 2 + 1]
           for aid in AIDS + [99]}
    ads[2][3] = None  # creativeSize missing
    with open(os.path.join(raw_dir, "adFeature.csv"), "w") as f:
        f.write(",".join(AD_COLUMNS) + "\n")
        for aid, v in ads.items():
            f.write(",".join([str(aid)] + ["" if x is None else str(x) for x in v]) + "\n")

    good = [uid for uid in users if uid != MALFORMED_UID]
    seeds, cands = [], []
    for aid in AIDS:
        n = 40
        labels = [1] * POSITIVES[aid] + [-1] * (n - POSITIVES[aid])
        seeds += [(aid, int(u), y) for u, y in zip(rng.choice(good, n, replace=False), labels)]
        cands += [(aid, int(u), 1 if i % 4 == 0 else -1) for i, u in enumerate(rng.choice(good, 20, replace=False))]
    seeds[5] = (seeds[5][0], NO_FEATURES_UID, 1)
    seeds[7] = (seeds[7][0], MALFORMED_UID, -1)
    seeds[10] = (seeds[10][0], 1001, -1)  # the user without any field
    seeds.append((UNKNOWN_AID, 1010, 1))
    with open(os.path.join(raw_dir, "train.csv"), "w") as f:
        f.write("aid,uid,label\n" + "".join(f"{a},{u},{y}\n" for a, u, y in seeds[:30]))
        f.write("3,abc,1\n")  # malformed: line 32
        f.write("".join(f"{a},{u},{y}\n" for a, u, y in seeds[30:]))
    with open(os.path.join(raw_dir, "test1_truth.csv"), "w") as f:
        f.write("".join(f"{a},{u},{y}\n" for a, u, y in cands))
    return {"users": users, "ads": ads, "seeds": seeds, "cands": cands}


def split_seed():
    """A split seed that puts the no-positive campaign (8), a hot and a cold one into test."""
    for seed in range(100):
        _, test = pp.split_campaigns(np.array(AIDS), 0.5, seed)
        pos = [POSITIVES[a] for a in test]
        if 8 in test and max(pos) > HOT_THRESHOLD and any(0 < p <= HOT_THRESHOLD for p in pos):
            return seed
    raise AssertionError("no suitable seed")


def read_outputs(out):
    return {f"{split}/{name}": pd.read_pickle(os.path.join(out, split, name)) for split, name in pp.SPLITS}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    raw = make_raw(str(base / "raw"))
    seed = split_seed()
    summary = pp.preprocess(str(base / "raw"), str(base / "out"), hot_threshold=HOT_THRESHOLD, seed=seed,
                            progress_every=100)
    return base, raw, summary, read_outputs(str(base / "out")), seed


# ------------------------------------------------------------ semantics --

def test_files_columns_and_dtypes(processed):
    base, _, _, frames, _ = processed
    expected = (["label", "aid"] + TENCENT_STATIC + TENCENT_SEQUENCE + [f + "_length" for f in TENCENT_SEQUENCE]
                + TENCENT_AD + ["uid"])
    for name, df in frames.items():
        assert list(df.columns) == expected, name
        assert len(df) > 0
        for col in expected:
            if col in TENCENT_SEQUENCE:
                assert all(isinstance(c, np.ndarray) and c.dtype == np.int64 and c.shape == (WIDTH[col],)
                           for c in df[col]), (name, col)
            else:
                assert df[col].dtype == np.int64, (name, col)
    assert not [p for p in os.listdir(base / "out") if ".tmp" in p]


def test_rows_labels_and_campaign_split(processed):
    _, raw, summary, frames, seed = processed
    train_aids, test_aids = pp.split_campaigns(np.array(AIDS), 0.5, seed)
    hot = {a for a in test_aids if POSITIVES[a] > HOT_THRESHOLD}
    cold = set(test_aids) - hot
    assert 8 in cold  # the campaign without positives is a (cold) test campaign

    def usable(rows):  # rows the tool must keep, labels -1 -> 0
        return [(a, u, int(y == 1)) for a, u, y in rows
                if u not in (NO_FEATURES_UID, MALFORMED_UID) and a != UNKNOWN_AID]

    seeds, cands = usable(raw["seeds"]), usable(raw["cands"])
    expect = {"train/train_stage1.pkl": [r for r in seeds if r[0] in train_aids],
              "test_hot/test_stage1.pkl": [r for r in seeds if r[0] in hot],
              "test_hot/test_stage2.pkl": [r for r in cands if r[0] in hot],
              "test_cold/test_stage1.pkl": [r for r in seeds if r[0] in cold],
              "test_cold/test_stage2.pkl": [r for r in cands if r[0] in cold]}
    for name, rows in expect.items():
        df = frames[name]
        assert list(zip(df.aid, df.uid, df.label)) == rows, name  # file order, labels -1 -> 0
    assert set(frames["test_cold/test_stage1.pkl"].query("aid == 8").label) == {0}
    assert summary["splits"]["test_hot"]["seed_positives"] == {str(a): POSITIVES[a] for a in sorted(hot)}
    # candidate rows of training campaigns are not used, and counted
    assert summary["unused"]["candidate_rows_of_training_campaigns"] == sum(r[0] in train_aids for r in cands)


def _mapping(pairs, name):
    """raw -> code pairs must be a bijection: missing <-> 0, ids dense 1..K in raw order."""
    table = {}
    for r, c in pairs:
        assert table.setdefault(r, c) == c, f"{name}: raw {r} has codes {table[r]} and {c}"
    real = sorted(r for r in table if r is not None)
    assert [table[r] for r in real] == list(range(1, len(real) + 1)), name
    if None in table:
        assert table[None] == 0, name
    return len(real)


def test_user_columns_encode_the_raw_features(processed):
    _, raw, summary, frames, _ = processed
    df = pd.concat(frames.values(), ignore_index=True)
    users = [raw["users"][u] for u in df.uid]
    for f in TENCENT_STATIC:
        k = _mapping(zip((u.get(f) for u in users), df[f]), f)
        assert summary["max_idx"][f] == k
    for f in TENCENT_SEQUENCE:
        w = WIDTH[f]
        cells = np.stack(df[f].to_numpy())
        kept = [u.get(f, [])[:w] for u in users]  # first `width` raw ids, in order
        np.testing.assert_array_equal(df[f + "_length"], [len(k) for k in kept])
        assert df[f + "_length"].max() <= w
        pad = np.arange(w)[None, :] >= df[f + "_length"].to_numpy()[:, None]
        assert (cells[pad] == 0).all() and (cells[~pad] >= 1).all()
        pairs = [(r, c) for k, row in zip(kept, cells) for r, c in zip(k, row)]
        k = _mapping(pairs, f)
        assert summary["max_idx"][f] == k == cells.max()
    assert (df[df.uid == 1000].interest1_length == 10).all()  # 15 ids cut to the first 10
    bare = df[df.uid == 1001]  # no field at all: every id missing, every list empty
    assert len(bare) >= 1 and (bare[TENCENT_STATIC] == 0).all().all()
    assert (bare[[f + "_length" for f in TENCENT_SEQUENCE]] == 0).all().all()
    assert any(u.get("kw1") == [] for u in users)  # empty lists occur in the output rows


def test_vocabulary_ignores_unlabelled_users(processed):
    _, raw, summary, frames, _ = processed
    df = pd.concat(frames.values(), ignore_index=True)
    labelled_ids = {i for u in df.uid for i in raw["users"][u].get("interest1", [])[:10]}
    assert UNSEEN_ID not in labelled_ids
    assert summary["max_idx"]["interest1"] == len(labelled_ids)
    assert summary["max_idx"]["age"] == len({raw["users"][u]["age"] for u in df.uid if "age" in raw["users"][u]})


def test_ad_columns(processed):
    _, raw, summary, frames, _ = processed
    df = pd.concat(frames.values(), ignore_index=True)
    for j, f in enumerate(TENCENT_AD):
        src = AD_COLUMNS.index(f) - 1
        pairs = [(raw["ads"][a][src], c) for a, c in zip(df.aid, df[f])]
        assert summary["max_idx"][f] == _mapping(pairs, f)
        assert (df.groupby("aid")[f].nunique() == 1).all()
    assert (df[df.aid == 2].creativeSize == 0).all()  # missing -> 0


def test_fragment_task_store_and_summary(processed):
    base, _, summary, frames, _ = processed
    config = load_config(str(base / "out" / pp.FRAGMENT))
    m = summary["max_idx"]
    assert config["hyper_parameters.max_idxs"] == [[m[f] for f in TENCENT_STATIC], [m[f] for f in TENCENT_SEQUENCE],
                                                   [m[f] for f in TENCENT_AD]]
    schema = schema_from_config(config)
    for split, name in pp.SPLITS:
        path = str(base / "out" / split / name)
        assert os.path.isfile(os.path.join(cache_location(path, schema), "meta.json"))
        store = open_store(path, schema)
        assert isinstance(store.ids, np.memmap) and len(store) == len(frames[f"{split}/{name}"])
    on_disk = json.loads((base / "out" / pp.SUMMARY).read_text())
    assert on_disk["max_idx"] == summary["max_idx"]


def test_bad_rows_are_skipped_counted_and_located(processed):
    _, _, summary, _, _ = processed
    skipped = {(s["file"], s["kind"]): s for s in summary["skipped"]}
    assert skipped[("userFeature.data", "malformed line")]["count"] == 2
    assert skipped[("userFeature.data", "malformed line")]["lines"] == [4, 51]
    assert "'interest1'" in skipped[("userFeature.data", "malformed line")]["first"]
    assert skipped[("userFeature.data", "duplicate user")]["lines"] == [222]
    assert skipped[("train.csv", "malformed line")]["lines"] == [32]
    assert skipped[("train.csv", "aid without ad features")]["count"] == 1
    assert "aid 77" in skipped[("train.csv", "aid without ad features")]["first"]
    no_feat = skipped[("train.csv", "uid without features")]
    assert no_feat["count"] == 2 and no_feat["lines"] == [7, 9]  # the NO_FEATURES and MALFORMED uids
    assert summary["skipped_total"] == sum(s["count"] for s in summary["skipped"])
    assert summary["users_found"] == summary["labelled_users"] - 2


def test_progress_is_logged(tmp_path, caplog):
    make_raw(str(tmp_path / "raw"))
    caplog.set_level("INFO", logger="metaheac.preprocess")
    pp.preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), hot_threshold=HOT_THRESHOLD, seed=split_seed(),
                  progress_every=50)
    progress = [r.getMessage() for r in caplog.records if "labelled users found" in r.getMessage()]
    assert len(progress) >= 4 and "MB/s" in progress[0] and "ETA" in progress[0]


# --------------------------------------------------------------- options --

def test_custom_sequence_fields_write_an_explicit_schema(tmp_path):
    make_raw(str(tmp_path / "raw"))
    layout = pp.Layout(("age", "gender"), (("interest1", 3), ("kw1", 2), ("marriageStatus", 2)),
                       ("adCategoryId", "productType"))
    pp.preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), layout, hot_threshold=HOT_THRESHOLD,
                  seed=split_seed())
    config = load_config(str(tmp_path / "out" / pp.FRAGMENT))
    assert config["hyper_parameters.max_idxs"] is None
    features = {f["name"]: f for f in config["hyper_parameters.features"]}
    assert features["interest1"]["width"] == 3 and features["marriageStatus"]["group"] == "sequence"
    df = pd.read_pickle(tmp_path / "out" / "train" / "train_stage1.pkl")
    assert df.interest1_length.max() == 3 and df.marriageStatus_length.max() == 2
    assert np.stack(df.kw1.to_numpy()).shape == (len(df), 2)
    assert len(open_store(str(tmp_path / "out" / "train" / "train_stage1.pkl"), schema_from_config(config))) == len(df)


def test_user_line_parser():
    layout = pp.Layout(("age", "house"), (("interest1", 3), ("kw1", 2)), ())
    slots, template = layout.user_slots(), [-1] * layout.user_cols  # columns: age, house, interest1 x3, kw1 x2

    def parse(line):
        return pp.parse_user_line(line, slots, template)

    assert parse(b"uid 1|kw1 9 8 7|age 4|interest1 5|ct 3 1\r\n") == [4, -1, 5, -1, -1, 9, 8]
    assert parse(b"uid 1|interest1|house |kw1  6\n") == [-1, -1, -1, -1, -1, 6, -1]  # empty values are missing
    assert parse(b"uid 1") == template
    for bad, why in ((b"uid 1|age 4 5", "static field 'age' has 2 values"),
                     (b"uid 1|kw1 3 -4", "non-negative integers"), (b"uid 1|kw1 1_000", "non-negative integers"),
                     (b"uid 1|interest1 99999999999", "above")):
        with pytest.raises(pp._BadLine, match=why):
            parse(bad)


def test_cli_parses_field_options():
    assert pp.parse_sequence_option("interest2,kw3,topic1:7") == (("interest2", 10), ("kw3", 5), ("topic1", 7))


# ------------------------------------------------------------ bad input --

def test_strict_stops_at_the_first_bad_line_and_writes_nothing(tmp_path):
    make_raw(str(tmp_path / "raw"))

    def run():
        pp.preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), hot_threshold=HOT_THRESHOLD, strict=True)

    with pytest.raises(pp.PreprocessError, match=r"train.csv, line 32: expected aid,uid,label .* got '3,abc,1'"):
        run()
    seeds = tmp_path / "raw" / "train.csv"
    seeds.write_text("".join(line for line in seeds.read_text().splitlines(True)  # only the bad user lines left
                             if line != "3,abc,1\n" and not line.startswith(f"{UNKNOWN_AID},")))
    with pytest.raises(pp.PreprocessError, match=r"userFeature.data, line 4: field 'interest1'.*--strict"):
        run()
    assert not os.path.exists(tmp_path / "out")


def test_missing_file_fails_cleanly_through_the_cli(tmp_path):
    make_raw(str(tmp_path / "raw"))
    os.remove(tmp_path / "raw" / "test1_truth.csv")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "preprocess_tencent.py"),
                           "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "missing raw file(s) ['test1_truth.csv']" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "out")


def test_empty_hot_split_names_the_option(tmp_path):
    make_raw(str(tmp_path / "raw"))
    with pytest.raises(pp.PreprocessError, match="test_hot/test_stage1.pkl would be empty.*lower --hot-threshold"):
        pp.preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), hot_threshold=1000)
    assert not os.path.exists(tmp_path / "out" / pp.FRAGMENT)


def test_bad_header_is_reported_with_the_line(tmp_path):
    make_raw(str(tmp_path / "raw"))
    (tmp_path / "raw" / "train.csv").write_text("campaign,user,y\n1,1000,1\n")
    with pytest.raises(pp.PreprocessError, match=r"train.csv, line 1: header"):
        pp.preprocess(str(tmp_path / "raw"), str(tmp_path / "out"))


def test_failed_write_leaves_the_previous_output_complete(tmp_path, monkeypatch):
    make_raw(str(tmp_path / "raw"))
    out = tmp_path / "out"
    pp.preprocess(str(tmp_path / "raw"), str(out), hot_threshold=HOT_THRESHOLD, seed=split_seed())
    before = {p: (out / p).read_bytes() for p in ("test_hot/test_stage1.pkl", pp.FRAGMENT)}
    real, calls = pp._pickle_frame, []

    def failing(df, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(df, path)

    monkeypatch.setattr(pp, "_pickle_frame", failing)
    with pytest.raises(OSError):  # a threshold of 0 would move campaigns from cold to hot
        pp.preprocess(str(tmp_path / "raw"), str(out), hot_threshold=0, seed=split_seed())
    assert len(calls) == 3
    assert {p: (out / p).read_bytes() for p in before} == before
    schema = schema_from_config(load_config(str(out / pp.FRAGMENT)))  # and it still loads
    hot = out / "test_hot" / "test_stage1.pkl"
    assert len(open_store(str(hot), schema)) == len(pd.read_pickle(hot))
    assert not [p for d in ("train", "test_hot", "test_cold") for p in os.listdir(out / d) if ".tmp" in p]


# ----------------------------------------------------- train and infer --

@pytest.mark.slow
def test_trains_and_infers_on_the_output_through_the_cli(processed, tmp_path):
    base, _, summary, _, _ = processed
    max_idxs = json.dumps(load_config(str(base / "out" / pp.FRAGMENT))["hyper_parameters.max_idxs"])
    model = ["hyper_parameters.embed_dim=8", "hyper_parameters.mlp_dims=[16,16]", "hyper_parameters.batch_size=64",
             f"hyper_parameters.max_idxs={max_idxs.replace(' ', '')}"]

    def run(script, *overrides):
        cmd = [sys.executable, os.path.join(ROOT, script), "-m", os.path.join(ROOT, "config.yaml"), "-o",
               *overrides, *model]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    log = run("tools/trainer.py", f"runner.train_data_dir={base / 'out' / 'train'}", "runner.model_save_path=model",
              "runner.epochs=1")
    assert "loaded train_stage1.pkl from cache" in log  # the tool wrote the task store
    assert (tmp_path / "model" / "0" / "rec.pdparams").is_file()
    run("infer.py", f"runner.test_data_dir={base / 'out' / 'test_hot'}", "runner.infer_load_path=model",
        "runner.infer_start_epoch=0", "runner.infer_end_epoch=1", "runner.infer_train_epoch=1",
        "runner.output_dir=evaluated")
    result = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())
    assert result["summary"]["campaigns"] == summary["splits"]["test_hot"]["campaigns"]
