"""What do a campaign's seeds say that past campaigns do not? The mixture's
logit m (metaheac/mixture.py) is corrected on the seeds' own user ids, or,
where the folds say the past misleads, replaced (a = 0: a regression on the
seeds alone):

    logit = a * m + b + X w

X holds the users' ids (metaheac/features.py), a and b are free, w is
penalised by ||w||^2 / (2 C). C -> 0 leaves the mixture (same ranking); a
large C lets the seeds' ids take over, as a per-campaign logistic
regression would, where there are enough of them.

How far to go (the mixture alone, corrected with some C, or the seeds alone
with some C) is decided per campaign by stratified k-fold cross-validation
on its seeds (mean fold AUC). The campaign's logit is the mean of the
TOP_CANDIDATES best candidates' (each refitted on all its seeds): with tens
of seeds the folds rank neighbouring candidates by noise, and the mean is a
linear model again (a, b and w averaged). All the regressions, the folds'
and those on all the seeds, both kinds along the whole path of C, are
fitted to their optimum in one pass (metaheac/logreg.py).
"""
from typing import NamedTuple

import numpy as np

from metaheac import logreg
from metaheac.features import user_field_of
from metaheac.metrics import auc

CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # inverse penalties of w tried (the per-seed loss is summed)
MAX_FOLDS = 5
TOP_CANDIDATES = 5  # the candidates averaged; chosen on the panel (docs/experiments.md)


class Correction(NamedTuple):
    cols: np.ndarray  # [p] user table rows with a weight (those the seeds have)
    w: np.ndarray     # [p] their weights
    a: float          # the mixture's weight; 0: the seeds alone
    b: float
    c: float          # the best candidate's C; None: the mixture alone
    kind: str         # the best candidate: "mixture", "corrected" or "seeds"
    cv_auc: dict      # candidate name -> mean fold AUC on the seeds
    averaged: tuple   # the names of the candidates whose logits are averaged, best first

    def apply(self, n, m, x):
        """Scores [n] (float32): sigmoid(a m + b + x w) for the mixture's
        logit m [n] (unused when a = 0) and the users' features x [n, U]
        (unused without w)."""
        z = np.full(n, self.b)
        if self.a:
            z += self.a * m
        if self.w.size:
            z += x[:, self.cols] @ self.w
        return logreg.sigmoid(z).astype(np.float32)

    def describe(self):
        """'mean of 5 best (corrected C=0.3 first), mixture weight 1.79 (fold AUC 0.761 vs mixture 0.718)'."""
        if self.w.size == 0 and self.a == 1.0 and self.b == 0.0:
            return f"no correction (fold AUC {self.cv_auc['mixture']:.3f})"
        chosen = name(self.kind, self.c)
        if len(self.averaged) > 1:
            chosen = f"mean of {len(self.averaged)} best ({chosen} first)"
        what = f"mixture weight {self.a:.2f}" if self.a else "mixture not used"
        best = self.cv_auc[name(self.kind, self.c)]
        return f"{chosen}, {what} (fold AUC {best:.3f} vs mixture {self.cv_auc['mixture']:.3f})"


def name(kind, c):
    """How a candidate reads in cv_auc and logs: 'mixture', 'corrected C=0.3', 'seeds C=1'."""
    return kind if c is None else f"{kind} C={c:g}"


def folds(y, rng):
    """Stratified fold number [n] of each seed; None when a class has fewer than 2 seeds."""
    k = min(MAX_FOLDS, int(y.sum()), int(y.size - y.sum()))
    if k < 2:
        return None
    fold = np.empty(y.size, dtype=np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(idx.size) % k
    return fold


def fit(features, y, fold, fold_logits, logit_all, schema, cs=CS, top=TOP_CANDIDATES):
    """The Correction the seeds choose. features [n, U] CSR: their ids; y [n];
    fold [n] (folds()); fold_logits[k] [n]: the mixture as fold k's fitting
    part weighs it; logit_all [n]: the mixture the campaign is scored under."""
    # An id no seed has keeps weight 0 at any C (its gradient is w alone): fit
    # over the seeds' ids rather than the vocabulary.
    cols = np.unique(features.indices)
    x = features[:, cols]
    cs = sorted(cs)
    # candidates: ("mixture", None); ("corrected", C): the mixture corrected
    # on the ids; ("seeds", C): a regression on the seeds alone (a = 0)
    scores = {("mixture", None): [], **{(kind, c): [] for kind in ("corrected", "seeds") for c in cs}}
    # every fold's two regressions along the path of C, and the two on all the
    # seeds that the campaign is scored with, fitted together: problem 2k
    # reads fold k's mixture, 2k + 1 the seeds alone; 2K and 2K + 1 all seeds
    n_folds = fold.max() + 1
    offsets = np.zeros((y.size, 2 * n_folds + 2))
    for k in range(n_folds):
        scores[("mixture", None)].append(auc(y[fold == k], fold_logits[k][fold == k]))
        offsets[:, 2 * k] = fold_logits[k]
    offsets[:, 2 * n_folds] = logit_all
    rows_in = np.ones((y.size, 2 * n_folds + 2), bool)
    rows_in[:, :2 * n_folds] = np.repeat(fold[:, None] != np.arange(n_folds), 2, axis=1)  # the fitting parts
    path = logreg.fit_path(x, y, offsets, rows_in, cs, fit_a=np.arange(2 * n_folds + 2) % 2 == 0,
                           groups=user_field_of(schema, cols))
    in_folds = slice(0, 2 * n_folds)
    for c, (w, a, b) in zip(cs, path):
        z = a[in_folds] * offsets[:, in_folds] + b[in_folds] + x @ w[:, in_folds]              # [n, 2K]
        for k in range(n_folds):
            val = fold == k
            for j, kind in ((2 * k, "corrected"), (2 * k + 1, "seeds")):
                scores[(kind, c)].append(auc(y[val], z[val, j]))
    # stratified folds hold both classes, so every fold AUC is defined
    mean = {key: float(np.mean(v)) for key, v in scores.items()}
    order = list(scores)  # a tie keeps the simpler: the mixture, then a correction
    best = sorted(mean, key=lambda key: (mean[key], -order.index(key)), reverse=True)[:top]
    w, a, b = _mean_of(best, path, cs, {"corrected": 2 * n_folds, "seeds": 2 * n_folds + 1})
    nonzero = w != 0
    return Correction(cols[nonzero], w[nonzero], a, b, best[0][1], best[0][0],
                      {name(*key): v for key, v in mean.items()}, tuple(name(*key) for key in best))


def _mean_of(top, path, cs, column):
    """(w [p], a, b) of the mean of the candidates' logits a m + b + x w (one
    such logit again): each candidate of `top` [(kind, C)] is the mixture
    (a = 1) or the fit of problem column[kind] at C in `path`
    (logreg.fit_path); the seeds alone have a = 0."""
    w, a, b = np.zeros(path[0][0].shape[0]), 0.0, 0.0
    for kind, c in top:
        if kind == "mixture":
            a += 1.0
            continue
        wc, ac, bc = path[cs.index(c)]
        j = column[kind]
        w, b = w + wc[:, j], b + bc[j]
        a += ac[j] if kind == "corrected" else 0.0
    return w / len(top), float(a / len(top)), float(b / len(top))
