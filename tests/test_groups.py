"""Past campaigns grouped by what their users click, one regression pooled
over each group (hyper_parameters.campaign_clusters, metaheac/groups.py)."""
import os

import numpy as np
import paddle
import pytest

from conftest import random_task
from dygraph_model import DygraphModel
from metaheac import groups, metrics, mixture
from metaheac.adapt import adapt
from metaheac.adapted import score_users
from metaheac.errors import DataError
from metaheac.features import user_features
from metaheac.learned import Learned
from metaheac.schema import schema_from_config
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
    fitted = groups.fit(sizes, take, schema, 3, np.random.default_rng(0))
    assert sorted(fitted.sizes) == [3, 3, 3]
    for kind in (0, 1, 2):  # one group per kind, holding all of its campaigns
        assert len({fitted.labels[i] for i, k in enumerate(kinds) if k == kind}) == 1
    # each group's pooled regression ranks fresh users of its kind as the planted logit does
    rows, lengths, labels = campaign(schema, 2, 3000, seed=99)
    g = fitted.labels[kinds.index(2)]
    x = user_features(rows, lengths, schema)
    pooled = metrics.auc(labels, x @ fitted.w[g])
    assert pooled > metrics.auc(labels, kind_logit(rows, 2)) - 0.02
    assert fitted.w.shape == (3, schema.ad[0].offset)


def test_grouping_is_deterministic_given_the_rng_and_leaves_out_one_class_campaigns(tiny_config):
    schema = schema_from_config(tiny_config())
    sizes, take = past_campaigns(schema, [0, 1, 0, 1])
    one_class = lambda i: (*take(i)[:2], np.zeros(400, np.float32)) if i == 2 else take(i)  # noqa: E731
    a = groups.fit(sizes, one_class, schema, 4, np.random.default_rng(3))
    b = groups.fit(sizes, one_class, schema, 4, np.random.default_rng(3))
    assert a.labels[2] == -1 and a.sizes.sum() == 3
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert groups.fit([5], lambda i: (*take(0)[:2], np.ones(400, np.float32)), schema, 2,
                        np.random.default_rng(0)) is None


def test_average_linkage_cuts_at_most_k_groups_of_correlated_campaigns():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 200))
    logits = np.stack([base[i % 2] + 0.3 * rng.normal(size=200) for i in range(6)])
    labels = groups.group(logits, 2)
    assert (labels[::2] == labels[0]).all() and (labels[1::2] == labels[1]).all() and labels[0] != labels[1]
    assert groups.group(logits[:1], 4).tolist() == [0]
    assert groups.group(np.zeros((3, 10)), 2).max() <= 1  # constant logits: no correlation, no failure


def learned_with_groups(tiny_config, schema_kinds=(0, 1, 2)):
    config = tiny_config(runner={"adaptation": "mixture", "route_prior": 0.1}, hyper={"gate": "lookup"})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    sizes, take = past_campaigns(net.schema, [k for k in schema_kinds for _ in range(2)])
    return config, Learned(net, groups.fit(sizes, take, net.schema, 3, np.random.default_rng(0)))


def test_the_seeds_weigh_the_group_regression_of_their_kind(tiny_config):
    config, learned = learned_with_groups(tiny_config)
    assert learned.groups.sizes.size == 3
    rows, lengths, labels = campaign(learned.net.schema, 1, 300, seed=50)
    fitted = adapt(learned, {"rows": rows, "lengths": lengths, "labels": labels, "aid": 1}, config)
    top = int(np.argmax(fitted.mixture.weights))
    assert fitted.mixture.components[top][0] == "group" and fitted.mixture.weights[top] > 0.99
    assert fitted.mixture.labels[top].startswith("past campaigns' group")
    fresh_rows, fresh_lengths, fresh = campaign(learned.net.schema, 1, 3000, seed=51)
    scores = fitted.score(fresh_rows, fresh_lengths)
    assert metrics.auc(fresh, scores) > metrics.auc(fresh, kind_logit(fresh_rows, 1)) - 0.03
    # scored with another campaign's in one pass: the same scores
    other = adapt(learned, {"rows": rows, "lengths": lengths, "labels": 1.0 - labels, "aid": 2}, config)
    users = fresh_rows[:, :learned.net.schema.first_ad_col]
    together = score_users([fitted, other], users, fresh_lengths)
    np.testing.assert_allclose(together[0], scores, atol=1e-6)


def test_meta_validation_reads_the_network_alone(tiny_config):
    _, learned = learned_with_groups(tiny_config)
    rows, _, _ = campaign(learned.net.schema, 1, 200, seed=60)
    routes, _, _ = mixture.components(learned, rows, 0.1, groups=False)
    assert not any(mixture._is_group(r) for r in routes)
    assert sum(mixture._is_group(r) for r in mixture.components(learned, rows, 0.1)[0]) == 3
    config = tiny_config(runner={"adaptation": "routed", "route_prior": 0.1})
    rows, lengths, labels = campaign(learned.net.schema, 1, 300, seed=50)
    routed = adapt(learned, {"rows": rows, "lengths": lengths, "labels": labels, "aid": 1}, config)
    assert not any(mixture._is_group(r) for r in routed.mixture.components) and routed.correction is None


