"""DygraphModel: the PaddleRec model contract the trainer and infer call.

The trainer calls ``train_forward`` and then does backward / optimizer step
itself; infer uses ``finetune_and_score`` for each campaign.
"""
import paddle

import net
from tools.utils import finetune, meta
from tools.utils.config import lr_scale
from tools.utils.schema import schema_from_config


class DygraphModel:
    def create_model(self, config):
        schema = schema_from_config(config)
        return net.MetaHeacNet(
            schema,
            embed_dim=config["hyper_parameters.embed_dim"],
            mlp_dims=config["hyper_parameters.mlp_dims"],
            num_expert=config["hyper_parameters.num_expert"],
            num_output=config["hyper_parameters.num_output"],
            dropout=config["hyper_parameters.dropout"],
            embedding_init_std=config["hyper_parameters.embedding_init_std"],
            expert_activation=config["hyper_parameters.expert_activation"],
            gate_fields=config["hyper_parameters.gate_fields"],
            wide=config["hyper_parameters.wide"],
            gate=config["hyper_parameters.gate"],
            gate_init_std=config["hyper_parameters.gate_init_std"])

    def create_feeds(self, batch, config):
        """Meta-batch from reader_train (numpy, see meta.build_meta_batch) -> tensors."""
        return {"rows": paddle.to_tensor(batch["rows"]),
                "tasks": [{k: paddle.to_tensor(v) for k, v in task.items() if k != "aid"}
                          for task in batch["tasks"]]}

    def create_loss(self, pred, label):
        return net.bce_loss(pred, label)

    def create_optimizer(self, dy_model, config, mode="train"):
        if mode != "train":  # per-campaign fine-tuning builds its own (tools/utils/finetune.py)
            return paddle.optimizer.Adam(learning_rate=config["hyper_parameters.optimizer.local_test_learning_rate"],
                                         parameters=dy_model.parameters())
        decay = config["hyper_parameters.optimizer.weight_decay"]
        # Per-parameter multipliers of the outer learning rate. A gate must
        # learn to route campaigns to experts before the embeddings memorise
        # the training rows, hence a faster gate; the wide weights start at 0
        # and need a faster rate to reach a regression's size in a few epochs.
        for name, p in dy_model.named_parameters():
            p.optimize_attr["learning_rate"] = lr_scale(config, net.param_group(name))
        return paddle.optimizer.Adam(
            learning_rate=config["hyper_parameters.optimizer.global_learning_rate"],
            parameters=dy_model.parameters(),
            weight_decay=paddle.regularizer.L2Decay(decay) if decay else None)

    def create_metrics(self):
        return [], []  # AUC is computed exactly at infer time (tools/utils/metrics.py)

    def num_samples(self, batch):
        """Rows processed by one meta-batch (support + query of every task)."""
        return sum(t["sup_labels"].shape[0] + t["qry_labels"].shape[0] for t in batch["tasks"])

    def train_forward(self, dy_model, metric_list, batch, config):
        """Mean query loss of a meta-batch after per-task inner adaptation."""
        loss = meta.meta_train_loss(
            dy_model, self.create_feeds(batch, config),
            local_lr=config["hyper_parameters.local_lr"],
            order=config["hyper_parameters.meta_order"],
            inner_steps=config["hyper_parameters.inner_steps"],
            adapt_rows=config["hyper_parameters.adapt_embedding"] == "rows")
        return loss, metric_list, {"loss": loss}

    def infer_train_forward(self, dy_model, batch, config):
        """Loss of one fine-tuning batch: batch = [inputs (PaddleRec 4-list), labels]."""
        inputs, labels = batch
        return self.create_loss(dy_model(inputs), paddle.cast(labels, "float32"))

    def infer_forward(self, dy_model, metric_list, metric_list_local, batch, config):
        inputs, _ = batch
        return dy_model(inputs)

    def finetune_and_score(self, dy_model, campaign, config, rng):
        """Fine-tune a copy of the meta-learned model on the campaign's seeds, score its candidates."""
        return finetune.finetune_and_score(dy_model, campaign["stage1"], campaign["stage2"], config, rng)
