"""Per-campaign fine-tuning of the meta-learned model, and scoring.

A campaign gets fresh copies of the parameters (the embedding table cut to the
rows its seeds and candidates use: Adam leaves rows without gradient
unchanged, so this equals fine-tuning the whole model), trained with Adam on
its seed set. What adapts, for how long and with what early stopping are
config keys (runner.finetune_*); the defaults reproduce PaddleRec's fixed
epochs over all parameters.

Before fine-tuning, a campaign can be routed by its seeds (runner.route_prior,
see `choose_route`).
"""
from typing import NamedTuple

import numpy as np
import paddle

from net import EPS, bce_loss, param_group
from tools.utils.config import lr_scale
from tools.utils.meta import remap_rows

ROUTE_MAX_SEEDS = 2048  # routing reads at most this many seeds of a campaign (its cost is bounded)

# runner.finetune_params -> which parameters adapt
PARAM_GROUPS = {
    "all": lambda name: True,
    "no_embedding": lambda name: name != "embedding",
    "heads": lambda name: param_group(name) in ("gate", "critic"),
}


def infer_batch_size(config):
    """Fine-tuning and scoring batch: runner.infer_batch_size, else the training batch."""
    return config.get("runner.infer_batch_size") or config["hyper_parameters.batch_size"]


class Finetuned(NamedTuple):
    params: dict      # name -> the campaign's tensor; row tables cut to `uniq`
    uniq: np.ndarray  # [U] table rows of the cut row tables
    others: list      # the `other_rows` blocks, remapped into the cut
    steps: int        # fine-tuning optimizer steps
    route: dict       # how the seeds re-routed the campaign, or None


def campaign_params(net, source, trainable=PARAM_GROUPS["all"]):
    """Copies of the network's parameters for one campaign, with the row
    tables cut to rows `source` [U] (row u of the cut is table row
    source[u]); those selected by `trainable` get gradients."""
    params = {}
    for name, p in net.named_parameters():
        value = paddle.gather(p, source) if name in net.row_tables else p
        t = value.detach().clone()
        t.stop_gradient = not trainable(name)
        params[name] = t
    return params


def _split_validation(n, fraction, labels, rng):
    """Indices (train, validation) of the seed set; validation keeps both
    classes when the seed set has them, else it is empty."""
    order = rng.permutation(n)
    n_val = int(round(fraction * n))
    if fraction <= 0 or n_val < 2 or n - n_val < 1:
        return order, order[:0]
    val, train = order[:n_val], order[n_val:]
    if labels[val].min() == labels[val].max():
        return order, order[:0]
    return train, val


