"""SavedModel and TFLite exports: stock ops only, loadable without tfdeblur, same outputs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.export as export
import tfdeblur.export._common
import tfdeblur.export.saved_model
import tfdeblur.export.tflite
import tfdeblur.models
from tests.conftest import ROOT, SHARED_DATA
from tfdeblur.cli import main
from tfdeblur.export import ExportError, export_saved_model, export_tflite, portable_model, verify
from tfdeblur.models.svdn import with_positions
from tfdeblur.ops import compiled_available

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

# The README's tiny variants: every part of each network, a few k parameters.
TINY = {
    "svrnn": dict(width=4, weight_width=2, num_rnns=2),
    "svdn": dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2),
    "lmfn": dict(width=8, num_blocks=2),
}
NAMES = sorted(TINY)
# TFLite sizes: not multiples of the models' padding multiples (8, 2, 16), so
# the padding and cropping are part of the converted graph.
TFLITE_SIZES = {"svrnn": (20, 36), "svdn": (17, 30), "lmfn": (24, 40)}

# Blocker outside this module (see docs/export_readme_section.md): the portable
# deformable convolution slices a 6-D tensor, which TFLite's STRIDED_SLICE kernel
# rejects when the interpreter prepares the model (it supports at most 5-D).

def _build(name: str, **kw) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = tfdeblur.models.build(name, **{**TINY[name], **kw})
    # Non-trivial weights everywhere (DCN offsets start at zero, LMFN's alpha and
    # theta at 0): the exports must carry every weight, not only the defaults.
    rng = np.random.default_rng(7)
    for v in model.weights:
        v.assign(v.value.numpy() + rng.normal(0, 0.05, v.shape).astype("float32"))
    return model


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, -(-h // 4), -(-w // 4), 3))
    smooth = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :h, :w]
    return (0.7 * smooth + 0.3 * rng.random((n, h, w, 3))).astype("float32")


def _real_or_synthetic(h: int, w: int) -> np.ndarray:
    """A crop of a real blurry GoPro patch when ../shared/data exists, else synthetic."""
    folder = os.path.join(SHARED_DATA, "gopro_patches", "blur")
    if not os.path.isdir(folder):
        return _images(1, h, w, seed=3)[0]
    from tfdeblur.data.io import read_image

    return read_image(os.path.join(folder, sorted(os.listdir(folder))[0]))[:h, :w]


def _graph_ops(model: keras.Model) -> set:
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([None, None, None, 3])).graph
    ops = {node.op for node in graph.as_graph_def().node}
    for f in graph.as_graph_def().library.function:
        ops |= {node.op for node in f.node_def}
    return ops


def _close(got, want, tol=1e-4):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


# Shapes the SavedModel signatures are exported for: any size, except LMFN
# with a fixed width (input_shape=(None, 24, None): the channels come from the model).
SAVED_SHAPES = {"svrnn": (None, None, 3), "svdn": (None, None, 3), "lmfn": (None, 24, None)}


@pytest.fixture(scope="module")
def models():
    return {name: _build(name) for name in NAMES}


@pytest.fixture(scope="module")
def saved_models(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return {name: export_saved_model(model, root / name / "1", input_shape=SAVED_SHAPES[name])
            for name, model in models.items()}


def test_training_model_with_two_outputs_is_refused(tmp_path):
    """A model has one set of outputs: SVDN's training model (image + positions) is not
    exported; the message names the model to export instead."""
    train = with_positions(_build("svdn"))
    with pytest.raises(ValueError, match="2 outputs.*with_positions"):
        export_saved_model(train, tmp_path / "sm")
    with pytest.raises(ValueError, match="2 outputs"):
        export_tflite(train, tmp_path / "m.tflite", input_size=(16, 16))
    assert not os.listdir(tmp_path)


# Independent of tfdeblur.export's own check: a fresh interpreter, no tfdeblur.
_CLIENT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    paths = json.loads(sys.argv[1])
    report = {}
    for name, path in paths.items():
        x = np.load(sys.argv[2] + name + ".npy")
        fn = tf.saved_model.load(path).signatures["serving_default"]
        args, kwargs = fn.structured_input_signature
        spec = kwargs["blurry"]
        errors = []
        for bad in (x[:, :1], np.full_like(x, np.nan)):
            try:
                fn(blurry=tf.constant(bad))
                errors.append(None)
            except tf.errors.InvalidArgumentError as e:
                errors.append(e.message)
        np.save(sys.argv[3] + name + ".npy", fn(blurry=tf.constant(x))["sharp"].numpy())
        empty = fn(blurry=tf.constant(x[:0]))["sharp"].numpy()
        report[name] = {"inputs": sorted(kwargs), "args": len(args), "shape": spec.shape.as_list(),
                        "dtype": spec.dtype.name, "outputs": sorted(fn.structured_outputs),
                        "errors": errors, "empty": list(empty.shape)}
    report["tfdeblur_loaded"] = [m for m in sys.modules if m.startswith("tfdeblur")]
    ops = ("TfDeblur>GatedRecurrence", "TfDeblur>ModulatedDeformConv2D")
    report["custom_ops"] = [o for o in ops if op_def_registry.get(o) is not None]
    print(json.dumps(report))
""")


