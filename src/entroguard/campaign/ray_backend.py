"""Campaign tasks on Ray (``entroguard campaign --backend ray``), for grids that outgrow one
machine.

Each Ray worker is an actor holding one :class:`~entroguard.campaign.measurer.Measurer`, so a
model is loaded once per worker, not once per task; the driver (this process) hands out tasks,
keeps at most two per worker in flight, and stays the only writer of ``results.sqlite``: a
condition is committed the moment its task returns, so a killed driver resumes as a local run
does. A worker that dies (killed, out of memory) is restarted by Ray and its task retried;
a task is never recorded twice, because the driver records each result once, when it arrives.

Without ``address`` a local Ray instance sized to this machine is started and stopped with the
campaign; with one (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the
others) the campaign joins that cluster. Ray is an optional extra (``pip install
entroguard[ray]``); the local backend needs none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from entroguard.campaign.measurer import ConditionResult, Measurer, Task
from entroguard.errors import EntroguardError

#: Restarts of a dead worker, and retries of the task it was running, before the run stops.
WORKER_RESTARTS = 3


class RayBackendError(EntroguardError, RuntimeError):
    """Ray is missing, cannot start, or lost a task beyond its retries."""


class _MeasurerActor:
    """A Ray actor: one :class:`Measurer`, its models loaded once and kept."""

    def __init__(self, measurer_args: tuple, threads: int) -> None:
        import torch

        from entroguard.allocator import keep_freed_memory

        keep_freed_memory()
        torch.set_num_threads(threads)
        self.measurer = Measurer(*measurer_args)

    def run(self, task: Task) -> list[ConditionResult]:
        return self.measurer.run(task)

    def pid(self) -> int:
        return os.getpid()


def _ray():
    try:
        import ray
    except ImportError:
        raise RayBackendError(
            "--backend ray needs Ray: pip install 'entroguard[ray]' (or scripts/install.sh "
            "--dev), or run with the default local backend"
        ) from None
    return ray


def run_on_ray(
    tasks: Iterator[Task],
    measurer: Measurer,
    workers: int,
    record: Callable[[list[ConditionResult]], None],
    *,
    address: str | None = None,
    gpus_per_task: float = 0.0,
) -> None:
    """Measure ``tasks`` on ``workers`` Ray actors; ``record`` runs here, as results arrive.

    Each actor runs torch on ``cores // workers`` threads of its node (as a local worker
    does), so results equal the local backend's with the same number of workers.
    """
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else os.cpu_count(),
                     include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise RayBackendError(f"cannot start or join Ray ({address or 'local'}): {exc}") \
                from None  # fmt: skip
    try:
        # the actors' constructor arguments stay referenced here for the whole run, so a
        # restarted actor finds them in the object store
        args = ray.put(measurer.args)
        _drive(ray, tasks, _actors(ray, args, workers, gpus_per_task), record)
    finally:
        if started:
            ray.shutdown()


def _actors(ray, args, workers: int, gpus_per_task: float) -> list:
    """``workers`` actors built from the :class:`Measurer` arguments ``args`` (an object ref)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_restarts=WORKER_RESTARTS,
                        max_task_retries=WORKER_RESTARTS)(_MeasurerActor)  # fmt: skip
    return [remote.remote(args, threads) for _ in range(workers)]


def _drive(ray, tasks: Iterator[Task], actors: list, record) -> None:
    """Keep every actor busy with up to two tasks; record results in order of arrival."""
    in_flight: dict = {}  # object ref -> actor index
    load = [0] * len(actors)
    for task in tasks:
        while len(in_flight) >= 2 * len(actors):
            _collect(ray, in_flight, load, record)
        i = load.index(min(load))
        in_flight[actors[i].run.remote(task)] = i
        load[i] += 1
    while in_flight:
        _collect(ray, in_flight, load, record)


def _collect(ray, in_flight: dict, load: list, record) -> None:
    (ref,), _ = ray.wait(list(in_flight), num_returns=1)
    load[in_flight.pop(ref)] -= 1
    try:
        results = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the task itself raised: the user's error
        if isinstance(exc.cause, EntroguardError | ValueError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:  # a worker or object lost beyond the retries
        raise RayBackendError(
            f"a Ray task failed after {WORKER_RESTARTS} retries; finished conditions are saved: "
            f"rerun the same command to resume ({type(exc).__name__}: {exc})"
        ) from None
    record(results)
