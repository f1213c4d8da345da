"""Accuracy of MetaHeac against simpler ways to expand an audience, on one
dataset in one run.

    python bench/accuracy.py [--heldout] [--seeds K] [--data DIR] [--seed N] [--scale S]
                             [--n-train N] [--n-hot N] [--n-cold N]
                             [--config config.yaml] [-o key=value ...]
                             [--workdir DIR] [--json PATH] [--verbose]

Every method ranks the stage-2 candidates of each test campaign (test_hot,
test_cold) and is scored with tools/utils/metrics.py exactly as infer.py
scores MetaHeac: global AUC over all candidates pooled, GAUC = mean
per-campaign AUC, precision/recall of the top 5% of each campaign's
candidates averaged over campaigns.

Rows of the tables:

* MetaHeac -- meta-trained by tools/trainer.py's train(config) with the
  config as given (plus the -o overrides), then fine-tuned on each campaign's
  seed set (stage 1) and evaluated by infer.py's evaluate(config). The
  checkpoint evaluated is always the last epoch, fixed before any test result
  is seen.
* Pooled -- the same network, data, seeds and training budget with
  hyper_parameters.local_lr=0: the inner SGD step then leaves the weights
  unchanged, so each first-order MAML step is a plain Adam step on the query
  batches of the sampled campaigns, i.e. ordinary multi-task training with no
  meta-learning. Fine-tuned and evaluated exactly like MetaHeac, so the
  difference between the two rows is what meta-learning adds.
* LogReg -- a scikit-learn logistic regression per campaign, fit on its seed
  set only (no other campaign is used). Features, as a sparse matrix: one-hot
  static ids plus, per sequence field, the mean one-hot of the first `length`
  ids (the same pooling the network uses). C is chosen from LOGREG_CS by
  stratified 5-fold cross-validation (ROC AUC) on the seed set (fewer folds
  when a class has fewer than 5 seeds; C=1 when it has only one); class_weight
  None; liblinear (its intercept scaled so that its penalty is negligible),
  fitted over the ids the seeds have (an id no seed has gets weight 0
  whatever C): the same GAUC as lbfgs over every id to 0.001 on the panel's
  "one" member, minutes faster per campaign on the full Tencent vocabulary.
* Oracle -- the planted click probability `p_true` of the candidates (only
  when the data has that column, i.e. made by tools/gen_data.py): the best
  any model could do.

The second table gives GAUC by seed-set size (terciles of the seed rows of
all test campaigns, hot and cold together), which shows whether the learnt
initialisation helps most where the seed set is small. Below the tables:
the last epoch's training loss of both networks next to the entropy of the
mean label and the planted model's own loss; a training loss below the
latter means the network fits noise in the training labels.

Data: by default a dataset is generated with tools.gen_data.generate using
the settings of the shipped sample data (seed 2021, scale 0.5, 40 train, 8 hot,
8 cold campaigns), so it equals data/. --heldout changes the default seed to
7: data never looked at while tuning the config. --data uses an existing
directory with train/, test_hot/ and test_cold/.

--seeds K trains each network K times (runner.seed, runner.seed + 1, ...)
and reports the mean of every metric, per-seed GAUC listed below the
tables: which experts a group of campaigns ends up routed to depends on the
initialisation, so single runs differ by ~0.01-0.03 GAUC.

--panel runs all of this on PANEL: datasets of tools/gen_data.py built
differently from each other (how a campaign's kind shows in its ad ids, how
far campaigns depart from their kind, the click model, seed-set sizes,
vocabulary, training size), each with the config its vocabulary calls for
(config.yaml for the sample vocabulary, config_big.yaml for the full
Tencent one; -o applies to both). Three members are HELD_OUT: never used to
choose a default, reported apart. It prints one row per member and the mean
and worst case of the others; --members picks some (screening), --no-pooled
skips the Pooled networks.

Everything is seeded (runner.seed for the networks, --seed for the data, the
LogReg folds from runner.seed), so a run is reproducible.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

from common import FULL_MAX_IDXS, ROOT

SPLITS = ("test_hot", "test_cold")
SHIPPED_SEED, HELDOUT_SEED = 2021, 7
LOGREG_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # CV picked both ends of a narrower grid
LOGREG_FOLDS = 5
METRICS = {"auc": "AUC", "gauc": "GAUC", "precision@5%": "P@5%", "recall@5%": "R@5%"}

# name -> tools.gen_data.generate arguments. Sizes are as small as still
# tell apart what is measured; "big" is the large member (~1.26M training rows).
SAMPLE, FULL = "config.yaml", "config_big.yaml"
PANEL = {
    "one": (SAMPLE, dict(seed=11, scale=0.5)),  # the shipped kind of data, another draw
    "several": (FULL, dict(seed=101, max_idxs=FULL_MAX_IDXS, kind_ids="several", train_rows=(300, 3000),
                           hot_seeds=(2000, 5000), cold_seeds=(150, 600), candidates=(1000, 2000), n_users=30000)),
    "none": (SAMPLE, dict(seed=102, kind_ids="none", n_train=60, hot_seeds=(1000, 3000), cold_seeds=(50, 200),
                          candidates=(800, 1500))),
    "shared-nonlinear": (SAMPLE, dict(seed=103, kind_ids="shared", click="interaction", departure=(5, 1.0),
                                      n_train=80, train_rows=(200, 1200), hot_seeds=(800, 2500),
                                      cold_seeds=(60, 300), candidates=(800, 1500))),
    "noisy-far": (FULL, dict(seed=104, max_idxs=FULL_MAX_IDXS, kind_ids="noisy", departure=(7, 1.2),
                             train_rows=(300, 3000), hot_seeds=(1000, 3000), cold_seeds=(100, 400),
                             candidates=(1000, 2000), n_users=30000)),
    "big": (FULL, dict(seed=105, max_idxs=FULL_MAX_IDXS, kind_ids="several", n_train=100,
                       train_rows=(3000, 30000), n_hot=20, n_cold=20, hot_seeds=(5000, 20000),
                       cold_seeds=(200, 1500), candidates=(1000, 2000), n_users=100000)),
    # held out: never looked at while choosing a default
    "heldout-none-far": (FULL, dict(seed=201, max_idxs=FULL_MAX_IDXS, kind_ids="none", departure=(7, 1.2),
                                    click="interaction", train_rows=(300, 3000), hot_seeds=(2000, 5000),
                                    cold_seeds=(150, 600), candidates=(1000, 2000), n_users=30000)),
    "heldout-several-200": (SAMPLE, dict(seed=202, kind_ids="several", click="interaction", n_train=200,
                                         train_rows=(150, 600), hot_seeds=(500, 2000), cold_seeds=(50, 150),
                                         candidates=(800, 1500))),
    # added after every choice was made: clicks driven by a latent user vector the ids reflect
    "heldout-latent": (SAMPLE, dict(seed=203, click="latent", kind_ids="several", n_train=60,
                                    hot_seeds=(800, 2500), cold_seeds=(60, 300), candidates=(800, 1500))),
}
HELD_OUT = ("heldout-none-far", "heldout-several-200", "heldout-latent")

_start = time.perf_counter()


def progress(message):
    print(f"[{time.perf_counter() - _start:6.1f}s] {message}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="existing dataset dir with train/, test_hot/, test_cold/ (else one is generated)")
    p.add_argument("--heldout", action="store_true",
                   help=f"generate with seed {HELDOUT_SEED} instead of the shipped data's {SHIPPED_SEED}")
    p.add_argument("--seed", type=int, help="generator seed (overrides --heldout)")
    p.add_argument("--scale", type=float, default=0.5, help="generator row-count multiplier")
    p.add_argument("--n-train", type=int, default=40, help="generated training campaigns")
    p.add_argument("--n-hot", type=int, default=8, help="generated hot test campaigns")
    p.add_argument("--n-cold", type=int, default=8, help="generated cold test campaigns")
    p.add_argument("--config", default=os.path.join(ROOT, "config.yaml"), help="config for MetaHeac and Pooled")
    p.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides for both MetaHeac and Pooled, e.g. -o runner.epochs=4")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each network with this many runner.seed values (seed, seed+1, ...) and "
                        "report the mean: single runs differ by ~0.01-0.03 GAUC with the seed")
    p.add_argument("--workdir", help="where data, checkpoints and infer outputs go (default: a new temp dir)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--verbose", action="store_true", help="show the trainer's and infer's own log")
    p.add_argument("--panel", action="store_true", help="run every PANEL dataset (see the docstring)")
    p.add_argument("--members", help="comma-separated PANEL members to run (implies --panel)")
    p.add_argument("--no-pooled", action="store_true", help="skip the Pooled networks")
    p.add_argument("--reuse", action="store_true",
                   help="take the networks an earlier run with the same --workdir trained (same settings!)")
    return p.parse_args(argv)


# --------------------------------------------------------------------- data

def prepare_data(args, workdir):
    if args.data:
        return os.path.abspath(args.data)
    from tools.gen_data import generate

    seed = args.seed if args.seed is not None else (HELDOUT_SEED if args.heldout else SHIPPED_SEED)
    out = os.path.join(workdir, f"data_seed{seed}_s{args.scale}_{args.n_train}-{args.n_hot}-{args.n_cold}")
    progress(f"generating data (seed {seed}, scale {args.scale}, {args.n_train} train / {args.n_hot} hot / "
             f"{args.n_cold} cold campaigns) in {out}")
    generate(out, seed=seed, n_train=args.n_train, n_hot=args.n_hot, n_cold=args.n_cold, scale=args.scale)
    return out


def load_split(data_dir, split, schema):
    """[(aid, seeds DataFrame, candidates DataFrame)] for campaigns in both stages, by aid
    (the order infer.py evaluates them in)."""
    import pandas as pd

    stage1, stage2 = (pd.read_pickle(os.path.join(data_dir, split, f"test_stage{i}.pkl")) for i in (1, 2))
    by_aid1, by_aid2 = dict(tuple(stage1.groupby(schema.task_col))), dict(tuple(stage2.groupby(schema.task_col)))
    return [(aid, by_aid1[aid], by_aid2[aid]) for aid in sorted(set(by_aid1) & set(by_aid2))]


def bayes_and_label_entropy(data_dir, schema):
    """(mean binary entropy of p_true, entropy of the mean label) of the training rows, in nats.

    The first is the cross-entropy of the planted model itself: a training loss
    below it means the network fits noise in the training labels.
    """
    import numpy as np
    import pandas as pd

    train = pd.read_pickle(os.path.join(data_dir, "train", "train_stage1.pkl"))

    def entropy(p):
        p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
        return -(p * np.log(p) + (1 - p) * np.log(1 - p))

    bayes = float(entropy(train["p_true"]).mean()) if "p_true" in train else None
    return bayes, float(entropy(train[schema.label_col].mean()))


# ----------------------------------------------------------------- networks

def network_config(config_path, opts, data_dir, run_dir, extra=()):
    """The config for one network run: the config and -o overrides, then
    this run's paths (all under run_dir, the repo's files are not touched)."""
    from tools.utils.yaml_config import load_config

    config = load_config(config_path, [*opts, *extra], cwd=os.getcwd())
    last = config["runner.epochs"] - 1  # the epoch evaluated is fixed in advance: the last one
    config.update({
        "config_abs_dir": ROOT,  # model package modules (dygraph_model, readers) live at the repo root
        "runner.train_data_dir": os.path.join(data_dir, "train"),
        "runner.model_save_path": os.path.join(run_dir, "model"),
        "runner.infer_load_path": None,
        "runner.infer_start_epoch": last,
        "runner.infer_end_epoch": last + 1,
        "runner.cache_dir": os.path.join(run_dir, "cache"),
        "runner.report_png": False,
        "runner.metrics_path": None,
    })
    return config


def run_network(name, config, data_dir, run_dir, reuse=False):
    """Train (or, with `reuse`, take the checkpoint a finished earlier run left), then
    adapt + evaluate on both splits: {split: payload, "train_loss", "seconds"}."""
    from infer import evaluate
    from tools.trainer import train

    t0 = time.perf_counter()
    last = os.path.join(config["runner.model_save_path"], str(config["runner.epochs"] - 1), "rec.pdparams")
    if reuse and os.path.isfile(last):
        progress(f"{name}: reusing {last}")
        result = {"train_loss": None}
    else:
        shutil.rmtree(config["runner.model_save_path"], ignore_errors=True)  # a rerun's scratch: the trainer refuses it
        progress(f"{name}: training, {config['runner.epochs']} epoch(s) (local_lr "
                 f"{config['hyper_parameters.local_lr']})")
        trained = train(config)
        progress(f"{name}: trained in {time.perf_counter() - t0:.1f}s, last-epoch loss {trained['loss']:.4f}")
        result = {"train_loss": trained["loss"]}
    for split in SPLITS:
        t1 = time.perf_counter()
        (payload,) = evaluate({**config, "runner.test_data_dir": os.path.join(data_dir, split),
                               "runner.output_dir": os.path.join(run_dir, f"infer_{split}")})
        result[split] = {"summary": payload["summary"], "campaigns": payload["campaigns"]}
        progress(f"{name}: {split} fine-tuned and scored in {time.perf_counter() - t1:.1f}s")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def mean_of_runs(runs):
    """One result with every metric (summary and per campaign) averaged over runs of different seeds."""
    import numpy as np

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    out = {"train_loss": mean([r["train_loss"] for r in runs]), "seconds": round(sum(r["seconds"] for r in runs), 1)}
    for split in SPLITS:
        first = runs[0][split]
        summary = {k: mean([r[split]["summary"][k] for r in runs]) if isinstance(v, float) else v
                   for k, v in first["summary"].items()}
        campaigns = [{**c, "auc": mean([r[split]["campaigns"][i]["auc"] for r in runs])}
                     for i, c in enumerate(first["campaigns"])]
        out[split] = {"summary": summary, "campaigns": campaigns}
    return out


# ------------------------------------------------- scored-by-hand baselines

def campaign_row(aid, seed_rows, labels, scores):
    """A per-campaign row with the keys infer.py's campaigns carry."""
    from metaheac import metrics

    precision, recall = metrics.precision_recall_at(labels, scores, 0.05)
    return {"aid": int(aid), "seed_rows": int(seed_rows), "auc": metrics.auc(labels, scores),
            "precision@5%": precision, "recall@5%": recall}


