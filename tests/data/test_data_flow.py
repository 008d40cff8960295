"""DIS flow: sign convention, real frames, the disk cache (stale / corrupt / atomic), pipeline."""

import io
import os

import cv2
import numpy as np
import pytest

from tfdeblur.data import FlowCache, bidirectional_flow, dis_flow, paired_dataset, read_image
from tfdeblur.data.flow import sequence_triplets
from tfdeblur.data.progress import ProgressBar


def _texture(rng, h=96, w=128):
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return (t - t.min()) / (t.max() - t.min())


def test_sign_convention_on_a_known_shift(rng):
    tex = _texture(rng)
    moved = np.roll(tex, (-2, 3), axis=(0, 1))  # tex(x, y) = moved(x + 3, y - 2)
    flow = dis_flow(tex, moved)
    assert flow.shape == tex.shape + (2,) and flow.dtype == np.float32
    inner = flow[10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(-2.0, abs=0.1)


def test_bidirectional_and_sequence_ends(rng):
    cur = _texture(rng)
    prev = np.roll(cur, 2, axis=1)  # cur(x) = prev(x + 2)
    nxt = np.roll(cur, -1, axis=0)  # cur(y) = nxt(y - 1)
    f = bidirectional_flow(prev, cur, nxt)[10:-10, 10:-10]
    np.testing.assert_allclose(np.median(f.reshape(-1, 4), axis=0), [2, 0, 0, -1], atol=0.1)
    f = bidirectional_flow(None, cur, nxt)[10:-10, 10:-10]
    np.testing.assert_allclose(f[..., :2], -f[..., 2:])
    f = bidirectional_flow(prev, cur, None)[10:-10, 10:-10]
    np.testing.assert_allclose(f[..., 2:], -f[..., :2])
    assert not bidirectional_flow(None, cur, None).any()
    assert sequence_triplets(["a", "b", "c"]) == [(None, "a", "b"), ("a", "b", "c"),
                                                  ("b", "c", None)]


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="same size"):
        dis_flow(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="preset"):
        dis_flow(np.zeros((8, 8)), np.zeros((8, 8)), preset="slow")
    with pytest.raises(ValueError, match="frame0"):
        dis_flow(np.zeros((8, 8, 2)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="dtype"):
        FlowCache("/tmp/x", dtype="int8")


def test_real_frames_flow_explains_the_motion(shared_data):
    d = os.path.join(shared_data, "frames_real_sequence")
    names = sorted(os.listdir(d))
    a, b = read_image(os.path.join(d, names[2])), read_image(os.path.join(d, names[3]))
    flow = dis_flow(a, b)
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(b[..., 0], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    err_flow = np.abs(warped - a[..., 0])[20:-20, 20:-20].mean()
    err_none = np.abs(b[..., 0] - a[..., 0])[20:-20, 20:-20].mean()
    assert err_flow < 0.6 * err_none


def _frames(folder, rng, n=4, h=48, w=64):
    os.makedirs(folder, exist_ok=True)
    tex = _texture(rng, h + 20, w + 20)
    paths = []
    for i in range(n):
        img = (tex[10 - i:10 - i + h, 10 + 2 * i:10 + 2 * i + w] * 255).astype(np.uint8)
        paths.append(os.path.join(folder, f"{i:06d}.png"))
        assert cv2.imwrite(paths[-1], img)
    return paths


def test_cache_roundtrip_and_reuse(tmp_path, rng):
    paths = _frames(tmp_path / "seq" / "sharp", rng)
    cache = FlowCache(tmp_path / "cache")
    trip = sequence_triplets(paths)
    assert cache.precompute(trip, workers=2, progress=False) == 4
    assert cache.precompute(trip) == 0
    for t in trip:
        fresh = bidirectional_flow(*[None if p is None else read_image(p) for p in t])
        np.testing.assert_allclose(cache.load(*t), fresh, atol=0.02)  # float16 storage
    # Source changed: the entry is stale and recomputed.
    os.utime(paths[1], ns=(1, 1))
    assert cache.load(*trip[1]) is None
    assert cache.precompute(trip, progress=False) == 3  # frame 1 and both its neighbours
    cache32 = FlowCache(tmp_path / "c32", dtype="float32")
    f = cache32.get(*trip[2])
    np.testing.assert_array_equal(cache32.load(*trip[2]), f)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_entry_detected_and_recomputed(tmp_path, rng, damage):
    paths = _frames(tmp_path / "seq" / "sharp", rng, n=3)
    cache = FlowCache(tmp_path / "cache")
    t = sequence_triplets(paths)[1]
    good = cache.get(*t)
    entry = cache.path_for(t[1])
    data = bytearray(open(entry, "rb").read())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"garbage" * 10)
    else:
        data = bytearray()
    with open(entry, "wb") as f:
        f.write(data)
    assert cache.load(*t) is None
    assert cache.precompute([t], progress=False) == (0 if damage == "flip" else 1)
    np.testing.assert_array_equal(cache.get(*t), good)  # recomputed (flip: here)
    np.testing.assert_array_equal(cache.load(*t), good)


def test_cache_writes_are_atomic(tmp_path, rng, monkeypatch):
    paths = _frames(tmp_path / "seq" / "sharp", rng, n=2)
    cache = FlowCache(tmp_path / "cache")
    t = sequence_triplets(paths)[0]

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="cannot write"):
        cache.get(*t)
    monkeypatch.undo()
    folder = os.path.dirname(cache.path_for(t[1]))
    assert os.listdir(folder) == []  # neither the entry nor a temporary file


