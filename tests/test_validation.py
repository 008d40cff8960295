"""One bad value, one error: every constructor checks its arguments through tfdeblur._validation."""


import numpy as np
import pytest

from tfdeblur import _validation as v
from tfdeblur.layers import (
    DilatedBackbone,
    DownBlock,
    EnhancedSpatialAttention,
    FeatureDeconvolution,
    ModulatedDeformConv2D,
    PixelShuffle,
    ReconstructionHead,
    ResidualBlock,
    ResidualFeatureDistillationBlock,
    RNNDeconvolution,
    SpatialRNN,
    WeightGenerationNetwork,
)
from tfdeblur.models._padding import PadToMultiple
from tfdeblur.models.lmfn import lmfn
from tfdeblur.models.svdn import svdn
from tfdeblur.models.svrnn import svrnn

# (owner in the message, constructor, other arguments, argument, minimum, None allowed,
#  integer or tuple of 2)
INT_ARGUMENTS = [
    ("DownBlock", DownBlock, {}, "filters", 1, False, False),
    ("ResidualBlock", ResidualBlock, {}, "kernel_size", 1, False, True),
    ("PixelShuffle", PixelShuffle, {}, "scale", 1, False, False),
    ("EnhancedSpatialAttention", EnhancedSpatialAttention, {}, "channels", 1, False, False),
    ("ResidualFeatureDistillationBlock", ResidualFeatureDistillationBlock, {},
     "distilled_channels", 1, True, False),
    ("ResidualFeatureDistillationBlock", ResidualFeatureDistillationBlock, {},
     "attention_channels", 1, True, False),
    ("WeightGenerationNetwork", WeightGenerationNetwork, {}, "width", 1, False, False),
    ("WeightGenerationNetwork", WeightGenerationNetwork, {}, "gate_channels", 1, False, False),
    ("RNNDeconvolution", RNNDeconvolution, {}, "filters", 1, False, False),
    ("RNNDeconvolution", RNNDeconvolution, {}, "num_rnns", 1, False, False),
    ("DilatedBackbone", DilatedBackbone, {}, "width", 1, False, False),
    ("DilatedBackbone", DilatedBackbone, {}, "convs_per_rate", 1, False, False),
    ("FeatureDeconvolution", FeatureDeconvolution, {}, "filters", 1, False, False),
    ("FeatureDeconvolution", FeatureDeconvolution, {}, "kernel_size", 1, False, False),
    ("FeatureDeconvolution", FeatureDeconvolution, {}, "offset_hidden", 1, True, False),
    ("ReconstructionHead", ReconstructionHead, {}, "filters", 1, False, False),
    ("ReconstructionHead", ReconstructionHead, {}, "out_channels", 1, False, False),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"kernel_size": 3}, "filters", 1, False,
     False),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4}, "kernel_size", 1, False,
     True),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "strides", 1, False, True),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "dilation_rate", 1, False, True),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "groups", 1, False, False),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "deformable_groups", 1, False, False),
    ("PadToMultiple", PadToMultiple, {"min_size": 8}, "multiple", 1, False, False),
    ("PadToMultiple", PadToMultiple, {"multiple": 1}, "min_size", 1, False, False),
    ("lmfn", lmfn, {}, "width", 4, False, False),
    ("lmfn", lmfn, {}, "num_scales", 1, False, False),
    ("lmfn", lmfn, {}, "num_blocks", 1, False, False),
    ("lmfn", lmfn, {}, "decoder_width", 4, True, False),
    ("lmfn", lmfn, {}, "resblock_kernel", 1, False, False),
    ("svrnn", svrnn, {}, "width", 1, False, False),
    ("svrnn", svrnn, {}, "weight_width", 1, False, False),
    ("svrnn", svrnn, {}, "num_rnns", 1, False, False),
    ("svdn", svdn, {}, "width", 1, False, False),
    ("svdn", svdn, {}, "convs_per_rate", 1, False, False),
    ("svdn", svdn, {}, "kernel_size", 1, False, False),
    ("svdn", svdn, {}, "offset_hidden", 1, True, False),
    ("svdn", svdn, {}, "head_width", 1, True, False),
]
BAD_INTS = [3.7, 8.0, 0, -1, True, False, "3", np.float32(3.0), [2], None]


