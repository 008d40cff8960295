"""Shared test fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips when the folder is absent (a user's checkout)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real-image folder {SHARED_DATA} is absent (only in the dev/CI workspace)")
    return SHARED_DATA


def implementations():
    """The implementations to test: portable always, compiled when it loads."""
    from tfdeblur.ops import compiled_available

    impls = ["portable"]
    if compiled_available():
        impls.append("compiled")
    return impls


# --- The ``slow`` marker, from measured times --------------------------------------
#
# Tests whose run (setup + call + teardown) takes more than 1 s (CPU, with finished
# child processes, or wall time, measured on an idle machine) carry the ``slow``
# marker, so that ``make test-fast`` (``pytest -m "not slow"``) stays a quick
# loop; ``make test`` runs everything. Which tests those are is measured, not guessed:
# ``TFDEBLUR_TEST_TIMES=times.json pytest tests`` records every test's CPU and wall
# seconds, and ``python tests/update_slow_list.py times.json`` rewrites
# ``tests/slow_tests.txt`` from it. An entry is a node id or a whole test file.
# CPU time barely changes when the machine is busy; wall time catches tests that wait on
# other processes (exports verified in a child, multi-worker runs).

_SLOW_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")


def _slow_entries() -> set[str]:
    if not os.path.exists(_SLOW_LIST):
        return set()
    with open(_SLOW_LIST) as f:
        return {line.split("#")[0].strip() for line in f} - {""}


def pytest_collection_modifyitems(config, items):
    slow = _slow_entries()
    for item in items:
        if item.nodeid in slow or item.nodeid.split("::")[0] in slow:
            item.add_marker(pytest.mark.slow)


_TIMES_FILE = os.environ.get("TFDEBLUR_TEST_TIMES")
_times: dict = {}

if _TIMES_FILE:
    import json
    import resource
    import time

    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        cpu, wall = _cpu(), time.perf_counter()
        yield
        _times[item.nodeid] = {"cpu_s": round(_cpu() - cpu, 3),
                               "wall_s": round(time.perf_counter() - wall, 3)}

    def pytest_sessionfinish(session, exitstatus):
        with open(_TIMES_FILE + ".tmp", "w") as f:
            json.dump(_times, f, indent=0, sort_keys=True)
        os.replace(_TIMES_FILE + ".tmp", _TIMES_FILE)
