"""One BLAS thread for the finite-T pair term's matrix products, through threadpoolctl.

Why. The pair term Yp (paper eq. 22, :func:`numeric.laplace.pair_moment`) is a
few mid-sized matrix products per call (about 60 x 400 x 900). On such sizes a
multi-threaded BLAS mostly waits for its threads: measured on a busy 2-core
host, one such product took 9 ms on two OpenBLAS threads and 1.3 ms on one,
and a Yp table 18 s instead of 2.7 s. The parallelism that pays is one level
up: :func:`numeric.trainability_diagram` runs chunks of its grid in a
``ThreadPoolExecutor`` with one worker per core, and a worker computes pair
moments directly for points beyond the Yp table (b > ``B_PAIR_MAX``). Each
worker's products must then run on one BLAS thread, or the pool and BLAS
oversubscribe the cores.

What :func:`single_threaded_blas` guarantees: while a thread is inside it,
that thread's BLAS calls run on one thread, for every BLAS library
threadpoolctl found when this module first needed it; when no thread is
inside any more, every count is back to what it was before the first entry.
Where threadpoolctl finds no BLAS library, nothing changes. Results do not
depend on the thread count, only the time does.

How, for the two kinds of thread count threadpoolctl sets (it has no
controller for Accelerate, so macOS's vecLib keeps its own threads):

- Per thread (OpenMP-backed counts, MKL's local count in threadpoolctl 3.8):
  each entering thread limits its own count in an ordinary threadpoolctl
  ``with`` block, restored when it leaves.
- Per process (OpenBLAS on its own pthreads, as in NumPy's and SciPy's
  wheels; BLIS): one count for all threads, so one limit is shared. Entries
  are counted: the first sets it, the last exit lifts it and restores the
  counts in force at the first entry. So a pool worker leaving never lifts the
  limit under another worker still inside, and no order of exits leaves the
  process on one thread afterwards (both happen with one ``threadpool_limits``
  per worker). Meanwhile every thread of the process, inside or not, runs
  such a library on one thread. threadpoolctl 3.8 lets one live thread at a
  time change such a count and ignores the others, while the first entrant
  and the last to leave are different threads; so a short-lived keeper thread
  holds the shared limit as one threadpoolctl ``with`` block and releases
  threadpoolctl's control when it ends. Under threadpoolctl 3.8 a limit that
  a caller holds in another live thread (``with threadpool_limits(...)``)
  takes precedence over the shared one.

A per-thread limit entered while the shared one is in force records one
thread as the per-process counts' previous value, so restoring it changes
nothing: the two mechanisms compose for every library and threadpoolctl version.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache


@lru_cache(maxsize=1)
def _controller():
    """The threadpoolctl controller of the libraries loaded now (built once: a scan costs ~5 ms,
    a limit with the built controller ~50 us). Imported here so that ``import numeric`` stays light."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


class _SharedLimit:
    """One BLAS thread for the per-process counts, held by a keeper thread from the first acquire
    to the last release."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._keeper = None
        self._done = None

    def acquire(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._start_keeper()
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._done.set()
                self._keeper.join()            # the counts are restored when the last holder returns

    def _start_keeper(self) -> None:
        """Start the keeper and wait until the limit is in force (or re-raise why it could not be set)."""
        in_force, done, failure = threading.Event(), threading.Event(), []

        def keep():
            try:
                with _controller().limit(limits=1, user_api="blas"):
                    in_force.set()
                    done.wait()
            except BaseException as exc:       # handed to the thread that asked for the limit
                failure.append(exc)
            finally:
                in_force.set()

        keeper = threading.Thread(target=keep, name="numeric.blas keeper", daemon=True)
        keeper.start()
        in_force.wait()
        if failure:
            keeper.join()
            raise failure[0]
        self._keeper, self._done = keeper, done


_ONE_THREAD = _SharedLimit()


@contextmanager
def single_threaded_blas():
    """Run the enclosed code with every BLAS library on one thread (see the module doc for the scope)."""
    _ONE_THREAD.acquire()
    try:
        with _controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        _ONE_THREAD.release()
