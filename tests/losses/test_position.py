"""SVDN's position loss: geometry on hand-computed cases, helpers, references, SVDN positions."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.models
from tests.losses import reference_losses as ref
from tfdeblur.losses import (
    PositionLoss,
    flow_guidance_distance,
    flow_to_feature_resolution,
    point_to_segment_distance,
    relative_sampling_points,
)
from tfdeblur.models.svdn import with_positions
from tfdeblur.ops import deform_conv_sampling_positions


def _dist(p, v):
    return float(point_to_segment_distance(np.array(p, "float64"), np.array(v, "float64")))


# ----------------------------------------------------------- point-to-segment geometry

@pytest.mark.parametrize("point, end, want", [
    ((3.0, 2.0), (0.0, 4.0), 3.0),                 # perpendicular foot inside the segment
    ((-1.5, 1.0), (0.0, 4.0), 1.5),                # ... on the other side
    ((2.0, 0.0), (2.0, 2.0), math.sqrt(2.0)),      # diagonal segment, foot (1, 1)
    ((1.0, 1.0), (2.0, 2.0), 0.0),                 # on the segment
    ((0.0, 7.0), (0.0, 4.0), 3.0),                 # beyond the end, on the line
    ((4.0, 7.0), (0.0, 4.0), 5.0),                 # beyond the end: distance to (0, 4)
    ((4.0, -3.0), (0.0, 4.0), 5.0),                # before the origin: distance to (0, 0)
    ((0.0, -2.0), (0.0, 4.0), 2.0),                # before the origin, on the line
    ((3.0, 4.0), (0.0, 0.0), 5.0),                 # zero-length segment: to the origin
    ((0.0, 0.0), (0.0, 0.0), 0.0),
    ((0.0, 0.0), (-3.0, 5.0), 0.0),                # the origin is on every segment
    ((-3.0, 5.0), (-3.0, 5.0), 0.0),               # so is the end
])
def test_point_to_segment_distance_hand_computed(point, end, want):
    assert _dist(point, end) == pytest.approx(want, abs=1e-12)
    assert ref.segment_distance(point, end) == pytest.approx(want, abs=1e-12)


def test_algorithm_1_as_printed_is_not_the_distance():
    # SVDN's Algorithm 1 with flow (u, v) = (4, 0) and point (x, y) = (2, 3):
    # foot abscissa x0 = (u v y + v^2 x) / (u^2 + v^2) = 0 (inside [0, 4]),
    # distance |u x - v y| / sqrt(u^2 + v^2) = 2. The point is 3 from the
    # segment along the x axis; the swapped coordinates give 2.
    u, v, x, y = 4.0, 0.0, 2.0, 3.0
    printed = abs(u * x - v * y) / math.hypot(u, v)
    assert printed == 2.0
    assert _dist((x, y), (u, v)) == pytest.approx(3.0)       # (x, y) order for both
    assert _dist((y, x), (v, u)) == pytest.approx(3.0)       # (y, x) order for both


def test_point_to_segment_distance_matches_reference_and_broadcasts(rng):
    p = rng.normal(0, 3, (4, 5, 2))
    v = rng.normal(0, 3, (4, 1, 2))
    v[0] = 0.0
    got = point_to_segment_distance(p, v)
    assert got.shape == (4, 5)
    want = np.array([[ref.segment_distance(p[i, j], v[i, 0]) for j in range(5)]
                     for i in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_point_to_segment_distance_gradient(rng):
    p = rng.normal(0, 2, (6, 2))
    v = np.array([[0.0, 4.0], [0.0, 4.0], [0.0, 4.0], [0.0, 0.0], [2.0, -1.0], [-3.0, 1.0]])
    p[0], p[1], p[2] = (3.0, 2.0), (4.0, 7.0), (4.0, -3.0)   # foot inside, beyond, behind
    theo, num = tf.test.compute_gradient(
        lambda q: point_to_segment_distance(q, tf.constant(v)), [tf.constant(p)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-7)
    # At zero distance the gradient is 0, not NaN; also for a zero-length segment.
    q = tf.constant([[1.0, 1.0], [0.0, 0.0]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(q)
        d = point_to_segment_distance(q, tf.constant([[2.0, 2.0], [0.0, 0.0]], tf.float64))
    np.testing.assert_array_equal(tape.gradient(d, q), np.zeros((2, 2)))


# ------------------------------------------------------ positions and flows -> one frame

@pytest.mark.parametrize("kernel, size", [(5, (7, 6)), (3, (1, 1)), (5, (1, 4)), (3, (2, 9))])
def test_relative_points_are_grid_taps_plus_offsets(rng, kernel, size):
    """With the package's own DCN geometry (stride 1, "same", odd kernel)."""
    h, w = size
    taps = kernel * kernel
    offset = rng.normal(0, 1.5, (2, h, w, 2 * taps))
    positions = deform_conv_sampling_positions(offset, (h, w), kernel)
    rel = np.asarray(relative_sampling_points(positions))
    c = (kernel - 1) // 2
    grid = np.array([(ky - c, kx - c) for ky in range(kernel) for kx in range(kernel)], float)
    want = grid[None, None, None] + offset.reshape(2, h, w, taps, 2)
    np.testing.assert_allclose(rel, want, atol=1e-12)


