"""Inference reader: one campaign at a time, its seed set (stage 1) and its
candidates (stage 2).

runner.test_data_dir holds `test_stage1.pkl` and `test_stage2.pkl`, or one
`<prefix>_stage1.pkl` / `<prefix>_stage2.pkl` pair as PaddleRec's download
script names them (`test_hot_stage1.pkl`, `test_cold_stage2.pkl`).
Campaigns present in one stage only cannot be evaluated; they are listed in
``self.unmatched`` and logged, never fatal.
"""
import logging
import os

import numpy as np
from paddle.io import IterableDataset

from metaheac.config import with_defaults
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import open_store

logger = logging.getLogger(__name__)

STAGE_FILES = ("test_stage1.pkl", "test_stage2.pkl")


def stage_files(file_list, where):
    """(stage-1 path, stage-2 path) among `file_list`, by the names above."""
    by_name = {os.path.basename(f): f for f in file_list}
    if all(n in by_name for n in STAGE_FILES):
        return tuple(by_name[n] for n in STAGE_FILES)
    pairs = sorted(n[:-len("_stage1.pkl")] for n in by_name
                   if n.endswith("_stage1.pkl") and n.replace("_stage1.pkl", "_stage2.pkl") in by_name)
    if len(pairs) == 1:
        return by_name[pairs[0] + "_stage1.pkl"], by_name[pairs[0] + "_stage2.pkl"]
    found = sorted(n for n in by_name if n.endswith(".pkl"))
    raise DataError(f"{where}: expected {STAGE_FILES[0]} (seed sets) and {STAGE_FILES[1]} (candidates), or one "
                    f"<prefix>_stage1.pkl / <prefix>_stage2.pkl pair such as test_hot_stage1.pkl; found "
                    f"{found or 'no .pkl file'}. Fix runner.test_data_dir")


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        config = with_defaults(config)
        where = os.path.dirname(file_list[0]) if file_list else config.get("runner.test_data_dir")
        self.schema = schema_from_config(config)
        cache_dir = config.get("runner.cache_dir")
        self.stage1, self.stage2 = (open_store(f, self.schema, cache_dir) for f in stage_files(file_list, where))
        aids1, aids2 = set(self.stage1.task_aids.tolist()), set(self.stage2.task_aids.tolist())
        self.aids = sorted(aids1 & aids2)
        self.unmatched = {"stage1_only": sorted(aids1 - aids2), "stage2_only": sorted(aids2 - aids1)}
        for stage, aids in self.unmatched.items():
            if aids:
                logger.warning("%d campaign(s) only in %s, not evaluated: %s", len(aids),
                               stage.replace("_only", ""), aids[:20])
        self.user_id_name = self.stage2.user_id_name(self.schema.user_id_col)
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