def test_saved_models_have_no_custom_ops_and_run_without_tfdeblur(models, saved_models,
                                                                 tmp_path):
    for name, path in saved_models.items():
        ops = export.saved_model_op_types(path)
        assert "Conv2D" in ops, name  # the scan does see the graph
        assert not [op for op in ops if op.startswith("TfDeblur>")], (name, sorted(ops))
        # Each weight stored once (keras.export.ExportArchive writes them twice).
        stored = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        sizes = [int(np.prod(s)) for k, s in stored.get_variable_to_shape_map().items()
                 if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
        assert sum(sizes) == models[name].count_params(), name
        if compiled_available() and name != "lmfn":
            # The compiled op was really replaced, not absent from the start.
            assert any(op.startswith("TfDeblur>") for op in _graph_ops(models[name])), name

    inputs = {name: _images(3, 23, 24 if name == "lmfn" else 29, seed=5) for name in NAMES}
    for name, x in inputs.items():  # odd sizes, batch 3
        np.save(tmp_path / f"x_{name}.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TFDEBLUR_DISABLE_COMPILED="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-I", "-c", _CLIENT,
         json.dumps({k: str(v) for k, v in saved_models.items()}),
         str(tmp_path / "x_"), str(tmp_path / "y_")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tfdeblur_loaded"] == [] and report["custom_ops"] == []
    for name, model in models.items():
        r, x = report[name], inputs[name]
        shape = [None, None, 24, 3] if name == "lmfn" else [None, None, None, 3]
        assert (r["inputs"], r["args"], r["shape"], r["dtype"], r["outputs"], r["empty"]) == (
            ["blurry"], 0, shape, "float32", ["sharp"], [0, *x.shape[1:]]), (name, r)
        too_small, nan = r["errors"]
        assert too_small is not None and "at least" in too_small, (name, too_small)
        assert nan is not None and "NaN or Inf" in nan, (name, nan)
        # The SVDN export came from a copy with positions and the same weights.
        _close(np.load(tmp_path / f"y_{name}.npy"), np.asarray(model(x)))


# What a TF Serving client sends and what the server does with it, without
# tfdeblur: a PredictRequest (tensorflow-serving-api protos) for deblur_image, the
# REST body of docs/deployment.md, and the warm-up records replayed.
_SERVING_CLIENT = textwrap.dedent(r"""
    import base64, json, os, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    paths, folder = json.loads(sys.argv[1]), sys.argv[2]
    report = {}

    def serve(loaded, request):
        # TF Serving: tensors from the request's protos, the signature, protos back.
        request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
        outputs = signature(**{k: tf.constant(tf.make_ndarray(v))
                               for k, v in request.inputs.items()})
        response = predict_pb2.PredictResponse()
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    for name, path in paths.items():
        loaded = tf.saved_model.load(path)
        with open(os.path.join(folder, name + ".json")) as f:
            files = json.load(f)
        data = []
        for file in files:
            with open(os.path.join(folder, file), "rb") as f:
                data.append(f.read())
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "deblur_image"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data[:-1],
                                                                    dtype=tf.string))
        pngs = serve(loaded, request)["png_bytes"]
        for file, png in zip(files, pngs):
            with open(os.path.join(folder, "out_" + name + "_" + file + ".png"), "wb") as f:
                f.write(png)
        body = json.dumps({"signature_name": "deblur_image",
                           "instances": [{"b64": base64.b64encode(data[0]).decode()}]})
        instances = [base64.b64decode(i["b64"]) for i in json.loads(body)["instances"]]
        fn = loaded.signatures[json.loads(body)["signature_name"]]
        rest = fn(image_bytes=tf.constant(instances))["png_bytes"].numpy()
        errors = {}
        cases = {"not_an_image": b"not an image", "too_small": data[-1],
                 "wrong_width": tf.io.encode_png(np.zeros((24, 30, 3), np.uint8)).numpy()}
        for case, item in cases.items():
            try:
                fn(image_bytes=tf.constant([data[0], item]))
                errors[case] = None
            except tf.errors.InvalidArgumentError as e:
                errors[case] = e.message
        warmup = []
        records = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
        for record in tf.data.TFRecordDataset(records):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            outputs = serve(loaded, request)
            warmup.append({"signature": request.model_spec.signature_name,
                           "inputs": {k: [tf.as_dtype(v.dtype).name,
                                          [d.size for d in v.tensor_shape.dim]]
                                      for k, v in request.inputs.items()},
                           "outputs": {k: list(v.shape) for k, v in outputs.items()}})
        report[name] = {"signatures": sorted(loaded.signatures), "rest_same": rest[0] == pngs[0],
                        "errors": errors, "warmup": warmup}
    report["tfdeblur_loaded"] = [m for m in sys.modules if m.startswith("tfdeblur")]
    print(json.dumps(report))
""")


def _image_files(folder, name: str, h: int, w: int) -> list[str]:
    """RGB, grey, grey+alpha, RGBA, 16-bit PNGs and a JPEG of one image, then a too small one."""
    from tfdeblur.data.io import write_image

    rgb = _real_or_synthetic(h, w)
    alpha = np.linspace(0, 1, h * w).reshape(h, w, 1).astype("float32")
    grey = rgb.mean(axis=2)
    files = {"rgb.png": rgb, "grey.png": grey, "rgba.png": np.concatenate([rgb, alpha], 2),
             "rgb16.png": rgb, "photo.jpg": rgb}
    for file, img in files.items():
        write_image(folder / f"{name}_{file}", img, bit_depth=16 if "16" in file else 8)
    grey_alpha = np.rint(np.concatenate([grey[..., None], alpha], 2) * 255).astype(np.uint8)
    (folder / f"{name}_grey_alpha.png").write_bytes(tf.io.encode_png(grey_alpha).numpy())
    min_size = export._common._size_limits(_build(name))[1]
    write_image(folder / f"{name}_small.png", rgb[:max(min_size - 1, 0)])
    return [f"{name}_{f}" for f in (*files, "grey_alpha.png", "small.png")]


@pytest.mark.slow
def test_deblur_image_signature_warmup_and_predict_request(models, saved_models, tmp_path):
    from tfdeblur.data.io import read_image
    from tfdeblur.inference import deblur_image

    sizes = {name: (23, 24 if name == "lmfn" else 29) for name in NAMES}
    files = {name: _image_files(tmp_path, name, *size) for name, size in sizes.items()}
    for name, names in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(names))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TFDEBLUR_DISABLE_COMPILED="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-I", "-c", _SERVING_CLIENT,
         json.dumps({k: str(v) for k, v in saved_models.items()}), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.pop("tfdeblur_loaded") == []
    for name, model in models.items():
        r, (h, w) = report[name], sizes[name]
        assert r["signatures"] == ["deblur_image", "serving_default"] and r["rest_same"], r
        assert "Unknown image file format" in r["errors"]["not_an_image"], r["errors"]
        if export._common._size_limits(model)[1] > 1:
            assert "at least" in r["errors"]["too_small"], r["errors"]
        if name == "lmfn":  # exported for width 24 only
            assert "image width must be 24" in r["errors"]["wrong_width"], r["errors"]
        # One warm-up request per signature, small images; each ran.
        fixed_w = 24 if name == "lmfn" else None
        warm = {item["signature"]: item for item in r["warmup"]}
        assert sorted(warm) == ["deblur_image", "serving_default"] and len(r["warmup"]) == 2
        dtype, shape = warm["serving_default"]["inputs"]["blurry"]
        assert dtype == "float32" and shape[0] == 1 and shape[3] == 3 and max(shape[1:3]) <= 32
        assert fixed_w is None or shape[2] == fixed_w
        assert warm["serving_default"]["outputs"] == {"sharp": shape}
        assert warm["deblur_image"]["inputs"] == {"image_bytes": ["string", [1]]}
        assert warm["deblur_image"]["outputs"] == {"png_bytes": [1]}
        for file in files[name][:-1]:
            png = (tmp_path / f"out_{name}_{file}.png").read_bytes()
            assert png.startswith(b"\x89PNG"), file
            got = tf.io.decode_png(png, channels=0).numpy()
            # What `tfdeblur deblur` writes for it (8 bits): same layout, within a level.
            want = deblur_image(model, read_image(tmp_path / file, as_stored=True))
            want = np.rint(want.reshape(h, w, -1) * 255)
            assert got.dtype == np.uint8 and got.shape == want.shape, (file, got.shape)
            diff = np.abs(got.astype(float) - want)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (name, file, diff.max())
        channels = {f.split("_", 1)[1]: tf.io.decode_png(
            (tmp_path / f"out_{name}_{f}.png").read_bytes()).shape[2] for f in files[name][:-1]}
        assert channels == {"rgb.png": 3, "grey.png": 1, "rgba.png": 4, "rgb16.png": 3,
                            "photo.jpg": 3, "grey_alpha.png": 4}, channels


@pytest.mark.parametrize("name", [
    "svrnn", "svdn", "lmfn"])
def test_tflite_builtins_only_matches_keras(models, tmp_path, name):
    model = models[name]
    h, w = TFLITE_SIZES[name]
    path = export_tflite(model, tmp_path / f"{name}.tflite", input_size=(h, w))
    assert os.listdir(tmp_path) == [f"{name}.tflite"]
    interpreter = Interpreter(model_path=path)
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "WHILE")], ops
    runner = interpreter.get_signature_runner("serving_default")
    x = _real_or_synthetic(h, w)[None]
    _close(runner(blurry=x)["sharp"], np.asarray(model(x)))
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, h, w, 3]


