"""Scoring candidates with a campaign's adapted parameters."""
import numpy as np
import paddle

from metaheac import combine
from metaheac.adapt import finetune
from metaheac.pool import campaign_rows
from metaheac.routing import gate_columns
from metaheac.rows import padded_batches, remap_rows


def score(net, params, rows, lengths, batch, pad=False):
    """Click probabilities [n] (numpy float32) of rows [n, C] under `params`.

    pad: every batch of one shape (rows.padded_batches), so a user's score
    does not depend on how a pool was chunked (near-ties then rank alike)."""
    scores = []
    with paddle.no_grad():
        for part, part_len, n in padded_batches(rows, lengths, batch, pad):
            prob = net.forward_rows(paddle.to_tensor(part), paddle.to_tensor(part_len), params)
            scores.append(prob.numpy()[:n])
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)


def score_adapted(net, tuned, rows, lengths, batch, pad=False):
    """Click probabilities [n] of table rows [n, C] for a campaign adapted by
    adapt.finetune: rows its seeds read take its fine-tuned values, every
    other row the meta-learned ones (which fine-tuning never moved); or under
    its combine.Combination (runner.adaptation=wide_cv). Only the
    rows these candidates read are gathered, so a pool of any size is scored
    chunk by chunk in bounded memory."""
    if tuned.combination is not None:
        return combine.score(net, tuned.combination, rows, lengths, batch, pad)
    uniq, (local,) = remap_rows([rows], net.schema.num_rows)
    pos = np.minimum(np.searchsorted(tuned.uniq, uniq), tuned.uniq.size - 1)
    adapted = np.flatnonzero(tuned.uniq[pos] == uniq)                  # [A] positions in uniq
    params = dict(tuned.params)
    with paddle.no_grad():
        for name in net.row_tables:
            table = net.cut(name, getattr(net, name), paddle.to_tensor(uniq))          # [U, D]
            if adapted.size:
                table = paddle.scatter(table, paddle.to_tensor(adapted),
                                       paddle.gather(tuned.params[name], paddle.to_tensor(pos[adapted])))
            params[name] = table
    return score(net, params, local, lengths, batch, pad)


def score_campaigns(net, tuned, user_ids, lengths, ad_ids, batch, pad=False):
    """Click probabilities [n] for each of N campaigns (a list) of users
    user_ids [n, Fs + W] (raw ids): campaign i adapted as tuned[i], its raw
    ad ids ad_ids[i] [Fa]. With one gate field, the campaigns adapted by
    wide_cv share one pass of the experts over the users
    (combine.score_many); the others are scored one by one."""
    scores = [None] * len(tuned)
    shared = [i for i, t in enumerate(tuned) if t.combination is not None]
    gates = gate_columns(net)
    if len(gates) == 1 and shared:
        col = gates[0][0]
        own = [int(campaign_rows(net.schema, user_ids[:1], ad_ids[i])[0, col]) for i in shared]
        rows = campaign_rows(net.schema, user_ids, ad_ids[shared[0]])
        together = combine.score_many(net, [tuned[i].combination for i in shared], rows, own, lengths, batch, pad)
        for j, i in enumerate(shared):
            scores[i] = together[:, j]
    for i, t in enumerate(tuned):
        if scores[i] is None:
            scores[i] = score_adapted(net, t, campaign_rows(net.schema, user_ids, ad_ids[i]), lengths, batch, pad)
    return scores


def finetune_and_score(net, stage1, stage2, config, rng):
    """Fine-tune on the seeds (stage1), score the candidates (stage2): (scores [n2], Finetuned)."""
    tuned = finetune(net, stage1, config, rng)
    return score_adapted(net, tuned, stage2["rows"], stage2["lengths"], config["runner.score_batch_size"]), tuned
