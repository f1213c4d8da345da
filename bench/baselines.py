"""Per-campaign baselines a practitioner would reach for, fit on a campaign's
seeds (test_stage1) only and ranking its candidates (test_stage2).

    python bench/baselines.py --data DIR [-o key=value ...] [--methods logreg-bag,centroid,activity,logreg-mean]

Every scorer is scored exactly as infer.py scores the network
(metaheac/metrics.py through bench/accuracy.py's evaluate_scorer: AUC of
all candidates pooled, GAUC = mean per-campaign AUC, top-5% precision and
recall). Features are generic over the package's FeatureSchema
(metaheac.schema.schema_from_config), so the same baselines run on the
MovieLens tasks (bench/real_data.py) and on tools/gen_data.py's data.

The bag of ids (bag_of_ids): one column per row of the fused embedding table
(schema offsets); a static field puts a 1 at its id; a sequence field a 1
at each of its first `length` ids (counts: an id listed twice counts 2; ids
past `length` are padding and ignored). Ad fields are constant within a
campaign and left out.

  logreg-bag   L2 logistic regression on the bag of ids. C from LOGREG_CS
               (1e-3 .. 10, half-decade steps) by stratified k-fold CV on the
               seeds, k = min(5, minority class count), ROC AUC, refit on all
               seeds; C = 1 when the minority class has one seed; a one-class
               seed set gives every candidate the same score. liblinear with
               intercept_scaling=100 (its intercept penalty then negligible),
               fit over the columns the seeds have (a column no seed has gets
               weight 0 under L2 whatever the solver). liblinear and lbfgs
               give the same GAUC on real-rated to 0.001 (0.880 / 0.851 vs
               0.880 / 0.852) and liblinear takes 22 s for its 70 campaigns
               against lbfgs's 47 s (method logreg-bag-lbfgs), so SOLVER is
               liblinear.
  centroid     cosine of the candidate's L2-normalised bag to the direction
               mean(normalised positive seeds) - mean(normalised negative
               seeds); without negative seeds the positive mean; an empty
               bag scores 0.
  activity     the number of listed ids (sum of the sequence lengths).
  logreg-mean  bench/accuracy.py's LogReg: sequence fields mean-pooled
               (1/length each), the same CV. Kept for comparison.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402  (puts the repository root on sys.path)

LOGREG_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
LOGREG_FOLDS = 5
SOLVER = "liblinear"
METHODS = ("logreg-bag", "centroid", "activity", "logreg-mean")


def load_split(data_dir, schema):
    """[(aid, seeds DataFrame, candidates DataFrame)] of a test split (.pkl or
    .parquet stages, as reader_test finds them), by aid: infer.py's order."""
    from metaheac.store import read_dataframe, split_files

    files = [os.path.join(data_dir, n) for n in sorted(os.listdir(data_dir))]
    stage1, stage2 = (read_dataframe(p) for p in split_files(files, "test", (1, 2), data_dir))
    by1, by2 = dict(tuple(stage1.groupby(schema.task_col))), dict(tuple(stage2.groupby(schema.task_col)))
    return [(aid, by1[aid], by2[aid]) for aid in sorted(set(by1) & set(by2))]


def bag_of_ids(frame, schema):
    """[n, schema.num_rows] CSR float64 of id counts (see the module docstring)."""
    from scipy import sparse

    n = len(frame)
    rows, cols = [], []
    for f in schema.static:
        rows.append(np.arange(n))
        cols.append(frame[f.name].to_numpy(np.int64) + f.offset)
    for f in schema.sequence:
        ids = np.stack(frame[f.name].to_numpy()).reshape(n, -1)[:, :f.width].astype(np.int64)
        lengths = frame[f.length_col].to_numpy(np.int64)
        r, c = np.nonzero(np.arange(ids.shape[1])[None, :] < lengths[:, None])
        rows.append(r)
        cols.append(ids[r, c] + f.offset)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, schema.num_rows))
    return matrix.tocsr()  # duplicate (row, id) entries add up: counts


def activity(frame, schema):
    """[n] the number of listed ids: the sum of the sequence fields' lengths."""
    return sum(np.minimum(frame[f.length_col].to_numpy(np.float64), f.width) for f in schema.sequence) \
        if schema.sequence else np.zeros(len(frame))


