"""Rewrites tests/slow_tests.txt from measured test times.

    TFDEBLUR_TEST_TIMES=/tmp/times.json pytest tests
    python tests/update_slow_list.py /tmp/times.json [/tmp/times_fast.json] [--threshold 1]

A second file from a run of the fast set (``-m "not slow"``) catches tests that
pay for a module fixture once the test that used to pay for it is deselected.

A test is slow when its setup + call + teardown took more than ``--threshold``
seconds of CPU (this process and its finished children) or of wall time, on an
otherwise idle machine (see tests/conftest.py). The default, 1 s, is what keeps
``make test-fast`` under two minutes; every test over 5 s is far inside it. A
test file all of whose tests are slow is listed as the file, so that tests
added to it later are slow too.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("times", nargs="+", help="JSON files written by TFDEBLUR_TEST_TIMES "
                    "(a full run, and optionally a run of the fast set: the longest time counts)")
    ap.add_argument("--threshold", type=float, default=1.0, help="seconds (default 1)")
    args = ap.parse_args(argv)
    times: dict = {}
    for path in args.times:
        with open(path) as f:
            for node, t in json.load(f).items():
                old = times.get(node, {"cpu_s": 0.0, "wall_s": 0.0})
                times[node] = {k: max(old[k], t[k]) for k in ("cpu_s", "wall_s")}
    by_file = collections.defaultdict(list)
    for node, t in times.items():
        by_file[node.split("::")[0]].append((node, max(t["cpu_s"], t["wall_s"])))
    lines, fast_total, slow_total = [], 0.0, 0.0
    for file in sorted(by_file):
        tests = by_file[file]
        slow = [(n, c) for n, c in tests if c > args.threshold]
        slow_total += sum(c for _, c in slow)
        fast_total += sum(c for _, c in tests if c <= args.threshold)
        if slow and len(slow) == len(tests) and len(tests) > 1:
            lines.append(f"{file}  # all {len(tests)} tests, {sum(c for _, c in slow):.0f} s")
        else:
            lines += [f"{n}  # {c:.1f} s" for n, c in sorted(slow)]
    header = (f"# Tests over {args.threshold:g} s (CPU or wall): marked slow by "
              "tests/conftest.py.\n"
              f"# Written by tests/update_slow_list.py; slow {slow_total / 60:.1f} min, "
              f"the rest {fast_total / 60:.1f} min.\n")
    with open(os.path.join(HERE, "slow_tests.txt"), "w") as f:
        f.write(header + "\n".join(lines) + "\n")
    print(header + f"{len(lines)} entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
