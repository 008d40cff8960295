"""SavedModel export for TF Serving: stock ops only, two signatures, warm-up records."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur.export import _common, destinations, verify
from tfdeblur.export._common import (
    CUSTOM_OP_PREFIX,
    IMAGE_INPUT_NAME,
    IMAGE_OUTPUT_NAME,
    IMAGE_SIGNATURE_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    WARMUP_FILE,
    ExportError,
)

__all__ = ["encode_png", "export_saved_model", "saved_model_op_types"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the graph


def _deblur_one(serve, data, channels: int, fixed: tuple) -> tf.Tensor:
    """One encoded image to one PNG, as ``tfdeblur deblur`` treats grey and alpha."""
    # JPEG with the accurate integer DCT, as libjpeg's default (OpenCV, PIL) decodes it;
    # TensorFlow's default fast DCT differs from it by up to a few levels.
    img = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.cast(tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
                        tf.float32) / 255.0,
        lambda: tf.io.decode_image(data, channels=0, dtype=tf.float32, expand_animations=False))
    shape = tf.shape(img)
    checks = [tf.debugging.assert_equal(shape[i], n, message=f"image {side} must be {n} "
                                        f"pixels: this SavedModel was exported for a fixed {side}")
              for i, (side, n) in enumerate(zip(("height", "width"), fixed, strict=True))
              if n is not None]
    with tf.control_dependencies(checks):
        img = tf.identity(img)

    def run(x):
        x = tf.ensure_shape(x, [*fixed, channels])  # the static shape serve's signature takes
        return tf.clip_by_value(serve(x[None])[OUTPUT_NAME][0], 0.0, 1.0)

    def png(y):
        # tf.round rounds half to even, like np.rint in tfdeblur's image writer.
        return tf.io.encode_png(tf.cast(tf.round(y * 255.0), tf.uint8))

    if channels == 3:
        def grey(x):
            return tf.repeat(x, 3, axis=2)
        branches = [
            # Grey: deblurred as RGB (the grey repeated), back to grey as the mean.
            lambda: png(tf.reduce_mean(run(grey(img)), axis=2, keepdims=True)),
            # Grey with alpha: RGBA, the alpha as given.
            lambda: png(tf.concat([run(grey(img[..., :1])), img[..., 1:2]], axis=2)),
            lambda: png(run(img)),
            lambda: png(tf.concat([run(img[..., :3]), img[..., 3:4]], axis=2)),
        ]
    else:
        def colour():
            fail = tf.debugging.Assert(False, [f"the model takes {channels}-channel (grey) "
                                               "images; the image has", shape[2], "channels"])
            with tf.control_dependencies([fail]):
                return tf.identity(tf.constant(b"", tf.string))
        branches = [lambda: png(run(img)), colour, colour, colour]
    return tf.switch_case(shape[2] - 1, branches)


def _write_saved_model(model: keras.Model, directory: str, batch_shape: tuple, *,
                       image_signature: bool = True) -> None:
    # A plain tf.Module that tracks the tf.Variables the signatures capture.
    # keras.export.ExportArchive (and model.export) also track the Keras
    # wrappers of the same variables, so every weight is written twice (2x the
    # size on disk and in TF Serving's memory; keras-team/keras#23553).
    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]
    channels = int(batch_shape[-1])

    # No autograph: nothing here needs it, and it writes each converted
    # function to the system temp folder, deleted only when the process exits.
    @tf.function(input_signature=[tf.TensorSpec(batch_shape, tf.float32, name=INPUT_NAME)],
                 autograph=False)
    def serve(blurry):
        return {OUTPUT_NAME: model(blurry, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_INPUT_NAME)],
                 autograph=False)
    def deblur_image(image_bytes):
        png = tf.map_fn(lambda data: _deblur_one(serve, data, channels, batch_shape[1:3]),
                        image_bytes, fn_output_signature=tf.TensorSpec([], tf.string))
        return {IMAGE_OUTPUT_NAME: png}

    module.serve = serve
    signatures = {SIGNATURE_KEY: serve.get_concrete_function()}
    if image_signature:
        module.deblur_image = deblur_image
        signatures[IMAGE_SIGNATURE_KEY] = deblur_image.get_concrete_function()
    tf.saved_model.save(module, directory, signatures=signatures)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit PNG of a float image in [0, 1] (``[H, W]`` or ``[H, W, C]``), stock ops."""
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[..., None]
    return tf.io.encode_png(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)).numpy()


