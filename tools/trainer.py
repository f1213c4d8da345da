"""Config-driven meta-training (PaddleRec's tools/trainer.py convention).

    python tools/trainer.py -m config.yaml [-o key=value ...]

Loads dygraph_model.py and the reader named by runner.train_reader_path from
the config's directory, runs runner.epochs epochs of ceil(rows / batch_size)
meta-batches, logs progress and writes <model_save_path>/<epoch>/rec.pdparams.
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import runtime  # noqa: E402
from tools.utils.config import require  # noqa: E402

log = runtime.logger


def train(config):
    # paddle is imported here, after run_cli has set the thread variables
    from tools.utils.checkpoint import load_checkpoint, save_checkpoint
    from tools.utils.prefetch import prefetch

    runtime.seed_everything(config["runner.seed"])
    device = runtime.set_device(config)
    dy_model_class = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
    reader = runtime.load_module(config, config["runner.train_reader_path"], "runner.train_reader_path")
    files = runtime.list_files(require(config, "runner.train_data_dir"), "runner.train_data_dir")
    dataset = reader.RecDataset(files, config)

    model = dy_model_class.create_model(config)
    optimizer = dy_model_class.create_optimizer(model, config, "train")
    if config["runner.model_init_path"]:
        loaded = load_checkpoint(config["runner.model_init_path"], model, optimizer, "runner.model_init_path")
        log.info("initialised from %s", loaded)
    metric_list, _ = dy_model_class.create_metrics()
    n_params = sum(int(math.prod(p.shape)) for p in model.parameters())
    log.info("model: %s parameters, %s, device %s, MKL threads %s", f"{n_params:,}", model.schema,
             device, os.environ.get("MKL_NUM_THREADS"))

    epochs, interval = config["runner.epochs"], config["runner.print_interval"]
    save_root = config["runner.model_save_path"]
    n_batches = dataset.num_batches() if hasattr(dataset, "num_batches") else None
    run_start, total_batches, total_samples, last_loss = time.time(), 0, 0, float("nan")
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        model.train()
        epoch_start = tick = time.time()
        reader_cost = compute_cost = loss_sum = 0.0
        win_batches = win_samples = epoch_samples = 0
        epoch_loss_sum, batch_id = 0.0, -1
        wait_start = time.time()
        for batch_id, batch in enumerate(prefetch(dataset, config["runner.prefetch"])):
            reader_cost += time.time() - wait_start
            step_start = time.time()
            loss, metric_list, _ = dy_model_class.train_forward(model, metric_list, batch, config)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss is {loss_value} at epoch {epoch}, meta-batch {batch_id}; stopping before a broken "
                    f"checkpoint is written. Lower hyper_parameters.optimizer.global_learning_rate or "
                    f"local_lr, or check the data")
            compute_cost += time.time() - step_start
            samples = dy_model_class.num_samples(batch) if hasattr(dy_model_class, "num_samples") else 0
            loss_sum += loss_value
            epoch_loss_sum += loss_value
            win_batches += 1
            win_samples += samples
            epoch_samples += samples
            if (batch_id + 1) % interval == 0 or batch_id + 1 == n_batches:
                elapsed = time.time() - tick
                busy = max(reader_cost + compute_cost, 1e-9)
                log.info("epoch %d batch %d/%s loss %.5f | %.2f meta-batches/s, %.0f samples/s | "
                         "reader %.1f%% compute %.1f%%", epoch, batch_id + 1, n_batches or "?",
                         loss_sum / win_batches, win_batches / elapsed, win_samples / elapsed,
                         100 * reader_cost / busy, 100 * compute_cost / busy)
                tick, reader_cost, compute_cost, loss_sum = time.time(), 0.0, 0.0, 0.0
                win_batches = win_samples = 0
            wait_start = time.time()
        done = batch_id + 1
        if done == 0:
            raise RuntimeError("the training reader produced no meta-batch; check runner.train_data_dir")
        last_loss = epoch_loss_sum / done
        path = save_checkpoint(save_root, epoch, model, optimizer, config)
        took = time.time() - epoch_start
        log.info("epoch %d done: %d meta-batches, mean loss %.5f, %.1fs (%.0f samples/s), saved %s",
                 epoch, done, last_loss, took, epoch_samples / took, path)
        total_batches += done
        total_samples += epoch_samples
    took = time.time() - run_start
    log.info("training finished: %d epochs, %d meta-batches, %d samples in %.1fs; final epoch loss %.5f; "
             "checkpoints in %s", epochs, total_batches, total_samples, took, last_loss, save_root)
    return {"epochs": epochs, "meta_batches": total_batches, "seconds": took, "loss": last_loss,
            "model_save_path": save_root}


def main(argv=None):
    return runtime.run_cli("MetaHeac meta-training", train, argv)


if __name__ == "__main__":
    main()
