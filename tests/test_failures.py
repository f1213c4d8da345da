"""Nothing lost, nothing mixed: checkpoint writes killed at each step, two
runs on one directory, unwritable and full disks, broken checkpoint files,
runs retrained over others, infer killed mid-way."""
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, make_frame
from metaheac import files
from metaheac.errors import ConfigError, DataError
from metaheac.schema import schema_from_config
from tools.utils import checkpoint

DEAD = 2**22 + 12345  # above any pid this machine hands out


@pytest.fixture
def tiny(tiny_config, tmp_path):
    """make(**runner) -> a config training a tiny model on 2 campaigns into tmp/out
    and evaluating 3 test campaigns into tmp/out/<epoch>/infer_test."""
    schema = schema_from_config(tiny_config())
    rng = np.random.default_rng(0)
    for split, sizes, start in (("train", [20, 30], 1), ("test", [10, 10, 10], 10)):
        os.makedirs(tmp_path / split)
        for stage in (1, 2) if split == "test" else (1,):
            make_frame(schema, rng, sizes, positive_rate=0.5, aid_start=start).to_pickle(
                tmp_path / split / f"{split}_stage{stage}.pkl")

    def make(**runner):
        config = tiny_config(runner={"model_save_path": str(tmp_path / "out"), "epochs": 1,
                                     "train_data_dir": str(tmp_path / "train"),
                                     "test_data_dir": str(tmp_path / "test"), "report_png": False, **runner})
        config["config_abs_dir"] = ROOT
        return config
    return make, tmp_path


def train(config):
    from tools.trainer import train as run
    return run(config)


def infer(config):
    from infer import evaluate
    return evaluate(config)


