"""Which past campaigns is a new one like? Its seeds weigh the candidates.

The gates route a campaign by its ad ids to the experts of the past
campaigns those ids describe. Each gate-field id meta-training saw is one
candidate routing (metaheac/routing.py), each regression pooled over a
group of alike past campaigns another (metaheac/groups.py); the prior for
the campaign is their mixture, weighted by how well each explains the seeds
(Bayesian model averaging). A priori the campaign's own ids weigh
1 - runner.route_prior, or as much as any other when meta-training never
saw them. A few tens of seeds already tell which kind of campaign it is
where its ad ids do not; thousands settle on one.

runner.adaptation=mixture then corrects the mixture on the seeds' own ids
(metaheac/correction.py); runner.adaptation=routed (what meta-validation
reads) scores the mixture as it is.
"""
from typing import NamedTuple

import numpy as np
import paddle

from metaheac import correction
from metaheac.adapted import AdaptedCampaign, both_classes
from metaheac.features import user_features
from metaheac.loss import EPS
from metaheac.routing import candidate_routes, gate_columns, log_likelihood, posterior, route_log_prior
from metaheac.rows import padded_batches
from metaheac.scoring import SCORE_BATCH

# The components kept for scoring: the most probable ones, this much posterior
# mass and at most this many (a pool of millions is scored under each).
KEEP_MASS = 0.999
MAX_COMPONENTS = 16


class Mixture(NamedTuple):
    components: list     # net.forward_routes' routings, or ("group", g): a group regression
    weights: np.ndarray  # [R] posterior weights, summing to 1
    labels: list         # [R] how a user reads each ('own ids', 'adCategoryId*productType=12*2', ...)

    def describe(self):
        """'routes own ids 71%, adCategoryId*productType=12*2 25%'."""
        order = [i for i in np.argsort(-self.weights)[:3] if self.weights[i] >= 0.005] or [0]
        return "routes " + ", ".join(f"{self.labels[i]} {100 * self.weights[i]:.0f}%" for i in order)


OWN_IDS = Mixture([None], np.ones(1), ["own ids"])


def _is_group(component):
    return isinstance(component, tuple) and component[0] == "group"


def components(learned, rows, prior, groups=True):
    """The components a campaign (its rows [n, C]) may mix, how a user reads
    each, and their log prior [R]: 1 - prior on its own ids and the rest
    shared by the gate ids meta-training saw and (groups) the group
    regressions; when training never saw its own ids, they weigh as much as
    any other. prior 0: its own ids alone."""
    if prior <= 0:
        return [None], ["own ids"], np.zeros(1)
    net, schema = learned.net, learned.net.schema
    routes, alternatives = candidate_routes(net, rows, learned.trained_ad_rows)
    labels = ["own ids"] + [f"{field.name}={schema.id_label(field, row - field.offset)}"
                            for field, _, row in alternatives[1:]]
    if groups and learned.groups is not None:
        routes += [("group", g) for g in range(learned.groups.sizes.size)]
        labels += [learned.groups.label(g) for g in range(learned.groups.sizes.size)]
    own_rows = {int(rows[0, col]) for col, _ in gate_columns(net)}
    if learned.trained_ad_rows is not None and not own_rows <= learned.trained_ad_rows:
        return routes, labels, np.zeros(len(routes))  # its own gate rows are their random start
    return routes, labels, route_log_prior(len(routes), prior)


def component_probs(learned, rows, lengths, components, pad=False, x=None):
    """Click probabilities [n, R] (float64) of rows [n, C] under each
    component. pad: every network batch of one shape (rows.padded_batches).
    x: the rows' user_features, when the caller has them already (the
    group regressions read them)."""
    grouped = [i for i, c in enumerate(components) if _is_group(c)]
    routes = [i for i, c in enumerate(components) if not _is_group(c)]
    out = np.empty((rows.shape[0], len(components)))
    if grouped:
        if x is None:
            x = user_features(rows, lengths, learned.net.schema)
        out[:, grouped] = learned.groups.probs(x, [components[i][1] for i in grouped])
    if routes:
        parts = []
        with paddle.no_grad():
            for part, part_len, n in padded_batches(rows, lengths, SCORE_BATCH, pad):
                prob = learned.net.forward_routes(paddle.to_tensor(part), paddle.to_tensor(part_len),
                                                  [components[i] for i in routes])                  # [R, b]
                parts.append(prob.numpy()[:, :n].T)
        out[:, routes] = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, len(routes)))
    return out


def logit(p):
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _kept(post, keep_all):
    """Indices of the components kept for scoring (KEEP_MASS, MAX_COMPONENTS)."""
    if keep_all:
        return np.arange(post.size)
    keep = np.argsort(-post)[:MAX_COMPONENTS]
    return keep[:int(np.searchsorted(np.cumsum(post[keep]), KEEP_MASS)) + 1]


