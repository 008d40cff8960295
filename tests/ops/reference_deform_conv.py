"""Float64 NumPy reference of the modulated deformable convolution (docs/ops.md section 2).

torchvision's ``deform_conv2d`` semantics written out with loops, in NHWC.
Independent of the package and of TensorFlow, so the GPU checks can use it on
hosts without TensorFlow. The backward is derived by hand (bilinear weights'
derivatives, zero-padding corners), not by automatic differentiation.
"""

import math

import numpy as np


def axis_geometry(size, k, stride, dilation, padding):
    """(output length, padding before) along one axis; padding 'same'/'valid'/(before, after)."""
    eff = (k - 1) * dilation + 1
    if padding == "same":
        out = math.ceil(size / stride)
        return out, max((out - 1) * stride + eff - size, 0) // 2
    if padding == "valid":
        return (size - eff) // stride + 1, 0
    before, after = padding
    return (size + before + after - eff) // stride + 1, before


def _corners(h, w, py, px):
    """[(y, x, weight, d weight / d py, d weight / d px)] of the corners inside the image.

    Empty when the whole sample is 0 (py <= -1, py >= h, px <= -1 or px >= w).
    """
    if not (-1 < py < h and -1 < px < w):
        return []
    y0, x0 = math.floor(py), math.floor(px)
    ly, lx = py - y0, px - x0
    out = []
    for yy, wy, sy in ((y0, 1 - ly, -1.0), (y0 + 1, ly, 1.0)):
        for xx, wx, sx in ((x0, 1 - lx, -1.0), (x0 + 1, lx, 1.0)):
            if 0 <= yy < h and 0 <= xx < w:
                out.append((yy, xx, wy * wx, sy * wx, wy * sx))
    return out


def ref_bilinear(img, py, px):
    """img [H, W, C] sampled at (py, px); zero outside, each corner only if inside."""
    h, w, c = img.shape
    out = np.zeros(c)
    for yy, xx, wgt, _, _ in _corners(h, w, py, px):
        out += wgt * img[yy, xx]
    return out


def _resolve(x_shape, kernel_shape, strides, padding, dilation):
    n, h, w, _ = x_shape
    kh, kw = kernel_shape[:2]
    pads = (padding, padding) if isinstance(padding, str) else padding
    ho, pt = axis_geometry(h, kh, strides[0], dilation[0], pads[0])
    wo, pl = axis_geometry(w, kw, strides[1], dilation[1], pads[1])
    return ho, wo, pt, pl


def _samples(x_shape, kernel_shape, offset, strides, dilation, dgroups, ho, wo, pt, pl):
    """Yields (b, i, j, g, k, s, py, px) for every sample: s = g * KH * KW + k."""
    n = x_shape[0]
    kh, kw = kernel_shape[:2]
    taps = kh * kw
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for g in range(dgroups):
                    for k in range(taps):
                        ky, kx = divmod(k, kw)
                        s = g * taps + k
                        py = i * strides[0] - pt + ky * dilation[0] + offset[b, i, j, 2 * s]
                        px = j * strides[1] - pl + kx * dilation[1] + offset[b, i, j, 2 * s + 1]
                        yield b, i, j, g, k, s, py, px


def _columns(x, offset, mask, kernel_shape, strides, dilation, dgroups, geometry):
    """cols [N, Ho, Wo, KH*KW, Cin]: the masked bilinear samples each tap multiplies.

    Each corner inside the image adds (m * weight) * value; a sample with no
    such corner (outside, or at a NaN / infinite position) stays 0 whatever
    its mask (docs/ops_nonfinite.md: the order only matters for m = +-inf).
    """
    n, h, w, cin = x.shape
    ho, wo, pt, pl = geometry
    taps, cdg = kernel_shape[0] * kernel_shape[1], cin // dgroups
    cols = np.zeros((n, ho, wo, taps, cin))
    for b, i, j, g, k, s, py, px in _samples(x.shape, kernel_shape, offset, strides, dilation,
                                             dgroups, ho, wo, pt, pl):
        chans = slice(g * cdg, (g + 1) * cdg)
        m = mask[b, i, j, s]
        for yy, xx, wgt, _, _ in _corners(h, w, py, px):
            cols[b, i, j, k, chans] += (m * wgt) * x[b, yy, xx, chans]
    return cols


