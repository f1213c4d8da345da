"""Per-campaign adaptation decided by the campaign's own seeds (runner.adaptation=wide_cv)."""
import numpy as np
import paddle
import pytest

from conftest import random_rows, random_task
from dygraph_model import DygraphModel
from test_finetune import routed_setup
from metaheac import adapt, combine, routing, scoring
from metaheac.schema import schema_from_config
from tools.utils import metrics


def rows_of(schema, n, seed):
    task = random_task(schema, np.random.default_rng(seed), batch=n)
    return task["sup_rows"], task["sup_lengths"]


def test_user_features_are_the_networks_pooling_of_the_user_ids(tiny_config):
    schema = schema_from_config(tiny_config())
    rows, lengths = rows_of(schema, 5, seed=0)
    x = combine.user_features(rows, lengths, schema).toarray()
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
    config = tiny_config(runner={"adaptation": "wide_cv", "route_prior": 0.0, **runner})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    net.eval()
    return config, net


def planted(net, n, seed, id_weight, network_weight):
    """Seeds whose clicks follow one user id (a static field's id parity) and/or the network's own logit."""
    rows, lengths = rows_of(net.schema, n, seed)
    rng = np.random.default_rng(seed + 100)
    p_net = combine.route_probs(net, rows, lengths, [None], 64)[:, 0]
    network = np.log(p_net) - np.log1p(-p_net)
    network = (network - network.mean()) / network.std()
    by_id = np.where(rows[:, 0] % 2 == 0, 1.5, -1.5)
    p = 1.0 / (1.0 + np.exp(-(id_weight * by_id + network_weight * network)))
    stage = {"rows": rows, "lengths": lengths, "labels": (rng.random(n) < p).astype(np.float32), "aid": 1}
    return stage, p_net


def fit(config, net, stage, seed=0):
    return combine.fit(net, stage, config, np.random.default_rng(seed))


def auc_of(net, combination, stage):
    return metrics.auc(stage["labels"], combine.score(net, combination, stage["rows"], stage["lengths"], 64))


def test_seeds_correct_the_network_where_their_own_ids_say_more(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 600, seed=1, id_weight=1.0, network_weight=0.3)
    fitted = fit(config, net, seeds)
    assert fitted.kind in ("corrected", "seeds") and fitted.c is not None
    assert fitted.cv_auc[combine._name(fitted.kind, fitted.c)] > fitted.cv_auc["network"]
    fresh, p_net = planted(net, 2000, seed=2, id_weight=1.0, network_weight=0.3)
    assert auc_of(net, fitted, fresh) > metrics.auc(fresh["labels"], p_net) + 0.1


def test_a_network_the_seeds_cannot_improve_is_kept(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 300, seed=3, id_weight=0.0, network_weight=2.0)
    fitted = fit(config, net, seeds)
    fresh, p_net = planted(net, 3000, seed=4, id_weight=0.0, network_weight=2.0)
    # whatever C the folds pick, fresh users rank as the network ranks them, up to noise
    assert auc_of(net, fitted, fresh) > metrics.auc(fresh["labels"], p_net) - 0.01


def test_seeds_alone_score_without_the_network(tiny_config):
    config, net = make_net(tiny_config)
    seeds, _ = planted(net, 400, seed=11, id_weight=1.0, network_weight=0.0)
    fitted = fit(config, net, seeds)._replace(kind="seeds", a=0.0, routes=["not a routing"])
    x = combine.user_features(seeds["rows"], seeds["lengths"], net.schema)[:, fitted.cols]
    expected = 1.0 / (1.0 + np.exp(-(fitted.b + x @ fitted.w)))
    np.testing.assert_allclose(combine.score(net, fitted, seeds["rows"], seeds["lengths"], 64), expected, rtol=1e-6)


def test_one_class_seeds_keep_their_own_ids_uncorrected_and_warn(tiny_config, caplog):
    config, net = make_net(tiny_config, route_prior=0.5)
    seeds, _ = planted(net, 50, seed=5, id_weight=1.0, network_weight=0.0)
    seeds["labels"] = np.ones(50, np.float32)
    fitted = fit(config, net, seeds)
    assert fitted.routes == [None] and fitted.c is None and fitted.w.size == 0
    assert "its 50 seeds are all of one class, so it keeps its own ids" in caplog.text
    p_net = combine.route_probs(net, seeds["rows"], seeds["lengths"], [None], 64)[:, 0]
    np.testing.assert_allclose(combine.score(net, fitted, seeds["rows"], seeds["lengths"], 64), p_net, rtol=1e-5)


