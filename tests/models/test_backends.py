"""Keras backends: LMFN builds, trains and runs under JAX; tfdeblur leaves KERAS_BACKEND alone."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: val for k, val in os.environ.items()
            if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    base.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=600, env=base, cwd=ROOT)


@pytest.mark.slow
def test_import_leaves_the_environment_alone():
    # TensorFlow's own C++ library sets TF_CPP_MIN_LOG_LEVEL=1 while it loads,
    # so what tfdeblur's layers and models leave is compared with that.
    result = _run("""
        import os
        keys = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")
        import tfdeblur
        print([os.environ.get(k) for k in keys])
        import keras, tensorflow
        before = [os.environ.get(k) for k in keys]
        import tfdeblur.layers, tfdeblur.models.lmfn, tfdeblur.models.svrnn
        print(before == [os.environ.get(k) for k in keys], keras.backend.backend())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[None, None]", "True tensorflow"]


@pytest.mark.slow
def test_lmfn_under_jax_matches_tensorflow(tmp_path):
    """The builder under JAX makes the network TensorFlow makes: same variables, same output.

    Slow: JAX compiles every weight initializer and the forward pass (about a
    minute on two busy cores).
    """
    pytest.importorskip("jax")
    from tfdeblur.models.lmfn import lmfn

    config = dict(width=8, num_blocks=2)
    tiny = lmfn(**config)
    x = np.random.default_rng(0).random((2, 21, 26, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "weights.npz", *tiny.get_weights())
    want = np.asarray(tiny(x))

    result = _run(f"""
        import json
        import numpy as np
        import keras
        from tfdeblur.models import build
        assert keras.backend.backend() == "jax", keras.backend.backend()
        x = np.load({str(tmp_path / "x.npy")!r})
        model = build("lmfn", **{config!r})
        with np.load({str(tmp_path / "weights.npz")!r}) as w:
            model.set_weights([w[f"arr_{{i}}"] for i in range(len(w.files))])
        y = model(x)
        assert type(y).__module__.startswith("jax"), type(y)
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(y))
        refused = []
        for name in ("svrnn", "svdn"):
            try:
                build(name, width=4)
            except RuntimeError as e:
                refused.append(str(e))
        print(json.dumps({{"paths": [v.path for v in model.variables], "refused": refused}}))
    """, KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["paths"] == [v.path for v in tiny.variables]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=2e-5)
    assert len(report["refused"]) == 2
    for name, message in zip(("svrnn", "svdn"), report["refused"], strict=True):
        assert message.startswith(f"{name} is built on TensorFlow ops")
        assert "Keras runs on 'jax'" in message and "KERAS_BACKEND=tensorflow" in message
