"""What infer leaves behind: metrics.json, campaigns.csv, the ranked audience
of every campaign, and a PNG report."""
import glob
import json
import math
import os

import numpy as np

from metaheac.files import atomic_write, is_leftover

CAMPAIGN_COLUMNS = ["aid", "seed_rows", "seed_positives", "candidates", "candidate_positives", "auc",
                    "precision@5%", "recall@5%", "audience_size", "audience_positives", "precision@k", "recall@k",
                    "finetune_steps", "routed", "seconds"]


def audience_size(n_candidates, config):
    count = config.get("runner.audience_count")
    k = count if count else math.ceil(config["runner.audience_fraction"] * n_candidates)
    return int(min(max(k, 1), n_candidates))


def ranked_audience(scores, user_ids, k, labels=None):
    """Top-k candidates by score (ties keep candidate order): dict of columns."""
    top = np.argsort(-scores, kind="stable")[:k]
    out = {"rank": np.arange(1, top.size + 1), "user_id": user_ids[top], "score": scores[top]}
    if labels is not None:
        out["label"] = labels[top].astype(np.int64)
    return out


def write_json(path, payload):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    return atomic_write(path, write)


def write_csv(path, columns, id_name="user_id"):
    import pandas as pd

    frame = pd.DataFrame(columns).rename(columns={"user_id": id_name})
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def write_campaigns(path, campaigns):
    return write_csv(path, {c: [row.get(c) for row in campaigns] for c in CAMPAIGN_COLUMNS})


def draw_report(path, split, campaigns, labels, scores):
    """Per-campaign AUC against seed-set size (this split plus any sibling
    infer_* outputs of the same checkpoint, so hot and cold share one plot)
    and this split's global ROC curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    series = {split: campaigns}
    for other in glob.glob(os.path.join(os.path.dirname(os.path.dirname(path)), "infer_*", "metrics.json")):
        name = os.path.basename(os.path.dirname(other))[len("infer_"):]
        if name != split and not is_leftover(os.path.dirname(other)):
            with open(other, encoding="utf-8") as f:
                series[name] = json.load(f)["campaigns"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    plotted = 0
    for (name, rows), marker in zip(sorted(series.items()), "osd^v<>"):
        rows = [r for r in rows if r["auc"] is not None]
        plotted += len(rows)
        ax1.scatter([r["seed_rows"] for r in rows], [r["auc"] for r in rows], marker=marker, label=name, alpha=0.8)
    ax1.axhline(0.5, color="grey", lw=0.8, ls="--")
    if plotted:
        ax1.set_xscale("log")
        ax1.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax1.text(0.5, 0.5, "no campaign with a defined AUC", ha="center", transform=ax1.transAxes)
    ax1.set_xlabel("seed-set size (stage-1 rows)")
    ax1.set_ylabel("campaign AUC")
    ax1.set_title("Per-campaign AUC vs seed-set size")
    if plotted:
        ax1.legend()
    if labels.min() != labels.max():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax2.plot(fpr, tpr, label=split)
    else:
        ax2.text(0.5, 0.5, "ROC undefined: candidates of one class", ha="center", transform=ax2.transAxes)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax2.set_xlabel("false positive rate")
    ax2.set_ylabel("true positive rate")
    ax2.set_title(f"Global ROC ({split}, all candidates pooled)")
    if labels.min() != labels.max():
        ax2.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
