"""ROC AUC, the one implementation every part of the package reads."""
import numpy as np
from scipy.stats import rankdata


def auc(labels, scores):
    """ROC AUC of scores [n] against 0/1 labels [n]; nan when a class is missing.

    The Mann-Whitney rank sum (tied scores share their mean rank, i.e. count
    one half, as sklearn's roc_auc_score does): one sort, no curve, a tenth of
    sklearn's time, which matters where per-campaign cross-validation calls
    it hundreds of times (metaheac/combine.py).
    """
    y = np.asarray(labels).ravel() > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64).ravel())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
