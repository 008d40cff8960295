"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.deform_conv import ModulatedDeformConv2D
from tfdeblur.layers.spatial_rnn import SpatialRNN

__all__ = ["ModulatedDeformConv2D", "SpatialRNN"]
