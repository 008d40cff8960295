"""Python face of tfdeblur's compiled ops, with portable pure-TensorFlow twins.

Every op takes ``implementation="auto" | "compiled" | "portable"``: ``auto``
uses the compiled library when it loaded (see :func:`compiled_available`) and
the portable twin otherwise; ``portable`` is what exports contain.
"""

from tfdeblur.ops._loader import (
    build_info,
    compiled_available,
    compiled_unavailable_reason,
)
from tfdeblur.ops.deform_conv import deform_conv_sampling_positions, modulated_deform_conv2d
from tfdeblur.ops.gated_recurrence import DIRECTIONS, gated_recurrence, spatial_rnn

__all__ = [
    "DIRECTIONS",
    "build_info",
    "compiled_available",
    "compiled_unavailable_reason",
    "deform_conv_sampling_positions",
    "gated_recurrence",
    "modulated_deform_conv2d",
    "spatial_rnn",
]
