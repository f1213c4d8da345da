"""Config loading, `-o key=value` overrides and validation.

A config is a flat dict keyed by dotted names (``config.get("runner.epochs")``),
as in PaddleRec, so model code written for PaddleRec keeps working. Every key
the project reads is declared once in ``SPEC`` with its type, default and
check; anything else in a YAML file or on the command line is an error that
names the key. This module must not import paddle: the trainer reads the
config first and sets thread variables before paddle is imported.
"""
import os

import yaml


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _below_one(v):
    """in [0, 1)"""
    return 0 <= v < 1


def _fraction(v):
    """in (0, 1]"""
    return 0 < v <= 1


def _one_of(*choices):
    check = lambda v: v in choices  # noqa: E731
    check.__doc__ = "one of " + ", ".join(map(str, choices))
    return check


_positive.__doc__ = "> 0"
_non_negative.__doc__ = ">= 0"

# key: (types, default, check or None, is_path, help)
# A default of None means "not set"; the consumer says what that implies.
SPEC = {
    # -- runner ---------------------------------------------------------
    "runner.train_data_dir": (str, None, None, True, "directory with train_stage1.pkl"),
    "runner.train_reader_path": (str, "reader_train", None, False, "reader module (importlib name, relative to the config dir)"),
    "runner.use_gpu": (bool, False, None, False, "train/infer on GPU 0 (falls back to CPU with a warning if paddle has no CUDA)"),
    "runner.epochs": (int, 1, _positive, False, "meta-training epochs"),
    "runner.print_interval": (int, 10, _positive, False, "log every N meta-batches (training) / campaigns (infer)"),
    "runner.model_save_path": (str, "output_model", None, True, "checkpoints go to <model_save_path>/<epoch>/rec.pdparams"),
    "runner.model_init_path": (str, None, None, True, "checkpoint dir (or rec.pdparams file) to start training from"),
    "runner.test_data_dir": (str, None, None, True, "directory with test_stage1.pkl and test_stage2.pkl"),
    "runner.infer_reader_path": (str, "reader_test", None, False, "infer reader module"),
    "runner.infer_load_path": (str, None, None, True, "checkpoint root for infer (default: model_save_path)"),
    "runner.infer_start_epoch": (int, 0, _non_negative, False, "first checkpoint epoch to evaluate"),
    "runner.infer_end_epoch": (int, 1, _positive, False, "evaluate epochs [infer_start_epoch, infer_end_epoch)"),
    "runner.infer_train_epoch": (int, 2, _non_negative, False, "fine-tune epochs over each campaign's seed set"),
    "runner.infer_batch_size": (int, None, _positive, False, "fine-tune/scoring batch (default: hyper_parameters.batch_size)"),
    "runner.finetune_steps": (int, None, _positive, False, "fine-tune Adam steps per campaign (overrides infer_train_epoch)"),
    "runner.finetune_params": (str, "all", _one_of("all", "no_embedding", "heads"), False, "what fine-tuning adapts: all, all but the embeddings, or the heads (gates and critics)"),
    "runner.finetune_val_fraction": (float, 0.0, _below_one, False, "hold out this fraction of each seed set and keep the fine-tuned parameters with the best loss on it (0: off)"),
    "runner.finetune_patience": (int, 5, _positive, False, "early stopping: steps without improvement on the held-out seeds"),
    "runner.route_prior": (float, 0.0, _below_one, False, "before fine-tuning, try every other id of each gate field and route the campaign like the one its seeds make most probable; this is the prior probability that its own ids misdescribe it (0: off)"),
    "runner.output_dir": (str, None, None, True, "infer outputs: metrics.json, campaigns.csv, audience/, report.png (default: <infer_load_path>/<epoch>/infer_<split>)"),
    "runner.metrics_path": (str, None, None, True, "infer metrics JSON (default: <output_dir>/metrics.json)"),
    "runner.audience_fraction": (float, 0.05, _fraction, False, "audience size per campaign as a fraction of its candidates"),
    "runner.audience_count": (int, None, _positive, False, "audience size per campaign as a count (overrides audience_fraction)"),
    "runner.report_png": (bool, True, None, False, "draw report.png (per-campaign AUC vs seed-set size, global ROC)"),
    "runner.seed": (int, 2021, _non_negative, False, "seed for python, numpy and paddle; runs are reproducible"),
    "runner.cache_dir": (str, None, None, True, "where columnar caches go (default: next to the data, else ~/.cache/metaheac)"),
    "runner.num_threads": (int, 0, _non_negative, False, "MKL threads (0: all cores)"),
    "runner.nonfinite_loss": (str, "stop", _one_of("stop", "skip"), False, "NaN/inf loss: stop with an error (no checkpoint written) or skip the meta-batch"),
    "runner.prefetch": (int, 4, _non_negative, False, "meta-batches prepared ahead by the reader thread (0: no thread)"),
    # PaddleRec keys accepted for compatibility; they change nothing here.
    "runner.use_auc": (bool, True, None, False, "PaddleRec compatibility, ignored"),
    "runner.use_inference": (bool, False, None, False, "PaddleRec compatibility, ignored"),
    "runner.use_visual": (bool, False, None, False, "PaddleRec compatibility, ignored"),
    "runner.use_xpu": (bool, False, None, False, "PaddleRec compatibility, ignored"),
    "runner.use_npu": (bool, False, None, False, "PaddleRec compatibility, ignored"),
    "runner.train_batch_size": (int, None, _positive, False, "PaddleRec compatibility, ignored (use hyper_parameters.batch_size)"),
    # -- feature schema (see tools/utils/schema.py) ---------------------
    "hyper_parameters.max_idxs": (list, None, None, False, "PaddleRec form: [[7 static], [7 sequence], [6 ad]] largest ids of the standard Tencent columns"),
    "hyper_parameters.features": (list, None, None, False, "explicit schema: list of {name, group, vocab_size[, width, length_col]}"),
    "hyper_parameters.label_col": (str, "label", None, False, "label column (0/1)"),
    "hyper_parameters.task_col": (str, "aid", None, False, "campaign id column"),
    "hyper_parameters.user_id_col": (str, "uid", None, False, "user id column, optional: names users in audience files (else the stage-2 row index)"),
    # -- network --------------------------------------------------------
    "hyper_parameters.embed_dim": (int, 64, _positive, False, "embedding size E"),
    "hyper_parameters.mlp_dims": (list, [64, 64], None, False, "expert MLP layer sizes (all layers applied)"),
    "hyper_parameters.num_expert": (int, 8, _positive, False, "number of experts"),
    "hyper_parameters.num_output": (int, 5, _positive, False, "number of critics"),
    "hyper_parameters.embedding_init_std": (float, None, _positive, False, "embeddings start N(0, std); unset: per-field Xavier uniform (PaddleRec)"),
    "hyper_parameters.expert_activation": (str, "relu", _one_of("relu", "linear"), False, "expert hidden activation; linear makes each expert a linear scorer of the embeddings"),
    "hyper_parameters.wide": (bool, False, None, False, "each expert also has a logistic regression over the user ids (one weight per id and expert, starting at 0), added to the critics' logits"),
    "hyper_parameters.dropout": (float, 0.0, _below_one, False, "dropout on expert hidden units during meta-training and fine-tuning"),
    "hyper_parameters.gate": (str, "mlp", _one_of("mlp", "lookup"), False, "gate form: mlp (PaddleRec: an MLP of the mean user embedding and the gate fields' embeddings) or lookup (learnt logits per gate-field id, summed; random start)"),
    "hyper_parameters.gate_init_std": (float, 1.0, _positive, False, "lookup gates: std of the starting logits (larger: sharper initial routing)"),
    "hyper_parameters.ad_crosses": (list, None, None, False, "crosses of ad fields, e.g. [[adCategoryId, productType]]: each combination of their ids becomes one more ad field, named adCategoryId*productType, that gate_fields can name"),
    "hyper_parameters.gate_fields": (list, None, None, False, "ad fields the two gates read, their embeddings (mlp gates) or ids (lookup gates); unset: all ad fields. Leave out ids a new campaign never shares with past ones (its own campaign/advertiser id)"),
    # -- meta-learning --------------------------------------------------
    "hyper_parameters.task_count": (int, 5, _positive, False, "tasks (campaigns) per meta-batch"),
    "hyper_parameters.batch_size": (int, 1024, _positive, False, "support and query rows per task"),
    "hyper_parameters.local_lr": (float, 0.0002, _non_negative, False, "inner-loop SGD learning rate"),
    "hyper_parameters.meta_order": (int, 1, _one_of(1, 2), False, "1: first-order MAML (PaddleRec), 2: exact second order (authors)"),
    "hyper_parameters.inner_steps": (int, 1, _positive, False, "inner SGD steps per task"),
    "hyper_parameters.support_query": (str, "independent", _one_of("independent", "disjoint"), False, "support and query rows drawn independently (may overlap; authors, PaddleRec) or from disjoint halves"),
    "hyper_parameters.task_sampling": (str, "normal", _one_of("normal", "sqrt", "unit"), False, "task probability: normal ∝ rows, sqrt ∝ sqrt(rows), unit uniform"),
    "hyper_parameters.adapt_embedding": (str, "rows", _one_of("rows", "table"), False, "inner step adapts only the rows a task touches (rows, fast) or the whole table (same result)"),
    "hyper_parameters.optimizer.class": (str, "adam", _one_of("adam", "Adam"), False, "outer optimizer (Adam)"),
    "hyper_parameters.optimizer.global_learning_rate": (float, 0.001, _positive, False, "outer (meta) Adam learning rate"),
    "hyper_parameters.optimizer.local_test_learning_rate": (float, 0.001, _positive, False, "per-campaign fine-tune Adam learning rate"),
    "hyper_parameters.optimizer.weight_decay": (float, 0.0, _non_negative, False, "L2 weight decay of the outer (meta) Adam"),
    "hyper_parameters.optimizer.embedding_lr_scale": (float, 1.0, _positive, False, "learning rate of the embedding table, as a multiple of global_learning_rate (meta-training) and local_test_learning_rate (fine-tuning)"),
    "hyper_parameters.optimizer.gate_lr_scale": (float, 1.0, _positive, False, "learning rate of the two gates, as a multiple of global_learning_rate (meta-training) and local_test_learning_rate (fine-tuning)"),
    "hyper_parameters.optimizer.wide_lr_scale": (float, 1.0, _positive, False, "learning rate of the wide weights, as a multiple of global_learning_rate (meta-training) and local_test_learning_rate (fine-tuning)"),
    "hyper_parameters.optimizer.strategy": (str, "async", None, False, "PaddleRec compatibility, ignored"),
}

