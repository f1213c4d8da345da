"""Per-campaign adaptation decided by the campaign's own seeds
(runner.adaptation=wide_cv).

Two steps, both read from the seeds, neither moves the network:

1. Which past campaigns is it like? The gates route a campaign by its ad ids
   to the experts of the past campaigns those ids describe. Each gate-field id
   meta-training saw is one candidate routing (metaheac/routing.py), each
   regression pooled over a group of alike past campaigns another
   (metaheac/clusters.py), and the prior for the campaign is their mixture,
   weighted by how well each explains the seeds (Bayesian model averaging; a
   priori the campaign's own ids weigh 1 - runner.route_prior, or as much as
   any other when meta-training never saw them). 50 seeds already tell which
   kind of campaign it is where its ad ids do not; 5,000 seeds settle on one.

2. What do its seeds say that past campaigns do not? The mixture's logit m
   is corrected on the seeds' own user ids (or, when the folds say the
   network misleads, replaced: a = 0, a regression on the seeds alone):

       logit = a * m + b + X w

   X holds the one-hot user ids (a sequence field's ids averaged over its
   first `length`, as the network pools them), a and b are free, w is
   penalised by ||w||^2 / (2 C). C -> 0 leaves the network (same ranking); a
   large C lets the seeds' ids take over, as a per-campaign logistic
   regression would, where there are enough of them.

How far to go (the network alone, corrected with some C, or the seeds
alone with some C) is decided per campaign by stratified
k-fold cross-validation on its seeds (mean fold AUC); within each fold the
mixture's weights too are read from the fitting part only, so every candidate
is judged on seeds it was not fitted on. The campaign's logit is the mean of
the runner.wide_cv_top best candidates' (each refitted on all its seeds):
with tens of seeds the folds rank neighbouring candidates by noise, and the
mean is a linear model again (a, b and w averaged). All the regressions, the
folds' and those on all the seeds, both kinds along the whole path of C, are
fitted to their optimum in one pass (metaheac/logreg.py). Deterministic
given the campaign's rng.
"""
import logging
from typing import NamedTuple

import numpy as np
import paddle
from scipy import sparse

from metaheac import logreg
from metaheac.loss import EPS
from metaheac.metrics import auc
from metaheac.routing import candidate_routes, gate_columns, log_likelihood, posterior, route_log_prior
from metaheac.rows import padded_batches

logger = logging.getLogger(__name__)

COMBINE_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # inverse penalty of w (the per-seed loss is summed)
MAX_FOLDS = 5
KEEP_MASS = 0.999  # the routes kept for scoring: the most probable ones, this much posterior mass ...
MAX_ROUTES = 16    # ... and at most this many (a pool of millions is scored under each)


class Combination(NamedTuple):
    """A campaign's adaptation: a mixture of routings, corrected on its seeds' ids."""
    routes: list      # the mixture's routings: net.forward_routes' or ("cluster", g), a pooled regression
    weights: np.ndarray  # [R] their posterior weights, summing to 1
    labels: list      # [R] how a user reads each ('own ids', 'adCategoryId*productType 12*2', ...)
    cols: np.ndarray  # [R'] user table rows with a weight (those the seeds have)
    w: np.ndarray     # [R'] their weights
    a: float
    b: float
    c: float          # the best candidate's C; None: the mixture alone
    cv_auc: dict      # candidate -> mean fold AUC on the seeds
    kind: str = "network"  # the best candidate: "network", "corrected" or "seeds" (a = 0)
    averaged: tuple = ()   # the candidates whose logits are averaged, best first (runner.wide_cv_top)

    def describe(self):
        """'routes own ids 71%, 12*2 25%; mean of 5 best (corrected C=0.3 first), network weight 1.79
        (fold AUC 0.761 vs network 0.718)'."""
        order = [i for i in np.argsort(-self.weights)[:3] if self.weights[i] >= 0.005] or [0]
        mix = "routes " + ", ".join(f"{self.labels[i]} {100 * self.weights[i]:.0f}%" for i in order)
        if not self.cv_auc:
            return mix + "; no correction (fewer than 2 seeds of a class)"
        if self.w.size == 0 and self.a == 1.0 and self.b == 0.0:
            return mix + f"; no correction (fold AUC {self.cv_auc['network']:.3f})"
        chosen = _name(self.kind, self.c)
        if len(self.averaged) > 1:
            chosen = f"mean of {len(self.averaged)} best ({chosen} first)"
        what = f"network weight {self.a:.2f}" if self.a else "network not used"
        best = self.cv_auc[_name(self.kind, self.c)]
        return mix + f"; {chosen}, {what} (fold AUC {best:.3f} vs network {self.cv_auc['network']:.3f})"