def fit_logreg(x, y, seed, solver=SOLVER, cs=LOGREG_CS, folds=LOGREG_FOLDS):
    """A fitted L2 logistic regression (C by stratified CV on x, y; see the
    module docstring), or None for a one-class y."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    minority = int(min(y.sum(), y.size - y.sum()))
    if minority == 0:
        return None
    if solver == "liblinear":
        model = LogisticRegression(C=1.0, solver="liblinear", intercept_scaling=100.0, max_iter=2000)
    else:
        model = LogisticRegression(C=1.0, solver=solver, max_iter=5000)
    if minority >= 2:
        cv = StratifiedKFold(min(folds, minority), shuffle=True, random_state=seed)
        model = GridSearchCV(model, {"C": list(cs)}, cv=cv, scoring="roc_auc")
    return model.fit(x, y)


def logreg_bag_scorer(schema, seed, solver=SOLVER, features=bag_of_ids):
    def scorer(seeds, candidates):
        y = seeds[schema.label_col].to_numpy().astype(np.int64)
        x1, x2 = features(seeds, schema), features(candidates, schema)
        used = np.unique(x1.indices)
        model = fit_logreg(x1[:, used], y, seed, solver)
        if model is None:  # one-class seeds: nothing to learn, every candidate ties
            return np.full(x2.shape[0], float(y.mean()))
        return model.predict_proba(x2[:, used])[:, 1]
    return scorer


def normalise_rows(x):
    from scipy import sparse

    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sparse.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ x


def centroid_direction(x_seeds, y):
    """mean of the normalised positive rows minus that of the negative ones (dense [cols])."""
    xn = normalise_rows(x_seeds)
    pos, neg = y > 0.5, y <= 0.5
    d = np.asarray(xn[pos].mean(axis=0)).ravel() if pos.any() else np.zeros(xn.shape[1])
    if neg.any() and pos.any():
        d = d - np.asarray(xn[neg].mean(axis=0)).ravel()
    return d


def centroid_scorer(schema):
    def scorer(seeds, candidates):
        y = seeds[schema.label_col].to_numpy().astype(float)
        d = centroid_direction(bag_of_ids(seeds, schema), y)
        norm = np.linalg.norm(d)
        if norm == 0:
            return np.zeros(len(candidates))
        return normalise_rows(bag_of_ids(candidates, schema)) @ (d / norm)
    return scorer


def activity_scorer(schema):
    return lambda seeds, candidates: activity(candidates, schema)


def logreg_mean_scorer(schema, seed):
    from accuracy import logreg_scorer

    return logreg_scorer(schema, seed)


def scorers(schema, seed, methods=METHODS):
    make = {"logreg-bag": lambda: logreg_bag_scorer(schema, seed), "centroid": lambda: centroid_scorer(schema),
            "activity": lambda: activity_scorer(schema), "logreg-mean": lambda: logreg_mean_scorer(schema, seed),
            "logreg-bag-lbfgs": lambda: logreg_bag_scorer(schema, seed, solver="lbfgs")}
    return {m: make[m]() for m in methods}


def run(data_dir, schema, seed, methods=METHODS, splits=("test_hot", "test_cold")):
    """{method: {split: {summary, campaigns}, "seconds"}}."""
    from accuracy import evaluate_scorer

    loaded = {s: load_split(os.path.join(data_dir, s), schema) for s in splits}
    out = {}
    for name, scorer in scorers(schema, seed, methods).items():
        t0 = time.perf_counter()
        out[name] = {s: evaluate_scorer(loaded[s], schema, scorer) for s in splits}
        out[name]["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None):
    from metaheac.schema import schema_from_config
    from tools.utils.yaml_config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset dir with test_hot/ and test_cold/")
    ap.add_argument("--config", default=os.path.join(ROOT, "config.yaml"))
    ap.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    config = load_config(args.config, args.opt, cwd=os.getcwd())
    results = run(args.data, schema_from_config(config), config["runner.seed"], args.methods.split(","))
    for name, r in results.items():
        print(f"{name}: GAUC hot {r['test_hot']['summary']['gauc']:.4f} cold {r['test_cold']['summary']['gauc']:.4f} "
              f"({r['seconds']} s)")


if __name__ == "__main__":
    main()
