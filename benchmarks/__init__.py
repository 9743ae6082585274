# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The benchmark scripts (``python benchmarks/x.py``, or ``python -m benchmarks.x`` from the checkout).

A script run by path has ``benchmarks/`` (not the checkout) on ``sys.path``; each script that imports its sibling
modules (``benchmarks.common``, ``benchmarks.machine``, ...) first puts the checkout on ``sys.path``, which also
finds this checkout's ``pyconv_monai`` where the package is not installed (the GPU device).
"""
