"""The files infer and expand leave behind: metrics.json, campaigns.csv and
the ranked audience of every campaign (the figures: tools/utils/plots.py)."""
import json
import logging
import os
import re

import numpy as np
import pandas as pd

from metaheac import metrics
from metaheac.errors import ConfigError
from metaheac.files import atomic_dir, atomic_write, clean_leftovers

CAMPAIGN_COLUMNS = ["aid", "seed_rows", "seed_positives", "candidates", "candidate_positives", "auc",
                    "precision@5%", "recall@5%", *map(metrics.lift_key, metrics.LIFT_FRACTIONS), "audience_size",
                    "audience_positives", "precision@k", "recall@k", "adaptation", "adapted", "seconds"]


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
    """An explicit runner.output_dir holds one epoch's output: a ConfigError
    before anything is evaluated when the epochs to evaluate are several,
    each of which would replace the last."""
    first, end = config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]
    if config["runner.output_dir"] and end - first > 1:
        raise ConfigError(f"runner.output_dir: {config['runner.output_dir']} would hold epochs {first}..{end - 1} one "
                          f"after the other, each replacing the last; evaluate one epoch (runner.infer_end_epoch="
                          f"{first + 1}), or leave runner.output_dir unset (each epoch writes "
                          f"<infer_load_path>/<epoch>/infer_<split>/)")


def check_owner(out_dir, checkpoint, test_data_dir):
    """Refuse (ConfigError) to replace an infer output directory that holds
    the output of another checkpoint or another split: an output is replaced
    only by a rerun of the same checkpoint on the same data."""
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
    try:
        return atomic_write(path, write)
    except OSError as exc:
        raise ConfigError(f"{key}: {path} not written ({exc.strerror or exc}); free space or choose another "
                          f"{key}") from None


def write_csv(path, columns, id_name="user_id"):
    frame = pd.DataFrame(columns).rename(columns={"user_id": id_name})
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def write_campaigns(path, campaigns):
    return write_csv(path, {c: [row.get(c) for row in campaigns] for c in CAMPAIGN_COLUMNS})
