"""Raw Tencent Look-alike files (Tencent Ad Algorithm Competition 2018) -> MetaHeac splits.

    python tools/preprocess_tencent.py --raw-dir RAW --out-dir OUT [options]

Reads four files from RAW:

    adFeature.csv     header aid,advertiserId,campaignId,creativeId,creativeSize,adCategoryId,productId,productType
    userFeature.data  one user per line: ``uid N|age N|gender N|interest1 a b c|kw1 ...|...``
                      (fields optional, lists space separated, several GB)
    train.csv         aid,uid,label with header; label 1 / -1 (the seed rows: stage 1)
    test1_truth.csv   aid,uid,label, no header (the candidate rows: stage 2)

and writes the processed layout the readers consume, plus the columnar task
store next to each split so the first training run does not convert again:

    OUT/train/train_stage1.pkl              seed rows of the training campaigns
    OUT/test_hot/test_stage{1,2}.pkl        test campaigns with > --hot-threshold seed positives
    OUT/test_cold/test_stage{1,2}.pkl       the other test campaigns
    OUT/preprocess_summary.json             counts, campaign split, skipped rows, timings
    OUT/config_fragment.yaml                the vocabulary (hyper_parameters.max_idxs or .features);
                                            written last: its presence means the output is complete

Encoding: one vocabulary per column, fitted on the users and ads of the output
rows, shared by all splits. Static and ad ids become 1..K in raw-id order, 0 is
"missing"; list fields keep their first `width` ids, remapped to 1..K and padded
with 0, and ``*_length`` is the number of real ids (never above the width).
Labels -1 become 0. ``aid`` and ``uid`` keep their raw values.

userFeature.data is streamed in chunks of lines: only the ``uid`` of each line
is parsed, and only users of the labelled rows are parsed further and kept, in
one int32 array [users, columns]. Memory therefore grows with the labelled
users and rows, never with the size of the raw file.

Bad input: malformed lines, users without a feature line, aids without an ad
row are skipped, counted and listed (file and line numbers) in the summary; with
--strict the first one stops the run. Missing files or unusable input stop the
run with a message naming the file, the line and the fix; nothing is published
then (outputs are written under temporary names and renamed at the end).
"""
import argparse
import json
import logging
import os
import pickle
import sys
import time
from array import array
from dataclasses import dataclass
from itertools import islice

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metaheac import store as task_store  # noqa: E402
from metaheac.columns import TENCENT_AD, TENCENT_SEQUENCE, TENCENT_STATIC, TENCENT_WIDTHS, length_col  # noqa: E402
from metaheac.errors import DataError  # noqa: E402
from metaheac.files import atomic_write  # noqa: E402
from metaheac.schema import schema_from_config  # noqa: E402
from metaheac.store import open_store  # noqa: E402
from tools.utils.yaml_config import HelpFormatter  # noqa: E402
from tools.utils.progress import Progress  # noqa: E402

logger = logging.getLogger("metaheac.preprocess")

AD_FILE, USER_FILE, SEED_FILE, CANDIDATE_FILE = "adFeature.csv", "userFeature.data", "train.csv", "test1_truth.csv"
LABELLED_COLUMNS = ("aid", "uid", "label")
SPLITS = (("train", "train_stage1.pkl"), ("test_hot", "test_stage1.pkl"), ("test_hot", "test_stage2.pkl"),
          ("test_cold", "test_stage1.pkl"), ("test_cold", "test_stage2.pkl"))
FRAGMENT, SUMMARY = "config_fragment.yaml", "preprocess_summary.json"
RESERVED = {"label", "aid", "uid"}
MAX_RAW_ID = 2**31 - 1   # raw user ids are held as int32, -1 meaning missing / padding
MAX_KEY = 2**63 - 1      # aid / uid are int64
CHUNK_LINES = 20_000     # userFeature.data lines per chunk: bounded memory, vectorised uid lookup
EXAMPLES = 5             # line numbers kept per kind of skipped row


class PreprocessError(DataError):
    """Unusable raw input or options; the message names the file, the line and the fix."""


class _BadLine(ValueError):
    """One malformed line; the caller adds the file and line number."""


def _show(line, limit=80):
    """A raw line as text for a message."""
    return repr(line.strip()[:limit].decode("utf-8", "replace"))


# ------------------------------------------------------------------ layout --

