"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.attention_fusion import AttentionChannelFusion, AttentionLayerFusion
from tfdeblur.layers.deform_conv import ModulatedDeformConv2D
from tfdeblur.layers.lmfn_blocks import DownBlock, PixelShuffle, ResidualBlock, UpsampleAdd
from tfdeblur.layers.rfdb import EnhancedSpatialAttention, ResidualFeatureDistillationBlock
from tfdeblur.layers.spatial_rnn import SpatialRNN
from tfdeblur.layers.svdn_blocks import DilatedBackbone, FeatureDeconvolution, ReconstructionHead
from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)

__all__ = [
    "AttentionChannelFusion",
    "AttentionLayerFusion",
    "BilinearUpsampling2x",
    "DilatedBackbone",
    "DownBlock",
    "EnhancedSpatialAttention",
    "FeatureDeconvolution",
    "ModulatedDeformConv2D",
    "PixelShuffle",
    "RNNDeconvolution",
    "ReconstructionHead",
    "ResidualBlock",
    "ResidualFeatureDistillationBlock",
    "SpatialRNN",
    "UpsampleAdd",
    "WeightGenerationNetwork",
]
