# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The bottom room: safe output names, atomic no-clobber writes, command-line flags, where the shipped bundles are.
Imports nothing of the package."""

from .bundles import bundle_dir, bundles_root, list_bundles
from .files import TEMP_PREFIX, UniqueNames, atomic_write, output_path, preserve_existing, remove_stale_temps, safe_name
from .flags import as_bool
from .lazy import lazy_module

__all__ = [
    "TEMP_PREFIX",
    "UniqueNames",
    "as_bool",
    "atomic_write",
    "bundle_dir",
    "bundles_root",
    "lazy_module",
    "list_bundles",
    "output_path",
    "preserve_existing",
    "remove_stale_temps",
    "safe_name",
]
