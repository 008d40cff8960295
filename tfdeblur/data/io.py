"""The package's one image reader and writer.

``read_image`` returns RGB float32 ``[H, W, 3]`` in [0, 1] whatever the file
holds (8- or 16-bit, grey, RGB or RGBA); with ``as_stored=True`` it returns the
samples as the file holds them (depth, grey / RGB / RGBA), which is what a tool
that writes a processed copy needs to keep them. ``write_image`` is its inverse
and writes atomically. Every failure names the file: a missing, unreadable,
truncated or undecodable image is an error, never a partial or black image.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from tfdeblur import _atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A complete PNG ends with this exact 12-byte IEND chunk (length 0, type, CRC).
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# Colour, depth preserved (uint8 / uint16), RGB order, grey expanded to RGB,
# alpha dropped, EXIF orientation applied.
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH
# As stored: grey stays one channel, depth preserved, EXIF orientation applied,
# alpha dropped (IMREAD_UNCHANGED, which keeps alpha, ignores EXIF orientation
# for PNG and WebP, so the alpha plane is decoded separately and oriented).
_STORED_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
_PNG_COLOUR_TYPES_WITH_ALPHA = (4, 6)


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
        _check_png_chunks(data, path)
    elif data.startswith(_JPEG_SOI):
        # Some writers pad after EOI; a truncated stream cannot contain EOI
        # followed only by padding.
        tail = data[-4096:].rstrip(b"\x00\r\n\t ")
        if not tail.endswith(_JPEG_EOI):
            raise ImageFileError(f"image file {path} is truncated: JPEG has no end-of-image "
                                 f"marker ({len(data)} bytes)")


def _check_png_chunks(data: bytes, path: str) -> None:
    """Raises ImageFileError when a PNG chunk claims more bytes than the file holds.

    libpng allocates what a chunk's length says before reading it: one flipped
    byte in a 70-byte file made it take 3.4 GB and seconds before failing.
    """
    i = len(_PNG_SIGNATURE)
    while i + 12 <= len(data):  # length, type, data, CRC
        length = int.from_bytes(data[i:i + 4], "big")
        if length > len(data) - i - 12:
            raise ImageFileError(f"image file {path} is corrupt: the PNG chunk at byte {i} "
                                 f"claims {length} bytes, more than the file's {len(data)}")
        if data[i + 4:i + 8] == b"IEND":
            return
        i += 12 + length


#: File signatures of the formats :func:`check_image_file` recognises.
_SIGNATURES = ((_PNG_SIGNATURE, "PNG"), (_JPEG_SOI, "JPEG"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def check_image_file(path: str | os.PathLike) -> None:
    """Checks an image file without decoding it: readable, not empty, a known format
    (by content), and for PNG and JPEG complete (:func:`_check_complete`).

    Cheap enough to run over a whole training set before the first step, so a bad
    file is named up front instead of failing in the middle of training.

    Raises:
        ImageFileError: naming ``path`` and what is wrong.
    """
    path = _fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageFileError(f"image file {path} cannot be read: {e.strerror or e}") from None
    if not data:
        raise ImageFileError(f"image file {path} is empty (0 bytes)")
    known = any(data.startswith(sig) for sig, _ in _SIGNATURES) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    if not known:
        raise ImageFileError(f"image file {path} is not an image of a known format "
                             f"(PNG, JPEG, BMP, TIFF, WebP): it starts with {data[:8]!r}")
    _check_complete(data, path)


def check_image_files(paths, *, skip_bad: bool = False) -> list[str]:
    """Runs :func:`check_image_file` over ``paths``; returns the good ones.

    Args:
        paths: image file paths.
        skip_bad: leave bad files out with a warning naming each, instead of
            raising on the first.

    Raises:
        ImageFileError: the first bad file (``skip_bad=False``), or when every
            file is bad.
    """
    import warnings

    good = []
    for p in paths:
        try:
            check_image_file(p)
        except ImageFileError as e:
            if not skip_bad:
                raise ImageFileError(f"{e} (set skip_bad_files to leave bad files out with a "
                                     "warning)") from None
            warnings.warn(f"{e}: left out", UserWarning, stacklevel=2)
            continue
        good.append(_fspath(p))
    if paths and not good:
        raise ImageFileError(f"all {len(paths)} image files are unusable (see the warnings)")
    return good


def decode_image(data: bytes, path: str = "<bytes>", *, as_stored: bool = False) -> np.ndarray:
    """Decodes an encoded image in its stored depth.

    Args:
        data: the file's bytes.
        path: the name used in error messages.
        as_stored: keep the file's channels (grey ``[H, W]``, RGB ``[H, W, 3]``
            or RGBA ``[H, W, 4]``) instead of converting to RGB.

    Returns:
        ``uint8`` or ``uint16`` array, RGB ``[H, W, 3]`` (or as stored).

    Raises:
        ImageFileError: naming ``path`` when the bytes are empty, truncated or
            not a decodable image.
    """
    if len(data) == 0:
        raise ImageFileError(f"image file {path} is empty")
    _check_complete(data, path)
    buf = np.frombuffer(data, np.uint8)
    try:
        img = cv2.imdecode(buf, _STORED_FLAGS if as_stored else _DECODE_FLAGS)
    except cv2.error as e:  # OpenCV's own checks, e.g. a header claiming 10^6 rows
        raise ImageFileError(f"image file {path} could not be decoded: "
                             f"{e.err or 'OpenCV error'}") from None
    if img is None:
        raise ImageFileError(f"image file {path} could not be decoded (corrupt or not an image)")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"image file {path} has unsupported sample type {img.dtype} "
                             "(expected 8- or 16-bit integer samples)")
    shape_ok = (img.ndim == 3 and img.shape[2] == 3) or (as_stored and img.ndim == 2)
    if not shape_ok or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageFileError(f"image file {path} decoded to an unexpected shape {img.shape}")
    if not as_stored:
        return img
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    alpha = _decode_alpha(buf, data, path, img)
    if alpha is None:
        return img
    colour = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return np.concatenate([colour, alpha[..., None]], axis=2)


def _may_have_alpha(data: bytes) -> bool:
    if data.startswith(_PNG_SIGNATURE):
        # IHDR is the first chunk; its colour type is byte 25. A palette or grey
        # image can still carry transparency in a tRNS chunk.
        return (len(data) > 25 and data[25] in _PNG_COLOUR_TYPES_WITH_ALPHA) or b"tRNS" in data
    return not data.startswith(_JPEG_SOI)  # JPEG has no alpha; TIFF, WebP, BMP may


def _decode_alpha(buf: np.ndarray, data: bytes, path: str, oriented: np.ndarray):
    """The alpha plane oriented like ``oriented`` (RGB or grey), or None without alpha."""
    if not _may_have_alpha(data):
        return None
    try:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageFileError(f"image file {path}: its alpha channel could not be decoded: "
                             f"{e.err or 'OpenCV error'}") from None
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4 or raw.dtype != oriented.dtype:
        return None
    raw_colour = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB)
    if oriented.ndim == 2:
        raw_colour = raw_colour[..., 0]
    # The decoder applied the EXIF orientation to the colour but not to the
    # unchanged decode (PNG, WebP): find which of the eight flips / rotations
    # did it. In EXIF order; the identity is by far the most common.
    for k, flip in ((0, False), (0, True), (2, False), (2, True),
                    (1, True), (3, False), (3, True), (1, False)):
        cand = np.rot90(raw_colour, k)
        cand = cand[:, ::-1] if flip else cand
        if cand.shape == oriented.shape and np.array_equal(cand, oriented):
            a = np.rot90(raw[..., 3], k)
            return np.ascontiguousarray(a[:, ::-1] if flip else a)
    raise ImageFileError(f"image file {path}: its alpha channel does not match the "
                         f"orientation of its colour channels")


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 samples to float32 in [0, 1]."""
    scale = 1.0 / np.iinfo(img.dtype).max
    return img.astype(np.float32) * np.float32(scale)


