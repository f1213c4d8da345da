"""Per-campaign adaptation as infer runs it (runner.adaptation=wide_cv:
routing mixture, cross-validated correction, scoring the candidates) over 8
hot and 8 cold campaigns, three ways side by side in one process, alternating:

- scipy:    each regression of a campaign's cross-validation (folds x kinds x C)
            fitted by itself with scipy's L-BFGS-B, as the package did before
            metaheac/logreg.py
- alone:    metaheac/logreg.py, one regression at a time
- together: metaheac/logreg.py, all of a campaign's regressions in one pass (shipped)

Prints seconds per way (best of the rounds), how far scores and AUC / GAUC
move from the scipy way, and the peak of Python allocations (tracemalloc)
adapting the largest campaign.

    python bench/adaptation.py [--rounds 3] [--quick]

Data: tools/gen_data.py with the full Tencent vocabulary, 40 training
campaigns, hot campaigns of 2,000-5,000 seeds and cold ones of 150-600; the
network is config_big.yaml meta-trained on it once (cached). Timings are
only comparable within one run.
"""
import argparse
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from common import BENCH_DIR, ROOT, config, threads_from_env

threads_from_env()

WAYS = ("scipy", "alone", "together")


def scipy_path(x, y, offsets, weights, cs, fit_a, groups):
    """logreg.fit_path's problems the way the package fitted them before it:
    each alone on its fitting rows, L-BFGS-B warm-started along C."""
    from scipy import optimize

    n_w, columns = x.shape[1], []
    for j in range(offsets.shape[1]):
        rows = weights[:, j] > 0
        xj, m, yj = x[rows], offsets[rows, j] if fit_a[j] else np.zeros(rows.sum()), y[rows]
        xt = xj.T.tocsr()

        def loss_and_grad(theta, c):
            w, a, b = theta[:n_w], theta[n_w], theta[n_w + 1]
            z = a * m + b + xj @ w
            r = c * (0.5 * (1.0 + np.tanh(0.5 * z)) - yj)
            loss = c * (np.logaddexp(0.0, z) - yj * z).sum() + 0.5 * w @ w
            return loss, np.concatenate([xt @ r + w, [r @ m, r.sum()]])

        theta = np.zeros(n_w + 2)
        theta[n_w] = 1.0
        path = []
        for c in cs:
            theta = optimize.minimize(loss_and_grad, theta, args=(c,), jac=True, method="L-BFGS-B",
                                      options={"maxiter": 200}).x
            path.append((theta[:n_w], theta[n_w] if fit_a[j] else 1.0, theta[n_w + 1]))
        columns.append(path)
    return [tuple(np.stack(parts, axis=-1) for parts in zip(*at_c)) for at_c in zip(*columns)]


def alone_path(fit_path):
    def fit_each(x, y, offsets, weights, cs, fit_a, groups):
        alone = [fit_path(x, y, offsets[:, j:j + 1], weights[:, j:j + 1], cs, fit_a[j:j + 1], groups)
                 for j in range(offsets.shape[1])]
        return [tuple(np.concatenate(parts, axis=-1) for parts in zip(*at_c)) for at_c in zip(*alone)]
    return fit_each


def trained(data, cfg_path, out):
    """The last checkpoint directory of config_big.yaml meta-trained on `data` (trained once)."""
    if not os.path.isdir(out):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m", cfg_path,
                        "-o", f"runner.train_data_dir={data}/train", f"runner.model_save_path={out}",
                        f"runner.cache_dir={BENCH_DIR}/cache"], check=True, capture_output=True)
    return os.path.join(out, str(max(int(d) for d in os.listdir(out) if d.isdigit())))


