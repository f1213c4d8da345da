"""Nothing silently wrong (issue 33): user and campaign ids reach the outputs as
given, outputs never replace each other unasked, a checkpoint keeps its
feature schema and finite values, expand's outputs appear whole or not at
all, degenerate data trains or stops with one line, and the command lines
say what went wrong in one line, without a traceback."""
import argparse
import errno
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, TINY_FEATURES, make_frame, write_config
from metaheac.errors import ConfigError, DataError
from metaheac.schema import schema_from_config
from tools.utils.yaml_config import load_config

BIG = 2**63 + 5  # above int64: a uint64 id
FIXTURE = "/work/shared/fixtures/paddlerec_sample_stage1.pkl"  # PaddleRec's published sample split


def tree(path):
    """{relative path: bytes} of every file under `path`."""
    out = {}
    for base, _, names in os.walk(path):
        for name in names:
            full = os.path.join(base, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


class World:
    """A tiny model package in tmp: config.yaml (TINY_FEATURES), the model's
    modules beside it, a training split of 2 campaigns and a test split of 3
    with user ids; config(), train(), infer(), expand() in-process, cli()
    through a tool's command line."""

    def __init__(self, tmp, features=None, positive_rate=0.5, runner=None):
        self.tmp = tmp
        self.path = write_config(tmp / "config.yaml", {"report_png": False, "epochs": 1, **(runner or {})},
                                 {"features": features or TINY_FEATURES})
        for module in ("dygraph_model.py", "reader_train.py", "reader_test.py"):
            os.symlink(os.path.join(ROOT, module), tmp / module)
        self.schema = schema_from_config(self.config())
        rng = np.random.default_rng(0)
        os.makedirs(tmp / "train")
        make_frame(self.schema, rng, [20, 30], positive_rate=positive_rate).to_pickle(tmp / "train" / "train_stage1.pkl")
        self.write_test("test", lambda df, stage: df)

    def frame(self, sizes, aid_start=10, seed=1, positive_rate=0.5):
        df = make_frame(self.schema, np.random.default_rng(seed), sizes, positive_rate=positive_rate,
                        aid_start=aid_start)
        df.insert(0, "uid", np.arange(1000, 1000 + len(df)))
        return df

    def write_test(self, name, change, sizes=(10, 10, 10)):
        """A test split tmp/<name>: change(frame, stage) -> the frame written."""
        os.makedirs(self.tmp / name, exist_ok=True)
        for stage in (1, 2):
            change(self.frame(list(sizes), seed=stage), stage).to_pickle(self.tmp / name / f"test_stage{stage}.pkl")
        return str(self.tmp / name)

    def config(self, *overrides, **runner):
        base = [f"runner.model_save_path={self.tmp / 'out'}", f"runner.train_data_dir={self.tmp / 'train'}",
                f"runner.test_data_dir={self.tmp / 'test'}"]
        return load_config(self.path, base + [f"runner.{k}={v}" for k, v in runner.items()] + list(overrides))

    def train(self, *overrides, **runner):
        from tools.trainer import train
        return train(self.config(*overrides, **runner))

    def infer(self, *overrides, **runner):
        from infer import evaluate
        return evaluate(self.config(*overrides, **runner))

    def expand(self, seeds, pool, out, *overrides, **runner):
        from tools.expand import expand
        args = argparse.Namespace(seeds=str(seeds), candidates=str(pool), out=str(out), epoch=None)
        return expand(self.config(*overrides, **runner), args)

    def cli(self, capsys, tool, *args):
        """(exit status, the ERROR lines, stderr) of `tool` (trainer, infer, expand) run in-process:
        an exception that escapes main is a traceback at the command line, so it fails the test."""
        if tool == "trainer":
            from tools.trainer import main
        elif tool == "infer":
            from infer import main
        else:
            from tools.expand import main
        opts = [a for a in args if "=" in a and not a.startswith("--")]
        flags = [a for a in args if a not in opts]
        handlers = logging.getLogger().handlers[:]
        try:
            with pytest.raises(SystemExit) as exit_:
                main(["-m", self.path, *flags, "-o", f"runner.model_save_path={self.tmp / 'out'}",
                      f"runner.train_data_dir={self.tmp / 'train'}", f"runner.test_data_dir={self.tmp / 'test'}",
                      *opts])
        finally:  # run_cli points logging at this test's captured stderr
            logging.getLogger().handlers = handlers
        err = capsys.readouterr().err
        return exit_.value.code, [line for line in err.splitlines() if " ERROR " in line], err

    def pool(self, n=60, seed=3, uids=None):
        users = make_frame(self.schema, np.random.default_rng(seed), [n])
        users = users.drop(columns=["label", "aid"] + [f.name for f in self.schema.data_ad])
        users.insert(0, "uid", np.arange(5000, 5000 + n) if uids is None else uids)
        return users


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# -- 1, 2: user ids as given --------------------------------------------------------------------------------------

def test_uint64_user_ids_reach_infer_and_expand_audiences_as_given(world):
    """Case 1: uids >= 2^63 (uint64) came out negative."""
    big = lambda df, stage: df.assign(uid=np.arange(len(df), dtype=np.uint64) + np.uint64(BIG))  # noqa: E731
    world.write_test("test", big)
    world.train()
    world.infer(output_dir=world.tmp / "report", audience_fraction=1.0)
    audience = pd.read_csv(world.tmp / "report" / "audience" / "10.csv", dtype={"uid": str})
    assert list(audience.columns) == ["rank", "uid", "score", "label"]
    assert {int(u) for u in audience["uid"]} == set(range(BIG, BIG + 10))

    pool = world.pool(uids=np.arange(60, dtype=np.uint64) + np.uint64(BIG))
    pool.to_parquet(world.tmp / "pool.parquet")
    world.expand(world.tmp / "test" / "test_stage1.pkl", world.tmp / "pool.parquet", world.tmp / "aud",
                 audience_fraction=1.0)
    ranked = pd.read_csv(world.tmp / "aud" / "10.csv", dtype={"uid": str})
    assert {int(u) for u in ranked["uid"]} == set(range(BIG, BIG + 60))


def test_string_user_ids_reach_the_audiences_and_a_missing_one_is_one_line(world):
    """Case 2: string uids (or one NaN) were replaced by row positions, header 'row', without a word."""
    names = lambda df, stage: df.assign(uid=[f"user-{i:03d}" for i in range(len(df))])  # noqa: E731
    world.write_test("test", names)
    world.train()
    world.infer(output_dir=world.tmp / "report", audience_fraction=1.0)
    audience = pd.read_csv(world.tmp / "report" / "audience" / "11.csv")
    assert list(audience.columns) == ["rank", "uid", "score", "label"]
    assert set(audience["uid"]) == {f"user-{i:03d}" for i in range(10, 20)}

    pool = world.pool(uids=[f"u{i}" for i in range(60)])
    pool.to_parquet(world.tmp / "pool.parquet")
    world.expand(world.tmp / "test" / "test_stage1.pkl", world.tmp / "pool.parquet", world.tmp / "aud",
                 audience_count=5)
    assert set(pd.read_csv(world.tmp / "aud" / "12.csv")["uid"]) <= {f"u{i}" for i in range(60)}

    def one_nan(df, stage):
        df = df.astype({"uid": float})
        df.loc[df.index[4], "uid"] = np.nan
        return df
    test = world.write_test("holes", one_nan)
    with pytest.raises(DataError, match=r"test_stage1.pkl: column 'uid': 1 missing \(NaN or empty\) user id\(s\) "
                                        r"\(first at row 4\). Fix: fill or drop those rows"):
        world.infer(output_dir=world.tmp / "holes_report", test_data_dir=test)


# -- 3: explicit output_dir ---------------------------------------------------------------------------------------

def test_an_explicit_output_dir_is_not_replaced_by_another_epoch_or_split(world):
    """Case 3: the next epoch of one command, or a later run on another split, replaced runner.output_dir."""
    world.train(epochs=2)
    report = world.tmp / "report"
    with pytest.raises(ConfigError, match=r"runner.output_dir: .*report would hold epochs 0..1 one after the other"):
        world.infer(output_dir=report, infer_start_epoch=0, infer_end_epoch=2)
    assert not report.exists()
    world.infer(output_dir=report, infer_start_epoch=1, infer_end_epoch=2)
    before = tree(report)
    other = world.write_test("test_cold", lambda df, stage: df, sizes=(12, 12))
    with pytest.raises(ConfigError, match=r"runner.output_dir: .*report holds the output of .*1/rec.pdparams on "
                                          r".*/test, which this run .* would replace; choose another"):
        world.infer(output_dir=report, infer_start_epoch=1, infer_end_epoch=2, test_data_dir=other)
    with pytest.raises(ConfigError, match="holds the output of .*1/rec.pdparams"):
        world.infer(output_dir=report, infer_start_epoch=0, infer_end_epoch=1)  # another epoch
    assert tree(report) == before
    world.infer(output_dir=report, infer_start_epoch=1, infer_end_epoch=2, seed=3)  # a rerun replaces its own
    # without runner.output_dir, each epoch and split has its folder
    world.infer(infer_start_epoch=0, infer_end_epoch=2)
    world.infer(infer_start_epoch=0, infer_end_epoch=2, test_data_dir=other)
    for epoch in (0, 1):
        assert {"infer_test", "infer_test_cold"} <= set(os.listdir(world.tmp / "out" / str(epoch)))


# -- 4: feature schema --------------------------------------------------------------------------------------------

def test_a_reordered_features_block_is_refused_naming_the_order(tmp_path):
    """Case 4: two fields of equal vocabulary swapped loaded the checkpoint silently."""
    features = [{"name": "age", "group": "static", "vocab_size": 5},
                {"name": "gender", "group": "static", "vocab_size": 5}] + TINY_FEATURES[2:]
    world = World(tmp_path, features)
    world.train()
    swapped = [features[1], features[0]] + features[2:]
    config = world.config()
    config["hyper_parameters.features"] = swapped
    from infer import evaluate
    with pytest.raises(DataError, match=r"rec.pdparams: trained on another feature schema: the same features in "
                                        r"another order: field 0 is 'gender' in this config, 'age' in the "
                                        r"checkpoint .* Fix: use the config saved beside the checkpoint "
                                        r"\(.*out/0/config.yaml\)"):
        evaluate(config)
    world.infer()  # the config it was trained with loads it


# -- 5, 13: non-finite values -------------------------------------------------------------------------------------

def test_nonfinite_parameters_are_never_saved_and_earlier_checkpoints_stand(world, capsys):
    """Case 5: runner.nonfinite_loss=skip saved a checkpoint full of NaN; infer on it ended in a LinAlgError."""
    world.train()
    before = tree(world.tmp / "out")
    huge = "hyper_parameters.optimizer.global_learning_rate=1.0e+39"  # one Adam step overflows float32
    code, errors, err = world.cli(capsys, "trainer", "runner.nonfinite_loss=skip", huge, "runner.epochs=2",
                                  f"runner.model_init_path={world.tmp / 'out' / '0'}")
    assert code == 1 and len(errors) == 1, err
    assert "1: not written: parameter" in errors[0] and "holds NaN or inf (the run diverged); the earlier " \
        "checkpoints are intact" in errors[0]
    assert tree(world.tmp / "out") == before

    import paddle
    state = paddle.load(str(world.tmp / "out" / "0" / "rec.pdparams"))
    state["critic_w"] = paddle.full_like(state["critic_w"], float("nan"))
    paddle.save(state, str(world.tmp / "out" / "0" / "rec.pdparams"))  # a checkpoint from elsewhere
    code, errors, err = world.cli(capsys, "infer", "runner.output_dir=" + str(world.tmp / "r"))
    assert code == 1 and len(errors) == 1, err
    assert "rec.pdparams: parameter 'critic_w' holds NaN or inf" in errors[0]


def test_a_nan_loss_ends_the_command_line_with_its_one_line(world, capsys, monkeypatch):
    """Case 13: the NaN guard's message arrived inside a traceback."""
    from metaheac import meta
    real, calls = meta.meta_train_loss, []

    def nan_on_second(*args, **kw):
        calls.append(1)
        loss = real(*args, **kw)
        return loss * float("nan") if len(calls) == 2 else loss
    monkeypatch.setattr(meta, "meta_train_loss", nan_on_second)
    code, errors, err = world.cli(capsys, "trainer")
    assert code == 1 and len(errors) == 1, err
    assert "loss is nan at epoch 0, meta-batch 1; stopped before a broken checkpoint is written" in errors[0]
    assert not (world.tmp / "out" / "0").exists()


# -- 6, 12: expand's outputs --------------------------------------------------------------------------------------

def _disk_full_on(monkeypatch, call):
    """pandas' to_csv fails with ENOSPC from its `call`-th call on."""
    real, calls = pd.DataFrame.to_csv, []

    def to_csv(self, *a, **kw):
        calls.append(1)
        if len(calls) >= call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **kw)
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)


