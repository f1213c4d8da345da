"""Adapting by fine-tuning (runner.adaptation=finetune, PaddleRec's way):
Adam epochs on a campaign's seeds, from the meta-learned parameters.

A campaign gets fresh copies of the parameters, the row tables cut to the
rows its seeds read: Adam leaves rows without gradient unchanged, so this
equals fine-tuning the whole model. Before fine-tuning, the seeds may route
the campaign by another gate id (runner.route_prior, routing.choose_route).
"""
import numpy as np
import paddle

from metaheac.adapted import AdaptedCampaign
from metaheac.config import lr_scale
from metaheac.loss import bce_loss
from metaheac.routing import choose_route, describe_route
from metaheac.rows import cut, remap_rows
from metaheac.scoring import network_scores


def campaign_params(net, source):
    """Copies of the network's parameters for one campaign, with gradients,
    the row tables cut to rows `source` [U] (row u of the cut is table row
    source[u])."""
    params = {}
    for name, p in net.named_parameters():
        t = (cut(net, name, p, source) if name in net.row_tables else p).detach().clone()
        t.stop_gradient = False
        params[name] = t
    return params


class FineTunedCampaign(AdaptedCampaign):
    """A campaign fine-tuned on its seeds: params (the row tables cut to the
    rows its seeds read, uniq [U]), after `steps` Adam steps, routed as
    `route` said (routing.choose_route; None: its own ids)."""

    method = "finetune"

    def __init__(self, net, params, uniq, steps, route, ad_rows):
        self.net, self.params, self.uniq, self.steps, self.route, self.ad_rows = (
            net, params, uniq, steps, route, ad_rows)

    @classmethod
    def fit(cls, learned, seeds, config, rng):
        """Fine-tune a copy of the network on a campaign's seeds (rows [n, C],
        lengths [n, Fq], labels [n], aid); the network is not modified."""
        net = learned.net
        batch = config["runner.infer_batch_size"]
        uniq, (rows1,) = remap_rows([seeds["rows"]], net.schema.num_rows)
        route = choose_route(learned, seeds, config["runner.route_prior"])
        source = uniq.copy()
        if route:  # the campaign's gate-field row becomes a copy of the chosen id's
            source[np.searchsorted(uniq, route["own_row"])] = route["row"]
        params = campaign_params(net, paddle.to_tensor(source))
        # One Adam per learning-rate multiplier (optimizer.*_lr_scale): the copies
        # are plain tensors, which Paddle's per-parameter rates do not reach.
        by_scale = {}
        for name, t in params.items():
            by_scale.setdefault(lr_scale(config, net.param_group(name)), []).append(t)
        lr = config["hyper_parameters.optimizer.local_test_learning_rate"]
        optimizers = [paddle.optimizer.Adam(learning_rate=lr * scale, parameters=ts) for scale, ts in by_scale.items()]
        rows_t, len_t, lab_t = (paddle.to_tensor(a) for a in (rows1, seeds["lengths"], seeds["labels"]))
        n, steps = seeds["labels"].size, 0
        for _ in range(config["runner.infer_train_epoch"]):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = paddle.to_tensor(order[start:start + batch])
                prob = net.forward_rows(paddle.gather(rows_t, idx), paddle.gather(len_t, idx), params)
                bce_loss(prob, paddle.gather(lab_t, idx)).backward()
                for optimizer in optimizers:
                    optimizer.step()
                    optimizer.clear_grad()
                steps += 1
        return cls(net, params, uniq, steps, route, seeds["rows"][0, net.schema.first_ad_col:])

    def score(self, rows, lengths, pad=False):
        """Rows its seeds read take the fine-tuned values, every other row the
        meta-learned ones (which fine-tuning never moved). Only the rows these
        users read are gathered, so a pool is scored chunk by chunk in bounded
        memory."""
        net = self.net
        uniq, (local,) = remap_rows([rows], net.schema.num_rows)
        pos = np.minimum(np.searchsorted(self.uniq, uniq), self.uniq.size - 1)
        adapted = np.flatnonzero(self.uniq[pos] == uniq)                   # [A] positions in uniq
        params = dict(self.params)
        with paddle.no_grad():
            for name in net.row_tables:
                table = cut(net, name, getattr(net, name), paddle.to_tensor(uniq))           # [U, D]
                if adapted.size:
                    table = paddle.scatter(table, paddle.to_tensor(adapted),
                                           paddle.gather(self.params[name], paddle.to_tensor(pos[adapted])))
                params[name] = table
        return network_scores(net, local, lengths, params, pad)

    def describe(self):
        route = describe_route(self.route)
        return f"{self.steps} fine-tune steps" + (f"; routed {route}" if route else "")

    def state_dict(self):
        """The full network's state dict with the campaign's fine-tuned parameters in it (tools/export.py)."""
        state = dict(self.net.state_dict())
        for name, p in self.net.named_parameters():
            if name in self.net.row_tables:
                table = p.numpy().copy()
                base = self.net.row_base(name)  # the gate table holds the ad rows only
                held = self.uniq >= base
                table[self.uniq[held] - base] = self.params[name].numpy()[held]
                state[name] = paddle.to_tensor(table)
            else:
                state[name] = self.params[name].detach()
        return state
