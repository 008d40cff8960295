"""Synthetic blur: kernels, convolution convention, layered composite, motion returned, dataset."""

import os

import cv2
import numpy as np
import pytest

from tfdeblur.data import synthetic_dataset
from tfdeblur.data.synthetic import (
    BlurConfig,
    blur,
    center_kernel,
    kernel_endpoints,
    linear_trajectory,
    load_kernels,
    random_foreground_mask,
    random_trajectory,
    synthesize_pair,
    trajectory_kernel,
)


def conv_reference(img, k):
    """float64 true convolution, mirror (reflect-101) borders: out(p) = sum_d k(d) img(p - d)."""
    img = np.asarray(img, np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    kh, kw = k.shape
    ry, rx = kh // 2, kw // 2
    h, w = img.shape[:2]
    # Mirroring a 1-pixel side can only repeat that pixel.
    pad = img
    for axis, r in ((0, ry), (1, rx)):
        widths = [(0, 0)] * 3
        widths[axis] = (r, r)
        pad = np.pad(pad, widths, mode="reflect" if img.shape[axis] > 1 else "edge")
    out = np.zeros_like(img)
    for dy in range(-ry, ry + 1):
        for dx in range(-rx, rx + 1):
            out += k[ry + dy, rx + dx] * pad[ry - dy:ry - dy + h, rx - dx:rx - dx + w]
    return out[..., 0] if squeeze else out


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (7, 1), (11, 9)])
@pytest.mark.parametrize("kshape", [(1, 1), (3, 7), (5, 5)])
def test_blur_matches_reference(rng, shape, kshape):
    img = rng.random(shape + (3,)).astype(np.float32)
    k = rng.random(kshape)
    k /= k.sum()
    np.testing.assert_allclose(blur(img, k), conv_reference(img, k), atol=2e-6)


def test_blur_is_a_convolution_not_a_correlation():
    img = np.zeros((15, 15), np.float32)
    img[7, 7] = 1.0
    k = np.zeros((5, 5), np.float32)
    k[2, 2], k[0, 4] = 0.5, 0.5  # displacement (dx, dy) = (+2, -2)
    out = blur(img, k)
    assert out[7, 7] == pytest.approx(0.5) and out[5, 9] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="odd"):
        blur(img, np.ones((2, 3)))