def test_a_full_disk_during_expand_leaves_the_output_whole_or_absent(world, capsys, monkeypatch):
    """Case 6: a full disk left some <aid>.csv, no summary.csv, and a traceback."""
    world.train()
    world.pool().to_parquet(world.tmp / "pool.parquet")
    seeds = world.tmp / "test" / "test_stage1.pkl"
    args = ("--seeds", str(seeds), "--candidates", str(world.tmp / "pool.parquet"), "--out", str(world.tmp / "aud"))
    _disk_full_on(monkeypatch, 2)
    code, errors, err = world.cli(capsys, "expand", *args)
    assert code == 2 and len(errors) == 1, err
    assert f"--out: {world.tmp / 'aud'} not written (No space left on device); nothing of it was written" in errors[0]
    assert not (world.tmp / "aud").exists() and not [n for n in os.listdir(world.tmp) if ".tmp-" in n]
    monkeypatch.undo()
    world.expand(seeds, world.tmp / "pool.parquet", world.tmp / "aud")
    before = tree(world.tmp / "aud")
    assert sorted(before) == ["10.csv", "11.csv", "12.csv", "summary.csv"]
    _disk_full_on(monkeypatch, 3)
    code, errors, err = world.cli(capsys, "expand", *args, "runner.audience_count=3")
    assert code == 2 and "the previous output there is intact" in errors[0], err
    assert tree(world.tmp / "aud") == before