def test_tflite_dynamic_quantization_and_from_saved_model(saved_models, tmp_path):
    # Wide enough that the converter quantizes the convs (it leaves tensors of
    # fewer than 1024 values in float32).
    model = _build("lmfn", width=16, num_blocks=1)
    x = _images(1, 24, 24, seed=9)
    path = export_tflite(model, tmp_path / "dynamic.tflite", input_size=(24, 24),
                          quantize="dynamic", test_image=x[0])
    interpreter = Interpreter(model_path=path)
    int8 = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    assert sum(int(np.prod(t["shape"])) for t in int8) > 0.8 * model.count_params()
    _close(interpreter.get_signature_runner()(blurry=x)["sharp"], np.asarray(model(x)), 5e-2)

    # From an exported SavedModel with unknown sizes: SVRNN's scan was traced
    # as a while loop there, which the converter keeps as a builtin WHILE.
    path = export_tflite(saved_models["svrnn"], tmp_path / "svrnn_sm.tflite",
                          input_size=(16, 24))
    runner = Interpreter(model_path=path).get_signature_runner()
    x = _images(1, 16, 24, seed=2)
    _close(runner(blurry=x)["sharp"], np.asarray(_build("svrnn")(x)))


def test_tflite_from_any_size_svdn_saved_model_names_the_way(saved_models, tmp_path):
    """SVDN's any-size SavedModel keeps lists of unknown element shape (and a
    crop_and_resize) that TFLite cannot lower: the error says to convert the Keras model,
    which works at the same size, and nothing is written."""
    with pytest.raises(ExportError, match=r"(?s)TensorListReserve.*Convert the Keras model"):
        export_tflite(saved_models["svdn"], tmp_path / "svdn.tflite", input_size=(16, 24))
    assert not os.listdir(tmp_path)


