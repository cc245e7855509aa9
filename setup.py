"""The optional C extension; everything else about the package is in pyproject.toml.

``indexer._native`` speeds up the indexer's hot loops (:mod:`indexer.native`). It is
optional: where it cannot be compiled (no C compiler or Python headers), the install goes
on without it and RTRM runs the same code paths in pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("indexer._native", sources=["indexer/_native.c"], optional=True),
    ]
)