def test_a_read_only_out_for_expand_is_one_line_before_any_work(world, capsys, monkeypatch):
    """Case 12: a read-only --out ended in an OSError traceback (after every campaign was adapted)."""
    import builtins

    world.train()
    world.pool().to_parquet(world.tmp / "pool.parquet")
    locked = str(world.tmp / "locked")
    os.makedirs(locked)
    real_open, real_os_open, real_makedirs = builtins.open, os.open, os.makedirs

    def refuse(path):  # as root, chmod does not stop writes: simulate EROFS under `locked`
        if os.path.abspath(os.fspath(path)).startswith(locked):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def open_(file, mode="r", *a, **kw):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def makedirs(path, *a, **kw):
        refuse(path)
        return real_makedirs(path, *a, **kw)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **kw: (refuse(path), real_makedirs(path, *a, **kw)))
    code, errors, err = world.cli(capsys, "expand", "--seeds", str(world.tmp / "test" / "test_stage1.pkl"),
                                  "--candidates", str(world.tmp / "pool.parquet"), "--out", f"{locked}/aud")
    assert code == 2 and len(errors) == 1, err
    assert f"--out {locked}/aud: cannot write in {locked} (Read-only file system); choose a writable --out" \
        in errors[0]
    assert "adapted" not in err and os.listdir(locked) == []


