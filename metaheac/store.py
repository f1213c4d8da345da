"""Columnar task store: a processed split converted once into dense arrays.

The source format is a pickled pandas DataFrame (one row per (campaign, user)
example, list columns holding padded id arrays). Reading it is slow and
validating it row by row even slower, so the first read validates and converts
it into plain ``.npy`` arrays sorted by campaign, with per-campaign
``[start, end)`` offsets. Later runs memory-map those arrays: sampling a task
is an O(batch) slice, independent of the dataset size.

The cache lives next to the data (``.metaheac_cache/``) or, if that directory
is read-only, in ``runner.cache_dir`` / ``~/.cache/metaheac``. It is keyed by
the source's size and mtime and the schema signature, so a changed source or
schema is detected and converted again. The arrays load with
``allow_pickle=False``: string user ids are stored as a numpy unicode array.
"""
import gc
import hashlib
import json
import logging
import os
import pickle
import time

import numpy as np

from metaheac.errors import DataError
from metaheac.files import atomic_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: user ids and campaign ids keep their type (uint64, strings)
DATA_SUFFIXES = (".pkl", ".parquet")  # the formats of a split: pickled DataFrame, Parquet
_ARRAYS = ("ids", "lengths", "labels", "aids", "source_rows", "user_ids", "has_uid", "task_aids",
           "task_offsets")


def split_files(file_list, split, stages, data_dir):
    """The paths of a split's stages among `file_list` (the files of
    `data_dir`): `<split>_stage<k>` with one suffix of DATA_SUFFIXES (.pkl or
    .parquet), or one `<prefix>_stage<k>` set as PaddleRec's download script
    names them (`test_hot_stage1.pkl`). Other data files (backups, copies)
    are not read; a warning names them."""
    where = os.path.dirname(file_list[0]) if file_list else data_dir
    by_name = {os.path.basename(f): f for f in file_list}
    found = sorted(n for n in by_name if n.endswith(DATA_SUFFIXES))
    for suffix in DATA_SUFFIXES:
        ends = [f"_stage{k}{suffix}" for k in stages]
        firsts = [n[:-len(ends[0])] for n in by_name if n.endswith(ends[0])]
        prefixes = sorted(p for p in firsts if all(p + e in by_name for e in ends))
        if split in prefixes or len(prefixes) == 1:
            chosen = [(split if split in prefixes else prefixes[0]) + e for e in ends]
            ignored = [n for n in found if n not in chosen]
            if ignored:
                logger.warning("%s: reading %s only; not reading %s", where, ", ".join(chosen), ", ".join(ignored))
            return [by_name[n] for n in chosen]
    names = " and ".join(f"{split}_stage{k}.pkl" for k in stages)
    raise DataError(f"{where}: expected {names} (or .parquet), or one <prefix>_stage{stages[0]}.pkl set such as "
                    f"PaddleRec's test_hot_stage1.pkl; found {found or 'no data file'}. Rename the files or fix the "
                    f"data directory")


class TaskStore:
    """Arrays of one split, rows grouped by campaign.

    ids      [N, C] int32   raw per-field ids in schema column order
    lengths  [N, Fq] int32  sequence lengths
    labels   [N] float32    NaN for candidates nobody labelled
    aids     [N] int64      campaign of each row (sorted); uint64 for an unsigned column
    source_rows [N] int64   row position in the source DataFrame
    user_ids [N]            the user id column (schema.user_id_col) as given:
                            int64, uint64 or str (numpy 'U'); without that
                            column, source_rows; has_uid [1] says which
    task_aids [T] (as aids), task_offsets [T+1] int64: campaign t is rows
    task_offsets[t]:task_offsets[t+1]
    """

    def __init__(self, arrays, source):
        for name in _ARRAYS:
            setattr(self, name, arrays[name])
        self.source = source
        self._index = {int(a): t for t, a in enumerate(self.task_aids)}

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def uses_uid(self):
        """True if user_ids come from the data's user id column, not row positions."""
        return bool(self.has_uid[0])

    @property
    def labelled(self):
        """False for candidates nobody labelled (the labels are NaN)."""
        return not (len(self) and np.isnan(self.labels[0]))

    def user_id_name(self, user_id_col):
        """Header of the user column in audience files: the data's user id
        column, else "row" (user_ids are then row positions)."""
        return user_id_col if self.uses_uid else "row"

    @property
    def num_tasks(self):
        return int(self.task_aids.shape[0])

    def task_range(self, aid):
        t = self._index[int(aid)]
        return int(self.task_offsets[t]), int(self.task_offsets[t + 1])

    def take(self, rows):
        """ids [n, C], lengths [n, Fq], labels [n] for row indices (or a slice)."""
        return (np.asarray(self.ids[rows]), np.asarray(self.lengths[rows]),
                np.asarray(self.labels[rows]))


