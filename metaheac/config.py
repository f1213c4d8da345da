"""Every config key the model reads: type, default, check and meaning.

A config is a flat dict keyed by dotted names (``config["runner.epochs"]``),
as PaddleRec's loader makes it, so the model runs both under this package's
``tools/trainer.py`` (strict: unknown keys are errors, see
tools/utils/yaml_config.py) and under PaddleRec's own trainer, whose plain
dict gets the defaults here (`with_defaults`). The defaults are the shipped
algorithm (config.yaml); config_paddlerec.yaml spells out PaddleRec's.
"""
import difflib
from typing import Any, Callable, NamedTuple, Optional

from metaheac.columns import COLUMNS
from metaheac.errors import ConfigError

ADAPTATIONS = ("mixture", "finetune", "routed")  # metaheac/adapt.py
META_VAL_INTERVAL = 20  # meta-steps between meta-validation checks


def _check(doc, test):
    test.__doc__ = doc
    return test


POSITIVE = _check("> 0", lambda v: v > 0)
NON_NEGATIVE = _check(">= 0", lambda v: v >= 0)
BELOW_ONE = _check("in [0, 1)", lambda v: 0 <= v < 1)
FRACTION = _check("in (0, 1]", lambda v: 0 < v <= 1)
NON_EMPTY = _check("a non-empty path", lambda v: bool(v.strip()))


def one_of(*choices):
    return _check("one of " + ", ".join(map(str, choices)), lambda v: v in choices)


class Key(NamedTuple):
    type: type
    default: Any = None        # None: not set; the consumer says what that implies
    check: Optional[Callable] = None
    help: str = ""
    path: bool = False         # a path: relative to the config file (or to the cwd with -o)


def _section(prefix, keys):
    return {f"{prefix}.{name}": key for name, key in keys.items()}


