"""Feature schema: which columns are features, their group, width and vocabulary.

Everything the network needs to know about the data (table size, per-field row
offsets in the fused embedding table, how sequence columns pool) is derived
here from the config, never typed by hand elsewhere.

Groups:
  static   - one id per row (user profile)
  sequence - a padded id list of fixed `width` plus a `length_col`; the field's
             embedding is the mean over the first `length` ids
  ad       - one id per row, describing the campaign

Two config forms:
  hyper_parameters.max_idxs  PaddleRec's [[static], [sequence], [ad]] lists of the
                             largest id per standard Tencent column (vocabulary
                             size = max_idx + 1, as in PaddleRec's net).
  hyper_parameters.features  a list of {name, group, vocab_size[, width, length_col]}.
"""
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from metaheac.columns import COLUMNS, LABEL, TASK, TENCENT_AD, TENCENT_SEQUENCE, TENCENT_STATIC, TENCENT_WIDTHS, \
    USER_ID, length_col
from metaheac.errors import ConfigError

GROUPS = ("static", "sequence", "ad")


@dataclass(frozen=True)
class Field:
    name: str
    group: str
    vocab_size: int
    width: int = 1
    length_col: str = None
    offset: int = 0  # first row of this field in the fused embedding table
    parts: tuple = ()  # a cross of these ad fields (its id: their ids in mixed radix), not a data column


class FeatureSchema:
    """Fields in model order: static, then sequence, then ad.

    The id matrix the readers produce has one column per static field, `width`
    columns per sequence field and one per ad field, in that order:
    ids [B, C] with C = Fs + W + Fa, W = sum of sequence widths.
    """

    def __init__(self, fields, label_col=LABEL, task_col=TASK, user_id_col=USER_ID, crosses=()):
        by_group = {g: [f for f in fields if f.group == g] for g in GROUPS}
        by_group["ad"] += _cross_fields(by_group["ad"], crosses)
        if not by_group["static"] and not by_group["sequence"]:
            raise ConfigError("feature schema: at least one static or sequence (user) field is needed")
        if not by_group["ad"]:
            raise ConfigError("feature schema: at least one ad field is needed (the gates' input describes "
                              "the campaign)")
        ordered, offset = [], 0
        for g in GROUPS:
            for f in by_group[g]:
                ordered.append(Field(f.name, f.group, f.vocab_size, f.width, f.length_col, offset, f.parts))
                offset += f.vocab_size
        names = [f.name for f in ordered]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"feature schema: duplicate field names {sorted(dupes)}")
        self.fields = ordered
        self.static = [f for f in ordered if f.group == "static"]
        self.sequence = [f for f in ordered if f.group == "sequence"]
        self.ad = [f for f in ordered if f.group == "ad"]  # the data's ad fields, then the crosses
        self.data_ad = [f for f in self.ad if not f.parts]
        self.crosses = [f for f in self.ad if f.parts]
        self.label_col = label_col
        self.task_col = task_col
        self.user_id_col = user_id_col
        self.num_rows = offset  # rows of the fused embedding table

        id_fields = self.static + [f for f in self.sequence for _ in range(f.width)] + self.data_ad
        # [C] fused-table offset and vocabulary of every id column of the data
        self.col_offsets = np.array([f.offset for f in id_fields], dtype=np.int64)
        self.col_vocab = np.array([f.vocab_size for f in id_fields], dtype=np.int64)
        # per cross: (columns of its parts in the ids [C], their mixed-radix strides)
        ad_col = {f.name: self.first_ad_col + i for i, f in enumerate(self.data_ad)}
        self.cross_parts = []
        self.cross_vocab = {}  # cross name -> vocabulary of each part
        for f in self.crosses:
            vocab = self.cross_vocab[f.name] = [next(a.vocab_size for a in self.data_ad if a.name == n)
                                                for n in f.parts]
            strides = np.cumprod([1] + vocab[:0:-1])[::-1].astype(np.int64)
            self.cross_parts.append((np.array([ad_col[n] for n in f.parts], np.int64), strides))
        # [W] for each sequence id column: which sequence field, which position
        self.seq_field_of_col = np.array(
            [i for i, f in enumerate(self.sequence) for _ in range(f.width)], dtype=np.int64)
        self.seq_pos = np.array([p for f in self.sequence for p in range(f.width)], dtype=np.int64)

    def table_rows(self, ids):
        """Per-field ids of the data [n, C] (numpy) -> rows of the fused table,
        int64 [n, C + crosses]: one more column per cross of ad fields."""
        rows = ids.astype(np.int64) + self.col_offsets
        if not self.crosses:
            return rows
        crossed = [f.offset + (ids[:, cols].astype(np.int64) * strides).sum(axis=1)
                   for f, (cols, strides) in zip(self.crosses, self.cross_parts)]
        return np.concatenate([rows, np.stack(crossed, axis=1)], axis=1)

    def user_rows(self, user_ids):
        """Per-field user ids [n, Fs + W] (numpy) -> their rows of the fused table, int64."""
        return user_ids.astype(np.int64) + self.col_offsets[:self.first_ad_col]

    def id_label(self, field, value):
        """How a user reads id `value` of `field`: '36', or '36*3' for a cross."""
        if not field.parts:
            return str(value)
        digits = []
        for size in reversed(self.cross_vocab[field.name]):  # mixed radix, the last part fastest
            value, digit = divmod(value, size)
            digits.append(digit)
        return "*".join(str(d) for d in reversed(digits))

    def gate_positions(self, names=None):
        """Positions in the ad group [Fa] of the ad fields hyper_parameters.gate_fields
        names (None: all of them)."""
        key, ad_names = "hyper_parameters.gate_fields", [f.name for f in self.ad]
        if names is None:
            return list(range(len(ad_names)))
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{key} must be a non-empty list of ad field names, got {names!r}")
        unknown = [n for n in names if n not in ad_names]
        if unknown or len(set(names)) != len(names):
            raise ConfigError(f"{key}: {unknown or names} {'are not ad fields' if unknown else 'repeats a name'}; "
                              f"choose from the ad fields {ad_names}")
        return sorted(ad_names.index(n) for n in names)

    @property
    def num_user_fields(self):
        return len(self.static) + len(self.sequence)

    @property
    def seq_width(self):
        return int(sum(f.width for f in self.sequence))

    @property
    def first_ad_col(self):
        """The first ad column of the ids [n, C] and the table rows."""
        return len(self.static) + self.seq_width

    @property
    def num_id_cols(self):
        """Id columns of the data (rows have one more per cross)."""
        return len(self.col_offsets)

    def signature(self):
        """Stable hash of everything that shapes the converted arrays (crosses do not:
        they are computed from the stored ids)."""
        desc = [(f.name, f.group, f.vocab_size, f.width, f.length_col) for f in self.fields if not f.parts]
        text = json.dumps([desc, self.label_col, self.task_col, self.user_id_col])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def __repr__(self):
        return (f"FeatureSchema({len(self.static)} static, {len(self.sequence)} sequence "
                f"(width {self.seq_width}), {len(self.ad)} ad; {self.num_rows} table rows)")


