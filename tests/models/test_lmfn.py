"""LMFN as a Keras model: size, any input size, save/load, training, registry."""

import os

import cv2
import keras
import numpy as np
import pytest

import tfdeblur.models
from tests.models import model_checks as mc
from tfdeblur.layers import (
    AttentionChannelFusion,
    AttentionLayerFusion,
    ResidualFeatureDistillationBlock,
)
from tfdeblur.models.lmfn import PAPER_PARAMETERS, PAPER_TABLE4_PARAMETERS, lmfn, min_image_size

# Small enough for CPU tests, but with every part of the network.
TINY = dict(width=8, num_blocks=2)


def test_paper_configuration_size():
    model = tfdeblur.models.build("lmfn")
    n = mc.assert_param_count(model, PAPER_PARAMETERS)
    assert n == 1_265_360  # the count stated in the builder's docstring
    assert model.get_layer("decoder_in").filters == 28
    assert model.get_layer("res1").kernel_size == (5, 5)
    assert sum(isinstance(layer, ResidualFeatureDistillationBlock) for layer in model.layers) == 4
    assert sum(isinstance(layer, (AttentionLayerFusion, AttentionChannelFusion))
               for layer in model.layers) == 2
    assert model.get_layer("shallow_conv").filters == 64
    assert model.get_layer("down4").output.shape[-1] == 64


def test_layout_fits_every_table4_point():
    """LMFN Table 4: 1.15 / 1.18 / 1.22 / 1.25 / 1.28 / 1.31 M for 1-6 RFDBs; the
    default layout is within 2.0 % of each."""
    counts = {b: lmfn(num_blocks=b).count_params() for b in range(1, 7)}
    for b, paper in PAPER_TABLE4_PARAMETERS.items():
        assert abs(counts[b] / paper - 1) < 0.021, (b, counts[b], paper)
    per_block = [counts[b + 1] - counts[b] for b in range(1, 6)]
    assert all(28_000 < d < 33_000 for d in per_block), per_block  # ~30 k per RFDB


def test_first_layout_kept_as_a_config():
    """The first reading (64-channel RFDBs, 3x3 residual blocks) is the config
    lmfn_gopro_rfdb64: 1,278,748 parameters, off Table 4 by -30 % .. +22 %."""
    import json

    path = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs",
                        "lmfn_gopro_rfdb64.json")
    with open(path) as f:
        section = dict(json.load(f)["model"])
    model = tfdeblur.models.build(section.pop("name"), **section)
    assert model.count_params() == 1_278_748
    assert "decoder_in" not in [layer.name for layer in model.layers]
    one = lmfn(num_blocks=1, decoder_width=64, resblock_kernel=3).count_params()
    assert abs(one / PAPER_TABLE4_PARAMETERS[1] - 1) > 0.25


def test_identity_init_returns_the_input():
    x = mc.smooth_images(2, 19, 26)
    model = lmfn(**TINY, identity_init=True)
    np.testing.assert_array_equal(model(x).numpy(), x)
    assert np.abs(lmfn(**TINY)(x).numpy() - x).max() > 1e-3
    with pytest.raises(ValueError, match="identity_init"):
        lmfn(**TINY, identity_init=True, global_residual=False)
    with pytest.raises(ValueError, match="identity_init"):
        lmfn(**TINY, identity_init=1)


def test_registry_and_config():
    assert "lmfn" in tfdeblur.models.available()
    model = tfdeblur.models.build("lmfn", width=12, num_scales=3, num_blocks=3, name="small")
    assert isinstance(model, keras.Model) and model.name == "small"
    assert sum(isinstance(layer, ResidualFeatureDistillationBlock) for layer in model.layers) == 3
    assert model.get_layer("pad").multiple == 8
    assert model.get_layer("fusion_conv").filters == 5  # default_decoder_width(12)
    assert model.get_layer("decoder_conv").filters == 12


@pytest.mark.parametrize("num_scales,expected", [(1, 29), (2, 29), (3, 25), (4, 17), (5, 32)])
def test_min_image_size(num_scales, expected):
    assert min_image_size(num_scales) == expected


def test_any_input_size():
    # 17 is the minimum; 17, 33, 45 are not multiples of 16; 1 pixel above and
    # below a multiple; tall and wide.
    mc.assert_any_input_size(lmfn(**TINY), [(17, 17), (17, 33), (32, 20), (45, 18)])


def test_any_input_size_fewer_scales():
    mc.assert_any_input_size(lmfn(width=4, num_blocks=1, num_scales=2), [(29, 31), (30, 29)],
                             batch_sizes=(1,))


