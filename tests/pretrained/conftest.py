"""A folder of bundled models made in the test: a tiny untrained LMFN and its model card."""

import copy
import json
import shutil

import pytest

from tfdeblur import _api

CARD = {
    "name": "tiny",
    "description": "an untrained LMFN for tests",
    "architecture": "lmfn",
    "builder_config": {"width": 4, "num_blocks": 1},
    "parameters": 0,  # set from the model
    "training": {"config": "none", "steps": 0, "cpu_hours": 0.0,
                 "data": "none: untrained", "synthesis": {}},
    "validation": {
        "gopro_patches": {"psnr": 20.5, "ssim": 0.61, "blurry_psnr": 22.36},
        "kodak24_synthetic": {"psnr": 21.25, "ssim": 0.65, "blurry_psnr": 23.24},
    },
    "licence": {"weights": "Apache-2.0", "data": ["none"]},
}


def make_card(name: str, parameters: int, gopro_psnr: float = 20.5, **extra) -> dict:
    card = copy.deepcopy(CARD)
    card.update(name=name, parameters=parameters, **extra)
    card["validation"]["gopro_patches"]["psnr"] = gopro_psnr
    return card


def write_card(folder, name: str, card: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(card, indent=1))


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A tiny untrained LMFN saved as .keras: (path, model)."""
    from tfdeblur import models

    model = models.build("lmfn", width=4, num_blocks=1)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.keras"
    model.save(path)
    return path, model


@pytest.fixture
def bundled(tmp_path, tiny_model_file, monkeypatch):
    """A bundled-model folder with `tiny` (GoPro PSNR 20.5) and `tiny_better` (25.0),
    selected through $TFDEBLUR_PRETRAINED_DIR."""
    path, model = tiny_model_file
    folder = tmp_path / "pretrained"
    folder.mkdir()
    for name, psnr in (("tiny", 20.5), ("tiny_better", 25.0)):
        shutil.copy(path, folder / f"{name}.keras")
        write_card(folder, name, make_card(name, model.count_params(), psnr))
    monkeypatch.setenv("TFDEBLUR_PRETRAINED_DIR", str(folder))
    _api._load_cached.cache_clear()
    yield folder
    _api._load_cached.cache_clear()


@pytest.fixture
def none_bundled(tmp_path, monkeypatch):
    """An empty bundled-model folder, selected through $TFDEBLUR_PRETRAINED_DIR."""
    folder = tmp_path / "empty_pretrained"
    folder.mkdir()
    monkeypatch.setenv("TFDEBLUR_PRETRAINED_DIR", str(folder))
    return folder
