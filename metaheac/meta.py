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

from metaheac.loss import bce_loss


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


def meta_train_loss(net, tasks, rows, local_lr, order=1, inner_steps=1, adapt_rows=True):
    """Mean query loss over the tasks of a meta-batch after adapting on each
    task's support set.

    tasks, rows (tensors, see rows.build_meta_batch): rows [U] table rows any
    task touches; tasks: dicts with idx [Ut] (the task's rows, as positions
    in `rows`), sup_rows / qry_rows [B, C] (ids as positions in idx),
    sup_lengths / qry_lengths [B, Fq], sup_labels / qry_labels [B].
    """
    base = dict(net.named_parameters())
    if adapt_rows:
        # One gather per table for the whole meta-batch: each table's (dense)
        # gradient is then built once per step rather than once per task.
        batch_slices = {n: paddle.gather(base[n], rows) for n in net.row_tables}  # [U, E], ...
    losses = []
    for task in tasks:
        params = dict(base)
        sup_rows, qry_rows = task["sup_rows"], task["qry_rows"]
        if adapt_rows:
            params.update({n: paddle.gather(t, task["idx"]) for n, t in batch_slices.items()})  # [Ut, E], ...
        else:  # whole table: map local ids back to table rows
            table_rows = paddle.gather(rows, task["idx"])
            sup_rows = paddle.gather(table_rows, sup_rows.reshape([-1])).reshape(sup_rows.shape)
            qry_rows = paddle.gather(table_rows, qry_rows.reshape([-1])).reshape(qry_rows.shape)
        fast = inner_adapt(net, params, sup_rows, task["sup_lengths"], task["sup_labels"],
                           local_lr, inner_steps, second_order=(order == 2))
        losses.append(bce_loss(net.forward_rows(qry_rows, task["qry_lengths"], fast), task["qry_labels"]))
    return paddle.stack(losses).mean()
