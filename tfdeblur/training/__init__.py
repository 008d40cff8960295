"""Training recipes: a model, loss, optimizer and data from a small JSON config, resumable.

Entry points: :func:`load_config` (read, override, check a config file) and
:func:`train` (train or resume in a run folder; ``training/train.py`` is the
command line). The run folder keeps checkpoints of the whole training state
(written atomically, the last K kept), a CSV log, the best model by a
validation metric and the final model; a run started again in the same
folder continues from its newest complete checkpoint, data position
included. The papers' recipes and small CPU configs are in
``training/configs/``.
"""

from tfdeblur.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainingState,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    read_checkpoint,
)
from tfdeblur.training.config import (
    ConfigError,
    apply_overrides,
    load_config,
    read_config_file,
    resolve_config,
)
from tfdeblur.training.optimizers import AdamL2, build_optimizer, learning_rate_schedule
from tfdeblur.training.trainer import (
    RunFolderError,
    RunResult,
    build_model,
    compile_arguments,
    fit_plan,
    prepare,
    train,
    training_dataset,
    validation_datasets,
)

__all__ = [
    "AdamL2",
    "CheckpointError",
    "CheckpointManager",
    "ConfigError",
    "RunFolderError",
    "RunResult",
    "TrainingState",
    "apply_overrides",
    "build_model",
    "build_optimizer",
    "compile_arguments",
    "fit_plan",
    "learning_rate_schedule",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "prepare",
    "read_checkpoint",
    "read_config_file",
    "resolve_config",
    "train",
    "training_dataset",
    "validation_datasets",
]
