"""glibc malloc tuned for tensors: freed memory is kept for the next step, not returned.

PyTorch allocates CPU tensors with the C library's malloc and has no caching allocator on
CPU. glibc hands large blocks back to the operating system when they are freed (an
`munmap`, or a trim of the heap's top), so the next step's tensors of the same size fault
their pages in again, one 4 KB page at a time: in Adadelta's temporaries and the forward
pass's activations, on every step (docs/speed.md has the measured cost). Whether it happens
depends on where earlier allocations left the heap's top, so it also makes timings swing
between runs of the same code.

Keeping freed memory (no `mmap` per large block, no trim below 1 GiB of free top) is what
PyTorch's CUDA caching allocator, jemalloc and tcmalloc do. The cost is that a process's
resident memory does not shrink after a peak until glibc's `malloc_trim` gives it back.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_UP_TO = 1 << 30  # bytes of free heap top kept before any is returned


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library it runs on
    except OSError:
        return None
    # musl and others lack these or ignore them; only glibc is tuned.
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed blocks; False where unsupported."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO))