# -- 7: duplicate users -------------------------------------------------------------------------------------------

def test_a_user_in_several_rows_of_a_pool_is_ranked_once(world, caplog, monkeypatch):
    """Case 7: duplicate uids in a pool appeared twice in the audience."""
    from tools import expand
    monkeypatch.setattr(expand, "POOL_CHUNK_ROWS", 16)  # the repeats in chunks of their own
    world.train()
    pool = world.pool(60)
    pd.concat([pool, pool.iloc[:20], pool.iloc[:5]], ignore_index=True).to_parquet(world.tmp / "pool.parquet")
    summary = world.expand(world.tmp / "test" / "test_stage1.pkl", world.tmp / "pool.parquet", world.tmp / "aud",
                           audience_fraction=1.0)
    for aid in (10, 11, 12):
        ranked = pd.read_csv(world.tmp / "aud" / f"{aid}.csv")
        assert len(ranked) == 60 and ranked["uid"].is_unique and list(ranked["rank"]) == list(range(1, 61))
    assert all(row["audience_size"] == 60 for row in summary)
    assert "pool.parquet: column 'uid': 20 user id(s) are in more than one row (e.g. 5000); each user is ranked " \
        "once, by its best-scoring row" in caplog.text

    def repeated(df, stage):
        return df if stage == 1 else df.assign(uid=np.where(df.index % 10 < 2, 77, df["uid"]))
    world.write_test("test", repeated)
    world.infer(output_dir=world.tmp / "report", audience_fraction=1.0)
    audience = pd.read_csv(world.tmp / "report" / "audience" / "10.csv")
    assert audience["uid"].is_unique and len(audience) == 9
    assert "3 candidate(s) repeat a user id of their campaign" in caplog.text


# -- 8, 9: degenerate training ------------------------------------------------------------------------------------