def test_the_seeds_weight_the_routing_that_explains_them_and_only_routings_training_saw(tiny_config):
    """adCategoryId 1 routes to one expert, 2 to another; seeds of a campaign
    labelled id 1 click as id 2's expert predicts (test_finetune.routed_setup)."""
    config, net, seeds, cat = routed_setup(tiny_config, truth=1, route_prior=0.1, adaptation="wide_cv")
    fitted = adapt.finetune(net, seeds, config, adapt.campaign_rng(0, 1)).combination
    assert fitted.routes[int(np.argmax(fitted.weights))] == (0, cat.offset + 2)
    assert fitted.weights.max() > 0.99 and abs(fitted.weights.sum() - 1.0) < 1e-9
    assert fitted.describe().startswith("routes 2 ")
    net.trained_ad_rows = {r for r in range(net.schema.num_rows) if r != cat.offset + 2}
    fitted = adapt.finetune(net, seeds, config, adapt.campaign_rng(0, 1)).combination
    assert (0, cat.offset + 2) not in fitted.routes
    assert all(route is None or route[1] in net.trained_ad_rows for route in fitted.routes)


def test_the_per_campaign_choice_is_deterministic_given_the_seed(tiny_config):
    config, net = make_net(tiny_config, route_prior=0.1)
    seeds, _ = planted(net, 300, seed=7, id_weight=1.0, network_weight=0.0)
    runs = [adapt.finetune(net, seeds, config, adapt.campaign_rng(5, 42)) for _ in range(2)]
    assert runs[0].steps == 0 and runs[0].combination.kind != "network"
    np.testing.assert_array_equal(runs[0].combination.w, runs[1].combination.w)
    assert runs[0].combination.cv_auc == runs[1].combination.cv_auc
    fresh, _ = planted(net, 100, seed=8, id_weight=1.0, network_weight=0.0)
    scores = [scoring.score_adapted(net, tuned, fresh["rows"], fresh["lengths"], 64) for tuned in runs]
    np.testing.assert_array_equal(scores[0], scores[1])
    other = adapt.finetune(net, seeds, config, adapt.campaign_rng(6, 42))  # another seed: other folds
    assert other.combination.cv_auc != runs[0].combination.cv_auc


def test_scores_do_not_depend_on_how_a_pool_is_chunked(tiny_config):
    config, net = make_net(tiny_config, route_prior=0.3)
    seeds, _ = planted(net, 200, seed=9, id_weight=1.0, network_weight=0.5)
    tuned = adapt.finetune(net, seeds, config, adapt.campaign_rng(1, 1))
    pool, _ = planted(net, 200, seed=10, id_weight=1.0, network_weight=0.5)
    rows, lengths = pool["rows"], pool["lengths"]
    whole = scoring.score_adapted(net, tuned, rows, lengths, 64, pad=True)
    chunks = np.concatenate([scoring.score_adapted(net, tuned, rows[i:i + 50], lengths[i:i + 50], 64, pad=True)
                             for i in range(0, 200, 50)])
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
            patch.setattr(combine.logreg, "fit_path", one_by_one(combine.logreg.fit_path))
            alone = fit(config, net, seeds)
        assert (together.kind, together.c) == (alone.kind, alone.c)
        assert together.cv_auc.keys() == alone.cv_auc.keys()
        np.testing.assert_allclose(list(together.cv_auc.values()), list(alone.cv_auc.values()), rtol=0, atol=1e-9)
        np.testing.assert_allclose(auc_of(net, together, fresh), auc_of(net, alone, fresh), rtol=0, atol=1e-9)
        np.testing.assert_allclose(combine.score(net, together, fresh["rows"], fresh["lengths"], 64),
                                   combine.score(net, alone, fresh["rows"], fresh["lengths"], 64), rtol=0, atol=1e-6)


