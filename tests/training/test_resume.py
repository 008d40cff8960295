"""Training runs: the loss goes down; a killed run resumes where its checkpoint left it."""

import copy
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from tfdeblur.training import (
    RunFolderError,
    build_model,
    compile_arguments,
    list_checkpoints,
    prepare,
    read_checkpoint,
    resolve_config,
    train,
    training_dataset,
)
from tfdeblur.training.trainer import _run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_SCRIPT = os.path.join(ROOT, "training", "train.py")


def _read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _batch_loss(model, loss, batches):
    return float(np.mean([float(loss(y, model.predict_on_batch(x))) for x, y in batches]))


def test_tiny_run_lowers_the_loss_and_writes_its_files(tiny_raw, tmp_path):
    import keras

    from tfdeblur.inference import load_model

    # LMFN: its untrained output is far from the target, so a few steps show the descent
    # (the tiny SVDN starts near the blurry input, whose error a few steps barely change).
    cfg = resolve_config({**tiny_raw, "model": {"name": "lmfn", "width": 4, "num_blocks": 1},
                          "train": {**tiny_raw["train"], "steps": 12, "steps_per_epoch": 6}})
    batches = [(np.asarray(x), np.asarray(y)) for x, y in training_dataset(cfg, 0).take(3)]
    keras.utils.set_random_seed(cfg["seed"])
    initial = build_model(cfg)          # the run's initial weights (same seed)
    loss = compile_arguments(cfg)["loss"]
    before = _batch_loss(initial, loss, batches)

    run = str(tmp_path / "run")
    result = train(cfg, run, printer=None)
    assert (result.start_step, result.step, result.completed) == (0, 12, True)
    after = _batch_loss(load_model(os.path.join(run, "final.keras")), loss, batches)
    assert after < 0.7 * before, (before, after)

    rows = _read_log(run)
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "0"), ("1", "6"), ("2", "12")]
    assert rows[0]["loss"] == "" and float(rows[2]["loss"]) < float(rows[1]["loss"])
    assert float(rows[2]["val_pairs_psnr"]) > float(rows[0]["val_pairs_psnr"])
    assert result.initial_validation["val_pairs_psnr"] == pytest.approx(
        float(rows[0]["val_pairs_psnr"]), rel=1e-5)
    assert set(json.load(open(os.path.join(run, "validation_baseline.json")))) == {"pairs"}
    assert [s for s, _ in list_checkpoints(os.path.join(run, "checkpoints"))] == [12, 10, 8]
    best = json.load(open(os.path.join(run, "best.json")))
    assert best["value"] == pytest.approx(max(float(r["val_pairs_psnr"]) for r in rows[1:]),
                                          rel=1e-5)
    assert load_model(os.path.join(run, "best.keras")).count_params() == initial.count_params()
    assert json.load(open(os.path.join(run, "config.json"))) == cfg


