"""Keras layers of tfdeblur (all registered for ``.keras`` serialisation)."""

from tfdeblur.layers.spatial_rnn import SpatialRNN

__all__ = ["SpatialRNN"]
