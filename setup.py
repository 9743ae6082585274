# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What setup.cfg cannot say: the repository's ``bundles/`` ships inside the package as ``pyconv_monai/bundles``.

setup.cfg holds the metadata and dependencies. The packages are listed here because ``packages = find:`` cannot add a
folder from outside the package: ``package_dir`` maps ``pyconv_monai.bundles`` onto ``bundles/``, and its package data
are what a bundle needs to run (configs, docs, LICENSE, ``models/model.pt``, the int8 record ``models/model_int8.json``)
and the metadata schemas, not the ``eval/`` outputs or checkpoints of runs made in the checkout.
``pyconv_monai.utils.bundles_root`` finds them.
"""

from setuptools import find_packages, setup

BUNDLE_FILES = [
    "*/LICENSE",
    "*/configs/*.json",
    "*/configs/*.conf",
    "*/docs/*.md",
    "*/docs/*.png",
    "*/docs/*.txt",
    "*/models/README.md",
    "*/models/model.pt",
    "*/models/model_int8.json",
    "schemas/*.json",
]

setup(
    packages=find_packages(include=["pyconv_monai", "pyconv_monai.*"]) + ["pyconv_monai.bundles"],
    package_dir={"pyconv_monai.bundles": "bundles"},
    package_data={"pyconv_monai.bundles": BUNDLE_FILES},
)
