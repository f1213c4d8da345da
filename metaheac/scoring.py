"""Scoring candidates with a campaign's adapted parameters."""
import numpy as np
import paddle

from metaheac.adapt import finetune, infer_batch_size


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
