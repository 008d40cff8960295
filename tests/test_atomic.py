"""One atomic writer: a write cut short leaves the previous file (or no file) and no leftovers.

Every single-file write of the package (images, flow caches, CSV and JSON
files, training checkpoints, models) goes through ``tfdeblur._atomic.write_file``,
locally and on TensorFlow filesystems; folders (exports, prepared TFRecords)
through its work folder and ``publish``.
"""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur.data.io import ImageFileError, write_image


class Cut(Exception):
    """The failure injected in the middle of a write."""


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(os, "fsync", fsync)


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


@pytest.mark.parametrize("existed", [True, False])
def test_local_write_cut_short_keeps_the_previous_file(tmp_path, monkeypatch, existed):
    path = tmp_path / "f.bin"
    if existed:
        _atomic.write_file(path, b"old")
    with monkeypatch.context() as m:
        _fail_fsync(m)
        with pytest.raises(OSError, match=r"cannot write .*f\.bin: Input/output error"):
            _atomic.write_file(path, b"new" * 1000)
    assert (path.read_bytes() == b"old") if existed else not path.exists()
    assert _leftovers(tmp_path) == []
    assert _atomic.write_file(path, b"new") == str(path)
    assert path.read_bytes() == b"new"


def test_local_write_without_overwrite(tmp_path):
    path = tmp_path / "f.bin"
    _atomic.write_file(path, b"old", overwrite=False)
    with pytest.raises(FileExistsError, match="already exists"):
        _atomic.write_file(path, b"new", overwrite=False)
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        _atomic.write_file(tmp_path / "missing" / "f.bin", b"x")


@pytest.mark.parametrize("existed", [True, False])
def test_gfile_write_cut_short_keeps_the_previous_file(monkeypatch, existed):
    folder = f"ram://tfdeblur-atomic-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(folder)
    path = f"{folder}/f.bin"
    if existed:
        _atomic.write_file(path, b"old")
    write = tf.io.gfile.GFile.write

    def half_then_fail(self, data):
        write(self, data[: len(data) // 2])
        raise Cut("cut mid-write")

    with monkeypatch.context() as m:
        m.setattr(tf.io.gfile.GFile, "write", half_then_fail)
        with pytest.raises(Cut):
            _atomic.write_file(path, b"new" * 1000)
    if existed:
        with tf.io.gfile.GFile(path, "rb") as f:
            assert f.read() == b"old"
    else:
        assert not tf.io.gfile.exists(path)
    assert tf.io.gfile.listdir(folder) == (["f.bin"] if existed else [])
    _atomic.write_file(path, b"new")
    with tf.io.gfile.GFile(path, "rb") as f:
        assert f.read() == b"new"
    with pytest.raises(FileExistsError, match="already exists"):
        _atomic.write_file(path, b"again", overwrite=False)


def test_image_output_cut_short_keeps_the_previous_image(tmp_path, monkeypatch):
    # deblur outputs are written by write_image, through the same writer.
    path = tmp_path / "out.png"
    write_image(path, np.zeros((4, 5, 3)))
    before = path.read_bytes()
    with monkeypatch.context() as m:
        _fail_fsync(m)
        with pytest.raises(ImageFileError, match=r"cannot write .*out\.png: Input/output"):
            write_image(path, np.ones((4, 5, 3)))
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def _tiny_model():
    import keras

    from tfdeblur.training import AdamL2

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="out")(inputs))
    model.compile(optimizer=AdamL2(learning_rate=1e-2), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("where", ["local", "ram"])
def test_checkpoint_write_cut_short_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    from tfdeblur.training import CheckpointManager, TrainingState, read_checkpoint
    from tfdeblur.training.checkpoint import checkpoint_path

    folder = str(tmp_path) if where == "local" else f"ram://tfdeblur-ckpt-{uuid.uuid4().hex}"
    manager = CheckpointManager(folder, keep=3)
    model = _tiny_model()
    first = manager.save(model, TrainingState(step=5, epoch=0))
    assert first == checkpoint_path(folder, 5) and os.path.basename(first) == "ckpt-000000005.npz"
    with tf.io.gfile.GFile(first, "rb") as f:
        before = f.read()
    write = tf.io.gfile.GFile.write

    def half_then_fail(self, data):
        write(self, data[: len(data) // 2])
        raise Cut("cut mid-write")

    with monkeypatch.context() as m:
        if where == "local":
            _fail_fsync(m)
        else:
            m.setattr(tf.io.gfile.GFile, "write", half_then_fail)
        with pytest.raises((OSError, Cut)):
            manager.save(model, TrainingState(step=5, epoch=0))  # same file, replaced
        with pytest.raises((OSError, Cut)):
            manager.save(model, TrainingState(step=6, epoch=0))  # a new file
    with tf.io.gfile.GFile(first, "rb") as f:
        assert f.read() == before
    assert [s for s, _ in manager.checkpoints()] == [5]
    assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(folder)) == ["ckpt-000000005.npz"]
    assert read_checkpoint(first)[0]["step"] == 5


def test_tfrecord_preparation_cut_short_keeps_the_previous_folder(tmp_path, monkeypatch):
    import cv2

    from tfdeblur.data import tfrecord

    rng = np.random.default_rng(0)
    root = tmp_path / "pairs"
    for sub in ("blur", "sharp"):
        (root / "GOPR0001_00" / sub).mkdir(parents=True)
    for i in range(3):
        img = (rng.random((8, 10, 3)) * 255).astype(np.uint8)
        for sub in ("blur", "sharp"):
            cv2.imwrite(str(root / "GOPR0001_00" / sub / f"{i:06d}.png"), img)
    out = tmp_path / "records"
    manifest = tfrecord.write_tfrecords(root, out, shards=2, progress=False)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    calls = []
    record_image = tfrecord._record_image

    def fail_on_the_fourth(path):
        calls.append(path)
        if len(calls) == 4:
            raise Cut("cut mid-preparation")
        return record_image(path)

    with monkeypatch.context() as m:
        m.setattr(tfrecord, "_record_image", fail_on_the_fourth)
        with pytest.raises(Cut):
            tfrecord.write_tfrecords(root, out, shards=2, overwrite=True, progress=False,
                                     workers=1)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["pairs", "records"]  # no work folder left
    with open(out / tfrecord.MANIFEST) as f:
        assert json.load(f) == manifest
    again = tfrecord.write_tfrecords(root, out, shards=3, overwrite=True, progress=False)
    assert len(again["shards"]) == 3 and sorted(os.listdir(tmp_path)) == ["pairs", "records"]
