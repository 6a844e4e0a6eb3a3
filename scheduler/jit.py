"""numba where it serves: a plain-Python kernel compiled once (cached on disk where it can be), or None.

The request path's small loops (the forest walk, the candidate rows) are written once as plain
Python over numpy arrays; compiled they cost microseconds where Python or numpy pays tens.
Where numba cannot serve (not installed, JIT disabled, a failed compile) the caller falls back
(the numpy walk, or the same kernel run uncompiled), with the same values.
"""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)


def compiled(kernel: Callable, *probe) -> Callable | None:
    """``kernel`` compiled by numba (``nogil``, cached on disk), or None where numba cannot serve.

    ``probe``: arguments of one call, made here so that a failure (a type the kernel cannot
    take, a cache with nowhere to live) is seen now rather than on a request. A cache that
    cannot be written (a read-only install and home) is worth one retry compiled per process.
    """
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    if numba.config.DISABLE_JIT:  # the loops would run as plain Python: let the caller choose its fallback
        return None
    for cached in (True, False):
        try:
            fn = numba.njit(cache=cached, nogil=True)(kernel)
            fn(*probe)
            return fn
        except Exception as e:  # noqa: BLE001 - any numba failure leaves the fallback serving
            if not (cached and "cache" in str(e)):
                log.warning("numba could not compile %s (%s): its uncompiled fallback serves, slower",
                            getattr(kernel, "__qualname__", kernel), e)
                return None
    return None