@dataclass(frozen=True)
class Layout:
    """Which raw fields become which output columns.

    User columns of the raw-id matrix, in order: one per static field, then
    `width` per sequence field.
    """
    static: tuple
    sequence: tuple  # ((name, width), ...)
    ad: tuple

    @property
    def user_cols(self):
        return len(self.static) + sum(w for _, w in self.sequence)

    def field_columns(self):
        """[(name, column slice of the user matrix, is_static)] in output order."""
        out, col = [], 0
        for name in self.static:
            out.append((name, slice(col, col + 1), True))
            col += 1
        for name, width in self.sequence:
            out.append((name, slice(col, col + width), False))
            col += width
        return out

    def user_slots(self):
        """raw field name (bytes) -> (first column, width, is_static), for the line parser."""
        return {name.encode(): (sl.start, sl.stop - sl.start, static) for name, sl, static in self.field_columns()}

    def is_tencent_default(self):
        """The standard columns and widths: the only case hyper_parameters.max_idxs can describe."""
        return (list(self.static) == TENCENT_STATIC and list(self.ad) == TENCENT_AD
                and list(self.sequence) == list(zip(TENCENT_SEQUENCE, TENCENT_WIDTHS)))


def default_width(name):
    """The authors' widths: 10 for interest lists, 5 for the others (kw, topic, ...)."""
    return 10 if name.startswith("interest") else 5


def parse_sequence_option(text):
    """'interest1:10,kw1,topic1:3' -> (('interest1', 10), ('kw1', 5), ('topic1', 3))."""
    fields = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, width = item.partition(":")
        if width and (not width.isdigit() or int(width) < 1):
            raise argparse.ArgumentTypeError(f"{item!r}: the width after ':' must be a positive integer")
        fields.append((name, int(width) if width else default_width(name)))
    return tuple(fields)


def parse_list_option(text):
    return tuple(filter(None, (s.strip() for s in text.split(","))))


def check_layout(layout):
    names = list(layout.static) + [n for n, _ in layout.sequence] + list(layout.ad)
    length_cols = [length_col(n) for n, _ in layout.sequence]
    if not layout.static and not layout.sequence:
        raise PreprocessError("no user field: give --static-fields and/or --sequence-fields")
    if any(not isinstance(w, int) or w < 1 for _, w in layout.sequence):
        raise PreprocessError(f"sequence widths must be positive integers, got {list(layout.sequence)}")
    clash = sorted({n for n in names + length_cols if (names + length_cols).count(n) > 1} | (set(names) & RESERVED))
    if clash:
        raise PreprocessError(f"field names {clash} are used twice or are reserved ({sorted(RESERVED)}); "
                              f"fix --static-fields / --sequence-fields / --ad-fields")


# ---------------------------------------------------------------- problems --

class Problems:
    """Skipped input rows by (file, kind): count, first line numbers, first message.

    With strict=True the first problem raises PreprocessError instead.
    """

    def __init__(self, strict):
        self.strict = strict
        self.entries = {}

    def report(self, path, line_nos, kind, detail, fix):
        """Skip the rows at `line_nos` (1-based, ascending; an int or array); `detail` describes the first."""
        line_nos = np.atleast_1d(line_nos)
        if not line_nos.size:
            return
        message = f"{path}, line {line_nos[0]}: {detail}. Fix: {fix}"
        if self.strict:
            raise PreprocessError(message + " (or rerun without --strict to skip and count such rows)")
        entry = self.entries.setdefault((os.path.basename(path), kind),
                                        {"count": 0, "lines": [], "first": message})
        entry["count"] += int(line_nos.size)
        entry["lines"] = (entry["lines"] + line_nos[:EXAMPLES].tolist())[:EXAMPLES]

    def total(self):
        return sum(e["count"] for e in self.entries.values())

    def as_json(self):
        return [{"file": f, "kind": k, **e} for (f, k), e in self.entries.items()]

    def lines(self):
        return [f"skipped {e['count']:,} row(s) of {f}: {k} (lines {', '.join(map(str, e['lines']))}"
                f"{', ...' if e['count'] > len(e['lines']) else ''}); first: {e['first']}"
                for (f, k), e in self.entries.items()]


# ------------------------------------------------------------------ labelled --

@dataclass
class Rows:
    """Labelled rows, parallel arrays [N]: campaign, user, 0/1 label, source line number."""
    aid: np.ndarray
    uid: np.ndarray
    label: np.ndarray
    line: np.ndarray

    def __len__(self):
        return len(self.aid)

    def take(self, mask):
        return Rows(self.aid[mask], self.uid[mask], self.label[mask], self.line[mask])


def _header(first_line, path):
    """Column positions of aid, uid, label if `first_line` is a header (no numeric cell), else None."""
    cells = [c.strip().decode("utf-8-sig", "replace").lower() for c in first_line.split(b",")]
    if any(c.lstrip("-").isdigit() for c in cells):
        return None
    if sorted(cells) != sorted(LABELLED_COLUMNS):
        raise PreprocessError(f"{path}, line 1: header {cells} is not aid,uid,label. Fix: use the "
                              f"competition's {SEED_FILE} / {CANDIDATE_FILE} (columns aid,uid,label)")
    return tuple(cells.index(c) for c in LABELLED_COLUMNS)


