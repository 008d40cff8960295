"""Per-architecture tiling defaults: the default overlap, the minimum-tile warning, the CLI note."""

import re
import warnings

import keras
import numpy as np
import pytest

from tfdeblur import models
from tfdeblur._tiling import FALLBACK_OVERLAP, TILING_DEFAULTS
from tfdeblur.cli import main
from tfdeblur.data.io import write_image
from tfdeblur.inference import TilingWarning, deblur_image, load_model, tiling_defaults
from tfdeblur.models._padding import CropTo, PadToMultiple

NON_LOCAL = sorted(a for a, d in TILING_DEFAULTS.items() if d.non_local and d.min_tile)


def _model(architecture=None, kernel=1):
    """A 1x1 (pointwise) or k x k convolution; ``architecture`` names it as the networks do."""
    x = keras.Input((None, None, 3))
    h = x if architecture is None else PadToMultiple(1, 1, model_name=architecture)(x)
    y = keras.layers.Conv2D(3, kernel, padding="same", kernel_initializer="orthogonal")(h)
    return keras.Model(x, keras.layers.Activation("sigmoid")(y))


@pytest.mark.parametrize("name, config", [("lmfn", {"width": 8, "num_blocks": 1}),
                                          ("svdn", {"width": 8}), ("svrnn", {"width": 8})])
def test_the_architecture_is_read_from_the_network(name, config):
    assert tiling_defaults(models.build(name, **config)) == TILING_DEFAULTS[name]


def test_a_saved_network_keeps_its_architecture(tmp_path):
    models.build("svdn", width=8).save(tmp_path / "svdn.keras")
    assert tiling_defaults(load_model(tmp_path / "svdn.keras")).architecture == "svdn"


def test_other_models_get_the_fallback_overlap_and_no_minimum(rng):
    d = tiling_defaults(_model())
    assert (d.architecture, d.overlap, d.min_tile) == (None, FALLBACK_OVERLAP, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TilingWarning)
        deblur_image(_model(), rng.uniform(0, 1, (40, 40, 3)), tile=8)


def test_every_non_local_architecture_has_a_reason_and_the_local_one_none():
    assert {a for a, d in TILING_DEFAULTS.items() if d.non_local} == {"lmfn", "svrnn"}
    assert TILING_DEFAULTS["svdn"].non_local is None
    for d in TILING_DEFAULTS.values():
        assert d.min_tile is None or d.min_tile > 2 * d.overlap  # the default overlap fits


@pytest.mark.parametrize("architecture", NON_LOCAL)
def test_a_tile_below_the_minimum_warns_and_one_at_or_above_it_does_not(architecture, rng):
    minimum = TILING_DEFAULTS[architecture].min_tile
    model = _model(architecture)
    img = rng.uniform(0, 1, (minimum + 24, minimum + 40, 3)).astype(np.float32)
    with pytest.warns(TilingWarning, match=f"tile {minimum - 8} is below the minimum of "
                                           f"{minimum} for {architecture.upper()}"):
        deblur_image(model, img, tile=minimum - 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TilingWarning)
        deblur_image(model, img, tile=minimum)
        deblur_image(model, img, tile=minimum + 16)
        # Not tiled at all: the image fits in one tile.
        deblur_image(model, img[:minimum - 8, :minimum - 8], tile=minimum - 8)


@pytest.mark.parametrize("architecture", [None, *sorted(TILING_DEFAULTS)])
def test_the_models_default_overlap_is_used_when_none_is_given(architecture, rng):
    overlap = tiling_defaults(_model(architecture)).overlap
    model = _model(architecture, kernel=3)  # seams depend on the overlap
    tile = 2 * overlap + 20
    img = rng.uniform(0, 1, (2 * tile + 7, 2 * tile + 11, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TilingWarning)
        default = deblur_image(model, img, tile=tile)
        np.testing.assert_array_equal(default, deblur_image(model, img, tile=tile,
                                                            overlap=overlap))
        assert not np.allclose(default, deblur_image(model, img, tile=tile,
                                                     overlap=overlap // 2), atol=1e-4)
        # A tile too small for the default overlap gets the largest that fits.
        small = deblur_image(model, img, tile=overlap + 1)
        np.testing.assert_array_equal(small, deblur_image(model, img, tile=overlap + 1,
                                                          overlap=overlap // 2))


@pytest.mark.parametrize("architecture", [None, *sorted(TILING_DEFAULTS)])
def test_a_pointwise_model_tiled_with_the_default_overlap_equals_whole(architecture, rng):
    model = _model(architecture)
    img = rng.uniform(0, 1, (71, 97, 3)).astype(np.float32)
    whole = deblur_image(model, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TilingWarning)
        for tile in (16, 40):
            np.testing.assert_allclose(deblur_image(model, img, tile=tile, batch_size=3), whole,
                                       rtol=1e-6, atol=1e-6)


def test_tiles_at_the_bottom_and_right_see_the_border_the_whole_image_run_sees(rng):
    # A network that pads to a multiple of 16: whole, the image is reflect-padded at the
    # bottom and right; the tiles there must be cut from the same padded image.
    x = keras.Input((None, None, 3))
    h = PadToMultiple(16, 16, model_name="test")(x)
    for _ in range(3):  # receptive field radius 6, below the overlap
        h = keras.layers.Conv2D(3, 5, padding="same", activation="sigmoid")(h)
    model = keras.Model(x, CropTo()([h, x]))
    img = rng.uniform(0, 1, (75, 93, 3)).astype(np.float32)  # not multiples of 16
    whole = deblur_image(model, img)
    tiled = deblur_image(model, img, tile=48, overlap=16)
    # Rows 55-74 and columns 84-92 lie in one tile only (padded to 80x96, tiles start at
    # rows 0, 32 and columns 0, 32, 48), more than the receptive field from its edges.
    np.testing.assert_allclose(tiled[55:, 84:], whole[55:, 84:], atol=1e-5)


def test_deblur_help_names_the_non_local_networks(capsys):
    with pytest.raises(SystemExit):
        main(["deblur", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "LMFN (ALFM attends over the whole feature map" in text
    assert "SVRNN (its spatial recurrences run across the whole image" in text
    assert "Local: SVDN" in text
    for d in TILING_DEFAULTS.values():
        assert f"{d.architecture.upper()} {d.overlap}" in text  # --overlap's defaults


@pytest.mark.parametrize("architecture", NON_LOCAL)
def test_the_cli_notes_a_small_tile_once_before_the_work(architecture, tmp_path, capsys):
    minimum = TILING_DEFAULTS[architecture].min_tile
    _model(architecture).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, rng.uniform(0, 1, (minimum + 8, minimum + 8, 3)))
    inputs = [str(tmp_path / "m.keras"), str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main(["deblur", "-m", *inputs, "-o", str(tmp_path / "small"), "-q",
                 "--tile", str(minimum - 8)]) == 0
    err = capsys.readouterr().err
    notes = re.findall(r"^tfdeblur deblur: warning: tile .*$", err, re.M)
    assert len(notes) == 1 and f"below the minimum of {minimum}" in notes[0], err
    assert err.strip() == notes[0]  # one line, and no Python warning besides
    assert main(["deblur", "-m", *inputs, "-o", str(tmp_path / "large"), "-q",
                 "--tile", str(minimum)]) == 0
    assert "warning" not in capsys.readouterr().err
