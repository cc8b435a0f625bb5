"""Probes trained side by side: one worker process per core, one torch thread each.

A probe's small matrix products barely use a second thread (two threads train one CNN probe
about 5 % faster than one), so two probes at once on two cores finish about twice as fast as
one after the other. Every probe trains on exactly one thread wherever it runs, in a worker or
in this process, so its numbers do not depend on how many workers there are. Features reach
the workers through shared memory (``torch.multiprocessing``), not copies.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

import torch
import torch.multiprocessing  # noqa: F401  (tensors cross processes through shared memory)
from torch import Tensor

from entroguard.allocator import keep_freed_memory
from entroguard.privacy.probes import ProbeResult, train_probe
from entroguard.threads import torch_threads

Pair = tuple[Tensor, Tensor]
IN_PROCESS_ELEMENTS = 4_000_000
"""Probes on smaller training features (e.g. 4,000 images of 1,024 values) train in this
process: starting a worker costs more than they take."""


def default_probe_workers() -> int:
    """One worker per CPU core, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


def _init_worker() -> None:
    keep_freed_memory()
    torch.set_num_threads(1)


def _train(kind: str, train: Pair, val: Pair, test: Pair, seed: int) -> ProbeResult:
    with torch_threads(1):
        return train_probe(kind, train, val, test, seed=seed)


class ProbePool:
    """Train probes in ``workers`` processes (here, one at a time, when ``workers`` <= 1)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_probe_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, kind: str, train: Pair, val: Pair, test: Pair, seed: int) -> Future:
        """A future of :func:`train_probe`'s result for these inputs (trained here at once
        when the pool has one worker or the probe is too small to pay for starting one)."""
        if self.workers <= 1 or train[0].numel() < IN_PROCESS_ELEMENTS:
            done: Future = Future()
            done.set_result(_train(kind, train, val, test, seed))
            return done
        for t in (*train, *val, *test):
            # moved to shared memory here, not by the queue's feeder thread, which would swap
            # the storage under this thread's feet while it reads the same features
            t.share_memory_()
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, spawn, _init_worker)
        return self._pool.submit(_train, kind, train, val, test, seed)

    def close(self) -> None:
        """Stop the workers (a closed pool starts new ones when used again)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
