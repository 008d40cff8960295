"""What the paired and synthetic tf.data pipelines share: their options and their stages.

Both dataset functions check their keyword arguments into one
:class:`DatasetOptions`, then run the same named stages around their own
``load`` stage (decode files, or synthesize blur):

- :func:`order`: shuffle, repeat, attach the per-element augmentation seeds,
  skip (a resumed run's used elements, before anything is decoded);
- :func:`crop` / :func:`augment`: the central or random patch, flips,
  rotations, RGB permutation (:func:`~tfdeblur.data.augment_pair`);
- :func:`finish`: batch, pin the element order, hand the pipeline to a
  ``tf.data`` service when asked, prefetch.
"""

from __future__ import annotations

import dataclasses
import os
import secrets

import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.data.augment import _size


def resolve_seed(seed: int | None) -> int:
    """The given seed, or a fresh random one when ``None``."""
    if seed is None:
        return secrets.randbits(31)
    return checks.check_int(seed, "seed", minimum=None, allow_none=True)


def seed_stream(seed: int, rerandomize: bool) -> tf.data.Dataset:
    """An endless dataset of ``[2]`` int64 stateless seeds drawn from ``seed``.

    With ``rerandomize`` every new iteration (epoch) draws a different but
    reproducible sequence; without, every iteration repeats the first one.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize).batch(2)


def check_patch_size(patch_size) -> tuple[int, int] | None:
    return None if patch_size is None else _size(patch_size)


def check_batch_size(batch_size) -> int | None:
    return checks.check_int(batch_size, "batch_size", allow_none=True)


def check_skip(skip) -> int:
    return checks.check_int(skip, "skip", minimum=0)


def check_shuffle(shuffle) -> int | None:
    """``False`` or None -> None, ``True`` -> 0 (whole dataset), an int -> that buffer size."""
    if shuffle is None:
        return None
    shuffle = checks.check_bool_or_int(shuffle, "shuffle")
    if shuffle is False:
        return None
    return 0 if shuffle is True else shuffle


SERVICE_PROTOCOLS = ("grpc://", "grpc+local://")


def check_service(service) -> str | None:
    """``None``, or a tf.data service dispatcher address ``grpc://host:port``."""
    if service is None:
        return None
    if not isinstance(service, str) or not service.startswith(SERVICE_PROTOCOLS) \
            or ":" not in service.split("://", 1)[1]:
        raise ValueError("service must be a tf.data service dispatcher address such as "
                         f"'grpc://host:5050', got {service!r}")
    return service


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
    """The options :func:`~tfdeblur.data.paired_dataset` and
    :func:`~tfdeblur.data.synthetic_dataset` share, checked (see their Args).

    ``shuffle`` is normalised: None (no shuffling), 0 (the whole dataset) or a
    buffer size; ``seed`` is always an int (drawn when given as None).
    """

    patch_size: tuple[int, int] | None = None
    augment: bool = False
    batch_size: int | None = None
    shuffle: int | None = None
    seed: int = 0
    with_flow: bool = False
    drop_remainder: bool = False
    flip: bool = True
    rotate: bool = True
    permute_channels: bool = True
    repeat: bool = False
    skip: int = 0
    num_parallel_calls: int = tf.data.AUTOTUNE
    skip_bad_files: bool = False
    service: str | None = None

    @classmethod
    def from_arguments(cls, *, patch_size=None, batch_size=None, shuffle=False, seed=None,
                       skip=0, service=None, **flags) -> DatasetOptions:
        """Checks the dataset functions' keyword arguments (errors name the argument)."""
        return cls(patch_size=check_patch_size(patch_size),
                   batch_size=check_batch_size(batch_size), shuffle=check_shuffle(shuffle),
                   seed=resolve_seed(seed), skip=check_skip(skip), service=check_service(service),
                   **{k: (val if k == "num_parallel_calls" else checks.check_bool(val, k))
                      for k, val in flags.items()})

    @property
    def outputs(self) -> int:
        """Elements per item: (blurry, sharp) or (blurry, sharp, flow)."""
        return 3 if self.with_flow else 2

    @property
    def rotate_batchable(self) -> bool:
        """Whether 90-degree rotations are allowed: they swap height and width, so only for
        unbatched elements or square patches."""
        square = self.patch_size is not None and self.patch_size[0] == self.patch_size[1]
        return self.rotate and (self.batch_size is None or square)


def drawn_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """``(element, [2] seed)``: seeds drawn along the stream by a sequential map.

    Unlike :func:`seed_stream` this adds no second source dataset, so
    ``tf.data``'s FILE auto-sharding still finds the file reader (TFRecords;
    ``scan`` hides it too). The op's two seeds are given, so the draws depend
    on ``seed`` alone (not on TensorFlow's global seed); the map is sequential,
    so they are deterministic; the kernel's state lives as long as the
    iterator, so passes of a repeated stream get new draws.
    """
    lo, hi = tf.constant(0, tf.int64), tf.constant(2**62, tf.int64)

    def attach(el):
        return el, tf.raw_ops.RandomUniformInt(shape=[2], minval=lo, maxval=hi,
                                               seed=int(seed) + 1, seed2=0x5EED)

    return ds.map(attach)