def test_a_run_whose_meta_validation_never_beats_chance_stops_with_one_line(world, capsys):
    """Case 8: global_learning_rate=1000 (meta-validation GAUC 0.5000) exited 0 without a warning."""
    code, errors, err = world.cli(capsys, "trainer", "runner.meta_val_fraction=0.5",
                                  "hyper_parameters.optimizer.global_learning_rate=1000")
    assert code == 1 and len(errors) == 1, err
    assert re.search(r"out: the run diverged: meta-validation's best GAUC 0\.\d+ is no better than chance, the "
                     r"last epoch's mean loss \d+\.\d+ is over twice", errors[0])
    assert "Lower hyper_parameters.optimizer.global_learning_rate (1000)" in errors[0]
    code, errors, err = world.cli(capsys, "trainer", "runner.overwrite=true", "runner.meta_val_fraction=0",
                                  "hyper_parameters.optimizer.global_learning_rate=1000")  # no meta-validation
    assert code == 1 and "out: the run diverged: the last epoch's mean loss" in errors[0], err


def test_training_data_of_one_class_trains_with_meta_validation_off(tmp_path, caplog):
    """Case 9: every label 1: meta-validation's GAUC was NaN, then a TypeError in best_in_model; nothing saved."""
    world = World(tmp_path, positive_rate=1.0, runner={"meta_val_fraction": 0.5})
    result = world.train()
    assert "meta-validation off: the query rows of every held-out campaign are of one class" in caplog.text
    assert "training on all 2 campaigns" in caplog.text
    assert "every label of the training data (train_stage1.pkl) is 1" in caplog.text
    assert (tmp_path / "out" / "0" / "rec.pdparams").is_file() and result["validation"] == []
    world.write_test("test", lambda df, stage: df.assign(label=1))
    [payload] = world.infer()
    assert payload["summary"]["campaigns"] == 3 and payload["summary"]["auc"] is None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(FIXTURE), reason="PaddleRec's sample split is not on this machine")
def test_paddlerec_published_sample_trains_and_infers_to_the_end(tmp_path):
    """Case 9 on PaddleRec's own sample (every label 1), as the fixture README says: the same file is the
    train split and both stages of the test split."""
    for name in ("train/train_stage1.pkl", "test/test_stage1.pkl", "test/test_stage2.pkl"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        os.symlink(FIXTURE, tmp_path / name)
    common = ["-m", os.path.join(ROOT, "config_big.yaml"), "-o", "hyper_parameters.batch_size=32",
              "runner.epochs=1", "runner.train_data_dir=train", "runner.model_save_path=model",
              "runner.test_data_dir=test", "runner.infer_load_path=model", "runner.infer_start_epoch=0",
              "runner.infer_end_epoch=1", f"runner.cache_dir={tmp_path / 'cache'}"]
    for tool in ("tools/trainer.py", "infer.py"):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, tool), *common], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        if tool == "tools/trainer.py":
            assert "meta-validation off" in proc.stderr and "is 1: the network learns no ranking" in proc.stderr
    metrics = pd.read_json(tmp_path / "model" / "0" / "infer_test" / "metrics.json", typ="series")
    assert metrics["summary"]["campaigns"] == 5 and metrics["summary"]["candidates"] == 586
    assert sorted(os.listdir(tmp_path / "model" / "0" / "infer_test" / "audience")) == \
        [f"{aid}.csv" for aid in (10, 17, 2, 21, 9)]


# -- 10, 11, 15: campaign ids, duplicated columns, negative ids -----------------------------------------------------

