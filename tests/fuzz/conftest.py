"""Hypothesis profiles of the fuzz suite (tests/fuzz, marker ``fuzz``).

``ci`` (the default): a few dozen examples per test, derandomized so that a
run is reproducible, no example database; the whole suite stays under a
minute. ``thorough``: a thousand random examples per test, failures kept in
``.hypothesis/`` and replayed first next time. Choose with
``HYPOTHESIS_PROFILE=thorough pytest -m fuzz`` (or ``--hypothesis-profile``).
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ModuleNotFoundError:  # the test modules skip themselves (importorskip)
    settings = None

if settings is not None:
    _SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                              database=None, print_blob=True, suppress_health_check=_SLOW_OK)
    settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True,
                              suppress_health_check=_SLOW_OK)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