def ref_deform_conv(x, offset, mask, kernel, bias=None, strides=(1, 1), padding="same",
                    dilation=(1, 1), groups=1, dgroups=1):
    """padding: 'same', 'valid' or ((top, bottom), (left, right))."""
    x, offset, mask, kernel = (np.asarray(a, np.float64) for a in (x, offset, mask, kernel))
    n, h, w, cin = x.shape
    kh, kw, cg, cout = kernel.shape
    geometry = _resolve(x.shape, kernel.shape, strides, padding, dilation)
    ho, wo = geometry[:2]
    taps, cog = kh * kw, cout // groups
    assert offset.shape == (n, ho, wo, 2 * dgroups * taps), offset.shape
    cols = _columns(x, offset, mask, kernel.shape, strides, dilation, dgroups, geometry)
    y = np.zeros((n, ho, wo, cout))
    wk = kernel.reshape(taps, cg, cout)
    for gi in range(groups):
        y[..., gi * cog:(gi + 1) * cog] = np.einsum(
            "nijkc,kco->nijo", cols[..., gi * cg:(gi + 1) * cg], wk[:, :, gi * cog:(gi + 1) * cog])
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def ref_deform_conv_backward(x, offset, mask, kernel, dy, use_bias=True, strides=(1, 1),
                             padding="same", dilation=(1, 1), groups=1, dgroups=1):
    """Gradients (dx, doffset, dmask, dkernel, dbias) of sum(y * dy); dbias is None without bias.

    With cols the masked samples (see ref_deform_conv) and dcols = dy W^T per
    weight group: dkernel = cols^T dy, dbias = sum dy, and per sample of mask m
    at (py, px) with corners q (weights w_q, inside the image only):
    dmask = sum_c dcols_c * sum_q w_q x_qc, d(py|px) = m * sum_c dcols_c *
    sum_q (d w_q / d(py|px)) x_qc, dx_qc += m * w_q * dcols_c. The corner
    rule makes these the one-sided derivatives automatic differentiation of
    the same formula gives (floor() has zero gradient).
    """
    x, offset, mask, kernel, dy = (np.asarray(a, np.float64)
                                   for a in (x, offset, mask, kernel, dy))
    n, h, w, cin = x.shape
    kh, kw, cg, cout = kernel.shape
    geometry = _resolve(x.shape, kernel.shape, strides, padding, dilation)
    ho, wo, pt, pl = geometry
    taps, cog, cdg = kh * kw, cout // groups, cin // dgroups
    assert dy.shape == (n, ho, wo, cout), dy.shape
    wk = kernel.reshape(taps, cg, cout)
    cols = _columns(x, offset, mask, kernel.shape, strides, dilation, dgroups, geometry)
    dcols = np.zeros((n, ho, wo, taps, cin))
    dkernel = np.zeros((taps, cg, cout))
    for gi in range(groups):
        cin_g, cout_g = slice(gi * cg, (gi + 1) * cg), slice(gi * cog, (gi + 1) * cog)
        dcols[..., cin_g] = np.einsum("nijo,kco->nijkc", dy[..., cout_g], wk[:, :, cout_g])
        dkernel[:, :, cout_g] = np.einsum("nijkc,nijo->kco", cols[..., cin_g], dy[..., cout_g])
    dx = np.zeros_like(x)
    doffset = np.zeros_like(offset)
    dmask = np.zeros_like(mask)
    for b, i, j, g, k, s, py, px in _samples(x.shape, kernel.shape, offset, strides, dilation,
                                             dgroups, ho, wo, pt, pl):
        chans = slice(g * cdg, (g + 1) * cdg)
        dc = dcols[b, i, j, k, chans]
        m = mask[b, i, j, s]
        for yy, xx, wgt, dwy, dwx in _corners(h, w, py, px):
            v = x[b, yy, xx, chans]
            dmask[b, i, j, s] += wgt * np.dot(dc, v)
            doffset[b, i, j, 2 * s] += m * dwy * np.dot(dc, v)
            doffset[b, i, j, 2 * s + 1] += m * dwx * np.dot(dc, v)
            dx[b, yy, xx, chans] += m * wgt * dc
    dbias = dy.sum(axis=(0, 1, 2)) if use_bias else None
    return dx, doffset, dmask, dkernel.reshape(kernel.shape), dbias


def random_case(rng, n=2, h=7, w=6, cin=6, cout=4, ksize=(3, 3), strides=(1, 1),
                padding="same", dilation=(1, 1), groups=1, dgroups=1, spread=2.5,
                away_from_integers=False):
    """Random float64 inputs; offsets reach beyond the image border."""
    kh, kw = ksize
    pads = (padding, padding) if isinstance(padding, str) else padding
    ho, _ = axis_geometry(h, kh, strides[0], dilation[0], pads[0])
    wo, _ = axis_geometry(w, kw, strides[1], dilation[1], pads[1])
    taps = dgroups * kh * kw
    if away_from_integers:  # keeps finite differences off the bilinear kinks
        offset = rng.integers(-2, 3, (n, ho, wo, 2 * taps)) + rng.uniform(0.15, 0.85,
                                                                         (n, ho, wo, 2 * taps))
    else:
        offset = rng.uniform(-spread, spread, (n, ho, wo, 2 * taps))
    return dict(
        x=rng.normal(size=(n, h, w, cin)),
        offset=offset,
        mask=rng.uniform(0.0, 1.0, (n, ho, wo, taps)),
        kernel=rng.normal(size=(kh, kw, cin // groups, cout)),
        bias=rng.normal(size=(cout,)),
    )
