"""DatasetOptions: the one set of checked options both dataset functions build on."""

import dataclasses
import inspect

import pytest

from tfdeblur.data import DatasetOptions, paired_dataset, synthetic_dataset


def test_arguments_are_checked_and_normalised():
    o = DatasetOptions.from_arguments(patch_size=8, shuffle=True, seed=None, batch_size=2)
    assert o.patch_size == (8, 8) and o.shuffle == 0 and isinstance(o.seed, int)
    assert DatasetOptions.from_arguments(shuffle=False).shuffle is None
    assert DatasetOptions.from_arguments(shuffle=7).shuffle == 7
    assert o.outputs == 2 and DatasetOptions.from_arguments(with_flow=True).outputs == 3
    # 90-degree rotations only where every element keeps its shape.
    assert o.rotate_batchable
    assert not DatasetOptions.from_arguments(patch_size=(8, 6), batch_size=2).rotate_batchable
    assert DatasetOptions.from_arguments(patch_size=(8, 6)).rotate_batchable
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.seed = 3
    for kwargs, message in [(dict(patch_size=0), "patch_size must be an integer >= 1 or a"),
                            (dict(batch_size=0), "batch_size must be an integer >= 1 or None"),
                            (dict(shuffle=-1), "shuffle must be True, False or an integer >= 1"),
                            (dict(seed=1.5), "seed must be an integer or None"),
                            (dict(skip=-1), "skip must be an integer >= 0"),
                            (dict(service="host:1"), "service must be a tf.data service")]:
        with pytest.raises(ValueError, match=message):
            DatasetOptions.from_arguments(**kwargs)


def test_both_functions_take_root_and_every_shared_option():
    shared = {f.name for f in dataclasses.fields(DatasetOptions)}
    for fn in (paired_dataset, synthetic_dataset):
        params = inspect.signature(fn).parameters
        assert list(params)[0] == "root"
        assert shared <= set(params), (fn.__name__, shared - set(params))
