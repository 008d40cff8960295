"""SVRNN model: paper configuration, reference forward, the shared model checks, VGG16 init."""

import functools

import h5py
import keras
import numpy as np
import pytest

import tfdeblur.models
from tests.conftest import implementations
from tests.layers import nets_reference as ref
from tests.models import model_checks as mc
from tfdeblur.layers.svrnn_blocks import VGG16_ENCODER_LAYERS
from tfdeblur.models.svrnn import MIN_SIZE, PAPER_PARAMETERS
from tfdeblur.models.vgg16_init import init_from_vgg16, load_vgg16_convs

# Every part of the network, at widths that run in a fraction of a second on CPU.
TINY = dict(width=4, weight_width=2, num_rnns=2)
build = functools.partial(tfdeblur.models.build, "svrnn")


def tiny(**kw):
    keras.utils.set_random_seed(kw.pop("seed", 0))
    return build(**{**TINY, **kw})


def _weights(model):
    def kb(layer):
        return tuple(np.asarray(w) for w in layer.get_weights())
    wg = model.get_layer("weight_generation")
    out = {n: kb(model.get_layer(n)) for n in ("conv1", "conv2", "conv21", "conv22")}
    out.update({f"conv{i}": kb(getattr(wg, f"conv{i}")) for i in range(3, 17)})
    out["fusions"] = [kb(c) for c in model.get_layer("rnn_deconvolution").fusions]
    return out


def test_paper_configuration_parameter_count():
    model = build()
    n = mc.assert_param_count(model, PAPER_PARAMETERS)
    assert n == 9_227_027  # the count stated in the builder's docstring
    assert abs(4 * n / 1e6 - 37.1) / 37.1 < 0.10  # paper Table 3: 37.1 MB
    wg = model.get_layer("weight_generation")
    assert wg.conv16.kernel.shape[-1] == 512  # 4 RNNs x 4 directions x 32
    assert model.get_layer("conv1").kernel.shape == (11, 11, 3, 16)
    assert model.get_layer("conv2").kernel.shape == (7, 7, 16, 32)
    assert model.get_layer("conv21").kernel.shape == (9, 9, 64, 16)
    assert model.get_layer("conv22").kernel.shape == (5, 5, 32, 3)
    assert model.get_layer("pad").multiple == 8 and model.get_layer("pad").min_size == MIN_SIZE


@pytest.mark.parametrize("impl", implementations())
@pytest.mark.parametrize("shape", [(2, 16, 24), (1, 13, 9), (1, 8, 8)])
def test_forward_matches_reference(rng, impl, shape):
    model = tiny(implementation=impl)
    for v in model.weights:  # larger than Xavier so every path matters
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    image = rng.uniform(0, 1, (*shape, 3)).astype("float32")
    got = np.asarray(model(image))
    want = ref.svrnn(image, _weights(model))
    assert got.shape == image.shape
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_any_input_size_and_batch():
    # 8 is the minimum and a multiple of 8; 9 is one over it; odd, tall and wide sides.
    mc.assert_any_input_size(tiny(), [(8, 8), (9, 31), (17, 8), (23, 12)])


def test_rejects_too_small_input():
    assert MIN_SIZE == 8
    mc.assert_rejects_small_input(tiny(), MIN_SIZE)


def test_fixed_input_shape():
    mc.assert_fixed_input_shape(build, MIN_SIZE, **TINY)


def test_rejects_bad_input():
    mc.assert_rejects_bad_input(tiny(), (12, 10))


def test_out_of_range_values_are_processed():
    mc.assert_accepts_out_of_range(tiny(), (9, 12))


def test_other_channel_counts():
    model = tiny(input_shape=(None, None, 1))
    assert model(np.zeros((2, 9, 11, 1), "float32")).shape == (2, 9, 11, 1)


def test_save_load_identical(tmp_path):
    loaded = mc.assert_save_load_identical(tiny(), mc.smooth_images(2, 11, 14), tmp_path)
    assert loaded.get_layer("rnn_deconvolution").implementation == "auto"


def test_fit_lowers_loss():
    blurry, sharp = mc.blur_pairs(4, 16, 16)
    before, after = mc.assert_fit_lowers_loss(tiny(seed=1), blurry, sharp, learning_rate=3e-3)
    assert after < 0.7 * before, (before, after)


def test_compiled_and_portable_agree():
    mc.assert_implementations_agree(build, mc.smooth_images(2, 24, 17), atol=1e-4, **TINY)