def test_rejects_too_small_input():
    mc.assert_rejects_small_input(lmfn(**TINY), 17)
    mc.assert_rejects_small_input(lmfn(width=4, num_blocks=1, num_scales=3), 25)


def test_fixed_input_shape():
    model = lmfn(**TINY, input_shape=(20, 36, 3))
    assert model.output_shape == (None, 20, 36, 3)
    mc.assert_fixed_input_shape(lmfn, 17, **TINY)


def test_rejects_bad_input():
    mc.assert_rejects_bad_input(lmfn(**TINY), (17, 20))


def test_out_of_range_values_are_processed():
    model = lmfn(**TINY)
    # With a zero reconstruction the global residual makes LMFN the identity:
    # out-of-range values come back unchanged, nothing is clipped.
    conv = model.get_layer("reconstruction_conv")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    np.testing.assert_array_equal(mc.assert_accepts_out_of_range(model, (18, 21)),
                                  mc.smooth_images(2, 18, 21) * 2.0 - 0.5)


def test_xla_allowed():
    # LMFN has no compiled op: Keras may use XLA (jit_compile="auto" on GPU).
    mc.assert_xla_policy(lmfn, False, (17, 18), width=4, num_blocks=1)


def test_other_channel_counts():
    model = lmfn(**TINY, input_shape=(None, None, 1))
    assert model(np.zeros((2, 19, 23, 1), "float32")).shape == (2, 19, 23, 1)


def test_global_residual_switch():
    with_skip = lmfn(**TINY)
    without = lmfn(**TINY, global_residual=False)
    without.set_weights(with_skip.get_weights())
    x = mc.smooth_images(1, 20, 24)
    np.testing.assert_allclose(with_skip(x).numpy() - without(x).numpy(), x, atol=1e-6)


def test_save_load_identical(tmp_path):
    model = lmfn(**TINY)
    # Non-zero attention scales, so the round trip covers their values too.
    model.get_layer("alfm").theta.assign(0.3)
    model.get_layer("acfm").alpha.assign(0.7)
    mc.assert_save_load_identical(model, mc.smooth_images(2, 23, 37), tmp_path)


@pytest.fixture(scope="module")
def compiled_tiny():
    """One compiled tiny LMFN for the training tests: its training step (about 10 s
    to trace on CPU) is traced once, as they all train on 4 x 32 x 32 batches."""
    keras.utils.set_random_seed(0)
    model = lmfn(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def test_fit_lowers_loss_on_synthetic_blur(compiled_tiny):
    blurry, sharp = mc.blur_pairs(4, 32, 32)
    mc.assert_fit_lowers_loss(compiled_tiny, blurry, sharp, compile=False)


def test_implementations_build_the_same_network():
    x = mc.smooth_images(1, 21, 30)
    mc.assert_implementations_agree(lmfn, x, atol=0.0, **TINY)
    auto = lmfn(implementation="auto", **TINY)
    portable = lmfn(implementation="portable", **TINY)
    portable.set_weights(auto.get_weights())
    np.testing.assert_array_equal(auto(x).numpy(), portable(x).numpy())


def test_real_photo_with_recorded_camera_shake(shared_data, compiled_tiny):
    """A few training steps on a real photo blurred by a recorded kernel, then a
    real blurry GoPro frame crop of odd size through the trained model."""
    photo = cv2.imread(os.path.join(shared_data, "photos_bsds500", sorted(
        os.listdir(os.path.join(shared_data, "photos_bsds500")))[0]))
    assert photo is not None
    sharp = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB).astype("float32") / 255.0
    kernel = np.load(os.path.join(shared_data, "levin09_kernels.npz"))["kernel1"]
    blurry = cv2.filter2D(sharp, -1, kernel, borderType=cv2.BORDER_REFLECT)
    crops = [(slice(r, r + 32), slice(c, c + 32))
             for r, c in ((0, 0), (100, 200), (200, 80), (280, 400))]
    x = np.stack([blurry[s] for s in crops])
    y = np.stack([sharp[s] for s in crops])
    model = compiled_tiny
    mc.assert_fit_lowers_loss(model, x, y, compile=False)

    frame = cv2.imread(os.path.join(shared_data, "gopro_blurry_720p.png"))
    assert frame is not None and frame.shape == (720, 1280, 3)
    crop = cv2.cvtColor(frame[301:378, 517:618], cv2.COLOR_BGR2RGB)[None] / np.float32(255)
    out = model(crop).numpy()
    assert out.shape == (1, 77, 101, 3) and np.isfinite(out).all()
