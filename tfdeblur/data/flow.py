"""Bidirectional DIS optical flow between sharp frames, cached on disk.

SVDN (Yuan, Su, Ma, CVPR 2020, sec. 3.3) supervises its deformable sampling
points with the optical flows from each sharp frame to the previous and the
next sharp frame of its video, computed with DIS (Kroeger et al. 2016).

Convention used throughout the package: a flow ``f`` from frame A to frame B
is ``[H, W, 2]`` float32 ``(dx, dy)`` in pixels (x to the right, y down) with
``A(x, y) ~ B(x + dx, y + dy)``. A *bidirectional flow* is ``[H, W, 4]``:
channels 0-1 the flow to the previous frame, channels 2-3 to the next one.

Cache entries are one file per frame, written atomically, holding a header
with the identity (path, size, modification time) of the three source frames,
the DIS preset and a CRC-32 of the samples: a stale, truncated or corrupted
entry is detected and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from tfdeblur.data.io import _fspath, atomic_write_bytes, read_image
from tfdeblur.data.progress import ProgressBar

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_MAGIC = b"TFDBFLOW"
_FORMAT_VERSION = 1
_DTYPES = ("float16", "float32")


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")


def _to_grey_u8(frame, name: str) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"{name} must be [H, W, 3] or [H, W], got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name} must be uint8 or float in [0, 1], got {a.dtype}")
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(a)


def dis_flow(frame0, frame1, *, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from ``frame0`` to ``frame1``: ``frame0(p) ~ frame1(p + flow(p))``.

    Args:
        frame0, frame1: ``[H, W, 3]`` RGB or ``[H, W]`` grey, uint8 or float
            in [0, 1], of one size (colour is converted to grey).
        preset: OpenCV DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"``.

    Returns:
        float32 ``[H, W, 2]`` (dx, dy) in pixels.

    Example:
        >>> flow = dis_flow(read_image("f1.png"), read_image("f2.png"))
    """
    _check_preset(preset)
    a, b = _to_grey_u8(frame0, "frame0"), _to_grey_u8(frame1, "frame1")
    if a.shape != b.shape:
        raise ValueError(f"frame0 and frame1 must have the same size, got {a.shape} and {b.shape}")
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    return dis.calc(a, b, None).astype(np.float32, copy=False)


def bidirectional_flow(prev, cur, nxt, *, preset: str = "medium") -> np.ndarray:
    """Flows from ``cur`` to ``prev`` and to ``nxt``, stacked to ``[H, W, 4]``.

    At the ends of a sequence one neighbour is ``None``: its flow is taken as
    the opposite of the other (motion assumed constant across the frame),
    which is how Kim and Lee's piecewise-linear blur model treats one-sided
    motion. With both missing the flows are zero.

    Args:
        prev, cur, nxt: frames as for :func:`dis_flow`; ``prev`` / ``nxt``
            may be ``None``.
        preset: DIS preset.

    Returns:
        float32 ``[H, W, 4]``: (dx, dy) to ``prev``, then (dx, dy) to ``nxt``.
    """
    f_prev = None if prev is None else dis_flow(cur, prev, preset=preset)
    f_next = None if nxt is None else dis_flow(cur, nxt, preset=preset)
    if f_prev is None and f_next is None:
        h, w = np.asarray(cur).shape[:2]
        return np.zeros((h, w, 4), np.float32)
    if f_prev is None:
        f_prev = -f_next
    if f_next is None:
        f_next = -f_prev
    return np.concatenate([f_prev, f_next], axis=-1)


def sequence_triplets(frames: Sequence[str]) -> list[tuple[str | None, str, str | None]]:
    """``(previous, current, next)`` per frame of an ordered sequence (``None`` at the ends)."""
    frames = list(frames)
    return [(frames[i - 1] if i > 0 else None, f, frames[i + 1] if i + 1 < len(frames) else None)
            for i, f in enumerate(frames)]


