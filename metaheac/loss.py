"""The training loss, written with double-differentiable ops only."""
import paddle

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the log


def bce_loss(prob, label):
    """Mean binary cross-entropy of probabilities [B] against labels [B].

    F.binary_cross_entropy has no double grad in Paddle 3.3.1; clip + log do,
    so second-order MAML differentiates through this loss exactly.
    """
    p = paddle.clip(prob, EPS, 1.0 - EPS)
    return -(label * paddle.log(p) + (1.0 - label) * paddle.log(1.0 - p)).mean()
