"""SVRNN: spatially variant RNN deblurring network (Zhang et al., CVPR 2018)."""

from __future__ import annotations

import keras

from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)
from tfdeblur.models import register
from tfdeblur.models._base import DeblurModel, check_implementation, check_input_shape, check_int
from tfdeblur.models._padding import CropTo, PadToMultiple

#: Parameters of the paper's network (Table 3: 37.1 MB of float32).
PAPER_PARAMETERS = 9_200_000
#: Height and width are padded (reflect) to a multiple of this: the
#: weight-generation network pools three times.
MULTIPLE = 8
#: Smallest accepted height and width (reflect padding needs pad < side).
MIN_SIZE = 8


@register("svrnn")
def svrnn(width: int = 32,
          weight_width: int = 64,
          num_rnns: int = 4,
          negative_slope: float = 0.1,
          implementation: str = "auto",
          vgg16_weights: str | None = None,
          input_shape: tuple = (None, None, 3),
          name: str = "svrnn") -> keras.Model:
    """Builds SVRNN (Zhang et al., "Dynamic Scene Deblurring Using Spatially
    Variant Recurrent Neural Networks", CVPR 2018, sec. 3.2 and Table 1).

    The defaults are the paper's configuration (9.2 M parameters):

    - feature extraction: conv1 11x11 (``width / 2`` = 16), conv2 7x7
      stride 2 (``width`` = 32), LeakyReLU(0.1) after each;
    - weight generation (:class:`~tfdeblur.layers.WeightGenerationNetwork`,
      on the blurry image): conv3-conv16 with VGG16 widths from
      ``weight_width`` = 64, ending in ``num_rnns * 4 * width`` = 512 tanh
      gates at half resolution;
    - RNN deconvolution (:class:`~tfdeblur.layers.RNNDeconvolution`):
      ``num_rnns`` = 4 four-direction spatial RNNs, each followed by a 3x3
      fusion conv (conv17-conv20, ``width`` channels, LeakyReLU(0.1));
    - reconstruction: ``[conv2, conv20]`` -> conv21 9x9 (``width / 2``) +
      LeakyReLU(0.1) -> bilinear x2 -> ``[conv1, .]`` -> conv22 5x5 -> RGB,
      no activation and no global residual (as in the paper).

    Choices the paper leaves open: concatenations put the skip first (the
    authors' net does); bilinear upsampling uses half-pixel centres
    (``tf.image.resize``); Xavier initialisation is Keras's
    ``glorot_uniform`` with zero biases.

    Any input size: height and width are reflect-padded at the bottom/right
    to a multiple of 8 inside the model and the output is cropped back, so
    every side of at least 8 pixels works (smaller raises a ValueError, or
    an InvalidArgumentError when the size is only known at run time). Inputs
    are float RGB in [0, 1]; the output has the input's shape.

    Args:
        width: channels of the RNN features (conv2, conv17-conv20); conv1
            and conv21 get ``max(width // 2, 1)``.
        weight_width: base width of the weight-generation network (64 for
            VGG16 initialisation).
        num_rnns: number of spatial RNN + fusion conv pairs.
        negative_slope: LeakyReLU slope of the feature, fusion and
            reconstruction convs.
        implementation: spatial RNN implementation, ``"auto"``,
            ``"compiled"`` or ``"portable"``.
        vgg16_weights: path of a local Keras VGG16 weights file (e.g.
            ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``) to
            initialise conv3-conv11 from, as in the paper (sec. 3.3); None
            keeps the Xavier initialisation and never touches the network.
            See :func:`tfdeblur.models.vgg16_init.init_from_vgg16`.
        input_shape: ``(H, W, 3)``, None for any size.
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``[N, H, W, 3]`` to ``[N, H, W, 3]``.

    Example:
        >>> model = tfdeblur.models.build("svrnn")            # paper model
        >>> small = tfdeblur.models.build("svrnn", width=8, weight_width=8)
        >>> sharp = small(blurry)                            # [N, H, W, 3]
    """
    width = check_int(width, "width", "svrnn")
    weight_width = check_int(weight_width, "weight_width", "svrnn")
    num_rnns = check_int(num_rnns, "num_rnns", "svrnn")
    check_implementation(implementation, "svrnn")
    input_shape = check_input_shape(input_shape, "svrnn")
    channels = input_shape[-1]
    half = max(width // 2, 1)

    def conv(filters, size, stride=1, activation=None, name=None):
        return keras.layers.Conv2D(filters, size, strides=stride, padding="same",
                                   activation=activation, name=name)

    def lrelu(name):
        return keras.layers.LeakyReLU(negative_slope, name=name)

    image = keras.Input(input_shape, name="blurry")
    x = PadToMultiple(MULTIPLE, MIN_SIZE, model_name="svrnn", name="pad")(image)

    conv1 = lrelu("conv1_lrelu")(conv(half, 11, name="conv1")(x))
    conv2 = lrelu("conv2_lrelu")(conv(width, 7, stride=2, name="conv2")(conv1))

    gates = WeightGenerationNetwork(weight_width, num_rnns * 4 * width,
                                    name="weight_generation")(x)
    rnn = RNNDeconvolution(width, num_rnns, negative_slope=negative_slope,
                           implementation=implementation, name="rnn_deconvolution")(
        [conv2, gates])

    y = keras.layers.Concatenate(name="concat_conv2")([conv2, rnn])
    y = lrelu("conv21_lrelu")(conv(half, 9, name="conv21")(y))
    y = BilinearUpsampling2x(name="resize1")(y)
    y = keras.layers.Concatenate(name="concat_conv1")([conv1, y])
    y = conv(channels, 5, name="conv22")(y)
    out = CropTo(name="crop")([y, image])
    model = DeblurModel(image, out, name=name)

    if vgg16_weights is not None:
        from tfdeblur.models.vgg16_init import init_from_vgg16

        init_from_vgg16(model.get_layer("weight_generation"), vgg16_weights)
    return model