def test_a_checkpoint_carries_its_group_regressions_beside_it(tiny_config, tmp_path):
    config, learned = learned_with_groups(tiny_config)
    save_checkpoint(str(tmp_path / "ck"), 0, learned.net, None, config, groups=learned.groups)
    assert sorted(os.listdir(tmp_path / "ck" / "0")) == ["config.yaml", "groups.npz", "rec.pdparams", "state.json"]
    # infer's config need not say campaign_clusters: the checkpoint's are used
    plain = DygraphModel().create_model(tiny_config(hyper={"gate": "lookup", "campaign_clusters": 0}))
    _, loaded = load_checkpoint(str(tmp_path / "ck" / "0"), plain)
    for a, b in zip(loaded.groups, learned.groups):
        np.testing.assert_array_equal(a, b)
    # a checkpoint without them (PaddleRec's trainer) loads with none
    save_checkpoint(str(tmp_path / "none"), 0, plain, None, config)
    assert load_checkpoint(str(tmp_path / "none" / "0"), plain)[1].groups is None


def test_group_regressions_of_another_schema_or_a_broken_file_are_refused(tiny_config, tmp_path):
    config, learned = learned_with_groups(tiny_config)
    save_checkpoint(str(tmp_path / "ck"), 0, learned.net, None, config, groups=learned.groups)
    other = schema_from_config(tiny_config(hyper={"features": [
        {"name": "gender", "group": "static", "vocab_size": 3}, {"name": "age", "group": "static", "vocab_size": 5},
        {"name": "interest1", "group": "sequence", "vocab_size": 11, "width": 3},
        {"name": "kw1", "group": "sequence", "vocab_size": 13, "width": 2},
        {"name": "adCategoryId", "group": "ad", "vocab_size": 4},
        {"name": "productType", "group": "ad", "vocab_size": 3}]}))
    with pytest.raises(DataError, match="groups.npz: fitted under another feature schema"):
        groups.load(str(tmp_path / "ck" / "0"), other)
    with open(tmp_path / "ck" / "0" / "groups.npz", "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(DataError, match="groups.npz: not a readable group-regressions file"):
        groups.load(str(tmp_path / "ck" / "0"), learned.net.schema)


def test_a_checkpoint_of_the_release_with_buffers_keeps_its_regressions(tiny_config, tmp_path):
    """That release saved the group regressions in rec.pdparams, sized by the
    config's campaign_clusters (unfitted slots size 0)."""
    config, learned = learned_with_groups(tiny_config)
    save_checkpoint(str(tmp_path / "ck"), 0, learned.net, None, config)
    path = str(tmp_path / "ck" / "0" / "rec.pdparams")
    state = paddle.load(path)
    g = learned.groups
    state["pooled_w"] = np.concatenate([g.w, np.zeros((1, g.w.shape[1]), np.float32)])
    state["pooled_b"] = np.append(g.b, 0.0).astype(np.float32)
    state["pooled_size"] = np.append(g.sizes, 0).astype(np.float32)
    paddle.save(state, path)
    _, loaded = load_checkpoint(str(tmp_path / "ck" / "0"), DygraphModel().create_model(config))
    np.testing.assert_array_equal(loaded.groups.w, g.w)
    np.testing.assert_array_equal(loaded.groups.sizes, g.sizes)


@pytest.mark.parametrize("k", [0, 3])
def test_the_trainer_fits_them_when_asked(train_setup, k):
    from tools.trainer import train

    make = train_setup(n_train=8, hyper={"campaign_clusters": k})
    fitted = train(make(seed=11, overwrite=True, meta_val_fraction=0.0))["groups"]
    assert (fitted is not None) == bool(k)
    if k:
        assert 0 < fitted.sizes.size <= k and fitted.sizes.sum() == 8


def test_the_network_trained_with_them_is_the_network_trained_without(train_setup):
    from tools.trainer import train

    make = train_setup(n_train=8, hyper={"campaign_clusters": 0})
    plain = train(make(seed=11))["model"]
    make_k = train_setup(n_train=8, hyper={"campaign_clusters": 3})
    with_k = train(make_k(seed=11, overwrite=True))["model"]
    for (name, a), (_, b) in zip(plain.named_parameters(), with_k.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_a_resumed_run_keeps_the_regressions_it_saved(train_setup, monkeypatch):
    from tools.trainer import train

    make = train_setup(n_train=8, hyper={"campaign_clusters": 3})
    first = make(seed=11)
    saved = train(first)["groups"].w
    monkeypatch.setattr(groups, "fit", lambda *args: pytest.fail("fitted again on resume"))
    resumed = train(make(seed=11, epochs=2, model_init_path=os.path.join(first["runner.model_save_path"], "0")))
    np.testing.assert_array_equal(resumed["groups"].w, saved)
