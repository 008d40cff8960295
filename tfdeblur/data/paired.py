"""Paired (blurry, sharp) datasets from folders on disk, as ``tf.data`` pipelines.

Four layouts are understood (``layout="auto"`` tells them apart):

- ``"gopro"``: the GoPro release (Nah et al. 2017),
  ``<root>/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png``; ``root``
  may also be one split folder, or one sequence folder (then pass
  ``layout="gopro"``: auto-detection calls it ``"folders"``). Frames are
  paired by file name within a sequence; ``blur_dir`` picks ``blur`` or
  ``blur_gamma``.
- ``"folders"``: two flat folders ``<root>/{blur,sharp}`` or
  ``<root>/{input,target}``, paired by file name (extensions may differ).
- ``"list"``: a text file, one pair per line, ``blurry_path sharp_path``
  (whitespace separated, shell-style quotes for names with spaces; relative
  paths are relative to the list file; ``#`` starts a comment).
- ``"tfrecord"``: a folder prepared by ``tfdeblur prepare-data``
  (:func:`~tfdeblur.data.tfrecord.write_tfrecords`): sharded TFRecords of the
  pairs (and flows), read with TensorFlow's own decoders and sharded per file
  across workers (see :mod:`tfdeblur.data.tfrecord`).

Pairing errors (a missing partner, a missing file) are raised when the dataset
is built; decoding errors (unreadable, truncated, differing sizes) when the
element is read. Every message names the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex

import numpy as np
import tensorflow as tf

from tfdeblur.data import _pipeline
from tfdeblur.data.flow import PRESETS, FlowCache, default_cache_dir, sequence_triplets
from tfdeblur.data.io import _fspath, check_image_files, is_image_file, read_image
from tfdeblur.data.tfrecord import MANIFEST

LAYOUTS = ("auto", "gopro", "folders", "list", "tfrecord")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One (blurry, sharp) pair of files; ``sequence`` is the GoPro sequence folder, if any."""

    blurry: str
    sharp: str
    sequence: str | None = None


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _subdirs(folder: str) -> list[str]:
    return sorted((d for d in os.listdir(folder)
                   if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))),
                  key=_natural_key)


def _images(folder: str) -> dict[str, str]:
    """stem -> path of the image files of ``folder`` (a stem used twice is an error)."""
    out: dict[str, str] = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".") or not is_image_file(name) or not os.path.isfile(path):
            continue
        stem = os.path.splitext(name)[0]
        if stem in out:
            raise ValueError(f"{folder} holds two images named {stem!r}: "
                             f"{os.path.basename(out[stem])} and {name}; cannot pair them")
        out[stem] = path
    return out


def _pair_folders(blur_folder: str, sharp_folder: str, sequence: str | None) -> list[Pair]:
    for f in (blur_folder, sharp_folder):
        if not os.path.isdir(f):
            raise FileNotFoundError(f"folder {f} does not exist")
    blurs, sharps = _images(blur_folder), _images(sharp_folder)
    missing_sharp = sorted(set(blurs) - set(sharps), key=_natural_key)
    missing_blur = sorted(set(sharps) - set(blurs), key=_natural_key)
    if missing_sharp:
        names = ", ".join(os.path.basename(blurs[s]) for s in missing_sharp[:5])
        more = f" and {len(missing_sharp) - 5} more" if len(missing_sharp) > 5 else ""
        raise ValueError(f"{len(missing_sharp)} blurry image(s) in {blur_folder} have no sharp "
                         f"partner of the same name in {sharp_folder}: {names}{more}")
    if missing_blur:
        names = ", ".join(os.path.basename(sharps[s]) for s in missing_blur[:5])
        more = f" and {len(missing_blur) - 5} more" if len(missing_blur) > 5 else ""
        raise ValueError(f"{len(missing_blur)} sharp image(s) in {sharp_folder} have no blurry "
                         f"partner of the same name in {blur_folder}: {names}{more}")
    return [Pair(blurs[s], sharps[s], sequence) for s in sorted(blurs, key=_natural_key)]


