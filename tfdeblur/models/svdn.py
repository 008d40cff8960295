"""SVDN: spatially variant deconvolution network (Yuan, Su, Ma, CVPR 2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdeblur import _validation as v
from tfdeblur.layers.svdn_blocks import DilatedBackbone, FeatureDeconvolution, ReconstructionHead
from tfdeblur.models import register
from tfdeblur.models._base import DeblurModel
from tfdeblur.models._padding import CropTo, PadToMultiple

#: Parameters of the paper's network ("nearly 0.8 M", 3.1 MB).
PAPER_PARAMETERS = 800_000
#: Height and width are padded (reflect) to a multiple of this: one stride-2 conv.
MULTIPLE = 2
#: Smallest accepted height and width (reflect padding needs pad < side).
MIN_SIZE = 2


@keras.saving.register_keras_serializable(package="tfdeblur")
class TakeBatchOf(keras.layers.Layer):
    """``inputs[0][:N]`` with N the batch of ``inputs[1]``.

    SVDN's padding layer gives an empty batch one dummy item (see
    ``tfdeblur.layers._empty_batch``); the image output drops it in
    :class:`~tfdeblur.models._padding.CropTo`, the sampling positions here.

    Input: ``[positions, image]``. Output: ``positions`` with the image's batch.
    """

    def call(self, inputs):
        x, reference = inputs
        return x[: tf.shape(reference)[0]]

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (ref[0], *x[1:])


@register("svdn")
def svdn(width: int = 64,
         dilation_rates=(1, 2, 4),
         convs_per_rate: int = 1,
         kernel_size: int = 5,
         offset_hidden: int | None = None,
         head_width: int | None = None,
         identity_init: bool = False,
         implementation: str = "auto",
         input_shape: tuple = (None, None, 3),
         name: str = "svdn") -> keras.Model:
    """Builds SVDN, the spatially variant deconvolution network.

    Yuan, Su, Ma, "Efficient Dynamic Scene Deblurring Using Spatially
    Variant Deconvolution Network with Optical Flow Guided Training", CVPR
    2020, sec. 3.1-3.2: a dilated backbone, a neck of two modulated
    deformable convolutions steered by a blur feature, a reconstruction head
    and a global skip (output = input + residual). The defaults give 828,572
    parameters (paper: "nearly 0.8 M"). The layout, the choices the paper
    leaves open and the input contract (any side of at least
    :data:`MIN_SIZE` = 2, any batch, float images in [0, 1]) are in
    ``docs/models.md``. Needs Keras's TensorFlow backend.

    Args:
        width: backbone width = blur and content feature channels = DCN
            channels.
        dilation_rates: the backbone's dilation rates, one stage each.
        convs_per_rate: 3x3 convs per backbone stage.
        kernel_size: DCN kernel size (5 = the paper's 25 sampling points).
        offset_hidden: hidden channels of the second offset branch (None:
            ``3 * kernel_size**2``).
        head_width: channels after the transposed conv (None: ``width // 2``).
        identity_init: zero kernel and bias for the head's reconstruction
            conv, the last layer before the global skip: the residual starts
            at 0 and the untrained model is the identity (not in the paper,
            which uses Xavier initialisation throughout).
        implementation: deformable-convolution implementation, ``"auto"``,
            ``"compiled"`` or ``"portable"``. Models running the compiled op
            are not compiled with XLA (Keras's ``jit_compile`` falls back to
            False); the portable one may be.
        input_shape: ``(H, W, C)``, None for any height or width; C = 3
            (RGB) in the paper.
        name: model name.

    Returns:
        A :class:`~tfdeblur.models.DeblurModel` mapping ``[N, H, W, C]`` to
        ``[N, H, W, C]``, its only output. :func:`with_positions` gives the
        training model that also returns DCN1's sampling positions.

    Example:
        >>> model = tfdeblur.models.build("svdn")                     # paper size
        >>> model(np.zeros((2, 33, 40, 3), "float32")).shape
        TensorShape([2, 33, 40, 3])
    """
    v.check_tensorflow_backend("svdn")
    width = v.check_int(width, "width", owner="svdn")
    convs_per_rate = v.check_int(convs_per_rate, "convs_per_rate", owner="svdn")
    kernel_size = v.check_int(kernel_size, "kernel_size", owner="svdn")
    offset_hidden = v.check_int(offset_hidden, "offset_hidden", owner="svdn", allow_none=True)
    head_width = v.check_int(head_width, "head_width", owner="svdn", allow_none=True)
    if head_width is None:
        head_width = max(width // 2, 1)
    identity_init = v.check_bool(identity_init, "identity_init", owner="svdn")
    rates = v.check_int_sequence(dilation_rates, "dilation_rates", owner="svdn")
    v.check_implementation(implementation, owner="svdn")
    input_shape = v.check_input_shape(input_shape, owner="svdn")
    channels = input_shape[-1]

    image = keras.Input(input_shape, name="blurry")
    x = PadToMultiple(MULTIPLE, MIN_SIZE, model_name="svdn", name="pad")(image)
    blur, content = DilatedBackbone(width, list(rates), convs_per_rate,
                                    name="backbone")(x)
    # The neck also yields DCN1's sampling positions; the inference model leaves
    # them unused (TensorFlow prunes them from its graphs) and with_positions()
    # makes them the training model's second output.
    features, _ = FeatureDeconvolution(width, kernel_size, offset_hidden, return_positions=True,
                                       implementation=implementation,
                                       name="neck")([blur, content])
    residual = ReconstructionHead(head_width, channels, zero_init=identity_init,
                                  name="head")(features)
    sharp = keras.layers.Add(name="global_skip")([x, residual])
    sharp = CropTo(name="sharp")([sharp, image])
    return DeblurModel(image, sharp, name=name)


def with_positions(model: keras.Model) -> keras.Model:
    """The training model of an SVDN: outputs ``[image, positions]``, sharing every layer.

    ``positions`` are DCN1's sampling positions ``[N, ceil(H/2), ceil(W/2),
    kernel_size**2, 2]`` (``(py, px)`` in feature pixels: the regular grid
    around the output pixel + the learned offset), computed from the offsets
    of the same forward pass (no second pass), for the optical-flow position
    loss (:class:`~tfdeblur.losses.SVDNLoss`). Padding only adds rows/columns
    at the bottom/right, so these are coordinates of the unpadded image's
    half-resolution grid. The returned model holds the same variables as
    ``model`` (training one trains the other); save and deploy ``model``.

    Args:
        model: an SVDN from :func:`svdn` (or loaded from its ``.keras`` file).

    Returns:
        A :class:`~tfdeblur.models.DeblurModel` with the name of ``model``.

    Raises:
        ValueError: ``model`` is not an SVDN whose neck yields positions.

    Example:
        >>> model = tfdeblur.models.build("svdn", width=16)
        >>> sharp, positions = with_positions(model)(np.zeros((2, 33, 40, 3), "float32"))
        >>> positions.shape
        TensorShape([2, 17, 20, 25, 2])
    """
    try:
        neck = model.get_layer("neck")
    except ValueError:
        neck = None
    if not isinstance(neck, FeatureDeconvolution) or not neck.return_positions \
            or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"with_positions: model must be an SVDN built by tfdeblur.models.svdn "
                         f"(one input, one output, a 'neck' FeatureDeconvolution yielding "
                         f"positions), got model {model.name!r}")
    image = model.inputs[0]
    positions = TakeBatchOf(name="positions")([neck.output[1], image])
    return DeblurModel(image, [model.outputs[0], positions], name=model.name)