def _int_cases():
    for owner, make, base, arg, minimum, allow_none, pair in INT_ARGUMENTS:
        bad_values = [b for b in BAD_INTS if not (b is None and allow_none)
                      and not (pair and isinstance(b, list))]
        if minimum > 1:
            bad_values.append(minimum - 1)
        for bad in bad_values:
            yield pytest.param(owner, make, base, arg, minimum, allow_none, pair, bad,
                               id=f"{owner}-{arg}-{bad!r}")


@pytest.mark.parametrize("owner,make,base,arg,minimum,allow_none,pair,bad", list(_int_cases()))
def test_same_bad_integer_same_error_everywhere(owner, make, base, arg, minimum, allow_none,
                                                pair, bad):
    expected = (f"{owner}: {arg} must be an integer >= {minimum}"
                + (" or None" if allow_none else "")
                + (" or a tuple of 2 of them" if pair else "")
                + f", got {bad!r}")
    with pytest.raises(ValueError) as info:
        make(**base, **{arg: bad})
    assert str(info.value) == expected


LAYER_INT_ARGUMENTS = [case for case in INT_ARGUMENTS if case[0] not in ("lmfn", "svrnn", "svdn")]


@pytest.mark.parametrize("owner,make,base,arg,minimum,allow_none,pair",
                         LAYER_INT_ARGUMENTS, ids=[f"{c[0]}-{c[3]}" for c in LAYER_INT_ARGUMENTS])
def test_numpy_integers_are_integers_and_stored_as_python_ints(owner, make, base, arg, minimum,
                                                               allow_none, pair):
    good = minimum + 3
    layer = make(**base, **{arg: np.int64(good)})
    stored = layer.get_config()[arg]
    assert stored == ((good, good) if pair else good)
    for value in (stored if pair else (stored,)):
        assert type(value) is int


def test_pairs_keep_their_order_and_accept_lists():
    assert ResidualBlock((3, 5)).kernel_size == (3, 5)
    assert ResidualBlock([5, 3]).kernel_size == (5, 3)
    with pytest.raises(ValueError, match=r"^ResidualBlock: kernel_size must be an integer >= 1 "
                                         r"or a tuple of 2 of them, got \(3, 0\)$"):
        ResidualBlock((3, 0))
    with pytest.raises(ValueError, match=r"got \(3, 3, 3\)$"):
        ResidualBlock((3, 3, 3))


IMPLEMENTATION_OWNERS = [
    ("SpatialRNN", SpatialRNN, {}),
    ("RNNDeconvolution", RNNDeconvolution, {}),
    ("FeatureDeconvolution", FeatureDeconvolution, {}),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3}),
    ("lmfn", lmfn, {}),
    ("svrnn", svrnn, {}),
    ("svdn", svdn, {}),
]


@pytest.mark.parametrize("bad", ["fast", "Compiled", None, 1])
@pytest.mark.parametrize("owner,make,base", IMPLEMENTATION_OWNERS,
                         ids=[c[0] for c in IMPLEMENTATION_OWNERS])
def test_same_bad_implementation_same_error_everywhere(owner, make, base, bad):
    with pytest.raises(ValueError) as info:
        make(**base, implementation=bad)
    assert str(info.value) == (f"{owner}: implementation must be one of ('auto', 'compiled', "
                               f"'portable'), got {bad!r}")


BOOL_ARGUMENTS = [
    ("lmfn", lmfn, {}, "identity_init"),
    ("lmfn", lmfn, {}, "global_residual"),
    ("svdn", svdn, {}, "identity_init"),
    ("ReconstructionHead", ReconstructionHead, {}, "zero_init"),
    ("FeatureDeconvolution", FeatureDeconvolution, {}, "return_positions"),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "use_bias"),
    ("ModulatedDeformConv2D", ModulatedDeformConv2D, {"filters": 4, "kernel_size": 3},
     "return_positions"),
]


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
@pytest.mark.parametrize("owner,make,base,arg", BOOL_ARGUMENTS,
                         ids=[f"{c[0]}-{c[3]}" for c in BOOL_ARGUMENTS])
