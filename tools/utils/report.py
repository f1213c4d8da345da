"""What the runs leave behind: infer's metrics.json, campaigns.csv, the ranked
audience of every campaign and report.png; training's train.png."""
import glob
import json
import logging
import os
import re

import numpy as np

from metaheac.files import atomic_dir, atomic_write, clean_leftovers, is_leftover
from tools.utils import metrics

CAMPAIGN_COLUMNS = ["aid", "seed_rows", "seed_positives", "candidates", "candidate_positives", "auc",
                    "precision@5%", "recall@5%", *map(metrics.lift_key, metrics.LIFT_FRACTIONS), "audience_size",
                    "audience_positives", "precision@k", "recall@k", "finetune_steps", "routed", "corrected",
                    "seconds"]


def audience_size(n_candidates, config):
    count = config.get("runner.audience_count")
    k = count if count else metrics.top_count(config["runner.audience_fraction"], n_candidates)
    return int(min(max(k, 1), n_candidates))


def ranked_audience(scores, user_ids, k, labels=None):
    """Top-k users by score (ties keep candidate order): dict of columns. A
    user id found in several candidates is listed once, with its best one;
    user ids keep their dtype (uint64, strings)."""
    order = np.argsort(-scores, kind="stable")
    _, first = np.unique(user_ids[order], return_index=True)
    top = order[np.sort(first)][:k]
    out = {"rank": np.arange(1, top.size + 1), "user_id": user_ids[top], "score": scores[top]}
    if labels is not None:
        out["label"] = labels[top].astype(np.int64)
    return out


def check_one_epoch(config):
    """An explicit runner.output_dir (or metrics_path) holds one epoch's
    output: a ConfigError before anything is evaluated when the epochs to
    evaluate are several, each of which would replace the last."""
    from metaheac.errors import ConfigError

    first, end = config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]
    for key in ("runner.output_dir", "runner.metrics_path"):
        if config[key] and end - first > 1:
            raise ConfigError(f"{key}: {config[key]} would hold epochs {first}..{end - 1} one after the other, each "
                              f"replacing the last; evaluate one epoch (runner.infer_end_epoch="
                              f"{first + 1}), or leave {key} unset (each epoch writes "
                              f"<infer_load_path>/<epoch>/infer_<split>/)")


def check_owner(out_dir, checkpoint, test_data_dir):
    """Refuse (ConfigError) to replace an infer output directory that holds
    the output of another checkpoint or another split: an output is replaced
    only by a rerun of the same checkpoint on the same data."""
    from metaheac.errors import ConfigError

    try:
        with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as f:
            held = json.load(f)
    except (OSError, ValueError):
        return
    same = lambda a, b: bool(a) and bool(b) and os.path.realpath(a) == os.path.realpath(b)  # noqa: E731
    if not isinstance(held, dict) or (same(held.get("checkpoint"), checkpoint)
                                      and same(held.get("test_data_dir"), test_data_dir)):
        return
    raise ConfigError(f"runner.output_dir: {out_dir} holds the output of {held.get('checkpoint')} on "
                      f"{held.get('test_data_dir')}, which this run ({checkpoint} on {test_data_dir}) would replace; "
                      f"choose another runner.output_dir, or delete that one first")


def write_whole(final, fill, key):
    """metaheac.files.atomic_dir(final, fill), a write failure (full disk,
    read-only) as a ConfigError naming `final` and the option `key` to change:
    nothing of the new output is in place then, and an older one stands."""
    from metaheac.errors import ConfigError

    existed = os.path.exists(final)
    try:
        return atomic_dir(final, fill)
    except OSError as exc:
        raise ConfigError(f"{key}: {final} not written ({exc.strerror or exc}); "
                          f"{'the previous output there is intact' if existed else 'nothing of it was written'}. "
                          f"Free space or choose another {key}") from None


EXPAND_FILE = re.compile(r"(-?\d+|summary)\.csv")  # what tools/expand.py writes into an --out directory


def claim_out(out, key="--out"):
    """Before tools/expand.py does any work: `out` (FILE.csv or a directory)
    can be written, a directory holds nothing expand did not write (it is
    replaced whole), and the leftovers of a killed expand are undone."""
    from metaheac.errors import ConfigError

    final = os.path.abspath(out)
    parent, is_file = os.path.dirname(final), out.endswith(".csv")
    try:
        os.makedirs(parent, exist_ok=True)
        probe = f"{final}.tmp-{os.getpid()}"  # the name an atomic write would use
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"{key} {out}: cannot write in {parent} ({exc.strerror or exc}); choose a writable "
                          f"{key}") from None
    for note in clean_leftovers(parent, os.path.basename(final)):
        logging.getLogger("metaheac").warning("%s", note)
    if os.path.isdir(final) and is_file:
        raise ConfigError(f"{key} {out}: is a directory; give a new FILE.csv")
    if os.path.exists(final) and not is_file:
        if not os.path.isdir(final):
            raise ConfigError(f"{key} {out}: is a file; give a directory, or FILE.csv for one campaign")
        foreign = sorted(n for n in os.listdir(final) if not EXPAND_FILE.fullmatch(n))
        if foreign:
            raise ConfigError(f"{key} {out}: holds {foreign[:5]}, which expand did not write and would replace; "
                              f"choose a new or empty directory")


