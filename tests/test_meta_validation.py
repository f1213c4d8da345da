"""Meta-validation: held-out training campaigns choose the meta-step the checkpoints keep."""
import json

import numpy as np
import paddle
import pytest

from tools.utils.checkpoint import load_checkpoint


@pytest.fixture
def make(train_setup):
    configs = train_setup(10, hyper={"batch_size": 32})
    return lambda **runner: configs(report_png=False, **runner)


def reader(config):
    import reader_train
    from tools.utils import runtime
    return reader_train.RecDataset(runtime.list_files(config["runner.train_data_dir"], "x"), config)


def test_held_out_campaigns_are_never_trained_on(make):
    full, held = reader(make(meta_val_fraction=0.0)), reader(make(meta_val_fraction=0.3))
    aid = lambda t: int(t[0].aids[t[1]])  # noqa: E731
    assert len(held.tasks) == 10  # nothing is held out until a trainer asks (PaddleRec's never does)
    tasks = held.validation_tasks()
    val = {aid(t) for t in held.val_tasks}
    assert len(val) == 3 and {aid(t) for t in held.tasks} == {aid(t) for t in full.tasks} - val
    drawn = {task["aid"] for tasks, _ in held for task in tasks}
    assert drawn and not drawn & val
    assert len(tasks) == 3 and held.validation_tasks() is tasks  # the same at every check
    first_ad = len(held.schema.static) + held.schema.seq_width
    aid_col = held.schema.data_ad.index(next(f for f in held.schema.data_ad if f.name == "campaignId"))
    for support, query in tasks:  # support and query rows of one held-out campaign
        assert support["rows"].shape[0] <= 32 and query["rows"].shape[0] > 0
        assert len({int(r) for r in np.concatenate([support["rows"], query["rows"]])[:, first_ad + aid_col]}) == 1
    again = reader(make(meta_val_fraction=0.3))
    again.validation_tasks()
    assert [aid(t) for t in again.val_tasks] == [aid(t) for t in held.val_tasks]


def validation_gauc(config, path):
    """What meta-validation reads, computed apart: the held-out campaigns'
    query rows scored once their support rows have weighed the routings
    (runner.adaptation=routed)."""
    from dygraph_model import DygraphModel
    from metaheac.adapt import adapt
    from metaheac.metrics import auc
    _, learned = load_checkpoint(path, DygraphModel().create_model(config))
    config = {**config, "runner.adaptation": "routed"}
    return float(np.mean([auc(q["labels"], adapt(learned._replace(groups=None), s, config).score(
        q["rows"], q["lengths"])) for s, q in reader(config).validation_tasks()]))


def test_checkpoints_hold_the_best_checked_parameters(make, tmp_path, monkeypatch):
    from tools import trainer
    monkeypatch.setattr(trainer, "META_VAL_INTERVAL", 3)
    config = make(epochs=2, meta_val_fraction=0.3, route_prior=0.1)
    out = trainer.train(config)
    steps, gaucs = zip(*out["validation"])
    best = int(np.argmax(gaucs))
    assert out["best_meta_step"] == steps[best]
    assert steps[-1] == out["meta_batches"]  # an epoch's end is always checked
    # the last checkpoint ranks the held-out campaigns as the best check did
    assert validation_gauc(config, str(tmp_path / "out" / "1")) == pytest.approx(gaucs[best], rel=1e-6)
    state = json.loads((tmp_path / "out" / "1" / "state.json").read_text())
    assert state["meta_validation"]["best_meta_step"] == steps[best]


def test_patience_stops_training_and_the_epochs_left_hold_the_best(make, tmp_path, monkeypatch):
    from tools import trainer
    real, first = trainer.Validation.check, {}

    def nothing_beats_the_first(self, run, step):
        real(self, run, step)
        if not first:  # the first check is the best there will be
            first.update(self.best_params)
            self.best = float("inf")
    monkeypatch.setattr(trainer.Validation, "check", nothing_beats_the_first)
    monkeypatch.setattr(trainer, "META_VAL_INTERVAL", 2)
    config = make(epochs=4, meta_val_fraction=0.3, meta_val_patience=2)
    out = trainer.train(config)
    assert out["meta_batches"] == 6 and out["epochs"] == 1  # checks at 2, 4, 6: two without a better loss
    assert out["best_meta_step"] == 2
    trained_on = dict(out["model"].named_parameters())  # training went on to step 6 ...
    assert not np.array_equal(trained_on["critic_w"].numpy(), first["critic_w"])
    for epoch in (0, 1, 2, 3):  # ... and every checkpoint holds step 2's parameters
        saved = paddle.load(str(tmp_path / "out" / str(epoch) / "rec.pdparams"))
        for name, value in first.items():
            np.testing.assert_array_equal(saved[name].numpy(), value)
        state = json.loads((tmp_path / "out" / str(epoch) / "state.json").read_text())
        assert state["stopped_early"] == {"epoch": 0, "meta_step": 6} and state["complete"]


def test_without_a_held_out_share_nothing_changes(make):
    from tools.trainer import train
    out = train(make(epochs=1, meta_val_fraction=0.0))
    assert out["validation"] == [] and out["best_meta_step"] is None
