"""Paired augmentation: identical transforms, correct flow vectors, seeded and uniform."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.data.augment import augment_pair, random_crop, random_dihedral

# Reference: the 8 symmetries of the square as (transpose, hflip, vflip) on an
# [H, W, C] array, plus the same map on pixel coordinates (x, y) of an H x W grid.
SYMMETRIES = list(itertools.product([False, True], repeat=3))


def _apply(arr, t, hf, vf):
    if t:
        arr = arr.transpose(1, 0, 2)
    if hf:
        arr = arr[:, ::-1]
    if vf:
        arr = arr[::-1]
    return arr


def _map_points(x, y, h, w, t, hf, vf):
    """Where grid point (x, y) of an h x w image lands under the symmetry."""
    if t:
        x, y, h, w = y, x, w, h
    if hf:
        x = (w - 1) - x
    if vf:
        y = (h - 1) - y
    return x, y


def _reference_flow(flow, t, hf, vf):
    """Transformed flow from first principles: new_f(T p) = T(p + f(p)) - T(p)."""
    h, w = flow.shape[:2]
    out = np.zeros_like(flow, dtype=np.float64)
    out = _apply(out, t, False, False).copy()
    ys, xs = np.mgrid[0:h, 0:w]
    for k in range(flow.shape[2] // 2):
        fx, fy = flow[..., 2 * k], flow[..., 2 * k + 1]
        px, py = _map_points(xs, ys, h, w, t, hf, vf)
        qx, qy = _map_points(xs + fx, ys + fy, h, w, t, hf, vf)
        out[py, px, 2 * k] = qx - px
        out[py, px, 2 * k + 1] = qy - py
    return out


def _find_symmetry(src, out):
    matches = [s for s in SYMMETRIES if _apply(src, *s).shape == out.shape
               and np.array_equal(_apply(src, *s), out)]
    assert len(matches) == 1, f"output is not exactly one symmetry of the input: {matches}"
    return matches[0]


def test_flow_vectors_follow_the_grid(rng):
    h, w = 5, 7
    img = rng.random((h, w, 3)).astype(np.float32)
    flow = rng.normal(0, 3, (h, w, 4)).astype(np.float32)
    seen = set()
    for i in range(40):
        (out_img,), (out_flow,) = random_dihedral([img], [i, 7], flows=[flow])
        s = _find_symmetry(img, out_img.numpy())
        seen.add(s)
        np.testing.assert_allclose(out_flow.numpy(), _reference_flow(flow, *s), atol=1e-6)
    assert seen == set(SYMMETRIES)


def test_flow_still_relates_the_frames_after_augmentation(rng):
    # frame0(p) = frame1(p + f) with a constant integer shift f = (2, -1);
    # the relation must hold for the augmented frames and augmented flow.
    h, w = 12, 12
    frame1 = rng.random((h, w, 3)).astype(np.float32)
    frame0 = np.roll(frame1, (1, -2), axis=(0, 1))  # frame0[y, x] = frame1[y - 1, x + 2]
    flow = np.broadcast_to(np.array([2.0, -1.0, -2.0, 1.0], np.float32), (h, w, 4)).copy()
    for i in range(12):
        a0, a1, af = (t.numpy() for t in augment_pair(
            frame0, frame1, [i, 3], flow=flow, permute_channels=False))
        dx, dy = af[0, 0, 0], af[0, 0, 1]
        assert np.allclose(af[..., :2], [dx, dy]) and np.allclose(af[..., 2:], [-dx, -dy])
        for y, x in itertools.product(range(2, h - 2), range(2, w - 2)):
            np.testing.assert_array_equal(a0[y, x], a1[int(y + dy), int(x + dx)])


def test_pair_stays_aligned_and_channels_match(rng):
    sharp = rng.random((10, 9, 3)).astype(np.float32)
    blurry = 1.0 - sharp  # pixel-wise function: commutes with every transform
    for i in range(20):
        b, s = augment_pair(blurry, sharp, [i, 11], patch_size=(4, 4))
        np.testing.assert_allclose(b.numpy(), 1.0 - s.numpy(), atol=1e-7)
        assert b.shape == (4, 4, 3)


def test_crop_is_a_window_of_one_symmetry_and_permutation(rng):
    h, w, p = 9, 8, 4
    img = rng.permutation(h * w * 3).reshape(h, w, 3).astype(np.float32)
    perms_seen, offsets_seen = set(), set()
    for i in range(60):
        (out,) = augment_pair(img, img, [5, i], patch_size=p)[:1]
        out = out.numpy()
        found = []
        for s in SYMMETRIES:
            for perm in itertools.permutations(range(3)):
                for top, left in itertools.product(range(h - p + 1), range(w - p + 1)):
                    cand = _apply(img[top:top + p, left:left + p], *s)[..., list(perm)]
                    if np.array_equal(cand, out):
                        found.append((s, perm, top, left))
        assert len(found) == 1
        perms_seen.add(found[0][1])
        offsets_seen.add(found[0][2:])
    assert len(perms_seen) == 6
    assert len(offsets_seen) > 10


def test_same_seed_same_result_other_seed_differs(rng):
    img = rng.random((16, 16, 3)).astype(np.float32)
    a = augment_pair(img, img, [1, 2], patch_size=8)[0].numpy()
    b = augment_pair(img, img, [1, 2], patch_size=8)[0].numpy()
    c = augment_pair(img, img, [1, 3], patch_size=8)[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_disabled_transforms(rng):
    img = rng.random((6, 5, 3)).astype(np.float32)
    for i in range(10):
        b, _ = augment_pair(img, img, [i, 0], flip=False, rotate=False, permute_channels=False)
        np.testing.assert_array_equal(b.numpy(), img)
        b, _ = augment_pair(img, img, [i, 0], rotate=False, permute_channels=False)
        assert b.shape == img.shape  # flips only: shape kept


def test_crop_errors():
    img = tf.zeros((5, 6, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than patch_size"):
        random_crop(img, 7, [0, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in size"):
        random_crop([img, tf.zeros((5, 7, 3))], 2, [0, 0])
    with pytest.raises(ValueError, match="patch_size"):
        random_crop(img, (0, 2), [0, 0])
    with pytest.raises(ValueError, match="patch_size"):
        random_crop(img, "big", [0, 0])
    out = random_crop(tf.zeros((1, 1, 3)), 1, [0, 0])
    assert out.shape == (1, 1, 3)


def test_odd_flow_channels_rejected():
    with pytest.raises(ValueError, match="flow"):
        augment_pair(tf.zeros((4, 4, 3)), tf.zeros((4, 4, 3)), [0, 0], flow=tf.zeros((4, 4, 3)))
