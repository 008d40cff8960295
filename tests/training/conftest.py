"""Tiny images, folders and configs for the training tests (nothing from ../shared needed)."""

import copy
import os

import numpy as np
import pytest

from tfdeblur.data import write_image


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like image: low-frequency colour fields plus a few sharp-edged rectangles."""
    import cv2

    small = rng.random((4, 4, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(3):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        img[y:y + rng.integers(3, 12), x:x + rng.integers(3, 12)] = rng.random(3)
    return np.clip(img, 0.0, 1.0)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> str:
    """Eight sharp 40x48 PNG photos."""
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("photos")
    for i in range(8):
        write_image(str(folder / f"photo{i}.png"), _smooth_image(rng, 40, 48))
    return str(folder)


@pytest.fixture(scope="session")
def pair_dir(tmp_path_factory) -> str:
    """A flat {blur,sharp} folder of three 24x24 pairs (the blurry ones box-filtered)."""
    import cv2

    rng = np.random.default_rng(6)
    root = tmp_path_factory.mktemp("pairs")
    os.makedirs(root / "blur")
    os.makedirs(root / "sharp")
    for i in range(3):
        sharp = _smooth_image(rng, 24, 24)
        write_image(str(root / "sharp" / f"{i}.png"), sharp)
        write_image(str(root / "blur" / f"{i}.png"), cv2.blur(sharp, (5, 1)))
    return str(root)


TINY = {
    "name": "tiny",
    "seed": 3,
    # The cheapest registered network to build and trace (training tests run many).
    "model": {"name": "svdn", "width": 2, "dilation_rates": [1], "kernel_size": 3,
              "offset_hidden": 2, "head_width": 2},
    "loss": {"name": "pixel"},
    "metrics": ["psnr"],
    "optimizer": {"learning_rate": 3e-3, "weight_decay": 1e-4, "weight_decay_mode": "l2"},
    "data": {
        "train": {"type": "synthetic", "root": None, "patch_size": 24, "batch_size": 2,
                  "blur": {"max_length": 3.0, "foreground_max_length": 3.0}},
        "validation": {"pairs": {"type": "paired", "root": None, "batch_size": 3}},
    },
    "train": {"steps": 6, "steps_per_epoch": 4, "checkpoint_every": 2, "keep_checkpoints": 3,
              "monitor": "val_pairs_psnr", "verbose": 0},
}


@pytest.fixture
def tiny_raw(photo_dir, pair_dir) -> dict:
    """An unresolved tiny SVDN configuration (pixel loss, 24 x 24 patches, batch 2, 6 steps)."""
    raw = copy.deepcopy(TINY)
    raw["data"]["train"]["root"] = photo_dir
    raw["data"]["validation"]["pairs"]["root"] = pair_dir
    return raw
