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

import importlib

# Names and the submodule that defines each. Loaded on first use, so that the command
# line (``tfdeblur train --help``, config errors) does not import TensorFlow.
_EXPORTS = {
    "CheckpointError": "checkpoint", "CheckpointManager": "checkpoint",
    "TrainingState": "checkpoint", "list_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint", "load_weights": "checkpoint",
    "read_checkpoint": "checkpoint",
    "ConfigError": "config", "apply_overrides": "config", "load_config": "config",
    "read_config_file": "config", "resolve_config": "config",
    "AdamL2": "optimizers", "build_optimizer": "optimizers",
    "learning_rate_schedule": "optimizers",
    "RunFolderError": "trainer", "RunResult": "trainer", "Setup": "trainer",
    "build_model": "trainer", "compile_arguments": "trainer", "fit_plan": "trainer",
    "make_strategy": "trainer", "prepare": "trainer", "setup": "trainer", "train": "trainer",
    "training_dataset": "trainer", "training_model": "trainer",
    "validation_datasets": "trainer",
    "BestModel": "callbacks", "CSVLog": "callbacks", "ResumableCheckpoint": "callbacks",
    "TensorBoard": "callbacks", "Validation": "callbacks", "evaluate_images": "callbacks",
    "is_chief": "callbacks",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfdeblur.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tfdeblur.training.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "AdamL2",
    "BestModel",
    "CSVLog",
    "ResumableCheckpoint",
    "Setup",
    "TensorBoard",
    "Validation",
    "evaluate_images",
    "is_chief",
    "make_strategy",
    "setup",
    "training_model",
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
