"""Synthetic motion blur from sharp photos: camera-shake trajectories, recorded kernels,
and spatially variant blur from a foreground layer moving differently from the background.

SVRNN (Zhang et al. CVPR 2018, sec. 3.3) trains on sharp frames blurred with
random motion of at most 20 pixels, half of them with pasted foreground
objects blurred by their own motion. This module makes such pairs and keeps
the motion that made them, as the bidirectional flow of :mod:`tfdeblur.data.flow`
(the sharp image is the scene at mid-exposure; the flow to the "previous" /
"next" frame is the displacement at the start / end of the exposure).

Conventions: a kernel ``k`` is a 2-D array with odd sides whose centre
element is displacement (0, 0), and ``k[cy + dy, cx + dx]`` is the fraction of
the exposure the content spent displaced by (dx, dy) pixels, so
``blurry(p) = sum_d k(d) sharp(p - d)`` (a true convolution). Trajectories are
``[T, 2]`` arrays of (x, y) displacements at equally spaced times.
"""

from __future__ import annotations

import dataclasses
import os
import re

import cv2
import numpy as np
import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.data.io import _fspath, check_image_files, is_image_file, read_image

# --------------------------------------------------------------------------- motion


def _trajectory_samples(length, samples: int | None) -> int:
    """Checks a trajectory's ``length`` and ``samples`` (odd, >= 3; default from the length)."""
    length = checks.check_number(length, "length", minimum=0)
    samples = checks.check_int(samples, "samples", minimum=3, allow_none=True)
    if samples is None:
        samples = max(65, int(8 * length) + 1)
    return samples + 1 - samples % 2