def test_progress_bar_text():
    out = io.StringIO()
    with ProgressBar(50, "optical flow", stream=out) as bar:
        for _ in range(50):
            bar.update()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11
    assert lines[-1].startswith("optical flow: 50/50 [")
    out = io.StringIO()
    with ProgressBar(5, "x", stream=out, enabled=False) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def _gopro_tree(root, rng):
    seqs = {}
    for seq in ("S1", "S2"):
        sharp = _frames(os.path.join(root, "train", seq, "sharp"), rng, n=3)
        os.makedirs(os.path.join(root, "train", seq, "blur"))
        for p in sharp:
            img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(p.replace("sharp", "blur"), cv2.blur(img, (5, 1)))
        seqs[seq] = sharp
    return seqs


def test_pipeline_yields_cached_flows(tmp_path, rng, capfd):
    seqs = _gopro_tree(tmp_path / "gopro", rng)
    kw = dict(split="train", with_flow=True, flow_cache=tmp_path / "fc")
    ds = paired_dataset(tmp_path / "gopro", **kw)
    assert "optical flow" in capfd.readouterr().err
    cache = FlowCache(tmp_path / "fc")
    els = [tuple(x.numpy() for x in el) for el in ds]
    assert len(els) == 6
    trips = sequence_triplets(seqs["S1"]) + sequence_triplets(seqs["S2"])
    for (_, s, f), t in zip(els, trips, strict=True):
        assert f.shape == s.shape[:2] + (4,)
        np.testing.assert_array_equal(f, cache.load(*t))
        np.testing.assert_allclose(s, read_image(t[1]), atol=1e-7)
    # Second construction finds everything cached: no progress bar.
    paired_dataset(tmp_path / "gopro", **kw)
    assert "optical flow" not in capfd.readouterr().err
    # An entry corrupted after construction is recomputed while reading.
    entry = cache.path_for(trips[4][1])
    with open(entry, "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\x00" * 10)
    els2 = [tuple(x.numpy() for x in el) for el in ds]
    np.testing.assert_array_equal(els2[4][2], els[4][2])
    assert cache.load(*trips[4]) is not None
    batches = [tuple(x.numpy() for x in el) for el in paired_dataset(
        tmp_path / "gopro", patch_size=16, augment=True, batch_size=4, seed=0, **kw)]
    assert [b[2].shape for b in batches] == [(4, 16, 16, 4), (2, 16, 16, 4)]


def test_single_sequence_folder(tmp_path, rng):
    seqs = _gopro_tree(tmp_path / "gopro", rng)
    seq = tmp_path / "gopro" / "train" / "S2"
    with pytest.raises(ValueError, match="layout='gopro'"):
        paired_dataset(seq, with_flow=True, flow_cache=tmp_path / "fc")
    with pytest.raises(ValueError, match="flow_preset"):
        paired_dataset(seq, layout="gopro", with_flow=True, flow_preset="best")
    ds = paired_dataset(seq, layout="gopro", with_flow=True, flow_cache=tmp_path / "fc",
                        progress=False)
    cache = FlowCache(tmp_path / "fc")
    els = [tuple(x.numpy() for x in el) for el in ds]
    for (_, _, f), t in zip(els, sequence_triplets(seqs["S2"]), strict=True):
        np.testing.assert_array_equal(f, cache.load(*t))
