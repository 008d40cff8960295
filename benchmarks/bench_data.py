"""Benchmark of the tf.data pipelines against LMFN's training speed, measured in the same run.

Prints pairs per second of 256x256 augmented training crops read from PNG
folders (GoPro-sized 1280x720 frames by default), with and without the
in-memory cache, and of synthetic pairs made on the fly; then LMFN's training
throughput on the same crop size (``model.train_on_batch`` on a fixed batch),
and the same steps fed by the pipeline (median step times, alternating). The goal:
pipeline pairs/s >= 3 x LMFN training pairs/s. Then the same pairs as sharded TFRecords
(``tfdeblur prepare-data``) against the image folders, side by side: images/s reading whole
pairs and making augmented training batches, medians of alternating repetitions.

    python benchmarks/bench_data.py                  # 48 pairs 1280x720, batch 8
    python benchmarks/bench_data.py --quick          # smaller, to check it runs
    python benchmarks/bench_data.py --root GOPRO_Large/train   # your own PNG folders
    python benchmarks/bench_data.py --tfrecord-only  # only the TFRecord vs folder rows
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdeblur.data import (  # noqa: E402
    find_pairs,
    paired_dataset,
    synthetic_dataset,
    write_tfrecords,
)

PHOTOS = os.path.join(os.path.dirname(REPO), "shared", "data", "photos_kodak24")


def make_png_tree(root: str, pairs: int, width: int, height: int, seed: int = 0) -> None:
    """Writes ``<root>/{blur,sharp}/*.png``: real photos when available, else textures.

    Content matters for PNG decoding speed, so photos (Kodak, resized to the
    frame size) are used when ``../shared/data`` is present.
    """
    rng = np.random.default_rng(seed)
    photos = []
    if os.path.isdir(PHOTOS):
        photos = sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS) if f.endswith(".png"))
    os.makedirs(os.path.join(root, "blur"))
    os.makedirs(os.path.join(root, "sharp"))
    for i in range(pairs):
        if photos:
            img = cv2.imread(photos[i % len(photos)], cv2.IMREAD_COLOR)
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
            if i >= len(photos):
                img = np.ascontiguousarray(img[:, ::-1])
        else:
            noise = rng.random((height // 4, width // 4, 3)).astype(np.float32)
            img = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
            img = np.clip(img * 255, 0, 255).astype(np.uint8)
        blur = cv2.blur(img, (9, 3))
        cv2.imwrite(os.path.join(root, "sharp", f"{i:06d}.png"), img)
        cv2.imwrite(os.path.join(root, "blur", f"{i:06d}.png"), blur)


def pipeline_rate(ds: tf.data.Dataset, batches: int, warmup: int) -> float:
    """Pairs per second over ``batches`` batches after ``warmup`` batches."""
    it = iter(ds.repeat())
    for _ in range(warmup):
        next(it)
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        n += int(next(it)[0].shape[0])
    return n / (time.perf_counter() - t0)


def images_rate(make_ds, images: int) -> float:
    """Images per second (pairs count one each) over ``images`` images of a fresh pipeline
    after one warm-up element."""
    it = iter(make_ds().repeat())
    first = next(it)[0]
    per = int(first.shape[0]) if first.shape.rank == 4 else 1
    n = 0
    t0 = time.perf_counter()
    while n < images:
        n += per
        next(it)
    return n / (time.perf_counter() - t0)


def tfrecord_rows(root: str, split, a, tmp: str) -> list[tuple[str, float, float]]:
    """(row, folder images/s, TFRecord images/s): medians of alternating repetitions."""
    out = os.path.join(tmp, "tfrecords")
    t0 = time.perf_counter()
    m = write_tfrecords(root, out, split=split, progress=False)
    mb = sum(s["bytes"] for s in m["shards"]) / 1e6
    print(f"prepare-data: {m['pairs']} pairs -> {len(m['shards'])} shards, {mb:.0f} MB, "
          f"{time.perf_counter() - t0:.1f} s")
    n = m["pairs"]
    cases = [
        ("whole pairs, file order", dict(), n),
        (f"{a.patch}x{a.patch} augmented batches of {a.batch}",
         dict(patch_size=a.patch, augment=True, shuffle=True, batch_size=a.batch, seed=0,
              drop_remainder=True), a.batches * a.batch),
    ]
    rows = []
    for name, kw, images in cases:
        folder, records = [], []
        for _ in range(a.repeats):  # alternating: load changes hit both alike
            folder.append(images_rate(lambda kw=kw: paired_dataset(root, split=split, **kw),
                                      images))
            records.append(images_rate(lambda kw=kw: paired_dataset(out, **kw), images))
        rows.append((name, float(np.median(folder)), float(np.median(records))))
    return rows


def build_lmfn(width: int | None):
    try:
        import keras

        from tfdeblur.models import build

        model = build("lmfn", **({} if width is None else {"width": width}))
    except Exception as e:  # noqa: BLE001 - any failure means "not available here"
        return None, f"{type(e).__name__}: {e}"
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    return model, None


def lmfn_rates(model, ds, batch: int, patch: int, steps: int) -> tuple[float, float]:
    """Median pairs/s of LMFN training steps: (on a fixed in-memory batch, fed by ``ds``).

    The two kinds of step alternate, so that a change of machine load during
    the run affects both alike; a fed step includes waiting for the pipeline
    and competes with its background decoding, as in real training.
    """
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, patch, patch, 3), np.float32))
    y = tf.constant(rng.random((batch, patch, patch, 3), np.float32))
    it = iter(ds.repeat())
    model.train_on_batch(x, y)  # trace / build
    model.train_on_batch(*next(it))
    fixed, fed = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        fixed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.train_on_batch(*next(it))
        fed.append(time.perf_counter() - t0)
    return batch / float(np.median(fixed)), batch / float(np.median(fed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="existing PNG dataset (any layout paired_dataset reads); "
                                  "default: a generated {blur,sharp} tree in a temp folder")
    p.add_argument("--split", default=None, help="GoPro split for --root")
    p.add_argument("--pairs", type=int, default=48, help="pairs to generate")
    p.add_argument("--input-size", dest="input_size", default="720x1280",
                   help="generated frame size HxW (height x width, as input_size everywhere)")
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=30, help="timed batches per pipeline")
    p.add_argument("--lmfn-steps", type=int, default=5, help="timed LMFN training steps")
    p.add_argument("--lmfn-width", type=int, default=None,
                   help="LMFN width (default: the paper configuration)")
    p.add_argument("--repeats", type=int, default=5,
                   help="alternating repetitions of the TFRecord / folder rows (medians)")
    p.add_argument("--tfrecord-only", action="store_true",
                   help="only the TFRecord vs image-folder rows")
    p.add_argument("--quick", action="store_true",
                   help="small run to check the script: 12 pairs 640x360, 8 batches, 2 steps")
    a = p.parse_args()
    if a.quick:
        a.pairs, a.input_size, a.batches, a.lmfn_steps, a.repeats = 12, "360x640", 8, 2, 2
    height, width = (int(v) for v in a.input_size.lower().split("x"))

    tmp = None
    root = a.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="bench_data_")
        root = os.path.join(tmp, "pairs")
        t0 = time.perf_counter()
        make_png_tree(root, a.pairs, width, height)
        print(f"generated {a.pairs} PNG pairs {width}x{height} in {root} "
              f"({time.perf_counter() - t0:.1f} s)")
    try:
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible, "
              f"crops {a.patch}x{a.patch}, batch {a.batch}")
        tmp_records = tempfile.mkdtemp(prefix="bench_data_tfr_")
        try:
            trows = tfrecord_rows(root, a.split, a, tmp_records)
        finally:
            shutil.rmtree(tmp_records, ignore_errors=True)
        print()
        print(f"{'read (images/s, median of ' + str(a.repeats) + ')':44s} {'folder':>9s} "
              f"{'TFRecord':>9s} {'ratio':>7s}")
        for name, folder, records in trows:
            print(f"{name:44s} {folder:9.1f} {records:9.1f} {records / folder:6.2f}x")
        print()
        if a.tfrecord_only:
            return
        common = dict(patch_size=a.patch, augment=True, shuffle=True, batch_size=a.batch, seed=0,
                      drop_remainder=True)
        rows = []
        ds_plain = paired_dataset(root, split=a.split, **common)
        rows.append(("paired PNG, decode + augment", pipeline_rate(ds_plain, a.batches, 2)))
        ds_cached = paired_dataset(root, split=a.split, cache=True, **common)
        pairs = find_pairs(root, split=a.split)
        n_pairs = len(pairs)
        warm = max(2, -(-n_pairs // a.batch) + 1)  # one full epoch fills the cache
        rows.append(("paired PNG, cache=True (after epoch 1)",
                     pipeline_rate(ds_cached, a.batches, warm)))
        ds_syn = synthetic_dataset([q.sharp for q in pairs], **common)
        rows.append(("synthetic blur from sharp PNG", pipeline_rate(ds_syn, a.batches, 2)))

        model, why = build_lmfn(a.lmfn_width)
        print()
        print(f"{'pipeline':44s} {'pairs/s':>9s}")
        for name, rate in rows:
            print(f"{name:44s} {rate:9.1f}")
        print()
        if model is None:
            print(f"LMFN unavailable ({why}): training throughput not measured; "
                  "pipeline numbers above stand alone.")
            return
        fixed, fed = lmfn_rates(model, ds_plain, a.batch, a.patch, a.lmfn_steps)
        print(f"{'LMFN training (' + str(model.count_params()) + ' params)':44s} {'pairs/s':>9s}")
        print(f"{'train_on_batch, fixed in-memory batch':44s} {fixed:9.2f}")
        print(f"{'train_on_batch fed by the paired PNG pipeline':44s} {fed:9.2f}")
        ratio = rows[0][1] / fixed
        print()
        print(f"headroom: paired PNG pipeline / LMFN training = {ratio:.1f}x "
              f"(goal >= 3x: {'met' if ratio >= 3 else 'NOT met'}); "
              f"training slowdown when fed by the pipeline: {100 * (1 - fed / fixed):.0f} %")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