def test_xla_only_without_compiled_ops():
    mc.assert_xla_policy(build, True, (16, 12), **TINY)


# --------------------------------------------------------------------------- VGG16 init

def _write_legacy_vgg16_notop(path, rng):
    """A file in the layout of Keras's released VGG16 notop .h5 (random values)."""
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    convs = [layer for layer in vgg.layers if layer.weights]
    values = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in vgg.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in vgg.layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/kernel:0", f"{layer.name}/bias:0"] if layer in convs else []
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, v in zip(names, layer.weights, strict=True):
                data = rng.normal(0, 0.05, v.shape).astype("float32")
                g.create_dataset(n, data=data)
                values[n] = data
    return values


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    values = _write_legacy_vgg16_notop(str(path), np.random.default_rng(7))
    return str(path), values


def test_vgg16_init_copies_conv4_to_conv11(vgg16_file):
    path, values = vgg16_file
    model = tfdeblur.models.build("svrnn", width=4, num_rnns=1, vgg16_weights=path)
    wg = model.get_layer("weight_generation")
    for i, vgg_name in enumerate(VGG16_ENCODER_LAYERS[1:], start=4):
        kernel, bias = getattr(wg, f"conv{i}").get_weights()
        np.testing.assert_array_equal(kernel, values[f"{vgg_name}/kernel:0"])
        np.testing.assert_array_equal(bias, values[f"{vgg_name}/bias:0"])


def test_vgg16_init_folds_preprocessing_into_conv3(vgg16_file, rng):
    path, values = vgg16_file
    model = tfdeblur.models.build("svrnn", width=4, num_rnns=1, vgg16_weights=path)
    conv3 = model.get_layer("weight_generation").conv3
    image = rng.uniform(0, 1, (1, 10, 12, 3)).astype("float32")
    # VGG16 on its own preprocessing of the same image: BGR, [0, 255], minus the mean.
    vgg_in = keras.applications.vgg16.preprocess_input(255.0 * image.astype("float64"))
    want = ref.relu(ref.conv2d(vgg_in, values["block1_conv1/kernel:0"],
                               values["block1_conv1/bias:0"]))
    got = np.asarray(conv3(image))
    # Zero padding differs at the border (zero image vs zero after mean removal).
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)


def test_vgg16_init_without_folding_copies_conv3(vgg16_file):
    path, values = vgg16_file
    model = tiny(weight_width=64)
    init_from_vgg16(model, path, match_preprocessing=False)
    kernel, _ = model.get_layer("weight_generation").conv3.get_weights()
    np.testing.assert_array_equal(kernel, values["block1_conv1/kernel:0"])


def test_vgg16_keras3_weights_file(tmp_path, rng):
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    kernel = rng.normal(0, 0.05, vgg.get_layer("block3_conv2").kernel.shape).astype("float32")
    vgg.get_layer("block3_conv2").kernel.assign(kernel)
    path = str(tmp_path / "vgg16_notop.weights.h5")
    vgg.save_weights(path)
    convs = load_vgg16_convs(path)
    assert [k.shape for k, _ in convs][0] == (3, 3, 3, 64) and len(convs) == 9
    np.testing.assert_array_equal(convs[5][0], kernel)  # block3_conv2 -> conv8


def test_vgg16_missing_or_bad_file_is_a_clear_error(tmp_path, vgg16_file):
    with pytest.raises(FileNotFoundError, match="vgg16_weights"):
        tfdeblur.models.build("svrnn", width=4, num_rnns=1,
                              vgg16_weights=str(tmp_path / "nope.h5"))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="vgg16_weights"):
        tfdeblur.models.build("svrnn", width=4, num_rnns=1, vgg16_weights=str(bad))
    with pytest.raises(ValueError, match="weight_width=64"):
        tfdeblur.models.build("svrnn", **TINY, vgg16_weights=vgg16_file[0])


def test_without_vgg16_file_xavier_and_no_download(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    keras.utils.set_random_seed(3)
    model = tfdeblur.models.build("svrnn", width=8, num_rnns=1)
    conv10 = model.get_layer("weight_generation").conv10
    kernel, bias = (np.asarray(w) for w in conv10.get_weights())
    fan_in, fan_out = 9 * 256, 9 * 512
    limit = np.sqrt(6 / (fan_in + fan_out))  # glorot (Xavier) uniform
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.02 * limit
    assert not bias.any()
