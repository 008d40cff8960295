"""repeat / skip: the endless, resumable streams that training uses."""

import os

import numpy as np
import pytest

import tfdeblur.data.paired as paired_module
import tfdeblur.data.synthetic as synthetic_module
from tfdeblur.data import paired_dataset, synthetic_dataset, write_image


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    rng = np.random.default_rng(2)
    folder = tmp_path_factory.mktemp("skip_photos")
    for i in range(3):
        write_image(str(folder / f"p{i}.png"), rng.random((20, 22, 3)).astype(np.float32))
    return str(folder)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("skip_pairs")
    for d in ("blur", "sharp"):
        os.makedirs(root / d)
    for i in range(3):
        for d in ("blur", "sharp"):
            write_image(str(root / d / f"{i}.png"), rng.random((18, 18, 3)).astype(np.float32))
    return str(root)


def _stream(ds, n):
    return [tuple(np.asarray(t) for t in el) for el in ds.take(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def _counting(monkeypatch, module):
    calls = []
    real = module.read_image

    def counted(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, "read_image", counted)
    return calls


@pytest.mark.parametrize("augment", [True, False])
def test_synthetic_skip_continues_the_same_endless_stream(photos, monkeypatch, augment):
    kw = dict(patch_size=8, augment=augment, shuffle=True, seed=4, batch_size=2,
              config=synthetic_module.BlurConfig(max_length=2.0, foreground_max_length=2.0,
                                                 p_foreground=0.0),
              num_parallel_calls=1)
    # 3 photos in batches of 2: the batches run across passes, each pass reshuffled.
    full = _stream(synthetic_dataset(photos, repeat=True, **kw), 7)
    resumed = _stream(synthetic_dataset(photos, repeat=True, skip=8, **kw), 3)
    _assert_same(full[4:], resumed)
    # Skipped elements are never read or blurred (reading them would take 3000 reads;
    # prefetching reads a few elements beyond the one batch taken).
    calls = _counting(monkeypatch, synthetic_module)
    _stream(synthetic_dataset(photos, repeat=True, skip=3000, **kw), 1)
    assert 2 <= len(calls) < 50
    if augment:
        # Each pass gets new blur: batch 0 (pass 1) differs from batch 3 (passes 2-3).
        assert not np.array_equal(full[0][0], full[3][0])


def test_paired_skip_continues_the_same_endless_stream(pairs, monkeypatch):
    kw = dict(patch_size=8, augment=True, shuffle=True, seed=1, batch_size=2,
              num_parallel_calls=1)
    full = _stream(paired_dataset(pairs, repeat=True, **kw), 6)
    resumed = _stream(paired_dataset(pairs, repeat=True, skip=6, **kw), 3)
    _assert_same(full[3:], resumed)
    calls = _counting(monkeypatch, paired_module)
    _stream(paired_dataset(pairs, repeat=True, skip=3000, **kw), 1)
    assert 4 <= len(calls) < 100


def test_without_repeat_a_dataset_is_one_pass(pairs):
    assert len(_stream(paired_dataset(pairs), 10)) == 3
    assert len(_stream(paired_dataset(pairs, skip=2), 10)) == 1


@pytest.mark.parametrize("skip", [-1, 1.5, True, "2"])
def test_bad_skip(photos, pairs, skip):
    with pytest.raises(ValueError, match="skip must be an integer >= 0"):
        synthetic_dataset(photos, skip=skip)
    with pytest.raises(ValueError, match="skip must be an integer >= 0"):
        paired_dataset(pairs, skip=skip)