class MixtureCampaign(AdaptedCampaign):
    """A campaign scored under the mixture its seeds weigh, corrected on their
    ids (a correction.Correction) or as it is (correction None)."""

    def __init__(self, learned, mixture, fix, ad_rows, method):
        self.learned, self.mixture, self.correction, self.ad_rows, self.method = (
            learned, mixture, fix, ad_rows, method)

    @classmethod
    def fit(cls, learned, seeds, config, rng, method="mixture"):
        """The mixture a campaign's seeds (rows [n, C], lengths, labels [n],
        aid) weigh; method "mixture" corrects it on their ids as far as
        cross-validation on them says, "routed" scores it as it is (every
        component kept: meta-validation reads it on small query sets)."""
        rows, lengths, y = seeds["rows"], seeds["lengths"], seeds["labels"].astype(np.float64)
        corrected = method == "mixture"
        ad_rows = rows[0, learned.net.schema.first_ad_col:]
        if not both_classes(seeds):
            return cls(learned, OWN_IDS, None, ad_rows, method)
        fold = correction.folds(y, rng) if corrected else None
        if corrected and fold is None:
            return cls(learned, OWN_IDS, None, ad_rows, method)
        routes, labels, log_prior = components(learned, rows, config["runner.route_prior"], groups=corrected)
        x = user_features(rows, lengths, learned.net.schema) if corrected else None
        probs = component_probs(learned, rows, lengths, routes, x=x)                           # [n, R]
        log_lik = log_likelihood(probs, y)                                                     # [n, R]
        post = posterior(log_prior, log_lik)
        keep = _kept(post, keep_all=not corrected)
        mixture = Mixture([routes[i] for i in keep], post[keep] / post[keep].sum(), [labels[i] for i in keep])
        fix = None
        if corrected:
            # within each fold the mixture's weights too are read from the fitting part only
            fold_logits = [logit(probs @ posterior(log_prior, log_lik[fold != k])) for k in range(fold.max() + 1)]
            fix = correction.fit(x, y, fold, fold_logits, logit(probs[:, keep] @ mixture.weights),
                                 learned.net.schema)
        return cls(learned, mixture, fix, ad_rows, method)

    def _reads_x(self):
        c = self.correction
        return c is not None and (c.w.size > 0 or (c.a and any(map(_is_group, self.mixture.components))))

    def score(self, rows, lengths, pad=False):
        x = user_features(rows, lengths, self.learned.net.schema) if self._reads_x() else None
        needs_mixture = self.correction is None or self.correction.a
        probs = component_probs(self.learned, rows, lengths, self.mixture.components, pad, x) \
            if needs_mixture else None
        return self._probability(rows.shape[0], probs, x)

    def _probability(self, n, probs, x):
        """The campaign's scores [n]: probs [n, R] under its components (None
        when the seeds alone score it), x [n, U] the users' features (None
        when nothing reads them)."""
        if self.correction is None:
            return probs @ self.mixture.weights
        return self.correction.apply(n, None if probs is None else logit(probs @ self.mixture.weights), x)

    def describe(self):
        text = self.mixture.describe()
        if self.method == "routed":
            return text
        if self.correction is None:
            return text + "; no correction (fewer than 2 seeds of a class)"
        return f"{text}; {self.correction.describe()}"

    @classmethod
    def score_together(cls, campaigns, users, lengths, pad=False):
        """Scores [n] of users [n, Fs + W] (table rows) for each campaign. On a
        network with one gate field only the gates read a campaign's ids, so
        one pass of the experts over the users serves the components of all
        of them (the same scores up to float32 rounding)."""
        net = campaigns[0].learned.net
        gates = gate_columns(net)
        if len(gates) != 1:
            return super().score_together(campaigns, users, lengths, pad)
        col = gates[0][0] - net.schema.first_ad_col
        union, index, columns = [], {}, []
        for c in campaigns:
            needs_mixture = c.correction is None or c.correction.a
            mine = [(0, int(c.ad_rows[col])) if r is None else r for r in c.mixture.components] if needs_mixture else []
            for r in mine:
                if r not in index:
                    index[r] = len(union)
                    union.append(r)
            columns.append([index[r] for r in mine])
        rows = campaigns[0].rows_for(users)
        x = user_features(rows, lengths, net.schema) \
            if any(c._reads_x() for c in campaigns) or any(map(_is_group, union)) else None
        probs = component_probs(campaigns[0].learned, rows, lengths, union, pad, x) if union else None
        return [c._probability(rows.shape[0], probs[:, cols] if cols else None, x)
                for c, cols in zip(campaigns, columns)]