def test_portable_model():
    lmfn = tfdeblur.models.build("lmfn", **TINY["lmfn"])
    assert portable_model(lmfn) is lmfn  # nothing to replace
    model = _build("svrnn")
    portable = portable_model(model, (None, 24, 3))
    assert portable is not model and portable.input_shape == (None, None, 24, 3)
    assert portable.get_layer("rnn_deconvolution").implementation == "portable"
    assert not any(op.startswith("TfDeblur>") for op in _graph_ops(portable))
    x = _images(2, 9, 24)
    _close(np.asarray(portable(x)), np.asarray(model(x)), 1e-5)


@pytest.mark.skipif(not compiled_available(), reason="needs the compiled op library")
def test_export_with_custom_ops_is_rejected_and_leaves_nothing(models, tmp_path, monkeypatch):
    # Without the portable rebuild the graph holds TfDeblur>GatedRecurrence:
    # both checks must catch it, and the written folder must disappear.
    monkeypatch.setattr(tfdeblur.export._common, "portable_model",
                        lambda model, shape=None: model)
    out = tmp_path / "exports"
    with pytest.raises(ExportError, match=r"compiled tfdeblur ops \['TfDeblur>GatedRecurrence'\]"):
        export_saved_model(models["svrnn"], out / "svrnn")
    assert os.listdir(out) == []

    written = tmp_path / "raw"
    tfdeblur.export.saved_model._write_saved_model(models["svrnn"], str(written),
                                                   (None, None, None, 3))
    x = _images(1, 19, 21)
    loading_fails = r"(?s)process without tfdeblur.*TfDeblur>GatedRecurrence"
    with pytest.raises(ExportError, match=loading_fails):
        verify.verify_without_tfdeblur(str(written), x, np.asarray(models["svrnn"](x)), "svrnn")


