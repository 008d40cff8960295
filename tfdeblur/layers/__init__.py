"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.deform_conv import ModulatedDeformConv2D
from tfdeblur.layers.spatial_rnn import SpatialRNN
from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)

__all__ = [
    "BilinearUpsampling2x",
    "ModulatedDeformConv2D",
    "RNNDeconvolution",
    "SpatialRNN",
    "WeightGenerationNetwork",
]
