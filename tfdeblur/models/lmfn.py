"""LMFN: lightweight multi-information fusion network (Zhang et al.)."""

from __future__ import annotations

import keras

from tfdeblur import _validation as v
from tfdeblur.layers.attention_fusion import AttentionChannelFusion, AttentionLayerFusion
from tfdeblur.layers.lmfn_blocks import DownBlock, PixelShuffle, ResidualBlock, UpsampleAdd
from tfdeblur.layers.rfdb import ESA_MIN_SIZE, ResidualFeatureDistillationBlock
from tfdeblur.models import register
from tfdeblur.models._base import DeblurModel
from tfdeblur.models._padding import CropTo, PadToMultiple

PAPER_PARAMETERS = 1_250_000
#: LMFN's Table 4: parameters (millions) with 1 to 6 RFDBs.
PAPER_TABLE4_PARAMETERS = {1: 1.15e6, 2: 1.18e6, 3: 1.22e6, 4: 1.25e6, 5: 1.28e6, 6: 1.31e6}


def default_decoder_width(width: int) -> int:
    """The decoder (RFDB) width for an encoder of ``width`` channels: ``7 * width // 16``.

    28 channels at the paper's 64: each RFDB then has ~30 k parameters, the
    increments of LMFN's Table 4 (see ``docs/models.md``). At least 4.
    """
    return max(4, 7 * width // 16)


def min_image_size(num_scales: int = 4) -> int:
    """Smallest height and width LMFN accepts with ``num_scales`` down-blocks.

    Inputs are reflect-padded to a multiple of ``2**num_scales``; the decoder
    runs at half the padded size and its spatial attention needs 15 pixels
    there. With the paper's four scales this is 17 (padded to 32).
    """
    multiple = 2 ** num_scales
    n = multiple
    while (-(-n // multiple) * multiple) // 2 < ESA_MIN_SIZE:
        n += 1
    return n


@register("lmfn")
def lmfn(width: int = 64, num_scales: int = 4, num_blocks: int = 4,
         decoder_width: int | None = None, resblock_kernel: int = 5,
         global_residual: bool = True, identity_init: bool = False,
         implementation: str = "auto", input_shape: tuple = (None, None, 3),
         name: str = "lmfn") -> keras.Model:
    """Builds LMFN, the lightweight multi-information fusion deblurring network.

    Zhang, Liu, Li, Qi, Xu, Kong, Wang, "Image deblurring based on lightweight
    multi-information fusion network" (sec. 3, Fig. 1): a multi-scale
    hierarchical fusion encoder and a decoder of residual feature
    distillation blocks with attention fusion. The defaults are the paper's
    configuration (1,265,360 parameters; paper: 1.25 M). The layout, the
    choices where the paper is silent and the input contract (any size of at
    least :func:`min_image_size`, any batch, float images in [0, 1]) are in
    ``docs/models.md``. Runs on any Keras backend.

    Args:
        width: encoder feature channels (paper: 64), at least 4.
        num_scales: number of down-blocks (paper: 4); the padding multiple is
            ``2**num_scales``.
        num_blocks: number of RFDBs in the decoder (paper: 4).
        decoder_width: channels of the RFDBs and attention fusion; default
            :func:`default_decoder_width` (28 at ``width=64``).
        resblock_kernel: kernel size of the encoder's residual blocks (5, as
            in DeepDeblur).
        global_residual: add the input to the reconstruction.
        identity_init: zero-initialise the reconstruction conv (kernel and
            bias), so the untrained model returns its input (needs
            ``global_residual``).
        implementation: ``"auto" | "compiled" | "portable"``, accepted so that
            all models share one interface; LMFN has no compiled op, so all
            three build the same network.
        input_shape: ``(H, W, C)``; ``None`` sides accept any size. The output
            has ``C`` channels as well.
        name: model name.

    Returns:
        A :class:`~tfdeblur.models.DeblurModel` mapping ``[N, H, W, C]`` to
        ``[N, H, W, C]``.

    Example:
        >>> model = lmfn()                       # the paper's network
        >>> small = lmfn(width=16, num_blocks=2) # a small variant for CPU
        >>> small(np.zeros((1, 40, 50, 3), "float32")).shape
        TensorShape([1, 40, 50, 3])
    """
    width = v.check_int(width, "width", minimum=4, owner="lmfn")
    num_scales = v.check_int(num_scales, "num_scales", owner="lmfn")
    num_blocks = v.check_int(num_blocks, "num_blocks", owner="lmfn")
    decoder_width = v.check_int(decoder_width, "decoder_width", minimum=4, owner="lmfn",
                                allow_none=True)
    if decoder_width is None:
        decoder_width = default_decoder_width(width)
    resblock_kernel = v.check_int(resblock_kernel, "resblock_kernel", owner="lmfn")
    global_residual = v.check_bool(global_residual, "global_residual", owner="lmfn")
    identity_init = v.check_bool(identity_init, "identity_init", owner="lmfn")
    if identity_init and not global_residual:
        raise ValueError("lmfn: identity_init=True needs global_residual=True (the zero "
                         "reconstruction then returns the input)")
    v.check_implementation(implementation, owner="lmfn")
    input_shape = v.check_input_shape(input_shape, owner="lmfn")
    channels = input_shape[-1]

    inputs = keras.Input(shape=tuple(input_shape), name="blurry")
    x = PadToMultiple(2 ** num_scales, min_image_size(num_scales), model_name="lmfn",
                      name="pad")(inputs)

    # MSHF encoder.
    h = keras.layers.Conv2D(width, 3, padding="same", name="shallow_conv")(x)
    scales = []
    for i in range(1, num_scales + 1):
        h = DownBlock(width, name=f"down{i}")(h)
        h = ResidualBlock(resblock_kernel, name=f"res{i}")(h)
        scales.append(h)
    fused = scales[-1]
    for i in range(num_scales - 1, 0, -1):
        fused = UpsampleAdd(name=f"fuse{i}")([fused, scales[i - 1]])

    # MFFD decoder.
    block_outputs = []
    d = fused
    if decoder_width != width:
        d = keras.layers.Conv2D(decoder_width, 1, name="decoder_in")(d)
    for i in range(1, num_blocks + 1):
        d = ResidualFeatureDistillationBlock(name=f"rfdb{i}")(d)
        block_outputs.append(d)
    layer_fused = AttentionLayerFusion(name="alfm")(block_outputs)
    channel_fused = AttentionChannelFusion(name="acfm")(block_outputs[-1])
    d = keras.layers.Concatenate(name="attention_concat")([layer_fused, channel_fused])
    d = keras.layers.Conv2D(decoder_width, 1, name="fusion_conv")(d)
    d = keras.layers.LeakyReLU(negative_slope=0.05, name="fusion_act")(d)
    d = keras.layers.Conv2D(width, 3, padding="same", name="decoder_conv")(d)
    d = keras.layers.Add(name="decoder_skip")([d, fused])
    zero = {"kernel_initializer": "zeros", "bias_initializer": "zeros"} if identity_init else {}
    d = keras.layers.Conv2D(channels * 4, 3, padding="same", name="reconstruction_conv",
                            **zero)(d)
    out = PixelShuffle(2, name="pixel_shuffle")(d)
    if global_residual:
        out = keras.layers.Add(name="global_residual")([x, out])
    out = CropTo(name="sharp")([out, inputs])
    return DeblurModel(inputs, out, name=name)
