"""Config files: YAML loading, `-o key=value` overrides, path resolution.

Strict where PaddleRec's loader is lenient: every key must be one the model
declares (metaheac/config.py SPEC), with the right type; a typo is an error
that names the key. This module must not import paddle: the trainer reads the
config first and sets thread variables before paddle is imported.
"""
import argparse
import os

import yaml

from metaheac.config import SPEC, check_consistency, check_value
from metaheac.errors import ConfigError

# Keys that hold structured values: flattening stops at them.
_LEAF_KEYS = {k for k, s in SPEC.items() if s.type in (list, dict)}


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _LEAF_KEYS:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_override(text):
    """'a.b=value' -> ('a.b', parsed value). Values are YAML ('[1, 2]', 'true', 'null')."""
    if "=" not in text:
        raise ConfigError(f"-o {text!r}: expected key=value, e.g. -o runner.seed=7")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key in SPEC and SPEC[key].type is str and raw.strip().lower() not in ("null", "none", "~"):
        return key, raw.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"-o {key}: cannot parse {raw!r}: {exc}") from None
    if isinstance(value, str) and value.lower() == "none":
        value = None
    return key, value


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping (runner:, hyper_parameters:)")
    return tree


def load_config(path, overrides=(), cwd=None):
    """Read YAML `path`, apply `overrides` ('key=value' strings), validate, fill
    defaults and resolve paths.

    Relative paths in the file are relative to the file's directory (as in
    PaddleRec); relative paths given with -o are relative to `cwd` (where the
    user typed them).
    """
    path = os.path.abspath(path)
    tree = _read_yaml(path)
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
    for key, spec in SPEC.items():
        value = values.get(key, spec.default)
        if spec.path and isinstance(value, str) and value and not os.path.isabs(value):
            value = os.path.normpath(os.path.join(base_dirs.get(key, config_dir), value))
        config[key] = value
    check_consistency(config, path)
    config["config_abs_dir"] = config_dir
    config["config_path"] = path
    return config


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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help that shows each option's default, unless its help states one
    ("(default ...") or there is none, and keeps the description and the
    example epilog as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_cli_args(parser):
    """The options every model command line shares: config, overrides, verbosity, log file."""
    parser.add_argument("-m", "--config_yaml", required=True, help="config YAML (e.g. config.yaml)")
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys (typed YAML values); every key is in docs/configs.md")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show third-party warnings and Paddle's own log lines (hidden by default)")
    parser.add_argument("--log-file", default=None, metavar="PATH",
                        help="also write the log to PATH (default: stderr only; the log always goes to stderr)")
    return parser