# Keys that hold structured values: flattening stops at them.
_LEAF_KEYS = {k for k, s in SPEC.items() if s[0] in (list, dict)}


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _LEAF_KEYS:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _unknown_key(key, where):
    close = [k for k in SPEC if k.split(".")[-1] == key.split(".")[-1]]
    hint = f" Did you mean {close[0]!r}?" if close else " See readme.md, 'Config keys'."
    return ConfigError(f"{where}: unknown config key {key!r}.{hint}")


def check_value(key, value, where="config"):
    """Return `value` coerced to the key's type, or raise ConfigError naming the key."""
    if key not in SPEC:
        raise _unknown_key(key, where)
    typ, _, check, _, _ = SPEC[key]
    if value is None:
        return None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: {key} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    if check is not None and not check(value):
        raise ConfigError(f"{where}: {key} must be {check.__doc__}, got {value!r}")
    return value


def parse_override(text):
    """'a.b=value' -> ('a.b', parsed value). Values are YAML ('[1, 2]', 'true', 'null')."""
    if "=" not in text:
        raise ConfigError(f"-o {text!r}: expected key=value, e.g. -o runner.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if SPEC.get(key, (None,))[0] is str and raw.strip().lower() not in ("null", "none", "~"):
        return key, raw.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"-o {key}: cannot parse {raw!r}: {exc}") from None
    if isinstance(value, str) and value.lower() == "none":
        value = None
    return key, value