# ---------------------------------------------------------------- reading --

def _compact_frombuffer(buf, dtype, shape, order):
    """numpy's own unpickling of an array (`_frombuffer`), except that a 1-D
    array (an id-list cell) owns a copy of its data instead of viewing the
    pickle's buffer through two more objects: a 500k-user pool takes 1.9 GB
    to load instead of 3.1 GB. Same values, dtype and shape."""
    array = np.frombuffer(buf, dtype=dtype)
    return array.copy() if len(shape) == 1 else array.reshape(shape, order=order)


class _CompactUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("numpy") and name == "_frombuffer":
            return _compact_frombuffer
        return super().find_class(module, name)


_PICKLES_NAMED = set()  # the pickles whose trust warning this process has logged


def read_dataframe(path, warn_pickle=True):
    """A processed split as a pandas DataFrame: a pickle (which runs code on
    load: trusted files only; a warning says so once per file, unless
    warn_pickle is False) or a Parquet file (list columns as Parquet lists)."""
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty; regenerate or re-download it")
    if is_parquet(path):
        return parquet_file(path).read().to_pandas()
    if warn_pickle and os.path.abspath(path) not in _PICKLES_NAMED:
        _PICKLES_NAMED.add(os.path.abspath(path))
        logger.warning("%s: a pickle runs any code it holds when loaded: use only files you trust, and take data "
                       "from elsewhere as Parquet (python tools/convert.py %s %s)", path, path,
                       os.path.splitext(path)[0] + ".parquet")
    gc_was_on = gc.isenabled()
    gc.disable()  # unpickling makes millions of array objects (one per list cell); collecting while it runs
    try:          # only rescans them (measured: 24 s -> 10 s for a 500k-user pool)
        with open(path, "rb") as f:
            try:
                df = _CompactUnpickler(f).load()
            except (ImportError, AttributeError, TypeError):  # an older pandas' pickle: pandas' own compat path
                f.seek(0)
                df = pd.read_pickle(f)
    except (pickle.UnpicklingError, EOFError, ValueError, ImportError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: cannot be read as a pickled pandas DataFrame "
                        f"({type(exc).__name__}: {exc}); the file may be truncated or of another "
                        f"format: regenerate or re-download it") from None
    finally:
        if gc_was_on:
            gc.enable()
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: holds a {type(df).__name__}, expected a pandas DataFrame "
                        f"with one row per (campaign, user) example")
    return df


def is_parquet(path):
    return str(path).endswith(".parquet")