def default_cache_dir(root: str | os.PathLike) -> str:
    """``$XDG_CACHE_HOME/tfdeblur/flow/<hash of root>`` (``~/.cache`` without XDG_CACHE_HOME).

    Outside the dataset, which may be read-only.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha1(os.path.abspath(_fspath(root)).encode()).hexdigest()[:16]
    return os.path.join(base, "tfdeblur", "flow", key)


class FlowCache:
    """Disk cache of bidirectional DIS flows, one file per frame.

    Args:
        cache_dir: folder of the entries (created when needed).
        preset: DIS preset used to compute missing entries.
        dtype: ``"float16"`` (default: half the disk, 1/32 px steps below
            64 px, well under DIS's error) or ``"float32"``.

    Example:
        >>> cache = FlowCache("/tmp/flows")
        >>> cache.precompute(sequence_triplets(sorted_sharp_paths))
        >>> flow = cache.get(prev_path, cur_path, next_path)   # [H, W, 4]
    """

    def __init__(self, cache_dir: str | os.PathLike, *, preset: str = "medium",
                 dtype: str = "float16"):
        _check_preset(preset)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.cache_dir = os.path.abspath(_fspath(cache_dir))
        self.preset = preset
        self.dtype = dtype

    def path_for(self, cur: str | os.PathLike) -> str:
        """The entry file of frame ``cur``: ``<cache_dir>/<folder>/<stem>.<hash>.flow``."""
        cur = os.path.abspath(_fspath(cur))
        digest = hashlib.sha1(cur.encode()).hexdigest()[:12]
        seq = os.path.basename(os.path.dirname(os.path.dirname(cur))) or "_"
        stem = os.path.splitext(os.path.basename(cur))[0]
        return os.path.join(self.cache_dir, seq, f"{stem}.{digest}.flow")

    def _signature(self, prev, cur, nxt) -> str:
        parts = [f"v{_FORMAT_VERSION}", self.preset]
        for p in (prev, cur, nxt):
            if p is None:
                parts.append("-")
                continue
            p = os.path.abspath(_fspath(p))
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise FileNotFoundError(f"frame {p} does not exist") from None
            parts.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    @staticmethod
    def _read_header(f) -> dict | None:
        head = f.read(len(_MAGIC) + 4)
        if len(head) != len(_MAGIC) + 4 or head[:len(_MAGIC)] != _MAGIC:
            return None
        (n,) = struct.unpack("<I", head[len(_MAGIC):])
        if n > 1 << 16:
            return None
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(header, dict) or header.get("version") != _FORMAT_VERSION:
            return None
        header["_offset"] = len(_MAGIC) + 4 + n
        return header

    def _entry_ok(self, path: str, signature: str) -> bool:
        """Cheap check (header and file size, no checksum) used before a long precompute."""
        try:
            with open(path, "rb") as f:
                header = self._read_header(f)
            if header is None or header.get("signature") != signature:
                return False
            shape, dtype = header["shape"], np.dtype(header["dtype"])
            expected = header["_offset"] + int(np.prod(shape)) * dtype.itemsize
            return os.path.getsize(path) == expected
        except (OSError, KeyError, TypeError, ValueError):
            return False

    def load(self, prev, cur, nxt) -> np.ndarray | None:
        """The cached flow of ``cur``, or ``None`` when missing, stale, truncated or corrupt."""
        path = self.path_for(cur)
        signature = self._signature(prev, cur, nxt)
        try:
            with open(path, "rb") as f:
                header = self._read_header(f)
                if header is None or header.get("signature") != signature:
                    return None
                shape = tuple(int(v) for v in header["shape"])
                dtype = np.dtype(header["dtype"])
                payload = f.read()
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError, ValueError):
            return None
        if (len(shape) != 3 or shape[2] != 4
                or len(payload) != int(np.prod(shape)) * dtype.itemsize
                or zlib.crc32(payload) != header.get("crc32")):
            return None
        return np.frombuffer(payload, dtype).reshape(shape).astype(np.float32)

    def compute(self, prev, cur, nxt) -> np.ndarray:
        """Computes the flow of ``cur`` from the frame files and stores it (atomically).

        Returns:
            float32 ``[H, W, 4]``, rounded to the cache's ``dtype``.
        """
        frames = [None if p is None else read_image(p) for p in (prev, cur, nxt)]
        if prev is None and nxt is None:
            warnings.warn(f"frame {_fspath(cur)} has no neighbour in its sequence: "
                          "its flows are zero", stacklevel=2)
        for p, fr in zip((prev, nxt), (frames[0], frames[2]), strict=True):
            if fr is not None and fr.shape != frames[1].shape:
                raise ValueError(f"frame {_fspath(p)} is {fr.shape[1]}x{fr.shape[0]} but its "
                                 f"neighbour {_fspath(cur)} is "
                                 f"{frames[1].shape[1]}x{frames[1].shape[0]}")
        # Returned at the stored precision, so a first epoch (computed) and
        # later ones (loaded) see the same values.
        flow = bidirectional_flow(*frames, preset=self.preset).astype(self.dtype)
        self._store(self.path_for(cur), flow, self._signature(prev, cur, nxt))
        return flow.astype(np.float32)

    def _store(self, path: str, flow: np.ndarray, signature: str) -> None:
        payload = np.ascontiguousarray(flow, dtype=self.dtype).tobytes()
        header = json.dumps({"version": _FORMAT_VERSION, "shape": list(flow.shape),
                             "dtype": self.dtype, "preset": self.preset,
                             "signature": signature, "crc32": zlib.crc32(payload)}).encode()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, _MAGIC + struct.pack("<I", len(header)) + header + payload)

    def get(self, prev, cur, nxt) -> np.ndarray:
        """The flow of ``cur`` (``[H, W, 4]`` float32), recomputed when the entry is not valid."""
        flow = self.load(prev, cur, nxt)
        return flow if flow is not None else self.compute(prev, cur, nxt)

    def precompute(self, triplets: Iterable[tuple], *, workers: int | None = None,
                   progress: bool = True) -> int:
        """Computes every missing or stale entry, with a progress bar.

        Entries are checked by header and size here (no checksum: that is
        verified on every load, which recomputes a corrupted entry).

        Args:
            triplets: ``(prev, cur, next)`` path triplets, e.g. from
                :func:`sequence_triplets`.
            workers: threads (OpenCV releases the GIL); default
                ``min(4, os.cpu_count())``.
            progress: draw a progress bar on stderr.

        Returns:
            The number of entries computed.
        """
        triplets = list(triplets)
        todo = [t for t in triplets
                if not self._entry_ok(self.path_for(t[1]), self._signature(*t))]
        if not todo:
            return 0
        workers = workers or min(4, os.cpu_count() or 1)
        with ProgressBar(len(todo), f"optical flow ({len(todo)} of {len(triplets)} frames)",
                         enabled=progress) as bar:
            def one(t):
                self.compute(*t)
                bar.update()

            if workers == 1:
                for t in todo:
                    one(t)
            else:
                with ThreadPoolExecutor(workers) as pool:
                    for fut in [pool.submit(one, t) for t in todo]:
                        fut.result()
        return len(todo)
