"""The package's one image reader and writer.

``read_image`` returns RGB float32 ``[H, W, 3]`` in [0, 1] whatever the file
holds (8- or 16-bit, grey, RGB or RGBA); ``write_image`` is its inverse and
writes atomically. Every failure names the file: a missing, unreadable,
truncated or undecodable image is an error, never a partial or black image.
"""

from __future__ import annotations

import os
import uuid

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A complete PNG ends with this exact 12-byte IEND chunk (length 0, type, CRC).
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# Colour, depth preserved (uint8 / uint16), RGB order, grey expanded to RGB,
# alpha dropped, EXIF orientation applied.
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH


class ImageFileError(ValueError):
    """An image file that cannot be used: unreadable, truncated or corrupt."""


def _fspath(path) -> str:
    if isinstance(path, bytes):
        return path.decode("utf-8", "surrogateescape")
    if isinstance(path, np.ndarray) and path.shape == ():
        return _fspath(path.item())
    return os.fspath(path)


def is_image_file(path) -> bool:
    """True when ``path`` has one of the extensions :func:`read_image` accepts."""
    return os.path.splitext(_fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _check_complete(data: bytes, path: str) -> None:
    """Raises ImageFileError when a PNG or JPEG stream is visibly truncated.

    Decoders are lenient with a missing tail (libjpeg fills grey, some libpng
    builds return the rows they got), so completeness is checked on the
    bytes: a PNG must contain its IEND chunk, a JPEG must end with EOI.
    """
    if data.startswith(_PNG_SIGNATURE):
        if data.rfind(_PNG_IEND) < 0:
            raise ImageFileError(f"image file {path} is truncated: PNG has no IEND chunk "
                                 f"({len(data)} bytes)")
    elif data.startswith(_JPEG_SOI):
        # Some writers pad after EOI; a truncated stream cannot contain EOI
        # followed only by padding.
        tail = data[-4096:].rstrip(b"\x00\r\n\t ")
        if not tail.endswith(_JPEG_EOI):
            raise ImageFileError(f"image file {path} is truncated: JPEG has no end-of-image "
                                 f"marker ({len(data)} bytes)")


def decode_image(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decodes an encoded image to RGB ``[H, W, 3]`` in its stored depth.

    Args:
        data: the file's bytes.
        path: the name used in error messages.

    Returns:
        ``uint8`` or ``uint16`` array ``[H, W, 3]``, RGB.

    Raises:
        ImageFileError: naming ``path`` when the bytes are empty, truncated or
            not a decodable image.
    """
    if len(data) == 0:
        raise ImageFileError(f"image file {path} is empty")
    _check_complete(data, path)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if img is None:
        raise ImageFileError(f"image file {path} could not be decoded (corrupt or not an image)")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"image file {path} has unsupported sample type {img.dtype} "
                             "(expected 8- or 16-bit integer samples)")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageFileError(f"image file {path} decoded to an unexpected shape {img.shape}")
    return img


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 samples to float32 in [0, 1]."""
    scale = 1.0 / np.iinfo(img.dtype).max
    return img.astype(np.float32) * np.float32(scale)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as RGB float32 ``[H, W, 3]`` in [0, 1].

    8-bit samples are divided by 255, 16-bit samples by 65535; grey images are
    repeated over the three channels and an alpha channel is dropped.

    Args:
        path: a PNG, JPEG, BMP, TIFF or WebP file.

    Returns:
        float32 array ``[H, W, 3]``.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ImageFileError (a ValueError): naming ``path`` when it cannot be read,
            is truncated or does not decode.

    Example:
        >>> img = read_image("sharp/000047.png")  # float32 (720, 1280, 3)
    """
    path = _fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise ImageFileError(f"image file {path} is a directory") from None
    except OSError as e:
        raise ImageFileError(f"image file {path} cannot be read: {e.strerror or e}") from None
    return to_float(decode_image(data, path))


def write_image(path: str | os.PathLike, img, *, bit_depth: int = 8, quality: int = 95) -> None:
    """Writes an RGB (or grey) image atomically; the format follows the extension.

    Floating-point input is taken to be in [0, 1]: it is clipped and rounded
    to ``bit_depth`` bits. Integer input (uint8 / uint16) is written as is.
    The file appears complete or not at all: the image is encoded into a
    temporary file in the same folder, which then replaces ``path``.

    Args:
        path: destination; ``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.tif``/
            ``.tiff`` or ``.webp``. Its folder must exist.
        img: ``[H, W, 3]``, ``[H, W, 1]`` or ``[H, W]`` array (or tensor).
        bit_depth: 8 or 16 for float input (16 only for PNG and TIFF).
        quality: JPEG / WebP quality, 1 to 100.

    Raises:
        ValueError: naming the argument for a bad shape, NaN values or an
            unsupported extension / bit depth.
        ImageFileError: naming ``path`` when it cannot be written.
    """
    path = _fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"path must end with one of {', '.join(IMAGE_EXTENSIONS)}, got {path}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"bit_depth=16 needs a .png or .tif path, got {path}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"img must be [H, W, 3], [H, W, 1] or [H, W], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"img must not be empty, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"img contains NaN values (writing {path})")
        top = 255 if bit_depth == 8 else 65535
        arr = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * top)
        arr = arr.astype(np.uint8 if bit_depth == 8 else np.uint16)
    elif arr.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"uint16 img needs a .png or .tif path, got {path}")
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"img must be float, uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    params = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ImageFileError(f"image file {path} could not be encoded as {ext}")
    try:
        atomic_write_bytes(path, buf.tobytes())
    except OSError as e:
        raise ImageFileError(str(e.strerror or e)) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers see the old file or the complete new one, never a partial file;
    on failure the temporary file is removed.

    Raises:
        OSError: with a message naming ``path`` when its folder is missing or
            the write fails.
    """
    path = _fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    # os.open with mode 0o666 (not mkstemp's 0o600) so the result honours the umask.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise
