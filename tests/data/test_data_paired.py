"""Paired datasets: layouts, file order, exact pixels, errors naming the file, training options."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.data import detect_layout, find_pairs, paired_dataset


def _write(path, rgb_u8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb_u8[..., ::-1]))


def _tree_folders(root, rng, names, size=(9, 13), blur="blur", sharp="sharp", ext=".png"):
    """Flat folders; returns {name: (blurry_u8, sharp_u8)} as written."""
    ref = {}
    for n in names:
        s = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        b = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        _write(os.path.join(root, blur, n + ext), b)
        _write(os.path.join(root, sharp, n + ".png"), s)
        ref[n] = (b, s)
    return ref


def _tree_gopro(root, rng, size=(8, 10)):
    """GoPro layout with two splits; returns the expected [(blur_u8, sharp_u8)] per split."""
    expected = {}
    for split, seqs in (("train", ["GOPR0372_07_00", "GOPR0374_11_00"]), ("test", ["GOPR0384"])):
        expected[split] = []
        for seq in seqs:
            for i in (2, 10, 1):  # written out of order; natural order is 1, 2, 10
                s = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                b = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                g = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                name = f"{i:06d}.png" if seq != "GOPR0384" else f"{i}.png"
                for d, img in (("blur", b), ("blur_gamma", g), ("sharp", s)):
                    _write(os.path.join(root, split, seq, d, name), img)
                expected[split].append((seq, i, b, g, s))
        expected[split].sort(key=lambda e: (e[0], e[1]))
    return expected


def _as_list(ds):
    return [tuple(x.numpy() for x in el) for el in ds]


def test_folders_layout_exact_pixels_in_file_order(tmp_path, rng):
    ref = _tree_folders(tmp_path, rng, ["img10", "img2", "img1"])
    assert detect_layout(tmp_path) == "folders"
    ds = paired_dataset(tmp_path)
    assert ds.element_spec[0].shape.as_list() == [None, None, 3]
    got = _as_list(ds)
    assert len(got) == 3
    for (b, s), name in zip(got, ["img1", "img2", "img10"], strict=True):
        assert b.dtype == np.float32 and s.dtype == np.float32
        np.testing.assert_allclose(b, ref[name][0] / 255.0, atol=1e-7)
        np.testing.assert_allclose(s, ref[name][1] / 255.0, atol=1e-7)


def test_input_target_folders_and_mixed_extensions(tmp_path, rng):
    ref = _tree_folders(tmp_path, rng, ["a", "b"], blur="input", sharp="target", ext=".bmp")
    got = _as_list(paired_dataset(tmp_path))
    np.testing.assert_allclose(got[1][0], ref["b"][0] / 255.0, atol=1e-7)
    np.testing.assert_allclose(got[1][1], ref["b"][1] / 255.0, atol=1e-7)


def test_gopro_layout(tmp_path, rng):
    exp = _tree_gopro(tmp_path, rng)
    assert detect_layout(tmp_path) == "gopro"
    with pytest.raises(ValueError, match="split="):
        paired_dataset(tmp_path)
    for split in ("train", "test"):
        pairs = find_pairs(tmp_path, split=split)
        assert [(os.path.basename(p.sequence), int(os.path.basename(p.sharp)[:-4]))
                for p in pairs] == [(e[0], e[1]) for e in exp[split]]
        got = _as_list(paired_dataset(tmp_path, split=split))
        for (b, s), e in zip(got, exp[split], strict=True):
            np.testing.assert_allclose(b, e[2] / 255.0, atol=1e-7)
            np.testing.assert_allclose(s, e[4] / 255.0, atol=1e-7)
        got = _as_list(paired_dataset(tmp_path, split=split, blur_dir="blur_gamma"))
        for (b, _), e in zip(got, exp[split], strict=True):
            np.testing.assert_allclose(b, e[3] / 255.0, atol=1e-7)
    # A split folder itself is a GoPro root too.
    assert len(find_pairs(tmp_path / "train")) == 6


def test_pair_list(tmp_path, rng):
    ref = _tree_folders(tmp_path / "data", rng, ["x", "y"])
    other = tmp_path / "elsewhere" / "with space.png"
    _write(other, ref["x"][1])
    lst = tmp_path / "pairs.txt"
    lst.write_text(f"# blurry sharp\n\ndata/blur/y.png data/sharp/y.png\n"
                   f"{tmp_path}/data/blur/x.png 'elsewhere/with space.png'  # comment\n")
    assert detect_layout(lst) == "list"
    got = _as_list(paired_dataset(lst))
    np.testing.assert_allclose(got[0][0], ref["y"][0] / 255.0, atol=1e-7)
    np.testing.assert_allclose(got[1][1], ref["x"][1] / 255.0, atol=1e-7)
    lst.write_text("data/blur/x.png\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:1"):
        paired_dataset(lst)
    lst.write_text("data/blur/x.png data/sharp/x.png\ndata/blur/x.png data/sharp/zz.png\n")
    with pytest.raises(FileNotFoundError, match=r"pairs\.txt:2.*zz\.png"):
        paired_dataset(lst)


def test_missing_partner_names_the_file(tmp_path, rng):
    _tree_folders(tmp_path, rng, ["a", "b"])
    os.remove(tmp_path / "sharp" / "b.png")
    with pytest.raises(ValueError, match=r"b\.png"):
        paired_dataset(tmp_path)
    _write(tmp_path / "sharp" / "b.png", np.zeros((9, 13, 3), np.uint8))
    _write(tmp_path / "sharp" / "c.png", np.zeros((9, 13, 3), np.uint8))
    with pytest.raises(ValueError, match=r"sharp image.*c\.png"):
        paired_dataset(tmp_path)
    os.remove(tmp_path / "sharp" / "c.png")
    _write(tmp_path / "blur" / "a.jpg", np.zeros((9, 13, 3), np.uint8))
    with pytest.raises(ValueError, match="two images named 'a'"):
        paired_dataset(tmp_path)


def test_missing_gopro_folder(tmp_path, rng):
    _tree_gopro(tmp_path, rng)
    for f in os.listdir(tmp_path / "test" / "GOPR0384" / "blur"):
        os.remove(tmp_path / "test" / "GOPR0384" / "blur" / f)
    os.rmdir(tmp_path / "test" / "GOPR0384" / "blur")
    with pytest.raises(ValueError, match=r"GOPR0384 has no 'blur' folder"):
        paired_dataset(tmp_path, split="test")


def test_differing_sizes_fail_when_read(tmp_path, rng):
    _tree_folders(tmp_path, rng, ["a", "b"])
    _write(tmp_path / "sharp" / "b.png", np.zeros((9, 12, 3), np.uint8))
    it = iter(paired_dataset(tmp_path))
    next(it)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"blur/b\.png is 13x9.*sharp/b\.png"):
        next(it)


def test_truncated_and_vanished_files_fail_naming_them(tmp_path, rng):
    _tree_folders(tmp_path, rng, ["a", "b"], size=(30, 40))
    data = (tmp_path / "blur" / "b.png").read_bytes()
    (tmp_path / "blur" / "b.png").write_bytes(data[:len(data) // 2])
    # Named when the dataset is made (every file is checked first), not mid-iteration.
    with pytest.raises(ValueError, match=r"blur/b\.png.*truncated"):
        paired_dataset(tmp_path, patch_size=8, augment=True, batch_size=2, seed=0)
    _write(tmp_path / "blur" / "b.png", np.zeros((30, 40, 3), np.uint8))
    ds = paired_dataset(tmp_path)
    os.remove(tmp_path / "sharp" / "a.png")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sharp/a\.png does not exist"):
        _as_list(ds)


def test_patch_larger_than_image_names_the_file(tmp_path, rng):
    _tree_folders(tmp_path, rng, ["a"], size=(9, 13))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a\.png is 13x9, smaller than"):
        _as_list(paired_dataset(tmp_path, patch_size=10))


def test_bad_arguments(tmp_path, rng):
    _tree_folders(tmp_path, rng, ["a"])
    with pytest.raises(ValueError, match="layout"):
        paired_dataset(tmp_path, layout="lmdb")
    with pytest.raises(ValueError, match="batch_size"):
        paired_dataset(tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="shuffle"):
        paired_dataset(tmp_path, shuffle=-3)
    with pytest.raises(ValueError, match="seed"):
        paired_dataset(tmp_path, seed="x")
    with pytest.raises(ValueError, match="split"):
        paired_dataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="GoPro layout"):
        paired_dataset(tmp_path, with_flow=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paired_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout"):
        paired_dataset(tmp_path / "empty")
    (tmp_path / "e2" / "blur").mkdir(parents=True)
    (tmp_path / "e2" / "sharp").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image pairs"):
        paired_dataset(tmp_path / "e2")


def test_one_pixel_images_and_batch_one(tmp_path, rng):
    ref = _tree_folders(tmp_path, rng, ["a", "b", "c"], size=(1, 5))
    got = _as_list(paired_dataset(tmp_path, batch_size=1))
    assert got[0][0].shape == (1, 1, 5, 3)
    np.testing.assert_allclose(got[2][1][0], ref["c"][1] / 255.0, atol=1e-7)
    got = _as_list(paired_dataset(tmp_path, patch_size=1, augment=True, batch_size=2, seed=1))
    assert [g[0].shape for g in got] == [(2, 1, 1, 3), (1, 1, 1, 3)]
    got = _as_list(paired_dataset(tmp_path, patch_size=1, augment=True, batch_size=2, seed=1,
                                  drop_remainder=True))
    assert len(got) == 1


def test_center_crop_without_augmentation(tmp_path, rng):
    ref = _tree_folders(tmp_path, rng, ["a"], size=(9, 13))
    (b, s), = _as_list(paired_dataset(tmp_path, patch_size=(4, 6)))
    np.testing.assert_allclose(b, ref["a"][0][2:6, 3:9] / 255.0, atol=1e-7)
    np.testing.assert_allclose(s, ref["a"][1][2:6, 3:9] / 255.0, atol=1e-7)


def test_training_pipeline_seeded_and_aligned(tmp_path, rng):
    names = [f"p{i}" for i in range(7)]
    ref = {}
    for n in names:  # blurry = 255 - sharp: any transform must keep that relation
        s = rng.integers(0, 256, (12, 11, 3), dtype=np.uint8)
        _write(tmp_path / "blur" / f"{n}.png", 255 - s)
        _write(tmp_path / "sharp" / f"{n}.png", s)
        ref[n] = s

    def run(seed, **kw):
        ds = paired_dataset(tmp_path, patch_size=5, augment=True, shuffle=True, batch_size=3,
                            seed=seed, **kw)
        return [_as_list(ds), _as_list(ds)]  # two epochs

    e1, e2 = run(4)
    assert [b[0].shape for b in e1] == [(3, 5, 5, 3), (3, 5, 5, 3), (1, 5, 5, 3)]
    for b, s in e1 + e2:
        np.testing.assert_allclose(b, 1.0 - s, atol=1e-6)
    again = run(4)
    for x, y in zip(e1 + e2, again[0] + again[1], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(e1, e2, strict=True))
    other = run(5)[0]
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(e1, other, strict=True))
    cached = run(4, cache=True)
    for x, y in zip(e1 + e2, cached[0] + cached[1], strict=True):
        np.testing.assert_array_equal(x[0], y[0])


def test_shuffle_is_a_permutation_each_epoch(tmp_path, rng):
    ref = _tree_folders(tmp_path, rng, [f"f{i}" for i in range(9)], size=(2, 2))
    ds = paired_dataset(tmp_path, shuffle=True, seed=0)
    keys = {r[1].tobytes(): n for n, r in ref.items()}
    orders = []
    for _ in range(3):
        order = [keys[np.rint(s * 255).astype(np.uint8).tobytes()] for _, s in _as_list(ds)]
        assert sorted(order) == sorted(ref)
        orders.append(order)
    assert orders[0] != orders[1] or orders[1] != orders[2]
    order2 = [keys[np.rint(s * 255).astype(np.uint8).tobytes()]
              for _, s in _as_list(paired_dataset(tmp_path, shuffle=True, seed=0))]
    assert order2 == orders[0]


def test_rotations_kept_out_of_non_square_batches(tmp_path, rng):
    _tree_folders(tmp_path, rng, [f"f{i}" for i in range(6)], size=(8, 12))
    for b, _ in _as_list(paired_dataset(tmp_path, patch_size=(3, 5), augment=True, batch_size=2,
                                        seed=0)):
        assert b.shape[1:] == (3, 5, 3)
    for b, _ in _as_list(paired_dataset(tmp_path, augment=True, batch_size=3, seed=0)):
        assert b.shape[1:] == (8, 12, 3)
    shapes = {b.shape for b, _ in _as_list(paired_dataset(tmp_path, augment=True, seed=3))}
    assert shapes == {(8, 12, 3), (12, 8, 3)}  # unbatched: rotations allowed


def test_cache_to_file(tmp_path, rng):
    _tree_folders(tmp_path / "d", rng, ["a", "b"])
    plain = _as_list(paired_dataset(tmp_path / "d"))
    cached = paired_dataset(tmp_path / "d", cache=tmp_path / "cache" / "c")
    for _ in range(2):
        for x, y in zip(plain, _as_list(cached), strict=True):
            np.testing.assert_array_equal(x[0], y[0])


def test_real_gopro_patches(shared_data):
    root = os.path.join(shared_data, "gopro_patches")
    if not os.path.isdir(root):
        pytest.skip(f"{root} is absent")
    pairs = find_pairs(root)
    assert len(pairs) == 30
    els = _as_list(paired_dataset(root))
    blur = np.stack([e[0] for e in els]).astype(np.float64)
    sharp = np.stack([e[1] for e in els]).astype(np.float64)
    assert blur.shape == (30, 128, 128, 3)
    assert 0 <= blur.min() and blur.max() <= 1
    # Each blurry crop is closest to its own sharp crop: the pairing is right.
    mse = ((blur[:, None] - sharp[None]) ** 2).mean(axis=(2, 3, 4))
    assert (mse.argmin(axis=1) == np.arange(30)).all()
    psnr = -10 * np.log10(np.diag(mse))
    assert 18 < np.median(psnr) < 40
    batches = _as_list(paired_dataset(root, patch_size=64, augment=True, shuffle=True,
                                      batch_size=8, seed=0))
    assert [b[0].shape[0] for b in batches] == [8, 8, 8, 6]