def test_same_bad_flag_same_error_everywhere(owner, make, base, arg, bad):
    with pytest.raises(ValueError) as info:
        make(**base, **{arg: bad})
    assert str(info.value) == f"{owner}: {arg} must be True or False, got {bad!r}"


@pytest.mark.parametrize("make,owner,kwargs,want", [
    (DownBlock, "DownBlock", {"filters": 4}, "a finite number"),
    (RNNDeconvolution, "RNNDeconvolution", {}, "a finite number"),
    (svrnn, "svrnn", {}, "a finite number"),
    (ResidualFeatureDistillationBlock, "ResidualFeatureDistillationBlock", {},
     "a number in [0.0, 1.0]"),
])
@pytest.mark.parametrize("bad", ["0.1", None, True, float("nan"), float("inf")])
def test_bad_slopes(make, owner, kwargs, want, bad):
    with pytest.raises(ValueError) as info:
        make(**kwargs, negative_slope=bad)
    assert str(info.value) == f"{owner}: negative_slope must be {want}, got {bad!r}"


def test_slope_range_and_numpy_floats():
    assert DownBlock(4, negative_slope=np.float32(0.25)).get_config()["negative_slope"] == 0.25
    with pytest.raises(ValueError, match=r"must be a number in \[0.0, 1.0\], got 1.5$"):
        ResidualFeatureDistillationBlock(negative_slope=1.5)


@pytest.mark.parametrize("bad", [(), (1, 0), (1, 2.0), "124", 4, (True, 2), None])
def test_dilation_rates_same_error_in_layer_and_model(bad):
    for owner, make in (("DilatedBackbone", DilatedBackbone), ("svdn", svdn)):
        with pytest.raises(ValueError) as info:
            make(dilation_rates=bad)
        assert str(info.value) == (f"{owner}: dilation_rates must be a non-empty sequence of "
                                   f"integers >= 1, got {bad!r}")


@pytest.mark.parametrize("bad", [(None, None, None), (None, 3), (0, 8, 3), (8.0, 8, 3), 3,
                                 (None, None, True)])
def test_input_shape_same_error_in_every_model(bad):
    for owner, make in (("lmfn", lmfn), ("svrnn", svrnn), ("svdn", svdn)):
        with pytest.raises(ValueError) as info:
            make(input_shape=bad)
        assert str(info.value).startswith(f"{owner}: input_shape must be (H, W, C)")
        assert str(info.value).endswith(f", got {bad!r}")


def test_choice_and_layer_inputs():
    with pytest.raises(ValueError, match=r"^ModulatedDeformConv2D: offset_mode must be one of "
                                         r"\('internal', 'external'\), got 'predicted'$"):
        ModulatedDeformConv2D(4, 3, offset_mode="predicted")
    with pytest.raises(ValueError, match=r"^DownBlock: input must be a rank-4 \[N, H, W, C\] "
                                         r"tensor, got shape \(None, 8, 4\)$"):
        DownBlock(4).build((None, 8, 4))
    with pytest.raises(ValueError, match=r"^ResidualBlock: the channel dimension \(last axis\) "
                                         r"of input must be known"):
        ResidualBlock().build((None, 8, 8, None))
    assert v.check_image_input((None, None, None, 5), "X") == 5
    with pytest.raises(ValueError, match=r"^X: gates must have 6 channels \(last axis\)"):
        v.check_image_input((1, 2, 2, 5), "X", name="gates", channels=6)


def test_is_int():
    assert v.is_int(3) and v.is_int(np.int8(3)) and v.is_int(np.uint64(3))
    assert not any(v.is_int(x) for x in (True, np.bool_(True), 3.0, np.float64(3), "3", None))


