"""The one image reader / writer: exact values, channel order, and errors naming the file."""

import os

import cv2
import numpy as np
import pytest

from tfdeblur.data.io import ImageFileError, atomic_write_bytes, read_image, write_image


def _cv2_write(path, rgb_u):
    """Independent writer (OpenCV directly, BGR order) for reader checks."""
    arr = rgb_u if rgb_u.ndim == 2 else np.ascontiguousarray(rgb_u[..., ::-1])
    assert cv2.imwrite(str(path), arr)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (13, 10)])
def test_read_png_8bit_exact(tmp_path, rng, shape):
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    _cv2_write(tmp_path / "a.png", img)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == shape + (3,)
    np.testing.assert_allclose(out, img.astype(np.float64) / 255.0, rtol=0, atol=1e-7)


def test_read_png_16bit_exact(tmp_path, rng):
    img = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    _cv2_write(tmp_path / "a.png", img)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), img / 65535.0, rtol=0, atol=1e-7)


def test_channel_order_is_rgb(tmp_path):
    red = np.zeros((2, 3, 3), np.uint8)
    red[..., 0] = 255
    _cv2_write(tmp_path / "red.png", red)
    out = read_image(tmp_path / "red.png")
    assert (out[..., 0] == 1).all() and (out[..., 1:] == 0).all()


def test_grey_and_alpha(tmp_path, rng):
    grey = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    _cv2_write(tmp_path / "g.png", grey)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], grey / 255.0, atol=1e-7)
    rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), rgba)  # BGRA on disk
    out = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out, rgba[..., 2::-1] / 255.0, atol=1e-7)


def test_jpeg_reads_close(tmp_path):
    img = np.full((16, 16, 3), 128, np.uint8)
    _cv2_write(tmp_path / "a.jpg", img)
    np.testing.assert_allclose(read_image(tmp_path / "a.jpg"), 128 / 255, atol=3 / 255)


@pytest.mark.parametrize("ext, keep, match", [
    *((".png", keep, r"cut\.png.*truncated") for keep in (0.5, 0.9, -1, -12)),
    *((".jpg", keep, r"cut\.jpg") for keep in (0.3, 0.8, -2)),
])
def test_truncated_file_is_an_error_naming_it(tmp_path, rng, ext, keep, match):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    _cv2_write(tmp_path / f"full{ext}", img)
    data = (tmp_path / f"full{ext}").read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    (tmp_path / f"cut{ext}").write_bytes(data[:cut])
    with pytest.raises(ImageFileError, match=match):
        read_image(tmp_path / f"cut{ext}")


def test_corrupt_png_data_is_an_error(tmp_path, rng):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    _cv2_write(tmp_path / "a.png", img)
    data = bytearray((tmp_path / "a.png").read_bytes())
    i = data.find(b"IDAT") + 40
    data[i:i + 8] = bytes(255 - b for b in data[i:i + 8])
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")


def test_other_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"empty\.png.*empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image at all")
    with pytest.raises(ImageFileError, match=r"text\.png"):
        read_image(tmp_path / "text.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageFileError, match=r"dir\.png"):
        read_image(tmp_path / "dir.png")


def test_write_read_roundtrip(tmp_path, rng):
    x = rng.random((7, 5, 3)).astype(np.float32)
    write_image(tmp_path / "a.png", x)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), np.rint(x * 255) / 255, atol=1e-7)
    write_image(tmp_path / "b.png", x, bit_depth=16)
    np.testing.assert_allclose(read_image(tmp_path / "b.png"), x, atol=0.5 / 65535 + 1e-7)
    # Out-of-range values are clipped, grey is expanded, uint8 is written as is.
    write_image(tmp_path / "c.png", np.array([[-0.5, 2.0]]))
    np.testing.assert_array_equal(read_image(tmp_path / "c.png")[..., 0], [[0, 1]])
    u = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    write_image(tmp_path / "d.bmp", u)
    np.testing.assert_allclose(read_image(tmp_path / "d.bmp"), u / 255, atol=1e-7)


