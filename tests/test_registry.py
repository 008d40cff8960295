"""The one registry: lookups, errors, laziness, and that the config checker and trainer read it."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from tests.training.conftest import pair_dir, photo_dir, tiny_raw  # noqa: F401 - fixtures
from tfdeblur import registry
from tfdeblur.registry import Registry, RegistryError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_CONFIG = os.path.join(ROOT, "training", "runs", "lmfn_bundled", "config.json")


def test_register_get_names_and_errors():
    r = Registry("widget")
    assert r.names() == []

    @r.register("b")
    def b():
        return "b"

    r.register("a", "os.path:join", defaults={"x": 1})
    assert r.names() == ["a", "b"] and "a" in r and "c" not in r
    assert r.get("b") is b and r.get("a") is os.path.join  # a lazy entry imported on get
    assert dict(r.defaults("a")) == {"x": 1} and dict(r.defaults("b")) == {}
    with pytest.raises(TypeError):
        r.defaults("a")["x"] = 2  # read-only
    with pytest.raises(RegistryError, match=r"unknown widget 'c'; known widget names: "
                                            r"\['a', 'b'\]"):
        r.get("c")
    with pytest.raises(RegistryError, match="widget 'a' is already registered"):
        r.register("a", len)
    with pytest.raises(RegistryError, match="name must be a non-empty string"):
        r.register("", len)
    assert issubclass(RegistryError, ValueError)


def test_every_kind_is_registered():
    assert registry.MODELS.names() == ["lmfn", "svdn", "svrnn"]
    assert registry.LOSSES.names() == ["charbonnier", "pixel", "svdn"]
    assert registry.METRICS.names() == ["psnr", "ssim"]
    assert registry.DATASETS.names() == ["paired", "synthetic"]
    assert registry.SCHEDULES.names() == ["constant", "multistep", "polynomial", "step"]
    assert registry.OPTIMIZERS.names() == ["adam"]
    from tfdeblur import data, losses, metrics, models
    from tfdeblur.training import optimizers

    assert registry.LOSSES.get("svdn") is losses.SVDNLoss
    assert registry.METRICS.get("ssim") is metrics.SSIM
    assert registry.DATASETS.get("paired") is data.paired_dataset
    assert registry.SCHEDULES.get("step") is optimizers.step_schedule
    assert registry.SCHEDULES.get("multistep") is optimizers.multistep_schedule
    assert registry.MODELS.get("lmfn") is models.lmfn.lmfn
    assert registry.registry("loss") is registry.LOSSES
    with pytest.raises(RegistryError, match="known: "):
        registry.registry("gizmo")
    with pytest.raises(ValueError, match=r"unknown model 'unet'; known model names: "
                                         r"\['lmfn', 'svdn', 'svrnn'\]"):
        models.build("unet")


def test_listing_names_imports_no_tensorflow():
    code = ("import sys\nfrom tfdeblur import registry\n"
            "for r in (registry.LOSSES, registry.METRICS, registry.DATASETS, "
            "registry.SCHEDULES, registry.OPTIMIZERS):\n    r.names()\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _name_tables(path: str) -> list[str]:
    """Dict literals of >= 2 string keys whose values are all names or attributes (classes,
    functions): a name -> object table."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and len(node.keys) >= 2 and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys) \
                and all(isinstance(v, (ast.Name, ast.Attribute)) for v in node.values):
            found.append(f"{path}:{node.lineno}")
    return found


def test_no_second_name_table():
    files = glob.glob(os.path.join(ROOT, "tfdeblur", "training", "*.py")) + [
        os.path.join(ROOT, "tfdeblur", "models", "__init__.py"),
        os.path.join(ROOT, "tfdeblur", "data", "__init__.py")]
    tables = [t for f in files for t in _name_tables(f)]
    assert tables == []
    # The detector finds the kind of table it is meant to find.
    probe = os.path.join(os.path.dirname(__file__), "_probe_table.py")
    try:
        with open(probe, "w") as f:
            f.write("import os\nT = {'a': os.path, 'b': os.sep}\n")
        assert _name_tables(probe) == [f"{probe}:2"]
    finally:
        os.unlink(probe)


@pytest.fixture
def extra_loss(monkeypatch):
    """A loss registered for one test (removed afterwards)."""
    import keras

    class HalfL1(keras.losses.Loss):
        def __init__(self, scale: float = 0.5, name: str = "half_l1", reduction=None, dtype=None):
            super().__init__(name=name)
            self.scale = scale

        def call(self, y_true, y_pred):
            return self.scale * keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=(1, 2, 3))

    monkeypatch.setitem(registry.LOSSES._entries, "half_l1", HalfL1)
    monkeypatch.setitem(registry.LOSSES._defaults, "half_l1", {})
    return HalfL1


def test_config_checker_and_trainer_read_the_registry(tiny_raw, extra_loss):  # noqa: F811
    from tfdeblur.training import ConfigError, compile_arguments, resolve_config

    raw = {**tiny_raw, "loss": {"name": "half_l1", "scale": 0.25}}
    cfg = resolve_config(raw)
    assert cfg["loss"] == {"name": "half_l1", "scale": 0.25}
    loss = compile_arguments(cfg)["loss"]
    assert isinstance(loss, extra_loss) and loss.scale == 0.25
    with pytest.raises(ConfigError, match="loss.bogus"):
        resolve_config({**tiny_raw, "loss": {"name": "half_l1", "bogus": 1}})
    with pytest.raises(ConfigError, match=r"must be one of \['charbonnier', 'half_l1', "):
        resolve_config({**tiny_raw, "loss": {"name": "l7"}})


@pytest.mark.skipif(not os.path.isfile(RUN_CONFIG), reason="no committed run")
def test_committed_run_config_still_resolves_unchanged():
    """The long run resumes: its saved config passes the checker with no non-resumable change."""
    from tfdeblur.training.config import (
        differences,
        is_resumable_change,
        read_config_file,
        resolve_config,
    )

    saved = read_config_file(RUN_CONFIG)  # read-only
    for section in [saved["data"]["train"], *saved["data"]["validation"].values()]:
        for key in ("root", "kernels"):
            if key in section and not os.path.exists(section[key]):
                pytest.skip(f"{section[key]} is not on this machine")
    resolved = resolve_config(saved)
    changed = [d for d in differences(saved, resolved) if not is_resumable_change(d[0])]
    assert changed == []
    # A train key added since, at another value than its default, is a change.
    assert resolved["train"]["mixed_precision"] == "float32"
    other = {**resolved, "train": {**resolved["train"], "mixed_precision": "mixed_bfloat16"}}
    assert [d[0] for d in differences(saved, other)
            if not is_resumable_change(d[0])] == ["train.mixed_precision"]
