"""Checkpoints: <root>/<epoch>/rec.pdparams (+ rec.pdopt, config.yaml,
state.json, groups.npz: the group regressions, metaheac/groups.py).

Each checkpoint directory is written under a temporary name and renamed into
place (metaheac/files.py), so a directory named like an epoch is always
complete and the previous copy is kept until the new one is in place.
state.json says which epoch it holds, whether that epoch finished (an
interrupted run saves <root>/interrupted with complete=false) and which run
wrote it (run_id), so training can resume and nobody mixes epochs of two runs.
"""
import json
import math
import os
import pickle
import time
import uuid

import numpy as np
import paddle

from metaheac import groups as campaign_groups
from metaheac.errors import DataError
from metaheac.files import atomic_dir
from metaheac.learned import Learned
from tools.utils import runtime
from tools.utils.yaml_config import resolved_yaml

PARAMS = "rec.pdparams"
OPT = "rec.pdopt"
STATE = "state.json"
INTERRUPTED = "interrupted"
LOCK = ".lock"

log = runtime.logger


def new_run_id():
    """Start time and a random suffix: sorts by time, unique across machines."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class _Array:
    """A tensor that becomes a numpy array only while pickle writes it."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce_ex__(self, protocol):
        return self.tensor.numpy().__reduce_ex__(protocol)


def save_state(state, path):
    """The file paddle.save writes for a state dict (a pickled dict of numpy
    arrays and the parameters' names; paddle.load and PaddleRec read it), one
    tensor at a time. paddle.save copies every tensor to numpy first, then
    each again into the pickle: for Adam's moments over the full-vocabulary
    tables, +360 MB at the checkpoint, the run's peak. Here the only copy is
    the tensor being written: protocol 5 writes an array's buffer as it is,
    and `fast` keeps the pickler from holding on to what it wrote."""
    if any(isinstance(v, dict) and any(isinstance(x, paddle.Tensor) for x in v.values()) for v in state.values()):
        return paddle.save(state, path)  # nested tensors (master weights): paddle.save's other format
    arrays = {k: _Array(v) if isinstance(v, paddle.Tensor) else v for k, v in state.items()}
    arrays["StructuredToParameterName@@"] = {k: v.name for k, v in state.items() if isinstance(v, paddle.Tensor)}
    with open(path, "wb") as f:
        pickler = pickle.Pickler(f, protocol=5)
        pickler.fast = True  # no memo: a flat dict has no cycles to resolve
        pickler.dump(arrays)


def schema_fields(schema):
    """[[name, group, vocab_size, width], ...] of a FeatureSchema's fields in
    model order (crosses included): what a checkpoint's tables are laid out by."""
    return [[f.name, f.group, int(f.vocab_size), int(f.width)] for f in schema.fields]


def _nonfinite(state):
    """The first floating-point tensor or array of a state dict holding NaN or inf, or None."""
    for key, value in state.items():
        if isinstance(value, paddle.Tensor):
            if paddle.is_floating_point(value) and not bool(paddle.isfinite(value).all()):
                return key
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            return key
    return None


def refuse_nonfinite(target, model, optimizer):
    """A FloatingPointError naming the checkpoint `target` when a parameter or
    Adam's state holds NaN or inf: such a checkpoint is never written."""
    for what, values in (("parameter", model.state_dict()),
                         ("Adam state", optimizer.state_dict() if optimizer is not None else {})):
        bad = _nonfinite(values)
        if bad is not None:
            raise FloatingPointError(
                f"{target}: not written: {what} {bad!r} holds NaN or inf (the run diverged); the earlier "
                f"checkpoints are intact. Lower hyper_parameters.optimizer.global_learning_rate or local_lr, "
                f"then train again or resume from the last checkpoint (-o runner.model_init_path)")