def read_labelled(path, problems):
    """aid,uid,label rows of `path` (header optional). Labels 1 -> 1, -1 and 0 -> 0."""
    aids, uids, labels, line_nos = array("q"), array("q"), array("b"), array("q")
    order = (0, 1, 2)
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if line_no == 1:
                header = _header(line, path)
                if header is not None:
                    order = header
                    continue
            parts = line.split(b",")
            try:
                aid, uid, label = (int(parts[i]) for i in order) if len(parts) == 3 else (-1, -1, None)
            except ValueError:  # a non-integer cell
                aid = uid = label = None
            if not (label in (1, 0, -1) and 0 <= aid <= MAX_KEY and 0 <= uid <= MAX_KEY):
                if line.strip():
                    problems.report(path, line_no, "malformed line", "expected aid,uid,label as non-negative "
                                    f"integers and a label 1, -1 or 0, got {_show(line)}", "fix or delete the line")
                continue
            aids.append(aid)
            uids.append(uid)
            labels.append(label == 1)
            line_nos.append(line_no)
    if not aids:
        raise PreprocessError(f"{path}: no usable aid,uid,label row. Fix: check that the file is the "
                              f"competition's {os.path.basename(path)} and not empty or truncated")
    return Rows(_to_numpy(aids, np.int64), _to_numpy(uids, np.int64), _to_numpy(labels, np.int8),
                _to_numpy(line_nos, np.int64))


def _to_numpy(buffer, dtype):
    """An array.array as a numpy array that owns its memory (the array.array can then be freed)."""
    return np.frombuffer(buffer, dtype=dtype).copy()


# ---------------------------------------------------------------------- ads --

def read_ads(path, fields, problems):
    """adFeature.csv -> (sorted aids [A] int64, raw ids [A, len(fields)] int64, -1 = missing)."""
    with open(path, "rb") as f:
        header = [c.strip().decode("utf-8-sig", "replace") for c in f.readline().split(b",")]
        missing = [c for c in ("aid", *fields) if c not in header]
        if missing:
            raise PreprocessError(f"{path}, line 1: header {header} lacks column(s) {missing}. Fix: use the "
                                  f"competition's {AD_FILE}, or choose existing columns with --ad-fields")
        cols = [header.index(c) for c in ("aid", *fields)]
        rows = {}
        for line_no, line in enumerate(f, 2):
            cells = line.rstrip(b"\r\n").split(b",")
            try:
                if len(cells) != len(header):
                    raise _BadLine(f"{len(cells)} values where the header has {len(header)}")
                aid, *values = (int(cells[c]) if cells[c].strip() else -1 for c in cols)
                if not 0 <= aid <= MAX_KEY or not all(-1 <= v <= MAX_KEY for v in values):
                    raise _BadLine("aid missing, or an id negative or above 2**63")
            except ValueError as exc:  # _BadLine or a non-integer cell
                if line.strip():
                    problems.report(path, line_no, "malformed line", f"{exc}: {_show(line)}", "fix or delete the line")
                continue
            if aid in rows:
                problems.report(path, line_no, "duplicate aid", f"aid {aid} already has a row",
                                "keep one row per aid (the first is used)")
                continue
            rows[aid] = values
    if not rows:
        raise PreprocessError(f"{path}: no usable ad row. Fix: check the file is the competition's {AD_FILE}")
    aids = np.array(sorted(rows), dtype=np.int64)
    return aids, np.array([rows[a] for a in aids.tolist()], dtype=np.int64).reshape(len(aids), len(fields))


# -------------------------------------------------------------------- users --

def parse_user_line(line, slots, template):
    """A userFeature.data line -> raw ids (list, one per user column; -1 = missing / padding).

    Fields not in `slots` are not parsed; list fields keep their first `width` ids.
    """
    row = template[:]
    for item in line.rstrip().split(b"|")[1:]:
        name, _, values = item.partition(b" ")
        slot = slots.get(name)
        if slot is None:
            continue
        tokens = values.split()
        if not tokens:
            continue  # an empty list / missing value
        col, width, static = slot
        if not values.replace(b" ", b"").isdigit():
            raise _BadLine(f"field {name.decode(errors='replace')!r}: ids must be non-negative integers, "
                           f"got {values[:60].decode(errors='replace')!r}")
        if static and len(tokens) > 1:
            raise _BadLine(f"static field {name.decode()!r} has {len(tokens)} values; a static field takes one "
                           f"(list-valued fields belong in --sequence-fields)")
        ids = [int(t) for t in tokens[:width]]
        if max(ids) > MAX_RAW_ID:
            raise _BadLine(f"field {name.decode()!r}: id {max(ids)} is above {MAX_RAW_ID}")
        row[col:col + len(ids)] = ids
    return row


