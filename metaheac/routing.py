"""Routings: which gate ids a campaign may be routed by, and how well each
explains its seeds. The seeds' mixture (metaheac/mixture.py) weighs them;
fine-tuning (metaheac/finetune.py) routes a campaign by the most probable
one first (choose_route)."""
import logging

import numpy as np
import paddle

from metaheac.adapted import both_classes
from metaheac.loss import EPS

logger = logging.getLogger(__name__)

ROUTE_MAX_SEEDS = 2048  # routing reads at most this many seeds of a campaign (its cost is bounded)
CHECK_MIN_SEEDS = 10    # from this many seeds on, a route chosen on half of them must hold on the other half


def describe_route(route):
    """'adCategoryId*productType 30*0 -> 9*0 (own ids 0.2%)' for logs and reports
    ('' when not re-routed)."""
    if not route:
        return ""
    margin = "" if route["margin"] is None else f", held-out margin {route['margin']:.3f} nats/seed"
    return (f"{route['field']} {route['own_label']} -> {route['label']} "
            f"(own ids {100 * route['own_probability']:.1f}%{margin})")


def gate_columns(net):
    """Columns of the rows [n, C] holding the gate fields' ids."""
    first_ad = net.schema.first_ad_col
    return [(first_ad + pos, net.schema.ad[pos]) for pos in net.gate_positions]


def candidate_routes(net, rows, allowed=None):
    """The campaign's own gate ids and the alternatives it may be routed to:
    (routes for net.forward_routes, [None, (field, own row, row), ...]), the
    first being None (its own ids). The alternatives are the gate-field rows
    meta-training saw (`allowed`; all when None)."""
    routes, alternatives = [None], [None]
    for j, (col, field) in enumerate(gate_columns(net)):
        values, counts = np.unique(rows[:, col], return_counts=True)
        own = int(values[counts.argmax()])  # a campaign's ad ids are constant over its rows
        for row in range(field.offset, field.offset + field.vocab_size):
            if row != own and (allowed is None or row in allowed):
                routes.append((j, row))
                alternatives.append((field, own, row))
    return routes, alternatives


def route_log_prior(n_routes, prior):
    """[R] log prior of the routes: 1 - prior on the campaign's own ids, the rest shared evenly."""
    if n_routes == 1:
        return np.zeros(1)
    log_prior = np.full(n_routes, np.log(prior / (n_routes - 1)))
    log_prior[0] = np.log1p(-prior)
    return log_prior


def log_likelihood(probs, y):
    """Per-row log-likelihood [n, R] of labels y [n] under click probabilities [n, R]."""
    p = np.clip(probs, EPS, 1.0 - EPS)
    return y[:, None] * np.log(p) + (1.0 - y[:, None]) * np.log1p(-p)


def posterior(log_prior, log_lik):
    """[R] posterior of the routes given their log prior [R] and per-row log-likelihoods [n, R]."""
    log_post = log_prior + log_lik.sum(axis=0)
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


def choose_route(learned, stage1, prior):
    """How the seeds route a campaign: None to keep its own gate-field ids, else
    {"field", "own_id", "id", "own_label", "label", "own_row", "row",
    "own_probability", "margin"}: give the campaign the gate inputs (the rows of every
    row table) of table row `row` (id `id` of gate field `field`) instead of
    its own `own_row`.

    The gates route a campaign by its ad ids to the experts of the past
    campaigns those ids describe. When the ids describe it wrongly (a
    mislabelled category), it is scored by the wrong experts, which a few
    fine-tuning steps do not undo. So every other id of each gate field is
    tried in its place: the campaign keeps its own ids with prior probability
    1 - prior, the alternatives share `prior`, and the seeds' likelihood under
    the meta-learned model decides (maximum a posteriori), read on at most
    ROUTE_MAX_SEEDS evenly spaced seeds. prior 0: off.

    The alternatives are the ids meta-training saw (learned.trained_ad_rows): an
    unseen id's gate rows are still their random start. From CHECK_MIN_SEEDS
    seeds on, the route is chosen on every other seed and kept only if it
    also beats the campaign's own ids on the rest ("margin": that gain in
    log-likelihood per held-out seed), so a route that merely fits the seeds
    it was chosen on is dropped.
    """
    if prior <= 0:
        return None
    net = learned.net
    rows, lengths = stage1["rows"], stage1["lengths"]
    labels = stage1["labels"].astype(np.float64)
    if not both_classes(stage1):
        return None
    if labels.size > ROUTE_MAX_SEEDS:  # evenly spaced seeds: the evidence is decisive long before
        keep = np.linspace(0, labels.size - 1, ROUTE_MAX_SEEDS).round().astype(np.int64)
        rows, lengths, labels = rows[keep], lengths[keep], labels[keep]
    routes, alternatives = candidate_routes(net, rows, learned.trained_ad_rows)
    if len(routes) == 1:
        return None
    with paddle.no_grad():  # one pass: at most ROUTE_MAX_SEEDS rows
        prob = net.forward_routes(paddle.to_tensor(rows), paddle.to_tensor(lengths), routes)
    per_seed = log_likelihood(prob.numpy().astype(np.float64).T, labels)                  # [n, R]
    log_prior = route_log_prior(len(routes), prior)
    checked = labels.size >= CHECK_MIN_SEEDS
    post = posterior(log_prior, per_seed[::2] if checked else per_seed)
    best = int(post.argmax())
    if best == 0:
        return None
    margin = None
    if checked:
        held_out = per_seed[1::2]
        gain = held_out[:, best].sum() - held_out[:, 0].sum()
        margin = float(gain / held_out.shape[0])
        if gain + log_prior[best] - log_prior[0] <= 0:  # the route does not hold on seeds it was not chosen on
            return None
    field, own, row = alternatives[best]
    own_id, new_id = own - field.offset, row - field.offset
    return {"field": field.name, "own_row": own, "row": row, "own_id": own_id, "id": new_id,
            "own_label": net.schema.id_label(field, own_id), "label": net.schema.id_label(field, new_id),
            "own_probability": float(post[0]), "margin": margin}
