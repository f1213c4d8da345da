"""Adapting the network to a task: the MAML meta-training step and the
per-campaign fine-tuning used at inference.

Both work on a parameter *dict* passed to ``net.forward_rows`` instead of the
layer's own parameters, so nothing is mutated and the meta-learned
initialisation stays intact.

Touched-row adaptation: a task only reads the embedding rows its ids point at.
Gathering those rows into a small [U, E] tensor and remapping the ids into it
gives exactly the same result as adapting the whole table (the gradient of
every other row is zero, so SGD and Adam leave them unchanged), at a fraction
of the cost. The reader computes the unique rows and the remap in numpy.
"""
import numpy as np
import paddle

from net import bce_loss


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


def meta_train_loss(net, batch, local_lr, order=1, inner_steps=1, adapt_rows=True):
    """Mean query loss over the tasks of a meta-batch after adapting on each
    task's support set.

    batch (tensors, see build_meta_batch): rows [U] table rows any task
    touches; tasks: list of dicts with idx [Ut] (the task's rows, as positions
    in `rows`), sup_rows / qry_rows [B, C] (ids as positions in idx),
    sup_lengths / qry_lengths [B, Fq], sup_labels / qry_labels [B].
    """
    base = dict(net.named_parameters())
    if adapt_rows:
        # One gather for the whole meta-batch: the table's (dense) gradient is
        # then built once per step rather than once per task.
        batch_slice = paddle.gather(base["embedding"], batch["rows"])  # [U, E]
    losses = []
    for task in batch["tasks"]:
        params = dict(base)
        sup_rows, qry_rows = task["sup_rows"], task["qry_rows"]
        if adapt_rows:
            params["embedding"] = paddle.gather(batch_slice, task["idx"])  # [Ut, E]
        else:  # whole table: map local ids back to table rows
            table_rows = paddle.gather(batch["rows"], task["idx"])
            sup_rows = paddle.gather(table_rows, sup_rows.reshape([-1])).reshape(sup_rows.shape)
            qry_rows = paddle.gather(table_rows, qry_rows.reshape([-1])).reshape(qry_rows.shape)
        fast = inner_adapt(net, params, sup_rows, task["sup_lengths"], task["sup_labels"],
                           local_lr, inner_steps, second_order=(order == 2))
        losses.append(bce_loss(net.forward_rows(qry_rows, task["qry_lengths"], fast), task["qry_labels"]))
    return paddle.stack(losses).mean()


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
    *_labels (numpy). Returns the meta-batch meta_train_loss takes (numpy).
    """
    rows, _ = remap_rows([b for t in tasks for b in (t["sup_rows"], t["qry_rows"])], num_rows)
    out = []
    for t in tasks:
        task_rows, (sup, qry) = remap_rows([t["sup_rows"], t["qry_rows"]], num_rows)
        out.append({**t, "idx": np.searchsorted(rows, task_rows), "sup_rows": sup, "qry_rows": qry})
    return {"rows": rows, "tasks": out}


def campaign_params(net, uniq):
    """Fresh trainable copies of the network's parameters for one campaign,
    with the embedding table cut to the rows in `uniq`."""
    params = {}
    for name, p in net.named_parameters():
        value = paddle.gather(p, uniq) if name == "embedding" else p
        t = value.detach().clone()
        t.stop_gradient = False
        params[name] = t
    return params


def finetune(net, stage1, config, rng, other_rows=()):
    """Fine-tune a copy of `net` on a campaign's seed set.

    stage1: dict of numpy arrays rows [n, C] (table rows), lengths [n, Fq],
    labels [n]. Adam (local_test_learning_rate) for runner.infer_train_epoch
    epochs over the shuffled seed set, as PaddleRec does; `net` itself is not
    modified. `other_rows` (e.g. the candidates' rows) are included in the
    embedding cut and returned remapped into it.
    Returns (params, uniq [U] table rows of params["embedding"], remapped
    other_rows, optimizer steps).
    """
    batch = config.get("runner.infer_batch_size") or config["hyper_parameters.batch_size"]
    uniq, (rows1, *others) = remap_rows([stage1["rows"], *other_rows], net.schema.num_rows)
    params = campaign_params(net, paddle.to_tensor(uniq))
    optimizer = paddle.optimizer.Adam(
        learning_rate=config["hyper_parameters.optimizer.local_test_learning_rate"],
        parameters=list(params.values()))
    rows1_t = paddle.to_tensor(rows1)
    len1_t = paddle.to_tensor(stage1["lengths"])
    lab1_t = paddle.to_tensor(stage1["labels"])
    n1, steps = rows1.shape[0], 0
    for _ in range(config["runner.infer_train_epoch"]):
        order = paddle.to_tensor(rng.permutation(n1))
        for start in range(0, n1, batch):
            idx = order[start:start + batch]
            prob = net.forward_rows(paddle.gather(rows1_t, idx), paddle.gather(len1_t, idx), params)
            loss = bce_loss(prob, paddle.gather(lab1_t, idx))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            steps += 1
    return params, uniq, others, steps


def score(net, params, rows, lengths, batch):
    """Click probabilities [n] (numpy float32) of rows [n, C] under `params`."""
    scores = []
    with paddle.no_grad():
        for start in range(0, rows.shape[0], batch):
            prob = net.forward_rows(paddle.to_tensor(rows[start:start + batch]),
                                    paddle.to_tensor(lengths[start:start + batch]), params)
            scores.append(prob.numpy())
    return np.concatenate(scores).astype(np.float32)


def finetune_and_score(net, stage1, stage2, config, rng):
    """Fine-tune on the seeds (stage1), score the candidates (stage2): (scores [n2], steps)."""
    params, _, (rows2,), steps = finetune(net, stage1, config, rng, [stage2["rows"]])
    batch = config.get("runner.infer_batch_size") or config["hyper_parameters.batch_size"]
    return score(net, params, rows2, stage2["lengths"], batch), steps


def merged_state(net, params, uniq):
    """The full model's state dict with a campaign's fine-tuned parameters in it."""
    state = {}
    for name, p in net.named_parameters():
        if name == "embedding":
            table = p.numpy().copy()
            table[uniq] = params[name].numpy()
            state[name] = paddle.to_tensor(table)
        else:
            state[name] = params[name].detach()
    return state
