"""Scoring rows with the network in batches."""
import numpy as np
import paddle

from metaheac.rows import padded_batches

SCORE_BATCH = 4096  # rows per forward pass: bounds the memory of scoring a pool


def network_scores(net, rows, lengths, params=None, pad=False):
    """Click probabilities [n] (float32) of rows [n, C] under `params` (None: the network's own)."""
    scores = []
    with paddle.no_grad():
        for part, part_len, n in padded_batches(rows, lengths, SCORE_BATCH, pad):
            prob = net.forward_rows(paddle.to_tensor(part), paddle.to_tensor(part_len), params)
            scores.append(prob.numpy()[:n])
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)
