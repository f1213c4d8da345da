"""Touched rows: the table rows a batch reads, and its ids remapped into them.

A task reads a few thousand of the table's rows; adapting only those (a
small [U, E] slice, ids remapped into it) equals adapting the whole table.
Done in numpy on the reader side (paddle.unique with return_inverse is
very slow on CPU in Paddle 3.3.1: ../shared/notes).
"""
import numpy as np
import paddle


def remap_rows(blocks, num_rows):
    """Unique table rows of `blocks` and the blocks remapped into them.

    Returns (uniq [U] sorted int64, [block as positions in uniq]). A dense
    marker of `num_rows` entries makes this O(num_rows + ids), several times
    faster than sorting (np.unique) for the id counts of a task.
    """
    mark = np.zeros(num_rows, dtype=bool)
    for b in blocks:
        mark[b.reshape(-1)] = True
    uniq = np.flatnonzero(mark)
    position = np.empty(num_rows, dtype=np.int64)
    position[uniq] = np.arange(uniq.size)
    return uniq, [position[b] for b in blocks]


def build_meta_batch(tasks, num_rows):
    """Remap the table rows of sampled tasks for touched-row adaptation.

    tasks: dicts with sup_rows / qry_rows [B, C] (table rows), *_lengths,
    *_labels (numpy). Returns the meta-batch meta.meta_train_loss takes, as
    numpy: (tasks, rows [U]), rows being every table row any task reads, each
    task with idx [Ut] (its rows, as positions in `rows`) and sup_rows /
    qry_rows remapped to positions in idx. A pair rather than a dict: PaddleRec's
    trainer reads len(batch[0]) (here, the number of tasks).
    """
    rows, _ = remap_rows([b for t in tasks for b in (t["sup_rows"], t["qry_rows"])], num_rows)
    out = []
    for t in tasks:
        task_rows, (sup, qry) = remap_rows([t["sup_rows"], t["qry_rows"]], num_rows)
        out.append({**t, "idx": np.searchsorted(rows, task_rows), "sup_rows": sup, "qry_rows": qry})
    return out, rows


def padded_batches(rows, lengths, batch, pad):
    """(rows, lengths, n) of each batch of `batch` rows in order, n the real
    rows. pad: a short last batch is padded to `batch` rows by repeating its
    last row. The math library picks its kernels by shape, so a row's score
    can differ in the last bits with the batch it is in; with every batch of
    one shape, a user's score does not depend on how a pool was chunked."""
    for start in range(0, rows.shape[0], batch):
        part, part_len = rows[start:start + batch], lengths[start:start + batch]
        n = part.shape[0]
        if pad and n < batch:
            part, part_len = (np.concatenate([a, np.repeat(a[-1:], batch - n, axis=0)]) for a in (part, part_len))
        yield part, part_len, n


def cut(net, name, table, rows=None, take=paddle.gather):
    """Table rows `rows` [U] (None: all) of the network's row table `name`
    (its tensor `table`) -> [U, D], with zeros for rows the table does not
    hold (below net.row_base: never read): what net.forward_rows reads when
    given parameters. Rows below row_base must come first (sorted rows do).
    take(table, idx) gathers."""
    base = net.row_base(name)
    if rows is None:
        if not base:
            return table
        return paddle.concat([paddle.zeros([base, table.shape[1]], table.dtype), table])       # [R, D]
    if not base:
        return take(table, rows)
    below = int((rows < base).sum())
    held = take(table, rows[below:] - base)                                                    # [U - below, D]
    return paddle.concat([paddle.zeros([below, table.shape[1]], table.dtype), held]) if below else held
