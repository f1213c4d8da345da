"""Per-campaign adaptation on the seeds' own ids, as far as the seeds say.

A network meta-learned on past campaigns is a prior: for a campaign with 50
seeds it is most of what there is; for one with 5,000 seeds a logistic
regression fitted on those seeds alone ranks better than it. Each campaign
gets a correction of the network's logit m fitted on its seeds:

    logit = a * m + b + X w

X holds the one-hot user ids (a sequence field's ids averaged over its first
`length`, as the network pools them), a and b are free and w is penalised by
||w||^2 / (2 C). C -> 0 leaves the network (rescaled: same ranking); a large
C lets the seeds' own ids take over where they say what the network does
not. How far to go, C or the network alone, is decided per campaign by
stratified k-fold cross-validation on its seeds (mean fold AUC), so on seeds
each candidate fit did not see.

m must be a logit the seeds did not train, or the fit trusts it too much:
the campaign's routed, meta-learned start.
"""
from typing import NamedTuple

import numpy as np
from scipy import optimize, sparse

COMBINE_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # inverse penalty of w (the per-seed loss is summed)
MAX_FOLDS = 5
MAX_ITER = 200


class Combination(NamedTuple):
    """A campaign's correction of the network's logit."""
    cols: np.ndarray  # [R'] user table rows with a weight (those the seeds have)
    w: np.ndarray     # [R'] their weights
    a: float
    b: float
    c: float          # the C chosen, None: the network alone
    cv_auc: dict      # candidate -> mean fold AUC on the seeds

    def apply(self, logit, rows, lengths, schema):
        """Combined logits [n] of rows [n, C] whose network logits are `logit` [n]."""
        out = self.a * logit.astype(np.float64) + self.b
        if self.w.size:
            out += user_features(rows, lengths, schema)[:, self.cols] @ self.w
        return out

    def describe(self):
        """'C=0.3, network weight 1.79 (fold AUC 0.761 vs network 0.718)' for logs and reports."""
        if self.c is None:
            return f"network alone (fold AUC {self.cv_auc['network']:.3f})" if self.cv_auc else ""
        return (f"C={self.c:g}, network weight {self.a:.2f} (fold AUC {self.cv_auc[f'C={self.c:g}']:.3f} vs "
                f"network {self.cv_auc['network']:.3f})")


NETWORK_ALONE = Combination(np.zeros(0, np.int64), np.zeros(0), 1.0, 0.0, None, {})


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


def _fit_path(x, m, y, cs):
    """[(w, a, b)] per C of `cs` (ascending), minimising C * sum(logloss(y, a m + b + x w))
    + ||w||^2 / 2; each fit starts where the previous, more penalised one ended."""
    n_w = x.shape[1]
    xt = x.T.tocsr()

    def loss_and_grad(theta, c):
        w, a, b = theta[:n_w], theta[n_w], theta[n_w + 1]
        z = a * m + b + x @ w
        r = c * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)  # C * (sigmoid(z) - y), overflow-free
        loss = c * (np.logaddexp(0.0, z) - y * z).sum() + 0.5 * w @ w
        return loss, np.concatenate([xt @ r + w, [r @ m, r.sum()]])

    theta = np.zeros(n_w + 2)
    theta[n_w] = 1.0  # the network as it is
    path = []
    for c in cs:
        theta = optimize.minimize(loss_and_grad, theta, args=(c,), jac=True, method="L-BFGS-B",
                                  options={"maxiter": MAX_ITER}).x
        path.append((theta[:n_w], theta[n_w], theta[n_w + 1]))
    return path


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


def _auc(y, s):
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else np.nan


def fit_combination(rows, lengths, labels, logit, schema, rng, cs=COMBINE_CS):
    """The Combination the seeds (rows [n, C], lengths, labels [n]) choose,
    given the network's logits [n] on them; deterministic given `rng`."""
    y = labels.astype(np.float64)
    m = logit.astype(np.float64)
    fold = _folds(y, rng)
    if fold is None:  # too few of a class to check a fit on: the meta-learned prior stands
        return NETWORK_ALONE
    x = user_features(rows, lengths, schema)
    # An id no seed has keeps weight 0 at any C (its gradient is w alone): fit
    # over the seeds' ids, a few thousand columns rather than the vocabulary.
    cols = np.unique(x.indices)
    x = x[:, cols]
    cs = sorted(cs)
    scores = {"network": [], **{c: [] for c in cs}}
    for k in range(fold.max() + 1):
        fit, val = fold != k, fold == k
        scores["network"].append(_auc(y[val], m[val]))
        for c, (w, a, b) in zip(cs, _fit_path(x[fit], m[fit], y[fit], cs)):
            scores[c].append(_auc(y[val], a * m[val] + b + x[val] @ w))
    mean = {key: float(np.nanmean(v)) for key, v in scores.items()}
    cv_auc = {(key if key == "network" else f"C={key:g}"): v for key, v in mean.items()}
    best = max(mean, key=lambda key: (mean[key], key == "network"))  # a tie keeps the network
    if best == "network":
        return NETWORK_ALONE._replace(cv_auc=cv_auc)
    (w, a, b), = _fit_path(x, m, y, [c for c in cs if c <= best])[-1:]
    keep = w != 0
    return Combination(cols[keep], w[keep], float(a), float(b), best, cv_auc)
