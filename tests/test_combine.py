"""Per-campaign adaptation decided by the campaign's own seeds (runner.adaptation=wide_cv)."""
import numpy as np
import paddle

from conftest import random_task
from dygraph_model import DygraphModel
from metaheac import adapt, combine, scoring
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


def planted(schema, n, seed, id_weight, network_weight):
    """Seeds whose clicks follow one user id (a static field's id parity) and/or a network logit."""
    rows, lengths = rows_of(schema, n, seed)
    rng = np.random.default_rng(seed + 100)
    network = rng.normal(size=n)
    by_id = np.where(rows[:, 0] % 2 == 0, 1.5, -1.5)
    p = 1.0 / (1.0 + np.exp(-(id_weight * by_id + network_weight * network)))
    return rows, lengths, (rng.random(n) < p).astype(np.float32), network


def test_seeds_correct_the_network_where_their_own_ids_say_more(tiny_config):
    schema = schema_from_config(tiny_config())
    rows, lengths, labels, m = planted(schema, 600, seed=1, id_weight=1.0, network_weight=0.3)
    fitted = combine.fit_combination(rows, lengths, labels, m, schema, np.random.default_rng(0))
    assert fitted.c is not None and fitted.cv_auc[f"C={fitted.c:g}"] > fitted.cv_auc["network"]
    rows2, lengths2, labels2, m2 = planted(schema, 2000, seed=2, id_weight=1.0, network_weight=0.3)
    combined = fitted.apply(m2, rows2, lengths2, schema)
    assert metrics.auc(labels2, combined) > metrics.auc(labels2, m2) + 0.1


def test_a_network_the_seeds_cannot_improve_is_kept(tiny_config):
    schema = schema_from_config(tiny_config())
    rows, lengths, labels, m = planted(schema, 300, seed=3, id_weight=0.0, network_weight=2.0)
    fitted = combine.fit_combination(rows, lengths, labels, m, schema, np.random.default_rng(0))
    rows2, lengths2, labels2, m2 = planted(schema, 3000, seed=4, id_weight=0.0, network_weight=2.0)
    # whatever C the folds pick, the ranking of fresh users is the network's up to noise
    assert metrics.auc(labels2, fitted.apply(m2, rows2, lengths2, schema)) > metrics.auc(labels2, m2) - 0.01


def test_one_class_seeds_keep_the_network(tiny_config):
    schema = schema_from_config(tiny_config())
    rows, lengths, _, m = planted(schema, 50, seed=5, id_weight=1.0, network_weight=0.0)
    fitted = combine.fit_combination(rows, lengths, np.ones(50, np.float32), m, schema, np.random.default_rng(0))
    assert fitted is combine.NETWORK_ALONE
    np.testing.assert_array_equal(fitted.apply(m, rows, lengths, schema), m)


def test_the_per_campaign_choice_is_deterministic_given_the_seed(tiny_config):
    config = tiny_config(runner={"adaptation": "wide_cv", "route_prior": 0.0})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    net.eval()
    task = random_task(net.schema, np.random.default_rng(7), batch=300)
    task["sup_labels"] = (task["sup_rows"][:, 0] % 2 == 0).astype(np.float32)  # seeds with something to fit
    stage1 = {"rows": task["sup_rows"], "lengths": task["sup_lengths"], "labels": task["sup_labels"]}
    runs = [adapt.finetune(net, stage1, config, adapt.campaign_rng(5, 42)) for _ in range(2)]
    assert runs[0].steps == 0 and runs[0].combination.c is not None
    np.testing.assert_array_equal(runs[0].combination.w, runs[1].combination.w)
    assert runs[0].combination.cv_auc == runs[1].combination.cv_auc
    scores = [scoring.score_adapted(net, tuned, task["qry_rows"], task["qry_lengths"], 64) for tuned in runs]
    np.testing.assert_array_equal(scores[0], scores[1])
    other = adapt.finetune(net, stage1, config, adapt.campaign_rng(6, 42))  # another seed: other folds
    assert other.combination.cv_auc != runs[0].combination.cv_auc


def test_corrected_scores_are_the_start_corrected_and_do_not_depend_on_the_chunking(tiny_config):
    config = tiny_config(runner={"adaptation": "wide_cv", "route_prior": 0.0})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    net.eval()
    task = random_task(net.schema, np.random.default_rng(8), batch=200)
    task["sup_labels"] = (task["sup_rows"][:, 1] % 2 == 0).astype(np.float32)
    stage1 = {"rows": task["sup_rows"], "lengths": task["sup_lengths"], "labels": task["sup_labels"]}
    tuned = adapt.finetune(net, stage1, config, adapt.campaign_rng(1, 1))
    rows, lengths = task["qry_rows"], task["qry_lengths"]
    whole = scoring.score_adapted(net, tuned, rows, lengths, 64, pad=True)
    chunks = np.concatenate([scoring.score_adapted(net, tuned, rows[i:i + 50], lengths[i:i + 50], 64, pad=True)
                             for i in range(0, 200, 50)])
    np.testing.assert_allclose(whole, chunks, rtol=1e-6)
    start = scoring.score_adapted(net, tuned._replace(combination=None), rows, lengths, 64)
    expected = tuned.combination.apply(scoring.logits(start), rows, lengths, net.schema)
    np.testing.assert_allclose(scoring.logits(whole), expected, rtol=1e-4, atol=1e-4)
