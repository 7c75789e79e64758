"""Standalone runs (baselines, the final rung, fidelity panels) as Ray tasks: at most ``concurrency`` in flight,
each with the search config's per-trial resources, on the local machine or the cluster at ``ray_address``.

The driver records every run itself (the controller is the only writer of the study): ``start(job)`` opens its
record (an Optuna trial) just before the task is submitted, ``finish(job, record, result)`` closes it when the
task returns, and ``interrupted(job, record)`` closes the records of tasks still running when the driver stops
(Ctrl-C, an error), so that a relaunch re-runs exactly those. A task that raises gives ``result`` =
``dict(ok=False, reason=<exception>, ...)`` instead of stopping the others.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple


def run_standalone(task: Mapping[str, Any], base_dir: str, threads: int) -> Dict[str, Any]:
    """The Ray task: one run of workers/standalone_runs.py."""
    from workers.standalone_runs import run_standalone_task
    return run_standalone_task(task, base_dir, threads)


def run_on_ray(jobs: Sequence[Tuple[Any, Mapping[str, Any]]], base_dir: str, resources: Mapping[str, Any],
               start: Callable[[Any], Any], finish: Callable[[Any, Any, Dict[str, Any]], None],
               interrupted: Callable[[Any, Any], None], ray_address: Optional[str] = None) -> None:
    """Run every ``(job, task)`` of ``jobs`` (in order as slots free up) and hand each result to ``finish``."""
    import ray
    if not jobs:
        return
    cpus, gpus = resources['cpus_per_trial'], resources['gpus_per_trial']
    concurrency = int(resources['max_concurrent'])
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=ray_address, include_dashboard=False, logging_level='ERROR', log_to_driver=False,
                 num_cpus=None if ray_address else max(1, int(concurrency * max(cpus, 1))))
    remote = ray.remote(run_standalone).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    pending: Dict[Any, Tuple[Any, Any, float]] = {}
    queue = list(jobs)
    try:
        while queue or pending:
            while queue and len(pending) < concurrency:
                job, task = queue.pop(0)
                record = start(job)
                pending[remote.remote(dict(task), base_dir, max(1, int(cpus)))] = (job, record, time.time())
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job, record, began = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:   # the run crashed: a recorded failure with its reason
                    cause = getattr(exc, 'cause', None) or exc
                    text = str(cause).splitlines()[0] if str(cause) else ''
                    result = dict(ok=False, value=0.0, metrics={}, seconds=time.time() - began, curve=[],
                                  reason=f'{type(cause).__name__}: {text}')
                finish(job, record, result)
    finally:
        for job, record, _ in pending.values():
            interrupted(job, record)
        if started_ray:
            ray.shutdown()


def run_recorded_in_study(study, jobs: Sequence[Tuple[Any, Mapping[str, Any]]], base_dir: str,
                          resources: Optional[Mapping[str, Any]], attrs_of: Callable[[Any], Mapping[str, Any]],
                          reported: Callable[[Any, Dict[str, Any]], None], stopped_reason: str,
                          ray_address: Optional[str] = None) -> None:
    """``run_on_ray`` with each run recorded as a trial of ``study``: opened with the user attributes
    ``attrs_of(job)``, closed by ``search/study.py: record_run`` (then ``reported(job, result)``: the caller's log
    line), or closed as interrupted with ``stopped_reason`` if the driver stops first (re-run on relaunch).
    ``resources``: the search config's (missing keys take their defaults)."""
    from . import study as st
    from .config import RESOURCE_KEYS

    def start(job):
        trial = study.ask()
        for attr, value in attrs_of(job).items():
            trial.set_user_attr(attr, value)
        return trial

    def finish(job, trial, result):
        st.record_run(study, trial, result)
        reported(job, result)

    def interrupted(job, trial):
        st.close_interrupted(study, trial, stopped_reason)

    run_on_ray(jobs, base_dir, dict(RESOURCE_KEYS, **(resources or {})), start, finish, interrupted, ray_address)
