"""Past campaigns grouped by what their users click, one regression pooled
over each group (hyper_parameters.campaign_clusters, metaheac/clusters.py)."""
import os

import numpy as np
import paddle
import pytest

from conftest import random_task
from dygraph_model import DygraphModel
from metaheac import clusters, combine
from metaheac.schema import schema_from_config
from tools.utils import metrics
from tools.utils.checkpoint import load_checkpoint, save_checkpoint


def kind_logit(rows, kind):
    """The planted click logit of kind 0 (age id even), 1 (gender id 0) or 2 (age id 1 or 2)."""
    age, gender = rows[:, 0], rows[:, 1] - 5  # table rows: gender's ids follow age's 5
    clicks = (age % 2 == 0, gender == 0, (age == 1) | (age == 2))[kind]
    return np.where(clicks, 1.5, -1.5)


def campaign(schema, kind, n, seed):
    """Rows [n, C], lengths and labels of a campaign of `kind`."""
    task = random_task(schema, np.random.default_rng(seed), batch=n)
    rows, lengths = task["sup_rows"], task["sup_lengths"]
    p = 1.0 / (1.0 + np.exp(-kind_logit(rows, kind)))
    return rows, lengths, (np.random.default_rng(seed + 1000).random(n) < p).astype(np.float32)


def past_campaigns(schema, kinds, n=400):
    data = [campaign(schema, kind, n, seed=i) for i, kind in enumerate(kinds)]
    return [n] * len(kinds), lambda i: data[i]


def test_campaigns_are_grouped_by_the_kind_their_clicks_follow(tiny_config):
    schema = schema_from_config(tiny_config())
    kinds = [0, 1, 2, 0, 1, 2, 2, 0, 1]
    sizes, take = past_campaigns(schema, kinds)
    fitted = clusters.fit(sizes, take, schema, 3, np.random.default_rng(0))
    assert sorted(fitted.sizes) == [3, 3, 3]
    for kind in (0, 1, 2):  # one group per kind, holding all of its campaigns
        assert len({fitted.labels[i] for i, k in enumerate(kinds) if k == kind}) == 1
    # each group's pooled regression ranks fresh users of its kind as the planted logit does
    rows, lengths, labels = campaign(schema, 2, 3000, seed=99)
    g = fitted.labels[kinds.index(2)]
    x = combine.user_features(rows, lengths, schema)
    pooled = metrics.auc(labels, x @ fitted.w[g])
    assert pooled > metrics.auc(labels, kind_logit(rows, 2)) - 0.02
    assert fitted.w.shape == (3, schema.ad[0].offset)


def test_grouping_is_deterministic_given_the_rng_and_leaves_out_one_class_campaigns(tiny_config):
    schema = schema_from_config(tiny_config())
    sizes, take = past_campaigns(schema, [0, 1, 0, 1])
    one_class = lambda i: (*take(i)[:2], np.zeros(400, np.float32)) if i == 2 else take(i)  # noqa: E731
    a = clusters.fit(sizes, one_class, schema, 4, np.random.default_rng(3))
    b = clusters.fit(sizes, one_class, schema, 4, np.random.default_rng(3))
    assert a.labels[2] == -1 and a.sizes.sum() == 3
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert clusters.fit([5], lambda i: (*take(0)[:2], np.ones(400, np.float32)), schema, 2,
                        np.random.default_rng(0)) is None


def test_average_linkage_cuts_at_most_k_groups_of_correlated_campaigns():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 200))
    logits = np.stack([base[i % 2] + 0.3 * rng.normal(size=200) for i in range(6)])
    labels = clusters.group(logits, 2)
    assert (labels[::2] == labels[0]).all() and (labels[1::2] == labels[1]).all() and labels[0] != labels[1]
    assert clusters.group(logits[:1], 4).tolist() == [0]
    assert clusters.group(np.zeros((3, 10)), 2).max() <= 1  # constant logits: no correlation, no failure


def net_with_clusters(tiny_config, schema_kinds=(0, 1, 2)):
    config = tiny_config(runner={"adaptation": "wide_cv", "route_prior": 0.1},
                         hyper={"campaign_clusters": 4, "gate": "lookup"})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    net.eval()
    sizes, take = past_campaigns(net.schema, [k for k in schema_kinds for _ in range(2)])
    net.set_clusters(clusters.fit(sizes, take, net.schema, 3, np.random.default_rng(0)))  # 3 of 4 slots
    return config, net


