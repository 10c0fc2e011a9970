"""Keep freed host memory in the process while training on CPU (glibc malloc settings).

Why: glibc serves every allocation above its mmap threshold (128 KiB, raised on its own up to
32 MiB) with a fresh ``mmap`` and hands it back with ``munmap`` when it is freed. A CPU training step
allocates and frees tensors of tens to hundreds of MB every step (LM-head logits and their gradient,
vocabulary-sized weight casts and gradients), so every one of them is page-faulted in again, 4 KiB at
a time, and zero-filled by the kernel before torch writes it. Measured on the bart-base shape at batch
256 (2 threads, ``benchmarks/train_throughput.py --ab``), that is over a third of the step.

``retain`` serves those allocations from the heap (``M_MMAP_MAX=0``) and keeps freed heap in the
process (a high ``M_TRIM_THRESHOLD``), so the next step reuses warm pages: what jemalloc or tcmalloc
under ``LD_PRELOAD`` (PyTorch's CPU performance guide) give, without a preload. The settings are put
back and the retained heap is released (``malloc_trim``) when training ends, so a notebook that
trains and goes on does not keep the peak. Elsewhere (GPU training, whose tensors live in the
CUDA caching allocator, non-glibc systems) it does nothing.

The cost is memory: the heap keeps the high-water mark of the largest batch seen so far (plus
fragmentation: glibc cannot always fit a new 64-byte-aligned block into the hole an equal one left),
and grows when a longer batch arrives. Measured on the bart-base shape at batch 256: page faults per
step fall to ~0 after the first few steps and RSS levels off (6.8 GB after 40 steps of mixed lengths).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import platform
from typing import Iterator, Literal

log = logging.getLogger(__name__)

CpuAllocator = Literal["retain", "system"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
#: glibc's own defaults and the ceiling of its dynamic mmap threshold (64-bit): what is restored
_DEFAULT_MMAP_MAX = 65536
_DYNAMIC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_KEEP_FREED = 2**31 - 1  # trim threshold (mallopt takes an int): keep up to 2 GiB of freed heap top


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt(libc: ctypes.CDLL, param: int, value: int) -> bool:
    return bool(libc.mallopt(param, value))


@contextlib.contextmanager
def cpu_heap(mode: CpuAllocator, device_type: str) -> Iterator[bool]:
    """Within the block, large host allocations reuse freed heap instead of fresh ``mmap`` pages
    (``mode="retain"``, CPU training on glibc). Yields whether the settings were applied.

    On exit glibc's mmap use is restored, with the threshold at the ceiling its dynamic rule reaches
    in a process that frees large blocks (32 MiB; setting it by hand turns the dynamic rule off), and
    the retained heap is returned to the system.
    """
    libc = _glibc() if mode == "retain" and device_type == "cpu" else None
    applied = bool(libc) and _mallopt(libc, _M_MMAP_MAX, 0) and _mallopt(libc, _M_TRIM_THRESHOLD, _KEEP_FREED)
    if mode == "retain" and device_type == "cpu" and not applied:
        log.debug("spellfix: train.cpu_allocator=retain has no effect here (needs glibc malloc)")
    try:
        yield applied
    finally:
        if applied:
            _mallopt(libc, _M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            _mallopt(libc, _M_MMAP_THRESHOLD, _DYNAMIC_MMAP_THRESHOLD_MAX)
            _mallopt(libc, _M_TRIM_THRESHOLD, 2 * _DYNAMIC_MMAP_THRESHOLD_MAX)
            libc.malloc_trim(0)
