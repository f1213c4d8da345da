"""Config-driven meta-training (PaddleRec's tools/trainer.py convention).

    python tools/trainer.py -m config.yaml [-o key=value ...]

Loads dygraph_model.py and the reader named by runner.train_reader_path from
the config's directory, runs runner.epochs epochs of ceil(rows / batch_size)
meta-batches, logs progress and writes <model_save_path>/<epoch>/rec.pdparams
and the loss curve <model_save_path>/train.png. Before the first meta-batch it
locks model_save_path (one run per directory), cleans the leftovers of killed
writes, refuses another run's checkpoints (runner.overwrite) and checks there
is room for a checkpoint.
"""
import contextlib
import math
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tools.utils.startup  # noqa: E402,F401  (first: thread settings before paddle loads)

import numpy as np  # noqa: E402

from metaheac import groups as campaign_groups  # noqa: E402
from metaheac.adapt import adapt  # noqa: E402
from metaheac.config import META_VAL_INTERVAL, require  # noqa: E402
from metaheac.errors import ConfigError, DataError  # noqa: E402
from metaheac.files import claim  # noqa: E402
from metaheac.learned import Learned  # noqa: E402
from metaheac.metrics import auc, mean_defined  # noqa: E402
from tools.utils import distributed, runtime  # noqa: E402
from tools.utils.checkpoint import INTERRUPTED, LOCK, check_one_run, checkpoint_runs, describe_runs, \
    load_checkpoint, new_run_id, read_state, refuse_nonfinite, save_checkpoint  # noqa: E402
from tools.utils.prefetch import prefetch  # noqa: E402
from tools.utils.progress import Progress, duration  # noqa: E402
from tools.utils.plots import draw_training  # noqa: E402

log = runtime.logger
PREFETCH = 4  # meta-batches the reader thread prepares ahead: enough to hide its time behind the step's


class Window:
    """Training statistics since the last progress line."""

    def __init__(self):
        self.reader = self.compute = self.loss = 0.0
        self.batches = self.samples = 0
        self.tick = time.perf_counter()

    def add(self, reader_s, compute_s, loss, samples):
        self.reader += reader_s
        self.compute += compute_s
        self.loss += loss
        self.batches += 1
        self.samples += samples

    def text(self):
        busy = max(self.reader + self.compute, 1e-9)
        rate = self.samples / max(time.perf_counter() - self.tick, 1e-9)
        return (f"loss {self.loss / max(self.batches, 1):.5f} | {rate:,.0f} samples/s | reader "
                f"{100 * self.reader / busy:.1f}% compute {100 * self.compute / busy:.1f}%")


