"""Checkpoints: <root>/<epoch>/rec.pdparams (+ rec.pdopt, config.yaml, state.json).

Each checkpoint directory is written under a temporary name and renamed into
place (metaheac/files.py), so a directory named like an epoch is always
complete and the previous copy is kept until the new one is in place. state.json says
which epoch it holds and whether that epoch finished (an interrupted run
saves <root>/interrupted with complete=false), so training can resume.
"""
import json
import os

import paddle

from metaheac.files import atomic_dir
from tools.utils.config import resolved_yaml

PARAMS = "rec.pdparams"
OPT = "rec.pdopt"
STATE = "state.json"


def save_checkpoint(root, name, model, optimizer, config, state=None):
    def fill(tmp):
        paddle.save(model.state_dict(), os.path.join(tmp, PARAMS))
        if optimizer is not None:
            paddle.save(optimizer.state_dict(), os.path.join(tmp, OPT))
        with open(os.path.join(tmp, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(resolved_yaml(config))
        with open(os.path.join(tmp, STATE), "w", encoding="utf-8") as f:
            json.dump(state or {}, f)

    return atomic_dir(os.path.join(root, str(name)), fill)


def read_state(params_path):
    """The state.json next to a rec.pdparams file, or None (e.g. PaddleRec checkpoints)."""
    path = os.path.join(os.path.dirname(params_path), STATE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    return state if "epoch" in state else None


def infer_root(config):
    """Where infer, export and expand find <epoch>/ checkpoints."""
    return config["runner.infer_load_path"] or config["runner.model_save_path"]


def params_file(path):
    """Accept a checkpoint directory or the rec.pdparams file itself."""
    return os.path.join(path, PARAMS) if os.path.isdir(path) else path


def load_checkpoint(path, model, optimizer=None, key="checkpoint"):
    """Load parameters (and optimizer state if present) into `model`.

    Shapes must match the model built from the current config; a mismatch
    names the parameter, since it usually means embed_dim, mlp_dims or the
    vocabulary differ from the run that wrote the checkpoint.
    """
    file = params_file(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{key}: no checkpoint at {file}; train first "
                                f"(python tools/trainer.py -m <config>) or fix the path")
    state = paddle.load(file)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"{file}: parameters {missing} missing; was it written by this model?")
    for name, value in own.items():
        if list(state[name].shape) != list(value.shape):
            raise ValueError(f"{file}: parameter {name!r} has shape {list(state[name].shape)}, the model "
                             f"built from this config expects {list(value.shape)}; check embed_dim, "
                             f"mlp_dims, num_expert, num_output and the vocabulary sizes")
    model.set_state_dict(state)
    opt_file = os.path.join(os.path.dirname(file), OPT)
    if optimizer is not None and os.path.isfile(opt_file):
        optimizer.set_state_dict(paddle.load(opt_file))
    return file
