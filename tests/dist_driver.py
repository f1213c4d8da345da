"""Run by tests/test_distributed.py under paddle.distributed.launch: trains,
then writes this rank's parameters so the test can compare ranks."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.trainer import train  # noqa: E402
from tools.utils import runtime  # noqa: E402


def job(config, args):
    import numpy as np

    result = train(config)
    rank = os.environ.get("PADDLE_TRAINER_ID", "0")
    np.savez(os.path.join(args.dump, f"rank{rank}.npz"),
             **{k: v.numpy() for k, v in result["model"].state_dict().items()})
    np.save(os.path.join(args.dump, f"losses{rank}.npy"), np.array(result["step_losses"]))


def add_args(parser):
    parser.add_argument("--dump", required=True)


if __name__ == "__main__":
    runtime.run_cli(runtime.cli_parser("distributed test driver", "dist_driver.py -m config.yaml --dump DIR", add_args),
                    job)