SPEC = {
    **_section("runner", {
        "train_data_dir": Key(str, help="directory with train_stage1 (.pkl or .parquet)", path=True),
        "train_reader_path": Key(str, "reader_train", help="reader module (importlib name, relative to the config dir)"),
        "use_gpu": Key(bool, False, help="train/infer on GPU 0 (falls back to CPU with a warning if paddle has no CUDA)"),
        "epochs": Key(int, 8, POSITIVE, "meta-training epochs: a budget when meta-validation stops training"),
        "print_interval": Key(int, 10, POSITIVE, "log every N meta-batches (training) / campaigns (infer)"),
        "model_save_path": Key(str, "output_model", NON_EMPTY,
                               "checkpoints go to <model_save_path>/<epoch>/rec.pdparams", path=True),
        "overwrite": Key(bool, False, help="train into a model_save_path that holds another run's checkpoints, or "
                                           "epochs this run writes again: they move, with their infer reports, to "
                                           "<model_save_path>/replaced-<run id>/ (false: refuse to start)"),
        "meta_val_fraction": Key(float, 0.1, BELOW_ONE,
                                 "share of the training campaigns held out for meta-validation: every "
                                 f"{META_VAL_INTERVAL} meta-steps the network ranks their users once a seed set has "
                                 "routed them (runner.adaptation=routed), and each epoch's checkpoint keeps the best "
                                 "step so far (0: off, every checkpoint is the last step's)"),
        "meta_val_patience": Key(int, 10, NON_NEGATIVE,
                                 "stop training after this many meta-validation checks without a better GAUC; the "
                                 "epochs left get the best parameters (0: train the whole budget)"),
        "model_init_path": Key(str, help="checkpoint dir (or rec.pdparams file) to start training from", path=True),
        "test_data_dir": Key(str, help="directory with test_stage1 and test_stage2 (.pkl or .parquet)", path=True),
        "infer_reader_path": Key(str, "reader_test", help="infer reader module"),
        "infer_load_path": Key(str, help="checkpoint root for infer, expand and export (default: model_save_path)",
                               path=True),
        "infer_start_epoch": Key(int, None, NON_NEGATIVE,
                                 "first checkpoint epoch to evaluate (default: infer_end_epoch - 1)"),
        "infer_end_epoch": Key(int, None, POSITIVE,
                               "evaluate epochs [infer_start_epoch, infer_end_epoch) (default: epochs, so the last)"),
        "adaptation": Key(str, "mixture", one_of(*ADAPTATIONS),
                          "how a campaign's seeds adapt the meta-learned model (metaheac/adapt.py): mixture (they "
                          "weigh which past campaigns explain them, then correct that mixture on their own user "
                          "ids as far as cross-validation on them says), finetune (Adam epochs on the seeds, "
                          "PaddleRec) or routed (the mixture of the network's routings alone)"),
        "route_prior": Key(float, 0.1, BELOW_ONE,
                           "prior probability that a campaign's own gate ids misdescribe it: mixture and routed "
                           "share it among the other gate ids training saw and the group regressions, finetune "
                           "re-routes the campaign to the most probable one first (0: its own ids alone)"),
        "infer_train_epoch": Key(int, 5, NON_NEGATIVE, "runner.adaptation=finetune: Adam epochs over a campaign's "
                                 "seeds"),
        "infer_batch_size": Key(int, 64, POSITIVE, "runner.adaptation=finetune: rows per Adam step"),
        "output_dir": Key(str, help="infer outputs: metrics.json, campaigns.csv, audience/, report.png "
                                    "(default: <infer_load_path>/<epoch>/infer_<split>)", path=True),
        "audience_fraction": Key(float, 0.05, FRACTION,
                                 "audience size per campaign as a fraction of its candidates"),
        "audience_count": Key(int, None, POSITIVE,
                              "audience size per campaign as a count (overrides audience_fraction)"),
        "report_png": Key(bool, True, help="draw infer's report.png (AUC vs seed-set size, ROC, gains) and "
                                           "training's train.png (loss curve)"),
        "seed": Key(int, 2021, NON_NEGATIVE, "seed for python, numpy and paddle; runs are reproducible"),
        "cache_dir": Key(str, help="where columnar caches go (default: next to the data, else "
                                   "~/.cache/metaheac)", path=True),
        "nonfinite_loss": Key(str, "stop", one_of("stop", "skip"),
                              "NaN/inf loss: stop with an error (no checkpoint written) or skip the meta-batch"),
    }),
    **_section("hyper_parameters", {
        # -- feature schema (metaheac/schema.py) --
        "max_idxs": Key(list, help="PaddleRec form: [[7 static], [7 sequence], [6 ad]] largest ids of the "
                                   "standard Tencent columns"),
        "features": Key(list, help="explicit schema: list of {name, group, vocab_size[, width, length_col]}"),
        "columns": Key(dict, help=f"the data's label, campaign and user id columns (default {dict(COLUMNS)}); the "
                                  "user id column is optional and names users in audience files"),
        "ad_crosses": Key(list, help="crosses of ad fields, e.g. [[adCategoryId, productType]]: each combination "
                                     "of their ids becomes one more ad field, named adCategoryId*productType, "
                                     "that gate_fields can name"),
        "gate_fields": Key(list, help="ad fields the two gates read, their embeddings (mlp gates) or ids (lookup "
                                      "gates); unset: all ad fields"),
        # -- network --
        "embed_dim": Key(int, 32, POSITIVE, "embedding size E"),
        "mlp_dims": Key(list, [32], help="expert MLP layer sizes"),
        "num_expert": Key(int, 16, POSITIVE, "number of experts"),
        "num_output": Key(int, 5, POSITIVE, "number of critics"),
        "wide": Key(bool, True, help="each expert also has a logistic regression over the user ids (one weight "
                                     "per id and expert, starting at 0), added to the critics' logits"),
        "gate": Key(str, "lookup", one_of("mlp", "lookup"),
                    "gate form: lookup (learnt logits per gate-field id, summed; random start) or mlp (PaddleRec: "
                    "an MLP of the mean user embedding and the gate fields' embeddings)"),
        "campaign_clusters": Key(int, 8, NON_NEGATIVE,
                                 "group the training campaigns into at most this many by what their users click "
                                 "and fit one logistic regression over each group's rows, before meta-training "
                                 "(groups.npz beside each checkpoint); runner.adaptation=mixture weighs them with "
                                 "the network's routings (metaheac/groups.py; 0: none)"),
        # -- meta-learning --
        "task_count": Key(int, 5, POSITIVE, "tasks (campaigns) per meta-batch, drawn in proportion to their rows"),
        "batch_size": Key(int, 256, POSITIVE, "support and query rows per task"),
        "local_lr": Key(float, 0.0002, NON_NEGATIVE, "inner-loop SGD learning rate (0: Pooled, no inner step)"),
        "meta_order": Key(int, 1, one_of(1, 2), "1: first-order MAML (PaddleRec), 2: exact second order (authors)"),
        "inner_steps": Key(int, 1, POSITIVE, "inner SGD steps per task"),
        "optimizer.global_learning_rate": Key(float, 0.0005, POSITIVE, "outer (meta) Adam learning rate"),
        "optimizer.local_test_learning_rate": Key(float, 0.0003, POSITIVE,
                                                  "runner.adaptation=finetune: Adam learning rate"),
        "optimizer.weight_decay": Key(float, 0.0001, NON_NEGATIVE, "L2 weight decay of the outer (meta) Adam"),
        "optimizer.gate_lr_scale": Key(float, 10.0, POSITIVE,
                                       "learning rate of the two gates, as a multiple of the meta-training and the "
                                       "fine-tuning rates: the gates learn the routing before the embeddings "
                                       "memorise the rows"),
        "optimizer.wide_lr_scale": Key(float, 30.0, POSITIVE,
                                       "learning rate of the wide weights, as a multiple of the meta-training and "
                                       "the fine-tuning rates: they start at 0 and must reach a regression's size "
                                       "in a few hundred steps"),
    }),
}