def test_write_is_atomic_and_replaces(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", np.zeros((2, 2, 3)))
    write_image(tmp_path / "a.png", np.ones((3, 3, 3)))
    assert read_image(tmp_path / "a.png").shape == (3, 3, 3)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temporary file left

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ImageFileError, match=r"a\.png"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3)))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
    assert read_image(tmp_path / "a.png").shape == (3, 3, 3)  # old file intact


def test_write_errors_name_the_argument(tmp_path):
    with pytest.raises(ImageFileError, match="does not exist"):
        write_image(tmp_path / "missing" / "a.png", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="img must be"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "a.png", np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match="path must end"):
        write_image(tmp_path / "a.xyz", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2, 3)), bit_depth=16)
    with pytest.raises(ValueError, match="empty"):
        write_image(tmp_path / "a.png", np.zeros((0, 2, 3)))


def test_atomic_write_bytes(tmp_path):
    atomic_write_bytes(tmp_path / "f.bin", b"abc")
    assert (tmp_path / "f.bin").read_bytes() == b"abc"
    with pytest.raises(OSError, match=r"f\.bin"):
        atomic_write_bytes(tmp_path / "no" / "f.bin", b"abc")


def test_read_as_stored_keeps_depth_channels_and_alpha(tmp_path, rng):
    grey16 = rng.integers(0, 65536, (4, 5), dtype=np.uint16)
    _cv2_write(tmp_path / "g16.png", grey16)
    out = read_image(tmp_path / "g16.png", as_stored=True)
    assert out.dtype == np.uint16 and out.shape == (4, 5)
    np.testing.assert_array_equal(out, grey16)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    _cv2_write(tmp_path / "rgb.jpg", rgb)
    assert read_image(tmp_path / "rgb.jpg", as_stored=True).shape == (4, 5, 3)
    for ext, dtype in ((".png", np.uint8), (".png", np.uint16), (".tif", np.uint16),
                       (".webp", np.uint8), (".bmp", np.uint8)):
        rgba = rng.integers(0, np.iinfo(dtype).max + 1, (6, 7, 4)).astype(dtype)
        path = tmp_path / f"rgba_{np.dtype(dtype).name}{ext}"
        params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # lossless
        assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), params)
        out = read_image(path, as_stored=True)
        assert out.dtype == dtype and out.shape == (6, 7, 4), path
        np.testing.assert_array_equal(out, rgba)
        # The default read is unchanged: RGB float, alpha dropped.
        np.testing.assert_allclose(read_image(path), rgba[..., :3] / np.iinfo(dtype).max,
                                   atol=1e-7)


# EXIF orientation -> how the stored pixels are shown (the EXIF 2.3 table).
_EXIF_ORIENTATIONS = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1),
}