def _chunk_uids(lines, first_line_no, bad):
    """uids [k] int64 of the well-formed lines of a chunk and their positions in it.

    Lines without a leading 'uid N|' are appended to `bad` as (line number, reason).
    """
    uids, positions = array("q"), array("q")
    for i, line in enumerate(lines):
        bar = line.find(b"|")
        digits = line[4:bar] if bar >= 0 else line[4:].rstrip()
        if line.startswith(b"uid ") and digits.isdigit() and len(digits) <= 18:
            uids.append(int(digits))
            positions.append(i)
        elif line.strip():
            bad.append((first_line_no + i, "malformed line",
                        f"a line must start with 'uid N|', got {line[:40].decode(errors='replace')!r}"))
    return np.frombuffer(uids, dtype=np.int64), np.frombuffer(positions, dtype=np.int64)


def stream_users(path, wanted, layout, problems, progress_every):
    """Stream userFeature.data, keeping the users in `wanted` (sorted unique uids [U], U >= 1).

    Returns found [U] bool and raw [U, layout.user_cols] int32 (-1 = missing / padding).
    Only one chunk of lines is held at a time.
    """
    n = len(wanted)
    raw = np.full((n, layout.user_cols), -1, dtype=np.int32)
    found = np.zeros(n, dtype=bool)
    slots, template = layout.user_slots(), [-1] * layout.user_cols
    progress, next_log = Progress(os.path.getsize(path) / 2**20, every=1), progress_every
    chunk_lines = max(1, min(CHUNK_LINES, progress_every))
    line_no, kept = 0, 0
    with open(path, "rb", buffering=2**20) as f:
        while True:
            lines = list(islice(f, chunk_lines))
            if not lines:
                break
            bad = []  # (line number, kind, reason), reported in line order after the chunk
            uids, positions = _chunk_uids(lines, line_no + 1, bad)
            # vectorised membership test: a labelled uid sits at its searchsorted position
            idx = np.minimum(np.searchsorted(wanted, uids), n - 1)
            hit = wanted[idx] == uids
            rows, targets = [], []
            for pos, user in zip(positions[hit].tolist(), idx[hit].tolist()):
                if found[user]:
                    bad.append((line_no + 1 + pos, "duplicate user", f"uid {wanted[user]} already had a line"))
                    continue
                try:
                    rows.append(parse_user_line(lines[pos], slots, template))
                except _BadLine as exc:
                    bad.append((line_no + 1 + pos, "malformed line", str(exc)))
                    continue
                found[user] = True
                targets.append(user)
            for bad_line, kind, reason in sorted(bad):
                fix = "keep one line per uid (the first is used)" if kind == "duplicate user" else \
                    "fix or delete the line"
                problems.report(path, bad_line, kind, reason, fix)
            if rows:
                raw[np.array(targets)] = np.array(rows, dtype=np.int32)
            kept += len(rows)
            line_no += len(lines)
            if line_no >= next_log:
                next_log = (line_no // progress_every + 1) * progress_every
                _log_stream(path, progress, line_no, f.tell(), kept, n)
        _log_stream(path, progress, line_no, f.tell(), kept, n)
    return found, raw, line_no


def _log_stream(path, progress, lines, position, found, wanted):
    logger.info("%s: %s lines, %s/%s labelled users found, MB %s", os.path.basename(path), f"{lines:,}",
                f"{found:,}", f"{wanted:,}", progress.status(position / 2**20, "MB"))


# ---------------------------------------------------------------- encoding --

def encode(values):
    """Raw ids (any shape, -1 = missing) -> (codes int32 of the same shape, max_idx).

    Real ids become 1..K in increasing raw order and -1 becomes 0, so K is the
    largest id (vocabulary K + 1).
    """
    present = values >= 0
    vocab = np.unique(values[present])
    codes = np.zeros(values.shape, dtype=np.int32)
    codes[present] = np.searchsorted(vocab, values[present]) + 1
    return codes, len(vocab)


def encode_users(raw, used, layout):
    """Encode in place the rows `used` of the raw user matrix; max_idx per user field in layout order."""
    max_idx = {}
    for name, cols, _ in layout.field_columns():
        codes, max_idx[name] = encode(raw[used, cols])
        raw[used, cols] = codes
    return max_idx


# ------------------------------------------------------------------- splits --

def split_campaigns(aids, test_fraction, seed):
    """Sorted unique aids -> (train aids, test aids), a seeded random split; both sorted, both non-empty."""
    if len(aids) < 2:
        raise PreprocessError(f"{SEED_FILE}: {len(aids)} usable campaign(s); the train/test split needs at "
                              f"least 2. Fix: check the raw files")
    n_test = min(max(round(len(aids) * test_fraction), 1), len(aids) - 1)
    perm = np.random.default_rng(seed).permutation(len(aids))
    return np.sort(aids[perm[n_test:]]), np.sort(aids[perm[:n_test]])


def positives_per_aid(rows, aids):
    """Number of positive rows of each aid in `aids` (sorted) [len(aids)]."""
    return np.bincount(np.searchsorted(aids, rows.aid[rows.label == 1]), minlength=len(aids))


# ------------------------------------------------------------------ frames --

def build_frame(rows, user_codes, user_index, ad_codes, ad_index, layout):
    """The processed-layout DataFrame of `rows`; list cells are int64 arrays of the field's width."""
    import pandas as pd

    users = user_codes[user_index]  # [N, user_cols] int32
    cols = {"label": rows.label.astype(np.int64), "aid": rows.aid}
    lengths = {}
    for name, sl, static in layout.field_columns():
        block = users[:, sl].astype(np.int64)
        if static:
            cols[name] = block[:, 0]
        else:
            cols[name] = list(block)  # N views [width] of block: one ndarray object per cell
            lengths[length_col(name)] = (block > 0).sum(1)  # real ids are >= 1, padding 0
    cols.update(lengths)
    ads = ad_codes[ad_index]  # [N, ad fields]
    for j, name in enumerate(layout.ad):
        cols[name] = ads[:, j].astype(np.int64)
    cols["uid"] = rows.uid
    return pd.DataFrame(cols)


def schema_config(layout, max_idx):
    """Feature schema in config form: PaddleRec max_idxs for the standard layout, else features."""
    if layout.is_tencent_default():
        schema = {"max_idxs": [[max_idx[n] for n in layout.static], [max_idx[n] for n, _ in layout.sequence],
                               [max_idx[n] for n in layout.ad]]}
    else:
        schema = {"features": [{"name": n, "group": "static", "vocab_size": max_idx[n] + 1} for n in layout.static]
                  + [{"name": n, "group": "sequence", "vocab_size": max_idx[n] + 1, "width": w}
                     for n, w in layout.sequence]
                  + [{"name": n, "group": "ad", "vocab_size": max_idx[n] + 1} for n in layout.ad]}
    return {"hyper_parameters": schema}


def fragment_text(tree, raw_dir):
    import yaml

    return (f"# Vocabulary of the splits in this directory, made by tools/preprocess_tencent.py from {raw_dir}.\n"
            f"# Id 0 = missing (static/ad) or padding (lists); max_idxs = largest id, vocabulary = max_idx + 1.\n"
            f"# Paste into a config (e.g. config_big.yaml) or pass it with -o.\n"
            + yaml.safe_dump(tree, default_flow_style=None, sort_keys=False, width=200))


# ------------------------------------------------------------------ writing --

def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


class _FramePickler(pickle.Pickler):
    """Pickles a processed frame with little memory; the file loads as a plain DataFrame.

    - No memo (fast mode): the memo keeps every pickled temporary alive until
      the dump ends, ~4 KB per row here (one ndarray per list cell), more than
      the frame itself. A frame has no reference cycles, so the file holds the
      same data; a cycle would raise, never write a wrong file.
    - A list cell (a small 1-D int64 array) is written as
      numpy.array(<its ids>, 'int64') and loads as an equal int64 array.
      numpy's own reduction writes the dtype and class per cell (no memo to
      share them) and, under protocol 5, caches buffer info on every cell
      (~80 bytes each): measured, this file is 3x smaller, written 2x and
      loaded 2.5x faster.
    """

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.fast = True

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and obj.ndim == 1 and obj.dtype == np.int64 and obj.size <= 1024:
            return np.array, (obj.tolist(), "int64")
        return NotImplemented


def _pickle_frame(df, path):
    with open(path, "wb") as f:
        _FramePickler(f).dump(df)


def _write_task_store(df, schema, written, final):
    """The columnar task store of split `final`, converted from the frame still in memory.

    open_store(final) would unpickle the file again, at ~800 bytes per list
    cell (~6 KB per row, tens of GB for the real training split). The store
    is keyed by the pkl's final path, size and mtime; the rename of `written`
    to `final` keeps the size and mtime. If the run fails before the rename,
    an earlier output at `final` just loses its store (it no longer matches)
    and is converted again on first use.
    """
    arrays = task_store.convert_frame(df, schema, final)  # validates like any first read
    try:
        task_store.write_store(arrays, final, schema, stat_path=written)
    except (OSError, DataError) as exc:  # as in open_store: no cache is a slowdown, not a failure
        logger.warning("%s: task store not written (%s); the first training run will convert it", final, exc)


def write_splits(out_dir, builders, schema):
    """Write the five pkls and their task stores; returns the pkl paths.

    Each pkl is first written under a temporary name and only when all are
    written are they renamed into place, so a failure leaves earlier output
    untouched and no file that looks complete. The old summary and fragment are
    removed before the renames: a directory without config_fragment.yaml is
    incomplete.
    """
    temps = []
    try:
        for (split, name), build in zip(SPLITS, builders):
            os.makedirs(os.path.join(out_dir, split), exist_ok=True)
            final = os.path.join(out_dir, split, name)
            tmp = os.path.join(out_dir, split, f".{name}.tmp-{os.getpid()}")
            temps.append((tmp, final))
            df = build()
            _pickle_frame(df, tmp)
            _write_task_store(df, schema, tmp, final)
            logger.info("wrote %s/%s: %s rows, %d campaigns", split, name, f"{len(df):,}", df["aid"].nunique())
            del df  # one frame in memory at a time
        for old in (FRAGMENT, SUMMARY):
            if os.path.exists(os.path.join(out_dir, old)):
                os.remove(os.path.join(out_dir, old))
        for tmp, final in temps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return [final for _, final in temps]


# ------------------------------------------------------------------ pipeline --

def check_raw_dir(raw_dir):
    paths = {name: os.path.join(raw_dir, name) for name in (AD_FILE, USER_FILE, SEED_FILE, CANDIDATE_FILE)}
    missing = [name for name, p in paths.items() if not os.path.isfile(p)]
    if missing:
        raise PreprocessError(f"{raw_dir}: missing raw file(s) {missing}. Fix: put the competition's "
                              f"{AD_FILE}, {USER_FILE}, {SEED_FILE} and {CANDIDATE_FILE} in --raw-dir")
    return paths


def _drop_unknown_aids(rows, ad_aids, path, problems):
    known = np.isin(rows.aid, ad_aids)
    if not known.all():
        first = int(np.flatnonzero(~known)[0])
        problems.report(path, rows.line[~known], "aid without ad features",
                        f"aid {rows.aid[first]} has no row in {AD_FILE}", f"add the ad to {AD_FILE}")
    return rows.take(known)


def _drop_unknown_users(rows, wanted, found, path, problems):
    has = found[np.searchsorted(wanted, rows.uid)]
    if not has.all():
        first = int(np.flatnonzero(~has)[0])
        problems.report(path, rows.line[~has], "uid without features",
                        f"uid {rows.uid[first]} (aid {rows.aid[first]}) has no well-formed line in {USER_FILE}",
                        f"add the user to {USER_FILE} or drop the row")
    return rows.take(has)


def _check_nonempty(counts, hot_threshold):
    """The readers reject empty splits: say which option or input to change. counts: rows per SPLITS file."""
    for (split, name), count in zip(SPLITS, counts):
        if count:
            continue
        if split == "test_hot" and name == "test_stage1.pkl":
            why = f"no test campaign has more than {hot_threshold} seed positives: lower --hot-threshold"
        elif split == "test_cold" and name == "test_stage1.pkl":
            why = f"every test campaign has more than {hot_threshold} seed positives: raise --hot-threshold"
        elif split == "train":
            why = "no training campaign kept a seed row: check the raw files"
        else:
            why = f"none of its campaigns has a candidate row in {CANDIDATE_FILE}: check that file"
        raise PreprocessError(f"{split}/{name} would be empty: {why}. Nothing was written")


def assign_campaigns(seeds, cands, train_aids, test_aids, hot_threshold):
    """Campaigns of each split and, per output file (SPLITS order), the mask of its rows.

    Stage 1 files take seed rows, stage 2 files candidate rows. A test
    campaign is hot when it has more than `hot_threshold` positive seeds.
    """
    positives = positives_per_aid(seeds.take(np.isin(seeds.aid, test_aids)), test_aids)
    hot = positives > hot_threshold
    groups = {"train": train_aids, "test_hot": test_aids[hot], "test_cold": test_aids[~hot],
              "positives": {"test_hot": positives[hot], "test_cold": positives[~hot]}}
    masks = [np.isin((seeds if name.endswith("stage1.pkl") else cands).aid, groups[split]) for split, name in SPLITS]
    _check_nonempty([int(m.sum()) for m in masks], hot_threshold)
    return groups, masks


def _split_summary(aids, stages, positives=None):
    out = {"campaigns": len(aids)}
    for stage, rows in stages.items():
        out[f"rows_{stage}"] = len(rows)
        out[f"positives_{stage}"] = int(rows.label.sum())
    if positives is not None:
        out["seed_positives"] = {str(a): int(p) for a, p in zip(aids.tolist(), positives.tolist())}
    return out


def _summary(raw_dir, layout, options, groups, parts, users, max_idx, tree, problems, unused, seconds):
    rows = [r for r, _ in parts]
    return {
        "raw_dir": os.path.abspath(raw_dir),
        "options": {"static_fields": list(layout.static), "sequence_fields": [list(s) for s in layout.sequence],
                    "ad_fields": list(layout.ad), **options},
        **users,
        "splits": {"train": _split_summary(groups["train"], {"stage1": rows[0]}),
                   **{split: _split_summary(groups[split], {"stage1": rows[i], "stage2": rows[i + 1]},
                                            groups["positives"][split])
                      for split, i in (("test_hot", 1), ("test_cold", 3))}},
        "max_idx": max_idx, "schema": tree["hyper_parameters"],
        "skipped_total": problems.total(), "skipped": problems.as_json(), "unused": unused, "seconds": seconds,
    }


def preprocess(raw_dir, out_dir, layout=None, test_fraction=0.5, hot_threshold=2000, seed=2021,
               strict=False, progress_every=1_000_000):
    """Raw files in raw_dir -> splits, task stores, summary and fragment in out_dir; returns the summary."""
    layout = layout or Layout(tuple(TENCENT_STATIC), tuple(zip(TENCENT_SEQUENCE, TENCENT_WIDTHS)), tuple(TENCENT_AD))
    check_layout(layout)
    paths = check_raw_dir(raw_dir)
    problems, seconds, start = Problems(strict), {}, time.perf_counter()

    # 1. labelled rows and ads; the campaign split
    ad_aids, ad_raw = read_ads(paths[AD_FILE], layout.ad, problems)
    seeds, cands = (_drop_unknown_aids(read_labelled(paths[f], problems), ad_aids, paths[f], problems)
                    for f in (SEED_FILE, CANDIDATE_FILE))
    seconds["read_labelled"] = round(time.perf_counter() - start, 2)
    logger.info("read %s seed rows, %s candidate rows, %d ads", f"{len(seeds):,}", f"{len(cands):,}", len(ad_aids))
    train_aids, test_aids = split_campaigns(np.unique(seeds.aid), test_fraction, seed)
    unused = {"candidate_rows_of_training_campaigns": int(np.isin(cands.aid, train_aids).sum()),
              "candidate_rows_of_campaigns_without_seeds": int((~np.isin(cands.aid, seeds.aid)).sum())}
    cands = cands.take(np.isin(cands.aid, test_aids))
    assign_campaigns(seeds, cands, train_aids, test_aids, hot_threshold)  # fail early on an empty split

    # 2. users: only those of the labelled rows are parsed and kept
    wanted = np.unique(np.concatenate([seeds.uid, cands.uid]))
    t = time.perf_counter()
    found, user_raw, user_lines = stream_users(paths[USER_FILE], wanted, layout, problems, progress_every)
    seconds["stream_users"] = round(time.perf_counter() - t, 2)
    seeds = _drop_unknown_users(seeds, wanted, found, paths[SEED_FILE], problems)
    cands = _drop_unknown_users(cands, wanted, found, paths[CANDIDATE_FILE], problems)
    # a campaign may have lost all its seed rows to that check: its candidates cannot be used
    train_aids, test_aids = np.intersect1d(train_aids, seeds.aid), np.intersect1d(test_aids, seeds.aid)
    orphan = ~np.isin(cands.aid, test_aids)
    unused["candidate_rows_of_campaigns_without_seeds"] += int(orphan.sum())
    cands = cands.take(~orphan)
    for line in problems.lines():  # before any error below, which they may explain
        logger.warning("%s", line)
    groups, masks = assign_campaigns(seeds, cands, train_aids, test_aids, hot_threshold)

    # 3. one vocabulary per column, fitted on the output rows' users and ads
    t = time.perf_counter()
    seed_users, cand_users = np.searchsorted(wanted, seeds.uid), np.searchsorted(wanted, cands.uid)
    used_users = np.unique(np.concatenate([seed_users, cand_users]))
    max_idx = encode_users(user_raw, used_users, layout)
    used_ads = np.isin(ad_aids, seeds.aid)  # every kept candidate's campaign has seed rows
    ad_codes = np.zeros(ad_raw.shape, dtype=np.int32)
    for j, name in enumerate(layout.ad):
        ad_codes[used_ads, j], max_idx[name] = encode(ad_raw[used_ads, j])
    seconds["encode"] = round(time.perf_counter() - t, 2)

    # 4. write: pkls and task stores, then the summary, then the fragment (the output is complete)
    parts = [(seeds.take(m), seed_users[m]) if name.endswith("stage1.pkl") else (cands.take(m), cand_users[m])
             for (_, name), m in zip(SPLITS, masks)]
    tree = schema_config(layout, max_idx)
    schema = schema_from_config({f"hyper_parameters.{k}": v for k, v in tree["hyper_parameters"].items()})
    builders = [lambda r=r, u=u: build_frame(r, user_raw, u, ad_codes, np.searchsorted(ad_aids, r.aid), layout)
                for r, u in parts]
    t = time.perf_counter()
    for path in write_splits(out_dir, builders, schema):
        if not isinstance(open_store(path, schema).ids, np.memmap):  # served from the store just written
            logger.warning("%s: the task store written was not reusable and was converted again", path)
    seconds["write"] = round(time.perf_counter() - t, 2)
    seconds["total"] = round(time.perf_counter() - start, 2)

    options = {"test_fraction": test_fraction, "hot_threshold": hot_threshold, "seed": seed, "strict": strict}
    users = {"user_lines": user_lines, "labelled_users": len(wanted), "users_found": int(found.sum()),
             "users_in_output": len(used_users)}
    summary = _summary(raw_dir, layout, options, groups, parts, users, max_idx, tree, problems, unused, seconds)
    _write_text(os.path.join(out_dir, SUMMARY), json.dumps(summary, indent=1))
    _write_text(os.path.join(out_dir, FRAGMENT), fragment_text(tree, raw_dir))
    _log_summary(summary, out_dir)
    return summary


def _log_summary(summary, out_dir):
    s = summary["splits"]
    logger.info("train: %d campaigns, %s rows | test_hot: %d campaigns, %s seeds / %s candidates | "
                "test_cold: %d campaigns, %s seeds / %s candidates", s["train"]["campaigns"],
                f"{s['train']['rows_stage1']:,}", s["test_hot"]["campaigns"], f"{s['test_hot']['rows_stage1']:,}",
                f"{s['test_hot']['rows_stage2']:,}", s["test_cold"]["campaigns"],
                f"{s['test_cold']['rows_stage1']:,}", f"{s['test_cold']['rows_stage2']:,}")
    logger.info("%s: %s lines, %s of %s labelled users found, %s in the output", USER_FILE,
                f"{summary['user_lines']:,}", f"{summary['users_found']:,}", f"{summary['labelled_users']:,}",
                f"{summary['users_in_output']:,}")
    logger.info("skipped rows: %s; unused rows: %s", f"{summary['skipped_total']:,}",
                ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary["unused"].items()))
    schema = summary["schema"]
    if "max_idxs" in schema:
        logger.info("vocabulary: -o 'hyper_parameters.max_idxs=%s' (also in %s)",
                    json.dumps(schema["max_idxs"]).replace(" ", ""), os.path.join(out_dir, FRAGMENT))
    else:
        logger.info("vocabulary (hyper_parameters.features) in %s", os.path.join(out_dir, FRAGMENT))
    logger.info("done in %.1fs (%s)", summary["seconds"]["total"],
                ", ".join(f"{k} {v}s" for k, v in summary["seconds"].items() if k != "total"))


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
        epilog="example:\n  python tools/preprocess_tencent.py --raw-dir raw --out-dir data_big")
    ap.add_argument("--raw-dir", required=True, help=f"directory with {AD_FILE}, {USER_FILE}, {SEED_FILE}, "
                                                     f"{CANDIDATE_FILE}")
    ap.add_argument("--out-dir", required=True, help="output directory (train/, test_hot/, test_cold/)")
    ap.add_argument("--static-fields", type=parse_list_option, default=",".join(TENCENT_STATIC),
                    help="single-valued user fields")
    ap.add_argument("--sequence-fields", type=parse_sequence_option,
                    default=",".join(f"{n}:{w}" for n, w in zip(TENCENT_SEQUENCE, TENCENT_WIDTHS)),
                    help="list user fields as NAME[:WIDTH]; default width 10 for interest*, else 5")
    ap.add_argument("--ad-fields", type=parse_list_option, default=",".join(TENCENT_AD),
                    help=f"{AD_FILE} columns")
    ap.add_argument("--test-fraction", type=float, default=0.5, help="share of campaigns held out for test")
    ap.add_argument("--hot-threshold", type=int, default=2000,
                    help="a test campaign is hot if it has more seed positives than this, else cold")
    ap.add_argument("--seed", type=int, default=2021, help="seed of the train/test campaign split")
    ap.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    ap.add_argument("--progress-every", type=int, default=1_000_000, help=f"log progress every N {USER_FILE} lines")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    if not 0.0 < args.test_fraction < 1.0:
        ap.error("--test-fraction must be in (0, 1)")
    if args.progress_every < 1 or args.hot_threshold < 0:
        ap.error("--progress-every must be >= 1 and --hot-threshold >= 0")

    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO, force=True)
    layout = Layout(args.static_fields, args.sequence_fields, args.ad_fields)
    try:
        preprocess(args.raw_dir, args.out_dir, layout, args.test_fraction, args.hot_threshold, args.seed,
                   args.strict, args.progress_every)
    except (PreprocessError, OSError) as exc:
        logger.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
