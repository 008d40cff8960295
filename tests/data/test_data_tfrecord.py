"""TFRecord datasets: prepared once, read back bit-identical, sharded per file, through tf.data
service."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.data import paired_dataset, write_image
from tfdeblur.data.tfrecord import MANIFEST, read_manifest, write_tfrecords


def _smooth(rng, h, w):
    small = rng.random((4, 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


@pytest.fixture(scope="module")
def gopro_tree(tmp_path_factory):
    """A GoPro-like folder: two sequences of 5 and 4 frames, 30x38, one 16-bit pair."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("gopro") / "train"
    for seq, n in (("GOPR0001_00", 5), ("GOPR0002_01", 4)):
        for d in ("blur", "sharp"):
            os.makedirs(root / seq / d)
        base = _smooth(rng, 30, 38)
        for i in range(n):
            sharp = np.roll(base, i, axis=1)
            bits = 16 if (seq, i) == ("GOPR0002_01", 2) else 8
            write_image(str(root / seq / "sharp" / f"{i:06d}.png"), sharp, bit_depth=bits)
            write_image(str(root / seq / "blur" / f"{i:06d}.png"), cv2.blur(sharp, (5, 1)),
                        bit_depth=bits)
    return str(root)


@pytest.fixture(scope="module")
def prepared(gopro_tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("records") / "gopro_tfr")
    write_tfrecords(gopro_tree, out, shards=3, progress=False)
    return out


def _elements(ds):
    return [tuple(np.asarray(t) for t in el) for el in ds]


def test_records_read_back_bit_identical_to_the_files(gopro_tree, prepared):
    m = read_manifest(prepared)
    assert m["pairs"] == 9 and len(m["shards"]) == 3 and not m["with_flow"]
    assert [s["pairs"] for s in m["shards"]] == [3, 3, 3]
    assert m["names"][0] == os.path.join("GOPR0001_00", "blur", "000000.png")
    assert sorted(os.listdir(prepared)) == sorted([MANIFEST] + [s["file"] for s in m["shards"]])
    want = _elements(paired_dataset(gopro_tree, layout="gopro"))
    got = _elements(paired_dataset(prepared))  # layout detected
    assert len(got) == 9
    for (b0, s0), (b1, s1) in zip(want, got, strict=True):
        assert b1.dtype == np.float32 and b1.shape == (30, 38, 3)
        np.testing.assert_array_equal(b0, b1)
        np.testing.assert_array_equal(s0, s1)
    # The 16-bit pair kept its 16 bits (not rounded to 8).
    sixteen = got[5 + 2][1]
    assert not np.allclose(sixteen * 255, np.round(sixteen * 255), atol=1e-4)


def test_training_options_on_records(prepared):
    kwargs = dict(patch_size=16, augment=True, shuffle=True, batch_size=4, seed=3, repeat=True)
    a = _elements(paired_dataset(prepared, layout="tfrecord", **kwargs).take(4))
    b = _elements(paired_dataset(prepared, **kwargs).take(4))
    c = _elements(paired_dataset(prepared, **{**kwargs, "seed": 4}).take(4))
    assert a[0][0].shape == (4, 16, 16, 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])  # reproducible from the seed
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))
    # skip continues the same stream (a resumed run).
    d = _elements(paired_dataset(prepared, skip=8, **kwargs).take(2))
    np.testing.assert_array_equal(d[0][1], a[2][1])
    # Cached, and the central crop without augmentation.
    e = _elements(paired_dataset(prepared, patch_size=(10, 12), cache=True))
    assert len(e) == 9 and e[0][0].shape == (10, 12, 3)


def test_file_sharding_gives_each_worker_its_own_shards(prepared):
    from tensorflow.python.data.experimental.ops import distribute

    whole = _elements(paired_dataset(prepared))
    index = {s.tobytes(): i for i, (_, s) in enumerate(whole)}
    seen = []
    for worker in range(2):
        # Augmentation on (its seeds must not hide the file reader from the sharding), but
        # with every transform off, so that each sharp image can be recognised.
        ds = paired_dataset(prepared, shuffle=True, seed=1, augment=True, flip=False,
                            rotate=False, permute_channels=False)
        # The dataset's own policy (FILE fails rather than falls back to DATA).
        policy = ds.options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.FILE
        ds = distribute._AutoShardDataset(ds, num_workers=2, index=worker)
        got = sorted(index[s.tobytes()] for _, s in _elements(ds))
        seen.append(got)
    # Shards of pairs [0-2], [3-5], [6-8]: worker 0 reads shards 0 and 2, worker 1 shard 1.
    assert seen == [[0, 1, 2, 6, 7, 8], [3, 4, 5]]