def _png_with_orientation(png: bytes, orientation: int) -> bytes:
    """Inserts an eXIf chunk (a big-endian TIFF header, one IFD entry: Orientation)."""
    import struct
    import zlib

    exif = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif) & 0xFFFFFFFF)
    end_of_ihdr = 8 + 8 + 13 + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def test_read_as_stored_orients_alpha_like_the_colour(tmp_path, rng):
    rgba = rng.integers(0, 256, (6, 9, 4), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert ok
    for orientation, shown in _EXIF_ORIENTATIONS.items():
        path = tmp_path / f"o{orientation}.png"
        path.write_bytes(_png_with_orientation(buf.tobytes(), orientation))
        expected = shown(rgba)
        np.testing.assert_array_equal(read_image(path, as_stored=True), expected)
        np.testing.assert_allclose(read_image(path), expected[..., :3] / 255, atol=1e-7)


def test_write_rgba_and_grey_16bit(tmp_path, rng):
    rgba = rng.integers(0, 65536, (3, 4, 4), dtype=np.uint16)
    write_image(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", as_stored=True), rgba)
    x = rng.random((3, 4, 4)).astype(np.float32)
    write_image(tmp_path / "b.tif", x, bit_depth=16)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif", as_stored=True),
                                  np.rint(x.astype(np.float64) * 65535).astype(np.uint16))
    g = rng.random((3, 4)).astype(np.float32)
    write_image(tmp_path / "g.png", g, bit_depth=16)
    out = read_image(tmp_path / "g.png", as_stored=True)
    assert out.dtype == np.uint16 and out.shape == (3, 4)
    with pytest.raises(ValueError, match="an RGBA img needs a format with alpha"):
        write_image(tmp_path / "a.jpg", rgba.astype(np.uint8))


def test_bad_training_files_are_named_before_the_first_element(tmp_path):
    """A corrupt photo in a training folder: an error naming it when the dataset is made
    (not an abort mid-training), or with skip_bad_files a warning and the file left out."""
    import warnings

    from tfdeblur.data import paired_dataset, synthetic_dataset
    from tfdeblur.data.io import ImageFileError, check_image_file, write_image

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        write_image(photos / f"p{i}.png", rng.uniform(0, 1, (40, 40, 3)))
    good = (photos / "p0.png").read_bytes()
    (photos / "p1.png").write_bytes(good[: len(good) // 2])          # truncated
    (photos / "p2.png").write_bytes(b"")                              # empty
    (photos / "p3.jpg").write_bytes(b"not an image at all")          # not an image
    check_image_file(photos / "p0.png")
    for name, why in (("p1.png", "truncated"), ("p2.png", "empty"), ("p3.jpg", "known format")):
        with pytest.raises(ImageFileError, match=why):
            check_image_file(photos / name)
    with pytest.raises(ImageFileError, match=r"p1\.png.*skip_bad_files"):
        synthetic_dataset(str(photos), patch_size=24)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = synthetic_dataset(str(photos), patch_size=24, skip_bad_files=True)
    named = " ".join(str(w.message) for w in caught)
    assert all(n in named for n in ("p1.png", "p2.png", "p3.jpg")) and "p0.png" not in named
    assert len(list(ds)) == 1

    pairs = tmp_path / "pairs"
    for sub in ("blur", "sharp"):
        (pairs / sub).mkdir(parents=True)
        for i in range(2):
            write_image(pairs / sub / f"{i}.png", rng.uniform(0, 1, (20, 20, 3)))
    (pairs / "sharp" / "1.png").write_bytes(good[:100])
    with pytest.raises(ImageFileError, match=r"sharp/1\.png"):
        paired_dataset(str(pairs))
    with pytest.warns(UserWarning, match=r"sharp/1\.png"):
        assert len(list(paired_dataset(str(pairs), skip_bad_files=True))) == 1


def test_config_skip_bad_files_shorthand(tmp_path):
    from tfdeblur.data.io import write_image
    from tfdeblur.training import config as config_lib

    for sub in ("blur", "sharp"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "0.png", np.zeros((20, 20, 3)))
    root = str(tmp_path)
    out = config_lib._data_section(
        {"skip_bad_files": True, "train": {"type": "paired", "root": root, "batch_size": 1,
                                           "patch_size": 16},
         "validation": {"a": {"type": "paired", "root": root},
                        "b": {"type": "paired", "root": root, "skip_bad_files": False}}},
        ".", 0)
    # The shorthand sets every section's default; a section may still say otherwise.
    assert out["train"]["skip_bad_files"] is True
    assert out["validation"]["a"]["skip_bad_files"] is True
    assert out["validation"]["b"]["skip_bad_files"] is False
    with pytest.raises(config_lib.ConfigError, match="data.skip_bad_files"):
        config_lib._data_section({"skip_bad_files": "yes", "train": {}}, ".", 0)
