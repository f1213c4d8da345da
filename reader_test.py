"""Inference reader: one campaign at a time, its seed set (stage 1) and its
candidates (stage 2), from `test_stage1.pkl` and `test_stage2.pkl`.

Campaigns present in one stage only cannot be evaluated; they are listed in
``self.unmatched`` and logged, never fatal.
"""
import logging
import os

import numpy as np
from paddle.io import IterableDataset

from tools.utils.report import user_id_name
from tools.utils.schema import schema_from_config
from tools.utils.task_store import DataError, open_store

logger = logging.getLogger(__name__)

STAGE_FILES = ("test_stage1.pkl", "test_stage2.pkl")


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        by_name = {os.path.basename(f): f for f in file_list}
        missing = [n for n in STAGE_FILES if n not in by_name]
        if missing:
            where = os.path.dirname(file_list[0]) if file_list else config.get("runner.test_data_dir")
            raise DataError(f"{where}: missing {missing}; runner.test_data_dir must hold "
                            f"{STAGE_FILES[0]} (seed sets) and {STAGE_FILES[1]} (candidates)")
        self.schema = schema_from_config(config)
        cache_dir = config.get("runner.cache_dir")
        self.stage1, self.stage2 = (open_store(by_name[n], self.schema, cache_dir) for n in STAGE_FILES)
        aids1, aids2 = set(self.stage1.task_aids.tolist()), set(self.stage2.task_aids.tolist())
        self.aids = sorted(aids1 & aids2)
        self.unmatched = {"stage1_only": sorted(aids1 - aids2), "stage2_only": sorted(aids2 - aids1)}
        for stage, aids in self.unmatched.items():
            if aids:
                logger.warning("%d campaign(s) only in %s, not evaluated: %s", len(aids),
                               stage.replace("_only", ""), aids[:20])
        self.user_id_name = user_id_name(self.schema.user_id_col, self.stage2.uses_uid)
        if not self.aids:
            raise DataError(f"{self.stage1.source} and {self.stage2.source} share no campaign "
                            f"({self.schema.task_col}); nothing to evaluate")

    def __len__(self):
        return len(self.aids)

    def _stage(self, store, aid):
        start, end = store.task_range(aid)
        ids, lengths, labels = store.take(slice(start, end))
        return {"rows": self.schema.table_rows(ids), "lengths": lengths,
                "labels": labels, "user_ids": np.asarray(store.user_ids[start:end])}

    def __iter__(self):
        for aid in self.aids:
            yield {"aid": aid, "stage1": self._stage(self.stage1, aid), "stage2": self._stage(self.stage2, aid)}
