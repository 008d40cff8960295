"""VGG16 initialisation of SVRNN's conv3-conv11 from a local Keras weights file.

Zhang et al. (CVPR 2018, sec. 3.3) fine-tune conv3-conv11 of the weight
generation network from the first nine convolutions of VGG16. Weights are
never downloaded here: the caller gives the path of a Keras VGG16 weights
file without the dense top (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``
or a ``.weights.h5`` saved from ``keras.applications.VGG16(include_top=False)``);
without one the layers keep their Xavier initialisation.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tfdeblur.layers.svrnn_blocks import _ENCODER, VGG16_ENCODER_LAYERS, WeightGenerationNetwork

#: Per-channel BGR means that Keras's VGG16 ``preprocess_input`` subtracts.
VGG16_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def load_vgg16(path: str | os.PathLike) -> keras.Model:
    """Keras's VGG16 without the dense top, with its weights read from a local file.

    Args:
        path: a Keras VGG16 weights file without the dense top (what
            ``keras.applications.VGG16(include_top=False).load_weights``
            reads, e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``
            or a ``.weights.h5`` saved from that model).

    Returns:
        ``keras.applications.VGG16(include_top=False)`` for any input size
        (``input_shape=(None, None, 3)``).

    Raises:
        TypeError: ``path`` is not a path.
        FileNotFoundError: ``path`` does not name a file.
        ValueError: the file is not a Keras VGG16 weights file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"vgg16_weights must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vgg16_weights: no file at {path!r} (weights are never "
                                "downloaded: give the path of a local Keras VGG16 weights file)")
    try:
        return keras.applications.VGG16(weights=path, include_top=False,
                                        input_shape=(None, None, 3))
    except Exception as e:  # Keras raises several types for a foreign file
        raise ValueError(f"vgg16_weights: could not load {path!r} into Keras's VGG16 without "
                         f"top (include_top=False): {type(e).__name__}: {e}") from e


def load_vgg16_convs(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kernels and biases of VGG16's first nine convolutions from a local file.

    Args:
        path: a Keras VGG16 weights file without the dense top (see
            :func:`load_vgg16`).

    Returns:
        Nine ``(kernel [3, 3, Cin, Cout], bias [Cout])`` pairs, block1_conv1
        to block4_conv2.

    Raises:
        FileNotFoundError: ``path`` does not name a file.
        ValueError: the file is not a Keras VGG16 weights file.
    """
    vgg = load_vgg16(path)
    return [tuple(np.asarray(w) for w in vgg.get_layer(n).get_weights())
            for n in VGG16_ENCODER_LAYERS]


def init_from_vgg16(target, path: str | os.PathLike,
                    match_preprocessing: bool = True) -> WeightGenerationNetwork:
    """Sets conv3-conv11 of SVRNN's weight-generation network to VGG16's weights.

    Keras's VGG16 weights expect BGR input in [0, 255] minus the ImageNet
    mean (``keras.applications.vgg16.preprocess_input``), while SVRNN reads
    RGB in [0, 1]. With ``match_preprocessing`` (default) that
    preprocessing is folded into conv3 (channels reversed, kernel x 255,
    bias minus the kernel applied to the mean), so on the image interior
    conv3-conv11 compute exactly VGG16's features of the image; without it
    the weights are copied unchanged (as the authors' Caffe net did with
    its [0, 1] input).

    Args:
        target: a built :class:`~tfdeblur.layers.WeightGenerationNetwork` with
            ``width=64`` on 3-channel input, or an SVRNN model containing
            one named ``"weight_generation"``.
        path: local Keras VGG16 weights file (see :func:`load_vgg16_convs`).
        match_preprocessing: fold VGG16's input preprocessing into conv3.

    Returns:
        The weight-generation layer that was initialised.

    Raises:
        FileNotFoundError, ValueError: bad ``path`` or incompatible ``target``.

    Example:
        >>> model = tfdeblur.models.build("svrnn")
        >>> init_from_vgg16(model, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    """
    layer = target
    if isinstance(target, keras.Model):
        try:
            layer = target.get_layer("weight_generation")
        except ValueError:
            raise ValueError(f"init_from_vgg16: model {target.name!r} has no layer named "
                             "'weight_generation'") from None
    if not isinstance(layer, WeightGenerationNetwork):
        raise ValueError("init_from_vgg16: target must be a WeightGenerationNetwork or an SVRNN "
                         f"model, got {type(target).__name__}")
    if layer.width != 64:
        raise ValueError("init_from_vgg16: VGG16 initialisation needs weight_width=64 "
                         f"(VGG16's widths), got {layer.width}")
    if not layer.built:
        raise ValueError("init_from_vgg16: the weight-generation layer must be built first")
    if layer.conv3.kernel.shape[2] != 3:
        raise ValueError("init_from_vgg16: VGG16 initialisation needs 3-channel (RGB) input, "
                         f"got {layer.conv3.kernel.shape[2]} channels")
    convs = load_vgg16_convs(path)
    for (name, _, _), (kernel, bias) in zip(_ENCODER, convs, strict=True):
        if name == "conv3" and match_preprocessing:
            bias = bias - np.einsum("hwco,c->o", kernel.astype(np.float64), VGG16_BGR_MEAN)
            kernel = 255.0 * kernel[:, :, ::-1, :]
        conv = getattr(layer, name)
        if tuple(conv.kernel.shape) != kernel.shape:
            raise ValueError(f"init_from_vgg16: {name} has kernel shape "
                             f"{tuple(conv.kernel.shape)}, VGG16 gives {kernel.shape}")
        conv.set_weights([kernel.astype(conv.kernel.dtype), bias.astype(conv.bias.dtype)])
    return layer