def write_expanded(out, audiences, summary, id_name, key="--out"):
    """tools/expand.py's outputs, whole or not at all: `audiences` {final
    path: columns} and, for a directory `out`, summary.csv (`summary`:
    columns), written aside and swapped in (claim_out has checked `out`);
    a failed write is a ConfigError and leaves an older output as it was."""
    from metaheac.errors import ConfigError

    if out.endswith(".csv"):
        [(path, columns)] = audiences.items()
        try:
            return write_csv(path, columns, id_name)
        except OSError as exc:
            raise ConfigError(f"{key}: {path} not written ({exc.strerror or exc}); free space or choose another "
                              f"{key}") from None

    def fill(tmp):
        for path, columns in audiences.items():
            write_csv(os.path.join(tmp, os.path.basename(path)), columns, id_name)
        write_csv(os.path.join(tmp, "summary.csv"), summary)
    return write_whole(os.path.abspath(out), fill, key)


def write_json(path, payload, key=None):
    """Write `payload` to `path` whole; with `key` (the option naming the
    path), a failed write is a ConfigError saying so."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    if key is None:
        return atomic_write(path, write)
    from metaheac.errors import ConfigError
    try:
        return atomic_write(path, write)
    except OSError as exc:
        raise ConfigError(f"{key}: {path} not written ({exc.strerror or exc}); free space or choose another "
                          f"{key}") from None


def write_csv(path, columns, id_name="user_id"):
    import pandas as pd

    frame = pd.DataFrame(columns).rename(columns={"user_id": id_name})
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def write_campaigns(path, campaigns):
    return write_csv(path, {c: [row.get(c) for row in campaigns] for c in CAMPAIGN_COLUMNS})


def _pyplot():
    """pyplot on the Agg backend: files only, no display needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    _pyplot().close(fig)
    return path


def sibling_splits(path, split):
    """{split: metrics.json payload} of the other infer_* outputs next to `path`'s
    directory (the same checkpoint), so hot and cold share one report."""
    out = {}
    for other in glob.glob(os.path.join(os.path.dirname(os.path.dirname(path)), "infer_*", "metrics.json")):
        name = os.path.basename(os.path.dirname(other))[len("infer_"):]
        if name != split and not is_leftover(os.path.dirname(other)):
            with open(other, encoding="utf-8") as f:
                out[name] = json.load(f)
    return out


def _seed_size_axis(ax, sizes):
    """Log x-axis labelled at 1-2-5 steps when the sizes span more than a
    decade; linear otherwise, where a log axis would show no labelled tick."""
    from matplotlib import ticker

    if min(sizes) > 0 and max(sizes) > 10 * min(sizes):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _auc_panel(ax, series):
    rows_by_split = {name: [r for r in rows if r["auc"] is not None] for name, rows in sorted(series.items())}
    sizes = [r["seed_rows"] for rows in rows_by_split.values() for r in rows]
    for (name, rows), marker in zip(rows_by_split.items(), "osd^v<>"):
        if rows:
            ax.scatter([r["seed_rows"] for r in rows], [r["auc"] for r in rows], marker=marker, label=name, alpha=0.8)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if sizes:
        _seed_size_axis(ax, sizes)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no campaign with a defined AUC", ha="center", transform=ax.transAxes)
    ax.set_xlabel("seed-set size (stage-1 rows)")
    ax.set_ylabel("campaign AUC")
    ax.set_title("Per-campaign AUC vs seed-set size")


def _roc_panel(ax, split, labels, scores):
    if labels.min() != labels.max():
        fpr, tpr = metrics.roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{split} (AUC {metrics.auc(labels, scores):.3f})")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "ROC undefined: candidates of one class", ha="center", transform=ax.transAxes)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Global ROC ({split}, all candidates pooled)")


def _gains_panel(ax, curves):
    """Cumulative gains, one curve per split ({split: reached at each of GAINS_GRID})."""
    from matplotlib import ticker

    at = int(np.argmin(np.abs(metrics.GAINS_GRID - 0.10)))
    for name, reached in sorted(curves.items()):
        (line,) = ax.plot(metrics.GAINS_GRID, reached, label=f"{name}: top 10% reaches {reached[at]:.0%}")
        # the points of campaigns.csv's lift@k columns
        ax.scatter(metrics.LIFT_FRACTIONS, np.interp(metrics.LIFT_FRACTIONS, metrics.GAINS_GRID, reached), s=12,
                   color=line.get_color())
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="random")
    if not curves:
        ax.text(0.5, 0.5, "gains undefined: no positive candidate", ha="center", transform=ax.transAxes)
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_xlabel("candidates targeted (top by score, per campaign)")
    ax.set_ylabel("positives reached")
    ax.set_title("Cumulative gains (mean over campaigns)")
    ax.legend(loc="lower right")


