"""DygraphModel: the PaddleRec model contract.

A trainer (this package's tools/trainer.py or PaddleRec's own) calls
create_model, create_optimizer, create_metrics and train_forward, then does
backward and the optimizer step itself; infer.py adapts each campaign with
metaheac/adapt.py. Each entry point applies the model's defaults to the
config dict it is given, so a plain PaddleRec config works too.
"""
import numpy as np
import paddle

import net
from metaheac import meta
from metaheac.allocator import keep_freed_memory
from metaheac.config import lr_scale, with_defaults
from metaheac.schema import schema_from_config


def _tensor(value):
    """A meta-batch array as a tensor. PaddleRec's trainer passes the reader
    through a DataLoader (no batching: runner.train_batch_size unset), which
    has made the arrays tensors already."""
    return value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)


class DygraphModel:
    def create_model(self, config):
        config = with_defaults(config)
        keep_freed_memory()  # here, not in a tool, so PaddleRec's trainer gets it too
        hp = lambda key: config[f"hyper_parameters.{key}"]  # noqa: E731
        return net.MetaHeacNet(
            schema_from_config(config), embed_dim=hp("embed_dim"), mlp_dims=hp("mlp_dims"),
            num_expert=hp("num_expert"), num_output=hp("num_output"), gate_fields=hp("gate_fields"),
            wide=hp("wide"), gate=hp("gate"))

    def create_feeds(self, batch, config):
        """Meta-batch (tasks, rows) from reader_train (metaheac.rows.build_meta_batch) -> tensors."""
        tasks, rows = batch
        return [{k: _tensor(v) for k, v in task.items() if k != "aid"} for task in tasks], _tensor(rows)

    def create_optimizer(self, dy_model, config):
        config = with_defaults(config)
        decay = config["hyper_parameters.optimizer.weight_decay"]
        # Per-group multipliers of the outer learning rate. A gate must learn
        # to route campaigns to experts before the embeddings memorise the
        # training rows, hence a faster gate; the wide weights start at 0 and
        # need a faster rate to reach a regression's size in a few epochs.
        # The row tables' decay is added to their gradient by the meta step (meta.DecayedRows).
        for name, p in dy_model.named_parameters():
            p.optimize_attr["learning_rate"] = lr_scale(config, dy_model.param_group(name))
            own = decay and name not in dy_model.row_tables
            p.regularizer = paddle.regularizer.L2Decay(decay) if own else None
        return paddle.optimizer.Adam(
            learning_rate=config["hyper_parameters.optimizer.global_learning_rate"],
            parameters=dy_model.parameters())

    def create_metrics(self):
        return [], []  # AUC is computed exactly, per campaign, at infer time (metaheac/metrics.py)

    def num_samples(self, batch):
        """Rows one meta-batch reads (support + query of every task)."""
        tasks, _ = batch
        return sum(int(np.prod(t["sup_labels"].shape)) + int(np.prod(t["qry_labels"].shape)) for t in tasks)

    def train_forward(self, dy_model, metric_list, batch, config):
        """Mean query loss of a meta-batch after per-task inner adaptation:
        (loss, metric_list, tensors to print), as PaddleRec's trainer expects."""
        config = with_defaults(config)
        loss = meta.meta_train_loss(
            dy_model, *self.create_feeds(batch, config),
            local_lr=config["hyper_parameters.local_lr"],
            order=config["hyper_parameters.meta_order"],
            inner_steps=config["hyper_parameters.inner_steps"],
            table_decay=config["hyper_parameters.optimizer.weight_decay"])
        return loss, metric_list, {"loss": loss}
