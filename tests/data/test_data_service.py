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