def test_prepare_errors(gopro_tree, prepared, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        write_tfrecords(gopro_tree, prepared, progress=False)
    (tmp_path / "keep").mkdir()
    with pytest.raises(FileExistsError, match="not a prepared TFRecord folder"):
        write_tfrecords(gopro_tree, tmp_path / "keep", overwrite=True, progress=False)
    with pytest.raises(ValueError, match="hold no flows"):
        paired_dataset(prepared, with_flow=True)
    with pytest.raises(ValueError, match="split='train' applies to the GoPro layout"):
        paired_dataset(prepared, split="train")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"GOPR0001_00/blur/000000.png"):
        list(paired_dataset(prepared, patch_size=64))
    # A truncated shard is named before any reading.
    copy = tmp_path / "copy"
    write_tfrecords(gopro_tree, copy, shards=2, progress=False)
    shard = copy / read_manifest(copy)["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or replaced"):
        paired_dataset(copy)
    # overwrite replaces a prepared folder, atomically (no temporary folder left).
    m = write_tfrecords(gopro_tree, copy, shards=1, overwrite=True, progress=False)
    assert len(m["shards"]) == 1 and len(read_manifest(copy)["shards"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["copy", "keep"]


def test_flows_are_stored_and_read_back(gopro_tree, tmp_path):
    pytest.importorskip("cv2")
    cache = tmp_path / "flows"
    out = tmp_path / "with_flow"
    write_tfrecords(gopro_tree, out, with_flow=True, flow_cache=cache, flow_preset="ultrafast",
                    shards=2, progress=False)
    assert json.loads((out / MANIFEST).read_text())["with_flow"] is True
    want = _elements(paired_dataset(gopro_tree, layout="gopro", with_flow=True,
                                    flow_cache=cache, flow_preset="ultrafast", progress=False))
    got = _elements(paired_dataset(out, with_flow=True))
    assert got[0][2].shape == (30, 38, 4)
    for x, y in zip(want, got, strict=True):
        for a, b in zip(x, y, strict=True):
            np.testing.assert_array_equal(a, b)
    aug = _elements(paired_dataset(out, with_flow=True, patch_size=16, augment=True,
                                   batch_size=2, seed=0).take(1))
    assert aug[0][2].shape == (2, 16, 16, 4)


def test_tf_data_service_gives_the_same_stream(prepared):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address))
    kwargs = dict(patch_size=16, augment=True, shuffle=True, batch_size=3, seed=5, repeat=True)
    local = _elements(paired_dataset(prepared, **kwargs).take(3))
    served = _elements(paired_dataset(prepared, service=dispatcher.target, **kwargs).take(3))
    for x, y in zip(local, served, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    with pytest.raises(ValueError, match="service must be a tf.data service dispatcher"):
        paired_dataset(prepared, service="localhost")
    del worker, dispatcher


def test_jpeg_grey_and_alpha_files_read_back_identical(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "mixed"
    for d in ("blur", "sharp"):
        os.makedirs(root / d)
    sharp = _smooth(rng, 24, 20)
    write_image(str(root / "blur" / "a.jpg"), cv2.blur(sharp, (3, 1)))
    write_image(str(root / "sharp" / "a.png"), np.concatenate([sharp, sharp[..., :1]], axis=2))
    write_image(str(root / "blur" / "b.png"), cv2.blur(sharp, (3, 1))[..., :1])
    write_image(str(root / "sharp" / "b.png"), sharp[..., 1:2])
    m = write_tfrecords(root, tmp_path / "tfr", progress=False)
    assert m["pairs"] == 2 and len(m["shards"]) == 2 and m["reencoded_images"] >= 1  # the JPEG
    for x, y in zip(_elements(paired_dataset(root)), _elements(paired_dataset(tmp_path / "tfr")),
                    strict=True):
        for a, b in zip(x, y, strict=True):
            np.testing.assert_array_equal(a, b)
