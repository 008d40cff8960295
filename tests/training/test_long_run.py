"""training/long_run.py: a run kept in a git repository, its CPU accounting, commits,
weight average and overrides, on a tiny run in a throwaway repository."""

import copy
import importlib.util
import json
import os
import subprocess
import sys

from tfdeblur.training.averaging import read_average

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _long_run(repo):
    sys.path.insert(0, os.path.join(ROOT, "training"))   # long_run imports training/pilot.py
    try:
        spec = importlib.util.spec_from_file_location(
            "long_run_under_test", os.path.join(ROOT, "training", "long_run.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.join(ROOT, "training"))
    module.REPO = str(repo)
    return module


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


def test_long_run_accounts_commits_averages_and_passes_overrides(tiny_raw, tmp_path,
                                                                 monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "test")
    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(steps=4, steps_per_epoch=2, checkpoint_every=2, keep_checkpoints=2,
                        validate_at_start=False)
    raw["optimizer"]["schedule"] = {"name": "step", "every": 2, "factor": 0.5}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(raw))
    monkeypatch.chdir(ROOT)                  # the training subprocess imports tfdeblur here
    monkeypatch.setenv("PYTHONPATH", ROOT)
    lr = _long_run(repo)
    rc = lr.main(["--name", "tiny", "--config", str(config), "--average-from", "2",
                  "--average-every", "2"])
    assert rc == 0
    run = repo / "training" / "runs" / "tiny"
    cpu = json.loads((run / "cpu_time.json").read_text())
    [entry] = cpu["entries"]
    assert (entry["from_step"], entry["to_step"]) == (0, 4) and entry["cpu_seconds"] > 0
    assert cpu["cpu_hours_total"] == round(entry["cpu_seconds"] / 3600, 3)
    committed = _git(repo, "ls-files").split()
    assert "training/runs/tiny/checkpoints/ckpt-000000004.npz" in committed
    assert "training/runs/tiny/checkpoints/ckpt-000000002.npz" not in committed
    for name in ("cpu_time.json", "config.json", "log.csv", "average.npz", "best.keras"):
        assert f"training/runs/tiny/{name}" in committed, name
    meta, _ = read_average(run / "average.npz")
    assert (meta["from_step"], meta["every"], meta["steps"]) == (2, 2, [2, 4])

    # Resume: more steps and a new schedule for the steps to come, through --override.
    new = {"name": "multistep", "milestones": [2, 5], "factor": 0.5}
    rc = lr.main(["--name", "tiny", "--steps", "6", "--no-commit",
                  "--override", "optimizer.schedule=" + json.dumps(new)])
    assert rc == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["optimizer"]["schedule"] == new and saved["train"]["steps"] == 6
    cpu = json.loads((run / "cpu_time.json").read_text())
    assert [(e["from_step"], e["to_step"]) for e in cpu["entries"]] == [(0, 4), (4, 6)]
    assert "ckpt-000000006.npz" not in _git(repo, "ls-files")      # --no-commit
    assert read_average(run / "average.npz")[0]["steps"] == [2, 4, 6]
