"""Shared test fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips when the folder is absent (a user's checkout)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real-image folder {SHARED_DATA} is absent (only in the dev/CI workspace)")
    return SHARED_DATA


def implementations():
    """The implementations to test: portable always, compiled when it loads."""
    from tfdeblur.ops import compiled_available

    impls = ["portable"]
    if compiled_available():
        impls.append("compiled")
    return impls
