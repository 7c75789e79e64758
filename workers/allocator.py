"""glibc malloc settings for CPU training processes.

A CPU training step allocates and frees many tensors of a few hundred KB to tens of MB. With glibc's defaults,
blocks above the (dynamic) mmap threshold are mapped fresh and unmapped on free, and freed heap tops are
returned to the kernel, so the next step touches new pages again: over 10,000 page faults per step on the demo
Faster R-CNN pair (batch 8), none once those blocks stay in the heap, and the step ~6 % faster
(``benchmarks/allocator.py`` measures both ways). This is the same kind of setting as the jemalloc/tcmalloc preload that PyTorch's CPU
tuning guides recommend, done without an extra library and from inside the process (``mallopt``).

``tune_cpu_allocator()`` is called where trial workers and full training start; it does nothing off glibc,
when the user set glibc's malloc environment variables or tunables themselves, or with
``DETKDS_MALLOC_TUNING=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# blocks up to 32 MiB (the largest threshold glibc accepts on 64-bit) come from the heap
MMAP_THRESHOLD = 32 << 20
# freed memory at the heap top is kept up to 1 GiB instead of being returned after every step
TRIM_THRESHOLD = 1 << 30
ENV_SWITCH = 'DETKDS_MALLOC_TUNING'
_USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_', 'GLIBC_TUNABLES')

_applied = None


def tune_cpu_allocator() -> bool:
    """Keep large freed blocks in the process heap (see the module doc). Returns whether the settings are in
    effect; idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_SWITCH, '1') == '0' or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