def test_tensor_checks_name_owner_and_argument():
    import tensorflow as tf

    with pytest.raises(ValueError, match=r"^psnr: a must be a rank-4 \[N, H, W, C\] tensor, "
                                         r"got shape \(2, 3\)$"):
        v.check_rank(tf.zeros([2, 3]), 4, "a", owner="psnr")
    with pytest.raises(ValueError, match=r"^x must be a rank-4 \[N, H, W, C\] tensor"):
        v.check_rank(np.zeros((2, 3)), 4, "x")
    v.check_rank(tf.TensorSpec(None).shape, 4, "x")  # unknown rank passes
    with pytest.raises(ValueError, match="x must be float16, bfloat16, float32 or float64, "
                                         "got int32"):
        v.as_float_tensor(np.zeros(3, np.int32), "x")
    assert v.as_float_tensor(np.zeros(3), "x").dtype == tf.float64


# ---------------------------------------------------------------------------
# Arguments outside the layers: data pipelines, evaluation, export, training
# helpers. The same bad values get the same message form.

def _dataset_options(**kwargs):
    from tfdeblur.data._pipeline import DatasetOptions

    return DatasetOptions.from_arguments(**kwargs)


def _evaluate(**kwargs):
    from tfdeblur.evaluation import evaluate

    return evaluate("unused", "/nonexistent/pairs", progress=False, **kwargs)


def _write_tfrecords(**kwargs):
    from tfdeblur.data.tfrecord import write_tfrecords

    return write_tfrecords("/nonexistent/pairs", "/nonexistent/out", progress=False, **kwargs)


def _calibration(**kwargs):
    from tfdeblur.export.tflite import calibration_images

    return calibration_images("/nonexistent/photos", (8, 8), 3, **kwargs)


def _checkpoint_manager(**kwargs):
    from tfdeblur.training.checkpoint import CheckpointManager

    return CheckpointManager("/nonexistent/run", create=False, **kwargs)


def _resumable(**kwargs):
    from tfdeblur.training.callbacks import ResumableCheckpoint

    return ResumableCheckpoint("/nonexistent/run", **kwargs)


def _tensorboard(**kwargs):
    from tfdeblur.training.callbacks import TensorBoard

    return TensorBoard("/nonexistent/tb", **kwargs)


def _psnr(**kwargs):
    from tfdeblur.metrics import psnr

    return psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)), **kwargs)


def _side_by_side(**kwargs):
    from tfdeblur.demo import side_by_side

    return side_by_side(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), **kwargs)


_POINTWISE = []


def _deblur_image(**kwargs):
    import keras

    from tfdeblur.inference import deblur_image

    if not _POINTWISE:
        x = keras.Input((None, None, 3))
        _POINTWISE.append(keras.Model(x, keras.layers.Conv2D(3, 1)(x)))
    return deblur_image(_POINTWISE[0], np.zeros((40, 40, 3), np.float32), **kwargs)


# (maker, argument, owner prefix, minimum (None: any integer), None allowed)
OTHER_INT_ARGUMENTS = [
    (_deblur_image, "tile", "", 1, True),
    (_deblur_image, "overlap", "", 0, True),
    (_deblur_image, "batch_size", "", 1, False),
    (_dataset_options, "seed", "", None, True),
    (_dataset_options, "batch_size", "", 1, True),
    (_dataset_options, "skip", "", 0, False),
    (_evaluate, "limit", "", 1, True),
    (_write_tfrecords, "shards", "", 1, True),
    (_calibration, "samples", "", 1, False),
    (_checkpoint_manager, "keep", "CheckpointManager: ", 1, False),
    (_resumable, "every", "ResumableCheckpoint: ", 1, False),
    (_tensorboard, "max_images", "TensorBoard: ", 0, False),
    (_psnr, "crop_border", "psnr: ", 0, False),
    (_side_by_side, "zoom", "", 1, False),
]
# How the argument is called in the message, where it differs from the keyword.
_MESSAGE_NAMES = {(_calibration, "samples"): "calibration_samples"}
OTHER_BAD = [3.7, 0, -1, True, "3", None]


