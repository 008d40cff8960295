"""`tfdeblur deblur` on files: nothing a user has is lost, nothing is reported that was not done."""

import os

import cv2
import keras
import numpy as np
import pytest

from tfdeblur.cli import main
from tfdeblur.data.io import read_image, write_image
from tfdeblur.inference import (
    DeblurFilesError,
    deblur_files,
    deblur_image,
    load_model,
    plan_outputs,
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A 1x1 convolution and a sigmoid saved as .keras: fast, and it changes every pixel."""
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(3, 1, kernel_initializer="orthogonal", bias_initializer="zeros")(x)
    path = tmp_path_factory.mktemp("model") / "pointwise.keras"
    keras.Model(x, keras.layers.Activation("sigmoid")(y)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path)


def _photo(path, rng, shape=(12, 10, 3)):
    write_image(path, rng.uniform(0, 1, shape))
    return str(path)


def _deblur(*args):
    return main(["deblur", *map(str, args)])


def test_files_of_the_same_name_from_two_folders_are_both_written(tmp_path, rng, model_path,
                                                                   capsys):
    (tmp_path / "dupA").mkdir()
    (tmp_path / "dupB").mkdir()
    a, b = _photo(tmp_path / "dupA" / "x.png", rng), _photo(tmp_path / "dupB" / "x.png", rng)
    out = tmp_path / "out"
    assert _deblur("-m", model_path, a, b, "-o", out, "-q") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        ["dupA/x.png", "dupB/x.png"]
    model = load_model(model_path)
    for src, dst in ((a, out / "dupA" / "x.png"), (b, out / "dupB" / "x.png")):
        np.testing.assert_allclose(read_image(dst), deblur_image(model, read_image(src)),
                                   atol=1 / 255)
    assert _deblur("-m", model_path, a, b, "-o", tmp_path / "out2") == 0
    assert f"wrote 2 image(s) to {tmp_path / 'out2'}" in capsys.readouterr().out


def test_folders_keep_their_structure_and_clashing_folders_their_names(tmp_path, rng):
    for rel in ("a/x.png", "a/sub/y.png", "a/sub/deeper/z.jpg", "b/x.png", "b/.hidden.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _photo(tmp_path / rel, rng)
    out = str(tmp_path / "out")
    names = [os.path.relpath(t, out) for _, t in plan_outputs([tmp_path / "a"], out)]
    assert names == [os.path.join("sub", "deeper", "z.jpg"), os.path.join("sub", "y.png"),
                     "x.png"]
    # a/x.png and b/x.png clash: both folders keep their name, for all their files.
    names = [os.path.relpath(t, out) for _, t in plan_outputs([tmp_path / "a", tmp_path / "b"],
                                                              out, suffix="_s")]
    assert names == [os.path.join("a", "sub", "deeper", "z_s.jpg"),
                     os.path.join("a", "sub", "y_s.png"), os.path.join("a", "x_s.png"),
                     os.path.join("b", "x_s.png")]
    # Folders of the same name: as much of the path as tells them apart.
    for rel in ("p/in/x.png", "q/in/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True)
        _photo(tmp_path / rel, rng)
    names = [os.path.relpath(t, out) for _, t in plan_outputs(
        [tmp_path / "p" / "in", tmp_path / "q" / "in"], out)]
    assert names == [os.path.join("p", "in", "x.png"), os.path.join("q", "in", "x.png")]
    # A file named twice, or also through its folder, is deblurred once.
    pairs = plan_outputs([tmp_path / "b" / "x.png", tmp_path / "b", tmp_path / "b" / "x.png"],
                         out)
    assert [os.path.relpath(t, out) for _, t in pairs] == ["x.png"]


def test_outputs_never_replace_inputs(tmp_path, rng, model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    a = _photo(src / "a.png", rng)
    _photo(src / "b.png", rng)
    before = {p: (src / p).read_bytes() for p in ("a.png", "b.png")}
    for args in ([a, "-o", a], [src, "-o", src], [a, "-o", src]):
        assert _deblur("-m", model_path, *args, "-q") == 2
        err = capsys.readouterr().err
        assert "refusing to overwrite an input" in err and "Traceback" not in err
        assert err.count("\n") == 1
    # -o inside the input folder: its outputs are not inputs, nothing lands on an input.
    assert _deblur("-m", model_path, src, "-o", src / "sharp", "-q") == 0
    assert _deblur("-m", model_path, src, "-o", src / "sharp", "-q") == 0  # again: same outputs
    assert sorted(os.listdir(src / "sharp")) == ["a.png", "b.png"]
    assert {p: (src / p).read_bytes() for p in ("a.png", "b.png")} == before
    # A suffix keeps them apart; --overwrite-inputs allows it.
    assert _deblur("-m", model_path, src, "-o", src, "--suffix", "_sharp", "-q") == 0
    assert {p: (src / p).read_bytes() for p in ("a.png", "b.png")} == before
    assert _deblur("-m", model_path, a, "-o", a, "--overwrite-inputs", "-q") == 0
    assert (src / "a.png").read_bytes() != before["a.png"]
    # A hard link to an input is that input.
    os.link(src / "b.png", tmp_path / "link.png")
    with pytest.raises(ValueError, match="refusing to overwrite an input"):
        plan_outputs([src / "b.png"], tmp_path / "link.png")


def test_one_output_file_for_several_images_is_refused(tmp_path, rng):
    a, b = _photo(tmp_path / "a.png", rng), _photo(tmp_path / "b.png", rng)
    with pytest.raises(ValueError, match=r"names one image file, but the inputs hold 2 images"):
        plan_outputs([a, b], tmp_path / "out.png")


def test_a_corrupt_file_among_good_ones(tmp_path, rng, model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "c.png"):
        _photo(src / name, rng)
    data = (src / "a.png").read_bytes()
    (src / "b.png").write_bytes(data[:len(data) // 2])  # truncated
    (src / "d.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert _deblur("-m", model_path, src, "-o", out) == 1
    captured = capsys.readouterr()
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]
    err = captured.err.splitlines()
    assert [line for line in err if "error" in line] == [
        f"tfdeblur deblur: error: image file {src / 'b.png'} is truncated: PNG has no IEND "
        f"chunk ({len(data) // 2} bytes)",
        f"tfdeblur deblur: error: image file {src / 'd.jpg'} could not be decoded (corrupt or "
        f"not an image)"]
    assert f"wrote 2 image(s) to {out}; 2 failed" in captured.err
    assert "Traceback" not in captured.err and "wrote 4" not in captured.out

    with pytest.raises(DeblurFilesError) as info:
        deblur_files(load_model(model_path), [src], str(tmp_path / "out2"), progress=False)
    assert len(info.value.written) == 2 and [p for p, _ in info.value.failed] == \
        [str(src / "b.png"), str(src / "d.jpg")]


def test_too_small_image_is_named(tmp_path, rng, capsys):
    from tfdeblur import models

    path = tmp_path / "lmfn.keras"
    models.build("lmfn", width=4, num_blocks=1).save(path)
    small = _photo(tmp_path / "small.png", rng, (8, 30, 3))
    assert _deblur("-m", path, small, "-o", tmp_path / "out", "-q") == 1
    err = capsys.readouterr().err
    assert f"tfdeblur deblur: error: {small}: image 30x8 is smaller than the model's minimum " \
           f"of 17x17 pixels" in err
    assert "\x1b[" not in err and "Exception encountered" not in err and "Arguments" not in err


def test_alpha_depth_and_grey_are_kept(tmp_path, rng, model, model_path):
    src = tmp_path / "in"
    src.mkdir()
    rgba8 = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    rgb16 = rng.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    rgba16 = rng.integers(0, 65536, (9, 13, 4), dtype=np.uint16)
    grey8 = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (9, 13), dtype=np.uint16)
    cases = {"rgba8.png": rgba8, "rgb16.png": rgb16, "rgba16.tif": rgba16, "grey8.png": grey8,
             "grey16.png": grey16, "rgba8.webp": rgba8}
    for name, img in cases.items():
        bgr = img if img.ndim == 2 else cv2.cvtColor(
            img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_WEBP_QUALITY, 101] if name.endswith(".webp") else []
        assert cv2.imwrite(str(src / name), bgr, params)
    out = tmp_path / "out"
    assert _deblur("-m", model_path, src, "-o", out, "-q") == 0
    for name, img in cases.items():
        got = read_image(out / name, as_stored=True)
        assert got.dtype == img.dtype and got.shape == img.shape, name
        top = np.iinfo(img.dtype).max
        if img.ndim == 3 and img.shape[2] == 4:
            np.testing.assert_array_equal(got[..., 3], img[..., 3])  # alpha unchanged
        assert not np.array_equal(got, img), name  # the colour was deblurred
        if name.endswith(".webp"):
            continue  # written lossy (quality 95): only the alpha is exact
        colour = img if img.ndim == 2 else img[..., :3]
        np.testing.assert_allclose(got if img.ndim == 2 else got[..., :3],
                                   deblur_image(model, colour) * top, atol=1.0, err_msg=name)


def test_alpha_into_a_jpeg_output_is_refused_not_dropped(tmp_path, rng, model_path, capsys):
    rgba = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    write_image(tmp_path / "logo.png", rgba)
    assert _deblur("-m", model_path, tmp_path / "logo.png", "-o", tmp_path / "x.jpg") == 1
    assert "alpha channel, which the JPEG output" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()


def _read_only_folder(tmp_path):
    """A folder no file can be created in, also for root (a /sys folder), or None."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return str(folder)
    (folder / "probe").unlink()  # root ignores the mode bits; /sys refuses even root
    candidate = "/sys/kernel"
    if os.path.isdir(candidate):
        try:
            open(os.path.join(candidate, "tfdeblur-probe.png"), "wb").close()
        except OSError:
            return candidate
    return None


def test_read_only_output_folder_is_one_line(tmp_path, rng, model_path, capsys):
    folder = _read_only_folder(tmp_path)
    if folder is None:
        pytest.skip("no folder here refuses new files")
    photo = _photo(tmp_path / "a.png", rng)
    for output in (folder, os.path.join(folder, "sub"), os.path.join(folder, "sharp.png")):
        assert _deblur("-m", model_path, photo, "-o", output, "-q") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "[Errno" not in err, err
        assert err.startswith("tfdeblur deblur: error: ") and folder in err


def test_output_that_is_a_file_says_what_exists(tmp_path, rng, model_path, capsys):
    a, b = _photo(tmp_path / "a.png", rng), _photo(tmp_path / "b.png", rng)
    (tmp_path / "out").write_text("a file")
    assert _deblur("-m", model_path, a, b, "-o", tmp_path / "out", "-q") == 2
    err = capsys.readouterr().err
    assert "[Errno" not in err and "a file of that name already exists" in err


def test_strided_model_is_refused_naming_the_file(tmp_path, rng, capsys):
    x = keras.Input((None, None, 3))
    path = tmp_path / "half.keras"
    keras.Model(x, keras.layers.Conv2D(3, 3, strides=2, padding="same")(x)).save(path)
    photo = _photo(tmp_path / "a.png", rng)
    assert _deblur("-m", path, photo, "-o", tmp_path / "out.png") == 2
    err = capsys.readouterr().err
    assert f"tfdeblur deblur: error: model file {path} is not an image-to-image deblurring " \
           f"model" in err
    assert not (tmp_path / "out.png").exists()
    assert main(["export", "-m", str(path), "--saved-model", str(tmp_path / "sm")]) == 2
    assert f"model file {path} is not an image-to-image" in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()


def test_truncated_model_file_is_named_as_such(tmp_path, rng, model_path, capsys):
    data = open(model_path, "rb").read()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[:len(data) // 3])
    assert _deblur("-m", cut, _photo(tmp_path / "a.png", rng), "-o", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "File not found" not in err
