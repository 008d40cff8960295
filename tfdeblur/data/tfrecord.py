"""Paired datasets as sharded TFRecord files: written once (``tfdeblur prepare-data``), read fast.

A prepared folder holds ``pairs-00000-of-000NN.tfrecord`` shards and a
manifest ``tfdeblur_tfrecords.json`` (pair count, shards, image names in
record order, whether flows are stored). Each record is one pair:

- ``name``: the blurry image's path relative to the source root;
- ``blurry``, ``sharp``: PNG of the samples :func:`~tfdeblur.data.read_image`
  decodes (RGB, 8 or 16 bits as stored, EXIF orientation applied), so the
  images read back are bit-identical to reading the files: a PNG file's own
  bytes when TensorFlow's decoder gives exactly those samples from it (checked
  for each file), otherwise the samples encoded again; ``blurry_depth`` and
  ``sharp_depth`` give the bit depth;
- ``flow`` (when prepared with flows): the bidirectional flow of the sharp
  frame (:mod:`tfdeblur.data.flow`), float32 ``[H, W, 4]`` raw bytes.

Reading decodes with TensorFlow's own ops (no Python in the graph), so a
pipeline reading TFRecords can run on remote ``tf.data`` service workers. The
dataset's auto-shard policy is FILE: each worker of a
``MultiWorkerMirroredStrategy`` reads its own shards (prepare at least as many
shards as workers).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur import _validation as checks
from tfdeblur.data import _pipeline
from tfdeblur.data.io import _fspath, decode_image
from tfdeblur.data.progress import ProgressBar

MANIFEST = "tfdeblur_tfrecords.json"
FORMAT = "tfdeblur-tfrecords"
VERSION = 1
#: Default shard size (encoded bytes): large files read fast, and enough of them shard well.
SHARD_BYTES = 128 * 2**20
#: Default minimum number of shards (FILE sharding needs a shard per worker).
MIN_SHARDS = 8
#: Memory for the record shuffle buffer when ``shuffle=True`` (encoded bytes).
SHUFFLE_BYTES = 2**30


def is_tfrecord_folder(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MANIFEST))


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a prepared folder, checked (errors name the file)."""
    root = _fspath(root)
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} is not a prepared TFRecord folder: no {MANIFEST} "
                                f"(make one with `tfdeblur prepare-data`)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"TFRecord manifest {path} cannot be read: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tfdeblur TFRecord manifest")
    if m.get("version") != VERSION:
        raise ValueError(f"{path} has format version {m.get('version')!r}; this tfdeblur reads "
                         f"version {VERSION} (prepare the data again)")
    for shard in m["shards"]:
        f = os.path.join(root, shard["file"])
        if not os.path.isfile(f):
            raise FileNotFoundError(f"TFRecord shard {f} named in {path} does not exist")
        if os.path.getsize(f) != shard["bytes"]:
            raise ValueError(f"TFRecord shard {f} is {os.path.getsize(f)} bytes, the manifest "
                             f"says {shard['bytes']} (truncated or replaced)")
    return m


def _check_replaceable(out: str, overwrite: bool) -> None:
    """Raises unless the existing ``out`` may be replaced by a new prepared folder."""
    if not overwrite:
        raise FileExistsError(f"output {out} already exists (pass overwrite=True / "
                              "--overwrite to replace it)")
    if not is_tfrecord_folder(out):
        raise FileExistsError(f"output {out} exists and is not a prepared TFRecord folder; "
                              "refusing to replace it")