def test_failure_mid_write_leaves_nothing_and_keeps_old_export(models, tmp_path, monkeypatch):
    def partial_write(model, directory, batch_shape):
        os.makedirs(os.path.join(directory, "variables"))
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(tfdeblur.export.saved_model, "_write_saved_model", partial_write)
    out = tmp_path / "exports"
    with pytest.raises(OSError, match="No space"):
        export_saved_model(models["lmfn"], out / "lmfn")
    assert os.listdir(out) == []

    (out / "lmfn").mkdir()
    (out / "lmfn" / "saved_model.pb").write_bytes(b"previous export")
    with pytest.raises(OSError, match="No space"):
        export_saved_model(models["lmfn"], out / "lmfn", overwrite=True)
    assert os.listdir(out) == ["lmfn"]
    assert (out / "lmfn" / "saved_model.pb").read_bytes() == b"previous export"


def test_failed_tflite_leaves_nothing(models, tmp_path, monkeypatch):
    monkeypatch.setattr(tfdeblur.export.tflite, "_convert", lambda *a: b"not a flatbuffer")
    with pytest.raises(ExportError, match="Interpreter"):
        export_tflite(models["lmfn"], tmp_path / "m.tflite", input_size=(17, 17))
    assert os.listdir(tmp_path) == []


