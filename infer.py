"""Per-campaign fine-tuning and evaluation of a meta-trained MetaHeac model.

    python infer.py -m config.yaml [-o runner.test_data_dir=data/test_cold ...]

For each checkpoint epoch in [infer_start_epoch, infer_end_epoch) and each
campaign of runner.test_data_dir: start from the meta-learned parameters,
fine-tune with Adam on the seed set (test_stage1.pkl), score the candidates
(test_stage2.pkl). Logs a line per campaign and a summary, and writes
runner.output_dir: metrics.json, campaigns.csv, audience/<aid>.csv (the top
candidates of each campaign, ranked) and report.png.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools.utils import runtime  # noqa: E402
from tools.utils.config import require  # noqa: E402

log = runtime.logger


def split_name(config):
    return os.path.basename(os.path.normpath(config["runner.test_data_dir"]))


def output_dir(config, epoch):
    from tools.utils.checkpoint import infer_root
    return config["runner.output_dir"] or os.path.join(infer_root(config), str(epoch), f"infer_{split_name(config)}")


def evaluate_campaign(dy_model_class, model, campaign, config):
    """Fine-tune on the seeds, score the candidates: (result row, scores, audience)."""
    import numpy as np

    from tools.utils import metrics, report
    from tools.utils.finetune import describe_route

    t0 = time.time()
    # Seeded from (seed, aid) alone: a campaign's result does not depend on
    # which other campaigns are evaluated, in which order or on which rank.
    rng = np.random.default_rng([config["runner.seed"], campaign["aid"]])
    scores, tuned = dy_model_class.finetune_and_score(model, campaign, config, rng)
    seeds, labels = campaign["stage1"]["labels"], campaign["stage2"]["labels"]
    k = report.audience_size(labels.size, config)
    audience = report.ranked_audience(scores, campaign["stage2"]["user_ids"], k, labels)
    precision, recall = metrics.precision_recall_at(labels, scores, 0.05)
    hits, positives = float(audience["label"].sum()), float(labels.sum())
    row = {"aid": campaign["aid"], "seed_rows": int(seeds.size), "seed_positives": int(seeds.sum()),
           "candidates": int(labels.size), "candidate_positives": int(labels.sum()),
           "auc": metrics.auc(labels, scores), "precision@5%": precision, "recall@5%": recall,
           "audience_size": k, "audience_positives": int(hits),
           "precision@k": hits / k, "recall@k": hits / positives if positives else None,
           "finetune_steps": tuned.steps, "routed": describe_route(tuned.route), "seconds": round(time.time() - t0, 3)}
    return row, scores, audience


def evaluate(config):
    import numpy as np

    from tools.utils import distributed, metrics, report
    from tools.utils.checkpoint import infer_root, load_checkpoint

    rank, size, _ = distributed.start(config)
    dy_model_class = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
    reader = runtime.load_module(config, config["runner.infer_reader_path"], "runner.infer_reader_path")
    test_dir = require(config, "runner.test_data_dir")
    dataset = reader.RecDataset(runtime.list_files(test_dir, "runner.test_data_dir"), config)
    id_name = getattr(dataset, "user_id_name", "user_id")
    model = dy_model_class.create_model(config)
    model.eval()

    results = []
    for epoch in range(config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]):
        ckpt = load_checkpoint(os.path.join(infer_root(config), str(epoch)), model, key="runner.infer_load_path")
        out_dir = output_dir(config, epoch)
        n = len(dataset)
        mine = (n - rank + size - 1) // size  # campaigns rank, rank + size, ... are this rank's
        log.info("epoch %d: evaluating %s on %d campaigns of %s%s", epoch, ckpt, n, test_dir,
                 f" over {size} ranks" if size > 1 else "")
        start = time.time()
        local = []
        for i, campaign in enumerate(dataset):
            if i % size != rank:
                continue
            row, scores, audience = evaluate_campaign(dy_model_class, model, campaign, config)
            report.write_csv(os.path.join(out_dir, "audience", f"{row['aid']}.csv"), audience, id_name)
            local.append((i, row, campaign["stage2"]["labels"], scores))
            elapsed, count = time.time() - start, len(local)
            note = f"  (routed by its seeds: {row['routed']})" if row["routed"] else ""
            note += "" if row["auc"] is not None else "  (AUC undefined: candidates of one class)"
            log.info("[%d/%d] aid %s: seeds %d, candidates %d, AUC %s, P@5%% %s, R@5%% %s, %d steps, %.2fs | "
                     "elapsed %.0fs, remaining ~%.0fs%s", count, mine, row["aid"], row["seed_rows"],
                     row["candidates"], metrics.fmt(row["auc"]), metrics.fmt(row["precision@5%"]),
                     metrics.fmt(row["recall@5%"]), row["finetune_steps"], row["seconds"], elapsed,
                     elapsed / count * (mine - count), note)
        # every rank's campaigns, back in dataset order (rank 0 reports)
        gathered = sorted((item for part in distributed.gather(local) for item in part), key=lambda t: t[0])
        if rank > 0:
            continue
        campaigns = [row for _, row, _, _ in gathered]
        all_labels = [labels for _, _, labels, _ in gathered]
        all_scores = [scores for _, _, _, scores in gathered]
        undefined = [c["aid"] for c in campaigns if c["auc"] is None]
        if undefined:
            log.warning("AUC undefined for %d campaign(s) whose candidates are all one class: %s",
                        len(undefined), undefined[:20])
        labels, scores = np.concatenate(all_labels), np.concatenate(all_scores)
        summary = metrics.summarize(campaigns, labels, scores)
        summary["seconds"] = round(time.time() - start, 2)
        payload = {"epoch": epoch, "checkpoint": ckpt, "test_data_dir": test_dir, "summary": summary,
                   "unmatched_campaigns": getattr(dataset, "unmatched", {}), "campaigns": campaigns}
        files = [report.write_json(config["runner.metrics_path"] or os.path.join(out_dir, "metrics.json"), payload),
                 report.write_campaigns(os.path.join(out_dir, "campaigns.csv"), campaigns),
                 os.path.join(out_dir, "audience", "<aid>.csv")]
        if config["runner.report_png"]:
            files.append(report.draw_report(os.path.join(out_dir, "report.png"), split_name(config),
                                            campaigns, labels, scores))
        log.info("epoch %d summary: AUC %s, GAUC %s, P@5%% %s, R@5%% %s over %d campaigns (%d with AUC), "
                 "%d candidates, %.1fs", epoch, metrics.fmt(summary["auc"]), metrics.fmt(summary["gauc"]),
                 metrics.fmt(summary["precision@5%"]), metrics.fmt(summary["recall@5%"]), summary["campaigns"],
                 summary["campaigns_with_auc"], summary["candidates"], summary["seconds"])
        log.info("wrote %s", ", ".join(files))
        results.append(payload)
    return results


def main(argv=None):
    return runtime.run_cli("MetaHeac per-campaign fine-tune + evaluation", evaluate, argv)


if __name__ == "__main__":
    main()
