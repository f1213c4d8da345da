"""Load a meta-trained checkpoint, read seed files and fine-tune campaigns;
shared by tools/export.py and tools/expand.py."""
import os

import numpy as np

from metaheac import adapt
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import TaskStore, convert_frame, read_dataframe
from tools.utils import runtime
from tools.utils.checkpoint import infer_root, load_checkpoint

log = runtime.logger


def load_model(config, epoch=None):
    """(DygraphModel, network with the checkpoint of `epoch` (default: the last
    evaluated one, runner.infer_end_epoch - 1), checkpoint path)."""
    runtime.seed_everything(config["runner.seed"])
    runtime.set_device(config)
    dy_model = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
    model = dy_model.create_model(config)
    model.eval()
    epoch = config["runner.infer_end_epoch"] - 1 if epoch is None else epoch
    path = load_checkpoint(os.path.join(infer_root(config), str(epoch)), model, key="runner.infer_load_path")
    return dy_model, model, path


def read_campaigns(path, config):
    """The campaigns of a seed file (.pkl or .parquet, processed layout, with
    labels), validated like any split: [dict of numpy arrays: rows (table
    rows), lengths, labels, aid, ad_ids (raw, [Fa])], in campaign order."""
    schema = schema_from_config(config)
    store = TaskStore(convert_frame(read_dataframe(path), schema, path), path)
    first_ad = len(schema.static) + schema.seq_width
    campaigns = []
    for aid in store.task_aids:
        start, end = store.task_range(aid)
        ids = np.asarray(store.ids[start:end])
        campaigns.append({"aid": int(aid), "rows": schema.table_rows(ids), "lengths": store.lengths[start:end],
                          "labels": store.labels[start:end], "ad_ids": ids[0, first_ad:]})
    return campaigns


def read_campaign_file(path, config):
    """The one campaign of a seed file (see read_campaigns)."""
    campaigns = read_campaigns(path, config)
    if len(campaigns) > 1:
        task_col = config["hyper_parameters.task_col"]
        raise DataError(f"{path}: holds {len(campaigns)} campaigns ({task_col} "
                        f"{[c['aid'] for c in campaigns[:5]]}...); give the seeds of one campaign")
    return campaigns[0]


def finetune_campaign(model, seeds, config):
    """adapt.finetune seeded as infer seeds the campaign."""
    return adapt.finetune(model, seeds, config, adapt.campaign_rng(config["runner.seed"], seeds["aid"]))
