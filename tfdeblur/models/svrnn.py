"""SVRNN: spatially variant RNN deblurring network (Zhang et al., CVPR 2018)."""

from __future__ import annotations

import keras

from tfdeblur import _validation as v
from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)
from tfdeblur.models import register
from tfdeblur.models._base import DeblurModel
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
    """Builds SVRNN, the spatially variant RNN deblurring network.

    Zhang, Pan, Ren, Song, Bao, Lau, Yang, "Dynamic Scene Deblurring Using
    Spatially Variant Recurrent Neural Networks", CVPR 2018, sec. 3.2 and
    Table 1: a feature extractor, a weight-generation network that predicts
    per-pixel RNN gates from the blurry image, four spatial RNNs and a
    reconstruction. The defaults are the paper's configuration (9,227,027
    parameters; paper: 9.2 M). The layout, the choices the paper leaves open
    and the input contract (any side of at least :data:`MIN_SIZE` = 8, any
    batch, float images in [0, 1]) are in ``docs/models.md``. Needs Keras's
    TensorFlow backend.

    Args:
        width: channels of the RNN features (conv2, conv17-conv20); conv1
            and conv21 get ``max(width // 2, 1)``.
        weight_width: base width of the weight-generation network (64 for
            VGG16 initialisation).
        num_rnns: number of spatial RNN + fusion conv pairs.
        negative_slope: LeakyReLU slope of the feature, fusion and
            reconstruction convs.
        implementation: spatial RNN implementation, ``"auto"``,
            ``"compiled"`` or ``"portable"``. Models running the compiled op
            are not compiled with XLA (Keras's ``jit_compile`` falls back to
            False); the portable one may be.
        vgg16_weights: path of a local Keras VGG16 weights file (e.g.
            ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``) to
            initialise conv3-conv11 from, as in the paper's training; None
            keeps the Xavier initialisation. Nothing is ever downloaded; a
            missing or foreign file is an error. See
            :func:`tfdeblur.models.vgg16_init.init_from_vgg16`.
        input_shape: ``(H, W, C)``, None for any height or width; C = 3
            (RGB) in the paper and for VGG16 initialisation.
        name: model name.

    Returns:
        A :class:`~tfdeblur.models.DeblurModel` mapping ``[N, H, W, C]`` to
        ``[N, H, W, C]``.

    Example:
        >>> model = tfdeblur.models.build("svrnn")            # paper model
        >>> small = tfdeblur.models.build("svrnn", width=8, weight_width=8)
        >>> small(np.zeros((2, 45, 61, 3), "float32")).shape
        TensorShape([2, 45, 61, 3])
    """
    v.check_tensorflow_backend("svrnn")
    width = v.check_int(width, "width", owner="svrnn")
    weight_width = v.check_int(weight_width, "weight_width", owner="svrnn")
    num_rnns = v.check_int(num_rnns, "num_rnns", owner="svrnn")
    negative_slope = v.check_number(negative_slope, "negative_slope", owner="svrnn")
    v.check_implementation(implementation, owner="svrnn")
    input_shape = v.check_input_shape(input_shape, owner="svrnn")
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
    out = CropTo(name="sharp")([y, image])
    model = DeblurModel(image, out, name=name)

    if vgg16_weights is not None:
        from tfdeblur.models.vgg16_init import init_from_vgg16

        init_from_vgg16(model.get_layer("weight_generation"), vgg16_weights)
    return model
