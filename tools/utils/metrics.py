"""Ranking metrics for audience expansion: AUC, GAUC, precision/recall at top k."""
import math

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(labels, scores):
    """ROC AUC, or None without labels or when only one class is present (undefined)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def precision_recall_at(labels, scores, fraction=0.05):
    """Precision and recall of the top ceil(fraction * n) candidates by score.

    Recall is None without positives. Ties are broken by candidate order
    (stable), so the result is deterministic.
    """
    labels = np.asarray(labels)
    n = labels.size
    if n == 0:
        return None, None
    k = max(1, math.ceil(fraction * n))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    hits = float(labels[top].sum())
    positives = float(labels.sum())
    return hits / k, (hits / positives if positives > 0 else None)


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(campaigns, labels, scores):
    """Global metrics from per-campaign results and the pooled candidates.

    auc: over all candidates pooled; gauc: mean per-campaign AUC over the
    campaigns where it is defined; precision/recall@5%: mean over campaigns.
    """
    return {
        "campaigns": len(campaigns),
        "campaigns_with_auc": sum(c["auc"] is not None for c in campaigns),
        "candidates": int(np.asarray(scores).size),
        "auc": auc(labels, scores),
        "gauc": _mean(c["auc"] for c in campaigns),
        "precision@5%": _mean(c["precision@5%"] for c in campaigns),
        "recall@5%": _mean(c["recall@5%"] for c in campaigns),
    }


def fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"