def evaluate_scorer(campaigns, schema, scorer):
    """Summary and per-campaign rows of scorer(seeds, candidates) -> scores, as infer.py builds them."""
    import numpy as np

    from metaheac import metrics

    rows, all_labels, all_scores = [], [], []
    for aid, seeds, candidates in campaigns:
        labels = candidates[schema.label_col].to_numpy()
        scores = np.asarray(scorer(seeds, candidates), dtype=float)
        rows.append(campaign_row(aid, len(seeds), labels, scores))
        all_labels.append(labels)
        all_scores.append(scores)
    summary = metrics.summarize(rows, np.concatenate(all_labels), np.concatenate(all_scores))
    return {"summary": summary, "campaigns": rows}


def sparse_features(frame, schema):
    """[n, table rows] CSR: 1 at each static id, 1/length at each of the first
    `length` ids of a sequence field (the network's masked mean); ad fields
    are constant within a campaign and left out."""
    import numpy as np
    from scipy import sparse

    n = len(frame)
    cols, vals, row_idx = [], [], []
    for f in schema.static:
        cols.append(frame[f.name].to_numpy(np.int64) + f.offset)
        vals.append(np.ones(n))
        row_idx.append(np.arange(n))
    for f in schema.sequence:
        ids = np.stack(frame[f.name].to_numpy())[:, :f.width].astype(np.int64)
        lengths = frame[f.length_col].to_numpy(np.int64)
        real = np.arange(f.width)[None, :] < lengths[:, None]  # ids past `length` are padding
        r, c = np.nonzero(real)
        cols.append(ids[r, c] + f.offset)
        vals.append(1.0 / lengths[r])
        row_idx.append(r)
    matrix = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(row_idx), np.concatenate(cols))),
                               shape=(n, schema.num_rows))
    return matrix.tocsr()  # duplicates in a list add up, as in the mean


