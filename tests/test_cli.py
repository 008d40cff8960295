"""The command line as a person meets it: fast help, usage errors, one-line errors, no log noise."""

import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.conftest import ROOT
from tfdeblur import cli
from tfdeblur.cli import COMMANDS, main
from tfdeblur.data.io import write_image

# TensorFlow's start-up lines that must not reach a user without --verbose.
NOISE = re.compile(r"absl::InitializeLog|cudart_stub|cuInit|oneDNN|cpu_feature_guard|"
                   r"^[IWEF]\d{4} \d\d:\d\d:", re.M)


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL")}
    return {**env, "PYTHONPATH": ROOT, **extra}


def _tfdeblur(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "tfdeblur", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=_env(), **kwargs)


def test_help_is_fast_and_imports_no_tensorflow():
    code = ("import sys, time; t = time.perf_counter()\n"
            "from tfdeblur.cli import main\n"
            "for argv in (['--help'], ['deblur', '--help'], ['deblur', 'x.png'],\n"
            "             ['deblur', 'x.png', '-o', 'y', '--batch-size', '0']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, 2), e.code\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules,\n"
            "      time.perf_counter() - t, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    tf_imported, keras_imported, seconds = out.stderr.splitlines()[-1].split()
    assert tf_imported == "False" and keras_imported == "False"
    assert float(seconds) < 1.0
    start = time.perf_counter()
    out = _tfdeblur("--help", timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert time.perf_counter() - start < 5.0  # the interpreter's start included, on a busy CI


def test_help_lists_every_subcommand_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    listed = re.findall(r"^    ([\w-]+)\s", text, re.M)
    assert listed == list(COMMANDS)
    assert "{" not in text and "info" not in text.split("commands:")[0]  # not in usage too
    for command in COMMANDS:
        assert f"tfdeblur {command}" in cli.__doc__, command


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--batch-size", "-3"], "argument --batch-size: must be at least 1, got -3"),
    (["--tile", "-8"], "argument --tile: must be at least 1, got -8"),
    (["--tile", "0"], "argument --tile: must be at least 1, got 0"),
    (["--overlap", "-1"], "argument --overlap: must be at least 0, got -1"),
    (["--tile", "64", "--overlap", "64"], "argument --tile: must be more than twice --overlap "
                                          "(64), got 64"),
    (["--tile", "64", "--overlap", "80"], "argument --tile: must be more than twice --overlap "
                                          "(80), got 64"),
    (["--tile", "big"], "argument --tile: expected an integer, got 'big'"),
])
def test_bad_numbers_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["deblur", "photo.png", "-o", "out", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tfdeblur deblur") and f"tfdeblur deblur: error: {message}" in err


def test_ctrl_c_is_interrupted_with_status_130(tmp_path, monkeypatch, capsys):
    import tfdeblur.inference

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfdeblur.inference, "deblur_files", interrupt)
    x = keras.Input((None, None, 3))
    keras.Model(x, keras.layers.Conv2D(3, 1)(x)).save(tmp_path / "m.keras")
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3)))
    status = main(["deblur", "-m", str(tmp_path / "m.keras"), str(tmp_path / "a.png"),
                   "-o", str(tmp_path / "b.png"), "-q"])
    assert status == 130
    assert capsys.readouterr().err == "tfdeblur deblur: interrupted\n"


