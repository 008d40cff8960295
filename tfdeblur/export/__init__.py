"""Exports for serving: SavedModel for TF Serving, TFLite for phones, ONNX; stock ops only.

TF Serving, LiteRT and ONNX Runtime ship no tfdeblur kernels, so an export
must not contain the compiled ``TfDeblur>...`` ops. Every exporter rebuilds
the network from its Keras config with ``implementation="portable"`` (the
pure TensorFlow twins of the ops; :func:`portable_model`), copies the
weights, checks that the copy gives the original's output, writes the export
in a hidden work folder next to its destination (:mod:`tfdeblur._atomic`) and
moves it into place only after it has been verified in its runtime:

- :func:`export_saved_model` (``saved_model.py``): signatures
  ``serving_default`` (float32 ``blurry`` -> ``sharp``) and ``deblur_image``
  (encoded PNG/JPEG ``image_bytes`` -> ``png_bytes``), TF Serving warm-up
  records; verified in a Python process that never imports tfdeblur.
- :func:`export_tflite` (``tflite.py``): one fixed size ``[1, H, W, C]``,
  TFLite builtin ops only, float32, float16 or dynamic-range weights, or
  full-integer int8 from calibration images; verified in LiteRT
  (``ai_edge_litert``).
- :func:`export_onnx` (``onnx.py``): through ``tf2onnx``, verified in ONNX
  Runtime (optional dependencies: ``pip install tfdeblur[onnx]``).

``verify.py`` holds the checks, ``destinations.py`` what an export may replace
(:func:`check_destination`). Verification failures raise :class:`ExportError`
and leave nothing at the destination. See ``docs/deployment.md``.
"""

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
    portable_model,
)
from tfdeblur.export.destinations import DESTINATION_KINDS, check_destination
from tfdeblur.export.onnx import export_onnx
from tfdeblur.export.saved_model import export_saved_model, saved_model_op_types
from tfdeblur.export.tflite import QUANTIZATIONS, calibration_images, export_tflite

__all__ = [
    "CUSTOM_OP_PREFIX",
    "DESTINATION_KINDS",
    "IMAGE_INPUT_NAME",
    "IMAGE_OUTPUT_NAME",
    "IMAGE_SIGNATURE_KEY",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "QUANTIZATIONS",
    "SIGNATURE_KEY",
    "WARMUP_FILE",
    "ExportError",
    "calibration_images",
    "check_destination",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "portable_model",
    "saved_model_op_types",
]
