"""Expand one campaign's audience without writing a test split.

    python tools/expand.py -m config.yaml --seeds seeds.pkl --candidates candidates.pkl \
        --out audience.csv [--epoch E] [-o runner.audience_count=1000]

Both files are processed-layout pickles of one campaign (the candidates'
labels, if any, are ignored). Fine-tunes the meta-learned model on the seeds,
as infer does, scores the candidates and writes the top
runner.audience_count (or runner.audience_fraction) of them, ranked, with
their user id (runner's user id column, else the candidate's row index).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import runtime  # noqa: E402

log = runtime.logger


def expand(config, args):
    from metaheac.adapt import infer_batch_size
    from metaheac.routing import describe_route
    from metaheac.scoring import score
    from tools.campaign import finetune_campaign, load_model, read_campaign_file
    from tools.utils import report

    t0 = time.time()
    _, model, ckpt = load_model(config, args.epoch)
    seeds = read_campaign_file(args.seeds, config)
    candidates = read_campaign_file(args.candidates, config)
    tuned = finetune_campaign(model, seeds, config, [candidates["rows"]])
    (rows,) = tuned.others
    scores = score(model, tuned.params, rows, candidates["lengths"], infer_batch_size(config))
    k = report.audience_size(scores.size, config)
    id_name = candidates["user_id_name"]
    report.write_csv(args.out, report.ranked_audience(scores, candidates["user_ids"], k), id_name)
    routed = describe_route(tuned.route)
    log.info("campaign %d: fine-tuned %s on %d seeds (%d steps%s), scored %d candidates, wrote the top %d to %s "
             "in %.1fs", seeds["aid"], ckpt, seeds["labels"].size, tuned.steps, f"; routed {routed}" if routed else "",
             scores.size, k, args.out, time.time() - t0)
    return args.out


def add_args(parser):
    parser.add_argument("--seeds", required=True, help="processed-layout .pkl: the campaign's seed users (labelled)")
    parser.add_argument("--candidates", required=True, help="processed-layout .pkl: users to rank")
    parser.add_argument("--out", required=True, help="output CSV: rank, user id, score")
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint epoch under runner.infer_load_path (default: runner.infer_end_epoch - 1)")


def parser():
    return runtime.cli_parser("Rank one campaign's candidates (audience expansion)",
                              "python tools/expand.py -m config.yaml --seeds seeds.pkl --candidates candidates.pkl "
                              "--out audience.csv -o runner.audience_count=1000", add_args)


def main(argv=None):
    return runtime.run_cli(parser(), expand, argv)


if __name__ == "__main__":
    main()
