"""Adaptation by the seeds' mixture of past campaigns and its correction (runner.adaptation=mixture)."""
import numpy as np
import paddle
import pytest

from conftest import random_rows, random_task
from dygraph_model import DygraphModel
from test_finetune import routed_setup
from metaheac import correction, logreg, metrics, mixture
from metaheac.adapt import adapt, campaign_rng
from metaheac.adapted import score_users
from metaheac.correction import Correction
from metaheac.features import user_features
from metaheac.learned import Learned
from metaheac.mixture import Mixture, MixtureCampaign
from metaheac.schema import schema_from_config


def rows_of(schema, n, seed):
    task = random_task(schema, np.random.default_rng(seed), batch=n)
    return task["sup_rows"], task["sup_lengths"]


def test_user_features_are_the_networks_pooling_of_the_user_ids(tiny_config):
    schema = schema_from_config(tiny_config())
    rows, lengths = rows_of(schema, 5, seed=0)
    x = user_features(rows, lengths, schema).toarray()
    expected = np.zeros_like(x)
    for i in range(5):
        for j, f in enumerate(schema.static):
            expected[i, rows[i, j]] += 1.0
        col = len(schema.static)
        for j, f in enumerate(schema.sequence):
            for k in range(lengths[i, j]):  # the first `length` ids, each 1/length
                expected[i, rows[i, col + k]] += 1.0 / lengths[i, j]
            col += f.width
    np.testing.assert_allclose(x, expected)
    assert x.shape[1] == schema.ad[0].offset  # ad ids are constant within a campaign: not features


def make_net(tiny_config, **runner):
    config = tiny_config(runner={"adaptation": "mixture", "route_prior": 0.0, **runner})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    return config, net


def planted(net, n, seed, id_weight, network_weight):
    """Seeds whose clicks follow one user id (a static field's id parity) and/or the network's own logit."""
    rows, lengths = rows_of(net.schema, n, seed)
    rng = np.random.default_rng(seed + 100)
    p_net = mixture.component_probs(Learned(net), rows, lengths, [None])[:, 0]
    network = np.log(p_net) - np.log1p(-p_net)
    network = (network - network.mean()) / network.std()
    by_id = np.where(rows[:, 0] % 2 == 0, 1.5, -1.5)
    p = 1.0 / (1.0 + np.exp(-(id_weight * by_id + network_weight * network)))
    stage = {"rows": rows, "lengths": lengths, "labels": (rng.random(n) < p).astype(np.float32), "aid": 1}
    return stage, p_net


def fit(config, net, stage, seed=0):
    return adapt(Learned(net), stage, config, np.random.default_rng(seed))


def auc_of(campaign, stage):
    return metrics.auc(stage["labels"], campaign.score(stage["rows"], stage["lengths"]))


def test_seeds_correct_the_network_where_their_own_ids_say_more(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 600, seed=1, id_weight=1.0, network_weight=0.3)
    fix = fit(config, net, seeds).correction
    assert fix.kind in ("corrected", "seeds") and fix.c is not None
    assert fix.cv_auc[correction.name(fix.kind, fix.c)] > fix.cv_auc["mixture"]
    fresh, p_net = planted(net, 2000, seed=2, id_weight=1.0, network_weight=0.3)
    assert auc_of(fit(config, net, seeds), fresh) > metrics.auc(fresh["labels"], p_net) + 0.1


def test_a_network_the_seeds_cannot_improve_is_kept(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 300, seed=3, id_weight=0.0, network_weight=2.0)
    fitted = fit(config, net, seeds)
    fresh, p_net = planted(net, 3000, seed=4, id_weight=0.0, network_weight=2.0)
    # whatever C the folds pick, fresh users rank as the network ranks them, up to noise
    assert auc_of(fitted, fresh) > metrics.auc(fresh["labels"], p_net) - 0.01


def test_seeds_alone_score_without_the_network(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 400, seed=11, id_weight=1.0, network_weight=0.0)
    fitted = fit(config, net, seeds)
    fitted.correction = fitted.correction._replace(kind="seeds", a=0.0)
    fitted.mixture = fitted.mixture._replace(components=["not a routing"])
    x = user_features(seeds["rows"], seeds["lengths"], net.schema)[:, fitted.correction.cols]
    expected = 1.0 / (1.0 + np.exp(-(fitted.correction.b + x @ fitted.correction.w)))
    np.testing.assert_allclose(fitted.score(seeds["rows"], seeds["lengths"]), expected, rtol=1e-6)


def test_one_class_seeds_keep_their_own_ids_uncorrected_and_warn(tiny_config, caplog):
    config, net = make_net(tiny_config, route_prior=0.5)
    seeds, _ = planted(net, 50, seed=5, id_weight=1.0, network_weight=0.0)
    seeds["labels"] = np.ones(50, np.float32)
    fitted = fit(config, net, seeds)
    assert fitted.mixture.components == [None] and fitted.correction is None
    assert "its 50 seeds are all of one class, so it keeps its own ids" in caplog.text
    assert fitted.describe() == "routes own ids 100%; no correction (fewer than 2 seeds of a class)"
    p_net = mixture.component_probs(Learned(net), seeds["rows"], seeds["lengths"], [None])[:, 0]
    np.testing.assert_allclose(fitted.score(seeds["rows"], seeds["lengths"]), p_net, rtol=1e-5)