def load_config(path, overrides=(), cwd=None):
    """Read YAML `path`, apply `overrides` ('key=value' strings), validate, fill
    defaults and resolve paths.

    Relative paths in the file are relative to the file's directory (as in
    PaddleRec); relative paths given with -o are relative to `cwd` (where the
    user typed them).
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping (runner:, hyper_parameters:)")
    config_dir = os.path.dirname(path)
    cwd = os.path.abspath(cwd or os.getcwd())

    values, base_dirs = {}, {}
    for key, value in _flatten(tree).items():
        values[key] = check_value(key, value, where=path)
        base_dirs[key] = config_dir
    for text in overrides or ():
        key, value = parse_override(text)
        values[key] = check_value(key, value, where=f"-o {key}")
        base_dirs[key] = cwd

    config = {}
    for key, (_, default, _, is_path, _) in SPEC.items():
        value = values.get(key, default)
        if is_path and isinstance(value, str) and value and not os.path.isabs(value):
            value = os.path.normpath(os.path.join(base_dirs.get(key, config_dir), value))
        config[key] = value
    _check_consistency(config, path)
    config["config_abs_dir"] = config_dir
    config["config_path"] = path
    return config


def _check_consistency(config, path):
    dims = config["hyper_parameters.mlp_dims"]
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigError(f"{path}: hyper_parameters.mlp_dims must be a non-empty list of positive ints, got {dims!r}")
    if config["runner.infer_end_epoch"] <= config["runner.infer_start_epoch"]:
        raise ConfigError(
            f"{path}: runner.infer_end_epoch ({config['runner.infer_end_epoch']}) must be greater than "
            f"runner.infer_start_epoch ({config['runner.infer_start_epoch']})")


def require(config, key):
    """The value of `key`, or a ConfigError saying how to set it."""
    value = config.get(key)
    if value is None:
        raise ConfigError(f"{config.get('config_path', 'config')}: {key} is not set; "
                          f"add it to the YAML or pass -o {key}=...")
    return value


_LR_SCALE_KEYS = {group: f"hyper_parameters.optimizer.{group}_lr_scale" for group in ("embedding", "gate", "wide")}


def lr_scale(config, group):
    """The learning-rate multiplier of a parameter group (net.param_group):
    its optimizer.*_lr_scale, 1 for groups without one (experts, critics)."""
    return config[_LR_SCALE_KEYS[group]] if group in _LR_SCALE_KEYS else 1.0


def resolved_yaml(config):
    """The resolved config as nested YAML text (written beside checkpoints)."""
    tree = {}
    for key in SPEC:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = config.get(key)
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


def add_cli_args(parser):
    parser.add_argument("-m", "--config_yaml", required=True, help="config YAML")
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[],
                        metavar="KEY=VALUE", help="override any config key, e.g. -o runner.epochs=3")
    return parser


def markdown_table():
    """The config key table of readme.md: python -m tools.utils.config"""
    rows = []
    for key, (typ, default, _, _, help_text) in SPEC.items():
        shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `{key}` | {typ.__name__} | {shown} | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