def _png(samples: np.ndarray, path: str) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(samples, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"image {path} could not be encoded as PNG")
    return buf.tobytes()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record_image(path: str) -> tuple[np.ndarray, bytes, bool]:
    """(samples as read_image decodes them, PNG bytes to store, whether re-encoded)."""
    with open(path, "rb") as f:
        data = f.read()
    samples = decode_image(data, path)
    if data.startswith(_PNG_SIGNATURE):
        dtype = tf.uint16 if samples.dtype == np.uint16 else tf.uint8
        try:
            same = np.array_equal(tf.io.decode_png(data, channels=3, dtype=dtype).numpy(),
                                  samples)
        except tf.errors.OpError:
            same = False
        if same:
            return samples, data, False
    return samples, _png(samples, path), True


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def write_tfrecords(root: str | os.PathLike, out: str | os.PathLike, *, layout: str = "auto",
                    split: str | None = None, blur_dir: str = "blur", shards: int | None = None,
                    with_flow: bool = False, flow_cache: str | os.PathLike | None = None,
                    flow_preset: str = "medium", skip_bad_files: bool = False,
                    overwrite: bool = False, progress: bool = True,
                    workers: int | None = None) -> dict:
    """Writes the pairs of an image dataset as sharded TFRecords (what ``prepare-data`` does).

    Args:
        root, layout, split, blur_dir: the source, as :func:`~tfdeblur.data.find_pairs`
            reads it.
        out: the folder to write (must not exist unless ``overwrite``); written
            in a temporary folder beside it and renamed into place when complete.
        shards: number of shard files (default: one per ~128 MB of images, at
            least 8 when there are 8 pairs or more).
        with_flow: also store each sharp frame's bidirectional optical flow
            (GoPro layout; computed with DIS and cached like
            :func:`~tfdeblur.data.paired_dataset` does).
        flow_cache, flow_preset: as for ``paired_dataset``.
        skip_bad_files: leave out pairs with an unreadable file (with a warning)
            instead of stopping with an error naming it.
        overwrite: replace an existing prepared folder.
        progress: progress bar on stderr.
        workers: threads reading and encoding images (default: the CPU count).

    Returns:
        The manifest written (also ``out/tfdeblur_tfrecords.json``).
    """
    from tfdeblur.data.paired import _check_same_size, detect_layout, flow_store_for, usable_pairs

    root, out = _fspath(root), os.path.abspath(_fspath(out))
    if os.path.exists(out):
        _check_replaceable(out, overwrite)
    if os.path.isdir(root) and is_tfrecord_folder(root):
        raise ValueError(f"{root} is already a prepared TFRecord folder")
    shards = checks.check_int(shards, "shards", allow_none=True)
    if layout == "auto":
        layout = detect_layout(root, blur_dir)
    pairs = usable_pairs(root, layout, split, blur_dir, skip_bad_files)
    flows = None
    if with_flow:
        flows = flow_store_for(pairs, root, layout, flow_cache, flow_preset, progress)
    base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    names = [os.path.relpath(p.blurry, base) for p in pairs]
    total_bytes = sum(os.path.getsize(f) for p in pairs for f in (p.blurry, p.sharp))
    if shards is None:
        shards = max(math.ceil(total_bytes / SHARD_BYTES), min(MIN_SHARDS, len(pairs)))
    shards = min(shards, len(pairs))
    # Contiguous shards: reading the shards in order gives the pairs in source order.
    bounds = [round(i * len(pairs) / shards) for i in range(shards + 1)]

    def encode(i: int) -> tuple[bytes, int]:
        p = pairs[i]
        (b, b_png, b_new), (s, s_png, s_new) = _record_image(p.blurry), _record_image(p.sharp)
        _check_same_size(b, s, p.blurry, p.sharp)
        feature = {"name": _bytes(names[i].encode()), "blurry": _bytes(b_png),
                   "sharp": _bytes(s_png),
                   "blurry_depth": _int(8 * b.dtype.itemsize),
                   "sharp_depth": _int(8 * s.dtype.itemsize),
                   "height": _int(b.shape[0]), "width": _int(b.shape[1])}
        if flows is not None:
            store, triplets = flows
            f = store.get(*triplets[p.sharp]).astype(np.float32)
            if f.shape[:2] != s.shape[:2]:
                raise ValueError(f"flow of {p.sharp} is {f.shape[1]}x{f.shape[0]}, the image "
                                 f"is {s.shape[1]}x{s.shape[0]}")
            feature["flow"] = _bytes(np.ascontiguousarray(f).tobytes())
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        return example.SerializeToString(), int(b_new) + int(s_new)

    os.makedirs(os.path.dirname(out), exist_ok=True)
    # Written in a work folder beside out and moved into place whole; an old
    # prepared folder goes only once the new one is complete.
    with _atomic.work_folder(out) as work:
        tmp = os.path.join(work, os.path.basename(out))
        os.makedirs(tmp)
        entries, reencoded = [], 0
        with ProgressBar(len(pairs), f"prepare-data ({len(pairs)} pairs, {shards} shards)",
                         enabled=progress) as bar, \
                ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for k in range(shards):
                name = f"pairs-{k:05d}-of-{shards:05d}.tfrecord"
                path = os.path.join(tmp, name)
                with tf.io.TFRecordWriter(path) as writer:
                    for record, n_new in pool.map(encode, range(bounds[k], bounds[k + 1])):
                        writer.write(record)
                        reencoded += n_new
                        bar.update()
                entries.append({"file": name, "pairs": bounds[k + 1] - bounds[k],
                                "bytes": os.path.getsize(path)})
        manifest = {"format": FORMAT, "version": VERSION, "pairs": len(pairs),
                    "with_flow": bool(with_flow), "flow_preset": flow_preset if with_flow else None,
                    "source": os.path.abspath(root), "layout": layout, "split": split,
                    "blur_dir": blur_dir, "reencoded_images": reencoded, "shards": entries,
                    "names": names}
        _atomic.write_file(os.path.join(tmp, MANIFEST),
                           (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        _atomic.publish(tmp, out, overwrite=overwrite, what="TFRecord folder",
                        recheck=lambda: _check_replaceable(out, overwrite))
    return manifest


_SCALE = {8: np.float32(1.0 / 255.0), 16: np.float32(1.0 / 65535.0)}


def _decode(png: tf.Tensor, depth: tf.Tensor) -> tf.Tensor:
    # As io.to_float: samples times the float32 reciprocal of the maximum (bit-identical).
    def as_float(dtype, bits):
        return tf.cast(tf.io.decode_png(png, channels=3, dtype=dtype), tf.float32) * _SCALE[bits]

    return tf.cond(tf.equal(depth, 16), lambda: as_float(tf.uint16, 16),
                   lambda: as_float(tf.uint8, 8))


def tfrecord_dataset(root: str, opts: _pipeline.DatasetOptions, *,
                     cache: bool | str = False) -> tf.data.Dataset:
    """The pipeline of :func:`~tfdeblur.data.paired_dataset` on a prepared folder."""
    manifest = read_manifest(root)
    if opts.with_flow and not manifest["with_flow"]:
        raise ValueError(f"with_flow=True but the TFRecords in {root} hold no flows (prepare "
                         "them with --flow)")
    files = [os.path.join(root, s["file"]) for s in manifest["shards"]]
    features = {k: tf.io.FixedLenFeature([], tf.string) for k in ("name", "blurry", "sharp")}
    features.update({k: tf.io.FixedLenFeature([], tf.int64)
                     for k in ("blurry_depth", "sharp_depth", "height", "width")})
    if opts.with_flow:
        features["flow"] = tf.io.FixedLenFeature([], tf.string)
    patch = opts.patch_size

    def load(record):
        r = tf.io.parse_single_example(record, features)
        b, s = _decode(r["blurry"], r["blurry_depth"]), _decode(r["sharp"], r["sharp_depth"])
        out = [b, s]
        if opts.with_flow:
            out.append(tf.reshape(tf.io.decode_raw(r["flow"], tf.float32),
                                  tf.stack([tf.shape(s)[0], tf.shape(s)[1], 4])))
        if patch is not None:
            size = tf.shape(b)[:2]
            ok = tf.reduce_all(size >= tf.constant(patch))
            with tf.control_dependencies([tf.debugging.Assert(ok, [
                    "image", r["name"], "is smaller than patch_size (height, width)",
                    tf.constant(patch), "; its size (height, width) is", size])]):
                out = [tf.identity(x) for x in out]
        return tuple(tf.ensure_shape(x, [None, None, c])
                     for x, c in zip(out, (3, 3, 4), strict=False))

    ds = tf.data.Dataset.from_tensor_slices(files)
    mean_bytes = sum(s["bytes"] for s in manifest["shards"]) / max(manifest["pairs"], 1)
    if opts.shuffle is not None:
        # Shards in a new order every pass, records interleaved from several of them, then
        # a record buffer: the whole dataset when it fits SHUFFLE_BYTES.
        ds = ds.shuffle(len(files), seed=opts.seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                           block_length=1)
        if opts.shuffle == 0:
            buffer = max(1, min(manifest["pairs"], int(SHUFFLE_BYTES / max(mean_bytes, 1))))
            opts = _pipeline.dataclasses.replace(opts, shuffle=buffer)
    else:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1)
    ds = _pipeline.assemble(ds, load, opts, manifest["pairs"], cache=cache, seeds="drawn")
    if opts.service is None:
        # Per-file sharding under a multi-worker strategy (it stops with an error naming
        # the counts when there are fewer shards than workers). Not with a service: the
        # client's graph then reads no files.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.FILE
        ds = ds.with_options(options)
    return ds
