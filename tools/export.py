"""Export a model for serving with paddle.jit.save.

    python tools/export.py -m config.yaml [--epoch E] [--out DIR]
    python tools/export.py -m config.yaml --seeds seeds.pkl [--out DIR]   # one campaign, fine-tuned

Writes DIR/model.json + DIR/model.pdiparams (Paddle's PIR format). The model
takes four int64 inputs, the raw per-field ids in PaddleRec's order:
static_ids [B, Fs], seq_ids [B, W], seq_lengths [B, Fq], ad_ids [B, Fa], and
returns the click probability [B]. Load with paddle.jit.load(DIR/model) or
paddle.inference.Config(DIR/model.json, DIR/model.pdiparams).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tools.utils.startup  # noqa: E402,F401  (first: thread settings before paddle loads)

import paddle  # noqa: E402
from paddle.static import InputSpec  # noqa: E402

from metaheac.adapt import adapt  # noqa: E402
from tools.utils import distributed, runtime  # noqa: E402
from tools.utils.checkpoint import build_network, load_epoch  # noqa: E402
from tools.utils.seed_files import read_campaign  # noqa: E402

log = runtime.logger


def input_spec(schema):
    return [InputSpec([None, len(schema.static)], "int64", "static_ids"),
            InputSpec([None, schema.seq_width], "int64", "seq_ids"),
            InputSpec([None, len(schema.sequence)], "int64", "seq_lengths"),
            InputSpec([None, len(schema.data_ad)], "int64", "ad_ids")]


def serving_layer(net):
    """The network with four tensor inputs instead of a list (what jit.save needs)."""
    class Serving(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, static_ids, seq_ids, seq_lengths, ad_ids):
            return self.net([static_ids, seq_ids, seq_lengths, ad_ids])

    return Serving()


def export(config, args):
    distributed.start(config)
    model = build_network(config)
    learned, ckpt = load_epoch(config, model, args.epoch)
    what = f"meta-learned model {ckpt}"
    if args.seeds:
        seeds = read_campaign(args.seeds, config)
        adapted = adapt(learned, seeds, config)
        model.set_state_dict(adapted.state_dict())
        what = f"campaign {seeds['aid']} ({adapted.describe()} on {args.seeds}) from {ckpt}"
    out = args.out or os.path.join(os.path.dirname(ckpt), "export")
    layer = serving_layer(model)
    layer.eval()
    paddle.jit.save(layer, os.path.join(out, "model"), input_spec=input_spec(model.schema))
    log.info("exported %s to %s/model.json + model.pdiparams (inputs: static_ids, seq_ids, seq_lengths, ad_ids)",
             what, out)
    return out


def add_args(parser):
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint epoch under runner.infer_load_path (default: runner.infer_end_epoch - 1)")
    parser.add_argument("--seeds", default=None, help="processed-layout .pkl of one campaign's seed set: "
                        "export the model fine-tuned on it, with -o runner.adaptation=finetune (default: none, the "
                        "meta-learned model)")
    parser.add_argument("--out", default=None, help="output directory (default: <checkpoint>/export)")


parser, main = runtime.Cli("Export MetaHeac for serving (paddle.jit.save)",
                           "python tools/export.py -m config.yaml --seeds seeds.pkl --out served "
                           "-o runner.infer_load_path=output_model", export, add_args).bound()


if __name__ == "__main__":
    main()
