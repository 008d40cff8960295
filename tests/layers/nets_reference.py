"""Slow, obviously-correct float64 NumPy references for the SVRNN and SVDN tests.

Written from the papers and TensorFlow's documented conventions, independent
of the package's code: loops and explicit index arithmetic, no TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np


def same_pads(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) along one axis."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def conv2d(x, kernel, bias=None, stride=1, dilation=1, padding="same"):
    """x [N, H, W, C], kernel [KH, KW, C, O] (cross-correlation, like tf.nn.conv2d)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    if padding == "same":
        pt, pb = same_pads(h, kh, stride, dilation)
        pl, pr = same_pads(w, kw, stride, dilation)
    else:
        pt = pb = pl = pr = 0
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    ho = (h + pt + pb - (kh - 1) * dilation - 1) // stride + 1
    wo = (w + pl + pr - (kw - 1) * dilation - 1) // stride + 1
    y = np.zeros((n, ho, wo, o))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky * dilation: ky * dilation + (ho - 1) * stride + 1: stride,
                       kx * dilation: kx * dilation + (wo - 1) * stride + 1: stride, :]
            y += patch @ kernel[ky, kx]
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def conv2d_transpose(x, kernel, bias=None, stride=2):
    """Keras Conv2DTranspose, padding "same": kernel [KH, KW, O, C], output H*stride.

    Every input pixel scatters ``x[i, j] * kernel`` into the full-size output
    at ``(i * stride + ky, j * stride + kx)``; "same" then crops
    ``max(K - stride, 0) // 2`` from the top/left.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, c = x.shape
    kh, kw, o, _ = kernel.shape
    full = np.zeros((n, (h - 1) * stride + kh, (w - 1) * stride + kw, o))
    for i in range(h):
        for j in range(w):
            full[:, i * stride: i * stride + kh, j * stride: j * stride + kw, :] += np.einsum(
                "nc,yxoc->nyxo", x[:, i, j, :], kernel)
    top = max(kh - stride, 0) // 2
    left = max(kw - stride, 0) // 2
    y = full[:, top: top + h * stride, left: left + w * stride, :]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def relu(x):
    return np.maximum(x, 0.0)


def leaky_relu(x, slope):
    return np.where(x >= 0, x, slope * x)


def prelu(x, alpha):
    return np.where(x >= 0, x, np.asarray(alpha, np.float64) * x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def max_pool_same(x):
    """2x2 stride-2 max pooling with "same" padding (odd sides keep their last row/col)."""
    n, h, w, c = x.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    xp = np.full((n, 2 * h2, 2 * w2, c), -np.inf)
    xp[:, :h, :w] = x
    return xp.reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


def resize_bilinear(x, out_h, out_w):
    """tf.image.resize bilinear with half-pixel centres, no antialiasing."""
    n, h, w, c = x.shape
    y = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        sy = (i + 0.5) * h / out_h - 0.5
        y0 = math.floor(sy)
        fy = sy - y0
        ya, yb = min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)
        for j in range(out_w):
            sx = (j + 0.5) * w / out_w - 0.5
            x0 = math.floor(sx)
            fx = sx - x0
            xa, xb = min(max(x0, 0), w - 1), min(max(x0 + 1, 0), w - 1)
            y[:, i, j] = ((1 - fy) * ((1 - fx) * x[:, ya, xa] + fx * x[:, ya, xb])
                          + fy * ((1 - fx) * x[:, yb, xa] + fx * x[:, yb, xb]))
    return y


def gated_recurrence(x, g, direction):
    """h[t] = (1 - g[t]) x[t] + g[t] h[t-1] along one direction, h[-1] = 0."""
    x = np.asarray(x, np.float64)
    g = np.asarray(g, np.float64)
    h = np.zeros_like(x)
    n, hh, ww, c = x.shape
    if direction in ("left_to_right", "right_to_left"):
        order = range(ww) if direction == "left_to_right" else range(ww - 1, -1, -1)
        prev = np.zeros((n, hh, c))
        for t in order:
            prev = (1 - g[:, :, t]) * x[:, :, t] + g[:, :, t] * prev
            h[:, :, t] = prev
    else:
        order = range(hh) if direction == "top_to_bottom" else range(hh - 1, -1, -1)
        prev = np.zeros((n, ww, c))
        for t in order:
            prev = (1 - g[:, t]) * x[:, t] + g[:, t] * prev
            h[:, t] = prev
    return h


def rnn_deconvolution(x, gates, fusion_weights, slope=0.1):
    """SVRNN's RNN stage with the authors' gate layout.

    Per RNN the 4C gate channels are (left->right, top->bottom, right->left,
    bottom->top); outputs are concatenated (l->r, r->l, t->b, b->t) and fused
    by a 3x3 conv + LeakyReLU. ``fusion_weights`` = [(kernel, bias), ...].
    """
    start = 0
    for kernel, bias in fusion_weights:
        c = x.shape[-1]
        g = [gates[..., start + k * c: start + (k + 1) * c] for k in range(4)]
        start += 4 * c
        outs = [gated_recurrence(x, g[0], "left_to_right"),
                gated_recurrence(x, g[2], "right_to_left"),
                gated_recurrence(x, g[1], "top_to_bottom"),
                gated_recurrence(x, g[3], "bottom_to_top")]
        x = leaky_relu(conv2d(np.concatenate(outs, -1), kernel, bias), slope)
    return x


def weight_generation(image, weights):
    """conv3..conv16 of SVRNN; ``weights`` maps "conv3".. to (kernel, bias)."""
    def c(name, t, act=relu):
        return act(conv2d(t, *weights[name]))
    c3 = c("conv3", image)
    c4 = c("conv4", c3)
    c5 = c("conv5", max_pool_same(c4))
    c6 = c("conv6", c5)
    c7 = c("conv7", max_pool_same(c6))
    c8 = c("conv8", c7)
    c9 = c("conv9", c8)
    c10 = c("conv10", max_pool_same(c9))
    c11 = c("conv11", c10)
    c12 = c("conv12", c11)
    up = resize_bilinear(c12, 2 * c12.shape[1], 2 * c12.shape[2])[:, :c8.shape[1], :c8.shape[2]]
    c13 = c("conv13", np.concatenate([c8, up], -1))
    c14 = c("conv14", c13)
    up = resize_bilinear(c14, 2 * c14.shape[1], 2 * c14.shape[2])[:, :c6.shape[1], :c6.shape[2]]
    c15 = c("conv15", np.concatenate([c6, up], -1))
    return c("conv16", c15, np.tanh)


def bilinear_sample(img, py, px):
    """Zero-padded bilinear sample of img [H, W, C] at one real position (DCNv2 rule)."""
    h, w, c = img.shape
    if py <= -1 or py >= h or px <= -1 or px >= w:
        return np.zeros(c)
    y0, x0 = math.floor(py), math.floor(px)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def modulated_deform_conv(x, offset, mask, kernel, bias=None, dilation=1):
    """DCNv2, stride 1, "same" padding, one deformable group, NHWC.

    offset [N, H, W, K*2] with (dy, dx) per tap (taps row-major), mask
    [N, H, W, K] used as given. Returns (y, positions [N, H, W, K, 2]).
    """
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    pt, _ = same_pads(h, kh, 1, dilation)
    pl, _ = same_pads(w, kw, 1, dilation)
    y = np.zeros((n, h, w, o))
    pos = np.zeros((n, h, w, kh * kw, 2))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for ky in range(kh):
                    for kx in range(kw):
                        k = ky * kw + kx
                        py = i - pt + ky * dilation + offset[b, i, j, 2 * k]
                        px = j - pl + kx * dilation + offset[b, i, j, 2 * k + 1]
                        pos[b, i, j, k] = (py, px)
                        v = bilinear_sample(x[b], py, px) * mask[b, i, j, k]
                        y[b, i, j] += v @ kernel[ky, kx]
    if bias is not None:
        y += bias
    return y, pos


def reflect_pad_to_multiple(image, multiple):
    """Bottom/right reflect padding (edge not repeated) to a multiple of ``multiple``."""
    h, w = image.shape[1:3]
    return np.pad(image, [(0, 0), (0, (-h) % multiple), (0, (-w) % multiple), (0, 0)],
                  mode="reflect")


def svrnn(image, weights, slope=0.1):
    """Whole SVRNN (Table 1 of Zhang et al. 2018) on [N, H, W, 3]; ``weights`` maps
    conv1, conv2, conv3..conv16, conv21, conv22 to (kernel, bias) and "fusions" to
    the list of fusion-conv (kernel, bias)."""
    h, w = image.shape[1:3]
    x = reflect_pad_to_multiple(np.asarray(image, np.float64), 8)
    c1 = leaky_relu(conv2d(x, *weights["conv1"]), slope)
    c2 = leaky_relu(conv2d(c1, *weights["conv2"], stride=2), slope)
    gates = weight_generation(x, weights)
    r = rnn_deconvolution(c2, gates, weights["fusions"], slope)
    y = leaky_relu(conv2d(np.concatenate([c2, r], -1), *weights["conv21"]), slope)
    y = resize_bilinear(y, 2 * y.shape[1], 2 * y.shape[2])
    y = conv2d(np.concatenate([c1, y], -1), *weights["conv22"])
    return y[:, :h, :w]


def dilated_backbone(image, w, width, rates, convs_per_rate):
    """SVDN backbone; ``w`` maps sub-layer names to their weight tuples."""
    x = prelu(conv2d(image, *w["conv_in"]), *w["prelu_in"])
    x = prelu(conv2d(x, *w["conv_down"], stride=2), *w["prelu_down"])
    outs = [x]
    for d in rates:
        for j in range(convs_per_rate):
            x = prelu(conv2d(x, *w[f"conv_d{d}_{j + 1}"], dilation=d), *w[f"prelu_d{d}_{j + 1}"])
        outs.append(x)
    f = prelu(conv2d(np.concatenate(outs, -1), *w["fusion"]), *w["prelu_fusion"])
    return f[..., :width], f[..., width:]


def feature_deconvolution(blur, content, w, taps):
    """SVDN neck (eqs. 4-5): returns (features, DCN1 positions)."""
    ow1 = conv2d(blur, *w["ow1_conv"])
    hidden = prelu(conv2d(prelu(ow1, *w["ow1_prelu"]), *w["ow2_hidden"]), *w["ow2_prelu"])
    ow2 = conv2d(hidden, *w["ow2_conv"])
    y, pos = modulated_deform_conv(content, ow1[..., :2 * taps], sigmoid(ow1[..., 2 * taps:]),
                                   *w["dcn1"])
    y = prelu(y, *w["dcn1_prelu"])
    y, _ = modulated_deform_conv(y, ow2[..., :2 * taps], sigmoid(ow2[..., 2 * taps:]), *w["dcn2"])
    return prelu(y, *w["dcn2_prelu"]), pos


def reconstruction_head(x, w):
    y = prelu(conv2d_transpose(x, *w["upsample"]), *w["prelu"])
    return conv2d(y, *w["reconstruct"])


def svdn(image, w, width, rates=(1, 2, 4), convs_per_rate=1, taps=25):
    """Whole SVDN; ``w`` has "backbone", "neck", "head" weight dicts."""
    h, wd = image.shape[1:3]
    x = reflect_pad_to_multiple(np.asarray(image, np.float64), 2)
    blur, content = dilated_backbone(x, w["backbone"], width, rates, convs_per_rate)
    feat, pos = feature_deconvolution(blur, content, w["neck"], taps)
    return (x + reconstruction_head(feat, w["head"]))[:, :h, :wd], pos
