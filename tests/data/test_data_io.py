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


@pytest.mark.parametrize("keep", [0.5, 0.9, -1, -12])
def test_truncated_png_is_an_error_naming_the_file(tmp_path, rng, keep):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    _cv2_write(tmp_path / "full.png", img)
    data = (tmp_path / "full.png").read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    (tmp_path / "cut.png").write_bytes(data[:cut])
    with pytest.raises(ImageFileError, match=r"cut\.png.*truncated"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("keep", [0.3, 0.8, -2])
def test_truncated_jpeg_is_an_error(tmp_path, rng, keep):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    _cv2_write(tmp_path / "full.jpg", img)
    data = (tmp_path / "full.jpg").read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    (tmp_path / "cut.jpg").write_bytes(data[:cut])
    with pytest.raises(ImageFileError, match=r"cut\.jpg"):
        read_image(tmp_path / "cut.jpg")


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
