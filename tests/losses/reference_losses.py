"""Slow, obviously-correct float64 NumPy references for the loss tests.

Written from the papers (SVDN, CVPR 2020, eqs. 7-10 with Algorithm 1's
geometry corrected) and Keras's documented VGG16, independent of
``tfdeblur.losses``: loops over pixels, points and blocks, no TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

from tests.layers import nets_reference as nets

#: Keras VGG16 up to block3_pool: (layer name, kind).
VGG16_LAYERS = [
    ("block1_conv1", "conv"), ("block1_conv2", "conv"), ("block1_pool", "pool"),
    ("block2_conv1", "conv"), ("block2_conv2", "conv"), ("block2_pool", "pool"),
    ("block3_conv1", "conv"), ("block3_conv2", "conv"), ("block3_conv3", "conv"),
    ("block3_pool", "pool"),
]
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
#: torchvision's VGG16 input is (x - mean) / std with this std (RGB); Keras's is 255 x - mean.
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)


def segment_distance(p, v) -> float:
    """Distance from point p to the segment from (0, 0) to v (2-vectors, any one order).

    Geometric cases, written out: the nearest point is an end unless the
    perpendicular foot falls strictly inside the segment.
    """
    p = np.asarray(p, np.float64)
    v = np.asarray(v, np.float64)
    to_origin = math.hypot(p[0], p[1])
    length = math.hypot(v[0], v[1])
    if length == 0.0:
        return to_origin
    to_end = math.hypot(p[0] - v[0], p[1] - v[1])
    along = (p[0] * v[0] + p[1] * v[1]) / length          # signed projection length
    if 0.0 < along < length:
        # |cross product| / |v|: height of the triangle (0, v, p) over its base.
        return abs(p[0] * v[1] - p[1] * v[0]) / length
    return min(to_origin, to_end)


def pool_flow(flow, stride: int):
    """Mean of each stride x stride block (a block cut by the border: its pixels), / stride."""
    flow = np.asarray(flow, np.float64)
    n, h, w, c = flow.shape
    hs, ws = -(-h // stride), -(-w // stride)
    out = np.zeros((n, hs, ws, c))
    for i in range(hs):
        for j in range(ws):
            block = flow[:, i * stride: (i + 1) * stride, j * stride: (j + 1) * stride]
            out[:, i, j] = block.mean(axis=(1, 2))
    return out / stride


def position_distances(positions, flow, stride: int):
    """[N, h, w, K]: per point, min distance to the two flow segments (feature pixels)."""
    positions = np.asarray(positions, np.float64)
    small = pool_flow(flow, stride)
    n, h, w, k, _ = positions.shape
    assert small.shape[:3] == (n, h, w)
    d = np.zeros((n, h, w, k))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                dx0, dy0, dx1, dy1 = small[b, i, j]
                for t in range(k):
                    rel = (positions[b, i, j, t, 0] - i, positions[b, i, j, t, 1] - j)
                    d[b, i, j, t] = min(segment_distance(rel, (dy0, dx0)),
                                        segment_distance(rel, (dy1, dx1)))
    return d


def position_loss(positions, flow, margin: float, stride: int = 2):
    """Per image: mean over pixels and points of max(d - margin, 0)."""
    d = position_distances(positions, flow, stride)
    return np.maximum(d - margin, 0.0).mean(axis=(1, 2, 3))


def pixel_loss(y_true, y_pred, scale: float, reduce: str = "mean"):
    """Per image: ``scale`` x the mean (or the sum) of the squared errors."""
    diff = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    squared = diff ** 2
    per_image = squared.reshape(len(squared), -1)
    return scale * (per_image.sum(axis=1) if reduce == "sum" else per_image.mean(axis=1))


def max_pool_valid(x):
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :2 * h2, :2 * w2].reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


def vgg16_features(images, weights: dict, layer: str):
    """Keras VGG16 (caffe preprocessing of RGB [0, 1]) up to ``layer``, float64.

    ``weights``: layer name -> (kernel, bias).
    """
    x = 255.0 * np.asarray(images, np.float64)[..., ::-1] - np.asarray(IMAGENET_BGR_MEAN)
    for name, kind in VGG16_LAYERS:
        if kind == "conv":
            kernel, bias = weights[name]
            x = nets.relu(nets.conv2d(x, kernel, bias))
        else:
            x = max_pool_valid(x)
        if name == layer:
            return x
    raise KeyError(layer)


def perceptual_loss(y_true, y_pred, weights: dict, layer: str, scale: float = 0.5,
                    feature_scale: float = 1.0):
    """Per image: ``scale`` x the mean squared difference of ``feature_scale`` x features."""
    f_pred = feature_scale * vgg16_features(y_pred, weights, layer)
    f_true = feature_scale * vgg16_features(y_true, weights, layer)
    return scale * ((f_pred - f_true) ** 2).mean(axis=(1, 2, 3))


def torchvision_feature_scale() -> float:
    """Caffe-scale input (255 x) to torchvision-scale (/ std): 1 / (255 x mean std)."""
    return 1.0 / (255.0 * float(np.mean(IMAGENET_RGB_STD)))
