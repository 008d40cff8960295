"""Full-integer int8 TFLite (calibration, report, int8 I/O) and ONNX exports."""

import logging
import os
import re

import numpy as np
import pytest

from tests.export.test_export import NAMES, _build, _close, _images
from tfdeblur.cli import main
from tfdeblur.data.io import write_image
from tfdeblur.export import ExportError, calibration_images, export_onnx, export_tflite
from tfdeblur.export.verify import psnr, run_tflite, tflite_interpreter

pytest.importorskip("ai_edge_litert.interpreter")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """A folder of four small photos-like images (and one too small for the export size)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, img in enumerate(_images(4, 40, 44, seed=11)):
        write_image(folder / f"{i}.png", img)
    write_image(folder / "tiny.png", _images(1, 8, 8)[0])
    return folder


def test_calibration_images(calibration):
    crops = calibration_images(calibration, (24, 24), 3, samples=6)
    # 6 crops from the 4 usable images (2 from the first two), all inside them.
    assert crops.shape == (6, 24, 24, 3) and crops.dtype == np.float32
    assert 0 <= crops.min() and crops.max() <= 1
    assert np.abs(crops[0] - crops[1]).max() > 0  # two places of the same image
    grey = calibration_images(calibration, (24, 24), 1, samples=2)
    assert grey.shape == (2, 24, 24, 1)
    with pytest.raises(ValueError, match=r"no image in .* is at least 48x48"):
        calibration_images(calibration, (48, 48), 3)
    with pytest.raises(ValueError, match="^calibration_samples must be an integer >= 1, got 0$"):
        calibration_images(calibration, (24, 24), 3, samples=0)
    with pytest.raises(ValueError, match=r"calibration must be a folder .* \[N, 24, 24, 3\]"):
        calibration_images(np.zeros((2, 24, 20, 3), np.float32), (24, 24), 3)


@pytest.mark.slow
def test_int8_export_reports_float_ops_and_psnr(calibration, tmp_path, caplog):
    model = _build("lmfn", width=16, num_blocks=1)
    with caplog.at_level(logging.INFO, logger="tfdeblur.export.int8"):
        path = export_tflite(model, tmp_path / "int8.tflite", input_size=(24, 24),
                             quantize="int8", calibration=calibration, calibration_samples=4)
    report = [r.getMessage() for r in caplog.records
              if r.name == "tfdeblur.export.int8" and r.levelno == logging.INFO]
    assert len(report) == 1 and "ops left in float:" in report[0], report
    reported = float(re.search(r"median ([\d.]+) dB", report[0]).group(1))
    assert reported >= 25

    # Builtin kernels: LiteRT's XNNPACK delegate aborts on this file (the export warns).
    interpreter = tflite_interpreter(path, xnnpack=False)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    int8 = sum(int(np.prod(t["shape"])) for t in details if t["dtype"] == np.int8)
    assert int8 > 0.8 * model.count_params()  # weights and activations
    runner = interpreter.get_signature_runner()
    assert runner.get_input_details()["blurry"]["dtype"] == np.float32  # float I/O by default
    crops = calibration_images(calibration, (24, 24), 3, samples=4)
    scores = [psnr(run_tflite(interpreter, c[None]), np.asarray(model(c[None]))) for c in crops]
    assert float(np.median(scores)) == pytest.approx(reported, abs=0.01)

    path = export_tflite(model, tmp_path / "int8_io.tflite", input_size=(24, 24),
                         quantize="int8", calibration=crops, int8_io=True)
    runner = tflite_interpreter(path, xnnpack=False).get_signature_runner()
    inp, out = runner.get_input_details()["blurry"], runner.get_output_details()["sharp"]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8 and inp["quantization"][0] > 0
    interpreter = tflite_interpreter(path, xnnpack=False)
    interpreter.allocate_tensors()
    x = crops[:1]
    assert psnr(run_tflite(interpreter, x), np.asarray(model(x))) >= 25


def test_int8_refused_when_far_from_float(calibration, tmp_path, monkeypatch):
    import tfdeblur.export.tflite as tflite

    monkeypatch.setattr(tflite, "INT8_MIN_PSNR_DB", 1000.0)
    model = _build("lmfn", width=4, num_blocks=1)
    with pytest.raises(ExportError, match=r"int8 model's output is .* dB .* below 1000 dB"):
        export_tflite(model, tmp_path / "m.tflite", input_size=(17, 17), quantize="int8",
                      calibration=calibration, calibration_samples=2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantize="int8"), "calibration is needed for quantize='int8'"),
    (dict(quantize="dynamic", calibration="x"), "calibration is needed for quantize='int8' "
                                                "and applies to it only"),
    (dict(int8_io=True), "int8_io applies to quantize='int8' only"),
])
def test_int8_bad_arguments(tmp_path, kwargs, match):
    model = _build("lmfn", width=4, num_blocks=1)
    with pytest.raises(ValueError, match=match):
        export_tflite(model, tmp_path / "m.tflite", input_size=(17, 17), **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--tflite", "x.tflite", "--input-size", "32x32", "--quantize", "int8"],
     "needs --calibration"),
    (["--tflite", "x.tflite", "--input-size", "32x32", "--calibration", "c"],
     "needs --calibration"),
    (["--tflite", "x.tflite", "--input-size", "32x32", "--int8-io"], "--int8-io applies"),
    (["--onnx", "same", "--tflite", "same", "--input-size", "32x32"], "different paths"),
])
def test_cli_int8_and_onnx_bad_arguments(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "-m", "missing.keras", *args]) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------ ONNX


@pytest.fixture(scope="module")
def onnxruntime():
    pytest.importorskip("tf2onnx")
    return pytest.importorskip("onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_keras(onnxruntime, tmp_path, name):
    """Any image size: one file runs two sizes and batch sizes (for SVDN, the deformable
    convolutions' row tiles loop into an ONNX Loop's scan output)."""
    model = _build(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    assert os.listdir(tmp_path) == [f"{name}.onnx"]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["blurry"]
    assert [o.name for o in session.get_outputs()] == ["sharp"]
    for x in [_images(2, 23, 29, seed=4), _images(1, 34, 17, seed=5)]:
        _close(session.run(["sharp"], {"blurry": x})[0], np.asarray(model(x)))


@pytest.mark.slow
def test_onnx_svdn_many_tiles(onnxruntime, tmp_path, monkeypatch):
    """SVDN's deformable convolutions cut into one-row tiles (the loop runs many rounds)."""
    from tfdeblur.ops import deform_conv

    monkeypatch.setattr(deform_conv, "_TILE_BYTES", 1)
    model = _build("svdn")
    path = export_onnx(model, tmp_path / "svdn.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for x in [_images(1, 19, 26, seed=6), _images(2, 12, 9, seed=7)]:
        _close(session.run(["sharp"], {"blurry": x})[0], np.asarray(model(x)))


def test_onnx_cli_and_destinations(onnxruntime, tmp_path, capsys):
    model = _build("lmfn", width=4, num_blocks=1)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.onnx"
    assert main(["export", "-m", str(tmp_path / "m.keras"), "--onnx", str(out)]) == 0
    assert "wrote ONNX model" in capsys.readouterr().out
    x = _images(1, 20, 21)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    _close(session.run(["sharp"], {"blurry": x})[0], np.asarray(model(x)))
    (tmp_path / "notes.onnx").write_bytes(b"not a model")
    with pytest.raises(FileExistsError, match="not an ONNX model"):
        export_onnx(model, tmp_path / "notes.onnx", overwrite=True)
    with pytest.raises(ValueError, match="opset must be an integer >= 13"):
        export_onnx(model, tmp_path / "x.onnx", opset=9)
    export_onnx(model, out, overwrite=True)  # an ONNX model is replaced
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.onnx", "notes.onnx"]