def random_trajectory(length: float, rng: np.random.Generator, *, samples: int | None = None,
                      smoothness: float = 0.3, jerks: float = 0.5) -> np.ndarray:
    """A continuous random camera-shake trajectory whose extent is ``length`` pixels.

    The velocity is a Gauss-Markov process (it keeps its direction for about
    ``smoothness`` of the exposure, then drifts), with abrupt jerks at random
    times, the two ingredients of hand-shake trajectories in Boracchi and Foi
    (TIP 2012). The path is translated so that the mid-exposure sample is at
    (0, 0) and scaled so that its extent (the largest distance between two of
    its points) is ``length``: shapes range from near-straight lines to curls.

    Args:
        length: extent in pixels, >= 0.
        rng: NumPy random generator.
        samples: number of time samples (made odd); default grows with
            ``length`` so that consecutive samples are under 1/4 pixel apart on
            average.
        smoothness: velocity correlation time as a fraction of the exposure, > 0.
        jerks: expected number of jerks per exposure, >= 0.

    Returns:
        float64 ``[T, 2]`` (x, y) displacements, ``T`` odd, ``traj[T // 2] == 0``.

    Example:
        >>> traj = random_trajectory(15.0, np.random.default_rng(0))
    """
    samples = _trajectory_samples(length, samples)
    if not smoothness > 0:
        raise ValueError(f"smoothness must be > 0, got {smoothness}")
    if not jerks >= 0:
        raise ValueError(f"jerks must be >= 0, got {jerks}")
    rho = np.exp(-1.0 / max(smoothness * samples, 1e-3))
    noise = np.sqrt(1 - rho ** 2) * rng.standard_normal((samples, 2))
    jerk = ((rng.random(samples) < jerks / samples)[:, None]
            * 2.0 * rng.standard_normal((samples, 2)))
    angle = rng.uniform(0, 2 * np.pi)
    v = np.array([np.cos(angle), np.sin(angle)])
    vel = np.zeros((samples, 2))
    for t in range(1, samples):
        v = rho * v + noise[t] + jerk[t]
        vel[t] = v
    pos = np.cumsum(vel, axis=0)
    pos -= pos[samples // 2]
    extent = _extent(pos)
    if extent < 1e-9 or length == 0:
        return np.zeros_like(pos)
    return pos * (length / extent)


def linear_trajectory(dx: float, dy: float, samples: int = 65) -> np.ndarray:
    """Uniform straight motion from ``-(dx, dy) / 2`` to ``+(dx, dy) / 2`` (odd ``samples``)."""
    samples = int(samples) + 1 - int(samples) % 2
    t = np.linspace(-0.5, 0.5, samples)[:, None]
    return t * np.array([[dx, dy]], np.float64)


def accelerated_trajectory(length: float, rng: np.random.Generator, *,
                           samples: int | None = None, acceleration: float = 1.5,
                           curvature: float = 1.0, shake: float = 0.1) -> np.ndarray:
    """A smooth motion path with acceleration: a pan, a walk, a moving object.

    The speed changes linearly over the exposure, ``|v(t)| = 1 + a t`` for
    ``t`` in [-1/2, 1/2] with ``a`` uniform in ``[-acceleration,
    acceleration]`` (clipped so that the speed stays >= 0.1 of its mean), the
    direction turns at a constant rate ``kappa`` uniform in
    ``[-curvature, curvature]`` radians per exposure, and a small
    Gauss-Markov shake (:func:`random_trajectory`) of ``shake`` x the extent
    is added. As with :func:`random_trajectory`, the mid-exposure sample is
    (0, 0) and the extent is ``length``.

    Args:
        length: extent in pixels, >= 0.
        rng: NumPy random generator.
        samples: number of time samples (made odd); default as
            :func:`random_trajectory`.
        acceleration: largest relative speed change over the exposure, >= 0.
        curvature: largest turn of the direction over the exposure (radians), >= 0.
        shake: relative amplitude of the added shake, >= 0.

    Returns:
        float64 ``[T, 2]`` (x, y) displacements, ``T`` odd, ``traj[T // 2] == 0``.
    """
    samples = _trajectory_samples(length, samples)
    for name, v in (("acceleration", acceleration), ("curvature", curvature), ("shake", shake)):
        checks.check_number(v, name, minimum=0)
    t = np.linspace(-0.5, 0.5, samples)
    a = rng.uniform(-acceleration, acceleration)
    speed = np.maximum(1.0 + a * t, 0.1)
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-curvature, curvature) * t
    vel = np.stack([speed * np.cos(angle), speed * np.sin(angle)], 1) / (samples - 1)
    pos = np.concatenate([np.zeros((1, 2)), np.cumsum(vel[1:], axis=0)])
    pos -= pos[samples // 2]
    extent = _extent(pos)
    if extent < 1e-9 or length == 0:
        return np.zeros_like(pos)
    pos /= extent
    if shake > 0:
        pos += shake * random_trajectory(1.0, rng, samples=samples)
        pos -= pos[samples // 2]
        pos /= max(_extent(pos), 1e-9)
    return pos * length


def sample_frames(trajectory: np.ndarray, frames: int) -> np.ndarray:
    """The positions of ``frames`` equally spaced instants of a trajectory.

    An averaged high-speed video (the GoPro dataset averages 7-13 frames of
    a 240 fps camera) sees the motion at discrete instants, not continuously:
    large motions then show separate copies rather than smooth streaks.
    Rasterise the result with :func:`frames_kernel`.

    Args:
        trajectory: ``[T, 2]`` (x, y) displacements at equally spaced times.
        frames: number of instants, >= 1 (the first and last are the ends).

    Returns:
        float64 ``[frames, 2]``.
    """
    traj = np.asarray(trajectory, np.float64)
    if traj.ndim != 2 or traj.shape[1] != 2 or len(traj) < 1 or not np.isfinite(traj).all():
        raise ValueError(f"trajectory must be a finite [T, 2] array, got shape {traj.shape}")
    frames = int(frames)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if len(traj) == 1 or frames == 1:
        return traj[[len(traj) // 2]]
    src = np.linspace(0.0, 1.0, len(traj))
    dst = np.linspace(0.0, 1.0, frames)
    return np.stack([np.interp(dst, src, traj[:, 0]), np.interp(dst, src, traj[:, 1])], 1)


def frames_kernel(points: np.ndarray, size: int | None = None) -> np.ndarray:
    """A kernel of equal weights at discrete displacements (bilinearly splatted).

    Args:
        points: ``[F, 2]`` (x, y) displacements, e.g. from :func:`sample_frames`.
        size: kernel side (odd); default the smallest that holds them.

    Returns:
        ``[size, size]`` float32 kernel summing to 1.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 1 or not np.isfinite(pts).all():
        raise ValueError(f"points must be a finite [F, 2] array, got shape {pts.shape}")
    return _splat(pts, np.ones(len(pts)), _kernel_side(pts, size, "these points"))


def _kernel_side(points: np.ndarray, size: int | None, what: str) -> int:
    """The odd kernel side that holds ``points`` (displacements), or ``size`` checked."""
    radius = int(np.ceil(np.abs(points).max())) + 1
    if size is None:
        return 2 * radius + 1
    if size % 2 == 0 or size < 2 * radius + 1:
        raise ValueError(f"size must be odd and at least {2 * radius + 1} for {what}, "
                         f"got {size}")
    return size


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly splats weighted displacements into a ``size`` x ``size`` kernel summing to 1."""
    c = size // 2
    x, y = points[:, 0] + c, points[:, 1] + c
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    k = np.zeros((size, size), np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (y0 + dy, x0 + dx), weights * wy * wx)
    return (k / k.sum()).astype(np.float32)


def _extent(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    # Hull indices (not OpenCV's float32 points) keep the extent exact in float64.
    idx = cv2.convexHull(points.astype(np.float32), returnPoints=False).reshape(-1)
    hull = points[idx]
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def trajectory_kernel(trajectory: np.ndarray, size: int | None = None) -> np.ndarray:
    """Rasterises a trajectory into a blur kernel (float32, odd sides, sums to 1).

    The path is followed continuously: consecutive samples are joined by
    straight segments subdivided to at most 1/8 pixel, each point splatted
    bilinearly, and every time interval carries the same weight.

    Args:
        trajectory: ``[T, 2]`` (x, y) displacements in pixels, ``T >= 1``.
        size: kernel side (odd); default the smallest that holds the path.

    Returns:
        ``[size, size]`` float32 kernel.
    """
    traj = np.asarray(trajectory, np.float64)
    if traj.ndim != 2 or traj.shape[1] != 2 or len(traj) < 1 or not np.isfinite(traj).all():
        raise ValueError(f"trajectory must be a finite [T, 2] array, got shape {traj.shape}")
    size = _kernel_side(traj, size, "this trajectory")
    if len(traj) == 1:
        pts, w = traj, np.ones(1)
    else:
        seg = np.diff(traj, axis=0)
        n = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) * 8).astype(int))
        # Midpoints of n equal sub-intervals of each segment: every time
        # interval gets weight 1/(T-1), spread evenly along its segment.
        pts = np.concatenate([traj[i] + ((np.arange(k) + 0.5) / k)[:, None] * seg[i]
                              for i, k in enumerate(n)])
        w = np.concatenate([np.full(k, 1.0 / k) for k in n])
    return _splat(pts, w, size)


def kernel_endpoints(kernel: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """The two farthest-apart points of a kernel's support, as displacements ``[2, 2]``.

    A recorded kernel has no time order; its motion for flow supervision is
    approximated by the straight segment between the ends of its support
    (elements above ``threshold`` x its maximum), the two rows being (x, y)
    relative to the kernel centre. Which end is "first" is arbitrary: SVDN's
    position loss treats both flows alike.
    """
    k = _check_kernel(kernel, "kernel")
    ys, xs = np.nonzero(k >= threshold * k.max())
    c = np.array([k.shape[1] // 2, k.shape[0] // 2], np.float64)
    pts = np.stack([xs, ys], 1).astype(np.float64) - c
    if len(pts) == 1:
        return np.stack([pts[0], pts[0]])
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    d = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    return np.stack([hull[i], hull[j]])


def _check_kernel(kernel, name: str) -> np.ndarray:
    k = np.asarray(kernel, np.float64)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"{name} must be a 2-D array, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if k.min() < -1e-3 * max(k.max(), 1e-12):
        raise ValueError(f"{name} has negative weights (min {k.min():.3g})")
    k = np.maximum(k, 0.0)
    if k.sum() <= 0:
        raise ValueError(f"{name} sums to zero")
    return k


def center_kernel(kernel: np.ndarray) -> np.ndarray:
    """Normalises a kernel and pads it to odd sides with its centre of mass at the centre.

    Blurring with an off-centre kernel also translates the image, which
    would misalign the pair; the centre of mass lands within half a pixel of
    the centre element.
    """
    k = _check_kernel(kernel, "kernel")
    k = k / k.sum()
    ys, xs = np.indices(k.shape)
    cy, cx = int(round((ys * k).sum())), int(round((xs * k).sum()))
    h, w = k.shape
    ry = max(cy, h - 1 - cy)
    rx = max(cx, w - 1 - cx)
    r = max(ry, rx)
    out = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    out[r - cy:r - cy + h, r - cx:r - cx + w] = k
    return out.astype(np.float32)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def load_kernels(path: str | os.PathLike) -> list[np.ndarray]:
    """Loads recorded blur kernels, normalised and centred (see :func:`center_kernel`).

    Args:
        path: an ``.npz`` file of 2-D arrays (in natural key order:
            ``kernel1 .. kernel10``), or an ``.npy`` file holding one 2-D
            kernel or a ``[N, h, w]`` stack. ``../shared/data/levin09_kernels.npz``
            holds Levin et al.'s eight recorded camera-shake kernels.

    Returns:
        List of float32 kernels with odd sides.

    Raises:
        FileNotFoundError / ValueError: naming ``path`` (and the key) when the
            file is missing, unreadable or holds an invalid kernel.
    """
    path = _fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"kernel file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"kernel file {path} cannot be read: {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            items = [(k, data[k]) for k in sorted(data.files, key=_natural_key)]
    else:
        arr = np.asarray(data)
        items = [("0", arr)] if arr.ndim == 2 else [(str(i), a) for i, a in enumerate(arr)]
    if not items:
        raise ValueError(f"kernel file {path} holds no kernels")
    out = []
    for key, k in items:
        try:
            out.append(center_kernel(k))
        except ValueError as e:
            raise ValueError(f"kernel file {path}, entry {key!r}: {e}") from None
    return out


# --------------------------------------------------------------------------- blurring


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolves each channel with ``kernel`` (mirror-reflected borders).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` float array.
        kernel: odd-sided kernel, centre = zero displacement.

    Returns:
        float32 array of the same shape.
    """
    k = np.asarray(kernel, np.float32)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be 2-D with odd sides, got shape {k.shape}")
    img = np.ascontiguousarray(np.asarray(image, np.float32))
    # filter2D correlates; flipping the kernel makes it a convolution.
    return cv2.filter2D(img, -1, np.ascontiguousarray(k[::-1, ::-1]),
                        borderType=cv2.BORDER_REFLECT_101).reshape(img.shape)


def random_foreground_mask(height: int, width: int, rng: np.random.Generator, *,
                           area: tuple[float, float] = (0.05, 0.35)) -> np.ndarray:
    """A random object-like blob: an anti-aliased star-shaped polygon, values in [0, 1].

    Args:
        height, width: mask size.
        rng: NumPy random generator.
        area: range of the blob's area as a fraction of the image.

    Returns:
        float32 ``[height, width]`` coverage.
    """
    lo, hi = area
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"area must satisfy 0 < min <= max <= 1, got {area}")
    n = int(rng.integers(5, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    # Polygon area with unit scale, to hit the requested fraction.
    unit = 0.5 * np.abs(np.sum(radii * np.roll(radii, -1) *
                               np.sin(np.roll(angles, -1) - angles)))
    scale = np.sqrt(rng.uniform(lo, hi) * height * width / max(unit, 1e-6))
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    ss = 4  # supersampling factor for anti-aliased edges
    pts = np.stack([cx + scale * radii * np.cos(angles), cy + scale * radii * np.sin(angles)], 1)
    big = np.zeros((height * ss, width * ss), np.uint8)
    cv2.fillPoly(big, [np.round(pts * ss).astype(np.int32)], 255)
    small = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class BlurConfig:
    """How :func:`synthesize_pair` blurs.

    Args:
        max_length: largest camera-shake extent in pixels (SVRNN: 20).
        min_length: smallest extent; each image draws uniformly in between.
        kernels: recorded kernels (see :func:`load_kernels`) used for the
            background instead of a random trajectory with probability
            ``p_recorded``.
        p_recorded: probability of a recorded kernel when ``kernels`` is set.
        p_foreground: probability of adding a foreground layer with its own
            motion (spatially variant blur; SVRNN: 0.5).
        foreground_max_length: largest foreground motion extent in pixels.
        foreground_area: range of the foreground's area fraction.
        noise_sigma: (min, max) standard deviation of Gaussian noise added to
            the blurry image, in [0, 1] units; (0, 0) adds none.
        p_jpeg: probability of re-compressing the blurry image as JPEG.
        jpeg_quality: (min, max) JPEG quality.
        gamma: when set (e.g. 2.2), blur in linear light: ``x ** gamma``
            before, ``** (1 / gamma)`` after (GoPro's ``blur_gamma``): the
            camera's tone curve is applied after the exposure is integrated.
        quantize: round the blurry image to 8-bit levels, like a saved photo.
        p_accelerated: probability that a trajectory (background or
            foreground) is a smooth accelerating, turning path
            (:func:`accelerated_trajectory`) rather than hand shake.
        acceleration, curvature: their ranges (see :func:`accelerated_trajectory`).
        frames: ``(min, max)`` number of discrete instants the exposure is
            made of (averaged high-speed frames, GoPro: 7-13); ``None``: a
            continuous exposure. Recorded kernels are used as they are.
        foreground_layers: ``(min, max)`` number of independently moving
            foreground layers when there is a foreground; each occludes
            what lies behind it, with its blurred matte.
        p_highlights: probability that the scene's highlights are brighter
            than the sensor's range: in linear light, pixels whose brightest
            channel exceeds ``highlight_threshold`` (display value) are
            multiplied by up to ``highlight_gain`` (ramping from 1 at the
            threshold), blurred, then clipped, so that lights smear into
            saturated streaks as in real photos. The sharp target is clipped
            the same way.
        highlight_gain: ``(min, max)`` of the largest gain.
        highlight_threshold: display value above which the gain ramps up.
        shot_noise, read_noise: ``(min, max)`` of the sensor noise in linear
            light, added before the tone curve: variance ``shot * x +
            read ** 2`` at linear value ``x`` (Poisson-Gaussian, Foi et al.
            2008).
    """

    max_length: float = 20.0
    min_length: float = 1.0
    kernels: tuple = ()
    p_recorded: float = 0.5
    p_foreground: float = 0.5
    foreground_max_length: float = 20.0
    foreground_area: tuple[float, float] = (0.05, 0.35)
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    p_jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    gamma: float | None = None
    quantize: bool = True
    p_accelerated: float = 0.0
    acceleration: float = 1.5
    curvature: float = 1.0
    frames: tuple[int, int] | None = None
    foreground_layers: tuple[int, int] = (1, 1)
    p_highlights: float = 0.0
    highlight_gain: tuple[float, float] = (1.5, 6.0)
    highlight_threshold: float = 0.9
    shot_noise: tuple[float, float] = (0.0, 0.0)
    read_noise: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError("BlurConfig: need 0 <= min_length <= max_length, got "
                             f"{self.min_length}, {self.max_length}")
        if self.foreground_max_length < 0:
            raise ValueError(f"BlurConfig: foreground_max_length must be >= 0, got "
                             f"{self.foreground_max_length}")
        for name in ("p_recorded", "p_foreground", "p_jpeg", "p_accelerated", "p_highlights"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"BlurConfig: {name} must be in [0, 1], got {p}")
        lo, hi = self.noise_sigma
        if not 0 <= lo <= hi:
            raise ValueError(f"BlurConfig: noise_sigma must be (min, max) with 0 <= min <= max, "
                             f"got {self.noise_sigma}")
        q0, q1 = self.jpeg_quality
        if not 1 <= q0 <= q1 <= 100:
            raise ValueError(f"BlurConfig: jpeg_quality must be (min, max) within [1, 100], "
                             f"got {self.jpeg_quality}")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"BlurConfig: gamma must be > 0 or None, got {self.gamma}")
        for name in ("acceleration", "curvature"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"BlurConfig: {name} must be a finite number >= 0, got {v}")
        ranges = {"foreground_layers": (0, True), "highlight_gain": (1.0, False),
                  "shot_noise": (0.0, False), "read_noise": (0.0, False)}
        if self.frames is not None:
            ranges["frames"] = (1, True)
        for name, (minimum, integer) in ranges.items():
            v = getattr(self, name)
            ok = (isinstance(v, (tuple, list)) and len(v) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                          and np.isfinite(x) and (not integer or float(x).is_integer())
                          for x in v)
                  and minimum <= v[0] <= v[1])
            if not ok:
                kind = "integers" if integer else "numbers"
                raise ValueError(f"BlurConfig: {name} must be (min, max) {kind} with "
                                 f"{minimum} <= min <= max, got {v!r}")
            object.__setattr__(self, name, tuple(int(x) if integer else float(x) for x in v))
        if not 0.0 <= self.highlight_threshold < 1.0:
            raise ValueError(f"BlurConfig: highlight_threshold must be in [0, 1), got "
                             f"{self.highlight_threshold}")
        object.__setattr__(self, "kernels",
                           tuple(center_kernel(k) for k in self.kernels))

    def max_radius(self) -> int:
        """A bound on the radius of every kernel this configuration can draw."""
        r = int(np.ceil(max(self.max_length, self.foreground_max_length))) + 1
        for k in self.kernels:
            r = max(r, k.shape[0] // 2)
        return r


@dataclasses.dataclass
class SyntheticPair:
    """A synthetic training pair and the motion that made it.

    Attributes:
        blurry: float32 ``[H, W, 3]`` in [0, 1].
        sharp: float32 ``[H, W, 3]`` in [0, 1] (the scene at mid-exposure,
            with the foreground layer composited when there is one).
        flow: float32 ``[H, W, 4]`` bidirectional flow (to the start, then to
            the end of the exposure) of the layer visible at each pixel.
        mask: float32 ``[H, W]`` foreground coverage (zeros without one).
        background_kernel: the background's kernel.
        foreground_kernel: the foreground's kernel, or ``None``.
    """

    blurry: np.ndarray
    sharp: np.ndarray
    flow: np.ndarray
    mask: np.ndarray
    background_kernel: np.ndarray
    foreground_kernel: np.ndarray | None


def _draw_motion(rng: np.random.Generator, lo: float, hi: float, cfg: BlurConfig,
                 recorded: bool = True):
    """(kernel, endpoints [2, 2]) from a recorded kernel or a fresh random trajectory."""
    if recorded and cfg.kernels and rng.random() < cfg.p_recorded:
        k = cfg.kernels[int(rng.integers(len(cfg.kernels)))]
        return k, kernel_endpoints(k)
    length = rng.uniform(lo, hi)
    if cfg.p_accelerated > 0 and rng.random() < cfg.p_accelerated:
        traj = accelerated_trajectory(length, rng, acceleration=cfg.acceleration,
                                      curvature=cfg.curvature)
    else:
        traj = random_trajectory(length, rng)
    if cfg.frames is not None:
        n = int(rng.integers(cfg.frames[0], cfg.frames[1] + 1))
        kernel = frames_kernel(sample_frames(traj, n))
    else:
        kernel = trajectory_kernel(traj)
    return kernel, np.stack([traj[0], traj[-1]])


def _highlight_gain(display: np.ndarray, gain: float, threshold: float) -> np.ndarray:
    """Per-pixel gain ``[H, W, 1]``: 1 below ``threshold``, ramping to ``gain`` at 1."""
    v = display.max(axis=2, keepdims=True)
    ramp = np.clip((v - threshold) / (1.0 - threshold), 0.0, 1.0)
    return 1.0 + (gain - 1.0) * ramp


def synthesize_pair(sharp: np.ndarray, rng: np.random.Generator, *,
                    config: BlurConfig | None = None,
                    foreground: np.ndarray | None = None) -> SyntheticPair:
    """Blurs a sharp photo with random camera shake and, sometimes, a moving foreground.

    Background: the photo convolved with a random-trajectory kernel (or a
    recorded one). Foreground (with probability ``config.p_foreground``): a
    random blob cut from ``foreground`` (another photo; the photo itself when
    ``None``) with its own motion, blurred separately and composited over the
    background with its blurred matte (SVRNN sec. 3.3):
    ``B = k_f * (a F) + (1 - k_f * a) (k_b * S)``. The sharp target is the same
    composite without blur. Then optional noise and JPEG re-compression.

    Args:
        sharp: float ``[H, W, 3]`` in [0, 1].
        rng: NumPy random generator (all randomness comes from it).
        config: a :class:`BlurConfig` (defaults when ``None``).
        foreground: optional float ``[H, W, 3]`` texture for the foreground, or
            a function returning one (called only when a foreground is drawn).

    Returns:
        A :class:`SyntheticPair`; borders are mirror-reflected, so crop
        ``config.max_radius()`` pixels from each side for border-exact pairs.

    Example:
        >>> pair = synthesize_pair(read_image("photo.png"), np.random.default_rng(0))
        >>> pair.blurry.shape, pair.flow.shape   # (H, W, 3), (H, W, 4)
    """
    cfg = config or BlurConfig()
    s = np.asarray(sharp, np.float32)
    if s.ndim != 3 or s.shape[2] != 3 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"sharp must be a non-empty [H, W, 3] image, got shape {s.shape}")
    h, w = s.shape[:2]

    def texture() -> np.ndarray:
        if foreground is None:
            return s
        fg = np.asarray(foreground() if callable(foreground) else foreground, np.float32)
        if fg.shape != s.shape:
            raise ValueError(f"foreground must have the shape of sharp {s.shape}, got {fg.shape}")
        return fg
    lin = (lambda x: np.power(np.clip(x, 0, 1), cfg.gamma)) if cfg.gamma else (lambda x: x)
    unlin = (lambda x: np.power(np.clip(x, 0, 1), 1 / cfg.gamma)) if cfg.gamma else (lambda x: x)

    gain = None
    if cfg.p_highlights > 0 and rng.random() < cfg.p_highlights:
        gain = rng.uniform(*cfg.highlight_gain)

    def radiance(x: np.ndarray) -> np.ndarray:
        """Linear-light scene radiance of a display-referred image (highlights boosted)."""
        r = lin(x)
        return r if gain is None else r * _highlight_gain(x, gain, cfg.highlight_threshold)

    def shown(x: np.ndarray) -> np.ndarray:
        """What the camera records of a sharp display-referred image (saturated highlights)."""
        return x if gain is None else unlin(np.clip(radiance(x), 0.0, 1.0))

    k_bg, ends_bg = _draw_motion(rng, cfg.min_length, cfg.max_length, cfg)
    flow = np.empty((h, w, 4), np.float32)
    flow[...] = ends_bg.reshape(4)
    blurry_lin = blur(radiance(s), k_bg)
    target = shown(s)
    mask = np.zeros((h, w), np.float32)
    k_fg = None
    if rng.random() < cfg.p_foreground:
        lo_layers, hi_layers = cfg.foreground_layers
        layers = lo_layers if lo_layers == hi_layers else int(rng.integers(lo_layers,
                                                                           hi_layers + 1))
        for _ in range(layers):
            k_fg, ends_fg = _draw_motion(rng, 0.0, cfg.foreground_max_length, cfg,
                                         recorded=False)
            m = random_foreground_mask(h, w, rng, area=cfg.foreground_area)
            fg = texture()
            a = m[:, :, None]
            target = a * shown(fg) + (1 - a) * target
            blurry_lin = blur(a * radiance(fg), k_fg) + (1 - blur(a, k_fg)) * blurry_lin
            flow[m >= 0.5] = ends_fg.reshape(4)
            mask = np.maximum(mask, m)
    blurry_lin = np.clip(blurry_lin, 0.0, 1.0)
    shot, read = cfg.shot_noise, cfg.read_noise
    if shot[1] > 0 or read[1] > 0:
        var = rng.uniform(*shot) * blurry_lin + rng.uniform(*read) ** 2
        blurry_lin = np.clip(blurry_lin + np.sqrt(var) * rng.standard_normal(blurry_lin.shape),
                             0.0, 1.0)
    blurry = unlin(blurry_lin)

    lo, hi = cfg.noise_sigma
    if hi > 0:
        blurry = blurry + rng.uniform(lo, hi) * rng.standard_normal(blurry.shape)
    blurry = np.clip(blurry, 0.0, 1.0)
    if cfg.p_jpeg > 0 and rng.random() < cfg.p_jpeg:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        u8 = np.rint(blurry * 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        blurry = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB).astype(np.float32) / 255.0
    elif cfg.quantize:
        blurry = np.rint(blurry * 255) / 255.0
    return SyntheticPair(blurry=blurry.astype(np.float32), sharp=target.astype(np.float32),
                         flow=flow, mask=mask, background_kernel=k_bg, foreground_kernel=k_fg)


# --------------------------------------------------------------------------- dataset


def _list_photos(root) -> list[str]:
    if isinstance(root, (list, tuple)):
        paths = [_fspath(p) for p in root]
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"sharp image {p} does not exist")
    else:
        folder = _fspath(root)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"root {folder} is not a folder")
        paths = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            paths += [os.path.join(dirpath, f) for f in filenames
                      if not f.startswith(".") and is_image_file(f)]
        paths.sort(key=lambda p: _natural_key(os.path.relpath(p, folder)))
    if not paths:
        raise ValueError(f"root {root} holds no images")
    return paths


def _rng_from(seed_pair) -> np.random.Generator:
    return np.random.default_rng(np.asarray(seed_pair, np.int64).view(np.uint64))


def _random_window(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``h x w`` window; an image smaller than that is first enlarged to cover it."""
    ih, iw = img.shape[:2]
    if ih < h or iw < w:
        scale = max(h / ih, w / iw)
        img = cv2.resize(img, (max(w, int(np.ceil(iw * scale))), max(h, int(np.ceil(ih * scale)))),
                         interpolation=cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
    top, left = int(rng.integers(0, ih - h + 1)), int(rng.integers(0, iw - w + 1))
    return img[top:top + h, left:left + w]


def synthetic_dataset(root, *, patch_size: int | tuple[int, int] | None = None,
                      augment: bool = False, batch_size: int | None = None,
                      shuffle: bool | int = False, seed: int | None = None,
                      with_flow: bool = False, config: BlurConfig | None = None,
                      kernels=None, redraw_each_epoch: bool | None = None,
                      drop_remainder: bool = False, flip: bool = True, rotate: bool = True,
                      permute_channels: bool = True, repeat: bool = False, skip: int = 0,
                      num_parallel_calls: int = tf.data.AUTOTUNE,
                      skip_bad_files: bool = False,
                      service: str | None = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(blurry, sharp)`` pairs blurred on the fly from sharp photos.

    Each photo is blurred by :func:`synthesize_pair` (random camera shake or
    a recorded kernel, sometimes a foreground layer with its own motion cut
    from another photo of the set, optional noise and JPEG). With
    ``patch_size`` the blur is made on a window ``config.max_radius()`` pixels
    larger on each side and cropped back, so the patch has no border effects.

    By default: whole images in file order, unbatched, unaugmented, and each
    photo gets the same blur on every iteration (a fixed validation set). With
    ``augment=True`` the blur is drawn anew every epoch (reproducibly from
    ``seed``) and flips / 90-degree rotations / RGB permutation are added.

    Args:
        root: folder of sharp photos (searched recursively) or a list of
            image paths.
        patch_size: int or (height, width) random crop; ``None`` keeps whole
            images. Photos smaller than the patch are enlarged to cover it.
        augment: training mode (see above).
        batch_size: batch the elements.
        shuffle: reshuffle every epoch (``True``: all; an int: buffer size).
        seed: reproducibility; ``None`` draws one at random.
        with_flow: also yield the known motion as a bidirectional flow
            ``[H, W, 4]`` (see :class:`SyntheticPair`).
        config: a :class:`BlurConfig` (its defaults when ``None``).
        kernels: recorded kernels: a file for :func:`load_kernels` or a list
            of arrays; replaces ``config.kernels``.
        redraw_each_epoch: override the coupling to ``augment``.
        drop_remainder: drop the last incomplete batch.
        flip, rotate, permute_channels: enable parts of ``augment``.
        repeat: an endless stream of passes over the photos, each reshuffled
            (and redrawn with ``augment``) like a new epoch; batches run on
            across pass boundaries.
        skip: elements dropped from the start of every iteration before they
            are read or blurred, so that a resumed training run continues the
            same stream cheaply (``skip=step * batch_size`` with ``repeat``).
        num_parallel_calls: parallel synthesis calls.
        skip_bad_files: every photo is checked before the dataset is made
            (:func:`~tfdeblur.data.io.check_image_files`: unreadable, empty,
            unknown or truncated files); a bad one raises an error naming it,
            or with ``True`` is left out with a warning naming it.
        service: a tf.data service dispatcher ``"grpc://host:port"`` whose
            workers make the pairs (see :func:`~tfdeblur.data.paired_dataset`;
            the blur is synthesized in Python, so the workers must run in
            this process).

    Returns:
        Dataset of ``(blurry, sharp)`` (``(blurry, sharp, flow)`` with
        ``with_flow``) float32 ``[H, W, C]``, batched with ``batch_size``.

    Example:
        >>> train = synthetic_dataset("photos_bsds500", patch_size=128, augment=True,
        ...                           shuffle=True, batch_size=20, seed=0,
        ...                           kernels="levin09_kernels.npz")
    """
    from tfdeblur.data import _pipeline

    opts = _pipeline.DatasetOptions.from_arguments(
        patch_size=patch_size, augment=augment, batch_size=batch_size, shuffle=shuffle,
        seed=seed, with_flow=with_flow, drop_remainder=drop_remainder, flip=flip, rotate=rotate,
        permute_channels=permute_channels, repeat=repeat, skip=skip,
        num_parallel_calls=num_parallel_calls, skip_bad_files=skip_bad_files, service=service)
    cfg = config or BlurConfig()
    if not isinstance(cfg, BlurConfig):
        raise ValueError(f"config must be a BlurConfig, got {type(cfg).__name__}")
    if kernels is not None:
        ks = load_kernels(kernels) if isinstance(kernels, (str, os.PathLike)) else list(kernels)
        cfg = dataclasses.replace(cfg, kernels=tuple(ks))
    redraw = augment if redraw_each_epoch is None else bool(redraw_each_epoch)
    photos = check_image_files(_list_photos(root), skip_bad=bool(skip_bad_files))
    load = _synthesis_loader(photos, cfg, opts)

    def element(path, seed_pair):
        out = load(path, seed_pair)
        if opts.augment:
            aug_seed = tf.random.experimental.stateless_fold_in(seed_pair, 1)
            return _pipeline.augment(out, opts, aug_seed)
        return out

    ds = tf.data.Dataset.from_tensor_slices(photos)
    # Seeds attached after shuffling: new draws every epoch; before: each photo keeps its blur.
    ds = _pipeline.order(ds, opts, len(photos), seeds="after" if redraw else "before",
                         rerandomize=False)
    ds = ds.map(element, num_parallel_calls=opts.num_parallel_calls)
    return _pipeline.finish(ds, opts)


def _synthesis_loader(photos: list[str], cfg: BlurConfig, opts):
    """Stage ``load`` of synthetic pairs: (photo path, seed) -> ``(blurry, sharp[, flow])``.

    The crop comes first here (a random window ``cfg.max_radius()`` larger on
    each side, blurred, then cut back to the patch: no border effects).
    """
    patch = opts.patch_size
    margin = cfg.max_radius() if patch is not None else 0

    def make_np(path, seed_pair):
        path = _fspath(path)
        rng = _rng_from(seed_pair)
        img = read_image(path)
        if patch is not None:
            img = _random_window(img, patch[0] + 2 * margin, patch[1] + 2 * margin, rng)
        h, w = img.shape[:2]

        def foreground():
            other = photos[int(rng.integers(len(photos)))]
            return _random_window(read_image(other), h, w, rng)

        pair = synthesize_pair(img, rng, config=cfg, foreground=foreground)
        out = (pair.blurry, pair.sharp) + ((pair.flow,) if opts.with_flow else ())
        if patch is not None:
            out = tuple(x[margin:margin + patch[0], margin:margin + patch[1]] for x in out)
        return tuple(np.ascontiguousarray(x, np.float32) for x in out)

    from tfdeblur.data import _pipeline

    make_np = _pipeline.numpy_errors_as_value_errors(make_np)
    n_out = opts.outputs

    def load(path, seed_pair):
        out = tf.numpy_function(make_np, [path, seed_pair], [tf.float32] * n_out, stateful=False)
        out = [tf.ensure_shape(x, [None, None, c])
               for x, c in zip(out, (3, 3, 4)[:n_out], strict=True)]
        if patch is not None:
            out = [tf.ensure_shape(x, [patch[0], patch[1], x.shape[-1]]) for x in out]
        return tuple(out)

    return load
