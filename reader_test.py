"""Inference reader: one campaign at a time, its seed set (stage 1) and its
candidates (stage 2).

runner.test_data_dir holds `test_stage1` and `test_stage2` (.pkl or .parquet),
or one `<prefix>_stage1` / `<prefix>_stage2` pair as PaddleRec's download
script names them (`test_hot_stage1.pkl`, `test_cold_stage2.pkl`); other data
files are not read (metaheac/store.py split_files). The candidates (stage 2)
may come without labels. Campaigns present in one stage only cannot be
evaluated; they are listed in ``self.unmatched`` and logged, never fatal.
"""
import logging

import numpy as np
from paddle.io import IterableDataset

from metaheac.config import with_defaults
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import open_store, split_files

logger = logging.getLogger(__name__)

def _say_user_ids(store, col):
    """Warn when audience files cannot name the candidates by the user id
    column, or will list fewer candidates than a campaign has (repeated ids)."""
    if not store.uses_uid:
        logger.warning("%s: no %r column (hyper_parameters.columns): the audience files name candidates by "
                       "their row in this file (header 'row')", store.source, col)
        return
    repeats = 0
    for start, end in zip(store.task_offsets[:-1], store.task_offsets[1:]):
        repeats += int(end - start) - np.unique(np.asarray(store.user_ids[start:end])).size
    if repeats:
        logger.warning("%s: column %r: %d candidate(s) repeat a user id of their campaign; the audience files list "
                       "each user once, by its best-scoring row (the metrics count every row). Fix: drop the "
                       "duplicate rows", store.source, col, repeats)


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        config = with_defaults(config)
        self.schema, cache_dir = schema_from_config(config), config.get("runner.cache_dir")
        seeds, candidates = split_files(file_list, "test", (1, 2), config.get("runner.test_data_dir"))
        self.stage1 = open_store(seeds, self.schema, cache_dir)
        self.stage2 = open_store(candidates, self.schema, cache_dir, labelled=False)
        aids1, aids2 = set(self.stage1.task_aids.tolist()), set(self.stage2.task_aids.tolist())
        self.aids = sorted(aids1 & aids2)
        self.unmatched = {"stage1_only": sorted(aids1 - aids2), "stage2_only": sorted(aids2 - aids1)}
        for stage, aids in self.unmatched.items():
            if aids:
                logger.warning("%d campaign(s) only in %s, not evaluated: %s", len(aids),
                               stage.replace("_only", ""), aids[:20])
        self.user_id_name = self.stage2.user_id_name(self.schema.user_id_col)
        _say_user_ids(self.stage2, self.schema.user_id_col)
        if not self.aids:
            raise DataError(f"{self.stage1.source} and {self.stage2.source} share no campaign "
                            f"({self.schema.task_col}); nothing to evaluate")

    def __len__(self):
        return len(self.aids)

    def _stage(self, store, aid):
        start, end = store.task_range(aid)
        ids, lengths, labels = store.take(slice(start, end))
        return {"aid": aid, "rows": self.schema.table_rows(ids), "lengths": lengths,
                "labels": labels, "user_ids": np.asarray(store.user_ids[start:end])}

    def __iter__(self):
        for aid in self.aids:
            yield {"aid": aid, "stage1": self._stage(self.stage1, aid), "stage2": self._stage(self.stage2, aid)}
