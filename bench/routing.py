"""How a trained model routes campaigns: its expert and critic gates per campaign.

    python bench/routing.py -m config.yaml [-o key=value ...] [--epoch N]
                            [--data DIR ...] [--by adCategoryId]

Loads the checkpoint of epoch N (default: the last one under
runner.model_save_path) and, for every campaign of each data dir (default:
runner.train_data_dir, runner.test_data_dir), evaluates both gates on the
campaign's rows and averages them. Campaigns are listed grouped by an ad
field (--by, default adCategoryId), so one sees whether campaigns alike in
that field share experts. Summary per data dir:

* sharpness -- mean over campaigns of the largest expert-gate weight
  (1/num_expert: uniform mixing, 1: one expert per campaign);
* experts used -- distinct dominant experts (argmax of the mean gate);
* purity -- fraction of campaigns whose dominant expert is the most common
  one among the campaigns with the same --by value (1: every group routed
  to one expert; it is 1 too when all campaigns share one expert, so read
  it with "experts used").
"""
import argparse
import glob
import os
import sys
from collections import Counter

from common import ROOT


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--config", default=os.path.join(ROOT, "config.yaml"))
    p.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: runner.infer_end_epoch - 1)")
    p.add_argument("--data", nargs="*", help="data dirs with *.pkl (default: train and test dirs of the config)")
    p.add_argument("--by", default="adCategoryId", help="ad field to group campaigns by")
    return p.parse_args(argv)


def campaign_gates(model, arrays):
    """{aid: (mean expert gate [K], mean critic gate [O], value of each ad field)} (numpy)."""
    import paddle

    schema = model.schema
    rows = schema.table_rows(arrays["ids"])
    out = {}
    with paddle.no_grad():
        for aid, a, b in zip(arrays["task_aids"], arrays["task_offsets"][:-1], arrays["task_offsets"][1:]):
            expert, critic = model.gates(paddle.to_tensor(rows[a:b]), paddle.to_tensor(arrays["lengths"][a:b]))
            ad = dict(zip([f.name for f in schema.data_ad], arrays["ids"][a, -len(schema.data_ad):].tolist()))
            out[int(aid)] = (expert.numpy().mean(0), critic.numpy().mean(0), ad)
    return out


def summarize(gates, by):
    dominant = {aid: int(g[0].argmax()) for aid, g in gates.items()}
    groups = {}
    for aid, (_, _, ad) in gates.items():
        groups.setdefault(ad[by], []).append(aid)
    majority = {v: Counter(dominant[a] for a in aids).most_common(1)[0][0] for v, aids in groups.items()}
    pure = sum(dominant[a] == majority[v] for v, aids in groups.items() for a in aids)
    sharp = sum(float(g[0].max()) for g in gates.values()) / len(gates)
    return {"campaigns": len(gates), "sharpness": sharp, "experts used": len(set(dominant.values())),
            "purity": pure / len(gates)}, groups


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from tools.campaign import load_model
    from tools.utils import runtime
    from tools.utils.yaml_config import load_config
    from metaheac.store import convert_frame, read_dataframe

    config = load_config(args.config, args.opt, cwd=os.getcwd())
    runtime.configure_threads(config)
    _, model, ckpt = load_model(config, args.epoch)
    if args.by not in [f.name for f in model.schema.ad]:
        sys.exit(f"error: --by {args.by!r} is not an ad field; choose from {[f.name for f in model.schema.ad]}")
    np.set_printoptions(precision=2, suppress=True)
    print(f"checkpoint {ckpt}; gates averaged over each campaign's rows")
    dirs = args.data or [d for d in (config["runner.train_data_dir"], config["runner.test_data_dir"]) if d]
    for data_dir in dirs:
        for path in sorted(glob.glob(os.path.join(data_dir, "*stage1.pkl"))):
            gates = campaign_gates(model, convert_frame(read_dataframe(path), model.schema, path))
            summary, groups = summarize(gates, args.by)
            print(f"\n{path}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in summary.items()))
            for value in sorted(groups):
                for aid in groups[value]:
                    expert, critic, _ = gates[aid]
                    print(f"  {args.by} {value:>4}  aid {aid:>6}  expert gate {expert}  critic gate {critic}")


if __name__ == "__main__":
    main()
