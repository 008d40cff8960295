"""Float64 NumPy reference of the gated recurrence (docs/ops.md section 1).

Independent of the package and of TensorFlow, so the GPU checks can use it on
hosts without TensorFlow. The first step is h[0] = (1 - g[0]) x[0]: the
boundary term g[0] * h[-1] is not formed (docs/ops_nonfinite.md), so an
infinite first gate gives +-inf, as the kernels do, not 0 * inf = NaN.
``dtype`` runs the same steps in another precision (float32: where the
kernels overflow to inf, so does the reference).
"""

import numpy as np

DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")


def _axis_rev(direction):
    return {"left_to_right": (2, False), "right_to_left": (2, True),
            "top_to_bottom": (1, False), "bottom_to_top": (1, True)}[direction]


def ref_forward(x, g, direction, dtype=np.float64):
    axis, rev = _axis_rev(direction)
    xm = np.moveaxis(np.asarray(x, dtype), axis, 0)
    gm = np.moveaxis(np.asarray(g, dtype), axis, 0)
    order = range(xm.shape[0] - 1, -1, -1) if rev else range(xm.shape[0])
    h = np.zeros_like(xm)
    prev = None
    with np.errstate(all="ignore"):  # non-finite inputs are part of the contract
        for t in order:
            b = (1 - gm[t]) * xm[t]
            prev = b if prev is None else b + gm[t] * prev
            h[t] = prev
    return np.moveaxis(h, 0, axis)


def ref_backward(x, g, dy, direction, dtype=np.float64):
    """dx, dg from the recurrences written in docs/ops.md (not from autodiff)."""
    axis, rev = _axis_rev(direction)
    h = np.moveaxis(ref_forward(x, g, direction, dtype), axis, 0)
    xm = np.moveaxis(np.asarray(x, dtype), axis, 0)
    gm = np.moveaxis(np.asarray(g, dtype), axis, 0)
    dym = np.moveaxis(np.asarray(dy, dtype), axis, 0)
    T = xm.shape[0]
    order = list(range(T - 1, -1, -1)) if rev else list(range(T))
    dx, dg = np.zeros_like(xm), np.zeros_like(gm)
    dh_next = g_next = None
    with np.errstate(all="ignore"):
        for i in reversed(range(T)):
            t = order[i]
            dh = dym[t] if dh_next is None else dym[t] + g_next * dh_next
            hprev = h[order[i - 1]] if i > 0 else 0.0
            dx[t] = (1 - gm[t]) * dh
            dg[t] = dh * (hprev - xm[t])
            dh_next, g_next = dh, gm[t]
    return np.moveaxis(dx, 0, axis), np.moveaxis(dg, 0, axis)


def ref_spatial_rnn(x, gates):
    c = x.shape[3]
    return np.concatenate(
        [ref_forward(x, gates[..., k * c:(k + 1) * c], d) for k, d in enumerate(DIRECTIONS)], -1)
