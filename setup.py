"""The optional C speedups (ctrace/elf/_speedups.c); everything else is in pyproject.toml.

``optional=True``: without a compiler or Python headers the build goes on and
ctrace runs its pure-Python twins of the same functions.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ctrace.elf._speedups", ["ctrace/elf/_speedups.c"], optional=True)])