def test_negative_and_uint64_campaign_ids_are_adapted_and_named_as_given(world):
    """Case 10: negative or uint64 campaign ids ended in 'ValueError: expected non-negative integer'."""
    from metaheac.adapt import campaign_rng

    world.train()
    negative = world.write_test("negative", lambda df, stage: df.assign(aid=df["aid"] - 20))  # -10, -9, -8
    [payload] = world.infer(test_data_dir=negative, output_dir=world.tmp / "neg")
    assert [c["aid"] for c in payload["campaigns"]] == [-10, -9, -8]
    assert sorted(os.listdir(world.tmp / "neg" / "audience")) == ["-10.csv", "-8.csv", "-9.csv"]
    big = world.write_test("big", lambda df, stage: df.assign(
        aid=(df["aid"].to_numpy() - 10).astype(np.uint64) + np.uint64(BIG)))
    [payload] = world.infer(test_data_dir=big, output_dir=world.tmp / "big_report")
    assert [c["aid"] for c in payload["campaigns"]] == [BIG, BIG + 1, BIG + 2]
    assert list(pd.read_csv(world.tmp / "big_report" / "campaigns.csv", dtype={"aid": str})["aid"]) == \
        [str(BIG), str(BIG + 1), str(BIG + 2)]
    world.pool().to_parquet(world.tmp / "pool.parquet")
    summary = world.expand(world.tmp / "negative" / "test_stage1.pkl", world.tmp / "pool.parquet",
                           world.tmp / "aud")
    assert [row["aid"] for row in summary] == [-10, -9, -8] and (world.tmp / "aud" / "-9.csv").is_file()
    # ordinary ids draw as before, bit for bit; a negative id draws apart from every non-negative one
    for aid in (0, 12, 2**40, BIG):
        assert (campaign_rng(7, aid).random(4) == np.random.default_rng([7, aid]).random(4)).all()
    assert not (campaign_rng(7, -12).random(4) == campaign_rng(7, 12).random(4)).any()


def test_a_duplicated_column_name_is_one_line(world):
    """Case 11: a column name given twice ended in 'ValueError: could not broadcast'."""
    def twice(df, stage):
        return pd.concat([df, df[["age"]]], axis=1)
    test = world.write_test("twice", twice)
    world.train()
    with pytest.raises(DataError, match=r"test_stage1.pkl: column 'age': 2 columns have this name. Fix: drop or "
                                        r"rename the duplicates"):
        world.infer(test_data_dir=test)
    pool = world.pool()
    pd.concat([pool, pool[["kw1"]]], axis=1).to_pickle(world.tmp / "pool.pkl")
    with pytest.raises(DataError, match=r"pool.pkl: column 'kw1': 2 columns have this name"):
        world.expand(world.tmp / "test" / "test_stage1.pkl", world.tmp / "pool.pkl", world.tmp / "aud")


def test_a_negative_id_is_named_as_negative(world):
    """Case 15: age = -1 was told to raise the vocabulary to a size it already had."""
    world.write_test("test", lambda df, stage: df.assign(age=np.where(df.index == 3, -1, df["age"])))
    with pytest.raises(DataError) as err:
        world.infer()
    message = str(err.value)
    assert "column 'age': 1 negative id(s) (e.g. -1) outside [0, 4]: ids count from 0 (first at row 3)" in message
    assert "raise this field's vocabulary" not in message and "re-encode the ids into [0, 4]" in message


# -- 14: full disk in infer ---------------------------------------------------------------------------------------

def test_a_full_disk_during_infer_is_one_line_and_keeps_the_previous_output(world, capsys, monkeypatch):
    """Case 14: a full disk while PIL wrote report.png ended in a traceback."""
    from matplotlib.figure import Figure

    world.train()
    report = world.tmp / "report"
    world.infer(output_dir=report, report_png=True)
    before = tree(report)
    assert "report.png" in before

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Figure, "savefig", full)
    code, errors, err = world.cli(capsys, "infer", f"runner.output_dir={report}", "runner.report_png=true")
    assert code == 2 and len(errors) == 1, err
    assert f"runner.output_dir: {report} not written (No space left on device); the previous output there is " \
        "intact. Free space or choose another runner.output_dir" in errors[0]
    assert tree(report) == before and not [n for n in os.listdir(world.tmp) if ".tmp-" in n or n.endswith(".lock")]


# -- 16: pickles are code -----------------------------------------------------------------------------------------

def test_a_pickle_is_named_as_trusted_code_once_per_file(world, caplog):
    """Case 16: a pickle given as data or pool ran its code on load without a word at run time."""
    world.train()
    world.pool().to_pickle(world.tmp / "pool.pkl")
    world.pool().to_parquet(world.tmp / "pool.parquet")
    seeds = world.tmp / "test" / "test_stage1.pkl"
    caplog.clear()
    for i, pool in enumerate(("pool.pkl", "pool.pkl", "pool.parquet")):
        world.expand(seeds, world.tmp / pool, world.tmp / f"aud{i}")
    warnings = [r.getMessage() for r in caplog.records if "a pickle runs any code" in r.getMessage()]
    assert sorted(w.split(":")[0] for w in warnings) == sorted([str(seeds), str(world.tmp / "pool.pkl")])
    assert all("tools/convert.py" in w and "use only files you trust" in w for w in warnings)