MAX_CROSS_VOCAB = 1_000_000  # id combinations of one cross (its rows in every row table)


def _cross_fields(ad, crosses):
    """Fields for hyper_parameters.ad_crosses: each a list of ad field names whose
    combination of ids becomes one more ad field (a category id drawn twice is
    told apart by the product type, which summed per-field gate logits cannot)."""
    key, vocab = "hyper_parameters.ad_crosses", {f.name: f.vocab_size for f in ad}
    out = []
    for names in crosses or ():
        if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{key}: each cross is a list of two or more ad field names, got {names!r}")
        unknown = [n for n in names if n not in vocab]
        if unknown or len(set(names)) != len(names):
            raise ConfigError(f"{key}: {unknown or names} {'are not ad fields' if unknown else 'repeats a name'}; "
                              f"choose from the ad fields {list(vocab)}")
        size = int(np.prod([vocab[n] for n in names]))
        if size > MAX_CROSS_VOCAB:
            raise ConfigError(f"{key}: {names} have {size:,} id combinations (over {MAX_CROSS_VOCAB:,}); "
                              f"cross fewer or smaller fields")
        out.append(Field("*".join(names), "ad", size, parts=tuple(names)))
    return out


def _from_max_idxs(max_idxs):
    expected = (TENCENT_STATIC, TENCENT_SEQUENCE, TENCENT_AD)
    shape_ok = (isinstance(max_idxs, list) and len(max_idxs) == 3
                and all(isinstance(g, list) and len(g) == len(names) for g, names in zip(max_idxs, expected)))
    if not shape_ok:
        raise ConfigError(
            "hyper_parameters.max_idxs must be [[7 static], [7 sequence], [6 ad]] largest ids for the "
            f"standard Tencent columns {expected}; got {max_idxs!r}. For other columns use "
            "hyper_parameters.features.")
    fields = []
    for group, names, maxes in zip(GROUPS, expected, max_idxs):
        for i, (name, m) in enumerate(zip(names, maxes)):
            if not isinstance(m, int) or isinstance(m, bool) or m < 0:
                raise ConfigError(f"hyper_parameters.max_idxs: {name} must be a non-negative int, got {m!r}")
            if group == "sequence":
                fields.append(Field(name, group, m + 1, TENCENT_WIDTHS[i], length_col(name)))
            else:
                fields.append(Field(name, group, m + 1))
    return fields


def _from_features(features):
    fields = []
    for i, spec in enumerate(features):
        where = f"hyper_parameters.features[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping {{name, group, vocab_size[, width, length_col]}}")
        unknown = set(spec) - {"name", "group", "vocab_size", "width", "length_col"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        name, group, vocab = spec.get("name"), spec.get("group"), spec.get("vocab_size")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name must be a column name")
        if group not in GROUPS:
            raise ConfigError(f"{where} ({name}): group must be one of {GROUPS}, got {group!r}")
        if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
            raise ConfigError(f"{where} ({name}): vocab_size must be a positive int, got {vocab!r}")
        if group == "sequence":
            width = spec.get("width")
            if not isinstance(width, int) or isinstance(width, bool) or width < 1:
                raise ConfigError(f"{where} ({name}): sequence fields need a positive int width, got {width!r}")
            fields.append(Field(name, group, vocab, width, spec.get("length_col") or length_col(name)))
        else:
            if "width" in spec or "length_col" in spec:
                raise ConfigError(f"{where} ({name}): width/length_col apply to sequence fields only")
            fields.append(Field(name, group, vocab))
    return fields


def schema_from_config(config):
    """The FeatureSchema of a config dict (hyper_parameters.max_idxs or .features)."""
    max_idxs = config.get("hyper_parameters.max_idxs")
    features = config.get("hyper_parameters.features")
    if (max_idxs is None) == (features is None):
        raise ConfigError("set exactly one of hyper_parameters.max_idxs (PaddleRec form) and "
                          "hyper_parameters.features (explicit schema)")
    fields = _from_max_idxs(max_idxs) if features is None else _from_features(features)
    columns = {**COLUMNS, **(config.get("hyper_parameters.columns") or {})}
    return FeatureSchema(fields, columns["label"], columns["task"], columns["user_id"],
                         config.get("hyper_parameters.ad_crosses"))
