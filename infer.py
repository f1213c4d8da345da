"""Per-campaign adaptation and evaluation of a meta-trained MetaHeac model.

    python infer.py -m config.yaml [-o runner.test_data_dir=data/test_cold ...]

For each checkpoint epoch in [infer_start_epoch, infer_end_epoch) and each
campaign of runner.test_data_dir: adapt the meta-learned model to the seed
set (stage 1) as runner.adaptation says (metaheac/adapt.py), then score the
candidates (stage 2). Logs a line per campaign and a summary, and writes
runner.output_dir: metrics.json, campaigns.csv, audience/<aid>.csv (the top
candidates of each campaign, ranked) and report.png.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tools.utils.startup  # noqa: E402,F401  (first: thread settings before paddle loads)

import numpy as np  # noqa: E402

from metaheac import metrics  # noqa: E402
from metaheac.adapt import adapt  # noqa: E402
from metaheac.config import require  # noqa: E402
from metaheac.errors import ConfigError  # noqa: E402
from metaheac.files import claim  # noqa: E402
from tools.utils import distributed, plots, report, runtime  # noqa: E402
from tools.utils.checkpoint import build_network, infer_root, load_epoch, read_state  # noqa: E402
from tools.utils.progress import Progress  # noqa: E402

log = runtime.logger


OUTPUTS = ("metrics.json", "campaigns.csv", "audience", "report.png")  # what infer writes into runner.output_dir


def split_name(config):
    return os.path.basename(os.path.normpath(config["runner.test_data_dir"]))


def output_dir(config, epoch):
    report.check_one_epoch(config)  # an explicit output_dir holds one epoch
    return config["runner.output_dir"] or os.path.join(infer_root(config), str(epoch), f"infer_{split_name(config)}")


def evaluate_campaign(learned, campaign, config):
    """Adapt to the seeds, score the candidates: (result row, scores, audience)."""
    t0 = time.time()
    adapted = adapt(learned, campaign["stage1"], config)
    candidates = campaign["stage2"]
    scores = adapted.score(candidates["rows"], candidates["lengths"])
    seeds, labels = campaign["stage1"]["labels"], campaign["stage2"]["labels"]
    labelled = not np.isnan(labels).any()  # candidates nobody labelled: an audience, no AUC
    k = report.audience_size(labels.size, config)
    audience = report.ranked_audience(scores, campaign["stage2"]["user_ids"], k, labels if labelled else None)
    row = {"aid": campaign["aid"], "seed_rows": int(seeds.size), "seed_positives": int(seeds.sum()),
           "candidates": int(labels.size), "candidate_positives": None, "auc": None, "precision@5%": None,
           "recall@5%": None, **dict.fromkeys(map(metrics.lift_key, metrics.LIFT_FRACTIONS)), "audience_size": k,
           "audience_positives": None, "precision@k": None, "recall@k": None,
           "adaptation": adapted.method, "adapted": adapted.describe(), "seconds": round(time.time() - t0, 3)}
    if labelled:
        precision, recall = metrics.precision_recall_at(labels, scores, 0.05)
        hits, positives = float(audience["label"].sum()), float(labels.sum())
        row.update({"candidate_positives": int(positives), "auc": metrics.auc(labels, scores),
                    "precision@5%": precision, "recall@5%": recall, **metrics.lifts(labels, scores),
                    "audience_positives": int(hits),
                    "precision@k": hits / k, "recall@k": hits / positives if positives else None})
    return row, scores, audience


def _campaign_line(row):
    fmt = metrics.fmt
    note = "  (AUC undefined: candidates of one class)" if row["candidate_positives"] is not None and \
        row["auc"] is None else ""
    return (f"aid {row['aid']}: seeds {row['seed_rows']}, candidates {row['candidates']}, AUC {fmt(row['auc'])}, "
            f"P@5% {fmt(row['precision@5%'])}, R@5% {fmt(row['recall@5%'])}, {row['seconds']:.2f}s; "
            f"{row['adaptation']}: {row['adapted']}{note}")


def _evaluate_mine(learned, dataset, config, rank, size):
    """This rank's campaigns (i % size == rank): [(dataset position, row, labels, scores, audience)]."""
    mine = (len(dataset) - rank + size - 1) // size
    progress = Progress(mine, every=1)
    local = []
    for i, campaign in enumerate(dataset):
        if i % size != rank:
            continue
        row, scores, audience = evaluate_campaign(learned, campaign, config)
        local.append((i, row, campaign["stage2"]["labels"], scores, audience))
        log.info("[%s] %s", progress.status(len(local), "campaigns"), _campaign_line(row))
    return local


