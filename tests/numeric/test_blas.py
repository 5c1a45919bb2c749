"""numeric.blas: one BLAS thread inside the context manager, the previous counts after, shared by threads."""

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_info

from numeric import blas, laplace


def _blas_threads():
    """{library path: its thread count now} for the BLAS libraries numeric.blas controls (those loaded when it
    first needed threadpoolctl; the test session loads every library it uses at collection)."""
    known = {lib["filepath"] for lib in KNOWN}
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in known}


KNOWN = [lib for lib in blas._controller().info() if lib["user_api"] == "blas"]


def _set_counts(limits):
    """Set BLAS thread counts from a short-lived thread: threadpoolctl 3.8 gives control of OpenBLAS's
    process-wide count to the thread that sets it while that thread lives, and this test's main thread
    must not keep it (numeric.blas's keeper thread would be ignored)."""
    worker = threading.Thread(target=lambda: ThreadpoolController().limit(limits=limits))
    worker.start()
    worker.join()


@pytest.fixture
def two_threads():
    """Every BLAS library on two threads for the test (so that one thread is a change), restored after."""
    if not KNOWN:
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    before = _blas_threads()
    _set_counts({path: 2 for path in before})
    try:
        counts = _blas_threads()
        if set(counts.values()) != {2}:
            pytest.skip(f"cannot put the BLAS libraries on two threads here: {counts}")
        yield counts
    finally:
        _set_counts(before)


def test_one_thread_inside_and_the_previous_count_after(two_threads):
    with blas.single_threaded_blas():
        assert set(_blas_threads().values()) == {1}
        with blas.single_threaded_blas():                  # nested in one thread
            assert set(_blas_threads().values()) == {1}
        assert set(_blas_threads().values()) == {1}
    assert _blas_threads() == two_threads


def test_an_exception_inside_restores_the_count(two_threads):
    with pytest.raises(RuntimeError):
        with blas.single_threaded_blas():
            raise RuntimeError("inside")
    assert _blas_threads() == two_threads


def test_the_limit_holds_until_the_last_thread_leaves(two_threads):
    """The diagram's pool: worker A leaves while worker B is still inside; B must keep one thread, and
    when B leaves the count must be the one before A entered (not one, as a per-entry limit leaves it)."""
    a_inside, b_inside, a_left, b_may_leave = (threading.Event() for _ in range(4))
    seen = {}

    def worker_a():
        with blas.single_threaded_blas():
            a_inside.set()
            b_inside.wait(5)
        a_left.set()

    def worker_b():
        a_inside.wait(5)
        with blas.single_threaded_blas():
            b_inside.set()
            a_left.wait(5)
            seen["after A left"] = set(_blas_threads().values())
            b_may_leave.wait(5)

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for thread in threads:
        thread.start()
    a_left.wait(5)
    b_may_leave.set()
    for thread in threads:
        thread.join(5)
    assert seen["after A left"] == {1}
    assert _blas_threads() == two_threads


def test_the_pair_term_runs_on_one_thread_with_unchanged_results(two_threads, monkeypatch):
    """pair_moment's products run inside the limit (spied on), and the value does not depend on it."""
    outside = laplace.pair_moment(0.8, 0.2, 64)
    with blas.single_threaded_blas():
        inside = laplace.pair_moment(0.8, 0.2, 64)
    assert inside == pytest.approx(outside, rel=1e-14, abs=0)
    counts = []

    def spy(*args):
        counts.append(set(_blas_threads().values()))
        return 0.5
    monkeypatch.setattr(laplace, "_pair_small_shared", spy)
    monkeypatch.setattr(laplace, "_pair_large_shared", spy)
    for rho in (0.01, 0.9):                                   # b_c = b sqrt(rho) below and above BC_SWITCH
        laplace.pair_moment(2.0, rho, 64)
    assert counts == [{1}, {1}]
    assert _blas_threads() == two_threads


def test_without_a_blas_library_it_does_nothing(two_threads, monkeypatch):
    """A controller that finds no BLAS (threadpoolctl on a NumPy without one it knows): no error, no change."""
    empty = ThreadpoolController().select(user_api="no such api")
    assert not empty.lib_controllers
    monkeypatch.setattr(blas, "_controller", lambda: empty)
    with blas.single_threaded_blas():
        assert _blas_threads() == two_threads
        product = np.ones((64, 64)) @ np.ones((64, 64))
    assert product[0, 0] == 64.0
    assert _blas_threads() == two_threads