def finetune(net, stage1, config, rng, other_rows=()):
    """Fine-tune a copy of `net` on a campaign's seed set.

    stage1: dict of numpy arrays rows [n, C] (table rows), lengths [n, Fq],
    labels [n]. `other_rows` (e.g. the candidates' rows) are included in the
    embedding cut and returned remapped into it. `net` is not modified.
    Returns a Finetuned.
    """
    batch = infer_batch_size(config)
    uniq, (rows1, *others) = remap_rows([stage1["rows"], *other_rows], net.schema.num_rows)
    route = choose_route(net, stage1, config["runner.route_prior"])
    source = uniq.copy()
    if route:  # the campaign's gate-field row becomes a copy of the chosen id's
        source[np.searchsorted(uniq, route["own_row"])] = route["row"]
    params = campaign_params(net, paddle.to_tensor(source), PARAM_GROUPS[config["runner.finetune_params"]])
    # One Adam per learning-rate multiplier (optimizer.*_lr_scale): the copies
    # are plain tensors, which Paddle's per-parameter rates do not reach.
    groups = {}
    for name, t in params.items():
        if not t.stop_gradient:
            groups.setdefault(lr_scale(config, param_group(name)), []).append(t)
    lr = config["hyper_parameters.optimizer.local_test_learning_rate"]
    optimizers = [paddle.optimizer.Adam(learning_rate=lr * scale, parameters=ts) for scale, ts in groups.items()]
    labels = stage1["labels"]
    train_idx, val_idx = _split_validation(labels.size, config["runner.finetune_val_fraction"], labels, rng)
    rows_t, len_t, lab_t = (paddle.to_tensor(a) for a in (rows1, stage1["lengths"], labels))

    def loss_on(idx):
        idx = paddle.to_tensor(idx)
        prob = net.forward_rows(paddle.gather(rows_t, idx), paddle.gather(len_t, idx), params)
        return bce_loss(prob, paddle.gather(lab_t, idx))

    n = train_idx.size
    total = (config["runner.finetune_steps"] or config["runner.infer_train_epoch"] * -(-n // batch)) if n else 0
    patience = config["runner.finetune_patience"]

    def batches():  # shuffled epochs over the training part of the seed set
        while True:
            order = train_idx[rng.permutation(n)]
            for start in range(0, n, batch):
                yield order[start:start + batch]

    best, best_loss, since_best, steps = None, float("inf"), 0, 0
    paddle.seed(int(rng.integers(2**31)))  # dropout masks depend on the campaign alone
    was_training = net.training
    net.train()
    try:
        for idx in batches() if total else ():
            loss = loss_on(idx)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
                optimizer.clear_grad()
            steps += 1
            if val_idx.size:  # early stopping on the held-out slice of the seed set
                net.eval()
                with paddle.no_grad():
                    val_loss = float(loss_on(val_idx))
                net.train()
                if val_loss < best_loss - 1e-6:
                    best_loss, since_best = val_loss, 0
                    best = {k: t.detach().clone() for k, t in params.items() if not t.stop_gradient}
                else:
                    since_best += 1
            if steps >= total or since_best >= patience:
                break
    finally:
        if not was_training:
            net.eval()
    if best is not None:
        params.update(best)
    return Finetuned(params, uniq, others, steps, route)


def describe_route(route):
    """'adCategoryId*productType 30*0 -> 9*0 (own ids 0.2%)' for logs and reports
    ('' when not re-routed)."""
    if not route:
        return ""
    return (f"{route['field']} {route['own_label']} -> {route['label']} "
            f"(own ids {100 * route['own_probability']:.1f}%)")


def gate_columns(net):
    """Columns of the rows [n, C] holding the gate fields' ids."""
    schema = net.schema
    first_ad = len(schema.static) + schema.seq_width
    return [(first_ad + pos, schema.ad[pos]) for pos in net.gate_positions]


def choose_route(net, stage1, prior):
    """How the seeds route a campaign: None to keep its own gate-field ids, else
    {"field", "own_id", "id", "own_label", "label", "own_row", "row",
    "own_probability"}: give the campaign the gate inputs (the rows of every
    row table) of table row `row` (id `id` of gate field `field`) instead of
    its own `own_row`.

    The gates route a campaign by its ad ids to the experts of the past
    campaigns those ids describe. When the ids describe it wrongly (a
    mislabelled category), it is scored by the wrong experts, which a few
    fine-tuning steps do not undo. So every other id of each gate field is
    tried in its place: the campaign keeps its own ids with prior probability
    1 - prior, the alternatives share `prior`, and the seeds' likelihood under
    the meta-learned model decides (maximum a posteriori), read on at most
    ROUTE_MAX_SEEDS evenly spaced seeds. prior 0: off.
    """
    if prior <= 0:
        return None
    was_training = net.training
    net.eval()  # no dropout: the likelihoods are compared with each other
    try:
        return _map_route(net, stage1, prior)
    finally:
        if was_training:
            net.train()


def _map_route(net, stage1, prior):
    rows, lengths = stage1["rows"], stage1["lengths"]
    labels = stage1["labels"].astype(np.float64)
    if labels.size == 0:
        return None
    if labels.size > ROUTE_MAX_SEEDS:  # evenly spaced seeds: the evidence is decisive long before
        keep = np.linspace(0, labels.size - 1, ROUTE_MAX_SEEDS).round().astype(np.int64)
        rows, lengths, labels = rows[keep], lengths[keep], labels[keep]
    routes, alternatives = [None], [None]  # None: the campaign's own ids
    for j, (col, field) in enumerate(gate_columns(net)):
        values, counts = np.unique(rows[:, col], return_counts=True)
        own = int(values[counts.argmax()])  # a campaign's ad ids are constant over its rows
        for row in range(field.offset, field.offset + field.vocab_size):
            if row != own:
                routes.append((j, row))
                alternatives.append((field, own, row))
    if len(routes) == 1:
        return None
    with paddle.no_grad():  # one pass: at most ROUTE_MAX_SEEDS rows
        prob = net.forward_routes(paddle.to_tensor(rows), paddle.to_tensor(lengths), routes)
    p = np.clip(prob.numpy().astype(np.float64), EPS, 1.0 - EPS)                          # [R, n]
    log_likelihood = (labels * np.log(p) + (1.0 - labels) * np.log1p(-p)).sum(axis=1)
    log_prior = np.full(len(routes), np.log(prior / (len(routes) - 1)))
    log_prior[0] = np.log1p(-prior)
    log_post = log_likelihood + log_prior
    posterior = np.exp(log_post - log_post.max())
    posterior /= posterior.sum()
    best = int(posterior.argmax())
    if best == 0:
        return None
    field, own, row = alternatives[best]
    own_id, new_id = own - field.offset, row - field.offset
    return {"field": field.name, "own_row": own, "row": row, "own_id": own_id, "id": new_id,
            "own_label": net.schema.id_label(field, own_id), "label": net.schema.id_label(field, new_id),
            "own_probability": float(posterior[0])}


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
    """Fine-tune on the seeds (stage1), score the candidates (stage2): (scores [n2], Finetuned)."""
    tuned = finetune(net, stage1, config, rng, [stage2["rows"]])
    (rows2,) = tuned.others
    return score(net, tuned.params, rows2, stage2["lengths"], infer_batch_size(config)), tuned


def merged_state(net, params, uniq):
    """The full model's state dict with a campaign's fine-tuned parameters in it."""
    state = {}
    for name, p in net.named_parameters():
        if name in net.row_tables:
            table = p.numpy().copy()
            table[uniq] = params[name].numpy()
            state[name] = paddle.to_tensor(table)
        else:
            state[name] = params[name].detach()
    return state