def user_features(rows, lengths, schema):
    """[n, R] CSR over the user fields' table rows (R = first ad row): 1 at a
    static id, 1/length at each of a sequence field's first `length` ids."""
    n, n_static = rows.shape[0], len(schema.static)
    parts_r, parts_c = [np.repeat(np.arange(n), n_static)], [rows[:, :n_static].reshape(-1)]
    parts_v = [np.ones(n * n_static)]
    col = n_static
    for j, f in enumerate(schema.sequence):
        length = lengths[:, j].astype(np.int64)
        r, k = np.nonzero(np.arange(f.width)[None, :] < length[:, None])  # ids past `length` are padding
        parts_r.append(r)
        parts_c.append(rows[r, col + k])
        parts_v.append(1.0 / length[r])
        col += f.width
    return sparse.csr_matrix((np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))),
                             shape=(n, schema.ad[0].offset))  # repeated ids of one list add up, as in the mean


def user_field_of(schema, cols):
    """The user field (its index among static + sequence) of each user table row in cols [p]."""
    offsets = sorted(f.offset for f in schema.static + schema.sequence)
    return np.searchsorted(offsets, cols, side="right") - 1


def route_probs(net, rows, lengths, routes, batch, pad=False, x=None):
    """Click probabilities [n, R] (float64) of rows [n, C] under each routing:
    a network routing, or ("cluster", g), the regression pooled over past
    campaigns' group g (metaheac/clusters.py). pad: every network batch of
    one shape (rows.padded_batches). x: the rows' user_features, when the
    caller has them already (the pooled regressions read them)."""
    pooled = [i for i, route in enumerate(routes) if _is_cluster(route)]
    if pooled:
        network = [i for i, route in enumerate(routes) if not _is_cluster(route)]
        out = np.empty((rows.shape[0], len(routes)))
        groups = [routes[i][1] for i in pooled]
        if x is None:
            x = user_features(rows, lengths, net.schema)
        out[:, pooled] = logreg.sigmoid(x @ net.pooled_w.numpy()[groups].T.astype(np.float64)
                                  + net.pooled_b.numpy()[groups].astype(np.float64))
        if network:
            out[:, network] = route_probs(net, rows, lengths, [routes[i] for i in network], batch, pad)
        return out
    was_training = net.training
    net.eval()
    out = []
    try:
        with paddle.no_grad():
            for part, part_len, n in padded_batches(rows, lengths, batch, pad):
                prob = net.forward_routes(paddle.to_tensor(part), paddle.to_tensor(part_len), routes)  # [R, b]
                out.append(prob.numpy()[:, :n].T)
    finally:
        if was_training:
            net.train()
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(routes)))


def _is_cluster(route):
    return isinstance(route, tuple) and route[0] == "cluster"


def cluster_routes(net):
    """The ("cluster", g) routes of the pooled regressions the trainer fitted
    (hyper_parameters.campaign_clusters), and how a user reads each."""
    sizes = net.pooled_size.numpy() if getattr(net, "pooled_size", None) is not None else np.zeros(0)
    groups = np.flatnonzero(sizes > 0)
    labels = [f"past campaigns' group {g} ({int(sizes[g])} campaigns)" for g in groups]
    return [("cluster", int(g)) for g in groups], labels


