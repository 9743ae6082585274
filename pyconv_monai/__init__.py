# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""pyconv-monai: PyConvU-Net and its baselines as MONAI networks, transforms and bundles."""

__version__ = "0.1.0"