def _folder_names(root: str, blur_dir: str) -> tuple[str, str] | None:
    subs = set(_subdirs(root))
    if blur_dir in subs and "sharp" in subs:
        return blur_dir, "sharp"
    if "input" in subs and "target" in subs:
        return "input", "target"
    return None


def detect_layout(root: str | os.PathLike, blur_dir: str = "blur") -> str:
    """Which of ``"gopro"``, ``"folders"``, ``"list"``, ``"tfrecord"`` ``root`` is in.

    Raises:
        ValueError: naming ``root`` when none fits.
    """
    root = _fspath(root)
    if os.path.isfile(root):
        return "list"
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if os.path.isfile(os.path.join(root, MANIFEST)):
        return "tfrecord"
    subs = _subdirs(root)
    if _folder_names(root, blur_dir) is not None:
        return "folders"
    for split in ("train", "test"):
        if split in subs and any(os.path.isdir(os.path.join(root, split, d, "sharp"))
                                 for d in _subdirs(os.path.join(root, split))):
            return "gopro"
    if any(os.path.isdir(os.path.join(root, d, "sharp")) for d in subs):
        return "gopro"
    raise ValueError(f"cannot tell the layout of dataset root {root}: expected {{blur,sharp}} or "
                     "{input,target} folders, GoPro {train,test}/<sequence>/{blur,sharp}, "
                     f"<sequence>/{{blur,sharp}} folders, a prepared TFRecord folder "
                     f"({MANIFEST}), or a text file of pairs; found folders "
                     f"{subs[:10]}")


def _gopro_pairs(root: str, split: str | None, blur_dir: str) -> list[Pair]:
    subs = _subdirs(root)
    splits = [s for s in ("train", "test") if s in subs]
    if split is not None:
        if split not in splits:
            raise ValueError(f"split={split!r} but dataset root {root} has no {split!r} folder "
                             f"(found {subs[:10]})")
        root = os.path.join(root, split)
    elif splits:
        raise ValueError(f"dataset root {root} has splits {splits}: pass split= one of them")
    if _folder_names(root, blur_dir) == (blur_dir, "sharp"):
        # One sequence folder given directly.
        return _pair_folders(os.path.join(root, blur_dir), os.path.join(root, "sharp"), root)
    sequences = _subdirs(root)
    if not sequences:
        raise ValueError(f"GoPro folder {root} holds no sequence folders")
    pairs: list[Pair] = []
    for seq in sequences:
        folder = os.path.join(root, seq)
        for d in (blur_dir, "sharp"):
            if not os.path.isdir(os.path.join(folder, d)):
                raise ValueError(f"GoPro sequence {folder} has no {d!r} folder "
                                 f"(found {_subdirs(folder)})")
        pairs += _pair_folders(os.path.join(folder, blur_dir), os.path.join(folder, "sharp"),
                               folder)
    return pairs


def _list_pairs(list_file: str) -> list[Pair]:
    base = os.path.dirname(os.path.abspath(list_file))
    pairs = []
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"pair list {list_file} cannot be read: {e}") from None
    for n, line in enumerate(lines, 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as e:
            raise ValueError(f"{list_file}:{n}: cannot parse line: {e}") from None
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{list_file}:{n}: expected 'blurry_path sharp_path', "
                             f"got {len(fields)} field(s): {line.strip()!r}")
        paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in fields]
        for role, p in zip(("blurry", "sharp"), paths, strict=True):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{list_file}:{n}: {role} image {p} does not exist")
        pairs.append(Pair(paths[0], paths[1]))
    if not pairs:
        raise ValueError(f"pair list {list_file} holds no pairs")
    return pairs