def order(ds: tf.data.Dataset, opts: DatasetOptions, size: int, *, seeds: str | None,
          rerandomize: bool = True) -> tf.data.Dataset:
    """Stage: shuffle, repeat, augmentation seeds, skip.

    Args:
        size: elements per pass (the whole-dataset shuffle buffer).
        seeds: ``"after"`` (attached after shuffling: new draws every pass),
            ``"before"`` (before it: each element keeps its draw), ``"drawn"``
            (after, by :func:`drawn_seeds`), or None (no seeds).
        rerandomize: ``seed_stream``'s, for ``"before"``.
    """
    if seeds == "before":
        ds = tf.data.Dataset.zip((ds, seed_stream(opts.seed + 1, rerandomize=rerandomize)))
    if opts.shuffle is not None:
        ds = ds.shuffle(opts.shuffle or size, seed=opts.seed, reshuffle_each_iteration=True)
    if opts.repeat:
        ds = ds.repeat()
    if seeds == "after":
        ds = tf.data.Dataset.zip((ds, seed_stream(opts.seed + 1, rerandomize=True)))
    elif seeds == "drawn":
        ds = drawn_seeds(ds, opts.seed + 1)
    if opts.skip:
        ds = ds.skip(opts.skip)
    return ds


def crop(parts, opts: DatasetOptions, seed=None) -> tuple:
    """Stage: the patch of every part: random (with ``augment``, then the rest of the
    augmentation too, from ``seed``) or central; whole images without ``patch_size``."""
    if opts.augment:
        return augment(parts, opts, seed, patch_size=opts.patch_size)
    if opts.patch_size is not None:
        return tuple(center_crop(list(parts), opts.patch_size))
    return tuple(parts)


def augment(parts, opts: DatasetOptions, seed, *, patch_size=None) -> tuple:
    """Stage: :func:`~tfdeblur.data.augment_pair` with the options' transforms."""
    from tfdeblur.data.augment import augment_pair

    return augment_pair(parts[0], parts[1], seed, flow=parts[2] if opts.with_flow else None,
                        patch_size=patch_size, flip=opts.flip, rotate=opts.rotate_batchable,
                        permute_channels=opts.permute_channels)


def assemble(ds: tf.data.Dataset, load, opts: DatasetOptions, size: int, *,
             cache: bool | str = False, seeds: str = "after") -> tf.data.Dataset:
    """The paired pipelines: ``load`` (elements of ``ds`` to image tuples), then the stages.

    With ``cache`` the loaded whole images are cached (before shuffling);
    otherwise ``load`` runs after :func:`order`, so skipped elements are never
    loaded.
    """
    if cache is not False:
        ds = ds.map(load, num_parallel_calls=opts.num_parallel_calls)
        ds = ds.cache("" if cache is True else cache)
    ds = order(ds, opts, size, seeds=seeds if opts.augment else None)
    if cache is False:
        if opts.augment:
            fn = lambda el, seed: crop(load(el), opts, seed)  # noqa: E731
        else:
            fn = lambda el: crop(load(el), opts)  # noqa: E731
    elif opts.augment:
        fn = lambda parts, seed: crop(parts, opts, seed)  # noqa: E731
    else:
        fn = lambda *parts: crop(parts, opts)  # noqa: E731
    ds = ds.map(fn, num_parallel_calls=opts.num_parallel_calls)
    return finish(ds, opts)


def center_crop(parts: list[tf.Tensor], patch_size: tuple[int, int]) -> list[tf.Tensor]:
    """The same central ``patch_size`` window of each ``[H, W, C]`` tensor."""
    ph, pw = patch_size
    shape = tf.shape(parts[0])
    top, left = (shape[0] - ph) // 2, (shape[1] - pw) // 2
    return [tf.ensure_shape(p[top:top + ph, left:left + pw], [ph, pw, p.shape[-1]])
            for p in parts]


def finish(ds: tf.data.Dataset, opts: DatasetOptions) -> tf.data.Dataset:
    """Stage: batches, pins the element order (results do not depend on timing), hands
    the pipeline to the tf.data service ``opts.service`` when given, prefetches.

    With a service, the dispatcher's workers run the whole pipeline and this
    process only receives the batches (``processing_mode="parallel_epochs"``:
    each worker produces the whole stream; with several workers the batches
    of all are interleaved).
    """
    if opts.batch_size is not None:
        ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    if opts.service is not None:
        ds = ds.apply(tf.data.experimental.service.distribute(
            processing_mode="parallel_epochs", service=opts.service))
    return ds.prefetch(tf.data.AUTOTUNE)


def prepare_cache(cache) -> bool | str:
    """``cache`` checked: a bool, or a file path whose folder is created."""
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"cache must be a bool or a file path, got {cache!r}")
    if isinstance(cache, bool):
        return cache
    from tfdeblur.data.io import _fspath

    cache = _fspath(cache)
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    return cache


def numpy_errors_as_value_errors(fn):
    """Wraps a ``tf.numpy_function`` body so that OSErrors surface as InvalidArgumentError.

    ``tf.numpy_function`` maps ValueError to InvalidArgumentError but other
    exceptions to UnknownError; the messages (which name the file) are kept.
    """
    def wrapped(*args):
        try:
            return fn(*args)
        except OSError as e:
            raise ValueError(str(e)) from None

    return wrapped
