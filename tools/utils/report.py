"""The files infer and expand leave behind: metrics.json, campaigns.csv and
the ranked audience of every campaign (the figures: tools/utils/plots.py)."""
import json

import numpy as np
import pandas as pd

from metaheac import metrics
from metaheac.files import atomic_write

CAMPAIGN_COLUMNS = ["aid", "seed_rows", "seed_positives", "candidates", "candidate_positives", "auc",
                    "precision@5%", "recall@5%", *map(metrics.lift_key, metrics.LIFT_FRACTIONS), "audience_size",
                    "audience_positives", "precision@k", "recall@k", "adaptation", "adapted", "seconds"]


def audience_size(n_candidates, config):
    count = config.get("runner.audience_count")
    k = count if count else metrics.top_count(config["runner.audience_fraction"], n_candidates)
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
    frame = pd.DataFrame(columns).rename(columns={"user_id": id_name})
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def write_campaigns(path, campaigns):
    return write_csv(path, {c: [row.get(c) for row in campaigns] for c in CAMPAIGN_COLUMNS})