def find_pairs(root: str | os.PathLike, *, layout: str = "auto", split: str | None = None,
               blur_dir: str = "blur") -> list[Pair]:
    """Lists the (blurry, sharp) file pairs of a dataset, in file order.

    Args:
        root: dataset folder, or pair-list file (see the module docstring).
        layout: ``"auto"``, ``"gopro"``, ``"folders"`` or ``"list"``.
        split: GoPro split, ``"train"`` or ``"test"`` (needed when ``root``
            holds both).
        blur_dir: the blurry folder of a GoPro sequence, ``"blur"`` or
            ``"blur_gamma"`` (also used for a flat ``<root>/{blur_dir,sharp}``).

    Returns:
        List of :class:`Pair`, ordered by sequence then natural file-name order
        (list order for a pair list).

    Raises:
        ValueError / FileNotFoundError: naming the file or folder when a
            partner is missing or the layout is not recognised.
    """
    root = _fspath(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(blur_dir, str) or not blur_dir:
        raise ValueError(f"blur_dir must be a folder name such as 'blur' or 'blur_gamma', "
                         f"got {blur_dir!r}")
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    if layout == "auto":
        layout = detect_layout(root, blur_dir)
    if split is not None and layout != "gopro":
        raise ValueError(f"split={split!r} applies to the GoPro layout, but {root} is a "
                         f"{layout!r} dataset")
    if layout == "tfrecord":
        raise ValueError(f"{root} is a prepared TFRecord folder: its pairs are records, not "
                         "files (read it with paired_dataset)")
    if layout == "list":
        if not os.path.isfile(root):
            raise FileNotFoundError(f"pair list {root} does not exist")
        return _list_pairs(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if layout == "folders":
        names = _folder_names(root, blur_dir)
        if names is None:
            raise ValueError(f"dataset root {root} has no {{{blur_dir},sharp}} or "
                             f"{{input,target}} folders (found {_subdirs(root)[:10]})")
        pairs = _pair_folders(os.path.join(root, names[0]), os.path.join(root, names[1]), None)
    else:
        pairs = _gopro_pairs(root, split, blur_dir)
    if not pairs:
        raise ValueError(f"dataset root {root} holds no image pairs")
    return pairs


def _check_same_size(b: np.ndarray, s: np.ndarray, bp: str, sp: str) -> None:
    if b.shape != s.shape:
        raise ValueError(f"blurry image {bp} is {b.shape[1]}x{b.shape[0]} but its sharp partner "
                         f"{sp} is {s.shape[1]}x{s.shape[0]}")



def usable_pairs(root, layout: str, split, blur_dir, skip_bad_files) -> list[Pair]:
    """The pairs of ``root`` whose two files are readable images.

    Every file is checked before anything is read for training (a bad one is
    named up front, or left out with a warning when ``skip_bad_files``).
    """
    pairs = find_pairs(root, layout=layout, split=split, blur_dir=blur_dir)
    good = set(check_image_files([f for p in pairs for f in (p.blurry, p.sharp)],
                                 skip_bad=bool(skip_bad_files)))
    pairs = [p for p in pairs if p.blurry in good and p.sharp in good]
    if not pairs:
        raise ValueError(f"root {root}: no pair with both files usable")
    return pairs

def paired_dataset(root: str | os.PathLike, *, layout: str = "auto", split: str | None = None,
                   blur_dir: str = "blur", patch_size: int | tuple[int, int] | None = None,
                   augment: bool = False, batch_size: int | None = None,
                   shuffle: bool | int = False, seed: int | None = None,
                   with_flow: bool = False, flow_cache: str | os.PathLike | None = None,
                   flow_preset: str = "medium", cache: bool | str = False,
                   drop_remainder: bool = False, flip: bool = True, rotate: bool = True,
                   permute_channels: bool = True, repeat: bool = False, skip: int = 0,
                   num_parallel_calls: int = tf.data.AUTOTUNE,
                   progress: bool = True, skip_bad_files: bool = False,
                   service: str | None = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(blurry, sharp)`` float32 RGB images in [0, 1].

    By default: whole images, in file order, unbatched, unaugmented (a
    validation / test set). For training set ``patch_size``, ``augment=True``,
    ``shuffle=True``, ``batch_size`` and a ``seed``.

    Args:
        root: dataset folder, pair-list file (see :func:`find_pairs`) or a
            folder prepared by ``tfdeblur prepare-data``.
        layout: ``"auto"`` (detected), ``"gopro"``, ``"folders"``, ``"list"``
            or ``"tfrecord"``.
        split: GoPro ``"train"`` / ``"test"`` (when ``root`` holds both).
        blur_dir: GoPro blurry folder, ``"blur"`` or ``"blur_gamma"``.
        patch_size: crop size, int or (height, width): a random crop with
            ``augment``, else the central crop. ``None`` keeps whole images.
            An image smaller than the patch is an error naming the file.
        augment: random crop, flips, 90-degree rotations and RGB permutation,
            the same for both images (see :func:`augment_pair`); drawn anew
            every epoch, reproducibly from ``seed``. When batching non-square
            patches or whole images, rotations are limited to 180 degrees so
            that the elements keep one shape.
        batch_size: batch the elements (``None``: unbatched); whole images
            must then all have one size.
        shuffle: reshuffle every epoch (``True``: over the whole dataset; an
            int: with that buffer size). TFRecords: the shard order too, and
            ``True`` is a buffer of the whole dataset or of 1 GB of records,
            whichever is smaller.
        seed: makes shuffling and augmentation reproducible; ``None`` draws
            one at random.
        with_flow: also yield the bidirectional optical flow of the sharp
            frame (``[H, W, 4]``: (dx, dy) to the previous, then to the next
            sharp frame of its sequence; see :mod:`tfdeblur.data.flow`).
            GoPro layout only. Flows are computed once with DIS (progress bar
            on stderr) and cached on disk.
        flow_cache: cache folder for flows (default under ``~/.cache/tfdeblur``).
        flow_preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"``.
        cache: keep decoded whole images after the first epoch: ``True`` in
            memory (24 bytes per pixel per pair, 28 with flow), a path string
            in files there.
        drop_remainder: drop the last incomplete batch.
        flip, rotate, permute_channels: enable parts of ``augment``.
        repeat: an endless stream of passes over the pairs, each reshuffled
            and re-augmented like a new epoch; batches run on across pass
            boundaries.
        skip: elements dropped from the start of every iteration before they
            are decoded, so that a resumed training run continues the same
            stream cheaply (``skip=step * batch_size`` with ``repeat``).
        num_parallel_calls: parallel decoding / augmentation calls.
        progress: show the progress bar of the flow computation.
        skip_bad_files: every file is checked before the dataset is made
            (:func:`~tfdeblur.data.io.check_image_files`: unreadable, empty,
            unknown or truncated files); a bad one raises an error naming it,
            or with ``True`` its pair is left out with a warning naming it.
        service: a tf.data service dispatcher (``"grpc://host:port"``): its
            workers run the pipeline and this process receives the batches
            (``tf.data.experimental.service.distribute``, mode
            ``"parallel_epochs"``). Workers in other processes need a pipeline
            without Python functions: the TFRecord layout (image folders and
            synthetic blur decode in Python, so only in-process workers can
            run them).

    Returns:
        Dataset of ``(blurry, sharp)`` (``(blurry, sharp, flow)`` with
        ``with_flow``), each ``[H, W, C]`` float32, or ``[N, H, W, C]`` batched.

    Raises:
        ValueError / FileNotFoundError: naming the file for pairing problems
            (here) and for unreadable, truncated or mismatched files
            (``InvalidArgumentError`` while iterating).

    Example:
        >>> train = paired_dataset("GOPRO_Large", split="train", patch_size=256,
        ...                        augment=True, shuffle=True, batch_size=16, seed=0)
        >>> val = paired_dataset("GOPRO_Large", split="test")
    """
    opts = _pipeline.DatasetOptions.from_arguments(
        patch_size=patch_size, augment=augment, batch_size=batch_size, shuffle=shuffle,
        seed=seed, with_flow=with_flow, drop_remainder=drop_remainder, flip=flip, rotate=rotate,
        permute_channels=permute_channels, repeat=repeat, skip=skip,
        num_parallel_calls=num_parallel_calls, skip_bad_files=skip_bad_files, service=service)
    cache = _pipeline.prepare_cache(cache)
    root = _fspath(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "auto" and (with_flow or os.path.isdir(root)):
        layout = detect_layout(root, blur_dir)
    if layout == "tfrecord":
        if split is not None:
            raise ValueError(f"split={split!r} applies to the GoPro layout; {root} is a "
                             "prepared TFRecord folder (of one split)")
        from tfdeblur.data.tfrecord import tfrecord_dataset

        return tfrecord_dataset(root, opts, cache=cache)
    if with_flow and layout != "gopro":
        raise ValueError("with_flow=True needs the GoPro layout (flows are computed between "
                         f"neighbouring frames of a sequence); {root} is a {layout!r} dataset"
                         + ("; if it is one video sequence, pass layout='gopro'"
                            if layout == "folders" else ""))
    if flow_preset not in PRESETS:
        raise ValueError(f"flow_preset must be one of {sorted(PRESETS)}, got {flow_preset!r}")
    pairs = usable_pairs(root, layout, split, blur_dir, skip_bad_files)

    tensors = {"blurry": [p.blurry for p in pairs], "sharp": [p.sharp for p in pairs]}
    flow_store = None
    if with_flow:
        flow_store, triplets = flow_store_for(pairs, root, layout, flow_cache, flow_preset,
                                              progress)
        tensors["prev"] = [triplets[p.sharp][0] or "" for p in pairs]
        tensors["next"] = [triplets[p.sharp][2] or "" for p in pairs]
    load = _file_loader(opts, flow_store)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    return _pipeline.assemble(ds, load, opts, len(pairs), cache=cache, seeds="after")


def flow_store_for(pairs: list[Pair], root: str, layout: str, flow_cache, flow_preset: str,
                   progress: bool) -> tuple[FlowCache, dict[str, tuple]]:
    """The flow cache of a GoPro dataset with every flow computed, and sharp -> triplet."""
    if layout != "gopro":
        raise ValueError("flows need the GoPro layout (they are computed between "
                         f"neighbouring frames of a sequence); {root} is a {layout!r} dataset")
    if flow_preset not in PRESETS:
        raise ValueError(f"flow_preset must be one of {sorted(PRESETS)}, got {flow_preset!r}")
    store = FlowCache(flow_cache or default_cache_dir(root), preset=flow_preset)
    triplets: dict[str, tuple] = {}
    by_seq: dict[str, list[str]] = {}
    for p in pairs:
        by_seq.setdefault(p.sequence, []).append(p.sharp)
    for frames in by_seq.values():
        for t in sequence_triplets(frames):
            triplets[t[1]] = t
    store.precompute(list(triplets.values()), progress=progress)
    return store, triplets


def _file_loader(opts: _pipeline.DatasetOptions, flow_store: FlowCache | None):
    """Stage ``load`` of image files: ``{"blurry", "sharp"[, "prev", "next"]}`` paths to
    ``(blurry, sharp[, flow])`` float32 tensors, through the package's one reader."""
    patch = opts.patch_size

    def load_np(bp, sp, prev=None, nxt=None):
        bp, sp = _fspath(bp), _fspath(sp)
        b, s = read_image(bp), read_image(sp)
        _check_same_size(b, s, bp, sp)
        if patch is not None and (b.shape[0] < patch[0] or b.shape[1] < patch[1]):
            raise ValueError(f"blurry image {bp} is {b.shape[1]}x{b.shape[0]}, smaller than "
                             f"patch_size (height {patch[0]}, width {patch[1]})")
        if flow_store is None:
            return b, s
        prev, nxt = _fspath(prev) or None, _fspath(nxt) or None
        f = flow_store.get(prev, sp, nxt)
        if f.shape[:2] != s.shape[:2]:
            raise ValueError(f"flow cached for {sp} is {f.shape[1]}x{f.shape[0]}, but the image "
                             f"is {s.shape[1]}x{s.shape[0]} ({flow_store.path_for(sp)})")
        return b, s, f

    load_np = _pipeline.numpy_errors_as_value_errors(load_np)
    n_out = opts.outputs

    def load(el):
        args = [el["blurry"], el["sharp"]] + ([el["prev"], el["next"]] if opts.with_flow else [])
        out = tf.numpy_function(load_np, args, [tf.float32] * n_out, stateful=False)
        return tuple(tf.ensure_shape(x, [None, None, c])
                     for x, c in zip(out, (3, 3, 4)[:n_out], strict=True))

    return load
