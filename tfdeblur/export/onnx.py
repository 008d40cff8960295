"""ONNX export through tf2onnx, verified in ONNX Runtime (optional: ``tfdeblur[onnx]``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur import _validation as checks
from tfdeblur.export import _common, destinations, verify
from tfdeblur.export._common import INPUT_NAME, OUTPUT_NAME, ExportError
from tfdeblur.ops.deform_conv import builtin_sampling

__all__ = ["DEFAULT_OPSET", "export_onnx"]

log = logging.getLogger(__name__)

#: ONNX opset written by default (ONNX Runtime 1.17+ runs it).
DEFAULT_OPSET = 17


def _import_converters():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs tf2onnx and onnxruntime (pip install "
                          f"'tfdeblur[onnx]'): {e}") from e
    return tf2onnx


def _graph_def_without_xla(concrete):
    """The frozen GraphDef of a concrete function, every function inlinable.

    Keras's TensorFlow backend runs a convolution whose input channel count is
    unknown when traced in a ``tf.function(jit_compile=True)`` (keras/src/
    backend/tensorflow/nn.py, ``conv``; SVRNN's weight-generation network traces
    so with any image size). tf2onnx does not inline such calls and leaves
    ``StatefulPartitionedCall`` nodes ONNX has no op for; without the XLA mark
    they are inlined like any function and the graph converts.

    Control flow stays functional (``While`` ops, not lowered to
    Enter/Exit/Switch/Merge): tf2onnx turns a functional loop's TensorArray
    writes into an ONNX ``Loop``'s scan output, and has no converter for the
    TensorList ops of a lowered loop (SVDN's deformable convolutions loop over
    row tiles at unknown sizes).
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    graph_def = frozen.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for attrs in [n.attr for n in nodes] + [f.attr for f in graph_def.library.function]:
        for key in ("_XlaMustCompile", "_noinline"):
            if key in attrs:
                del attrs[key]
    return graph_def, [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]


def _convert(tf2onnx, concrete, opset: int):
    import onnx

    graph_def, inputs, outputs = _graph_def_without_xla(concrete)
    converter_log = logging.getLogger("tf2onnx")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)  # one line per placeholder of each loop otherwise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs,
                                                      output_names=outputs, opset=opset)
    finally:
        converter_log.setLevel(level)
    # The graph's tensors are named like TensorFlow's ("blurry:0", "Identity:0");
    # the model's input and output get the signature's names.
    graph = proto.graph
    (inp,), (out,) = graph.input, graph.output
    graph.node.insert(0, onnx.helper.make_node("Identity", [INPUT_NAME], [inp.name]))
    graph.node.append(onnx.helper.make_node("Identity", [out.name], [OUTPUT_NAME]))
    inp.name, out.name = INPUT_NAME, OUTPUT_NAME
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: keras.Model | str | os.PathLike, path: str | os.PathLike, *,
                input_shape: Sequence = (None, None, 3), opset: int = DEFAULT_OPSET,
                overwrite: bool = False) -> str:
    """Writes an ONNX model of the network, stock ops only, verified in ONNX Runtime.

    The network is rebuilt with ``implementation="portable"`` (see
    :func:`portable_model`), traced as a ``tf.function``, frozen (weights as
    constants) and converted with ``tf2onnx``. The graph has one input
    ``blurry`` float32 ``[N, H, W, C]`` (NHWC, in [0, 1]; None sides stay
    dynamic) and one output ``sharp`` of the same shape. Before it is moved
    into place the file is run in ONNX Runtime (CPU) on a test batch, whose
    output must match the Keras model within 1e-4 relative to
    ``max(1, max |output|)``.

    Args:
        model: a tfdeblur network or the path of a ``.keras`` file.
        path: the ``.onnx`` file to write (parent folders are created).
        input_shape: ``(H, W, C)``, None for any height/width (default); C
            must be the model's channel count.
        opset: the ONNX opset to target.
        overwrite: replace an existing ONNX file (see :func:`check_destination`).

    Returns:
        The absolute path of the ``.onnx`` file.

    Raises:
        ImportError: tf2onnx or onnxruntime is not installed.
        FileExistsError: ``path`` exists and may not be replaced.
        ValueError: a bad ``model``, ``input_shape`` or ``opset``.
        ExportError: the conversion failed (with the converter's message) or
            the result does not match the Keras model (nothing written).

    Example:
        >>> model = tfdeblur.models.build("lmfn", width=16, num_blocks=2)
        >>> export_onnx(model, "lmfn.onnx")
        '/.../lmfn.onnx'
    """
    tf2onnx = _import_converters()
    checks.check_int(opset, "opset", minimum=13)
    _, source, path, (h, w, c), portable, x, want, what = _common._prepare(
        model, path, input_shape, overwrite, "onnx", "ONNX")

    @tf.function(autograph=False)
    def serve(blurry):
        return {OUTPUT_NAME: portable(blurry, training=False)}

    spec = tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)
    try:
        with builtin_sampling():   # gathers: tf2onnx turns crop_and_resize into a loop
            concrete = serve.get_concrete_function(spec)
        proto = _convert(tf2onnx, concrete, opset)
    except Exception as e:  # noqa: BLE001 - tf2onnx raises many types
        lines = [ln for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        raise ExportError(f"{what}: tf2onnx could not convert the graph: "
                          f"{type(e).__name__}: {' '.join(lines[-6:])}") from e
    ops = sorted({node.op_type for node in proto.graph.node})
    custom = [op for op in ops if op.startswith(_common.CUSTOM_OP_PREFIX)]
    if custom:
        raise ExportError(f"{what}: the graph contains compiled tfdeblur ops {custom}")
    data = proto.SerializeToString()
    err = verify.verify_onnx(data, x, want, what)
    with _atomic.work_folder(path) as work:
        new = os.path.join(work, "model.onnx")
        with open(new, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        destinations._publish(new, path, "onnx", overwrite, source)
    log.info("%s: wrote %s (%d bytes, opset %d, max relative difference %.2g; ops: %s)",
             what, path, len(data), opset, err, ", ".join(ops))
    return path
