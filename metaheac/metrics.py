"""Ranking metrics for audience expansion: the one AUC, GAUC, precision and
recall at top k, lift and cumulative gains (what a marketer reads: target
the top X%, reach this share of the converters, this many times better than
random). numpy alone: importing sklearn or scipy.stats would add most of a
second to every start-up."""
import math

import numpy as np


def auc(labels, scores):
    """ROC AUC of scores [n] against 0/1 labels [n]; None when a class is
    missing (undefined).

    The Mann-Whitney rank sum (tied scores share their mean rank, i.e. count
    one half, as sklearn's roc_auc_score does): one sort, no curve, which
    matters where per-campaign cross-validation calls it hundreds of times
    (metaheac/correction.py).
    """
    y = np.asarray(labels).ravel() > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, group, size = np.unique(np.asarray(scores, dtype=np.float64).ravel(), return_inverse=True,
                               return_counts=True)
    last = np.cumsum(size)                          # 1-based rank of each distinct score's last row
    ranks = (last - (size - 1) / 2.0)[group]        # [n] mean rank of each row's tie group
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_defined(values):
    """The mean of the values that are not None (undefined AUCs), or None."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def roc_curve(labels, scores):
    """(false positive rates, true positive rates) [k + 1] of scores [n]
    against 0/1 labels [n] of both classes: from (0, 0), one point per
    distinct score, highest first; a tie moves along the diagonal, so the
    area under the curve is auc()."""
    y = np.asarray(labels).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.append(np.flatnonzero(np.diff(s)), s.size - 1)   # each distinct score's last row
    tp = np.cumsum(y)[last]
    fp = last + 1 - tp
    return np.append(0.0, fp / fp[-1]), np.append(0.0, tp / tp[-1])


def top_count(fraction, n):
    """ceil(fraction * n), at least 1: the size of the top `fraction` of n
    candidates. Rounded first so that float error (0.05 * 60 = 3.0000000000000004)
    does not add a candidate."""
    return max(1, math.ceil(round(fraction * n, 9)))


def precision_recall_at(labels, scores, fraction=0.05):
    """Precision and recall of the top ceil(fraction * n) candidates by score.

    Recall is None without positives. Ties are broken by candidate order
    (stable), so the result is deterministic.
    """
    labels = np.asarray(labels)
    n = labels.size
    if n == 0:
        return None, None
    k = top_count(fraction, n)
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    hits = float(labels[top].sum())
    positives = float(labels.sum())
    return hits / k, (hits / positives if positives > 0 else None)


LIFT_FRACTIONS = (0.01, 0.05, 0.10, 0.20)
# shares of candidates targeted at which the gains curve is kept: 0%, 1%, ..., 100%
GAINS_GRID = np.linspace(0.0, 1.0, 101)


def lift_key(fraction):
    """0.05 -> 'lift@5%' (the campaigns.csv / metrics.json column)."""
    return f"lift@{fraction:.0%}"


def lifts(labels, scores):
    """{lift@k: precision in the top ceil(k * n) / the base positive rate} for
    k in LIFT_FRACTIONS, ties as in precision_recall_at. 1 is random, 1/k the
    most possible; None without positives."""
    labels = np.asarray(labels)
    base = labels.mean() if labels.size else 0.0
    out = {}
    for fraction in LIFT_FRACTIONS:
        precision, _ = precision_recall_at(labels, scores, fraction)
        out[lift_key(fraction)] = float(precision / base) if base > 0 else None
    return out


def gains(labels, scores):
    """Cumulative gains: the share of the positives among the top ceil(f * n)
    candidates, for f in GAINS_GRID (stable order, as precision_recall_at);
    None without positives."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0 or labels.sum() == 0:
        return None
    reached = np.concatenate([[0.0], np.cumsum(labels[np.argsort(-np.asarray(scores), kind="stable")])])
    top = [0] + [top_count(f, labels.size) for f in GAINS_GRID[1:]]
    return reached[top] / labels.sum()


def mean_gains(campaigns):
    """The gains curve averaged over campaigns [(labels, scores)] with positives:
    each campaign targets its own top f (a list over GAINS_GRID), or None."""
    curves = [g for g in (gains(labels, scores) for labels, scores in campaigns) if g is not None]
    return [round(float(x), 5) for x in np.mean(curves, axis=0)] if curves else None


def summarize(campaigns, labels, scores):
    """Global metrics from per-campaign results and the pooled candidates.

    auc: over all candidates pooled; gauc: mean per-campaign AUC over the
    campaigns where it is defined; precision/recall@5% and lift@k: mean over
    campaigns.
    """
    return {
        "campaigns": len(campaigns),
        "campaigns_with_auc": sum(c["auc"] is not None for c in campaigns),
        "candidates": int(np.asarray(scores).size),
        "auc": None if labels is None else auc(labels, scores),
        "gauc": mean_defined(c["auc"] for c in campaigns),
        "precision@5%": mean_defined(c["precision@5%"] for c in campaigns),
        "recall@5%": mean_defined(c["recall@5%"] for c in campaigns),
        **{key: mean_defined(c.get(key) for c in campaigns) for key in map(lift_key, LIFT_FRACTIONS)},
    }


def fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"
