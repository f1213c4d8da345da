"""What a marketer reads: lift and gains in metrics.json/campaigns.csv, report.png's
panels (every axis labelled), and the training curve."""
import json
import types

import numpy as np
import pandas as pd
import pytest

from metaheac import metrics
from tools.utils import plots, report

# 20 candidates, 4 positives (base rate 0.2); candidates 1 and 2 tie, and the
# stable order puts the negative 1 first
LABELS = np.array([1, 0, 1, 1] + [0] * 15 + [1])
SCORES = np.array([0.9, 0.5, 0.5, 0.4] + list(np.linspace(0.3, 0.0, 16)))
# lift@k = precision in the top ceil(k * 20) / 0.2
HAND_LIFTS = {"lift@1%": 1 / 1 / 0.2,    # top 1: [1]
              "lift@5%": 1 / 1 / 0.2,    # top 1
              "lift@10%": 1 / 2 / 0.2,   # top 2: [1, 0] (the tie: candidate 1 before 2)
              "lift@20%": 3 / 4 / 0.2}   # top 4: [1, 0, 1, 1]


def test_lift_and_gains_by_hand():
    assert metrics.lifts(LABELS, SCORES) == pytest.approx(HAND_LIFTS)
    assert metrics.lifts(np.zeros(5), np.arange(5.0)) == dict.fromkeys(HAND_LIFTS)
    g = metrics.gains(LABELS, SCORES)
    assert (g[0], g[5], g[10], g[20], g[95], g[100]) == (0.0, 0.25, 0.25, 0.75, 0.75, 1.0)
    assert metrics.gains(np.zeros(5), np.arange(5.0)) is None
    # float error does not add a candidate: 5% of 60 is 3
    assert metrics.top_count(0.05, 60) == 3 and metrics.top_count(0.05, 61) == 4 and metrics.top_count(0.01, 5) == 1


def test_infer_report_writes_lifts_and_gains(tiny_config, tmp_path):
    """campaigns.csv and metrics.json carry each campaign's lift@k and the summary's mean over campaigns."""
    from infer import _report

    config = tiny_config(runner={"test_data_dir": str(tmp_path / "split"), "report_png": False})
    empty = np.zeros(6, dtype=np.int64)  # a campaign without positives: lift undefined, left out of the mean
    gathered = []
    for i, (labels, scores) in enumerate([(LABELS, SCORES), (empty, np.arange(6.0))]):
        row = {"aid": i + 1, "candidate_positives": int(labels.sum()), "auc": metrics.auc(labels, scores),
               "precision@5%": 0.0, "recall@5%": None,
               **metrics.lifts(labels, scores)}
        audience = report.ranked_audience(scores, np.arange(len(scores)), 3, labels)
        gathered.append((i, row, labels, scores, audience))
    out = tmp_path / "out"
    _report(config, 0, "ckpt", types.SimpleNamespace(unmatched=[], user_id_name="uid"), gathered, str(out), 1.0)

    payload = json.loads((out / "metrics.json").read_text())
    assert {k: payload["summary"][k] for k in HAND_LIFTS} == pytest.approx(HAND_LIFTS)
    assert {k: payload["campaigns"][0][k] for k in HAND_LIFTS} == pytest.approx(HAND_LIFTS)
    assert payload["gains"]["targeted"][10] == 0.1 and payload["gains"]["reached"][10] == 0.25
    campaigns = pd.read_csv(out / "campaigns.csv")
    assert list(campaigns.columns) == report.CAMPAIGN_COLUMNS
    assert campaigns.loc[0, list(HAND_LIFTS)].to_dict() == pytest.approx(HAND_LIFTS)
    assert campaigns.loc[1, list(HAND_LIFTS)].isna().all()


def _campaigns(sizes, rng):
    return [{"aid": i, "seed_rows": int(n), "auc": float(rng.uniform(0.55, 0.8))} for i, n in enumerate(sizes)]


def _labelled_ticks(fig):
    """{(panel title, axis): tick labels shown inside the axis's range}."""
    fig.canvas.draw()
    out = {}
    for ax in fig.axes:
        for name, axis, (lo, hi) in (("x", ax.xaxis, ax.get_xlim()), ("y", ax.yaxis, ax.get_ylim())):
            out[ax.get_title(), name] = [label.get_text() for loc, label in
                                         zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                                         if min(lo, hi) <= loc <= max(lo, hi) and label.get_text()]
    return out


@pytest.mark.parametrize("sizes", [np.linspace(371, 551, 8), np.geomspace(50, 5000, 8)])
def test_report_every_axis_has_tick_labels(sizes):
    """Seed sets within a decade (hot campaigns, 371-551) and over two (50-5,000): every axis reads."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(np.int64)
    scores = rng.random(400) + 0.3 * labels
    sibling = {"campaigns": _campaigns(sizes[::-1] * 0.5, rng), "gains": {"reached": list(metrics.GAINS_GRID)}}
    fig = plots.report_figure("test_hot", _campaigns(sizes, rng), labels, scores, siblings={"test_cold": sibling})
    ticks = _labelled_ticks(fig)
    assert len(ticks) == 6
    for where, texts in ticks.items():
        assert len(texts) >= 2, (where, texts)
    auc_panel, roc_panel, gains_panel = fig.axes
    assert roc_panel.get_legend().get_texts()[0].get_text() == f"test_hot (AUC {metrics.auc(labels, scores):.3f})"
    legend = [t.get_text() for t in gains_panel.get_legend().get_texts()]
    assert legend[0].startswith("test_cold: top 10% reaches 10%") and legend[1].startswith("test_hot: top 10%")
    assert legend[2] == "random"
    plt.close(fig)


def test_report_of_an_unlabelled_pool_draws_the_score_histogram(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    scores = rng.random(300)
    rows = [{"aid": 1, "seed_rows": 40, "auc": None}]
    fig = plots.report_figure("pool", rows, None, scores, cutoff=0.9)
    assert len(fig.axes) == 2
    histogram = fig.axes[1]
    assert len(histogram.patches) == 50
    assert histogram.get_legend().get_texts()[0].get_text() == f"cut-off 0.9: top {(scores >= 0.9).sum()} of 300"
    assert all(_labelled_ticks(fig)[histogram.get_title(), axis] for axis in "xy")
    plt.close(fig)
    path = plots.draw_report(str(tmp_path / "infer_pool" / "report.png"), "pool", rows, None, scores, cutoff=0.9)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_training_curve(tmp_path):
    """Loss per meta-step (a skipped, non-finite one left out), smoothed, per-epoch means, and the
    meta-validation GAUC on an axis of its own."""
    import matplotlib.pyplot as plt

    losses = list(np.linspace(0.7, 0.4, 30))
    losses[7] = float("nan")
    fig = plots.training_figure(losses, [15, 30], [0.6, 0.45], first_epoch=2, validation=[(15, 0.62), (30, 0.7)])
    ax, right = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "meta-step loss", "smoothed (EMA, span 2 steps)", "epoch mean"]
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["meta-validation GAUC"]
    assert list(right.lines[0].get_ydata()) == [0.62, 0.7]
    assert {t.get_text() for t in ax.texts} == {"epoch 2", "epoch 3"}
    assert all(_labelled_ticks(fig).values())
    plt.close(fig)
    path = plots.draw_training(str(tmp_path / "train.png"), losses, [15, 30], [0.6, 0.45])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