def _write_config(tmp_path, raw, **train):
    raw = copy.deepcopy(raw)
    raw["train"].update(train)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _run_script(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, TRAIN_SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _summary(stdout):
    lines = [ln for ln in stdout.splitlines() if ln.startswith("summary: ")]
    assert lines, stdout
    return json.loads(lines[-1][len("summary: "):])


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_continues_from_the_checkpoint(tiny_raw, tmp_path):
    config = _write_config(tmp_path, tiny_raw, steps=100000, steps_per_epoch=4,
                           checkpoint_every=3)
    run = str(tmp_path / "run")
    ckpt_dir = os.path.join(run, "checkpoints")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, TRAIN_SCRIPT, "--config", config, "--run-dir", run],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(s >= 5 for s, _ in list_checkpoints(ckpt_dir)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint written within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # The newest complete checkpoint is what a restart loads: model and optimizer state.
    cfg = resolve_config(json.load(open(config)))
    newest = list_checkpoints(ckpt_dir)[0]
    model, _, state, path = prepare(cfg, run, printer=None)
    step = state.step
    assert path == newest[1] and step == newest[0] >= 5
    meta, arrays = read_checkpoint(path)
    for group, variables in (("model", model.variables),
                             ("optimizer", model.optimizer.variables)):
        for v, saved in zip(variables, arrays[group], strict=True):
            np.testing.assert_array_equal(v.numpy(), saved)
    assert int(model.optimizer.iterations.numpy()) == step
    assert meta["epoch"] == step // 4

    # Restart with the same folder: it continues from `step`, not from 0.
    done = _run_script("--config", config, "--run-dir", run, "--steps", str(step + 3))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _summary(done.stdout)
    assert (summary["start_step"], summary["step"]) == (step, step + 3)
    assert summary["resumed_from"] == path

    # An uninterrupted run to the same step ends in the same state, and logs the same rows:
    # the resumed run saw exactly the batches the uninterrupted one did.
    raw = json.load(open(config))
    raw["train"]["steps"] = step + 3
    straight = str(tmp_path / "straight")
    train(resolve_config(raw), straight, printer=None)
    _, a = read_checkpoint(list_checkpoints(ckpt_dir)[0][1])
    _, b = read_checkpoint(list_checkpoints(os.path.join(straight, "checkpoints"))[0][1])
    for group in ("model", "optimizer"):
        for x, y in zip(a[group], b[group], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    resumed_rows, straight_rows = _read_log(run), _read_log(straight)
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in straight_rows]
    for r, s in zip(resumed_rows, straight_rows, strict=True):
        for key in ("loss", "psnr", "val_pairs_psnr"):
            if s[key]:
                assert float(r[key]) == pytest.approx(float(s[key]), rel=1e-5), (key, r, s)


def test_resume_falls_back_past_a_damaged_checkpoint_and_refuses_another_config(tiny_raw,
                                                                                tmp_path):
    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(steps=6, steps_per_epoch=4, checkpoint_every=2, validate_at_start=False)
    run = str(tmp_path / "run")
    train(resolve_config(raw), run, printer=None)
    ckpts = list_checkpoints(os.path.join(run, "checkpoints"))
    assert [s for s, _ in ckpts] == [6, 4, 2]

    changed = copy.deepcopy(raw)
    changed["optimizer"]["learning_rate"] = 1e-2
    with pytest.raises(RunFolderError, match=r"gives learning rate 0.01 at step 1, which the "
                                             r"run trained with 0.003"):
        train(resolve_config(changed), run, printer=None)

    with open(ckpts[0][1], "r+b") as f:      # a torn write: the file's second half is zeros
        size = f.seek(0, 2)
        f.seek(size // 2)
        f.write(b"\0" * (size - size // 2))
    # A kill while the best model was being saved leaves a temporary file: removed.
    leftover = os.path.join(run, ".best.keras.123.0a1b.tmp.keras")
    open(leftover, "wb").close()
    raw["train"]["steps"] = 8                # more steps may be asked for on resume
    # Not pytest.warns: it records every warning and re-emits the ones that do not
    # match, which would undo pyproject's filter on Keras's own model.save warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = train(resolve_config(raw), run, printer=None)
    assert any(issubclass(w.category, UserWarning)
               and "ckpt-000000006.npz is damaged" in str(w.message) for w in caught)
    assert (result.start_step, result.step) == (4, 8)
    assert result.resumed_from.endswith("ckpt-000000004.npz")
    assert not os.path.exists(leftover)
    # The log row of the lost epoch end (step 6) is dropped; epoch 2 now ends at step 8.
    assert [r["step"] for r in _read_log(run)] == ["4", "8"]

    # Without a config the saved one is used; the run is complete, nothing to do.
    again = train(None, run, printer=None)
    assert (again.start_step, again.step, again.completed) == (8, 8, True)
    with pytest.raises(RunFolderError, match="has no config.json"):
        train(None, str(tmp_path / "empty"), printer=None)


def test_resume_may_change_the_schedule_for_the_steps_still_to_come(tiny_raw, tmp_path):
    """A run started with "halve every 2 steps" resumes at step 4 with milestones
    [2, 5]: both give 3e-3, 3e-3, 1.5e-3, 1.5e-3 for steps 1-4, so the change is
    accepted and the log shows the new rates. Milestones [3] would give 3e-3 at
    step 3, which the run trained with 1.5e-3: refused, naming that step."""
    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(steps=4, steps_per_epoch=2, checkpoint_every=2, validate_at_start=False)
    raw["optimizer"]["schedule"] = {"name": "step", "every": 2, "factor": 0.5}
    run = str(tmp_path / "run")
    train(resolve_config(raw), run, printer=None)

    refused = copy.deepcopy(raw)
    refused["optimizer"]["schedule"] = {"name": "multistep", "milestones": [3], "factor": 0.5}
    with pytest.raises(RunFolderError, match=r"gives learning rate 0.003 at step 3, which the "
                                             r"run trained with 0.0015.*from step 5 on"):
        train(resolve_config(refused), run, printer=None)

    new = copy.deepcopy(raw)
    new["optimizer"]["schedule"] = {"name": "multistep", "milestones": [2, 5], "factor": 0.5}
    new["train"]["steps"] = 8
    result = train(resolve_config(new), run, printer=None)
    assert (result.start_step, result.step) == (4, 8)
    # log.csv: the rate at each epoch end's step (iteration), old schedule up to step 4,
    # then the new one (the old would say 3.75e-4 at step 6 and 1.875e-4 at step 8).
    rates = [(int(r["step"]), float(r["learning_rate"])) for r in _read_log(run)]
    assert rates == [(2, pytest.approx(1.5e-3)), (4, pytest.approx(7.5e-4)),
                     (6, pytest.approx(7.5e-4)), (8, pytest.approx(7.5e-4))]
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["optimizer"]["schedule"] == new["optimizer"]["schedule"]

    # From a constant rate (a float, not a schedule object, in the optimizer) to milestones.
    const = copy.deepcopy(raw)
    del const["optimizer"]["schedule"]
    run2 = str(tmp_path / "run2")
    train(resolve_config({**const, "train": {**const["train"], "steps": 2}}), run2,
          printer=None)
    const["optimizer"]["schedule"] = {"name": "multistep", "milestones": [3], "factor": 0.1}
    result = train(resolve_config(const), run2, printer=None)
    assert (result.start_step, result.step) == (2, 4)
    assert [float(r["learning_rate"]) for r in _read_log(run2)] == \
        [pytest.approx(3e-3), pytest.approx(3e-4)]


def test_resume_after_the_data_moved(tiny_raw, tmp_path):
    """A run committed to a repository resumes on another machine, where the same data
    lies elsewhere: the data's root/kernels paths and vars may change, nothing else."""
    import shutil

    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(steps=2, steps_per_epoch=2, checkpoint_every=2, validate_at_start=False)
    run = str(tmp_path / "run")
    train(resolve_config(raw), run, printer=None)
    moved = copy.deepcopy(raw)
    for section, key in ((moved["data"]["train"], "root"),
                         (moved["data"]["validation"]["pairs"], "root")):
        new = str(tmp_path / ("moved_" + os.path.basename(section[key])))
        shutil.copytree(section[key], new)
        section[key] = new
    moved["vars"] = {"data": str(tmp_path)}
    moved["train"]["steps"] = 4
    result = train(resolve_config(moved), run, printer=None)
    assert (result.start_step, result.step) == (2, 4)
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["data"]["train"]["root"] == moved["data"]["train"]["root"]
    moved["data"]["train"]["patch_size"] = 20
    with pytest.raises(RunFolderError, match="data.train.patch_size"):
        train(resolve_config(moved), run, printer=None)


def test_interrupt_saves_the_step_reached(tiny_raw, tmp_path, monkeypatch):
    from tfdeblur.training import callbacks

    original = callbacks.ResumableCheckpoint.on_train_batch_end

    def interrupted_at_3(self, batch, logs=None):
        original(self, batch, logs)
        if self.state.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.ResumableCheckpoint, "on_train_batch_end", interrupted_at_3)
    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(steps=8, steps_per_epoch=4, checkpoint_every=100,
                        validate_at_start=False)
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config(raw), run, printer=None)
    assert [s for s, _ in list_checkpoints(os.path.join(run, "checkpoints"))] == [3]
    model, _, state, _ = prepare(resolve_config(raw), run, printer=None)
    assert state.step == 3 and int(model.optimizer.iterations.numpy()) == 3


def test_a_busy_run_folder_is_refused(tiny_raw, tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with _run_lock(run), pytest.raises(RunFolderError, match="in use by another training"):
        train(resolve_config(tiny_raw), run, printer=None)


def test_svdn_with_flow_guidance_trains_and_saves_an_inference_model(tiny_raw, tmp_path):
    from tfdeblur.inference import load_model

    raw = copy.deepcopy(tiny_raw)
    raw["loss"] = {"name": "svdn", "perceptual_weight": 0.0, "position_weight": 1e-4}
    raw["optimizer"] = {"learning_rate": 1e-3, "beta_2": 0.9,
                        "schedule": {"name": "polynomial"}}
    raw["data"]["train"]["with_flow"] = True
    raw["train"].update(steps=2, steps_per_epoch=2, validate_at_start=False)
    cfg = resolve_config(raw)
    assert cfg["optimizer"]["schedule"]["decay_steps"] == 2
    run = str(tmp_path / "run")
    result = train(cfg, run, printer=None)
    assert result.completed and np.isfinite(result.last_logs["loss"])
    # The training model returns (image, positions); the saved one only the image.
    trained, _, _, _ = prepare(cfg, run, printer=None)
    assert len(trained.outputs) == 2
    final = load_model(os.path.join(run, "final.keras"))
    assert len(final.outputs) == 1
    x = np.random.default_rng(0).random((1, 12, 10, 3)).astype("float32")
    np.testing.assert_allclose(final.predict_on_batch(x), trained.predict_on_batch(x)[0],
                               rtol=1e-5, atol=1e-6)


def _script_main():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_script_errors_name_the_key(tiny_raw, tmp_path, capsys):
    main = _script_main()
    config = _write_config(tmp_path, tiny_raw)
    run = str(tmp_path / "run")
    assert main(["--config", config, "--run-dir", run, "--override", "optimizer.lr=1"]) == 2
    assert "config key 'optimizer.lr' is unknown" in capsys.readouterr().err
    missing = str(tmp_path / "nothing")
    assert main(["--config", config, "--run-dir", run,
                 "--override", f"data.validation.pairs.root={missing}"]) == 2
    assert f"'data.validation.pairs.root': {missing} does not exist" in capsys.readouterr().err
    assert main(["--run-dir", run]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["--config", "no_such_recipe", "--run-dir", run]) == 2
    err = capsys.readouterr().err
    assert "'no_such_recipe' is neither a file nor a named config" in err
    assert "lmfn_cpu_small" in err