def _write_warmup(directory: str, x: np.ndarray) -> int:
    """Writes TF Serving's warm-up records (one per signature); returns how many."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    requests = [
        (SIGNATURE_KEY, INPUT_NAME, tf.make_tensor_proto(x[:1], dtype=tf.float32)),
        (IMAGE_SIGNATURE_KEY, IMAGE_INPUT_NAME,
         tf.make_tensor_proto([encode_png(x[0])], dtype=tf.string, shape=[1])),
    ]
    os.makedirs(os.path.join(directory, os.path.dirname(WARMUP_FILE)))
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILE)) as writer:
        for key, name, tensor in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=key))
            request.inputs[name].CopyFrom(tensor)
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log_record.SerializeToString())
    return len(requests)


def saved_model_op_types(path: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs, functions included (no TF runtime needed).

    Read from ``saved_model.pb`` directly, so it works for a SavedModel
    whose ops are not registered in this process.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(os.fspath(path), "saved_model.pb")
    if not os.path.isfile(pb):
        raise FileNotFoundError(f"{pb} does not exist (not a SavedModel folder)")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    ops: set[str] = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


# ------------------------------------------------------------------ export


def export_saved_model(model: keras.Model | str | os.PathLike, path: str | os.PathLike, *,
                       input_shape: Sequence = (None, None, 3), overwrite: bool = False) -> str:
    """Writes a SavedModel for TF Serving that contains only stock TensorFlow ops.

    The network is rebuilt with ``implementation="portable"`` (see
    :func:`portable_model`) when it uses a compiled op, checked against the
    original on a test batch, and exported with two signatures:

    - ``serving_default``: input ``blurry`` float32 ``[N, H, W, C]`` in
      [0, 1], output ``sharp`` float32 ``[N, H, W, C]`` (not clipped);
    - ``deblur_image``: input ``image_bytes`` string ``[N]``, each an encoded
      PNG or JPEG (any size, 8 or 16 bits), output ``png_bytes`` string
      ``[N]``, each an 8-bit PNG of the same size. Decoding and encoding are
      in the graph (stock ops); grey and alpha are treated as ``tfdeblur
      deblur`` treats them: a grey image goes through a 3-channel model as
      RGB and comes back grey (the mean), an alpha channel comes back as
      given, grey with alpha comes back RGBA. EXIF orientation is not
      applied (TensorFlow's decoders ignore it).

    ``assets.extra/tf_serving_warmup_requests`` holds one ``PredictionLog``
    per signature (a small image), which TF Serving replays when it loads
    the model, so that the first client request does not pay for tracing.

    The export is written to a hidden temporary folder next to ``path`` and
    verified there: its graph is scanned for ``TfDeblur>`` ops (there must
    be none) and it is loaded with ``tf.saved_model.load`` in a fresh Python
    process that never imports tfdeblur (``TFDEBLUR_DISABLE_COMPILED=1``, as
    TF Serving would run it), where ``serving_default`` must match the Keras
    model and accept an empty batch, ``deblur_image`` must give what
    ``tfdeblur deblur`` writes (within one 8-bit level) for RGB, grey, RGBA
    and JPEG images, and every warm-up request must run. Only then is the
    folder renamed to ``path``; any failure removes it, and a killed
    export's folder is removed by the next export into the same parent folder.

    The model's run-time checks stay in the graph: images smaller than the
    model's minimum and NaN/Inf values fail with an ``InvalidArgumentError``.

    Inspect an export with TensorFlow's command-line tool (signatures, the op
    list) and run it on a float32 ``.npy`` batch::

        saved_model_cli show --dir PATH --all
        saved_model_cli run --dir PATH --tag_set serve \\
            --signature_def serving_default --inputs blurry=blurry.npy --outdir out/

    TF Serving expects numbered version folders: export to ``models/NAME/1``
    and serve ``models/NAME`` (``docs/deployment.md``).

    Args:
        model: a tfdeblur network (``keras.Model``) or the path of a ``.keras``
            file.
        path: folder to create (parent folders are created).
        input_shape: ``(H, W, C)`` of the signature's images, None for any
            height/width (default); C must be the model's channel count.
        overwrite: replace an existing ``path`` when it is a SavedModel
            folder or an empty folder (see :func:`check_destination`; the old
            export stays in place until the new one is verified).

    Returns:
        The absolute path of the SavedModel folder.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is
            not replaced even with ``overwrite`` (not a SavedModel folder, the
            source model or a folder containing it, the current working
            folder or one of its parents, a link out of its folder).
        ValueError: a bad ``model`` or ``input_shape``; ``path`` is a file.
        ExportError: the export failed its verification (nothing written).

    Example:
        >>> model = tfdeblur.models.build("svdn", width=16)
        >>> export_saved_model(model, "exports/svdn/1")          # TF Serving layout
        '/.../exports/svdn/1'
    """
    # Import-time check of the dependency, before any work.
    import tensorflow_serving.apis.prediction_log_pb2  # noqa: F401

    _, source, path, (h, w, c), portable, x, want, what = _common._prepare(
        model, path, input_shape, overwrite, "saved_model", "SavedModel")
    with _atomic.work_folder(path) as work:
        new = os.path.join(work, "saved_model")
        _write_saved_model(portable, new, (None, h, w, c))
        custom = sorted(op for op in saved_model_op_types(new) if op.startswith(CUSTOM_OP_PREFIX))
        if custom:
            raise ExportError(f"{what}: the graph contains compiled tfdeblur ops {custom}")
        _write_warmup(new, x)
        images = verify.image_cases(x[0], c)
        expected = verify.expected_pngs(portable, images)
        err = verify.verify_without_tfdeblur(new, x, want, what, work, images=images,
                                             expected=expected)
        destinations._publish(new, path, "saved_model", overwrite, source)
    log.info("%s: wrote %s (max relative difference %.2g, verified without tfdeblur)",
             what, path, err)
    return path
