"""Keep freed heap memory in the process, so that buffers of the same size, freed and allocated
again (one chunk of evaluation scores after another), are not page-faulted in anew every time.

glibc's ``malloc`` hands the free top of a heap back to the operating system once more than
``M_TRIM_THRESHOLD`` bytes lie there, and by default that threshold follows the largest block
freed so far (twice the mmap threshold, which itself grows up to 32 MiB). An evaluation frees a
chunk's score matrices (15 MB each on ML-1M) together at the chunk's end, so heaps were trimmed
chunk after chunk and the next chunk's buffers came back as fresh, zeroed pages: 10,000-25,000
minor page faults per ML-1M evaluation pass. Fixing the mmap threshold at glibc's own ceiling
(32 MiB) keeps those pages in the process (``tests/test_allocator.py`` counts the page faults
of a pass). Blocks above the mmap threshold were still mapped and unmapped one by one, each page
faulted in anew at every allocation: HDRM's released-size batches (20,000 triples x 1,100
floats, 88 MB a tensor) spent two thirds of an epoch in the kernel that way. So mapping is
switched off too (``M_MMAP_MAX`` 0): every block comes from the heap and, once freed, stays for
the next one. Trimming is switched off as well (``M_TRIM_THRESHOLD`` -1, mallopt's "never"): a
step whose buffers add up to gigabytes (TV-Diff's bce and nll forms: a dozen |users in the
batch| x |I| tensors) frees far more than the 256 MiB threshold used before at its end, so the
heap's top went back after some steps and the next step faulted it in again
(docs/benchmarks.md, "The heap's top"). The price: a process keeps its heap at its high-water
mark until it ends (it reached that peak anyway; its peak RSS is unchanged or lower), and
memory freed below a block still in use is kept until the heap's top is free.

Opt-in (``$PIPELINE_KEEP_FREED_MEMORY``), and apart from the models' speed switch
(``training.fast``, ``pipeline/models/fast``): that switch is a parameter of how the models
compute; this is a process-wide C-library setting that changes no result.

A no-op where the C library is not glibc (``mallopt`` missing) and where ``GLIBC_TUNABLES``
already sets either threshold (the user's own choice wins).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_NEVER = -1  # M_TRIM_THRESHOLD: the heap's top is never handed back (mallopt(3))

_done = False
OPT_IN = "PIPELINE_KEEP_FREED_MEMORY"  # "1": python -m pipeline and the benchmarks set the thresholds


def keep_freed_memory_if_asked() -> bool:
    """:func:`keep_freed_memory` when ``$PIPELINE_KEEP_FREED_MEMORY`` is "1"; otherwise glibc's own
    behaviour is left alone."""
    return os.environ.get(OPT_IN) == "1" and keep_freed_memory()


def keep_freed_memory() -> bool:
    """Set the two thresholds once per process; whether they were set by this call or before."""
    global _done
    if _done:
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_NEVER))
             and bool(mallopt(M_MMAP_MAX, 0)))
    return _done
