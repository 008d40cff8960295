"""Fuzzing the image reader: any bytes under any name give an image or an error naming the file.

``read_image`` (tfdeblur/data/io.py) promises RGB float32 [H, W, 3] in [0, 1]
for a good file and ``ImageFileError`` (a ValueError) naming the file for an
empty, truncated, corrupt or non-image one: never another exception, a
partial image, a crash or a hang. The format is decided by the bytes, not the
name: a good PNG called ``.jpg`` or ``.txt`` reads as the PNG it is.
"""

import os
import tempfile
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency (pip install -e .[dev])")
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tfdeblur.data.io import ImageFileError, read_image

pytestmark = pytest.mark.fuzz
NAMES = st.sampled_from(["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.tif", "f.webp", "g.txt", "h",
                         "i.png.part", "space name.PNG", "ünï.jpg"])
# A decode that takes this long on a few kilobytes counts as a hang.
SLOW_S = 5.0


def _read(data: bytes, name: str):
    """read_image of ``data`` stored as ``name``: (image, None) or (None, the error)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        start = time.monotonic()
        try:
            img, err = read_image(path), None
        except ImageFileError as e:
            img, err = None, e
        assert time.monotonic() - start < SLOW_S, f"read_image took over {SLOW_S} s"
        if err is not None:
            assert path in str(err), f"the error does not name the file: {err}"
        return img, err


def _assert_image(img):
    assert isinstance(img, np.ndarray) and img.dtype == np.float32
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


@st.composite
def encoded_images(draw):
    """A real encoded image: PNG (8 / 16-bit, grey / RGB / RGBA), JPEG, BMP, TIFF or WebP."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = draw(st.sampled_from([1, 3, 4]))
    ext = draw(st.sampled_from([".png", ".png16", ".jpg", ".bmp", ".tif", ".webp"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if ext == ".png16":
        arr, ext = rng.integers(0, 65536, (h, w, channels), dtype=np.uint16), ".png"
    else:
        arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if ext in (".jpg", ".webp") and channels == 4:
        arr = arr[..., :3]
    params = [cv2.IMWRITE_JPEG_QUALITY, draw(st.integers(1, 100))] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, arr[..., 0] if arr.shape[2] == 1 else arr, params)
    assert ok
    return ext, buf.tobytes()


@given(st.binary(max_size=3000), NAMES)
@example(b"", "empty.png")
@example(b"\x89PNG\r\n\x1a\n", "sig_only.png")
@example(b"\xff\xd8\xff\xd9", "soi_eoi.jpg")
@example(b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9", "zeros.jpg")
@example(b"BM" + b"\xff" * 60, "huge_header.bmp")
@example(b"II*\x00" + b"\xff" * 60, "tiff_garbage.tif")
@example(b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp_head.webp")
def test_random_bytes(data, name):
    img, err = _read(data, name)
    if err is None:
        _assert_image(img)
    if not data:
        assert err is not None and "empty" in str(err)


@given(encoded_images(), st.data())
def test_truncated_files_are_errors(encoded, data):
    """Cut anywhere before the end: an error naming the file, never a partial image."""
    ext, blob = encoded
    whole, err = _read(blob, "whole" + ext)
    assert err is None, err
    _assert_image(whole)
    if ext not in (".png", ".jpg"):
        return  # only PNG and JPEG carry an end marker the reader can check
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    img, err = _read(blob[:cut], "cut" + ext)
    assert err is not None, f"a {ext} cut to {cut} of {len(blob)} bytes was read"


@given(encoded_images(), st.data())
def test_corrupted_files_never_crash(encoded, data):
    """Bytes flipped inside a real file: an image or an error naming the file."""
    ext, blob = encoded
    raw = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[i] = data.draw(st.integers(0, 255), label="to")
    img, err = _read(bytes(raw), "flipped" + ext)
    if err is None:
        _assert_image(img)


@given(encoded_images(), NAMES)
def test_wrong_extension_reads_by_content(encoded, name):
    ext, blob = encoded
    right, err = _read(blob, "right" + ext)
    assert err is None, err
    other, err = _read(blob, name)
    assert err is None, err
    np.testing.assert_array_equal(other, right)