def _other_int_cases():
    for make, arg, prefix, minimum, allow_none in OTHER_INT_ARGUMENTS:
        for bad in OTHER_BAD:
            if (bad is None and allow_none) or (
                    isinstance(bad, int) and not isinstance(bad, bool)
                    and (minimum is None or bad >= minimum)):
                continue
            yield pytest.param(make, arg, prefix, minimum, allow_none, bad,
                               id=f"{make.__name__}-{arg}-{bad!r}")


@pytest.mark.parametrize("make,arg,prefix,minimum,allow_none,bad", list(_other_int_cases()))
def test_same_bad_integer_same_error_outside_the_layers(make, arg, prefix, minimum,
                                                        allow_none, bad):
    name = _MESSAGE_NAMES.get((make, arg), arg)
    expected = (f"{prefix}{name} must be an integer"
                + ("" if minimum is None else f" >= {minimum}")
                + (" or None" if allow_none else "") + f", got {bad!r}")
    with pytest.raises(ValueError) as info:
        make(**{arg: bad})
    assert str(info.value) == expected


@pytest.mark.parametrize("bad", [3.7, 0, -1, "3", np.float32(2.0)])
def test_shuffle_is_a_flag_or_a_buffer_size(bad):
    assert _dataset_options(shuffle=True).shuffle == 0
    assert _dataset_options(shuffle=False).shuffle is None
    assert _dataset_options(shuffle=np.int64(5)).shuffle == 5
    with pytest.raises(ValueError) as info:
        _dataset_options(shuffle=bad)
    assert str(info.value) == f"shuffle must be True, False or an integer >= 1, got {bad!r}"


@pytest.mark.parametrize("flag", ["augment", "flip", "rotate", "with_flow", "repeat"])
@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_dataset_flags_are_bools(flag, bad):
    with pytest.raises(ValueError) as info:
        _dataset_options(**{flag: bad})
    assert str(info.value) == f"{flag} must be True or False, got {bad!r}"


@pytest.mark.parametrize("bad", [3.7, 0, -1, True, "3", (8, 3.7), (8, 0)])
def test_patch_size_same_error_in_pipeline_and_augmentation(bad):
    from tfdeblur.data.augment import random_crop

    expected = (f"patch_size must be an integer >= 1 or a tuple of 2 of them, got {bad!r}")
    for make in (lambda: _dataset_options(patch_size=bad),
                 lambda: random_crop(np.zeros((8, 8, 3), np.float32), bad, [1, 2])):
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value) == expected
    assert _dataset_options(patch_size=np.int64(6)).patch_size == (6, 6)


@pytest.fixture(scope="module")
def tiny_lmfn():
    return lmfn(width=4, num_scales=1, num_blocks=1)


@pytest.mark.parametrize("bad", [3.7, 0, -1, True, "3", None, (32, 3.7), (32, 0), (32, True),
                                 (32, 32, 3)])
def test_export_input_size(tiny_lmfn, tmp_path, bad):
    from tfdeblur.export import export_tflite

    with pytest.raises(ValueError) as info:
        export_tflite(tiny_lmfn, tmp_path / "x.tflite", input_size=bad)
    assert str(info.value) == f"input_size must be (H, W), two integers >= 1, got {bad!r}"
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize("bad", [(None, 3.7, 3), (0, None, 3), (None, True, None), (None, None),
                                 3])
def test_export_input_shape(tiny_lmfn, tmp_path, bad):
    from tfdeblur.export import export_saved_model

    with pytest.raises(ValueError) as info:
        export_saved_model(tiny_lmfn, tmp_path / "sm", input_shape=bad)
    assert str(info.value) == ("input_shape must be (H, W, C) with H, W and C positive ints or "
                               f"None, got {bad!r}")


@pytest.mark.parametrize("bad", ["fast", "Compiled", None, 1])
def test_resolve_implementation_same_error(bad):
    from tfdeblur.ops._loader import resolve_implementation

    with pytest.raises(ValueError) as info:
        resolve_implementation(bad)
    assert str(info.value) == ("implementation must be one of ('auto', 'compiled', 'portable'), "
                               f"got {bad!r}")
