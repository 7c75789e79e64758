"""One search trial: train a candidate distillation policy on the proxy task and measure its bbox AP.

``run_proxy_trial`` builds the ``DetectionDistiller`` of the search config's teacher/student pair with the
genome's ``SearchedDistillLoss`` (or none: the student-alone baseline under the same proxy), trains it for
``proxy.iterations`` on the proxy training subset, reports every loss term every ``report_interval``
iterations and the proxy AP every ``eval_interval`` iterations and at the end, through the caller's
``report`` (Ray Tune's, for the controller; it may raise to stop the trial: that exception propagates).

A lean loop, no mmengine Runner: no hooks, logs, checkpoints or files. The fitness is returned in-process
(never parsed from a log, detkds.md defects 26-27). Degenerate candidates (a non-finite loss or gradient, an
exploding distillation term in the first ``reject.check_iterations`` iterations) raise ``TrialRejected``
before the optimizer step, at a fraction of a proxy's cost; any other exception propagates (a FAIL with its
text for the controller).
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from workers.prepare import ProxySettings, check_search_config, resolve_path
from workers.proxy_data import ProxyData
from workers.proxy_eval import METRIC_KEYS, evaluate_bbox, load_coco

SEARCHED_LOSS_NAME = 'searched'
DISTILL_PREFIX = f'loss_{SEARCHED_LOSS_NAME}'

Report = Callable[[Dict[str, float]], None]


class TrialRejected(Exception):
    """A degenerate candidate, failed early; ``reason`` says why (e.g. 'non-finite loss_searched_bg at
    iteration 2')."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ProxyResult:
    metrics: Dict[str, float]            # AP, AP50, AP75, APs, APm, APl in [0, 1]; nan where COCO gives -1
    iterations: int
    wall_time: float
    history: List[Dict[str, float]] = field(default_factory=list)   # every report made, in order


# ---------------------------------------------------------------------------------------------- building
@contextlib.contextmanager
def _quiet_mmengine():
    """mmengine logs one INFO line per parameter on ``init_weights`` (hundreds per trial): keep warnings only."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def distill_losses_for(genome) -> List[dict]:
    """The distiller's ``distill_losses`` for a genome (Genome, its JSON or dict), or none for ``None``."""
    if genome is None:
        return []
    from distill_core.genome import Genome
    return [dict(name=SEARCHED_LOSS_NAME, loss=dict(type='SearchedDistillLoss',
                                                   genome=Genome.parse(genome).to_json()))]


def build_distiller(search_cfg: Mapping, genome, settings: ProxySettings, base_dir: str = '.'):
    """The initialised ``DetectionDistiller`` of a trial (teacher loaded, frozen and in eval mode)."""
    from distill_core.distiller import DetectionDistiller
    teacher = search_cfg['teacher']
    model = DetectionDistiller(
        teacher=dict(config=resolve_path(teacher['config'], base_dir),
                     checkpoint=resolve_path(teacher['checkpoint'], base_dir)),
        student=dict(config=resolve_path(search_cfg['student']['config'], base_dir)),
        inherit_neck_head=settings.inherit_neck_head,
        distill_losses=distill_losses_for(genome))
    model.init_weights()
    return model


def build_optim_wrapper(model: torch.nn.Module, settings: ProxySettings):
    """An mmengine OptimWrapper over the parameters that require grad (never the frozen teacher's)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIMIZERS
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build(dict(settings.optimizer, params=params))
    clip = dict(max_norm=float(settings.grad_clip), norm_type=2) if settings.grad_clip else None
    return OptimWrapper(optimizer, clip_grad=clip), params


# ---------------------------------------------------------------------------------------------- checks
def check_losses(values: Mapping[str, float], iteration: int, settings: ProxySettings) -> None:
    """Raise TrialRejected for a degenerate loss (called before the optimizer step)."""
    early = iteration <= settings.reject.check_iterations
    for key, value in values.items():
        if 'loss' not in key:
            continue
        if not math.isfinite(value):
            raise TrialRejected(f'non-finite {key} ({value}) at iteration {iteration}')
        if early and key.startswith(DISTILL_PREFIX) and value > settings.reject.max_loss:
            raise TrialRejected(f'exploding {key} = {value:.4g} > reject.max_loss = {settings.reject.max_loss:g} '
                                f'at iteration {iteration}')


def _gradients_finite(params) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


# ---------------------------------------------------------------------------------------------- the trial
class _IntervalMeans:
    """Mean of each logged value since the last report."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def pop(self) -> Dict[str, float]:
        means = {key: total / self.count for key, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


def _train_step(model, data, optim_wrapper, params, iteration: int, settings: ProxySettings) -> Dict[str, float]:
    """One step; the loss terms are checked before the update (a rejected candidate never updates)."""
    with optim_wrapper.optim_context(model):
        data = model.data_preprocessor(data, True)
        losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    values = {key: float(value.detach()) if torch.is_tensor(value) else float(value)
              for key, value in log_vars.items()}
    check_losses(values, iteration, settings)
    optim_wrapper.backward(total)
    if not _gradients_finite(params):
        raise TrialRejected(f'non-finite gradient at iteration {iteration}')
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    return values


def run_proxy_trial(search_cfg: Mapping, genome=None, seed: int = 0, report: Optional[Report] = None,
                    base_dir: str = '.') -> ProxyResult:
    """Train the proxy of ``genome`` (a Genome, its JSON, or None for the student alone) and return its AP.

    ``report(dict)`` receives, every ``report_interval`` iterations, ``{'iteration': i, 'loss': total,
    '<term>': mean, ...}`` (means over the interval) and, every ``eval_interval`` iterations and at the end,
    ``'AP'``, ``'AP50'``, ... in the same dict when both fall on one iteration. Deterministic for a seed.
    """
    start = time.time()
    settings = check_search_config(search_cfg)
    with _quiet_mmengine():
        data = ProxyData(search_cfg, settings, base_dir)
        seed_everything(seed)
        model = build_distiller(search_cfg, genome, settings, base_dir)
    if torch.cuda.is_available():   # a GPU trial (the controller's resources); CPU otherwise
        model = model.cuda()
    model.train()
    optim_wrapper, params = build_optim_wrapper(model, settings)
    gt = load_coco(data.ann_file)
    val_loader = data.val_loader()
    val_ids = data.val_img_ids

    seed_everything(seed)   # the batch order and the random flips do not depend on what building consumed
    batches = data.train_batches(seed)
    history: List[Dict[str, float]] = []
    means = _IntervalMeans()
    metrics: Optional[Dict[str, float]] = None
    iterations = settings.iterations
    for iteration in range(1, iterations + 1):
        means.add(_train_step(model, next(batches), optim_wrapper, params, iteration, settings))
        last = iteration == iterations
        entry: Dict[str, float] = {}
        if iteration % settings.report_interval == 0 or (last and means.count):
            entry.update(means.pop())
        if last or (settings.eval_interval and iteration % settings.eval_interval == 0):
            metrics = evaluate_bbox(model, val_loader, gt, val_ids, data.cat_ids)
            entry.update(metrics)
        if entry:
            entry = {'iteration': iteration, **entry}
            history.append(entry)
            if report is not None:
                report(dict(entry))   # may raise (Ray Tune stops trials that way): propagates untouched
    assert metrics is not None and set(METRIC_KEYS) <= set(metrics)
    return ProxyResult(metrics=metrics, iterations=iterations, wall_time=time.time() - start, history=history)
