"""Files the fuzz suite (tests/fuzz/test_fuzz_image_io.py) found mishandled, kept as plain tests."""

import time

import cv2
import numpy as np
import pytest

from tfdeblur.data.io import ImageFileError, read_image


def test_bmp_header_beyond_opencv_limits_is_an_image_file_error(tmp_path):
    """A 1x1 BMP whose height field says 1048577 rows (one byte changed): OpenCV refuses
    it with its own cv2.error, which read_image leaked instead of an error naming the file."""
    ok, buf = cv2.imencode(".bmp", np.zeros((1, 1), np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    data[24] = 0x10  # height (int32 at byte 22) = 0x00100001 > CV_IO_MAX_IMAGE_HEIGHT
    path = tmp_path / "tall.bmp"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match="tall.bmp"):
        read_image(path)


def test_png_chunk_length_beyond_the_file_is_refused_quickly(tmp_path):
    """A 1x1 PNG whose IDAT length byte was flipped (0x00 -> 0xd1: 3.5 GB claimed):
    libpng allocated what the length claims (3.4 GB resident, 4 s) before failing."""
    ok, buf = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    assert data[37:41] == b"IDAT"
    data[33] = 0xD1  # first byte of the IDAT chunk's length
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    start = time.monotonic()
    with pytest.raises(ImageFileError, match="bomb.png.*chunk"):
        read_image(path)
    assert time.monotonic() - start < 1.0
