"""The training run: model, loss, optimizer and data from a config, trained with ``model.fit``.

:func:`train` takes a resolved configuration (:mod:`tfdeblur.training.config`)
and a run folder. The folder holds everything the run produces::

    config.json                  the resolved configuration (absolute paths)
    checkpoints/ckpt-*.npz       the last ``train.keep_checkpoints`` training states
    log.csv                      one row per epoch (row 0: the untrained model)
    validation_baseline.json     PSNR / SSIM of the blurry inputs themselves
    best.keras, best.json        the model with the best ``train.monitor`` so far
    final.keras                  the model after the last step
    train.lock                   held while a process trains in the folder

Started again with the same folder, a run continues from its newest
complete checkpoint: weights, optimizer state (step count, Adam's moments,
learning-rate schedule position), epoch, best value, the running means of
the epoch's metrics, and the position in the training data. The data is one
endless stream of batches fixed by the seed (each pass over the images
reshuffled and redrawn), and a resumed run skips the batches already used
before any image is read, so it sees exactly the batches the uninterrupted
run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from tfdeblur.training import config as config_lib
from tfdeblur.training.callbacks import (
    BestModel,
    CSVLog,
    ResumableCheckpoint,
    RunProgress,
    Validation,
    evaluate_images,
    save_model_atomically,
    write_json_atomically,
)
from tfdeblur.training.checkpoint import CheckpointManager, TrainingState
from tfdeblur.training.optimizers import build_optimizer


class RunFolderError(RuntimeError):
    """The run folder cannot be used (busy, or made with an incompatible configuration)."""


# --------------------------------------------------------------------------- builders


def build_model(cfg: dict, *, for_training: bool = True) -> keras.Model:
    """The network of ``cfg["model"]``.

    For training, SVDN also returns DCN1's sampling positions when the loss
    has a position term.
    """
    import tfdeblur.models as models

    args = {k: v for k, v in cfg["model"].items() if k != "name"}
    for k, v in args.items():
        # JSON has no tuples; builders take sequences such as dilation_rates.
        if isinstance(v, list):
            args[k] = tuple(v)
    if for_training and config_lib.position_weight(cfg):
        args["return_positions"] = True
    try:
        return models.build(cfg["model"]["name"], **args)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise config_lib.ConfigError(f"config section 'model': {e}") from e


def compile_arguments(cfg: dict) -> dict:
    """``loss``, ``loss_weights`` and ``metrics`` for ``model.compile`` from ``cfg``."""
    from tfdeblur.registry import LOSSES, METRICS

    args = {k: v for k, v in cfg["loss"].items() if k != "name"}
    try:
        loss = LOSSES.get(cfg["loss"]["name"])(**args)
        # A multi-output loss (SVDN's) gives model.compile's arguments itself.
        out = loss.compile_arguments() if hasattr(loss, "compile_arguments") else {"loss": loss}
    except (TypeError, ValueError, FileNotFoundError, OSError) as e:
        raise config_lib.ConfigError(f"config section 'loss': {e}") from e
    image_metrics = [METRICS.get(m)() for m in cfg["metrics"]]
    # A two-output model (SVDN with positions) gets metrics on its image only.
    out["metrics"] = [image_metrics, []] if isinstance(out["loss"], list) else image_metrics
    return out


def _dataset_kwargs(section: dict) -> tuple[Callable, str, dict]:
    from tfdeblur import data
    from tfdeblur.registry import DATASETS

    kwargs = {k: v for k, v in section.items() if k not in ("type", "root", "blur", "limit")}
    for k, v in kwargs.items():
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    if "blur" in section:
        blur = {k: tuple(v) if isinstance(v, list) else v for k, v in section["blur"].items()}
        kwargs["config"] = data.BlurConfig(**blur)
    return DATASETS.get(section["type"]), section["root"], kwargs


def training_dataset(cfg: dict, start_step: int = 0) -> tf.data.Dataset:
    """The endless stream of training batches, from batch ``start_step`` on.

    Batch ``i`` is the same whatever ``start_step`` is: the stream depends
    only on the data section and its seed, and the first ``start_step``
    batches are skipped before any image is read.
    """
    section = cfg["data"]["train"]
    fn, root, kwargs = _dataset_kwargs(section)
    kwargs.update(repeat=True, skip=start_step * int(section["batch_size"]))
    try:
        ds = fn(root, **kwargs)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise config_lib.ConfigError(f"config section 'data.train': {e}") from e
    if section.get("with_flow"):
        if config_lib.position_weight(cfg):
            ds = ds.map(lambda blurry, sharp, flow: (blurry, (sharp, flow)))
        else:
            ds = ds.map(lambda blurry, sharp, flow: (blurry, sharp))
    return ds


def validation_datasets(cfg: dict) -> dict[str, tf.data.Dataset]:
    """name -> batches of ``(blurry, sharp)`` of each validation set (same images every time)."""
    out = {}
    for name, section in cfg["data"]["validation"].items():
        fn, root, kwargs = _dataset_kwargs(section)
        batch_size = kwargs.pop("batch_size")
        kwargs.update(augment=False, shuffle=False)
        try:
            ds = fn(root, **kwargs)
        except (TypeError, ValueError, FileNotFoundError) as e:
            raise config_lib.ConfigError(f"config section 'data.validation.{name}': {e}") from e
        if section.get("limit") is not None:
            ds = ds.take(int(section["limit"]))
        out[name] = ds.batch(batch_size)
    return out


def fit_plan(start_step: int, total_steps: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
    """``(initial_epoch, epochs, steps_per_epoch)`` of the ``fit`` calls from ``start_step`` on.

    Epoch ``e`` covers steps ``[e * steps_per_epoch, (e + 1) * steps_per_epoch)``.
    Keras runs the same number of steps in every epoch of one ``fit``, so the
    remainder of an epoch a run resumes in, and a last epoch cut short by
    ``total_steps``, each get a ``fit`` of their own; whole epochs share one.
    """
    plan = []
    step = start_step
    while step < total_steps:
        epoch = step // steps_per_epoch
        epoch_end = (epoch + 1) * steps_per_epoch
        if step % steps_per_epoch == 0 and epoch_end <= total_steps:
            whole = (total_steps - step) // steps_per_epoch
            plan.append((epoch, epoch + whole, steps_per_epoch))
            step += whole * steps_per_epoch
        else:
            end = min(epoch_end, total_steps)
            plan.append((epoch, epoch + 1, end - step))
            step = end
    return plan


# --------------------------------------------------------------------------- run folder


@contextlib.contextmanager
def _run_lock(run_dir: str) -> Iterator[None]:
    """An exclusive lock on the run folder (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path = os.path.join(run_dir, "train.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderError(f"run folder {run_dir} is in use by another training process "
                                 f"(lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _remove_temporary_files(run_dir: str) -> None:
    """Deletes what atomic writes cut short by a kill left (``.<name>.<pid>.<id>.tmp[.keras]``)."""
    for name in os.listdir(run_dir):
        if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.keras")):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(run_dir, name))


def _settle_config(run_dir: str, cfg: dict | None) -> dict:
    """The run's configuration: the saved one, checked against and updated from ``cfg``."""
    path = os.path.join(run_dir, "config.json")
    saved = config_lib.read_config_file(path) if os.path.exists(path) else None
    if cfg is None:
        if saved is None:
            raise RunFolderError(f"run folder {run_dir} has no config.json: give a config")
        return saved
    if saved is not None:
        diffs = [d for d in config_lib.differences(saved, cfg)
                 if not config_lib.is_resumable_change(d[0])]
        if diffs:
            lines = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diffs[:8])
            raise RunFolderError(
                f"run folder {run_dir} was started with a different configuration ({lines}). "
                "Resume with the same configuration (only "
                f"{', '.join(config_lib.RESUMABLE_CHANGES)}, vars and the data's "
                f"{'/'.join(config_lib.RESUMABLE_LOCATIONS)} paths may change) or use a new "
                "run folder")
    if saved != cfg:
        write_json_atomically(path, cfg)
    return cfg


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class RunResult:
    """What :func:`train` did.

    Attributes:
        run_dir: the run folder.
        start_step: the step training started from (0, or a checkpoint's).
        resumed_from: the checkpoint file resumed from, or None.
        step: the step reached.
        total_steps: ``train.steps``.
        completed: ``step == total_steps``.
        best: best monitored value and its step (None without a monitor).
        last_logs: the logs of the last epoch (losses, metrics, validation).
        initial_validation: validation of the untrained model (fresh runs).
        input_validation: validation of the blurry inputs themselves.
    """

    run_dir: str
    start_step: int
    resumed_from: str | None
    step: int
    total_steps: int
    completed: bool
    best: tuple[float, int] | None
    last_logs: dict
    initial_validation: dict
    input_validation: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _verbosity(value) -> int:
    if value != "auto":
        return int(value)
    return 1 if sys.stdout.isatty() else 2


def prepare(cfg: dict, run_dir: str | os.PathLike, *, printer: Callable | None = print,
            quarantine: bool = False):
    """Builds and compiles the model and restores the newest checkpoint of ``run_dir``.

    Returns ``(model, manager, state, resumed_from)``; ``state`` is a fresh
    :class:`TrainingState` when there is no checkpoint. Does not take the
    run folder's lock (use :func:`train` to train), and leaves damaged
    checkpoints where they are unless ``quarantine``.
    """
    run_dir = os.fspath(run_dir)
    keras.utils.set_random_seed(cfg["seed"])
    model = build_model(cfg)
    model.compile(optimizer=build_optimizer(cfg["optimizer"]), **compile_arguments(cfg),
                  jit_compile=cfg["train"]["jit_compile"])
    model.optimizer.build(model.trainable_variables)
    manager = CheckpointManager(os.path.join(run_dir, "checkpoints"),
                                keep=cfg["train"]["keep_checkpoints"])
    restored = manager.restore(model, quarantine=quarantine)
    if restored is None:
        return model, manager, TrainingState(extra={"name": cfg["name"]}), None
    state, path = restored
    if printer:
        printer(f"Resuming from {path}: step {state.step}, epoch {state.epoch}"
                + (f", best {state.best:.4f} at step {state.best_step}"
                   if state.best is not None else ""))
    return model, manager, state, path


def _save_on_interrupt(model, manager: CheckpointManager, state: TrainingState, spe: int,
                       start_step: int, say: Callable) -> None:
    """Checkpoints the step reached when Ctrl-C or SIGTERM stops training mid-epoch.

    The optimizer's step count is the truth (the interrupt may land between a
    step and the callback that counts it). At an epoch boundary nothing is
    written: either the epoch-end checkpoint exists, or the epoch's
    validation and log row have not happened and the previous checkpoint
    replays its last steps.
    """
    step = int(model.optimizer.iterations.numpy())
    newest = manager.checkpoints()
    if step <= start_step or step % spe == 0 or (newest and newest[0][0] == step):
        return
    state.step = step
    path = manager.save(model, state)
    say(f"interrupted at step {step}: saved {path}")


def train(cfg: dict | None, run_dir: str | os.PathLike, *,
          printer: Callable | None = print) -> RunResult:
    """Trains (or resumes training) as ``cfg`` says, writing everything into ``run_dir``.

    Args:
        cfg: a resolved configuration (:func:`~tfdeblur.training.load_config`),
            or None to resume with the one saved in ``run_dir``.
        run_dir: the run folder (created when missing).
        printer: where progress lines go (default ``print``), or None.

    Returns:
        A :class:`RunResult`.

    Raises:
        ConfigError: a bad configuration, naming the key.
        RunFolderError: the folder is busy or was started with another
            configuration.
        RuntimeError: the loss became NaN or infinite (the last good
            checkpoint is kept).
        KeyboardInterrupt: after saving a checkpoint of the step reached
            (``training/train.py`` turns SIGTERM into one too).
    """
    run_dir = os.path.abspath(os.fspath(run_dir))
    os.makedirs(run_dir, exist_ok=True)
    say = printer or (lambda *a, **k: None)
    with _run_lock(run_dir):
        cfg = _settle_config(run_dir, cfg)
        tcfg = cfg["train"]
        total, spe = int(tcfg["steps"]), int(tcfg["steps_per_epoch"])
        # Validation sets first: a missing folder should fail before a long model build.
        val_sets = validation_datasets(cfg)
        model, manager, state, resumed_from = prepare(cfg, run_dir, printer=printer,
                                                      quarantine=True)
        manager.remove_temporary_files()
        _remove_temporary_files(run_dir)
        start_step = state.step
        if start_step > total:
            raise RunFolderError(f"run folder {run_dir} is at step {start_step}, beyond "
                                 f"train.steps = {total}")

        twin: list[keras.Model] = []

        def save_inference_model(path: str) -> None:
            # An uncompiled copy without SVDN's position output: what inference loads.
            if not twin:
                twin.append(build_model(cfg, for_training=False))
            twin[0].set_weights(model.get_weights())
            save_model_atomically(twin[0], path)

        validation = Validation(val_sets)
        csv_log = CSVLog(os.path.join(run_dir, "log.csv"), state)
        csv_log.set_model(model)
        csv_log.truncate(start_step if resumed_from else -1)
        callbacks: list[keras.callbacks.Callback] = [validation]
        if tcfg["monitor"] is not None:
            callbacks.append(BestModel(os.path.join(run_dir, "best.keras"), tcfg["monitor"],
                                       tcfg["monitor_mode"], state, save_inference_model))
        checkpointer = ResumableCheckpoint(
            manager, state, int(tcfg["checkpoint_every"]), spe,
            metric_values=state.metric_values if start_step % spe else None)
        callbacks += [csv_log, checkpointer]
        verbose = _verbosity(tcfg["verbose"])
        total_epochs = math.ceil(total / spe)
        if verbose:
            callbacks.append(RunProgress(total_epochs))

        initial, inputs = {}, {}
        if resumed_from is None and val_sets:
            inputs = {name: evaluate_images(None, ds) for name, ds in val_sets.items()}
            write_json_atomically(os.path.join(run_dir, "validation_baseline.json"), inputs)
            for name, r in inputs.items():
                say(f"validation '{name}': {r['images']} images, blurry input "
                    f"PSNR {r['psnr']:.3f} dB, SSIM {r['ssim']:.4f}")
            if tcfg["validate_at_start"]:
                initial = validation.evaluate(model)
                csv_log.append(0, initial)
                say("untrained model: " + ", ".join(f"{k} {v:.4f}" for k, v in initial.items()))

        say(f"training {cfg['name']}: steps {start_step} -> {total} "
            f"({spe} per epoch, checkpoint every {tcfg['checkpoint_every']}) in {run_dir}")
        last_logs: dict = {}
        try:
            for initial_epoch, epochs, steps in fit_plan(start_step, total, spe):
                if initial_epoch * spe != state.step:
                    say(f"epoch {initial_epoch + 1}/{total_epochs}: resuming at step "
                        f"{state.step}, {steps} steps left in it")
                history = model.fit(training_dataset(cfg, state.step),
                                    initial_epoch=initial_epoch, epochs=epochs,
                                    steps_per_epoch=steps, callbacks=callbacks,
                                    verbose=verbose, shuffle=False)
                if history.history:
                    last_logs = {k: float(v[-1]) for k, v in history.history.items()}
                if checkpointer.diverged_at is not None:
                    last = manager.checkpoints()
                    raise RuntimeError(
                        f"the loss became NaN or infinite at step {checkpointer.diverged_at}; "
                        f"training stopped, newest checkpoint kept: "
                        f"{last[0][1] if last else 'none'}")
        except KeyboardInterrupt:
            _save_on_interrupt(model, manager, state, spe, start_step, say)
            raise
        completed = state.step >= total
        if completed:
            save_inference_model(os.path.join(run_dir, "final.keras"))
            say(f"done: step {state.step}; final model {os.path.join(run_dir, 'final.keras')}")
        return RunResult(
            run_dir=run_dir, start_step=start_step, resumed_from=resumed_from, step=state.step,
            total_steps=total, completed=completed,
            best=None if state.best is None else (state.best, state.best_step),
            last_logs=last_logs, initial_validation=initial, input_validation=inputs)
