# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What machine a measurement ran on: the CPU's model name and vector units, the cores this process may use and the
load average."""

from __future__ import annotations

import contextlib
import os
import platform

__all__ = ["cpu_cores", "cpu_features", "cpu_model", "load_average"]

# the x86 flags that decide which int8/bf16 kernels the CPU runtimes use (VNNI: int8 dot products without the int16
# saturation of AVX2's vpmaddubsw; BF16/AMX: bfloat16 convolutions)
_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_model() -> str:
    """The CPU's model name, e.g. ``"AMD EPYC 7B13"``: from ``/proc/cpuinfo`` on Linux, else from ``platform``."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_features() -> str:
    """The CPU's vector units among AVX2, AVX-512, VNNI, BF16 and AMX, e.g. ``"avx2 avx512f avx512_vnni"`` (from
    ``/proc/cpuinfo``; ``"unknown"`` elsewhere, ``"none of ..."`` where it has none of them)."""
    # imported here, not at the top: it imports torch, which this module's light users (table2_cell) do not need
    from pyconv_monai.runtime.backends import cpu_flags

    flags = cpu_flags()
    if flags is None:
        return "unknown"
    return " ".join(x for x in _FEATURES if x in flags) or f"none of {' '.join(_FEATURES)}"


def cpu_cores() -> int:
    """The number of CPU cores this process may run on (its affinity where the OS tells, else all cores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    """The load average over 1, 5 and 15 minutes, ``"0.52 / 0.61 / 0.70"`` (``"n/a"`` where the OS has none)."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
