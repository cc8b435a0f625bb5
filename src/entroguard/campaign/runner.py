"""Run a campaign: every (threat, defence, model) condition, measured through real bytes.

Model-independent threats (corruptions) are computed once, in this process, and shared by
every model; attacks are computed per model. Tasks (one threat on one model, behind each of
its defences) run here or in ``workers`` processes; either way each finished condition is
committed to SQLite by this process at once, so a killed campaign resumes where it stopped
when run again with the same command.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from entroguard.allocator import keep_freed_memory
from entroguard.campaign.config import CampaignConfig, ConfigError
from entroguard.campaign.export import write_csv, write_leak_csv
from entroguard.campaign.leak_runner import plan_leak, run_leak_units
from entroguard.campaign.measurer import ConditionResult, Measurer, Task
from entroguard.campaign.models import ModelRef, resolve_models
from entroguard.campaign.out_lock import OutDirLock
from entroguard.campaign.progress import CampaignProgress
from entroguard.campaign.provenance import check_resume, config_record, identity, provenance
from entroguard.campaign.store import ConditionId, ResultStore
from entroguard.data import load_dataset
from entroguard.device import resolve_device
from entroguard.errors import EntroguardError


class WorkerCrashError(EntroguardError, RuntimeError):
    """A worker process died (killed, out of memory, or a crash in native code)."""


def default_workers(n_models: int) -> int:
    """Worker processes for a campaign: one per CPU core, at most one per model, at most 8."""
    return max(1, min(os.cpu_count() or 1, n_models, 8))


def plan_tasks(
    config: CampaignConfig, refs: list[ModelRef], n_total: int, done: set[str]
) -> list[Task]:
    """Every (threat, model) pair with a defence still to measure, threat-major (so shared
    threatened images are computed once and dropped), clean first."""
    tasks = []
    for planned in config.conditions():
        selected = [r for r in refs if planned.group.selects(r.name)]
        if not selected:
            raise ConfigError(
                f"{planned.group.key}.models: no model of the campaign matches "
                f"{list(planned.group.models or ())}; models: {', '.join(r.name for r in refs)}"
            )
        t = planned.threat
        for ref in selected:
            todo = tuple(
                d
                for d in planned.defenses
                if ConditionId(ref.name, t.name, t.strength, d).key not in done
            )
            if todo:
                tasks.append(Task(ref, t, min(planned.n, n_total), todo))
    return tasks


def _with_shared_images(tasks: list[Task], measurer: Measurer) -> Iterator[Task]:
    """The tasks, model-independent ones carrying their threatened images (computed here once
    per threat and kept only while that threat's tasks are handed out)."""
    current: tuple | None = None
    batches = None
    for task in tasks:
        if not task.threat.model_dependent:
            key = (task.threat.name, task.threat.strength, task.n)
            if key != current:
                current = key
                batches = measurer.shared_batches(task.threat, task.n)
            task.batches = batches
        yield task


def run_campaign(
    config: CampaignConfig,
    out_dir: str | Path,
    *,
    zoo_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = 1,
    device: str = "cpu",
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    overlap: bool | None = None,
) -> Path:
    """Measure every condition of ``config`` not yet in ``out_dir/results.sqlite``.

    Args:
        config: the campaign grid.
        out_dir: folder of ``results.sqlite`` and ``results.csv``.
        zoo_dir: where zoo names are looked up (default: the shipped zoo).
        progress: show a progress bar (images measured, all defences counted).
        workers: processes measuring in parallel (1: in this process; 0: one per CPU core, at
            most one per model, see :func:`default_workers`). Each worker runs torch on
            ``cpu_count // workers`` threads; results are the same for the same ``workers``.
        device: where the models, threats and defences run (``cpu``, ``cuda``, ``cuda:N``,
            ``auto``; see :func:`entroguard.device.resolve_device`); recorded with the run.
        backend: ``local`` (worker processes here) or ``ray`` (Ray actors, this process the
            only writer; :mod:`entroguard.campaign.ray_backend`); results are the same.
        address: with ``ray``: the cluster to join (None: a local Ray instance).
        gpus_per_task: with ``ray``: GPUs reserved by each worker.
        overlap: code each batch on a background thread while the device works on the next
            (None: on CUDA devices only; :mod:`entroguard.campaign.coding_lane`); the results
            are the same either way.

    The ``leak`` entries are measured after the threats, in this process (one measurement,
    a model under a protection, at a time) into ``leak.csv``.

    Returns the path of ``results.csv``, rewritten from the database at the end.
    """
    out_dir = Path(out_dir)
    device = str(resolve_device(device))
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {backend!r}: use local or ray")
    refs = resolve_models(config.models, zoo_dir)
    workers = workers if workers > 0 else default_workers(len(refs))
    data = load_dataset(config.dataset, "test").subset(config.n_images)
    with OutDirLock(out_dir), ResultStore(out_dir / "results.sqlite") as store:
        check_resume(store.measured_identity(), identity(config), out_dir)
        done = store.done_keys()
        tasks = plan_tasks(config, refs, len(data), done)
        leak_units = plan_leak(config, refs, len(data), store.leak_done_units())
        run_info = {"device": device, "backend": backend, "workers": workers}
        store.add_run(identity(config), config_record(config), provenance() | run_info)
        if done and progress and (tasks or leak_units):
            tqdm.write(
                f"{out_dir}: {len(done)} conditions already measured are kept; "
                f"{len(tasks)} tasks and {len(leak_units)} leak measurements to go"
            )
        measurer = Measurer(data, config.batch_size, config.seed, config.defense_params, device,
                            overlap)  # fmt: skip
        bar = CampaignProgress(tasks, enabled=progress)

        def record(results: list[ConditionResult]) -> None:
            for r in results:
                store.add(r.cid, r.info, r.params, np.arange(r.n), r.measurement, r.seconds)
                bar.done(r)

        try:
            shared = _with_shared_images(tasks, measurer)
            if backend == "ray" and tasks:
                from entroguard.campaign.ray_backend import run_on_ray

                run_on_ray(shared, measurer, workers, record, address=address,
                           gpus_per_task=gpus_per_task)  # fmt: skip
            elif workers <= 1 or len(tasks) <= 1:
                for task in shared:
                    record(measurer.run(task))
            else:
                _run_parallel(shared, measurer, workers, record)
        finally:
            bar.close()
            measurer.lane.close()  # the in-process lane's thread, if it was started
        run_leak_units(leak_units, config, data, store, progress, device)
        write_leak_csv(store, out_dir / "leak.csv")
        return write_csv(store, out_dir / "results.csv")


# -- worker processes ---------------------------------------------------------------------------

_WORKER: Measurer | None = None


def _init_worker(measurer_args: tuple, threads: int) -> None:
    global _WORKER
    keep_freed_memory()
    torch.set_num_threads(threads)
    _WORKER = Measurer(*measurer_args)


def _run_task(task: Task) -> list[ConditionResult]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(task)


def _run_parallel(tasks: Iterator[Task], measurer: Measurer, workers: int, record) -> None:
    """Run ``tasks`` on ``workers`` spawned processes, at most ``2 x workers`` in flight (so
    shared images are computed just ahead of use); ``record`` runs here, in order of finish."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    init = (measurer.args, threads)
    pending: set[Future] = set()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=init) as pool:  # fmt: skip
        try:
            for task in tasks:
                pending.add(pool.submit(_run_task, task))
                while len(pending) >= 2 * workers:
                    pending = _drain(pending, record)
            while pending:
                pending = _drain(pending, record)
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _drain(pending: set[Future], record) -> set[Future]:
    """Wait for the first of ``pending`` to finish, record its results; the rest."""
    done, rest = wait(pending, return_when=FIRST_COMPLETED)
    for f in done:
        try:
            results = f.result()
        except BrokenProcessPool as exc:
            raise WorkerCrashError(
                "a campaign worker process died (out of memory, killed, or a crash in native "
                "code); finished conditions are saved: rerun the same command to resume, with "
                "--workers 1 to see the error in this process"
            ) from exc
        record(results)
    return rest
