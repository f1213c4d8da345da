"""Past campaigns grouped by what their users click, and one logistic
regression pooled over each group (hyper_parameters.campaign_clusters).

A new campaign's prior is a mixture its seeds weigh (metaheac/mixture.py).
The network's routings are components of it, each trained on the rows of
the few campaigns that share its gate ids. A kind of campaign that several
past campaigns share is better described by a regression on all of their
rows, and the kinds are not labelled: where the ad ids do not show them,
neither do the gates. So campaigns are grouped by their data
(docs/experiments.md):

1. a penalised logistic regression on each training campaign's own rows;
2. their logits on SIMILARITY_ROWS users drawn from all the campaigns; two
   campaigns are as close as those logits correlate (1 - Pearson r), and
   average-linkage clustering cuts the campaigns into at most K groups;
3. one regression over all the rows of each group's campaigns.

Fitted once, before meta-training, and saved beside each checkpoint as
groups.npz (its own file, with the feature schema it was fitted under).
Features are the users' ids (metaheac/features.py). Deterministic given
the rng.
"""
import logging
import os
import time
import zipfile
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from metaheac import logreg
from metaheac.errors import DataError
from metaheac.features import user_field_of, user_features

logger = logging.getLogger(__name__)

# Inverse L2 penalty (the per-row loss is summed) of a campaign's own
# regression and of a group's: chosen on the panel, for regressions pooled
# by the planted kinds (docs/experiments.md).
CAMPAIGN_C = 0.3
GROUP_C = 0.3
SIMILARITY_ROWS = 5000  # users whose logits tell how alike two campaigns are: enough for stable correlations
RANDOM_STREAM = 6151    # the trainer's rng for the similarity sample: apart from the epochs' streams
FILE = "groups.npz"     # beside rec.pdparams in a checkpoint directory


class GroupRegressions(NamedTuple):
    w: np.ndarray      # [G, U] float32, U = user table rows (schema.ad[0].offset)
    b: np.ndarray      # [G] intercepts
    sizes: np.ndarray  # [G] campaigns in each group
    labels: np.ndarray  # [T] each training campaign's group; -1: left out (its rows are of one class)

    def probs(self, x, groups):
        """Click probabilities [n, len(groups)] (float64) of users with features x [n, U] under groups' regressions."""
        return logreg.sigmoid(x @ self.w[groups].T.astype(np.float64) + self.b[groups].astype(np.float64))

    def label(self, g):
        return f"past campaigns' group {g} ({int(self.sizes[g])} campaigns)"

    def save(self, directory, schema):
        """directory/groups.npz, with the schema it was fitted under."""
        np.savez(os.path.join(directory, FILE), w=self.w, b=self.b, sizes=self.sizes, labels=self.labels,
                 schema=np.array(schema.signature()))


def load(directory, schema):
    """The GroupRegressions saved in a checkpoint directory, or None when it
    has none (trained without, or by PaddleRec's trainer); a DataError
    naming the file when it is unreadable or of another feature schema."""
    path = os.path.join(directory, FILE)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {k: f[k] for k in ("w", "b", "sizes", "labels", "schema")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable group-regressions file ({exc}); delete it to adapt without the "
                        f"group regressions, or train again") from None
    if str(saved["schema"]) != schema.signature() or saved["w"].shape[1] != schema.ad[0].offset:
        raise DataError(f"{path}: fitted under another feature schema than this config's; infer with the "
                        f"config.yaml saved beside it")
    return GroupRegressions(saved["w"], saved["b"], saved["sizes"], saved["labels"])


def _regression(x, y, c, fields):
    """(cols, w [cols], b) of the logistic regression with penalty ||w||^2 / (2 c)
    on x [n, U] CSR: its weights are 0 but on the ids the rows have, cols."""
    cols = np.unique(x.indices)
    n = x.shape[0]
    ((w, _, b),) = logreg.fit_path(x[:, cols], y, np.zeros((n, 1)), np.ones((n, 1)), [c], np.zeros(1, bool),
                                   fields[cols])
    return cols, w[:, 0], float(b[0])


def group(logits, k):
    """Group label [T] (0..G-1, G <= k) of T campaigns from their logits [T, S]
    on shared users: average linkage on 1 - correlation."""
    t = logits.shape[0]
    if t <= 1 or k <= 1:
        return np.zeros(t, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(logits)
    r = np.nan_to_num(r, nan=0.0)  # a campaign whose regression is constant is like none
    distance = np.clip(1.0 - r, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), "average")
    return np.unique(fcluster(tree, k, "maxclust"), return_inverse=True)[1]


def fit(sizes, take, schema, k, rng):
    """GroupRegressions of T campaigns of sizes[i] rows (take(i) -> their rows [n, C],
    lengths, labels, read again for the pooled fits rather than held: the
    rows of a large vocabulary take gigabytes), at most k groups; None when no
    campaign has both classes."""
    start = time.perf_counter()
    logger.info("campaign groups: a regression on each of %d training campaigns, then at most %d groups and a "
                "regression on each", len(sizes), k)
    fields = user_field_of(schema, np.arange(schema.ad[0].offset))
    total = max(int(np.sum(sizes)), 1)
    own, used, sample = [], [], []  # own: each campaign's regression, sparse
    for i, n in enumerate(sizes):
        rows, lengths, labels = take(i)
        y = labels.astype(np.float64)
        if not 0 < y.sum() < y.size:  # one class: nothing tells the campaign apart
            continue
        x = user_features(rows, lengths, schema)
        cols, w, _ = _regression(x, y, CAMPAIGN_C, fields)
        own.append(sparse.csr_matrix((w, cols, [0, cols.size]), shape=(1, fields.size)))
        used.append(i)
        # the similarity sample: from each campaign in proportion to its rows
        quota = min(n, max(1, round(SIMILARITY_ROWS * n / total)))
        sample.append(x[np.sort(rng.choice(n, quota, replace=False))])
    if not used:
        return None
    shared = sparse.vstack(sample).tocsr()                                                    # [S, U]
    assigned = group((sparse.vstack(own) @ shared.T).toarray(), k)                           # [T]
    w_out, b_out, members = np.zeros((assigned.max() + 1, fields.size), np.float32), [], []
    for g in range(assigned.max() + 1):
        xs, ys = [], []
        for j in np.flatnonzero(assigned == g):  # each campaign's features as it is read: its rows go at once
            rows, lengths, labels = take(used[j])
            xs.append(user_features(rows, lengths, schema))
            ys.append(labels)
        cols, w, b = _regression(sparse.vstack(xs).tocsr(), np.concatenate(ys).astype(np.float64), GROUP_C, fields)
        w_out[g, cols] = w
        b_out.append(b)
        members.append(len(xs))
        del xs
    logger.info("campaign groups: %d campaigns (%s rows) in %d groups of %s campaigns; group regressions "
                "fitted in %.1fs", len(used), f"{total:,}", len(members),
                ", ".join(map(str, sorted(members, reverse=True))), time.perf_counter() - start)
    groups = np.full(len(sizes), -1)
    groups[used] = assigned
    return GroupRegressions(w_out, np.array(b_out, np.float32), np.array(members), groups)
