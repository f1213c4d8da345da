"""Inference reader: one campaign at a time, its seed set (stage 1) and its
candidates (stage 2).

runner.test_data_dir holds `test_stage1` and `test_stage2` (.pkl or .parquet),
or one `<prefix>_stage1` / `<prefix>_stage2` pair as PaddleRec's download
script names them (`test_hot_stage1.pkl`, `test_cold_stage2.pkl`). The
candidates (stage 2) may come without labels. Campaigns present in one stage
only cannot be evaluated; they are listed in ``self.unmatched`` and logged,
never fatal.
"""
import logging
import os

import numpy as np
from paddle.io import IterableDataset

from metaheac.config import with_defaults
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import DATA_SUFFIXES, open_store

logger = logging.getLogger(__name__)

STAGE_FILES = ("test_stage1.pkl", "test_stage2.pkl")


def stage_files(file_list, where):
    """(stage-1 path, stage-2 path) among `file_list`, by the names above."""
    by_name = {os.path.basename(f): f for f in file_list}
    for suffix in DATA_SUFFIXES:
        one, two = "stage1" + suffix, "stage2" + suffix
        prefixes = sorted(n[:-len(one)] for n in by_name if n.endswith(one) and n[:-len(one)] + two in by_name)
        if "test_" in prefixes:  # the canonical pair wins over others beside it
            prefixes = ["test_"]
        if len(prefixes) == 1:
            return by_name[prefixes[0] + one], by_name[prefixes[0] + two]
    found = sorted(n for n in by_name if n.endswith(DATA_SUFFIXES))
    raise DataError(f"{where}: expected {STAGE_FILES[0]} (seed sets) and {STAGE_FILES[1]} (candidates), or one "
                    f"<prefix>_stage1 / <prefix>_stage2 pair such as test_hot_stage1.pkl (.parquet alike); found "
                    f"{found or 'no data file'}. Fix runner.test_data_dir")


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        config = with_defaults(config)
        where = os.path.dirname(file_list[0]) if file_list else config.get("runner.test_data_dir")
        self.schema = schema_from_config(config)
        cache_dir = config.get("runner.cache_dir")
        seeds, candidates = stage_files(file_list, where)
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
