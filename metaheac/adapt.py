"""Per-campaign adaptation: fine-tuning the meta-learned model on a seed set.

A campaign gets fresh copies of the parameters (the row tables cut to the
rows its seeds read: Adam leaves rows without gradient unchanged, so this
equals fine-tuning the whole model), trained with Adam on its seed set.
What adapts, for how long and with what early stopping are
config keys (runner.finetune_*); the defaults reproduce PaddleRec's fixed
epochs over all parameters.

Before fine-tuning, a campaign can be routed by its seeds (runner.route_prior,
metaheac/routing.py). runner.adaptation=wide_cv adapts without Adam steps
(metaheac/combine.py).
"""
from typing import NamedTuple

import numpy as np
import paddle

from metaheac import combine
from metaheac.config import lr_scale
from metaheac.loss import bce_loss
from metaheac.routing import choose_route
from metaheac.rows import remap_rows

# runner.finetune_params -> the parameter groups (MetaHeacNet.param_group) that adapt
ADAPTED_GROUPS = {
    "all": ("embedding", "wide", "gate", "expert", "critic"),
    "no_embedding": ("wide", "gate", "expert", "critic"),
    "heads": ("gate", "critic"),
}


def campaign_rng(seed, aid):
    """The random generator of one campaign's adaptation. Seeded from (seed,
    aid) alone: a campaign's result does not depend on which other campaigns
    are evaluated, in which order or on which rank. A negative id (SeedSequence
    takes none) draws from 2^64 + |aid|, beyond every non-negative 64-bit id."""
    aid = int(aid)
    return np.random.default_rng([seed, aid if aid >= 0 else 2**64 - aid])


def infer_batch_size(config):
    """Fine-tuning batch: runner.infer_batch_size, else the training batch."""
    return config.get("runner.infer_batch_size") or config["hyper_parameters.batch_size"]


class Finetuned(NamedTuple):
    params: dict      # name -> the campaign's tensor; row tables cut to `uniq`
    uniq: np.ndarray  # [U] table rows of the cut row tables: the rows its seeds read
    steps: int        # fine-tuning optimizer steps
    route: dict       # how the seeds re-routed the campaign, or None
    combination: object = None  # runner.adaptation=wide_cv: the combine.Combination (params, uniq: None)


def campaign_params(net, source, groups=ADAPTED_GROUPS["all"]):
    """Copies of the network's parameters for one campaign, with the row
    tables cut to rows `source` [U] (row u of the cut is table row
    source[u]); those of the parameter groups `groups` get gradients."""
    params = {}
    for name, p in net.named_parameters():
        value = net.cut(name, p, source) if name in net.row_tables else p
        t = value.detach().clone()
        t.stop_gradient = net.param_group(name) not in groups
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


def finetune(net, stage1, config, rng):
    """Fine-tune a copy of `net` on a campaign's seed set.

    stage1: dict of numpy arrays rows [n, C] (table rows), lengths [n, Fq],
    labels [n]. The row tables are cut to the rows the seeds read: Adam
    leaves every other row as it was (zero gradient, zero moments), so the
    rest of the tables stays the meta-learned one (scoring.score_adapted
    reads it from `net`). `net` is not modified. Returns a Finetuned.
    """
    if config["runner.adaptation"] == "wide_cv":  # nothing is fine-tuned: the seeds pick and correct a mixture
        return Finetuned(None, None, 0, None, combine.fit(net, stage1, config, rng))
    batch = infer_batch_size(config)
    uniq, (rows1,) = remap_rows([stage1["rows"]], net.schema.num_rows)
    route = choose_route(net, stage1, config["runner.route_prior"])
    source = uniq.copy()
    if route:  # the campaign's gate-field row becomes a copy of the chosen id's
        source[np.searchsorted(uniq, route["own_row"])] = route["row"]
    params = campaign_params(net, paddle.to_tensor(source), ADAPTED_GROUPS[config["runner.finetune_params"]])
    # One Adam per learning-rate multiplier (optimizer.*_lr_scale): the copies
    # are plain tensors, which Paddle's per-parameter rates do not reach.
    groups = {}
    for name, t in params.items():
        if not t.stop_gradient:
            groups.setdefault(lr_scale(config, net.param_group(name)), []).append(t)
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
    return Finetuned(params, uniq, steps, route)


def merged_state(net, params, uniq):
    """The full model's state dict (buffers too) with a campaign's fine-tuned parameters in it."""
    state = dict(net.state_dict())
    for name, p in net.named_parameters():
        if name in net.row_tables:
            table = p.numpy().copy()
            base = net.row_base(name)  # the gate table holds the ad rows only
            held = uniq >= base
            table[uniq[held] - base] = params[name].numpy()[held]
            state[name] = paddle.to_tensor(table)
        else:
            state[name] = params[name].detach()
    return state
