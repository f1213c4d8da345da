"""Generate synthetic look-alike data from a planted click model.

The output follows the processed Tencent Look-alike layout read by MetaHeac::

    out_dir/train/train_stage1.pkl                      rows of the training campaigns
    out_dir/test_hot/test_stage{1,2}.pkl                hot campaigns: many seeds
    out_dir/test_cold/test_stage{1,2}.pkl               cold campaigns: few seeds
    out_dir/oracle.json                                 sizes and oracle AUCs

Stage 1 of a test campaign holds its seeds (labelled rows to fine-tune on) and
stage 2 its candidates (rows to rank).  Every row also carries ``uid`` and
``p_true``, the planted click probability, so models can be compared with the
oracle that knows it.

Planted model
-------------
* A pool of users.  Each has one id per static field and an id list per
  sequence field (random length in [0, width], padded with 0), with ids drawn
  from a Zipf-like distribution over the field's vocabulary.
* ``n_categories`` latent campaign categories.  Category k has a score table
  s_k[f][id] ~ N(0, sigma_f) for every field f.  A user's category-k score is
  the sum over static fields of s_k[f][id] plus, for each sequence field, the
  mean of s_k[f] over the listed ids (0 for an empty list).
* A campaign has a category, a smaller score table of its own on a few fields
  (so campaigns of one category are alike but not identical), a sharpness c
  and a bias b:  p_true = sigmoid(c * z + b), where z is the user's category
  plus campaign score standardised over the user pool and b makes the pool's
  mean p_true equal ``pos_rate``.  label ~ Bernoulli(p_true).
* The ad columns reveal the category: adCategoryId (up to a little noise) and
  productType are functions of it; the other ad ids are random per campaign.

How the data is built can be varied, so that a default is tested on data
built differently from the one it was chosen on (bench/accuracy.py --panel):

* kind_ids -- how a campaign's category shows in its ad ids: "one" (the
  above), "several" (each category owns several adCategoryIds; two categories
  share a productType), "shared" (two categories share an adCategoryId and
  productType is random), "noisy" (half the campaigns get a random
  adCategoryId) or "none" (all ad ids random: only the seeds tell the kind).
* departure -- how far a campaign departs from its category: (fields,
  fraction of the category's sigma), (3, 0.6) by default.
* click -- "additive" (the above) or "interaction": each category's score
  also has a product of two further additive scores, a non-linear term no
  model that is linear in the ids can fit; or "latent": each user has a
  latent vector u (LATENT_DIM) that all their ids reflect (each id has a
  vector c; every slot keeps, of LATENT_CANDIDATES Zipf-drawn ids, the one
  with the largest u.c plus noise), and category k scores u.w_k plus the
  product (u.a_k)(u.b_k): what one user's ids say about another's clicks is
  shared by every kind, which a model of the ids alone must learn id by id.

Train and test campaigns share the categories but not their aids, so what is
learnt across the training campaigns carries over to test campaigns that have
only a few seeds -- the setting meta-learning is meant for.

Usage:  python tools/gen_data.py --out my_data --seed 2021 [--scale 0.1 ...] [--force]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metaheac.columns import LABEL, TASK, TENCENT_AD, TENCENT_SEQUENCE, TENCENT_STATIC, TENCENT_WIDTHS, USER_ID, \
    length_col  # noqa: E402
from metaheac.files import atomic_write  # noqa: E402
from metaheac.metrics import auc  # noqa: E402
from tools.utils.yaml_config import HelpFormatter  # noqa: E402

STATIC, SEQUENCE, AD = TENCENT_STATIC, TENCENT_SEQUENCE, TENCENT_AD
FILES = ("train/train_stage1.pkl", "test_hot/test_stage1.pkl", "test_hot/test_stage2.pkl",
         "test_cold/test_stage1.pkl", "test_cold/test_stage2.pkl", "oracle.json")
COLUMNS = [LABEL, TASK, *STATIC, *SEQUENCE, *map(length_col, SEQUENCE), *AD, USER_ID, "p_true"]

DEFAULT_MAX_IDXS = [[3, 2, 855, 5, 7, 2, 1],
                    [124, 82, 12, 2000, 1000, 500, 500],
                    [78, 137, 14, 39, 32, 3]]
DEFAULT_WIDTHS = TENCENT_WIDTHS
USERS_PER_SCALE = 20_000

ZIPF_EXPONENT = 1.1
SIGMA_STATIC = 1.0
# A list's score is a mean over up to `width` ids, which shrinks its spread;
# a larger sigma keeps the sequence fields as informative as the static ones.
SIGMA_SEQUENCE = 2.0
PERTURBED_FIELDS = 3      # fields on which a campaign departs from its category
PERTURBATION = 0.6        # ... with this fraction of the category's sigma
AD_CATEGORY_NOISE = 0.1   # chance a campaign's adCategoryId is not its category's
KIND_IDS = ("one", "several", "shared", "noisy", "none")
CLICKS = ("additive", "interaction", "latent")
IDS_PER_KIND = 3          # kind_ids="several": adCategoryIds per category
INTERACTION = 0.5         # click="interaction" or "latent": weight of the product term
LATENT_DIM = 8            # click="latent": size of the users' latent vectors
LATENT_CANDIDATES = 8     # ... ids drawn per slot, the one closest to the user's vector kept
MIN_ROWS = 10


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _zipf(rng, low, high, size):
    """Ids in [low, high]; id low + r has probability proportional to (r + 1) ** -ZIPF_EXPONENT."""
    p = np.arange(1, high - low + 2, dtype=float) ** -ZIPF_EXPONENT
    return low + rng.choice(len(p), size=size, p=p / p.sum())


def _make_users(rng, n_users, max_idxs, widths):
    static = {f: _zipf(rng, 0, m, n_users) for f, m in zip(STATIC, max_idxs[0])}
    seq, lengths = {}, {}
    for f, m, w in zip(SEQUENCE, max_idxs[1], widths):
        lengths[f] = rng.integers(0, w + 1, n_users)
        ids = _zipf(rng, 1, m, (n_users, w))  # id 0 is reserved for padding
        seq[f] = np.where(np.arange(w) < lengths[f][:, None], ids, 0)
    return static, seq, lengths


def _make_latent_users(rng, n_users, max_idxs, widths):
    """click="latent": users as _make_users, each slot's id chosen by the user's
    latent vector, and the vectors u [n_users, LATENT_DIM]."""
    u = rng.normal(size=(n_users, LATENT_DIM))
    static, seq, lengths = {}, {}, {}

    def pick(low, high, slots):  # [n_users, slots] ids, LATENT_CANDIDATES Zipf draws per slot, best u.c kept
        c = rng.normal(size=(high + 1, LATENT_DIM)) / np.sqrt(LATENT_DIM)
        cand = _zipf(rng, low, high, (n_users, slots, LATENT_CANDIDATES))
        fit = np.einsum("nd,nsqd->nsq", u, c[cand]) + rng.gumbel(size=cand.shape)
        return np.take_along_axis(cand, fit.argmax(-1)[..., None], -1)[..., 0]

    for f, m in zip(STATIC, max_idxs[0]):
        static[f] = pick(0, m, 1)[:, 0]
    for f, m, w in zip(SEQUENCE, max_idxs[1], widths):
        lengths[f] = rng.integers(0, w + 1, n_users)
        seq[f] = np.where(np.arange(w) < lengths[f][:, None], pick(1, m, w), 0)
    return (static, seq, lengths), u


def _tables(rng, fields, vocab, sigma, shape=()):
    """Random score tables field -> array (*shape, vocab[f]); padding id 0 of lists scores 0."""
    tables = {}
    for f in fields:
        t = rng.normal(0.0, sigma[f], (*shape, vocab[f]))
        if f in SEQUENCE:
            t[..., 0] = 0.0  # so the sum over a padded row is the sum over its list
        tables[f] = t
    return tables


def _score(tables, users):
    """Per-user score (..., n_users): static ids' scores plus the mean score of each list."""
    static, seq, lengths = users
    total = 0.0
    for f, t in tables.items():
        if f in STATIC:
            total = total + t[..., static[f]]
        else:
            total = total + t[..., seq[f]].sum(-1) / np.maximum(lengths[f], 1)
    return total