def read_image(path: str | os.PathLike, *, as_stored: bool = False) -> np.ndarray:
    """Reads an image file as RGB float32 ``[H, W, 3]`` in [0, 1] (or as stored).

    8-bit samples are divided by 255, 16-bit samples by 65535; grey images are
    repeated over the three channels and an alpha channel is dropped. EXIF
    orientation is applied.

    Args:
        path: a PNG, JPEG, BMP, TIFF or WebP file.
        as_stored: return the samples as the file holds them instead: ``uint8``
            or ``uint16``, grey ``[H, W]``, RGB ``[H, W, 3]`` or RGBA
            ``[H, W, 4]`` (grey with alpha becomes RGBA).

    Returns:
        float32 array ``[H, W, 3]`` (or the stored samples).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ImageFileError (a ValueError): naming ``path`` when it cannot be read,
            is truncated or does not decode.

    Example:
        >>> img = read_image("sharp/000047.png")  # float32 (720, 1280, 3)
        >>> read_image("logo.png", as_stored=True).shape  # uint8 (64, 64, 4)
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
    if as_stored:
        return decode_image(data, path, as_stored=True)
    return to_float(decode_image(data, path))


def write_image(path: str | os.PathLike, img, *, bit_depth: int = 8, quality: int = 95) -> None:
    """Writes an RGB, RGBA or grey image atomically; the format follows the extension.

    Floating-point input is taken to be in [0, 1]: it is clipped and rounded
    to ``bit_depth`` bits. Integer input (uint8 / uint16) is written as is.
    The file appears complete or not at all: the image is encoded into a
    temporary file in the same folder, which then replaces ``path``.

    Args:
        path: destination; ``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.tif``/
            ``.tiff`` or ``.webp``. Its folder must exist.
        img: ``[H, W, 3]`` RGB, ``[H, W, 4]`` RGBA (not for JPEG), ``[H, W, 1]`` or
            ``[H, W]`` grey array (or tensor).
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
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"img must be [H, W, 3], [H, W, 4], [H, W, 1] or [H, W], "
                         f"got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 4 and ext in (".jpg", ".jpeg"):
        raise ValueError(f"an RGBA img needs a format with alpha (.png, .tif, .webp, .bmp), "
                         f"got {path}")
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
        arr = cv2.cvtColor(np.ascontiguousarray(arr),
                           cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
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
    """Writes ``data`` to ``path`` atomically (:func:`tfdeblur._atomic.write_file`).

    Readers see the old file or the complete new one, never a partial file;
    on failure the temporary file is removed.

    Raises:
        OSError: with a message naming ``path`` when its folder is missing or
            the write fails.
    """
    _atomic.write_file(_fspath(path), data)
