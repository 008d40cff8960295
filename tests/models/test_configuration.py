"""The registry builds every network by name; each rejects a bad configuration by name."""

import keras
import pytest

import tfdeblur.models

NETWORKS = ("lmfn", "svdn", "svrnn")

# Every part of each network, at widths that build in a moment.
SMALL = {
    "lmfn": dict(width=8, num_blocks=1),
    "svdn": dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2),
    "svrnn": dict(width=4, weight_width=2, num_rnns=2),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_registry_builds_each_network(name):
    assert name in tfdeblur.models.available()
    model = tfdeblur.models.build(name, name=f"small_{name}", **SMALL[name])
    assert isinstance(model, keras.Model) and model.name == f"small_{name}"

# Arguments all three take: the same bad value gets the same answer everywhere.
SHARED = [
    (dict(width=0), "width"),
    (dict(width=8.0), "width"),       # a float, even a whole one, is not an int
    (dict(implementation="cuda"), "implementation"),
    (dict(input_shape=(None, None, None)), "input_shape"),
    (dict(input_shape=(None, 3)), "input_shape"),
]

OWN = {
    "lmfn": [
        (dict(width=2), "width"),
        (dict(num_scales=0), "num_scales"),
        (dict(num_blocks=0), "num_blocks"),
    ],
    "svdn": [
        (dict(width=3.0), "width"),
        (dict(dilation_rates=()), "dilation_rates"),
        (dict(dilation_rates=(1, 0)), "dilation_rates"),
        (dict(convs_per_rate=0), "convs_per_rate"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(offset_hidden=0), "offset_hidden"),
        (dict(head_width=0), "head_width"),
        (dict(identity_init=1), "identity_init"),
        (dict(identity_init="yes"), "identity_init"),
    ],
    "svrnn": [
        (dict(width=2.5), "width"),
        (dict(weight_width=0), "weight_width"),
        (dict(num_rnns=0), "num_rnns"),
        (dict(implementation="fastest"), "implementation"),
    ],
}

CASES = ([(name, config, match) for name in NETWORKS for config, match in SHARED]
         + [(name, config, match) for name, rows in OWN.items() for config, match in rows])


@pytest.mark.parametrize("name,config,match", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items())}"
                              for n, c, _ in CASES])
def test_bad_configuration(name, config, match):
    with pytest.raises(ValueError, match=match):
        tfdeblur.models.build(name, **config)
