"""Config-driven meta-training (PaddleRec's tools/trainer.py convention).

    python tools/trainer.py -m config.yaml [-o key=value ...]

Loads dygraph_model.py and the reader named by runner.train_reader_path from
the config's directory, runs runner.epochs epochs of ceil(rows / batch_size)
meta-batches, logs progress and writes <model_save_path>/<epoch>/rec.pdparams.
"""
import math
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import runtime  # noqa: E402
from tools.utils.config import ConfigError, require  # noqa: E402
from tools.utils.task_store import DataError  # noqa: E402

log = runtime.logger


class Progress:
    """Windowed training statistics for the periodic log line."""

    def __init__(self, n_batches, interval):
        self.n_batches, self.interval = n_batches, interval
        self.reset()

    def reset(self):
        self.tick = time.time()
        self.reader = self.compute = self.loss = 0.0
        self.batches = self.samples = 0

    def add(self, reader_s, compute_s, loss, samples):
        self.reader += reader_s
        self.compute += compute_s
        self.loss += loss
        self.batches += 1
        self.samples += samples

    def maybe_log(self, epoch, batch_id):
        if (batch_id + 1) % self.interval and batch_id + 1 != self.n_batches:
            return
        elapsed = max(time.time() - self.tick, 1e-9)
        busy = max(self.reader + self.compute, 1e-9)
        log.info("epoch %d batch %d/%s loss %.5f | %.2f meta-batches/s, %.0f samples/s | reader %.1f%% "
                 "compute %.1f%%", epoch, batch_id + 1, self.n_batches or "?", self.loss / max(self.batches, 1),
                 self.batches / elapsed, self.samples / elapsed, 100 * self.reader / busy,
                 100 * self.compute / busy)
        self.reset()


def _setup(config, rank, size):
    """Reader, model, optimizer and the first epoch (resume), on every rank."""
    from tools.utils.checkpoint import load_checkpoint, read_state

    dy_model_class = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
    reader = runtime.load_module(config, config["runner.train_reader_path"], "runner.train_reader_path")
    files = runtime.list_files(require(config, "runner.train_data_dir"), "runner.train_data_dir")
    dataset = reader.RecDataset(files, config)
    if hasattr(dataset, "set_rank"):
        dataset.set_rank(rank, size)
    model = dy_model_class.create_model(config)
    optimizer = dy_model_class.create_optimizer(model, config, "train")
    first_epoch = 0
    if config["runner.model_init_path"]:
        loaded = load_checkpoint(config["runner.model_init_path"], model, optimizer, "runner.model_init_path")
        state = read_state(loaded)
        if state:  # resume: a finished epoch continues with the next, an interrupted one is redone
            first_epoch = state["epoch"] + (1 if state["complete"] else 0)
        log.info("initialised from %s; training epochs %d..%d", loaded, first_epoch, config["runner.epochs"] - 1)
    return dy_model_class, dataset, model, optimizer, first_epoch


def train(config):
    # paddle is imported here, after run_cli has set the thread variables
    from tools.utils import distributed
    from tools.utils.checkpoint import save_checkpoint
    from tools.utils.prefetch import prefetch

    rank, size, device = distributed.start(config)
    error = setup = None
    try:
        setup = _setup(config, rank, size)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        error = exc
    distributed.check_all(error)
    dy_model_class, dataset, model, optimizer, first_epoch = setup
    distributed.broadcast_parameters(model)

    metric_list, _ = dy_model_class.create_metrics()
    n_params = sum(int(math.prod(p.shape)) for p in model.parameters())
    log.info("model: %s parameters, %s, device %s, MKL threads %s", f"{n_params:,}", model.schema,
             device, os.environ.get("MKL_NUM_THREADS"))
    if size > 1:
        log.info("data parallel over %d ranks: effective meta-batch %d tasks (task_count %d per rank), "
                 "gradients averaged every step", size, size * config["hyper_parameters.task_count"],
                 config["hyper_parameters.task_count"])

    epochs, save_root = config["runner.epochs"], config["runner.model_save_path"]
    skip_nonfinite = config["runner.nonfinite_loss"] == "skip"
    n_batches = dataset.num_batches() if hasattr(dataset, "num_batches") else None
    count_samples = getattr(dy_model_class, "num_samples", lambda batch: 0)
    progress = Progress(n_batches, config["runner.print_interval"])
    run_start, total_batches, total_samples, last_loss = time.time(), 0, 0, float("nan")

    def save(name, epoch, complete, done):
        if rank == 0:
            return save_checkpoint(save_root, name, model, optimizer, config,
                                   {"epoch": epoch, "complete": complete, "meta_batches_done": done})
        return os.path.join(save_root, str(name))

    with runtime.StopOnSignal() as stop:
        for epoch in range(first_epoch, epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            model.train()
            progress.reset()
            epoch_start = wait_start = time.time()
            done = skipped = epoch_samples = 0
            epoch_loss = 0.0
            for batch_id, batch in enumerate(prefetch(dataset, config["runner.prefetch"])):
                reader_s = time.time() - wait_start
                step_start = time.time()
                loss, metric_list, _ = dy_model_class.train_forward(model, metric_list, batch, config)
                loss_value, stopping = distributed.agree(float(loss), stop.signum is not None)
                if math.isfinite(loss_value):
                    loss.backward()
                    distributed.average_gradients(model)
                    optimizer.step()
                elif skip_nonfinite:
                    skipped += 1
                    log.warning("epoch %d meta-batch %d: loss is %s, batch skipped (runner.nonfinite_loss=skip)",
                                epoch, batch_id, loss_value)
                else:
                    raise FloatingPointError(
                        f"loss is {loss_value} at epoch {epoch}, meta-batch {batch_id}; stopped before a broken "
                        f"checkpoint is written. Lower hyper_parameters.optimizer.global_learning_rate or "
                        f"local_lr, check the data, or set runner.nonfinite_loss=skip")
                optimizer.clear_grad()
                samples = count_samples(batch) * size
                done += 1
                epoch_samples += samples
                epoch_loss += loss_value if math.isfinite(loss_value) else 0.0
                progress.add(reader_s, time.time() - step_start, loss_value, samples)
                progress.maybe_log(epoch, batch_id)
                if stopping:
                    path = save("interrupted", epoch, False, done)
                    log.warning("stopped by signal at epoch %d, meta-batch %d; saved %s. Resume with "
                                "-o runner.model_init_path=%s", epoch, done, path, path)
                    raise SystemExit(128 + (stop.signum or signal.SIGTERM))
                wait_start = time.time()
            if done == 0:
                raise RuntimeError("the training reader produced no meta-batch; check runner.train_data_dir")
            last_loss = epoch_loss / max(done - skipped, 1)
            path = save(epoch, epoch, True, done)
            took = time.time() - epoch_start
            log.info("epoch %d done: %d meta-batches%s, mean loss %.5f, %.1fs (%.0f samples/s), saved %s",
                     epoch, done, f" ({skipped} skipped)" if skipped else "", last_loss, took,
                     epoch_samples / took, path)
            total_batches += done
            total_samples += epoch_samples
    took = time.time() - run_start
    log.info("training finished: %d epochs, %d meta-batches, %d samples in %.1fs; final epoch loss %.5f; "
             "checkpoints in %s", epochs - first_epoch, total_batches, total_samples, took, last_loss, save_root)
    return {"epochs": epochs - first_epoch, "meta_batches": total_batches, "seconds": took, "loss": last_loss,
            "model_save_path": save_root, "model": model}


def main(argv=None):
    return runtime.run_cli("MetaHeac meta-training", train, argv)


if __name__ == "__main__":
    main()
