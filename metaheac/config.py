"""Every config key the model reads: type, default, check and meaning.

A config is a flat dict keyed by dotted names (``config["runner.epochs"]``),
as PaddleRec's loader makes it, so the model runs both under this package's
``tools/trainer.py`` (strict: unknown keys are errors, see
tools/utils/config.py) and under PaddleRec's own trainer, whose plain dict
gets the defaults here (`with_defaults`). No paddle import: the trainer reads
the config before paddle is imported, to set thread variables.
"""
import difflib
from typing import Any, Callable, NamedTuple, Optional

from metaheac.columns import LABEL, TASK, USER_ID
from metaheac.errors import ConfigError


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
        "train_data_dir": Key(str, help="directory with train_stage1.pkl", path=True),
        "train_reader_path": Key(str, "reader_train", help="reader module (importlib name, relative to the config dir)"),
        "use_gpu": Key(bool, False, help="train/infer on GPU 0 (falls back to CPU with a warning if paddle has no CUDA)"),
        "epochs": Key(int, 1, POSITIVE, "meta-training epochs"),
        "print_interval": Key(int, 10, POSITIVE, "log every N meta-batches (training) / campaigns (infer)"),
        "model_save_path": Key(str, "output_model", NON_EMPTY,
                               "checkpoints go to <model_save_path>/<epoch>/rec.pdparams", path=True),
        "overwrite": Key(bool, False, help="train into a model_save_path that holds another run's checkpoints, or "
                                           "epochs this run writes again: they move, with their infer reports, to "
                                           "<model_save_path>/replaced-<run id>/ (false: refuse to start)"),
        "meta_val_fraction": Key(float, 0.0, BELOW_ONE,
                                 "share of the training campaigns held out for meta-validation: training keeps, "
                                 "in each epoch's checkpoint, the parameters that rank their users best once a "
                                 "seed set has routed them (0: off, every checkpoint is the last step's)"),
        "meta_val_interval": Key(int, 20, POSITIVE, "meta-steps between meta-validation checks"),
        "meta_val_patience": Key(int, 0, NON_NEGATIVE,
                                 "stop training after this many checks without a better meta-validation GAUC; "
                                 "the epochs left get the best parameters (0: train the whole budget)"),
        "model_init_path": Key(str, help="checkpoint dir (or rec.pdparams file) to start training from", path=True),
        "test_data_dir": Key(str, help="directory with test_stage1.pkl and test_stage2.pkl", path=True),
        "infer_reader_path": Key(str, "reader_test", help="infer reader module"),
        "infer_load_path": Key(str, help="checkpoint root for infer (default: model_save_path)", path=True),
        "infer_start_epoch": Key(int, 0, NON_NEGATIVE, "first checkpoint epoch to evaluate"),
        "infer_end_epoch": Key(int, 1, POSITIVE, "evaluate epochs [infer_start_epoch, infer_end_epoch)"),
        "adaptation": Key(str, "finetune", one_of("finetune", "wide_cv"),
                          "per-campaign adaptation: finetune (Adam epochs on the seeds, PaddleRec) or wide_cv (the "
                          "routed meta-learned network, its logit corrected by a penalised regression on the seeds' "
                          "user ids, how far chosen per campaign by k-fold cross-validation on its seeds; "
                          "metaheac/combine.py)"),
        "infer_train_epoch": Key(int, 2, NON_NEGATIVE, "fine-tune epochs over each campaign's seed set "
                                 "(runner.adaptation=finetune)"),
        "infer_batch_size": Key(int, None, POSITIVE,
                                "fine-tuning batch (default: hyper_parameters.batch_size)"),
        "score_batch_size": Key(int, 4096, POSITIVE, "rows scored per forward pass (candidates, pools)"),
        "pool_chunk_rows": Key(int, 65536, POSITIVE,
                               "candidate pools are read and scored this many users at a time (memory bound)"),
        "finetune_steps": Key(int, None, POSITIVE,
                              "fine-tune Adam steps per campaign (overrides infer_train_epoch)"),
        "wide_cv_top": Key(int, 5, POSITIVE,
                           "runner.adaptation=wide_cv: the campaign's scores average the logits of this many "
                           "candidates (the network, corrected or seeds alone at each C) with the best mean fold "
                           "AUC on its seeds (1: the best alone)"),
        "route_prior": Key(float, 0.0, BELOW_ONE,
                           "before fine-tuning, try every other id of each gate field that meta-training saw and "
                           "route the campaign like the one its seeds make most probable (kept only if it also wins "
                           "on held-out seeds); this is the prior probability that its own ids misdescribe it "
                           "(0: off)"),
        "output_dir": Key(str, help="infer outputs: metrics.json, campaigns.csv, audience/, report.png "
                                    "(default: <infer_load_path>/<epoch>/infer_<split>)", path=True),
        "metrics_path": Key(str, help="a copy of the infer metrics JSON (output_dir always holds metrics.json)",
                            path=True),
        "audience_fraction": Key(float, 0.05, FRACTION,
                                 "audience size per campaign as a fraction of its candidates"),
        "audience_count": Key(int, None, POSITIVE,
                              "audience size per campaign as a count (overrides audience_fraction)"),
        "report_png": Key(bool, True, help="draw infer's report.png (AUC vs seed-set size, ROC, gains) and "
                                           "training's train.png (loss curve)"),
        "seed": Key(int, 2021, NON_NEGATIVE, "seed for python, numpy and paddle; runs are reproducible"),
        "cache_dir": Key(str, help="where columnar caches go (default: next to the data, else "
                                   "~/.cache/metaheac)", path=True),
        "num_threads": Key(int, 0, NON_NEGATIVE, "MKL threads (0: all cores)"),
        "mkl_avx2_on_amd": Key(bool, True, help="on AMD CPUs, have the MKL that Paddle bundles run its AVX2 "
                                                "kernels (MKL_DEBUG_CPU_TYPE=5) instead of its slow generic ones: "
                                                "matmuls 2.5x faster on an EPYC; an MKL_DEBUG_CPU_TYPE already set "
                                                "wins"),
        "keep_freed_memory": Key(bool, True, help="glibc keeps freed blocks for reuse instead of unmapping them: "
                                                  "fewer page faults, ~10% faster epochs on the full vocabulary; the "
                                                  "process keeps its peak memory until it exits"),
        "nonfinite_loss": Key(str, "stop", one_of("stop", "skip"),
                              "NaN/inf loss: stop with an error (no checkpoint written) or skip the meta-batch"),
        "prefetch": Key(int, 4, NON_NEGATIVE,
                        "meta-batches prepared ahead by the reader thread (0: no thread)"),
        # PaddleRec keys, accepted so its configs load; they change nothing here.
        **{name: Key(typ, default, help="PaddleRec compatibility, ignored") for name, typ, default in (
            ("use_auc", bool, True), ("use_inference", bool, False), ("use_visual", bool, False),
            ("use_xpu", bool, False), ("use_npu", bool, False), ("use_fleet", bool, False),
            ("train_batch_size", int, None))},
    }),
    **_section("hyper_parameters", {
        # -- feature schema (metaheac/schema.py) --
        "max_idxs": Key(list, help="PaddleRec form: [[7 static], [7 sequence], [6 ad]] largest ids of the "
                                   "standard Tencent columns"),
        "features": Key(list, help="explicit schema: list of {name, group, vocab_size[, width, length_col]}"),
        "label_col": Key(str, LABEL, help="label column (0/1)"),
        "task_col": Key(str, TASK, help="campaign id column"),
        "user_id_col": Key(str, USER_ID, help="user id column, optional: names users in audience files "
                                            "(else the stage-2 row index)"),
        # -- network --
        "embed_dim": Key(int, 64, POSITIVE, "embedding size E"),
        "mlp_dims": Key(list, [64], help="expert MLP layer sizes (all layers applied)"),
        "num_expert": Key(int, 8, POSITIVE, "number of experts"),
        "num_output": Key(int, 5, POSITIVE, "number of critics"),
        "wide": Key(bool, False, help="each expert also has a logistic regression over the user ids (one weight "
                                      "per id and expert, starting at 0), added to the critics' logits"),
        "gate": Key(str, "mlp", one_of("mlp", "lookup"),
                    "gate form: mlp (PaddleRec: an MLP of the mean user embedding and the gate fields' "
                    "embeddings) or lookup (learnt logits per gate-field id, summed; random start)"),
        "gate_init_std": Key(float, 1.0, POSITIVE,
                             "lookup gates: std of the starting logits (larger: sharper initial routing)"),
        "ad_crosses": Key(list, help="crosses of ad fields, e.g. [[adCategoryId, productType]]: each combination "
                                     "of their ids becomes one more ad field, named adCategoryId*productType, "
                                     "that gate_fields can name"),
        "gate_fields": Key(list, help="ad fields the two gates read, their embeddings (mlp gates) or ids (lookup "
                                      "gates); unset: all ad fields"),
        "campaign_clusters": Key(int, 0, NON_NEGATIVE,
                                 "group the training campaigns into at most this many by what their users click "
                                 "and fit one logistic regression over each group's rows (before meta-training, "
                                 "saved with the checkpoint); runner.adaptation=wide_cv weighs them with the "
                                 "network's routings (metaheac/clusters.py; 0: none)"),
        # -- meta-learning --
        "task_count": Key(int, 5, POSITIVE, "tasks (campaigns) per meta-batch"),
        "batch_size": Key(int, 1024, POSITIVE, "support and query rows per task"),
        "local_lr": Key(float, 0.0002, NON_NEGATIVE, "inner-loop SGD learning rate (0: Pooled, no inner step)"),
        "meta_order": Key(int, 1, one_of(1, 2), "1: first-order MAML (PaddleRec), 2: exact second order (authors)"),
        "inner_steps": Key(int, 1, POSITIVE, "inner SGD steps per task"),
        "task_sampling": Key(str, "normal", one_of("normal", "sqrt", "unit"),
                             "task probability: normal ∝ rows, sqrt ∝ sqrt(rows), unit uniform"),
        "optimizer.class": Key(str, "adam", one_of("adam", "Adam"), "outer optimizer (Adam)"),
        "optimizer.global_learning_rate": Key(float, 0.001, POSITIVE, "outer (meta) Adam learning rate"),
        "optimizer.local_test_learning_rate": Key(float, 0.001, POSITIVE, "per-campaign fine-tune Adam learning rate"),
        "optimizer.weight_decay": Key(float, 0.0, NON_NEGATIVE, "L2 weight decay of the outer (meta) Adam"),
        "optimizer.gate_lr_scale": Key(float, 1.0, POSITIVE, "learning rate of the two gates, as a multiple of "
                                       "the meta-training and the fine-tuning rates"),
        "optimizer.wide_lr_scale": Key(float, 1.0, POSITIVE, "learning rate of the wide weights, as a multiple "
                                       "of the meta-training and the fine-tuning rates"),
        "optimizer.strategy": Key(str, "async", help="PaddleRec compatibility, ignored"),
    }),
}

