import numpy as np
import pytest

from metaheac import metrics


def test_auc_exact_and_undefined_for_one_class():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([1, 1, 1], [0.2, 0.3, 0.4]) is None
    assert metrics.auc([], []) is None


def test_rank_auc_equals_the_area_under_the_roc_curve_with_ties():
    from sklearn.metrics import roc_auc_score

    from metaheac.metrics import auc
    rng = np.random.default_rng(0)
    for n, decimals in ((7, 0), (60, 1), (900, 8)):  # heavy ties, some, none
        labels = rng.integers(0, 2, n).astype(np.float32)
        scores = rng.normal(size=n).round(decimals)
        assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auc(np.zeros(5), np.arange(5.0)) is None  # undefined: one class


def test_roc_curve_matches_sklearn_and_its_area_is_the_auc():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(1)
    for n, decimals in ((9, 0), (80, 1), (700, 8)):  # heavy ties, some, none
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.normal(size=n).round(decimals)
        fpr, tpr = metrics.roc_curve(labels, scores)
        ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        assert area == pytest.approx(metrics.auc(labels, scores), abs=1e-12)


def test_precision_recall_at_top_fraction():
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1] * 4)  # 40 candidates, 12 positives
    scores = -np.arange(40, dtype=float)                      # ranked in order
    p, r = metrics.precision_recall_at(labels, scores, 0.05)  # top ceil(2) = 2: [1, 0]
    assert (p, r) == (0.5, 1 / 12)
    p, r = metrics.precision_recall_at(np.zeros(10), np.arange(10.0), 0.05)
    assert p == 0.0 and r is None


def test_summary_pools_candidates_and_averages_campaigns():
    campaigns = [{"auc": 0.8, "precision@5%": 1.0, "recall@5%": 0.5},
                 {"auc": None, "precision@5%": 0.0, "recall@5%": None}]
    s = metrics.summarize(campaigns, np.array([0, 1, 1, 1]), np.array([0.1, 0.9, 0.5, 0.7]))
    assert s["gauc"] == 0.8 and s["campaigns"] == 2 and s["campaigns_with_auc"] == 1
    assert s["auc"] == 1.0 and s["precision@5%"] == 0.5 and s["recall@5%"] == 0.5


def test_report_png_without_any_defined_auc(tmp_path):
    """Every campaign single-class (e.g. PaddleRec's all-positive sample): the report still draws."""
    from tools.utils.plots import draw_report
    rows = [{"aid": 1, "seed_rows": 10, "auc": None}, {"aid": 2, "seed_rows": 20, "auc": None}]
    path = draw_report(str(tmp_path / "infer_x" / "report.png"), "x", rows, np.ones(5), np.linspace(0, 1, 5))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