def _bias(logits, rate):
    """b with mean(sigmoid(logits + b)) == rate, by bisection (the mean is increasing in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(logits + mid).mean() < rate else (lo, mid)
    return 0.5 * (lo + hi)


def _labels(rng, p):
    """Bernoulli(p) labels, redrawn until both classes occur (every stage needs both)."""
    while True:
        y = (rng.random(len(p)) < p).astype(np.int64)
        if 0 < y.sum() < len(y):
            return y


def _sizes(rng, n, bounds, scale, skew=1.0):
    """n row counts in scale * [lo, hi]; skew > 1 makes most of them small and a few large."""
    lo, hi = bounds
    sizes = scale * (lo + (hi - lo) * rng.random(n) ** skew)
    return np.maximum(np.rint(sizes), MIN_ROWS).astype(np.int64)


def _frame(users, blocks):
    """DataFrame of the rows in blocks: dicts with uid, label, p_true and per-campaign aid/ad ids."""
    static, seq, lengths = users
    uid = np.concatenate([b["uid"] for b in blocks])

    def per_row(key):  # a per-campaign value repeated over the campaign's rows
        return np.concatenate([np.full(len(b["uid"]), b[key], np.int64) for b in blocks])

    cols = {"label": np.concatenate([b["label"] for b in blocks]), "aid": per_row("aid")}
    cols |= {f: static[f][uid] for f in STATIC}
    cols |= {f: list(seq[f][uid]) for f in SEQUENCE}
    cols |= {length_col(f): lengths[f][uid] for f in SEQUENCE}
    cols |= {f: per_row(f) for f in AD}
    cols |= {"uid": uid.astype(np.int64), "p_true": np.concatenate([b["p_true"] for b in blocks])}
    return pd.DataFrame(cols, columns=COLUMNS)


def generate(out_dir, seed=2021, max_idxs=None, widths=None, n_train=40, n_hot=8, n_cold=8,
             scale=1.0, n_users=None, n_categories=6, train_rows=(300, 1500),
             hot_seeds=(600, 1200), cold_seeds=(100, 250), candidates=(500, 800),
             pos_rate=0.2, sharpness=(1.3, 1.8), kind_ids="one", departure=(PERTURBED_FIELDS, PERTURBATION),
             click="additive"):
    """Write the synthetic dataset under out_dir and return the summary written to oracle.json.

    max_idxs: [[7 static], [7 sequence], [6 ad]] largest id per field (vocabulary = max_idx + 1).
    widths: padded width of the 7 sequence fields.  *_rows/*_seeds/candidates: (low, high)
    rows per campaign, multiplied by scale.  n_users defaults to 20000 * scale (at least 1000).
    sharpness: range of the per-campaign c in p_true = sigmoid(c * z + b); it sets the oracle AUC.
    kind_ids, departure, click: how the data is built (module docstring); the
    defaults give the shipped sample's kind of data, draw for draw.
    """
    rng = np.random.default_rng(seed)
    max_idxs = [list(map(int, g)) for g in (max_idxs or DEFAULT_MAX_IDXS)]
    widths = list(map(int, widths or DEFAULT_WIDTHS))
    if [len(g) for g in max_idxs] != [len(STATIC), len(SEQUENCE), len(AD)] or len(widths) != len(SEQUENCE):
        raise ValueError("max_idxs must have shape [[7], [7], [6]] and widths length 7")
    if min(max_idxs[1]) < 1:
        raise ValueError("sequence fields need max_idx >= 1 (id 0 is padding)")
    if kind_ids not in KIND_IDS or click not in CLICKS:
        raise ValueError(f"kind_ids must be one of {KIND_IDS} and click one of {CLICKS}")
    n_perturbed, perturbation = int(departure[0]), float(departure[1])
    n_users = n_users or max(1000, round(USERS_PER_SCALE * scale))

    vocab = {f: m + 1 for f, m in zip(STATIC + SEQUENCE + AD, sum(max_idxs, []))}
    sigma = {f: SIGMA_STATIC if f in STATIC else SIGMA_SEQUENCE for f in STATIC + SEQUENCE}
    if click == "latent":
        users, u = _make_latent_users(rng, n_users, max_idxs, widths)
        w, a, b = (rng.normal(size=(n_categories, LATENT_DIM)) for _ in range(3))
        category_scores = u @ w.T + INTERACTION * (u @ a.T) * (u @ b.T) / np.sqrt(LATENT_DIM)         # [n_users, K]
        category_scores = (category_scores - category_scores.mean(0)) / category_scores.std(0)
        # the spread of the additive model's static part, so a campaign's departure weighs as much there
        category_scores = category_scores.T * np.sqrt(len(STATIC) * SIGMA_STATIC ** 2)                 # [K, n_users]
    else:
        users = _make_users(rng, n_users, max_idxs, widths)
        category_scores = _score(_tables(rng, STATIC + SEQUENCE, vocab, sigma, (n_categories,)), users)
    category_ad = {f: rng.integers(0, vocab[f], n_categories) for f in ("adCategoryId", "productType")}
    if click == "interaction":  # [K, n_users] standardised, so the product has the scale of the sum
        a, b = (_score(_tables(rng, STATIC + SEQUENCE, vocab, sigma, (n_categories,)), users) for _ in range(2))
        a, b = ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True) for x in (a, b))
        z = (category_scores - category_scores.mean(1, keepdims=True)) / category_scores.std(1, keepdims=True)
        category_scores = z + INTERACTION * a * b
    if kind_ids == "several":
        category_ad["adCategoryId"] = rng.choice(vocab["adCategoryId"], (n_categories, IDS_PER_KIND), replace=False)
        category_ad["productType"] = category_ad["productType"][np.arange(n_categories) // 2]
    elif kind_ids == "shared":
        category_ad["adCategoryId"] = category_ad["adCategoryId"][np.arange(n_categories) // 2]

    n_total = n_train + n_hot + n_cold
    aids = 1 + rng.permutation(n_total)
    campaign_ids = rng.choice(vocab["campaignId"], n_total, replace=n_total > vocab["campaignId"])

    def campaign(i):
        """Planted p_true over the whole user pool and the constant columns of campaign i."""
        k = int(rng.integers(n_categories))
        fields = [(STATIC + SEQUENCE)[j] for j in rng.choice(len(STATIC + SEQUENCE), n_perturbed, replace=False)]
        own = _tables(rng, fields, vocab, {f: perturbation * sigma[f] for f in fields})
        s = category_scores[k] + _score(own, users)
        logits = rng.uniform(*sharpness) * (s - s.mean()) / s.std()
        p = _sigmoid(logits + _bias(logits, pos_rate))
        ad_category, product_type = category_ad["adCategoryId"][k], category_ad["productType"][k]
        if kind_ids == "several":
            ad_category = rng.choice(ad_category)
        if rng.random() < (0.5 if kind_ids == "noisy" else AD_CATEGORY_NOISE):
            ad_category = rng.integers(vocab["adCategoryId"])
        if kind_ids in ("shared", "none"):
            product_type = rng.integers(vocab["productType"])
        if kind_ids == "none":
            ad_category = rng.integers(vocab["adCategoryId"])
        cols = {"aid": aids[i], "category": k, "campaignId": campaign_ids[i], "adCategoryId": ad_category,
                "productType": product_type}
        cols |= {f: rng.integers(vocab[f]) for f in ("advertiserId", "creativeSize", "productId")}
        return p, cols

    def rows(p, cols, uid):
        return {**cols, "uid": uid, "p_true": p[uid], "label": _labels(rng, p[uid])}

    def draw(n):
        return rng.choice(n_users, n, replace=n > n_users)

    summary = {"seed": seed, "max_idxs": max_idxs, "widths": widths, "splits": {}}

    def save(df, rel):
        atomic_write(Path(out_dir) / rel, lambda tmp: df.to_pickle(tmp, compression=None))

    train = [rows(*campaign(i), draw(n)) for i, n in enumerate(_sizes(rng, n_train, train_rows, scale, skew=2.2))]
    df = _frame(users, train)
    save(df, "train/train_stage1.pkl")
    summary["splits"]["train"] = {"rows": len(df), "campaigns": n_train, "positive_rate": float(df.label.mean())}

    offset = n_train
    for split, n, seeds in (("test_hot", n_hot, hot_seeds), ("test_cold", n_cold, cold_seeds)):
        stage1, stage2, per_campaign = [], [], {}
        n_seeds, n_candidates = _sizes(rng, n, seeds, scale), _sizes(rng, n, candidates, scale)
        for i, n1, n2 in zip(range(offset, offset + n), n_seeds, n_candidates):
            p, cols = campaign(i)
            uid = draw(n1 + n2)  # seeds and candidates are distinct users (pool permitting)
            stage1.append(rows(p, cols, uid[:n1]))
            stage2.append(rows(p, cols, uid[n1:]))
            per_campaign[str(cols["aid"])] = {"category": cols["category"], "seeds": int(n1), "candidates": int(n2),
                                              "oracle_auc": auc(stage2[-1]["label"], stage2[-1]["p_true"])}
        offset += n
        df1, df2 = _frame(users, stage1), _frame(users, stage2)
        save(df1, f"{split}/test_stage1.pkl")
        save(df2, f"{split}/test_stage2.pkl")
        summary["splits"][split] = {
            "rows_stage1": len(df1), "rows_stage2": len(df2), "campaigns": n,
            "positive_rate_stage1": float(df1.label.mean()), "positive_rate_stage2": float(df2.label.mean()),
            "oracle_auc": auc(df2.label, df2.p_true),
            "oracle_gauc": float(np.mean([c["oracle_auc"] for c in per_campaign.values()])),
            "per_campaign": per_campaign}

    atomic_write(Path(out_dir) / "oracle.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return summary


def write_pool(path, n_users, seed=0, max_idxs=None, widths=None, rows_per_group=65536):
    """Write a pool of n_users users nobody labelled (uid and the user feature
    columns only) to `path`: Parquet, written group by group straight from the
    id arrays (no per-cell objects, so millions of users fit in little
    memory), or a pickled DataFrame for a .pkl path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    max_idxs = [list(map(int, g)) for g in (max_idxs or DEFAULT_MAX_IDXS)]
    widths = list(map(int, widths or DEFAULT_WIDTHS))
    rng = np.random.default_rng(seed)
    frames = []

    def write(tmp):
        writer = None
        for start in range(0, n_users, rows_per_group):
            n = min(rows_per_group, n_users - start)
            static, seq, lengths = _make_users(rng, n, max_idxs, widths)
            uid = np.arange(start, start + n, dtype=np.int64)
            if not str(path).endswith(".parquet"):
                frames.append(pd.DataFrame({USER_ID: uid, **static, **{f: list(seq[f]) for f in SEQUENCE},
                                            **{length_col(f): lengths[f] for f in SEQUENCE}}))
                continue
            columns = {USER_ID: pa.array(uid), **{f: pa.array(static[f]) for f in STATIC}}
            for f, w in zip(SEQUENCE, widths):
                offsets = pa.array(np.arange(0, (n + 1) * w, w, dtype=np.int32))
                columns[f] = pa.ListArray.from_arrays(offsets, pa.array(seq[f].reshape(-1)))
                columns[length_col(f)] = pa.array(lengths[f])
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer:
            writer.close()
        else:
            pd.concat(frames, ignore_index=True).to_pickle(tmp, compression=None)
    atomic_write(path, write)
    return path


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                 epilog="example:\n  python tools/gen_data.py --out my_data --seed 7 --scale 0.5")
    ap.add_argument("--out", required=True, help="output directory (data/ holds the shipped sample)")
    ap.add_argument("--force", action="store_true", help="overwrite data already in --out")
    ap.add_argument("--seed", type=int, default=2021, help="random seed of users, categories and campaigns")
    ap.add_argument("--n-train", type=int, default=40, help="training campaigns")
    ap.add_argument("--n-hot", type=int, default=8, help="hot test campaigns (many seeds)")
    ap.add_argument("--n-cold", type=int, default=8, help="cold test campaigns (few seeds)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every row count")
    ap.add_argument("--n-users", type=int, default=None, help="user pool size (default 20000 * scale)")
    ap.add_argument("--n-categories", type=int, default=6,
                    help="latent campaign kinds (each with its own click model)")
    ap.add_argument("--kind-ids", choices=KIND_IDS, default="one",
                    help="how a campaign's kind shows in its ad ids (see the module docstring)")
    ap.add_argument("--departure", type=json.loads, default=[PERTURBED_FIELDS, PERTURBATION],
                    help="JSON [fields, fraction]: how far a campaign departs from its kind")
    ap.add_argument("--click", choices=CLICKS, default="additive",
                    help="planted click model: additive in the ids, with a non-linear term per kind, or "
                         "driven by a latent user vector the ids reflect")
    ap.add_argument("--max-idxs", type=json.loads, default=None,
                    help="JSON [[7 static], [7 sequence], [6 ad]] vocabulary sizes (default: config.yaml's)")
    ap.add_argument("--widths", type=json.loads, default=None,
                    help="JSON list of the 7 sequence widths (default: the Tencent data's)")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    existing = [f for f in FILES if os.path.exists(os.path.join(args.out, f))]
    if existing and not args.force:
        sys.exit(f"{args.out}: already holds data ({', '.join(existing[:2])}, ...); pass --force to overwrite it "
                 f"or choose another --out")

    start = time.perf_counter()
    s = generate(args.out, seed=args.seed, max_idxs=args.max_idxs, widths=args.widths, n_train=args.n_train,
                 n_hot=args.n_hot, n_cold=args.n_cold, scale=args.scale, n_users=args.n_users,
                 n_categories=args.n_categories, kind_ids=args.kind_ids, departure=args.departure,
                 click=args.click)
    tr = s["splits"]["train"]
    print(f"train      {tr['rows']:7d} rows  {tr['campaigns']:3d} campaigns  positive rate {tr['positive_rate']:.3f}")
    for split in ("test_hot", "test_cold"):
        t = s["splits"][split]
        print(f"{split:<10} {t['rows_stage1']:7d} seeds / {t['rows_stage2']} candidates  "
              f"{t['campaigns']:3d} campaigns  "
              f"positive rate {t['positive_rate_stage1']:.3f}/{t['positive_rate_stage2']:.3f}  "
              f"oracle AUC {t['oracle_auc']:.4f}  GAUC {t['oracle_gauc']:.4f}")
    print(f"wrote {', '.join(FILES)} under {args.out} in {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
