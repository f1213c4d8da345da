"""Seed files: the labelled seeds of one or more campaigns (tools/expand.py,
tools/export.py)."""
import numpy as np

from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import TaskStore, convert_frame, read_dataframe


def read_campaigns(path, config):
    """The campaigns of a seed file (.pkl or .parquet, processed layout, with
    labels), validated like any split: [dict of numpy arrays: aid, rows
    (table rows), lengths, labels], in campaign order."""
    schema = schema_from_config(config)
    store = TaskStore(convert_frame(read_dataframe(path), schema, path), path)
    campaigns = []
    for aid in store.task_aids:
        start, end = store.task_range(aid)
        campaigns.append({"aid": int(aid), "rows": schema.table_rows(np.asarray(store.ids[start:end])),
                          "lengths": store.lengths[start:end], "labels": store.labels[start:end]})
    return campaigns


def read_campaign(path, config):
    """The one campaign of a seed file (see read_campaigns)."""
    campaigns = read_campaigns(path, config)
    if len(campaigns) > 1:
        raise DataError(f"{path}: holds {len(campaigns)} campaigns ({schema_from_config(config).task_col} "
                        f"{[c['aid'] for c in campaigns[:5]]}...); give the seeds of one campaign")
    return campaigns[0]