def logreg_scorer(schema, seed):
    """scorer(seeds, candidates) fitting a per-campaign logistic regression on the seeds."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    def scorer(seeds, candidates):
        y = seeds[schema.label_col].to_numpy()
        x1, x2 = sparse_features(seeds, schema), sparse_features(candidates, schema)
        used = np.unique(x1.indices)
        x1, x2 = x1[:, used], x2[:, used]
        minority = int(min(y.sum(), y.size - y.sum()))
        if minority == 0:  # one-class seed set: nothing to learn, every candidate ties
            return [float(y.mean())] * x2.shape[0]
        # liblinear penalises the intercept like a weight: scaled up, its penalty is negligible
        model = LogisticRegression(C=1.0, max_iter=2000, solver="liblinear", intercept_scaling=100.0)
        if minority >= 2:  # else too few of a class to cross-validate: keep the moderate C=1
            folds = StratifiedKFold(min(LOGREG_FOLDS, minority), shuffle=True, random_state=seed)
            # GridSearchCV rather than LogisticRegressionCV, whose arguments change across sklearn versions
            model = GridSearchCV(model, {"C": list(LOGREG_CS)}, cv=folds, scoring="roc_auc")
        return model.fit(x1, y).predict_proba(x2)[:, 1]

    return scorer


def oracle_scorer(seeds, candidates):
    return candidates["p_true"].to_numpy()


# ------------------------------------------------------------------ tables

def fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def main_table(results):
    labels = [f"{s.replace('test_', '')} {label}" for s in SPLITS for label in METRICS.values()]
    head = "| method | " + " | ".join(labels) + " |"
    lines = [head, "|---|" + "---:|" * (len(SPLITS) * len(METRICS))]
    for name, result in results.items():
        cells = [fmt(result[s]["summary"][m]) for s in SPLITS for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_buckets(results):
    """Terciles of seed rows over all test campaigns: [(label, {(split, aid)})]."""
    import numpy as np

    any_result = next(iter(results.values()))
    sizes = {(s, c["aid"]): c["seed_rows"] for s in SPLITS for c in any_result[s]["campaigns"]}
    keys = sorted(sizes, key=lambda k: (sizes[k], k))
    buckets = []
    for part in np.array_split(np.arange(len(keys)), 3):
        members = [keys[i] for i in part]
        if members:
            lo, hi = sizes[members[0]], sizes[members[-1]]
            buckets.append((f"{lo}-{hi} seeds ({len(members)} campaigns)", set(members)))
    return buckets


def bucket_gauc(results):
    """{bucket label: {method: mean per-campaign AUC}}."""
    import numpy as np

    table = {}
    for label, members in seed_buckets(results):
        table[label] = {}
        for name, result in results.items():
            aucs = [c["auc"] for s in SPLITS for c in result[s]["campaigns"]
                    if (s, c["aid"]) in members and c["auc"] is not None]
            table[label][name] = float(np.mean(aucs)) if aucs else None
    return table


def bucket_table(buckets):
    methods = list(next(iter(buckets.values())))
    lines = ["| seed-set size | " + " | ".join(f"{m} GAUC" for m in methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for label, row in buckets.items():
        lines.append(f"| {label} | " + " | ".join(fmt(row[m]) for m in methods) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------- main

def run_dataset(args, data_dir, config_path, opts, workdir, networks):
    """Every method on one dataset: ({method: result}, {network: per-seed GAUCs})."""
    from metaheac.schema import schema_from_config
    from tools.utils.yaml_config import load_config

    base = load_config(config_path, opts, cwd=os.getcwd())
    schema, seed = schema_from_config(base), base["runner.seed"]
    results, per_seed = {}, {}
    for name, extra in networks:
        runs = []
        for s in range(seed, seed + args.seeds):
            run_dir = os.path.join(workdir, name.lower() + (f"_seed{s}" if args.seeds > 1 else ""))
            config = network_config(config_path, opts, data_dir, run_dir, (*extra, f"runner.seed={s}"))
            runs.append(run_network(f"{name} (seed {s})" if args.seeds > 1 else name, config, data_dir, run_dir,
                                    args.reuse))
        results[name] = mean_of_runs(runs)
        per_seed[name] = [{sp: {m: r[sp]["summary"][m] for m in METRICS} for sp in SPLITS} for r in runs]

    splits = {s: load_split(data_dir, s, schema) for s in SPLITS}
    scorers = {"LogReg": logreg_scorer(schema, seed)}
    if "p_true" in splits[SPLITS[0]][0][2]:
        scorers["Oracle"] = oracle_scorer
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        results[name] = {s: evaluate_scorer(splits[s], schema, scorer) for s in SPLITS}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        progress(f"{name}: scored both splits in {results[name]['seconds']:.1f}s")
    return results, per_seed


def panel_table(rows, methods):
    """One line per member (GAUC hot / cold of each method, cold gap closed by
    MetaHeac), then mean and worst case of the tuning members and of the held-out ones."""
    import numpy as np

    head = ("| dataset | " + " | ".join(f"{m} hot | {m} cold" for m in methods)
            + " | MetaHeac - LogReg hot | MetaHeac - LogReg cold | cold gap closed |")
    lines = [head, "|---|" + "---:|" * (2 * len(methods) + 3)]

    def cells(values):
        return [values[m][s] for m in methods for s in ("hot", "cold")] + \
               [values["d_hot"], values["d_cold"], values["closed"]]

    def line(label, values):
        return f"| {label} | " + " | ".join(fmt(v) for v in values) + " |"

    for group, members in (("tuning", [r for r in rows if not r["held_out"]]),
                           ("held out", [r for r in rows if r["held_out"]])):
        for r in members:
            lines.append(line(r["name"], cells(r)))
        if len(members) > 1:
            table = np.array([[np.nan if v is None else v for v in cells(r)] for r in members], dtype=float)
            lines.append(line(f"**mean, {group}**", np.nanmean(table, axis=0)))
            lines.append(line(f"**worst, {group}**", np.nanmin(table, axis=0)))
    return "\n".join(lines)


def run_panel(args, workdir, networks):
    from tools.gen_data import generate

    names = args.members.split(",") if args.members else list(PANEL)
    unknown = [n for n in names if n not in PANEL]
    if unknown:
        sys.exit(f"error: --members {unknown} are not panel members; choose from {list(PANEL)}")
    rows, raw = [], {}
    for name in names:
        config_name, gen_args = PANEL[name]
        data_dir = os.path.join(workdir, "data", name)
        if not os.path.exists(os.path.join(data_dir, "oracle.json")):
            progress(f"{name}: generating {gen_args}")
            generate(data_dir, **gen_args)
        opts = list(args.opt)
        if "max_idxs" in gen_args:
            opts.append("hyper_parameters.max_idxs=" + json.dumps(gen_args["max_idxs"]).replace(" ", ""))
        progress(f"{name}: {config_name}")
        results, per_seed = run_dataset(args, data_dir, os.path.join(ROOT, config_name), opts,
                                        os.path.join(workdir, "runs", name), networks)
        raw[name] = {"results": results, "per_seed": per_seed}
        gauc = {m: {s.replace("test_", ""): results[m][s]["summary"]["gauc"] for s in SPLITS} for m in results}
        lr, oracle = gauc["LogReg"]["cold"], gauc.get("Oracle", {}).get("cold")
        row = {"name": name, "held_out": name in HELD_OUT, **gauc,
               "d_hot": gauc["MetaHeac"]["hot"] - gauc["LogReg"]["hot"],
               "d_cold": gauc["MetaHeac"]["cold"] - lr,
               # the share of the LogReg-to-Oracle cold gap MetaHeac closes
               "closed": (gauc["MetaHeac"]["cold"] - lr) / (oracle - lr) if oracle and oracle > lr else None}
        rows.append(row)
        progress(f"{name}: " + ", ".join(f"{m} {v['hot']:.3f}/{v['cold']:.3f}" for m, v in gauc.items()))
    methods = list(raw[names[0]]["results"])
    print(f"\nPanel, GAUC (hot | cold); networks: mean of {args.seeds} runner.seed value(s)"
          f"{'; -o ' + ' '.join(args.opt) if args.opt else ''}.\n")
    print(panel_table(rows, methods))
    print(f"\nSeconds: total {time.perf_counter() - _start:.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"panel": {n: PANEL[n][0] for n in names}, "overrides": args.opt, "rows": rows, "raw": raw},
                      f, indent=1)
        print(f"wrote {args.json}")


def main(argv=None):
    args = parse_args(argv)

    from metaheac.errors import ConfigError
    from tools.utils import runtime
    from tools.utils.yaml_config import load_config

    try:  # a bad config or -o stops here, before any work, with the config's own message
        base = load_config(args.config, args.opt, cwd=os.getcwd())
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="metaheac_accuracy_"))
    os.makedirs(workdir, exist_ok=True)
    progress(f"work dir (data, checkpoints, infer outputs): {workdir}")
    runtime.configure_threads(base)  # before paddle is imported, as the tools do
    if args.verbose:
        runtime.setup_logging()
    else:  # the tools log every campaign; the progress lines here are enough
        logging.disable(logging.INFO)
    networks = [("MetaHeac", ())] + ([] if args.no_pooled else [("Pooled", ("hyper_parameters.local_lr=0",))])
    if args.panel or args.members:
        return run_panel(args, workdir, networks)

    from metaheac.schema import schema_from_config

    schema, seed = schema_from_config(base), base["runner.seed"]
    data_dir = prepare_data(args, workdir)
    results, per_seed = run_dataset(args, data_dir, args.config, args.opt, workdir, networks)
    splits = {s: load_split(data_dir, s, schema) for s in SPLITS}
    buckets = bucket_gauc(results)
    bayes, label_entropy = bayes_and_label_entropy(data_dir, schema)
    n_campaigns = {s: len(splits[s]) for s in SPLITS}
    n_candidates = {s: results["LogReg"][s]["summary"]["candidates"] for s in SPLITS}

    print(f"\nData: {data_dir} (hot {n_campaigns['test_hot']} campaigns / {n_candidates['test_hot']} candidates, "
          f"cold {n_campaigns['test_cold']} / {n_candidates['test_cold']}); config {args.config}"
          f"{' -o ' + ' '.join(args.opt) if args.opt else ''}; evaluated epoch {base['runner.epochs'] - 1}"
          f"{f'; networks: mean of runner.seed {seed}..{seed + args.seeds - 1}' if args.seeds > 1 else ''}.\n")
    print(main_table(results))
    print()
    print(bucket_table(buckets))
    if args.seeds > 1:
        print("\nGAUC per seed (hot / cold): " + "; ".join(
            f"{name} " + ", ".join(f"{r['test_hot']['gauc']:.3f} / {r['test_cold']['gauc']:.3f}" for r in runs)
            for name, runs in per_seed.items()))
    print(f"\nTraining loss, last epoch: " + ", ".join(f"{n} {fmt(results[n]['train_loss'])}" for n, _ in networks)
          + f" (MetaHeac's: query loss after the inner step); entropy of the mean training label "
          f"{label_entropy:.4f}" + (f", planted model's own loss (mean entropy of p_true) {bayes:.4f}"
                                     if bayes is not None else "") + ".")
    print("Seconds: " + ", ".join(f"{k} {v['seconds']}" for k, v in results.items())
          + f"; total {time.perf_counter() - _start:.0f}")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"data_dir": data_dir, "config": os.path.abspath(args.config), "overrides": args.opt,
                       "evaluated_epoch": base["runner.epochs"] - 1, "logreg_cs": LOGREG_CS,
                       "label_entropy": label_entropy, "bayes_loss": bayes, "results": results,
                       "network_runs_per_seed": per_seed,
                       "gauc_by_seed_size": buckets}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
