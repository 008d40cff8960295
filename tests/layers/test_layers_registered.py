"""Every public layer and the model class load back from a .keras file and are documented."""

import keras
import pytest

import tfdeblur.layers
import tfdeblur.models
from tfdeblur.models._padding import CropTo, PadToMultiple
from tfdeblur.models.svdn import TakeBatchOf

CLASSES = [getattr(tfdeblur.layers, name) for name in tfdeblur.layers.__all__] + [
    PadToMultiple, CropTo, TakeBatchOf, tfdeblur.models.DeblurModel]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_registered_for_keras_files(cls):
    name = f"tfdeblur>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


@pytest.mark.parametrize("cls", [getattr(tfdeblur.layers, n) for n in tfdeblur.layers.__all__],
                         ids=lambda c: c.__name__)
def test_documented(cls):
    doc = " ".join((cls.__doc__ or "").split())
    summary = (cls.__doc__ or "").strip().split("\n")[0]
    assert summary.endswith(".") or summary.endswith(")"), f"{cls.__name__}: summary line"
    assert "Example:" in doc, f"{cls.__name__}: no Example"
    assert "et al." in doc, f"{cls.__name__}: no paper cited"
    assert "Input" in doc and "Output" in doc, f"{cls.__name__}: shapes not documented"