def test_existing_export_target_says_what_exists(tmp_path, capsys):
    (tmp_path / "m.keras").write_bytes(b"x")
    (tmp_path / "sm").mkdir()
    assert main(["export", "-m", str(tmp_path / "m.keras"), "--saved-model",
                 str(tmp_path / "sm")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'sm'} already exists (a folder; pass --overwrite" in err
    assert "Errno" not in err


def test_user_messages_drop_wrappers_errno_and_colour():
    from tfdeblur._messages import user_message

    wrapped = ValueError("Exception encountered when calling PadToMultiple.call().\n\n"
                         "\x1b[1mlmfn: image height must be at least 17 pixels, got 5\x1b[0m\n\n"
                         "Arguments received by PadToMultiple.call():\n  • x=tf.Tensor(...)")
    assert user_message(wrapped) == "lmfn: image height must be at least 17 pixels, got 5"
    assert user_message(FileExistsError(17, "File exists", "out")) == "out already exists (a file)"
    assert user_message(PermissionError(13, "Permission denied", "/ro/x.png")) == \
        "/ro/x.png: permission denied"


def test_quiet_sets_log_levels_only_for_the_command(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with cli._quiet(verbose=False):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    with cli._quiet(verbose=True):
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    # The library itself sets nothing for a user's process (TensorFlow's own C++ library
    # may set TF_CPP_MIN_LOG_LEVEL while it loads: compare with TensorFlow alone).
    code = ("import os; import tensorflow; before = os.environ.get('TF_CPP_MIN_LOG_LEVEL'); "
            "import tfdeblur, tfdeblur.cli, tfdeblur.inference; "
            "print(before == os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=_env())
    assert out.stdout.strip() == "True", out.stderr[-2000:]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A .keras model, two good photos and a truncated one."""
    folder = tmp_path_factory.mktemp("cli_photos")
    x = keras.Input((None, None, 3))
    keras.Model(x, keras.layers.Conv2D(3, 1)(x)).save(folder / "m.keras")
    rng = np.random.default_rng(0)
    (folder / "in").mkdir()
    for name in ("a.png", "c.png"):
        write_image(folder / "in" / name, rng.uniform(0, 1, (16, 16, 3)))
    data = (folder / "in" / "a.png").read_bytes()
    (folder / "in" / "b.png").write_bytes(data[:40])
    return folder


@pytest.mark.slow
def test_a_real_run_prints_no_tensorflow_noise(photos, tmp_path):
    out = _tfdeblur("deblur", "-m", photos / "m.keras", photos / "in", "-o", tmp_path / "out")
    assert out.returncode == 1, out.stderr[-3000:]
    assert not NOISE.search(out.stderr), out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if not line.startswith("deblur: ")]
    assert lines == [  # besides the progress lines (off a terminal: a few whole lines)
        f"tfdeblur deblur: error: image file {photos / 'in' / 'b.png'} is truncated: PNG has no "
        f"IEND chunk (40 bytes)",
        f"wrote 2 image(s) to {tmp_path / 'out'}; 1 failed"]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_verbose_shows_what_tensorflow_prints(tmp_path):
    raw = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                         text=True, timeout=300, env=_env())
    if not NOISE.search(raw.stderr):
        pytest.skip("this TensorFlow prints nothing on import")
    quiet = _tfdeblur("info")
    verbose = _tfdeblur("--verbose", "info")
    assert quiet.returncode == 0 and verbose.returncode == 0, verbose.stderr[-2000:]
    assert not NOISE.search(quiet.stderr), quiet.stderr
    assert NOISE.search(verbose.stderr)


@pytest.mark.slow
def test_bad_training_data_is_one_line_and_exits(tmp_path):
    import json

    photos = tmp_path / "photos"
    pairs = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    for folder in (photos, pairs / "blur", pairs / "sharp"):
        folder.mkdir(parents=True)
    for i in range(3):
        write_image(photos / f"p{i}.png", rng.uniform(0, 1, (40, 48, 3)))
        for kind in ("blur", "sharp"):
            write_image(pairs / kind / f"{i}.png", rng.uniform(0, 1, (24, 24, 3)))
    (photos / "p9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10
                                    + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    config = {
        "name": "bad_data", "seed": 3,
        "model": {"name": "svdn", "width": 2, "dilation_rates": [1], "kernel_size": 3,
                  "offset_hidden": 2, "head_width": 2},
        "loss": {"name": "pixel"}, "metrics": ["psnr"], "optimizer": {"learning_rate": 1e-3},
        "data": {"train": {"type": "synthetic", "root": str(photos), "patch_size": 24,
                           "batch_size": 2, "blur": {"max_length": 3.0,
                                                     "foreground_max_length": 3.0}},
                 "validation": {"pairs": {"type": "paired", "root": str(pairs),
                                          "batch_size": 3}}},
        "train": {"steps": 6, "steps_per_epoch": 4, "checkpoint_every": 2,
                  "keep_checkpoints": 3, "monitor": "val_pairs_psnr", "verbose": 0},
    }
    (tmp_path / "bad.json").write_text(json.dumps(config))
    out = _tfdeblur("train", "--config", tmp_path / "bad.json", "--run-dir", tmp_path / "run",
                    timeout=900)
    assert out.returncode == 2, out.stderr[-3000:]
    err = out.stderr.splitlines()
    # One line naming the file (the reader says why: undecodable, or a PNG chunk that
    # claims more bytes than the file has).
    # Every file is checked before the first step: a config error naming the section.
    assert len(err) == 1, out.stderr[-3000:]
    assert err[0].startswith("error: config section 'data.train': image file "
                             f"{photos / 'p9.png'} "), err
    assert "corrupt" in err[0] and "skip_bad_files" in err[0], err


def test_readme_load_recipe_works_in_a_fresh_process(tmp_path):
    readme = open(os.path.join(ROOT, "docs", "guide.md"), encoding="utf-8").read()
    assert 'model = tfdeblur.load("svdn.keras")' in readme
    assert "keras.models.load_model" in readme and "tfdeblur.models.available()" in readme
    code = f"""
import os
os.chdir({str(tmp_path)!r})
import keras
import numpy as np
import tfdeblur
import tfdeblur.models

model = tfdeblur.models.build("lmfn", width=4, num_blocks=1)
model.save("svdn.keras")
blurry = np.random.default_rng(0).uniform(0, 1, (1, 20, 23, 3)).astype("float32")
loaded = tfdeblur.load("svdn.keras")
np.testing.assert_allclose(np.asarray(loaded(blurry)), np.asarray(model(blurry)), atol=1e-6)
tfdeblur.models.available()
again = keras.models.load_model("svdn.keras")
np.testing.assert_allclose(np.asarray(again(blurry)), np.asarray(model(blurry)), atol=1e-6)
print("identical")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout


def test_image_size_is_input_size_and_size_is_a_deprecated_alias(capsys):
    # One name for an image size: Python's input_size=(H, W) is --input-size HxW.
    parser = cli.build_parser()
    args = parser.parse_args(["export", "-m", "m.keras", "--tflite", "x.tflite",
                              "--input-size", "17x20"])
    assert args.input_size == (17, 20)
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["export", "-m", "m.keras", "--tflite", "x.tflite",
                             "--size", "17x20"])
    assert old.input_size == (17, 20)
    assert capsys.readouterr().err == ("tfdeblur: warning: --size is deprecated, "
                                       "use --input-size\n")
    assert "--input-size" in parser._subparsers._group_actions[0].choices["export"].format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "-m", "m.keras", "--size", "0x20"])
    assert "expected HxW" in capsys.readouterr().err
