"""The MAML meta-training step.

It works on a parameter *dict* passed to ``net.forward_rows`` instead of the
layer's own parameters, so nothing is mutated and the meta-learned
initialisation stays intact (per-campaign fine-tuning at inference, in
metaheac/adapt.py, does the same).

Touched-row adaptation: a task only reads the embedding rows its ids point at.
Gathering those rows into a small [U, E] tensor and remapping the ids into it
gives exactly the same result as adapting the whole table (the gradient of
every other row is zero, so SGD and Adam leave them unchanged), at a fraction
of the cost. The reader computes the unique rows and the remap in numpy
(metaheac/rows.py).
"""
import paddle
from paddle.autograd import PyLayer

from metaheac.loss import bce_loss
from metaheac.rows import cut


class DecayedRows(PyLayer):
    """gather(table, rows) whose backward also applies L2 weight decay.

    With L2Decay in the optimizer, a step builds the table's dense gradient
    (zeros, then the rows' gradients scattered in), decay * table, and their
    sum: three table-sized tensors and four passes over the table. Here the
    gradient is decay * table with the touched rows' sums written in place:
    one tensor, two passes, and bitwise the same values (each element is one
    rounded add of the same two terms; `rows` has no repeats).
    """

    @staticmethod
    def forward(ctx, table, rows, decay):
        ctx.save_for_backward(table, rows)
        ctx.decay = decay
        return paddle.gather(table, rows)                                   # [U, E]

    @staticmethod
    def backward(ctx, grad):
        table, rows = ctx.saved_tensor()
        full = paddle.scale(table, ctx.decay)                               # [R, E]: every row decays
        return paddle.scatter_(full, rows, grad + paddle.gather(full, rows), overwrite=True), None


def inner_adapt(net, params, rows, lengths, labels, lr, steps, second_order):
    """`steps` SGD steps on one batch; returns the fast parameter dict.

    Second order keeps the graph of each step (`create_graph`) so the outer
    gradient differentiates through the update; first order treats the inner
    gradient as a constant (FOMAML, PaddleRec's choice).
    """
    names = list(params)
    for _ in range(steps):
        loss = bce_loss(net.forward_rows(rows, lengths, params), labels)
        grads = paddle.grad(loss, [params[n] for n in names], create_graph=second_order)
        params = {n: params[n] - lr * (g if second_order else g.detach()) for n, g in zip(names, grads)}
    return params


def meta_train_loss(net, tasks, rows, local_lr, order=1, inner_steps=1, table_decay=0.0):
    """Mean query loss over the tasks of a meta-batch after adapting on each
    task's support set.

    tasks, rows (tensors, see rows.build_meta_batch): rows [U] table rows any
    task touches; tasks: dicts with idx [Ut] (the task's rows, as positions
    in `rows`), sup_rows / qry_rows [B, C] (ids as positions in idx),
    sup_lengths / qry_lengths [B, Fq], sup_labels / qry_labels [B].
    table_decay: the outer step's L2 weight decay of the row tables, added
    to their gradients here (DecayedRows) rather than by the optimizer.
    """
    base = dict(net.named_parameters())
    # One gather per table for the whole meta-batch: each table's (dense)
    # gradient is then built once per step rather than once per task.
    take = (lambda t, idx: DecayedRows.apply(t, idx, table_decay)) if table_decay else paddle.gather
    batch_slices = {n: cut(net, n, base[n], rows, take) for n in net.row_tables}  # [U, E], ...
    losses = []
    for task in tasks:
        params = dict(base)
        params.update({n: paddle.gather(t, task["idx"]) for n, t in batch_slices.items()})  # [Ut, E], ...
        fast = inner_adapt(net, params, task["sup_rows"], task["sup_lengths"], task["sup_labels"],
                           local_lr, inner_steps, second_order=(order == 2))
        losses.append(bce_loss(net.forward_rows(task["qry_rows"], task["qry_lengths"], fast), task["qry_labels"]))
    return paddle.stack(losses).mean()