def _report(config, epoch, ckpt, dataset, gathered, out_dir, seconds):
    """Summary metrics and report files of one epoch (rank 0), written into
    `out_dir` (a temporary directory, swapped in whole by the caller): the
    payload of metrics.json."""
    campaigns = [row for _, row, _, _, _ in gathered]
    labels = np.concatenate([labels for _, _, labels, _, _ in gathered])
    scores = np.concatenate([scores for _, _, _, scores, _ in gathered])
    if np.isnan(labels).any():
        labels = None
        log.warning("the candidates in %s have no labels: AUC cannot be computed; the audience files are "
                    "written", config["runner.test_data_dir"])
    undefined = [c["aid"] for c in campaigns if c["auc"] is None and c["candidate_positives"] is not None]
    if undefined:
        log.warning("AUC undefined for %d campaign(s) whose candidates are all one class: %s",
                    len(undefined), undefined[:20])
    summary = {**metrics.summarize(campaigns, labels, scores), "seconds": round(seconds, 2)}
    # share of the positives reached against share of candidates targeted, mean over campaigns
    gains = None if labels is None else metrics.mean_gains((labels, scores) for _, _, labels, scores, _ in gathered)
    payload = {"epoch": epoch, "checkpoint": ckpt, "run_id": (read_state(ckpt) or {}).get("run_id"),
               "test_data_dir": config["runner.test_data_dir"], "summary": summary,
               "unmatched_campaigns": dataset.unmatched, "campaigns": campaigns,
               "gains": {"targeted": [round(float(f), 2) for f in metrics.GAINS_GRID], "reached": gains}}
    for _, row, _, _, audience in gathered:
        report.write_csv(os.path.join(out_dir, "audience", f"{row['aid']}.csv"), audience, dataset.user_id_name)
    report.write_json(os.path.join(out_dir, "metrics.json"), payload)
    report.write_campaigns(os.path.join(out_dir, "campaigns.csv"), campaigns)
    if config["runner.report_png"]:
        # unlabelled: the score histogram, with the audience's cut-off when there is one campaign
        cutoff = np.sort(scores)[-campaigns[0]["audience_size"]] if labels is None and len(campaigns) == 1 else None
        plots.draw_report(os.path.join(out_dir, "report.png"), split_name(config), campaigns, labels, scores,
                           gains, cutoff)
    fmt = metrics.fmt
    log.info("epoch %d summary: AUC %s, GAUC %s, P@5%% %s, R@5%% %s, lift@5%% %s over %d campaigns "
             "(%d with AUC), %d candidates, %.1fs", epoch, fmt(summary["auc"]), fmt(summary["gauc"]),
             fmt(summary["precision@5%"]), fmt(summary["recall@5%"]), fmt(summary["lift@5%"], 2),
             summary["campaigns"], summary["campaigns_with_auc"], summary["candidates"], summary["seconds"])
    return payload


def _claim_output(out_dir, checkpoint, test_data_dir):
    """Lock `out_dir` (beside it: the directory itself is replaced whole) and
    undo the leftovers of a killed infer. Refuses a directory that holds
    anything infer does not write, since replacing it would delete that, or
    the output of another checkpoint or split (report.check_owner)."""
    out_dir = os.path.abspath(out_dir)
    lock = claim(out_dir + ".lock", "runner.output_dir", os.path.dirname(out_dir), os.path.basename(out_dir))
    try:
        foreign = sorted(set(os.listdir(out_dir)) - set(OUTPUTS)) if os.path.isdir(out_dir) else []
        if foreign:
            raise ConfigError(f"runner.output_dir: {out_dir} holds {foreign[:5]}, which infer did not write and "
                              f"would replace; choose a new or empty runner.output_dir")
        report.check_owner(out_dir, checkpoint, test_data_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def evaluate(config):
    """Evaluate every configured epoch; returns the metrics.json payloads (rank 0; [] elsewhere).

    Each epoch's output directory is written under a temporary name and
    swapped in at the end: a killed infer leaves the previous output whole."""
    rank, size, _ = distributed.start(config)
    reader = runtime.load_module(config, config["runner.infer_reader_path"], "runner.infer_reader_path")
    test_dir = require(config, "runner.test_data_dir")
    dataset = reader.RecDataset(runtime.list_files(test_dir, "runner.test_data_dir"), config)
    model = build_network(config)

    results = []
    for epoch in range(config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]):
        learned, ckpt = load_epoch(config, model, epoch)
        out_dir = output_dir(config, epoch)
        error = lock = None
        if rank == 0:
            try:
                lock = _claim_output(out_dir, ckpt, test_dir)
            except ConfigError as exc:
                error = exc
        distributed.check_all(error)
        try:
            log.info("epoch %d: evaluating %s on %d campaigns of %s%s", epoch, ckpt, len(dataset), test_dir,
                     f" over {size} ranks" if size > 1 else "")
            start = time.time()
            local = _evaluate_mine(learned, dataset, config, rank, size)
            # every rank's campaigns, back in dataset order (rank 0 reports)
            gathered = sorted((item for part in distributed.gather(local) for item in part), key=lambda t: t[0])
            if rank == 0:
                payload = {}
                report.write_whole(out_dir, lambda tmp: payload.update(
                    _report(config, epoch, ckpt, dataset, gathered, tmp, time.time() - start)), "runner.output_dir")
                log.info("wrote %s: %s", out_dir, ", ".join(sorted(os.listdir(out_dir))))
                results.append(payload)
        finally:
            if lock is not None:
                lock.release()
    return results


parser, main = runtime.Cli("MetaHeac per-campaign adaptation and evaluation: metrics.json, campaigns.csv,\n"
                           "audience/<aid>.csv and report.png in runner.output_dir",
                           "python infer.py -m config.yaml -o runner.test_data_dir=data/test_cold",
                           lambda config, args: evaluate(config)).bound()


if __name__ == "__main__":
    main()
