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
