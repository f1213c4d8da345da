"""Meta-training reader: meta-batches of `task_count` campaigns, each with a
support and a query batch of `batch_size` rows, sampled from the task store
of `train_stage1.pkl` (or one `<prefix>_stage1.pkl`; other .pkl files are not
read).

Sampling is O(batch) per task whatever the dataset size: campaigns are
contiguous row ranges of the store. Campaigns are drawn in proportion to
their rows; support and query are drawn independently from the campaign (as
in the authors' code and PaddleRec); a campaign with fewer rows than needed
is sampled with replacement instead of failing.

runner.meta_val_fraction keeps a share of the campaigns out of training for
meta-validation, once a trainer asks for them (validation_tasks;
tools/trainer.py keeps the meta-step that ranks them best).
"""
import logging
import math

import numpy as np
from paddle.io import IterableDataset

from metaheac.config import with_defaults
from metaheac.rows import build_meta_batch
from metaheac.schema import schema_from_config
from metaheac.store import open_store, split_files

logger = logging.getLogger(__name__)

VAL_STREAM = 7919      # the random stream of the meta-validation split (apart from the epochs')
VAL_QUERY_ROWS = 2048  # rows of a held-out campaign its validation loss is read on


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        config = with_defaults(config)
        files = split_files(file_list, "train", (1,), config.get("runner.train_data_dir"))
        self.schema = schema_from_config(config)
        self.batch_size = config["hyper_parameters.batch_size"]
        self.task_count = config["hyper_parameters.task_count"]
        self.seed = config["runner.seed"]
        self.epoch = 0
        self.rank, self.world = 0, 1
        self.stores = [open_store(f, self.schema, config.get("runner.cache_dir")) for f in files]
        # every campaign of every file: (store, first row, end row)
        self.tasks = [(s, int(a), int(b)) for s in self.stores
                      for a, b in zip(s.task_offsets[:-1], s.task_offsets[1:])]
        self.val_fraction = config["runner.meta_val_fraction"]
        self.val_tasks, self._validation = [], None
        self._index()
        small = int(sum(b - a < self.batch_size for _, a, b in self.tasks))
        if small:
            logger.info("%d of %d campaigns have fewer rows than batch_size=%d: they are sampled "
                        "with replacement", small, len(self.tasks), self.batch_size)
        logger.info("train data: %d rows, %d campaigns, %d meta-batches per epoch",
                    self.num_rows, len(self.tasks), self.num_batches())

    def _index(self):
        """Row count, ad rows and sampling probabilities of the training campaigns (self.tasks)."""
        sizes = np.array([b - a for _, a, b in self.tasks], dtype=np.float64)
        self.num_rows = int(sizes.sum())
        # table rows of every ad id (and cross) of the training campaigns: the ids routing may pick
        firsts = self.schema.table_rows(np.stack([np.asarray(s.ids[a]) for s, a, _ in self.tasks]))  # [T, C']
        self.ad_rows = sorted({int(r) for r in firsts[:, self.schema.first_ad_col:].ravel()})
        self.task_probs = sizes / sizes.sum()

    def _hold_out(self):
        """Move round(meta_val_fraction * campaigns) campaigns (at least 1,
        leaving at least 1), drawn with the run's seed, from self.tasks to
        self.val_tasks."""
        fraction, n = self.val_fraction, len(self.tasks)
        if fraction <= 0 or n < 2:
            return
        n_val = min(max(round(fraction * n), 1), n - 1)
        picked = set(np.random.default_rng([self.seed, VAL_STREAM]).choice(n, n_val, replace=False))
        self.val_tasks = [t for i, t in enumerate(self.tasks) if i in picked]
        self.tasks = [t for i, t in enumerate(self.tasks) if i not in picked]
        self._index()
        logger.info("meta-validation: %d campaigns held out; training on %d campaigns, %d rows, %d meta-batches "
                    "per epoch", n_val, len(self.tasks), self.num_rows, self.num_batches())

    def validation_tasks(self):
        """The held-out campaigns as (support, query) pairs of dicts of aid,
        rows (table rows), lengths, labels, built once (the same at every check):
        support is batch_size of a campaign's rows, a seed set; query up to
        VAL_QUERY_ROWS of the others. The first call holds them out of
        training: a trainer that never asks (PaddleRec's) trains on all."""
        if self._validation is None:
            self._hold_out()
            self._validation = []
            for store, start, end in self.val_tasks:
                rows = start + np.random.default_rng([self.seed, VAL_STREAM, start]).permutation(end - start)
                n_sup = min(self.batch_size, max(rows.size // 2, 1))
                parts = rows[:n_sup], rows[n_sup:n_sup + VAL_QUERY_ROWS]
                aid = int(store.aids[start])
                self._validation.append(tuple({"aid": aid, **dict(zip(("rows", "lengths", "labels"),
                                                                      self._take(store, np.sort(p))))}
                                              for p in (parts[0], parts[1] if parts[1].size else parts[0])))
        return self._validation

    def restore_validation(self):
        """Meta-validation off after all (its campaigns cannot be ranked): the
        held-out campaigns go back to training, in their first order, and
        validation_tasks() is empty from now on."""
        if self.val_tasks:
            store_order = {id(s): i for i, s in enumerate(self.stores)}
            self.tasks = sorted(self.tasks + self.val_tasks, key=lambda t: (store_order[id(t[0])], t[1]))
            self.val_tasks = []
            self._index()
        self._validation = []

    def campaigns(self):
        """(sizes [T], take) of the training campaigns: their row counts, and
        take(i) -> all of campaign i's rows [n, C] (table rows), lengths and
        labels (metaheac/groups.py)."""
        def take(i):
            store, start, end = self.tasks[i]
            return self._take(store, np.arange(start, end))

        return [end - start for _, start, end in self.tasks], take

    def num_batches(self):
        """Meta-batches per epoch: ceil(rows / batch_size), as PaddleRec and the
        authors; shared out over ranks in data-parallel training."""
        return math.ceil(self.num_rows / self.batch_size / self.world)

    def set_rank(self, rank, world):
        """Data-parallel training: this rank draws its own tasks."""
        self.rank, self.world = rank, world

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        key = [self.seed, self.epoch] if self.world == 1 else [self.seed, self.epoch, self.rank]
        rng = np.random.default_rng(key)
        self.epoch += 1
        for _ in range(self.num_batches()):
            picks = rng.choice(len(self.tasks), size=self.task_count, replace=True, p=self.task_probs)
            tasks = [self._task(self.tasks[t], rng) for t in picks]
            yield build_meta_batch(tasks, self.schema.num_rows)

    def _pick(self, start, end, rng):
        """Row indices of the support and the query batch of one campaign."""
        n, b = end - start, self.batch_size
        return start + rng.choice(n, size=b, replace=n < b), start + rng.choice(n, size=b, replace=n < b)

    def _take(self, store, rows):
        ids, lengths, labels = store.take(rows)
        return self.schema.table_rows(ids), lengths, labels

    def _task(self, task, rng):
        store, start, end = task
        sup, qry = self._pick(start, end, rng)
        sup_rows, sup_len, sup_y = self._take(store, sup)
        qry_rows, qry_len, qry_y = self._take(store, qry)
        return {"aid": int(store.aids[start]),
                "sup_rows": sup_rows, "sup_lengths": sup_len, "sup_labels": sup_y,
                "qry_rows": qry_rows, "qry_lengths": qry_len, "qry_labels": qry_y}