def parquet_file(path):
    """pyarrow's ParquetFile, or a DataError naming the file."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot be read as Parquet ({exc}); the file may be truncated or of another "
                        f"format: regenerate or re-convert it") from None


def _fail(path, col, problem, fix, row=None):
    at = f" (first at row {row})" if row is not None else ""
    raise DataError(f"{path}: column {col!r}: {problem}{at}. Fix: {fix}")


def int_column(df, col, path):
    """Column `col` as int64 ids, or a DataError naming the first bad row."""
    values = _column(df, col, path).to_numpy()
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            _fail(path, col, f"{bad.size} NaN or non-integer value(s)", "fill or drop those rows", df.index[bad[0]])
        return values.astype(np.int64)
    if values.dtype.kind not in "iub":
        _fail(path, col, f"dtype {values.dtype} is not an integer id type", "store integer ids")
    return values.astype(np.int64)


def _column(df, col, path):
    """df[col], a DataError when the name is given to several columns."""
    if not df.columns.duplicated().any():
        return df[col]
    count = int((df.columns == col).sum())
    if count > 1:
        _fail(path, col, f"{count} columns have this name", "drop or rename the duplicates")
    return df[col]


def campaign_ids(df, col, path):
    """The campaign id column: int64, or uint64 for an unsigned one (ids
    above 2^63 stay as given); a DataError naming the first bad row."""
    values = _column(df, col, path).to_numpy()
    return values.astype(np.uint64) if values.dtype.kind == "u" else int_column(df, col, path)


def user_id_values(df, col, path):
    """The user id column as given: int64 (signed), uint64 (unsigned, any
    width) or str (strings, as a numpy 'U' array); a DataError naming the
    first missing or non-integer (float) id."""
    import pandas as pd

    series = _column(df, col, path)
    missing = np.flatnonzero(series.isna().to_numpy())
    if missing.size:
        _fail(path, col, f"{missing.size} missing (NaN or empty) user id(s)",
              "fill or drop those rows: audiences name every user by this column", df.index[missing[0]])
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_unsigned_integer_dtype(dtype):
        return series.to_numpy(dtype=np.uint64)
    if pd.api.types.is_integer_dtype(dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero((values != np.round(values)) | (np.abs(values) >= 2.0**63))
        if bad.size:
            _fail(path, col, f"{bad.size} user id(s) that are not integers (e.g. {values[bad[0]]!r})",
                  "store user ids as integers or strings", df.index[bad[0]])
        return values.astype(np.int64)
    values = series.to_numpy()
    if values.dtype == object and isinstance(values[0], bytes):
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values], dtype=str)
    return np.asarray(series.astype(str).to_numpy(), dtype=str)


def _check_range(values, vocab, path, col, index):
    """values [N] or [N, W]: every id must be in [0, vocab)."""
    negative = values < 0
    if negative.any():
        rows = np.flatnonzero(negative if values.ndim == 1 else negative.any(axis=1))
        _fail(path, col, f"{int(negative.sum())} negative id(s) (e.g. {values[negative][0]}) outside [0, {vocab - 1}]: ids "
              f"count from 0",
              f"re-encode the ids into [0, {vocab - 1}] (a missing value such as -1 needs an id of its own, and "
              f"the vocabulary one more row)", index[rows[0]])
    bad = values >= vocab
    if bad.any():
        rows = np.flatnonzero(bad if values.ndim == 1 else bad.any(axis=1))
        example = values[bad][0]
        _fail(path, col, f"{int(bad.sum())} id(s) outside [0, {vocab - 1}] (e.g. {example})",
              f"raise this field's vocabulary (vocab_size, or max_idxs = largest id) to at least "
              f"{int(values.max()) + 1}, or re-encode the ids", index[rows[0]])


def _sequence_column(df, field, path, lists=None):
    if lists and field.name in lists:  # already [n, width] (read from Arrow)
        arr = lists[field.name]
    else:
        arr = _stack_cells(_column(df, field.name, path).to_numpy(), field, path)
    if arr.ndim != 2 or arr.shape[1] != field.width:
        _fail(path, field.name, f"list cells have shape {arr.shape[1:]}, expected ({field.width},)",
              f"pad/truncate lists to width {field.width} or set this field's width in the config")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            _fail(path, field.name, "NaN in id lists", "fill or drop those rows")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        _fail(path, field.name, f"list cells hold {arr.dtype}, expected integer ids", "store integer ids")
    return arr.astype(np.int64)


def _stack_cells(cells, field, path):
    """Cells holding one id array each -> [n, width]."""
    try:
        return np.stack([np.asarray(c) for c in cells])
    except ValueError:
        widths = sorted({len(c) if hasattr(c, "__len__") else -1 for c in cells[:10000]})
        _fail(path, field.name, f"list cells of different widths {widths[:5]}",
              f"pad every list to width {field.width}")


def check_columns(df_columns, needed, path):
    missing = [c for c in needed if c not in df_columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}. Fix: add them, or adjust the feature "
                        f"schema (hyper_parameters.features / max_idxs) to the columns present")
    names = list(df_columns)
    twice = [c for c in dict.fromkeys(needed) if names.count(c) > 1]
    if twice:
        _fail(path, twice[0], f"{names.count(twice[0])} columns have this name", "drop or rename the duplicates")


def _unlabelled(path, schema):
    return DataError(f"{path}: missing column(s) [{schema.label_col!r}]: training splits and seed sets need labels "
                     f"(1 converted, 0 not). Fix: add the column; only candidates may be unlabelled")


def user_columns(schema):
    """The columns holding a user's features: static, sequence and length columns."""
    return [f.name for f in schema.static + schema.sequence] + [f.length_col for f in schema.sequence]