def _histogram_panel(ax, split, scores, cutoff):
    ax.hist(scores, bins=50, color="tab:blue", alpha=0.8)
    if cutoff is not None:
        chosen = int((scores >= cutoff).sum())
        ax.axvline(cutoff, color="tab:red", ls="--",
                   label=f"cut-off {cutoff:.4g}: top {chosen:,} of {scores.size:,}")
        ax.legend(loc="upper right")
    ax.set_xlabel("score (click probability)")
    ax.set_ylabel("candidates")
    ax.set_title(f"Scores of the unlabelled pool ({split})")


def report_figure(split, campaigns, labels, scores, gains=None, cutoff=None, siblings=None):
    """The report as a matplotlib Figure.

    Per-campaign AUC against seed-set size (this split and `siblings`,
    {split: metrics.json payload}), then, with labels, this split's global ROC
    and the cumulative gains (`gains`: the mean over campaigns, a list over
    GAINS_GRID; by default the candidates' own, as one campaign; siblings'
    from their payloads). With labels=None (an unlabelled pool), the score
    histogram and the audience's score `cutoff` instead.
    """
    plt = _pyplot()
    siblings = siblings or {}
    scores = np.asarray(scores)
    fig, axes = plt.subplots(1, 2 if labels is None else 3, figsize=(11 if labels is None else 16, 4.6))
    _auc_panel(axes[0], {split: campaigns, **{name: p["campaigns"] for name, p in siblings.items()}})
    if labels is None:
        _histogram_panel(axes[1], split, scores, cutoff)
    else:
        labels = np.asarray(labels)
        _roc_panel(axes[1], split, labels, scores)
        curves = {name: p["gains"]["reached"] for name, p in siblings.items() if (p.get("gains") or {}).get("reached")}
        own = gains if gains is not None else metrics.gains(labels, scores)
        if own is not None:
            curves[split] = own
        _gains_panel(axes[2], curves)
    fig.tight_layout()
    return fig


def draw_report(path, split, campaigns, labels, scores, gains=None, cutoff=None):
    """Write report_figure(...) to `path` (PNG), with the sibling infer_*
    outputs of the same checkpoint."""
    return _save(report_figure(split, campaigns, labels, scores, gains, cutoff, sibling_splits(path, split)), path)


def training_figure(step_losses, epoch_ends, epoch_losses, first_epoch=0, validation=None):
    """The training curve as a matplotlib Figure: every meta-step's loss
    (faint; non-finite ones, skipped batches, left out), its exponential
    moving average, and each epoch's mean loss over that epoch's steps.

    epoch_ends: meta-steps done by the end of each epoch (epochs first_epoch, ...).
    validation: [(meta-step, GAUC)], the meta-validation curve
    (runner.meta_val_fraction), drawn on a second axis when given.
    """
    import pandas as pd
    from matplotlib import ticker

    plt = _pyplot()
    losses = np.asarray(step_losses, dtype=np.float64)
    steps = np.arange(1, losses.size + 1)
    finite = np.isfinite(losses)
    span = max(2, losses.size // 25)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ax.plot(steps[finite], losses[finite], lw=0.6, alpha=0.35, color="tab:blue", label="meta-step loss")
    ax.plot(steps[finite], pd.Series(losses[finite]).ewm(span=span).mean(), lw=1.8, color="tab:blue",
            label=f"smoothed (EMA, span {span} steps)")
    start = 0
    for i, (end, mean) in enumerate(zip(epoch_ends, epoch_losses)):
        ax.hlines(mean, start + 0.5, end + 0.5, colors="tab:red", lw=2.2, label=None if i else "epoch mean")
        ax.axvline(end + 0.5, color="grey", lw=0.6, ls=":")
        ax.text((start + end + 1) / 2, 1.0, f"epoch {first_epoch + i}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
        start = end
    if validation:
        at, value = zip(*validation)
        right = ax.twinx()
        right.plot(at, value, "o-", ms=3, color="tab:green", label="meta-validation GAUC")
        right.set_ylabel("meta-validation GAUC", color="tab:green")
        right.legend(loc="upper center")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("meta-step (this run)")
    ax.set_ylabel("loss")
    ax.set_title("Training loss", pad=16)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def draw_training(path, step_losses, epoch_ends, epoch_losses, first_epoch=0, validation=None):
    """Write training_figure(...) to `path` (PNG)."""
    return _save(training_figure(step_losses, epoch_ends, epoch_losses, first_epoch, validation), path)
