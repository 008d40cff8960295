"""Training through tf.data service: an in-process dispatcher and worker on localhost."""

import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import pair_dir, photo_dir, tiny_raw  # noqa: F401 - fixtures


@pytest.fixture
def service():
    dispatcher = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher.target.split("://")[1]))
    yield dispatcher.target, worker
    del worker, dispatcher


@pytest.mark.slow
def test_a_tiny_run_trains_through_the_service(tiny_raw, service, tmp_path):  # noqa: F811
    from tfdeblur.training import ConfigError, resolve_config, train, training_dataset

    service, worker = service

    raw = {**tiny_raw, "train": {**tiny_raw["train"], "steps": 3, "steps_per_epoch": 3,
                                 "validate_at_start": False}}
    raw["data"] = {**raw["data"], "train": {**raw["data"]["train"], "service": service}}
    cfg = resolve_config(raw)
    assert cfg["data"]["train"]["service"] == service
    # The served stream is the local one (one worker, parallel epochs).
    local = resolve_config(tiny_raw)
    a = [np.asarray(x[0]) for x in training_dataset(local).take(2)]
    assert worker._num_tasks() == 0
    b = [np.asarray(x[0]) for x in training_dataset(cfg).take(2)]
    assert worker._num_tasks() == 1  # the worker ran it (TF's own count; private API)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    result = train(cfg, tmp_path / "run", printer=None)
    assert result.completed and result.step == 3
    assert worker._num_tasks() >= 2  # and the training's fit too
    assert np.isfinite(result.last_logs["loss"])
    with pytest.raises(ConfigError, match="'data.train.service': service must be a tf.data "
                                          "service dispatcher address"):
        resolve_config({**raw, "data": {**raw["data"], "train": {**raw["data"]["train"],
                                                                 "service": "nowhere"}}})
    with pytest.raises(ConfigError, match="data.validation.pairs.service"):
        resolve_config({**raw, "data": {**raw["data"], "validation": {"pairs": {
            **raw["data"]["validation"]["pairs"], "service": service}}}})


@pytest.fixture
def worker_in_another_process():
    """A dispatcher here and its one worker in a subprocess (as on another machine)."""
    import os
    import subprocess
    import sys

    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    code = ("import tensorflow as tf\n"
            "w = tf.data.experimental.service.WorkerServer(tf.data.experimental.service."
            f"WorkerConfig(dispatcher_address={address!r}))\n"
            "print('ready', flush=True)\n"
            "w.join()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield dispatcher.target
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        del dispatcher


@pytest.mark.slow
def test_workers_in_another_process_serve_tfrecords_and_refuse_python_pipelines_clearly(
        tiny_raw, pair_dir, worker_in_another_process, tmp_path):  # noqa: F811
    """TensorFlow's tf.data service cannot run tf.numpy_function outside the process that
    built the dataset: TFRecords work there; image folders and synthetic blur fail with an
    error naming data.train.service and prepare-data."""
    from tfdeblur.data import paired_dataset, write_tfrecords
    from tfdeblur.training import ConfigError, resolve_config, train

    service = worker_in_another_process
    prepared = str(tmp_path / "pairs_tfr")
    write_tfrecords(pair_dir, prepared, progress=False)
    kwargs = dict(patch_size=16, augment=True, shuffle=True, batch_size=2, seed=5, repeat=True)
    local = [x for x, _ in paired_dataset(prepared, **kwargs).take(2)]
    served = [x for x, _ in paired_dataset(prepared, service=service, **kwargs).take(2)]
    for x, y in zip(local, served, strict=True):
        np.testing.assert_array_equal(x, y)

    raw = {**tiny_raw, "train": {**tiny_raw["train"], "steps": 2, "steps_per_epoch": 2,
                                 "validate_at_start": False, "monitor": None,
                                 "tensorboard": False}}
    raw["data"] = {"train": {**raw["data"]["train"], "service": service}, "validation": {}}
    with pytest.raises(ConfigError, match=r"config key 'data.train.service': .*"
                       r"data.train.type 'synthetic' .*tfdeblur prepare-data.*"
                       r"Could not find callback with key=pyfunc"):
        train(resolve_config(raw), tmp_path / "run", printer=None)