def test_the_seeds_weight_the_routing_that_explains_them_and_only_routings_training_saw(tiny_config):
    """adCategoryId 1 routes to one expert, 2 to another; seeds of a campaign
    labelled id 1 click as id 2's expert predicts (test_finetune.routed_setup)."""
    config, net, seeds, cat = routed_setup(tiny_config, truth=1, route_prior=0.1, adaptation="mixture")
    mix = adapt(Learned(net), seeds, config, campaign_rng(0, 1)).mixture
    assert mix.components[int(np.argmax(mix.weights))] == (0, cat.offset + 2)
    assert mix.weights.max() > 0.99 and abs(mix.weights.sum() - 1.0) < 1e-9
    assert mix.describe().startswith("routes adCategoryId=2 ")
    trained = frozenset(r for r in range(net.schema.num_rows) if r != cat.offset + 2)
    mix = adapt(Learned(net, None, trained), seeds, config, campaign_rng(0, 1)).mixture
    assert (0, cat.offset + 2) not in mix.components
    assert all(route is None or route[1] in trained for route in mix.components)


def test_the_per_campaign_choice_is_deterministic_given_the_seed(tiny_config):
    config, net = make_net(tiny_config, route_prior=0.1)
    seeds, _ = planted(net, 300, seed=7, id_weight=1.0, network_weight=0.0)
    runs = [adapt(Learned(net), seeds, config, campaign_rng(5, 42)) for _ in range(2)]
    assert runs[0].correction.kind != "mixture"
    np.testing.assert_array_equal(runs[0].correction.w, runs[1].correction.w)
    assert runs[0].correction.cv_auc == runs[1].correction.cv_auc
    fresh, _ = planted(net, 100, seed=8, id_weight=1.0, network_weight=0.0)
    scores = [c.score(fresh["rows"], fresh["lengths"]) for c in runs]
    np.testing.assert_array_equal(scores[0], scores[1])
    other = adapt(Learned(net), seeds, config, campaign_rng(6, 42))  # another seed: other folds
    assert other.correction.cv_auc != runs[0].correction.cv_auc


def test_scores_do_not_depend_on_how_a_pool_is_chunked(tiny_config):
    config, net = make_net(tiny_config, route_prior=0.3)
    seeds, _ = planted(net, 200, seed=9, id_weight=1.0, network_weight=0.5)
    tuned = adapt(Learned(net), seeds, config, campaign_rng(1, 1))
    pool, _ = planted(net, 200, seed=10, id_weight=1.0, network_weight=0.5)
    rows, lengths = pool["rows"], pool["lengths"]
    whole = tuned.score(rows, lengths, pad=True)
    chunks = np.concatenate([tuned.score(rows[i:i + 50], lengths[i:i + 50], pad=True) for i in range(0, 200, 50)])
    np.testing.assert_allclose(whole, chunks, rtol=1e-6)


def one_by_one(fit_path):
    """logreg.fit_path's signature, each problem fitted by itself."""
    def fit_each(x, y, offsets, weights, cs, fit_a, groups):
        alone = [fit_path(x, y, offsets[:, j:j + 1], weights[:, j:j + 1], cs, fit_a[j:j + 1], groups)
                 for j in range(offsets.shape[1])]
        return [tuple(np.concatenate(parts, axis=-1) for parts in zip(*at_c)) for at_c in zip(*alone)]
    return fit_each


def test_a_campaigns_fits_made_together_equal_those_made_one_by_one(tiny_config, monkeypatch):
    """Every fold's regressions are fitted in one pass (metaheac/logreg.py):
    the same choice, fold AUCs and scores as fitting each alone, whatever
    the seed count."""
    config, net = make_net(tiny_config, route_prior=0.2)
    fresh, _ = planted(net, 300, seed=20, id_weight=1.0, network_weight=0.5)
    for n, seed in ((40, 21), (300, 22), (1500, 23)):
        seeds, _ = planted(net, n, seed=seed, id_weight=1.0, network_weight=0.5)
        together = fit(config, net, seeds)
        with monkeypatch.context() as patch:
            patch.setattr(correction.logreg, "fit_path", one_by_one(logreg.fit_path))
            alone = fit(config, net, seeds)
        t, a = together.correction, alone.correction
        assert (t.kind, t.c) == (a.kind, a.c)
        assert t.cv_auc.keys() == a.cv_auc.keys()
        np.testing.assert_allclose(list(t.cv_auc.values()), list(a.cv_auc.values()), rtol=0, atol=1e-9)
        np.testing.assert_allclose(auc_of(together, fresh), auc_of(alone, fresh), rtol=0, atol=1e-9)
        np.testing.assert_allclose(together.score(fresh["rows"], fresh["lengths"]),
                                   alone.score(fresh["rows"], fresh["lengths"]), rtol=0, atol=1e-6)


