"""Dynamic-scene realism of the synthetic blur: accelerated paths, discrete frames,
several occluding layers, saturated highlights that smear, sensor noise in linear light."""

import dataclasses

import numpy as np
import pytest

from tfdeblur.data.synthetic import (
    BlurConfig,
    _extent,
    accelerated_trajectory,
    frames_kernel,
    sample_frames,
    synthesize_pair,
)

#: Only the feature under test switched on: no foreground, no recorded kernels, no noise.
PLAIN = BlurConfig(max_length=20.0, min_length=20.0, p_foreground=0.0, quantize=False)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_accelerated_trajectory_extent_centre_and_acceleration(rng):
    for _ in range(20):
        traj = accelerated_trajectory(25.0, rng, acceleration=1.5, curvature=0.0, shake=0.0)
        assert len(traj) % 2 == 1
        np.testing.assert_allclose(traj[len(traj) // 2], 0.0, atol=1e-12)
        assert _extent(traj) == pytest.approx(25.0, rel=1e-9)
    # Without curvature and shake the path is straight and the step length changes
    # linearly in time (constant acceleration): its second difference is constant.
    traj = accelerated_trajectory(30.0, np.random.default_rng(3), acceleration=1.5,
                                  curvature=0.0, shake=0.0)
    step = np.hypot(*np.diff(traj, axis=0).T)
    accel = np.diff(step)
    assert np.ptp(accel) < 1e-9 * step.max()
    direction = np.diff(traj, axis=0) / step[:, None]
    np.testing.assert_allclose(direction, direction[:1].repeat(len(direction), 0), atol=1e-9)
    # An accelerating path is not uniform: the two halves cover different distances.
    traj = accelerated_trajectory(30.0, np.random.default_rng(5), acceleration=1.5,
                                  curvature=0.0, shake=0.0)
    mid = len(traj) // 2
    first, second = np.hypot(*traj[0]), np.hypot(*traj[-1])
    assert abs(first - second) > 0.5, (first, second, mid)


def test_accelerated_trajectory_errors(rng):
    for kwargs, name in (({"acceleration": -1}, "acceleration"),
                         ({"curvature": np.nan}, "curvature"),
                         ({"shake": -0.1}, "shake"), ({"samples": 2}, "samples")):
        with pytest.raises(ValueError, match=name):
            accelerated_trajectory(10.0, rng, **kwargs)
    with pytest.raises(ValueError, match="length"):
        accelerated_trajectory(-1.0, rng)


def test_discrete_frames_kernel():
    traj = np.stack([np.linspace(-9, 9, 81), np.zeros(81)], 1)
    pts = sample_frames(traj, 7)
    np.testing.assert_allclose(pts[:, 0], [-9, -6, -3, 0, 3, 6, 9], atol=1e-12)
    k = frames_kernel(pts)
    assert k.shape == (21, 21) and k.sum() == pytest.approx(1.0, abs=1e-6)
    # Seven separate copies (integer positions here, so seven single pixels of 1/7),
    # not a continuous streak.
    row = k[10]
    assert np.count_nonzero(k > 1e-6) == 7 and np.count_nonzero(row > 1e-6) == 7
    np.testing.assert_allclose(row[row > 1e-6], 1 / 7, rtol=1e-5)
    assert sample_frames(traj, 1).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="frames"):
        sample_frames(traj, 0)
    with pytest.raises(ValueError, match="points"):
        frames_kernel(np.zeros((3, 3)))


def test_frames_in_config_give_discrete_kernels(rng):
    cfg = dataclasses.replace(PLAIN, frames=(7, 7))
    pair = synthesize_pair(np.full((40, 40, 3), 0.5, np.float32), rng, config=cfg)
    # 7 instants splatted bilinearly: at most 4 pixels each.
    assert np.count_nonzero(pair.background_kernel) <= 28


def test_highlights_smear_into_saturated_streaks():
    """A small light at display value 0.97 on a dark wall, moved 20 px horizontally.
    Without highlight gain the streak is dim (the light's energy spread over 20 px);
    with gain 6 in linear light it stays saturated over several pixels."""
    img = np.full((41, 81, 3), 0.1, np.float32)
    img[18:23, 38:43] = 0.97
    base = dataclasses.replace(PLAIN, gamma=2.2, p_accelerated=1.0, acceleration=0.0,
                               curvature=0.0)
    # Gain 1 draws the same random numbers as gain 6: the same motion.
    dim = synthesize_pair(img, np.random.default_rng(0),
                          config=dataclasses.replace(base, p_highlights=1.0,
                                                     highlight_gain=(1.0, 1.0)))
    bright = synthesize_pair(img, np.random.default_rng(0),
                             config=dataclasses.replace(base, p_highlights=1.0,
                                                        highlight_gain=(6.0, 6.0)))
    np.testing.assert_array_equal(dim.background_kernel, bright.background_kernel)
    assert dim.blurry.max() < 0.75
    assert np.count_nonzero(bright.blurry[20].max(axis=1) > 0.99) >= 4
    # The sharp target is clipped the same way: the light itself is saturated.
    assert bright.sharp[20, 40].min() == pytest.approx(1.0)
    np.testing.assert_allclose(bright.sharp[5, 5], 0.1, atol=1e-6)


def test_several_occluding_foreground_layers(rng):
    cfg = dataclasses.replace(PLAIN, p_foreground=1.0, foreground_layers=(3, 3),
                              foreground_area=(0.05, 0.1))
    calls = []

    def texture():
        calls.append(1)
        return np.full((60, 60, 3), 0.2 * len(calls), np.float32)

    pair = synthesize_pair(np.zeros((60, 60, 3), np.float32), rng, config=cfg,
                           foreground=texture)
    assert len(calls) == 3
    # Each layer's texture shows where it is on top (later layers occlude earlier ones).
    covered = np.round(pair.sharp[pair.mask > 0.999][:, 0].astype(np.float64), 3)
    on_top = np.isin(covered, [0.2, 0.4, 0.6])
    assert on_top.mean() > 0.9  # the rest: one layer's soft edge over another
    assert len(set(covered[on_top])) >= 2


def test_sensor_noise_is_signal_dependent_in_linear_light():
    img = np.concatenate([np.full((64, 32, 3), 0.05, np.float32),
                          np.full((64, 32, 3), 0.8, np.float32)], 1)
    cfg = dataclasses.replace(PLAIN, max_length=0.0, min_length=0.0, gamma=1.0,
                              shot_noise=(0.01, 0.01), read_noise=(0.001, 0.001))
    pair = synthesize_pair(img, np.random.default_rng(0), config=cfg)
    dark, light = pair.blurry[8:-8, 4:28] - 0.05, pair.blurry[8:-8, 36:60] - 0.8
    # Variance shot * x + read**2: 0.01 * 0.05 + 1e-6 vs 0.01 * 0.8 + 1e-6.
    assert dark.var() == pytest.approx(0.01 * 0.05 + 1e-6, rel=0.15)
    assert light.var() == pytest.approx(0.01 * 0.8 + 1e-6, rel=0.15)


@pytest.mark.parametrize("field,value", [
    ("frames", (0, 3)), ("frames", (5, 3)), ("frames", (2.5, 3)),
    ("foreground_layers", (-1, 1)), ("highlight_gain", (0.5, 2.0)),
    ("shot_noise", (0.1, 0.0)), ("read_noise", (-0.1, 0.1)),
    ("highlight_threshold", 1.0), ("p_accelerated", 1.5), ("p_highlights", -0.1),
    ("acceleration", -1.0), ("curvature", float("inf")),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BlurConfig(**{field: value})