# Measured without gain on the generated data (docs/experiments.md); kept as
# switches for experiments. The defaults are PaddleRec's behaviour.
EXPERIMENTAL = {
    **_section("runner", {
        "finetune_params": Key(str, "all", one_of("all", "no_embedding", "heads"),
                               "what fine-tuning adapts: all, all but the embeddings, or the heads "
                               "(gates and critics)"),
        "finetune_val_fraction": Key(float, 0.0, BELOW_ONE,
                                     "hold out this fraction of each seed set and keep the fine-tuned parameters "
                                     "with the best loss on it (0: off)"),
        "finetune_patience": Key(int, 5, POSITIVE, "early stopping: steps without improvement on the held-out seeds"),
    }),
    **_section("hyper_parameters", {
        "embedding_init_std": Key(float, None, POSITIVE,
                                  "embeddings start N(0, std); unset: per-field Xavier uniform (PaddleRec)"),
        "expert_activation": Key(str, "relu", one_of("relu", "linear"), "expert hidden activation"),
        "dropout": Key(float, 0.0, BELOW_ONE, "dropout on expert hidden units (meta-training and fine-tuning)"),
        "support_query": Key(str, "independent", one_of("independent", "disjoint"),
                             "support and query rows drawn independently (may overlap; authors, PaddleRec) "
                             "or from disjoint halves"),
        "adapt_embedding": Key(str, "rows", one_of("rows", "table"),
                               "inner step adapts only the rows a task touches (fast) or the whole table "
                               "(same result, slower)"),
        "optimizer.embedding_lr_scale": Key(float, 1.0, POSITIVE,
                                            "learning rate of the embedding table, as a multiple of the "
                                            "meta-training and the fine-tuning rates"),
    }),
}
SPEC.update(EXPERIMENTAL)


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
    if spec.check is not None and not spec.check(value):
        raise ConfigError(f"{where}: {key} must be {spec.check.__doc__}, got {value!r}")
    return value


def check_consistency(config, where="config"):
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
