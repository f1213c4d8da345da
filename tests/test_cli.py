"""The command lines: --help with defaults and an example that applies to the
tool, gen_data's refusal to overwrite, and threads set before paddle loads."""
import argparse
import importlib
import os
import shlex
import subprocess
import sys

import pytest

from metaheac.config import SPEC
from tools.utils.yaml_config import load_config, parse_override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CLIS = ["tools.trainer", "infer", "tools.export", "tools.expand"]


@pytest.mark.parametrize("name", [*MODEL_CLIS, "tools.gen_data", "tools.preprocess_tencent", "tools.convert"])
def test_help_shows_defaults_and_a_valid_example(name):
    tool = importlib.import_module(name)
    parser = tool.parser()
    text = parser.format_help()
    flat = "".join(text.split())  # help wraps lines, even inside long defaults
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.option_strings} has no help"
        if action.required or action.nargs == 0 or action.default == []:
            continue
        if action.default is None:
            assert "(default" in action.help, f"{name}: {action.option_strings} does not say its default"
        else:
            assert "".join(f"(default: {action.default})".split()) in flat, f"{name}: {action.option_strings}"

    example = text.split("example:\n", 1)[1].strip()
    python, script, *argv = shlex.split(example)
    assert python == "python" and os.path.normpath(os.path.join(ROOT, script)) == os.path.abspath(tool.__file__)
    args = parser.parse_args(argv)
    if name in MODEL_CLIS:
        assert args.opt, f"{name}: the example shows no -o override"
        for item in args.opt:
            assert parse_override(item)[0] in SPEC
        load_config(os.path.join(ROOT, args.config_yaml), args.opt)  # keys and values valid


def test_gen_data_refuses_to_overwrite_without_force(tmp_path, capsys):
    from tools import gen_data

    small = ["--out", str(tmp_path / "d"), "--n-train", "2", "--n-hot", "1", "--n-cold", "1", "--scale", "0.05"]
    gen_data.main(small)
    before = (tmp_path / "d" / "oracle.json").read_text()
    with pytest.raises(SystemExit) as refused:
        gen_data.main([*small, "--seed", "5"])
    message = str(refused.value.code)
    assert str(tmp_path / "d") in message and "--force" in message and "\n" not in message
    assert (tmp_path / "d" / "oracle.json").read_text() == before
    gen_data.main([*small, "--seed", "5", "--force"])
    assert (tmp_path / "d" / "oracle.json").read_text() != before
    with pytest.raises(SystemExit):
        gen_data.main(["--seed", "5"])  # --out is required: the shipped sample is never the default
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("entry", MODEL_CLIS)
def test_entry_points_set_threads_and_quiet_paddle_before_it_loads(entry):
    """The first thing an entry point imports is tools/utils/startup.py: the
    math library reads its threads when paddle loads, and paddle's import
    warning (no ccache) is filtered by then."""
    code = (f"import os, sys; sys.path.insert(0, sys.argv[1]); import {entry}; names = list(sys.modules); "
            "print(names.index('tools.utils.startup') < names.index('paddle'), os.environ['MKL_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_NUM_THREADS", "PADDLE_LOCAL_SIZE")}
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code, ROOT], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str(os.cpu_count())], proc.stdout + proc.stderr
    assert "ccache" not in proc.stderr


@pytest.mark.parametrize("vendor, preset, expected", [
    ("AuthenticAMD", None, "5"),     # AMD: MKL's AVX2 kernels
    ("AuthenticAMD", "0", "0"),      # the user's own setting wins
    ("GenuineIntel", None, None),    # Intel: MKL already picks its best kernels
    ("", None, None),                # vendor unknown
])
def test_mkl_kernels_are_chosen_by_cpu_vendor(monkeypatch, vendor, preset, expected):
    from tools.utils import runtime

    for var in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    if preset is not None:
        monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", preset)
    monkeypatch.setattr(runtime, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 6)
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")  # two processes launched side by side share the cores
    runtime.configure_threads()
    assert os.environ.get("MKL_DEBUG_CPU_TYPE") == expected
    assert os.environ["MKL_NUM_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "1"


def test_ctrl_c_outside_the_training_loop_ends_with_one_line_and_130(capfd):
    from tools.utils import runtime

    def interrupted(config, args):
        raise KeyboardInterrupt  # Ctrl-C while reading data or fitting the pooled regressions
    cli = runtime.Cli("test", "python tools/trainer.py -m config.yaml -o runner.epochs=2", interrupted)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["-m", os.path.join(ROOT, "config.yaml")])
    assert stopped.value.code == 130
    err = capfd.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "interrupted" in errors[0]