def test_relative_points_of_an_svdn_without_offsets_are_its_grid():
    keras.utils.set_random_seed(0)
    model = with_positions(tfdeblur.models.build(
        "svdn", width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2,
        implementation="portable"))
    ow1 = model.get_layer("neck").ow1_conv
    ow1.set_weights([np.zeros_like(w) for w in ow1.get_weights()])
    image = np.random.default_rng(1).uniform(0, 1, (2, 7, 9, 3)).astype("float32")
    _, positions = model(image)
    assert tuple(positions.shape) == (2, 4, 5, 9, 2)
    rel = np.asarray(relative_sampling_points(positions))
    grid = np.array([(ky, kx) for ky in (-1, 0, 1) for kx in (-1, 0, 1)], "float32")
    np.testing.assert_array_equal(rel, np.broadcast_to(grid, rel.shape))
    # The flow of a 7x9 image comes to the same 4x5 feature grid.
    flow = np.random.default_rng(2).normal(0, 2, (2, 7, 9, 4)).astype("float32")
    assert tuple(flow_to_feature_resolution(flow).shape) == (2, 4, 5, 4)
    d = flow_guidance_distance(positions, flow)
    np.testing.assert_allclose(d, ref.position_distances(positions, flow, 2), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("shape, stride", [((2, 5, 7, 4), 2), ((1, 1, 1, 4), 2),
                                           ((1, 1, 6, 2), 2), ((1, 8, 8, 4), 2),
                                           ((2, 7, 4, 4), 3), ((1, 3, 5, 4), 1)])
def test_flow_to_feature_resolution_matches_reference(rng, shape, stride):
    flow = rng.normal(0, 3, shape)
    got = flow_to_feature_resolution(flow, stride)
    np.testing.assert_allclose(got, ref.pool_flow(flow, stride), rtol=1e-12, atol=1e-12)


def test_flow_to_feature_resolution_hand_computed():
    # One 3x3 image, flow (dx, dy) = (x, 10 y) at pixel (y, x): the 2x2 block
    # at the origin averages x = 0.5 and y = 0.5; the cut blocks average what
    # they have; everything is halved.
    y, x = np.mgrid[0:3, 0:3].astype("float64")
    flow = np.stack([x, 10 * y], axis=-1)[None]
    got = np.asarray(flow_to_feature_resolution(flow))
    want = np.array([[[0.5, 5.0], [2.0, 5.0]], [[0.5, 20.0], [2.0, 20.0]]]) / 2
    np.testing.assert_allclose(got[0], want)


def test_flow_guidance_uses_the_nearer_segment_in_feature_pixels():
    # A 2x2 image = one feature pixel. Flow to the previous frame (dx, dy) =
    # (8, 0) image px = (4, 0) feature px; to the next frame (-8, 0) -> (-4, 0).
    flow = np.zeros((1, 2, 2, 4))
    flow[..., 0], flow[..., 2] = 8.0, -8.0
    points = np.array([[1.0, -2.0],            # (dy, dx): 1 from the next segment
                       [3.0, 5.0],             # beyond the previous one's end: sqrt(10)
                       [0.0, 0.0],             # origin
                       [-2.0, 0.5]])           # 2 from the previous segment
    positions = points.reshape(1, 1, 1, 4, 2)  # pixel (0, 0): absolute = relative
    d = np.asarray(flow_guidance_distance(positions, flow))[0, 0, 0]
    np.testing.assert_allclose(d, [1.0, math.sqrt(10.0), 0.0, 2.0], atol=1e-12)
    # dx and dy are not swapped: a vertical flow (dx, dy) = (0, 8) -> (dy, dx) = (4, 0)
    flow = np.zeros((1, 2, 2, 4))
    flow[..., 1] = 8.0
    d = np.asarray(flow_guidance_distance(np.array([3.0, 1.0]).reshape(1, 1, 1, 1, 2), flow))
    assert d.item() == pytest.approx(1.0)
    loss = PositionLoss(margin=0.5, dtype="float64")
    assert float(loss(flow, np.array([3.0, 1.0]).reshape(1, 1, 1, 1, 2))) == pytest.approx(0.5)


# --------------------------------------------------------------------- the loss

@pytest.mark.parametrize("margin", [0.0, 0.7, 2.0])
@pytest.mark.parametrize("image, taps", [((5, 3), 25), ((1, 1), 25), ((8, 6), 9), ((2, 7), 4)])
def test_position_loss_matches_reference(rng, margin, image, taps):
    h, w = image
    hf, wf = -(-h // 2), -(-w // 2)
    grid = rng.integers(-2, 3, (taps, 2))
    rows = np.arange(hf)[None, :, None, None]
    cols = np.arange(wf)[None, None, :, None]
    positions = np.stack(np.broadcast_arrays(rows + grid[:, 0], cols + grid[:, 1]), -1)
    positions = positions + rng.normal(0, 1.0, (2, hf, wf, taps, 2))
    flow = rng.normal(0, 3, (2, h, w, 4))
    loss = PositionLoss(margin, reduction=None, dtype="float64")
    np.testing.assert_allclose(loss(flow, positions),
                               ref.position_loss(positions, flow, margin), rtol=1e-12,
                               atol=1e-12)
    mean = PositionLoss(margin, dtype="float64")(flow, positions)
    np.testing.assert_allclose(float(mean), ref.position_loss(positions, flow, margin).mean(),
                               rtol=1e-12, atol=1e-12)


def test_position_loss_within_margin_is_zero_and_float32(rng):
    flow = np.zeros((1, 4, 4, 4), "float32")
    flow[..., 0] = 6.0                                   # 3 feature px to the right
    positions = np.zeros((1, 2, 2, 25, 2), "float32")
    positions[..., 0] = np.arange(2)[:, None, None]
    positions[..., 1] = np.arange(2)[None, :, None] + rng.uniform(0, 3, (1, 2, 2, 25))
    assert float(PositionLoss(margin=0.0)(flow, positions)) == pytest.approx(0.0, abs=1e-6)
    positions[..., 0] += 1.5                             # 1.5 px off the segment
    assert float(PositionLoss(margin=1.0)(flow, positions)) == pytest.approx(0.5, rel=1e-6)
    assert float(PositionLoss(margin=2.0)(flow, positions)) == 0.0


def test_position_loss_batches_and_stride_one(rng):
    flow = rng.normal(0, 2, (3, 6, 5, 4))
    positions = rng.normal(1, 2, (3, 3, 3, 25, 2))
    per = PositionLoss(0.5, reduction=None, dtype="float64")(flow, positions)
    assert per.shape == (3,)
    # feature_stride=1 with the flow brought down by hand gives the same loss.
    small = np.asarray(flow_to_feature_resolution(flow))
    np.testing.assert_allclose(
        PositionLoss(0.5, feature_stride=1, reduction=None, dtype="float64")(small, positions),
        per, rtol=1e-12)
    empty = PositionLoss()(flow[:0].astype("float32"), positions[:0].astype("float32"))
    assert empty.shape == () and float(empty) == 0.0
    w = np.array([0.0, 1.0, 3.0])
    got = PositionLoss(0.5, dtype="float64")(flow, positions, sample_weight=w)
    np.testing.assert_allclose(float(got), (np.asarray(per) * w).sum() / 3, rtol=1e-12)


def test_position_loss_gradient(rng):
    flow = tf.constant(rng.normal(0, 3, (1, 3, 4, 4)))
    positions = rng.normal(0, 1.5, (1, 2, 2, 9, 2))
    loss = PositionLoss(margin=0.3, dtype="float64")
    theo, num = tf.test.compute_gradient(lambda p: loss(flow, p), [tf.constant(positions)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-7)
    assert np.abs(theo[0]).max() > 0


def test_position_loss_bad_inputs(rng):
    flow = rng.normal(0, 2, (2, 6, 5, 4)).astype("float32")
    positions = rng.normal(0, 2, (2, 3, 3, 25, 2)).astype("float32")
    loss = PositionLoss()
    with pytest.raises(ValueError, match=r"y_pred \(positions\) must be a rank-5"):
        loss(flow, positions[..., 0, :])
    with pytest.raises(ValueError, match=r"y_true \(flow\) must be \[N, H, W, 4\]"):
        loss(flow[..., :2], positions)
    with pytest.raises(ValueError, match=r"y_true \(flow\) of shape .* gives a 4x3 flow"):
        loss(np.zeros((2, 8, 5, 4), "float32"), positions)
    with pytest.raises(ValueError, match="gives a 3x3 flow .* for a batch of 1"):
        loss(flow[:1], positions)
    with pytest.raises(ValueError, match=r"y_true \(flow\) must be floating point"):
        loss(flow.astype("int32"), positions)
    bad = flow.copy()
    bad[0, 1, 1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_true \(flow\) has NaN or Inf"):
        loss(bad, positions)
    bad = positions.copy()
    bad[1, 0, 0, 3, 1] = -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_pred \(positions\) has NaN"):
        loss(flow, bad)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        PositionLoss(margin=-1.0)
    with pytest.raises(ValueError, match="feature_stride must be an integer >= 1"):
        PositionLoss(feature_stride=0)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]),
                                  tf.TensorSpec([None, None, None, 25, 2])])
    def traced(f, p):
        return loss(f, p)

    np.testing.assert_allclose(traced(flow, positions), loss(flow, positions), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must match"):
        traced(np.zeros((2, 9, 5, 4), "float32"), positions)


def test_position_loss_serialises():
    loss = PositionLoss(margin=0.25, feature_stride=1, name="pos")
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(back, PositionLoss)
    assert (back.margin, back.feature_stride, back.name) == (0.25, 1, "pos")