def _logit(p):
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _folds(y, rng):
    """Stratified fold number [n] of each seed; None when a class has fewer than 2 seeds."""
    k = min(MAX_FOLDS, int(y.sum()), int(y.size - y.sum()))
    if k < 2:
        return None
    fold = np.empty(y.size, dtype=np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(idx.size) % k
    return fold


def route_prior(net, rows, prior, clusters=True):
    """The routings a campaign (its rows [n, C]) may mix, how a user reads
    each, and their log prior [R]: 1 - prior on its own ids and the rest
    shared by the ids meta-training saw and (clusters) the regressions
    pooled over groups of past campaigns; when training never saw its own
    ids, they weigh as much as any other. prior 0: its own ids alone."""
    if prior <= 0:
        return [None], ["own ids"], np.zeros(1)
    routes, alternatives = candidate_routes(net, rows)
    labels = ["own ids"] + [net.schema.id_label(field, row - field.offset) for field, _, row in alternatives[1:]]
    if clusters:
        pooled, pooled_labels = cluster_routes(net)
        routes, labels = routes + pooled, labels + pooled_labels
    own_rows = {int(rows[0, col]) for col, _ in gate_columns(net)}
    if net.trained_ad_rows is not None and not own_rows <= net.trained_ad_rows:
        return routes, labels, np.zeros(len(routes))  # its own gate rows are their random start
    return routes, labels, route_log_prior(len(routes), prior)


def mixture_auc(net, support, query, prior, batch):
    """AUC on `query` of the mixture of routings that `support`'s labels weigh
    (step 1 alone, the network's routings: the pooled regressions do not
    change with training): how well the network ranks the users of a
    campaign it was not trained on once a seed set has chosen its routing;
    read by meta-validation. support / query: dicts of rows, lengths, labels
    of one campaign."""
    routes, _, log_prior = route_prior(net, support["rows"], prior, clusters=False)
    y = support["labels"].astype(np.float64)
    support_probs = route_probs(net, support["rows"], support["lengths"], routes, batch)     # [n, R]
    weights = posterior(log_prior, log_likelihood(support_probs, y))
    return auc(query["labels"], route_probs(net, query["rows"], query["lengths"], routes, batch) @ weights)


def fit(net, stage1, config, rng, cs=COMBINE_CS):
    """The Combination a campaign's seeds (stage1: rows [n, C], lengths, labels
    [n], aid) choose; `net` is not modified."""
    rows, lengths, y = stage1["rows"], stage1["lengths"], stage1["labels"].astype(np.float64)
    batch = config["runner.score_batch_size"]
    if y.size == 0 or y.min() == y.max():
        # Seeds of one class favour whichever route scores them most extreme,
        # and leave nothing to rank by: the campaign's own ids stand.
        logger.warning("campaign %s: its %d seeds are all of one class, so it keeps its own ids and no "
                       "correction (adaptation needs positive and negative seeds)", stage1.get("aid", "?"), y.size)
        fold = None
    else:
        fold = _folds(y, rng)
    if fold is None:
        return Combination([None], np.ones(1), ["own ids"], np.zeros(0, np.int64), np.zeros(0), 1.0, 0.0, None, {})
    routes, labels, log_prior = route_prior(net, rows, config["runner.route_prior"])
    features = user_features(rows, lengths, net.schema)
    probs = route_probs(net, rows, lengths, routes, batch, x=features)                       # [n, R]
    log_lik = log_likelihood(probs, y)                                                       # [n, R]
    # An id no seed has keeps weight 0 at any C (its gradient is w alone): fit
    # over the seeds' ids, a few thousand columns rather than the vocabulary.
    cols = np.unique(features.indices)
    x = features[:, cols]
    groups = user_field_of(net.schema, cols)
    cs = sorted(cs)
    # candidates: ("network", None), ("corrected", C): the network corrected
    # on the ids, ("seeds", C): a regression on the seeds alone (a = 0), for
    # when the network's prior misleads more than it tells
    scores = {("network", None): [], **{(kind, c): [] for kind in ("corrected", "seeds") for c in cs}}
    # the mixture the campaign is scored under (its routings, weighed by all the seeds)
    post = posterior(log_prior, log_lik)
    keep = np.argsort(-post)[:MAX_ROUTES]
    keep = keep[:int(np.searchsorted(np.cumsum(post[keep]), KEEP_MASS)) + 1]
    weights = post[keep] / post[keep].sum()
    # every fold's two regressions along the path of C, and the two on all the
    # seeds that the campaign is scored with, fitted together: problem 2k
    # reads fold k's mixture, 2k + 1 the seeds alone; 2K and 2K + 1 all seeds
    n_folds = fold.max() + 1
    offsets = np.zeros((y.size, 2 * n_folds + 2))
    for k in range(n_folds):
        m = _logit(probs @ posterior(log_prior, log_lik[fold != k]))  # the mixture the fitting part reads
        scores[("network", None)].append(auc(y[fold == k], m[fold == k]))
        offsets[:, 2 * k] = m
    offsets[:, 2 * n_folds] = _logit(probs[:, keep] @ weights)
    rows_in = np.ones((y.size, 2 * n_folds + 2), bool)
    rows_in[:, :2 * n_folds] = np.repeat(fold[:, None] != np.arange(n_folds), 2, axis=1)  # the fitting parts
    path = logreg.fit_path(x, y, offsets, rows_in, cs, fit_a=np.arange(2 * n_folds + 2) % 2 == 0, groups=groups)
    folds = slice(0, 2 * n_folds)  # the problems the folds score; the last two are scored with
    for c, (w, a, b) in zip(cs, path):
        z = a[folds] * offsets[:, folds] + b[folds] + x @ w[:, folds]                       # [n, 2K]
        for k in range(n_folds):
            val = fold == k
            for j, kind in ((2 * k, "corrected"), (2 * k + 1, "seeds")):
                scores[(kind, c)].append(auc(y[val], z[val, j]))
    mean = {key: float(np.nanmean(v)) for key, v in scores.items()}
    order = list(scores)  # a tie keeps the simpler: the network, then a correction
    top = sorted(mean, key=lambda key: (mean[key], -order.index(key)), reverse=True)[:config["runner.wide_cv_top"]]
    w, a, b = _mean_of(top, path, cs, {"corrected": 2 * n_folds, "seeds": 2 * n_folds + 1})
    nonzero = w != 0
    return Combination(routes=[routes[i] for i in keep], weights=weights, labels=[labels[i] for i in keep],
                       cols=cols[nonzero], w=w[nonzero], a=a, b=b, c=top[0][1],
                       cv_auc={_name(*key): v for key, v in mean.items()}, kind=top[0][0],
                       averaged=tuple(_name(*key) for key in top))


def _mean_of(top, path, cs, column):
    """(w [p], a, b) of the mean of the candidates' logits a m + b + x w (one
    such logit again): each candidate of `top` [(kind, C)] is the network
    (a = 1) or the fit of problem column[kind] at C in `path` (logreg.fit_path);
    the seeds alone have a = 0."""
    w, a, b = np.zeros(path[0][0].shape[0]), 0.0, 0.0
    for kind, c in top:
        if kind == "network":
            a += 1.0
            continue
        wc, ac, bc = path[cs.index(c)]
        j = column[kind]
        w, b = w + wc[:, j], b + bc[j]
        a += ac[j] if kind == "corrected" else 0.0
    return w / len(top), float(a / len(top)), float(b / len(top))


def _name(kind, c):
    """How a candidate reads in cv_auc and logs: 'network', 'corrected C=0.3', 'seeds C=1'."""
    return kind if c is None else f"{kind} C={c:g}"


def score(net, combination, rows, lengths, batch, pad=False):
    """Click probabilities [n] (float32) of rows [n, C] under a campaign's Combination."""
    reads_x = combination.w.size or (combination.a and any(map(_is_cluster, combination.routes)))
    x = user_features(rows, lengths, net.schema) if reads_x else None  # built once, for both
    probs = route_probs(net, rows, lengths, combination.routes, batch, pad, x) if combination.a else None
    return _probability(combination, rows.shape[0], probs, x)


def score_many(net, combinations, rows, own, lengths, batch, pad=False):
    """Click probabilities [n, N] (float32) of one set of users under N
    campaigns' Combinations, on a network with one gate field. rows [n, C]:
    the users with any campaign's ad ids; own [N]: each campaign's own table
    row of the gate field. Only the gates read a campaign's ids, so one pass
    of the experts over the users serves the routings of all N (score()
    repeats it per campaign); the same scores up to float32 rounding."""
    union, index, columns = [], {}, []
    for combination, row in zip(combinations, own):
        # the seeds alone (a = 0) read no routing
        routes = [(0, row) if route is None else route for route in combination.routes] if combination.a else []
        for route in routes:
            if route not in index:
                index[route] = len(union)
                union.append(route)
        columns.append([index[route] for route in routes])
    reads_x = any(c.w.size for c in combinations) or any(map(_is_cluster, union))
    x = user_features(rows, lengths, net.schema) if reads_x else None  # built once, for both
    probs = (route_probs(net, rows, lengths, union, batch, pad, x)                             # [n, R]
             if any(c.a for c in combinations) else None)
    out = np.empty((rows.shape[0], len(combinations)), np.float32)
    for i, combination in enumerate(combinations):
        out[:, i] = _probability(combination, rows.shape[0], None if probs is None else probs[:, columns[i]], x)
    return out


def _probability(combination, n, probs, x):
    """sigmoid(a logit(probs @ weights) + b + x w) [n] (float32): probs [n, R]
    under the combination's routes (unused when a = 0: the seeds alone need
    no network pass), x [n, R'] the users' features (unused without w)."""
    z = np.full(n, combination.b)
    if combination.a:
        z += combination.a * _logit(probs @ combination.weights)
    if combination.w.size:
        z += x[:, combination.cols] @ combination.w
    return logreg.sigmoid(z).astype(np.float32)