def save_checkpoint(root, name, model, optimizer, config, state=None, groups=None):
    """<root>/<name>/, written aside and swapped in whole: the network's and
    the optimizer's state, the resolved config, state.json (with the feature
    schema) and the group regressions (when fitted); nothing when a value is
    not finite (refuse_nonfinite)."""
    target = os.path.join(root, str(name))
    refuse_nonfinite(target, model, optimizer)
    state = {**(state or {}), "features": schema_fields(model.schema)}

    def fill(tmp):
        save_state(model.state_dict(), os.path.join(tmp, PARAMS))
        if groups is not None:
            groups.save(tmp, model.schema)
        if optimizer is not None:
            save_state(optimizer.state_dict(), os.path.join(tmp, OPT))
        with open(os.path.join(tmp, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(resolved_yaml(config))
        with open(os.path.join(tmp, STATE), "w", encoding="utf-8") as f:
            json.dump(state, f)

    return atomic_dir(target, fill)


def read_state(params_path):
    """The state.json next to a rec.pdparams file, or None (e.g. PaddleRec checkpoints)."""
    path = os.path.join(os.path.dirname(params_path), STATE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except ValueError:
        raise DataError(f"{path}: not valid JSON; delete it to load the checkpoint without resume "
                        f"information, or train again") from None
    return state if isinstance(state, dict) and "epoch" in state else None


def _saved_features(params_path):
    """The feature schema recorded in the state.json beside a rec.pdparams
    (schema_fields), or None (older checkpoints, PaddleRec's)."""
    try:
        with open(os.path.join(os.path.dirname(params_path), STATE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state.get("features") if isinstance(state, dict) else None


def _schema_difference(saved, own):
    """How the feature schema `own` differs from a checkpoint's `saved` (schema_fields), in words; None if alike."""
    if saved == own:
        return None
    describe = lambda f: f"{f[0]!r} ({f[1]}, vocab_size {f[2]}{f', width ' + str(f[3]) if f[1] == 'sequence' else ''})"  # noqa: E731
    at = next((i for i, (a, b) in enumerate(zip(saved, own)) if a != b), min(len(saved), len(own)))
    if sorted(map(tuple, saved)) == sorted(map(tuple, own)):
        return (f"the same features in another order: field {at} is {own[at][0]!r} in this config, "
                f"{saved[at][0]!r} in the checkpoint (its order: {', '.join(f[0] for f in saved)})")
    if at < min(len(saved), len(own)):
        return f"field {at} is {describe(own[at])} in this config, {describe(saved[at])} in the checkpoint"
    return f"this config has {len(own)} fields, the checkpoint {len(saved)}"


def checkpoint_runs(root):
    """{checkpoint directory name: run id (None if unrecorded)} of `root`'s
    epoch directories and interrupted/."""
    if not os.path.isdir(root):
        return {}
    names = [n for n in os.listdir(root) if (n.isdigit() or n == INTERRUPTED) and os.path.isdir(os.path.join(root, n))]
    return {n: (read_state(os.path.join(root, n, PARAMS)) or {}).get("run_id")
            for n in sorted(names, key=lambda n: int(n) if n.isdigit() else math.inf)}


def describe_runs(runs):
    """'0, 1 (run A); 2 (run B)' for messages."""
    by_run = {}
    for name, run in runs.items():
        by_run.setdefault(run, []).append(name)
    return "; ".join(f"{', '.join(names)} ({f'run {run}' if run else 'no run id'})" for run, names in by_run.items())


def check_one_run(root):
    """Refuse a checkpoint root whose epochs come from different runs."""
    runs = {name: run for name, run in checkpoint_runs(root).items() if name.isdigit()}
    if len(set(runs.values())) > 1:
        raise DataError(f"{root}: its epochs come from different runs: {describe_runs(runs)}; move the epochs "
                        f"of one run to another directory (or retrain into a fresh runner.model_save_path)")


def infer_root(config):
    """Where infer, export and expand find <epoch>/ checkpoints."""
    return config["runner.infer_load_path"] or config["runner.model_save_path"]


def params_file(path):
    """Accept a checkpoint directory or the rec.pdparams file itself."""
    return os.path.join(path, PARAMS) if os.path.isdir(path) else path


def _load(file):
    try:
        state = paddle.load(file)
    # Unpickling bad bytes can raise nearly anything: EOFError for an empty
    # file, ValueError("can not parse the file") for a truncated or random one.
    except Exception as exc:
        raise DataError(f"{file}: not a readable Paddle checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is truncated or "
                        f"corrupt: use another epoch's checkpoint or train again") from None
    if not isinstance(state, dict):
        raise DataError(f"{file}: holds a {type(state).__name__}, not a state dict; use a checkpoint "
                        f"written by tools/trainer.py")
    return state


def _load_optimizer(optimizer, opt_state, saved, own, opt_file):
    """Adam's state is keyed by the parameters' generated names
    (`meta_heac_net_0.w_0_moment1_0`), which depend on how many networks the
    writing process had built: rename them to this network's. Paddle sets
    the moments only at the first step, so their shapes are checked here."""
    renames = {saved[k].name: own[k].name for k in own if getattr(saved[k], "name", None)}
    param_of = {own[k].name: k for k in own}
    renamed = {}
    for key, value in opt_state.items():
        old = max((n for n in renames if key.startswith(n + "_")), key=len, default=None)
        key = key if old is None else renames[old] + key[len(old):]
        name = param_of.get(key.rsplit("_moment", 1)[0]) if "_moment" in key else None
        if name is not None:
            if list(value.shape) != list(own[name].shape):
                raise DataError(f"{opt_file}: Adam's moments of {name!r} have shape {list(value.shape)}, the "
                                f"model's {list(own[name].shape)}; delete it to start Adam afresh")
        renamed[key] = value
    try:
        optimizer.set_state_dict(renamed)
    except (AssertionError, KeyError, ValueError) as exc:  # Paddle asserts on a missing moment
        raise DataError(f"{opt_file}: does not fit this model's optimizer ({exc}); delete it to start Adam "
                        f"afresh, or use the config the checkpoint was trained with") from None


def load_checkpoint(path, model, optimizer=None, key="checkpoint"):
    """Load parameters (and optimizer state if present) into `model`: (the
    rec.pdparams file, the learned.Learned for adapting campaigns with it).

    Shapes must match the model built from the current config; a mismatch
    names the parameter, since it usually means embed_dim, mlp_dims or the
    vocabulary differ from the run that wrote the checkpoint. Every failure
    is a DataError naming the file.
    """
    file = params_file(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{key}: no checkpoint at {file}; train first "
                                f"(python tools/trainer.py -m <config>) or fix the path")
    saved_features = _saved_features(file)
    difference = saved_features and _schema_difference(saved_features, schema_fields(model.schema))
    if difference:
        raise DataError(f"{file}: trained on another feature schema: {difference}. Fix: use the config saved "
                        f"beside the checkpoint ({os.path.join(os.path.dirname(file), 'config.yaml')})")
    state = _load(file)
    # a checkpoint of the release that kept the group regressions as network buffers
    buffers = {k: state.pop(k) for k in ("pooled_w", "pooled_b", "pooled_size") if k in state}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise DataError(f"{file}: parameters {missing} missing; was it written by this model?")
    for name, value in own.items():
        if list(getattr(state[name], "shape", ())) != list(value.shape):
            raise DataError(f"{file}: parameter {name!r} has shape {list(getattr(state[name], 'shape', ()))}, "
                            f"the model built from this config expects {list(value.shape)}; check embed_dim, "
                            f"mlp_dims, num_expert, num_output and the vocabulary sizes (the config it was "
                            f"trained with is saved beside it)")
    bad = _nonfinite({name: state[name] for name in own})
    if bad is not None:
        raise DataError(f"{file}: parameter {bad!r} holds NaN or inf: the run that wrote it diverged; use another "
                        f"epoch's checkpoint or train again with a lower learning rate")
    model.set_state_dict(state)
    trained = (read_state(file) or {}).get("trained_ad_rows")  # PaddleRec's trainer does not say: any id
    groups = campaign_groups.load(os.path.dirname(file), model.schema)
    if groups is None and len(buffers) == 3:
        fitted = np.asarray(buffers["pooled_size"]) > 0
        if fitted.any():
            groups = campaign_groups.GroupRegressions(np.asarray(buffers["pooled_w"])[fitted],
                                                      np.asarray(buffers["pooled_b"])[fitted],
                                                      np.asarray(buffers["pooled_size"])[fitted],
                                                      np.zeros(0, np.int64))
    learned = Learned(model, groups, None if trained is None else frozenset(trained))
    if optimizer is not None:
        opt_file = os.path.join(os.path.dirname(file), OPT)
        if os.path.isfile(opt_file):
            _load_optimizer(optimizer, _load(opt_file), state, own, opt_file)
        else:
            log.warning("%s: not found, so Adam's moments start from zero (the first steps move the parameters "
                        "more than a continued run would)", opt_file)
    return file, learned


def build_network(config):
    """The network of the config's model package (dygraph_model.py beside the config)."""
    return runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel().create_model(config)


def load_epoch(config, model, epoch=None):
    """(Learned, rec.pdparams path) of checkpoint `epoch` (default: the last
    evaluated one, runner.infer_end_epoch - 1) under runner.infer_load_path,
    loaded into `model`: what infer, expand and export adapt campaigns with."""
    root = infer_root(config)
    check_one_run(root)
    epoch = config["runner.infer_end_epoch"] - 1 if epoch is None else epoch
    path, learned = load_checkpoint(os.path.join(root, str(epoch)), model, key="runner.infer_load_path")
    return learned, path
