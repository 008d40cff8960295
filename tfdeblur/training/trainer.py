"""The training run: model, loss, optimizer and data from a config, trained with ``model.fit``.

:func:`train` takes a resolved configuration (:mod:`tfdeblur.training.config`)
and a run folder. The folder holds everything the run produces::

    config.json                  the resolved configuration (absolute paths)
    checkpoints/ckpt-*.npz       the last ``train.keep_checkpoints`` training states
    log.csv                      one row per epoch (row 0: the untrained model)
    validation_baseline.json     PSNR / SSIM of the blurry inputs themselves
    best.keras, best.json        the model with the best ``train.monitor`` so far
    final.keras                  the model after the last step
    tensorboard/                 TensorBoard events (losses, metrics, learning rate,
                                 speed, validation images)
    train.lock                   held while a process trains in a local folder

The folder may be a local path or a URL of any filesystem TensorFlow has
(``gs://...``): every file goes through ``tf.io.gfile``. Under
``train.distribute`` the models are built and trained inside a
``tf.distribute`` strategy (``mirrored``: the local devices;
``multi_worker``: the workers of ``TF_CONFIG``, all given the same folder);
the data sections' batch size is the global batch, split across replicas,
and only the chief writes files.

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
import json
import math
import os
import sys
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tfdeblur.training import config as config_lib
from tfdeblur.training.callbacks import (
    BestModel,
    CSVLog,
    ResumableCheckpoint,
    RunProgress,
    TensorBoard,
    Validation,
    evaluate_images,
    is_chief,
    save_model_atomically,
    write_json_atomically,
)
from tfdeblur.training.checkpoint import (
    CheckpointManager,
    TrainingState,
    is_remote,
    list_checkpoints,
    read_file,
)
from tfdeblur.training.optimizers import build_optimizer, learning_rates


class RunFolderError(RuntimeError):
    """The run folder cannot be used (busy, or made with an incompatible configuration)."""


# --------------------------------------------------------------------------- builders


def build_model(cfg: dict) -> keras.Model:
    """The network of ``cfg["model"]``: the model inference loads (one output, the image)."""
    import tfdeblur.models as models

    args = {k: v for k, v in cfg["model"].items() if k != "name"}
    for k, v in args.items():
        # JSON has no tuples; builders take sequences such as dilation_rates.
        if isinstance(v, list):
            args[k] = tuple(v)
    try:
        return models.build(cfg["model"]["name"], **args)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise config_lib.ConfigError(f"config section 'model': {e}") from e


def training_model(cfg: dict, model: keras.Model) -> keras.Model:
    """The graph ``model.fit`` trains: ``model`` itself, or, when the loss has a position
    term, SVDN's ``[image, positions]`` model made of the same layers
    (:func:`tfdeblur.models.svdn.with_positions`)."""
    if not config_lib.position_weight(cfg):
        return model
    from tfdeblur.models.svdn import with_positions

    try:
        return with_positions(model)
    except ValueError as e:
        raise config_lib.ConfigError(f"config section 'loss': a position term needs SVDN: "
                                     f"{e}") from e


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


def elements_consumed(step: int, batch_size: int, *, pipelines: int = 1, index: int = 0,
                      replicas_per_pipeline: int = 1) -> int:
    """Elements of one input pipeline's own stream that ``step`` steps used, when every
    pipeline reads a stream of its own (per-file sharding).

    ``tf.distribute`` batches each worker's stream by the global ``batch_size``
    and splits every batch into ``pipelines * replicas_per_pipeline`` pieces
    (``tf.data.experimental.rebatch`` with TensorFlow's
    ``batch_sizes_for_worker``: sizes differing by at most one, rotated by the
    worker's index); a step takes ``replicas_per_pipeline`` consecutive pieces.
    So a worker uses ``batch_size / pipelines`` elements per step when that
    divides, and otherwise the sum of the pieces it took. (A new iterator starts
    the split at its first piece again, so with uneven pieces a resume is exact
    only at a step that is a multiple of ``pipelines``.)

    Example:
        >>> elements_consumed(3, 8, pipelines=2)  # two workers, one replica each
        12
    """
    pieces = pipelines * replicas_per_pipeline
    floor, ceil = divmod(batch_size, pieces)
    sizes = [floor + 1] * ceil + [floor] * (pieces - ceil)
    offset = index * replicas_per_pipeline
    sizes = sizes[offset:] + sizes[:offset]
    taken = step * replicas_per_pipeline
    return (taken // pieces) * batch_size + sum(sizes[:taken % pieces])


def input_pipelines(strategy: tf.distribute.Strategy | None) -> tuple[int, int, int]:
    """``(pipelines, index, replicas_per_pipeline)``: how ``strategy`` feeds its replicas
    (one input pipeline per worker; this process's index among them)."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        context = strategy.extended._make_input_context()
        pipelines = int(context.num_input_pipelines)
        return pipelines, int(context.input_pipeline_id), replicas // pipelines
    return 1, 0, replicas


def _build_training_dataset(cfg: dict, skip: int) -> tf.data.Dataset:
    section = cfg["data"]["train"]
    fn, root, kwargs = _dataset_kwargs(section)
    kwargs.update(repeat=True, skip=skip)
    try:
        return fn(root, **kwargs)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise config_lib.ConfigError(f"config section 'data.train': {e}") from e


def training_dataset(cfg: dict, start_step: int = 0, *,
                     strategy: tf.distribute.Strategy | None = None) -> tf.data.Dataset:
    """The endless stream of training batches, from batch ``start_step`` on.

    Batch ``i`` is the same whatever ``start_step`` is: the stream depends
    only on the data section and its seed, and the batches before
    ``start_step`` are skipped before any image is read. This holds for the
    dataset's first iterator: a second one is a new pass, reshuffled and
    redrawn, whose draws depend on how far the first has run (they share the
    seed generators), so make a new dataset instead.

    Under a multi-worker ``strategy`` a dataset sharded by data (image
    folders, synthetic blur: each worker keeps its share of every global
    batch of the one stream) skips ``start_step * batch_size`` elements; one
    sharded by file (TFRecords: each worker reads its own shards) skips what
    this worker's own stream gave to the first ``start_step`` steps
    (:func:`elements_consumed`).
    """
    section = cfg["data"]["train"]
    batch_size = int(section["batch_size"])
    policy = tf.data.experimental.AutoShardPolicy
    ds = _build_training_dataset(cfg, start_step * batch_size)
    pipelines, index, per_pipeline = input_pipelines(strategy)
    if start_step and pipelines > 1 and \
            ds.options().experimental_distribute.auto_shard_policy == policy.FILE:
        ds = _build_training_dataset(cfg, elements_consumed(
            start_step, batch_size, pipelines=pipelines, index=index,
            replicas_per_pipeline=per_pipeline))
    if section.get("with_flow"):
        if config_lib.position_weight(cfg):
            ds = ds.map(lambda blurry, sharp, flow: (blurry, (sharp, flow)))
        else:
            ds = ds.map(lambda blurry, sharp, flow: (blurry, sharp))
    if ds.options().experimental_distribute.auto_shard_policy == policy.AUTO:
        # Under a multi-worker strategy each worker keeps its share of every global
        # batch of the one seeded stream (a few image files cannot be split by file).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy.DATA
        ds = ds.with_options(options)
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


# --------------------------------------------------------------------------- run folder


def _run_path(run_dir: str | os.PathLike) -> str:
    """A local run folder as an absolute path; a TensorFlow filesystem URL as it is."""
    run_dir = os.fspath(run_dir)
    return run_dir.rstrip("/") if is_remote(run_dir) else os.path.abspath(run_dir)


@contextlib.contextmanager
def _run_lock(run_dir: str) -> Iterator[None]:
    """An exclusive lock on a local run folder (released by the OS if the process dies).

    Remote filesystems have no such lock: one run per folder is then up to the user.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        fcntl = None
    if fcntl is None or is_remote(run_dir):
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
    for name in tf.io.gfile.listdir(run_dir):
        name = name.rstrip("/")
        if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.keras")):
            with contextlib.suppress(Exception):
                tf.io.gfile.remove(os.path.join(run_dir, name))


def _with_new_defaults(saved: dict) -> dict:
    """A run's saved configuration with the ``train`` keys added since it was written set to
    their defaults (they were those values, implicitly, when it ran)."""
    train = saved.get("train")
    if isinstance(train, dict):
        missing = {k: v for k, v in config_lib._TRAIN_DEFAULTS.items() if k not in train}
        if missing:
            saved = {**saved, "train": {**train, **missing}}
    return saved


def _is_schedule_key(key: str) -> bool:
    return key == "optimizer.learning_rate" or key.startswith("optimizer.schedule")


def _check_schedule_change(run_dir: str, old: dict, new: dict) -> None:
    """Lets a resumed run change its learning-rate schedule for the steps still to come:
    raises :class:`RunFolderError` unless ``new`` gives the learning rate ``old`` gave
    at every step the run's newest checkpoint has trained."""
    newest = list_checkpoints(os.path.join(run_dir, "checkpoints"))
    done = newest[0][0] if newest else 0
    # Step k (1-based) is taken with the schedule's value at iteration k - 1.
    steps = np.arange(done)
    a, b = learning_rates(old, steps), learning_rates(new, steps)
    bad = np.flatnonzero(~np.isclose(a, b, rtol=1e-6, atol=0.0))
    if bad.size:
        i = int(bad[0])
        raise RunFolderError(
            f"run folder {run_dir}: the new optimizer.learning_rate/optimizer.schedule "
            f"({new['learning_rate']!r}, {new['schedule']!r}) gives learning rate {b[i]:.6g} "
            f"at step {i + 1}, which the run trained with {a[i]:.6g} "
            f"({old['learning_rate']!r}, {old['schedule']!r}); a resumed run may change "
            f"its schedule only from step {done + 1} on (its newest checkpoint is at step "
            f"{done})")


def _settle_config(run_dir: str, cfg: dict | None, *, write: bool = True) -> dict:
    """The run's configuration: the saved one, checked against and updated from ``cfg``."""
    path = os.path.join(run_dir, "config.json")
    saved = None
    if tf.io.gfile.exists(path):
        if is_remote(path):
            try:
                saved = json.loads(read_file(path).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise config_lib.ConfigError(f"config file {path} is not valid JSON: {e}") from None
        else:
            saved = config_lib.read_config_file(path)
        saved = _with_new_defaults(saved)
    if cfg is None:
        if saved is None:
            raise RunFolderError(f"run folder {run_dir} has no config.json: give a config")
        return saved
    if saved is not None:
        diffs = [d for d in config_lib.differences(saved, cfg)
                 if not config_lib.is_resumable_change(d[0])]
        if any(_is_schedule_key(d[0]) for d in diffs):
            _check_schedule_change(run_dir, saved["optimizer"], cfg["optimizer"])
            diffs = [d for d in diffs if not _is_schedule_key(d[0])]
        if diffs:
            lines = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diffs[:8])
            raise RunFolderError(
                f"run folder {run_dir} was started with a different configuration ({lines}). "
                "Resume with the same configuration (only "
                f"{', '.join(config_lib.RESUMABLE_CHANGES)}, vars and the data's "
                f"{'/'.join(config_lib.RESUMABLE_LOCATIONS)} paths may change) or use a new "
                "run folder")
    if saved != cfg and write:
        write_json_atomically(path, cfg)
    return cfg


# --------------------------------------------------------------------------- distribution,
# precision


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of ``train.distribute``.

    ``"none"``: the default (one device); ``"mirrored"``:
    ``tf.distribute.MirroredStrategy`` over this machine's GPUs (its CPU
    without any); ``"multi_worker"``: ``tf.distribute.MultiWorkerMirroredStrategy``
    configured from the ``TF_CONFIG`` environment variable (create it before
    anything else runs TensorFlow ops in the process).
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise config_lib.ConfigError(
                "config key 'train.distribute': \"multi_worker\" needs the TF_CONFIG "
                "environment variable (the cluster and this worker's task), see "
                "docs/training.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise config_lib.ConfigError(f"config key 'train.distribute': must be one of "
                                 f"{list(config_lib.DISTRIBUTE)}, got {name!r}")


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` while building, restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
        replicas: replicas the steps ran on (all workers together).
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
    replicas: int = 1

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _verbosity(value) -> int:
    if value != "auto":
        return int(value)
    return 1 if sys.stdout.isatty() else 2


@dataclasses.dataclass
class Setup:
    """A run ready to train: what :func:`setup` builds.

    Attributes:
        model: the image-to-image network (what inference loads, best/final.keras).
        train_model: the compiled graph ``fit`` trains (``model``, or SVDN's
            ``[image, positions]`` model of the same layers).
        manager: the run's :class:`CheckpointManager`.
        state: the restored (or a fresh) :class:`TrainingState`.
        resumed_from: the checkpoint restored, or None.
        strategy: the ``tf.distribute`` strategy the models were built under.
    """

    model: keras.Model
    train_model: keras.Model
    manager: CheckpointManager
    state: TrainingState
    resumed_from: str | None
    strategy: tf.distribute.Strategy


def setup(cfg: dict, run_dir: str | os.PathLike, *, printer: Callable | None = print,
          quarantine: bool = False, strategy: tf.distribute.Strategy | None = None) -> Setup:
    """Builds and compiles the models under ``strategy`` and the config's precision policy,
    and restores the newest checkpoint of ``run_dir``.

    Does not take the run folder's lock (use :func:`train` to train), and
    leaves damaged checkpoints where they are unless ``quarantine``.
    """
    run_dir = _run_path(run_dir)
    strategy = strategy or tf.distribute.get_strategy()
    tcfg = cfg["train"]
    keras.utils.set_random_seed(cfg["seed"])
    with strategy.scope(), dtype_policy(tcfg["mixed_precision"]):
        model = build_model(cfg)
        train_model = training_model(cfg, model)
        # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer.
        train_model.compile(optimizer=build_optimizer(cfg["optimizer"]),
                            **compile_arguments(cfg), jit_compile=tcfg["jit_compile"])
        train_model.optimizer.build(train_model.trainable_variables)
    manager = CheckpointManager(os.path.join(run_dir, "checkpoints"),
                                keep=tcfg["keep_checkpoints"])
    restored = manager.restore(train_model, quarantine=quarantine)
    if restored is None:
        return Setup(model, train_model, manager, TrainingState(extra={"name": cfg["name"]}),
                     None, strategy)
    state, path = restored
    if printer:
        printer(f"Resuming from {path}: step {state.step}, epoch {state.epoch}"
                + (f", best {state.best:.4f} at step {state.best_step}"
                   if state.best is not None else ""))
    return Setup(model, train_model, manager, state, path, strategy)


def prepare(cfg: dict, run_dir: str | os.PathLike, *, printer: Callable | None = print,
            quarantine: bool = False):
    """:func:`setup` as ``(train_model, manager, state, resumed_from)``; ``state`` is a
    fresh :class:`TrainingState` when there is no checkpoint."""
    s = setup(cfg, run_dir, printer=printer, quarantine=quarantine)
    return s.train_model, s.manager, s.state, s.resumed_from


def _save_on_interrupt(s: Setup, checkpointer: ResumableCheckpoint, spe: int, start_step: int,
                       say: Callable) -> None:
    """Checkpoints the step reached when Ctrl-C or SIGTERM stops training mid-epoch.

    The optimizer's step count decides when the interrupt landed between a
    step and the callback that counts it. At an epoch boundary nothing is
    written: either the epoch-end checkpoint exists, or the epoch's
    validation and log row have not happened and the previous checkpoint
    replays its last steps.
    """
    step = checkpointer.step_reached()
    newest = s.manager.checkpoints()
    if step <= start_step or step % spe == 0 or (newest and newest[0][0] == step):
        return
    if not is_chief(s.strategy):
        return
    s.state.step = step
    path = s.manager.save(s.train_model, s.state)
    say(f"interrupted at step {step}: saved {path}")


def train(cfg: dict | None, run_dir: str | os.PathLike, *,
          printer: Callable | None = print,
          strategy: tf.distribute.Strategy | None = None,
          callbacks: list[keras.callbacks.Callback] | None = None) -> RunResult:
    """Trains (or resumes training) as ``cfg`` says, writing everything into ``run_dir``.

    Args:
        cfg: a resolved configuration (:func:`~tfdeblur.training.load_config`),
            or None to resume with the one saved in ``run_dir``.
        run_dir: the run folder (created when missing): a local path or a
            TensorFlow filesystem URL (``gs://bucket/run``, ``ram://run``).
            Every worker of a multi-worker run gives the same folder.
        printer: where progress lines go (default ``print``), or None.
        strategy: a ``tf.distribute`` strategy to train under (default: the
            one ``train.distribute`` names).
        callbacks: more Keras callbacks for every ``fit`` (after the run's own).

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
    run_dir = _run_path(run_dir)
    if strategy is None:
        # First, before other TensorFlow work: a multi-worker strategy configures the
        # process's collective ops.
        saved = None if cfg is not None else _saved_distribute(run_dir)
        strategy = make_strategy((cfg["train"] if cfg is not None else saved)["distribute"])
    chief = is_chief(strategy)
    say = (printer or (lambda *a, **k: None)) if chief else (lambda *a, **k: None)
    tf.io.gfile.makedirs(run_dir)
    with _run_lock(run_dir) if chief else contextlib.nullcontext():
        cfg = _settle_config(run_dir, cfg, write=chief)
        tcfg = cfg["train"]
        total, spe = int(tcfg["steps"]), int(tcfg["steps_per_epoch"])
        # Validation sets first: a missing folder should fail before a long model build.
        val_sets = validation_datasets(cfg)
        s = setup(cfg, run_dir, printer=say, quarantine=chief, strategy=strategy)
        model, train_model, manager, state = s.model, s.train_model, s.manager, s.state
        if chief:
            manager.remove_temporary_files()
            _remove_temporary_files(run_dir)
        start_step = state.step
        if start_step > total:
            raise RunFolderError(f"run folder {run_dir} is at step {start_step}, beyond "
                                 f"train.steps = {total}")
        mixed = tcfg["mixed_precision"] != "float32"
        float32_copy: list[keras.Model] = []

        def save_inference_model(path: str) -> None:
            # The image-to-image model; under mixed precision a float32 copy of it,
            # so that the saved model loads and runs in float32.
            target = model
            if mixed:
                if not float32_copy:
                    with dtype_policy("float32"):
                        float32_copy.append(build_model(cfg))
                float32_copy[0].set_weights(model.get_weights())
                target = float32_copy[0]
            save_model_atomically(target, path)

        validation = Validation(val_sets, model=model)
        csv_log = CSVLog(os.path.join(run_dir, "log.csv"), state)
        csv_log.set_model(train_model)
        csv_log.truncate(start_step if s.resumed_from else -1)
        run_callbacks: list[keras.callbacks.Callback] = [validation]
        board = None
        if tcfg["tensorboard"]:
            board = TensorBoard(os.path.join(run_dir, "tensorboard"), images=val_sets,
                                max_images=int(tcfg["tensorboard_images"]),
                                batch_size=int(cfg["data"]["train"]["batch_size"]),
                                model=model, step_offset=start_step)
            board.set_model(train_model)
            run_callbacks.append(board)
        if tcfg["monitor"] is not None:
            run_callbacks.append(BestModel(os.path.join(run_dir, "best.keras"), tcfg["monitor"],
                                           tcfg["monitor_mode"], state, save_inference_model))
        checkpointer = ResumableCheckpoint(
            manager, state, int(tcfg["checkpoint_every"]), spe,
            metric_values=state.metric_values if start_step % spe else None)
        run_callbacks += [csv_log, checkpointer, *(callbacks or [])]
        verbose = _verbosity(tcfg["verbose"]) if chief else 0
        total_epochs = math.ceil(total / spe)
        if verbose:
            run_callbacks.append(RunProgress(total_epochs))

        initial, inputs = {}, {}
        if s.resumed_from is None and val_sets:
            inputs = {name: evaluate_images(None, ds) for name, ds in val_sets.items()}
            if chief:
                write_json_atomically(os.path.join(run_dir, "validation_baseline.json"), inputs)
            for name, r in inputs.items():
                say(f"validation '{name}': {r['images']} images, blurry input "
                    f"PSNR {r['psnr']:.3f} dB, SSIM {r['ssim']:.4f}")
            if tcfg["validate_at_start"]:
                initial = validation.evaluate(model)
                csv_log.append(0, initial)
                if board is not None:
                    board.scalars({f"validation/{k[4:]}": v for k, v in initial.items()}, 0)
                    board.write_images(model, 0)
                    board.writer.flush()
                say("untrained model: " + ", ".join(f"{k} {v:.4f}" for k, v in initial.items()))

        replicas = int(strategy.num_replicas_in_sync)
        say(f"training {cfg['name']}: steps {start_step} -> {total} "
            f"({spe} per epoch, checkpoint every {tcfg['checkpoint_every']}"
            + (f", {replicas} replicas" if replicas > 1 else "")
            + (f", {tcfg['mixed_precision']}" if mixed else "") + f") in {run_dir}")
        last_logs: dict = {}
        try:
            for initial_epoch, epochs, steps in fit_plan(start_step, total, spe):
                if initial_epoch * spe != state.step:
                    say(f"epoch {initial_epoch + 1}/{total_epochs}: resuming at step "
                        f"{state.step}, {steps} steps left in it")
                data = training_dataset(cfg, state.step, strategy=strategy)
                with _fit_under_strategy(train_model, strategy, data.element_spec), \
                        _service_errors(cfg["data"]["train"]):
                    history = train_model.fit(data, initial_epoch=initial_epoch, epochs=epochs,
                                              steps_per_epoch=steps, callbacks=run_callbacks,
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
            _save_on_interrupt(s, checkpointer, spe, start_step, say)
            raise
        completed = state.step >= total
        if completed and chief:
            save_inference_model(os.path.join(run_dir, "final.keras"))
            say(f"done: step {state.step}; final model {os.path.join(run_dir, 'final.keras')}")
        return RunResult(
            run_dir=run_dir, start_step=start_step, resumed_from=s.resumed_from,
            step=state.step, total_steps=total, completed=completed,
            best=None if state.best is None else (state.best, state.best_step),
            last_logs=last_logs, initial_validation=initial, input_validation=inputs,
            replicas=replicas)


#: What a tf.data service worker in another process says when a pipeline calls Python.
_REMOTE_PYTHON_ERROR = "Could not find callback with key=pyfunc"


@contextlib.contextmanager
def _service_errors(section: dict) -> Iterator[None]:
    """A tf.data service worker that cannot run the training pipeline's Python functions
    (it runs in another process) as a ConfigError naming ``data.train.service``."""
    try:
        yield
    except tf.errors.OpError as e:
        if section.get("service") is None or _REMOTE_PYTHON_ERROR not in str(e):
            raise
        raise config_lib.ConfigError(
            f"config key 'data.train.service': a tf.data service worker of "
            f"{section['service']} cannot run this training pipeline: data.train.type "
            f"{section['type']!r} reads or makes its images in Python (tf.numpy_function), "
            "which the tf.data service runs only in the process that built the dataset "
            "(TensorFlow's documented limitation). With workers in other processes, "
            "train on TFRecords written by `tfdeblur prepare-data ROOT OUT` (data.train: "
            "type 'paired', root OUT), which decode with TensorFlow ops; or start the "
            "workers in the training process itself. Worker error: "
            + next((ln.strip() for ln in str(e).splitlines()
                    if _REMOTE_PYTHON_ERROR in ln), "")) from e


@contextlib.contextmanager
def _fit_under_strategy(model: keras.Model, strategy: tf.distribute.Strategy,
                        element_spec) -> Iterator[None]:
    """Works around Keras 3.15's ``fit`` under a ``tf.distribute`` strategy for the duration
    of a ``fit``: one fault under every strategy, one more with several workers.

    1. Under any strategy ``fit`` first builds the model symbolically from a batch it
       takes from an iterator of its own, then starts a second iterator for the
       steps. The training stream is reshuffled and redrawn at every new iteration
       (each is a new pass), so the steps would train on the stream's second pass:
       other batches than the same run without a strategy. With several workers that
       build also fails (``Attempt to convert a value (PerReplica...)``,
       keras-team/keras#20585). The model is built here from the data's element
       spec, in the strategy's scope, and ``fit``'s own build is skipped.
    2. With several workers the step's logs (scalars) are averaged with
       ``strategy.reduce("MEAN", v, axis=0)``, which fails on a scalar (``Invalid
       reduction dimension 0``): they are averaged over the replicas of all workers
       with ``axis=None`` instead.
    """
    if getattr(model, "_distribute_strategy", None) is None:
        # Compiled outside any strategy: Keras builds while tracing the step (no peek).
        yield
        return
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = keras_tf_trainer.reduce_per_replica
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
            strategy.extended._num_workers > 1:
        def reduce_per_replica(values, strategy_, reduction):
            if reduction in ("auto", "mean") and strategy_ is strategy:
                return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None),
                                             values)
            return original(values, strategy_, reduction)

        keras_tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        keras_tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def _saved_distribute(run_dir: str) -> dict:
    """The ``train`` section of a run folder's saved configuration (defaults when absent)."""
    path = os.path.join(run_dir, "config.json")
    saved: dict = {}
    if tf.io.gfile.exists(path):
        with contextlib.suppress(ValueError, UnicodeDecodeError, tf.errors.OpError):
            saved = json.loads(read_file(path).decode("utf-8"))
    train = _with_new_defaults({"train": {}, **saved})["train"]
    return train if isinstance(train, dict) else dict(config_lib._TRAIN_DEFAULTS)
