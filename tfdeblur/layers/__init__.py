"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.attention_fusion import AttentionChannelFusion, AttentionLayerFusion
from tfdeblur.layers.lmfn_blocks import DownBlock, PixelShuffle, ResidualBlock, UpsampleAdd
from tfdeblur.layers.rfdb import EnhancedSpatialAttention, ResidualFeatureDistillationBlock
from tfdeblur.layers.spatial_rnn import SpatialRNN

__all__ = [
    "AttentionChannelFusion",
    "AttentionLayerFusion",
    "DownBlock",
    "EnhancedSpatialAttention",
    "PixelShuffle",
    "ResidualBlock",
    "ResidualFeatureDistillationBlock",
    "SpatialRNN",
    "UpsampleAdd",
]
