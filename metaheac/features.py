"""The users' ids as sparse features: what the per-campaign correction
(metaheac/correction.py) and the group regressions (metaheac/groups.py) read."""
import numpy as np
from scipy import sparse


def user_features(rows, lengths, schema):
    """[n, R] CSR over the user fields' table rows (R = first ad row): 1 at a
    static id, 1/length at each of a sequence field's first `length` ids
    (the network's pooling: repeated ids of one list add up)."""
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
                             shape=(n, schema.ad[0].offset))


def user_field_of(schema, cols):
    """The user field (its index among static + sequence) of each user table row in cols [p]."""
    offsets = sorted(f.offset for f in schema.static + schema.sequence)
    return np.searchsorted(offsets, cols, side="right") - 1
