"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.deform_conv import ModulatedDeformConv2D
from tfdeblur.layers.spatial_rnn import SpatialRNN
from tfdeblur.layers.svdn_blocks import DilatedBackbone, FeatureDeconvolution, ReconstructionHead
from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)

__all__ = [
    "BilinearUpsampling2x",
    "DilatedBackbone",
    "FeatureDeconvolution",
    "ModulatedDeformConv2D",
    "RNNDeconvolution",
    "ReconstructionHead",
    "SpatialRNN",
    "WeightGenerationNetwork",
]