def user_arrays(df, schema, path, lists=None):
    """The validated user features of a frame: ids [n, Fs + W] int32 in schema
    column order and sequence lengths [n, Fq] int32. lists: id-list columns
    already as [n, width] arrays, in place of the frame's cells."""
    n, index = len(df), df.index
    ids = np.empty((n, schema.first_ad_col), dtype=np.int32)
    lengths = np.empty((n, len(schema.sequence)), dtype=np.int32)
    col = 0
    for f in schema.static:
        v = int_column(df, f.name, path)
        _check_range(v, f.vocab_size, path, f.name, index)
        ids[:, col] = v
        col += 1
    for i, f in enumerate(schema.sequence):
        length = int_column(df, f.length_col, path)
        bad = np.flatnonzero((length < 0) | (length > f.width))
        if bad.size:
            _fail(path, f.length_col, f"length {length[bad[0]]} outside [0, {f.width}]",
                  f"lengths count the real ids in {f.name!r} and cannot exceed its width {f.width}", index[bad[0]])
        arr = _sequence_column(df, f, path, lists)
        # Padding is masked out by the model; its value is irrelevant, so zero it
        # rather than reject common conventions such as -1 or vocab_size.
        valid = np.arange(f.width)[None, :] < length[:, None]
        arr = np.where(valid, arr, 0)
        _check_range(arr, f.vocab_size, path, f.name, index)
        ids[:, col:col + f.width] = arr
        lengths[:, i] = length
        col += f.width
    return ids, lengths


def user_id_array(df, schema, path):
    """(the data's user ids [n] as given (user_id_values), or row positions
    when it has no user id column; whether they are the data's)."""
    if schema.user_id_col in df.columns:
        return user_id_values(df, schema.user_id_col, path), True
    return np.arange(len(df), dtype=np.int64), False


def convert_frame(df, schema, path, labelled=True):
    """Validate a DataFrame against the schema and return the store arrays.
    labelled=False: the label column may be missing (candidates nobody
    labelled); the labels are NaN then."""
    needed = ([schema.label_col] if labelled else []) + [schema.task_col] + user_columns(schema) + \
        [f.name for f in schema.data_ad]
    if labelled and schema.label_col not in df.columns and all(c in df.columns for c in needed[1:]):
        raise _unlabelled(path, schema)
    check_columns(df.columns, needed + [c for c in [schema.user_id_col] if c in df.columns], path)
    n = len(df)
    if n == 0:
        raise DataError(f"{path}: no rows. Fix: point the config at a non-empty split")
    index = df.index

    if schema.label_col in df.columns:
        labels = int_column(df, schema.label_col, path)
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            _fail(path, schema.label_col, f"labels must be 0/1, found {labels[bad[0]]}",
                  "map labels to 0 (negative) and 1 (positive); raw Tencent data uses -1 for negatives",
                  index[bad[0]])
    else:
        labels = np.full(n, np.nan)
    aids = campaign_ids(df, schema.task_col, path)

    user_feature_ids, lengths = user_arrays(df, schema, path)
    ids = np.empty((n, schema.num_id_cols), dtype=np.int32)
    col = user_feature_ids.shape[1]
    ids[:, :col] = user_feature_ids
    for f in schema.data_ad:
        v = int_column(df, f.name, path)
        _check_range(v, f.vocab_size, path, f.name, index)
        ids[:, col] = v
        col += 1

    user_ids, has_uid = user_id_array(df, schema, path)

    order = np.argsort(aids, kind="stable")
    aids = aids[order]
    task_aids, starts = np.unique(aids, return_index=True)
    return {
        "ids": ids[order], "lengths": lengths[order],
        "labels": labels[order].astype(np.float32), "aids": aids,
        "source_rows": order.astype(np.int64), "user_ids": user_ids[order],
        "has_uid": np.array([has_uid], dtype=np.int8), "task_aids": task_aids,
        "task_offsets": np.append(starts, n).astype(np.int64),
    }