def test_the_scores_average_the_logits_of_the_best_candidates(tiny_config):
    """runner.wide_cv_top: the mean of the best candidates' logits, each
    refitted on all the seeds, is one logit a m + b + x w with a, b, w averaged."""
    config, net = make_net(tiny_config, wide_cv_top=3)
    seeds, p_net = planted(net, 400, seed=30, id_weight=1.0, network_weight=0.5)
    fitted = fit(config, net, seeds)
    assert len(fitted.averaged) == 3 and fitted.averaged[0] == combine._name(fitted.kind, fitted.c)
    assert "mean of 3 best" in fitted.describe()
    # each candidate fitted alone on all the seeds (route_prior 0: the mixture is the network itself)
    x = combine.user_features(seeds["rows"], seeds["lengths"], net.schema)
    cols = np.unique(x.indices)
    x, y, m = x[:, cols], seeds["labels"].astype(np.float64), combine._logit(p_net)
    w, a, b = np.zeros(cols.size), 0.0, 0.0
    for name in fitted.averaged:
        kind, _, c = name.partition(" C=")
        if kind == "network":
            a += 1.0
            continue
        offset = m if kind == "corrected" else np.zeros_like(m)
        cs = [v for v in combine.COMBINE_CS if v <= float(c)]
        (wc, ac, bc), = combine.logreg.fit_path(x, y, offset[:, None], np.ones((y.size, 1)), cs,
                                                [kind == "corrected"], np.zeros(cols.size, np.int64))[-1:]
        w, b = w + wc[:, 0], b + bc[0]
        a += ac[0] if kind == "corrected" else 0.0
    expected = np.zeros(cols.size)
    expected[np.searchsorted(cols, fitted.cols)] = fitted.w
    np.testing.assert_allclose(expected, w / 3, atol=1e-4)
    np.testing.assert_allclose([fitted.a, fitted.b], [a / 3, b / 3], atol=1e-4)
    config, net = make_net(tiny_config, wide_cv_top=1)
    alone = fit(config, net, seeds)
    assert alone.averaged == fitted.averaged[:1] and "mean of" not in alone.describe()


def test_the_mean_counts_the_network_as_a_1_and_the_seeds_alone_as_a_0():
    rng = np.random.default_rng(0)
    cs = [0.1, 1.0]
    path = [(rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=4)) for _ in cs]
    top = [("seeds", 0.1), ("network", None), ("corrected", 1.0)]
    w, a, b = combine._mean_of(top, path, cs, {"corrected": 2, "seeds": 3})
    np.testing.assert_allclose(w, (path[0][0][:, 3] + path[1][0][:, 2]) / 3)
    np.testing.assert_allclose([a, b], [(1.0 + path[1][1][2]) / 3, (path[0][2][3] + path[1][2][2]) / 3])


@pytest.mark.parametrize("gate", ["lookup", "mlp"])
def test_campaigns_scored_together_score_as_each_alone(tiny_config, gate):
    """score_many runs the experts once for several campaigns: each campaign
    scores the users as score() does with its own ad ids (every ad column
    differs between campaigns; only the gate field may be read)."""
    config = tiny_config(runner={"adaptation": "wide_cv"},
                         hyper={"wide": True, "gate": gate, "gate_fields": ["adCategoryId"]})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    net.eval()
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(3), n=50, min_length=1)
    first_ad = len(schema.static) + schema.seq_width  # raw ids: static, sequence positions, then ad fields

    def users_of(category, product):
        raw = ids.copy()
        raw[:, first_ad], raw[:, first_ad + 1] = category, product
        return schema.table_rows(raw)

    category = schema.ad[0]
    combinations = [
        combine.Combination([None, (0, category.offset + 2)], np.array([0.6, 0.4]), ["own ids", "2"],
                            np.array([1, 7]), np.array([0.5, -0.3]), 1.2, 0.1, 0.3, {}),
        combine.Combination([None], np.ones(1), ["own ids"], np.zeros(0, np.int64), np.zeros(0), 1.0, 0.0, None, {}),
        combine.Combination([(0, category.offset + 3), None], np.array([0.5, 0.5]), ["3", "own ids"],
                            np.array([3]), np.array([0.8]), 0.0, -0.4, 1.0, {}, kind="seeds"),  # the seeds alone
        combine.Combination([None], np.ones(1), ["own ids"], np.zeros(0, np.int64), np.zeros(0), 0.7, 0.2, 1.0, {}),
    ]
    rows = [users_of(c, p) for c, p in ((1, 0), (3, 2), (2, 1), (3, 1))]
    column = routing.gate_columns(net)[0][0]
    together = combine.score_many(net, combinations, rows[0], [int(r[0, column]) for r in rows], lengths, 16,
                                  pad=True)
    assert together.shape == (50, 4)
    for i, combination in enumerate(combinations):
        alone = combine.score(net, combination, rows[i], lengths, 16, pad=True)
        np.testing.assert_allclose(together[:, i], alone, rtol=1e-5, atol=1e-7)
    assert not np.allclose(together[:, 1], together[:, 3])  # campaigns 2 and 4 differ in the ids, not the gate