# PaddleRec's keys that change nothing here: accepted so its configs load.
IGNORED = {
    **{f"runner.{name}": Key(typ, default, help="PaddleRec's; ignored") for name, typ, default in (
        ("use_auc", bool, True), ("use_inference", bool, False), ("use_visual", bool, False),
        ("use_xpu", bool, False), ("use_npu", bool, False), ("use_fleet", bool, False),
        ("train_batch_size", int, None))},
    "hyper_parameters.optimizer.class": Key(str, "adam", help="PaddleRec's; the outer optimizer is Adam"),
    "hyper_parameters.optimizer.strategy": Key(str, "async", help="PaddleRec's; ignored"),
}
SPEC.update(IGNORED)


# Values renamed since a release, still read (configs saved beside older checkpoints)
RENAMED = {"runner.adaptation": {"wide_cv": "mixture"}}


def check_value(key, value, where="config"):
    """`value` coerced to the key's type, or a ConfigError naming the key."""
    if key not in SPEC:
        leaf = key.split(".")[-1]
        close = ([k for k in SPEC if k.split(".")[-1] == leaf]
                 or [k for k in SPEC if difflib.get_close_matches(leaf, [k.split(".")[-1]], cutoff=0.8)])
        hint = f" Did you mean {close[0]!r}?" if close else " Every key is listed in docs/configs.md."
        raise ConfigError(f"{where}: unknown config key {key!r}.{hint}")
    spec = SPEC[key]
    if value is None:
        return None
    typ = spec.type
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    if key in RENAMED:
        value = RENAMED[key].get(value, value)
    if spec.check is not None and not spec.check(value):
        raise ConfigError(f"{where}: {key} must be {spec.check.__doc__}, got {value!r}")
    return value


def check_consistency(config, where="config"):
    """Fill the keys whose default derives from others (the epochs infer reads)
    and check the values that must agree."""
    if config["runner.infer_end_epoch"] is None:
        config["runner.infer_end_epoch"] = config["runner.epochs"]
    if config["runner.infer_start_epoch"] is None:
        config["runner.infer_start_epoch"] = config["runner.infer_end_epoch"] - 1
    columns = config.get("hyper_parameters.columns") or {}
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise ConfigError(f"{where}: hyper_parameters.columns: unknown key(s) {unknown}; its keys are "
                          f"{sorted(COLUMNS)}")
    bad = [k for k, v in columns.items() if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"{where}: hyper_parameters.columns.{bad[0]} must be a column name, got "
                          f"{columns[bad[0]]!r}")
    dims = config["hyper_parameters.mlp_dims"]
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigError(f"{where}: hyper_parameters.mlp_dims must be a non-empty list of positive ints, "
                          f"got {dims!r}")
    if config["runner.infer_end_epoch"] <= config["runner.infer_start_epoch"]:
        raise ConfigError(f"{where}: runner.infer_end_epoch ({config['runner.infer_end_epoch']}) must be greater "
                          f"than runner.infer_start_epoch ({config['runner.infer_start_epoch']})")


def with_defaults(config):
    """Fill the model's defaults into a plain config dict (PaddleRec's loader
    makes one without them), in place, and check the values of the keys this
    model knows. Keys it does not know are the caller's business."""
    if config.get("metaheac.checked"):
        return config
    where = config.get("config_path", "config")
    for key, spec in SPEC.items():
        value = config.get(key)
        config[key] = spec.default if value is None else check_value(key, value, where)
    check_consistency(config, where)
    config["metaheac.checked"] = True
    return config


def require(config, key):
    """The value of `key`, or a ConfigError saying how to set it."""
    value = config.get(key)
    if value is None:
        raise ConfigError(f"{config.get('config_path', 'config')}: {key} is not set; "
                          f"add it to the YAML or pass -o {key}=...")
    return value


def lr_scale(config, group):
    """The learning-rate multiplier of a parameter group (MetaHeacNet.param_group):
    its optimizer.<group>_lr_scale, 1 for groups without one (experts, critics)."""
    return config.get(f"hyper_parameters.optimizer.{group}_lr_scale", 1.0)
