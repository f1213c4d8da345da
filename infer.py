"""Per-campaign fine-tuning and evaluation of a meta-trained MetaHeac model.

    python infer.py -m config.yaml [-o runner.test_data_dir=data/test_cold ...]

For each checkpoint epoch in [infer_start_epoch, infer_end_epoch) and each
campaign of runner.test_data_dir: start from the meta-learned parameters,
fine-tune with Adam on the seed set (test_stage1.pkl), score the candidates
(test_stage2.pkl). Prints a line per campaign and a summary; writes the same
to runner.metrics_path as JSON.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools.utils import runtime  # noqa: E402
from tools.utils.config import require  # noqa: E402

log = runtime.logger


def metrics_path(config, epoch):
    if config["runner.metrics_path"]:
        return config["runner.metrics_path"]
    split = os.path.basename(os.path.normpath(config["runner.test_data_dir"]))
    return os.path.join(load_root(config), str(epoch), f"metrics_{split}.json")


def load_root(config):
    return config["runner.infer_load_path"] or config["runner.model_save_path"]


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def evaluate(config):
    import numpy as np

    from tools.utils import metrics
    from tools.utils.checkpoint import load_checkpoint

    runtime.seed_everything(config["runner.seed"])
    runtime.set_device(config)
    dy_model_class = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
    reader = runtime.load_module(config, config["runner.infer_reader_path"], "runner.infer_reader_path")
    test_dir = require(config, "runner.test_data_dir")
    dataset = reader.RecDataset(runtime.list_files(test_dir, "runner.test_data_dir"), config)
    model = dy_model_class.create_model(config)
    model.eval()

    results = []
    for epoch in range(config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]):
        ckpt = load_checkpoint(os.path.join(load_root(config), str(epoch)), model, key="runner.infer_load_path")
        log.info("epoch %d: evaluating %s on %d campaigns of %s", epoch, ckpt, len(dataset), test_dir)
        start = time.time()
        campaigns, all_labels, all_scores = [], [], []
        for i, campaign in enumerate(dataset):
            aid = campaign["aid"]
            t0 = time.time()
            # Seeded from (seed, aid) alone: a campaign's result does not depend
            # on which other campaigns are evaluated or in which order.
            rng = np.random.default_rng([config["runner.seed"], aid])
            scores, steps = dy_model_class.finetune_and_score(model, campaign, config, rng)
            labels = campaign["stage2"]["labels"]
            precision, recall = metrics.precision_recall_at(labels, scores, 0.05)
            row = {"aid": aid, "seed_rows": int(campaign["stage1"]["labels"].size),
                   "seed_positives": int(campaign["stage1"]["labels"].sum()),
                   "candidates": int(labels.size), "candidate_positives": int(labels.sum()),
                   "auc": metrics.auc(labels, scores), "precision@5%": precision, "recall@5%": recall,
                   "finetune_steps": steps, "seconds": round(time.time() - t0, 3)}
            campaigns.append(row)
            all_labels.append(labels)
            all_scores.append(scores)
            note = "" if row["auc"] is not None else "  (AUC undefined: candidates of one class)"
            log.info("[%d/%d] aid %s: seeds %d, candidates %d, AUC %s, P@5%% %s, R@5%% %s, %d steps, %.2fs%s",
                     i + 1, len(dataset), aid, row["seed_rows"], row["candidates"], metrics.fmt(row["auc"]),
                     metrics.fmt(precision), metrics.fmt(recall), steps, row["seconds"], note)
        undefined = [c["aid"] for c in campaigns if c["auc"] is None]
        if undefined:
            log.warning("AUC undefined for %d campaign(s) whose candidates are all one class: %s",
                        len(undefined), undefined[:20])
        summary = metrics.summarize(campaigns, np.concatenate(all_labels), np.concatenate(all_scores))
        summary["seconds"] = round(time.time() - start, 2)
        payload = {"epoch": epoch, "checkpoint": ckpt, "test_data_dir": test_dir, "summary": summary,
                   "unmatched_campaigns": getattr(dataset, "unmatched", {}), "campaigns": campaigns}
        out = metrics_path(config, epoch)
        write_json(out, payload)
        log.info("epoch %d summary: AUC %s, GAUC %s, P@5%% %s, R@5%% %s over %d campaigns (%d with AUC), "
                 "%d candidates, %.1fs; metrics written to %s", epoch, metrics.fmt(summary["auc"]),
                 metrics.fmt(summary["gauc"]), metrics.fmt(summary["precision@5%"]),
                 metrics.fmt(summary["recall@5%"]), summary["campaigns"], summary["campaigns_with_auc"],
                 summary["candidates"], summary["seconds"], out)
        results.append(payload)
    return results


def main(argv=None):
    return runtime.run_cli("MetaHeac per-campaign fine-tune + evaluation", evaluate, argv)


if __name__ == "__main__":
    main()