def gauc(results):
    """Candidates-weighted mean of per-campaign AUCs, and the pooled AUC."""
    from metaheac.metrics import auc

    aucs = [(auc(labels, scores), labels.size) for labels, scores in results]
    pooled = auc(np.concatenate([labels for labels, _ in results]), np.concatenate([s for _, s in results]))
    return sum(a * n for a, n in aucs) / sum(n for _, n in aucs), pooled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats of every way")
    parser.add_argument("--quick", action="store_true", help="2 + 2 small campaigns: a smoke test")
    args = parser.parse_args()

    from dygraph_model import DygraphModel
    from metaheac import combine, logreg
    from metaheac.adapt import campaign_rng
    from metaheac.config import with_defaults
    from reader_test import RecDataset
    from tools.gen_data import generate
    from tools.utils.checkpoint import load_checkpoint

    cfg_path = os.path.join(ROOT, "config_big.yaml")
    cfg = with_defaults(config([f"runner.cache_dir={BENCH_DIR}/cache"]))
    n, hot, cold = (2, (200, 400), (50, 150)) if args.quick else (8, (2000, 5000), (150, 600))
    data = os.path.join(BENCH_DIR, f"adapt_groups_config_big_{n}_{hot[1]}")
    if not os.path.exists(os.path.join(data, "oracle.json")):
        generate(data, seed=7, max_idxs=cfg["hyper_parameters.max_idxs"], n_train=40, n_hot=n, n_cold=n,
                 hot_seeds=hot, cold_seeds=cold)
    net = DygraphModel().create_model(cfg)
    load_checkpoint(trained(data, cfg_path, data + "_model"), net)
    net.eval()
    campaigns = {split: list(RecDataset([os.path.join(data, split, f"test_stage{i}.pkl") for i in (1, 2)], cfg))
                 for split in ("test_hot", "test_cold")}
    print(f"data: {data}: {n} hot campaigns of {hot[0]}-{hot[1]} seeds, {n} cold of {cold[0]}-{cold[1]}; "
          f"config_big.yaml network, runner.adaptation=wide_cv")

    shipped = logreg.fit_path
    solvers = {"scipy": scipy_path, "alone": alone_path(shipped), "together": shipped}

    def adapt(way, split):
        """(seconds, [(labels, scores)]) adapting and scoring every campaign of split."""
        logreg.fit_path = solvers[way]
        try:
            start, out = time.perf_counter(), []
            for c in campaigns[split]:
                fitted = combine.fit(net, c["stage1"], cfg, campaign_rng(cfg["runner.seed"], c["aid"]))
                out.append((c["stage2"]["labels"], combine.score(net, fitted, c["stage2"]["rows"],
                                                                 c["stage2"]["lengths"], cfg["runner.score_batch_size"])))
            return time.perf_counter() - start, out
        finally:
            logreg.fit_path = shipped

    seconds = {(way, split): [] for way in WAYS for split in campaigns}
    results = {}
    for _ in range(args.rounds):
        for way in WAYS:
            for split in campaigns:
                sec, results[way, split] = adapt(way, split)
                seconds[way, split].append(sec)

    largest = max(campaigns["test_hot"], key=lambda c: c["stage1"]["labels"].size)
    peaks = {}
    for way in WAYS:
        logreg.fit_path = solvers[way]
        tracemalloc.start()
        combine.fit(net, largest["stage1"], cfg, campaign_rng(cfg["runner.seed"], largest["aid"]))
        peaks[way] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        logreg.fit_path = shipped

    total_scipy = sum(min(seconds["scipy", s]) for s in campaigns)
    print(f"{'way':9} {'hot s':>7} {'cold s':>7} {'total s':>8} {'speed-up':>8}  {'max |score diff|':>16}  "
          f"{'hot GAUC / AUC':>17}  {'cold GAUC / AUC':>17}  {'peak MB':>7}")
    for way in WAYS:
        hot_s, cold_s = (min(seconds[way, s]) for s in ("test_hot", "test_cold"))
        diff = max(np.abs(a[1] - b[1]).max() for s in campaigns
                   for a, b in zip(results[way, s], results["scipy", s]))
        metrics = "  ".join("{:.5f} / {:.5f}".format(*gauc(results[way, s])) for s in ("test_hot", "test_cold"))
        print(f"{way:9} {hot_s:7.2f} {cold_s:7.2f} {hot_s + cold_s:8.2f} {total_scipy / (hot_s + cold_s):7.2f}x  "
              f"{diff:16.2e}  {metrics}  {peaks[way]:7.1f}")
    print(f"largest campaign for the peak: {largest['stage1']['labels'].size} seeds; "
          f"{args.rounds} rounds, best of each")


if __name__ == "__main__":
    main()