# ------------------------------------------------------------------ cache --

def _writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def cache_location(source, schema, cache_dir=None):
    """Directory holding the converted arrays of `source` under `schema`."""
    source = os.path.abspath(source)
    tag = hashlib.sha1(f"{source}|{schema.signature()}|v{FORMAT_VERSION}".encode()).hexdigest()[:12]
    name = f"{os.path.basename(source)}.{tag}"
    roots = [cache_dir] if cache_dir else []
    roots += [os.path.join(os.path.dirname(source), ".metaheac_cache"),
              os.path.join(os.path.expanduser("~"), ".cache", "metaheac")]
    for root in roots:
        if _writable_dir(root):
            return os.path.join(root, name)
    raise DataError(f"{source}: no writable directory for the columnar cache; set runner.cache_dir")


def _source_key(source, schema):
    st = os.stat(source)
    return {"format": FORMAT_VERSION, "source": os.path.abspath(source), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "schema": schema.signature()}


def _load_cached(location, key):
    meta_path = os.path.join(location, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    try:
        return {n: np.load(os.path.join(location, n + ".npy"), mmap_mode="r", allow_pickle=False)
                for n in _ARRAYS}
    except (OSError, ValueError):
        return None


def _write_cache(location, key, arrays):
    def fill(tmp):
        for name in _ARRAYS:
            np.save(os.path.join(tmp, name + ".npy"), arrays[name], allow_pickle=False)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"key": key, "rows": int(arrays["labels"].shape[0])}, f)

    atomic_dir(location, fill)


def write_store(arrays, source, schema, cache_dir=None, stat_path=None):
    """Write already converted arrays as the task store of `source`, for tools
    that build a split in memory (no second unpickling). `stat_path`: the file
    whose size and mtime identify the source, e.g. a temporary file about to
    be renamed to `source` (a rename keeps both)."""
    key = {**_source_key(stat_path or source, schema), "source": os.path.abspath(source)}
    _write_cache(cache_location(source, schema, cache_dir), key, arrays)


def open_store(source, schema, cache_dir=None, labelled=True):
    """TaskStore for the split `source` (.pkl or .parquet), converting it on
    first use. labelled=False accepts a split without the label column."""
    source = os.path.abspath(source)
    if not os.path.isfile(source):
        raise DataError(f"{source}: file not found")
    key = _source_key(source, schema)
    location = cache_location(source, schema, cache_dir)
    arrays = _load_cached(location, key)
    if arrays is not None:
        logger.info("loaded %s from cache %s (%d rows)", os.path.basename(source), location,
                    arrays["labels"].shape[0])
    else:
        t0 = time.time()
        arrays = convert_frame(read_dataframe(source), schema, source, labelled)
        try:
            _write_cache(location, key, arrays)
            where = f"cached in {location}"
        except OSError as exc:  # a read-only cache is a slowdown, not a failure
            where = f"not cached ({exc})"
        logger.info("converted %s: %d rows, %d campaigns in %.1fs, %s", os.path.basename(source),
                    len(arrays["labels"]), len(arrays["task_aids"]), time.time() - t0, where)
    store = TaskStore(arrays, source)
    if labelled and not store.labelled:
        raise _unlabelled(source, schema)
    return store