def test_random_trajectory(rng):
    for length in (0.0, 0.5, 7.3, 20.0):
        t = random_trajectory(length, np.random.default_rng(1))
        assert t.ndim == 2 and t.shape[1] == 2 and len(t) % 2 == 1
        assert np.array_equal(t[len(t) // 2], [0, 0])
        d = np.sqrt(((t[:, None] - t[None]) ** 2).sum(-1)).max()
        assert d == pytest.approx(length, abs=1e-9)
    a = random_trajectory(10, np.random.default_rng(3))
    b = random_trajectory(10, np.random.default_rng(3))
    c = random_trajectory(10, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for bad in (dict(length=-1), dict(length=np.nan), dict(length=3, smoothness=0),
                dict(length=3, samples=2)):
        with pytest.raises(ValueError):
            random_trajectory(rng=rng, **bad)


def test_trajectory_kernel_mass_and_first_moment(rng):
    for length in (1.0, 6.0, 19.5):
        t = random_trajectory(length, rng)
        k = trajectory_kernel(t).astype(np.float64)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.min() >= 0 and k.sum() == pytest.approx(1, abs=1e-5)
        c = k.shape[0] // 2
        ys, xs = np.indices(k.shape)
        # Time average of the piecewise-linear path (uniform speed per segment).
        mean = ((t[1:] + t[:-1]) / 2).mean(0)
        assert (xs * k).sum() - c == pytest.approx(mean[0], abs=1e-4)
        assert (ys * k).sum() - c == pytest.approx(mean[1], abs=1e-4)


def test_linear_kernel_is_a_box():
    k = trajectory_kernel(linear_trajectory(8.0, 0.0, samples=9))
    c = k.shape[0] // 2
    row = k[c]
    assert np.allclose(k.sum(0), row, atol=1e-7)  # all mass on the centre row
    # Box of length 8 sampled at pixel centres: 7 full pixels and two halves.
    ref = np.zeros_like(row)
    ref[c - 4:c + 5] = 1 / 8
    ref[c - 4] = ref[c + 4] = 1 / 16
    np.testing.assert_allclose(row, ref, atol=2e-3)
    with pytest.raises(ValueError, match="size"):
        trajectory_kernel(linear_trajectory(8.0, 0.0), size=5)


def test_kernel_endpoints():
    k = trajectory_kernel(linear_trajectory(6.0, -4.0))
    ends = kernel_endpoints(k)
    assert sorted(map(tuple, np.round(ends))) == [(-3.0, 2.0), (3.0, -2.0)]


def test_center_kernel():
    k = np.zeros((4, 6))
    k[0, 5] = 1.0
    k[1, 4] = 3.0
    ck = center_kernel(k)
    assert ck.shape[0] % 2 == 1 and ck.shape[0] == ck.shape[1]
    ys, xs = np.indices(ck.shape)
    c = ck.shape[0] // 2
    assert abs((xs * ck).sum() - c) <= 0.5 and abs((ys * ck).sum() - c) <= 0.5
    assert ck.sum() == pytest.approx(1)
    for bad, msg in ((np.ones(3), "2-D"), (-np.ones((3, 3)), "negative"),
                     (np.zeros((3, 3)), "sums to zero"), (np.full((3, 3), np.nan), "NaN")):
        with pytest.raises(ValueError, match=msg):
            center_kernel(bad)


def test_load_kernels(tmp_path, shared_data):
    ks = load_kernels(os.path.join(shared_data, "levin09_kernels.npz"))
    assert len(ks) == 8
    raw = np.load(os.path.join(shared_data, "levin09_kernels.npz"))
    for i, k in enumerate(ks):
        assert k.shape[0] % 2 == 1 and k.sum() == pytest.approx(1, abs=1e-5)
        ys, xs = np.indices(k.shape)
        c = k.shape[0] // 2
        assert abs((xs * k).sum() - c) <= 0.5 and abs((ys * k).sum() - c) <= 0.5
        # Same weights as recorded, only padded.
        r = raw[f"kernel{i + 1}"]
        np.testing.assert_allclose(np.sort(k[k > 0]), np.sort(r[r > 0] / r.sum()), rtol=1e-5)


def test_load_kernels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_kernels(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", kernel2=np.ones((3, 3)), kernel10=-np.ones((3, 3)))
    with pytest.raises(ValueError, match="bad.npz.*kernel10"):
        load_kernels(tmp_path / "bad.npz")
    np.save(tmp_path / "stack.npy", np.ones((2, 3, 3)))
    assert len(load_kernels(tmp_path / "stack.npy")) == 2
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        load_kernels(tmp_path / "junk.npz")


def test_foreground_mask(rng):
    for _ in range(5):
        m = random_foreground_mask(40, 60, rng, area=(0.1, 0.2))
        assert m.shape == (40, 60) and 0 <= m.min() and m.max() <= 1
        assert 0.02 < m.mean() < 0.25  # blob may be cut by the border
    with pytest.raises(ValueError, match="area"):
        random_foreground_mask(4, 4, rng, area=(0.5, 0.2))


EXACT = dict(quantize=False, noise_sigma=(0.0, 0.0), p_jpeg=0.0)


@pytest.mark.parametrize("gamma", [None, 2.2])
def test_layered_composite_matches_reference(rng, gamma):
    h, w = 24, 31
    sharp = rng.random((h, w, 3)).astype(np.float32)
    fg = rng.random((h, w, 3)).astype(np.float32)
    cfg = BlurConfig(p_foreground=1.0, max_length=6, foreground_max_length=8, gamma=gamma,
                     **EXACT)
    p = synthesize_pair(sharp, np.random.default_rng(7), config=cfg, foreground=fg)
    a = p.mask.astype(np.float64)[..., None]
    assert 0 < a.mean() < 1
    lin = (lambda x: x ** gamma) if gamma else (lambda x: x)
    unlin = (lambda x: np.clip(x, 0, 1) ** (1 / gamma)) if gamma else (lambda x: np.clip(x, 0, 1))
    kb, kf = p.background_kernel.astype(np.float64), p.foreground_kernel.astype(np.float64)
    ref = (conv_reference(a * lin(fg.astype(np.float64)), kf)
           + (1 - conv_reference(a, kf)) * conv_reference(lin(sharp.astype(np.float64)), kb))
    np.testing.assert_allclose(p.blurry, unlin(ref), atol=2e-5)
    np.testing.assert_allclose(p.sharp, a * fg + (1 - a) * sharp, atol=1e-6)
    # Flow: the foreground's motion where it covers the pixel, else the background's.
    fg_px, bg_px = p.mask >= 0.5, p.mask < 0.5
    assert fg_px.any() and bg_px.any()
    assert np.ptp(p.flow[fg_px], axis=0).max() == 0 and np.ptp(p.flow[bg_px], axis=0).max() == 0
    for kern, flow in ((p.background_kernel, p.flow[bg_px][0]),
                       (p.foreground_kernel, p.flow[fg_px][0])):
        c = kern.shape[0] // 2
        for dx, dy in (flow[:2], flow[2:]):
            y, x = int(round(c + dy)), int(round(c + dx))
            assert kern[y - 1:y + 2, x - 1:x + 2].sum() > 1e-3  # the path starts / ends there


def test_motion_sign_matches_the_flow_convention():
    # A point at p0 in the sharp (mid-exposure) image is found at p0 + flow in
    # the first / last frame, so the blurred streak must reach those points;
    # with the sign flipped it would reach the mirrored points instead.
    img = np.zeros((61, 61, 3), np.float32)
    img[30, 30] = 1.0
    cfg = BlurConfig(p_foreground=0.0, min_length=12, max_length=16, **EXACT)
    mirrored_empty = 0
    for seed in range(6):
        p = synthesize_pair(img, np.random.default_rng(seed), config=cfg)
        f = p.flow[0, 0]
        assert np.ptp(p.flow.reshape(-1, 4), axis=0).max() == 0
        streak = p.blurry[..., 0]
        np.testing.assert_allclose(streak.sum(), 1.0, atol=1e-4)
        for dx, dy in (f[:2], f[2:]):
            y, x = int(round(30 + dy)), int(round(30 + dx))
            assert streak[y - 1:y + 2, x - 1:x + 2].sum() > 1e-3
            y, x = int(round(30 - dy)), int(round(30 - dx))
            mirrored_empty += streak[y - 1:y + 2, x - 1:x + 2].sum() < 1e-6
    assert mirrored_empty > 0  # the test can tell the two signs apart


def test_noise_and_jpeg(rng):
    img = np.full((64, 64, 3), 0.5, np.float32)
    cfg = BlurConfig(p_foreground=0.0, noise_sigma=(0.05, 0.05), quantize=False)
    p = synthesize_pair(img, np.random.default_rng(0), config=cfg)
    assert np.std(p.blurry - 0.5) == pytest.approx(0.05, rel=0.05)
    cfg = BlurConfig(p_foreground=0.0, p_jpeg=1.0, jpeg_quality=(10, 10))
    tex = rng.random((64, 64, 3)).astype(np.float32)
    a = synthesize_pair(tex, np.random.default_rng(1), config=cfg).blurry
    b = synthesize_pair(tex, np.random.default_rng(1),
                        config=BlurConfig(p_foreground=0.0)).blurry
    np.testing.assert_allclose(a * 255, np.rint(a * 255), atol=1e-4)  # 8-bit levels
    assert 0.005 < np.abs(a - b).mean() < 0.2  # visibly re-compressed, same image


def test_config_validation():
    for bad in (dict(min_length=5, max_length=2), dict(p_foreground=1.5), dict(p_jpeg=-0.1),
                dict(noise_sigma=(0.2, 0.1)), dict(jpeg_quality=(0, 50)), dict(gamma=0.0),
                dict(foreground_max_length=-1)):
        with pytest.raises(ValueError, match="BlurConfig"):
            BlurConfig(**bad)
    assert BlurConfig(kernels=[np.ones((2, 2))]).max_radius() >= 21


def _photos(folder, rng, n=4, size=(40, 50)):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, size + (3,), dtype=np.uint8), (0, 0), 1.5)
        assert cv2.imwrite(os.path.join(folder, f"p{i}.png"), img)


def test_synthetic_dataset_defaults_fixed_and_whole(tmp_path, rng):
    _photos(tmp_path / "photos", rng)
    np.savez(tmp_path / "k.npz", a=trajectory_kernel(linear_trajectory(5, 2)), b=np.ones((3, 5)))
    ds = synthetic_dataset(tmp_path / "photos", seed=0, kernels=tmp_path / "k.npz")
    a = [tuple(x.numpy() for x in el) for el in ds]
    b = [tuple(x.numpy() for x in el) for el in ds]
    assert len(a) == 4 and a[0][0].shape == (40, 50, 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])  # same blur every iteration
    # Sharp targets are the photos themselves where no foreground was pasted.
    assert any(np.abs(x[0] - x[1]).mean() > 0.005 for x in a)


def test_synthetic_dataset_training(tmp_path, rng):
    _photos(tmp_path / "photos", rng, n=5, size=(20, 30))
    cfg = BlurConfig(max_length=5, foreground_max_length=5)

    def epochs(seed):
        ds = synthetic_dataset(tmp_path / "photos", patch_size=24, augment=True, shuffle=True,
                               batch_size=2, seed=seed, with_flow=True, config=cfg)
        return [[tuple(x.numpy() for x in el) for el in ds] for _ in range(2)]

    e1, e2 = epochs(3)
    assert [el[0].shape for el in e1] == [(2, 24, 24, 3), (2, 24, 24, 3), (1, 24, 24, 3)]
    assert e1[0][2].shape == (2, 24, 24, 4)
    assert np.abs(e1[0][2]).max() <= 5 + 1e-4
    assert not np.array_equal(e1[0][0], e2[0][0])  # redrawn each epoch
    r1, _ = epochs(3)
    for x, y in zip(e1, r1, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[2], y[2])


def test_synthetic_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        synthetic_dataset(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        synthetic_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        synthetic_dataset([tmp_path / "gone.png"])
    with pytest.raises(ValueError, match="config"):
        synthetic_dataset(tmp_path / "empty", config={"max_length": 3})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    # Named when the dataset is made (every photo is checked first).
    with pytest.raises(ValueError, match=r"x\.png.*truncated"):
        synthetic_dataset(tmp_path / "bad", seed=0)


def test_synthetic_on_real_photos(shared_data):
    folder = os.path.join(shared_data, "photos_kodak24")
    ds = synthetic_dataset(folder, patch_size=96, seed=0, with_flow=True,
                           kernels=os.path.join(shared_data, "levin09_kernels.npz"))
    for blurry, sharp, flow in ds.take(6):
        b, s = blurry.numpy().astype(np.float64), sharp.numpy().astype(np.float64)
        # Blur removes high frequencies: less gradient energy than the target.
        gb = np.abs(np.diff(b, axis=1)).mean() + np.abs(np.diff(b, axis=0)).mean()
        gs = np.abs(np.diff(s, axis=1)).mean() + np.abs(np.diff(s, axis=0)).mean()
        assert gb < gs
        assert np.abs(flow.numpy()).max() <= 20 + 1e-4
