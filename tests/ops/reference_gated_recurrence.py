"""Float64 NumPy reference of the gated recurrence (OPS.md section 1).

Independent of the package and of TensorFlow, so the GPU checks can use it on
hosts without TensorFlow.
"""

import numpy as np

DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")


def _axis_rev(direction):
    return {"left_to_right": (2, False), "right_to_left": (2, True),
            "top_to_bottom": (1, False), "bottom_to_top": (1, True)}[direction]


def ref_forward(x, g, direction):
    axis, rev = _axis_rev(direction)
    xm = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    gm = np.moveaxis(np.asarray(g, np.float64), axis, 0)
    order = range(xm.shape[0] - 1, -1, -1) if rev else range(xm.shape[0])
    h = np.zeros_like(xm)
    prev = np.zeros_like(xm[0]) if xm.shape[0] else None
    for t in order:
        prev = (1 - gm[t]) * xm[t] + gm[t] * prev
        h[t] = prev
    return np.moveaxis(h, 0, axis)


def ref_backward(x, g, dy, direction):
    """dx, dg from the recurrences written in OPS.md (not from autodiff)."""
    axis, rev = _axis_rev(direction)
    h = np.moveaxis(ref_forward(x, g, direction), axis, 0)
    xm = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    gm = np.moveaxis(np.asarray(g, np.float64), axis, 0)
    dym = np.moveaxis(np.asarray(dy, np.float64), axis, 0)
    T = xm.shape[0]
    order = list(range(T - 1, -1, -1)) if rev else list(range(T))
    dx, dg = np.zeros_like(xm), np.zeros_like(gm)
    dh_next, g_next = np.zeros_like(xm[0]), np.zeros_like(xm[0])
    for i in reversed(range(T)):
        t = order[i]
        dh = dym[t] + g_next * dh_next
        hprev = h[order[i - 1]] if i > 0 else 0.0
        dx[t] = (1 - gm[t]) * dh
        dg[t] = dh * (hprev - xm[t])
        dh_next, g_next = dh, gm[t]
    return np.moveaxis(dx, 0, axis), np.moveaxis(dg, 0, axis)


def ref_spatial_rnn(x, gates):
    c = x.shape[3]
    return np.concatenate(
        [ref_forward(x, gates[..., k * c:(k + 1) * c], d) for k, d in enumerate(DIRECTIONS)], -1)
