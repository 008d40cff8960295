"""SpatialRNN Keras layer: shapes, serialisation, both implementations."""

import keras
import numpy as np
import pytest

from tests.conftest import implementations
from tfdeblur.layers import SpatialRNN


def _model(impl):
    feats = keras.Input((None, None, 3))
    gates = keras.Input((None, None, 12))
    return keras.Model([feats, gates], SpatialRNN(implementation=impl)([feats, gates]))


@pytest.mark.parametrize("impl", implementations())
def test_round_trip_and_output(tmp_path, rng, impl):
    model = _model(impl)
    x = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    g = np.tanh(rng.standard_normal((2, 5, 7, 12))).astype(np.float32)
    y = model([x, g]).numpy()
    assert y.shape == (2, 5, 7, 12)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], SpatialRNN)
    assert loaded.layers[-1].implementation == impl
    np.testing.assert_array_equal(loaded([x, g]).numpy(), y)


def test_implementations_agree(rng):
    x = rng.standard_normal((1, 6, 4, 3)).astype(np.float32)
    g = np.tanh(rng.standard_normal((1, 6, 4, 12))).astype(np.float32)
    outs = [_model(i)([x, g]).numpy() for i in implementations()]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)


def test_config_and_errors():
    layer = SpatialRNN(implementation="portable", name="rnn")
    assert SpatialRNN.from_config(layer.get_config()).implementation == "portable"
    with pytest.raises(ValueError, match="implementation must be"):
        SpatialRNN(implementation="gpu")
    with pytest.raises(ValueError, match="gates must have 4 x 3 = 12 channels"):
        SpatialRNN()([keras.Input((4, 4, 3)), keras.Input((4, 4, 8))])
    with pytest.raises(ValueError, match="list"):
        SpatialRNN()(keras.Input((4, 4, 3)))


def test_xla_policy_follows_implementation():
    # Keras's jit_compile="auto" must not pick XLA for the compiled custom op.
    assert SpatialRNN(implementation="portable").supports_jit
    if "compiled" in implementations():
        assert not SpatialRNN(implementation="auto").supports_jit
        assert not SpatialRNN(implementation="compiled").supports_jit
