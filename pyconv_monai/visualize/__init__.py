# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Pictures to look at what the tools wrote (as ``monai.visualize``).

:mod:`pyconv_monai.visualize.overlay`: a PNG of one axial slice with a mask (and a reference outline) drawn over
it, run as ``python -m pyconv_monai.visualize.overlay``. This package imports no module itself, so that running
that module with ``-m`` does not import it twice.
"""
