"""benchmarks/bench_quality.py: the classical baseline restores, and --quick prints every row."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tfdeblur import metrics
from tfdeblur.data import BlurConfig, read_image, synthesize_pair


def _bench():
    """The script as a module (benchmarks/ is not a package)."""
    if "bench_quality" not in sys.modules:
        path = os.path.join(ROOT, "benchmarks", "bench_quality.py")
        spec = importlib.util.spec_from_file_location("bench_quality", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_quality"] = module  # its dataclass looks itself up there
        spec.loader.exec_module(module)
    return sys.modules["bench_quality"]


def _uniform_pair(shared_data):
    """A Kodak crop blurred by one camera-shake kernel in linear light, with sensor noise."""
    config = BlurConfig(min_length=12.0, max_length=16.0, p_foreground=0.0, gamma=2.2,
                        read_noise=(0.002, 0.002))
    m = config.max_radius()
    photo = read_image(os.path.join(shared_data, "photos_kodak24", "kodim01.png"))
    pair = synthesize_pair(photo[100:228 + 2 * m, 100:228 + 2 * m], np.random.default_rng(0),
                           config=config)
    inner = (slice(m, m + 128), slice(m, m + 128))
    return pair.blurry[inner], pair.sharp[inner], pair.background_kernel


def test_classical_baselines_beat_the_blurry_input_given_the_true_kernel(shared_data):
    bench = _bench()
    blurry, sharp, kernel = _uniform_pair(shared_data)

    def psnr(x):
        return float(metrics.psnr(x, sharp))

    before = psnr(blurry)
    wiener = psnr(bench.wiener_deconvolve(blurry, kernel, 0.03))
    rl = psnr(bench.richardson_lucy(blurry, kernel, 20))
    # The kernel rotated by 180 degrees (the convolution / correlation mix-up) must not work.
    rotated = psnr(bench.wiener_deconvolve(blurry, np.ascontiguousarray(kernel[::-1, ::-1]),
                                           0.03))
    assert wiener > before + 2.0, (before, wiener)
    assert rl > before + 2.0, (before, rl)
    assert rotated < wiener - 3.0, (rotated, wiener)
    # One run gives the estimate after each requested count, as separate runs do.
    many = bench.richardson_lucy(blurry, kernel, [5, 20])
    np.testing.assert_allclose(many[1], bench.richardson_lucy(blurry, kernel, 20), atol=1e-6)


@pytest.mark.slow
def test_quick_run_prints_every_row(shared_data, tmp_path, capsys):
    import tfdeblur.models

    model_path = str(tmp_path / "tiny_lmfn.keras")
    model = tfdeblur.models.build("lmfn", width=4, num_blocks=1)
    model.save(model_path)
    out_json = tmp_path / "quality.json"
    bench = _bench()
    assert bench.main(["--quick", "--tuning-images", "1", "--crop", "96", "--data", shared_data,
                       "--models", model_path, "--self-ensemble", "--json", str(out_json)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    methods = [line.split("|")[1].strip() for line in lines[1:]]
    assert methods[0] == "blurry input"
    assert methods[1].startswith("Wiener, true kernel, NSR")
    assert methods[2] == "Wiener, true kernel, oracle NSR per image"
    assert methods[3].startswith("Richardson-Lucy, true kernel")
    assert methods[4] == "tiny_lmfn.keras"
    assert methods[5] == "tiny_lmfn.keras, 8-orientation self-ensemble"
    assert len(methods) == 6

    rows = json.loads(out_json.read_text())["rows"]
    blurry, wiener, _, _, net, ensemble = rows
    assert (net["self_ensemble"], ensemble["self_ensemble"]) == (False, True)
    assert ensemble["gopro_patches"]["psnr"] != net["gopro_patches"]["psnr"]
    assert ensemble["paper_gopro"] is None
    assert blurry["gopro_patches"]["images"] == 4 and wiener["gopro_patches"] is None
    for row in rows:
        kodak = row["kodak24_synthetic"]
        assert kodak["images"] == 3 and np.isfinite(kodak["psnr"]) and 0 < kodak["ssim"] <= 1
    assert net["parameters"] == model.count_params()
    assert net["cpu_seconds_720p"] > 0 and wiener["cpu_seconds_720p"] > 0
    assert net["paper_gopro"]["psnr"] == 31.54