class Validation:
    """Meta-validation on the campaigns the reader held out
    (runner.meta_val_fraction), every META_VAL_INTERVAL meta-steps: GAUC
    (mean AUC) on each one's query rows once its support rows, a seed set,
    have weighed the routings meta-training saw (runner.adaptation=routed,
    metaheac/adapt.py). Ranking rather than log-loss: the loss
    stops improving (the network grows over-confident) long before the
    ranking does. Keeps the best parameters so far; says when to stop."""

    def __init__(self, run):
        # PaddleRec's readers, and this one with no campaign held out, have none
        self.tasks = getattr(run.dataset, "validation_tasks", lambda: [])()
        if self.tasks and not _rankable(self.tasks):
            self.tasks = []
            run.dataset.restore_validation()
            log.warning("meta-validation off: the query rows of every held-out campaign are of one class, so GAUC "
                        "is undefined; training on all %d campaigns, each checkpoint holds its epoch's last step",
                        len(run.dataset.tasks))
        _warn_one_class(run.dataset)
        self.interval = META_VAL_INTERVAL
        self.patience = run.config["runner.meta_val_patience"]
        self.curve = []  # [(meta-step of this run, GAUC)]
        self.best, self.best_step, self.best_params, self.since_best = -math.inf, None, None, 0

    def __bool__(self):
        return bool(self.tasks)

    def check(self, run, step):
        """GAUC on the held-out campaigns now (meta-step `step` of this run); keeps the best parameters."""
        if self.curve and self.curve[-1][0] == step:
            return
        learned = Learned(run.model, None, frozenset(run.dataset.ad_rows))  # the network alone
        config = {**run.config, "runner.adaptation": "routed"}
        gauc = mean_defined(auc(query["labels"], adapt(learned, support, config).score(query["rows"], query["lengths"]))
                            for support, query in self.tasks)
        gauc = float("nan") if gauc is None else gauc
        self.curve.append((step, gauc))
        if gauc > self.best + 1e-7:
            self.best, self.best_step, self.since_best = gauc, step, 0
            self.best_params = {n: p.numpy().copy() for n, p in run.model.named_parameters()}
        else:
            self.since_best += 1
        log.info("meta-validation at meta-step %d: GAUC %.4f (best %.4f at meta-step %d)", step, gauc, self.best,
                 self.best_step)

    @property
    def exhausted(self):
        return bool(self.patience) and self.since_best >= self.patience

    def state(self):
        return {"best_gauc": self.best, "best_meta_step": self.best_step, "checks": len(self.curve)}

    @contextlib.contextmanager
    def best_in_model(self, model):
        """The best parameters in `model` for the duration (a checkpoint), then the current ones back
        (the current ones stay when no check had a GAUC)."""
        if self.best_params is None:
            log.warning("meta-validation has had no GAUC yet (every check undefined): the checkpoint holds the "
                        "last step")
            yield
            return
        current = {n: p.numpy().copy() for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.set_value(self.best_params[n])
        try:
            yield
        finally:
            for n, p in model.named_parameters():
                p.set_value(current[n])


def _rankable(tasks):
    """Whether any held-out campaign (support, query) has query labels of both classes."""
    return any(np.unique(query["labels"]).size > 1 for _, query in tasks)


def _warn_one_class(dataset):
    """A warning when every label of the training data is the same: the network learns nothing to rank by."""
    stores = getattr(dataset, "stores", [])  # PaddleRec's readers: not known
    classes = np.unique(np.concatenate([np.unique(s.labels) for s in stores])) if stores else []
    if len(classes) == 1:
        log.warning("every label of the training data (%s) is %g: the network learns no ranking, and AUC is "
                    "undefined on such data; train on labels of both classes for audiences that mean anything",
                    ", ".join(os.path.basename(s.source) for s in stores), classes[0])


def _diverged(validation, last_loss, config):
    """The one line for a run that diverged, or None: its last epoch's mean
    loss is over twice the log 2 of scoring every user 0.5 and, with
    meta-validation, the step its checkpoints keep ranks no better than chance."""
    if not (math.isfinite(last_loss) and last_loss > 2 * math.log(2)):
        return None
    if validation and validation.curve and not validation.best <= 0.5:
        return None  # the checkpoints keep a step that ranks: they are usable
    kept = f"meta-validation's best GAUC {validation.best:.4f} is no better than chance, " if validation else ""
    return (f"{config['runner.model_save_path']}: the run diverged: {kept}the last epoch's mean loss {last_loss:.2f} "
            f"is over twice the 0.69 of scoring every user 0.5, so its checkpoints rank at random. Lower "
            f"hyper_parameters.optimizer.global_learning_rate ({config['hyper_parameters.optimizer.global_learning_rate']:g}) "
            f"or local_lr and train again")


class Run:
    """What one training run works with: model class, reader, network,
    optimizer, and (rank 0) the lock on model_save_path."""

    def __init__(self, config, rank, size):
        self.config, self.rank, self.size = config, rank, size
        root = config["runner.model_save_path"]
        self.lock = claim(os.path.join(root, LOCK), "runner.model_save_path", root) if rank == 0 else None
        try:
            self.dy_model = runtime.load_module(config, "dygraph_model", "dygraph_model").DygraphModel()
            reader = runtime.load_module(config, config["runner.train_reader_path"], "runner.train_reader_path")
            files = runtime.list_files(require(config, "runner.train_data_dir"), "runner.train_data_dir")
            self.dataset = reader.RecDataset(files, config)
            self.dataset.set_rank(rank, size)
            self.validation = Validation(self)  # holds campaigns out of self.dataset: before its ad rows are read
            self.model = self.dy_model.create_model(config)
            self.optimizer = self.dy_model.create_optimizer(self.model, config)
            self.first_epoch, state, self.groups = 0, None, None
            if config["runner.model_init_path"]:
                loaded, learned = load_checkpoint(config["runner.model_init_path"], self.model, self.optimizer,
                                                  "runner.model_init_path")
                self.groups = learned.groups
                init_root = os.path.dirname(os.path.dirname(os.path.abspath(loaded)))
                if init_root != os.path.abspath(config["runner.model_save_path"]):
                    check_one_run(init_root)
                state = read_state(loaded)
                if state:  # resume: a finished epoch continues with the next, an interrupted one is redone
                    self.first_epoch = state["epoch"] + (1 if state["complete"] else 0)
                if self.first_epoch >= config["runner.epochs"]:
                    raise ConfigError(f"runner.model_init_path: {loaded} ends at epoch {state['epoch']}"
                                      f"{'' if state['complete'] else ' (interrupted)'} and runner.epochs is "
                                      f"{config['runner.epochs']}: nothing left to train; raise runner.epochs")
                log.info("initialised from %s; training epochs %d..%d", loaded, self.first_epoch,
                         config["runner.epochs"] - 1)
            # a resumed run keeps its id: its epochs, before and after the interruption, are one run
            self.run_id = (state or {}).get("run_id") or new_run_id()
            if rank == 0:
                _make_room(config, self.run_id, self.first_epoch)
                _check_space(config["runner.model_save_path"], self.model)
            # after the checks above: a run refused has not waited for the fit
            if config["hyper_parameters.campaign_clusters"] and self.groups is None:
                self.groups = self._fit_groups()
        except BaseException:
            self.close()
            raise

    def _fit_groups(self):
        """The group regressions of the training campaigns (metaheac/groups.py), or None."""
        sizes, take = self.dataset.campaigns()
        return campaign_groups.fit(sizes, take, self.model.schema, self.config["hyper_parameters.campaign_clusters"],
                                   np.random.default_rng([self.config["runner.seed"], campaign_groups.RANDOM_STREAM]))

    def close(self):
        if self.lock is not None:
            self.lock.release()

    def save(self, name, epoch, complete, done, extra=None):
        root = self.config["runner.model_save_path"]
        refuse_nonfinite(os.path.join(root, str(name)), self.model, self.optimizer)  # every rank: the same values
        if self.rank > 0:  # rank 0 alone writes
            return os.path.join(root, str(name))
        try:
            return save_checkpoint(root, name, self.model, self.optimizer, self.config,
                                   {"epoch": epoch, "complete": complete, "meta_batches_done": done,
                                    "run_id": self.run_id, "trained_ad_rows": self.dataset.ad_rows,
                                    **(extra or {})}, self.groups)
        except OSError as exc:
            raise ConfigError(f"{os.path.join(root, str(name))}: checkpoint not written ({exc.strerror}); the "
                              f"earlier checkpoints are intact. Free space in runner.model_save_path or choose "
                              f"another, then resume from the last one with -o runner.model_init_path") from None

    def draw_curve(self, step_losses, epoch_ends, epoch_losses, validation):
        """<model_save_path>/train.png, redrawn after every epoch (rank 0, runner.report_png)."""
        if self.rank == 0 and self.config["runner.report_png"]:
            draw_training(os.path.join(self.config["runner.model_save_path"], "train.png"), step_losses,
                          epoch_ends, epoch_losses, self.first_epoch, validation)


def _make_room(config, run_id, first_epoch):
    """Refuse to train over another run's checkpoints, or over epochs this run
    writes again (their infer reports would go with them), unless
    runner.overwrite: then they move to <root>/replaced-<id>/, nothing deleted."""
    root = config["runner.model_save_path"]
    clash = {name: run for name, run in checkpoint_runs(root).items()
             if run != run_id or (name != INTERRUPTED and int(name) >= first_epoch)}
    if not clash:
        return
    if not config["runner.overwrite"]:
        raise ConfigError(f"runner.model_save_path: {root} holds checkpoints {describe_runs(clash)} that this run "
                          f"({run_id}) would mix with or replace; choose a fresh runner.model_save_path, or set "
                          f"runner.overwrite=true to move them to {root}/replaced-<id>/")
    aside = os.path.join(root, f"replaced-{new_run_id()}")
    os.makedirs(aside)
    for name in clash:
        os.rename(os.path.join(root, name), os.path.join(aside, name))
    log.warning("runner.overwrite: moved checkpoints %s, with any infer reports in them, to %s; delete it when "
                "no longer needed", describe_runs(clash), aside)


def _check_space(root, model):
    """Room for one checkpoint: the parameters and Adam's two moments."""
    need = 3 * sum(math.prod(p.shape) * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(root).free
    if free < need:
        raise ConfigError(f"runner.model_save_path: {root} has {free / 2**20:.1f} MiB free, a checkpoint needs "
                          f"about {need / 2**20:.1f} MiB (parameters and Adam moments); free space or choose "
                          f"another directory")


def _start(config):
    """Set up every rank; a failure on any rank stops all of them with its message."""
    rank, size, device = distributed.start(config)
    error = run = None
    try:
        run = Run(config, rank, size)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        error = exc
    try:
        distributed.check_all(error)
    except BaseException:
        if run is not None:
            run.close()
        raise
    distributed.broadcast_parameters(run.model)
    n_params = sum(int(math.prod(p.shape)) for p in run.model.parameters())
    log.info("model: %s parameters, %s, device %s, MKL threads %s%s", f"{n_params:,}", run.model.schema,
             device, os.environ.get("MKL_NUM_THREADS"),
             ", MKL's AVX2 kernels (AMD)" if os.environ.get("MKL_DEBUG_CPU_TYPE") == "5" else "")
    if size > 1:
        log.info("data parallel over %d ranks: effective meta-batch %d tasks (task_count %d per rank), "
                 "gradients averaged every step", size, size * config["hyper_parameters.task_count"],
                 config["hyper_parameters.task_count"])
    return run


def _step(run, batch, metric_list, stop, epoch, batch_id):
    """One meta-step: (loss value, stop requested). A non-finite loss stops
    the run (no checkpoint written) or, with runner.nonfinite_loss=skip, skips."""
    loss, metric_list, _ = run.dy_model.train_forward(run.model, metric_list, batch, run.config)
    loss_value, stopping = distributed.agree(float(loss), stop.signum is not None)
    if math.isfinite(loss_value):
        loss.backward()
        distributed.average_gradients(run.model)
        run.optimizer.step()
    elif run.config["runner.nonfinite_loss"] == "skip":
        log.warning("epoch %d meta-batch %d: loss is %s, batch skipped (runner.nonfinite_loss=skip)",
                    epoch, batch_id, loss_value)
    else:
        raise FloatingPointError(
            f"loss is {loss_value} at epoch {epoch}, meta-batch {batch_id}; stopped before a broken checkpoint "
            f"is written. Lower hyper_parameters.optimizer.global_learning_rate or local_lr, check the data, "
            f"or set runner.nonfinite_loss=skip")
    # Free the gradients rather than zero them: the next backward then writes them
    # afresh instead of adding to zeros, and the table-sized ones are not held
    # through the next forward (bitwise the same steps, less peak memory:
    # docs/experiments.md).
    run.optimizer.clear_grad(set_to_zero=False)
    return loss_value, stopping


def _epoch(run, epoch, stop, validation, steps_before):
    """One epoch of meta-steps, logged every runner.print_interval and
    meta-validated every META_VAL_INTERVAL; returns (the loss of every
    meta-step, samples, whether meta-validation says stop)."""
    config = run.config
    run.dataset.set_epoch(epoch)
    run.model.train()
    metric_list, _ = run.dy_model.create_metrics()
    progress = Progress(run.dataset.num_batches(), config["runner.print_interval"])
    window = Window()
    losses, samples = [], 0
    wait_start = time.perf_counter()
    for batch_id, batch in enumerate(prefetch(run.dataset, PREFETCH)):
        reader_s = time.perf_counter() - wait_start
        step_start = time.perf_counter()
        loss_value, stopping = _step(run, batch, metric_list, stop, epoch, batch_id)
        n = run.dy_model.num_samples(batch) * run.size
        losses.append(loss_value)
        samples += n
        done = len(losses)
        window.add(reader_s, time.perf_counter() - step_start, loss_value, n)
        if progress.due(done):
            log.info("epoch %d batch %s | %s", epoch, progress.status(done, "meta-batches"), window.text())
            window = Window()
        if validation and (steps_before + done) % validation.interval == 0:
            validation.check(run, steps_before + done)
            if validation.exhausted:
                return losses, samples, True
        if stopping:
            path = run.save("interrupted", epoch, False, done)
            log.warning("stopped by signal at epoch %d, meta-batch %d; saved %s. Resume with "
                        "-o runner.model_init_path=%s", epoch, done, path, path)
            raise SystemExit(128 + (stop.signum or signal.SIGTERM))
        wait_start = time.perf_counter()
    if not losses:
        raise RuntimeError("the training reader produced no meta-batch; check runner.train_data_dir")
    if validation:
        validation.check(run, steps_before + len(losses))
    return losses, samples, validation.exhausted if validation else False


def train(config):
    """Meta-train as configured; returns a summary dict: epochs, meta_batches,
    samples, seconds, loss (the last epoch's mean), epoch_losses, step_losses
    (every meta-step's loss), model_save_path, model, groups (the group
    regressions, or None), validation ([(meta-step,
    GAUC)] of meta-validation) and best_meta_step (the meta-step whose
    parameters the checkpoints hold; None without meta-validation)."""
    run = _start(config)
    validation = run.validation
    run_start, total_samples, epoch_losses, step_losses, epoch_ends = time.perf_counter(), 0, [], [], []
    with runtime.StopOnSignal() as stop, contextlib.closing(run):
        for epoch in range(run.first_epoch, config["runner.epochs"]):
            epoch_start = time.perf_counter()
            losses, samples, stopping = _epoch(run, epoch, stop, validation, len(step_losses))
            finite = [x for x in losses if math.isfinite(x)]
            epoch_losses.append(sum(finite) / max(len(finite), 1))
            step_losses += losses
            epoch_ends.append(len(step_losses))
            # Without meta-validation the checkpoint is the last step's; with
            # it, the best step's so far (the optimizer state stays the last step's).
            epochs_to_save = range(epoch, config["runner.epochs"] if stopping else epoch + 1)
            with validation.best_in_model(run.model) if validation else contextlib.nullcontext():
                for saved in epochs_to_save:
                    state = {"meta_validation": validation.state()} if validation else {}
                    if stopping:
                        state["stopped_early"] = {"epoch": epoch, "meta_step": len(step_losses)}
                    path = run.save(saved, saved, True, len(losses), state)
            took = time.perf_counter() - epoch_start
            skipped = len(losses) - len(finite)
            kept = f" (parameters of meta-step {validation.best_step})" if validation else ""
            where = path if len(epochs_to_save) == 1 else f"{path} and epochs {epoch}..{epochs_to_save[-1]}"
            log.info("epoch %d done: %d meta-batches%s, mean loss %.5f, %s (%.0f samples/s), saved %s%s",
                     epoch, len(losses), f" ({skipped} skipped)" if skipped else "", epoch_losses[-1],
                     duration(took), samples / took, where, kept)
            run.draw_curve(step_losses, epoch_ends, epoch_losses, validation.curve)
            total_samples += samples
            if stopping:
                log.info("meta-validation: no better GAUC in %d checks, training stopped at meta-step %d; "
                         "checkpoints %d..%d hold meta-step %d's parameters", validation.patience,
                         len(step_losses), epoch, config["runner.epochs"] - 1, validation.best_step)
                break
    took = time.perf_counter() - run_start
    last = epoch_losses[-1] if epoch_losses else float("nan")
    diverged = _diverged(validation, last, config)
    if diverged:
        raise FloatingPointError(diverged)
    best = (f"; kept meta-step {validation.best_step} of {len(step_losses)} (meta-validation GAUC "
            f"{validation.best:.4f})" if validation else "")
    log.info("training finished: %d epochs, %d meta-batches, %d samples in %s; final epoch loss %.5f%s; "
             "checkpoints in %s", len(epoch_losses), len(step_losses), total_samples, duration(took), last, best,
             config["runner.model_save_path"])
    return {"epochs": len(epoch_losses), "meta_batches": len(step_losses), "samples": total_samples,
            "seconds": took, "loss": last, "epoch_losses": epoch_losses, "step_losses": step_losses,
            "model_save_path": config["runner.model_save_path"], "model": run.model, "groups": run.groups,
            "validation": validation.curve, "best_meta_step": validation.best_step if validation else None}


parser, main = runtime.Cli("MetaHeac meta-training: checkpoints and train.png under runner.model_save_path",
                           "python tools/trainer.py -m config.yaml -o runner.epochs=2",
                           lambda config, args: train(config)).bound()


if __name__ == "__main__":
    main()
