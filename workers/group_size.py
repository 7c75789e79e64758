"""How many candidates one shared-teacher trial should train (``resources.candidates_per_trial = 'auto'``).

On a GPU the group size comes from memory: the teacher, the batch and the teacher's outputs are paid once per
trial, each student (weights, gradients, optimizer state, its step's activations) once per candidate. The probe
measures both where the trials run and ``group_size_from_memory`` turns them into K. On CPU the group size is
``CPU_GROUP_SIZE``: benchmarks/RESULTS.md (benchmarks/trial_cost.py) measured 0.70x seconds per candidate at K=2
against 0.97x at K=1 (both relative to the reference protocol), and K=4 gained little more (0.66x) while it
delays results and holds K students in memory.

No torch import at module level: the controller imports this module for ``CPU_GROUP_SIZE`` alone.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

CPU_GROUP_SIZE = 2
PROBE_ITERATIONS = 2   # step 1 allocates the optimizer state; step 2 is a steady-state step


def group_size_from_memory(free_bytes: float, shared_bytes: float, per_student_bytes: float,
                           headroom: float = 0.8, max_k: int = 8, gpu_fraction: float = 1.0) -> int:
    """Largest K with ``shared + K * per_student <= free * headroom * gpu_fraction``, clamped to [1, max_k].

    ``gpu_fraction``: the trial's share of the device (``gpus_per_trial`` below 1: Ray puts several trials on
    one GPU but does not split its memory). ``headroom`` leaves room for the allocator's fragmentation and for
    what the measurement missed. A student that costs nothing measurable gives ``max_k``.
    """
    if max_k < 1:
        raise ValueError(f'max_k must be >= 1, got {max_k}')
    budget = free_bytes * headroom * min(gpu_fraction, 1.0) - shared_bytes
    if per_student_bytes <= 0:
        return max_k
    return int(min(max(math.floor(budget / per_student_bytes), 1), max_k))


def first_published_genome(space, family):
    """The first published formulation of the space valid for the student's family (its losses' memory is
    part of a student's cost), or None (the student alone) when none is."""
    from distill_core.errors import ConfigError
    for genome in space.published.values():
        try:
            return space.validate(genome, family)
        except ConfigError:
            continue
    return None


def _probe_config(search_cfg: Mapping[str, Any]) -> dict:
    """The proxy cut to PROBE_ITERATIONS steps and one held-out batch (run_proxy_group always evaluates at the
    end; one batch keeps the evaluation's memory in the measurement at a fraction of its time)."""
    proxy = dict(search_cfg['proxy'])
    eval_batch = int(proxy.get('val_batch_size') or proxy['batch_size'])
    proxy.update(iterations=PROBE_ITERATIONS, report_interval=1, eval_interval=None, val_images=eval_batch)
    return dict(search_cfg, proxy=proxy)


def _peak_bytes(search_cfg, genome, k: int, base_dir: str) -> int:
    """Peak CUDA memory allocated by a proxy group of ``k`` copies of ``genome`` (same seed, lockstep)."""
    import torch

    from workers.proxy import run_proxy_group
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    results = run_proxy_group(search_cfg, [genome] * k, [0] * k, base_dir=base_dir)
    failed = [r.failure for r in results if r.failure is not None]
    if failed:
        raise RuntimeError(f'the group-size probe candidate failed: {failed[0]}')
    return torch.cuda.max_memory_allocated()


def probe_group_size(search_cfg: Mapping[str, Any], base_dir: str = '.', max_k: int = 8, headroom: float = 0.8,
                     genome: Any = None, gpu_fraction: float = 1.0) -> int:
    """Candidates per trial for this machine, run where the trials run (a Ray task with the trial's resources).

    Without CUDA: ``CPU_GROUP_SIZE``. On CUDA: free memory first (``torch.cuda.mem_get_info``, before anything of
    the probe is allocated), then two short proxy groups of ``genome`` (the controller passes the space's first
    published formulation, or None for the student alone), K=1 and K=2, each ``PROBE_ITERATIONS`` training steps.
    The difference of their peaks is what one more student costs (the teacher, the batch and the teacher's
    outputs are shared; activations of successive students' steps do not coexist, which a per-student
    measurement of one step would overcount); the K=1 peak minus it is the shared part.

    The CUDA branch cannot be tested on the project's CPU-only CI; its arithmetic is ``group_size_from_memory``.
    """
    import torch
    if not torch.cuda.is_available():
        return CPU_GROUP_SIZE
    torch.cuda.init()
    free_bytes, _total = torch.cuda.mem_get_info()
    cfg = _probe_config(search_cfg)
    one = _peak_bytes(cfg, genome, 1, base_dir)
    two = _peak_bytes(cfg, genome, 2, base_dir)
    per_student = two - one
    return group_size_from_memory(free_bytes, one - per_student, per_student, headroom, max_k, gpu_fraction)
