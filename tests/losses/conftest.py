"""A local VGG16 notop weights file with random values (nothing is downloaded)."""

import keras
import numpy as np
import pytest

from tests.losses.reference_losses import VGG16_LAYERS


@pytest.fixture(scope="session")
def vgg16_file(tmp_path_factory):
    """``(path, {layer: (kernel, bias)})`` of a random Keras VGG16 without top.

    Biases are random too (Keras initialises them to 0), so the reference
    checks the bias and the mean subtraction of the preprocessing.
    """
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(11)
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    weights = {}
    for name, kind in VGG16_LAYERS:
        if kind != "conv":
            continue
        layer = vgg.get_layer(name)
        kernel = np.asarray(layer.kernel)
        bias = rng.normal(0.0, 0.1, layer.bias.shape).astype("float32")
        layer.bias.assign(bias)
        weights[name] = (kernel, bias)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_notop.weights.h5"
    vgg.save_weights(str(path))
    return str(path), weights
