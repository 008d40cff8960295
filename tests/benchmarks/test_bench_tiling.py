"""benchmarks/bench_tiling.py --quick: a pointwise model tiles exactly, and every table prints."""

import importlib.util
import json
import os
import sys

import keras

from tests.conftest import ROOT
from tfdeblur.models._padding import PadToMultiple


def _bench():
    if "bench_tiling" not in sys.modules:
        path = os.path.join(ROOT, "benchmarks", "bench_tiling.py")
        spec = importlib.util.spec_from_file_location("bench_tiling", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_tiling"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_tiling"]


def test_quick_run_of_a_pointwise_model_finds_tiled_equal_to_whole(shared_data, tmp_path,
                                                                    capsys):
    x = keras.Input((None, None, 3))
    h = PadToMultiple(1, 1, model_name="svdn")(x)
    y = keras.layers.Conv2D(3, 1, kernel_initializer="orthogonal", activation="sigmoid")(h)
    keras.Model(x, y).save(tmp_path / "pointwise.keras")
    out = tmp_path / "tiling.json"
    assert _bench().main(["--quick", "--models", str(tmp_path / "pointwise.keras"),
                          "--data", shared_data, "--frame", "none", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "### pointwise.keras (svdn, 12 parameters)" in text
    assert "| pointwise.keras | svdn |" in text and "| none, 32 |" in text  # SVDN's defaults
    result = json.loads(out.read_text())["models"][0]
    assert [(r["tile"], r["overlap"]) for r in result["rows"]] == [(128, 16), (256, 16),
                                                                    (256, 64)]
    for row in result["rows"]:
        assert max(abs(d) for d in row["delta_db"]) < 1e-3 and row["max_diff_255"] < 1e-3
    assert result["suggestion"] == {"min_tile": 128, "overlap": 16}