def test_the_seeds_weigh_the_pooled_regression_of_their_kind(tiny_config):
    config, net = net_with_clusters(tiny_config)
    assert net.clusters_fitted and int((net.pooled_size.numpy() > 0).sum()) == 3  # the 4th group unused
    rows, lengths, labels = campaign(net.schema, 1, 300, seed=50)
    fitted = combine.fit(net, {"rows": rows, "lengths": lengths, "labels": labels, "aid": 1}, config,
                         np.random.default_rng(0))
    top = int(np.argmax(fitted.weights))
    assert fitted.routes[top][0] == "cluster" and fitted.weights[top] > 0.99
    assert fitted.labels[top].startswith("past campaigns' group")
    fresh_rows, fresh_lengths, fresh = campaign(net.schema, 1, 3000, seed=51)
    scores = combine.score(net, fitted, fresh_rows, fresh_lengths, 64)
    assert metrics.auc(fresh, scores) > metrics.auc(fresh, kind_logit(fresh_rows, 1)) - 0.03
    # scored with other campaigns' routings in one pass: the same scores
    other = combine.fit(net, {"rows": rows, "lengths": lengths, "labels": 1.0 - labels, "aid": 2}, config,
                        np.random.default_rng(0))
    own = [int(fresh_rows[0, col]) for col, _ in combine.gate_columns(net)]
    together = combine.score_many(net, [fitted, other], fresh_rows, own * 2, fresh_lengths, 64)
    np.testing.assert_allclose(together[:, 0], scores, atol=1e-6)


def test_meta_validation_reads_the_network_alone(tiny_config):
    _, net = net_with_clusters(tiny_config)
    rows, lengths, labels = campaign(net.schema, 1, 200, seed=60)
    routes, _, _ = combine.route_prior(net, rows, 0.1, clusters=False)
    assert not any(combine._is_cluster(r) for r in routes)
    assert sum(combine._is_cluster(r) for r in combine.route_prior(net, rows, 0.1)[0]) == 3


def test_a_checkpoint_carries_its_pooled_regressions_and_older_ones_have_none(tiny_config, tmp_path):
    config, net = net_with_clusters(tiny_config)
    save_checkpoint(str(tmp_path / "ck"), 0, net, None, config)
    # infer's config need not say campaign_clusters: the checkpoint's are used
    plain = DygraphModel().create_model(tiny_config(hyper={"gate": "lookup"}))
    load_checkpoint(str(tmp_path / "ck" / "0"), plain)
    assert plain.clusters_fitted
    np.testing.assert_array_equal(plain.pooled_w.numpy(), net.pooled_w.numpy())
    # a checkpoint without them (PaddleRec's trainer, older runs) loads with none fitted
    save_checkpoint(str(tmp_path / "old"), 0, plain, None, config)
    state = paddle.load(str(tmp_path / "old" / "0" / "rec.pdparams"))
    for name in ("pooled_w", "pooled_b", "pooled_size"):
        del state[name]
    paddle.save(state, str(tmp_path / "old" / "0" / "rec.pdparams"))
    with_key = DygraphModel().create_model(tiny_config(hyper={"gate": "lookup", "campaign_clusters": 4}))
    load_checkpoint(str(tmp_path / "old" / "0"), with_key)
    assert not with_key.clusters_fitted


@pytest.mark.parametrize("k", [0, 3])
def test_the_trainer_fits_them_when_asked(train_setup, k):
    from tools.trainer import train

    make = train_setup(n_train=8, hyper={"campaign_clusters": k} if k else None)
    trained = train(make(seed=11, overwrite=True))
    net = trained["model"]
    assert net.clusters_fitted == bool(k)
    if k:
        assert 0 < int((net.pooled_size.numpy() > 0).sum()) <= k and net.pooled_size.numpy().sum() == 8


def test_the_network_trained_with_them_is_the_network_trained_without(train_setup):
    from tools.trainer import train

    make = train_setup(n_train=8)
    plain = train(make(seed=11))["model"]
    make_k = train_setup(n_train=8, hyper={"campaign_clusters": 3})
    with_k = train(make_k(seed=11, overwrite=True))["model"]
    for (name, a), (_, b) in zip(plain.named_parameters(), with_k.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_a_resumed_run_keeps_the_regressions_it_saved(train_setup, monkeypatch):
    from tools.trainer import train

    make = train_setup(n_train=8, hyper={"campaign_clusters": 3})
    first = make(seed=11)
    saved = train(first)["model"].pooled_w.numpy()
    monkeypatch.setattr(clusters, "fit", lambda *args: pytest.fail("fitted again on resume"))
    resumed = train(make(seed=11, epochs=2, model_init_path=os.path.join(first["runner.model_save_path"], "0")))
    np.testing.assert_array_equal(resumed["model"].pooled_w.numpy(), saved)