def test_existing_destination_refused(models, tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "m.tflite").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        export_saved_model(models["lmfn"], tmp_path / "sm")
    with pytest.raises(FileExistsError, match="already exists"):
        export_tflite(models["lmfn"], tmp_path / "m.tflite", input_size=(17, 17))
    with pytest.raises(ValueError, match="is a folder"):
        export_tflite(models["lmfn"], tmp_path / "sm", input_size=(17, 17), overwrite=True)
    assert (tmp_path / "m.tflite").read_bytes() == b"keep" and os.listdir(tmp_path / "sm") == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(None, None, 4)), "input_shape must have the model's 3 channels"),
    (dict(input_shape=(8, None, 3)), "input_shape height must be None or at least .* 17"),
    (dict(input_shape=(None, 3)), r"input_shape must be \(H, W, C\)"),
    (dict(input_shape=(None, 20.0, 3)), r"input_shape must be \(H, W, C\)"),
])
def test_saved_model_bad_arguments(models, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_saved_model(models["lmfn"], tmp_path / "x", **kwargs)
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=(16, 40)), "input_size must be at least the model's minimum of 17"),
    (dict(input_size=32), r"input_size must be \(H, W\)"),
    (dict(input_size=(32, 0)), r"^input_size must be \(H, W\), two integers >= 1, got \(32, 0\)$"),
    (dict(input_size=(32, True)), r"input_size must be \(H, W\)"),
    (dict(input_size=(32, 32), quantize="int4"), "quantize must be one of"),
    (dict(input_size=(32, 32), test_image=np.zeros((32, 31, 3), "float32")),
     "test_image must be a float"),
    (dict(input_size=(32, 32), test_image=np.zeros((32, 32, 3), "uint8")),
     "test_image must be a float"),
])
def test_tflite_bad_arguments(models, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_tflite(models["lmfn"], tmp_path / "x.tflite", **kwargs)
    assert os.listdir(tmp_path) == []


def test_tflite_from_saved_model_bad_sizes(saved_models, tmp_path):
    with pytest.raises(ValueError, match="does not match the SavedModel's fixed width 24"):
        export_tflite(saved_models["lmfn"], tmp_path / "x.tflite", input_size=(32, 32))
    with pytest.raises(ValueError, match=r"(?s)rejects this size.*at least 17"):
        export_tflite(saved_models["lmfn"], tmp_path / "x.tflite", input_size=(16, 24))
    assert os.listdir(tmp_path) == []


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="model must be a keras.Model or the path"):
        export_saved_model(object(), tmp_path / "x")
    grey = tfdeblur.models.build("lmfn", **TINY["lmfn"], input_shape=(None, None, 1))
    with pytest.raises(ValueError, match="input_shape must have the model's 1 channels"):
        export_saved_model(grey, tmp_path / "x")  # the default (None, None, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(tmp_path / "missing.keras", tmp_path / "x.tflite", input_size=(32, 32))


def test_cli_export(tmp_path, capsys, monkeypatch):
    model = _build("svrnn")
    model_path = tmp_path / "svrnn.keras"
    model.save(model_path)
    lite = tmp_path / "out" / "m.tflite"
    # A fresh process: the .keras file must load without the layers having been
    # registered by building a model first.
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "tfdeblur", "export", "-m", str(model_path), "--tflite", str(lite),
         "--input-size", "17x20", "--quantize", "float16"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quantize=float16" in done.stdout
    assert os.listdir(tmp_path / "out") == ["m.tflite"]
    interpreter = Interpreter(model_path=str(lite))
    assert any(t["dtype"] == np.float16 for t in interpreter.get_tensor_details())
    x = _images(1, 17, 20)
    _close(interpreter.get_signature_runner()(blurry=x)["sharp"], np.asarray(model(x)), 1e-2)

    # Existing outputs are refused before any work (exit code 2).
    assert main(["export", "-m", str(model_path), "--tflite", str(lite),
                 "--input-size", "17x20"]) == 2
    assert "already exists" in capsys.readouterr().err

    # --saved-model reaches export_saved_model (run for real by the tests above).
    calls = []
    monkeypatch.setattr(export, "export_saved_model",
                        lambda m, path, **kw: calls.append((m.name, path, kw)) or str(path))
    sm = str(tmp_path / "sm")
    assert main(["export", "-m", str(model_path), "--saved-model", sm, "--overwrite"]) == 0
    assert calls == [("svrnn", sm, {"input_shape": (None, None, None), "overwrite": True})]
    assert f"saved_model_cli show --dir {sm} --all" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "nothing to export"),
    (["--tflite", "x.tflite"], "needs --input-size"),
    (["--saved-model", "sm", "--input-size", "32x32"], "apply to --tflite only"),
    (["--saved-model", "same", "--tflite", "same", "--input-size", "32x32"], "different paths"),
])
def test_cli_bad_arguments(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "-m", "missing.keras", *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_values(tmp_path, capsys):
    for args in (["--input-size", "32"], ["--input-size", "0x32"], ["--quantize", "int4"]):
        with pytest.raises(SystemExit) as e:
            main(["export", "-m", "m.keras", "--tflite", str(tmp_path / "x.tflite"), *args])
        assert e.value.code == 2
    assert "expected HxW" in capsys.readouterr().err
    assert main(["export", "-m", str(tmp_path / "missing.keras"), "--saved-model",
                 str(tmp_path / "sm")]) == 2
    assert "does not exist" in capsys.readouterr().err
