"""Load a meta-trained checkpoint and fine-tune it for one campaign; shared by
tools/export.py and tools/expand.py."""
import os

from metaheac import adapt
from metaheac.errors import DataError
from metaheac.schema import schema_from_config
from metaheac.store import TaskStore, convert_frame, read_dataframe
from tools.utils import runtime
from tools.utils.checkpoint import check_one_run, infer_root, load_checkpoint

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
    check_one_run(infer_root(config))
    path = load_checkpoint(os.path.join(infer_root(config), str(epoch)), model, key="runner.infer_load_path")
    return dy_model, model, path


def read_campaign_file(path, config):
    """One campaign's rows from a processed-layout pickle: dict of numpy arrays
    (rows as fused-table rows) plus user ids, validated like any split."""
    schema = schema_from_config(config)
    store = TaskStore(convert_frame(read_dataframe(path), schema, path), path)
    if store.num_tasks > 1:
        raise DataError(f"{path}: holds {store.num_tasks} campaigns ({schema.task_col} "
                        f"{store.task_aids[:5].tolist()}...); give the rows of one campaign")
    # one campaign: the stable sort by campaign kept the file's row order
    return {"rows": schema.table_rows(store.ids), "lengths": store.lengths, "labels": store.labels,
            "user_ids": store.user_ids, "user_id_name": store.user_id_name(schema.user_id_col),
            "aid": int(store.task_aids[0])}


def finetune_campaign(model, seeds, config, other_rows=()):
    """adapt.finetune seeded as infer seeds the campaign."""
    return adapt.finetune(model, seeds, config, adapt.campaign_rng(config["runner.seed"], seeds["aid"]), other_rows)
