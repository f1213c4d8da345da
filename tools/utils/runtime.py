"""Process set-up shared by the command lines (trainer, infer, export,
expand): parser, quiet third-party output, logging, threads, seeds, device,
and loading the model package's modules from the config directory.

Imports nothing that loads paddle at module level: tools/utils/startup.py
runs configure_threads from here before paddle is imported."""
import argparse
import importlib.util
import logging
import os
import signal
import sys
import threading
import warnings

from metaheac.errors import ConfigError, DataError
from tools.utils.yaml_config import HelpFormatter, add_cli_args, load_config

logger = logging.getLogger("metaheac")

# Third-party warnings every normal run would print, none of them actionable:
# Paddle's at import (no ccache: only matters when compiling C++ extensions)
# and from its own full_like while jit.save traces the network.
KNOWN_WARNINGS = ("No ccache found", "Tensor do not have 'place' interface for pir graph mode")


def quiet_third_party(verbose=False):
    """Hide the known third-party warnings and Paddle's C++ (glog) warnings,
    such as jit.save's 'Paddle static graph(PIR) not support input out
    tensor'; `verbose` shows everything. Must run before paddle is imported:
    the ccache warning comes at import, and glog reads GLOG_minloglevel when
    libpaddle loads."""
    if verbose:
        os.environ["GLOG_minloglevel"] = "0"
        return
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    os.environ.setdefault("GLOG_minloglevel", "2")  # glog errors still show; a level set by the user wins


def setup_logging(log_file=None):
    """Log to stderr and, with `log_file`, to that file too (rank N of a
    multi-process run writes <log_file>.rank<N>, so ranks do not interleave).
    Remaining Python warnings go through the log as well."""
    handlers = [logging.StreamHandler()]
    if log_file:
        rank = int(os.environ.get("PADDLE_TRAINER_ID", 0))
        path = log_file if rank == 0 else f"{log_file}.rank{rank}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO, handlers=handlers,
                        force=True)
    logging.captureWarnings(True)


def configure_threads():
    """Set math-library threads and kernels, unless the environment already
    does. Must run before paddle is imported.

    MKL_NUM_THREADS: the cores (shared among processes launched side by side).
    Paddle pins OMP_NUM_THREADS=1; on CPU it is MKL's thread count that speeds
    up the matmuls (OMP > 1 makes them much slower after the first Adam step
    on Paddle 3.3.1).

    MKL_DEBUG_CPU_TYPE=5 on AMD: the MKL in Paddle's CPU wheel dispatches on
    the CPU's vendor, not its instruction set, and on AMD runs generic
    kernels; that variable selects its AVX2 ones (docs/experiments.md).
    """
    local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", 1))
    os.environ.setdefault("MKL_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // local_procs)))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")


def cpu_vendor():
    """The CPU's vendor id ('GenuineIntel', 'AuthenticAMD'), '' where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def load_module(config, name, key):
    """Import `name` (e.g. 'dygraph_model', 'reader_train') from the config's
    directory, as PaddleRec does, so a model package is self-contained.
    An absolute path (without .py) names a module file anywhere."""
    config_dir = config["config_abs_dir"]
    path = os.path.join(config_dir, (name if os.path.isabs(name) else name.replace(".", os.sep)) + ".py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: module {name!r} not found at {path}")
    if config_dir not in sys.path:
        sys.path.insert(0, config_dir)
    spec = importlib.util.spec_from_file_location(f"_metaheac_{os.path.basename(name)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def list_files(directory, key):
    if not directory or not os.path.isdir(directory):
        raise FileNotFoundError(f"{key}: data directory {directory!r} does not exist")
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if os.path.isfile(os.path.join(directory, f)))


def cli_parser(description, example, add_args=None):
    """The parser of a model command line: -m, -o, -v, --log-file, the tool's
    own options (`add_args(parser)`) and `example`, a command that applies to it."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                     epilog=f"example:\n  {example}")
    add_cli_args(parser)
    if add_args:
        add_args(parser)
    return parser


class Cli:
    """A model command line: `main(argv)` parses it (cli_parser) and runs
    `job(config, args)` (run_cli); `parser()` is there for --help checks."""

    def __init__(self, description, example, job, add_args=None):
        self.description, self.example, self.job, self.add_args = description, example, job, add_args

    def parser(self):
        return cli_parser(self.description, self.example, self.add_args)

    def main(self, argv=None):
        return run_cli(self.parser(), self.job, argv)

    def bound(self):
        """(parser, main): a tool module's two entry points."""
        return self.parser, self.main


def run_cli(parser, job, argv=None):
    """Parse the command line, quiet third-party output, set up the log, load
    the config and run `job(config, args)`.

    Bad config, bad data and missing files end with their message and a
    non-zero exit (2 for config errors), not a traceback.
    """
    args = parser.parse_args(argv)
    quiet_third_party(args.verbose)
    setup_logging(args.log_file)
    try:
        config = load_config(args.config_yaml, args.opt)
        return job(config, args)
    except (ConfigError, DataError, FileNotFoundError, FloatingPointError) as exc:
        # FloatingPointError: a NaN loss or parameters, a diverged run (tools/trainer.py), said in one line too
        logger.error("%s%s", rank_prefix(), exc)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except KeyboardInterrupt:
        # Ctrl-C where no loop saves first (reading data, fitting the pooled
        # regressions, infer) or a second signal: files are swapped in whole,
        # so what was written before stands and nothing is half-written.
        logger.error("%sinterrupted: stopped without finishing; files written before are intact", rank_prefix())
        sys.exit(130)
    except Exception:
        if int(os.environ.get("PADDLE_TRAINERS_NUM", 1)) > 1:
            logger.error("%sfailed; if the error below comes from a collective (gloo/nccl), another rank failed "
                         "first: its message is in %s/workerlog.<rank>", rank_prefix(),
                         os.environ.get("PADDLE_LOG_DIR", "log"))
        raise


def rank_prefix():
    """'rank N: ' in a multi-process run, so merged logs say who failed."""
    if int(os.environ.get("PADDLE_TRAINERS_NUM", 1)) > 1:
        return f"rank {os.environ.get('PADDLE_TRAINER_ID', '?')}: "
    return ""


class StopOnSignal:
    """Turn SIGINT/SIGTERM into a request to stop after the current step.

    The loop checks `signum` and saves before exiting; a second signal
    interrupts at once. Handlers are only installed in the main thread.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("signal %d received: stopping after the current meta-batch (again to abort)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