def test_the_scores_average_the_logits_of_the_best_candidates(tiny_config):
    """The mean of the best candidates' logits, each refitted on all the
    seeds, is one logit a m + b + x w with a, b, w averaged."""
    config, net = make_net(tiny_config)
    seeds, p_net = planted(net, 400, seed=30, id_weight=1.0, network_weight=0.5)
    x_all = user_features(seeds["rows"], seeds["lengths"], net.schema)
    y, m = seeds["labels"].astype(np.float64), mixture.logit(p_net)
    fold = correction.folds(y, np.random.default_rng(0))
    fix = correction.fit(x_all, y, fold, [m] * (fold.max() + 1), m, net.schema, top=3)
    assert len(fix.averaged) == 3 and fix.averaged[0] == correction.name(fix.kind, fix.c)
    assert "mean of 3 best" in fix.describe()
    # each candidate fitted alone on all the seeds (route_prior 0: the mixture is the network itself)
    cols = np.unique(x_all.indices)
    x = x_all[:, cols]
    w, a, b = np.zeros(cols.size), 0.0, 0.0
    for name in fix.averaged:
        kind, _, c = name.partition(" C=")
        if kind == "mixture":
            a += 1.0
            continue
        offset = m if kind == "corrected" else np.zeros_like(m)
        cs = [v for v in correction.CS if v <= float(c)]
        (wc, ac, bc), = logreg.fit_path(x, y, offset[:, None], np.ones((y.size, 1)), cs,
                                        [kind == "corrected"], np.zeros(cols.size, np.int64))[-1:]
        w, b = w + wc[:, 0], b + bc[0]
        a += ac[0] if kind == "corrected" else 0.0
    expected = np.zeros(cols.size)
    expected[np.searchsorted(cols, fix.cols)] = fix.w
    np.testing.assert_allclose(expected, w / 3, atol=1e-4)
    np.testing.assert_allclose([fix.a, fix.b], [a / 3, b / 3], atol=1e-4)
    alone = correction.fit(x_all, y, fold, [m] * (fold.max() + 1), m, net.schema, top=1)
    assert alone.averaged == fix.averaged[:1] and "mean of" not in alone.describe()


def test_the_mean_counts_the_mixture_as_a_1_and_the_seeds_alone_as_a_0():
    rng = np.random.default_rng(0)
    cs = [0.1, 1.0]
    path = [(rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=4)) for _ in cs]
    top = [("seeds", 0.1), ("mixture", None), ("corrected", 1.0)]
    w, a, b = correction._mean_of(top, path, cs, {"corrected": 2, "seeds": 3})
    np.testing.assert_allclose(w, (path[0][0][:, 3] + path[1][0][:, 2]) / 3)
    np.testing.assert_allclose([a, b], [(1.0 + path[1][1][2]) / 3, (path[0][2][3] + path[1][2][2]) / 3])


@pytest.mark.parametrize("gate", ["lookup", "mlp"])
def test_campaigns_scored_together_score_as_each_alone(tiny_config, gate):
    """Campaigns adapted by their mixtures share one pass of the experts over
    a pool's users: each scores them as its own score() does with its own ad
    ids (every ad column differs between campaigns; only the gate field may
    be read)."""
    config = tiny_config(runner={"adaptation": "mixture"},
                         hyper={"wide": True, "gate": gate, "gate_fields": ["adCategoryId"]})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(3), n=50, min_length=1)
    users = schema.user_rows(ids[:, :schema.first_ad_col])

    def ad_rows(category, product):
        raw = ids[:1].copy()
        raw[:, schema.first_ad_col], raw[:, schema.first_ad_col + 1] = category, product
        return schema.table_rows(raw)[0, schema.first_ad_col:]

    category, learned = schema.ad[0], Learned(net)

    def campaign(components, weights, fix, ad):
        labels = [str(c) for c in components]
        return MixtureCampaign(learned, Mixture(components, np.array(weights), labels), fix, ad, "mixture")

    def fix(cols, w, a, b):
        return Correction(np.array(cols, np.int64), np.array(w, float), a, b, 0.3, "corrected", {}, ())

    campaigns = [
        campaign([None, (0, category.offset + 2)], [0.6, 0.4], fix([1, 7], [0.5, -0.3], 1.2, 0.1), ad_rows(1, 0)),
        campaign([None], [1.0], fix([], [], 1.0, 0.0), ad_rows(3, 2)),
        campaign([(0, category.offset + 3), None], [0.5, 0.5], fix([3], [0.8], 0.0, -0.4), ad_rows(2, 1)),  # seeds alone
        campaign([None], [1.0], fix([], [], 0.7, 0.2), ad_rows(3, 1)),
        campaign([None, (0, category.offset + 1)], [0.3, 0.7], None, ad_rows(2, 2)),  # routed: no correction
    ]
    together = score_users(campaigns, users, lengths, pad=True)
    for c, scores in zip(campaigns, together):
        np.testing.assert_allclose(scores, c.score(c.rows_for(users), lengths, pad=True), rtol=1e-5, atol=1e-7)
    assert not np.allclose(together[1], together[3])  # campaigns 2 and 4 differ in the ids, not the gate
