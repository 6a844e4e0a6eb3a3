"""Independent simulation runs spread over processes: ``evaluate --jobs`` and ``train rf --jobs``.

Spawned rather than forked, so a worker never inherits a parent's threads or locks (numba's,
a BLAS pool's); each decides with one thread, since numerical libraries would otherwise each
take every core. The results come back in the order of the work, so a table or a training set
is the same for any number of processes.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def one_thread() -> None:
    """Worker initializer: numerical libraries use one thread each. A spawned worker has already
    imported the parent's main module (numpy with it, its thread pool sized) when this runs, so the
    pools loaded so far are limited; the variables cover the libraries loaded later."""
    from threadpoolctl import threadpool_limits

    os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
    threadpool_limits(1)


def exit_with_parent(parent: int) -> None:
    """In a worker: exit once ``parent`` is gone. A spawned worker holds both ends of its work queue,
    so a parent that was killed (SIGKILL, a kill of the command) would leave it running its work out."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker(parent: int) -> None:
    one_thread()
    exit_with_parent(parent)


#: the niceness of a worker that must not slow the process it works for (the most Linux allows)
BACKGROUND_NICE = 19


def background_worker(parent: int) -> None:
    """Initializer of a worker that computes beside a server (``auto``'s choices in the router): one
    thread, the lowest CPU priority, so that on a machine with few cores the requests it serves are
    not slowed while it computes, and gone with ``parent``."""
    os.nice(BACKGROUND_NICE)  # first: the threads it starts inherit it
    _worker(parent)


def run_all(fn: Callable[..., Any], work: Sequence[tuple], jobs: int = 1) -> Iterator[Any]:
    """``fn(*w)`` for every ``w`` of ``work``, yielded in order; in ``min(jobs, len(work))`` processes
    when ``jobs > 1`` (``fn`` and the arguments must then pickle). A failure stops the runs not
    started yet and is raised here."""
    if jobs <= 1 or len(work) <= 1:
        for w in work:
            yield fn(*w)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(min(jobs, len(work)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker, initargs=(os.getpid(),))
    try:
        yield from pool.map(fn, *zip(*work))
    finally:
        pool.shutdown(cancel_futures=True)
