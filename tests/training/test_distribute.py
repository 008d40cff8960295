"""tf.distribute: mirrored on one CPU and on two logical CPUs; two workers on 127.0.0.1."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.training import list_checkpoints, read_checkpoint, resolve_config, train
from tfdeblur.training.trainer import elements_consumed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(tiny_raw, **train_section):
    return resolve_config({**tiny_raw, "train": {**tiny_raw["train"], "tensorboard": False,
                                                 **train_section}})


def _env(**extra):
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
            "OMP_NUM_THREADS": "1", **extra}


def _summary(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("summary: ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("summary: "):])


def _weights(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(config_path, run, weights, ports):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(len(ports)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, config_path, run, weights[i]], env=_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _final_weights(run):
    return read_checkpoint(list_checkpoints(os.path.join(run, "checkpoints"))[0][1])[1]["model"]


@pytest.mark.slow
def test_mirrored_on_one_cpu_is_one_replica_and_trains_as_without_a_strategy(tiny_raw,
                                                                            tmp_path):
    """One replica does exactly what the run without a strategy does: the same batches
    (Keras's own build under a strategy would start the stream's second pass) and the same
    arithmetic, so the weights are bit-identical."""
    cfg = _cfg(tiny_raw, steps=2, steps_per_epoch=2, monitor=None, validate_at_start=False)
    run = tmp_path / "run"
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    result = train(cfg, str(run), printer=None, strategy=strategy)
    assert (result.step, result.completed, result.replicas) == (2, True, 1)
    assert np.isfinite(result.last_logs["loss"])
    assert [s for s, _ in list_checkpoints(str(run / "checkpoints"))] == [2]
    assert (run / "final.keras").exists()

    plain = train(cfg, str(tmp_path / "plain"), printer=None)
    assert plain.last_logs["loss"] == result.last_logs["loss"]
    for x, y in zip(_final_weights(str(run)), _final_weights(str(tmp_path / "plain")),
                    strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device_with_the_whole_batch(tiny_raw,
                                                                             tmp_path):
    """The global batch is split over two replicas and the gradients (the compiled ops'
    included) are all-reduced: the weights are those of the run without a strategy, up to
    the rounding of summing each half's gradient apart.

    Tolerance: Adam moves a weight by lr * m / (sqrt(v) + eps) per step, whose change for
    a relative change d of the gradients is at most lr * d / 4 (at |g| = eps), so after n
    steps a weight is within about n * lr * d; float32 sums in another order give d far
    below 1e-4, hence 4 steps * 3e-3 * 1e-4 ~ 1.2e-6.
    """
    cfg = _cfg(tiny_raw, steps=4, steps_per_epoch=2)
    assert cfg["optimizer"]["learning_rate"] == 3e-3
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    done = subprocess.run([sys.executable, WORKER, str(config), str(tmp_path / "mirrored"),
                           str(tmp_path / "mirrored.npz"), "--logical-cpus", "2", "--mirrored"],
                          env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = _summary(done.stdout)
    assert (summary["step"], summary["replicas"]) == (4, 2)

    train(cfg, str(tmp_path / "one"), printer=None)
    one = _final_weights(str(tmp_path / "one"))
    mirrored = _weights(tmp_path / "mirrored.npz")
    assert len(mirrored) == len(one)
    for x, y in zip(mirrored, one, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1.2e-6)


@pytest.mark.slow
def test_two_workers_killed_mid_run_resume_at_their_step_with_identical_weights(tiny_raw,
                                                                                tmp_path):
    cfg = _cfg(tiny_raw, steps=100000, steps_per_epoch=4, checkpoint_every=2,
               distribute="multi_worker", tensorboard=True, tensorboard_images=1)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    run = str(tmp_path / "run")
    weights = [str(tmp_path / f"worker{i}.npz") for i in range(2)]

    procs = _workers(str(config), run, weights, _free_ports(2))
    try:
        deadline = time.monotonic() + 300
        while not any(s >= 6 for s, _ in list_checkpoints(os.path.join(run, "checkpoints"))):
            for p in procs:
                assert p.poll() is None, p.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint at step 6 within 300 s"
            time.sleep(0.05)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
    reached = list_checkpoints(os.path.join(run, "checkpoints"))[0][0]
    assert reached >= 6
    # Only the chief writes: one TensorBoard event file, not one per worker.
    assert len(tf.io.gfile.glob(os.path.join(run, "tensorboard", "events.out.*"))) == 1

    cfg["train"]["steps"] = reached + 3
    config.write_text(json.dumps(cfg))
    procs = _workers(str(config), run, weights, _free_ports(2))
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outputs.append(out)
        assert p.returncode == 0, out[-3000:]
    summaries = [_summary(out) for out in outputs]
    for s in summaries:
        assert (s["start_step"], s["step"], s["completed"]) == (reached, reached + 3, True)
        assert s["replicas"] == 2
    assert [s["chief"] for s in summaries] == [True, False]
    first, second = (_weights(w) for w in weights)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    # The chief's final checkpoint holds those weights.
    _, saved = read_checkpoint(list_checkpoints(os.path.join(run, "checkpoints"))[0][1])
    for a, b in zip(first, saved["model"], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_size, workers, replicas", [(4, 2, 1), (7, 2, 2), (5, 3, 1),
                                                           (8, 2, 2), (6, 1, 3)])
def test_elements_consumed_is_what_tensorflows_rebatch_gives_each_worker(batch_size, workers,
                                                                         replicas):
    """Per-file sharding: a worker's stream is batched by the global batch and split into
    pieces as tf.distribute does; a step takes ``replicas`` of them."""
    from tensorflow.python.data.experimental.ops.distribute import batch_sizes_for_worker

    for worker in range(workers):
        sizes = batch_sizes_for_worker(batch_size, workers, replicas, worker)
        pieces = list(tf.data.Dataset.range(10 * batch_size).batch(batch_size)
                      .rebatch(sizes).take(7 * replicas).as_numpy_iterator())
        for step in range(8):
            used = sum(len(p) for p in pieces[:step * replicas])
            assert elements_consumed(step, batch_size, pipelines=workers, index=worker,
                                     replicas_per_pipeline=replicas) == used, (worker, step)
            if step < 7:  # the next step starts at element `used` of this worker's stream
                assert pieces[step * replicas][0] == used


@pytest.fixture
def tfrecord_pairs(tmp_path):
    """Two TFRecord shards of two 32x32 pairs each (one shard per worker)."""
    from tests.training.conftest import _smooth_image
    from tfdeblur.data import write_image, write_tfrecords

    rng = np.random.default_rng(11)
    root = tmp_path / "pairs"
    for sub in ("blur", "sharp"):
        os.makedirs(root / sub)
    for i in range(4):
        sharp = _smooth_image(rng, 32, 32)
        write_image(str(root / "sharp" / f"{i}.png"), sharp)
        write_image(str(root / "blur" / f"{i}.png"), 0.5 * (sharp + np.roll(sharp, 2, axis=1)))
    out = tmp_path / "pairs_tfr"
    write_tfrecords(str(root), str(out), shards=2, progress=False)
    return str(out)


@pytest.mark.slow
def test_two_workers_on_tfrecords_resume_exactly_as_an_uninterrupted_run(tiny_raw,
                                                                         tfrecord_pairs, tmp_path):
    """Each worker reads its own shard and uses batch_size / 2 elements per step; resumed at
    step 3 (mid-epoch), both continue at the next element of their own stream."""
    raw = {**tiny_raw, "data": {**tiny_raw["data"], "train": {
        "type": "paired", "root": tfrecord_pairs, "patch_size": 24, "batch_size": 4,
        "augment": True, "shuffle": True}}}
    cfg = _cfg(raw, steps=6, steps_per_epoch=6, checkpoint_every=3, monitor=None,
               validate_at_start=False, distribute="multi_worker")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))

    def run_workers(run, tag):
        weights = [str(tmp_path / f"{tag}{i}.npz") for i in range(2)]
        procs = _workers(str(config), run, weights, _free_ports(2))
        summaries = []
        for p in procs:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out[-3000:]
            summaries.append(_summary(out))
        return summaries, [_weights(w) for w in weights]

    straight = str(tmp_path / "straight")
    _, (uninterrupted, _) = run_workers(straight, "straight")
    # The run as a kill after the checkpoint of step 3 leaves it (the straight run's files,
    # without what it wrote after that checkpoint).
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns(
        "ckpt-000000006*", "final.keras", "train.lock"))
    assert [s for s, _ in list_checkpoints(os.path.join(resumed, "checkpoints"))] == [3]
    summaries, (first, second) = run_workers(resumed, "resumed")
    assert [(s["start_step"], s["step"]) for s in summaries] == [(3, 6), (3, 6)]
    assert len(first) == len(uninterrupted) > 0
    for a, b, c in zip(first, second, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
