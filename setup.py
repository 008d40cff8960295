"""Installs tfdeblur and compiles its op library against the installed TensorFlow.

All metadata lives in pyproject.toml; this file only hooks the compiled-op build
(custom_ops/build.py) into ``build_py`` so that ``pip install .`` and editable
installs both produce ``tfdeblur/ops/_tfdeblur_ops.so``.
"""

import os
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithOps(build_py):
    def run(self):
        super().run()
        sys.path.insert(0, os.path.join(HERE, "custom_ops"))
        import build as ops_build  # custom_ops/build.py

        if getattr(self, "editable_mode", False):
            out = os.path.join(HERE, "tfdeblur", "ops")
        else:
            out = os.path.join(self.build_lib, "tfdeblur", "ops")
        ops_build.build(out, cuda=os.environ.get("TFDEBLUR_CUDA", "auto"))


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform, not 'any'."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPyWithOps}, distclass=BinaryDistribution)
