"""Expand campaigns' audiences from a pool of users nobody labelled.

    python tools/expand.py -m config.yaml --seeds seeds.parquet --candidates pool.parquet --out audience.csv
    python tools/expand.py -m config.yaml --seeds many.parquet --candidates pool.parquet --out audiences/

The seed file (.pkl or .parquet, the processed layout with labels) holds one
or more campaigns: each is adapted to its seeds as infer does
(metaheac/adapt.py). The pool (.pkl or .parquet) holds the user id column
and the user feature columns; label, campaign and ad columns are ignored.
The pool is read once, POOL_CHUNK_ROWS users at a time; every campaign
scores each chunk and keeps its top runner.audience_count (or
runner.audience_fraction of the pool); campaigns of one kind of adaptation
share what work they can (AdaptedCampaign.score_together). One campaign
with --out FILE.csv: that ranked file (rank, user id, score). Otherwise
--out is a directory: <aid>.csv per campaign and summary.csv.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tools.utils.startup  # noqa: E402,F401  (first: thread settings before paddle loads)

from metaheac.adapt import adapt  # noqa: E402
from metaheac.adapted import score_users  # noqa: E402
from metaheac.errors import ConfigError  # noqa: E402
from metaheac.pool import Pool, TopK  # noqa: E402
from tools.utils import distributed, report, runtime  # noqa: E402
from tools.utils.checkpoint import build_network, load_epoch  # noqa: E402
from tools.utils.progress import Progress  # noqa: E402
from tools.utils.seed_files import read_campaigns  # noqa: E402

log = runtime.logger
POOL_CHUNK_ROWS = 65536  # users read and scored at a time: bounds memory whatever the pool's size


def _outputs(out, campaigns):
    """{aid: audience file}, and the summary file or None."""
    if out.endswith(".csv"):
        if len(campaigns) > 1:
            raise ConfigError(f"--out {out}: the seed file holds {len(campaigns)} campaigns; give a directory "
                              f"(one <aid>.csv each and summary.csv)")
        return {campaigns[0]["aid"]: out}, None
    return {c["aid"]: os.path.join(out, f"{c['aid']}.csv") for c in campaigns}, os.path.join(out, "summary.csv")


def expand(config, args):
    t0 = time.time()
    report.claim_out(args.out)  # writable, nothing of others' in it: found before any work
    distributed.start(config)
    learned, ckpt = load_epoch(config, build_network(config), args.epoch)
    schema = learned.net.schema
    campaigns = read_campaigns(args.seeds, config)
    files, summary_file = _outputs(args.out, campaigns)
    pool = Pool(args.candidates, schema)
    k = report.audience_size(pool.size, config)
    for c in campaigns:
        start = time.time()
        c["adapted"], c["top"] = adapt(learned, c, config), TopK(k)
        log.info("campaign %d: adapted %s on %d seeds (%s: %s) in %.1fs", c["aid"], ckpt, c["labels"].size,
                 c["adapted"].method, c["adapted"].describe(), time.time() - start)

    progress = Progress(pool.size, every=POOL_CHUNK_ROWS)
    for positions, user_ids, ids, lengths in pool.chunks(POOL_CHUNK_ROWS):
        scores = score_users([c["adapted"] for c in campaigns], schema.user_rows(ids), lengths, pad=True)
        for c, campaign_scores in zip(campaigns, scores):
            c["top"].add(campaign_scores, positions, user_ids)
        done = int(positions[-1]) + 1
        if progress.due(done):
            log.info("scored %s users x %d campaign(s)", progress.status(done, "users"), len(campaigns))

    summary, audiences = [], {}
    for c in campaigns:
        scores, users = c["top"].ranked()
        audiences[files[c["aid"]]] = report.ranked_audience(scores, users, scores.size)
        summary.append({"aid": c["aid"], "seed_rows": int(c["labels"].size), "seed_positives": int(c["labels"].sum()),
                        "adaptation": c["adapted"].method, "adapted": c["adapted"].describe(),
                        "pool_users": pool.size, "audience_size": int(scores.size),
                        "cutoff_score": float(scores[-1]), "file": files[c["aid"]]})
    report.write_expanded(args.out, audiences, {key: [row[key] for row in summary] for key in summary[0]},
                          schema.user_id_col)  # whole or not at all
    log.info("ranked %d users for %d campaign(s), kept the top %d each, wrote %s in %.1fs", pool.size,
             len(campaigns), k, summary_file or files[campaigns[0]["aid"]], time.time() - t0)
    return summary


def add_args(parser):
    parser.add_argument("--seeds", required=True,
                        help="seed users of one or more campaigns (.pkl or .parquet, processed layout, labelled)")
    parser.add_argument("--candidates", required=True,
                        help="the pool to rank (.pkl or .parquet): user id and user feature columns")
    parser.add_argument("--out", required=True,
                        help="FILE.csv (one campaign) or a directory (<aid>.csv per campaign + summary.csv)")
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint epoch under runner.infer_load_path (default: runner.infer_end_epoch - 1)")


parser, main = runtime.Cli("Rank a pool of users for one or more campaigns (audience expansion)",
                           "python tools/expand.py -m config.yaml --seeds seeds.parquet --candidates pool.parquet "
                           "--out audiences/ -o runner.audience_count=1000", expand, add_args).bound()


if __name__ == "__main__":
    main()
