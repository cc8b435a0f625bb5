"""Entropy coding beside the device: one background thread codes batch k while the device
attacks or analyses batch k + 1.

The rANS coder runs on the CPU one image at a time, while the attacks and the networks run on
the device. On a GPU the two can overlap: the measurer hands each batch's coding (encode,
decode, classify: :func:`entroguard.measure.code_batch`) to the lane and goes on with the next
batch. Jobs run one at a time, in the order they were given, with the submitting thread's
torch thread count, so the results are the same as coding inline. On a CPU the device and
the coder share the same cores, so the lane is off by default there and codes inline.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def overlap_by_default(device: str) -> bool:
    """Whether coding overlaps the device's work unless told otherwise: on CUDA devices."""
    return torch.device(device).type == "cuda"


class CodingLane:
    """Runs submitted jobs on one background thread (``enabled``) or inline.

    Example::

        >>> lane = CodingLane(enabled=True)
        >>> pending = [lane.submit(code_batch, model, analyze_batch(model, x), y) for x, y in b]
        >>> parts = [p.result() for p in pending]  # in order; re-raises a job's error
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, job: Callable[..., T], *args: object) -> Future[T]:
        """Start ``job(*args)`` on the lane's thread; when the lane is off, run it now (its
        error, if any, is raised here) and return its finished future."""
        if self.enabled:
            return self._thread().submit(job, *args)
        done: Future[T] = Future()
        done.set_result(job(*args))
        return done

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            threads = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="entroguard-coding",
                initializer=torch.set_num_threads,
                initargs=(threads,),
            )
        return self._pool

    def close(self) -> None:
        """Wait for the jobs in flight and stop the thread (a later submit starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def wait_all(pending: list[Future]) -> None:
    """Wait until every job has finished, failed or not (so that no job outlives the state it
    was given); raises nothing."""
    for future in pending:
        future.exception()


def raise_failed(pending: list[Future]) -> None:
    """Raise the error of the first job that has already failed, if any (so that a failed
    coding stops a condition at once, not after all its batches)."""
    for future in pending:
        if future.done() and future.exception() is not None:
            wait_all(pending)
            raise future.exception()  # type: ignore[misc]


def results(pending: list[Future[T]]) -> list[T]:
    """Every job's result, in order; when one failed, the others are waited for first, then
    the first error is raised."""
    wait_all(pending)
    return [future.result() for future in pending]