def tree(path):
    """{relative path: bytes} of every file under `path`."""
    out = {}
    for base, _, names in os.walk(path):
        for name in names:
            full = os.path.join(base, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


# -- a checkpoint write killed at each step --------------------------------------------------------------------

def _write(final, text):
    files.atomic_dir(final, lambda d: open(os.path.join(d, "v"), "w").write(text))


@pytest.mark.parametrize("step", ["fill", "old aside", "new in", "old deleted"])
def test_a_checkpoint_write_interrupted_at_each_step_keeps_a_complete_copy(tmp_path, monkeypatch, step):
    final = str(tmp_path / "0")
    _write(final, "old")
    real_rename, real_rmtree, renames = os.rename, shutil.rmtree, []

    def rename(src, dst):
        renames.append(src)
        if (step, len(renames)) in (("old aside", 1), ("new in", 2)):
            raise KeyboardInterrupt
        real_rename(src, dst)

    def rmtree(path, *a, **kw):
        if step == "old deleted" and ".old-" in path:
            raise KeyboardInterrupt
        real_rmtree(path, *a, **kw)

    def fill(d):
        open(os.path.join(d, "v"), "w").write("half")
        if step == "fill":
            raise KeyboardInterrupt
    monkeypatch.setattr(files.os, "rename", rename)
    monkeypatch.setattr(files.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_dir(final, fill)
    monkeypatch.undo()
    assert open(os.path.join(final, "v")).read() == ("half" if step == "old deleted" else "old")
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


@pytest.mark.parametrize("left, restored", [
    ({"0.tmp-{pid}": "new"}, None),                          # killed during a first write
    ({"0": "old", "0.tmp-{pid}": "new"}, "old"),             # killed while filling a replacement
    ({"0.old-{pid}": "old", "0.tmp-{pid}": "new"}, "old"),   # killed between the two renames
    ({"0": "new", "0.old-{pid}": "old"}, "new"),             # killed before deleting the old copy
])
def test_the_next_trainer_start_cleans_what_a_killed_write_left(tmp_path, caplog, left, restored):
    """What a SIGKILL leaves at each step (no cleanup ran), undone with a log line."""
    root = tmp_path / "out"
    for name, text in left.items():
        os.makedirs(root / name.format(pid=DEAD))
        (root / name.format(pid=DEAD) / "v").write_text(text)
    lock = files.claim(str(root / ".lock"), "runner.model_save_path", str(root))
    lock.release()
    assert sorted(os.listdir(root)) == ([] if restored is None else ["0"])
    if restored:
        assert (root / "0" / "v").read_text() == restored
    assert "left by an interrupted write" in caplog.text or "restored" in caplog.text


# -- one run per directory -------------------------------------------------------------------------------------

HOLD_LOCK = ("import sys, time; sys.path.insert(0, sys.argv[1]); from metaheac.files import DirLock; "
             "DirLock(sys.argv[2], 'k').acquire(); print('held', flush=True); time.sleep(60)")


def test_a_second_trainer_on_a_directory_stops_at_once_naming_the_holder(tiny):
    make, tmp = tiny
    os.makedirs(tmp / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, ROOT, str(tmp / "out" / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid} on {socket.gethostname()}"):
            train(make())
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(tmp / "out") == [".lock"]  # nothing written
    train(make())  # the holder was killed: the kernel dropped its lock


RACE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from metaheac.errors import ConfigError
from metaheac.files import DirLock
lock, inside = sys.argv[2], sys.argv[3]
held = 0
deadline = time.time() + float(sys.argv[4])
while time.time() < deadline:
    try:
        d = DirLock(lock, "k").acquire()
    except ConfigError:
        continue
    fd = os.open(os.path.join(inside, str(os.getpid())), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    if len(os.listdir(inside)) != 1:
        print("two holders", os.listdir(inside), flush=True)
    os.remove(os.path.join(inside, str(os.getpid())))
    d.release()
    held += 1
print("held", held, flush=True)
"""


@pytest.mark.slow
def test_processes_racing_for_a_lock_never_hold_it_together(tmp_path):
    """Four processes take and release one lock as fast as they can, a stale
    record of a dead holder there at the start: at every moment at most one
    holds it, and each gets it."""
    lock, inside = tmp_path / ".lock", tmp_path / "inside"
    inside.mkdir()
    lock.write_text(json.dumps({"pid": DEAD, "host": socket.gethostname()}))
    racers = [subprocess.Popen([sys.executable, "-c", RACE, ROOT, str(lock), str(inside), "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in racers]
    assert all(p.returncode == 0 for p in racers), outs
    assert not any("two holders" in out for out in outs), outs
    assert all(int(out.split("held")[-1]) > 0 for out in outs), outs


def test_a_stale_lock_is_taken_over_with_a_warning(tiny, caplog):
    make, tmp = tiny
    os.makedirs(tmp / "out")
    (tmp / "out" / ".lock").write_text(json.dumps({"pid": DEAD, "host": socket.gethostname()}))
    train(make())
    assert f"taking over the lock of pid {DEAD}" in caplog.text
    assert sorted(os.listdir(tmp / "out")) == ["0"]  # released at the end


@pytest.mark.slow
def test_two_trainer_processes_on_one_directory(tiny):
    """The second exits at once, non-zero, naming the first; the first goes on."""
    make, tmp = tiny
    from tools.gen_data import generate
    generate(str(tmp / "data"), seed=6, n_train=6, n_hot=1, n_cold=1, scale=0.5)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m", os.path.join(ROOT, "config.yaml"), "-o",
           f"runner.train_data_dir={tmp}/data/train", f"runner.model_save_path={tmp}/shared", "runner.epochs=1",
           "runner.print_interval=1", "hyper_parameters.batch_size=4", "hyper_parameters.embed_dim=8",
           "runner.meta_val_fraction=0"]  # an epoch of several hundred meta-steps: the first is still training
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in first.stdout:  # the first is training
        if "batch 1/" in line:
            break
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    first.send_signal(signal.SIGTERM)  # no need to wait for its epoch: it saves interrupted/ and stops
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 128 + signal.SIGTERM, out
    assert second.returncode == 2 and f"in use by pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr and "saved" not in second.stderr
    assert sorted(os.listdir(tmp / "shared")) == ["interrupted"]  # the first's, lock released


# -- unwritable or full model_save_path ------------------------------------------------------------------------

def test_a_read_only_save_path_is_an_error_before_training(tiny, monkeypatch):
    make, _ = tiny
    real_open = os.open

    def read_only(path, flags, *a):  # as root, chmod does not stop writes: simulate EROFS
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *a)
    monkeypatch.setattr(files.os, "open", read_only)
    with pytest.raises(ConfigError, match=r"\.lock: cannot write there \(Read-only file system\); choose a writable "
                                          r"runner.model_save_path"):
        train(make())


def test_a_full_save_path_is_an_error_before_training(tiny, monkeypatch):
    from tools import trainer

    make, tmp = tiny
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    started = []
    monkeypatch.setattr(trainer, "_epoch", lambda *a: started.append(1))
    with pytest.raises(ConfigError, match="MiB free, a checkpoint needs about"):
        train(make())
    assert not started and os.listdir(tmp / "out") == []  # lock released


def test_a_disk_filling_up_during_training_keeps_the_earlier_checkpoints(tiny, monkeypatch):
    make, tmp = tiny
    train(make())
    before = tree(tmp / "out")
    real_save, calls = checkpoint.save_state, []

    def full(obj, path, *a, **kw):
        calls.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(checkpoint, "save_state", full)
    with pytest.raises(ConfigError, match=r"1: checkpoint not written \(No space left on device\); the earlier "
                                          r"checkpoints are intact"):
        train(make(model_init_path=str(tmp / "out" / "0"), epochs=2))
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    assert calls and tree(tmp / "out") == before


# -- broken checkpoint files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("file", [checkpoint.PARAMS, checkpoint.OPT])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_a_broken_checkpoint_file_is_one_line_naming_it(tiny, file, damage):
    make, tmp = tiny
    train(make())
    path = tmp / "out" / "0" / file
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[:len(data) // 2], "random": os.urandom(4096)}[damage])
    with pytest.raises(DataError, match=f"{path}: not a readable Paddle checkpoint .*use another epoch's checkpoint "
                                        f"or train again"):
        train(make(model_init_path=str(tmp / "out" / "0"), model_save_path=str(tmp / "resumed"), epochs=2))


def test_load_errors_end_the_command_line_without_a_traceback(tiny, capsys):
    from infer import main

    make, tmp = tiny
    train(make())
    (tmp / "out" / "0" / checkpoint.PARAMS).write_bytes(b"")
    for module in ("dygraph_model.py", "reader_test.py"):  # the model package beside tiny's config.yaml
        os.symlink(os.path.join(ROOT, module), tmp / module)
    handlers = logging.getLogger().handlers[:]
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["-m", str(tmp / "config.yaml"), "-o", f"runner.infer_load_path={tmp}/out",
                  f"runner.test_data_dir={tmp}/test"])
    finally:  # run_cli points logging at this test's captured stderr
        logging.getLogger().handlers = handlers
    assert exit_.value.code == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if "ERROR" in x]
    assert f"ERROR {tmp}/out/0/rec.pdparams: not a readable Paddle checkpoint (EOFError: Ran out of input)" in line


def test_a_checkpoint_of_another_shape_is_a_data_error(tiny):
    make, tmp = tiny
    train(make())
    from dygraph_model import DygraphModel
    config = make()
    config["hyper_parameters.embed_dim"] = 6
    model = DygraphModel().create_model(config)
    with pytest.raises(DataError, match="has shape .* expects .*the config it was trained with is saved beside it"):
        checkpoint.load_checkpoint(str(tmp / "out" / "0"), model)


# -- retraining over another run, mixed directories ------------------------------------------------------------

def test_retraining_over_another_run_refuses_then_moves_it_aside_with_its_reports(tiny):
    make, tmp = tiny
    train(make(epochs=2, seed=7))
    infer(make(infer_start_epoch=0, infer_end_epoch=2))
    first = tree(tmp / "out")
    assert "0/infer_test/metrics.json" in first and "1/infer_test/metrics.json" in first
    run_a = json.loads((tmp / "out" / "0" / "state.json").read_text())["run_id"]

    with pytest.raises(ConfigError, match=f"holds checkpoints 0, 1 \\(run {run_a}\\) .*runner.overwrite=true"):
        train(make(seed=2021))
    assert tree(tmp / "out") == first  # nothing touched

    train(make(seed=2021, overwrite=True))
    [aside] = [n for n in os.listdir(tmp / "out") if n.startswith("replaced-")]
    assert sorted(os.listdir(tmp / "out")) == ["0", aside]  # the old epoch 1 is not left beside the new epoch 0
    assert tree(tmp / "out" / aside) == first  # the old run, reports included, whole
    assert json.loads((tmp / "out" / "0" / "state.json").read_text())["run_id"] != run_a


def test_infer_and_resume_refuse_epochs_of_different_runs(tiny):
    make, tmp = tiny
    train(make(epochs=2))
    state_file = tmp / "out" / "1" / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "run_id": "other"}))
    with pytest.raises(DataError, match=r"epochs come from different runs: 0 \(run .*\); 1 \(run other\)"):
        infer(make())
    with pytest.raises(DataError, match="epochs come from different runs"):
        train(make(model_init_path=str(tmp / "out" / "0"), model_save_path=str(tmp / "b"), epochs=3))


def test_a_resume_continues_its_run_in_the_same_directory(tiny):
    make, tmp = tiny
    train(make(epochs=1))
    run_id = json.loads((tmp / "out" / "0" / "state.json").read_text())["run_id"]
    train(make(epochs=2, model_init_path=str(tmp / "out" / "0")))
    assert checkpoint.checkpoint_runs(str(tmp / "out")) == {"0": run_id, "1": run_id}
    infer(make(infer_start_epoch=0, infer_end_epoch=2))  # one run: accepted
    with pytest.raises(ConfigError, match=f"holds checkpoints 1 \\(run {run_id}\\) that this run"):
        train(make(epochs=2, model_init_path=str(tmp / "out" / "0")))  # would redo epoch 1 and drop its reports


# -- infer output written whole ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["evaluating", "writing"])
def test_infer_killed_midway_leaves_the_previous_output_whole(tiny, monkeypatch, where):
    import infer as infer_mod
    from tools.utils import report

    make, tmp = tiny
    train(make())
    config = make(output_dir=str(tmp / "report"))
    infer(config)
    before = tree(tmp / "report")
    assert {"metrics.json", "campaigns.csv", "audience/10.csv", "audience/12.csv"} <= set(before)
    target, name = (infer_mod, "evaluate_campaign") if where == "evaluating" else (report, "write_csv")
    real, calls = getattr(target, name), []

    def killed_on_second(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(target, name, killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        infer(make(output_dir=str(tmp / "report"), seed=3))
    assert tree(tmp / "report") == before
    assert sorted(os.listdir(tmp)) == sorted(["config.yaml", "out", "report", "test", "train"])  # no temp, no lock


def test_a_killed_infer_is_cleaned_and_its_lock_taken_over(tiny, caplog):
    make, tmp = tiny
    train(make())
    os.makedirs(tmp / f"report.tmp-{DEAD}" / "audience")
    (tmp / "report.lock").write_text(json.dumps({"pid": DEAD, "host": socket.gethostname()}))
    infer(make(output_dir=str(tmp / "report")))
    assert "taking over the lock" in caplog.text and "left by an interrupted write" in caplog.text
    assert not (tmp / f"report.tmp-{DEAD}").exists() and not (tmp / "report.lock").exists()


def test_infer_refuses_an_output_dir_holding_other_files(tiny):
    make, tmp = tiny
    train(make())
    with pytest.raises(ConfigError, match=r"holds \['config.yaml', 'out', 'test', 'train'\], which infer did not "):
        infer(make(output_dir=str(tmp)))


# -- silent surprises, now said -------------------------------------------------------------------------------

def test_resume_without_optimizer_state_warns(tiny, caplog):
    make, tmp = tiny
    train(make())
    os.remove(tmp / "out" / "0" / checkpoint.OPT)
    train(make(model_init_path=str(tmp / "out" / "0"), epochs=2))
    assert "rec.pdopt: not found, so Adam's moments start from zero" in caplog.text


def test_nothing_left_to_train_is_an_error(tiny):
    make, tmp = tiny
    train(make(epochs=2))
    with pytest.raises(ConfigError, match="ends at epoch 1 and runner.epochs is 2: nothing left to train"):
        train(make(model_init_path=str(tmp / "out" / "1"), epochs=2))


def test_an_empty_model_save_path_is_an_error(tiny_config):
    with pytest.raises(ConfigError, match="runner.model_save_path must be a non-empty path"):
        tiny_config(overrides=["runner.model_save_path="])


def test_only_the_canonical_training_file_is_read(tiny, caplog):
    make, tmp = tiny
    shutil.copy(tmp / "train" / "train_stage1.pkl", tmp / "train" / "train_stage1.backup.pkl")
    from reader_train import RecDataset
    config = make()
    dataset = RecDataset(sorted(str(p) for p in (tmp / "train").iterdir()), config)
    assert len(dataset.tasks) == 2
    assert "reading train_stage1.pkl only; not reading train_stage1.backup.pkl" in caplog.text
